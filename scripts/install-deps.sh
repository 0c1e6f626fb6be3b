#!/usr/bin/env bash
# Installs what the coordinator's tests and development node need and Go
# does not bring: memcached, and the Debian packages of the tests that run
# callers and readers written in other languages. Go modules are fetched by
# the go command.
set -euo pipefail
PACKAGES=(memcached python3-pylibmc python3-pymemcache)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing ${missing[*]} with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a memcached service on 11211 on install; tests never use it
# (each test starts its own on a free port), so it is left as the system has it.
command -v memcached >/dev/null
