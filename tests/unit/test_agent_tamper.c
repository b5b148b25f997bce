/*
 * Suite agent/tamper (issue 7, "Tampering"): every single-byte modification of a
 * package's manifest.json and manifest.sig, and sampled bytes of its payloads, driven
 * through the agent library on the power-cut simulation backend. Each tampered package
 * must be refused, and the simulated target device (slot_b; in place: the partition and
 * the scratch area) must have seen zero writes; the active slot is never written.
 *
 * Head bytes: byte i is XORed with 1 << (i % 8), so every bit position is exercised
 * across the member, and additionally with 0xff at every 7th byte. Payload bytes: the
 * first, middle and last byte of every payload plus pseudo-random samples. A streamed
 * A/B download applies the chunks that precede a corrupt one (they are valid); there the
 * test asserts that the corrupt chunk's target range is never written and the job fails.
 *
 * The package member offsets are found by walking the ustar headers of the file itself
 * (not through libfota), so a mistake in fota_pkg_payload_offset cannot hide a miss.
 *
 * History: this suite found that a case change in the issuer Name of the SignerInfo's
 * sid (outside the signature; OpenSSL matched it case-insensitively) let the package
 * through; formats/sig.c now requires the sid bytes to equal the signer certificate's
 * (f6ed0da), and every byte of the head is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fota/container.h"
#include "test_agent_util.h"
#include "unit.h"

#define MAX_MEMBERS 64

struct member {
	char name[101];
	size_t off, len; /* data offset and size in the package */
};

struct tamper {
	enum fota_mode mode;
	bool stream;
	uint8_t *src, *dst, *pkg;
	size_t len, pkg_len;
	char path[600], url[640];
	struct agent_config *cfg;
	struct member m[MAX_MEMBERS];
	size_t n_members;
	/* results */
	unsigned runs, rc_hist[32];
};

/* Parse the ustar headers of the package in memory: name and octal size. */
static int walk_members(struct tamper *t)
{
	size_t off = 0;
	t->n_members = 0;
	while (off + FOTA_TAR_BLOCK <= t->pkg_len && t->n_members < MAX_MEMBERS) {
		const uint8_t *h = t->pkg + off;
		if (h[0] == 0)
			break; /* end marker */
		struct member *m = &t->m[t->n_members++];
		memcpy(m->name, h, 100);
		m->name[100] = 0;
		char sz[13];
		memcpy(sz, h + 124, 12);
		sz[12] = 0;
		char *end = NULL;
		unsigned long long v = strtoull(sz, &end, 8);
		if (end == sz || v > t->pkg_len)
			return -1;
		m->off = off + FOTA_TAR_BLOCK;
		m->len = (size_t)v;
		if (m->off + m->len > t->pkg_len)
			return -1;
		off = m->off + (m->len + FOTA_TAR_BLOCK - 1) / FOTA_TAR_BLOCK * FOTA_TAR_BLOCK;
	}
	return t->n_members >= 3 && strcmp(t->m[0].name, "manifest.json") == 0 &&
			       strcmp(t->m[1].name, "manifest.sig") == 0
		       ? 0
		       : -1;
}

static int tamper_init(struct tamper *t, enum fota_mode mode, bool stream, bool delta, const char *tag)
{
	memset(t, 0, sizeof(*t));
	t->mode = mode;
	t->stream = stream;
	tagent_pair(&t->src, &t->dst, &t->len, 23);
	snprintf(t->path, sizeof(t->path), "%s/tamper-%s.fota", unit_tmpdir(), tag);
	snprintf(t->url, sizeof(t->url), "file://%s", t->path);
	struct tpkg o = { .mode = mode, .delta = delta, .chunk = 8192, .model = "HX-100", .security_version = 1,
			  .corrupt_chunk = -1, .scratch_max = 32768 };
	if (tagent_build(t->path, t->src, t->len, t->dst, t->len, &o) != 0)
		return -1;
	t->pkg = unit_read_file(t->path, &t->pkg_len);
	t->cfg = tagent_config(mode, stream, NULL);
	if (!t->pkg || !t->cfg)
		return -1;
	return walk_members(t);
}

static void tamper_free(struct tamper *t)
{
	agent_config_free(t->cfg);
	free(t->src);
	free(t->dst);
	free(t->pkg);
}

static int write_pkg(const struct tamper *t)
{
	FILE *f = fopen(t->path, "wb");
	if (!f)
		return -1;
	size_t n = fwrite(t->pkg, 1, t->pkg_len, f);
	return fclose(f) == 0 && n == t->pkg_len ? 0 : -1;
}

struct outcome {
	int rc;
	enum agent_phase phase;
	uint64_t target_writes, active_writes;
	bool chunk_untouched; /* the target range [lo, hi) still holds its initial bytes */
	char msg[FOTA_ERROR_MSG_MAX];
};

/* One download-and-update of the package file as it is now, on a fresh simulated device. */
static int run_once(struct tamper *t, uint64_t lo, uint64_t hi, struct outcome *out)
{
	memset(out, 0, sizeof(*out));
	struct fota_sim *sim = fota_sim_new();
	if (!sim)
		return -1;
	size_t dev_len = t->len + 4096;
	uint8_t *init = malloc(dev_len), *zero = calloc(1, 131072);
	int ret = -1;
	if (!init || !zero)
		goto out;
	unit_fill_random(init, dev_len, 77);
	fota_status st;
	if (t->mode == FOTA_MODE_AB)
		st = fota_sim_dev_set(sim, "slot_a", t->src, t->len) | fota_sim_dev_set(sim, "slot_b", init, dev_len);
	else
		st = fota_sim_dev_set(sim, "part", t->src, t->len) | fota_sim_dev_set(sim, "scratch", zero, 131072);
	if (st != FOTA_OK)
		goto out;
	struct tclock ck = { .tick_ms = 5 };
	struct agent_env env = { t->cfg, fota_sim_store(sim), fota_sim_devices(sim), tagent_clock(&ck), NULL };
	struct agent *a = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	if (agent_open(&env, &a, &err) != FOTA_OK) {
		snprintf(out->msg, sizeof(out->msg), "agent_open: %s", err.msg);
		goto out;
	}
	out->rc = agent_download(a, t->url, true, &err);
	out->phase = agent_journal(a)->phase;
	snprintf(out->msg, sizeof(out->msg), "%s", err.msg);
	agent_close(a);
	if (t->mode == FOTA_MODE_AB) {
		out->target_writes = fota_sim_dev_writes(sim, "slot_b");
		out->active_writes = fota_sim_dev_writes(sim, "slot_a");
		size_t n = 0;
		uint8_t *got = fota_sim_dev_get(sim, "slot_b", &n);
		out->chunk_untouched = got && n == dev_len && hi <= n && memcmp(got + lo, init + lo, hi - lo) == 0;
		free(got);
	} else {
		out->target_writes = fota_sim_dev_writes(sim, "part") + fota_sim_dev_writes(sim, "scratch");
		out->chunk_untouched = out->target_writes == 0;
	}
	t->runs++;
	t->rc_hist[out->rc >= 0 && out->rc < 32 ? out->rc : 31]++;
	ret = 0;
out:
	free(init);
	free(zero);
	fota_sim_free(sim);
	return ret;
}

static void print_hist(const struct tamper *t, const char *what)
{
	printf("\n  tamper %s: %u runs, refused with:", what, t->runs);
	for (int c = 0; c < 32; c++)
		if (t->rc_hist[c])
			printf(" %s x%u", agent_exit_name(c), t->rc_hist[c]);
	printf(" ");
}

/*
 * Head member k (0: manifest.json, 1: manifest.sig), every `step`-th byte: refused with
 * a signature or format error, job failed, zero writes to the target and active slot.
 */
static void sweep_head(struct tamper *t, size_t k, size_t step)
{
	const struct member *m = &t->m[k];
	unsigned bad = 0, wrote = 0;
	CU_ASSERT_FATAL(m->len > 100);
	for (size_t i = 0; i < m->len; i += step) {
		uint8_t masks[2] = { (uint8_t)(1u << (i % 8)), 0xff };
		for (int v = 0; v < (i % 7 == 0 ? 2 : 1); v++) {
			uint8_t *p = t->pkg + m->off + i, orig = *p;
			*p = orig ^ masks[v];
			struct outcome o;
			CU_ASSERT_EQUAL_FATAL(write_pkg(t), 0);
			CU_ASSERT_EQUAL_FATAL(run_once(t, 0, 0, &o), 0);
			*p = orig;
			bool refused = (o.rc == AGENT_EXIT_SIGNATURE || o.rc == AGENT_EXIT_CORRUPT) && o.phase == AGENT_PH_FAILED;
			if (!refused && ++bad <= 3)
				fprintf(stderr, "\n  %s byte %zu ^0x%02x: not refused: exit %d phase %s: %s\n", m->name, i,
					masks[v], o.rc, agent_phase_name(o.phase), o.msg);
			if ((o.target_writes != 0 || o.active_writes != 0) && ++wrote <= 3)
				fprintf(stderr, "\n  %s byte %zu ^0x%02x: %llu target writes, %llu active-slot writes\n",
					m->name, i, masks[v], (unsigned long long)o.target_writes,
					(unsigned long long)o.active_writes);
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(wrote, 0);
	CU_ASSERT_EQUAL_FATAL(write_pkg(t), 0);
}

/* The untampered package installs: the sweep's refusals are due to the tampering. */
static void baseline_ok(struct tamper *t)
{
	struct outcome o;
	CU_ASSERT_EQUAL_FATAL(write_pkg(t), 0);
	CU_ASSERT_EQUAL_FATAL(run_once(t, 0, 0, &o), 0);
	CU_ASSERT_EQUAL(o.rc, 0);
	CU_ASSERT_EQUAL(o.phase, AGENT_PH_DONE);
	CU_ASSERT(o.target_writes > 0);
	CU_ASSERT_EQUAL(o.active_writes, 0);
	if (o.rc != 0)
		fprintf(stderr, "\n  baseline: exit %d: %s\n", o.rc, o.msg);
	t->runs = 0;
	memset(t->rc_hist, 0, sizeof(t->rc_hist));
}

static void test_agent_tamper_manifest_every_byte(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_AB, false, true, "manifest"), 0);
	baseline_ok(&t);
	sweep_head(&t, 0, 1);
	print_hist(&t, "manifest.json");
	CU_ASSERT(t.runs >= t.m[0].len);
	tamper_free(&t);
}

static void test_agent_tamper_signature_every_byte(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_AB, false, true, "sig"), 0);
	baseline_ok(&t);
	sweep_head(&t, 1, 1);
	print_hist(&t, "manifest.sig");
	CU_ASSERT(t.runs >= t.m[1].len);
	tamper_free(&t);
}

/* In place, the head of a delta package: every 3rd byte of both members (the A/B cases
 * take every byte; the head check does not depend on the mode), nothing written. */
static void test_agent_tamper_inplace_head(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_INPLACE, false, true, "inplace"), 0);
	baseline_ok(&t);
	sweep_head(&t, 0, 3);
	sweep_head(&t, 1, 3);
	print_hist(&t, "in-place head");
	tamper_free(&t);
}

/*
 * Sampled payload bytes: first, middle, last of every payload and `extra` pseudo-random
 * ones. Store mode: refused as corrupt with zero target writes. Stream mode (A/B): the
 * job fails as corrupt and the corrupt chunk's target range is never written.
 */
static void sweep_payloads(struct tamper *t, unsigned extra)
{
	size_t n_pay = t->n_members - 2;
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	unsigned bad = 0, wrote = 0, tried = 0;
	CU_ASSERT_FATAL(n_pay >= 4);
	/* chunk k's target range: payload k covers [k * 8192, ...) in A/B packages */
	for (size_t s = 0; s < 3 * n_pay + extra; s++) {
		size_t k, i;
		if (s < 3 * n_pay) {
			k = s / 3;
			size_t len = t->m[2 + k].len;
			i = s % 3 == 0 ? 0 : s % 3 == 1 ? len / 2 : len - 1;
		} else {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			k = (size_t)(rng % n_pay);
			i = (size_t)((rng >> 20) % t->m[2 + k].len);
		}
		const struct member *m = &t->m[2 + k];
		uint8_t *p = t->pkg + m->off + i, orig = *p;
		*p = orig ^ (uint8_t)(1u << (s % 8));
		uint64_t lo = (uint64_t)k * 8192, hi = lo + 8192 < t->len ? lo + 8192 : t->len;
		struct outcome o;
		CU_ASSERT_EQUAL_FATAL(write_pkg(t), 0);
		CU_ASSERT_EQUAL_FATAL(run_once(t, lo, hi, &o), 0);
		*p = orig;
		tried++;
		if (o.rc != AGENT_EXIT_CORRUPT || o.phase != AGENT_PH_FAILED) {
			if (++bad <= 3)
				fprintf(stderr, "\n  %s byte %zu: exit %d phase %s: %s\n", m->name, i, o.rc,
					agent_phase_name(o.phase), o.msg);
		}
		bool ok_writes = t->stream ? o.chunk_untouched : o.target_writes == 0;
		if (!ok_writes || o.active_writes != 0) {
			if (++wrote <= 3)
				fprintf(stderr, "\n  %s byte %zu: %llu target writes%s\n", m->name, i,
					(unsigned long long)o.target_writes,
					t->stream && !o.chunk_untouched ? ", corrupt chunk's range written" : "");
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(wrote, 0);
	CU_ASSERT(tried >= 3 * n_pay);
	CU_ASSERT_EQUAL_FATAL(write_pkg(t), 0);
}

static void test_agent_tamper_payload_ab_store(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_AB, false, true, "pay-ab"), 0);
	baseline_ok(&t);
	sweep_payloads(&t, 48);
	print_hist(&t, "payload bytes (A/B, store)");
	tamper_free(&t);
}

static void test_agent_tamper_payload_ab_stream(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_AB, true, false, "pay-ab-stream"), 0);
	baseline_ok(&t);
	sweep_payloads(&t, 24);
	print_hist(&t, "payload bytes (A/B, stream)");
	tamper_free(&t);
}

static void test_agent_tamper_payload_inplace_store(void)
{
	struct tamper t;
	CU_ASSERT_EQUAL_FATAL(tamper_init(&t, FOTA_MODE_INPLACE, false, true, "pay-ip"), 0);
	baseline_ok(&t);
	sweep_payloads(&t, 24);
	print_hist(&t, "payload bytes (in place, store)");
	tamper_free(&t);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_tamper_manifest_every_byte);
	UNIT_ADD(s, test_agent_tamper_signature_every_byte);
	UNIT_ADD(s, test_agent_tamper_inplace_head);
	UNIT_ADD(s, test_agent_tamper_payload_ab_store);
	UNIT_ADD(s, test_agent_tamper_payload_ab_stream);
	UNIT_ADD(s, test_agent_tamper_payload_inplace_store);
}
UNIT_SUITE("agent/tamper", add)
