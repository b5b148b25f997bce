/*
 * hash.h: SHA-256 through OpenSSL's EVP interface, and lowercase hex encoding as
 * the manifest spells digests.
 */
#ifndef FOTA_HASH_H
#define FOTA_HASH_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

#define FOTA_SHA256_LEN 32
#define FOTA_SHA256_HEX_LEN 64

struct fota_sha256; /* opaque streaming context */

/* Allocate a context ready for updates. NULL when out of memory. Free with fota_sha256_free. */
struct fota_sha256 *fota_sha256_new(void);
void fota_sha256_update(struct fota_sha256 *ctx, const void *data, size_t len);
/* Write the digest and reset the context so it can be reused. */
void fota_sha256_final(struct fota_sha256 *ctx, uint8_t out[FOTA_SHA256_LEN]);
void fota_sha256_free(struct fota_sha256 *ctx);

/* One-shot digest. */
void fota_sha256(const void *data, size_t len, uint8_t out[FOTA_SHA256_LEN]);

/* Hash a whole file, or its first `limit` bytes when limit != UINT64_MAX. *size gets the bytes hashed. */
fota_status fota_sha256_file(const char *path, uint64_t limit, uint8_t out[FOTA_SHA256_LEN],
			     uint64_t *size, struct fota_error *err) FOTA_WUR;

/* Lowercase hex; out must hold 2*n+1 bytes and is NUL-terminated. */
void fota_hex_encode(const uint8_t *bin, size_t n, char *out);
/* Decode exactly 2*n lowercase hex digits (and nothing else) from a NUL-terminated string. 0 on success, -1 otherwise. */
int fota_hex_decode(const char *hex, uint8_t *bin, size_t n);

#endif
