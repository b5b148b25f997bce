/*
 * fota-pack: turn a target firmware image into a signed, chunked package
 * (formats/FORMAT.md). Build side: runs in an operator's release pipeline.
 *
 * The image is cut into chunks; each chunk's payload is compressed (zstd) on a pool
 * of threads, spooled to an unlinked temporary file next to the output, and then the
 * archive is written: manifest.json, manifest.sig, payloads. The output is staged as
 * OUT.tmp and renamed only when complete, so a failure leaves no package behind.
 * Every chunk is independent, so the bytes never depend on the thread count.
 *
 * External signing (HSM, corporate PKI): --unsigned writes the package without
 * manifest.sig; `fota-pack --attach-signature SIG -o OUT UNSIGNED` inserts a detached
 * CMS signature made elsewhere (e.g. `openssl cms -sign`).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "fota/container.h"
#include "fota/hash.h"
#include "fota/manifest.h"
#include "fota/sig.h"
#include "fota/util.h"
#include "pack.h"

#define PACK_VERSION "0.1.0"
#define DEFAULT_CHUNK (4u << 20) /* bench: ext4 pair 1M 796,672 B, 4M 772,608 B, 16M 766,464 B */
#define DEFAULT_LEVEL 19
#define DEFAULT_SCRATCH (16u << 20)
#define DEFAULT_DELTA_WLOG 22
#define MAX_THREADS PACK_MAX_THREADS

/* Exit codes: one table, documented in --help and docs/fota-pack.md. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,     /* any failure not listed below */
	EXIT_USAGE = 2,    /* bad command line */
	EXIT_IO = 3,       /* an input could not be read or the output written */
	EXIT_CRYPTO = 4,   /* key, certificate or signature problem */
	EXIT_LIMIT = 5,    /* an input exceeds a format limit */
	EXIT_INPUT = 6,    /* --attach-signature: the unsigned package or signature is invalid */
	EXIT_INTERNAL = 70,
};

static int exit_code_for(fota_status st)
{
	switch (st) {
	case FOTA_OK: return EXIT_OK;
	case FOTA_E_ARG: return EXIT_USAGE;
	case FOTA_E_IO: return EXIT_IO;
	case FOTA_E_CRYPTO: case FOTA_E_SIGNATURE: case FOTA_E_TRUST: return EXIT_CRYPTO;
	case FOTA_E_LIMIT: return EXIT_LIMIT;
	case FOTA_E_FORMAT: case FOTA_E_MANIFEST: case FOTA_E_INTEGRITY: case FOTA_E_UNSUPPORTED:
		return EXIT_INPUT;
	case FOTA_E_INTERNAL: return EXIT_INTERNAL;
	default: return EXIT_FAIL;
	}
}

struct options {
	struct pack_options p;
	const char *from, *to;
	const char *image_name;
	const char *attach_sig;
	const char *attach_in;
	const char *trust_check; /* optional root for --attach-signature */
	bool quiet;
};

static const char *progname = "fota-pack";

static void usage(FILE *f)
{
	fprintf(f,
"Usage: fota-pack [--from OLD.img] --to NEW.img --key KEY.pem --cert CERT.pem [options] -o OUT.fota\n"
"       fota-pack --image NAME:OLD:NEW [--image ...] --key KEY.pem --cert CERT.pem [options] -o OUT.fota\n"
"       fota-pack ... --unsigned -o OUT.unsigned\n"
"       fota-pack --attach-signature MANIFEST.sig [--trust ROOT.pem] -o OUT.fota UNSIGNED\n"
"\n"
"Build a signed, chunked firmware package (formats/FORMAT.md). With a source image each\n"
"chunk is a delta against it, or compressed replacement data where that is smaller.\n"
"\n"
"Images:\n"
"  --to FILE              target image (what the device ends up with)\n"
"  --from FILE            source image (what the device has now): a delta package\n"
"  --image NAME:OLD:NEW   one partition of a multi-image package (repeatable, up to 16;\n"
"                         OLD may be empty for a full image; paths must not contain ':')\n"
"  --mode ab|inplace      ab (default): the target goes to the other slot;\n"
"                         inplace: the target overwrites the source on the same partition\n"
"  --scratch-max SIZE     in-place: most scratch bytes the device offers for stashing\n"
"                         (default 16M; 0 = order only, no stash)\n"
"\n"
"Signing:\n"
"  --key FILE             signer private key, PEM (ECDSA P-256, Ed25519, RSA >= 2048)\n"
"  --cert FILE            signer certificate, PEM\n"
"  --chain FILE           intermediate CA certificates to embed, PEM\n"
"  --pss                  sign with RSA-PSS (RSA keys only)\n"
"  --unsigned             write no signature (sign manifest.json elsewhere, then\n"
"                         --attach-signature)\n"
"  --attach-signature SIG insert a detached DER CMS signature of manifest.json into\n"
"                         the unsigned package UNSIGNED; with --trust the signature is\n"
"                         checked first\n"
"  -o, --output FILE      package to write (staged as FILE.tmp, renamed when complete)\n"
"\n"
"Manifest:\n"
"  --name NAME            package name (FUMO PkgName)           default: the image file name\n"
"  --version VER          package version (FUMO PkgVersion)     default: 1\n"
"  --from-version VER     source firmware version it updates from\n"
"  --image-name NAME      partition name with --to, [a-z0-9_-]{1,32}  default: system\n"
"  --device-model MODEL   device model it applies to (repeatable; none = any model)\n"
"  --security-version N   rollback floor value                  default: 0\n"
"  --expires TIME         expiry, YYYY-MM-DDTHH:MM:SSZ          default: none\n"
"  --priority P           SI priority low|medium|high           default: medium\n"
"  --silent               download without asking the user\n"
"  --roaming R            allow|deny|wifi-only                  default: deny\n"
"  --install-message TEXT message shown when asking to install\n"
"\n"
"Chunking and speed:\n"
"  --chunk-size SIZE      target bytes per chunk, 4K..64M (K/M suffixes) default: 4M\n"
"  --window SIZE          largest zstd window a delta payload may need  default: 4M\n"
"  --level N              zstd level 1..22                      default: 19\n"
"  --threads N            worker threads; output is identical for any N  default: all cores\n"
"\n"
"Output:\n"
"  --json                 print a JSON summary on stdout (sizes and ratios per image and chunk)\n"
"  --quiet                no progress or summary on stderr\n"
"  -h, --help             this help\n"
"  -V                     print the program version (also: --version alone)\n"
"\n"
"Environment: SOURCE_DATE_EPOCH, when set, is recorded as the CMS signing time;\n"
"otherwise the signature carries no time, so Ed25519 and RSA PKCS#1 v1.5 packages\n"
"are byte-identical across runs.\n"
"\n"
"Exit status: 0 success; 1 other failure; 2 usage error; 3 I/O error; 4 key,\n"
"certificate or signature error; 5 an input exceeds a format limit; 6 invalid\n"
"unsigned package or signature (--attach-signature); 70 internal error.\n");
}

static int die_usage(const char *fmt, ...) FOTA_PRINTF(1, 2);
static int die_usage(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", progname);
	return EXIT_USAGE;
}

/* ---- attach an external signature ---- */

static fota_status attach(const struct options *o, struct fota_error *err)
{
	struct fota_pkg_reader *r = NULL;
	struct fota_pkg_writer *w = NULL;
	struct fota_manifest *m = NULL;
	struct fota_trust *trust = NULL;
	uint8_t *mj = NULL, *sig = NULL, *buf = NULL;
	size_t mlen = 0, slen = 0;
	fota_status rc = fota_read_file(o->attach_sig, FOTA_SIG_MAX, &sig, &slen, err);
	if (rc)
		goto out;
	if (slen == 0) {
		rc = fota_error_set(err, FOTA_E_SIGNATURE, "%s: empty signature", o->attach_sig);
		goto out;
	}
	rc = fota_pkg_reader_open(o->attach_in, &r, err);
	if (!rc)
		rc = fota_pkg_read_head(r, &mj, &mlen, NULL, NULL, err);
	if (!rc)
		rc = fota_manifest_parse(mj, mlen, &m, err);
	if (rc)
		goto out;
	if (o->trust_check) {
		const char *paths[1] = { o->trust_check };
		struct fota_sig_info info;
		rc = fota_trust_load(paths, 1, NULL, &trust, err);
		if (!rc)
			rc = fota_sig_verify(trust, mj, mlen, sig, slen, 0, &info, err);
		if (rc)
			goto out;
		if (!o->quiet)
			fprintf(stderr, "%s: signature by %s verified\n", progname, info.signer);
	}
	buf = malloc(FOTA_PAYLOAD_MAX);
	if (!buf) {
		rc = fota_error_set(err, FOTA_E_NOMEM, "out of memory");
		goto out;
	}
	rc = fota_pkg_writer_open(o->p.output, &w, err);
	if (!rc)
		rc = fota_pkg_writer_add(w, "manifest.json", mj, mlen, err);
	if (!rc)
		rc = fota_pkg_writer_add(w, "manifest.sig", sig, slen, err);
	uint64_t off = fota_pkg_head_size(mlen, 0);
	for (size_t i = 0; !rc && i < m->n_images; i++) {
		for (size_t c = 0; !rc && c < m->images[i].n_chunks; c++) {
			const struct fota_chunk *ch = &m->images[i].chunks[c];
			char name[FOTA_PAYLOAD_NAME_MAX];
			fota_pkg_payload_name(m->images[i].name, c, ch->method, name);
			rc = fota_pkg_read_member(r, name, ch->payload_size, off, buf, err);
			if (!rc) {
				uint8_t d[FOTA_SHA256_LEN];
				fota_sha256(buf, ch->payload_size, d);
				if (memcmp(d, ch->payload_sha256, FOTA_SHA256_LEN) != 0)
					rc = fota_error_set(err, FOTA_E_INTEGRITY, "%s: sha256 does not match the manifest", name);
			}
			if (!rc)
				rc = fota_pkg_writer_add(w, name, buf, ch->payload_size, err);
			off += fota_pkg_member_span(ch->payload_size);
		}
	}
	if (!rc)
		rc = fota_pkg_read_end(r, err);
	if (rc) {
		fota_pkg_writer_abort(w);
		w = NULL;
		goto out;
	}
	rc = fota_pkg_writer_commit(w, err);
	w = NULL;
	if (!rc && !o->quiet)
		fprintf(stderr, "%s: wrote %s\n", progname, o->p.output);
out:
	fota_pkg_writer_abort(w);
	fota_pkg_reader_close(r);
	fota_manifest_free(m);
	fota_trust_free(trust);
	free(mj);
	free(sig);
	free(buf);
	return rc;
}

/* ---- command line ---- */

enum {
	OPT_TO = 256, OPT_FROM, OPT_IMAGE, OPT_KEY, OPT_CERT, OPT_CHAIN, OPT_PSS, OPT_UNSIGNED, OPT_ATTACH,
	OPT_TRUST, OPT_CHUNK, OPT_MODE, OPT_SCRATCH, OPT_WINDOW, OPT_NAME, OPT_VER, OPT_FROMVER, OPT_IMAGE_NAME,
	OPT_MODEL, OPT_SECVER, OPT_EXPIRES, OPT_PRIO, OPT_SILENT, OPT_ROAM, OPT_MSG, OPT_THREADS, OPT_LEVEL,
	OPT_JSON, OPT_QUIET,
};

/* NAME:OLD:NEW (OLD may be empty for a full image). The strings stay in argv. */
static int parse_image_arg(char *arg, struct pack_image *out)
{
	char *c1 = strchr(arg, ':');
	if (!c1)
		return -1;
	char *c2 = strchr(c1 + 1, ':');
	if (!c2 || !fota_image_name_valid(arg, (size_t)(c1 - arg)) || c2[1] == '\0')
		return -1;
	*c1 = *c2 = '\0';
	out->name = arg;
	out->old_path = c1[1] ? c1 + 1 : NULL;
	out->new_path = c2 + 1;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "to", required_argument, NULL, OPT_TO },
		{ "from", required_argument, NULL, OPT_FROM },
		{ "image", required_argument, NULL, OPT_IMAGE },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "chain", required_argument, NULL, OPT_CHAIN },
		{ "pss", no_argument, NULL, OPT_PSS },
		{ "unsigned", no_argument, NULL, OPT_UNSIGNED },
		{ "attach-signature", required_argument, NULL, OPT_ATTACH },
		{ "trust", required_argument, NULL, OPT_TRUST },
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "scratch-max", required_argument, NULL, OPT_SCRATCH },
		{ "window", required_argument, NULL, OPT_WINDOW },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "version", required_argument, NULL, OPT_VER },
		{ "from-version", required_argument, NULL, OPT_FROMVER },
		{ "image-name", required_argument, NULL, OPT_IMAGE_NAME },
		{ "device-model", required_argument, NULL, OPT_MODEL },
		{ "security-version", required_argument, NULL, OPT_SECVER },
		{ "expires", required_argument, NULL, OPT_EXPIRES },
		{ "priority", required_argument, NULL, OPT_PRIO },
		{ "silent", no_argument, NULL, OPT_SILENT },
		{ "roaming", required_argument, NULL, OPT_ROAM },
		{ "install-message", required_argument, NULL, OPT_MSG },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "level", required_argument, NULL, OPT_LEVEL },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { .image_name = "system" };
	struct pack_options *p = &o.p;
	p->chunk_size = DEFAULT_CHUNK;
	p->mode = FOTA_MODE_AB;
	p->scratch_max = DEFAULT_SCRATCH;
	p->delta_window_log = DEFAULT_DELTA_WLOG;
	p->priority = FOTA_PRIO_MEDIUM;
	p->roaming = FOTA_ROAM_DENY;
	p->level = DEFAULT_LEVEL;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	p->threads = cores > 0 ? (unsigned)(cores > MAX_THREADS ? MAX_THREADS : cores) : 1;
	uint64_t v;
	int c, mode;
	/* "--version VER" sets the package version (FUMO PkgVersion); "--version" alone, or -V,
	 * prints the program version. */
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("fota-pack %s (format %d)\n", PACK_VERSION, FOTA_FORMAT_VERSION);
		return EXIT_OK;
	}
	while ((c = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_TO: o.to = optarg; break;
		case OPT_FROM: o.from = optarg; break;
		case OPT_IMAGE:
			if (p->n_images >= FOTA_IMAGES_MAX)
				return die_usage("--image: at most %d images", FOTA_IMAGES_MAX);
			if (parse_image_arg(optarg, &p->images[p->n_images]) != 0)
				return die_usage("--image: '%s' is not NAME:OLD:NEW (NAME: 1-32 of a-z 0-9 _ -; OLD may be empty)", optarg);
			for (size_t i = 0; i < p->n_images; i++)
				if (strcmp(p->images[i].name, p->images[p->n_images].name) == 0)
					return die_usage("--image: image '%s' given twice", p->images[i].name);
			p->n_images++;
			break;
		case OPT_KEY: p->key = optarg; break;
		case OPT_CERT: p->cert = optarg; break;
		case OPT_CHAIN: p->chain = optarg; break;
		case OPT_PSS: p->pss = true; break;
		case OPT_UNSIGNED: p->unsigned_pkg = true; break;
		case OPT_ATTACH: o.attach_sig = optarg; break;
		case OPT_TRUST: o.trust_check = optarg; break;
		case OPT_CHUNK:
			if (fota_parse_size(optarg, &v) != 0 || v < FOTA_CHUNK_SIZE_MIN || v > FOTA_CHUNK_SIZE_MAX)
				return die_usage("--chunk-size: '%s' is not a size between 4K and 64M", optarg);
			p->chunk_size = v;
			break;
		case OPT_MODE:
			if ((mode = fota_mode_parse(optarg)) < 0)
				return die_usage("--mode: '%s' is not ab or inplace", optarg);
			p->mode = (enum fota_mode)mode;
			break;
		case OPT_SCRATCH:
			if (fota_parse_size(optarg, &v) != 0 || v > FOTA_IMAGE_SIZE_MAX)
				return die_usage("--scratch-max: '%s' is not a size up to 1T", optarg);
			p->scratch_max = v;
			break;
		case OPT_WINDOW:
			if (fota_parse_size(optarg, &v) != 0 || v < 1024 || v > FOTA_WINDOW_MAX || (v & (v - 1)))
				return die_usage("--window: '%s' is not a power of two between 1K and 128M", optarg);
			for (p->delta_window_log = 10; (1ull << p->delta_window_log) < v; p->delta_window_log++)
				;
			break;
		case OPT_NAME: p->name = optarg; break;
		case OPT_VER: p->version = optarg; break;
		case OPT_FROMVER: p->from_version = optarg; break;
		case OPT_IMAGE_NAME:
			if (!fota_image_name_valid(optarg, strlen(optarg)))
				return die_usage("--image-name: '%s' must be 1-32 characters of a-z 0-9 _ -", optarg);
			o.image_name = optarg;
			break;
		case OPT_MODEL:
			if (p->n_models >= FOTA_MODELS_MAX)
				return die_usage("--device-model: at most %d models", FOTA_MODELS_MAX);
			p->models[p->n_models++] = optarg;
			break;
		case OPT_SECVER:
			if (fota_parse_u64(optarg, &v) != 0 || v > (uint64_t)INT64_MAX)
				return die_usage("--security-version: '%s' is not a non-negative integer", optarg);
			p->security_version = v;
			break;
		case OPT_EXPIRES:
			if (fota_time_parse(optarg, &p->expires) != 0 || p->expires <= 0)
				return die_usage("--expires: '%s' is not YYYY-MM-DDTHH:MM:SSZ", optarg);
			break;
		case OPT_PRIO:
			if ((p->priority = fota_priority_parse(optarg)) < 0)
				return die_usage("--priority: '%s' is not low, medium or high", optarg);
			break;
		case OPT_SILENT: p->silent = true; break;
		case OPT_ROAM:
			if ((p->roaming = fota_roaming_parse(optarg)) < 0)
				return die_usage("--roaming: '%s' is not allow, deny or wifi-only", optarg);
			break;
		case OPT_MSG: p->install_message = optarg; break;
		case OPT_THREADS:
			if (fota_parse_u64(optarg, &v) != 0 || v < 1 || v > MAX_THREADS)
				return die_usage("--threads: '%s' is not between 1 and %d", optarg, MAX_THREADS);
			p->threads = (unsigned)v;
			break;
		case OPT_LEVEL:
			if (fota_parse_u64(optarg, &v) != 0 || v < 1 || v > 22)
				return die_usage("--level: '%s' is not between 1 and 22", optarg);
			p->level = (int)v;
			break;
		case OPT_JSON: p->json = true; break;
		case OPT_QUIET: p->quiet = o.quiet = true; break;
		case 'o': p->output = optarg; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf("fota-pack %s (format %d)\n", PACK_VERSION, FOTA_FORMAT_VERSION); return EXIT_OK;
		default: fprintf(stderr, "Try '%s --help'.\n", progname); return EXIT_USAGE;
		}
	}
	if (!p->output)
		return die_usage("missing -o OUT");
	struct fota_error err = { 0 };
	fota_status rc;
	if (o.attach_sig) {
		if (optind != argc - 1)
			return die_usage("--attach-signature needs exactly one UNSIGNED package argument");
		if (o.to || o.from || p->n_images || p->key || p->cert)
			return die_usage("--attach-signature does not take --to, --from, --image, --key or --cert");
		o.attach_in = argv[optind];
		rc = attach(&o, &err);
	} else {
		if (optind != argc)
			return die_usage("unexpected argument '%s'", argv[optind]);
		if (o.to && p->n_images)
			return die_usage("use either --from/--to or --image, not both");
		if (o.from && !o.to)
			return die_usage("--from needs --to");
		if (o.to) {
			p->images[0] = (struct pack_image){ o.image_name, o.from, o.to };
			p->n_images = 1;
		}
		if (!p->n_images)
			return die_usage("missing --to NEW.img (or --image NAME:OLD:NEW)");
		if (p->mode == FOTA_MODE_INPLACE)
			for (size_t i = 0; i < p->n_images; i++)
				if (!p->images[i].old_path)
					return die_usage("--mode inplace: image '%s' needs a source (--from, or --image NAME:OLD:NEW)",
							 p->images[i].name);
		if (p->unsigned_pkg && (p->key || p->cert || p->chain))
			return die_usage("--unsigned does not take --key, --cert or --chain");
		if (!p->unsigned_pkg && (!p->key || !p->cert))
			return die_usage("missing --key and --cert (or --unsigned)");
		rc = pack_build(p, &err);
	}
	if (rc) {
		fprintf(stderr, "%s: %s\n", progname, err.msg[0] ? err.msg : fota_strerror(rc));
		return exit_code_for(rc);
	}
	return EXIT_OK;
}
