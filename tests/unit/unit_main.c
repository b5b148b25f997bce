/*
 * unit_main.c: runs every registered CUnit suite and ends with a line
 * "unit: N passed, N failed" that tests/run.sh adds to the overall summary.
 * Usage: unit-tests [SUITE-SUBSTRING]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <ftw.h>

#include <CUnit/Basic.h>

#include "unit.h"

#define MAX_SUITES 64
static struct {
	const char *name;
	unit_add_fn fn;
} suites[MAX_SUITES];
static size_t n_suites;
static char tmpdir[256];

void unit_register(const char *name, unit_add_fn fn)
{
	if (n_suites < MAX_SUITES) {
		suites[n_suites].name = name;
		suites[n_suites].fn = fn;
		n_suites++;
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void cleanup_tmpdir(void)
{
	if (tmpdir[0] && !getenv("UNIT_KEEP_TMP"))
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *unit_tmpdir(void)
{
	if (!tmpdir[0]) {
		const char *base = getenv("TMPDIR");
		snprintf(tmpdir, sizeof(tmpdir), "%s/fota-unit-XXXXXX", base ? base : "/tmp");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(2);
		}
		atexit(cleanup_tmpdir);
	}
	return tmpdir;
}

char *unit_write_file(const char *name, const void *data, size_t len)
{
	size_t n = strlen(unit_tmpdir()) + strlen(name) + 2;
	char *path = malloc(n);
	if (!path)
		return NULL;
	snprintf(path, n, "%s/%s", unit_tmpdir(), name);
	FILE *f = fopen(path, "wb");
	if (!f || (len && fwrite(data, 1, len, f) != len)) {
		if (f)
			fclose(f);
		free(path);
		return NULL;
	}
	fclose(f);
	return path;
}

uint8_t *unit_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		uint8_t *nb = realloc(buf, cap * 2);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	fclose(f);
	if (buf)
		*len = n;
	return buf;
}

void unit_fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed ? seed : 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)(x >> 24);
	}
}

int main(int argc, char **argv)
{
	const char *filter = argc > 1 ? argv[1] : NULL;
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (size_t i = 0; i < n_suites; i++) {
		if (filter && !strstr(suites[i].name, filter))
			continue;
		CU_pSuite s = CU_add_suite(suites[i].name, NULL, NULL);
		if (!s)
			return 2;
		suites[i].fn(s);
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned run = CU_get_number_of_tests_run();
	unsigned failed = CU_get_number_of_tests_failed();
	unsigned asserts_failed = CU_get_number_of_failures();
	printf("\nunit: %u passed, %u failed\n", run - failed, failed);
	CU_cleanup_registry();
	return (failed || asserts_failed) ? 1 : 0;
}
