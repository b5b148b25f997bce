/*
 * storage.h: the one I/O interface of the agent (DESIGN.md). Every byte the agent
 * reads from or writes to a device (slots, the in-place partition, the scratch area)
 * and every byte of its state (journal, saved manifest, download cache) goes through
 * it, so a power-cut test that replaces the backend covers them all.
 *
 * Two objects:
 *   struct fota_storage  a byte-addressed device or file: read, write, sync, size.
 *   struct fota_store    the state directory: small named records replaced atomically
 *                        (load / commit / remove), and named files opened as storage
 *                        (the download cache).
 * Backends:
 *   file  production: pread/pwrite/fsync on files or block devices; the store is a
 *         directory, commit = write NAME.tmp, fsync, rename, fsync the directory.
 *   sim   power-cut simulation (SQLite-style volatile write cache): writes are held
 *         until sync; a simulated cut drops every write not yet synced and can tear the
 *         last one at 512-byte sector granularity. A commit is four events (write temp,
 *         sync temp, rename, sync directory); a rename not yet made durable by the
 *         directory sync survives a torn cut and is lost in a clean one. Every write,
 *         sync and commit step is one numbered event; the test sets the event at which
 *         the power goes, after which every operation fails until fota_sim_reboot().
 */
#ifndef FOTA_AGENT_STORAGE_H
#define FOTA_AGENT_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"

#define FOTA_SECTOR 512u

struct fota_storage;
struct fota_storage_ops {
	/* Read exactly len bytes at off; reading past the end is FOTA_E_IO. */
	fota_status (*read)(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err);
	/* Write len bytes at off (a file grows; a block device does not). */
	fota_status (*write)(struct fota_storage *s, uint64_t off, const void *buf, size_t len, struct fota_error *err);
	/* Make every write so far durable. */
	fota_status (*sync)(struct fota_storage *s, struct fota_error *err);
	fota_status (*size)(struct fota_storage *s, uint64_t *out, struct fota_error *err);
	void (*close)(struct fota_storage *s);
};
struct fota_storage {
	const struct fota_storage_ops *ops;
	char name[256];        /* for messages: the path */
	bool concurrent_reads; /* read may run in another thread while this one writes */
};

static inline fota_status fota_storage_read(struct fota_storage *s, uint64_t off, void *buf, size_t len,
					    struct fota_error *err)
{ return s->ops->read(s, off, buf, len, err); }
static inline fota_status fota_storage_write(struct fota_storage *s, uint64_t off, const void *buf, size_t len,
					     struct fota_error *err)
{ return s->ops->write(s, off, buf, len, err); }
static inline fota_status fota_storage_sync(struct fota_storage *s, struct fota_error *err)
{ return s->ops->sync(s, err); }
static inline fota_status fota_storage_size(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{ return s->ops->size(s, out, err); }
/* NULL does nothing. */
static inline void fota_storage_close(struct fota_storage *s) { if (s) s->ops->close(s); }

struct fota_store;
struct fota_store_ops {
	/* Load record name (at most max bytes). *data malloc'd, NUL-terminated, owned by the
	 * caller; *found false (and *data NULL) when the record does not exist. */
	fota_status (*load)(struct fota_store *st, const char *name, size_t max, uint8_t **data, size_t *len,
			    bool *found, struct fota_error *err);
	/* Replace record name atomically and durably. */
	fota_status (*commit)(struct fota_store *st, const char *name, const void *data, size_t len,
			      struct fota_error *err);
	/* Remove a record or file durably; absent is not an error. */
	fota_status (*remove)(struct fota_store *st, const char *name, struct fota_error *err);
	/* Open file name as storage, creating it empty when create is set. */
	fota_status (*open)(struct fota_store *st, const char *name, bool create, struct fota_storage **out,
			    struct fota_error *err);
	void (*close)(struct fota_store *st);
};
struct fota_store {
	const struct fota_store_ops *ops;
};

/* Device opener: how the agent opens slots, partitions and the scratch area by path. */
struct fota_devices {
	void *ctx;
	fota_status (*open)(void *ctx, const char *path, bool writable, struct fota_storage **out,
			    struct fota_error *err);
};

/* ---- file backend ---- */
/* Open an existing file or block device. writable opens read-write (never creates). */
fota_status fota_file_open(const char *path, bool writable, struct fota_storage **out,
			   struct fota_error *err) FOTA_WUR;
/* The state directory dir, which must exist and be writable (checked with a probe file). */
fota_status fota_dirstore_open(const char *dir, struct fota_store **out, struct fota_error *err) FOTA_WUR;
void fota_store_close(struct fota_store *st);
/* The production device opener (fota_file_open). */
extern const struct fota_devices fota_file_devices;

/* ---- power-cut simulation backend ---- */
struct fota_sim;
struct fota_sim *fota_sim_new(void);
void fota_sim_free(struct fota_sim *sim);
/* Cut the power at the at-th event from now (1 = the next one; 0 = never). torn: the
 * cut write persists its first sectors (half of them, at least one; a one-sector write
 * persists whole), and a rename not yet made durable survives. */
void fota_sim_set_cut(struct fota_sim *sim, uint64_t at, bool torn);
/* Events so far (writes, syncs, commit steps). */
uint64_t fota_sim_events(const struct fota_sim *sim);
bool fota_sim_cut_happened(const struct fota_sim *sim);
/* Power back on: unsynced data is gone (or torn), operations work again, no cut armed. */
void fota_sim_reboot(struct fota_sim *sim);
/* Create or replace device name with durable content. */
fota_status fota_sim_dev_set(struct fota_sim *sim, const char *name, const void *data, size_t len) FOTA_WUR;
/* Current content of a device (what a read sees). *data malloc'd; NULL when absent. */
uint8_t *fota_sim_dev_get(struct fota_sim *sim, const char *name, size_t *len);
/* Writes made to a device since it was set (0 for an unknown name). */
uint64_t fota_sim_dev_writes(const struct fota_sim *sim, const char *name);
/* The simulated state store. Owned by sim (closing it does nothing). */
struct fota_store *fota_sim_store(struct fota_sim *sim);
/* A device opener on sim: path names a device set with fota_sim_dev_set. */
struct fota_devices fota_sim_devices(struct fota_sim *sim);
/* Devices opened from now on say concurrent_reads (default: no), so the agent reads
 * the slot back in a thread as on files; the operations are serialised by a lock. */
void fota_sim_set_concurrent_reads(struct fota_sim *sim, bool on);

/* A hint that [off, off + len) of s, written and read back, is not needed in memory any
 * more: the file backend waits for that range's writeback and drops it from the page
 * cache, so that writing a slot recycles a few MiB of page cache instead of filling
 * memory with an image nobody reads before the reboot (taking fresh pages from a
 * virtual machine's host is what makes writing slow and erratic). Data stay as durable
 * as before: only fsync (sync) makes them durable. Other backends ignore it. */
void fota_storage_drop(struct fota_storage *s, uint64_t off, uint64_t len);

#endif
