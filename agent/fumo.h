/*
 * fumo.h: the OMA DM Firmware Update Management Object (FUMO) as the agent reports it:
 * the state numbers and names of the FUMO State node, the transitions of its state
 * diagram, the result codes of the Generic Alert (one table, also in docs/fota-agent.md),
 * and how an agent failure maps onto a result code.
 */
#ifndef FOTA_AGENT_FUMO_H
#define FOTA_AGENT_FUMO_H

#include <stdbool.h>
#include <stddef.h>
#include "fetch.h"
#include "journal.h"

enum fumo_state {
	FUMO_IDLE = 10,
	FUMO_DL_FAILED = 20,
	FUMO_DL_PROGRESSING = 30,
	FUMO_DL_COMPLETE = 40,
	FUMO_READY = 50,
	FUMO_UPD_PROGRESSING = 60,
	FUMO_UPD_FAILED_DATA = 70,
	FUMO_UPD_FAILED_NODATA = 80,
	FUMO_UPD_OK_DATA = 90,
	FUMO_UPD_OK_NODATA = 100,
};

/* FUMO's name of a state ("Download Progressing"); NULL for a number that is not one. */
const char *fumo_state_name(int state);
/* True when the FUMO state diagram (as docs/fota-agent.md draws it) has from -> to. */
bool fumo_transition_ok(int from, int to);

/* Result codes of the Generic Alert. */
enum fumo_result {
	FUMO_R_OK = 200,
	FUMO_R_USER_CANCELLED = 401,
	FUMO_R_CORRUPT = 402,
	FUMO_R_DEVICE_MISMATCH = 403,
	FUMO_R_VALIDATION = 404,
	FUMO_R_NOT_ACCEPTABLE = 405,
	FUMO_R_DL_TIMEOUT = 407,
	FUMO_R_UPDATE_FAILED = 410,
	FUMO_R_BAD_URL = 411,
	FUMO_R_UNREACHABLE = 412,
	FUMO_R_SERVER_ERROR = 500,
	FUMO_R_DL_NO_SPACE = 501,
	FUMO_R_UPD_NO_SPACE = 502,
	FUMO_R_NETWORK = 503,
};

struct fumo_result_info {
	int code;
	const char *name;  /* short name, as in status --json */
	const char *when;  /* one line, as in the docs */
	int exit;          /* the agent's exit status for a job that ends with this code */
};
extern const struct fumo_result_info fumo_result_table[];
extern const size_t fumo_result_count;
/* NULL for a code not in the table. */
const struct fumo_result_info *fumo_result_info(int code);

/* What went wrong, beyond the agent's exit code, to pick the result code. */
enum fumo_cause {
	FUMO_CAUSE_NONE = 0,
	FUMO_CAUSE_BAD_URL,      /* the URL was refused before any request */
	FUMO_CAUSE_NO_SPACE,     /* a write failed with ENOSPC or EFBIG */
};

/* True when a request failed in its sink for want of room: a local write that got
 * ENOSPC, or EFBIG under a file-size limit. f may be NULL. */
bool fumo_fetch_no_space(const struct fetch_failure *f);

/*
 * The result code of a download that ended (agent exit AGENT_EXIT_DOWNLOAD) with cause as
 * its last request's failure: 407 timeout, 412 unreachable, 500 HTTP error status, 503
 * anything else (also FETCH_CAUSE_NONE: no request failed last, e.g. the policy paused).
 */
int fumo_download_result(enum fetch_cause cause);

/*
 * The result code for a job that ends with agent exit code exit_code. updating: the
 * failure came after the update began (state 60), so running out of space is 502, not
 * 501. last: why the job's last request failed (NULL: none known); it tells
 * 407/412/500/503 apart for a download that ran out of its retry window, and a sink that
 * ran out of room is 501/502 like FUMO_CAUSE_NO_SPACE.
 */
int fumo_result_for(int exit_code, enum fumo_cause cause, bool updating, const struct fetch_failure *last);

/* "org.openmobilealliance.dm.firmwareupdate.download" and so on; NULL for AGENT_OP_NONE. */
const char *fumo_alert_type(enum agent_op op);
/* The FUMO node's operation that the alert's source names: Download, Update, DownloadAndUpdate. */
const char *fumo_op_node(enum agent_op op);

#endif
