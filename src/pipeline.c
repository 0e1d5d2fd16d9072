/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *	  The delivery worker's requests on one connection: reading due outbox
 *	  entries after a cursor, encoding each as one KCP request, queueing it
 *	  on the connection, and matching the server's answers to it.
 *
 *	  Requests are pipelined up to kairoi.max_in_flight and matched to
 *	  responses by request identifier (a per-connection base-36 counter,
 *	  never user data).  The answers are kept for the worker to apply to
 *	  the outbox in its own transaction.
 *
 *	  The outbox is read in seq order after a cursor, so that neither rows
 *	  in flight nor the dead rows of acknowledged entries are read again;
 *	  the worker rewinds the cursor when rows may have appeared behind it.
 *
 *	  The reference server corrupts non-ASCII text that straddles one of
 *	  its 2048-byte reads, so requests holding non-ASCII bytes go out in
 *	  single writes of at most one TCP segment (kairoi.non_ascii_write_limit),
 *	  each once the server has provably read everything sent before it, and
 *	  nothing follows one until the server has provably read it: until the
 *	  first answer to one of its requests (see may_queue_now).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "guc.h"
#include "outbox.h"
#include "pipeline.h"

/* One request sent and not yet answered */
typedef struct InFlight
{
	uint64		request_number; /* hash key; the request id in base 36 */
	char		kind;
	int64		seq;
	int64		version;
	ItemPointerData tid;		/* the row version read, for the delete */
	dlist_node	node;			/* in send order */
} InFlight;

/*
 * A single write of requests holding non-ASCII text, being packed by one
 * pipeline_fetch_and_send() call.  The reference server corrupts a
 * character that one of its 2048-byte reads cuts in two.  A write of at
 * most one TCP segment, sent when the server has read everything before
 * it, arrives whole and is read whole: no read can end inside it.  So an
 * answer to any of its requests proves that the server has read all of it.
 */
typedef struct NonAsciiWrite
{
	int			limit;			/* bound in bytes; -1 while none is open */
	int			bytes;			/* queued in it so far */
	int			requests;		/* queued in it so far */
} NonAsciiWrite;

static void
answers_init(AnswerList *list)
{
	list->capacity = 64;
	list->count = 0;
	list->items = palloc(list->capacity * sizeof(Answer));
}

static void
answers_append(AnswerList *list, const InFlight *item)
{
	if (list->count == list->capacity)
	{
		list->capacity = Max(64, list->capacity * 2);
		list->items = repalloc_huge(list->items,
									list->capacity * sizeof(Answer));
	}
	list->items[list->count].kind = item->kind;
	list->items[list->count].seq = item->seq;
	list->items[list->count].version = item->version;
	list->items[list->count].tid = item->tid;
	list->count++;
}

/* In the caller's memory context, which must live as long as the worker */
void
pipeline_init(Pipeline *p)
{
	HASHCTL		ctl;

	memset(p, 0, sizeof(*p));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(InFlight);
	p->in_flight = hash_create("kairoi in-flight requests", 1024, &ctl,
							   HASH_ELEM | HASH_BLOBS);
	dlist_init(&p->in_flight_order);
	answers_init(&p->acknowledged);
	answers_init(&p->rejected);
	p->maybe_pending = true;
}

void
pipeline_restart_numbering(Pipeline *p)
{
	p->next_request_number = 0;
	p->unread_from = 0;
	p->single_write_start = p->single_write_end = 0;
}

void
pipeline_rewind(Pipeline *p, int64 seq)
{
	p->cursor = Min(p->cursor, seq - 1);
	p->maybe_pending = true;
}

bool
pipeline_has_room(const Pipeline *p)
{
	return !p->draining && p->n_in_flight < kairoi_max_in_flight;
}

void
pipeline_forget_answers(Pipeline *p)
{
	p->acknowledged.count = 0;
	p->rejected.count = 0;
}

/* ---------------------------------------------------------------------
 * In-flight requests
 * ---------------------------------------------------------------------
 */

static void
in_flight_add(Pipeline *p, uint64 request_number, const OutboxEntry *entry)
{
	bool		found;
	InFlight   *item = hash_search(p->in_flight, &request_number, HASH_ENTER,
								   &found);

	Assert(!found);
	if (p->n_in_flight == 0)
		p->last_progress = GetCurrentTimestamp();	/* the clock starts now */
	item->kind = entry->kind;
	item->seq = entry->seq;
	item->version = entry->version;
	item->tid = entry->tid;
	dlist_push_tail(&p->in_flight_order, &item->node);
	p->n_in_flight++;
}

static void
in_flight_remove(Pipeline *p, InFlight *item)
{
	dlist_delete(&item->node);
	hash_search(p->in_flight, &item->request_number, HASH_REMOVE, NULL);
	p->n_in_flight--;
}

/* Has the server provably read every request sent? */
static bool
everything_sent_is_read(const Pipeline *p)
{
	return p->unread_from >= p->next_request_number;
}

/*
 * An answer to request_number: the server has read that request, hence
 * everything sent before it (it reads the connection in order) and, if
 * it belongs to a single write, all of that write (read whole).
 */
static void
note_read_through(Pipeline *p, uint64 request_number)
{
	p->unread_from = Max(p->unread_from, request_number + 1);
	if (request_number >= p->single_write_start &&
		request_number < p->single_write_end)
		p->unread_from = Max(p->unread_from, p->single_write_end);
	if (everything_sent_is_read(p))
		p->draining = false;
}

void
pipeline_forget_in_flight(Pipeline *p)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &p->in_flight_order)
	{
		/* cppcheck-suppress nullPointer ; offsetof arithmetic, not NULL */
		in_flight_remove(p, dlist_container(InFlight, node, iter.cur));
	}
	p->draining = false;
	pipeline_rewind(p, 0);
}

/* Parse a base-36 request identifier; false if it is not one of ours */
static bool
parse_request_number(const char *id, uint64 *number)
{
	uint64		n = 0;

	if (*id == '\0' || strlen(id) > KCP_MAX_REQUEST_ID_LEN)
		return false;
	for (; *id; id++)
	{
		int			digit;

		if (*id >= '0' && *id <= '9')
			digit = *id - '0';
		else if (*id >= 'a' && *id <= 'z')
			digit = *id - 'a' + 10;
		else
			return false;
		if (n > (PG_UINT64_MAX - digit) / 36)
			return false;
		n = n * 36 + digit;
	}
	*number = n;
	return true;
}

bool
pipeline_handle_response(Pipeline *p, const KcpResponse *response)
{
	uint64		number;
	InFlight   *item;

	if (!parse_request_number(response->request_id, &number))
		return false;
	item = hash_search(p->in_flight, &number, HASH_FIND, NULL);
	if (item == NULL)
		return false;

	answers_append(response->status == KCP_STATUS_OK ? &p->acknowledged
				   : &p->rejected, item);
	in_flight_remove(p, item);
	note_read_through(p, number);
	p->last_progress = GetCurrentTimestamp();
	return true;
}

/* ---------------------------------------------------------------------
 * Sending entries
 * ---------------------------------------------------------------------
 */

/* The KCP arguments of an entry's request */
static int
entry_arguments(const OutboxEntry *entry, KcpArgument *args)
{
	int			n = 0;

	if (entry->kind == OUTBOX_KIND_RULE)
	{
		args[n++] = (KcpArgument) {"RULE", 4};
		args[n++] = (KcpArgument) {"SET", 3};
	}
	else
		args[n++] = (KcpArgument) {"SET", 3};
	args[n++] = (KcpArgument) {entry->identifier, strlen(entry->identifier)};
	for (int i = 0; i < entry->nargs; i++)
		args[n++] = (KcpArgument) {entry->args[i], strlen(entry->args[i])};
	return n;
}

/*
 * The request line of an entry, encoded once: palloc'd bytes (no NUL),
 * their number in *size.
 */
static char *
encode_entry(const OutboxEntry *entry, uint64 request_number, size_t *size)
{
	KcpArgument *args = palloc((entry->nargs + 3) * sizeof(KcpArgument));
	int			nargs = entry_arguments(entry, args);
	char		request_id[KCP_MAX_REQUEST_ID_LEN + 1];
	char	   *request;

	kcp_format_request_id(request_number, request_id);
	*size = kcp_request_size(request_id, args, nargs);
	request = palloc(*size);
	(void) kcp_encode_request(request, request_id, args, nargs);
	pfree(args);
	return request;
}

/*
 * Bound of a single write: kairoi.non_ascii_write_limit, lowered to the
 * connection's segment size if the path's is smaller.
 */
static int
non_ascii_write_limit(KairoiConnection *conn)
{
	int			segment = connection_max_segment(conn);

	if (segment > 0)
		return Min(kairoi_non_ascii_write_limit, segment);
	return kairoi_non_ascii_write_limit;
}

/*
 * Open a single write for a first request of first_size bytes; the server
 * has read everything sent, so nothing is queued.  A first request larger
 * than the bound goes alone and is written like any other: no write of
 * that size is protected, and insisting on one send() for it could fail
 * forever on a connection whose socket never takes that much at once.
 */
static void
open_non_ascii_write(Pipeline *p, KairoiConnection *conn,
					 NonAsciiWrite *write, size_t first_size)
{
	Assert(everything_sent_is_read(p));
	p->single_write_start = p->single_write_end = p->next_request_number;
	write->limit = non_ascii_write_limit(conn);
	write->bytes = 0;
	if (first_size <= (size_t) write->limit)
		connection_begin_single_write(conn);
}

/*
 * True if an open single write has no room left for a request of size
 * bytes.  The first request always fits: one larger than the bound goes
 * alone.
 */
static bool
non_ascii_write_is_full(const NonAsciiWrite *write, size_t size)
{
	return write->bytes > 0 && write->bytes + size > (size_t) write->limit;
}

/*
 * May this encoded request be queued now?  False if it must wait until
 * the server has provably read everything sent.
 *
 * Requests are pipelined up to the window until one holds non-ASCII text
 * (a byte >= 0x80 in the request is one in an argument: encoding adds only
 * ASCII).  That one waits until the server has provably read everything
 * sent (note_read_through), then opens a single write (NonAsciiWrite); the
 * requests after it, ASCII or not, join it while they fit in its bound.
 * A request larger than the bound goes alone, written as the socket takes
 * it.  From the opening of a single write the worker drains: nothing more
 * is sent until the server has provably read it (the first answer to any
 * of its requests), so it is the only thing the server has to read.  The
 * next single write may then go while the server still executes this
 * one: the server answers a write of ~28 requests in two reply frames,
 * and waiting for the second would cost a frame per write.
 */
static bool
may_queue_now(Pipeline *p, KairoiConnection *conn, NonAsciiWrite *write,
			  const char *request, size_t size)
{
	if (write->limit >= 0)
		return !non_ascii_write_is_full(write, size);
	if (!kcp_has_non_ascii(request, size))
		return true;
	p->draining = true;
	if (!everything_sent_is_read(p))
		return false;
	open_non_ascii_write(p, conn, write, size);
	return true;
}

/* Queue an entry's request and return true, or return false if it must wait */
static bool
send_entry(Pipeline *p, KairoiConnection *conn, const OutboxEntry *entry,
		   NonAsciiWrite *write)
{
	size_t		size;
	char	   *request = encode_entry(entry, p->next_request_number, &size);
	bool		queued = may_queue_now(p, conn, write, request, size);

	if (queued)
	{
		connection_queue_bytes(conn, request, size);
		if (write->limit >= 0)
		{
			write->bytes += (int) size;
			write->requests++;
		}
		in_flight_add(p, p->next_request_number, entry);
		p->next_request_number++;
		if (write->limit >= 0)
			p->single_write_end = p->next_request_number;
	}
	pfree(request);
	return queued;
}

/*
 * Rows to read: a batch, within the window.  After a single write of N
 * non-ASCII requests the next write most likely holds about as many, and
 * the rows read beyond it are read again next round: read 2N + 1, not a
 * whole batch (reading 500 rows for 28 cost ~10% of the rate of packed
 * writes, bench/nonascii.sh).
 */
static int
fetch_limit(Pipeline *p)
{
	int			limit = Min(kairoi_batch_size,
							kairoi_max_in_flight - p->n_in_flight);

	if (p->last_single_write > 0)
		limit = Min(limit, 2 * p->last_single_write + 1);
	return limit;
}

/*
 * Only rows after the cursor can be read: the seqs to exclude are those
 * after it in flight, and those answered but not yet applied (the worker
 * may send before it applies answers).  Returns their number.
 */
static int
seqs_to_exclude(Pipeline *p, int64 *exclude)
{
	int			nexclude = 0;
	dlist_iter	iter;

	dlist_foreach(iter, &p->in_flight_order)
	{
		/* cppcheck-suppress nullPointer ; offsetof arithmetic, not NULL */
		int64		seq = dlist_container(InFlight, node, iter.cur)->seq;

		if (seq > p->cursor)
			exclude[nexclude++] = seq;
	}
	for (int i = 0; i < p->acknowledged.count; i++)
		if (p->acknowledged.items[i].seq > p->cursor)
			exclude[nexclude++] = p->acknowledged.items[i].seq;
	for (int i = 0; i < p->rejected.count; i++)
		if (p->rejected.items[i].seq > p->cursor)
			exclude[nexclude++] = p->rejected.items[i].seq;
	return nexclude;
}

void
pipeline_fetch_and_send(Pipeline *p, KairoiConnection *conn)
{
	int			limit = fetch_limit(p);
	int64	   *exclude = palloc((p->n_in_flight + p->acknowledged.count +
								  p->rejected.count + 1) * sizeof(int64));
	OutboxEntry *entries = palloc(limit * sizeof(OutboxEntry));
	NonAsciiWrite write = {-1, 0, 0};
	int			nexclude = seqs_to_exclude(p, exclude);
	int			nfetched;

	nfetched = outbox_fetch(p->cursor, exclude, nexclude, limit, entries);
	p->maybe_pending = (nfetched == limit);
	for (int i = 0; i < nfetched; i++)
	{
		if (!send_entry(p, conn, &entries[i], &write))
			break;
		p->cursor = Max(p->cursor, entries[i].seq);
	}
	p->last_single_write = write.requests;
	if (p->draining)
		p->maybe_pending = true;
}
