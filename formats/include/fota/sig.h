/*
 * sig.h: detached CMS (PKCS#7) signatures over manifest.json, through OpenSSL.
 *
 * The signature is DER, SHA-256, detached, binary content, with the signer certificate
 * and every intermediate embedded, so stock OpenSSL verifies it:
 *   openssl cms -verify -binary -inform DER -in manifest.sig -content manifest.json \
 *     -CAfile ROOT.pem -purpose any
 * Keys: ECDSA P-256, Ed25519, RSA (PKCS#1 v1.5) and RSA-PSS.
 * Trust comes only from the root CA files given to fota_trust_load(); the signer
 * certificate must be within its validity period at the verification time, carry the
 * digitalSignature key usage when it has a keyUsage extension, and not be revoked by
 * the optional CRL.
 */
#ifndef FOTA_SIG_H
#define FOTA_SIG_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

#define FOTA_SIG_CHAIN_MAX 8
#define FOTA_SIG_NAME_MAX 256

struct fota_signer;
struct fota_trust;

enum fota_sig_padding { FOTA_SIG_PAD_DEFAULT = 0, FOTA_SIG_PAD_PSS = 1 };

/*
 * Load a private key (PEM), its certificate (PEM) and optional intermediates (PEM
 * bundle, may be NULL). pss selects RSA-PSS for an RSA key (ignored otherwise; a key
 * of type RSA-PSS always signs with PSS). Fails with FOTA_E_CRYPTO when the key does not
 * match the certificate. *out owned by the caller (fota_signer_free).
 */
fota_status fota_signer_load(const char *key_path, const char *cert_path, const char *chain_path,
			     enum fota_sig_padding pad, struct fota_signer **out,
			     struct fota_error *err) FOTA_WUR;
void fota_signer_free(struct fota_signer *s);

/*
 * Sign data. signing_time < 0: the CMS carries no signing time, so a deterministic key
 * (Ed25519, RSA PKCS#1 v1.5) gives identical bytes on every run; otherwise it carries
 * that time (fota-pack passes SOURCE_DATE_EPOCH). *der is malloc'd, owned by the caller.
 */
fota_status fota_sig_sign(const struct fota_signer *s, const uint8_t *data, size_t len,
			  int64_t signing_time, uint8_t **der, size_t *der_len,
			  struct fota_error *err) FOTA_WUR;

/* Load one or more root CA files (PEM, each may hold several certificates) and an optional CRL file (PEM or DER, may be NULL). */
fota_status fota_trust_load(const char *const *ca_paths, size_t n_ca, const char *crl_path,
			    struct fota_trust **out, struct fota_error *err) FOTA_WUR;
void fota_trust_free(struct fota_trust *t);

struct fota_sig_info {
	char signer[FOTA_SIG_NAME_MAX];        /* subject of the signer certificate, RFC 2253 */
	char issuer[FOTA_SIG_NAME_MAX];
	size_t chain_len;                      /* certificates from signer up to and including the root */
	char chain[FOTA_SIG_CHAIN_MAX][FOTA_SIG_NAME_MAX]; /* subjects, signer first */
	int64_t not_before, not_after;         /* signer validity, Unix seconds */
	char key_type[32];                     /* "ECDSA P-256", "Ed25519", "RSA-2048", "RSA-PSS-3072" */
	char digest[16];                       /* "SHA256" */
	int64_t signing_time;                  /* -1 when the CMS has none */
};

/*
 * Verify a detached DER CMS signature over data. at_time is the Unix time at which
 * certificate validity is judged (0 = now). Errors: FOTA_E_LIMIT (der_len >
 * FOTA_SIG_MAX), FOTA_E_SIGNATURE (malformed, not exactly one signer, digest mismatch),
 * FOTA_E_TRUST (chain does not reach a trusted root, expired or not yet valid, wrong
 * key usage, revoked). info may be NULL; it is filled on success.
 */
fota_status fota_sig_verify(const struct fota_trust *t, const uint8_t *data, size_t len,
			    const uint8_t *der, size_t der_len, int64_t at_time,
			    struct fota_sig_info *info, struct fota_error *err) FOTA_WUR;

#endif
