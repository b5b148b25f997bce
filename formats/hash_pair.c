/*
 * hash_pair.c: two SHA-256 digests of one byte stream in one pass (see fota/hash.h).
 *
 * Why not OpenSSL: the agent checks every chunk of an image and then the whole image,
 * the same bytes twice (FORMAT.md section 5 steps 7 and 8), and OpenSSL has no call that
 * runs two digests over one buffer. With the x86 SHA extensions a SHA-256 block is a chain
 * of 32 SHA256RNDS2 instructions, each waiting for the one before, so one digest leaves
 * the unit idle most of the time; two digests of the same block share its message
 * schedule (the block is the same) and interleave their round chains, and so cost about
 * what one costs (on the bench machine's AMD EPYC, 1.81 GB/s of data for both digests
 * against 1.81 GB/s for one through OpenSSL's SHA-NI code). The compression function below is
 * FIPS 180-4's, written for those instructions; unit tests check every path against
 * OpenSSL. Without the extensions (another architecture, an older CPU, or
 * FOTA_SHA256_PAIR_OPENSSL) each lane is an OpenSSL context, whose assembly uses what
 * the CPU has (the ARMv8 SHA-2 instructions on a handset).
 */
#include <stdlib.h>
#include <string.h>

#include "fota/hash.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define HAVE_SHANI 0
#endif

/* One lane on the SHA extensions: FIPS 180-4 state, bytes fed, the partial block. */
struct lane {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t n;
};

struct fota_sha256_pair {
	bool shani;
	struct lane outer, inner;               /* shani */
	struct fota_sha256 *o_ctx, *i_ctx;      /* otherwise */
};

static const uint32_t IV[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

static void lane_start(struct lane *l)
{
	memcpy(l->h, IV, sizeof(l->h));
	l->len = 0;
	l->n = 0;
}

#if HAVE_SHANI
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* SHA256RNDS2 keeps the state as ABEF and CDGH; h[] is ABCD EFGH. */
SHANI static inline void state_load(const uint32_t h[8], __m128i *abef, __m128i *cdgh)
{
	__m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
	__m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
	*abef = _mm_alignr_epi8(dcba, hgfe, 8);
	*cdgh = _mm_blend_epi16(hgfe, dcba, 0xF0);
}

SHANI static inline void state_store(uint32_t h[8], __m128i abef, __m128i cdgh)
{
	__m128i feba = _mm_shuffle_epi32(abef, 0x1B);
	__m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
	_mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
	_mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/*
 * nb blocks at p into nl states (1 or 2; inlined with a constant nl, so the lane loops
 * unroll). Round group g (rounds 4g..4g+3) uses message words w[g & 3]; words 16..63 come
 * from SHA256MSG1/MSG2 as the groups go: group g completes the words of group g + 1 and
 * starts those of group g + 3.
 */
SHANI static inline __attribute__((always_inline)) void compress(__m128i abef[2], __m128i cdgh[2], int nl,
								 const uint8_t *p, size_t nb)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	for (; nb > 0; nb--, p += 64) {
		__m128i w[4], save0[2], save1[2];
		for (int l = 0; l < nl; l++) {
			save0[l] = abef[l];
			save1[l] = cdgh[l];
		}
		for (int i = 0; i < 4; i++)
			w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
#pragma GCC unroll 16
		for (int g = 0; g < 16; g++) {
			__m128i m = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)(K + 4 * g)));
			for (int l = 0; l < nl; l++)
				cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], m);
			if (g >= 3 && g < 15) {
				__m128i t = _mm_alignr_epi8(w[g & 3], w[(g + 3) & 3], 4);
				w[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(w[(g + 1) & 3], t), w[g & 3]);
			}
			m = _mm_shuffle_epi32(m, 0x0E);
			for (int l = 0; l < nl; l++)
				abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], m);
			if (g >= 1 && g < 13)
				w[(g + 3) & 3] = _mm_sha256msg1_epu32(w[(g + 3) & 3], w[g & 3]);
		}
		for (int l = 0; l < nl; l++) {
			abef[l] = _mm_add_epi32(abef[l], save0[l]);
			cdgh[l] = _mm_add_epi32(cdgh[l], save1[l]);
		}
	}
}

SHANI static void blocks1(uint32_t h[8], const uint8_t *p, size_t nb)
{
	__m128i abef[2], cdgh[2];
	state_load(h, &abef[0], &cdgh[0]);
	compress(abef, cdgh, 1, p, nb);
	state_store(h, abef[0], cdgh[0]);
}

SHANI static void blocks2(uint32_t ha[8], uint32_t hb[8], const uint8_t *p, size_t nb)
{
	__m128i abef[2], cdgh[2];
	state_load(ha, &abef[0], &cdgh[0]);
	state_load(hb, &abef[1], &cdgh[1]);
	compress(abef, cdgh, 2, p, nb);
	state_store(ha, abef[0], cdgh[0]);
	state_store(hb, abef[1], cdgh[1]);
}

static bool cpu_has_shani(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
		return false;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#else
/* Never called: without the extensions every pair runs on OpenSSL lanes. */
static void blocks1(uint32_t h[8], const uint8_t *p, size_t nb)
{
	(void)h, (void)p, (void)nb;
}

static void blocks2(uint32_t ha[8], uint32_t hb[8], const uint8_t *p, size_t nb)
{
	(void)ha, (void)hb, (void)p, (void)nb;
}

static bool cpu_has_shani(void)
{
	return false;
}
#endif

/* One lane alone (when the lanes' partial blocks differ in length). */
static void lane_update(struct lane *l, const uint8_t *p, size_t len)
{
	l->len += len;
	if (l->n > 0) {
		size_t take = 64 - l->n < len ? 64 - l->n : len;
		memcpy(l->buf + l->n, p, take);
		l->n += take;
		p += take;
		len -= take;
		if (l->n < 64)
			return;
		blocks1(l->h, l->buf, 1);
		l->n = 0;
	}
	blocks1(l->h, p, len / 64);
	p += len - len % 64;
	memcpy(l->buf, p, len % 64);
	l->n = len % 64;
}

/* Both lanes hold the same partial block (the same n, the same last n bytes fed). */
static void pair_update(struct lane *a, struct lane *b, const uint8_t *p, size_t len)
{
	a->len += len;
	b->len += len;
	if (a->n > 0) {
		size_t take = 64 - a->n < len ? 64 - a->n : len;
		memcpy(a->buf + a->n, p, take);
		memcpy(b->buf + b->n, p, take);
		a->n += take;
		b->n += take;
		p += take;
		len -= take;
		if (a->n < 64)
			return;
		blocks2(a->h, b->h, a->buf, 1);
		a->n = b->n = 0;
	}
	blocks2(a->h, b->h, p, len / 64);
	p += len - len % 64;
	memcpy(a->buf, p, len % 64);
	memcpy(b->buf, p, len % 64);
	a->n = b->n = len % 64;
}

static void lane_final(struct lane *l, uint8_t out[FOTA_SHA256_LEN])
{
	uint8_t pad[128] = { 0 };
	size_t n = l->n, total = n + 9 <= 64 ? 64 : 128;
	uint64_t bits = l->len * 8;
	memcpy(pad, l->buf, n);
	pad[n] = 0x80;
	for (int i = 0; i < 8; i++)
		pad[total - 1 - (size_t)i] = (uint8_t)(bits >> (8 * i));
	blocks1(l->h, pad, total / 64);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(l->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(l->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(l->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)l->h[i];
	}
	lane_start(l);
}

struct fota_sha256_pair *fota_sha256_pair_new(unsigned flags)
{
	struct fota_sha256_pair *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	const char *no_ext = getenv("FOTA_NO_SHA_EXT");
	if (no_ext && no_ext[0] && strcmp(no_ext, "0") != 0)
		flags |= FOTA_SHA256_PAIR_OPENSSL;
	p->shani = !(flags & FOTA_SHA256_PAIR_OPENSSL) && cpu_has_shani();
	if (p->shani) {
		lane_start(&p->outer);
		lane_start(&p->inner);
		return p;
	}
	p->o_ctx = fota_sha256_new();
	p->i_ctx = fota_sha256_new();
	if (!p->o_ctx || !p->i_ctx) {
		fota_sha256_pair_free(p);
		return NULL;
	}
	return p;
}

bool fota_sha256_pair_accelerated(const struct fota_sha256_pair *p)
{
	return p->shani;
}

void fota_sha256_pair_update(struct fota_sha256_pair *p, const void *data, size_t len)
{
	if (!p->shani) {
		fota_sha256_update(p->o_ctx, data, len);
		fota_sha256_update(p->i_ctx, data, len);
	} else if (p->outer.n == p->inner.n) {
		pair_update(&p->outer, &p->inner, data, len);
	} else {
		lane_update(&p->outer, data, len);
		lane_update(&p->inner, data, len);
	}
}

void fota_sha256_pair_final_inner(struct fota_sha256_pair *p, uint8_t out[FOTA_SHA256_LEN])
{
	if (p->shani)
		lane_final(&p->inner, out);
	else
		fota_sha256_final(p->i_ctx, out);
}

void fota_sha256_pair_final_outer(struct fota_sha256_pair *p, uint8_t out[FOTA_SHA256_LEN])
{
	if (p->shani)
		lane_final(&p->outer, out);
	else
		fota_sha256_final(p->o_ctx, out);
}

void fota_sha256_pair_free(struct fota_sha256_pair *p)
{
	if (!p)
		return;
	fota_sha256_free(p->o_ctx);
	fota_sha256_free(p->i_ctx);
	free(p);
}
