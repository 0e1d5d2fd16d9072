/*-------------------------------------------------------------------------
 *
 * kcp.c
 *	  The Kairoi Client Protocol (KCP) codec: request identifiers, argument
 *	  and request encoding, and the incremental response parser.
 *
 * This file owns the byte-level wire format of KCP (shared/kcp.md part 1)
 * and the client-side reading of the reference server's responses (part
 * 2).  It does no I/O and never allocates: callers size their buffers with
 * the *_size() functions, and the parser keeps at most one partial line in
 * its own fixed buffer.  It deliberately has no PostgreSQL dependency, so
 * it can be unit tested, sanitized and fuzzed on its own.
 *
 * IDENTIFICATION
 *	  src/kcp.c
 *
 *-------------------------------------------------------------------------
 */
#include "kcp.h"

#include <string.h>

#define KCP_STRINGIFY_(x) #x
#define KCP_STRINGIFY(x) KCP_STRINGIFY_(x)

static const char kcp_base36_digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";


/* ----------------------------------------------------------------
 *		Request encoding
 * ----------------------------------------------------------------
 */

/*
 * kcp_format_request_id
 *		Write n in base 36 (digits, then lowercase letters) into buf.
 *
 * UINT64_MAX is "3w5e11264sgsf", exactly KCP_MAX_REQUEST_ID_LEN bytes.
 */
size_t
kcp_format_request_id(uint64_t n, char *buf)
{
	char		reversed[KCP_MAX_REQUEST_ID_LEN];
	size_t		len = 0;
	size_t		i;

	do
	{
		reversed[len++] = kcp_base36_digits[n % 36];
		n /= 36;
	} while (n != 0);

	for (i = 0; i < len; i++)
		buf[i] = reversed[len - 1 - i];
	buf[len] = '\0';

	return len;
}

/*
 * True if this byte forces the universal form.  Space, '"' and '\n' are
 * required by the protocol; the other control bytes are our own policy.
 */
static int
kcp_byte_needs_quotes(unsigned char c)
{
	return c == ' ' || c == '"' || c < 0x20 || c == 0x7F;
}

/* True if this byte must be escaped inside the universal form. */
static int
kcp_byte_needs_escape(unsigned char c)
{
	return c == '\\' || c == '"';
}

/*
 * kcp_argument_needs_quotes
 *		True if the argument cannot use the simple form.
 *
 * data may be NULL when len is 0.
 */
int
kcp_argument_needs_quotes(const char *data, size_t len)
{
	size_t		i;

	if (len == 0)
		return 1;

	for (i = 0; i < len; i++)
	{
		if (kcp_byte_needs_quotes((unsigned char) data[i]))
			return 1;
	}
	return 0;
}

/*
 * kcp_argument_size
 *		Bytes kcp_encode_argument() writes for this argument.
 */
size_t
kcp_argument_size(const char *data, size_t len)
{
	size_t		size;
	size_t		i;

	if (!kcp_argument_needs_quotes(data, len))
		return len;

	size = len + 2;				/* the two quotes */
	for (i = 0; i < len; i++)
	{
		if (kcp_byte_needs_escape((unsigned char) data[i]))
			size++;
	}
	return size;
}

/*
 * Write the universal form of the argument: '"', the bytes with '\' and
 * '"' preceded by '\', '"'.  Every other byte, newline included, is
 * written as is.
 */
static size_t
kcp_encode_universal(char *dst, const char *data, size_t len)
{
	size_t		out = 0;
	size_t		i;

	dst[out++] = '"';
	for (i = 0; i < len; i++)
	{
		if (kcp_byte_needs_escape((unsigned char) data[i]))
			dst[out++] = '\\';
		dst[out++] = data[i];
	}
	dst[out++] = '"';

	return out;
}

/*
 * kcp_encode_argument
 *		Encode one argument, simple form when allowed, else universal.
 */
size_t
kcp_encode_argument(char *dst, const char *data, size_t len)
{
	if (kcp_argument_needs_quotes(data, len))
		return kcp_encode_universal(dst, data, len);

	/* simple form: len > 0 here, so data is not NULL */
	memcpy(dst, data, len);
	return len;
}

/*
 * kcp_request_size
 *		Bytes of the request line: id, " arg" per argument, '\n'.
 *
 * A negative nargs counts as zero.
 */
size_t
kcp_request_size(const char *request_id, const KcpArgument *args, int nargs)
{
	size_t		size = strlen(request_id) + 1;	/* identifier and '\n' */
	int			i;

	for (i = 0; i < nargs; i++)
		size += 1 + kcp_argument_size(args[i].data, args[i].len);

	return size;
}

/*
 * kcp_encode_request
 *		Write the request line; returns kcp_request_size() bytes.
 */
size_t
kcp_encode_request(char *dst, const char *request_id,
				   const KcpArgument *args, int nargs)
{
	size_t		out = strlen(request_id);
	int			i;

	memcpy(dst, request_id, out);
	for (i = 0; i < nargs; i++)
	{
		dst[out++] = ' ';
		out += kcp_encode_argument(dst + out, args[i].data, args[i].len);
	}
	dst[out++] = '\n';

	return out;
}

/*
 * kcp_has_non_ascii
 *		True if any byte is >= 0x80.
 */
int
kcp_has_non_ascii(const char *data, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		if ((unsigned char) data[i] >= 0x80)
			return 1;
	}
	return 0;
}


/* ----------------------------------------------------------------
 *		Response parsing
 * ----------------------------------------------------------------
 */

/*
 * kcp_parser_reset
 *		Forget any partial line and any protocol error.
 */
void
kcp_parser_reset(KcpParser *parser)
{
	parser->line_len = 0;
	parser->error = NULL;
}

/*
 * Check one byte (not '\n') about to be appended to the partial line.
 * These errors are reported as soon as the byte is seen: no valid response
 * line can contain these bytes or be this long, so there is no point
 * waiting for the end of the line (which may never come).
 */
static const char *
kcp_check_line_byte(const KcpParser *parser, char c)
{
	if (parser->line_len >= KCP_MAX_RESPONSE_LINE)
		return "response line longer than "
			KCP_STRINGIFY(KCP_MAX_RESPONSE_LINE) " bytes";
	if (c == '\r')
		return "carriage return in response";
	if (c == '\0')
		return "NUL byte in response";
	if (c == '"')
		return parser->line_len == 0 ?
			"quoted identifier in response" :
			"double quote in response";
	return NULL;
}

/* Length of the run of spaces at line[pos..len). */
static size_t
kcp_span_spaces(const char *line, size_t pos, size_t len)
{
	size_t		start = pos;

	while (pos < len && line[pos] == ' ')
		pos++;
	return pos - start;
}

/* Length of the run of non-spaces at line[pos..len). */
static size_t
kcp_span_word(const char *line, size_t pos, size_t len)
{
	size_t		start = pos;

	while (pos < len && line[pos] != ' ')
		pos++;
	return pos - start;
}

/*
 * Decode a status word.  Only the exact, uppercase words the reference
 * server sends are accepted.
 */
static const char *
kcp_parse_status(const char *word, size_t len, KcpStatus *status)
{
	if (len == 2 && memcmp(word, "OK", 2) == 0)
		*status = KCP_STATUS_OK;
	else if (len == 5 && memcmp(word, "ERROR", 5) == 0)
		*status = KCP_STATUS_ERROR;
	else
		return "unknown response status";
	return NULL;
}

/*
 * Parse a complete line (without its '\n'; the bytes have already passed
 * kcp_check_line_byte()) into *response.  Returns NULL on success, else a
 * static error message.
 */
static const char *
kcp_parse_line(const char *line, size_t len, KcpResponse *response)
{
	size_t		id_len;
	size_t		status_pos;
	size_t		status_len;
	KcpStatus	status;
	const char *error;

	if (len == 0)
		return "empty response line";
	if (kcp_span_spaces(line, 0, len) == len)
		return "blank response line";

	id_len = kcp_span_word(line, 0, len);
	if (id_len == 0)
		return "response line starts with a space";

	status_pos = id_len + kcp_span_spaces(line, id_len, len);
	if (status_pos == len)
		return "missing status in response";

	status_len = kcp_span_word(line, status_pos, len);
	if (status_pos + status_len != len)
		return "trailing text after response status";

	error = kcp_parse_status(line + status_pos, status_len, &status);
	if (error != NULL)
		return error;

	memcpy(response->request_id, line, id_len);
	response->request_id[id_len] = '\0';
	response->request_id_len = id_len;
	response->status = status;
	return NULL;
}

/* Enter the sticky error state. */
static KcpParseResult
kcp_parser_fail(KcpParser *parser, const char *error)
{
	parser->error = error;
	parser->line_len = 0;
	return KCP_PARSE_PROTOCOL_ERROR;
}

/*
 * kcp_parser_feed
 *		Consume input until one response, the end of input, or an error.
 *
 * On a protocol error *consumed counts the bytes up to and including the
 * offending one (the '\n' for errors only visible at the end of a line).
 * Once in the error state, every call returns KCP_PARSE_PROTOCOL_ERROR
 * with *consumed = 0 until kcp_parser_reset().
 */
KcpParseResult
kcp_parser_feed(KcpParser *parser, const char *data, size_t len,
				size_t *consumed, KcpResponse *response)
{
	size_t		i;

	*consumed = 0;
	if (parser->error != NULL)
		return KCP_PARSE_PROTOCOL_ERROR;

	for (i = 0; i < len; i++)
	{
		const char *error;

		if (data[i] == '\n')
		{
			*consumed = i + 1;
			error = kcp_parse_line(parser->line, parser->line_len, response);
			if (error != NULL)
				return kcp_parser_fail(parser, error);
			parser->line_len = 0;
			return KCP_PARSE_RESPONSE;
		}

		error = kcp_check_line_byte(parser, data[i]);
		if (error != NULL)
		{
			*consumed = i + 1;
			return kcp_parser_fail(parser, error);
		}
		parser->line[parser->line_len++] = data[i];
	}

	*consumed = len;
	return KCP_PARSE_NEED_MORE;
}
