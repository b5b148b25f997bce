/*
 * fumo.c: FUMO states, transitions and result codes (see fumo.h). The result table is
 * the one docs/fota-agent.md shows; fota-agent --help prints it from here.
 */
#include <errno.h>

#include "agent.h"
#include "fumo.h"

static const struct {
	int state;
	const char *name;
} states[] = {
	{ FUMO_IDLE, "Idle/Start" },
	{ FUMO_DL_FAILED, "Download Failed" },
	{ FUMO_DL_PROGRESSING, "Download Progressing" },
	{ FUMO_DL_COMPLETE, "Download Complete" },
	{ FUMO_READY, "Ready to Update" },
	{ FUMO_UPD_PROGRESSING, "Update Progressing" },
	{ FUMO_UPD_FAILED_DATA, "Update Failed Have Data" },
	{ FUMO_UPD_FAILED_NODATA, "Update Failed No Data" },
	{ FUMO_UPD_OK_DATA, "Update Successful Have Data" },
	{ FUMO_UPD_OK_NODATA, "Update Successful No Data" },
};

const char *fumo_state_name(int state)
{
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (states[i].state == state)
			return states[i].name;
	return NULL;
}

/*
 * The state diagram. A new operation first returns the node to Idle/Start (the states
 * that end a job all lead there), so every job starts with 10 -> 30 (Download,
 * DownloadAndUpdate) or, for Update of a package that is there, 40/70/90 -> 50.
 * 50 is where the agent asks for consent, also for Update after Download (40 -> 50).
 * Cancelling is a user cancel (401): a download ends in 20, a downloaded package in 80.
 * An in-place update that fails after it began writing the partition is never ended:
 * it reports the failure and waits in 70 with its package and position, and the next
 * resume or Update goes on from 70 straight to 60 (no new consent: it was given).
 */
static const int transitions[][2] = {
	{ FUMO_IDLE, FUMO_DL_PROGRESSING },            /* Download / DownloadAndUpdate */
	{ FUMO_DL_PROGRESSING, FUMO_DL_FAILED },       /* the download failed or was cancelled */
	{ FUMO_DL_PROGRESSING, FUMO_DL_COMPLETE },     /* Download done */
	{ FUMO_DL_PROGRESSING, FUMO_READY },           /* DownloadAndUpdate: download done */
	{ FUMO_DL_COMPLETE, FUMO_READY },              /* Update */
	{ FUMO_DL_COMPLETE, FUMO_UPD_FAILED_NODATA },  /* cancelled before Update */
	{ FUMO_READY, FUMO_UPD_PROGRESSING },          /* consent given */
	{ FUMO_READY, FUMO_UPD_FAILED_NODATA },        /* consent refused (401) or package refused */
	{ FUMO_UPD_PROGRESSING, FUMO_UPD_FAILED_DATA },   /* failed; the package is kept, Update may retry */
	{ FUMO_UPD_PROGRESSING, FUMO_UPD_FAILED_NODATA }, /* failed; the package is gone */
	{ FUMO_UPD_PROGRESSING, FUMO_UPD_OK_DATA },    /* installed, package kept ([agent] keep_package) */
	{ FUMO_UPD_PROGRESSING, FUMO_UPD_OK_NODATA },  /* installed */
	{ FUMO_UPD_FAILED_DATA, FUMO_READY },          /* Update again */
	{ FUMO_UPD_FAILED_DATA, FUMO_UPD_PROGRESSING }, /* in place: a half-applied update continues (resume, Update) */
	{ FUMO_UPD_OK_DATA, FUMO_READY },              /* Update again */
	{ FUMO_DL_FAILED, FUMO_IDLE },                 /* alert acknowledged, or a new operation */
	{ FUMO_UPD_FAILED_DATA, FUMO_IDLE },
	{ FUMO_UPD_FAILED_NODATA, FUMO_IDLE },
	{ FUMO_UPD_OK_DATA, FUMO_IDLE },
	{ FUMO_UPD_OK_NODATA, FUMO_IDLE },
};

bool fumo_transition_ok(int from, int to)
{
	for (size_t i = 0; i < sizeof(transitions) / sizeof(transitions[0]); i++)
		if (transitions[i][0] == from && transitions[i][1] == to)
			return true;
	return false;
}

const struct fumo_result_info fumo_result_table[] = {
	{ FUMO_R_OK, "successful", "success", AGENT_EXIT_OK },
	{ FUMO_R_USER_CANCELLED, "user-cancelled", "the user cancelled (consent hook, data-charge notice or cancel)",
	  AGENT_EXIT_CANCELLED },
	{ FUMO_R_CORRUPT, "corrupt-package", "a chunk or image hash does not match (corrupt package)", AGENT_EXIT_CORRUPT },
	{ FUMO_R_DEVICE_MISMATCH, "device-mismatch", "the device model does not match", AGENT_EXIT_DEVICE },
	{ FUMO_R_VALIDATION, "validation-failed", "the signature or certificate fails validation, or is untrusted",
	  AGENT_EXIT_SIGNATURE },
	{ FUMO_R_NOT_ACCEPTABLE, "not-acceptable", "not acceptable: below the device's security version, or expired",
	  AGENT_EXIT_NOT_ACCEPTABLE },
	{ FUMO_R_DL_TIMEOUT, "download-timeout", "a download timed out", AGENT_EXIT_DOWNLOAD },
	{ FUMO_R_UPDATE_FAILED, "update-failed", "the update failed (e.g. the source is not what the package updates)",
	  AGENT_EXIT_SOURCE },
	{ FUMO_R_BAD_URL, "malformed-url", "a malformed URL", AGENT_EXIT_DOWNLOAD },
	{ FUMO_R_UNREACHABLE, "server-unavailable", "the server was unreachable for the whole retry window",
	  AGENT_EXIT_DOWNLOAD },
	{ FUMO_R_SERVER_ERROR, "server-error", "the server kept answering with errors", AGENT_EXIT_DOWNLOAD },
	{ FUMO_R_DL_NO_SPACE, "download-no-space", "the download ran out of space", AGENT_EXIT_IO },
	{ FUMO_R_UPD_NO_SPACE, "update-no-space", "the update ran out of space", AGENT_EXIT_IO },
	{ FUMO_R_NETWORK, "network-failure", "other network failures at the end of the window", AGENT_EXIT_DOWNLOAD },
};
const size_t fumo_result_count = sizeof(fumo_result_table) / sizeof(fumo_result_table[0]);

const struct fumo_result_info *fumo_result_info(int code)
{
	for (size_t i = 0; i < fumo_result_count; i++)
		if (fumo_result_table[i].code == code)
			return &fumo_result_table[i];
	return NULL;
}

bool fumo_fetch_no_space(const struct fetch_failure *f)
{
	return f && f->cause == FETCH_CAUSE_SINK && (f->sys_errno == ENOSPC || f->sys_errno == EFBIG);
}

int fumo_download_result(enum fetch_cause cause)
{
	switch (cause) { /* no default: the compiler names a cause added to fetch.h but not here */
	case FETCH_CAUSE_TIMEOUT:
		return FUMO_R_DL_TIMEOUT;
	case FETCH_CAUSE_RESOLVE:
	case FETCH_CAUSE_CONNECT:
		return FUMO_R_UNREACHABLE;
	case FETCH_CAUSE_HTTP_STATUS:
		return FUMO_R_SERVER_ERROR;
	case FETCH_CAUSE_NONE:
	case FETCH_CAUSE_REQUEST:
	case FETCH_CAUSE_URL:
	case FETCH_CAUSE_TLS:
	case FETCH_CAUSE_TRANSPORT:
	case FETCH_CAUSE_REDIRECTS:
	case FETCH_CAUSE_NO_RANGE:
	case FETCH_CAUSE_RANGE:
	case FETCH_CAUSE_SHORT:
	case FETCH_CAUSE_CHANGED:
	case FETCH_CAUSE_FILE:
	case FETCH_CAUSE_SINK:
	case FETCH_CAUSE_COUNT:
		break;
	}
	return FUMO_R_NETWORK;
}

int fumo_result_for(int exit_code, enum fumo_cause cause, bool updating, const struct fetch_failure *last)
{
	if (cause == FUMO_CAUSE_NO_SPACE || (exit_code == AGENT_EXIT_IO && fumo_fetch_no_space(last)))
		return updating ? FUMO_R_UPD_NO_SPACE : FUMO_R_DL_NO_SPACE;
	switch (exit_code) {
	case AGENT_EXIT_OK: return FUMO_R_OK;
	case AGENT_EXIT_CANCELLED: return FUMO_R_USER_CANCELLED;
	case AGENT_EXIT_CORRUPT: return FUMO_R_CORRUPT;
	case AGENT_EXIT_DEVICE: return FUMO_R_DEVICE_MISMATCH;
	case AGENT_EXIT_SIGNATURE: return FUMO_R_VALIDATION;
	case AGENT_EXIT_NOT_ACCEPTABLE: return FUMO_R_NOT_ACCEPTABLE;
	case AGENT_EXIT_SOURCE: return FUMO_R_UPDATE_FAILED;
	case AGENT_EXIT_DOWNLOAD:
		if (cause == FUMO_CAUSE_BAD_URL)
			return FUMO_R_BAD_URL;
		return fumo_download_result(last ? last->cause : FETCH_CAUSE_NONE);
	default: return FUMO_R_UPDATE_FAILED;
	}
}

const char *fumo_alert_type(enum agent_op op)
{
	switch (op) {
	case AGENT_OP_DOWNLOAD: return "org.openmobilealliance.dm.firmwareupdate.download";
	case AGENT_OP_UPDATE: return "org.openmobilealliance.dm.firmwareupdate.update";
	case AGENT_OP_DOWNLOAD_AND_UPDATE: return "org.openmobilealliance.dm.firmwareupdate.downloadandupdate";
	default: return NULL;
	}
}

const char *fumo_op_node(enum agent_op op)
{
	switch (op) {
	case AGENT_OP_DOWNLOAD: return "Download";
	case AGENT_OP_UPDATE: return "Update";
	case AGENT_OP_DOWNLOAD_AND_UPDATE: return "DownloadAndUpdate";
	default: return NULL;
	}
}
