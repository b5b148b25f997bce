/*
 * hooks.c: running the agent's hooks with a timeout (see hooks.h). The timeout is
 * wall-clock time (CLOCK_MONOTONIC), not the agent's injectable clock: it bounds how
 * long a hung UI can hold the agent, which a fake clock must not shorten.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hooks.h"

#define HOOK_ARGS_MAX 8

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void child(const char *cmd, const char *const *args, const char *const *env, int outfd)
{
	const char *argv[HOOK_ARGS_MAX + 5];
	size_t n = 0;
	argv[n++] = "sh";
	argv[n++] = "-c";
	argv[n++] = cmd;
	argv[n++] = "fota-hook";
	for (size_t i = 0; args && args[i] && i < HOOK_ARGS_MAX; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	setpgid(0, 0);
	int devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0) {
		dup2(devnull, 0);
		close(devnull);
	}
	dup2(outfd, 1);
	close(outfd);
	for (size_t i = 0; env && env[i]; i++)
		putenv((char *)env[i]);
	signal(SIGPIPE, SIG_DFL);
	execv("/bin/sh", (char *const *)argv);
	_exit(127);
}

int agent_hook_run(const char *what, const char *cmd, const char *const *args, const char *const *env,
		   uint64_t timeout_s, char *out, size_t cap, struct fota_error *err)
{
	int p[2];
	if (out && cap)
		out[0] = 0;
	if (pipe2(p, O_CLOEXEC) != 0) {
		fota_error_errno(err, FOTA_E_IO, errno, "%s: pipe", what);
		return AGENT_HOOK_FAILED;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fota_error_errno(err, FOTA_E_IO, errno, "%s: fork", what);
		close(p[0]);
		close(p[1]);
		return AGENT_HOOK_FAILED;
	}
	if (pid == 0) {
		close(p[0]);
		child(cmd, args, env, p[1]);
	}
	setpgid(pid, pid); /* also here: no window where a kill misses the group */
	close(p[1]);
	const int64_t deadline = mono_ms() + (int64_t)(timeout_s > INT32_MAX ? INT32_MAX : timeout_s) * 1000;
	char line[1024];
	size_t have = 0;
	bool eof = false, line_done = false, timed_out = false;
	int status = 0;
	for (;;) {
		int64_t left = deadline - mono_ms();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		if (!eof) {
			struct pollfd pf = { p[0], POLLIN, 0 };
			int r = poll(&pf, 1, left > 100 ? 100 : (int)left);
			if (r > 0) {
				char buf[512];
				ssize_t n = read(p[0], buf, sizeof(buf));
				if (n <= 0 && !(n < 0 && errno == EINTR)) {
					eof = true;
				} else if (n > 0 && !line_done) {
					for (ssize_t i = 0; i < n && !line_done; i++) {
						if (buf[i] == '\n')
							line_done = true;
						else if (have < sizeof(line) - 1)
							line[have++] = buf[i];
					}
				}
			}
		}
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			fota_error_errno(err, FOTA_E_IO, errno, "%s: waitpid", what);
			close(p[0]);
			return AGENT_HOOK_FAILED;
		}
		if (eof) {
			struct timespec ts = { 0, 10 * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	close(p[0]);
	if (timed_out) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		fota_error_set(err, FOTA_E_IO, "%s '%s': no answer within %llu s; killed", what, cmd,
			       (unsigned long long)timeout_s);
		return AGENT_HOOK_TIMEOUT;
	}
	/* the shell may have left children behind in its group: they go with it */
	kill(-pid, SIGKILL);
	if (out && cap) {
		size_t n = have < cap - 1 ? have : cap - 1;
		memcpy(out, line, n);
		out[n] = 0;
		while (n > 0 && (out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
			out[--n] = 0;
	}
	if (!WIFEXITED(status)) {
		fota_error_set(err, FOTA_E_IO, "%s '%s': killed by signal %d", what, cmd, WTERMSIG(status));
		return AGENT_HOOK_FAILED;
	}
	return WEXITSTATUS(status);
}
