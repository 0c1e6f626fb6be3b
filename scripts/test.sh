#!/usr/bin/env bash
# Runs the whole test suite: installs memcached when missing, checks
# formatting and vet, then runs every test under the race detector against
# real embedded etcd and real memcached processes the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
go test -race -count=1 -timeout 30m "$@" ./...
