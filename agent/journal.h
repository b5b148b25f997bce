/*
 * journal.h: the agent's session record, kept in the state store as "journal" and
 * replaced atomically (temp file, fsync, rename, fsync the directory) at every step, so
 * a power cut leaves either the old or the new record, never a mix.
 *
 * One job at a time. The phase says where the job is; the counters say how far:
 *   DOWNLOADING  dl_next payloads are verified in the download cache (store mode)
 *   DOWNLOADED   the package is verified and ready to update
 *   APPLYING     ap_next chunks are applied and checked; for in-place chunk ap_next
 *                ip_step says whether its stash (1) or its staged output (2) is durable;
 *                an in-place job stays here after a failed run once it has started
 *                writing (source_ok): FUMO 70, resume continues it (agent.c hold_job)
 *   APPLIED      every target is written and verified; the slot switch is pending
 *   DONE / FAILED  the job ended (result and message say how)
 * The format is JSON, parsed strictly (unknown keys and bad values are refused).
 * Version 2 adds the FUMO state, result and correlator, the policy answers, the pending
 * Generic Alert and the delayed reboot; a version 1 record still loads (its FUMO state
 * follows from the phase).
 */
#ifndef FOTA_AGENT_JOURNAL_H
#define FOTA_AGENT_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "fota/hash.h"
#include "fota/manifest.h"

#define AGENT_JOURNAL_MAX (64u << 10)
#define AGENT_URL_MAX 2048
#define AGENT_VALIDATOR_MAX 256
#define AGENT_CORRELATOR_MAX 256

enum agent_phase {
	AGENT_PH_IDLE = 0,
	AGENT_PH_DOWNLOADING,
	AGENT_PH_DOWNLOADED,
	AGENT_PH_APPLYING,
	AGENT_PH_APPLIED,
	AGENT_PH_DONE,
	AGENT_PH_FAILED,
};

enum agent_op { AGENT_OP_NONE = 0, AGENT_OP_DOWNLOAD, AGENT_OP_UPDATE, AGENT_OP_DOWNLOAD_AND_UPDATE };

struct agent_journal {
	enum agent_op op;
	enum agent_phase phase;
	char url[AGENT_URL_MAX + 1];
	char etag[AGENT_VALIDATOR_MAX + 1];          /* validators of the package on the server */
	char last_modified[AGENT_VALIDATOR_MAX + 1];
	uint64_t pkg_size;                            /* 0 until the head was fetched */
	bool head_ok;                                 /* manifest + signature saved and verified */
	uint64_t manifest_len, sig_len;
	uint8_t manifest_sha256[FOTA_SHA256_LEN];     /* binds the saved manifest to this job */
	int stream;                                   /* download mode of this job: 1 = streaming */
	char target_slot;                             /* ab: 'a' or 'b'; 0 before the update starts */
	uint64_t dl_next;                             /* payloads verified in the cache */
	uint64_t ap_next;                             /* chunks applied */
	int ip_step;                                  /* 0, 1 stashed, 2 staged (chunk ap_next) */
	bool source_ok;                               /* the source was verified (in-place: before any write) */
	uint64_t restarts;                            /* clean restarts because the package changed */
	uint64_t bytes;                               /* payload bytes received so far by this job */
	char pkg_name[FOTA_STRING_MAX + 1];           /* FUMO PkgName/PkgVersion, once the head is verified */
	char pkg_version[FOTA_STRING_MAX + 1];
	int result;                                   /* exit code of the job's end (DONE/FAILED) */
	char message[512];                            /* what happened last */
	/* version 2: FUMO (fumo.h) and the user policies */
	int state;                                    /* FUMO state, 10..100 */
	int fumo_result;                              /* result code of the job's end; 0 while it runs */
	char correlator[AGENT_CORRELATOR_MAX + 1];    /* from the DM server, "" = none */
	char srv_pkg_name[FOTA_STRING_MAX + 1];       /* PkgName/PkgVersion the server gave, "" = none */
	char srv_pkg_version[FOTA_STRING_MAX + 1];
	bool dl_consent;                              /* download popup and data-charge notice passed */
	int64_t defer_until_ms;                       /* install deferred until then; 0 = not deferred */
	uint64_t defers;                              /* install deferrals of this job */
	/* the Generic Alert of the last finished operation, kept across jobs until acknowledged */
	bool alert_pending;
	enum agent_op alert_op;
	int alert_result;
	char alert_correlator[AGENT_CORRELATOR_MAX + 1];
	/* delayed reboot after a successful install */
	bool reboot_pending;
	int64_t reboot_due_ms;
	uint64_t reboot_defers;                       /* deferrals so far */
	uint64_t reboot_deferred_min;                 /* minutes deferred so far */
};

/* Serialise to JSON. *out malloc'd, owned by the caller. */
fota_status agent_journal_format(const struct agent_journal *j, char **out, size_t *len,
				 struct fota_error *err) FOTA_WUR;
/* Parse JSON strictly (len <= AGENT_JOURNAL_MAX). */
fota_status agent_journal_parse(const uint8_t *buf, size_t len, struct agent_journal *j,
				struct fota_error *err) FOTA_WUR;
const char *agent_phase_name(enum agent_phase p);
/* The FUMO state a version 1 record (no "state" key) stands for. */
int agent_journal_v1_state(const struct agent_journal *j);
const char *agent_op_name(enum agent_op op);

#endif
