#!/usr/bin/env bash
# bench/delta.sh BUILD: the delta engine against the well-known peers, on the same
# machine in the same run.
#
# For every pair in ../shared/bench/pairs (see bench/README.md for what they are and how
# to obtain them without that folder) it decompresses OLD and NEW under bench/out/, then
# runs bsdiff/bspatch, xdelta3 -9, zstd --patch-from -22, and fota-delta (diff with
# --threads 1 and with default threads, then patch; fota-z19: --threads 1 --level 19, zstd's
# parser on the source-window blocks; and fota-fast: --threads 1 at zstd
# level BENCH_FAST_LEVEL, default 9), measuring patch bytes, wall seconds
# and peak RSS (/usr/bin/time) and checking every output against NEW with cmp. A
# generated 1 GiB pair (skip it with BENCH_SKIP_1G=1) shows fota-delta's apply memory on
# an image far larger than its buffers.
#
# Prints one table plus the targets (fota <= best peer; 1-thread diff >= 3x less CPU than
# bsdiff on esb/ext4; diff RSS <= bsdiff's; apply >= 2x faster than bspatch on ext4 and
# apply RSS <= 16 MiB), and writes the same data to bench/out/delta.json.
# Environment: BENCH_PAIRS="mp pyb ..." to run a subset; BENCH_SKIP_1G=1; BENCH_KEEP=1
# keeps the decompressed inputs and patches.
# Exits non-zero only when a tool produced a wrong output or the bench itself broke;
# a missed target is reported, not fatal.
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/lib.sh

pairs_dir="$top/../shared/bench/pairs"
out="$top/bench/out"
work="$out/delta-work"
rows="$out/delta.tsv"
json="$out/delta.json"
FOTA=""
if [ -x "$BUILD/fota-delta" ]; then FOTA=$(cd "$BUILD" && pwd)/fota-delta; fi

if [ ! -d "$pairs_dir" ]; then
  cat <<EOF
bench/delta: $pairs_dir not found, so there is nothing to measure.
The pairs are public files; bench/README.md says where each comes from:
  mp, pyb  MicroPython ESP8266 / pyboard v1.1 firmware images as published in the
           detools test files (https://github.com/eerimoq/detools, tests/files/micropython)
  esb      npm @esbuild/linux-arm64 0.26.0 and 0.27.0, file package/bin/esbuild
  libc     Debian libc6 2.36-9+deb12u7 and 2.36-9+deb12u14 (amd64), lib/x86_64-linux-gnu/libc.so.6
  ext4     mke2fs -t ext4 -b 4096 -O ^metadata_csum,^64bit -N 2048 -d ROOT IMG 32M over the
           extracted libc6 + libssl3 packages (old: deb12u7 + 3.0.17, new: deb12u14 + 3.0.20)
Put them, each compressed with zstd --long=27, at $pairs_dir/<pair>-{old,new}.<ext>.zst
and rerun make bench.
EOF
  exit 0
fi
need_tools bsdiff bspatch xdelta3 zstd openssl cmp /usr/bin/time || exit 1
[ -n "$FOTA" ] || echo "bench/delta: WARNING: $BUILD/fota-delta is not built; fota rows are marked missing"

mkdir -p "$work"
: >"$rows"
M_LOG="$work/last.log"
status=0
PAIRS=${BENCH_PAIRS:-"mp pyb libc esb ext4"}
FAST_LEVEL=${BENCH_FAST_LEVEL:-9}
TOOLS="bsdiff xdelta3 zstd fota-1t fota fota-z19 fota-fast"

# set_cmds TOOL OLD NEW PATCH OUT: fills DIFF and APPLY argument arrays.
set_cmds() {
  local tool=$1 old=$2 new=$3 p=$4 o=$5
  case "$tool" in
    bsdiff) DIFF=(bsdiff "$old" "$new" "$p"); APPLY=(bspatch "$old" "$o" "$p") ;;
    xdelta3)
      local b; b=$(fsize "$old")
      [ "$b" -lt 524288 ] && b=524288  # xdelta3 minimum
      DIFF=(xdelta3 -9 -e -f -B "$b" -s "$old" "$new" "$p")
      APPLY=(xdelta3 -d -f -B "$b" -s "$old" "$p" "$o") ;;
    zstd)
      DIFF=(zstd -q --ultra -22 --long=27 -f "--patch-from=$old" "$new" -o "$p")
      APPLY=(zstd -q -d --long=27 -f "--patch-from=$old" "$p" -o "$o") ;;
    fota-1t) DIFF=("$FOTA" diff --threads 1 "$old" "$new" "$p"); APPLY=("$FOTA" patch "$old" "$p" "$o") ;;
    fota) DIFF=("$FOTA" diff "$old" "$new" "$p"); APPLY=("$FOTA" patch "$old" "$p" "$o") ;;
    fota-z19)
      DIFF=("$FOTA" diff --threads 1 --level 19 "$old" "$new" "$p")
      APPLY=("$FOTA" patch "$old" "$p" "$o") ;;
    fota-fast)
      DIFF=("$FOTA" diff --threads 1 --level "$FAST_LEVEL" "$old" "$new" "$p")
      APPLY=("$FOTA" patch "$old" "$p" "$o") ;;
  esac
}

# bench_one PAIR TOOL OLD NEW: one diff + apply + verify; appends a row.
bench_one() {
  local pair=$1 tool=$2 old=$3 new=$4
  local p="$work/$pair.$tool.patch" o="$work/$pair.$tool.out"
  local ok=ok bytes=0 ds=0 dkb=0 as=0 akb=0 dcpu=0 acpu=0
  rm -f "$p" "$o"
  if [ "${tool#fota}" != "$tool" ] && [ -z "$FOTA" ]; then
    printf '%s\t%s\t%s\t%s\t0\t0\t0\t0\t0\tmissing\t0\t0\n' "$pair" "$tool" "$(fsize "$old")" "$(fsize "$new")" >>"$rows"
    return
  fi
  set_cmds "$tool" "$old" "$new" "$p" "$o"
  measure "${DIFF[@]}"
  ds=$M_S dkb=$M_KB dcpu=$M_CPU
  if [ "$M_RC" -ne 0 ] || [ ! -f "$p" ]; then
    ok="diff-failed(rc=$M_RC)"
    echo "bench/delta: $pair $tool diff failed: $(tail -n 3 "$M_LOG" | tr '\n' ' ')" >&2
  else
    bytes=$(fsize "$p")
    measure "${APPLY[@]}"
    as=$M_S akb=$M_KB acpu=$M_CPU
    if [ "$M_RC" -ne 0 ]; then
      ok="apply-failed(rc=$M_RC)"
      echo "bench/delta: $pair $tool apply failed: $(tail -n 3 "$M_LOG" | tr '\n' ' ')" >&2
    elif ! cmp -s "$o" "$new"; then
      ok="WRONG-OUTPUT"
    fi
  fi
  [ "$ok" = ok ] || status=1
  # The patch must not depend on the thread count (delta.h): check fota against fota-1t.
  if [ "$tool" = fota ] && [ "$ok" = ok ] && [ -f "$work/$pair.fota-1t.patch" ] \
    && ! cmp -s "$p" "$work/$pair.fota-1t.patch"; then
    ok="ok,patch-differs-from-1-thread"
  fi
  add_row "$pair" "$tool" "$old" "$new" "$bytes" "$ds" "$dkb" "$as" "$akb" "$ok" "$dcpu" "$acpu"
  rm -f "$o"
  # bsdiff's own patch applied by fota-delta's streaming BSDIFF40 reader (row "bsd>fota";
  # its patch bytes and diff figures are bsdiff's).
  if [ "$tool" = bsdiff ] && [ -n "$FOTA" ] && [ "$ok" = ok ]; then
    measure "$FOTA" patch "$old" "$p" "$o"
    if [ "$M_RC" -ne 0 ]; then ok="apply-failed(rc=$M_RC)"; status=1
    elif ! cmp -s "$o" "$new"; then ok="WRONG-OUTPUT"; status=1; fi
    add_row "$pair" "bsd>fota" "$old" "$new" "$bytes" "$ds" "$dkb" "$M_S" "$M_KB" "$ok" "$dcpu" "$M_CPU"
    rm -f "$o"
  fi
}

# add_row PAIR TOOL OLD NEW BYTES DIFF_S DIFF_KIB APPLY_S APPLY_KIB OK DIFF_CPU APPLY_CPU
add_row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(fsize "$3")" "$(fsize "$4")" \
    "$5" "$6" "$7" "$8" "$9" "${10}" "${11}" "${12}" >>"$rows"
  printf '  %-5s %-9s %12s bytes  diff %7ss (cpu %7ss) %7s KiB  apply %6ss %7s KiB  %s\n' "$1" "$2" "$5" \
    "$6" "${11}" "$7" "$8" "$9" "${10}" >&2
}

for pair in $PAIRS; do
  src_old=$(ls "$pairs_dir/$pair"-old.*.zst 2>/dev/null | head -n 1)
  src_new=$(ls "$pairs_dir/$pair"-new.*.zst 2>/dev/null | head -n 1)
  if [ -z "$src_old" ] || [ -z "$src_new" ]; then
    echo "bench/delta: pair $pair not found in $pairs_dir, skipped" >&2
    continue
  fi
  old="$work/$pair.old" new="$work/$pair.new"
  zstd -q -d --long=27 -f "$src_old" -o "$old" && zstd -q -d --long=27 -f "$src_new" -o "$new" || {
    echo "bench/delta: cannot decompress pair $pair" >&2; status=1; continue; }
  echo "bench/delta: $pair ($(fsize "$old") -> $(fsize "$new") bytes)" >&2
  for tool in $TOOLS; do bench_one "$pair" "$tool" "$old" "$new"; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -f "$work/$pair".*
done

# The 1 GiB case: apply memory on an image much larger than any buffer.
# old: AES-CTR keystream (fixed key); new: a 64 KiB insert, a 64 MiB block moved from
# the back to the middle, and 256 scattered 32-byte edits.
gen1g() {
  local old=$1 new=$2 M=$((1 << 20))
  gen_bytes 000102030405060708090a0b0c0d0e0f $((1024 * M)) >"$old"
  gen_bytes 0f0e0d0c0b0a09080706050403020100 $((64 * 1024 + 256 * 32)) >"$work/gen1g.ins"
  {
    head -c $((256 * M)) "$old"
    head -c 65536 "$work/gen1g.ins"
    tail -c +$((768 * M + 1)) "$old" | head -c $((64 * M))
    tail -c +$((256 * M + 1)) "$old" | head -c $((512 * M))
    tail -c +$((832 * M + 1)) "$old"
  } >"$new"
  local i off
  for i in $(seq 0 255); do
    off=$((i * 4 * M + (i * 7919 * 4099) % (4 * M)))
    dd if="$work/gen1g.ins" of="$new" bs=32 skip=$((2048 + i)) seek="$off" count=1 \
      oflag=seek_bytes conv=notrunc status=none
  done
  rm -f "$work/gen1g.ins"
}
if [ "${BENCH_SKIP_1G:-0}" = 1 ]; then
  echo "bench/delta: 1 GiB case skipped (BENCH_SKIP_1G=1)" >&2
elif [ -z "$FOTA" ]; then
  echo "bench/delta: 1 GiB case skipped (fota-delta not built)" >&2
else
  echo "bench/delta: gen1g (generating 1 GiB old and new)" >&2
  gen1g "$work/gen1g.old" "$work/gen1g.new"
  bench_one gen1g fota "$work/gen1g.old" "$work/gen1g.new"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -f "$work"/gen1g.*
fi

# Table, targets and JSON from the rows.
awk -F'\t' -v json="$json" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -v host="$(uname -srm)" \
  -v cpus="$(nproc)" -v fota_bin="${FOTA:-missing}" -v fast_level="$FAST_LEVEL" '
function peer(t) { return t == "bsdiff" || t == "xdelta3" || t == "zstd" }
function mib(kb) { return kb / 1024 }
function addt(name, pair, value, pass) {
  nt++; tname[nt] = name; tpair[nt] = pair; tval[nt] = value; tpass[nt] = pass
}
{
  n++; P[n] = $1; T[n] = $2; OB[n] = $3; NB[n] = $4; B[n] = $5; DS[n] = $6; DK[n] = $7
  AS[n] = $8; AK[n] = $9; OK[n] = $10; DC[n] = $11 + 0; AC[n] = $12 + 0
  if (!($1 in seen)) { seen[$1] = 1; np++; order[np] = $1 }
  if (peer($2) && $10 == "ok" && (!($1 in best) || $5 < best[$1])) { best[$1] = $5; bestt[$1] = $2 }
  if ($2 == "bsdiff" && $10 == "ok") { bds[$1] = $6; bdk[$1] = $7; bas[$1] = $8; bak[$1] = $9; bdc[$1] = $11 + 0 }
}
END {
  for (i = 1; i <= n; i++) {
    R[i] = (P[i] in best && best[P[i]] > 0 && B[i] > 0) ? sprintf("%.3f", B[i] / best[P[i]]) : "-"
    F[i] = ""
    if (T[i] !~ /^fota/ || OK[i] !~ /^ok/) continue
    pr = P[i]
    if (pr in best) {
      pass = B[i] <= best[pr]
      F[i] = F[i] sprintf(" size:%s", pass ? "ok" : "MISS")
      if (T[i] == "fota-1t" || T[i] == "fota-fast") addt("patch bytes <= best peer (" bestt[pr] " " best[pr] "), " T[i], pr, B[i], pass)
    }
    if (pr in bds) {
      if ((T[i] == "fota-1t" || T[i] == "fota-fast") && (pr == "esb" || pr == "ext4")) {
        # CPU seconds (user + system): the work done, which on a shared machine the
        # load does not change the way it changes wall time
        sp = DC[i] > 0 ? bdc[pr] / DC[i] : 999
        pass = sp >= 3
        F[i] = F[i] sprintf(" diff%.1fx:%s", sp, pass ? "ok" : "MISS")
        addt("1-thread diff >= 3x less CPU than bsdiff (" bdc[pr] " s), " T[i], pr, sprintf("%.2fs = %.1fx", DC[i], sp), pass)
      }
      pass = DK[i] <= bdk[pr]
      F[i] = F[i] sprintf(" drss:%s", pass ? "ok" : "MISS")
      addt("diff peak RSS <= bsdiff (" sprintf("%.1f", mib(bdk[pr])) " MiB), " T[i], pr, sprintf("%.1f MiB", mib(DK[i])), pass)
      if (pr == "ext4" && T[i] == "fota-1t") {
        sp = AS[i] > 0 ? bas[pr] / AS[i] : 999
        pass = sp >= 2
        F[i] = F[i] sprintf(" apply%.1fx:%s", sp, pass ? "ok" : "MISS")
        addt("apply >= 2x faster than bspatch (" bas[pr] " s)", pr, sprintf("%ss = %.1fx", AS[i], sp), pass)
      }
    }
    if (T[i] != "fota") {
      pass = AK[i] <= 16384
      F[i] = F[i] sprintf(" arss:%s", pass ? "ok" : "MISS")
      if (pr == "ext4" || pr == "gen1g")
        addt("apply peak RSS <= 16 MiB", pr, sprintf("%.1f MiB", mib(AK[i])), pass)
    } else if (pr == "gen1g") {
      pass = AK[i] <= 16384
      F[i] = F[i] sprintf(" arss:%s", pass ? "ok" : "MISS")
      addt("apply peak RSS <= 16 MiB (1 GiB image)", pr, sprintf("%.1f MiB", mib(AK[i])), pass)
    }
  }
  printf "\n%-6s %-9s %12s %7s %8s %8s %9s %8s %9s  %-6s %s\n", "pair", "tool", "patch B", "ratio", "diff s", "diff cpu", "diff MiB", "apply s", "apply MiB", "output", "targets"
  for (k = 1; k <= np; k++)
    for (i = 1; i <= n; i++) if (P[i] == order[k])
      printf "%-6s %-9s %12d %7s %8.2f %8.2f %9.1f %8.2f %9.1f  %-6s%s\n", P[i], T[i], B[i], R[i], DS[i], DC[i], mib(DK[i]), AS[i], mib(AK[i]), OK[i] == "ok" ? "ok" : OK[i], F[i]
  printf "\nratio: patch bytes / smallest peer patch (bsdiff, xdelta3, zstd) on the pair. diff s: wall; diff cpu: user + system\nseconds (the speed target compares these). fota-1t = fota-delta diff --threads 1;\nfota-z19 = fota-delta diff --threads 1 --level 19 (the zstd parser for the source-window blocks: the\nprevious default); fota-fast = fota-delta diff --threads 1 --level %s (docs/fota-delta.md).\n", fast_level
  if (nt) {
    printf "\ntargets:\n"
    for (t = 1; t <= nt; t++) printf "  %-4s %-6s %-60s %s\n", tpass[t] ? "PASS" : "MISS", tpair[t], tname[t], tval[t]
  }
  printf "{\n  \"section\": \"delta\",\n  \"date\": \"%s\",\n  \"host\": \"%s\",\n  \"cpus\": %d,\n  \"fota_delta\": \"%s\",\n  \"rows\": [\n", date, host, cpus, fota_bin > json
  for (i = 1; i <= n; i++)
    printf "    {\"pair\": \"%s\", \"tool\": \"%s\", \"old_bytes\": %d, \"new_bytes\": %d, \"patch_bytes\": %d, \"ratio_to_best_peer\": %s, \"diff_s\": %s, \"diff_cpu_s\": %s, \"diff_rss_kib\": %d, \"apply_s\": %s, \"apply_cpu_s\": %s, \"apply_rss_kib\": %d, \"output\": \"%s\"}%s\n", P[i], T[i], OB[i], NB[i], B[i], R[i] == "-" ? "null" : R[i], DS[i] + 0, DC[i], DK[i], AS[i] + 0, AC[i], AK[i], OK[i], i < n ? "," : "" > json
  printf "  ],\n  \"targets\": [\n" > json
  for (t = 1; t <= nt; t++)
    printf "    {\"target\": \"%s\", \"pair\": \"%s\", \"value\": \"%s\", \"pass\": %s}%s\n", tname[t], tpair[t], tval[t], tpass[t] ? "true" : "false", t < nt ? "," : "" > json
  printf "  ]\n}\n" > json
}' "$rows"
echo "bench/delta: JSON in ${json#"$top"/}"
exit $status
