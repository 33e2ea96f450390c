#!/bin/sh
# Prints the dashboard's data as one JSON document; the scheduler publishes it as-is.
load=$(cut -d' ' -f1 /proc/loadavg)
users=$(who | wc -l)
printf '{"load": %s, "users": %s, "generated_at": "%s"}\n' "$load" "$users" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
