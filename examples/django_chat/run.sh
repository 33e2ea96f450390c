#!/usr/bin/env bash
# The Django side of the example: a virtualenv, the database, two users, and the dev server on
# 127.0.0.1:8001. Needs python3 and a Redis on 127.0.0.1:6379 (the channel layer).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || { python3 -m venv .venv; .venv/bin/pip install -q -r requirements.txt; }
.venv/bin/python manage.py migrate -v0
.venv/bin/python manage.py demo_users
exec .venv/bin/python manage.py runserver 127.0.0.1:8001
