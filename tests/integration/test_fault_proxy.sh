#!/usr/bin/env bash
# Integration: tests/proxy/fault-proxy between curl and a real nginx on 127.0.0.1.
# Each fault does what it claims (README in tests/proxy/): pass-through with Range,
# drop-after, stall, status 500/503, wrong Content-Range, truncate, byte flip, package
# swap with a new ETag; the proxy's log reports exactly the body bytes curl received;
# loopback only; clean exit on SIGTERM; no process left behind.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

# ---- build the proxy (the Makefile does not know it yet) ----
PROXY=$FOTA_BIN/fault-proxy
san=""
case "$FOTA_BIN" in *-asan) san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" ;; esac
# shellcheck disable=SC2086
if ! ${CC:-cc} -O2 -g -Wall -Wextra -Werror $san -pthread -o "$PROXY" "$FOTA_TOP/tests/proxy/fault-proxy.c" 2>"$WORK/cc.err"; then
  fail "fault-proxy builds" "$(head -5 "$WORK/cc.err" | tr '\n' ' ')"; exit 1
fi
pass "fault-proxy builds with ${CC:-cc}${san:+ (sanitizers)}"

# ---- content: two different 2 MiB packages (different sizes, so different ETags) ----
WWW=$WORK/www; mkdir -p "$WWW"
head -c 2097152 /dev/urandom >"$WWW/pkg.bin"
head -c 2097153 /dev/urandom >"$WWW/pkg-b.bin"
SIZE=2097152
nginx_start "$WWW" || { fail "nginx starts"; exit 1; }
pass "nginx serves $WWW on 127.0.0.1:$NGINX_PORT"

# ---- proxy control: proxy_start, proxy_stop (tests/proxy/proxy.sh) ----
. "$FOTA_TOP/tests/proxy/proxy.sh"

# log_field N FIELD: FIELD of the proxy's log line for request N (waits for the line:
# the proxy logs when it ends a response, which can be just after curl returned)
log_field() {
  for _ in $(seq 40); do
    grep -q "^req=$1 " "$PLOG" 2>/dev/null && break
    sleep 0.05
  done
  grep "^req=$1 " "$PLOG" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
# fetch NAME CURL_ARGS...: body to $WORK/NAME, headers to $WORK/NAME.h; sets RC, CODE, GOT
fetch() {
  local name=$1; shift
  local w
  w=$(curl -s -o "$WORK/$name" -D "$WORK/$name.h" -w '%{http_code} %{size_download}' "$@")
  RC=$?
  CODE=${w% *}; GOT=${w#* }
  [ -e "$WORK/$name" ] || : >"$WORK/$name"
}
header() { tr -d '\r' <"$1" | sed -n "s/^$2: //Ip" | tail -1; }
slice() { tail -c +$(($2 + 1)) "$1" | head -c "$3"; }   # slice FILE OFFSET LEN
expect() {                 # expect NAME GOT WANT
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi
}

# ---- 1. pass-through, whole file and Range ----
proxy_start || { fail "proxy starts" "$(cat "$WORK/proxy.err")"; exit 1; }
if grep -q "^listening on 127.0.0.1:$PROXY_PORT\$" "$WORK/proxy.out"; then pass "proxy prints its port"; else fail "proxy prints its port" "$(cat "$WORK/proxy.out")"; fi
fetch full "$URL/pkg.bin"
expect "pass-through: 200, exit 0, $SIZE bytes" "$CODE $RC $GOT" "200 0 $SIZE"
check "pass-through: bytes equal" cmp "$WORK/full" "$WWW/pkg.bin"
expect "pass-through: log sent= equals bytes received" "$(log_field 1 sent) $(log_field 1 status) $(log_field 1 end)" "$GOT 200 ok"
fetch part -r 1000-1999 "$URL/pkg.bin"
expect "Range: 206, 1000 bytes" "$CODE $RC $GOT" "206 0 1000"
expect "Range: Content-Range" "$(header "$WORK/part.h" Content-Range)" "bytes 1000-1999/$SIZE"
slice "$WWW/pkg.bin" 1000 1000 >"$WORK/want"
check "Range: bytes equal" cmp "$WORK/part" "$WORK/want"
expect "Range: log line" "$(log_field 2 range) $(log_field 2 status) $(log_field 2 sent) $(log_field 2 fault)" "bytes=1000-1999 206 1000 -"
fetch head -I "$URL/pkg.bin"
expect "HEAD: 200, no body, logged sent=0" "$CODE $GOT $(log_field 3 sent)" "200 0 0"
# keep-alive client: curl sends two requests on one command line; the proxy closes after each
w=$(curl -s -o /dev/null -o /dev/null -w '%{http_code}.' "$URL/pkg.bin" "$URL/pkg-b.bin")
expect "two requests from one curl (Connection: close each)" "$w" "200.200."
sleep 0.2
expect "nginx saw every proxied request" "$(wc -l <"$NGINX_LOG")" "5"
proxy_stop; expect "proxy exits 0 on SIGTERM" "$?" "0"

# ---- 2. drop-after ----
sleep 0.2; nginx_log_reset   # nginx logs a request just after it ends
proxy_start --fault 'req=2:drop-after=10000'
fetch d1 "$URL/pkg.bin"
expect "drop-after: request 1 untouched" "$RC $GOT" "0 $SIZE"
fetch d2 "$URL/pkg.bin"
expect "drop-after: curl fails (18 partial) with 10000 bytes" "$RC $GOT" "18 10000"
slice "$WWW/pkg.bin" 0 10000 >"$WORK/want"
check "drop-after: the bytes received are the right prefix" cmp "$WORK/d2" "$WORK/want"
expect "drop-after: log" "$(log_field 2 sent) $(log_field 2 end) $(log_field 2 fault)" "10000 dropped req=2:drop-after=10000"
fetch d3 -r 0-99 "$URL/pkg.bin"
expect "drop-after: request 3 untouched" "$RC $GOT" "0 100"
proxy_stop

# ---- 3. stall: finite, then forever against curl --max-time ----
proxy_start --fault 'req=1:stall=700:stall-at=4096' --fault 'req=2:stall=forever:stall-at=5000'
t0=$(date +%s%N)
fetch s1 "$URL/pkg.bin"
ms=$((($(date +%s%N) - t0) / 1000000))
if [ "$RC" -eq 0 ] && [ "$GOT" -eq "$SIZE" ] && [ "$ms" -ge 650 ]; then pass "stall=700: complete, took ${ms} ms"; else fail "stall=700" "rc $RC got $GOT in $ms ms"; fi
check "stall=700: bytes equal" cmp "$WORK/s1" "$WWW/pkg.bin"
t0=$(date +%s%N)
fetch s2 --max-time 1 "$URL/pkg.bin"
ms=$((($(date +%s%N) - t0) / 1000000))
if [ "$RC" -eq 28 ] && [ "$GOT" -eq 5000 ] && [ "$ms" -ge 900 ] && [ "$ms" -lt 3000 ]; then
  pass "stall=forever: curl --max-time 1 times out (28) after 5000 bytes, ${ms} ms"
else fail "stall=forever" "rc $RC got $GOT in $ms ms"; fi
expect "stall=forever: log (client went away during the stall)" "$(log_field 2 sent) $(log_field 2 end)" "5000 client-closed-in-stall"
proxy_stop

# ---- 4. injected 500 / 503, no upstream call ----
sleep 0.2; nginx_log_reset   # nginx logs a request just after it ends
proxy_start --fault 'req=1:status=503' --fault 'req=2:status=500' --fault 'req=3-:status=503'
fetch e1 -r 0-99 "$URL/pkg.bin"; expect "status=503" "$CODE" "503"
fetch e2 "$URL/pkg.bin"; expect "status=500" "$CODE" "500"
fetch e3 "$URL/pkg.bin"; expect "req=3-: 503 from request 3 on" "$CODE" "503"
fetch e4 "$URL/pkg.bin"; expect "req=3-: 503 for request 4" "$CODE" "503"
expect "status: small body and its length logged" "$(cat "$WORK/e1") $(log_field 1 status) $(log_field 1 sent)" "fault-proxy: injected 503 503 26"
sleep 0.1
expect "status: nginx never called" "$(wc -l <"$NGINX_LOG")" "0"
proxy_stop

# ---- 5. wrong Content-Range with the right bytes ----
proxy_start --fault 'every:cr-shift=100' --fault 'req=2:cr-total=12345'
fetch c1 -r 1000-1999 "$URL/pkg.bin"
expect "cr-shift: header shifted by 100" "$(header "$WORK/c1.h" Content-Range)" "bytes 1100-2099/$SIZE"
slice "$WWW/pkg.bin" 1000 1000 >"$WORK/want"
check "cr-shift: body is still bytes 1000-1999" cmp "$WORK/c1" "$WORK/want"
fetch c2 -r 5000-5999 "$URL/pkg.bin"
expect "cr-total + cr-shift: header" "$(header "$WORK/c2.h" Content-Range)" "bytes 5100-6099/12345"
slice "$WWW/pkg.bin" 5000 1000 >"$WORK/want"
check "cr-total: body is still bytes 5000-5999" cmp "$WORK/c2" "$WORK/want"
expect "cr-*: log sent=1000" "$(log_field 2 sent) $(log_field 2 fault)" "1000 every:cr-shift=100;req=2:cr-total=12345"
proxy_stop

# ---- 6. truncate ----
proxy_start --fault 'every:truncate=1000'
fetch t1 "$URL/pkg.bin"
expect "truncate: Content-Length unchanged" "$(header "$WORK/t1.h" Content-Length)" "$SIZE"
expect "truncate: curl fails (18) with size-1000 bytes" "$RC $GOT" "18 $((SIZE - 1000))"
slice "$WWW/pkg.bin" 0 $((SIZE - 1000)) >"$WORK/want"
check "truncate: prefix intact" cmp "$WORK/t1" "$WORK/want"
expect "truncate: log" "$(log_field 1 clen) $(log_field 1 sent) $(log_field 1 end)" "$SIZE $((SIZE - 1000)) truncated"
fetch t2 -r 0-4999 "$URL/pkg.bin"
expect "truncate: on a Range response too" "$RC $GOT" "18 4000"
proxy_stop

# ---- 7. flip one byte ----
ndiff() { cmp -l "$1" "$2" 2>/dev/null | wc -l; }
firstdiff() { cmp -l "$1" "$2" 2>/dev/null | awk 'NR==1 { print $1 - 1 }'; }
proxy_start --fault 'req=1:flip=12345' --fault 'req=2:flip-abs=150000' --fault 'req=3:flip=rand'
fetch f1 "$URL/pkg.bin"
expect "flip=12345: full length, exactly one byte differs, at 12345" "$GOT $(ndiff "$WORK/f1" "$WWW/pkg.bin") $(firstdiff "$WORK/f1" "$WWW/pkg.bin")" "$SIZE 1 12345"
fetch f2 -r 100000-199999 "$URL/pkg.bin"
slice "$WWW/pkg.bin" 100000 100000 >"$WORK/want"
expect "flip-abs=150000 in Range 100000-: body offset 50000" "$GOT $(ndiff "$WORK/f2" "$WORK/want") $(firstdiff "$WORK/f2" "$WORK/want")" "100000 1 50000"
fetch f3 "$URL/pkg.bin"
off=$(firstdiff "$WORK/f3" "$WWW/pkg.bin")
expect "flip=rand: exactly one byte differs" "$(ndiff "$WORK/f3" "$WWW/pkg.bin")" "1"
expect "flip=rand: the log names the offset" "$(log_field 3 fault)" "req=3:flip=rand(flipped@$off)"
fetch f4 "$URL/pkg.bin"
check "flip: request 4 untouched" cmp "$WORK/f4" "$WWW/pkg.bin"
proxy_stop
proxy_start --fault 'req=3:flip=rand'
curl -s -o /dev/null "$URL/pkg.bin"; curl -s -o /dev/null "$URL/pkg.bin"
fetch f5 "$URL/pkg.bin"
expect "flip=rand: same seed and request number, same offset" "$(firstdiff "$WORK/f5" "$WWW/pkg.bin")" "$off"
proxy_stop

# ---- 8. swap the package from request 3 on ----
proxy_start --fault 'req=3-:swap=/pkg-b.bin'
fetch w1 -r 0-65535 "$URL/pkg.bin"
fetch w2 -r 65536-131071 "$URL/pkg.bin"
fetch w3 -r 131072-196607 "$URL/pkg.bin"
e1=$(header "$WORK/w1.h" ETag); e2=$(header "$WORK/w2.h" ETag); e3=$(header "$WORK/w3.h" ETag)
if [ -n "$e1" ] && [ "$e1" = "$e2" ] && [ "$e3" != "$e2" ] && [ -n "$e3" ]; then pass "swap: ETag $e1, $e2, then $e3"; else fail "swap: ETag" "'$e1' '$e2' '$e3'"; fi
expect "swap: Content-Range total is the new file's" "$(header "$WORK/w3.h" Content-Range)" "bytes 131072-196607/$((SIZE + 1))"
slice "$WWW/pkg-b.bin" 131072 65536 >"$WORK/want"
check "swap: request 3 has the other file's bytes" cmp "$WORK/w3" "$WORK/want"
slice "$WWW/pkg.bin" 65536 65536 >"$WORK/want"
check "swap: request 2 still the original" cmp "$WORK/w2" "$WORK/want"
expect "swap: logged with the client's path" "$(log_field 3 path) $(log_field 3 fault)" "/pkg.bin req=3-:swap=/pkg-b.bin"
proxy_stop

# ---- 9. the log adds up to what nginx and curl moved ----
sleep 0.2; nginx_log_reset   # nginx logs a request just after it ends
proxy_start --fault 'req=2:drop-after=300000' --fault 'req=4:truncate=7'
total=0
for r in 0-524287 524288-1048575 524288-1048575 1048576-2097151; do
  fetch l -r "$r" "$URL/pkg.bin"; total=$((total + GOT))
done
for n in 1 2 3 4; do log_field $n sent >/dev/null; done
logged=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^sent=/) s += substr($i, 6) } END { print s + 0 }' "$PLOG")
expect "log: sum of sent= equals bytes curl received" "$logged" "$total"
expect "log: one line per request" "$(wc -l <"$PLOG")" "4"
if [ "$(nginx_bytes_sent)" -ge "$logged" ]; then pass "log: nginx sent at least what the proxy passed on"; else fail "log vs nginx" "nginx $(nginx_bytes_sent) < proxy $logged"; fi
proxy_stop

# ---- 10. safety: loopback only, bad rules, SIGTERM during a stall, --max-seconds ----
expect_rc "upstream outside loopback refused" 2 "$PROXY" --upstream 10.1.2.3:80
if grep -q 'only 127.0.0.0/8' "$WORK/.out"; then pass "loopback refusal says why"; else fail "loopback refusal message" "$(cat "$WORK/.out")"; fi
expect_rc "bad rule refused" 2 "$PROXY" --upstream "127.0.0.1:$NGINX_PORT" --fault 'req=0:stall=1'
expect_rc "unknown action refused" 2 "$PROXY" --upstream "127.0.0.1:$NGINX_PORT" --fault 'every:explode=1'
proxy_start --fault 'every:stall=forever'
curl -s -o /dev/null --max-time 20 "$URL/pkg.bin" & cpid=$!
sleep 0.5
t0=$(date +%s%N)
proxy_stop; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
wait $cpid
if [ "$rc" -eq 0 ] && [ "$ms" -lt 2000 ]; then pass "SIGTERM during a stall: exit 0 in ${ms} ms"; else fail "SIGTERM during a stall" "rc $rc after $ms ms"; fi
"$PROXY" --upstream "127.0.0.1:$NGINX_PORT" --max-seconds 1 >/dev/null 2>&1 & ppid=$!
sleep 2.5
if kill -0 $ppid 2>/dev/null; then fail "--max-seconds 1 ends the proxy"; kill $ppid; else wait $ppid; expect "--max-seconds 1 ends the proxy, exit 0" "$?" "0"; fi

# ---- no process left ----
nginx_stop
sleep 0.2
left=$(pgrep -f "$WORK" | tr '\n' ' ')
expect "no nginx or proxy left running" "$left" ""
