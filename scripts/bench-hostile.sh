#!/usr/bin/env bash
# A victim's Score latency beside hostile load, measured side by side in one run
# (BENCHMARKS.md, "Hostile load"): one loyalscore-serve process, a victim process sending
# Score at a fixed rate, and in turn nothing, two busy-loop processes (pure CPU contention:
# what any two busy neighbours on these cores cost), and two processes looping BatchScore of
# 300 customers x 3,000 purchases (16 MB each). Rounds alternate so drift on shared cores
# hits every case alike. Needs the quickstart's registry
# (`cargo run --release -- quickstart --no-serve`).
#   scripts/bench-hostile.sh [models] [rounds] [extra loyalscore-serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:-models}
rounds=${2:-2}
extra=("${@:3}")
bin=target/release
cargo build --release --quiet --bin loyalscore --bin loyalscore-serve

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
server=http://127.0.0.1:$port
pids=()
load=()
stop_load() {
  [ ${#load[@]} -gt 0 ] || return 0
  kill "${load[@]}" 2>/dev/null || true
  wait "${load[@]}" 2>/dev/null || true
  load=()
}
cleanup() { stop_load; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

$bin/loyalscore-serve --registry "$registry" --state off --listen "127.0.0.1:$port" \
  --metrics-listen off --log warn "${extra[@]}" &
pids+=($!)
until $bin/loyalscore health --server "$server" >/dev/null 2>&1; do sleep 0.2; done

victim() {
  $bin/loyalscore --json bench --server "$server" --mode features --rate 200 \
    --duration-secs 8 --warmup 20 --requests 1000000 \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("p50 %(p50_us)6d us  p99 %(p99_us)6d us  p99.9 %(p999_us)6d us  max %(max_us)6d us  errors %(errors)d of %(requests)d" % r)'
}
busy() { for _ in 1 2; do (while :; do :; done) & load+=($!); done; }
hostile() {
  for _ in 1 2; do
    $bin/loyalscore --json bench --server "$server" --mode history-batch --batch-size 300 \
      --history-len 3000 --duration-secs 3600 --warmup 0 >/dev/null 2>&1 &
    load+=($!)
  done
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  echo "   alone          $(victim)"
  busy; sleep 1
  echo "   two busy loops $(victim)"
  stop_load
  hostile; sleep 2
  echo "   two hostile    $(victim)"
  stop_load
done
