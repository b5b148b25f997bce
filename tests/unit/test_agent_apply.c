/*
 * Suite agent/apply: what streaming apply ([download] mode = stream) promises when a
 * chunk payload arrives corrupt. The devices and the state store are the power-cut
 * simulation wrapped by a probe that checks every write to the target slot or
 * partition against the target image, so "the corrupt chunk is never written" is
 * asserted on each write, not only on the end result:
 *   - a chunk that arrives corrupt once is fetched again and applied from the good copy;
 *   - a server that keeps sending a corrupt chunk makes the job fail with a clear error:
 *     the chunk is fetched twice, never applied, the earlier verified chunks are in the
 *     inactive slot (or the partition), and the source slot is untouched;
 *   - in place, that failure keeps the half-applied update, and resume completes it once
 *     the server sends the package right (more in tests/unit/test_agent_brick.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../agent/journal.h"
#include "test_agent_util.h"
#include "unit.h"

/* ---- a probe around the sim devices and store ---- */

struct probe {
	const uint8_t *want;       /* the target image */
	size_t want_len;
	const char *watch;         /* device whose writes are checked */
	uint64_t writes, bad_writes;
	uint64_t lo, hi;           /* writes to the watched device overlapping [lo, hi) */
	uint64_t range_writes;
	const char *corrupt;       /* state file whose next corrupt_left writes get a byte flipped */
	int corrupt_left;
	int fail_left;             /* the next fail_left writes to the watched device fail (EIO) */
	uint64_t corrupted;
	struct fota_devices inner_dev;
	struct fota_store *inner_store;
};

struct wrap {
	struct fota_storage base;
	struct fota_storage *in;
	struct probe *p;
	bool watch, corrupt;
};

static fota_status w_read(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct wrap *w = (struct wrap *)s;
	return fota_storage_read(w->in, off, buf, len, err);
}

static fota_status w_write(struct fota_storage *s, uint64_t off, const void *buf, size_t len, struct fota_error *err)
{
	struct wrap *w = (struct wrap *)s;
	struct probe *p = w->p;
	if (w->watch && p->fail_left > 0) {
		p->fail_left--;
		return fota_error_errno(err, FOTA_E_IO, EIO, "%s: probe: write at %llu", s->name, (unsigned long long)off);
	}
	if (w->watch) {
		p->writes++;
		if (off > p->want_len || len > p->want_len - off || memcmp(buf, p->want + off, len) != 0)
			p->bad_writes++;
		if (off < p->hi && off + len > p->lo)
			p->range_writes++;
	}
	if (w->corrupt && p->corrupt_left > 0 && len > 0) {
		uint8_t *copy = malloc(len);
		if (!copy)
			return fota_error_set(err, FOTA_E_NOMEM, "probe: out of memory");
		memcpy(copy, buf, len);
		copy[len / 2] ^= 0x40;
		p->corrupt_left--;
		p->corrupted++;
		fota_status rc = fota_storage_write(w->in, off, copy, len, err);
		free(copy);
		return rc;
	}
	return fota_storage_write(w->in, off, buf, len, err);
}

static fota_status w_sync(struct fota_storage *s, struct fota_error *err)
{
	return fota_storage_sync(((struct wrap *)s)->in, err);
}

static fota_status w_size(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{
	return fota_storage_size(((struct wrap *)s)->in, out, err);
}

static void w_close(struct fota_storage *s)
{
	struct wrap *w = (struct wrap *)s;
	fota_storage_close(w->in);
	free(w);
}

static const struct fota_storage_ops wrap_ops = { w_read, w_write, w_sync, w_size, w_close };

static fota_status wrap_storage(struct probe *p, struct fota_storage *in, bool watch, bool corrupt,
				struct fota_storage **out, struct fota_error *err)
{
	struct wrap *w = calloc(1, sizeof(*w));
	if (!w) {
		fota_storage_close(in);
		return fota_error_set(err, FOTA_E_NOMEM, "probe: out of memory");
	}
	w->base.ops = &wrap_ops;
	w->base.concurrent_reads = in->concurrent_reads; /* it adds no state a read touches */
	snprintf(w->base.name, sizeof(w->base.name), "%s", in->name);
	w->in = in;
	w->p = p;
	w->watch = watch;
	w->corrupt = corrupt;
	*out = &w->base;
	return FOTA_OK;
}

static fota_status probe_dev_open(void *ctx, const char *path, bool writable, struct fota_storage **out,
				  struct fota_error *err)
{
	struct probe *p = ctx;
	struct fota_storage *in = NULL;
	fota_status rc = p->inner_dev.open(p->inner_dev.ctx, path, writable, &in, err);
	if (rc != FOTA_OK)
		return rc;
	return wrap_storage(p, in, strcmp(path, p->watch) == 0, false, out, err);
}

struct probe_store {
	struct fota_store base;
	struct probe *p;
};

static fota_status ps_load(struct fota_store *st, const char *name, size_t max, uint8_t **data, size_t *len,
			   bool *found, struct fota_error *err)
{
	struct fota_store *in = ((struct probe_store *)st)->p->inner_store;
	return in->ops->load(in, name, max, data, len, found, err);
}

static fota_status ps_commit(struct fota_store *st, const char *name, const void *data, size_t len,
			     struct fota_error *err)
{
	struct fota_store *in = ((struct probe_store *)st)->p->inner_store;
	return in->ops->commit(in, name, data, len, err);
}

static fota_status ps_remove(struct fota_store *st, const char *name, struct fota_error *err)
{
	struct fota_store *in = ((struct probe_store *)st)->p->inner_store;
	return in->ops->remove(in, name, err);
}

static fota_status ps_open(struct fota_store *st, const char *name, bool create, struct fota_storage **out,
			   struct fota_error *err)
{
	struct probe *p = ((struct probe_store *)st)->p;
	struct fota_storage *in = NULL;
	fota_status rc = p->inner_store->ops->open(p->inner_store, name, create, &in, err);
	if (rc != FOTA_OK)
		return rc;
	return wrap_storage(p, in, false, p->corrupt && strcmp(name, p->corrupt) == 0, out, err);
}

static void ps_close(struct fota_store *st)
{
	(void)st; /* the sim owns the inner store; the probe store lives in the test */
}

static const struct fota_store_ops probe_store_ops = { ps_load, ps_commit, ps_remove, ps_open, ps_close };

/* ---- a device with a streamed job ---- */

struct dev {
	struct fota_sim *sim;
	struct agent_config *cfg;
	struct tclock ck;
	struct probe p;
	struct probe_store ps;
	uint8_t *src, *dst;
	size_t len;
	char path[600], url[640];
	char msg[FOTA_ERROR_MSG_MAX];
	char *log;
	size_t log_len;
	struct agent_journal j;
};

static int dev_init(struct dev *d, enum fota_mode mode, struct tpkg *o, const char *tag)
{
	memset(d, 0, sizeof(*d));
	tagent_pair(&d->src, &d->dst, &d->len, 23);
	snprintf(d->path, sizeof(d->path), "%s/apply-%s.fota", unit_tmpdir(), tag);
	snprintf(d->url, sizeof(d->url), "file://%s", d->path);
	o->mode = mode;
	if (tagent_build(d->path, d->src, d->len, d->dst, d->len, o) != 0)
		return -1;
	d->sim = fota_sim_new();
	d->cfg = tagent_config(mode, true, NULL);
	uint8_t *junk = malloc(d->len + 4096), *zero = calloc(1, 131072);
	if (!d->sim || !d->cfg || !junk || !zero)
		return -1;
	for (size_t i = 0; i < d->len + 4096; i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	int rc = 0;
	if (mode == FOTA_MODE_AB) {
		if (fota_sim_dev_set(d->sim, "slot_a", d->src, d->len) != FOTA_OK ||
		    fota_sim_dev_set(d->sim, "slot_b", junk, d->len + 4096) != FOTA_OK)
			rc = -1;
	} else if (fota_sim_dev_set(d->sim, "part", d->src, d->len) != FOTA_OK ||
		   fota_sim_dev_set(d->sim, "scratch", zero, 131072) != FOTA_OK) {
		rc = -1;
	}
	free(junk);
	free(zero);
	d->p.want = d->dst;
	d->p.want_len = d->len;
	d->p.watch = mode == FOTA_MODE_AB ? "slot_b" : "part";
	d->p.inner_dev = fota_sim_devices(d->sim);
	d->p.inner_store = fota_sim_store(d->sim);
	d->ps.base.ops = &probe_store_ops;
	d->ps.p = &d->p;
	return rc;
}

static void dev_free(struct dev *d)
{
	fota_sim_free(d->sim);
	agent_config_free(d->cfg);
	free(d->src);
	free(d->dst);
	free(d->log);
}

/* download-and-update (dau) or resume through the probe; the log is kept in d->log. */
static int dev_run(struct dev *d, bool dau)
{
	free(d->log);
	d->log = NULL;
	FILE *log = open_memstream(&d->log, &d->log_len);
	struct fota_devices dv = { &d->p, probe_dev_open };
	struct agent_env env = { d->cfg, &d->ps.base, dv, tagent_clock(&d->ck), log };
	struct agent *a = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	int rc = -1;
	if (agent_open(&env, &a, &err) == FOTA_OK) {
		rc = dau ? agent_download(a, d->url, true, &err) : agent_resume(a, &err);
		d->j = *agent_journal(a);
		agent_close(a);
	}
	snprintf(d->msg, sizeof(d->msg), "%s", err.msg);
	if (log)
		fclose(log);
	return rc;
}

static bool dev_range_is(struct dev *d, const char *name, uint64_t off, uint64_t len, const uint8_t *want)
{
	size_t n = 0;
	uint8_t *got = fota_sim_dev_get(d->sim, name, &n);
	bool ok = got && off <= n && len <= n - off && memcmp(got + off, want, len) == 0;
	free(got);
	return ok;
}

/* ---- cases ---- */

#define CHUNK 8192u

/* The server keeps sending chunk 3 corrupt (A/B, full chunks of CHUNK bytes). */
static void test_agent_apply_stream_corrupt_server_ab(void)
{
	struct dev d;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = 3, .chunk = CHUNK };
	CU_ASSERT_EQUAL_FATAL(dev_init(&d, FOTA_MODE_AB, &o, "bad-ab"), 0);
	d.p.lo = 3 * CHUNK;
	d.p.hi = 4 * CHUNK;
	int rc = dev_run(&d, true);
	CU_ASSERT_EQUAL(rc, AGENT_EXIT_CORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(d.msg, "chunk 3: payload sha256 does not match the manifest (fetched twice)"));
	/* it was fetched again before the job gave up */
	CU_ASSERT(d.log && strstr(d.log, "chunk 3: payload sha256 mismatch; fetching it again"));
	if (rc != AGENT_EXIT_CORRUPT || !strstr(d.msg, "fetched twice"))
		fprintf(stderr, "\n  bad-ab: exit %d: %s\n", rc, d.msg);
	/* every byte ever written to the inactive slot is a target byte, and nothing was
	 * written to chunk 3's range */
	CU_ASSERT(d.p.writes > 0);
	CU_ASSERT_EQUAL(d.p.bad_writes, 0);
	CU_ASSERT_EQUAL(d.p.range_writes, 0);
	/* what stream mode cannot promise: the verified chunks before it are in the slot */
	CU_ASSERT(dev_range_is(&d, "slot_b", 0, 3 * CHUNK, d.dst));
	CU_ASSERT_FALSE(dev_range_is(&d, "slot_b", 3 * CHUNK, CHUNK, d.dst + 3 * CHUNK));
	/* the source slot: never opened for writing, content unchanged */
	CU_ASSERT_EQUAL(fota_sim_dev_writes(d.sim, "slot_a"), 0);
	CU_ASSERT(dev_range_is(&d, "slot_a", 0, d.len, d.src));
	CU_ASSERT_EQUAL(d.j.phase, AGENT_PH_FAILED);
	CU_ASSERT_EQUAL(d.j.result, AGENT_EXIT_CORRUPT);
	/* the job is over: resume does nothing */
	uint64_t writes = d.p.writes;
	CU_ASSERT_EQUAL(dev_run(&d, false), 0);
	CU_ASSERT_EQUAL(d.p.writes, writes);
	/* the server fixed, a new job reaches the target */
	o.corrupt_chunk = -1;
	CU_ASSERT_EQUAL_FATAL(tagent_build(d.path, d.src, d.len, d.dst, d.len, &o), 0);
	CU_ASSERT_EQUAL(dev_run(&d, true), 0);
	CU_ASSERT(dev_range_is(&d, "slot_b", 0, d.len, d.dst));
	CU_ASSERT_EQUAL(d.p.bad_writes, 0);
	CU_ASSERT_EQUAL(fota_sim_dev_writes(d.sim, "slot_a"), 0);
	dev_free(&d);
}

/* The same in place: the corrupt chunk is never produced into the partition, and the
 * half-applied update is never abandoned: the run fails (exit 8, FUMO 402, state 70)
 * with the journal at chunk 2; resume tries again and fails the same while the server
 * is wrong, writing nothing; once the server has the package right (same signed
 * manifest, new bytes and mtime) resume completes the exact target, writing only the
 * chunks that were left: the partition sees as many writes in all as one clean run. */
static void test_agent_apply_stream_corrupt_server_inplace(void)
{
	struct dev d;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = 2, .delta = true, .scratch_max = 32768, .chunk = CHUNK };
	struct tpkg good = o;
	good.corrupt_chunk = -1;
	CU_ASSERT_EQUAL_FATAL(dev_init(&d, FOTA_MODE_INPLACE, &good, "good-ip"), 0);
	CU_ASSERT_EQUAL_FATAL(dev_run(&d, true), 0);
	CU_ASSERT(dev_range_is(&d, "part", 0, d.len, d.dst));
	const uint64_t clean_writes = d.p.writes;
	dev_free(&d);

	CU_ASSERT_EQUAL_FATAL(dev_init(&d, FOTA_MODE_INPLACE, &o, "bad-ip"), 0);
	int rc = dev_run(&d, true);
	CU_ASSERT_EQUAL(rc, AGENT_EXIT_CORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(d.msg, "chunk 2: payload sha256 does not match the manifest (fetched twice)"));
	CU_ASSERT_PTR_NOT_NULL(strstr(d.msg, "in-place update stopped at chunk 2 of "));
	CU_ASSERT_PTR_NOT_NULL(strstr(d.msg, "resume continues it"));
	CU_ASSERT(d.log && strstr(d.log, "chunk 2: payload sha256 mismatch; fetching it again"));
	if (rc != AGENT_EXIT_CORRUPT)
		fprintf(stderr, "\n  bad-ip: exit %d: %s\n", rc, d.msg);
	CU_ASSERT(d.p.writes > 0); /* chunks 0 and 1 were applied */
	CU_ASSERT(d.p.writes < clean_writes);
	CU_ASSERT_EQUAL(d.p.bad_writes, 0);
	/* held, not ended: still applying at chunk 2, reported as 402 in 70 */
	CU_ASSERT_EQUAL(d.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(d.j.ap_next, 2);
	CU_ASSERT(d.j.source_ok);
	CU_ASSERT_EQUAL(d.j.state, 70);
	CU_ASSERT(d.j.alert_pending);
	CU_ASSERT_EQUAL(d.j.alert_result, 402);
	CU_ASSERT_EQUAL(d.j.result, AGENT_EXIT_CORRUPT);
	CU_ASSERT_FALSE(dev_range_is(&d, "part", 0, d.len, d.dst));
	CU_ASSERT_FALSE(dev_range_is(&d, "part", 0, d.len, d.src));
	/* the server still wrong: resume fails the same way and writes nothing */
	uint64_t writes = d.p.writes;
	CU_ASSERT_EQUAL(dev_run(&d, false), AGENT_EXIT_CORRUPT);
	CU_ASSERT_EQUAL(d.p.writes, writes);
	CU_ASSERT_EQUAL(d.j.ap_next, 2);
	CU_ASSERT_EQUAL(d.j.phase, AGENT_PH_APPLYING);
	CU_ASSERT_EQUAL(d.j.state, 70);
	/* the server fixed: the same manifest, another signature and mtime */
	CU_ASSERT_EQUAL_FATAL(tagent_build(d.path, d.src, d.len, d.dst, d.len, &good), 0);
	rc = dev_run(&d, false);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0)
		fprintf(stderr, "\n  bad-ip continued: exit %d: %s\n", rc, d.msg);
	CU_ASSERT(d.log && strstr(d.log, "same signed manifest: continuing at chunk 2"));
	CU_ASSERT(dev_range_is(&d, "part", 0, d.len, d.dst));
	CU_ASSERT_EQUAL(d.j.phase, AGENT_PH_DONE);
	CU_ASSERT_EQUAL(d.j.state, 100);
	CU_ASSERT_EQUAL(d.j.alert_result, 200);
	CU_ASSERT_EQUAL(d.p.bad_writes, 0);
	/* chunks 0 and 1 were not written again */
	CU_ASSERT_EQUAL(d.p.writes, clean_writes);
	dev_free(&d);
}

/* A chunk that arrives corrupt once (a byte flipped on its way into the stream file)
 * is fetched again; only the good copy is applied. */
static void refetch_once(enum fota_mode mode, long k, const char *tag)
{
	struct dev d;
	struct tpkg o = { .model = "HX-100", .corrupt_chunk = -1, .chunk = CHUNK };
	if (mode == FOTA_MODE_INPLACE) {
		o.delta = true;
		o.scratch_max = 32768;
	}
	CU_ASSERT_EQUAL_FATAL(dev_init(&d, mode, &o, tag), 0);
	char name[32], line[96];
	snprintf(name, sizeof(name), "stream-%ld.part", k);
	snprintf(line, sizeof(line), "chunk %ld: payload sha256 mismatch; fetching it again", k);
	d.p.corrupt = name;
	d.p.corrupt_left = 1;
	int rc = dev_run(&d, true);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0)
		fprintf(stderr, "\n  %s: exit %d: %s\n", tag, rc, d.msg);
	CU_ASSERT_EQUAL(d.p.corrupted, 1);
	CU_ASSERT(d.log && strstr(d.log, line));
	CU_ASSERT_EQUAL(d.p.bad_writes, 0);
	CU_ASSERT(dev_range_is(&d, d.p.watch, 0, d.len, d.dst));
	CU_ASSERT_EQUAL(d.j.phase, AGENT_PH_DONE);
	if (mode == FOTA_MODE_AB)
		CU_ASSERT_EQUAL(fota_sim_dev_writes(d.sim, "slot_a"), 0);
	dev_free(&d);
}

static void test_agent_apply_stream_refetch_ab(void) { refetch_once(FOTA_MODE_AB, 3, "refetch-ab"); }
static void test_agent_apply_stream_refetch_inplace(void) { refetch_once(FOTA_MODE_INPLACE, 2, "refetch-ip"); }

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_apply_stream_corrupt_server_ab);
	UNIT_ADD(s, test_agent_apply_stream_corrupt_server_inplace);
	UNIT_ADD(s, test_agent_apply_stream_refetch_ab);
	UNIT_ADD(s, test_agent_apply_stream_refetch_inplace);
}
UNIT_SUITE("agent/apply", add)

/*
 * Suite agent/apply_drop: fota_storage_drop, the page-cache hint the A/B read-back gives
 * the slot once a range is written, read back and hashed. It must never change what the
 * storage holds: on a file the dropped range reads back the same (from the disk), ranges
 * past the end or absurd ones are ignored, and the simulation backend ignores it.
 */
static void test_agent_apply_drop_file_keeps_data(void)
{
	enum { LEN = 3 << 20 };
	uint8_t *data = malloc(LEN), *back = malloc(LEN);
	CU_ASSERT_FATAL(data && back);
	unit_fill_random(data, LEN, 77);
	char *path = unit_write_file("drop.img", "", 0);
	CU_ASSERT_FATAL(path != NULL);
	struct fota_storage *s = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	CU_ASSERT_EQUAL_FATAL(fota_file_open(path, true, &s, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fota_storage_write(s, 0, data, LEN, &err), FOTA_OK);
	/* dirty pages: drop starts and waits for their writeback before dropping them */
	fota_storage_drop(s, 0, 1 << 20);
	CU_ASSERT_EQUAL(fota_storage_sync(s, &err), FOTA_OK);
	fota_storage_drop(s, 1 << 20, LEN);            /* runs past the end */
	fota_storage_drop(s, UINT64_MAX - 10, 100);    /* overflows: ignored */
	fota_storage_drop(s, 0, 0);
	fota_storage_drop(NULL, 0, 1);
	memset(back, 0, LEN);
	CU_ASSERT_EQUAL(fota_storage_read(s, 0, back, LEN, &err), FOTA_OK);
	CU_ASSERT_EQUAL(memcmp(back, data, LEN), 0);
	uint64_t size = 0;
	CU_ASSERT_EQUAL(fota_storage_size(s, &size, &err), FOTA_OK);
	CU_ASSERT_EQUAL(size, (uint64_t)LEN);
	fota_storage_close(s);
	size_t n = 0;
	uint8_t *disk = unit_read_file(path, &n);
	CU_ASSERT(disk && n == LEN && memcmp(disk, data, LEN) == 0);
	free(disk);
	free(path);
	free(data);
	free(back);
}

static void test_agent_apply_drop_sim_ignored(void)
{
	struct fota_sim *sim = fota_sim_new();
	CU_ASSERT_FATAL(sim != NULL);
	uint8_t img[4096];
	unit_fill_random(img, sizeof(img), 5);
	CU_ASSERT_EQUAL_FATAL(fota_sim_dev_set(sim, "slot_b", img, sizeof(img)), FOTA_OK);
	struct fota_devices dv = fota_sim_devices(sim);
	struct fota_storage *s = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	CU_ASSERT_EQUAL_FATAL(dv.open(dv.ctx, "slot_b", true, &s, &err), FOTA_OK);
	uint8_t patch[512];
	memset(patch, 0xa5, sizeof(patch));
	CU_ASSERT_EQUAL(fota_storage_write(s, 1024, patch, sizeof(patch), &err), FOTA_OK);
	uint64_t events = fota_sim_events(sim);
	fota_storage_drop(s, 0, sizeof(img)); /* no event, and the unsynced write stays visible */
	CU_ASSERT_EQUAL(fota_sim_events(sim), events);
	memcpy(img + 1024, patch, sizeof(patch));
	size_t n = 0;
	uint8_t *now = fota_sim_dev_get(sim, "slot_b", &n);
	CU_ASSERT(now && n == sizeof(img) && memcmp(now, img, sizeof(img)) == 0);
	free(now);
	fota_storage_close(s);
	fota_sim_free(sim);
}

static void add_drop(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_apply_drop_file_keeps_data);
	UNIT_ADD(s, test_agent_apply_drop_sim_ignored);
}
UNIT_SUITE("agent/apply_drop", add_drop)

/*
 * Suite agent/apply_file: A/B from the store-mode cache on the production file backend,
 * where the apply runs its threads (the read-back thread hashes the slot for the image
 * check and, on a CPU with the SHA extensions, checks each chunk there too; otherwise the
 * hasher checks each full chunk decoded whole as it is decoded): the slot ends exactly
 * the target; a slot whose leading chunks already hold their target is not written there
 * (the resume scan); a write that reaches the slot corrupt fails the chunk check on the
 * read-back, or the image check. Each case runs both ways: as the CPU allows, and with
 * FOTA_NO_SHA_EXT=1 (the read-back hashes the image only).
 */
#define FCHUNK (1u << 20) /* the test packages' window (2^20) bounds a chunk */
#define FLEN ((size_t)5 * FCHUNK + 12345)

/* The read-back checks the chunks (the two-lane SHA-256 runs on the SHA extensions). */
static bool chunk_checks_on_readback(void)
{
	struct fota_sha256_pair *p = fota_sha256_pair_new(0);
	bool on = p && fota_sha256_pair_accelerated(p);
	fota_sha256_pair_free(p);
	return on;
}

struct fdev {
	char dir[600], slot_a[700], slot_b[700], state[700], pkg[700], url[760];
	uint8_t *src, *dst;
};

/* Images, the package (full chunks of chunk bytes) and a state directory under tag. */
static int fdev_init_chunk(struct fdev *f, const char *tag, uint32_t chunk)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "%s/apply-file-%s%s", unit_tmpdir(), tag,
		 getenv("FOTA_NO_SHA_EXT") ? "-noext" : "");
	snprintf(f->slot_a, sizeof(f->slot_a), "%s/a.img", f->dir);
	snprintf(f->slot_b, sizeof(f->slot_b), "%s/b.img", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	snprintf(f->pkg, sizeof(f->pkg), "%s/p.fota", f->dir);
	snprintf(f->url, sizeof(f->url), "file://%s", f->pkg);
	f->src = malloc(FLEN);
	f->dst = malloc(FLEN);
	if (!f->src || !f->dst || mkdir(f->dir, 0700) != 0 || mkdir(f->state, 0700) != 0)
		return -1;
	unit_fill_random(f->src, FLEN, 91);
	/* compressible and incompressible stretches, as firmware has */
	unit_fill_random(f->dst, FLEN, 92);
	for (size_t i = 0; i + 65536 <= FLEN; i += 65536)
		memset(f->dst + i, (int)(i >> 16), i % (3 * 65536) == 0 ? 65536 : 20000);
	struct tpkg o = { .mode = FOTA_MODE_AB, .chunk = chunk, .corrupt_chunk = -1 };
	return tagent_build(f->pkg, f->src, FLEN, f->dst, FLEN, &o);
}

static int fdev_init(struct fdev *f, const char *tag)
{
	return fdev_init_chunk(f, tag, FCHUNK);
}

static void fdev_free(struct fdev *f)
{
	free(f->src);
	free(f->dst);
}

static int write_whole(const char *path, const uint8_t *data, size_t len)
{
	FILE *fp = fopen(path, "wb");
	if (!fp)
		return -1;
	int rc = fwrite(data, 1, len, fp) == len ? 0 : -1;
	return fclose(fp) == 0 ? rc : -1;
}

/* download-and-update (or resume) through the file backend (devices dv); 0 on success,
 * msg the error. */
static int fdev_run(struct fdev *f, struct fota_devices dv, bool resume, char *msg, size_t cap)
{
	char *text = NULL;
	const char *pki = tagent_pki();
	if (!pki ||
	    asprintf(&text,
		     "[device]\nmode = ab\nslot_a = %s\nslot_b = %s\nactive_slot = a\nmodel = HX-100\n"
		     "security_version = 0\n[agent]\nstate_dir = %s\ntrust = %s/root.pem\n[download]\n"
		     "retry_window_minutes = 1\nbackoff_base_seconds = 1\nbackoff_max_seconds = 8\nmode = store\n",
		     f->slot_a, f->slot_b, f->state, pki) < 0)
		return -1;
	struct agent_config *cfg = NULL;
	struct fota_store *st = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	int rc = -1;
	struct tclock ck = { 0 };
	ck.now_ms = 1700000000000;
	if (agent_config_parse(text, "file.conf", &cfg, &err) == FOTA_OK &&
	    fota_dirstore_open(f->state, &st, &err) == FOTA_OK) {
		struct agent_env env = { cfg, st, dv, tagent_clock(&ck), NULL };
		struct agent *a = NULL;
		if (agent_open(&env, &a, &err) == FOTA_OK) {
			rc = resume ? agent_resume(a, &err) : agent_download(a, f->url, true, &err);
			agent_close(a);
		}
	}
	snprintf(msg, cap, "%s", err.msg);
	fota_store_close(st);
	agent_config_free(cfg);
	free(text);
	return rc;
}

static bool file_is(const char *path, const uint8_t *want, size_t len)
{
	size_t n = 0;
	uint8_t *got = unit_read_file(path, &n);
	bool ok = got && n >= len && memcmp(got, want, len) == 0;
	free(got);
	return ok;
}

/* A run (resume: agent_resume) that must succeed and leave the slot exactly the target;
 * what names it in the message printed when it does not. */
static void fdev_apply_ok(struct fdev *f, struct fota_devices dv, bool resume, const char *what)
{
	char msg[FOTA_ERROR_MSG_MAX];
	CU_ASSERT_EQUAL(fdev_run(f, dv, resume, msg, sizeof(msg)), 0);
	if (msg[0])
		fprintf(stderr, "apply_file %s: %s\n", what, msg);
	CU_ASSERT(file_is(f->slot_b, f->dst, FLEN));
}

static void test_agent_apply_file_ab_exact_once(void)
{
	struct fdev f;
	CU_ASSERT_EQUAL_FATAL(fdev_init(&f, "exact"), 0);
	uint8_t *junk = malloc(FLEN + 8192);
	CU_ASSERT_FATAL(junk != NULL);
	unit_fill_random(junk, FLEN + 8192, 93);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_a, f.src, FLEN), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, junk, FLEN + 8192), 0);
	fdev_apply_ok(&f, fota_file_devices, false, "exact");
	/* the slot's tail past the image is not written */
	size_t n = 0;
	uint8_t *b = unit_read_file(f.slot_b, &n);
	CU_ASSERT(b && n == FLEN + 8192 && memcmp(b + FLEN, junk + FLEN, 8192) == 0);
	free(b);
	CU_ASSERT(file_is(f.slot_a, f.src, FLEN));
	free(junk);
	fdev_free(&f);
}

/* The slot already holds the first chunks (a killed run wrote them): they are hashed,
 * found done and not written again; the rest is applied; the image check reads them. */
static void test_agent_apply_file_ab_scan_once(void)
{
	struct fdev f;
	CU_ASSERT_EQUAL_FATAL(fdev_init(&f, "scan"), 0);
	uint8_t *b = malloc(FLEN);
	CU_ASSERT_FATAL(b != NULL);
	unit_fill_random(b, FLEN, 94);
	memcpy(b, f.dst, 2 * FCHUNK);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_a, f.src, FLEN), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, b, FLEN), 0);
	/* every write to the slot is checked against the target, those to the first two
	 * chunks are counted */
	struct probe p = { .want = f.dst, .want_len = FLEN, .watch = f.slot_b, .lo = 0, .hi = 2 * FCHUNK,
			   .inner_dev = fota_file_devices };
	const struct fota_devices probed = { &p, probe_dev_open };
	char msg[FOTA_ERROR_MSG_MAX];
	/* the run that enters phase applying does not scan: nothing of the job can be in the
	 * slot yet, so the first two chunks are written although they hold the target */
	fdev_apply_ok(&f, probed, false, "scan");
	CU_ASSERT(p.range_writes > 0);
	CU_ASSERT_EQUAL(p.bad_writes, 0);

	/* a later run does: the first run's first slot write fails (the job stays applying,
	 * resumable), the first two chunks then hold the target as after a kill that came
	 * before the journal's checkpoint, and resume does not write them again */
	fdev_free(&f);
	CU_ASSERT_EQUAL_FATAL(fdev_init(&f, "scan-resume"), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_a, f.src, FLEN), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, b, FLEN), 0);
	p = (struct probe){ .want = f.dst, .want_len = FLEN, .watch = f.slot_b, .lo = 0, .hi = 2 * FCHUNK,
			    .inner_dev = fota_file_devices, .fail_left = 1 };
	CU_ASSERT_EQUAL(fdev_run(&f, probed, false, msg, sizeof(msg)), AGENT_EXIT_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(msg, "probe: write at"));
	CU_ASSERT_EQUAL(p.fail_left, 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, b, FLEN), 0);
	p.writes = p.bad_writes = p.range_writes = 0;
	fdev_apply_ok(&f, probed, true, "scan resume");
	CU_ASSERT(p.writes > 0);
	CU_ASSERT_EQUAL(p.bad_writes, 0);
	CU_ASSERT_EQUAL(p.range_writes, 0);
	free(b);
	fdev_free(&f);
}

/* A write that reaches the slot different from what was decoded and checked (a bad
 * device or driver): the chunk checks pass on the decoded bytes, the image check reads
 * the slot back and fails the update; nothing is journaled as applied. */
static fota_status corrupt_dev_open(void *ctx, const char *path, bool writable, struct fota_storage **out,
				    struct fota_error *err)
{
	struct probe *p = ctx;
	struct fota_storage *in = NULL;
	fota_status rc = fota_file_open(path, writable, &in, err);
	if (rc != FOTA_OK)
		return rc;
	return wrap_storage(p, in, false, strcmp(path, p->watch) == 0, out, err);
}

/* A slot write corrupted on its way (chunk bytes of chunk size): exit 8 with the chunk
 * check's message when the read-back checks the chunks, else the image check's; the
 * slot is not the target, the source slot untouched. */
static void bad_write_case(const char *tag, uint32_t chunk, bool chunk_check)
{
	struct fdev f;
	CU_ASSERT_EQUAL_FATAL(fdev_init_chunk(&f, tag, chunk), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_a, f.src, FLEN), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, f.src, FLEN), 0);
	struct probe p = { .watch = f.slot_b, .corrupt_left = 1 };
	char msg[FOTA_ERROR_MSG_MAX];
	CU_ASSERT_EQUAL(fdev_run(&f, (struct fota_devices){ &p, corrupt_dev_open }, false, msg, sizeof(msg)), AGENT_EXIT_CORRUPT);
	CU_ASSERT_EQUAL(p.corrupted, 1);
	const char *want = chunk_check ? "target sha256 does not match the manifest (read back from the slot)"
				       : "sha256 of the written target does not match";
	CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
	CU_ASSERT_FALSE(file_is(f.slot_b, f.dst, FLEN));
	CU_ASSERT(file_is(f.slot_a, f.src, FLEN));
	fdev_free(&f);
}

static void test_agent_apply_file_ab_bad_write_once(void)
{
	bad_write_case("badwrite", FCHUNK, chunk_checks_on_readback());
}

/* Chunks that do not start on the image's 64-byte grid: the read-back cannot share its
 * blocks between the chunk and the image digests, so the hasher checks the chunks; the
 * slot still ends exactly the target, and a corrupt write still fails the update. */
static void test_agent_apply_file_ab_odd_chunks_once(void)
{
	struct fdev f;
	CU_ASSERT_EQUAL_FATAL(fdev_init_chunk(&f, "odd", FCHUNK - 61), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_a, f.src, FLEN), 0);
	CU_ASSERT_EQUAL_FATAL(write_whole(f.slot_b, f.src, FLEN), 0);
	fdev_apply_ok(&f, fota_file_devices, false, "odd");
	fdev_free(&f);
	bad_write_case("odd-bad", FCHUNK - 61, false);
}

/* Run a case as the CPU allows, then with the SHA extensions off. */
static void both_ways(void (*fn)(void))
{
	CU_ASSERT_EQUAL_FATAL(unsetenv("FOTA_NO_SHA_EXT"), 0);
	fn();
	CU_ASSERT_EQUAL_FATAL(setenv("FOTA_NO_SHA_EXT", "1", 1), 0);
	CU_ASSERT_FALSE(chunk_checks_on_readback());
	fn();
	CU_ASSERT_EQUAL(unsetenv("FOTA_NO_SHA_EXT"), 0);
}

static void test_agent_apply_file_ab_exact(void)
{
	both_ways(test_agent_apply_file_ab_exact_once);
}

static void test_agent_apply_file_ab_scan(void)
{
	both_ways(test_agent_apply_file_ab_scan_once);
}

static void test_agent_apply_file_ab_bad_write(void)
{
	both_ways(test_agent_apply_file_ab_bad_write_once);
}

static void test_agent_apply_file_ab_odd_chunks(void)
{
	both_ways(test_agent_apply_file_ab_odd_chunks_once);
}

static void add_file(CU_pSuite s)
{
	UNIT_ADD(s, test_agent_apply_file_ab_exact);
	UNIT_ADD(s, test_agent_apply_file_ab_scan);
	UNIT_ADD(s, test_agent_apply_file_ab_bad_write);
	UNIT_ADD(s, test_agent_apply_file_ab_odd_chunks);
}
UNIT_SUITE("agent/apply_file", add_file)
