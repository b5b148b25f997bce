/*
 * test_agent_util.c: fixtures for the agent suites (see test_agent_util.h). Packages
 * are made with libfota's own writer, signer, delta engine and in-place planner, so
 * the agent is tested on delta and in-place packages before fota-pack makes them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fota/container.h"
#include "fota/delta.h"
#include "fota/inplace.h"
#include "fota/manifest.h"
#include "fota/sig.h"
#include "test_agent_util.h"
#include "unit.h"

const char *tagent_pki(void)
{
	static char dir[512];
	static int state;
	if (state == 0) {
		const char *top = getenv("FOTA_TOP");
		char cmd[1400];
		snprintf(dir, sizeof(dir), "%s/agent-pki", unit_tmpdir());
		snprintf(cmd, sizeof(cmd), "bash '%s/tests/pki/mkpki.sh' '%s'", top ? top : ".", dir);
		state = system(cmd) == 0 ? 1 : -1;
	}
	return state == 1 ? dir : NULL;
}

void tagent_pair(uint8_t **src, uint8_t **dst, size_t *len, uint64_t seed)
{
	const size_t n = 49152;
	uint8_t *s = malloc(n), *d = malloc(n), *r = malloc(3500);
	/* compressible source: random blocks and repeated text */
	unit_fill_random(s, n, seed);
	for (size_t i = 0; i < n; i += 4096)
		if ((i / 4096) % 2 == 1)
			for (size_t j = 0; j < 4096; j++)
				s[i + j] = (uint8_t)("firmware table entry "[j % 21] + (i / 4096));
	unit_fill_random(r, 3500, seed + 1);
	size_t o = 0;
	memcpy(d + o, s, 4096); o += 4096;
	memcpy(d + o, s + 6096, 13904); o += 13904;          /* moves backward by 2000 */
	memcpy(d + o, r, 3500); o += 3500;                   /* new bytes */
	memcpy(d + o, s + 20000, 20000); o += 20000;         /* moves forward by 1500 */
	memcpy(d + o, s + 41500, n - 41500); o += n - 41500; /* stays */
	for (size_t i = 100; i < n; i += 3001)
		d[i] ^= 0x5a;                                /* scattered edits */
	free(r);
	*src = s;
	*dst = d;
	*len = n;
}

static char *pki_file(const char *name, const char *ext)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s.%s", tagent_pki(), name, ext) < 0)
		return NULL;
	return p;
}

int tagent_build(const char *path, const uint8_t *src, size_t src_len, const uint8_t *dst, size_t dst_len,
		 struct tpkg *o)
{
	if (!tagent_pki())
		return -1;
	size_t csz = o->chunk ? o->chunk : 4096;
	size_t n = (dst_len + csz - 1) / csz;
	struct fota_manifest *m = calloc(1, sizeof(*m));
	struct fota_image *im = calloc(1, sizeof(*im));
	struct fota_chunk *ch = calloc(n, sizeof(*ch));
	uint8_t **payload = calloc(n, sizeof(*payload));
	bool *to_full = calloc(n, sizeof(bool));
	int ret = -1;
	struct fota_error err;
	struct fota_signer *signer = NULL;
	struct fota_pkg_writer *w = NULL;
	char *json = NULL;
	size_t json_len = 0;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	if (!m || !im || !ch || !payload || !to_full)
		goto out;
	m->format_version = FOTA_FORMAT_VERSION;
	m->name = strdup("unit-fw");
	m->version = strdup("2.0");
	m->from_version = strdup("1.0");
	if (o->model) {
		m->n_models = 1;
		m->models = calloc(1, sizeof(char *));
		m->models[0] = strdup(o->model);
	}
	m->security_version = o->security_version;
	m->expires = o->expires;
	m->mode = o->mode;
	m->window_log = 20;
	m->policy.priority = FOTA_PRIO_MEDIUM;
	m->policy.roaming = FOTA_ROAM_ALLOW;
	m->n_images = 1;
	m->images = im;
	snprintf(im->name, sizeof(im->name), "system");
	im->has_source = true;
	im->source_size = src_len;
	fota_sha256(src, src_len, im->source_sha256);
	im->target_size = dst_len;
	fota_sha256(dst, dst_len, im->target_sha256);
	im->n_chunks = n;
	im->chunks = ch;
	struct fota_delta_opts dopts = { 1, 20, 3 };
	for (size_t k = 0; k < n; k++) {
		uint64_t t = (uint64_t)k * csz, len = dst_len - t < csz ? dst_len - t : csz;
		ch[k].target_offset = t;
		ch[k].target_size = len;
		fota_sha256(dst + t, len, ch[k].target_sha256);
		if (o->delta && !(o->mixed && k % 3 == 2)) {
			uint64_t a = t >= csz ? t - csz : 0, b = t + 2 * csz < src_len ? t + 2 * csz : src_len;
			if (a >= b)
				a = 0, b = src_len;
			struct fota_delta_script *s = NULL;
			size_t plen = 0;
			if (fota_delta_diff(src + a, b - a, dst + t, len, &dopts, &s, &err) != FOTA_OK ||
			    fota_delta_encode(s, &dopts, &payload[k], &plen, &err) != FOTA_OK) {
				fprintf(stderr, "tagent_build: delta: %s\n", err.msg);
				fota_delta_script_free(s);
				goto out;
			}
			fota_delta_script_free(s);
			ch[k].method = FOTA_METHOD_DELTA;
			ch[k].payload_size = plen;
			ch[k].n_source_reads = 1;
			ch[k].source_reads = calloc(1, sizeof(struct fota_range));
			ch[k].source_reads[0].offset = a;
			ch[k].source_reads[0].length = b - a;
		} else {
			size_t cap = ZSTD_compressBound(len);
			payload[k] = malloc(cap);
			size_t z = ZSTD_compress(payload[k], cap, dst + t, len, 3);
			if (ZSTD_isError(z))
				goto out;
			ch[k].method = FOTA_METHOD_FULL;
			ch[k].payload_size = z;
		}
		fota_sha256(payload[k], ch[k].payload_size, ch[k].payload_sha256);
	}
	if (o->mode == FOTA_MODE_INPLACE) {
		uint64_t stash_end = 0;
		/* payloads follow their chunk through the permutation: key them by target offset */
		uint8_t **by_off = calloc(n, sizeof(*by_off));
		for (size_t k = 0; k < n; k++)
			by_off[k] = payload[k];
		if (fota_inplace_plan(ch, n, o->scratch_max ? o->scratch_max : 65536, to_full, &stash_end, &err) != FOTA_OK) {
			fprintf(stderr, "tagent_build: plan: %s\n", err.msg);
			free(by_off);
			goto out;
		}
		for (size_t k = 0; k < n; k++) {
			size_t orig = (size_t)(ch[k].target_offset / csz);
			payload[k] = by_off[orig];
			if (to_full[k]) {
				uint64_t t = ch[k].target_offset, len = ch[k].target_size;
				free(payload[k]);
				size_t cap = ZSTD_compressBound(len);
				payload[k] = malloc(cap);
				size_t z = ZSTD_compress(payload[k], cap, dst + t, len, 3);
				ch[k].method = FOTA_METHOD_FULL;
				ch[k].payload_size = z;
				free(ch[k].source_reads);
				ch[k].source_reads = NULL;
				ch[k].n_source_reads = 0;
				fota_sha256(payload[k], z, ch[k].payload_sha256);
			}
		}
		free(by_off);
		m->scratch_size = fota_inplace_scratch_needed(m);
	}
	o->n_delta = o->n_stash = o->n_ahead = o->n_scratch_reads = 0;
	for (size_t k = 0; k < n; k++) {
		o->n_delta += ch[k].method == FOTA_METHOD_DELTA;
		o->n_stash += ch[k].n_stash;
		o->n_ahead += o->mode == FOTA_MODE_INPLACE && fota_inplace_self_overlap(&ch[k]);
		for (size_t i = 0; i < ch[k].n_source_reads; i++)
			o->n_scratch_reads += ch[k].source_reads[i].scratch;
	}
	if (fota_manifest_serialize(m, &json, &json_len, &err) != FOTA_OK) {
		fprintf(stderr, "tagent_build: manifest: %s\n", err.msg);
		goto out;
	}
	const char *sname = o->signer ? o->signer : "signer-ec";
	char *key = pki_file(sname, "key"), *cert = pki_file(sname, "pem"), *chain = pki_file("chain", "pem");
	fota_status rc = fota_signer_load(key, cert, strcmp(sname, "other-signer") == 0 ? NULL : chain,
					  FOTA_SIG_PAD_DEFAULT, &signer, &err);
	free(key);
	free(cert);
	free(chain);
	if (rc != FOTA_OK || fota_sig_sign(signer, (uint8_t *)json, json_len, -1, &sig, &sig_len, &err) != FOTA_OK) {
		fprintf(stderr, "tagent_build: sign: %s\n", err.msg);
		goto out;
	}
	if (fota_pkg_writer_open(path, &w, &err) != FOTA_OK ||
	    fota_pkg_writer_add(w, "manifest.json", json, json_len, &err) != FOTA_OK ||
	    fota_pkg_writer_add(w, "manifest.sig", sig, sig_len, &err) != FOTA_OK)
		goto out;
	for (size_t k = 0; k < n; k++) {
		char name[FOTA_PAYLOAD_NAME_MAX];
		fota_pkg_payload_name("system", k, ch[k].method, name);
		if (o->corrupt_chunk == (long)k)
			payload[k][ch[k].payload_size / 2] ^= 0x01;
		if (fota_pkg_writer_add(w, name, payload[k], ch[k].payload_size, &err) != FOTA_OK)
			goto out;
	}
	rc = fota_pkg_writer_commit(w, &err);
	w = NULL;
	if (rc != FOTA_OK)
		goto out;
	ret = 0;
out:
	if (ret != 0 && err.msg[0])
		fprintf(stderr, "tagent_build: %s\n", err.msg);
	fota_pkg_writer_abort(w);
	fota_signer_free(signer);
	free(sig);
	free(json);
	if (payload)
		for (size_t k = 0; k < n; k++)
			free(payload[k]);
	free(payload);
	free(to_full);
	if (m)
		fota_manifest_free(m); /* frees im and ch too */
	else {
		free(im);
		free(ch);
	}
	return ret;
}

static int64_t fk_now(void *ctx)
{
	struct tclock *c = ctx;
	c->now_ms += c->tick_ms;
	return c->now_ms;
}

static void fk_sleep(void *ctx, uint64_t ms)
{
	struct tclock *c = ctx;
	c->now_ms += (int64_t)ms;
	c->slept_ms += ms;
	c->sleeps++;
	if (ms > c->max_sleep_ms)
		c->max_sleep_ms = ms;
}

static uint64_t fk_random(void *ctx)
{
	struct tclock *c = ctx;
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return c->rng;
}

struct agent_clock tagent_clock(struct tclock *c)
{
	if (!c->now_ms)
		c->now_ms = 1893456000000ll; /* 2030-01-01 */
	if (!c->rng)
		c->rng = 88172645463325252ull;
	struct agent_clock k = { c, fk_now, fk_sleep, fk_random };
	return k;
}

char *tagent_config_text(enum fota_mode mode, bool stream, const char *extra)
{
	char *s = NULL;
	const char *pki = tagent_pki();
	if (asprintf(&s,
		     "[device]\n"
		     "mode = %s\n"
		     "%s"
		     "model = HX-100\n"
		     "security_version = 0\n"
		     "[agent]\n"
		     "state_dir = /sim/state\n"
		     "trust = %s/root.pem\n"
		     "[download]\n"
		     "retry_window_minutes = 1\n"
		     "backoff_base_seconds = 1\n"
		     "backoff_max_seconds = 8\n"
		     "mode = %s\n%s",
		     mode == FOTA_MODE_AB ? "ab" : "inplace",
		     mode == FOTA_MODE_AB ? "slot_a = slot_a\nslot_b = slot_b\nactive_slot = a\n"
					  : "target = part\nscratch = scratch\n",
		     pki ? pki : "/nonexistent", stream ? "stream" : "store", extra ? extra : "") < 0)
		return NULL;
	return s;
}

struct agent_config *tagent_config(enum fota_mode mode, bool stream, const char *extra)
{
	char *t = tagent_config_text(mode, stream, extra);
	struct agent_config *c = NULL;
	struct fota_error err;
	if (t && agent_config_parse(t, "test.conf", &c, &err) != FOTA_OK)
		fprintf(stderr, "tagent_config: %s\n", err.msg);
	free(t);
	return c;
}

void tagent_expect_config_error(const char *text, const char *needle)
{
	struct agent_config *c = NULL;
	struct fota_error err;
	fota_error_clear(&err);
	CU_ASSERT_EQUAL(agent_config_parse(text, "t.conf", &c, &err), FOTA_E_ARG);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, needle));
	if (!strstr(err.msg, needle))
		fprintf(stderr, "\n  config: want '%s', got '%s'\n", needle, err.msg);
	agent_config_free(c);
}
