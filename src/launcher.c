/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher, and the life cycle of the delivery workers.
 *
 *	  The launcher is a static background worker connected to no database
 *	  (shared catalogs only).  It keeps one delivery worker running for each
 *	  database that has the extension, with no configuration:
 *
 *	  - It scans pg_database (a heap scan of a shared catalog: no connection
 *	    to any database) when woken and every kairoi.poll_interval.  A
 *	    database it has never seen gets one probe: a delivery worker that
 *	    connects, finds the extension absent and exits at once, or finds it
 *	    and stays.  So databases without the extension cost one short
 *	    connection each when the launcher starts (or first sees them), then
 *	    nothing but their row in that scan.
 *	  - A database with a slot in shared memory (shmem.h) has the
 *	    extension: CREATE EXTENSION claims the slot at commit and wakes the
 *	    launcher, which starts the worker at once.  A worker that finds the
 *	    extension gone releases the slot and exits.
 *	  - Templates and databases that do not allow connections are not
 *	    served (a connection to a template would block CREATE DATABASE).
 *	    A database copied from one with the extension (CREATE DATABASE
 *	    ... TEMPLATE) is probed when the launcher sees it: its worker
 *	    finds it a copy and leaves, and it takes neither a worker nor a
 *	    slot until a superuser runs kairoi_serve_copy() there.
 *	  - When RegisterDynamicBackgroundWorker finds no free slot of
 *	    max_worker_processes, the launcher logs one line per database,
 *	    publishes why, and retries every second.
 *
 *	  Being registered for BgWorkerStart_RecoveryFinished, the launcher never
 *	  runs on a hot standby: the postmaster starts it on promotion, and the
 *	  workers then deliver what the replicated outboxes hold.
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
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "guc.h"
#include "launcher.h"
#include "shmem.h"

/* Retry interval while a worker waits for a free max_worker_processes slot */
#define WORKER_SLOT_RETRY_MS 1000

/* A worker that exits is not restarted sooner than this after its start */
#define MIN_RESTART_INTERVAL_MS 1000

/* Probes running at once: each takes a max_worker_processes slot */
#define MAX_CONCURRENT_PROBES 2

/* What the launcher knows of one database (local memory, keyed by OID) */
typedef struct DatabaseEntry
{
	Oid			database;		/* hash key */
	NameData	name;
	bool		seen;			/* in the latest scan of pg_database */
	bool		connectable;	/* allows connections and is not a template */
	bool		probed;			/* a worker found no extension there */
	bool		copy;			/* a worker found it a copy of another */
	BackgroundWorkerHandle *handle; /* worker this launcher started */
	bool		is_probe;		/* handle is a probe (no slot yet) */
	TimestampTz last_start;		/* of a worker with a slot (not a probe) */
	bool		logged_no_worker_slot;
	bool		logged_no_connections;
} DatabaseEntry;

/* One pass over the databases: what to do before the next wait */
typedef struct LauncherPass
{
	int			probes_running;
	bool		retry_soon;		/* something waits for a worker slot */
} LauncherPass;

static HTAB *databases = NULL;

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

/* ---------------------------------------------------------------------
 * What the launcher knows of the databases
 * ---------------------------------------------------------------------
 */

static DatabaseEntry *
enter_database(Oid database)
{
	bool		found;
	DatabaseEntry *entry = hash_search(databases, &database, HASH_ENTER,
									   &found);

	if (!found)
	{
		MemSet(&entry->name, 0, sizeof(NameData));
		entry->seen = true;
		entry->connectable = true;
		entry->probed = false;
		entry->copy = false;
		entry->handle = NULL;
		entry->is_probe = false;
		entry->last_start = 0;
		entry->logged_no_worker_slot = false;
		entry->logged_no_connections = false;
	}
	return entry;
}

static void
note_scanned_database(Form_pg_database form)
{
	DatabaseEntry *entry;
	bool		connectable = form->datallowconn && !form->datistemplate;

	/* Being dropped (or a drop was interrupted): as good as gone */
	if (database_is_invalid_form(form))
		return;
	entry = enter_database(form->oid);

	/* A database that starts allowing connections is probed again */
	if (connectable && !entry->connectable)
	{
		entry->probed = false;
		entry->logged_no_connections = false;
	}
	entry->connectable = connectable;
	namestrcpy(&entry->name, NameStr(form->datname));
	entry->seen = true;
}

/*
 * Read pg_database into the table.  Connected to no database, the launcher
 * can only scan it sequentially: its indexes are not usable.
 */
static void
scan_databases(void)
{
	HASH_SEQ_STATUS status;
	DatabaseEntry *entry;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	hash_seq_init(&status, databases);
	while ((entry = hash_seq_search(&status)) != NULL)
		entry->seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
		note_scanned_database((Form_pg_database) GETSTRUCT(tuple));
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* A database that is gone: release its slot and forget it */
static void
forget_database(DatabaseEntry *entry)
{
	KairoiDatabaseSlot *slot = kairoi_find_slot(entry->database);

	if (slot != NULL)
		kairoi_release_slot(slot);
	if (entry->handle != NULL)
		pfree(entry->handle);
	hash_search(databases, &entry->database, HASH_REMOVE, NULL);
}

/*
 * Forget the databases the latest scan did not see, then enter those that
 * have a slot but were not scanned (claimed since): the next scan confirms
 * them or, if the database is gone already, forgets them in turn.
 */
static void
reconcile_with_slots(void)
{
	HASH_SEQ_STATUS status;
	DatabaseEntry *entry;

	hash_seq_init(&status, databases);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (!entry->seen)
			forget_database(entry);
	}
	for (int i = 0; i < kairoi_shared->nslots; i++)
	{
		KairoiDatabaseSlot *slot = &kairoi_shared->slots[i];
		Oid			database;

		SpinLockAcquire(&slot->mutex);
		database = slot->database;
		SpinLockRelease(&slot->mutex);
		if (OidIsValid(database))
			(void) enter_database(database);
	}
}

/* ---------------------------------------------------------------------
 * Starting workers
 * ---------------------------------------------------------------------
 */

static void
set_blocked(KairoiDatabaseSlot *slot, Oid database, KairoiBlockedReason reason)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->database == database)
		slot->blocked = reason;
	SpinLockRelease(&slot->mutex);
}

static void
set_worker_slots_exhausted(bool exhausted)
{
	SpinLockAcquire(&kairoi_shared->mutex);
	kairoi_shared->worker_slots_exhausted = exhausted;
	SpinLockRelease(&kairoi_shared->mutex);
}

/*
 * Start a delivery worker for the database (a probe if it has no slot yet).
 * False, with one LOG line per database, if max_worker_processes has no
 * free slot.
 */
static bool
launch_worker(DatabaseEntry *entry, KairoiDatabaseSlot *slot)
{
	BackgroundWorker bgw;

	fill_worker_entry(&bgw, "kairoi_worker_main", "kairoi worker");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "kairoi worker for database %s",
			 NameStr(entry->name));
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_main_arg = ObjectIdGetDatum(entry->database);
	bgw.bgw_notify_pid = MyProcPid;

	if (RegisterDynamicBackgroundWorker(&bgw, &entry->handle))
	{
		entry->is_probe = (slot == NULL);
		if (!entry->is_probe)
			entry->last_start = GetCurrentTimestamp();
		entry->logged_no_worker_slot = false;
		set_worker_slots_exhausted(false);
		set_blocked(slot, entry->database, KAIROI_BLOCKED_NONE);
		return true;
	}

	entry->handle = NULL;
	set_worker_slots_exhausted(true);
	set_blocked(slot, entry->database, KAIROI_BLOCKED_NO_WORKER_SLOT);
	if (!entry->logged_no_worker_slot)
		ereport(LOG,
				(errmsg("kairoi: no background worker slot is free for database \"%s\"",
						NameStr(entry->name)),
				 errdetail("All %d slots of max_worker_processes are in use.",
						   max_worker_processes),
				 errhint("Raise max_worker_processes (one per database with the kairoi extension, one for the launcher, plus what other features use) and restart PostgreSQL. Meanwhile the launcher retries every second.")));
	entry->logged_no_worker_slot = true;
	return false;
}

/*
 * Is the worker this launcher started still running?  Forgets its handle
 * once it has stopped; *stopped says that it stopped just now.
 */
static bool
worker_running(DatabaseEntry *entry, bool *stopped)
{
	pid_t		pid;

	*stopped = false;
	if (entry->handle == NULL)
		return false;
	if (GetBackgroundWorkerPid(entry->handle, &pid) != BGWH_STOPPED)
		return true;
	pfree(entry->handle);
	entry->handle = NULL;
	*stopped = true;
	return false;
}

/*
 * Probes running now: started by this launcher as probes, not stopped, and
 * not yet the delivery worker of a database they found the extension in.
 * Counted before a pass, so that the pass starts no more than the limit
 * allows whatever order it visits the databases in.
 */
static int
count_probes(void)
{
	HASH_SEQ_STATUS status;
	DatabaseEntry *entry;
	int			probes = 0;

	hash_seq_init(&status, databases);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		pid_t		pid;

		if (entry->handle != NULL && entry->is_probe &&
			GetBackgroundWorkerPid(entry->handle, &pid) != BGWH_STOPPED &&
			kairoi_find_slot(entry->database) == NULL)
			probes++;
	}
	return probes;
}

/* A database without a slot: probe it once, unless there is no point */
static void
serve_unclaimed_database(DatabaseEntry *entry, bool running, bool stopped,
						 LauncherPass *pass)
{
	/* A worker that stopped without claiming a slot found no extension */
	if (stopped)
		entry->probed = true;
	if (running || !entry->connectable || entry->probed || entry->copy)
		return;
	if (pass->probes_running >= MAX_CONCURRENT_PROBES)
	{
		pass->retry_soon = true;
		return;
	}
	if (launch_worker(entry, NULL))
		pass->probes_running++;
	else
		pass->retry_soon = true;
}

/* Stop the worker of a database that no longer allows connections */
static void
hold_back_unconnectable(DatabaseEntry *entry, KairoiDatabaseSlot *slot,
						pid_t worker_pid)
{
	set_blocked(slot, entry->database, KAIROI_BLOCKED_NO_CONNECTIONS);
	if (worker_pid != 0)
		(void) kill(worker_pid, SIGTERM);
	if (!entry->logged_no_connections)
		ereport(LOG,
				(errmsg("kairoi: database \"%s\" does not allow connections or is a template; its outbox is not delivered",
						NameStr(entry->name)),
				 errhint("Delivery resumes when the database allows connections again (ALTER DATABASE ... WITH ALLOW_CONNECTIONS true).")));
	entry->logged_no_connections = true;
}

/*
 * A copy of a database (CREATE DATABASE ... TEMPLATE): its worker found
 * that its queue was the original's, and left.  It takes no worker, and no
 * slot (commits there claim one: it is freed again), until a restart is
 * requested, which kairoi_serve_copy() does.  True if held back.
 */
static bool
hold_back_copy(DatabaseEntry *entry, KairoiDatabaseSlot *slot,
			   bool worker_running, bool restart_requested)
{
	if (restart_requested)
	{
		entry->copy = false;
		return false;
	}
	entry->copy = true;
	if (!worker_running)
		kairoi_release_slot(slot);
	return true;
}

static void
serve_database(DatabaseEntry *entry, LauncherPass *pass)
{
	KairoiDatabaseSlot *slot = kairoi_find_slot(entry->database);
	bool		stopped;
	bool		running = worker_running(entry, &stopped);
	pid_t		worker_pid = 0;
	int			paused = 0;
	KairoiBlockedReason blocked = KAIROI_BLOCKED_NONE;
	bool		restart_requested = false;

	if (slot == NULL)
	{
		serve_unclaimed_database(entry, running, stopped, pass);
		return;
	}

	SpinLockAcquire(&slot->mutex);
	if (slot->database == entry->database)
	{
		worker_pid = slot->worker_pid;
		paused = slot->paused;
		blocked = slot->blocked;
		restart_requested = slot->restart_requested;
	}
	SpinLockRelease(&slot->mutex);

	if ((blocked == KAIROI_BLOCKED_COPY || entry->copy) &&
		hold_back_copy(entry, slot, worker_pid != 0 || running,
					   restart_requested))
		return;

	/* DROP DATABASE marks the database invalid before it is gone */
	if (paused > 0)
	{
		set_blocked(slot, entry->database, KAIROI_BLOCKED_PAUSED);
		return;
	}
	if (!entry->connectable)
	{
		hold_back_unconnectable(entry, slot, worker_pid);
		return;
	}
	entry->logged_no_connections = false;
	/*
	 * A worker is known from its slot, which also covers one that an
	 * earlier incarnation of the launcher started; the handle covers one
	 * that is starting and has not published itself yet.
	 */
	if (worker_pid != 0 || running)
		return;
	if (!TimestampDifferenceExceeds(entry->last_start, GetCurrentTimestamp(),
									MIN_RESTART_INTERVAL_MS))
	{
		pass->retry_soon = true;
		return;
	}
	if (!launch_worker(entry, slot))
		pass->retry_soon = true;
}

/* ---------------------------------------------------------------------
 * Main loop
 * ---------------------------------------------------------------------
 */

static void
publish_launcher(void)
{
	SpinLockAcquire(&kairoi_shared->mutex);
	kairoi_shared->launcher_pid = MyProcPid;
	kairoi_shared->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&kairoi_shared->mutex);
}

/* One LOG line per load of a postgresql.conf still written for 1.0 */
static void
log_obsolete_settings(void)
{
	if (kairoi_obsolete_database != NULL && kairoi_obsolete_database[0] != '\0')
		ereport(LOG,
				(errmsg("kairoi: kairoi.database is ignored since kairoi 1.1"),
				 errdetail("Every database that has the kairoi extension is delivered."),
				 errhint("Remove kairoi.database from the configuration.")));
	if (kairoi_obsolete_window != 0)
		ereport(LOG,
				(errmsg("kairoi: kairoi.window is ignored since kairoi 1.1"),
				 errdetail("It was renamed kairoi.max_in_flight, which is %d.",
						   kairoi_max_in_flight),
				 errhint("Set kairoi.max_in_flight instead.")));
}

static void
create_database_table(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DatabaseEntry);
	ctl.hcxt = TopMemoryContext;
	databases = hash_create("kairoi launcher databases", 256, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

void
kairoi_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	kairoi_pin_background_settings();
	pgstat_report_appname("kairoi launcher");
	publish_launcher();
	create_database_table();
	log_obsolete_settings();

	while (!ShutdownRequestPending)
	{
		LauncherPass pass = {0, false};
		HASH_SEQ_STATUS status;
		DatabaseEntry *entry;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			log_obsolete_settings();
		}

		scan_databases();
		reconcile_with_slots();
		pass.probes_running = count_probes();
		hash_seq_init(&status, databases);
		while ((entry = hash_seq_search(&status)) != NULL)
			serve_database(entry, &pass);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 pass.retry_soon ? WORKER_SLOT_RETRY_MS : kairoi_poll_interval_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/*
	 * Exit status 1 makes the postmaster restart the launcher after
	 * bgw_restart_time, unless the whole server is shutting down: a
	 * pg_terminate_backend() must not stop delivery for good.
	 */
	proc_exit(1);
}
