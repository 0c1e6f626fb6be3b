#!/usr/bin/env bash
# Regenerates the Go code of the caller API (api/coordinator/v1) from
# coordinator.proto and its HTTP routes (coordinator_api.yaml), and its
# OpenAPI document (coordinator.swagger.json, served at /openapi.json), with
# the plugin versions pinned here installed into a temporary GOBIN. Needs
# protoc (Debian: apt-get install protobuf-compiler). GEN_API_GO_OUT, when
# set, is a directory the Go part writes into in place of the repository
# (api/coordinator/v1/... under it), for a test that the committed files
# are current.
#
# Then regenerates the Python client's stubs (clients/python/coordinator_client/_pb):
# the messages and their type stubs with protoc, the service stub with
# grpc_tools (Debian: apt-get install python3-grpc-tools), run by Debian's
# python3. `scripts/gen-api.sh go` or `scripts/gen-api.sh python` does one
# of the two.
set -euo pipefail
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_GEN_GATEWAY=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.29.0
PROTOC_GEN_OPENAPIV2=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.29.0

cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "gen-api: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
what=${1:-all}
case "$what" in
  all | go | python) ;;
  *) echo "usage: scripts/gen-api.sh [all|go|python]" >&2; exit 2 ;;
esac

gen_go() {
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
for tool in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC" "$PROTOC_GEN_GATEWAY" "$PROTOC_GEN_OPENAPIV2"; do
  GOBIN="$gobin" GOFLAGS=-mod=mod go install "$tool"
done
out=${GEN_API_GO_OUT:-.}
mkdir -p "$out"
# json_names_for_fields=false: the gateway speaks the proto's field names
# (pkg/apiserver's UseProtoNames).
PATH="$gobin:$PATH" protoc -I . \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out="$out" --grpc-gateway_opt=paths=source_relative \
  --grpc-gateway_opt=grpc_api_configuration=api/coordinator/v1/coordinator_api.yaml \
  --openapiv2_out="$out" \
  --openapiv2_opt=grpc_api_configuration=api/coordinator/v1/coordinator_api.yaml \
  --openapiv2_opt=json_names_for_fields=false \
  --openapiv2_opt=openapi_configuration=api/coordinator/v1/coordinator_openapi.yaml \
  api/coordinator/v1/coordinator.proto
echo "gen-api: regenerated $out/api/coordinator/v1 with protoc $(protoc --version | cut -d' ' -f2)" >&2
}

# gen_python writes the stubs into a temporary directory and moves them
# into the package, with the service stub's absolute import of the messages
# (protoc names it after the proto's path, api.coordinator.v1) made relative
# to the package.
gen_python() {
  local py=/usr/bin/python3 out=clients/python/coordinator_client/_pb tmp
  "$py" -c 'import grpc_tools.protoc' 2>/dev/null || {
    echo "gen-api: grpc_tools not found for $py (apt-get install python3-grpc-tools)" >&2
    exit 1
  }
  tmp=$(mktemp -d)
  protoc -I . --python_out="$tmp" --pyi_out="$tmp" api/coordinator/v1/coordinator.proto
  "$py" -m grpc_tools.protoc -I . --grpc_python_out="$tmp" api/coordinator/v1/coordinator.proto
  protoc -I clients/python --python_out=clients/python --pyi_out=clients/python "$out/rpc_status.proto"
  sed -i "s/'api\.coordinator\.v1\.coordinator_pb2'/'coordinator_client._pb.coordinator_pb2'/" \
    "$tmp/api/coordinator/v1/coordinator_pb2.py"
  sed -i 's/^from api\.coordinator\.v1 import coordinator_pb2 as /from . import coordinator_pb2 as /' \
    "$tmp/api/coordinator/v1/coordinator_pb2_grpc.py"
  mv "$tmp"/api/coordinator/v1/coordinator_pb2.py "$tmp"/api/coordinator/v1/coordinator_pb2.pyi \
    "$tmp"/api/coordinator/v1/coordinator_pb2_grpc.py "$out/"
  rm -rf "$tmp"
  echo "gen-api: regenerated $out with protoc $(protoc --version | cut -d' ' -f2) and grpc_tools" >&2
}

case "$what" in
  all) gen_go; gen_python ;;
  go) gen_go ;;
  python) gen_python ;;
esac
