/*
 * sig.h: detached CMS (PKCS#7) signatures over manifest.json, through OpenSSL.
 *
 * The signature is DER, SHA-256, detached, binary content, with the signer certificate
 * and every intermediate embedded, so stock OpenSSL verifies it:
 *   openssl cms -verify -binary -inform DER -in manifest.sig -content manifest.json \
 *     -CAfile ROOT.pem -purpose any
 * Keys: ECDSA P-256, Ed25519, RSA (PKCS#1 v1.5) and RSA-PSS (SHA-256, MGF1-SHA-256,
 * 32-byte salt), RSA of at least 2048 bits. Other curves (P-384 included) and smaller
 * RSA keys are refused, when loading a signer (FOTA_E_CRYPTO) and when verifying
 * (FOTA_E_SIGNATURE).
 * Digest: SHA-256, except Ed25519, where RFC 8419 3.1 requires SHA-512 for the
 * messageDigest/digestAlgorithm (the signature itself is pure Ed25519 over the signed
 * attributes). Note: OpenSSL 3.0's CMS code (library and CLI) cannot sign or verify
 * Ed25519 at all ("invalid digest"), so the stock-openssl audit command above only works
 * for Ed25519 packages with an OpenSSL that supports RFC 8419; sig.c checks Ed25519 by hand.
 * Every signature has signed attributes contentType and messageDigest, and signingTime
 * only when asked for.
 * Trust comes only from the root CA files given to fota_trust_load(); the signer
 * certificate must chain to one of them through the embedded certificates (at most
 * FOTA_SIG_CHAIN_MAX in the chain), every certificate of the chain must be within its
 * validity period at the verification time, the signer must carry the digitalSignature
 * key usage when it has a keyUsage extension, codeSigning or anyExtendedKeyUsage when it
 * has an extendedKeyUsage extension (no S/MIME EKU is required: X509 purpose "any", as
 * with `openssl cms -purpose any`), and not be revoked by the optional CRL.
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
 * Load a private key (PEM, unencrypted), its certificate (PEM; the first certificate of
 * the file) and optional intermediates (PEM bundle, may be NULL, at most 15). pss
 * selects RSA-PSS for an RSA key (ignored otherwise; a key of type RSA-PSS always signs
 * with PSS). Fails with FOTA_E_CRYPTO when the key does not
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

/*
 * Load one or more root CA files (PEM, each may hold several certificates) and an
 * optional CRL file (PEM with one or more CRLs, or one DER CRL; may be NULL). With a
 * CRL, verification checks the signer's revocation (X509_V_FLAG_CRL_CHECK): the CRL of
 * the signer's issuer must then be in the file and current at the verification time.
 * Missing files are FOTA_E_IO, unparsable ones FOTA_E_CRYPTO, both naming the path.
 */
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
	char digest[16];                       /* "SHA256" ("SHA512" for Ed25519, RFC 8419) */
	int64_t signing_time;                  /* -1 when the CMS has none */
};

/*
 * Verify a detached DER CMS signature over data. at_time is the Unix time at which
 * certificate validity is judged (0 = now). Errors: FOTA_E_LIMIT (der_len >
 * FOTA_SIG_MAX, or more than 16 embedded certificates), FOTA_E_SIGNATURE (malformed or
 * not canonical DER, not SignedData with detached id-data content, not exactly one
 * signer, digest algorithm not the one above, signed attributes other than contentType,
 * messageDigest and signingTime, signatureAlgorithm not fitting the key, signer key
 * refused by the policy above, digest or signature mismatch), FOTA_E_TRUST (chain does
 * not reach a trusted root, expired or not yet valid, wrong key usage, revoked; the
 * message names the reason as X509_verify_cert_error_string() gives it). The signature
 * is checked before the signer, so tampered content is FOTA_E_SIGNATURE whoever signed.
 * at_time < 0 is FOTA_E_ARG. info may be NULL; it is filled on success.
 */
fota_status fota_sig_verify(const struct fota_trust *t, const uint8_t *data, size_t len,
			    const uint8_t *der, size_t der_len, int64_t at_time,
			    struct fota_sig_info *info, struct fota_error *err) FOTA_WUR;

#endif
