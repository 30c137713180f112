#!/usr/bin/env bash
# How many exposure records a SIGKILL loses (BENCHMARKS.md, "Exposure loss on a crash"): one
# loyalscore-serve process with an experiment and an exposure log under Score load; the load
# stops, the server's counts are scraped and it is killed with SIGKILL; then the records on
# disk are compared with those it had queued. Runs on a copy of the registry (it needs two
# versions). Prints, per round, the records queued, written and lost, the pending gauge at
# the kill, and the bound (rate x window).
#   scripts/exposure-kill.sh [models] [flush-ms] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:-models}
flush_ms=${2:-1000}
rounds=${3:-3}
bin=target/release
cargo build --release --quiet --bin loyalscore --bin loyalscore-serve
work=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cp -r "$registry" "$work/reg"
mapfile -t versions < <($bin/loyalscore --registry "$work/reg" --json models list \
  | python3 -c 'import json,sys; [print(v["version"]) for v in json.load(sys.stdin)[:2]]')
[ ${#versions[@]} -eq 2 ] || { echo "$registry needs two versions" >&2; exit 1; }
$bin/loyalscore --registry "$work/reg" traffic set --experiment crash \
  --arm a="${versions[0]}":50 --arm b="${versions[1]}":50 --reason "exposure loss" >/dev/null
export LOYALSCORE_EXPOSURE_KEY=0123456789abcdef0123456789abcdef
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "round queued written lost pending_at_kill rate_per_s bound(rate*window)"
for r in $(seq 1 "$rounds"); do
  port=$(free_port); mport=$(free_port)
  exposures="$work/exposures-$r"
  $bin/loyalscore-serve --registry "$work/reg" --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$mport" --state off --log error \
    --exposure-log "$exposures" --exposure-flush-ms "$flush_ms" &
  server=$!
  pids+=("$server")
  until $bin/loyalscore health --server "http://127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done
  $bin/loyalscore --json bench --server "http://127.0.0.1:$port" --mode features \
    --concurrency 2 --duration-secs 60 --requests 1000000000 --warmup 0 >/dev/null 2>&1 &
  bench=$!
  pids+=("$bench")
  sleep 5
  # The load stops a moment before the kill, so the server's own count of queued records is
  # exact; what it had not written by then is what the kill loses.
  kill -9 "$bench"
  metrics=$(curl -s "http://127.0.0.1:$mport/metrics")
  kill -9 "$server"
  wait "$server" "$bench" 2>/dev/null || true
  queued=$(awk '/^loyalscore_exposures_total\{result="queued"\}/{print $2}' <<<"$metrics")
  pending=$(awk '/^loyalscore_exposure_pending /{print $2}' <<<"$metrics")
  written=$(cat "$exposures"/*/*.jsonl 2>/dev/null | wc -l)
  python3 -c "q,w,p,ms=$queued,$written,$pending,$flush_ms; rate=q/5.0; print($r, q, w, q-w, p, round(rate), round(rate*ms/1000))"
done
