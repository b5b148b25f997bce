/*
 * error.h: the one status enum of libfota, and the error record that carries a
 * message with context ("manifest: chunk 12: sha256 mismatch").
 *
 * Every fallible libfota function returns an fota_status and, when it fails, fills
 * the caller's struct fota_error (which may be NULL when the caller does not care).
 * The enum is only ever appended to: programs map it to their exit codes and the
 * agent to FUMO result codes, so a value never changes meaning.
 */
#ifndef FOTA_ERROR_H
#define FOTA_ERROR_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define FOTA_WUR __attribute__((warn_unused_result))
#define FOTA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FOTA_WUR
#define FOTA_PRINTF(a, b)
#endif

typedef enum fota_status {
	FOTA_OK = 0,
	FOTA_E_NOMEM = 1,       /* allocation failed */
	FOTA_E_IO = 2,          /* a file could not be opened, read, written or synced */
	FOTA_E_ARG = 3,         /* a caller passed an invalid argument or option */
	FOTA_E_FORMAT = 4,      /* the container is malformed: members, order, names, truncation */
	FOTA_E_MANIFEST = 5,    /* the manifest is not valid JSON or breaks the schema */
	FOTA_E_LIMIT = 6,       /* a size or count exceeds a documented limit */
	FOTA_E_SIGNATURE = 7,   /* the CMS signature is malformed or does not match the content */
	FOTA_E_TRUST = 8,       /* the signer chain is untrusted, expired, revoked or has the wrong key usage */
	FOTA_E_INTEGRITY = 9,   /* a size or SHA-256 differs from what the signed manifest states */
	FOTA_E_SOURCE = 10,     /* the source image does not match the manifest */
	FOTA_E_EXPIRED = 11,    /* the package's expiry time has passed */
	FOTA_E_UNSUPPORTED = 12,/* a format version, method or algorithm this build does not know */
	FOTA_E_CRYPTO = 13,     /* a key or certificate could not be loaded, or OpenSSL failed */
	FOTA_E_COMPRESS = 14,   /* compressed data is corrupt, or compression failed */
	FOTA_E_PATCH = 15,      /* a delta patch is malformed or reads outside its inputs */
	FOTA_E_INTERNAL = 16,   /* a bug: an invariant did not hold */
	/* append only; never renumber or remove */
} fota_status;

#define FOTA_ERROR_MSG_MAX 512

struct fota_error {
	fota_status code;
	char msg[FOTA_ERROR_MSG_MAX];
	int sys_errno; /* the errno behind the error (ENOSPC...), 0 when none: set only by fota_error_errno */
};

/* Short, fixed description of a status ("signature invalid"). Never NULL. */
const char *fota_strerror(fota_status code);

/*
 * Record an error and return its code, so a caller can write
 *   return fota_error_set(err, FOTA_E_LIMIT, "manifest: %zu bytes, limit %u", n, max);
 * err may be NULL. The message should name where the error is, most general first.
 */
fota_status fota_error_set(struct fota_error *err, fota_status code, const char *fmt, ...)
	FOTA_PRINTF(3, 4);

/*
 * Like fota_error_set for a failed system call: the message is fmt's text, ": " and
 * strerror(errnum), and err->sys_errno keeps errnum, so a caller can tell a full disk
 * (ENOSPC) from other I/O errors as data rather than by message text.
 */
fota_status fota_error_errno(struct fota_error *err, fota_status code, int errnum, const char *fmt, ...)
	FOTA_PRINTF(4, 5);

/*
 * Prefix an existing message with more context ("image system: " + old message),
 * keeping its code and sys_errno. Returns err->code (FOTA_OK when err is NULL).
 */
fota_status fota_error_prefix(struct fota_error *err, const char *fmt, ...) FOTA_PRINTF(2, 3);

/* Reset to FOTA_OK with an empty message. err may be NULL. */
void fota_error_clear(struct fota_error *err);

#endif
