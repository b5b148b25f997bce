/*
 * inplace.h: the in-place update scheme (FORMAT.md, "In-place updates"), shared by
 * the packager (planning), the verifier and the agent (checking).
 *
 * A single-slot device overwrites its source image with the target, chunk by chunk in
 * manifest order. A chunk may read partition bytes only while they still hold source
 * bytes; bytes that a later chunk still needs after an earlier chunk overwrites them
 * are first copied ("stashed") into a scratch area, and the reader takes them from
 * there. A chunk whose partition reads overlap its own target range is written ahead:
 * its output goes to the scratch area's staging region first, so an interrupted copy
 * can be redone. Scratch layout: stash region [0, stash_end), staging region
 * [stash_end, stash_end + largest staged chunk).
 */
#ifndef FOTA_INPLACE_H
#define FOTA_INPLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "fota/manifest.h"

/*
 * Order one image's chunks for in-place application and add the stash copies it needs.
 * chunks: n chunks in target order, each with its partition reads (scratch == false) and
 * no stash. On success the array is permuted into application order, reads that must
 * come from scratch are rewritten (split into partition and scratch pieces, in the same
 * order, so the bytes a patch sees are unchanged), chunks get their stash lists, and
 * to_full[k] (k in the new order) says the chunk's reads had to be dropped: the caller
 * must make it a FULL chunk. Live stash bytes never exceed scratch_max; *stash_end gets
 * the end of the stash region used. Cycles are broken by the stash when it fits, by
 * conversion to FULL otherwise. to_full must hold n entries.
 */
fota_status fota_inplace_plan(struct fota_chunk *chunks, size_t n, uint64_t scratch_max, bool *to_full,
			      uint64_t *stash_end, struct fota_error *err) FOTA_WUR;

/* True when the chunk reads partition bytes inside its own target range (it is written ahead). */
bool fota_inplace_self_overlap(const struct fota_chunk *ch);

/* The stash region's end for a whole manifest: where staging starts. */
uint64_t fota_inplace_stash_end(const struct fota_manifest *m);
/* Bytes of scratch the manifest's in-place scheme needs (stash region + largest staged chunk). */
uint64_t fota_inplace_scratch_needed(const struct fota_manifest *m);

/*
 * Check that applying the image's chunks in manifest order never reads a partition byte
 * after a chunk overwrote it, that every stash copies bytes not yet overwritten into
 * [0, stash_end), and that every scratch read lies inside bytes a stash wrote earlier
 * (and no later stash replaced). The verifier and the agent run it before anything is
 * written. FOTA_E_MANIFEST with the chunk and range on failure.
 */
fota_status fota_inplace_check(const struct fota_image *im, uint64_t stash_end, struct fota_error *err) FOTA_WUR;

#endif
