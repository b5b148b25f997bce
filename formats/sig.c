/*
 * sig.c: detached CMS signatures over manifest.json (see fota/sig.h), on OpenSSL 3.0.
 *
 * Signing does not go through CMS_final(): OpenSSL's CMS_SignerInfo_sign() always adds
 * a signingTime attribute (the current time) when the SignerInfo has signed attributes;
 * CMS_NOATTR would avoid it for RSA and ECDSA only, and OpenSSL 3.0's CMS code cannot
 * make an Ed25519 signature at all (it hands a digest name to pure EdDSA, "invalid
 * digest"), while RFC 8419 wants signed attributes anyway. So the
 * SignerInfo is created with CMS_PARTIAL, and this file adds contentType, messageDigest
 * and (only when asked) signingTime itself, DER-encodes the signed attributes as the
 * SET OF that RFC 5652 5.4 says is signed, signs that with EVP_DigestSign() and stores
 * the signature value. Every key type therefore has the same attribute set, and the
 * output of a deterministic scheme (Ed25519, RSA PKCS#1 v1.5) is byte-identical from
 * run to run when signing_time < 0. Every signature is verified again before it is
 * returned, which catches any disagreement between our attribute encoding and the one
 * OpenSSL writes.
 *
 * Key policy (signing and verifying alike; FOTA_E_CRYPTO when loading a signer,
 * FOTA_E_SIGNATURE when verifying, as FORMAT.md section 4 says): ECDSA on P-256 only (P-384 and other
 * curves are refused: the digest is fixed at SHA-256 and the format names P-256),
 * Ed25519, RSA and RSA-PSS with a modulus of at least 2048 bits. RSA-PSS signatures use
 * SHA-256, MGF1 with SHA-256 and a 32-byte salt. The CMS digest is SHA-256, except for
 * Ed25519, where RFC 8419 3.1 says the digest of signed attributes MUST be SHA-512 (and
 * newer OpenSSL releases enforce that). OpenSSL 3.0 cannot verify Ed25519 CMS at all,
 * so Ed25519 is verified here by hand (check_ed25519).
 *
 * Verification policy: canonical DER, exactly one SignerInfo, detached id-data content,
 * digest as above, signed attributes as FORMAT.md allows (contentType, messageDigest,
 * optional signingTime; or none, except for Ed25519), signatureAlgorithm fitting the
 * signer key and the key policy above, unsigned version and
 * digestAlgorithms fields as RFC 5652 requires, signature checked first (failures are
 * FOTA_E_SIGNATURE), then the signer certificate: chain from the embedded
 * certificates to a root of the trust store, at most FOTA_SIG_CHAIN_MAX certificates, validity of every certificate judged at
 * at_time, X509 purpose "any" (no S/MIME EKU required, as with `openssl cms -purpose
 * any`), keyUsage must include digitalSignature when present, extendedKeyUsage must
 * include codeSigning or anyExtendedKeyUsage when present, and with a CRL the signer
 * must not be revoked (X509_V_FLAG_CRL_CHECK: the CRL of the signer's issuer must be
 * in the CRL file and current at at_time). These are FOTA_E_TRUST.
 *
 * OpenSSL never prints here: its error queue is drained into the fota_error message.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fota/manifest.h"
#include "fota/sig.h"

#define PEM_FILE_MAX (1u << 20)   /* bytes of a key, certificate, CA or CRL file */
#define RSA_BITS_MIN 2048
#define EMBEDDED_CERTS_MAX 16     /* certificates a signature may carry */
#define SIGNED_ATTRS_MAX 8        /* we write 2 or 3 */
#define SIGNING_TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z, the end of GeneralizedTime */

struct fota_signer {
	EVP_PKEY *key;
	X509 *cert;
	STACK_OF(X509) *chain;
	int pss;
	int ed25519;
	int rsa_pkcs1;
};

struct fota_trust {
	X509_STORE *store;
	int have_crl;
};

/* Move OpenSSL's error queue into buf ("; "-separated), leaving the queue empty. */
static void ossl_drain(char *buf, size_t n)
{
	size_t used = 0;
	unsigned long e;
	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		if (used + 3 >= n)
			continue;
		ERR_error_string_n(e, one, sizeof(one));
		int w = snprintf(buf + used, n - used, "%s%s", used ? "; " : "", one);
		if (w < 0)
			break;
		used += (size_t)w;
		if (used >= n)
			used = n - 1;
	}
	if (!buf[0])
		snprintf(buf, n, "no detail from OpenSSL");
}

/* fota_error_set() with OpenSSL's queued errors appended after ": ". */
static fota_status FOTA_PRINTF(3, 4) ossl_fail(struct fota_error *err, fota_status code, const char *fmt, ...)
{
	char ctx[FOTA_ERROR_MSG_MAX / 2], detail[FOTA_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof(ctx), fmt, ap);
	va_end(ap);
	ossl_drain(detail, sizeof(detail));
	return fota_error_set(err, code, "%s: %s", ctx, detail);
}

/* Read a whole small file (at most PEM_FILE_MAX bytes). *buf is malloc'd. */
static fota_status read_small_file(const char *what, const char *path, uint8_t **buf, size_t *len,
				   struct fota_error *err)
{
	fota_status st = FOTA_OK;
	uint8_t *b = NULL;
	size_t n = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return fota_error_set(err, FOTA_E_IO, "sig: %s %s: %s", what, path, strerror(errno));
	b = malloc(PEM_FILE_MAX + 1);
	if (!b) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: %s %s: out of memory", what, path);
		goto out;
	}
	n = fread(b, 1, PEM_FILE_MAX + 1, f);
	if (ferror(f)) {
		st = fota_error_set(err, FOTA_E_IO, "sig: %s %s: read error", what, path);
		goto out;
	}
	if (n > PEM_FILE_MAX) {
		st = fota_error_set(err, FOTA_E_LIMIT, "sig: %s %s: larger than %u bytes", what, path,
				    PEM_FILE_MAX);
		goto out;
	}
	*buf = b;
	*len = n;
	b = NULL;
out:
	free(b);
	fclose(f);
	return st;
}

/* Passphrase callback that refuses: an encrypted key is an error, never a tty prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf; (void)size; (void)rwflag; (void)u;
	return -1;
}

/*
 * Load every PEM certificate in a file (other PEM blocks are skipped). Fails when the
 * file holds none or a certificate block does not parse. *out owned by the caller.
 */
static fota_status load_certs(const char *what, const char *path, STACK_OF(X509) **out,
			      struct fota_error *err)
{
	fota_status st;
	uint8_t *buf = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	STACK_OF(X509) *sk = NULL;
	X509 *x;

	st = read_small_file(what, path, &buf, &len, err);
	if (st != FOTA_OK)
		return st;
	ERR_clear_error();
	bio = BIO_new_mem_buf(buf, (int)len);
	sk = sk_X509_new_null();
	if (!bio || !sk) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: %s %s: out of memory", what, path);
		goto out;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			st = fota_error_set(err, FOTA_E_NOMEM, "sig: %s %s: out of memory", what, path);
			goto out;
		}
	}
	unsigned long e = ERR_peek_last_error();
	if (sk_X509_num(sk) > 0 && ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error(); /* the normal end of the file */
	} else if (sk_X509_num(sk) == 0) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: %s %s: no PEM certificate", what, path);
		goto out;
	} else if (e != 0) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: %s %s: certificate %d does not parse", what,
			       path, sk_X509_num(sk) + 1);
		goto out;
	}
	*out = sk;
	sk = NULL;
out:
	sk_X509_pop_free(sk, X509_free);
	BIO_free(bio);
	free(buf);
	return st;
}

/*
 * Apply the key policy and describe the key ("ECDSA P-256", "Ed25519", "RSA-3072",
 * "RSA-PSS-3072"; pss: an RSA key used with PSS padding). Returns 0, or -1 with the
 * reason in desc.
 */
static int describe_key(EVP_PKEY *pk, int pss, char *desc, size_t n)
{
	if (EVP_PKEY_is_a(pk, "EC")) {
		char group[64] = "";
		size_t glen = 0;
		if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) != 1)
			snprintf(group, sizeof(group), "unknown curve");
		if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0) {
			snprintf(desc, n, "ECDSA key on %s refused (only P-256)", group);
			return -1;
		}
		snprintf(desc, n, "ECDSA P-256");
		return 0;
	}
	if (EVP_PKEY_is_a(pk, "ED25519")) {
		snprintf(desc, n, "Ed25519");
		return 0;
	}
	int native_pss = EVP_PKEY_is_a(pk, "RSA-PSS");
	if (native_pss || EVP_PKEY_is_a(pk, "RSA")) {
		int bits = EVP_PKEY_get_bits(pk);
		const char *name = (native_pss || pss) ? "RSA-PSS" : "RSA";
		if (bits < RSA_BITS_MIN) {
			snprintf(desc, n, "%s-%d key refused (at least %d bits)", name, bits, RSA_BITS_MIN);
			return -1;
		}
		snprintf(desc, n, "%s-%d", name, bits);
		return 0;
	}
	const char *tn = EVP_PKEY_get0_type_name(pk);
	snprintf(desc, n, "%s key refused (ECDSA P-256, Ed25519, RSA or RSA-PSS only)",
		 tn ? tn : "unknown");
	return -1;
}

fota_status fota_signer_load(const char *key_path, const char *cert_path, const char *chain_path,
			     enum fota_sig_padding pad, struct fota_signer **out,
			     struct fota_error *err)
{
	fota_status st = FOTA_OK;
	struct fota_signer *s = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	STACK_OF(X509) *certs = NULL;
	char desc[128];

	if (!key_path || !cert_path || !out)
		return fota_error_set(err, FOTA_E_ARG, "sig: signer: key and certificate paths are required");
	if (pad != FOTA_SIG_PAD_DEFAULT && pad != FOTA_SIG_PAD_PSS)
		return fota_error_set(err, FOTA_E_ARG, "sig: signer: unknown padding %d", (int)pad);
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return fota_error_set(err, FOTA_E_NOMEM, "sig: signer: out of memory");

	st = read_small_file("key", key_path, &buf, &len, err);
	if (st != FOTA_OK)
		goto out;
	ERR_clear_error();
	bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: key %s: out of memory", key_path);
		goto out;
	}
	s->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if (!s->key) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: key %s: not an unencrypted PEM private key",
			       key_path);
		goto out;
	}

	st = load_certs("certificate", cert_path, &certs, err);
	if (st != FOTA_OK)
		goto out;
	s->cert = sk_X509_shift(certs); /* the first certificate of the file is the signer's */
	sk_X509_pop_free(certs, X509_free);
	certs = NULL;

	if (X509_check_private_key(s->cert, s->key) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: key %s does not match certificate %s", key_path,
			       cert_path);
		goto out;
	}
	s->ed25519 = EVP_PKEY_is_a(s->key, "ED25519");
	s->pss = EVP_PKEY_is_a(s->key, "RSA-PSS") ||
		 (EVP_PKEY_is_a(s->key, "RSA") && pad == FOTA_SIG_PAD_PSS);
	s->rsa_pkcs1 = EVP_PKEY_is_a(s->key, "RSA") && !s->pss;
	if (describe_key(s->key, s->pss, desc, sizeof(desc)) != 0) {
		st = fota_error_set(err, FOTA_E_CRYPTO, "sig: key %s: %s", key_path, desc);
		goto out;
	}

	s->chain = sk_X509_new_null();
	if (!s->chain) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: signer: out of memory");
		goto out;
	}
	if (chain_path) {
		st = load_certs("chain", chain_path, &certs, err);
		if (st != FOTA_OK)
			goto out;
		while (sk_X509_num(certs) > 0) {
			X509 *x = sk_X509_shift(certs);
			if (X509_cmp(x, s->cert) == 0) {
				X509_free(x); /* already embedded as the signer */
				continue;
			}
			if (sk_X509_num(s->chain) + 1 >= EMBEDDED_CERTS_MAX) {
				X509_free(x);
				st = fota_error_set(err, FOTA_E_LIMIT,
						    "sig: chain %s: more than %d certificates", chain_path,
						    EMBEDDED_CERTS_MAX - 1);
				goto out;
			}
			if (!sk_X509_push(s->chain, x)) {
				X509_free(x);
				st = fota_error_set(err, FOTA_E_NOMEM, "sig: signer: out of memory");
				goto out;
			}
		}
	}
	*out = s;
	s = NULL;
out:
	sk_X509_pop_free(certs, X509_free);
	BIO_free(bio);
	free(buf);
	fota_signer_free(s);
	return st;
}

void fota_signer_free(struct fota_signer *s)
{
	if (!s)
		return;
	EVP_PKEY_free(s->key);
	X509_free(s->cert);
	sk_X509_pop_free(s->chain, X509_free);
	free(s);
}

struct der_item {
	unsigned char *p;
	int len;
};

/* DER ordering of SET OF members (X.690 11.6): octet-wise, a proper prefix first. */
static int der_item_cmp(const void *a, const void *b)
{
	const struct der_item *x = a, *y = b;
	int m = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->p, y->p, (size_t)m);
	if (c)
		return c;
	return x->len - y->len;
}

/*
 * The DER of the SignerInfo's signed attributes as a SET OF (tag 0x31): the bytes the
 * signature covers (RFC 5652 5.4). *out is malloc'd.
 */
static fota_status encode_signed_attrs(CMS_SignerInfo *si, fota_status code, unsigned char **out,
				       size_t *out_len, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	struct der_item items[SIGNED_ATTRS_MAX];
	int n = CMS_signed_get_attr_count(si), done = 0;
	size_t body = 0;
	unsigned char *buf = NULL;

	if (n <= 0 || n > SIGNED_ATTRS_MAX)
		return fota_error_set(err, code, "sig: %d signed attributes (1..%d)", n, SIGNED_ATTRS_MAX);
	for (; done < n; done++) {
		items[done].p = NULL;
		items[done].len = i2d_X509_ATTRIBUTE(CMS_signed_get_attr(si, done), &items[done].p);
		if (items[done].len <= 0) {
			st = ossl_fail(err, code, "sig: encoding signed attribute %d", done);
			goto out;
		}
		body += (size_t)items[done].len;
	}
	qsort(items, (size_t)n, sizeof(items[0]), der_item_cmp);
	/* Attributes are small (< 200 bytes each), so the body is far below 2^16. */
	if (body > 0xffff) {
		st = fota_error_set(err, code, "sig: signed attributes too large");
		goto out;
	}
	buf = malloc(body + 4);
	if (!buf) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
		goto out;
	}
	size_t off = 0;
	buf[off++] = 0x31;
	if (body < 0x80) {
		buf[off++] = (unsigned char)body;
	} else if (body <= 0xff) {
		buf[off++] = 0x81;
		buf[off++] = (unsigned char)body;
	} else {
		buf[off++] = 0x82;
		buf[off++] = (unsigned char)(body >> 8);
		buf[off++] = (unsigned char)body;
	}
	for (int i = 0; i < n; i++) {
		memcpy(buf + off, items[i].p, (size_t)items[i].len);
		off += (size_t)items[i].len;
	}
	*out = buf;
	*out_len = off;
	buf = NULL;
out:
	for (int i = 0; i < done; i++)
		OPENSSL_free(items[i].p);
	free(buf);
	return st;
}

/* Set the SignerInfo's signatureAlgorithm to what was used (pctx for RSA-PSS parameters). */
static fota_status set_signature_alg(const struct fota_signer *s, CMS_SignerInfo *si,
				     EVP_PKEY_CTX *pctx, struct fota_error *err)
{
	X509_ALGOR *alg = NULL;
	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &alg);
	if (!alg)
		return fota_error_set(err, FOTA_E_INTERNAL, "sig: SignerInfo has no signatureAlgorithm");
	if (s->pss) {
		unsigned char aid[256];
		const unsigned char *pp = aid;
		OSSL_PARAM params[2];
		params[0] = OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid,
							      sizeof(aid));
		params[1] = OSSL_PARAM_construct_end();
		if (EVP_PKEY_CTX_get_params(pctx, params) != 1 || params[0].return_size == 0 ||
		    params[0].return_size > sizeof(aid) ||
		    !d2i_X509_ALGOR(&alg, &pp, (long)params[0].return_size))
			return ossl_fail(err, FOTA_E_CRYPTO, "sig: RSA-PSS algorithm identifier");
		return FOTA_OK;
	}
	int nid = s->ed25519 ? NID_ED25519 : s->rsa_pkcs1 ? NID_sha256WithRSAEncryption : NID_ecdsa_with_SHA256;
	/* RFC 5754 3.2-3.3 / RFC 8419 3: ECDSA and Ed25519 have absent parameters, RSA NULL. */
	if (!X509_ALGOR_set0(alg, OBJ_nid2obj(nid), s->rsa_pkcs1 ? V_ASN1_NULL : V_ASN1_UNDEF, NULL))
		return ossl_fail(err, FOTA_E_CRYPTO, "sig: setting signatureAlgorithm");
	return FOTA_OK;
}

/*
 * RFC 8419 Ed25519 with signed attributes, checked by hand: OpenSSL 3.0's CMS code
 * passes the digest name to EVP_DigestVerifyInit, which pure Ed25519 refuses, so
 * CMS_verify() cannot check these. contentType must be id-data, messageDigest the
 * SHA-512 of the content, and the signature must cover the DER of the signed attributes.
 */
static fota_status check_ed25519(CMS_ContentInfo *cms, CMS_SignerInfo *si, const uint8_t *data,
				 size_t len, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	unsigned char *attrs = NULL;
	size_t attrs_len = 0;
	EVP_MD_CTX *mctx = NULL;
	EVP_PKEY *pk = NULL;
	X509_ALGOR *sig_alg = NULL;
	int ptype = 0;

	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sig_alg);
	X509_ALGOR_get0(NULL, &ptype, NULL, sig_alg);
	if (ptype != V_ASN1_UNDEF)
		return fota_error_set(err, FOTA_E_SIGNATURE, "sig: Ed25519 signatureAlgorithm has parameters");
	if (CMS_set1_signers_certs(cms, NULL, 0) <= 0) {
		ERR_clear_error();
		return fota_error_set(err, FOTA_E_SIGNATURE, "sig: signer certificate not embedded");
	}
	CMS_SignerInfo_get0_algs(si, &pk, NULL, NULL, NULL);
	if (!pk || !EVP_PKEY_is_a(pk, "ED25519"))
		return fota_error_set(err, FOTA_E_SIGNATURE,
				      "sig: Ed25519 signature but the signer key is not Ed25519");
	ASN1_OBJECT *ct = CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_pkcs9_contentType), -3,
						      V_ASN1_OBJECT);
	if (!ct || OBJ_obj2nid(ct) != NID_pkcs7_data) {
		ERR_clear_error();
		return fota_error_set(err, FOTA_E_SIGNATURE, "sig: contentType attribute missing or not id-data");
	}
	ASN1_OCTET_STRING *os = CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_pkcs9_messageDigest), -3,
							    V_ASN1_OCTET_STRING);
	if (EVP_Digest(data ? data : (const uint8_t *)"", len, md, &mdlen, EVP_sha512(), NULL) != 1)
		return ossl_fail(err, FOTA_E_CRYPTO, "sig: SHA-512 of the content");
	if (!os || ASN1_STRING_length(os) != (int)mdlen ||
	    memcmp(ASN1_STRING_get0_data(os), md, mdlen) != 0) {
		ERR_clear_error();
		return fota_error_set(err, FOTA_E_SIGNATURE,
				      "sig: signature does not match the content (messageDigest differs)");
	}
	st = encode_signed_attrs(si, FOTA_E_SIGNATURE, &attrs, &attrs_len, err);
	if (st != FOTA_OK)
		goto out;
	ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
	mctx = EVP_MD_CTX_new();
	if (!mctx) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
		goto out;
	}
	if (!sig || EVP_DigestVerifyInit_ex(mctx, NULL, NULL, NULL, NULL, pk, NULL) != 1 ||
	    EVP_DigestVerify(mctx, ASN1_STRING_get0_data(sig), (size_t)ASN1_STRING_length(sig), attrs,
			     attrs_len) != 1) {
		st = ossl_fail(err, FOTA_E_SIGNATURE, "sig: Ed25519 signature does not verify");
		goto out;
	}
out:
	EVP_MD_CTX_free(mctx);
	free(attrs);
	return st;
}

/*
 * Check a SignerInfo's signature and its content digest against data, without judging
 * the signer certificate. FOTA_E_SIGNATURE when they do not match.
 */
static fota_status check_signature(CMS_ContentInfo *cms, CMS_SignerInfo *si, const uint8_t *data,
				   size_t len, struct fota_error *err)
{
	X509_ALGOR *sig_alg = NULL;
	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sig_alg);
	if (sig_alg && OBJ_obj2nid(sig_alg->algorithm) == NID_ED25519)
		return check_ed25519(cms, si, data, len, err);
	if (len > INT_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "sig: content of %zu bytes", len);
	BIO *content = BIO_new_mem_buf(data ? (const void *)data : "", (int)len);
	if (!content)
		return fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
	int ok = CMS_verify(cms, NULL, NULL, content, NULL, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) == 1;
	BIO_free(content);
	if (!ok)
		return ossl_fail(err, FOTA_E_SIGNATURE, "sig: signature does not match the content");
	return FOTA_OK;
}

fota_status fota_sig_sign(const struct fota_signer *s, const uint8_t *data, size_t len,
			  int64_t signing_time, uint8_t **der, size_t *der_len,
			  struct fota_error *err)
{
	fota_status st = FOTA_OK;
	const unsigned int flags = CMS_BINARY | CMS_DETACHED | CMS_NOSMIMECAP | CMS_PARTIAL;
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	const EVP_MD *cms_md = s && s->ed25519 ? EVP_sha512() : EVP_sha256();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned char *attrs = NULL, *sig = NULL, *enc = NULL;
	size_t attrs_len = 0, sig_len = 0;
	EVP_MD_CTX *mctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	ASN1_TIME *when = NULL;
	uint8_t *copy = NULL;

	if (!s || (!data && len) || !der || !der_len)
		return fota_error_set(err, FOTA_E_ARG, "sig: sign: invalid arguments");
	if (signing_time > SIGNING_TIME_MAX)
		return fota_error_set(err, FOTA_E_ARG, "sig: signing time %lld after year 9999",
				      (long long)signing_time);
	*der = NULL;
	*der_len = 0;
	ERR_clear_error();

	cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
	if (!cms || !CMS_set_detached(cms, 1)) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: creating SignedData");
		goto out;
	}
	si = CMS_add1_signer(cms, s->cert, s->key, cms_md, flags);
	if (!si) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: adding the signer");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(s->chain); i++) {
		if (CMS_add1_cert(cms, sk_X509_value(s->chain, i)) != 1) {
			st = ossl_fail(err, FOTA_E_CRYPTO, "sig: embedding chain certificate %d", i);
			goto out;
		}
	}

	unsigned int mdlen = 0;
	if (EVP_Digest(data ? data : (const uint8_t *)"", len, md, &mdlen, cms_md, NULL) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: digest of the content");
		goto out;
	}
	if (CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
					OBJ_nid2obj(NID_pkcs7_data), -1) != 1 ||
	    CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, md,
					(int)mdlen) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: adding signed attributes");
		goto out;
	}
	if (signing_time >= 0) {
		/* ASN1_TIME_set picks UTCTime up to 2049 and GeneralizedTime after, as RFC 5652 11.3 asks. */
		when = ASN1_TIME_set(NULL, (time_t)signing_time);
		if (!when || CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, ASN1_STRING_type(when),
							 when, -1) != 1) {
			st = ossl_fail(err, FOTA_E_CRYPTO, "sig: adding signingTime %lld",
				       (long long)signing_time);
			goto out;
		}
	}
	st = encode_signed_attrs(si, FOTA_E_INTERNAL, &attrs, &attrs_len, err);
	if (st != FOTA_OK)
		goto out;

	mctx = EVP_MD_CTX_new();
	if (!mctx) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
		goto out;
	}
	/* Pure Ed25519 signs the attributes themselves: no digest name. */
	if (EVP_DigestSignInit_ex(mctx, &pctx, s->ed25519 ? NULL : "SHA256", NULL, NULL, s->key,
				  NULL) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: initialising the signature");
		goto out;
	}
	if (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
		       EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1)) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: setting RSA-PSS parameters");
		goto out;
	}
	if (EVP_DigestSign(mctx, NULL, &sig_len, attrs, attrs_len) != 1 || sig_len == 0 ||
	    sig_len > INT_MAX) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: signature size");
		goto out;
	}
	sig = OPENSSL_malloc(sig_len);
	if (!sig) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
		goto out;
	}
	if (EVP_DigestSign(mctx, sig, &sig_len, attrs, attrs_len) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: signing");
		goto out;
	}
	st = set_signature_alg(s, si, pctx, err);
	if (st != FOTA_OK)
		goto out;
	ASN1_STRING_set0(CMS_SignerInfo_get0_signature(si), sig, (int)sig_len);
	sig = NULL;

	int n = i2d_CMS_ContentInfo(cms, &enc);
	if (n <= 0) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: encoding the CMS");
		goto out;
	}
	if ((size_t)n > FOTA_SIG_MAX) {
		st = fota_error_set(err, FOTA_E_LIMIT, "sig: signature is %d bytes, limit %u (chain too long?)",
				    n, FOTA_SIG_MAX);
		goto out;
	}

	/* Check what we produced the way fota_sig_verify() will (signature and content digest). */
	{
		const unsigned char *p = enc;
		CMS_ContentInfo *back = d2i_CMS_ContentInfo(NULL, &p, n);
		STACK_OF(CMS_SignerInfo) *bsis = back ? CMS_get0_SignerInfos(back) : NULL;
		struct fota_error why = {.code = FOTA_OK, .msg = "does not parse"};
		int ok = back && sk_CMS_SignerInfo_num(bsis) == 1 &&
			 check_signature(back, sk_CMS_SignerInfo_value(bsis, 0), data, len, &why) == FOTA_OK;
		CMS_ContentInfo_free(back);
		if (!ok) {
			st = fota_error_set(err, FOTA_E_INTERNAL, "sig: the signature just made fails: %s",
					    why.msg);
			goto out;
		}
	}

	copy = malloc((size_t)n);
	if (!copy) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: out of memory");
		goto out;
	}
	memcpy(copy, enc, (size_t)n);
	*der = copy;
	*der_len = (size_t)n;
out:
	OPENSSL_free(enc);
	OPENSSL_free(sig);
	free(attrs);
	ASN1_TIME_free(when);
	EVP_MD_CTX_free(mctx);
	CMS_ContentInfo_free(cms);
	ERR_clear_error();
	return st;
}

/* Load every CRL in a PEM file, or the one CRL of a DER file, into the store. */
static fota_status load_crl(X509_STORE *store, const char *path, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	uint8_t *buf = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	X509_CRL *crl = NULL;
	int n = 0;

	st = read_small_file("CRL", path, &buf, &len, err);
	if (st != FOTA_OK)
		return st;
	ERR_clear_error();
	bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: CRL %s: out of memory", path);
		goto out;
	}
	while ((crl = PEM_read_bio_X509_CRL(bio, NULL, no_passphrase, NULL)) != NULL) {
		if (X509_STORE_add_crl(store, crl) != 1) {
			st = ossl_fail(err, FOTA_E_CRYPTO, "sig: CRL %s: adding CRL %d", path, n + 1);
			goto out;
		}
		X509_CRL_free(crl);
		crl = NULL;
		n++;
	}
	if (n == 0) {
		const unsigned char *p = buf;
		ERR_clear_error();
		crl = d2i_X509_CRL(NULL, &p, (long)len);
		if (!crl || p != buf + len) {
			st = ossl_fail(err, FOTA_E_CRYPTO, "sig: CRL %s: neither a PEM nor a DER CRL", path);
			goto out;
		}
		if (X509_STORE_add_crl(store, crl) != 1) {
			st = ossl_fail(err, FOTA_E_CRYPTO, "sig: CRL %s: adding the CRL", path);
			goto out;
		}
	}
	ERR_clear_error();
out:
	X509_CRL_free(crl);
	BIO_free(bio);
	free(buf);
	return st;
}

fota_status fota_trust_load(const char *const *ca_paths, size_t n_ca, const char *crl_path,
			    struct fota_trust **out, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	struct fota_trust *t = NULL;
	STACK_OF(X509) *certs = NULL;

	if (!out || !ca_paths || n_ca == 0)
		return fota_error_set(err, FOTA_E_ARG, "sig: trust: at least one CA file is required");
	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return fota_error_set(err, FOTA_E_NOMEM, "sig: trust: out of memory");
	t->store = X509_STORE_new();
	if (!t->store) {
		st = fota_error_set(err, FOTA_E_NOMEM, "sig: trust: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_ca; i++) {
		if (!ca_paths[i]) {
			st = fota_error_set(err, FOTA_E_ARG, "sig: trust: CA path %zu is NULL", i);
			goto out;
		}
		st = load_certs("CA file", ca_paths[i], &certs, err);
		if (st != FOTA_OK)
			goto out;
		for (int j = 0; j < sk_X509_num(certs); j++) {
			if (X509_STORE_add_cert(t->store, sk_X509_value(certs, j)) != 1) {
				st = ossl_fail(err, FOTA_E_CRYPTO, "sig: CA file %s: adding certificate %d",
					       ca_paths[i], j + 1);
				goto out;
			}
		}
		sk_X509_pop_free(certs, X509_free);
		certs = NULL;
	}
	if (crl_path) {
		st = load_crl(t->store, crl_path, err);
		if (st != FOTA_OK)
			goto out;
		t->have_crl = 1;
	}
	*out = t;
	t = NULL;
out:
	sk_X509_pop_free(certs, X509_free);
	fota_trust_free(t);
	ERR_clear_error();
	return st;
}

void fota_trust_free(struct fota_trust *t)
{
	if (!t)
		return;
	X509_STORE_free(t->store);
	free(t);
}

/* An RFC 2253 name, UTF-8 kept as is, truncated to fit. */
static void name_string(const X509_NAME *name, char *buf, size_t n)
{
	BIO *b = BIO_new(BIO_s_mem());
	buf[0] = '\0';
	if (!b)
		return;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		int got = BIO_read(b, buf, (int)n - 1);
		buf[got > 0 ? got : 0] = '\0';
	}
	BIO_free(b);
}

static int time_to_unix(const ASN1_TIME *t, int64_t *out)
{
	int day = 0, sec = 0;
	ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
	int ok = epoch && t && ASN1_TIME_check(t) && ASN1_TIME_diff(&day, &sec, epoch, t);
	ASN1_TIME_free(epoch);
	if (!ok)
		return -1;
	*out = (int64_t)day * 86400 + sec;
	return 0;
}

/* The signingTime attribute: 0 and *out = -1 when absent, -1 when malformed. */
static int signing_time_of(CMS_SignerInfo *si, int64_t *out)
{
	*out = -1;
	int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
	if (idx < 0)
		return 0;
	X509_ATTRIBUTE *a = CMS_signed_get_attr(si, idx);
	if (!a || X509_ATTRIBUTE_count(a) != 1)
		return -1;
	ASN1_TYPE *ty = X509_ATTRIBUTE_get0_type(a, 0);
	if (!ty || (ty->type != V_ASN1_UTCTIME && ty->type != V_ASN1_GENERALIZEDTIME))
		return -1;
	return time_to_unix((const ASN1_TIME *)ty->value.asn1_string, out);
}

/* One DER TLV at *p (definite length, at most 3 length octets); advances *p past it. */
struct tlv {
	unsigned tag;
	const uint8_t *val;
	size_t len;
};

static int tlv_next(const uint8_t **p, const uint8_t *end, struct tlv *t)
{
	if (end - *p < 2)
		return -1;
	t->tag = *(*p)++;
	size_t l = *(*p)++;
	if (l & 0x80) {
		size_t nb = l & 0x7f;
		if (nb == 0 || nb > 3 || (size_t)(end - *p) < nb)
			return -1;
		l = 0;
		for (size_t i = 0; i < nb; i++)
			l = (l << 8) | *(*p)++;
	}
	if ((size_t)(end - *p) < l)
		return -1;
	t->val = *p;
	t->len = l;
	*p += l;
	return 0;
}

/*
 * The fields of SignedData that no signature covers and OpenSSL does not judge:
 * SignedData.version, the SignedData digestAlgorithms set and SignerInfo.version.
 * RFC 5652 5.1/5.3: with id-data content, SignedData is v1 unless a SignerInfo is v3;
 * a SignerInfo is v1 with issuerAndSerialNumber, v3 with subjectKeyIdentifier. The
 * digestAlgorithms set must name exactly the signer's digest. der is already known to
 * be a well-formed SignedData (it parsed and re-encodes to the same bytes).
 */
static fota_status check_unsigned_fields(const uint8_t *der, size_t len, int want_md,
					 struct tlv *sid_out, struct fota_error *err)
{
	const uint8_t *p = der, *end = der + len;
	struct tlv ci, oid, ex, sd, ver, dalgs, eci, t, si, siver, sid;
	const char *what = "structure";

	if (tlv_next(&p, end, &ci) || ci.tag != 0x30)
		goto bad;
	p = ci.val;
	end = ci.val + ci.len;
	if (tlv_next(&p, end, &oid) || tlv_next(&p, end, &ex) || ex.tag != 0xa0)
		goto bad;
	p = ex.val;
	end = ex.val + ex.len;
	if (tlv_next(&p, end, &sd) || sd.tag != 0x30)
		goto bad;
	p = sd.val;
	end = sd.val + sd.len;
	if (tlv_next(&p, end, &ver) || ver.tag != 0x02 || ver.len != 1 ||
	    tlv_next(&p, end, &dalgs) || dalgs.tag != 0x31 || tlv_next(&p, end, &eci) || eci.tag != 0x30)
		goto bad;
	do { /* skip certificates [0] and crls [1] */
		if (tlv_next(&p, end, &t))
			goto bad;
	} while (t.tag == 0xa0 || t.tag == 0xa1);
	if (t.tag != 0x31 || p != end)
		goto bad;
	p = t.val;
	end = t.val + t.len;
	if (tlv_next(&p, end, &si) || si.tag != 0x30 || p != end)
		goto bad;
	p = si.val;
	end = si.val + si.len;
	if (tlv_next(&p, end, &siver) || siver.tag != 0x02 || siver.len != 1 || tlv_next(&p, end, &sid))
		goto bad;
	*sid_out = sid;
	unsigned want_si = sid.tag == 0x80 ? 3 : 1;
	what = "SignerInfo version";
	if (siver.val[0] != want_si)
		goto bad;
	what = "SignedData version";
	if (ver.val[0] != (want_si == 3 ? 3 : 1))
		goto bad;

	what = "digestAlgorithms";
	p = dalgs.val;
	end = dalgs.val + dalgs.len;
	const unsigned char *ap = p;
	X509_ALGOR *alg = d2i_X509_ALGOR(NULL, &ap, (long)dalgs.len);
	int ok = alg && ap == end && OBJ_obj2nid(alg->algorithm) == want_md;
	if (ok) {
		int ptype = 0;
		X509_ALGOR_get0(NULL, &ptype, NULL, alg);
		ok = ptype == V_ASN1_UNDEF || ptype == V_ASN1_NULL;
	}
	X509_ALGOR_free(alg);
	if (!ok)
		goto bad;
	return FOTA_OK;
bad:
	ERR_clear_error();
	return fota_error_set(err, FOTA_E_SIGNATURE, "sig: SignedData %s not as RFC 5652 requires", what);
}

/*
 * The SignerIdentifier is outside the signature, and OpenSSL matches it to a certificate
 * loosely (X.509 name comparison folds case and spaces). Require its bytes to be exactly
 * the signer certificate's: issuer Name DER followed by serialNumber DER, or the
 * subjectKeyIdentifier octets. Otherwise a changed byte there would go unnoticed.
 */
static fota_status check_sid_exact(const struct tlv *sid, X509 *signer, struct fota_error *err)
{
	unsigned char *name = NULL, *serial = NULL;
	int ok = 0;

	if (sid->tag == 0x30) {
		int nl = i2d_X509_NAME(X509_get_issuer_name(signer), &name);
		int sl = i2d_ASN1_INTEGER((ASN1_INTEGER *)X509_get0_serialNumber(signer), &serial);
		ok = nl > 0 && sl > 0 && sid->len == (size_t)nl + (size_t)sl &&
		     memcmp(sid->val, name, (size_t)nl) == 0 && memcmp(sid->val + nl, serial, (size_t)sl) == 0;
	} else if (sid->tag == 0x80) {
		const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(signer);
		ok = ski && sid->len == (size_t)ASN1_STRING_length(ski) &&
		     memcmp(sid->val, ASN1_STRING_get0_data(ski), sid->len) == 0;
	}
	OPENSSL_free(name);
	OPENSSL_free(serial);
	ERR_clear_error();
	if (!ok)
		return fota_error_set(err, FOTA_E_SIGNATURE,
				      "sig: SignerInfo sid is not byte-identical to the signer certificate's");
	return FOTA_OK;
}

/*
 * Signed attributes as FORMAT.md section 4 allows them: none at all (not for Ed25519,
 * RFC 8419 signs the attributes), or contentType and messageDigest, plus signingTime,
 * each once with one value, and nothing else.
 */
static fota_status check_signed_attrs(CMS_SignerInfo *si, int ed25519, struct fota_error *err)
{
	static const int allowed[3] = {NID_pkcs9_contentType, NID_pkcs9_messageDigest,
				       NID_pkcs9_signingTime};
	int seen[3] = {0, 0, 0};
	int n = CMS_signed_get_attr_count(si);
	if (n < 0) {
		if (ed25519)
			return fota_error_set(err, FOTA_E_SIGNATURE, "sig: Ed25519 signer without signed attributes");
		return FOTA_OK;
	}
	for (int i = 0; i < n; i++) {
		X509_ATTRIBUTE *a = CMS_signed_get_attr(si, i);
		ASN1_OBJECT *obj = a ? X509_ATTRIBUTE_get0_object(a) : NULL;
		int nid = obj ? OBJ_obj2nid(obj) : NID_undef, k = 0;
		while (k < 3 && allowed[k] != nid)
			k++;
		if (k == 3) {
			char oid[80] = "?";
			if (obj)
				OBJ_obj2txt(oid, sizeof(oid), obj, 0);
			return fota_error_set(err, FOTA_E_SIGNATURE, "sig: unexpected signed attribute %s", oid);
		}
		if (seen[k]++)
			return fota_error_set(err, FOTA_E_SIGNATURE, "sig: duplicate %s attribute", OBJ_nid2sn(nid));
		if (X509_ATTRIBUTE_count(a) != 1)
			return fota_error_set(err, FOTA_E_SIGNATURE, "sig: %s attribute with %d values",
					      OBJ_nid2sn(nid), X509_ATTRIBUTE_count(a));
	}
	if (!seen[0] || !seen[1])
		return fota_error_set(err, FOTA_E_SIGNATURE,
				      "sig: signed attributes without contentType or messageDigest");
	return FOTA_OK;
}

/*
 * OpenSSL picks the verification scheme from the key and the digest algorithm and
 * does not look at an ECDSA or PKCS#1 signatureAlgorithm, so check that it names what
 * the signer key does (RFC 5754 3.2-3.3, RFC 4056, RFC 8419).
 */
static int sig_alg_fits(const X509_ALGOR *alg, EVP_PKEY *pk)
{
	int ptype = 0;
	if (!alg || !pk)
		return 0;
	X509_ALGOR_get0(NULL, &ptype, NULL, alg);
	int nid = OBJ_obj2nid(alg->algorithm);
	if (EVP_PKEY_is_a(pk, "EC"))
		return nid == NID_ecdsa_with_SHA256 && ptype == V_ASN1_UNDEF;
	if (EVP_PKEY_is_a(pk, "ED25519"))
		return nid == NID_ED25519 && ptype == V_ASN1_UNDEF;
	if (EVP_PKEY_is_a(pk, "RSA-PSS"))
		return nid == NID_rsassaPss;
	if (EVP_PKEY_is_a(pk, "RSA"))
		return nid == NID_rsassaPss ||
		       ((nid == NID_rsaEncryption || nid == NID_sha256WithRSAEncryption) &&
			(ptype == V_ASN1_NULL || ptype == V_ASN1_UNDEF));
	return 0;
}

fota_status fota_sig_verify(const struct fota_trust *t, const uint8_t *data, size_t len,
			    const uint8_t *der, size_t der_len, int64_t at_time,
			    struct fota_sig_info *info, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	CMS_ContentInfo *cms = NULL;
	STACK_OF(X509) *certs = NULL;
	X509_STORE_CTX *xctx = NULL;
	X509 *signer = NULL;
	X509_ALGOR *dig_alg = NULL, *sig_alg = NULL;
	char key_desc[128];
	int64_t stime = -1;
	struct tlv sid = { 0, NULL, 0 };

	if (!t || (!data && len) || (!der && der_len))
		return fota_error_set(err, FOTA_E_ARG, "sig: verify: invalid arguments");
	if (at_time < 0)
		return fota_error_set(err, FOTA_E_ARG, "sig: verify: negative time %lld",
				      (long long)at_time);
	if (der_len > FOTA_SIG_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "sig: %zu bytes, limit %u", der_len,
				      FOTA_SIG_MAX);
	if (len > INT_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "sig: content of %zu bytes, limit %d", len,
				      INT_MAX);
	if (der_len == 0)
		return fota_error_set(err, FOTA_E_SIGNATURE, "sig: empty signature");
	ERR_clear_error();

	const unsigned char *p = der;
	cms = d2i_CMS_ContentInfo(NULL, &p, (long)der_len);
	if (!cms) {
		st = ossl_fail(err, FOTA_E_SIGNATURE, "sig: not a DER CMS structure");
		goto out;
	}
	if (p != der + der_len) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: %zu trailing bytes after the CMS",
				    (size_t)(der + der_len - p));
		goto out;
	}
	{
		/* DER only: re-encoding must give the same bytes (no BER, sorted SETs). */
		unsigned char *re = NULL;
		int rn = i2d_CMS_ContentInfo(cms, &re);
		int same = rn > 0 && (size_t)rn == der_len && memcmp(re, der, der_len) == 0;
		OPENSSL_free(re);
		if (!same) {
			ERR_clear_error();
			st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: not canonical DER");
			goto out;
		}
	}
	if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: CMS is not SignedData");
		goto out;
	}
	if (CMS_is_detached(cms) != 1) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: CMS embeds its content (want detached)");
		goto out;
	}
	if (OBJ_obj2nid(CMS_get0_eContentType(cms)) != NID_pkcs7_data) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: eContentType is not id-data");
		goto out;
	}
	STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
	if (sk_CMS_SignerInfo_num(sis) != 1) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: %d signers, want exactly 1",
				    sk_CMS_SignerInfo_num(sis));
		goto out;
	}
	CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, 0);
	CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig_alg, &sig_alg);
	int ed25519 = sig_alg && OBJ_obj2nid(sig_alg->algorithm) == NID_ED25519;
	/* SHA-256, except Ed25519, which RFC 8419 3.1 ties to SHA-512. */
	int want_md = ed25519 ? NID_sha512 : NID_sha256;
	if (!dig_alg || OBJ_obj2nid(dig_alg->algorithm) != want_md) {
		char oid[80] = "none";
		if (dig_alg)
			OBJ_obj2txt(oid, sizeof(oid), dig_alg->algorithm, 0);
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: digest algorithm %s, want %s", oid,
				    OBJ_nid2sn(want_md));
		goto out;
	}
	st = check_unsigned_fields(der, der_len, want_md, &sid, err);
	if (st == FOTA_OK)
		st = check_signed_attrs(si, ed25519, err);
	if (st != FOTA_OK)
		goto out;
	certs = CMS_get1_certs(cms);
	if (sk_X509_num(certs) > EMBEDDED_CERTS_MAX) {
		st = fota_error_set(err, FOTA_E_LIMIT, "sig: %d embedded certificates, limit %d",
				    sk_X509_num(certs), EMBEDDED_CERTS_MAX);
		goto out;
	}
	if (signing_time_of(si, &stime) != 0) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: malformed signingTime attribute");
		goto out;
	}

	/* 1. The signature itself, over the content (signer certificate not judged yet). */
	st = check_signature(cms, si, data, len, err);
	if (st != FOTA_OK)
		goto out;
	CMS_SignerInfo_get0_algs(si, NULL, &signer, NULL, NULL);
	if (!signer) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: signer certificate not embedded");
		goto out;
	}
	st = check_sid_exact(&sid, signer, err);
	if (st != FOTA_OK)
		goto out;
	if (!sig_alg_fits(sig_alg, X509_get0_pubkey(signer))) {
		char oid[80] = "none";
		if (sig_alg)
			OBJ_obj2txt(oid, sizeof(oid), sig_alg->algorithm, 0);
		st = fota_error_set(err, FOTA_E_SIGNATURE,
				    "sig: signatureAlgorithm %s does not fit the signer key", oid);
		goto out;
	}

	/* 2. The signer: key policy, chain, validity, revocation, usage. */
	int pss_sig = sig_alg && OBJ_obj2nid(sig_alg->algorithm) == NID_rsassaPss;
	if (describe_key(X509_get0_pubkey(signer), pss_sig, key_desc, sizeof(key_desc)) != 0) {
		st = fota_error_set(err, FOTA_E_SIGNATURE, "sig: signer key: %s", key_desc);
		goto out;
	}
	xctx = X509_STORE_CTX_new();
	/* The store is only read: X509_STORE lookups are thread-safe, hence the cast. */
	if (!xctx || X509_STORE_CTX_init(xctx, (X509_STORE *)t->store, signer, certs) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: preparing chain verification");
		goto out;
	}
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(xctx);
	if (X509_STORE_CTX_set_purpose(xctx, X509_PURPOSE_ANY) != 1) {
		st = ossl_fail(err, FOTA_E_CRYPTO, "sig: setting verification purpose");
		goto out;
	}
	X509_VERIFY_PARAM_set_depth(vp, FOTA_SIG_CHAIN_MAX - 2); /* intermediates between leaf and root */
	if (at_time != 0)
		X509_VERIFY_PARAM_set_time(vp, (time_t)at_time);
	if (t->have_crl)
		X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_CRL_CHECK);
	if (X509_verify_cert(xctx) != 1) {
		int e = X509_STORE_CTX_get_error(xctx);
		int depth = X509_STORE_CTX_get_error_depth(xctx);
		char who[FOTA_SIG_NAME_MAX] = "?";
		X509 *cur = X509_STORE_CTX_get_current_cert(xctx);
		if (cur)
			name_string(X509_get_subject_name(cur), who, sizeof(who));
		ERR_clear_error();
		st = fota_error_set(err, FOTA_E_TRUST, "sig: certificate chain: %s (depth %d, %s)",
				    X509_verify_cert_error_string(e), depth, who);
		goto out;
	}
	uint32_t xflags = X509_get_extension_flags(signer);
	if ((xflags & EXFLAG_KUSAGE) && !(X509_get_key_usage(signer) & KU_DIGITAL_SIGNATURE)) {
		st = fota_error_set(err, FOTA_E_TRUST,
				    "sig: signer certificate keyUsage lacks digitalSignature");
		goto out;
	}
	if ((xflags & EXFLAG_XKUSAGE) &&
	    !(X509_get_extended_key_usage(signer) & (XKU_CODE_SIGN | XKU_ANYEKU))) {
		st = fota_error_set(err, FOTA_E_TRUST,
				    "sig: signer certificate extendedKeyUsage has neither codeSigning nor anyExtendedKeyUsage");
		goto out;
	}

	if (info) {
		memset(info, 0, sizeof(*info));
		name_string(X509_get_subject_name(signer), info->signer, sizeof(info->signer));
		name_string(X509_get_issuer_name(signer), info->issuer, sizeof(info->issuer));
		STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xctx);
		int cn = sk_X509_num(chain);
		for (int i = 0; i < cn && i < FOTA_SIG_CHAIN_MAX; i++)
			name_string(X509_get_subject_name(sk_X509_value(chain, i)), info->chain[i],
				    sizeof(info->chain[i]));
		info->chain_len = cn > FOTA_SIG_CHAIN_MAX ? FOTA_SIG_CHAIN_MAX : (size_t)(cn > 0 ? cn : 0);
		if (time_to_unix(X509_get0_notBefore(signer), &info->not_before) != 0 ||
		    time_to_unix(X509_get0_notAfter(signer), &info->not_after) != 0) {
			st = fota_error_set(err, FOTA_E_TRUST, "sig: signer validity dates do not parse");
			goto out;
		}
		snprintf(info->key_type, sizeof(info->key_type), "%s", key_desc);
		snprintf(info->digest, sizeof(info->digest), "%s", ed25519 ? "SHA512" : "SHA256");
		info->signing_time = stime;
	}
out:
	X509_STORE_CTX_free(xctx);
	sk_X509_pop_free(certs, X509_free);
	CMS_ContentInfo_free(cms);
	ERR_clear_error();
	return st;
}
