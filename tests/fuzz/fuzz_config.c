/*
 * fuzz_config.c: libFuzzer harness for the agent's configuration parser
 * (agent/config.c over libinih).
 *
 * Any input may be refused, with a message, but never crash, leak or read out of
 * bounds. A configuration that parses must be complete for its mode: every required
 * key present, the backoff bounds ordered, at least one trust root. The Makefile links
 * harnesses with libfota only, so the agent's source file is compiled in here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/config.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what, const char *msg)
{
	fprintf(stderr, "fuzz_config: %s: %s\n", what, msg);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > AGENT_CONFIG_MAX)
		return 0;
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	struct agent_config *c = NULL;
	struct fota_error e = { 0 };
	fota_status rc = agent_config_parse(text, "fuzz.conf", &c, &e);
	if (rc != FOTA_OK) {
		if (c)
			fuzz_fail("error with a configuration returned", e.msg);
		if (e.msg[0] == '\0' || e.code != rc)
			fuzz_fail("error without a message", e.msg);
	} else {
		if (!c || !c->model || !c->state_dir || c->n_trust == 0)
			fuzz_fail("parsed without a required key", "");
		if (c->mode == FOTA_MODE_AB && (!c->slot_a || !c->slot_b || (!c->active_slot && !c->active_slot_command)))
			fuzz_fail("ab configuration without its slots", "");
		if (c->mode == FOTA_MODE_INPLACE && (!c->target || c->slot_a))
			fuzz_fail("inplace configuration without its target", "");
		if (c->backoff_base_s == 0 || c->backoff_max_s < c->backoff_base_s)
			fuzz_fail("backoff bounds out of order", "");
		agent_config_free(c);
	}
	free(text);
	return 0;
}
