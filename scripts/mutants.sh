#!/usr/bin/env bash
# Mutation testing: applies each mutant of testdata/mutants (a plausible
# one-line bug, as a patch) to a scratch copy of the repository, runs the
# tests the mutant names, and reports whether they killed it (a test
# failed) and how long that took. See docs/testing.md, "Mutants".
#
#   scripts/mutants.sh                 every mutant (2 to 4 minutes on 2 cores)
#   scripts/mutants.sh g8 g9           the mutants whose file name holds g8 or g9
#   scripts/mutants.sh -check          only check that every patch applies to the tree
#   scripts/mutants.sh -baseline       first run each mutant's tests unmutated
#
# A mutant is a patch in git's format (paths a/... and b/... from the
# repository root) after a header the script reads, one field per line:
#
#   Guarantee: G1
#   Bug: what the patch breaks, in a sentence
#   Tests: ./pkg/tokenseq ^TestA$|^TestB$
#   Tests: ./pkg/client ^TestC$          (one line per package)
#
# The tests run with go test -count=1 -run REGEX PACKAGE, without -race.
# The copy is made of the working tree as it is (uncommitted changes
# included), once per run, under a temporary directory that is removed at
# the end; the working tree itself is never written. The script exits 1
# when a mutant survived or its patch did not apply or build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

check=false
baseline=false
filters=()
while [ $# -gt 0 ]; do
  case "$1" in
    -check) check=true; shift ;;
    -baseline) baseline=true; shift ;;
    -h|-help|--help) usage; exit 0 ;;
    -*) echo "mutants.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) filters+=("$1"); shift ;;
  esac
done

mutants=()
for p in testdata/mutants/*.patch; do
  base=$(basename "$p" .patch)
  if [ ${#filters[@]} -gt 0 ]; then
    keep=false
    for f in "${filters[@]}"; do
      case "$base" in *"$f"*) keep=true ;; esac
    done
    $keep || continue
  fi
  mutants+=("$p")
done
if [ ${#mutants[@]} -eq 0 ]; then
  echo "mutants.sh: no mutant matches" >&2
  exit 2
fi

# field NAME PATCH prints the values of the header field NAME, one a line.
field() { sed -n '/^diff --git /q; s/^'"$1"': *//p' "$2"; }

if $check; then
  bad=0
  for p in "${mutants[@]}"; do
    if git apply --check "$p" 2>/dev/null; then
      echo "applies  $(basename "$p" .patch)"
    else
      echo "FAILS    $(basename "$p" .patch)"
      bad=1
    fi
  done
  exit $bad
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mutants-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
repo=$scratch/repo
mkdir "$repo"
# The working tree as it is, without git's data or build outputs.
tar -C "$root" --exclude=./.git --exclude=./bin --exclude=./coordinator.etcd --exclude='*.test' -cf - . | tar -C "$repo" -xf -
rm -f "$repo/coordinator"

# runtests PATCH LOG runs the patch's tests in the copy, appending their
# output to LOG; it prints the failed tests (or what broke) and returns 1
# when any test line failed.
runtests() {
  local p=$1 log=$2 failed=0 line pkg regex out status
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    pkg=${line%% *}
    regex=${line#* }
    status=0
    out=$(cd "$repo" && go test -count=1 -timeout 5m -run "$regex" "$pkg" 2>&1) || status=$?
    printf '== go test -run %q %s (exit %d)\n%s\n' "$regex" "$pkg" "$status" "$out" >>"$log"
    if [ "$status" -ne 0 ]; then
      failed=1
      if grep -qE '\[(build|setup) failed\]|^# ' <<<"$out"; then
        echo "BUILD:$pkg"
      elif grep -q -- '--- FAIL' <<<"$out"; then
        # The failed tests, leaves only: a subtest stands for its parent.
        grep -oE -- '--- FAIL: [^ ]+' <<<"$out" | sed 's/--- FAIL: //' |
          awk '{ n[NR] = $0 } END { for (i = 1; i <= NR; i++) { leaf = 1; for (j = 1; j <= NR; j++) if (index(n[j], n[i] "/") == 1) leaf = 0; if (leaf) print n[i] } }'
      elif grep -q 'panic: test timed out' <<<"$out"; then
        echo "TIMEOUT:$pkg"
      elif grep -q '^panic: ' <<<"$out"; then
        echo "PANIC:$pkg"
      else
        echo "FAIL:$pkg"
      fi
    fi
  done < <(field Tests "$p")
  return $failed
}

logs=$scratch/logs
mkdir "$logs"
keep_logs=${MUTANTS_LOGS:-}
results=()
killed=0
survived=0
broken=0
start_all=$(date +%s)
printf '%-40s %-12s %-9s %7s  %s\n' MUTANT GUARANTEE RESULT SECONDS "KILLED BY"
for p in "${mutants[@]}"; do
  name=$(basename "$p" .patch)
  guarantee=$(field Guarantee "$p" | head -1)
  log=$logs/$name.log
  if [ -z "$(field Tests "$p")" ]; then
    printf '%-40s %-12s %-9s %7s  %s\n' "$name" "$guarantee" BROKEN - "no Tests: line"
    broken=$((broken + 1))
    continue
  fi
  if $baseline; then
    if ! base_failed=$(runtests "$p" "$log"); then
      printf '%-40s %-12s %-9s %7s  %s\n' "$name" "$guarantee" BROKEN - "fails unmutated: $(echo $base_failed)"
      broken=$((broken + 1))
      continue
    fi
  fi
  if ! (cd "$repo" && git apply "$root/$p") 2>>"$log"; then
    printf '%-40s %-12s %-9s %7s  %s\n' "$name" "$guarantee" BROKEN - "patch does not apply"
    broken=$((broken + 1))
    continue
  fi
  t0=$(date +%s)
  by=""
  if by=$(runtests "$p" "$log"); then
    result=SURVIVED
    survived=$((survived + 1))
  elif grep -q '^BUILD:' <<<"$by"; then
    result=BROKEN
    broken=$((broken + 1))
  else
    result=KILLED
    killed=$((killed + 1))
  fi
  secs=$(($(date +%s) - t0))
  (cd "$repo" && git apply -R "$root/$p")
  printf '%-40s %-12s %-9s %7d  %s\n' "$name" "$guarantee" "$result" "$secs" "$(echo $by | tr ' ' ',')"
  if [ -n "$keep_logs" ]; then
    mkdir -p "$keep_logs"
    cp "$log" "$keep_logs/"
  fi
done
total=$((killed + survived + broken))
elapsed=$(($(date +%s) - start_all))
echo
echo "mutants: $total, killed: $killed, survived: $survived, broken: $broken; kill rate $((100 * killed / total))%; ${elapsed}s"
[ "$survived" -eq 0 ] && [ "$broken" -eq 0 ]
