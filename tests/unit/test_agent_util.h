/*
 * test_agent_util.h: fixtures shared by the agent suites: signed packages built with
 * libfota itself (full or delta chunks, A/B or in-place with the packager's in-place
 * planner), generated image pairs where data moves forward and backward, a fake
 * clock, and an agent environment on the power-cut simulation backend.
 */
#ifndef FOTA_TEST_AGENT_UTIL_H
#define FOTA_TEST_AGENT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../../agent/agent.h"

struct tpkg {
	enum fota_mode mode;
	bool delta;              /* delta chunks against a window of the source (else full) */
	bool mixed;              /* with delta: every third chunk full */
	size_t chunk;            /* target bytes per chunk */
	const char *model;       /* NULL: any model */
	uint64_t security_version;
	int64_t expires;         /* 0: never */
	const char *signer;      /* PKI name prefix: "signer-ec" (default) or "other-signer" */
	uint64_t scratch_max;    /* in-place: planner's scratch budget */
	long corrupt_chunk;      /* >= 0: flip a byte of this payload after signing */
	/* filled by tagent_build */
	size_t n_delta, n_stash, n_ahead, n_scratch_reads;
};

/* The test PKI (tests/pki/mkpki.sh, generated once); NULL when it failed. */
const char *tagent_pki(void);
/* Build a signed package at path. Returns 0 on success. */
int tagent_build(const char *path, const uint8_t *src, size_t src_len, const uint8_t *dst, size_t dst_len,
		 struct tpkg *o);
/* A 48 KiB source and a target where one region moves backward, one forward, plus edits. */
void tagent_pair(uint8_t **src, uint8_t **dst, size_t *len, uint64_t seed);

struct tclock {
	int64_t now_ms;
	int64_t tick_ms;   /* added at every reading: time passes while the agent works */
	uint64_t slept_ms, sleeps, max_sleep_ms, rng;
};
struct agent_clock tagent_clock(struct tclock *c);

/* Configuration text for the sim devices ("slot_a", "slot_b", "part", "scratch"). */
char *tagent_config_text(enum fota_mode mode, bool stream, const char *extra);
struct agent_config *tagent_config(enum fota_mode mode, bool stream, const char *extra);
/* Asserts that text is refused (FOTA_E_ARG, no config) with needle in the message. */
void tagent_expect_config_error(const char *text, const char *needle);

#endif
