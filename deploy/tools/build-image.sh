#!/usr/bin/env bash
# Builds podflow's image (deploy/Containerfile) on a Debian 12 machine that reaches package
# registries but no container registry: the debian:12-slim base is replaced by a Debian 12
# rootfs made with debootstrap (minbase) from the Debian mirror and committed as
# localhost/debian:12-slim; then buildah builds deploy/Containerfile on it and runs
# `podflow --version` in the result. As root. Measured here: ~35 s debootstrap, ~60 s build,
# image ~560 MB (of which ~300 MB Python packages: pyarrow, duckdb).
#
#   deploy/tools/build-image.sh [TAG]        TAG defaults to localhost/podflow:<version>
#
# Where a registry is reachable, plain `podman build -f deploy/Containerfile ...` does the
# same from docker.io/library/debian:12-slim (see the Containerfile's header).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
TAG=${1:-localhost/podflow:$version}
BASE=localhost/debian:12-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-image: debootstrap bookworm (minbase) from $MIRROR" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  ctr=$(buildah from scratch)
  cp -a "$rootfs"/. "$(buildah mount "$ctr")"/
  buildah umount "$ctr" >/dev/null
  buildah config --cmd /bin/bash "$ctr"
  buildah commit -q "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

# pip inside the build trusts what this machine trusts (a TLS-intercepting proxy's CA, say).
buildah bud --isolation chroot --network host --layers=false \
  --build-arg BASE_IMAGE="$BASE" \
  --build-arg PIP_CERT=/run/ca.crt -v /etc/ssl/certs/ca-certificates.crt:/run/ca.crt:ro \
  -f deploy/Containerfile --ignorefile deploy/Containerfile.dockerignore -t "$TAG" .

ctr=$(buildah from "$TAG")
buildah run --isolation chroot "$ctr" -- podflow --version
buildah rm "$ctr" >/dev/null
echo "build-image: $TAG" >&2
