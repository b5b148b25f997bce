/*
 * apply.c: writing targets (see agent.h). A/B writes the inactive slot chunk by chunk
 * and never opens the active slot for writing. In place follows FORMAT.md section 6.2:
 * stash, produce (written-ahead chunks through the staging region of the scratch
 * area), check, journal. Payloads are verified before use (agent_payload); each chunk
 * is produced through a streaming zstd decoder or the delta engine, with memory
 * bounded by the I/O buffers, the zstd window and the delta engine's limit.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fota/delta.h"
#include "fota/inplace.h"
#include "agent_internal.h"

struct writer {
	struct fota_storage *dst;
	uint64_t off, written, limit;
	struct fota_sha256 *h;
};

static fota_status writer_put(struct writer *w, const void *buf, size_t len, struct fota_error *err)
{
	if (len > w->limit - w->written)
		return fota_error_set(err, FOTA_E_INTEGRITY, "chunk output longer than its target_size %llu",
				      (unsigned long long)w->limit);
	fota_status rc = fota_storage_write(w->dst, w->off + w->written, buf, len, err);
	if (rc != FOTA_OK)
		return rc;
	if (w->h)
		fota_sha256_update(w->h, buf, len);
	w->written += len;
	return FOTA_OK;
}

/* The old input of a delta chunk: its source_reads, concatenated. */
struct oldmap {
	const struct fota_chunk *ch;
	struct fota_storage *part, *scratch;
	uint64_t *cum; /* cum[i] = old offset where range i starts; cum[n] = total */
};

static fota_status read_old(struct oldmap *o, uint64_t off, uint8_t *buf, size_t len, struct fota_error *err)
{
	size_t n = o->ch->n_source_reads;
	if (off > o->cum[n] || len > o->cum[n] - off)
		return fota_error_set(err, FOTA_E_PATCH, "patch reads old bytes %llu+%zu outside %llu",
				      (unsigned long long)off, len, (unsigned long long)o->cum[n]);
	while (len > 0) {
		size_t lo = 0, hi = n; /* find the range holding off: cum[lo] <= off < cum[lo+1] */
		while (hi - lo > 1) {
			size_t mid = (lo + hi) / 2;
			if (o->cum[mid] <= off)
				lo = mid;
			else
				hi = mid;
		}
		const struct fota_range *r = &o->ch->source_reads[lo];
		uint64_t in = off - o->cum[lo];
		uint64_t take = r->length - in < len ? r->length - in : len;
		struct fota_storage *s = r->scratch ? o->scratch : o->part;
		if (!s)
			return fota_error_set(err, FOTA_E_MANIFEST, "scratch read without a scratch area");
		fota_status rc = fota_storage_read(s, r->offset + in, buf, (size_t)take, err);
		if (rc != FOTA_OK)
			return rc;
		buf += take;
		off += take;
		len -= (size_t)take;
	}
	return FOTA_OK;
}

struct delta_ctx {
	struct fota_storage *payload;
	uint64_t payload_off;
	struct oldmap *old;
	struct writer *w;
};

static fota_status d_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *d = ctx;
	return fota_storage_read(d->payload, d->payload_off + off, buf, len, err);
}

static fota_status d_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *d = ctx;
	return read_old(d->old, off, buf, len, err);
}

static fota_status d_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *d = ctx;
	return writer_put(d->w, buf, len, err);
}

struct applier {
	struct agent *a;
	ZSTD_DCtx *dctx;
	struct fota_storage *src;      /* ab: the active slot (read only); inplace: the partition */
	struct fota_storage *dst;      /* ab: the inactive slot; inplace: the partition */
	struct fota_storage *scratch;  /* inplace, when the package needs one */
	uint64_t stash_end;
};

/* Produce chunk ch from its verified payload into dst at off; checks size and digest. */
static int produce(struct applier *ap, const struct fota_chunk *ch, size_t k, struct fota_storage *payload,
		   uint64_t poff, struct fota_storage *dst, uint64_t off, bool sync, bool check, struct fota_error *err)
{
	struct agent *a = ap->a;
	struct writer w = { dst, off, 0, ch->target_size, check ? fota_sha256_new() : NULL };
	if (check && !w.h) {
		fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		return agent_fail(a, AGENT_EXIT_INTERNAL);
	}
	fota_status rc = FOTA_OK;
	uint64_t *cum = NULL;
	if (ch->method == FOTA_METHOD_FULL) {
		ZSTD_DCtx_reset(ap->dctx, ZSTD_reset_session_only);
		uint64_t left = ch->payload_size;
		size_t zr = 1;
		while (left > 0 && rc == FOTA_OK) {
			size_t n = left < AGENT_IO_BUF ? (size_t)left : AGENT_IO_BUF;
			if ((rc = fota_storage_read(payload, poff, a->buf, n, err)) != FOTA_OK)
				break;
			poff += n;
			left -= n;
			ZSTD_inBuffer in = { a->buf, n, 0 };
			while (in.pos < in.size && rc == FOTA_OK) {
				if (zr == 0) {
					rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: data after the zstd frame", k);
					break;
				}
				ZSTD_outBuffer out = { a->buf2, AGENT_IO_BUF, 0 };
				zr = ZSTD_decompressStream(ap->dctx, &out, &in);
				if (ZSTD_isError(zr)) {
					rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: zstd: %s", k, ZSTD_getErrorName(zr));
					break;
				}
				if (out.pos)
					rc = writer_put(&w, a->buf2, out.pos, err);
			}
		}
		/* flush what the decoder still holds */
		while (rc == FOTA_OK && zr != 0) {
			ZSTD_inBuffer in = { NULL, 0, 0 };
			ZSTD_outBuffer out = { a->buf2, AGENT_IO_BUF, 0 };
			zr = ZSTD_decompressStream(ap->dctx, &out, &in);
			if (ZSTD_isError(zr)) {
				rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: zstd: %s", k, ZSTD_getErrorName(zr));
				break;
			}
			if (out.pos)
				rc = writer_put(&w, a->buf2, out.pos, err);
			else if (zr != 0)
				rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: truncated zstd frame", k);
		}
	} else {
		cum = malloc((ch->n_source_reads + 1) * sizeof(uint64_t));
		if (!cum) {
			rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		} else {
			cum[0] = 0;
			for (size_t i = 0; i < ch->n_source_reads; i++)
				cum[i + 1] = cum[i] + ch->source_reads[i].length; /* each < 2^40, at most 4096 */
			struct oldmap om = { ch, ap->src, ap->scratch, cum };
			struct delta_ctx dc = { payload, poff, &om, &w };
			struct fota_delta_io io = { &dc, ch->payload_size, d_read_patch, d_read_source, d_write };
			uint64_t got = 0;
			rc = fota_delta_apply(&io, cum[ch->n_source_reads], FOTA_DELTA_MEM_DEFAULT, &got, err);
		}
	}
	free(cum);
	int x = AGENT_EXIT_OK;
	if (rc == FOTA_OK && w.written != ch->target_size)
		rc = fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: produced %llu bytes, target_size %llu", k,
				    (unsigned long long)w.written, (unsigned long long)ch->target_size);
	uint8_t d[FOTA_SHA256_LEN];
	if (w.h) {
		fota_sha256_final(w.h, d);
		fota_sha256_free(w.h);
	}
	if (rc == FOTA_OK && sync && fota_storage_sync(dst, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	/* unchecked here: the read-back thread checks it before it is journaled */
	if (rc == FOTA_OK && check && memcmp(d, ch->target_sha256, sizeof(d)) != 0)
		rc = fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: target sha256 does not match the manifest", k);
	if (rc != FOTA_OK)
		x = agent_fail(a, rc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(rc));
	return x;
}

static int check_range(struct applier *ap, struct fota_storage *s, uint64_t off, uint64_t len,
		       const uint8_t want[FOTA_SHA256_LEN], const char *what, size_t k, struct fota_error *err)
{
	uint8_t d[FOTA_SHA256_LEN];
	if (agent_hash_range(ap->a, s, off, len, d, err) != FOTA_OK)
		return agent_fail(ap->a, AGENT_EXIT_IO);
	if (memcmp(d, want, sizeof(d)) != 0) {
		fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: %s sha256 does not match the manifest", k, what);
		return agent_fail(ap->a, AGENT_EXIT_CORRUPT);
	}
	return AGENT_EXIT_OK;
}

static int copy_range(struct applier *ap, struct fota_storage *from, uint64_t foff, struct fota_storage *to,
		      uint64_t toff, uint64_t len, struct fota_error *err)
{
	struct agent *a = ap->a;
	while (len > 0) {
		size_t n = len < AGENT_IO_BUF ? (size_t)len : AGENT_IO_BUF;
		if (fota_storage_read(from, foff, a->buf, n, err) != FOTA_OK ||
		    fota_storage_write(to, toff, a->buf, n, err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_IO);
		foff += n;
		toff += n;
		len -= n;
	}
	return AGENT_EXIT_OK;
}

static int commit_step(struct agent *a, struct fota_error *err)
{
	return agent_commit(a, err) == FOTA_OK ? AGENT_EXIT_OK : agent_fail(a, AGENT_EXIT_IO);
}

/* One in-place chunk, from whatever step the journal says it reached. */
static int inplace_chunk(struct applier *ap, const struct fota_chunk *ch, size_t k, struct fota_error *err)
{
	struct agent *a = ap->a;
	int x;
	if (a->j.ip_step == 0 && ch->n_stash > 0) {
		for (size_t i = 0; i < ch->n_stash; i++) {
			const struct fota_stash *s = &ch->stash[i];
			if ((x = copy_range(ap, ap->dst, s->source_offset, ap->scratch, s->scratch_offset, s->length, err)) != 0)
				return x;
		}
		if (fota_storage_sync(ap->scratch, err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_IO);
		a->j.ip_step = 1;
		if ((x = commit_step(a, err)) != 0)
			return x;
	}
	bool ahead = fota_inplace_self_overlap(ch);
	if (a->j.ip_step < 2) {
		struct fota_storage *pst;
		bool owned;
		uint64_t poff;
		if ((x = agent_payload(a, k, &pst, &owned, &poff, err)) != 0)
			return x;
		if (ahead)
			x = produce(ap, ch, k, pst, poff, ap->scratch, ap->stash_end, true, true, err);
		else
			x = produce(ap, ch, k, pst, poff, ap->dst, ch->target_offset, true, true, err);
		if (owned)
			fota_storage_close(pst);
		if (x != 0)
			return x;
		if (ahead) {
			/* read the staged bytes back before trusting them */
			if ((x = check_range(ap, ap->scratch, ap->stash_end, ch->target_size, ch->target_sha256, "staged",
					     k, err)) != 0)
				return x;
			a->j.ip_step = 2;
			if ((x = commit_step(a, err)) != 0)
				return x;
		}
	}
	if (ahead) {
		if ((x = copy_range(ap, ap->scratch, ap->stash_end, ap->dst, ch->target_offset, ch->target_size, err)) != 0)
			return x;
		if (fota_storage_sync(ap->dst, err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_IO);
	}
	return check_range(ap, ap->dst, ch->target_offset, ch->target_size, ch->target_sha256, "target", k, err);
}

static int ab_chunk(struct applier *ap, const struct fota_chunk *ch, size_t k, bool check, struct fota_error *err)
{
	struct fota_storage *pst;
	bool owned;
	uint64_t poff;
	int x = agent_payload(ap->a, k, &pst, &owned, &poff, err);
	if (x != 0)
		return x;
	/* A/B syncs the slot at the journal's checkpoint (agent_apply) */
	x = produce(ap, ch, k, pst, poff, ap->dst, ch->target_offset, false, check, err);
	if (owned)
		fota_storage_close(pst);
	return x;
}

/*
 * Read-back verification on two more threads (A/B on files and block devices). While
 * the chunks arrive in target order, the check thread reads each written chunk back
 * from the slot and checks its SHA-256 against the manifest; it hands every buffer it
 * read to the image thread, which feeds the whole-image digest with it. So the slot is
 * read back once, and the two SHA-256 passes over the image (chunk and whole image,
 * both required) run side by side and next to the writing. The main thread waits for
 * the check thread before journaling a chunk as done, and for both only at the end.
 * When chunks come out of order the main thread checks them itself and the check
 * thread reads the rest of the image at the end.
 */
#define RB_BUF (64u << 10) /* each of the two read-back buffers (peak RSS stays under 16 MiB) */

struct readback {
	pthread_t thread, ithread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct fota_storage *dst;
	const struct fota_chunk *chunks; /* application order */
	size_t ready;                    /* chunks [0, ready) are written and tile a prefix */
	size_t verified;                 /* chunks [0, verified) read back and checked */
	uint64_t hashed, size;           /* [0, hashed) of the image is in the image digest */
	bool stop, finish, failed, read_done;
	struct fota_sha256 *h, *hc;
	uint8_t *buf[2];                 /* read by the check thread, then hashed by the image thread */
	size_t len[2];                   /* bytes of buf[i] the image thread has yet to hash (0: free) */
	struct fota_error err;
};

static bool rb_abort(const struct readback *r) { return r->failed || (r->stop && !r->finish); }

/* Check thread: read [from, to) into the buffers (chunk digest hc when set), handing
 * each to the image thread. *slot is the next buffer. */
static bool rb_read(struct readback *r, uint64_t from, uint64_t to, struct fota_sha256 *hc, unsigned *slot)
{
	while (from < to) {
		size_t n = to - from < RB_BUF ? (size_t)(to - from) : RB_BUF;
		unsigned i = *slot;
		pthread_mutex_lock(&r->mu);
		while (r->len[i] != 0 && !rb_abort(r))
			pthread_cond_wait(&r->cv, &r->mu);
		bool abort = rb_abort(r);
		pthread_mutex_unlock(&r->mu);
		if (abort || fota_storage_read(r->dst, from, r->buf[i], n, &r->err) != FOTA_OK)
			return false;
		if (hc)
			fota_sha256_update(hc, r->buf[i], n);
		pthread_mutex_lock(&r->mu);
		r->len[i] = n;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		*slot = i ^ 1u;
		from += n;
	}
	return true;
}

static void *readback_main(void *arg)
{
	struct readback *r = arg;
	unsigned slot = 0;
	uint64_t end = 0; /* [0, end) read so far */
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (r->verified < r->ready && !r->failed) {
			size_t k = r->verified;
			const struct fota_chunk *ch = &r->chunks[k];
			pthread_mutex_unlock(&r->mu);
			uint8_t d[FOTA_SHA256_LEN];
			bool ok = rb_read(r, ch->target_offset, ch->target_offset + ch->target_size, r->hc, &slot);
			fota_sha256_final(r->hc, d);
			if (ok && memcmp(d, ch->target_sha256, sizeof(d)) != 0) {
				fota_error_set(&r->err, FOTA_E_INTEGRITY, "chunk %zu: target sha256 (read back) does not match the manifest", k);
				ok = false;
			}
			pthread_mutex_lock(&r->mu);
			if (!ok) {
				r->failed = true;
			} else {
				r->verified = k + 1;
				end = ch->target_offset + ch->target_size;
			}
			pthread_cond_broadcast(&r->cv);
		}
		if (r->stop || r->failed)
			break;
		pthread_cond_wait(&r->cv, &r->mu);
	}
	bool finish = r->finish && !r->failed;
	pthread_mutex_unlock(&r->mu);
	bool ok = !finish || rb_read(r, end, r->size, NULL, &slot);
	pthread_mutex_lock(&r->mu);
	if (!ok)
		r->failed = true;
	r->read_done = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Image thread: hash the buffers in the order the check thread read them. */
static void *image_main(void *arg)
{
	struct readback *r = arg;
	unsigned j = 0;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		if (r->len[j] != 0 && !rb_abort(r)) {
			size_t n = r->len[j];
			pthread_mutex_unlock(&r->mu);
			fota_sha256_update(r->h, r->buf[j], n);
			pthread_mutex_lock(&r->mu);
			r->hashed += n;
			r->len[j] = 0;
			j ^= 1u;
			pthread_cond_broadcast(&r->cv);
			continue;
		}
		if (rb_abort(r) || r->read_done)
			break;
		pthread_cond_wait(&r->cv, &r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Start the threads; false when they cannot run (then everything is checked in line). */
static bool readback_start(struct readback *r, struct fota_storage *dst, const struct fota_image *im)
{
	memset(r, 0, sizeof(*r));
	if (!dst->concurrent_reads || !(r->h = fota_sha256_new()) || !(r->hc = fota_sha256_new()) ||
	    !(r->buf[0] = malloc(RB_BUF)) || !(r->buf[1] = malloc(RB_BUF)))
		goto fail;
	r->dst = dst;
	r->chunks = im->chunks;
	r->size = im->target_size;
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&r->cv, NULL) != 0) {
		pthread_mutex_destroy(&r->mu);
		goto fail;
	}
	if (pthread_create(&r->thread, NULL, readback_main, r) != 0)
		goto fail_sync;
	if (pthread_create(&r->ithread, NULL, image_main, r) != 0) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->thread, NULL);
		goto fail_sync;
	}
	return true;
fail_sync:
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
fail:
	fota_sha256_free(r->h);
	fota_sha256_free(r->hc);
	free(r->buf[0]);
	free(r->buf[1]);
	return false;
}

/* Chunks [0, ready) are written and tile [0, their end). */
static void readback_ready(struct readback *r, size_t ready)
{
	pthread_mutex_lock(&r->mu);
	if (ready > r->ready)
		r->ready = ready;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Wait until chunks [0, n) are checked. FOTA_OK, or the thread's error. */
static fota_status readback_wait(struct readback *r, size_t n, struct fota_error *err)
{
	pthread_mutex_lock(&r->mu);
	while (r->verified < n && !r->failed)
		pthread_cond_wait(&r->cv, &r->mu);
	bool failed = r->failed;
	pthread_mutex_unlock(&r->mu);
	if (!failed)
		return FOTA_OK;
	if (err)
		*err = r->err;
	return r->err.code ? r->err.code : FOTA_E_IO;
}

/* Stop the threads; with finish, after they checked what is ready and hashed the rest
 * of the image. FOTA_OK and the image digest when the whole image was hashed. */
static fota_status readback_end(struct readback *r, bool finish, uint8_t out[FOTA_SHA256_LEN], struct fota_error *err)
{
	pthread_mutex_lock(&r->mu);
	r->finish = finish;
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_join(r->ithread, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	fota_status rc = FOTA_OK;
	if (r->failed) {
		if (err)
			*err = r->err;
		rc = r->err.code ? r->err.code : FOTA_E_IO;
	} else if (!finish || r->hashed != r->size) {
		rc = fota_error_set(err, FOTA_E_INTERNAL, "read-back stopped early");
	} else {
		fota_sha256_final(r->h, out);
	}
	fota_sha256_free(r->h);
	fota_sha256_free(r->hc);
	free(r->buf[0]);
	free(r->buf[1]);
	return rc;
}

int agent_apply(struct agent *a, struct fota_error *err)
{
	const struct fota_manifest *m = a->m;
	const struct fota_image *im = &m->images[0];
	const struct agent_config *c = a->cfg;
	struct applier ap = { .a = a };
	struct readback rb;
	bool rb_on = false;
	int x = AGENT_EXIT_OK;
	const struct fota_devices *dv = &a->env.devices;
	if (c->mode == FOTA_MODE_AB) {
		const char *src = a->j.target_slot == 'a' ? c->slot_b : c->slot_a;
		const char *dst = a->j.target_slot == 'a' ? c->slot_a : c->slot_b;
		if (dv->open(dv->ctx, src, false, &ap.src, err) != FOTA_OK ||
		    dv->open(dv->ctx, dst, true, &ap.dst, err) != FOTA_OK) {
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
	} else {
		if (dv->open(dv->ctx, c->target, true, &ap.dst, err) != FOTA_OK) {
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
		ap.src = ap.dst;
		ap.stash_end = fota_inplace_stash_end(m);
		if (fota_inplace_scratch_needed(m) > 0 && dv->open(dv->ctx, c->scratch, true, &ap.scratch, err) != FOTA_OK) {
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
	}
	if (!(ap.dctx = ZSTD_createDCtx()) ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(ap.dctx, ZSTD_d_windowLogMax, (int)m->window_log))) {
		fota_error_set(err, FOTA_E_NOMEM, "zstd: cannot create a decoder");
		x = agent_fail(a, AGENT_EXIT_INTERNAL);
		goto out;
	}
	if (!a->j.source_ok) {
		if (im->has_source) {
			if ((x = check_range(&ap, ap.src, 0, im->source_size, im->source_sha256, "source", 0, err)) != 0) {
				if (x == AGENT_EXIT_CORRUPT) {
					fota_error_set(err, FOTA_E_SOURCE, "source %s: sha256 of its first %llu bytes does not match the package; nothing was written",
						       ap.src->name, (unsigned long long)im->source_size);
					x = agent_fail(a, AGENT_EXIT_SOURCE);
				}
				goto out;
			}
		}
		a->j.source_ok = true;
		if ((x = commit_step(a, err)) != 0)
			goto out;
	}
	size_t n = im->n_chunks;
	/* A/B: chunks already applied by an earlier run that form a prefix of the image */
	uint64_t prefix = 0;
	size_t next_in_order = 0;
	while (next_in_order < (size_t)a->j.ap_next && im->chunks[next_in_order].target_offset == prefix)
		prefix += im->chunks[next_in_order++].target_size;
	bool in_order = next_in_order == (size_t)a->j.ap_next;
	if (c->mode == FOTA_MODE_AB)
		rb_on = readback_start(&rb, ap.dst, im);
	if (rb_on && in_order)
		readback_ready(&rb, next_in_order);
	/* A/B: progress is journaled at checkpoints, so chunks after the journaled one may be
	 * written already (a kill keeps them in the page cache); a chunk whose slot range
	 * already holds its target is done (FORMAT.md 6.2 allows the same in place). Only the
	 * first mismatch ends the scan. */
	bool scan = c->mode == FOTA_MODE_AB;
	for (size_t k = (size_t)a->j.ap_next; k < n; k++) {
		const struct fota_chunk *ch = &im->chunks[k];
		if (scan) {
			uint8_t h[FOTA_SHA256_LEN];
			if (agent_hash_range(a, ap.dst, ch->target_offset, ch->target_size, h, err) != FOTA_OK) {
				x = agent_fail(a, AGENT_EXIT_IO);
				goto out;
			}
			scan = memcmp(h, ch->target_sha256, sizeof(h)) == 0;
		}
		bool delegate = rb_on && in_order && ch->target_offset == prefix;
		if (!delegate)
			in_order = false;
		if (!scan)
			x = c->mode == FOTA_MODE_AB ? ab_chunk(&ap, ch, k, !delegate, err) : inplace_chunk(&ap, ch, k, err);
		if (x != 0) {
			fota_error_prefix(err, "update: ");
			goto out;
		}
		if (delegate) {
			prefix += ch->target_size;
			readback_ready(&rb, k + 1);
		}
		a->j.ap_next = k + 1;
		a->j.ip_step = 0;
		agent_log(a, "chunk %zu/%zu applied", k + 1, n);
		/* in place and streaming: every chunk; A/B from the cache: checkpoints */
		if (c->mode == FOTA_MODE_AB && !a->j.stream && k + 1 < n && !agent_checkpoint_due(a))
			continue;
		if (c->mode == FOTA_MODE_AB && fota_storage_sync(ap.dst, err) != FOTA_OK) {
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
		/* every chunk journaled as done has been checked */
		if (rb_on) {
			fota_status wrc = readback_wait(&rb, in_order ? k + 1 : rb.ready, err);
			if (wrc != FOTA_OK) {
				fota_error_prefix(err, "update: ");
				x = agent_fail(a, wrc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(wrc));
				goto out;
			}
		}
		snprintf(a->j.message, sizeof(a->j.message), "applied %zu of %zu chunks", k + 1, n);
		if ((x = commit_step(a, err)) != 0)
			goto out;
		agent_payload_release(a, k);
	}
	uint8_t d[FOTA_SHA256_LEN];
	fota_status hrc;
	if (rb_on) {
		rb_on = false;
		hrc = readback_end(&rb, true, d, err);
	} else {
		hrc = agent_hash_range(a, ap.dst, 0, im->target_size, d, err);
	}
	if (hrc != FOTA_OK) {
		x = agent_fail(a, hrc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(hrc));
		goto out;
	}
	if (memcmp(d, im->target_sha256, sizeof(d)) != 0) {
		fota_error_set(err, FOTA_E_INTEGRITY, "image %s: sha256 of the written target does not match the manifest",
			       im->name);
		x = agent_fail(a, AGENT_EXIT_CORRUPT);
	}
out:
	if (rb_on) {
		uint8_t unused[FOTA_SHA256_LEN];
		(void)readback_end(&rb, false, unused, NULL);
	}
	ZSTD_freeDCtx(ap.dctx);
	if (ap.src != ap.dst)
		fota_storage_close(ap.src);
	fota_storage_close(ap.dst);
	fota_storage_close(ap.scratch);
	return x;
}
