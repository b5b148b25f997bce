#!/usr/bin/env bash
# make demo: the end-to-end job on local defaults.
#  1. makes a realistic firmware image pair: two ext4 system images holding real shared
#     libraries from this machine, the second one "updated";
#  2. creates a throw-away CA (root -> intermediate -> signer);
#  3. packs the new image into a signed, chunked package;
#  4. verifies it with fota-verify, then audits it with stock tar, openssl, sha256sum, zstd.
# Everything lands in demo-out/ (removed and recreated on each run).
set -euo pipefail
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BIN=$(cd "$BUILD" && pwd)
OUT=$top/demo-out
rm -rf "$OUT"; mkdir -p "$OUT/rootfs-old" "$OUT/rootfs-new"
t0=$(date +%s.%N)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. firmware images (ext4, 24 MiB) from this machine's libraries"
libs=(libcrypto.so.3 libssl.so.3 libzstd.so.1 libarchive.so.13 libjansson.so.4 libcurl.so.4)
for l in "${libs[@]}"; do
  f=$(readlink -f "/usr/lib/x86_64-linux-gnu/$l" 2>/dev/null || true)
  [ -f "$f" ] && cp "$f" "$OUT/rootfs-old/$l"
done
mkdir -p "$OUT/rootfs-old/etc"
printf 'FIRMWARE_VERSION=1.0\nBUILD=4711\n' >"$OUT/rootfs-old/etc/version"
cp -a "$OUT/rootfs-old/." "$OUT/rootfs-new/"
printf 'FIRMWARE_VERSION=1.1\nBUILD=4790\n' >"$OUT/rootfs-new/etc/version"
# The update changes one library and adds a file, as a security update would.
cp "$BIN/fota-verify" "$OUT/rootfs-new/fota-verify"
mkimg() { # DIR IMG
  E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -O ^metadata_csum,^64bit -N 256 \
    -U 6f7a0c1e-0000-4000-8000-00000000f07a -E root_owner=0:0,hash_seed=6f7a0c1e-0000-4000-8000-00000000f07a \
    -d "$1" "$2" 24M
}
mkimg "$OUT/rootfs-old" "$OUT/old.img"
mkimg "$OUT/rootfs-new" "$OUT/new.img"
ls -l "$OUT/old.img" "$OUT/new.img" | awk '{print "   " $5 " bytes  " $9}'

say "2. throw-away CA: root -> intermediate -> signer (ECDSA P-256)"
bash tests/pki/mkpki.sh "$OUT/pki"
openssl x509 -in "$OUT/pki/signer-ec.pem" -noout -subject -issuer | sed 's/^/   /'

say "3. fota-pack"
"$BIN/fota-pack" --to "$OUT/new.img" --key "$OUT/pki/signer-ec.key" --cert "$OUT/pki/signer-ec.pem" \
  --chain "$OUT/pki/chain.pem" --name demo-firmware --version 1.1 --from-version 1.0 \
  --device-model FOTA-DEMO-1 --security-version 1 --priority high --install-message "Security update 1.1" \
  --json -o "$OUT/demo.fota" >"$OUT/pack.json"
grep -E '"(package_bytes|target_bytes|ratio)"' "$OUT/pack.json" | head -3 | sed 's/^/  /'

say "4. fota-verify"
"$BIN/fota-verify" --trust "$OUT/pki/root.pem" --output "$OUT/rebuilt.img" "$OUT/demo.fota"
cmp "$OUT/rebuilt.img" "$OUT/new.img" && echo "   rebuilt image is byte-identical to new.img"

say "4b. the same update as a delta from 1.0 (what a handset on 1.0 downloads)"
"$BIN/fota-pack" --from "$OUT/old.img" --to "$OUT/new.img" --key "$OUT/pki/signer-ec.key" --cert "$OUT/pki/signer-ec.pem" \
  --chain "$OUT/pki/chain.pem" --name demo-firmware --version 1.1 --from-version 1.0 \
  --device-model FOTA-DEMO-1 --security-version 1 -o "$OUT/demo-delta.fota"
"$BIN/fota-pack" --from "$OUT/old.img" --to "$OUT/new.img" --key "$OUT/pki/signer-ec.key" --cert "$OUT/pki/signer-ec.pem" \
  --chain "$OUT/pki/chain.pem" --name demo-firmware --version 1.1 --from-version 1.0 --mode inplace \
  --device-model FOTA-DEMO-1 --security-version 1 -o "$OUT/demo-inplace.fota"
for k in delta inplace; do
  "$BIN/fota-verify" --quiet --trust "$OUT/pki/root.pem" --source "$OUT/old.img" --output "$OUT/rebuilt-$k.img" "$OUT/demo-$k.fota" &&
    cmp "$OUT/rebuilt-$k.img" "$OUT/new.img" && echo "   fota-verify --source: the $k package turns old.img into exactly new.img"
done

say "5. the auditor's recipe: stock tar, openssl, sha256sum, zstd only"
mkdir -p "$OUT/audit"; cd "$OUT/audit"
tar -xf ../demo.fota
openssl cms -verify -binary -inform DER -in manifest.sig -content manifest.json \
  -CAfile ../pki/root.pem -purpose any -out /dev/null 2>&1 | sed 's/^/   openssl: /'
grep -o '"payload_sha256":"[0-9a-f]*"' manifest.json | cut -d'"' -f4 >hashes
tar -tf ../demo.fota | tail -n +3 >names
paste -d' ' hashes names | sed 's/ /  /' | sha256sum -c --quiet && echo "   sha256sum: all $(wc -l <names) payloads match the signed manifest"
while read -r p; do zstd -qdc "$p"; done <names | cmp - ../new.img && echo "   zstd -d of the payloads in order rebuilds new.img"
cd "$top"

t1=$(date +%s.%N)
say "summary"
pkg=$(stat -c %s "$OUT/demo.fota"); img=$(stat -c %s "$OUT/new.img")
dpk=$(stat -c %s "$OUT/demo-delta.fota"); ipk=$(stat -c %s "$OUT/demo-inplace.fota")
awk -v p="$pkg" -v d="$dpk" -v ip="$ipk" -v i="$img" -v s="$(echo "$t1 - $t0" | bc 2>/dev/null || echo 0)" \
  'BEGIN { printf "   image %d bytes: full package %d (%.1f%%), A/B delta %d (%.2f%%), in-place delta %d (%.2f%%); demo took %.1f s\n", i, p, 100*p/i, d, 100*d/i, ip, 100*ip/i, s }'
echo "   files: $OUT"
