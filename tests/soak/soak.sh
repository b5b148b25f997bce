#!/usr/bin/env bash
# make soak: 200 consecutive updates (A->B, B->A, ...) through nginx and the fault proxy,
# with random network faults and random simulated power cuts (tests/soak/soak.c).
# Usage: tests/soak/soak.sh BUILD   (SOAK_UPDATES, default 200; SOAK_SEED, default the time)
# Prints progress every 20 updates and a summary; exits 1 if any update did not end with
# its exact target image. Leaves no process running (nginx and the proxy are stopped at exit).
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
export FOTA_BIN FOTA_TOP=$top
FOTA_BIN=$(cd "$BUILD" && pwd) || exit 2
. "$top/tests/integration/lib.sh"
. "$top/tests/integration/nginx.sh"
UPDATES=${SOAK_UPDATES:-200}
SEED=${SOAK_SEED:-$(date +%s)}
for b in soak fault-proxy fota-pack; do
  [ -x "$FOTA_BIN/$b" ] || { echo "soak: $FOTA_BIN/$b missing (make BUILD=$BUILD all $BUILD/soak)" >&2; exit 2; }
done
echo "soak: seed $SEED, $UPDATES updates; preparing images and packages in $WORK"
bash "$top/tests/pki/mkpki.sh" "$WORK/pki" >/dev/null 2>&1 || { echo "soak: mkpki failed" >&2; exit 1; }
cp "$WORK/pki/root.pem" "$WORK/root.pem"
# A and B: 4 MiB firmware-like images, B moves data backward and forward and edits bytes
python3 - "$WORK" "$SEED" <<'PY'
import random, sys
w, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
a = bytearray()
for i in range(64):
    k = i % 3
    a += r.randbytes(65536) if k == 0 else (b"soak table entry %d " % i) * (65536 // 20) + b"\0" * (65536 % 20) if k == 1 else bytes(65536)
n = len(a)
b = a[:200000] + a[260000:2400000] + r.randbytes(60000) + a[2390000:]
b = bytearray(b[:n])
for i in range(0, n, 5003):
    b[i] ^= 0x6d
open(w + "/a.img", "wb").write(a)
open(w + "/b.img", "wb").write(b)
PY
WWW=$WORK/www; mkdir -p "$WWW"
sign="--key $WORK/pki/signer-ec.key --cert $WORK/pki/signer-ec.pem --chain $WORK/pki/chain.pem"
common="$sign --chunk-size 64K --device-model HX-100 --level 3 --quiet"
pk() { "$FOTA_BIN/fota-pack" "$@" $common || { echo "soak: fota-pack $* failed" >&2; exit 1; }; }
pk --from "$WORK/a.img" --to "$WORK/b.img" -o "$WWW/ab-a2b.fota"
pk --from "$WORK/b.img" --to "$WORK/a.img" -o "$WWW/ab-b2a.fota"
pk --to "$WORK/b.img" -o "$WWW/abfull-a2b.fota"
pk --to "$WORK/a.img" -o "$WWW/abfull-b2a.fota"
pk --from "$WORK/a.img" --to "$WORK/b.img" --mode inplace --scratch-max 2M -o "$WWW/ip-a2b.fota"
pk --from "$WORK/b.img" --to "$WORK/a.img" --mode inplace --scratch-max 2M -o "$WWW/ip-b2a.fota"
for f in ab-a2b ab-b2a abfull-a2b abfull-b2a ip-a2b ip-b2a; do
  cp "$WWW/$f.fota" "$WWW/$f.r.fota"; touch -d '2020-01-02 03:04:05' "$WWW/$f.r.fota"
done
ls -l "$WWW" | awk 'NR > 1 && $NF !~ /\.r\./ { printf "  %-14s %9d bytes\n", $NF, $5 }'
nginx_start "$WWW" || exit 1
"$FOTA_BIN/soak" "$WORK" "$NGINX_PORT" "$FOTA_BIN/fault-proxy" "$UPDATES" "$SEED"
rc=$?
echo "  nginx sent         $(nginx_bytes_sent) bytes (includes what the proxy cut off)"
echo "  image              $(stat -c %s "$WORK/a.img") bytes; seed $SEED (SOAK_SEED=$SEED make soak makes the same random choices)"
exit $rc
