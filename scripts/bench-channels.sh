#!/usr/bin/env bash
# How many events per second the Channels bridge carries from one Django process: a Python
# process calls channels_redis' group_send as fast as it can (COUNT events, core layer), the
# bridge in a `herald scheduler` publishes them to a Herald group one gateway client is
# subscribed to, and the scheduler's metrics say how many were bridged (any shortfall is an
# event channels_redis dropped at its capacity). Usage: [COUNT=N] bash scripts/bench-channels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count="${COUNT:-20000}"
cargo build --release --quiet
venv=target/test-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q -r tests/requirements.txt; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(port); gateway_port=$(port); status_port=$(port)
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes >/dev/null
redis="redis://127.0.0.1:$redis_port/"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; }
trap cleanup EXIT
config=$(mktemp)
cat >"$config" <<TOML
redis_url = "$redis"
auth = "off"
[channels]
layer = "core"
groups = ["bench.*"]
TOML
mkdir -p bench-results
RUST_LOG=warn target/release/herald gateway --config "$config" --listen "127.0.0.1:$gateway_port" 2>bench-results/channels-gateway.log & pids+=($!)
RUST_LOG=warn target/release/herald scheduler --config "$config" --listen "127.0.0.1:$status_port" 2>bench-results/channels-scheduler.log & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$gateway_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
# One Herald client subscribed to bench.0 for the whole run, so the bridge joins the group.
target/release/herald-bench --url "ws://127.0.0.1:$gateway_port/ws" --clients 1 --rate 0 --duration 600s >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do
  [ "$(redis-cli -p "$redis_port" zcard asgi:group:bench.0)" = "1" ] && break; sleep 0.1
done
bridged() { curl -fs "http://127.0.0.1:$status_port/metrics" | awk '/herald_channels_events_total\{layer="core",outcome="bridged"\}/ {print $2}'; }
sent=$("$venv/bin/python" tests/channels/layer.py send core "$redis" asgi bench.0 "$count")
seconds=$(echo "$sent" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
start=$(date +%s.%N)
while [ "$(bridged || echo 0)" != "$count" ]; do
  [ "$(echo "$(date +%s.%N) - $start > 30" | bc)" = 1 ] && break; sleep 0.05
done
lag=$(echo "$(date +%s.%N) - $start" | bc)
got=$(bridged || echo 0)
python3 - "$count" "$seconds" "$got" "$lag" <<'PY'
import json, sys
count, seconds, got, lag = int(sys.argv[1]), float(sys.argv[2]), int(float(sys.argv[3] or 0)), float(sys.argv[4])
print(json.dumps({"sent": count, "send_seconds": round(seconds, 2), "events_per_sec": round(count / seconds),
                  "bridged": got, "dropped": count - got, "last_bridged_after_send_s": round(lag, 2)}))
PY
