/* Suite formats/hash: SHA-256 known answers and hex round trips. */
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "fota/hash.h"

static void test_hash_known_answer(void)
{
	uint8_t d[32];
	char hex[65];
	fota_sha256("abc", 3, d);
	fota_hex_encode(d, 32, hex);
	CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	fota_sha256("", 0, d);
	fota_hex_encode(d, 32, hex);
	CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_hash_streaming_matches_oneshot(void)
{
	uint8_t buf[10000], a[32], b[32];
	unit_fill_random(buf, sizeof(buf), 7);
	fota_sha256(buf, sizeof(buf), a);
	struct fota_sha256 *c = fota_sha256_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	for (size_t off = 0; off < sizeof(buf); off += 333)
		fota_sha256_update(c, buf + off, sizeof(buf) - off < 333 ? sizeof(buf) - off : 333);
	fota_sha256_final(c, b);
	fota_sha256_free(c);
	CU_ASSERT_EQUAL(memcmp(a, b, 32), 0);
}

static void test_hash_file_and_limit(void)
{
	uint8_t buf[5000], a[32], b[32];
	uint64_t n = 0;
	unit_fill_random(buf, sizeof(buf), 3);
	char *p = unit_write_file("hash.bin", buf, sizeof(buf));
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct fota_error e;
	CU_ASSERT_EQUAL(fota_sha256_file(p, UINT64_MAX, a, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL(n, sizeof(buf));
	fota_sha256(buf, sizeof(buf), b);
	CU_ASSERT_EQUAL(memcmp(a, b, 32), 0);
	CU_ASSERT_EQUAL(fota_sha256_file(p, 100, a, &n, &e), FOTA_OK);
	CU_ASSERT_EQUAL(n, 100);
	fota_sha256(buf, 100, b);
	CU_ASSERT_EQUAL(memcmp(a, b, 32), 0);
	CU_ASSERT_EQUAL(fota_sha256_file("/nonexistent/x", UINT64_MAX, a, &n, &e), FOTA_E_IO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/x"));
	free(p);
}

static void test_hash_hex_decode_strict(void)
{
	uint8_t b[2];
	CU_ASSERT_EQUAL(fota_hex_decode("0aff", b, 2), 0);
	CU_ASSERT_EQUAL(b[0], 0x0a);
	CU_ASSERT_EQUAL(b[1], 0xff);
	CU_ASSERT_EQUAL(fota_hex_decode("0AFF", b, 2), -1); /* uppercase is not canonical */
	CU_ASSERT_EQUAL(fota_hex_decode("0af", b, 2), -1);
	CU_ASSERT_EQUAL(fota_hex_decode("0affe0", b, 2), -1);
	CU_ASSERT_EQUAL(fota_hex_decode("0ag0", b, 2), -1);
}

static void add(CU_pSuite s)
{
	UNIT_ADD(s, test_hash_known_answer);
	UNIT_ADD(s, test_hash_streaming_matches_oneshot);
	UNIT_ADD(s, test_hash_file_and_limit);
	UNIT_ADD(s, test_hash_hex_decode_strict);
}
UNIT_SUITE("formats/hash", add)
