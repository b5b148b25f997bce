/*
 * fota-verify: prove who signed a package, that every byte of it is intact, and that
 * it rebuilds the target image (from the source, for a delta). For auditors and CI gates.
 *
 * Order of checks (FORMAT.md, "Verification"): container head with size caps ->
 * CMS signature and chain -> manifest schema -> expiry -> source image hash -> for each
 * payload: size and SHA-256, then decompress or patch, then the chunk's target hash ->
 * each image's target hash -> the archive ends exactly where the manifest says. No
 * payload byte reaches zstd or the patch interpreter before its hash matched, and
 * nothing is written unless --output is given (staged as FILE.tmp, renamed only when
 * the whole package verified).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
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
#include "fota/delta.h"
#include "fota/hash.h"
#include "fota/manifest.h"
#include "fota/sig.h"
#include "fota/util.h"

#define VERIFY_VERSION "0.1.0"
#define MAX_TRUST 16
#define OUTBUF (256u << 10)

/* Exit codes: one table, documented in --help and docs/fota-verify.md. */
enum {
	EXIT_VALID = 0,
	EXIT_FAIL = 1,      /* any failure not listed below */
	EXIT_USAGE = 2,     /* bad command line */
	EXIT_IO = 3,        /* a file could not be read, or --output written */
	EXIT_FORMAT = 4,    /* malformed container or manifest, a limit exceeded, unsupported version */
	EXIT_SIGNATURE = 5, /* signature invalid, or signer untrusted / expired / revoked / wrong usage */
	EXIT_INTEGRITY = 6, /* a payload or target size or SHA-256 differs from the manifest */
	EXIT_SOURCE = 7,    /* the source image does not match the manifest */
	EXIT_EXPIRED = 8,   /* the package's expiry time has passed */
	EXIT_INTERNAL = 70,
};

static int exit_code_for(fota_status st)
{
	switch (st) {
	case FOTA_OK: return EXIT_VALID;
	case FOTA_E_ARG: return EXIT_USAGE;
	case FOTA_E_IO: return EXIT_IO;
	case FOTA_E_FORMAT: case FOTA_E_MANIFEST: case FOTA_E_LIMIT: case FOTA_E_UNSUPPORTED:
		return EXIT_FORMAT;
	case FOTA_E_SIGNATURE: case FOTA_E_TRUST: case FOTA_E_CRYPTO: return EXIT_SIGNATURE;
	case FOTA_E_INTEGRITY: case FOTA_E_COMPRESS: case FOTA_E_PATCH: return EXIT_INTEGRITY;
	case FOTA_E_SOURCE: return EXIT_SOURCE;
	case FOTA_E_EXPIRED: return EXIT_EXPIRED;
	case FOTA_E_INTERNAL: return EXIT_INTERNAL;
	default: return EXIT_FAIL;
	}
}

static const char *progname = "fota-verify";

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fota-verify --trust ROOT.pem [--trust ROOT2.pem]... [options] PKG.fota\n"
"\n"
"Check a package's signature, chain of trust, manifest and every payload, and rebuild\n"
"each target image in a streaming pass to check its SHA-256.\n"
"\n"
"  --trust FILE         trusted root CA certificates, PEM (repeatable; at least one)\n"
"  --crl FILE           certificate revocation list to check the signer against\n"
"  --source [IMAGE=]OLD source image of a delta package (IMAGE= when it has several)\n"
"  --output [IMAGE=]NEW write the rebuilt target image (only when everything verified)\n"
"  --at TIME            judge certificate validity and package expiry at TIME\n"
"                       (YYYY-MM-DDTHH:MM:SSZ or Unix seconds) instead of now\n"
"  --json               print the report as JSON on stdout\n"
"  --quiet              print nothing; the exit status tells the result\n"
"  -h, --help           this help;  -V, --version  print the version\n"
"\n"
"Without --source, a delta package's payloads are checked but its targets are not\n"
"rebuilt; the report says so.\n"
"\n"
"Exit status:\n"
"  0  the package is valid (and rebuilt its targets where a source was given)\n"
"  1  other failure\n"
"  2  usage error\n"
"  3  I/O error: a file could not be read, or --output written\n"
"  4  format error: malformed container or manifest, a limit exceeded, unsupported version\n"
"  5  signature invalid, or the signer is untrusted, expired, revoked or has the wrong usage\n"
"  6  integrity failure: a payload or target size or SHA-256 differs from the manifest\n"
"  7  the source image does not match the manifest\n"
"  8  the package has expired\n"
"  70 internal error\n");
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

struct named_path {
	const char *image; /* NULL: the only image that needs one */
	const char *path;
};

struct options {
	const char *trust[MAX_TRUST];
	size_t n_trust;
	const char *crl;
	struct named_path sources[FOTA_IMAGES_MAX];
	size_t n_sources;
	struct named_path outputs[FOTA_IMAGES_MAX];
	size_t n_outputs;
	int64_t at;
	bool json, quiet;
	const char *pkg;
};

/* Per-image result for the report. */
struct image_result {
	bool rebuilt;        /* every target byte was produced and hashed */
	bool target_ok;
	uint64_t payload_bytes;
	size_t full_chunks, delta_chunks;
	const char *source_path, *output_path;
};

struct report {
	struct fota_sig_info sig;
	bool sig_ok;
	struct fota_manifest *m;
	struct image_result img[FOTA_IMAGES_MAX];
	uint64_t package_bytes;
	double seconds;
};

/* ---- target writer: hash the chunk, maybe write it out ---- */

struct target_sink {
	/* chunks in target order: the pair hashes the chunk (inner) and the image (outer) in
	 * one pass; out of order: chunk_hash the chunk, the image is read back at the end */
	struct fota_sha256_pair *pair;
	struct fota_sha256 *chunk_hash;
	int out_fd;                     /* -1: nothing written */
	uint8_t *stage;                 /* in-place: the chunk is produced here first, then written */
	uint64_t base, pos, end;        /* absolute target offsets: chunk start, next byte, end */
	const char *what;
};

static fota_status sink_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct target_sink *s = ctx;
	if (len > s->end - s->pos)
		return fota_error_set(err, FOTA_E_INTEGRITY, "%s: produces more than its target range", s->what);
	if (s->pair)
		fota_sha256_pair_update(s->pair, buf, len);
	else
		fota_sha256_update(s->chunk_hash, buf, len);
	if (s->stage)
		memcpy(s->stage + (s->pos - s->base), buf, len);
	else if (s->out_fd >= 0) {
		const uint8_t *p = buf;
		size_t left = len;
		uint64_t off = s->pos;
		while (left) {
			ssize_t n = pwrite(s->out_fd, p, left, (off_t)off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return fota_error_set(err, FOTA_E_IO, "output: write: %s", strerror(errno));
			p += n;
			off += (uint64_t)n;
			left -= (size_t)n;
		}
	}
	s->pos += len;
	return FOTA_OK;
}

/* ---- FULL chunks: one zstd frame, exactly target_size bytes ---- */

static fota_status apply_full(const struct fota_manifest *m, const uint8_t *payload, size_t len,
			      struct target_sink *sink, uint8_t *outbuf, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, (int)m->window_log);
	ZSTD_inBuffer in = { payload, len, 0 };
	size_t ret = 1;
	while (ret != 0) {
		ZSTD_outBuffer out = { outbuf, OUTBUF, 0 };
		ret = ZSTD_decompressStream(d, &out, &in);
		if (ZSTD_isError(ret)) {
			rc = fota_error_set(err, FOTA_E_COMPRESS, "%s: zstd: %s", sink->what, ZSTD_getErrorName(ret));
			goto out;
		}
		if (out.pos) {
			rc = sink_write(sink, outbuf, out.pos, err);
			if (rc)
				goto out;
		}
		if (ret != 0 && in.pos == in.size && out.pos < out.size) {
			rc = fota_error_set(err, FOTA_E_COMPRESS, "%s: zstd frame is truncated", sink->what);
			goto out;
		}
	}
	if (in.pos != in.size)
		rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: %zu bytes after the zstd frame", sink->what,
				    in.size - in.pos);
out:
	ZSTD_freeDCtx(d);
	return rc;
}

/* ---- DELTA chunks: patch against the concatenated source reads ---- */

struct delta_ctx {
	const uint8_t *patch;
	size_t patch_len;
	int src_fd;
	int scratch_fd;                 /* in-place: where "scratch" reads come from */
	const struct fota_chunk *ch;
	struct target_sink *sink;
};

static fota_status dl_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *c = ctx;
	if (off > c->patch_len || len > c->patch_len - off)
		return fota_error_set(err, FOTA_E_PATCH, "patch read past its end");
	memcpy(buf, c->patch + off, len);
	return FOTA_OK;
}

static fota_status dl_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *c = ctx;
	uint8_t *p = buf;
	/* Map the virtual offset (into the concatenation of source_reads) to the image. */
	uint64_t base = 0;
	for (size_t i = 0; i < c->ch->n_source_reads && len; i++) {
		const struct fota_range *r = &c->ch->source_reads[i];
		if (off < base + r->length) {
			uint64_t in = off - base;
			size_t n = r->length - in < len ? (size_t)(r->length - in) : len;
			ssize_t got = pread(r->scratch ? c->scratch_fd : c->src_fd, p, n, (off_t)(r->offset + in));
			if (got != (ssize_t)n)
				return fota_error_set(err, FOTA_E_IO, "source: read at %" PRIu64 ": %s",
						      r->offset + in, got < 0 ? strerror(errno) : "short read");
			p += n;
			len -= n;
			off += n;
		}
		base += r->length;
	}
	if (len)
		return fota_error_set(err, FOTA_E_PATCH, "patch reads past its source ranges");
	return FOTA_OK;
}

static fota_status dl_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct delta_ctx *c = ctx;
	return sink_write(c->sink, buf, len, err);
}

static fota_status apply_delta(const uint8_t *payload, size_t len, int src_fd, int scratch_fd,
			       const struct fota_chunk *ch, struct target_sink *sink, struct fota_error *err)
{
	struct delta_ctx c = { payload, len, src_fd, scratch_fd, ch, sink };
	uint64_t src_total = 0;
	for (size_t i = 0; i < ch->n_source_reads; i++)
		src_total += ch->source_reads[i].length;
	struct fota_delta_io io = { .ctx = &c, .patch_size = len, .read_patch = dl_read_patch,
				    .read_source = dl_read_source, .write_target = dl_write };
	uint64_t produced = 0;
	return fota_delta_apply(&io, src_total, FOTA_DELTA_MEM_DEFAULT, &produced, err);
}

/* ---- the verification ---- */

static const char *find_named(const struct named_path *v, size_t n, const char *image, size_t n_candidates)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].image && strcmp(v[i].image, image) == 0)
			return v[i].path;
	for (size_t i = 0; i < n; i++)
		if (!v[i].image && n_candidates == 1)
			return v[i].path;
	return NULL;
}

static fota_status copy_range(int from, uint64_t from_off, int to, uint64_t to_off, uint64_t len, uint8_t *buf,
			      struct fota_error *err)
{
	while (len) {
		size_t n = len < OUTBUF ? (size_t)len : OUTBUF;
		ssize_t got = pread(from, buf, n, (off_t)from_off);
		if (got != (ssize_t)n)
			return fota_error_set(err, FOTA_E_IO, "in-place simulation: read: %s", got < 0 ? strerror(errno) : "short");
		if (pwrite(to, buf, n, (off_t)to_off) != (ssize_t)n)
			return fota_error_set(err, FOTA_E_IO, "in-place simulation: write: %s", strerror(errno));
		from_off += n;
		to_off += n;
		len -= n;
	}
	return FOTA_OK;
}

static bool chunks_in_order(const struct fota_image *im)
{
	uint64_t pos = 0;
	for (size_t c = 0; c < im->n_chunks; c++) {
		if (im->chunks[c].target_offset != pos)
			return false;
		pos += im->chunks[c].target_size;
	}
	return true;
}

static fota_status hash_fd(int fd, uint64_t size, uint8_t out[FOTA_SHA256_LEN], uint8_t *buf,
			   struct fota_error *err)
{
	struct fota_sha256 *h = fota_sha256_new();
	if (!h)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	uint64_t off = 0;
	while (off < size) {
		size_t n = size - off < OUTBUF ? (size_t)(size - off) : OUTBUF;
		ssize_t got = pread(fd, buf, n, (off_t)off);
		if (got != (ssize_t)n) {
			fota_sha256_free(h);
			return fota_error_set(err, FOTA_E_IO, "re-read target: %s", got < 0 ? strerror(errno) : "short");
		}
		fota_sha256_update(h, buf, n);
		off += n;
	}
	fota_sha256_final(h, out);
	fota_sha256_free(h);
	return FOTA_OK;
}

static fota_status verify(const struct options *o, struct report *rep, struct fota_error *err)
{
	fota_status rc;
	struct fota_trust *trust = NULL;
	struct fota_pkg_reader *r = NULL;
	uint8_t *mj = NULL, *sig = NULL, *payload = NULL, *outbuf = NULL;
	size_t mlen = 0, slen = 0;
	int src_fd[FOTA_IMAGES_MAX], out_fd[FOTA_IMAGES_MAX];
	char *out_tmp[FOTA_IMAGES_MAX] = { 0 };
	struct fota_sha256 *chunk_hash = NULL;
	struct fota_sha256_pair *pair = NULL;
	int scratch_fd = -1;
	uint8_t *stage = NULL;
	for (size_t i = 0; i < FOTA_IMAGES_MAX; i++)
		src_fd[i] = out_fd[i] = -1;

	rc = fota_trust_load(o->trust, o->n_trust, o->crl, &trust, err);
	if (rc)
		goto out;
	rc = fota_pkg_reader_open(o->pkg, &r, err);
	if (rc)
		goto out;
	struct stat st;
	if (stat(o->pkg, &st) == 0)
		rep->package_bytes = (uint64_t)st.st_size;
	rc = fota_pkg_read_head(r, &mj, &mlen, &sig, &slen, err);
	if (rc)
		goto out;
	/* Verify before parse: the manifest bytes are untrusted until this returns OK. */
	rc = fota_sig_verify(trust, mj, mlen, sig, slen, o->at, &rep->sig, err);
	if (rc)
		goto out;
	rep->sig_ok = true;
	rc = fota_manifest_parse(mj, mlen, &rep->m, err);
	if (rc)
		goto out;
	const struct fota_manifest *m = rep->m;
	int64_t now = o->at ? o->at : (int64_t)time(NULL);
	if (m->expires && now >= m->expires) {
		char t[21];
		fota_time_format(m->expires, t);
		rc = fota_error_set(err, FOTA_E_EXPIRED, "package expired at %s", t);
		goto out;
	}

	/* Sources and outputs, checked before any payload is read. */
	size_t n_with_source = 0;
	for (size_t i = 0; i < m->n_images; i++)
		n_with_source += m->images[i].has_source;
	for (size_t i = 0; i < o->n_sources; i++)
		if (o->sources[i].image) {
			bool found = false;
			for (size_t k = 0; k < m->n_images; k++)
				found |= strcmp(m->images[k].name, o->sources[i].image) == 0;
			if (!found) {
				rc = fota_error_set(err, FOTA_E_ARG, "--source: the package has no image '%s'", o->sources[i].image);
				goto out;
			}
		}
	if (o->n_sources && n_with_source == 0) {
		rc = fota_error_set(err, FOTA_E_ARG, "--source: this is a full package; it needs no source");
		goto out;
	}
	outbuf = malloc(OUTBUF);
	chunk_hash = fota_sha256_new();
	pair = fota_sha256_pair_new(0);
	if (!outbuf || !chunk_hash || !pair) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < m->n_images; i++) {
		const struct fota_image *im = &m->images[i];
		struct image_result *ir = &rep->img[i];
		ir->source_path = im->has_source ? find_named(o->sources, o->n_sources, im->name, n_with_source) : NULL;
		ir->output_path = find_named(o->outputs, o->n_outputs, im->name, m->n_images);
		if (ir->source_path) {
			src_fd[i] = open(ir->source_path, O_RDONLY | O_CLOEXEC);
			if (src_fd[i] < 0) {
				rc = fota_error_set(err, FOTA_E_IO, "%s: %s", ir->source_path, strerror(errno));
				goto out;
			}
			uint8_t d[FOTA_SHA256_LEN];
			uint64_t got = 0;
			/* Hash one byte past the stated size, so a longer file shows. */
			rc = fota_sha256_file(ir->source_path, im->source_size + 1, d, &got, err);
			if (rc)
				goto out;
			if (got != im->source_size || memcmp(d, im->source_sha256, FOTA_SHA256_LEN) != 0) {
				rc = fota_error_set(err, FOTA_E_SOURCE,
						    "image %s: source %s does not match the manifest (%" PRIu64 " bytes%s, want %" PRIu64 ")",
						    im->name, ir->source_path, got, got == im->source_size ? ", different sha256" : "",
						    im->source_size);
				goto out;
			}
		}
		if (ir->output_path) {
			if (asprintf(&out_tmp[i], "%s.tmp", ir->output_path) < 0) {
				out_tmp[i] = NULL;
				rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
				goto out;
			}
			out_fd[i] = open(out_tmp[i], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (out_fd[i] < 0) {
				rc = fota_error_set(err, FOTA_E_IO, "%s: %s", out_tmp[i], strerror(errno));
				free(out_tmp[i]);
				out_tmp[i] = NULL;
				goto out;
			}
		} else if ((!chunks_in_order(im) || m->mode == FOTA_MODE_INPLACE) && (!im->has_source || ir->source_path)) {
			/* Out-of-order chunks: rebuild into an anonymous scratch file to hash the image. */
			const char *tmpd = getenv("TMPDIR");
			out_fd[i] = open(tmpd ? tmpd : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
			if (out_fd[i] < 0) {
				rc = fota_error_set(err, FOTA_E_IO, "scratch file: %s", strerror(errno));
				goto out;
			}
		}
	}
	if (o->n_outputs) {
		for (size_t k = 0; k < o->n_outputs; k++) {
			bool used = false;
			for (size_t i = 0; i < m->n_images; i++)
				used |= rep->img[i].output_path == o->outputs[k].path;
			if (!used) {
				rc = fota_error_set(err, FOTA_E_ARG, "--output %s: no image of this package matches it",
						    o->outputs[k].path);
				goto out;
			}
		}
	}

	uint64_t max_payload = 0;
	for (size_t i = 0; i < m->n_images; i++)
		for (size_t c = 0; c < m->images[i].n_chunks; c++)
			if (m->images[i].chunks[c].payload_size > max_payload)
				max_payload = m->images[i].chunks[c].payload_size;
	payload = malloc(max_payload ? (size_t)max_payload : 1);
	if (!payload) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}

	bool inplace = m->mode == FOTA_MODE_INPLACE;
	if (inplace) {
		/* Simulate the device: each image starts as a copy of its source and is
		 * overwritten chunk by chunk, reading whatever the partition then holds. */
		uint64_t max_chunk = 0;
		for (size_t i = 0; i < m->n_images; i++)
			for (size_t c = 0; c < m->images[i].n_chunks; c++)
				if (m->images[i].chunks[c].target_size > max_chunk)
					max_chunk = m->images[i].chunks[c].target_size;
		const char *tmpd = getenv("TMPDIR");
		scratch_fd = open(tmpd ? tmpd : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		stage = malloc(max_chunk ? (size_t)max_chunk : 1);
		if (scratch_fd < 0 || !stage) {
			rc = fota_error_set(err, scratch_fd < 0 ? FOTA_E_IO : FOTA_E_NOMEM, "in-place simulation: %s",
					    scratch_fd < 0 ? strerror(errno) : "out of memory");
			goto out;
		}
		for (size_t i = 0; i < m->n_images; i++)
			if (src_fd[i] >= 0 && out_fd[i] >= 0) {
				rc = copy_range(src_fd[i], 0, out_fd[i], 0, m->images[i].source_size, outbuf, err);
				if (rc)
					goto out;
			}
	}
	uint64_t off = fota_pkg_head_size(mlen, slen);
	for (size_t i = 0; i < m->n_images; i++) {
		const struct fota_image *im = &m->images[i];
		struct image_result *ir = &rep->img[i];
		bool in_order = chunks_in_order(im) && !inplace;
		bool can_rebuild = !im->has_source || ir->source_path;
		for (size_t c = 0; c < im->n_chunks; c++) {
			const struct fota_chunk *ch = &im->chunks[c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(im->name, c, ch->method, name);
			rc = fota_pkg_read_member(r, name, ch->payload_size, off, payload, err);
			if (rc)
				goto out;
			off += fota_pkg_member_span(ch->payload_size);
			uint8_t d[FOTA_SHA256_LEN];
			fota_sha256(payload, ch->payload_size, d);
			if (memcmp(d, ch->payload_sha256, FOTA_SHA256_LEN) != 0) {
				rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: payload sha256 does not match the manifest", name);
				goto out;
			}
			ir->payload_bytes += ch->payload_size;
			if (ch->method == FOTA_METHOD_FULL)
				ir->full_chunks++;
			else
				ir->delta_chunks++;
			if (!can_rebuild)
				continue;
			struct target_sink sink = { .pair = in_order ? pair : NULL, .chunk_hash = chunk_hash,
						    .out_fd = out_fd[i], .stage = inplace ? stage : NULL,
						    .base = ch->target_offset, .pos = ch->target_offset,
						    .end = ch->target_offset + ch->target_size, .what = name };
			for (size_t k = 0; inplace && k < ch->n_stash; k++) {
				rc = copy_range(out_fd[i], ch->stash[k].source_offset, scratch_fd, ch->stash[k].scratch_offset,
						ch->stash[k].length, outbuf, err);
				if (rc)
					goto out;
			}
			if (ch->method == FOTA_METHOD_FULL)
				rc = apply_full(m, payload, (size_t)ch->payload_size, &sink, outbuf, err);
			else
				rc = apply_delta(payload, (size_t)ch->payload_size, inplace ? out_fd[i] : src_fd[i],
						 scratch_fd, ch, &sink, err);
			if (rc)
				goto out;
			if (sink.pos != sink.end) {
				rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: produced %" PRIu64 " bytes, manifest says %" PRIu64,
						    name, sink.pos - ch->target_offset, ch->target_size);
				goto out;
			}
			if (in_order)
				fota_sha256_pair_final_inner(pair, d);
			else
				fota_sha256_final(chunk_hash, d);
			if (memcmp(d, ch->target_sha256, FOTA_SHA256_LEN) != 0) {
				rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: target bytes do not match the manifest's sha256", name);
				goto out;
			}
			if (inplace && pwrite(out_fd[i], stage, (size_t)ch->target_size, (off_t)ch->target_offset) !=
					       (ssize_t)ch->target_size) {
				rc = fota_error_set(err, FOTA_E_IO, "in-place simulation: write: %s", strerror(errno));
				goto out;
			}
		}
		if (can_rebuild) {
			uint8_t d[FOTA_SHA256_LEN];
			if (in_order)
				fota_sha256_pair_final_outer(pair, d);
			else {
				rc = hash_fd(out_fd[i], im->target_size, d, outbuf, err);
				if (rc)
					goto out;
			}
			if (memcmp(d, im->target_sha256, FOTA_SHA256_LEN) != 0) {
				rc = fota_error_set(err, FOTA_E_INTEGRITY, "image %s: rebuilt target does not match the manifest's sha256",
						    im->name);
				goto out;
			}
			ir->rebuilt = ir->target_ok = true;
		}
	}
	rc = fota_pkg_read_end(r, err);
	if (rc)
		goto out;
	/* Everything verified: publish outputs. */
	for (size_t i = 0; i < m->n_images; i++) {
		if (!out_tmp[i])
			continue;
		if (ftruncate(out_fd[i], (off_t)m->images[i].target_size) != 0 || fsync(out_fd[i]) != 0 ||
		    rename(out_tmp[i], rep->img[i].output_path) != 0) {
			rc = fota_error_set(err, FOTA_E_IO, "%s: %s", rep->img[i].output_path, strerror(errno));
			goto out;
		}
		free(out_tmp[i]);
		out_tmp[i] = NULL;
		rc = fota_sync_parent_dir(rep->img[i].output_path, err);
		if (rc)
			goto out;
	}
out:
	for (size_t i = 0; i < FOTA_IMAGES_MAX; i++) {
		if (src_fd[i] >= 0)
			close(src_fd[i]);
		if (out_fd[i] >= 0)
			close(out_fd[i]);
		if (out_tmp[i]) {
			unlink(out_tmp[i]);
			free(out_tmp[i]);
		}
	}
	fota_sha256_free(chunk_hash);
	fota_sha256_pair_free(pair);
	if (scratch_fd >= 0)
		close(scratch_fd);
	free(stage);
	free(payload);
	free(outbuf);
	free(mj);
	free(sig);
	fota_pkg_reader_close(r);
	fota_trust_free(trust);
	return rc;
}

/* ---- reports ---- */

static void fmt_time(int64_t t, char out[21])
{
	if (t <= 0)
		snprintf(out, 21, "none");
	else
		fota_time_format(t, out);
}

static json_t *hex_json(const uint8_t *d)
{
	char hex[FOTA_SHA256_HEX_LEN + 1];
	fota_hex_encode(d, FOTA_SHA256_LEN, hex);
	return json_string(hex);
}

static void report_json(const struct report *rep, fota_status rc, const struct fota_error *err)
{
	json_t *root = json_object();
	json_object_set_new(root, "valid", json_boolean(rc == FOTA_OK));
	json_object_set_new(root, "exit_code", json_integer(exit_code_for(rc)));
	json_object_set_new(root, "error", rc ? json_string(err->msg[0] ? err->msg : fota_strerror(rc)) : json_null());
	json_object_set_new(root, "package_bytes", json_integer((json_int_t)rep->package_bytes));
	if (rep->sig_ok) {
		char t[21];
		json_t *s = json_object();
		json_object_set_new(s, "signer", json_string(rep->sig.signer));
		json_object_set_new(s, "issuer", json_string(rep->sig.issuer));
		json_t *chain = json_array();
		for (size_t i = 0; i < rep->sig.chain_len && i < FOTA_SIG_CHAIN_MAX; i++)
			json_array_append_new(chain, json_string(rep->sig.chain[i]));
		json_object_set_new(s, "chain", chain);
		fmt_time(rep->sig.not_before, t);
		json_object_set_new(s, "not_before", json_string(t));
		fmt_time(rep->sig.not_after, t);
		json_object_set_new(s, "not_after", json_string(t));
		json_object_set_new(s, "key_type", json_string(rep->sig.key_type));
		json_object_set_new(s, "digest", json_string(rep->sig.digest));
		if (rep->sig.signing_time >= 0) {
			fmt_time(rep->sig.signing_time, t);
			json_object_set_new(s, "signing_time", json_string(t));
		} else
			json_object_set_new(s, "signing_time", json_null());
		json_object_set_new(root, "signature", s);
	}
	const struct fota_manifest *m = rep->m;
	if (m) {
		char t[21];
		json_t *p = json_object();
		json_object_set_new(p, "name", json_string(m->name));
		json_object_set_new(p, "version", json_string(m->version));
		json_object_set_new(p, "from_version", m->from_version ? json_string(m->from_version) : json_null());
		json_object_set_new(p, "format_version", json_integer(m->format_version));
		json_object_set_new(p, "mode", json_string(fota_mode_name(m->mode)));
		json_t *models = json_array();
		for (size_t i = 0; i < m->n_models; i++)
			json_array_append_new(models, json_string(m->models[i]));
		json_object_set_new(p, "device_models", models);
		json_object_set_new(p, "security_version", json_integer((json_int_t)m->security_version));
		if (m->expires) {
			fmt_time(m->expires, t);
			json_object_set_new(p, "expires", json_string(t));
		} else
			json_object_set_new(p, "expires", json_null());
		json_object_set_new(p, "priority", json_string(fota_priority_name(m->policy.priority)));
		json_object_set_new(p, "silent", json_boolean(m->policy.silent));
		json_object_set_new(p, "roaming", json_string(fota_roaming_name(m->policy.roaming)));
		json_object_set_new(p, "install_message",
				    m->policy.install_message ? json_string(m->policy.install_message) : json_null());
		json_object_set_new(root, "package", p);
		json_t *imgs = json_array();
		for (size_t i = 0; i < m->n_images; i++) {
			const struct fota_image *im = &m->images[i];
			const struct image_result *ir = &rep->img[i];
			json_t *ji = json_object();
			json_object_set_new(ji, "name", json_string(im->name));
			if (im->has_source) {
				json_t *s = json_object();
				json_object_set_new(s, "size", json_integer((json_int_t)im->source_size));
				json_object_set_new(s, "sha256", hex_json(im->source_sha256));
				json_object_set_new(ji, "source", s);
			} else
				json_object_set_new(ji, "source", json_null());
			json_t *tg = json_object();
			json_object_set_new(tg, "size", json_integer((json_int_t)im->target_size));
			json_object_set_new(tg, "sha256", hex_json(im->target_sha256));
			json_object_set_new(ji, "target", tg);
			json_object_set_new(ji, "chunks", json_integer((json_int_t)im->n_chunks));
			json_object_set_new(ji, "full_chunks", json_integer((json_int_t)ir->full_chunks));
			json_object_set_new(ji, "delta_chunks", json_integer((json_int_t)ir->delta_chunks));
			json_object_set_new(ji, "payload_bytes", json_integer((json_int_t)ir->payload_bytes));
			json_object_set_new(ji, "ratio", json_real(im->target_size ? (double)ir->payload_bytes / (double)im->target_size : 0));
			json_object_set_new(ji, "target_rebuilt", json_boolean(ir->rebuilt));
			json_object_set_new(ji, "output", ir->output_path && rc == FOTA_OK ? json_string(ir->output_path) : json_null());
			json_array_append_new(imgs, ji);
		}
		json_object_set_new(root, "images", imgs);
	}
	json_object_set_new(root, "seconds", json_real(rep->seconds));
	json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(root);
}

static void human_size(uint64_t n, char *out, size_t len)
{
	if (n >= (1u << 20))
		snprintf(out, len, "%.1f MiB", (double)n / (1 << 20));
	else if (n >= 1024)
		snprintf(out, len, "%.1f KiB", (double)n / 1024);
	else
		snprintf(out, len, "%" PRIu64 " B", n);
}

static void report_text(const struct report *rep, fota_status rc, const struct fota_error *err)
{
	char t1[21], t2[21], a[32], b[32];
	FILE *f = stdout;
	if (rep->sig_ok) {
		fprintf(f, "signer:     %s\n", rep->sig.signer);
		fprintf(f, "chain:      ");
		for (size_t i = 0; i < rep->sig.chain_len && i < FOTA_SIG_CHAIN_MAX; i++)
			fprintf(f, "%s%s", i ? "\n         <- " : "", rep->sig.chain[i]);
		fputc('\n', f);
		fmt_time(rep->sig.not_before, t1);
		fmt_time(rep->sig.not_after, t2);
		fprintf(f, "validity:   %s .. %s\n", t1, t2);
		fmt_time(rep->sig.signing_time, t1);
		fprintf(f, "signature:  %s, %s, signing time %s\n", rep->sig.key_type, rep->sig.digest, t1);
	}
	const struct fota_manifest *m = rep->m;
	if (m) {
		fprintf(f, "package:    %s %s%s%s (format %u, mode %s)\n", m->name, m->version,
			m->from_version ? " from " : "", m->from_version ? m->from_version : "", m->format_version,
			fota_mode_name(m->mode));
		fprintf(f, "devices:    ");
		if (!m->n_models)
			fprintf(f, "any model");
		for (size_t i = 0; i < m->n_models; i++)
			fprintf(f, "%s%s", i ? ", " : "", m->models[i]);
		fmt_time(m->expires, t1);
		fprintf(f, "; security version %" PRIu64 "; expires %s\n", m->security_version, t1);
		fprintf(f, "policy:     priority %s, %s, roaming %s%s%s%s\n", fota_priority_name(m->policy.priority),
			m->policy.silent ? "silent" : "not silent", fota_roaming_name(m->policy.roaming),
			m->policy.install_message ? ", message \"" : "",
			m->policy.install_message ? m->policy.install_message : "", m->policy.install_message ? "\"" : "");
		for (size_t i = 0; i < m->n_images; i++) {
			const struct fota_image *im = &m->images[i];
			const struct image_result *ir = &rep->img[i];
			char hex[FOTA_SHA256_HEX_LEN + 1];
			human_size(im->target_size, a, sizeof(a));
			human_size(ir->payload_bytes, b, sizeof(b));
			fota_hex_encode(im->target_sha256, FOTA_SHA256_LEN, hex);
			fprintf(f, "image %s: target %s sha256 %s\n", im->name, a, hex);
			if (im->has_source) {
				human_size(im->source_size, a, sizeof(a));
				fota_hex_encode(im->source_sha256, FOTA_SHA256_LEN, hex);
				fprintf(f, "  source %s sha256 %s\n", a, hex);
			}
			fprintf(f, "  %zu chunks (%zu full, %zu delta), payload %s checked = %.2f%% of the target; %s\n",
				im->n_chunks, ir->full_chunks, ir->delta_chunks, b,
				im->target_size ? 100.0 * (double)ir->payload_bytes / (double)im->target_size : 0.0,
				ir->rebuilt ? "target rebuilt, sha256 matches"
					    : (im->has_source && !ir->source_path ? "target NOT rebuilt (no --source given)"
										  : "target not checked"));
		}
	}
	human_size(rep->package_bytes, a, sizeof(a));
	if (rc == FOTA_OK)
		fprintf(f, "result:     VALID (%s package, %.2fs)\n", a, rep->seconds);
	else
		fprintf(f, "result:     INVALID: %s\n", err->msg[0] ? err->msg : fota_strerror(rc));
}

/* ---- command line ---- */

static int parse_named(const char *arg, struct named_path *out)
{
	const char *eq = strchr(arg, '=');
	if (eq) {
		if (fota_image_name_valid(arg, (size_t)(eq - arg))) {
			if (!eq[1])
				return -1;
			out->image = strndup(arg, (size_t)(eq - arg));
			out->path = eq + 1;
			return out->image ? 0 : -1;
		}
	}
	out->image = NULL;
	out->path = arg;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	enum { OPT_TRUST = 256, OPT_CRL, OPT_SOURCE, OPT_OUTPUT, OPT_AT, OPT_JSON, OPT_QUIET };
	static const struct option longopts[] = {
		{ "trust", required_argument, NULL, OPT_TRUST },
		{ "crl", required_argument, NULL, OPT_CRL },
		{ "source", required_argument, NULL, OPT_SOURCE },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "at", required_argument, NULL, OPT_AT },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { 0 };
	int c;
	uint64_t v;
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_TRUST:
			if (o.n_trust >= MAX_TRUST)
				return die_usage("--trust: at most %d files", MAX_TRUST);
			o.trust[o.n_trust++] = optarg;
			break;
		case OPT_CRL: o.crl = optarg; break;
		case OPT_SOURCE:
			if (o.n_sources >= FOTA_IMAGES_MAX || parse_named(optarg, &o.sources[o.n_sources]) != 0)
				return die_usage("--source: bad value '%s'", optarg);
			o.n_sources++;
			break;
		case OPT_OUTPUT:
			if (o.n_outputs >= FOTA_IMAGES_MAX || parse_named(optarg, &o.outputs[o.n_outputs]) != 0)
				return die_usage("--output: bad value '%s'", optarg);
			o.n_outputs++;
			break;
		case OPT_AT:
			if (fota_time_parse(optarg, &o.at) != 0) {
				if (fota_parse_u64(optarg, &v) != 0 || v == 0 || v > INT64_MAX)
					return die_usage("--at: '%s' is neither YYYY-MM-DDTHH:MM:SSZ nor Unix seconds", optarg);
				o.at = (int64_t)v;
			}
			break;
		case OPT_JSON: o.json = true; break;
		case OPT_QUIET: o.quiet = true; break;
		case 'h': usage(stdout); return EXIT_VALID;
		case 'V': printf("fota-verify %s (format %d)\n", VERIFY_VERSION, FOTA_FORMAT_VERSION); return EXIT_VALID;
		default: fprintf(stderr, "Try '%s --help'.\n", progname); return EXIT_USAGE;
		}
	}
	if (optind != argc - 1)
		return die_usage(optind >= argc ? "missing PKG.fota" : "exactly one package, please");
	if (o.n_trust == 0)
		return die_usage("missing --trust ROOT.pem (trust comes only from the roots you name)");
	o.pkg = argv[optind];

	struct report rep = { 0 };
	struct fota_error err = { 0 };
	double t0 = now_s();
	fota_status rc = verify(&o, &rep, &err);
	rep.seconds = now_s() - t0;
	if (o.json)
		report_json(&rep, rc, &err);
	else if (!o.quiet)
		report_text(&rep, rc, &err);
	if (rc && !o.quiet)
		fprintf(stderr, "%s: %s\n", progname, err.msg[0] ? err.msg : fota_strerror(rc));
	fota_manifest_free(rep.m);
	for (size_t i = 0; i < o.n_sources; i++)
		free((char *)o.sources[i].image);
	for (size_t i = 0; i < o.n_outputs; i++)
		free((char *)o.outputs[i].image);
	return exit_code_for(rc);
}
