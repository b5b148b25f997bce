/*
 * fuzz_sig.c: libFuzzer harness for CMS signature verification (formats/sig.c).
 *
 * The input is a DER signature, verified over a fixed content against a fixed root (a
 * root CA generated once with tests/pki/mkpki.sh, pasted below with the CRL of its
 * intermediate), at a fixed time (2027-01-15), once without and once with the CRL.
 * Any input may be refused, but never crash, leak or read out of bounds. It aborts (a
 * finding) when
 *   - verification fails without an error code equal to its return value and a message,
 *   - an accepted signature is also accepted over different content,
 *   - an accepted signature leaves fota_sig_info incomplete,
 *   - the CRL-checked verification accepts what the unchecked one refuses.
 * The trust store is loaded from a temporary file on the first call (fota_trust_load
 * reads files only); the file is removed right away.
 *
 * Seeds in tests/fuzz/corpus/sig/: signatures over fuzz_content by the signers of that
 * same mkpki run (ECDSA, Ed25519, RSA, RSA with PSS, native RSA-PSS, with and without
 * signingTime; the revoked, wrong-usage and expired signers; an unrelated root's signer;
 * three made by `openssl cms -sign`: plain, -noattr, and with SMIMECapabilities, which
 * fota refuses). Their keys were throw-away: to make new seeds, run
 * mkpki.sh again and paste its root.pem and crl.pem here.
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined); make check replays the
 * corpus through tests/fuzz/replay_main.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fota/sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char root_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBjTCCATSgAwIBAgICEAAwCgYIKoZIzj0EAwIwLTESMBAGA1UECgwJZm90YSB0\n"
	"ZXN0MRcwFQYDVQQDDA5mb3RhIHRlc3Qgcm9vdDAgFw0wMDAxMDEwMDAwMDBaGA8y\n"
	"MDk5MTIzMTIzNTk1OVowLTESMBAGA1UECgwJZm90YSB0ZXN0MRcwFQYDVQQDDA5m\n"
	"b3RhIHRlc3Qgcm9vdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABGpmbwVvw2/d\n"
	"YKF3/W/VtG71XaTkw7je+4y11qJjnpaF29/ZzIIcXSGOw0E6+hMCLEzPftjs8fOX\n"
	"gZWhF4lxM2GjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0G\n"
	"A1UdDgQWBBSYjAICbZpIu42ylqvdkjgs/su7HjAKBggqhkjOPQQDAgNHADBEAiAp\n"
	"bkAOqO6uLIqKU8fAeQUQ/poldcoyyaLG1RDRaEJLOwIgPA0Bwy6uRHqqBK9u0Lpx\n"
	"1PcIWhYQSXWAAAbX9EHCyM8=\n"
	"-----END CERTIFICATE-----\n";

static const char crl_pem[] =
	"-----BEGIN X509 CRL-----\n"
	"MIHyMIGZAgEBMAoGCCqGSM49BAMCMDUxEjAQBgNVBAoMCWZvdGEgdGVzdDEfMB0G\n"
	"A1UEAwwWZm90YSB0ZXN0IGludGVybWVkaWF0ZRcNMjYxMTI3MDAxNDE1WhcNMzYx\n"
	"MTI0MDAxNDE1WjAjMCECAiAJFw0yNjExMjcwMDE0MTVaMAwwCgYDVR0VBAMKAQGg\n"
	"DjAMMAoGA1UdFAQDAgEBMAoGCCqGSM49BAMCA0gAMEUCIQCEODbB3zYkNr7X0/bJ\n"
	"fUu7v9CHYQ6UPUQ3v62geaUq5gIgUVNZ1VYHB/GkUSuI2MIV8tmAL0g4sAcsJ489\n"
	"EoFg330=\n"
	"-----END X509 CRL-----\n";

static const char fuzz_content[] = "fota fuzz content: a stand-in for manifest.json\n";
#define AT_TIME 1800000000 /* 2027-01-15: the CRL (issued 2026-11-27) is current */

static struct fota_trust *trust, *trust_crl;

/* Write text to a fresh temporary file; returns its malloc'd path. */
static char *temp_file(const char *text)
{
	const char *dir = getenv("TMPDIR");
	size_t n = strlen(dir ? dir : "/tmp") + 32;
	char *path = malloc(n);
	if (!path)
		abort();
	snprintf(path, n, "%s/fuzz-sig-XXXXXX", dir ? dir : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	size_t len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len)
		abort();
	close(fd);
	return path;
}

static void load_trust(void)
{
	struct fota_error e = {0};
	char *ca = temp_file(root_pem), *crl = temp_file(crl_pem);
	const char *cas[1] = {ca};
	if (fota_trust_load(cas, 1, NULL, &trust, &e) != FOTA_OK ||
	    fota_trust_load(cas, 1, crl, &trust_crl, &e) != FOTA_OK) {
		fprintf(stderr, "fuzz_sig: loading the embedded trust: %s\n", e.msg);
		abort();
	}
	unlink(ca);
	unlink(crl);
	free(ca);
	free(crl);
}

static void fail(const char *what, const struct fota_error *e)
{
	fprintf(stderr, "fuzz_sig: %s: %s\n", what, e ? e->msg : "");
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *content = (const uint8_t *)fuzz_content;
	size_t clen = sizeof(fuzz_content) - 1;
	struct fota_error e = {0};
	struct fota_sig_info info;

	if (!trust)
		load_trust();
	fota_status rc = fota_sig_verify(trust, content, clen, data, size, AT_TIME, &info, &e);
	if (rc != FOTA_OK) {
		if (e.code != rc || e.msg[0] == '\0')
			fail("error without a matching code and message", &e);
		if (rc != FOTA_E_SIGNATURE && rc != FOTA_E_TRUST && rc != FOTA_E_LIMIT)
			fail("unexpected error class", &e);
		struct fota_error e2 = {0};
		if (fota_sig_verify(trust_crl, content, clen, data, size, AT_TIME, NULL, &e2) == FOTA_OK)
			fail("accepted with the CRL but refused without", &e);
		return 0;
	}
	if (info.chain_len < 2 || info.chain_len > FOTA_SIG_CHAIN_MAX || !info.signer[0] ||
	    !info.issuer[0] || !info.key_type[0] ||
	    (strcmp(info.digest, "SHA256") != 0 && strcmp(info.digest, "SHA512") != 0) ||
	    info.not_before > AT_TIME || info.not_after < AT_TIME || info.signing_time < -1)
		fail("accepted with incomplete info", NULL);
	uint8_t other[sizeof(fuzz_content)];
	memcpy(other, content, clen);
	other[clen / 2] ^= 1;
	if (fota_sig_verify(trust, other, clen, data, size, AT_TIME, NULL, &e) != FOTA_E_SIGNATURE)
		fail("accepted over different content", &e);
	fota_status rc_crl = fota_sig_verify(trust_crl, content, clen, data, size, AT_TIME, NULL, &e);
	if (rc_crl != FOTA_OK && (rc_crl != FOTA_E_TRUST || e.msg[0] == '\0'))
		fail("refused with the CRL for a reason other than trust", &e);
	return 0;
}
