/*
 * agent_internal.h: the agent object shared by agent.c (jobs, download, journal) and
 * apply.c (writing targets). Not a public interface.
 */
#ifndef FOTA_AGENT_INTERNAL_H
#define FOTA_AGENT_INTERNAL_H

#include "fota/manifest.h"
#include "agent.h"
#include "fetch.h"
#include "fumo.h"

#define AGENT_IO_BUF (128u << 10) /* one read/write piece */
/* Store-mode download and A/B apply journal their progress at most this often (as
 * update_engine does): a cut redoes at most this much work, every redone chunk is
 * verified again, and the fsyncs no longer dominate. In-place steps and streaming are
 * journaled one by one. */
#define AGENT_CHECKPOINT_MS 1000

struct agent {
	struct agent_env env;
	const struct agent_config *cfg;
	struct agent_journal j;
	struct fota_trust *trust;
	struct agent_fetch *fetch;
	struct agent_validators val;     /* the package's validators (val.total = 0: not known) */
	struct fota_manifest *m;         /* verified, parsed manifest of the job */
	uint64_t *pkg_off;               /* data(k) in the package */
	uint64_t *cache_off;             /* offset of payload k in the store-mode cache */
	uint64_t bytes;                  /* bytes received (head and payloads) */
	uint64_t floor;                  /* security-version floor: max(config, raised) */
	struct fota_storage *cache;      /* store-mode cache, open while downloading */
	uint8_t *buf, *buf2;             /* AGENT_IO_BUF each */
	int exit;                        /* exit code of the failure being reported */
	enum fumo_cause cause;           /* what the failure was, beyond its exit code (fumo.h) */
	struct fetch_failure last_fetch; /* why the job's last request failed (NONE after one that worked) */
	int64_t last_checkpoint_ms;      /* when the journal was last committed for progress */
	bool apply_fresh;                /* this run committed the move into phase applying: no
					  * earlier run can have written the slot for this job */
};

/* Record the exit code for a failure and return it; the message is in err. */
int agent_fail(struct agent *a, int code);
/* Map a libfota status to an exit code. */
int agent_exit_for(fota_status st);
/* True when progress should be journaled now (AGENT_CHECKPOINT_MS since the last time). */
bool agent_checkpoint_due(struct agent *a);
/* Replace the journal durably. */
fota_status agent_commit(struct agent *a, struct fota_error *err) FOTA_WUR;
void agent_log(struct agent *a, const char *fmt, ...) FOTA_PRINTF(2, 3);

/* Make sure payload k is in the cache (or its stream file) with the right hash, fetching
 * what is missing. *st gets the storage holding it (owned by the caller when *owned),
 * *off where it starts. Returns an exit code. */
int agent_payload(struct agent *a, size_t k, struct fota_storage **st, bool *owned, uint64_t *off,
		  struct fota_error *err);
/* Done with the stream file of payload k (stream mode). */
void agent_payload_release(struct agent *a, size_t k);

/* SHA-256 of [off, off + len) of a storage. */
fota_status agent_hash_range(struct agent *a, struct fota_storage *s, uint64_t off, uint64_t len,
			     uint8_t out[FOTA_SHA256_LEN], struct fota_error *err) FOTA_WUR;

/* Apply the job's package (apply.c): source check, every chunk from j.ap_next, the whole
 * image check. Returns an exit code; on success the targets are written and verified. */
int agent_apply(struct agent *a, struct fota_error *err);

#endif
