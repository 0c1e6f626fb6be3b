#!/usr/bin/env bash
# Runs the fault suite (integration/faults): real 3-member etcd clusters,
# 3 `coordinator serve` nodes and memcached, with faults injected and every
# history checked against docs/guarantees.md. See docs/testing.md.
#
#   scripts/faults.sh                        every scenario and a 20s randomized run
#   scripts/faults.sh -duration 20m          one long randomized run (new seed)
#   scripts/faults.sh -duration 20m -seed N  replay / extend the randomized run N
#   scripts/faults.sh -run TestLeaderPause -count 5
#   scripts/faults.sh -duration 60m -soak    a soak: the randomized run, sampling
#                                            every process once a minute
#
# Options:
#   -duration D   length of the randomized run (Go duration); alone, it runs
#                 only TestRandomFaults
#   -seed N       seed of the randomized run (default: from the clock; printed)
#   -run REGEX    which tests to run (go test -run)
#   -count N      run each test N times
#   -overlap N    most faults the randomized run holds at once (default 3;
#                 1 injects one at a time)
#   -soak         sample every node's and member's RSS, goroutines and open
#                 files, and etcd's db size, once a minute; the checker
#                 flags growth that is not bounded (rule leak)
#   -keep         save every history as JSON (default: only failing ones)
#   -norace       build without the race detector (faster, less checked)
# Each test prints a FAULTS summary line; the lines are repeated at the end
# with the paths of saved histories. Re-check a saved history with
#   go run ./integration/cmd/checkhistory PATH
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

duration=""
seed=0
run=""
count=1
keep=false
overlap=""
soak=false
race=(-race)
while [ $# -gt 0 ]; do
  case "$1" in
    -duration) duration=${2:?-duration needs a value}; shift 2 ;;
    -seed) seed=${2:?-seed needs a value}; shift 2 ;;
    -run) run=${2:?-run needs a value}; shift 2 ;;
    -count) count=${2:?-count needs a value}; shift 2 ;;
    -overlap) overlap=${2:?-overlap needs a value}; shift 2 ;;
    -soak) soak=true; shift ;;
    -keep) keep=true; shift ;;
    -norace) race=(); shift ;;
    -h|-help|--help) usage; exit 0 ;;
    *) echo "faults.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh

timeout=30m
args=()
if [ -n "$duration" ]; then
  args+=(-faults.duration="$duration")
  # A long run is bounded by its own duration; go test's timeout would kill
  # it (and leave no summary).
  timeout=0
  if [ -z "$run" ]; then run='^TestRandomFaults$'; fi
fi
if [ "$seed" != 0 ]; then args+=(-faults.seed="$seed"); fi
if $keep; then args+=(-faults.keep); fi
if [ -n "$overlap" ]; then args+=(-faults.overlap="$overlap"); fi
if $soak; then
  args+=(-faults.soak)
  if [ -z "$run" ]; then run='^TestRandomFaults$'; fi
fi
if [ -n "$run" ]; then run_flag=(-run "$run"); else run_flag=(); fi

log=$(mktemp -t faults-log-XXXXXX)
echo "faults.sh: full log in $log" >&2
status=0
go test "${race[@]}" -count="$count" -timeout "$timeout" -v "${run_flag[@]}" \
  ./integration/faults/ "${args[@]}" 2>&1 | tee "$log" || status=$?
echo
echo "==== summary ===="
grep -E '^(FAULTS|READBACK|SOAK|--- (PASS|FAIL|SKIP)|ok |FAIL)' "$log" || true
exit "$status"
