/*
 * delta_parse.c: our own match finder and parser for source-window blocks.
 *
 * zstd's optimal parser (levels 16 and up) makes the window blocks small, but most of its
 * time goes to indexing the 2 MiB source prefix in binary trees. This file finds matches
 * with a hash chain over prefix + block, checks the three repeat offsets first (relocated
 * AArch64 code repeats one offset for long runs, broken by a few changed bytes) and
 * chooses the sequences with a short-horizon optimal parse priced from the statistics of
 * the previous 128 KiB zstd block. zstd's entropy stage then codes the sequences
 * (ZSTD_compressSequences with the prefix referenced), so the frame is a standard zstd
 * frame that apply decodes with ZSTD_DCtx_refPrefix, unchanged. zstd recomputes the
 * repeat codes itself; the parser mirrors its rules only to price matches.
 *
 * Every block of the frame is cut by us (explicit block delimiters) at 128 KiB, so no
 * match crosses a block edge. The frame is decoded once after coding and compared with
 * the block; a mismatch is an internal error.
 */
#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_compressSequences, exported by libzstd 1.5 */
#include <zstd.h>

#include "delta_internal.h"

/* Match finding: a chain of positions by 8-byte hash (long matches), the newest
 * position of each 4-byte hash (an instruction) and the newest of each 3-byte hash
 * within PARSE_DIST3 (a 3-byte match further back costs more than its literals, as in
 * zstd). Measured on esb, one thread (CPU seconds from paired runs, noisy on the shared
 * machine): with a 4-byte chain of depth 4 as well, 2,367,676 bytes for about 25 % more
 * CPU in all; 8-byte chain depth 8, repeat match of 8 enough, skip at 3/4 bit:
 * 2,377,472 bytes; these (6, 6, 1.25 bit): 2,389,007 bytes for about 10 % less CPU; depth 12:
 * 2,382,345 (with 8 and 3/4 bit); deeper chains (16, 32) gain under 1 % for 1.5 to 2 times
 * the parse time. */
#define PARSE_HLOG 20
#define PARSE_H4LOG 18
#define PARSE_H3LOG 16
#define PARSE_DIST3 (1u << 18)
#define PARSE_DEPTH8 6
/* A repeat-offset match this long ends the search at a position: a new offset would
 * have to be much longer to pay for itself. */
#define PARSE_REP_ENOUGH 6
/* A match this long is taken at once (zstd's "sufficient length"). */
#define PARSE_SUFF 32
/* A position is not searched when the next one is already reached within 1.25 bit of
 * its own price (zstd's btopt shortcut uses half a bit). */
#define PARSE_SKIP 320
#define PARSE_MINMATCH 4     /* hash-chain matches */
#define PARSE_REPMIN 3       /* repeat-offset and 3-byte matches */
#define PARSE_BLOCK 131072u  /* zstd's largest block */
#define PARSE_OPT_NUM 1024u  /* parse horizon */
#define PARSE_PRICE_MAX 0x7FFFFFFFu
#define NLL 36
#define NML 53
#define NOF 32

static const uint8_t ll_bits[NLL] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
				     1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t ml_bits[NML] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
				     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
				     2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

struct node {
	uint32_t price;
	uint32_t off, mlen, litlen;
	uint32_t rep[3];
};

struct cand {
	uint32_t off, len;
};

struct parser {
	const uint8_t *buf;  /* prefix then block */
	size_t pre, end;     /* block = buf[pre, end) */
	uint32_t *head, *chain, *head4, *head3;
	size_t next_ins;
	size_t h3from;      /* 3-byte hashes index positions from here */
	unsigned hlog, h4log, h3log;
	uint8_t ll_code[64], ml_code[128];
	/* prices in 1/256 bit */
	uint32_t lit_p[256], ll_p[NLL], ml_p[NML], of_p[NOF];
	uint32_t lit_f[256], ll_f[NLL], ml_f[NML], of_f[NOF];
	struct node *opt;
	struct cand cands[64];
	size_t ends[PARSE_OPT_NUM];
	ZSTD_Sequence *seq;
	size_t nseq, capseq;
	uint32_t rep[3];
};

static unsigned highbit(uint32_t v)
{
	return v ? 31u - (unsigned)__builtin_clz(v) : 0;
}

/* log2(v) in 1/256 bit, linear between powers of two */
static uint32_t weight(uint32_t v)
{
	unsigned hb = highbit(v);
	return hb * 256 + (uint32_t)(((uint64_t)v << 8 >> hb) - 256);
}

static unsigned ll_code(const struct parser *ps, uint32_t ll)
{
	return ll < 64 ? ps->ll_code[ll] : highbit(ll) + 19;
}

static unsigned ml_code(const struct parser *ps, uint32_t mlbase)
{
	return mlbase < 128 ? ps->ml_code[mlbase] : highbit(mlbase) + 36;
}

static void code_tables(struct parser *ps)
{
	uint32_t base = 0;
	for (unsigned c = 0; c < NLL && base < 64; c++) {
		for (uint32_t v = base; v < base + (1u << ll_bits[c]) && v < 64; v++)
			ps->ll_code[v] = (uint8_t)c;
		base += 1u << ll_bits[c];
	}
	base = 0;
	for (unsigned c = 0; c < NML && base < 128; c++) {
		for (uint32_t v = base; v < base + (1u << ml_bits[c]) && v < 128; v++)
			ps->ml_code[v] = (uint8_t)c;
		base += 1u << ml_bits[c];
	}
}

/* Prices from frequencies, at most max (the coder's table log: a Huffman literal costs at
 * most 11 bits, an FSE code at most its accuracy log). */
static void prices_of(uint32_t *p, const uint32_t *f, unsigned n, uint32_t max)
{
	uint32_t total = 0;
	for (unsigned i = 0; i < n; i++)
		total += f[i] + 1;
	uint32_t wt = weight(total);
	for (unsigned i = 0; i < n; i++) {
		uint32_t v = wt - weight(f[i] + 1);
		p[i] = v < max ? v : max;
	}
}

static void set_prices(struct parser *ps)
{
	prices_of(ps->lit_p, ps->lit_f, 256, 11 * 256);
	prices_of(ps->ll_p, ps->ll_f, NLL, 9 * 256);
	prices_of(ps->ml_p, ps->ml_f, NML, 9 * 256);
	prices_of(ps->of_p, ps->of_f, NOF, 8 * 256);
}

/* Statistics before the first block: the block's bytes for literals, small lengths and
 * repeat codes likelier than the rest. */
static void init_stats(struct parser *ps, size_t from, size_t to)
{
	memset(ps->lit_f, 0, sizeof(ps->lit_f));
	for (size_t i = from; i < to; i++)
		ps->lit_f[ps->buf[i]]++;
	for (unsigned i = 0; i < 256; i++)
		ps->lit_f[i] = ps->lit_f[i] / 16;
	for (unsigned i = 0; i < NLL; i++)
		ps->ll_f[i] = i < 4 ? 8 : i < 16 ? 2 : 0;
	for (unsigned i = 0; i < NML; i++)
		ps->ml_f[i] = i < 16 ? 6 : i < 32 ? 2 : 1;
	for (unsigned i = 0; i < NOF; i++)
		ps->of_f[i] = i < 2 ? 16 : 2;
	set_prices(ps);
}

/* Each block is priced from the previous block's statistics alone (carrying older ones
 * over, or parsing the first block twice, made esb larger). */
static void clear_stats(struct parser *ps)
{
	memset(ps->lit_f, 0, sizeof(ps->lit_f));
	memset(ps->ll_f, 0, sizeof(ps->ll_f));
	memset(ps->ml_f, 0, sizeof(ps->ml_f));
	memset(ps->of_f, 0, sizeof(ps->of_f));
}

static uint32_t ll_price(const struct parser *ps, uint32_t ll)
{
	unsigned c = ll_code(ps, ll);
	return ps->ll_p[c] + ll_bits[c] * 256u;
}

/* zstd's offBase for a raw offset (1..3 repeat codes, else offset + 3) */
static uint32_t off_base(uint32_t off, const uint32_t rep[3], int ll0)
{
	if (!ll0 && off == rep[0])
		return 1;
	if (off == rep[1])
		return 2 - (uint32_t)ll0;
	if (off == rep[2])
		return 3 - (uint32_t)ll0;
	if (ll0 && off == rep[0] - 1)
		return 3;
	return off + 3;
}

static void update_rep(uint32_t rep[3], uint32_t off, int ll0)
{
	uint32_t ob = off_base(off, rep, ll0);
	if (ob > 3) {
		rep[2] = rep[1];
		rep[1] = rep[0];
		rep[0] = off;
		return;
	}
	uint32_t rc = ob - 1 + (uint32_t)ll0;
	if (rc == 0)
		return;
	uint32_t cur = rc == 3 ? rep[0] - 1 : rep[rc];
	rep[2] = rc >= 2 ? rep[1] : rep[2];
	rep[1] = rep[0];
	rep[0] = cur;
}

static uint32_t match_price(const struct parser *ps, uint32_t off, uint32_t len, const uint32_t rep[3], int ll0)
{
	uint32_t ob = off_base(off, rep, ll0);
	unsigned oc = highbit(ob);
	unsigned mc = ml_code(ps, len - 3);
	return ps->of_p[oc] + oc * 256u + ps->ml_p[mc] + ml_bits[mc] * 256u;
}

static uint32_t hash4(const uint8_t *p, unsigned h4log)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	return (v * 2654435761u) >> (32 - h4log);
}

static uint32_t hash3(const uint8_t *p, unsigned h3log)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
	return (v * 2654435761u) >> (32 - h3log);
}

static uint32_t hash8(const uint8_t *p, unsigned hlog)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return (uint32_t)((v * UINT64_C(0x9E3779B185EBCA87)) >> (64 - hlog));
}

/* Index positions before pos: the 8-byte chain and the newest position of each 4-byte hash. */
static void insert_upto(struct parser *ps, size_t pos)
{
	for (size_t i = ps->next_ins; i < pos; i++) {
		if (i >= ps->h3from)
			ps->head3[hash3(ps->buf + i, ps->h3log)] = (uint32_t)i;
		ps->head4[hash4(ps->buf + i, ps->h4log)] = (uint32_t)i;
		uint32_t h = hash8(ps->buf + i, ps->hlog);
		ps->chain[i] = ps->head[h];
		ps->head[h] = (uint32_t)i;
	}
	if (ps->next_ins < pos)
		ps->next_ins = pos;
}

/* A candidate at distance off from pos: kept when longer than *best. Returns 1 when it
 * reached PARSE_SUFF or the limit (the search is over). */
static int take(struct parser *ps, size_t pos, size_t off, size_t limit, size_t *best, size_t *n)
{
	const uint8_t *cur = ps->buf + pos, *c = cur - off;
	if (c[*best] != cur[*best]) /* (the pad makes this readable at the end) */
		return 0;
	size_t l = delta_common_len(cur, c, limit);
	if (l <= *best)
		return 0;
	*best = l;
	if (*n < sizeof(ps->cands) / sizeof(ps->cands[0]))
		ps->cands[(*n)++] = (struct cand){(uint32_t)off, (uint32_t)l};
	return l >= PARSE_SUFF || l == limit;
}

/* Matches at pos (lengths ascending, at most to limit): the repeat offsets, then the
 * newest 3-byte match when none repeats, the newest 4-byte one, then the 8-byte chain.
 * Returns the number of candidates. */
static size_t find(struct parser *ps, size_t pos, size_t limit, const uint32_t rep[3], int ll0)
{
	size_t n = 0, best = PARSE_REPMIN - 1;
	const uint8_t *cur = ps->buf + pos;
	for (int r = 0; r < 3 + ll0; r++) {
		uint32_t off = r < 3 ? rep[r] : rep[0] - 1;
		if ((r == 0 && ll0) || off == 0 || off > pos)
			continue;
		if (take(ps, pos, off, limit, &best, &n))
			return n;
	}
	if (best >= PARSE_REP_ENOUGH)
		return n;
	insert_upto(ps, pos);
	uint32_t m = ps->head3[hash3(cur, ps->h3log)];
	if (n == 0 && m < pos && pos - m < PARSE_DIST3 && take(ps, pos, pos - m, limit, &best, &n))
		return n;
	if (limit < PARSE_MINMATCH)
		return n;
	if (best < PARSE_MINMATCH - 1)
		best = PARSE_MINMATCH - 1;
	m = ps->head4[hash4(cur, ps->h4log)];
	if (m < pos && take(ps, pos, pos - m, limit, &best, &n))
		return n;
	insert_upto(ps, pos + 1);
	m = ps->chain[pos];
	for (unsigned d = 0; d < PARSE_DEPTH8 && m != UINT32_MAX; d++, m = ps->chain[m])
		if (take(ps, pos, pos - m, limit, &best, &n))
			break;
	return n;
}

static int push_seq(struct parser *ps, uint32_t off, uint32_t ll, uint32_t ml)
{
	if (ps->nseq == ps->capseq)
		return -1; /* cannot happen: capseq is the most a block can take */
	ps->seq[ps->nseq++] = (ZSTD_Sequence){.offset = off, .litLength = ll, .matchLength = ml, .rep = 0};
	return 0;
}

/* Emit a match at pos after literals from *anchor, counting statistics. */
static int emit(struct parser *ps, size_t *anchor, size_t pos, uint32_t off, uint32_t len)
{
	uint32_t ll = (uint32_t)(pos - *anchor);
	for (size_t i = *anchor; i < pos; i++)
		ps->lit_f[ps->buf[i]]++;
	ps->ll_f[ll_code(ps, ll)]++;
	ps->ml_f[ml_code(ps, len - 3)]++;
	ps->of_f[highbit(off_base(off, ps->rep, ll == 0))]++;
	update_rep(ps->rep, off, ll == 0);
	*anchor = pos + len;
	return push_seq(ps, off, ll, len);
}

/* Parse buf[bs, be) as one zstd block. */
static int parse_block(struct parser *ps, size_t bs, size_t be)
{
	struct node *opt = ps->opt;
	size_t ip = bs, anchor = bs;
	while (ip < be) {
		size_t limit = be - ip;
		int ll0 = ip == anchor;
		size_t nc = find(ps, ip, limit, ps->rep, ll0);
		if (nc == 0) {
			ip++;
			continue;
		}
		struct cand lm = ps->cands[nc - 1];
		if (lm.len >= PARSE_SUFF || lm.len == limit) {
			if (emit(ps, &anchor, ip, lm.off, lm.len) != 0)
				return -1;
			ip = anchor;
			continue;
		}
		opt[0] = (struct node){0, 0, 0, (uint32_t)(ip - anchor), {ps->rep[0], ps->rep[1], ps->rep[2]}};
		size_t last = 0;
		for (size_t i = 1; i < PARSE_REPMIN; i++)
			opt[i].price = PARSE_PRICE_MAX;
		uint32_t base = ll_price(ps, 0);
		uint32_t minl = PARSE_REPMIN;
		for (size_t c = 0; c < nc; c++) {
			for (uint32_t l = minl; l <= ps->cands[c].len; l++) {
				uint32_t pr = base + match_price(ps, ps->cands[c].off, l, opt[0].rep, ll0);
				while (last < l)
					opt[++last].price = PARSE_PRICE_MAX;
				if (pr < opt[l].price)
					opt[l] = (struct node){pr, ps->cands[c].off, l, 0, {0, 0, 0}};
			}
			minl = ps->cands[c].len + 1;
		}
		size_t cur, forced = 0;
		struct cand fm = {0, 0};
		for (cur = 1; cur <= last; cur++) {
			const struct node *pv = &opt[cur - 1];
			uint32_t lit = pv->price + ps->lit_p[ps->buf[ip + cur - 1]] + ll_price(ps, pv->litlen + 1) -
				       ll_price(ps, pv->litlen);
			if (pv->price != PARSE_PRICE_MAX && lit <= opt[cur].price) {
				opt[cur].price = lit;
				opt[cur].mlen = 0;
				opt[cur].off = 0;
				opt[cur].litlen = pv->litlen + 1;
				memcpy(opt[cur].rep, pv->rep, sizeof(pv->rep));
			} else {
				const struct node *from = &opt[cur - opt[cur].mlen];
				memcpy(opt[cur].rep, from->rep, sizeof(from->rep));
				update_rep(opt[cur].rep, opt[cur].off, from->litlen == 0);
			}
			if (cur == last || ip + cur >= be)
				break;
			if (opt[cur + 1].price <= opt[cur].price + PARSE_SKIP)
				continue;
			int cll0 = opt[cur].litlen == 0;
			nc = find(ps, ip + cur, be - ip - cur, opt[cur].rep, cll0);
			if (nc == 0)
				continue;
			lm = ps->cands[nc - 1];
			if (lm.len >= PARSE_SUFF || cur + lm.len >= PARSE_OPT_NUM || lm.len == be - ip - cur) {
				fm = lm;
				forced = cur;
				break;
			}
			base = opt[cur].price + ll_price(ps, 0);
			minl = PARSE_REPMIN;
			for (size_t c = 0; c < nc; c++) {
				for (uint32_t l = minl; l <= ps->cands[c].len; l++) {
					uint32_t pr = base + match_price(ps, ps->cands[c].off, l, opt[cur].rep, cll0);
					size_t at = cur + l;
					while (last < at)
						opt[++last].price = PARSE_PRICE_MAX;
					if (pr < opt[at].price)
						opt[at] = (struct node){pr, ps->cands[c].off, l, 0, {0, 0, 0}};
				}
				minl = ps->cands[c].len + 1;
			}
		}
		/* the path to the end point (forced: cur, then the forced match) */
		size_t endp = forced ? forced : (cur > last ? last : cur);
		/* backtrack, then emit the path's matches in order */
		size_t nm = 0, p = endp;
		while (p > 0) {
			if (opt[p].mlen == 0) {
				p--;
				continue;
			}
			size_t st = p - opt[p].mlen;
			nm++;
			opt[p].price = (uint32_t)st; /* the price is spent: it links to the match start */
			p = st;
		}
		/* forward: walk from 0 collecting match ends in order */
		size_t *ends = ps->ends;
		if (nm) {
			size_t k = nm;
			p = endp;
			while (p > 0) {
				if (opt[p].mlen == 0) {
					p--;
					continue;
				}
				ends[--k] = p;
				p = opt[p].price;
			}
			for (k = 0; k < nm; k++) {
				size_t e = ends[k];
				if (emit(ps, &anchor, ip + e - opt[e].mlen, opt[e].off, opt[e].mlen) != 0)
					return -1;
			}
		}
		if (forced) {
			if (emit(ps, &anchor, ip + forced, fm.off, fm.len) != 0)
				return -1;
			ip = anchor;
		} else {
			ip += endp;
		}
	}
	return push_seq(ps, 0, (uint32_t)(be - anchor), 0);
}

/* Sequences for a block of n bytes, at most: a match per 3 bytes, and a delimiter per
 * zstd block. */
static size_t seq_max(uint64_t n)
{
	return (size_t)(n / PARSE_REPMIN + n / PARSE_BLOCK + 2);
}

/* Hash table sizes for n positions: the constants' sizes, smaller for small inputs (at
 * most one 8-byte head per two positions). */
static void table_logs(size_t n, unsigned *hlog, unsigned *h4log, unsigned *h3log)
{
	unsigned l = 10;
	while (l < PARSE_HLOG && ((size_t)2 << l) < n)
		l++;
	*hlog = l;
	*h4log = l - 2 < PARSE_H4LOG ? l - 2 : PARSE_H4LOG;
	*h3log = l - 4 < PARSE_H3LOG ? l - 4 : PARSE_H3LOG;
}

uint64_t delta_parse_mem(uint64_t pre_len, uint64_t n, unsigned wlog)
{
	unsigned hl, h4l, h3l;
	uint64_t all = pre_len + n;
	table_logs(all > SIZE_MAX ? SIZE_MAX : (size_t)all, &hl, &h4l, &h3l);
	ZSTD_compressionParameters cp = ZSTD_getCParams(1, n, 0);
	cp.windowLog = wlog;
	cp.hashLog = ZSTD_HASHLOG_MIN;
	cp.chainLog = ZSTD_CHAINLOG_MIN;
	cp.searchLog = 1;
	cp.minMatch = PARSE_REPMIN;
	cp.strategy = ZSTD_lazy;
	/* the chain, heads, decode check, sequences (at most one per 3 bytes
	 * plus delimiters), the parse table and the two zstd contexts */
	return all * 4 + (((uint64_t)1 << hl) + ((uint64_t)1 << h4l) + ((uint64_t)1 << h3l)) * 4 + n +
	       seq_max(n) * sizeof(ZSTD_Sequence) +
	       (PARSE_OPT_NUM + PARSE_SUFF + 1) * sizeof(struct node) + ZSTD_estimateCCtxSize_usingCParams(cp) +
	       ZSTD_estimateDCtxSize();
}

fota_status delta_parse_window(const uint8_t *buf, size_t pre_len, size_t n, int level, unsigned wlog, uint8_t *dst,
			       size_t cap, size_t *out_len, const char **why)
{
	fota_status st = FOTA_E_NOMEM;
	struct parser ps = {0};
	uint8_t *chk = NULL;
	ZSTD_CCtx *cc = NULL;
	ZSTD_DCtx *dc = NULL;
	*why = "out of memory";
	*out_len = 0;
	if (n == 0 || pre_len > UINT32_MAX - 16 - n || ((uint64_t)1 << wlog) < pre_len + n) {
		*why = "block or prefix outside the parser's bounds";
		return FOTA_E_ARG;
	}
	table_logs(pre_len + n, &ps.hlog, &ps.h4log, &ps.h3log);
	ps.head = malloc(((size_t)1 << ps.hlog) * sizeof(*ps.head));
	ps.chain = malloc((pre_len + n) * sizeof(*ps.chain));
	ps.head4 = malloc(((size_t)1 << ps.h4log) * sizeof(*ps.head4));
	ps.head3 = malloc(((size_t)1 << ps.h3log) * sizeof(*ps.head3));
	ps.opt = malloc((PARSE_OPT_NUM + PARSE_SUFF + 1) * sizeof(*ps.opt));
	chk = malloc(n);
	ps.capseq = seq_max(n);
	ps.seq = malloc(ps.capseq * sizeof(*ps.seq));
	cc = ZSTD_createCCtx();
	dc = ZSTD_createDCtx();
	if (!ps.head || !ps.chain || !ps.head4 || !ps.head3 || !ps.opt || !chk || !ps.seq || !cc || !dc)
		goto out;
	memset(ps.head, 0xFF, ((size_t)1 << ps.hlog) * sizeof(*ps.head));
	memset(ps.head4, 0xFF, ((size_t)1 << ps.h4log) * sizeof(*ps.head4));
	memset(ps.head3, 0xFF, ((size_t)1 << ps.h3log) * sizeof(*ps.head3));
	ps.buf = buf;
	ps.pre = pre_len;
	ps.end = pre_len + n;
	ps.rep[0] = 1;
	ps.rep[1] = 4;
	ps.rep[2] = 8;
	code_tables(&ps);
	ps.h3from = pre_len > PARSE_DIST3 ? pre_len - PARSE_DIST3 : 0;
	insert_upto(&ps, pre_len);
	for (size_t bs = pre_len; bs < ps.end; bs += PARSE_BLOCK) {
		size_t be = ps.end - bs > PARSE_BLOCK ? bs + PARSE_BLOCK : ps.end;
		if (bs == pre_len)
			init_stats(&ps, bs, be);
		else
			set_prices(&ps);
		clear_stats(&ps);
		if (parse_block(&ps, bs, be) != 0)
			goto out;
	}
	st = FOTA_E_COMPRESS;
	*why = "zstd sequence coding failed";
	size_t r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, (int)wlog);
	/* zstd finds no matches here, but still indexes the prefix: the cheapest tables do
	 * (the strategy barely changes the entropy stage: btultra2 gave esb 84 bytes less) */
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_strategy, ZSTD_lazy);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_hashLog, ZSTD_HASHLOG_MIN);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_chainLog, ZSTD_CHAINLOG_MIN);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_searchLog, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_minMatch, PARSE_REPMIN);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(cc, ZSTD_c_blockDelimiters, ZSTD_sf_explicitBlockDelimiters);
	/* libzstd 1.5.4's validation rejects offsets into a referenced prefix ("External
	 * sequences are not valid"), so the frame is checked by decoding it instead */
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_refPrefix(cc, buf, pre_len);
	if (!ZSTD_isError(r))
		r = ZSTD_compressSequences(cc, dst, cap, ps.seq, ps.nseq, buf + pre_len, n);
	if (ZSTD_isError(r)) {
		*why = ZSTD_getErrorName(r);
		goto out;
	}
	size_t clen = r;
	r = ZSTD_DCtx_refPrefix(dc, buf, pre_len);
	if (!ZSTD_isError(r))
		r = ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, (int)wlog);
	if (!ZSTD_isError(r))
		r = ZSTD_decompressDCtx(dc, chk, n, dst, clen);
	if (ZSTD_isError(r) || r != n || memcmp(chk, buf + pre_len, n) != 0) {
		st = FOTA_E_INTERNAL;
		*why = "sequence-coded block does not decode to its input";
		goto out;
	}
	*out_len = clen;
	st = FOTA_OK;
	*why = NULL;
out:
	free(chk);
	free(ps.head);
	free(ps.chain);
	free(ps.head4);
	free(ps.head3);
	free(ps.opt);
	free(ps.seq);
	ZSTD_freeCCtx(cc);
	ZSTD_freeDCtx(dc);
	return st;
}
