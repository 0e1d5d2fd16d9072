/*-------------------------------------------------------------------------
 *
 * worker_xact.h
 *	  The delivery worker's database work (worker_xact.c): the steps it
 *	  runs each in a transaction, and the decisions that rest on the
 *	  extension being there.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_WORKER_XACT_H
#define KAIROI_WORKER_XACT_H

#include "worker_internal.h"

typedef void (*WorkerTransactionBody) (Worker *w);

/*
 * Run body in a transaction; what says what it does, in the log and in
 * pg_stat_activity.  False if it failed (logged, published, and database
 * work paused until the next poll).
 */
extern bool worker_run_transaction(Worker *w, WorkerTransactionBody body,
								   const char *what);

/* Bodies: read due entries and queue their requests on the connection */
extern void worker_fetch_and_send(Worker *w);

/* delete acknowledged entries, count the attempts of rejected ones */
extern void worker_apply_answers(Worker *w);

/* set w->outbox_has_entries */
extern void worker_check_outbox(Worker *w);

/* publish the number of outbox rows */
extern void worker_count_outbox(Worker *w);

/* Exit if asked to restart (or if the extension was dropped) */
extern void worker_exit_if_restart_requested(KairoiDatabaseSlot *slot);

/*
 * Take the database's slot if it has the extension and no other worker;
 * NULL if not
 */
extern KairoiDatabaseSlot *worker_start_serving(Oid database);

/* A copy of another database: marked in the slot, not to be served */
extern bool worker_database_is_copy(KairoiDatabaseSlot *slot);

/* Wait while the database's extension is older than the library */
extern void worker_wait_for_extension_update(KairoiDatabaseSlot *slot);

#endif							/* KAIROI_WORKER_XACT_H */
