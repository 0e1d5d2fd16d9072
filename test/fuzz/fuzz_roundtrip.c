/*-------------------------------------------------------------------------
 *
 * fuzz_roundtrip.c
 *	  libFuzzer target: KCP request encoding round trip.
 *
 * The first input byte is a separator; the rest is split on it into up to
 * MAX_ARGS arguments, so an argument can hold any byte value (NUL
 * included) except the separator chosen for that input.  The arguments are
 * encoded with kcp_encode_request() into a heap buffer of exactly
 * kcp_request_size() bytes (so AddressSanitizer catches any overflow), then
 * tokenized by the independent reference decoder in strict mode: exactly
 * the request identifier and the original arguments must come back, in a
 * single line with canonical layout.  Any mismatch calls abort().
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_roundtrip.c
 *
 *-------------------------------------------------------------------------
 */
#include "kcp.h"
#include "kcp_reference_decoder.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_roundtrip: %s\n", what);
	abort();
}

/* Split data[1..size) on data[0]; the last argument takes the rest. */
static int
split_arguments(const uint8_t *data, size_t size, KcpArgument *args)
{
	const char *p = (const char *) data + 1;
	const char *end = (const char *) data + size;
	int			n = 0;

	if (size == 0)
		return 0;
	for (;;)
	{
		const char *sep = NULL;

		if (n < MAX_ARGS - 1)
			sep = memchr(p, data[0], (size_t) (end - p));
		if (sep == NULL)
			sep = end;
		/* empty arguments are passed as NULL, which the API allows */
		args[n].data = sep > p ? p : NULL;
		args[n].len = (size_t) (sep - p);
		n++;
		if (sep == end)
			return n;
		p = sep + 1;
	}
}

/* Per-argument checks: size, form choice, non-ASCII detection. */
static void
check_argument(const KcpArgument *arg)
{
	size_t		size = kcp_argument_size(arg->data, arg->len);
	char	   *buf = malloc(size ? size : 1);
	size_t		n;
	int			quoted = kcp_argument_needs_quotes(arg->data, arg->len);
	int			high = 0;
	size_t		i;

	if (buf == NULL)
		abort();
	n = kcp_encode_argument(buf, arg->data, arg->len);
	if (n != size)
		fail("kcp_encode_argument() != kcp_argument_size()");
	if (quoted != ref_needs_quotes(arg->data, arg->len))
		fail("kcp_argument_needs_quotes() disagrees with the reference");
	if (quoted != (buf[0] == '"'))
		fail("form does not match kcp_argument_needs_quotes()");
	if (!quoted && (n != arg->len || memcmp(buf, arg->data, n) != 0))
		fail("simple form is not the argument itself");
	free(buf);

	for (i = 0; i < arg->len; i++)
		high |= (unsigned char) arg->data[i] >= 0x80;
	if (kcp_has_non_ascii(arg->data, arg->len) != high)
		fail("kcp_has_non_ascii() is wrong");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KcpArgument args[MAX_ARGS];
	RefArg		refargs[MAX_ARGS + 1];
	char		id[KCP_MAX_REQUEST_ID_LEN + 1];
	uint64_t	idnum = 0;
	int			nargs = split_arguments(data, size, args);
	size_t		reqsize;
	char	   *req;
	char	   *decoded;
	const char *error;
	size_t		n;
	int			got;
	int			i;

	/* the identifier varies with the input too */
	for (n = 0; n < size && n < 8; n++)
		idnum = (idnum << 8) | data[size - 1 - n];
	if (kcp_format_request_id(idnum, id) > KCP_MAX_REQUEST_ID_LEN)
		fail("request id too long");

	for (i = 0; i < nargs; i++)
		check_argument(&args[i]);

	reqsize = kcp_request_size(id, args, nargs);
	req = malloc(reqsize);
	decoded = malloc(reqsize);
	if (req == NULL || decoded == NULL)
		abort();
	n = kcp_encode_request(req, id, args, nargs);
	if (n != reqsize)
		fail("kcp_encode_request() != kcp_request_size()");

	got = ref_decode_request(req, n, 1, decoded, refargs, MAX_ARGS + 1,
							 &error);
	if (got < 0)
	{
		fprintf(stderr, "reference decoder: %s\n", error);
		fail("encoded request does not decode");
	}
	if (got != nargs + 1)
		fail("wrong number of decoded arguments");
	if (refargs[0].len != strlen(id) ||
		memcmp(decoded + refargs[0].off, id, refargs[0].len) != 0)
		fail("request id changed");
	for (i = 0; i < nargs; i++)
	{
		const RefArg *r = &refargs[i + 1];

		if (r->len != args[i].len ||
			(r->len > 0 && memcmp(decoded + r->off, args[i].data, r->len) != 0))
			fail("argument changed in the round trip");
	}

	free(req);
	free(decoded);
	return 0;
}
