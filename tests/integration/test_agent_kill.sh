#!/usr/bin/env bash
# Integration: the real fota-agent killed with SIGKILL at random moments of download and
# apply, many times, then `resume` must reach the exact target: A/B and in-place, over
# file:// and over HTTP from an nginx this test starts on 127.0.0.1. Bandwidth: after N
# interruptions nginx has sent at most the package size plus N x 64 KiB (sum of
# $body_bytes_sent in its access log). Also: bad input refused with nothing written, and
# configuration / state_dir errors with clear messages.
# KILLS (default 20 per variant) sets how many kills each variant tries.
. "$(dirname "$0")/lib.sh"

AGENT=$FOTA_BIN/fota-agent
if [ ! -x "$AGENT" ]; then fail "fota-agent built" "$AGENT missing"; exit 0; fi
KILLS=${KILLS:-20}
test_pki

# ---- images and packages ----
python3 - "$WORK" <<'PY'
import random, sys
w = sys.argv[1]
r = random.Random(7)
src = bytearray()
for i in range(96):                      # 6 MiB: random blocks, text, zeros
    k = i % 3
    src += r.randbytes(65536) if k == 0 else (b"fota string table entry %d " % i) * (65536 // 28) + b"\0" * (65536 % 28) if k == 1 else bytes(65536)
dst = src[:500000] + src[540000:3000000] + r.randbytes(60000) + src[2980000:]   # data moves backward and forward
dst = bytearray(dst)
for i in range(0, len(dst), 9001):
    dst[i] ^= 0x5a
open(w + "/src.img", "wb").write(src)
open(w + "/dst.img", "wb").write(dst)
PY
SIZE=$(stat -c %s "$WORK/dst.img")
sign="--key $PKI/signer-ec.key --cert $PKI/signer-ec.pem --chain $PKI/chain.pem"
common="$sign --chunk-size 64K --device-model HX-100 --security-version 2 --roaming allow --level 3 --quiet"
WWW=$WORK/www; mkdir -p "$WWW"
check "pack: A/B full package" fota-pack --to "$WORK/dst.img" $common -o "$WWW/full.fota"
check "pack: in-place delta package" fota-pack --from "$WORK/src.img" --to "$WORK/dst.img" --mode inplace --scratch-max 2M $common -o "$WWW/inplace.fota"
check "pack: A/B delta package" fota-pack --from "$WORK/src.img" --to "$WORK/dst.img" $common -o "$WWW/delta.fota"
check "pack: package for another model" fota-pack --to "$WORK/dst.img" $sign --chunk-size 256K --device-model OTHER --level 3 --quiet -o "$WWW/other.fota"
check "pack: package from an untrusted signer" fota-pack --to "$WORK/dst.img" --key "$PKI/other-signer.key" --cert "$PKI/other-signer.pem" --chunk-size 256K --device-model HX-100 --level 3 --quiet -o "$WWW/untrusted.fota"
# a corrupt chunk: flip one byte in the middle of the package's last payload
cp "$WWW/full.fota" "$WWW/corrupt.fota"
python3 - "$WWW/corrupt.fota" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
b[len(b) - 1024 - 4000] ^= 1
open(p, "wb").write(b)
PY

# ---- nginx on a free port, as this user, everything in a temp dir ----
NG=$WORK/nginx; mkdir -p "$NG/tmp"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user_line=""; [ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$NG/nginx.conf" <<NGX
$user_line
daemon off;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 64; }
http {
  log_format bytes '\$body_bytes_sent \$status "\$http_range"';
  access_log $NG/access.log bytes;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  sendfile off;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$PORT sndbuf=16k;
    root $WWW;
    limit_rate 2m;
    location /flaky/ { return 503; }
    location /slow/ { alias $WWW/; limit_rate 300; }
  }
}
NGX
nginx -p "$NG" -c "$NG/nginx.conf" &
NGPID=$!
trap 'kill $NGPID 2>/dev/null; wait $NGPID 2>/dev/null; rm -rf "$WORK"' EXIT
for i in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/full.fota" -r 0-0 && break
  sleep 0.1
done
: >"$NG/access.log"
curl -s -r 0-0 -o /dev/null "http://127.0.0.1:$PORT/full.fota" && pass "nginx serves on 127.0.0.1:$PORT" || { fail "nginx starts" "$(tail -3 "$NG/error.log")"; exit 1; }

# ---- a device: config + slots + state_dir ----
# mkdev NAME MODE DLMODE -> $WORK/NAME/agent.conf
mkdev() {
  local d=$WORK/$1 mode=$2 dl=$3 dev
  rm -rf "$d"; mkdir -p "$d/state"
  if [ "$mode" = ab ]; then
    cp "$WORK/src.img" "$d/a.img"; head -c $((SIZE + 65536)) /dev/urandom >"$d/b.img"
    dev=("device.slot_a=$d/a.img" "device.slot_b=$d/b.img" device.active_slot=a
         "device.switch_command=echo \$FOTA_SLOT > $d/switched")
  else
    cp "$WORK/src.img" "$d/part.img"; truncate -s $((SIZE + 65536)) "$d/part.img"
    head -c $((4 << 20)) /dev/zero >"$d/scratch.img"
    dev=("device.target=$d/part.img" "device.scratch=$d/scratch.img")
  fi
  agent_conf "$d/agent.conf" "$d" "device.mode=$mode" "${dev[@]}" device.security_version=1 "download.mode=$dl" \
    download.receive_buffer_bytes=16384 || fail "agent_conf $1"
}

# wait_steps PID DIR N: until the device showed progress N times (the journal, the
# download cache or the slot/partition changed), the process ended, or 5 s
progress() { stat -c '%y %s' "$1"/state/* "$1"/*.img 2>/dev/null | md5sum; }
wait_steps() {
  local pid=$1 d=$2 n=$3 c=0 t=0 last cur
  last=$(progress "$d")
  while [ "$c" -lt "$n" ] && [ "$t" -lt 2500 ] && kill -0 "$pid" 2>/dev/null; do
    cur=$(progress "$d")
    if [ "$cur" != "$last" ]; then c=$((c + 1)); last=$cur; fi
    sleep 0.002; t=$((t + 1))
  done
}
# jphase DIR: the journal's phase, read directly (no lock)
jphase() { sed -n 's/.*"phase":"\([a-z]*\)".*/\1/p' "$1/state/journal" 2>/dev/null; }
# wait_phase PID DIR PHASE: until the journal reaches PHASE or a later one, the process
# ended, or 5 s
wait_phase() {
  local pid=$1 d=$2 want=$3 t=0 p
  while [ "$t" -lt 2500 ] && kill -0 "$pid" 2>/dev/null; do
    p=$(jphase "$d")
    case "$want:$p" in
      downloading:downloading | downloading:downloaded | downloading:applying | downloading:applied | downloading:done) return ;;
      applying:applying | applying:applied | applying:done) return ;;
    esac
    sleep 0.002; t=$((t + 1))
  done
}
phase() { "$AGENT" -c "$1" status --json 2>/dev/null | sed -n 's/.*"phase":"\([a-z]*\)".*/\1/p'; }
served() { awk '{s += $1} END {print s + 0}' "$NG/access.log"; }

# kill_run NAME MODE DLMODE URL: start, kill -9 at random moments, resume to the end.
kill_run() {
  local name=$1 mode=$2 dl=$3 url=$4 d=$WORK/$1
  mkdev "$name" "$mode" "$dl"
  local conf=$d/agent.conf pkgsize
  pkgsize=$(stat -c %s "$WWW/${url##*/}")
  : >"$NG/access.log"
  local kills=0 i pid st seen=""
  for i in $(seq "$KILLS"); do
    st=$(phase "$conf")
    [ "$st" = done ] && break
    if [ -z "$st" ] || [ "$st" = idle ]; then
      "$AGENT" -q -c "$conf" download-and-update "$url" >/dev/null 2>&1 &
    else
      "$AGENT" -q -c "$conf" resume >/dev/null 2>&1 &
    fi
    pid=$!
    # the first half of the kills aims at the download, the second at the apply: wait
    # until the journal says so (or the job moved past it), then for 0-2 more signs of
    # progress (journal, download cache or slot changed) and 0-9 ms more
    if [ "$i" -le $((KILLS / 2)) ]; then want=downloading; else want=applying; fi
    wait_phase "$pid" "$d" "$want"
    [ "$want" = downloading ] && wait_steps "$pid" "$d" $((RANDOM % 3))
    sleep "0.00$((RANDOM % 10))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null
    seen="$seen $(phase "$conf")"
  done
  echo "  $name: phases after each kill:$(echo "$seen" | tr ' ' '\n' | sort | uniq -c | awk '{printf " %s x%s", $2, $1}')"
  # phases are checked per mode over all its variants (at the end): a fast variant may
  # finish a phase between two polls
  eval "seen_$mode=\"\${seen_$mode:-} \$seen\""
  st=$(phase "$conf")
  if [ -z "$st" ] || [ "$st" = idle ]; then "$AGENT" -q -c "$conf" download-and-update "$url" >/dev/null 2>&1; fi
  expect_rc "$name: resume after $kills kills exits 0" 0 "$AGENT" -q -c "$conf" resume
  [ "$(phase "$conf")" = done ] && pass "$name: job done" || fail "$name: job done" "phase $(phase "$conf")"
  local out=$d/b.img; [ "$mode" = inplace ] && out=$d/part.img
  cmp -s -n "$SIZE" "$out" "$WORK/dst.img" && pass "$name: target is byte-exact after $kills kills" \
    || fail "$name: target is byte-exact after $kills kills"
  if [ "$mode" = ab ]; then
    cmp -s "$d/a.img" "$WORK/src.img" && pass "$name: active slot untouched" || fail "$name: active slot untouched"
    [ "$(cat "$d/switched" 2>/dev/null)" = b ] && pass "$name: switch hook ran for slot b" || fail "$name: switch hook ran"
  fi
  expect_rc "$name: resume again does nothing" 0 "$AGENT" -q -c "$conf" resume
  [ "$kills" -ge $((KILLS / 3)) ] && pass "$name: at least $((KILLS / 3)) kills landed ($kills)" || fail "$name: at least $((KILLS / 3)) kills landed" "$kills"
  case $url in
    http*)
      local sent budget
      sent=$(served); budget=$((pkgsize + kills * 65536))
      echo "  $name: package $pkgsize bytes, $kills interruptions, nginx sent $sent bytes, budget $budget"
      [ "$sent" -le "$budget" ] && pass "$name: bandwidth: sent $sent <= package $pkgsize + $kills x 64 KiB" \
        || fail "$name: bandwidth" "sent $sent > $budget"
      ;;
  esac
}

H=http://127.0.0.1:$PORT
kill_run ab-http ab store "$H/full.fota"
kill_run ab-file-stream ab stream "file://$WWW/full.fota"
kill_run ab-delta-http-stream ab stream "$H/delta.fota"
kill_run inplace-http inplace store "$H/inplace.fota"
kill_run inplace-file-stream inplace stream "file://$WWW/inplace.fota"

for mode in ab inplace; do
  eval "all=\${seen_$mode:-}"
  # A small package can finish downloading between two polls, so a kill that found the
  # job "downloaded" (not yet applying) also counts as interrupting the download side.
  # Whether a kill lands before the apply depends on how fast this machine downloads a
  # small package (under sanitizers it often never does), so it is reported, not asserted;
  # the ab variants (2 MB at 2 MB/s) do exercise killed downloads.
  case "$all" in *downloading* | *downloaded*) echo "  $mode: some kills landed before the apply began" ;;
    *) echo "  NOTE: $mode: no kill landed before the apply began on this run" ;; esac
  case "$all" in *applying* | *applied*) pass "$mode: kills landed while applying" ;; *) fail "$mode: kills landed while applying" "$all" ;; esac
done

# ---- bad input: refused, nothing written to the inactive slot ----
refuse() { # NAME URL RC NEEDLE
  mkdev bad ab store
  local d=$WORK/bad before
  before=$(sha256sum <"$d/b.img")
  "$AGENT" -q -c "$d/agent.conf" download-and-update "$2" >"$WORK/.out" 2>&1
  local rc=$?
  [ "$rc" -eq "$3" ] && grep -q "$4" "$WORK/.out" && pass "$1: exit $3, says '$4'" || fail "$1" "exit $rc: $(cat "$WORK/.out")"
  [ "$(sha256sum <"$d/b.img")" = "$before" ] && pass "$1: inactive slot untouched" || fail "$1: inactive slot untouched"
}
refuse "another model" "$H/other.fota" 6 "OTHER"
refuse "untrusted signer" "$H/untrusted.fota" 5 "package"
refuse "corrupt chunk" "$H/corrupt.fota" 8 "sha256"
refuse "missing package (404)" "$H/nope.fota" 10 "404"
refuse "malformed URL" "gopher://x/y" 10 "scheme"

# ---- configuration and state_dir errors ----
mkdev cfg ab store
C=$WORK/cfg/agent.conf
sed 's/^model = .*/model = HX-100\ncolour = blue/' "$C" >"$WORK/unknown.conf"
expect_rc "unknown key -> exit 3" 3 "$AGENT" -c "$WORK/unknown.conf" status
grep -q "\[device\] colour: unknown key" "$WORK/.out" && pass "unknown key named" || fail "unknown key named" "$(cat "$WORK/.out")"
grep -v '^trust' "$C" >"$WORK/missing.conf"
expect_rc "missing key -> exit 3" 3 "$AGENT" -c "$WORK/missing.conf" status
grep -q "\[agent\] trust: missing" "$WORK/.out" && pass "missing key named" || fail "missing key named" "$(cat "$WORK/.out")"
sed "s|^state_dir = .*|state_dir = $WORK/no/such/dir|" "$C" >"$WORK/nostate.conf"
expect_rc "missing state_dir -> exit 4" 4 "$AGENT" -c "$WORK/nostate.conf" resume
grep -q "state_dir $WORK/no/such/dir" "$WORK/.out" && pass "missing state_dir named" || fail "missing state_dir named" "$(cat "$WORK/.out")"
: >"$WORK/afile"
sed "s|^state_dir = .*|state_dir = $WORK/afile|" "$C" >"$WORK/filestate.conf"
expect_rc "state_dir is a file -> exit 4" 4 "$AGENT" -c "$WORK/filestate.conf" resume
expect_rc "no config -> exit 3" 3 "$AGENT" -c "$WORK/none.conf" status
expect_rc "unknown command -> exit 2" 2 "$AGENT" -c "$C" frobnicate
expect_rc "update with nothing downloaded -> exit 11" 11 "$AGENT" -c "$C" update
"$AGENT" --help | grep -q "13  busy" && pass "--help lists the exit codes" || fail "--help lists the exit codes"
# a second agent on the same state_dir is refused while one runs
mkdev busy ab store
"$AGENT" -q -c "$WORK/busy/agent.conf" download "$H/slow/full.fota" & bpid=$!
sleep 0.3
expect_rc "concurrent agent -> exit 13" 13 "$AGENT" -c "$WORK/busy/agent.conf" resume
kill -9 $bpid; wait $bpid 2>/dev/null
# retries: a server answering 503 makes the job fail at the end of its window
mkdev flaky ab store
sed -i 's/^retry_window_minutes = .*/retry_window_minutes = 0/' "$WORK/flaky/agent.conf"
expect_rc "server errors until the window ends -> exit 10" 10 "$AGENT" -c "$WORK/flaky/agent.conf" download "$H/flaky/full.fota"
grep -q "retry window" "$WORK/.out" && pass "window exhaustion is named" || fail "window exhaustion is named" "$(cat "$WORK/.out")"
# low-speed abort: 300 bytes/s against a 1000 bytes/s floor for 1 s, no retry window
mkdev slow ab store
sed -i 's/^retry_window_minutes = .*/retry_window_minutes = 0/' "$WORK/slow/agent.conf"
printf 'low_speed_limit_bytes = 1000\nlow_speed_time_seconds = 1\n' >>"$WORK/slow/agent.conf"
t0=$(date +%s)
expect_rc "a crawling server is aborted (low-speed limit) -> exit 10" 10 "$AGENT" -c "$WORK/slow/agent.conf" download "$H/slow/full.fota"
t1=$(date +%s)
grep -qi "too slow" "$WORK/.out" && [ $((t1 - t0)) -le 10 ] && pass "low-speed abort named, within 10 s" \
  || fail "low-speed abort named, within 10 s" "$(($t1 - $t0)) s: $(cat "$WORK/.out")"
# the test clock: 2 minutes of backoff against a closed port, without waiting for them
mkdev clock ab store
echo 1893456000000 >"$WORK/clock.ms"
t0=$(date +%s)
export FOTA_AGENT_TEST_CLOCK=$WORK/clock.ms
expect_rc "closed port for the whole retry window (test clock) -> exit 10" 10 \
  "$AGENT" -c "$WORK/clock/agent.conf" download "http://127.0.0.1:1/pkg.fota"
unset FOTA_AGENT_TEST_CLOCK
t1=$(date +%s)
elapsed_ms=$(( $(cat "$WORK/clock.ms") - 1893456000000 ))
[ "$elapsed_ms" -gt 60000 ] && [ "$elapsed_ms" -le 120000 ] && [ $((t1 - t0)) -le 5 ] \
  && pass "backoff slept ${elapsed_ms} ms of test time within the 2 min window, in $((t1 - t0)) s" \
  || fail "test clock backoff" "slept $elapsed_ms ms in $((t1 - t0)) s"
grep -c "retry" "$WORK/.out" | { read -r n; [ "$n" -ge 5 ] && pass "retries logged ($n)" || fail "retries logged" "$n"; }
