/*-------------------------------------------------------------------------
 *
 * worker_xact.c
 *	  The delivery worker's database work, each step in its own short
 *	  transaction: reading the outbox and sending what it holds, applying
 *	  the server's answers, looking at and counting the outbox; and the
 *	  decisions that rest on the extension being there (serving the
 *	  database at all, exiting after DROP EXTENSION or for a restart).
 *
 *	  A failed step is logged and published, rolled back, and database
 *	  work pauses until the next poll: nothing is lost, since rows leave
 *	  the outbox only by a committed delete.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "miscadmin.h"
#include "utils/wait_event.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "outbox.h"
#include "pipeline.h"
#include "rejections.h"
#include "shmem.h"
#include "worker_internal.h"
#include "worker_xact.h"

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
exit_if_extension_dropped(KairoiDatabaseSlot *slot)
{
	bool		present;

	StartTransactionCommand();
	present = outbox_extension_exists();
	CommitTransactionCommand();
	if (!present && kairoi_release_slot_if_quiet(slot))
	{
		log_leaving(NameStr(slot->datname));
		proc_exit(0);
	}
}

/*
 * Run body in a transaction.  An error is logged and published, the
 * transaction rolled back and database work paused until the next poll:
 * nothing is lost, since rows leave the outbox only by a committed delete.
 */
bool
worker_run_transaction(Worker *w, WorkerTransactionBody body,
					   const char *what)
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
		rejections_invalidate();
		exit_if_extension_dropped(w->slot);
		ereport(LOG,
				(errmsg("kairoi: could not %s: %s", what, edata->message),
				 errhint("The worker retries after kairoi.poll_interval.")));
		kairoi_set_last_error(w->slot, edata->message);
		FreeErrorData(edata);
		pipeline_rewind(&w->pipeline, 0);
		w->database_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														kairoi_poll_interval_ms);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

void
worker_apply_answers(Worker *w)
{
	AnswerList *acknowledged = &w->pipeline.acknowledged;
	AnswerList *rejected = &w->pipeline.rejected;
	int			moved = 0;

	if (acknowledged->count > 0)
	{
		/*
		 * A row replaced in flight is not deleted; the replacing commit
		 * asks for a rescan.  A row an application holds locked is not
		 * deleted either; it is sent again after the next safety poll.
		 */
		kairoi_count_acknowledged(w->slot,
								  outbox_delete_acknowledged(acknowledged->items,
															 acknowledged->count));
		rejections_forget(acknowledged->items, acknowledged->count);
	}
	for (int i = 0; i < rejected->count; i++)
	{
		char		reason[128];

		snprintf(reason, sizeof(reason),
				 "the Kairoi server at %s answered ERROR", w->server);
		if (rejections_record(&rejected->items[i], reason))
			moved++;
	}
	if (moved > 0)
		ereport(LOG,
				(errmsg("kairoi: moved %d entries to kairoi_failed after %d answers of ERROR each",
						moved, kairoi_max_attempts),
				 errhint("See the kairoi_failed view; kairoi_retry_failed() puts them back in the queue.")));
	if (acknowledged->count > 0 || moved > 0)
		w->queue_changed = true;
	if (rejected->count > 0)
	{
		kairoi_set_last_error(w->slot, "the Kairoi server answered ERROR");
		w->next_retry = rejections_next_retry();
	}
}

void
worker_fetch_and_send(Worker *w)
{
	pipeline_fetch_and_send(&w->pipeline, &w->conn);
}

void
worker_check_outbox(Worker *w)
{
	w->outbox_has_entries = outbox_has_entries();
}

void
worker_count_outbox(Worker *w)
{
	bool		estimated;

	kairoi_publish_pending(w->slot, outbox_count_pending(&estimated));
}

/*
 * New database settings (ALTER DATABASE ... SET), DROP or ALTER EXTENSION:
 * exit, and the launcher starts a worker that reads them afresh.  Nothing
 * is lost: unacknowledged rows stay in the outbox.
 */
void
worker_exit_if_restart_requested(KairoiDatabaseSlot *slot)
{
	if (kairoi_restart_requested(slot))
	{
		/* DROP EXTENSION needs no new worker: leave at once */
		exit_if_extension_dropped(slot);
		ereport(LOG,
				(errmsg("kairoi: worker of database \"%s\" restarts to apply changed settings or extension",
						NameStr(slot->datname))));
		proc_exit(0);
	}
}

/*
 * The library is newer than this database's extension (PostgreSQL runs the
 * new library, ALTER EXTENSION kairoi UPDATE has not run yet): deliver
 * nothing until the update, whose commit restarts the worker.  Meanwhile
 * applications still schedule (outbox_1_1.c).
 */
void
worker_wait_for_extension_update(KairoiDatabaseSlot *slot)
{
	bool		logged = false;

	for (;;)
	{
		bool		current;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		current = outbox_is_current();
		CommitTransactionCommand();
		if (current)
			return;
		if (!logged)
		{
			ereport(LOG,
					(errmsg("kairoi: the kairoi extension in database \"%s\" is older than the library (%s): nothing is delivered until it is updated",
							NameStr(slot->datname), KAIROI_LIBRARY_VERSION),
					 errdetail("Entries scheduled meanwhile are kept."),
					 errhint("Run ALTER EXTENSION kairoi UPDATE in database \"%s\".",
							 NameStr(slot->datname))));
			kairoi_publish_state(slot, KAIROI_STATE_OUTDATED, 0, "");
			logged = true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 kairoi_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		worker_exit_if_restart_requested(slot);
	}
}

/*
 * Is the database a copy of another (CREATE DATABASE ... TEMPLATE by any
 * role that may create databases and owns this one)?  Its queue is the
 * original's: delivering it again would resend old jobs and rules, and
 * every copy would take a worker.  Then the slot says so and the worker
 * leaves; the launcher starts none there until a superuser runs
 * kairoi_serve_copy() in the copy.
 */
bool
worker_database_is_copy(KairoiDatabaseSlot *slot)
{
	Oid			origin;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	origin = outbox_origin_database();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (origin == MyDatabaseId)
		return false;
	ereport(LOG,
			(errmsg("kairoi: database \"%s\" is a copy of another database; its queue is not delivered",
					NameStr(slot->datname)),
			 errdetail("Its queue was copied with it (CREATE DATABASE ... TEMPLATE): delivering it would send the original's entries again."),
			 errhint("If this database's queue must be delivered, a superuser runs SELECT kairoi_serve_copy() in it.")));
	kairoi_block_copy(slot);
	return true;
}

/*
 * Decide whether to serve the database: it must have the extension, and
 * no other worker may serve it.  A worker restarted after DROP EXTENSION
 * releases the slot, unless a commit (CREATE EXTENSION again) announced
 * itself while it looked.  A probe that finds no extension just exits.
 * Returns the slot taken, or NULL if the worker is not to serve.
 */
KairoiDatabaseSlot *
worker_start_serving(Oid database)
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
			return kairoi_publish_worker(database, datname);
		if (slot == NULL)
			return NULL;
		if (kairoi_release_slot_if_quiet(slot))
		{
			log_leaving(datname);
			return NULL;
		}
	}
}
