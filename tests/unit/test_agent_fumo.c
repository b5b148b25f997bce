/*
 * test_agent_fumo.c: the FUMO state machine and result table (agent/fumo.c), the
 * failure causes fetch.c records and the result code of each (every cause in a table),
 * the version 2 journal, the policy keys of the configuration, and the hook runner
 * (agent/hooks.c: exit codes, arguments, environment, stdout, timeout). The binary's
 * scenarios are in tests/integration/test_fumo.sh.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../agent/agent.h"
#include "../../agent/fetch.h"
#include "../../agent/fumo.h"
#include "../../agent/hooks.h"
#include "../../agent/journal.h"
#include "test_agent_util.h"
#include "unit.h"

static const int all_states[] = { 10, 20, 30, 40, 50, 60, 70, 80, 90, 100 };
#define N_STATES (sizeof(all_states) / sizeof(all_states[0]))

static void test_fumo_state_names(void)
{
	static const char *const names[] = { "Idle/Start", "Download Failed", "Download Progressing",
					     "Download Complete", "Ready to Update", "Update Progressing",
					     "Update Failed Have Data", "Update Failed No Data",
					     "Update Successful Have Data", "Update Successful No Data" };
	for (size_t i = 0; i < N_STATES; i++) {
		CU_ASSERT_PTR_NOT_NULL_FATAL(fumo_state_name(all_states[i]));
		CU_ASSERT_STRING_EQUAL(fumo_state_name(all_states[i]), names[i]);
	}
	CU_ASSERT_PTR_NULL(fumo_state_name(0));
	CU_ASSERT_PTR_NULL(fumo_state_name(15));
	CU_ASSERT_PTR_NULL(fumo_state_name(110));
}

/* Every path the agent takes is a walk on the diagram. */
static bool walk(const int *path, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (!fumo_transition_ok(path[i], path[i + 1]))
			return false;
	return true;
}

static void test_fumo_transitions(void)
{
	static const int dl_and_update[] = { 10, 30, 50, 60, 100, 10 };
	static const int dl_then_update[] = { 10, 30, 40, 50, 60, 100, 10 };
	static const int dl_failed[] = { 10, 30, 20, 10 };
	static const int refused_at_50[] = { 10, 30, 50, 80, 10 };
	static const int update_again[] = { 10, 30, 50, 60, 70, 50, 60, 90, 50, 60, 100 };
	static const int cancel_at_40[] = { 10, 30, 40, 80, 10 };
	CU_ASSERT(walk(dl_and_update, sizeof(dl_and_update) / sizeof(int)));
	CU_ASSERT(walk(dl_then_update, sizeof(dl_then_update) / sizeof(int)));
	CU_ASSERT(walk(dl_failed, sizeof(dl_failed) / sizeof(int)));
	CU_ASSERT(walk(refused_at_50, sizeof(refused_at_50) / sizeof(int)));
	CU_ASSERT(walk(update_again, sizeof(update_again) / sizeof(int)));
	CU_ASSERT(walk(cancel_at_40, sizeof(cancel_at_40) / sizeof(int)));
	/* not on the diagram */
	static const int bad[][2] = { { 10, 40 }, { 10, 60 }, { 30, 60 }, { 30, 100 }, { 40, 60 }, { 60, 30 },
				      { 60, 50 }, { 100, 60 }, { 20, 30 }, { 80, 50 }, { 100, 50 }, { 50, 40 },
				      { 60, 20 }, { 0, 10 }, { 10, 0 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT_FALSE(fumo_transition_ok(bad[i][0], bad[i][1]));
	/* every state can be reached from 10 and leads back to 10 (or is passed through) */
	for (size_t i = 0; i < N_STATES; i++) {
		int s = all_states[i];
		bool in = s == 10, out = false;
		for (size_t k = 0; k < N_STATES; k++) {
			in |= fumo_transition_ok(all_states[k], s);
			out |= fumo_transition_ok(s, all_states[k]);
		}
		CU_ASSERT(in);
		CU_ASSERT(out);
	}
}

static void test_fumo_result_table(void)
{
	static const int codes[] = { 200, 401, 402, 403, 404, 405, 407, 410, 411, 412, 500, 501, 502, 503 };
	CU_ASSERT_EQUAL(fumo_result_count, sizeof(codes) / sizeof(codes[0]));
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const struct fumo_result_info *r = fumo_result_info(codes[i]);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		CU_ASSERT(strlen(r->name) > 0 && strlen(r->when) > 0);
		CU_ASSERT_STRING_NOT_EQUAL(agent_exit_name(r->exit), "?");
		CU_ASSERT_EQUAL(r->code == 200, r->exit == AGENT_EXIT_OK);
	}
	CU_ASSERT_PTR_NULL(fumo_result_info(0));
	CU_ASSERT_PTR_NULL(fumo_result_info(406));
}

static void test_fumo_result_for(void)
{
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_OK, FUMO_CAUSE_NONE, true, NULL), 200);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_CANCELLED, FUMO_CAUSE_NONE, false, NULL), 401);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_CORRUPT, FUMO_CAUSE_NONE, false, NULL), 402);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DEVICE, FUMO_CAUSE_NONE, false, NULL), 403);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_SIGNATURE, FUMO_CAUSE_NONE, false, NULL), 404);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_NOT_ACCEPTABLE, FUMO_CAUSE_NONE, false, NULL), 405);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_SOURCE, FUMO_CAUSE_NONE, true, NULL), 410);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_BAD_URL, false, NULL), 411);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NO_SPACE, false, NULL), 501);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NO_SPACE, true, NULL), 502);
	/* 411 is the URL refused before any request, whatever a later request did */
	const struct fetch_failure timeout = { FETCH_CAUSE_TIMEOUT, 0, 28, 0 };
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_BAD_URL, false, &timeout), 411);
	/* no failure known: 503 */
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_NONE, false, NULL), 503);
	CU_ASSERT_STRING_EQUAL(fumo_alert_type(AGENT_OP_DOWNLOAD), "org.openmobilealliance.dm.firmwareupdate.download");
	CU_ASSERT_STRING_EQUAL(fumo_alert_type(AGENT_OP_UPDATE), "org.openmobilealliance.dm.firmwareupdate.update");
	CU_ASSERT_STRING_EQUAL(fumo_alert_type(AGENT_OP_DOWNLOAD_AND_UPDATE),
			       "org.openmobilealliance.dm.firmwareupdate.downloadandupdate");
	CU_ASSERT_PTR_NULL(fumo_alert_type(AGENT_OP_NONE));
	CU_ASSERT_STRING_EQUAL(fumo_op_node(AGENT_OP_DOWNLOAD_AND_UPDATE), "DownloadAndUpdate");
}

/* Every cause fetch.h names -> the result code of a download that gave up with it. */
static void test_fumo_fetch_causes(void)
{
	static const struct {
		enum fetch_cause cause;
		int code;
	} table[] = {
		{ FETCH_CAUSE_NONE, 503 },      /* no request failed last: the policy paused the download */
		{ FETCH_CAUSE_REQUEST, 503 },
		{ FETCH_CAUSE_URL, 503 },       /* a redirect to another scheme; 411 is only the URL refused up front */
		{ FETCH_CAUSE_RESOLVE, 412 },
		{ FETCH_CAUSE_CONNECT, 412 },
		{ FETCH_CAUSE_TIMEOUT, 407 },
		{ FETCH_CAUSE_TLS, 503 },
		{ FETCH_CAUSE_TRANSPORT, 503 },
		{ FETCH_CAUSE_REDIRECTS, 503 },
		{ FETCH_CAUSE_HTTP_STATUS, 500 },
		{ FETCH_CAUSE_NO_RANGE, 503 },
		{ FETCH_CAUSE_RANGE, 503 },
		{ FETCH_CAUSE_SHORT, 503 },
		{ FETCH_CAUSE_CHANGED, 503 },
		{ FETCH_CAUSE_FILE, 503 },
		{ FETCH_CAUSE_SINK, 503 },
	};
	CU_ASSERT_EQUAL_FATAL(sizeof(table) / sizeof(table[0]), FETCH_CAUSE_COUNT);
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		CU_ASSERT_EQUAL(table[i].cause, (enum fetch_cause)i); /* each cause once, in order */
		struct fetch_failure f = { table[i].cause, 0, 0, 0 };
		CU_ASSERT_EQUAL(fumo_download_result(table[i].cause), table[i].code);
		CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_NONE, false, &f), table[i].code);
		CU_ASSERT_PTR_NOT_NULL(fumo_result_info(table[i].code));
		/* the cause only picks among the download codes: other exits keep theirs */
		CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_CORRUPT, FUMO_CAUSE_NONE, false, &f), 402);
	}
	/* the HTTP status does not matter: 4xx that end the job and 5xx alike are 500 */
	const long statuses[] = { 404, 403, 408, 429, 500, 503 };
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		struct fetch_failure f = { FETCH_CAUSE_HTTP_STATUS, statuses[i], 0, 0 };
		CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_NONE, false, &f), 500);
	}
	/* a sink that ran out of room: 501 while downloading, 502 once the update began */
	const int room[] = { ENOSPC, EFBIG };
	for (size_t i = 0; i < 2; i++) {
		struct fetch_failure f = { FETCH_CAUSE_SINK, 206, 0, room[i] };
		CU_ASSERT(fumo_fetch_no_space(&f));
		CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NONE, false, &f), 501);
		CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NONE, true, &f), 502);
	}
	/* any other errno, or ENOSPC that is not the sink's, is not "no space" */
	const struct fetch_failure eio = { FETCH_CAUSE_SINK, 206, 0, EIO };
	const struct fetch_failure file = { FETCH_CAUSE_FILE, 0, 0, ENOSPC };
	const struct fetch_failure none = { FETCH_CAUSE_SINK, 206, 0, 0 };
	CU_ASSERT_FALSE(fumo_fetch_no_space(&eio));
	CU_ASSERT_FALSE(fumo_fetch_no_space(&file));
	CU_ASSERT_FALSE(fumo_fetch_no_space(&none));
	CU_ASSERT_FALSE(fumo_fetch_no_space(NULL));
	CU_ASSERT_NOT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NONE, false, &eio), 501);
}

static fota_status count_sink(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err)
{
	(void)buf;
	(void)err;
	*(uint64_t *)ctx += len;
	return FOTA_OK;
}

/* A sink whose write ran out of room, recorded as the storage backend does
 * (fota_error_errno), with errno changed since (a log write after the failure). */
static fota_status recorded_full_sink(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err)
{
	(void)ctx;
	(void)buf;
	fota_error_errno(err, FOTA_E_IO, EFBIG, "cache: write of %zu bytes", len);
	errno = EBADF;
	return FOTA_E_IO;
}

/* A sink whose write ran out of room, as a plain write leaves it: only errno set. */
static fota_status full_sink(void *ctx, const uint8_t *buf, size_t len, struct fota_error *err)
{
	(void)ctx;
	(void)buf;
	fota_error_set(err, FOTA_E_IO, "cache: write of %zu bytes: %s", len, strerror(ENOSPC));
	errno = ENOSPC;
	return FOTA_E_IO;
}

static enum fetch_result fetch_once(struct agent_fetch *f, uint64_t off, uint64_t len, fetch_sink sink,
				    const struct agent_validators *expect, struct fota_error *err)
{
	struct agent_validators got;
	uint64_t delivered = 0, n = 0;
	return agent_fetch_range(f, off, len, false, sink, &n, expect, &got, &delivered, err);
}

/* fetch.c records why a request failed as data: file:// failures, the sink's errno, a
 * refused connection (CURLcode and errno), and NONE again once a request works. */
static void test_fumo_fetch_records_causes(void)
{
	uint8_t data[1000];
	unit_fill_random(data, sizeof(data), 7);
	char *path = unit_write_file("fetch-cause.bin", data, sizeof(data));
	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	char url[600];
	snprintf(url, sizeof(url), "file://%s", path);
	struct fota_error err;
	struct agent_fetch *f = NULL;
	CU_ASSERT_EQUAL_FATAL(agent_fetch_open(url, NULL, &f, &err), FOTA_OK);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_NONE);

	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, count_sink, NULL, &err), FETCH_OK);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_NONE);
	CU_ASSERT_EQUAL(fetch_once(f, 0, 0, count_sink, NULL, &err), FETCH_FATAL);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_REQUEST);
	CU_ASSERT_EQUAL(fetch_once(f, 2000, 10, count_sink, NULL, &err), FETCH_FATAL);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_FILE);

	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, full_sink, NULL, &err), FETCH_SINK);
	struct fetch_failure ff = agent_fetch_failure(f);
	CU_ASSERT_EQUAL(ff.cause, FETCH_CAUSE_SINK);
	CU_ASSERT_EQUAL(ff.sys_errno, ENOSPC);
	CU_ASSERT(fumo_fetch_no_space(&ff));
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_IO, FUMO_CAUSE_NONE, false, &ff), 501);
	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, recorded_full_sink, NULL, &err), FETCH_SINK);
	ff = agent_fetch_failure(f);
	CU_ASSERT_EQUAL(ff.sys_errno, EFBIG);
	CU_ASSERT(fumo_fetch_no_space(&ff));

	struct agent_validators other = { .total = sizeof(data) - 1 };
	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, count_sink, &other, &err), FETCH_CHANGED);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_CHANGED);
	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, count_sink, NULL, &err), FETCH_OK);
	CU_ASSERT_EQUAL(agent_fetch_failure(f).cause, FETCH_CAUSE_NONE);
	agent_fetch_close(f);

	/* a file that is not there */
	snprintf(url, sizeof(url), "file://%s.missing", path);
	CU_ASSERT_EQUAL_FATAL(agent_fetch_open(url, NULL, &f, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, count_sink, NULL, &err), FETCH_FATAL);
	ff = agent_fetch_failure(f);
	CU_ASSERT_EQUAL(ff.cause, FETCH_CAUSE_FILE);
	CU_ASSERT_EQUAL(ff.sys_errno, ENOENT);
	agent_fetch_close(f);
	free(path);

	/* a closed port on this host: CURLE_COULDNT_CONNECT, ECONNREFUSED -> unreachable (412) */
	int sock = socket(AF_INET, SOCK_STREAM, 0);
	CU_ASSERT_FATAL(sock >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	CU_ASSERT_FATAL(bind(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
			getsockname(sock, (struct sockaddr *)&sa, &sl) == 0);
	close(sock); /* bound, never listened: the port refuses */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/p.fota", (unsigned)ntohs(sa.sin_port));
	CU_ASSERT_EQUAL_FATAL(agent_fetch_open(url, NULL, &f, &err), FOTA_OK);
	CU_ASSERT_EQUAL(fetch_once(f, 0, 100, count_sink, NULL, &err), FETCH_RETRY);
	ff = agent_fetch_failure(f);
	CU_ASSERT_EQUAL(ff.cause, FETCH_CAUSE_CONNECT);
	CU_ASSERT_EQUAL(ff.curl_code, (int)CURLE_COULDNT_CONNECT);
	CU_ASSERT_EQUAL(ff.sys_errno, ECONNREFUSED);
	CU_ASSERT_EQUAL(ff.http_status, 0);
	CU_ASSERT_EQUAL(fumo_result_for(AGENT_EXIT_DOWNLOAD, FUMO_CAUSE_NONE, false, &ff), 412);
	agent_fetch_close(f);
}

static int parse_text(const char *s, struct agent_journal *j, struct fota_error *err)
{
	return agent_journal_parse((const uint8_t *)s, strlen(s), j, err);
}

static void test_fumo_journal_v2(void)
{
	struct agent_journal j, k;
	struct fota_error err;
	memset(&j, 0, sizeof(j));
	j.op = AGENT_OP_UPDATE;
	j.phase = AGENT_PH_DOWNLOADED;
	j.state = FUMO_READY;
	snprintf(j.correlator, sizeof(j.correlator), "corr \"7\"");
	snprintf(j.srv_pkg_name, sizeof(j.srv_pkg_name), "fw");
	snprintf(j.srv_pkg_version, sizeof(j.srv_pkg_version), "2.0");
	j.dl_consent = true;
	j.defer_until_ms = 1780000000123;
	j.defers = 3;
	j.alert_pending = true;
	j.alert_op = AGENT_OP_DOWNLOAD;
	j.alert_result = 200;
	snprintf(j.alert_correlator, sizeof(j.alert_correlator), "c-dl");
	j.reboot_pending = true;
	j.reboot_due_ms = 1780000600000;
	j.reboot_defers = 1;
	j.reboot_deferred_min = 10;
	char *s = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL_FATAL(agent_journal_format(&j, &s, &n, &err), FOTA_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"version\":2"));
	memset(&k, 0xa5, sizeof(k));
	CU_ASSERT_EQUAL_FATAL(agent_journal_parse((uint8_t *)s, n, &k, &err), FOTA_OK);
	CU_ASSERT_EQUAL(memcmp(&j, &k, sizeof(j)), 0);
	/* broken version 2 records are refused with a message */
	char *bad = malloc(n + 64);
	CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
	const char *st = strstr(s, "\"state\":50");
	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	snprintf(bad, n + 64, "%.*s\"state\":55%s", (int)(st - s), s, st + strlen("\"state\":50"));
	CU_ASSERT_EQUAL(parse_text(bad, &k, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a FUMO state"));
	const char *ar = strstr(s, "\"alert_result\":200");
	CU_ASSERT_PTR_NOT_NULL_FATAL(ar);
	snprintf(bad, n + 64, "%.*s\"alert_result\":299%s", (int)(ar - s), s, ar + strlen("\"alert_result\":200"));
	CU_ASSERT_EQUAL(parse_text(bad, &k, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a result code"));
	const char *ao = strstr(s, "\"alert_op\":\"download\"");
	CU_ASSERT_PTR_NOT_NULL_FATAL(ao);
	snprintf(bad, n + 64, "%.*s\"alert_op\":\"none\"%s", (int)(ao - s), s, ao + strlen("\"alert_op\":\"download\""));
	CU_ASSERT_EQUAL(parse_text(bad, &k, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "pending alert"));
	/* a version 2 record missing a key */
	const char *co = strstr(s, ",\"correlator\":");
	CU_ASSERT_PTR_NOT_NULL_FATAL(co);
	const char *co_end = strstr(co + 1, ",\"srv_pkg_name\"");
	CU_ASSERT_PTR_NOT_NULL_FATAL(co_end);
	snprintf(bad, n + 64, "%.*s%s", (int)(co - s), s, co_end);
	CU_ASSERT_EQUAL(parse_text(bad, &k, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "correlator"));
	free(bad);
	free(s);
}

static void test_fumo_journal_v1(void)
{
	/* a version 1 record (as agents before issue 6 wrote it) loads; its state follows
	 * from the phase; it may not carry version 2 keys */
	static const char v1[] =
		"{\"version\":1,\"op\":\"download\",\"phase\":\"%s\",\"url\":\"file:///p.fota\",\"etag\":\"\","
		"\"last_modified\":\"\",\"pkg_size\":0,\"head_ok\":%s,\"manifest_len\":0,\"sig_len\":0,"
		"\"manifest_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
		"\"stream\":0,\"target_slot\":\"-\",\"dl_next\":0,\"ap_next\":0,\"ip_step\":0,\"source_ok\":false,"
		"\"restarts\":0,\"bytes\":0,\"pkg_name\":\"\",\"pkg_version\":\"\",\"result\":0,\"message\":\"\"%s}";
	static const struct {
		const char *phase, *head_ok;
		int state;
	} cases[] = { { "idle", "false", 10 },       { "downloading", "false", 30 }, { "downloaded", "true", 40 },
		      { "applying", "true", 60 },    { "applied", "true", 60 },      { "done", "true", 100 },
		      { "failed", "false", 20 } };
	char buf[2048];
	struct agent_journal j;
	struct fota_error err;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), v1, cases[i].phase, cases[i].head_ok, "");
		CU_ASSERT_EQUAL(parse_text(buf, &j, &err), FOTA_OK);
		CU_ASSERT_EQUAL(j.state, cases[i].state);
	}
	snprintf(buf, sizeof(buf), v1, "idle", "false", ",\"state\":10");
	CU_ASSERT_EQUAL(parse_text(buf, &j, &err), FOTA_E_FORMAT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not in version 1"));
}

static void expect_bad_config(const char *extra, const char *needle)
{
	char *t = tagent_config_text(FOTA_MODE_AB, false, extra);
	tagent_expect_config_error(t, needle);
	free(t);
}

static void test_fumo_config_policy(void)
{
	struct agent_config *c = tagent_config(FOTA_MODE_AB, false, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(c->popup[FOTA_PRIO_LOW], AGENT_POPUP_NOTIFY);
	CU_ASSERT_EQUAL(c->popup[FOTA_PRIO_MEDIUM], AGENT_POPUP_PROMPT);
	CU_ASSERT_EQUAL(c->popup[FOTA_PRIO_HIGH], AGENT_POPUP_PROMPT);
	CU_ASSERT_EQUAL(c->roaming, FOTA_ROAM_ALLOW);
	CU_ASSERT_EQUAL(c->hook_timeout_s, 60);
	CU_ASSERT_STRING_EQUAL(c->fumo_node, "./FwUpdate/fota");
	CU_ASSERT_PTR_NULL(c->consent_command);
	CU_ASSERT_FALSE(c->keep_package);
	agent_config_free(c);
	c = tagent_config(FOTA_MODE_AB, false,
			  "[ui]\nconsent_command = exit 0\npopup_low = none\npopup_high = notify\ndefer_minutes = 5\n"
			  "reboot_max_defers = 4\nreboot_max_total_minutes = 90\nhook_timeout_seconds = 7\n"
			  "install_message = Hello\n[network]\nstatus_file = /run/net\nroaming = wifi-only\n"
			  "[agent]\nkeep_package = yes\nfumo_node = ./FUMO/x\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_STRING_EQUAL(c->consent_command, "exit 0");
	CU_ASSERT_EQUAL(c->popup[FOTA_PRIO_LOW], AGENT_POPUP_NONE);
	CU_ASSERT_EQUAL(c->popup[FOTA_PRIO_HIGH], AGENT_POPUP_NOTIFY);
	CU_ASSERT_EQUAL(c->defer_s, 300);
	CU_ASSERT_EQUAL(c->reboot_max_defers, 4);
	CU_ASSERT_EQUAL(c->reboot_max_total_s, 90 * 60);
	CU_ASSERT_EQUAL(c->hook_timeout_s, 7);
	CU_ASSERT_STRING_EQUAL(c->install_message, "Hello");
	CU_ASSERT_STRING_EQUAL(c->net_status_file, "/run/net");
	CU_ASSERT_EQUAL(c->roaming, FOTA_ROAM_WIFI_ONLY);
	CU_ASSERT(c->keep_package);
	CU_ASSERT_STRING_EQUAL(c->fumo_node, "./FUMO/x");
	agent_config_free(c);
	expect_bad_config("[ui]\npopup_medium = ask\n", "[ui] popup_medium: must be none, notify or prompt");
	expect_bad_config("[network]\nroaming = sometimes\n", "[network] roaming: must be allow, deny or wifi-only");
	expect_bad_config("[agent]\nkeep_package = maybe\n", "[agent] keep_package: must be yes or no");
	expect_bad_config("[ui]\nhook_timeout_seconds = 0\n", "hook_timeout_seconds: must be at least 1");
	expect_bad_config("[network]\nstatus_file = /a\nstatus_command = echo home\n", "give only one");
	expect_bad_config("[ui]\nconsent = x\n", "[ui] consent: unknown key");
	expect_bad_config("[ui]\ndefer_minutes = -1\n", "[ui] defer_minutes");
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_fumo_hooks(void)
{
	struct fota_error err;
	char out[64];
	fota_error_clear(&err);
	CU_ASSERT_EQUAL(agent_hook_run("t", "exit 0", NULL, NULL, 5, NULL, 0, &err), 0);
	CU_ASSERT_EQUAL(agent_hook_run("t", "exit 2", NULL, NULL, 5, NULL, 0, &err), 2);
	/* arguments as $1, $2; environment added; the first line of stdout, trimmed */
	const char *args[] = { "install", "Hello world", NULL };
	const char *env[] = { "FOTA_T1=one", "FOTA_T2=two", NULL };
	CU_ASSERT_EQUAL(agent_hook_run("t", "printf '%s|%s|%s|%s  \\nsecond\\n' \"$1\" \"$2\" \"$FOTA_T1\" \"$FOTA_T2\"",
				       args, env, 5, out, sizeof(out), &err), 0);
	CU_ASSERT_STRING_EQUAL(out, "install|Hello world|one|two");
	CU_ASSERT_PTR_NULL(getenv("FOTA_T1")); /* the agent's own environment is unchanged */
	/* output longer than the buffer is cut */
	CU_ASSERT_EQUAL(agent_hook_run("t", "printf '%0100d\\n' 0", NULL, NULL, 5, out, 8, &err), 0);
	CU_ASSERT_EQUAL(strlen(out), 7);
	/* a hook that outlives its timeout is killed, its children too */
	int64_t t0 = mono_ms();
	fota_error_clear(&err);
	CU_ASSERT_EQUAL(agent_hook_run("slow", "sleep 30 & sleep 30", NULL, NULL, 1, out, sizeof(out), &err),
			AGENT_HOOK_TIMEOUT);
	int64_t dt = mono_ms() - t0;
	CU_ASSERT(dt >= 900 && dt < 5000);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slow"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "killed"));
	/* killed by a signal */
	CU_ASSERT_EQUAL(agent_hook_run("t", "kill -9 $$", NULL, NULL, 5, NULL, 0, &err), AGENT_HOOK_FAILED);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "signal 9"));
	/* stdin is /dev/null: a hook that reads does not hang */
	CU_ASSERT_EQUAL(agent_hook_run("t", "read x; exit 3", NULL, NULL, 5, NULL, 0, &err), 3);
}

/* One boot of the agent on the surviving simulated storage: the DM server's
 * DownloadAndUpdate the first time (or again when the cut came before the job was
 * journaled: the command was never accepted), resume after. */
static int fumo_boot(struct fota_sim *sim, const struct agent_config *cfg, const char *url, struct tclock *ck,
		     bool first, struct agent_journal *j)
{
	struct agent_env env = { cfg, fota_sim_store(sim), fota_sim_devices(sim), tagent_clock(ck), NULL };
	struct agent *a = NULL;
	struct fota_error err;
	const struct agent_op_args args = { "corr-pc", "fw", "2.0" };
	fota_error_clear(&err);
	if (agent_open(&env, &a, &err) != FOTA_OK)
		return AGENT_EXIT_IO;
	int rc;
	if (first || agent_journal(a)->state == FUMO_IDLE)
		rc = agent_download_op(a, url, true, &args, &err);
	else
		rc = agent_resume(a, &err);
	*j = *agent_journal(a);
	agent_close(a);
	return rc;
}

/*
 * A power cut at every write, sync and journal step of a DownloadAndUpdate with the
 * consent hook asked twice (download and install): after the reboot, resume ends in
 * state 100 with the alert 200 and the server's correlator and package, and the
 * journal that survived each cut holds a FUMO state on the path 10 -> 30 -> 50 -> 60
 * -> 100 (never one outside it).
 */
static void test_fumo_powercut(void)
{
	uint8_t *src, *dst;
	size_t len;
	tagent_pair(&src, &dst, &len, 11);
	char *path = NULL;
	CU_ASSERT_FATAL(asprintf(&path, "%s/fumo-pc.fota", unit_tmpdir()) > 0);
	struct tpkg o = { .mode = FOTA_MODE_AB, .chunk = 8192, .model = "HX-100", .security_version = 2,
			  .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(path, src, len, dst, len, &o), 0);
	char url[600];
	snprintf(url, sizeof(url), "file://%s", path);
	struct agent_config *cfg = tagent_config(FOTA_MODE_AB, false, "[ui]\nconsent_command = exit 0\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	uint64_t total = 0, tried = 0, survived = 0;
	for (uint64_t c = 0; c == 0 || c <= total; c++) {
		for (int torn = 0; torn < (c ? 2 : 1); torn++) {
			struct fota_sim *sim = fota_sim_new();
			CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
			uint8_t *junk = calloc(1, len + 4096);
			CU_ASSERT_FATAL(junk && fota_sim_dev_set(sim, "slot_a", src, len) == FOTA_OK &&
					fota_sim_dev_set(sim, "slot_b", junk, len + 4096) == FOTA_OK);
			free(junk);
			struct tclock ck = { .now_ms = 1780000000000, .tick_ms = 150 };
			struct agent_journal j;
			memset(&j, 0, sizeof(j));
			fota_sim_set_cut(sim, c, torn);
			int rc = fumo_boot(sim, cfg, url, &ck, true, &j);
			if (c == 0) {
				total = fota_sim_events(sim);
				CU_ASSERT_EQUAL(rc, 0);
			} else {
				tried++;
				fota_sim_reboot(sim);
				/* the journal the cut left: a state on the path */
				struct agent_env env = { cfg, fota_sim_store(sim), fota_sim_devices(sim), tagent_clock(&ck), NULL };
				struct agent *a = NULL;
				struct fota_error err;
				bool on_path = false;
				if (agent_open(&env, &a, &err) == FOTA_OK) {
					int st = agent_journal(a)->state;
					on_path = st == 10 || st == 30 || st == 50 || st == 60 || st == 100;
				}
				agent_close(a);
				for (int i = 0; i < 3 && rc != 0; i++)
					rc = fumo_boot(sim, cfg, url, &ck, false, &j);
				if (rc == 0)
					rc = fumo_boot(sim, cfg, url, &ck, false, &j); /* once more: a no-op */
				size_t n = 0;
				uint8_t *got = fota_sim_dev_get(sim, "slot_b", &n);
				bool ok = on_path && rc == 0 && j.state == FUMO_UPD_OK_NODATA && j.alert_pending &&
					  j.alert_result == 200 && j.alert_op == AGENT_OP_DOWNLOAD_AND_UPDATE &&
					  strcmp(j.alert_correlator, "corr-pc") == 0 && strcmp(j.srv_pkg_name, "fw") == 0 &&
					  got && n >= len && memcmp(got, dst, len) == 0 && fota_sim_dev_writes(sim, "slot_a") == 0;
				free(got);
				if (ok)
					survived++;
				else if (tried - survived <= 3)
					fprintf(stderr, "\n  fumo power cut at %llu%s: rc %d, state %d, alert %d/%d '%s', on path %d\n",
						(unsigned long long)c, torn ? " (torn)" : "", rc, j.state, j.alert_pending,
						j.alert_result, j.alert_correlator, on_path);
			}
			fota_sim_free(sim);
		}
	}
	printf("\n  FUMO power cut: %llu events, %llu cut points tried, %llu survived ", (unsigned long long)total,
	       (unsigned long long)tried, (unsigned long long)survived);
	CU_ASSERT(total > 20);
	CU_ASSERT_EQUAL(survived, tried);
	agent_config_free(cfg);
	free(path);
	free(src);
	free(dst);
}

/* fota_error_errno keeps the errno as data: set, prefixed (kept), overwritten and
 * cleared (dropped). */
static void test_fumo_error_errno(void)
{
	struct fota_error e;
	fota_error_clear(&e);
	CU_ASSERT_EQUAL(fota_error_errno(&e, FOTA_E_IO, ENOSPC, "slot %s: write at %d", "b", 4096), FOTA_E_IO);
	CU_ASSERT_EQUAL(e.code, FOTA_E_IO);
	CU_ASSERT_EQUAL(e.sys_errno, ENOSPC);
	char want[FOTA_ERROR_MSG_MAX];
	snprintf(want, sizeof(want), "slot b: write at 4096: %s", strerror(ENOSPC));
	CU_ASSERT_STRING_EQUAL(e.msg, want);
	CU_ASSERT_EQUAL(fota_error_prefix(&e, "apply: "), FOTA_E_IO);
	CU_ASSERT_EQUAL(e.sys_errno, ENOSPC);
	CU_ASSERT(strncmp(e.msg, "apply: slot b", 13) == 0);
	fota_error_set(&e, FOTA_E_INTEGRITY, "chunk 3: sha256 mismatch");
	CU_ASSERT_EQUAL(e.sys_errno, 0);
	fota_error_errno(&e, FOTA_E_IO, EIO, "x");
	CU_ASSERT_EQUAL(e.sys_errno, EIO);
	fota_error_clear(&e);
	CU_ASSERT_EQUAL(e.sys_errno, 0);
	CU_ASSERT_EQUAL(e.code, FOTA_OK);
	CU_ASSERT_EQUAL(fota_error_errno(NULL, FOTA_E_IO, ENOSPC, "x"), FOTA_E_IO);
}

/* sim devices whose slot_b refuses writes after the first `room` bytes with `fail_errno`,
 * its message free of strerror text: what the agent concludes must come from the errno. */
struct full_dev {
	struct fota_storage s;
	struct fota_storage *inner;
	uint64_t room, written;
	int fail_errno;
};
struct full_devs {
	struct fota_devices sim;
	uint64_t room;
	int fail_errno;
};
static fota_status full_read(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	return fota_storage_read(((struct full_dev *)s)->inner, off, buf, len, err);
}
static fota_status full_write(struct fota_storage *s, uint64_t off, const void *buf, size_t len,
			      struct fota_error *err)
{
	struct full_dev *d = (struct full_dev *)s;
	if (d->written + len > d->room) {
		fota_error_set(err, FOTA_E_IO, "%s: the device refused the write", s->name);
		if (err)
			err->sys_errno = d->fail_errno;
		return FOTA_E_IO;
	}
	d->written += len;
	return fota_storage_write(d->inner, off, buf, len, err);
}
static fota_status full_sync(struct fota_storage *s, struct fota_error *err)
{
	return fota_storage_sync(((struct full_dev *)s)->inner, err);
}
static fota_status full_size(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{
	return fota_storage_size(((struct full_dev *)s)->inner, out, err);
}
static void full_close(struct fota_storage *s)
{
	fota_storage_close(((struct full_dev *)s)->inner);
	free(s);
}
static const struct fota_storage_ops full_ops = { full_read, full_write, full_sync, full_size, full_close };
static fota_status full_open(void *ctx, const char *path, bool writable, struct fota_storage **out,
			     struct fota_error *err)
{
	struct full_devs *fd = ctx;
	fota_status rc = fd->sim.open(fd->sim.ctx, path, writable, out, err);
	if (rc != FOTA_OK || strcmp(path, "slot_b") != 0)
		return rc;
	struct full_dev *d = calloc(1, sizeof(*d));
	if (!d) {
		fota_storage_close(*out);
		*out = NULL;
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	}
	d->s.ops = &full_ops;
	snprintf(d->s.name, sizeof(d->s.name), "%s", (*out)->name);
	d->inner = *out;
	d->room = fd->room;
	d->fail_errno = fd->fail_errno;
	*out = &d->s;
	return FOTA_OK;
}

/* A write to the slot that fails with ENOSPC or EFBIG is "the update ran out of space"
 * (502, state 70, exit 4) from the errno the backend recorded, whatever its message
 * says; EIO is not. After room appears, resume completes. */
static void test_fumo_no_space_from_errno(void)
{
	uint8_t *src, *dst;
	size_t len;
	tagent_pair(&src, &dst, &len, 12);
	char *path = NULL;
	CU_ASSERT_FATAL(asprintf(&path, "%s/fumo-nospace.fota", unit_tmpdir()) > 0);
	struct tpkg o = { .mode = FOTA_MODE_AB, .chunk = 8192, .corrupt_chunk = -1 };
	CU_ASSERT_EQUAL_FATAL(tagent_build(path, src, len, dst, len, &o), 0);
	char url[600];
	snprintf(url, sizeof(url), "file://%s", path);
	struct agent_config *cfg = tagent_config(FOTA_MODE_AB, false, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	const int errnos[] = { ENOSPC, EFBIG, EIO };
	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
		struct fota_sim *sim = fota_sim_new();
		CU_ASSERT_PTR_NOT_NULL_FATAL(sim);
		uint8_t *junk = calloc(1, len);
		CU_ASSERT_FATAL(junk && fota_sim_dev_set(sim, "slot_a", src, len) == FOTA_OK &&
				fota_sim_dev_set(sim, "slot_b", junk, len) == FOTA_OK);
		free(junk);
		struct full_devs fd = { fota_sim_devices(sim), 16384, errnos[i] };
		struct tclock ck = { .now_ms = 1780000000000, .tick_ms = 150 };
		struct agent_env env = { cfg, fota_sim_store(sim), { &fd, full_open }, tagent_clock(&ck), NULL };
		struct agent *a = NULL;
		struct fota_error err;
		fota_error_clear(&err);
		CU_ASSERT_EQUAL_FATAL(agent_open(&env, &a, &err), FOTA_OK);
		int rc = agent_download_op(a, url, true, NULL, &err);
		const struct agent_journal *j = agent_journal(a);
		CU_ASSERT_EQUAL(rc, AGENT_EXIT_IO);
		CU_ASSERT(strstr(err.msg, strerror(errnos[i])) == NULL);
		if (errnos[i] == EIO) {
			CU_ASSERT_NOT_EQUAL(j->result, 502);
			CU_ASSERT_NOT_EQUAL(j->alert_result, 502);
		} else {
			CU_ASSERT_EQUAL(j->state, FUMO_UPD_FAILED_DATA);
			CU_ASSERT_EQUAL(j->alert_result, 502);
		}
		agent_close(a);
		/* room again: resume (or update) completes the job with the exact target */
		fd.room = UINT64_MAX;
		CU_ASSERT_EQUAL_FATAL(agent_open(&env, &a, &err), FOTA_OK);
		/* 502 ends the operation (resume waits for a new one); the user retries the update */
		rc = errnos[i] == EIO ? agent_resume(a, &err) : agent_update(a, &err);
		if (rc != 0)
			fprintf(stderr, "\n  errno %d: after room: rc %d state %d: %s\n", errnos[i], rc,
				agent_journal(a)->state, err.msg);
		CU_ASSERT_EQUAL(rc, 0);
		CU_ASSERT_EQUAL(agent_journal(a)->state, FUMO_UPD_OK_NODATA);
		agent_close(a);
		size_t n = 0;
		uint8_t *got = fota_sim_dev_get(sim, "slot_b", &n);
		CU_ASSERT(got && n >= len && memcmp(got, dst, len) == 0);
		CU_ASSERT_EQUAL(fota_sim_dev_writes(sim, "slot_a"), 0);
		free(got);
		fota_sim_free(sim);
	}
	agent_config_free(cfg);
	free(path);
	free(src);
	free(dst);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_fumo_state_names);
	UNIT_ADD(s, test_fumo_error_errno);
	UNIT_ADD(s, test_fumo_no_space_from_errno);
	UNIT_ADD(s, test_fumo_transitions);
	UNIT_ADD(s, test_fumo_result_table);
	UNIT_ADD(s, test_fumo_result_for);
	UNIT_ADD(s, test_fumo_fetch_causes);
	UNIT_ADD(s, test_fumo_fetch_records_causes);
	UNIT_ADD(s, test_fumo_journal_v2);
	UNIT_ADD(s, test_fumo_journal_v1);
	UNIT_ADD(s, test_fumo_config_policy);
	UNIT_ADD(s, test_fumo_hooks);
	UNIT_ADD(s, test_fumo_powercut);
}

UNIT_SUITE("agent/fumo", add)
