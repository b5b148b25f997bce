/*
 * container.h: the package file, a POSIX ustar archive written and read with
 * libarchive (FORMAT.md, "Container").
 *
 * Members, in this order and nothing else:
 *   manifest.json, manifest.sig, then one payload per chunk in application order,
 *   named by fota_pkg_payload_name().
 * Every header is a plain 512-byte ustar header (no pax or GNU extensions), mtime 0,
 * uid/gid 0, owner/group "root", mode 0644, so the byte offset of every payload
 * follows from the signed manifest and the two head sizes (fota_pkg_payload_offset()).
 *
 * The writer stages into "PATH.tmp" and renames over PATH only on commit, so a failed
 * run leaves no partial package. The reader is strict: it refuses any member that is
 * not exactly the next one expected, so a truncated, reordered or padded package, or a
 * name with ".." or "/", is FOTA_E_FORMAT before any payload byte is used.
 */
#ifndef FOTA_CONTAINER_H
#define FOTA_CONTAINER_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "fota/manifest.h"

#define FOTA_TAR_BLOCK 512u
#define FOTA_PAYLOAD_NAME_MAX 64

/* Bytes a member of `size` data bytes occupies: its header plus data padded to 512. */
uint64_t fota_pkg_member_span(uint64_t size);
/* Offset of the first payload header, given the sizes of manifest.json and manifest.sig. */
uint64_t fota_pkg_head_size(uint64_t manifest_len, uint64_t sig_len);
/* Offset of chunk k's payload data (k counts over all images in manifest order). */
uint64_t fota_pkg_payload_offset(const struct fota_manifest *m, uint64_t manifest_len,
				 uint64_t sig_len, size_t k);
/* "images/<image>/<index, 6 digits>.zst" for FULL, ".fdp" for DELTA. */
void fota_pkg_payload_name(const char *image, size_t index, enum fota_method method,
			   char out[FOTA_PAYLOAD_NAME_MAX]);

/* ---- writer ---- */
struct fota_pkg_writer;

/* Start writing PATH (staged as PATH.tmp). *out owned by the caller: commit or abort it. */
fota_status fota_pkg_writer_open(const char *path, struct fota_pkg_writer **out,
				 struct fota_error *err) FOTA_WUR;
/* Append one member. */
fota_status fota_pkg_writer_add(struct fota_pkg_writer *w, const char *name, const void *data,
				size_t len, struct fota_error *err) FOTA_WUR;
/* Finish the archive, fsync, rename to PATH, fsync the directory, free w. */
fota_status fota_pkg_writer_commit(struct fota_pkg_writer *w, struct fota_error *err) FOTA_WUR;
/* Remove the staging file and free w. NULL does nothing. */
void fota_pkg_writer_abort(struct fota_pkg_writer *w);

/* ---- reader ---- */
struct fota_pkg_reader;

fota_status fota_pkg_reader_open(const char *path, struct fota_pkg_reader **out,
				 struct fota_error *err) FOTA_WUR;
/*
 * Read the two head members. Sizes are checked against FOTA_MANIFEST_MAX and
 * FOTA_SIG_MAX from the tar header before any data is read. With sig == NULL the
 * package is expected to be unsigned (manifest.json directly followed by payloads).
 * Buffers are malloc'd and owned by the caller.
 */
fota_status fota_pkg_read_head(struct fota_pkg_reader *r, uint8_t **manifest, size_t *manifest_len,
			       uint8_t **sig, size_t *sig_len, struct fota_error *err) FOTA_WUR;
/*
 * Read the next member, which must be named `name`, be a regular file of exactly `size`
 * bytes (size <= FOTA_PAYLOAD_MAX) and sit at byte offset `offset` (header position).
 * Data goes to buf (size bytes).
 */
fota_status fota_pkg_read_member(struct fota_pkg_reader *r, const char *name, uint64_t size,
				 uint64_t offset, uint8_t *buf, struct fota_error *err) FOTA_WUR;
/* Check that the archive ends here: no further member, a proper end marker. */
fota_status fota_pkg_read_end(struct fota_pkg_reader *r, struct fota_error *err) FOTA_WUR;
void fota_pkg_reader_close(struct fota_pkg_reader *r);

#endif
