/*
 * Suite formats/hash_pair: the two-lane SHA-256 (hash_pair.c) against OpenSSL's, on the
 * CPU's SHA extensions when it has them and on the OpenSSL lanes, for every way the
 * stream can be cut: feeds of every size around the 64-byte block, inner lanes started
 * at offsets that are and are not block-aligned with the outer lane, empty pieces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "fota/hash.h"

static const unsigned MODES[2] = { 0, FOTA_SHA256_PAIR_OPENSSL };

static void test_hash_pair_known_answer(void)
{
	for (int m = 0; m < 2; m++) {
		struct fota_sha256_pair *p = fota_sha256_pair_new(MODES[m]);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p);
		uint8_t d[32];
		char hex[65];
		fota_sha256_pair_final_inner(p, d);
		fota_hex_encode(d, 32, hex);
		CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
		fota_sha256_pair_update(p, "abc", 3);
		fota_sha256_pair_final_inner(p, d);
		fota_hex_encode(d, 32, hex);
		CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
		/* FIPS 180-4's two-block example, fed after "abc" to the outer lane only */
		const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
		fota_sha256_pair_update(p, two, strlen(two));
		fota_sha256_pair_final_inner(p, d);
		fota_hex_encode(d, 32, hex);
		CU_ASSERT_STRING_EQUAL(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
		uint8_t want[32];
		char all[64];
		snprintf(all, sizeof(all), "abc%s", two);
		fota_sha256(all, strlen(all), want);
		fota_sha256_pair_final_outer(p, d);
		CU_ASSERT_EQUAL(memcmp(d, want, 32), 0);
		fota_sha256_pair_free(p);
	}
	/* the SHA-extension path runs wherever the CPU has it (so this suite tests it) */
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[4096];
		bool sha_ni = false;
		while (!sha_ni && fgets(line, sizeof(line), f))
			sha_ni = strncmp(line, "flags", 5) == 0 && strstr(line, " sha_ni") != NULL;
		fclose(f);
		struct fota_sha256_pair *q = fota_sha256_pair_new(0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(q);
#if defined(__x86_64__)
		CU_ASSERT_EQUAL(fota_sha256_pair_accelerated(q), sha_ni);
#endif
		fota_sha256_pair_free(q);
	}
	/* the flag is honoured */
	struct fota_sha256_pair *p = fota_sha256_pair_new(FOTA_SHA256_PAIR_OPENSSL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_FALSE(fota_sha256_pair_accelerated(p));
	fota_sha256_pair_free(p);
	fota_sha256_pair_free(NULL);
}

/*
 * Feed buf in pieces of the sizes given (cycled), start the inner lane again at each cut
 * in cuts[] (ascending), and check every inner digest and the outer one against
 * OpenSSL. Returns the number of digests checked.
 */
static int run_stream(unsigned mode, const uint8_t *buf, size_t len, const size_t *feeds, size_t n_feeds,
		      const size_t *cuts, size_t n_cuts)
{
	struct fota_sha256_pair *p = fota_sha256_pair_new(mode);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	size_t pos = 0, fi = 0, ci = 0, from = 0;
	int checked = 0;
	uint8_t d[32], want[32];
	while (pos < len || ci < n_cuts) {
		size_t next = len;
		if (ci < n_cuts && cuts[ci] < next)
			next = cuts[ci];
		size_t step = feeds[fi++ % n_feeds];
		if (pos + step > next)
			step = next - pos;
		fota_sha256_pair_update(p, buf + pos, step);
		pos += step;
		if (ci < n_cuts && pos == cuts[ci]) {
			fota_sha256_pair_final_inner(p, d);
			fota_sha256(buf + from, pos - from, want);
			CU_ASSERT_EQUAL(memcmp(d, want, 32), 0);
			checked++;
			from = pos;
			ci++;
		} else if (pos == len && ci >= n_cuts) {
			break;
		}
	}
	fota_sha256_pair_final_inner(p, d);
	fota_sha256(buf + from, len - from, want);
	CU_ASSERT_EQUAL(memcmp(d, want, 32), 0);
	fota_sha256_pair_final_outer(p, d);
	fota_sha256(buf, len, want);
	CU_ASSERT_EQUAL(memcmp(d, want, 32), 0);
	/* both lanes started again: a second stream gives the same digests */
	fota_sha256_pair_update(p, buf, len);
	fota_sha256_pair_final_outer(p, d);
	CU_ASSERT_EQUAL(memcmp(d, want, 32), 0);
	fota_sha256_pair_free(p);
	return checked + 2;
}

static void test_hash_pair_every_feed_size(void)
{
	enum { LEN = 4099 };
	uint8_t *buf = malloc(LEN);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	unit_fill_random(buf, LEN, 11);
	int checked = 0;
	for (int m = 0; m < 2; m++)
		for (size_t f = 1; f <= 200; f++) {
			size_t feeds[1] = { f };
			size_t cuts[3] = { 64, 64 + f, 2048 };
			checked += run_stream(MODES[m], buf, LEN, feeds, 1, cuts, 3);
		}
	CU_ASSERT_EQUAL(checked, 2 * 200 * 5);
	free(buf);
}

static void test_hash_pair_inner_at_every_offset(void)
{
	/* inner lanes that start off the outer lane's block grid, on it, and back on it */
	enum { LEN = 1000 };
	uint8_t buf[LEN];
	unit_fill_random(buf, LEN, 12);
	size_t feeds[4] = { 1000, 37, 64, 129 };
	for (int m = 0; m < 2; m++)
		for (size_t c = 0; c <= 130; c++) {
			size_t cuts[4] = { c, c + 64, c + 200, 900 };
			size_t n = c + 200 < 900 ? 4 : 1;
			run_stream(MODES[m], buf, LEN, feeds + (c % 4), 4 - c % 4, n == 4 ? cuts : cuts + 3, n);
		}
	/* the empty stream, and empty pieces */
	size_t zero[2] = { 0, 5 };
	size_t cut0[2] = { 0, 0 };
	for (int m = 0; m < 2; m++) {
		CU_ASSERT_EQUAL(run_stream(MODES[m], buf, 0, zero, 1, NULL, 0), 2);
		CU_ASSERT_EQUAL(run_stream(MODES[m], buf, 10, zero, 2, cut0, 2), 4);
	}
}

static void test_hash_pair_large_random(void)
{
	/* 3 MiB in random feeds, with chunk-like cuts: 1 MiB aligned ones and odd ones */
	size_t len = 3u << 20;
	uint8_t *buf = malloc(len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	unit_fill_random(buf, len, 13);
	size_t feeds[7] = { 131072, 1, 65536 + 3, 4096, 63, 200000, 65 };
	size_t cuts[5] = { 1u << 20, (1u << 20) + 4096, (2u << 20) - 7, 2u << 20, (2u << 20) + 1 };
	for (int m = 0; m < 2; m++)
		CU_ASSERT_EQUAL(run_stream(MODES[m], buf, len, feeds, 7, cuts, 5), 7);
	free(buf);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_hash_pair_known_answer);
	UNIT_ADD(s, test_hash_pair_every_feed_size);
	UNIT_ADD(s, test_hash_pair_inner_at_every_offset);
	UNIT_ADD(s, test_hash_pair_large_random);
}
UNIT_SUITE("formats/hash_pair", add)
