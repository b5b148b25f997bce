/*
 * delta_apply.c: apply a fota delta patch (FORMAT.md, section 7) in bounded memory, and
 * the format dispatcher (BSDIFF40 patches go to delta_bsdiff40.c).
 *
 * The patch is read front to back, one block at a time (at most one block of compressed
 * input is held); the source is read at the offsets the controls name; the target is
 * written front to back through a 64 KiB buffer. Memory is three zstd decoders, each
 * limited to the window its header states, plus the block buffer and fixed I/O buffers:
 * fota_delta_apply_mem() computes it from the header alone, and a patch needing more
 * than mem_limit is refused before anything is written. Every value read from the patch
 * is checked before use: block and piece sizes against their bounds, each control
 * against the block's remaining output and the source size, each stream's output
 * against its control total, and every stream must end exactly with the last block.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "fota/delta.h"
#include "fota/util.h"
#include "delta_internal.h"

int fota_delta_detect(const uint8_t *head, size_t len)
{
	if (!head || len < 8)
		return -1;
	if (memcmp(head, DELTA_MAGIC, 8) == 0)
		return FOTA_DELTA_FMT_FOTA;
	if (memcmp(head, "BSDIFF40", 8) == 0)
		return FOTA_DELTA_FMT_BSDIFF40;
	return -1;
}

uint64_t fota_delta_apply_mem(const unsigned wlog[DELTA_NSTREAMS], unsigned block_log, unsigned prefix_log)
{
	uint64_t m = 0;
	for (int i = 0; i < DELTA_NSTREAMS; i++)
		m += ZSTD_estimateDStreamSize((size_t)1 << wlog[i]);
	m += delta_piece_bound(DELTA_CTRL_CAP) + (DELTA_NSTREAMS - 1) * delta_piece_bound(UINT64_C(1) << block_log);
	m += DELTA_CTRL_CAP + 3 * DELTA_IO_BUF + 4096; /* control, source, diff, target buffers; state */
	if (prefix_log) /* window blocks: the source window, the decoded block, a decoder */
		m += (UINT64_C(1) << prefix_log) + (UINT64_C(1) << block_log) + ZSTD_estimateDCtxSize();
	return m;
}

#define NS DELTA_NSTREAMS
#define S_CTRL 0
#define S_DRUN 1
#define S_DLIT 2
#define S_EXTRA 3
static const char *const sname[NS] = {"control", "diff-run", "diff-literal", "extra"};

struct zin {
	ZSTD_DStream *d;
	ZSTD_inBuffer in;
	int ended;
};

struct applier {
	const struct fota_delta_io *io;
	uint64_t source_size, new_size;
	struct zin z[NS];
	uint64_t zrun, lrun;    /* current diff run: zero bytes, then literal bytes, left */
	ZSTD_DCtx *wd;
	uint8_t *prefix, *wout;
	uint8_t *block, *ctrl, *sbuf, *dbuf, *obuf;
	size_t olen;
	uint64_t written;
};

/* Decompress exactly len bytes of stream i of the current block. */
static fota_status zread(struct applier *a, int i, uint8_t *dst, size_t len, uint64_t blk, struct fota_error *err)
{
	struct zin *z = &a->z[i];
	ZSTD_outBuffer ob = {dst, len, 0};
	while (ob.pos < len) {
		if (z->ended)
			return fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": %s stream ended early", blk,
					      sname[i]);
		size_t in0 = z->in.pos, out0 = ob.pos;
		size_t r = ZSTD_decompressStream(z->d, &ob, &z->in);
		if (ZSTD_isError(r))
			return fota_error_set(err, FOTA_E_COMPRESS, "delta: block %" PRIu64 ": %s stream: zstd: %s", blk,
					      sname[i], ZSTD_getErrorName(r));
		if (r == 0)
			z->ended = 1;
		if (z->in.pos == in0 && ob.pos == out0)
			return fota_error_set(err, FOTA_E_PATCH,
					      "delta: block %" PRIu64 ": %s piece shorter than its controls need", blk,
					      sname[i]);
	}
	return FOTA_OK;
}

/* At a block's end: the piece must be used up and yield nothing more. */
static fota_status zdrain(struct applier *a, int i, uint64_t blk, struct fota_error *err)
{
	struct zin *z = &a->z[i];
	/* An empty piece adds nothing the previous drain has not seen (and a decoder call
	 * without input counts against zstd's no-progress limit). */
	if (z->in.size == 0)
		return FOTA_OK;
	for (;;) {
		if (z->ended) {
			if (z->in.pos != z->in.size)
				return fota_error_set(err, FOTA_E_PATCH,
						      "delta: block %" PRIu64 ": %s piece has data after its stream's end",
						      blk, sname[i]);
			return FOTA_OK;
		}
		uint8_t x;
		ZSTD_outBuffer ob = {&x, 1, 0};
		size_t in0 = z->in.pos;
		size_t r = ZSTD_decompressStream(z->d, &ob, &z->in);
		if (ZSTD_isError(r))
			return fota_error_set(err, FOTA_E_COMPRESS, "delta: block %" PRIu64 ": %s stream: zstd: %s", blk,
					      sname[i], ZSTD_getErrorName(r));
		if (ob.pos)
			return fota_error_set(err, FOTA_E_PATCH,
					      "delta: block %" PRIu64 ": %s piece holds more bytes than its controls use",
					      blk, sname[i]);
		if (r == 0)
			z->ended = 1;
		if (z->in.pos == in0 && !z->ended)
			break;
	}
	if (z->in.pos != z->in.size)
		return fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": %s piece has undecodable bytes", blk,
				      sname[i]);
	return FOTA_OK;
}

/* One varint from stream i. */
static fota_status zvarint(struct applier *a, int i, uint64_t *v, uint64_t blk, struct fota_error *err)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;
		fota_status st = zread(a, i, &b, 1, blk, err);
		if (st != FOTA_OK)
			return st;
		if (shift == 63 && (b & 0x7e))
			break;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return FOTA_OK;
		}
	}
	return fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": %s stream: bad varint", blk, sname[i]);
}

/* n diff bytes from the run-length coded diff streams; dleft: diff bytes the block's
 * controls still add (a run may not go past them). */
static fota_status diff_read(struct applier *a, uint8_t *dst, size_t n, uint64_t *dleft, uint64_t blk,
			     struct fota_error *err)
{
	while (n) {
		if (a->zrun) {
			size_t k = a->zrun < n ? (size_t)a->zrun : n;
			memset(dst, 0, k);
			a->zrun -= k;
			dst += k;
			n -= k;
		} else if (a->lrun) {
			size_t k = a->lrun < n ? (size_t)a->lrun : n;
			fota_status st = zread(a, S_DLIT, dst, k, blk, err);
			if (st != FOTA_OK)
				return st;
			a->lrun -= k;
			dst += k;
			n -= k;
		} else {
			uint64_t z, l;
			fota_status st = zvarint(a, S_DRUN, &z, blk, err);
			if (st == FOTA_OK)
				st = zvarint(a, S_DRUN, &l, blk, err);
			if (st != FOTA_OK)
				return st;
			if ((z == 0 && l == 0) || z > *dleft || l > *dleft - z)
				return fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": diff run (%" PRIu64
						      ", %" PRIu64 ") empty or past the block's %" PRIu64 " remaining diff bytes",
						      blk, z, l, *dleft);
			*dleft -= z + l;
			a->zrun = z;
			a->lrun = l;
		}
	}
	return FOTA_OK;
}

static fota_status flush_out(struct applier *a, struct fota_error *err)
{
	if (a->olen == 0)
		return FOTA_OK;
	fota_status st = a->io->write_target(a->io->ctx, a->obuf, a->olen, err);
	if (st != FOTA_OK)
		return st;
	a->written += a->olen;
	a->olen = 0;
	return FOTA_OK;
}

static int get_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*pos >= len)
			return -1;
		uint8_t b = p[(*pos)++];
		if (shift == 63 && (b & 0x7e))
			return -1;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

static fota_status apply_fota(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
			      uint64_t *target_size, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	struct applier a = {.io = io, .source_size = source_size};
	uint8_t h[DELTA_HDR_LEN];

	if (io->patch_size < DELTA_HDR_LEN)
		return fota_error_set(err, FOTA_E_PATCH, "delta: patch of %" PRIu64 " bytes is shorter than its header",
				      io->patch_size);
	st = io->read_patch(io->ctx, 0, h, DELTA_HDR_LEN, err);
	if (st != FOTA_OK)
		return st;
	if (memcmp(h, DELTA_MAGIC, 8) != 0)
		return fota_error_set(err, FOTA_E_PATCH, "delta: not a fota delta patch (bad magic)");
	if (h[8] != DELTA_VERSION)
		return fota_error_set(err, FOTA_E_UNSUPPORTED, "delta: patch version %u, this build reads %u", h[8],
				      DELTA_VERSION);
	if (h[9] != 0)
		return fota_error_set(err, FOTA_E_UNSUPPORTED, "delta: header: unknown flags set");
	unsigned wl[NS] = {h[10], h[11], h[12], h[13]}, block_log = h[14], prefix_log = h[15];
	if (prefix_log && (prefix_log < DELTA_WLOG_MIN || prefix_log > DELTA_WLOG_MAX))
		return fota_error_set(err, FOTA_E_PATCH, "delta: header: source window log %u outside [%d, %d]",
				      prefix_log, DELTA_WLOG_MIN, DELTA_WLOG_MAX);
	for (int i = 0; i < NS; i++)
		if (wl[i] < DELTA_WLOG_MIN || wl[i] > DELTA_WLOG_MAX)
			return fota_error_set(err, FOTA_E_PATCH, "delta: header: %s window log %u outside [%d, %d]",
					      sname[i], wl[i], DELTA_WLOG_MIN, DELTA_WLOG_MAX);
	if (block_log < DELTA_BLOCK_LOG_MIN || block_log > DELTA_BLOCK_LOG_MAX)
		return fota_error_set(err, FOTA_E_PATCH, "delta: header: block log %u outside [%d, %d]", block_log,
				      DELTA_BLOCK_LOG_MIN, DELTA_BLOCK_LOG_MAX);
	uint64_t old_size = 0, new_size = 0;
	for (int i = 7; i >= 0; i--) {
		old_size = old_size << 8 | h[16 + i];
		new_size = new_size << 8 | h[24 + i];
	}
	if (old_size != source_size)
		return fota_error_set(err, FOTA_E_SOURCE, "delta: source is %" PRIu64 " bytes, the patch expects %" PRIu64,
				      source_size, old_size);
	if (new_size > INT64_MAX || old_size > INT64_MAX)
		return fota_error_set(err, FOTA_E_PATCH, "delta: header: sizes above 2^63");
	uint64_t need = fota_delta_apply_mem(wl, block_log, prefix_log);
	if (need > mem_limit)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "delta: patch needs %" PRIu64 " bytes of memory (stream windows 2^%u, 2^%u, 2^%u, 2^%u; "
				      "blocks 2^%u; source window 2^%u), limit %" PRIu64, need, wl[0], wl[1], wl[2], wl[3],
				      block_log, prefix_log, mem_limit);
	a.new_size = new_size;

	uint64_t block_max = UINT64_C(1) << block_log;
	size_t block_cap = (size_t)(delta_piece_bound(DELTA_CTRL_CAP) + (NS - 1) * delta_piece_bound(block_max));
	a.block = malloc(block_cap);
	a.ctrl = malloc(DELTA_CTRL_CAP);
	a.sbuf = malloc(DELTA_IO_BUF);
	a.dbuf = malloc(DELTA_IO_BUF);
	a.obuf = malloc(DELTA_IO_BUF);
	if (prefix_log) {
		a.prefix = malloc((size_t)1 << prefix_log);
		a.wout = malloc((size_t)block_max);
		a.wd = ZSTD_createDCtx();
	}
	if (!a.block || !a.ctrl || !a.sbuf || !a.dbuf || !a.obuf || (prefix_log && (!a.prefix || !a.wout || !a.wd))) {
		st = fota_error_set(err, FOTA_E_NOMEM, "delta: apply: out of memory");
		goto out;
	}
	for (int i = 0; i < NS; i++) {
		a.z[i].d = ZSTD_createDStream();
		if (!a.z[i].d ||
		    ZSTD_isError(ZSTD_DCtx_setParameter(a.z[i].d, ZSTD_d_windowLogMax, (int)wl[i]))) {
			st = fota_error_set(err, FOTA_E_NOMEM, "delta: apply: cannot create a zstd decoder");
			goto out;
		}
	}

	uint64_t poff = DELTA_HDR_LEN, produced = 0, blk = 0;
	int script_seen = 0;
	int64_t opos = 0;
	do {
		uint8_t bh[DELTA_BLK_HDR_MAX];
		if (poff >= io->patch_size) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: patch truncated at block %" PRIu64 " (%" PRIu64
					    " of %" PRIu64 " target bytes)", blk, produced, new_size);
			goto out;
		}
		size_t bhl = io->patch_size - poff < DELTA_BLK_HDR_MAX ? (size_t)(io->patch_size - poff) : DELTA_BLK_HDR_MAX;
		st = io->read_patch(io->ctx, poff, bh, bhl, err);
		if (st != FOTA_OK)
			goto out;
		size_t bp = 0;
		uint64_t kind, new_len, ctrl_raw, cl[NS];
		if (get_varint(bh, bhl, &bp, &kind)) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": truncated header", blk);
			goto out;
		}
		if (kind == DELTA_KIND_WINDOW || kind == DELTA_KIND_WINDOW_A64) {
			uint64_t soff, slen, clen;
			if (get_varint(bh, bhl, &bp, &new_len) || get_varint(bh, bhl, &bp, &soff) ||
			    get_varint(bh, bhl, &bp, &slen) || get_varint(bh, bhl, &bp, &clen)) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": truncated header", blk);
				goto out;
			}
			if (!prefix_log) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64
						    ": source-window block in a patch whose header declares none", blk);
				goto out;
			}
			if (new_len == 0 || new_len > block_max || new_len > new_size - produced) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": target length %" PRIu64
						    " invalid (block max %" PRIu64 ", %" PRIu64 " bytes left)", blk, new_len,
						    block_max, new_size - produced);
				goto out;
			}
			if (slen > (UINT64_C(1) << prefix_log) || soff > source_size || slen > source_size - soff) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": source window [%" PRIu64
						    ", +%" PRIu64 ") outside the source (%" PRIu64 " bytes) or above 2^%u",
						    blk, soff, slen, source_size, prefix_log);
				goto out;
			}
			if (clen > delta_piece_bound(new_len) || clen > io->patch_size - poff - bp) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": compressed length %" PRIu64
						    " above its bound or past the patch end", blk, clen);
				goto out;
			}
			poff += bp;
			st = io->read_patch(io->ctx, poff, a.block, (size_t)clen, err);
			if (st == FOTA_OK && slen)
				st = io->read_source(io->ctx, soff, a.prefix, (size_t)slen, err);
			if (st != FOTA_OK)
				goto out;
			poff += clen;
			if (kind == DELTA_KIND_WINDOW_A64)
				delta_a64_filter(a.prefix, (size_t)slen, soff, 0);
			size_t r = ZSTD_DCtx_refPrefix(a.wd, a.prefix, (size_t)slen);
			if (!ZSTD_isError(r))
				r = ZSTD_decompressDCtx(a.wd, a.wout, (size_t)new_len, a.block, (size_t)clen);
			if (ZSTD_isError(r)) {
				st = fota_error_set(err, FOTA_E_COMPRESS, "delta: block %" PRIu64 ": zstd: %s", blk,
						    ZSTD_getErrorName(r));
				goto out;
			}
			if (r != new_len) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": decodes to %zu bytes, states %"
						    PRIu64, blk, r, new_len);
				goto out;
			}
			if (kind == DELTA_KIND_WINDOW_A64)
				delta_a64_filter(a.wout, (size_t)new_len, produced, 1);
			st = flush_out(&a, err);
			if (st == FOTA_OK)
				st = io->write_target(io->ctx, a.wout, (size_t)new_len, err);
			if (st != FOTA_OK)
				goto out;
			a.written += new_len;
			produced += new_len;
			blk++;
			continue;
		}
		if (kind != DELTA_KIND_SCRIPT) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": unknown kind %" PRIu64, blk, kind);
			goto out;
		}
		script_seen = 1;
		if (get_varint(bh, bhl, &bp, &new_len) || get_varint(bh, bhl, &bp, &ctrl_raw) ||
		    get_varint(bh, bhl, &bp, &cl[0]) || get_varint(bh, bhl, &bp, &cl[1]) ||
		    get_varint(bh, bhl, &bp, &cl[2]) || get_varint(bh, bhl, &bp, &cl[3])) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": truncated or bad header", blk);
			goto out;
		}
		if (new_len > block_max || new_len > new_size - produced || (new_len == 0 && new_size != 0)) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": target length %" PRIu64
					    " invalid (block max %" PRIu64 ", %" PRIu64 " bytes left)", blk, new_len,
					    block_max, new_size - produced);
			goto out;
		}
		if (ctrl_raw > DELTA_CTRL_CAP || cl[0] > delta_piece_bound(ctrl_raw) || cl[1] > delta_piece_bound(new_len) ||
		    cl[2] > delta_piece_bound(new_len) || cl[3] > delta_piece_bound(new_len)) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": piece sizes %" PRIu64 "/%" PRIu64
					    "/%" PRIu64 "/%" PRIu64 " (control raw %" PRIu64 ") exceed their bounds", blk,
					    cl[0], cl[1], cl[2], cl[3], ctrl_raw);
			goto out;
		}
		poff += bp;
		uint64_t body = cl[0] + cl[1] + cl[2] + cl[3];
		if (body > io->patch_size - poff) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": %" PRIu64
					    " bytes of pieces run past the patch end", blk, body);
			goto out;
		}
		if (body) {
			st = io->read_patch(io->ctx, poff, a.block, (size_t)body, err);
			if (st != FOTA_OK)
				goto out;
		}
		poff += body;
		size_t boff = 0;
		for (int i = 0; i < NS; i++) {
			if (a.z[i].ended && cl[i]) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": %s piece after its stream's end",
						    blk, sname[i]);
				goto out;
			}
			a.z[i].in = (ZSTD_inBuffer){a.block + boff, (size_t)cl[i], 0};
			boff += (size_t)cl[i];
		}
		st = zread(&a, 0, a.ctrl, (size_t)ctrl_raw, blk, err);
		if (st != FOTA_OK)
			goto out;

		/* the diff bytes this block's controls add, which its diff runs must cover exactly */
		uint64_t dleft = 0;
		for (size_t q = 0; q < ctrl_raw;) {
			uint64_t v[3];
			if (get_varint(a.ctrl, (size_t)ctrl_raw, &q, &v[0]) || get_varint(a.ctrl, (size_t)ctrl_raw, &q, &v[1]) ||
			    get_varint(a.ctrl, (size_t)ctrl_raw, &q, &v[2]))
				break; /* reported below */
			if (v[0] > new_len - dleft) {
				dleft = new_len + 1; /* reported below as a control past the block */
				break;
			}
			dleft += v[0];
		}
		size_t cp = 0;
		uint64_t left = new_len;
		while (cp < ctrl_raw) {
			uint64_t add, copy, zz;
			if (get_varint(a.ctrl, (size_t)ctrl_raw, &cp, &add) || get_varint(a.ctrl, (size_t)ctrl_raw, &cp, &copy) ||
			    get_varint(a.ctrl, (size_t)ctrl_raw, &cp, &zz)) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": truncated control triple", blk);
				goto out;
			}
			int64_t seek = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
			if (add > left || copy > left - add) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": control (%" PRIu64 ", %" PRIu64
						    ") runs past the block's %" PRIu64 " target bytes", blk, add, copy, new_len);
				goto out;
			}
			if (add > source_size || (uint64_t)opos > source_size - add) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": control reads source [%" PRId64
						    ", +%" PRIu64 ") past its %" PRIu64 " bytes", blk, opos, add, source_size);
				goto out;
			}
			left -= add + copy;
			while (add) {
				size_t room = DELTA_IO_BUF - a.olen;
				size_t n = add < room ? (size_t)add : room;
				st = io->read_source(io->ctx, (uint64_t)opos, a.sbuf, n, err);
				if (st == FOTA_OK)
					st = diff_read(&a, a.dbuf, n, &dleft, blk, err);
				if (st != FOTA_OK)
					goto out;
				uint8_t *o = a.obuf + a.olen;
				for (size_t j = 0; j < n; j++)
					o[j] = (uint8_t)(a.sbuf[j] + a.dbuf[j]);
				a.olen += n;
				opos += (int64_t)n;
				add -= n;
				if (a.olen == DELTA_IO_BUF && (st = flush_out(&a, err)) != FOTA_OK)
					goto out;
			}
			while (copy) {
				size_t room = DELTA_IO_BUF - a.olen;
				size_t n = copy < room ? (size_t)copy : room;
				st = zread(&a, S_EXTRA, a.obuf + a.olen, n, blk, err);
				if (st != FOTA_OK)
					goto out;
				a.olen += n;
				copy -= n;
				if (a.olen == DELTA_IO_BUF && (st = flush_out(&a, err)) != FOTA_OK)
					goto out;
			}
			if ((seek < 0 && (uint64_t)(-(seek + 1)) + 1 > (uint64_t)opos) ||
			    (seek > 0 && (uint64_t)seek > source_size - (uint64_t)opos)) {
				st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": seek %" PRId64
						    " from %" PRId64 " leaves the source [0, %" PRIu64 "]", blk, seek, opos,
						    source_size);
				goto out;
			}
			opos += seek;
		}
		if (left) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": controls produce %" PRIu64
					    " bytes, the block states %" PRIu64, blk, new_len - left, new_len);
			goto out;
		}
		if (a.zrun || a.lrun || dleft) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: block %" PRIu64 ": diff runs do not match the controls' adds",
					    blk);
			goto out;
		}
		produced += new_len;
		for (int i = 0; i < NS; i++) {
			st = zdrain(&a, i, blk, err);
			if (st != FOTA_OK)
				goto out;
		}
		blk++;
	} while (produced < new_size);
	for (int i = 0; i < NS; i++)
		if (script_seen && !a.z[i].ended) {
			st = fota_error_set(err, FOTA_E_PATCH, "delta: %s stream does not end with the last script block",
					    sname[i]);
			goto out;
		}
	if (poff != io->patch_size) {
		st = fota_error_set(err, FOTA_E_PATCH, "delta: %" PRIu64 " bytes after the last block",
				    io->patch_size - poff);
		goto out;
	}
	st = flush_out(&a, err);
	if (st == FOTA_OK && target_size)
		*target_size = a.written;
out:
	for (int i = 0; i < NS; i++)
		ZSTD_freeDStream(a.z[i].d);
	ZSTD_freeDCtx(a.wd);
	free(a.prefix);
	free(a.wout);
	free(a.block);
	free(a.ctrl);
	free(a.sbuf);
	free(a.dbuf);
	free(a.obuf);
	return st;
}

fota_status fota_delta_apply(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
			     uint64_t *target_size, struct fota_error *err)
{
	uint8_t head[8];
	if (!io || !io->read_patch || !io->read_source || !io->write_target)
		return fota_error_set(err, FOTA_E_ARG, "delta: apply: incomplete I/O callbacks");
	if (target_size)
		*target_size = 0;
	if (io->patch_size < 8)
		return fota_error_set(err, FOTA_E_PATCH, "delta: patch of %" PRIu64 " bytes is too short to identify",
				      io->patch_size);
	fota_status st = io->read_patch(io->ctx, 0, head, 8, err);
	if (st != FOTA_OK)
		return st;
	switch (fota_delta_detect(head, 8)) {
	case FOTA_DELTA_FMT_FOTA:
		return apply_fota(io, source_size, mem_limit, target_size, err);
	case FOTA_DELTA_FMT_BSDIFF40:
		return fota_bsdiff40_apply(io, source_size, mem_limit, target_size, err);
	default:
		return fota_error_set(err, FOTA_E_PATCH, "delta: unknown patch format (neither FOTADELT nor BSDIFF40)");
	}
}

/* ------------------------------------------------------------------ files */

struct file_io {
	int pfd, sfd, tfd;
	const char *ppath, *spath, *tpath;
};

static fota_status pread_all(int fd, const char *path, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fota_error_set(err, FOTA_E_IO, "%s: read: %s", path, strerror(errno));
		if (r == 0)
			return fota_error_set(err, FOTA_E_IO, "%s: read: unexpected end of file", path);
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return FOTA_OK;
}

static fota_status f_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct file_io *f = ctx;
	return pread_all(f->pfd, f->ppath, off, buf, len, err);
}

static fota_status f_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct file_io *f = ctx;
	return pread_all(f->sfd, f->spath, off, buf, len, err);
}

static fota_status f_write_target(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct file_io *f = ctx;
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = write(f->tfd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fota_error_set(err, FOTA_E_IO, "%s: write: %s", f->tpath, strerror(errno));
		p += r;
		len -= (size_t)r;
	}
	return FOTA_OK;
}

fota_status fota_delta_apply_files(const char *old_path, const char *patch_path, const char *new_path,
				   uint64_t mem_limit, uint64_t *target_size, struct fota_error *err)
{
	struct file_io f = {-1, -1, -1, patch_path, old_path, NULL};
	char *tmp = NULL;
	fota_status st = FOTA_OK;
	struct stat sp, so;
	if (!old_path || !patch_path || !new_path)
		return fota_error_set(err, FOTA_E_ARG, "delta: apply: NULL path");
	if (asprintf(&tmp, "%s.tmp", new_path) < 0)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	f.tpath = tmp;
	f.sfd = open(old_path, O_RDONLY | O_CLOEXEC);
	if (f.sfd < 0 || fstat(f.sfd, &so) != 0) {
		st = fota_error_set(err, FOTA_E_IO, "%s: %s", old_path, strerror(errno));
		goto out;
	}
	f.pfd = open(patch_path, O_RDONLY | O_CLOEXEC);
	if (f.pfd < 0 || fstat(f.pfd, &sp) != 0) {
		st = fota_error_set(err, FOTA_E_IO, "%s: %s", patch_path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(so.st_mode) || !S_ISREG(sp.st_mode)) {
		st = fota_error_set(err, FOTA_E_IO, "%s: not a regular file", S_ISREG(so.st_mode) ? patch_path : old_path);
		goto out;
	}
	f.tfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (f.tfd < 0) {
		st = fota_error_set(err, FOTA_E_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	struct fota_delta_io io = {&f, (uint64_t)sp.st_size, f_read_patch, f_read_source, f_write_target};
	st = fota_delta_apply(&io, (uint64_t)so.st_size, mem_limit, target_size, err);
	if (st != FOTA_OK)
		goto out;
	if (fsync(f.tfd) != 0) {
		st = fota_error_set(err, FOTA_E_IO, "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(f.tfd) != 0) {
		f.tfd = -1;
		st = fota_error_set(err, FOTA_E_IO, "%s: close: %s", tmp, strerror(errno));
		goto out;
	}
	f.tfd = -1;
	if (rename(tmp, new_path) != 0) {
		st = fota_error_set(err, FOTA_E_IO, "%s: rename to %s: %s", tmp, new_path, strerror(errno));
		goto out;
	}
	st = fota_sync_parent_dir(new_path, err);
out:
	if (f.tfd >= 0)
		close(f.tfd);
	if (st != FOTA_OK && tmp)
		unlink(tmp);
	if (f.sfd >= 0)
		close(f.sfd);
	if (f.pfd >= 0)
		close(f.pfd);
	free(tmp);
	return st;
}
