/*
 * journal.c: the session record as JSON (see journal.h). The parser is strict and
 * bounded: it is fed whatever a power cut or a stray process left in state_dir, and
 * the fuzz harness tests/fuzz/fuzz_journal.c drives it.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fumo.h"
#include "journal.h"

static const char *const phase_names[] = { "idle", "downloading", "downloaded", "applying",
					   "applied", "done", "failed" };
static const char *const op_names[] = { "none", "download", "update", "download-and-update" };

const char *agent_phase_name(enum agent_phase p)
{
	return (unsigned)p < sizeof(phase_names) / sizeof(phase_names[0]) ? phase_names[p] : "?";
}

const char *agent_op_name(enum agent_op op)
{
	return (unsigned)op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : "?";
}

fota_status agent_journal_format(const struct agent_journal *j, char **out, size_t *len, struct fota_error *err)
{
	char hex[FOTA_SHA256_HEX_LEN + 1];
	char slot[2] = { j->target_slot ? j->target_slot : '-', 0 };
	fota_hex_encode(j->manifest_sha256, FOTA_SHA256_LEN, hex);
	json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:I, s:I, s:s, s:i, s:s, s:I, s:I, s:i,"
			      " s:b, s:I, s:I, s:s, s:s, s:i, s:s}",
			      "version", 2, "op", agent_op_name(j->op), "phase", agent_phase_name(j->phase),
			      "url", j->url, "etag", j->etag, "last_modified", j->last_modified,
			      "pkg_size", (json_int_t)j->pkg_size, "head_ok", j->head_ok,
			      "manifest_len", (json_int_t)j->manifest_len, "sig_len", (json_int_t)j->sig_len,
			      "manifest_sha256", hex, "stream", j->stream, "target_slot", slot,
			      "dl_next", (json_int_t)j->dl_next, "ap_next", (json_int_t)j->ap_next,
			      "ip_step", j->ip_step, "source_ok", j->source_ok,
			      "restarts", (json_int_t)j->restarts, "bytes", (json_int_t)j->bytes,
			      "pkg_name", j->pkg_name, "pkg_version", j->pkg_version,
			      "result", j->result, "message", j->message);
	json_t *o2 = json_pack("{s:i, s:i, s:s, s:s, s:s, s:b, s:I, s:I, s:b, s:s, s:i, s:s, s:b, s:I, s:I, s:I}",
			       "state", j->state, "fumo_result", j->fumo_result, "correlator", j->correlator,
			       "srv_pkg_name", j->srv_pkg_name, "srv_pkg_version", j->srv_pkg_version,
			       "dl_consent", j->dl_consent, "defer_until_ms", (json_int_t)j->defer_until_ms,
			       "defers", (json_int_t)j->defers, "alert_pending", j->alert_pending,
			       "alert_op", agent_op_name(j->alert_op), "alert_result", j->alert_result,
			       "alert_correlator", j->alert_correlator, "reboot_pending", j->reboot_pending,
			       "reboot_due_ms", (json_int_t)j->reboot_due_ms, "reboot_defers", (json_int_t)j->reboot_defers,
			       "reboot_deferred_min", (json_int_t)j->reboot_deferred_min);
	if (!o || !o2 || json_object_update(o, o2) != 0) {
		json_decref(o);
		json_decref(o2);
		return fota_error_set(err, FOTA_E_INTERNAL, "journal: cannot build JSON");
	}
	json_decref(o2);
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		return fota_error_set(err, FOTA_E_NOMEM, "journal: out of memory");
	*out = s;
	*len = strlen(s);
	return FOTA_OK;
}

static int lookup(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

static fota_status get_u64(json_t *o, const char *key, uint64_t max, uint64_t *out, struct fota_error *err)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return fota_error_set(err, FOTA_E_FORMAT, "journal: %s: not an integer from 0 to %llu", key,
				      (unsigned long long)max);
	*out = (uint64_t)json_integer_value(v);
	return FOTA_OK;
}

static fota_status get_str(json_t *o, const char *key, char *out, size_t cap, struct fota_error *err)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v) || json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: %s: not a string of at most %zu bytes", key, cap - 1);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return FOTA_OK;
}

static fota_status get_bool(json_t *o, const char *key, bool *out, struct fota_error *err)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_boolean(v))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: %s: not a boolean", key);
	*out = json_is_true(v);
	return FOTA_OK;
}

static fota_status get_i64(json_t *o, const char *key, int64_t *out, struct fota_error *err)
{
	uint64_t v;
	fota_status rc = get_u64(o, key, INT64_MAX, &v, err);
	if (rc == FOTA_OK)
		*out = (int64_t)v;
	return rc;
}

static fota_status parse_v2(json_t *o, struct agent_journal *t, struct fota_error *err)
{
	fota_status rc;
	uint64_t v;
	char word[32];
	if ((rc = get_u64(o, "state", 100, &v, err)) != FOTA_OK)
		return rc;
	if (!fumo_state_name((int)v))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: state: %llu is not a FUMO state", (unsigned long long)v);
	t->state = (int)v;
	if ((rc = get_u64(o, "fumo_result", 599, &v, err)) != FOTA_OK)
		return rc;
	if (v != 0 && !fumo_result_info((int)v))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: fumo_result: %llu is not a result code", (unsigned long long)v);
	t->fumo_result = (int)v;
	if ((rc = get_str(o, "correlator", t->correlator, sizeof(t->correlator), err)) != FOTA_OK ||
	    (rc = get_str(o, "srv_pkg_name", t->srv_pkg_name, sizeof(t->srv_pkg_name), err)) != FOTA_OK ||
	    (rc = get_str(o, "srv_pkg_version", t->srv_pkg_version, sizeof(t->srv_pkg_version), err)) != FOTA_OK ||
	    (rc = get_bool(o, "dl_consent", &t->dl_consent, err)) != FOTA_OK ||
	    (rc = get_i64(o, "defer_until_ms", &t->defer_until_ms, err)) != FOTA_OK ||
	    (rc = get_u64(o, "defers", UINT32_MAX, &t->defers, err)) != FOTA_OK ||
	    (rc = get_bool(o, "alert_pending", &t->alert_pending, err)) != FOTA_OK ||
	    (rc = get_str(o, "alert_op", word, sizeof(word), err)) != FOTA_OK)
		return rc;
	int idx = lookup(op_names, sizeof(op_names) / sizeof(op_names[0]), word);
	if (idx < 0)
		return fota_error_set(err, FOTA_E_FORMAT, "journal: alert_op: unknown '%s'", word);
	t->alert_op = (enum agent_op)idx;
	if ((rc = get_u64(o, "alert_result", 599, &v, err)) != FOTA_OK)
		return rc;
	if (v != 0 && !fumo_result_info((int)v))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: alert_result: %llu is not a result code", (unsigned long long)v);
	t->alert_result = (int)v;
	if (t->alert_pending && (t->alert_op == AGENT_OP_NONE || v == 0))
		return fota_error_set(err, FOTA_E_FORMAT, "journal: a pending alert without an operation or a result");
	if ((rc = get_str(o, "alert_correlator", t->alert_correlator, sizeof(t->alert_correlator), err)) != FOTA_OK ||
	    (rc = get_bool(o, "reboot_pending", &t->reboot_pending, err)) != FOTA_OK ||
	    (rc = get_i64(o, "reboot_due_ms", &t->reboot_due_ms, err)) != FOTA_OK ||
	    (rc = get_u64(o, "reboot_defers", UINT32_MAX, &t->reboot_defers, err)) != FOTA_OK ||
	    (rc = get_u64(o, "reboot_deferred_min", UINT32_MAX, &t->reboot_deferred_min, err)) != FOTA_OK)
		return rc;
	return FOTA_OK;
}

int agent_journal_v1_state(const struct agent_journal *j)
{
	switch (j->phase) {
	case AGENT_PH_DOWNLOADING: return FUMO_DL_PROGRESSING;
	case AGENT_PH_DOWNLOADED: return j->op == AGENT_OP_DOWNLOAD ? FUMO_DL_COMPLETE : FUMO_READY;
	case AGENT_PH_APPLYING:
	case AGENT_PH_APPLIED: return FUMO_UPD_PROGRESSING;
	case AGENT_PH_DONE: return FUMO_UPD_OK_NODATA;
	case AGENT_PH_FAILED: return j->op == AGENT_OP_DOWNLOAD || !j->head_ok ? FUMO_DL_FAILED : FUMO_UPD_FAILED_NODATA;
	default: return FUMO_IDLE;
	}
}

fota_status agent_journal_parse(const uint8_t *buf, size_t len, struct agent_journal *j, struct fota_error *err)
{
	static const char *const keys[] = { "version", "op", "phase", "url", "etag", "last_modified", "pkg_size",
					    "head_ok", "manifest_len", "sig_len", "manifest_sha256", "stream",
					    "target_slot", "dl_next", "ap_next", "ip_step", "source_ok", "restarts",
					    "bytes", "pkg_name", "pkg_version", "result", "message" };
	/* version 2 only, and then all of them */
	static const char *const keys2[] = { "state", "fumo_result", "correlator", "srv_pkg_name", "srv_pkg_version",
					     "dl_consent", "defer_until_ms", "defers", "alert_pending", "alert_op",
					     "alert_result", "alert_correlator", "reboot_pending", "reboot_due_ms",
					     "reboot_defers", "reboot_deferred_min" };
	if (len > AGENT_JOURNAL_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "journal: %zu bytes, limit %u", len, AGENT_JOURNAL_MAX);
	json_error_t je;
	json_t *o = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return fota_error_set(err, FOTA_E_FORMAT, "journal: not JSON: %s", je.text);
	fota_status rc = FOTA_OK;
	struct agent_journal t;
	memset(&t, 0, sizeof(t));
	char word[32], hex[FOTA_SHA256_HEX_LEN + 1];
	uint64_t v;
	bool b = false;
	if (!json_is_object(o)) {
		rc = fota_error_set(err, FOTA_E_FORMAT, "journal: not a JSON object");
		goto out;
	}
	const char *key;
	json_t *val;
	json_object_foreach(o, key, val) {
		if (lookup(keys, sizeof(keys) / sizeof(keys[0]), key) < 0 &&
		    lookup(keys2, sizeof(keys2) / sizeof(keys2[0]), key) < 0) {
			rc = fota_error_set(err, FOTA_E_FORMAT, "journal: unknown key '%.40s'", key);
			goto out;
		}
	}
	if ((rc = get_u64(o, "version", 2, &v, err)) != FOTA_OK)
		goto out;
	if (v != 1 && v != 2) {
		rc = fota_error_set(err, FOTA_E_UNSUPPORTED, "journal: version %llu", (unsigned long long)v);
		goto out;
	}
	const bool v2 = v == 2;
	if (!v2) {
		for (size_t i = 0; i < sizeof(keys2) / sizeof(keys2[0]); i++)
			if (json_object_get(o, keys2[i])) {
				rc = fota_error_set(err, FOTA_E_FORMAT, "journal: %s: not in version 1", keys2[i]);
				goto out;
			}
	}
	int idx;
	if ((rc = get_str(o, "op", word, sizeof(word), err)) != FOTA_OK)
		goto out;
	if ((idx = lookup(op_names, sizeof(op_names) / sizeof(op_names[0]), word)) < 0) {
		rc = fota_error_set(err, FOTA_E_FORMAT, "journal: op: unknown '%s'", word);
		goto out;
	}
	t.op = (enum agent_op)idx;
	if ((rc = get_str(o, "phase", word, sizeof(word), err)) != FOTA_OK)
		goto out;
	if ((idx = lookup(phase_names, sizeof(phase_names) / sizeof(phase_names[0]), word)) < 0) {
		rc = fota_error_set(err, FOTA_E_FORMAT, "journal: phase: unknown '%s'", word);
		goto out;
	}
	t.phase = (enum agent_phase)idx;
	if ((rc = get_str(o, "url", t.url, sizeof(t.url), err)) != FOTA_OK ||
	    (rc = get_str(o, "etag", t.etag, sizeof(t.etag), err)) != FOTA_OK ||
	    (rc = get_str(o, "last_modified", t.last_modified, sizeof(t.last_modified), err)) != FOTA_OK ||
	    (rc = get_u64(o, "pkg_size", UINT64_C(1) << 50, &t.pkg_size, err)) != FOTA_OK ||
	    (rc = get_bool(o, "head_ok", &t.head_ok, err)) != FOTA_OK ||
	    (rc = get_u64(o, "manifest_len", 8u << 20, &t.manifest_len, err)) != FOTA_OK ||
	    (rc = get_u64(o, "sig_len", 64u << 10, &t.sig_len, err)) != FOTA_OK ||
	    (rc = get_str(o, "manifest_sha256", hex, sizeof(hex), err)) != FOTA_OK)
		goto out;
	if (fota_hex_decode(hex, t.manifest_sha256, FOTA_SHA256_LEN) != 0) {
		rc = fota_error_set(err, FOTA_E_FORMAT, "journal: manifest_sha256: not 64 lowercase hex digits");
		goto out;
	}
	if ((rc = get_u64(o, "stream", 1, &v, err)) != FOTA_OK)
		goto out;
	t.stream = (int)v;
	if ((rc = get_str(o, "target_slot", word, sizeof(word), err)) != FOTA_OK)
		goto out;
	if (strcmp(word, "a") != 0 && strcmp(word, "b") != 0 && strcmp(word, "-") != 0) {
		rc = fota_error_set(err, FOTA_E_FORMAT, "journal: target_slot: not a, b or -");
		goto out;
	}
	t.target_slot = word[0] == '-' ? 0 : word[0];
	if ((rc = get_u64(o, "dl_next", 65536, &t.dl_next, err)) != FOTA_OK ||
	    (rc = get_u64(o, "ap_next", 65536, &t.ap_next, err)) != FOTA_OK ||
	    (rc = get_u64(o, "ip_step", 2, &v, err)) != FOTA_OK)
		goto out;
	t.ip_step = (int)v;
	if ((rc = get_bool(o, "source_ok", &b, err)) != FOTA_OK)
		goto out;
	t.source_ok = b;
	if ((rc = get_u64(o, "restarts", UINT32_MAX, &t.restarts, err)) != FOTA_OK ||
	    (rc = get_u64(o, "bytes", UINT64_C(1) << 62, &t.bytes, err)) != FOTA_OK ||
	    (rc = get_str(o, "pkg_name", t.pkg_name, sizeof(t.pkg_name), err)) != FOTA_OK ||
	    (rc = get_str(o, "pkg_version", t.pkg_version, sizeof(t.pkg_version), err)) != FOTA_OK ||
	    (rc = get_u64(o, "result", 255, &v, err)) != FOTA_OK)
		goto out;
	t.result = (int)v;
	if ((rc = get_str(o, "message", t.message, sizeof(t.message), err)) != FOTA_OK)
		goto out;
	if (v2 && (rc = parse_v2(o, &t, err)) != FOTA_OK)
		goto out;
	if (!v2)
		t.state = agent_journal_v1_state(&t);
	*j = t;
out:
	json_decref(o);
	return rc;
}
