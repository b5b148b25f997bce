/*
 * tarhead.h: a tiny, strict parser for one 512-byte ustar header, for readers that
 * fetch a package piece by piece (the agent) and must not link libarchive.
 *
 * It accepts exactly the headers FORMAT.md section 2.1 allows: a correct checksum,
 * magic "ustar\0" and version "00", typeflag '0', a NUL-terminated name of 1 to 99
 * bytes with an empty prefix, and a size of zero-padded octal digits ended by a space
 * or NUL. Everything else is FOTA_E_FORMAT with a message naming the field.
 */
#ifndef FOTA_TARHEAD_H
#define FOTA_TARHEAD_H

#include <stdint.h>
#include "fota/error.h"

#define FOTA_TARHEAD_NAME_MAX 99

struct fota_tarhead {
	char name[FOTA_TARHEAD_NAME_MAX + 1]; /* NUL-terminated */
	uint64_t size;                        /* data bytes of the member */
	char typeflag;                        /* always '0' on success */
};

/* Parse block (512 bytes). out is filled only on success. */
fota_status fota_tarhead_parse(const uint8_t block[512], struct fota_tarhead *out,
			       struct fota_error *err) FOTA_WUR;

#endif
