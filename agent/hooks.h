/*
 * hooks.h: external commands the agent runs so a handset UI can show its dialogs
 * (consent, notification, data-charge notice, reboot prompt) and so the device can
 * report its network. Every hook runs as /bin/sh -c CMD with extra arguments and
 * environment, its stdout captured (never mixed into the agent's own output), its
 * stdin /dev/null, in a process group of its own, and is killed (SIGKILL to the
 * group) when it outlives its timeout. docs/fota-agent.md lists each hook's contract.
 */
#ifndef FOTA_AGENT_HOOKS_H
#define FOTA_AGENT_HOOKS_H

#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

#define AGENT_HOOK_TIMEOUT (-2) /* the hook ran past its timeout and was killed */
#define AGENT_HOOK_FAILED (-1)  /* could not start, or ended by a signal */

/*
 * Run what (a name for messages: "consent_command") = cmd through /bin/sh -c, with
 * args as $1, $2, ... (NULL-terminated list, may be NULL) and env ("NAME=VALUE",
 * NULL-terminated, may be NULL) added to the environment. The first line of its stdout
 * (without the newline, at most cap - 1 bytes) goes to out when out is not NULL.
 * Returns the exit status (0..255), AGENT_HOOK_TIMEOUT or AGENT_HOOK_FAILED; for the
 * last two err says why.
 */
int agent_hook_run(const char *what, const char *cmd, const char *const *args, const char *const *env,
		   uint64_t timeout_s, char *out, size_t cap, struct fota_error *err);

#endif
