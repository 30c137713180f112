#!/usr/bin/env bash
# The whole test suite, as the README gives it: `./scripts/test.sh`.
# Installs what the tests need first (quick when already there): moto (a real S3 API for the
# registry's contract tests) and the Helm chart checkers, into .venv; Debian packages (below).
# Then the code checks (format, clippy, function length), every test, and the image check.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
# Debian packages the checks run, installed once (quick when already there): redis-server
# for the customer-state tests, promtool (in prometheus) for the alert rules and dashboard
# queries, buildah and mmdebstrap to build the container image and its bases, chromium to
# render the HTML reports in a real browser.
need=()
for tool in redis-server:redis-server promtool:prometheus buildah:buildah mmdebstrap:mmdebstrap chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
fi
export LOYALSCORE_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export LOYALSCORE_PYTHON="$PWD/.venv/bin/python"

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
python3 scripts/check-fn-length.py
cargo test --locked --all-targets
# The container image: built from the Containerfile, then serving a Score from its filesystem.
./scripts/check-image.sh
