/*
 * storage_file.c: the production storage backend (see storage.h): files and block
 * devices through pread/pwrite/fsync, and the state directory with atomic records.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fota/util.h"
#include "storage.h"

/*
 * Writeback is started early: once FILE_KICK bytes have been written in sequence, the
 * kernel is asked to start writing them out (sync_file_range SYNC_FILE_RANGE_WRITE, which
 * does not wait for the device), so that the device writes while the agent computes and
 * the fsync at the next checkpoint finds little left to do, instead of a second of dirty
 * pages. Durability is unchanged: only fsync (file_sync) counts.
 */
#define FILE_KICK (8u << 20)

struct file_storage {
	struct fota_storage base;
	int fd;
	uint64_t run_from, run_to; /* the current run of sequential writes not yet kicked */
};

static void kick(struct file_storage *f)
{
	if (f->run_to > f->run_from)
		(void)sync_file_range(f->fd, (off_t)f->run_from, (off_t)(f->run_to - f->run_from), SYNC_FILE_RANGE_WRITE);
	f->run_from = f->run_to;
}

static fota_status file_read(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct file_storage *f = (struct file_storage *)s;
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fota_error_errno(err, FOTA_E_IO, errno, "%s: read at %llu", s->name,
						(unsigned long long)off);
		if (n == 0)
			return fota_error_set(err, FOTA_E_IO, "%s: read at %llu: past the end", s->name,
					      (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return FOTA_OK;
}

static fota_status file_write(struct fota_storage *s, uint64_t off, const void *buf, size_t len,
			      struct fota_error *err)
{
	struct file_storage *f = (struct file_storage *)s;
	const uint8_t *p = buf;
	const uint64_t start = off;
	while (len > 0) {
		ssize_t n = pwrite(f->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fota_error_errno(err, FOTA_E_IO, errno, "%s: write at %llu", s->name,
						(unsigned long long)off);
		if (n == 0)
			return fota_error_set(err, FOTA_E_IO, "%s: write at %llu: no progress", s->name,
					      (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	if (start != f->run_to) { /* not sequential: a new run */
		kick(f);
		f->run_from = start;
	}
	f->run_to = off;
	if (f->run_to - f->run_from >= FILE_KICK)
		kick(f);
	return FOTA_OK;
}

static fota_status file_sync(struct fota_storage *s, struct fota_error *err)
{
	struct file_storage *f = (struct file_storage *)s;
	if (fsync(f->fd) != 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "%s: fsync", s->name);
	return FOTA_OK;
}

static fota_status file_size(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{
	struct file_storage *f = (struct file_storage *)s;
	struct stat st;
	if (fstat(f->fd, &st) != 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "%s: stat", s->name);
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz = 0;
		if (ioctl(f->fd, BLKGETSIZE64, &sz) != 0)
			return fota_error_errno(err, FOTA_E_IO, errno, "%s: BLKGETSIZE64", s->name);
		*out = sz;
	} else {
		*out = (uint64_t)st.st_size;
	}
	return FOTA_OK;
}

static void file_close(struct fota_storage *s)
{
	struct file_storage *f = (struct file_storage *)s;
	close(f->fd);
	free(f);
}

static const struct fota_storage_ops file_ops = { file_read, file_write, file_sync, file_size, file_close };

void fota_storage_drop(struct fota_storage *s, uint64_t off, uint64_t len)
{
	if (!s || s->ops != &file_ops || len == 0 || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return;
	struct file_storage *f = (struct file_storage *)s;
	/* only clean pages can be dropped: start and wait for the range's writeback first */
	(void)sync_file_range(f->fd, (off_t)off, (off_t)len,
			      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
	(void)posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}

static fota_status open_fd(const char *path, int flags, struct fota_storage **out, struct fota_error *err)
{
	int fd = open(path, flags | O_CLOEXEC, 0644);
	if (fd < 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "%s", path);
	struct stat st;
	if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		close(fd);
		return fota_error_set(err, FOTA_E_IO, "%s: not a regular file or block device", path);
	}
	struct file_storage *f = calloc(1, sizeof(*f));
	if (!f) {
		close(fd);
		return fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", path);
	}
	f->base.ops = &file_ops;
	f->base.concurrent_reads = true; /* pread/pwrite */
	snprintf(f->base.name, sizeof(f->base.name), "%s", path);
	f->fd = fd;
	*out = &f->base;
	return FOTA_OK;
}

fota_status fota_file_open(const char *path, bool writable, struct fota_storage **out, struct fota_error *err)
{
	*out = NULL;
	return open_fd(path, writable ? O_RDWR : O_RDONLY, out, err);
}

static fota_status devices_open(void *ctx, const char *path, bool writable, struct fota_storage **out,
				struct fota_error *err)
{
	(void)ctx;
	return fota_file_open(path, writable, out, err);
}

const struct fota_devices fota_file_devices = { NULL, devices_open };

/* ---- the state directory ---- */

struct dir_store {
	struct fota_store base;
	char *dir;
};

static int record_path(const struct dir_store *d, const char *name, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%s", d->dir, name);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

static fota_status dir_load(struct fota_store *st, const char *name, size_t max, uint8_t **data, size_t *len,
			    bool *found, struct fota_error *err)
{
	struct dir_store *d = (struct dir_store *)st;
	char path[4096];
	*data = NULL;
	*len = 0;
	*found = false;
	if (record_path(d, name, path, sizeof(path)) != 0)
		return fota_error_set(err, FOTA_E_ARG, "state: path too long");
	if (access(path, F_OK) != 0) {
		if (errno == ENOENT)
			return FOTA_OK;
		return fota_error_errno(err, FOTA_E_IO, errno, "%s", path);
	}
	fota_status rc = fota_read_file(path, max, data, len, err);
	if (rc == FOTA_OK)
		*found = true;
	return rc;
}

static fota_status dir_commit(struct fota_store *st, const char *name, const void *data, size_t len,
			      struct fota_error *err)
{
	struct dir_store *d = (struct dir_store *)st;
	char path[4096];
	if (record_path(d, name, path, sizeof(path)) != 0)
		return fota_error_set(err, FOTA_E_ARG, "state: path too long");
	return fota_write_file_atomic(path, data, len, err);
}

static fota_status dir_remove(struct fota_store *st, const char *name, struct fota_error *err)
{
	struct dir_store *d = (struct dir_store *)st;
	char path[4096];
	if (record_path(d, name, path, sizeof(path)) != 0)
		return fota_error_set(err, FOTA_E_ARG, "state: path too long");
	if (unlink(path) != 0) {
		if (errno == ENOENT)
			return FOTA_OK;
		return fota_error_errno(err, FOTA_E_IO, errno, "%s: unlink", path);
	}
	return fota_sync_parent_dir(path, err);
}

static fota_status dir_open(struct fota_store *st, const char *name, bool create, struct fota_storage **out,
			    struct fota_error *err)
{
	struct dir_store *d = (struct dir_store *)st;
	char path[4096];
	*out = NULL;
	if (record_path(d, name, path, sizeof(path)) != 0)
		return fota_error_set(err, FOTA_E_ARG, "state: path too long");
	bool existed = access(path, F_OK) == 0;
	fota_status rc = open_fd(path, O_RDWR | (create ? O_CREAT : 0), out, err);
	if (rc == FOTA_OK && create && !existed) {
		rc = fota_sync_parent_dir(path, err);
		if (rc != FOTA_OK) {
			fota_storage_close(*out);
			*out = NULL;
		}
	}
	return rc;
}

static void dir_close(struct fota_store *st)
{
	struct dir_store *d = (struct dir_store *)st;
	free(d->dir);
	free(d);
}

static const struct fota_store_ops dir_ops = { dir_load, dir_commit, dir_remove, dir_open, dir_close };

fota_status fota_dirstore_open(const char *dir, struct fota_store **out, struct fota_error *err)
{
	*out = NULL;
	struct stat st;
	if (stat(dir, &st) != 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "state_dir %s", dir);
	if (!S_ISDIR(st.st_mode))
		return fota_error_set(err, FOTA_E_IO, "state_dir %s: not a directory", dir);
	/* access() answers for root too, so probe with a real file. */
	char probe[4096];
	if (snprintf(probe, sizeof(probe), "%s/.probe", dir) >= (int)sizeof(probe))
		return fota_error_set(err, FOTA_E_ARG, "state_dir %s: path too long", dir);
	int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return fota_error_errno(err, FOTA_E_IO, errno, "state_dir %s: not writable", dir);
	close(fd);
	unlink(probe);
	struct dir_store *d = calloc(1, sizeof(*d));
	if (!d || !(d->dir = strdup(dir))) {
		free(d);
		return fota_error_set(err, FOTA_E_NOMEM, "state_dir: out of memory");
	}
	d->base.ops = &dir_ops;
	*out = &d->base;
	return FOTA_OK;
}

void fota_store_close(struct fota_store *st)
{
	if (st)
		st->ops->close(st);
}
