#!/usr/bin/env bash
# Scores the same shapes on loyalscore and on MLServer (scikit-learn runtime) in one run, with
# one load generator (`loyalscore bench`), and prints the ratios. Everything binds to
# 127.0.0.1 and is stopped on exit. Needs a registry with a production version (the
# quickstart's `models/` by default: `cargo run --release -- quickstart --no-serve`).
#
#   scripts/compare-mlserver.sh [REGISTRY]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-mlserver
if [ ! -x "$venv/bin/mlserver" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/mlserver-requirements.txt
fi
cargo build --release --quiet --bin loyalscore --bin loyalscore-serve
exec "$venv/bin/python" scripts/compare_mlserver.py --registry "${1:-models}"
