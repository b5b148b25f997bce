#!/usr/bin/env bash
# bench/hash.sh BUILD: SHA-256 throughput of libfota's two-lane pair (formats/hash_pair.c,
# the chunk and image digests of the agent's read-back and of fota-verify) next to one
# and two OpenSSL digests over the same data. Builds bench/hash_pair_speed.c against
# BUILD/libfota.a. No target: it shows why the agent's apply makes one pass over the
# target instead of two.
set -u
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
lib=$BUILD/libfota.a
[ -f "$lib" ] || { echo "bench/hash: $lib missing"; exit 1; }
mkdir -p bench/out
exe=bench/out/hash_pair_speed
${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Iformats/include -o "$exe" bench/hash_pair_speed.c "$lib" -lcrypto ||
  { echo "bench/hash: cannot build $exe"; exit 1; }
out=$("$exe") || { echo "bench/hash: $exe failed"; exit 1; }
printf '%s\n' "$out" | grep -v '^JSON '
printf '%s\n' "$out" | sed -n 's/^JSON //p' >bench/out/hash.json
echo "wrote bench/out/hash.json"
