/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker: the main loop that moves committed outbox rows
 *	  to the Kairoi server and removes them once acknowledged.
 *
 *	  One worker serves one database, started by the launcher; its state is
 *	  published in the database's slot in shared memory.  A worker that
 *	  finds no extension in its database (a probe, or DROP EXTENSION)
 *	  releases the slot and exits; one asked to restart (new database
 *	  settings) exits and the launcher starts a new one.
 *
 *	  It sleeps on its latch together with its socket and a timeout, so it
 *	  never busy-loops and reacts at once to SIGTERM, SIGHUP and postmaster
 *	  death; SIGTERM ends it through die(), like any backend.  Before
 *	  sleeping it says in its slot whether a commit could give it work now
 *	  (connected with room in the window, or idle with the connection
 *	  closed): only then does the next commit set its latch, so a burst of
 *	  commits wakes it once and commits during a backoff not at all.
 *
 *	  With nothing in flight and an empty outbox for kairoi.idle_timeout,
 *	  it closes its connection (the reference server spends CPU on every
 *	  open connection) and opens it again on the next commit.
 *
 *	  Requests are pipelined up to kairoi.max_in_flight and matched to
 *	  responses by request identifier (a per-connection base-36 counter,
 *	  never user data).  Any transport failure drops the connection and
 *	  everything in flight: the rows are still in the outbox and are sent
 *	  again after a capped exponential backoff.  An ERROR answer counts an
 *	  attempt on that row only (see outbox.c).
 *
 *	  The outbox is read in seq order after a cursor, so that neither rows
 *	  in flight nor the dead rows of acknowledged entries are read again.
 *	  The cursor goes back when rows may have appeared behind it: a commit
 *	  reports the lowest seq it wrote (a transaction can take its seq early
 *	  and commit late, or replace a row already sent), a retry falls due, a
 *	  connection is lost, and at every safety poll (which also catches rows
 *	  an application held locked, and COMMIT PREPARED).
 *
 *	  The reference server corrupts non-ASCII text that straddles one of
 *	  its 2048-byte reads, so requests holding non-ASCII bytes go out in
 *	  single writes of at most one TCP segment (kairoi.non_ascii_write_limit),
 *	  each when nothing else is in flight, and nothing follows one until
 *	  all of it is answered (see send_entry).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "connection.h"
#include "kairoi.h"
#include "kcp.h"
#include "outbox.h"

#define WORKER_LOCK_TIMEOUT "1s"

/* This worker's database slot in shared memory */
static KairoiDatabaseSlot *MySlot = NULL;

/* One request sent and not yet answered */
typedef struct InFlight
{
	uint64		request_number; /* hash key; the request id in base 36 */
	int64		seq;
	int64		version;
	ItemPointerData tid;		/* the row version read, for the delete */
	dlist_node	node;			/* in send order */
} InFlight;

/* An answer to apply to the outbox */
typedef struct Answer
{
	int64		seq;
	int64		version;
	ItemPointerData tid;
} Answer;

typedef struct AnswerList
{
	Answer	   *items;
	int			count;
	int			capacity;
} AnswerList;

typedef struct Worker
{
	KairoiConnection conn;
	char		server[KAIROI_SERVER_MAXLEN];	/* address of conn */
	HTAB	   *in_flight;
	dlist_head	in_flight_order;
	int			n_in_flight;
	uint64		next_request_number;
	bool		draining;		/* send nothing until nothing is in flight */
	bool		single_write_in_flight; /* what is in flight is one single
										 * write of non-ASCII text */
	int			last_single_write;	/* requests in the last fetch's single
									 * write of non-ASCII text, or 0 */
	AnswerList	acknowledged;
	AnswerList	rejected;
	bool		maybe_pending;	/* the outbox may hold unsent due rows */
	int64		cursor;			/* rows up to this seq were read */
	int			failures;		/* consecutive transport failures */
	long		logged_backoff_ms;	/* backoff in the last failure logged,
									 * 0 once connected */
	bool		ever_connected;
	bool		idle_closed;	/* not connected: nothing to deliver */
	TimestampTz idle_since;		/* connected with nothing to do, or 0 */
	bool		outbox_has_entries; /* result of check_outbox */
	TimestampTz connect_started;
	TimestampTz reconnect_at;
	TimestampTz last_progress;	/* connected, or last response read */
	TimestampTz next_poll;		/* safety poll of the outbox */
	TimestampTz next_retry;		/* earliest retry of a rejected row, or 0 */
	TimestampTz database_retry; /* after a failed transaction */
	TimestampTz commit_batch_until; /* commits do not wake us before this */
	MemoryContext iteration_context;
	WaitEventSet *wait_set;		/* latch, postmaster death and conn's socket */
	int			socket_event;	/* position of the socket in wait_set, or -1 */
} Worker;

static void
publish_state(Worker *w, KairoiWorkerState state)
{
	TimestampTz now = GetCurrentTimestamp();	/* not under the spinlock */

	SpinLockAcquire(&MySlot->mutex);
	MySlot->state = state;
	MySlot->in_flight = w->n_in_flight;
	strlcpy(MySlot->server, w->server, KAIROI_SERVER_MAXLEN);
	if (state == KAIROI_STATE_CONNECTED && MySlot->connected_at == 0)
		MySlot->connected_at = now;
	else if (state != KAIROI_STATE_CONNECTED)
		MySlot->connected_at = 0;
	SpinLockRelease(&MySlot->mutex);
}

static void
count_acknowledged(uint64 n)
{
	SpinLockAcquire(&MySlot->mutex);
	MySlot->acknowledged += n;
	SpinLockRelease(&MySlot->mutex);
}

static void
publish_pending(int64 pending)
{
	SpinLockAcquire(&MySlot->mutex);
	MySlot->pending = pending;
	SpinLockRelease(&MySlot->mutex);
}

static void
unpublish_worker(int code, Datum arg)
{
	SpinLockAcquire(&MySlot->mutex);
	if (MySlot->worker_pid == MyProcPid)
	{
		MySlot->worker_pid = 0;
		MySlot->worker_latch = NULL;
		MySlot->wants_wakeup = false;
		MySlot->state = KAIROI_STATE_STARTING;
		MySlot->in_flight = 0;
		MySlot->connected_at = 0;
	}
	SpinLockRelease(&MySlot->mutex);
	ConditionVariableBroadcast(&kairoi_shared->progress_cv);
}

/*
 * Take the database's slot, claiming it if needed.  False if another worker
 * serves the database already, or if every slot is taken.
 */
static bool
publish_worker(Oid database, const char *datname)
{
	bool		taken = false;

	MySlot = kairoi_claim_slot(database);
	if (MySlot == NULL)
	{
		ereport(LOG,
				(errmsg("kairoi: database \"%s\" has the kairoi extension but cannot be served",
						datname),
				 errdetail("kairoi.max_databases (%d) databases are served already.",
						   kairoi_max_databases),
				 errhint("Raise kairoi.max_databases and restart PostgreSQL.")));
		return false;
	}

	SpinLockAcquire(&MySlot->mutex);
	if (MySlot->database == database && MySlot->worker_pid == 0)
	{
		MySlot->worker_pid = MyProcPid;
		MySlot->worker_latch = &MyProc->procLatch;
		MySlot->wants_wakeup = false;
		MySlot->restart_requested = false;
		MySlot->blocked = KAIROI_BLOCKED_NONE;
		MySlot->state = KAIROI_STATE_STARTING;
		MySlot->acknowledged = 0;
		MySlot->connection_attempts = 0;
		MySlot->pending = -1;
		strlcpy(NameStr(MySlot->datname), datname, NAMEDATALEN);
		taken = true;
	}
	SpinLockRelease(&MySlot->mutex);
	if (taken)
		before_shmem_exit(unpublish_worker, (Datum) 0);
	return taken;
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
	list->items[list->count].seq = item->seq;
	list->items[list->count].version = item->version;
	list->items[list->count].tid = item->tid;
	list->count++;
}

static void
answers_init(AnswerList *list)
{
	list->capacity = 64;
	list->count = 0;
	list->items = palloc(list->capacity * sizeof(Answer));
}

/* ---------------------------------------------------------------------
 * In-flight requests
 * ---------------------------------------------------------------------
 */

static void
in_flight_add(Worker *w, uint64 request_number, const OutboxEntry *entry)
{
	bool		found;
	InFlight   *item = hash_search(w->in_flight, &request_number, HASH_ENTER,
								   &found);

	Assert(!found);
	if (w->n_in_flight == 0)
		w->last_progress = GetCurrentTimestamp();	/* the clock starts now */
	item->seq = entry->seq;
	item->version = entry->version;
	item->tid = entry->tid;
	dlist_push_tail(&w->in_flight_order, &item->node);
	w->n_in_flight++;
}

static void
in_flight_remove(Worker *w, InFlight *item)
{
	dlist_delete(&item->node);
	hash_search(w->in_flight, &item->request_number, HASH_REMOVE, NULL);
	w->n_in_flight--;
	if (w->n_in_flight == 0)
	{
		w->draining = false;
		w->single_write_in_flight = false;
	}
}

/* Read the outbox again from seq on (0: from the start) */
static void
rewind_cursor(Worker *w, int64 seq)
{
	w->cursor = Min(w->cursor, seq - 1);
	w->maybe_pending = true;
}

static void
in_flight_forget_all(Worker *w)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &w->in_flight_order)
	{
		/* cppcheck-suppress nullPointer ; offsetof arithmetic, not NULL */
		in_flight_remove(w, dlist_container(InFlight, node, iter.cur));
	}
	w->draining = false;
	w->single_write_in_flight = false;
	rewind_cursor(w, 0);
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

static bool
handle_response(const KcpResponse *response, void *arg)
{
	Worker	   *w = (Worker *) arg;
	uint64		number;
	InFlight   *item;

	if (!parse_request_number(response->request_id, &number))
		return false;
	item = hash_search(w->in_flight, &number, HASH_FIND, NULL);
	if (item == NULL)
		return false;

	answers_append(response->status == KCP_STATUS_OK ? &w->acknowledged
				   : &w->rejected, item);
	in_flight_remove(w, item);
	w->last_progress = GetCurrentTimestamp();
	w->failures = 0;
	return true;
}

/* ---------------------------------------------------------------------
 * Connection life cycle
 * ---------------------------------------------------------------------
 */

static long
backoff_delay_ms(int failures)
{
	long		delay = kairoi_backoff_min_ms;

	for (int i = 1; i < failures && delay < kairoi_backoff_max_ms; i++)
		delay *= 2;
	return Min(delay, (long) kairoi_backoff_max_ms);
}

/*
 * The wait set registers the socket: drop it with the connection, since a
 * new socket may get the same descriptor number.
 */
static void
forget_wait_set(Worker *w)
{
	if (w->wait_set != NULL)
		FreeWaitEventSet(w->wait_set);
	w->wait_set = NULL;
	w->socket_event = -1;
}

/*
 * One LOG line per state change, not per retry: when a connection is lost
 * (or the first attempt fails), and when the backoff grows; the rest goes
 * to DEBUG1.  A long outage logs about log2(backoff_max / backoff_min)
 * lines, however many attempts it takes.
 */
static void
log_failure(Worker *w, const char *reason, long delay_ms)
{
	bool		first = (w->logged_backoff_ms == 0);

	if (first || delay_ms > w->logged_backoff_ms)
	{
		ereport(LOG,
				(errmsg("kairoi: connection to Kairoi server %s %s: %s",
						w->server, first ? "failed" : "still failing", reason),
				 errdetail("%d unacknowledged request(s) will be sent again; next attempt in %ld ms%s.",
						   w->n_in_flight, delay_ms,
						   delay_ms >= kairoi_backoff_max_ms ?
						   " (kairoi.backoff_max: further failures are logged at DEBUG1)" : "")));
		w->logged_backoff_ms = delay_ms;
	}
	else
		ereport(DEBUG1,
				(errmsg("kairoi: connection to Kairoi server %s failed: %s",
						w->server, reason)));
}

/* The connection is up: a LOG line if it was down, or is the first one */
static void
log_connected(Worker *w)
{
	ereport((w->logged_backoff_ms > 0 || !w->ever_connected) ? LOG : DEBUG1,
			(errmsg("kairoi: connected to Kairoi server %s", w->server)));
	w->logged_backoff_ms = 0;
	w->ever_connected = true;
}

/*
 * Drop the connection and everything in flight.  The rows stay in the
 * outbox and are sent again once reconnected.
 */
static void
disconnect(Worker *w, const char *reason, bool is_failure)
{
	TimestampTz now = GetCurrentTimestamp();

	if (is_failure)
	{
		long		delay_ms;

		w->failures++;
		delay_ms = backoff_delay_ms(w->failures);
		kairoi_set_last_error(MySlot, reason);
		log_failure(w, reason, delay_ms);
		w->reconnect_at = TimestampTzPlusMilliseconds(now, delay_ms);
	}
	else
		w->reconnect_at = now;

	forget_wait_set(w);
	connection_close(&w->conn);
	in_flight_forget_all(w);
	w->idle_since = 0;
	publish_state(w, KAIROI_STATE_BACKOFF);
}

static void
connect_to_server(Worker *w)
{
	strlcpy(w->server, kairoi_server, sizeof(w->server));
	w->connect_started = GetCurrentTimestamp();
	w->next_request_number = 0;
	if (!connection_open(&w->conn, w->server))
	{
		disconnect(w, w->conn.error, true);
		return;
	}
	forget_wait_set(w);			/* the next wait registers the new socket */
	SpinLockAcquire(&MySlot->mutex);
	MySlot->connection_attempts++;
	SpinLockRelease(&MySlot->mutex);
	w->last_progress = w->connect_started;
	if (!w->conn.connecting)
		log_connected(w);
	publish_state(w, w->conn.connecting ? KAIROI_STATE_CONNECTING
				  : KAIROI_STATE_CONNECTED);
}

/* ---------------------------------------------------------------------
 * Database work, each step in its own short transaction
 * ---------------------------------------------------------------------
 */

typedef void (*TransactionBody) (Worker *w);

static void
log_leaving(const char *datname)
{
	ereport(LOG,
			(errmsg("kairoi: the kairoi extension is not installed in database \"%s\"; its worker exits",
					datname)));
}

/*
 * After a failed transaction: if DROP EXTENSION caused it, release the slot
 * and exit, unless a commit announced itself since the worker last looked
 * (the extension may be back already).
 */
static void
exit_if_extension_dropped(void)
{
	bool		present;

	StartTransactionCommand();
	present = outbox_extension_exists();
	CommitTransactionCommand();
	if (!present && kairoi_release_slot_if_quiet(MySlot))
	{
		log_leaving(NameStr(MySlot->datname));
		proc_exit(0);
	}
}

/*
 * Run body in a transaction.  An error is logged and published, the
 * transaction rolled back and database work paused until the next poll:
 * nothing is lost, since rows leave the outbox only by a committed delete.
 */
static bool
run_transaction(Worker *w, TransactionBody body, const char *what)
{
	MemoryContext caller_context = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
	PG_TRY();
	{
		body(w);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		exit_if_extension_dropped();
		ereport(LOG,
				(errmsg("kairoi: could not %s: %s", what, edata->message),
				 errhint("The worker retries after kairoi.poll_interval.")));
		kairoi_set_last_error(MySlot, edata->message);
		FreeErrorData(edata);
		rewind_cursor(w, 0);
		w->database_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														kairoi_poll_interval_ms);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

static void
apply_answers(Worker *w)
{
	int			moved = 0;

	if (w->acknowledged.count > 0)
	{
		int			n = w->acknowledged.count;
		ItemPointerData *tids = palloc(n * sizeof(ItemPointerData));
		int64	   *versions = palloc(n * sizeof(int64));

		for (int i = 0; i < n; i++)
		{
			tids[i] = w->acknowledged.items[i].tid;
			versions[i] = w->acknowledged.items[i].version;
		}

		/*
		 * A row replaced in flight is not deleted; the replacing commit
		 * asks for a rescan.  A row an application holds locked is not
		 * deleted either; it is sent again after the next safety poll.
		 */
		count_acknowledged(outbox_delete_acknowledged(tids, versions, n));
	}
	for (int i = 0; i < w->rejected.count; i++)
	{
		char		reason[128];

		snprintf(reason, sizeof(reason),
				 "the Kairoi server at %s answered ERROR", w->server);
		if (outbox_record_rejection(w->rejected.items[i].seq,
									w->rejected.items[i].version, reason))
			moved++;
	}
	if (moved > 0)
		ereport(LOG,
				(errmsg("kairoi: moved %d entries to kairoi_failed after %d answers of ERROR each",
						moved, kairoi_max_attempts),
				 errhint("See the kairoi_failed view; kairoi_retry_failed() puts them back in the queue.")));
	if (w->rejected.count > 0)
	{
		kairoi_set_last_error(MySlot, "the Kairoi server answered ERROR");
		w->next_retry = outbox_next_retry_at();
	}
}

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

static bool
arguments_have_non_ascii(const KcpArgument *args, int nargs)
{
	for (int i = 0; i < nargs; i++)
	{
		if (kcp_has_non_ascii(args[i].data, args[i].len))
			return true;
	}
	return false;
}

/*
 * A single write of requests holding non-ASCII text, being packed by one
 * fetch_and_send() call.  The reference server corrupts a character that
 * one of its 2048-byte reads cuts in two.  A write of at most one TCP
 * segment, sent when the server has read everything before it, arrives
 * whole and is read whole: no read can end inside it.
 */
typedef struct NonAsciiWrite
{
	int			limit;			/* bound in bytes; -1 while none is open */
	int			bytes;			/* queued in it so far */
	int			requests;		/* queued in it so far */
} NonAsciiWrite;

/*
 * Bound of a single write: kairoi.non_ascii_write_limit, lowered to the
 * connection's segment size if the path's is smaller.
 */
static int
non_ascii_write_limit(Worker *w)
{
	int			segment = connection_max_segment(&w->conn);

	if (segment > 0)
		return Min(kairoi_non_ascii_write_limit, segment);
	return kairoi_non_ascii_write_limit;
}

/*
 * Open a single write for a first request of first_size bytes; nothing is
 * in flight, so nothing is queued.  A first request larger than the bound
 * goes alone and is written like any other: no write of that size is
 * protected, and insisting on one send() for it could fail forever on a
 * connection whose socket never takes that much at once.
 */
static void
open_non_ascii_write(Worker *w, NonAsciiWrite *write, size_t first_size)
{
	Assert(w->n_in_flight == 0);
	w->single_write_in_flight = true;
	write->limit = non_ascii_write_limit(w);
	write->bytes = 0;
	if (first_size <= (size_t) write->limit)
		connection_begin_single_write(&w->conn);
}

/*
 * True if an open single write has no room left for this request.  The
 * first request always fits: one larger than the bound goes alone.
 */
static bool
non_ascii_write_is_full(const NonAsciiWrite *write, const char *request_id,
						const KcpArgument *args, int nargs)
{
	return write->bytes > 0 &&
		write->bytes + kcp_request_size(request_id, args, nargs) >
		(size_t) write->limit;
}

/*
 * Queue an entry's request and return true, or return false if it must
 * wait until nothing is in flight.
 *
 * Requests are pipelined up to the window until one holds non-ASCII text.
 * That one waits until nothing is in flight, then opens a single write
 * (NonAsciiWrite); the requests after it, ASCII or not, join it while they
 * fit in its bound.  A request larger than the bound goes alone, written
 * as the socket takes it.  From the opening of a single write the worker drains: nothing more is sent until
 * all of it is answered, so it is the only thing the server has to read.
 */
static bool
send_entry(Worker *w, const OutboxEntry *entry, NonAsciiWrite *write)
{
	KcpArgument *args = palloc((entry->nargs + 3) * sizeof(KcpArgument));
	int			nargs = entry_arguments(entry, args);
	char		request_id[KCP_MAX_REQUEST_ID_LEN + 1];
	size_t		size;

	kcp_format_request_id(w->next_request_number, request_id);
	if (write->limit >= 0)
	{
		if (non_ascii_write_is_full(write, request_id, args, nargs))
			return false;
	}
	else if (arguments_have_non_ascii(args, nargs))
	{
		w->draining = true;
		if (w->n_in_flight > 0)
			return false;
		open_non_ascii_write(w, write,
							 kcp_request_size(request_id, args, nargs));
	}
	size = connection_queue_request(&w->conn, request_id, args, nargs);
	if (write->limit >= 0)
	{
		write->bytes += (int) size;
		write->requests++;
	}
	in_flight_add(w, w->next_request_number, entry);
	w->next_request_number++;
	return true;
}

/*
 * Rows to read: a batch, within the window.  After a single write of N
 * non-ASCII requests the next write most likely holds about as many, and
 * the rows read beyond it are read again next round: read 2N + 1, not a
 * whole batch (reading 500 rows for 28 cost ~10% of the rate of packed
 * writes, bench/nonascii.sh).
 */
static int
fetch_limit(Worker *w)
{
	int			limit = Min(kairoi_batch_size, kairoi_max_in_flight - w->n_in_flight);

	if (w->last_single_write > 0)
		limit = Min(limit, 2 * w->last_single_write + 1);
	return limit;
}

static void
fetch_and_send(Worker *w)
{
	int			limit = fetch_limit(w);
	int64	   *exclude = palloc((w->n_in_flight + w->acknowledged.count +
								  w->rejected.count + 1) * sizeof(int64));
	OutboxEntry *entries = palloc(limit * sizeof(OutboxEntry));
	NonAsciiWrite write = {-1, 0, 0};
	int			nexclude = 0;
	int			nfetched;
	dlist_iter	iter;

	/*
	 * Only rows after the cursor can be read: exclude those in flight, and
	 * those answered but not yet applied (see exchange)
	 */
	dlist_foreach(iter, &w->in_flight_order)
	{
		/* cppcheck-suppress nullPointer ; offsetof arithmetic, not NULL */
		int64		seq = dlist_container(InFlight, node, iter.cur)->seq;

		if (seq > w->cursor)
			exclude[nexclude++] = seq;
	}
	for (int i = 0; i < w->acknowledged.count; i++)
		if (w->acknowledged.items[i].seq > w->cursor)
			exclude[nexclude++] = w->acknowledged.items[i].seq;
	for (int i = 0; i < w->rejected.count; i++)
		if (w->rejected.items[i].seq > w->cursor)
			exclude[nexclude++] = w->rejected.items[i].seq;

	nfetched = outbox_fetch(w->cursor, exclude, nexclude, limit, entries);
	w->maybe_pending = (nfetched == limit);
	for (int i = 0; i < nfetched; i++)
	{
		if (!send_entry(w, &entries[i], &write))
			break;
		w->cursor = Max(w->cursor, entries[i].seq);
	}
	w->last_single_write = write.requests;
	if (w->draining)
		w->maybe_pending = true;
}

/* ---------------------------------------------------------------------
 * Main loop
 * ---------------------------------------------------------------------
 */

static void
reload_configuration(Worker *w)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	if (strcmp(w->server, kairoi_server) != 0)
	{
		/* Also during a backoff: the old server's failures do not count */
		ereport(LOG,
				(errmsg("kairoi: kairoi.server changed from %s to %s, reconnecting",
						w->server, kairoi_server)));
		if (connection_is_open(&w->conn))
			disconnect(w, "kairoi.server changed", false);
		w->reconnect_at = GetCurrentTimestamp();
		w->failures = 0;
		w->logged_backoff_ms = 0;
		strlcpy(w->server, kairoi_server, sizeof(w->server));
		publish_state(w, w->idle_closed ? KAIROI_STATE_IDLE
					  : KAIROI_STATE_BACKOFF);
	}
	w->maybe_pending = true;
}

/*
 * New database settings (ALTER DATABASE ... SET), DROP or ALTER EXTENSION:
 * exit, and the launcher starts a worker that reads them afresh.  Nothing
 * is lost: unacknowledged rows stay in the outbox.
 */
static void
exit_if_restart_requested(void)
{
	bool		restart;

	SpinLockAcquire(&MySlot->mutex);
	restart = MySlot->restart_requested;
	SpinLockRelease(&MySlot->mutex);
	if (restart)
	{
		/* DROP EXTENSION needs no new worker: leave at once */
		exit_if_extension_dropped();
		ereport(LOG,
				(errmsg("kairoi: worker of database \"%s\" restarts to apply changed settings or extension",
						NameStr(MySlot->datname))));
		proc_exit(0);
	}
}

/*
 * A commit announced rows: read from there (the cursor may be past them).
 * Commits arriving within kairoi.batch_delay of this one will not wake the
 * worker: it reads them together when that time is up (see wait_for_work).
 */
static void
take_rescan_request(Worker *w)
{
	int64		from_seq = kairoi_take_rescan_request(MySlot);

	if (from_seq == PG_INT64_MAX)
		return;
	w->commit_batch_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														kairoi_batch_delay_ms);
	w->maybe_pending = true;
	if (from_seq <= w->cursor)
		rewind_cursor(w, from_seq);
}

/* True if there is room in the window and rows may be waiting for it */
static bool
can_send_more(Worker *w, TimestampTz now)
{
	return w->maybe_pending && !w->draining &&
		w->n_in_flight < kairoi_max_in_flight && now >= w->database_retry;
}

static void
check_outbox(Worker *w)
{
	w->outbox_has_entries = outbox_has_entries();
}

static void
count_outbox(Worker *w)
{
	publish_pending(outbox_count_entries());
}

/* Work on an open connection; false if it failed and was dropped */
static bool
exchange(Worker *w, int wait_events)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		received;
	bool		drained;
	bool		written = true;

	if (w->conn.connecting)
	{
		if (wait_events & WL_SOCKET_WRITEABLE)
		{
			if (!connection_finish_connect(&w->conn))
			{
				disconnect(w, w->conn.error, true);
				return false;
			}
			w->last_progress = now;
			publish_state(w, KAIROI_STATE_CONNECTED);
			log_connected(w);
		}
		else if (TimestampDifferenceExceeds(w->connect_started, now,
											kairoi_connect_timeout_ms))
		{
			disconnect(w, "timed out connecting (kairoi.connect_timeout)", true);
			return false;
		}
		if (w->conn.connecting)
			return true;
	}

	/*
	 * The replies to a single write of non-ASCII text come together (the
	 * reference server's first one at once, the others right after our
	 * quick ACK): its answers are applied once all are in, in one
	 * transaction.  Then the next write goes out first, and the answers
	 * are applied while the server works on it: deleting them is off the
	 * round trip that packed non-ASCII writes wait for.  Answers read
	 * before a failure (say, just before EOF) still count.
	 */
	drained = w->single_write_in_flight;
	received = connection_receive(&w->conn, handle_response, w);
	drained = drained && !w->single_write_in_flight;
	if (received && drained && can_send_more(w, now))
	{
		run_transaction(w, fetch_and_send, "read the outbox");
		written = connection_flush(&w->conn);
	}
	if (w->acknowledged.count + w->rejected.count > 0 &&
		!(received && w->single_write_in_flight))
	{
		run_transaction(w, apply_answers, "apply Kairoi server answers");
		w->acknowledged.count = 0;
		w->rejected.count = 0;
		ConditionVariableBroadcast(&kairoi_shared->progress_cv);
	}
	if (!received)
	{
		disconnect(w, w->conn.error, true);
		return false;
	}

	if (can_send_more(w, now))
		run_transaction(w, fetch_and_send, "read the outbox");

	if (!written || !connection_flush(&w->conn))
	{
		disconnect(w, w->conn.error, true);
		return false;
	}

	if (w->n_in_flight > 0 &&
		TimestampDifferenceExceeds(w->last_progress, now,
								   kairoi_request_timeout_ms))
	{
		disconnect(w, "no response within kairoi.request_timeout", true);
		return false;
	}
	publish_state(w, KAIROI_STATE_CONNECTED);
	return true;
}

/* Nothing in flight, nothing to send, nothing to retry */
static bool
has_nothing_to_do(Worker *w)
{
	return !w->conn.connecting && w->n_in_flight == 0 && !w->maybe_pending &&
		w->next_retry == 0 && connection_unsent(&w->conn) == 0;
}

/*
 * Close a connection that had nothing to do for kairoi.idle_timeout, if the
 * outbox is empty (rows held back, locked or not due yet, keep it open).
 */
static void
close_if_idle(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (kairoi_idle_timeout_ms == 0 || !has_nothing_to_do(w))
	{
		w->idle_since = 0;
		return;
	}
	if (w->idle_since == 0)
		w->idle_since = now;
	if (!TimestampDifferenceExceeds(w->idle_since, now, kairoi_idle_timeout_ms))
		return;

	if (!run_transaction(w, check_outbox, "look at the outbox") ||
		w->outbox_has_entries)
	{
		w->idle_since = now;
		return;
	}
	ereport(DEBUG1,
			(errmsg("kairoi: closing the idle connection to %s (kairoi.idle_timeout)",
					w->server)));
	forget_wait_set(w);
	connection_close(&w->conn);
	w->idle_closed = true;
	w->idle_since = 0;
	publish_pending(0);
	publish_state(w, KAIROI_STATE_IDLE);
}

/*
 * Not connected: connect once the backoff is over or, with the connection
 * closed for idleness, once the outbox holds something.
 */
static void
open_connection_if_due(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (w->idle_closed)
	{
		if (!w->maybe_pending || now < w->database_retry)
			return;
		w->maybe_pending = false;
		if (!run_transaction(w, check_outbox, "look at the outbox") ||
			!w->outbox_has_entries)
			return;
		w->idle_closed = false;
		w->maybe_pending = true;
		connect_to_server(w);
	}
	else if (now >= w->reconnect_at)
		connect_to_server(w);
}

/* Whole milliseconds from now until deadline, rounded up; 0 if past */
static long
milliseconds_until(TimestampTz deadline, TimestampTz now)
{
	if (deadline <= now)
		return 0;
	return (long) ((deadline - now + 999) / 1000);
}

/* Milliseconds until the earliest deadline, at most the poll interval */
static long
time_to_next_deadline(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz deadline = w->next_poll;

	if (w->idle_closed)
		;						/* a commit or the poll reopens it */
	else if (!connection_is_open(&w->conn))
		deadline = Min(deadline, w->reconnect_at);
	else if (can_send_more(w, now) && !w->conn.connecting)
		return 0;
	else if (w->conn.connecting)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(w->connect_started,
															 kairoi_connect_timeout_ms));
	else if (w->n_in_flight > 0)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(w->last_progress,
															 kairoi_request_timeout_ms));
	else if (w->idle_since != 0)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(w->idle_since,
															 kairoi_idle_timeout_ms));
	if (w->next_retry != 0)
		deadline = Min(deadline, w->next_retry);
	if (w->database_retry > now)
		deadline = Min(deadline, w->database_retry);

	return milliseconds_until(deadline, now);
}

/* The socket events to wait for in the connection's current state */
static uint32
socket_events(Worker *w)
{
	if (w->conn.connecting)
		return WL_SOCKET_WRITEABLE;
	if (connection_unsent(&w->conn) > 0)
		return WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE;
	return WL_SOCKET_READABLE;
}

/*
 * Could a commit give the worker something to do right now?  Yes when it
 * is connected with room in the window, or idle with the connection
 * closed; not while connecting, in backoff or draining.
 */
static bool
commit_gives_work(Worker *w)
{
	if (w->idle_closed)
		return true;
	return connection_is_open(&w->conn) && !w->conn.connecting &&
		!w->draining && w->n_in_flight < kairoi_max_in_flight &&
		GetCurrentTimestamp() >= w->database_retry;
}

/*
 * Tell committing backends whether to set the latch while the worker
 * sleeps.  Returns true if a commit announced itself in the meantime and
 * the worker should not sleep at all.
 */
static bool
ask_for_commit_wakeups(bool wanted)
{
	bool		announced;

	SpinLockAcquire(&MySlot->mutex);
	MySlot->wants_wakeup = wanted;
	announced = (MySlot->rescan_from_seq != PG_INT64_MAX);
	SpinLockRelease(&MySlot->mutex);
	return wanted && announced;
}

/*
 * Within kairoi.batch_delay of reading newly committed entries, commits
 * do not wake the worker: it sleeps at most until that time is up, and
 * then reads what they committed meanwhile in one go.  Under a steady flow
 * of commits a read (and a write to the server) carries many entries
 * instead of one or two; a commit after a quiet spell is read at once.
 * True if that is the case now, with *timeout_ms shortened to the end of
 * the delay.
 */
static bool
in_commit_batch_delay(Worker *w, long *timeout_ms)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= w->commit_batch_until)
		return false;
	*timeout_ms = Min(*timeout_ms,
					  milliseconds_until(w->commit_batch_until, now));
	return true;
}

/*
 * Wait for the latch, the socket or the timeout.  The wait set is kept
 * across iterations (re-created with each connection) so that waiting costs
 * one system call, not five.  Returns the events that occurred.
 */
static int
wait_for_work(Worker *w, long timeout_ms)
{
	WaitEvent	occurred[3];
	int			n;
	int			events = 0;

	if (w->wait_set == NULL)
	{
		w->wait_set = kairoi_create_wait_event_set(3);
		AddWaitEventToSet(w->wait_set, WL_LATCH_SET, PGINVALID_SOCKET,
						  MyLatch, NULL);
		AddWaitEventToSet(w->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
						  NULL, NULL);
		if (connection_is_open(&w->conn))
			w->socket_event = AddWaitEventToSet(w->wait_set, socket_events(w),
												w->conn.sock, NULL, NULL);
	}
	else if (w->socket_event >= 0)
		ModifyWaitEvent(w->wait_set, w->socket_event, socket_events(w), NULL);

	if (ask_for_commit_wakeups(commit_gives_work(w) &&
							   !in_commit_batch_delay(w, &timeout_ms)))
		timeout_ms = 0;
	n = WaitEventSetWait(w->wait_set, timeout_ms, occurred, lengthof(occurred),
						 PG_WAIT_EXTENSION);
	(void) ask_for_commit_wakeups(false);
	for (int i = 0; i < n; i++)
		events |= occurred[i].events;

	if (events & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		w->maybe_pending = true;
	}
	return events;
}

/* Periodic duties: safety poll (and count of the outbox), retry times */
static void
tick(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= w->next_poll)
	{
		rewind_cursor(w, 0);
		w->next_poll = TimestampTzPlusMilliseconds(now, kairoi_poll_interval_ms);
		if (now >= w->database_retry)
			run_transaction(w, count_outbox, "count the outbox");
	}
	if (w->next_retry != 0 && now >= w->next_retry)
	{
		w->next_retry = 0;
		rewind_cursor(w, 0);
	}
}

static void
worker_init(Worker *w)
{
	HASHCTL		ctl;

	memset(w, 0, sizeof(*w));
	connection_init(&w->conn);
	strlcpy(w->server, kairoi_server, sizeof(w->server));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(InFlight);
	w->in_flight = hash_create("kairoi in-flight requests", 1024, &ctl,
							   HASH_ELEM | HASH_BLOBS);
	dlist_init(&w->in_flight_order);
	answers_init(&w->acknowledged);
	answers_init(&w->rejected);
	w->maybe_pending = true;
	/* With an idle timeout, connect only once there is something to send */
	w->idle_closed = (kairoi_idle_timeout_ms > 0);
	w->socket_event = -1;
	w->iteration_context = AllocSetContextCreate(TopMemoryContext,
												 "kairoi worker iteration",
												 ALLOCSET_DEFAULT_SIZES);
}

/*
 * Decide whether to serve the database: it must have the extension, and
 * no other worker may serve it.  A worker restarted after DROP EXTENSION
 * releases the slot, unless a commit (CREATE EXTENSION again) announced
 * itself while it looked.  A probe that finds no extension just exits.
 */
static bool
start_serving(Oid database)
{
	for (;;)
	{
		KairoiDatabaseSlot *slot = kairoi_find_slot(database);
		bool		present;
		char	   *datname;

		if (slot != NULL)
			(void) kairoi_take_rescan_request(slot);
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		present = outbox_extension_exists();
		datname = MemoryContextStrdup(TopMemoryContext,
									  get_database_name(database));
		CommitTransactionCommand();

		if (present)
			return publish_worker(database, datname);
		if (slot == NULL)
			return false;
		if (kairoi_release_slot_if_quiet(slot))
		{
			log_leaving(datname);
			return false;
		}
	}
}

void
kairoi_worker_main(Datum main_arg)
{
	Oid			database = DatumGetObjectId(main_arg);
	Worker		w;
	int			wait_events = 0;

	/*
	 * die() rather than a flag: SIGTERM must also interrupt a lock wait, so
	 * that neither shutdown nor DROP DATABASE ever waits for the worker.
	 * The operating system closes the socket when the process exits.
	 */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);

	/*
	 * Row locks are skipped, never waited for (see outbox.c); a table lock
	 * held by DDL or maintenance makes the statement fail after this long
	 * instead, and the worker retries after kairoi.poll_interval.
	 */
	SetConfigOption("lock_timeout", WORKER_LOCK_TIMEOUT, PGC_SUSET,
					PGC_S_OVERRIDE);

	/*
	 * The worker's commits (acknowledged rows deleted, rejections counted)
	 * need not wait for their WAL to reach disk: one lost in a crash only
	 * makes the worker send those rows again, which delivery at least once
	 * allows.  Each batch of answers would otherwise wait for a WAL flush.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	MemoryContextSwitchTo(TopMemoryContext);
	if (!start_serving(database))
		proc_exit(0);
	pgstat_report_appname(psprintf("kairoi worker %s",
								   NameStr(MySlot->datname)));
	worker_init(&w);
	publish_state(&w, w.idle_closed ? KAIROI_STATE_IDLE : KAIROI_STATE_STARTING);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
			reload_configuration(&w);
		exit_if_restart_requested();

		MemoryContextSwitchTo(w.iteration_context);
		tick(&w);
		take_rescan_request(&w);
		if (!connection_is_open(&w.conn))
			open_connection_if_due(&w);
		if (connection_is_open(&w.conn) && exchange(&w, wait_events))
			close_if_idle(&w);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(w.iteration_context);

		wait_events = wait_for_work(&w, time_to_next_deadline(&w));
	}
}
