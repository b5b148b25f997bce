/*
 * config.h: the agent's configuration file (INI, parsed with libinih). Every key is
 * listed in docs/fota-agent.conf.md. Parsing is strict: an unknown section or key, a
 * key given twice, an empty or malformed value, or a missing required key is
 * FOTA_E_ARG with a message naming the file, section and key.
 */
#ifndef FOTA_AGENT_CONFIG_H
#define FOTA_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "fota/manifest.h"

#define AGENT_CONFIG_MAX (64u << 10) /* bytes of the configuration file */
#define AGENT_TRUST_MAX 8            /* root CA files */

enum agent_dl_mode { AGENT_DL_STORE = 0, AGENT_DL_STREAM = 1 };
/* What the agent does before downloading a package of a given SI priority. */
enum agent_popup { AGENT_POPUP_NONE = 0, AGENT_POPUP_NOTIFY = 1, AGENT_POPUP_PROMPT = 2 };

struct agent_config {
	/* [device] */
	enum fota_mode mode;
	char *slot_a, *slot_b;          /* ab */
	char active_slot;               /* 'a' or 'b'; 0 when active_slot_command is used */
	char *active_slot_command;      /* prints "a" or "b" */
	char *switch_command;           /* ab: run after the new slot is verified; NULL = none */
	char *target;                   /* inplace */
	char *scratch;                  /* inplace; NULL = none */
	char *model;
	uint64_t security_version;
	/* [agent] */
	char *state_dir;
	size_t n_trust;
	char *trust[AGENT_TRUST_MAX];
	char *crl;                      /* NULL = none */
	/* [download] */
	uint64_t retry_window_s;
	uint64_t backoff_base_s, backoff_max_s;
	enum agent_dl_mode dl_mode;
	uint64_t low_speed_limit;       /* bytes/s */
	uint64_t low_speed_time_s;
	uint64_t connect_timeout_s;
	char *ca_bundle;                /* https: CA file; NULL = the system default */
	uint64_t receive_buffer;        /* SO_RCVBUF bytes; 0 = the system default */
	/* FUMO and user policies (issue 6) */
	char *fumo_node;                /* [agent] URI of the FUMO node, the alert's source */
	bool keep_package;              /* [agent] keep the package after a successful install (state 90) */
	char *reboot_command;           /* [device] reboots the device; NULL = none */
	char *consent_command;          /* [ui] hooks; NULL = not configured */
	char *notify_command;
	char *data_charge_command;
	char *reboot_prompt_command;
	char *install_message;          /* [ui] default install message; NULL = none */
	uint64_t hook_timeout_s;
	enum agent_popup popup[3];      /* [ui] popup_low, popup_medium, popup_high */
	uint64_t defer_s;               /* [ui] consent defer interval */
	uint64_t reboot_max_defers;
	uint64_t reboot_max_total_s;
	char *net_status_command;       /* [network] prints home, roaming, wifi or offline */
	char *net_status_file;          /* [network] holds one of those words */
	enum fota_roaming roaming;      /* [network] policy: allow, deny, wifi-only */
};

/* Parse configuration text (NUL-terminated). origin names it in messages.
 * *out owned by the caller (agent_config_free). */
fota_status agent_config_parse(const char *text, const char *origin, struct agent_config **out,
			       struct fota_error *err) FOTA_WUR;
/* Read and parse a configuration file (at most AGENT_CONFIG_MAX bytes). */
fota_status agent_config_load(const char *path, struct agent_config **out, struct fota_error *err) FOTA_WUR;
/* NULL does nothing. */
void agent_config_free(struct agent_config *c);

#endif
