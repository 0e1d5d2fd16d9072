/*-------------------------------------------------------------------------
 *
 * test_kcp.c
 *	  Unit tests for the KCP codec (src/kcp.c).
 *
 * Covers every encoding rule of shared/kcp.md part 1 and the response
 * behaviour of part 2 that matters to a client.  Encoded requests are
 * checked by exact bytes and by decoding them again with the independent
 * reference tokenizer in kcp_reference_decoder.h.
 *
 * A tiny harness: each test prints one line ("ok - name" or "FAIL - name"),
 * failed checks are printed indented below it, and the last line is
 * "N passed, M failed".  The exit status is non-zero if any test failed.
 *
 * IDENTIFICATION
 *	  test/unit/test_kcp.c
 *
 *-------------------------------------------------------------------------
 */
#include "kcp.h"
#include "kcp_reference_decoder.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------
 *		Harness
 * ----------------------------------------------------------------
 */

#define MAX_REPORTED_FAILURES 10

static int	tests_passed;
static int	tests_failed;
static int	current_failures;

static void
check_failed(const char *file, int line, const char *what)
{
	current_failures++;
	if (current_failures <= MAX_REPORTED_FAILURES)
		printf("    %s:%d: check failed: %s\n", file, line, what);
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
			check_failed(__FILE__, __LINE__, #cond); \
	} while (0)

/* Print a byte string visibly (for failure messages). */
static void
print_bytes(const char *label, const char *data, size_t len)
{
	size_t		i;

	printf("      %s (%zu bytes): ", label, len);
	for (i = 0; i < len && i < 200; i++)
	{
		unsigned char c = (unsigned char) data[i];

		if (c >= 0x20 && c < 0x7F && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	printf("%s\n", i < len ? "..." : "");
}

static void
check_bytes_at(const char *file, int line, const char *what,
			   const char *got, size_t got_len,
			   const char *want, size_t want_len)
{
	if (got_len == want_len && memcmp(got, want, got_len) == 0)
		return;
	check_failed(file, line, what);
	if (current_failures <= MAX_REPORTED_FAILURES)
	{
		print_bytes("got ", got, got_len);
		print_bytes("want", want, want_len);
	}
}

#define CHECK_BYTES(got, got_len, want, want_len) \
	check_bytes_at(__FILE__, __LINE__, #got " == " #want, \
				   (got), (got_len), (want), (want_len))

static void
run_test(const char *name, void (*fn) (void))
{
	current_failures = 0;
	fn();
	if (current_failures == 0)
	{
		tests_passed++;
		printf("ok - %s\n", name);
	}
	else
	{
		tests_failed++;
		printf("FAIL - %s (%d failed checks)\n", name, current_failures);
	}
	fflush(stdout);
}

/* Deterministic PRNG (xorshift64*) for the randomized tests. */
static uint64_t prng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t
prng_next(void)
{
	prng_state ^= prng_state >> 12;
	prng_state ^= prng_state << 25;
	prng_state ^= prng_state >> 27;
	return prng_state * 0x2545F4914F6CDD1DULL;
}

/* ----------------------------------------------------------------
 *		Encoding helpers
 * ----------------------------------------------------------------
 */

#define GUARD_BYTE ((char) 0xA5)
#define GUARD_LEN 16

/*
 * Encode one argument into a guarded buffer and compare with the expected
 * wire bytes; also checks kcp_argument_size() and that nothing is written
 * past the returned size.
 */
static void
check_encode_at(const char *file, int line,
				const char *arg, size_t arg_len,
				const char *want, size_t want_len)
{
	char		buf[1024];
	size_t		size = kcp_argument_size(arg, arg_len);
	size_t		n;
	size_t		i;

	memset(buf, GUARD_BYTE, sizeof(buf));
	if (size + GUARD_LEN > sizeof(buf))
	{
		check_failed(file, line, "argument too large for test buffer");
		return;
	}
	n = kcp_encode_argument(buf, arg, arg_len);
	if (n != size)
		check_failed(file, line, "kcp_encode_argument() == kcp_argument_size()");
	check_bytes_at(file, line, "encoded argument", buf, n, want, want_len);
	for (i = n; i < n + GUARD_LEN; i++)
	{
		if (buf[i] != GUARD_BYTE)
		{
			check_failed(file, line, "no write past the encoded argument");
			break;
		}
	}
}

/* Literal strings: sizeof - 1 keeps embedded NULs. */
#define CHECK_ENCODE(arg, want) \
	check_encode_at(__FILE__, __LINE__, (arg), sizeof(arg) - 1, \
					(want), sizeof(want) - 1)

#define MAX_TEST_ARGS 64
#define MAX_REQUEST_BYTES 65536

/*
 * Encode a request, check size and guard, decode it strictly with the
 * reference tokenizer and check that exactly the identifier and the
 * arguments come back.  Returns 1 on success.
 */
static int
check_roundtrip_at(const char *file, int line, const char *request_id,
				   const KcpArgument *args, int nargs)
{
	static char buf[MAX_REQUEST_BYTES + GUARD_LEN];
	static char decoded[MAX_REQUEST_BYTES];
	RefArg		refargs[MAX_TEST_ARGS + 2];
	const char *error;
	size_t		size = kcp_request_size(request_id, args, nargs);
	size_t		n;
	int			got;
	int			i;
	int			before = current_failures;

	if (nargs > MAX_TEST_ARGS || size > MAX_REQUEST_BYTES)
	{
		check_failed(file, line, "request too large for test buffer");
		return 0;
	}
	memset(buf, GUARD_BYTE, size + GUARD_LEN);
	n = kcp_encode_request(buf, request_id, args, nargs);
	if (n != size)
		check_failed(file, line, "kcp_encode_request() == kcp_request_size()");
	for (i = 0; i < GUARD_LEN; i++)
	{
		if (buf[size + i] != GUARD_BYTE)
		{
			check_failed(file, line, "no write past the request");
			break;
		}
	}

	got = ref_decode_request(buf, n, 1, decoded, refargs, MAX_TEST_ARGS + 2,
							 &error);
	if (got < 0)
	{
		check_failed(file, line, "reference decoder accepts the request");
		if (current_failures <= MAX_REPORTED_FAILURES)
		{
			printf("      decoder error: %s\n", error);
			print_bytes("request", buf, n);
		}
		return 0;
	}
	if (got != nargs + 1)
	{
		check_failed(file, line, "decoded argument count == nargs + 1");
		return 0;
	}
	check_bytes_at(file, line, "decoded request id",
				   decoded + refargs[0].off, refargs[0].len,
				   request_id, strlen(request_id));
	for (i = 0; i < nargs; i++)
		check_bytes_at(file, line, "decoded argument",
					   decoded + refargs[i + 1].off, refargs[i + 1].len,
					   args[i].data, args[i].len);

	return current_failures == before;
}

#define CHECK_ROUNDTRIP(id, args, nargs) \
	check_roundtrip_at(__FILE__, __LINE__, (id), (args), (nargs))

/* ----------------------------------------------------------------
 *		Request identifiers
 * ----------------------------------------------------------------
 */

static void
check_request_id_at(const char *file, int line, uint64_t n, const char *want)
{
	char		buf[KCP_MAX_REQUEST_ID_LEN + 1 + GUARD_LEN];
	size_t		len;
	size_t		i;

	memset(buf, GUARD_BYTE, sizeof(buf));
	len = kcp_format_request_id(n, buf);
	check_bytes_at(file, line, "formatted request id", buf, len,
				   want, strlen(want));
	if (buf[len] != '\0')
		check_failed(file, line, "request id is NUL-terminated");
	for (i = len + 1; i < sizeof(buf); i++)
	{
		if (buf[i] != GUARD_BYTE)
		{
			check_failed(file, line, "no write past the request id");
			break;
		}
	}
}

#define CHECK_REQUEST_ID(n, want) \
	check_request_id_at(__FILE__, __LINE__, (n), (want))

static void
test_request_id_known_values(void)
{
	CHECK_REQUEST_ID(0, "0");
	CHECK_REQUEST_ID(1, "1");
	CHECK_REQUEST_ID(9, "9");
	CHECK_REQUEST_ID(10, "a");
	CHECK_REQUEST_ID(35, "z");
	CHECK_REQUEST_ID(36, "10");
	CHECK_REQUEST_ID(1295, "zz");
	CHECK_REQUEST_ID(1296, "100");
	CHECK_REQUEST_ID(UINT64_C(4738381338321616895), "zzzzzzzzzzzz");
	CHECK_REQUEST_ID(UINT64_MAX, "3w5e11264sgsf");
}

static void
test_request_id_max_length(void)
{
	char		buf[KCP_MAX_REQUEST_ID_LEN + 1];

	CHECK(KCP_MAX_REQUEST_ID_LEN == 13);
	CHECK(kcp_format_request_id(UINT64_MAX, buf) == KCP_MAX_REQUEST_ID_LEN);
	CHECK(strlen(buf) == KCP_MAX_REQUEST_ID_LEN);
	/* the longest id plus " ERROR" fits a response line */
	CHECK(KCP_MAX_REQUEST_ID_LEN + strlen(" ERROR") <= KCP_MAX_RESPONSE_LINE);
}

/* Ids parse back with strtoull(base 36), are simple and lowercase. */
static void
test_request_id_roundtrip(void)
{
	int			i;

	for (i = 0; i < 20000; i++)
	{
		char		buf[KCP_MAX_REQUEST_ID_LEN + 1];
		uint64_t	n;
		size_t		len;
		size_t		j;

		if (i < 5000)
			n = (uint64_t) i;
		else if (i < 5064)
			n = UINT64_MAX >> (i - 5000);
		else
			n = prng_next() >> (prng_next() % 64);

		len = kcp_format_request_id(n, buf);
		CHECK(len >= 1 && len <= KCP_MAX_REQUEST_ID_LEN);
		CHECK(strtoull(buf, NULL, 36) == n);
		CHECK(!kcp_argument_needs_quotes(buf, len));
		for (j = 0; j < len; j++)
			CHECK((buf[j] >= '0' && buf[j] <= '9') ||
				  (buf[j] >= 'a' && buf[j] <= 'z'));
		/* no leading zero except for 0 itself */
		CHECK(n == 0 || buf[0] != '0');
	}
}

/* ----------------------------------------------------------------
 *		Argument form choice and encoding
 * ----------------------------------------------------------------
 */

/* Every single byte value: quoted exactly when the rule says so. */
static void
test_needs_quotes_each_byte(void)
{
	int			c;

	for (c = 0; c < 256; c++)
	{
		char		b = (char) c;
		int			want = c == ' ' || c == '"' || c < 0x20 || c == 0x7F;

		CHECK(kcp_argument_needs_quotes(&b, 1) == want);
		/* same byte in the middle of a longer argument */
		{
			char		s[3] = {'a', b, 'z'};

			CHECK(kcp_argument_needs_quotes(s, 3) == want);
		}
	}
}

static void
test_needs_quotes_cases(void)
{
	CHECK(kcp_argument_needs_quotes("", 0));
	CHECK(kcp_argument_needs_quotes(NULL, 0));
	CHECK(!kcp_argument_needs_quotes("abc", 3));
	CHECK(!kcp_argument_needs_quotes("\\", 1));
	CHECK(!kcp_argument_needs_quotes("a\\nb", 4));
	CHECK(!kcp_argument_needs_quotes("\xc3\xa9t\xc3\xa9", 5));
	CHECK(!kcp_argument_needs_quotes("\xff\x80", 2));
	CHECK(!kcp_argument_needs_quotes("/bin/sh", 7));
	CHECK(!kcp_argument_needs_quotes("2030-01-01", 10));
	CHECK(kcp_argument_needs_quotes("2030-01-01 00:00:00", 19));
	CHECK(kcp_argument_needs_quotes(" lead", 5));
	CHECK(kcp_argument_needs_quotes("trail ", 6));
	CHECK(kcp_argument_needs_quotes("a\tb", 3));
	CHECK(kcp_argument_needs_quotes("a\nb", 3));
	CHECK(kcp_argument_needs_quotes("a\rb", 3));
	CHECK(kcp_argument_needs_quotes("a\0b", 3));
	CHECK(kcp_argument_needs_quotes("\x7f", 1));
	CHECK(kcp_argument_needs_quotes("\"", 1));
	/* len is honoured: the space after len bytes does not count */
	CHECK(!kcp_argument_needs_quotes("ab cd", 2));
}

static void
test_encode_simple(void)
{
	CHECK_ENCODE("abc", "abc");
	CHECK_ENCODE("SET", "SET");
	CHECK_ENCODE("/bin/sh", "/bin/sh");
	CHECK_ENCODE("amqp://u:p@h/v?x=1&y=2", "amqp://u:p@h/v?x=1&y=2");
	/* backslash alone does not need quotes: the simple form has no escapes */
	CHECK_ENCODE("\\", "\\");
	CHECK_ENCODE("a\\b", "a\\b");
	CHECK_ENCODE("a\\nb", "a\\nb");
	CHECK_ENCODE("\\\\", "\\\\");
	/* non-ASCII bytes go through untouched */
	CHECK_ENCODE("\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9");
	CHECK_ENCODE("\xe2\x82\xac", "\xe2\x82\xac");
	CHECK_ENCODE("\xff\xfe\x80", "\xff\xfe\x80");
	/* a quote char other than '"' is ordinary */
	CHECK_ENCODE("it's", "it's");
}

static void
test_encode_universal(void)
{
	/* empty argument */
	CHECK_ENCODE("", "\"\"");
	/* spaces, including leading and trailing */
	CHECK_ENCODE("a b", "\"a b\"");
	CHECK_ENCODE(" lead", "\" lead\"");
	CHECK_ENCODE("trail ", "\"trail \"");
	CHECK_ENCODE(" ", "\" \"");
	CHECK_ENCODE("2030-01-01 00:00:00", "\"2030-01-01 00:00:00\"");
	/* '"' and '\' escaped inside quotes */
	CHECK_ENCODE("\"", "\"\\\"\"");
	CHECK_ENCODE("a\"b", "\"a\\\"b\"");
	CHECK_ENCODE("a\\ b", "\"a\\\\ b\"");
	CHECK_ENCODE("\\\"", "\"\\\\\\\"\"");
	CHECK_ENCODE("\"\"", "\"\\\"\\\"\"");
	/* newline is written literally inside quotes, never as backslash-n */
	CHECK_ENCODE("a\nb", "\"a\nb\"");
	CHECK_ENCODE("\n", "\"\n\"");
	CHECK_ENCODE("a\\\nb", "\"a\\\\\nb\"");
	/* tab is not a separator, but is quoted by policy, literally */
	CHECK_ENCODE("a\tb", "\"a\tb\"");
	/* other control bytes: literal inside quotes */
	CHECK_ENCODE("a\rb", "\"a\rb\"");
	CHECK_ENCODE("a\0b", "\"a\0b\"");
	CHECK_ENCODE("\x7f", "\"\x7f\"");
	CHECK_ENCODE("\x01\x1f", "\"\x01\x1f\"");
	/* non-ASCII bytes stay literal inside quotes too */
	CHECK_ENCODE("\xc3\xa9 \xc3\xa9", "\"\xc3\xa9 \xc3\xa9\"");
}

/* Sizes, including the escape overhead, match the bytes written. */
static void
test_argument_size(void)
{
	CHECK(kcp_argument_size("", 0) == 2);
	CHECK(kcp_argument_size(NULL, 0) == 2);
	CHECK(kcp_argument_size("abc", 3) == 3);
	CHECK(kcp_argument_size("a b", 3) == 5);
	CHECK(kcp_argument_size("\"", 1) == 4);
	CHECK(kcp_argument_size("\\", 1) == 1);
	CHECK(kcp_argument_size("\\ ", 2) == 5);
	CHECK(kcp_argument_size("\"\\\" ", 4) == 9);
}

static void
test_encode_empty_argument_null_pointer(void)
{
	char		buf[4] = {0, 0, 0, 0};

	CHECK(kcp_encode_argument(buf, NULL, 0) == 2);
	CHECK(buf[0] == '"' && buf[1] == '"' && buf[2] == 0);
}

/* ----------------------------------------------------------------
 *		Request lines
 * ----------------------------------------------------------------
 */

static void
check_request_at(const char *file, int line, const char *id,
				 const KcpArgument *args, int nargs,
				 const char *want, size_t want_len)
{
	char		buf[1024];
	size_t		n;

	memset(buf, GUARD_BYTE, sizeof(buf));
	if (kcp_request_size(id, args, nargs) != want_len)
		check_failed(file, line, "kcp_request_size() == expected length");
	n = kcp_encode_request(buf, id, args, nargs);
	check_bytes_at(file, line, "encoded request", buf, n, want, want_len);
	if (buf[n] != GUARD_BYTE)
		check_failed(file, line, "no write past the request");
}

#define CHECK_REQUEST(id, args, nargs, want) \
	check_request_at(__FILE__, __LINE__, (id), (args), (nargs), \
					 (want), sizeof(want) - 1)

#define ARG(s) {(s), sizeof(s) - 1}

static void
test_request_layout(void)
{
	KcpArgument set[] = {ARG("SET"), ARG("job-1"), ARG("2030-01-01 00:00:00")};
	KcpArgument rule[] = {ARG("RULE"), ARG("SET"), ARG("r"), ARG(""),
	ARG("shell"), ARG("/opt/run job.sh")};
	KcpArgument amqp[] = {ARG("RULE"), ARG("SET"), ARG("r2"), ARG("p"),
		ARG("amqp"), ARG("amqp://guest:guest@localhost:5672/%2f"),
	ARG("ex"), ARG("rk")};
	KcpArgument odd[] = {ARG("a\"b"), ARG("c\\d"), ARG("e\nf"), ARG("\t")};

	CHECK_REQUEST("0", set, 3, "0 SET job-1 \"2030-01-01 00:00:00\"\n");
	CHECK_REQUEST("3w5e11264sgsf", set, 3,
				  "3w5e11264sgsf SET job-1 \"2030-01-01 00:00:00\"\n");
	CHECK_REQUEST("a", rule, 6,
				  "a RULE SET r \"\" shell \"/opt/run job.sh\"\n");
	CHECK_REQUEST("b", amqp, 8,
				  "b RULE SET r2 p amqp amqp://guest:guest@localhost:5672/%2f ex rk\n");
	CHECK_REQUEST("z", odd, 4, "z \"a\\\"b\" c\\d \"e\nf\" \"\t\"\n");
	/* no argument at all: identifier and newline */
	CHECK_REQUEST("1", NULL, 0, "1\n");
	CHECK_REQUEST("1", set, -1, "1\n");
}

static void
test_request_roundtrip_basic(void)
{
	KcpArgument set[] = {ARG("SET"), ARG("job 1"), ARG("2030-01-01 00:00:00")};
	KcpArgument empty[] = {ARG("SET"), ARG(""), ARG("")};
	KcpArgument spaces[] = {ARG(" "), ARG("  "), ARG(" a "), ARG("a  b")};
	KcpArgument ctrl[] = {ARG("\n"), ARG("\r\n"), ARG("\t"), ARG("\0"),
	ARG("\x7f"), ARG("\x1b[31m")};
	KcpArgument esc[] = {ARG("\\"), ARG("\""), ARG("\\\""), ARG("\"\\"),
	ARG("\\n"), ARG("\\\\ \"\" \\")};
	KcpArgument utf8[] = {ARG("\xc3\xa9t\xc3\xa9"), ARG("\xf0\x9f\x98\x80 x"),
	ARG("\xc3"), ARG("\xa9")};

	CHECK(CHECK_ROUNDTRIP("1", set, 3));
	CHECK(CHECK_ROUNDTRIP("2", empty, 3));
	CHECK(CHECK_ROUNDTRIP("3", spaces, 4));
	CHECK(CHECK_ROUNDTRIP("4", ctrl, 6));
	CHECK(CHECK_ROUNDTRIP("5", esc, 6));
	CHECK(CHECK_ROUNDTRIP("6", utf8, 4));
	CHECK(CHECK_ROUNDTRIP("7", NULL, 0));
}

/*
 * Injection attempts: a job identifier crafted to end the line and start a
 * second request must come back as one argument of one request.
 */
static void
test_request_injection(void)
{
	static const char evil[] =
		"x \"2030-01-01 00:00:00\"\n0 RULE SET evil \"\" shell /bin/sh";
	KcpArgument set[] = {ARG("SET"), ARG(evil), ARG("2030-01-01 00:00:00")};
	KcpArgument rule[] = {ARG("RULE"), ARG("SET"), ARG(evil), ARG(evil),
	ARG("shell"), ARG(evil)};
	KcpArgument tricky[] = {ARG("\\\"\n1 OK\n\""), ARG("\"\n"),
	ARG("\\"), ARG("a\\\" b"), ARG("\" \"")};
	char		buf[512];
	size_t		n;
	size_t		i;
	size_t		newlines = 0;

	CHECK(CHECK_ROUNDTRIP("1", set, 3));
	CHECK(CHECK_ROUNDTRIP("2", rule, 6));
	CHECK(CHECK_ROUNDTRIP("3", tricky, 5));

	/* the exact wire form, checked by hand once */
	n = kcp_encode_request(buf, "1", set, 3);
	CHECK_BYTES(buf, n,
				"1 SET \"x \\\"2030-01-01 00:00:00\\\"\n0 RULE SET evil "
				"\\\"\\\" shell /bin/sh\" \"2030-01-01 00:00:00\"\n",
				sizeof("1 SET \"x \\\"2030-01-01 00:00:00\\\"\n0 RULE SET evil "
					   "\\\"\\\" shell /bin/sh\" \"2030-01-01 00:00:00\"\n") - 1);
	for (i = 0; i < n; i++)
		newlines += buf[i] == '\n';
	CHECK(newlines == 2);		/* one literal inside quotes, one final */
}

/* Every byte value as an argument of its own, in one request. */
static void
test_roundtrip_all_single_bytes(void)
{
	static char bytes[256];
	KcpArgument args[MAX_TEST_ARGS];
	int			c;

	for (c = 0; c < 256; c++)
		bytes[c] = (char) c;
	for (c = 0; c < 256; c += MAX_TEST_ARGS)
	{
		int			i;

		for (i = 0; i < MAX_TEST_ARGS; i++)
		{
			args[i].data = &bytes[c + i];
			args[i].len = 1;
		}
		CHECK(CHECK_ROUNDTRIP("1", args, MAX_TEST_ARGS));
	}
}

/* All 256 byte values in one argument, in both orders. */
static void
test_roundtrip_all_bytes_one_argument(void)
{
	static char up[256];
	static char down[256];
	KcpArgument args[2];
	int			c;

	for (c = 0; c < 256; c++)
	{
		up[c] = (char) c;
		down[c] = (char) (255 - c);
	}
	args[0].data = up;
	args[0].len = 256;
	args[1].data = down;
	args[1].len = 256;
	CHECK(CHECK_ROUNDTRIP("1", args, 2));
	/* and every suffix of it, which starts with each byte value */
	for (c = 0; c < 256; c++)
	{
		args[0].data = up + c;
		args[0].len = (size_t) (256 - c);
		CHECK(CHECK_ROUNDTRIP("2", args, 1));
	}
}

/* Every two-byte string. */
static void
test_roundtrip_all_byte_pairs(void)
{
	int			c;

	for (c = 0; c < 65536; c++)
	{
		char		s[2];
		KcpArgument args[2];

		s[0] = (char) (c >> 8);
		s[1] = (char) (c & 0xFF);
		args[0].data = s;
		args[0].len = 2;
		args[1].data = s + 1;
		args[1].len = 1;
		if (!CHECK_ROUNDTRIP("p", args, 2))
			break;
	}
}

/* Random requests over an alphabet biased towards the special bytes. */
static void
test_roundtrip_random(void)
{
	static const char alphabet[] = " \"\\\n\r\t\0\x7f\x80\xff\xc3\xa9" "ab-:";
	static char pool[MAX_TEST_ARGS][48];
	KcpArgument args[MAX_TEST_ARGS];
	int			round;

	for (round = 0; round < 20000; round++)
	{
		int			nargs = (int) (prng_next() % 9);
		char		id[KCP_MAX_REQUEST_ID_LEN + 1];
		int			i;

		for (i = 0; i < nargs; i++)
		{
			size_t		len = (size_t) (prng_next() % 48);
			size_t		j;

			for (j = 0; j < len; j++)
			{
				uint64_t	r = prng_next();

				pool[i][j] = (r & 1) ?
					alphabet[(r >> 1) % (sizeof(alphabet) - 1)] :
					(char) (r >> 8);
			}
			args[i].data = pool[i];
			args[i].len = len;
		}
		kcp_format_request_id((uint64_t) round, id);
		if (!CHECK_ROUNDTRIP(id, args, nargs))
			break;
	}
}

static void
test_has_non_ascii(void)
{
	int			c;

	CHECK(!kcp_has_non_ascii("", 0));
	CHECK(!kcp_has_non_ascii(NULL, 0));
	CHECK(!kcp_has_non_ascii("plain ascii \x7f\x01", 14));
	CHECK(kcp_has_non_ascii("\xc3\xa9", 2));
	CHECK(kcp_has_non_ascii("abc\x80", 4));
	CHECK(!kcp_has_non_ascii("abc\x80", 3));
	for (c = 0; c < 256; c++)
	{
		char		b = (char) c;

		CHECK(kcp_has_non_ascii(&b, 1) == (c >= 0x80));
	}
}

/* ----------------------------------------------------------------
 *		The reference decoder itself (so the oracle is trustworthy)
 * ----------------------------------------------------------------
 */

/* Decode a literal line leniently; returns nargs or -1. */
static int
ref_decode_literal(const char *line, size_t len, int strict,
				   char *out, RefArg *args, const char **error)
{
	return ref_decode_request(line, len, strict, out, args, 8, error);
}

#define REF_DECODE(line, strict) \
	ref_decode_literal((line), sizeof(line) - 1, (strict), out, args, &error)

static void
test_reference_decoder(void)
{
	char		out[256];
	RefArg		args[8];
	const char *error;

	/* any number of spaces separates; tab does not */
	CHECK(REF_DECODE("1   SET  a\tb\n", 0) == 3);
	CHECK_BYTES(out + args[2].off, args[2].len, "a\tb", 3);
	CHECK(REF_DECODE("1   SET  a\tb\n", 1) == -1);
	/* universal with both escapes and a literal newline */
	CHECK(REF_DECODE("1 \"a\\\\b\\\"c\nd\"\n", 1) == 2);
	CHECK_BYTES(out + args[1].off, args[1].len, "a\\b\"c\nd", 7);
	/* "" is the empty string */
	CHECK(REF_DECODE("1 \"\"\n", 1) == 2);
	CHECK(args[1].len == 0);
	/* backslash-n is not an escape */
	CHECK(REF_DECODE("1 \"a\\nb\"\n", 0) == -1);
	/* backslash in a simple argument is literal */
	CHECK(REF_DECODE("1 a\\nb\n", 1) == 2);
	CHECK_BYTES(out + args[1].off, args[1].len, "a\\nb", 4);
	/* structural errors */
	CHECK(REF_DECODE("1 \"abc\n", 0) == -1);
	CHECK(REF_DECODE("1 abc", 0) == -1);
	CHECK(REF_DECODE("\n", 0) == -1);
	CHECK(REF_DECODE("1 a\n2 b\n", 0) == -1);
	CHECK(REF_DECODE("1 a\"b\"\n", 0) == -1);
	CHECK(REF_DECODE("1 \"a\"b\n", 0) == -1);
	CHECK(REF_DECODE("1 \"a\\", 0) == -1);
	/* strict: canonical layout only */
	CHECK(REF_DECODE(" 1 a\n", 0) == 2);
	CHECK(REF_DECODE(" 1 a\n", 1) == -1);
	CHECK(REF_DECODE("1 a \n", 0) == 2);
	CHECK(REF_DECODE("1 a \n", 1) == -1);
	CHECK(REF_DECODE("1 \"a\"\n", 0) == 2);
	CHECK(REF_DECODE("1 \"a\"\n", 1) == -1);
	CHECK(REF_DECODE("1 a\rb\n", 0) == 2);
	CHECK(REF_DECODE("1 a\rb\n", 1) == -1);
	CHECK(REF_DECODE("1 \"a\rb\"\n", 1) == 2);
}

/* ----------------------------------------------------------------
 *		Response parser
 * ----------------------------------------------------------------
 */

/* One parser result, with its position in the stream. */
typedef struct ParseEvent
{
	KcpParseResult result;
	size_t		end;			/* stream offset after the event */
	KcpStatus	status;
	char		request_id[KCP_MAX_RESPONSE_LINE + 1];
	const char *error;
} ParseEvent;

#define MAX_EVENTS 64

/*
 * Feed a stream in chunks of chunk bytes (0 = all at once) and record the
 * responses and the final error, if any.  Returns the number of events.
 */
static int
parse_stream(const char *data, size_t len, size_t chunk,
			 ParseEvent *events, int max_events)
{
	KcpParser	parser;
	size_t		pos = 0;
	int			n = 0;

	kcp_parser_reset(&parser);
	while (pos < len && n < max_events)
	{
		size_t		avail = len - pos;
		size_t		feed = (chunk == 0 || chunk > avail) ? avail : chunk;
		size_t		consumed = 0;
		KcpResponse response;
		KcpParseResult r;

		r = kcp_parser_feed(&parser, data + pos, feed, &consumed, &response);
		CHECK(consumed <= feed);
		pos += consumed;
		if (r == KCP_PARSE_NEED_MORE)
		{
			CHECK(consumed == feed);
			continue;
		}
		CHECK(consumed > 0);
		memset(&events[n], 0, sizeof(events[n]));
		events[n].result = r;
		events[n].end = pos;
		if (r == KCP_PARSE_RESPONSE)
		{
			events[n].status = response.status;
			memcpy(events[n].request_id, response.request_id,
				   response.request_id_len + 1);
			CHECK(strlen(response.request_id) == response.request_id_len);
		}
		else
		{
			events[n].error = parser.error;
			CHECK(parser.error != NULL);
			n++;
			break;
		}
		n++;
	}
	return n;
}

/* Compare whole-buffer parsing with every chunk size up to 70. */
static void
check_chunking_at(const char *file, int line, const char *data, size_t len)
{
	ParseEvent	whole[MAX_EVENTS];
	ParseEvent	part[MAX_EVENTS];
	int			nwhole = parse_stream(data, len, 0, whole, MAX_EVENTS);
	size_t		chunk;

	for (chunk = 1; chunk <= 70; chunk++)
	{
		int			npart = parse_stream(data, len, chunk, part, MAX_EVENTS);
		int			i;

		if (npart != nwhole)
		{
			check_failed(file, line, "same number of events for any chunking");
			return;
		}
		for (i = 0; i < npart; i++)
		{
			if (part[i].result != whole[i].result ||
				part[i].end != whole[i].end ||
				part[i].status != whole[i].status ||
				part[i].error != whole[i].error ||
				strcmp(part[i].request_id, whole[i].request_id) != 0)
			{
				check_failed(file, line, "same events for any chunking");
				return;
			}
		}
	}
}

#define CHECK_CHUNKING(s) \
	check_chunking_at(__FILE__, __LINE__, (s), sizeof(s) - 1)

/* Parse one literal; expect a single response. */
static void
check_response_at(const char *file, int line, const char *data, size_t len,
				  const char *want_id, KcpStatus want_status)
{
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed = 12345;
	KcpParseResult r;

	kcp_parser_reset(&parser);
	memset(&response, 0x5A, sizeof(response));
	r = kcp_parser_feed(&parser, data, len, &consumed, &response);
	if (r != KCP_PARSE_RESPONSE)
	{
		check_failed(file, line, "parsed as a response");
		if (current_failures <= MAX_REPORTED_FAILURES)
			printf("      result %d, error: %s\n", (int) r,
				   parser.error ? parser.error : "(none)");
		return;
	}
	if (consumed != len)
		check_failed(file, line, "whole line consumed");
	check_bytes_at(file, line, "response id",
				   response.request_id, response.request_id_len,
				   want_id, strlen(want_id));
	if (response.request_id[response.request_id_len] != '\0')
		check_failed(file, line, "response id NUL-terminated");
	if (response.status != want_status)
		check_failed(file, line, "response status");
	if (parser.error != NULL || parser.line_len != 0)
		check_failed(file, line, "parser clean after a response");
}

#define CHECK_RESPONSE(s, id, status) \
	check_response_at(__FILE__, __LINE__, (s), sizeof(s) - 1, (id), (status))

/*
 * Parse one literal; expect a protocol error with the given message after
 * consuming want_consumed bytes (0: the whole literal).
 */
static void
check_protocol_error_at(const char *file, int line, const char *data,
						size_t len, const char *want_error,
						size_t want_consumed)
{
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed = 12345;
	KcpParseResult r;

	kcp_parser_reset(&parser);
	r = kcp_parser_feed(&parser, data, len, &consumed, &response);
	if (r != KCP_PARSE_PROTOCOL_ERROR)
	{
		check_failed(file, line, "rejected as a protocol error");
		return;
	}
	if (parser.error == NULL || strcmp(parser.error, want_error) != 0)
	{
		check_failed(file, line, "expected error message");
		if (current_failures <= MAX_REPORTED_FAILURES)
			printf("      got \"%s\", want \"%s\"\n",
				   parser.error ? parser.error : "(null)", want_error);
	}
	if (consumed != (want_consumed ? want_consumed : len))
		check_failed(file, line, "consumed up to the offending byte");
	check_chunking_at(file, line, data, len);
}

#define CHECK_PROTOCOL_ERROR(s, msg) \
	check_protocol_error_at(__FILE__, __LINE__, (s), sizeof(s) - 1, (msg), 0)
#define CHECK_PROTOCOL_ERROR_AT(s, msg, at) \
	check_protocol_error_at(__FILE__, __LINE__, (s), sizeof(s) - 1, (msg), (at))

static void
test_parse_ok_and_error(void)
{
	CHECK_RESPONSE("1 OK\n", "1", KCP_STATUS_OK);
	CHECK_RESPONSE("1 ERROR\n", "1", KCP_STATUS_ERROR);
	CHECK_RESPONSE("zz OK\n", "zz", KCP_STATUS_OK);
	CHECK_RESPONSE("3w5e11264sgsf ERROR\n", "3w5e11264sgsf", KCP_STATUS_ERROR);
	CHECK_CHUNKING("1 OK\n");
	CHECK_CHUNKING("1 ERROR\n");
}

static void
test_parse_multiple_spaces(void)
{
	CHECK_RESPONSE("1  OK\n", "1", KCP_STATUS_OK);
	CHECK_RESPONSE("a      ERROR\n", "a", KCP_STATUS_ERROR);
	CHECK_CHUNKING("a      ERROR\n");
}

/* The contract accepts any identifier bytes but space, '"', CR, LF, NUL. */
static void
test_parse_identifier_bytes(void)
{
	CHECK_RESPONSE("\xc3\xa9 OK\n", "\xc3\xa9", KCP_STATUS_OK);
	CHECK_RESPONSE("a\\b OK\n", "a\\b", KCP_STATUS_OK);
	CHECK_RESPONSE("a\tb OK\n", "a\tb", KCP_STATUS_OK);
	CHECK_RESPONSE("OK OK\n", "OK", KCP_STATUS_OK);
	CHECK_PROTOCOL_ERROR_AT("a\0b OK\n", "NUL byte in response", 2);
	CHECK_PROTOCOL_ERROR_AT("a\"b OK\n", "double quote in response", 2);
}

static void
test_parse_lowercase_rejected(void)
{
	CHECK_PROTOCOL_ERROR("1 ok\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 error\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 Ok\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 OKAY\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 ERR\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 O\n", "unknown response status");
	CHECK_PROTOCOL_ERROR("1 OK\t\n", "unknown response status");
}

static void
test_parse_crlf_rejected(void)
{
	/* reported at the CR, without waiting for the LF */
	CHECK_PROTOCOL_ERROR_AT("1 OK\r\n", "carriage return in response", 5);
	CHECK_PROTOCOL_ERROR("1 OK\r", "carriage return in response");
	CHECK_PROTOCOL_ERROR_AT("\r\n1 OK\n", "carriage return in response", 1);
}

static void
test_parse_empty_and_blank_rejected(void)
{
	CHECK_PROTOCOL_ERROR("\n", "empty response line");
	CHECK_PROTOCOL_ERROR_AT("\n1 OK\n", "empty response line", 1);
	CHECK_PROTOCOL_ERROR("   \n", "blank response line");
	CHECK_PROTOCOL_ERROR(" 1 OK\n", "response line starts with a space");
	CHECK_PROTOCOL_ERROR("1\n", "missing status in response");
	CHECK_PROTOCOL_ERROR("1   \n", "missing status in response");
	CHECK_PROTOCOL_ERROR("OK\n", "missing status in response");
}

static void
test_parse_trailing_text_rejected(void)
{
	CHECK_PROTOCOL_ERROR("1 OK \n", "trailing text after response status");
	CHECK_PROTOCOL_ERROR("1 OK extra\n", "trailing text after response status");
	CHECK_PROTOCOL_ERROR("1 ERROR no such job\n",
						 "trailing text after response status");
	/* the server echoes a quoted id "a b" raw as "a b OK" */
	CHECK_PROTOCOL_ERROR("a b OK\n", "trailing text after response status");
	CHECK_PROTOCOL_ERROR("1 OK 2 OK\n", "trailing text after response status");
}

static void
test_parse_quoted_identifier_rejected(void)
{
	CHECK_PROTOCOL_ERROR_AT("\"a b\" OK\n", "quoted identifier in response", 1);
	CHECK_PROTOCOL_ERROR_AT("1 \"OK\"\n", "double quote in response", 3);
}

static void
test_parse_garbage_rejected(void)
{
	CHECK_PROTOCOL_ERROR_AT("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
							"NUL byte in response", 5);
	CHECK_PROTOCOL_ERROR("\xff\xfe\xfd\n", "missing status in response");
	CHECK_PROTOCOL_ERROR("-ERR unknown command\n",
						 "trailing text after response status");
}

/* An HTTP error page is rejected at its first CR. */
static void
test_parse_http_reply_rejected(void)
{
	static const char http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed;

	kcp_parser_reset(&parser);
	CHECK(kcp_parser_feed(&parser, http, sizeof(http) - 1, &consumed,
						  &response) == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(parser.error != NULL &&
		  strcmp(parser.error, "carriage return in response") == 0);
	CHECK(consumed == strlen("HTTP/1.1 400 Bad Request\r"));
}

static void
test_parse_overlong_line(void)
{
	char		line[KCP_MAX_RESPONSE_LINE + 8];
	size_t		idlen;
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed;
	KcpParseResult r;

	/* exactly KCP_MAX_RESPONSE_LINE bytes before '\n': accepted */
	idlen = KCP_MAX_RESPONSE_LINE - 3;
	memset(line, 'x', idlen);
	memcpy(line + idlen, " OK\n", 4);
	kcp_parser_reset(&parser);
	r = kcp_parser_feed(&parser, line, idlen + 4, &consumed, &response);
	CHECK(r == KCP_PARSE_RESPONSE);
	CHECK(consumed == idlen + 4);
	CHECK(response.request_id_len == idlen);
	CHECK(strlen(response.request_id) == idlen);

	/* one more byte: rejected */
	idlen++;
	memset(line, 'x', idlen);
	memcpy(line + idlen, " OK\n", 4);
	kcp_parser_reset(&parser);
	r = kcp_parser_feed(&parser, line, idlen + 4, &consumed, &response);
	CHECK(r == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == KCP_MAX_RESPONSE_LINE + 1);
	CHECK(parser.error != NULL &&
		  strcmp(parser.error, "response line longer than 64 bytes") == 0);
	check_chunking_at(__FILE__, __LINE__, line, idlen + 4);

	/* detected as soon as byte 65 arrives, without any '\n' */
	memset(line, 'y', sizeof(line));
	kcp_parser_reset(&parser);
	r = kcp_parser_feed(&parser, line, KCP_MAX_RESPONSE_LINE, &consumed,
						&response);
	CHECK(r == KCP_PARSE_NEED_MORE);
	CHECK(consumed == KCP_MAX_RESPONSE_LINE);
	r = kcp_parser_feed(&parser, line, 1, &consumed, &response);
	CHECK(r == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == 1);
	kcp_parser_reset(&parser);
	r = kcp_parser_feed(&parser, line, sizeof(line), &consumed, &response);
	CHECK(r == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == KCP_MAX_RESPONSE_LINE + 1);

	/* whatever byte comes 65th, only '\n' can end a line of 64 */
	for (idlen = 0; idlen < 256; idlen++)
	{
		memset(line, 'x', KCP_MAX_RESPONSE_LINE);
		line[KCP_MAX_RESPONSE_LINE] = (char) idlen;
		kcp_parser_reset(&parser);
		r = kcp_parser_feed(&parser, line, KCP_MAX_RESPONSE_LINE + 1,
							&consumed, &response);
		CHECK(r == KCP_PARSE_PROTOCOL_ERROR);
		CHECK(consumed == KCP_MAX_RESPONSE_LINE + 1);
		if (idlen != '\n')
			CHECK(strcmp(parser.error,
						 "response line longer than 64 bytes") == 0);
	}
}

static void
test_parse_several_responses_one_buffer(void)
{
	static const char stream[] = "1 OK\n2 ERROR\nabc   OK\n3 O";
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed;
	size_t		pos = 0;
	size_t		len = sizeof(stream) - 1;

	kcp_parser_reset(&parser);
	CHECK(kcp_parser_feed(&parser, stream + pos, len - pos, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(consumed == 5);
	CHECK(strcmp(response.request_id, "1") == 0);
	CHECK(response.status == KCP_STATUS_OK);
	pos += consumed;

	CHECK(kcp_parser_feed(&parser, stream + pos, len - pos, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(consumed == 8);
	CHECK(strcmp(response.request_id, "2") == 0);
	CHECK(response.status == KCP_STATUS_ERROR);
	pos += consumed;

	CHECK(kcp_parser_feed(&parser, stream + pos, len - pos, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(consumed == 9);
	CHECK(strcmp(response.request_id, "abc") == 0);
	CHECK(response.status == KCP_STATUS_OK);
	pos += consumed;

	/* partial line kept between calls */
	CHECK(kcp_parser_feed(&parser, stream + pos, len - pos, &consumed,
						  &response) == KCP_PARSE_NEED_MORE);
	CHECK(consumed == 3);
	CHECK(kcp_parser_feed(&parser, "K\n4 OK\n", 7, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(consumed == 2);
	CHECK(strcmp(response.request_id, "3") == 0);
	CHECK(response.status == KCP_STATUS_OK);

	/* empty input */
	CHECK(kcp_parser_feed(&parser, "", 0, &consumed,
						  &response) == KCP_PARSE_NEED_MORE);
	CHECK(consumed == 0);
	CHECK(kcp_parser_feed(&parser, NULL, 0, &consumed,
						  &response) == KCP_PARSE_NEED_MORE);
	CHECK(consumed == 0);

	CHECK_CHUNKING("1 OK\n2 ERROR\nabc   OK\n3 O");
}

/* A valid response followed by a bad one in the same buffer. */
static void
test_parse_good_then_bad(void)
{
	static const char stream[] = "1 OK\n2 ok\n3 OK\n";
	ParseEvent	events[MAX_EVENTS];
	int			n = parse_stream(stream, sizeof(stream) - 1, 0, events,
								 MAX_EVENTS);

	CHECK(n == 2);
	CHECK(events[0].result == KCP_PARSE_RESPONSE);
	CHECK(events[0].end == 5);
	CHECK(events[1].result == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(events[1].end == 10);
	CHECK_CHUNKING("1 OK\n2 ok\n3 OK\n");
}

/* Byte-at-a-time and any other chunking give the whole-buffer results. */
static void
test_parse_chunking_equivalence(void)
{
	char		stream[4096];
	size_t		len = 0;
	int			i;
	int			round;

	CHECK_CHUNKING("1 OK\n2 ERROR\n3  OK\nzz ERROR\n");
	CHECK_CHUNKING("1 OK\n2 ERROR\n3 OK\r\n4 OK\n");
	CHECK_CHUNKING("1 OK\n\n");
	CHECK_CHUNKING("1 OK\n2 OK x\n");
	CHECK_CHUNKING("1 OK\n\"2\" OK\n");
	CHECK_CHUNKING("1 OK\n2 OK\n3 OK");

	/* many valid responses */
	for (i = 0; i < 40; i++)
	{
		char		id[KCP_MAX_REQUEST_ID_LEN + 1];
		size_t		idlen = kcp_format_request_id(UINT64_C(1) << i, id);

		memcpy(stream + len, id, idlen);
		len += idlen;
		memset(stream + len, ' ', (size_t) (1 + i % 4));
		len += (size_t) (1 + i % 4);
		memcpy(stream + len, i % 3 ? "OK\n" : "ERROR\n", i % 3 ? 3 : 6);
		len += i % 3 ? 3 : 6;
	}
	check_chunking_at(__FILE__, __LINE__, stream, len);

	/* random streams over response-ish bytes */
	for (round = 0; round < 3000; round++)
	{
		static const char alphabet[] = "12 OKERROR\n\r\"ok\0x";

		len = (size_t) (prng_next() % 200);
		for (i = 0; i < (int) len; i++)
			stream[i] = (prng_next() % 4) ?
				alphabet[prng_next() % (sizeof(alphabet) - 1)] :
				(char) prng_next();
		check_chunking_at(__FILE__, __LINE__, stream, len);
	}
}

static void
test_parse_error_sticky(void)
{
	KcpParser	parser;
	KcpResponse response;
	size_t		consumed;
	const char *error;

	kcp_parser_reset(&parser);
	CHECK(kcp_parser_feed(&parser, "1 ok\n", 5, &consumed,
						  &response) == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == 5);
	error = parser.error;
	CHECK(error != NULL);

	/* valid input is refused, nothing consumed, message unchanged */
	consumed = 99;
	CHECK(kcp_parser_feed(&parser, "2 OK\n", 5, &consumed,
						  &response) == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == 0);
	CHECK(parser.error == error);
	consumed = 99;
	CHECK(kcp_parser_feed(&parser, "", 0, &consumed,
						  &response) == KCP_PARSE_PROTOCOL_ERROR);
	CHECK(consumed == 0);

	/* reset clears the error and any partial line */
	kcp_parser_reset(&parser);
	CHECK(parser.error == NULL);
	CHECK(kcp_parser_feed(&parser, "2 OK\n", 5, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(strcmp(response.request_id, "2") == 0);

	CHECK(kcp_parser_feed(&parser, "3 O", 3, &consumed,
						  &response) == KCP_PARSE_NEED_MORE);
	kcp_parser_reset(&parser);
	CHECK(kcp_parser_feed(&parser, "4 OK\n", 5, &consumed,
						  &response) == KCP_PARSE_RESPONSE);
	CHECK(strcmp(response.request_id, "4") == 0);
}

/* Responses to every id we can produce parse back to that id. */
static void
test_parse_our_ids(void)
{
	int			i;

	for (i = 0; i < 5000; i++)
	{
		char		line[KCP_MAX_RESPONSE_LINE + 1];
		char		id[KCP_MAX_REQUEST_ID_LEN + 1];
		uint64_t	n = i < 64 ? UINT64_MAX >> i : prng_next();
		size_t		idlen = kcp_format_request_id(n, id);
		KcpParser	parser;
		KcpResponse response;
		size_t		consumed;

		memcpy(line, id, idlen);
		memcpy(line + idlen, " ERROR\n", 7);
		kcp_parser_reset(&parser);
		CHECK(kcp_parser_feed(&parser, line, idlen + 7, &consumed,
							  &response) == KCP_PARSE_RESPONSE);
		CHECK(response.request_id_len == idlen &&
			  strcmp(response.request_id, id) == 0);
		CHECK(strtoull(response.request_id, NULL, 36) == n);
	}
}

int
main(void)
{
	run_test("request id: known values (0, 35, 36, UINT64_MAX)",
			 test_request_id_known_values);
	run_test("request id: UINT64_MAX has KCP_MAX_REQUEST_ID_LEN bytes",
			 test_request_id_max_length);
	run_test("request id: base 36 round trip, simple, lowercase",
			 test_request_id_roundtrip);
	run_test("needs quotes: every byte value", test_needs_quotes_each_byte);
	run_test("needs quotes: cases (empty, backslash, non-ASCII, ...)",
			 test_needs_quotes_cases);
	run_test("encode: simple form", test_encode_simple);
	run_test("encode: universal form and escapes", test_encode_universal);
	run_test("encode: argument sizes", test_argument_size);
	run_test("encode: empty argument with NULL data",
			 test_encode_empty_argument_null_pointer);
	run_test("request: layout, single spaces, final newline",
			 test_request_layout);
	run_test("reference decoder: part 1 rules and strict mode",
			 test_reference_decoder);
	run_test("round trip: basic requests", test_request_roundtrip_basic);
	run_test("round trip: injection attempts", test_request_injection);
	run_test("round trip: every byte as its own argument",
			 test_roundtrip_all_single_bytes);
	run_test("round trip: all 256 bytes in one argument",
			 test_roundtrip_all_bytes_one_argument);
	run_test("round trip: every two-byte string",
			 test_roundtrip_all_byte_pairs);
	run_test("round trip: random requests", test_roundtrip_random);
	run_test("has_non_ascii", test_has_non_ascii);
	run_test("parse: OK and ERROR", test_parse_ok_and_error);
	run_test("parse: several spaces before the status",
			 test_parse_multiple_spaces);
	run_test("parse: identifier bytes", test_parse_identifier_bytes);
	run_test("parse: lowercase and unknown status rejected",
			 test_parse_lowercase_rejected);
	run_test("parse: CRLF rejected", test_parse_crlf_rejected);
	run_test("parse: empty and blank lines rejected",
			 test_parse_empty_and_blank_rejected);
	run_test("parse: trailing text rejected",
			 test_parse_trailing_text_rejected);
	run_test("parse: quoted identifier rejected",
			 test_parse_quoted_identifier_rejected);
	run_test("parse: garbage rejected", test_parse_garbage_rejected);
	run_test("parse: HTTP reply rejected at its CR",
			 test_parse_http_reply_rejected);
	run_test("parse: overlong line rejected as soon as detected",
			 test_parse_overlong_line);
	run_test("parse: several responses in one buffer",
			 test_parse_several_responses_one_buffer);
	run_test("parse: good response then bad one",
			 test_parse_good_then_bad);
	run_test("parse: byte-at-a-time equals whole buffer",
			 test_parse_chunking_equivalence);
	run_test("parse: error sticky until reset", test_parse_error_sticky);
	run_test("parse: responses to our own ids", test_parse_our_ids);

	printf("%d passed, %d failed\n", tests_passed, tests_failed);
	return tests_failed > 0 ? 1 : 0;
}
