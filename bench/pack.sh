#!/usr/bin/env bash
# bench/pack.sh BUILD: whole packages (manifest, signature and tar overhead included)
# on every pair in ../shared/bench, against the single whole-file fota-delta patch and
# the peers (bsdiff, xdelta3 -9, zstd --patch-from -22), all measured here in this run:
#   - A/B package <= 1.05 x the whole-file fota-delta patch, and <= the best peer;
#   - in-place package <= 1.25 x the A/B package;
#   - packing ext4 with one thread takes at most a third of bsdiff's time;
#   - fota-verify --source confirms every package (A/B and in-place).
# Also a chunk-size sweep (how the default was chosen) and a generated 1 GiB pair
# (BENCH_SKIP_1G=1 skips it). Writes bench/out/pack.json.
#
# Packages are signed by tests/pki/mkpki.sh's lean bench signer (ECDSA P-256, one
# intermediate, no key identifier extensions: a 2-block signature). The second table
# takes each A/B package apart (tar headers, end marker, padding, manifest, signature)
# and gives its floor: the smallest package FORMAT.md allows around the same payloads,
# i.e. the same tar framing, the manifest with 1-character names and the shortest
# enumeration values, and a signature of a single 512-byte block. When the floor itself
# is above 1.05 x fota-delta or above the best peer, that target cannot be met with these
# payloads by any container change within the format.
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/lib.sh
BIN=$(cd "$BUILD" && pwd)
pairs_dir="$top/../shared/bench/pairs"
W=$top/bench/out/pack
mkdir -p "$W"
M_LOG=$W/log
if [ ! -d "$pairs_dir" ]; then
  echo "bench/pack: $pairs_dir not found; see bench/README.md for how to obtain the pairs."
  exit 0
fi
need_tools bsdiff xdelta3 zstd jq /usr/bin/time || exit 1
bash tests/pki/mkpki.sh "$W/pki"
SIGN=(--key "$W/pki/bench-signer.key" --cert "$W/pki/bench-signer.pem" --chain "$W/pki/bench-chain.pem")
PAIRS=${BENCH_PAIRS:-"mp pyb libc esb ext4"}
json_rows=()
overhead_rows=()
status=0
printf '\n%-5s %10s %10s %10s %6s %6s %10s %6s %10s %6s %8s %8s %8s %7s\n' pair fota-delta best-peer "A/B pkg" "/fd" "/peer" "A/B OTA" "/fd" "in-place" "/A/B" "pack 1t" "bsdiff" "pack 2t" verify
for p in $PAIRS; do
  o=$(ls "$pairs_dir/$p-old".*.zst 2>/dev/null | head -1); n=$(ls "$pairs_dir/$p-new".*.zst 2>/dev/null | head -1)
  [ -n "$o" ] && [ -n "$n" ] || { echo "bench/pack: pair $p missing"; continue; }
  OLD=$W/$p-old NEW=$W/$p-new
  zstd -qfd --long=27 "$o" -o "$OLD"; zstd -qfd --long=27 "$n" -o "$NEW"
  osize=$(fsize "$OLD")
  # The peers and the whole-file patch.
  measure bsdiff "$OLD" "$NEW" "$W/p.bsdiff"; bs_s=$M_S; bs_cpu=$M_CPU; bs=$(fsize "$W/p.bsdiff")
  xb=$osize; [ "$xb" -lt 524288 ] && xb=524288 # xdelta3's minimum -B
  xdelta3 -9 -e -f -B "$xb" -s "$OLD" "$NEW" "$W/p.xd" >/dev/null 2>&1; xd=$(fsize "$W/p.xd")
  zstd -q -f --ultra -22 --long=27 --patch-from="$OLD" "$NEW" -o "$W/p.zst" 2>/dev/null; zs=$(fsize "$W/p.zst")
  best=$bs; for v in $xd $zs; do [ "$v" -lt "$best" ] && best=$v; done
  "$BIN/fota-delta" diff "$OLD" "$NEW" "$W/p.fdp" >/dev/null 2>&1; fd=$(fsize "$W/p.fdp")
  # Packages.
  measure "$BIN/fota-pack" --from "$OLD" --to "$NEW" "${SIGN[@]}" --threads 1 --quiet --json -o "$W/ab1.fota"; t1=$M_S; t1_cpu=$M_CPU
  prof=$(jq -c '.profile_seconds | with_entries(.value |= (. * 100 | round / 100))' "$M_LOG" 2>/dev/null || echo null)
  measure "$BIN/fota-pack" --from "$OLD" --to "$NEW" "${SIGN[@]}" --quiet -o "$W/ab.fota"; t2=$M_S; rss=$M_KB
  # ECDSA signatures are randomised: compare everything else (manifest and payloads).
  cmp -s <(tar -xOf "$W/ab1.fota" --exclude=manifest.sig) <(tar -xOf "$W/ab.fota" --exclude=manifest.sig); same_bytes=$?
  "$BIN/fota-pack" --from "$OLD" --to "$NEW" "${SIGN[@]}" --mode inplace --quiet -o "$W/ip.fota"
  ab=$(fsize "$W/ab.fota"); ip=$(fsize "$W/ip.fota")
  # Bytes a device actually downloads: the head (manifest, signature and their headers),
  # then each payload's data by Range; payload headers, padding and the end marker never travel.
  ml=$(tar -xOf "$W/ab.fota" manifest.json | wc -c); sl=$(tar -xOf "$W/ab.fota" manifest.sig | wc -c)
  pay=$(tar -xOf "$W/ab.fota" manifest.json | jq '[.images[].chunks[].payload_size] | add')
  nch=$(tar -xOf "$W/ab.fota" manifest.json | jq '[.images[].chunks[]] | length')
  pay_span=$(tar -xOf "$W/ab.fota" manifest.json | jq '[.images[].chunks[].payload_size | (. + 511) / 512 | floor * 512] | add')
  ota=$(( 1024 + (ml + 511) / 512 * 512 + (sl + 511) / 512 * 512 + pay ))
  # The package taken apart, and its floor (see the top of this file).
  hdrs=$(( (2 + nch) * 512 )); endm=1024
  pad=$(( ab - hdrs - endm - ml - sl - pay ))
  mmin=$(tar -xOf "$W/ab.fota" manifest.json | jq -c '.package.name = "p" | .package.version = "1" | .package.from_version = null
    | .devices.models = [] | .expires = null | .policy = {priority: "low", silent: true, roaming: "deny", install_message: null}
    | .images[].name = "a"' | wc -c)
  floor=$(( hdrs + endm + (mmin + 511) / 512 * 512 + 512 + pay_span ))
  v=ok
  for k in ab ip; do
    "$BIN/fota-verify" --quiet --trust "$W/pki/root.pem" --source "$OLD" --output "$W/out" "$W/$k.fota" && cmp -s "$W/out" "$NEW" || { v=FAIL; status=1; }
  done
  printf '%-5s %10d %10d %10d %6.3f %6.3f %10d %6.3f %10d %6.3f %8.2f %8.2f %8.2f %7s\n' "$p" "$fd" "$best" "$ab" \
    "$(echo "$ab / $fd" | bc -l)" "$(echo "$ab / $best" | bc -l)" "$ota" "$(echo "$ota / $fd" | bc -l)" "$ip" "$(echo "$ip / $ab" | bc -l)" "$t1" "$bs_s" "$t2" "$v"
  overhead_rows+=("$(printf '%-5s %8d %8d %8d %8d %8d %8d %9d %9d %8d %7.3f %8d %7.3f %8d %6.3f' "$p" "$hdrs" "$endm" "$pad" "$ml" "$sl" \
    $((ab - pay)) "$pay" "$ab" "$mmin" "$(echo "$ab / $fd" | bc -l)" "$floor" "$(echo "$floor / $fd" | bc -l)" "$ota" "$(echo "$ota / $fd" | bc -l)")")
  [ "$p" = ext4 ] && ext4_prof=$prof
  json_rows+=("{\"pair\":\"$p\",\"tar_header_bytes\":$hdrs,\"tar_end_bytes\":$endm,\"tar_padding_bytes\":$pad,\"manifest_bytes\":$ml,\"signature_bytes\":$sl,\"payload_bytes\":$pay,\"min_manifest_bytes\":$mmin,\"floor_bytes\":$floor,\"pack_1t_profile_s\":$prof,\"fota_delta_bytes\":$fd,\"bsdiff_bytes\":$bs,\"xdelta3_bytes\":$xd,\"zstd_bytes\":$zs,\"ab_package_bytes\":$ab,\"inplace_package_bytes\":$ip,\"ab_ota_bytes\":$ota,\"pack_1t_s\":$t1,\"pack_1t_cpu_s\":$t1_cpu,\"bsdiff_cpu_s\":$bs_cpu,\"pack_s\":$t2,\"pack_rss_kib\":$rss,\"bsdiff_s\":$bs_s,\"verify\":\"$v\",\"threads_1_vs_2_identical_except_signature\":$([ $same_bytes -eq 0 ] && echo true || echo false)}")
  echo "$p $fd $best $ab $ip $t1 $bs_s $floor $t1_cpu $bs_cpu" >>"$W/rows.$$"
done
echo
echo "A/B package taken apart (bytes): tar headers, end marker, padding, manifest, signature; floor = smallest package the format allows around these payloads"
printf '%-5s %8s %8s %8s %8s %8s %8s %9s %9s %8s %7s %8s %7s %8s %6s\n' pair headers end padding manifest sig overhead payloads "A/B pkg" min-man "/fd" floor "/fd" "A/B OTA" "/fd"
for r in ${overhead_rows[@]+"${overhead_rows[@]}"}; do echo "$r"; done
[ -n "${ext4_prof:-}" ] && echo "ext4, one thread, where the time goes (s; chunk steps summed over chunks): $ext4_prof"
echo
echo "targets (from the rows above; 'floor' says whether the floor itself is above the limit):"
while read -r p fd best ab ip t1 bs_s floor t1c bsc; do
  awk -v p="$p" -v fd="$fd" -v best="$best" -v ab="$ab" -v ip="$ip" -v t1="$t1" -v bs="$bs_s" -v fl="$floor" -v t1c="$t1c" -v bsc="$bsc" 'BEGIN {
    printf "  %-5s A/B <= 1.05 x fota-delta: %-6s%s   A/B <= best peer: %-6s%s   in-place <= 1.25 x A/B: %s", p,
      (ab <= 1.05 * fd ? "MET" : "MISSED"), (ab <= 1.05 * fd ? "" : (fl > 1.05 * fd ? " (floor above: unreachable)" : " (floor below)")),
      (ab <= best ? "MET" : "MISSED"), (ab <= best ? "" : (fl > best ? " (floor above: unreachable)" : " (floor below)")),
      (ip <= 1.25 * ab ? "MET" : "MISSED")
    if (p == "ext4") printf "\n        pack 1 thread <= bsdiff/3: wall %s (%.2f s vs %.2f s, %.1fx), CPU %s (%.2f s vs %.2f s, %.1fx)",
      (t1 <= bs / 3 ? "MET" : "MISSED"), t1, bs, bs / (t1 > 0 ? t1 : 0.01), (t1c <= bsc / 3 ? "MET" : "MISSED"), t1c, bsc, bsc / (t1c > 0 ? t1c : 0.01)
    printf "\n" }'
done <"$W/rows.$$"
rm -f "$W/rows.$$"

# Chunk-size sweep on ext4 (how the default was chosen).
if [ -f "$W/ext4-old" ]; then
  echo
  echo "chunk size sweep, ext4 A/B package bytes:"
  for cs in 256K 1M 4M 16M; do
    "$BIN/fota-pack" --from "$W/ext4-old" --to "$W/ext4-new" "${SIGN[@]}" --chunk-size "$cs" --quiet -o "$W/cs.fota"
    printf '  %-5s %10d\n' "$cs" "$(fsize "$W/cs.fota")"
  done
fi

# A generated 1 GiB pair: packs on this machine, memory bounded, verified.
if [ "${BENCH_SKIP_1G:-0}" != 1 ]; then
  G_OLD=$W/g-old.img G_NEW=$W/g-new.img
  if [ ! -f "$G_NEW" ]; then
    echo; echo "generating a 1 GiB image pair..."
    gen_bytes 000102030405060708090a0b0c0d0e0f $((1 << 30)) >"$G_OLD"
    cp "$G_OLD" "$G_NEW"
    for i in $(seq 1 64); do # scattered 4 KiB edits and a few moved blocks
      gen_bytes "$(printf '%032x' $((i + 77)))" 4096 | dd of="$G_NEW" bs=4096 seek=$((i * 4001)) conv=notrunc status=none
    done
    dd if="$G_OLD" of="$G_NEW" bs=1M skip=10 seek=500 count=8 conv=notrunc status=none
  fi
  measure "$BIN/fota-pack" --from "$G_OLD" --to "$G_NEW" "${SIGN[@]}" --level 9 --quiet -o "$W/g.fota"
  g_s=$M_S g_kb=$M_KB
  measure "$BIN/fota-verify" --quiet --trust "$W/pki/root.pem" --source "$G_OLD" "$W/g.fota"
  printf '\n1 GiB generated pair: package %d bytes, pack %.1f s, peak RSS %.0f MiB; fota-verify --source %.1f s, %.0f MiB, %s\n' \
    "$(fsize "$W/g.fota")" "$g_s" "$(echo "$g_kb / 1024" | bc -l)" "$M_S" "$(echo "$M_KB / 1024" | bc -l)" "$([ "$M_RC" -eq 0 ] && echo valid || echo INVALID)"
  json_rows+=("{\"pair\":\"generated-1GiB\",\"ab_package_bytes\":$(fsize "$W/g.fota"),\"pack_s\":$g_s,\"pack_rss_kib\":$g_kb,\"verify_s\":$M_S,\"verify_rss_kib\":$M_KB}")
  [ "$M_RC" -eq 0 ] || status=1
  # The pair differs by 64 scattered 4 KiB edits and one moved 8 MiB block: a working
  # delta engine gives a package of a few MiB at most; FULL chunks of random data do not.
  g_nd=$(tar -xOf "$W/g.fota" manifest.json | jq '[.images[0].chunks[] | select(.method == "delta")] | length')
  g_n=$(tar -xOf "$W/g.fota" manifest.json | jq '.images[0].chunks | length')
  if [ "$(fsize "$W/g.fota")" -le $((16 << 20)) ]; then
    echo "  delta chunks: $g_nd of $g_n"
  else
    echo "  delta chunks: $g_nd of $g_n: DELTA NOT FOUND (package over 16 MiB for a few MiB of changes)"
    status=1
  fi
fi
(IFS=,; echo "{\"section\":\"pack\",\"rows\":[${json_rows[*]}]}") >"$top/bench/out/pack.json"
exit $status
