#!/usr/bin/env bash
# Reproduces every figure and chart of BENCHMARKS.md on this machine: builds the release
# binaries, starts a private redis-server and gateways on free ports, runs `herald-bench` for
# each workload (with the baseline server, the machine's ceiling, in the same run where a ratio
# is asked for), writes the JSON reports to bench-results/ and draws docs/benchmarks/*.svg from
# them. BENCH_RUNS (default 3) sets how many runs of each workload; a full run takes about
# 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin herald --bin herald-bench
bin=target/release/herald
load=target/release/herald-bench
out=bench-results
runs=${BENCH_RUNS:-3}
mkdir -p "$out"
rm -f "$out"/*.json
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(port)
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes --pidfile "/tmp/herald-bench-redis-$redis_port.pid" >/dev/null
redis_url="redis://127.0.0.1:$redis_port/"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_pid=$(cat "/tmp/herald-bench-redis-$redis_port.pid")
pids=()
# A route that joins its clients to a bench group on connect, as the baseline joins them from
# its URL: the like-for-like new-sessions workload.
routes=$(mktemp --suffix .toml)
printf '[[routes]]\npath = "/ws/bench/{n}"\nsubscribe = ["bench.{n}"]\n' >"$routes"
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -f "$routes"
}
trap cleanup EXIT

gateway() { # name port -> starts a gateway (not in a subshell, so cleanup knows its pid)
  HERALD_AUTH=off HERALD_MAX_CONNECTIONS=20000 HERALD_MAX_CONNECTIONS_PER_IP=20000 RUST_LOG=warn \
    "$bin" gateway --config "$routes" --redis-url "$redis_url" --listen "127.0.0.1:$2" --node-id "$1" >"$out/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
}

p1=$(port); gateway bench-1 "$p1"; g1=${pids[-1]}
for run in $(seq "$runs"); do
  echo "== run $run: fan-out, 1 gateway, 1000 clients in one group, 100-byte payloads, published to Redis"
  "$load" --baseline --url "ws://127.0.0.1:$p1/ws" --redis-url "$redis_url" --clients 1000 --size 100 \
    --rate 1000,2500,3500 --duration 10s --pid "$g1" --json >"$out/fanout-redis-$run.json"
  echo "== run $run: the same fan-out from the baseline's own timer: the ceiling with no publisher"
  "$load" --baseline --publish timer --redis-url "$redis_url" --clients 1000 --size 100 \
    --rate 1000,2500,3500,4500 --duration 10s --json >"$out/fanout-timer-$run.json"
  echo "== run $run: the same, published with POST /api/publish over 16 keep-alive connections"
  "$load" --baseline --url "ws://127.0.0.1:$p1/ws" --redis-url "$redis_url" --clients 1000 --size 100 \
    --publish http --http-connections 16 --rate 1000,2000,3000,5000 --duration 5s --pid "$g1" \
    --json >"$out/fanout-http-$run.json"
  echo "== run $run: new sessions per second, 8000 clients, median of 15 rounds (the ceiling's and Herald's in turn) and each server's CPU per session, joined by a route"
  "$load" --baseline --url "ws://127.0.0.1:$p1/ws/bench/{group}" --redis-url "$redis_url" --clients 8000 \
    --sources 8 --rate 0 --duration 0s --connect-rounds 15 --pid "$g1" --json >"$out/connect-route-$run.json"
  echo "== run $run: the same, each client sending a subscribe (handshake + subscribe)"
  "$load" --baseline --url "ws://127.0.0.1:$p1/ws" --redis-url "$redis_url" --clients 8000 --sources 8 \
    --rate 0 --duration 0s --connect-rounds 15 --pid "$g1" --json >"$out/connect-$run.json"
done
kill "$g1"

for run in $(seq "$runs"); do
  echo "== run $run: memory and idle cost, 15,000 idle subscribed connections to a fresh gateway, 60 s"
  pm=$(port); gateway bench-m "$pm"; gm=${pids[-1]}
  "$load" --url "ws://127.0.0.1:$pm/ws" --redis-url "$redis_url" --clients 15000 --sources 8 \
    --rate 0 --duration 60s --pid "$gm" --json >"$out/memory-$run.json"
  kill "$gm"
done

echo "== many rooms: 10,000 groups of 5 members, 10,000 clients over 2 gateways, HTTP publishing"
pr1=$(port); gateway bench-r1 "$pr1"; gr1=${pids[-1]}
pr2=$(port); gateway bench-r2 "$pr2"; gr2=${pids[-1]}
rooms=(--url "ws://127.0.0.1:$pr1/ws,ws://127.0.0.1:$pr2/ws" --redis-url "$redis_url" --clients 10000
  --groups 10000 --groups-per-client 5 --sources 4 --publish http --duration 5s --pid "$gr1,$gr2,$redis_pid" --json)
for run in $(seq "$runs"); do
  echo "   run $run: batches of 100 messages per POST"
  "$load" "${rooms[@]}" --http-batch 100 --rate 5000,10000,15000,20000,25000 >"$out/many-rooms-batch-$run.json"
  echo "   run $run: one message per POST"
  "$load" "${rooms[@]}" --http-batch 1 --rate 2000,4000,6000,8000,10000,12000 >"$out/many-rooms-single-$run.json"
done
echo "   the ceiling: the baseline server alone with the same clients, batches, then single messages"
ceiling=(--baseline --redis-url "$redis_url" --clients 10000 --groups 10000 --groups-per-client 5 --sources 4
  --publish http --duration 5s --json)
"$load" "${ceiling[@]}" --http-batch 100 --rate 5000,10000,15000,20000,25000 >"$out/many-rooms-ceiling-1.json"
"$load" "${ceiling[@]}" --http-batch 1 --rate 2000,4000,6000,8000,10000,12000 >"$out/many-rooms-ceiling-single-1.json"
kill "$gr1" "$gr2"

echo "== Redis cost: redis-server CPU with 1, 2 and 4 gateways subscribed, pipelined publishing"
urls=""
for n in 1 2 3 4; do p=$(port); gateway "bench-c$n" "$p"; urls="$urls${urls:+,}ws://127.0.0.1:$p/ws"; done
for n in 1 2 4; do
  # One client per gateway, so each of the first n gateways holds one subscription.
  "$load" --url "$(echo "$urls" | cut -d, -f1-$n)" --redis-url "$redis_url" --clients "$n" \
    --rate 25000,50000,100000 --duration 10s --pid "$redis_pid" --json >"$out/redis-$n.json"
done

"$load" --chart "$out" --chart-out docs/benchmarks
echo "reports in $out/, charts in docs/benchmarks/ (BENCHMARKS.md keeps its reports in docs/benchmarks/results/)"
