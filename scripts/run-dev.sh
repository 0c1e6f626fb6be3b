#!/usr/bin/env bash
# Runs one coordinator node on the embedded default: an embedded etcd in
# ./coordinator.etcd on 127.0.0.1:2379 and memcached on 127.0.0.1:11211.
# memcached is installed when missing and started when nothing listens on
# 11211; a memcached this script started is stopped (by its pid) on exit.
# The node serves /metrics, /healthz and /readyz on http://127.0.0.1:9090
# (--http-listen; pass another --http-listen to move it).
# The caller API (gRPC and HTTP/JSON) listens on 127.0.0.1:8080 (--api-listen).
# Extra arguments go to `coordinator serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
mkdir -p bin
go build -o bin/coordinator ./cmd/coordinator

mc_pid=""
cleanup() {
  if [ -n "$mc_pid" ]; then kill "$mc_pid" 2>/dev/null || true; wait "$mc_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null; then
  user_flag=()
  if [ "$(id -u)" = 0 ]; then user_flag=(-u root); fi
  memcached -l 127.0.0.1 -p 11211 -U 0 "${user_flag[@]}" &
  mc_pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null && break
    sleep 0.05
  done
  echo "memcached started on 127.0.0.1:11211 (pid $mc_pid)" >&2
else
  echo "using the memcached already listening on 127.0.0.1:11211" >&2
fi
bin/coordinator serve --http-listen 127.0.0.1:9090 --api-listen 127.0.0.1:8080 "$@" &
node_pid=$!
trap 'kill -TERM $node_pid 2>/dev/null; wait $node_pid; cleanup' INT TERM
wait $node_pid
