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
# render the HTML reports in a real browser; cmake and the curl and SASL headers to build
# librdkafka (the Kafka client; rdkafka builds it from source and links it in).
need=()
for tool in redis-server:redis-server promtool:prometheus buildah:buildah mmdebstrap:mmdebstrap chromium:chromium cmake:cmake; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
for header in x86_64-linux-gnu/curl/curl.h:libcurl4-openssl-dev sasl/sasl.h:libsasl2-dev; do
  [ -e "/usr/include/${header%%:*}" ] || need+=("${header#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
fi
# The Kafka-compatible broker the stream tests start (tansu: no JVM Kafka installs here).
# Built once per machine, about 16 minutes on 2 cores, into a folder outside the checkout that
# every later run (and every clone) reuses.
tools="${LOYALSCORE_TOOLS:-$HOME/.local/share/loyalscore/tools}"
if [ ! -x "$tools/bin/tansu" ]; then
  echo "installing the tansu broker into $tools (once per machine; about 16 minutes)" >&2
  cargo install tansu --version 0.6.0 --locked --features dynostore --root "$tools" --quiet
fi
export LOYALSCORE_TANSU="$tools/bin/tansu"
export LOYALSCORE_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export LOYALSCORE_PYTHON="$PWD/.venv/bin/python"

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
python3 scripts/check-fn-length.py
cargo test --locked --all-targets
# The container image: built from the Containerfile, then serving a Score from its filesystem.
./scripts/check-image.sh
