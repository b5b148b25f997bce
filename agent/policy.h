/*
 * policy.h: the user policies of an OTA update (issue 6): the pop-up per SI priority,
 * silent packages, the data-charge notice, the roaming policy and the network status,
 * consent to install (accept, cancel, defer) with the install message, and the delayed
 * reboot. Config values are the defaults; the manifest may only tighten them. Each
 * function returns an agent exit code and journals what the user answered.
 */
#ifndef FOTA_AGENT_POLICY_H
#define FOTA_AGENT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include "agent_internal.h"

enum agent_net { AGENT_NET_HOME = 0, AGENT_NET_ROAMING, AGENT_NET_WIFI, AGENT_NET_OFFLINE, AGENT_NET_UNKNOWN };
const char *agent_net_name(enum agent_net n);

/* The network now, from [network] status_command or status_file (home when neither is
 * set; AGENT_NET_UNKNOWN, with a message in why, when the command or file fails). */
enum agent_net agent_policy_network(struct agent *a, char *why, size_t cap);

/* May the download go on now? false with the reason in why (offline, roaming under deny
 * or wifi-only, cellular under wifi-only). The roaming policy is the config's,
 * tightened by the manifest's once the head is verified. */
bool agent_policy_download_allowed(struct agent *a, char *why, size_t cap);

/* After the head is verified, before any payload: the pop-up for the package's
 * priority (unless it is silent) and the data-charge notice on cellular. 0, or
 * AGENT_EXIT_CANCELLED (declined), or AGENT_EXIT_DEFERRED (the user said later). */
int agent_policy_download_gate(struct agent *a, struct fota_error *err);

/* In state 50, before the update: the consent hook with the install message. 0 to go
 * on, AGENT_EXIT_CANCELLED or AGENT_EXIT_DEFERRED (j.defer_until_ms set). */
int agent_policy_install_consent(struct agent *a, struct fota_error *err);

/* After a successful install, or from resume while a reboot is pending: ask the reboot
 * prompt, record a delay (within the caps) or reboot now. */
int agent_policy_reboot(struct agent *a, struct fota_error *err);

#endif
