/*
 * slice.c: cut a whole-image edit script into the script of one chunk (see pack.h).
 *
 * Diffing the whole image once finds matches anywhere in the source; each chunk then
 * keeps only the part of the script that produces its target range. The chunk's patch
 * reads a virtual old input made of the source ranges it needs, back to back, so the
 * manifest can list exactly what each chunk reads (which the in-place planner relies on)
 * and the device never reads more of the source than the chunk needs.
 */
#include <stdlib.h>
#include <string.h>

#include "pack.h"

enum op_kind { OP_ADD, OP_COPY };

struct op {
	enum op_kind kind;
	uint64_t old;   /* OP_ADD: old offset (real, then virtual) */
	uint64_t len;
	uint64_t data;  /* offset into the script's diff (ADD) or extra (COPY) stream */
};

static int cmp_range(const void *a, const void *b)
{
	const struct fota_range *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Merge sorted ranges that overlap or touch; then, while over max, join the pair with the smallest gap. */
static size_t merge_ranges(struct fota_range *r, size_t n, size_t max)
{
	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), cmp_range);
	size_t m = 0;
	for (size_t i = 1; i < n; i++) {
		if (r[i].offset <= r[m].offset + r[m].length) {
			uint64_t end = r[i].offset + r[i].length;
			if (end > r[m].offset + r[m].length)
				r[m].length = end - r[m].offset;
		} else
			r[++m] = r[i];
	}
	n = m + 1;
	while (n > max) {
		size_t best = 0;
		uint64_t gap = UINT64_MAX;
		for (size_t i = 0; i + 1 < n; i++) {
			uint64_t g = r[i + 1].offset - (r[i].offset + r[i].length);
			if (g < gap) {
				gap = g;
				best = i;
			}
		}
		r[best].length = r[best + 1].offset + r[best + 1].length - r[best].offset;
		memmove(&r[best + 1], &r[best + 2], (n - best - 2) * sizeof(*r));
		n--;
	}
	return n;
}

/* Virtual offset of real old offset x, inside one of the merged ranges. */
static uint64_t to_virtual(const struct fota_range *r, const uint64_t *base, size_t n, uint64_t x)
{
	size_t lo = 0, hi = n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (r[mid].offset <= x)
			lo = mid;
		else
			hi = mid;
	}
	return base[lo] + (x - r[lo].offset);
}

fota_status pack_slice(const struct fota_delta_script *s, uint64_t off, uint64_t len, size_t max_reads,
		       struct fota_delta_script **out, struct fota_range **reads_out, size_t *n_reads,
		       struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct op *ops = NULL;
	size_t nops = 0, cap = 0;
	struct fota_range *reads = NULL;
	uint64_t *base = NULL;
	struct fota_delta_script *sub = NULL;
	*out = NULL;
	*reads_out = NULL;
	*n_reads = 0;
	uint64_t end = off + len;
	if (end < off || end > s->new_size)
		return fota_error_set(err, FOTA_E_INTERNAL, "slice: [%llu, +%llu) is outside the %llu-byte target",
				      (unsigned long long)off, (unsigned long long)len, (unsigned long long)s->new_size);

	/* Pass 1: the ADD and COPY pieces that fall inside [off, end). */
	uint64_t npos = 0, opos = 0, dpos = 0, epos = 0;
	for (size_t k = 0; k < s->n_ctrl && npos < end; k++) {
		const struct fota_delta_ctrl *c = &s->ctrl[k];
		struct { enum op_kind kind; uint64_t len; } part[2] = { { OP_ADD, c->add }, { OP_COPY, c->copy } };
		for (int p = 0; p < 2; p++) {
			uint64_t a = npos > off ? npos : off, b = npos + part[p].len < end ? npos + part[p].len : end;
			if (a < b) {
				if (nops == cap) {
					size_t nc = cap ? cap * 2 : 64;
					struct op *no = realloc(ops, nc * sizeof(*no));
					if (!no) {
						rc = fota_error_set(err, FOTA_E_NOMEM, "slice: out of memory");
						goto out;
					}
					ops = no;
					cap = nc;
				}
				uint64_t skip = a - npos;
				ops[nops++] = (struct op){ part[p].kind, part[p].kind == OP_ADD ? opos + skip : 0, b - a,
							   (part[p].kind == OP_ADD ? dpos : epos) + skip };
			}
			npos += part[p].len;
			if (part[p].kind == OP_ADD) {
				opos += part[p].len;
				dpos += part[p].len;
			} else
				epos += part[p].len;
		}
		opos = (uint64_t)((int64_t)opos + c->seek);
	}

	/* The old ranges read, merged; their virtual bases. */
	size_t nr = 0;
	reads = malloc((nops ? nops : 1) * sizeof(*reads));
	if (!reads) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "slice: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nops; i++)
		if (ops[i].kind == OP_ADD)
			reads[nr++] = (struct fota_range){ ops[i].old, ops[i].len, false };
	nr = merge_ranges(reads, nr, max_reads ? max_reads : 1);
	base = malloc((nr ? nr : 1) * sizeof(*base));
	if (!base) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "slice: out of memory");
		goto out;
	}
	uint64_t vtotal = 0;
	for (size_t i = 0; i < nr; i++) {
		base[i] = vtotal;
		vtotal += reads[i].length;
	}

	/* Pass 2: the sub-script over the virtual old input. */
	sub = calloc(1, sizeof(*sub));
	if (!sub) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "slice: out of memory");
		goto out;
	}
	sub->old_size = vtotal;
	sub->new_size = len;
	sub->ctrl = calloc(nops + 2, sizeof(*sub->ctrl));
	uint64_t dl = 0, el = 0;
	for (size_t i = 0; i < nops; i++)
		*(ops[i].kind == OP_ADD ? &dl : &el) += ops[i].len;
	sub->diff = malloc(dl ? dl : 1);
	sub->extra = malloc(el ? el : 1);
	if (!sub->ctrl || !sub->diff || !sub->extra) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "slice: out of memory");
		goto out;
	}
	/* Each triple is (ADD?, COPY?, seek to the next ADD). */
	uint64_t vpos = 0;
	struct fota_delta_ctrl *cur = NULL;
	for (size_t i = 0; i < nops; i++) {
		const struct op *o = &ops[i];
		if (o->kind == OP_ADD) {
			uint64_t v = to_virtual(reads, base, nr, o->old);
			if (cur)
				cur->seek = (int64_t)v - (int64_t)vpos;
			else if (v != 0) {
				/* An empty first triple moves the old position to the first ADD. */
				sub->ctrl[sub->n_ctrl++] = (struct fota_delta_ctrl){ 0, 0, (int64_t)v };
			}
			cur = &sub->ctrl[sub->n_ctrl++];
			*cur = (struct fota_delta_ctrl){ o->len, 0, 0 };
			memcpy(sub->diff + sub->diff_len, s->diff + o->data, o->len);
			sub->diff_len += o->len;
			vpos = v + o->len;
		} else {
			if (!cur || cur->copy) {
				cur = &sub->ctrl[sub->n_ctrl++];
				*cur = (struct fota_delta_ctrl){ 0, 0, 0 };
			}
			cur->copy += o->len;
			memcpy(sub->extra + sub->extra_len, s->extra + o->data, o->len);
			sub->extra_len += o->len;
		}
	}
	rc = fota_delta_script_check(sub, err);
	if (rc) {
		fota_error_prefix(err, "slice: ");
		goto out;
	}
	*out = sub;
	sub = NULL;
	*reads_out = reads;
	reads = NULL;
	*n_reads = nr;
out:
	fota_delta_script_free(sub);
	free(reads);
	free(base);
	free(ops);
	return rc;
}
