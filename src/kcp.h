/*-------------------------------------------------------------------------
 *
 * kcp.h
 *	  The Kairoi Client Protocol (KCP) codec: request encoding and an
 *	  incremental response parser.
 *
 * This header and kcp.c are plain C99 with no PostgreSQL dependency, so the
 * codec can be unit tested, sanitized and fuzzed on its own.  The codec
 * never allocates: callers size buffers with the *_size() functions.
 *
 * Protocol summary (see shared/kcp.md): a request is a line of arguments
 * separated by spaces and ended by '\n'; the first argument is a request
 * identifier chosen by the client.  An argument is either simple (one or
 * more bytes, none of them space, '"' or '\n') or universal ('"' ... '"'
 * with '\\' and '\"' as the only escapes).  A response is "<id> OK\n" or
 * "<id> ERROR\n".
 *
 *-------------------------------------------------------------------------
 */
#ifndef KCP_H
#define KCP_H

#include <stddef.h>
#include <stdint.h>

/* Longest request identifier kcp_format_request_id() produces (no NUL). */
#define KCP_MAX_REQUEST_ID_LEN 13

/*
 * Longest response line the parser accepts, '\n' excluded.  Our request
 * identifiers are at most KCP_MAX_REQUEST_ID_LEN bytes, so anything longer
 * than this is not an answer to one of our requests.
 */
#define KCP_MAX_RESPONSE_LINE 64

/* One argument of a request: bytes and their length (may contain NULs). */
typedef struct KcpArgument
{
	const char *data;
	size_t		len;
} KcpArgument;

/*
 * Format a request identifier: n in base 36 (digits then lowercase
 * letters), at most KCP_MAX_REQUEST_ID_LEN bytes.  Writes a NUL-terminated
 * string into buf (at least KCP_MAX_REQUEST_ID_LEN + 1 bytes) and returns
 * its length.
 */
extern size_t kcp_format_request_id(uint64_t n, char *buf);

/*
 * True if the argument must use the universal form: it is empty, or holds a
 * space, '"', or any byte below 0x20 or equal to 0x7F
 * (quoting control bytes keeps them from being read as line structure by
 * any peer).
 */
extern int	kcp_argument_needs_quotes(const char *data, size_t len);

/* Bytes kcp_encode_argument() writes for this argument. */
extern size_t kcp_argument_size(const char *data, size_t len);

/*
 * Encode one argument into dst (room for kcp_argument_size() bytes), in
 * the simple form when allowed, else the universal form with '\' and '"'
 * escaped.  Returns the number of bytes written.  No NUL is written.
 */
extern size_t kcp_encode_argument(char *dst, const char *data, size_t len);

/*
 * Bytes of a whole request line: the identifier, each argument preceded by
 * one space, and the final '\n'.
 */
extern size_t kcp_request_size(const char *request_id,
							   const KcpArgument *args, int nargs);

/*
 * Encode a whole request line into dst (room for kcp_request_size()
 * bytes).  request_id must be a simple argument (as produced by
 * kcp_format_request_id); it is written as is.  Returns bytes written.
 */
extern size_t kcp_encode_request(char *dst, const char *request_id,
								 const KcpArgument *args, int nargs);

/* True if any byte of the buffer is >= 0x80 (non-ASCII UTF-8). */
extern int	kcp_has_non_ascii(const char *data, size_t len);

typedef enum KcpStatus
{
	KCP_STATUS_OK,
	KCP_STATUS_ERROR
} KcpStatus;

typedef struct KcpResponse
{
	char		request_id[KCP_MAX_RESPONSE_LINE + 1];	/* NUL-terminated */
	size_t		request_id_len;
	KcpStatus	status;
} KcpResponse;

typedef enum KcpParseResult
{
	KCP_PARSE_RESPONSE,			/* *response holds one complete response */
	KCP_PARSE_NEED_MORE,		/* all input consumed, no complete line yet */
	KCP_PARSE_PROTOCOL_ERROR	/* the stream is broken; see parser->error */
} KcpParseResult;

/*
 * Incremental response parser.  Feed it whatever the socket returned; it
 * keeps a partial line between calls.  After a protocol error it stays in
 * the error state until kcp_parser_reset().
 */
typedef struct KcpParser
{
	char		line[KCP_MAX_RESPONSE_LINE];
	size_t		line_len;
	const char *error;			/* static message, NULL unless broken */
} KcpParser;

extern void kcp_parser_reset(KcpParser *parser);

/*
 * Consume bytes from data[0..len) until one complete response line has
 * been read (KCP_PARSE_RESPONSE, *consumed = bytes used, which may be less
 * than len: call again with the rest), or all input is used without a
 * complete line (KCP_PARSE_NEED_MORE, *consumed = len), or the input is not
 * a valid response (KCP_PARSE_PROTOCOL_ERROR, parser->error says why).
 *
 * A valid response line is: a non-empty identifier of bytes other than
 * space, '"', '\r' and '\n'; one or more spaces; "OK" or "ERROR"; '\n'.
 * Anything else (empty line, CR, trailing text, lowercase status, quoted
 * identifier, line longer than KCP_MAX_RESPONSE_LINE) is a protocol error.
 */
extern KcpParseResult kcp_parser_feed(KcpParser *parser,
									  const char *data, size_t len,
									  size_t *consumed,
									  KcpResponse *response);

#endif							/* KCP_H */
