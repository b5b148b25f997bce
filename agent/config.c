/*
 * config.c: strict INI configuration (see config.h). libinih splits the text into
 * (section, key, value); this file knows every key, refuses the rest, and checks that
 * each mode has what it needs.
 */
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fota/util.h"
#include "config.h"

enum ktype { K_STR, K_U64, K_MODE, K_SLOT, K_TRUST, K_DLMODE, K_BOOL, K_POPUP, K_ROAM };

struct key {
	const char *section, *name;
	enum ktype type;
	size_t offset;   /* into struct agent_config */
	uint64_t max;    /* K_U64 */
	uint64_t scale;  /* K_U64: multiplier (minutes -> seconds) */
};

#define OFF(f) offsetof(struct agent_config, f)
static const struct key keys[] = {
	{ "device", "mode", K_MODE, OFF(mode), 0, 0 },
	{ "device", "slot_a", K_STR, OFF(slot_a), 0, 0 },
	{ "device", "slot_b", K_STR, OFF(slot_b), 0, 0 },
	{ "device", "active_slot", K_SLOT, OFF(active_slot), 0, 0 },
	{ "device", "active_slot_command", K_STR, OFF(active_slot_command), 0, 0 },
	{ "device", "switch_command", K_STR, OFF(switch_command), 0, 0 },
	{ "device", "target", K_STR, OFF(target), 0, 0 },
	{ "device", "scratch", K_STR, OFF(scratch), 0, 0 },
	{ "device", "model", K_STR, OFF(model), 0, 0 },
	{ "device", "security_version", K_U64, OFF(security_version), INT64_MAX, 1 },
	{ "agent", "state_dir", K_STR, OFF(state_dir), 0, 0 },
	{ "agent", "trust", K_TRUST, OFF(trust), 0, 0 },
	{ "agent", "crl", K_STR, OFF(crl), 0, 0 },
	{ "download", "retry_window_minutes", K_U64, OFF(retry_window_s), 10u * 365 * 24 * 60, 60 },
	{ "download", "backoff_base_seconds", K_U64, OFF(backoff_base_s), 24u * 3600, 1 },
	{ "download", "backoff_max_seconds", K_U64, OFF(backoff_max_s), 7u * 24 * 3600, 1 },
	{ "download", "mode", K_DLMODE, OFF(dl_mode), 0, 0 },
	{ "download", "low_speed_limit_bytes", K_U64, OFF(low_speed_limit), 1u << 30, 1 },
	{ "download", "low_speed_time_seconds", K_U64, OFF(low_speed_time_s), 3600, 1 },
	{ "download", "connect_timeout_seconds", K_U64, OFF(connect_timeout_s), 3600, 1 },
	{ "download", "ca_bundle", K_STR, OFF(ca_bundle), 0, 0 },
	{ "download", "receive_buffer_bytes", K_U64, OFF(receive_buffer), 1u << 26, 1 },
	{ "agent", "fumo_node", K_STR, OFF(fumo_node), 0, 0 },
	{ "agent", "keep_package", K_BOOL, OFF(keep_package), 0, 0 },
	{ "device", "reboot_command", K_STR, OFF(reboot_command), 0, 0 },
	{ "ui", "consent_command", K_STR, OFF(consent_command), 0, 0 },
	{ "ui", "notify_command", K_STR, OFF(notify_command), 0, 0 },
	{ "ui", "data_charge_command", K_STR, OFF(data_charge_command), 0, 0 },
	{ "ui", "reboot_prompt_command", K_STR, OFF(reboot_prompt_command), 0, 0 },
	{ "ui", "install_message", K_STR, OFF(install_message), 0, 0 },
	{ "ui", "hook_timeout_seconds", K_U64, OFF(hook_timeout_s), 24u * 3600, 1 },
	{ "ui", "popup_low", K_POPUP, OFF(popup[0]), 0, 0 },
	{ "ui", "popup_medium", K_POPUP, OFF(popup[1]), 0, 0 },
	{ "ui", "popup_high", K_POPUP, OFF(popup[2]), 0, 0 },
	{ "ui", "defer_minutes", K_U64, OFF(defer_s), 30u * 24 * 60, 60 },
	{ "ui", "reboot_max_defers", K_U64, OFF(reboot_max_defers), 1000, 1 },
	{ "ui", "reboot_max_total_minutes", K_U64, OFF(reboot_max_total_s), 30u * 24 * 60, 60 },
	{ "network", "status_command", K_STR, OFF(net_status_command), 0, 0 },
	{ "network", "status_file", K_STR, OFF(net_status_file), 0, 0 },
	{ "network", "roaming", K_ROAM, OFF(roaming), 0, 0 },
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

struct parse_ctx {
	struct agent_config *c;
	const char *origin;
	bool seen[N_KEYS];
	struct fota_error *err;
	bool failed;
};

static int fail(struct parse_ctx *p, const char *section, const char *name, const char *why)
{
	if (!p->failed)
		fota_error_set(p->err, FOTA_E_ARG, "%s: [%s] %s: %s", p->origin, section, name, why);
	p->failed = true;
	return 0;
}

/* Index of value in a NULL-terminated list of words, or -1. */
static int word(const char *value, const char *const *words)
{
	for (int i = 0; words[i]; i++)
		if (strcmp(value, words[i]) == 0)
			return i;
	return -1;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *p = user;
	if (p->failed)
		return 0;
	size_t i;
	for (i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			break;
	if (i == N_KEYS) {
		bool known_section = false;
		for (size_t j = 0; j < N_KEYS; j++)
			known_section |= strcmp(keys[j].section, section) == 0;
		return fail(p, section, name, known_section ? "unknown key" : "unknown section");
	}
	if (p->seen[i])
		return fail(p, section, name, "given twice");
	p->seen[i] = true;
	if (value[0] == '\0')
		return fail(p, section, name, "empty value");
	if (strlen(value) > 4095)
		return fail(p, section, name, "value longer than 4095 bytes");
	void *field = (char *)p->c + keys[i].offset;
	switch (keys[i].type) {
	case K_STR: {
		char *s = strdup(value);
		if (!s)
			return fail(p, section, name, "out of memory");
		*(char **)field = s;
		break;
	}
	case K_U64: {
		uint64_t v;
		if (fota_parse_u64(value, &v) != 0 || v > keys[i].max) {
			char why[96];
			snprintf(why, sizeof(why), "'%.40s' is not an integer from 0 to %llu", value,
				 (unsigned long long)keys[i].max);
			return fail(p, section, name, why);
		}
		*(uint64_t *)field = v * keys[i].scale;
		break;
	}
	case K_MODE: {
		int m = fota_mode_parse(value);
		if (m < 0)
			return fail(p, section, name, "must be ab or inplace");
		*(enum fota_mode *)field = (enum fota_mode)m;
		break;
	}
	case K_SLOT:
		if (strcmp(value, "a") != 0 && strcmp(value, "b") != 0)
			return fail(p, section, name, "must be a or b");
		*(char *)field = value[0];
		break;
	case K_DLMODE: { /* enum agent_dl_mode order */
		static const char *const w[] = { "store", "stream", NULL };
		int k = word(value, w);
		if (k < 0)
			return fail(p, section, name, "must be store or stream");
		*(enum agent_dl_mode *)field = (enum agent_dl_mode)k;
		break;
	}
	case K_BOOL: {
		static const char *const w[] = { "no", "yes", "false", "true", NULL };
		int k = word(value, w);
		if (k < 0)
			return fail(p, section, name, "must be yes or no");
		*(bool *)field = k % 2 == 1;
		break;
	}
	case K_POPUP: { /* enum agent_popup order */
		static const char *const w[] = { "none", "notify", "prompt", NULL };
		int k = word(value, w);
		if (k < 0)
			return fail(p, section, name, "must be none, notify or prompt");
		*(enum agent_popup *)field = (enum agent_popup)k;
		break;
	}
	case K_ROAM: {
		int r = fota_roaming_parse(value);
		if (r < 0)
			return fail(p, section, name, "must be allow, deny or wifi-only");
		*(enum fota_roaming *)field = (enum fota_roaming)r;
		break;
	}
	case K_TRUST: {
		const char *s = value;
		while (*s) {
			const char *e = strchr(s, ',');
			size_t n = e ? (size_t)(e - s) : strlen(s);
			while (n > 0 && (*s == ' ' || *s == '\t')) {
				s++;
				n--;
			}
			while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
				n--;
			if (n == 0)
				return fail(p, section, name, "empty path in the list");
			if (p->c->n_trust == AGENT_TRUST_MAX)
				return fail(p, section, name, "more than 8 files");
			if (!(p->c->trust[p->c->n_trust] = strndup(s, n)))
				return fail(p, section, name, "out of memory");
			p->c->n_trust++;
			if (!e)
				break;
			s = e + 1;
			if (*s == '\0')
				return fail(p, section, name, "empty path in the list");
		}
		break;
	}
	}
	return 1;
}

static bool seen(const struct parse_ctx *p, const char *section, const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return p->seen[i];
	return false;
}

static fota_status missing(struct parse_ctx *p, const char *section, const char *name, const char *why)
{
	return fota_error_set(p->err, FOTA_E_ARG, "%s: [%s] %s: missing%s%s", p->origin, section, name,
			      why ? " " : "", why ? why : "");
}

/* Required keys, and keys that do not fit the mode. */
static fota_status check(struct parse_ctx *p)
{
	static const char *const always[][2] = {
		{ "device", "mode" }, { "device", "model" }, { "device", "security_version" },
		{ "agent", "state_dir" }, { "agent", "trust" }, { "download", "retry_window_minutes" },
		{ "download", "backoff_base_seconds" }, { "download", "backoff_max_seconds" },
	};
	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		if (!seen(p, always[i][0], always[i][1]))
			return missing(p, always[i][0], always[i][1], NULL);
	struct agent_config *c = p->c;
	if (c->mode == FOTA_MODE_AB) {
		if (!c->slot_a)
			return missing(p, "device", "slot_a", "(mode = ab)");
		if (!c->slot_b)
			return missing(p, "device", "slot_b", "(mode = ab)");
		if (!c->active_slot && !c->active_slot_command)
			return missing(p, "device", "active_slot", "(or active_slot_command; mode = ab)");
		if (c->active_slot && c->active_slot_command)
			return fota_error_set(p->err, FOTA_E_ARG, "%s: [device] active_slot and active_slot_command: give only one",
					      p->origin);
		if (strcmp(c->slot_a, c->slot_b) == 0)
			return fota_error_set(p->err, FOTA_E_ARG, "%s: [device] slot_a and slot_b name the same device",
					      p->origin);
		if (c->target || c->scratch)
			return fota_error_set(p->err, FOTA_E_ARG, "%s: [device] target/scratch: only for mode = inplace",
					      p->origin);
	} else {
		if (!c->target)
			return missing(p, "device", "target", "(mode = inplace)");
		if (c->slot_a || c->slot_b || c->active_slot || c->active_slot_command || c->switch_command)
			return fota_error_set(p->err, FOTA_E_ARG,
					      "%s: [device] slot_a/slot_b/active_slot/switch_command: only for mode = ab",
					      p->origin);
	}
	if (c->net_status_command && c->net_status_file)
		return fota_error_set(p->err, FOTA_E_ARG, "%s: [network] status_command and status_file: give only one",
				      p->origin);
	if (c->hook_timeout_s == 0)
		return fota_error_set(p->err, FOTA_E_ARG, "%s: [ui] hook_timeout_seconds: must be at least 1", p->origin);
	if (c->backoff_base_s == 0)
		return fota_error_set(p->err, FOTA_E_ARG, "%s: [download] backoff_base_seconds: must be at least 1",
				      p->origin);
	if (c->backoff_max_s < c->backoff_base_s)
		return fota_error_set(p->err, FOTA_E_ARG,
				      "%s: [download] backoff_max_seconds: smaller than backoff_base_seconds", p->origin);
	return FOTA_OK;
}

fota_status agent_config_parse(const char *text, const char *origin, struct agent_config **out,
			       struct fota_error *err)
{
	*out = NULL;
	struct agent_config *c = calloc(1, sizeof(*c));
	if (!c)
		return fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", origin);
	c->dl_mode = AGENT_DL_STORE;
	c->low_speed_limit = 1024;
	c->low_speed_time_s = 60;
	c->connect_timeout_s = 30;
	c->hook_timeout_s = 60;
	c->popup[0] = AGENT_POPUP_NOTIFY;
	c->popup[1] = AGENT_POPUP_PROMPT;
	c->popup[2] = AGENT_POPUP_PROMPT;
	c->defer_s = 60 * 60;
	c->reboot_max_defers = 3;
	c->reboot_max_total_s = 24 * 60 * 60;
	c->roaming = FOTA_ROAM_ALLOW;
	struct parse_ctx p = { .c = c, .origin = origin, .err = err };
	int line = ini_parse_string(text, handler, &p);
	fota_status rc;
	if (p.failed) {
		rc = err ? err->code : FOTA_E_ARG;
	} else if (line != 0) {
		rc = line > 0 ? fota_error_set(err, FOTA_E_ARG, "%s:%d: not a section, key = value or comment", origin, line)
			      : fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", origin);
	} else {
		rc = check(&p);
	}
	if (rc == FOTA_OK && !c->fumo_node && !(c->fumo_node = strdup("./FwUpdate/fota")))
		rc = fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", origin);
	if (rc != FOTA_OK) {
		if (err && err->code == FOTA_OK)
			err->code = FOTA_E_ARG;
		agent_config_free(c);
		return rc;
	}
	*out = c;
	return FOTA_OK;
}

fota_status agent_config_load(const char *path, struct agent_config **out, struct fota_error *err)
{
	uint8_t *text = NULL;
	size_t len = 0;
	*out = NULL;
	fota_status rc = fota_read_file(path, AGENT_CONFIG_MAX, &text, &len, err);
	if (rc != FOTA_OK)
		return fota_error_prefix(err, "config: ");
	if (memchr(text, '\0', len)) {
		free(text);
		return fota_error_set(err, FOTA_E_ARG, "%s: contains a NUL byte", path);
	}
	rc = agent_config_parse((const char *)text, path, out, err);
	free(text);
	return rc;
}

void agent_config_free(struct agent_config *c)
{
	if (!c)
		return;
	free(c->slot_a);
	free(c->slot_b);
	free(c->active_slot_command);
	free(c->switch_command);
	free(c->target);
	free(c->scratch);
	free(c->model);
	free(c->state_dir);
	for (size_t i = 0; i < c->n_trust; i++)
		free(c->trust[i]);
	free(c->crl);
	free(c->ca_bundle);
	free(c->fumo_node);
	free(c->reboot_command);
	free(c->consent_command);
	free(c->notify_command);
	free(c->data_charge_command);
	free(c->reboot_prompt_command);
	free(c->install_message);
	free(c->net_status_command);
	free(c->net_status_file);
	free(c);
}
