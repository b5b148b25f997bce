/*
 * delta_diff.c: compute an edit script (fota/delta.h) from an old and a new buffer, and
 * the script helpers (check, free, slice).
 *
 * Matching follows bsdiff's scheme: a suffix array of the old image (libdivsufsort)
 * finds, for each position of the new image, the longest exact match in old; a match is
 * taken when it beats the current alignment, then stretched forwards and backwards over
 * approximately equal bytes (so small edits inside a moved block land in the mostly
 * zero diff stream instead of the extra stream). On top of bsdiff:
 *   - the new image is cut into fixed slices (DIFF_SLICE bytes, a constant, never
 *     derived from the thread count) that are matched independently by a pool of
 *     threads and stitched in order, so the script is identical for any thread count;
 *   - on new images up to DIFF_TRIAL_MAX, the threshold by which a new match must beat
 *     the current alignment is tried at two values (bsdiff's 8 and 6) and the script
 *     whose streams code smaller is kept; larger images use 8;
 *   - rejected matches longer than DIFF_SKIP_MIN are skipped over rather than searched
 *     again at every following byte, and the binary search skips known common prefixes;
 *   - positions where no match could be taken are not searched: a Bloom filter of the
 *     old 7-grams shows where no match of 7 bytes starts, either at the position or at
 *     the end of the run the current alignment already matches there;
 *   - the binary search starts in the range of suffixes sharing its first 16 to 24 bits;
 *   - the suffix array and filter are freed before the script is built.
 * Sources of 2 GiB and more use a 64-bit suffix array (libdivsufsort64, loaded at run
 * time).
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <divsufsort.h>

#include "fota/delta.h"
#include "delta_internal.h"

/* Slice of the new image matched as a unit. Part of the output's definition: changing it
 * changes patches (not their validity). */
#define DIFF_SLICE (UINT64_C(1) << 20)

/* Rejected matches longer than this are skipped over but for their last DIFF_SKIP_MIN bytes. */
#define DIFF_SKIP_MIN 32

/* The n-gram filter: a position of new whose next DIFF_GRAM bytes occur nowhere in old
 * has no match longer than DIFF_GRAM - 1, which no threshold below accepts, so it is not
 * searched. The filter is a Bloom filter of the old n-grams (false positives only cost a
 * search) of about DIFF_GRAM_BITS bits per old byte, a power of two, at most 2^32 bits
 * (512 MiB; fewer bits per byte above 512 MiB of old, more false positives). */
#define DIFF_GRAM 7
#define DIFF_GRAM_BITS 8

/* Two match thresholds are tried (see fota_delta_diff) on new images up to this size;
 * larger ones are matched once with bsdiff's 8, where a second pass and the trial
 * encodes would cost more time than the few bytes they save. */
#define DIFF_TRIAL_MAX (UINT64_C(4) << 20)

struct seg {
	uint64_t nstart, ostart, len; /* new[nstart..+len) ~ old[ostart..+len) */
};

struct seglist {
	struct seg *v;
	size_t n, cap;
};

static int seg_push(struct seglist *l, uint64_t n, uint64_t o, uint64_t len)
{
	if (len == 0)
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct seg *nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv)
			return -1;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = (struct seg){n, o, len};
	return 0;
}

struct matcher {
	const uint8_t *old;
	int64_t oldsize;
	const uint8_t *new;
	int64_t newsize;
	const int32_t *sa32;   /* the suffix array: 32-bit entries below 2 GiB, */
	const int64_t *sa64;   /* 64-bit above */
	/* bucket[k] = first SA index whose suffix has key >= k (bucket_key) */
	const int64_t *bucket; /* 2^key_bits + 1 entries */
	unsigned key_bits;
	int64_t gain;          /* a new match must beat the current alignment by this */
	const uint64_t *gram;  /* the n-gram filter (NULL: none), 2^gram_log bits */
	unsigned gram_log;
};

/* How many positions ahead the scan fetches the filter word it will need. */
#define DIFF_GRAM_AHEAD 8

/* The filter's bits for the DIFF_GRAM bytes at p: three bits of one 64-bit word (a
 * blocked Bloom filter: one cache line per lookup). */
static inline uint64_t gram_hash(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < DIFF_GRAM; i++)
		v |= (uint64_t)p[i] << (8 * i);
	v ^= v >> 33; /* a 64-bit finalizer: every output bit depends on every byte */
	v *= UINT64_C(0xff51afd7ed558ccd);
	v ^= v >> 33;
	v *= UINT64_C(0xc4ceb9fe1a85ec53);
	return v ^ (v >> 33);
}

static inline size_t gram_word(uint64_t h, unsigned gram_log)
{
	return (size_t)(h >> (64 - (gram_log - 6)));
}

static inline uint64_t gram_bits(uint64_t h)
{
	return (UINT64_C(1) << (h & 63)) | (UINT64_C(1) << ((h >> 6) & 63)) | (UINT64_C(1) << ((h >> 12) & 63));
}

/* The filter says no n-gram of old equals new[at, at + DIFF_GRAM). */
static inline int gram_absent(const struct matcher *m, int64_t at)
{
	if (!m->gram || at + DIFF_GRAM > m->newsize)
		return 0;
	uint64_t h = gram_hash(m->new + at), b = gram_bits(h);
	return (m->gram[gram_word(h, m->gram_log)] & b) != b;
}

/* The bucket key of a suffix: its first three bytes (zero-padded past its end) as a
 * 24-bit big-endian number, cut to its top key_bits bits. Keys never decrease along the
 * suffix array (a proper prefix sorts first and pads with the smallest byte), so each
 * key owns one contiguous range of it. */
static inline uint32_t bucket_key(const uint8_t *p, int64_t avail, unsigned key_bits)
{
	uint32_t v = (uint32_t)p[0] << 16;
	if (avail > 1)
		v |= (uint32_t)p[1] << 8;
	if (avail > 2)
		v |= p[2];
	return v >> (24 - key_bits);
}

static inline int64_t sa_at(const struct matcher *m, int64_t i)
{
	return m->sa64 ? m->sa64[i] : m->sa32[i];
}

static int64_t matchlen(const uint8_t *a, int64_t alen, const uint8_t *b, int64_t blen)
{
	int64_t n = alen < blen ? alen : blen;
	return n > 0 ? (int64_t)delta_common_len(a, b, (size_t)n) : 0;
}

/* Longest match of new[0..nlen) among old suffixes; returns its length, *pos its offset. */
static int64_t search(const struct matcher *m, const uint8_t *p, int64_t plen, int64_t *pos)
{
	int64_t st, en;
	if (m->oldsize == 0 || plen == 0) {
		*pos = 0;
		return 0;
	}
	if (plen >= 3) {
		uint32_t b = bucket_key(p, 3, m->key_bits);
		st = m->bucket[b];
		en = m->bucket[b + 1];
		if (st == en) {
			/* no suffix shares the key: any match is shorter than 3 bytes, too short
			 * to be taken, so report none */
			*pos = 0;
			return 0;
		}
		en--;
	} else {
		st = 0;
		en = m->oldsize - 1;
	}
	/* Both bounds share a known prefix with p; comparisons start after the shorter one. */
	int64_t lst = 0, len_ = 0;
	while (en - st >= 2) {
		int64_t x = st + (en - st) / 2;
		if (!m->sa64 && en - st >= 16) { /* 32-bit entries (below 2 GiB) */
			/* The search is bound by cache misses on the suffix array and on old.
			 * The next probe is the middle of one half or the other, and the one
			 * after it the middle of a quarter: while this probe's suffix is
			 * compared, fetch the suffixes of both next probes (their entries were
			 * fetched one step ago) and the entries of all four after them. */
			int64_t c0 = st + (x - st) / 2, c1 = x + (en - x) / 2;
			__builtin_prefetch(m->old + m->sa32[c0]);
			__builtin_prefetch(m->old + m->sa32[c1]);
			__builtin_prefetch(m->sa32 + st + (c0 - st) / 2);
			__builtin_prefetch(m->sa32 + c0 + (x - c0) / 2);
			__builtin_prefetch(m->sa32 + x + (c1 - x) / 2);
			__builtin_prefetch(m->sa32 + c1 + (en - c1) / 2);
		}
		int64_t o = sa_at(m, x);
		int64_t n = m->oldsize - o < plen ? m->oldsize - o : plen;
		int64_t k = lst < len_ ? lst : len_;
		if (k > n)
			k = n;
		int64_t l = k + matchlen(m->old + o + k, n - k, p + k, n - k);
		if (l < n ? m->old[o + l] < p[l] : n < plen) {
			st = x;
			lst = l;
		} else {
			en = x;
			len_ = l;
		}
	}
	int64_t ps = sa_at(m, st), pe = sa_at(m, en);
	int64_t a = matchlen(m->old + ps, m->oldsize - ps, p, plen);
	int64_t b = matchlen(m->old + pe, m->oldsize - pe, p, plen);
	if (a >= b) {
		*pos = ps;
		return a;
	}
	*pos = pe;
	return b;
}

/* bsdiff's scan over new[s0, s1), appending segments. */
static int match_slice(const struct matcher *m, int64_t s0, int64_t s1, struct seglist *out)
{
	const uint8_t *old = m->old, *new = m->new;
	int64_t oldsize = m->oldsize;
	int64_t scan = s0, len = 0, pos = 0;
	/* the slice starts on the identity alignment (lastoffset 0): old[s0] faces new[s0] */
	int64_t lastscan = s0, lastpos = s0 < oldsize ? s0 : oldsize, lastoffset = 0;
	/* new[scan, a_end) equals old under the alignment a_off (a_end <= s1) */
	int64_t a_end = s0, a_off = 0;

	while (scan < s1) {
		int64_t oldscore = 0;
		int64_t scsc;
		for (scsc = scan += len; scan < s1; scan++) {
			/* Skip the search where no match could be taken. oldscore counts at least
			 * the aligned run new[scan, a_end), so a match taken here is longer than
			 * that run by more than the threshold (>= DIFF_GRAM - 1): both the n-gram
			 * at scan and the one at a_end must occur in old, and the match must fit
			 * before s1. A skipped position is treated as if the search found none
			 * (a match this short would at most confirm the current alignment). */
			if (a_off != lastoffset || a_end < scan) {
				int64_t o = scan + lastoffset;
				a_off = lastoffset;
				a_end = scan + (o >= 0 && o < oldsize ? matchlen(old + o, oldsize - o, new + scan, s1 - scan) : 0);
			}
			/* the filter word a few positions ahead, which a scan without matches
			 * will ask for (one cache miss per lookup otherwise) */
			if (m->gram && scan + DIFF_GRAM_AHEAD + DIFF_GRAM <= m->newsize)
				__builtin_prefetch(m->gram + gram_word(gram_hash(new + scan + DIFF_GRAM_AHEAD), m->gram_log));
			if (a_end + DIFF_GRAM > s1 || gram_absent(m, a_end) || (a_end != scan && gram_absent(m, scan)))
				len = 0;
			else
				len = search(m, new + scan, s1 - scan, &pos);
			for (; scsc < scan + len; scsc++)
				if (scsc + lastoffset >= 0 && scsc + lastoffset < oldsize &&
				    old[scsc + lastoffset] == new[scsc])
					oldscore++;
			if ((len == oldscore && len != 0) || len > oldscore + m->gain)
				break;
			if (scan + lastoffset >= 0 && scan + lastoffset < oldsize && old[scan + lastoffset] == new[scan])
				oldscore--;
			/* A long match the current alignment already covers: the next positions
			 * would find its tails again, each costing a search. Skip most of it. */
			if (len > DIFF_SKIP_MIN) {
				int64_t end = scan + len - DIFF_SKIP_MIN;
				for (scan++; scan < end; scan++)
					if (scan + lastoffset >= 0 && scan + lastoffset < oldsize &&
					    old[scan + lastoffset] == new[scan])
						oldscore--;
				scan--;
			}
		}
		if (len != oldscore || scan == s1) {
			int64_t s = 0, sf = 0, lenf = 0;
			for (int64_t i = 0; lastscan + i < scan && lastpos + i < oldsize;) {
				if (old[lastpos + i] == new[lastscan + i])
					s++;
				i++;
				if (s * 2 - i > sf * 2 - lenf) {
					sf = s;
					lenf = i;
				}
			}
			int64_t lenb = 0;
			if (scan < s1) {
				int64_t sb = 0;
				s = 0;
				for (int64_t i = 1; scan >= lastscan + i && pos >= i; i++) {
					if (old[pos - i] == new[scan - i])
						s++;
					if (s * 2 - i > sb * 2 - lenb) {
						sb = s;
						lenb = i;
					}
				}
			}
			if (lastscan + lenf > scan - lenb) {
				int64_t overlap = (lastscan + lenf) - (scan - lenb);
				int64_t ss = 0, lens = 0;
				s = 0;
				for (int64_t i = 0; i < overlap; i++) {
					if (new[lastscan + lenf - overlap + i] == old[lastpos + lenf - overlap + i])
						s++;
					if (new[scan - lenb + i] == old[pos - lenb + i])
						s--;
					if (s > ss) {
						ss = s;
						lens = i + 1;
					}
				}
				lenf += lens - overlap;
				lenb -= lens;
			}
			if (seg_push(out, (uint64_t)lastscan, (uint64_t)lastpos, (uint64_t)lenf) != 0)
				return -1;
			lastscan = scan - lenb;
			lastpos = pos - lenb;
			lastoffset = pos - scan;
		}
	}
	return 0;
}

struct pool {
	const struct matcher *m;
	size_t n_slices;
	struct seglist *res;
	int *failed;
	size_t next;
	pthread_mutex_t lock;
};

static void *worker(void *arg)
{
	struct pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t i = p->next++;
		pthread_mutex_unlock(&p->lock);
		if (i >= p->n_slices)
			break;
		int64_t s0 = (int64_t)(i * DIFF_SLICE);
		int64_t s1 = s0 + (int64_t)DIFF_SLICE;
		if (s1 > p->m->newsize)
			s1 = p->m->newsize;
		p->failed[i] = match_slice(p->m, s0, s1, &p->res[i]);
	}
	return NULL;
}

uint64_t fota_delta_sa64_threshold = (UINT64_C(1) << 31) - 1;

/* The 64-bit suffix sort, for sources of 2 GiB and more. libdivsufsort64 is loaded when
 * first needed, so builds and programs that never diff such images do not link it. */
static fota_status sort64(const uint8_t *t, int64_t *sa, uint64_t n, struct fota_error *err)
{
	typedef int32_t (*sort64_fn)(const uint8_t *, int64_t *, int64_t);
	static const char *const names[] = {"libdivsufsort64.so.3", "libdivsufsort64.so"};
	void *h = NULL;
	for (size_t i = 0; i < 2 && !h; i++)
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "delta: diff: a source of %" PRIu64 " bytes needs libdivsufsort64, which cannot be "
				      "loaded: %s", n, dlerror());
	sort64_fn fn;
	void *sym = dlsym(h, "divsufsort64");
	memcpy(&fn, &sym, sizeof(fn));
	fota_status st = FOTA_OK;
	if (!sym)
		st = fota_error_set(err, FOTA_E_INTERNAL, "delta: diff: libdivsufsort64 has no divsufsort64");
	else if (fn(t, sa, (int64_t)n) != 0)
		st = fota_error_set(err, FOTA_E_INTERNAL, "delta: diff: divsufsort64 failed");
	dlclose(h);
	return st;
}

unsigned fota_delta_threads(unsigned requested)
{
	if (requested)
		return requested > 256 ? 256 : requested;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

/* Turn ordered, non-overlapping segments into a script. */
static fota_status build_script(const uint8_t *old, uint64_t old_size, const uint8_t *new, uint64_t new_size,
				const struct seglist *segs, struct fota_delta_script **out, struct fota_error *err)
{
	struct fota_delta_script *s = calloc(1, sizeof(*s));
	if (!s)
		return fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory");
	s->old_size = old_size;
	s->new_size = new_size;
	size_t nc = segs->n + 1;
	s->ctrl = calloc(nc, sizeof(*s->ctrl));
	uint64_t addsum = 0;
	for (size_t i = 0; i < segs->n; i++)
		addsum += segs->v[i].len;
	s->diff = malloc(addsum ? addsum : 1);
	s->extra = malloc(new_size - addsum ? new_size - addsum : 1);
	if (!s->ctrl || !s->diff || !s->extra) {
		fota_delta_script_free(s);
		return fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory for the script");
	}
	uint64_t npos = 0, opos = 0;
	size_t k = 0;
	if ((segs->n == 0 && new_size > 0) || (segs->n && (segs->v[0].nstart > 0 || segs->v[0].ostart > 0))) {
		uint64_t c = segs->n ? segs->v[0].nstart : new_size;
		int64_t seek = segs->n ? (int64_t)segs->v[0].ostart : 0;
		s->ctrl[k++] = (struct fota_delta_ctrl){0, c, seek};
		if (c)
			memcpy(s->extra, new, c);
		s->extra_len = c;
		npos = c;
		opos = (uint64_t)seek;
	}
	for (size_t i = 0; i < segs->n; i++) {
		const struct seg *g = &segs->v[i];
		if (g->nstart != npos || g->ostart != opos) {
			fota_delta_script_free(s);
			return fota_error_set(err, FOTA_E_INTERNAL, "delta: diff: segment %zu out of order", i);
		}
		uint8_t *d = s->diff + s->diff_len;
		for (uint64_t j = 0; j < g->len; j++)
			d[j] = (uint8_t)(new[g->nstart + j] - old[g->ostart + j]);
		s->diff_len += g->len;
		uint64_t nend = g->nstart + g->len;
		uint64_t next_n = i + 1 < segs->n ? segs->v[i + 1].nstart : new_size;
		uint64_t next_o = i + 1 < segs->n ? segs->v[i + 1].ostart : g->ostart + g->len;
		uint64_t c = next_n - nend;
		if (c)
			memcpy(s->extra + s->extra_len, new + nend, c);
		s->extra_len += c;
		s->ctrl[k++] = (struct fota_delta_ctrl){g->len, c, (int64_t)next_o - (int64_t)(g->ostart + g->len)};
		npos = next_n;
		opos = next_o;
	}
	s->n_ctrl = k;
	*out = s;
	return FOTA_OK;
}

/* Match all slices of new (in parallel) into one ordered segment list. */
static fota_status match_all(const struct matcher *m, const struct fota_delta_opts *opts, struct seglist *all,
			     struct fota_error *err)
{
	fota_status st = FOTA_OK;
	uint64_t old_size = (uint64_t)m->oldsize, new_size = (uint64_t)m->newsize;
	size_t n_slices = (size_t)((new_size + DIFF_SLICE - 1) / DIFF_SLICE);
	struct seglist *res = calloc(n_slices ? n_slices : 1, sizeof(*res));
	int *failed = calloc(n_slices ? n_slices : 1, sizeof(*failed));
	if (!res || !failed) {
		st = fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory");
		goto out;
	}
	if (old_size && new_size) {
		unsigned nt = fota_delta_threads(opts ? opts->threads : 0);
		if (nt > n_slices)
			nt = (unsigned)n_slices;
		struct pool p = {.m = m, .n_slices = n_slices, .res = res, .failed = failed};
		pthread_mutex_init(&p.lock, NULL);
		pthread_t th[256];
		unsigned started = 0;
		for (unsigned t = 1; t < nt; t++) {
			if (pthread_create(&th[t], NULL, worker, &p) != 0)
				break;
			started++;
		}
		worker(&p);
		for (unsigned t = 1; t <= started; t++)
			pthread_join(th[t], NULL);
		pthread_mutex_destroy(&p.lock);
		for (size_t i = 0; i < n_slices; i++)
			if (failed[i]) {
				st = fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory in slice %zu", i);
				goto out;
			}
	}
	for (size_t i = 0; i < n_slices; i++)
		for (size_t j = 0; j < res[i].n; j++)
			if (seg_push(all, res[i].v[j].nstart, res[i].v[j].ostart, res[i].v[j].len) != 0) {
				st = fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory");
				goto out;
			}
out:
	if (res)
		for (size_t i = 0; i < n_slices; i++)
			free(res[i].v);
	free(res);
	free(failed);
	return st;
}

fota_status fota_delta_diff(const uint8_t *old_data, uint64_t old_size, const uint8_t *new_data, uint64_t new_size,
			    const struct fota_delta_opts *opts, struct fota_delta_script **out, struct fota_error *err)
{
	fota_status st = FOTA_OK;
	int32_t *sa32 = NULL;
	int64_t *sa64 = NULL, *bucket = NULL;
	uint64_t *gram = NULL;
	unsigned key_bits = 16;
	struct seglist segs[2] = {{0}, {0}};
	*out = NULL;
	if ((old_size && !old_data) || (new_size && !new_data))
		return fota_error_set(err, FOTA_E_ARG, "delta: diff: NULL buffer");
	if (old_size > (UINT64_C(1) << 40) || new_size > (UINT64_C(1) << 40))
		return fota_error_set(err, FOTA_E_LIMIT, "delta: diff: images of %" PRIu64 " and %" PRIu64
				      " bytes; at most 2^40", old_size, new_size);

	if (old_size) {
		/* about one key per 16 to 32 old bytes, 2^12 to 2^24 keys (a small old image
		 * keeps a small table: the diff's peak memory follows its input) */
		unsigned kb = 12;
		while (kb < 24 && (UINT64_C(1) << (kb + 5)) < old_size)
			kb++;
		key_bits = kb;
		bucket = calloc(((size_t)1 << kb) + 1, sizeof(*bucket));
		if (old_size < fota_delta_sa64_threshold && old_size < (UINT64_C(1) << 31) - 1) {
			sa32 = malloc(old_size * sizeof(*sa32));
			if (sa32 && divsufsort(old_data, sa32, (saidx_t)old_size) != 0) {
				st = fota_error_set(err, FOTA_E_INTERNAL, "delta: diff: divsufsort failed");
				goto out;
			}
		} else {
			sa64 = malloc(old_size * sizeof(*sa64));
			if (sa64) {
				st = sort64(old_data, sa64, old_size, err);
				if (st != FOTA_OK)
					goto out;
			}
		}
		if ((!sa32 && !sa64) || !bucket) {
			st = fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory for the suffix array");
			goto out;
		}
		/* bucket[k] = number of suffixes with a smaller key = the first SA index with key
		 * k. The short last suffixes pad with zeros and so may open a range whose other
		 * members are longer; the search tolerates that (it compares real lengths). */
		for (uint64_t i = 0; i < old_size; i++)
			bucket[bucket_key(old_data + i, (int64_t)(old_size - i), kb) + 1]++;
		for (size_t b = 1; b <= ((size_t)1 << kb); b++)
			bucket[b] += bucket[b - 1];
	}
	struct matcher m = {old_data, (int64_t)old_size, new_data, (int64_t)new_size, sa32, sa64, bucket, key_bits, 8,
			    NULL, 0};
	if (old_size >= DIFF_GRAM && new_size) {
		/* the power of two nearest to DIFF_GRAM_BITS per old byte */
		unsigned gl = 12;
		while (gl < 32 && (UINT64_C(3) << (gl - 1)) < old_size * DIFF_GRAM_BITS)
			gl++;
		gram = calloc((size_t)(UINT64_C(1) << (gl - 6)), sizeof(*gram));
		if (!gram) {
			st = fota_error_set(err, FOTA_E_NOMEM, "delta: diff: out of memory for the n-gram filter");
			goto out;
		}
		for (uint64_t i = 0; i + DIFF_GRAM <= old_size; i++) {
			uint64_t h = gram_hash(old_data + i);
			gram[gram_word(h, gl)] |= gram_bits(h);
		}
		m.gram = gram;
		m.gram_log = gl;
	}

	/* Match thresholds: on new images up to DIFF_TRIAL_MAX, bsdiff's 8 and a smaller 6,
	 * keeping the script whose streams code smaller (fota_delta_encode at the caller's
	 * level; 8 is best on some images, 6 on others); above it, 8 alone. The suffix array
	 * and the filter are freed before the scripts are built. */
	static const int64_t gains[] = {8, 6};
	size_t n_gains = old_size && new_size && new_size <= DIFF_TRIAL_MAX ? 2 : 1;
	for (size_t g = 0; g < n_gains; g++) {
		m.gain = gains[g];
		st = match_all(&m, opts, &segs[g], err);
		if (st != FOTA_OK)
			goto out;
	}
	free(sa32);
	free(sa64);
	free(bucket);
	free(gram);
	sa32 = NULL;
	sa64 = NULL;
	bucket = NULL;
	gram = NULL;
	uint64_t best_len = UINT64_MAX;
	for (size_t g = 0; g < n_gains; g++) {
		struct fota_delta_script *cand = NULL;
		st = build_script(old_data, old_size, new_data, new_size, &segs[g], &cand, err);
		free(segs[g].v);
		segs[g].v = NULL;
		if (st != FOTA_OK)
			goto out;
		if (n_gains == 1) {
			*out = cand;
			break;
		}
		uint8_t *pt = NULL;
		size_t pl = 0;
		st = fota_delta_encode(cand, opts, &pt, &pl, err);
		free(pt);
		if (st != FOTA_OK) {
			fota_delta_script_free(cand);
			goto out;
		}
		if (pl < best_len) {
			best_len = pl;
			fota_delta_script_free(*out);
			*out = cand;
		} else {
			fota_delta_script_free(cand);
		}
	}
out:
	if (st != FOTA_OK) {
		fota_delta_script_free(*out);
		*out = NULL;
	}
	for (size_t g = 0; g < 2; g++)
		free(segs[g].v);
	free(sa32);
	free(sa64);
	free(bucket);
	free(gram);
	return st;
}

void fota_delta_script_free(struct fota_delta_script *s)
{
	if (!s)
		return;
	free(s->ctrl);
	free(s->diff);
	free(s->extra);
	free(s);
}

fota_status fota_delta_script_check(const struct fota_delta_script *s, struct fota_error *err)
{
	if (!s)
		return fota_error_set(err, FOTA_E_ARG, "delta: script: NULL");
	if (s->n_ctrl && !s->ctrl)
		return fota_error_set(err, FOTA_E_ARG, "delta: script: NULL control array");
	uint64_t npos = 0, dpos = 0, epos = 0;
	int64_t opos = 0;
	for (size_t i = 0; i < s->n_ctrl; i++) {
		const struct fota_delta_ctrl *c = &s->ctrl[i];
		if (c->add > s->new_size - npos)
			return fota_error_set(err, FOTA_E_PATCH, "delta: script: control %zu: add %" PRIu64
					      " runs past the new size", i, c->add);
		if (c->add && (opos < 0 || (uint64_t)opos > s->old_size || c->add > s->old_size - (uint64_t)opos))
			return fota_error_set(err, FOTA_E_PATCH, "delta: script: control %zu: reads old [%" PRId64
					      ", +%" PRIu64 ") outside the old size %" PRIu64, i, opos, c->add, s->old_size);
		npos += c->add;
		dpos += c->add;
		opos += (int64_t)c->add;
		if (c->copy > s->new_size - npos)
			return fota_error_set(err, FOTA_E_PATCH, "delta: script: control %zu: copy %" PRIu64
					      " runs past the new size", i, c->copy);
		npos += c->copy;
		epos += c->copy;
		if ((c->seek > 0 && opos > INT64_MAX - c->seek) || (c->seek < 0 && opos < INT64_MIN / 2 - c->seek))
			return fota_error_set(err, FOTA_E_PATCH, "delta: script: control %zu: seek overflows", i);
		opos += c->seek;
		if (opos < -(int64_t)(UINT64_C(1) << 62) || opos > (int64_t)(UINT64_C(1) << 62))
			return fota_error_set(err, FOTA_E_PATCH, "delta: script: control %zu: seek out of range", i);
	}
	if (npos != s->new_size)
		return fota_error_set(err, FOTA_E_PATCH, "delta: script: produces %" PRIu64 " bytes, new size %" PRIu64,
				      npos, s->new_size);
	if (dpos != s->diff_len || epos != s->extra_len)
		return fota_error_set(err, FOTA_E_PATCH, "delta: script: diff/extra lengths %" PRIu64 "/%" PRIu64
				      " differ from the controls' %" PRIu64 "/%" PRIu64, s->diff_len, s->extra_len, dpos, epos);
	if ((s->diff_len && !s->diff) || (s->extra_len && !s->extra))
		return fota_error_set(err, FOTA_E_ARG, "delta: script: NULL diff or extra");
	return FOTA_OK;
}

/* ------------------------------------------------------------------ slice */

struct piece {
	uint64_t add, copy;   /* a piece is an add run followed by a copy run */
	uint64_t ostart;      /* old position of the add (when add > 0) */
	uint64_t doff, eoff;  /* offsets into the script's diff and extra */
};

static int cmp_range(const void *x, const void *y)
{
	const struct fota_delta_range *a = x, *b = y;
	return a->off < b->off ? -1 : a->off > b->off;
}

fota_status fota_delta_script_slice(const struct fota_delta_script *s, uint64_t new_off, uint64_t new_len,
				    struct fota_delta_script **out, struct fota_delta_range **ranges,
				    size_t *n_ranges, struct fota_error *err)
{
	fota_status st;
	struct piece *pc = NULL;
	struct fota_delta_range *rg = NULL;
	struct fota_delta_script *o = NULL;
	size_t np = 0, cap = 0, nr = 0;
	*out = NULL;
	*ranges = NULL;
	*n_ranges = 0;
	st = fota_delta_script_check(s, err);
	if (st != FOTA_OK)
		return fota_error_prefix(err, "delta: slice: ");
	if (new_off > s->new_size || new_len > s->new_size - new_off)
		return fota_error_set(err, FOTA_E_ARG, "delta: slice: [%" PRIu64 ", +%" PRIu64 ") outside the new size %"
				      PRIu64, new_off, new_len, s->new_size);
	uint64_t end = new_off + new_len, npos = 0, dpos = 0, epos = 0;
	int64_t opos = 0;
	/* Collect the pieces of each triple that fall inside [new_off, end). */
	for (size_t i = 0; i < s->n_ctrl && npos < end; i++) {
		const struct fota_delta_ctrl *c = &s->ctrl[i];
		struct piece q = {0, 0, 0, 0, 0};
		/* add run [npos, npos + add) */
		uint64_t a0 = npos, a1 = npos + c->add;
		if (a1 > new_off && a0 < end) {
			uint64_t lo = a0 > new_off ? a0 : new_off, hi = a1 < end ? a1 : end;
			q.add = hi - lo;
			q.ostart = (uint64_t)opos + (lo - a0);
			q.doff = dpos + (lo - a0);
		}
		uint64_t c0 = a1, c1 = a1 + c->copy;
		if (c1 > new_off && c0 < end) {
			uint64_t lo = c0 > new_off ? c0 : new_off, hi = c1 < end ? c1 : end;
			q.copy = hi - lo;
			q.eoff = epos + (lo - c0);
		}
		if (q.add || q.copy) {
			if (np == cap) {
				cap = cap ? cap * 2 : 64;
				struct piece *nv = realloc(pc, cap * sizeof(*nv));
				if (!nv)
					goto nomem;
				pc = nv;
			}
			pc[np++] = q;
		}
		npos = c1;
		dpos += c->add;
		epos += c->copy;
		opos += (int64_t)c->add + c->seek;
	}
	/* Old ranges read, sorted and merged. */
	rg = malloc((np ? np : 1) * sizeof(*rg));
	if (!rg)
		goto nomem;
	for (size_t i = 0; i < np; i++)
		if (pc[i].add)
			rg[nr++] = (struct fota_delta_range){pc[i].ostart, pc[i].add};
	qsort(rg, nr, sizeof(*rg), cmp_range);
	size_t m = 0;
	for (size_t i = 0; i < nr; i++) {
		if (m && rg[i].off <= rg[m - 1].off + rg[m - 1].len) {
			uint64_t e = rg[i].off + rg[i].len;
			if (e > rg[m - 1].off + rg[m - 1].len)
				rg[m - 1].len = e - rg[m - 1].off;
		} else {
			rg[m++] = rg[i];
		}
	}
	nr = m;
	/* The sub-script over the concatenation of the ranges. */
	o = calloc(1, sizeof(*o));
	if (!o)
		goto nomem;
	o->new_size = new_len;
	for (size_t i = 0; i < nr; i++)
		o->old_size += rg[i].len;
	o->ctrl = calloc(np + 1, sizeof(*o->ctrl));
	uint64_t dl = 0, el = 0;
	for (size_t i = 0; i < np; i++) {
		dl += pc[i].add;
		el += pc[i].copy;
	}
	o->diff = malloc(dl ? dl : 1);
	o->extra = malloc(el ? el : 1);
	if (!o->ctrl || !o->diff || !o->extra)
		goto nomem;
	/* rebased start of each add: offset within its range plus the range's place */
	uint64_t cur = 0;
	size_t k = 0;
	int64_t *start = malloc((np ? np : 1) * sizeof(*start));
	uint64_t *rbase = malloc((nr ? nr : 1) * sizeof(*rbase));
	if (!start || !rbase) {
		free(start);
		free(rbase);
		goto nomem;
	}
	for (size_t r = 0; r < nr; r++)
		rbase[r] = r ? rbase[r - 1] + rg[r - 1].len : 0;
	for (size_t i = 0; i < np; i++) {
		start[i] = -1;
		if (!pc[i].add)
			continue;
		size_t lo = 0, hi = nr; /* last range with off <= ostart */
		while (hi - lo > 1) {
			size_t mid = (lo + hi) / 2;
			if (rg[mid].off <= pc[i].ostart)
				lo = mid;
			else
				hi = mid;
		}
		start[i] = (int64_t)(rbase[lo] + (pc[i].ostart - rg[lo].off));
	}
	free(rbase);
	/* start[i] becomes the start of the next add after piece i (-1: none) */
	int64_t first = -1;
	for (size_t i = np; i-- > 0;) {
		int64_t here = start[i];
		start[i] = first;
		if (here >= 0)
			first = here;
	}
	/* a leading seek when the first piece adds from a non-zero position */
	if (np && pc[0].add && first != 0)
		o->ctrl[k++] = (struct fota_delta_ctrl){0, 0, first};
	cur = np && pc[0].add ? (uint64_t)first : 0;
	for (size_t i = 0; i < np; i++) {
		if (pc[i].add)
			memcpy(o->diff + o->diff_len, s->diff + pc[i].doff, pc[i].add);
		o->diff_len += pc[i].add;
		if (pc[i].copy)
			memcpy(o->extra + o->extra_len, s->extra + pc[i].eoff, pc[i].copy);
		o->extra_len += pc[i].copy;
		cur += pc[i].add;
		int64_t next = start[i];
		int64_t seek = next < 0 ? 0 : next - (int64_t)cur;
		cur = (uint64_t)((int64_t)cur + seek);
		o->ctrl[k++] = (struct fota_delta_ctrl){pc[i].add, pc[i].copy, seek};
	}
	free(start);
	o->n_ctrl = k;
	st = fota_delta_script_check(o, err);
	if (st != FOTA_OK) {
		st = fota_error_set(err, FOTA_E_INTERNAL, "delta: slice: result fails its check: %s", err ? err->msg : "");
		goto out;
	}
	*out = o;
	*ranges = rg;
	*n_ranges = nr;
	o = NULL;
	rg = NULL;
	goto out;
nomem:
	st = fota_error_set(err, FOTA_E_NOMEM, "delta: slice: out of memory");
out:
	fota_delta_script_free(o);
	free(rg);
	free(pc);
	return st;
}
