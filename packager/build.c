/*
 * build.c: plan, encode and write a package (see pack.h).
 *
 * For each image: map the target (and source) images, diff the whole image once when
 * there is a source, then cut the target into chunks. Each chunk gets two candidate
 * payloads, built on a pool of threads: the zstd-compressed target bytes (FULL) and,
 * with a source, its slice of the whole-image script encoded as a delta patch (DELTA),
 * checked by applying it. The smaller one is used. In-place packages then go through
 * the in-place planner, which orders the chunks, adds stash copies and may force some
 * chunks back to FULL. Payloads are spooled to an unlinked file next to the output, so
 * memory holds only the images, the script and a few chunks in flight. The archive is
 * staged as OUT.tmp and renamed when complete.
 *
 * Every decision depends only on the inputs and options, never on the thread count or
 * timing, so packages are reproducible.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "fota/container.h"
#include "fota/hash.h"
#include "fota/inplace.h"
#include "fota/manifest.h"
#include "fota/sig.h"
#include "fota/util.h"
#include "pack.h"

static const char *progname = "fota-pack";

/*
 * Source ranges a chunk's manifest entry lists. A/B chunks read the one span that covers
 * everything they need: it costs the manifest a single pair, and reading more of an
 * intact source costs nothing. In-place chunks list up to this many ranges, joined
 * where the gaps are smallest, since every byte listed constrains the order.
 */
#define INPLACE_MAX_READS 32

/* ---- mapped input files ---- */

struct mapped {
	const uint8_t *data;
	uint64_t size;
};

static fota_status map_file(const char *path, struct mapped *m, struct fota_error *err)
{
	m->data = NULL;
	m->size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fota_error_set(err, FOTA_E_IO, "%s: %s", path, strerror(errno));
	struct stat st;
	fota_status rc = FOTA_OK;
	if (fstat(fd, &st) != 0) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(fd, 0, SEEK_END);
		size = end > 0 ? (uint64_t)end : 0;
	} else if (!S_ISREG(st.st_mode)) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: not a regular file or block device", path);
		goto out;
	}
	if (size > FOTA_IMAGE_SIZE_MAX) {
		rc = fota_error_set(err, FOTA_E_LIMIT, "%s: %" PRIu64 " bytes, limit %llu", path, size,
				    (unsigned long long)FOTA_IMAGE_SIZE_MAX);
		goto out;
	}
	if (size) {
		void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			rc = fota_error_set(err, FOTA_E_IO, "%s: mmap: %s", path, strerror(errno));
			goto out;
		}
		madvise(p, (size_t)size, MADV_SEQUENTIAL);
		m->data = p;
	}
	m->size = size;
out:
	close(fd);
	return rc;
}

static void unmap_file(struct mapped *m)
{
	if (m->data && m->size)
		munmap((void *)m->data, (size_t)m->size);
	m->data = NULL;
	m->size = 0;
}

static double now_s(void);

/* ---- the source ranges a chunk lists ---- */

/*
 * fota_delta_script_slice gives a chunk's script over the concatenation of the source
 * ranges it reads, sorted, disjoint and not touching (rg[0..n)). A manifest entry may list
 * at most `max` of them (A/B: 1, see above): while there are more, join the two separated
 * by the smallest gap (the first such pair on ties), so the chunk reads the gap too. The
 * script is then re-based onto the concatenation of the joined ranges: every add keeps
 * its source bytes, only the seeks between adds grow by the gaps now read. *out gets the
 * joined ranges (malloc'd, owned by the caller).
 */
static fota_status cap_reads(struct fota_delta_script *s, const struct fota_delta_range *rg, size_t n, size_t max,
			     struct fota_range **out, size_t *n_out, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct fota_range *r = malloc((n ? n : 1) * sizeof(*r));
	uint64_t *vold = malloc((n ? n : 1) * sizeof(*vold)); /* where rg[i] starts in the old virtual input */
	uint64_t *vnew = malloc((n ? n : 1) * sizeof(*vnew)); /* and in the new one */
	size_t m = n;
	*out = NULL;
	*n_out = 0;
	if (!r || !vold || !vnew) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		r[i] = (struct fota_range){ rg[i].off, rg[i].len, false };
	if (max == 0)
		max = 1;
	while (m > max) {
		size_t best = 0;
		uint64_t gap = UINT64_MAX;
		for (size_t i = 0; i + 1 < m; i++) {
			uint64_t g = r[i + 1].offset - (r[i].offset + r[i].length);
			if (g < gap) {
				gap = g;
				best = i;
			}
		}
		r[best].length = r[best + 1].offset + r[best + 1].length - r[best].offset;
		memmove(&r[best + 1], &r[best + 2], (m - best - 2) * sizeof(*r));
		m--;
	}
	/* Both inputs are sorted, so one pass places every original range in its joined one. */
	uint64_t vo = 0, base = 0;
	for (size_t i = 0, k = 0; i < n; i++) {
		while (rg[i].off >= r[k].offset + r[k].length)
			base += r[k++].length;
		vold[i] = vo;
		vnew[i] = base + (rg[i].off - r[k].offset);
		vo += rg[i].len;
	}
	if (m < n) {
		/* New start of each add; then the seeks that lead from one add to the next. */
		int64_t pos = 0;
		for (size_t c = 0; c < s->n_ctrl; c++) {
			if (s->ctrl[c].add) {
				size_t lo = 0, hi = n; /* the last range starting at or before pos */
				while (hi - lo > 1) {
					size_t mid = lo + (hi - lo) / 2;
					if ((int64_t)vold[mid] <= pos)
						lo = mid;
					else
						hi = mid;
				}
				int64_t next_pos = pos + (int64_t)s->ctrl[c].add + s->ctrl[c].seek;
				s->ctrl[c].seek = (int64_t)(vnew[lo] + ((uint64_t)pos - vold[lo])); /* the add's new start, for now */
				pos = next_pos;
			} else
				pos += s->ctrl[c].seek;
		}
		int64_t cur = 0, next = -1;
		for (size_t c = s->n_ctrl; c-- > 0;) { /* backwards: the start of the next add */
			int64_t here = s->ctrl[c].add ? s->ctrl[c].seek : -1;
			s->ctrl[c].seek = next;
			if (here >= 0)
				next = here;
		}
		for (size_t c = 0; c < s->n_ctrl; c++) {
			cur += (int64_t)s->ctrl[c].add;
			int64_t target = s->ctrl[c].seek;
			s->ctrl[c].seek = target < 0 ? 0 : target - cur;
			cur += s->ctrl[c].seek;
		}
		s->old_size = 0;
		for (size_t k = 0; k < m; k++)
			s->old_size += r[k].length;
	}
out:
	free(vold);
	free(vnew);
	if (rc) {
		free(r);
		return rc;
	}
	*out = r;
	*n_out = m;
	return FOTA_OK;
}

/* ---- chunk jobs ---- */

struct chunk_job {
	/* in */
	const uint8_t *target;          /* chunk target bytes */
	uint64_t offset, size;
	const struct mapped *old;       /* NULL: no source */
	const struct fota_delta_script *script;
	int level;
	uint32_t full_wlog, delta_wlog;
	size_t max_reads;
	/* out */
	uint8_t target_sha256[FOTA_SHA256_LEN];
	uint8_t *full;
	size_t full_len;
	uint8_t *delta;                 /* NULL when there is no source or the slice failed to help */
	size_t delta_len;
	struct fota_range *reads;
	size_t n_reads;
	double t_slice, t_encode, t_check, t_full; /* seconds spent in each step (profile) */
	fota_status rc;
	struct fota_error err;
};

/*
 * Where packing time goes, in seconds, for --json: wall time of the whole-image steps,
 * and thread time summed over chunks for the per-chunk steps.
 */
struct pack_profile {
	double hash, diff, slice, encode, check, full, inplace, write;
};

struct mem_io {
	const uint8_t *patch;
	size_t patch_len;
	const uint8_t *src;
	uint64_t src_len;
	const uint8_t *expect;
	uint64_t expect_len, pos;
	bool mismatch;
};

static fota_status mio_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	if (off > m->patch_len || len > m->patch_len - off)
		return fota_error_set(err, FOTA_E_PATCH, "self-check: patch read out of range");
	memcpy(buf, m->patch + off, len);
	return FOTA_OK;
}

static fota_status mio_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	if (off > m->src_len || len > m->src_len - off)
		return fota_error_set(err, FOTA_E_PATCH, "self-check: source read out of range");
	memcpy(buf, m->src + off, len);
	return FOTA_OK;
}

static fota_status mio_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct mem_io *m = ctx;
	if (len > m->expect_len - m->pos || memcmp(m->expect + m->pos, buf, len) != 0)
		m->mismatch = true;
	else
		m->pos += len;
	(void)err;
	return FOTA_OK;
}

/* Compress the chunk at `level` into j->full. */
static int compress_full(struct chunk_job *j, ZSTD_CCtx *cctx, int level, uint8_t *dst, size_t cap, size_t *out)
{
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, (int)j->full_wlog);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	size_t z = ZSTD_compress2(cctx, dst, cap, j->target, (size_t)j->size);
	if (ZSTD_isError(z)) {
		j->rc = fota_error_set(&j->err, FOTA_E_COMPRESS, "chunk at %" PRIu64 ": zstd: %s", j->offset,
				       ZSTD_getErrorName(z));
		return -1;
	}
	*out = z;
	return 0;
}

/*
 * Both candidate payloads of one chunk. The delta comes first; the FULL payload at the
 * real level is made only when a fast trial says it could be competitive (or when
 * asked: no source, or the in-place planner dropped the chunk's reads), since high
 * zstd levels are the slowest part of packing.
 */
static void run_chunk(struct chunk_job *j)
{
	uint8_t *vold = NULL;
	struct fota_delta_script *sub = NULL;
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	size_t bound = ZSTD_compressBound((size_t)j->size);
	j->full = malloc(bound ? bound : 1);
	if (!cctx || !j->full) {
		j->rc = fota_error_set(&j->err, FOTA_E_NOMEM, "chunk at %" PRIu64 ": out of memory", j->offset);
		goto out;
	}
	fota_sha256(j->target, (size_t)j->size, j->target_sha256);
	double t = now_s();
	if (j->script) {
		/* The chunk's own script, over the source ranges it reads. */
		struct fota_delta_range *rg = NULL;
		size_t nrg = 0;
		j->rc = fota_delta_script_slice(j->script, j->offset, j->size, &sub, &rg, &nrg, &j->err);
		if (!j->rc)
			j->rc = cap_reads(sub, rg, nrg, j->max_reads, &j->reads, &j->n_reads, &j->err);
		free(rg);
		if (j->rc) {
			fota_error_prefix(&j->err, "chunk at %" PRIu64 ": ", j->offset);
			goto out;
		}
		vold = malloc(sub->old_size ? (size_t)sub->old_size : 1);
		if (!vold) {
			j->rc = fota_error_set(&j->err, FOTA_E_NOMEM, "chunk at %" PRIu64 ": out of memory", j->offset);
			goto out;
		}
		uint64_t v = 0;
		for (size_t r = 0; r < j->n_reads; r++) {
			memcpy(vold + v, j->old->data + j->reads[r].offset, (size_t)j->reads[r].length);
			v += j->reads[r].length;
		}
		j->t_slice = now_s() - t;
		t = now_s();
		struct fota_delta_opts dopts = { .threads = 1, .window_log = j->delta_wlog, .level = j->level };
		j->rc = fota_delta_encode_full(sub, vold, j->target, &dopts, &j->delta, &j->delta_len, &j->err);
		j->t_encode = now_s() - t;
		t = now_s();
		if (j->rc)
			goto out;
		/* Never ship a patch that was not seen to rebuild its chunk. */
		struct mem_io mio = { j->delta, j->delta_len, vold, sub->old_size, j->target, j->size, 0, false };
		struct fota_delta_io io = { .ctx = &mio, .patch_size = j->delta_len, .read_patch = mio_patch,
					    .read_source = mio_source, .write_target = mio_write };
		uint64_t produced = 0;
		j->rc = fota_delta_apply(&io, sub->old_size, FOTA_DELTA_MEM_DEFAULT, &produced, &j->err);
		if (!j->rc && (mio.mismatch || produced != j->size))
			j->rc = fota_error_set(&j->err, FOTA_E_INTERNAL,
					       "the delta patch does not rebuild the chunk (engine bug)");
		j->t_check = now_s() - t;
		t = now_s();
		if (j->rc) {
			fota_error_prefix(&j->err, "chunk at %" PRIu64 ": ", j->offset);
			goto out;
		}
	}
	bool need_full = !j->delta;
	if (!need_full) {
		size_t quick = 0;
		if (compress_full(j, cctx, 3, j->full, bound, &quick) != 0)
			goto out;
		/* Level 3 to the real level rarely gains more than a fifth. */
		need_full = quick < j->delta_len + j->delta_len / 4;
	}
	if (need_full && compress_full(j, cctx, j->level, j->full, bound, &j->full_len) != 0)
		goto out;
	if (!need_full) {
		free(j->full);
		j->full = NULL;
	}
	j->t_full = now_s() - t;
out:
	free(vold);
	fota_delta_script_free(sub);
	ZSTD_freeCCtx(cctx);
}

struct pool {
	struct chunk_job *jobs;
	size_t n, next;
	pthread_mutex_t lock;
};

static void *worker(void *arg)
{
	struct pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t i = p->next < p->n ? p->next++ : p->n;
		pthread_mutex_unlock(&p->lock);
		if (i >= p->n)
			return NULL;
		run_chunk(&p->jobs[i]);
	}
}

static void run_pool(struct chunk_job *jobs, size_t n, unsigned threads)
{
	struct pool p = { .jobs = jobs, .n = n };
	pthread_mutex_init(&p.lock, NULL);
	pthread_t tids[PACK_MAX_THREADS];
	unsigned started = 0;
	for (unsigned t = 1; t < threads && t < n; t++)
		if (pthread_create(&tids[started], NULL, worker, &p) == 0)
			started++;
	worker(&p);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	pthread_mutex_destroy(&p.lock);
}

/* ---- spool ---- */

struct spool {
	int fd;
	uint64_t size;
};

static fota_status spool_put(struct spool *s, const void *data, size_t len, uint64_t *off, struct fota_error *err)
{
	*off = s->size;
	const uint8_t *p = data;
	while (len) {
		ssize_t n = write(s->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fota_error_set(err, FOTA_E_IO, "spool: write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
		s->size += (uint64_t)n;
	}
	return FOTA_OK;
}

static fota_status spool_get(const struct spool *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(s->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fota_error_set(err, FOTA_E_IO, "spool: read: %s", n < 0 ? strerror(errno) : "short");
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return FOTA_OK;
}

static int open_spool(const char *output, struct fota_error *err)
{
	char *tmpl = NULL;
	if (asprintf(&tmpl, "%s.spool.XXXXXX", output) < 0) {
		fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		return -1;
	}
	int fd = mkstemp(tmpl);
	if (fd < 0)
		fota_error_set(err, FOTA_E_IO, "%s: %s", tmpl, strerror(errno));
	else
		unlink(tmpl);
	free(tmpl);
	return fd;
}

/* Where each chunk's candidate payloads sit in the spool. */
struct candidates {
	uint64_t full_off, full_len;
	uint64_t delta_off, delta_len;
	uint8_t full_sha256[FOTA_SHA256_LEN];
	uint8_t delta_sha256[FOTA_SHA256_LEN];
	bool has_delta, has_full;
};

/* ---- progress ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct progress {
	bool on;
	double t0;
	uint64_t done, total;
};

static void progress_show(struct progress *pg, const char *what)
{
	if (!pg->on)
		return;
	double el = now_s() - pg->t0;
	double rate = el > 0 ? (double)pg->done / el : 0;
	double eta = rate > 0 ? (double)(pg->total - pg->done) / rate : 0;
	int width = 30, fill = pg->total ? (int)((double)width * (double)pg->done / (double)pg->total) : width;
	fprintf(stderr, "\r%-8s [%.*s%*s] %5.1f%% %7.1f MB/s ETA %4.0fs ", what, fill,
		"##############################", width - fill, "",
		pg->total ? 100.0 * (double)pg->done / (double)pg->total : 100.0, rate / 1e6, eta);
	fflush(stderr);
}

/* ---- manifest assembly ---- */

static uint32_t ceil_log2(uint64_t v)
{
	uint32_t w = 0;
	while (w < 63 && (1ull << w) < v)
		w++;
	return w;
}

static char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return strdup(s ? s + 1 : path);
}

static fota_status fill_header(const struct pack_options *o, struct fota_manifest *m, struct fota_error *err)
{
	m->format_version = FOTA_FORMAT_VERSION;
	m->name = o->name ? strdup(o->name) : base_name(o->images[0].new_path);
	m->version = strdup(o->version ? o->version : "1");
	m->from_version = o->from_version ? strdup(o->from_version) : NULL;
	m->n_models = o->n_models;
	m->models = o->n_models ? calloc(o->n_models, sizeof(char *)) : NULL;
	for (size_t i = 0; m->models && i < o->n_models; i++)
		if (!(m->models[i] = strdup(o->models[i])))
			return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	m->security_version = o->security_version;
	m->expires = o->expires;
	m->mode = o->mode;
	m->policy.priority = (enum fota_priority)o->priority;
	m->policy.silent = o->silent;
	m->policy.roaming = (enum fota_roaming)o->roaming;
	m->policy.install_message = o->install_message ? strdup(o->install_message) : NULL;
	m->n_images = o->n_images;
	m->images = calloc(o->n_images, sizeof(struct fota_image));
	if (!m->name || !m->version || !m->images || (o->n_models && !m->models) ||
	    (o->from_version && !m->from_version) || (o->install_message && !m->policy.install_message))
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	return FOTA_OK;
}

static json_t *summary_json(const struct fota_manifest *m, uint64_t pkg_size)
{
	json_t *root = json_object();
	json_object_set_new(root, "package", json_string(m->name));
	json_object_set_new(root, "version", json_string(m->version));
	json_object_set_new(root, "mode", json_string(fota_mode_name(m->mode)));
	json_object_set_new(root, "package_bytes", json_integer((json_int_t)pkg_size));
	json_object_set_new(root, "scratch_size", json_integer((json_int_t)m->scratch_size));
	json_t *imgs = json_array();
	uint64_t total_target = 0;
	for (size_t i = 0; i < m->n_images; i++) {
		const struct fota_image *im = &m->images[i];
		json_t *ji = json_object();
		uint64_t payload = 0;
		size_t n_delta = 0, n_stash = 0;
		json_t *chunks = json_array();
		for (size_t c = 0; c < im->n_chunks; c++) {
			const struct fota_chunk *ch = &im->chunks[c];
			payload += ch->payload_size;
			n_delta += ch->method == FOTA_METHOD_DELTA;
			n_stash += ch->n_stash;
			json_t *jc = json_object();
			json_object_set_new(jc, "target_offset", json_integer((json_int_t)ch->target_offset));
			json_object_set_new(jc, "target_bytes", json_integer((json_int_t)ch->target_size));
			json_object_set_new(jc, "method", json_string(fota_method_name(ch->method)));
			json_object_set_new(jc, "payload_bytes", json_integer((json_int_t)ch->payload_size));
			json_object_set_new(jc, "ratio", json_real(ch->target_size ? (double)ch->payload_size / (double)ch->target_size : 0));
			json_object_set_new(jc, "source_reads", json_integer((json_int_t)ch->n_source_reads));
			json_object_set_new(jc, "stash", json_integer((json_int_t)ch->n_stash));
			json_array_append_new(chunks, jc);
		}
		total_target += im->target_size;
		json_object_set_new(ji, "name", json_string(im->name));
		json_object_set_new(ji, "source_bytes", im->has_source ? json_integer((json_int_t)im->source_size) : json_null());
		json_object_set_new(ji, "target_bytes", json_integer((json_int_t)im->target_size));
		json_object_set_new(ji, "payload_bytes", json_integer((json_int_t)payload));
		json_object_set_new(ji, "ratio", json_real(im->target_size ? (double)payload / (double)im->target_size : 0));
		json_object_set_new(ji, "chunks", json_integer((json_int_t)im->n_chunks));
		json_object_set_new(ji, "delta_chunks", json_integer((json_int_t)n_delta));
		json_object_set_new(ji, "stash_ranges", json_integer((json_int_t)n_stash));
		json_object_set_new(ji, "chunk_list", chunks);
		json_array_append_new(imgs, ji);
	}
	json_object_set_new(root, "target_bytes", json_integer((json_int_t)total_target));
	json_object_set_new(root, "ratio", json_real(total_target ? (double)pkg_size / (double)total_target : 0));
	json_object_set_new(root, "images", imgs);
	return root;
}

/* ---- one image ---- */

static fota_status build_image(const struct pack_options *o, const struct pack_image *pi, struct fota_image *im,
			       struct spool *sp, struct candidates **cand_out,
			       uint64_t *stash_end, uint32_t *delta_used, struct progress *pg, struct pack_profile *pf,
			       struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct mapped old = { 0 }, new = { 0 };
	struct fota_delta_script *script = NULL;
	struct chunk_job *jobs = NULL;
	struct candidates *cand = NULL;
	bool *to_full = NULL;
	struct fota_sha256 *img_hash = NULL;
	double t = 0;
	*cand_out = NULL;

	snprintf(im->name, sizeof(im->name), "%s", pi->name);
	rc = map_file(pi->new_path, &new, err);
	if (rc)
		goto out;
	if (pi->old_path) {
		rc = map_file(pi->old_path, &old, err);
		if (rc)
			goto out;
		im->has_source = true;
		im->source_size = old.size;
		t = now_s();
		fota_sha256(old.data, (size_t)old.size, im->source_sha256);
	}
	if (!pi->old_path)
		t = now_s();
	im->target_size = new.size;
	/* With a source the whole target is needed at once anyway; without one it is hashed
	 * batch by batch below, so memory stays small. */
	if (pi->old_path) {
		fota_sha256(new.data, (size_t)new.size, im->target_sha256);
		pf->hash += now_s() - t;
	} else if (!(img_hash = fota_sha256_new())) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	uint64_t n_chunks = (new.size + o->chunk_size - 1) / o->chunk_size;
	if (n_chunks > FOTA_CHUNKS_MAX) {
		rc = fota_error_set(err, FOTA_E_LIMIT,
				    "%s: %" PRIu64 " chunks of %" PRIu64 " bytes exceed the limit of %u chunks; use a larger --chunk-size",
				    pi->new_path, n_chunks, o->chunk_size, FOTA_CHUNKS_MAX);
		goto out;
	}
	if (old.data && new.size) {
		if (pg->on)
			fprintf(stderr, "\r%s: diffing image %s (%" PRIu64 " -> %" PRIu64 " bytes)...", progname, pi->name,
				old.size, new.size);
		struct fota_delta_opts dopts = { .threads = o->threads, .window_log = o->delta_window_log, .level = o->level };
		t = now_s();
		rc = fota_delta_diff(old.data, old.size, new.data, new.size, &dopts, &script, err);
		pf->diff += now_s() - t;
		if (rc) {
			fota_error_prefix(err, "image %s: diff: ", pi->name);
			goto out;
		}
	}
	im->n_chunks = (size_t)n_chunks;
	im->chunks = n_chunks ? calloc((size_t)n_chunks, sizeof(struct fota_chunk)) : NULL;
	cand = calloc((size_t)n_chunks + 1, sizeof(*cand));
	size_t batch = (size_t)o->threads * 2;
	jobs = calloc(batch, sizeof(*jobs));
	if ((n_chunks && !im->chunks) || !cand || !jobs) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	uint32_t full_wlog = ceil_log2(o->chunk_size) < 10 ? 10 : ceil_log2(o->chunk_size);
	for (size_t first = 0; first < n_chunks; first += batch) {
		size_t n = n_chunks - first < batch ? (size_t)(n_chunks - first) : batch;
		for (size_t k = 0; k < n; k++) {
			uint64_t off = (first + k) * o->chunk_size;
			uint64_t len = new.size - off < o->chunk_size ? new.size - off : o->chunk_size;
			jobs[k] = (struct chunk_job){ .target = new.data + off, .offset = off, .size = len,
						      .old = script ? &old : NULL, .script = script, .level = o->level,
						      .full_wlog = full_wlog, .delta_wlog = o->delta_window_log,
						      .max_reads = o->mode == FOTA_MODE_INPLACE ? INPLACE_MAX_READS : 1 };
		}
		run_pool(jobs, n, o->threads);
		for (size_t k = 0; k < n; k++) {
			struct chunk_job *j = &jobs[k];
			size_t c = first + k;
			pf->slice += j->t_slice;
			pf->encode += j->t_encode;
			pf->check += j->t_check;
			pf->full += j->t_full;
			if (!rc && j->rc) {
				rc = j->rc;
				*err = j->err;
			}
			if (!rc) {
				struct fota_chunk *ch = &im->chunks[c];
				struct candidates *cd = &cand[c];
				ch->target_offset = j->offset;
				ch->target_size = j->size;
				memcpy(ch->target_sha256, j->target_sha256, FOTA_SHA256_LEN);
				if (j->full) {
					cd->has_full = true;
					cd->full_len = j->full_len;
					fota_sha256(j->full, j->full_len, cd->full_sha256);
					rc = spool_put(sp, j->full, j->full_len, &cd->full_off, err);
				}
				if (!rc && j->delta && (!j->full || j->delta_len < j->full_len)) {
					cd->has_delta = true;
					cd->delta_len = j->delta_len;
					fota_sha256(j->delta, j->delta_len, cd->delta_sha256);
					rc = spool_put(sp, j->delta, j->delta_len, &cd->delta_off, err);
					ch->source_reads = j->reads;
					ch->n_source_reads = j->n_reads;
					j->reads = NULL;
				}
			}
			free(j->full);
			free(j->delta);
			free(j->reads);
			memset(j, 0, sizeof(*j));
		}
		if (rc)
			goto out;
		if (img_hash) {
			/* A full image is read once: hash this batch, then drop it from memory, so
			 * memory stays at a few chunks whatever the image size. */
			uint64_t a = first * o->chunk_size;
			uint64_t b = (first + n) * o->chunk_size < new.size ? (first + n) * o->chunk_size : new.size;
			fota_sha256_update(img_hash, new.data + a, (size_t)(b - a));
			a &= ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
			madvise((void *)(new.data + a), (size_t)(b - a), MADV_DONTNEED);
		}
		pg->done += (first + n) * o->chunk_size < new.size ? n * o->chunk_size : new.size - first * o->chunk_size;
		progress_show(pg, "packing");
	}

	if (img_hash)
		fota_sha256_final(img_hash, im->target_sha256);

	/* In-place: order, stash, and FULL where the scheme needs it. The candidates travel with their chunks. */
	to_full = calloc((size_t)n_chunks + 1, sizeof(bool));
	if (!to_full) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	if (o->mode == FOTA_MODE_INPLACE && n_chunks) {
		/* Carry each chunk's candidate index through the permutation in payload_size (reset below). */
		for (size_t c = 0; c < n_chunks; c++) {
			im->chunks[c].payload_size = c;
			if (!cand[c].has_delta) {
				free(im->chunks[c].source_reads);
				im->chunks[c].source_reads = NULL;
				im->chunks[c].n_source_reads = 0;
			}
		}
		t = now_s();
		rc = fota_inplace_plan(im->chunks, (size_t)n_chunks, o->scratch_max, to_full, stash_end, err);
		pf->inplace += now_s() - t;
		if (rc)
			goto out;
		struct candidates *perm = calloc((size_t)n_chunks, sizeof(*perm));
		if (!perm) {
			rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
			goto out;
		}
		for (size_t c = 0; c < n_chunks; c++)
			perm[c] = cand[im->chunks[c].payload_size];
		memcpy(cand, perm, (size_t)n_chunks * sizeof(*perm));
		free(perm);
	}
	/* FULL payloads the plan needs but the first pass skipped. */
	size_t n_missing = 0;
	for (size_t c = 0; c < n_chunks; c++)
		if ((to_full[c] || !cand[c].has_delta) && !cand[c].has_full)
			n_missing++;
	for (size_t c = 0; c < n_chunks && n_missing;) {
		size_t n = 0;
		size_t idx[2 * PACK_MAX_THREADS];
		for (; c < n_chunks && n < batch; c++) {
			if (!((to_full[c] || !cand[c].has_delta) && !cand[c].has_full))
				continue;
			const struct fota_chunk *ch = &im->chunks[c];
			idx[n] = c;
			jobs[n++] = (struct chunk_job){ .target = new.data + ch->target_offset, .offset = ch->target_offset,
							.size = ch->target_size, .level = o->level, .full_wlog = full_wlog };
		}
		run_pool(jobs, n, o->threads);
		for (size_t k = 0; k < n; k++) {
			struct chunk_job *j = &jobs[k];
			struct candidates *cd = &cand[idx[k]];
			pf->full += j->t_full;
			if (!rc && j->rc) {
				rc = j->rc;
				*err = j->err;
			}
			if (!rc) {
				cd->has_full = true;
				cd->full_len = j->full_len;
				fota_sha256(j->full, j->full_len, cd->full_sha256);
				rc = spool_put(sp, j->full, j->full_len, &cd->full_off, err);
			}
			free(j->full);
			memset(j, 0, sizeof(*j));
		}
		if (rc)
			goto out;
	}
	for (size_t c = 0; c < n_chunks; c++) {
		struct fota_chunk *ch = &im->chunks[c];
		const struct candidates *cd = &cand[c];
		if (cd->has_delta && !to_full[c]) {
			ch->method = FOTA_METHOD_DELTA;
			ch->payload_size = cd->delta_len;
			memcpy(ch->payload_sha256, cd->delta_sha256, FOTA_SHA256_LEN);
			*delta_used = 1;
		} else {
			ch->method = FOTA_METHOD_FULL;
			ch->payload_size = cd->full_len;
			memcpy(ch->payload_sha256, cd->full_sha256, FOTA_SHA256_LEN);
			free(ch->source_reads);
			ch->source_reads = NULL;
			ch->n_source_reads = 0;
		}
	}
	*cand_out = cand;
	cand = NULL;
out:
	fota_sha256_free(img_hash);
	free(to_full);
	free(cand);
	free(jobs);
	fota_delta_script_free(script);
	unmap_file(&old);
	unmap_file(&new);
	return rc;
}

/* ---- the package ---- */

static fota_status write_package(const struct pack_options *o, const struct fota_manifest *m, const char *mjson,
				 size_t mlen, const uint8_t *sig, size_t slen, const struct spool *sp,
				 struct candidates *const *cand, struct fota_error *err)
{
	struct fota_pkg_writer *w = NULL;
	uint64_t max_payload = 0;
	for (size_t i = 0; i < m->n_images; i++)
		for (size_t c = 0; c < m->images[i].n_chunks; c++)
			if (m->images[i].chunks[c].payload_size > max_payload)
				max_payload = m->images[i].chunks[c].payload_size;
	uint8_t *buf = malloc(max_payload ? (size_t)max_payload : 1);
	if (!buf)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	fota_status rc = fota_pkg_writer_open(o->output, &w, err);
	if (!rc)
		rc = fota_pkg_writer_add(w, "manifest.json", mjson, mlen, err);
	if (!rc && sig)
		rc = fota_pkg_writer_add(w, "manifest.sig", sig, slen, err);
	for (size_t i = 0; !rc && i < m->n_images; i++) {
		for (size_t c = 0; !rc && c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			const struct candidates *cd = &cand[i][c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(m->images[i].name, c, ch->method, name);
			rc = spool_get(sp, ch->method == FOTA_METHOD_DELTA ? cd->delta_off : cd->full_off, buf,
				       (size_t)ch->payload_size, err);
			if (!rc)
				rc = fota_pkg_writer_add(w, name, buf, (size_t)ch->payload_size, err);
		}
	}
	free(buf);
	if (rc) {
		fota_pkg_writer_abort(w);
		return rc;
	}
	return fota_pkg_writer_commit(w, err);
}

fota_status pack_build(const struct pack_options *o, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct fota_manifest *m = NULL;
	struct fota_signer *signer = NULL;
	struct candidates *cand[FOTA_IMAGES_MAX] = { 0 };
	struct spool sp = { .fd = -1 };
	char *mjson = NULL;
	uint8_t *sig = NULL;
	size_t mlen = 0, slen = 0;
	double t0 = now_s();
	struct pack_profile pf = { 0 };

	/* fota-pack's option parser enforces this too; the library must not rely on it
	 * (fill_header names the package after images[0]) */
	if (o->n_images == 0 || o->n_images > FOTA_IMAGES_MAX)
		return fota_error_set(err, FOTA_E_ARG, "pack: %zu images (give 1 to %d)", o->n_images, FOTA_IMAGES_MAX);
	if (!o->unsigned_pkg) {
		rc = fota_signer_load(o->key, o->cert, o->chain, o->pss ? FOTA_SIG_PAD_PSS : FOTA_SIG_PAD_DEFAULT, &signer, err);
		if (rc)
			goto out;
	}
	struct progress pg = { .on = !o->quiet && isatty(STDERR_FILENO), .t0 = t0 };
	for (size_t i = 0; i < o->n_images; i++) {
		struct stat st;
		if (stat(o->images[i].new_path, &st) == 0)
			pg.total += (uint64_t)st.st_size;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	rc = fill_header(o, m, err);
	if (rc)
		goto out;
	sp.fd = open_spool(o->output, err);
	if (sp.fd < 0) {
		rc = err->code;
		goto out;
	}
	uint64_t stash_end = 0, staged = 0;
	uint32_t delta_used = 0;
	for (size_t i = 0; i < o->n_images; i++) {
		uint64_t se = 0;
		rc = build_image(o, &o->images[i], &m->images[i], &sp, &cand[i], &se, &delta_used, &pg, &pf, err);
		if (rc)
			goto out;
		if (se > stash_end)
			stash_end = se;
	}
	if (pg.on) {
		pg.done = pg.total;
		progress_show(&pg, "packing");
		fputc('\n', stderr);
	}
	uint32_t wlog = ceil_log2(o->chunk_size) < 10 ? 10 : ceil_log2(o->chunk_size);
	if (delta_used && o->delta_window_log > wlog)
		wlog = o->delta_window_log;
	m->window_log = wlog > 27 ? 27 : wlog;
	if (o->mode == FOTA_MODE_INPLACE) {
		for (size_t i = 0; i < m->n_images; i++)
			for (size_t c = 0; c < m->images[i].n_chunks; c++)
				if (fota_inplace_self_overlap(&m->images[i].chunks[c]) && m->images[i].chunks[c].target_size > staged)
					staged = m->images[i].chunks[c].target_size;
		m->scratch_size = stash_end + staged;
	}

	double tw = now_s();
	rc = fota_manifest_serialize(m, &mjson, &mlen, err);
	if (rc)
		goto out;
	if (signer) {
		int64_t when = -1;
		const char *sde = getenv("SOURCE_DATE_EPOCH");
		uint64_t v;
		if (sde && *sde) {
			if (fota_parse_u64(sde, &v) != 0 || v > INT64_MAX) {
				rc = fota_error_set(err, FOTA_E_ARG, "SOURCE_DATE_EPOCH: not a Unix time: %s", sde);
				goto out;
			}
			when = (int64_t)v;
		}
		rc = fota_sig_sign(signer, (const uint8_t *)mjson, mlen, when, &sig, &slen, err);
		if (rc)
			goto out;
	}
	rc = write_package(o, m, mjson, mlen, sig, slen, &sp, cand, err);
	if (rc)
		goto out;
	pf.write = now_s() - tw;

	uint64_t pkg_size = fota_pkg_head_size(mlen, slen) + 2 * FOTA_TAR_BLOCK, target_total = 0;
	for (size_t i = 0; i < m->n_images; i++) {
		target_total += m->images[i].target_size;
		for (size_t c = 0; c < m->images[i].n_chunks; c++)
			pkg_size += fota_pkg_member_span(m->images[i].chunks[c].payload_size);
	}
	if (o->json) {
		json_t *js = summary_json(m, pkg_size);
		json_object_set_new(js, "output", json_string(o->output));
		json_object_set_new(js, "signed", json_boolean(signer != NULL));
		json_object_set_new(js, "manifest_bytes", json_integer((json_int_t)mlen));
		json_object_set_new(js, "signature_bytes", json_integer((json_int_t)slen));
		json_object_set_new(js, "seconds", json_real(now_s() - t0));
		json_t *jp = json_object();
		json_object_set_new(jp, "hash", json_real(pf.hash));
		json_object_set_new(jp, "diff", json_real(pf.diff));
		json_object_set_new(jp, "slice", json_real(pf.slice));
		json_object_set_new(jp, "encode", json_real(pf.encode));
		json_object_set_new(jp, "self_check", json_real(pf.check));
		json_object_set_new(jp, "full", json_real(pf.full));
		json_object_set_new(jp, "inplace_plan", json_real(pf.inplace));
		json_object_set_new(jp, "sign_and_write", json_real(pf.write));
		json_object_set_new(js, "profile_seconds", jp);
		json_dumpf(js, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(js);
	}
	if (!o->quiet)
		fprintf(stderr, "%s: wrote %s: %" PRIu64 " bytes (%.2f%% of %" PRIu64 " target bytes), %zu chunks, %.1fs\n",
			progname, o->output, pkg_size, target_total ? 100.0 * (double)pkg_size / (double)target_total : 0.0,
			target_total, fota_manifest_chunk_count(m), now_s() - t0);
out:
	for (size_t i = 0; i < FOTA_IMAGES_MAX; i++)
		free(cand[i]);
	free(mjson);
	free(sig);
	if (sp.fd >= 0)
		close(sp.fd);
	fota_manifest_free(m);
	fota_signer_free(signer);
	return rc;
}
