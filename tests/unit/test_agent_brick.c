/*
 * Suite agent/brick: an in-place update that has started writing the partition is
 * never abandoned (docs/fota-agent.md, "In-place failure and continuation"). The device
 * is the power-cut simulation; the server is a file:// URL through a symbolic link, so
 * "the server's file is fixed" is one rename of the link (the validators are the
 * target file's size and mtime). Packages: BAD streams chunk 2 corrupt, GOOD is the
 * same signed manifest with every payload right (another signature and mtime), OTHER
 * is a package of another target (another manifest). Every case ends with the exact
 * target in the partition, compared byte for byte, and counts the partition's writes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../agent/fumo.h"
#include "../../agent/journal.h"
#include "test_agent_util.h"
#include "unit.h"

#define CHUNK 8192u
#define SCRATCH 131072u

struct world {
	uint8_t *src, *dst, *other;
	size_t len;
	char bad[600], good[600], diff[600], link[600];
	char url[640], good_url[640], diff_url[640];
	struct agent_config *cfg;
	uint64_t clean_writes;     /* partition writes of one clean run of GOOD */
};

enum op { OP_DAU, OP_RESUME, OP_UPDATE, OP_CANCEL, OP_OPEN };

struct run {
	int rc;
	struct agent_journal j;
	char msg[FOTA_ERROR_MSG_MAX];
	char *log;
	size_t log_len;
};

static void run_free(struct run *r)
{
	free(r->log);
	r->log = NULL;
}

/* One agent "boot" on the surviving storage: open, run op, close. log: NULL = a
 * memory log kept in r->log. */
static void boot(struct fota_sim *sim, const struct agent_config *cfg, struct tclock *ck, enum op op,
		 const char *url, FILE *log, struct run *r)
{
	run_free(r);
	FILE *mem = log ? NULL : open_memstream(&r->log, &r->log_len);
	struct agent_env env = { cfg, fota_sim_store(sim), fota_sim_devices(sim), tagent_clock(ck), log ? log : mem };
	struct agent *a = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	r->rc = AGENT_EXIT_IO;
	if (agent_open(&env, &a, &err) == FOTA_OK) {
		switch (op) {
		case OP_DAU: r->rc = agent_download(a, url, true, &err); break;
		case OP_RESUME: r->rc = agent_resume(a, &err); break;
		case OP_UPDATE: r->rc = agent_update(a, &err); break;
		case OP_CANCEL: r->rc = agent_cancel(a, &err); break;
		case OP_OPEN: r->rc = 0; break;
		}
		r->j = *agent_journal(a);
	}
	snprintf(r->msg, sizeof(r->msg), "%s", err.msg);
	agent_close(a);
	if (mem)
		fclose(mem);
}

static struct fota_sim *device(const struct world *w)
{
	struct fota_sim *sim = fota_sim_new();
	uint8_t *zero = calloc(1, SCRATCH);
	if (!sim || !zero || fota_sim_dev_set(sim, "part", w->src, w->len) != FOTA_OK ||
	    fota_sim_dev_set(sim, "scratch", zero, SCRATCH) != FOTA_OK) {
		fota_sim_free(sim);
		sim = NULL;
	}
	free(zero);
	return sim;
}

static bool part_is(struct fota_sim *sim, const uint8_t *want, size_t len)
{
	size_t n = 0;
	uint8_t *got = fota_sim_dev_get(sim, "part", &n);
	bool ok = got && n >= len && memcmp(got, want, len) == 0;
	free(got);
	return ok;
}

/* The server's file behind the link. */
static void serve(const struct world *w, const char *path)
{
	(void)unlink(w->link);
	CU_ASSERT_EQUAL_FATAL(symlink(path, w->link), 0);
}

static int build(const char *path, const struct world *w, const uint8_t *dst, long corrupt, int64_t expires)
{
	struct tpkg o = { .mode = FOTA_MODE_INPLACE, .model = "HX-100", .corrupt_chunk = corrupt, .delta = true,
			  .scratch_max = 32768, .chunk = CHUNK, .expires = expires };
	return tagent_build(path, w->src, w->len, dst, w->len, &o);
}

/* Packages, link and config; the clean run's write count. expires: 0 = never. */
static void world_init(struct world *w, const char *tag, int64_t expires)
{
	memset(w, 0, sizeof(*w));
	tagent_pair(&w->src, &w->dst, &w->len, 23);
	w->other = malloc(w->len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w->other);
	memcpy(w->other, w->dst, w->len);
	for (size_t i = 100; i < w->len; i += 4001)
		w->other[i] ^= 0x5a;
	const char *t = unit_tmpdir();
	snprintf(w->bad, sizeof(w->bad), "%s/brick-%s-bad.fota", t, tag);
	snprintf(w->good, sizeof(w->good), "%s/brick-%s-good.fota", t, tag);
	snprintf(w->diff, sizeof(w->diff), "%s/brick-%s-other.fota", t, tag);
	snprintf(w->link, sizeof(w->link), "%s/brick-%s-server.fota", t, tag);
	snprintf(w->url, sizeof(w->url), "file://%s", w->link);
	snprintf(w->good_url, sizeof(w->good_url), "file://%s", w->good);
	snprintf(w->diff_url, sizeof(w->diff_url), "file://%s", w->diff);
	CU_ASSERT_EQUAL_FATAL(build(w->bad, w, w->dst, 2, expires), 0);
	CU_ASSERT_EQUAL_FATAL(build(w->good, w, w->dst, -1, expires), 0);
	CU_ASSERT_EQUAL_FATAL(build(w->diff, w, w->other, -1, expires), 0);
	w->cfg = tagent_config(FOTA_MODE_INPLACE, true, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w->cfg);
	/* one clean run of GOOD: the writes a whole update makes */
	struct fota_sim *sim = device(w);
	struct tclock ck = { .tick_ms = 10 };
	struct run r = { 0 };
	CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
	boot(sim, w->cfg, &ck, OP_DAU, w->good_url, NULL, &r);
	CU_ASSERT_EQUAL(r.rc, 0);
	CU_ASSERT(part_is(sim, w->dst, w->len));
	w->clean_writes = fota_sim_dev_writes(sim, "part");
	CU_ASSERT(w->clean_writes > 4);
	run_free(&r);
	fota_sim_free(sim);
}

static void world_free(struct world *w)
{
	agent_config_free(w->cfg);
	free(w->src);
	free(w->dst);
	free(w->other);
	(void)unlink(w->link);
}

/* download-and-update of BAD through the link: the run fails at chunk 2, held. */
static void fail_first(const struct world *w, struct fota_sim *sim, struct tclock *ck, struct run *r)
{
	serve(w, w->bad);
	boot(sim, w->cfg, ck, OP_DAU, w->url, NULL, r);
	CU_ASSERT_EQUAL(r->rc, AGENT_EXIT_CORRUPT);
	CU_ASSERT_EQUAL(r->j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(r->j.ap_next, 2);
	CU_ASSERT_EQUAL(r->j.state, FUMO_UPD_FAILED_DATA);
	CU_ASSERT_EQUAL(r->j.alert_result, FUMO_R_CORRUPT);
	CU_ASSERT(fota_sim_dev_writes(sim, "part") > 0);
	CU_ASSERT(fota_sim_dev_writes(sim, "part") < w->clean_writes);
	if (r->rc != AGENT_EXIT_CORRUPT)
		fprintf(stderr, "\n  brick: first run: exit %d: %s\n", r->rc, r->msg);
}

static uint8_t *load_journal(struct fota_sim *sim, size_t *len)
{
	struct fota_store *st = fota_sim_store(sim);
	uint8_t *data = NULL;
	bool found = false;
	struct fota_error err;
	if (st->ops->load(st, "journal", AGENT_JOURNAL_MAX, &data, len, &found, &err) != FOTA_OK || !found) {
		free(data);
		return NULL;
	}
	return data;
}

/* A device whose in-place update failed at chunk 2 (fail_first), and its agent runs. */
struct held {
	struct world w;
	struct fota_sim *sim;
	struct tclock ck;
	struct run r;
};

static void held_start(struct held *h, const char *tag, int64_t expires)
{
	memset(h, 0, sizeof(*h));
	h->ck.tick_ms = 10;
	(void)tagent_clock(&h->ck); /* sets the start time */
	world_init(&h->w, tag, expires);
	h->sim = device(&h->w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h->sim);
	fail_first(&h->w, h->sim, &h->ck, &h->r);
}

static void held_run(struct held *h, enum op op, const char *url)
{
	boot(h->sim, h->w.cfg, &h->ck, op, url, NULL, &h->r);
}

/* The last run completed the update: exact target, job done, and the partition saw the
 * writes of one clean run in all (the chunks applied before the failure once). */
static void held_completed(struct held *h, const char *tag)
{
	CU_ASSERT_EQUAL(h->r.rc, 0);
	if (h->r.rc != 0)
		fprintf(stderr, "\n  brick %s: exit %d: %s\n", tag, h->r.rc, h->r.msg);
	CU_ASSERT(part_is(h->sim, h->w.dst, h->w.len));
	CU_ASSERT_EQUAL(h->r.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(h->r.j.state, FUMO_UPD_OK_NODATA);
	CU_ASSERT_EQUAL(h->r.j.alert_result, FUMO_R_OK);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h->sim, "part"), h->w.clean_writes);
}

static void held_free(struct held *h)
{
	run_free(&h->r);
	fota_sim_free(h->sim);
	world_free(&h->w);
}

/* ---- cases ---- */

/* A package with another manifest, offered under another URL or at the job's own URL,
 * is refused with nothing written (not the partition, not the journal); the job then
 * completes with its own package under yet another URL. */
static void test_agent_brick_other_manifest_refused(void)
{
	struct held h;
	held_start(&h, "other", 0);
	const uint64_t writes = fota_sim_dev_writes(h.sim, "part");
	size_t jl0 = 0, jl1 = 0;
	uint8_t *j0 = load_journal(h.sim, &jl0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j0);

	held_run(&h, OP_DAU, h.w.diff_url);
	CU_ASSERT_EQUAL(h.r.rc, AGENT_EXIT_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.r.msg, "is half applied at chunk 2; only a package with the same signed manifest can complete it"));
	if (!strstr(h.r.msg, "half applied"))
		fprintf(stderr, "\n  brick other: exit %d: %s\n", h.r.rc, h.r.msg);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h.sim, "part"), writes);
	uint8_t *j1 = load_journal(h.sim, &jl1);
	CU_ASSERT(j1 && jl1 == jl0 && memcmp(j0, j1, jl0) == 0); /* the journal untouched */
	free(j1);
	free(j0);
	CU_ASSERT_EQUAL(h.r.j.ap_next, 2);
	CU_ASSERT_STRING_EQUAL(h.r.j.url, h.w.url);

	/* the job's own URL now serves the other package: refused the same way, held */
	serve(&h.w, h.w.diff);
	held_run(&h, OP_RESUME, NULL);
	CU_ASSERT_EQUAL(h.r.rc, AGENT_EXIT_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.r.msg, "only a package with the same signed manifest can complete it"));
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h.sim, "part"), writes);
	CU_ASSERT_EQUAL(h.r.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(h.r.j.ap_next, 2);
	CU_ASSERT_EQUAL(h.r.j.state, FUMO_UPD_FAILED_DATA);
	CU_ASSERT_EQUAL(h.r.j.alert_result, FUMO_R_UPDATE_FAILED);

	/* the right package under another URL: taken, and the update completes */
	held_run(&h, OP_DAU, h.w.good_url);
	held_completed(&h, "other -> good");
	CU_ASSERT_STRING_EQUAL(h.r.j.url, h.w.good_url);
	held_free(&h);
}

/* cancel stays refused; update continues from chunk 2 (no reset), failing the same
 * while the server is wrong, completing once it is right. */
static void test_agent_brick_update_continues(void)
{
	struct held h;
	held_start(&h, "update", 0);
	const uint64_t writes = fota_sim_dev_writes(h.sim, "part");

	held_run(&h, OP_CANCEL, NULL);
	CU_ASSERT_EQUAL(h.r.rc, AGENT_EXIT_STATE);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.r.msg, "cannot cancel"));
	CU_ASSERT_EQUAL(h.r.j.phase, AGENT_PH_APPLYING);

	held_run(&h, OP_UPDATE, NULL);
	CU_ASSERT_EQUAL(h.r.rc, AGENT_EXIT_CORRUPT);
	CU_ASSERT_EQUAL(h.r.j.ap_next, 2);
	CU_ASSERT(h.r.j.source_ok);
	CU_ASSERT_EQUAL(h.r.j.state, FUMO_UPD_FAILED_DATA);
	CU_ASSERT(h.r.log && strstr(h.r.log, "continuing the in-place update at chunk 2"));
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h.sim, "part"), writes);

	serve(&h.w, h.w.good);
	held_run(&h, OP_UPDATE, NULL);
	held_completed(&h, "update");
	held_free(&h);
}

/* download-and-update with the job's URL, after the server's file was fixed. */
static void test_agent_brick_same_url_continues(void)
{
	struct held h;
	held_start(&h, "dau", 0);
	serve(&h.w, h.w.good);
	held_run(&h, OP_DAU, h.w.url);
	CU_ASSERT(h.r.log && strstr(h.r.log, "same signed manifest: continuing at chunk 2"));
	held_completed(&h, "dau");
	/* nothing pending any more */
	held_run(&h, OP_RESUME, NULL);
	CU_ASSERT_EQUAL(h.r.rc, 0);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h.sim, "part"), h.w.clean_writes);
	held_free(&h);
}

/*
 * The continuation under power loss: after the failed run the power is cut at every
 * event (write, sync, commit step) of the run that takes the repaired package and
 * completes the update, with and without a torn write; after the reboot, resume until
 * done. Always the exact target. other_url: the repaired package comes as
 * download-and-update of another URL while the job's own URL stays corrupt (a cut
 * before the new URL is journaled leaves the old one, and the DM server sends the
 * operation again); else the file at the job's URL is fixed and resume continues.
 */
static void powercut_continuation(bool other_url, const char *tag)
{
	struct world w;
	world_init(&w, tag, 0);
	struct run r = { 0 };
	uint64_t total = 0, tried = 0, survived = 0;
	for (uint64_t c = 0; c == 0 || c <= total; c++) {
		for (int torn = 0; torn < (c ? 2 : 1); torn++) {
			struct fota_sim *sim = device(&w);
			struct tclock ck = { .tick_ms = 10 };
			CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
			serve(&w, w.bad);
			boot(sim, w.cfg, &ck, OP_DAU, w.url, NULL, &r);
			bool ok = r.rc == AGENT_EXIT_CORRUPT && r.j.ap_next == 2;
			if (!other_url)
				serve(&w, w.good);
			const enum op op = other_url ? OP_DAU : OP_RESUME;
			const char *url = other_url ? w.good_url : NULL;
			uint64_t before = fota_sim_events(sim);
			fota_sim_set_cut(sim, c, torn);
			boot(sim, w.cfg, &ck, op, url, NULL, &r);
			if (c == 0) {
				total = fota_sim_events(sim) - before;
				ok = ok && r.rc == 0;
			} else {
				CU_ASSERT(fota_sim_cut_happened(sim));
				fota_sim_reboot(sim);
				/* resume at boot; the operation again while it does not complete */
				boot(sim, w.cfg, &ck, OP_RESUME, NULL, NULL, &r);
				for (int i = 0; i < 2 && (r.rc != 0 || r.j.phase != AGENT_PH_DONE); i++)
					boot(sim, w.cfg, &ck, op, url, NULL, &r);
				ok = ok && r.rc == 0 && r.j.phase == AGENT_PH_DONE;
				tried++;
			}
			ok = ok && part_is(sim, w.dst, w.len);
			if (c > 0 && ok)
				survived++;
			else if (!ok && tried - survived <= 3)
				fprintf(stderr, "\n  %s: cut at %llu%s: exit %d: %s\n", tag, (unsigned long long)c,
					torn ? " (torn)" : "", r.rc, r.msg);
			if (c == 0)
				CU_ASSERT(ok);
			fota_sim_free(sim);
		}
	}
	printf("\n  %s: %llu events, %llu cut points tried, %llu survived ", tag, (unsigned long long)total,
	       (unsigned long long)tried, (unsigned long long)survived);
	CU_ASSERT(total > 20);
	CU_ASSERT_EQUAL(tried, 2 * total);
	CU_ASSERT_EQUAL(survived, tried);
	run_free(&r);
	world_free(&w);
}

static void test_agent_brick_powercut_continuation(void) { powercut_continuation(false, "cut-same-url"); }
static void test_agent_brick_powercut_continuation_other_url(void) { powercut_continuation(true, "cut-other-url"); }

/* A journal as the earlier agent left such a job (phase failed, FUMO 80, package kept)
 * is taken up again: resume completes the partition. */
static void test_agent_brick_old_failed_journal_revived(void)
{
	struct held h;
	held_start(&h, "old", 0);
	struct agent_journal j = h.r.j;
	j.phase = AGENT_PH_FAILED;
	j.state = FUMO_UPD_FAILED_NODATA;
	j.result = AGENT_EXIT_CORRUPT;
	char *text = NULL;
	size_t len = 0;
	struct fota_error err;
	struct fota_store *st = fota_sim_store(h.sim);
	CU_ASSERT_EQUAL_FATAL(agent_journal_format(&j, &text, &len, &err), FOTA_OK);
	CU_ASSERT_EQUAL_FATAL(st->ops->commit(st, "journal", text, len, &err), FOTA_OK);
	free(text);
	held_run(&h, OP_OPEN, NULL);
	CU_ASSERT_EQUAL(h.r.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(h.r.j.state, FUMO_UPD_FAILED_DATA);
	CU_ASSERT(h.r.log && strstr(h.r.log, "the in-place update that stopped at chunk 2 is kept for resume"));
	serve(&h.w, h.w.good);
	held_run(&h, OP_RESUME, NULL);
	held_completed(&h, "old journal");
	held_free(&h);
}

/* The saved signature stops verifying while the update waits (here it is damaged in
 * the state store; a certificate that expires does the same): resume takes the same
 * manifest with a signature that verifies from the job's URL and completes. */
static void test_agent_brick_saved_signature_refused(void)
{
	struct held h;
	held_start(&h, "sig", 0);
	struct fota_store *st = fota_sim_store(h.sim);
	uint8_t *sig = NULL;
	size_t len = 0;
	bool found = false;
	struct fota_error err;
	CU_ASSERT_EQUAL_FATAL(st->ops->load(st, "manifest.sig", 1u << 20, &sig, &len, &found, &err), FOTA_OK);
	CU_ASSERT_FATAL(found && len > 100);
	sig[len - 20] ^= 0xff;
	CU_ASSERT_EQUAL_FATAL(st->ops->commit(st, "manifest.sig", sig, len, &err), FOTA_OK);
	free(sig);
	serve(&h.w, h.w.good);
	held_run(&h, OP_RESUME, NULL);
	CU_ASSERT(h.r.log && strstr(h.r.log, "fetching the package head again"));
	CU_ASSERT(h.r.log && strstr(h.r.log, "same signed manifest: continuing at chunk 2"));
	held_completed(&h, "saved signature");
	held_free(&h);
}

/* The package expires while the update waits: a new job with it is refused (7), the
 * half-applied one still completes. */
static void test_agent_brick_expired_while_held(void)
{
	struct tclock start = { .tick_ms = 10 };
	(void)tagent_clock(&start);
	struct held h;
	held_start(&h, "expiry", start.now_ms / 1000 + 86400);
	h.ck.now_ms += 2 * 86400 * 1000ll;
	serve(&h.w, h.w.good);
	held_run(&h, OP_RESUME, NULL);
	held_completed(&h, "expiry");
	/* the control: the same package on a fresh device is refused as expired */
	fota_sim_free(h.sim);
	h.sim = device(&h.w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h.sim);
	held_run(&h, OP_DAU, h.w.good_url);
	CU_ASSERT_EQUAL(h.r.rc, AGENT_EXIT_NOT_ACCEPTABLE);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.r.msg, "expired"));
	CU_ASSERT_EQUAL(fota_sim_dev_writes(h.sim, "part"), 0);
	held_free(&h);
}

/* ---- a head damaged on the way ---- */

/* The agent's log as a stream that acts once when a line contains needle: the test's
 * hand on the server at an exact moment of a run. */
struct trigger {
	const char *needle;
	void (*act)(void *arg);
	void *arg;
	bool fired;
	char line[4096];
	size_t n;
};

static ssize_t trigger_write(void *ctx, const char *buf, size_t size)
{
	struct trigger *t = ctx;
	for (size_t i = 0; i < size; i++) {
		if (t->n + 1 < sizeof(t->line) && buf[i] != '\n')
			t->line[t->n++] = buf[i];
		if (buf[i] != '\n')
			continue;
		t->line[t->n] = 0;
		if (!t->fired && t->needle && strstr(t->line, t->needle)) {
			t->fired = true;
			t->act(t->arg);
		}
		t->n = 0;
	}
	return (ssize_t)size;
}

static FILE *trigger_log(struct trigger *t)
{
	cookie_io_functions_t io = { NULL, trigger_write, NULL, NULL };
	FILE *f = fopencookie(t, "w", io);
	if (f)
		setvbuf(f, NULL, _IONBF, 0);
	return f;
}

/* A byte flipped in transit, not a changed package: the server's file is repaired in
 * place with its old mtime. */
struct repair {
	const char *path;
	const uint8_t *good;
	size_t len;
	struct timespec mtime[2];
	bool repaired;
};

static void repair_file(void *arg)
{
	struct repair *rp = arg;
	int fd = open(rp->path, O_WRONLY | O_TRUNC);
	if (fd >= 0 && write(fd, rp->good, rp->len) == (ssize_t)rp->len && futimens(fd, rp->mtime) == 0)
		rp->repaired = true;
	if (fd >= 0)
		close(fd);
}

static void head_damaged(bool repair, const char *tag)
{
	struct world w;
	world_init(&w, tag, 0);
	size_t len = 0;
	uint8_t *good = unit_read_file(w.good, &len), *bad = malloc(len ? len : 1);
	CU_ASSERT_FATAL(good && bad && len > 2048);
	memcpy(bad, good, len);
	bad[600] ^= 0x10; /* inside manifest.json */
	char name[64];
	snprintf(name, sizeof(name), "brick-%s-flipped.fota", tag);
	char *path = unit_write_file(name, bad, len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	struct stat sb;
	CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
	struct repair rp = { path, good, len, { sb.st_atim, sb.st_mtim }, false };
	struct trigger t = { repair ? "fetching the package head once more" : NULL, repair_file, &rp, false, "", 0 };
	FILE *log = trigger_log(&t);
	CU_ASSERT_PTR_NOT_NULL_FATAL(log);
	char url[700];
	snprintf(url, sizeof(url), "file://%s", path);
	struct fota_sim *sim = device(&w);
	struct tclock ck = { .tick_ms = 10 };
	struct run r = { 0 };
	CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
	boot(sim, w.cfg, &ck, OP_DAU, url, log, &r);
	fclose(log);
	if (repair) {
		CU_ASSERT(rp.repaired);
		CU_ASSERT_EQUAL(r.rc, 0);
		CU_ASSERT(part_is(sim, w.dst, w.len));
		CU_ASSERT_EQUAL(r.j.restarts, 0); /* the same package: no restart */
	} else {
		CU_ASSERT_FALSE(rp.repaired);
		CU_ASSERT_EQUAL(r.rc, AGENT_EXIT_SIGNATURE);
		CU_ASSERT_EQUAL(fota_sim_dev_writes(sim, "part"), 0);
		CU_ASSERT(part_is(sim, w.src, w.len));
	}
	if (r.rc != (repair ? 0 : AGENT_EXIT_SIGNATURE))
		fprintf(stderr, "\n  brick %s: exit %d: %s\n", tag, r.rc, r.msg);
	free(path);
	free(good);
	free(bad);
	run_free(&r);
	fota_sim_free(sim);
	world_free(&w);
}

/* Flipped on the first fetch only: the head is fetched once more and the job goes on. */
static void test_agent_brick_head_flipped_once(void) { head_damaged(true, "head1"); }
/* Flipped on both fetches: refused as today (exit 5), nothing written. */
static void test_agent_brick_head_flipped_twice(void) { head_damaged(false, "head2"); }

static void unlink_path(void *arg)
{
	(void)unlink((const char *)arg);
}

/* The server goes away in the middle of the streamed update (after chunk 12 of 32 is
 * applied; the package is 256 KiB of full chunks, so the head request brought only the
 * first ones): the run fails with exit 10 and a network alert, held at chunk 12; the
 * server back with the same package (same validators: nothing to adopt), resume
 * completes. */
static void test_agent_brick_server_gone_mid_stream(void)
{
	struct world w;
	memset(&w, 0, sizeof(w));
	w.len = 32 * CHUNK;
	w.src = malloc(w.len);
	w.dst = malloc(w.len);
	CU_ASSERT_FATAL(w.src && w.dst);
	unit_fill_random(w.src, w.len, 41);
	unit_fill_random(w.dst, w.len, 42);
	snprintf(w.good, sizeof(w.good), "%s/brick-gone.fota", unit_tmpdir());
	snprintf(w.link, sizeof(w.link), "%s/brick-gone-server.fota", unit_tmpdir());
	snprintf(w.url, sizeof(w.url), "file://%s", w.link);
	struct tpkg o = { .mode = FOTA_MODE_INPLACE, .model = "HX-100", .corrupt_chunk = -1, .chunk = CHUNK };
	CU_ASSERT_EQUAL_FATAL(tagent_build(w.good, w.src, w.len, w.dst, w.len, &o), 0);
	w.cfg = tagent_config(FOTA_MODE_INPLACE, true, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w.cfg);
	serve(&w, w.good);
	struct tclock ck = { .tick_ms = 10 };
	struct run r = { 0 };
	struct fota_sim *sim = device(&w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
	boot(sim, w.cfg, &ck, OP_DAU, w.url, NULL, &r); /* a clean run: its writes */
	CU_ASSERT_EQUAL(r.rc, 0);
	const uint64_t clean_writes = fota_sim_dev_writes(sim, "part");
	fota_sim_free(sim);

	sim = device(&w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
	struct trigger t = { "chunk 12/32 applied", unlink_path, w.link, false, "", 0 };
	FILE *log = trigger_log(&t);
	CU_ASSERT_PTR_NOT_NULL_FATAL(log);
	boot(sim, w.cfg, &ck, OP_DAU, w.url, log, &r);
	fclose(log);
	CU_ASSERT(t.fired);
	CU_ASSERT_EQUAL(r.rc, AGENT_EXIT_DOWNLOAD);
	if (r.rc != AGENT_EXIT_DOWNLOAD)
		fprintf(stderr, "\n  brick gone: exit %d: %s\n", r.rc, r.msg);
	CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "in-place update stopped at chunk 12 of 32"));
	CU_ASSERT_EQUAL(r.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(r.j.ap_next, 12);
	CU_ASSERT_EQUAL(r.j.state, FUMO_UPD_FAILED_DATA);
	CU_ASSERT(r.j.alert_pending);
	CU_ASSERT_EQUAL(r.j.alert_result, FUMO_R_NETWORK);
	/* still gone: the same again, nothing written */
	const uint64_t writes = fota_sim_dev_writes(sim, "part");
	CU_ASSERT(writes > 0 && writes < clean_writes);
	boot(sim, w.cfg, &ck, OP_RESUME, NULL, NULL, &r);
	CU_ASSERT_EQUAL(r.rc, AGENT_EXIT_DOWNLOAD);
	CU_ASSERT_EQUAL(r.j.ap_next, 12);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(sim, "part"), writes);
	/* back: resume completes, the chunks before 12 written once */
	serve(&w, w.good);
	boot(sim, w.cfg, &ck, OP_RESUME, NULL, NULL, &r);
	CU_ASSERT_EQUAL(r.rc, 0);
	if (r.rc != 0)
		fprintf(stderr, "\n  brick gone -> back: exit %d: %s\n", r.rc, r.msg);
	CU_ASSERT(r.log && !strstr(r.log, "same signed manifest"));
	CU_ASSERT(part_is(sim, w.dst, w.len));
	CU_ASSERT_EQUAL(r.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(sim, "part"), clean_writes);
	run_free(&r);
	fota_sim_free(sim);
	world_free(&w);
}

/* The FUMO walk of a held in-place update: 60 -> 70 (reported) -> 60 (continued). */
static void test_agent_brick_fumo_walk(void)
{
	static const int walk[] = { 10, 30, 50, 60, 70, 60, 70, 60, 100, 10 };
	for (size_t i = 0; i + 1 < sizeof(walk) / sizeof(walk[0]); i++)
		CU_ASSERT(fumo_transition_ok(walk[i], walk[i + 1]));
	CU_ASSERT_FALSE(fumo_transition_ok(80, 60));
	CU_ASSERT_FALSE(fumo_transition_ok(20, 60));
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_brick_other_manifest_refused);
	UNIT_ADD(s, test_agent_brick_update_continues);
	UNIT_ADD(s, test_agent_brick_same_url_continues);
	UNIT_ADD(s, test_agent_brick_powercut_continuation);
	UNIT_ADD(s, test_agent_brick_powercut_continuation_other_url);
	UNIT_ADD(s, test_agent_brick_old_failed_journal_revived);
	UNIT_ADD(s, test_agent_brick_saved_signature_refused);
	UNIT_ADD(s, test_agent_brick_expired_while_held);
	UNIT_ADD(s, test_agent_brick_head_flipped_once);
	UNIT_ADD(s, test_agent_brick_head_flipped_twice);
	UNIT_ADD(s, test_agent_brick_server_gone_mid_stream);
	UNIT_ADD(s, test_agent_brick_fumo_walk);
}

UNIT_SUITE("agent/brick", add)
