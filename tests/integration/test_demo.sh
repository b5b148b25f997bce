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
