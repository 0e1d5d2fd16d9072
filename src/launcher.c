/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher and the delivery worker's life cycle.
 *
 *	  The launcher is a static background worker connected to no database
 *	  (shared catalogs only).  It waits quietly until the database named by
 *	  kairoi.database exists, starts the delivery worker for it as a dynamic
 *	  background worker, restarts it if it exits, and replaces it when
 *	  kairoi.database changes.  Being registered for
 *	  BgWorkerStart_RecoveryFinished, it never runs on a hot standby: the
 *	  postmaster starts it on promotion, and the worker then delivers what
 *	  the replicated outbox holds.
 *
 *	  This file also owns the utility hook that stops the worker before
 *	  DROP DATABASE or ALTER DATABASE RENAME of its database, which would
 *	  otherwise fail while the worker is connected.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/wait_event.h"
#include "utils/snapmgr.h"

#include "kairoi.h"

/* How long DROP DATABASE waits for the worker to exit */
#define WORKER_STOP_TIMEOUT_MS 10000

static ProcessUtility_hook_type prev_process_utility_hook = NULL;

static void
fill_worker_entry(BackgroundWorker *bgw, const char *function,
				  const char *name)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	strlcpy(bgw->bgw_library_name, "kairoi", BGW_MAXLEN);
	strlcpy(bgw->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(bgw->bgw_name, name, BGW_MAXLEN);
	strlcpy(bgw->bgw_type, name, BGW_MAXLEN);
}

void
kairoi_register_launcher(void)
{
	BackgroundWorker bgw;

	fill_worker_entry(&bgw, "kairoi_launcher_main", "kairoi launcher");
	bgw.bgw_restart_time = 10;
	RegisterBackgroundWorker(&bgw);
}

static BackgroundWorkerHandle *
start_worker(Oid database)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	fill_worker_entry(&bgw, "kairoi_worker_main", "kairoi worker");
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_main_arg = ObjectIdGetDatum(database);
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(LOG,
				(errmsg("kairoi: could not start the delivery worker"),
				 errhint("Raise max_worker_processes; the launcher retries after kairoi.poll_interval.")));
		return NULL;
	}
	return handle;
}

/*
 * The database's OID, or InvalidOid.  Connected to no database, the
 * launcher can only scan pg_database itself: its indexes are not usable.
 */
static Oid
lookup_database(const char *name)
{
	Oid			database = InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);

		if (strcmp(NameStr(form->datname), name) == 0)
		{
			database = form->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return database;
}

static bool
worker_starting(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	return handle != NULL &&
		GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

static void
publish_launcher(void)
{
	SpinLockAcquire(&kairoi_shared->mutex);
	kairoi_shared->launcher_pid = MyProcPid;
	kairoi_shared->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&kairoi_shared->mutex);
}

void
kairoi_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handle = NULL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("kairoi launcher");
	publish_launcher();

	while (!ShutdownRequestPending)
	{
		Oid			database;
		pid_t		worker_pid;
		Oid			worker_database;
		Oid			paused;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		database = lookup_database(kairoi_database);
		SpinLockAcquire(&kairoi_shared->mutex);
		worker_pid = kairoi_shared->worker_pid;
		worker_database = kairoi_shared->worker_database;
		paused = kairoi_shared->paused_database;
		SpinLockRelease(&kairoi_shared->mutex);

		/*
		 * A worker is known from shared memory, which also covers one that
		 * an earlier incarnation of the launcher started; the handle covers
		 * one that is starting and has not published itself yet.
		 */
		if (worker_pid != 0)
		{
			if (worker_database != database)
				(void) kill(worker_pid, SIGTERM);
		}
		else if (!worker_starting(handle) && OidIsValid(database) &&
				 database != paused)
			handle = start_worker(database);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 kairoi_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/*
	 * Exit status 1 makes the postmaster restart the launcher after
	 * bgw_restart_time, unless the whole server is shutting down: a
	 * pg_terminate_backend() must not stop delivery for good.
	 */
	proc_exit(1);
}

/* ---------------------------------------------------------------------
 * Keeping the worker out of the way of DROP / RENAME DATABASE
 * ---------------------------------------------------------------------
 */

static void
set_paused_database(Oid database)
{
	Latch	   *launcher_latch;

	SpinLockAcquire(&kairoi_shared->mutex);
	kairoi_shared->paused_database = database;
	launcher_latch = kairoi_shared->launcher_latch;
	SpinLockRelease(&kairoi_shared->mutex);
	if (!OidIsValid(database) && launcher_latch != NULL)
		SetLatch(launcher_latch);
}

/* Ask the worker serving database to exit, and wait until it has */
static void
stop_worker_for(Oid database)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   WORKER_STOP_TIMEOUT_MS);

	ConditionVariablePrepareToSleep(&kairoi_shared->progress_cv);
	for (;;)
	{
		pid_t		pid;

		SpinLockAcquire(&kairoi_shared->mutex);
		pid = (kairoi_shared->worker_database == database) ?
			kairoi_shared->worker_pid : 0;
		SpinLockRelease(&kairoi_shared->mutex);
		if (pid == 0 || GetCurrentTimestamp() >= deadline)
			break;
		(void) kill(pid, SIGTERM);
		(void) ConditionVariableTimedSleep(&kairoi_shared->progress_cv, 100,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* The database a utility statement needs exclusive use of, if any */
static const char *
database_needing_exclusive_use(Node *statement)
{
	if (IsA(statement, DropdbStmt))
		return ((DropdbStmt *) statement)->dbname;
	if (IsA(statement, RenameStmt) &&
		((RenameStmt *) statement)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) statement)->subname;
	return NULL;
}

static void
next_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	(prev_process_utility_hook ? prev_process_utility_hook
	 : standard_ProcessUtility) (pstmt, queryString, readOnlyTree,
								 context, params, queryEnv, dest, qc);
}

static void
kairoi_process_utility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = database_needing_exclusive_use(pstmt->utilityStmt);
	Oid			database = InvalidOid;

	if (dbname != NULL)
		database = get_database_oid(dbname, true);

	if (OidIsValid(database))
	{
		set_paused_database(database);
		PG_TRY();
		{
			stop_worker_for(database);
			next_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		}
		PG_FINALLY();
		{
			set_paused_database(InvalidOid);
		}
		PG_END_TRY();
	}
	else
		next_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
}

void
kairoi_install_utility_hook(void)
{
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = kairoi_process_utility;
}
