#!/usr/bin/env bash
# Builds the runtime image from the Containerfile and serves a Score from it: the check
# `scripts/test.sh` runs (README "Deploy on Kubernetes").
#
# This machine reaches no image registry and runs no containers (see ARCHITECTURE.md,
# "The image"), so: the two base images are made once from Debian packages with mmdebstrap
# and kept in buildah's local storage; the binaries are built here and handed to the
# Containerfile's builder stage (PREBUILT=1); the image's root filesystem is mounted and its
# binaries run with chroot as the image's user, in this network namespace, on loopback.
# The binaries are the debug build the test suite made just before (PROFILE=debug): they link
# the same libraries as the release ones, and a second, release, build of every crate would
# double the suite's build time for nothing this check can see.
# The runtime base holds libc6 and libgcc-s1 only (what distroless/cc adds to a bare image
# and the binaries need), and no shell: a missing library or a need for /bin/sh fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "check-image.sh needs root (buildah mount, chroot); run it with sudo" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
image=localhost/loyalscore:$version
runtime_base=localhost/loyalscore-check/runtime-base:bookworm
builder_base=localhost/loyalscore-check/builder-base:bookworm
# The check's images are built by root here, not pulled: nothing to verify a signature of.
bud=(buildah bud --quiet --isolation chroot)

# A base image from Debian packages, once per machine (reused by later runs).
base() { # NAME VARIANT PACKAGES
  buildah inspect --type image "$1" >/dev/null 2>&1 && return
  local dir
  dir=$(mktemp -d)
  mmdebstrap --quiet --variant="$2" --include="$3" bookworm "$dir/base.tar"
  printf 'FROM scratch\nADD base.tar /\n' >"$dir/Containerfile"
  "${bud[@]}" -t "$1" "$dir" >/dev/null
  rm -rf "$dir"
}
base "$runtime_base" extract libc6,libgcc-s1
base "$builder_base" essential binutils

# The suite's own build (dev-dependencies' features included), so this builds nothing after
# `cargo test --all-targets`; `cargo build --bins` would resolve features without them and
# rebuild every crate that depends on tokio.
cargo test --locked --all-targets --no-run --quiet
"${bud[@]}" --build-arg BUILDER="$builder_base" --build-arg BASE="$runtime_base" \
  --build-arg PREBUILT=1 --build-arg PROFILE=debug -t "$image" . >/dev/null

label() { buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$1\"}}" "$image"; }
[ "$(label org.opencontainers.image.version)" = "$version" ] \
  || { echo "image label version $(label org.opencontainers.image.version), crate $version" >&2; exit 1; }
[ "$(label org.opencontainers.image.licenses)" = "Apache-2.0" ] || { echo "licence label" >&2; exit 1; }
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || { echo "image user $user, expected 65532:65532" >&2; exit 1; }

c=$(buildah from --quiet "$image")
m=$(buildah mount "$c")
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  buildah umount "$c" >/dev/null || true
  buildah rm "$c" >/dev/null || true
}
trap cleanup EXIT
[ ! -e "$m/bin/sh" ] || { echo "the runtime base should have no shell" >&2; exit 1; }
# What the pod's emptyDir gives it: a writable /tmp owned by the image's user.
mkdir -p "$m/tmp/check"
chown -R 65532:65532 "$m/tmp"
as_image() { chroot --userspec=65532:65532 "$m" "$@"; }
bin=/usr/local/bin
out=$m/tmp/check

as_image $bin/loyalscore-train generate --customers 2000 --out /tmp/check/data.csv >/dev/null
as_image $bin/loyalscore-train fit --transactions /tmp/check/data.csv --registry /tmp/check/registry \
  --trees 20 --promote production --reason "image check" --actor check-image --json \
  >"$out/fit.json" 2>"$out/fit.log" || { cat "$out/fit.log" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Not through as_image: $! must be the server itself, for the kill at the end.
chroot --userspec=65532:65532 "$m" $bin/loyalscore-serve --listen "127.0.0.1:$port" \
  --metrics-listen "127.0.0.1:$mport" --registry /tmp/check/registry --alias production \
  --state off >"$out/serve.log" 2>&1 &
pid=$!
server=http://127.0.0.1:$port
for _ in $(seq 1 120); do
  as_image $bin/loyalscore health --server "$server" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "the server exited:" >&2; cat "$out/serve.log" >&2; exit 1; }
  sleep 0.5
done
as_image $bin/loyalscore health --server "$server" \
  || { echo "not SERVING after 60 s:" >&2; cat "$out/serve.log" >&2; exit 1; }

cat >"$out/request.json" <<'EOF'
{"customer_id": "image-check-1", "as_of": "2025-06-01",
 "history": [{"time": "2025-01-10", "amount": 42.5}, {"time": "2025-02-20", "amount": 30.0},
             {"time": "2025-04-02", "amount": 55.0}]}
EOF
as_image $bin/loyalscore score --server "$server" --file /tmp/check/request.json --json >"$out/score.json"
python3 - "$out/score.json" "$out/fit.json" <<'EOF'
import json, sys
score, fit = (json.load(open(p)) for p in sys.argv[1:])
assert 0.0 <= score["churn_probability"] <= 1.0, score
assert score["model_version"] == fit["version"], (score["model_version"], fit["version"])
assert fit["promoted"] == "production", fit
print(f"image: served {score['model_version']}: churn {score['churn_probability']:.3f}, "
      f"clv {score['clv']:.2f}, segment {score['segment']}")
EOF
# Earlier builds' layers, now untagged, would pile up run after run.
buildah rmi --prune >/dev/null 2>&1 || true
echo "ok: $image built ($(buildah images --format '{{.Size}}' "$image")), SERVING and scoring from its filesystem"
