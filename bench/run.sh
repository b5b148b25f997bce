#!/usr/bin/env bash
# bench/run.sh BUILD: runs every benchmark section bench/[a-z]*.sh (except run.sh and
# lib.sh) in name order, passing BUILD (the directory holding the fota binaries).
# Each section prints its own table and writes JSON under bench/out/.
# Exits non-zero when any section failed (a missed performance target is not a failure).
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mkdir -p bench/out

rc=0
for s in bench/[a-z]*.sh; do
  case "$(basename "$s")" in run.sh | lib.sh) continue ;; esac
  [ -f "$s" ] || continue
  echo "== $s"
  if ! bash "$s" "$BUILD"; then
    echo "bench: $s failed" >&2
    rc=1
  fi
done
exit $rc
