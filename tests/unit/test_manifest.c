/*
 * Suite formats/manifest: canonical round trips, the exact wire form, and one test per
 * rejection class and per limit (exact limit accepted, limit + 1 refused). Variants of a
 * valid manifest are made either by editing the struct or by editing its JSON tree with
 * jansson, so every case changes exactly one thing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "unit.h"
#include "fota/manifest.h"

/* ---- fixtures ---- */

static void digest_of(const char *label, uint8_t out[FOTA_SHA256_LEN])
{
	fota_sha256(label, strlen(label), out);
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	return d;
}

static void set_chunk(struct fota_chunk *c, uint64_t off, uint64_t size, enum fota_method method,
		      uint64_t payload, const char *label)
{
	char l[64];
	memset(c, 0, sizeof(*c));
	c->target_offset = off;
	c->target_size = size;
	c->method = method;
	c->payload_size = payload;
	snprintf(l, sizeof(l), "%s/target", label);
	digest_of(l, c->target_sha256);
	snprintf(l, sizeof(l), "%s/payload", label);
	digest_of(l, c->payload_sha256);
}

static void set_reads(struct fota_chunk *c, size_t n, const uint64_t *pairs)
{
	c->n_source_reads = n;
	c->source_reads = calloc(n, sizeof(*c->source_reads));
	CU_ASSERT_PTR_NOT_NULL_FATAL(c->source_reads);
	for (size_t i = 0; i < n; i++) {
		c->source_reads[i].offset = pairs[2 * i];
		c->source_reads[i].length = pairs[2 * i + 1];
	}
}

/*
 * A valid A/B manifest with three images: "system" (delta against a source, three
 * chunks, last one short), "boot" (full, no source), "empty" (target of 0 bytes).
 */
static struct fota_manifest *make_base(void)
{
	struct fota_manifest *m = calloc(1, sizeof(*m));
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	m->format_version = 1;
	m->name = xstrdup("acme-phone");
	m->version = xstrdup("2.0.1");
	m->from_version = xstrdup("2.0.0");
	m->n_models = 2;
	m->models = calloc(2, sizeof(char *));
	CU_ASSERT_PTR_NOT_NULL_FATAL(m->models);
	m->models[0] = xstrdup("ACME-X1");
	m->models[1] = xstrdup("ACME-X1 Pro");
	m->security_version = 7;
	m->expires = 1801353600; /* 2027-01-31T00:00:00Z */
	m->mode = FOTA_MODE_AB;
	m->scratch_size = 0;
	m->window_log = 20;
	m->policy.priority = FOTA_PRIO_HIGH;
	m->policy.silent = false;
	m->policy.roaming = FOTA_ROAM_WIFI_ONLY;
	m->policy.install_message = xstrdup("Mise \xc3\xa0 jour \xe2\x9c\x93\nRestart \"now\"?");
	m->n_images = 3;
	m->images = calloc(3, sizeof(*m->images));
	CU_ASSERT_PTR_NOT_NULL_FATAL(m->images);

	struct fota_image *s = &m->images[0];
	strcpy(s->name, "system");
	s->has_source = true;
	s->source_size = 20000;
	digest_of("system/source", s->source_sha256);
	s->target_size = 16484;
	digest_of("system/target", s->target_sha256);
	s->n_chunks = 3;
	s->chunks = calloc(3, sizeof(*s->chunks));
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->chunks);
	set_chunk(&s->chunks[0], 0, 8192, FOTA_METHOD_DELTA, 1234, "s0");
	set_reads(&s->chunks[0], 2, (const uint64_t[]){0, 8192, 12000, 100});
	set_chunk(&s->chunks[1], 8192, 8192, FOTA_METHOD_FULL, 4321, "s1");
	set_chunk(&s->chunks[2], 16384, 100, FOTA_METHOD_DELTA, 77, "s2");
	set_reads(&s->chunks[2], 1, (const uint64_t[]){19900, 100});

	struct fota_image *b = &m->images[1];
	strcpy(b->name, "boot_a-1");
	b->target_size = 4106;
	digest_of("boot/target", b->target_sha256);
	b->n_chunks = 2;
	b->chunks = calloc(2, sizeof(*b->chunks));
	CU_ASSERT_PTR_NOT_NULL_FATAL(b->chunks);
	set_chunk(&b->chunks[0], 0, 4096, FOTA_METHOD_FULL, 900, "b0");
	set_chunk(&b->chunks[1], 4096, 10, FOTA_METHOD_FULL, 19, "b1");

	struct fota_image *e = &m->images[2];
	strcpy(e->name, "empty");
	digest_of("", e->target_sha256);
	return m;
}

/* Drop every image but the first (the A/B base has sourceless images). */
static void keep_first_image(struct fota_manifest *m)
{
	for (size_t i = 1; i < m->n_images; i++) {
		for (size_t c = 0; c < m->images[i].n_chunks; c++)
			free(m->images[i].chunks[c].source_reads);
		free(m->images[i].chunks);
	}
	m->n_images = 1;
}

static bool manifest_equal(const struct fota_manifest *a, const struct fota_manifest *b)
{
#define STREQ(x, y) (((x) == NULL && (y) == NULL) || ((x) && (y) && strcmp((x), (y)) == 0))
	if (a->format_version != b->format_version || !STREQ(a->name, b->name) ||
	    !STREQ(a->version, b->version) || !STREQ(a->from_version, b->from_version) ||
	    a->n_models != b->n_models || a->security_version != b->security_version ||
	    a->expires != b->expires || a->mode != b->mode || a->scratch_size != b->scratch_size ||
	    a->window_log != b->window_log || a->policy.priority != b->policy.priority ||
	    a->policy.silent != b->policy.silent || a->policy.roaming != b->policy.roaming ||
	    !STREQ(a->policy.install_message, b->policy.install_message) || a->n_images != b->n_images)
		return false;
	for (size_t i = 0; i < a->n_models; i++)
		if (!STREQ(a->models[i], b->models[i]))
			return false;
	for (size_t i = 0; i < a->n_images; i++) {
		const struct fota_image *x = &a->images[i], *y = &b->images[i];
		if (strcmp(x->name, y->name) || x->has_source != y->has_source ||
		    x->source_size != y->source_size || memcmp(x->source_sha256, y->source_sha256, 32) ||
		    x->target_size != y->target_size || memcmp(x->target_sha256, y->target_sha256, 32) ||
		    x->n_chunks != y->n_chunks)
			return false;
		for (size_t c = 0; c < x->n_chunks; c++) {
			const struct fota_chunk *p = &x->chunks[c], *q = &y->chunks[c];
			if (p->target_offset != q->target_offset || p->target_size != q->target_size ||
			    memcmp(p->target_sha256, q->target_sha256, 32) || p->method != q->method ||
			    p->payload_size != q->payload_size ||
			    memcmp(p->payload_sha256, q->payload_sha256, 32) ||
			    p->n_source_reads != q->n_source_reads)
				return false;
			for (size_t r = 0; r < p->n_source_reads; r++)
				if (p->source_reads[r].offset != q->source_reads[r].offset ||
				    p->source_reads[r].length != q->source_reads[r].length)
					return false;
		}
	}
	return true;
#undef STREQ
}

/* The base manifest's canonical bytes (malloc'd). */
static char *base_json(size_t *len)
{
	struct fota_manifest *m = make_base();
	char *out = NULL;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &out, len, &e), FOTA_OK);
	fota_manifest_free(m);
	return out;
}

/* Parse text; expect code; when code is an error, expect msg_part in the message. */
static void expect_parse(const char *text, size_t len, fota_status code, const char *msg_part)
{
	struct fota_manifest *m = (struct fota_manifest *)1;
	struct fota_error e = {0};
	fota_status rc = fota_manifest_parse((const uint8_t *)text, len, &m, &e);
	CU_ASSERT_EQUAL(rc, code);
	if (rc != code)
		fprintf(stderr, "\n  expected %d got %d: %s\n  for: %.300s\n", code, rc, e.msg, text);
	if (code == FOTA_OK) {
		CU_ASSERT_PTR_NOT_NULL(m);
	} else {
		CU_ASSERT_PTR_NULL(m);
		if (msg_part && !strstr(e.msg, msg_part)) {
			CU_FAIL("message does not name the field");
			fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", e.msg, msg_part);
		}
	}
	fota_manifest_free(m == (struct fota_manifest *)1 ? NULL : m);
}

static void expect_parse_str(const char *text, fota_status code, const char *msg_part)
{
	expect_parse(text, strlen(text), code, msg_part);
}

/* Base JSON with the first occurrence of `from` replaced by `to`. */
static void expect_variant(const char *from, const char *to, fota_status code, const char *msg_part)
{
	size_t len;
	char *base = base_json(&len);
	char *at = strstr(base, from);
	CU_ASSERT_PTR_NOT_NULL_FATAL(at);
	size_t nf = strlen(from), nt = strlen(to);
	char *v = malloc(len - nf + nt + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(v);
	size_t pre = (size_t)(at - base);
	memcpy(v, base, pre);
	memcpy(v + pre, to, nt);
	memcpy(v + pre + nt, at + nf, len - pre - nf + 1);
	expect_parse(v, len - nf + nt, code, msg_part);
	free(v);
	free(base);
}

static void expect_validate(struct fota_manifest *m, fota_status code, const char *msg_part)
{
	struct fota_error e = {0};
	fota_status rc = fota_manifest_validate(m, &e);
	CU_ASSERT_EQUAL(rc, code);
	if (rc != code)
		fprintf(stderr, "\n  expected %d got %d: %s\n", code, rc, e.msg);
	if (code != FOTA_OK && msg_part && !strstr(e.msg, msg_part)) {
		CU_FAIL("message does not name the field");
		fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", e.msg, msg_part);
	}
	/* the writer refuses exactly what validate refuses */
	char *out = NULL;
	size_t len = 0;
	fota_status src = fota_manifest_serialize(m, &out, &len, &e);
	if (code != FOTA_OK) {
		CU_ASSERT_EQUAL(src, code);
		CU_ASSERT_PTR_NULL(out);
	}
	free(out);
	fota_manifest_free(m);
}

/* ---- round trips and the wire form ---- */

static void test_manifest_round_trip(void)
{
	struct fota_manifest *m = make_base(), *p = NULL, *inp = NULL;
	struct fota_error e = {0};
	char *a = NULL, *b = NULL, *c = NULL;
	size_t la, lb, lc;
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &a, &la, &e), FOTA_OK);
	CU_ASSERT_EQUAL(strlen(a), la);
	CU_ASSERT_EQUAL(a[la - 1], '\n');
	CU_ASSERT_PTR_EQUAL(strchr(a, '\n'), a + la - 1); /* the only newline is the last byte */
	CU_ASSERT_EQUAL(fota_manifest_serialize(m, &b, &lb, &e), FOTA_OK);
	CU_ASSERT_EQUAL(la, lb);
	CU_ASSERT_EQUAL(memcmp(a, b, la), 0);
	CU_ASSERT_EQUAL_FATAL(fota_manifest_parse((const uint8_t *)a, la, &p, &e), FOTA_OK);
	CU_ASSERT(manifest_equal(m, p));
	CU_ASSERT_EQUAL(fota_manifest_serialize(p, &c, &lc, &e), FOTA_OK);
	CU_ASSERT_EQUAL(la, lc);
	CU_ASSERT_EQUAL(memcmp(a, c, la), 0);
	CU_ASSERT_EQUAL(fota_manifest_chunk_count(p), 5);
	CU_ASSERT_EQUAL(fota_manifest_payload_total(p), 1234u + 4321 + 77 + 900 + 19);
	/* an in-place package whose chunks are not in offset order */
	free(c);
	c = NULL;
	m->mode = FOTA_MODE_INPLACE;
	m->scratch_size = 65536;
	m->n_images = 1;
	/* order s0, s2, s1: s0 reads [12000,+100) of s1's target before s1 overwrites it */
	struct fota_chunk t = m->images[0].chunks[1];
	m->images[0].chunks[1] = m->images[0].chunks[2];
	m->images[0].chunks[2] = t;
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &c, &lc, &e), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(fota_manifest_parse((const uint8_t *)c, lc, &inp, &e), FOTA_OK);
	CU_ASSERT(manifest_equal(m, inp));
	CU_ASSERT_EQUAL(inp->images[0].chunks[1].target_offset, 16384);
	/* order s1, s2, s0 is unsafe: s0 would read bytes s1 already overwrote */
	char *bad = NULL;
	size_t lbad = 0;
	t = m->images[0].chunks[0];
	m->images[0].chunks[0] = m->images[0].chunks[2];
	m->images[0].chunks[2] = t;
	CU_ASSERT_EQUAL(fota_manifest_serialize(m, &bad, &lbad, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "takes bytes an earlier chunk overwrote"));
	free(bad);
	/* ... unless those bytes are stashed first and read back from scratch */
	struct fota_chunk *s1 = &m->images[0].chunks[0], *s0 = &m->images[0].chunks[2];
	s1->n_stash = 1;
	s1->stash = calloc(1, sizeof(*s1->stash));
	CU_ASSERT_PTR_NOT_NULL_FATAL(s1->stash);
	s1->stash[0] = (struct fota_stash){ 12000, 100, 0 };
	s0->source_reads[1] = (struct fota_range){ 0, 100, true };
	m->scratch_size = 100 + 8192; /* stash region + staging for s0, which reads its own target */
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &bad, &lbad, &e), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(bad, "\"stash\":[[12000,100,0]]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(bad, "[0,100,\"scratch\"]"));
	struct fota_manifest *st = NULL;
	CU_ASSERT_EQUAL_FATAL(fota_manifest_parse((const uint8_t *)bad, lbad, &st, &e), FOTA_OK);
	CU_ASSERT_EQUAL(st->images[0].chunks[0].n_stash, 1);
	CU_ASSERT(st->images[0].chunks[2].source_reads[1].scratch);
	fota_manifest_free(st);
	free(bad);
	m->scratch_size = 100 + 8191;
	CU_ASSERT_EQUAL(fota_manifest_serialize(m, &bad, &lbad, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "the in-place scheme needs 8292"));
	free(bad);
	m->n_images = 3; /* so free releases every image */
	free(a);
	free(b);
	free(c);
	fota_manifest_free(p);
	fota_manifest_free(inp);
	fota_manifest_free(m);
}

static void test_manifest_canonical_bytes(void)
{
	/* The smallest useful manifest, written out by hand: key order, compact, one newline. */
	static const char golden[] =
		"{\"format_version\":1,\"package\":{\"name\":\"p\",\"version\":\"1\",\"from_version\":null},"
		"\"devices\":{\"models\":[],\"security_version\":0},\"expires\":null,\"mode\":\"ab\","
		"\"scratch_size\":0,\"window_log\":10,\"policy\":{\"priority\":\"low\",\"silent\":true,"
		"\"roaming\":\"allow\",\"install_message\":null},\"images\":[{\"name\":\"a\",\"source\":null,"
		"\"target\":{\"size\":1,\"sha256\":\"" "0101010101010101010101010101010101010101010101010101010101010101"
		"\"},\"chunks\":[{\"target_offset\":0,\"target_size\":1,\"target_sha256\":\""
		"0101010101010101010101010101010101010101010101010101010101010101\",\"method\":\"full\","
		"\"payload_size\":10,\"payload_sha256\":\""
		"abababababababababababababababababababababababababababababababab\",\"source_reads\":[]}]}]}\n";
	struct fota_chunk ch = {.target_offset = 0, .target_size = 1, .method = FOTA_METHOD_FULL, .payload_size = 10};
	memset(ch.target_sha256, 0x01, 32);
	memset(ch.payload_sha256, 0xab, 32);
	struct fota_image im = {.name = "a", .target_size = 1, .n_chunks = 1, .chunks = &ch};
	memset(im.target_sha256, 0x01, 32);
	struct fota_manifest m = {.format_version = 1, .name = "p", .version = "1", .window_log = 10,
				  .policy = {.silent = true}, .n_images = 1, .images = &im};
	char *out = NULL;
	size_t len = 0;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(&m, &out, &len, &e), FOTA_OK);
	CU_ASSERT_EQUAL(len, sizeof(golden) - 1);
	CU_ASSERT_STRING_EQUAL(out, golden);
	free(out);
	/* Any valid JSON spelling parses to the same thing: whitespace, key order, escapes. */
	expect_parse_str("\n { \"package\" : {\"from_version\":null,\"version\":\"1\",\"name\":\"\\u0070\"},"
			 "\"format_version\":1,\"devices\":{\"security_version\":0,\"models\":[]},"
			 "\"expires\":null,\"mode\":\"ab\",\"scratch_size\":0,\"window_log\":10,\"policy\":"
			 "{\"priority\":\"low\",\"silent\":true,\"roaming\":\"allow\",\"install_message\":null},"
			 "\"images\":[{\"name\":\"a\",\"source\":null,\"target\":{\"size\":1,\"sha256\":\""
			 "0101010101010101010101010101010101010101010101010101010101010101\"},\"chunks\":[{"
			 "\"target_offset\":0,\"target_size\":1,\"target_sha256\":\""
			 "0101010101010101010101010101010101010101010101010101010101010101\",\"method\":\"full\","
			 "\"payload_size\":10,\"payload_sha256\":\""
			 "abababababababababababababababababababababababababababababababab\",\"source_reads\":[]}]}]}\t\r\n",
			 FOTA_OK, NULL);
}

static void test_manifest_big_integers(void)
{
	/* beyond 2^53 is fine where the limits allow it */
	struct fota_manifest *m = make_base(), *p = NULL;
	m->security_version = (1ull << 60) + 1;
	char *a = NULL;
	size_t la;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &a, &la, &e), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(a, "\"security_version\":1152921504606846977"));
	CU_ASSERT_EQUAL_FATAL(fota_manifest_parse((const uint8_t *)a, la, &p, &e), FOTA_OK);
	CU_ASSERT_EQUAL(p->security_version, (1ull << 60) + 1);
	free(a);
	fota_manifest_free(p);
	m->security_version = (uint64_t)INT64_MAX + 1;
	expect_validate(m, FOTA_E_LIMIT, "devices.security_version");
	expect_variant("\"security_version\":7", "\"security_version\":9223372036854775807", FOTA_OK, NULL);
	expect_variant("\"security_version\":7", "\"security_version\":9223372036854775808", FOTA_E_MANIFEST,
		       "invalid JSON");
}

/* ---- generic schema checks over every key of the JSON tree ---- */

enum mutation { MUT_DELETE, MUT_UNKNOWN_KEY, MUT_WRONG_TYPE, MUT_FLOAT, MUT_NEGATIVE };

static size_t mutations_checked;

static void check_mutant(json_t *root, const char *path, const char *expect_msg, fota_status code)
{
	char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	char part[160];
	snprintf(part, sizeof(part), "%s: %s", path, expect_msg);
	expect_parse_str(text, code, part);
	mutations_checked++;
	free(text);
}

static void join_path(char *out, size_t n, const char *parent, const char *key)
{
	snprintf(out, n, "%s%s%s", parent, parent[0] ? "." : "", key);
}

/* Apply `mut` to every member of every object reachable through objects and first array elements. */
static void walk(json_t *root, json_t *obj, const char *path, enum mutation mut)
{
	char p[160];
	if (mut == MUT_UNKNOWN_KEY) {
		CU_ASSERT_EQUAL(json_object_set_new(obj, "zz_extra", json_integer(1)), 0);
		join_path(p, sizeof(p), path, "zz_extra");
		check_mutant(root, p, "unknown key", FOTA_E_MANIFEST);
		json_object_del(obj, "zz_extra");
	}
	/* keys first: the object is edited while we go */
	size_t n = json_object_size(obj), k = 0;
	char **keys = calloc(n, sizeof(char *));
	CU_ASSERT_PTR_NOT_NULL_FATAL(keys);
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val) keys[k++] = xstrdup(key);
	for (k = 0; k < n; k++) {
		key = keys[k];
		val = json_object_get(obj, key);
		json_incref(val);
		join_path(p, sizeof(p), path, key);
		if (mut == MUT_DELETE) {
			json_object_del(obj, key);
			check_mutant(root, p, "missing required key", FOTA_E_MANIFEST);
			json_object_set(obj, key, val);
		} else if (mut == MUT_WRONG_TYPE) {
			json_object_set_new(obj, key, json_is_boolean(val) ? json_integer(0) : json_true());
			check_mutant(root, p, "expected", FOTA_E_MANIFEST);
			json_object_set(obj, key, val);
		} else if ((mut == MUT_FLOAT || mut == MUT_NEGATIVE) && json_is_integer(val)) {
			json_object_set_new(obj, key,
					    mut == MUT_FLOAT ? json_real((double)json_integer_value(val))
							     : json_integer(-1));
			check_mutant(root, p, mut == MUT_FLOAT ? "expected an unsigned integer" : "negative number",
				     FOTA_E_MANIFEST);
			json_object_set(obj, key, val);
		}
		if (json_is_object(val)) {
			walk(root, val, p, mut);
		} else if (json_is_array(val) && json_array_size(val) > 0) {
			json_t *el = json_array_get(val, 0);
			char pe[176];
			snprintf(pe, sizeof(pe), "%s[0]", p);
			if (json_is_object(el)) {
				walk(root, el, pe, mut);
			} else if (json_is_string(el) && mut == MUT_WRONG_TYPE) {
				json_incref(el);
				json_array_set_new(val, 0, json_integer(3));
				check_mutant(root, pe, "expected a string", FOTA_E_MANIFEST);
				json_array_set_new(val, 0, el);
			} else if (json_is_array(el) && (mut == MUT_FLOAT || mut == MUT_NEGATIVE)) {
				/* a source_reads pair */
				json_int_t keep = json_integer_value(json_array_get(el, 0));
				json_array_set_new(el, 0, mut == MUT_FLOAT ? json_real(1.5) : json_integer(-5));
				check_mutant(root, pe, mut == MUT_FLOAT ? "expected an unsigned integer" : "negative",
					     FOTA_E_MANIFEST);
				json_array_set_new(el, 0, json_integer(keep));
			}
		}
		json_decref(val);
		free(keys[k]);
	}
	free(keys);
}

static void run_walk(enum mutation mut, size_t min_cases)
{
	size_t len;
	char *base = base_json(&len);
	json_error_t je;
	json_t *root = json_loadb(base, len, 0, &je);
	CU_ASSERT_PTR_NOT_NULL_FATAL(root);
	mutations_checked = 0;
	walk(root, root, "", mut);
	CU_ASSERT(mutations_checked >= min_cases);
	/* the tree is back to the original after every mutation */
	json_t *fresh = json_loadb(base, len, 0, &je);
	CU_ASSERT(json_equal(root, fresh));
	json_decref(fresh);
	json_decref(root);
	free(base);
}

/* Every required key, at every level, missing. 9 + 3 + 2 + 4 + 4 + 2 + 2 + 7 keys. */
static void test_manifest_missing_each_field(void) { run_walk(MUT_DELETE, 33); }
/* An unknown key in each of the 8 kinds of object. */
static void test_manifest_unknown_key_each_level(void) { run_walk(MUT_UNKNOWN_KEY, 8); }
/* Every value replaced by one of the wrong JSON type. */
static void test_manifest_wrong_type_each_field(void) { run_walk(MUT_WRONG_TYPE, 34); }
/* Every integer written as a float (1.0 is not an integer here). */
static void test_manifest_float_numbers(void) { run_walk(MUT_FLOAT, 10); }
/* Every integer negative. */
static void test_manifest_negative_numbers(void) { run_walk(MUT_NEGATIVE, 10); }

/* ---- JSON-level rejections ---- */

static void test_manifest_duplicate_keys(void)
{
	expect_variant("\"mode\":\"ab\"", "\"mode\":\"ab\",\"mode\":\"ab\"", FOTA_E_MANIFEST, "duplicate");
	expect_variant("\"silent\":false", "\"silent\":false,\"silent\":true", FOTA_E_MANIFEST, "duplicate");
	expect_variant("\"method\":\"full\"", "\"method\":\"full\",\"method\":\"delta\"", FOTA_E_MANIFEST,
		       "duplicate");
}

static void test_manifest_format_version(void)
{
	expect_variant("\"format_version\":1", "\"format_version\":2", FOTA_E_UNSUPPORTED, "format_version: 2");
	/* judged before the keys a future version would add */
	expect_variant("\"format_version\":1", "\"format_version\":2,\"signature_scheme\":\"x\"",
		       FOTA_E_UNSUPPORTED, "format_version");
	expect_variant("\"format_version\":1", "\"format_version\":0", FOTA_E_UNSUPPORTED, "format_version");
	expect_variant("\"format_version\":1", "\"format_version\":\"1\"", FOTA_E_MANIFEST, "format_version");
	struct fota_manifest *m = make_base();
	m->format_version = 2;
	expect_validate(m, FOTA_E_UNSUPPORTED, "format_version");
}

static void test_manifest_not_an_object(void)
{
	expect_parse_str("[]", FOTA_E_MANIFEST, NULL);
	expect_parse_str("[{\"format_version\":1}]", FOTA_E_MANIFEST, NULL);
	expect_parse_str("1", FOTA_E_MANIFEST, NULL);
	expect_parse_str("\"x\"", FOTA_E_MANIFEST, NULL);
	expect_parse_str("null", FOTA_E_MANIFEST, NULL);
	expect_parse_str("", FOTA_E_MANIFEST, NULL);
	expect_parse(NULL, 0, FOTA_E_MANIFEST, NULL);
	expect_parse_str("{}", FOTA_E_MANIFEST, "format_version: missing");
}

static void test_manifest_truncated_and_trailing(void)
{
	size_t len;
	char *base = base_json(&len);
	/* every proper prefix is refused (the final newline is optional whitespace) */
	size_t refused = 0;
	for (size_t n = 0; n < len - 1; n++) {
		struct fota_manifest *m = NULL;
		struct fota_error e = {0};
		if (fota_manifest_parse((const uint8_t *)base, n, &m, &e) == FOTA_E_MANIFEST && !m)
			refused++;
		fota_manifest_free(m);
	}
	CU_ASSERT_EQUAL(refused, len - 1);
	expect_parse(base, len - 1, FOTA_OK, NULL);
	/* trailing garbage after the object */
	char *t = malloc(len + 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	memcpy(t, base, len);
	memcpy(t + len, "{}", 3);
	expect_parse(t, len + 2, FOTA_E_MANIFEST, "invalid JSON");
	/* a NUL byte in the buffer */
	t[len] = '\0';
	expect_parse(t, len + 1, FOTA_E_MANIFEST, "invalid JSON");
	free(t);
	free(base);
}

static void test_manifest_embedded_nul_and_bad_utf8(void)
{
	expect_variant("\"name\":\"acme-phone\"", "\"name\":\"acme\\u0000phone\"", FOTA_E_MANIFEST, NULL);
	expect_variant("\"ACME-X1\"", "\"ACME\\u0000X1\"", FOTA_E_MANIFEST, NULL);
	expect_variant("\"mode\":\"ab\"", "\"mode\":\"ab\\u0000\"", FOTA_E_MANIFEST, NULL);
	expect_variant("\"name\":\"acme-phone\"", "\"name\":\"acme\xff\"", FOTA_E_MANIFEST, "invalid JSON");
}

/* ---- field formats ---- */

static void test_manifest_bad_hex(void)
{
	size_t len;
	char *base = base_json(&len);
	char hex[65];
	uint8_t d[32];
	digest_of("s1/payload", d);
	fota_hex_encode(d, 32, hex);
	char from[128], to[128];
	snprintf(from, sizeof(from), "\"payload_sha256\":\"%s\"", hex);
	CU_ASSERT_PTR_NOT_NULL_FATAL(strstr(base, from));
	free(base);
	/* uppercase */
	snprintf(to, sizeof(to), "\"payload_sha256\":\"%s\"", hex);
	for (char *c = to + 18; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	expect_variant(from, to, FOTA_E_MANIFEST, "images[0].chunks[1].payload_sha256: expected 64 lowercase hex digits");
	/* 63 digits, 65 digits, a non-hex digit */
	snprintf(to, sizeof(to), "\"payload_sha256\":\"%.63s\"", hex);
	expect_variant(from, to, FOTA_E_MANIFEST, "images[0].chunks[1].payload_sha256");
	snprintf(to, sizeof(to), "\"payload_sha256\":\"%s0\"", hex);
	expect_variant(from, to, FOTA_E_MANIFEST, "images[0].chunks[1].payload_sha256");
	snprintf(to, sizeof(to), "\"payload_sha256\":\"g%.63s\"", hex);
	expect_variant(from, to, FOTA_E_MANIFEST, "images[0].chunks[1].payload_sha256");
	digest_of("system/source", d);
	fota_hex_encode(d, 32, hex);
	snprintf(from, sizeof(from), "\"sha256\":\"%s\"", hex);
	snprintf(to, sizeof(to), "\"sha256\":\" %.63s\"", hex);
	expect_variant(from, to, FOTA_E_MANIFEST, "images[0].source.sha256: expected 64 lowercase hex digits");
}

static void test_manifest_time_parse_format(void)
{
	int64_t t = -5;
	char buf[21];
	CU_ASSERT_EQUAL(fota_time_parse("2027-01-31T00:00:00Z", &t), 0);
	CU_ASSERT_EQUAL(t, 1801353600);
	CU_ASSERT_EQUAL(fota_time_parse("2024-02-29T12:34:56Z", &t), 0);
	CU_ASSERT_EQUAL(t, 1709210096);
	fota_time_format(t, buf);
	CU_ASSERT_STRING_EQUAL(buf, "2024-02-29T12:34:56Z");
	CU_ASSERT_EQUAL(fota_time_parse("2000-02-29T00:00:00Z", &t), 0);
	CU_ASSERT_EQUAL(fota_time_parse("9999-12-31T23:59:59Z", &t), 0);
	CU_ASSERT_EQUAL(t, FOTA_TIME_MAX);
	CU_ASSERT_EQUAL(fota_time_parse("1970-01-01T00:00:00Z", &t), 0);
	CU_ASSERT_EQUAL(t, 0);
	static const char *const bad[] = {
		"2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2027-04-31T00:00:00Z", "2027-13-01T00:00:00Z",
		"2027-00-01T00:00:00Z", "2027-01-00T00:00:00Z", "2027-01-01T24:00:00Z", "2027-01-01T00:60:00Z",
		"2027-01-01T00:00:60Z", "1969-12-31T23:59:59Z", "2027-01-01t00:00:00Z", "2027-01-01T00:00:00z",
		"2027-01-01T00:00:00",  "2027-01-01T00:00:00+00:00", "2027-01-01 00:00:00Z", "27-01-01T00:00:00Z",
		"2027-1-01T00:00:00Z",  "+027-01-01T00:00:00Z", "2027-01-01T00:00:00.0Z", "", "2027-01-0aT00:00:00Z",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = 42;
		CU_ASSERT_EQUAL(fota_time_parse(bad[i], &t), -1);
		CU_ASSERT_EQUAL(t, 42);
	}
	CU_ASSERT_EQUAL(fota_time_parse(NULL, &t), -1);
	fota_time_format(0, buf);
	CU_ASSERT_STRING_EQUAL(buf, "1970-01-01T00:00:00Z");
	fota_time_format(-100, buf);
	CU_ASSERT_STRING_EQUAL(buf, "1970-01-01T00:00:00Z");
	fota_time_format(INT64_MAX, buf);
	CU_ASSERT_STRING_EQUAL(buf, "9999-12-31T23:59:59Z");
	/* in a manifest */
	expect_variant("\"2027-01-31T00:00:00Z\"", "\"2027-02-30T00:00:00Z\"", FOTA_E_MANIFEST, "expires");
	expect_variant("\"2027-01-31T00:00:00Z\"", "\"2027-01-31\"", FOTA_E_MANIFEST, "expires");
	expect_variant("\"2027-01-31T00:00:00Z\"", "1801353600", FOTA_E_MANIFEST, "expires");
	expect_variant("\"2027-01-31T00:00:00Z\"", "\"1970-01-01T00:00:00Z\"", FOTA_E_MANIFEST, "expires");
	expect_variant("\"2027-01-31T00:00:00Z\"", "null", FOTA_OK, NULL);
	struct fota_manifest *m = make_base();
	m->expires = -1;
	expect_validate(m, FOTA_E_MANIFEST, "expires");
	m = make_base();
	m->expires = FOTA_TIME_MAX + 1;
	expect_validate(m, FOTA_E_MANIFEST, "expires");
	m = make_base();
	m->expires = FOTA_TIME_MAX;
	expect_validate(m, FOTA_OK, NULL);
}

static void test_manifest_enum_names(void)
{
	CU_ASSERT_STRING_EQUAL(fota_mode_name(FOTA_MODE_INPLACE), "inplace");
	CU_ASSERT_EQUAL(fota_mode_parse("ab"), FOTA_MODE_AB);
	CU_ASSERT_EQUAL(fota_mode_parse("AB"), -1);
	CU_ASSERT_STRING_EQUAL(fota_priority_name(FOTA_PRIO_MEDIUM), "medium");
	CU_ASSERT_EQUAL(fota_priority_parse("high"), FOTA_PRIO_HIGH);
	CU_ASSERT_EQUAL(fota_priority_parse("urgent"), -1);
	CU_ASSERT_STRING_EQUAL(fota_roaming_name(FOTA_ROAM_WIFI_ONLY), "wifi-only");
	CU_ASSERT_EQUAL(fota_roaming_parse("deny"), FOTA_ROAM_DENY);
	CU_ASSERT_EQUAL(fota_roaming_parse(NULL), -1);
	CU_ASSERT_STRING_EQUAL(fota_method_name(FOTA_METHOD_DELTA), "delta");
	CU_ASSERT_EQUAL(fota_method_parse("full"), FOTA_METHOD_FULL);
	CU_ASSERT_EQUAL(fota_method_parse("bsdiff"), -1);
	expect_variant("\"mode\":\"ab\"", "\"mode\":\"AB\"", FOTA_E_MANIFEST, "mode: expected one of");
	expect_variant("\"priority\":\"high\"", "\"priority\":\"urgent\"", FOTA_E_MANIFEST, "policy.priority");
	expect_variant("\"roaming\":\"wifi-only\"", "\"roaming\":\"wifi\"", FOTA_E_MANIFEST, "policy.roaming");
	expect_variant("\"method\":\"delta\"", "\"method\":\"bsdiff\"", FOTA_E_MANIFEST, "images[0].chunks[0].method");
	struct fota_manifest *m = make_base();
	m->mode = (enum fota_mode)7;
	expect_validate(m, FOTA_E_MANIFEST, "mode");
	m = make_base();
	m->images[1].chunks[0].method = (enum fota_method)9;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks[0].method");
}

/* ---- strings ---- */

static void test_manifest_string_lengths(void)
{
	char s[FOTA_MESSAGE_MAX + 2];
	struct fota_manifest *m;
	/* package name, version, from_version, model: 128 accepted, 129 refused, 0 refused */
	memset(s, 'n', FOTA_STRING_MAX);
	s[FOTA_STRING_MAX] = '\0';
	m = make_base();
	free(m->name);
	m->name = xstrdup(s);
	expect_validate(m, FOTA_OK, NULL);
	s[FOTA_STRING_MAX] = 'n';
	s[FOTA_STRING_MAX + 1] = '\0';
	m = make_base();
	free(m->name);
	m->name = xstrdup(s);
	expect_validate(m, FOTA_E_LIMIT, "package.name");
	m = make_base();
	free(m->from_version);
	m->from_version = xstrdup(s);
	expect_validate(m, FOTA_E_LIMIT, "package.from_version");
	m = make_base();
	free(m->models[1]);
	m->models[1] = xstrdup(s);
	expect_validate(m, FOTA_E_LIMIT, "devices.models[1]");
	char json[300];
	snprintf(json, sizeof(json), "\"version\":\"%s\"", s);
	expect_variant("\"version\":\"2.0.1\"", json, FOTA_E_LIMIT, "package.version: longer than 128");
	expect_variant("\"version\":\"2.0.1\"", "\"version\":\"\"", FOTA_E_MANIFEST, "package.version: empty");
	expect_variant("\"ACME-X1\"", "\"\"", FOTA_E_MANIFEST, "devices.models[0]: empty");
	/* install message: 1024 accepted, 1025 refused */
	memset(s, 'm', FOTA_MESSAGE_MAX);
	s[FOTA_MESSAGE_MAX] = '\0';
	m = make_base();
	free(m->policy.install_message);
	m->policy.install_message = xstrdup(s);
	expect_validate(m, FOTA_OK, NULL);
	s[FOTA_MESSAGE_MAX] = 'm';
	s[FOTA_MESSAGE_MAX + 1] = '\0';
	m = make_base();
	free(m->policy.install_message);
	m->policy.install_message = xstrdup(s);
	expect_validate(m, FOTA_E_LIMIT, "policy.install_message");
	/* image name: 32 accepted, 33 refused (JSON only: the struct cannot hold 33) */
	expect_variant("\"name\":\"boot_a-1\"", "\"name\":\"abcdefghijklmnopqrstuvwxyz012345\"", FOTA_OK, NULL);
	expect_variant("\"name\":\"boot_a-1\"", "\"name\":\"abcdefghijklmnopqrstuvwxyz0123456\"", FOTA_E_LIMIT,
		       "images[1].name: longer than 32");
	expect_variant("\"name\":\"boot_a-1\"", "\"name\":\"\"", FOTA_E_MANIFEST, "images[1].name: empty");
}

static void test_manifest_non_printable_strings(void)
{
	expect_variant("\"name\":\"acme-phone\"", "\"name\":\"acme\\u0001\"", FOTA_E_MANIFEST,
		       "package.name: byte 4 is not printable ASCII");
	expect_variant("\"name\":\"acme-phone\"", "\"name\":\"acm\xc3\xa9\"", FOTA_E_MANIFEST,
		       "package.name: byte 3 is not printable ASCII");
	expect_variant("\"name\":\"acme-phone\"", "\"name\":\"a\\u007f\"", FOTA_E_MANIFEST, "package.name");
	expect_variant("\"ACME-X1\"", "\"ACME\\tX1\"", FOTA_E_MANIFEST, "devices.models[0]");
	expect_variant("\"version\":\"2.0.1\"", "\"version\":\"2.0.1\\n\"", FOTA_E_MANIFEST, "package.version");
	/* image names: [a-z0-9_-] only */
	expect_variant("\"name\":\"system\"", "\"name\":\"System\"", FOTA_E_MANIFEST, "images[0].name: byte 0");
	expect_variant("\"name\":\"system\"", "\"name\":\"sys/tem\"", FOTA_E_MANIFEST, "images[0].name: byte 3");
	expect_variant("\"name\":\"system\"", "\"name\":\"..\"", FOTA_E_MANIFEST, "images[0].name");
	/* install message: UTF-8, LF allowed, other controls refused (C0, DEL, C1) */
	expect_variant("\"install_message\":\"", "\"install_message\":\"tab\\there ", FOTA_E_MANIFEST,
		       "policy.install_message: control character U+0009");
	expect_variant("\"install_message\":\"", "\"install_message\":\"\\r", FOTA_E_MANIFEST,
		       "policy.install_message");
	expect_variant("\"install_message\":\"", "\"install_message\":\"\\u007f", FOTA_E_MANIFEST,
		       "policy.install_message");
	expect_variant("\"install_message\":\"", "\"install_message\":\"\\u0085", FOTA_E_MANIFEST,
		       "policy.install_message: control character U+0085");
	expect_variant("\"install_message\":\"", "\"install_message\":\"\\ud83d\\ude00 ", FOTA_OK, NULL);
	expect_variant("\"install_message\":\"", "\"install_message\":\"\\n", FOTA_OK, NULL);
	/* the writer checks UTF-8 itself */
	static const char *const bad_utf8[] = {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
					       "ab\xc3", "\x80", "\xfe"};
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		struct fota_manifest *m = make_base();
		free(m->policy.install_message);
		m->policy.install_message = xstrdup(bad_utf8[i]);
		expect_validate(m, FOTA_E_MANIFEST, "policy.install_message: invalid UTF-8");
	}
}

/* ---- limits ---- */

static void test_manifest_oversize(void)
{
	size_t len;
	char *base = base_json(&len);
	char *big = malloc(FOTA_MANIFEST_MAX + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	memcpy(big, base, len);
	memset(big + len, ' ', FOTA_MANIFEST_MAX + 1 - len);
	expect_parse(big, FOTA_MANIFEST_MAX, FOTA_OK, NULL);
	expect_parse(big, FOTA_MANIFEST_MAX + 1, FOTA_E_LIMIT, "limit 8388608");
	free(big);
	free(base);
}

/* A big JSON tree: "[{},{},...]" costs about 230 bytes of tree per 3 bytes of text. One
 * million of them (3 MB of text) pass FOTA_MANIFEST_PARSE_MAX and are refused as a limit;
 * 100,000 (about 23 MB of tree) parse and fail on the schema. */
static char *empty_objects(size_t n, size_t *len)
{
	const char head[] = "{\"format_version\":1,\"x\":[";
	char *t = malloc(sizeof(head) + 3 * n + 4);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	size_t k = sizeof(head) - 1;
	memcpy(t, head, k);
	for (size_t i = 0; i < n; i++) {
		memcpy(t + k, i ? ",{}" : "{}", i ? 3 : 2);
		k += i ? 3 : 2;
	}
	memcpy(t + k, "]}", 2);
	*len = k + 2;
	return t;
}

static void test_manifest_parse_budget(void)
{
	size_t len;
	char *t = empty_objects(1000000, &len);
	CU_ASSERT(len < FOTA_MANIFEST_MAX);
	expect_parse(t, len, FOTA_E_LIMIT, "FOTA_MANIFEST_PARSE_MAX");
	free(t);
	t = empty_objects(100000, &len);
	expect_parse(t, len, FOTA_E_MANIFEST, NULL);
	free(t);
	/* the budget is per parse: a normal manifest parses after a refused one */
	char *base = base_json(&len);
	expect_parse(base, len, FOTA_OK, NULL);
	free(base);
}

/* The writer refuses a manifest whose JSON tree a reader could not hold: 256 chunks of
 * 4096 source reads [0, 1] serialise to 6.3 MB (below FOTA_MANIFEST_MAX) but need about
 * 200 MB of tree; 64 such chunks (about 50 MB) serialise and parse back. */
static struct fota_manifest *make_many_reads(size_t n)
{
	struct fota_manifest *m = make_base();
	struct fota_image *im = &m->images[0];
	for (size_t i = 0; i < im->n_chunks; i++)
		free(im->chunks[i].source_reads);
	free(im->chunks);
	im->chunks = calloc(n, sizeof(*im->chunks));
	CU_ASSERT_PTR_NOT_NULL_FATAL(im->chunks);
	im->n_chunks = n;
	for (size_t i = 0; i < n; i++) {
		set_chunk(&im->chunks[i], i * 4096, 4096, FOTA_METHOD_DELTA, 100, "r");
		im->chunks[i].source_reads = calloc(FOTA_SOURCE_READS_MAX, sizeof(struct fota_range));
		CU_ASSERT_PTR_NOT_NULL_FATAL(im->chunks[i].source_reads);
		im->chunks[i].n_source_reads = FOTA_SOURCE_READS_MAX;
		for (size_t r = 0; r < FOTA_SOURCE_READS_MAX; r++)
			im->chunks[i].source_reads[r].length = 1;
	}
	im->target_size = n * 4096;
	return m;
}

static void test_manifest_serialize_budget(void)
{
	struct fota_error e = {0};
	char *out = NULL;
	size_t len = 0;
	struct fota_manifest *m = make_many_reads(256);
	CU_ASSERT_EQUAL(fota_manifest_validate(m, &e), FOTA_OK);
	CU_ASSERT_EQUAL(fota_manifest_serialize(m, &out, &len, &e), FOTA_E_LIMIT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "FOTA_MANIFEST_PARSE_MAX"));
	CU_ASSERT_PTR_NULL(out);
	fota_manifest_free(m);
	m = make_many_reads(64);
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &out, &len, &e), FOTA_OK);
	CU_ASSERT(len > 1000000 && len < FOTA_MANIFEST_MAX);
	struct fota_manifest *back = NULL;
	CU_ASSERT_EQUAL(fota_manifest_parse((const uint8_t *)out, len, &back, &e), FOTA_OK);
	CU_ASSERT(back && manifest_equal(m, back));
	fota_manifest_free(back);
	fota_manifest_free(m);
	free(out);
}

static struct fota_manifest *make_many_chunks(size_t n)
{
	struct fota_manifest *m = make_base();
	struct fota_image *im = &m->images[1];
	free(im->chunks);
	im->chunks = calloc(n, sizeof(*im->chunks));
	CU_ASSERT_PTR_NOT_NULL_FATAL(im->chunks);
	im->n_chunks = n;
	for (size_t i = 0; i < n; i++) {
		im->chunks[i].target_offset = i * 4096;
		im->chunks[i].target_size = 4096;
		im->chunks[i].method = FOTA_METHOD_FULL;
		im->chunks[i].payload_size = 100;
	}
	im->target_size = n * 4096;
	return m;
}

static void test_manifest_too_many_chunks(void)
{
	/* 5 chunks in the other images; 65531 + 5 = 65536 is the limit */
	struct fota_manifest *m = make_many_chunks(FOTA_CHUNKS_MAX - 3);
	CU_ASSERT_EQUAL(fota_manifest_chunk_count(m), FOTA_CHUNKS_MAX);
	struct fota_error e = {0};
	CU_ASSERT_EQUAL(fota_manifest_validate(m, &e), FOTA_OK);
	/* ...but so many chunks do not fit in FOTA_MANIFEST_MAX bytes of JSON */
	expect_validate(m, FOTA_OK, NULL);
	m = make_many_chunks(FOTA_CHUNKS_MAX - 3);
	char *out = NULL;
	size_t len;
	CU_ASSERT_EQUAL(fota_manifest_serialize(m, &out, &len, &e), FOTA_E_LIMIT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "serialises to"));
	CU_ASSERT_PTR_NULL(out);
	fota_manifest_free(m);
	m = make_many_chunks(FOTA_CHUNKS_MAX - 2);
	expect_validate(m, FOTA_E_LIMIT, "more than 65536 chunks");
	/* a single image over the limit */
	m = make_many_chunks(FOTA_CHUNKS_MAX + 1);
	expect_validate(m, FOTA_E_LIMIT, "images[1].chunks");
}

static void test_manifest_count_limits_json(void)
{
	size_t len;
	char *base = base_json(&len);
	free(base);
	/* models: 64 accepted, 65 refused */
	char *models = malloc(65 * 8 + 64);
	CU_ASSERT_PTR_NOT_NULL_FATAL(models);
	strcpy(models, "\"models\":[");
	for (int i = 0; i < 64; i++)
		sprintf(models + strlen(models), "%s\"m%d\"", i ? "," : "", i);
	strcat(models, "]");
	expect_variant("\"models\":[\"ACME-X1\",\"ACME-X1 Pro\"]", models, FOTA_OK, NULL);
	strcpy(models + strlen(models) - 1, ",\"m64\"]");
	expect_variant("\"models\":[\"ACME-X1\",\"ACME-X1 Pro\"]", models, FOTA_E_LIMIT, "devices.models: 65 models");
	expect_variant("\"models\":[\"ACME-X1\",\"ACME-X1 Pro\"]", "\"models\":[]", FOTA_OK, NULL);
	free(models);

	/* source_reads: 4096 accepted, 4097 refused (each [19900,1] lies inside the source) */
	char *reads = malloc(20 + 4097 * 12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(reads);
	strcpy(reads, "\"source_reads\":[");
	char *p = reads + strlen(reads);
	for (int i = 0; i < 4096; i++)
		p += sprintf(p, "%s[19900,1]", i ? "," : "");
	strcpy(p, "]");
	expect_variant("\"source_reads\":[[19900,100]]", reads, FOTA_OK, NULL);
	strcpy(p, ",[19900,1]]");
	expect_variant("\"source_reads\":[[19900,100]]", reads, FOTA_E_LIMIT,
		       "images[0].chunks[2].source_reads: 4097 ranges, limit 4096");
	free(reads);

	/* images: 16 accepted, 17 refused */
	char *imgs = malloc(17 * 400 + 64);
	CU_ASSERT_PTR_NOT_NULL_FATAL(imgs);
	for (int n = 16; n <= 17; n++) {
		p = imgs + sprintf(imgs, "\"images\":[");
		for (int i = 0; i < n; i++)
			p += sprintf(p,
				     "%s{\"name\":\"i%d\",\"source\":null,\"target\":{\"size\":0,\"sha256\":\"%064d\"},"
				     "\"chunks\":[]}",
				     i ? "," : "", i, 0);
		strcpy(p, "]}\n");
		size_t bl;
		char *b = base_json(&bl);
		char *at = strstr(b, "\"images\":[");
		CU_ASSERT_PTR_NOT_NULL_FATAL(at);
		size_t pre = (size_t)(at - b);
		char *doc = malloc(pre + strlen(imgs) + 1);
		CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
		memcpy(doc, b, pre);
		strcpy(doc + pre, imgs);
		if (n == 16)
			expect_parse_str(doc, FOTA_OK, NULL);
		else
			expect_parse_str(doc, FOTA_E_LIMIT, "images: 17 images, limit 16");
		free(doc);
		free(b);
	}
	free(imgs);
	expect_variant("\"images\":[", "\"images\":[],\"x\":[", FOTA_E_MANIFEST, "unknown key");
}

static void test_manifest_size_limits(void)
{
	struct fota_manifest *m;
	/* payload_size: 1..FOTA_PAYLOAD_MAX */
	m = make_base();
	m->images[1].chunks[0].payload_size = FOTA_PAYLOAD_MAX;
	expect_validate(m, FOTA_OK, NULL);
	m = make_base();
	m->images[1].chunks[0].payload_size = FOTA_PAYLOAD_MAX + 1ull;
	expect_validate(m, FOTA_E_LIMIT, "images[1].chunks[0].payload_size");
	expect_variant("\"payload_size\":1234", "\"payload_size\":0", FOTA_E_MANIFEST,
		       "images[0].chunks[0].payload_size: must be at least 1");
	/* chunk target_size: FOTA_CHUNK_SIZE_MAX accepted, +1 refused */
	m = make_base();
	m->images[1].chunks[0].target_size = FOTA_CHUNK_SIZE_MAX;
	m->images[1].chunks[1].target_offset = FOTA_CHUNK_SIZE_MAX;
	m->images[1].target_size = FOTA_CHUNK_SIZE_MAX + 10ull;
	expect_validate(m, FOTA_OK, NULL);
	m = make_base();
	m->images[1].chunks[0].target_size = FOTA_CHUNK_SIZE_MAX + 1ull;
	m->images[1].chunks[1].target_offset = FOTA_CHUNK_SIZE_MAX + 1ull;
	m->images[1].target_size = FOTA_CHUNK_SIZE_MAX + 11ull;
	expect_validate(m, FOTA_E_LIMIT, "images[1].chunks[0].target_size");
	/* chunks below FOTA_CHUNK_SIZE_MIN only at the end of their image */
	m = make_base();
	m->images[1].chunks[0].target_size = 4095;
	m->images[1].chunks[1].target_offset = 4095;
	m->images[1].chunks[1].target_size = 11;
	expect_validate(m, FOTA_E_LIMIT, "images[1].chunks[0].target_size: 4095 is below 4096");
	/* image sizes: FOTA_IMAGE_SIZE_MAX accepted, +1 refused */
	m = make_base();
	m->images[0].source_size = FOTA_IMAGE_SIZE_MAX;
	expect_validate(m, FOTA_OK, NULL);
	m = make_base();
	m->images[0].source_size = FOTA_IMAGE_SIZE_MAX + 1;
	expect_validate(m, FOTA_E_LIMIT, "images[0].source.size");
	m = make_base();
	m->images[2].target_size = FOTA_IMAGE_SIZE_MAX + 1;
	expect_validate(m, FOTA_E_LIMIT, "images[2].target.size");
	/* scratch_size: only in place, at most FOTA_IMAGE_SIZE_MAX */
	m = make_base();
	m->mode = FOTA_MODE_INPLACE;
	keep_first_image(m);
	m->scratch_size = FOTA_IMAGE_SIZE_MAX;
	expect_validate(m, FOTA_OK, NULL);
	m = make_base();
	m->mode = FOTA_MODE_INPLACE;
	keep_first_image(m);
	m->scratch_size = FOTA_IMAGE_SIZE_MAX + 1;
	expect_validate(m, FOTA_E_LIMIT, "scratch_size");
	expect_variant("\"scratch_size\":0", "\"scratch_size\":4096", FOTA_E_MANIFEST,
		       "scratch_size: must be 0 when mode is \"ab\"");
	/* window_log: 10..27 */
	expect_variant("\"window_log\":20", "\"window_log\":10", FOTA_OK, NULL);
	expect_variant("\"window_log\":20", "\"window_log\":27", FOTA_OK, NULL);
	expect_variant("\"window_log\":20", "\"window_log\":28", FOTA_E_LIMIT, "window_log");
	expect_variant("\"window_log\":20", "\"window_log\":9", FOTA_E_MANIFEST, "window_log");
	expect_variant("\"window_log\":20", "\"window_log\":4294967306", FOTA_E_LIMIT, "window_log");
}


/* ---- semantics ---- */

static void test_manifest_chunk_tiling(void)
{
	struct fota_manifest *m;
	/* overlap */
	m = make_base();
	m->images[0].chunks[1].target_offset = 8191;
	expect_validate(m, FOTA_E_MANIFEST, "images[0].chunks[1]: target_offset 8191 overlaps chunks[0]");
	expect_variant("\"target_offset\":8192", "\"target_offset\":8000", FOTA_E_MANIFEST, "overlaps");
	/* two chunks at the same offset */
	m = make_base();
	m->images[1].chunks[1].target_offset = 0;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks[1]: target_offset 0 overlaps chunks[0]");
	/* gap */
	m = make_base();
	m->images[0].chunks[1].target_offset = 8193;
	expect_validate(m, FOTA_E_MANIFEST, "images[0]: target bytes [8192, 8193) are not covered");
	/* does not start at 0 */
	m = make_base();
	m->images[1].chunks[0].target_offset = 1;
	expect_validate(m, FOTA_E_MANIFEST, "images[1]: target bytes [0, 1) are not covered");
	/* end not covered */
	m = make_base();
	m->images[1].chunks[1].target_size = 4096;
	m->images[1].target_size = 8193;
	expect_validate(m, FOTA_E_MANIFEST, "images[1]: target bytes [8192, 8193) are not covered");
	/* beyond the end */
	m = make_base();
	m->images[1].target_size = 4105;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks[1]: target range");
	/* overflowing offset */
	m = make_base();
	m->images[1].chunks[1].target_offset = UINT64_MAX - 5;
	expect_validate(m, FOTA_E_LIMIT, "images[1].chunks[1].target_offset");
	/* zero-size chunk */
	expect_variant("\"target_size\":8192", "\"target_size\":0", FOTA_E_MANIFEST,
		       "images[0].chunks[0].target_size: must be at least 1");
	/* any order is fine (in-place reorders) */
	m = make_base();
	struct fota_chunk t = m->images[0].chunks[0];
	m->images[0].chunks[0] = m->images[0].chunks[1];
	m->images[0].chunks[1] = m->images[0].chunks[2];
	m->images[0].chunks[2] = t;
	expect_validate(m, FOTA_OK, NULL);
	/* empty images: exactly zero chunks; others at least one */
	m = make_base();
	m->images[1].n_chunks = 0;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks: must not be empty");
	m = make_base();
	m->images[1].target_size = 0;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks: must be empty when target.size is 0");
	m = make_base();
	m->n_images = 0;
	struct fota_error e = {0};
	CU_ASSERT_EQUAL(fota_manifest_validate(m, &e), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "images: must not be empty"));
	m->n_images = 3;
	fota_manifest_free(m);
}

static void test_manifest_source_reads(void)
{
	struct fota_manifest *m;
	/* last byte of the source is fine */
	m = make_base();
	m->images[0].chunks[2].source_reads[0].offset = 19999;
	m->images[0].chunks[2].source_reads[0].length = 1;
	expect_validate(m, FOTA_OK, NULL);
	/* outside: starts at the end, runs past the end, overflows */
	expect_variant("[[19900,100]]", "[[20000,1]]", FOTA_E_MANIFEST,
		       "images[0].chunks[2].source_reads[0]: [20000, +1) is outside source.size 20000");
	expect_variant("[[19900,100]]", "[[19900,101]]", FOTA_E_MANIFEST, "images[0].chunks[2].source_reads[0]");
	expect_variant("[[0,8192],[12000,100]]", "[[0,8192],[12000,9223372036854775807]]", FOTA_E_MANIFEST,
		       "images[0].chunks[0].source_reads[1]");
	m = make_base();
	m->images[0].chunks[2].source_reads[0].offset = UINT64_MAX - 10;
	m->images[0].chunks[2].source_reads[0].length = 20;
	expect_validate(m, FOTA_E_MANIFEST, "images[0].chunks[2].source_reads[0]");
	/* zero length */
	expect_variant("[[19900,100]]", "[[19900,0]]", FOTA_E_MANIFEST, "length must be at least 1");
	/* malformed pairs */
	expect_variant("[[19900,100]]", "[[19900]]", FOTA_E_MANIFEST, "source_reads[0]: expected an array [offset, length]");
	expect_variant("[[19900,100]]", "[[19900,1,1]]", FOTA_E_MANIFEST, "source_reads[0][2]: expected \"scratch\"");
	expect_variant("[[19900,100]]", "[[19900,1,1,1]]", FOTA_E_MANIFEST, "source_reads[0]: expected an array");
	/* scratch reads and stashes belong to in-place packages only */
	expect_variant("[[19900,100]]", "[[0,100,\"scratch\"]]", FOTA_E_MANIFEST, "scratch reads are only for mode");
	expect_variant("[[19900,100]]", "[{\"offset\":19900,\"length\":100}]", FOTA_E_MANIFEST, "source_reads[0]");
	expect_variant("[[19900,100]]", "[[\"19900\",100]]", FOTA_E_MANIFEST, "source_reads[0]");
	/* full chunks read nothing */
	m = make_base();
	set_reads(&m->images[1].chunks[0], 1, (const uint64_t[]){0, 1});
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks[0].source_reads: must be empty for method \"full\"");
	/* delta needs a source */
	m = make_base();
	m->images[1].chunks[0].method = FOTA_METHOD_DELTA;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].chunks[0].method: \"delta\" needs images[1].source");
	/* a delta chunk may read nothing (its old input is empty) */
	expect_variant("[[19900,100]]", "[]", FOTA_OK, NULL);
	/* mode inplace: every image needs a source */
	m = make_base();
	m->mode = FOTA_MODE_INPLACE;
	expect_validate(m, FOTA_E_MANIFEST, "images[1].source: required when mode is \"inplace\"");
	m = make_base();
	m->mode = FOTA_MODE_INPLACE;
	keep_first_image(m);
	m->images[0].source_size = 5; /* sizes need not match, but reads must fit */
	expect_validate(m, FOTA_E_MANIFEST, "images[0].chunks[0].source_reads[0]");
}

static void test_manifest_image_names_unique(void)
{
	struct fota_manifest *m = make_base();
	strcpy(m->images[2].name, "system");
	expect_validate(m, FOTA_E_MANIFEST, "images[2].name: \"system\" already used by images[0]");
	expect_variant("\"name\":\"empty\"", "\"name\":\"boot_a-1\"", FOTA_E_MANIFEST, "images[2].name");
}

static void test_manifest_null_and_edge_args(void)
{
	struct fota_error e = {0};
	struct fota_manifest *m = NULL;
	char *out = (char *)1;
	size_t len = 1;
	fota_manifest_free(NULL);
	CU_ASSERT_EQUAL(fota_manifest_chunk_count(NULL), 0);
	CU_ASSERT_EQUAL(fota_manifest_payload_total(NULL), 0);
	CU_ASSERT_EQUAL(fota_manifest_validate(NULL, &e), FOTA_E_ARG);
	CU_ASSERT_EQUAL(fota_manifest_serialize(NULL, &out, &len, &e), FOTA_E_ARG);
	CU_ASSERT_PTR_NULL(out);
	CU_ASSERT_EQUAL(fota_manifest_parse((const uint8_t *)"{}", 2, NULL, &e), FOTA_E_ARG);
	/* errors without an error record still return the code */
	CU_ASSERT_EQUAL(fota_manifest_parse((const uint8_t *)"{", 1, &m, NULL), FOTA_E_MANIFEST);
	CU_ASSERT_PTR_NULL(m);
	/* a struct with a missing string is refused, not dereferenced */
	m = make_base();
	free(m->version);
	m->version = NULL;
	expect_validate(m, FOTA_E_MANIFEST, "package.version: missing");
	/* nullable fields absent in the struct round trip as null */
	m = make_base();
	free(m->from_version);
	m->from_version = NULL;
	free(m->policy.install_message);
	m->policy.install_message = NULL;
	m->expires = 0;
	CU_ASSERT_EQUAL_FATAL(fota_manifest_serialize(m, &out, &len, &e), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"from_version\":null"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"expires\":null"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"install_message\":null"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"name\":\"boot_a-1\",\"source\":null"));
	struct fota_manifest *p = NULL;
	CU_ASSERT_EQUAL_FATAL(fota_manifest_parse((const uint8_t *)out, len, &p, &e), FOTA_OK);
	CU_ASSERT(manifest_equal(m, p));
	free(out);
	fota_manifest_free(p);
	fota_manifest_free(m);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_manifest_round_trip);
	UNIT_ADD(s, test_manifest_canonical_bytes);
	UNIT_ADD(s, test_manifest_big_integers);
	UNIT_ADD(s, test_manifest_missing_each_field);
	UNIT_ADD(s, test_manifest_unknown_key_each_level);
	UNIT_ADD(s, test_manifest_wrong_type_each_field);
	UNIT_ADD(s, test_manifest_float_numbers);
	UNIT_ADD(s, test_manifest_negative_numbers);
	UNIT_ADD(s, test_manifest_duplicate_keys);
	UNIT_ADD(s, test_manifest_format_version);
	UNIT_ADD(s, test_manifest_not_an_object);
	UNIT_ADD(s, test_manifest_truncated_and_trailing);
	UNIT_ADD(s, test_manifest_embedded_nul_and_bad_utf8);
	UNIT_ADD(s, test_manifest_bad_hex);
	UNIT_ADD(s, test_manifest_time_parse_format);
	UNIT_ADD(s, test_manifest_enum_names);
	UNIT_ADD(s, test_manifest_string_lengths);
	UNIT_ADD(s, test_manifest_non_printable_strings);
	UNIT_ADD(s, test_manifest_oversize);
	UNIT_ADD(s, test_manifest_parse_budget);
	UNIT_ADD(s, test_manifest_serialize_budget);
	UNIT_ADD(s, test_manifest_too_many_chunks);
	UNIT_ADD(s, test_manifest_count_limits_json);
	UNIT_ADD(s, test_manifest_size_limits);
	UNIT_ADD(s, test_manifest_chunk_tiling);
	UNIT_ADD(s, test_manifest_source_reads);
	UNIT_ADD(s, test_manifest_image_names_unique);
	UNIT_ADD(s, test_manifest_null_and_edge_args);
}
UNIT_SUITE("formats/manifest", add)
