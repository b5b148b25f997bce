#!/usr/bin/env bash
# Integration: the A/B slot commands of fota-agent run as hooks (agent/hooks.c) under
# [ui] hook_timeout_seconds. A switch_command that hangs is killed with its process
# group, the verified slot is kept and the job resumes and completes once the command
# works; an active_slot_command that hangs, fails or prints garbage stops the job with a
# clear error before any slot is written, and resume completes once it answers.
. "$(dirname "$0")/lib.sh"

AGENT=$FOTA_BIN/fota-agent
if [ ! -x "$AGENT" ]; then fail "fota-agent built" "$AGENT missing"; exit 0; fi
test_pki

head -c 196608 /dev/urandom >"$WORK/src.img"
{ head -c 70000 "$WORK/src.img"; head -c 30000 /dev/urandom; tail -c 96608 "$WORK/src.img"; } >"$WORK/dst.img"
SIZE=$(stat -c %s "$WORK/dst.img")
fota-pack --to "$WORK/dst.img" --key "$PKI/signer-ec.key" --cert "$PKI/signer-ec.pem" --chain "$PKI/chain.pem" \
  --chunk-size 64K --level 3 --quiet --security-version 2 --device-model HX-100 -o "$WORK/full.fota" >"$WORK/.pack" 2>&1 \
  || { fail "pack" "$(tail -2 "$WORK/.pack")"; exit 1; }
URL="file://$WORK/full.fota"

# mkdev NAME [SECTION.KEY=VALUE...]: a fresh A/B device whose hooks time out after 1 s
mkdev() {
  D=$WORK/$1; C=$D/agent.conf; shift
  rm -rf "$D"; mkdir -p "$D/state"
  cp "$WORK/src.img" "$D/a.img"; head -c $((SIZE + 65536)) /dev/zero >"$D/b.img"
  agent_conf "$C" "$D" device.mode=ab "device.slot_a=$D/a.img" "device.slot_b=$D/b.img" device.security_version=2 \
    download.backoff_base_seconds=5 download.backoff_max_seconds=20 ui.hook_timeout_seconds=1 "$@" || fail "agent_conf $D"
}
# set_key KEY LINE: replace the [device] line of KEY
set_key() { sed -i "s#^$1 = .*#$2#" "$C"; }
ag() { "$AGENT" -c "$C" "$@"; }
field() { ag status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]))' "$1" 2>/dev/null; }
slots() { sha256sum "$D/a.img" "$D/b.img" | awk '{print $1}' | tr '\n' ' '; }
target_ok() { cmp -s -n "$SIZE" "$D/b.img" "$WORK/dst.img"; }
# gone PIDFILE: the process whose pid the file holds no longer runs (absent, or a zombie
# that the machine's init has not reaped yet)
gone() {
  local p st; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] || return 1
  st=$(ps -o stat= -p "$p" 2>/dev/null)
  [ -z "$st" ] || [ "${st#Z}" != "$st" ]
}

# ---- switch_command hangs: killed with its group after the timeout, the job resumes ----
mkdev sw device.active_slot=a \
  "device.switch_command=sleep 300 & echo \$! > $WORK/sw/child.pid; echo \$\$ > $WORK/sw/hook.pid; wait"
t0=$(date +%s)
ag -q download-and-update "$URL" 2>"$WORK/sw.err"; rc=$?
t=$(( $(date +%s) - t0 ))
[ $rc = 12 ] && pass "hung switch_command: exit 12 (hook)" || fail "hung switch exit" "exit $rc: $(tail -1 "$WORK/sw.err")"
[ $t -lt 20 ] && pass "hung switch_command: the agent returns after the 1 s timeout (${t} s)" || fail "hung switch time" "${t} s"
grep -q "no answer within 1 s; killed" "$WORK/sw.err" && grep -q "slot b is written and verified, resume runs the switch again" "$WORK/sw.err" \
  && pass "hung switch_command: the error says killed, slot verified, resume retries" || fail "hung switch message" "$(cat "$WORK/sw.err")"
sleep 0.2
gone "$D/hook.pid" && gone "$D/child.pid" && pass "hung switch_command: the hook and its background child are killed" \
  || fail "hung switch kill" "hook $(cat "$D/hook.pid" 2>/dev/null) child $(cat "$D/child.pid" 2>/dev/null)"
target_ok && pass "hung switch_command: slot b holds the verified target" || fail "hung switch target"
[ "$(field phase)" = applied ] && [ "$(field state)" = 60 ] && pass "hung switch_command: job kept in phase applied, state 60" \
  || fail "hung switch phase" "$(field phase) $(field state)"
ag -q resume 2>/dev/null; rc=$?
[ $rc = 12 ] && pass "resume with the switch still hanging: exit 12 again" || fail "resume hung switch" "exit $rc"
set_key switch_command "switch_command = echo \$FOTA_SLOT \$FOTA_SLOT_PATH \$FOTA_PKG_VERSION > $D/switched; echo chatter"
ag -q resume >"$WORK/sw.out" 2>&1; rc=$?
[ $rc = 0 ] && [ "$(cut -d' ' -f1,2 "$D/switched" 2>/dev/null)" = "b $D/b.img" ] && [ "$(field state)" = 100 ] \
  && pass "resume once the switch works: exit 0, FOTA_SLOT=b and FOTA_SLOT_PATH, state 100" \
  || fail "resume after switch fix" "exit $rc, switched '$(cat "$D/switched" 2>/dev/null)', state $(field state): $(tail -1 "$WORK/sw.out")"
! grep -q chatter "$WORK/sw.out" && pass "switch_command's stdout is captured, not mixed into the agent's" || fail "switch stdout" "$(cat "$WORK/sw.out")"
target_ok && pass "after resume: slot b still holds the target" || fail "after resume target"

# a switch_command that exits non-zero: same resumable failure
mkdev swx device.active_slot=a "device.switch_command=exit 3"
ag -q download-and-update "$URL" 2>"$WORK/swx.err"; rc=$?
[ $rc = 12 ] && grep -q "switch_command 'exit 3' failed (exit 3)" "$WORK/swx.err" && [ "$(field phase)" = applied ] \
  && pass "switch_command exit 3: exit 12, phase applied" || fail "switch exit 3" "exit $rc $(field phase): $(cat "$WORK/swx.err")"

# ---- active_slot_command: garbage, failure, hang -> clear error, no slot written ----
active_case() { # NAME COMMAND EXPECTED-MESSAGE
  mkdev ac "device.active_slot_command=$2"
  local before; before=$(slots)
  local t0 t; t0=$(date +%s)
  ag -q download-and-update "$URL" 2>"$WORK/ac.err"; local rc=$?
  t=$(( $(date +%s) - t0 ))
  if [ $rc = 12 ] && grep -qF "the active slot is not known, no slot was written: " "$WORK/ac.err" && grep -qF "$3" "$WORK/ac.err"; then
    pass "active_slot_command $1: exit 12, a clear error"
  else
    fail "active_slot_command $1" "exit $rc: $(cat "$WORK/ac.err")"
  fi
  [ "$(slots)" = "$before" ] && pass "active_slot_command $1: both slots untouched" || fail "active_slot_command $1: slots changed"
  [ $t -lt 20 ] || fail "active_slot_command $1: took ${t} s"
}
active_case "prints garbage" "printf 'x\\033[2Jy\\n'" "must print a or b and exit 0 (it printed \"x?[2Jy\", exit 0)"
active_case "exits 1" "echo a; exit 1" "must print a or b and exit 0 (it printed \"a\", exit 1)"
active_case "hangs" "echo \$\$ > $WORK/ac.pid; sleep 300" "[device] active_slot_command 'echo"
grep -q "no answer within 1 s; killed" "$WORK/ac.err" && pass "active_slot_command hangs: killed after the 1 s timeout" \
  || fail "active hang message" "$(cat "$WORK/ac.err")"
sleep 0.2
gone "$WORK/ac.pid" && pass "active_slot_command hangs: the command is killed" || fail "active hang kill"
[ "$(field phase)" != applied ] && [ "$(field phase)" != done ] && pass "active_slot_command hangs: the job is still resumable ($(field phase))" \
  || fail "active hang phase" "$(field phase)"
set_key active_slot_command "active_slot_command = echo a"
ag -q resume 2>"$WORK/ac2.err"; rc=$?
[ $rc = 0 ] && target_ok && [ "$(field state)" = 100 ] && pass "resume once active_slot_command answers: installed in slot b" \
  || fail "resume after active fix" "exit $rc state $(field state): $(tail -1 "$WORK/ac2.err")"
