/* fault-proxy: an HTTP/1.1 reverse proxy for tests that injects network faults.
 *
 * Listens on 127.0.0.1 only and forwards to an upstream on 127.0.0.1 only (nginx in the
 * tests). One request per connection: every response carries "Connection: close" and the
 * upstream is asked for "Connection: close" too, so a body ends where the upstream closes.
 * Faults are chosen per request number (1, 2, ... in order of arrival) by --fault rules.
 * See tests/proxy/README.md for the rule syntax and the log format.
 *
 * Only libc and pthreads. One detached thread per connection; every blocking wait is a
 * poll() in slices of 100 ms, so SIGTERM, --io-timeout and --max-seconds end everything.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define MAX_RULES 32
#define IO_CHUNK 16384

/* ---- options and rules ---- */

enum { FLIP_NONE, FLIP_BODY, FLIP_ABS, FLIP_RAND };

struct fault {
	/* selector: request numbers first..last (last 0 = no upper bound) */
	unsigned long first, last;
	char spec[256];           /* the rule as given, for the log */
	int status;               /* 0 or the status to answer without calling upstream */
	int has_drop;  unsigned long long drop_after;
	int has_stall; long stall_ms; /* -1 = forever */
	unsigned long long stall_at;
	int has_trunc; unsigned long long trunc;
	int flip;      unsigned long long flip_off;
	int has_cr_shift; long long cr_shift;
	int has_cr_total; unsigned long long cr_total;
	char swap[1024];          /* non-empty: request this path upstream instead */
};

static struct fault g_rules[MAX_RULES];
static int g_nrules;
static struct sockaddr_in g_upstream;
static long g_io_timeout_ms = 10000;
static unsigned long g_seed = 1;
static FILE *g_log;
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_count_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long g_reqno;
static int g_active;
static volatile sig_atomic_t g_stop;

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fault-proxy: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_ull(const char *s, unsigned long long *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* A decimal number at *s (no sign), *s moved past it; -1 if none or out of range. */
static int scan_ull(const char **s, unsigned long long *out)
{
	char *end;
	if (**s < '0' || **s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(*s, &end, 10);
	if (errno)
		return -1;
	*s = end;
	*out = v;
	return 0;
}

/* "bytes A-B/..." -> A, B and what follows the slash. */
static int parse_content_range(const char *in, unsigned long long *a, unsigned long long *b, const char **total)
{
	const char *p = in;
	if (strncmp(p, "bytes ", 6) != 0)
		return -1;
	p += 6;
	if (scan_ull(&p, a) < 0 || *p++ != '-' || scan_ull(&p, b) < 0 || *p++ != '/' || !*p)
		return -1;
	*total = p;
	return 0;
}

static int parse_ll(const char *s, long long *out)
{
	char *end;
	if (!*s)
		return -1;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* "req=N", "req=N-M", "req=N-", "every" */
static void parse_selector(const char *sel, struct fault *f, const char *rule)
{
	if (strcmp(sel, "every") == 0) {
		f->first = 1; f->last = 0;
		return;
	}
	if (strncmp(sel, "req=", 4) != 0)
		die("--fault '%s': selector must be 'every' or 'req=N[-[M]]'", rule);
	char buf[64];
	snprintf(buf, sizeof buf, "%s", sel + 4);
	char *dash = strchr(buf, '-');
	unsigned long long a, b;
	if (dash)
		*dash = 0;
	if (parse_ull(buf, &a) || a == 0 || a > ULONG_MAX)
		die("--fault '%s': bad request number '%s' (requests count from 1)", rule, buf);
	f->first = (unsigned long)a;
	if (!dash) {
		f->last = f->first;
	} else if (dash[1] == 0) {
		f->last = 0;
	} else {
		if (parse_ull(dash + 1, &b) || b < a || b > ULONG_MAX)
			die("--fault '%s': bad range end '%s'", rule, dash + 1);
		f->last = (unsigned long)b;
	}
}

static void parse_action(char *act, struct fault *f, const char *rule)
{
	char *val = strchr(act, '=');
	if (!val)
		die("--fault '%s': action '%s' needs '=VALUE'", rule, act);
	*val++ = 0;
	unsigned long long u;
	long long s;
	if (strcmp(act, "status") == 0) {
		if (parse_ull(val, &u) || u < 100 || u > 599)
			die("--fault '%s': status must be 100..599", rule);
		f->status = (int)u;
	} else if (strcmp(act, "drop-after") == 0) {
		if (parse_ull(val, &u))
			die("--fault '%s': drop-after needs a byte count", rule);
		f->has_drop = 1; f->drop_after = u;
	} else if (strcmp(act, "stall") == 0) {
		f->has_stall = 1;
		if (strcmp(val, "forever") == 0)
			f->stall_ms = -1;
		else if (parse_ull(val, &u) || u > 86400000ULL)
			die("--fault '%s': stall needs milliseconds or 'forever'", rule);
		else
			f->stall_ms = (long)u;
	} else if (strcmp(act, "stall-at") == 0) {
		if (parse_ull(val, &u))
			die("--fault '%s': stall-at needs a byte count", rule);
		f->stall_at = u;
	} else if (strcmp(act, "truncate") == 0) {
		if (parse_ull(val, &u) || u == 0)
			die("--fault '%s': truncate needs a byte count >= 1", rule);
		f->has_trunc = 1; f->trunc = u;
	} else if (strcmp(act, "flip") == 0) {
		if (strcmp(val, "rand") == 0) {
			f->flip = FLIP_RAND;
		} else {
			if (parse_ull(val, &u))
				die("--fault '%s': flip needs a body offset or 'rand'", rule);
			f->flip = FLIP_BODY; f->flip_off = u;
		}
	} else if (strcmp(act, "flip-abs") == 0) {
		if (parse_ull(val, &u))
			die("--fault '%s': flip-abs needs a file offset", rule);
		f->flip = FLIP_ABS; f->flip_off = u;
	} else if (strcmp(act, "cr-shift") == 0) {
		if (parse_ll(val, &s) || s == 0)
			die("--fault '%s': cr-shift needs a non-zero signed byte count", rule);
		f->has_cr_shift = 1; f->cr_shift = s;
	} else if (strcmp(act, "cr-total") == 0) {
		if (parse_ull(val, &u))
			die("--fault '%s': cr-total needs a byte count", rule);
		f->has_cr_total = 1; f->cr_total = u;
	} else if (strcmp(act, "swap") == 0) {
		if (val[0] != '/' || strlen(val) >= sizeof f->swap || strpbrk(val, " \r\n"))
			die("--fault '%s': swap needs an absolute URL path without spaces", rule);
		snprintf(f->swap, sizeof f->swap, "%s", val);
	} else {
		die("--fault '%s': unknown action '%s'", rule, act);
	}
}

static void parse_rule(const char *rule)
{
	if (g_nrules == MAX_RULES)
		die("at most %d --fault rules", MAX_RULES);
	struct fault *f = &g_rules[g_nrules++];
	memset(f, 0, sizeof *f);
	if (strlen(rule) >= sizeof f->spec || strpbrk(rule, " \t\r\n"))
		die("--fault '%s': too long or contains blanks", rule);
	snprintf(f->spec, sizeof f->spec, "%s", rule);
	char buf[256];
	snprintf(buf, sizeof buf, "%s", rule);
	char *save = NULL;
	char *sel = strtok_r(buf, ":", &save);
	if (!sel)
		die("--fault: empty rule");
	parse_selector(sel, f, rule);
	int nact = 0;
	for (char *act = strtok_r(NULL, ":", &save); act; act = strtok_r(NULL, ":", &save)) {
		parse_action(act, f, rule);
		nact++;
	}
	if (nact == 0)
		die("--fault '%s': no action", rule);
}

/* The faults for request n: every matching rule, later rules overriding earlier ones
 * field by field. spec lists the matching rules, ';'-separated, or "-". */
static void faults_for(unsigned long n, struct fault *out, char *spec, size_t spec_len)
{
	memset(out, 0, sizeof *out);
	snprintf(spec, spec_len, "-");
	size_t used = 0;
	for (int i = 0; i < g_nrules; i++) {
		const struct fault *f = &g_rules[i];
		if (n < f->first || (f->last && n > f->last))
			continue;
		if (used < spec_len) {
			int w = snprintf(spec + used, spec_len - used, "%s%s", used ? ";" : "", f->spec);
			if (w > 0)
				used += (size_t)w;
		}
		if (f->status) out->status = f->status;
		if (f->has_drop) { out->has_drop = 1; out->drop_after = f->drop_after; }
		if (f->has_stall) { out->has_stall = 1; out->stall_ms = f->stall_ms; out->stall_at = f->stall_at; }
		if (f->has_trunc) { out->has_trunc = 1; out->trunc = f->trunc; }
		if (f->flip) { out->flip = f->flip; out->flip_off = f->flip_off; }
		if (f->has_cr_shift) { out->has_cr_shift = 1; out->cr_shift = f->cr_shift; }
		if (f->has_cr_total) { out->has_cr_total = 1; out->cr_total = f->cr_total; }
		if (f->swap[0]) snprintf(out->swap, sizeof out->swap, "%s", f->swap);
	}
}

/* ---- socket I/O with deadlines ---- */

/* Wait for events on fd. deadline_ms: absolute (now_ms clock) or 0 for none.
 * Returns 1 ready, 0 timed out, -1 stopped or error. */
static int wait_fd(int fd, short events, long long deadline_ms)
{
	for (;;) {
		if (g_stop)
			return -1;
		long long left = 100;
		if (deadline_ms) {
			left = deadline_ms - now_ms();
			if (left <= 0)
				return 0;
			if (left > 100)
				left = 100;
		}
		struct pollfd p = { .fd = fd, .events = events };
		int r = poll(&p, 1, (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* read some bytes; returns >0, 0 at EOF, -1 error/timeout/stop */
static ssize_t read_some(int fd, char *buf, size_t len)
{
	if (wait_fd(fd, POLLIN, now_ms() + g_io_timeout_ms) != 1)
		return -1;
	for (;;) {
		ssize_t r = recv(fd, buf, len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		if (wait_fd(fd, POLLOUT, now_ms() + g_io_timeout_ms) != 1)
			return -1;
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Read until "\r\n\r\n". head gets the head (NUL-terminated, without the blank line);
 * rest/rest_len what came after it. Returns 0, or -1 on EOF/error/overflow. */
static int read_head(int fd, char *buf, size_t cap, size_t *head_len, size_t *total)
{
	size_t n = 0;
	while (n < cap - 1) {
		ssize_t r = read_some(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = 0;
		char *end = strstr(buf, "\r\n\r\n");
		if (end) {
			*head_len = (size_t)(end - buf) + 4;
			*total = n;
			return 0;
		}
	}
	return -1;
}

/* value of header name in a head (lines after the first), copied into out; 0 if found */
static int header_get(const char *head, const char *name, char *out, size_t out_len)
{
	size_t nl = strlen(name);
	const char *p = strstr(head, "\r\n");
	while (p && p[2] != '\r' && p[2] != 0) {
		const char *line = p + 2;
		const char *eol = strstr(line, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			size_t vl = (size_t)(eol - v);
			if (vl >= out_len)
				vl = out_len - 1;
			memcpy(out, v, vl);
			out[vl] = 0;
			return 0;
		}
		p = eol;
	}
	return -1;
}

static int is_hop_header(const char *line)
{
	static const char *const hop[] = { "connection:", "keep-alive:", "proxy-connection:", NULL };
	for (int i = 0; hop[i]; i++)
		if (strncasecmp(line, hop[i], strlen(hop[i])) == 0)
			return 1;
	return 0;
}

/* ---- one connection ---- */

struct result {
	unsigned long n;
	char method[16];
	char path[512];
	char range[128];
	int status;
	long long clen;           /* Content-Length sent to the client, -1 unknown */
	unsigned long long sent;  /* body bytes written to the client */
	const char *end;          /* how the response ended */
	char fault[1024];
	long long t0;
};

static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			*s = '_';
}

static void log_result(struct result *r)
{
	if (!g_log)
		return;
	sanitize(r->path);
	sanitize(r->range);
	pthread_mutex_lock(&g_log_lock);
	fprintf(g_log, "req=%lu method=%s path=%s range=%s status=%d clen=%lld sent=%llu end=%s ms=%lld fault=%s\n",
		r->n, r->method[0] ? r->method : "-", r->path[0] ? r->path : "-",
		r->range[0] ? r->range : "-", r->status, r->clen, r->sent, r->end,
		now_ms() - r->t0, r->fault);
	fflush(g_log);
	pthread_mutex_unlock(&g_log_lock);
}

static int connect_upstream(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&g_upstream, sizeof g_upstream) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	int err = 0;
	socklen_t el = sizeof err;
	if (wait_fd(fd, POLLOUT, now_ms() + g_io_timeout_ms) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Stall: send nothing for ms (-1: until the client goes away, SIGTERM or --max-seconds).
 * Returns -1 when the client went away. */
static int do_stall(int cfd, long ms)
{
	long long deadline = ms < 0 ? 0 : now_ms() + ms;
	for (;;) {
		int r = wait_fd(cfd, POLLIN, deadline);
		if (r == 0)
			return 0;
		if (r < 0)
			return -1;
		char b[512];
		ssize_t got = recv(cfd, b, sizeof b, MSG_DONTWAIT);
		if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
			return -1;
		/* pipelined bytes from the client are ignored */
	}
}

/* Rewrite "bytes A-B/T" per the fault; out gets the new header value. */
static void rewrite_content_range(const char *in, const struct fault *f, char *out, size_t out_len)
{
	unsigned long long a, b;
	const char *tp;
	char total[64];
	if (parse_content_range(in, &a, &b, &tp) < 0) {
		snprintf(out, out_len, "%s", in);
		return;
	}
	snprintf(total, sizeof total, "%.*s", (int)strcspn(tp, " \t\r\n"), tp);
	if (f->has_cr_shift) {
		long long d = f->cr_shift;
		if (d < 0 && (unsigned long long)(-d) > a)
			d = -(long long)a;
		a += (unsigned long long)d;
		b += (unsigned long long)d;
	}
	if (f->has_cr_total)
		snprintf(total, sizeof total, "%llu", f->cr_total);
	snprintf(out, out_len, "bytes %llu-%llu/%s", a, b, total);
}

static void serve(int cfd)
{
	static char const synth_fmt[] = "fault-proxy: injected %d\n";
	struct result r;
	memset(&r, 0, sizeof r);
	r.t0 = now_ms();
	r.clen = -1;
	r.end = "ok";
	snprintf(r.fault, sizeof r.fault, "-");
	unsigned long long flipped_at = ULLONG_MAX;   /* body offset actually flipped */
	int ufd = -1;
	char *req = malloc(HEAD_MAX), *resp = malloc(HEAD_MAX), *out = malloc(HEAD_MAX + 2048);
	char *body = malloc(IO_CHUNK);
	if (!req || !resp || !out || !body)
		goto out_nolog;

	size_t hlen, total;
	if (read_head(cfd, req, HEAD_MAX, &hlen, &total) < 0)
		goto out_nolog;       /* nothing (complete) asked: not a request */

	pthread_mutex_lock(&g_count_lock);
	r.n = ++g_reqno;
	pthread_mutex_unlock(&g_count_lock);

	char version[16] = "";
	if (sscanf(req, "%15s %511s %15s", r.method, r.path, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0) {
		r.status = 400;
		r.end = "bad-request";
		const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		write_all(cfd, bad, sizeof bad - 1);
		goto out;
	}
	header_get(req, "Range", r.range, sizeof r.range);

	struct fault f;
	faults_for(r.n, &f, r.fault, sizeof r.fault);

	if (f.status) {
		char sb[128];
		int bl = snprintf(sb, sizeof sb, synth_fmt, f.status);
		int ol = snprintf(out, HEAD_MAX, "HTTP/1.1 %d Injected Fault\r\nContent-Type: text/plain\r\n"
				  "Content-Length: %d\r\nConnection: close\r\n\r\n%s", f.status, bl, sb);
		r.status = f.status;
		r.clen = bl;
		if (write_all(cfd, out, (size_t)ol) == 0)
			r.sent = (unsigned long long)bl;
		else
			r.end = "client-error";
		goto out;
	}

	/* request body (rare here): forward what the client declares */
	char v[64];
	unsigned long long req_body = 0;
	if (header_get(req, "Content-Length", v, sizeof v) == 0 && parse_ull(v, &req_body) < 0) {
		r.end = "bad-request";
		goto out;
	}

	ufd = connect_upstream();
	if (ufd < 0) {
		const char bad[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		r.status = 502;
		r.end = "upstream-unreachable";
		write_all(cfd, bad, sizeof bad - 1);
		goto out;
	}

	/* request line (path swapped if asked) + end-to-end headers + Connection: close */
	const char *path = f.swap[0] ? f.swap : r.path;
	int ol = snprintf(out, HEAD_MAX + 2048, "%s %s HTTP/1.1\r\n", r.method, path);
	const char *p = strstr(req, "\r\n") + 2;
	const char *head_end = req + hlen - 2;          /* the final blank line */
	while (p < head_end) {
		const char *eol = strstr(p, "\r\n");
		size_t ll = (size_t)(eol - p) + 2;
		if (!is_hop_header(p) && (size_t)ol + ll < HEAD_MAX) {
			memcpy(out + ol, p, ll);
			ol += (int)ll;
		}
		p = eol + 2;
	}
	ol += snprintf(out + ol, HEAD_MAX + 2048 - (size_t)ol, "Connection: close\r\n\r\n");
	if (write_all(ufd, out, (size_t)ol) < 0 ||
	    write_all(ufd, req + hlen, total - hlen < req_body ? total - hlen : req_body) < 0) {
		r.end = "upstream-error";
		goto out;
	}
	for (unsigned long long left = req_body > total - hlen ? req_body - (total - hlen) : 0; left;) {
		ssize_t got = read_some(cfd, body, left < IO_CHUNK ? left : IO_CHUNK);
		if (got <= 0 || write_all(ufd, body, (size_t)got) < 0) {
			r.end = "client-error";
			goto out;
		}
		left -= (unsigned long long)got;
	}

	/* response head */
	size_t rhlen, rtotal;
	unsigned long long ustatus = 0;
	const char *sp = resp + 9; /* "HTTP/1.x NNN" */
	if (read_head(ufd, resp, HEAD_MAX, &rhlen, &rtotal) < 0 || strncmp(resp, "HTTP/1.", 7) != 0 ||
	    resp[8] != ' ' || scan_ull(&sp, &ustatus) < 0 || ustatus < 100 || ustatus > 999) {
		const char bad[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		r.status = 502;
		r.end = "upstream-error";
		write_all(cfd, bad, sizeof bad - 1);
		goto out;
	}
	r.status = (int)ustatus;
	unsigned long long clen = 0, range_start = 0;
	int has_clen = header_get(resp, "Content-Length", v, sizeof v) == 0 && parse_ull(v, &clen) == 0;
	if (has_clen)
		r.clen = (long long)clen;
	char cr[128];
	unsigned long long range_end;
	const char *range_total;
	if (header_get(resp, "Content-Range", cr, sizeof cr) == 0 &&
	    parse_content_range(cr, &range_start, &range_end, &range_total) < 0)
		range_start = 0;
	int is_head = strcmp(r.method, "HEAD") == 0;

	ol = 0;
	p = resp;
	head_end = resp + rhlen - 2;
	while (p < head_end) {
		const char *eol = strstr(p, "\r\n");
		size_t ll = (size_t)(eol - p) + 2;
		if (is_hop_header(p)) {
			/* dropped */
		} else if ((f.has_cr_shift || f.has_cr_total) && strncasecmp(p, "Content-Range:", 14) == 0) {
			char nv[192];
			rewrite_content_range(cr, &f, nv, sizeof nv);
			ol += snprintf(out + ol, HEAD_MAX + 2048 - (size_t)ol, "Content-Range: %s\r\n", nv);
		} else if ((size_t)ol + ll < HEAD_MAX) {
			memcpy(out + ol, p, ll);
			ol += (int)ll;
		}
		p = eol + 2;
	}
	ol += snprintf(out + ol, HEAD_MAX + 2048 - (size_t)ol, "Connection: close\r\n\r\n");
	if (write_all(cfd, out, (size_t)ol) < 0) {
		r.end = "client-error";
		goto out;
	}

	/* body limits and the flip position, relative to the body */
	unsigned long long limit = ULLONG_MAX;
	const char *limit_end = "ok";
	if (f.has_drop) {
		limit = f.drop_after;
		limit_end = "dropped";
	}
	if (f.has_trunc && has_clen) {
		unsigned long long t = clen > f.trunc ? clen - f.trunc : 0;
		if (t < limit) {
			limit = t;
			limit_end = "truncated";
		}
	}
	int flip = 0;
	unsigned long long flip_at = 0;
	if (f.flip == FLIP_BODY) {
		flip = 1; flip_at = f.flip_off;
	} else if (f.flip == FLIP_ABS && f.flip_off >= range_start) {
		flip = 1; flip_at = f.flip_off - range_start;
	} else if (f.flip == FLIP_RAND && has_clen && clen) {
		/* splitmix64 of seed and request number: reproducible per (seed, request) */
		uint64_t z = (uint64_t)g_seed * 0x9E3779B97F4A7C15ULL + r.n;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		z ^= z >> 31;
		flip = 1; flip_at = z % clen;
	}

	int stalled = !f.has_stall;
	size_t pending = rtotal - rhlen;     /* body bytes already read with the head */
	memmove(body, resp + rhlen, pending < IO_CHUNK ? pending : IO_CHUNK);
	if (pending > IO_CHUNK)
		pending = IO_CHUNK;          /* cannot happen: HEAD_MAX == IO_CHUNK */
	for (;;) {
		if (is_head)
			break;
		if (pending == 0) {
			if (!stalled && r.sent >= f.stall_at)
				goto stall_now;
			ssize_t got = read_some(ufd, body, IO_CHUNK);
			if (got == 0)
				break;
			if (got < 0) {
				r.end = "upstream-error";
				goto out;
			}
			pending = (size_t)got;
		}
		/* send at most up to the next event: stall point or limit */
		size_t n = pending;
		if (r.sent + n > limit)
			n = (size_t)(limit - r.sent);
		if (!stalled && r.sent + n > f.stall_at)
			n = (size_t)(f.stall_at - r.sent);
		if (flip && flip_at >= r.sent && flip_at < r.sent + n)
			body[flip_at - r.sent] ^= 0xff;
		if (n && write_all(cfd, body, n) < 0) {
			r.end = "client-error";
			goto out;
		}
		if (flip && flip_at >= r.sent && flip_at < r.sent + n) {
			flip = 0;
			flipped_at = flip_at;
		}
		r.sent += n;
		memmove(body, body + n, pending - n);
		pending -= n;
		if (r.sent >= limit) {
			r.end = limit_end;
			goto out;
		}
		if (!stalled && r.sent >= f.stall_at) {
stall_now:
			stalled = 1;
			if (do_stall(cfd, f.stall_ms) < 0) {
				r.end = g_stop ? "stopped" : "client-closed-in-stall";
				goto out;
			}
		}
	}
	if (has_clen && r.sent < clen && !is_head)
		r.end = "upstream-short";

out:
	if (flipped_at != ULLONG_MAX) {
		size_t fl = strlen(r.fault);
		snprintf(r.fault + fl, sizeof r.fault - fl, "(flipped@%llu)", flipped_at);
	}
	log_result(&r);
out_nolog:
	if (ufd >= 0)
		close(ufd);
	shutdown(cfd, SHUT_WR);
	close(cfd);
	free(req);
	free(resp);
	free(out);
	free(body);
}

static void *conn_thread(void *arg)
{
	int cfd = (int)(intptr_t)arg;
	serve(cfd);
	pthread_mutex_lock(&g_count_lock);
	g_active--;
	pthread_mutex_unlock(&g_count_lock);
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static int loopback_addr(const char *host, struct in_addr *a)
{
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, a) != 1)
		return -1;
	return (ntohl(a->s_addr) >> 24) == 127 ? 0 : -1;
}

static void usage(void)
{
	fputs("usage: fault-proxy --upstream [127.0.0.1:]PORT [--listen PORT] [--port-file FILE]\n"
	      "                   [--log FILE] [--fault RULE]... [--seed N] [--io-timeout MS]\n"
	      "                   [--max-seconds S]\n"
	      "RULE: SELECTOR:ACTION[:ACTION...]  SELECTOR: every | req=N | req=N-M | req=N-\n"
	      "ACTION: status=CODE drop-after=BYTES stall=MS|forever stall-at=BYTES truncate=BYTES\n"
	      "        flip=OFFSET|rand flip-abs=FILEOFFSET cr-shift=+-BYTES cr-total=BYTES swap=/PATH\n"
	      "See tests/proxy/README.md.\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *upstream = NULL, *log_path = NULL, *port_file = NULL;
	unsigned long long listen_port = 0, max_seconds = 0, u;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			usage();
		if (!val)
			die("%s: missing value (see --help)", a);
		i++;
		if (strcmp(a, "--upstream") == 0) {
			upstream = val;
		} else if (strcmp(a, "--listen") == 0) {
			if (parse_ull(val, &listen_port) || listen_port > 65535)
				die("--listen: bad port '%s'", val);
		} else if (strcmp(a, "--port-file") == 0) {
			port_file = val;
		} else if (strcmp(a, "--log") == 0) {
			log_path = val;
		} else if (strcmp(a, "--fault") == 0) {
			parse_rule(val);
		} else if (strcmp(a, "--seed") == 0) {
			if (parse_ull(val, &u) || u > ULONG_MAX)
				die("--seed: bad number '%s'", val);
			g_seed = (unsigned long)u;
		} else if (strcmp(a, "--io-timeout") == 0) {
			if (parse_ull(val, &u) || u == 0 || u > 3600000)
				die("--io-timeout: milliseconds 1..3600000");
			g_io_timeout_ms = (long)u;
		} else if (strcmp(a, "--max-seconds") == 0) {
			if (parse_ull(val, &max_seconds) || max_seconds > 86400)
				die("--max-seconds: 0..86400");
		} else {
			die("unknown option '%s' (see --help)", a);
		}
	}
	if (!upstream)
		die("--upstream is required");

	/* upstream: loopback only */
	char host[64] = "127.0.0.1";
	const char *colon = strrchr(upstream, ':');
	const char *port_s = upstream;
	if (colon) {
		size_t hl = (size_t)(colon - upstream);
		if (hl == 0 || hl >= sizeof host)
			die("--upstream '%s': bad host", upstream);
		memcpy(host, upstream, hl);
		host[hl] = 0;
		port_s = colon + 1;
	}
	memset(&g_upstream, 0, sizeof g_upstream);
	g_upstream.sin_family = AF_INET;
	if (loopback_addr(host, &g_upstream.sin_addr) < 0)
		die("--upstream '%s': only 127.0.0.0/8 (or localhost) is allowed", upstream);
	if (parse_ull(port_s, &u) || u == 0 || u > 65535)
		die("--upstream '%s': bad port", upstream);
	g_upstream.sin_port = htons((uint16_t)u);

	if (log_path) {
		g_log = fopen(log_path, "a");
		if (!g_log)
			die("--log %s: %s", log_path, strerror(errno));
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket: %s", strerror(errno));
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in la;
	memset(&la, 0, sizeof la);
	la.sin_family = AF_INET;
	la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);    /* loopback only, never anything else */
	la.sin_port = htons((uint16_t)listen_port);
	socklen_t ll = sizeof la;
	if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 64) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&la, &ll) < 0)
		die("listen on 127.0.0.1:%llu: %s", listen_port, strerror(errno));
	unsigned port = ntohs(la.sin_port);

	if (port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
		FILE *pf = fopen(tmp, "w");
		if (!pf || fprintf(pf, "%u\n", port) < 0 || fclose(pf) != 0 || rename(tmp, port_file) < 0)
			die("--port-file %s: %s", port_file, strerror(errno));
	}
	printf("listening on 127.0.0.1:%u\n", port);
	fflush(stdout);

	long long deadline = max_seconds ? now_ms() + (long long)max_seconds * 1000 : 0;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (!g_stop) {
		if (deadline && now_ms() >= deadline) {
			fprintf(stderr, "fault-proxy: --max-seconds %llu reached, exiting\n", max_seconds);
			g_stop = 1;
			break;
		}
		struct pollfd pl = { .fd = lfd, .events = POLLIN };
		if (poll(&pl, 1, 100) <= 0)
			continue;
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (cfd < 0)
			continue;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		pthread_mutex_lock(&g_count_lock);
		g_active++;
		pthread_mutex_unlock(&g_count_lock);
		if (pthread_create(&t, &attr, conn_thread, (void *)(intptr_t)cfd) != 0) {
			close(cfd);
			pthread_mutex_lock(&g_count_lock);
			g_active--;
			pthread_mutex_unlock(&g_count_lock);
		}
	}
	pthread_attr_destroy(&attr);
	close(lfd);
	/* connection threads see g_stop within 100 ms; wait for them (bounded) */
	for (int i = 0; i < 50; i++) {
		pthread_mutex_lock(&g_count_lock);
		int active = g_active;
		pthread_mutex_unlock(&g_count_lock);
		if (!active)
			break;
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (g_log)
		fclose(g_log);
	return 0;
}
