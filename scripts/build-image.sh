#!/usr/bin/env bash
# Builds the coordinator's container image (deploy/container/Containerfile)
# with Debian's podman: the binary is built here with the host's Go (static,
# CGO off, -trimpath, the version stamped with -ldflags) and copied in with
# the host's CA bundle (Debian's ca-certificates), so that the image build
# itself needs no network.
#
#   scripts/build-image.sh [TAG]     # default coordinator:$VERSION
#
# VERSION defaults to `git describe --tags --always --dirty`, or "dev".
# podman runs with Debian's runc (--runtime runc) and, unless
# CONTAINERS_CONF is set, a containers.conf with default_ulimits = [],
# since podman's default runtime here (crun) cannot set resource limits.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
tag=${1:-coordinator:${version//[^A-Za-z0-9_.-]/-}}
ca=/etc/ssl/certs/ca-certificates.crt
command -v podman >/dev/null || { echo "build-image: podman not found (apt-get install podman runc)" >&2; exit 1; }
[ -r "$ca" ] || { echo "build-image: $ca not found (apt-get install ca-certificates)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '[containers]\ndefault_ulimits = []\n' >"$ctx/containers.conf"
  export CONTAINERS_CONF="$ctx/containers.conf"
fi
CGO_ENABLED=0 go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X github.com/coordinator-dev/coordinator/pkg/buildinfo.Version=$version" \
  -o "$ctx/coordinator" ./cmd/coordinator
cp "$ca" "$ctx/ca-certificates.crt"
cp deploy/container/Containerfile "$ctx/Containerfile"
podman --runtime runc build --quiet --file "$ctx/Containerfile" --tag "$tag" \
  --label org.opencontainers.image.version="$version" "$ctx" >/dev/null
echo "$tag"
