#!/usr/bin/env bash
# Runs every test against the binaries in BUILD (default build/): the CUnit suites,
# then each tests/integration/test_*.sh, then the fuzz corpora replay when built.
# Ends with one line "N passed, N failed"; exits 1 when anything failed.
# Usage: tests/run.sh [BUILD] [FILTER]   (FILTER: run only integration scripts whose name contains it)
set -u
BUILD=${1:-build}
FILTER=${2:-}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BIN=$(cd "$BUILD" && pwd)
export FOTA_BIN="$BIN" FOTA_TOP="$top"

passed=0
failed=0
failures=()

log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ -z "$FILTER" ]; then
  echo "== unit tests"
  "$BIN/unit-tests" >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^unit: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^unit: ([0-9]+) passed, ([0-9]+) failed$/\1/')
    f=$(echo "$line" | sed -E 's/^unit: ([0-9]+) passed, ([0-9]+) failed$/\2/')
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("unit tests ($f)")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); failures+=("unit-tests exited $rc"); fi
  else
    failed=$((failed + 1)); failures+=("unit-tests crashed (exit $rc)")
  fi
fi

for t in tests/integration/test_*.sh; do
  [ -e "$t" ] || continue
  case "$t" in *"$FILTER"*) ;; *) continue ;; esac
  echo "== $t"
  bash "$t" >"$log" 2>&1
  rc=$?
  cat "$log"
  p=$(grep -c '^PASS: ' "$log")
  f=$(grep -c '^FAIL: ' "$log")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" -gt 0 ]; then failures+=("$t ($f)"); fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    failed=$((failed + 1)); failures+=("$t exited $rc")
  fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$rc" -eq 0 ]; then
    failed=$((failed + 1)); failures+=("$t ran no test")
  fi
done

if [ -z "$FILTER" ] || [ "$FILTER" = fuzz ]; then
  for h in "$BIN"/replay/fuzz_*; do
    [ -x "$h" ] || continue
    name=$(basename "$h"); corpus="tests/fuzz/corpus/${name#fuzz_}"
    echo "== corpus replay: $name"
    if [ -d "$corpus" ] && out=$("$h" "$corpus" 2>&1); then
      echo "PASS: fuzz corpus $name: $out"; passed=$((passed + 1))
    else
      echo "FAIL: fuzz corpus $name: ${out:-no corpus at $corpus}" | tail -5; failed=$((failed + 1)); failures+=("corpus $name")
    fi
  done
fi

if [ ${#failures[@]} -gt 0 ]; then
  echo
  echo "failed:"
  for f in "${failures[@]}"; do echo "  $f"; done
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
