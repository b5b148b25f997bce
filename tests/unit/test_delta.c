/* Suite formats/delta: diff + encode + apply round trips on generated images, thread
 * independence, the memory bound, malformed patches, and script slicing. */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "unit.h"
#include "fota/delta.h"
#include "../../formats/delta_internal.h"

/* ---------------------------------------------------------------- helpers */

struct memio {
	const uint8_t *patch, *src;
	size_t src_len;
	uint8_t *out;
	size_t out_len, out_cap;
	size_t max_write; /* largest single write seen */
};

static fota_status m_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct memio *m = ctx;
	memcpy(buf, m->patch + off, len);
	return FOTA_OK;
}

static fota_status m_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct memio *m = ctx;
	if (off > m->src_len || len > m->src_len - off)
		return fota_error_set(err, FOTA_E_INTERNAL, "test: source read out of range");
	memcpy(buf, m->src + off, len);
	return FOTA_OK;
}

static fota_status m_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct memio *m = ctx;
	if (m->out_len + len > m->out_cap) {
		size_t cap = (m->out_len + len) * 2 + 16;
		uint8_t *n = realloc(m->out, cap);
		if (!n)
			return fota_error_set(err, FOTA_E_NOMEM, "test: oom");
		m->out = n;
		m->out_cap = cap;
	}
	memcpy(m->out + m->out_len, buf, len);
	m->out_len += len;
	if (len > m->max_write)
		m->max_write = len;
	return FOTA_OK;
}

/* Apply patch to src; returns status, *out (malloc'd) the target. */
static fota_status apply_mem(const uint8_t *patch, size_t plen, const uint8_t *src, size_t slen, uint64_t limit,
			     uint8_t **out, size_t *out_len, struct fota_error *err)
{
	struct memio m = {patch, src, slen, NULL, 0, 0, 0};
	struct fota_delta_io io = {&m, plen, m_read_patch, m_read_source, m_write};
	uint64_t n = 0;
	fota_status st = fota_delta_apply(&io, slen, limit, &n, err);
	if (st == FOTA_OK && n != m.out_len)
		st = FOTA_E_INTERNAL;
	*out = m.out;
	*out_len = m.out_len;
	return st;
}

/* diff + encode (both entry points) + apply; asserts the round trip. Returns the patch size. */
static size_t round_trip(const uint8_t *old, size_t ol, const uint8_t *new, size_t nl, unsigned threads)
{
	struct fota_delta_opts opts = {threads, 0, 0};
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	fota_status dst = fota_delta_diff(old, ol, new, nl, &opts, &s, &e);
	if (dst != FOTA_OK)
		fprintf(stderr, "diff: %s\n", e.msg);
	CU_ASSERT_EQUAL_FATAL(dst, FOTA_OK);
	CU_ASSERT_EQUAL(fota_delta_script_check(s, &e), FOTA_OK);
	CU_ASSERT_EQUAL(s->new_size, nl);
	size_t best = SIZE_MAX;
	for (int full = 0; full < 2; full++) {
		uint8_t *p = NULL, *out = NULL;
		size_t pl = 0, outl = 0;
		fota_status st = full ? fota_delta_encode_full(s, old, new, &opts, &p, &pl, &e)
				      : fota_delta_encode(s, &opts, &p, &pl, &e);
		CU_ASSERT_EQUAL_FATAL(st, FOTA_OK);
		CU_ASSERT_EQUAL(fota_delta_detect(p, pl), FOTA_DELTA_FMT_FOTA);
		st = apply_mem(p, pl, old, ol, FOTA_DELTA_MEM_DEFAULT, &out, &outl, &e);
		CU_ASSERT_EQUAL(st, FOTA_OK);
		if (st != FOTA_OK)
			fprintf(stderr, "apply: %s\n", e.msg);
		CU_ASSERT_EQUAL(outl, nl);
		CU_ASSERT(outl == nl && (nl == 0 || memcmp(out, new, nl) == 0));
		if (pl < best)
			best = pl;
		free(p);
		free(out);
	}
	fota_delta_script_free(s);
	return best;
}

static uint8_t *rnd(size_t n, uint64_t seed)
{
	uint8_t *b = malloc(n ? n : 1);
	unit_fill_random(b, n, seed);
	return b;
}

/* Fill b (at most cap bytes) with 5- to 8-byte pieces of a (n bytes) at pseudo-random
 * places between 1- to 3-byte gaps taken from noise; returns the bytes written. Also used
 * by test_delta_parse.c. */
size_t test_delta_pieces(const uint8_t *a, size_t n, uint8_t *b, size_t cap, const uint8_t *noise, uint64_t seed);
size_t test_delta_pieces(const uint8_t *a, size_t n, uint8_t *b, size_t cap, const uint8_t *noise, uint64_t seed)
{
	size_t nl = 0;
	uint64_t x = seed;
	while (nl + 16 < cap) {
		x = x * 6364136223846793005u + 1442695040888963407u;
		size_t len = 5 + (size_t)(x >> 40) % 4, at = (size_t)(x >> 11) % (n - len);
		memcpy(b + nl, a + at, len);
		nl += len;
		size_t gap = 1 + (size_t)(x >> 5) % 3;
		memcpy(b + nl, noise + nl, gap);
		nl += gap;
	}
	return nl;
}

/* ---------------------------------------------------------------- round trips */

static void test_delta_empty_and_tiny(void)
{
	uint8_t a[1] = {7}, b[1] = {9};
	round_trip(NULL, 0, NULL, 0, 1);
	round_trip(a, 1, NULL, 0, 1);
	round_trip(NULL, 0, b, 1, 1);
	round_trip(a, 1, b, 1, 1);
	round_trip(a, 1, a, 1, 1);
	uint8_t *r = rnd(5000, 1);
	round_trip(NULL, 0, r, 5000, 2);
	round_trip(r, 5000, NULL, 0, 2);
	free(r);
}

static void test_delta_identical_is_small(void)
{
	size_t n = 300000;
	uint8_t *a = rnd(n, 2);
	size_t pl = round_trip(a, n, a, n, 2);
	CU_ASSERT(pl < 400); /* a copy of 300 kB costs a few hundred bytes at most */
	free(a);
}

/* A 3 MiB image of near-repeating 4 KiB blocks (as in a file system) against itself:
 * every 1 MiB matching slice must start on the identity alignment, or the repeats pull
 * the matcher elsewhere and the copy costs kilobytes (4282 bytes before the fix). */
static void test_delta_identical_repetitive_slices(void)
{
	size_t blk = 4096, nb = 768, n = blk * nb;
	uint8_t *base = rnd(blk, 5), *a = malloc(n);
	CU_ASSERT_FATAL(a != NULL);
	for (size_t i = 0; i < nb; i++) {
		uint8_t *b = a + i * blk;
		memcpy(b, base, blk);
		memcpy(b, &i, 4);
		if (i % 3 == 0)
			memset(b + 100, 0, 2000);
	}
	size_t pl = round_trip(a, n, a, n, 2);
	CU_ASSERT(pl < 400);
	free(a);
	free(base);
}

static void test_delta_unrelated_random(void)
{
	size_t n = 100000;
	uint8_t *a = rnd(n, 3), *b = rnd(n, 4);
	size_t pl = round_trip(a, n, b, n, 2);
	CU_ASSERT(pl < n + n / 50); /* incompressible: about the new size, never much more */
	free(a);
	free(b);
}

static void test_delta_edits(void)
{
	size_t n = 400000;
	uint8_t *a = rnd(n, 5);
	uint8_t *b = malloc(n + 10000);
	/* insertion of 5000 bytes in the middle */
	memcpy(b, a, 200000);
	unit_fill_random(b + 200000, 5000, 6);
	memcpy(b + 205000, a + 200000, n - 200000);
	size_t pl = round_trip(a, n, b, n + 5000, 2);
	CU_ASSERT(pl < 5000 + 600);
	/* deletion of 30000 bytes */
	memcpy(b, a, 100000);
	memcpy(b + 100000, a + 130000, n - 130000);
	pl = round_trip(a, n, b, n - 30000, 1);
	CU_ASSERT(pl < 600);
	/* moved blocks: swap two halves */
	memcpy(b, a + n / 2, n / 2);
	memcpy(b + n / 2, a, n / 2);
	pl = round_trip(a, n, b, n, 2);
	CU_ASSERT(pl < 600);
	/* scattered byte changes */
	memcpy(b, a, n);
	for (size_t i = 0; i < n; i += 997)
		b[i] ^= 0x5a;
	pl = round_trip(a, n, b, n, 2);
	CU_ASSERT(pl < 3000);
	free(a);
	free(b);
}

static void test_delta_zero_runs_and_large(void)
{
	/* a few MiB with long zero runs: several blocks, both kinds, multi-slice matching */
	size_t n = (5u << 20) + 12345;
	uint8_t *a = calloc(1, n), *b = calloc(1, n);
	unit_fill_random(a + 100000, 1u << 20, 7);
	unit_fill_random(a + (3u << 20), 500000, 8);
	memcpy(b + 50000, a + 100000, 1u << 20);
	unit_fill_random(b + (2u << 20), 300000, 9);
	memcpy(b + (3u << 20) + 1000, a + (3u << 20), 500000);
	for (size_t i = 60000; i < (1u << 20); i += 4099)
		b[i]++;
	size_t pl = round_trip(a, n, b, n, 2);
	CU_ASSERT(pl < 300000 + 20000);
	free(a);
	free(b);
}

static void test_delta_threads_do_not_change_output(void)
{
	size_t n = (3u << 20) + 777;
	uint8_t *a = rnd(n, 10), *b = malloc(n);
	memcpy(b, a, n);
	for (size_t i = 0; i < n; i += 65521)
		unit_fill_random(b + i, 100 < n - i ? 100 : n - i, i);
	uint8_t *p[3];
	size_t pl[3];
	unsigned th[3] = {1, 2, 5};
	for (int k = 0; k < 3; k++) {
		struct fota_delta_opts o = {th[k], 0, 0};
		struct fota_delta_script *s = NULL;
		CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, &o, &s, NULL), FOTA_OK);
		CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, &o, &p[k], &pl[k], NULL), FOTA_OK);
		fota_delta_script_free(s);
	}
	for (int k = 1; k < 3; k++) {
		CU_ASSERT_EQUAL(pl[k], pl[0]);
		CU_ASSERT(pl[k] == pl[0] && memcmp(p[k], p[0], pl[0]) == 0);
	}
	for (int k = 0; k < 3; k++)
		free(p[k]);
	free(a);
	free(b);
}

/* New made of 5- to 8-byte pieces of old between 1- to 3-byte gaps: many small blocks
 * (the control cap), each of which gets a source-window trial. The trials share the
 * encoder's memory budget and may wait for each other; one, two and five threads must
 * still write the same patch, and it must apply. */
static void test_delta_window_trials_threads(void)
{
	size_t n = 1u << 20, cap = (5u << 20) / 2;
	uint8_t *a = rnd(n, 41), *b = malloc(cap), *noise = rnd(cap, 42);
	size_t nl = test_delta_pieces(a, n, b, cap, noise, 777);
	uint8_t *p[3] = {NULL, NULL, NULL};
	size_t pl[3] = {0, 0, 0};
	unsigned th[3] = {1, 2, 5};
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, nl, NULL, &s, &e), FOTA_OK);
	for (int k = 0; k < 3; k++) {
		struct fota_delta_opts o = {th[k], 20, 3};
		CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full_mem(s, a, b, &o, (n + nl) / 2 * 3, &p[k], &pl[k], &e), FOTA_OK);
	}
	CU_ASSERT(pl[0] > 33 && pl[0] < nl);
	for (int k = 1; k < 3; k++)
		CU_ASSERT(pl[k] == pl[0] && memcmp(p[k], p[0], pl[0]) == 0);
	uint8_t *out = NULL;
	size_t ol = 0;
	CU_ASSERT_EQUAL(apply_mem(p[0], pl[0], a, n, FOTA_DELTA_MEM_DEFAULT, &out, &ol, &e), FOTA_OK);
	CU_ASSERT(ol == nl && memcmp(out, b, nl) == 0);
	free(out);
	for (int k = 0; k < 3; k++)
		free(p[k]);
	fota_delta_script_free(s);
	free(a);
	free(b);
	free(noise);
}

/* ---------------------------------------------------------------- limits */

static void test_delta_memory_limit_and_window(void)
{
	size_t n = 2u << 20;
	uint8_t *a = rnd(n, 11), *b = rnd(n, 12);
	memcpy(b + 100000, a, 1u << 20); /* something to match, something not */
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s, &e), FOTA_OK);
	uint8_t *p = NULL, *out = NULL;
	size_t pl = 0, ol = 0;
	struct fota_delta_opts big = {1, 21, 3}, small = {1, 12, 3};
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, &big, &p, &pl, &e), FOTA_OK);
	/* header states the windows; all within the requested cap */
	CU_ASSERT(p[10] <= 21 && p[11] <= 21 && p[12] <= 21 && p[13] <= 21 && p[15] <= 21);
	/* a device affording 2 MiB refuses, before writing anything */
	CU_ASSERT_EQUAL(apply_mem(p, pl, a, n, 2u << 20, &out, &ol, &e), FOTA_E_LIMIT);
	CU_ASSERT_EQUAL(ol, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "memory"));
	free(out);
	free(p);
	/* a 4 KiB window cap makes a patch that applies within 2 MiB */
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, &small, &p, &pl, &e), FOTA_OK);
	CU_ASSERT(p[10] <= 12 && p[11] <= 12 && p[12] <= 12 && p[13] <= 12 && p[15] <= 12);
	CU_ASSERT_EQUAL(apply_mem(p, pl, a, n, 2u << 20, &out, &ol, &e), FOTA_OK);
	if (ol != n)
		fprintf(stderr, "small window: %s\n", e.msg);
	CU_ASSERT(ol == n && memcmp(out, b, n) == 0);
	free(out);
	free(p);
	/* bad options */
	struct fota_delta_opts bad = {1, 40, 0};
	CU_ASSERT_EQUAL(fota_delta_encode(s, &bad, &p, &pl, &e), FOTA_E_ARG);
	fota_delta_script_free(s);
	free(a);
	free(b);
}

/* ---------------------------------------------------------------- malformed */

static size_t put_v(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* A one-script-block patch from raw control, diff and extra bytes (each stream its own
 * zstd frame; the diff run-length coded as the format requires). */
static size_t craft(uint8_t *out, uint64_t old_size, uint64_t new_size, uint64_t blk_new, const uint8_t *ctrl,
		    size_t cl, const uint8_t *diff, size_t dl, const uint8_t *extra, size_t el)
{
	memset(out, 0, 32);
	memcpy(out, "FOTADELT", 8);
	out[8] = 1;
	out[10] = out[11] = out[12] = out[13] = 17;
	out[14] = 20;
	for (int i = 0; i < 8; i++) {
		out[16 + i] = (uint8_t)(old_size >> (8 * i));
		out[24 + i] = (uint8_t)(new_size >> (8 * i));
	}
	uint8_t z[4][4096], runs[512], lits[256];
	size_t zl[4], rl = 0, ll = 0;
	for (size_t i = 0; i < dl;) {
		size_t a = i, b;
		while (a < dl && diff[a] == 0)
			a++;
		for (b = a; b < dl && diff[b] != 0; b++)
			lits[ll++] = diff[b];
		rl += put_v(runs + rl, a - i);
		rl += put_v(runs + rl, b - a);
		i = b;
	}
	const uint8_t *src[4] = {ctrl, runs, lits, extra};
	size_t sl[4] = {cl, rl, ll, el};
	for (int i = 0; i < 4; i++) {
		zl[i] = ZSTD_compress(z[i], sizeof(z[i]), src[i], sl[i], 3);
		CU_ASSERT_FATAL(!ZSTD_isError(zl[i]));
	}
	size_t n = 32;
	n += put_v(out + n, 0);
	n += put_v(out + n, blk_new);
	n += put_v(out + n, cl);
	for (int i = 0; i < 4; i++)
		n += put_v(out + n, zl[i]);
	for (int i = 0; i < 4; i++) {
		memcpy(out + n, z[i], zl[i]);
		n += zl[i];
	}
	return n;
}

static fota_status try_apply(const uint8_t *p, size_t pl, const uint8_t *src, size_t sl, struct fota_error *e)
{
	uint8_t *out = NULL;
	size_t ol = 0;
	fota_status st = apply_mem(p, pl, src, sl, FOTA_DELTA_MEM_DEFAULT, &out, &ol, e);
	free(out);
	return st;
}

static void test_delta_malformed_controls(void)
{
	uint8_t src[100], d[100] = {0, 0, 3, 4, 0, 0, 0, 9}, x[100] = {0}, p[20000], c[64];
	struct fota_error e = {0};
	unit_fill_random(src, sizeof(src), 13);
	size_t n, pl;
	/* a good crafted patch first: add 10, copy 5, seek 0 */
	n = 0;
	n += put_v(c + n, 10);
	n += put_v(c + n, 5);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 15, 15, c, n, d, 10, x, 5);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_OK);
	/* add reads past the source end: seek to 95, add 10 */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 0);
	n += put_v(c + n, 95 * 2);
	n += put_v(c + n, 10);
	n += put_v(c + n, 0);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 10, x, 0);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "source"));
	/* seek before the source start: zigzag(-1) = 1 */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 1);
	n += put_v(c + n, 1);
	pl = craft(p, 100, 1, 1, c, n, d, 0, x, 1);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* seek past the end */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 1);
	n += put_v(c + n, 202);
	pl = craft(p, 100, 1, 1, c, n, d, 0, x, 1);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* huge add (overflow bait) */
	n = 0;
	n += put_v(c + n, UINT64_MAX);
	n += put_v(c + n, 0);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 10, x, 0);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* copy past the block */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 11);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 0, x, 11);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* controls produce less than the block states */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 5);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 0, x, 5);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* extra stream shorter than its controls */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 10);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 0, x, 4);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* diff stream holding more than the controls use */
	n = 0;
	n += put_v(c + n, 10);
	n += put_v(c + n, 0);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 10, c, n, d, 30, x, 0);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* block larger than the target / new size overflow */
	n = 0;
	n += put_v(c + n, 0);
	n += put_v(c + n, 10);
	n += put_v(c + n, 0);
	pl = craft(p, 100, 10, 20, c, n, d, 0, x, 10);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	pl = craft(p, 100, UINT64_MAX, 10, c, n, d, 0, x, 10);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	/* wrong source size */
	pl = craft(p, 99, 10, 10, c, n, d, 0, x, 10);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_SOURCE);
	/* window log above the format's maximum; unknown version */
	pl = craft(p, 100, 10, 10, c, n, d, 0, x, 10);
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_OK);
	p[11] = 31;
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	p[11] = 17;
	p[14] = 25; /* block log */
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_PATCH);
	p[14] = 20;
	p[8] = 2;
	CU_ASSERT_EQUAL(try_apply(p, pl, src, 100, &e), FOTA_E_UNSUPPORTED);
	p[8] = 1;
	/* trailing bytes after the last block */
	p[pl] = 0;
	CU_ASSERT_EQUAL(try_apply(p, pl + 1, src, 100, &e), FOTA_E_PATCH);
	/* not a patch at all */
	CU_ASSERT_EQUAL(try_apply((const uint8_t *)"NOTAPATCHATALL", 14, src, 100, &e), FOTA_E_PATCH);
	CU_ASSERT_EQUAL(fota_delta_detect((const uint8_t *)"BSDIFF40xxxxxxxx", 16), FOTA_DELTA_FMT_BSDIFF40);
	CU_ASSERT_EQUAL(fota_delta_detect((const uint8_t *)"FOTADEL", 7), -1);
}

static void test_delta_truncated_and_corrupt(void)
{
	size_t n = 200000;
	uint8_t *a = rnd(n, 14), *b = malloc(n);
	memcpy(b, a, n);
	for (size_t i = 0; i < n; i += 1000)
		b[i] ^= 1;
	unit_fill_random(b + 50000, 20000, 15);
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	uint8_t *p = NULL;
	size_t pl = 0;
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s, &e), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, NULL, &p, &pl, &e), FOTA_OK);
	CU_ASSERT_EQUAL(try_apply(p, pl, a, n, &e), FOTA_OK);
	/* every truncation fails cleanly */
	for (size_t cut = 0; cut < pl; cut += cut < 64 ? 1 : 97) {
		fota_status st = try_apply(p, cut, a, n, &e);
		CU_ASSERT(st == FOTA_E_PATCH || st == FOTA_E_COMPRESS);
	}
	/* corrupted bytes: an error or (for a byte zstd does not check) a wrong image, never a crash;
	 * zstd's frame checksums catch corruption inside compressed data */
	uint8_t *q = malloc(pl);
	int detected = 0, tried = 0;
	for (size_t i = 40; i < pl; i += pl / 50 + 1) {
		memcpy(q, p, pl);
		q[i] ^= 0x41;
		uint8_t *out = NULL;
		size_t ol = 0;
		fota_status st = apply_mem(q, pl, a, n, FOTA_DELTA_MEM_DEFAULT, &out, &ol, &e);
		tried++;
		if (st != FOTA_OK)
			detected++;
		CU_ASSERT(st == FOTA_OK || st == FOTA_E_PATCH || st == FOTA_E_COMPRESS || st == FOTA_E_LIMIT);
		free(out);
	}
	CU_ASSERT(detected * 10 >= tried * 9);
	free(q);
	free(p);
	fota_delta_script_free(s);
	free(a);
	free(b);
}

static void test_delta_script_check(void)
{
	uint8_t d[4] = {0}, x[4] = {0};
	struct fota_delta_ctrl c[2] = {{4, 0, 10}, {4, 4, 0}};
	struct fota_delta_script s = {10, 12, 2, c, 8, d, 4, x};
	struct fota_error e = {0};
	/* second add reads old[14, 18) of a 10-byte old image */
	CU_ASSERT_EQUAL(fota_delta_script_check(&s, &e), FOTA_E_PATCH);
	c[0].seek = -4;
	CU_ASSERT_EQUAL(fota_delta_script_check(&s, &e), FOTA_OK);
	s.new_size = 13;
	CU_ASSERT_EQUAL(fota_delta_script_check(&s, &e), FOTA_E_PATCH);
	s.new_size = 12;
	c[0].seek = INT64_MAX;
	CU_ASSERT_EQUAL(fota_delta_script_check(&s, &e), FOTA_E_PATCH);
	uint8_t *p = NULL;
	size_t pl = 0;
	CU_ASSERT_EQUAL(fota_delta_encode(&s, NULL, &p, &pl, &e), FOTA_E_PATCH);
	CU_ASSERT_PTR_NULL(p);
}

/* ---------------------------------------------------------------- slice */

static void test_delta_slice_per_chunk(void)
{
	size_t n = 1000000;
	uint8_t *a = rnd(n, 16), *b = malloc(n);
	memcpy(b, a + 300000, 400000);                /* moved */
	unit_fill_random(b + 400000, 50000, 17);      /* new */
	memcpy(b + 450000, a, 300000);                /* moved */
	memcpy(b + 750000, a + 750000, n - 750000);   /* same place */
	for (size_t i = 0; i < n; i += 3001)
		b[i] += 3;
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s, &e), FOTA_OK);
	uint64_t chunks[][2] = {{0, 262144}, {262144, 262144}, {524288, 262144}, {786432, n - 786432},
				{123, 1}, {399990, 60020}, {0, n}, {n, 0}};
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		struct fota_delta_script *sub = NULL;
		struct fota_delta_range *rg = NULL;
		size_t nr = 0;
		CU_ASSERT_EQUAL_FATAL(fota_delta_script_slice(s, chunks[k][0], chunks[k][1], &sub, &rg, &nr, &e), FOTA_OK);
		CU_ASSERT_EQUAL(sub->new_size, chunks[k][1]);
		/* ranges sorted, merged, inside old */
		uint64_t tot = 0;
		for (size_t i = 0; i < nr; i++) {
			CU_ASSERT(rg[i].len > 0 && rg[i].off + rg[i].len <= n);
			if (i)
				CU_ASSERT(rg[i].off > rg[i - 1].off + rg[i - 1].len);
			tot += rg[i].len;
		}
		CU_ASSERT_EQUAL(sub->old_size, tot);
		uint8_t *cat = malloc(tot ? tot : 1), *p = NULL, *out = NULL;
		size_t pos = 0, pl = 0, ol = 0;
		for (size_t i = 0; i < nr; i++) {
			memcpy(cat + pos, a + rg[i].off, rg[i].len);
			pos += rg[i].len;
		}
		CU_ASSERT_EQUAL_FATAL(fota_delta_encode(sub, NULL, &p, &pl, &e), FOTA_OK);
		CU_ASSERT_EQUAL(apply_mem(p, pl, cat, tot, FOTA_DELTA_MEM_DEFAULT, &out, &ol, &e), FOTA_OK);
		CU_ASSERT(ol == chunks[k][1] && (ol == 0 || memcmp(out, b + chunks[k][0], ol) == 0));
		free(out);
		free(p);
		free(cat);
		free(rg);
		fota_delta_script_free(sub);
	}
	struct fota_delta_script *sub = NULL;
	struct fota_delta_range *rg = NULL;
	size_t nr = 0;
	CU_ASSERT_EQUAL(fota_delta_script_slice(s, n - 10, 11, &sub, &rg, &nr, &e), FOTA_E_ARG);
	fota_delta_script_free(s);
	free(a);
	free(b);
}

static void test_delta_apply_files(void)
{
	size_t n = 100000;
	uint8_t *a = rnd(n, 18), *b = malloc(n);
	memcpy(b, a, n);
	b[500] ^= 0xff;
	struct fota_delta_script *s = NULL;
	uint8_t *p = NULL;
	size_t pl = 0;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s, &e), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode(s, NULL, &p, &pl, &e), FOTA_OK);
	char *op = unit_write_file("delta-old.bin", a, n);
	char *pp = unit_write_file("delta.patch", p, pl);
	char np[4096];
	snprintf(np, sizeof(np), "%s/delta-new.bin", unit_tmpdir());
	uint64_t w = 0;
	CU_ASSERT_EQUAL(fota_delta_apply_files(op, pp, np, FOTA_DELTA_MEM_DEFAULT, &w, &e), FOTA_OK);
	CU_ASSERT_EQUAL(w, n);
	size_t got = 0;
	uint8_t *r = unit_read_file(np, &got);
	CU_ASSERT(r && got == n && memcmp(r, b, n) == 0);
	free(r);
	CU_ASSERT_EQUAL(fota_delta_apply_files("/nonexistent/old", pp, np, FOTA_DELTA_MEM_DEFAULT, &w, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/old"));
	/* a failed apply leaves no staging file behind */
	char *bad = unit_write_file("delta-bad.patch", p, 40);
	CU_ASSERT_EQUAL(fota_delta_apply_files(op, bad, np, FOTA_DELTA_MEM_DEFAULT, &w, &e), FOTA_E_PATCH);
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", np);
	size_t tl = 0;
	uint8_t *t = unit_read_file(tmp, &tl);
	CU_ASSERT_PTR_NULL(t);
	free(t);
	free(bad);
	free(op);
	free(pp);
	free(p);
	fota_delta_script_free(s);
	free(a);
	free(b);
}

/* The AArch64 filter inverts exactly, and an AArch64 ELF whose code moved round-trips
 * through filtered source-window blocks. */
static void test_delta_a64_filter(void)
{
	size_t n = 1u << 20;
	uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
	unit_fill_random(a, n, 19);
	/* plant BL and ADRP instructions among random words */
	for (size_t i = 0; i + 4 <= n; i += 16) {
		uint32_t x = (i & 32) ? 0x94000000u | (uint32_t)(i * 7 & 0x03FFFFFF) : 0x90000000u | (uint32_t)(i & 0x00FFFFE0);
		memcpy(a + i, &x, 4);
	}
	memcpy(c, a, n);
	delta_a64_filter(c + 3, n - 3, 1003, 0);
	CU_ASSERT(memcmp(c, a, n) != 0);
	delta_a64_filter(c + 3, n - 3, 1003, 1);
	CU_ASSERT_EQUAL(memcmp(c, a, n), 0);
	/* an "ELF" for AArch64 whose second half moved by 4 KiB + 8 */
	memset(a, 0, 64);
	memcpy(a, "\177ELF", 4);
	a[5] = 1;
	a[18] = 183;
	memcpy(b, a, n / 2);
	unit_fill_random(b + n / 2, 4104, 20);
	memcpy(b + n / 2 + 4104, a + n / 2, n / 2 - 4104);
	struct fota_delta_script *s = NULL;
	struct fota_error e = {0};
	uint8_t *p = NULL, *out = NULL;
	size_t pl = 0, ol = 0;
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s, &e), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(fota_delta_encode_full(s, a, b, NULL, &p, &pl, &e), FOTA_OK);
	CU_ASSERT_EQUAL(apply_mem(p, pl, a, n, FOTA_DELTA_MEM_DEFAULT, &out, &ol, &e), FOTA_OK);
	CU_ASSERT(ol == n && memcmp(out, b, n) == 0);
	free(out);
	free(p);
	fota_delta_script_free(s);
	free(a);
	free(b);
	free(c);
}

/* The 64-bit suffix array path (used from 2 GiB of source) gives the same script. */
static void test_delta_sa64_same_script(void)
{
	size_t n = 300000;
	uint8_t *a = rnd(n, 21), *b = malloc(n);
	memcpy(b, a + 1000, n - 1000);
	unit_fill_random(b + n - 1000, 1000, 22);
	for (size_t i = 0; i < n; i += 777)
		b[i] ^= 3;
	struct fota_delta_script *s32 = NULL, *s64 = NULL;
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, n, NULL, &s32, NULL), FOTA_OK);
	uint64_t saved = fota_delta_sa64_threshold;
	fota_delta_sa64_threshold = 1;
	fota_status st = fota_delta_diff(a, n, b, n, NULL, &s64, NULL);
	fota_delta_sa64_threshold = saved;
	CU_ASSERT_EQUAL_FATAL(st, FOTA_OK);
	CU_ASSERT_EQUAL(s32->n_ctrl, s64->n_ctrl);
	CU_ASSERT(s32->n_ctrl == s64->n_ctrl && memcmp(s32->ctrl, s64->ctrl, s32->n_ctrl * sizeof(*s32->ctrl)) == 0);
	CU_ASSERT(s32->diff_len == s64->diff_len && memcmp(s32->diff, s64->diff, s32->diff_len) == 0);
	CU_ASSERT(s32->extra_len == s64->extra_len && memcmp(s32->extra, s64->extra, s32->extra_len) == 0);
	fota_delta_script_free(s32);
	fota_delta_script_free(s64);
	free(a);
	free(b);
}

/* Matching skips positions where its n-gram filter shows no match could be taken; it must
 * still find short moved pieces (12 to 40 bytes, the shortest it may take being 9),
 * pieces that end at old's last byte (the bucket keys of the short last suffixes), and
 * the script must be the same for one and two threads. */
static void test_delta_short_matches_found(void)
{
	size_t n = 200000, nl = 0, copied = 0;
	uint8_t *a = rnd(n, 31), *b = malloc(3 * n), *noise = rnd(n, 32);
	uint64_t x = 12345;
	size_t ni = 0;
	while (nl + 100 < 3 * n && ni + 16 < n) {
		x = x * 6364136223846793005u + 1442695040888963407u;
		size_t len = 12 + (size_t)(x >> 33) % 29;
		size_t at = (size_t)(x >> 13) % (n - len);
		if ((x >> 7) % 8 == 0)
			at = n - len; /* ends at old's last byte */
		memcpy(b + nl, a + at, len);
		nl += len;
		copied += len;
		size_t gap = 1 + (size_t)(x >> 3) % 16;
		memcpy(b + nl, noise + ni, gap);
		nl += gap;
		ni += gap;
	}
	struct fota_delta_opts one = {1, 0, 0}, two = {2, 0, 0};
	struct fota_delta_script *s1 = NULL, *s2 = NULL;
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, nl, &one, &s1, NULL), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(fota_delta_diff(a, n, b, nl, &two, &s2, NULL), FOTA_OK);
	/* the diff stream covers the matched bytes; nearly all copied pieces are matched */
	CU_ASSERT(s1->diff_len * 10 >= copied * 9);
	size_t exact = 0;
	for (uint64_t i = 0; i < s1->diff_len; i++)
		exact += s1->diff[i] == 0;
	CU_ASSERT(exact * 10 >= copied * 9);
	CU_ASSERT(s1->n_ctrl == s2->n_ctrl && memcmp(s1->ctrl, s2->ctrl, s1->n_ctrl * sizeof(*s1->ctrl)) == 0);
	CU_ASSERT(s1->diff_len == s2->diff_len && memcmp(s1->diff, s2->diff, s1->diff_len) == 0);
	fota_delta_script_free(s1);
	fota_delta_script_free(s2);
	round_trip(a, n, b, nl, 1);
	free(a);
	free(b);
	free(noise);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_delta_empty_and_tiny);
	UNIT_ADD(s, test_delta_identical_is_small);
	UNIT_ADD(s, test_delta_identical_repetitive_slices);
	UNIT_ADD(s, test_delta_unrelated_random);
	UNIT_ADD(s, test_delta_edits);
	UNIT_ADD(s, test_delta_zero_runs_and_large);
	UNIT_ADD(s, test_delta_threads_do_not_change_output);
	UNIT_ADD(s, test_delta_window_trials_threads);
	UNIT_ADD(s, test_delta_memory_limit_and_window);
	UNIT_ADD(s, test_delta_malformed_controls);
	UNIT_ADD(s, test_delta_truncated_and_corrupt);
	UNIT_ADD(s, test_delta_script_check);
	UNIT_ADD(s, test_delta_slice_per_chunk);
	UNIT_ADD(s, test_delta_apply_files);
	UNIT_ADD(s, test_delta_a64_filter);
	UNIT_ADD(s, test_delta_sa64_same_script);
	UNIT_ADD(s, test_delta_short_matches_found);
}

UNIT_SUITE("formats/delta", add)
