/*
 * manifest.h: the package manifest (manifest.json), in memory and on the wire.
 *
 * The manifest is the only trusted description of a package: it is parsed only after
 * its CMS signature has been checked (see sig.h), and everything the agent or the
 * verifier does with payloads is decided from it. Parsing is strict (see
 * formats/FORMAT.md, "Manifest"): duplicate keys, unknown keys, wrong types, missing
 * required fields, unknown format versions and values over the limits below are
 * FOTA_E_MANIFEST or FOTA_E_LIMIT errors with a message naming the field.
 *
 * Serialisation is canonical: the same struct always gives the same bytes, so
 * packages are reproducible.
 */
#ifndef FOTA_MANIFEST_H
#define FOTA_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "fota/error.h"
#include "fota/hash.h"

#define FOTA_FORMAT_VERSION 1

/* Limits: every one is enforced by the parser and by fota_manifest_validate(). */
#define FOTA_MANIFEST_MAX      (8u << 20)  /* bytes of manifest.json */
/* Bytes the JSON parser (jansson) may allocate for one manifest: its tree costs 5 to 80
 * times the text ("{}" is 2 bytes of text and about 230 bytes of tree), so the text
 * limit alone let an 8 MiB manifest take over 600 MB. */
#define FOTA_MANIFEST_PARSE_MAX (128u << 20)
#define FOTA_SIG_MAX           (64u << 10) /* bytes of manifest.sig */
#define FOTA_IMAGES_MAX        16          /* images per package */
#define FOTA_CHUNKS_MAX        65536       /* chunks per package, all images */
#define FOTA_CHUNK_SIZE_MIN    4096u       /* bytes of target per chunk (the last chunk of an image may be smaller) */
#define FOTA_CHUNK_SIZE_MAX    (64u << 20)
#define FOTA_PAYLOAD_MAX       ((64u << 20) + (1u << 20)) /* bytes of one chunk payload */
#define FOTA_IMAGE_SIZE_MAX    (1ull << 40) /* bytes of one source or target image */
#define FOTA_SOURCE_READS_MAX  4096        /* source ranges per chunk */
#define FOTA_STASH_MAX         4096        /* stash ranges per chunk (in-place) */
#define FOTA_MODELS_MAX        64          /* device models per package */
#define FOTA_STRING_MAX        128         /* package name, versions, one model */
#define FOTA_IMAGE_NAME_MAX    32          /* [a-z0-9_-], 1..32 bytes */
#define FOTA_MESSAGE_MAX       1024        /* install message, bytes of UTF-8 */
#define FOTA_WINDOW_MAX        (1u << 27)  /* largest decompression window a package may ask for */

enum fota_mode { FOTA_MODE_AB = 0, FOTA_MODE_INPLACE = 1 };
enum fota_priority { FOTA_PRIO_LOW = 0, FOTA_PRIO_MEDIUM = 1, FOTA_PRIO_HIGH = 2 };
enum fota_roaming { FOTA_ROAM_ALLOW = 0, FOTA_ROAM_DENY = 1, FOTA_ROAM_WIFI_ONLY = 2 };

/* How a chunk's payload produces its target bytes. */
enum fota_method {
	FOTA_METHOD_FULL = 0,  /* payload is one zstd frame of the target bytes */
	FOTA_METHOD_DELTA = 1, /* payload is a fota delta patch applied to source_reads (FORMAT.md, "Delta") */
};

struct fota_range {
	uint64_t offset;
	uint64_t length;
	bool scratch;                       /* in-place only: the range is in the scratch area, not the partition */
};

/* In-place only: before its chunk is applied, copy partition bytes
 * [source_offset, source_offset + length) to the scratch area at scratch_offset. */
struct fota_stash {
	uint64_t source_offset;
	uint64_t length;
	uint64_t scratch_offset;
};

struct fota_chunk {
	uint64_t target_offset;             /* where in the target image the chunk writes */
	uint64_t target_size;               /* bytes it writes */
	uint8_t target_sha256[FOTA_SHA256_LEN];
	enum fota_method method;
	uint64_t payload_size;              /* bytes of its tar member */
	uint8_t payload_sha256[FOTA_SHA256_LEN];
	size_t n_source_reads;              /* 0 for FULL; DELTA reads these source ranges, concatenated */
	struct fota_range *source_reads;    /* owned by the manifest */
	size_t n_stash;                     /* in-place only: copies into scratch made before this chunk runs */
	struct fota_stash *stash;           /* owned by the manifest */
};

struct fota_image {
	char name[FOTA_IMAGE_NAME_MAX + 1];
	bool has_source;                    /* false for a full image (no source needed) */
	uint64_t source_size;
	uint8_t source_sha256[FOTA_SHA256_LEN];
	uint64_t target_size;
	uint8_t target_sha256[FOTA_SHA256_LEN];
	size_t n_chunks;
	struct fota_chunk *chunks;          /* application order; owned by the manifest */
};

struct fota_policy {
	enum fota_priority priority;        /* SI priority: low, medium, high */
	bool silent;                        /* download without asking */
	enum fota_roaming roaming;          /* allow, deny, wifi-only */
	char *install_message;              /* NULL when absent; owned */
};

struct fota_manifest {
	uint32_t format_version;            /* FOTA_FORMAT_VERSION */
	char *name;                         /* FUMO PkgName; owned */
	char *version;                      /* FUMO PkgVersion; owned */
	char *from_version;                 /* source version it updates from; NULL for a full package */
	size_t n_models;
	char **models;                      /* device models it applies to; none = any model */
	uint64_t security_version;          /* monotonic; the device refuses anything below its floor */
	int64_t expires;                    /* Unix seconds, UTC; 0 = never */
	enum fota_mode mode;
	uint64_t scratch_size;              /* in-place: bytes of scratch area needed; 0 = none */
	uint32_t window_log;                /* log2 of the largest decompression window any payload needs (10..27) */
	struct fota_policy policy;
	size_t n_images;
	struct fota_image *images;          /* owned */
};

/*
 * Parse manifest.json bytes (not NUL-terminated; len <= FOTA_MANIFEST_MAX).
 * On success *out is a new manifest owned by the caller (fota_manifest_free) that has
 * passed fota_manifest_validate(). On error *out is NULL and err says which field.
 */
fota_status fota_manifest_parse(const uint8_t *buf, size_t len, struct fota_manifest **out,
				struct fota_error *err) FOTA_WUR;

/*
 * Validate then serialise to canonical JSON (fixed key order, compact, a final
 * newline). *out is malloc'd, owned by the caller, NUL-terminated; *len excludes the NUL.
 */
fota_status fota_manifest_serialize(const struct fota_manifest *m, char **out, size_t *len,
				    struct fota_error *err) FOTA_WUR;

/*
 * Semantic checks shared by the parser and the writer: every limit above; names,
 * strings and enums well formed; each image's chunks tile [0, target_size) exactly
 * (in any order), FULL chunks have no source reads, DELTA chunks read only inside
 * [0, source_size) of an image that has a source; totals within limits.
 */
fota_status fota_manifest_validate(const struct fota_manifest *m, struct fota_error *err) FOTA_WUR;

/* Free a manifest and everything it owns. NULL does nothing. */
void fota_manifest_free(struct fota_manifest *m);

/* Total chunks over all images. */
size_t fota_manifest_chunk_count(const struct fota_manifest *m);

/* Sum of payload_size over all chunks. */
uint64_t fota_manifest_payload_total(const struct fota_manifest *m);

/* "2027-01-31T00:00:00Z" <-> Unix seconds. Only this exact UTC form is accepted. 0 / -1. */
int fota_time_parse(const char *iso, int64_t *out);
void fota_time_format(int64_t t, char out[21]);

/* True when the len bytes at s form an image name: 1..FOTA_IMAGE_NAME_MAX of [a-z0-9_-]. */
bool fota_image_name_valid(const char *s, size_t len);

/* Enum spellings used in JSON and on command lines; parse returns -1 for an unknown word. */
const char *fota_mode_name(enum fota_mode m);
int fota_mode_parse(const char *s);
const char *fota_priority_name(enum fota_priority p);
int fota_priority_parse(const char *s);
const char *fota_roaming_name(enum fota_roaming r);
int fota_roaming_parse(const char *s);
const char *fota_method_name(enum fota_method m);
int fota_method_parse(const char *s);

/* Latest time a manifest can state: 9999-12-31T23:59:59Z. fota_time_parse accepts years
 * 1970..9999; fota_time_format clamps t into [0, FOTA_TIME_MAX]. */
#define FOTA_TIME_MAX 253402300799LL

#endif
