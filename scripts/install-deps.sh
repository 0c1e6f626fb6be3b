#!/usr/bin/env bash
# Installs what the coordinator's tests and development node need and Go
# does not bring: memcached. Go modules are fetched by the go command.
set -euo pipefail
if command -v memcached >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing memcached with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq memcached >/dev/null
# Debian starts a memcached service on 11211 on install; tests never use it
# (each test starts its own on a free port), so it is left as the system has it.
command -v memcached >/dev/null
