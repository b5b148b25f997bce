/*
 * fuzz_journal.c: libFuzzer harness for the agent's journal parser (agent/journal.c),
 * which reads whatever a power cut or a stray process left in state_dir.
 *
 * Any input may be refused, but never crash, leak or read out of bounds. An input that
 * parses must format, the formatted text must parse to the same record, and formatting
 * that must give the same bytes. The Makefile links harnesses with libfota only, so the
 * agent's source file is compiled in here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/fumo.c"
#include "../../agent/journal.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what, const struct fota_error *e)
{
	fprintf(stderr, "fuzz_journal: %s: %s\n", what, e ? e->msg : "");
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_journal j, k;
	struct fota_error e = { 0 };
	fota_status rc = agent_journal_parse(data, size, &j, &e);
	if (rc != FOTA_OK) {
		if (e.code != rc || e.msg[0] == '\0')
			fuzz_fail("error without a message", &e);
		return 0;
	}
	char *a = NULL, *b = NULL;
	size_t la = 0, lb = 0;
	if (agent_journal_format(&j, &a, &la, &e) != FOTA_OK)
		fuzz_fail("parsed journal does not format", &e);
	memset(&k, 0, sizeof(k));
	if (agent_journal_parse((const uint8_t *)a, la, &k, &e) != FOTA_OK)
		fuzz_fail("formatted journal does not parse", &e);
	if (agent_journal_format(&k, &b, &lb, &e) != FOTA_OK)
		fuzz_fail("reparsed journal does not format", &e);
	if (la != lb || memcmp(a, b, la) != 0)
		fuzz_fail("format is not a fixed point", NULL);
	if (j.phase != k.phase || j.op != k.op || j.ap_next != k.ap_next || j.dl_next != k.dl_next ||
	    j.ip_step != k.ip_step || strcmp(j.url, k.url) != 0 || j.state != k.state ||
	    j.alert_pending != k.alert_pending || j.alert_result != k.alert_result || strcmp(j.correlator, k.correlator) != 0)
		fuzz_fail("round trip changed the record", NULL);
	free(a);
	free(b);
	return 0;
}
