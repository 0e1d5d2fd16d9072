/*-------------------------------------------------------------------------
 *
 * admin.c
 *	  Administration functions: kairoi_status(), the worker's state as seen
 *	  from SQL, and kairoi_flush(), which waits until everything committed
 *	  before the call has been acknowledged by the Kairoi server.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/wait_event.h"
#include "utils/timestamp.h"

#include "kairoi.h"

/*
 * kairoi_flush checks what is still pending after each wake-up, at most
 * this often: the worker may signal progress hundreds of times a second.
 */
#define FLUSH_RECHECK_INTERVAL_MS 20

PG_FUNCTION_INFO_V1(kairoi_status);
PG_FUNCTION_INFO_V1(kairoi_flush);

/* The worker as this backend sees it: a copy of shared memory */
typedef struct WorkerView
{
	bool		loaded;			/* shared memory exists (preloaded) */
	KairoiShared copy;
	bool		serves_this_database;
	const char *state;			/* human-readable */
} WorkerView;

static const char *
state_name(KairoiWorkerState state)
{
	switch (state)
	{
		case KAIROI_STATE_STARTING:
			return "starting";
		case KAIROI_STATE_NO_EXTENSION:
			return "idle: extension not installed in its database";
		case KAIROI_STATE_CONNECTING:
			return "connecting";
		case KAIROI_STATE_CONNECTED:
			return "connected";
		case KAIROI_STATE_BACKOFF:
			return "disconnected: waiting to reconnect";
	}
	return "unknown";
}

static void
get_worker_view(WorkerView *view)
{
	memset(view, 0, sizeof(*view));
	view->loaded = (kairoi_shared != NULL);
	if (!view->loaded)
	{
		view->state = "not running: kairoi is not in shared_preload_libraries";
		return;
	}

	SpinLockAcquire(&kairoi_shared->mutex);
	memcpy(&view->copy, kairoi_shared, sizeof(KairoiShared));
	SpinLockRelease(&kairoi_shared->mutex);

	view->serves_this_database = view->copy.worker_pid != 0 &&
		view->copy.worker_database == MyDatabaseId;
	if (RecoveryInProgress())
		view->state = "not running: hot standby (the worker starts on promotion)";
	else if (view->copy.worker_pid == 0)
		view->state = psprintf("not running: waiting for database \"%s\"",
							   kairoi_database);
	else if (!view->serves_this_database)
		view->state = psprintf("not running here: the worker serves database \"%s\"",
							   kairoi_database);
	else
		view->state = state_name(view->copy.state);
}

/*
 * Run a one-row query and return its datums (copied to the caller's
 * context).  Not read-only, so that each call takes a fresh snapshot in READ
 * COMMITTED: kairoi_flush must see the worker's progress.
 */
static void
query_one_row(const char *sql, int ncolumns, Datum *values, bool *nulls)
{
	MemoryContext caller_context = CurrentMemoryContext;

	SPI_connect();
	if (SPI_execute(sql, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "kairoi: query failed: %s", sql);
	for (int i = 0; i < ncolumns; i++)
	{
		Datum		value = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, i + 1,
										  &nulls[i]);
		Form_pg_attribute attr = TupleDescAttr(SPI_tuptable->tupdesc, i);
		MemoryContext spi_context = MemoryContextSwitchTo(caller_context);

		values[i] = nulls[i] ? (Datum) 0 :
			datumCopy(value, attr->attbyval, attr->attlen);
		MemoryContextSwitchTo(spi_context);
	}
	SPI_finish();
}

static const char *const outbox_summary_sql =
"SELECT (SELECT count(*) FROM kairoi.outbox), "
"       (SELECT count(*) FROM kairoi.failed), "
"       now() - (SELECT min(updated_at) FROM kairoi.outbox)";

Datum
kairoi_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	WorkerView	view;
	Datum		values[13];
	bool		nulls[13];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "kairoi_status: return type must be a row type");

	get_worker_view(&view);
	memset(nulls, 0, sizeof(nulls));

	values[0] = Int32GetDatum(view.copy.worker_pid);
	nulls[0] = !view.serves_this_database;
	values[1] = CStringGetTextDatum(view.state);
	values[2] = CStringGetTextDatum(view.serves_this_database ?
									view.copy.server : kairoi_server);
	values[3] = DirectFunctionCall1(namein, CStringGetDatum(kairoi_database));
	values[4] = Int32GetDatum(view.copy.in_flight);
	values[5] = Int64GetDatum((int64) view.copy.acknowledged);
	values[6] = Int64GetDatum((int64) view.copy.connection_attempts);
	values[7] = TimestampTzGetDatum(view.copy.connected_at);
	nulls[7] = (view.copy.connected_at == 0);
	values[8] = CStringGetTextDatum(view.copy.last_error);
	nulls[8] = (view.copy.last_error[0] == '\0');
	values[9] = TimestampTzGetDatum(view.copy.last_error_at);
	nulls[9] = (view.copy.last_error_at == 0);
	query_one_row(outbox_summary_sql, 3, &values[10], &nulls[10]);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values,
													  nulls)));
}

/* ---------------------------------------------------------------------
 * kairoi_flush
 * ---------------------------------------------------------------------
 */

static int64
interval_to_milliseconds(const Interval *interval)
{
	int64		usecs = interval->time +
		((int64) interval->month * DAYS_PER_MONTH + interval->day) * USECS_PER_DAY;

	return usecs / 1000;
}

static void
check_flush_is_possible(WorkerView *view)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("kairoi_flush cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("Its snapshot would never see entries leave the outbox."),
				 errhint("Call kairoi_flush() in a READ COMMITTED transaction.")));
	if (kairoi_enqueued_in_transaction())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("kairoi_flush cannot wait for entries scheduled by its own transaction"),
				 errdetail("They are delivered only after the transaction commits."),
				 errhint("Commit first, then call kairoi_flush().")));
	if (!view->loaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no kairoi worker delivers the outbox"),
				 errdetail("kairoi is not in shared_preload_libraries."),
				 errhint("Add kairoi to shared_preload_libraries and restart the server.")));
}

/*
 * What kairoi_flush waits for: the rows committed before the call.  They
 * have seq <= max_seq and version <= max_version as read at the call (a row
 * replaced after the call has a larger version and is not waited for).
 * Rows below low_seq are known to be gone, so each check starts there and
 * the whole wait reads the queue about once, however long it is.
 */
typedef struct FlushTarget
{
	int64		max_seq;
	int64		max_version;
	int64		low_seq;
} FlushTarget;

static char *
pending_condition(const FlushTarget *target)
{
	return psprintf("seq >= " INT64_FORMAT " AND seq <= " INT64_FORMAT
					" AND version <= " INT64_FORMAT,
					target->low_seq, target->max_seq, target->max_version);
}

/* Is anything still pending?  Advances target->low_seq. */
static bool
still_pending(FlushTarget *target)
{
	Datum		value;
	bool		isnull;

	query_one_row(psprintf("SELECT min(seq) FROM kairoi.outbox WHERE %s",
						   pending_condition(target)), 1, &value, &isnull);
	if (isnull)
		return false;
	target->low_seq = DatumGetInt64(value);
	return true;
}

static int64
count_pending(const FlushTarget *target)
{
	Datum		value;
	bool		isnull;

	query_one_row(psprintf("SELECT count(*) FROM kairoi.outbox WHERE %s",
						   pending_condition(target)), 1, &value, &isnull);
	return DatumGetInt64(value);
}

static void
report_rejections(int64 version, TimestampTz since)
{
	Datum		value;
	bool		isnull;
	char	   *sql = psprintf("SELECT count(*) FROM kairoi.failed "
							   "WHERE version <= " INT64_FORMAT " AND failed_at >= '%s'",
							   version, timestamptz_to_str(since));

	query_one_row(sql, 1, &value, &isnull);
	if (DatumGetInt64(value) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%lld entries were rejected by the Kairoi server during kairoi_flush",
						(long long) DatumGetInt64(value)),
				 errdetail("After kairoi.max_attempts answers of ERROR they were moved to kairoi_failed."),
				 errhint("Inspect kairoi_failed, fix the cause, then call kairoi_retry_failed().")));
}

static void
report_timeout(int64 timeout_ms, const FlushTarget *target)
{
	WorkerView	view;
	int64		pending = count_pending(target);

	get_worker_view(&view);
	ereport(ERROR,
			(errcode(ERRCODE_QUERY_CANCELED),
			 errmsg("kairoi_flush timed out after " INT64_FORMAT " ms with " INT64_FORMAT " entries not yet acknowledged",
					timeout_ms, pending),
			 errdetail("Worker: %s; server %s; last error: %s%s%s.",
					   view.state,
					   view.serves_this_database ? view.copy.server : kairoi_server,
					   view.copy.last_error[0] ? view.copy.last_error : "none",
					   view.copy.last_error_at ? " at " : "",
					   view.copy.last_error_at ?
					   timestamptz_to_str(view.copy.last_error_at) : ""),
			 errhint("Nothing is lost: the entries stay in the outbox and are delivered once the server answers. See kairoi_status().")));
}

Datum
kairoi_flush(PG_FUNCTION_ARGS)
{
	WorkerView	view;
	int64		timeout_ms;
	TimestampTz start = GetCurrentTimestamp();
	Datum		maxima[2];
	bool		empty[2];
	FlushTarget target;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"timeout\" of kairoi_flush must not be null"),
				 errhint("Pass an interval such as '30 seconds'.")));
	timeout_ms = interval_to_milliseconds(PG_GETARG_INTERVAL_P(0));
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"timeout\" of kairoi_flush must not be negative")));

	get_worker_view(&view);
	check_flush_is_possible(&view);

	query_one_row("SELECT max(seq), max(version) FROM kairoi.outbox", 2,
				  maxima, empty);
	if (empty[0])
		PG_RETURN_VOID();
	target.max_seq = DatumGetInt64(maxima[0]);
	target.max_version = DatumGetInt64(maxima[1]);
	target.low_seq = 0;

	ConditionVariablePrepareToSleep(&kairoi_shared->progress_cv);
	while (still_pending(&target))
	{
		long		remaining_ms = (long) (timeout_ms -
										   (GetCurrentTimestamp() - start) / 1000);

		if (remaining_ms <= 0)
		{
			ConditionVariableCancelSleep();
			report_timeout(timeout_ms, &target);
		}
		kairoi_wake_worker();
		(void) ConditionVariableTimedSleep(&kairoi_shared->progress_cv,
										   Min(remaining_ms, 1000),
										   PG_WAIT_EXTENSION);
		/* Checking reads the outbox: not more often than every interval */
		pg_usleep(Min(remaining_ms, FLUSH_RECHECK_INTERVAL_MS) * 1000L);
		CHECK_FOR_INTERRUPTS();
	}
	ConditionVariableCancelSleep();
	report_rejections(target.max_version, start);
	PG_RETURN_VOID();
}
