# proxy.sh: run tests/proxy/fault-proxy in front of the nginx of nginx.sh. Source it
# after lib.sh and nginx.sh (it needs WORK, NGINX_PORT and chain_exit_trap).
#   proxy_start [--fault RULE]...  a fresh proxy on a free loopback port with a fresh
#                                  log; sets PROXY_PID, PROXY_PORT, URL (http://127.0.0.1:PORT)
#                                  and PLOG; returns 1 if it did not start (stderr in
#                                  $WORK/proxy.err)
#   proxy_stop                     SIGTERM, wait; returns the proxy's exit status; safe
#                                  to call twice
#   proxy_sent                     body bytes the proxy delivered (sum of sent= in PLOG)
#   proxy_reqs                     requests in PLOG
# PROXY (default $FOTA_BIN/fault-proxy) is the binary; the seed is 7, every wait 5 s at
# most, and the proxy exits by itself after 120 s whatever happens. Sourcing registers
# proxy_stop in the EXIT trap.
PROXY=${PROXY:-$FOTA_BIN/fault-proxy}
PROXY_PID=
PROXY_PORT=
PLOG=

proxy_start() {
  PLOG=$WORK/proxy.$RANDOM.log
  rm -f "$WORK/proxy.port"
  "$PROXY" --upstream "127.0.0.1:$NGINX_PORT" --port-file "$WORK/proxy.port" --log "$PLOG" \
    --io-timeout 5000 --max-seconds 120 --seed 7 "$@" >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
  PROXY_PID=$!
  for _ in $(seq 50); do
    [ -s "$WORK/proxy.port" ] && break
    sleep 0.1
  done
  PROXY_PORT=$(cat "$WORK/proxy.port" 2>/dev/null)
  URL=http://127.0.0.1:$PROXY_PORT
  [ -n "$PROXY_PORT" ]
}

proxy_stop() {
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null
  local rc
  for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null
  wait "$PROXY_PID"; rc=$?
  PROXY_PID=
  return $rc
}

proxy_sent() { awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^sent=/) s += substr($i, 6) } END { print s + 0 }' "$PLOG" 2>/dev/null || echo 0; }
proxy_reqs() { wc -l <"$PLOG" 2>/dev/null || echo 0; }

chain_exit_trap proxy_stop
