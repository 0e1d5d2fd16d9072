/*-------------------------------------------------------------------------
 *
 * at_commit.c
 *	  What a transaction tells the delivery worker and the launcher when it
 *	  commits, through the end-of-transaction callback.
 *
 *	  A transaction that enqueued something tells its database's worker the
 *	  lowest seq it wrote (kairoi_announce_commit); one that changed a
 *	  database the launcher watches (noted by the utility hook) wakes the
 *	  launcher and, where needed, restarts that database's worker.  An
 *	  aborted or prepared transaction tells nobody: COMMIT PREPARED is
 *	  caught by the worker's safety poll.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "at_commit.h"
#include "shmem.h"

/*
 * Lowest seq this transaction enqueued or replaced, INT64_MAX if none; at
 * commit the worker is woken and told to read from there.
 */
static int64 transaction_min_seq = PG_INT64_MAX;

void
kairoi_note_enqueue(int64 seq)
{
	transaction_min_seq = Min(transaction_min_seq, seq);
}

bool
kairoi_enqueued_in_transaction(void)
{
	return transaction_min_seq != PG_INT64_MAX;
}

/*
 * Databases whose launcher-visible state this transaction changed (created,
 * altered, extension dropped or updated): at commit the launcher is woken,
 * and the workers of those marked for it restart to read the change.
 */
typedef struct DatabaseChange
{
	Oid			database;
	bool		restart_worker;
} DatabaseChange;

static List *database_changes = NIL;

void
kairoi_note_database_change(Oid database, bool restart_worker)
{
	MemoryContext old_context = MemoryContextSwitchTo(TopTransactionContext);
	DatabaseChange *change = palloc(sizeof(DatabaseChange));

	change->database = database;
	change->restart_worker = restart_worker;
	database_changes = lappend(database_changes, change);
	MemoryContextSwitchTo(old_context);
}

static void
announce_database_changes(void)
{
	ListCell   *cell;

	foreach(cell, database_changes)
	{
		DatabaseChange *change = lfirst(cell);

		if (change->restart_worker)
			kairoi_request_restart(change->database);
	}
}

static void
end_of_transaction(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			{
				/*
				 * The launcher is woken last, once the slot it would act on
				 * says all this transaction has to say (a slot claimed
				 * here, and a restart asked for it, are seen together).
				 */
				bool		wake_launcher = false;

				if (kairoi_enqueued_in_transaction())
					wake_launcher = kairoi_announce_commit(transaction_min_seq);
				if (database_changes != NIL)
				{
					announce_database_changes();
					wake_launcher = true;
				}
				if (wake_launcher)
					kairoi_wake_launcher();
			}
			break;
		case XACT_EVENT_ABORT:
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED is caught by the worker's safety poll */
			break;
		default:
			return;
	}
	transaction_min_seq = PG_INT64_MAX;
	database_changes = NIL;		/* freed with TopTransactionContext */
}

void
kairoi_register_xact_callback(void)
{
	RegisterXactCallback(end_of_transaction, NULL);
}
