#!/usr/bin/env bash
# Integration: delta packages (fota-pack --from / --image), A/B and in-place, on
# generated image pairs where data moves forward, backward and swaps places; every
# package is proven by fota-verify --source --output. Also: several images in one
# package, reproducibility across thread counts, --json, the progress bar and bad options.
. "$(dirname "$0")/lib.sh"

test_pki
SIGN=(--key "$PKI/signer-rsa.key" --cert "$PKI/signer-rsa.pem" --chain "$PKI/chain.pem")
B=65536

block() { # SEED: one 64 KiB pseudo-random block on stdout
  openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 0 </dev/zero 2>/dev/null | head -c $B
}
# old: 24 blocks A0..A23. new: A0-A3 | A10-A13 (moved backward) | A8 A9 | A4-A7 (moved forward)
# | A15 A14 (swapped) | new block | A16-A19 with scattered edits | A21 (A20 deleted) | zeros | A22 A23
OLD=$WORK/old.img NEW=$WORK/new.img
: >"$OLD"; for i in $(seq 0 23); do block $((100 + i)) >>"$OLD"; done
: >"$NEW"
for i in 0 1 2 3 10 11 12 13 8 9 4 5 6 7 15 14; do block $((100 + i)) >>"$NEW"; done
block 999 >>"$NEW"
for i in 16 17 18 19; do block $((100 + i)) >>"$NEW"; done
for off in 1000 70000 150000 200001; do printf 'PATCHED' | dd of="$NEW" bs=1 seek=$((21 * B + off)) conv=notrunc status=none; done
block 121 >>"$NEW"; head -c $((2 * B)) /dev/zero >>"$NEW"; block 122 >>"$NEW"; block 123 >>"$NEW"
head -c 12345 /dev/urandom >>"$NEW" # a tail that is not a chunk multiple

roundtrip() { # NAME MODE EXTRA-ARGS...
  local name=$1 mode=$2; shift 2
  rm -f "$WORK/p.fota" "$WORK/out.img"
  if ! fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode "$mode" --chunk-size 64K --quiet --json "$@" \
       -o "$WORK/p.fota" >"$WORK/p.json" 2>"$WORK/p.err"; then
    fail "$name: pack" "$(cat "$WORK/p.err")"; return
  fi
  if fota-verify --quiet --trust "$PKI/root.pem" --source "$OLD" --output "$WORK/out.img" "$WORK/p.fota" &&
     cmp -s "$WORK/out.img" "$NEW"; then
    pass "$name: fota-verify --source rebuilds the exact target ($(stat -c %s "$WORK/p.fota") bytes)"
  else
    fail "$name: round trip"
  fi
}
roundtrip "A/B delta" ab
ab_size=$(stat -c %s "$WORK/p.fota")
grep -q '"delta_chunks": [1-9]' "$WORK/p.json" && pass "A/B package uses delta chunks" || fail "A/B delta chunks"
[ "$ab_size" -lt $((B * 4)) ] && pass "A/B package is small: $ab_size bytes for a $(stat -c %s "$NEW")-byte target" \
  || fail "A/B package size" "$ab_size"
roundtrip "in-place with stash" inplace
ip_size=$(stat -c %s "$WORK/p.fota")
grep -q '"stash_ranges": [1-9]' "$WORK/p.json" && pass "in-place package stashes (blocks 14/15 swap)" || fail "in-place stash" "$(grep stash_ranges "$WORK/p.json")"
grep -o '"scratch_size": [0-9]*' "$WORK/p.json" | grep -qv ': 0$' && pass "in-place package declares its scratch size" || fail "scratch size"
awk -v a="$ab_size" -v b="$ip_size" 'BEGIN { exit !(b <= 1.25 * a) }' && pass "in-place size $ip_size <= 1.25 x A/B $ab_size" \
  || fail "in-place size" "$ip_size vs $ab_size"
roundtrip "in-place without scratch (--scratch-max 0)" inplace --scratch-max 0
grep -q '"scratch_size": 65536' "$WORK/p.json" || grep -q '"scratch_size": 0' "$WORK/p.json" \
  && pass "no stash: scratch only for staging" || fail "scratch-max 0" "$(grep scratch_size "$WORK/p.json")"
grep -q '"stash_ranges": 0' "$WORK/p.json" && pass "--scratch-max 0 stashes nothing" || fail "--scratch-max 0 stash"
roundtrip "A/B delta, 4K chunks" ab --chunk-size 4K
roundtrip "in-place, 4K chunks" inplace --chunk-size 4K

# In-place order, proven independently of fota-verify: replay the manifest on the source
# with a tiny reference applier written against FORMAT.md 6.2 (bash + dd), checking that
# no chunk reads a byte an earlier chunk overwrote.
fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode inplace --chunk-size 64K --quiet -o "$WORK/ip.fota"
tar -xOf "$WORK/ip.fota" manifest.json >"$WORK/ip.json"
if jq -e '.mode == "inplace"' "$WORK/ip.json" >/dev/null; then
  # Each chunk: [target_offset, target_size, [[reads]], [[stash]]] in application order.
  jq -c '.images[0].chunks[] | [.target_offset, .target_size, .source_reads, (.stash // [])]' "$WORK/ip.json" >"$WORK/order"
  bad=0; written=""
  while read -r c; do
    toff=$(jq '.[0]' <<<"$c"); tlen=$(jq '.[1]' <<<"$c")
    for r in $(jq -c '.[2][] | select(length == 2)' <<<"$c"); do
      ro=$(jq '.[0]' <<<"$r"); rl=$(jq '.[1]' <<<"$r")
      for w in $written; do
        wo=${w%:*}; wl=${w#*:}
        if [ "$ro" -lt $((wo + wl)) ] && [ $((ro + rl)) -gt "$wo" ]; then bad=$((bad + 1)); fi
      done
    done
    for s in $(jq -c '.[3][]' <<<"$c"); do
      so=$(jq '.[0]' <<<"$s"); sl=$(jq '.[1]' <<<"$s")
      for w in $written; do
        wo=${w%:*}; wl=${w#*:}
        if [ "$so" -lt $((wo + wl)) ] && [ $((so + sl)) -gt "$wo" ]; then bad=$((bad + 1)); fi
      done
    done
    written="$written $toff:$tlen"
  done <"$WORK/order"
  n=$(wc -l <"$WORK/order")
  [ "$bad" -eq 0 ] && pass "in-place order: none of $n chunks reads or stashes a byte an earlier chunk overwrote" \
    || fail "in-place order" "$bad reads of overwritten bytes"
else
  fail "in-place manifest" "mode is not inplace"
fi

# Several images in one package: system (delta), boot (full, no source), modem (delta).
head -c 200000 /dev/urandom >"$WORK/boot.img"
cp "$OLD" "$WORK/modem-old.img"; cp "$OLD" "$WORK/modem-new.img"
printf 'MODEM FW 2' | dd of="$WORK/modem-new.img" bs=1 seek=5000 conv=notrunc status=none
check "pack three images" fota-pack --image "system:$OLD:$NEW" --image "boot::$WORK/boot.img" \
  --image "modem:$WORK/modem-old.img:$WORK/modem-new.img" "${SIGN[@]}" --chunk-size 128K --quiet -o "$WORK/multi.fota"
check "verify three images with named sources and outputs" fota-verify --quiet --trust "$PKI/root.pem" \
  --source "system=$OLD" --source "modem=$WORK/modem-old.img" \
  --output "system=$WORK/o-system" --output "boot=$WORK/o-boot" --output "modem=$WORK/o-modem" "$WORK/multi.fota"
cmp -s "$WORK/o-system" "$NEW" && cmp -s "$WORK/o-boot" "$WORK/boot.img" && cmp -s "$WORK/o-modem" "$WORK/modem-new.img" \
  && pass "every image of the multi-image package rebuilt exactly" || fail "multi-image outputs"
tar -tf "$WORK/multi.fota" | grep -q '^images/boot/000000.zst$' && tar -tf "$WORK/multi.fota" | grep -q '^images/modem/000000.fdp$' \
  && pass "payload members named per image and method" || fail "multi-image member names"
expect_rc "verify: wrong source for one image -> 7" 7 fota-verify --quiet --trust "$PKI/root.pem" \
  --source "system=$WORK/modem-new.img" --source "modem=$WORK/modem-old.img" "$WORK/multi.fota"
fota-verify --trust "$PKI/root.pem" "$WORK/multi.fota" | grep -q 'NOT rebuilt' \
  && pass "without --source, delta targets are reported as not rebuilt" || fail "no-source report"

# Reproducible across thread counts and runs (RSA PKCS#1 v1.5 signatures are deterministic).
for mode in ab inplace; do
  fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode "$mode" --chunk-size 64K --threads 1 --quiet -o "$WORK/t1.fota"
  fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode "$mode" --chunk-size 64K --threads 2 --quiet -o "$WORK/t2.fota"
  fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode "$mode" --chunk-size 64K --threads 7 --quiet -o "$WORK/t7.fota"
  cmp -s "$WORK/t1.fota" "$WORK/t2.fota" && cmp -s "$WORK/t1.fota" "$WORK/t7.fota" \
    && pass "$mode package byte-identical with 1, 2 and 7 threads" || fail "$mode reproducibility across threads"
done

# --json summary and the progress bar on a terminal.
fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --chunk-size 64K --json -o "$WORK/j.fota" 2>/dev/null >"$WORK/j.json"
jq -e '.package_bytes > 0 and .ratio < 1 and (.images[0].chunk_list | length) == .images[0].chunks
       and .images[0].ratio < 0.5 and .images[0].delta_chunks > 0' "$WORK/j.json" >/dev/null \
  && pass "--json: sizes, ratio, per-image and per-chunk figures" || fail "--json summary"
jq -e '.profile_seconds | (keys | sort) == ["diff", "encode", "full", "hash", "inplace_plan", "self_check", "sign_and_write", "slice"]
       and ([.[]] | all(. >= 0)) and .diff > 0 and .encode > 0' "$WORK/j.json" >/dev/null \
  && pass "--json: profile_seconds, where the time went" || fail "--json profile" "$(jq -c .profile_seconds "$WORK/j.json")"

# The source reads a chunk lists: one span per A/B chunk (chunk 2 of 256K needs A8 A9 and
# A4 A5, two separate source ranges, joined with the gap between them), up to 32 in place.
for mode in ab inplace; do
  fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode $mode --chunk-size 256K --quiet -o "$WORK/r-$mode.fota" &&
    fota-verify --quiet --trust "$PKI/root.pem" --source "$OLD" --output "$WORK/r.img" "$WORK/r-$mode.fota" &&
    cmp -s "$WORK/r.img" "$NEW" || fail "256K chunks, $mode: round trip"
done
reads() { tar -xOf "$WORK/r-$1.fota" manifest.json | jq -c '[.images[0].chunks[] | select(.target_offset == 524288) | .source_reads[]]'; }
[ "$(reads ab)" = "[[262144,393216]]" ] && [ "$(reads inplace | jq length)" -ge 2 ] \
  && pass "A/B chunks read one joined span, in-place chunks several ranges; both rebuild the target" \
  || fail "source reads per chunk" "ab $(reads ab), inplace $(reads inplace)"

# The lean bench signer (mkpki.sh): a signature of at most two tar blocks, checked by
# fota-verify and by stock OpenSSL against the same root.
fota-pack --from "$OLD" --to "$NEW" --key "$PKI/bench-signer.key" --cert "$PKI/bench-signer.pem" \
  --chain "$PKI/bench-chain.pem" --chunk-size 256K --quiet -o "$WORK/lean.fota"
tar -xf "$WORK/lean.fota" -C "$WORK" manifest.json manifest.sig
if [ "$(stat -c %s "$WORK/manifest.sig")" -le 1024 ] &&
   fota-verify --quiet --trust "$PKI/root.pem" --source "$OLD" "$WORK/lean.fota" &&
   openssl cms -verify -binary -inform DER -in "$WORK/manifest.sig" -content "$WORK/manifest.json" \
     -CAfile "$PKI/root.pem" -purpose any -out /dev/null 2>/dev/null; then
  pass "bench signer: $(stat -c %s "$WORK/manifest.sig")-byte signature, verified by fota-verify and openssl cms"
else
  fail "bench signer" "$(stat -c %s "$WORK/manifest.sig") bytes"
fi
script -qec "fota-pack --from '$OLD' --to '$NEW' ${SIGN[*]} --chunk-size 64K -o '$WORK/tty.fota'" /dev/null >"$WORK/tty.out" 2>&1
grep -q 'MB/s' "$WORK/tty.out" && grep -q '100.0%' "$WORK/tty.out" && grep -q 'ETA' "$WORK/tty.out" \
  && pass "progress bar (percent, MB/s, ETA) on a terminal" || fail "progress bar" "$(tr '\r' '\n' <"$WORK/tty.out" | tail -2)"
fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --chunk-size 64K -o "$WORK/q.fota" 2>"$WORK/q.err" </dev/null
! grep -q 'ETA' "$WORK/q.err" && pass "no progress bar when stderr is not a terminal" || fail "progress off a terminal"
fota-pack --from "$OLD" --to "$NEW" "${SIGN[@]}" --chunk-size 64K --quiet -o "$WORK/q.fota" 2>"$WORK/q.err"
[ ! -s "$WORK/q.err" ] && pass "--quiet prints nothing" || fail "--quiet"

# Bad options: a clear error, exit 2 (usage) or 3/5, and no output file.
expect_rc "--from without --to -> 2" 2 fota-pack --from "$OLD" "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--mode inplace without a source -> 2" 2 fota-pack --to "$NEW" --mode inplace "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--mode bogus -> 2" 2 fota-pack --from "$OLD" --to "$NEW" --mode bogus "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--image without NEW -> 2" 2 fota-pack --image "system:$OLD:" "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--image with a bad name -> 2" 2 fota-pack --image "Sys:$OLD:$NEW" "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--image twice with one name -> 2" 2 fota-pack --image "a::$NEW" --image "a::$NEW" "${SIGN[@]}" -o "$WORK/b.fota"
# the image limit (FOTA_IMAGES_MAX = 16): 16 distinct images pack, a 17th is refused
imgs=()
for i in $(seq 1 16); do imgs+=(--image "i$i::$NEW"); done
expect_rc "16 --image -> 0 (the limit itself)" 0 fota-pack "${imgs[@]}" "${SIGN[@]}" --quiet -o "$WORK/b16.fota"
imgs+=(--image "i17::$NEW")
expect_rc "17 --image -> 2 (at most 16 images)" 2 fota-pack "${imgs[@]}" "${SIGN[@]}" -o "$WORK/b17.fota"
grep -q "at most 16 images" "$WORK/.out" && pass "17 --image: the message names the limit" || fail "17 --image: the message names the limit" "$(cat "$WORK/.out")"
[ ! -e "$WORK/b17.fota" ] && pass "17 --image: no output written" || fail "17 --image: no output written" "b17.fota exists"
expect_rc "--image and --to together -> 2" 2 fota-pack --image "a::$NEW" --to "$NEW" "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "unreadable source -> 3" 3 fota-pack --from "$WORK/nope.img" --to "$NEW" "${SIGN[@]}" -o "$WORK/b.fota"
expect_rc "--window 3M (not a power of two) -> 2" 2 fota-pack --from "$OLD" --to "$NEW" --window 3M "${SIGN[@]}" -o "$WORK/b.fota"
truncate -s $(( (1 << 40) + 1 )) "$WORK/huge.img"
fota-pack --to "$WORK/huge.img" "${SIGN[@]}" -o "$WORK/b.fota" 2>"$WORK/h.err"; rc=$?
[ "$rc" -eq 5 ] && grep -q 'limit' "$WORK/h.err" && pass "target over 1 TiB -> 5 with a clear message" || fail "huge target" "rc=$rc $(cat "$WORK/h.err")"
rm -f "$WORK/huge.img"
truncate -s $((65537 * 4096)) "$WORK/many.img"
expect_rc "more than 65536 chunks -> 5" 5 fota-pack --to "$WORK/many.img" --chunk-size 4K "${SIGN[@]}" -o "$WORK/b.fota"
rm -f "$WORK/many.img"
ls "$WORK"/b.fota* >/dev/null 2>&1 && fail "failed packs leave no file" || pass "failed packs leave no file"
