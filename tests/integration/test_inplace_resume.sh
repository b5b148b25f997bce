#!/usr/bin/env bash
# Integration: an in-place update that has started writing the partition is never
# abandoned (docs/fota-agent.md, "In-place failure and continuation"). The real
# fota-agent streams an in-place delta package from an nginx on 127.0.0.1:
#   1. the server's file has a corrupt payload (chunk 20): the run fails (exit 8, FUMO
#      402, state 70) with the partition half written; resume fails the same while the
#      file is wrong; cancel is refused; a package with another manifest is refused
#      (exit 9) with the partition unchanged; the file fixed on the server (same signed
#      manifest, new ETag) -> resume completes the exact target, and nginx sends less
#      than the package (only the head and the chunks left);
#   2. through tests/proxy/fault-proxy, every response corrupts the same payload byte in
#      transit: the run fails the same way; download-and-update through a clean proxy
#      (another URL, the same package) completes the exact target;
#   3. the file fixed, the continuing resume is killed with SIGKILL at random moments
#      (KILLS, default 10), then resume reaches the exact target.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

AGENT=$FOTA_BIN/fota-agent
PROXY=$FOTA_BIN/fault-proxy
need_bins "$AGENT" "$PROXY" "$FOTA_BIN/fota-pack"
test_pki

# ---- images (2 MiB; data moves backward and forward) and packages ----
python3 - "$WORK" <<'PY'
import random, sys
w = sys.argv[1]
r = random.Random(5)
src = bytearray()
for i in range(32):
    k = i % 3
    src += r.randbytes(65536) if k == 0 else (b"fota in-place resume %d " % i) * (65536 // 24) + b"\0" * (65536 % 24) if k == 1 else bytes(65536)
dst = bytearray(src[:200000] + src[260000:1500000] + r.randbytes(60000) + src[1500000:])[:len(src)]
for i in range(0, len(dst), 9001):
    dst[i] ^= 0x5a
for c in range(len(dst) // 65536):       # new data in every chunk: payloads of similar size
    dst[c * 65536 + 1000:c * 65536 + 1000 + 16384] = r.randbytes(16384)
other = bytearray(dst)
for i in range(7, len(other), 5003):
    other[i] ^= 0x11
open(w + "/src.img", "wb").write(src)
open(w + "/dst.img", "wb").write(dst)
open(w + "/other.img", "wb").write(other)
PY
SIZE=$(stat -c %s "$WORK/dst.img")
WWW=$WORK/www; mkdir -p "$WWW"
common="--key $PKI/signer-ec.key --cert $PKI/signer-ec.pem --chain $PKI/chain.pem --chunk-size 64K --device-model HX-100 --security-version 2 --roaming allow --level 3 --quiet"
check "pack: in-place delta package" fota-pack --from "$WORK/src.img" --to "$WORK/dst.img" --mode inplace --scratch-max 1M $common -o "$WORK/good.fota"
check "pack: in-place package of another target" fota-pack --from "$WORK/src.img" --to "$WORK/other.img" --mode inplace --scratch-max 1M $common -o "$WWW/other.fota"
PKG=$(stat -c %s "$WORK/good.fota")
# the file offset of a byte inside chunk 20's payload, and the package bytes from
# that payload's header on (members: manifest.json,
# manifest.sig, then one payload per chunk in manifest order)
read -r FLIP_AT REST <<<"$(member_at "$WORK/good.fota" 22)"
[ -n "$REST" ] || { fail "payload offset of chunk 20"; exit 1; }
# the server's file, with that byte corrupt
python3 - "$WORK/good.fota" "$WWW/pkg.fota" "$FLIP_AT" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[int(sys.argv[3])] ^= 0x01
open(sys.argv[2], "wb").write(b)
PY
cp "$WORK/good.fota" "$WWW/same.fota"

# replace_served SRC DEST: put SRC in DEST's place on the server as a new file whose
# mtime differs from the old one's, so nginx's ETag and Last-Modified (both whole
# seconds) change even when the test runs within one second
replace_served() {
  cp "$1" "$2.new" && touch -d "@$(($(stat -c %Y "$2") + 10))" "$2.new" && mv "$2.new" "$2"
}

nginx_start "$WWW" || { fail "nginx starts"; exit 1; }
pass "nginx serves on 127.0.0.1:$NGINX_PORT"
. "$FOTA_TOP/tests/proxy/proxy.sh"

mkdev() {                  # mkdev DIR: the source in the partition, streaming download
  D=$1; C=$1/agent.conf
  rm -rf "$D"; mkdir -p "$D/state"
  cp "$WORK/src.img" "$D/part.img"
  head -c $((2 << 20)) /dev/zero >"$D/scratch.img"
  echo 1893456000000 >"$D/clock"
  agent_conf "$C" "$D" device.mode=inplace "device.target=$D/part.img" "device.scratch=$D/scratch.img" \
    device.security_version=1 download.backoff_max_seconds=4 download.mode=stream download.low_speed_limit_bytes=1000 \
    download.low_speed_time_seconds=2 download.connect_timeout_seconds=2 || fail "agent_conf $D"
}
ag() { FOTA_AGENT_TEST_CLOCK=$D/clock "$AGENT" -c "$C" "$@"; }
field() {                  # field CMD KEY: a key of `status --json` or `report --json`
  ag "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]))' "$2"
}
exact() { cmp -s -n "$SIZE" "$D/part.img" "$WORK/dst.img"; }

# held NAME RC: the run failed with RC and the update is held at chunk 20
held() {
  local name=$1 want=$2 rc=$3
  [ "$rc" = "$want" ] && pass "$name: exit $want" || fail "$name: exit $want" "exit $rc: $(tail -2 "$D/out" | tr '\n' ' ')"
  [ "$(field status phase)" = applying ] && [ "$(field status state)" = 70 ] && [ "$(field status chunks_applied)" = 20 ] \
    && pass "$name: held in 70 at chunk 20 (phase applying)" \
    || fail "$name: held in 70 at chunk 20" "$(field status phase) $(field status state) $(field status chunks_applied)"
}

# ---- 1. the server's file is corrupt, then fixed ----
mkdev "$WORK/dev1"
ag download-and-update "http://127.0.0.1:$NGINX_PORT/pkg.fota" >"$D/out" 2>&1
held "corrupt file" 8 $?
[ "$(field report result)" = 402 ] && pass "corrupt file: Generic Alert 402" || fail "corrupt file: alert 402" "$(field report result)"
grep -q "resume continues it" "$D/out" && pass "corrupt file: the message says resume continues it" \
  || fail "corrupt file: message" "$(tail -1 "$D/out")"
cmp -s "$D/part.img" "$WORK/src.img" && fail "corrupt file: the partition was written" || pass "corrupt file: the partition was written"
exact && fail "corrupt file: not yet the target" || pass "corrupt file: not yet the target"
half=$(sha256sum <"$D/part.img")
ag resume >"$D/out" 2>&1
held "resume, file still corrupt" 8 $?
[ "$(sha256sum <"$D/part.img")" = "$half" ] && pass "resume, file still corrupt: partition unchanged" \
  || fail "resume, file still corrupt: partition unchanged"
expect_rc "cancel refused" 11 ag cancel
ag download-and-update "http://127.0.0.1:$NGINX_PORT/other.fota" >"$D/out" 2>&1
rc=$?
[ $rc = 9 ] && grep -q "only a package with the same signed manifest can complete it" "$D/out" \
  && pass "another manifest: refused (exit 9)" || fail "another manifest: refused (exit 9)" "exit $rc: $(tail -1 "$D/out")"
[ "$(sha256sum <"$D/part.img")" = "$half" ] && pass "another manifest: partition unchanged" \
  || fail "another manifest: partition unchanged"
# the server's file fixed: a new file in its place (new ETag)
replace_served "$WORK/good.fota" "$WWW/pkg.fota"
nginx_log_reset
ag resume >"$D/out" 2>&1
rc=$?
[ $rc = 0 ] && pass "file fixed: resume exit 0" || fail "file fixed: resume exit 0" "exit $rc: $(tail -2 "$D/out" | tr '\n' ' ')"
exact && pass "file fixed: the partition is the exact target" || fail "file fixed: the partition is the exact target"
grep -q "same signed manifest: continuing at chunk 20" "$D/out" && pass "file fixed: the same manifest is taken" \
  || fail "file fixed: the same manifest is taken" "$(grep -c . "$D/out") lines"
[ "$(field status state)" = 100 ] && [ "$(field report result)" = 200 ] && pass "file fixed: state 100, alert 200" \
  || fail "file fixed: state 100, alert 200" "$(field status state) $(field report result)"
# what resume may fetch: the head request (64 KiB), the chunks left, and at most one
# more 64 KiB for the request that found the new ETag
sent=$(nginx_bytes_sent)
bound=$((65536 + REST + 65536))
[ "$sent" -le "$bound" ] && [ "$sent" -lt "$PKG" ] \
  && pass "file fixed: nginx sent $sent <= $bound (head and the chunks left; package $PKG)" \
  || fail "file fixed: nginx sent only the head and the chunks left" "$sent, bound $bound, package $PKG"
ag resume >"$D/out" 2>&1 && exact && pass "resume again: nothing pending" || fail "resume again: nothing pending"

# ---- 2. corrupted in transit on every response, then a clean path ----
mkdev "$WORK/dev2"
proxy_start --fault "every:flip-abs=$FLIP_AT" || { fail "proxy starts" "$(cat "$WORK/proxy.err")"; exit 1; }
ag download-and-update "$URL/same.fota" >"$D/out" 2>&1
held "corrupt in transit" 8 $?
proxy_stop
proxy_start || { fail "clean proxy starts" "$(cat "$WORK/proxy.err")"; exit 1; }
ag download-and-update "$URL/same.fota" >"$D/out" 2>&1
rc=$?
[ $rc = 0 ] && pass "clean path (another URL): exit 0" || fail "clean path (another URL): exit 0" "exit $rc: $(tail -2 "$D/out" | tr '\n' ' ')"
exact && pass "clean path: the partition is the exact target" || fail "clean path: the partition is the exact target"
proxy_stop

# ---- 3. kill -9 during the continuation ----
KILLS=${KILLS:-10}
python3 - "$WORK/good.fota" "$WWW/pkg3.fota" "$FLIP_AT" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[int(sys.argv[3])] ^= 0x01
open(sys.argv[2], "wb").write(b)
PY
mkdev "$WORK/dev3"
ag download-and-update "http://127.0.0.1:$NGINX_PORT/pkg3.fota" >"$D/out" 2>&1
held "kills: corrupt file" 8 $?
replace_served "$WORK/good.fota" "$WWW/pkg3.fota"
kills=0 seen=""
for _ in $(seq "$KILLS"); do
  FOTA_AGENT_TEST_CLOCK=$D/clock "$AGENT" -q -c "$C" resume >/dev/null 2>&1 &
  pid=$!
  sleep "0.0$((RANDOM % 4))$((RANDOM % 10))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  [ $? = 137 ] && kills=$((kills + 1))
  seen="$seen $(field status chunks_applied)"
done
echo "  kills: $kills of $KILLS landed; chunks applied after each:$seen"
[ "$kills" -ge 1 ] && pass "kills: $kills kills landed during the continuation" || fail "kills: a kill landed during the continuation"
ag resume >"$D/out" 2>&1
rc=$?
[ $rc = 0 ] && pass "kills: resume after $kills kills exits 0" || fail "kills: resume after $kills kills exits 0" "exit $rc: $(tail -2 "$D/out" | tr '\n' ' ')"
exact && pass "kills: the partition is the exact target" || fail "kills: the partition is the exact target"
[ "$(field status state)" = 100 ] && pass "kills: state 100" || fail "kills: state 100" "$(field status state)"
