/*
 * inplace.c: planning and checking the in-place update scheme (see fota/inplace.h).
 *
 * Planning is a topological sort of "chunk j reads bytes that chunk i overwrites, so j
 * must run before i". Among the chunks free to run, the one earliest in the image runs
 * first, which keeps the order close to sequential. When every remaining chunk is still
 * needed by another (a cycle: data moved both ways), the chunk whose pending readers
 * need the fewest bytes of it runs next, and those bytes are stashed to scratch first.
 * A stash that does not fit within scratch_max turns the reader into a FULL chunk
 * instead. Scratch space is reused as soon as the reader of a stash has run.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fota/inplace.h"

#define PICK_SCAN_MAX 4096 /* above this many chunks, cycles are broken in image order */

enum edge_state { E_ACTIVE, E_STASHED, E_DROPPED, E_SATISFIED };

struct edge {
	size_t i, j;        /* chunk j reads [off, off+len) of chunk i's target */
	size_t read;        /* index of j's read that contains it */
	uint64_t off, len;
	uint64_t scratch;   /* when stashed */
	enum edge_state state;
};

struct slot {
	uint64_t off, len;
	size_t owner;       /* edge index */
};

struct planner {
	struct fota_chunk *ch;
	size_t n;
	struct edge *e;
	size_t ne, cap;
	size_t *by_i, *by_i_start; /* edges grouped by overwriter i */
	size_t *by_j, *by_j_start; /* edges grouped by reader j */
	size_t *pending;
	bool *done, *conv;
	size_t *heap;
	size_t nheap;
	struct slot *slots;        /* live scratch allocations, sorted by offset */
	size_t nslots;
	uint64_t scratch_max, stash_end;
};

/* Index of the chunk whose target contains pos (chunks sorted by target_offset). */
static size_t chunk_at(const struct fota_chunk *ch, size_t n, uint64_t pos)
{
	size_t lo = 0, hi = n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (ch[mid].target_offset <= pos)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int add_edge(struct planner *p, struct edge e)
{
	if (p->ne == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 256;
		struct edge *ne = realloc(p->e, nc * sizeof(*ne));
		if (!ne)
			return -1;
		p->e = ne;
		p->cap = nc;
	}
	p->e[p->ne++] = e;
	return 0;
}

/* Group edge indices by a key (counting sort): start[k]..start[k+1] in idx. */
static int group(const struct planner *p, bool by_reader, size_t **idx, size_t **start)
{
	*idx = malloc((p->ne ? p->ne : 1) * sizeof(size_t));
	*start = calloc(p->n + 1, sizeof(size_t));
	if (!*idx || !*start)
		return -1;
	for (size_t k = 0; k < p->ne; k++)
		(*start)[(by_reader ? p->e[k].j : p->e[k].i) + 1]++;
	for (size_t k = 0; k < p->n; k++)
		(*start)[k + 1] += (*start)[k];
	size_t *fill = malloc((p->n + 1) * sizeof(size_t));
	if (!fill)
		return -1;
	memcpy(fill, *start, (p->n + 1) * sizeof(size_t));
	for (size_t k = 0; k < p->ne; k++)
		(*idx)[fill[by_reader ? p->e[k].j : p->e[k].i]++] = k;
	free(fill);
	return 0;
}

static void heap_push(struct planner *p, size_t v)
{
	size_t k = p->nheap++;
	p->heap[k] = v;
	while (k && p->heap[(k - 1) / 2] > p->heap[k]) {
		size_t t = p->heap[k];
		p->heap[k] = p->heap[(k - 1) / 2];
		p->heap[(k - 1) / 2] = t;
		k = (k - 1) / 2;
	}
}

static size_t heap_pop(struct planner *p)
{
	size_t top = p->heap[0];
	p->heap[0] = p->heap[--p->nheap];
	size_t k = 0;
	for (;;) {
		size_t l = 2 * k + 1, r = l + 1, m = k;
		if (l < p->nheap && p->heap[l] < p->heap[m])
			m = l;
		if (r < p->nheap && p->heap[r] < p->heap[m])
			m = r;
		if (m == k)
			break;
		size_t t = p->heap[k];
		p->heap[k] = p->heap[m];
		p->heap[m] = t;
		k = m;
	}
	return top;
}

/* An edge stops constraining its overwriter. */
static void release(struct planner *p, size_t k, enum edge_state st)
{
	struct edge *e = &p->e[k];
	if (e->state != E_ACTIVE)
		return;
	e->state = st;
	if (--p->pending[e->i] == 0 && !p->done[e->i])
		heap_push(p, e->i);
}

/* First-fit allocation of len bytes of scratch below scratch_max. */
static int scratch_alloc(struct planner *p, uint64_t len, size_t owner, uint64_t *off)
{
	uint64_t pos = 0;
	size_t at = 0;
	for (; at < p->nslots; at++) {
		if (p->slots[at].off - pos >= len)
			break;
		pos = p->slots[at].off + p->slots[at].len;
	}
	if (pos > p->scratch_max || p->scratch_max - pos < len)
		return -1;
	memmove(&p->slots[at + 1], &p->slots[at], (p->nslots - at) * sizeof(*p->slots));
	p->slots[at] = (struct slot){ pos, len, owner };
	p->nslots++;
	if (pos + len > p->stash_end)
		p->stash_end = pos + len;
	*off = pos;
	return 0;
}

static void scratch_free(struct planner *p, size_t owner)
{
	for (size_t k = 0; k < p->nslots; k++)
		if (p->slots[k].owner == owner) {
			memmove(&p->slots[k], &p->slots[k + 1], (p->nslots - k - 1) * sizeof(*p->slots));
			p->nslots--;
			return;
		}
}

/* Reader j gives up its reads: it will be a FULL chunk. */
static void convert(struct planner *p, size_t j)
{
	if (p->conv[j])
		return;
	p->conv[j] = true;
	for (size_t q = p->by_j_start[j]; q < p->by_j_start[j + 1]; q++) {
		size_t k = p->by_j[q];
		if (p->e[k].state == E_STASHED) {
			scratch_free(p, k);
			p->e[k].state = E_DROPPED;
		} else
			release(p, k, E_DROPPED);
	}
}

static uint64_t pending_bytes(const struct planner *p, size_t i)
{
	uint64_t sum = 0;
	for (size_t q = p->by_i_start[i]; q < p->by_i_start[i + 1]; q++) {
		const struct edge *e = &p->e[p->by_i[q]];
		if (e->state == E_ACTIVE)
			sum += e->len;
	}
	return sum;
}

/* Every remaining chunk is needed by another: stash what one of them destroys. */
static void break_cycle(struct planner *p)
{
	size_t best = p->n;
	uint64_t best_cost = UINT64_MAX;
	size_t scanned = 0;
	for (size_t i = 0; i < p->n; i++) {
		if (p->done[i])
			continue;
		if (best == p->n || p->n <= PICK_SCAN_MAX) {
			uint64_t c = pending_bytes(p, i);
			if (c < best_cost) {
				best_cost = c;
				best = i;
			}
		}
		if (++scanned > PICK_SCAN_MAX && best != p->n)
			break;
	}
	if (best == p->n) /* nothing left: the caller reports no progress */
		return;
	size_t i = best;
	for (size_t q = p->by_i_start[i]; q < p->by_i_start[i + 1]; q++) {
		size_t k = p->by_i[q];
		struct edge *e = &p->e[k];
		if (e->state != E_ACTIVE)
			continue;
		uint64_t off;
		if (scratch_alloc(p, e->len, k, &off) == 0) {
			e->scratch = off;
			release(p, k, E_STASHED);
		} else {
			convert(p, e->j);
		}
	}
}

static fota_status rewrite_reads(struct planner *p, size_t j, struct fota_error *err)
{
	struct fota_chunk *c = &p->ch[j];
	size_t extra = 0;
	for (size_t q = p->by_j_start[j]; q < p->by_j_start[j + 1]; q++)
		if (p->e[p->by_j[q]].state == E_STASHED)
			extra += 2;
	if (!extra)
		return FOTA_OK;
	size_t cap = c->n_source_reads + extra;
	struct fota_range *out = calloc(cap, sizeof(*out));
	size_t *mine = malloc((p->by_j_start[j + 1] - p->by_j_start[j] + 1) * sizeof(size_t));
	if (!out || !mine) {
		free(out);
		free(mine);
		return fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
	}
	size_t no = 0;
	for (size_t r = 0; r < c->n_source_reads; r++) {
		/* The stashed pieces of this read, by offset (they are disjoint: targets are). */
		size_t nm = 0;
		for (size_t q = p->by_j_start[j]; q < p->by_j_start[j + 1]; q++) {
			size_t k = p->by_j[q];
			if (p->e[k].state == E_STASHED && p->e[k].read == r) {
				size_t at = nm++;
				while (at && p->e[mine[at - 1]].off > p->e[k].off) {
					mine[at] = mine[at - 1];
					at--;
				}
				mine[at] = k;
			}
		}
		uint64_t pos = c->source_reads[r].offset, end = pos + c->source_reads[r].length;
		for (size_t m = 0; m < nm; m++) {
			const struct edge *e = &p->e[mine[m]];
			if (e->off > pos)
				out[no++] = (struct fota_range){ pos, e->off - pos, false };
			out[no++] = (struct fota_range){ e->scratch, e->len, true };
			pos = e->off + e->len;
		}
		if (pos < end)
			out[no++] = (struct fota_range){ pos, end - pos, false };
	}
	free(mine);
	if (no > FOTA_SOURCE_READS_MAX) {
		free(out);
		return FOTA_E_LIMIT; /* caller converts the chunk */
	}
	free(c->source_reads);
	c->source_reads = out;
	c->n_source_reads = no;
	return FOTA_OK;
}

static fota_status add_stash(struct fota_chunk *c, const struct edge *e, struct fota_error *err)
{
	if (c->n_stash >= FOTA_STASH_MAX)
		return FOTA_E_LIMIT;
	struct fota_stash *ns = realloc(c->stash, (c->n_stash + 1) * sizeof(*ns));
	if (!ns)
		return fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
	c->stash = ns;
	c->stash[c->n_stash++] = (struct fota_stash){ e->off, e->len, e->scratch };
	return FOTA_OK;
}

fota_status fota_inplace_plan(struct fota_chunk *chunks, size_t n, uint64_t scratch_max, bool *to_full,
			      uint64_t *stash_end, struct fota_error *err)
{
	struct planner p = { .ch = chunks, .n = n, .scratch_max = scratch_max };
	fota_status rc = FOTA_OK;
	size_t *order = NULL;
	struct fota_chunk *perm = NULL;
	*stash_end = 0;
	if (n == 0)
		return FOTA_OK;
	for (size_t k = 1; k < n; k++)
		if (chunks[k].target_offset <= chunks[k - 1].target_offset)
			return fota_error_set(err, FOTA_E_ARG, "inplace: chunks must come in target order");

	/* Edges: reader j, overwriter i != j. */
	for (size_t j = 0; j < n; j++) {
		for (size_t r = 0; r < chunks[j].n_source_reads; r++) {
			const struct fota_range *rg = &chunks[j].source_reads[r];
			if (rg->scratch || !rg->length)
				continue;
			uint64_t end = rg->offset + rg->length;
			for (size_t i = chunk_at(chunks, n, rg->offset); i < n && chunks[i].target_offset < end; i++) {
				uint64_t a = rg->offset > chunks[i].target_offset ? rg->offset : chunks[i].target_offset;
				uint64_t tend = chunks[i].target_offset + chunks[i].target_size;
				uint64_t b = end < tend ? end : tend;
				if (i == j || a >= b)
					continue;
				if (add_edge(&p, (struct edge){ .i = i, .j = j, .read = r, .off = a, .len = b - a }) != 0) {
					rc = fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
					goto out;
				}
			}
		}
	}
	p.pending = calloc(n, sizeof(size_t));
	p.done = calloc(n, sizeof(bool));
	p.conv = calloc(n, sizeof(bool));
	p.heap = malloc(n * sizeof(size_t) * 2 + sizeof(size_t));
	p.slots = malloc((p.ne + 1) * sizeof(struct slot));
	order = malloc(n * sizeof(size_t));
	if (!p.pending || !p.done || !p.conv || !p.heap || !p.slots || !order ||
	    group(&p, false, &p.by_i, &p.by_i_start) != 0 || group(&p, true, &p.by_j, &p.by_j_start) != 0) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
		goto out;
	}
	for (size_t k = 0; k < p.ne; k++)
		p.pending[p.e[k].i]++;
	for (size_t i = 0; i < n; i++)
		if (!p.pending[i])
			heap_push(&p, i);

	size_t placed = 0;
	while (placed < n) {
		if (p.nheap == 0)
			break_cycle(&p);
		if (p.nheap == 0) {
			rc = fota_error_set(err, FOTA_E_INTERNAL, "inplace: planner made no progress");
			goto out;
		}
		size_t i = heap_pop(&p);
		if (p.done[i])
			continue;
		p.done[i] = true;
		order[placed++] = i;
		/* The stashes others need from i are copied right before i runs (readers that
		 * already ran read the partition before i touched it, and released theirs). */
		for (size_t q = p.by_i_start[i]; q < p.by_i_start[i + 1]; q++) {
			const struct edge *e = &p.e[p.by_i[q]];
			if (e->state == E_STASHED && !p.conv[e->j] && !p.done[e->j]) {
				rc = add_stash(&chunks[i], e, err);
				if (rc == FOTA_E_LIMIT) {
					convert(&p, e->j);
					rc = FOTA_OK;
				} else if (rc)
					goto out;
			}
		}
		/* i has run: its stashes are no longer needed, and what it read may now be overwritten. */
		for (size_t q = p.by_j_start[i]; q < p.by_j_start[i + 1]; q++) {
			size_t k = p.by_j[q];
			if (p.e[k].state == E_STASHED) {
				scratch_free(&p, k);
				/* Stashed, but i has not run yet: i reads the intact partition instead. */
				if (!p.done[p.e[k].i])
					p.e[k].state = E_SATISFIED;
			}
			release(&p, k, E_SATISFIED);
		}
	}
	for (size_t j = 0; j < n; j++) {
		if (p.conv[j])
			continue;
		rc = rewrite_reads(&p, j, err);
		if (rc == FOTA_E_LIMIT) {
			p.conv[j] = true;
			rc = FOTA_OK;
		} else if (rc)
			goto out;
	}
	perm = malloc(n * sizeof(*perm));
	if (!perm) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
		goto out;
	}
	for (size_t k = 0; k < n; k++) {
		perm[k] = chunks[order[k]];
		to_full[k] = p.conv[order[k]];
		if (to_full[k]) {
			free(perm[k].source_reads);
			perm[k].source_reads = NULL;
			perm[k].n_source_reads = 0;
		}
	}
	memcpy(chunks, perm, n * sizeof(*perm));
	*stash_end = p.stash_end;
out:
	free(perm);
	free(order);
	free(p.e);
	free(p.by_i);
	free(p.by_i_start);
	free(p.by_j);
	free(p.by_j_start);
	free(p.pending);
	free(p.done);
	free(p.conv);
	free(p.heap);
	free(p.slots);
	return rc;
}

bool fota_inplace_self_overlap(const struct fota_chunk *ch)
{
	uint64_t a = ch->target_offset, b = ch->target_offset + ch->target_size;
	for (size_t r = 0; r < ch->n_source_reads; r++) {
		const struct fota_range *rg = &ch->source_reads[r];
		if (!rg->scratch && rg->offset < b && rg->offset + rg->length > a)
			return true;
	}
	return false;
}

uint64_t fota_inplace_stash_end(const struct fota_manifest *m)
{
	uint64_t end = 0;
	for (size_t i = 0; i < m->n_images; i++)
		for (size_t c = 0; c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			for (size_t s = 0; s < ch->n_stash; s++)
				if (ch->stash[s].scratch_offset + ch->stash[s].length > end)
					end = ch->stash[s].scratch_offset + ch->stash[s].length;
			for (size_t r = 0; r < ch->n_source_reads; r++)
				if (ch->source_reads[r].scratch && ch->source_reads[r].offset + ch->source_reads[r].length > end)
					end = ch->source_reads[r].offset + ch->source_reads[r].length;
		}
	return end;
}

uint64_t fota_inplace_scratch_needed(const struct fota_manifest *m)
{
	uint64_t staged = 0;
	for (size_t i = 0; i < m->n_images; i++)
		for (size_t c = 0; c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			if (fota_inplace_self_overlap(ch) && ch->target_size > staged)
				staged = ch->target_size;
		}
	return fota_inplace_stash_end(m) + staged;
}

/* Sorted disjoint interval set, for the bytes the stashes have filled. */
struct ivset {
	struct fota_range *v;
	size_t n, cap;
};

static int ivset_add(struct ivset *s, uint64_t a, uint64_t b)
{
	/* Merge [a, b) with every interval it touches. */
	size_t k = 0;
	while (k < s->n && s->v[k].offset + s->v[k].length < a)
		k++;
	size_t first = k;
	while (k < s->n && s->v[k].offset <= b) {
		if (s->v[k].offset < a)
			a = s->v[k].offset;
		if (s->v[k].offset + s->v[k].length > b)
			b = s->v[k].offset + s->v[k].length;
		k++;
	}
	size_t removed = k - first;
	if (removed == 0) {
		if (s->n == s->cap) {
			size_t nc = s->cap ? s->cap * 2 : 16;
			struct fota_range *nv = realloc(s->v, nc * sizeof(*nv));
			if (!nv)
				return -1;
			s->v = nv;
			s->cap = nc;
		}
		memmove(&s->v[first + 1], &s->v[first], (s->n - first) * sizeof(*s->v));
		s->n++;
	} else if (removed > 1) {
		memmove(&s->v[first + 1], &s->v[k], (s->n - k) * sizeof(*s->v));
		s->n -= removed - 1;
	}
	s->v[first] = (struct fota_range){ a, b - a, true };
	return 0;
}

static bool ivset_covers(const struct ivset *s, uint64_t a, uint64_t b)
{
	for (size_t k = 0; k < s->n; k++)
		if (s->v[k].offset <= a && s->v[k].offset + s->v[k].length >= b)
			return true;
	return false;
}

fota_status fota_inplace_check(const struct fota_image *im, uint64_t stash_end, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	size_t n = im->n_chunks;
	size_t *sorted = malloc((n ? n : 1) * sizeof(size_t));
	bool *written = calloc(n ? n : 1, sizeof(bool));
	size_t *pos_of = malloc((n ? n : 1) * sizeof(size_t));
	struct fota_chunk *view = malloc((n ? n : 1) * sizeof(*view));
	struct ivset filled = { 0 };
	if (!sorted || !written || !pos_of || !view) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
		goto out;
	}
	/* Chunks by target offset (insertion into a sorted index; targets are disjoint). */
	for (size_t k = 0; k < n; k++)
		sorted[k] = k;
	for (size_t k = 1; k < n; k++) {
		size_t v = sorted[k], at = k;
		while (at && im->chunks[sorted[at - 1]].target_offset > im->chunks[v].target_offset) {
			sorted[at] = sorted[at - 1];
			at--;
		}
		sorted[at] = v;
	}
	for (size_t k = 0; k < n; k++) {
		view[k] = im->chunks[sorted[k]];
		pos_of[sorted[k]] = k;
	}
	for (size_t c = 0; c < n; c++) {
		const struct fota_chunk *ch = &im->chunks[c];
		for (size_t s = 0; s < ch->n_stash; s++) {
			const struct fota_stash *st = &ch->stash[s];
			uint64_t end = st->source_offset + st->length;
			if (!im->has_source || st->length == 0 || end < st->source_offset || end > im->source_size ||
			    st->scratch_offset + st->length < st->scratch_offset || st->scratch_offset + st->length > stash_end) {
				rc = fota_error_set(err, FOTA_E_MANIFEST, "inplace: image %s: chunk %zu: stash %zu is out of bounds",
						    im->name, c, s);
				goto out;
			}
			for (size_t i = n ? chunk_at(view, n, st->source_offset) : 0; i < n && view[i].target_offset < end; i++)
				if (written[i] && view[i].target_offset + view[i].target_size > st->source_offset) {
					rc = fota_error_set(err, FOTA_E_MANIFEST,
							    "inplace: image %s: chunk %zu: stash %zu copies bytes an earlier chunk overwrote",
							    im->name, c, s);
					goto out;
				}
			if (ivset_add(&filled, st->scratch_offset, st->scratch_offset + st->length) != 0) {
				rc = fota_error_set(err, FOTA_E_NOMEM, "inplace: out of memory");
				goto out;
			}
		}
		for (size_t r = 0; r < ch->n_source_reads; r++) {
			const struct fota_range *rg = &ch->source_reads[r];
			uint64_t end = rg->offset + rg->length;
			if (rg->scratch) {
				if (!ivset_covers(&filled, rg->offset, end)) {
					rc = fota_error_set(err, FOTA_E_MANIFEST,
							    "inplace: image %s: chunk %zu: read %zu takes scratch bytes no stash wrote",
							    im->name, c, r);
					goto out;
				}
				continue;
			}
			for (size_t i = n ? chunk_at(view, n, rg->offset) : 0; i < n && view[i].target_offset < end; i++)
				if (written[i] && view[i].target_offset + view[i].target_size > rg->offset) {
					rc = fota_error_set(err, FOTA_E_MANIFEST,
							    "inplace: image %s: chunk %zu: read %zu [%" PRIu64 ", +%" PRIu64
							    ") takes bytes an earlier chunk overwrote",
							    im->name, c, r, rg->offset, rg->length);
					goto out;
				}
		}
		written[pos_of[c]] = true;
	}
out:
	free(filled.v);
	free(sorted);
	free(written);
	free(pos_of);
	free(view);
	return rc;
}
