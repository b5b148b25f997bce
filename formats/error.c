/*
 * error.c: status descriptions and the error record (see fota/error.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fota/error.h"

static const char *const descriptions[] = {
	[FOTA_OK] = "success",
	[FOTA_E_NOMEM] = "out of memory",
	[FOTA_E_IO] = "input/output error",
	[FOTA_E_ARG] = "invalid argument",
	[FOTA_E_FORMAT] = "malformed package container",
	[FOTA_E_MANIFEST] = "invalid manifest",
	[FOTA_E_LIMIT] = "limit exceeded",
	[FOTA_E_SIGNATURE] = "signature invalid",
	[FOTA_E_TRUST] = "signer not trusted",
	[FOTA_E_INTEGRITY] = "integrity check failed",
	[FOTA_E_SOURCE] = "source image mismatch",
	[FOTA_E_EXPIRED] = "package expired",
	[FOTA_E_UNSUPPORTED] = "unsupported",
	[FOTA_E_CRYPTO] = "cryptographic error",
	[FOTA_E_COMPRESS] = "compressed data error",
	[FOTA_E_PATCH] = "malformed patch",
	[FOTA_E_INTERNAL] = "internal error",
};

const char *fota_strerror(fota_status code)
{
	if ((unsigned)code < sizeof(descriptions) / sizeof(descriptions[0]) && descriptions[code])
		return descriptions[code];
	return "unknown error";
}

fota_status fota_error_set(struct fota_error *err, fota_status code, const char *fmt, ...)
{
	if (!err)
		return code;
	err->code = code;
	err->sys_errno = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

fota_status fota_error_errno(struct fota_error *err, fota_status code, int errnum, const char *fmt, ...)
{
	if (!err)
		return code;
	char what[FOTA_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	err->code = code;
	err->sys_errno = errnum;
	snprintf(err->msg, sizeof(err->msg), "%s: %s", what, strerror(errnum));
	return code;
}

fota_status fota_error_prefix(struct fota_error *err, const char *fmt, ...)
{
	if (!err)
		return FOTA_OK;
	char prefix[FOTA_ERROR_MSG_MAX];
	char old[FOTA_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%s%s", prefix, old);
	return err->code;
}

void fota_error_clear(struct fota_error *err)
{
	if (!err)
		return;
	err->code = FOTA_OK;
	err->msg[0] = '\0';
	err->sys_errno = 0;
}
