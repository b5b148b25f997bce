/*
 * tarhead.c: strict ustar header parsing (see fota/tarhead.h). The offsets are the
 * POSIX ustar ones: name 0..100, size 124..136, chksum 148..156, typeflag 156,
 * magic 257..263, version 263..265, prefix 345..500.
 */
#include <string.h>
#include "fota/tarhead.h"

/* Octal field of width w: optional leading spaces are not allowed; digits, then at
 * least one terminator (space or NUL) and only terminators after it. */
static int parse_octal(const uint8_t *f, size_t w, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0, digits = 0;
	for (; i < w && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
		if (v > (UINT64_MAX >> 3))
			return -1;
		v = (v << 3) | (uint64_t)(f[i] - '0');
	}
	if (digits == 0 || i == w)
		return -1;
	for (; i < w; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	*out = v;
	return 0;
}

fota_status fota_tarhead_parse(const uint8_t block[512], struct fota_tarhead *out,
			       struct fota_error *err)
{
	uint64_t sum = 0, stored;
	for (size_t i = 0; i < 512; i++)
		sum += (i >= 148 && i < 156) ? (uint64_t)' ' : block[i];
	if (parse_octal(block + 148, 8, &stored) != 0)
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: chksum field is not octal");
	if (stored != sum)
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: checksum %llu, computed %llu",
				      (unsigned long long)stored, (unsigned long long)sum);
	if (memcmp(block + 257, "ustar\0", 6) != 0 || memcmp(block + 263, "00", 2) != 0)
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: not a POSIX ustar header (magic/version)");
	if (block[156] != '0')
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: typeflag '%c' is not a regular file",
				      block[156] >= 0x20 && block[156] < 0x7f ? block[156] : '?');
	if (block[345] != '\0')
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: prefix field is not empty");
	size_t n = 0;
	while (n < 100 && block[n] != '\0')
		n++;
	if (n == 0 || n > FOTA_TARHEAD_NAME_MAX)
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: name is empty or not NUL-terminated");
	for (size_t i = n; i < 100; i++)
		if (block[i] != '\0')
			return fota_error_set(err, FOTA_E_FORMAT, "tar header: bytes after the name's NUL");
	for (size_t i = 0; i < n; i++)
		if (block[i] < 0x20 || block[i] > 0x7e)
			return fota_error_set(err, FOTA_E_FORMAT, "tar header: name has a non-printable byte");
	uint64_t size;
	if (parse_octal(block + 124, 12, &size) != 0)
		return fota_error_set(err, FOTA_E_FORMAT, "tar header: size field is not octal");
	memcpy(out->name, block, n);
	out->name[n] = '\0';
	out->size = size;
	out->typeflag = '0';
	return FOTA_OK;
}
