/*
 * manifest.c: manifest.json <-> struct fota_manifest (see fota/manifest.h and
 * formats/FORMAT.md, section 3).
 *
 * Parsing is in two steps. parse_*() walks the jansson tree and checks only the
 * schema: every key known and present, every value of the right JSON type, strings
 * without NUL, digests and times well formed, and array lengths capped before anything
 * is allocated for them. fota_manifest_validate() then checks every value against the
 * limits and the semantic rules (chunk tiling, source reads, names). The writer runs the
 * same validate(), so a manifest we emit is always one we accept. Both steps name the
 * JSON path of the offending value in their message.
 */
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fota/manifest.h"
#include "fota/inplace.h"

#define PATH_MAX_LEN 96

/* ---- enum spellings ---- */

static const char *const mode_names[] = {"ab", "inplace"};
static const char *const priority_names[] = {"low", "medium", "high"};
static const char *const roaming_names[] = {"allow", "deny", "wifi-only"};
static const char *const method_names[] = {"full", "delta"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *enum_name(const char *const *names, size_t n, int v)
{
	if (v < 0 || (size_t)v >= n)
		return "?";
	return names[v];
}

static int enum_parse(const char *const *names, size_t n, const char *s)
{
	if (!s)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

const char *fota_mode_name(enum fota_mode m) { return enum_name(mode_names, NELEM(mode_names), (int)m); }
int fota_mode_parse(const char *s) { return enum_parse(mode_names, NELEM(mode_names), s); }
const char *fota_priority_name(enum fota_priority p) { return enum_name(priority_names, NELEM(priority_names), (int)p); }
int fota_priority_parse(const char *s) { return enum_parse(priority_names, NELEM(priority_names), s); }
const char *fota_roaming_name(enum fota_roaming r) { return enum_name(roaming_names, NELEM(roaming_names), (int)r); }
int fota_roaming_parse(const char *s) { return enum_parse(roaming_names, NELEM(roaming_names), s); }
const char *fota_method_name(enum fota_method m) { return enum_name(method_names, NELEM(method_names), (int)m); }
int fota_method_parse(const char *s) { return enum_parse(method_names, NELEM(method_names), s); }

/* ---- time ---- */

static int parse_digits(const char *s, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int fota_time_parse(const char *iso, int64_t *out)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (!iso || !out || strlen(iso) != 20)
		return -1;
	if (iso[4] != '-' || iso[7] != '-' || iso[10] != 'T' || iso[13] != ':' || iso[16] != ':' ||
	    iso[19] != 'Z')
		return -1;
	int year = parse_digits(iso, 4), mon = parse_digits(iso + 5, 2), day = parse_digits(iso + 8, 2);
	int hour = parse_digits(iso + 11, 2), min = parse_digits(iso + 14, 2), sec = parse_digits(iso + 17, 2);
	if (year < 1970 || mon < 1 || mon > 12 || day < 1 || hour < 0 || hour > 23 || min < 0 ||
	    min > 59 || sec < 0 || sec > 59)
		return -1;
	int dim = mdays[mon - 1] + (mon == 2 && is_leap(year));
	if (day > dim)
		return -1;
	struct tm tm = {0};
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || t < 0)
		return -1;
	*out = (int64_t)t;
	return 0;
}

void fota_time_format(int64_t t, char out[21])
{
	if (t < 0)
		t = 0;
	if (t > FOTA_TIME_MAX)
		t = FOTA_TIME_MAX;
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm)) {
		memcpy(out, "1970-01-01T00:00:00Z", 21);
		return;
	}
	snprintf(out, 21, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- free, totals ---- */

static void free_images(struct fota_image *images, size_t n)
{
	if (!images)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!images[i].chunks)
			continue;
		for (size_t c = 0; c < images[i].n_chunks; c++) {
			free(images[i].chunks[c].source_reads);
			free(images[i].chunks[c].stash);
		}
		free(images[i].chunks);
	}
	free(images);
}

void fota_manifest_free(struct fota_manifest *m)
{
	if (!m)
		return;
	free(m->name);
	free(m->version);
	free(m->from_version);
	if (m->models)
		for (size_t i = 0; i < m->n_models; i++)
			free(m->models[i]);
	free(m->models);
	free(m->policy.install_message);
	free_images(m->images, m->n_images);
	free(m);
}

size_t fota_manifest_chunk_count(const struct fota_manifest *m)
{
	size_t n = 0;
	if (!m || !m->images)
		return 0;
	for (size_t i = 0; i < m->n_images; i++)
		n += m->images[i].n_chunks;
	return n;
}

uint64_t fota_manifest_payload_total(const struct fota_manifest *m)
{
	uint64_t t = 0;
	if (!m || !m->images)
		return 0;
	for (size_t i = 0; i < m->n_images; i++) {
		const struct fota_image *im = &m->images[i];
		if (!im->chunks)
			continue;
		for (size_t c = 0; c < im->n_chunks; c++)
			t += im->chunks[c].payload_size;
	}
	return t;
}

/* ---- string checks shared by parse and validate ---- */

/* name, version, from_version, model: 1..FOTA_STRING_MAX bytes of printable ASCII. */
static fota_status check_printable(const char *s, const char *path, struct fota_error *err)
{
	if (!s)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: missing", path);
	size_t len = strnlen(s, FOTA_STRING_MAX + 1);
	if (len == 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: empty string", path);
	if (len > FOTA_STRING_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s: longer than %d bytes", path,
				      FOTA_STRING_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: %s: byte %zu is not printable ASCII", path, i);
	return FOTA_OK;
}

/* Image name: [a-z0-9_-]{1,FOTA_IMAGE_NAME_MAX}. */
static bool image_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool fota_image_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > FOTA_IMAGE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!image_name_char(s[i]))
			return false;
	return true;
}

static fota_status check_image_name(const char *s, size_t maxscan, const char *path, struct fota_error *err)
{
	size_t len = strnlen(s, maxscan);
	if (len == 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: empty string", path);
	if (len > FOTA_IMAGE_NAME_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s: longer than %d bytes", path,
				      FOTA_IMAGE_NAME_MAX);
	for (size_t i = 0; i < len; i++) {
		if (!image_name_char(s[i]))
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: %s: byte %zu is not one of [a-z0-9_-]", path, i);
	}
	return FOTA_OK;
}

/*
 * Install message: 1..FOTA_MESSAGE_MAX bytes of well-formed UTF-8 (no overlong forms,
 * no surrogates, at most U+10FFFF) without control characters (C0, DEL, C1) except LF.
 */
static fota_status check_message(const char *s, const char *path, struct fota_error *err)
{
	size_t len = strnlen(s, FOTA_MESSAGE_MAX + 1);
	if (len == 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: empty string", path);
	if (len > FOTA_MESSAGE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s: longer than %d bytes", path,
				      FOTA_MESSAGE_MAX);
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		unsigned c = p[i];
		uint32_t cp;
		size_t n;
		if (c < 0x80) {
			cp = c;
			n = 1;
		} else if (c >= 0xc2 && c <= 0xdf) {
			cp = c & 0x1f;
			n = 2;
		} else if (c >= 0xe0 && c <= 0xef) {
			cp = c & 0x0f;
			n = 3;
		} else if (c >= 0xf0 && c <= 0xf4) {
			cp = c & 0x07;
			n = 4;
		} else {
			goto bad_utf8;
		}
		if (n > len - i)
			goto bad_utf8;
		for (size_t k = 1; k < n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				goto bad_utf8;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			goto bad_utf8;
		if ((cp < 0x20 && cp != '\n') || (cp >= 0x7f && cp <= 0x9f))
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: %s: control character U+%04X at byte %zu", path,
					      (unsigned)cp, i);
		i += n;
		continue;
bad_utf8:
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: invalid UTF-8 at byte %zu",
				      path, i);
	}
	return FOTA_OK;
}

/* ---- validate ---- */

struct span {
	uint64_t off, size;
	size_t index;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	if (x->index != y->index)
		return x->index < y->index ? -1 : 1;
	return 0;
}

/* Chunks of one image tile [0, target_size) exactly, in any order. */
static fota_status check_tiling(const struct fota_image *im, size_t ii, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	if (im->n_chunks == 0)
		return FOTA_OK;
	struct span *s = calloc(im->n_chunks, sizeof(*s));
	if (!s)
		return fota_error_set(err, FOTA_E_NOMEM, "manifest: images[%zu]: out of memory", ii);
	for (size_t c = 0; c < im->n_chunks; c++) {
		s[c].off = im->chunks[c].target_offset;
		s[c].size = im->chunks[c].target_size;
		s[c].index = c;
	}
	qsort(s, im->n_chunks, sizeof(*s), span_cmp);
	uint64_t pos = 0;
	for (size_t k = 0; k < im->n_chunks; k++) {
		/* sizes are already checked to be >= 1 and <= target_size's limits */
		if (s[k].off > pos) {
			rc = fota_error_set(err, FOTA_E_MANIFEST,
					    "manifest: images[%zu]: target bytes [%llu, %llu) are not covered by any chunk",
					    ii, (unsigned long long)pos, (unsigned long long)s[k].off);
			goto out;
		}
		if (s[k].off < pos) {
			rc = fota_error_set(err, FOTA_E_MANIFEST,
					    "manifest: images[%zu].chunks[%zu]: target_offset %llu overlaps chunks[%zu]",
					    ii, s[k].index, (unsigned long long)s[k].off, s[k - 1].index);
			goto out;
		}
		if (s[k].size > im->target_size || s[k].off > im->target_size - s[k].size) {
			rc = fota_error_set(err, FOTA_E_MANIFEST,
					    "manifest: images[%zu].chunks[%zu]: target range [%llu, +%llu) ends beyond target.size %llu",
					    ii, s[k].index, (unsigned long long)s[k].off,
					    (unsigned long long)s[k].size, (unsigned long long)im->target_size);
			goto out;
		}
		pos = s[k].off + s[k].size;
		if (s[k].size < FOTA_CHUNK_SIZE_MIN && pos != im->target_size) {
			rc = fota_error_set(err, FOTA_E_LIMIT,
					    "manifest: images[%zu].chunks[%zu].target_size: %llu is below %u and the chunk is not the last of its image",
					    ii, s[k].index, (unsigned long long)s[k].size, FOTA_CHUNK_SIZE_MIN);
			goto out;
		}
	}
	if (pos != im->target_size)
		rc = fota_error_set(err, FOTA_E_MANIFEST,
				    "manifest: images[%zu]: target bytes [%llu, %llu) are not covered by any chunk",
				    ii, (unsigned long long)pos, (unsigned long long)im->target_size);
out:
	free(s);
	return rc;
}

static fota_status validate_chunk(const struct fota_manifest *m, const struct fota_image *im, size_t ii,
				  size_t ci, struct fota_error *err)
{
	const struct fota_chunk *ch = &im->chunks[ci];
	if (ch->target_size == 0)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].chunks[%zu].target_size: must be at least 1", ii, ci);
	if (ch->target_size > FOTA_CHUNK_SIZE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: images[%zu].chunks[%zu].target_size: %llu exceeds limit %u", ii,
				      ci, (unsigned long long)ch->target_size, FOTA_CHUNK_SIZE_MAX);
	if (ch->target_offset > FOTA_IMAGE_SIZE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: images[%zu].chunks[%zu].target_offset: %llu exceeds limit %llu", ii,
				      ci, (unsigned long long)ch->target_offset, FOTA_IMAGE_SIZE_MAX);
	if (ch->payload_size == 0)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].chunks[%zu].payload_size: must be at least 1", ii, ci);
	if (ch->payload_size > FOTA_PAYLOAD_MAX)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: images[%zu].chunks[%zu].payload_size: %llu exceeds limit %u", ii,
				      ci, (unsigned long long)ch->payload_size, FOTA_PAYLOAD_MAX);
	if (ch->method != FOTA_METHOD_FULL && ch->method != FOTA_METHOD_DELTA)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: images[%zu].chunks[%zu].method: unknown method %d",
				      ii, ci, (int)ch->method);
	if (ch->n_source_reads > FOTA_SOURCE_READS_MAX)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: images[%zu].chunks[%zu].source_reads: %zu ranges, limit %d", ii, ci,
				      ch->n_source_reads, FOTA_SOURCE_READS_MAX);
	if (ch->n_stash > FOTA_STASH_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: images[%zu].chunks[%zu].stash: %zu ranges, limit %d",
				      ii, ci, ch->n_stash, FOTA_STASH_MAX);
	if (ch->n_stash && (m->mode != FOTA_MODE_INPLACE || !im->has_source))
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].chunks[%zu].stash: only for mode \"inplace\" with a source", ii, ci);
	if (ch->n_stash && !ch->stash)
		return fota_error_set(err, FOTA_E_ARG, "manifest: images[%zu].chunks[%zu].stash: NULL", ii, ci);
	for (size_t s = 0; s < ch->n_stash; s++) {
		const struct fota_stash *st = &ch->stash[s];
		if (st->length == 0 || st->source_offset >= im->source_size ||
		    st->length > im->source_size - st->source_offset || st->scratch_offset >= m->scratch_size ||
		    st->length > m->scratch_size - st->scratch_offset)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: images[%zu].chunks[%zu].stash[%zu]: [%llu, +%llu) -> scratch %llu is outside "
					      "source.size %llu or scratch_size %llu (or empty)",
					      ii, ci, s, (unsigned long long)st->source_offset, (unsigned long long)st->length,
					      (unsigned long long)st->scratch_offset, (unsigned long long)im->source_size,
					      (unsigned long long)m->scratch_size);
	}
	if (ch->method == FOTA_METHOD_FULL) {
		if (ch->n_source_reads != 0)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: images[%zu].chunks[%zu].source_reads: must be empty for method \"full\"",
					      ii, ci);
		return FOTA_OK;
	}
	if (!im->has_source)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].chunks[%zu].method: \"delta\" needs images[%zu].source", ii,
				      ci, ii);
	if (ch->n_source_reads && !ch->source_reads)
		return fota_error_set(err, FOTA_E_ARG, "manifest: images[%zu].chunks[%zu].source_reads: NULL", ii, ci);
	for (size_t r = 0; r < ch->n_source_reads; r++) {
		const struct fota_range *rg = &ch->source_reads[r];
		if (rg->length == 0)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: images[%zu].chunks[%zu].source_reads[%zu]: length must be at least 1",
					      ii, ci, r);
		if (rg->scratch) {
			if (m->mode != FOTA_MODE_INPLACE)
				return fota_error_set(err, FOTA_E_MANIFEST,
						      "manifest: images[%zu].chunks[%zu].source_reads[%zu]: scratch reads are only for mode \"inplace\"",
						      ii, ci, r);
			if (rg->offset >= m->scratch_size || rg->length > m->scratch_size - rg->offset)
				return fota_error_set(err, FOTA_E_MANIFEST,
						      "manifest: images[%zu].chunks[%zu].source_reads[%zu]: scratch [%llu, +%llu) is outside scratch_size %llu",
						      ii, ci, r, (unsigned long long)rg->offset, (unsigned long long)rg->length,
						      (unsigned long long)m->scratch_size);
			continue;
		}
		if (rg->offset >= im->source_size || rg->length > im->source_size - rg->offset)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: images[%zu].chunks[%zu].source_reads[%zu]: [%llu, +%llu) is outside source.size %llu",
					      ii, ci, r, (unsigned long long)rg->offset,
					      (unsigned long long)rg->length, (unsigned long long)im->source_size);
	}
	return FOTA_OK;
}

static fota_status validate_image(const struct fota_manifest *m, size_t ii, size_t *total_chunks,
				  struct fota_error *err)
{
	const struct fota_image *im = &m->images[ii];
	char path[PATH_MAX_LEN];
	fota_status rc;
	snprintf(path, sizeof(path), "images[%zu].name", ii);
	if ((rc = check_image_name(im->name, sizeof(im->name), path, err)) != FOTA_OK)
		return rc;
	for (size_t j = 0; j < ii; j++)
		if (strncmp(m->images[j].name, im->name, sizeof(im->name)) == 0)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: images[%zu].name: \"%s\" already used by images[%zu]", ii,
					      im->name, j);
	if (im->has_source && im->source_size > FOTA_IMAGE_SIZE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: images[%zu].source.size: %llu exceeds limit %llu",
				      ii, (unsigned long long)im->source_size, FOTA_IMAGE_SIZE_MAX);
	if (im->target_size > FOTA_IMAGE_SIZE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: images[%zu].target.size: %llu exceeds limit %llu",
				      ii, (unsigned long long)im->target_size, FOTA_IMAGE_SIZE_MAX);
	if (m->mode == FOTA_MODE_INPLACE && !im->has_source)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].source: required when mode is \"inplace\"", ii);
	if (im->target_size == 0 && im->n_chunks != 0)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: images[%zu].chunks: must be empty when target.size is 0", ii);
	if (im->target_size != 0 && im->n_chunks == 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: images[%zu].chunks: must not be empty", ii);
	if (im->n_chunks > FOTA_CHUNKS_MAX || *total_chunks > FOTA_CHUNKS_MAX - im->n_chunks)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: images[%zu].chunks: more than %d chunks in the package", ii,
				      FOTA_CHUNKS_MAX);
	*total_chunks += im->n_chunks;
	if (im->n_chunks && !im->chunks)
		return fota_error_set(err, FOTA_E_ARG, "manifest: images[%zu].chunks: NULL", ii);
	for (size_t c = 0; c < im->n_chunks; c++)
		if ((rc = validate_chunk(m, im, ii, c, err)) != FOTA_OK)
			return rc;
	return check_tiling(im, ii, err);
}

fota_status fota_manifest_validate(const struct fota_manifest *m, struct fota_error *err)
{
	fota_status rc;
	char path[PATH_MAX_LEN];
	if (!m)
		return fota_error_set(err, FOTA_E_ARG, "manifest: NULL");
	if (m->format_version != FOTA_FORMAT_VERSION)
		return fota_error_set(err, FOTA_E_UNSUPPORTED,
				      "manifest: format_version: %u is not supported (this build reads %d)",
				      (unsigned)m->format_version, FOTA_FORMAT_VERSION);
	if ((rc = check_printable(m->name, "package.name", err)) != FOTA_OK ||
	    (rc = check_printable(m->version, "package.version", err)) != FOTA_OK)
		return rc;
	if (m->from_version && (rc = check_printable(m->from_version, "package.from_version", err)) != FOTA_OK)
		return rc;
	if (m->n_models > FOTA_MODELS_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: devices.models: %zu models, limit %d",
				      m->n_models, FOTA_MODELS_MAX);
	if (m->n_models && !m->models)
		return fota_error_set(err, FOTA_E_ARG, "manifest: devices.models: NULL");
	for (size_t i = 0; i < m->n_models; i++) {
		snprintf(path, sizeof(path), "devices.models[%zu]", i);
		if ((rc = check_printable(m->models[i], path, err)) != FOTA_OK)
			return rc;
	}
	if (m->security_version > (uint64_t)INT64_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: devices.security_version: exceeds 2^63-1");
	if (m->expires < 0 || m->expires > FOTA_TIME_MAX)
		return fota_error_set(err, FOTA_E_MANIFEST,
				      "manifest: expires: %lld is outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z",
				      (long long)m->expires);
	if (m->mode != FOTA_MODE_AB && m->mode != FOTA_MODE_INPLACE)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: mode: unknown mode %d", (int)m->mode);
	if (m->scratch_size > FOTA_IMAGE_SIZE_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: scratch_size: %llu exceeds limit %llu",
				      (unsigned long long)m->scratch_size, FOTA_IMAGE_SIZE_MAX);
	if (m->mode == FOTA_MODE_AB && m->scratch_size != 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: scratch_size: must be 0 when mode is \"ab\"");
	if (m->window_log > 27)
		return fota_error_set(err, FOTA_E_LIMIT,
				      "manifest: window_log: %u exceeds limit 27 (a %u-byte window)",
				      (unsigned)m->window_log, FOTA_WINDOW_MAX);
	if (m->window_log < 10)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: window_log: %u is below 10",
				      (unsigned)m->window_log);
	if (m->policy.priority != FOTA_PRIO_LOW && m->policy.priority != FOTA_PRIO_MEDIUM &&
	    m->policy.priority != FOTA_PRIO_HIGH)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: policy.priority: unknown priority %d",
				      (int)m->policy.priority);
	if (m->policy.roaming != FOTA_ROAM_ALLOW && m->policy.roaming != FOTA_ROAM_DENY &&
	    m->policy.roaming != FOTA_ROAM_WIFI_ONLY)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: policy.roaming: unknown value %d",
				      (int)m->policy.roaming);
	if (m->policy.install_message &&
	    (rc = check_message(m->policy.install_message, "policy.install_message", err)) != FOTA_OK)
		return rc;
	if (m->n_images == 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: images: must not be empty");
	if (m->n_images > FOTA_IMAGES_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: images: %zu images, limit %d", m->n_images,
				      FOTA_IMAGES_MAX);
	if (!m->images)
		return fota_error_set(err, FOTA_E_ARG, "manifest: images: NULL");
	size_t total = 0;
	for (size_t i = 0; i < m->n_images; i++)
		if ((rc = validate_image(m, i, &total, err)) != FOTA_OK)
			return rc;
	if (m->mode == FOTA_MODE_INPLACE) {
		/* The in-place order must be safe, and the declared scratch must hold the scheme. */
		uint64_t need = fota_inplace_scratch_needed(m), stash_end = fota_inplace_stash_end(m);
		if (m->scratch_size < need)
			return fota_error_set(err, FOTA_E_MANIFEST, "manifest: scratch_size: %llu, the in-place scheme needs %llu",
					      (unsigned long long)m->scratch_size, (unsigned long long)need);
		for (size_t i = 0; i < m->n_images; i++)
			if (fota_inplace_check(&m->images[i], stash_end, err) != FOTA_OK)
				return fota_error_prefix(err, "manifest: ");
	}
	return FOTA_OK;
}

/* ---- parse ---- */

static void join(char *out, const char *parent, const char *key)
{
	if (parent[0])
		snprintf(out, PATH_MAX_LEN, "%s.%s", parent, key);
	else
		snprintf(out, PATH_MAX_LEN, "%s", key);
}

/* A key from the input, made safe to print: printable ASCII only, at most 40 bytes. */
static void sanitize(const char *key, char out[48])
{
	size_t o = 0;
	for (size_t i = 0; key[i] && o < 40; i++)
		out[o++] = ((unsigned char)key[i] >= 0x20 && (unsigned char)key[i] < 0x7f) ? key[i] : '?';
	out[o] = '\0';
	if (o == 40)
		memcpy(out + o, "...", 4);
}

/* Every key of obj is one of keys[], and every one of keys[] is present. */
static fota_status check_keys(const json_t *obj, const char *path, const char *const *keys, size_t n,
			      struct fota_error *err)
{
	const char *k;
	json_t *v;
	char p[PATH_MAX_LEN];
	json_object_foreach((json_t *)obj, k, v) {
		size_t i;
		for (i = 0; i < n; i++)
			if (strcmp(k, keys[i]) == 0)
				break;
		if (i == n) {
			char safe[48];
			sanitize(k, safe);
			join(p, path, safe);
			return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: unknown key", p);
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!json_object_get(obj, keys[i])) {
			join(p, path, keys[i]);
			return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: missing required key", p);
		}
	}
	return FOTA_OK;
}

static fota_status want_object(const json_t *v, const char *path, struct fota_error *err)
{
	if (!json_is_object(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected an object",
				      path[0] ? path : "(top level)");
	return FOTA_OK;
}

static fota_status uint_value(const json_t *v, const char *path, uint64_t *out, struct fota_error *err)
{
	if (!json_is_integer(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected an unsigned integer", path);
	json_int_t x = json_integer_value(v);
	if (x < 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: negative number %lld", path,
				      (long long)x);
	*out = (uint64_t)x;
	return FOTA_OK;
}

static fota_status get_uint(const json_t *obj, const char *path, const char *key, uint64_t *out,
			    struct fota_error *err)
{
	char p[PATH_MAX_LEN];
	join(p, path, key);
	return uint_value(json_object_get(obj, key), p, out, err);
}

/* A string without embedded NUL; *out is a new copy, or NULL when nullable and null. */
static fota_status string_value(const json_t *v, const char *path, bool nullable, char **out,
				struct fota_error *err)
{
	*out = NULL;
	if (nullable && json_is_null(v))
		return FOTA_OK;
	if (!json_is_string(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected a string%s", path,
				      nullable ? " or null" : "");
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (strlen(s) != len)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: embedded NUL", path);
	if (!(*out = strdup(s)))
		return fota_error_set(err, FOTA_E_NOMEM, "manifest: %s: out of memory", path);
	return FOTA_OK;
}

static fota_status get_string(const json_t *obj, const char *path, const char *key, bool nullable,
			      char **out, struct fota_error *err)
{
	char p[PATH_MAX_LEN];
	join(p, path, key);
	return string_value(json_object_get(obj, key), p, nullable, out, err);
}

static fota_status get_hex(const json_t *obj, const char *path, const char *key, uint8_t out[32],
			   struct fota_error *err)
{
	char p[PATH_MAX_LEN];
	join(p, path, key);
	const json_t *v = json_object_get(obj, key);
	if (!json_is_string(v) || json_string_length(v) != FOTA_SHA256_HEX_LEN ||
	    fota_hex_decode(json_string_value(v), out, FOTA_SHA256_LEN) != 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected 64 lowercase hex digits", p);
	return FOTA_OK;
}

static fota_status get_enum(const json_t *obj, const char *path, const char *key,
			    int (*parse)(const char *), const char *choices, int *out, struct fota_error *err)
{
	char p[PATH_MAX_LEN];
	join(p, path, key);
	const json_t *v = json_object_get(obj, key);
	int x = json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)
			? parse(json_string_value(v))
			: -1;
	if (x < 0)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected one of %s", p, choices);
	*out = x;
	return FOTA_OK;
}

static fota_status get_array(const json_t *obj, const char *path, const char *key, size_t max,
			     const char *what, json_t **out, struct fota_error *err)
{
	char p[PATH_MAX_LEN];
	join(p, path, key);
	json_t *v = json_object_get(obj, key);
	if (!json_is_array(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected an array", p);
	if (json_array_size(v) > max)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s: %zu %s, limit %zu", p, json_array_size(v),
				      what, max);
	*out = v;
	return FOTA_OK;
}

static fota_status parse_package(const json_t *o, struct fota_manifest *m, struct fota_error *err)
{
	static const char *const keys[] = {"name", "version", "from_version"};
	fota_status rc;
	if ((rc = want_object(o, "package", err)) != FOTA_OK ||
	    (rc = check_keys(o, "package", keys, NELEM(keys), err)) != FOTA_OK ||
	    (rc = get_string(o, "package", "name", false, &m->name, err)) != FOTA_OK ||
	    (rc = get_string(o, "package", "version", false, &m->version, err)) != FOTA_OK ||
	    (rc = get_string(o, "package", "from_version", true, &m->from_version, err)) != FOTA_OK)
		return rc;
	return FOTA_OK;
}

static fota_status parse_devices(const json_t *o, struct fota_manifest *m, struct fota_error *err)
{
	static const char *const keys[] = {"models", "security_version"};
	fota_status rc;
	json_t *arr;
	if ((rc = want_object(o, "devices", err)) != FOTA_OK ||
	    (rc = check_keys(o, "devices", keys, NELEM(keys), err)) != FOTA_OK ||
	    (rc = get_array(o, "devices", "models", FOTA_MODELS_MAX, "models", &arr, err)) != FOTA_OK)
		return rc;
	size_t n = json_array_size(arr);
	if (n) {
		if (!(m->models = calloc(n, sizeof(*m->models))))
			return fota_error_set(err, FOTA_E_NOMEM, "manifest: devices.models: out of memory");
		m->n_models = n;
	}
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX_LEN];
		snprintf(p, sizeof(p), "devices.models[%zu]", i);
		if ((rc = string_value(json_array_get(arr, i), p, false, &m->models[i], err)) != FOTA_OK)
			return rc;
	}
	return get_uint(o, "devices", "security_version", &m->security_version, err);
}

static fota_status parse_policy(const json_t *o, struct fota_manifest *m, struct fota_error *err)
{
	static const char *const keys[] = {"priority", "silent", "roaming", "install_message"};
	fota_status rc;
	int x;
	if ((rc = want_object(o, "policy", err)) != FOTA_OK ||
	    (rc = check_keys(o, "policy", keys, NELEM(keys), err)) != FOTA_OK)
		return rc;
	if ((rc = get_enum(o, "policy", "priority", fota_priority_parse, "\"low\", \"medium\", \"high\"", &x,
			   err)) != FOTA_OK)
		return rc;
	m->policy.priority = (enum fota_priority)x;
	const json_t *v = json_object_get(o, "silent");
	if (!json_is_boolean(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: policy.silent: expected true or false");
	m->policy.silent = json_is_true(v);
	if ((rc = get_enum(o, "policy", "roaming", fota_roaming_parse, "\"allow\", \"deny\", \"wifi-only\"", &x,
			   err)) != FOTA_OK)
		return rc;
	m->policy.roaming = (enum fota_roaming)x;
	return get_string(o, "policy", "install_message", true, &m->policy.install_message, err);
}

static fota_status parse_chunk(const json_t *o, struct fota_chunk *ch, const char *path, struct fota_error *err)
{
	static const char *const keys[] = {"target_offset", "target_size", "target_sha256", "method",
					   "payload_size", "payload_sha256", "source_reads"};
	static const char *const keys_stash[] = {"target_offset", "target_size", "target_sha256", "method",
						 "payload_size", "payload_sha256", "source_reads", "stash"};
	bool has_stash = json_object_get(o, "stash") != NULL;
	fota_status rc;
	int x;
	json_t *arr;
	if ((rc = want_object(o, path, err)) != FOTA_OK ||
	    (rc = has_stash ? check_keys(o, path, keys_stash, NELEM(keys_stash), err) : check_keys(o, path, keys, NELEM(keys), err)) != FOTA_OK ||
	    (rc = get_uint(o, path, "target_offset", &ch->target_offset, err)) != FOTA_OK ||
	    (rc = get_uint(o, path, "target_size", &ch->target_size, err)) != FOTA_OK ||
	    (rc = get_hex(o, path, "target_sha256", ch->target_sha256, err)) != FOTA_OK ||
	    (rc = get_enum(o, path, "method", fota_method_parse, "\"full\", \"delta\"", &x, err)) != FOTA_OK)
		return rc;
	ch->method = (enum fota_method)x;
	if ((rc = get_uint(o, path, "payload_size", &ch->payload_size, err)) != FOTA_OK ||
	    (rc = get_hex(o, path, "payload_sha256", ch->payload_sha256, err)) != FOTA_OK ||
	    (rc = get_array(o, path, "source_reads", FOTA_SOURCE_READS_MAX, "ranges", &arr, err)) != FOTA_OK)
		return rc;
	size_t n = json_array_size(arr);
	if (n != 0) {
		if (!(ch->source_reads = calloc(n, sizeof(*ch->source_reads))))
			return fota_error_set(err, FOTA_E_NOMEM, "manifest: %s.source_reads: out of memory", path);
		ch->n_source_reads = n;
	}
	for (size_t r = 0; r < n; r++) {
		char p[PATH_MAX_LEN];
		const json_t *pair = json_array_get(arr, r);
		snprintf(p, sizeof(p), "%s.source_reads[%zu]", path, r);
		size_t len = json_is_array(pair) ? json_array_size(pair) : 0;
		if (len != 2 && len != 3)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: %s: expected an array [offset, length] or [offset, length, \"scratch\"]", p);
		if ((rc = uint_value(json_array_get(pair, 0), p, &ch->source_reads[r].offset, err)) != FOTA_OK ||
		    (rc = uint_value(json_array_get(pair, 1), p, &ch->source_reads[r].length, err)) != FOTA_OK)
			return rc;
		if (len == 3) {
			const json_t *area = json_array_get(pair, 2);
			if (!json_is_string(area) || strcmp(json_string_value(area), "scratch") != 0)
				return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s[2]: expected \"scratch\"", p);
			ch->source_reads[r].scratch = true;
		}
	}
	if (!has_stash)
		return FOTA_OK;
	if ((rc = get_array(o, path, "stash", FOTA_STASH_MAX, "ranges", &arr, err)) != FOTA_OK)
		return rc;
	n = json_array_size(arr);
	if (n == 0) /* canonical form: an empty stash is omitted */
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s.stash: must be omitted when empty", path);
	if (!(ch->stash = calloc(n, sizeof(*ch->stash))))
		return fota_error_set(err, FOTA_E_NOMEM, "manifest: %s.stash: out of memory", path);
	ch->n_stash = n;
	for (size_t r = 0; r < n; r++) {
		char p[PATH_MAX_LEN];
		const json_t *t = json_array_get(arr, r);
		snprintf(p, sizeof(p), "%s.stash[%zu]", path, r);
		if (!json_is_array(t) || json_array_size(t) != 3)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: %s: expected an array [source_offset, length, scratch_offset]", p);
		if ((rc = uint_value(json_array_get(t, 0), p, &ch->stash[r].source_offset, err)) != FOTA_OK ||
		    (rc = uint_value(json_array_get(t, 1), p, &ch->stash[r].length, err)) != FOTA_OK ||
		    (rc = uint_value(json_array_get(t, 2), p, &ch->stash[r].scratch_offset, err)) != FOTA_OK)
			return rc;
	}
	return FOTA_OK;
}

static fota_status parse_image(const json_t *o, struct fota_image *im, size_t ii, size_t *total,
			       struct fota_error *err)
{
	static const char *const keys[] = {"name", "source", "target", "chunks"};
	static const char *const sz_keys[] = {"size", "sha256"};
	char path[PATH_MAX_LEN], p[PATH_MAX_LEN];
	fota_status rc;
	json_t *arr;
	snprintf(path, sizeof(path), "images[%zu]", ii);
	if ((rc = want_object(o, path, err)) != FOTA_OK || (rc = check_keys(o, path, keys, NELEM(keys), err)) != FOTA_OK)
		return rc;

	join(p, path, "name");
	const json_t *v = json_object_get(o, "name");
	if (!json_is_string(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected a string", p);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: embedded NUL", p);
	if ((rc = check_image_name(json_string_value(v), FOTA_IMAGE_NAME_MAX + 1, p, err)) != FOTA_OK)
		return rc;
	memcpy(im->name, json_string_value(v), json_string_length(v) + 1);

	join(p, path, "source");
	v = json_object_get(o, "source");
	if (!json_is_null(v)) {
		if (!json_is_object(v))
			return fota_error_set(err, FOTA_E_MANIFEST, "manifest: %s: expected an object or null", p);
		if ((rc = check_keys(v, p, sz_keys, NELEM(sz_keys), err)) != FOTA_OK ||
		    (rc = get_uint(v, p, "size", &im->source_size, err)) != FOTA_OK ||
		    (rc = get_hex(v, p, "sha256", im->source_sha256, err)) != FOTA_OK)
			return rc;
		im->has_source = true;
	}

	join(p, path, "target");
	v = json_object_get(o, "target");
	if ((rc = want_object(v, p, err)) != FOTA_OK || (rc = check_keys(v, p, sz_keys, NELEM(sz_keys), err)) != FOTA_OK ||
	    (rc = get_uint(v, p, "size", &im->target_size, err)) != FOTA_OK ||
	    (rc = get_hex(v, p, "sha256", im->target_sha256, err)) != FOTA_OK)
		return rc;

	if ((rc = get_array(o, path, "chunks", FOTA_CHUNKS_MAX, "chunks", &arr, err)) != FOTA_OK)
		return rc;
	size_t n = json_array_size(arr);
	if (n > FOTA_CHUNKS_MAX - *total)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s.chunks: more than %d chunks in the package",
				      path, FOTA_CHUNKS_MAX);
	*total += n;
	if (n == 0)
		return FOTA_OK;
	if (!(im->chunks = calloc(n, sizeof(*im->chunks))))
		return fota_error_set(err, FOTA_E_NOMEM, "manifest: %s.chunks: out of memory", path);
	im->n_chunks = n;
	for (size_t c = 0; c < n; c++) {
		snprintf(p, sizeof(p), "%s.chunks[%zu]", path, c);
		if ((rc = parse_chunk(json_array_get(arr, c), &im->chunks[c], p, err)) != FOTA_OK)
			return rc;
	}
	return FOTA_OK;
}

static fota_status parse_root(const json_t *root, struct fota_manifest *m, struct fota_error *err)
{
	static const char *const keys[] = {"format_version", "package", "devices", "expires", "mode",
					   "scratch_size", "window_log", "policy", "images"};
	fota_status rc;
	uint64_t u;
	int x;
	if ((rc = want_object(root, "", err)) != FOTA_OK)
		return rc;
	/* The version decides the schema, so it is judged before any other key. */
	const json_t *fv = json_object_get(root, "format_version");
	if (!fv)
		return fota_error_set(err, FOTA_E_MANIFEST, "manifest: format_version: missing required key");
	if ((rc = uint_value(fv, "format_version", &u, err)) != FOTA_OK)
		return rc;
	if (u != FOTA_FORMAT_VERSION)
		return fota_error_set(err, FOTA_E_UNSUPPORTED,
				      "manifest: format_version: %llu is not supported (this build reads %d)",
				      (unsigned long long)u, FOTA_FORMAT_VERSION);
	m->format_version = FOTA_FORMAT_VERSION;
	if ((rc = check_keys(root, "", keys, NELEM(keys), err)) != FOTA_OK ||
	    (rc = parse_package(json_object_get(root, "package"), m, err)) != FOTA_OK ||
	    (rc = parse_devices(json_object_get(root, "devices"), m, err)) != FOTA_OK)
		return rc;

	const json_t *v = json_object_get(root, "expires");
	if (!json_is_null(v)) {
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
		    fota_time_parse(json_string_value(v), &m->expires) != 0)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: expires: expected null or a time \"YYYY-MM-DDTHH:MM:SSZ\"");
		if (m->expires == 0)
			return fota_error_set(err, FOTA_E_MANIFEST,
					      "manifest: expires: 1970-01-01T00:00:00Z means \"never\"; write null");
	}
	if ((rc = get_enum(root, "", "mode", fota_mode_parse, "\"ab\", \"inplace\"", &x, err)) != FOTA_OK)
		return rc;
	m->mode = (enum fota_mode)x;
	if ((rc = get_uint(root, "", "scratch_size", &m->scratch_size, err)) != FOTA_OK ||
	    (rc = get_uint(root, "", "window_log", &u, err)) != FOTA_OK)
		return rc;
	if (u > 27)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: window_log: %llu exceeds limit 27",
				      (unsigned long long)u);
	m->window_log = (uint32_t)u;
	if ((rc = parse_policy(json_object_get(root, "policy"), m, err)) != FOTA_OK)
		return rc;

	json_t *arr;
	if ((rc = get_array(root, "", "images", FOTA_IMAGES_MAX, "images", &arr, err)) != FOTA_OK)
		return rc;
	size_t n = json_array_size(arr), total = 0;
	if (n) {
		if (!(m->images = calloc(n, sizeof(*m->images))))
			return fota_error_set(err, FOTA_E_NOMEM, "manifest: images: out of memory");
		m->n_images = n;
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = parse_image(json_array_get(arr, i), &m->images[i], i, &total, err)) != FOTA_OK)
			return rc;
	return FOTA_OK;
}

/*
 * The parse budget (FOTA_MANIFEST_PARSE_MAX). jansson takes one process-wide allocator;
 * ours is malloc/free that, while this thread parses a manifest, adds up the usable size
 * of what jansson holds and fails an allocation that would pass the budget (jansson then
 * fails the parse). It is installed once, and only over jansson's defaults: a program
 * that set its own allocator keeps it and parses without a budget. Blocks allocated
 * before the install are plain malloc blocks, which budget_free frees like any other.
 */
static _Thread_local struct parse_budget {
	bool on, over;
	size_t used;
} budget;
static bool budget_installed;
static pthread_once_t budget_once = PTHREAD_ONCE_INIT;

static void *budget_malloc(size_t n)
{
	void *p = malloc(n);
	if (p && budget.on) {
		size_t u = malloc_usable_size(p);
		if (u > FOTA_MANIFEST_PARSE_MAX - budget.used) {
			free(p);
			budget.over = true;
			return NULL;
		}
		budget.used += u;
	}
	return p;
}

static void budget_free(void *p)
{
	if (p && budget.on) {
		size_t u = malloc_usable_size(p);
		budget.used = u < budget.used ? budget.used - u : 0;
	}
	free(p);
}

static void budget_install(void)
{
	json_malloc_t m = NULL;
	json_free_t f = NULL;
	json_get_alloc_funcs(&m, &f);
	if (m == malloc && f == free) {
		json_set_alloc_funcs(budget_malloc, budget_free);
		budget_installed = true;
	}
}

/* json_loadb under the budget: NULL with *over set when the budget ran out. */
static json_t *load_budgeted(const char *text, size_t len, json_error_t *jerr, bool *over)
{
	pthread_once(&budget_once, budget_install);
	budget = (struct parse_budget){ .on = budget_installed };
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, jerr);
	*over = budget.over;
	budget.on = false;
	if (*over) { /* jansson may hand back a tree despite a failed allocation on the way */
		json_decref(root);
		root = NULL;
	}
	return root;
}

static fota_status parse_limit_error(struct fota_error *err, const char *what)
{
	return fota_error_set(err, FOTA_E_LIMIT, "manifest: %s needs more than %u MiB of JSON tree (FOTA_MANIFEST_PARSE_MAX)",
			      what, FOTA_MANIFEST_PARSE_MAX >> 20);
}

fota_status fota_manifest_parse(const uint8_t *buf, size_t len, struct fota_manifest **out,
				struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	json_t *root = NULL;
	struct fota_manifest *m = NULL;
	json_error_t jerr;
	if (!out)
		return fota_error_set(err, FOTA_E_ARG, "manifest: no output pointer");
	*out = NULL;
	if (!buf && len)
		return fota_error_set(err, FOTA_E_ARG, "manifest: NULL buffer");
	if (len > FOTA_MANIFEST_MAX)
		return fota_error_set(err, FOTA_E_LIMIT, "manifest: %zu bytes, limit %u", len, FOTA_MANIFEST_MAX);
	bool over = false;
	root = load_budgeted((const char *)(buf ? buf : (const uint8_t *)""), len, &jerr, &over);
	if (over) {
		rc = parse_limit_error(err, "parsing");
		goto out;
	}
	if (!root) {
		rc = fota_error_set(err, FOTA_E_MANIFEST, "manifest: invalid JSON at line %d column %d: %s",
				    jerr.line, jerr.column, jerr.text);
		goto out;
	}
	if (!(m = calloc(1, sizeof(*m)))) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "manifest: out of memory");
		goto out;
	}
	if ((rc = parse_root(root, m, err)) != FOTA_OK || (rc = fota_manifest_validate(m, err)) != FOTA_OK)
		goto out;
	*out = m;
	m = NULL;
out:
	fota_manifest_free(m);
	json_decref(root);
	return rc;
}

/* ---- serialise ---- */

/* Building helpers: each takes ownership of v and records failure in *ok. */
static void put(json_t *obj, const char *key, json_t *v, bool *ok)
{
	if (!obj || !v || json_object_set_new(obj, key, v) != 0) {
		if (obj && v)
			json_decref(v);
		*ok = false;
	}
}

static void push(json_t *arr, json_t *v, bool *ok)
{
	if (!arr || !v || json_array_append_new(arr, v) != 0) {
		if (arr && v)
			json_decref(v);
		*ok = false;
	}
}

static json_t *jint(uint64_t v)
{
	return json_integer((json_int_t)v); /* validate() keeps every value <= INT64_MAX */
}

static json_t *jhex(const uint8_t d[FOTA_SHA256_LEN])
{
	char hex[FOTA_SHA256_HEX_LEN + 1];
	fota_hex_encode(d, FOTA_SHA256_LEN, hex);
	return json_string(hex);
}

static json_t *jstr_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *build_size_hash(uint64_t size, const uint8_t d[FOTA_SHA256_LEN], bool *ok)
{
	json_t *o = json_object();
	put(o, "size", jint(size), ok);
	put(o, "sha256", jhex(d), ok);
	if (!o)
		*ok = false;
	return o;
}

static json_t *build_chunk(const struct fota_chunk *ch, bool *ok)
{
	json_t *o = json_object();
	put(o, "target_offset", jint(ch->target_offset), ok);
	put(o, "target_size", jint(ch->target_size), ok);
	put(o, "target_sha256", jhex(ch->target_sha256), ok);
	put(o, "method", json_string(fota_method_name(ch->method)), ok);
	put(o, "payload_size", jint(ch->payload_size), ok);
	put(o, "payload_sha256", jhex(ch->payload_sha256), ok);
	json_t *reads = json_array();
	for (size_t r = 0; r < ch->n_source_reads && *ok; r++) {
		json_t *pair = json_array();
		push(pair, jint(ch->source_reads[r].offset), ok);
		push(pair, jint(ch->source_reads[r].length), ok);
		if (ch->source_reads[r].scratch)
			push(pair, json_string("scratch"), ok);
		push(reads, pair, ok);
	}
	put(o, "source_reads", reads, ok);
	if (ch->n_stash) {
		json_t *st = json_array();
		for (size_t r = 0; r < ch->n_stash && *ok; r++) {
			json_t *t = json_array();
			push(t, jint(ch->stash[r].source_offset), ok);
			push(t, jint(ch->stash[r].length), ok);
			push(t, jint(ch->stash[r].scratch_offset), ok);
			push(st, t, ok);
		}
		put(o, "stash", st, ok);
	}
	if (!o)
		*ok = false;
	return o;
}

static json_t *build_image(const struct fota_image *im, bool *ok)
{
	json_t *o = json_object();
	put(o, "name", json_string(im->name), ok);
	put(o, "source", im->has_source ? build_size_hash(im->source_size, im->source_sha256, ok) : json_null(), ok);
	put(o, "target", build_size_hash(im->target_size, im->target_sha256, ok), ok);
	json_t *chunks = json_array();
	for (size_t c = 0; c < im->n_chunks && *ok; c++)
		push(chunks, build_chunk(&im->chunks[c], ok), ok);
	put(o, "chunks", chunks, ok);
	if (!o)
		*ok = false;
	return o;
}

static json_t *build_root(const struct fota_manifest *m, bool *ok)
{
	json_t *root = json_object();
	put(root, "format_version", json_integer(m->format_version), ok);

	json_t *pkg = json_object();
	put(pkg, "name", json_string(m->name), ok);
	put(pkg, "version", json_string(m->version), ok);
	put(pkg, "from_version", jstr_or_null(m->from_version), ok);
	put(root, "package", pkg, ok);

	json_t *dev = json_object();
	json_t *models = json_array();
	for (size_t i = 0; i < m->n_models && *ok; i++)
		push(models, json_string(m->models[i]), ok);
	put(dev, "models", models, ok);
	put(dev, "security_version", jint(m->security_version), ok);
	put(root, "devices", dev, ok);

	if (m->expires) {
		char t[21];
		fota_time_format(m->expires, t);
		put(root, "expires", json_string(t), ok);
	} else {
		put(root, "expires", json_null(), ok);
	}
	put(root, "mode", json_string(fota_mode_name(m->mode)), ok);
	put(root, "scratch_size", jint(m->scratch_size), ok);
	put(root, "window_log", json_integer(m->window_log), ok);

	json_t *pol = json_object();
	put(pol, "priority", json_string(fota_priority_name(m->policy.priority)), ok);
	put(pol, "silent", json_boolean(m->policy.silent), ok);
	put(pol, "roaming", json_string(fota_roaming_name(m->policy.roaming)), ok);
	put(pol, "install_message", jstr_or_null(m->policy.install_message), ok);
	put(root, "policy", pol, ok);

	json_t *imgs = json_array();
	for (size_t i = 0; i < m->n_images && *ok; i++)
		push(imgs, build_image(&m->images[i], ok), ok);
	put(root, "images", imgs, ok);
	if (!root)
		*ok = false;
	return root;
}

fota_status fota_manifest_serialize(const struct fota_manifest *m, char **out, size_t *len,
				    struct fota_error *err)
{
	fota_status rc;
	json_t *root = NULL;
	char *text = NULL;
	if (!out || !len)
		return fota_error_set(err, FOTA_E_ARG, "manifest: no output pointer");
	*out = NULL;
	*len = 0;
	if ((rc = fota_manifest_validate(m, err)) != FOTA_OK)
		return rc;
	bool ok = true;
	root = build_root(m, &ok);
	if (!ok) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "manifest: out of memory building JSON");
		goto out;
	}
	text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "manifest: out of memory serialising JSON");
		goto out;
	}
	size_t n = strlen(text);
	if (n + 1 > FOTA_MANIFEST_MAX) {
		rc = fota_error_set(err, FOTA_E_LIMIT, "manifest: serialises to %zu bytes, limit %u", n + 1,
				    FOTA_MANIFEST_MAX);
		goto out;
	}
	/* a reader must be able to parse it: the same budget */
	json_error_t jerr;
	bool over = false;
	json_t *back = load_budgeted(text, n, &jerr, &over);
	json_decref(back);
	if (over) {
		rc = parse_limit_error(err, "the serialised manifest");
		goto out;
	}
	if (!back) {
		rc = fota_error_set(err, FOTA_E_INTERNAL, "manifest: serialised JSON does not parse: %s", jerr.text);
		goto out;
	}
	char *grown = realloc(text, n + 2);
	if (!grown) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "manifest: out of memory serialising JSON");
		goto out;
	}
	text = grown;
	text[n] = '\n';
	text[n + 1] = '\0';
	*out = text;
	*len = n + 1;
	text = NULL;
out:
	free(text);
	json_decref(root);
	return rc;
}
