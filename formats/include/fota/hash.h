/*
 * hash.h: SHA-256 through OpenSSL's EVP interface, and lowercase hex encoding as
 * the manifest spells digests.
 */
#ifndef FOTA_HASH_H
#define FOTA_HASH_H

#include <stdbool.h>
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

/*
 * Two SHA-256 digests of one byte stream in one pass (hash_pair.c). The outer lane runs
 * over everything fed; the inner lane can be finished and started again at any point, so
 * it gives the digests of consecutive pieces (the chunks of an image) while the outer lane
 * gives the digest of the whole (the image). On x86-64 CPUs with the SHA extensions the
 * lanes share each 64-byte block's message schedule and interleave their rounds, which
 * hides the rounds' latency: both digests then cost about what one costs through OpenSSL.
 * Elsewhere, with FOTA_SHA256_PAIR_OPENSSL, or when the environment variable
 * FOTA_NO_SHA_EXT is set (to anything but "" or "0"), each lane is an OpenSSL context.
 */
struct fota_sha256_pair; /* opaque */

#define FOTA_SHA256_PAIR_OPENSSL 1u /* flag: two OpenSSL contexts, never the CPU's SHA extensions */

/* A pair with both lanes started. NULL when out of memory. Free with fota_sha256_pair_free. */
struct fota_sha256_pair *fota_sha256_pair_new(unsigned flags);
/* True when the pair runs on the CPU's SHA extensions (both digests in one pass). */
bool fota_sha256_pair_accelerated(const struct fota_sha256_pair *p);
/* Feed data to both lanes. */
void fota_sha256_pair_update(struct fota_sha256_pair *p, const void *data, size_t len);
/* The inner lane's digest of what was fed since it started; it starts again. */
void fota_sha256_pair_final_inner(struct fota_sha256_pair *p, uint8_t out[FOTA_SHA256_LEN]);
/* The outer lane's digest of everything fed since it started; it starts again. */
void fota_sha256_pair_final_outer(struct fota_sha256_pair *p, uint8_t out[FOTA_SHA256_LEN]);
void fota_sha256_pair_free(struct fota_sha256_pair *p);

#endif
