#!/usr/bin/env bash
# The whole test suite, as the README gives it: `./scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets
