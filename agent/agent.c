/*
 * agent.c: jobs, the journal, fetching and verifying the package head, and the
 * download of payloads into the cache (see agent.h). Writing targets is in apply.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fota/container.h" /* FOTA_TAR_BLOCK only: container.c needs libarchive, which the agent does not link */
#include "fota/inplace.h"
#include "fota/sig.h"
#include "fota/tarhead.h"
#include "fota/util.h"
#include "agent_internal.h"
#include "hooks.h"
#include "policy.h"

#define HEAD_FETCH (64u << 10)       /* first request: the head and usually more */
#define REC_JOURNAL "journal"
#define REC_MANIFEST "manifest.json"
#define REC_SIG "manifest.sig"
#define REC_FLOOR "security_floor"
#define CACHE_FILE "payloads.cache"
#define RESTARTS_PER_RUN 3

/* FORMAT.md 2.3: bytes a member of n data bytes occupies (n <= FOTA_PAYLOAD_MAX here). */
static uint64_t span(uint64_t n)
{
	return FOTA_TAR_BLOCK + (n + FOTA_TAR_BLOCK - 1) / FOTA_TAR_BLOCK * FOTA_TAR_BLOCK;
}

const struct agent_exit_info agent_exit_table[] = {
	{ AGENT_EXIT_OK, "ok", "the requested step completed (resume: also when nothing was pending)" },
	{ AGENT_EXIT_INTERNAL, "internal", "internal error or out of memory" },
	{ AGENT_EXIT_USAGE, "usage", "bad command line" },
	{ AGENT_EXIT_CONFIG, "config", "configuration file unreadable, unknown or missing key, bad value" },
	{ AGENT_EXIT_IO, "io", "state_dir or a device could not be read, written or synced" },
	{ AGENT_EXIT_SIGNATURE, "signature", "signature or certificate invalid or untrusted, or an unsigned package" },
	{ AGENT_EXIT_DEVICE, "device", "the package is for another device model" },
	{ AGENT_EXIT_NOT_ACCEPTABLE, "not-acceptable",
	  "below the security-version floor, expired, wrong mode, or does not fit the device" },
	{ AGENT_EXIT_CORRUPT, "corrupt", "malformed package, or a chunk or image hash mismatch" },
	{ AGENT_EXIT_SOURCE, "source", "the source slot or partition is not what the package updates" },
	{ AGENT_EXIT_DOWNLOAD, "download", "bad URL, server error, or the retry window ran out" },
	{ AGENT_EXIT_STATE, "state", "not possible now: nothing to update, another job pending, cancel refused" },
	{ AGENT_EXIT_HOOK, "hook", "the slot-switch or active-slot command failed (resume retries it)" },
	{ AGENT_EXIT_BUSY, "busy", "another fota-agent is using the state directory" },
	{ AGENT_EXIT_CANCELLED, "cancelled", "the user cancelled or declined (FUMO result 401)" },
	{ AGENT_EXIT_DEFERRED, "deferred", "the user deferred the download or install; resume asks again when it is due" },
};
const size_t agent_exit_count = sizeof(agent_exit_table) / sizeof(agent_exit_table[0]);

const char *agent_exit_name(int code)
{
	for (size_t i = 0; i < agent_exit_count; i++)
		if (agent_exit_table[i].code == code)
			return agent_exit_table[i].name;
	return "?";
}

/* ---- clock ---- */

static int64_t sys_now_ms(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sys_sleep_ms(void *ctx, uint64_t ms)
{
	(void)ctx;
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t sys_random(void *ctx)
{
	(void)ctx;
	uint64_t v = 0;
	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
		v = (uint64_t)sys_now_ms(NULL) * 6364136223846793005ull + 1442695040888963407ull;
	return v;
}

struct agent_clock agent_clock_system(void)
{
	struct agent_clock c = { NULL, sys_now_ms, sys_sleep_ms, sys_random };
	return c;
}

/* ---- helpers ---- */

void agent_log(struct agent *a, const char *fmt, ...)
{
	if (!a->env.log)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("fota-agent: ", a->env.log);
	vfprintf(a->env.log, fmt, ap);
	fputc('\n', a->env.log);
	fflush(a->env.log);
	va_end(ap);
}

int agent_fail(struct agent *a, int code)
{
	a->exit = code;
	return code;
}

int agent_exit_for(fota_status st)
{
	switch (st) {
	case FOTA_OK: return AGENT_EXIT_OK;
	case FOTA_E_IO: return AGENT_EXIT_IO;
	case FOTA_E_SIGNATURE:
	case FOTA_E_TRUST:
	case FOTA_E_CRYPTO: return AGENT_EXIT_SIGNATURE;
	case FOTA_E_EXPIRED:
	case FOTA_E_UNSUPPORTED: return AGENT_EXIT_NOT_ACCEPTABLE;
	case FOTA_E_SOURCE: return AGENT_EXIT_SOURCE;
	case FOTA_E_FORMAT:
	case FOTA_E_MANIFEST:
	case FOTA_E_LIMIT:
	case FOTA_E_INTEGRITY:
	case FOTA_E_COMPRESS:
	case FOTA_E_PATCH: return AGENT_EXIT_CORRUPT;
	case FOTA_E_ARG: return AGENT_EXIT_USAGE;
	default: return AGENT_EXIT_INTERNAL;
	}
}

bool agent_checkpoint_due(struct agent *a)
{
	int64_t now = a->env.clock.now_ms(a->env.clock.ctx);
	return now - a->last_checkpoint_ms >= AGENT_CHECKPOINT_MS || now < a->last_checkpoint_ms;
}

fota_status agent_commit(struct agent *a, struct fota_error *err)
{
	a->last_checkpoint_ms = a->env.clock.now_ms(a->env.clock.ctx);
	char *s = NULL;
	size_t len = 0;
	fota_status rc = agent_journal_format(&a->j, &s, &len, err);
	if (rc == FOTA_OK)
		rc = a->env.state->ops->commit(a->env.state, REC_JOURNAL, s, len, err);
	free(s);
	return rc;
}

static int commit_or_fail(struct agent *a, struct fota_error *err)
{
	if (agent_commit(a, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	return AGENT_EXIT_OK;
}

fota_status agent_hash_range(struct agent *a, struct fota_storage *s, uint64_t off, uint64_t len,
			     uint8_t out[FOTA_SHA256_LEN], struct fota_error *err)
{
	struct fota_sha256 *h = fota_sha256_new();
	if (!h)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	fota_status rc = FOTA_OK;
	while (len > 0) {
		size_t n = len < AGENT_IO_BUF ? (size_t)len : AGENT_IO_BUF;
		if ((rc = fota_storage_read(s, off, a->buf2, n, err)) != FOTA_OK)
			break;
		fota_sha256_update(h, a->buf2, n);
		off += n;
		len -= n;
	}
	fota_sha256_final(h, out);
	fota_sha256_free(h);
	return rc;
}

/*
 * An in-place update that has written the partition, or may have: from the journaled
 * source check on (the next step writes), the partition is neither the source nor the
 * target until the last chunk is applied. Such a job is never discarded, reset or
 * started over; every failure leaves it at its journal position (docs/fota-agent.md).
 */
static bool inplace_wrote(const struct agent_journal *j)
{
	return j->source_ok || j->ap_next > 0 || j->ip_step > 0;
}

static bool inplace_committed(const struct agent *a)
{
	const struct agent_journal *j = &a->j;
	return a->cfg->mode == FOTA_MODE_INPLACE && j->head_ok &&
	       (j->phase == AGENT_PH_APPLYING || j->phase == AGENT_PH_APPLIED) && inplace_wrote(j);
}

/* ---- lifetime ---- */

static void revive_stranded(struct agent *a);

fota_status agent_open(const struct agent_env *env, struct agent **out, struct fota_error *err)
{
	*out = NULL;
	struct agent *a = calloc(1, sizeof(*a));
	if (!a || !(a->buf = malloc(AGENT_IO_BUF)) || !(a->buf2 = malloc(AGENT_IO_BUF))) {
		if (a)
			free(a->buf);
		free(a);
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	}
	a->env = *env;
	a->cfg = env->cfg;
	uint8_t *data = NULL;
	size_t len = 0;
	bool found = false;
	fota_status rc = env->state->ops->load(env->state, REC_JOURNAL, AGENT_JOURNAL_MAX, &data, &len, &found, err);
	if (rc == FOTA_OK && found)
		rc = agent_journal_parse(data, len, &a->j, err);
	free(data);
	if (rc != FOTA_OK) {
		fota_error_prefix(err, "state %s: ", REC_JOURNAL);
		agent_close(a);
		return rc;
	}
	if (!found) {
		a->j.phase = AGENT_PH_IDLE;
		a->j.state = FUMO_IDLE;
	}
	a->floor = env->cfg->security_version;
	rc = env->state->ops->load(env->state, REC_FLOOR, 64, &data, &len, &found, err);
	if (rc == FOTA_OK && found) {
		uint64_t v;
		if (fota_parse_u64((char *)data, &v) == 0 && v > a->floor)
			a->floor = v;
	}
	free(data);
	if (rc != FOTA_OK) {
		agent_close(a);
		return rc;
	}
	revive_stranded(a);
	*out = a;
	return FOTA_OK;
}

static void forget_package(struct agent *a)
{
	fota_manifest_free(a->m);
	a->m = NULL;
	free(a->pkg_off);
	free(a->cache_off);
	a->pkg_off = a->cache_off = NULL;
	fota_storage_close(a->cache);
	a->cache = NULL;
}

void agent_close(struct agent *a)
{
	if (!a)
		return;
	forget_package(a);
	fota_trust_free(a->trust);
	agent_fetch_close(a->fetch);
	free(a->buf);
	free(a->buf2);
	free(a);
}

const struct agent_journal *agent_journal(const struct agent *a)
{
	return &a->j;
}

uint64_t agent_bytes_received(const struct agent *a)
{
	return a->bytes;
}

/* ---- package head: fetch, verify, parse, check against the device ---- */

static fota_status load_trust(struct agent *a, struct fota_error *err)
{
	if (a->trust)
		return FOTA_OK;
	return fota_trust_load((const char *const *)a->cfg->trust, a->cfg->n_trust, a->cfg->crl, &a->trust, err);
}

/* Sizes and offsets of every payload, in the package and in the cache. */
static int layout(struct agent *a, struct fota_error *err)
{
	size_t n = fota_manifest_chunk_count(a->m);
	free(a->pkg_off);
	free(a->cache_off);
	a->pkg_off = calloc(n ? n : 1, sizeof(uint64_t));
	a->cache_off = calloc(n ? n : 1, sizeof(uint64_t));
	if (!a->pkg_off || !a->cache_off) {
		fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		return agent_fail(a, AGENT_EXIT_INTERNAL);
	}
	uint64_t pos = span(a->j.manifest_len) + span(a->j.sig_len), cpos = 0;
	size_t k = 0;
	for (size_t i = 0; i < a->m->n_images; i++)
		for (size_t c = 0; c < a->m->images[i].n_chunks; c++, k++) {
			uint64_t ps = a->m->images[i].chunks[c].payload_size; /* <= FOTA_PAYLOAD_MAX: no overflow */
			a->pkg_off[k] = pos + FOTA_TAR_BLOCK;
			a->cache_off[k] = cpos;
			pos += span(ps);
			cpos += ps;
		}
	pos += 2 * FOTA_TAR_BLOCK;
	if (a->j.pkg_size && pos != a->j.pkg_size) {
		fota_error_set(err, FOTA_E_FORMAT, "package: %llu bytes, the manifest describes %llu",
			       (unsigned long long)a->j.pkg_size, (unsigned long long)pos);
		return agent_fail(a, AGENT_EXIT_CORRUPT);
	}
	return AGENT_EXIT_OK;
}

static int open_scratch_size(struct agent *a, uint64_t *size, struct fota_error *err)
{
	struct fota_storage *s = NULL;
	if (a->env.devices.open(a->env.devices.ctx, a->cfg->scratch, false, &s, err) != FOTA_OK ||
	    fota_storage_size(s, size, err) != FOTA_OK) {
		fota_storage_close(s);
		fota_error_prefix(err, "scratch: ");
		return agent_fail(a, AGENT_EXIT_IO);
	}
	fota_storage_close(s);
	return AGENT_EXIT_OK;
}

static int device_size(struct agent *a, const char *path, uint64_t *size, struct fota_error *err)
{
	struct fota_storage *s = NULL;
	if (a->env.devices.open(a->env.devices.ctx, path, false, &s, err) != FOTA_OK ||
	    fota_storage_size(s, size, err) != FOTA_OK) {
		fota_storage_close(s);
		return agent_fail(a, AGENT_EXIT_IO);
	}
	fota_storage_close(s);
	return AGENT_EXIT_OK;
}

static int active_slot(struct agent *a, char *out, struct fota_error *err);
static void raise_alert(struct agent *a, int result);

/* Model, floor, expiry, mode and sizes (FORMAT.md section 5 step 4). */
static int check_device(struct agent *a, struct fota_error *err)
{
	const struct fota_manifest *m = a->m;
	const struct agent_config *c = a->cfg;
	if (m->n_models > 0) {
		bool ok = false;
		for (size_t i = 0; i < m->n_models; i++)
			ok |= strcmp(m->models[i], c->model) == 0;
		if (!ok) {
			fota_error_set(err, FOTA_E_ARG, "package: for model%s %s%s, this device is %s",
				       m->n_models > 1 ? "s" : "", m->models[0], m->n_models > 1 ? ", ..." : "", c->model);
			return agent_fail(a, AGENT_EXIT_DEVICE);
		}
	}
	if (m->security_version < a->floor) {
		fota_error_set(err, FOTA_E_ARG, "package: security_version %llu is below this device's floor %llu",
			       (unsigned long long)m->security_version, (unsigned long long)a->floor);
		return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
	}
	int64_t now = a->env.clock.now_ms(a->env.clock.ctx) / 1000;
	/* expiry is about starting an update: a half-applied partition is completed */
	if (m->expires && now >= m->expires && !inplace_committed(a)) {
		char t[21];
		fota_time_format(m->expires, t);
		fota_error_set(err, FOTA_E_EXPIRED, "package: expired at %s", t);
		return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
	}
	if (m->mode != c->mode) {
		fota_error_set(err, FOTA_E_UNSUPPORTED, "package: mode %s, this device is configured for %s",
			       fota_mode_name(m->mode), fota_mode_name(c->mode));
		return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
	}
	if (m->n_images != 1) {
		fota_error_set(err, FOTA_E_UNSUPPORTED, "package: %zu images; this agent updates one partition",
			       m->n_images);
		return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
	}
	const struct fota_image *im = &m->images[0];
	const char *dst = c->mode == FOTA_MODE_AB ? NULL : c->target;
	uint64_t size = 0;
	int rc;
	uint64_t src_room, dst_room;
	if (c->mode == FOTA_MODE_AB) {
		/* the active slot holds the source, the other one receives the target */
		char act = a->j.target_slot ? (a->j.target_slot == 'a' ? 'b' : 'a') : c->active_slot;
		if (!act && (rc = active_slot(a, &act, err)) != 0)
			return rc;
		if ((rc = device_size(a, act == 'a' ? c->slot_a : c->slot_b, &src_room, err)) != 0 ||
		    (rc = device_size(a, act == 'a' ? c->slot_b : c->slot_a, &dst_room, err)) != 0)
			return rc;
	} else {
		if ((rc = device_size(a, dst, &size, err)) != 0)
			return rc;
		src_room = dst_room = size;
	}
	if (im->target_size > dst_room || (im->has_source && im->source_size > src_room)) {
		bool t = im->target_size > dst_room;
		fota_error_set(err, FOTA_E_ARG, "package: image %s: %s of %llu bytes, the %s has %llu", im->name,
			       t ? "target" : "source", (unsigned long long)(t ? im->target_size : im->source_size),
			       c->mode == FOTA_MODE_AB ? (t ? "inactive slot" : "active slot") : "partition",
			       (unsigned long long)(t ? dst_room : src_room));
		return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
	}
	if (m->mode == FOTA_MODE_INPLACE) {
		if (!im->has_source) {
			fota_error_set(err, FOTA_E_MANIFEST, "package: in-place image %s has no source", im->name);
			return agent_fail(a, AGENT_EXIT_CORRUPT);
		}
		if (fota_inplace_check(im, fota_inplace_stash_end(m), err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_CORRUPT);
		uint64_t need = fota_inplace_scratch_needed(m);
		if (need > m->scratch_size) {
			fota_error_set(err, FOTA_E_MANIFEST, "package: scratch_size %llu, the scheme needs %llu",
				       (unsigned long long)m->scratch_size, (unsigned long long)need);
			return agent_fail(a, AGENT_EXIT_CORRUPT);
		}
		if (need > 0) {
			if (!c->scratch) {
				fota_error_set(err, FOTA_E_ARG, "package: needs %llu bytes of scratch; [device] scratch is not set",
					       (unsigned long long)need);
				return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
			}
			if ((rc = open_scratch_size(a, &size, err)) != 0)
				return rc;
			if (size < need) {
				fota_error_set(err, FOTA_E_ARG, "package: needs %llu bytes of scratch, %s has %llu",
					       (unsigned long long)need, c->scratch, (unsigned long long)size);
				return agent_fail(a, AGENT_EXIT_NOT_ACCEPTABLE);
			}
		}
	}
	return AGENT_EXIT_OK;
}

/* Signature, then parse, then device checks. Takes ownership of nothing. */
static int verify_head(struct agent *a, const uint8_t *man, size_t mlen, const uint8_t *sig, size_t slen,
		       struct fota_error *err)
{
	if (load_trust(a, err) != FOTA_OK) {
		fota_error_prefix(err, "trust: ");
		return agent_fail(a, AGENT_EXIT_CONFIG);
	}
	int64_t now = a->env.clock.now_ms(a->env.clock.ctx) / 1000;
	fota_status rc = fota_sig_verify(a->trust, man, mlen, sig, slen, now > 0 ? now : 1, NULL, err);
	if (rc != FOTA_OK) {
		fota_error_prefix(err, "package: ");
		return agent_fail(a, rc == FOTA_E_LIMIT ? AGENT_EXIT_CORRUPT : AGENT_EXIT_SIGNATURE);
	}
	fota_manifest_free(a->m);
	a->m = NULL;
	rc = fota_manifest_parse(man, mlen, &a->m, err);
	if (rc != FOTA_OK) {
		fota_error_prefix(err, "package: ");
		return agent_fail(a, rc == FOTA_E_UNSUPPORTED ? AGENT_EXIT_NOT_ACCEPTABLE : AGENT_EXIT_CORRUPT);
	}
	int x = layout(a, err);
	if (x != 0)
		return x;
	return check_device(a, err);
}

/* Load the saved head of the job and check it again (signature first). */
static int load_package(struct agent *a, struct fota_error *err)
{
	if (a->m)
		return AGENT_EXIT_OK;
	uint8_t *man = NULL, *sig = NULL;
	size_t mlen = 0, slen = 0;
	bool f1 = false, f2 = false;
	struct fota_store *st = a->env.state;
	int x = AGENT_EXIT_OK;
	if (st->ops->load(st, REC_MANIFEST, FOTA_MANIFEST_MAX, &man, &mlen, &f1, err) != FOTA_OK ||
	    st->ops->load(st, REC_SIG, FOTA_SIG_MAX, &sig, &slen, &f2, err) != FOTA_OK) {
		x = agent_fail(a, AGENT_EXIT_IO);
		goto out;
	}
	uint8_t d[FOTA_SHA256_LEN];
	if (f1)
		fota_sha256(man, mlen, d);
	/* the signature is not bound by length: an in-place job that adopted the same
	 * manifest from a changed package saves its signature after the journal (adopt_head),
	 * and either one verifies the manifest below */
	if (!f1 || !f2 || mlen != a->j.manifest_len || memcmp(d, a->j.manifest_sha256, sizeof(d)) != 0) {
		fota_error_set(err, FOTA_E_IO, "state: the saved manifest does not belong to the job");
		x = agent_fail(a, AGENT_EXIT_IO);
		goto out;
	}
	x = verify_head(a, man, mlen, sig, slen, err);
out:
	free(man);
	free(sig);
	return x;
}

/*
 * A journal of an earlier agent, which ended a half-applied in-place update as failed
 * (phase failed, FUMO 80, the saved package kept): it becomes the held job this agent
 * keeps instead (phase applying, 70; see hold_job), when its saved package still
 * loads, so resume can complete the partition. Only in memory until the next commit.
 */
static void revive_stranded(struct agent *a)
{
	struct agent_journal *j = &a->j;
	if (a->cfg->mode != FOTA_MODE_INPLACE || j->phase != AGENT_PH_FAILED || !j->head_ok || !inplace_wrote(j))
		return;
	j->phase = AGENT_PH_APPLYING;
	struct fota_error e;
	fota_error_clear(&e);
	if (load_package(a, &e) != AGENT_EXIT_OK) {
		agent_log(a, "a failed in-place update at chunk %llu cannot be continued: %s",
			  (unsigned long long)j->ap_next, e.msg);
		j->phase = AGENT_PH_FAILED;
		forget_package(a);
		return;
	}
	j->state = FUMO_UPD_FAILED_DATA; /* set, not moved: 80 has no way to 60 on the diagram */
	agent_log(a, "the in-place update that stopped at chunk %llu is kept for resume", (unsigned long long)j->ap_next);
}

struct membuf {
	uint8_t *data;
	size_t len, cap;
};

static fota_status mem_sink(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err)
{
	struct membuf *b = ctx;
	if (len > b->cap - b->len)
		return fota_error_set(err, FOTA_E_INTERNAL, "head: more bytes than asked for");
	memcpy(b->data + b->len, buf, len);
	b->len += len;
	return FOTA_OK;
}

#define RES_CHANGED (-1)

/*
 * One range with retries: exponential backoff with full jitter,
 * delay = U(0, min(max, base * 2^attempt)); the window restarts whenever a request
 * delivered bytes. Returns an exit code, or RES_CHANGED.
 */
static int fetch_retry(struct agent *a, uint64_t off, uint64_t len, bool allow_short, fetch_sink sink, void *ctx,
		       struct fota_error *err)
{
	const struct agent_clock *ck = &a->env.clock;
	unsigned attempt = 0;
	int64_t window_start = ck->now_ms(ck->ctx);
	const uint64_t window_ms = a->cfg->retry_window_s * 1000;
	for (;;) {
		uint64_t delivered = 0;
		struct agent_validators got = { .total = 0 };
		enum fetch_result r = FETCH_RETRY;
		char why[256] = "";
		if (!agent_policy_download_allowed(a, why, sizeof(why))) {
			/* paused: nothing is lost, the backoff below waits for a network the
			 * policy allows, within the same retry window */
			fota_error_set(err, FOTA_E_IO, "%s", why);
			memset(&a->last_fetch, 0, sizeof(a->last_fetch));
		} else {
			uint64_t before = agent_fetch_bytes(a->fetch);
			r = agent_fetch_range(a->fetch, off, len, allow_short, sink, ctx, a->val.total ? &a->val : NULL, &got,
					      &delivered, err);
			a->last_fetch = agent_fetch_failure(a->fetch);
			uint64_t got_bytes = agent_fetch_bytes(a->fetch) - before;
			a->bytes += got_bytes;
			a->j.bytes += got_bytes; /* head and payloads, kept with the job */
		}
		if (r == FETCH_OK) {
			if (!a->val.total)
				a->val = got;
			return AGENT_EXIT_OK;
		}
		if (r == FETCH_CHANGED)
			return RES_CHANGED;
		if (r == FETCH_SINK)
			return a->exit ? a->exit : agent_fail(a, agent_exit_for(err ? err->code : FOTA_E_IO));
		if (r == FETCH_FATAL)
			return agent_fail(a, AGENT_EXIT_DOWNLOAD);
		if (delivered) {
			off += delivered;
			len -= delivered;
			attempt = 0;
			window_start = ck->now_ms(ck->ctx);
		}
		uint64_t cap = a->cfg->backoff_max_s * 1000;
		uint64_t d = a->cfg->backoff_base_s * 1000;
		for (unsigned i = 0; i < attempt && d < cap; i++)
			d *= 2;
		if (d > cap)
			d = cap;
		uint64_t delay = ck->random(ck->ctx) % (d + 1);
		int64_t now = ck->now_ms(ck->ctx);
		if ((uint64_t)(now - window_start) + delay > window_ms) {
			fota_error_prefix(err, "download: gave up after the retry window (%llu min): ",
					  (unsigned long long)(a->cfg->retry_window_s / 60));
			return agent_fail(a, AGENT_EXIT_DOWNLOAD);
		}
		agent_log(a, "%s; retry %u in %.1f s", err ? err->msg : "download failed", attempt + 1, delay / 1000.0);
		ck->sleep_ms(ck->ctx, delay);
		attempt++;
	}
}

static int open_fetch(struct agent *a, struct fota_error *err)
{
	if (a->fetch)
		return AGENT_EXIT_OK;
	if (agent_fetch_open(a->j.url, a->cfg, &a->fetch, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_DOWNLOAD);
	if (a->j.pkg_size) {
		a->val.total = a->j.pkg_size;
		snprintf(a->val.etag, sizeof(a->val.etag), "%s", a->j.etag);
		snprintf(a->val.last_modified, sizeof(a->val.last_modified), "%s", a->j.last_modified);
	}
	return AGENT_EXIT_OK;
}

struct cache_sink {
	struct agent *a;
	struct fota_storage *st;
	uint64_t pos;
};

static fota_status cache_sink_fn(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err)
{
	struct cache_sink *c = ctx;
	fota_status rc = fota_storage_write(c->st, c->pos, buf, len, err);
	if (rc != FOTA_OK) {
		agent_fail(c->a, AGENT_EXIT_IO);
		return rc;
	}
	c->pos += len;
	return FOTA_OK;
}

static void stream_name(size_t k, char out[32])
{
	snprintf(out, 32, "stream-%zu.part", k);
}

static int open_cache(struct agent *a, struct fota_error *err)
{
	if (a->cache)
		return AGENT_EXIT_OK;
	if (a->env.state->ops->open(a->env.state, CACHE_FILE, true, &a->cache, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	return AGENT_EXIT_OK;
}

/* Stream mode: remove the payload files of chunks first .. ap_next + 1 and of the
 * chunks after it that start before head_end in the package (the head request's). */
static void drop_stream_files(struct agent *a, uint64_t first, uint64_t head_end)
{
	if (!a->j.stream)
		return;
	size_t n = a->m ? fota_manifest_chunk_count(a->m) : 0;
	uint64_t last = a->j.ap_next + 1;
	while (a->pkg_off && last < n && a->pkg_off[last] < head_end)
		last++;
	char name[32];
	for (uint64_t k = first; k <= last && (n == 0 || k < n); k++) {
		stream_name((size_t)k, name);
		(void)a->env.state->ops->remove(a->env.state, name, NULL);
	}
}

/* Drop everything of the job but the journal. */
static void drop_cache(struct agent *a)
{
	struct fota_store *st = a->env.state;
	fota_storage_close(a->cache);
	a->cache = NULL;
	(void)st->ops->remove(st, CACHE_FILE, NULL);
	/* stream files of the chunks around the job's position, and those the head
	 * request brought */
	drop_stream_files(a, a->j.ap_next > 0 ? a->j.ap_next - 1 : 0, HEAD_FETCH);
}

static const struct fota_chunk *chunk_at(const struct fota_manifest *m, size_t k)
{
	for (size_t i = 0; i < m->n_images; i++) {
		if (k < m->images[i].n_chunks)
			return &m->images[i].chunks[k];
		k -= m->images[i].n_chunks;
	}
	return NULL;
}

/*
 * Bring payload k into st at off: keep the bytes already there (the file's size tells
 * how far a previous run got), fetch the rest by Range, check the hash; a payload that
 * fails is fetched once more from its first byte.
 */
static int fetch_payload(struct agent *a, size_t k, struct fota_storage *st, uint64_t off, struct fota_error *err)
{
	const struct fota_chunk *ch = chunk_at(a->m, k);
	uint64_t size = 0;
	if (fota_storage_size(st, &size, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	uint64_t have = size > off ? size - off : 0;
	if (have > ch->payload_size)
		have = ch->payload_size;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (have < ch->payload_size) {
			int x = open_fetch(a, err);
			if (x != 0)
				return x;
			struct cache_sink cs = { a, st, off + have };
			x = fetch_retry(a, a->pkg_off[k] + have, ch->payload_size - have, false, cache_sink_fn, &cs, err);
			if (x != 0)
				return x;
		}
		/* no sync here: the journal's checkpoint syncs the cache before it counts a payload */
		uint8_t d[FOTA_SHA256_LEN];
		if (agent_hash_range(a, st, off, ch->payload_size, d, err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_IO);
		if (memcmp(d, ch->payload_sha256, sizeof(d)) == 0)
			return AGENT_EXIT_OK;
		agent_log(a, "chunk %zu: payload sha256 mismatch%s", k, attempt == 0 ? "; fetching it again" : "");
		have = 0;
	}
	fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: payload sha256 does not match the manifest (fetched twice)", k);
	return agent_fail(a, AGENT_EXIT_CORRUPT);
}

int agent_payload(struct agent *a, size_t k, struct fota_storage **st, bool *owned, uint64_t *off,
		  struct fota_error *err)
{
	*st = NULL;
	*owned = false;
	int x;
	if (!a->j.stream) {
		if ((x = open_cache(a, err)) != 0)
			return x;
		*st = a->cache;
		*off = a->cache_off[k];
		return fetch_payload(a, k, a->cache, a->cache_off[k], err);
	}
	char name[32];
	stream_name(k, name);
	struct fota_storage *s = NULL;
	if (a->env.state->ops->open(a->env.state, name, true, &s, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	x = fetch_payload(a, k, s, 0, err);
	if (x != 0) {
		fota_storage_close(s);
		return x;
	}
	*st = s;
	*owned = true;
	*off = 0;
	return AGENT_EXIT_OK;
}

void agent_payload_release(struct agent *a, size_t k)
{
	if (!a->j.stream)
		return;
	char name[32];
	stream_name(k, name);
	(void)a->env.state->ops->remove(a->env.state, name, NULL);
}

/* The head of the package on the server (FORMAT.md 2.4), read but not verified: the
 * first HEAD_FETCH bytes (and more if the signature ends later). h->b.data is malloc'd
 * and stays with the caller, also on failure. */
struct head {
	struct membuf b;
	uint64_t total;               /* the package's size on the server */
	uint64_t mlen, slen;
	const uint8_t *man, *sig;     /* inside b.data */
};

static int read_head(struct agent *a, struct head *h, struct fota_error *err)
{
	struct membuf b = { NULL, 0, HEAD_FETCH };
	int x;
	memset(h, 0, sizeof(*h));
	if (!(b.data = malloc(b.cap))) {
		fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		return agent_fail(a, AGENT_EXIT_INTERNAL);
	}
	if ((x = fetch_retry(a, 0, HEAD_FETCH, true, mem_sink, &b, err)) != 0)
		goto out;
	uint64_t total = a->val.total;
	struct fota_tarhead th;
	if (b.len < FOTA_TAR_BLOCK || fota_tarhead_parse(b.data, &th, err) != FOTA_OK || strcmp(th.name, "manifest.json") != 0) {
		if (b.len >= FOTA_TAR_BLOCK && err && err->code == FOTA_OK)
			fota_error_set(err, FOTA_E_FORMAT, "first member is '%s', not manifest.json", th.name);
		else if (b.len < FOTA_TAR_BLOCK)
			fota_error_set(err, FOTA_E_FORMAT, "shorter than a tar header");
		fota_error_prefix(err, "package: ");
		x = agent_fail(a, AGENT_EXIT_CORRUPT);
		goto out;
	}
	fota_error_clear(err);
	if (th.size > FOTA_MANIFEST_MAX || th.size == 0) {
		fota_error_set(err, FOTA_E_LIMIT, "package: manifest.json is %llu bytes, limit %u",
			       (unsigned long long)th.size, FOTA_MANIFEST_MAX);
		x = agent_fail(a, AGENT_EXIT_CORRUPT);
		goto out;
	}
	uint64_t mlen = th.size, sig_hdr = span(mlen);
	/* need the manifest and the next header, then the signature */
	for (int step = 0; step < 2; step++) {
		uint64_t need = sig_hdr + FOTA_TAR_BLOCK;
		if (step == 1) {
			if (fota_tarhead_parse(b.data + sig_hdr, &th, err) != FOTA_OK) {
				fota_error_prefix(err, "package: member after manifest.json: ");
				x = agent_fail(a, AGENT_EXIT_CORRUPT);
				goto out;
			}
			if (strcmp(th.name, "manifest.sig") != 0) {
				fota_error_set(err, FOTA_E_SIGNATURE, "package: unsigned (no manifest.sig after manifest.json)");
				x = agent_fail(a, AGENT_EXIT_SIGNATURE);
				goto out;
			}
			if (th.size > FOTA_SIG_MAX || th.size == 0) {
				fota_error_set(err, FOTA_E_LIMIT, "package: manifest.sig is %llu bytes, limit %u",
					       (unsigned long long)th.size, FOTA_SIG_MAX);
				x = agent_fail(a, AGENT_EXIT_CORRUPT);
				goto out;
			}
			need = sig_hdr + FOTA_TAR_BLOCK + th.size;
		}
		if (need > total) {
			fota_error_set(err, FOTA_E_FORMAT, "package: truncated head (%llu bytes)", (unsigned long long)total);
			x = agent_fail(a, AGENT_EXIT_CORRUPT);
			goto out;
		}
		if (need > b.len) {
			uint8_t *nd = realloc(b.data, need);
			if (!nd) {
				fota_error_set(err, FOTA_E_NOMEM, "out of memory");
				x = agent_fail(a, AGENT_EXIT_INTERNAL);
				goto out;
			}
			b.data = nd;
			b.cap = need;
			if ((x = fetch_retry(a, b.len, need - b.len, false, mem_sink, &b, err)) != 0)
				goto out;
		}
	}
	h->total = total;
	h->mlen = mlen;
	h->slen = th.size;
	h->man = b.data + FOTA_TAR_BLOCK;
	h->sig = b.data + sig_hdr + FOTA_TAR_BLOCK;
	x = AGENT_EXIT_OK;
out:
	h->b = b;
	return x;
}

/*
 * Read the head and check it with `check`. A head refused for what a byte flipped on the
 * way could cause (signature, parse, sizes, a manifest that differs from the job's) is
 * fetched once more before the job fails: plain HTTP has no integrity of its own. Model,
 * floor and expiry come from a verified manifest and are not retried. h->b.data stays
 * with the caller, also on failure.
 */
typedef int (*head_check)(struct agent *a, const struct head *h, const void *ctx, struct fota_error *err);

static int read_checked_head(struct agent *a, struct head *h, head_check check, const void *ctx,
			     struct fota_error *err)
{
	for (int attempt = 0;; attempt++) {
		int x = read_head(a, h, err);
		if (x == 0)
			x = check(a, h, ctx, err);
		if (x == 0 || attempt > 0 ||
		    (x != AGENT_EXIT_SIGNATURE && x != AGENT_EXIT_CORRUPT && x != AGENT_EXIT_SOURCE))
			return x;
		agent_log(a, "%s; fetching the package head once more (it may have been damaged on the way)",
			  err ? err->msg : "package head refused");
		free(h->b.data);
		h->b.data = NULL;
		/* no validators yet: the next answer gives them, also the size */
		memset(&a->val, 0, sizeof(a->val));
	}
}

static int check_new_head(struct agent *a, const struct head *h, const void *ctx, struct fota_error *err)
{
	(void)ctx;
	a->j.manifest_len = h->mlen;
	a->j.sig_len = h->slen;
	a->j.pkg_size = h->total;
	return verify_head(a, h->man, (size_t)h->mlen, h->sig, (size_t)h->slen, err);
}

/* Fetch the head, verify it (once more on a failure transit could cause), save it. */
static int fetch_head(struct agent *a, struct fota_error *err)
{
	struct head h;
	int x = read_checked_head(a, &h, check_new_head, NULL, err);
	if (x != 0)
		goto out;
	struct membuf b = h.b;
	const uint8_t *man = h.man, *sig = h.sig;
	const uint64_t mlen = h.mlen, slen = h.slen;
	struct fota_store *st = a->env.state;
	if (st->ops->commit(st, REC_MANIFEST, man, mlen, err) != FOTA_OK ||
	    st->ops->commit(st, REC_SIG, sig, slen, err) != FOTA_OK) {
		x = agent_fail(a, AGENT_EXIT_IO);
		goto out;
	}
	drop_cache(a); /* anything left from an earlier package */
	/* The first request usually brought the first payloads too: keep their bytes (in
	 * the cache they are contiguous, so the file's size still tells the progress). */
	size_t nch = fota_manifest_chunk_count(a->m);
	for (size_t k = 0; k < nch && a->pkg_off[k] < b.len; k++) {
		uint64_t n = b.len - a->pkg_off[k], pk = chunk_at(a->m, k)->payload_size;
		if (n > pk)
			n = pk;
		struct fota_storage *s = NULL;
		char name[32];
		stream_name(k, name);
		if (a->env.state->ops->open(a->env.state, a->j.stream ? name : CACHE_FILE, true, &s, err) != FOTA_OK ||
		    fota_storage_write(s, a->j.stream ? 0 : a->cache_off[k], b.data + a->pkg_off[k], (size_t)n, err) != FOTA_OK) {
			fota_storage_close(s);
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
		fota_storage_close(s);
		if (n < pk)
			break;
	}
	fota_sha256(man, mlen, a->j.manifest_sha256);
	snprintf(a->j.etag, sizeof(a->j.etag), "%s", a->val.etag);
	snprintf(a->j.last_modified, sizeof(a->j.last_modified), "%s", a->val.last_modified);
	a->j.head_ok = true;
	snprintf(a->j.pkg_name, sizeof(a->j.pkg_name), "%s", a->m->name);
	snprintf(a->j.pkg_version, sizeof(a->j.pkg_version), "%s", a->m->version);
	snprintf(a->j.message, sizeof(a->j.message), "package %s %s verified", a->m->name, a->m->version);
	x = commit_or_fail(a, err);
	if (x == 0)
		agent_log(a, "package %s version %s: signature, model, security version and expiry accepted",
			  a->m->name, a->m->version);
out:
	free(h.b.data);
	return x;
}

/* adopt_head's check: the job's manifest byte for byte (length and the journaled
 * SHA-256), then the signature and the device checks; ctx is the URL, for the message. */
static int check_same_head(struct agent *a, const struct head *h, const void *ctx, struct fota_error *err)
{
	uint8_t d[FOTA_SHA256_LEN];
	fota_sha256(h->man, (size_t)h->mlen, d);
	if (h->mlen != a->j.manifest_len || memcmp(d, a->j.manifest_sha256, sizeof(d)) != 0) {
		fota_error_set(err, FOTA_E_SOURCE, "an in-place update of %s %s is half applied at chunk %llu; "
			       "only a package with the same signed manifest can complete it, and %s has another "
			       "manifest: refused, nothing written (resume continues the update when the "
			       "package is back)", a->j.pkg_name, a->j.pkg_version, (unsigned long long)a->j.ap_next,
			       (const char *)ctx);
		return agent_fail(a, AGENT_EXIT_SOURCE);
	}
	a->j.sig_len = h->slen;
	a->j.pkg_size = h->total;
	return verify_head(a, h->man, (size_t)h->mlen, h->sig, (size_t)h->slen, err);
}

/*
 * A half-applied in-place job (inplace_committed) is offered its package again: changed
 * on the server (new validators) or under another URL. Only the same signed manifest
 * can complete the partition: fetch the new head; when its manifest.json is the job's
 * byte for byte (length and the journaled SHA-256) and its signature and the device
 * checks pass, take the new URL, size and validators and continue from the journal's
 * position (applied chunks stay applied, verified payloads in the cache stay valid: the
 * hashes are the same; a partly fetched stream payload starts again). Anything else is
 * refused, and the job, its journal and its files stay as they were.
 */
static int adopt_head(struct agent *a, const char *url, struct fota_error *err)
{
	/* the saved head is not needed (its signature may be the one that no longer
	 * verifies): the journal binds the manifest by length and SHA-256 */
	int x;
	const struct agent_journal old = a->j;
	struct agent_fetch *old_fetch = a->fetch;
	const struct agent_validators old_val = a->val;
	const char *name = old.pkg_name, *version = old.pkg_version;
	struct head h = { { NULL, 0, 0 }, 0, 0, 0, NULL, NULL };
	a->fetch = NULL;
	memset(&a->val, 0, sizeof(a->val));
	agent_log(a, "in-place update of %s %s half applied at chunk %llu: checking the package at %s", name, version,
		  (unsigned long long)old.ap_next, url);
	if (agent_fetch_open(url, a->cfg, &a->fetch, err) != FOTA_OK) {
		x = agent_fail(a, AGENT_EXIT_DOWNLOAD);
		goto refuse;
	}
	x = read_checked_head(a, &h, check_same_head, url, err);
	if (x != 0)
		goto refuse;
	/* unverified stream files first, then the journal, then the signature: a cut
	 * anywhere leaves a job that loads (load_package) and fetches what it misses */
	drop_stream_files(a, a->j.ap_next, HEAD_FETCH + FOTA_SIG_MAX);
	snprintf(a->j.url, sizeof(a->j.url), "%s", url);
	snprintf(a->j.etag, sizeof(a->j.etag), "%s", a->val.etag);
	snprintf(a->j.last_modified, sizeof(a->j.last_modified), "%s", a->val.last_modified);
	snprintf(a->j.message, sizeof(a->j.message), "the package of the in-place update changed on the server with the "
		 "same signed manifest: continuing at chunk %llu", (unsigned long long)a->j.ap_next);
	if ((x = commit_or_fail(a, err)) != 0)
		goto out;
	if (a->env.state->ops->commit(a->env.state, REC_SIG, h.sig, (size_t)h.slen, err) != FOTA_OK) {
		x = agent_fail(a, AGENT_EXIT_IO);
		goto out;
	}
	agent_fetch_close(old_fetch);
	old_fetch = NULL;
	agent_log(a, "%s", a->j.message);
	goto out;
refuse:
	agent_fetch_close(a->fetch);
	a->fetch = old_fetch;
	old_fetch = NULL;
	a->val = old_val;
	{
		uint64_t bytes = a->j.bytes;
		a->j = old;
		a->j.bytes = bytes;
	}
	forget_package(a); /* the saved head is loaded again when needed */
out:
	agent_fetch_close(old_fetch);
	free(h.b.data);
	return x;
}

/* Move the FUMO state, as the state diagram allows (fumo.c); the caller commits. */
static int set_state(struct agent *a, int to, struct fota_error *err)
{
	if (a->j.state != to && !fumo_transition_ok(a->j.state, to)) {
		fota_error_set(err, FOTA_E_INTERNAL, "FUMO: no transition from %d (%s) to %d (%s)", a->j.state,
			       fumo_state_name(a->j.state) ? fumo_state_name(a->j.state) : "?", to,
			       fumo_state_name(to) ? fumo_state_name(to) : "?");
		return agent_fail(a, AGENT_EXIT_INTERNAL);
	}
	a->j.state = to;
	return AGENT_EXIT_OK;
}

/* The job's Generic Alert, kept until acknowledged. */
static void raise_alert(struct agent *a, int result)
{
	a->j.fumo_result = result;
	a->j.alert_pending = true;
	a->j.alert_op = a->j.op;
	a->j.alert_result = result;
	snprintf(a->j.alert_correlator, sizeof(a->j.alert_correlator), "%s", a->j.correlator);
}

/* The job ends: record how, with its FUMO state, result code and alert (one commit). */
static int end_job(struct agent *a, enum agent_phase phase, int code, struct fota_error *err, bool keep_cache)
{
	if (phase == AGENT_PH_DONE || phase == AGENT_PH_FAILED) {
		const bool updating = a->j.state == FUMO_UPD_PROGRESSING;
		int r = fumo_result_for(code, a->cause, updating, &a->last_fetch);
		int to;
		if (phase == AGENT_PH_DONE)
			to = keep_cache ? FUMO_UPD_OK_DATA : FUMO_UPD_OK_NODATA;
		else if (a->j.state == FUMO_DL_PROGRESSING || a->j.state == FUMO_IDLE)
			to = FUMO_DL_FAILED;
		else if (updating && a->cfg->mode == FOTA_MODE_AB &&
			 (r == FUMO_R_UPD_NO_SPACE || r == FUMO_R_UPDATE_FAILED)) {
			to = FUMO_UPD_FAILED_DATA; /* the package stays: Update may run again */
			keep_cache = true;
		} else {
			to = FUMO_UPD_FAILED_NODATA;
		}
		if (a->j.state == FUMO_IDLE)
			a->j.state = FUMO_DL_PROGRESSING; /* a job refused before it began (411) */
		int x = set_state(a, to, err);
		if (x != 0)
			return x;
		raise_alert(a, r);
	}
	a->j.phase = phase;
	a->j.result = code;
	if (err && code != 0)
		snprintf(a->j.message, sizeof(a->j.message), "%s", err->msg);
	/* journal first: a cut before the files go leaves stale files, never a job without them */
	struct fota_error e2;
	if (agent_commit(a, &e2) != FOTA_OK) {
		if (code == 0) {
			if (err)
				*err = e2;
			return agent_fail(a, AGENT_EXIT_IO);
		}
		return code;
	}
	if (!keep_cache) {
		drop_cache(a);
		(void)a->env.state->ops->remove(a->env.state, REC_MANIFEST, NULL);
		(void)a->env.state->ops->remove(a->env.state, REC_SIG, NULL);
	}
	return code;
}

/* What outlives a job in the journal: the pending alert and the delayed reboot; for a
 * restart of the same job (args NULL) also what the server gave and the user said. */
static void carry_over(struct agent_journal *j, const struct agent_journal *old, const struct agent_op_args *args)
{
	j->alert_pending = old->alert_pending;
	j->alert_op = old->alert_op;
	j->alert_result = old->alert_result;
	memcpy(j->alert_correlator, old->alert_correlator, sizeof(j->alert_correlator));
	j->reboot_pending = old->reboot_pending;
	j->reboot_due_ms = old->reboot_due_ms;
	j->reboot_defers = old->reboot_defers;
	j->reboot_deferred_min = old->reboot_deferred_min;
	if (!args) {
		memcpy(j->correlator, old->correlator, sizeof(j->correlator));
		memcpy(j->srv_pkg_name, old->srv_pkg_name, sizeof(j->srv_pkg_name));
		memcpy(j->srv_pkg_version, old->srv_pkg_version, sizeof(j->srv_pkg_version));
		j->dl_consent = old->dl_consent;
		j->defers = old->defers;
		return;
	}
	snprintf(j->correlator, sizeof(j->correlator), "%s", args->correlator ? args->correlator : "");
	snprintf(j->srv_pkg_name, sizeof(j->srv_pkg_name), "%s", args->pkg_name ? args->pkg_name : "");
	snprintf(j->srv_pkg_version, sizeof(j->srv_pkg_version), "%s", args->pkg_version ? args->pkg_version : "");
}

/* A fresh job for url (the old one's files are dropped). args: the new operation's, or
 * NULL when the same job starts over. */
static int new_job(struct agent *a, const char *url, enum agent_op op, uint64_t restarts,
		   const struct agent_op_args *args, struct fota_error *err)
{
	/* the old job's files go after the new journal is durable (fetch_head drops a
	 * stale cache again, in case a cut came in between) */
	struct agent_journal old = a->j;
	memset(&a->j, 0, sizeof(a->j));
	carry_over(&a->j, &old, args);
	/* a new operation takes the node back to Idle/Start, then Download Progressing; a
	 * package that changed on the server restarts the job there too (also from 60,
	 * when a streamed A/B update starts over: outside the diagram, on purpose) */
	a->j.state = FUMO_DL_PROGRESSING;
	a->cause = FUMO_CAUSE_NONE;
	memset(&a->val, 0, sizeof(a->val));
	agent_fetch_close(a->fetch);
	a->fetch = NULL;
	a->j.op = op;
	a->j.phase = AGENT_PH_DOWNLOADING;
	a->j.stream = a->cfg->dl_mode == AGENT_DL_STREAM;
	a->j.restarts = restarts;
	snprintf(a->j.url, sizeof(a->j.url), "%s", url);
	snprintf(a->j.message, sizeof(a->j.message), "downloading");
	int x = commit_or_fail(a, err);
	if (x != 0)
		return x;
	struct agent_journal cur = a->j;
	a->j = old; /* drop_cache looks at the old job's position */
	drop_cache(a);
	a->j = cur;
	forget_package(a);
	struct fota_store *st = a->env.state;
	(void)st->ops->remove(st, REC_MANIFEST, NULL);
	(void)st->ops->remove(st, REC_SIG, NULL);
	return AGENT_EXIT_OK;
}

/* Phase DOWNLOADING -> DOWNLOADED. */
static int run_download(struct agent *a, struct fota_error *err)
{
	int restarts = 0;
	for (;;) {
		int x = open_fetch(a, err);
		if (x != 0)
			return x;
		if (!a->j.head_ok)
			x = fetch_head(a, err);
		else
			x = load_package(a, err);
		if (x == 0 && !a->j.dl_consent)
			x = agent_policy_download_gate(a, err);
		size_t n = x == 0 ? fota_manifest_chunk_count(a->m) : 0;
		if (x == 0 && !a->j.stream) {
			for (size_t k = (size_t)a->j.dl_next; k < n && x == 0; k++) {
				struct fota_storage *st;
				bool owned;
				uint64_t off;
				x = agent_payload(a, k, &st, &owned, &off, err);
				if (x == 0) {
					a->j.dl_next = k + 1;
					agent_log(a, "chunk %zu/%zu downloaded and verified", k + 1, n);
					if (k + 1 == n || agent_checkpoint_due(a)) {
						snprintf(a->j.message, sizeof(a->j.message), "downloaded %zu of %zu chunks", k + 1, n);
						if (fota_storage_sync(a->cache, err) != FOTA_OK)
							x = agent_fail(a, AGENT_EXIT_IO);
						else
							x = commit_or_fail(a, err);
					}
				}
			}
		}
		if (x == RES_CHANGED) {
			if (++restarts > RESTARTS_PER_RUN) {
				fota_error_set(err, FOTA_E_FORMAT, "download: the package keeps changing on the server");
				return agent_fail(a, AGENT_EXIT_DOWNLOAD);
			}
			agent_log(a, "the package changed on the server: starting over");
			char url[AGENT_URL_MAX + 1];
			snprintf(url, sizeof(url), "%s", a->j.url);
			if ((x = new_job(a, url, a->j.op, a->j.restarts + 1, NULL, err)) != 0)
				return x;
			continue;
		}
		if (x != 0)
			return x;
		a->j.phase = AGENT_PH_DOWNLOADED;
		if ((x = set_state(a, a->j.op == AGENT_OP_DOWNLOAD ? FUMO_DL_COMPLETE : FUMO_READY, err)) != 0)
			return x;
		if (a->j.op == AGENT_OP_DOWNLOAD)
			raise_alert(a, FUMO_R_OK); /* the Download operation is over */
		snprintf(a->j.message, sizeof(a->j.message), "package %s %s downloaded and verified; ready to update",
			 a->m->name, a->m->version);
		return commit_or_fail(a, err);
	}
}

/* Failures that end a job, as opposed to ones a later resume can get past. */
static bool final_failure(int x)
{
	return x == AGENT_EXIT_SIGNATURE || x == AGENT_EXIT_DEVICE || x == AGENT_EXIT_NOT_ACCEPTABLE ||
	       x == AGENT_EXIT_CORRUPT || x == AGENT_EXIT_SOURCE || x == AGENT_EXIT_DOWNLOAD ||
	       x == AGENT_EXIT_CANCELLED;
}

/* A write that failed for want of room (ENOSPC, or EFBIG under a file-size limit). A
 * download's sink says so through the fetch failure (fumo_fetch_no_space); writes
 * outside a request (the apply, the journal) through the errno their storage backend
 * recorded in the error (fota_error_errno). */
static bool no_space(const struct agent *a, const struct fota_error *err)
{
	return fumo_fetch_no_space(&a->last_fetch) ||
	       (err && (err->sys_errno == ENOSPC || err->sys_errno == EFBIG));
}

/* Floor raised after a successful install (FORMAT.md 3.3). */
static fota_status raise_floor(struct agent *a, struct fota_error *err)
{
	if (a->m->security_version <= a->floor)
		return FOTA_OK;
	char s[32];
	int n = snprintf(s, sizeof(s), "%" PRIu64 "\n", a->m->security_version);
	fota_status rc = a->env.state->ops->commit(a->env.state, REC_FLOOR, s, (size_t)n - 1, err);
	if (rc == FOTA_OK)
		a->floor = a->m->security_version;
	return rc;
}

/*
 * The [device] switch_command, once the new slot is written and verified. It runs as a
 * hook (hooks.c) under [ui] hook_timeout_seconds: one that fails, is killed by a signal,
 * or hangs past the timeout (then its process group is killed) is exit "hook" with the
 * job left in APPLIED, and resume runs it again.
 */
static int run_hook(struct agent *a, struct fota_error *err)
{
	const char *cmd = a->cfg->switch_command;
	if (a->cfg->mode != FOTA_MODE_AB || !cmd)
		return AGENT_EXIT_OK;
	const char *path = a->j.target_slot == 'a' ? a->cfg->slot_a : a->cfg->slot_b;
	char slot_env[16], name_env[FOTA_STRING_MAX + 32], version_env[FOTA_STRING_MAX + 32];
	char *path_env = NULL;
	snprintf(slot_env, sizeof(slot_env), "FOTA_SLOT=%c", a->j.target_slot);
	snprintf(name_env, sizeof(name_env), "FOTA_PKG_NAME=%s", a->m->name);
	snprintf(version_env, sizeof(version_env), "FOTA_PKG_VERSION=%s", a->m->version);
	if (asprintf(&path_env, "FOTA_SLOT_PATH=%s", path) < 0) {
		fota_error_set(err, FOTA_E_NOMEM, "[device] switch_command: out of memory");
		return agent_fail(a, AGENT_EXIT_IO);
	}
	const char *env[] = { slot_env, path_env, name_env, version_env, NULL };
	struct fota_error he;
	fota_error_clear(&he);
	int rc = agent_hook_run("[device] switch_command", cmd, NULL, env, a->cfg->hook_timeout_s, NULL, 0, &he);
	free(path_env);
	if (rc == 0)
		return AGENT_EXIT_OK;
	if (rc > 0)
		fota_error_set(err, FOTA_E_IO, "[device] switch_command '%s' failed (exit %d)", cmd, rc);
	else
		fota_error_set(err, FOTA_E_IO, "%s", he.msg);
	fota_error_prefix(err, "slot %c is written and verified, resume runs the switch again: ", a->j.target_slot);
	return agent_fail(a, AGENT_EXIT_HOOK);
}

/* The active slot, from the config or from active_slot_command (run as a hook, under
 * [ui] hook_timeout_seconds). Asked before anything is written: a command that hangs,
 * fails or prints anything but a or b stops the job there (exit "hook"). */
static int active_slot(struct agent *a, char *out, struct fota_error *err)
{
	if (a->cfg->active_slot) {
		*out = a->cfg->active_slot;
		return AGENT_EXIT_OK;
	}
	const char *cmd = a->cfg->active_slot_command;
	char line[40];
	struct fota_error he;
	fota_error_clear(&he);
	int rc = agent_hook_run("[device] active_slot_command", cmd, NULL, NULL, a->cfg->hook_timeout_s, line,
				sizeof(line), &he);
	if (rc == 0 && (strcmp(line, "a") == 0 || strcmp(line, "b") == 0)) {
		*out = line[0];
		return AGENT_EXIT_OK;
	}
	if (rc < 0) {
		fota_error_set(err, FOTA_E_IO, "%s", he.msg);
	} else {
		for (char *p = line; *p; p++) /* what it printed goes into messages: printable only */
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		fota_error_set(err, FOTA_E_IO, "[device] active_slot_command '%s' must print a or b and exit 0 "
			       "(it printed \"%s\", exit %d)", cmd, line, rc);
	}
	fota_error_prefix(err, "the active slot is not known, no slot was written: ");
	return agent_fail(a, AGENT_EXIT_HOOK);
}

/* Phases DOWNLOADED / APPLYING / APPLIED -> DONE. */
static int run_update(struct agent *a, struct fota_error *err)
{
	int x = load_package(a, err);
	if (x == AGENT_EXIT_SIGNATURE && inplace_committed(a)) {
		/* the saved signature no longer verifies (say its certificate expired while the
		 * update waited): a half-applied partition takes the same manifest with a
		 * signature that does, from the job's URL */
		agent_log(a, "%s; fetching the package head again", err ? err->msg : "saved signature refused");
		char url[AGENT_URL_MAX + 1];
		snprintf(url, sizeof(url), "%s", a->j.url);
		x = adopt_head(a, url, err);
	}
	if (x != 0)
		return x;
	if (a->j.phase == AGENT_PH_DOWNLOADED) {
		if (a->cfg->mode == FOTA_MODE_AB) {
			char act;
			if ((x = active_slot(a, &act, err)) != 0)
				return x;
			a->j.target_slot = act == 'a' ? 'b' : 'a';
		}
		if ((x = agent_policy_install_consent(a, err)) != 0)
			return x;
		if ((x = set_state(a, FUMO_UPD_PROGRESSING, err)) != 0)
			return x;
		a->j.phase = AGENT_PH_APPLYING;
		a->j.ap_next = 0;
		a->j.ip_step = 0;
		snprintf(a->j.message, sizeof(a->j.message), "updating");
		if ((x = commit_or_fail(a, err)) != 0)
			return x;
		a->apply_fresh = true;
	}
	if (a->j.phase == AGENT_PH_APPLYING) {
		if ((x = agent_apply(a, err)) != 0)
			return x;
		a->j.phase = AGENT_PH_APPLIED;
		snprintf(a->j.message, sizeof(a->j.message), "target written and verified");
		if ((x = commit_or_fail(a, err)) != 0)
			return x;
	}
	if ((x = run_hook(a, err)) != 0) {
		snprintf(a->j.message, sizeof(a->j.message), "%s", err ? err->msg : "switch failed");
		if (agent_commit(a, NULL) != FOTA_OK)
			agent_log(a, "could not record the failure in the journal");
		return x;
	}
	if (raise_floor(a, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	snprintf(a->j.message, sizeof(a->j.message), "package %s %s installed%s%s", a->m->name, a->m->version,
		 a->cfg->mode == FOTA_MODE_AB ? " in slot " : "", a->cfg->mode == FOTA_MODE_AB ?
		 (a->j.target_slot == 'a' ? "a" : "b") : "");
	agent_log(a, "%s", a->j.message);
	a->j.reboot_pending = false;
	a->j.reboot_defers = 0;
	a->j.reboot_deferred_min = 0;
	if ((x = end_job(a, AGENT_PH_DONE, AGENT_EXIT_OK, err, a->cfg->keep_package)) != 0)
		return x;
	return agent_policy_reboot(a, err);
}

/*
 * A failure of an in-place update that has started writing (inplace_committed): the job
 * is not ended. It keeps its phase, position and package; a failure that would end
 * another job (final_failure, no space) is reported with its Generic Alert and the job
 * waits in 70 Update Failed Have Data until resume, update or its package continues it
 * (drive moves it back to 60). Other failures (I/O, a cut) only record the message, as
 * for any job.
 */
static int hold_job(struct agent *a, int x, struct fota_error *err)
{
	size_t n = a->m ? fota_manifest_chunk_count(a->m) : 0;
	if (final_failure(x) || a->cause == FUMO_CAUSE_NO_SPACE) {
		fota_error_prefix(err, "in-place update stopped at chunk %llu of %zu (the partition holds the target "
				  "before it, the source after); resume continues it: ",
				  (unsigned long long)a->j.ap_next, n);
		int r = fumo_result_for(x, a->cause, true, &a->last_fetch);
		struct fota_error e2;
		if (a->j.state == FUMO_UPD_PROGRESSING && set_state(a, FUMO_UPD_FAILED_DATA, &e2) != 0)
			agent_log(a, "%s", e2.msg);
		raise_alert(a, r);
		a->j.result = x;
	}
	snprintf(a->j.message, sizeof(a->j.message), "%s", err ? err->msg : "in-place update stopped");
	struct fota_error e3;
	if (agent_commit(a, &e3) != FOTA_OK)
		agent_log(a, "could not record the failure in the journal: %s", e3.msg);
	return x;
}

/* Run the job from where the journal stands; end it when a failure is final. */
static int drive(struct agent *a, struct fota_error *err)
{
	int x = AGENT_EXIT_OK;
	if (inplace_committed(a) && a->j.state == FUMO_UPD_FAILED_DATA) {
		/* a held in-place update continues (hold_job) */
		if ((x = set_state(a, FUMO_UPD_PROGRESSING, err)) != 0)
			return x;
		a->j.result = 0;
		a->j.fumo_result = 0;
		snprintf(a->j.message, sizeof(a->j.message), "continuing the in-place update at chunk %llu",
			 (unsigned long long)a->j.ap_next);
		agent_log(a, "%s", a->j.message);
		if ((x = commit_or_fail(a, err)) != 0)
			return x;
	}
	for (int restarts = 0;; restarts++) {
		if (a->j.phase == AGENT_PH_DOWNLOADING)
			x = run_download(a, err);
		if (x == 0 && a->j.phase != AGENT_PH_DOWNLOADING &&
		    (a->j.op == AGENT_OP_DOWNLOAD_AND_UPDATE || a->j.op == AGENT_OP_UPDATE) &&
		    (a->j.phase == AGENT_PH_DOWNLOADED || a->j.phase == AGENT_PH_APPLYING ||
		     a->j.phase == AGENT_PH_APPLIED))
			x = run_update(a, err);
		/* The package changed on the server while streaming it into the update. A/B
		 * starts over on the new package (the inactive slot is free to rewrite); in place
		 * cannot: the partition already holds part of the old package's target, so only
		 * the same signed manifest is taken, and the update continues (adopt_head). */
		if (x != RES_CHANGED || a->j.phase != AGENT_PH_APPLYING)
			break;
		if (restarts >= RESTARTS_PER_RUN) {
			fota_error_set(err, FOTA_E_FORMAT, "download: the package keeps changing on the server");
			x = agent_fail(a, AGENT_EXIT_DOWNLOAD);
			break;
		}
		if (a->cfg->mode == FOTA_MODE_INPLACE) {
			char url[AGENT_URL_MAX + 1];
			snprintf(url, sizeof(url), "%s", a->j.url);
			x = adopt_head(a, url, err);
			if (x == 0 || x == RES_CHANGED)
				continue;
			break;
		}
		agent_log(a, "the package changed on the server: starting over");
		char url[AGENT_URL_MAX + 1];
		snprintf(url, sizeof(url), "%s", a->j.url);
		if ((x = new_job(a, url, a->j.op, a->j.restarts + 1, NULL, err)) != 0)
			return x;
	}
	if (x == AGENT_EXIT_DEFERRED)
		return x; /* journaled by the policy: resume asks again when it is due */
	if (x == AGENT_EXIT_IO && no_space(a, err))
		a->cause = FUMO_CAUSE_NO_SPACE;
	if (x != 0 && x != RES_CHANGED && inplace_committed(a))
		return hold_job(a, x, err);
	if (x != 0 && x != RES_CHANGED) {
		bool before_write = a->j.phase == AGENT_PH_DOWNLOADING || a->j.phase == AGENT_PH_DOWNLOADED ||
				    (a->j.phase == AGENT_PH_APPLYING && (a->cfg->mode == FOTA_MODE_AB || !a->j.source_ok));
		if ((final_failure(x) || a->cause == FUMO_CAUSE_NO_SPACE) && before_write) {
			/* a download that ran out of its window keeps its cache: the same URL continues */
			return end_job(a, AGENT_PH_FAILED, x, err, x == AGENT_EXIT_DOWNLOAD);
		}
		if (err) {
			snprintf(a->j.message, sizeof(a->j.message), "%s", err->msg);
			struct fota_error e2;
			if (agent_commit(a, &e2) != FOTA_OK)
				agent_log(a, "could not record the failure in the journal: %s", e2.msg);
		}
	}
	return x == RES_CHANGED ? agent_fail(a, AGENT_EXIT_DOWNLOAD) : x;
}

static bool job_active(const struct agent_journal *j)
{
	return j->phase == AGENT_PH_DOWNLOADING || j->phase == AGENT_PH_DOWNLOADED || j->phase == AGENT_PH_APPLYING ||
	       j->phase == AGENT_PH_APPLIED;
}

static void take_args(struct agent_journal *j, const struct agent_op_args *args)
{
	if (!args)
		return;
	if (args->correlator)
		snprintf(j->correlator, sizeof(j->correlator), "%s", args->correlator);
	if (args->pkg_name)
		snprintf(j->srv_pkg_name, sizeof(j->srv_pkg_name), "%s", args->pkg_name);
	if (args->pkg_version)
		snprintf(j->srv_pkg_version, sizeof(j->srv_pkg_version), "%s", args->pkg_version);
}

int agent_download(struct agent *a, const char *url, bool and_update, struct fota_error *err)
{
	return agent_download_op(a, url, and_update, NULL, err);
}

int agent_download_op(struct agent *a, const char *url, bool and_update, const struct agent_op_args *args,
		      struct fota_error *err)
{
	static const struct agent_op_args none = { NULL, NULL, NULL };
	fota_error_clear(err);
	enum agent_op op = and_update ? AGENT_OP_DOWNLOAD_AND_UPDATE : AGENT_OP_DOWNLOAD;
	int x;
	if (inplace_committed(a) && strcmp(a->j.url, url) != 0) {
		/* the half-applied in-place update, offered under another URL: only its own
		 * signed manifest is taken (adopt_head changes nothing when it refuses) */
		if ((x = adopt_head(a, url, err)) != 0)
			return x == RES_CHANGED ? agent_fail(a, AGENT_EXIT_DOWNLOAD) : x;
	}
	if (job_active(&a->j) && strcmp(a->j.url, url) != 0) {
		fota_error_set(err, FOTA_E_ARG, "a job for %s is %s; run resume, or cancel it first", a->j.url,
			       agent_phase_name(a->j.phase));
		return agent_fail(a, AGENT_EXIT_STATE);
	}
	struct agent_fetch *probe = NULL;
	if (agent_fetch_open(url, a->cfg, &probe, err) != FOTA_OK) {
		/* a malformed URL ends the operation at once, with its alert (411) */
		struct fota_error e = *err;
		if ((x = new_job(a, "", op, 0, args ? args : &none, err)) != 0)
			return x;
		*err = e;
		a->cause = FUMO_CAUSE_BAD_URL;
		return end_job(a, AGENT_PH_FAILED, agent_fail(a, AGENT_EXIT_DOWNLOAD), err, false);
	}
	agent_fetch_close(probe);
	if (job_active(&a->j)) {
		take_args(&a->j, args);
		if (and_update && a->j.op == AGENT_OP_DOWNLOAD) {
			a->j.op = op;
			if (a->j.state == FUMO_DL_COMPLETE && (x = set_state(a, FUMO_READY, err)) != 0)
				return x;
		}
		if ((x = commit_or_fail(a, err)) != 0)
			return x;
	} else if (a->j.phase == AGENT_PH_FAILED && a->j.result == AGENT_EXIT_DOWNLOAD && a->j.head_ok &&
		   strcmp(a->j.url, url) == 0) {
		/* the same package again after the retry window ran out: keep what we have */
		a->j.op = op;
		a->j.phase = AGENT_PH_DOWNLOADING;
		a->j.result = 0;
		a->j.fumo_result = 0;
		if ((x = set_state(a, FUMO_IDLE, err)) != 0 || (x = set_state(a, FUMO_DL_PROGRESSING, err)) != 0)
			return x;
		take_args(&a->j, args);
		if ((x = commit_or_fail(a, err)) != 0)
			return x;
	} else if ((x = new_job(a, url, op, 0, args ? args : &none, err)) != 0) {
		return x;
	}
	return drive(a, err);
}

int agent_update(struct agent *a, struct fota_error *err)
{
	return agent_update_op(a, NULL, err);
}

int agent_update_op(struct agent *a, const struct agent_op_args *args, struct fota_error *err)
{
	fota_error_clear(err);
	int x;
	/* Update again after 70 or 90: the package is still there */
	bool again = (a->j.state == FUMO_UPD_FAILED_DATA || a->j.state == FUMO_UPD_OK_DATA) && a->j.head_ok &&
		     !job_active(&a->j); /* a held in-place update (70, still applying) continues instead */
	if (a->j.phase != AGENT_PH_DOWNLOADED && a->j.phase != AGENT_PH_APPLYING && a->j.phase != AGENT_PH_APPLIED &&
	    !again) {
		fota_error_set(err, FOTA_E_ARG, "nothing to update: %s", a->j.phase == AGENT_PH_DOWNLOADING ?
			       "the download is not complete (run resume)" : "no package is downloaded");
		return agent_fail(a, AGENT_EXIT_STATE);
	}
	if (again) {
		a->j.phase = AGENT_PH_DOWNLOADED;
		a->j.result = 0;
		a->j.fumo_result = 0;
		a->j.ap_next = 0;
		a->j.ip_step = 0;
		a->j.source_ok = false;
		a->j.target_slot = 0;
		a->j.defer_until_ms = 0;
		a->j.defers = 0;
		a->j.op = AGENT_OP_UPDATE;
		if (args)
			a->j.correlator[0] = 0;
	}
	if (a->j.op == AGENT_OP_DOWNLOAD)
		a->j.op = AGENT_OP_UPDATE;
	if (a->j.phase == AGENT_PH_DOWNLOADED && a->j.state != FUMO_READY && (x = set_state(a, FUMO_READY, err)) != 0)
		return x;
	take_args(&a->j, args);
	if ((x = commit_or_fail(a, err)) != 0)
		return x;
	return drive(a, err);
}

int agent_resume(struct agent *a, struct fota_error *err)
{
	fota_error_clear(err);
	if (!job_active(&a->j)) {
		if (a->j.reboot_pending)
			return agent_policy_reboot(a, err);
		agent_log(a, "nothing pending");
		return AGENT_EXIT_OK;
	}
	if (a->j.phase == AGENT_PH_DOWNLOADED && a->j.op == AGENT_OP_DOWNLOAD) {
		agent_log(a, "package downloaded; waiting for the update command");
		return AGENT_EXIT_OK;
	}
	return drive(a, err);
}

int agent_cancel(struct agent *a, struct fota_error *err)
{
	fota_error_clear(err);
	if (!job_active(&a->j) && a->j.phase != AGENT_PH_FAILED) {
		agent_log(a, "nothing to cancel");
		return AGENT_EXIT_OK;
	}
	if (inplace_committed(a)) {
		fota_error_set(err, FOTA_E_ARG, "cannot cancel: the in-place update has started writing the partition; "
			       "run resume to complete it");
		return agent_fail(a, AGENT_EXIT_STATE);
	}
	if (a->j.head_ok)
		(void)load_package(a, NULL);
	if (job_active(&a->j)) {
		/* a user cancel (401): a download ends in 20, a downloaded package in 80 */
		int x = set_state(a, a->j.state == FUMO_DL_PROGRESSING ? FUMO_DL_FAILED : FUMO_UPD_FAILED_NODATA, err);
		if (x != 0)
			return x;
		raise_alert(a, FUMO_R_USER_CANCELLED);
	}
	snprintf(a->j.message, sizeof(a->j.message), "cancelled");
	int x = end_job(a, AGENT_PH_IDLE, AGENT_EXIT_OK, NULL, false);
	if (x == 0) {
		a->j.result = 0;
		agent_log(a, "cancelled");
	}
	return x;
}

static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

int agent_status(struct agent *a, bool json, FILE *out, struct fota_error *err)
{
	fota_error_clear(err);
	const struct agent_journal *j = &a->j;
	struct fota_error e2;
	if (j->head_ok && (j->phase != AGENT_PH_DONE && j->phase != AGENT_PH_IDLE))
		(void)load_package(a, &e2);
	size_t n = a->m ? fota_manifest_chunk_count(a->m) : 0;
	const char *pname = j->srv_pkg_name[0] ? j->srv_pkg_name : a->m ? a->m->name : j->pkg_name;
	const char *pver = j->srv_pkg_version[0] ? j->srv_pkg_version : a->m ? a->m->version : j->pkg_version;
	unsigned progress = 0;
	if (j->state == FUMO_DL_PROGRESSING && n)
		progress = (unsigned)((j->stream ? j->ap_next : j->dl_next) * 100 / n);
	else if ((j->state == FUMO_UPD_PROGRESSING || (j->state == FUMO_UPD_FAILED_DATA && job_active(j))) && n)
		progress = (unsigned)(j->ap_next * 100 / n);
	else if (j->state == FUMO_DL_COMPLETE || j->state == FUMO_READY || j->state == FUMO_UPD_OK_DATA ||
		 j->state == FUMO_UPD_OK_NODATA)
		progress = 100;
	if (json) {
		fprintf(out, "{\"state\":%d,\"state_name\":\"%s\",\"progress\":%u,\"pkg_name\":", j->state,
			fumo_state_name(j->state), progress);
		json_str(out, pname);
		fprintf(out, ",\"pkg_version\":");
		json_str(out, pver);
		fprintf(out, ",\"correlator\":");
		json_str(out, j->correlator);
		fprintf(out, ",\"fumo_result\":%d,\"alert_pending\":%s,\"defer_until_ms\":%" PRId64
			",\"reboot_pending\":%s,\"reboot_due_ms\":%" PRId64 ",\"reboot_defers\":%" PRIu64,
			j->fumo_result, j->alert_pending ? "true" : "false", j->defer_until_ms,
			j->reboot_pending ? "true" : "false", j->reboot_due_ms, j->reboot_defers);
		fprintf(out, ",\"phase\":\"%s\",\"op\":\"%s\",\"url\":", agent_phase_name(j->phase), agent_op_name(j->op));
		json_str(out, j->url);
		fprintf(out, ",\"package\":");
		if (a->m || j->pkg_name[0]) {
			fprintf(out, "{\"name\":");
			json_str(out, a->m ? a->m->name : j->pkg_name);
			fprintf(out, ",\"version\":");
			json_str(out, a->m ? a->m->version : j->pkg_version);
			fprintf(out, "}");
		} else {
			fprintf(out, "null");
		}
		fprintf(out, ",\"download_mode\":\"%s\",\"chunks\":%zu,\"chunks_downloaded\":%" PRIu64
			",\"chunks_applied\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",\"target_slot\":",
			j->stream ? "stream" : "store", n, j->dl_next, j->ap_next, j->bytes);
		if (j->target_slot)
			fprintf(out, "\"%c\"", j->target_slot);
		else
			fprintf(out, "null");
		fprintf(out, ",\"restarts\":%" PRIu64 ",\"security_floor\":%" PRIu64 ",\"result\":%d,\"result_name\":\"%s\",\"message\":",
			j->restarts, a->floor, j->result, agent_exit_name(j->result));
		json_str(out, j->message);
		fprintf(out, "}\n");
	} else {
		fprintf(out, "state:          %d %s (%u%%)\n", j->state, fumo_state_name(j->state), progress);
		fprintf(out, "phase:          %s\n", agent_phase_name(j->phase));
		if (j->correlator[0])
			fprintf(out, "correlator:     %s\n", j->correlator);
		if (j->srv_pkg_name[0] || j->srv_pkg_version[0])
			fprintf(out, "server package: %s %s\n", j->srv_pkg_name, j->srv_pkg_version);
		if (j->fumo_result)
			fprintf(out, "FUMO result:    %d (%s)\n", j->fumo_result, fumo_result_info(j->fumo_result)->name);
		if (j->alert_pending)
			fprintf(out, "alert:          pending, result %d (fota-agent report)\n", j->alert_result);
		char t[21];
		if (j->defer_until_ms) {
			fota_time_format(j->defer_until_ms / 1000, t);
			fprintf(out, "deferred until: %s (%" PRIu64 " deferrals)\n", t, j->defers);
		}
		if (j->reboot_pending) {
			fota_time_format(j->reboot_due_ms / 1000, t);
			fprintf(out, "reboot:         delayed until %s (%" PRIu64 " deferrals, %" PRIu64 " minutes)\n", t,
				j->reboot_defers, j->reboot_deferred_min);
		}
		if (j->op != AGENT_OP_NONE)
			fprintf(out, "operation:      %s\nurl:            %s\n", agent_op_name(j->op), j->url);
		if (a->m)
			fprintf(out, "package:        %s %s (%s, %zu chunks)\n", a->m->name, a->m->version,
				fota_mode_name(a->m->mode), n);
		else if (j->pkg_name[0])
			fprintf(out, "package:        %s %s\n", j->pkg_name, j->pkg_version);
		if (j->op != AGENT_OP_NONE)
			fprintf(out, "downloaded:     %" PRIu64 " chunks (%s mode), %" PRIu64 " bytes received\n"
				"applied:        %" PRIu64 " chunks\n", j->dl_next, j->stream ? "stream" : "store",
				j->bytes, j->ap_next);
		if (j->target_slot)
			fprintf(out, "target slot:    %c\n", j->target_slot);
		fprintf(out, "security floor: %" PRIu64 "\n", a->floor);
		if (j->phase == AGENT_PH_FAILED || j->result)
			fprintf(out, "result:         %d (%s)\n", j->result, agent_exit_name(j->result));
		if (j->message[0])
			fprintf(out, "message:        %s\n", j->message);
	}
	return AGENT_EXIT_OK;
}

static void xml_str(FILE *out, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '&': fputs("&amp;", out); break;
		case '"': fputs("&quot;", out); break;
		case '\'': fputs("&apos;", out); break;
		default:
			if ((unsigned char)*s >= 0x20)
				fputc(*s, out);
		}
	}
}

int agent_report(struct agent *a, bool syncml, FILE *out, struct fota_error *err)
{
	fota_error_clear(err);
	const struct agent_journal *j = &a->j;
	if (!j->alert_pending) {
		fota_error_set(err, FOTA_E_ARG, "no alert to report");
		return agent_fail(a, AGENT_EXIT_STATE);
	}
	const char *type = fumo_alert_type(j->alert_op);
	char source[1024];
	snprintf(source, sizeof(source), "%s/%s", a->cfg->fumo_node, fumo_op_node(j->alert_op));
	if (!syncml) {
		fprintf(out, "{\"result\":%d,\"alert_type\":\"%s\",\"correlator\":", j->alert_result, type);
		json_str(out, j->alert_correlator);
		fprintf(out, ",\"source\":");
		json_str(out, source);
		fprintf(out, ",\"result_name\":\"%s\",\"state\":%d}\n", fumo_result_info(j->alert_result)->name, j->state);
		return AGENT_EXIT_OK;
	}
	/* OMA DM 1.2 Generic Alert (1226), as the DM client puts it in its next package */
	fprintf(out, "<Alert>\n  <CmdID>1</CmdID>\n  <Data>1226</Data>\n");
	if (j->alert_correlator[0]) {
		fprintf(out, "  <Correlator>");
		xml_str(out, j->alert_correlator);
		fprintf(out, "</Correlator>\n");
	}
	fprintf(out, "  <Item>\n    <Source><LocURI>");
	xml_str(out, source);
	fprintf(out, "</LocURI></Source>\n    <Meta>\n"
		"      <Type xmlns=\"syncml:metinf\">%s</Type>\n"
		"      <Format xmlns=\"syncml:metinf\">int</Format>\n"
		"      <Mark xmlns=\"syncml:metinf\">%s</Mark>\n"
		"    </Meta>\n    <Data>%d</Data>\n  </Item>\n</Alert>\n",
		type, j->alert_result == FUMO_R_OK ? "informational" : "critical", j->alert_result);
	return AGENT_EXIT_OK;
}

int agent_report_ack(struct agent *a, struct fota_error *err)
{
	fota_error_clear(err);
	if (!a->j.alert_pending) {
		agent_log(a, "no alert to acknowledge");
		return AGENT_EXIT_OK;
	}
	a->j.alert_pending = false;
	/* the states that end a job without data go back to Idle/Start once reported */
	int st = a->j.state;
	if (!job_active(&a->j) && (st == FUMO_DL_FAILED || st == FUMO_UPD_FAILED_NODATA || st == FUMO_UPD_OK_NODATA)) {
		int x = set_state(a, FUMO_IDLE, err);
		if (x != 0)
			return x;
	}
	return commit_or_fail(a, err);
}
