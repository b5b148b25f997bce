#!/usr/bin/env bash
# Integration: fota-pack and fota-verify on real files, checked against stock GNU tar,
# bsdtar, openssl, sha256sum and zstd; tampering, truncation, member games, trust
# failures, reproducibility, external signing and bad options.
. "$(dirname "$0")/lib.sh"

test_pki

# A firmware-like image: code-ish random blocks, text, zero padding; not a chunk multiple.
gen_image() { # OUT SIZE_KIB SEED
  local out=$1 kib=$2 seed=$3
  : >"$out"
  local i=0
  while [ $((i * 64)) -lt "$kib" ]; do
    case $((i % 4)) in
      0) openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' $((seed + i)))" -iv 0 </dev/zero 2>/dev/null | head -c 65536 >>"$out" ;;
      1) yes "fota firmware build $seed string table entry $i" | head -c 65536 >>"$out" ;;
      2) head -c 65536 /dev/zero >>"$out" ;;
      3) openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' $((seed * 7 + i)))" -iv 0 </dev/zero 2>/dev/null | head -c 32768 >>"$out"
         head -c 32768 /dev/zero >>"$out" ;;
    esac
    i=$((i + 1))
  done
  truncate -s $((kib * 1024 + 777)) "$out"
}

IMG=$WORK/new.img
gen_image "$IMG" 1100 11
signargs() { echo "--key $PKI/signer-$1.key --cert $PKI/signer-$1.pem --chain $PKI/chain.pem"; }

PKG=$WORK/pkg.fota
check "pack: ECDSA P-256 signer via intermediate" \
  fota-pack --to "$IMG" $(signargs ec) --chunk-size 256K --name demo-fw --version 2.0 \
    --device-model HX-100 --device-model HX-200 --security-version 3 --quiet -o "$PKG"
[ -f "$PKG" ] || { fail "package written"; exit 1; }
[ ! -e "$PKG.tmp" ] && pass "pack leaves no staging file" || fail "pack leaves no staging file"

# ---- stock tools ----
names=$(tar -tf "$PKG" | head -2 | tr '\n' ' ')
[ "$names" = "manifest.json manifest.sig " ] && pass "GNU tar lists manifest.json then manifest.sig" \
  || fail "GNU tar lists manifest.json then manifest.sig" "$names"
names=$(bsdtar -tf "$PKG" | head -2 | tr '\n' ' ')
[ "$names" = "manifest.json manifest.sig " ] && pass "bsdtar lists manifest.json then manifest.sig" \
  || fail "bsdtar lists manifest.json then manifest.sig" "$names"
n_members=$(tar -tf "$PKG" | wc -l)
[ "$n_members" -eq 7 ] && pass "5 payload members for 1100 KiB in 256 KiB chunks" || fail "member count" "$n_members"

X=$WORK/x; mkdir -p "$X"
tar -xf "$PKG" -C "$X"
check "openssl cms -verify accepts root -> intermediate -> signer" \
  openssl cms -verify -binary -inform DER -in "$X/manifest.sig" -content "$X/manifest.json" \
    -CAfile "$PKI/root.pem" -purpose any -out /dev/null
expect_rc "openssl cms -verify refuses an unrelated root" 4 \
  openssl cms -verify -binary -inform DER -in "$X/manifest.sig" -content "$X/manifest.json" \
    -CAfile "$PKI/other-root.pem" -purpose any -out /dev/null

# Payload hashes, in manifest order, checked with sha256sum.
grep -o '"payload_sha256":"[0-9a-f]*"' "$X/manifest.json" | cut -d'"' -f4 >"$WORK/hashes"
tar -tf "$PKG" | tail -n +3 >"$WORK/payloads"
paste -d' ' "$WORK/hashes" "$WORK/payloads" | sed 's/ /  /' >"$WORK/SHA256SUMS"
[ "$(wc -l <"$WORK/SHA256SUMS")" -eq 5 ] || fail "one hash per payload"
check "sha256sum -c: every payload matches its manifest hash" sh -c "cd '$X' && sha256sum -c --quiet '$WORK/SHA256SUMS'"
(cd "$X" && while read -r p; do zstd -dc "$p"; done <"$WORK/payloads") >"$WORK/rebuilt.img"
check "zstd -d of the payloads in order rebuilds the target" cmp "$WORK/rebuilt.img" "$IMG"

# ---- fota-verify ----
check "fota-verify: valid package" fota-verify --trust "$PKI/root.pem" "$PKG"
fota-verify --trust "$PKI/root.pem" --json "$PKG" >"$WORK/v.json"
grep -q '"valid": true' "$WORK/v.json" && grep -q '"target_rebuilt": true' "$WORK/v.json" \
  && grep -q '"key_type": "ECDSA P-256"' "$WORK/v.json" \
  && pass "fota-verify --json reports valid, signer key and rebuilt target" || fail "fota-verify --json" "$(head -c 300 "$WORK/v.json")"
fota-verify --trust "$PKI/root.pem" "$PKG" >"$WORK/v.txt"
grep -q 'chain:' "$WORK/v.txt" && grep -q 'result:     VALID' "$WORK/v.txt" && grep -q 'HX-100, HX-200' "$WORK/v.txt" \
  && pass "fota-verify report shows chain, devices and result" || fail "fota-verify text report"
check "fota-verify --output writes the exact target" fota-verify --quiet --trust "$PKI/root.pem" --output "$WORK/out.img" "$PKG"
cmp -s "$WORK/out.img" "$IMG" && pass "--output equals the target image" || fail "--output equals the target image"
check "fota-verify trusts any of several roots" fota-verify --quiet --trust "$PKI/other-root.pem" --trust "$PKI/root.pem" "$PKG"
expect_rc "fota-verify: unrelated root -> exit 5" 5 fota-verify --trust "$PKI/other-root.pem" "$PKG"

# ---- tampering: every byte of manifest.json and manifest.sig ----
# A small package keeps the sweep short: 2 chunks.
head -c 300000 "$IMG" >"$WORK/small.img"
SP=$WORK/small.fota
fota-pack --to "$WORK/small.img" $(signargs ec) --chunk-size 256K --quiet -o "$SP" || fail "pack small"
mlen=$(tar -xOf "$SP" manifest.json | wc -c)
slen=$(tar -xOf "$SP" manifest.sig | wc -c)
sig_data=$((512 + (mlen + 511) / 512 * 512 + 512))
flip() { # FILE OFFSET: replace one byte by its complement
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
sweep() { # NAME START LEN WANT_RC
  local name=$1 start=$2 len=$3 want=$4 bad=0 badlist="" i rc
  for ((i = start; i < start + len; i++)); do
    cp "$SP" "$WORK/t.fota"; rm -f "$WORK/t.out"
    flip "$WORK/t.fota" "$i"
    fota-verify --quiet --trust "$PKI/root.pem" --output "$WORK/t.out" "$WORK/t.fota"
    rc=$?
    if [ "$rc" -ne "$want" ] || [ -e "$WORK/t.out" ] || [ -e "$WORK/t.out.tmp" ]; then
      bad=$((bad + 1)); badlist="$badlist $i:$rc"
    fi
  done
  [ "$bad" -eq 0 ] && pass "$name: all $len single-byte changes rejected (exit $want), no output" \
    || fail "$name" "$bad of $len not rejected properly:${badlist:0:200}"
}
sweep "tamper manifest.json" 512 "$mlen" 5
sweep "tamper manifest.sig" "$sig_data" "$slen" 5

# Sampled payload bytes: first, middle and last byte of every payload -> integrity (6).
bad=0; total=0
off=$((sig_data + (slen + 511) / 512 * 512))
for sz in $(grep -o '"payload_size":[0-9]*' "$(tar -xOf "$SP" manifest.json >"$WORK/sm.json"; echo "$WORK/sm.json")" | cut -d: -f2); do
  data=$((off + 512))
  for i in $data $((data + sz / 2)) $((data + sz - 1)); do
    total=$((total + 1))
    cp "$SP" "$WORK/t.fota"; rm -f "$WORK/t.out"; flip "$WORK/t.fota" "$i"
    fota-verify --quiet --trust "$PKI/root.pem" --output "$WORK/t.out" "$WORK/t.fota"; rc=$?
    { [ "$rc" -eq 6 ] && [ ! -e "$WORK/t.out" ]; } || bad=$((bad + 1))
  done
  off=$((data + (sz + 511) / 512 * 512))
done
[ "$bad" -eq 0 ] && [ "$total" -ge 6 ] && pass "tamper payloads: $total sampled bytes rejected (exit 6), no output" \
  || fail "tamper payloads" "$bad of $total"

# ---- truncation and member games -> format error (4) ----
size=$(stat -c %s "$SP")
bad=0
for len in 0 100 511 512 $((512 + mlen / 2)) $((sig_data + 10)) $((size / 2)) $((size - 1024)) $((size - 513)) $((size - 1)); do
  head -c "$len" "$SP" >"$WORK/t.fota"; rm -f "$WORK/t.out"
  fota-verify --quiet --trust "$PKI/root.pem" --output "$WORK/t.out" "$WORK/t.fota"; rc=$?
  { [ "$rc" -eq 4 ] && [ ! -e "$WORK/t.out" ]; } || { bad=$((bad + 1)); echo "truncate $len -> $rc"; }
done
[ "$bad" -eq 0 ] && pass "truncated packages (10 lengths) rejected with exit 4" || fail "truncated packages" "$bad bad"
cp "$SP" "$WORK/t.fota"; head -c 512 /dev/zero >>"$WORK/t.fota"
expect_rc "trailing data after the end marker -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"

M=$WORK/m; rm -rf "$M"; mkdir -p "$M"; tar -xf "$SP" -C "$M"
mapfile -t members < <(tar -tf "$SP")
TARF=(--format=ustar --owner=root --group=root --mtime=@0 --mode=0644 -b 1)
retar() { # OUT MEMBER...  (ustar, 512-byte records: the layout fota-pack writes)
  local out=$1; shift
  (cd "$M" && tar "${TARF[@]}" -cf "$out" "$@")
}
retar "$WORK/same.fota" "${members[@]}"
check "control: GNU tar rebuild of the same members verifies" fota-verify --quiet --trust "$PKI/root.pem" "$WORK/same.fota"
cp "$WORK/small.img" "$M/extra.bin"
retar "$WORK/t.fota" "${members[@]}" extra.bin
expect_rc "extra member -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"
retar "$WORK/t.fota" "${members[@]:0:${#members[@]}-1}"
expect_rc "missing last payload -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"
retar "$WORK/t.fota" manifest.sig manifest.json "${members[@]:2}"
expect_rc "manifest.sig before manifest.json -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"
retar "$WORK/t.fota" manifest.json manifest.sig "${members[3]}" "${members[2]}"
expect_rc "payloads swapped -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"
retar "$WORK/t.fota" manifest.json "${members[@]:2}"
expect_rc "no manifest.sig (unsigned) -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"
mkdir -p "$M/sub"; cp "$M/${members[2]}" "$M/sub/p"
(cd "$M/sub" && tar "${TARF[@]}" -cf "$WORK/t.fota" -C "$M" manifest.json manifest.sig \
   --transform "s|^sub/p$|../${members[2]}|" sub/p "${members[3]}")
tar -tf "$WORK/t.fota" 2>/dev/null | grep -q '^\.\./' && \
  expect_rc "member named ../images/... -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota" \
  || fail "could not build a ../ member"
(cd "$M" && tar "${TARF[@]}" -P -cf "$WORK/t.fota" manifest.json manifest.sig \
   --transform "s|^sub/p$|/${members[2]}|" sub/p "${members[3]}")
tar -tPf "$WORK/t.fota" 2>/dev/null | grep -q '^/images' && \
  expect_rc "member with an absolute path -> 4" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota" \
  || fail "could not build an absolute member"
# Oversized manifest: FOTA_MANIFEST_MAX + 1 bytes, refused from the header before reading it.
head -c $((8 * 1024 * 1024 + 1)) /dev/zero | tr '\0' ' ' >"$M/manifest.json"
retar "$WORK/t.fota" "${members[@]}"
fota-verify --trust "$PKI/root.pem" "$WORK/t.fota" >/dev/null 2>"$WORK/err"; rc=$?
[ "$rc" -eq 4 ] && grep -q 'manifest.json' "$WORK/err" && pass "oversized manifest (8 MiB + 1) -> 4 with a clear message" \
  || fail "oversized manifest" "rc=$rc $(cat "$WORK/err")"
# Exactly at the limit is not refused for its size (it fails the signature instead).
head -c $((8 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$M/manifest.json"
retar "$WORK/t.fota" "${members[@]}"
expect_rc "manifest of exactly 8 MiB passes the size cap (then fails the signature: 5)" 5 \
  fota-verify --quiet --trust "$PKI/root.pem" "$WORK/t.fota"

# ---- signer certificates ----
for case in "other-signer:untrusted signer" "expired:expired signer" "wrongusage:wrong key usage"; do
  k=${case%%:*}; what=${case#*:}
  fota-pack --to "$WORK/small.img" --key "$PKI/$k.key" --cert "$PKI/$k.pem" --chain "$PKI/chain.pem" --quiet -o "$WORK/c.fota" \
    || fail "pack with $k"
  expect_rc "$what -> 5" 5 fota-verify --quiet --trust "$PKI/root.pem" --output "$WORK/c.out" "$WORK/c.fota"
  [ ! -e "$WORK/c.out" ] || fail "$what left an output"
done
fota-pack --to "$WORK/small.img" --key "$PKI/expired.key" --cert "$PKI/expired.pem" --chain "$PKI/chain.pem" --quiet -o "$WORK/exp.fota"
check "expired signer verifies when judged at a time inside its validity" \
  fota-verify --quiet --trust "$PKI/root.pem" --at 2020-06-01T00:00:00Z "$WORK/exp.fota"
fota-pack --to "$WORK/small.img" --key "$PKI/revoked.key" --cert "$PKI/revoked.pem" --chain "$PKI/chain.pem" --quiet -o "$WORK/rev.fota"
check "revoked signer without --crl verifies" fota-verify --quiet --trust "$PKI/root.pem" "$WORK/rev.fota"
expect_rc "revoked signer with --crl -> 5" 5 fota-verify --quiet --trust "$PKI/root.pem" --crl "$PKI/crl.pem" "$WORK/rev.fota"

# ---- key types ----
# OpenSSL's cms command verifies Ed25519 (RFC 8419) only from 3.2 on; Debian 12 ships 3.0.
ossl_ed25519=0
case "$(openssl version | awk '{print $2}')" in 3.[2-9]* | [4-9].*) ossl_ed25519=1 ;; esac
for k in ec ed25519 rsa rsapss; do
  if [ "$k" = ed25519 ] && [ "$ossl_ed25519" = 0 ]; then
    echo "SKIP: openssl $(openssl version | awk '{print $2}') cms cannot verify Ed25519; fota-verify only"
    fota-pack --to "$WORK/small.img" $(signargs $k) --quiet -o "$WORK/k-$k.fota" &&
    fota-verify --quiet --trust "$PKI/root.pem" "$WORK/k-$k.fota" \
      && pass "key type $k: fota-verify accepts" || fail "key type $k"
    continue
  fi
  fota-pack --to "$WORK/small.img" $(signargs $k) --quiet -o "$WORK/k-$k.fota" &&
  fota-verify --quiet --trust "$PKI/root.pem" "$WORK/k-$k.fota" &&
  (mkdir -p "$WORK/k-$k" && cd "$WORK/k-$k" && tar -xf "$WORK/k-$k.fota" manifest.json manifest.sig &&
   openssl cms -verify -binary -inform DER -in manifest.sig -content manifest.json -CAfile "$PKI/root.pem" -purpose any -out /dev/null 2>/dev/null) \
    && pass "key type $k: fota-verify and openssl accept" || fail "key type $k"
done
fota-pack --to "$WORK/small.img" $(signargs rsa) --pss --quiet -o "$WORK/k-pss.fota" &&
  fota-verify --json --trust "$PKI/root.pem" "$WORK/k-pss.fota" | grep -q '"valid": true' \
  && pass "RSA key signing with --pss verifies" || fail "RSA --pss"

# ---- reproducibility ----
for k in ed25519 rsa; do
  fota-pack --to "$IMG" $(signargs $k) --chunk-size 256K --threads 1 --quiet -o "$WORK/r1.fota"
  fota-pack --to "$IMG" $(signargs $k) --chunk-size 256K --threads 2 --quiet -o "$WORK/r2.fota"
  cmp -s "$WORK/r1.fota" "$WORK/r2.fota" && pass "reproducible: $k package byte-identical across runs and thread counts" \
    || fail "reproducible $k"
done
fota-pack --to "$IMG" $(signargs ec) --chunk-size 256K --quiet -o "$WORK/r1.fota"
fota-pack --to "$IMG" $(signargs ec) --chunk-size 256K --quiet -o "$WORK/r2.fota"
cmp -s <(tar -xOf "$WORK/r1.fota" manifest.json) <(tar -xOf "$WORK/r2.fota" manifest.json) &&
  [ "$(tar -tf "$WORK/r1.fota" | tail -n +3 | while read -r p; do tar -xOf "$WORK/r1.fota" "$p"; done | sha256sum)" = \
    "$(tar -tf "$WORK/r2.fota" | tail -n +3 | while read -r p; do tar -xOf "$WORK/r2.fota" "$p"; done | sha256sum)" ] \
  && pass "reproducible: ECDSA manifests and payloads identical" || fail "reproducible ECDSA"
SOURCE_DATE_EPOCH=1700000000 fota-pack --to "$WORK/small.img" $(signargs ed25519) --quiet -o "$WORK/sde1.fota"
SOURCE_DATE_EPOCH=1700000000 fota-pack --to "$WORK/small.img" $(signargs ed25519) --quiet -o "$WORK/sde2.fota"
cmp -s "$WORK/sde1.fota" "$WORK/sde2.fota" && fota-verify --json --trust "$PKI/root.pem" "$WORK/sde1.fota" | grep -q '"signing_time": "2023-11-14T22:13:20Z"' \
  && pass "SOURCE_DATE_EPOCH becomes the signing time, still reproducible" || fail "SOURCE_DATE_EPOCH"

# ---- external signing (HSM / corporate PKI) with stock openssl ----
check "pack --unsigned" fota-pack --to "$IMG" --unsigned --chunk-size 256K --quiet -o "$WORK/u.fota"
tar -xOf "$WORK/u.fota" manifest.json >"$WORK/u.json"
openssl cms -sign -binary -noattr -md sha256 -in "$WORK/u.json" -signer "$PKI/signer-ec.pem" -inkey "$PKI/signer-ec.key" \
  -certfile "$PKI/chain.pem" -outform DER -out "$WORK/u.sig" 2>/dev/null || fail "openssl cms -sign"
check "attach an openssl-made signature" fota-pack --attach-signature "$WORK/u.sig" --trust "$PKI/root.pem" --quiet -o "$WORK/s.fota" "$WORK/u.fota"
check "externally signed package verifies" fota-verify --quiet --trust "$PKI/root.pem" "$WORK/s.fota"
expect_rc "unsigned package is refused by fota-verify (4)" 4 fota-verify --quiet --trust "$PKI/root.pem" "$WORK/u.fota"
openssl cms -sign -binary -noattr -md sha256 -in "$WORK/small.img" -signer "$PKI/signer-ec.pem" -inkey "$PKI/signer-ec.key" \
  -outform DER -out "$WORK/wrong.sig" 2>/dev/null
expect_rc "attaching a signature over other content is refused (4)" 4 \
  fota-pack --attach-signature "$WORK/wrong.sig" --trust "$PKI/root.pem" --quiet -o "$WORK/w.fota" "$WORK/u.fota"
[ ! -e "$WORK/w.fota" ] && pass "refused attach writes nothing" || fail "refused attach writes nothing"

# ---- expiry ----
fota-pack --to "$WORK/small.img" $(signargs ec) --expires 2030-01-01T00:00:00Z --quiet -o "$WORK/e.fota"
check "not yet expired when judged at 2029" fota-verify --quiet --trust "$PKI/root.pem" --at 2029-12-31T23:59:59Z "$WORK/e.fota"
expect_rc "expired when judged at 2030-01-01 -> 8" 8 fota-verify --quiet --trust "$PKI/root.pem" --at 2030-01-01T00:00:00Z "$WORK/e.fota"

# ---- bad options: clear errors, nothing written ----
expect_rc "pack: missing --to -> 2" 2 fota-pack $(signargs ec) -o "$WORK/b.fota"
expect_rc "pack: unreadable image -> 3" 3 fota-pack --to "$WORK/nope.img" $(signargs ec) -o "$WORK/b.fota"
expect_rc "pack: chunk size 4095 -> 2" 2 fota-pack --to "$IMG" $(signargs ec) --chunk-size 4095 -o "$WORK/b.fota"
expect_rc "pack: chunk size 64M+1 -> 2" 2 fota-pack --to "$IMG" $(signargs ec) --chunk-size 67108865 -o "$WORK/b.fota"
check "pack: chunk size 4K (the minimum) works" fota-pack --to "$WORK/small.img" $(signargs ec) --chunk-size 4K --quiet -o "$WORK/min.fota"
check "verify the 4K-chunk package" fota-verify --quiet --trust "$PKI/root.pem" "$WORK/min.fota"
expect_rc "pack: key does not match certificate -> 4" 4 fota-pack --to "$IMG" --key "$PKI/signer-ed25519.key" --cert "$PKI/signer-ec.pem" -o "$WORK/b.fota"
expect_rc "pack: RSA-1024 key refused -> 4" 4 fota-pack --to "$IMG" --key "$PKI/signer-rsa1024.key" --cert "$PKI/signer-rsa1024.pem" -o "$WORK/b.fota"
expect_rc "pack: bad --expires -> 2" 2 fota-pack --to "$IMG" $(signargs ec) --expires tomorrow -o "$WORK/b.fota"
expect_rc "pack: bad --image-name -> 2" 2 fota-pack --to "$IMG" $(signargs ec) --image-name ../x -o "$WORK/b.fota"
expect_rc "pack: unwritable output -> 3" 3 fota-pack --to "$IMG" $(signargs ec) --quiet -o /nonexistent/dir/p.fota
[ ! -e "$WORK/b.fota" ] && [ ! -e "$WORK/b.fota.tmp" ] && pass "failed packs leave no file" || fail "failed packs leave no file"
expect_rc "verify: missing --trust -> 2" 2 fota-verify "$PKG"
expect_rc "verify: missing package -> 3" 3 fota-verify --trust "$PKI/root.pem" "$WORK/nope.fota"
expect_rc "verify: --source for a full package -> 2" 2 fota-verify --trust "$PKI/root.pem" --source "$IMG" "$PKG"
expect_rc "verify: not a tar file -> 4" 4 fota-verify --trust "$PKI/root.pem" "$IMG"
check "pack --help" fota-pack --help
check "verify --help" fota-verify --help
fota-pack --version | grep -q '^fota-pack ' && pass "fota-pack --version alone prints the program version" || fail "fota-pack --version"
