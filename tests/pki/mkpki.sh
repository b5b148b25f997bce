#!/usr/bin/env bash
# mkpki.sh: generate a throw-away test PKI for signature tests, `make demo` and the
# integration tests, with the openssl command line only.
#
# Usage: tests/pki/mkpki.sh [-v] OUTDIR
#
# Writes into OUTDIR (created if missing; existing files of the same names are replaced):
#   root.pem root.key            root CA, ECDSA P-256, self-signed
#   inter.pem inter.key          intermediate CA signed by the root
#   chain.pem                    the intermediates a signer embeds (= inter.pem)
#   signer-ec.pem/.key           signer certificates issued by the intermediate, each with
#   signer-ed25519.pem/.key        keyUsage=critical,digitalSignature and
#   signer-rsa.pem/.key            extendedKeyUsage=codeSigning; rsa is RSA-3072 (PKCS#1),
#   signer-rsapss.pem/.key         rsapss a native RSA-PSS 3072-bit key
#   signer-rsa1024.pem/.key      RSA-1024 signer (must be refused: too weak)
#   signer-p384.pem/.key         ECDSA P-384 signer (refused by fota: P-256 only)
#   expired.pem/.key             EC signer valid 2020-01-01 .. 2021-01-01 only
#   notyet.pem/.key              EC signer valid 2090-01-01 .. 2095-01-01 only
#   wrongusage.pem/.key          EC signer with keyUsage=critical,keyEncipherment only
#   revoked.pem/.key             EC signer revoked (keyCompromise) in crl.pem
#   crl.pem                      CRL issued by the intermediate (PEM), crl.der (DER)
#   other-root.pem other-root.key  an unrelated root CA
#   other-signer.pem/.key        a signer issued by the unrelated root
#   bench-inter.pem/.key         a lean intermediate under the same root, and
#   bench-signer.pem/.key          a lean ECDSA P-256 signer under it, for size
#   bench-chain.pem                benchmarks (= bench-inter.pem): one-attribute names and
#                                  no key identifier extensions, but the same
#                                  basicConstraints, keyUsage and extendedKeyUsage rules
#                                  as the other signers, so they prove exactly as much
# The CAs are valid 2000-01-01 .. 2099-12-31 and the good signers 2001-01-01 ..
# 2099-01-01, so tests may judge validity at any time in between. Key material is new
# on every run; file names never change. Prints nothing on success unless -v.
set -euo pipefail

verbose=0
if [ "${1:-}" = "-v" ]; then verbose=1; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [-v] OUTDIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/fota-pki-XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/log"

# run CMD...: quiet unless -v; on failure show what openssl said and stop.
run() {
  if [ "$verbose" -eq 1 ]; then
    echo "+ $*" >&2
    "$@" >&2
  elif ! "$@" >"$log" 2>&1; then
    echo "mkpki: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

cnf="$work/ca.cnf"
cat >"$cnf" <<CNF
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = unused

[ca]
default_ca = root_ca

[root_ca]
dir = $work/root
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
certificate = $out/root.pem
private_key = $out/root.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes

[inter_ca]
dir = $work/inter
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $out/inter.pem
private_key = $out/inter.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
default_crl_days = 3650
preserve = yes

[other_ca]
dir = $work/other
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
certificate = $out/other-root.pem
private_key = $out/other-root.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes

[bench_ca]
dir = $work/bench
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
certificate = $out/bench-inter.pem
private_key = $out/bench-inter.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes

[policy_any]
organizationName = optional
commonName = supplied

[ext_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ext_inter]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ext_signer]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ext_bench_inter]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = none
authorityKeyIdentifier = none

[ext_bench_signer]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = none
authorityKeyIdentifier = none

[ext_wrongusage]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

for d in root inter other bench; do
  mkdir -p "$work/$d"
  : >"$work/$d/index.txt"
done
echo 1000 >"$work/root/serial"
echo 2000 >"$work/inter/serial"
echo 3000 >"$work/other/serial"
echo 40 >"$work/bench/serial"
echo 01 >"$work/inter/crlnumber"

CA_START=20000101000000Z
CA_END=20991231235959Z
SIGNER_START=20010101000000Z
SIGNER_END=20990101000000Z

# key NAME TYPE: write NAME.key
key() {
  local f="$out/$1.key"
  case $2 in
    ec) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$f" ;;
    p384) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$f" ;;
    ed25519) run openssl genpkey -algorithm ED25519 -out "$f" ;;
    rsa) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$f" ;;
    rsa1024) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$f" ;;
    rsapss) run openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:3072 -out "$f" ;;
  esac
  chmod 600 "$f"
}

# cert NAME CN CA EXT START END [-selfsign]: NAME.key -> NAME.pem issued by CA
# (SUBJ=/CN=... overrides the subject)
cert() {
  local name=$1 cn=$2 ca=$3 ext=$4 start=$5 end=$6
  shift 6
  run openssl req -new -config "$cnf" -key "$out/$name.key" -subj "${SUBJ:-/O=fota test/CN=$cn}" \
    -out "$work/$name.csr"
  run openssl ca -batch -config "$cnf" -name "$ca" -extensions "$ext" -notext \
    -startdate "$start" -enddate "$end" -in "$work/$name.csr" -out "$out/$name.pem" "$@"
}

key root ec
cert root "fota test root" root_ca ext_root $CA_START $CA_END -selfsign -keyfile "$out/root.key"
key inter ec
cert inter "fota test intermediate" root_ca ext_inter $CA_START $CA_END
cp "$out/inter.pem" "$out/chain.pem"

for t in ec ed25519 rsa rsapss rsa1024 p384; do
  key "signer-$t" "$t"
  cert "signer-$t" "fota test signer $t" inter_ca ext_signer $SIGNER_START $SIGNER_END
done

key expired ec
cert expired "fota test expired signer" inter_ca ext_signer 20200101000000Z 20210101000000Z
key notyet ec
cert notyet "fota test not-yet-valid signer" inter_ca ext_signer 20900101000000Z 20950101000000Z
key wrongusage ec
cert wrongusage "fota test wrong-usage signer" inter_ca ext_wrongusage $SIGNER_START $SIGNER_END
key revoked ec
cert revoked "fota test revoked signer" inter_ca ext_signer $SIGNER_START $SIGNER_END
run openssl ca -batch -config "$cnf" -name inter_ca -revoke "$out/revoked.pem" -crl_reason keyCompromise
run openssl ca -batch -config "$cnf" -name inter_ca -gencrl -crldays 3650 -out "$out/crl.pem"
run openssl crl -in "$out/crl.pem" -outform DER -out "$out/crl.der"

key other-root ec
cert other-root "other test root" other_ca ext_root $CA_START $CA_END -selfsign -keyfile "$out/other-root.key"
key other-signer ec
cert other-signer "other test signer" other_ca ext_signer $SIGNER_START $SIGNER_END

key bench-inter ec
SUBJ=/CN=fota-b cert bench-inter "" root_ca ext_bench_inter $CA_START $CA_END
cp "$out/bench-inter.pem" "$out/bench-chain.pem"
key bench-signer ec
SUBJ=/CN=fota-bs cert bench-signer "" bench_ca ext_bench_signer $SIGNER_START $SIGNER_END
