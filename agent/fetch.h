/*
 * fetch.h: byte ranges of a package from http://, https:// (libcurl) or file:// (pread).
 *
 * Every request names an exact range and every response is checked before its bytes
 * are handed on: status 206, a Content-Range of exactly the range asked for, the total
 * size and the validators (ETag, else Last-Modified) of the package as first seen. For
 * file:// the validators are the file's size and modification time. One attempt per
 * call: retrying, backoff and the retry window are the caller's (agent.c).
 */
#ifndef FOTA_AGENT_FETCH_H
#define FOTA_AGENT_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "config.h"
#include "journal.h"

struct agent_validators {
	uint64_t total;                              /* package size; 0 = not known yet */
	char etag[AGENT_VALIDATOR_MAX + 1];
	char last_modified[AGENT_VALIDATOR_MAX + 1];
};

enum fetch_result {
	FETCH_OK = 0,     /* every byte of the range delivered */
	FETCH_RETRY,      /* transient failure (network, 5xx, 408, 429, timeout, low speed): retry later */
	FETCH_FATAL,      /* permanent failure (bad URL, 4xx, no Range support, wrong range) */
	FETCH_CHANGED,    /* the package on the server is not the one this job started with */
	FETCH_SINK,       /* the sink failed (its error is in err) */
};

/*
 * Why the last agent_fetch_range call failed, as data (from the CURLcode, the HTTP
 * status and errno), so that the agent picks the FUMO result code (fumo.c) without
 * reading message texts. The message in err stays the one for people.
 */
enum fetch_cause {
	FETCH_CAUSE_NONE = 0,    /* the last request delivered its range (or none ran yet) */
	FETCH_CAUSE_REQUEST,     /* the caller's range was empty or overflows */
	FETCH_CAUSE_URL,         /* libcurl refused the URL: malformed, or a redirect to another scheme */
	FETCH_CAUSE_RESOLVE,     /* the host or proxy name did not resolve */
	FETCH_CAUSE_CONNECT,     /* no connection: refused, no route, network unreachable */
	FETCH_CAUSE_TIMEOUT,     /* connect or transfer timeout, or below the low-speed limit */
	FETCH_CAUSE_TLS,         /* TLS handshake, certificate verification, CA bundle or CRL */
	FETCH_CAUSE_TRANSPORT,   /* the connection failed otherwise: reset, closed early, bad reply */
	FETCH_CAUSE_REDIRECTS,   /* too many redirects */
	FETCH_CAUSE_HTTP_STATUS, /* an error status (http_status): 4xx, 5xx, 416 before the size is known */
	FETCH_CAUSE_NO_RANGE,    /* 200: the server ignores Range requests */
	FETCH_CAUSE_RANGE,       /* 206 without the Content-Range asked for, or more bytes than the range */
	FETCH_CAUSE_SHORT,       /* the response ended before the range did */
	FETCH_CAUSE_CHANGED,     /* validators or size differ from the job's, or 416 on a known package */
	FETCH_CAUSE_FILE,        /* file://: open or read failed (sys_errno), not a regular file, past the end */
	FETCH_CAUSE_SINK,        /* the sink (a local write) failed: sys_errno as the write left it, 0 if none */
	FETCH_CAUSE_COUNT        /* not a cause: the number of them */
};

struct fetch_failure {
	enum fetch_cause cause;
	long http_status; /* status of the last response (0: none arrived, or file://) */
	int curl_code;    /* the CURLcode of a libcurl failure, 0 otherwise */
	int sys_errno;    /* errno behind it (file://, sink, libcurl's for a failed connect); 0 when none */
};

/* Receives the bytes of the range in order. */
typedef fota_status (*fetch_sink)(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err);

struct agent_fetch;

/* Prepare fetching url (checked: scheme http, https or file). FOTA_E_ARG for a bad URL. */
fota_status agent_fetch_open(const char *url, const struct agent_config *cfg, struct agent_fetch **out,
			     struct fota_error *err) FOTA_WUR;
void agent_fetch_close(struct agent_fetch *f);

/*
 * Fetch [off, off + len). With allow_short, a range running past the end of the package
 * is cut at the end (for the head). expect: the validators to insist on (total 0 = none
 * yet); got receives the response's. *delivered counts bytes given to the sink, also on
 * failure, so the caller can resume from the next byte.
 */
enum fetch_result agent_fetch_range(struct agent_fetch *f, uint64_t off, uint64_t len, bool allow_short,
				    fetch_sink sink, void *ctx, const struct agent_validators *expect,
				    struct agent_validators *got, uint64_t *delivered, struct fota_error *err);

/* Why the last agent_fetch_range call failed; cause FETCH_CAUSE_NONE after FETCH_OK. */
struct fetch_failure agent_fetch_failure(const struct agent_fetch *f);

/* Bytes of response bodies received so far (all requests). */
uint64_t agent_fetch_bytes(const struct agent_fetch *f);

#endif
