/*
 * pack.h: fota-pack's internals, shared between its files (fota-pack.c: command line;
 * build.c: planning and writing a package).
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

#endif
