#!/usr/bin/env bash
# The whole test suite, as the README gives it: `./scripts/test.sh`.
# Installs what the tests need first (quick when already there): moto (a real S3 API for the
# registry's contract tests) and the Helm chart checkers, into .venv; redis-server (apt) for
# the customer-state tests. Then the code checks (format, clippy, function length), then
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
# A real Redis for the customer-state tests (Debian's package; started and stopped by them).
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -q redis-server >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q redis-server >/dev/null; }
fi
export LOYALSCORE_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export LOYALSCORE_PYTHON="$PWD/.venv/bin/python"

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
python3 scripts/check-fn-length.py
cargo test --locked --all-targets
