# nginx.sh: start and stop a private nginx for integration tests. Source it after lib.sh.
#   nginx_start ROOT_DIR   serve ROOT_DIR on 127.0.0.1, on a free port, with a generated
#                          config in a temp dir (under $WORK when set). Sets NGINX_PORT,
#                          NGINX_LOG (access log: '$status $body_bytes_sent "$http_range"
#                          "$request"' one line per request), NGINX_DIR, NGINX_PID.
#                          Returns 1 (with the error log on stderr) if nginx cannot start.
#                          TLS: with NGINX_TLS_CERT and NGINX_TLS_KEY set (PEM files), it
#                          serves https instead (ssl on the same port); the readiness probe
#                          does not check the certificate. NGINX_SCHEME is http or https,
#                          NGINX_URL is "$NGINX_SCHEME://127.0.0.1:$NGINX_PORT".
#   nginx_stop             stop it (SIGTERM, then SIGKILL after 3 s); safe to call twice.
#   nginx_log_reset        empty the access log (nginx keeps appending to the same file).
#   nginx_bytes_sent       sum of $body_bytes_sent over the access log.
#   chain_exit_trap CMD    run CMD at exit before whatever EXIT trap is already set.
# Sourcing registers nginx_stop in the EXIT trap, ahead of lib.sh's (which removes $WORK).
# nginx runs in the foreground of a background job (daemon off, master_process off: one
# process, no worker to leave behind), as root with "user root;" so it can read ROOT_DIR.

chain_exit_trap() {
  local cmd=$1 old
  old=$(trap -p EXIT)
  # shellcheck disable=SC2064  # expanded now on purpose: CMD and the old trap text
  if [ -n "$old" ]; then
    eval "set -- $old"          # trap -- 'CMD' EXIT
    trap "$cmd; $3" EXIT
  else
    trap "$cmd" EXIT
  fi
}

NGINX_PID=
NGINX_PORT=
NGINX_LOG=
NGINX_DIR=
NGINX_SCHEME=http
NGINX_URL=

_nginx_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 40000))
}

nginx_start() {
  local root=${1:?nginx_start ROOT_DIR}
  root=$(cd "$root" && pwd) || return 1
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "nginx_start: nginx not installed (apt-get install nginx-light)" >&2; return 1
  fi
  local bin; bin=$(command -v nginx || echo /usr/sbin/nginx)
  NGINX_DIR=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/nginx-XXXXXX")
  mkdir -p "$NGINX_DIR/tmp"
  NGINX_LOG=$NGINX_DIR/access.log
  local user_line=""
  [ "$(id -u)" -eq 0 ] && user_line="user root;"
  local tls="" probe_opt=""
  NGINX_SCHEME=http
  if [ -n "${NGINX_TLS_CERT:-}" ] || [ -n "${NGINX_TLS_KEY:-}" ]; then
    [ -r "${NGINX_TLS_CERT:-}" ] && [ -r "${NGINX_TLS_KEY:-}" ] \
      || { echo "nginx_start: NGINX_TLS_CERT and NGINX_TLS_KEY must both name readable PEM files" >&2; return 1; }
    NGINX_SCHEME=https
    tls=" ssl;
    ssl_certificate $NGINX_TLS_CERT;
    ssl_certificate_key $NGINX_TLS_KEY"
    probe_opt=--insecure
  fi
  for _ in 1 2 3 4 5; do
    NGINX_PORT=$(_nginx_free_port)
    cat >"$NGINX_DIR/nginx.conf" <<NGX
$user_line
daemon off;
master_process off;
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log;
events { worker_connections 128; }
http {
  log_format fota '\$status \$body_bytes_sent "\$http_range" "\$request"';
  access_log $NGINX_LOG fota;
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT$tls;
    root $root;
  }
}
NGX
    : >"$NGINX_DIR/error.log"
    "$bin" -e "$NGINX_DIR/error.log" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" </dev/null >/dev/null 2>&1 &
    NGINX_PID=$!
    for _ in $(seq 50); do
      if ! kill -0 "$NGINX_PID" 2>/dev/null; then break; fi
      if curl -s ${probe_opt:+"$probe_opt"} -o /dev/null --max-time 1 "$NGINX_SCHEME://127.0.0.1:$NGINX_PORT/"; then
        NGINX_URL=$NGINX_SCHEME://127.0.0.1:$NGINX_PORT
        # nginx logs the probe just after answering it: wait for that line, then empty the log
        for _ in $(seq 20); do [ -s "$NGINX_LOG" ] && break; sleep 0.05; done
        : >"$NGINX_LOG"
        return 0
      fi
      sleep 0.1
    done
    nginx_stop
    grep -q 'Address already in use' "$NGINX_DIR/error.log" || break
  done
  echo "nginx_start: nginx did not start: $(tail -3 "$NGINX_DIR/error.log" | tr '\n' ' ')" >&2
  return 1
}

nginx_stop() {
  [ -n "$NGINX_PID" ] || return 0
  kill -TERM "$NGINX_PID" 2>/dev/null
  for _ in $(seq 30); do
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$NGINX_PID" 2>/dev/null
  wait "$NGINX_PID" 2>/dev/null
  NGINX_PID=
  return 0
}

nginx_log_reset() { : >"$NGINX_LOG"; }

nginx_bytes_sent() { awk '{ s += $2 } END { print s + 0 }' "$NGINX_LOG"; }

chain_exit_trap nginx_stop
