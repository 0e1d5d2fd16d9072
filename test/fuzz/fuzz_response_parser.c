/*-------------------------------------------------------------------------
 *
 * fuzz_response_parser.c
 *	  libFuzzer target for the incremental KCP response parser.
 *
 * The input is a byte stream as the server could send it.  It is parsed
 * three ways: whole buffer, one byte at a time, and in chunks of varying
 * sizes derived from the input; every chunk is copied into a heap buffer of
 * exactly its size so that AddressSanitizer catches any read past it.  The
 * three runs must report the same responses and the same error at the same
 * stream offsets.  Each result is also checked against an independent
 * line validator written here: a response must be a valid line with that
 * identifier and status, and an error must be reported at the first byte
 * that makes the current line impossible.  Any mismatch calls abort().
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_response_parser.c
 *
 *-------------------------------------------------------------------------
 */
#include "kcp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One parser result and the stream offset just after it. */
typedef struct Event
{
	KcpParseResult result;
	size_t		end;
	KcpStatus	status;
	char		request_id[KCP_MAX_RESPONSE_LINE + 1];
	const char *error;
} Event;

typedef struct EventList
{
	Event	   *events;
	size_t		n;
} EventList;

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_response_parser: %s\n", what);
	abort();
}

/* A byte that can never appear in a valid response line. */
static int
ref_forbidden_byte(unsigned char c)
{
	return c == '\r' || c == '\0' || c == '"' || c == '\n';
}

/* The status word: exactly "OK" or "ERROR". */
static int
ref_status(const uint8_t *word, size_t len, KcpStatus *status)
{
	if (len == 2 && memcmp(word, "OK", 2) == 0)
		*status = KCP_STATUS_OK;
	else if (len == 5 && memcmp(word, "ERROR", 5) == 0)
		*status = KCP_STATUS_ERROR;
	else
		return 0;
	return 1;
}

/*
 * Independent validator: is line[0..len) (without '\n') a valid response?
 * On success returns the identifier length and the status.
 */
static int
ref_valid_line(const uint8_t *line, size_t len, size_t *id_len, KcpStatus *status)
{
	size_t		i = 0;

	if (len > KCP_MAX_RESPONSE_LINE)
		return 0;
	while (i < len && line[i] != ' ' && !ref_forbidden_byte(line[i]))
		i++;
	if (i == 0 || i == len || line[i] != ' ')
		return 0;
	*id_len = i;
	while (i < len && line[i] == ' ')
		i++;
	return ref_status(line + i, len - i, status);
}

/* Could line[0..len) (no '\n' yet) still be the start of a valid line? */
static int
ref_possible_prefix(const uint8_t *line, size_t len)
{
	size_t		i;

	if (len > KCP_MAX_RESPONSE_LINE)
		return 0;
	for (i = 0; i < len; i++)
	{
		if (ref_forbidden_byte(line[i]))
			return 0;
	}
	return 1;
}

/* Check a response event against the stream and the validator. */
static void
check_response(const uint8_t *data, size_t start, const Event *ev)
{
	size_t		id_len;
	KcpStatus	status;

	if (ev->end <= start || data[ev->end - 1] != '\n')
		fail("response does not end at a newline");
	if (memchr(data + start, '\n', ev->end - 1 - start) != NULL)
		fail("response spans two lines");
	if (!ref_valid_line(data + start, ev->end - 1 - start, &id_len, &status))
		fail("invalid line accepted as a response");
	if (strlen(ev->request_id) != id_len ||
		memcmp(ev->request_id, data + start, id_len) != 0)
		fail("wrong response identifier");
	if (ev->status != status)
		fail("wrong response status");
}

/* Check an error event: reported at the first byte that breaks the line. */
static void
check_error(const uint8_t *data, size_t start, const Event *ev)
{
	size_t		id_len;
	KcpStatus	status;
	size_t		last;

	if (ev->error == NULL)
		fail("protocol error without a message");
	if (ev->end <= start)
		fail("protocol error consumed nothing");
	last = ev->end - 1;
	if (!ref_possible_prefix(data + start, last - start))
		fail("protocol error reported late");
	if (data[last] == '\n')
	{
		if (ref_valid_line(data + start, last - start, &id_len, &status))
			fail("valid line rejected");
	}
	else if (ref_possible_prefix(data + start, last - start + 1))
		fail("protocol error on a possible line prefix");
}

/*
 * Parse data, feeding it whole (mode 0), one byte at a time (mode 1) or in
 * chunks of 1..97 bytes drawn from a PRNG seeded by the input (mode 2).
 * Records the results into list (room for size + 1 events) and checks the
 * parser's own invariants on the way.
 */
static void
parse_chunked(const uint8_t *data, size_t size, int mode, uint64_t seed,
			  EventList *list)
{
	KcpParser	parser;
	size_t		pos = 0;
	uint64_t	state = seed | 1;

	list->n = 0;
	kcp_parser_reset(&parser);
	while (pos < size)
	{
		size_t		avail = size - pos;
		size_t		feed;
		char	   *chunk;
		size_t		consumed = (size_t) -1;
		KcpResponse response;
		KcpParseResult r;
		Event	   *ev;

		if (mode == 0)
			feed = avail;
		else if (mode == 1)
			feed = 1;
		else
		{
			state ^= state << 13;
			state ^= state >> 7;
			state ^= state << 17;
			feed = (state & 3) == 0 ? 1 : 1 + (size_t) ((state >> 8) % 97);
			if (feed > avail)
				feed = avail;
		}

		/* exact-size heap copy: any overread is caught by ASan */
		chunk = malloc(feed);
		if (chunk == NULL)
			abort();
		memcpy(chunk, data + pos, feed);
		r = kcp_parser_feed(&parser, chunk, feed, &consumed, &response);
		free(chunk);

		if (consumed > feed)
			fail("consumed more than fed");
		pos += consumed;
		if (r == KCP_PARSE_NEED_MORE)
		{
			if (consumed != feed)
				fail("NEED_MORE without consuming everything");
			if (parser.error != NULL)
				fail("NEED_MORE with an error set");
			continue;
		}
		if (consumed == 0)
			fail("result without consuming a byte");

		ev = &list->events[list->n++];
		memset(ev, 0, sizeof(*ev));
		ev->result = r;
		ev->end = pos;
		if (r == KCP_PARSE_RESPONSE)
		{
			if (response.request_id_len > KCP_MAX_RESPONSE_LINE ||
				response.request_id[response.request_id_len] != '\0')
				fail("response identifier not NUL-terminated");
			memcpy(ev->request_id, response.request_id,
				   response.request_id_len + 1);
			ev->status = response.status;
			continue;
		}
		if (r != KCP_PARSE_PROTOCOL_ERROR)
			fail("unknown parse result");
		ev->error = parser.error;

		/* sticky until reset */
		consumed = 1;
		if (kcp_parser_feed(&parser, "1 OK\n", 5, &consumed, &response) !=
			KCP_PARSE_PROTOCOL_ERROR || consumed != 0 ||
			parser.error != ev->error)
			fail("error state not sticky");
		return;
	}

	/* no error: the unfinished tail must still be a possible line */
	{
		size_t		start = list->n ? list->events[list->n - 1].end : 0;

		if (parser.line_len != size - start ||
			!ref_possible_prefix(data + start, size - start))
			fail("unfinished line not kept or not possible");
	}
}

static void
check_events(const uint8_t *data, const EventList *list)
{
	size_t		start = 0;
	size_t		i;

	for (i = 0; i < list->n; i++)
	{
		const Event *ev = &list->events[i];

		if (ev->result == KCP_PARSE_RESPONSE)
			check_response(data, start, ev);
		else
			check_error(data, start, ev);
		start = ev->end;
	}
}

static void
compare_events(const EventList *a, const EventList *b)
{
	size_t		i;

	if (a->n != b->n)
		fail("chunking changed the number of results");
	for (i = 0; i < a->n; i++)
	{
		const Event *x = &a->events[i];
		const Event *y = &b->events[i];

		if (x->result != y->result || x->end != y->end ||
			x->status != y->status || x->error != y->error ||
			strcmp(x->request_id, y->request_id) != 0)
			fail("chunking changed a result");
	}
}

/* FNV-1a, to derive the chunking pattern from the input. */
static uint64_t
hash_input(const uint8_t *data, size_t size)
{
	uint64_t	h = UINT64_C(14695981039346656037);
	size_t		i;

	for (i = 0; i < size; i++)
	{
		h ^= data[i];
		h *= UINT64_C(1099511628211);
	}
	return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EventList	whole;
	EventList	bytewise;
	EventList	chunked;
	uint64_t	seed = hash_input(data, size);

	whole.events = malloc((size + 1) * sizeof(Event));
	bytewise.events = malloc((size + 1) * sizeof(Event));
	chunked.events = malloc((size + 1) * sizeof(Event));
	if (!whole.events || !bytewise.events || !chunked.events)
		abort();

	parse_chunked(data, size, 0, seed, &whole);
	check_events(data, &whole);
	parse_chunked(data, size, 1, seed, &bytewise);
	compare_events(&whole, &bytewise);
	parse_chunked(data, size, 2, seed, &chunked);
	compare_events(&whole, &chunked);

	free(whole.events);
	free(bytewise.events);
	free(chunked.events);
	return 0;
}
