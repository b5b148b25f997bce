/*
 * util.h: small helpers the programs share: strict number and size parsing, and
 * whole-file staging (write to PATH.tmp, fsync, rename, fsync the directory).
 */
#ifndef FOTA_UTIL_H
#define FOTA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

/* Decimal unsigned integer, no sign, no spaces, no overflow. 0 on success, -1 otherwise. */
int fota_parse_u64(const char *s, uint64_t *out);
/* A size: decimal with an optional K, M or G suffix (powers of 1024), e.g. "4M". */
int fota_parse_size(const char *s, uint64_t *out);

/* Write a whole file atomically: PATH.tmp, fsync, rename, fsync the directory. */
fota_status fota_write_file_atomic(const char *path, const void *data, size_t len,
				   struct fota_error *err) FOTA_WUR;
/* fsync the directory that holds path. */
fota_status fota_sync_parent_dir(const char *path, struct fota_error *err) FOTA_WUR;
/* Read a whole regular file of at most max bytes. *out malloc'd (NUL-terminated), owned by the caller. */
fota_status fota_read_file(const char *path, size_t max, uint8_t **out, size_t *len,
			   struct fota_error *err) FOTA_WUR;

#endif
