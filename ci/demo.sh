#!/usr/bin/env bash
# make demo: the whole pipeline, operator to handset, on local defaults, in under 2 minutes.
#  1. makes a realistic firmware image pair: two ext4 system images holding real shared
#     libraries from this machine, the second one "updated";
#  2. creates a throw-away CA (root -> intermediate -> signer);
#  3. packs: a full package, an A/B delta and an in-place delta (256 KiB chunks);
#  4. verifies them with fota-verify, and audits the full one with stock tar, openssl,
#     sha256sum and zstd (contrib/audit/fota-audit-stock.sh);
#  5. serves the A/B delta from nginx on 127.0.0.1, with fault-proxy (tests/proxy) in
#     between: the connection is dropped mid-payload and the retry gets a 503;
#  6. runs fota-agent download-and-update through the proxy and kill -9's it while the
#     journal says the apply is in progress (a process kill standing in for a power cut;
#     the storage-level power-cut proof is `make powercut` and the agent/powercut unit
#     suite), then runs `fota-agent resume`, as a device does at boot;
#  7. checks slot b is byte-identical to new.img and slot a untouched, prints the agent's
#     report and a summary: bytes sent versus the full image, time, chunks resumed.
# Usage: ci/demo.sh [BUILD]   (BUILD: the build directory, default build/)
# DEMO_OUT=DIR puts the files there instead of demo-out/ (removed and recreated).
# Exits 0 only if the update reached the exact target; leaves no process running.
set -euo pipefail
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ ! -x "$BUILD/fota-agent" ] || [ ! -x "$BUILD/fault-proxy" ] || [ ! -x "$BUILD/fota-pack" ]; then
  bash ci/install-deps.sh
  make --no-print-directory -j2 BUILD="$BUILD" all
fi
BIN=$(cd "$BUILD" && pwd)
OUT=${DEMO_OUT:-$top/demo-out}
rm -rf "$OUT"; mkdir -p "$OUT/rootfs-old" "$OUT/rootfs-new" "$OUT/www" "$OUT/device/state"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s.%N)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
elapsed() { echo "$(date +%s.%N) $1" | awk '{ printf "%.1f", $1 - $2 }'; }

# Every process this script starts is stopped at exit, whatever happens.
AGENT_PID= PROXY_PID=
WORK=$OUT/run; mkdir -p "$WORK"
# shellcheck source=../tests/integration/nginx.sh
. tests/integration/nginx.sh
stop_all() {
  if [ -n "$AGENT_PID" ]; then kill -KILL "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; fi
  if [ -n "$PROXY_PID" ]; then kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; fi
  AGENT_PID= PROXY_PID=
  nginx_stop
}
# (called as "stop_all || true": set -e is off inside, nginx_stop tolerates dead processes)
trap 'stop_all || true' EXIT

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
# The update adds a program, as a feature update would.
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

say "3. fota-pack: full package, A/B delta, in-place delta (256 KiB chunks)"
pack() { # OUTFILE [fota-pack options...]
  local o=$1; shift
  "$BIN/fota-pack" --to "$OUT/new.img" --key "$OUT/pki/signer-ec.key" --cert "$OUT/pki/signer-ec.pem" \
    --chain "$OUT/pki/chain.pem" --name demo-firmware --version 1.1 --from-version 1.0 \
    --device-model FOTA-DEMO-1 --security-version 1 --priority high --install-message "Security update 1.1" \
    --chunk-size 256K --quiet "$@" -o "$o"
}
pack "$OUT/demo.fota" --json >"$OUT/pack.json"
pack "$OUT/www/demo-delta.fota" --from "$OUT/old.img"
pack "$OUT/demo-inplace.fota" --from "$OUT/old.img" --mode inplace
for f in demo.fota www/demo-delta.fota demo-inplace.fota; do printf '   %9d bytes  %s\n' "$(stat -c %s "$OUT/$f")" "$f"; done

say "4. fota-verify"
"$BIN/fota-verify" --quiet --trust "$OUT/pki/root.pem" --output "$OUT/rebuilt.img" "$OUT/demo.fota"
cmp "$OUT/rebuilt.img" "$OUT/new.img" && echo "   full package: valid, and rebuilds exactly new.img"
for k in www/demo-delta demo-inplace; do
  "$BIN/fota-verify" --quiet --trust "$OUT/pki/root.pem" --source "$OUT/old.img" --output "$OUT/rebuilt.img" "$OUT/$k.fota"
  cmp "$OUT/rebuilt.img" "$OUT/new.img" && echo "   ${k#www/}: valid, and turns old.img into exactly new.img"
done
rm -f "$OUT/rebuilt.img"

say "5. the auditor's recipe: stock tar, openssl, sha256sum, zstd only (docs/auditors.md)"
sh contrib/audit/fota-audit-stock.sh "$OUT/demo.fota" "$OUT/pki/root.pem" | sed 's/^/   /'

say "6. a handset on 1.0 updates over HTTP: nginx on 127.0.0.1, fault-proxy in between"
DEV=$OUT/device
cp "$OUT/old.img" "$DEV/slot_a.img"                  # running 1.0
head -c $((24 << 20)) /dev/urandom >"$DEV/slot_b.img"   # the inactive slot: old contents
cat >"$DEV/agent.conf" <<CONF
[device]
mode = ab
slot_a = $DEV/slot_a.img
slot_b = $DEV/slot_b.img
active_slot = a
switch_command = echo "\$FOTA_SLOT" >$DEV/bootslot
model = FOTA-DEMO-1
security_version = 1
[agent]
state_dir = $DEV/state
trust = $OUT/pki/root.pem
[download]
retry_window_minutes = 1
backoff_base_seconds = 1
backoff_max_seconds = 2
mode = store
CONF
nginx_start "$OUT/www"
PKG=$(stat -c %s "$OUT/www/demo-delta.fota")
IMG=$(stat -c %s "$OUT/new.img")
# request 1 is the head (manifest + signature and the first payloads); request 2 brings
# more payloads and is cut after 16384 bytes; its retry gets a 503; the next one resumes.
"$BIN/fault-proxy" --upstream "$NGINX_PORT" --port-file "$WORK/proxy.port" --log "$OUT/proxy.log" \
  --fault 'req=2:drop-after=16384' --fault 'req=3:status=503' --max-seconds 100 >/dev/null &
PROXY_PID=$!
PIDS="$NGINX_PID $PROXY_PID"
for _ in $(seq 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.05; done
URL=http://127.0.0.1:$(cat "$WORK/proxy.port")/demo-delta.fota
echo "   nginx on 127.0.0.1:$NGINX_PORT serves $PKG bytes; the device fetches $URL"
echo "   faults: the 2nd request is cut after 16384 bytes, the 3rd answers 503"

A=("$BIN/fota-agent" -c "$DEV/agent.conf")
tu0=$(date +%s.%N)
# as an OMA DM client would start it: FUMO DownloadAndUpdate with the server's correlator
"${A[@]}" download-and-update --correlator demo-0001 --pkg-name demo-firmware --pkg-version 1.1 "$URL" \
  2>"$OUT/agent-1.log" &
AGENT_PID=$!
PIDS="$PIDS $AGENT_PID"
# The "power cut": once the journal says the apply is in progress and the agent has
# reported about a third of the chunks applied, SIGKILL. A process kill, not a real power
# loss (the page cache survives it); the storage-level power-cut proof is `make powercut`
# and the agent/powercut unit suite. The apply of 96 chunks takes well under a second, so
# this loop forks nothing: it follows the agent's log on fd 3, reads the one-line journal
# with the read builtin, and waits 2 ms at a time on a FIFO nobody writes.
jphase() { sed -n 's/.*"phase":"\([a-z]*\)".*/\1/p' "$DEV/state/journal" 2>/dev/null; }
applied() { grep -o 'chunk [0-9]*/[0-9]* applied' "$OUT/agent-1.log" | tail -1 | awk -F'[ /]' 'END { print $2 + 0, $3 + 0 }'; }
mkfifo "$WORK/tick"; exec 4<>"$WORK/tick" 3<"$OUT/agent-1.log"
cut_at= k=0 n=0 part= j=
while kill -0 "$AGENT_PID" 2>/dev/null; do
  while IFS= read -r -u 3 line; do
    line=$part$line part=
    case $line in *"chunk "*/*" applied") line=${line##*chunk } line=${line% applied}; k=${line%/*} n=${line#*/} ;; esac
  done
  part=$part$line                     # a line still being written
  { IFS= read -r j <"$DEV/state/journal"; } 2>/dev/null || true
  if [[ $j == *'"phase":"applying"'* ]] && [ "$n" -gt 0 ] && [ "$k" -ge $((n / 3)) ]; then
    kill -KILL "$AGENT_PID" 2>/dev/null && cut_at=$k
    break
  fi
  read -r -t 0.002 -u 4 _ || true
done
exec 3<&- 4<&-
wait "$AGENT_PID" 2>/dev/null && rc1=0 || rc1=$?
AGENT_PID=
sed -n 's/^fota-agent: \(..*\)/   agent: \1/p' "$OUT/agent-1.log" | grep -vE 'chunk [0-9]+/[0-9]+ (downloaded|applied)' || true
read -r k n < <(applied)
[ -n "$cut_at" ] && cut_at=$k     # the last chunk the agent reported before the signal landed
echo "   agent: chunk 1/$n .. $k/$n applied"
phase=$(jphase)
if [ -n "$cut_at" ] && [ "$phase" = applying ]; then
  jck=$(sed -n 's/.*"ap_next":\([0-9]*\).*/\1/p' "$DEV/state/journal")
  # how far slot b holds the target, chunk by chunk (A/B chunks are in target order)
  held=$(python3 - "$DEV/slot_b.img" "$OUT/new.img" "$n" <<'PY'
import sys
a = open(sys.argv[1], "rb"); b = open(sys.argv[2], "rb"); n = int(sys.argv[3]); cs = 256 << 10; k = 0
while k < n and a.read(cs) == b.read(cs):
    k += 1
print(k)
PY
)
  echo "   POWER CUT (kill -9, standing in for power loss) after chunk $cut_at/$n was applied: exit $rc1"
  echo "   journal: phase '$phase', last checkpoint at chunk $jck/$n; slot b holds chunks 1..$held"
  "${A[@]}" status --json | jq -r '"   status --json: FUMO state \(.state) (\(.state_name)), progress \(.progress)%"' || true
else
  echo "   the kill did not land mid-apply (phase '${phase:-none}', exit $rc1)" >&2
  held=0 jck=0
fi

say "7. reboot: fota-agent resume"
"${A[@]}" resume 2>"$OUT/agent-2.log" && rc2=0 || rc2=$?
tu1=$(date +%s.%N)
sed -n 's/^fota-agent: /   agent: /p' "$OUT/agent-2.log" | grep -vE 'chunk [0-9]+/[0-9]+ applied' || true
echo "   resume exit $rc2; slot-switch hook chose slot $(cat "$DEV/bootslot" 2>/dev/null || echo '(none)')"
ok=1
cmp "$DEV/slot_b.img" "$OUT/new.img" && echo "   slot b is byte-identical to new.img" || ok=0
cmp "$DEV/slot_a.img" "$OUT/old.img" && echo "   slot a (the running 1.0) was never written" || ok=0
[ "$rc2" -eq 0 ] || ok=0
[ -n "$cut_at" ] || ok=0

say "8. the agent's report"
if "$BIN/fota-agent" --help 2>&1 | grep -qE '^ +report'; then
  echo "   fota-agent report --json (the FUMO Generic Alert):"
  "${A[@]}" report --json | { jq . 2>/dev/null || cat; } | sed 's/^/   /'
  echo "   fota-agent report --syncml (what the DM client sends):"
  "${A[@]}" report --syncml 2>/dev/null | sed 's/^/   /' || true
else
  echo "   (this build has no FUMO 'report' command yet; fota-agent status --json:)"
  "${A[@]}" status --json | { jq . 2>/dev/null || cat; } | sed 's/^/   /'
fi

stop_all || true
say "summary"
served=$(nginx_bytes_sent)
got=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^sent=/) s += substr($i, 6) } END { print s + 0 }' "$OUT/proxy.log")
reqs=$(wc -l <"$OUT/proxy.log")
full=$(stat -c %s "$OUT/demo.fota")
awk -v i="$IMG" -v p="$PKG" -v f="$full" -v s="$served" -v g="$got" -v r="$reqs" 'BEGIN {
  printf "   image %d bytes; full package %d (%.1f%%); A/B delta package %d (%.2f%%)\n", i, f, 100*f/i, p, 100*p/i
  printf "   sent by nginx %d bytes, delivered to the device %d, in %d requests: %.2f%% of the full image\n", s, g, r, 100*s/i }'
drops=$(grep -c 'end=dropped' "$OUT/proxy.log" || true); errs=$(grep -c 'status=5[0-9][0-9]' "$OUT/proxy.log" || true)
echo "   download: $drops dropped connection(s) and $errs 5xx answer(s); each retry resumed from the last byte received"
echo "   apply: cut after chunk $cut_at/$n; resume started from the journal's chunk $jck, found chunks $((jck + 1))..$held already in slot b (hash-checked, not rewritten), wrote $((n - held))"
echo "   update (download, kill, resume) took $(echo "$tu1 $tu0" | awk '{ printf "%.1f", $1 - $2 }')s; demo took $(elapsed "$t0")s"
echo "   files: $OUT"
left=$(pgrep -f "$OUT" || true)
for p in $PIDS; do if kill -0 "$p" 2>/dev/null; then left="$left $p"; fi; done
if [ -n "$left" ]; then echo "   processes left running: $left" >&2; ok=0; else echo "   no process left running"; fi
trap - EXIT
if [ "$ok" -eq 1 ]; then echo "   DEMO OK"; else echo "   DEMO FAILED" >&2; exit 1; fi
