/*
 * fota-pack: turn a target firmware image into a signed, chunked package
 * (formats/FORMAT.md). Build side: runs in an operator's release pipeline.
 *
 * The image is cut into chunks; each chunk's payload is compressed (zstd) on a pool
 * of threads, spooled to an unlinked temporary file next to the output, and then the
 * archive is written: manifest.json, manifest.sig, payloads. The output is staged as
 * OUT.tmp and renamed only when complete, so a failure leaves no package behind.
 * Every chunk is independent, so the bytes never depend on the thread count.
 *
 * External signing (HSM, corporate PKI): --unsigned writes the package without
 * manifest.sig; `fota-pack --attach-signature SIG -o OUT UNSIGNED` inserts a detached
 * CMS signature made elsewhere (e.g. `openssl cms -sign`).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "fota/container.h"
#include "fota/hash.h"
#include "fota/manifest.h"
#include "fota/sig.h"
#include "fota/util.h"

#define PACK_VERSION "0.1.0"
#define DEFAULT_CHUNK (1u << 20)
#define DEFAULT_LEVEL 19
#define MAX_THREADS 64

/* Exit codes: one table, documented in --help and docs/fota-pack.md. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,     /* any failure not listed below */
	EXIT_USAGE = 2,    /* bad command line */
	EXIT_IO = 3,       /* an input could not be read or the output written */
	EXIT_CRYPTO = 4,   /* key, certificate or signature problem */
	EXIT_LIMIT = 5,    /* an input exceeds a format limit */
	EXIT_INPUT = 6,    /* --attach-signature: the unsigned package or signature is invalid */
	EXIT_INTERNAL = 70,
};

static int exit_code_for(fota_status st)
{
	switch (st) {
	case FOTA_OK: return EXIT_OK;
	case FOTA_E_ARG: return EXIT_USAGE;
	case FOTA_E_IO: return EXIT_IO;
	case FOTA_E_CRYPTO: case FOTA_E_SIGNATURE: case FOTA_E_TRUST: return EXIT_CRYPTO;
	case FOTA_E_LIMIT: return EXIT_LIMIT;
	case FOTA_E_FORMAT: case FOTA_E_MANIFEST: case FOTA_E_INTEGRITY: case FOTA_E_UNSUPPORTED:
		return EXIT_INPUT;
	case FOTA_E_INTERNAL: return EXIT_INTERNAL;
	default: return EXIT_FAIL;
	}
}

struct options {
	const char *to;
	const char *output;
	const char *key, *cert, *chain;
	bool pss;
	bool unsigned_pkg;
	const char *attach_sig;
	const char *attach_in;
	const char *trust_check; /* optional root for --attach-signature */
	uint64_t chunk_size;
	const char *name, *version, *from_version;
	const char *image_name;
	const char *models[FOTA_MODELS_MAX];
	size_t n_models;
	uint64_t security_version;
	int64_t expires;
	int priority, roaming;
	bool silent;
	const char *install_message;
	unsigned threads;
	int level;
	bool json, quiet;
};

static const char *progname = "fota-pack";

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fota-pack --to NEW.img --key KEY.pem --cert CERT.pem [options] -o OUT.fota\n"
"       fota-pack --to NEW.img --unsigned [options] -o OUT.unsigned\n"
"       fota-pack --attach-signature MANIFEST.sig [--trust ROOT.pem] -o OUT.fota UNSIGNED\n"
"\n"
"Build a signed, chunked firmware package (formats/FORMAT.md).\n"
"\n"
"Inputs and signing:\n"
"  --to FILE              target image (what the device ends up with)\n"
"  --key FILE             signer private key, PEM (ECDSA P-256, Ed25519, RSA >= 2048)\n"
"  --cert FILE            signer certificate, PEM\n"
"  --chain FILE           intermediate CA certificates to embed, PEM\n"
"  --pss                  sign with RSA-PSS (RSA keys only)\n"
"  --unsigned             write no signature (sign manifest.json elsewhere, then\n"
"                         --attach-signature)\n"
"  --attach-signature SIG insert a detached DER CMS signature of manifest.json into\n"
"                         the unsigned package UNSIGNED; with --trust the signature is\n"
"                         checked first\n"
"  -o, --output FILE      package to write (staged as FILE.tmp, renamed when complete)\n"
"\n"
"Manifest:\n"
"  --name NAME            package name (FUMO PkgName)           default: the image file name\n"
"  --version VER          package version (FUMO PkgVersion)     default: 1\n"
"  --from-version VER     source firmware version it updates from\n"
"  --image-name NAME      partition name, [a-z0-9_-]{1,32}      default: system\n"
"  --device-model MODEL   device model it applies to (repeatable; none = any model)\n"
"  --security-version N   rollback floor value                  default: 0\n"
"  --expires TIME         expiry, YYYY-MM-DDTHH:MM:SSZ          default: none\n"
"  --priority P           SI priority low|medium|high           default: medium\n"
"  --silent               download without asking the user\n"
"  --roaming R            allow|deny|wifi-only                  default: deny\n"
"  --install-message TEXT message shown when asking to install\n"
"\n"
"Chunking and speed:\n"
"  --chunk-size SIZE      target bytes per chunk, 4K..64M (K/M suffixes) default: 1M\n"
"  --level N              zstd level 1..22                      default: 19\n"
"  --threads N            worker threads; output is identical for any N  default: all cores\n"
"\n"
"Output:\n"
"  --json                 print a JSON summary on stdout\n"
"  --quiet                no progress or summary on stderr\n"
"  -h, --help             this help\n"
"  -V                     print the program version (also: --version alone)\n"
"\n"
"Environment: SOURCE_DATE_EPOCH, when set, is recorded as the CMS signing time;\n"
"otherwise the signature carries no time, so Ed25519 and RSA PKCS#1 v1.5 packages\n"
"are byte-identical across runs.\n"
"\n"
"Exit status: 0 success; 1 other failure; 2 usage error; 3 I/O error; 4 key,\n"
"certificate or signature error; 5 an input exceeds a format limit; 6 invalid\n"
"unsigned package or signature (--attach-signature); 70 internal error.\n");
}

static int die_usage(const char *fmt, ...) FOTA_PRINTF(1, 2);
static int die_usage(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", progname);
	return EXIT_USAGE;
}

/* ---- chunk compression on a thread pool ---- */

struct job {
	int fd;                 /* target image */
	uint64_t offset, size;  /* target range */
	int level;
	uint32_t window_log;
	uint8_t *payload;       /* out: malloc'd */
	size_t payload_len;
	uint8_t target_sha256[FOTA_SHA256_LEN];
	uint8_t payload_sha256[FOTA_SHA256_LEN];
	uint8_t *raw;           /* out: the target bytes, for the whole-image hash */
	fota_status rc;
	struct fota_error err;
};

struct pool {
	struct job *jobs;
	size_t n;
	size_t next;
	pthread_mutex_t lock;
};

static void run_job(struct job *j)
{
	j->raw = malloc(j->size ? j->size : 1);
	size_t bound = ZSTD_compressBound(j->size);
	j->payload = malloc(bound);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	if (!j->raw || !j->payload || !cctx) {
		j->rc = fota_error_set(&j->err, FOTA_E_NOMEM, "chunk at %" PRIu64 ": out of memory", j->offset);
		goto out;
	}
	uint64_t done = 0;
	while (done < j->size) {
		ssize_t n = pread(j->fd, j->raw + done, j->size - done, (off_t)(j->offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			j->rc = fota_error_set(&j->err, FOTA_E_IO, "target image: read at %" PRIu64 ": %s",
					       j->offset + done, n < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		done += (uint64_t)n;
	}
	fota_sha256(j->raw, j->size, j->target_sha256);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, j->level);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, (int)j->window_log);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	size_t z = ZSTD_compress2(cctx, j->payload, bound, j->raw, j->size);
	if (ZSTD_isError(z)) {
		j->rc = fota_error_set(&j->err, FOTA_E_COMPRESS, "chunk at %" PRIu64 ": zstd: %s", j->offset,
				       ZSTD_getErrorName(z));
		goto out;
	}
	j->payload_len = z;
	fota_sha256(j->payload, z, j->payload_sha256);
	j->rc = FOTA_OK;
out:
	ZSTD_freeCCtx(cctx);
}

static void *worker(void *arg)
{
	struct pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t i = p->next < p->n ? p->next++ : p->n;
		pthread_mutex_unlock(&p->lock);
		if (i >= p->n)
			return NULL;
		run_job(&p->jobs[i]);
	}
}

static void run_pool(struct job *jobs, size_t n, unsigned threads)
{
	struct pool p = { .jobs = jobs, .n = n, .next = 0 };
	pthread_mutex_init(&p.lock, NULL);
	pthread_t tids[MAX_THREADS];
	unsigned started = 0;
	for (unsigned t = 1; t < threads && t < n; t++)
		if (pthread_create(&tids[started], NULL, worker, &p) == 0)
			started++;
	worker(&p);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	pthread_mutex_destroy(&p.lock);
}

/* ---- progress ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(bool on, uint64_t done, uint64_t total, double t0)
{
	if (!on)
		return;
	double el = now_s() - t0;
	double rate = el > 0 ? (double)done / el : 0;
	double eta = rate > 0 ? (double)(total - done) / rate : 0;
	fprintf(stderr, "\rpacking %5.1f%%  %7.1f MB/s  ETA %4.0fs ", total ? 100.0 * (double)done / (double)total : 100.0,
		rate / 1e6, eta);
	if (done == total)
		fputc('\n', stderr);
	fflush(stderr);
}

/* ---- build ---- */

static uint32_t window_log_for(uint64_t chunk)
{
	uint32_t w = 10;
	while (w < 27 && (1ull << w) < chunk)
		w++;
	return w;
}

static fota_status spool_write(int fd, const void *data, size_t len, struct fota_error *err)
{
	const uint8_t *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fota_error_set(err, FOTA_E_IO, "spool: write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return FOTA_OK;
}

static fota_status spool_read(int fd, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
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

static char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return strdup(s ? s + 1 : path);
}

/* Open a spool file next to the output and unlink it at once: it vanishes with us. */
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

static json_t *summary_json(const struct fota_manifest *m, uint64_t pkg_size)
{
	json_t *root = json_object();
	json_object_set_new(root, "package", json_string(m->name));
	json_object_set_new(root, "version", json_string(m->version));
	json_object_set_new(root, "package_bytes", json_integer((json_int_t)pkg_size));
	json_t *imgs = json_array();
	uint64_t total_target = 0;
	for (size_t i = 0; i < m->n_images; i++) {
		const struct fota_image *im = &m->images[i];
		json_t *ji = json_object();
		uint64_t payload = 0;
		json_t *chunks = json_array();
		for (size_t c = 0; c < im->n_chunks; c++) {
			const struct fota_chunk *ch = &im->chunks[c];
			payload += ch->payload_size;
			json_t *jc = json_object();
			json_object_set_new(jc, "target_offset", json_integer((json_int_t)ch->target_offset));
			json_object_set_new(jc, "target_bytes", json_integer((json_int_t)ch->target_size));
			json_object_set_new(jc, "method", json_string(fota_method_name(ch->method)));
			json_object_set_new(jc, "payload_bytes", json_integer((json_int_t)ch->payload_size));
			json_array_append_new(chunks, jc);
		}
		total_target += im->target_size;
		json_object_set_new(ji, "name", json_string(im->name));
		json_object_set_new(ji, "target_bytes", json_integer((json_int_t)im->target_size));
		json_object_set_new(ji, "payload_bytes", json_integer((json_int_t)payload));
		json_object_set_new(ji, "ratio", json_real(im->target_size ? (double)payload / (double)im->target_size : 0));
		json_object_set_new(ji, "chunks", chunks);
		json_array_append_new(imgs, ji);
	}
	json_object_set_new(root, "target_bytes", json_integer((json_int_t)total_target));
	json_object_set_new(root, "ratio", json_real(total_target ? (double)pkg_size / (double)total_target : 0));
	json_object_set_new(root, "images", imgs);
	return root;
}

static fota_status write_package(const struct options *o, const struct fota_manifest *m,
				 const char *mjson, size_t mlen, const uint8_t *sig, size_t slen,
				 int spool_fd, const uint64_t *spool_off, struct fota_error *err)
{
	struct fota_pkg_writer *w = NULL;
	uint8_t *buf = NULL;
	fota_status rc = fota_pkg_writer_open(o->output, &w, err);
	if (rc)
		return rc;
	rc = fota_pkg_writer_add(w, "manifest.json", mjson, mlen, err);
	if (!rc && sig)
		rc = fota_pkg_writer_add(w, "manifest.sig", sig, slen, err);
	buf = malloc(FOTA_PAYLOAD_MAX);
	if (!rc && !buf)
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; !rc && i < m->n_images; i++) {
		for (size_t c = 0; !rc && c < m->images[i].n_chunks; c++, k++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(m->images[i].name, c, ch->method, name);
			rc = spool_read(spool_fd, spool_off[k], buf, ch->payload_size, err);
			if (!rc)
				rc = fota_pkg_writer_add(w, name, buf, ch->payload_size, err);
		}
	}
	free(buf);
	if (rc) {
		fota_pkg_writer_abort(w);
		return rc;
	}
	return fota_pkg_writer_commit(w, err);
}

static fota_status build(const struct options *o, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct fota_manifest *m = NULL;
	struct fota_signer *signer = NULL;
	struct job *jobs = NULL;
	uint64_t *spool_off = NULL;
	char *mjson = NULL;
	uint8_t *sig = NULL;
	size_t mlen = 0, slen = 0;
	int fd = -1, spool = -1;
	struct fota_sha256 *img_hash = NULL;

	if (!o->unsigned_pkg) {
		rc = fota_signer_load(o->key, o->cert, o->chain, o->pss ? FOTA_SIG_PAD_PSS : FOTA_SIG_PAD_DEFAULT,
				      &signer, err);
		if (rc)
			goto out;
	}
	fd = open(o->to, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: %s", o->to, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: not a regular file or block device", o->to);
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size > FOTA_IMAGE_SIZE_MAX) {
		rc = fota_error_set(err, FOTA_E_LIMIT, "%s: %" PRIu64 " bytes, limit %llu", o->to, size,
				    (unsigned long long)FOTA_IMAGE_SIZE_MAX);
		goto out;
	}
	uint64_t n_chunks = (size + o->chunk_size - 1) / o->chunk_size;
	if (n_chunks > FOTA_CHUNKS_MAX) {
		rc = fota_error_set(err, FOTA_E_LIMIT,
				    "%s: %" PRIu64 " chunks of %" PRIu64 " bytes exceed the limit of %u chunks; use a larger --chunk-size",
				    o->to, n_chunks, o->chunk_size, FOTA_CHUNKS_MAX);
		goto out;
	}

	m = calloc(1, sizeof(*m));
	if (!m) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	m->format_version = FOTA_FORMAT_VERSION;
	m->name = o->name ? strdup(o->name) : base_name(o->to);
	m->version = strdup(o->version ? o->version : "1");
	m->from_version = o->from_version ? strdup(o->from_version) : NULL;
	m->n_models = o->n_models;
	m->models = o->n_models ? calloc(o->n_models, sizeof(char *)) : NULL;
	for (size_t i = 0; m->models && i < o->n_models; i++)
		m->models[i] = strdup(o->models[i]);
	m->security_version = o->security_version;
	m->expires = o->expires;
	m->mode = FOTA_MODE_AB;
	m->window_log = window_log_for(o->chunk_size);
	m->policy.priority = (enum fota_priority)o->priority;
	m->policy.silent = o->silent;
	m->policy.roaming = (enum fota_roaming)o->roaming;
	m->policy.install_message = o->install_message ? strdup(o->install_message) : NULL;
	m->n_images = 1;
	m->images = calloc(1, sizeof(struct fota_image));
	if (!m->name || !m->version || !m->images || (o->n_models && !m->models)) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	struct fota_image *im = &m->images[0];
	snprintf(im->name, sizeof(im->name), "%s", o->image_name);
	im->target_size = size;
	im->n_chunks = (size_t)n_chunks;
	im->chunks = n_chunks ? calloc((size_t)n_chunks, sizeof(struct fota_chunk)) : NULL;
	spool_off = calloc((size_t)n_chunks + 1, sizeof(uint64_t));
	img_hash = fota_sha256_new();
	if ((n_chunks && !im->chunks) || !spool_off || !img_hash) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	spool = open_spool(o->output, err);
	if (spool < 0) {
		rc = err->code;
		goto out;
	}

	bool show = !o->quiet && isatty(STDERR_FILENO);
	double t0 = now_s();
	size_t batch = (size_t)o->threads * 2;
	jobs = calloc(batch, sizeof(*jobs));
	if (!jobs) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	uint64_t spooled = 0;
	for (size_t first = 0; first < n_chunks; first += batch) {
		size_t n = n_chunks - first < batch ? (size_t)(n_chunks - first) : batch;
		for (size_t j = 0; j < n; j++) {
			uint64_t off = (first + j) * o->chunk_size;
			jobs[j] = (struct job){ .fd = fd, .offset = off,
						.size = size - off < o->chunk_size ? size - off : o->chunk_size,
						.level = o->level, .window_log = m->window_log };
		}
		run_pool(jobs, n, o->threads);
		for (size_t j = 0; j < n; j++) {
			struct job *jb = &jobs[j];
			if (!rc && jb->rc) {
				rc = jb->rc;
				*err = jb->err;
			}
			if (!rc) {
				struct fota_chunk *ch = &im->chunks[first + j];
				ch->target_offset = jb->offset;
				ch->target_size = jb->size;
				memcpy(ch->target_sha256, jb->target_sha256, FOTA_SHA256_LEN);
				ch->method = FOTA_METHOD_FULL;
				ch->payload_size = jb->payload_len;
				memcpy(ch->payload_sha256, jb->payload_sha256, FOTA_SHA256_LEN);
				fota_sha256_update(img_hash, jb->raw, jb->size);
				spool_off[first + j] = spooled;
				rc = spool_write(spool, jb->payload, jb->payload_len, err);
				spooled += jb->payload_len;
			}
			free(jb->payload);
			free(jb->raw);
			jb->payload = jb->raw = NULL;
		}
		if (rc)
			goto out;
		progress(show, (first + n) * o->chunk_size < size ? (first + n) * o->chunk_size : size, size, t0);
	}
	if (n_chunks == 0)
		progress(show, 0, 0, t0);
	fota_sha256_final(img_hash, im->target_sha256);

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
	rc = write_package(o, m, mjson, mlen, sig, slen, spool, spool_off, err);
	if (rc)
		goto out;

	uint64_t pkg_size = fota_pkg_head_size(mlen, slen) + 2 * FOTA_TAR_BLOCK;
	for (size_t c = 0; c < im->n_chunks; c++)
		pkg_size += fota_pkg_member_span(im->chunks[c].payload_size);
	if (o->json) {
		json_t *js = summary_json(m, pkg_size);
		json_object_set_new(js, "output", json_string(o->output));
		json_object_set_new(js, "signed", json_boolean(signer != NULL));
		json_dumpf(js, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
		json_decref(js);
	}
	if (!o->quiet)
		fprintf(stderr, "%s: wrote %s: %" PRIu64 " bytes (%.1f%% of the %" PRIu64 "-byte image), %zu chunks, %.1fs\n",
			progname, o->output, pkg_size, size ? 100.0 * (double)pkg_size / (double)size : 0.0, size,
			im->n_chunks, now_s() - t0);
out:
	fota_sha256_free(img_hash);
	free(jobs);
	free(spool_off);
	free(mjson);
	free(sig);
	if (fd >= 0)
		close(fd);
	if (spool >= 0)
		close(spool);
	fota_manifest_free(m);
	fota_signer_free(signer);
	return rc;
}

/* ---- attach an external signature ---- */

static fota_status attach(const struct options *o, struct fota_error *err)
{
	struct fota_pkg_reader *r = NULL;
	struct fota_pkg_writer *w = NULL;
	struct fota_manifest *m = NULL;
	struct fota_trust *trust = NULL;
	uint8_t *mj = NULL, *sig = NULL, *buf = NULL;
	size_t mlen = 0, slen = 0;
	fota_status rc = fota_read_file(o->attach_sig, FOTA_SIG_MAX, &sig, &slen, err);
	if (rc)
		goto out;
	if (slen == 0) {
		rc = fota_error_set(err, FOTA_E_SIGNATURE, "%s: empty signature", o->attach_sig);
		goto out;
	}
	rc = fota_pkg_reader_open(o->attach_in, &r, err);
	if (!rc)
		rc = fota_pkg_read_head(r, &mj, &mlen, NULL, NULL, err);
	if (!rc)
		rc = fota_manifest_parse(mj, mlen, &m, err);
	if (rc)
		goto out;
	if (o->trust_check) {
		const char *paths[1] = { o->trust_check };
		struct fota_sig_info info;
		rc = fota_trust_load(paths, 1, NULL, &trust, err);
		if (!rc)
			rc = fota_sig_verify(trust, mj, mlen, sig, slen, 0, &info, err);
		if (rc)
			goto out;
		if (!o->quiet)
			fprintf(stderr, "%s: signature by %s verified\n", progname, info.signer);
	}
	buf = malloc(FOTA_PAYLOAD_MAX);
	if (!buf) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	rc = fota_pkg_writer_open(o->output, &w, err);
	if (!rc)
		rc = fota_pkg_writer_add(w, "manifest.json", mj, mlen, err);
	if (!rc)
		rc = fota_pkg_writer_add(w, "manifest.sig", sig, slen, err);
	uint64_t off = fota_pkg_head_size(mlen, 0);
	for (size_t i = 0; !rc && i < m->n_images; i++) {
		for (size_t c = 0; !rc && c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(m->images[i].name, c, ch->method, name);
			rc = fota_pkg_read_member(r, name, ch->payload_size, off, buf, err);
			if (!rc) {
				uint8_t d[FOTA_SHA256_LEN];
				fota_sha256(buf, ch->payload_size, d);
				if (memcmp(d, ch->payload_sha256, FOTA_SHA256_LEN) != 0)
					rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: sha256 does not match the manifest", name);
			}
			if (!rc)
				rc = fota_pkg_writer_add(w, name, buf, ch->payload_size, err);
			off += fota_pkg_member_span(ch->payload_size);
		}
	}
	if (!rc)
		rc = fota_pkg_read_end(r, err);
	if (rc) {
		fota_pkg_writer_abort(w);
		w = NULL;
		goto out;
	}
	rc = fota_pkg_writer_commit(w, err);
	w = NULL;
	if (!rc && !o->quiet)
		fprintf(stderr, "%s: wrote %s\n", progname, o->output);
out:
	fota_pkg_writer_abort(w);
	fota_pkg_reader_close(r);
	fota_manifest_free(m);
	fota_trust_free(trust);
	free(mj);
	free(sig);
	free(buf);
	return rc;
}

/* ---- command line ---- */

enum {
	OPT_TO = 256, OPT_KEY, OPT_CERT, OPT_CHAIN, OPT_PSS, OPT_UNSIGNED, OPT_ATTACH, OPT_TRUST,
	OPT_CHUNK, OPT_NAME, OPT_VER, OPT_FROMVER, OPT_IMAGE, OPT_MODEL, OPT_SECVER, OPT_EXPIRES,
	OPT_PRIO, OPT_SILENT, OPT_ROAM, OPT_MSG, OPT_THREADS, OPT_LEVEL, OPT_JSON, OPT_QUIET,
};

static bool valid_image_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FOTA_IMAGE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "to", required_argument, NULL, OPT_TO },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "chain", required_argument, NULL, OPT_CHAIN },
		{ "pss", no_argument, NULL, OPT_PSS },
		{ "unsigned", no_argument, NULL, OPT_UNSIGNED },
		{ "attach-signature", required_argument, NULL, OPT_ATTACH },
		{ "trust", required_argument, NULL, OPT_TRUST },
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "version", required_argument, NULL, OPT_VER },
		{ "from-version", required_argument, NULL, OPT_FROMVER },
		{ "image-name", required_argument, NULL, OPT_IMAGE },
		{ "device-model", required_argument, NULL, OPT_MODEL },
		{ "security-version", required_argument, NULL, OPT_SECVER },
		{ "expires", required_argument, NULL, OPT_EXPIRES },
		{ "priority", required_argument, NULL, OPT_PRIO },
		{ "silent", no_argument, NULL, OPT_SILENT },
		{ "roaming", required_argument, NULL, OPT_ROAM },
		{ "install-message", required_argument, NULL, OPT_MSG },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "level", required_argument, NULL, OPT_LEVEL },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "print-version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { .chunk_size = DEFAULT_CHUNK, .image_name = "system", .priority = FOTA_PRIO_MEDIUM,
			     .roaming = FOTA_ROAM_DENY, .level = DEFAULT_LEVEL };
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	o.threads = cores > 0 ? (unsigned)(cores > MAX_THREADS ? MAX_THREADS : cores) : 1;
	uint64_t v;
	int c;
	/* "--version VER" sets the package version (FUMO PkgVersion); "--version" alone, or -V,
	 * prints the program version. */
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("fota-pack %s (format %d)\n", PACK_VERSION, FOTA_FORMAT_VERSION);
		return EXIT_OK;
	}
	while ((c = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_TO: o.to = optarg; break;
		case OPT_KEY: o.key = optarg; break;
		case OPT_CERT: o.cert = optarg; break;
		case OPT_CHAIN: o.chain = optarg; break;
		case OPT_PSS: o.pss = true; break;
		case OPT_UNSIGNED: o.unsigned_pkg = true; break;
		case OPT_ATTACH: o.attach_sig = optarg; break;
		case OPT_TRUST: o.trust_check = optarg; break;
		case OPT_CHUNK:
			if (fota_parse_size(optarg, &v) != 0 || v < FOTA_CHUNK_SIZE_MIN || v > FOTA_CHUNK_SIZE_MAX)
				return die_usage("--chunk-size: '%s' is not a size between 4K and 64M", optarg);
			o.chunk_size = v;
			break;
		case OPT_NAME: o.name = optarg; break;
		case OPT_VER: o.version = optarg; break;
		case OPT_FROMVER: o.from_version = optarg; break;
		case OPT_IMAGE:
			if (!valid_image_name(optarg))
				return die_usage("--image-name: '%s' must be 1-32 characters of a-z 0-9 _ -", optarg);
			o.image_name = optarg;
			break;
		case OPT_MODEL:
			if (o.n_models >= FOTA_MODELS_MAX)
				return die_usage("--device-model: at most %d models", FOTA_MODELS_MAX);
			o.models[o.n_models++] = optarg;
			break;
		case OPT_SECVER:
			if (fota_parse_u64(optarg, &v) != 0 || v > (1ull << 53))
				return die_usage("--security-version: '%s' is not a non-negative integer", optarg);
			o.security_version = v;
			break;
		case OPT_EXPIRES:
			if (fota_time_parse(optarg, &o.expires) != 0 || o.expires <= 0)
				return die_usage("--expires: '%s' is not YYYY-MM-DDTHH:MM:SSZ", optarg);
			break;
		case OPT_PRIO:
			if ((o.priority = fota_priority_parse(optarg)) < 0)
				return die_usage("--priority: '%s' is not low, medium or high", optarg);
			break;
		case OPT_SILENT: o.silent = true; break;
		case OPT_ROAM:
			if ((o.roaming = fota_roaming_parse(optarg)) < 0)
				return die_usage("--roaming: '%s' is not allow, deny or wifi-only", optarg);
			break;
		case OPT_MSG: o.install_message = optarg; break;
		case OPT_THREADS:
			if (fota_parse_u64(optarg, &v) != 0 || v < 1 || v > MAX_THREADS)
				return die_usage("--threads: '%s' is not between 1 and %d", optarg, MAX_THREADS);
			o.threads = (unsigned)v;
			break;
		case OPT_LEVEL:
			if (fota_parse_u64(optarg, &v) != 0 || v < 1 || v > 22)
				return die_usage("--level: '%s' is not between 1 and 22", optarg);
			o.level = (int)v;
			break;
		case OPT_JSON: o.json = true; break;
		case OPT_QUIET: o.quiet = true; break;
		case 'o': o.output = optarg; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf("fota-pack %s (format %d)\n", PACK_VERSION, FOTA_FORMAT_VERSION); return EXIT_OK;
		default: fprintf(stderr, "Try '%s --help'.\n", progname); return EXIT_USAGE;
		}
	}
	if (!o.output)
		return die_usage("missing -o OUT");
	struct fota_error err = { 0 };
	fota_status rc;
	if (o.attach_sig) {
		if (optind != argc - 1)
			return die_usage("--attach-signature needs exactly one UNSIGNED package argument");
		if (o.to || o.key || o.cert)
			return die_usage("--attach-signature does not take --to, --key or --cert");
		o.attach_in = argv[optind];
		rc = attach(&o, &err);
	} else {
		if (optind != argc)
			return die_usage("unexpected argument '%s'", argv[optind]);
		if (!o.to)
			return die_usage("missing --to NEW.img");
		if (o.unsigned_pkg && (o.key || o.cert || o.chain))
			return die_usage("--unsigned does not take --key, --cert or --chain");
		if (!o.unsigned_pkg && (!o.key || !o.cert))
			return die_usage("missing --key and --cert (or --unsigned)");
		rc = build(&o, &err);
	}
	if (rc) {
		fprintf(stderr, "%s: %s\n", progname, err.msg[0] ? err.msg : fota_strerror(rc));
		return exit_code_for(rc);
	}
	return EXIT_OK;
}
