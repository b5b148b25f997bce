/*
 * delta_internal.h: declarations shared between the delta engine's files
 * (delta_diff.c, delta_encode.c, delta_apply.c, delta_bsdiff40.c) that are not part
 * of the public contract in fota/delta.h.
 */
#ifndef FOTA_DELTA_INTERNAL_H
#define FOTA_DELTA_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include "fota/delta.h"

/*
 * Apply a BSDIFF40 patch (delta_bsdiff40.c). Same contract as fota_delta_apply:
 * fota_delta_apply dispatches here when the patch starts with "BSDIFF40".
 */
fota_status fota_bsdiff40_apply(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
				uint64_t *target_size, struct fota_error *err) FOTA_WUR;

/*
 * The fota delta patch format (FORMAT.md, section 7). A 32-byte header, then blocks.
 *   0  8  magic "FOTADELT"
 *   8  1  version (1)
 *   9  1  flags (0; reserved)
 *  10  4  log2 windows of the control, diff-run, diff-literal and extra streams
 *  14  1  block_log: a block produces at most 2^block_log target bytes
 *  15  1  prefix_log: a source-window block reads at most 2^prefix_log source bytes
 *         (0: the patch has no such blocks)
 *  16  8  source size, little-endian
 *  24  8  target size, little-endian
 * Each block starts with a LEB128 varint kind:
 *   0 (script block): varints target bytes, raw control bytes, then the compressed
 *     lengths of its four pieces, then the pieces. Each stream is one zstd frame spread
 *     over the script blocks (flushed at every block end).
 *   1 (source-window block): varints target bytes, source offset, source length,
 *     compressed length, then one zstd frame that decodes to the target bytes with
 *     source[offset, +length) as its raw-content prefix.
 */
#define DELTA_MAGIC "FOTADELT"
#define DELTA_VERSION 1
#define DELTA_HDR_LEN 32
#define DELTA_WLOG_MIN 10
#define DELTA_WLOG_MAX 30
#define DELTA_BLOCK_LOG_MIN 12
#define DELTA_BLOCK_LOG_MAX 24
#define DELTA_BLOCK_LOG_DEFAULT 20
#define DELTA_CTRL_CAP 131072u         /* raw control bytes per block */
#define DELTA_WLOG_DEFAULT 21
#define DELTA_LEVEL_DEFAULT 19
#define DELTA_IO_BUF 65536u            /* apply's source, diff and target buffers */
#define DELTA_BLK_HDR_MAX 70           /* seven varints of at most 10 bytes */
#define DELTA_NSTREAMS 4
#define DELTA_KIND_SCRIPT 0
#define DELTA_KIND_WINDOW 1
#define DELTA_KIND_WINDOW_A64 2  /* a source-window block coded through the AArch64 filter */

/*
 * The AArch64 branch filter (FORMAT.md 7.2): in buf, which holds the image bytes at
 * absolute offset pos, every little-endian 32-bit word at an offset p with p % 4 == 0
 * lying wholly inside buf has its BL target (imm26) and ADRP page (imm21) made absolute
 * (relative + p / 4, relative + p / 4096, modulo the field size); inverse undoes it.
 * Code that moved keeps identical bytes for calls and page references to code and data
 * that did not, which zstd then matches.
 */
static inline void delta_a64_filter(uint8_t *buf, size_t len, uint64_t pos, int inverse)
{
	size_t i = (size_t)((4 - (pos & 3)) & 3);
	for (; i + 4 <= len; i += 4) {
		uint8_t *w = buf + i;
		uint32_t x = (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 | (uint32_t)w[3] << 24;
		uint64_t at = pos + i;
		if ((x & 0xFC000000u) == 0x94000000u) {
			uint32_t d = (uint32_t)(at >> 2);
			uint32_t imm = inverse ? x - d : x + d;
			x = 0x94000000u | (imm & 0x03FFFFFFu);
		} else if ((x & 0x9F000000u) == 0x90000000u) {
			uint32_t imm = ((x >> 29) & 3u) | ((x >> 3) & 0x1FFFFCu);
			uint32_t d = (uint32_t)(at >> 12);
			imm = (inverse ? imm - d : imm + d) & 0x1FFFFFu;
			x = (x & 0x9F00001Fu) | ((imm & 3u) << 29) | ((imm >> 2) << 5);
		} else {
			continue;
		}
		w[0] = (uint8_t)x;
		w[1] = (uint8_t)(x >> 8);
		w[2] = (uint8_t)(x >> 16);
		w[3] = (uint8_t)(x >> 24);
	}
}

/*
 * Code a source-window block with our own match finder and parser (delta_parse.c):
 * buf holds pre_len prefix bytes, then the n block bytes (1 <= n), then DELTA_PARSE_PAD
 * zero bytes. The block becomes one zstd frame of window 2^wlog (>= pre_len + n) with the
 * prefix as its raw-content prefix, entropy coded by zstd at level. The frame is checked
 * by decoding it. *out_len gets the frame's size (at most cap); on failure *why says what
 * went wrong.
 */
#define DELTA_PARSE_PAD 8
fota_status delta_parse_window(const uint8_t *buf, size_t pre_len, size_t n, int level, unsigned wlog, uint8_t *dst,
			       size_t cap, size_t *out_len, const char **why) FOTA_WUR;
/* Memory delta_parse_window takes for these sizes besides buf (an estimate from above). */
uint64_t delta_parse_mem(uint64_t pre_len, uint64_t n, unsigned wlog);
/* The source-window blocks our parser codes read at most 2^DELTA_PARSE_PREFIX_LOG source
 * bytes: on esb a 2 MiB prefix made the patch 0.6 % smaller for 40 % more parse time. */
#define DELTA_PARSE_PREFIX_LOG 20

/* The length of the common prefix of a and b, at most max. */
static inline size_t delta_common_len(const uint8_t *a, const uint8_t *b, size_t max)
{
	size_t n = 0;
	while (n + 8 <= max) {
		uint64_t x, y;
		memcpy(&x, a + n, 8);
		memcpy(&y, b + n, 8);
		if (x != y)
			return n + ((size_t)__builtin_ctzll(x ^ y) >> 3);
		n += 8;
	}
	while (n < max && a[n] == b[n])
		n++;
	return n;
}

/* Largest compressed piece for raw bytes n (zstd block overheads, frame header, checksum). */
static inline uint64_t delta_piece_bound(uint64_t n)
{
	return n + (n >> 8) + 64;
}

/* Sources of at least this many bytes are suffix-sorted with 64-bit indices
 * (libdivsufsort64, loaded at run time). 2^31 - 1 by default; tests lower it to run the
 * 64-bit path on small inputs. */
extern uint64_t fota_delta_sa64_threshold;

/* Threads to use for a request (0 = online cores), at least 1. */
unsigned fota_delta_threads(unsigned requested);

/* Memory apply needs for a patch with these stream windows, block size and source window. */
uint64_t fota_delta_apply_mem(const unsigned wlog[DELTA_NSTREAMS], unsigned block_log, unsigned prefix_log);

#endif
