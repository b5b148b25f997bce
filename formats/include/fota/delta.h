/*
 * delta.h: the delta engine. Diff an old and a new buffer into an edit script, encode
 * the script as a fota delta patch (FORMAT.md, "Delta patch") or as a classic
 * BSDIFF40 patch, and apply either kind with memory bounded by a constant.
 *
 * The edit script has bsdiff's semantics: starting with old_pos = 0, each control
 * triple (add, copy, seek) means
 *   1. for i in [0, add):  new[new_pos + i] = old[old_pos + i] + diff[i]  (mod 256)
 *      new_pos += add; old_pos += add
 *   2. new[new_pos .. new_pos + copy) = extra bytes;  new_pos += copy
 *   3. old_pos += seek (seek may be negative)
 * Diff bytes are read from the diff stream, extra bytes from the extra stream, each in
 * order. A valid script never reads old bytes outside [0, old_size) and produces
 * exactly new_size bytes.
 *
 * Apply is streaming: the patch is read front to back (fota format) or from three
 * cursors (BSDIFF40), the source is read at random offsets through a callback, and the
 * target is written front to back, so neither image is held in memory.
 */
#ifndef FOTA_DELTA_H
#define FOTA_DELTA_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

struct fota_delta_ctrl {
	uint64_t add;   /* bytes of old + diff */
	uint64_t copy;  /* bytes of extra */
	int64_t seek;   /* old_pos adjustment after the triple */
};

struct fota_delta_script {
	uint64_t old_size;
	uint64_t new_size;
	size_t n_ctrl;
	struct fota_delta_ctrl *ctrl;  /* owned */
	uint64_t diff_len;
	uint8_t *diff;                  /* owned; sum of add */
	uint64_t extra_len;
	uint8_t *extra;                 /* owned; sum of copy */
};

struct fota_delta_opts {
	unsigned threads;      /* 0 = all online cores; the output never depends on it */
	uint32_t window_log;   /* log2 of the largest zstd window the patch may need; 0 = default */
	int level;             /* zstd level; 0 = default */
};

enum fota_delta_format {
	FOTA_DELTA_FMT_FOTA = 0,
	FOTA_DELTA_FMT_BSDIFF40 = 1,
};

/* Diff old against new. *out owned by the caller (fota_delta_script_free). */
fota_status fota_delta_diff(const uint8_t *old_data, uint64_t old_size, const uint8_t *new_data,
			    uint64_t new_size, const struct fota_delta_opts *opts,
			    struct fota_delta_script **out, struct fota_error *err) FOTA_WUR;
void fota_delta_script_free(struct fota_delta_script *s);

/* Check a script against its own sizes (no read outside old, exact new_size). */
fota_status fota_delta_script_check(const struct fota_delta_script *s, struct fota_error *err) FOTA_WUR;

/* Encode a script. *patch is malloc'd, owned by the caller. */
fota_status fota_delta_encode(const struct fota_delta_script *s, const struct fota_delta_opts *opts,
			      uint8_t **patch, size_t *patch_len, struct fota_error *err) FOTA_WUR;
fota_status fota_bsdiff40_encode(const struct fota_delta_script *s, uint8_t **patch,
				 size_t *patch_len, struct fota_error *err) FOTA_WUR;

/* I/O for apply. Each callback returns FOTA_OK or an error it has described in err. */
struct fota_delta_io {
	void *ctx;
	uint64_t patch_size;
	/* Read exactly len patch bytes at offset off (off + len <= patch_size). */
	fota_status (*read_patch)(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err);
	/* Read exactly len source bytes at offset off (off + len <= source_size). */
	fota_status (*read_source)(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err);
	/* Append len bytes to the target. */
	fota_status (*write_target)(void *ctx, const void *buf, size_t len, struct fota_error *err);
};

/* Identify a patch from its first bytes (at least 8). -1 when neither format. */
int fota_delta_detect(const uint8_t *head, size_t len);

/*
 * Apply a patch of either format. mem_limit caps the memory apply may use (buffers plus
 * decompression windows); a patch whose header asks for more is refused with
 * FOTA_E_LIMIT before anything is written. Malformed patches are FOTA_E_PATCH or
 * FOTA_E_COMPRESS and never read or write outside their inputs. *target_size gets the
 * bytes written (may be NULL).
 */
fota_status fota_delta_apply(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
			     uint64_t *target_size, struct fota_error *err) FOTA_WUR;

/* Convenience: apply between files (OLD, PATCH) -> NEW, staged and renamed on success. */
fota_status fota_delta_apply_files(const char *old_path, const char *patch_path, const char *new_path,
				   uint64_t mem_limit, uint64_t *target_size, struct fota_error *err) FOTA_WUR;

#define FOTA_DELTA_MEM_DEFAULT (16u << 20)

/*
 * Encode like fota_delta_encode, with the images the script was made from at hand:
 * old_data (s->old_size bytes) and new_data (s->new_size bytes, the script's output).
 * Blocks where zstd against a window of the source (at most 2^window_log bytes) beats
 * the script's streams are written as source-window blocks (FORMAT.md section 7).
 * *patch is malloc'd, owned by the caller.
 */
fota_status fota_delta_encode_full(const struct fota_delta_script *s, const uint8_t *old_data,
				   const uint8_t *new_data, const struct fota_delta_opts *opts, uint8_t **patch,
				   size_t *patch_len, struct fota_error *err) FOTA_WUR;

/* A byte range of an image. */
struct fota_delta_range {
	uint64_t off, len;
};

/*
 * Cut the part of a script that produces new[new_off, new_off + new_len) into a
 * self-contained sub-script, for packaging one chunk of the target on its own.
 *   *ranges (malloc'd, *n_ranges entries, owned by the caller) lists the old ranges
 *   the part reads, sorted and merged (adjacent or overlapping ranges joined);
 *   *out (owned by the caller, fota_delta_script_free) is re-based so that its old
 *   image is the concatenation of those ranges in order: out->old_size is the sum of
 *   their lengths and out->new_size is new_len. Applying *out to that concatenation
 *   yields exactly new[new_off, +new_len).
 * The script must pass fota_delta_script_check; the range must lie within new_size
 * (FOTA_E_ARG otherwise). new_len 0 gives an empty script and no ranges.
 */
fota_status fota_delta_script_slice(const struct fota_delta_script *s, uint64_t new_off, uint64_t new_len,
				    struct fota_delta_script **out, struct fota_delta_range **ranges,
				    size_t *n_ranges, struct fota_error *err) FOTA_WUR;

/*
 * fota_delta_encode_full with a source-window block's compressor kept within mem_budget
 * bytes (0: no bound, the same as fota_delta_encode_full): its match-finder tables shrink
 * until zstd's estimate of its size fits, which can make the patch larger. The patch
 * still never depends on the thread count. fota-delta diff passes 1.5 times the two
 * images' size, so that its peak memory follows its input as bsdiff's does.
 */
fota_status fota_delta_encode_full_mem(const struct fota_delta_script *s, const uint8_t *old_data,
				       const uint8_t *new_data, const struct fota_delta_opts *opts, uint64_t mem_budget,
				       uint8_t **patch, size_t *patch_len, struct fota_error *err) FOTA_WUR;

#endif
