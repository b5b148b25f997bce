# test_delta_cli.sh: fota-delta end to end: help and exit codes, round trips in both
# formats on generated files, bspatch interoperability, malformed and over-limit patches,
# and round trips on the real benchmark pairs when ../shared/bench is present.
. "$(dirname "$0")/lib.sh"
D=fota-delta
command -v "$D" >/dev/null || { fail "fota-delta built"; exit 0; }

# --help documents the exit codes; --version; usage errors are 2
"$D" --help >"$WORK/help" 2>&1
if [ $? -eq 0 ] && grep -q "exit codes" "$WORK/help" && grep -q "^   4  malformed patch" "$WORK/help"; then
  pass "help lists exit codes"; else fail "help lists exit codes"; fi
check "version" sh -c "$D --version | grep -q '^fota-delta '"
expect_rc "no command is usage" 2 "$D"
expect_rc "unknown command is usage" 2 "$D" frobnicate
expect_rc "diff missing operand is usage" 2 "$D" diff a b
expect_rc "bad format is usage" 2 "$D" diff --format xz a b c
expect_rc "bad window is usage" 2 "$D" diff --window 3000 a b c

# generated inputs: random old; new = old with an insertion, a deletion, scattered edits
head -c 1500000 /dev/urandom >"$WORK/old"
{ head -c 400000 "$WORK/old"; head -c 20000 /dev/urandom; tail -c +400001 "$WORK/old" | head -c 600000;
  tail -c +1050001 "$WORK/old"; } >"$WORK/new"
printf 'XYZ' | dd of="$WORK/new" bs=1 seek=777777 conv=notrunc 2>/dev/null
: >"$WORK/empty"

for fmt in fota bsdiff40; do
  check "diff $fmt" "$D" diff --format "$fmt" --threads 2 "$WORK/old" "$WORK/new" "$WORK/p.$fmt"
  check "patch $fmt" "$D" patch "$WORK/old" "$WORK/p.$fmt" "$WORK/out.$fmt"
  check "round trip $fmt" cmp "$WORK/new" "$WORK/out.$fmt"
done
if command -v bspatch >/dev/null; then
  check "bspatch applies our bsdiff40" bspatch "$WORK/old" "$WORK/out.bsp" "$WORK/p.bsdiff40"
  check "bspatch output matches" cmp "$WORK/new" "$WORK/out.bsp"
fi
if command -v bsdiff >/dev/null; then
  bsdiff "$WORK/old" "$WORK/new" "$WORK/p.theirs" 2>/dev/null
  check "we apply bsdiff's patch" "$D" patch "$WORK/old" "$WORK/p.theirs" "$WORK/out.theirs"
  check "bsdiff patch output matches" cmp "$WORK/new" "$WORK/out.theirs"
fi
size=$(stat -c %s "$WORK/p.fota")
if [ "$size" -lt 23000 ]; then pass "fota patch is small ($size bytes)"; else fail "fota patch is small" "$size bytes"; fi

# thread count does not change the patch
"$D" diff --threads 1 "$WORK/old" "$WORK/new" "$WORK/p1" && "$D" diff --threads 3 "$WORK/old" "$WORK/new" "$WORK/p3"
check "patch independent of --threads" cmp "$WORK/p1" "$WORK/p3"

# empty files both ways
check "diff empty -> data" "$D" diff "$WORK/empty" "$WORK/new" "$WORK/pe1"
check "patch empty -> data" sh -c "$D patch '$WORK/empty' '$WORK/pe1' '$WORK/oe1' && cmp '$WORK/new' '$WORK/oe1'"
check "diff data -> empty" "$D" diff "$WORK/old" "$WORK/empty" "$WORK/pe2"
check "patch data -> empty" sh -c "$D patch '$WORK/old' '$WORK/pe2' '$WORK/oe2' && cmp '$WORK/empty' '$WORK/oe2'"

# --json summary
"$D" diff --json "$WORK/old" "$WORK/new" "$WORK/pj" >"$WORK/json"
if grep -q '"patch_size":' "$WORK/json" && grep -q '"format":"fota"' "$WORK/json"; then pass "json summary"; else fail "json summary"; fi

# errors: I/O 3, malformed 4, limit 5; no output file left behind
expect_rc "missing old is I/O" 3 "$D" patch "$WORK/nonexistent" "$WORK/p.fota" "$WORK/x"
head -c 100 "$WORK/p.fota" >"$WORK/trunc"
expect_rc "truncated patch is malformed" 4 "$D" patch "$WORK/old" "$WORK/trunc" "$WORK/x"
if [ ! -e "$WORK/x" ] && [ ! -e "$WORK/x.tmp" ]; then pass "failed patch leaves no file"; else fail "failed patch leaves no file"; fi
printf 'garbage garbage garbage garbage' >"$WORK/garbage"
expect_rc "garbage patch is malformed" 4 "$D" patch "$WORK/old" "$WORK/garbage" "$WORK/x"
expect_rc "wrong source is malformed" 4 "$D" patch "$WORK/new" "$WORK/p.fota" "$WORK/x"
expect_rc "over memory limit is limit" 5 "$D" patch --mem-limit 1M "$WORK/old" "$WORK/p.fota" "$WORK/x"
check "small window patch" "$D" diff --window 64K "$WORK/old" "$WORK/new" "$WORK/psmall"
check "small window applies in 2M" sh -c "$D patch --mem-limit 2M '$WORK/old' '$WORK/psmall' '$WORK/os' && cmp '$WORK/new' '$WORK/os'"

# real firmware pairs, when the shared benchmark inputs are present
bench=""
for d in "$FOTA_TOP/../shared/bench/pairs"; do
  [ -d "$d" ] && { bench=$d; break; }
done
if [ -z "$bench" ] || ! command -v zstd >/dev/null; then
  echo "note: benchmark pairs not present; real-pair round trips skipped"
  exit 0
fi
for old in "$bench"/*-old.*.zst; do
  name=$(basename "$old" | sed 's/-old\..*//')
  new=$(ls "$bench/$name"-new.*.zst 2>/dev/null | head -1)
  [ -n "$new" ] || continue
  zstd -q -d --long=27 "$old" -o "$WORK/$name.old" && zstd -q -d --long=27 "$new" -o "$WORK/$name.new"
  check "pair $name: diff" "$D" diff "$WORK/$name.old" "$WORK/$name.new" "$WORK/$name.patch"
  # Peak RSS means something only without sanitizers (make asan sets ASAN_OPTIONS).
  if command -v /usr/bin/time >/dev/null && [ -z "${ASAN_OPTIONS:-}" ]; then
    /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$D" patch "$WORK/$name.old" "$WORK/$name.patch" "$WORK/$name.out" 2>/dev/null
    rss=$(tail -1 "$WORK/$name.rss")
    if [ "$rss" -le 16384 ]; then pass "pair $name: apply peak RSS ${rss} KiB <= 16 MiB"; else fail "pair $name: apply RSS" "${rss} KiB"; fi
  else
    "$D" patch "$WORK/$name.old" "$WORK/$name.patch" "$WORK/$name.out"
  fi
  check "pair $name: round trip ($(stat -c %s "$WORK/$name.patch") bytes)" cmp "$WORK/$name.new" "$WORK/$name.out"
  rm -f "$WORK/$name".*
done
