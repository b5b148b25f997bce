/*
 * Suite agent/powercut: the agent's promise under power loss. For each scenario (A/B
 * and in-place, full and delta chunks, store and stream downloads) a clean run counts
 * the write, sync and commit events of download + apply + journal; then the power is
 * cut at every one of them, with and without a torn last write, the simulated device
 * "reboots" (unsynced data gone), a fresh agent resumes, sometimes is cut again, and
 * resumes until done. The result must be the exact target, byte for byte, with the
 * active slot never written. FOTA_POWERCUT_FULL=1 also cuts every resume at every
 * event (quadratic; the exhaustive run).
 *
 * The "-rb" A/B scenarios open the simulated slots with concurrent reads, so the apply
 * runs as on files: the read-back thread hashes the image and (on a CPU with the SHA
 * extensions) checks each chunk before it is journaled; "-noext" runs that with
 * FOTA_NO_SHA_EXT=1 (the read-back hashes the image only, the hasher the chunks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_agent_util.h"
#include "unit.h"

struct scenario {
	const char *name;
	enum fota_mode mode;
	bool delta, stream, mixed;
	bool readback, no_sha_ext;
};

struct fixture {
	uint8_t *src, *dst;
	size_t len;
	char url[600];
};

static const uint64_t SCRATCH = 131072;

/* Fresh simulated device with the source installed. */
static struct fota_sim *device(const struct scenario *sc, const struct fixture *fx)
{
	struct fota_sim *sim = fota_sim_new();
	if (!sim)
		return NULL;
	fota_sim_set_concurrent_reads(sim, sc->readback);
	uint8_t *junk = malloc(fx->len + 4096), *zero = calloc(1, SCRATCH);
	unit_fill_random(junk, fx->len + 4096, 99);
	fota_status rc;
	if (sc->mode == FOTA_MODE_AB)
		rc = fota_sim_dev_set(sim, "slot_a", fx->src, fx->len) | fota_sim_dev_set(sim, "slot_b", junk, fx->len + 4096);
	else
		rc = fota_sim_dev_set(sim, "part", fx->src, fx->len) | fota_sim_dev_set(sim, "scratch", zero, SCRATCH);
	free(junk);
	free(zero);
	if (rc != FOTA_OK) {
		fota_sim_free(sim);
		return NULL;
	}
	return sim;
}

/* One agent "boot": open on the surviving storage, run op, close. */
static int boot(struct fota_sim *sim, const struct agent_config *cfg, const char *url, struct tclock *ck, bool first,
		char *msg, size_t cap)
{
	struct agent_env env = { cfg, fota_sim_store(sim), fota_sim_devices(sim), tagent_clock(ck), NULL };
	struct agent *a = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	int rc;
	if (agent_open(&env, &a, &err) != FOTA_OK)
		rc = AGENT_EXIT_IO;
	else
		rc = first ? agent_download(a, url, true, &err) : agent_resume(a, &err);
	if (rc == 0 && a && agent_journal(a)->phase == AGENT_PH_IDLE && !first) {
		/* the cut came before the job was journaled: the command was never accepted,
		 * so the DM server issues it again */
		rc = agent_download(a, url, true, &err);
	}
	if (rc == 0 && a && agent_journal(a)->phase != AGENT_PH_DONE && !first) {
		snprintf(err.msg, sizeof(err.msg), "resume returned 0 in phase %s", agent_phase_name(agent_journal(a)->phase));
		rc = 99;
	}
	snprintf(msg, cap, "%s", err.msg);
	agent_close(a);
	return rc;
}

static bool result_ok(struct fota_sim *sim, const struct scenario *sc, const struct fixture *fx)
{
	size_t n = 0;
	uint8_t *got = fota_sim_dev_get(sim, sc->mode == FOTA_MODE_AB ? "slot_b" : "part", &n);
	bool ok = got && n >= fx->len && memcmp(got, fx->dst, fx->len) == 0;
	free(got);
	if (sc->mode == FOTA_MODE_AB) {
		got = fota_sim_dev_get(sim, "slot_a", &n);
		ok = ok && got && n == fx->len && memcmp(got, fx->src, fx->len) == 0 && fota_sim_dev_writes(sim, "slot_a") == 0;
		free(got);
	}
	return ok;
}

/*
 * Run the job with the power cut at event c1 (0: never); after the reboot, cut the
 * first resume at c2 (0: never); then resume until done. Returns true when the target
 * is exact. *events gets the events of an uncut run.
 */
static bool run(const struct scenario *sc, const struct fixture *fx, const struct agent_config *cfg, uint64_t c1,
		bool torn1, uint64_t c2, bool torn2, uint64_t *events, char *why, size_t cap)
{
	struct fota_sim *sim = device(sc, fx);
	struct tclock ck = { .tick_ms = 150 }; /* checkpoints every few chunks */
	char msg[FOTA_ERROR_MSG_MAX];
	bool ok = false;
	if (!sim)
		return false;
	fota_sim_set_cut(sim, c1, torn1);
	int rc = boot(sim, cfg, fx->url, &ck, true, msg, sizeof(msg));
	if (events)
		*events = fota_sim_events(sim);
	if (!fota_sim_cut_happened(sim)) {
		if (rc != 0) {
			snprintf(why, cap, "uncut run failed (%d): %s", rc, msg);
			goto out;
		}
	} else {
		fota_sim_reboot(sim);
		if (c2) {
			fota_sim_set_cut(sim, c2, torn2);
			(void)boot(sim, cfg, fx->url, &ck, false, msg, sizeof(msg));
			fota_sim_reboot(sim);
		}
		/* resume "any number of times": a second resume after success must be a no-op */
		for (int i = 0; i < 2; i++) {
			rc = boot(sim, cfg, fx->url, &ck, false, msg, sizeof(msg));
			if (rc != 0) {
				snprintf(why, cap, "resume %d after cut at %llu%s failed (%d): %s", i,
					 (unsigned long long)c1, torn1 ? " (torn)" : "", rc, msg);
				goto out;
			}
		}
	}
	ok = result_ok(sim, sc, fx);
	if (!ok)
		snprintf(why, cap, "target differs after cut at %llu%s / %llu", (unsigned long long)c1, torn1 ? " (torn)" : "",
			 (unsigned long long)c2);
out:
	fota_sim_free(sim);
	return ok;
}

static uint64_t tried_total, survived_total;

static void powercut(const struct scenario *sc)
{
	struct fixture fx;
	tagent_pair(&fx.src, &fx.dst, &fx.len, 5);
	char *path = NULL;
	CU_ASSERT_FATAL(asprintf(&path, "%s/pc-%s.fota", unit_tmpdir(), sc->name) > 0);
	struct tpkg o = { .mode = sc->mode, .delta = sc->delta, .mixed = sc->mixed, .chunk = 4096, .model = "HX-100", .security_version = 2,
			  .corrupt_chunk = -1, .scratch_max = 32768 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(path, fx.src, fx.len, fx.dst, fx.len, &o), 0);
	if (sc->delta)
		CU_ASSERT(o.n_delta >= 6);
	if (sc->mixed)
		CU_ASSERT(o.n_delta < 12);
	if (sc->mode == FOTA_MODE_INPLACE) {
		/* the pair must make the scheme work: stashes, scratch reads, written-ahead chunks */
		CU_ASSERT(o.n_stash > 0);
		CU_ASSERT(o.n_scratch_reads > 0);
		CU_ASSERT(o.n_ahead > 0);
		printf("\n  %s: %zu delta chunks, %zu stashes, %zu scratch reads, %zu written ahead ", sc->name, o.n_delta,
		       o.n_stash, o.n_scratch_reads, o.n_ahead);
	}
	snprintf(fx.url, sizeof(fx.url), "file://%s", path);
	if (sc->no_sha_ext)
		CU_ASSERT_EQUAL_FATAL(setenv("FOTA_NO_SHA_EXT", "1", 1), 0);
	struct agent_config *cfg = tagent_config(sc->mode, sc->stream, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	char why[700] = "";
	uint64_t total = 0;
	bool ok = run(sc, &fx, cfg, 0, false, 0, false, &total, why, sizeof(why));
	CU_ASSERT(ok);
	CU_ASSERT(total > 20);
	if (!ok)
		fprintf(stderr, "\n  %s: %s\n", sc->name, why);
	bool full = getenv("FOTA_POWERCUT_FULL") && strcmp(getenv("FOTA_POWERCUT_FULL"), "1") == 0;
	uint64_t tried = 0, survived = 0;
	for (uint64_t c = 1; c <= total; c++) {
		for (int torn = 0; torn < 2; torn++) {
			/* a second cut in the first resume, at a point that varies with c */
			uint64_t c2s[2] = { 0, 1 + (c * 7 + (uint64_t)torn * 3) % (total / 2 + 1) };
			uint64_t n2 = full ? total : 2;
			for (uint64_t i = 0; i < n2; i++) {
				uint64_t c2 = full ? i : c2s[i];
				tried++;
				why[0] = 0;
				if (run(sc, &fx, cfg, c, torn, c2, (c2 & 1) != 0, NULL, why, sizeof(why)))
					survived++;
				else if (tried - survived <= 3)
					fprintf(stderr, "\n  %s: %s\n", sc->name, why);
			}
		}
	}
	printf("\n  power-cut %s: %llu events, %llu cut points tried, %llu survived ", sc->name, (unsigned long long)total,
	       (unsigned long long)tried, (unsigned long long)survived);
	tried_total += tried;
	survived_total += survived;
	CU_ASSERT_EQUAL(survived, tried);
	if (sc->no_sha_ext)
		CU_ASSERT_EQUAL(unsetenv("FOTA_NO_SHA_EXT"), 0);
	agent_config_free(cfg);
	free(path);
	free(fx.src);
	free(fx.dst);
}

static void test_agent_powercut_ab_full_store(void)
{
	static const struct scenario sc = { "ab-full-store", FOTA_MODE_AB, false, false, false, false, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_delta_store(void)
{
	static const struct scenario sc = { "ab-delta-store", FOTA_MODE_AB, true, false, false, false, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_delta_stream(void)
{
	static const struct scenario sc = { "ab-delta-stream", FOTA_MODE_AB, true, true, false, false, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_full_store_rb(void)
{
	static const struct scenario sc = { "ab-full-store-rb", FOTA_MODE_AB, false, false, false, true, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_delta_store_rb(void)
{
	static const struct scenario sc = { "ab-delta-store-rb", FOTA_MODE_AB, true, false, false, true, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_delta_stream_rb(void)
{
	static const struct scenario sc = { "ab-delta-stream-rb", FOTA_MODE_AB, true, true, false, true, false };
	powercut(&sc);
}

static void test_agent_powercut_ab_full_store_rb_noext(void)
{
	static const struct scenario sc = { "ab-full-store-rb-noext", FOTA_MODE_AB, false, false, false, true, true };
	powercut(&sc);
}

static void test_agent_powercut_inplace_delta_store(void)
{
	static const struct scenario sc = { "inplace-delta-store", FOTA_MODE_INPLACE, true, false, false, false, false };
	powercut(&sc);
}

static void test_agent_powercut_inplace_delta_stream(void)
{
	static const struct scenario sc = { "inplace-delta-stream", FOTA_MODE_INPLACE, true, true, false, false, false };
	powercut(&sc);
}

static void test_agent_powercut_inplace_mixed_store(void)
{
	/* full chunks are written straight into the partition, delta ones ahead */
	static const struct scenario sc = { "inplace-mixed-store", FOTA_MODE_INPLACE, true, false, true, false, false };
	powercut(&sc);
}

static void test_agent_powercut_summary(void)
{
	printf("\n  power-cut: %llu cut points tried, %llu survived ", (unsigned long long)tried_total,
	       (unsigned long long)survived_total);
	CU_ASSERT(tried_total > 0);
	CU_ASSERT_EQUAL(tried_total, survived_total);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_powercut_ab_full_store);
	UNIT_ADD(s, test_agent_powercut_ab_delta_store);
	UNIT_ADD(s, test_agent_powercut_ab_delta_stream);
	UNIT_ADD(s, test_agent_powercut_ab_full_store_rb);
	UNIT_ADD(s, test_agent_powercut_ab_delta_store_rb);
	UNIT_ADD(s, test_agent_powercut_ab_delta_stream_rb);
	UNIT_ADD(s, test_agent_powercut_ab_full_store_rb_noext);
	UNIT_ADD(s, test_agent_powercut_inplace_delta_store);
	UNIT_ADD(s, test_agent_powercut_inplace_delta_stream);
	UNIT_ADD(s, test_agent_powercut_inplace_mixed_store);
	UNIT_ADD(s, test_agent_powercut_summary);
}
UNIT_SUITE("agent/powercut", add)
