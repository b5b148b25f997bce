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
 *
 * With the images at hand (fota_delta_encode_full), each block is also tried as a
 * source-window block: the target bytes compressed by zstd with a window of the source
 * (centred where the block's controls read, at most 2^window_log bytes) as a raw prefix,
 * which finds the many short matches of recompiled code that bsdiff-style matching
 * leaves in the extra stream. The cheaper coding wins, judged on a fast trial
 * compression of both; the final pass compresses the chosen codings at the real level.
 * Every job is deterministic, so the patch does not depend on the thread count.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getCParams, exported by libzstd 1.5 */
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
	return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0); /* no right shift of a negative value */
}

static unsigned ceil_log2(uint64_t v)
{
	unsigned l = 0;
	while (l < 63 && (UINT64_C(1) << l) < v)
		l++;
	return l;
}

/* A block whose script leaves less than 1/WINDOW_EXTRA_DIV of it to the extra stream,
 * in fewer than WINDOW_PARTS_MIN controls, is coded as script without a window trial. */
#define WINDOW_EXTRA_DIV 32
/* The pre-trial level, and the ratio below which its size times NUM/DEN must come under
 * the script's size (coded at SCRIPT_TRIAL_LEVEL) for the full trial to run. On the
 * benchmark pairs the windows that won were at most 1.32 times the script at the
 * pre-trial; 2/3 skips esb's last block (1.54 times, a window 53 % larger than the
 * script at level 19), which 1/2 tried. */
#define WINDOW_PRE_LEVEL 3
#define WINDOW_PRE_NUM 2
#define WINDOW_PRE_DEN 3
#define NS 4 /* script streams: control, diff runs, diff literals, extra */
/* Largest window per script stream: larger ones gain nothing measurable on the benchmark
 * pairs (control and run streams are small and local) and cost the device memory. */
static const unsigned stream_wlog_max[NS] = {18, 18, 20, 20};
#define WINDOW_PARTS_MIN 64
/* The trial codes the script streams at this level at most: its sizes only choose between
 * script and window for each block, and the final pass codes the script blocks at the
 * real level. On esb (one thread, level 19) this took the script trial from 1.05 to
 * 0.15 CPU s for 0.24 % more patch (two close calls go to the window). */
#define SCRIPT_TRIAL_LEVEL 9
/* Compression jobs on several threads run at once only while their compressors fit in
 * WINDOW_MEM_NUM/WINDOW_MEM_DEN of the two images' size together (see mem_enter). */
#define WINDOW_MEM_NUM 3
#define WINDOW_MEM_DEN 2

/* A piece of a control triple that stays within one block. */
struct part {
	uint64_t add, copy;
	uint64_t astart; /* where the add reads in old (when add > 0) */
};

struct block {
	int kind;
	uint64_t new_off, new_len;
	size_t p0, p1;              /* parts */
	uint64_t diff_off, diff_len;
	uint64_t extra_off, extra_len;
	size_t ctrl_off, ctrl_len;  /* raw control bytes, in the control buffer */
	size_t soff[NS], slen[NS];  /* raw bytes of each stream in this block */
	size_t clen[NS];            /* compressed script pieces */
	uint64_t src_off, src_len;  /* source window */
	uint8_t *wz;                /* compressed window block */
	size_t wzlen;
	uint64_t est_a, est_b;
};

struct plan {
	int a64;                    /* code window blocks through the AArch64 filter */
	int own;                    /* window blocks by our parser (delta_parse.c) */
	size_t wmem;                /* budget of the compressors of all jobs running at once:
	                             * WINDOW_MEM_NUM/DEN of the images */
	size_t tmem;                /* budget of one window block's compressor (SIZE_MAX: none) */
	size_t wused;               /* compressor memory of the jobs running now */
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	struct buf dctl, dlit;      /* the diff stream, run-length coded per block */
	const struct fota_delta_script *s;
	const uint8_t *old, *new;
	struct part *parts;
	size_t n_parts, cap_parts;
	struct block *blocks;
	size_t n_blocks, cap_blocks;
	struct buf ctrl;
};

static int push_part(struct plan *p, uint64_t a, uint64_t c, uint64_t st)
{
	if (p->n_parts == p->cap_parts) {
		size_t cap = p->cap_parts ? p->cap_parts * 2 : 1024;
		struct part *nv = realloc(p->parts, cap * sizeof(*nv));
		if (!nv)
			return -1;
		p->parts = nv;
		p->cap_parts = cap;
	}
	p->parts[p->n_parts++] = (struct part){a, c, st};
	return 0;
}

static struct block *push_block(struct plan *p)
{
	if (p->n_blocks == p->cap_blocks) {
		size_t cap = p->cap_blocks ? p->cap_blocks * 2 : 64;
		struct block *nv = realloc(p->blocks, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		p->blocks = nv;
		p->cap_blocks = cap;
	}
	struct block *k = &p->blocks[p->n_blocks++];
	memset(k, 0, sizeof(*k));
	return k;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* At most this many parts per block, so that its control bytes (each triple: add and
 * copy below 2^block_log, a seek within the old size; plus one leading seek triple) stay
 * under DELTA_CTRL_CAP. */
static size_t parts_max(uint64_t block_max, uint64_t old_size)
{
	size_t per = 2 * varint_len(block_max) + varint_len(2 * old_size + 1);
	return (DELTA_CTRL_CAP - 2 - varint_len(2 * old_size + 1)) / per;
}

static int cut_blocks(struct plan *p, uint64_t block_max)
{
	const struct fota_delta_script *s = p->s;
	struct block *k = push_block(p);
	if (!k)
		return -1;
	uint64_t rem = block_max, dpos = 0, epos = 0, npos = 0;
	size_t pmax = parts_max(block_max, s->old_size);
	int64_t op = 0;
	for (size_t i = 0; i < s->n_ctrl; i++) {
		uint64_t a = s->ctrl[i].add, c = s->ctrl[i].copy, st = (uint64_t)op;
		op += (int64_t)a + s->ctrl[i].seek;
		while (a || c) {
			if (rem == 0 || k->p1 - k->p0 >= pmax) {
				k = push_block(p);
				if (!k)
					return -1;
				k->p0 = k->p1 = p->n_parts;
				k->new_off = npos;
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
			if (push_part(p, ta, tc, st) != 0)
				return -1;
			st += ta;
			k->p1++;
			k->new_len += ta + tc;
			k->diff_len += ta;
			k->extra_len += tc;
			dpos += ta;
			epos += tc;
			npos += ta + tc;
		}
	}
	return 0;
}

/* Control bytes of the script blocks; seeks go straight to where the next add reads, so
 * the old position never leaves [0, old_size]. */
static int serialize_ctrl(struct plan *p)
{
	p->ctrl.len = 0;
	/* next add start after each part, over script blocks only */
	uint64_t next = UINT64_MAX;
	uint64_t *nxt = malloc((p->n_parts ? p->n_parts : 1) * sizeof(*nxt));
	if (!nxt)
		return -1;
	for (size_t b = p->n_blocks; b-- > 0;) {
		const struct block *k = &p->blocks[b];
		if (k->kind != DELTA_KIND_SCRIPT)
			continue;
		for (size_t i = k->p1; i-- > k->p0;) {
			nxt[i] = next;
			if (p->parts[i].add)
				next = p->parts[i].astart;
		}
	}
	uint64_t first = next, cur = 0;
	int started = 0;
	for (size_t b = 0; b < p->n_blocks; b++) {
		struct block *k = &p->blocks[b];
		k->ctrl_off = p->ctrl.len;
		k->ctrl_len = 0;
		k->soff[0] = k->ctrl_off;
		k->slen[0] = 0;
		if (k->kind != DELTA_KIND_SCRIPT)
			continue;
		if (buf_reserve(&p->ctrl, (k->p1 - k->p0 + 1) * 30) != 0) {
			free(nxt);
			return -1;
		}
		uint8_t *o = p->ctrl.p + p->ctrl.len;
		size_t n = 0;
		for (size_t i = k->p0; i < k->p1; i++) {
			const struct part *q = &p->parts[i];
			if (!started) {
				started = 1;
				if (q->add && first != 0) {
					n += put_varint(o + n, 0);
					n += put_varint(o + n, 0);
					n += put_varint(o + n, zigzag((int64_t)first));
					cur = first;
				}
			}
			cur += q->add;
			int64_t sk = nxt[i] == UINT64_MAX ? 0 : (int64_t)nxt[i] - (int64_t)cur;
			cur += (uint64_t)sk;
			n += put_varint(o + n, q->add);
			n += put_varint(o + n, q->copy);
			n += put_varint(o + n, zigzag(sk));
		}
		k->ctrl_len = n;
		p->ctrl.len += n;
		k->soff[0] = k->ctrl_off;
		k->slen[0] = n;
	}
	free(nxt);
	return 0;
}

struct wdelta {
	int64_t d;
	uint64_t w;
};

static int cmp_wdelta(const void *x, const void *y)
{
	const struct wdelta *a = x, *b = y;
	return a->d < b->d ? -1 : a->d > b->d;
}

/* Where a block's source window goes: centred on the add-weighted median alignment
 * (old position minus new position) of its controls; a block without adds keeps the
 * previous block's alignment. */
static int place_window(struct plan *p, struct block *k, uint64_t wmax, int64_t *last_delta)
{
	uint64_t old_size = p->s->old_size, total = 0, npos = k->new_off;
	size_t n = 0;
	struct wdelta *v = malloc((k->p1 - k->p0 + 1) * sizeof(*v));
	if (!v)
		return -1;
	for (size_t i = k->p0; i < k->p1; i++) {
		const struct part *q = &p->parts[i];
		if (q->add) {
			v[n++] = (struct wdelta){(int64_t)q->astart - (int64_t)npos, q->add};
			total += q->add;
		}
		npos += q->add + q->copy;
	}
	if (n) {
		qsort(v, n, sizeof(*v), cmp_wdelta);
		uint64_t acc = 0;
		for (size_t i = 0; i < n; i++) {
			acc += v[i].w;
			if (acc * 2 >= total) {
				*last_delta = v[i].d;
				break;
			}
		}
	}
	free(v);
	uint64_t len = old_size < wmax ? old_size : wmax;
	int64_t center = (int64_t)k->new_off + *last_delta + (int64_t)(k->new_len / 2);
	int64_t off = center - (int64_t)(len / 2);
	if (off < 0)
		off = 0;
	if ((uint64_t)off > old_size - len)
		off = (int64_t)(old_size - len);
	k->src_off = (uint64_t)off;
	k->src_len = len;
	return 0;
}

/* Run-length code each block's diff bytes: pairs (zero run, literal run) as varints in
 * the diff-run stream, the literal (non-zero) bytes in the diff-literal stream. A
 * block's pairs cover exactly its diff bytes (the last pair may have an empty literal
 * run). Diff bytes are mostly zero; zstd codes the two parts better apart. */
static int code_diff(struct plan *p)
{
	const uint8_t *d = p->s->diff;
	for (size_t b = 0; b < p->n_blocks; b++) {
		struct block *k = &p->blocks[b];
		k->soff[1] = p->dctl.len;
		k->soff[2] = p->dlit.len;
		uint64_t i = k->diff_off, end = k->diff_off + k->diff_len;
		while (i < end) {
			uint64_t z = i;
			while (z < end && d[z] == 0)
				z++;
			uint64_t l = z;
			while (l < end && d[l] != 0)
				l++;
			if (buf_reserve(&p->dctl, 20) != 0 || buf_reserve(&p->dlit, l - z) != 0)
				return -1;
			p->dctl.len += put_varint(p->dctl.p + p->dctl.len, z - i);
			p->dctl.len += put_varint(p->dctl.p + p->dctl.len, l - z);
			if (l > z)
				memcpy(p->dlit.p + p->dlit.len, d + z, l - z);
			p->dlit.len += l - z;
			i = l;
		}
		k->slen[1] = p->dctl.len - k->soff[1];
		k->slen[2] = p->dlit.len - k->soff[2];
		k->soff[3] = k->extra_off;
		k->slen[3] = k->extra_len;
	}
	return 0;
}

/* Raw bytes of each stream over the script blocks. */
static void stream_lens(struct plan *p, uint64_t lens[NS])
{
	for (int i = 0; i < NS; i++)
		lens[i] = 0;
	for (size_t b = 0; b < p->n_blocks; b++)
		if (p->blocks[b].kind == DELTA_KIND_SCRIPT)
			for (int i = 0; i < NS; i++)
				lens[i] += p->blocks[b].slen[i];
}

/* A little-endian AArch64 ELF image (e_machine 183): its window blocks go through the
 * AArch64 filter. */
static int is_a64_elf(const uint8_t *d, uint64_t n)
{
	return n >= 20 && memcmp(d, "\177ELF", 4) == 0 && d[5] == 1 && d[18] == 183 && d[19] == 0;
}

struct job {
	struct plan *p;
	int which;      /* 0..NS-1 a script stream; NS a window block */
	size_t blk;     /* for a window block */
	int level;
	unsigned wlog;
	int estimate;   /* store sizes into est_* instead of keeping output */
	struct buf out;
	fota_status st;
	char msg[160];
};

static void job_fail(struct job *j, fota_status st, const char *m, const char *detail)
{
	j->st = st;
	snprintf(j->msg, sizeof(j->msg), "%s%s", m, detail ? detail : "");
}

/* Set the level, window log and match-finder table sizes for coding src_size bytes
 * after a prefix of dict_size. The level's tables are capped at 2^wlog entries (hash
 * 2^(wlog-1)): a compressor does not need more entries than window positions, and the
 * level's own choice (up to 2^24 chain entries at level 19) costs tens of MiB. With a
 * budget (not 0), chain and hash tables shrink in turn until the compressor's estimated
 * size fits in it. */
static ZSTD_compressionParameters level_params(int level, unsigned wlog, uint64_t src_size, uint64_t dict_size,
					       size_t budget)
{
	ZSTD_compressionParameters cp = ZSTD_getCParams(level, src_size, (size_t)dict_size);
	unsigned clog = cp.chainLog < wlog ? cp.chainLog : wlog;
	unsigned hlog = cp.hashLog < wlog - 1 ? cp.hashLog : wlog - 1;
	if (clog < ZSTD_CHAINLOG_MIN)
		clog = ZSTD_CHAINLOG_MIN;
	if (hlog < ZSTD_HASHLOG_MIN)
		hlog = ZSTD_HASHLOG_MIN;
	cp.windowLog = wlog;
	for (int turn = 0; budget; turn ^= 1) {
		cp.chainLog = clog;
		cp.hashLog = hlog;
		if (ZSTD_estimateCCtxSize_usingCParams(cp) <= budget)
			break;
		int chain = clog > ZSTD_CHAINLOG_MIN && (turn == 0 || hlog <= ZSTD_HASHLOG_MIN);
		if (chain)
			clog--;
		else if (hlog > ZSTD_HASHLOG_MIN)
			hlog--;
		else
			break;
	}
	cp.chainLog = clog;
	cp.hashLog = hlog;
	return cp;
}

static size_t set_level(ZSTD_CCtx *cc, int level, unsigned wlog, uint64_t src_size, uint64_t dict_size,
			size_t budget)
{
	ZSTD_compressionParameters cp = level_params(level, wlog, src_size, dict_size, budget);
	unsigned clog = cp.chainLog, hlog = cp.hashLog;
	size_t r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, (int)wlog);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_chainLog, (int)clog);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_hashLog, (int)hlog);
	return r;
}

/* Jobs run at once only while their compressors' memory fits in the plan's budget
 * together (one always runs): on esb a level-19 window compressor takes 26 MiB, and two
 * of them would lift the diff's peak above bsdiff's. Which jobs overlap never changes
 * their output. */
static size_t mem_enter(struct plan *p, size_t cost)
{
	pthread_mutex_lock(&p->wlock);
	while (p->wused && (p->wused > p->wmem || cost > p->wmem - p->wused))
		pthread_cond_wait(&p->wcond, &p->wlock);
	p->wused += cost;
	pthread_mutex_unlock(&p->wlock);
	return cost;
}

static void mem_leave(struct plan *p, size_t cost)
{
	pthread_mutex_lock(&p->wlock);
	p->wused -= cost;
	pthread_cond_broadcast(&p->wcond);
	pthread_mutex_unlock(&p->wlock);
}

static void run_stream(struct job *j)
{
	struct plan *p = j->p;
	const uint8_t *data = j->which == 0 ? p->ctrl.p : j->which == 1 ? p->dctl.p : j->which == 2 ? p->dlit.p : p->s->extra;
	uint64_t total = 0;
	size_t last = SIZE_MAX;
	for (size_t i = 0; i < p->n_blocks; i++) {
		const struct block *k = &p->blocks[i];
		if (k->kind != DELTA_KIND_SCRIPT)
			continue;
		total += k->slen[j->which];
		last = i;
	}
	if (last == SIZE_MAX)
		return; /* no script block: the stream does not exist */
	size_t held = mem_enter(p, ZSTD_estimateCStreamSize_usingCParams(level_params(j->level, j->wlog, total, 0, 0)));
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	if (!cc) {
		mem_leave(p, held);
		return job_fail(j, FOTA_E_NOMEM, "out of memory", NULL);
	}
	size_t r = set_level(cc, j->level, j->wlog, total, 0, 0);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setPledgedSrcSize(cc, total);
	for (size_t i = 0; i <= last && !ZSTD_isError(r); i++) {
		struct block *k = &p->blocks[i];
		if (k->kind != DELTA_KIND_SCRIPT)
			continue;
		uint64_t off = k->soff[j->which], len = k->slen[j->which];
		ZSTD_inBuffer in = {data + off, (size_t)len, 0};
		ZSTD_EndDirective mode = i == last ? ZSTD_e_end : ZSTD_e_flush;
		size_t before = j->out.len;
		for (;;) {
			if (buf_reserve(&j->out, ZSTD_CStreamOutSize()) != 0) {
				job_fail(j, FOTA_E_NOMEM, "out of memory", NULL);
				goto out;
			}
			ZSTD_outBuffer ob = {j->out.p + j->out.len, j->out.cap - j->out.len, 0};
			r = ZSTD_compressStream2(cc, &ob, &in, mode);
			j->out.len += ob.pos;
			if (ZSTD_isError(r) || r == 0)
				break;
		}
		size_t cl = j->out.len - before;
		k->est_a += cl;
		k->clen[j->which] = cl;
		if (!ZSTD_isError(r) && cl > delta_piece_bound(j->which == 0 ? len : k->new_len)) {
			job_fail(j, FOTA_E_INTERNAL, "piece above its bound", NULL);
			goto out;
		}
	}
	if (ZSTD_isError(r))
		job_fail(j, FOTA_E_COMPRESS, "zstd: ", ZSTD_getErrorName(r));
out:
	ZSTD_freeCCtx(cc);
	mem_leave(p, held);
}

static void run_window(struct job *j)
{
	struct plan *p = j->p;
	struct block *k = &p->blocks[j->blk];
	unsigned wl = ceil_log2(k->src_len + k->new_len);
	if (wl < DELTA_WLOG_MIN)
		wl = DELTA_WLOG_MIN;
	ZSTD_compressionParameters wcp = level_params(j->level, wl, k->new_len, k->src_len, p->tmem);
	uint64_t pmem = p->own ? delta_parse_mem(k->src_len, k->new_len, wl) : UINT64_MAX;
	/* our parser, unless the budget cannot hold it (then zstd's, its tables shrunk) */
	int own = pmem <= p->tmem;
	size_t cmem = own ? (size_t)pmem : ZSTD_estimateCCtxSize_usingCParams(wcp);
	if (own && j->estimate && j->level > WINDOW_PRE_LEVEL) {
		ZSTD_compressionParameters pcp = level_params(WINDOW_PRE_LEVEL, wl, k->new_len, k->src_len, p->tmem);
		if (ZSTD_estimateCCtxSize_usingCParams(pcp) > cmem)
			cmem = ZSTD_estimateCCtxSize_usingCParams(pcp);
	}
	size_t held = mem_enter(p, cmem + ZSTD_compressBound((size_t)k->new_len) +
					      (own || p->a64 ? (size_t)(k->src_len + k->new_len) + DELTA_PARSE_PAD : 0));
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound((size_t)k->new_len);
	uint8_t *dst = malloc(cap), *wb = NULL;
	const uint8_t *pre = p->old + k->src_off, *src = p->new + k->new_off;
	if (!cc || !dst) {
		job_fail(j, FOTA_E_NOMEM, "out of memory", NULL);
		goto out;
	}
	if (own || p->a64) {
		/* prefix and block in one buffer (our parser's input), filtered for AArch64 */
		wb = malloc((size_t)(k->src_len + k->new_len) + DELTA_PARSE_PAD);
		if (!wb) {
			job_fail(j, FOTA_E_NOMEM, "out of memory", NULL);
			goto out;
		}
		memcpy(wb, pre, (size_t)k->src_len);
		memcpy(wb + k->src_len, src, (size_t)k->new_len);
		memset(wb + k->src_len + k->new_len, 0, DELTA_PARSE_PAD);
		if (p->a64) {
			delta_a64_filter(wb, (size_t)k->src_len, k->src_off, 0);
			delta_a64_filter(wb + k->src_len, (size_t)k->new_len, k->new_off, 0);
		}
		pre = wb;
		src = wb + k->src_len;
	}
	size_t r;
	if (j->estimate && j->level > WINDOW_PRE_LEVEL) {
		/* A quick look first: a window the fast level codes far above the script is not
		 * worth the slow level's trial (which mostly pays for indexing the prefix). */
		r = set_level(cc, WINDOW_PRE_LEVEL, wl, k->new_len, k->src_len, p->tmem);
		if (!ZSTD_isError(r))
			r = ZSTD_CCtx_refPrefix(cc, pre, (size_t)k->src_len);
		if (!ZSTD_isError(r))
			r = ZSTD_compress2(cc, dst, cap, src, (size_t)k->new_len);
		if (ZSTD_isError(r)) {
			job_fail(j, FOTA_E_COMPRESS, "zstd: ", ZSTD_getErrorName(r));
			goto out;
		}
		if ((uint64_t)r * WINDOW_PRE_NUM / WINDOW_PRE_DEN > k->est_a)
			goto out;
		ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
	}
	if (own) {
		size_t clen;
		const char *why;
		fota_status ps = delta_parse_window(wb, (size_t)k->src_len, (size_t)k->new_len, j->level, wl, dst, cap,
						    &clen, &why);
		if (ps != FOTA_OK) {
			job_fail(j, ps, why, NULL);
			goto out;
		}
		r = clen;
		goto coded;
	}
	r = set_level(cc, j->level, wl, k->new_len, k->src_len, p->tmem);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_refPrefix(cc, pre, (size_t)k->src_len);
	if (!ZSTD_isError(r))
		r = ZSTD_compress2(cc, dst, cap, src, (size_t)k->new_len);
	if (ZSTD_isError(r)) {
		job_fail(j, FOTA_E_COMPRESS, "zstd: ", ZSTD_getErrorName(r));
		goto out;
	}
coded:
	k->est_b = r;
	k->wz = realloc(dst, r ? r : 1); /* the bound is far above the usual size */
	if (!k->wz)
		k->wz = dst;
	k->wzlen = r;
	dst = NULL;
out:
	free(dst);
	free(wb);
	ZSTD_freeCCtx(cc);
	mem_leave(p, held);
}

struct pool {
	struct job *jobs;
	size_t n, next;
	pthread_mutex_t lock;
};

static void *pool_worker(void *arg)
{
	struct pool *pl = arg;
	for (;;) {
		pthread_mutex_lock(&pl->lock);
		size_t i = pl->next++;
		pthread_mutex_unlock(&pl->lock);
		if (i >= pl->n)
			return NULL;
		if (pl->jobs[i].which < NS)
			run_stream(&pl->jobs[i]);
		else
			run_window(&pl->jobs[i]);
	}
}

static void run_jobs(struct job *jobs, size_t n, unsigned threads)
{
	struct pool pl = {jobs, n, 0, PTHREAD_MUTEX_INITIALIZER};
	pthread_t th[64];
	unsigned started = 0;
	for (unsigned t = 1; t < threads && t < 64 && t < n; t++)
		if (pthread_create(&th[started], NULL, pool_worker, &pl) == 0)
			started++;
	pool_worker(&pl);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
}

static int window_worth_trying(const struct block *k)
{
	return k->extra_len * WINDOW_EXTRA_DIV >= k->new_len || k->p1 - k->p0 >= WINDOW_PARTS_MIN;
}

/* Compress: the script streams (at slevel) plus, when estimating, one window job per
 * candidate block (at level). Jobs are ordered biggest-first for balance; results never
 * depend on order. With outs NULL the streams' bytes are dropped (only their per-block
 * sizes are kept), before the window jobs run. */
static fota_status compress_all(struct plan *p, int slevel, int level, const unsigned wl[NS], int estimate,
				int try_window, unsigned threads, struct buf outs[NS], struct fota_error *err)
{
	static const char *names[NS] = {"control", "diff-run", "diff-literal", "extra"};
	size_t nj = NS;
	for (size_t i = 0; i < p->n_blocks; i++)
		if (estimate && try_window && window_worth_trying(&p->blocks[i]))
			nj++;
	struct job *jobs = calloc(nj, sizeof(*jobs));
	if (!jobs)
		return fota_error_set(err, FOTA_E_NOMEM, "delta: encode: out of memory");
	size_t n = 0;
	for (int i = NS - 1; i >= 0; i--)
		jobs[n++] = (struct job){.p = p, .which = i, .level = slevel, .wlog = wl[i], .estimate = estimate};
	for (size_t i = 0; i < p->n_blocks; i++)
		if (estimate && try_window && window_worth_trying(&p->blocks[i]))
			jobs[n++] = (struct job){.p = p, .which = NS, .blk = i, .level = level, .estimate = estimate};
	if (estimate) {
		/* window pre-trials compare with the script sizes: streams first */
		run_jobs(jobs, NS, threads);
		for (size_t i = 0; i < NS && !outs; i++) {
			free(jobs[i].out.p);
			jobs[i].out = (struct buf){0};
		}
		run_jobs(jobs + NS, nj - NS, threads);
	} else {
		run_jobs(jobs, nj, threads);
	}
	fota_status st = FOTA_OK;
	for (size_t i = 0; i < nj; i++) {
		if (jobs[i].st != FOTA_OK && st == FOTA_OK) {
			if (jobs[i].which < NS)
				st = fota_error_set(err, jobs[i].st, "delta: encode: %s stream: %s", names[jobs[i].which],
						    jobs[i].msg);
			else
				st = fota_error_set(err, jobs[i].st, "delta: encode: block %zu: %s", jobs[i].blk, jobs[i].msg);
		}
		if (jobs[i].which < NS && outs) {
			outs[jobs[i].which] = jobs[i].out;
			jobs[i].out.p = NULL;
		}
		free(jobs[i].out.p);
	}
	free(jobs);
	return st;
}

static fota_status encode(const struct fota_delta_script *s, const uint8_t *old, const uint8_t *new,
			  const struct fota_delta_opts *opts, uint64_t mem_budget, uint8_t **patch, size_t *patch_len,
			  struct fota_error *err)
{
	fota_status st;
	struct plan p = {.s = s, .old = old, .new = new, .wlock = PTHREAD_MUTEX_INITIALIZER, .wcond = PTHREAD_COND_INITIALIZER};
	struct buf outs[NS] = {{0}}, out = {0};
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
	unsigned threads = fota_delta_threads(opts ? opts->threads : 0);
	uint64_t both = s->old_size + s->new_size;
	p.wmem = both / WINDOW_MEM_DEN > SIZE_MAX / WINDOW_MEM_NUM ? SIZE_MAX : (size_t)(both / WINDOW_MEM_DEN * WINDOW_MEM_NUM);
	p.tmem = mem_budget && mem_budget < SIZE_MAX ? (size_t)mem_budget : SIZE_MAX;
	/* blocks no larger than the window, so a small window keeps apply's block buffer small */
	unsigned block_log = wlog < DELTA_BLOCK_LOG_DEFAULT ? wlog : DELTA_BLOCK_LOG_DEFAULT;
	if (block_log < DELTA_BLOCK_LOG_MIN)
		block_log = DELTA_BLOCK_LOG_MIN;
	unsigned wl[NS];
	uint64_t lens[NS];
	int all_script = 0; /* the trial's script streams are the final ones */

	if (cut_blocks(&p, UINT64_C(1) << block_log) != 0 || code_diff(&p) != 0)
		goto nomem;

	int try_window = old && new && s->old_size > 0 && s->new_size > 0;
	p.a64 = try_window && is_a64_elf(new, s->new_size);
	p.own = !opts || opts->level == 0; /* an explicit level: zstd's parser at it */
	unsigned plog = p.own && wlog > DELTA_PARSE_PREFIX_LOG ? DELTA_PARSE_PREFIX_LOG : wlog;
	if (try_window) {
		int64_t last_delta = (int64_t)0;
		for (size_t i = 0; i < p.n_blocks; i++)
			if (place_window(&p, &p.blocks[i], UINT64_C(1) << plog, &last_delta) != 0)
				goto nomem;
		if (serialize_ctrl(&p) != 0)
			goto nomem;
		stream_lens(&p, lens);
		for (int i = 0; i < NS; i++) {
			wl[i] = ceil_log2(lens[i]);
			wl[i] = wl[i] > stream_wlog_max[i] ? stream_wlog_max[i] : wl[i] < DELTA_WLOG_MIN ? DELTA_WLOG_MIN : wl[i];
			if (wl[i] > wlog)
				wl[i] = wlog;
		}
		/* trial: the script streams as if every block were a script block (kept as the
		 * result when they were coded at the real level and no block turns out better as
		 * a window), and every candidate window */
		int slevel = level < SCRIPT_TRIAL_LEVEL ? level : SCRIPT_TRIAL_LEVEL;
		st = compress_all(&p, slevel, level, wl, 1, 1, threads, slevel == level ? outs : NULL, err);
		if (st != FOTA_OK)
			goto out;
		all_script = slevel == level;
		for (size_t i = 0; i < p.n_blocks; i++) {
			struct block *k = &p.blocks[i];
			if (k->wz && k->est_b + 8 < k->est_a + 2 && k->est_b <= delta_piece_bound(k->new_len))
				k->kind = p.a64 ? DELTA_KIND_WINDOW_A64 : DELTA_KIND_WINDOW;
			if (k->kind != DELTA_KIND_SCRIPT)
				all_script = 0;
			if (k->kind == DELTA_KIND_SCRIPT) {
				free(k->wz);
				k->wz = NULL;
				k->wzlen = 0;
			}
			if (getenv("FOTA_DELTA_DEBUG"))
				fprintf(stderr, "block %zu: script %" PRIu64 " window %" PRIu64 " -> %s\n", i, k->est_a,
					k->est_b, k->kind ? "window" : "script");
		}
	}
	if (serialize_ctrl(&p) != 0)
		goto nomem;
	stream_lens(&p, lens);
	for (int i = 0; i < NS; i++) {
		wl[i] = ceil_log2(lens[i]);
		wl[i] = wl[i] > stream_wlog_max[i] ? stream_wlog_max[i] : wl[i] < DELTA_WLOG_MIN ? DELTA_WLOG_MIN : wl[i];
		if (wl[i] > wlog)
			wl[i] = wlog;
	}
	if (!all_script) {
		for (int i = 0; i < NS; i++) {
			free(outs[i].p);
			outs[i] = (struct buf){0};
		}
		st = compress_all(&p, level, level, wl, 0, 0, threads, outs, err);
		if (st != FOTA_OK)
			goto out;
	}
	uint64_t prefix_max = 0;
	size_t total = DELTA_HDR_LEN + outs[0].len + outs[1].len + outs[2].len + outs[3].len;
	for (size_t i = 0; i < p.n_blocks; i++) {
		struct block *k = &p.blocks[i];
		total += DELTA_BLK_HDR_MAX + k->wzlen;
		if (k->kind != DELTA_KIND_SCRIPT) {
			if (k->wzlen > delta_piece_bound(k->new_len)) {
				st = fota_error_set(err, FOTA_E_INTERNAL, "delta: encode: block %zu above its bound", i);
				goto out;
			}
			if (k->src_len > prefix_max)
				prefix_max = k->src_len;
		}
	}
	if (getenv("FOTA_DELTA_DEBUG"))
		fprintf(stderr, "streams: ctrl %" PRIu64 "->%zu drun %" PRIu64 "->%zu dlit %" PRIu64 "->%zu extra %" PRIu64
			"->%zu blocks %zu\n", lens[0], outs[0].len, lens[1], outs[1].len, lens[2], outs[2].len, lens[3],
			outs[3].len, p.n_blocks);

	if (buf_reserve(&out, total) != 0)
		goto nomem;
	uint8_t *h = out.p;
	memset(h, 0, DELTA_HDR_LEN);
	memcpy(h, DELTA_MAGIC, 8);
	h[8] = DELTA_VERSION;
	for (int i = 0; i < NS; i++)
		h[10 + i] = (uint8_t)wl[i];
	h[14] = (uint8_t)block_log;
	h[15] = (uint8_t)(prefix_max ? (ceil_log2(prefix_max) < DELTA_WLOG_MIN ? DELTA_WLOG_MIN : ceil_log2(prefix_max)) : 0);
	for (int i = 0; i < 8; i++) {
		h[16 + i] = (uint8_t)(s->old_size >> (8 * i));
		h[24 + i] = (uint8_t)(s->new_size >> (8 * i));
	}
	out.len = DELTA_HDR_LEN;
	size_t zoff[NS] = {0, 0, 0, 0};
	for (size_t i = 0; i < p.n_blocks; i++) {
		const struct block *k = &p.blocks[i];
		out.len += put_varint(out.p + out.len, (uint64_t)k->kind);
		if (k->kind != DELTA_KIND_SCRIPT) {
			out.len += put_varint(out.p + out.len, k->new_len);
			out.len += put_varint(out.p + out.len, k->src_off);
			out.len += put_varint(out.p + out.len, k->src_len);
			out.len += put_varint(out.p + out.len, k->wzlen);
			memcpy(out.p + out.len, k->wz, k->wzlen);
			out.len += k->wzlen;
			continue;
		}
		out.len += put_varint(out.p + out.len, k->new_len);
		out.len += put_varint(out.p + out.len, k->ctrl_len);
		for (int j = 0; j < NS; j++)
			out.len += put_varint(out.p + out.len, k->clen[j]);
		for (int j = 0; j < NS; j++) {
			if (k->clen[j])
				memcpy(out.p + out.len, outs[j].p + zoff[j], k->clen[j]);
			out.len += k->clen[j];
			zoff[j] += k->clen[j];
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
	for (int i = 0; i < NS; i++)
		free(outs[i].p);
	free(p.dctl.p);
	free(p.dlit.p);
	for (size_t i = 0; i < p.n_blocks; i++)
		free(p.blocks[i].wz);
	free(p.blocks);
	free(p.parts);
	free(p.ctrl.p);
	free(out.p);
	return st;
}

fota_status fota_delta_encode(const struct fota_delta_script *s, const struct fota_delta_opts *opts,
			      uint8_t **patch, size_t *patch_len, struct fota_error *err)
{
	return encode(s, NULL, NULL, opts, 0, patch, patch_len, err);
}

fota_status fota_delta_encode_full_mem(const struct fota_delta_script *s, const uint8_t *old_data,
				       const uint8_t *new_data, const struct fota_delta_opts *opts, uint64_t mem_budget,
				       uint8_t **patch, size_t *patch_len, struct fota_error *err)
{
	if (s && ((s->old_size && !old_data) || (s->new_size && !new_data)))
		return fota_error_set(err, FOTA_E_ARG, "delta: encode: NULL image");
	return encode(s, old_data, new_data, opts, mem_budget, patch, patch_len, err);
}

fota_status fota_delta_encode_full(const struct fota_delta_script *s, const uint8_t *old_data,
				   const uint8_t *new_data, const struct fota_delta_opts *opts, uint8_t **patch,
				   size_t *patch_len, struct fota_error *err)
{
	return fota_delta_encode_full_mem(s, old_data, new_data, opts, 0, patch, patch_len, err);
}
