/*
 * fuzz_container.c: libFuzzer harness for the package container reader (container.c).
 * The input is a whole package file. The harness reads the head members with their
 * size caps, then (skipping the signature check, so the fuzzer can reach further) parses
 * the manifest and reads every payload member it names, at the offsets it implies, and
 * the end of the archive. Nothing may crash, leak or read out of bounds; a reader that
 * accepts a package must have consumed it exactly.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fota/container.h"
#include "fota/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("pkg", 0);
	if (fd < 0)
		return 0;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct fota_pkg_reader *r = NULL;
	struct fota_manifest *m = NULL;
	uint8_t *mj = NULL, *sig = NULL, *buf = NULL;
	size_t mlen = 0, slen = 0;
	struct fota_error err;
	if (fota_pkg_reader_open(path, &r, &err) != FOTA_OK)
		goto out;
	if (fota_pkg_read_head(r, &mj, &mlen, &sig, &slen, &err) != FOTA_OK)
		goto out;
	if (mlen > FOTA_MANIFEST_MAX || slen > FOTA_SIG_MAX || mlen == 0 || slen == 0)
		abort(); /* the caps must hold */
	if (fota_manifest_parse(mj, mlen, &m, &err) != FOTA_OK)
		goto out;
	uint64_t off = fota_pkg_head_size(mlen, slen);
	for (size_t i = 0; i < m->n_images; i++) {
		for (size_t c = 0; c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(m->images[i].name, c, ch->method, name);
			if (ch->payload_size > size) /* cannot be in the file: the reader must refuse it */
				goto out;
			free(buf);
			buf = malloc(ch->payload_size ? (size_t)ch->payload_size : 1);
			if (!buf || fota_pkg_read_member(r, name, ch->payload_size, off, buf, &err) != FOTA_OK)
				goto out;
			off += fota_pkg_member_span(ch->payload_size);
		}
	}
	if (fota_pkg_read_end(r, &err) == FOTA_OK && off + 2 * FOTA_TAR_BLOCK != size)
		abort(); /* an accepted package ends exactly where the layout says */
out:
	free(buf);
	free(mj);
	free(sig);
	fota_manifest_free(m);
	fota_pkg_reader_close(r);
	close(fd);
	return 0;
}
