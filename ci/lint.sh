#!/usr/bin/env bash
# Static analysis: cppcheck and clang-tidy over every C source of the project, zero
# findings required (exit 1 otherwise). Run by `make lint` and .ci/run.
#   cppcheck   --enable=warning,portability,performance, suppressions in
#              ci/cppcheck-suppressions.txt (each with its reason)
#   clang-tidy checks from .clang-tidy (bugprone-*, cert-*, clang-analyzer-*, minus the
#              noisy ones named there with a reason); findings listed in
#              ci/lint-suppressions.txt as "FILE CHECK" (each with its reason) are dropped
# LINT_JOBS (default 2) clang-tidy processes at once. Prints every finding kept, then a
# summary line.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
JOBS=${LINT_JOBS:-2}
for t in cppcheck clang-tidy; do
  command -v "$t" >/dev/null 2>&1 || { echo "lint: $t not installed (bash ci/install-deps.sh)" >&2; exit 2; }
done
shopt -s nullglob
FILES=(formats/*.c agent/*.c packager/*.c verifier/*.c tools/*.c tests/proxy/*.c tests/soak/*.c tests/unit/*.c tests/fuzz/*.c)
# clang-tidy skips tests/unit (see .clang-tidy: CUnit's FATAL asserts longjmp)
TIDY_FILES=()
for f in "${FILES[@]}"; do case $f in tests/unit/*) ;; *) TIDY_FILES+=("$f") ;; esac; done
PKG_CFLAGS=$(pkg-config --cflags libcrypto libzstd libarchive jansson libdivsufsort libcurl inih 2>/dev/null)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# ---- cppcheck ----
# shellcheck disable=SC2086
cppcheck -q --enable=warning,portability,performance --std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
  -Iformats/include --inline-suppr --suppressions-list=ci/cppcheck-suppressions.txt -j "$JOBS" \
  --template='{file}:{line}: {severity}: {message} [{id}]' "${FILES[@]}" 2>"$out/cppcheck.txt"
ncpp=$(grep -c ': \(error\|warning\|portability\|performance\|style\): ' "$out/cppcheck.txt")
cat "$out/cppcheck.txt"

# ---- clang-tidy ----
export PKG_CFLAGS out
printf '%s\n' "${TIDY_FILES[@]}" | xargs -P "$JOBS" -I{} sh -c \
  'clang-tidy --quiet "$1" -- -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Iformats/include $PKG_CFLAGS -pthread \
     >"$out/tidy.$(echo "$1" | tr / _)" 2>/dev/null; true' sh {}
# one line per finding: FILE:LINE:COL: warning: TEXT [CHECK], paths relative to the top
cat "$out"/tidy.* 2>/dev/null | grep -E '^[^ ].*:[0-9]+:[0-9]+: (warning|error): ' | sed "s|^$top/||" | sort -u >"$out/tidy.all"
# drop the suppressed FILE CHECK pairs
awk 'NR == FNR { if ($0 !~ /^[ \t]*(#|$)/) sup[$1 " " $2] = 1; next }
     { file = $1; sub(/:.*/, "", file); check = $NF; gsub(/[\[\]]/, "", check); n = split(check, cs, ",");
       keep = 1; for (i = 1; i <= n; i++) if ((file " " cs[i]) in sup) keep = 0;
       if (keep) print }' ci/lint-suppressions.txt "$out/tidy.all" >"$out/tidy.kept"
# suppressions that matched nothing: stale (fixed), say so to prune the list
awk 'FILENAME == ARGV[1] { file = $1; sub(/:.*/, "", file); check = $NF; gsub(/[\[\]]/, "", check); n = split(check, cs, ",");
                 for (i = 1; i <= n; i++) seen[file " " cs[i]] = 1; next }
     $0 !~ /^[ \t]*(#|$)/ && !(($1 " " $2) in seen) { print "lint: note: suppression matched nothing (fixed? remove it): " $1 " " $2 }' \
  "$out/tidy.all" ci/lint-suppressions.txt
ntidy=$(wc -l <"$out/tidy.kept")
nsup=$(($(wc -l <"$out/tidy.all") - ntidy))
cat "$out/tidy.kept"
echo "lint: cppcheck ${#FILES[@]} files, clang-tidy ${#TIDY_FILES[@]}; cppcheck $ncpp finding(s); clang-tidy $ntidy finding(s) ($nsup suppressed by ci/lint-suppressions.txt)"
[ "$ncpp" -eq 0 ] && [ "$ntidy" -eq 0 ]
