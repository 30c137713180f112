#!/usr/bin/env bash
# Live customer state, measured in one run (BENCHMARKS.md, "Score by customer id"): the bulk
# load of the quickstart log into both stores, Score by id beside the health-check floor on
# each, and RecordPurchases events/s on each. Needs the quickstart's data and registry
# (`cargo run --release -- quickstart --no-serve`) and redis-server; starts its own Redis and
# two servers on loopback, in a temporary folder, and stops them at the end.
#   scripts/bench-state.sh [data/sample.csv] [models]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/sample.csv}
registry=${2:-models}
bin=target/release
cargo build --release --quiet --bin loyalscore --bin loyalscore-serve

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port); eport=$(free_port); sport=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --dir "$work" >"$work/redis.log" &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.1; done
embedded="$work/state/customers.redb"
redis="redis://127.0.0.1:$rport/0"

echo "== state load ($data)"
for store in "$embedded" "$redis"; do
  /usr/bin/time -f "   %e s wall, %M KiB max RSS" $bin/loyalscore state load --state "$store" --transactions "$data"
done

for p in "$eport:$embedded" "$sport:$redis"; do
  $bin/loyalscore-serve --registry "$registry" --state "${p#*:}" --listen "127.0.0.1:${p%%:*}" \
    --metrics-listen off --log warn &
  pids+=($!)
done
sleep 3

bench() { $bin/loyalscore bench --server "http://127.0.0.1:$1" "${@:2}" | grep -E 'throughput|latency' | tr '\n' ' '; echo; }
for name in embedded:$eport redis:$sport; do
  port=${name#*:}
  echo "== ${name%%:*}: Score by id beside the floor (alternating, 8 s each)"
  for round in 1 2; do
    echo "   health  $(bench "$port" --mode health --duration-secs 8)"
    echo "   by-id   $(bench "$port" --mode by-id --customers 50000 --duration-secs 8)"
  done
  echo "== ${name%%:*}: RecordPurchases, 1,000 events a call over the 50,000 stored customers"
  for c in 1 2; do
    echo "   concurrency $c  $(bench "$port" --mode record --batch-size 1000 --customers 50000 --concurrency "$c" --requests 2000)"
  done
done
echo "== embedded: RecordPurchases over 1,000,000 customers (950,000 of them new)"
for c in 1 2; do
  echo "   concurrency $c  $(bench "$eport" --mode record --batch-size 1000 --customers 1000000 --concurrency "$c" --requests 2000)"
done
echo "   server RSS $(ps -o rss= -p "${pids[1]}") KiB; state files $(du -sh "$work/state" | cut -f1)"
