/*
 * agent.h: the fota-agent core, independent of the command line so the unit tests
 * drive it on the power-cut simulation backend (storage.h) with a fake clock.
 *
 * A job is one package URL taken from download to a switched slot (A/B) or an updated
 * partition (in place). Every step is journaled (journal.h) before the next begins,
 * so agent_resume() on a fresh agent, after a power cut or a kill at any moment,
 * continues the job and converges to the exact target.
 *
 * Order of checks (FORMAT.md section 5): head sizes capped, CMS signature, then the
 * manifest is parsed, then model, security-version floor, expiry, mode and sizes, all
 * before any payload is fetched; each payload's SHA-256 before it reaches zstd or the
 * patch interpreter; the source before anything is written; each chunk's target hash
 * before it is journaled; the whole image before the slot switch.
 *
 * The functions return an exit code of the table below (agent_exit_table) and fill err.
 */
#ifndef FOTA_AGENT_AGENT_H
#define FOTA_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "fota/error.h"
#include "config.h"
#include "journal.h"
#include "storage.h"

/* Exit codes: one table, shown by --help and docs/fota-agent.md. Append only. */
enum agent_exit {
	AGENT_EXIT_OK = 0,             /* the requested step completed (resume: or nothing was pending) */
	AGENT_EXIT_INTERNAL = 1,       /* internal error or out of memory */
	AGENT_EXIT_USAGE = 2,          /* bad command line */
	AGENT_EXIT_CONFIG = 3,         /* configuration file unreadable, unknown or missing key, bad value */
	AGENT_EXIT_IO = 4,             /* state_dir or a device could not be read, written or synced */
	AGENT_EXIT_SIGNATURE = 5,      /* signature or certificate invalid or untrusted, unsigned package */
	AGENT_EXIT_DEVICE = 6,         /* the package is for another device model */
	AGENT_EXIT_NOT_ACCEPTABLE = 7, /* below the security floor, expired, wrong mode, does not fit */
	AGENT_EXIT_CORRUPT = 8,        /* malformed package, or a chunk or image hash mismatch */
	AGENT_EXIT_SOURCE = 9,         /* the source slot or partition is not what the package updates */
	AGENT_EXIT_DOWNLOAD = 10,      /* bad URL, server error, or the retry window ran out */
	AGENT_EXIT_STATE = 11,         /* not possible now: nothing to update, another job pending, cancel refused */
	AGENT_EXIT_HOOK = 12,          /* the slot-switch or active-slot command failed (resume retries) */
	AGENT_EXIT_BUSY = 13,          /* another fota-agent holds the state directory */
	AGENT_EXIT_CANCELLED = 14,     /* the user cancelled or declined (FUMO result 401) */
	AGENT_EXIT_DEFERRED = 15,      /* the user deferred the install; resume asks again when it is due */
};

struct agent_exit_info {
	int code;
	const char *name;
	const char *meaning;
};
extern const struct agent_exit_info agent_exit_table[];
extern const size_t agent_exit_count;
const char *agent_exit_name(int code);

/* Time and randomness, injectable so tests cover minutes of backoff without sleeping. */
struct agent_clock {
	void *ctx;
	int64_t (*now_ms)(void *ctx);           /* Unix time in milliseconds */
	void (*sleep_ms)(void *ctx, uint64_t ms);
	uint64_t (*random)(void *ctx);          /* uniform 64-bit values for the jitter */
};
struct agent_clock agent_clock_system(void);

struct agent_env {
	const struct agent_config *cfg;
	struct fota_store *state;      /* the state directory (journal, cache) */
	struct fota_devices devices;   /* slots, partition, scratch */
	struct agent_clock clock;
	FILE *log;                     /* progress and retry messages; NULL = silent */
};

struct agent;

/* Load the journal (a missing journal is an idle agent). *out owned by the caller. */
fota_status agent_open(const struct agent_env *env, struct agent **out, struct fota_error *err) FOTA_WUR;
void agent_close(struct agent *a);

/* What the DM server gave with the operation (each may be NULL): kept with the job and
 * in its Generic Alert. */
struct agent_op_args {
	const char *correlator;
	const char *pkg_name, *pkg_version;
};

int agent_download(struct agent *a, const char *url, bool and_update, struct fota_error *err);
int agent_download_op(struct agent *a, const char *url, bool and_update, const struct agent_op_args *args,
		      struct fota_error *err);
int agent_update_op(struct agent *a, const struct agent_op_args *args, struct fota_error *err);
int agent_update(struct agent *a, struct fota_error *err);
int agent_resume(struct agent *a, struct fota_error *err);
int agent_cancel(struct agent *a, struct fota_error *err);
/* Print the job's state, as text or as one JSON object. */
int agent_status(struct agent *a, bool json, FILE *out, struct fota_error *err);

/* The Generic Alert of the last finished operation: as JSON (keys result, alert_type,
 * correlator, source, ...) or as a SyncML Alert 1226 fragment. AGENT_EXIT_STATE when
 * there is none. */
int agent_report(struct agent *a, bool syncml, FILE *out, struct fota_error *err);
/* The DM client delivered the alert: forget it (ending 20, 80, 100 in Idle/Start). */
int agent_report_ack(struct agent *a, struct fota_error *err);

const struct agent_journal *agent_journal(const struct agent *a);
/* Payload and head bytes received from the network by this agent object. */
uint64_t agent_bytes_received(const struct agent *a);

#endif
