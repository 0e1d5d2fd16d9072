/*-------------------------------------------------------------------------
 *
 * kairoi.c
 *	  Module entry point: configuration variables, shared memory and its
 *	  per-database slots, and the registration of the launcher, the commit
 *	  callback and the utility hook.
 *
 *	  Loaded through shared_preload_libraries, the module runs the launcher
 *	  and one delivery worker per database that has the extension.  Loaded
 *	  on demand by a backend (no preloading), the SQL functions still
 *	  enqueue; kairoi_status() then reports that no worker runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "kairoi.h"

PG_MODULE_MAGIC;

char	   *kairoi_server = NULL;
int			kairoi_poll_interval_ms = 10000;
int			kairoi_batch_size = 500;
int			kairoi_max_in_flight = 1000;
int			kairoi_connect_timeout_ms = 5000;
int			kairoi_request_timeout_ms = 30000;
int			kairoi_backoff_min_ms = 100;
int			kairoi_backoff_max_ms = 30000;
int			kairoi_max_attempts = 5;
int			kairoi_idle_timeout_ms = 60000;
int			kairoi_batch_delay_ms = 1;
int			kairoi_max_databases = 64;
int			kairoi_non_ascii_write_limit = KAIROI_NON_ASCII_WRITE_LIMIT;

/*
 * Settings of kairoi 1.0 that 1.1 no longer uses.  They stay defined so that
 * a postgresql.conf written for 1.0 loads without complaint; the launcher
 * logs once that they are ignored.
 */
char	   *kairoi_obsolete_database = NULL;
int			kairoi_obsolete_window = 0;

KairoiShared *kairoi_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static bool
check_server(char **newval, void **extra, GucSource source)
{
	char		host[256];
	char		port[16];

	if (kairoi_parse_server(*newval, host, sizeof(host), port, sizeof(port)))
		return true;
	GUC_check_errdetail("kairoi.server must be host:port, for example 127.0.0.1:5678 or [::1]:5678.");
	return false;
}

/* The integer GUCs, all reloadable; flags is 0 or a unit */
typedef struct IntVariable
{
	const char *name;
	const char *description;
	int		   *variable;
	int			min_value;
	int			max_value;
	int			flags;
} IntVariable;

static const IntVariable int_variables[] = {
	{"kairoi.poll_interval",
		"Safety poll of the outbox when no commit woke the worker.",
	&kairoi_poll_interval_ms, 100, 3600000, GUC_UNIT_MS},
	{"kairoi.batch_size", "Outbox rows read per query.",
	&kairoi_batch_size, 1, 10000, 0},
	{"kairoi.max_in_flight", "Requests in flight at most on a connection.",
	&kairoi_max_in_flight, 1, 100000, 0},
	{"kairoi.connect_timeout", "Time allowed to establish a connection.",
	&kairoi_connect_timeout_ms, 100, 600000, GUC_UNIT_MS},
	{"kairoi.request_timeout",
		"Time without any response, while requests are in flight, before reconnecting.",
	&kairoi_request_timeout_ms, 100, 3600000, GUC_UNIT_MS},
	{"kairoi.backoff_min",
		"First delay before reconnecting or retrying a rejected entry; doubles each time.",
	&kairoi_backoff_min_ms, 1, 3600000, GUC_UNIT_MS},
	{"kairoi.backoff_max",
		"Largest delay before reconnecting or retrying a rejected entry.",
	&kairoi_backoff_max_ms, 1, 3600000, GUC_UNIT_MS},
	{"kairoi.max_attempts",
		"Answers of ERROR after which an entry moves to kairoi.failed.",
	&kairoi_max_attempts, 1, 1000, 0},
	{"kairoi.idle_timeout",
		"Time with nothing to deliver after which a worker closes its connection (0: never).",
	&kairoi_idle_timeout_ms, 0, 86400000, GUC_UNIT_MS},
	{"kairoi.batch_delay",
		"Under a steady flow of commits, least time between two reads of newly committed entries (0: read at every commit).",
	&kairoi_batch_delay_ms, 0, 1000, GUC_UNIT_MS},
	{"kairoi.non_ascii_write_limit",
		"Largest write packing requests that hold non-ASCII text; 0 sends each alone.",
	&kairoi_non_ascii_write_limit, 0, 1024 * 1024, GUC_UNIT_BYTE},
};

static void
define_obsolete_variables(void)
{
	DefineCustomStringVariable("kairoi.database",
							   "Obsolete since kairoi 1.1 and ignored: every database with the extension is served.",
							   NULL, &kairoi_obsolete_database, "", PGC_SIGHUP,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("kairoi.window",
							"Obsolete since kairoi 1.1 and ignored: renamed kairoi.max_in_flight.",
							NULL, &kairoi_obsolete_window, 0, 0, 100000, PGC_SIGHUP,
							GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

static void
define_variables(void)
{
	/*
	 * PGC_SUSET, not PGC_SIGHUP, so that ALTER DATABASE ... SET can give a
	 * database its own server (a superuser-only change).  A session's own
	 * SET changes nothing but what that session's kairoi_status() shows.
	 */
	DefineCustomStringVariable("kairoi.server",
							   "Address (host:port) of the Kairoi server.",
							   "A database can override it with ALTER DATABASE ... SET; "
							   "a change makes the worker reconnect.",
							   &kairoi_server, "127.0.0.1:5678", PGC_SUSET,
							   0, check_server, NULL, NULL);
	/* A PGC_POSTMASTER variable can only be defined at postmaster start */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("kairoi.max_databases",
								"Databases with the extension that the launcher can serve.",
								"Sizes a shared-memory array; each served database also takes "
								"one of max_worker_processes.",
								&kairoi_max_databases, 64, 1, 10000, PGC_POSTMASTER,
								0, NULL, NULL, NULL);
	for (size_t i = 0; i < lengthof(int_variables); i++)
	{
		const IntVariable *v = &int_variables[i];

		DefineCustomIntVariable(v->name, v->description, NULL, v->variable,
								*v->variable, v->min_value, v->max_value,
								PGC_SIGHUP, v->flags, NULL, NULL, NULL);
	}
	define_obsolete_variables();
	MarkGUCPrefixReserved("kairoi");
}

static Size
shared_size(void)
{
	return add_size(offsetof(KairoiShared, slots),
					mul_size(kairoi_max_databases, sizeof(KairoiDatabaseSlot)));
}

static void
kairoi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(shared_size()));
}

static void
kairoi_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kairoi_shared = ShmemInitStruct("kairoi", shared_size(), &found);
	if (!found)
	{
		memset(kairoi_shared, 0, shared_size());
		SpinLockInit(&kairoi_shared->mutex);
		ConditionVariableInit(&kairoi_shared->progress_cv);
		kairoi_shared->nslots = kairoi_max_databases;
		for (int i = 0; i < kairoi_shared->nslots; i++)
			SpinLockInit(&kairoi_shared->slots[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	define_variables();
	kairoi_register_xact_callback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kairoi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kairoi_shmem_startup;
	kairoi_install_utility_hook();
	kairoi_register_launcher();
}

/* ---------------------------------------------------------------------
 * Database slots
 * ---------------------------------------------------------------------
 */

/* The slot of database, or NULL if it has none */
KairoiDatabaseSlot *
kairoi_find_slot(Oid database)
{
	if (kairoi_shared == NULL || !OidIsValid(database))
		return NULL;
	for (int i = 0; i < kairoi_shared->nslots; i++)
	{
		KairoiDatabaseSlot *slot = &kairoi_shared->slots[i];
		bool		match;

		SpinLockAcquire(&slot->mutex);
		match = (slot->database == database);
		SpinLockRelease(&slot->mutex);
		if (match)
			return slot;
	}
	return NULL;
}

static void
init_slot(KairoiDatabaseSlot *slot, Oid database)
{
	slot->database = database;
	MemSet(&slot->datname, 0, sizeof(NameData));
	slot->worker_pid = 0;
	slot->worker_latch = NULL;
	slot->wants_wakeup = false;
	slot->restart_requested = false;
	slot->paused = 0;
	slot->blocked = KAIROI_BLOCKED_NONE;
	slot->rescan_from_seq = PG_INT64_MAX;
	slot->state = KAIROI_STATE_STARTING;
	slot->server[0] = '\0';
	slot->last_error[0] = '\0';
	slot->last_error_at = 0;
	slot->connected_at = 0;
	slot->in_flight = 0;
	slot->acknowledged = 0;
	slot->connection_attempts = 0;
	slot->pending = -1;
}

/*
 * The slot of database, claimed now if it had none.  NULL if every slot is
 * taken (kairoi.max_databases).  Claimers serialise on the shared mutex, so
 * a database never gets two slots.
 */
KairoiDatabaseSlot *
kairoi_claim_slot(Oid database)
{
	KairoiDatabaseSlot *slot;
	KairoiDatabaseSlot *free_slot = NULL;

	SpinLockAcquire(&kairoi_shared->mutex);
	slot = kairoi_find_slot(database);
	for (int i = 0; slot == NULL && free_slot == NULL &&
		 i < kairoi_shared->nslots; i++)
	{
		KairoiDatabaseSlot *candidate = &kairoi_shared->slots[i];

		SpinLockAcquire(&candidate->mutex);
		if (!OidIsValid(candidate->database))
		{
			init_slot(candidate, database);
			free_slot = candidate;
		}
		SpinLockRelease(&candidate->mutex);
	}
	SpinLockRelease(&kairoi_shared->mutex);
	return slot ? slot : free_slot;
}

/* Free a slot; with only_if_quiet, not if a commit announced itself */
static bool
release_slot(KairoiDatabaseSlot *slot, bool only_if_quiet)
{
	bool		released;

	SpinLockAcquire(&kairoi_shared->mutex);
	SpinLockAcquire(&slot->mutex);
	released = !only_if_quiet || slot->rescan_from_seq == PG_INT64_MAX;
	if (released)
	{
		slot->database = InvalidOid;
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	SpinLockRelease(&slot->mutex);
	SpinLockRelease(&kairoi_shared->mutex);
	return released;
}

/* The launcher: the slot's database is gone */
void
kairoi_release_slot(KairoiDatabaseSlot *slot)
{
	(void) release_slot(slot, false);
}

/*
 * Release a slot whose database was found without the extension, unless a
 * commit announced itself there since the caller last took the rescan
 * request (CREATE EXTENSION may have run again meanwhile).
 */
bool
kairoi_release_slot_if_quiet(KairoiDatabaseSlot *slot)
{
	return release_slot(slot, true);
}

void
kairoi_wake_launcher(void)
{
	Latch	   *latch;

	if (kairoi_shared == NULL)
		return;
	SpinLockAcquire(&kairoi_shared->mutex);
	latch = kairoi_shared->launcher_latch;
	SpinLockRelease(&kairoi_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Set the latch of database's worker, whether it asked for it or not */
void
kairoi_wake_worker(Oid database)
{
	KairoiDatabaseSlot *slot = kairoi_find_slot(database);
	Latch	   *latch = NULL;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->database == database)
		latch = slot->worker_latch;
	SpinLockRelease(&slot->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Make database's worker exit so that the launcher starts a new one, which
 * reads the database's settings and extension afresh.
 */
void
kairoi_request_restart(Oid database)
{
	KairoiDatabaseSlot *slot = kairoi_find_slot(database);

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->database == database)
		slot->restart_requested = true;
	SpinLockRelease(&slot->mutex);
	kairoi_wake_worker(database);
}

/*
 * A transaction of this database that enqueued something committed: rows
 * from from_seq on became visible, and the worker's fetch cursor may
 * already be past them (a transaction that took its seq early committed
 * late, or replaced a row the worker had skipped).  The worker's latch is
 * set only if it sleeps waiting for commits: a burst of commits wakes it
 * once, and a worker in backoff is not woken at all (it reads the whole
 * outbox when it reconnects).  A database without a slot gets one, and the
 * launcher starts its worker.
 */
static bool
note_commit(KairoiDatabaseSlot *slot, int64 from_seq, Latch **latch)
{
	bool		found;

	SpinLockAcquire(&slot->mutex);
	found = (slot->database == MyDatabaseId);
	if (found)
	{
		slot->rescan_from_seq = Min(slot->rescan_from_seq, from_seq);
		if (slot->wants_wakeup)
		{
			slot->wants_wakeup = false;
			*latch = slot->worker_latch;
		}
	}
	SpinLockRelease(&slot->mutex);
	return found;
}

void
kairoi_announce_commit(int64 from_seq)
{
	static KairoiDatabaseSlot *slot = NULL; /* this database's, cached */
	Latch	   *latch = NULL;
	bool		found = false;

	if (kairoi_shared == NULL)
		return;
	if (slot == NULL)
		slot = kairoi_find_slot(MyDatabaseId);
	if (slot != NULL)
		found = note_commit(slot, from_seq, &latch);
	if (!found)
	{
		slot = kairoi_claim_slot(MyDatabaseId);
		kairoi_wake_launcher();
		if (slot != NULL)
			(void) note_commit(slot, from_seq, &latch);
	}
	if (latch != NULL)
		SetLatch(latch);
}

/* The worker: lowest seq to read again (INT64_MAX if none), and reset it */
int64
kairoi_take_rescan_request(KairoiDatabaseSlot *slot)
{
	int64		from_seq;

	SpinLockAcquire(&slot->mutex);
	from_seq = slot->rescan_from_seq;
	slot->rescan_from_seq = PG_INT64_MAX;
	SpinLockRelease(&slot->mutex);
	return from_seq;
}

void
kairoi_set_last_error(KairoiDatabaseSlot *slot, const char *message)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->last_error, message, KAIROI_ERROR_MAXLEN);
	slot->last_error_at = now;
	SpinLockRelease(&slot->mutex);
}
