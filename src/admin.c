/*-------------------------------------------------------------------------
 *
 * admin.c
 *	  Administration functions: kairoi_status(), this database's worker as
 *	  seen from SQL; kairoi_workers(), every database's worker; and
 *	  kairoi_flush(), which waits until everything committed before the
 *	  call has been acknowledged by the Kairoi server.
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
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "at_commit.h"
#include "guc.h"
#include "outbox.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(kairoi_status);
PG_FUNCTION_INFO_V1(kairoi_workers);
PG_FUNCTION_INFO_V1(kairoi_flush);

/* A database's worker as this backend sees it: a copy of its slot */
typedef struct WorkerView
{
	bool		loaded;			/* shared memory exists (preloaded) */
	KairoiDatabaseSlot copy;	/* zeroes if the database has no slot */
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
		case KAIROI_STATE_CONNECTING:
			return "connecting";
		case KAIROI_STATE_CONNECTED:
			return "connected";
		case KAIROI_STATE_BACKOFF:
			return "disconnected: waiting to reconnect";
		case KAIROI_STATE_IDLE:
			return "idle: connection closed, nothing to deliver";
		case KAIROI_STATE_OUTDATED:
			return "not delivering: run ALTER EXTENSION kairoi UPDATE in this database";
	}
	return "unknown";
}

static const char *const copy_state =
"not delivering: a copy of another database; a superuser runs kairoi_serve_copy() to deliver its queue";

static const char *
blocked_reason(KairoiBlockedReason reason)
{
	switch (reason)
	{
		case KAIROI_BLOCKED_NO_WORKER_SLOT:
			return "not running: waiting for a background worker slot (raise max_worker_processes)";
		case KAIROI_BLOCKED_NO_CONNECTIONS:
			return "not running: the database does not allow connections";
		case KAIROI_BLOCKED_PAUSED:
			return "not running: paused for DROP or RENAME DATABASE";
		case KAIROI_BLOCKED_COPY:
			return copy_state;
		case KAIROI_BLOCKED_NONE:
			break;
	}
	return "not running: starting";
}

static bool
all_slots_taken(void)
{
	for (int i = 0; i < kairoi_shared->nslots; i++)
	{
		KairoiDatabaseSlot *slot = &kairoi_shared->slots[i];
		bool		taken;

		SpinLockAcquire(&slot->mutex);
		taken = OidIsValid(slot->database);
		SpinLockRelease(&slot->mutex);
		if (!taken)
			return false;
	}
	return true;
}

/* Why a database with the extension has no slot yet */
static const char *
unserved_reason(void)
{
	bool		exhausted;

	SpinLockAcquire(&kairoi_shared->mutex);
	exhausted = kairoi_shared->worker_slots_exhausted;
	SpinLockRelease(&kairoi_shared->mutex);
	if (all_slots_taken())
		return psprintf("not running: kairoi.max_databases (%d) databases are served already",
						kairoi_max_databases);
	if (exhausted)
		return blocked_reason(KAIROI_BLOCKED_NO_WORKER_SLOT);
	return "not running: the launcher has not started a worker for this database yet";
}

static void
copy_slot(KairoiDatabaseSlot *slot, KairoiDatabaseSlot *copy)
{
	SpinLockAcquire(&slot->mutex);
	memcpy(copy, slot, sizeof(KairoiDatabaseSlot));
	SpinLockRelease(&slot->mutex);
}

static const char *const standby_state =
"not running: hot standby (the worker starts on promotion)";

static const char *
describe_slot(const KairoiDatabaseSlot *copy)
{
	if (RecoveryInProgress())
		return standby_state;
	if (copy->worker_pid == 0)
		return blocked_reason(copy->blocked);
	return state_name(copy->state);
}

static void
get_worker_view(WorkerView *view)
{
	KairoiDatabaseSlot *slot;

	memset(view, 0, sizeof(*view));
	view->loaded = (kairoi_shared != NULL);
	if (!view->loaded)
	{
		view->state = "not running: kairoi is not in shared_preload_libraries";
		return;
	}

	slot = kairoi_find_slot(MyDatabaseId);
	if (slot != NULL)
		copy_slot(slot, &view->copy);
	if (slot == NULL || view->copy.database != MyDatabaseId)
	{
		memset(&view->copy, 0, sizeof(view->copy));
		if (RecoveryInProgress())
			view->state = standby_state;
		else if (outbox_is_current() && outbox_origin_database() != MyDatabaseId)
			view->state = copy_state;
		else
			view->state = unserved_reason();
		return;
	}
	view->serves_this_database = (view->copy.worker_pid != 0);
	view->state = describe_slot(&view->copy);
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

/*
 * pending, failed and oldest_pending_age: counts that cost the same
 * however long the queue is (exact up to OUTBOX_EXACT_COUNT, estimated
 * beyond), and the age of the entry at the head of the queue (the first
 * row of each table's primary key).  NULL while the extension in this
 * database is older than the library.
 */
static void
queue_summary(Datum *values, bool *nulls)
{
	bool		estimated;

	if (!outbox_is_current())
	{
		nulls[0] = nulls[1] = nulls[2] = true;
		return;
	}
	values[0] = Int64GetDatum(outbox_count_pending(&estimated));
	values[1] = Int64GetDatum(outbox_count_failed(&estimated));
	query_one_row("SELECT now() - LEAST("
				  "  (SELECT enqueued_at FROM kairoi.pending_jobs ORDER BY seq LIMIT 1), "
				  "  (SELECT enqueued_at FROM kairoi.pending_rules ORDER BY seq LIMIT 1))",
				  1, &values[2], &nulls[2]);
}

/*
 * The six columns kairoi_status() and kairoi_workers() share, in this
 * order: in_flight, acknowledged, connection_attempts, connected_at,
 * last_error, last_error_at.
 */
static void
activity_columns(const KairoiDatabaseSlot *copy, Datum *values, bool *nulls)
{
	values[0] = Int32GetDatum(copy->in_flight);
	values[1] = Int64GetDatum((int64) copy->acknowledged);
	values[2] = Int64GetDatum((int64) copy->connection_attempts);
	values[3] = TimestampTzGetDatum(copy->connected_at);
	nulls[3] = (copy->connected_at == 0);
	values[4] = CStringGetTextDatum(copy->last_error);
	nulls[4] = (copy->last_error[0] == '\0');
	values[5] = TimestampTzGetDatum(copy->last_error_at);
	nulls[5] = (copy->last_error_at == 0);
}

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
	values[3] = DirectFunctionCall1(namein,
									CStringGetDatum(get_database_name(MyDatabaseId)));
	activity_columns(&view.copy, &values[4], &nulls[4]);
	queue_summary(&values[10], &nulls[10]);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values,
													  nulls)));
}

/*
 * kairoi_workers(): one row per database served, from shared memory (the
 * catalog only for the name of a database whose worker has not started).
 */
static void
add_worker_row(ReturnSetInfo *rsinfo, const KairoiDatabaseSlot *copy)
{
	Datum		values[11];
	bool		nulls[11];
	const char *datname = NameStr(copy->datname);

	memset(nulls, 0, sizeof(nulls));
	if (datname[0] == '\0')
		datname = get_database_name(copy->database);
	values[0] = DirectFunctionCall1(namein,
									CStringGetDatum(datname ? datname : "?"));
	values[1] = Int32GetDatum(copy->worker_pid);
	nulls[1] = (copy->worker_pid == 0);
	values[2] = CStringGetTextDatum(describe_slot(copy));
	values[3] = CStringGetTextDatum(copy->server);
	nulls[3] = (copy->server[0] == '\0');
	activity_columns(copy, &values[4], &nulls[4]);
	values[10] = Int64GetDatum(copy->pending);
	nulls[10] = (copy->pending < 0);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

Datum
kairoi_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (kairoi_shared == NULL)
		return (Datum) 0;
	for (int i = 0; i < kairoi_shared->nslots; i++)
	{
		KairoiDatabaseSlot copy;

		copy_slot(&kairoi_shared->slots[i], &copy);
		if (OidIsValid(copy.database))
			add_worker_row(rsinfo, &copy);
	}
	return (Datum) 0;
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
 * took their seq and version from kairoi.outbox_seq before the call, so
 * both are at most its last value then (bound); a row replaced after the
 * call has a larger version and is not waited for (a row written by a
 * transaction still open at the call, which commits during the wait, is).
 * Rows below low_seq are known to be gone, so each check starts there and
 * the whole wait reads the queue about once, however long it is.
 */
typedef struct FlushTarget
{
	int64		bound;
	int64		low_seq;
} FlushTarget;

/*
 * A one-value query that kairoi_flush runs after each batch of answers the
 * worker applies, and once more before it returns: on the path from the
 * server's last answer to the flush's return, so planned once per backend
 * (a generic plan, kept across transactions; the plan cache plans it again
 * after DDL on the tables it reads).
 */
typedef struct FlushCheck
{
	const char *sql;
	int			nargs;
	Oid			argtypes[2];
	SPIPlanPtr	plan;			/* NULL until first used */
} FlushCheck;

/* $1 low_seq, $2 bound: the first entry waited for, if any */
static FlushCheck lowest_pending_check = {
	"SELECT LEAST("
	"  (SELECT seq FROM kairoi.pending_jobs "
	"   WHERE seq >= $1 AND seq <= $2 AND version <= $2 ORDER BY seq LIMIT 1), "
	"  (SELECT seq FROM kairoi.pending_rules "
	"   WHERE seq >= $1 AND seq <= $2 AND version <= $2 ORDER BY seq LIMIT 1))",
	2, {INT8OID, INT8OID}
};

/*
 * $1 bound, $2 the highest id of kairoi.failed the flush saw at its start:
 * entries rejected for good since.  The worker, the one writer of failed
 * entries, takes their ids in the order it commits them; a time would not
 * do (a move committed after the flush started can have begun before).
 */
static FlushCheck rejections_check = {
	"SELECT count(*) FROM kairoi.failed WHERE version <= $1 AND id > $2",
	2, {INT8OID, INT8OID}
};

/*
 * Run a check with these arguments; its int8 result, or false if NULL.  Not
 * read-only, so that each run takes a fresh snapshot in READ COMMITTED:
 * kairoi_flush must see the worker's progress.
 */
static bool
run_flush_check(FlushCheck *check, Datum *args, int64 *result)
{
	Datum		value;
	bool		isnull;

	SPI_connect();
	if (check->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(check->sql, check->nargs,
											  check->argtypes,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "kairoi: could not plan query: %s", check->sql);
		check->plan = plan;
	}
	if (SPI_execute_plan(check->plan, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "kairoi: query failed: %s", check->sql);
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	if (!isnull)
		*result = DatumGetInt64(value);
	SPI_finish();
	return !isnull;
}

/* Is anything still pending?  Advances target->low_seq. */
static bool
still_pending(FlushTarget *target)
{
	Datum		args[2] = {Int64GetDatum(target->low_seq),
	Int64GetDatum(target->bound)};

	return run_flush_check(&lowest_pending_check, args, &target->low_seq);
}

/* Entries still pending, for the error message: up to OUTBOX_EXACT_COUNT */
static int64
count_pending(const FlushTarget *target)
{
	char	   *condition = psprintf("seq >= " INT64_FORMAT " AND seq <= " INT64_FORMAT
									 " AND version <= " INT64_FORMAT,
									 target->low_seq, target->bound,
									 target->bound);
	Datum		value;
	bool		isnull;

	query_one_row(psprintf("SELECT count(*) FROM ("
						   "  SELECT FROM kairoi.pending_jobs WHERE %s UNION ALL "
						   "  SELECT FROM kairoi.pending_rules WHERE %s "
						   "  LIMIT " CppAsString2(OUTBOX_EXACT_COUNT) ") AS bounded",
						   condition, condition),
				  1, &value, &isnull);
	return DatumGetInt64(value);
}

static void
report_rejections(int64 version, int64 failed_before)
{
	Datum		args[2] = {Int64GetDatum(version), Int64GetDatum(failed_before)};
	int64		rejected = 0;

	(void) run_flush_check(&rejections_check, args, &rejected);
	if (rejected > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%lld entries were rejected by the Kairoi server during kairoi_flush",
						(long long) rejected),
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
			 errmsg("kairoi_flush timed out after " INT64_FORMAT " ms with %s" INT64_FORMAT " entries not yet acknowledged",
					timeout_ms,
					pending >= OUTBOX_EXACT_COUNT ? "at least " : "", pending),
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
	Datum		bound;
	Datum		failed_before;
	bool		isnull;
	FlushTarget target;
	bool		wake_worker = true;

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

	outbox_require_current("kairoi_flush");
	query_one_row("SELECT last_value FROM kairoi.outbox_seq", 1, &bound,
				  &isnull);
	target.bound = DatumGetInt64(bound);
	target.low_seq = 0;
	query_one_row("SELECT coalesce(max(id), 0) FROM kairoi.failed", 1,
				  &failed_before, &isnull);

	/*
	 * The worker broadcasts progress_cv each time it has deleted a batch of
	 * acknowledged entries: the check runs once per batch (one index probe
	 * from low_seq, cheap next to the worker's own transaction for the
	 * batch) and the flush returns as soon as its last entry is gone.  The
	 * worker is woken once (rows of a COMMIT PREPARED announce nothing),
	 * and again after each second without progress.
	 */
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
		if (wake_worker)
			kairoi_wake_worker(MyDatabaseId);
		wake_worker = ConditionVariableTimedSleep(&kairoi_shared->progress_cv,
												  Min(remaining_ms, 1000),
												  PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
	ConditionVariableCancelSleep();
	report_rejections(target.bound, DatumGetInt64(failed_before));
	PG_RETURN_VOID();
}
