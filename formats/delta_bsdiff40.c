/*
 * delta_bsdiff40.c: the classic BSDIFF40 patch format (bsdiff/bspatch 4.x), written
 * from an edit script and applied in bounded memory.
 *
 * Layout: a 32-byte header ("BSDIFF40", then three 8-byte sign-magnitude integers:
 * compressed control length, compressed diff length, new size) followed by three
 * bzip2 streams: control (triples of 8-byte integers add, copy, seek), diff and extra.
 * The extra stream runs to the end of the patch.
 *
 * bspatch loads old, new and the whole patch into memory. Here apply keeps three
 * independent bzip2 decompression cursors, each reading its own segment of the patch
 * through io->read_patch with a small input buffer, reads the source through
 * io->read_source and writes the target in buffered pieces, so memory is the three
 * bzip2 decoders (sized from each stream's block-size byte and checked against
 * mem_limit before anything is written) plus a few fixed buffers. Every control triple
 * is checked as bspatch does, and stricter: no negative lengths, no source read
 * outside [0, source_size), exactly new_size bytes produced, every stream consumed to
 * its end and every segment to its last byte.
 */
#include <bzlib.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fota/delta.h"
#include "delta_internal.h"

#define HDR_LEN 32
#define CTRL_REC 24
#define IN_CAP (16u << 10)   /* compressed input buffer per cursor */
#define OB_CAP (16u << 10)   /* decompressed read-ahead per cursor */
#define IO_CAP (64u << 10)   /* source cache and target buffer */
#define SRC_AHEAD 4096u      /* smallest source read */
#define ENC_BLOCK 9          /* bzip2 block size, in 100 kB, as bsdiff writes */

/* bzip2's documented decoder sizes: 100 kB + 4 bytes (2.5 with small=1) per block byte. */
#define BZ_DEC_BASE 100000u
#define BZ_DEC_PER_BLOCK 400000u
#define BZ_DEC_PER_BLOCK_SMALL 250000u

static const char magic[8] = {'B', 'S', 'D', 'I', 'F', 'F', '4', '0'};

/* 8-byte sign-magnitude little-endian integer, bsdiff's offtout/offtin. */
static void put_off(uint8_t *p, uint64_t mag, int neg)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(mag >> (8 * i));
	if (neg)
		p[7] |= 0x80;
}

/* Returns the magnitude (< 2^63); *neg is set when the sign bit is on and magnitude > 0. */
static uint64_t get_off(const uint8_t *p, int *neg)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	uint64_t mag = v & ~(UINT64_C(1) << 63);
	*neg = (v >> 63) && mag != 0;
	return mag;
}

/* ---------------------------------------------------------------- encode */

struct growbuf {
	uint8_t *p;
	size_t len, cap;
};

static fota_status grow(struct growbuf *b, size_t min_free, struct fota_error *err)
{
	if (b->cap - b->len >= min_free)
		return FOTA_OK;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < min_free) {
		if (cap > SIZE_MAX / 2)
			return fota_error_set(err, FOTA_E_NOMEM, "bsdiff40: encode: patch too large");
		cap *= 2;
	}
	uint8_t *np = realloc(b->p, cap);
	if (!np)
		return fota_error_set(err, FOTA_E_NOMEM, "bsdiff40: encode: out of memory (%zu bytes)", cap);
	b->p = np;
	b->cap = cap;
	return FOTA_OK;
}

struct compressor {
	bz_stream s;
	int live;
	const char *name;
};

/* Feed len bytes (or finish when fin) into the compressor, appending output to out. */
static fota_status comp_feed(struct compressor *c, const void *data, size_t len, int fin,
			     struct growbuf *out, struct fota_error *err)
{
	const char *p = data;
	for (;;) {
		unsigned chunk = len > (1u << 30) ? (1u << 30) : (unsigned)len;
		c->s.next_in = (char *)p;
		c->s.avail_in = chunk;
		int last = fin && chunk == len;
		for (;;) {
			fota_status st = grow(out, 1u << 16, err);
			if (st != FOTA_OK)
				return st;
			c->s.next_out = (char *)out->p + out->len;
			c->s.avail_out = (unsigned)(out->cap - out->len > UINT_MAX ? UINT_MAX : out->cap - out->len);
			unsigned before = c->s.avail_out;
			int r = BZ2_bzCompress(&c->s, last ? BZ_FINISH : BZ_RUN);
			out->len += before - c->s.avail_out;
			if (last && r == BZ_STREAM_END)
				break;
			if (r != (last ? BZ_FINISH_OK : BZ_RUN_OK))
				return fota_error_set(err, FOTA_E_COMPRESS, "bsdiff40: encode: %s stream: bzip2 error %d",
						      c->name, r);
			if (!last && c->s.avail_in == 0)
				break;
		}
		p += chunk;
		len -= chunk;
		if (len == 0)
			return FOTA_OK;
	}
}

static fota_status comp_stream(const char *name, const uint8_t *data, uint64_t len, struct growbuf *out,
			       struct fota_error *err)
{
	struct compressor c = {.name = name};
	int r = BZ2_bzCompressInit(&c.s, ENC_BLOCK, 0, 0);
	if (r != BZ_OK)
		return fota_error_set(err, r == BZ_MEM_ERROR ? FOTA_E_NOMEM : FOTA_E_COMPRESS,
				      "bsdiff40: encode: %s stream: bzip2 init error %d", name, r);
	fota_status st = comp_feed(&c, data, (size_t)len, 1, out, err);
	BZ2_bzCompressEnd(&c.s);
	return st;
}

/* Check that a script is self-consistent, as the encoder must never write a patch bspatch rejects. */
static fota_status enc_check(const struct fota_delta_script *s, struct fota_error *err)
{
	if (s->new_size > INT64_MAX || s->old_size > INT64_MAX)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: sizes exceed 2^63-1");
	if ((s->n_ctrl && !s->ctrl) || (s->diff_len && !s->diff) || (s->extra_len && !s->extra))
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: script has a NULL array");
	if (s->n_ctrl > SIZE_MAX / CTRL_REC)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: %zu control triples", s->n_ctrl);
	uint64_t new_pos = 0, diff_used = 0, extra_used = 0;
	int64_t old_pos = 0;
	for (size_t i = 0; i < s->n_ctrl; i++) {
		const struct fota_delta_ctrl *c = &s->ctrl[i];
		if (c->add > s->new_size - new_pos)
			return fota_error_set(err, FOTA_E_ARG,
					      "bsdiff40: encode: control %zu: add %" PRIu64 " runs past new size %" PRIu64, i,
					      c->add, s->new_size);
		if (c->add && (old_pos < 0 || (uint64_t)old_pos > s->old_size || c->add > s->old_size - (uint64_t)old_pos))
			return fota_error_set(err, FOTA_E_ARG,
					      "bsdiff40: encode: control %zu: add %" PRIu64 " at old offset %" PRId64
					      " reads outside the %" PRIu64 "-byte old", i, c->add, old_pos, s->old_size);
		new_pos += c->add;
		old_pos += (int64_t)c->add;
		if (c->copy > s->new_size - new_pos)
			return fota_error_set(err, FOTA_E_ARG,
					      "bsdiff40: encode: control %zu: copy %" PRIu64 " runs past new size %" PRIu64, i,
					      c->copy, s->new_size);
		new_pos += c->copy;
		diff_used += c->add;
		extra_used += c->copy;
		if (c->seek == INT64_MIN || __builtin_add_overflow(old_pos, c->seek, &old_pos))
			return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: control %zu: seek %" PRId64 " overflows",
					      i, c->seek);
	}
	if (new_pos != s->new_size)
		return fota_error_set(err, FOTA_E_ARG,
				      "bsdiff40: encode: controls produce %" PRIu64 " bytes, new size is %" PRIu64, new_pos,
				      s->new_size);
	if (diff_used != s->diff_len || extra_used != s->extra_len)
		return fota_error_set(err, FOTA_E_ARG,
				      "bsdiff40: encode: controls use %" PRIu64 " diff and %" PRIu64
				      " extra bytes, script has %" PRIu64 " and %" PRIu64,
				      diff_used, extra_used, s->diff_len, s->extra_len);
	if (s->diff_len > SIZE_MAX || s->extra_len > SIZE_MAX)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: streams too large for this platform");
	return FOTA_OK;
}

fota_status fota_bsdiff40_encode(const struct fota_delta_script *s, uint8_t **patch, size_t *patch_len,
				 struct fota_error *err)
{
	if (!s || !patch || !patch_len)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: encode: NULL argument");
	*patch = NULL;
	*patch_len = 0;
	fota_status st = enc_check(s, err);
	if (st != FOTA_OK)
		return st;

	struct growbuf out = {0};
	struct compressor c = {.name = "control"};
	int c_live = 0;
	if ((st = grow(&out, HDR_LEN, err)) != FOTA_OK)
		goto out;
	out.len = HDR_LEN;

	/* Control: serialise triples in pieces so a large script needs no second copy. */
	int r = BZ2_bzCompressInit(&c.s, ENC_BLOCK, 0, 0);
	if (r != BZ_OK) {
		st = fota_error_set(err, r == BZ_MEM_ERROR ? FOTA_E_NOMEM : FOTA_E_COMPRESS,
				    "bsdiff40: encode: control stream: bzip2 init error %d", r);
		goto out;
	}
	c_live = 1;
	uint8_t rec[CTRL_REC * 256];
	size_t i = 0;
	do {
		size_t n = 0;
		for (; i < s->n_ctrl && n < 256; i++, n++) {
			const struct fota_delta_ctrl *t = &s->ctrl[i];
			uint8_t *q = rec + n * CTRL_REC;
			put_off(q, t->add, 0);
			put_off(q + 8, t->copy, 0);
			put_off(q + 16, t->seek < 0 ? (uint64_t)0 - (uint64_t)t->seek : (uint64_t)t->seek, t->seek < 0);
		}
		if ((st = comp_feed(&c, rec, n * CTRL_REC, i == s->n_ctrl, &out, err)) != FOTA_OK)
			goto out;
	} while (i < s->n_ctrl);
	BZ2_bzCompressEnd(&c.s);
	c_live = 0;
	size_t ctrl_len = out.len - HDR_LEN;

	if ((st = comp_stream("diff", s->diff, s->diff_len, &out, err)) != FOTA_OK)
		goto out;
	size_t diff_len = out.len - HDR_LEN - ctrl_len;
	if ((st = comp_stream("extra", s->extra, s->extra_len, &out, err)) != FOTA_OK)
		goto out;

	memcpy(out.p, magic, sizeof(magic));
	put_off(out.p + 8, ctrl_len, 0);
	put_off(out.p + 16, diff_len, 0);
	put_off(out.p + 24, s->new_size, 0);
	*patch = out.p;
	*patch_len = out.len;
	out.p = NULL;
out:
	if (c_live)
		BZ2_bzCompressEnd(&c.s);
	free(out.p);
	return st;
}

/* ---------------------------------------------------------------- apply */

/* bzip2 allocations are counted against the apply's memory budget. */
struct budget {
	uint64_t limit, used;
};

static void *budget_alloc(void *opaque, int n, int m)
{
	struct budget *b = opaque;
	if (n <= 0 || m <= 0 || (size_t)n > (SIZE_MAX - 16) / (size_t)m)
		return NULL;
	size_t sz = (size_t)n * (size_t)m;
	if (sz + 16 > b->limit - b->used)
		return NULL;
	uint8_t *p = malloc(sz + 16);
	if (!p)
		return NULL;
	memcpy(p, &sz, sizeof(sz));
	b->used += sz + 16;
	return p + 16;
}

static void budget_free(void *opaque, void *ptr)
{
	struct budget *b = opaque;
	if (!ptr)
		return;
	uint8_t *p = (uint8_t *)ptr - 16;
	size_t sz;
	memcpy(&sz, p, sizeof(sz));
	b->used -= sz + 16;
	free(p);
}

struct cursor {
	const char *name;
	bz_stream s;
	int live;
	int ended;          /* BZ_STREAM_END seen */
	uint64_t off, end;  /* next patch byte to fetch, end of this segment */
	uint64_t consumed;  /* decompressed bytes handed to the interpreter */
	size_t ob_pos, ob_len;
	uint8_t in[IN_CAP];
	uint8_t ob[OB_CAP]; /* decompressed bytes not yet handed out (small reads) */
};

struct apply_state {
	const struct fota_delta_io *io;
	uint64_t source_size;
	struct budget budget;
	struct cursor cur[3];
	uint64_t src_off;   /* source bytes cached in src */
	size_t src_len;
	uint8_t src[IO_CAP];
	uint8_t out[IO_CAP];
	size_t out_len;
	uint64_t written;
};

static fota_status cursor_init(struct apply_state *a, struct cursor *c, int small, struct fota_error *err)
{
	c->s.bzalloc = budget_alloc;
	c->s.bzfree = budget_free;
	c->s.opaque = &a->budget;
	int r = BZ2_bzDecompressInit(&c->s, 0, small);
	if (r == BZ_MEM_ERROR)
		return fota_error_set(err, FOTA_E_LIMIT, "%s stream: bzip2 decoder exceeds the memory limit",
				      c->name);
	if (r != BZ_OK)
		return fota_error_set(err, FOTA_E_COMPRESS, "%s stream: bzip2 init error %d", c->name, r);
	c->live = 1;
	return FOTA_OK;
}

/* Decompress up to cap bytes into buf; *got < cap only when the stream ended. */
static fota_status cursor_decode(struct apply_state *a, struct cursor *c, uint8_t *buf, size_t cap, size_t *got,
				 struct fota_error *err)
{
	const struct fota_delta_io *io = a->io;
	*got = 0;
	while (*got < cap && !c->ended) {
		if (c->s.avail_in == 0 && c->off < c->end) {
			size_t n = c->end - c->off < IN_CAP ? (size_t)(c->end - c->off) : IN_CAP;
			fota_status st = io->read_patch(io->ctx, c->off, c->in, n, err);
			if (st != FOTA_OK)
				return fota_error_prefix(err, "%s stream: ", c->name);
			c->off += n;
			c->s.next_in = (char *)c->in;
			c->s.avail_in = (unsigned)n;
		}
		size_t left = cap - *got;
		unsigned want = left > UINT_MAX ? UINT_MAX : (unsigned)left;
		c->s.next_out = (char *)buf + *got;
		c->s.avail_out = want;
		int r = BZ2_bzDecompress(&c->s);
		size_t n = want - c->s.avail_out;
		*got += n;
		if (r == BZ_STREAM_END) {
			c->ended = 1;
			break;
		}
		if (r == BZ_MEM_ERROR)
			return fota_error_set(err, FOTA_E_LIMIT,
					      "%s stream: bzip2 decoder exceeds the memory limit", c->name);
		if (r != BZ_OK)
			return fota_error_set(err, FOTA_E_COMPRESS,
					      "%s stream: corrupt bzip2 data (error %d) near patch offset %" PRIu64,
					      c->name, r, c->off - c->s.avail_in);
		if (n == 0 && c->s.avail_in == 0 && c->off == c->end)
			return fota_error_set(err, FOTA_E_PATCH,
					      "%s stream: compressed data ends at patch offset %" PRIu64
					      " before the bzip2 stream does (truncated patch?)",
					      c->name, c->end);
	}
	return FOTA_OK;
}

/* Hand out exactly len decompressed bytes: small reads through ob, large ones directly. */
static fota_status cursor_read(struct apply_state *a, struct cursor *c, uint8_t *buf, size_t len,
			       struct fota_error *err)
{
	while (len > 0) {
		if (c->ob_pos < c->ob_len) {
			size_t n = c->ob_len - c->ob_pos < len ? c->ob_len - c->ob_pos : len;
			memcpy(buf, c->ob + c->ob_pos, n);
			c->ob_pos += n;
			c->consumed += n;
			buf += n;
			len -= n;
			continue;
		}
		size_t got;
		fota_status st;
		if (len >= OB_CAP) {
			st = cursor_decode(a, c, buf, len, &got, err);
			c->consumed += got;
			buf += got;
			len -= got;
		} else {
			st = cursor_decode(a, c, c->ob, OB_CAP, &got, err);
			c->ob_pos = 0;
			c->ob_len = got;
		}
		if (st != FOTA_OK)
			return st;
		if (got == 0 && len > 0)
			return fota_error_set(err, FOTA_E_PATCH,
					      "%s stream ends after %" PRIu64 " bytes, %zu more needed", c->name,
					      c->consumed, len);
	}
	return FOTA_OK;
}

/* After the last triple: the stream must be at its end, and its segment used up. */
static fota_status cursor_finish(struct apply_state *a, struct cursor *c, struct fota_error *err)
{
	size_t got = c->ob_len - c->ob_pos;
	if (got == 0 && !c->ended) {
		fota_status st = cursor_decode(a, c, c->ob, OB_CAP, &got, err);
		if (st != FOTA_OK)
			return fota_error_prefix(err, "bsdiff40: ");
	}
	if (got > 0)
		return fota_error_set(err, FOTA_E_PATCH,
				      "bsdiff40: %s stream has data beyond the %" PRIu64 " bytes the controls use",
				      c->name, c->consumed);
	if (c->s.avail_in != 0 || c->off != c->end)
		return fota_error_set(err, FOTA_E_PATCH,
				      "bsdiff40: %s stream: %" PRIu64 " trailing bytes after the bzip2 stream end", c->name,
				      (uint64_t)c->s.avail_in + (c->end - c->off));
	return FOTA_OK;
}

/* Source bytes [off, off + n), n <= IO_CAP, off + n <= source_size, through the read-ahead cache. */
static fota_status source_get(struct apply_state *a, uint64_t off, size_t n, const uint8_t **p,
			      struct fota_error *err)
{
	if (off < a->src_off || off - a->src_off > a->src_len || n > a->src_len - (off - a->src_off)) {
		/* Read a little ahead (the next add usually starts just past this one), not a whole
		 * buffer: seeks are frequent and every byte read past them is wasted. */
		size_t want = n > SRC_AHEAD ? n : SRC_AHEAD;
		if (want > a->source_size - off)
			want = (size_t)(a->source_size - off);
		fota_status st = a->io->read_source(a->io->ctx, off, a->src, want, err);
		if (st != FOTA_OK) {
			a->src_len = 0;
			return st;
		}
		a->src_off = off;
		a->src_len = want;
	}
	*p = a->src + (off - a->src_off);
	return FOTA_OK;
}

static fota_status flush_out(struct apply_state *a, struct fota_error *err)
{
	if (a->out_len == 0)
		return FOTA_OK;
	fota_status st = a->io->write_target(a->io->ctx, a->out, a->out_len, err);
	if (st != FOTA_OK)
		return fota_error_prefix(err, "bsdiff40: writing target at %" PRIu64 ": ", a->written);
	a->written += a->out_len;
	a->out_len = 0;
	return FOTA_OK;
}

fota_status fota_bsdiff40_apply(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
				uint64_t *target_size, struct fota_error *err)
{
	if (target_size)
		*target_size = 0;
	if (!io || !io->read_patch || !io->read_source || !io->write_target)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: apply: NULL io callback");

	uint64_t psize = io->patch_size;
	if (psize < HDR_LEN)
		return fota_error_set(err, FOTA_E_PATCH, "bsdiff40: patch is %" PRIu64 " bytes, shorter than the %d-byte header",
				      psize, HDR_LEN);
	uint8_t hdr[HDR_LEN];
	fota_status st = io->read_patch(io->ctx, 0, hdr, HDR_LEN, err);
	if (st != FOTA_OK)
		return fota_error_prefix(err, "bsdiff40: header: ");
	if (memcmp(hdr, magic, sizeof(magic)) != 0)
		return fota_error_set(err, FOTA_E_PATCH, "bsdiff40: bad magic (not \"BSDIFF40\")");
	int neg_c, neg_d, neg_n;
	uint64_t ctrl_len = get_off(hdr + 8, &neg_c);
	uint64_t diff_len = get_off(hdr + 16, &neg_d);
	uint64_t new_size = get_off(hdr + 24, &neg_n);
	if (neg_c || neg_d || neg_n)
		return fota_error_set(err, FOTA_E_PATCH, "bsdiff40: header: negative %s",
				      neg_c ? "control length" : neg_d ? "diff length" : "new size");
	uint64_t body = psize - HDR_LEN;
	if (ctrl_len > body)
		return fota_error_set(err, FOTA_E_PATCH,
				      "bsdiff40: header: control length %" PRIu64 " exceeds the %" PRIu64 " bytes after the header",
				      ctrl_len, body);
	if (diff_len > body - ctrl_len)
		return fota_error_set(err, FOTA_E_PATCH,
				      "bsdiff40: header: diff length %" PRIu64 " exceeds the %" PRIu64
				      " bytes after the control stream",
				      diff_len, body - ctrl_len);
	if (source_size > INT64_MAX)
		return fota_error_set(err, FOTA_E_ARG, "bsdiff40: source size %" PRIu64 " too large", source_size);

	uint64_t seg[4] = {HDR_LEN, HDR_LEN + ctrl_len, HDR_LEN + ctrl_len + diff_len, psize};
	static const char *const names[3] = {"control", "diff", "extra"};

	/* Size every decoder from its stream's block-size byte before committing to anything. */
	unsigned blocks[3];
	for (int k = 0; k < 3; k++) {
		uint8_t bh[4];
		if (seg[k + 1] - seg[k] < sizeof(bh))
			return fota_error_set(err, FOTA_E_PATCH, "bsdiff40: %s stream is %" PRIu64 " bytes, too short for bzip2",
					      names[k], seg[k + 1] - seg[k]);
		st = io->read_patch(io->ctx, seg[k], bh, sizeof(bh), err);
		if (st != FOTA_OK)
			return fota_error_prefix(err, "bsdiff40: %s stream: ", names[k]);
		if (bh[0] != 'B' || bh[1] != 'Z' || bh[2] != 'h' || bh[3] < '1' || bh[3] > '9')
			return fota_error_set(err, FOTA_E_COMPRESS,
					      "bsdiff40: %s stream: not a bzip2 stream (bad header at patch offset %" PRIu64 ")",
					      names[k], seg[k]);
		blocks[k] = (unsigned)(bh[3] - '0');
	}
	uint64_t fixed = sizeof(struct apply_state);
	uint64_t need_fast = fixed, need_small = fixed;
	for (int k = 0; k < 3; k++) {
		need_fast += BZ_DEC_BASE + (uint64_t)BZ_DEC_PER_BLOCK * blocks[k];
		need_small += BZ_DEC_BASE + (uint64_t)BZ_DEC_PER_BLOCK_SMALL * blocks[k];
	}
	int small;
	if (need_fast <= mem_limit)
		small = 0;
	else if (need_small <= mem_limit)
		small = 1;
	else
		return fota_error_set(err, FOTA_E_LIMIT,
				      "bsdiff40: apply needs %" PRIu64 " bytes (three bzip2 decoders, block sizes %u/%u/%u00k),"
				      " memory limit is %" PRIu64,
				      need_small, blocks[0], blocks[1], blocks[2], mem_limit);

	struct apply_state *a = calloc(1, sizeof(*a));
	if (!a)
		return fota_error_set(err, FOTA_E_NOMEM, "bsdiff40: apply: out of memory");
	a->io = io;
	a->source_size = source_size;
	a->budget.limit = mem_limit - fixed;
	for (int k = 0; k < 3; k++) {
		a->cur[k].name = names[k];
		a->cur[k].off = seg[k];
		a->cur[k].end = seg[k + 1];
		if ((st = cursor_init(a, &a->cur[k], small, err)) != FOTA_OK) {
			fota_error_prefix(err, "bsdiff40: ");
			goto out;
		}
	}
	struct cursor *cc = &a->cur[0], *cd = &a->cur[1], *ce = &a->cur[2];

	uint64_t new_pos = 0;
	int64_t old_pos = 0;
	for (uint64_t idx = 0; new_pos < new_size; idx++) {
		uint8_t rec[CTRL_REC];
		if (cc->ob_pos == cc->ob_len && !cc->ended) {
			size_t got;
			if ((st = cursor_decode(a, cc, cc->ob, OB_CAP, &got, err)) != FOTA_OK) {
				fota_error_prefix(err, "bsdiff40: control %" PRIu64 ": ", idx);
				goto out;
			}
			cc->ob_pos = 0;
			cc->ob_len = got;
		}
		if (cc->ob_pos == cc->ob_len) {
			st = fota_error_set(err, FOTA_E_PATCH,
					    "bsdiff40: control stream ends after %" PRIu64 " triples at new offset %" PRIu64
					    ", new size is %" PRIu64,
					    idx, new_pos, new_size);
			goto out;
		}
		if ((st = cursor_read(a, cc, rec, CTRL_REC, err)) != FOTA_OK) {
			fota_error_prefix(err, "bsdiff40: control %" PRIu64 ": ", idx);
			goto out;
		}
		int neg_add, neg_copy, neg_seek;
		uint64_t add = get_off(rec, &neg_add);
		uint64_t copy = get_off(rec + 8, &neg_copy);
		uint64_t seek_mag = get_off(rec + 16, &neg_seek);
		if (neg_add || neg_copy) {
			st = fota_error_set(err, FOTA_E_PATCH, "bsdiff40: control %" PRIu64 ": negative %s length", idx,
					    neg_add ? "add" : "copy");
			goto out;
		}
		if (add > new_size - new_pos) {
			st = fota_error_set(err, FOTA_E_PATCH,
					    "bsdiff40: control %" PRIu64 ": add %" PRIu64 " at new offset %" PRIu64
					    " runs past new size %" PRIu64,
					    idx, add, new_pos, new_size);
			goto out;
		}
		if (add && (old_pos < 0 || (uint64_t)old_pos > source_size || add > source_size - (uint64_t)old_pos)) {
			st = fota_error_set(err, FOTA_E_PATCH,
					    "bsdiff40: control %" PRIu64 ": add %" PRIu64 " at source offset %" PRId64
					    " reads outside the %" PRIu64 "-byte source",
					    idx, add, old_pos, source_size);
			goto out;
		}
		if (copy > new_size - new_pos - add) {
			st = fota_error_set(err, FOTA_E_PATCH,
					    "bsdiff40: control %" PRIu64 ": copy %" PRIu64 " at new offset %" PRIu64
					    " runs past new size %" PRIu64,
					    idx, copy, new_pos + add, new_size);
			goto out;
		}

		/* add: old + diff, in pieces through the target buffer. */
		for (uint64_t done = 0; done < add;) {
			size_t room = IO_CAP - a->out_len;
			size_t n = add - done < room ? (size_t)(add - done) : room;
			uint8_t *dst = a->out + a->out_len;
			if ((st = cursor_read(a, cd, dst, n, err)) != FOTA_OK) {
				fota_error_prefix(err, "bsdiff40: control %" PRIu64 ": ", idx);
				goto out;
			}
			const uint8_t *sp;
			if ((st = source_get(a, (uint64_t)old_pos + done, n, &sp, err)) != FOTA_OK) {
				fota_error_prefix(err, "bsdiff40: control %" PRIu64 ": reading source at %" PRIu64 ": ", idx,
						  (uint64_t)old_pos + done);
				goto out;
			}
			for (size_t j = 0; j < n; j++)
				dst[j] = (uint8_t)(dst[j] + sp[j]);
			a->out_len += n;
			done += n;
			if (a->out_len == IO_CAP && (st = flush_out(a, err)) != FOTA_OK)
				goto out;
		}
		new_pos += add;
		old_pos += (int64_t)add;

		/* copy: extra bytes straight into the target buffer. */
		for (uint64_t done = 0; done < copy;) {
			size_t room = IO_CAP - a->out_len;
			size_t n = copy - done < room ? (size_t)(copy - done) : room;
			if ((st = cursor_read(a, ce, a->out + a->out_len, n, err)) != FOTA_OK) {
				fota_error_prefix(err, "bsdiff40: control %" PRIu64 ": ", idx);
				goto out;
			}
			a->out_len += n;
			done += n;
			if (a->out_len == IO_CAP && (st = flush_out(a, err)) != FOTA_OK)
				goto out;
		}
		new_pos += copy;

		/* seek: |seek| < 2^63, so only the sum can overflow. */
		int64_t seek = neg_seek ? -(int64_t)seek_mag : (int64_t)seek_mag;
		if (__builtin_add_overflow(old_pos, seek, &old_pos)) {
			st = fota_error_set(err, FOTA_E_PATCH, "bsdiff40: control %" PRIu64 ": seek %s%" PRIu64 " overflows",
					    idx, neg_seek ? "-" : "", seek_mag);
			goto out;
		}
	}
	if ((st = flush_out(a, err)) != FOTA_OK)
		goto out;
	for (int k = 0; k < 3; k++)
		if ((st = cursor_finish(a, &a->cur[k], err)) != FOTA_OK)
			goto out;
out:
	if (target_size)
		*target_size = a->written;
	for (int k = 0; k < 3; k++)
		if (a->cur[k].live)
			BZ2_bzDecompressEnd(&a->cur[k].s);
	free(a);
	return st;
}
