/*
 * Suite formats/inplace: the in-place planner and checker. The strongest test replays a
 * plan on a simulated partition: every chunk must see exactly the old input it was
 * planned against (the concatenation of its original source reads over the pristine
 * source), though earlier chunks have since overwritten the partition.
 */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "fota/inplace.h"

struct sim_case {
	size_t n;
	struct fota_chunk *ch;
	uint8_t **expect;    /* per original chunk index: the old input it needs */
	uint64_t *expect_len;
	uint64_t size;
};

static void add_read(struct fota_chunk *c, uint64_t off, uint64_t len)
{
	c->source_reads = realloc(c->source_reads, (c->n_source_reads + 1) * sizeof(*c->source_reads));
	CU_ASSERT_PTR_NOT_NULL_FATAL(c->source_reads);
	c->source_reads[c->n_source_reads++] = (struct fota_range){ off, len, false };
}

static struct sim_case make_case(size_t n, uint64_t chunk)
{
	struct sim_case k = { .n = n, .size = n * chunk };
	k.ch = calloc(n, sizeof(*k.ch));
	k.expect = calloc(n, sizeof(*k.expect));
	k.expect_len = calloc(n, sizeof(*k.expect_len));
	CU_ASSERT_PTR_NOT_NULL_FATAL(k.ch);
	for (size_t i = 0; i < n; i++) {
		k.ch[i].target_offset = i * chunk;
		k.ch[i].target_size = chunk;
		k.ch[i].method = FOTA_METHOD_DELTA;
		k.ch[i].payload_size = i; /* the original index travels with the chunk */
	}
	return k;
}

/* Record what each chunk reads from the pristine source, before planning. */
static void snapshot(struct sim_case *k, const uint8_t *src)
{
	for (size_t i = 0; i < k->n; i++) {
		uint64_t len = 0;
		for (size_t r = 0; r < k->ch[i].n_source_reads; r++)
			len += k->ch[i].source_reads[r].length;
		k->expect[i] = malloc(len ? len : 1);
		k->expect_len[i] = len;
		uint64_t p = 0;
		for (size_t r = 0; r < k->ch[i].n_source_reads; r++) {
			memcpy(k->expect[i] + p, src + k->ch[i].source_reads[r].offset, k->ch[i].source_reads[r].length);
			p += k->ch[i].source_reads[r].length;
		}
	}
}

/* Apply the plan to a partition holding src; count chunks whose input differs. */
static size_t replay(const struct sim_case *k, const uint8_t *src, uint64_t scratch_size, const bool *to_full,
		     size_t *n_full)
{
	uint8_t *part = malloc(k->size), *scratch = malloc(scratch_size ? scratch_size : 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(part);
	memcpy(part, src, k->size);
	size_t bad = 0;
	*n_full = 0;
	for (size_t c = 0; c < k->n; c++) {
		const struct fota_chunk *ch = &k->ch[c];
		size_t orig = (size_t)ch->payload_size;
		for (size_t s = 0; s < ch->n_stash; s++)
			memcpy(scratch + ch->stash[s].scratch_offset, part + ch->stash[s].source_offset, ch->stash[s].length);
		if (to_full[c]) {
			(*n_full)++;
		} else {
			uint64_t len = 0;
			for (size_t r = 0; r < ch->n_source_reads; r++)
				len += ch->source_reads[r].length;
			uint8_t *in = malloc(len ? len : 1);
			uint64_t p = 0;
			for (size_t r = 0; r < ch->n_source_reads; r++) {
				const struct fota_range *rg = &ch->source_reads[r];
				memcpy(in + p, (rg->scratch ? scratch : part) + rg->offset, rg->length);
				p += rg->length;
			}
			if (len != k->expect_len[orig] || memcmp(in, k->expect[orig], len) != 0)
				bad++;
			free(in);
		}
		/* The chunk overwrites its target with new bytes. */
		memset(part + ch->target_offset, (int)(0xA0 ^ c), ch->target_size);
	}
	free(part);
	free(scratch);
	return bad;
}

static void free_case(struct sim_case *k)
{
	for (size_t i = 0; i < k->n; i++) {
		free(k->ch[i].source_reads);
		free(k->ch[i].stash);
		free(k->expect[i]);
	}
	free(k->ch);
	free(k->expect);
	free(k->expect_len);
}

/* Plan, check with fota_inplace_check, replay; returns chunks forced to FULL. */
static size_t plan_and_replay(struct sim_case *k, uint64_t scratch_max, uint64_t *stash_end_out)
{
	uint8_t *src = malloc(k->size);
	CU_ASSERT_PTR_NOT_NULL_FATAL(src);
	unit_fill_random(src, k->size, 42);
	snapshot(k, src);
	bool *to_full = calloc(k->n, sizeof(bool));
	uint64_t stash_end = 0;
	struct fota_error e;
	CU_ASSERT_EQUAL_FATAL(fota_inplace_plan(k->ch, k->n, scratch_max, to_full, &stash_end, &e), FOTA_OK);
	CU_ASSERT(stash_end <= scratch_max);
	struct fota_image im = { .has_source = true, .source_size = k->size, .target_size = k->size,
				 .n_chunks = k->n, .chunks = k->ch };
	strcpy(im.name, "t");
	for (size_t c = 0; c < k->n; c++)
		if (to_full[c]) {
			k->ch[c].method = FOTA_METHOD_FULL;
			CU_ASSERT_EQUAL(k->ch[c].n_source_reads, 0);
		}
	CU_ASSERT_EQUAL(fota_inplace_check(&im, stash_end, &e), FOTA_OK);
	size_t n_full = 0;
	CU_ASSERT_EQUAL(replay(k, src, stash_end, to_full, &n_full), 0);
	free(src);
	free(to_full);
	if (stash_end_out)
		*stash_end_out = stash_end;
	return n_full;
}

static void test_inplace_no_dependencies_keeps_order(void)
{
	struct sim_case k = make_case(8, 4096);
	for (size_t i = 0; i < 8; i++)
		add_read(&k.ch[i], i * 4096, 4096); /* each chunk patches its own block */
	uint64_t se = 1;
	CU_ASSERT_EQUAL(plan_and_replay(&k, 1 << 20, &se), 0);
	CU_ASSERT_EQUAL(se, 0);
	for (size_t i = 0; i < 8; i++) {
		CU_ASSERT_EQUAL(k.ch[i].target_offset, i * 4096);
		CU_ASSERT_EQUAL(k.ch[i].n_stash, 0);
		CU_ASSERT(fota_inplace_self_overlap(&k.ch[i]));
	}
	free_case(&k);
}

static void test_inplace_forward_move_reorders(void)
{
	/* Data moves forward: chunk i+1 reads what chunk i overwrites, so chunk i+1 must go first. */
	struct sim_case k = make_case(6, 4096);
	for (size_t i = 1; i < 6; i++)
		add_read(&k.ch[i], (i - 1) * 4096, 4096);
	uint64_t se = 1;
	CU_ASSERT_EQUAL(plan_and_replay(&k, 1 << 20, &se), 0);
	CU_ASSERT_EQUAL(se, 0); /* ordering alone suffices */
	CU_ASSERT_EQUAL(k.ch[0].target_offset, 5 * 4096); /* reverse order */
	CU_ASSERT_EQUAL(k.ch[5].target_offset, 0);
	free_case(&k);
}

static void test_inplace_backward_move_keeps_order(void)
{
	struct sim_case k = make_case(6, 4096);
	for (size_t i = 0; i < 5; i++)
		add_read(&k.ch[i], (i + 1) * 4096, 4096);
	uint64_t se = 1;
	CU_ASSERT_EQUAL(plan_and_replay(&k, 1 << 20, &se), 0);
	CU_ASSERT_EQUAL(se, 0);
	CU_ASSERT_EQUAL(k.ch[0].target_offset, 0);
	free_case(&k);
}

static void test_inplace_swap_uses_stash(void)
{
	/* Blocks 0 and 1 swap places: a cycle, broken by stashing one block. */
	struct sim_case k = make_case(2, 4096);
	add_read(&k.ch[0], 4096, 4096);
	add_read(&k.ch[1], 0, 4096);
	uint64_t se = 0;
	CU_ASSERT_EQUAL(plan_and_replay(&k, 1 << 20, &se), 0);
	CU_ASSERT_EQUAL(se, 4096);
	CU_ASSERT_EQUAL(k.ch[0].n_stash + k.ch[1].n_stash, 1);
	free_case(&k);
}

static void test_inplace_swap_without_scratch_goes_full(void)
{
	struct sim_case k = make_case(2, 4096);
	add_read(&k.ch[0], 4096, 4096);
	add_read(&k.ch[1], 0, 4096);
	uint64_t se = 1;
	CU_ASSERT_EQUAL(plan_and_replay(&k, 0, &se), 1);
	CU_ASSERT_EQUAL(se, 0);
	free_case(&k);
}

static void test_inplace_rotation_and_partial_overlaps(void)
{
	/* A 3-cycle with reads straddling chunk edges, plus self reads. */
	struct sim_case k = make_case(3, 8192);
	add_read(&k.ch[0], 8192 + 100, 5000);
	add_read(&k.ch[0], 0, 300);
	add_read(&k.ch[1], 16384 + 7000, 1192);
	add_read(&k.ch[2], 4000, 6000); /* straddles chunks 0 and 1 */
	CU_ASSERT_EQUAL(plan_and_replay(&k, 1 << 20, NULL), 0);
	free_case(&k);
}

static void test_inplace_random_graphs(void)
{
	/* Many random read patterns; with ample scratch nothing goes FULL, with little some may. */
	uint8_t rnd[4096];
	for (uint64_t seed = 1; seed <= 300; seed++) {
		unit_fill_random(rnd, sizeof(rnd), seed);
		size_t n = 4 + rnd[0] % 28, p = 1;
		uint64_t chunk = 4096;
		for (uint64_t budget = 0; budget < 2; budget++) {
			struct sim_case k = make_case(n, chunk);
			p = 1;
			for (size_t i = 0; i < n; i++) {
				size_t reads = rnd[p++ % sizeof(rnd)] % 4;
				for (size_t r = 0; r < reads; r++) {
					uint64_t off = ((uint64_t)rnd[p % sizeof(rnd)] << 8 | rnd[(p + 1) % sizeof(rnd)]) % (n * chunk);
					uint64_t len = 1 + ((uint64_t)rnd[(p + 2) % sizeof(rnd)] << 4) % (n * chunk - off);
					p += 3;
					add_read(&k.ch[i], off, len);
				}
			}
			size_t full = plan_and_replay(&k, budget ? 3000 : (uint64_t)n * chunk * 4, NULL);
			if (!budget)
				CU_ASSERT_EQUAL(full, 0);
			free_case(&k);
		}
	}
}

static void test_inplace_check_rejects_unsafe_orders(void)
{
	struct fota_chunk ch[2] = { 0 };
	struct fota_range r1 = { 0, 100, false };
	ch[0] = (struct fota_chunk){ .target_offset = 0, .target_size = 4096, .method = FOTA_METHOD_FULL, .payload_size = 1 };
	ch[1] = (struct fota_chunk){ .target_offset = 4096, .target_size = 4096, .method = FOTA_METHOD_DELTA,
				     .payload_size = 1, .n_source_reads = 1, .source_reads = &r1 };
	struct fota_image im = { .has_source = true, .source_size = 8192, .target_size = 8192, .n_chunks = 2, .chunks = ch };
	strcpy(im.name, "t");
	struct fota_error e;
	CU_ASSERT_EQUAL(fota_inplace_check(&im, 0, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "chunk 1: read 0"));
	/* a scratch read of bytes no stash wrote */
	struct fota_range r2 = { 0, 100, true };
	ch[1].source_reads = &r2;
	CU_ASSERT_EQUAL(fota_inplace_check(&im, 100, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "no stash wrote"));
	/* stashed by chunk 0 before it writes: fine */
	struct fota_stash st = { 0, 100, 0 };
	ch[0].n_stash = 1;
	ch[0].stash = &st;
	CU_ASSERT_EQUAL(fota_inplace_check(&im, 100, &e), FOTA_OK);
	/* a stash of bytes already overwritten (by chunk 0) made by chunk 1 */
	ch[0].n_stash = 0;
	ch[1].n_stash = 1;
	ch[1].stash = &st;
	CU_ASSERT_EQUAL(fota_inplace_check(&im, 100, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "earlier chunk overwrote"));
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_inplace_no_dependencies_keeps_order);
	UNIT_ADD(s, test_inplace_forward_move_reorders);
	UNIT_ADD(s, test_inplace_backward_move_keeps_order);
	UNIT_ADD(s, test_inplace_swap_uses_stash);
	UNIT_ADD(s, test_inplace_swap_without_scratch_goes_full);
	UNIT_ADD(s, test_inplace_rotation_and_partial_overlaps);
	UNIT_ADD(s, test_inplace_random_graphs);
	UNIT_ADD(s, test_inplace_check_rejects_unsafe_orders);
}
UNIT_SUITE("formats/inplace", add)
