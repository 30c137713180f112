#!/usr/bin/env bash
# The whole test suite, as the README gives it: `./scripts/test.sh`.
# Installs what the tests need first (idempotent): moto, a real S3 API server for the
# registry's S3 contract tests, into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/moto_server ]; then
  echo "installing moto (S3 test server) into .venv ..."
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
export LOYALSCORE_MOTO_SERVER="$PWD/.venv/bin/moto_server"

cargo test --locked --all-targets
