/*-------------------------------------------------------------------------
 *
 * worker_xact.h
 *	  The delivery worker's database work (worker_xact.c).  Each function
 *	  that returns bool runs one transaction and returns false if it failed
 *	  (logged, published, and database work paused until the next poll).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_WORKER_XACT_H
#define KAIROI_WORKER_XACT_H

#include "worker_internal.h"

/* Read due entries and queue their requests on the connection */
extern bool worker_fetch_and_send(Worker *w);

/* Delete acknowledged entries, count the attempts of rejected ones */
extern bool worker_apply_answers(Worker *w);

/* Set w->outbox_has_entries */
extern bool worker_check_outbox(Worker *w);

/* Publish the number of outbox rows */
extern bool worker_count_outbox(Worker *w);

/* Exit if asked to restart (or if the extension was dropped) */
extern void worker_exit_if_restart_requested(void);

/* Take the database's slot if it has the extension and no other worker */
extern bool worker_start_serving(Oid database);

#endif							/* KAIROI_WORKER_XACT_H */
