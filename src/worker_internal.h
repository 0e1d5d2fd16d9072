/*-------------------------------------------------------------------------
 *
 * worker_internal.h
 *	  The delivery worker's state, shared by the files that make up the
 *	  worker: worker.c (the loop and its waits), worker_session.c (the
 *	  connection) and worker_xact.c (the database work).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_WORKER_INTERNAL_H
#define KAIROI_WORKER_INTERNAL_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"

#include "connection.h"
#include "pipeline.h"
#include "shmem.h"

typedef struct Worker
{
	KairoiDatabaseSlot *slot;	/* this worker's database slot in shared
								 * memory */
	KairoiConnection conn;
	char		server[KAIROI_SERVER_MAXLEN];	/* address of conn */
	Pipeline	pipeline;		/* requests on conn */
	int			failures;		/* consecutive transport failures */
	long		logged_backoff_ms;	/* backoff in the last failure logged,
									 * 0 once connected */
	bool		ever_connected;
	bool		idle_closed;	/* not connected: nothing to deliver */
	TimestampTz idle_since;		/* connected with nothing to do, or 0 */
	bool		outbox_has_entries; /* result of worker_check_outbox */
	TimestampTz connect_started;
	TimestampTz reconnect_at;
	TimestampTz next_poll;		/* safety poll of the outbox */
	bool		queue_changed;	/* rows may have entered or left the queue
								 * since the worker last counted it */
	int			polls_since_count;	/* safety polls since that count */
	TimestampTz statistics_due; /* flush of table statistics held back, or 0 */
	TimestampTz next_retry;		/* earliest retry of a rejected row, or 0 */
	TimestampTz database_retry; /* after a failed transaction */
	TimestampTz commit_batch_until; /* commits do not wake us before this */
	MemoryContext iteration_context;
	WaitEventSet *wait_set;		/* latch, postmaster death and conn's socket */
	int			socket_event;	/* position of the socket in wait_set, or -1 */
} Worker;

static inline void
worker_publish_state(Worker *w, KairoiWorkerState state)
{
	kairoi_publish_state(w->slot, state, w->pipeline.n_in_flight,
						 w->server);
}

#endif							/* KAIROI_WORKER_INTERNAL_H */
