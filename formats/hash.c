/*
 * hash.c: SHA-256 over OpenSSL EVP, and hex encoding (see fota/hash.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fota/hash.h"

struct fota_sha256 {
	EVP_MD_CTX *md;
};

struct fota_sha256 *fota_sha256_new(void)
{
	struct fota_sha256 *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->md = EVP_MD_CTX_new();
	if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c->md);
		free(c);
		return NULL;
	}
	return c;
}

void fota_sha256_update(struct fota_sha256 *c, const void *data, size_t len)
{
	if (len)
		EVP_DigestUpdate(c->md, data, len);
}

void fota_sha256_final(struct fota_sha256 *c, uint8_t out[FOTA_SHA256_LEN])
{
	unsigned int n = 0;
	EVP_DigestFinal_ex(c->md, out, &n);
	EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
}

void fota_sha256_free(struct fota_sha256 *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

void fota_sha256(const void *data, size_t len, uint8_t out[FOTA_SHA256_LEN])
{
	unsigned int n = 0;
	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

fota_status fota_sha256_file(const char *path, uint64_t limit, uint8_t out[FOTA_SHA256_LEN],
			     uint64_t *size, struct fota_error *err)
{
	fota_status rc = FOTA_OK;
	struct fota_sha256 *c = NULL;
	uint8_t *buf = NULL;
	uint64_t total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fota_error_set(err, FOTA_E_IO, "%s: %s", path, strerror(errno));
	enum { BUFSZ = 1 << 20 };
	c = fota_sha256_new();
	buf = malloc(BUFSZ);
	if (!c || !buf) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	while (total < limit) {
		size_t want = BUFSZ;
		if (limit - total < want)
			want = (size_t)(limit - total);
		ssize_t n = read(fd, buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = fota_error_set(err, FOTA_E_IO, "%s: read: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		fota_sha256_update(c, buf, (size_t)n);
		total += (uint64_t)n;
	}
	fota_sha256_final(c, out);
	if (size)
		*size = total;
out:
	free(buf);
	fota_sha256_free(c);
	close(fd);
	return rc;
}

void fota_hex_encode(const uint8_t *bin, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bin[i] >> 4];
		out[2 * i + 1] = digits[bin[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int fota_hex_decode(const char *hex, uint8_t *bin, size_t n)
{
	if (strlen(hex) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		bin[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}
