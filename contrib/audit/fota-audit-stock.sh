#!/bin/sh
# fota-audit-stock.sh: check a fota package with stock tools only, no fota code:
# GNU tar, openssl (cms), sha256sum and zstd, plus grep, sed, cut, paste, wc and mktemp.
# It is the recipe of docs/auditors.md as one script; read it, it is short on purpose.
#
# Usage: fota-audit-stock.sh PKG.fota ROOT.pem [CRL.pem]
#
# Checks, and stops at the first failure (exit 1):
#   1. the members: manifest.json, manifest.sig, then only regular files named
#      images/<image>/<NNNNNN>.zst or .fdp, as many as the manifest has payloads;
#   2. the CMS signature over the exact bytes of manifest.json, chained to ROOT.pem (and
#      not revoked by CRL.pem when given), at the current time;
#   3. every payload's SHA-256 against the signed manifest, in manifest order;
#   4. every full chunk: its decompressed bytes against the chunk's target_sha256; for a
#      package of full chunks only, the whole rebuilt image against target.sha256.
# Delta chunks need the fota delta engine to rebuild: use fota-verify --source for them.
# The manifest is read with grep, which works on the compact canonical JSON fota-pack
# writes (FORMAT.md section 3); any other layout makes step 1 fail (no hashes found),
# never pass silently. Exit 0: all checks passed; 1: a check failed; 2: usage.
set -eu
[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $0 PKG.fota ROOT.pem [CRL.pem]" >&2; exit 2; }
abspath() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
pkg=$(abspath "$1"); root=$(abspath "$2"); crl=${3:+$(abspath "$3")}
die() { echo "FAIL: $*" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/fota-audit-XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"

# 1. members: list (and check types and names) before extracting anything
tar -tvf "$pkg" >listing || die "not a tar archive"
tar -tf "$pkg" >names
[ "$(sed -n 1p names)" = manifest.json ] || die "first member is not manifest.json"
[ "$(sed -n 2p names)" = manifest.sig ] || die "second member is not manifest.sig (unsigned package?)"
grep -qv '^-' listing && die "a member is not a regular file"
tail -n +3 names >payloads
re='^images/[a-z0-9_-]{1,32}/[0-9]{6}\.(zst|fdp)$'
grep -Evq "$re" payloads && die "unexpected member name: $(grep -Ev "$re" payloads | head -1)"
tar -xf "$pkg"
grep -o '"payload_sha256":"[0-9a-f]\{64\}"' manifest.json | cut -d'"' -f4 >hashes
n=$(wc -l <payloads)
[ "$(wc -l <hashes)" -eq "$n" ] || die "$(wc -l <hashes) payload hashes in the manifest, $n payload members"
echo "members: manifest.json, manifest.sig, $n payloads"

# 2. the signature, over the exact manifest bytes. openssl cms takes CRLs from the
#    -CAfile, so a CRL is appended to a copy of the root (converted to PEM first).
cp "$root" trust.pem
set --
if [ -n "$crl" ]; then
  openssl crl -in "$crl" >>trust.pem 2>/dev/null || openssl crl -inform DER -in "$crl" >>trust.pem || die "CRL unreadable"
  set -- -crl_check
fi
openssl cms -verify -binary -inform DER -in manifest.sig -content manifest.json -CAfile trust.pem "$@" \
  -purpose any -signer signer.pem -out /dev/null 2>err || die "signature: $(cat err)"
echo "signature: $(cat err)"
openssl x509 -in signer.pem -noout -subject -issuer -enddate | sed 's/^/  signer /'

# 3. payloads against the signed manifest
paste -d' ' hashes payloads | sed 's/ /  /' >SHA256SUMS
sha256sum -c --quiet SHA256SUMS || die "a payload does not match its manifest hash"
echo "payloads: all $n match their payload_sha256"

# 4. full chunks: decompressed bytes against target_sha256
grep -o '"target_sha256":"[0-9a-f]\{64\}","method":"[a-z]*"' manifest.json | cut -d'"' -f4,8 | tr '"' ' ' >chunks
[ "$(wc -l <chunks)" -eq "$n" ] || die "chunk list and payload list differ in length"
paste -d' ' chunks payloads >plan
full=0 delta=0
while read -r want method p; do
  if [ "$method" = full ]; then
    got=$(zstd -qdc "$p" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$p: decompressed bytes do not match target_sha256"
    full=$((full + 1))
  else
    delta=$((delta + 1))
  fi
done <plan
echo "chunks: $full full chunks rebuild their target_sha256; $delta delta chunks (fota-verify --source rebuilds those)"
images=$(grep -o '"target":{"size":[0-9]*,"sha256":"[0-9a-f]\{64\}"}' manifest.json | wc -l)
if [ "$delta" -eq 0 ] && [ "$images" -eq 1 ] && grep -q '"mode":"ab"' manifest.json; then
  want=$(grep -o '"target":{"size":[0-9]*,"sha256":"[0-9a-f]\{64\}"}' manifest.json | cut -d'"' -f8)
  got=$(while read -r p; do zstd -qdc "$p"; done <payloads | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "the rebuilt image does not match target.sha256"
  echo "image: the payloads in order rebuild the target, sha256 $got"
fi
sed -n 's/.*"package":{\([^}]*\)}.*"devices":{\([^}]*\)}.*"expires":\([^,]*\),.*/package: \1; devices: \2; expires: \3/p' manifest.json
echo "OK"
