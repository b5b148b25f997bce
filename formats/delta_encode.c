/*
 * delta_encode.c: write an edit script as a fota delta patch (FORMAT.md, section 7).
 *
 * The script is cut into blocks of at most 2^block_log target bytes (long control
 * triples are split at block edges, which keeps their meaning) and at most
 * DELTA_CTRL_CAP raw control bytes. Control triples are LEB128 varints (seek zigzag).
 * The control, diff and extra bytes each form one zstd frame whose window is capped by
 * the caller's window_log; each frame is flushed at every block end, so a block's three
 * pieces decode with nothing but that stream's history, and apply needs one window per
 * stream plus one block of compressed input. The three streams are compressed on up to
 * three threads; each stream's bytes do not depend on the thread count.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "fota/delta.h"
#include "delta_internal.h"

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < extra) {
		if (cap > SIZE_MAX / 2)
			return -1;
		cap *= 2;
	}
	uint8_t *np = realloc(b->p, cap);
	if (!np)
		return -1;
	b->p = np;
	b->cap = cap;
	return 0;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

struct block {
	uint64_t new_len;
	size_t ctrl_off, ctrl_len;  /* raw control bytes, in ctrl buffer */
	uint64_t diff_off, diff_len;
	uint64_t extra_off, extra_len;
	size_t clen[3];             /* compressed piece lengths */
};

struct blocks {
	struct block *v;
	size_t n, cap;
};

static struct block *block_new(struct blocks *b)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct block *nv = realloc(b->v, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		b->v = nv;
		b->cap = cap;
	}
	struct block *k = &b->v[b->n++];
	memset(k, 0, sizeof(*k));
	return k;
}

/* One stream's job: compress the listed pieces, flushing after each. */
struct zjob {
	int level;
	unsigned wlog;
	const uint8_t *data;
	struct blocks *blocks;
	int which;             /* 0 ctrl, 1 diff, 2 extra */
	uint64_t total;        /* raw bytes in the stream */
	struct buf out;
	fota_status st;
	char msg[160];
};

static void *zjob_run(void *arg)
{
	struct zjob *j = arg;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	j->st = FOTA_OK;
	if (!cc) {
		j->st = FOTA_E_NOMEM;
		snprintf(j->msg, sizeof(j->msg), "out of memory");
		return NULL;
	}
	size_t r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, j->level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, (int)j->wlog);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setPledgedSrcSize(cc, j->total);
	for (size_t i = 0; i < j->blocks->n && !ZSTD_isError(r); i++) {
		struct block *k = &j->blocks->v[i];
		uint64_t off = j->which == 0 ? k->ctrl_off : j->which == 1 ? k->diff_off : k->extra_off;
		uint64_t len = j->which == 0 ? k->ctrl_len : j->which == 1 ? k->diff_len : k->extra_len;
		ZSTD_inBuffer in = {j->data + off, (size_t)len, 0};
		ZSTD_EndDirective mode = i + 1 == j->blocks->n ? ZSTD_e_end : ZSTD_e_flush;
		size_t before = j->out.len;
		for (;;) {
			if (buf_reserve(&j->out, ZSTD_CStreamOutSize()) != 0) {
				j->st = FOTA_E_NOMEM;
				snprintf(j->msg, sizeof(j->msg), "out of memory");
				goto out;
			}
			ZSTD_outBuffer ob = {j->out.p + j->out.len, j->out.cap - j->out.len, 0};
			r = ZSTD_compressStream2(cc, &ob, &in, mode);
			j->out.len += ob.pos;
			if (ZSTD_isError(r) || r == 0)
				break;
		}
		k->clen[j->which] = j->out.len - before;
		if (!ZSTD_isError(r) && k->clen[j->which] > delta_piece_bound(len)) {
			j->st = FOTA_E_INTERNAL;
			snprintf(j->msg, sizeof(j->msg), "block %zu: piece of %zu bytes above its bound", i,
				 k->clen[j->which]);
			goto out;
		}
	}
	if (ZSTD_isError(r)) {
		j->st = FOTA_E_COMPRESS;
		snprintf(j->msg, sizeof(j->msg), "zstd: %s", ZSTD_getErrorName(r));
	}
out:
	ZSTD_freeCCtx(cc);
	return NULL;
}

static unsigned ceil_log2(uint64_t v)
{
	unsigned l = 0;
	while (l < 63 && (UINT64_C(1) << l) < v)
		l++;
	return l;
}

fota_status fota_delta_encode(const struct fota_delta_script *s, const struct fota_delta_opts *opts,
			      uint8_t **patch, size_t *patch_len, struct fota_error *err)
{
	static const char *names[3] = {"control", "diff", "extra"};
	fota_status st;
	struct buf ctrl = {0}, out = {0};
	struct blocks blocks = {0};
	uint64_t *astart = NULL;
	struct zjob jobs[3];
	memset(jobs, 0, sizeof(jobs));
	*patch = NULL;
	*patch_len = 0;

	st = fota_delta_script_check(s, err);
	if (st != FOTA_OK)
		return fota_error_prefix(err, "delta: encode: ");
	unsigned wlog = opts && opts->window_log ? opts->window_log : DELTA_WLOG_DEFAULT;
	if (wlog < DELTA_WLOG_MIN || wlog > DELTA_WLOG_MAX)
		return fota_error_set(err, FOTA_E_ARG, "delta: encode: window_log %u outside [%d, %d]", wlog,
				      DELTA_WLOG_MIN, DELTA_WLOG_MAX);
	int level = opts && opts->level ? opts->level : DELTA_LEVEL_DEFAULT;
	if (level < 1 || level > ZSTD_maxCLevel())
		return fota_error_set(err, FOTA_E_ARG, "delta: encode: zstd level %d outside [1, %d]", level,
				      ZSTD_maxCLevel());
	unsigned block_log = DELTA_BLOCK_LOG_DEFAULT;
	uint64_t block_max = UINT64_C(1) << block_log;

	/* Windows no larger than the stream needs (a smaller one costs the device less). */
	unsigned wl[3];
	wl[1] = ceil_log2(s->diff_len);
	wl[2] = ceil_log2(s->extra_len);
	wl[0] = DELTA_CTRL_WLOG_MAX; /* fixed below once the control bytes are known */
	for (int i = 1; i < 3; i++) {
		if (wl[i] > wlog)
			wl[i] = wlog;
		if (wl[i] < DELTA_WLOG_MIN)
			wl[i] = DELTA_WLOG_MIN;
	}

	/* Cut the script into blocks. */
	struct block *k = block_new(&blocks);
	if (!k)
		goto nomem;
	uint64_t dpos = 0, epos = 0, rem = block_max;
	k->diff_off = 0;
	k->extra_off = 0;
	/* Seeks are re-derived so that the old position always stays inside [0, old_size]
	 * (the format requires it): each seek goes straight to where the next add reads. */
	astart = malloc((s->n_ctrl ? s->n_ctrl : 1) * sizeof(*astart));
	if (!astart)
		goto nomem;
	{
		int64_t op = 0;
		for (size_t i = 0; i < s->n_ctrl; i++) {
			astart[i] = s->ctrl[i].add ? (uint64_t)op : UINT64_MAX;
			op += (int64_t)s->ctrl[i].add + s->ctrl[i].seek;
		}
		uint64_t next = UINT64_MAX;
		for (size_t i = s->n_ctrl; i-- > 0;) {
			uint64_t here = astart[i];
			astart[i] = next; /* now: where the next add after triple i reads */
			if (here != UINT64_MAX)
				next = here;
		}
	}
	uint64_t cur = 0;
	for (size_t i = 0; i < s->n_ctrl; i++) {
		uint64_t a = s->ctrl[i].add, c = s->ctrl[i].copy;
		cur += a;
		int64_t sk = astart[i] == UINT64_MAX ? 0 : (int64_t)astart[i] - (int64_t)cur;
		cur += (uint64_t)sk;
		for (;;) {
			int need_out = a > 0 || c > 0;
			if ((need_out && rem == 0) || k->ctrl_len + 30 > DELTA_CTRL_CAP) {
				k = block_new(&blocks);
				if (!k)
					goto nomem;
				k->ctrl_off = ctrl.len;
				k->diff_off = dpos;
				k->extra_off = epos;
				rem = block_max;
			}
			uint64_t ta = a < rem ? a : rem;
			a -= ta;
			rem -= ta;
			uint64_t tc = 0;
			if (a == 0) {
				tc = c < rem ? c : rem;
				c -= tc;
				rem -= tc;
			}
			int done = a == 0 && c == 0;
			if (buf_reserve(&ctrl, 30) != 0)
				goto nomem;
			size_t n = put_varint(ctrl.p + ctrl.len, ta);
			n += put_varint(ctrl.p + ctrl.len + n, tc);
			n += put_varint(ctrl.p + ctrl.len + n, zigzag(done ? sk : 0));
			ctrl.len += n;
			k->ctrl_len += n;
			k->new_len += ta + tc;
			k->diff_len += ta;
			k->extra_len += tc;
			dpos += ta;
			epos += tc;
			if (done)
				break;
		}
	}
	free(astart);
	astart = NULL;
	/* a trailing block that produces nothing (only seeks) is dropped into its predecessor */
	if (blocks.n > 1 && blocks.v[blocks.n - 1].new_len == 0) {
		struct block *last = &blocks.v[blocks.n - 1], *prev = &blocks.v[blocks.n - 2];
		if (prev->ctrl_len + last->ctrl_len <= DELTA_CTRL_CAP) {
			prev->ctrl_len += last->ctrl_len;
			blocks.n--;
		}
	}
	wl[0] = ceil_log2(ctrl.len);
	if (wl[0] > DELTA_CTRL_WLOG_MAX)
		wl[0] = DELTA_CTRL_WLOG_MAX;
	if (wl[0] > wlog)
		wl[0] = wlog;
	if (wl[0] < DELTA_WLOG_MIN)
		wl[0] = DELTA_WLOG_MIN;

	/* Compress the three streams. */
	const uint8_t *src[3] = {ctrl.p, s->diff, s->extra};
	uint64_t tot[3] = {ctrl.len, s->diff_len, s->extra_len};
	unsigned nt = fota_delta_threads(opts ? opts->threads : 0);
	pthread_t th[3];
	int started[3] = {0};
	for (int i = 0; i < 3; i++) {
		jobs[i] = (struct zjob){.level = level, .wlog = wl[i], .data = src[i], .blocks = &blocks,
					.which = i, .total = tot[i]};
	}
	/* the biggest job (extra, then diff) runs on this thread; others on helpers if allowed */
	for (int i = 0; i < 2; i++) {
		if ((unsigned)i + 1 < nt && pthread_create(&th[i], NULL, zjob_run, &jobs[i]) == 0)
			started[i] = 1;
		else
			zjob_run(&jobs[i]);
	}
	zjob_run(&jobs[2]);
	for (int i = 0; i < 2; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	for (int i = 0; i < 3; i++)
		if (jobs[i].st != FOTA_OK) {
			st = fota_error_set(err, jobs[i].st, "delta: encode: %s stream: %s", names[i], jobs[i].msg);
			goto out;
		}

	/* Assemble. */
	size_t total = DELTA_HDR_LEN + blocks.n * DELTA_BLK_HDR_MAX + jobs[0].out.len + jobs[1].out.len +
		       jobs[2].out.len;
	if (buf_reserve(&out, total) != 0)
		goto nomem;
	uint8_t *h = out.p;
	memset(h, 0, DELTA_HDR_LEN);
	memcpy(h, DELTA_MAGIC, 8);
	h[8] = DELTA_VERSION;
	h[9] = 0;
	h[10] = (uint8_t)wl[0];
	h[11] = (uint8_t)wl[1];
	h[12] = (uint8_t)wl[2];
	h[13] = (uint8_t)block_log;
	for (int i = 0; i < 8; i++) {
		h[16 + i] = (uint8_t)(s->old_size >> (8 * i));
		h[24 + i] = (uint8_t)(s->new_size >> (8 * i));
	}
	out.len = DELTA_HDR_LEN;
	size_t zoff[3] = {0, 0, 0};
	for (size_t i = 0; i < blocks.n; i++) {
		const struct block *b = &blocks.v[i];
		out.len += put_varint(out.p + out.len, b->new_len);
		out.len += put_varint(out.p + out.len, b->ctrl_len);
		for (int j = 0; j < 3; j++)
			out.len += put_varint(out.p + out.len, b->clen[j]);
		for (int j = 0; j < 3; j++) {
			memcpy(out.p + out.len, jobs[j].out.p + zoff[j], b->clen[j]);
			out.len += b->clen[j];
			zoff[j] += b->clen[j];
		}
	}
	*patch = out.p;
	*patch_len = out.len;
	out.p = NULL;
	st = FOTA_OK;
	goto out;
nomem:
	st = fota_error_set(err, FOTA_E_NOMEM, "delta: encode: out of memory");
out:
	for (int i = 0; i < 3; i++)
		free(jobs[i].out.p);
	free(ctrl.p);
	free(out.p);
	free(blocks.v);
	free(astart);
	return st;
}
