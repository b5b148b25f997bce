/*
 * delta_internal.h: declarations shared between the delta engine's files
 * (delta_diff.c, delta_encode.c, delta_apply.c, delta_bsdiff40.c) that are not part
 * of the public contract in fota/delta.h.
 */
#ifndef FOTA_DELTA_INTERNAL_H
#define FOTA_DELTA_INTERNAL_H

#include <stdint.h>
#include "fota/delta.h"

/*
 * Apply a BSDIFF40 patch (delta_bsdiff40.c). Same contract as fota_delta_apply:
 * fota_delta_apply dispatches here when the patch starts with "BSDIFF40".
 */
fota_status fota_bsdiff40_apply(const struct fota_delta_io *io, uint64_t source_size, uint64_t mem_limit,
				uint64_t *target_size, struct fota_error *err) FOTA_WUR;

#endif
