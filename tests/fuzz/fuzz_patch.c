/*
 * fuzz_patch.c: libFuzzer harness for the patch interpreters. The input is a patch of
 * either format (fota delta or BSDIFF40, told apart by fota_delta_detect) applied by
 * fota_delta_apply against a fixed, generated 16 KiB source through in-memory
 * callbacks. It aborts (a finding) when apply
 *   - reads the patch or the source outside their bounds (the io contract in delta.h),
 *   - writes more than a BSDIFF40 header promised, or succeeds with another size,
 *   - succeeds reporting a *target_size different from the bytes it wrote,
 *   - succeeds on an input neither format recognises, or fails without a message.
 * Output is capped at 1 MiB (a write past it fails with FOTA_E_IO) to keep runs fast.
 *
 * Seeds in tests/fuzz/corpus/patch/: small valid patches against fuzz_source() made
 * with Debian bsdiff and with fota-delta (both formats) from edited copies of it.
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined); make check replays
 * the corpus through tests/fuzz/replay_main.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fota/delta.h"

#define SRC_LEN (16u << 10)
#define OUT_CAP (1u << 20)

/* The fixed source: xorshift bytes with a text record every 1 KiB. */
static const uint8_t *fuzz_source(void)
{
	static uint8_t src[SRC_LEN];
	static int ready;
	if (!ready) {
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < SRC_LEN; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			src[i] = (uint8_t)(x >> 24);
		}
		static const char rec[] = "fota fuzz source record, version 1.0.0\n";
		for (size_t i = 0; i + sizeof(rec) <= SRC_LEN; i += 1024)
			memcpy(src + i, rec, sizeof(rec) - 1);
		ready = 1;
	}
	return src;
}

struct fuzz_io {
	const uint8_t *patch;
	size_t patch_len;
	uint64_t written;
	uint64_t promised;  /* BSDIFF40 header new size; UINT64_MAX when unknown */
};

static fota_status f_read_patch(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	struct fuzz_io *f = ctx;
	if (off > f->patch_len || len > f->patch_len - off)
		abort(); /* apply broke the io contract */
	memcpy(buf, f->patch + off, len);
	(void)err;
	return FOTA_OK;
}

static fota_status f_read_source(void *ctx, uint64_t off, void *buf, size_t len, struct fota_error *err)
{
	(void)ctx;
	(void)err;
	if (off > SRC_LEN || len > SRC_LEN - off)
		abort();
	memcpy(buf, fuzz_source() + off, len);
	return FOTA_OK;
}

static fota_status f_write(void *ctx, const void *buf, size_t len, struct fota_error *err)
{
	struct fuzz_io *f = ctx;
	(void)buf;
	if (len > f->promised - f->written)
		abort(); /* more than the header promised */
	if (len > OUT_CAP - f->written)
		return fota_error_set(err, FOTA_E_IO, "fuzz: output cap of %u bytes reached", OUT_CAP);
	f->written += len;
	return FOTA_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_io f = {data, size, 0, UINT64_MAX};
	int fmt = size >= 8 ? fota_delta_detect(data, size) : -1;
	if (fmt == FOTA_DELTA_FMT_BSDIFF40) {
		if (size < 8 || memcmp(data, "BSDIFF40", 8) != 0)
			abort();
		if (size >= 32) {
			uint64_t v = 0;
			for (int i = 7; i >= 0; i--)
				v = (v << 8) | data[24 + i];
			if (!(v >> 63))
				f.promised = v;
		}
	}
	struct fota_delta_io io = {&f, size, f_read_patch, f_read_source, f_write};
	struct fota_error err = { 0 };
	uint64_t tsize = UINT64_MAX;
	fota_status st = fota_delta_apply(&io, SRC_LEN, FOTA_DELTA_MEM_DEFAULT, &tsize, &err);
	if (st == FOTA_OK) {
		if (tsize != f.written)
			abort(); /* reported size differs from what was written */
		if (fmt < 0)
			abort(); /* applied something no format recognised */
		if (fmt == FOTA_DELTA_FMT_BSDIFF40 && f.written != f.promised)
			abort();
	} else if (err.code != st || err.msg[0] == '\0') {
		abort(); /* a failure must say what failed */
	}
	return 0;
}
