/* Suite formats/delta_parse: our parser for source-window blocks (delta_parse.c): frames
 * that reference the prefix at both ends, repeat offsets across zstd block edges, tiny
 * inputs, bad arguments, and the whole engine with it (thread independence, apply). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "unit.h"
#include "fota/delta.h"
#include "../../formats/delta_internal.h"

/* test_delta.c */
size_t test_delta_pieces(const uint8_t *a, size_t n, uint8_t *b, size_t cap, const uint8_t *noise, uint64_t seed);

static unsigned wlog_for(size_t n)
{
	unsigned l = DELTA_WLOG_MIN;
	while (((size_t)1 << l) < n)
		l++;
	return l;
}

/* Code buf (prefix pre_len, then n bytes, then the pad) with our parser, decode the frame
 * as apply does (zstd with the prefix referenced) and check it gives the block back.
 * Returns the frame's size. */
static size_t code_and_check(const uint8_t *buf, size_t pre_len, size_t n)
{
	unsigned wl = wlog_for(pre_len + n);
	size_t cap = ZSTD_compressBound(n), len = 0;
	uint8_t *dst = malloc(cap), *out = malloc(n);
	const char *why = NULL;
	CU_ASSERT_PTR_NOT_NULL_FATAL(dst);
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	fota_status st = delta_parse_window(buf, pre_len, n, 19, wl, dst, cap, &len, &why);
	if (st != FOTA_OK)
		fprintf(stderr, "parse: %s\n", why ? why : "?");
	CU_ASSERT_EQUAL_FATAL(st, FOTA_OK);
	CU_ASSERT(len > 0 && len <= cap);
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	CU_ASSERT_PTR_NOT_NULL_FATAL(dc);
	size_t r = ZSTD_DCtx_refPrefix(dc, buf, pre_len);
	CU_ASSERT(!ZSTD_isError(r));
	r = ZSTD_decompressDCtx(dc, out, n, dst, len);
	CU_ASSERT(!ZSTD_isError(r) && r == n);
	CU_ASSERT(!ZSTD_isError(r) && r == n && memcmp(out, buf + pre_len, n) == 0);
	ZSTD_freeDCtx(dc);
	free(dst);
	free(out);
	return len;
}

static uint8_t *make_buf(size_t pre_len, size_t n)
{
	uint8_t *b = malloc(pre_len + n + DELTA_PARSE_PAD);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	memset(b + pre_len + n, 0, DELTA_PARSE_PAD);
	return b;
}

/* A random prefix; the block is its first 8 KiB, 100 random bytes, then its last 8 KiB:
 * only matches that start at the prefix's first byte and end at its last byte make the
 * frame small (random bytes do not compress). */
static void test_delta_parse_prefix_first_and_last_byte(void)
{
	size_t pre = 65536, piece = 8192, n = 2 * piece + 100;
	uint8_t *b = make_buf(pre, n);
	unit_fill_random(b, pre, 1);
	memcpy(b + pre, b, piece);
	unit_fill_random(b + pre + piece, 100, 2);
	memcpy(b + pre + piece + 100, b + pre - piece, piece);
	size_t len = code_and_check(b, pre, n);
	CU_ASSERT(len < 100 + 200); /* the 100 random bytes plus a few sequences and headers */
	/* the block is the whole prefix: one match from the first byte to the last */
	uint8_t *w = make_buf(pre, pre);
	unit_fill_random(w, pre, 3);
	memcpy(w + pre, w, pre);
	CU_ASSERT(code_and_check(w, pre, pre) < 100);
	free(w);
	free(b);
}

/* The block repeats the prefix at one offset with a changed byte every 997 bytes, over
 * 400 KB: three zstd blocks and more, with runs crossing every block edge. Each change
 * costs a literal and a repeat-offset match; any new offset would cost far more. */
static void test_delta_parse_rep_offsets_across_blocks(void)
{
	size_t pre = 450000, n = 400000;
	uint8_t *b = make_buf(pre, n);
	unit_fill_random(b, pre, 7);
	memcpy(b + pre, b + 4321, n);
	size_t changes = 0;
	for (size_t i = 500; i < n; i += 997, changes++)
		b[pre + i] ^= 0x5A;
	size_t len = code_and_check(b, pre, n);
	CU_ASSERT(len < changes * 6 + 400);
	CU_ASSERT(len > changes); /* a literal per change, at least */
	free(b);
}

/* One- to a few-byte blocks and prefixes, zero runs, and an unrelated random block. */
static void test_delta_parse_small_and_unrelated(void)
{
	for (size_t pre = 1; pre <= 9; pre += 4)
		for (size_t n = 1; n <= 17; n += 4) {
			uint8_t *b = make_buf(pre, n);
			unit_fill_random(b, pre + n, pre * 100 + n);
			code_and_check(b, pre, n);
			free(b);
		}
	uint8_t *z = make_buf(4096, 200000);
	memset(z, 0, 4096 + 200000);
	CU_ASSERT(code_and_check(z, 4096, 200000) < 200);
	free(z);
	uint8_t *r = make_buf(100000, 300000);
	unit_fill_random(r, 400000, 9);
	size_t len = code_and_check(r, 100000, 300000);
	CU_ASSERT(len <= delta_piece_bound(300000));
	free(r);
}

static void test_delta_parse_bad_arguments(void)
{
	uint8_t b[64] = {0}, dst[256];
	size_t len = 1;
	const char *why = NULL;
	/* an empty block */
	CU_ASSERT_EQUAL(delta_parse_window(b, 16, 0, 19, 12, dst, sizeof(dst), &len, &why), FOTA_E_ARG);
	CU_ASSERT_EQUAL(len, 0);
	CU_ASSERT_PTR_NOT_NULL(why);
	/* a window smaller than prefix + block */
	CU_ASSERT_EQUAL(delta_parse_window(b, 40, 16, 19, 5, dst, sizeof(dst), &len, &why), FOTA_E_ARG);
	/* no room for the frame */
	CU_ASSERT_NOT_EQUAL(delta_parse_window(b, 16, 40, 19, 12, dst, 4, &len, &why), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(why);
	CU_ASSERT(delta_parse_mem(1u << 20, 1u << 20, 21) > (16u << 20));
}

/* The engine with our parser (no level given): new is made of 5- to 8-byte pieces of
 * old between 1- to 3-byte gaps, which bsdiff-style matching leaves to the extra stream
 * and source-window blocks code well. One, two and three threads write the same patch;
 * it applies; it is smaller than the script-only encoding; zstd's parser (an explicit
 * level) writes a valid patch too. */
static void test_delta_parse_engine_threads(void)
{
	size_t n = 1u << 20, cap = (5u << 20) / 2;
	uint8_t *a = malloc(n), *b = malloc(cap), *noise = malloc(cap);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(noise);
	unit_fill_random(a, n, 51);
	unit_fill_random(noise, cap, 52);
	size_t nl = test_delta_pieces(a, n, b, cap, noise, 555);
	free(noise);
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, nl, NULL, &s, &e), FOTA_OK);
	uint8_t *p[3] = {NULL, NULL, NULL}, *ps = NULL, *pz = NULL;
	size_t pl[3] = {0, 0, 0}, psl = 0, pzl = 0;
	for (int k = 0; k < 3; k++) {
		struct fota_delta_opts o = {.threads = (unsigned)k + 1};
		CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, &o, &p[k], &pl[k], &e), FOTA_OK);
	}
	for (int k = 1; k < 3; k++)
		CU_ASSERT(pl[k] == pl[0] && memcmp(p[k], p[0], pl[0]) == 0);
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode(s, NULL, &ps, &psl, &e), FOTA_OK);
	CU_ASSERT(pl[0] < psl);
	struct fota_delta_opts z = {.threads = 2, .level = 12};
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, &z, &pz, &pzl, &e), FOTA_OK);
	char *op = unit_write_file("parse-old.bin", a, n);
	char np[4096];
	snprintf(np, sizeof(np), "%s/parse-new.bin", unit_tmpdir());
	uint8_t *pp[2] = {p[0], pz};
	size_t ppl[2] = {pl[0], pzl};
	for (int k = 0; k < 2; k++) {
		char *path = unit_write_file("parse.patch", pp[k], ppl[k]);
		uint64_t w = 0;
		CU_ASSERT_EQUAL(fota_delta_apply_files(op, path, np, FOTA_DELTA_MEM_DEFAULT, &w, &e), FOTA_OK);
		size_t got = 0;
		uint8_t *r = unit_read_file(np, &got);
		CU_ASSERT(r && got == nl && memcmp(r, b, nl) == 0);
		free(r);
		free(path);
	}
	free(op);
	for (int k = 0; k < 3; k++)
		free(p[k]);
	free(ps);
	free(pz);
	fota_delta_script_free(s);
	free(a);
	free(b);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_delta_parse_prefix_first_and_last_byte);
	UNIT_ADD(s, test_delta_parse_rep_offsets_across_blocks);
	UNIT_ADD(s, test_delta_parse_small_and_unrelated);
	UNIT_ADD(s, test_delta_parse_bad_arguments);
	UNIT_ADD(s, test_delta_parse_engine_threads);
}

UNIT_SUITE("formats/delta_parse", add)
