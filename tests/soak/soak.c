/*
 * soak: consecutive updates A->B, B->A, ... of two simulated devices (one A/B, one in
 * place), downloaded over real HTTP from nginx through tests/proxy/fault-proxy with
 * random network faults, and applied by the agent library on the power-cut simulation
 * backend (agent/storage_sim.c) with random power cuts: a cut drops every unsynced write
 * (and tears the last one half the time), the device "reboots" and a fresh agent
 * resumes, possibly cut again, until the job is done. After every update the target must
 * be the exact image; on A/B the active slot must not have been written.
 *
 * This is a true power-cut simulation of the device's storage, not a kill of a process:
 * what survives a cut is exactly what the simulated device made durable.
 *
 * Usage (tests/soak/soak.sh prepares everything and runs it):
 *   soak DIR NGINX_PORT PROXY_BIN UPDATES SEED
 * DIR holds a.img, b.img, root.pem and www/ (served by nginx) with ab-a2b.fota,
 * ab-b2a.fota (A/B delta), abfull-a2b.fota, abfull-b2a.fota (A/B full), ip-a2b.fota,
 * ip-b2a.fota (in place) and their republished copies *.r.fota (same bytes, other
 * mtime: another ETag). Exit 0 when every update reached its exact target.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../agent/agent.h"
#include "../../agent/config.h"

extern char **environ;

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

/* ---- fake clock: backoff sleeps cost no real time ---- */
struct fclock {
	int64_t now_ms;
};
static int64_t fc_now(void *ctx)
{
	struct fclock *c = ctx;
	c->now_ms += 20;
	return c->now_ms;
}
static void fc_sleep(void *ctx, uint64_t ms)
{
	struct fclock *c = ctx;
	c->now_ms += (int64_t)ms;
}
static uint64_t fc_random(void *ctx)
{
	(void)ctx;
	return rnd();
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, got;
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 1 << 20;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	*len = n;
	return buf;
}

/* ---- totals for the summary ---- */
struct totals {
	unsigned updates, failed, boots, cuts, torn_cuts, cuts_in_resume, reissued, faults_planned;
	unsigned fault_kind[10];
	unsigned injected; /* proxy log lines with a fault that matched */
	uint64_t proxy_sent, pkg_bytes;
};
static const char *const fault_names[10] = { "drop", "500", "503", "truncate", "flip", "stall",
					     "new-total", "swap", "-", "-" };

/* ---- the proxy, one per update ---- */
struct proxy {
	pid_t pid;
	int port;
	char log[600];
};

static int proxy_start(struct proxy *p, const char *bin, const char *dir, int nginx_port, char rules[][96], int n_rules)
{
	char up[32], portfile[600], seed[32];
	snprintf(up, sizeof(up), "127.0.0.1:%d", nginx_port);
	snprintf(portfile, sizeof(portfile), "%s/proxy.port", dir);
	snprintf(p->log, sizeof(p->log), "%s/proxy.log", dir);
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)(rnd() % 100000 + 1));
	unlink(portfile);
	unlink(p->log);
	const char *argv[64];
	int a = 0;
	argv[a++] = bin;
	argv[a++] = "--upstream";
	argv[a++] = up;
	argv[a++] = "--port-file";
	argv[a++] = portfile;
	argv[a++] = "--log";
	argv[a++] = p->log;
	argv[a++] = "--io-timeout";
	argv[a++] = "5000";
	argv[a++] = "--max-seconds";
	argv[a++] = "600";
	argv[a++] = "--seed";
	argv[a++] = seed;
	for (int i = 0; i < n_rules && a < 60; i++) {
		argv[a++] = "--fault";
		argv[a++] = rules[i];
	}
	argv[a] = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	int rc = posix_spawn(&p->pid, bin, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		fprintf(stderr, "soak: spawn %s: %s\n", bin, strerror(rc));
		return -1;
	}
	for (int i = 0; i < 100; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			char line[32];
			char *end = NULL;
			long v = fgets(line, sizeof(line), f) ? strtol(line, &end, 10) : 0;
			fclose(f);
			if (end && end != line && v > 0 && v < 65536) {
				p->port = (int)v;
				return 0;
			}
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "soak: the proxy did not start\n");
	return -1;
}

static void proxy_stop(struct proxy *p, struct totals *t)
{
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	int st;
	waitpid(p->pid, &st, 0);
	p->pid = 0;
	FILE *f = fopen(p->log, "r");
	if (!f)
		return;
	char line[2048];
	while (fgets(line, sizeof(line), f)) {
		char *s = strstr(line, " sent=");
		if (s)
			t->proxy_sent += strtoull(s + 6, NULL, 10);
		char *fl = strstr(line, " fault=");
		if (fl && strncmp(fl + 7, "-", 1) != 0)
			t->injected++;
	}
	fclose(f);
}

/*
 * Up to three random transient faults for this update's requests (about n_req of them).
 * changing: whether a fault that makes the package look changed (a new Content-Range
 * total, or the republished package with a new ETag) is allowed; the job then starts
 * over and fetches its head again. Two kinds are kept away from every head request,
 * because there the agent rightly treats them as a bad package, not as a network fault
 * (test_net_faults.sh covers both): a flipped byte (the signature fails) and a wrong
 * total before the job knows the package's size (the manifest disagrees). So flips never
 * hit requests 1-2, and an update with a changing fault gets no flip and only one
 * changing fault. At most one flip per update: a payload that fails its hash is fetched
 * once more, and a second failure in a row is a corrupt package (402) by design, which
 * two flips on consecutive requests would provoke.
 */
static int pick_faults(char rules[][96], unsigned n_req, bool changing, struct totals *t)
{
	int n = (int)rnd_below(4), out = 0;
	bool changed = false, flipped = false;
	for (int i = 0; i < n; i++) {
		unsigned req = 1 + (unsigned)rnd_below(n_req + 2);
		unsigned kind = (unsigned)rnd_below(changing ? 8 : 6);
		if (kind == 5 && rnd_below(3) != 0)
			kind = 4; /* stalls cost a second of real time each: fewer of them */
		if ((kind >= 6 && (changed || flipped)) || (kind == 4 && (changed || flipped)))
			kind = 0;
		switch (kind) {
		case 0: snprintf(rules[out], 96, "req=%u:drop-after=%llu", req, (unsigned long long)rnd_below(60000)); break;
		case 1: snprintf(rules[out], 96, "req=%u-%u:status=500", req, req + (unsigned)rnd_below(4)); break;
		case 2: snprintf(rules[out], 96, "req=%u-%u:status=503", req, req + (unsigned)rnd_below(4)); break;
		case 3: snprintf(rules[out], 96, "req=%u:truncate=%llu", req, 1 + (unsigned long long)rnd_below(2000)); break;
		case 4: snprintf(rules[out], 96, "req=%u:flip=rand", req + 2); flipped = true; break;
		case 5: snprintf(rules[out], 96, "req=%u:stall=1500:stall-at=%llu", req, (unsigned long long)rnd_below(20000)); break;
		case 6: snprintf(rules[out], 96, "req=%u:cr-total=999999999", req + 2); changed = true; break;
		default: snprintf(rules[out], 96, "req=%u-:swap=/SWAP", req + 2); changed = true; break;
		}
		out++;
		t->fault_kind[kind]++;
		t->faults_planned++;
	}
	return out;
}

struct device {
	const char *name;
	enum fota_mode mode;
	struct fota_sim *sim;
	char active;          /* A/B: 'a' or 'b' */
	bool holds_a;         /* the running image (A/B: the active slot's) is A */
	uint64_t est_events;  /* events of the last uncut update */
	unsigned n_req;       /* requests of the last update */
};

static struct agent_config *make_config(const struct device *d, const char *dir, bool stream)
{
	char *text = NULL;
	if (asprintf(&text,
		     "[device]\nmode = %s\n%s%s%s"
		     "model = HX-100\nsecurity_version = 0\n"
		     "[agent]\nstate_dir = /sim/state\ntrust = %s/root.pem\n"
		     "[download]\nretry_window_minutes = 2\nbackoff_base_seconds = 1\nbackoff_max_seconds = 8\n"
		     "low_speed_limit_bytes = 1000\nlow_speed_time_seconds = 1\nconnect_timeout_seconds = 2\n"
		     "mode = %s\n",
		     d->mode == FOTA_MODE_AB ? "ab" : "inplace",
		     d->mode == FOTA_MODE_AB ? "slot_a = slot_a\nslot_b = slot_b\nactive_slot = " : "target = part\nscratch = scratch\n",
		     d->mode == FOTA_MODE_AB ? (d->active == 'a' ? "a" : "b") : "", d->mode == FOTA_MODE_AB ? "\n" : "", dir,
		     stream ? "stream" : "store") < 0)
		return NULL;
	struct agent_config *c = NULL;
	struct fota_error err;
	if (agent_config_parse(text, "soak.conf", &c, &err) != FOTA_OK)
		fprintf(stderr, "soak: config: %s\n", err.msg);
	free(text);
	return c;
}

static bool dev_is(struct fota_sim *sim, const char *name, const uint8_t *img, size_t len)
{
	size_t n = 0;
	uint8_t *got = fota_sim_dev_get(sim, name, &n);
	bool ok = got && n >= len && memcmp(got, img, len) == 0;
	free(got);
	return ok;
}

/* One update of device d: returns true when it ended with the exact target. */
static bool one_update(struct device *d, const char *dir, int nginx_port, const char *proxy_bin, const uint8_t *img_a,
		       const uint8_t *img_b, size_t img_len, struct totals *t, unsigned index)
{
	bool to_b = d->holds_a;
	bool stream = rnd_below(2) == 1;
	/* A/B: a delta package or a full one; in place: delta */
	bool full = d->mode == FOTA_MODE_AB && rnd_below(2) == 1;
	char pkg[64], url[256];
	snprintf(pkg, sizeof(pkg), "%s-%s.fota", d->mode == FOTA_MODE_AB ? (full ? "abfull" : "ab") : "ip",
		 to_b ? "a2b" : "b2a");
	char path[700];
	snprintf(path, sizeof(path), "%s/www/%s", dir, pkg);
	FILE *pf = fopen(path, "rb");
	if (pf) {
		fseek(pf, 0, SEEK_END);
		t->pkg_bytes += (uint64_t)ftell(pf);
		fclose(pf);
	}
	/* faults that make the package look changed end an in-place job that streams into
	 * the partition (by design: it cannot start over), so only store-mode in place gets them */
	bool changing = d->mode == FOTA_MODE_AB || !stream;
	char rules[4][96];
	int n_rules = pick_faults(rules, d->n_req ? d->n_req : 40, changing, t);
	for (int i = 0; i < n_rules; i++) {
		char *s = strstr(rules[i], "/SWAP");
		if (s)
			snprintf(s, 96 - (size_t)(s - rules[i]), "/%.*s.r.fota", (int)(strlen(pkg) - 5), pkg);
	}
	struct proxy px = { 0 };
	if (proxy_start(&px, proxy_bin, dir, nginx_port, rules, n_rules) != 0)
		return false;
	/* ?u=INDEX: each update's URL is its own, so the journal tells this job from the last */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/%s?u=%u", px.port, pkg, index);
	struct agent_config *cfg = make_config(d, dir, stream);
	const char *target = d->mode == FOTA_MODE_AB ? (d->active == 'a' ? "slot_b" : "slot_a") : "part";
	const char *active = d->mode == FOTA_MODE_AB ? (d->active == 'a' ? "slot_a" : "slot_b") : NULL;
	if (d->mode == FOTA_MODE_AB) {
		/* the inactive slot holds some other build (not the target it held two updates
		 * ago: the agent would rightly skip chunks that already hold the target) */
		size_t jl = img_len + 65536;
		uint8_t *junk = malloc(jl);
		for (size_t i = 0; junk && i + 8 <= jl; i += 8) {
			uint64_t v = rnd();
			memcpy(junk + i, &v, 8);
		}
		if (!junk || fota_sim_dev_set(d->sim, target, junk, jl) != FOTA_OK) {
			free(junk);
			agent_config_free(cfg);
			proxy_stop(&px, t);
			return false;
		}
		free(junk);
	}
	uint64_t active_writes = active ? fota_sim_dev_writes(d->sim, active) : 0;
	struct fclock ck = { 1893456000000LL + (int64_t)index * 86400000LL };
	bool ok = false, first = true, any_cut = false;
	uint64_t events_total = 0;
	char msg[FOTA_ERROR_MSG_MAX] = "";
	char hist[1024] = "";
	size_t hl = 0;
	int rc = -1;
	for (int boot = 0; boot < 30 && cfg; boot++) {
		/* power cut: half of the first runs, a third of the resumes, anywhere in the
		 * events of a whole update */
		bool cut = d->est_events && rnd_below(first ? 2 : 3) == 0;
		bool torn = rnd_below(2) == 1;
		uint64_t ev0 = fota_sim_events(d->sim);
		if (cut)
			fota_sim_set_cut(d->sim, 1 + rnd_below(d->est_events), torn);
		struct agent_env env = { cfg, fota_sim_store(d->sim), fota_sim_devices(d->sim),
					 { &ck, fc_now, fc_sleep, fc_random }, NULL };
		struct agent *a = NULL;
		struct fota_error err;
		fota_error_clear(&err);
		t->boots++;
		if (agent_open(&env, &a, &err) != FOTA_OK) {
			rc = AGENT_EXIT_IO;
		} else if (first) {
			rc = agent_download(a, url, true, &err);
		} else {
			rc = agent_resume(a, &err);
			if (rc == 0 && !fota_sim_cut_happened(d->sim) &&
			    (agent_journal(a)->phase == AGENT_PH_IDLE || strcmp(agent_journal(a)->url, url) != 0)) {
				/* cut before the job was journaled (the journal is the previous job's,
				 * or none): the command was never accepted, so the DM server issues it
				 * again */
				t->reissued++;
				rc = agent_download(a, url, true, &err);
			}
		}
		enum agent_phase ph = a ? agent_journal(a)->phase : AGENT_PH_IDLE;
		snprintf(msg, sizeof(msg), "%s", err.msg);
		if (hl < sizeof(hist) - 100)
			hl += (size_t)snprintf(hist + hl, sizeof(hist) - hl, " [%s%s: %llu events, rc %d, %s]",
					       boot == 0 ? "run" : "resume",
					       fota_sim_cut_happened(d->sim) ? (torn ? " cut torn" : " cut") : "",
					       (unsigned long long)(fota_sim_events(d->sim) - ev0), rc, agent_phase_name(ph));
		agent_close(a);
		events_total += fota_sim_events(d->sim) - ev0;
		if (fota_sim_cut_happened(d->sim)) {
			t->cuts++;
			t->torn_cuts += torn;
			t->cuts_in_resume += !first;
			any_cut = true;
			fota_sim_reboot(d->sim);
			first = false;
			continue;
		}
		fota_sim_set_cut(d->sim, 0, false);
		if (rc == 0 && ph == AGENT_PH_DONE) {
			ok = true;
			break;
		}
		/* not cut, and not done: the job failed */
		break;
	}
	proxy_stop(&px, t);
	const uint8_t *want = to_b ? img_b : img_a, *was = to_b ? img_a : img_b;
	bool exact = ok && dev_is(d->sim, target, want, img_len);
	bool active_kept = !active || (dev_is(d->sim, active, was, img_len) &&
				       fota_sim_dev_writes(d->sim, active) == active_writes);
	if (!exact || !active_kept) {
		t->failed++;
		fprintf(stderr, "soak: update %u (%s, %s %s, %s): FAILED: exit %d%s%s: %s\n", index, d->name,
			to_b ? "A->B" : "B->A", stream ? "stream" : "store", any_cut ? "cut" : "no cut", rc,
			ok && !exact ? ", target differs" : "", active_kept ? "" : ", active slot written", msg);
		for (int i = 0; i < n_rules; i++)
			fprintf(stderr, "  fault %s\n", rules[i]);
		fprintf(stderr, "  boots:%s\n", hist);
		size_t n = 0;
		uint8_t *got = fota_sim_dev_get(d->sim, target, &n);
		if (got && n >= img_len) {
			size_t first_diff = img_len, cnt = 0, chunks = 0, last_chunk = (size_t)-1;
			for (size_t i = 0; i < img_len; i++)
				if (got[i] != want[i]) {
					if (first_diff == img_len)
						first_diff = i;
					cnt++;
					if (i / 65536 != last_chunk) {
						chunks++;
						last_chunk = i / 65536;
					}
				}
			fprintf(stderr, "  %s: %zu bytes differ in %zu chunks of 64 KiB, first at %zu (chunk %zu)\n", target, cnt,
				chunks, first_diff, first_diff / 65536);
		}
		free(got);
	} else {
		/* the device now runs the new image */
		d->holds_a = !to_b;
		if (d->mode == FOTA_MODE_AB)
			d->active = d->active == 'a' ? 'b' : 'a';
		if (!any_cut || !d->est_events)
			d->est_events = events_total;
	}
	if (!d->est_events)
		d->est_events = events_total;
	FILE *lf = fopen(px.log, "r");
	if (lf) {
		unsigned n = 0;
		char line[2048];
		while (fgets(line, sizeof(line), lf))
			n++;
		fclose(lf);
		d->n_req = n;
	}
	t->updates++;
	agent_config_free(cfg);
	return exact && active_kept;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: soak DIR NGINX_PORT PROXY_BIN UPDATES SEED\n");
		return 2;
	}
	const char *dir = argv[1], *proxy_bin = argv[3];
	int nginx_port = (int)strtol(argv[2], NULL, 10);
	unsigned updates = (unsigned)strtoul(argv[4], NULL, 10);
	rng_state ^= strtoull(argv[5], NULL, 10) * 0x9e3779b97f4a7c15ull;
	char p[700];
	size_t la = 0, lb = 0;
	snprintf(p, sizeof(p), "%s/a.img", dir);
	uint8_t *img_a = read_file(p, &la);
	snprintf(p, sizeof(p), "%s/b.img", dir);
	uint8_t *img_b = read_file(p, &lb);
	if (!img_a || !img_b || la != lb) {
		fprintf(stderr, "soak: %s/a.img and b.img must exist and have one size\n", dir);
		return 2;
	}
	struct device devs[2] = {
		{ "A/B", FOTA_MODE_AB, fota_sim_new(), 'a', true, 0, 0 },
		{ "in-place", FOTA_MODE_INPLACE, fota_sim_new(), 0, true, 0, 0 },
	};
	uint8_t *junk = malloc(la + 65536), *zero = calloc(1, 4u << 20);
	for (size_t i = 0; junk && i < la + 65536; i++)
		junk[i] = (uint8_t)rnd();
	if (!devs[0].sim || !devs[1].sim || !junk || !zero ||
	    fota_sim_dev_set(devs[0].sim, "slot_a", img_a, la) != FOTA_OK ||
	    fota_sim_dev_set(devs[0].sim, "slot_b", junk, la + 65536) != FOTA_OK ||
	    fota_sim_dev_set(devs[1].sim, "part", img_a, la) != FOTA_OK ||
	    fota_sim_dev_set(devs[1].sim, "scratch", zero, 4u << 20) != FOTA_OK) {
		fprintf(stderr, "soak: out of memory\n");
		free(junk);
		free(zero);
		return 1;
	}
	free(junk);
	free(zero);
	struct totals t = { 0 };
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < updates; i++) {
		struct device *d = &devs[i % 2];
		bool ok = one_update(d, dir, nginx_port, proxy_bin, img_a, img_b, la, &t, i);
		if ((i + 1) % 20 == 0 || !ok) {
			clock_gettime(CLOCK_MONOTONIC, &t1);
			printf("soak: %u/%u updates, %u failed, %u power cuts, %.0f s\n", i + 1, updates, t.failed, t.cuts,
			       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
			fflush(stdout);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("\nsoak summary\n");
	printf("  updates            %u (A->B, B->A, ... alternating between an A/B and an in-place device)\n", t.updates);
	printf("  exact targets      %u, failed %u\n", t.updates - t.failed, t.failed);
	printf("  agent boots        %u (power cuts %u: %u torn, %u during a resume; %u commands re-issued)\n", t.boots,
	       t.cuts, t.torn_cuts, t.cuts_in_resume, t.reissued);
	printf("  faults planned     %u:", t.faults_planned);
	for (int k = 0; k < 8; k++)
		printf(" %s %u", fault_names[k], t.fault_kind[k]);
	printf("\n  faults injected    %u responses (proxy log lines with a matching rule)\n", t.injected);
	printf("  bytes served       %llu by the proxy, package sizes %llu (%.3fx)\n", (unsigned long long)t.proxy_sent,
	       (unsigned long long)t.pkg_bytes, t.pkg_bytes ? (double)t.proxy_sent / (double)t.pkg_bytes : 0.0);
	printf("  time               %.1f s\n", secs);
	fota_sim_free(devs[0].sim);
	fota_sim_free(devs[1].sim);
	free(img_a);
	free(img_b);
	return t.failed ? 1 : 0;
}
