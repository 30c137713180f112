#!/usr/bin/env bash
# A soak (BENCHMARKS.md, "Hostile load"): one loyalscore-serve process under Score load for
# a while, with its alias swapped between two versions every 10 s, RSS sampled each time.
# The registry needs at least two versions (the quickstart's plus one more fit, e.g.
# `cargo run --release --bin loyalscore-train -- fit --transactions data/sample.csv
# --registry models --trees 20`). Prints requests, errors, latency, swaps and the RSS series.
#   scripts/soak.sh [models] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:-models}
secs=${2:-600}
bin=target/release
cargo build --release --quiet --bin loyalscore --bin loyalscore-serve
mapfile -t versions < <($bin/loyalscore --registry "$registry" --json models list \
  | python3 -c 'import json,sys; [print(v["version"]) for v in json.load(sys.stdin)[:2]]')
[ ${#versions[@]} -eq 2 ] || { echo "$registry needs two versions" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
$bin/loyalscore-serve --registry "$registry" --listen "127.0.0.1:$port" \
  --metrics-listen "127.0.0.1:$mport" --state off --log warn --poll-interval-secs 1 &
server=$!
pids+=("$server")
until $bin/loyalscore health --server "http://127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done

$bin/loyalscore --json bench --server "http://127.0.0.1:$port" --mode features --concurrency 2 \
  --duration-secs "$secs" --requests 1000000000 --warmup 100 >"$work/bench.json" &
bench=$!
pids+=("$bench")
swaps=0
tick=0
start=$(date +%s)
echo "seconds rss_kib"
while kill -0 "$bench" 2>/dev/null; do
  sleep 10
  # One of the two is where the alias already points: that move is refused, the next is not.
  $bin/loyalscore --registry "$registry" alias set production "${versions[$((tick % 2))]}" \
    --reason soak --actor soak >/dev/null 2>&1 && swaps=$((swaps + 1))
  tick=$((tick + 1))
  echo "$(($(date +%s) - start)) $(ps -o rss= -p "$server")"
done
wait "$bench" || true
echo "swaps $swaps"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("requests %(requests)d errors %(errors)d p50 %(p50_us)d us p99 %(p99_us)d us p99.9 %(p999_us)d us max %(max_us)d us" % r)' "$work/bench.json"
python3 - "$mport" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("loyalscore_model_loads_total", "loyalscore_requests_total")):
        print(line)
EOF
