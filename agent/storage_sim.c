/*
 * storage_sim.c: the power-cut simulation backend (see storage.h). A device keeps its
 * durable bytes and a list of writes not yet synced; reads see both. Every write, sync
 * and commit step is an event; at the armed event the power goes: the operation fails,
 * and so does every later one until fota_sim_reboot(), which throws away what was not
 * durable (tearing the last write when asked).
 *
 * With fota_sim_set_concurrent_reads the devices say concurrent_reads, so the agent
 * runs its read-back thread on them as on files; every operation then takes the
 * simulation's lock. Reads are not events, so the events of a run stay the same
 * whatever the threads' timing.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

struct pending {
	uint64_t off;
	size_t len;
	uint8_t *data;
};

struct simdev {
	char *name;
	uint8_t *dur;           /* durable content */
	uint64_t dur_len;
	struct pending *pend;   /* unsynced writes, oldest first */
	size_t n_pend, cap_pend;
	uint64_t writes;
	bool present;           /* store files can be removed */
};

struct simrec {
	char *name;
	uint8_t *cur;           /* what load sees; NULL = absent */
	size_t cur_len;
	uint8_t *dur;           /* what survives a clean cut */
	size_t dur_len;
	bool dirty;             /* renamed but the directory is not synced */
};

struct fota_sim {
	struct fota_store store;
	struct simdev *devs;
	size_t n_devs;
	struct simrec *recs;
	size_t n_recs;
	uint64_t events, cut_at;
	bool torn, cut;
	/* the device and pending index of the write that the cut tears, if any */
	struct simdev *torn_dev;
	bool concurrent;        /* devices are opened with concurrent_reads */
	pthread_mutex_t mu;     /* held by every storage and store operation */
};

struct sim_storage {
	struct fota_storage base;
	struct fota_sim *sim;
	size_t dev; /* index into sim->devs */
};

static struct simdev *find_dev(const struct fota_sim *sim, const char *name)
{
	for (size_t i = 0; i < sim->n_devs; i++)
		if (strcmp(sim->devs[i].name, name) == 0)
			return &sim->devs[i];
	return NULL;
}

static struct simdev *add_dev(struct fota_sim *sim, const char *name)
{
	struct simdev *d = find_dev(sim, name);
	if (d)
		return d;
	struct simdev *nd = realloc(sim->devs, (sim->n_devs + 1) * sizeof(*nd));
	if (!nd)
		return NULL;
	sim->devs = nd;
	d = &sim->devs[sim->n_devs];
	memset(d, 0, sizeof(*d));
	if (!(d->name = strdup(name)))
		return NULL;
	sim->n_devs++;
	return d;
}

static void drop_pending(struct simdev *d)
{
	for (size_t i = 0; i < d->n_pend; i++)
		free(d->pend[i].data);
	d->n_pend = 0;
}

/* Apply a write to the durable bytes. */
static int apply_durable(struct simdev *d, uint64_t off, const uint8_t *data, size_t len)
{
	if (off + len > d->dur_len) {
		uint8_t *nb = realloc(d->dur, off + len ? off + len : 1);
		if (!nb)
			return -1;
		memset(nb + d->dur_len, 0, off + len - d->dur_len);
		d->dur = nb;
		d->dur_len = off + len;
	}
	memcpy(d->dur + off, data, len);
	return 0;
}

static uint64_t dev_size(const struct simdev *d)
{
	uint64_t sz = d->dur_len;
	for (size_t i = 0; i < d->n_pend; i++)
		if (d->pend[i].off + d->pend[i].len > sz)
			sz = d->pend[i].off + d->pend[i].len;
	return sz;
}

/* Count one event: 0 when it may happen, 1 when the power goes at this very event,
 * 2 when the power is already off. */
static int event_at(struct fota_sim *sim)
{
	if (sim->cut)
		return 2;
	sim->events++;
	if (sim->cut_at && sim->events == sim->cut_at) {
		sim->cut = true;
		return 1;
	}
	return 0;
}

static bool event(struct fota_sim *sim)
{
	return event_at(sim) == 0;
}

static fota_status cut_error(struct fota_storage *s, struct fota_error *err)
{
	return fota_error_set(err, FOTA_E_IO, "%s: simulated power cut", s->name);
}

static fota_status sim_read_u(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct sim_storage *ss = (struct sim_storage *)s;
	if (ss->sim->cut)
		return cut_error(s, err);
	struct simdev *d = &ss->sim->devs[ss->dev];
	if (!d->present)
		return fota_error_set(err, FOTA_E_IO, "%s: removed", s->name);
	uint64_t sz = dev_size(d);
	if (off > sz || len > sz - off)
		return fota_error_set(err, FOTA_E_IO, "%s: read at %llu: past the end", s->name,
				      (unsigned long long)off);
	uint8_t *out = buf;
	memset(out, 0, len);
	if (off < d->dur_len) {
		uint64_t n = d->dur_len - off < len ? d->dur_len - off : len;
		memcpy(out, d->dur + off, n);
	}
	for (size_t i = 0; i < d->n_pend; i++) {
		const struct pending *p = &d->pend[i];
		uint64_t a = p->off > off ? p->off : off;
		uint64_t b = p->off + p->len < off + len ? p->off + p->len : off + len;
		if (a < b)
			memcpy(out + (a - off), p->data + (a - p->off), b - a);
	}
	return FOTA_OK;
}

static fota_status sim_write_u(struct fota_storage *s, uint64_t off, const void *buf, size_t len,
			     struct fota_error *err)
{
	struct sim_storage *ss = (struct sim_storage *)s;
	struct fota_sim *sim = ss->sim;
	struct simdev *d = &sim->devs[ss->dev];
	int ev = event_at(sim);
	bool ok = ev == 0;
	if (ev == 2 || (ev == 1 && !sim->torn))
		return cut_error(s, err);
	if (d->n_pend == d->cap_pend) {
		size_t nc = d->cap_pend ? d->cap_pend * 2 : 16;
		struct pending *np = realloc(d->pend, nc * sizeof(*np));
		if (!np)
			return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
		d->pend = np;
		d->cap_pend = nc;
	}
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	memcpy(copy, buf, len);
	d->pend[d->n_pend++] = (struct pending){ off, len, copy };
	d->writes++;
	if (!ok) {
		/* The write reached the cache as the power went: the reboot tears it. */
		sim->torn_dev = d;
		return cut_error(s, err);
	}
	return FOTA_OK;
}

static fota_status sim_sync_u(struct fota_storage *s, struct fota_error *err)
{
	struct sim_storage *ss = (struct sim_storage *)s;
	struct simdev *d = &ss->sim->devs[ss->dev];
	if (!event(ss->sim))
		return cut_error(s, err);
	for (size_t i = 0; i < d->n_pend; i++)
		if (apply_durable(d, d->pend[i].off, d->pend[i].data, d->pend[i].len) != 0)
			return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	drop_pending(d);
	return FOTA_OK;
}

static fota_status sim_size_u(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{
	struct sim_storage *ss = (struct sim_storage *)s;
	if (ss->sim->cut)
		return cut_error(s, err);
	*out = dev_size(&ss->sim->devs[ss->dev]);
	return FOTA_OK;
}

static void sim_close(struct fota_storage *s)
{
	free(s);
}

/* The operations under the simulation's lock (the read-back thread reads while the
 * main thread writes). */
static fota_status sim_read(struct fota_storage *s, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct fota_sim *sim = ((struct sim_storage *)s)->sim;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = sim_read_u(s, off, buf, len, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status sim_write(struct fota_storage *s, uint64_t off, const void *buf, size_t len,
			     struct fota_error *err)
{
	struct fota_sim *sim = ((struct sim_storage *)s)->sim;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = sim_write_u(s, off, buf, len, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status sim_sync(struct fota_storage *s, struct fota_error *err)
{
	struct fota_sim *sim = ((struct sim_storage *)s)->sim;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = sim_sync_u(s, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status sim_size(struct fota_storage *s, uint64_t *out, struct fota_error *err)
{
	struct fota_sim *sim = ((struct sim_storage *)s)->sim;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = sim_size_u(s, out, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static const struct fota_storage_ops sim_ops = { sim_read, sim_write, sim_sync, sim_size, sim_close };

static fota_status open_dev(struct fota_sim *sim, const char *name, struct fota_storage **out,
			    struct fota_error *err)
{
	struct simdev *d = find_dev(sim, name);
	if (!d || !d->present)
		return fota_error_set(err, FOTA_E_IO, "%s: no such device", name);
	struct sim_storage *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	ss->base.ops = &sim_ops;
	snprintf(ss->base.name, sizeof(ss->base.name), "%s", name);
	ss->base.concurrent_reads = sim->concurrent;
	ss->sim = sim;
	ss->dev = (size_t)(d - sim->devs);
	*out = &ss->base;
	return FOTA_OK;
}

/* ---- the simulated state store ---- */

static struct simrec *find_rec(struct fota_sim *sim, const char *name, bool create)
{
	for (size_t i = 0; i < sim->n_recs; i++)
		if (strcmp(sim->recs[i].name, name) == 0)
			return &sim->recs[i];
	if (!create)
		return NULL;
	struct simrec *nr = realloc(sim->recs, (sim->n_recs + 1) * sizeof(*nr));
	if (!nr)
		return NULL;
	sim->recs = nr;
	struct simrec *r = &sim->recs[sim->n_recs];
	memset(r, 0, sizeof(*r));
	if (!(r->name = strdup(name)))
		return NULL;
	sim->n_recs++;
	return r;
}

static fota_status store_cut(const char *name, struct fota_error *err)
{
	return fota_error_set(err, FOTA_E_IO, "state %s: simulated power cut", name);
}

static fota_status st_load_u(struct fota_store *st, const char *name, size_t max, uint8_t **data, size_t *len,
			   bool *found, struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	*data = NULL;
	*len = 0;
	*found = false;
	if (sim->cut)
		return store_cut(name, err);
	struct simrec *r = find_rec(sim, name, false);
	if (!r || !r->cur)
		return FOTA_OK;
	if (r->cur_len > max)
		return fota_error_set(err, FOTA_E_LIMIT, "state %s: %zu bytes, limit %zu", name, r->cur_len, max);
	*data = malloc(r->cur_len + 1);
	if (!*data)
		return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	memcpy(*data, r->cur, r->cur_len);
	(*data)[r->cur_len] = 0;
	*len = r->cur_len;
	*found = true;
	return FOTA_OK;
}

static fota_status st_commit_u(struct fota_store *st, const char *name, const void *data, size_t len,
			     struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	struct simrec *r = find_rec(sim, name, true);
	if (!r)
		return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	/* write NAME.tmp, fsync it: a cut here leaves the old record */
	if (!event(sim) || !event(sim))
		return store_cut(name, err);
	/* rename */
	if (!event(sim))
		return store_cut(name, err);
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
	memcpy(copy, data, len);
	if (r->cur != r->dur)
		free(r->cur);
	r->cur = copy;
	r->cur_len = len;
	r->dirty = true;
	/* fsync the directory */
	if (!event(sim))
		return store_cut(name, err);
	if (r->dur != r->cur)
		free(r->dur);
	r->dur = r->cur;
	r->dur_len = r->cur_len;
	r->dirty = false;
	return FOTA_OK;
}

static fota_status st_remove_u(struct fota_store *st, const char *name, struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	if (!event(sim))
		return store_cut(name, err);
	struct simrec *r = find_rec(sim, name, false);
	if (r) {
		if (r->cur != r->dur)
			free(r->cur);
		free(r->dur);
		r->cur = r->dur = NULL;
		r->cur_len = r->dur_len = 0;
		r->dirty = false;
	}
	char dname[300];
	snprintf(dname, sizeof(dname), "state/%s", name);
	struct simdev *d = find_dev(sim, dname);
	if (d) {
		drop_pending(d);
		free(d->dur);
		d->dur = NULL;
		d->dur_len = 0;
		d->present = false;
	}
	return FOTA_OK;
}

static fota_status st_open_u(struct fota_store *st, const char *name, bool create, struct fota_storage **out,
			   struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	*out = NULL;
	if (sim->cut)
		return store_cut(name, err);
	char dname[300];
	snprintf(dname, sizeof(dname), "state/%s", name);
	struct simdev *d = find_dev(sim, dname);
	if (!d || !d->present) {
		if (!create)
			return fota_error_set(err, FOTA_E_IO, "state %s: no such file", name);
		if (!(d = add_dev(sim, dname)))
			return fota_error_set(err, FOTA_E_NOMEM, "sim: out of memory");
		d->present = true;
	}
	return open_dev(sim, dname, out, err);
}

static void st_close(struct fota_store *st)
{
	(void)st;
}

static fota_status st_load(struct fota_store *st, const char *name, size_t max, uint8_t **data, size_t *len,
			   bool *found, struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = st_load_u(st, name, max, data, len, found, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status st_commit(struct fota_store *st, const char *name, const void *data, size_t len,
			     struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = st_commit_u(st, name, data, len, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status st_remove(struct fota_store *st, const char *name, struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = st_remove_u(st, name, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static fota_status st_open(struct fota_store *st, const char *name, bool create, struct fota_storage **out,
			   struct fota_error *err)
{
	struct fota_sim *sim = (struct fota_sim *)st;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = st_open_u(st, name, create, out, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

static const struct fota_store_ops sim_store_ops = { st_load, st_commit, st_remove, st_open, st_close };

/* ---- control ---- */

struct fota_sim *fota_sim_new(void)
{
	struct fota_sim *sim = calloc(1, sizeof(*sim));
	if (!sim)
		return NULL;
	if (pthread_mutex_init(&sim->mu, NULL) != 0) {
		free(sim);
		return NULL;
	}
	sim->store.ops = &sim_store_ops;
	return sim;
}

void fota_sim_set_concurrent_reads(struct fota_sim *sim, bool on)
{
	sim->concurrent = on;
}

void fota_sim_free(struct fota_sim *sim)
{
	if (!sim)
		return;
	for (size_t i = 0; i < sim->n_devs; i++) {
		drop_pending(&sim->devs[i]);
		free(sim->devs[i].pend);
		free(sim->devs[i].dur);
		free(sim->devs[i].name);
	}
	free(sim->devs);
	for (size_t i = 0; i < sim->n_recs; i++) {
		if (sim->recs[i].cur != sim->recs[i].dur)
			free(sim->recs[i].cur);
		free(sim->recs[i].dur);
		free(sim->recs[i].name);
	}
	free(sim->recs);
	pthread_mutex_destroy(&sim->mu);
	free(sim);
}

void fota_sim_set_cut(struct fota_sim *sim, uint64_t at, bool torn)
{
	sim->cut_at = at ? sim->events + at : 0;
	sim->torn = torn;
}

uint64_t fota_sim_events(const struct fota_sim *sim)
{
	return sim->events;
}

bool fota_sim_cut_happened(const struct fota_sim *sim)
{
	return sim->cut;
}

void fota_sim_reboot(struct fota_sim *sim)
{
	for (size_t i = 0; i < sim->n_devs; i++) {
		struct simdev *d = &sim->devs[i];
		if (sim->torn && d == sim->torn_dev && d->n_pend > 0) {
			/* persist the first sectors of the write that was in flight */
			const struct pending *p = &d->pend[d->n_pend - 1];
			uint64_t first = p->off / FOTA_SECTOR, last = (p->off + p->len - 1) / FOTA_SECTOR;
			uint64_t t = p->len ? last - first + 1 : 0;
			uint64_t keep = t <= 1 ? t : t / 2;
			uint64_t end = keep ? (first + keep) * FOTA_SECTOR : p->off;
			if (end > p->off + p->len)
				end = p->off + p->len;
			if (end > p->off)
				(void)apply_durable(d, p->off, p->data, end - p->off);
		}
		drop_pending(d);
	}
	for (size_t i = 0; i < sim->n_recs; i++) {
		struct simrec *r = &sim->recs[i];
		if (!r->dirty)
			continue;
		if (sim->torn) { /* the rename made it to disk anyway */
			if (r->dur != r->cur)
				free(r->dur);
			r->dur = r->cur;
			r->dur_len = r->cur_len;
		} else {
			if (r->cur != r->dur)
				free(r->cur);
			r->cur = r->dur;
			r->cur_len = r->dur_len;
		}
		r->dirty = false;
	}
	sim->cut = false;
	sim->cut_at = 0;
	sim->torn = false;
	sim->torn_dev = NULL;
}

fota_status fota_sim_dev_set(struct fota_sim *sim, const char *name, const void *data, size_t len)
{
	struct simdev *d = add_dev(sim, name);
	if (!d)
		return FOTA_E_NOMEM;
	drop_pending(d);
	free(d->dur);
	d->dur = malloc(len ? len : 1);
	if (!d->dur)
		return FOTA_E_NOMEM;
	memcpy(d->dur, data, len);
	d->dur_len = len;
	d->writes = 0;
	d->present = true;
	return FOTA_OK;
}

uint8_t *fota_sim_dev_get(struct fota_sim *sim, const char *name, size_t *len)
{
	struct simdev *d = find_dev(sim, name);
	if (!d || !d->present)
		return NULL;
	uint64_t sz = dev_size(d);
	uint8_t *buf = malloc(sz ? sz : 1);
	if (!buf)
		return NULL;
	struct sim_storage tmp = { .sim = sim, .dev = (size_t)(d - sim->devs) };
	tmp.base.ops = &sim_ops;
	bool was_cut = sim->cut;
	sim->cut = false;
	fota_status rc = sim_read(&tmp.base, 0, buf, sz, NULL);
	sim->cut = was_cut;
	if (rc != FOTA_OK) {
		free(buf);
		return NULL;
	}
	*len = sz;
	return buf;
}

uint64_t fota_sim_dev_writes(const struct fota_sim *sim, const char *name)
{
	const struct simdev *d = find_dev(sim, name);
	return d ? d->writes : 0;
}

struct fota_store *fota_sim_store(struct fota_sim *sim)
{
	return &sim->store;
}

static fota_status simdevs_open(void *ctx, const char *path, bool writable, struct fota_storage **out,
				struct fota_error *err)
{
	struct fota_sim *sim = ctx;
	(void)writable;
	*out = NULL;
	pthread_mutex_lock(&sim->mu);
	fota_status rc = open_dev(sim, path, out, err);
	pthread_mutex_unlock(&sim->mu);
	return rc;
}

struct fota_devices fota_sim_devices(struct fota_sim *sim)
{
	struct fota_devices d = { sim, simdevs_open };
	return d;
}
