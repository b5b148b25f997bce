#!/usr/bin/env bash
# bench/verify.sh BUILD: fota-verify on a generated 1 GiB full package, next to
# sha256sum of the same package file (target: within 2x of sha256sum's time) and its
# peak memory (target: under 64 MiB). Also times fota-pack on the same image.
# BENCH_VERIFY_MIB=N changes the image size (default 1024).
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/lib.sh
BIN=$(cd "$BUILD" && pwd)
need_tools openssl sha256sum || exit 1
MIB=${BENCH_VERIFY_MIB:-1024}
W=$top/bench/out/verify
mkdir -p "$W"
M_LOG=$W/log

# Firmware-like content in 1 MiB blocks: random (code, already-compressed data),
# text tables and zero padding, so the package is about half the image.
img=$W/image-${MIB}M.img
if [ ! -f "$img" ] || [ "$(fsize "$img")" -ne $((MIB << 20)) ]; then
  echo "generating a ${MIB} MiB image..."
  : >"$img.part"
  for ((i = 0; i < MIB; i += 4)); do
    gen_bytes "$(printf '%032x' $((i + 1)))" 1048576 >>"$img.part"
    gen_bytes "$(printf '%032x' $((i + 7)))" 524288 >>"$img.part"; head -c 524288 /dev/zero >>"$img.part"
    yes "fota bench string table entry $i padding padding" | head -c 1048576 >>"$img.part"
    head -c 1048576 /dev/zero >>"$img.part"
  done
  truncate -s $((MIB << 20)) "$img.part" && mv "$img.part" "$img"
fi
bash tests/pki/mkpki.sh "$W/pki"

pkg=$W/image.fota
measure "$BIN/fota-pack" --to "$img" --key "$W/pki/signer-ec.key" --cert "$W/pki/signer-ec.pem" \
  --chain "$W/pki/chain.pem" --level 3 --quiet -o "$pkg"
[ "$M_RC" -eq 0 ] || { echo "fota-pack failed: $(tail -3 "$M_LOG")"; exit 1; }
pack_s=$M_S pack_kb=$M_KB

cat "$pkg" >/dev/null # warm the page cache for both contenders
measure sha256sum "$pkg"
sha_s=$M_S sha_kb=$M_KB
measure "$BIN/fota-verify" --quiet --trust "$W/pki/root.pem" "$pkg"
[ "$M_RC" -eq 0 ] || { echo "fota-verify failed: $(tail -3 "$M_LOG")"; exit 1; }
ver_s=$M_S ver_kb=$M_KB
measure "$BIN/fota-verify" --quiet --trust "$W/pki/root.pem" --output "$W/rebuilt.img" "$pkg"
out_s=$M_S out_kb=$M_KB
rm -f "$W/rebuilt.img"

psize=$(fsize "$pkg")
awk -v mib="$MIB" -v p="$psize" -v ps="$pack_s" -v pk="$pack_kb" -v ss="$sha_s" -v sk="$sha_kb" \
    -v vs="$ver_s" -v vk="$ver_kb" -v os="$out_s" -v ok="$out_kb" -v json="$W/../verify.json" 'BEGIN {
  mb = p / 1e6
  printf "\nfota-verify on a %d MiB full package (%d bytes, zstd level 3, 4 MiB chunks)\n", mib, p
  printf "%-34s %9s %10s %12s\n", "command", "seconds", "MB/s", "peak RSS MiB"
  printf "%-34s %9.2f %10.0f %12.1f\n", "sha256sum PKG", ss, mb / (ss > 0 ? ss : 0.01), sk / 1024
  printf "%-34s %9.2f %10.0f %12.1f\n", "fota-verify PKG", vs, mb / (vs > 0 ? vs : 0.01), vk / 1024
  printf "%-34s %9.2f %10.0f %12.1f\n", "fota-verify --output IMG PKG", os, mb / (os > 0 ? os : 0.01), ok / 1024
  printf "%-34s %9.2f %10.0f %12.1f\n", "fota-pack --level 3 (2 threads)", ps, mib * 1.048576 / (ps > 0 ? ps : 0.01), pk / 1024
  r = vs / (ss > 0 ? ss : 0.01)
  printf "target: fota-verify within 2x of sha256sum: %.2fx -> %s\n", r, r <= 2 ? "MET" : "MISSED"
  printf "target: fota-verify peak RSS under 64 MiB: %.1f MiB -> %s\n", vk / 1024, vk < 65536 ? "MET" : "MISSED"
  printf "{\"image_mib\":%d,\"package_bytes\":%d,\"sha256sum_s\":%.3f,\"verify_s\":%.3f,\"verify_rss_kib\":%d,\"verify_output_s\":%.3f,\"verify_output_rss_kib\":%d,\"pack_s\":%.3f,\"pack_rss_kib\":%d,\"ratio_to_sha256sum\":%.3f}\n", mib, p, ss, vs, vk, os, ok, ps, pk, r > json
}'
