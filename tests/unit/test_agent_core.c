/*
 * Suite agent/core: refusals before anything is written (model, signature, tampered
 * manifest, unsigned package, corrupt chunk, expiry, security floor, source), retry
 * with backoff on a fake clock, a package that changes on the server, cancel, status,
 * and the strict parsers of the agent (configuration, journal, ustar header).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fota/container.h"
#include "fota/tarhead.h"
#include "../../agent/journal.h"
#include "test_agent_util.h"
#include "unit.h"

struct world {
	struct fota_sim *sim;
	struct agent_config *cfg;
	struct tclock ck;
	uint8_t *src, *dst;
	size_t len;
	char path[600], url[640];
	char msg[FOTA_ERROR_MSG_MAX];
	struct agent_journal j;
};

static uint64_t next_floor; /* the device's configured floor for the next world */

static int world_init(struct world *w, enum fota_mode mode, bool stream, struct tpkg *o, const char *tag)
{
	memset(w, 0, sizeof(*w));
	tagent_pair(&w->src, &w->dst, &w->len, 11);
	snprintf(w->path, sizeof(w->path), "%s/core-%s.fota", unit_tmpdir(), tag);
	snprintf(w->url, sizeof(w->url), "file://%s", w->path);
	o->mode = mode;
	if (!o->chunk)
		o->chunk = 8192;
	if (tagent_build(w->path, w->src, w->len, w->dst, w->len, o) != 0)
		return -1;
	w->sim = fota_sim_new();
	w->cfg = tagent_config(mode, stream, NULL);
	if (w->cfg)
		w->cfg->security_version = next_floor;
	next_floor = 0;
	uint8_t *junk = calloc(1, w->len + 4096), *zero = calloc(1, 131072);
	int rc = junk && zero && w->sim && w->cfg ? 0 : -1;
	if (rc == 0 && mode == FOTA_MODE_AB) {
		if (fota_sim_dev_set(w->sim, "slot_a", w->src, w->len) != FOTA_OK ||
		    fota_sim_dev_set(w->sim, "slot_b", junk, w->len + 4096) != FOTA_OK)
			rc = -1;
	} else if (rc == 0 && (fota_sim_dev_set(w->sim, "part", w->src, w->len) != FOTA_OK ||
			       fota_sim_dev_set(w->sim, "scratch", zero, 131072) != FOTA_OK)) {
		rc = -1;
	}
	free(junk);
	free(zero);
	return rc;
}

static void world_free(struct world *w)
{
	fota_sim_free(w->sim);
	agent_config_free(w->cfg);
	free(w->src);
	free(w->dst);
}

enum cmd { C_DOWNLOAD, C_DAU, C_UPDATE, C_RESUME, C_CANCEL };

static int world_run(struct world *w, enum cmd c)
{
	struct agent_env env = { w->cfg, fota_sim_store(w->sim), fota_sim_devices(w->sim), tagent_clock(&w->ck), NULL };
	struct agent *a = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	if (agent_open(&env, &a, &err) != FOTA_OK) {
		snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
		return -1;
	}
	int rc;
	switch (c) {
	case C_DOWNLOAD: rc = agent_download(a, w->url, false, &err); break;
	case C_DAU: rc = agent_download(a, w->url, true, &err); break;
	case C_UPDATE: rc = agent_update(a, &err); break;
	case C_RESUME: rc = agent_resume(a, &err); break;
	default: rc = agent_cancel(a, &err); break;
	}
	snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
	w->j = *agent_journal(a);
	agent_close(a);
	return rc;
}

static uint64_t target_writes(struct world *w)
{
	return fota_sim_dev_writes(w->sim, "slot_b") + fota_sim_dev_writes(w->sim, "part") +
	       fota_sim_dev_writes(w->sim, "scratch");
}

static bool target_is(struct world *w, const char *dev)
{
	size_t n = 0;
	uint8_t *got = fota_sim_dev_get(w->sim, dev, &n);
	bool ok = got && n >= w->len && memcmp(got, w->dst, w->len) == 0;
	free(got);
	return ok;
}

/* A refusal: the exit code, a message containing `needle`, nothing written, job failed. */
static void refused(struct tpkg *o, enum fota_mode mode, int want, const char *needle, const char *tag)
{
	struct world w;
	CU_ASSERT_EQUAL_FATAL(world_init(&w, mode, false, o, tag), 0);
	int rc = world_run(&w, C_DAU);
	CU_ASSERT_EQUAL(rc, want);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, needle));
	if (rc != want || !strstr(w.msg, needle))
		fprintf(stderr, "\n  %s: exit %d: %s\n", tag, rc, w.msg);
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(w.sim, "slot_a"), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_FAILED);
	CU_ASSERT_EQUAL(w.j.result, want);
	/* resume after a final failure does nothing */
	CU_ASSERT_EQUAL(world_run(&w, C_RESUME), 0);
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	world_free(&w);
}

static void test_agent_core_happy_ab_and_inplace(void)
{
	struct tpkg o = { .model = "HX-100", .security_version = 4, .corrupt_chunk = -1, .delta = true };
	struct world w;
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "happy-ab"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DOWNLOAD), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_DOWNLOADED);
	CU_ASSERT_EQUAL(target_writes(&w), 0); /* download alone writes no slot */
	CU_ASSERT_EQUAL(world_run(&w, C_RESUME), 0); /* a finished download waits for update */
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_DOWNLOADED);
	CU_ASSERT_EQUAL(world_run(&w, C_UPDATE), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(w.j.target_slot, 'b');
	CU_ASSERT(target_is(&w, "slot_b"));
	CU_ASSERT_EQUAL(fota_sim_dev_writes(w.sim, "slot_a"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_UPDATE), AGENT_EXIT_STATE); /* nothing left to update */
	world_free(&w);

	struct tpkg p = { .model = "HX-100", .corrupt_chunk = -1, .delta = true, .scratch_max = 32768 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_INPLACE, true, &p, "happy-ip"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), 0);
	CU_ASSERT(target_is(&w, "part"));
	world_free(&w);
}

static void test_agent_core_refuses_other_model(void)
{
	struct tpkg o = { .model = "OTHER-9", .corrupt_chunk = -1 };
	refused(&o, FOTA_MODE_AB, AGENT_EXIT_DEVICE, "OTHER-9", "model");
}

static void test_agent_core_refuses_untrusted_signer(void)
{
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .signer = "other-signer" };
	refused(&o, FOTA_MODE_AB, AGENT_EXIT_SIGNATURE, "package", "untrusted");
}

static void test_agent_core_refuses_corrupt_chunk_ab(void)
{
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = 3, .delta = true };
	refused(&o, FOTA_MODE_AB, AGENT_EXIT_CORRUPT, "chunk 3", "corrupt-ab");
}

static void test_agent_core_refuses_corrupt_chunk_inplace(void)
{
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = 2, .delta = true, .scratch_max = 32768 };
	refused(&o, FOTA_MODE_INPLACE, AGENT_EXIT_CORRUPT, "chunk 2", "corrupt-ip");
}

static void test_agent_core_refuses_expired(void)
{
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .expires = 1861920000 /* 2029-01-01 */ };
	refused(&o, FOTA_MODE_AB, AGENT_EXIT_NOT_ACCEPTABLE, "expired", "expired");
}

static void test_agent_core_refuses_below_floor(void)
{
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .security_version = 2 };
	next_floor = 3;
	refused(&o, FOTA_MODE_AB, AGENT_EXIT_NOT_ACCEPTABLE, "floor 3", "floor");
}

static void test_agent_core_refuses_wrong_mode(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "mode"), 0);
	agent_config_free(w.cfg);
	w.cfg = tagent_config(FOTA_MODE_INPLACE, false, NULL);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_NOT_ACCEPTABLE);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "mode ab"));
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	world_free(&w);
}

static void test_agent_core_refuses_tampered_manifest(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "tamper"), 0);
	size_t n = 0;
	uint8_t *pkg = unit_read_file(w.path, &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pkg);
	uint8_t *p = memmem(pkg, n, "unit-fw", 7);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	p[6] = 'x';
	FILE *f = fopen(w.path, "wb");
	fwrite(pkg, 1, n, f);
	fclose(f);
	free(pkg);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_SIGNATURE);
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	world_free(&w);
}

static void test_agent_core_refuses_unsigned(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "unsigned"), 0);
	struct fota_pkg_writer *pw = NULL;
	struct fota_error err;
	const char *js = "{}";
	CU_ASSERT_EQUAL_FATAL(fota_pkg_writer_open(w.path, &pw, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fota_pkg_writer_add(pw, "manifest.json", js, 2, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fota_pkg_writer_add(pw, "images/system/000000.zst", "x", 1, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fota_pkg_writer_commit(pw, &err), FOTA_OK);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_SIGNATURE);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "unsigned"));
	world_free(&w);
}

static void test_agent_core_refuses_wrong_source(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .delta = true, .scratch_max = 32768 };
	for (int mode = 0; mode < 2; mode++) {
		CU_ASSERT_EQUAL_FATAL(world_init(&w, mode ? FOTA_MODE_INPLACE : FOTA_MODE_AB, false, &o, mode ? "src-ip" : "src-ab"), 0);
		w.src[1000] ^= 1;
		CU_ASSERT_EQUAL(fota_sim_dev_set(w.sim, mode ? "part" : "slot_a", w.src, w.len), FOTA_OK);
		CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_SOURCE);
		CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "nothing was written"));
		CU_ASSERT_EQUAL(target_writes(&w), 0);
		CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_FAILED);
		world_free(&w);
	}
}

static void test_agent_core_floor_raised_after_install(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .security_version = 7 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "floor7"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), 0);
	/* a package at 5 is now below the floor of 7 */
	struct tpkg p = { .model = "HX-100", .corrupt_chunk = -1, .security_version = 5 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(w.path, w.src, w.len, w.dst, w.len, &p), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_NOT_ACCEPTABLE);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "floor 7"));
	world_free(&w);
}

static void test_agent_core_backoff_and_window(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "backoff"), 0);
	snprintf(w.url, sizeof(w.url), "http://127.0.0.1:1/pkg.fota"); /* nothing listens on port 1 */
	int64_t t0 = tagent_clock(&w.ck).now_ms(&w.ck);
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_DOWNLOAD);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "retry window"));
	/* window 60 s, base 1 s, cap 8 s: several sleeps, none above the cap, within the window */
	CU_ASSERT(w.ck.sleeps >= 5);
	CU_ASSERT(w.ck.max_sleep_ms <= 8000);
	CU_ASSERT(w.ck.now_ms - t0 <= 60000);
	CU_ASSERT(w.ck.slept_ms >= 10000);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_FAILED);
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	/* a malformed URL is refused at once */
	snprintf(w.url, sizeof(w.url), "ftp://example.com/x");
	uint64_t sleeps = w.ck.sleeps;
	CU_ASSERT_EQUAL(world_run(&w, C_DAU), AGENT_EXIT_DOWNLOAD);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "scheme"));
	CU_ASSERT_EQUAL(w.ck.sleeps, sleeps);
	world_free(&w);
}

/* A/B device with incompressible 256 KiB images: the package is larger than the head request. */
static int big_world(struct world *w, struct tpkg *o)
{
	if (world_init(w, FOTA_MODE_AB, false, o, "changed") != 0)
		return -1;
	const size_t big = 262144;
	free(w->src);
	free(w->dst);
	w->src = malloc(big);
	w->dst = malloc(big);
	w->len = big;
	unit_fill_random(w->src, big, 71);
	unit_fill_random(w->dst, big, 72);
	uint8_t *junk = calloc(1, big);
	int rc = fota_sim_dev_set(w->sim, "slot_a", w->src, big) != FOTA_OK ||
		 fota_sim_dev_set(w->sim, "slot_b", junk, big) != FOTA_OK ||
		 tagent_build(w->path, w->src, big, w->dst, big, o) != 0;
	free(junk);
	w->ck.tick_ms = 300; /* checkpoints every few chunks */
	return rc ? -1 : 0;
}

static void test_agent_core_package_changed_restarts(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .chunk = 16384 };
	/* cut the power in the middle of the download, after some chunks were journaled */
	bool found = false;
	for (uint64_t cut = 20; cut < 200 && !found; cut += 3) {
		CU_ASSERT_EQUAL_FATAL(big_world(&w, &o), 0);
		fota_sim_set_cut(w.sim, cut, false);
		CU_ASSERT_NOT_EQUAL(world_run(&w, C_DAU), 0);
		fota_sim_reboot(w.sim);
		found = w.j.phase == AGENT_PH_DOWNLOADING && w.j.head_ok && w.j.dl_next > 0 && w.j.dl_next < 16;
		if (!found)
			world_free(&w);
	}
	CU_ASSERT_FATAL(found);
	/* the server now has another package at the same URL */
	unit_fill_random(w.dst, w.len, 73);
	struct tpkg p = { .model = "HX-100", .corrupt_chunk = -1, .chunk = 8192 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(w.path, w.src, w.len, w.dst, w.len, &p), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_RESUME), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(w.j.restarts, 1);
	CU_ASSERT(target_is(&w, "slot_b"));
	world_free(&w);
}

static void test_agent_core_package_changed_while_streaming(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .chunk = 16384 };
	/* stream mode: cut the power while chunks are being applied */
	bool found = false;
	for (uint64_t cut = 30; cut < 300 && !found; cut += 4) {
		CU_ASSERT_EQUAL_FATAL(big_world(&w, &o), 0);
		agent_config_free(w.cfg);
		w.cfg = tagent_config(FOTA_MODE_AB, true, NULL);
		fota_sim_set_cut(w.sim, cut, false);
		CU_ASSERT_NOT_EQUAL(world_run(&w, C_DAU), 0);
		fota_sim_reboot(w.sim);
		found = w.j.phase == AGENT_PH_APPLYING && w.j.ap_next > 0 && w.j.ap_next < 12;
		if (!found)
			world_free(&w);
	}
	CU_ASSERT_FATAL(found);
	unit_fill_random(w.dst, w.len, 74);
	struct tpkg p = { .model = "HX-100", .corrupt_chunk = -1, .chunk = 8192 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(w.path, w.src, w.len, w.dst, w.len, &p), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_RESUME), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(w.j.restarts, 1);
	CU_ASSERT(target_is(&w, "slot_b"));
	CU_ASSERT_EQUAL(fota_sim_dev_writes(w.sim, "slot_a"), 0);
	world_free(&w);
}

static void test_agent_core_cancel(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .delta = true, .scratch_max = 32768 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "cancel"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DOWNLOAD), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_CANCEL), 0);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_IDLE);
	CU_ASSERT_EQUAL(world_run(&w, C_UPDATE), AGENT_EXIT_STATE);
	CU_ASSERT_EQUAL(target_writes(&w), 0);
	world_free(&w);
	/* in place: refused once the partition is being written */
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_INPLACE, false, &o, "cancel-ip"), 0);
	fota_sim_set_cut(w.sim, 0, false);
	CU_ASSERT_EQUAL(world_run(&w, C_DOWNLOAD), 0);
	uint64_t ev = fota_sim_events(w.sim);
	fota_sim_set_cut(w.sim, 30, false);
	CU_ASSERT_NOT_EQUAL(world_run(&w, C_UPDATE), 0);
	fota_sim_reboot(w.sim);
	CU_ASSERT(fota_sim_events(w.sim) > ev);
	CU_ASSERT_EQUAL(w.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(world_run(&w, C_CANCEL), AGENT_EXIT_STATE);
	CU_ASSERT_PTR_NOT_NULL(strstr(w.msg, "resume"));
	CU_ASSERT_EQUAL(world_run(&w, C_RESUME), 0);
	CU_ASSERT(target_is(&w, "part"));
	world_free(&w);
}

static void test_agent_core_status_json(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "status"), 0);
	CU_ASSERT_EQUAL(world_run(&w, C_DOWNLOAD), 0);
	struct agent_env env = { w.cfg, fota_sim_store(w.sim), fota_sim_devices(w.sim), tagent_clock(&w.ck), NULL };
	struct agent *a = NULL;
	struct fota_error err;
	CU_ASSERT_EQUAL_FATAL(agent_open(&env, &a, &err), FOTA_OK);
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	CU_ASSERT_EQUAL(agent_status(a, true, f, &err), 0);
	fclose(f);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"phase\":\"downloaded\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"name\":\"unit-fw\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"version\":\"2.0\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"chunks\":6,\"chunks_downloaded\":6"));
	free(buf);
	agent_close(a);
	world_free(&w);
}

/* ---- parsers ---- */


static void test_agent_core_config_strict(void)
{
	char *good = tagent_config_text(FOTA_MODE_AB, false, NULL);
	struct agent_config *c = NULL;
	struct fota_error err;
	CU_ASSERT_EQUAL_FATAL(agent_config_parse(good, "t.conf", &c, &err), FOTA_OK);
	CU_ASSERT_EQUAL(c->retry_window_s, 60);
	CU_ASSERT_EQUAL(c->backoff_max_s, 8);
	CU_ASSERT_EQUAL(c->active_slot, 'a');
	CU_ASSERT_EQUAL(c->n_trust, 1);
	agent_config_free(c);
	char *t = tagent_config_text(FOTA_MODE_AB, false, "colour = blue\n");
	tagent_expect_config_error(t, "[download] colour: unknown key");
	free(t);
	t = tagent_config_text(FOTA_MODE_AB, false, "[nosuch]\nx = 1\n");
	tagent_expect_config_error(t, "[nosuch] x: unknown section");
	free(t);
	t = tagent_config_text(FOTA_MODE_AB, false, "retry_window_minutes = 5\n");
	tagent_expect_config_error(t, "given twice");
	free(t);
	t = tagent_config_text(FOTA_MODE_AB, false, "low_speed_time_seconds = -3\n");
	tagent_expect_config_error(t, "low_speed_time_seconds");
	free(t);
	t = tagent_config_text(FOTA_MODE_AB, false, "[agent]\ncrl =\n");
	tagent_expect_config_error(t, "empty value");
	free(t);
	tagent_expect_config_error("[device]\nmode = ab\n", "missing");
	tagent_expect_config_error("[device]\nmode = dual\n", "must be ab or inplace");
	/* removing a required key names it */
	char *noslot = strdup(good);
	char *p = strstr(noslot, "slot_b = slot_b\n");
	memmove(p, p + 16, strlen(p + 16) + 1);
	tagent_expect_config_error(noslot, "[device] slot_b: missing");
	free(noslot);
	char *nostate = strdup(good);
	p = strstr(nostate, "state_dir");
	p[0] = 'X';
	tagent_expect_config_error(nostate, "unknown key");
	free(nostate);
	t = tagent_config_text(FOTA_MODE_INPLACE, false, "[device]\nslot_a = x\n");
	tagent_expect_config_error(t, "only for mode = ab");
	free(t);
	tagent_expect_config_error("garbage line\n", "t.conf:1");
	free(good);
}

static void test_agent_core_state_dir_errors(void)
{
	struct fota_store *st = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	CU_ASSERT_EQUAL(fota_dirstore_open("/nonexistent/fota-state", &st, &err), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "state_dir /nonexistent/fota-state"));
	char *file = unit_write_file("not-a-dir", "x", 1);
	CU_ASSERT_EQUAL(fota_dirstore_open(file, &st, &err), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a directory"));
	free(file);
	if (geteuid() != 0) {
		char dir[600];
		snprintf(dir, sizeof(dir), "%s/ro-state", unit_tmpdir());
		mkdir(dir, 0500);
		CU_ASSERT_EQUAL(fota_dirstore_open(dir, &st, &err), FOTA_E_IO);
		CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not writable"));
		chmod(dir, 0700);
	}
	/* a usable one: records replace atomically, no temp file left */
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/state-ok", unit_tmpdir());
	mkdir(dir, 0700);
	CU_ASSERT_EQUAL_FATAL(fota_dirstore_open(dir, &st, &err), FOTA_OK);
	CU_ASSERT_EQUAL(st->ops->commit(st, "journal", "one", 3, &err), FOTA_OK);
	CU_ASSERT_EQUAL(st->ops->commit(st, "journal", "two!", 4, &err), FOTA_OK);
	uint8_t *d = NULL;
	size_t n = 0;
	bool found = false;
	CU_ASSERT_EQUAL(st->ops->load(st, "journal", 100, &d, &n, &found, &err), FOTA_OK);
	CU_ASSERT(found && n == 4 && memcmp(d, "two!", 4) == 0);
	free(d);
	char tmp[700];
	snprintf(tmp, sizeof(tmp), "%s/journal.tmp", dir);
	CU_ASSERT_NOT_EQUAL(access(tmp, F_OK), 0);
	CU_ASSERT_EQUAL(st->ops->load(st, "absent", 100, &d, &n, &found, &err), FOTA_OK);
	CU_ASSERT(!found && d == NULL);
	fota_store_close(st);
}

static void test_agent_core_journal_roundtrip_and_strict(void)
{
	struct agent_journal j, k;
	memset(&j, 0, sizeof(j));
	j.op = AGENT_OP_DOWNLOAD_AND_UPDATE;
	j.phase = AGENT_PH_APPLYING;
	j.state = 60; /* FUMO Update Progressing */
	snprintf(j.url, sizeof(j.url), "https://cdn.example/p \"q\".fota");
	snprintf(j.etag, sizeof(j.etag), "\"abc\"");
	j.pkg_size = 123456;
	j.head_ok = true;
	j.manifest_len = 2000;
	j.sig_len = 700;
	j.manifest_sha256[5] = 0xee;
	j.target_slot = 'b';
	j.dl_next = 9;
	j.ap_next = 4;
	j.ip_step = 2;
	j.source_ok = true;
	j.bytes = 99;
	snprintf(j.message, sizeof(j.message), "applied 4 of 9");
	char *s = NULL;
	size_t n = 0;
	struct fota_error err;
	CU_ASSERT_EQUAL_FATAL(agent_journal_format(&j, &s, &n, &err), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(agent_journal_parse((uint8_t *)s, n, &k, &err), FOTA_OK);
	CU_ASSERT_EQUAL(memcmp(&j, &k, sizeof(j)), 0);
	/* strictness */
	static const char *const bad[][2] = {
		{ "{}", "version" },
		{ "[1]", "not a JSON object" },
		{ "{\"version\":3}", "version" },
		{ "{\"version\":1,\"version\":1}", "not JSON" },
		{ "{\"extra\":1}", "unknown key" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fota_error_clear(&err);
		CU_ASSERT_NOT_EQUAL(agent_journal_parse((const uint8_t *)bad[i][0], strlen(bad[i][0]), &k, &err), FOTA_OK);
		CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, bad[i][1]));
	}
	char *t = strdup(s);
	char *p = strstr(t, "\"ip_step\":2");
	p[10] = '7';
	CU_ASSERT_NOT_EQUAL(agent_journal_parse((uint8_t *)t, n, &k, &err), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ip_step"));
	free(t);
	free(s);
}

static void test_agent_core_tarhead_strict(void)
{
	struct world w;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(world_init(&w, FOTA_MODE_AB, false, &o, "tar"), 0);
	size_t n = 0;
	uint8_t *pkg = unit_read_file(w.path, &n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pkg);
	struct fota_tarhead th;
	struct fota_error err;
	CU_ASSERT_EQUAL(fota_tarhead_parse(pkg, &th, &err), FOTA_OK);
	CU_ASSERT_STRING_EQUAL(th.name, "manifest.json");
	CU_ASSERT(th.size > 100 && th.size < n);
	uint8_t h[512];
	memcpy(h, pkg, 512);
	h[0] ^= 1; /* checksum no longer matches */
	CU_ASSERT_EQUAL(fota_tarhead_parse(h, &th, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "checksum"));
	memcpy(h, pkg, 512);
	h[257] = 'X';
	CU_ASSERT_EQUAL(fota_tarhead_parse(h, &th, &err), FOTA_E_FORMAT);
	/* a symlink with a fixed-up checksum is still refused */
	memcpy(h, pkg, 512);
	h[156] = '2';
	unsigned sum = 0;
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
	CU_ASSERT_EQUAL(fota_tarhead_parse(h, &th, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "typeflag"));
	free(pkg);
	world_free(&w);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_core_happy_ab_and_inplace);
	UNIT_ADD(s, test_agent_core_refuses_other_model);
	UNIT_ADD(s, test_agent_core_refuses_untrusted_signer);
	UNIT_ADD(s, test_agent_core_refuses_corrupt_chunk_ab);
	UNIT_ADD(s, test_agent_core_refuses_corrupt_chunk_inplace);
	UNIT_ADD(s, test_agent_core_refuses_expired);
	UNIT_ADD(s, test_agent_core_refuses_below_floor);
	UNIT_ADD(s, test_agent_core_refuses_wrong_mode);
	UNIT_ADD(s, test_agent_core_refuses_tampered_manifest);
	UNIT_ADD(s, test_agent_core_refuses_unsigned);
	UNIT_ADD(s, test_agent_core_refuses_wrong_source);
	UNIT_ADD(s, test_agent_core_floor_raised_after_install);
	UNIT_ADD(s, test_agent_core_backoff_and_window);
	UNIT_ADD(s, test_agent_core_package_changed_restarts);
	UNIT_ADD(s, test_agent_core_package_changed_while_streaming);
	UNIT_ADD(s, test_agent_core_cancel);
	UNIT_ADD(s, test_agent_core_status_json);
	UNIT_ADD(s, test_agent_core_config_strict);
	UNIT_ADD(s, test_agent_core_state_dir_errors);
	UNIT_ADD(s, test_agent_core_journal_roundtrip_and_strict);
	UNIT_ADD(s, test_agent_core_tarhead_strict);
}
UNIT_SUITE("agent/core", add)
