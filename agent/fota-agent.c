/*
 * fota-agent: the device side. Reads its configuration, takes the state directory's
 * lock, and runs one command through the agent core (agent.h). See docs/fota-agent.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "fumo.h"
#include "storage.h"

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fota-agent -c CONF [-q] COMMAND\n"
"\n"
"Commands (FUMO operations Download, Update, DownloadAndUpdate):\n"
"  download [OPS] URL             fetch and verify the package; leave it ready to update\n"
"  update [OPS]                   apply the downloaded package\n"
"  download-and-update [OPS] URL  both\n"
"  resume                   continue whatever was interrupted (run at boot), ask again\n"
"                           for a deferred install or reboot when due; does nothing\n"
"                           when nothing is pending\n"
"  status [--json]          the job's FUMO state, progress, package\n"
"  cancel                   drop the job as a user cancel (401; refused once an\n"
"                           in-place update writes)\n"
"  report [--json|--syncml|--ack]\n"
"                           the Generic Alert of the last finished operation (text\n"
"                           and --json: keys result, alert_type, correlator, source);\n"
"                           --ack: the DM client delivered it, forget it\n"
"\n"
"OPS: --correlator ID, --pkg-name NAME, --pkg-version VERSION (from the DM server;\n"
"kept with the job and in its alert).\n"
"\n"
"URLs: http://, https://, file:///ABSOLUTE/PATH.\n"
"\n"
"Options:\n"
"  -c, --config FILE        configuration (see docs/fota-agent.conf.md)\n"
"  -q, --quiet              no progress messages on stderr\n"
"  -h, --help               this help\n"
"  -V, --version            print the program version\n"
"\n"
"Exit status:\n");
	for (size_t i = 0; i < agent_exit_count; i++)
		fprintf(f, "  %2d  %-15s %s\n", agent_exit_table[i].code, agent_exit_table[i].name,
			agent_exit_table[i].meaning);
	fprintf(f, "\nFUMO result codes (report, status --json), with the exit status of a job ending so:\n");
	for (size_t i = 0; i < fumo_result_count; i++)
		fprintf(f, "  %3d  exit %2d  %s\n", fumo_result_table[i].code, fumo_result_table[i].exit,
			fumo_result_table[i].when);
}

static int die(int code, const char *fmt, ...) FOTA_PRINTF(2, 3);
static int die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fota-agent: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	return code;
}

/*
 * Test clock: with FOTA_AGENT_TEST_CLOCK=FILE the agent reads the time from FILE (Unix
 * milliseconds, decimal) and "sleeps" by adding to it, so scripted tests cover minutes
 * of backoff in no time. Production never sets it.
 */
static const char *test_clock_path;

static int64_t test_now_ms(void *ctx)
{
	(void)ctx;
	char buf[32] = "";
	FILE *f = fopen(test_clock_path, "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	char *end = NULL;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno != 0 || end == buf || v < 0)
		v = 0; /* a missing or unreadable clock file reads as time 0 */
	return (int64_t)v;
}

static void test_sleep_ms(void *ctx, uint64_t ms)
{
	int64_t now = test_now_ms(ctx) + (int64_t)ms;
	FILE *f = fopen(test_clock_path, "w");
	if (f) {
		fprintf(f, "%lld\n", (long long)now);
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	bool quiet = false;
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	/* "+": stop at the command, so "status --json" keeps its option */
	while ((o = getopt_long(argc, argv, "+c:qhV", opts, NULL)) != -1) {
		switch (o) {
		case 'c': conf = optarg; break;
		case 'q': quiet = true; break;
		case 'h': usage(stdout); return AGENT_EXIT_OK;
		case 'V': printf("fota-agent 1\n"); return AGENT_EXIT_OK;
		default: usage(stderr); return AGENT_EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return die(AGENT_EXIT_USAGE, "%s", "missing command (try --help)");
	const char *cmd = argv[optind++];
	const char *url = NULL;
	bool json = false, syncml = false, ack = false;
	struct agent_op_args args = { NULL, NULL, NULL };
	const bool is_dl = strcmp(cmd, "download") == 0 || strcmp(cmd, "download-and-update") == 0;
	if (is_dl || strcmp(cmd, "update") == 0) {
		while (optind < argc && strncmp(argv[optind], "--", 2) == 0) {
			const char **dst = strcmp(argv[optind], "--correlator") == 0 ? &args.correlator
					   : strcmp(argv[optind], "--pkg-name") == 0 ? &args.pkg_name
					   : strcmp(argv[optind], "--pkg-version") == 0 ? &args.pkg_version : NULL;
			if (!dst)
				return die(AGENT_EXIT_USAGE, "%s: unknown option '%s'", cmd, argv[optind]);
			if (optind + 1 >= argc || !argv[optind + 1][0])
				return die(AGENT_EXIT_USAGE, "%s: %s needs a value", cmd, argv[optind]);
			size_t cap = dst == &args.correlator ? AGENT_CORRELATOR_MAX : FOTA_STRING_MAX;
			if (strlen(argv[optind + 1]) > cap)
				return die(AGENT_EXIT_USAGE, "%s: %s: longer than %zu bytes", cmd, argv[optind], cap);
			*dst = argv[optind + 1];
			optind += 2;
		}
	}
	if (is_dl) {
		if (optind >= argc)
			return die(AGENT_EXIT_USAGE, "%s: missing URL", cmd);
		url = argv[optind++];
	} else if (strcmp(cmd, "status") == 0) {
		if (optind < argc && strcmp(argv[optind], "--json") == 0) {
			json = true;
			optind++;
		}
	} else if (strcmp(cmd, "report") == 0) {
		if (optind < argc && strcmp(argv[optind], "--json") == 0)
			json = true;
		else if (optind < argc && strcmp(argv[optind], "--syncml") == 0)
			syncml = true;
		else if (optind < argc && strcmp(argv[optind], "--ack") == 0)
			ack = true;
		if (json || syncml || ack)
			optind++;
	} else if (strcmp(cmd, "update") != 0 && strcmp(cmd, "resume") != 0 && strcmp(cmd, "cancel") != 0) {
		return die(AGENT_EXIT_USAGE, "unknown command '%s' (try --help)", cmd);
	}
	if (optind < argc)
		return die(AGENT_EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (!conf)
		return die(AGENT_EXIT_USAGE, "%s", "missing -c CONF");

	/* under a file-size limit, a write fails with EFBIG (reported as out of space, 501
	 * or 502) instead of killing the agent */
	signal(SIGXFSZ, SIG_IGN);
	struct fota_error err;
	fota_error_clear(&err);
	struct agent_config *cfg = NULL;
	if (agent_config_load(conf, &cfg, &err) != FOTA_OK)
		return die(AGENT_EXIT_CONFIG, "%s", err.msg);
	struct fota_store *st = NULL;
	if (fota_dirstore_open(cfg->state_dir, &st, &err) != FOTA_OK) {
		agent_config_free(cfg);
		return die(AGENT_EXIT_IO, "%s", err.msg);
	}
	/* one agent at a time; the kernel drops the lock when the process dies */
	char lockpath[4200];
	snprintf(lockpath, sizeof(lockpath), "%s/lock", cfg->state_dir);
	int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	const bool readonly = strcmp(cmd, "status") == 0 || (strcmp(cmd, "report") == 0 && !ack);
	if (lock < 0 || flock(lock, readonly ? LOCK_SH | LOCK_NB : LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		fota_store_close(st);
		agent_config_free(cfg);
		if (lock >= 0)
			close(lock);
		return die(lock < 0 ? AGENT_EXIT_IO : AGENT_EXIT_BUSY, "state_dir: %s",
			   lock < 0 ? strerror(e) : "another fota-agent is running");
	}
	struct agent_env env = { cfg, st, fota_file_devices, agent_clock_system(), quiet ? NULL : stderr };
	if ((test_clock_path = getenv("FOTA_AGENT_TEST_CLOCK")) && *test_clock_path) {
		env.clock.now_ms = test_now_ms;
		env.clock.sleep_ms = test_sleep_ms;
	}
	struct agent *a = NULL;
	int rc;
	if (agent_open(&env, &a, &err) != FOTA_OK) {
		rc = die(AGENT_EXIT_IO, "%s", err.msg);
		goto out;
	}
	if (url)
		rc = agent_download_op(a, url, strcmp(cmd, "download-and-update") == 0, &args, &err);
	else if (strcmp(cmd, "update") == 0)
		rc = agent_update_op(a, &args, &err);
	else if (strcmp(cmd, "report") == 0 && ack)
		rc = agent_report_ack(a, &err);
	else if (strcmp(cmd, "report") == 0)
		rc = agent_report(a, syncml, stdout, &err);
	else if (strcmp(cmd, "resume") == 0)
		rc = agent_resume(a, &err);
	else if (strcmp(cmd, "cancel") == 0)
		rc = agent_cancel(a, &err);
	else
		rc = agent_status(a, json, stdout, &err);
	if (rc != 0)
		fprintf(stderr, "fota-agent: %s (exit %d, %s)\n", err.msg[0] ? err.msg : "failed", rc, agent_exit_name(rc));
out:
	agent_close(a);
	fota_store_close(st);
	agent_config_free(cfg);
	close(lock);
	return rc;
}
