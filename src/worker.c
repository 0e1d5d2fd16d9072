/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker: its start, its main loop and the waits between
 *	  iterations; the worker moves committed outbox rows to the Kairoi
 *	  server and removes them once acknowledged.
 *
 *	  One worker serves one database, started by the launcher; its state is
 *	  published in the database's slot in shared memory (shmem.c).  A worker
 *	  that finds no extension in its database (a probe, or DROP EXTENSION)
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
 *	  The cursor over the outbox goes back when rows may have appeared
 *	  behind it: a commit reports the lowest seq it wrote (a transaction can
 *	  take its seq early and commit late, or replace a row already sent), a
 *	  retry falls due, a connection is lost, and at every safety poll (which
 *	  also catches rows an application held locked, and COMMIT PREPARED).
 *	  A safety poll also counts the queue for kairoi_workers if it changed.
 *	  Before sleeping the worker flushes its table statistics, as a backend
 *	  does before it goes idle.
 *
 *	  The rest of the worker: worker_session.c (the connection: connect,
 *	  exchange, backoff, idle close), worker_xact.c (the database work,
 *	  each step in its own transaction) and pipeline.c (requests in flight
 *	  and the matching of answers to them).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "connection.h"
#include "guc.h"
#include "pipeline.h"
#include "shmem.h"
#include "worker.h"
#include "worker_internal.h"
#include "worker_session.h"
#include "worker_xact.h"

#define WORKER_LOCK_TIMEOUT "1s"
#define WORKER_POLLS_PER_RECOUNT 10

/*
 * A commit announced rows: read from there (the cursor may be past them).
 * Commits arriving within kairoi.batch_delay of this one will not wake the
 * worker: it reads them together when that time is up (see wait_for_work).
 */
static void
take_rescan_request(Worker *w)
{
	int64		from_seq = kairoi_take_rescan_request(w->slot);

	if (from_seq == PG_INT64_MAX)
		return;
	w->commit_batch_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														kairoi_batch_delay_ms);
	w->pipeline.maybe_pending = true;
	w->queue_changed = true;
	if (from_seq <= w->pipeline.cursor)
		pipeline_rewind(&w->pipeline, from_seq);
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
	TimestampTz last_progress = w->pipeline.last_progress;

	if (w->idle_closed)
		;						/* a commit or the poll reopens it */
	else if (!connection_is_open(&w->conn))
		deadline = Min(deadline, w->reconnect_at);
	else if (worker_can_send_more(w, now) && !w->conn.connecting)
		return 0;
	else if (w->conn.connecting)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(w->connect_started,
															 kairoi_connect_timeout_ms));
	else if (w->pipeline.n_in_flight > 0)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(last_progress,
															 kairoi_request_timeout_ms));
	else if (w->idle_since != 0)
		deadline = Min(deadline, TimestampTzPlusMilliseconds(w->idle_since,
															 kairoi_idle_timeout_ms));
	if (w->next_retry != 0)
		deadline = Min(deadline, w->next_retry);
	if (w->database_retry > now)
		deadline = Min(deadline, w->database_retry);
	if (w->statistics_due != 0)
		deadline = Min(deadline, w->statistics_due);

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
		pipeline_has_room(&w->pipeline) &&
		GetCurrentTimestamp() >= w->database_retry;
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

	if (kairoi_ask_for_commit_wakeups(w->slot, commit_gives_work(w) &&
									  !in_commit_batch_delay(w, &timeout_ms)))
		timeout_ms = 0;
	n = WaitEventSetWait(w->wait_set, timeout_ms, occurred, lengthof(occurred),
						 PG_WAIT_EXTENSION);
	(void) kairoi_ask_for_commit_wakeups(w->slot, false);
	for (int i = 0; i < n; i++)
		events |= occurred[i].events;

	if (events & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		w->pipeline.maybe_pending = true;
	}
	return events;
}

/*
 * Count the queue for kairoi_workers at a safety poll, if rows may have
 * entered or left it since the last count: a commit announced some, or
 * the worker deleted or moved some.  An unchanged queue is not counted
 * again: with many dead rows (a backlog drained while a long transaction
 * holds them back from VACUUM) a count reads them all, and one per poll
 * would keep a core busy.  Every WORKER_POLLS_PER_RECOUNT polls it is
 * counted anyway, for rows removed by hand.
 */
static void
count_queue_if_changed(Worker *w)
{
	if (!w->queue_changed && ++w->polls_since_count < WORKER_POLLS_PER_RECOUNT)
		return;
	w->queue_changed = false;
	w->polls_since_count = 0;
	if (!worker_run_transaction(w, worker_count_outbox, "count the outbox"))
		w->queue_changed = true;
}

/* Periodic duties: safety poll (and count of the outbox), retry times */
static void
tick(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= w->next_poll)
	{
		pipeline_rewind(&w->pipeline, 0);
		w->next_poll = TimestampTzPlusMilliseconds(now, kairoi_poll_interval_ms);
		if (now >= w->database_retry)
			count_queue_if_changed(w);
	}
	if (w->next_retry != 0 && now >= w->next_retry)
	{
		w->next_retry = 0;
		pipeline_rewind(&w->pipeline, 0);
	}
}

/*
 * Flush the worker's table statistics, as a backend does before it goes
 * idle: autovacuum learns from them how many rows the worker deleted from
 * the queue.  pgstat_report_stat() flushes at most once a second and says
 * when to try again; the worker wakes up for that.
 */
static void
report_statistics(Worker *w)
{
	long		retry_ms = pgstat_report_stat(false);

	w->statistics_due = retry_ms == 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), retry_ms);
}

static void
worker_init(Worker *w, KairoiDatabaseSlot *slot)
{
	memset(w, 0, sizeof(*w));
	w->slot = slot;
	connection_init(&w->conn);
	strlcpy(w->server, kairoi_server, sizeof(w->server));
	pipeline_init(&w->pipeline);
	/* With an idle timeout, connect only once there is something to send */
	w->idle_closed = (kairoi_idle_timeout_ms > 0);
	w->socket_event = -1;
	w->queue_changed = true;	/* not counted yet */
	w->iteration_context = AllocSetContextCreate(TopMemoryContext,
												 "kairoi worker iteration",
												 ALLOCSET_DEFAULT_SIZES);
}

void
kairoi_worker_main(Datum main_arg)
{
	Oid			database = DatumGetObjectId(main_arg);
	Worker		w;
	KairoiDatabaseSlot *slot;
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
	 * The worker runs as superuser in a database an ordinary role may own:
	 * nothing that role set for the database or planted in it may reach
	 * the worker's statements.
	 */
	kairoi_pin_background_settings();

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
	slot = worker_start_serving(database);
	if (slot == NULL)
		proc_exit(0);
	worker_wait_for_extension_update(slot);
	if (worker_database_is_copy(slot))
		proc_exit(0);
	pgstat_report_appname(psprintf("kairoi worker %s", NameStr(slot->datname)));
	worker_init(&w, slot);
	worker_publish_state(&w, w.idle_closed ? KAIROI_STATE_IDLE
						 : KAIROI_STATE_STARTING);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
			worker_reload_configuration(&w);
		worker_exit_if_restart_requested(w.slot);

		MemoryContextSwitchTo(w.iteration_context);
		tick(&w);
		take_rescan_request(&w);
		if (!connection_is_open(&w.conn))
			worker_open_connection_if_due(&w);
		if (connection_is_open(&w.conn) && worker_exchange(&w, wait_events))
			worker_close_if_idle(&w);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(w.iteration_context);

		report_statistics(&w);
		wait_events = wait_for_work(&w, time_to_next_deadline(&w));
	}
}
