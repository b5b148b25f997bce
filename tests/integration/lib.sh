# lib.sh: helpers for integration tests. Source it; it provides:
#   pass NAME / fail NAME [DETAIL]  record one case (tests/run.sh counts the lines)
#   check NAME CMD...               pass if CMD exits 0
#   expect_rc NAME RC CMD...        pass if CMD exits with RC
#   WORK                            a scratch directory removed at exit
#   agent_conf FILE DIR [S.KEY=VAL...] write a fota-agent config (below)
#   test_pki                        the test PKI in $WORK/pki, as PKI (exits on failure)
#   need_bins PATH...               exit (after a FAIL line) when a binary is missing
#   member_at PKG K                 "MID REST" of member K of a package (below)
# FOTA_BIN points at the binaries under test; FOTA_TOP at the repository.
set -u
: "${FOTA_BIN:?run through tests/run.sh}"
: "${FOTA_TOP:?run through tests/run.sh}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fota-it-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PATH="$FOTA_BIN:$PATH"

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1${2:+: $2}"; }
check() {
  local name=$1; shift
  if "$@" >"$WORK/.out" 2>&1; then pass "$name"; else fail "$name" "$(tail -3 "$WORK/.out" | tr '\n' ' ')"; fi
}
expect_rc() {
  local name=$1 want=$2; shift 2
  "$@" >"$WORK/.out" 2>&1
  local got=$?
  if [ "$got" -eq "$want" ]; then pass "$name"; else fail "$name" "exit $got, want $want: $(tail -2 "$WORK/.out" | tr '\n' ' ')"; fi
}

# agent_conf FILE DIR [SECTION.KEY=VALUE ...]: write a fota-agent config to FILE with the
# keys every agent test shares ([device] model = HX-100, security_version = 0; [agent]
# state_dir = DIR/state, trust = $PKI/root.pem; [download] retry_window_minutes = 2,
# backoff_base_seconds = 1, backoff_max_seconds = 2), each replaced or joined by the
# arguments, in their order ("device.mode=ab", "ui.consent_command=exit 0"; the value is
# everything after the first '='). The agent refuses a key given twice, so a default and
# an argument never both reach the file.
agent_conf() {
  local file=$1 dir=$2 kv key sec any; shift 2
  local -a order=()
  local -A val=()
  for kv in device.model=HX-100 device.security_version=0 "agent.state_dir=$dir/state" "agent.trust=${PKI:?}/root.pem" \
            download.retry_window_minutes=2 download.backoff_base_seconds=1 download.backoff_max_seconds=2 "$@"; do
    key=${kv%%=*}
    case $key in
      device.?* | agent.?* | download.?* | network.?* | ui.?*) ;;
      *) echo "agent_conf: '$kv' is not SECTION.KEY=VALUE with a known section" >&2; return 1 ;;
    esac
    [ -n "${val[$key]+set}" ] || order+=("$key")
    val[$key]=${kv#*=}
  done
  {
    for sec in device agent download network ui; do
      any=
      for key in "${order[@]}"; do
        [ "${key%%.*}" = "$sec" ] || continue
        [ -n "$any" ] || { echo "[$sec]"; any=1; }
        echo "${key#*.} = ${val[$key]}"
      done
    done
  } >"$file"
}

test_pki() {
  PKI=$WORK/pki
  bash "$FOTA_TOP/tests/pki/mkpki.sh" "$PKI" >"$WORK/.mkpki" 2>&1 || { fail "mkpki" "$(tail -2 "$WORK/.mkpki")"; exit 1; }
}

need_bins() {
  local b
  for b in "$@"; do
    [ -x "$b" ] || { fail "$(basename "$b") built" "$b missing"; exit 0; }
  done
}

# member_at PKG K: the file offset of the middle of member K's data in the package
# (0 manifest.json, 1 manifest.sig, then one payload per chunk in manifest order; the
# ustar layout of FORMAT.md section 2) and the bytes from member K's header to the end
# of the file; prints nothing when there is no member K.
member_at() {
  python3 - "$1" "$2" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
want = int(sys.argv[2])
off, k = 0, 0
while off + 512 <= len(b) and b[off] != 0:
    size = int(b[off + 124:off + 136].split(b"\0")[0] or b"0", 8)
    if k == want:
        print(off + 512 + size // 2, len(b) - off)
        break
    off += 512 + (size + 511) // 512 * 512
    k += 1
PY
}
