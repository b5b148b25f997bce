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
#include <sys/mman.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_d_stableOutBuffer, exported by libzstd 1.5 */
#include <zstd.h>
#include <zstd_errors.h>

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
	ZSTD_DCtx *dctx_out;           /* decodes straight into out (ZSTD_d_stableOutBuffer) */
	uint8_t *out;                  /* one whole chunk of output; NULL: stream every chunk */
	size_t out_cap;
	size_t out_map;                /* out is mapped this long (0: malloc'd) */
	struct hasher *hs;             /* hashes out as it is decoded; NULL: in line */
	struct readback *rb;           /* told of each slice that extends rb_base; NULL: none */
	bool rb_checks;                /* rb checks the chunks that extend rb_base (readback_expect) */
	uint64_t rb_base;              /* the end of the slot's prefix written in target order */
	bool pending;                  /* out holds chunk pend_k, written, its check not yet seen */
	size_t pend_k;
	const uint8_t *pend_want;
};

/*
 * The target check of a chunk decoded whole runs on a hasher thread that hashes the
 * output as the decoder produces it (hasher_feed after each payload piece), so the check
 * ends soon after the decode, while the main thread writes the chunk in slices and
 * verifies the next payload. The main thread collects the result (check_pending) before
 * it reuses the buffer and before any journal commit, so every chunk journaled as done
 * has been checked. (A second thread that took the writes off the main thread was
 * measured: no faster on two cores, more CPU; see docs/fota-agent.md.)
 */
#define HASH_STEP (512u << 10) /* the hasher takes at most this much between looks at the queue */

struct hasher {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	const uint8_t *buf;
	size_t avail;       /* [0, avail) of buf is there */
	size_t done;        /* [0, done) is hashed */
	bool last;          /* avail is the whole chunk */
	bool busy, stop;
	struct fota_sha256 *h;
	uint8_t d[FOTA_SHA256_LEN];
};

/* There is something to do: a piece to hash, or the digest to finish. */
static bool hasher_ready(const struct hasher *h)
{
	return h->busy && (h->done < h->avail || h->last);
}

static void *hasher_main(void *arg)
{
	struct hasher *h = arg;
	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->stop && !hasher_ready(h))
			pthread_cond_wait(&h->cv, &h->mu);
		if (!hasher_ready(h))
			break; /* stopped */
		if (h->done < h->avail) {
			size_t from = h->done;
			size_t n = h->avail - from < HASH_STEP ? h->avail - from : HASH_STEP;
			pthread_mutex_unlock(&h->mu);
			fota_sha256_update(h->h, h->buf + from, n);
			pthread_mutex_lock(&h->mu);
			h->done = from + n;
			continue;
		}
		fota_sha256_final(h->h, h->d);
		fota_sha256_free(h->h);
		h->h = NULL;
		h->busy = false;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* A started hasher, or NULL (then the check runs in line). */
static struct hasher *hasher_start(void)
{
	struct hasher *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	if (pthread_mutex_init(&h->mu, NULL) != 0) {
		free(h);
		return NULL;
	}
	if (pthread_cond_init(&h->cv, NULL) != 0 || pthread_create(&h->thread, NULL, hasher_main, h) != 0) {
		pthread_cond_destroy(&h->cv); /* destroying an unused, zeroed condition is harmless */
		pthread_mutex_destroy(&h->mu);
		free(h);
		return NULL;
	}
	return h;
}

/* A new chunk in buf (the hasher is idle); false when out of memory. */
static bool hasher_begin(struct hasher *h, const uint8_t *buf)
{
	struct fota_sha256 *ctx = fota_sha256_new();
	if (!ctx)
		return false;
	pthread_mutex_lock(&h->mu);
	h->h = ctx;
	h->buf = buf;
	h->avail = h->done = 0;
	h->last = false;
	h->busy = true;
	pthread_mutex_unlock(&h->mu);
	return true;
}

/* [0, avail) of the chunk is there to hash; last: that is all of it. */
static void hasher_feed(struct hasher *h, size_t avail, bool last)
{
	pthread_mutex_lock(&h->mu);
	h->avail = avail;
	h->last = last;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* The digest of the chunk fed last. */
static void hasher_wait(struct hasher *h, uint8_t out[FOTA_SHA256_LEN])
{
	pthread_mutex_lock(&h->mu);
	while (h->busy)
		pthread_cond_wait(&h->cv, &h->mu);
	memcpy(out, h->d, FOTA_SHA256_LEN);
	pthread_mutex_unlock(&h->mu);
}

/* NULL does nothing; a chunk still being hashed was fed whole and is finished first. */
static void hasher_stop(struct hasher *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	fota_sha256_free(h->h);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

/* The result of the chunk check still running, if any. */
static fota_status check_pending(struct applier *ap, struct fota_error *err)
{
	if (!ap->pending)
		return FOTA_OK;
	ap->pending = false;
	uint8_t d[FOTA_SHA256_LEN];
	hasher_wait(ap->hs, d);
	if (memcmp(d, ap->pend_want, sizeof(d)) != 0)
		return fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: target sha256 does not match the manifest",
				      ap->pend_k);
	return FOTA_OK;
}

static void readback_ready(struct readback *r, uint64_t ready);
static fota_status readback_expect(struct readback *r, const struct fota_chunk *ch, size_t k,
				   struct fota_error *err);

/* The largest chunk decoded whole into memory (the zstd window it replaces is as large:
 * a decoder writing into a buffer that holds the whole frame needs no window of its own). */
#define OUT_MAX (4u << 20)
/* A chunk decoded whole is written in slices of at least this much as it comes. */
#define WRITE_STEP (1u << 20)

/*
 * Where the decoder's output goes. Streaming (whole false): out is a->buf2, every call's
 * output is written through the writer (which hashes it) and out starts over. Whole:
 * out is ap->out for the whole chunk (the same buffer in every call, as
 * ZSTD_d_stableOutBuffer requires); what is new goes to the hasher at once and to the
 * device in WRITE_STEP slices, and the read-back is told of each slice.
 */
struct zsink {
	bool whole;
	struct writer *w;    /* streaming */
	struct hasher *hs;   /* whole: NULL when the check runs in line at the end */
	struct fota_storage *dst;
	uint64_t off;        /* whole: where the chunk goes */
	size_t written;      /* whole: [0, written) of out is written */
	struct readback *rb; /* whole: told of each slice; NULL: none */
};

static fota_status zsink_take(struct applier *ap, struct zsink *z, ZSTD_outBuffer *out, bool end,
			      struct fota_error *err)
{
	if (!z->whole) {
		fota_status rc = out->pos ? writer_put(z->w, out->dst, out->pos, err) : FOTA_OK;
		out->pos = 0;
		return rc;
	}
	if (z->hs)
		hasher_feed(z->hs, out->pos, end);
	if (out->pos - z->written < WRITE_STEP && !(end && out->pos > z->written))
		return FOTA_OK;
	fota_status rc = fota_storage_write(z->dst, z->off + z->written, ap->out + z->written, out->pos - z->written,
					    err);
	if (rc != FOTA_OK)
		return rc;
	z->written = out->pos;
	if (z->rb)
		readback_ready(z->rb, z->off + z->written);
	return FOTA_OK;
}

/*
 * Feed the verified payload of full chunk k (payload_size bytes at poff, read in
 * AGENT_IO_BUF pieces) through dctx into the sink; the frame must end exactly with the
 * payload. Output past out's size is more than the chunk's target_size.
 */
static fota_status zstd_feed(struct applier *ap, ZSTD_DCtx *dctx, const struct fota_chunk *ch, size_t k,
			     struct fota_storage *payload, uint64_t poff, ZSTD_outBuffer *out, struct zsink *z,
			     struct fota_error *err)
{
	struct agent *a = ap->a;
	ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
	uint64_t left = ch->payload_size;
	size_t zr = 1;
	ZSTD_inBuffer in = { a->buf, 0, 0 };
	fota_status rc = FOTA_OK;
	for (;;) {
		if (in.pos == in.size && left > 0) {
			size_t n = left < AGENT_IO_BUF ? (size_t)left : AGENT_IO_BUF;
			if ((rc = fota_storage_read(payload, poff, a->buf, n, err)) != FOTA_OK)
				break;
			poff += n;
			left -= n;
			in = (ZSTD_inBuffer){ a->buf, n, 0 };
		}
		bool input_left = in.pos < in.size;
		if (zr == 0) {
			if (input_left)
				rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: data after the zstd frame", k);
			else
				rc = zsink_take(ap, z, out, true, err);
			break;
		}
		size_t before = out->pos;
		zr = ZSTD_decompressStream(dctx, out, &in);
		if (ZSTD_isError(zr)) {
			ZSTD_ErrorCode ec = ZSTD_getErrorCode(zr);
			if (z->whole && (ec == ZSTD_error_dstSize_tooSmall || ec == ZSTD_error_noForwardProgress_destFull))
				rc = fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: output longer than its target_size %llu",
						    k, (unsigned long long)ch->target_size);
			else
				rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: zstd: %s", k, ZSTD_getErrorName(zr));
			break;
		}
		if (zr != 0 && !input_left && left == 0 && out->pos == before) {
			rc = fota_error_set(err, FOTA_E_COMPRESS, "chunk %zu: truncated zstd frame", k);
			break;
		}
		if ((zr != 0 || !z->whole) && (rc = zsink_take(ap, z, out, false, err)) != FOTA_OK)
			break;
	}
	return rc;
}

/*
 * A full chunk small enough for ap->out: decode it whole into memory, written in slices
 * as it comes while the hasher checks its target SHA-256 (in line at the end without a
 * hasher; not here at all without check, when the read-back checks it). With defer the
 * check may still be running on return (check_pending collects it); without, it is done.
 */
static fota_status produce_whole(struct applier *ap, const struct fota_chunk *ch, size_t k,
				 struct fota_storage *payload, uint64_t poff, struct fota_storage *dst, uint64_t off,
				 bool check, bool defer, struct fota_error *err)
{
	fota_status rc = check_pending(ap, err); /* out is about to be overwritten */
	if (rc != FOTA_OK)
		return rc;
	struct zsink z = { .whole = true, .dst = dst, .off = off,
			   .rb = ap->rb && dst == ap->dst && off == ap->rb_base ? ap->rb : NULL };
	if (check && ap->hs && hasher_begin(ap->hs, ap->out))
		z.hs = ap->hs;
	ZSTD_outBuffer out = { ap->out, (size_t)ch->target_size, 0 }; /* the same one in every call */
	rc = zstd_feed(ap, ap->dctx_out, ch, k, payload, poff, &out, &z, err);
	if (rc == FOTA_OK && out.pos != ch->target_size)
		rc = fota_error_set(err, FOTA_E_INTEGRITY, "chunk %zu: produced %zu bytes, target_size %llu", k, out.pos,
				    (unsigned long long)ch->target_size);
	if (!z.hs) {
		uint8_t d[FOTA_SHA256_LEN];
		if (rc == FOTA_OK && check) {
			fota_sha256(ap->out, out.pos, d);
			if (memcmp(d, ch->target_sha256, sizeof(d)) != 0)
				rc = fota_error_set(err, FOTA_E_INTEGRITY,
						    "chunk %zu: target sha256 does not match the manifest", k);
		}
		return rc;
	}
	if (rc != FOTA_OK) {
		/* let it finish what it has; the result is not wanted */
		uint8_t unused[FOTA_SHA256_LEN];
		hasher_feed(z.hs, out.pos, true);
		hasher_wait(z.hs, unused);
		return rc;
	}
	ap->pending = true;
	ap->pend_k = k;
	ap->pend_want = ch->target_sha256;
	return defer ? FOTA_OK : check_pending(ap, err);
}

/* Produce chunk ch from its verified payload into dst at off; checks size and digest
 * (the digest on the read-back, later, when ap->rb_checks and the chunk extends the
 * slot's prefix written in order). */
static int produce(struct applier *ap, const struct fota_chunk *ch, size_t k, struct fota_storage *payload,
		   uint64_t poff, struct fota_storage *dst, uint64_t off, bool sync, struct fota_error *err)
{
	struct agent *a = ap->a;
	fota_status rc = FOTA_OK;
	bool check = !(ap->rb && ap->rb_checks && dst == ap->dst && off == ap->rb_base);
	if (!check && (rc = readback_expect(ap->rb, ch, k, err)) != FOTA_OK)
		return agent_fail(a, rc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(rc));
	if (ch->method == FOTA_METHOD_FULL && ap->out && ch->target_size <= ap->out_cap) {
		rc = produce_whole(ap, ch, k, payload, poff, dst, off, check, !sync, err);
		if (rc == FOTA_OK && sync && fota_storage_sync(dst, err) != FOTA_OK)
			return agent_fail(a, AGENT_EXIT_IO);
		return rc == FOTA_OK ? AGENT_EXIT_OK : agent_fail(a, rc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(rc));
	}
	struct writer w = { dst, off, 0, ch->target_size, check ? fota_sha256_new() : NULL };
	if (check && !w.h) {
		fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		return agent_fail(a, AGENT_EXIT_INTERNAL);
	}
	uint64_t *cum = NULL;
	if (ch->method == FOTA_METHOD_FULL) {
		struct zsink z = { .whole = false, .w = &w };
		ZSTD_outBuffer out = { a->buf2, AGENT_IO_BUF, 0 };
		rc = zstd_feed(ap, ap->dctx, ch, k, payload, poff, &out, &z, err);
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
	if (check) {
		fota_sha256_final(w.h, d);
		fota_sha256_free(w.h);
	}
	if (rc == FOTA_OK && sync && fota_storage_sync(dst, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
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
			x = produce(ap, ch, k, pst, poff, ap->scratch, ap->stash_end, true, err);
		else
			x = produce(ap, ch, k, pst, poff, ap->dst, ch->target_offset, true, err);
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

/*
 * *holds: the slot range of chunk ch already holds its target. With the hasher, the
 * range is read into ap->out piece by piece while the hasher hashes what came in.
 */
static fota_status slot_holds(struct applier *ap, const struct fota_chunk *ch, bool *holds, struct fota_error *err)
{
	uint8_t d[FOTA_SHA256_LEN];
	fota_status rc = check_pending(ap, err); /* out is about to be overwritten */
	*holds = false;
	if (rc != FOTA_OK)
		return rc;
	if (!ap->hs || ch->target_size > ap->out_cap || !hasher_begin(ap->hs, ap->out)) {
		rc = agent_hash_range(ap->a, ap->dst, ch->target_offset, ch->target_size, d, err);
		*holds = rc == FOTA_OK && memcmp(d, ch->target_sha256, sizeof(d)) == 0;
		return rc;
	}
	size_t size = (size_t)ch->target_size, got = 0;
	while (got < size) {
		size_t n = size - got < HASH_STEP ? size - got : HASH_STEP;
		if ((rc = fota_storage_read(ap->dst, ch->target_offset + got, ap->out + got, n, err)) != FOTA_OK)
			break;
		got += n;
		hasher_feed(ap->hs, got, got == size);
	}
	if (got < size || size == 0)
		hasher_feed(ap->hs, got, true);
	hasher_wait(ap->hs, d);
	*holds = rc == FOTA_OK && memcmp(d, ch->target_sha256, sizeof(d)) == 0;
	return rc;
}

static int ab_chunk(struct applier *ap, const struct fota_chunk *ch, size_t k, struct fota_error *err)
{
	struct fota_storage *pst;
	bool owned;
	uint64_t poff;
	int x = agent_payload(ap->a, k, &pst, &owned, &poff, err);
	if (x != 0)
		return x;
	/* A/B syncs the slot at the journal's checkpoint (agent_apply) */
	x = produce(ap, ch, k, pst, poff, ap->dst, ch->target_offset, false, err);
	if (owned)
		fota_storage_close(pst);
	return x;
}

/*
 * The whole-image check by read-back (A/B on files and block devices; FORMAT.md section
 * 5 step 8, like update_engine's final partition verification): one more thread reads
 * the slot back as the chunks arrive in target order and feeds the whole-image digest,
 * so that the image check is done, from what the slot holds, soon after the last write.
 * Read-back ranges are then dropped from the page cache (fota_storage_drop), RB_LAG
 * behind, when their writeback has long started. When chunks come out of order the
 * thread reads the rest of the image at the end.
 *
 * Chunk checks (step 7) ride on the same pass when the two-lane SHA-256 runs on the
 * CPU's SHA extensions (fota_sha256_pair: both digests for the price of one): each chunk
 * written in target order is registered (readback_expect) and checked on the bytes the
 * slot holds, and the main thread collects the verdict (readback_check) before the chunk
 * is journaled. The hasher then has nothing to do for those chunks, and the update does
 * one SHA-256 pass over the target instead of two. Without the extensions the pair
 * would cost two passes on this one thread, so the chunks are checked as before, by the
 * hasher, on the bytes produced.
 */
#define RB_BUF (128u << 10) /* the read-back buffer (peak RSS stays under 16 MiB) */
#define RB_LAG (16u << 20)  /* read back, kept cached this much longer before the drop */
#define RB_QUEUE 32         /* chunks written and not yet checked, at most */

struct rb_chunk {
	uint64_t start, end;
	size_t k;
	const uint8_t *want;
};

struct readback {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct fota_storage *dst;
	uint64_t ready;      /* [0, ready) is written */
	uint64_t hashed;     /* [0, hashed) is in the image digest */
	uint64_t size;
	bool stop, finish, failed;
	bool checks;         /* chunks are checked here (readback_expect) */
	struct rb_chunk q[RB_QUEUE]; /* registered, not yet checked, in target order */
	size_t q_head, q_len;
	bool inner_on;       /* the inner lane runs from q[q_head].start */
	bool bad;            /* chunk bad_k failed its check */
	size_t bad_k;
	struct fota_sha256_pair *pair; /* outer: the image; inner: the chunk at the queue's head */
	uint8_t *buf;
	struct fota_error err;
};

/* At r->hashed: start the inner lane on the head chunk's first byte, check the head chunk
 * at its last. Called with the lock held. */
static void readback_edges(struct readback *r)
{
	bool popped = false;
	while (r->q_len > 0 && !r->bad) {
		struct rb_chunk *c = &r->q[r->q_head];
		uint8_t d[FOTA_SHA256_LEN];
		if (!r->inner_on) {
			if (r->hashed < c->start)
				break;
			if (r->hashed > c->start) { /* registered after its bytes went by: a bug */
				fota_error_set(&r->err, FOTA_E_INTERNAL, "read-back: chunk %zu registered too late", c->k);
				r->failed = true;
				break;
			}
			fota_sha256_pair_final_inner(r->pair, d); /* what came before it */
			r->inner_on = true;
		}
		if (r->hashed < c->end)
			break;
		fota_sha256_pair_final_inner(r->pair, d);
		r->inner_on = false;
		if (memcmp(d, c->want, sizeof(d)) != 0) {
			r->bad = true;
			r->bad_k = c->k;
		}
		r->q_head = (r->q_head + 1) % RB_QUEUE;
		r->q_len--;
		popped = true;
	}
	if (popped || r->failed)
		pthread_cond_broadcast(&r->cv);
}

static void *readback_main(void *arg)
{
	struct readback *r = arg;
	uint64_t dropped = 0; /* [0, dropped) left the page cache */
	pthread_mutex_lock(&r->mu);
	for (;;) {
		readback_edges(r);
		if (r->failed)
			break;
		uint64_t to = r->stop && r->finish ? r->size : r->ready;
		if (r->hashed < to) {
			uint64_t from = r->hashed;
			size_t n = to - from < RB_BUF ? (size_t)(to - from) : RB_BUF;
			if (r->q_len > 0 && !r->bad) { /* stop at the next chunk edge */
				uint64_t edge = r->inner_on ? r->q[r->q_head].end : r->q[r->q_head].start;
				if (edge > from && edge - from < n)
					n = (size_t)(edge - from);
			}
			pthread_mutex_unlock(&r->mu);
			bool ok = fota_storage_read(r->dst, from, r->buf, n, &r->err) == FOTA_OK;
			if (ok) {
				fota_sha256_pair_update(r->pair, r->buf, n);
				if (from + n >= dropped + RB_LAG + RB_LAG / 2) {
					fota_storage_drop(r->dst, dropped, from + n - RB_LAG - dropped);
					dropped = from + n - RB_LAG;
				}
			}
			pthread_mutex_lock(&r->mu);
			if (!ok) {
				r->failed = true;
				break;
			}
			r->hashed = from + n;
			continue;
		}
		if (r->stop)
			break;
		pthread_cond_wait(&r->cv, &r->mu);
	}
	pthread_cond_broadcast(&r->cv); /* a caller waiting in readback_expect or readback_check */
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Start the thread; false when it cannot run (then the image is hashed at the end). */
static bool readback_start(struct readback *r, struct fota_storage *dst, const struct fota_image *im)
{
	memset(r, 0, sizeof(*r));
	if (!dst->concurrent_reads || !(r->pair = fota_sha256_pair_new(0)) || !(r->buf = malloc(RB_BUF)))
		goto fail;
	r->checks = fota_sha256_pair_accelerated(r->pair);
	r->dst = dst;
	r->size = im->target_size;
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&r->cv, NULL) != 0) {
		pthread_mutex_destroy(&r->mu);
		goto fail;
	}
	if (pthread_create(&r->thread, NULL, readback_main, r) != 0) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		goto fail;
	}
	return true;
fail:
	fota_sha256_pair_free(r->pair);
	free(r->buf);
	return false;
}

/* [0, ready) of the image is written. */
static void readback_ready(struct readback *r, uint64_t ready)
{
	pthread_mutex_lock(&r->mu);
	if (ready > r->ready)
		r->ready = ready;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* The verdict on the chunks checked so far. Called with the lock held. */
static fota_status readback_status(struct readback *r, struct fota_error *err)
{
	if (r->bad)
		return fota_error_set(err, FOTA_E_INTEGRITY,
				      "chunk %zu: target sha256 does not match the manifest (read back from the slot)",
				      r->bad_k);
	if (r->failed) {
		if (err)
			*err = r->err;
		return r->err.code ? r->err.code : FOTA_E_IO;
	}
	return FOTA_OK;
}

/* Chunk k, about to be written at ch->target_offset, is to be checked on the read-back
 * (r->checks). Waits while RB_QUEUE chunks are unchecked. Not FOTA_OK: an earlier chunk
 * failed its check, or the read-back failed. */
static fota_status readback_expect(struct readback *r, const struct fota_chunk *ch, size_t k,
				   struct fota_error *err)
{
	pthread_mutex_lock(&r->mu);
	while (r->q_len == RB_QUEUE && !r->bad && !r->failed)
		pthread_cond_wait(&r->cv, &r->mu);
	fota_status rc = readback_status(r, err);
	if (rc == FOTA_OK) {
		r->q[(r->q_head + r->q_len) % RB_QUEUE] =
			(struct rb_chunk){ ch->target_offset, ch->target_offset + ch->target_size, k, ch->target_sha256 };
		r->q_len++;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* Every registered chunk up to k is checked (wait = false: the verdict so far). */
static fota_status readback_check(struct readback *r, size_t k, bool wait, struct fota_error *err)
{
	pthread_mutex_lock(&r->mu);
	while (wait && r->q_len > 0 && r->q[r->q_head].k <= k && !r->bad && !r->failed)
		pthread_cond_wait(&r->cv, &r->mu);
	fota_status rc = readback_status(r, err);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* Stop the thread; with finish, after it hashed the rest of the image. FOTA_OK and the
 * image digest when the whole image was hashed and every registered chunk matched. */
static fota_status readback_end(struct readback *r, bool finish, uint8_t out[FOTA_SHA256_LEN], struct fota_error *err)
{
	pthread_mutex_lock(&r->mu);
	r->finish = finish;
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	fota_status rc = readback_status(r, err);
	if (rc == FOTA_OK && (!finish || r->hashed != r->size || r->q_len > 0))
		rc = fota_error_set(err, FOTA_E_INTERNAL, "read-back stopped early");
	else if (rc == FOTA_OK)
		fota_sha256_pair_final_outer(r->pair, out);
	fota_sha256_pair_free(r->pair);
	free(r->buf);
	return rc;
}

/*
 * The chunk buffer. When its size is a multiple of 2 MiB it is anonymous memory aligned
 * to 2 MiB and marked for transparent huge pages (MADV_HUGEPAGE; no page then reaches
 * past the buffer, so the RSS is the same), so that the first chunk faults a few large
 * pages in instead of a thousand small ones; else malloc. *map: the mapped length (0:
 * malloc'd).
 */
#define HUGE_PAGE (2u << 20)

static uint8_t *out_alloc(size_t cap, size_t *map)
{
	*map = 0;
	if (cap == 0 || cap % HUGE_PAGE != 0)
		return malloc(cap);
	size_t len = cap + HUGE_PAGE;
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return malloc(cap);
	size_t head = (HUGE_PAGE - (size_t)((uintptr_t)p % HUGE_PAGE)) % HUGE_PAGE;
	if (head > 0)
		(void)munmap(p, head);
	if (len - head - cap > 0)
		(void)munmap(p + head + cap, len - head - cap);
	(void)madvise(p + head, cap, MADV_HUGEPAGE);
	*map = cap;
	return p + head;
}

/* NULL does nothing. */
static void out_free(uint8_t *p, size_t map)
{
	if (p && map > 0)
		(void)munmap(p, map);
	else
		free(p);
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
	/* full chunks that fit OUT_MAX are decoded whole into ap.out (produce_whole); without
	 * the memory for it every chunk is streamed */
	for (size_t i = 0; i < im->n_chunks; i++)
		if (im->chunks[i].method == FOTA_METHOD_FULL && im->chunks[i].target_size <= OUT_MAX &&
		    im->chunks[i].target_size > ap.out_cap)
			ap.out_cap = (size_t)im->chunks[i].target_size;
	if (ap.out_cap > 0) {
		ap.dctx_out = ZSTD_createDCtx();
		if (ap.dctx_out &&
		    !ZSTD_isError(ZSTD_DCtx_setParameter(ap.dctx_out, ZSTD_d_windowLogMax, (int)m->window_log)) &&
		    !ZSTD_isError(ZSTD_DCtx_setParameter(ap.dctx_out, ZSTD_d_stableOutBuffer, 1)))
			ap.out = out_alloc(ap.out_cap, &ap.out_map);
		if (ap.out)
			ap.hs = hasher_start();
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
		/* A/B never writes the source, so a cut before the next commit only means the
		 * check runs again; in place must record it before the first write changes it */
		if (c->mode != FOTA_MODE_AB && (x = commit_step(a, err)) != 0)
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
		readback_ready(&rb, prefix);
	/* the pair's lanes share blocks only when each chunk starts on the image's 64-byte
	 * block grid (fota-pack's chunk sizes do); else the hasher checks the chunks */
	ap.rb_checks = rb_on && rb.checks;
	for (size_t i = 0; ap.rb_checks && i < im->n_chunks; i++)
		ap.rb_checks = im->chunks[i].target_offset % 64 == 0;
	/* A/B: progress is journaled at checkpoints, so chunks after the journaled one may be
	 * written already (a kill keeps them in the page cache); a chunk whose slot range
	 * already holds its target is done (FORMAT.md 6.2 allows the same in place). Only the
	 * first mismatch ends the scan. Not in the run that entered phase applying: that
	 * commit precedes every write of the job, so the slot holds nothing of it yet (a
	 * later run scans; writing a chunk again is only redundant in A/B). */
	bool scan = c->mode == FOTA_MODE_AB && !a->apply_fresh;
	for (size_t k = (size_t)a->j.ap_next; k < n; k++) {
		const struct fota_chunk *ch = &im->chunks[k];
		fota_status scan_rc = scan ? slot_holds(&ap, ch, &scan, err) : FOTA_OK;
		if (scan_rc != FOTA_OK) {
			x = agent_fail(a, scan_rc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(scan_rc));
			goto out;
		}
		if (ch->target_offset != prefix)
			in_order = false;
		/* produce_whole tells the readback of each slice of a chunk that extends the prefix */
		ap.rb = rb_on && in_order ? &rb : NULL;
		ap.rb_base = prefix;
		if (!scan)
			x = c->mode == FOTA_MODE_AB ? ab_chunk(&ap, ch, k, err) : inplace_chunk(&ap, ch, k, err);
		if (x != 0) {
			fota_error_prefix(err, "update: ");
			goto out;
		}
		if (rb_on && in_order) {
			prefix += ch->target_size;
			readback_ready(&rb, prefix);
		}
		/* a chunk the read-back found wrong ends the job now, not at the checkpoint */
		fota_status crc = ap.rb_checks ? readback_check(&rb, k, false, err) : FOTA_OK;
		if (crc != FOTA_OK) {
			fota_error_prefix(err, "update: ");
			x = agent_fail(a, crc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(crc));
			goto out;
		}
		a->j.ap_next = k + 1;
		a->j.ip_step = 0;
		agent_log(a, "chunk %zu/%zu applied", k + 1, n);
		/* in place and streaming: every chunk; A/B from the cache: checkpoints */
		if (c->mode == FOTA_MODE_AB && !a->j.stream && k + 1 < n && !agent_checkpoint_due(a))
			continue;
		crc = check_pending(&ap, err);
		if (crc == FOTA_OK && ap.rb_checks)
			crc = readback_check(&rb, k, true, err);
		if (crc != FOTA_OK) {
			fota_error_prefix(err, "update: ");
			x = agent_fail(a, crc == FOTA_E_IO ? AGENT_EXIT_IO : agent_exit_for(crc));
			goto out;
		}
		if (c->mode == FOTA_MODE_AB && fota_storage_sync(ap.dst, err) != FOTA_OK) {
			x = agent_fail(a, AGENT_EXIT_IO);
			goto out;
		}
		/* every chunk journaled as done has been checked (produce, or the read-back) and synced. A/B from
		 * the cache: the last chunks are journaled by the caller's commit of the checked
		 * image (agent.c run_update, phase APPLIED); a cut before it redoes them from the
		 * last checkpoint, as any cut does */
		snprintf(a->j.message, sizeof(a->j.message), "applied %zu of %zu chunks", k + 1, n);
		if (c->mode == FOTA_MODE_AB && !a->j.stream && k + 1 == n)
			continue;
		if ((x = commit_step(a, err)) != 0)
			goto out;
		agent_payload_release(a, k);
	}
	uint8_t d[FOTA_SHA256_LEN];
	fota_status hrc;
	ap.rb = NULL;
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
	hasher_stop(ap.hs); /* after a pending check: it finishes hashing first */
	ZSTD_freeDCtx(ap.dctx);
	ZSTD_freeDCtx(ap.dctx_out);
	out_free(ap.out, ap.out_map);
	if (ap.src != ap.dst)
		fota_storage_close(ap.src);
	fota_storage_close(ap.dst);
	fota_storage_close(ap.scratch);
	a->apply_fresh = false; /* another attempt in this run may find chunks of this one */
	return x;
}
