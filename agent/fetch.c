/*
 * fetch.c: one range request per call (see fetch.h). HTTP(S) through libcurl with a
 * reused easy handle (keep-alive); the response is judged on its status line and
 * headers before the first body byte reaches the sink. file:// is read with pread,
 * with the file's size and mtime as validators, so the same code paths (resume,
 * "package changed") work without a server.
 *
 * libcurl is loaded when the first http(s) URL is opened (dlopen of its ABI soname,
 * libcurl.so.4), not linked: it pulls in 28 more shared libraries (TLS, HTTP/2, IDN,
 * Kerberos, LDAP...), whose loading was 4-5 ms of every agent start on the bench
 * machine. The agent starts at every boot (resume) and for status, report and update
 * from the cache, none of which needs the network.
 */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"

struct agent_fetch {
	char *url;
	char *path;        /* file:// */
	CURL *curl;
	const struct agent_config *cfg;
	uint64_t bytes;
	/* per request */
	uint64_t want_off, want_len, delivered;
	bool allow_short, judged, header_done;
	long status;
	bool have_range;
	uint64_t cr_start, cr_end, cr_total;
	struct agent_validators resp;
	const struct agent_validators *expect;
	fetch_sink sink;
	void *sink_ctx;
	enum fetch_result verdict;   /* why the write callback stopped the transfer */
	struct fetch_failure fail;   /* why the last request failed (fetch.h) */
	struct fota_error *err;
	char curl_err[CURL_ERROR_SIZE];
};

/* The libcurl calls fetch.c makes, resolved by curl_load. */
static struct {
	bool tried, ok;
	char why[200];
	CURLcode (*global_init)(long flags);
	CURL *(*easy_init)(void);
	void (*easy_cleanup)(CURL *c);
	void (*easy_reset)(CURL *c);
	CURLcode (*easy_setopt)(CURL *c, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *c);
	CURLcode (*easy_getinfo)(CURL *c, CURLINFO info, ...);
	const char *(*easy_strerror)(CURLcode cc);
} lc;

#ifndef LIBCURL_SONAME
#define LIBCURL_SONAME "libcurl.so.4"
#endif

/* POSIX's way to take a function pointer from dlsym (a void * cannot be cast to one in ISO C). */
#define LOAD_SYM(h, field, name) (*(void **)(&lc.field) = dlsym((h), (name)))

/* Load libcurl and run its global init, once; false with lc.why when it cannot be used. */
static bool curl_load(void)
{
	if (lc.tried)
		return lc.ok;
	lc.tried = true;
	void *h = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(lc.why, sizeof(lc.why), "%s", e ? e : LIBCURL_SONAME ": cannot be loaded");
		return false;
	}
	if (!LOAD_SYM(h, global_init, "curl_global_init") || !LOAD_SYM(h, easy_init, "curl_easy_init") ||
	    !LOAD_SYM(h, easy_cleanup, "curl_easy_cleanup") || !LOAD_SYM(h, easy_reset, "curl_easy_reset") ||
	    !LOAD_SYM(h, easy_setopt, "curl_easy_setopt") || !LOAD_SYM(h, easy_perform, "curl_easy_perform") ||
	    !LOAD_SYM(h, easy_getinfo, "curl_easy_getinfo") || !LOAD_SYM(h, easy_strerror, "curl_easy_strerror")) {
		snprintf(lc.why, sizeof(lc.why), LIBCURL_SONAME ": a function is missing");
		return false; /* the handle stays open: nothing else may use a half-loaded library */
	}
	if (lc.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(lc.why, sizeof(lc.why), "curl_global_init failed");
		return false;
	}
	lc.ok = true;
	return true;
}

fota_status agent_fetch_open(const char *url, const struct agent_config *cfg, struct agent_fetch **out,
			     struct fota_error *err)
{
	*out = NULL;
	size_t n = strlen(url);
	if (n == 0 || n > AGENT_URL_MAX)
		return fota_error_set(err, FOTA_E_ARG, "url: empty or longer than %d bytes", AGENT_URL_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return fota_error_set(err, FOTA_E_ARG, "url: space or non-ASCII byte at %zu", i);
	struct agent_fetch *f = calloc(1, sizeof(*f));
	if (!f || !(f->url = strdup(url))) {
		free(f);
		return fota_error_set(err, FOTA_E_NOMEM, "url: out of memory");
	}
	f->cfg = cfg;
	if (strncmp(url, "file://", 7) == 0) {
		const char *p = url + 7;
		if (strncmp(p, "localhost/", 10) == 0)
			p += 9;
		if (p[0] != '/' || strchr(p, '%') || strchr(p, '?') || strchr(p, '#')) {
			agent_fetch_close(f);
			return fota_error_set(err, FOTA_E_ARG, "url %s: file URLs must be file:///ABSOLUTE/PATH", url);
		}
		if (!(f->path = strdup(p))) {
			agent_fetch_close(f);
			return fota_error_set(err, FOTA_E_NOMEM, "url: out of memory");
		}
		*out = f;
		return FOTA_OK;
	}
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		agent_fetch_close(f);
		return fota_error_set(err, FOTA_E_ARG, "url %s: scheme must be http, https or file", url);
	}
	const char *host = strstr(url, "://") + 3;
	if (*host == '\0' || *host == '/') {
		agent_fetch_close(f);
		return fota_error_set(err, FOTA_E_ARG, "url %s: no host", url);
	}
	if (!curl_load()) {
		agent_fetch_close(f);
		return fota_error_set(err, FOTA_E_UNSUPPORTED, "url %s: http and https need libcurl: %s", url, lc.why);
	}
	if (!(f->curl = lc.easy_init())) {
		agent_fetch_close(f);
		return fota_error_set(err, FOTA_E_NOMEM, "curl: out of memory");
	}
	*out = f;
	return FOTA_OK;
}

void agent_fetch_close(struct agent_fetch *f)
{
	if (!f)
		return;
	if (f->curl)
		lc.easy_cleanup(f->curl);
	free(f->url);
	free(f->path);
	free(f);
}

uint64_t agent_fetch_bytes(const struct agent_fetch *f)
{
	return f->bytes;
}

struct fetch_failure agent_fetch_failure(const struct agent_fetch *f)
{
	return f->fail;
}

/* Record why the request failed; returns r. */
static enum fetch_result failed(struct agent_fetch *f, enum fetch_result r, enum fetch_cause cause, int sys_errno)
{
	f->fail.cause = cause;
	f->fail.sys_errno = sys_errno;
	return r;
}

/* Hand bytes to the sink; when it fails, the cause's errno is the one the sink
 * recorded in err (fota_error_errno), else the one its write left in errno. */
static bool feed(struct agent_fetch *f, fetch_sink sink, void *ctx, const uint8_t *buf, size_t len,
		 struct fota_error *err)
{
	errno = 0;
	if (sink(ctx, buf, len, err) == FOTA_OK)
		return true;
	int e = errno;
	f->fail.cause = FETCH_CAUSE_SINK;
	f->fail.sys_errno = err && err->sys_errno ? err->sys_errno : e;
	return false;
}

/* The validators must match the ones the job started with. */
static bool validators_match(const struct agent_validators *want, const struct agent_validators *got)
{
	if (!want || want->total == 0)
		return true;
	if (want->total != got->total)
		return false;
	if (want->etag[0] && got->etag[0])
		return strcmp(want->etag, got->etag) == 0;
	if (want->last_modified[0] && got->last_modified[0])
		return strcmp(want->last_modified, got->last_modified) == 0;
	/* a server that stopped sending the validator it sent before: assume a change */
	return !want->etag[0] && !want->last_modified[0];
}

/* ---- file:// ---- */

static enum fetch_result fetch_file(struct agent_fetch *f, uint64_t off, uint64_t len, bool allow_short,
				    fetch_sink sink, void *ctx, const struct agent_validators *expect,
				    struct agent_validators *got, uint64_t *delivered, struct fota_error *err)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		fota_error_set(err, FOTA_E_IO, "%s: %s", f->url, strerror(e));
		return failed(f, e == ENOENT || e == EACCES ? FETCH_FATAL : FETCH_RETRY, FETCH_CAUSE_FILE, e);
	}
	struct stat st;
	enum fetch_result res = FETCH_OK;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fota_error_set(err, FOTA_E_IO, "%s: not a regular file", f->url);
		res = failed(f, FETCH_FATAL, FETCH_CAUSE_FILE, 0);
		goto out;
	}
	memset(got, 0, sizeof(*got));
	got->total = (uint64_t)st.st_size;
	snprintf(got->last_modified, sizeof(got->last_modified), "mtime %lld.%09ld size %llu",
		 (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec, (unsigned long long)st.st_size);
	if (!validators_match(expect, got)) {
		fota_error_set(err, FOTA_E_FORMAT, "%s: the package changed", f->url);
		res = failed(f, FETCH_CHANGED, FETCH_CAUSE_CHANGED, 0);
		goto out;
	}
	if (off >= got->total || (len > got->total - off && !allow_short)) {
		fota_error_set(err, FOTA_E_FORMAT, "%s: range %llu+%llu past the end (%llu bytes)", f->url,
			       (unsigned long long)off, (unsigned long long)len, (unsigned long long)got->total);
		res = failed(f, FETCH_FATAL, FETCH_CAUSE_FILE, 0);
		goto out;
	}
	if (len > got->total - off)
		len = got->total - off;
	uint8_t buf[65536];
	while (len > 0) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		ssize_t r = pread(fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : 0;
			fota_error_set(err, FOTA_E_IO, "%s: read at %llu: %s", f->url, (unsigned long long)off,
				       r < 0 ? strerror(e) : "file shrank");
			res = failed(f, FETCH_RETRY, FETCH_CAUSE_FILE, e);
			goto out;
		}
		f->bytes += (uint64_t)r;
		if (!feed(f, sink, ctx, buf, (size_t)r, err)) {
			res = FETCH_SINK;
			goto out;
		}
		*delivered += (uint64_t)r;
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
out:
	close(fd);
	return res;
}

/* ---- http(s):// ---- */

static void trim_copy(char *dst, size_t cap, const char *src, size_t n)
{
	while (n > 0 && (*src == ' ' || *src == '\t')) {
		src++;
		n--;
	}
	while (n > 0 && (src[n - 1] == '\r' || src[n - 1] == '\n' || src[n - 1] == ' ' || src[n - 1] == '\t'))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

/* One decimal number of a header (no sign, no overflow); *p moves past it. */
static bool parse_u64_at(const char **p, uint64_t *out)
{
	if (**p < '0' || **p > '9')
		return false;
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(*p, &end, 10);
	if (errno != 0)
		return false;
	*out = v;
	*p = end;
	return true;
}

/* "bytes A-B/T", optionally followed by white space, and nothing else. */
static bool parse_content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t)
{
	if (strncmp(v, "bytes ", 6) != 0)
		return false;
	v += 6;
	if (!parse_u64_at(&v, a) || *v++ != '-' || !parse_u64_at(&v, b) || *v++ != '/' || !parse_u64_at(&v, t))
		return false;
	while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
		v++;
	return *v == '\0';
}

static size_t on_header(char *data, size_t size, size_t nitems, void *user)
{
	struct agent_fetch *f = user;
	size_t n = size * nitems;
	char line[1024];
	trim_copy(line, sizeof(line), data, n);
	if (strncmp(line, "HTTP/", 5) == 0) {
		/* a new response (redirect or 100-continue): forget the previous one */
		const char *sp = strchr(line, ' ');
		f->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		f->have_range = false;
		memset(&f->resp, 0, sizeof(f->resp));
		return n;
	}
	const char *colon = strchr(line, ':');
	if (!colon)
		return n;
	size_t klen = (size_t)(colon - line);
	const char *v = colon + 1;
	while (*v == ' ')
		v++;
	if (klen == 13 && strncasecmp(line, "content-range", 13) == 0) {
		uint64_t a, b, t;
		if (parse_content_range(v, &a, &b, &t) && a <= b && b < t) {
			f->have_range = true;
			f->cr_start = a;
			f->cr_end = b;
			f->cr_total = t;
		}
	} else if (klen == 4 && strncasecmp(line, "etag", 4) == 0) {
		trim_copy(f->resp.etag, sizeof(f->resp.etag), v, strlen(v));
	} else if (klen == 13 && strncasecmp(line, "last-modified", 13) == 0) {
		trim_copy(f->resp.last_modified, sizeof(f->resp.last_modified), v, strlen(v));
	}
	return n;
}

/* Judge the response once, before its first body byte is used. */
static enum fetch_result judge(struct agent_fetch *f)
{
	if (f->status == 206 && f->have_range) {
		f->resp.total = f->cr_total;
		if (!validators_match(f->expect, &f->resp)) {
			fota_error_set(f->err, FOTA_E_FORMAT, "%s: the package changed on the server (validators or size)",
				       f->url);
			return failed(f, FETCH_CHANGED, FETCH_CAUSE_CHANGED, 0);
		}
		uint64_t end = f->want_off + f->want_len; /* exclusive */
		if (f->allow_short && end > f->cr_total)
			end = f->cr_total;
		if (f->cr_start != f->want_off || f->cr_end + 1 != end) {
			fota_error_set(f->err, FOTA_E_FORMAT, "%s: asked for bytes %llu-%llu, got Content-Range %llu-%llu/%llu",
				       f->url, (unsigned long long)f->want_off, (unsigned long long)end - 1,
				       (unsigned long long)f->cr_start, (unsigned long long)f->cr_end,
				       (unsigned long long)f->cr_total);
			/* nothing of it is used; a broken proxy or cache may answer right next time */
			return failed(f, FETCH_RETRY, FETCH_CAUSE_RANGE, 0);
		}
		f->want_len = end - f->want_off;
		return FETCH_OK;
	}
	if (f->status == 206) {
		fota_error_set(f->err, FOTA_E_FORMAT, "%s: 206 without a usable Content-Range", f->url);
		return failed(f, FETCH_RETRY, FETCH_CAUSE_RANGE, 0);
	}
	if (f->status == 200) {
		fota_error_set(f->err, FOTA_E_UNSUPPORTED, "%s: the server ignores Range requests (200)", f->url);
		return failed(f, FETCH_FATAL, FETCH_CAUSE_NO_RANGE, 0);
	}
	if (f->status == 416 && f->expect && f->expect->total) {
		fota_error_set(f->err, FOTA_E_FORMAT, "%s: 416: the package changed on the server", f->url);
		return failed(f, FETCH_CHANGED, FETCH_CAUSE_CHANGED, 0);
	}
	fota_error_set(f->err, FOTA_E_IO, "%s: HTTP status %ld", f->url, f->status);
	if (f->status >= 500 || f->status == 408 || f->status == 429)
		return failed(f, FETCH_RETRY, FETCH_CAUSE_HTTP_STATUS, 0);
	return failed(f, FETCH_FATAL, FETCH_CAUSE_HTTP_STATUS, 0);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
	struct agent_fetch *f = user;
	size_t n = size * nmemb;
	f->bytes += n;
	if (!f->judged) {
		f->judged = true;
		f->verdict = judge(f);
	}
	if (f->verdict != FETCH_OK)
		return 0;
	if (n > f->want_len - f->delivered) {
		fota_error_set(f->err, FOTA_E_FORMAT, "%s: more bytes than the range", f->url);
		f->verdict = failed(f, FETCH_FATAL, FETCH_CAUSE_RANGE, 0);
		return 0;
	}
	if (!feed(f, f->sink, f->sink_ctx, (const uint8_t *)data, n, f->err)) {
		f->verdict = FETCH_SINK;
		return 0;
	}
	f->delivered += n;
	return n;
}

static int on_socket(void *user, curl_socket_t fd, curlsocktype purpose)
{
	struct agent_fetch *f = user;
	if (purpose == CURLSOCKTYPE_IPCXN && f->cfg && f->cfg->receive_buffer) {
		int v = (int)f->cfg->receive_buffer;
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	}
	return CURL_SOCKOPT_OK;
}

/*
 * The cause of a libcurl failure. os_errno (CURLINFO_OS_ERRNO) is asked for only after
 * CURLE_COULDNT_CONNECT, whose failed connect(2) sets it: libcurl before 8.8 does not
 * clear it between transfers, so after other errors it may be an earlier transfer's.
 * A connect that timed out in the kernel (ETIMEDOUT) is a timeout, like libcurl's own.
 */
static enum fetch_cause curl_cause(CURLcode cc, long os_errno)
{
	switch (cc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return FETCH_CAUSE_URL;
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
		return FETCH_CAUSE_RESOLVE;
	case CURLE_COULDNT_CONNECT:
		return os_errno == ETIMEDOUT ? FETCH_CAUSE_TIMEOUT : FETCH_CAUSE_CONNECT;
	case CURLE_OPERATION_TIMEDOUT: /* also CURLOPT_LOW_SPEED_LIMIT/TIME and CURLOPT_CONNECTTIMEOUT */
		return FETCH_CAUSE_TIMEOUT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CLIENTCERT:
		return FETCH_CAUSE_TLS;
	case CURLE_TOO_MANY_REDIRECTS:
		return FETCH_CAUSE_REDIRECTS;
	default:
		return FETCH_CAUSE_TRANSPORT;
	}
}

static enum fetch_result fetch_http(struct agent_fetch *f, uint64_t off, uint64_t len, bool allow_short,
				    fetch_sink sink, void *ctx, const struct agent_validators *expect,
				    struct agent_validators *got, uint64_t *delivered, struct fota_error *err)
{
	CURL *c = f->curl;
	char range[64];
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, off, off + len - 1);
	f->want_off = off;
	f->want_len = len;
	f->delivered = 0;
	f->allow_short = allow_short;
	f->judged = false;
	f->status = 0;
	f->have_range = false;
	memset(&f->resp, 0, sizeof(f->resp));
	f->expect = expect;
	f->sink = sink;
	f->sink_ctx = ctx;
	f->verdict = FETCH_OK;
	f->err = err;
	f->curl_err[0] = 0;
	lc.easy_reset(c);
	lc.easy_setopt(c, CURLOPT_URL, f->url);
	lc.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	lc.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	lc.easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	lc.easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	lc.easy_setopt(c, CURLOPT_RANGE, range);
	lc.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	lc.easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	lc.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	lc.easy_setopt(c, CURLOPT_HEADERDATA, f);
	lc.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	lc.easy_setopt(c, CURLOPT_WRITEDATA, f);
	lc.easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, on_socket);
	lc.easy_setopt(c, CURLOPT_SOCKOPTDATA, f);
	lc.easy_setopt(c, CURLOPT_ERRORBUFFER, f->curl_err);
	lc.easy_setopt(c, CURLOPT_BUFFERSIZE, 16384L);
	lc.easy_setopt(c, CURLOPT_USERAGENT, "fota-agent/1");
	if (f->cfg) {
		lc.easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)f->cfg->low_speed_limit);
		lc.easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)f->cfg->low_speed_time_s);
		lc.easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)f->cfg->connect_timeout_s);
		if (f->cfg->ca_bundle)
			lc.easy_setopt(c, CURLOPT_CAINFO, f->cfg->ca_bundle);
	}
	CURLcode cc = lc.easy_perform(c);
	*delivered += f->delivered;
	*got = f->resp;
	f->fail.http_status = f->status;
	if (f->judged && f->verdict != FETCH_OK)
		return f->verdict;
	/* libcurl may report an error (e.g. "Operation too slow") after the last byte asked
	 * for has arrived: every byte is here and judged, so the range is fetched */
	if (cc != CURLE_OK && f->judged && f->delivered == f->want_len)
		cc = CURLE_OK;
	if (cc == CURLE_OK) {
		if (!f->judged) {
			/* an empty body: judge the headers anyway */
			enum fetch_result v = judge(f);
			if (v != FETCH_OK)
				return v;
		}
		if (f->delivered != f->want_len) {
			fota_error_set(err, FOTA_E_IO, "%s: short response: %llu of %llu bytes", f->url,
				       (unsigned long long)f->delivered, (unsigned long long)f->want_len);
			return failed(f, FETCH_RETRY, FETCH_CAUSE_SHORT, 0);
		}
		return FETCH_OK;
	}
	fota_error_set(err, FOTA_E_IO, "%s: %s", f->url, f->curl_err[0] ? f->curl_err : lc.easy_strerror(cc));
	f->fail.curl_code = (int)cc;
	long os_errno = 0;
	if (cc == CURLE_COULDNT_CONNECT && lc.easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno) != CURLE_OK)
		os_errno = 0;
	f->fail.cause = curl_cause(cc, os_errno);
	f->fail.sys_errno = (int)os_errno;
	switch (cc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_TOO_MANY_REDIRECTS:
		return FETCH_FATAL;
	default:
		return FETCH_RETRY;
	}
}

enum fetch_result agent_fetch_range(struct agent_fetch *f, uint64_t off, uint64_t len, bool allow_short,
				    fetch_sink sink, void *ctx, const struct agent_validators *expect,
				    struct agent_validators *got, uint64_t *delivered, struct fota_error *err)
{
	memset(&f->fail, 0, sizeof(f->fail));
	if (len == 0 || off > UINT64_MAX - len) {
		fota_error_set(err, FOTA_E_ARG, "fetch: empty or overflowing range");
		return failed(f, FETCH_FATAL, FETCH_CAUSE_REQUEST, 0);
	}
	memset(got, 0, sizeof(*got));
	if (f->path)
		return fetch_file(f, off, len, allow_short, sink, ctx, expect, got, delivered, err);
	return fetch_http(f, off, len, allow_short, sink, ctx, expect, got, delivered, err);
}
