/*
 * policy.c: the user policies (see policy.h). The hooks (hooks.h) stand in for the
 * handset's dialogs; what the user answered is journaled before the agent acts on it,
 * so a power cut never asks twice for an answer already acted on, nor acts on one that
 * was not recorded.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fota/util.h"
#include "hooks.h"
#include "policy.h"

static const char *const net_names[] = { "home", "roaming", "wifi", "offline", "unknown" };

const char *agent_net_name(enum agent_net n)
{
	return (unsigned)n < sizeof(net_names) / sizeof(net_names[0]) ? net_names[n] : "unknown";
}

static int64_t now_ms(struct agent *a)
{
	return a->env.clock.now_ms(a->env.clock.ctx);
}

static enum agent_net parse_net(const char *s)
{
	for (int i = 0; i < AGENT_NET_UNKNOWN; i++)
		if (strcmp(s, net_names[i]) == 0)
			return (enum agent_net)i;
	return AGENT_NET_UNKNOWN;
}

enum agent_net agent_policy_network(struct agent *a, char *why, size_t cap)
{
	const struct agent_config *c = a->cfg;
	char line[64] = "";
	struct fota_error e;
	fota_error_clear(&e);
	if (c->net_status_command) {
		int rc = agent_hook_run("[network] status_command", c->net_status_command, NULL, NULL, c->hook_timeout_s,
					line, sizeof(line), &e);
		if (rc != 0) {
			snprintf(why, cap, "network status: %s", rc < 0 ? e.msg : "the command failed");
			return AGENT_NET_UNKNOWN;
		}
	} else if (c->net_status_file) {
		FILE *f = fopen(c->net_status_file, "r");
		if (!f || !fgets(line, sizeof(line), f)) {
			snprintf(why, cap, "network status: %s: cannot read it", c->net_status_file);
			if (f)
				fclose(f);
			return AGENT_NET_UNKNOWN;
		}
		fclose(f);
		line[strcspn(line, " \t\r\n")] = 0;
	} else {
		return AGENT_NET_HOME;
	}
	enum agent_net n = parse_net(line);
	if (n == AGENT_NET_UNKNOWN)
		snprintf(why, cap, "network status: '%.32s' is not home, roaming, wifi or offline", line);
	return n;
}

/* deny forbids roaming; wifi-only forbids cellular: the stricter of config and manifest */
static enum fota_roaming roaming_policy(struct agent *a)
{
	enum fota_roaming r = a->cfg->roaming;
	if (a->m) {
		enum fota_roaming mr = a->m->policy.roaming;
		if (mr == FOTA_ROAM_WIFI_ONLY || (mr == FOTA_ROAM_DENY && r == FOTA_ROAM_ALLOW))
			r = mr;
	}
	return r;
}

bool agent_policy_download_allowed(struct agent *a, char *why, size_t cap)
{
	enum agent_net n = agent_policy_network(a, why, cap);
	enum fota_roaming r = roaming_policy(a);
	switch (n) {
	case AGENT_NET_WIFI: return true;
	case AGENT_NET_HOME:
		if (r != FOTA_ROAM_WIFI_ONLY)
			return true;
		snprintf(why, cap, "download paused: on cellular, and the roaming policy is wifi-only");
		return false;
	case AGENT_NET_ROAMING:
		if (r == FOTA_ROAM_ALLOW)
			return true;
		snprintf(why, cap, "download paused: roaming, and the roaming policy is %s", fota_roaming_name(r));
		return false;
	case AGENT_NET_OFFLINE:
		snprintf(why, cap, "download paused: the device is offline");
		return false;
	default:
		return false; /* why is set */
	}
}

/* The install message: the manifest's, else the config's, else "". */
static const char *install_message(struct agent *a)
{
	if (a->m && a->m->policy.install_message)
		return a->m->policy.install_message;
	return a->cfg->install_message ? a->cfg->install_message : "";
}

#define ENV_MAX 12

struct hook_env {
	char buf[ENV_MAX][FOTA_STRING_MAX + AGENT_CORRELATOR_MAX + 64];
	const char *list[ENV_MAX + 1];
	size_t n;
};

static void env_add(struct hook_env *e, const char *name, const char *value)
{
	if (e->n == ENV_MAX)
		return;
	snprintf(e->buf[e->n], sizeof(e->buf[e->n]), "%s=%s", name, value);
	e->list[e->n] = e->buf[e->n];
	e->list[++e->n] = NULL;
}

/* What every UI hook gets: the package, the job and the user's history with it. */
static void env_common(struct agent *a, struct hook_env *e, const char *stage, const char *net)
{
	char num[32];
	e->n = 0;
	e->list[0] = NULL;
	env_add(e, "FOTA_STAGE", stage);
	env_add(e, "FOTA_PKG_NAME", a->m ? a->m->name : a->j.pkg_name);
	env_add(e, "FOTA_PKG_VERSION", a->m ? a->m->version : a->j.pkg_version);
	env_add(e, "FOTA_PRIORITY", a->m ? fota_priority_name(a->m->policy.priority) : "");
	env_add(e, "FOTA_SILENT", a->m && a->m->policy.silent ? "1" : "0");
	env_add(e, "FOTA_INSTALL_MESSAGE", install_message(a));
	env_add(e, "FOTA_CORRELATOR", a->j.correlator);
	snprintf(num, sizeof(num), "%" PRIu64, a->j.defers);
	env_add(e, "FOTA_DEFERS", num);
	if (net)
		env_add(e, "FOTA_NETWORK", net);
}

/* 0 accept, 1 cancel, anything else (2, a timeout, a crash) defer. */
static int consent(struct agent *a, const char *stage, struct fota_error *err)
{
	struct hook_env e;
	env_common(a, &e, stage, NULL);
	const char *args[] = { stage, install_message(a), NULL };
	struct fota_error he;
	fota_error_clear(&he);
	int rc = agent_hook_run("[ui] consent_command", a->cfg->consent_command, args, e.list, a->cfg->hook_timeout_s,
				NULL, 0, &he);
	if (rc == 0) {
		agent_log(a, "%s: the user accepted", stage);
		return AGENT_EXIT_OK;
	}
	if (rc == 1) {
		fota_error_set(err, FOTA_E_ARG, "%s: the user cancelled (consent_command exit 1)", stage);
		return agent_fail(a, AGENT_EXIT_CANCELLED);
	}
	if (rc < 0)
		agent_log(a, "%s; taken as defer", he.msg);
	const int64_t until = now_ms(a) + (int64_t)a->cfg->defer_s * 1000;
	a->j.defer_until_ms = until > 0 ? until : 1;
	a->j.defers++;
	char t[21];
	fota_time_format(a->j.defer_until_ms / 1000, t);
	snprintf(a->j.message, sizeof(a->j.message), "%s deferred by the user until %s", stage, t);
	fota_error_set(err, FOTA_E_ARG, "%s", a->j.message);
	if (agent_commit(a, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	agent_log(a, "%s", a->j.message);
	return agent_fail(a, AGENT_EXIT_DEFERRED);
}

static int still_deferred(struct agent *a, const char *stage, struct fota_error *err)
{
	if (a->j.defer_until_ms == 0 || now_ms(a) >= a->j.defer_until_ms)
		return AGENT_EXIT_OK;
	char t[21];
	fota_time_format(a->j.defer_until_ms / 1000, t);
	fota_error_set(err, FOTA_E_ARG, "%s deferred by the user until %s", stage, t);
	return agent_fail(a, AGENT_EXIT_DEFERRED);
}

int agent_policy_download_gate(struct agent *a, struct fota_error *err)
{
	if (a->j.dl_consent)
		return AGENT_EXIT_OK;
	int x = still_deferred(a, "download", err);
	if (x != 0)
		return x;
	const struct fota_manifest *m = a->m;
	if (!m->policy.silent) {
		enum agent_popup p = a->cfg->popup[m->policy.priority <= FOTA_PRIO_HIGH ? m->policy.priority : FOTA_PRIO_HIGH];
		if (p == AGENT_POPUP_NOTIFY && a->cfg->notify_command) {
			struct hook_env e;
			env_common(a, &e, "download", NULL);
			const char *args[] = { "download", install_message(a), NULL };
			struct fota_error he;
			fota_error_clear(&he);
			int rc = agent_hook_run("[ui] notify_command", a->cfg->notify_command, args, e.list,
						a->cfg->hook_timeout_s, NULL, 0, &he);
			if (rc != 0)
				agent_log(a, "notify_command: %s (ignored)", rc < 0 ? he.msg : "non-zero exit");
		} else if (p == AGENT_POPUP_PROMPT && a->cfg->consent_command) {
			if ((x = consent(a, "download", err)) != 0)
				return x;
		}
	}
	char why[256] = "";
	enum agent_net n = agent_policy_network(a, why, sizeof(why));
	if ((n == AGENT_NET_HOME || n == AGENT_NET_ROAMING) && a->cfg->data_charge_command) {
		struct hook_env e;
		env_common(a, &e, "data-charge", agent_net_name(n));
		char size[32];
		snprintf(size, sizeof(size), "%" PRIu64, a->j.pkg_size);
		env_add(&e, "FOTA_PKG_SIZE", size);
		const char *args[] = { agent_net_name(n), size, NULL };
		struct fota_error he;
		fota_error_clear(&he);
		int rc = agent_hook_run("[ui] data_charge_command", a->cfg->data_charge_command, args, e.list,
					a->cfg->hook_timeout_s, NULL, 0, &he);
		if (rc != 0) {
			fota_error_set(err, FOTA_E_ARG, "download: the user declined the data-charge notice (%s)",
				       rc < 0 ? he.msg : "data_charge_command exit non-zero");
			return agent_fail(a, AGENT_EXIT_CANCELLED);
		}
	}
	a->j.dl_consent = true;
	a->j.defer_until_ms = 0;
	if (agent_commit(a, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	return AGENT_EXIT_OK;
}

int agent_policy_install_consent(struct agent *a, struct fota_error *err)
{
	if (!a->cfg->consent_command)
		return AGENT_EXIT_OK;
	int x = still_deferred(a, "install", err);
	if (x != 0)
		return x;
	if ((x = consent(a, "install", err)) != 0)
		return x;
	a->j.defer_until_ms = 0;
	return AGENT_EXIT_OK;
}

/* "delay MINUTES" (1..): minutes, else 0 */
static uint64_t parse_delay(const char *s)
{
	uint64_t v;
	if (strncmp(s, "delay ", 6) != 0 || fota_parse_u64(s + 6, &v) != 0 || v == 0 || v > 30u * 24 * 60)
		return 0;
	return v;
}

int agent_policy_reboot(struct agent *a, struct fota_error *err)
{
	const struct agent_config *c = a->cfg;
	const int64_t now = now_ms(a);
	if (a->j.reboot_pending && now < a->j.reboot_due_ms) {
		char t[21];
		fota_time_format(a->j.reboot_due_ms / 1000, t);
		agent_log(a, "reboot deferred by the user until %s", t);
		return AGENT_EXIT_OK;
	}
	if (!c->reboot_prompt_command && !c->reboot_command) {
		a->j.reboot_pending = false;
		return AGENT_EXIT_OK;
	}
	if (c->reboot_prompt_command) {
		struct hook_env e;
		env_common(a, &e, "reboot", NULL);
		char num[4][32];
		uint64_t left_n = a->j.reboot_defers < c->reboot_max_defers ? c->reboot_max_defers - a->j.reboot_defers : 0;
		uint64_t max_min = c->reboot_max_total_s / 60;
		uint64_t left_min = a->j.reboot_deferred_min < max_min ? max_min - a->j.reboot_deferred_min : 0;
		snprintf(num[0], 32, "%" PRIu64, a->j.reboot_defers);
		snprintf(num[1], 32, "%" PRIu64, a->j.reboot_deferred_min);
		snprintf(num[2], 32, "%" PRIu64, left_n);
		snprintf(num[3], 32, "%" PRIu64, left_min);
		env_add(&e, "FOTA_REBOOT_DEFERS", num[0]);
		env_add(&e, "FOTA_REBOOT_DEFERRED_MINUTES", num[1]);
		env_add(&e, "FOTA_REBOOT_DEFERS_LEFT", num[2]);
		env_add(&e, "FOTA_REBOOT_MINUTES_LEFT", num[3]);
		const char *args[] = { "reboot", NULL };
		char ans[64];
		struct fota_error he;
		fota_error_clear(&he);
		int rc = agent_hook_run("[ui] reboot_prompt_command", c->reboot_prompt_command, args, e.list,
					c->hook_timeout_s, ans, sizeof(ans), &he);
		uint64_t d = rc == 0 ? parse_delay(ans) : 0;
		if (rc != 0 || (d == 0 && strcmp(ans, "now") != 0))
			agent_log(a, "reboot_prompt_command: %s; rebooting now",
				  rc < 0 ? he.msg : rc > 0 ? "non-zero exit" : "answer is neither 'now' nor 'delay MINUTES'");
		if (d > 0 && left_n > 0 && d <= left_min) {
			a->j.reboot_pending = true;
			a->j.reboot_due_ms = now + (int64_t)d * 60000;
			a->j.reboot_defers++;
			a->j.reboot_deferred_min += d;
			char t[21];
			fota_time_format(a->j.reboot_due_ms / 1000, t);
			snprintf(a->j.message, sizeof(a->j.message), "reboot deferred by the user until %s (%" PRIu64
				 " of %" PRIu64 " deferrals, %" PRIu64 " of %" PRIu64 " minutes)", t, a->j.reboot_defers,
				 c->reboot_max_defers, a->j.reboot_deferred_min, max_min);
			agent_log(a, "%s", a->j.message);
			if (agent_commit(a, err) != FOTA_OK)
				return agent_fail(a, AGENT_EXIT_IO);
			return AGENT_EXIT_OK;
		}
		if (d > 0)
			agent_log(a, "reboot: a delay of %" PRIu64 " min is past the caps (%" PRIu64 " deferrals, %" PRIu64
				  " minutes left); rebooting now", d, left_n, left_min);
	}
	/* journal first: the reboot may well end this process */
	a->j.reboot_pending = false;
	a->j.reboot_due_ms = 0;
	snprintf(a->j.message, sizeof(a->j.message), "rebooting (after %" PRIu64 " deferrals, %" PRIu64 " minutes)",
		 a->j.reboot_defers, a->j.reboot_deferred_min);
	if (agent_commit(a, err) != FOTA_OK)
		return agent_fail(a, AGENT_EXIT_IO);
	agent_log(a, "%s", a->j.message);
	if (c->reboot_command) {
		struct hook_env e;
		env_common(a, &e, "reboot", NULL);
		struct fota_error he;
		fota_error_clear(&he);
		int rc = agent_hook_run("[device] reboot_command", c->reboot_command, NULL, e.list, c->hook_timeout_s, NULL,
					0, &he);
		if (rc != 0) {
			fota_error_set(err, FOTA_E_IO, "[device] reboot_command: %s", rc < 0 ? he.msg : "non-zero exit");
			return agent_fail(a, AGENT_EXIT_HOOK);
		}
	}
	return AGENT_EXIT_OK;
}
