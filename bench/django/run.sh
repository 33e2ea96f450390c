#!/usr/bin/env bash
# The same fan-out workload against Django Channels: two Daphne processes on one Redis, with
# the core layer and with the pub/sub layer. Usage: [CLIENTS=N] bash bench/django/run.sh [rates]
# Needs python3 and redis-server; builds the load tool (herald-bench).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
rates="${1:-100,250,500,1000}"
clients="${CLIENTS:-1000}"
(cd "$root" && cargo build --release --quiet)
load="$root/target/release/herald-bench"
venv="$here/.venv"
[ -x "$venv/bin/daphne" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q -r "$here/requirements.txt"; }
out="$root/bench-results"
mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(port)
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes >/dev/null
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; }
trap cleanup EXIT

for layer in core pubsub; do
  urls=(); daphnes=()
  for _ in 1 2; do
    p=$(port)
    # exec: the background pid is Daphne's own, so it can be stopped.
    (cd "$here" && CHANNEL_LAYER=$layer REDIS_URL="redis://127.0.0.1:$redis_port/0" \
      exec "$venv/bin/daphne" -b 127.0.0.1 -p "$p" herald_compare.asgi:application >"$out/daphne-$layer-$p.log" 2>&1) &
    pids+=($!); daphnes+=($!); urls+=("ws://127.0.0.1:$p/ws")
  done
  for u in "${urls[@]}"; do
    hp=${u#ws://}; hp=${hp%/ws}
    for _ in $(seq 100); do curl -fs -o /dev/null -X POST "http://$hp/api/publish" -d '{"group":"warm","data":1}' && break; sleep 0.2; done
  done
  procs=$(IFS=,; echo "${daphnes[*]}")
  echo "== Django Channels, $layer layer, 2 Daphne processes" >&2
  "$load" --url "$(IFS=,; echo "${urls[*]}")" --publish http --clients "$clients" --size 100 \
    --rate "$rates" --duration 5s --pid "$procs" --json >"$out/django-$layer.json"
  kill "${daphnes[@]}" 2>/dev/null || true
  wait "${daphnes[@]}" 2>/dev/null || true
done
echo "reports in $out/django-*.json" >&2
