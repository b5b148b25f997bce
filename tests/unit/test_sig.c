/*
 * Suite formats/sig: CMS signing and verification against a PKI made by
 * tests/pki/mkpki.sh, with the openssl command line as the independent checker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "fota/manifest.h"
#include "fota/sig.h"

static const uint8_t content[] = "{\"format\":1,\"name\":\"unit\"}\n";
#define CONTENT_LEN (sizeof(content) - 1)

/* The PKI directory, generated once per process; NULL when mkpki.sh failed. */
static const char *pki_dir(void)
{
	static char dir[512];
	static int state; /* 0 not tried, 1 ok, -1 failed */
	if (state == 0) {
		const char *top = getenv("FOTA_TOP");
		char script[600], cmd[1400];
		snprintf(script, sizeof(script), "%s/tests/pki/mkpki.sh", top ? top : ".");
		snprintf(dir, sizeof(dir), "%s/pki", unit_tmpdir());
		snprintf(cmd, sizeof(cmd), "bash '%s' '%s'", script, dir);
		state = system(cmd) == 0 ? 1 : -1;
	}
	return state == 1 ? dir : NULL;
}

/* Path of a PKI file in a rotating static buffer (up to 4 live at once). */
static const char *pki(const char *name)
{
	static char bufs[4][600];
	static unsigned next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", pki_dir() ? pki_dir() : "/nonexistent", name);
	return b;
}

/* Sign content with PKI files NAME.key/NAME.pem (+ chain.pem unless an other-* signer). */
static fota_status sign_as(const char *name, enum fota_sig_padding pad, const uint8_t *data,
			   size_t len, int64_t when, uint8_t **der, size_t *der_len,
			   struct fota_error *e)
{
	char key[64], cert[64];
	struct fota_signer *s = NULL;
	snprintf(key, sizeof(key), "%s.key", name);
	snprintf(cert, sizeof(cert), "%s.pem", name);
	const char *chain = strncmp(name, "other-", 6) == 0 ? NULL : pki("chain.pem");
	fota_status st = fota_signer_load(pki(key), pki(cert), chain, pad, &s, e);
	if (st != FOTA_OK)
		return st;
	st = fota_sig_sign(s, data, len, when, der, der_len, e);
	fota_signer_free(s);
	return st;
}

static struct fota_trust *trust_of(const char *ca, const char *crl)
{
	const char *cas[1] = {pki(ca)};
	struct fota_trust *t = NULL;
	struct fota_error e;
	if (fota_trust_load(cas, 1, crl ? pki(crl) : NULL, &t, &e) != FOTA_OK) {
		fprintf(stderr, "trust_of: %s\n", e.msg);
		return NULL;
	}
	return t;
}

/* Run `openssl cms -verify` on a signature over content; returns its exit status. */
static int openssl_verify(const uint8_t *der, size_t der_len, const char *ca)
{
	char *sig = unit_write_file("cli.sig", der, der_len);
	char *dat = unit_write_file("cli.dat", content, CONTENT_LEN);
	char cmd[2048];
	int rc = -1;
	if (sig && dat) {
		snprintf(cmd, sizeof(cmd),
			 "openssl cms -verify -binary -inform DER -in '%s' -content '%s' -CAfile '%s' "
			 "-purpose any -out /dev/null >/dev/null 2>&1",
			 sig, dat, pki(ca));
		rc = system(cmd);
	}
	free(sig);
	free(dat);
	return rc;
}

/*
 * Sign with openssl cms -sign (extra options appended: pass -nosmimecap for a signature
 * fota accepts); the DER is returned, NULL on failure.
 */
static uint8_t *openssl_sign(const char *name, const char *extra, size_t *len)
{
	char *dat = unit_write_file("cli-in.dat", content, CONTENT_LEN);
	char out[600], cmd[3000];
	uint8_t *der = NULL;
	snprintf(out, sizeof(out), "%s/cli-out.sig", unit_tmpdir());
	if (dat) {
		snprintf(cmd, sizeof(cmd),
			 "openssl cms -sign -binary -outform DER -in '%s' -out '%s' "
			 "-signer '%s/%s.pem' -inkey '%s/%s.key' -certfile '%s' %s >/dev/null 2>&1",
			 dat, out, pki_dir(), name, pki_dir(), name, pki("chain.pem"), extra);
		if (system(cmd) == 0)
			der = unit_read_file(out, len);
	}
	free(dat);
	return der;
}

/*
 * Whether the local openssl CLI handles Ed25519 in CMS at all. OpenSSL 3.0 does not
 * (it passes a digest name to pure EdDSA: "invalid digest"), so on such a system the
 * stock-openssl cross-check is skipped for Ed25519 only, and says so.
 */
static int cli_does_ed25519(void)
{
	static int state; /* 0 unknown, 1 yes, -1 no */
	if (state == 0) {
		size_t n = 0;
		uint8_t *der = openssl_sign("signer-ed25519", "-nosmimecap -md sha512", &n);
		state = der && openssl_verify(der, n, "root.pem") == 0 ? 1 : -1;
		if (state < 0)
			fprintf(stderr, "[openssl CLI cannot sign/verify Ed25519 CMS: Ed25519 cross-check skipped] ");
		free(der);
	}
	return state > 0;
}

static void test_sig_pki_generated(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	FILE *f = fopen(pki("crl.pem"), "r");
	CU_ASSERT_PTR_NOT_NULL(f);
	if (f)
		fclose(f);
}

static void test_sig_each_key_type(void)
{
	static const struct {
		const char *name;
		enum fota_sig_padding pad;
		const char *key_type, *digest;
	} cases[] = {
		{"signer-ec", FOTA_SIG_PAD_DEFAULT, "ECDSA P-256", "SHA256"},
		{"signer-ed25519", FOTA_SIG_PAD_DEFAULT, "Ed25519", "SHA512"}, /* RFC 8419 3.1 */
		{"signer-rsa", FOTA_SIG_PAD_DEFAULT, "RSA-3072", "SHA256"},
		{"signer-rsa", FOTA_SIG_PAD_PSS, "RSA-PSS-3072", "SHA256"},
		{"signer-rsapss", FOTA_SIG_PAD_DEFAULT, "RSA-PSS-3072", "SHA256"},
		{"signer-ec", FOTA_SIG_PAD_PSS, "ECDSA P-256", "SHA256"}, /* pad ignored for non-RSA keys */
	};
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *der = NULL;
		size_t n = 0;
		struct fota_error e = {0};
		struct fota_sig_info info;
		fota_status st = sign_as(cases[i].name, cases[i].pad, content, CONTENT_LEN, -1, &der, &n, &e);
		CU_ASSERT_EQUAL(st, FOTA_OK);
		if (st != FOTA_OK) {
			fprintf(stderr, "%s: %s\n", cases[i].name, e.msg);
			continue;
		}
		CU_ASSERT(n > 0 && n <= FOTA_SIG_MAX);
		st = fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, &info, &e);
		CU_ASSERT_EQUAL(st, FOTA_OK);
		if (st != FOTA_OK)
			fprintf(stderr, "%s: %s\n", cases[i].name, e.msg);
		CU_ASSERT_STRING_EQUAL(info.key_type, cases[i].key_type);
		CU_ASSERT_STRING_EQUAL(info.digest, cases[i].digest);
		CU_ASSERT_EQUAL(info.signing_time, -1);
		CU_ASSERT_EQUAL(info.chain_len, 3);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.signer, "CN=fota test signer"));
		CU_ASSERT_PTR_NOT_NULL(strstr(info.chain[0], "CN=fota test signer"));
		CU_ASSERT_STRING_EQUAL(info.issuer, "CN=fota test intermediate,O=fota test");
		CU_ASSERT_STRING_EQUAL(info.chain[1], "CN=fota test intermediate,O=fota test");
		CU_ASSERT_STRING_EQUAL(info.chain[2], "CN=fota test root,O=fota test");
		CU_ASSERT_EQUAL(info.not_before, 978307200);  /* 2001-01-01 */
		CU_ASSERT_EQUAL(info.not_after, 4070908800);  /* 2099-01-01 */
		/* Stock OpenSSL, as an auditor runs it, accepts it too. */
		if (strcmp(cases[i].key_type, "Ed25519") != 0 || cli_does_ed25519())
			CU_ASSERT_EQUAL(openssl_verify(der, n, "root.pem"), 0);
		free(der);
	}
	fota_trust_free(t);
}

static void test_sig_other_root_refused(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	uint8_t *der = NULL;
	size_t n = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(sign_as("other-signer", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_TRUST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "certificate chain"));
	CU_ASSERT_NOT_EQUAL(openssl_verify(der, n, "root.pem"), 0);
	fota_trust_free(t);

	/* Several CA files: either root is a trust anchor. */
	const char *two[2] = {pki("root.pem"), pki("other-root.pem")};
	CU_ASSERT_EQUAL_FATAL(fota_trust_load(two, 2, NULL, &t, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_OK);
	fota_trust_free(t);

	/* One CA file holding several certificates. */
	size_t l1 = 0, l2 = 0;
	uint8_t *a = unit_read_file(pki("root.pem"), &l1), *b = unit_read_file(pki("other-root.pem"), &l2);
	CU_ASSERT_FATAL(a && b);
	uint8_t *both = malloc(l1 + l2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(both);
	memcpy(both, b, l2);
	memcpy(both + l2, a, l1);
	char *bundle = unit_write_file("bundle.pem", both, l1 + l2);
	const char *one[1] = {bundle};
	CU_ASSERT_EQUAL_FATAL(fota_trust_load(one, 1, NULL, &t, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_OK);
	fota_trust_free(t);
	free(bundle);
	free(both);
	free(a);
	free(b);
	free(der);
}

static void test_sig_content_modified(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	uint8_t *der = NULL;
	size_t n = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(sign_as("signer-ec", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	uint8_t m[CONTENT_LEN + 1];
	unsigned bad = 0;
	for (size_t i = 0; i < CONTENT_LEN; i++) {
		static const uint8_t flips[] = {0x01, 0x80, 0xff};
		for (size_t f = 0; f < sizeof(flips); f++) {
			memcpy(m, content, CONTENT_LEN);
			m[i] ^= flips[f];
			if (fota_sig_verify(t, m, CONTENT_LEN, der, n, 0, NULL, &e) != FOTA_E_SIGNATURE)
				bad++;
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	/* Truncated, extended, empty. */
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN - 1, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	memcpy(m, content, CONTENT_LEN);
	m[CONTENT_LEN] = '\n';
	CU_ASSERT_EQUAL(fota_sig_verify(t, m, CONTENT_LEN + 1, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_EQUAL(fota_sig_verify(t, NULL, 0, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "does not match"));
	/* The untouched content still verifies. */
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_OK);
	fota_trust_free(t);
	free(der);
}

static void test_sig_der_byte_sweep(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	/* Ed25519 goes through our RFC 8419 check, ECDSA through CMS_verify(). */
	static const char *const names[] = {"signer-ed25519", "signer-ec"};
	for (size_t k = 0; k < 2; k++) {
	uint8_t *der = NULL;
	size_t n = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(sign_as(names[k], 0, content, CONTENT_LEN, 1700000000, &der, &n, &e),
			      FOTA_OK);
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	uint8_t *m = malloc(n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	unsigned accepted = 0, other = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(m, der, n);
		m[i] ^= 0xff;
		fota_status st = fota_sig_verify(t, content, CONTENT_LEN, m, n, 0, NULL, &e);
		if (st == FOTA_OK) {
			accepted++;
			fprintf(stderr, "sweep: flip at %zu accepted\n", i);
		} else if (st != FOTA_E_SIGNATURE && st != FOTA_E_TRUST) {
			other++;
			fprintf(stderr, "sweep: flip at %zu: %s: %s\n", i, fota_strerror(st), e.msg);
		}
	}
	CU_ASSERT_EQUAL(accepted, 0);
	CU_ASSERT_EQUAL(other, 0);
	/* Every truncation fails as well. */
	for (size_t l = 0; l < n; l++)
		CU_ASSERT_NOT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, l, 0, NULL, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_OK);
	free(m);
	fota_trust_free(t);
	free(der);
	}
}

static void test_sig_validity_period(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	uint8_t *der = NULL;
	size_t n = 0;
	struct fota_error e;
	struct fota_sig_info info;
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);

	CU_ASSERT_EQUAL_FATAL(sign_as("expired", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_TRUST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "expired"));
	/* 2020-06-01, inside the expired signer's validity (2020-01-01 .. 2021-01-01). */
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 1590969600, &info, &e), FOTA_OK);
	CU_ASSERT_EQUAL(info.not_before, 1577836800);
	CU_ASSERT_EQUAL(info.not_after, 1609459200);
	/* 2019-12-31T23:59:59: one second before. */
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 1577836799, NULL, &e), FOTA_E_TRUST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not yet valid"));
	free(der);

	CU_ASSERT_EQUAL_FATAL(sign_as("notyet", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_TRUST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not yet valid"));
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 3786912000LL /* 2090-01-01 */,
					NULL, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, -5, NULL, &e), FOTA_E_ARG);
	free(der);
	fota_trust_free(t);
}

static void test_sig_key_usage(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	uint8_t *der = NULL;
	size_t n = 0;
	struct fota_error e;
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	CU_ASSERT_EQUAL_FATAL(sign_as("wrongusage", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_TRUST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "digitalSignature"));
	free(der);
	fota_trust_free(t);
}

static void test_sig_revocation(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	uint8_t *der = NULL, *good = NULL;
	size_t n = 0, gn = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(sign_as("revoked", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(sign_as("signer-ec", 0, content, CONTENT_LEN, -1, &good, &gn, &e), FOTA_OK);

	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_OK);
	fota_trust_free(t);

	static const char *const crls[] = {"crl.pem", "crl.der"};
	for (size_t i = 0; i < 2; i++) {
		t = trust_of("root.pem", crls[i]);
		CU_ASSERT_PTR_NOT_NULL_FATAL(t);
		CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_TRUST);
		CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "revoked"));
		CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, good, gn, 0, NULL, &e), FOTA_OK);
		fota_trust_free(t);
	}
	/* A CRL file that is neither PEM nor DER. */
	const char *cas[1] = {pki("root.pem")};
	CU_ASSERT_EQUAL(fota_trust_load(cas, 1, pki("root.key"), &t, &e), FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "root.key"));
	free(der);
	free(good);
}

static void test_sig_deterministic(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	static const char *const names[] = {"signer-ed25519", "signer-rsa"};
	for (size_t i = 0; i < 2; i++) {
		uint8_t *a = NULL, *b = NULL, *c = NULL;
		size_t an = 0, bn = 0, cn = 0;
		struct fota_error e;
		struct fota_sig_info info;
		CU_ASSERT_EQUAL_FATAL(sign_as(names[i], 0, content, CONTENT_LEN, -1, &a, &an, &e), FOTA_OK);
		CU_ASSERT_EQUAL_FATAL(sign_as(names[i], 0, content, CONTENT_LEN, -1, &b, &bn, &e), FOTA_OK);
		CU_ASSERT_EQUAL(an, bn);
		CU_ASSERT(an == bn && memcmp(a, b, an) == 0);
		CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, a, an, 0, &info, &e), FOTA_OK);
		CU_ASSERT_EQUAL(info.signing_time, -1);

		CU_ASSERT_EQUAL_FATAL(sign_as(names[i], 0, content, CONTENT_LEN, 1700000000, &c, &cn, &e), FOTA_OK);
		CU_ASSERT(cn != an || memcmp(a, c, an) != 0);
		CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, c, cn, 0, &info, &e), FOTA_OK);
		CU_ASSERT_EQUAL(info.signing_time, 1700000000);
		if (i == 1 || cli_does_ed25519())
			CU_ASSERT_EQUAL(openssl_verify(c, cn, "root.pem"), 0);
		free(a);
		free(b);
		free(c);
	}
	/* signingTime after 2049 is a GeneralizedTime; 0 is the epoch itself. */
	static const int64_t times[] = {0, 2524608000LL /* 2050-01-01 */, 4102444799LL};
	for (size_t i = 0; i < 3; i++) {
		uint8_t *d = NULL;
		size_t dn = 0;
		struct fota_error e;
		struct fota_sig_info info;
		CU_ASSERT_EQUAL_FATAL(sign_as("signer-ec", 0, content, CONTENT_LEN, times[i], &d, &dn, &e), FOTA_OK);
		CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, d, dn, 0, &info, &e), FOTA_OK);
		CU_ASSERT_EQUAL(info.signing_time, times[i]);
		free(d);
	}
	fota_trust_free(t);
}

static void test_sig_limits_and_garbage(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	struct fota_error e;
	uint8_t *big = calloc(1, FOTA_SIG_MAX + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, big, FOTA_SIG_MAX + 1, 0, NULL, &e), FOTA_E_LIMIT);
	/* At the limit it is parsed (and rejected as garbage). */
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, big, FOTA_SIG_MAX, 0, NULL, &e), FOTA_E_SIGNATURE);
	unit_fill_random(big, 4096, 99);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, big, 4096, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, big, 0, 0, NULL, &e), FOTA_E_SIGNATURE);

	/* A valid signature with a trailing byte. */
	uint8_t *der = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL_FATAL(sign_as("signer-ec", 0, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	memcpy(big, der, n);
	big[n] = 0;
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, big, n + 1, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "trailing"));
	free(der);
	free(big);
	fota_trust_free(t);
}

static void test_sig_load_errors(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	struct fota_signer *s = NULL;
	struct fota_error e;
	/* Key and certificate of different signers. */
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ed25519.pem"), NULL, 0, &s, &e),
			FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "does not match"));
	/* Missing files name their path. */
	CU_ASSERT_EQUAL(fota_signer_load("/nonexistent/k.key", pki("signer-ec.pem"), NULL, 0, &s, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/k.key"));
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), "/nonexistent/c.pem", NULL, 0, &s, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/c.pem"));
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ec.pem"), "/nonexistent/ch.pem", 0,
					 &s, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/ch.pem"));
	const char *cas[1] = {"/nonexistent/ca.pem"};
	struct fota_trust *t = NULL;
	CU_ASSERT_EQUAL(fota_trust_load(cas, 1, NULL, &t, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/ca.pem"));
	/* A key file given as the certificate, a certificate as the key. */
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ec.key"), NULL, 0, &s, &e),
			FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "signer-ec.key"));
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.pem"), pki("signer-ec.pem"), NULL, 0, &s, &e),
			FOTA_E_CRYPTO);
	cas[0] = pki("root.key");
	CU_ASSERT_EQUAL(fota_trust_load(cas, 1, NULL, &t, &e), FOTA_E_CRYPTO);
	/* Key policy: RSA below 2048 bits and curves other than P-256 are refused. */
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-rsa1024.key"), pki("signer-rsa1024.pem"), NULL, 0, &s, &e),
			FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "RSA-1024"));
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-p384.key"), pki("signer-p384.pem"), NULL, 0, &s, &e),
			FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "P-256"));
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ec.pem"), NULL, 7, &s, &e), FOTA_E_ARG);
	/* An encrypted key is refused, without prompting for a passphrase. */
	char enc[700], cmd[2000];
	snprintf(enc, sizeof(enc), "%s/enc.key", unit_tmpdir());
	snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -aes256 -passout pass:secret -out '%s' </dev/null",
		 pki("signer-ec.key"), enc);
	CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
	CU_ASSERT_EQUAL(fota_signer_load(enc, pki("signer-ec.pem"), NULL, 0, &s, &e), FOTA_E_CRYPTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "enc.key"));
	fota_signer_free(NULL);
	fota_trust_free(NULL);
}

/* Signatures made by `openssl cms -sign`: accepted when they fit the policy, refused otherwise. */
static void test_sig_openssl_made(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	struct fota_error e;
	struct fota_sig_info info;
	size_t n = 0;
	uint8_t *der = openssl_sign("signer-ec", "-nosmimecap -md sha256", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, &info, &e), FOTA_OK);
	CU_ASSERT(info.signing_time > 1700000000); /* openssl adds the current time */
	free(der);

	der = openssl_sign("signer-ec", "-nosmimecap -md sha512", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "digest"));
	free(der);

	char extra[1400];
	snprintf(extra, sizeof(extra), "-nosmimecap -md sha256 -signer '%s' -inkey '%s'", pki("signer-rsa.pem"),
		 pki("signer-rsa.key"));
	der = openssl_sign("signer-ec", extra, &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "2 signers"));
	free(der);

	der = openssl_sign("signer-rsa1024", "-nosmimecap -md sha256", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "RSA-1024"));
	free(der);

	der = openssl_sign("signer-p384", "-nosmimecap -md sha256", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "P-256"));
	free(der);

	/* No signed attributes at all (FORMAT.md allows it for RSA and ECDSA). */
	der = openssl_sign("signer-ec", "-nosmimecap -md sha256 -noattr", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, &info, &e), FOTA_OK);
	CU_ASSERT_EQUAL(info.signing_time, -1);
	free(der);

	/* An attribute FORMAT.md does not list (openssl's default SMIMECapabilities). */
	der = openssl_sign("signer-ec", "-md sha256", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "unexpected signed attribute S/MIME Capabilities"));
	free(der);

	/* Content embedded instead of detached. */
	der = openssl_sign("signer-ec", "-nosmimecap -md sha256 -nodetach", &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "detached"));
	free(der);
	fota_trust_free(t);
}

/* Concatenate PKI files (NULL-terminated list of names) into tmpdir/out; its path, malloc'd. */
static char *bundle_of(const char *out, const char *const *names)
{
	size_t cap = 0, len = 0;
	uint8_t *all = NULL;
	for (size_t i = 0; names[i]; i++) {
		size_t n = 0;
		uint8_t *b = unit_read_file(names[i][0] == '/' ? names[i] : pki(names[i]), &n);
		if (!b)
			goto fail;
		if (len + n > cap) {
			cap = (len + n) * 2;
			uint8_t *nb = realloc(all, cap);
			if (!nb) {
				free(b);
				goto fail;
			}
			all = nb;
		}
		memcpy(all + len, b, n);
		len += n;
		free(b);
	}
	char *path = unit_write_file(out, all, len);
	free(all);
	return path;
fail:
	free(all);
	return NULL;
}

/* At most 16 certificates travel in a signature: 15 besides the signer's. */
static void test_sig_embedded_cert_limit(void)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(pki_dir());
	char extra[3][700];
	for (int i = 0; i < 3; i++) {
		char cmd[2000];
		snprintf(extra[i], sizeof(extra[i]), "%s/extra%d.pem", unit_tmpdir(), i);
		snprintf(cmd, sizeof(cmd),
			 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
			 "-keyout '%s.key' -out '%s' -subj '/CN=extra %d' -days 1 >/dev/null 2>&1",
			 extra[i], extra[i], i);
		CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
	}
	const char *names[] = {"inter.pem", "root.pem", "signer-ed25519.pem", "signer-rsa.pem",
			       "signer-rsapss.pem", "signer-rsa1024.pem", "signer-p384.pem", "expired.pem",
			       "notyet.pem", "wrongusage.pem", "revoked.pem", "other-root.pem",
			       "other-signer.pem", extra[0], extra[1], extra[2], NULL};
	char *b16 = bundle_of("b16.pem", names);
	names[15] = NULL;
	char *b15 = bundle_of("b15.pem", names);
	CU_ASSERT_FATAL(b16 && b15);

	struct fota_signer *s = NULL;
	struct fota_error e;
	CU_ASSERT_EQUAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ec.pem"), b16, 0, &s, &e), FOTA_E_LIMIT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "b16.pem"));
	CU_ASSERT_EQUAL_FATAL(fota_signer_load(pki("signer-ec.key"), pki("signer-ec.pem"), b15, 0, &s, &e), FOTA_OK);
	uint8_t *der = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL_FATAL(fota_sig_sign(s, content, CONTENT_LEN, -1, &der, &n, &e), FOTA_OK);
	fota_signer_free(s);
	struct fota_trust *t = trust_of("root.pem", NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	struct fota_sig_info info;
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, &info, &e), FOTA_OK);
	CU_ASSERT_EQUAL(info.chain_len, 3);
	free(der);

	/* 17 certificates, made by the openssl CLI. */
	char opt[800];
	snprintf(opt, sizeof(opt), "-nosmimecap -md sha256 -certfile '%s'", b16);
	der = openssl_sign("signer-ec", opt, &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(der);
	CU_ASSERT_EQUAL(fota_sig_verify(t, content, CONTENT_LEN, der, n, 0, NULL, &e), FOTA_E_LIMIT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "17 embedded certificates"));
	free(der);
	fota_trust_free(t);
	free(b15);
	free(b16);
}

/*
 * A chain of 9 levels: root, CA1..CA7, leaf. Signing with intermediates CA1..CA6 only
 * is impossible (CA7 signed the leaf), so build two leaves: one under CA6 (8 levels,
 * the limit) and one under CA7 (9 levels, refused).
 */
static void test_sig_chain_depth_limit(void)
{
	const char *d = unit_tmpdir();
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s'; mkdir -p deep; cd deep;"
		 "printf '[ca]\\nbasicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign\\n"
		 "[leaf]\\nbasicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\n' > ext.cnf;"
		 "k() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key; };"
		 "k ca0; openssl req -x509 -new -key ca0.key -subj /CN=deep0 -days 2 -out ca0.pem"
		 " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign;"
		 "i=1; : > inter6.pem; : > inter7.pem;"
		 "while [ $i -le 7 ]; do k ca$i; openssl req -new -key ca$i.key -subj /CN=deep$i -out ca$i.csr;"
		 " openssl x509 -req -in ca$i.csr -CA ca$((i-1)).pem -CAkey ca$((i-1)).key -set_serial $i"
		 "  -days 2 -extfile ext.cnf -extensions ca -out ca$i.pem;"
		 " [ $i -le 6 ] && cat ca$i.pem >> inter6.pem; cat ca$i.pem >> inter7.pem; i=$((i+1)); done;"
		 "for n in 6 7; do k leaf$n; openssl req -new -key leaf$n.key -subj /CN=leaf$n -out leaf$n.csr;"
		 " openssl x509 -req -in leaf$n.csr -CA ca$n.pem -CAkey ca$n.key -set_serial 10$n -days 2"
		 "  -extfile ext.cnf -extensions leaf -out leaf$n.pem; done",
		 d);
	char quiet[4200];
	snprintf(quiet, sizeof(quiet), "(%s) >/dev/null 2>&1", cmd);
	CU_ASSERT_EQUAL_FATAL(system(quiet), 0);

	char root[600], key[600], cert[600], chain[600];
	snprintf(root, sizeof(root), "%s/deep/ca0.pem", d);
	const char *cas[1] = {root};
	struct fota_trust *t = NULL;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(fota_trust_load(cas, 1, NULL, &t, &e), FOTA_OK);
	for (int n = 6; n <= 7; n++) {
		struct fota_signer *s = NULL;
		uint8_t *der = NULL;
		size_t len = 0;
		struct fota_sig_info info;
		snprintf(key, sizeof(key), "%s/deep/leaf%d.key", d, n);
		snprintf(cert, sizeof(cert), "%s/deep/leaf%d.pem", d, n);
		snprintf(chain, sizeof(chain), "%s/deep/inter%d.pem", d, n);
		CU_ASSERT_EQUAL_FATAL(fota_signer_load(key, cert, chain, 0, &s, &e), FOTA_OK);
		CU_ASSERT_EQUAL_FATAL(fota_sig_sign(s, content, CONTENT_LEN, -1, &der, &len, &e), FOTA_OK);
		fota_signer_free(s);
		fota_status st = fota_sig_verify(t, content, CONTENT_LEN, der, len, 0, &info, &e);
		if (n == 6) {
			CU_ASSERT_EQUAL(st, FOTA_OK);
			CU_ASSERT_EQUAL(info.chain_len, FOTA_SIG_CHAIN_MAX);
			CU_ASSERT_STRING_EQUAL(info.chain[0], "CN=leaf6");
			CU_ASSERT_STRING_EQUAL(info.chain[FOTA_SIG_CHAIN_MAX - 1], "CN=deep0");
		} else {
			CU_ASSERT_EQUAL(st, FOTA_E_TRUST);
			CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "too long"));
		}
		free(der);
	}
	fota_trust_free(t);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_sig_pki_generated);
	UNIT_ADD(s, test_sig_each_key_type);
	UNIT_ADD(s, test_sig_other_root_refused);
	UNIT_ADD(s, test_sig_content_modified);
	UNIT_ADD(s, test_sig_der_byte_sweep);
	UNIT_ADD(s, test_sig_validity_period);
	UNIT_ADD(s, test_sig_key_usage);
	UNIT_ADD(s, test_sig_revocation);
	UNIT_ADD(s, test_sig_deterministic);
	UNIT_ADD(s, test_sig_limits_and_garbage);
	UNIT_ADD(s, test_sig_load_errors);
	UNIT_ADD(s, test_sig_openssl_made);
	UNIT_ADD(s, test_sig_embedded_cert_limit);
	UNIT_ADD(s, test_sig_chain_depth_limit);
}
UNIT_SUITE("formats/sig", add)
