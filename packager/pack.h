/*
 * pack.h: fota-pack's internals, shared between its files (fota-pack.c: command line;
 * build.c: planning and writing a package; slice.c: cutting a whole-image delta script
 * into per-chunk scripts).
 */
#ifndef FOTA_PACK_H
#define FOTA_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "fota/delta.h"
#include "fota/error.h"
#include "fota/manifest.h"

#define PACK_MAX_THREADS 64

struct pack_image {
	const char *name;
	const char *old_path; /* NULL: full image, no source */
	const char *new_path;
};

struct pack_options {
	struct pack_image images[FOTA_IMAGES_MAX];
	size_t n_images;
	const char *output;
	const char *key, *cert, *chain;
	bool pss, unsigned_pkg;
	uint64_t chunk_size;
	enum fota_mode mode;
	uint64_t scratch_max;
	const char *name, *version, *from_version;
	const char *models[FOTA_MODELS_MAX];
	size_t n_models;
	uint64_t security_version;
	int64_t expires;
	int priority, roaming;
	bool silent;
	const char *install_message;
	unsigned threads;
	int level;
	uint32_t delta_window_log; /* largest window a delta payload may need */
	bool json, quiet;
};

/* Build and write the package. Errors leave no output file. */
fota_status pack_build(const struct pack_options *o, struct fota_error *err) FOTA_WUR;

/*
 * Cut the part of script s that produces new[off, off + len) into a script of its own
 * whose old input is the concatenation of the old ranges it reads (*reads, sorted and
 * merged, at most max_reads: close ranges are joined to stay under it). Both outputs are
 * owned by the caller (fota_delta_script_free, free).
 */
fota_status pack_slice(const struct fota_delta_script *s, uint64_t off, uint64_t len, size_t max_reads,
		       struct fota_delta_script **out, struct fota_range **reads, size_t *n_reads,
		       struct fota_error *err) FOTA_WUR;

#endif
