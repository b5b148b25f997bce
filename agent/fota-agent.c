/*
 * fota-agent: the device side. Reads its configuration, takes the state directory's
 * lock, and runs one command through the agent core (agent.h). See docs/fota-agent.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "storage.h"

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fota-agent -c CONF [-q] COMMAND\n"
"\n"
"Commands:\n"
"  download URL             fetch and verify the package; leave it ready to update\n"
"  update                   apply the downloaded package\n"
"  download-and-update URL  both\n"
"  resume                   continue whatever was interrupted (run at boot); does\n"
"                           nothing when nothing is pending\n"
"  status [--json]          the job's state\n"
"  cancel                   drop the job (refused once an in-place update writes)\n"
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
	long long v = 0;
	FILE *f = fopen(test_clock_path, "r");
	if (!f || fscanf(f, "%lld", &v) != 1)
		v = 0;
	if (f)
		fclose(f);
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
	bool json = false;
	if (strcmp(cmd, "download") == 0 || strcmp(cmd, "download-and-update") == 0) {
		if (optind >= argc)
			return die(AGENT_EXIT_USAGE, "%s: missing URL", cmd);
		url = argv[optind++];
	} else if (strcmp(cmd, "status") == 0) {
		if (optind < argc && strcmp(argv[optind], "--json") == 0) {
			json = true;
			optind++;
		}
	} else if (strcmp(cmd, "update") != 0 && strcmp(cmd, "resume") != 0 && strcmp(cmd, "cancel") != 0) {
		return die(AGENT_EXIT_USAGE, "unknown command '%s' (try --help)", cmd);
	}
	if (optind < argc)
		return die(AGENT_EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (!conf)
		return die(AGENT_EXIT_USAGE, "%s", "missing -c CONF");

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
	if (lock < 0 || flock(lock, strcmp(cmd, "status") == 0 ? LOCK_SH | LOCK_NB : LOCK_EX | LOCK_NB) != 0) {
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
		rc = agent_download(a, url, strcmp(cmd, "download-and-update") == 0, &err);
	else if (strcmp(cmd, "update") == 0)
		rc = agent_update(a, &err);
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
