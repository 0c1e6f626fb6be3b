#!/usr/bin/env bash
# Regenerates the Go code of the caller API (api/coordinator/v1) from
# coordinator.proto and its HTTP routes (coordinator_api.yaml), with the
# plugin versions pinned here installed into a temporary GOBIN. Needs protoc
# (Debian: apt-get install protobuf-compiler).
set -euo pipefail
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_GEN_GATEWAY=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.29.0

cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "gen-api: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
for tool in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC" "$PROTOC_GEN_GATEWAY"; do
  GOBIN="$gobin" GOFLAGS=-mod=mod go install "$tool"
done
PATH="$gobin:$PATH" protoc -I . \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out=. --grpc-gateway_opt=paths=source_relative \
  --grpc-gateway_opt=grpc_api_configuration=api/coordinator/v1/coordinator_api.yaml \
  api/coordinator/v1/coordinator.proto
echo "gen-api: regenerated api/coordinator/v1 with protoc $(protoc --version | cut -d' ' -f2)" >&2
