/*-------------------------------------------------------------------------
 *
 * worker_session.h
 *	  The delivery worker's session with the Kairoi server
 *	  (worker_session.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_WORKER_SESSION_H
#define KAIROI_WORKER_SESSION_H

#include "worker_internal.h"

/* SIGHUP: read the settings; a new kairoi.server means reconnecting */
extern void worker_reload_configuration(Worker *w);

/* True if there is room in the window and rows may be waiting for it */
extern bool worker_can_send_more(Worker *w, TimestampTz now);

/* Not connected: connect if the backoff is over, or if idle and needed */
extern void worker_open_connection_if_due(Worker *w);

/* Work on an open connection; false if it failed and was dropped */
extern bool worker_exchange(Worker *w, int wait_events);

/* Close a connection with nothing to do for kairoi.idle_timeout */
extern void worker_close_if_idle(Worker *w);

#endif							/* KAIROI_WORKER_SESSION_H */
