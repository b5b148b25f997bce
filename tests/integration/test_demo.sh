#!/usr/bin/env bash
# Integration: `make demo` works. Runs ci/demo.sh against the binaries under test with its
# files in a temp dir (DEMO_OUT), then checks what it claims from the files it left:
# the exit status, the packages, the network faults in the proxy's log, the kill during
# the apply, slot b byte-identical to new.img and slot a untouched, the switch hook, the
# agent's final state, no process left behind, and the 2-minute budget. Then the
# auditor's stock-tool recipe against the demo's packages and tampered copies.
. "$(dirname "$0")/lib.sh"

if [ ! -x "$FOTA_BIN/fota-agent" ] || [ ! -x "$FOTA_BIN/fault-proxy" ]; then
  fail "demo: binaries built" "fota-agent or fault-proxy missing in $FOTA_BIN"; exit 0
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  fail "demo: nginx installed" "apt-get install nginx-light"; exit 0
fi
D=$WORK/demo
t0=$(date +%s)
DEMO_OUT=$D bash "$FOTA_TOP/ci/demo.sh" "$FOTA_BIN" >"$WORK/demo.log" 2>&1
rc=$?
t=$(( $(date +%s) - t0 ))
if [ "$rc" -eq 0 ]; then pass "demo: exits 0 (${t} s)"; else fail "demo: exits 0" "exit $rc: $(tail -5 "$WORK/demo.log" | tr '\n' ' ')"; fi
[ "$t" -lt 120 ] && pass "demo: under 2 minutes (${t} s)" || fail "demo: under 2 minutes" "${t} s"
grep -q '^   DEMO OK$' "$WORK/demo.log" && pass "demo: prints DEMO OK" || fail "demo: prints DEMO OK"

# packages and the auditor's recipe
for f in demo.fota www/demo-delta.fota demo-inplace.fota; do
  [ -s "$D/$f" ] && pass "demo: $f written" || fail "demo: $f written"
done
grep -q 'signature: CMS Verification successful' "$WORK/demo.log" && grep -q 'payloads: all 96 match' "$WORK/demo.log" \
  && grep -q 'image: the payloads in order rebuild the target' "$WORK/demo.log" \
  && pass "demo: stock-tool audit ran" || fail "demo: stock-tool audit ran"

# the auditor's recipe (contrib/audit/fota-audit-stock.sh, docs/auditors.md) on the
# demo's packages: accepts the three, refuses tampering, an unknown root and a revoked signer
AUDIT="sh $FOTA_TOP/contrib/audit/fota-audit-stock.sh"
for f in demo.fota www/demo-delta.fota demo-inplace.fota; do
  check "audit recipe accepts $f" $AUDIT "$D/$f" "$D/pki/root.pem" "$D/pki/crl.pem"
done
# flip the first data byte of member N (1 = manifest.json, 2 = manifest.sig, 3.. = payloads)
flip_member() { # IN OUT N
  python3 - "$@" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); want = int(sys.argv[3]); off = 0; i = 0
while True:
    size = int(b[off + 124:off + 136].split(b"\0")[0].strip() or b"0", 8); i += 1
    if i == want:
        b[off + 512 + size // 2] ^= 0x01; break
    off += 512 + (size + 511) // 512 * 512
open(sys.argv[2], "wb").write(b)
PY
}
flip_member "$D/demo.fota" "$WORK/t-manifest.fota" 1
flip_member "$D/demo.fota" "$WORK/t-sig.fota" 2
flip_member "$D/demo.fota" "$WORK/t-payload.fota" 40
for t in manifest sig payload; do
  expect_rc "audit recipe refuses a flipped $t byte" 1 $AUDIT "$WORK/t-$t.fota" "$D/pki/root.pem"
done
expect_rc "audit recipe refuses an unrelated root" 1 $AUDIT "$D/demo.fota" "$D/pki/other-root.pem"
tar -xOf "$D/demo.fota" manifest.json >"$WORK/m.json"
"$FOTA_BIN/fota-pack" --to "$D/new.img" --chunk-size 256K --name demo-firmware --version 1.1 --from-version 1.0 \
  --device-model FOTA-DEMO-1 --security-version 1 --priority high --install-message "Security update 1.1" \
  --unsigned --quiet -o "$WORK/u.fota" >/dev/null 2>&1
openssl cms -sign -binary -noattr -md sha256 -in "$WORK/m.json" -signer "$D/pki/revoked.pem" -inkey "$D/pki/revoked.key" \
  -certfile "$D/pki/chain.pem" -outform DER -out "$WORK/rev.sig" 2>/dev/null
"$FOTA_BIN/fota-pack" --attach-signature "$WORK/rev.sig" --quiet -o "$WORK/rev.fota" "$WORK/u.fota" >/dev/null 2>&1
check "audit recipe: a revoked signer passes without the CRL" $AUDIT "$WORK/rev.fota" "$D/pki/root.pem"
expect_rc "audit recipe refuses a revoked signer with the CRL" 1 $AUDIT "$WORK/rev.fota" "$D/pki/root.pem" "$D/pki/crl.pem"

# the network faults happened, as the proxy logged them
grep -q 'end=dropped.*drop-after=16384' "$D/proxy.log" 2>/dev/null && pass "demo: a connection was dropped mid-payload" \
  || fail "demo: a connection was dropped mid-payload" "$(head -3 "$D/proxy.log" 2>/dev/null | tr '\n' ' ')"
grep -q 'status=503 .*fault=req=3:status=503' "$D/proxy.log" 2>/dev/null && pass "demo: a request was answered 503" \
  || fail "demo: a request was answered 503"
# after the drop, the retries asked for the bytes not yet received, never from the start
drop_line=$(grep 'end=dropped' "$D/proxy.log" 2>/dev/null | head -1)
start=$(echo "$drop_line" | sed -n 's/.*range=bytes=\([0-9]*\)-.*/\1/p')
retry=$(grep '^req=4 ' "$D/proxy.log" 2>/dev/null | sed -n 's/.*range=bytes=\([0-9]*\)-.*/\1/p')
if [ -n "$start" ] && [ -n "$retry" ] && [ "$retry" -ge $((start + 16384)) ]; then
  pass "demo: the download resumed at byte $retry (dropped request started at $start)"
else
  fail "demo: the download resumed after the drop" "dropped at ${start:-?}, retry from ${retry:-?}"
fi

# the kill landed during the apply and resume completed it
grep -qE 'POWER CUT \(kill -9, standing in for power loss\) after chunk [0-9]+/96 was applied: exit 137' "$WORK/demo.log" \
  && pass "demo: agent killed mid-apply" || fail "demo: agent killed mid-apply" "$(grep -E 'kill|POWER' "$WORK/demo.log" | tr '\n' ' ')"
grep -q "journal: phase 'applying'" "$WORK/demo.log" && pass "demo: journal said applying after the kill" \
  || fail "demo: journal said applying after the kill"
cmp -s "$D/device/slot_b.img" "$D/new.img" && pass "demo: slot b is byte-identical to new.img" || fail "demo: slot b is byte-identical to new.img"
cmp -s "$D/device/slot_a.img" "$D/old.img" && pass "demo: slot a untouched" || fail "demo: slot a untouched"
[ "$(cat "$D/device/bootslot" 2>/dev/null)" = b ] && pass "demo: switch hook chose slot b" || fail "demo: switch hook chose slot b"
st=$("$FOTA_BIN/fota-agent" -c "$D/device/agent.conf" status --json 2>&1)
case $st in *'"phase":"done"'*'"result":0,'*) pass "demo: agent job done, result 0" ;; *) fail "demo: agent job done" "$st" ;; esac
rep=$("$FOTA_BIN/fota-agent" -c "$D/device/agent.conf" report --json 2>&1)
if echo "$rep" | jq -e '.result == 200 and .correlator == "demo-0001" and (.alert_type | endswith(".downloadandupdate"))' >/dev/null 2>&1; then
  pass "demo: FUMO report: 200, correlator demo-0001, DownloadAndUpdate"
else
  fail "demo: FUMO report" "$rep"
fi
grep -q '<Data>1226</Data>' "$WORK/demo.log" && pass "demo: prints the SyncML Alert 1226" || fail "demo: prints the SyncML Alert 1226"

# nothing left running
left=$(pgrep -f "$WORK" || true)
[ -z "$left" ] && pass "demo: no process left running" || fail "demo: no process left running" "$(ps -o pid,args -p "$left" | tail -n +2)"
grep -q 'no process left running' "$WORK/demo.log" && pass "demo: its own process check passed" || fail "demo: its own process check passed"

# ---- contrib/: the slot-switch hooks and systemd units of docs/integrators.md ----
H=$FOTA_TOP/contrib/hooks
# active-slot.sh reads the running slot from the kernel command line
echo 'BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=system_b ro fota.slot=b quiet' >"$WORK/cmdline-b"
echo 'console=ttyS0 root=PARTLABEL=system_a rootwait' >"$WORK/cmdline-a"
echo 'root=/dev/mmcblk0p2' >"$WORK/cmdline-none"
[ "$(FOTA_CMDLINE=$WORK/cmdline-b sh "$H/active-slot.sh")" = b ] && pass "active-slot.sh: fota.slot=b" || fail "active-slot.sh: fota.slot=b"
[ "$(FOTA_CMDLINE=$WORK/cmdline-a sh "$H/active-slot.sh")" = a ] && pass "active-slot.sh: root=PARTLABEL=system_a" || fail "active-slot.sh: root=PARTLABEL"
expect_rc "active-slot.sh: no slot on the command line exits 1" 1 env FOTA_CMDLINE="$WORK/cmdline-none" sh "$H/active-slot.sh"

if command -v fw_setenv >/dev/null && command -v fw_printenv >/dev/null && command -v mkenvimage >/dev/null; then
  # a redundant, file-backed U-Boot environment made from contrib/bootloader/uboot-env.txt
  grep -v '^#' "$FOTA_TOP/contrib/bootloader/uboot-env.txt" >"$WORK/uboot-env.txt"
  mkenvimage -r -s 0x4000 -o "$WORK/uboot.env0" "$WORK/uboot-env.txt" && cp "$WORK/uboot.env0" "$WORK/uboot.env1"
  printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$WORK/uboot.env0" "$WORK/uboot.env1" >"$WORK/fw_env.config"
  ub() { fw_printenv -c "$WORK/fw_env.config" -n "$1" 2>/dev/null; }
  [ "$(ub fota_slot)" = a ] && [ "$(ub bootlimit)" = 3 ] && pass "uboot-env.txt builds an environment (fota_slot=a, bootlimit=3)" \
    || fail "uboot-env.txt builds an environment"
  # a real A/B update with the U-Boot hook and active-slot.sh as the agent's hooks
  U=$WORK/ubdev; mkdir -p "$U/state"
  cp "$D/old.img" "$U/a.img"; head -c $((24 << 20)) /dev/urandom >"$U/b.img"
  # the demo device's configuration, with these slots and the contrib hooks
  sed -e "s#^slot_a = .*#slot_a = $U/a.img#" -e "s#^slot_b = .*#slot_b = $U/b.img#" \
    -e "s#^active_slot = .*#active_slot_command = FOTA_CMDLINE=$WORK/cmdline-a sh $H/active-slot.sh#" \
    -e "s#^switch_command = .*#switch_command = FW_ENV_CONFIG=$WORK/fw_env.config sh $H/uboot-switch-slot.sh#" \
    -e "s#^state_dir = .*#state_dir = $U/state#" "$D/device/agent.conf" >"$U/agent.conf"
  check "agent with the U-Boot hooks: download-and-update exits 0" \
    "$FOTA_BIN/fota-agent" -q -c "$U/agent.conf" download-and-update "file://$D/www/demo-delta.fota"
  cmp -s "$U/b.img" "$D/new.img" && pass "agent with the U-Boot hooks: slot b is new.img" || fail "agent with the U-Boot hooks: slot b is new.img"
  [ "$(ub fota_slot)/$(ub fota_prev_slot)/$(ub upgrade_available)/$(ub bootcount)" = "b/a/1/0" ] \
    && pass "uboot-switch-slot.sh: fota_slot=b, fota_prev_slot=a, upgrade_available=1, bootcount=0" \
    || fail "uboot-switch-slot.sh: env after the switch" "$(ub fota_slot)/$(ub fota_prev_slot)/$(ub upgrade_available)/$(ub bootcount)"
  # a rerun (as resume does after a cut) changes nothing, also from the new slot
  FOTA_SLOT=b FW_ENV_CONFIG=$WORK/fw_env.config sh "$H/uboot-switch-slot.sh" >/dev/null
  [ "$(ub fota_prev_slot)/$(ub upgrade_available)" = "a/1" ] && pass "uboot-switch-slot.sh: a rerun keeps the fallback slot" \
    || fail "uboot-switch-slot.sh: a rerun keeps the fallback slot"
  FW_ENV_CONFIG=$WORK/fw_env.config sh "$H/uboot-boot-ok.sh" >/dev/null
  [ "$(ub upgrade_available)/$(ub fota_slot)" = "0/b" ] && pass "uboot-boot-ok.sh: slot b confirmed" || fail "uboot-boot-ok.sh: slot b confirmed"
  expect_rc "uboot-switch-slot.sh refuses FOTA_SLOT=c" 2 env FOTA_SLOT=c FW_ENV_CONFIG="$WORK/fw_env.config" sh "$H/uboot-switch-slot.sh"
else
  echo "SKIP: U-Boot hooks: fw_setenv/mkenvimage not installed (libubootenv-tool, u-boot-tools)"
fi

if command -v grub-editenv >/dev/null; then
  G=$WORK/grubenv
  ge() { grub-editenv "$G" list | sed -n "s/^$1=//p"; }
  check "grub-switch-slot.sh: switch to b" env GRUBENV="$G" FOTA_SLOT=b sh "$H/grub-switch-slot.sh"
  [ "$(ge fota_slot)/$(ge fota_prev_slot)/$(ge fota_pending)" = "b/a/1" ] && pass "grub-switch-slot.sh: fota_slot=b, fota_prev_slot=a, fota_pending=1" \
    || fail "grub-switch-slot.sh: env after the switch"
  # what grub-fota.cfg does at the trial boot, then a rerun of the hook from the new slot
  grub-editenv "$G" set fota_trying=1 fota_pending=
  GRUBENV=$G FOTA_SLOT=b sh "$H/grub-switch-slot.sh" >/dev/null
  [ "$(ge fota_prev_slot)/$(ge fota_trying)" = "a/1" ] && pass "grub-switch-slot.sh: a rerun keeps the trial state" \
    || fail "grub-switch-slot.sh: a rerun keeps the trial state"
  GRUBENV=$G sh "$H/grub-boot-ok.sh" >/dev/null
  [ -z "$(ge fota_trying)$(ge fota_pending)" ] && [ "$(ge fota_slot)" = b ] && pass "grub-boot-ok.sh: slot b confirmed" || fail "grub-boot-ok.sh: slot b confirmed"
  GRUBENV=$G FOTA_SLOT=a sh "$H/grub-switch-slot.sh" >/dev/null
  [ "$(ge fota_slot)/$(ge fota_prev_slot)" = "a/b" ] && pass "grub-switch-slot.sh: the next update switches back to a" || fail "grub-switch-slot.sh: back to a"
  if command -v grub-script-check >/dev/null; then
    check "grub-fota.cfg passes grub-script-check" grub-script-check "$FOTA_TOP/contrib/bootloader/grub-fota.cfg"
  fi
else
  echo "SKIP: GRUB hooks: grub-editenv not installed (grub-common)"
fi

if command -v systemd-analyze >/dev/null; then
  mkdir -p "$WORK/units"
  for u in "$FOTA_TOP"/contrib/systemd/*; do
    sed 's#^ExecStart=[^ ]*#ExecStart=/bin/true#' "$u" >"$WORK/units/${u##*/}"
  done
  # verify exits 0 on unknown keys and bad values, but prints them: any output fails
  out=$(cd "$WORK/units" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no ./*.service ./*.timer 2>&1)
  rc=$?
  [ "$rc" -eq 0 ] && [ -z "$out" ] && pass "contrib/systemd units pass systemd-analyze verify, no warning" \
    || fail "contrib/systemd units pass systemd-analyze verify" "exit $rc: $out"
else
  echo "SKIP: systemd units: systemd-analyze not installed"
fi
