#!/usr/bin/env bash
# Runs the development set-up: etcd in a process of its own (a single
# embedded member, internal/cmd/devetcd, data in ./coordinator.etcd) on
# 127.0.0.1:2379, memcached on 127.0.0.1:11211, and one coordinator node
# against them. etcd and memcached are started only when nothing listens on
# their ports already (then the running ones are used); memcached is
# installed when missing.
#
# The node serves /metrics and the probes (/livez, /healthz, /readyz,
# /readyz/api, /readyz/applier) on http://127.0.0.1:9090 (--http-listen)
# and the caller API (gRPC and HTTP/JSON) on 127.0.0.1:8080
# (--api-listen); extra arguments go to `coordinator serve` and win over
# these.
#
# Ctrl-C stops the node (a leader resigns at once, so a second node takes
# over: the README's failover walk-through); etcd and memcached keep
# running for other nodes until a second Ctrl-C, which stops the ones this
# script started, by their pids. DEV_ETCD_ADDR, DEV_ETCD_DATA_DIR and
# DEV_MEMCACHED_PORT move etcd, its data and memcached (for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
etcd_addr=${DEV_ETCD_ADDR:-127.0.0.1:2379}
etcd_dir=${DEV_ETCD_DATA_DIR:-coordinator.etcd}
mc_port=${DEV_MEMCACHED_PORT:-11211}
bash scripts/install-deps.sh
mkdir -p bin
go build -o bin/coordinator ./cmd/coordinator
go build -o bin/devetcd ./internal/cmd/devetcd

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
wait_listening() {
  for _ in $(seq 200); do
    listening "$1" && return 0
    sleep 0.05
  done
  echo "run-dev: nothing listens on $1" >&2
  return 1
}

mc_pid="" etcd_pid="" node_pid=""
cleanup() {
  for pid in $node_pid $etcd_pid $mc_pid; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
if ! listening "127.0.0.1:$mc_port"; then
  user_flag=()
  if [ "$(id -u)" = 0 ]; then user_flag=(-u root); fi
  memcached -l 127.0.0.1 -p "$mc_port" -U 0 "${user_flag[@]}" &
  mc_pid=$!
  wait_listening "127.0.0.1:$mc_port"
  echo "memcached started on 127.0.0.1:$mc_port (pid $mc_pid)" >&2
else
  echo "using the memcached already listening on 127.0.0.1:$mc_port" >&2
fi
if ! listening "$etcd_addr"; then
  bin/devetcd -data-dir "$etcd_dir" -listen "$etcd_addr" &
  etcd_pid=$!
  wait_listening "$etcd_addr"
else
  echo "using the etcd already listening on $etcd_addr" >&2
fi

bin/coordinator serve --endpoints "http://$etcd_addr" --memcached "127.0.0.1:$mc_port" \
  --http-listen 127.0.0.1:9090 --api-listen 127.0.0.1:8080 "$@" &
node_pid=$!
# The node stops on Ctrl-C by itself (the terminal signals it too); a
# TERM sent to this script goes to it.
trap 'kill -TERM $node_pid 2>/dev/null || true' INT TERM
while kill -0 "$node_pid" 2>/dev/null; do
  wait "$node_pid" || true
done
node_pid=""
if [ -z "$etcd_pid$mc_pid" ]; then
  exit 0
fi
echo "run-dev: node stopped; etcd ($etcd_addr) and memcached (127.0.0.1:$mc_port) keep running for other nodes: Ctrl-C stops them" >&2
# exit runs cleanup (the EXIT trap).
trap 'exit 0' INT TERM
wait $etcd_pid $mc_pid || true
