#!/usr/bin/env bash
# The Redis Cluster figures of BENCHMARKS.md: the same workload on a cluster of 1 and of 3
# masters (no replicas) with 2 gateways, and on 1 master with 4 gateways; 63 groups with one
# client per group on every gateway, so each message goes to every gateway; messages published
# with SPUBLISH to each group's shard. Reports deliveries/s and each master's CPU per rate step
# in bench-results/cluster-<shards>x<gateways>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/herald
load=target/release/herald-bench
out=bench-results
mkdir -p "$out"
# A free port below 55535 whose cluster bus port (+10000) is free too.
port() { python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); return True
    except OSError: return False
    finally: s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000): print(p); break'; }

pids=()
dirs=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "${dirs[@]}"; }
trap cleanup EXIT

for run in 1x2 3x2 1x4; do
  shards=${run%x*}; gateways=${run#*x}
  echo "== $shards shard(s), $gateways gateways, 63 groups with a client on every gateway"
  dir=$(mktemp -d); dirs+=("$dir")
  ports=(); masters=()
  for _ in $(seq "$shards"); do
    p=$(port); mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --dir "$dir/$p" --save "" \
      --appendonly no --logfile "$dir/$p/log" &
    pids+=($!); masters+=($!); ports+=("$p")
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if [ "$shards" = 1 ]; then
    redis-cli -p "${ports[0]}" cluster addslotsrange 0 16383 >/dev/null
  else
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for _ in $(seq 100); do
    redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
  done
  nodes=$(printf 'redis://127.0.0.1:%s/,' "${ports[@]}"); nodes=${nodes%,}
  urls=()
  for n in $(seq "$gateways"); do
    gp=$(port)
    HERALD_AUTH=off HERALD_MAX_CONNECTIONS_PER_IP=20000 HERALD_REDIS_CLUSTER_NODES="$nodes" RUST_LOG=warn \
      "$bin" gateway --listen "127.0.0.1:$gp" --node-id "cluster-$run-$n" >"$out/cluster-$run-gw$n.log" 2>&1 &
    pids+=($!); urls+=("ws://127.0.0.1:$gp/ws")
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$gp/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  "$load" --url "$(IFS=,; echo "${urls[*]}")" --redis-url "redis://127.0.0.1:${ports[0]}/" --redis-cluster \
    --clients $((63 * gateways)) --groups 63 --size 100 --rate 10000,50000,100000 --duration 10s \
    --pid "$(IFS=,; echo "${masters[*]}")" --json >"$out/cluster-$run.json"
  kill "${pids[@]}" 2>/dev/null || true; pids=()
  sleep 1
done
echo "reports in $out/cluster-*.json"
