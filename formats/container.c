/*
 * container.c: the package file as a strict POSIX ustar archive, through libarchive
 * (see fota/container.h and FORMAT.md, "Container").
 *
 * The writer fixes every header field that could vary between runs (mtime, owner,
 * mode), so packages are reproducible. The reader accepts exactly one layout: each
 * member must be the expected one, at the expected byte offset, as a plain ustar
 * regular file; anything else (pax or GNU headers, reordering, extra or missing
 * members, truncation, trailing data) is FOTA_E_FORMAT.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "fota/container.h"
#include "fota/util.h"

static uint64_t pad512(uint64_t n)
{
	return (n + FOTA_TAR_BLOCK - 1) / FOTA_TAR_BLOCK * FOTA_TAR_BLOCK;
}

uint64_t fota_pkg_member_span(uint64_t size)
{
	return FOTA_TAR_BLOCK + pad512(size);
}

uint64_t fota_pkg_head_size(uint64_t manifest_len, uint64_t sig_len)
{
	return fota_pkg_member_span(manifest_len) + (sig_len ? fota_pkg_member_span(sig_len) : 0);
}

uint64_t fota_pkg_payload_offset(const struct fota_manifest *m, uint64_t manifest_len,
				 uint64_t sig_len, size_t k)
{
	uint64_t off = fota_pkg_head_size(manifest_len, sig_len);
	size_t idx = 0;
	for (size_t i = 0; i < m->n_images; i++) {
		for (size_t c = 0; c < m->images[i].n_chunks; c++, idx++) {
			if (idx == k)
				return off + FOTA_TAR_BLOCK;
			off += fota_pkg_member_span(m->images[i].chunks[c].payload_size);
		}
	}
	return off + FOTA_TAR_BLOCK;
}

void fota_pkg_payload_name(const char *image, size_t index, enum fota_method method,
			   char out[FOTA_PAYLOAD_NAME_MAX])
{
	snprintf(out, FOTA_PAYLOAD_NAME_MAX, "images/%s/%06zu.%s", image, index,
		 method == FOTA_METHOD_DELTA ? "fdp" : "zst");
}

/* ---- writer ---- */

struct fota_pkg_writer {
	struct archive *a;
	int fd;
	char *path;
	char *tmp;
};

fota_status fota_pkg_writer_open(const char *path, struct fota_pkg_writer **out, struct fota_error *err)
{
	*out = NULL;
	struct fota_pkg_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	w->fd = -1;
	w->path = strdup(path);
	if (w->path && asprintf(&w->tmp, "%s.tmp", path) < 0)
		w->tmp = NULL;
	if (!w->path || !w->tmp) {
		free(w->path);
		free(w);
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	}
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		fota_status rc = fota_error_set(err, FOTA_E_IO, "%s: %s", w->tmp, strerror(errno));
		free(w->tmp);
		free(w->path);
		free(w);
		return rc;
	}
	w->a = archive_write_new();
	if (!w->a || archive_write_set_format_ustar(w->a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(w->a) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(w->a, FOTA_TAR_BLOCK) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(w->a, w->fd) != ARCHIVE_OK) {
		fota_status rc = fota_error_set(err, FOTA_E_IO, "%s: libarchive: %s", w->tmp,
						w->a ? archive_error_string(w->a) : "out of memory");
		fota_pkg_writer_abort(w);
		return rc;
	}
	*out = w;
	return FOTA_OK;
}

fota_status fota_pkg_writer_add(struct fota_pkg_writer *w, const char *name, const void *data,
				size_t len, struct fota_error *err)
{
	if (strlen(name) >= 100)
		return fota_error_set(err, FOTA_E_INTERNAL, "container: member name too long: %s", name);
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, (la_int64_t)len);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_mtime(e, 0, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_uname(e, "root");
	archive_entry_set_gname(e, "root");
	fota_status rc = FOTA_OK;
	if (archive_write_header(w->a, e) != ARCHIVE_OK) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: %s: %s", w->tmp, name, archive_error_string(w->a));
		goto out;
	}
	const uint8_t *p = data;
	size_t left = len;
	while (left) {
		la_ssize_t n = archive_write_data(w->a, p, left);
		if (n <= 0) {
			rc = fota_error_set(err, FOTA_E_IO, "%s: %s: %s", w->tmp, name,
					    archive_error_string(w->a));
			goto out;
		}
		p += n;
		left -= (size_t)n;
	}
	if (archive_write_finish_entry(w->a) != ARCHIVE_OK)
		rc = fota_error_set(err, FOTA_E_IO, "%s: %s: %s", w->tmp, name, archive_error_string(w->a));
out:
	archive_entry_free(e);
	return rc;
}

fota_status fota_pkg_writer_commit(struct fota_pkg_writer *w, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	if (archive_write_close(w->a) != ARCHIVE_OK) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: %s", w->tmp, archive_error_string(w->a));
		goto fail;
	}
	archive_write_free(w->a);
	w->a = NULL;
	if (fsync(w->fd) != 0 || close(w->fd) != 0) {
		w->fd = -1;
		rc = fota_error_set(err, FOTA_E_IO, "%s: sync: %s", w->tmp, strerror(errno));
		goto fail;
	}
	w->fd = -1;
	if (rename(w->tmp, w->path) != 0) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: rename: %s", w->path, strerror(errno));
		goto fail;
	}
	rc = fota_sync_parent_dir(w->path, err);
	free(w->tmp);
	free(w->path);
	free(w);
	return rc;
fail:
	fota_pkg_writer_abort(w);
	return rc;
}

void fota_pkg_writer_abort(struct fota_pkg_writer *w)
{
	if (!w)
		return;
	if (w->a)
		archive_write_free(w->a); /* also closes the archive; fd stays ours */
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp)
		unlink(w->tmp);
	free(w->tmp);
	free(w->path);
	free(w);
}

/* ---- reader ---- */

struct fota_pkg_reader {
	struct archive *a;
	char *path;
	int fd;
	uint64_t next_offset; /* where the next header must start */
};

fota_status fota_pkg_reader_open(const char *path, struct fota_pkg_reader **out, struct fota_error *err)
{
	*out = NULL;
	struct fota_pkg_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0) {
		fota_status rc = fota_error_set(err, FOTA_E_IO, "%s: %s", path, strerror(errno));
		free(r);
		return rc;
	}
	struct stat st;
	if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fota_status rc = fota_error_set(err, FOTA_E_IO, "%s: not a regular file", path);
		close(r->fd);
		free(r);
		return rc;
	}
	r->path = strdup(path);
	r->a = archive_read_new();
	if (!r->path || !r->a) {
		fota_pkg_reader_close(r);
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	}
	/* tar only, no decompression filters: a package is never compressed as a whole. */
	if (archive_read_support_format_tar(r->a) != ARCHIVE_OK ||
	    archive_read_open_fd(r->a, r->fd, 64 * 1024) != ARCHIVE_OK) {
		fota_status rc = fota_error_set(err, FOTA_E_FORMAT, "%s: not a package: %s", path,
						archive_error_string(r->a));
		fota_pkg_reader_close(r);
		return rc;
	}
	*out = r;
	return FOTA_OK;
}

void fota_pkg_reader_close(struct fota_pkg_reader *r)
{
	if (!r)
		return;
	if (r->a)
		archive_read_free(r->a);
	if (r->fd >= 0)
		close(r->fd);
	free(r->path);
	free(r);
}

/* Advance to the next member and check it is exactly `name`, a ustar regular file at
 * r->next_offset. *size gets its size. */
static fota_status next_member(struct fota_pkg_reader *r, const char *name, int64_t *size,
			       struct fota_error *err)
{
	struct archive_entry *e = NULL;
	int st = archive_read_next_header(r->a, &e);
	if (st == ARCHIVE_EOF)
		return fota_error_set(err, FOTA_E_FORMAT, "container: member %s is missing (archive ends)", name);
	if (st != ARCHIVE_OK)
		return fota_error_set(err, FOTA_E_FORMAT, "container: reading header of %s: %s", name,
				      archive_error_string(r->a));
	const char *got = archive_entry_pathname(e);
	if (!got || strcmp(got, name) != 0)
		return fota_error_set(err, FOTA_E_FORMAT, "container: expected member %s, found %s", name,
				      got ? got : "(unnamed)");
	if (archive_format(r->a) != ARCHIVE_FORMAT_TAR_USTAR)
		return fota_error_set(err, FOTA_E_FORMAT, "container: %s: not a plain ustar header (%s)",
				      name, archive_format_name(r->a));
	if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) || archive_entry_symlink(e))
		return fota_error_set(err, FOTA_E_FORMAT, "container: %s: not a regular file", name);
	la_int64_t pos = archive_read_header_position(r->a);
	if (pos < 0 || (uint64_t)pos != r->next_offset)
		return fota_error_set(err, FOTA_E_FORMAT,
				      "container: %s: header at byte %lld, expected %" PRIu64, name,
				      (long long)pos, r->next_offset);
	if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
		return fota_error_set(err, FOTA_E_FORMAT, "container: %s: no size", name);
	*size = archive_entry_size(e);
	return FOTA_OK;
}

static fota_status read_data(struct fota_pkg_reader *r, const char *name, uint8_t *buf, uint64_t size,
			     struct fota_error *err)
{
	uint64_t done = 0;
	while (done < size) {
		size_t want = size - done > (1u << 20) ? (1u << 20) : (size_t)(size - done);
		la_ssize_t n = archive_read_data(r->a, buf + done, want);
		if (n < 0)
			return fota_error_set(err, FOTA_E_FORMAT, "container: %s: %s", name,
					      archive_error_string(r->a));
		if (n == 0)
			return fota_error_set(err, FOTA_E_FORMAT,
					      "container: %s: truncated after %" PRIu64 " of %" PRIu64 " bytes",
					      name, done, size);
		done += (uint64_t)n;
	}
	r->next_offset += fota_pkg_member_span(size);
	return FOTA_OK;
}

static fota_status read_small_member(struct fota_pkg_reader *r, const char *name, uint64_t max,
				     uint8_t **out, size_t *len, struct fota_error *err)
{
	int64_t size = 0;
	fota_status rc = next_member(r, name, &size, err);
	if (rc)
		return rc;
	if (size == 0 || (uint64_t)size > max)
		return fota_error_set(err, size ? FOTA_E_LIMIT : FOTA_E_FORMAT,
				      "container: %s: %lld bytes, must be 1..%" PRIu64, name, (long long)size, max);
	uint8_t *buf = malloc((size_t)size + 1);
	if (!buf)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	rc = read_data(r, name, buf, (uint64_t)size, err);
	if (rc) {
		free(buf);
		return rc;
	}
	buf[size] = 0;
	*out = buf;
	*len = (size_t)size;
	return FOTA_OK;
}

fota_status fota_pkg_read_head(struct fota_pkg_reader *r, uint8_t **manifest, size_t *manifest_len,
			       uint8_t **sig, size_t *sig_len, struct fota_error *err)
{
	*manifest = NULL;
	if (sig)
		*sig = NULL;
	fota_status rc = read_small_member(r, "manifest.json", FOTA_MANIFEST_MAX, manifest, manifest_len, err);
	if (rc)
		return rc;
	if (!sig)
		return FOTA_OK;
	rc = read_small_member(r, "manifest.sig", FOTA_SIG_MAX, sig, sig_len, err);
	if (rc) {
		free(*manifest);
		*manifest = NULL;
	}
	return rc;
}

fota_status fota_pkg_read_member(struct fota_pkg_reader *r, const char *name, uint64_t size,
				 uint64_t offset, uint8_t *buf, struct fota_error *err)
{
	if (size > FOTA_PAYLOAD_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "container: %s: %" PRIu64 " bytes, limit %u",
				      name, size, FOTA_PAYLOAD_MAX);
	if (offset != r->next_offset)
		return fota_error_set(err, FOTA_E_INTERNAL, "container: %s: asked for offset %" PRIu64
				      ", reader is at %" PRIu64, name, offset, r->next_offset);
	int64_t got = 0;
	fota_status rc = next_member(r, name, &got, err);
	if (rc)
		return rc;
	if ((uint64_t)got != size)
		return fota_error_set(err, FOTA_E_INTEGRITY, "container: %s: %lld bytes, manifest says %" PRIu64,
				      name, (long long)got, size);
	return read_data(r, name, buf, size, err);
}

fota_status fota_pkg_read_end(struct fota_pkg_reader *r, struct fota_error *err)
{
	struct archive_entry *e = NULL;
	int st = archive_read_next_header(r->a, &e);
	if (st == ARCHIVE_OK)
		return fota_error_set(err, FOTA_E_FORMAT, "container: unexpected extra member %s",
				      archive_entry_pathname(e) ? archive_entry_pathname(e) : "(unnamed)");
	if (st != ARCHIVE_EOF)
		return fota_error_set(err, FOTA_E_FORMAT, "container: after the last payload: %s",
				      archive_error_string(r->a));
	/* The archive must end with exactly two zero blocks and nothing after them. */
	struct stat sb;
	if (fstat(r->fd, &sb) != 0)
		return fota_error_set(err, FOTA_E_IO, "%s: %s", r->path, strerror(errno));
	uint64_t want = r->next_offset + 2 * FOTA_TAR_BLOCK;
	if ((uint64_t)sb.st_size != want)
		return fota_error_set(err, FOTA_E_FORMAT,
				      "container: file is %lld bytes, layout says %" PRIu64 " (truncated or trailing data)",
				      (long long)sb.st_size, want);
	uint8_t z[2 * FOTA_TAR_BLOCK];
	if (pread(r->fd, z, sizeof(z), (off_t)r->next_offset) != (ssize_t)sizeof(z))
		return fota_error_set(err, FOTA_E_IO, "%s: read end marker: %s", r->path, strerror(errno));
	for (size_t i = 0; i < sizeof(z); i++)
		if (z[i])
			return fota_error_set(err, FOTA_E_FORMAT, "container: end-of-archive marker is not zero");
	return FOTA_OK;
}
