/*
 * fuzz_manifest.c: libFuzzer harness for the manifest parser (formats/manifest.c).
 *
 * Any input may be refused, but never crash, leak or read out of bounds. An input that
 * parses must serialise, the serialisation must parse again, and serialising that must
 * give the same bytes: the writer accepts everything the reader accepts and canonical
 * form is a fixed point. A broken property aborts, so libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fota/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const struct fota_error *e)
{
	fprintf(stderr, "fuzz_manifest: %s: %s\n", what, e->msg);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fota_manifest *m = NULL, *m2 = NULL;
	struct fota_error e = {0};
	char *a = NULL, *b = NULL;
	size_t la = 0, lb = 0;

	fota_status rc = fota_manifest_parse(data, size, &m, &e);
	if (rc != FOTA_OK) {
		if (m)
			fail("error with a manifest returned", &e);
		if (e.code != rc || e.msg[0] == '\0')
			fail("error without a message", &e);
		return 0;
	}
	if (fota_manifest_validate(m, &e) != FOTA_OK)
		fail("parsed manifest does not validate", &e);
	if (fota_manifest_serialize(m, &a, &la, &e) != FOTA_OK)
		fail("serialize after parse", &e);
	if (strlen(a) != la || la == 0 || a[la - 1] != '\n')
		fail("serialisation is not one NUL-free line", &e);
	if (fota_manifest_parse((const uint8_t *)a, la, &m2, &e) != FOTA_OK)
		fail("reparse of serialisation", &e);
	if (fota_manifest_chunk_count(m) != fota_manifest_chunk_count(m2) ||
	    fota_manifest_payload_total(m) != fota_manifest_payload_total(m2))
		fail("reparse changed the chunks", &e);
	if (fota_manifest_serialize(m2, &b, &lb, &e) != FOTA_OK)
		fail("second serialize", &e);
	if (la != lb || memcmp(a, b, la) != 0)
		fail("serialisation is not a fixed point", &e);

	free(a);
	free(b);
	fota_manifest_free(m);
	fota_manifest_free(m2);
	return 0;
}
