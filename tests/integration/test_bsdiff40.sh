#!/usr/bin/env bash
# BSDIFF40 interoperability between fota-delta and Debian's bsdiff/bspatch, on generated
# files of a few hundred KB:
#   fota-delta diff --format bsdiff40 OLD NEW P ; bspatch OLD OUT P      -> OUT == NEW
#   bsdiff OLD NEW P2 ; fota-delta patch OLD P2 OUT                      -> OUT == NEW
# plus a truncated patch refused and --mem-limit honoured (1M refused, 8M fits bzip2 small mode).
# A missing fota-delta binary is a failure, not a skip.
. "$(dirname "$0")/lib.sh"

if [ ! -x "$FOTA_BIN/fota-delta" ]; then
  fail "bsdiff40: fota-delta binary" "not built in $FOTA_BIN"
  exit 0
fi
for t in bsdiff bspatch; do
  command -v "$t" >/dev/null || { fail "bsdiff40: $t" "Debian bsdiff package not installed"; exit 0; }
done

# Deterministic pseudo-random bytes: AES-128-CTR keystream of zeros.
gen() { openssl enc -aes-128-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null | head -c "$2"; }

# OLD: 400 KB of random blocks with a repeated text record every 4 KB (some structure).
gen 0123456789abcdef0123456789abcdef 409600 >"$WORK/rnd"
{
  for i in $(seq 0 99); do
    head -c $((i * 4096)) "$WORK/rnd" | tail -c 4000
    printf 'firmware record %04d: build 2024.11, flags 0x%04x, 1234567890abcdef\n' "$i" "$((i * 7))" | head -c 96
  done
} >"$WORK/old"
# NEW: head, 5000 inserted bytes, a block moved from the tail, middle with byte edits, tail minus a block.
gen fedcba9876543210fedcba9876543210 5000 >"$WORK/ins"
{
  head -c 50000 "$WORK/old"
  cat "$WORK/ins"
  tail -c 60000 "$WORK/old" | head -c 20000
  tail -c +50001 "$WORK/old" | head -c 200000 | sed 's/flags 0x00/flags 0x7f/'
  tail -c +280001 "$WORK/old"
} >"$WORK/new"
olen=$(stat -c %s "$WORK/old"); nlen=$(stat -c %s "$WORK/new")
[ "$olen" -gt 300000 ] && [ "$nlen" -gt 300000 ] && [ "$(cmp -s "$WORK/old" "$WORK/new"; echo $?)" = 1 ] \
  && pass "bsdiff40: generated pair ($olen -> $nlen bytes)" || fail "bsdiff40: generated pair"

# fota-delta writes BSDIFF40, Debian bspatch applies it.
check "bsdiff40: fota-delta diff --format bsdiff40" fota-delta diff --format bsdiff40 "$WORK/old" "$WORK/new" "$WORK/p1"
if [ -s "$WORK/p1" ]; then
  [ "$(head -c 8 "$WORK/p1")" = BSDIFF40 ] && pass "bsdiff40: patch has BSDIFF40 magic" || fail "bsdiff40: patch has BSDIFF40 magic"
  plen=$(stat -c %s "$WORK/p1")
  [ "$plen" -lt $((nlen / 4)) ] && pass "bsdiff40: patch is a delta ($plen bytes)" || fail "bsdiff40: patch is a delta" "$plen bytes for $nlen"
fi
check "bsdiff40: bspatch applies fota-delta's patch" bspatch "$WORK/old" "$WORK/out1" "$WORK/p1"
check "bsdiff40: bspatch output equals NEW" cmp "$WORK/out1" "$WORK/new"

# Debian bsdiff writes the patch, fota-delta applies it.
check "bsdiff40: Debian bsdiff" bsdiff "$WORK/old" "$WORK/new" "$WORK/p2"
check "bsdiff40: fota-delta patch applies Debian's patch" fota-delta patch "$WORK/old" "$WORK/p2" "$WORK/out2"
check "bsdiff40: fota-delta output equals NEW" cmp "$WORK/out2" "$WORK/new"

# A damaged BSDIFF40 patch is refused with a non-zero exit and leaves no output file.
head -c $(($(stat -c %s "$WORK/p2") - 7)) "$WORK/p2" >"$WORK/p2.cut"
"$FOTA_BIN/fota-delta" patch "$WORK/old" "$WORK/p2.cut" "$WORK/out3" >"$WORK/.cut" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && [ ! -e "$WORK/out3" ] && grep -q bsdiff40 "$WORK/.cut"; then
  pass "bsdiff40: truncated patch refused (exit $rc, no output)"
else
  fail "bsdiff40: truncated patch refused" "exit $rc, output $( [ -e "$WORK/out3" ] && echo present || echo absent ): $(head -2 "$WORK/.cut" | tr '\n' ' ')"
fi

# Three bzip2 decoders do not fit in 1 MiB: refused as a limit (exit 5) before writing.
expect_rc "bsdiff40: --mem-limit 1M refused (exit 5)" 5 fota-delta patch --mem-limit 1M "$WORK/old" "$WORK/p2" "$WORK/out4"
[ ! -e "$WORK/out4" ] && pass "bsdiff40: no output after the limit refusal" || fail "bsdiff40: no output after the limit refusal"
# In 8 MiB bzip2's small mode fits.
check "bsdiff40: --mem-limit 8M applies" fota-delta patch --mem-limit 8M "$WORK/old" "$WORK/p2" "$WORK/out5"
check "bsdiff40: 8M output equals NEW" cmp "$WORK/out5" "$WORK/new"
