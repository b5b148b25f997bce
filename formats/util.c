/*
 * util.c: strict parsing and atomic file writes (see fota/util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fota/util.h"

int fota_parse_u64(const char *s, uint64_t *out)
{
	if (!s || !*s)
		return -1;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int fota_parse_size(const char *s, uint64_t *out)
{
	if (!s || !*s)
		return -1;
	size_t n = strlen(s);
	unsigned shift = 0;
	switch (s[n - 1]) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	default: break;
	}
	char buf[32];
	if (shift) {
		if (n - 1 == 0 || n - 1 >= sizeof(buf))
			return -1;
		memcpy(buf, s, n - 1);
		buf[n - 1] = 0;
		s = buf;
	}
	uint64_t v;
	if (fota_parse_u64(s, &v) != 0)
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

fota_status fota_sync_parent_dir(const char *path, struct fota_error *err)
{
	char *copy = strdup(path);
	if (!copy)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fota_status rc = FOTA_OK;
	if (dfd < 0 || fsync(dfd) != 0)
		rc = fota_error_errno(err, FOTA_E_IO, errno, "%s: sync directory", path);
	if (dfd >= 0)
		close(dfd);
	free(copy);
	return rc;
}

fota_status fota_write_file_atomic(const char *path, const void *data, size_t len, struct fota_error *err)
{
	char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return fota_error_set(err, FOTA_E_NOMEM, "out of memory");
	fota_status rc = FOTA_OK;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = fota_error_errno(err, FOTA_E_IO, errno, "%s", tmp);
		goto out;
	}
	const uint8_t *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = fota_error_errno(err, FOTA_E_IO, errno, "%s: write", tmp);
			goto out;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = fota_error_errno(err, FOTA_E_IO, errno, "%s: fsync", tmp);
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = fota_error_errno(err, FOTA_E_IO, errno, "%s: close", tmp);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = fota_error_errno(err, FOTA_E_IO, errno, "%s: rename", path);
		goto out;
	}
	rc = fota_sync_parent_dir(path, err);
out:
	if (fd >= 0)
		close(fd);
	if (rc != FOTA_OK)
		unlink(tmp);
	free(tmp);
	return rc;
}

fota_status fota_read_file(const char *path, size_t max, uint8_t **out, size_t *len, struct fota_error *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "%s", path);
	fota_status rc = FOTA_OK;
	uint8_t *buf = NULL;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = fota_error_set(err, FOTA_E_IO, "%s: not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		rc = fota_error_set(err, FOTA_E_LIMIT, "%s: %lld bytes, limit %zu", path, (long long)st.st_size, max);
		goto out;
	}
	size_t n = (size_t)st.st_size, done = 0;
	buf = malloc(n + 1);
	if (!buf) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	while (done < n) {
		ssize_t r = read(fd, buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = fota_error_set(err, FOTA_E_IO, "%s: read: %s", path, r < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		done += (size_t)r;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}
