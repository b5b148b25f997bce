#!/usr/bin/env bash
# Integration: fota-agent over https from an nginx with TLS on 127.0.0.1 (nginx.sh,
# NGINX_TLS_CERT/KEY). A throw-away TLS CA and a server certificate for 127.0.0.1 are
# made here with openssl (separate from the package-signing PKI of tests/pki/mkpki.sh).
#   - `[download] ca_bundle = CA`: download + update, store and stream mode, reach the
#     exact target; the active slot is untouched.
#   - an untrusted server certificate (no ca_bundle: the system store does not know the
#     throw-away CA; another CA as ca_bundle; the right CA but a host name the
#     certificate does not name; a ca_bundle file that does not exist) fails at once
#     (no retry window spent) with exit 10 and a message naming the TLS problem, and
#     nothing is written to the target slot or to the download cache.
#   - stream mode, a server that keeps sending one payload corrupt: fetched twice (nginx's
#     log), refused with exit 8, its chunk never written, the active slot untouched.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

AGENT=$FOTA_BIN/fota-agent
if [ ! -x "$AGENT" ]; then fail "fota-agent built" "$AGENT missing"; exit 0; fi
if ! nginx -V 2>&1 | grep -q -- --with-http_ssl_module; then
  fail "nginx has the ssl module" "$(nginx -V 2>&1 | head -1)"; exit 0
fi

# ---- package-signing PKI and a package ----
test_pki
python3 - "$WORK" <<'PY'
import random, sys
w = sys.argv[1]
r = random.Random(11)
src = b"".join(r.randbytes(65536) if i % 2 == 0 else (b"tls test %d " % i) * 5000 for i in range(24))
open(w + "/src.img", "wb").write(src)
dst = bytearray(src[:200000] + r.randbytes(30000) + src[180000:])
for i in range(0, len(dst), 7001):
    dst[i] ^= 0x33
open(w + "/dst.img", "wb").write(dst)
PY
SIZE=$(stat -c %s "$WORK/dst.img")
WWW=$WORK/www; mkdir -p "$WWW"
check "pack: A/B full package" fota-pack --to "$WORK/dst.img" --key "$PKI/signer-ec.key" --cert "$PKI/signer-ec.pem" \
  --chain "$PKI/chain.pem" --chunk-size 64K --device-model HX-100 --level 3 --quiet -o "$WWW/full.fota"

# ---- throw-away TLS PKI: a CA, a server certificate for 127.0.0.1, an unrelated CA ----
T=$WORK/tls; mkdir -p "$T"
mkca() { # NAME CN
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$1.key" -out "$T/$1.pem" \
    -days 2 -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    >/dev/null 2>&1
}
mkca ca "fota test TLS CA" && mkca other-ca "fota test other TLS CA" \
  && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/server.key" -out "$T/server.csr" \
       -subj "/CN=127.0.0.1" >/dev/null 2>&1 \
  && printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >"$T/server.ext" \
  && openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
       -extfile "$T/server.ext" -out "$T/server.pem" >/dev/null 2>&1 \
  && pass "TLS CA and server certificate generated" || { fail "TLS CA and server certificate generated"; exit 1; }
openssl verify -CAfile "$T/ca.pem" "$T/server.pem" >/dev/null 2>&1 && pass "server certificate verifies against the CA" \
  || fail "server certificate verifies against the CA"

export NGINX_TLS_CERT=$T/server.pem NGINX_TLS_KEY=$T/server.key
if ! nginx_start "$WWW"; then fail "nginx with TLS starts"; exit 1; fi
[ "$NGINX_SCHEME" = https ] && pass "nginx serves https on 127.0.0.1:$NGINX_PORT" || fail "nginx serves https" "$NGINX_URL"
curl -s --cacert "$T/ca.pem" -r 0-0 -o /dev/null "$NGINX_URL/full.fota" && pass "curl trusts the server with the CA" \
  || fail "curl trusts the server with the CA"
curl -s -r 0-0 -o /dev/null "$NGINX_URL/full.fota" && fail "curl refuses the server without the CA" \
  || pass "curl refuses the server without the CA"
nginx_log_reset

# mkdev NAME DLMODE [download.ca_bundle=CA]: A/B device in $WORK/NAME; the inactive slot holds random bytes
mkdev() {
  local d=$WORK/$1
  rm -rf "$d"; mkdir -p "$d/state"
  cp "$WORK/src.img" "$d/a.img"; head -c $((SIZE + 4096)) /dev/urandom >"$d/b.img"
  agent_conf "$d/agent.conf" "$d" device.mode=ab "device.slot_a=$d/a.img" "device.slot_b=$d/b.img" device.active_slot=a \
    "download.mode=$2" ${3:+"$3"} || fail "agent_conf $1"
}

# ---- trusted: the exact target over https ----
for dl in store stream; do
  mkdev ok-$dl $dl "download.ca_bundle=$T/ca.pem"
  d=$WORK/ok-$dl
  expect_rc "https $dl: download-and-update with ca_bundle -> exit 0" 0 \
    "$AGENT" -q -c "$d/agent.conf" download-and-update "$NGINX_URL/full.fota"
  cmp -s -n "$SIZE" "$d/b.img" "$WORK/dst.img" && pass "https $dl: target slot is byte-exact" \
    || fail "https $dl: target slot is byte-exact"
  cmp -s "$d/a.img" "$WORK/src.img" && pass "https $dl: active slot untouched" || fail "https $dl: active slot untouched"
done
# the bytes really came over TLS from this nginx: it logged range requests for the package
grep -q '^206 .*GET /full.fota' "$NGINX_LOG" && pass "nginx served the package by range over https" \
  || fail "nginx served the package by range over https" "$(head -3 "$NGINX_LOG")"
# download, then update as two commands
mkdev split store "download.ca_bundle=$T/ca.pem"
expect_rc "https: download -> exit 0" 0 "$AGENT" -q -c "$WORK/split/agent.conf" download "$NGINX_URL/full.fota"
expect_rc "https: update -> exit 0" 0 "$AGENT" -q -c "$WORK/split/agent.conf" update
cmp -s -n "$SIZE" "$WORK/split/b.img" "$WORK/dst.img" && pass "https download then update: byte-exact" \
  || fail "https download then update: byte-exact"

# ---- untrusted: refused, nothing written ----
# untrusted NAME URL [download.ca_bundle=CA] NEEDLE
untrusted() {
  mkdev bad store "$3"
  local d=$WORK/bad before t0 t1 rc
  before=$(sha256sum <"$d/b.img")
  nginx_log_reset
  t0=$(date +%s)
  "$AGENT" -c "$d/agent.conf" download-and-update "$2" >"$WORK/.out" 2>&1
  rc=$?
  t1=$(date +%s)
  echo "  $1: $(grep -v "^ *$" "$WORK/.out" | tail -1)"
  [ "$rc" -eq 10 ] && pass "$1: exit 10" || fail "$1: exit 10" "exit $rc: $(tail -3 "$WORK/.out" | tr '\n' ' ')"
  grep -qi -- "$4" "$WORK/.out" && pass "$1: the error names the TLS problem ('$4')" \
    || fail "$1: the error names the TLS problem ('$4')" "$(tail -3 "$WORK/.out" | tr '\n' ' ')"
  [ $((t1 - t0)) -le 10 ] && pass "$1: fails at once, no retry window spent ($((t1 - t0)) s)" \
    || fail "$1: fails at once" "$((t1 - t0)) s"
  [ "$(sha256sum <"$d/b.img")" = "$before" ] && pass "$1: target slot untouched" || fail "$1: target slot untouched"
  cmp -s "$d/a.img" "$WORK/src.img" && pass "$1: active slot untouched" || fail "$1: active slot untouched"
  # the head is fetched first, so not even the manifest got here: the state directory
  # holds the journal and the lock at most
  local extra
  extra=$(cd "$d/state" && ls -A | grep -v -x -e journal -e lock | tr '\n' ' ')
  [ -z "$extra" ] && pass "$1: nothing of the package in state_dir" || fail "$1: nothing of the package in state_dir" "$extra"
  [ "$(nginx_bytes_sent)" -eq 0 ] && pass "$1: nginx sent no package bytes" || fail "$1: nginx sent no package bytes" "$(cat "$NGINX_LOG")"
}
untrusted "https, no ca_bundle" "$NGINX_URL/full.fota" "" "certificate"
untrusted "https, another CA as ca_bundle" "$NGINX_URL/full.fota" "download.ca_bundle=$T/other-ca.pem" "certificate"
untrusted "https, host name not in the certificate" "https://localhost:$NGINX_PORT/full.fota" "download.ca_bundle=$T/ca.pem" "localhost"
untrusted "https, ca_bundle file missing" "$NGINX_URL/full.fota" "download.ca_bundle=$T/nope.pem" "nope.pem"

# ---- stream mode, a server that keeps sending one payload corrupt ----
# The 4th payload of the package gets one byte flipped; its byte range in the package is
# read from the tar headers. The agent must fetch it twice (two requests for exactly
# that range in nginx's log), refuse it (exit 8) and leave the active slot untouched;
# the chunks before it, verified, are in the inactive slot (docs/fota-agent.md, stream
# mode), and no byte of the corrupt chunk's target range is written.
read -r POFF PLEN < <(python3 - "$WWW/full.fota" "$WWW/corrupt.fota" <<'PY'
import sys, tarfile
src, out = sys.argv[1], sys.argv[2]
with tarfile.open(src) as t:
    payloads = [m for m in t.getmembers() if m.name not in ("manifest.json", "manifest.sig")]
m = payloads[3]
b = bytearray(open(src, "rb").read())
b[m.offset_data + m.size // 2] ^= 0x10
open(out, "wb").write(b)
print(m.offset_data, m.size)
PY
)
mkdev sbad stream "download.ca_bundle=$T/ca.pem"
d=$WORK/sbad
cp "$d/b.img" "$WORK/b-before.img"
nginx_log_reset
expect_rc "https stream, corrupt 4th payload -> exit 8" 8 "$AGENT" -q -c "$d/agent.conf" download-and-update "$NGINX_URL/corrupt.fota"
grep -q "payload sha256 does not match the manifest (fetched twice)" "$WORK/.out" \
  && pass "https stream, corrupt payload: the error says it was fetched twice" \
  || fail "https stream, corrupt payload: the error says it was fetched twice" "$(cat "$WORK/.out")"
# (the first request may start after POFF when the head request brought part of it)
n=$(grep -c "\"bytes=[0-9]*-$((POFF + PLEN - 1))\"" "$NGINX_LOG")
n0=$(grep -c "\"bytes=$POFF-$((POFF + PLEN - 1))\"" "$NGINX_LOG")
[ "$n" -eq 2 ] && [ "$n0" -ge 1 ] && pass "https stream, corrupt payload: its range was requested twice, the second time whole" \
  || fail "https stream, corrupt payload: its range was requested twice" "$n requests; log: $(tr '\n' ' ' <"$NGINX_LOG")"
cmp -s "$d/a.img" "$WORK/src.img" && pass "https stream, corrupt payload: active slot untouched" \
  || fail "https stream, corrupt payload: active slot untouched"
cmp -s -n 196608 "$d/b.img" "$WORK/dst.img" \
  && pass "https stream, corrupt payload: the 3 chunks before it are in the inactive slot" \
  || fail "https stream, corrupt payload: the 3 chunks before it are in the inactive slot"
cmp -s -i 196608:196608 -n 65536 "$d/b.img" "$WORK/b-before.img" \
  && pass "https stream, corrupt payload: its chunk's range of the inactive slot was not written" \
  || fail "https stream, corrupt payload: its chunk's range of the inactive slot was not written"
