#!/usr/bin/env bash
# Reproduces every figure of BENCHMARKS.md on this machine: builds the release binary, starts a
# private redis-server and gateways on free ports, runs `herald-bench` for each target (with
# the in-process baseline where a ratio is asked for) and writes the reports to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/herald
load=target/release/herald-bench
out=bench-results
mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(port)
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes --pidfile "/tmp/herald-bench-redis-$redis_port.pid" >/dev/null
redis_url="redis://127.0.0.1:$redis_port/"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; }
trap cleanup EXIT

gateway() { # name port [workers] -> starts a gateway (not in a subshell, so cleanup knows its pid)
  HERALD_AUTH=off HERALD_MAX_CONNECTIONS=20000 HERALD_MAX_CONNECTIONS_PER_IP=20000 HERALD_WORKERS="${3:-0}" RUST_LOG=warn \
    "$bin" gateway --redis-url "$redis_url" --listen "127.0.0.1:$2" --node-id "$1" >"$out/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
}

p1=$(port); gateway bench-1 "$p1"; g1=${pids[-1]}
echo "== throughput: 1 gateway, 1000 clients in one group, 100-byte payloads, rising rate"
"$load" --baseline --url "ws://127.0.0.1:$p1/ws" --redis-url "$redis_url" --clients 1000 --size 100 \
  --rate 250,500,1000,1500,2000,3000 --duration 5s --pid "$g1" --json >"$out/throughput.json"

echo "== latency: 2 gateways (one core each), 2000 clients split across them, 50 msg/s (100,000 deliveries/s)"
pl1=$(port); gateway bench-l1 "$pl1" 1; gl1=${pids[-1]}
pl2=$(port); gateway bench-l2 "$pl2" 1; gl2=${pids[-1]}
"$load" --baseline --url "ws://127.0.0.1:$pl1/ws,ws://127.0.0.1:$pl2/ws" --redis-url "$redis_url" \
  --clients 2000 --sources 4 --size 100 --rate 50 --duration 30s --pid "$gl1,$gl2" --json >"$out/latency.json"
kill "$gl1" "$gl2"

echo "== memory and idle cost: 15,000 idle subscribed connections, heartbeats on, 60 s"
p3=$(port); gateway bench-3 "$p3"; g3=${pids[-1]}
"$load" --url "ws://127.0.0.1:$p3/ws" --redis-url "$redis_url" --clients 15000 --sources 8 \
  --rate 0 --duration 60s --pid "$g3" --json >"$out/memory.json"
kill "$g3"

echo "== connections: new sessions per second (handshake + subscribe), 8000 clients, 5 runs"
for run in 1 2 3 4 5; do
  "$load" --baseline --url "ws://127.0.0.1:$p1/ws" --redis-url "$redis_url" --clients 8000 --sources 8 \
    --rate 0 --duration 0s --json >"$out/connect-$run.json"
done

echo "== Redis cost: redis-server CPU with 1, 2 and 4 gateways subscribed, pipelined publishing"
redis_pid=$(cat "/tmp/herald-bench-redis-$redis_port.pid")
p2=$(port); gateway bench-2 "$p2"
p4=$(port); gateway bench-4 "$p4"
p5=$(port); gateway bench-5 "$p5"
urls="ws://127.0.0.1:$p1/ws,ws://127.0.0.1:$p2/ws,ws://127.0.0.1:$p4/ws,ws://127.0.0.1:$p5/ws"
for n in 1 2 4; do
  # One client per gateway, so each of the first n gateways holds one subscription.
  "$load" --url "$(echo "$urls" | cut -d, -f1-$n)" --redis-url "$redis_url" --clients "$n" \
    --rate 25000,50000,100000 --duration 10s --pid "$redis_pid" --json >"$out/redis-$n.json"
done

echo "reports in $out/"
