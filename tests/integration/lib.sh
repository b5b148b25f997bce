# lib.sh: helpers for integration tests. Source it; it provides:
#   pass NAME / fail NAME [DETAIL]  record one case (tests/run.sh counts the lines)
#   check NAME CMD...               pass if CMD exits 0
#   expect_rc NAME RC CMD...        pass if CMD exits with RC
#   WORK                            a scratch directory removed at exit
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
