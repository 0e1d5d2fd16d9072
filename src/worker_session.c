/*-------------------------------------------------------------------------
 *
 * worker_session.c
 *	  The delivery worker's session with the Kairoi server: opening the
 *	  connection, dropping it on failure with a capped exponential backoff
 *	  and one log line per change, the exchange of requests and answers on
 *	  it, and closing it after kairoi.idle_timeout with nothing to deliver.
 *
 *	  Any transport failure drops the connection and everything in flight:
 *	  the rows are still in the outbox and are sent again once reconnected.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "guc.h"
#include "pipeline.h"
#include "shmem.h"
#include "worker_internal.h"
#include "worker_session.h"
#include "worker_xact.h"

/* A response read: a failure no longer follows the last one */
static bool
handle_response(const KcpResponse *response, void *arg)
{
	Worker	   *w = (Worker *) arg;

	if (!pipeline_handle_response(&w->pipeline, response))
		return false;
	w->failures = 0;
	return true;
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
						   w->pipeline.n_in_flight, delay_ms,
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
		delay_ms = kairoi_backoff_delay_ms(w->failures);
		kairoi_set_last_error(w->slot, reason);
		log_failure(w, reason, delay_ms);
		w->reconnect_at = TimestampTzPlusMilliseconds(now, delay_ms);
	}
	else
		w->reconnect_at = now;

	forget_wait_set(w);
	connection_close(&w->conn);
	pipeline_forget_in_flight(&w->pipeline);
	w->idle_since = 0;
	worker_publish_state(w, KAIROI_STATE_BACKOFF);
}

static void
connect_to_server(Worker *w)
{
	strlcpy(w->server, kairoi_server, sizeof(w->server));
	w->connect_started = GetCurrentTimestamp();
	pipeline_restart_numbering(&w->pipeline);
	if (!connection_open(&w->conn, w->server))
	{
		disconnect(w, w->conn.error, true);
		return;
	}
	forget_wait_set(w);			/* the next wait registers the new socket */
	kairoi_count_connection_attempt(w->slot);
	w->pipeline.last_progress = w->connect_started;
	if (!w->conn.connecting)
		log_connected(w);
	worker_publish_state(w, w->conn.connecting ? KAIROI_STATE_CONNECTING
				  : KAIROI_STATE_CONNECTED);
}

void
worker_reload_configuration(Worker *w)
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
		worker_publish_state(w, w->idle_closed ? KAIROI_STATE_IDLE
					  : KAIROI_STATE_BACKOFF);
	}
	w->pipeline.maybe_pending = true;
}

/* True if there is room in the window and rows may be waiting for it */
bool
worker_can_send_more(Worker *w, TimestampTz now)
{
	return w->pipeline.maybe_pending && pipeline_has_room(&w->pipeline) &&
		now >= w->database_retry;
}

/* Work on an open connection; false if it failed and was dropped */
bool
worker_exchange(Worker *w, int wait_events)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		received;
	bool		was_draining;
	bool		keep_answers;
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
			w->pipeline.last_progress = now;
			worker_publish_state(w, KAIROI_STATE_CONNECTED);
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
	 * Packed non-ASCII writes: once the server has provably read the last
	 * one (the first answer to it), the next goes out at once, and the
	 * answers read are applied while the server works on it: deleting them
	 * is off the path that packed writes wait for.  While the proof is
	 * awaited, answers wait too (the reference server's first reply comes
	 * alone, the others right after our quick ACK), so that they are
	 * applied together.  Answers read before a failure (say, just before
	 * EOF) still count.
	 */
	was_draining = w->pipeline.draining;
	received = connection_receive(&w->conn, handle_response, w);
	keep_answers = received && w->pipeline.draining;
	if (received && was_draining && !w->pipeline.draining &&
		worker_can_send_more(w, now))
	{
		worker_run_transaction(w, worker_fetch_and_send, "read the outbox");
		written = connection_flush(&w->conn);
	}
	if (w->pipeline.acknowledged.count + w->pipeline.rejected.count > 0 &&
		!keep_answers)
	{
		worker_run_transaction(w, worker_apply_answers,
							   "apply Kairoi server answers");
		pipeline_forget_answers(&w->pipeline);
		ConditionVariableBroadcast(&kairoi_shared->progress_cv);
	}
	if (!received)
	{
		disconnect(w, w->conn.error, true);
		return false;
	}

	if (worker_can_send_more(w, now))
		worker_run_transaction(w, worker_fetch_and_send, "read the outbox");

	if (!written || !connection_flush(&w->conn))
	{
		disconnect(w, w->conn.error, true);
		return false;
	}

	if (w->pipeline.n_in_flight > 0 &&
		TimestampDifferenceExceeds(w->pipeline.last_progress, now,
								   kairoi_request_timeout_ms))
	{
		disconnect(w, "no response within kairoi.request_timeout", true);
		return false;
	}
	worker_publish_state(w, KAIROI_STATE_CONNECTED);
	return true;
}

/* Nothing in flight, nothing to send, nothing to retry */
static bool
has_nothing_to_do(Worker *w)
{
	return !w->conn.connecting && w->pipeline.n_in_flight == 0 &&
		!w->pipeline.maybe_pending && w->next_retry == 0 &&
		connection_unsent(&w->conn) == 0;
}

/*
 * Close a connection that had nothing to do for kairoi.idle_timeout, if the
 * outbox is empty (rows held back, locked or not due yet, keep it open).
 */
void
worker_close_if_idle(Worker *w)
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

	if (!worker_run_transaction(w, worker_check_outbox, "look at the outbox") ||
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
	kairoi_publish_pending(w->slot, 0);
	worker_publish_state(w, KAIROI_STATE_IDLE);
}

/*
 * Not connected: connect once the backoff is over or, with the connection
 * closed for idleness, once the outbox holds something.
 */
void
worker_open_connection_if_due(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (w->idle_closed)
	{
		if (!w->pipeline.maybe_pending || now < w->database_retry)
			return;
		w->pipeline.maybe_pending = false;
		if (!worker_run_transaction(w, worker_check_outbox, "look at the outbox") ||
			!w->outbox_has_entries)
			return;
		w->idle_closed = false;
		w->pipeline.maybe_pending = true;
		connect_to_server(w);
	}
	else if (now >= w->reconnect_at)
		connect_to_server(w);
}
