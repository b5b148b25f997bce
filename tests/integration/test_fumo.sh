#!/usr/bin/env bash
# Integration: FUMO states, result codes, the Generic Alert and the user policies of
# fota-agent (issue 6), each from the real binary in a scripted scenario: scripted hooks,
# file:// packages, a local nginx, a fault-proxy in front of it, a closed port, and a
# file-size limit (ulimit -f) for running out of space. Time comes from the test clock
# (FOTA_AGENT_TEST_CLOCK), so minutes of backoff, deferral and delayed reboot take none.
# Every failure before the apply must leave both slots as they were (sha256 compared).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

AGENT=$FOTA_BIN/fota-agent
if [ ! -x "$AGENT" ]; then fail "fota-agent built" "$AGENT missing"; exit 0; fi
test_pki

# ---- images and packages (small: 320 KiB, 64 KiB chunks) ----
head -c 327680 /dev/urandom >"$WORK/src.img"
{ head -c 100000 "$WORK/src.img"; head -c 60000 /dev/urandom; tail -c 167680 "$WORK/src.img"; } >"$WORK/dst.img"
head -c 327680 /dev/urandom >"$WORK/other-src.img"
SIZE=$(stat -c %s "$WORK/dst.img")
WWW=$WORK/www; mkdir -p "$WWW"
sign="--key $PKI/signer-ec.key --cert $PKI/signer-ec.pem --chain $PKI/chain.pem"
base="$sign --chunk-size 64K --level 3 --quiet --security-version 2"
pk() { local out=$1; shift; fota-pack --to "$WORK/dst.img" $base "$@" -o "$WWW/$out" >"$WORK/.pack" 2>&1 || fail "pack $out" "$(tail -2 "$WORK/.pack")"; }
pk full.fota --device-model HX-100 --roaming allow --name fw --version 2.0
pk high.fota --device-model HX-100 --roaming allow --priority high --install-message "Install firmware 2.0 now?"
pk low.fota --device-model HX-100 --roaming allow --priority low
pk silent.fota --device-model HX-100 --roaming allow --silent
pk deny.fota --device-model HX-100 --roaming deny
pk other.fota --device-model OTHER
pk old.fota --device-model HX-100 --security-version 1
fota-pack --to "$WORK/dst.img" --key "$PKI/other-signer.key" --cert "$PKI/other-signer.pem" --chunk-size 64K --level 3 --quiet \
  --device-model HX-100 -o "$WWW/untrusted.fota" >/dev/null 2>&1 || fail "pack untrusted"
fota-pack --from "$WORK/src.img" --to "$WORK/dst.img" $base --device-model HX-100 --roaming allow -o "$WWW/delta.fota" \
  >/dev/null 2>&1 || fail "pack delta"
cp "$WWW/full.fota" "$WWW/corrupt.fota"
python3 - "$WWW/corrupt.fota" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
b[len(b) - 1024 - 3000] ^= 1          # inside the last payload
open(p, "wb").write(b)
PY
pass "packages built"

NOW0=$(($(date +%s) * 1000))
# mkdev NAME [SECTION.KEY=VALUE...]: a fresh A/B device, its config (agent_conf), its clock
mkdev() {
  local d=$WORK/$1; shift
  rm -rf "$d"; mkdir -p "$d/state"
  cp "$WORK/src.img" "$d/a.img"; head -c $((SIZE + 65536)) /dev/zero >"$d/b.img"
  echo "$NOW0" >"$d/clock"
  agent_conf "$d/agent.conf" "$d" device.mode=ab "device.slot_a=$d/a.img" "device.slot_b=$d/b.img" device.active_slot=a \
    "device.switch_command=sed -n 's/.*\"state\":\\([0-9]*\\).*/switch \\1/p' $d/state/journal >> $d/switch.log" \
    device.security_version=2 download.backoff_base_seconds=5 download.backoff_max_seconds=20 \
    download.low_speed_limit_bytes=1000 download.low_speed_time_seconds=1 download.connect_timeout_seconds=2 "$@" \
    || fail "agent_conf $*"
  D=$d; C=$d/agent.conf
}
ag() { FOTA_AGENT_TEST_CLOCK=$D/clock "$AGENT" -c "$C" "$@"; }
advance_min() { echo $(( $(cat "$D/clock") + $1 * 60000 )) >"$D/clock"; }
jq_() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get(sys.argv[1]))' "$1"; }
state() { ag status --json 2>/dev/null | jq_ state; }
report_field() { ag report --json 2>/dev/null | jq_ "$1"; }
slots() { sha256sum "$D/a.img" "$D/b.img" | awk '{print $1}' | tr '\n' ' '; }
target_ok() { cmp -s -n "$SIZE" "$D/b.img" "$WORK/dst.img"; }

# result_case NAME CODE STATE EXIT [agent args...]: run a download-and-update that must end
# with FUMO result CODE, in FUMO state STATE, with exit status EXIT, both slots untouched.
result_case() {
  local name=$1 code=$2 st=$3 ex=$4; shift 4
  local before; before=$(slots)
  ag -q "$@" >"$WORK/.out" 2>&1
  local rc=$?
  local got; got=$(report_field result)
  if [ "$got" = "$code" ] && [ "$rc" = "$ex" ] && [ "$(state)" = "$st" ]; then pass "$code: $name (exit $rc, state $st)"
  else fail "$code: $name" "result $got state $(state) exit $rc, want $code/$st/$ex: $(tail -2 "$WORK/.out" | tr '\n' ' ')"; fi
  if [ "$(slots)" = "$before" ]; then pass "$code: both slots untouched"; else fail "$code: slots changed"; fi
}

# ---- 200 over file://: every state of DownloadAndUpdate seen by hooks and status ----
cat >"$WORK/statehook.sh" <<'SH'
#!/bin/sh
# consent hook that logs "consent STAGE FUMO-STATE" (the state read from the journal)
st=$(sed -n 's/.*"state":\([0-9]*\).*/\1/p' "$JOURNAL")
echo "consent $1 $st" >>"$LOG"
SH
mkdev ok "ui.consent_command=JOURNAL=$WORK/ok/state/journal LOG=$WORK/ok/hooks.log sh $WORK/statehook.sh \"\$1\""
[ "$(state)" = 10 ] && pass "fresh agent: state 10 Idle/Start" || fail "fresh state" "$(state)"
ag -q download-and-update --correlator corr-200 --pkg-name fw --pkg-version 2.0 "file://$WWW/full.fota"
rc=$?
[ $rc = 0 ] && target_ok && pass "200: download-and-update installs the target" || fail "200 install" "exit $rc"
[ "$(report_field result)" = 200 ] && [ "$(report_field correlator)" = corr-200 ] \
  && [ "$(report_field alert_type)" = org.openmobilealliance.dm.firmwareupdate.downloadandupdate ] \
  && [ "$(report_field source)" = ./FwUpdate/fota/DownloadAndUpdate ] && pass "report --json: result, alert_type, correlator, source" \
  || fail "report --json" "$(ag report --json 2>&1)"
grep -q "consent install 50" "$D/hooks.log" && grep -q "consent download 30" "$D/hooks.log" && grep -q "switch 60" "$D/switch.log" \
  && pass "hooks saw states 30 (download prompt), 50 (install consent), 60 (slot switch)" || fail "hook states" "$(cat "$D/hooks.log")"
s=$(ag status --json)
echo "$s" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["state"]==100 and d["state_name"]=="Update Successful No Data" and d["progress"]==100 and d["pkg_name"]=="fw" and d["pkg_version"]=="2.0"' \
  && pass "status --json: state 100, name, progress, package name/version" || fail "status --json" "$s"
x=$(ag report --syncml)
echo "$x" | grep -q '<Data>1226</Data>' && echo "$x" | grep -q '<LocURI>./FwUpdate/fota/DownloadAndUpdate</LocURI>' \
  && echo "$x" | grep -q '<Type xmlns="syncml:metinf">org.openmobilealliance.dm.firmwareupdate.downloadandupdate</Type>' \
  && echo "$x" | grep -q '<Format xmlns="syncml:metinf">int</Format>' && echo "$x" | grep -q '<Data>200</Data>' \
  && echo "$x" | grep -q '<Correlator>corr-200</Correlator>' && pass "report --syncml: Alert 1226 with Source/LocURI, Meta/Type, Meta/Format, Data" \
  || fail "report --syncml" "$x"
ag -q report --ack && [ "$(state)" = 10 ] && pass "report --ack: alert gone, 100 -> 10" || fail "ack" "state $(state)"
expect_rc "report with no alert: exit 11" 11 ag -q report --json
n=$(wc -l <"$D/hooks.log"); ag -q resume
[ "$(state)" = 10 ] && [ "$(wc -l <"$D/hooks.log")" = "$n" ] && pass "resume after the final alert does nothing" || fail "resume after alert"

# ---- Download, then Update: 10 -> 30 -> 40 -> 50 -> 60 -> 100 ----
mkdev op
ag -q download --correlator c-dl "file://$WWW/full.fota"
[ "$(state)" = 40 ] && [ "$(report_field alert_type)" = org.openmobilealliance.dm.firmwareupdate.download ] && [ "$(report_field result)" = 200 ] \
  && [ "$(report_field source)" = ./FwUpdate/fota/Download ] && pass "download: state 40 Download Complete, alert .download 200" || fail "download 40" "$(state)"
ag -q resume; [ "$(state)" = 40 ] && pass "resume waits in 40 for Update" || fail "resume in 40"
ag -q update --correlator c-up && [ "$(state)" = 100 ] && [ "$(report_field alert_type)" = org.openmobilealliance.dm.firmwareupdate.update ] \
  && [ "$(report_field correlator)" = c-up ] && target_ok && pass "update: 40 -> 50 -> 60 -> 100, alert .update with its correlator" \
  || fail "update" "state $(state) $(ag report --json 2>&1)"
# Download-only alert type, and cancel in 40 -> 80 (401)
mkdev op2
ag -q download "file://$WWW/full.fota"; ag -q cancel
[ "$(state)" = 80 ] && [ "$(report_field result)" = 401 ] && [ "$(report_field alert_type)" = org.openmobilealliance.dm.firmwareupdate.download ] \
  && [ -z "$(ls "$D/state" | grep -v -e journal -e lock)" ] && pass "cancel in 40: 401, state 80, download cleaned up" || fail "cancel 40" "$(state) $(ls "$D/state")"
ag -q report --ack; [ "$(state)" = 10 ] && pass "ack: 80 -> 10" || fail "ack 80"

# ---- in place: DownloadAndUpdate on one partition, consent seen in 50 ----
fota-pack --from "$WORK/src.img" --to "$WORK/dst.img" --mode inplace --scratch-max 256K $base --device-model HX-100 \
  --roaming allow -o "$WWW/inplace.fota" >/dev/null 2>&1 || fail "pack inplace"
D=$WORK/ip; C=$D/agent.conf; mkdir -p "$D/state"; echo "$NOW0" >"$D/clock"
cp "$WORK/src.img" "$D/part.img"; truncate -s $((SIZE + 65536)) "$D/part.img"; head -c 262144 /dev/zero >"$D/scratch.img"
agent_conf "$C" "$D" device.mode=inplace "device.target=$D/part.img" "device.scratch=$D/scratch.img" \
  device.security_version=2 download.retry_window_minutes=1 \
  "ui.consent_command=JOURNAL=$D/state/journal LOG=$D/hooks.log sh $WORK/statehook.sh \"\$1\"" || fail "agent_conf ip"
ag -q download-and-update --correlator ip-1 "file://$WWW/inplace.fota"; rc=$?
[ $rc = 0 ] && [ "$(state)" = 100 ] && [ "$(report_field correlator)" = ip-1 ] && cmp -s -n "$SIZE" "$D/part.img" "$WORK/dst.img" \
  && grep -q "consent install 50" "$D/hooks.log" && pass "in place: 30 -> 50 -> 60 -> 100, alert 200, exact target" \
  || fail "in place" "rc $rc state $(state) $(cat "$D/hooks.log" 2>&1)"

# ---- result codes from packages and URLs ----
mkdev r; result_case "corrupt chunk" 402 20 8 download-and-update "file://$WWW/corrupt.fota"
ag -q report --ack && [ "$(state)" = 10 ] && pass "ack: 20 -> 10" || fail "ack 20" "$(state)"
mkdev r; result_case "another model" 403 20 6 download-and-update "file://$WWW/other.fota"
mkdev r; result_case "untrusted signer" 404 20 5 download-and-update "file://$WWW/untrusted.fota"
mkdev r; result_case "below the security version" 405 20 7 download-and-update "file://$WWW/old.fota"
mkdev r; result_case "malformed URL" 411 20 10 download-and-update --correlator bad "ftp://example/x.fota"
[ "$(report_field correlator)" = bad ] && pass "411 alert keeps the correlator" || fail "411 correlator"
mkdev r "ui.consent_command=test \"\$1\" = download || exit 1"
result_case "the user cancels the install (consent exit 1)" 401 80 14 download-and-update "file://$WWW/full.fota"
[ -z "$(ls "$D/state" | grep -v -e journal -e lock)" ] && pass "401: the download is cleaned up" || fail "401 cleanup" "$(ls "$D/state")"
# 410: the source slot is not what the delta updates: 60 -> 70, the package stays
mkdev r; cp "$WORK/other-src.img" "$D/a.img"
before_a=$(sha256sum <"$D/a.img")
ag -q download-and-update "file://$WWW/delta.fota"; rc=$?
[ "$(report_field result)" = 410 ] && [ "$(state)" = 70 ] && [ $rc = 9 ] && pass "410: wrong source: state 70 Update Failed Have Data, exit 9" || fail "410" "$(report_field result) $(state) $rc"
[ "$(sha256sum <"$D/a.img")" = "$before_a" ] && pass "410: the source slot is untouched" || fail "410 source written"
cp "$WORK/src.img" "$D/a.img"
ag -q update && [ "$(state)" = 100 ] && target_ok && pass "Update again from 70 (source fixed): 70 -> 50 -> 60 -> 100" || fail "update from 70" "$(state)"

# ---- network results: nginx, fault-proxy, a closed port ----
if nginx_start "$WWW"; then
  URL=http://127.0.0.1:$NGINX_PORT
  mkdev n; ag -q download-and-update "$URL/full.fota" && target_ok && pass "200 over HTTP from nginx" || fail "200 http"
  CLOSED=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdev n; result_case "closed port for the whole retry window" 412 20 10 download-and-update "http://127.0.0.1:$CLOSED/full.fota"
  t=$(cat "$D/clock"); [ $((t - NOW0)) -ge 60000 ] && pass "412: the retry window ran on the test clock ($(( (t - NOW0) / 1000 )) s)" || fail "412 clock" "$((t - NOW0))"
  proxy() {
    "$FOTA_BIN/fault-proxy" --upstream "$NGINX_PORT" --port-file "$WORK/pp" --max-seconds 120 "$@" >/dev/null 2>&1 &
    PP=$!
    for _ in $(seq 50); do [ -s "$WORK/pp" ] && break; sleep 0.05; done
    PURL=http://127.0.0.1:$(cat "$WORK/pp")
  }
  unproxy() { kill "$PP" 2>/dev/null; wait "$PP" 2>/dev/null; rm -f "$WORK/pp"; }
  proxy --fault 'every:status=500'
  mkdev n; result_case "server answers 500" 500 20 10 download-and-update "$PURL/full.fota"
  unproxy
  proxy --fault 'every:drop-after=0'
  mkdev n; result_case "connection dropped before any byte" 503 20 10 download-and-update "$PURL/full.fota"
  unproxy
  proxy --fault 'every:stall=forever'
  mkdev n; result_case "server stalls (low-speed timeout)" 407 20 10 download-and-update "$PURL/full.fota"
  unproxy
  nginx_stop
else
  fail "nginx starts"
fi

# ---- out of space: a file-size limit (ulimit -f, in 1 KiB blocks) ----
# 501: the download cache cannot grow past 100 KiB
mkdev sp
before=$(slots)
( ulimit -f 100; ag -q download-and-update "file://$WWW/full.fota" ); rc=$?
[ "$(report_field result)" = 501 ] && [ "$(state)" = 20 ] && [ $rc = 4 ] && pass "501: the download runs out of space (state 20, exit 4)" || fail "501" "$(report_field result) $(state) $rc"
[ "$(slots)" = "$before" ] && pass "501: both slots untouched" || fail "501 slots"
# 502: downloaded first, then the update cannot write past 200 KiB of the slot
mkdev sp2
ag -q download "file://$WWW/full.fota"
a_before=$(sha256sum <"$D/a.img")
( ulimit -f 200; ag -q update ); rc=$?
[ "$(report_field result)" = 502 ] && [ "$(state)" = 70 ] && [ $rc = 4 ] && pass "502: the update runs out of space (state 70, package kept, exit 4)" || fail "502" "$(report_field result) $(state) $rc"
[ "$(sha256sum <"$D/a.img")" = "$a_before" ] && pass "502: the source slot is untouched" || fail "502 source"
ag -q update && target_ok && [ "$(state)" = 100 ] && pass "Update after 70 with room: 100" || fail "update after 502"

# ---- keep_package: 90 Update Successful Have Data ----
mkdev keep "agent.keep_package=yes"
ag -q download-and-update "file://$WWW/full.fota"
[ "$(state)" = 90 ] && [ -s "$D/state/payloads.cache" ] && pass "keep_package: state 90, the package stays" || fail "90" "$(state)"

# 90 -> 50: Update again with the kept package
ag -q update && [ "$(state)" = 90 ] && target_ok && pass "Update again from 90: 90 -> 50 -> 60 -> 90" || fail "update from 90" "$(state)"
ag -q download-and-update --correlator new-op "file://$WWW/silent.fota" && [ "$(state)" = 90 ] && [ "$(report_field correlator)" = new-op ] \
  && target_ok && pass "a new operation from 90 replaces the kept package (90 -> 10 -> 30 ... -> 90)" || fail "new op from 90" "$(state)"

# 60 -> 80: a corrupt chunk met while streaming into the update (stream mode)
mkdev st "download.mode=stream"
ag -q download-and-update "file://$WWW/corrupt.fota" 2>/dev/null; rc=$?
[ "$(report_field result)" = 402 ] && [ "$(state)" = 80 ] && [ $rc = 8 ] && [ "$(sha256sum <"$D/a.img")" = "$(sha256sum <"$WORK/src.img")" ] \
  && pass "stream: corrupt chunk during the update: 402, 60 -> 80, source untouched" || fail "60 -> 80" "$(report_field result) $(state) $rc"

# 30 -> 20 by cancel: the download prompt deferred (exit 2), then the user cancels
mkdev cx "ui.consent_command=exit 2"
before=$(slots)
ag -q download-and-update "file://$WWW/full.fota"; rc=$?
[ $rc = 15 ] && [ "$(state)" = 30 ] && pass "download prompt deferred: exit 15, state 30" || fail "dl defer" "$rc $(state)"
ag -q cancel && [ "$(state)" = 20 ] && [ "$(report_field result)" = 401 ] && [ "$(slots)" = "$before" ] \
  && pass "cancel in 30: 401, state 20, slots untouched" || fail "cancel 30" "$(state) $(report_field result)"

# ---- policies ----
# silent: no download prompt; the install consent still runs
mkdev sil "ui.consent_command=echo \"\$1\" >> $WORK/sil/hooks.log"
ag -q download-and-update "file://$WWW/silent.fota"
[ "$(cat "$D/hooks.log")" = install ] && target_ok && pass "silent: downloads without asking, consent asked only to install" || fail "silent" "$(cat "$D/hooks.log" 2>&1)"
# medium (default prompt): asked for download and install
mkdev med "ui.consent_command=echo \"\$1\" >> $WORK/med/hooks.log"
ag -q download-and-update "file://$WWW/full.fota"
[ "$(tr '\n' ' ' <"$D/hooks.log")" = "download install " ] && pass "priority medium (prompt): consent asked to download and to install" || fail "medium" "$(cat "$D/hooks.log")"
# low (default notify): notify hook, no download prompt
mkdev low "ui.consent_command=echo \"consent \$1\" >> $WORK/low/hooks.log" "ui.notify_command=echo \"notify \$1 \$FOTA_PRIORITY\" >> $WORK/low/hooks.log"
ag -q download-and-update "file://$WWW/low.fota"
[ "$(tr '\n' ' ' <"$D/hooks.log")" = "notify download low consent install " ] && pass "priority low (notify): notify hook, consent only to install" || fail "low" "$(cat "$D/hooks.log")"
# popup_high = none from config
mkdev hi "ui.consent_command=echo \"consent \$1\" >> $WORK/hi/hooks.log" "ui.popup_high=none"
ag -q download-and-update "file://$WWW/high.fota"
[ "$(tr '\n' ' ' <"$D/hooks.log")" = "consent install " ] && pass "popup_high = none: no download prompt" || fail "popup none" "$(cat "$D/hooks.log")"
# install message: the manifest's, else the config's
mkdev msg "ui.consent_command=printf '%s|%s\n' \"\$2\" \"\$FOTA_INSTALL_MESSAGE\" >> $WORK/msg/hooks.log" "ui.install_message=Config message" "ui.popup_high=none" "ui.popup_medium=none"
ag -q download-and-update "file://$WWW/high.fota"
mkdev msg2 "ui.consent_command=printf '%s\n' \"\$2\" >> $WORK/msg2/hooks.log" "ui.install_message=Config message" "ui.popup_medium=none"
ag -q download-and-update "file://$WWW/full.fota"
[ "$(cat "$WORK/msg/hooks.log")" = "Install firmware 2.0 now?|Install firmware 2.0 now?" ] && [ "$(cat "$WORK/msg2/hooks.log")" = "Config message" ] \
  && pass "install message: the manifest's, else the config's, to the consent hook" || fail "install message" "$(cat "$WORK/msg/hooks.log" "$WORK/msg2/hooks.log")"

# deferral: consent answers 2 (defer), then 0; resume before the interval does not ask
mkdev def "ui.consent_command=n=\$(cat $WORK/def/n 2>/dev/null || echo 0); echo \$((n+1)) > $WORK/def/n; [ \$n -ge 1 ] && exit 0; exit 2" "ui.defer_minutes=30" "ui.popup_medium=none"
before=$(slots)
ag -q download-and-update "file://$WWW/full.fota"; rc=$?
[ $rc = 15 ] && [ "$(state)" = 50 ] && [ "$(slots)" = "$before" ] && pass "defer: exit 15, stays in state 50, slots untouched" || fail "defer" "rc $rc state $(state)"
advance_min 10; ag -q resume; rc=$?
[ $rc = 15 ] && [ "$(cat "$D/n")" = 1 ] && pass "resume before the interval: still deferred, not asked again" || fail "defer early" "rc $rc n $(cat "$D/n")"
advance_min 21; ag -q resume; rc=$?
[ $rc = 0 ] && [ "$(cat "$D/n")" = 2 ] && [ "$(state)" = 100 ] && target_ok && pass "resume after 30 min: asked again, accepted, installed" || fail "defer due" "rc $rc n $(cat "$D/n") state $(state)"

# hook timeout: a consent hook that hangs is killed and taken as defer
mkdev to "ui.consent_command=sleep 30" "ui.hook_timeout_seconds=1" "ui.popup_medium=none"
t0=$(date +%s); ag -q download-and-update "file://$WWW/full.fota"; rc=$?; t1=$(date +%s)
[ $rc = 15 ] && [ $((t1 - t0)) -lt 10 ] && pass "hook timeout: killed after 1 s, taken as defer ($((t1 - t0)) s)" || fail "hook timeout" "rc $rc $((t1 - t0)) s"

# data-charge notice: on cellular the user declines -> 401 before any payload
mkdev dc "network.status_file=$WORK/dc/net" "ui.data_charge_command=echo \"\$1 \$2\" > $WORK/dc/charge; exit 1"
echo home >"$D/net"
result_case "data-charge notice declined on cellular" 401 20 14 download-and-update "file://$WWW/full.fota"
grep -q "^home $(stat -c %s "$WWW/full.fota")$" "$D/charge" && pass "data-charge hook gets the network and the package size" || fail "charge args" "$(cat "$D/charge")"
mkdev dc2 "network.status_file=$WORK/dc2/net" "ui.data_charge_command=touch $WORK/dc2/charge; exit 1"
echo wifi >"$D/net"
ag -q download-and-update "file://$WWW/full.fota" && [ ! -e "$D/charge" ] && target_ok && pass "on wifi: no data-charge notice" || fail "wifi charge"

# roaming: the manifest's deny tightens the config's allow; the download pauses while
# roaming and resumes at home within the retry window (status command reads the clock)
mkdev roam "network.status_command=[ \$(cat $WORK/roam/clock) -lt $((NOW0 + 40000)) ] && echo roaming || echo home" "network.roaming=allow"
ag download-and-update "file://$WWW/deny.fota" 2>"$WORK/roam.err"; rc=$?
[ $rc = 0 ] && target_ok && grep -q "download paused: roaming" "$WORK/roam.err" && [ "$(cat "$D/clock")" -ge $((NOW0 + 40000)) ] \
  && pass "roaming + manifest deny: paused, resumed at home within the window, installed" || fail "roaming pause" "rc $rc $(tail -2 "$WORK/roam.err")"
# roaming in the middle of the download: requests 1-2 at home, 3-6 while roaming (paused),
# then home again; the chunks already fetched are not fetched again
cat >"$WORK/netseq.sh" <<'SH'
#!/bin/sh
n=$(cat "$1" 2>/dev/null || echo 0); n=$((n + 1)); echo $n >"$1"
if [ $n -ge 3 ] && [ $n -le 6 ]; then echo roaming; else echo home; fi
SH
mkdev roam3 "network.status_command=sh $WORK/netseq.sh $WORK/roam3/n" "network.roaming=deny"
ag download-and-update "file://$WWW/full.fota" 2>"$WORK/roam3.err"; rc=$?
got=$(ag status --json | jq_ bytes_received); psize=$(stat -c %s "$WWW/full.fota")
[ $rc = 0 ] && target_ok && [ "$(grep -c "download paused: roaming" "$WORK/roam3.err")" -ge 3 ] && [ "$got" -le "$psize" ] \
  && pass "roaming mid-download: paused $(grep -c "download paused" "$WORK/roam3.err") times, resumed, $got of $psize bytes received (nothing fetched twice)" \
  || fail "roaming mid-download" "rc $rc bytes $got/$psize $(tail -2 "$WORK/roam3.err")"
# always roaming: the window runs out (503), progress kept; at home the same URL continues
mkdev roam2 "network.status_file=$WORK/roam2/net" "network.roaming=allow"
echo roaming >"$D/net"
before=$(slots)
ag -q download-and-update "file://$WWW/deny.fota"; rc=$?
[ "$(report_field result)" = 503 ] && [ "$(state)" = 20 ] && [ "$(slots)" = "$before" ] && pass "roaming for the whole window: 503, slots untouched" || fail "roam 503" "$(report_field result) $(state)"
echo home >"$D/net"
ag -q download-and-update "file://$WWW/deny.fota" && target_ok && pass "back home: the same package continues and installs" || fail "roam continue"
# wifi-only from the config: paused on cellular
mkdev wo "network.status_file=$WORK/wo/net" "network.roaming=wifi-only"
echo home >"$D/net"
ag -q download-and-update "file://$WWW/full.fota" 2>"$WORK/wo.err"
grep -q "wifi-only" "$WORK/wo.err" && [ "$(report_field result)" = 503 ] && pass "wifi-only: no download on cellular" || fail "wifi-only" "$(tail -1 "$WORK/wo.err")"

# delayed reboot: the prompt answers delay 30 twice; the cap (2 deferrals) forces the reboot
mkdev rb "device.reboot_command=date +%s >> $WORK/rb/rebooted" "ui.reboot_prompt_command=echo \"ask \$FOTA_REBOOT_DEFERS\" >> $WORK/rb/hooks.log; echo delay 30" "ui.reboot_max_defers=2" "ui.popup_medium=none"
ag -q download-and-update "file://$WWW/full.fota"
s=$(ag status --json)
[ ! -e "$D/rebooted" ] && [ "$(echo "$s" | jq_ reboot_pending)" = True ] && pass "reboot: delay 30 recorded, no reboot yet" || fail "reboot delay" "$s"
advance_min 20; ag -q resume
[ ! -e "$D/rebooted" ] && [ "$(wc -l <"$D/hooks.log")" = 1 ] && pass "resume before the reboot is due: nothing" || fail "reboot early"
advance_min 11; ag -q resume
[ ! -e "$D/rebooted" ] && [ "$(wc -l <"$D/hooks.log")" = 2 ] && pass "resume when due: asked again, deferred again (2 of 2)" || fail "reboot 2nd" "$(cat "$D/hooks.log")"
advance_min 31; ag -q resume
[ -e "$D/rebooted" ] && [ "$(wc -l <"$D/hooks.log")" = 3 ] && [ "$(ag status --json | jq_ reboot_pending)" = False ] \
  && pass "deferral cap reached: rebooted" || fail "reboot cap" "$(cat "$D/hooks.log")"
ag -q resume; [ "$(wc -l <"$D/rebooted")" = 1 ] && pass "no second reboot" || fail "reboot twice"
mkdev rb2 "device.reboot_command=touch $WORK/rb2/rebooted" "ui.reboot_prompt_command=echo now" "ui.popup_medium=none"
ag -q download-and-update "file://$WWW/full.fota"
[ -e "$D/rebooted" ] && pass "reboot: now" || fail "reboot now"
mkdev rb3 "device.reboot_command=touch $WORK/rb3/rebooted" "ui.reboot_prompt_command=echo delay 2000" "ui.reboot_max_total_minutes=60" "ui.popup_medium=none"
ag -q download-and-update "file://$WWW/full.fota"
[ -e "$D/rebooted" ] && pass "reboot: a delay past the total cap reboots now" || fail "reboot total cap"

# config stays strict
mkdev cf "ui.popup_low=maybe"
expect_rc "config: bad popup value refused" 3 ag -q status
mkdev cf "ui.colour=red"
expect_rc "config: unknown [ui] key refused" 3 ag -q status
