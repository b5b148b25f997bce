# bench/lib.sh: helpers shared by the bench/*.sh sections. Source it.
#   measure CMD...     run CMD under /usr/bin/time; sets M_S (wall seconds, to the
#                      millisecond from bash's EPOCHREALTIME around the run - time(1)'s
#                      own %e has 10 ms steps, too coarse for runs of 0.05 s), M_KB (peak
#                      RSS, KiB), M_CPU (user + system seconds: on a shared machine the
#                      wall time depends on the load, the CPU time is the work done) and
#                      M_RC (exit status). CMD's stdout/stderr go to $M_LOG.
#   gen_bytes KEY N    N deterministic pseudo-random bytes (AES-128-CTR keystream of zeros
#                      under the 32-hex-digit KEY) on stdout.
#   fsize FILE         size in bytes.
#   json_str S         S as a JSON string literal.
set -u

M_LOG=${M_LOG:-/dev/null}

measure() {
  local tf
  tf=$(mktemp)
  local t0=$EPOCHREALTIME t1
  /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$M_LOG" 2>&1
  M_RC=$?
  t1=$EPOCHREALTIME
  # On failure time(1) writes "Command exited with non-zero status N" before the figures.
  local u s e
  read -r e M_KB u s < <(tail -n 1 "$tf")
  rm -f "$tf"
  M_S=$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" -v e="${e:-0}" 'BEGIN { d = b - a; if (d <= 0) d = e; printf "%.3f", d }')
  M_CPU=$(awk -v u="${u:-0}" -v s="${s:-0}" 'BEGIN { printf "%.2f", u + s }')
  case "$M_S" in '' | *[!0-9.]*) M_S=0 ;; esac
  case "$M_KB" in '' | *[!0-9]*) M_KB=0 ;; esac
}

gen_bytes() {
  openssl enc -aes-128-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null | head -c "$2"
}

fsize() { stat -c %s "$1"; }

json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

need_tools() {
  local t missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: missing tools: ${missing[*]} (run: make deps)" >&2
    return 1
  fi
}
