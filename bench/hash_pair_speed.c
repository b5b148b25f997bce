/*
 * bench/hash_pair_speed.c: SHA-256 throughput of one OpenSSL digest, of two OpenSSL
 * digests over the same data (fota_sha256_pair with FOTA_SHA256_PAIR_OPENSSL, what the
 * agent and fota-verify did before the pair), and of fota_sha256_pair on the CPU's SHA
 * extensions (both digests in one pass). 256 MiB in 128 KiB feeds, the inner lane
 * restarted every 4 MiB as the chunks of an image; fastest of three runs each. Prints
 * a table and one JSON line (bench/hash.sh builds and runs it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fota/hash.h"

#define LEN (256u << 20)
#define FEED (128u << 10)
#define CHUNK (4u << 20)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double one_digest(const uint8_t *buf, uint8_t d[FOTA_SHA256_LEN])
{
	double t0 = now();
	struct fota_sha256 *c = fota_sha256_new();
	if (!c)
		return -1;
	for (size_t o = 0; o < LEN; o += FEED)
		fota_sha256_update(c, buf + o, FEED);
	fota_sha256_final(c, d);
	fota_sha256_free(c);
	return now() - t0;
}

/* *accel: the pair ran on the SHA extensions. d: the outer (whole) digest. */
static double pair(const uint8_t *buf, unsigned flags, int *accel, uint8_t d[FOTA_SHA256_LEN])
{
	double t0 = now();
	struct fota_sha256_pair *p = fota_sha256_pair_new(flags);
	if (!p)
		return -1;
	uint8_t inner[FOTA_SHA256_LEN];
	for (size_t o = 0; o < LEN; o += FEED) {
		fota_sha256_pair_update(p, buf + o, FEED);
		if ((o + FEED) % CHUNK == 0)
			fota_sha256_pair_final_inner(p, inner);
	}
	fota_sha256_pair_final_outer(p, d);
	*accel = fota_sha256_pair_accelerated(p);
	fota_sha256_pair_free(p);
	return now() - t0;
}

int main(void)
{
	uint8_t *buf = malloc(LEN);
	if (!buf)
		return 1;
	for (size_t i = 0; i < LEN; i++)
		buf[i] = (uint8_t)((i * 2654435761u) >> 13);
	double best[3] = { 1e9, 1e9, 1e9 };
	int accel = 0, unused = 0;
	uint8_t d0[FOTA_SHA256_LEN], d1[FOTA_SHA256_LEN], d2[FOTA_SHA256_LEN];
	for (int r = 0; r < 3; r++) {
		double t[3] = { one_digest(buf, d0), pair(buf, FOTA_SHA256_PAIR_OPENSSL, &unused, d1), pair(buf, 0, &accel, d2) };
		for (int i = 0; i < 3; i++)
			if (t[i] < 0)
				return 1;
			else if (t[i] < best[i])
				best[i] = t[i];
	}
	free(buf);
	if (memcmp(d0, d1, sizeof(d0)) != 0 || memcmp(d0, d2, sizeof(d0)) != 0) {
		fprintf(stderr, "hash_pair_speed: the digests differ\n");
		return 1;
	}
	const char *names[3] = { "OpenSSL, one digest", "OpenSSL, two digests", "fota_sha256_pair, two digests" };
	printf("%-32s %10s %14s\n", "SHA-256 over 256 MiB", "seconds", "MB/s of data");
	for (int i = 0; i < 3; i++)
		printf("%-32s %10.3f %14.0f\n", names[i], best[i], LEN / best[i] / 1e6);
	printf("the pair ran on the CPU's SHA extensions: %s\n", accel ? "yes" : "no (OpenSSL lanes)");
	printf("JSON {\"one_openssl_mbps\":%.0f,\"two_openssl_mbps\":%.0f,\"pair_mbps\":%.0f,\"pair_accelerated\":%s}\n",
	       LEN / best[0] / 1e6, LEN / best[1] / 1e6, LEN / best[2] / 1e6, accel ? "true" : "false");
	return 0;
}
