/*
 * Suite formats/bsdiff40: the BSDIFF40 writer and the bounded-memory applier, checked
 * against themselves, against Debian's bsdiff/bspatch (run through system() on files
 * in the unit tmpdir), and against malformed patches built by hand. The in-memory io
 * below fails the test on any read outside the patch or the source and on any write
 * beyond the size the patch header promised, so the ASan run of this suite also
 * proves bounds.
 */
#include <bzlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "fota/delta.h"
#include "../../formats/delta_internal.h"

/* ------------------------------------------------------------ helpers */

struct mem_io {
	const uint8_t *patch;
	size_t patch_len;
	const uint8_t *src;
	size_t src_len;
	uint8_t *out;
	size_t out_len, out_cap;
	int oob;           /* a read outside the patch or source, or a write past out_cap */
	size_t writes;     /* calls to write_target */
};

static fota_status mem_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	if (off > m->patch_len || len > m->patch_len - off) {
		m->oob = 1;
		return fota_error_set(err, FOTA_E_INTERNAL, "test: patch read %llu+%zu outside %zu",
				      (unsigned long long)off, len, m->patch_len);
	}
	memcpy(buf, m->patch + off, len);
	return FOTA_OK;
}

static fota_status mem_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	if (off > m->src_len || len > m->src_len - off) {
		m->oob = 1;
		return fota_error_set(err, FOTA_E_INTERNAL, "test: source read %llu+%zu outside %zu",
				      (unsigned long long)off, len, m->src_len);
	}
	memcpy(buf, m->src + off, len);
	return FOTA_OK;
}

static fota_status mem_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	m->writes++;
	if (len > m->out_cap - m->out_len) {
		m->oob = 1;
		return fota_error_set(err, FOTA_E_IO, "test: write past %zu bytes", m->out_cap);
	}
	memcpy(m->out + m->out_len, buf, len);
	m->out_len += len;
	return FOTA_OK;
}

/* Apply patch against src into a buffer of out_cap bytes. */
static fota_status run_apply(struct mem_io *m, const uint8_t *patch, size_t plen, const uint8_t *src, size_t slen,
			     size_t out_cap, uint64_t mem_limit, uint64_t *tsize, struct fota_error *e)
{
	memset(m, 0, sizeof(*m));
	m->patch = patch;
	m->patch_len = plen;
	m->src = src;
	m->src_len = slen;
	m->out_cap = out_cap;
	m->out = malloc(out_cap ? out_cap : 1);
	struct fota_delta_io io = {m, plen, mem_read_patch, mem_read_source, mem_write};
	fota_error_clear(e);
	return fota_bsdiff40_apply(&io, slen, mem_limit, tsize, e);
}

/* The script semantics of delta.h, written out plainly, as the reference. */
static uint8_t *ref_apply(const struct fota_delta_script *s, const uint8_t *old)
{
	uint8_t *out = malloc(s->new_size ? s->new_size : 1);
	uint64_t np = 0, dp = 0, ep = 0;
	int64_t op = 0;
	for (size_t i = 0; i < s->n_ctrl; i++) {
		for (uint64_t j = 0; j < s->ctrl[i].add; j++)
			out[np + j] = (uint8_t)(old[op + (int64_t)j] + s->diff[dp + j]);
		np += s->ctrl[i].add;
		dp += s->ctrl[i].add;
		op += (int64_t)s->ctrl[i].add;
		memcpy(out + np, s->extra + ep, s->ctrl[i].copy);
		np += s->ctrl[i].copy;
		ep += s->ctrl[i].copy;
		op += s->ctrl[i].seek;
	}
	return out;
}

/* A script from triples; diff and extra filled with seeded random bytes. */
static struct fota_delta_script *make_script(const struct fota_delta_ctrl *c, size_t n, uint64_t old_size, uint64_t seed)
{
	struct fota_delta_script *s = calloc(1, sizeof(*s));
	s->old_size = old_size;
	s->n_ctrl = n;
	s->ctrl = malloc(n ? n * sizeof(*c) : 1);
	if (n)
		memcpy(s->ctrl, c, n * sizeof(*c));
	for (size_t i = 0; i < n; i++) {
		s->diff_len += c[i].add;
		s->extra_len += c[i].copy;
	}
	s->new_size = s->diff_len + s->extra_len;
	s->diff = malloc(s->diff_len ? s->diff_len : 1);
	s->extra = malloc(s->extra_len ? s->extra_len : 1);
	unit_fill_random(s->diff, s->diff_len, seed);
	/* Mostly-zero diff bytes, as real diffs are, with a few changes. */
	for (uint64_t i = 0; i < s->diff_len; i++)
		if (s->diff[i] > 40)
			s->diff[i] = 0;
	unit_fill_random(s->extra, s->extra_len, seed + 1);
	return s;
}

static void free_script(struct fota_delta_script *s)
{
	if (!s)
		return;
	free(s->ctrl);
	free(s->diff);
	free(s->extra);
	free(s);
}

static void put_off(uint8_t *p, int64_t v)
{
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(mag >> (8 * i));
	if (v < 0)
		p[7] |= 0x80;
}

static void put_mag(uint8_t *p, uint64_t mag, int neg)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(mag >> (8 * i));
	if (neg)
		p[7] |= 0x80;
}

static uint8_t *bz(const uint8_t *data, size_t len, unsigned *out_len)
{
	unsigned cap = (unsigned)(len + len / 50 + 1000);
	uint8_t *out = malloc(cap);
	*out_len = cap;
	int r = BZ2_bzBuffToBuffCompress((char *)out, out_len, (char *)data, (unsigned)len, 9, 0, 0);
	CU_ASSERT_EQUAL(r, BZ_OK);
	return out;
}

/*
 * Build a BSDIFF40 patch by hand from raw triples (may be invalid), diff and extra
 * bytes and a header new size, bypassing the encoder's own checks.
 */
static uint8_t *raw_patch(const int64_t *tri, size_t n_tri, const uint8_t *diff, size_t dlen, const uint8_t *extra,
			  size_t elen, uint64_t new_size, size_t *plen)
{
	uint8_t *ctrl = malloc(n_tri * 24 + 1);
	for (size_t i = 0; i < n_tri * 3; i++)
		put_off(ctrl + 8 * i, tri[i]);
	unsigned cl, dl, el;
	uint8_t *cz = bz(ctrl, n_tri * 24, &cl), *dz = bz(diff, dlen, &dl), *ez = bz(extra, elen, &el);
	*plen = 32 + (size_t)cl + dl + el;
	uint8_t *p = malloc(*plen);
	memcpy(p, "BSDIFF40", 8);
	put_mag(p + 8, cl, 0);
	put_mag(p + 16, dl, 0);
	put_mag(p + 24, new_size, 0);
	memcpy(p + 32, cz, cl);
	memcpy(p + 32 + cl, dz, dl);
	memcpy(p + 32 + cl + dl, ez, el);
	free(ctrl);
	free(cz);
	free(dz);
	free(ez);
	return p;
}

/* Old file with some structure (repeated records), new = old with edits, inserts, a moved block. */
static void make_pair(size_t old_len, uint64_t seed, uint8_t **old_out, uint8_t **new_out, size_t *new_len)
{
	uint8_t *old = malloc(old_len);
	unit_fill_random(old, old_len, seed);
	static const char rec[] = "record header: version 1.2.3, build 4567, flags 0x0000ff00\n";
	for (size_t i = 0; i + sizeof(rec) <= old_len; i += 512)
		memcpy(old + i, rec, sizeof(rec) - 1);
	size_t cap = old_len + old_len / 4 + 4096;
	uint8_t *nw = malloc(cap);
	size_t n = 0;
	size_t q = old_len / 8;
	memcpy(nw + n, old, q); n += q;                          /* unchanged head */
	uint8_t ins[3000];
	unit_fill_random(ins, sizeof(ins), seed + 9);
	memcpy(nw + n, ins, sizeof(ins)); n += sizeof(ins);        /* inserted bytes */
	memcpy(nw + n, old + 5 * q, q); n += q;                  /* a moved block */
	memcpy(nw + n, old + q, 3 * q); n += 3 * q;              /* the middle, with byte edits */
	for (size_t i = n - 3 * q; i < n; i += 997)
		nw[i] = (uint8_t)(nw[i] + 1);
	memcpy(nw + n, old + 6 * q, old_len - 6 * q); n += old_len - 6 * q; /* tail; block 4 deleted */
	*old_out = old;
	*new_out = nw;
	*new_len = n;
}

/* Run "TOOL 'a' 'b' 'c'" (paths under the unit tmpdir, which have no quotes). */
static int sh(const char *tool, const char *a, const char *b, const char *c)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "%s '%s' '%s' '%s'", tool, a, b, c);
	return system(cmd);
}

static char *tmp_path(const char *name)
{
	size_t n = strlen(unit_tmpdir()) + strlen(name) + 2;
	char *p = malloc(n);
	snprintf(p, n, "%s/%s", unit_tmpdir(), name);
	return p;
}

#define MEM FOTA_DELTA_MEM_DEFAULT

/* ------------------------------------------------------------ cases */

static const struct fota_delta_ctrl hand_ctrl[] = {
	{1000, 200, 500},    /* old [0,1000) -> new [0,1000); 200 extra; old_pos 1500 */
	{800, 0, -2000},     /* old [1500,2300); old_pos 300 */
	{300, 50, 4000},     /* old [300,600); old_pos 4600 */
	{400, 7, 0},         /* old [4600,5000) -- ends exactly at the old end */
	{0, 100, -5000},     /* extra only; old_pos back to 0 */
	{70000, 0, 0},       /* longer than one I/O buffer */
};
#define HAND_OLD 70000

static void test_bsdiff40_encode_apply_handmade(void)
{
	uint8_t *old = malloc(HAND_OLD);
	unit_fill_random(old, HAND_OLD, 11);
	struct fota_delta_script *s = make_script(hand_ctrl, sizeof(hand_ctrl) / sizeof(hand_ctrl[0]), HAND_OLD, 5);
	uint8_t *want = ref_apply(s, old);
	uint8_t *patch = NULL;
	size_t plen = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_OK);
	CU_ASSERT_TRUE(plen > 32);
	CU_ASSERT_EQUAL(memcmp(patch, "BSDIFF40", 8), 0);
	uint64_t hdr_new = 0;
	for (int i = 7; i >= 0; i--)
		hdr_new = (hdr_new << 8) | patch[24 + i];
	CU_ASSERT_EQUAL(hdr_new, s->new_size);
	CU_ASSERT_EQUAL(fota_delta_detect(patch, plen), FOTA_DELTA_FMT_BSDIFF40);

	struct mem_io m;
	uint64_t got = 0;
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, HAND_OLD, s->new_size, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, s->new_size);
	CU_ASSERT_EQUAL(m.out_len, s->new_size);
	CU_ASSERT_FALSE(m.oob);
	CU_ASSERT_EQUAL(memcmp(m.out, want, s->new_size), 0);
	CU_ASSERT_TRUE(m.writes >= 2); /* written in buffered pieces, not in one block */
	free(m.out);
	free(patch);
	free(want);
	free_script(s);
	free(old);
}

static void test_bsdiff40_encode_rejects_bad_script(void)
{
	struct fota_delta_ctrl c[] = {{100, 0, 0}};
	struct fota_delta_script *s = make_script(c, 1, 50, 1);
	uint8_t *patch = (uint8_t *)"x";
	size_t plen = 9;
	struct fota_error e;
	CU_ASSERT_EQUAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_E_ARG); /* reads past old */
	CU_ASSERT_PTR_NULL(patch);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "control 0"));
	s->old_size = 100;
	s->new_size = 99;
	CU_ASSERT_EQUAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_E_ARG); /* past new */
	s->new_size = 101;
	CU_ASSERT_EQUAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_E_ARG); /* short of new */
	s->new_size = 100;
	s->diff_len = 99;
	CU_ASSERT_EQUAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_E_ARG); /* diff length */
	s->diff_len = 100;
	CU_ASSERT_EQUAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_OK);
	free(patch);
	free_script(s);
}

static void test_bsdiff40_empty_new(void)
{
	uint8_t old[100];
	unit_fill_random(old, sizeof(old), 3);
	struct fota_delta_script *s = make_script(NULL, 0, sizeof(old), 1);
	uint8_t *patch = NULL;
	size_t plen = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_OK);
	struct mem_io m;
	uint64_t got = 99;
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, sizeof(old), 0, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, 0);
	CU_ASSERT_EQUAL(m.out_len, 0);
	free(m.out);
	/* Debian bspatch agrees on an empty target. */
	char *op = unit_write_file("empty-old", old, sizeof(old));
	char *pp = unit_write_file("empty.bsdiff", patch, plen);
	char *np = tmp_path("empty-new");
	CU_ASSERT_EQUAL(sh("bspatch", op, np, pp), 0);
	size_t nlen = 99;
	uint8_t *nb = unit_read_file(np, &nlen);
	CU_ASSERT_PTR_NOT_NULL(nb);
	CU_ASSERT_EQUAL(nlen, 0);
	free(nb);
	free(op);
	free(pp);
	free(np);
	free(patch);
	free_script(s);
}

/* Debian bsdiff writes the patch; we apply it. */
static void test_bsdiff40_applies_debian_bsdiff(void)
{
	uint8_t *old, *nw;
	size_t nlen;
	const size_t olen = 300000;
	make_pair(olen, 21, &old, &nw, &nlen);
	char *op = unit_write_file("deb-old", old, olen);
	char *np = unit_write_file("deb-new", nw, nlen);
	char *pp = tmp_path("deb.bsdiff");
	CU_ASSERT_EQUAL_FATAL(sh("bsdiff", op, np, pp), 0);
	size_t plen = 0;
	uint8_t *patch = unit_read_file(pp, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(patch);
	CU_ASSERT_TRUE(plen < nlen / 4); /* a real delta, not a copy */
	CU_ASSERT_EQUAL(fota_delta_detect(patch, plen), FOTA_DELTA_FMT_BSDIFF40);
	struct mem_io m;
	struct fota_error e;
	uint64_t got = 0;
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, olen, nlen, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, nlen);
	CU_ASSERT_EQUAL(m.out_len, nlen);
	CU_ASSERT_FALSE(m.oob);
	CU_ASSERT_EQUAL(memcmp(m.out, nw, nlen), 0);
	free(m.out);
	free(patch);
	free(op);
	free(np);
	free(pp);
	free(old);
	free(nw);
}

/* We write the patch; Debian bspatch applies it. */
static void test_bsdiff40_bspatch_applies_ours(void)
{
	uint8_t *old = malloc(HAND_OLD);
	unit_fill_random(old, HAND_OLD, 12);
	struct fota_delta_script *s = make_script(hand_ctrl, sizeof(hand_ctrl) / sizeof(hand_ctrl[0]), HAND_OLD, 8);
	uint8_t *want = ref_apply(s, old);
	uint8_t *patch = NULL;
	size_t plen = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(fota_bsdiff40_encode(s, &patch, &plen, &e), FOTA_OK);
	char *op = unit_write_file("ours-old", old, HAND_OLD);
	char *pp = unit_write_file("ours.bsdiff", patch, plen);
	char *np = tmp_path("ours-new");
	CU_ASSERT_EQUAL(sh("bspatch", op, np, pp), 0);
	size_t nlen = 0;
	uint8_t *nb = unit_read_file(np, &nlen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nb);
	CU_ASSERT_EQUAL(nlen, s->new_size);
	CU_ASSERT_EQUAL(memcmp(nb, want, nlen < s->new_size ? nlen : s->new_size), 0);
	free(nb);
	free(op);
	free(pp);
	free(np);
	free(patch);
	free(want);
	free_script(s);
	free(old);
}

/* A valid bsdiff-made patch for the malformed cases to damage. */
static uint8_t *debian_patch(uint8_t **old, size_t *olen, size_t *nlen, size_t *plen)
{
	uint8_t *nw;
	*olen = 40000;
	make_pair(*olen, 33, old, &nw, nlen);
	char *op = unit_write_file("mal-old", *old, *olen);
	char *np = unit_write_file("mal-new", nw, *nlen);
	char *pp = tmp_path("mal.bsdiff");
	uint8_t *patch = NULL;
	if (sh("bsdiff", op, np, pp) == 0)
		patch = unit_read_file(pp, plen);
	free(op);
	free(np);
	free(pp);
	free(nw);
	return patch;
}

static uint64_t hdr_field(const uint8_t *p, int i)
{
	uint64_t v = 0;
	for (int k = 7; k >= 0; k--)
		v = (v << 8) | p[8 + 8 * i + k];
	return v;
}

/* Expect failure with one of two codes, no out-of-bounds access, no more output than promised. */
static void expect_bad(const uint8_t *patch, size_t plen, const uint8_t *old, size_t olen, size_t out_cap,
		       fota_status want1, fota_status want2, const char *msg_part)
{
	struct mem_io m;
	struct fota_error e;
	uint64_t got = 0;
	fota_status st = run_apply(&m, patch, plen, old, olen, out_cap, MEM, &got, &e);
	CU_ASSERT_NOT_EQUAL(st, FOTA_OK);
	CU_ASSERT_TRUE(st == want1 || st == want2);
	CU_ASSERT_EQUAL(e.code, st);
	CU_ASSERT_FALSE(m.oob);
	CU_ASSERT_EQUAL(got, m.out_len);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "bsdiff40"));
	if (getenv("UNIT_VERBOSE"))
		fprintf(stderr, "[%d] %s\n", st, e.msg);
	if (msg_part && !strstr(e.msg, msg_part)) {
		fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", e.msg, msg_part);
		CU_FAIL("error message lacks context");
	}
	free(m.out);
}

static void test_bsdiff40_truncated(void)
{
	uint8_t *old;
	size_t olen, nlen, plen;
	uint8_t *patch = debian_patch(&old, &olen, &nlen, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(patch);
	size_t step = plen / 200 ? plen / 200 : 1;
	unsigned tried = 0;
	for (size_t cut = 0; cut < plen; cut += (cut < 64 || plen - cut < 64) ? 1 : step) {
		expect_bad(patch, cut, old, olen, nlen, FOTA_E_PATCH, FOTA_E_COMPRESS, NULL);
		tried++;
	}
	CU_ASSERT_TRUE(tried > 200);
	expect_bad(patch, 10, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "header");
	expect_bad(patch, plen - 1, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "truncated");
	free(patch);
	free(old);
}

static void test_bsdiff40_bad_header(void)
{
	uint8_t *old;
	size_t olen, nlen, plen;
	uint8_t *patch = debian_patch(&old, &olen, &nlen, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(patch);
	uint8_t *p = malloc(plen);
	uint64_t cl = hdr_field(patch, 0), dl = hdr_field(patch, 1);

	memcpy(p, patch, plen);
	p[7] = '3'; /* BSDIFF43 is another format */
	expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "magic");
	CU_ASSERT_EQUAL(fota_delta_detect(p, plen), -1);

	for (int f = 0; f < 3; f++) { /* negative control length, diff length, new size */
		memcpy(p, patch, plen);
		p[8 + 8 * f + 7] |= 0x80;
		expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "negative");
	}
	/* sizes that overflow when added */
	memcpy(p, patch, plen);
	put_mag(p + 8, INT64_MAX, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "control length");
	memcpy(p, patch, plen);
	put_mag(p + 16, INT64_MAX - 20, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "diff length");
	/* control + diff exactly the body: no room for the extra stream */
	memcpy(p, patch, plen);
	put_mag(p + 16, plen - 32 - cl, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "extra stream");
	/* segment boundaries shifted: streams no longer start with a bzip2 header */
	memcpy(p, patch, plen);
	put_mag(p + 8, cl - 1, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_COMPRESS, FOTA_E_PATCH, "stream");
	memcpy(p, patch, plen);
	put_mag(p + 16, dl + 1, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_COMPRESS, FOTA_E_PATCH, "stream");
	/* new size too large: the controls end early */
	memcpy(p, patch, plen);
	put_mag(p + 24, nlen + 1, 0);
	expect_bad(p, plen, old, olen, nlen + 1, FOTA_E_PATCH, FOTA_E_PATCH, "new size");
	/* new size too small: a control runs past it */
	memcpy(p, patch, plen);
	put_mag(p + 24, nlen - 1, 0);
	expect_bad(p, plen, old, olen, nlen - 1, FOTA_E_PATCH, FOTA_E_PATCH, "past new size");
	/* new size huge: never writes more than the controls produce, and says so */
	memcpy(p, patch, plen);
	put_mag(p + 24, INT64_MAX, 0);
	expect_bad(p, plen, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "new size");
	free(p);
	free(patch);
	free(old);
}

static void test_bsdiff40_corrupt_bzip2(void)
{
	uint8_t *old;
	size_t olen, nlen, plen;
	uint8_t *patch = debian_patch(&old, &olen, &nlen, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(patch);
	uint8_t *p = malloc(plen);
	uint64_t cl = hdr_field(patch, 0), dl = hdr_field(patch, 1);
	uint64_t starts[3] = {32, 32 + cl, 32 + cl + dl}, ends[3] = {32 + cl, 32 + cl + dl, plen};
	for (int k = 0; k < 3; k++) {
		/* a broken stream magic */
		memcpy(p, patch, plen);
		p[starts[k] + 1] = 'Y';
		expect_bad(p, plen, old, olen, nlen, FOTA_E_COMPRESS, FOTA_E_COMPRESS, "bzip2");
		/* a bad block size byte */
		memcpy(p, patch, plen);
		p[starts[k] + 3] = '0';
		expect_bad(p, plen, old, olen, nlen, FOTA_E_COMPRESS, FOTA_E_COMPRESS, "bzip2");
		/* flipped bits in the compressed body: a CRC or Huffman error, or a clear patch error */
		for (uint64_t at = starts[k] + 4; at < ends[k]; at += (ends[k] - starts[k]) / 7 + 1) {
			memcpy(p, patch, plen);
			p[at] ^= 0x5a;
			expect_bad(p, plen, old, olen, nlen, FOTA_E_COMPRESS, FOTA_E_PATCH, NULL);
		}
	}
	/* trailing garbage after the extra stream */
	uint8_t *q = malloc(plen + 5);
	memcpy(q, patch, plen);
	memcpy(q + plen, "junk!", 5);
	expect_bad(q, plen + 5, old, olen, nlen, FOTA_E_PATCH, FOTA_E_PATCH, "trailing");
	free(q);
	free(p);
	free(patch);
	free(old);
}

static void test_bsdiff40_bad_controls(void)
{
	uint8_t old[1000];
	unit_fill_random(old, sizeof(old), 4);
	uint8_t diff[2000] = {0}, extra[2000];
	unit_fill_random(extra, sizeof(extra), 5);
	size_t plen;
	uint8_t *p;
	struct {
		int64_t tri[6];
		size_t n_tri;
		size_t dlen, elen;
		uint64_t new_size;
		const char *msg;
	} cases[] = {
		{{600, 0, 0}, 1, 600, 0, 500, "add 600 at new offset 0 runs past new size 500"},
		{{100, 500, 0}, 1, 100, 500, 400, "copy 500 at new offset 100 runs past new size 400"},
		{{1001, 0, 0}, 1, 1001, 0, 1001, "reads outside the 1000-byte source"},
		{{100, 0, -200, 10, 0, 0}, 2, 110, 0, 110, "control 1: add 10 at source offset -100"},
		{{100, 0, 850, 60, 0, 0}, 2, 160, 0, 160, "control 1: add 60 at source offset 950"},
		{{-5, 0, 0}, 1, 0, 0, 10, "negative add"},
		{{0, -5, 0}, 1, 0, 0, 10, "negative copy"},
		{{0, 1, INT64_MAX, 0, 1, INT64_MAX}, 2, 0, 2, 2, "overflows"},
		{{50, 0, 0}, 1, 50, 0, 60, "ends after 1 triples at new offset 50"},
		{{50, 0, 0, 0, 0, 0}, 2, 50, 0, 50, "control stream has data beyond"},
		{{50, 0, 0}, 1, 60, 0, 50, "diff stream has data beyond"},
		{{50, 10, 0}, 1, 50, 11, 60, "extra stream has data beyond"},
		{{50, 10, 0}, 1, 40, 10, 60, "diff stream ends after 40 bytes"},
		{{50, 10, 0}, 1, 50, 9, 60, "extra stream ends after 9 bytes"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		p = raw_patch(cases[i].tri, cases[i].n_tri, diff, cases[i].dlen, extra, cases[i].elen, cases[i].new_size,
			      &plen);
		expect_bad(p, plen, old, sizeof(old), cases[i].new_size, FOTA_E_PATCH, FOTA_E_PATCH, cases[i].msg);
		free(p);
	}
	/* A seek may leave old_pos outside the source as long as nothing is read there. */
	int64_t ok[] = {0, 10, -50, 0, 10, 100, 20, 0, 0};
	p = raw_patch(ok, 3, diff, 20, extra, 20, 40, &plen);
	struct mem_io m;
	struct fota_error e;
	uint64_t got;
	CU_ASSERT_EQUAL(run_apply(&m, p, plen, old, sizeof(old), 40, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, 40);
	CU_ASSERT_EQUAL(memcmp(m.out, extra, 20), 0);
	CU_ASSERT_EQUAL(memcmp(m.out + 20, old + 50, 20), 0);
	free(m.out);
	free(p);
}

static void test_bsdiff40_mem_limit(void)
{
	uint8_t *old;
	size_t olen, nlen, plen;
	uint8_t *patch = debian_patch(&old, &olen, &nlen, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(patch);
	struct mem_io m;
	struct fota_error e;
	uint64_t got = 1;
	/* 1 MiB cannot hold one bzip2 decoder for 900k blocks: refused before any write. */
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, olen, nlen, 1u << 20, &got, &e), FOTA_E_LIMIT);
	CU_ASSERT_EQUAL(m.writes, 0);
	CU_ASSERT_EQUAL(got, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "memory limit"));
	free(m.out);
	/* 8 MiB is too little for three fast decoders but enough in bzip2's small mode. */
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, olen, nlen, 8u << 20, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, nlen);
	free(m.out);
	/* the default limit */
	CU_ASSERT_EQUAL(run_apply(&m, patch, plen, old, olen, nlen, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, nlen);
	free(m.out);
	free(patch);
	free(old);
}

/* The engine's script for OLD -> NEW, written as BSDIFF40: we (via the dispatcher) and bspatch apply it. */
static void engine_roundtrip(const char *tag, const uint8_t *old, size_t olen, const uint8_t *nw, size_t nlen)
{
	struct fota_delta_opts opts = {.threads = 1};
	struct fota_delta_script *s = NULL;
	struct fota_error e;
	fota_status st = fota_delta_diff(old, olen, nw, nlen, &opts, &s, &e);
	CU_ASSERT_EQUAL(st, FOTA_OK);
	if (st != FOTA_OK) {
		fprintf(stderr, "\n  %s: fota_delta_diff: %s\n", tag, e.msg);
		return;
	}
	CU_ASSERT_EQUAL(s->new_size, nlen);
	uint8_t *patch = NULL;
	size_t plen = 0;
	st = fota_bsdiff40_encode(s, &patch, &plen, &e);
	CU_ASSERT_EQUAL(st, FOTA_OK);
	if (st != FOTA_OK) {
		fota_delta_script_free(s);
		return;
	}
	CU_ASSERT_TRUE(plen < nlen / 4);

	struct mem_io m = {patch, plen, old, olen, malloc(nlen), 0, nlen, 0, 0};
	struct fota_delta_io io = {&m, plen, mem_read_patch, mem_read_source, mem_write};
	uint64_t got = 0;
	CU_ASSERT_EQUAL(fota_delta_apply(&io, olen, MEM, &got, &e), FOTA_OK);
	CU_ASSERT_EQUAL(got, nlen);
	CU_ASSERT_FALSE(m.oob);
	CU_ASSERT_EQUAL(m.out_len, nlen);
	CU_ASSERT_EQUAL(memcmp(m.out, nw, nlen), 0);
	free(m.out);

	char *op = unit_write_file("eng-old", old, olen);
	char *pp = unit_write_file("eng.bsdiff", patch, plen);
	char *np = tmp_path("eng-new");
	CU_ASSERT_EQUAL(sh("bspatch", op, np, pp), 0);
	size_t blen = 0;
	uint8_t *nb = unit_read_file(np, &blen);
	CU_ASSERT_PTR_NOT_NULL(nb);
	CU_ASSERT_EQUAL(blen, nlen);
	if (nb)
		CU_ASSERT_EQUAL(memcmp(nb, nw, blen < nlen ? blen : nlen), 0);
	free(nb);
	free(op);
	free(pp);
	free(np);
	free(patch);
	fota_delta_script_free(s);
}

static void test_bsdiff40_engine_script(void)
{
	uint8_t *old, *nw;
	size_t nlen;
	const size_t olen = 300000;
	make_pair(olen, 44, &old, &nw, &nlen);
	engine_roundtrip("edits", old, olen, nw, nlen);
	/* a rotation: the last 4 KiB moved to the front */
	memcpy(nw, old + olen - 4096, 4096);
	memcpy(nw + 4096, old, olen - 4096);
	engine_roundtrip("rotation", old, olen, nw, olen);
	free(old);
	free(nw);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_bsdiff40_encode_apply_handmade);
	UNIT_ADD(s, test_bsdiff40_encode_rejects_bad_script);
	UNIT_ADD(s, test_bsdiff40_empty_new);
	UNIT_ADD(s, test_bsdiff40_applies_debian_bsdiff);
	UNIT_ADD(s, test_bsdiff40_bspatch_applies_ours);
	UNIT_ADD(s, test_bsdiff40_truncated);
	UNIT_ADD(s, test_bsdiff40_bad_header);
	UNIT_ADD(s, test_bsdiff40_corrupt_bzip2);
	UNIT_ADD(s, test_bsdiff40_bad_controls);
	UNIT_ADD(s, test_bsdiff40_mem_limit);
	UNIT_ADD(s, test_bsdiff40_engine_script);
}
UNIT_SUITE("formats/bsdiff40", add)
