#!/usr/bin/env bash
# Integration (issue 7, "Network faults against a real server"): the real fota-agent
# downloads and applies an A/B package from an nginx on 127.0.0.1 through the
# fault-injecting proxy (tests/proxy/fault-proxy.c), one scenario per fault and some
# combinations. Each scenario must end with the exact target image in the inactive slot,
# or fail with the right exit code (and, once `fota-agent report --json` exists, the
# right FUMO result code) with the inactive slot unchanged: no corrupted chunk is ever
# applied, and the active slot is never written. Backoff runs on the agent's test clock
# (FOTA_AGENT_TEST_CLOCK), so minutes of retry window pass in no time; a stall is cut by
# the low-speed limit (1000 bytes/s for 1 s) in real time.
# Ends with one table: scenario | outcome | FUMO result | bytes the proxy sent | bytes
# nginx sent | package size.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

AGENT=$FOTA_BIN/fota-agent
PROXY=$FOTA_BIN/fault-proxy
need_bins "$AGENT" "$PROXY" "$FOTA_BIN/fota-pack"
test_pki

# ---- images and packages: 2 MiB, 64 KiB chunks ----
python3 - "$WORK" <<'PY'
import random, sys
w = sys.argv[1]
r = random.Random(11)
src = bytearray()
for i in range(32):                      # random blocks, text, zeros
    k = i % 3
    src += r.randbytes(65536) if k == 0 else (b"fota net fault table %d " % i) * (65536 // 24) + b"\0" * (65536 % 24) if k == 1 else bytes(65536)
dst = bytearray(src[:300000] + r.randbytes(50000) + src[350000:])
for i in range(0, len(dst), 7001):
    dst[i] ^= 0x33
open(w + "/src.img", "wb").write(src)
open(w + "/dst.img", "wb").write(dst)
PY
SIZE=$(stat -c %s "$WORK/dst.img")
WWW=$WORK/www; mkdir -p "$WWW"
sign="--key $PKI/signer-ec.key --cert $PKI/signer-ec.pem --chain $PKI/chain.pem"
check "pack: A/B full package" fota-pack --to "$WORK/dst.img" $sign --chunk-size 64K --device-model HX-100 \
  --security-version 2 --roaming allow --level 3 --quiet -o "$WWW/full.fota"
PKG=$(stat -c %s "$WWW/full.fota")
# the same package republished: same bytes, another mtime, so nginx gives another ETag
cp "$WWW/full.fota" "$WWW/republished.fota"
touch -d '2020-01-02 03:04:05' "$WWW/republished.fota"
# a file offset inside the 10th payload's data (found from the ustar headers), for a
# server that always corrupts it
read -r FLIP_AT _ <<<"$(member_at "$WWW/full.fota" 11)"
[ -n "$FLIP_AT" ] || { fail "payload offset for the corrupt server"; exit 1; }

nginx_start "$WWW" || { fail "nginx starts"; exit 1; }
pass "nginx serves on 127.0.0.1:$NGINX_PORT"

# ---- proxy control: proxy_start, proxy_stop, proxy_sent (tests/proxy/proxy.sh) ----
. "$FOTA_TOP/tests/proxy/proxy.sh"

# The FUMO result of the last job, once the agent has `report --json` (issue 6).
HAVE_REPORT=0
"$AGENT" --help 2>/dev/null | grep -qE '^ +report' && HAVE_REPORT=1
fumo_result() {
  [ "$HAVE_REPORT" = 1 ] || { echo n/a; return; }
  "$AGENT" -c "$1" report --json 2>/dev/null | sed -n 's/.*"result" *: *\([0-9]*\).*/\1/p' | head -1
}
phase() { "$AGENT" -c "$1" status --json 2>/dev/null | sed -n 's/.*"phase" *: *"\([a-z]*\)".*/\1/p'; }

# ---- a device ----
mkdev() {                  # mkdev DIR DLMODE WINDOW_MINUTES
  local d=$1
  rm -rf "$d"; mkdir -p "$d/state"
  cp "$WORK/src.img" "$d/a.img"
  head -c $((SIZE + 65536)) /dev/urandom >"$d/b.img"
  agent_conf "$d/agent.conf" "$d" device.mode=ab "device.slot_a=$d/a.img" "device.slot_b=$d/b.img" device.active_slot=a \
    "device.switch_command=echo \$FOTA_SLOT > $d/switched" device.security_version=1 "download.retry_window_minutes=$3" \
    download.backoff_max_seconds=4 "download.mode=$2" download.low_speed_limit_bytes=1000 \
    download.low_speed_time_seconds=1 download.connect_timeout_seconds=2 || fail "agent_conf $d"
}

TABLE=$WORK/table
printf '%-34s | %-26s | %-4s | %9s | %9s | %9s\n' scenario outcome FUMO proxy-sent nginx-sent package >"$TABLE"
printf '%s\n' "-----------------------------------|----------------------------|------|-----------|-----------|----------" >>"$TABLE"

# scenario NAME WANT_EXIT WANT_FUMO DLMODE WINDOW PATH [--fault RULE]... [-- GREP]
# WANT_EXIT 0: the slot must hold the exact target; else it must be unchanged.
# PATH: the package path on the server, or "closed" for a port nobody listens on.
scenario() {
  local name=$1 want=$2 want_fumo=$3 dl=$4 win=$5 path=$6; shift 6
  local rules=() needle=""
  while [ $# -gt 0 ]; do
    case $1 in
      --) needle=$2; shift 2 ;;
      *) rules+=("$1"); shift ;;
    esac
  done
  local d=$WORK/dev-$name
  mkdev "$d" "$dl" "$win"
  local before url
  before=$(sha256sum <"$d/b.img")
  nginx_log_reset
  if [ "$path" = closed ]; then
    PLOG=$WORK/proxy.closed.log; : >"$PLOG"
    url="http://127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')/full.fota"
  else
    proxy_start "${rules[@]}" || { fail "$name: proxy starts" "$(cat "$WORK/proxy.err")"; return; }
    url="http://127.0.0.1:$PROXY_PORT$path"
  fi
  echo 1893456000000 >"$d/clock.ms"
  local t0 t1 rc
  t0=$(date +%s%N)
  FOTA_AGENT_TEST_CLOCK=$d/clock.ms "$AGENT" -c "$d/agent.conf" download-and-update "$url" >"$d/out" 2>&1
  rc=$?
  t1=$(date +%s%N)
  proxy_stop
  sleep 0.1                # nginx logs a response just after sending it
  local ph fumo sent nsent outcome
  ph=$(phase "$d/agent.conf")
  fumo=$(fumo_result "$d/agent.conf")
  sent=$(proxy_sent)
  nsent=$(nginx_bytes_sent)
  if [ "$rc" -eq 0 ]; then
    outcome="ok ($(proxy_reqs) req, $(( (t1 - t0) / 1000000 )) ms)"
  else
    outcome="exit $rc ($(grep -o '(exit [0-9]*, [a-z-]*)' "$d/out" | tail -1 | sed 's/(exit [0-9]*, \(.*\))/\1/'))"
  fi
  printf '%-34s | %-26s | %-4s | %9s | %9s | %9s\n' "$name" "$outcome" "${fumo:--}" "$sent" "$nsent" "$PKG" >>"$TABLE"

  if [ "$rc" -eq "$want" ]; then pass "$name: exit $want"; else fail "$name: exit $want" "exit $rc: $(tail -3 "$d/out" | tr '\n' ' ')"; fi
  if [ "$want" -eq 0 ]; then
    cmp -s -n "$SIZE" "$d/b.img" "$WORK/dst.img" && pass "$name: inactive slot is the exact target" \
      || fail "$name: inactive slot is the exact target"
    [ "$ph" = done ] && pass "$name: job done" || fail "$name: job done" "phase '$ph'"
    [ "$(cat "$d/switched" 2>/dev/null)" = b ] && pass "$name: slot switched to b" || fail "$name: slot switched to b"
  else
    [ "$(sha256sum <"$d/b.img")" = "$before" ] && pass "$name: inactive slot unchanged (sha256)" \
      || fail "$name: inactive slot unchanged (sha256)"
    [ "$ph" = failed ] && pass "$name: job failed" || fail "$name: job failed" "phase '$ph'"
    [ ! -e "$d/switched" ] && pass "$name: no slot switch" || fail "$name: no slot switch"
  fi
  cmp -s "$d/a.img" "$WORK/src.img" && pass "$name: active slot untouched" || fail "$name: active slot untouched"
  if [ -n "$needle" ]; then
    grep -q -- "$needle" "$d/out" && pass "$name: agent says '$needle'" || fail "$name: agent says '$needle'" "$(tail -3 "$d/out" | tr '\n' ' ')"
  fi
  if [ "$HAVE_REPORT" = 1 ]; then
    [ "$fumo" = "$want_fumo" ] && pass "$name: FUMO result $want_fumo" || fail "$name: FUMO result $want_fumo" "got '$fumo'"
  fi
  # bandwidth: a fault costs at most what it cut off plus a chunk; a run that starts
  # over may fetch the package twice
  if [ "$want" -eq 0 ] && [ "$path" != closed ]; then
    local budget=$((PKG * 2 + 1048576))
    [ "$nsent" -le "$budget" ] && pass "$name: nginx sent $nsent <= $budget" || fail "$name: bandwidth" "nginx sent $nsent > $budget"
  fi
}

P=/full.fota
# name                                 exit fumo dl    win path     faults...
scenario baseline                        0  200 store  2  $P
scenario drop-after-100000-req3          0  200 store  2  $P --fault 'req=3:drop-after=100000'
scenario drop-every-request-30000        0  200 store  2  $P --fault 'every:drop-after=30000'
# Stalls here last until the agent gives up (stall=forever on one request): a stall that
# ends on its own could race libcurl's low-speed check past the last byte, which made the
# agent ask for an empty range (fixed in 6ebab21: a range that arrived whole is done; the
# race is not reproducible on demand, so it is not a scenario). make soak keeps finite stalls.
scenario stall-req4-low-speed-abort      0  200 store  2  $P --fault 'req=4:stall=forever:stall-at=1000' -- 'too slow'
scenario http-500-req2-4                 0  200 store  2  $P --fault 'req=2-4:status=500'
scenario http-503-req3-6                 0  200 store  2  $P --fault 'req=3-6:status=503'
# a wrong Content-Range is not used and the range is asked again (a broken proxy or
# cache may answer right next time); on every request it ends with the window (503)
scenario wrong-content-range-req3        0  200 store  2  $P --fault 'req=3:cr-shift=512' -- 'Content-Range'
scenario wrong-content-range-always     10  503 store  2  $P --fault 'req=2-:cr-shift=512' -- 'retry window'
scenario wrong-total-req3-starts-over    0  200 store  2  $P --fault 'req=3:cr-total=99999999' -- 'changed on the server'
scenario truncated-body-req3             0  200 store  2  $P --fault 'req=3:truncate=5000'
scenario flipped-byte-req3-refetched     0  200 store  2  $P --fault 'req=3:flip=rand' -- 'sha256 mismatch'
scenario package-swapped-req6-new-etag   0  200 store  2  $P --fault 'req=6-:swap=/republished.fota' -- 'changed on the server'
scenario stream-drop-flip-swap           0  200 stream 2  $P --fault 'req=3:drop-after=20000' --fault 'req=5:flip=rand' \
  --fault 'req=9-:swap=/republished.fota'
scenario combo-drop-503-trunc-flip-stall 0  200 store  2  $P --fault 'req=2:drop-after=1000' --fault 'req=3-4:status=503' \
  --fault 'req=5:truncate=100' --fault 'req=6:flip=rand' --fault 'req=8:stall=forever' --fault 'req=10:status=500'
scenario corrupt-server-always-flips     8  402 store  2  $P --fault "every:flip-abs=$FLIP_AT" -- 'sha256'
# a byte flipped in the head (manifest or signature) in transit looks like a tampered
# package: the head is fetched once more before the job fails (plain HTTP has no
# integrity of its own); flipped twice, it is refused as a bad signature, nothing written
scenario flipped-byte-in-head-req1       0  200 store  2  $P --fault 'req=1:flip=600' -- 'fetching the package head once more'
scenario flipped-byte-in-head-req1-2     5  404 store  2  $P --fault 'req=1-2:flip=600' -- 'sig'
# a wrong total before the job knows the package's size: the manifest disagrees with it;
# the head is fetched once more (with fresh validators), twice wrong is refused
scenario wrong-total-on-first-request    0  200 store  2  $P --fault 'req=1:cr-total=99999999' -- 'the manifest describes'
scenario wrong-total-on-requests-1-2     8  402 store  2  $P --fault 'req=1-2:cr-total=99999999' -- 'the manifest describes'
scenario http-500-whole-window          10  500 store  2  $P --fault 'every:status=500' -- 'retry window'
scenario http-503-whole-window          10  500 store  2  $P --fault 'req=2-:status=503' -- 'retry window'
scenario stall-forever-timeout          10  407 store  0  $P --fault 'req=2-:stall=forever' -- 'too slow'
scenario unreachable-whole-window       10  412 store  2  closed -- 'retry window'

echo
echo "network fault scenarios (fota-agent through fault-proxy to nginx on 127.0.0.1; package $PKG bytes, image $SIZE bytes):"
cat "$TABLE"
[ "$HAVE_REPORT" = 1 ] || echo "  (FUMO column: 'fota-agent report --json' not available in this build; exit codes and status asserted)"
