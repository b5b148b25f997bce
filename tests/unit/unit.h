/*
 * unit.h: glue for the CUnit unit-test binary. Each tests/unit/test_<module>.c adds its
 * suite with UNIT_SUITE("formats/<module>", add_fn); add_fn adds the cases to the suite
 * it is given. The runner (unit_main.c) collects suites through constructors so that
 * adding a test file needs no edit elsewhere.
 */
#ifndef FOTA_TEST_UNIT_H
#define FOTA_TEST_UNIT_H

#include <stddef.h>
#include <stdint.h>
#include <CUnit/CUnit.h>

typedef void (*unit_add_fn)(CU_pSuite suite);
void unit_register(const char *name, unit_add_fn fn);

#define UNIT_SUITE(name, fn)                                                   \
	static void __attribute__((constructor)) unit_reg_##fn(void) { unit_register(name, fn); }

#define UNIT_ADD(suite, fn) CU_add_test((suite), #fn, (fn))

/* A fresh empty directory for this process, created on first use and removed at exit. */
const char *unit_tmpdir(void);
/* Write len bytes to a new file tmpdir/name; returns its malloc'd path. */
char *unit_write_file(const char *name, const void *data, size_t len);
/* Read a whole file (malloc'd, *len set); NULL when it cannot be read. */
uint8_t *unit_read_file(const char *path, size_t *len);
/* Deterministic pseudo-random bytes (xorshift) for generated fixtures. */
void unit_fill_random(uint8_t *buf, size_t len, uint64_t seed);

#endif
