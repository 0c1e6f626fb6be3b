#!/usr/bin/env bash
# Installs what the coordinator's tests and development node need and Go
# does not bring: memcached, and the Debian packages of the tests that run
# callers and readers written in other languages (integration/readers reads
# with each client's default settings: pylibmc, pymemcache, php-memcached,
# Dalli and spymemcached, the last run as a single-file Java program), and
# the Python client package's (clients/python: grpcio, with protobuf; pip and
# setuptools install it offline; pytest runs its tests). Regenerating its
# stubs needs python3-grpc-tools too (scripts/gen-api.sh), running it does
# not. The deployment material's tests need protoc (protobuf-compiler: the
# OpenAPI document is checked against a fresh generation), promtool (the
# prometheus package: the alert rules' tests), and podman with runc (the
# container image is built and run). Go modules are fetched by the go
# command.
set -euo pipefail
PACKAGES=(
  memcached
  python3-pylibmc python3-pymemcache
  python3-grpcio python3-protobuf python3-pip python3-setuptools python3-pytest
  php-cli php-memcached
  ruby ruby-dalli
  libspymemcached-java default-jdk-headless
  protobuf-compiler prometheus podman runc
)
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
# Debian's prometheus package starts a Prometheus service on :9090 where
# systemd runs, the port scripts/run-dev.sh's node serves its metrics on;
# the tests only need promtool, so a service this script installed is
# stopped.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# Debian starts a memcached service on 11211 on install; tests never use it
# (each test starts its own on a free port), so it is left as the system has it.
command -v memcached >/dev/null
