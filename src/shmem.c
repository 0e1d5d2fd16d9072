/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of the extension: its size and initialisation, the
 *	  per-database slots (claimed, found, released), the wake-ups and
 *	  requests that go through them, and what a delivery worker publishes
 *	  in its slot for kairoi_status() and kairoi_workers().
 *
 *	  Every field of a slot is read and written under the slot's spinlock;
 *	  claiming and releasing also take the shared mutex, so that a
 *	  database never gets two slots.  Nothing persistent is derived from
 *	  here: a crash restart resets it while the outbox tables persist.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "shmem.h"

KairoiShared *kairoi_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

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
kairoi_install_shmem_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kairoi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kairoi_shmem_startup;
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
 * outbox when it reconnects).  A database without a slot gets one; true
 * then, and the caller wakes the launcher (once it has said all it has to
 * say about the slot), which starts its worker.
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

bool
kairoi_announce_commit(int64 from_seq)
{
	static KairoiDatabaseSlot *slot = NULL; /* this database's, cached */
	Latch	   *latch = NULL;
	bool		found = false;

	if (kairoi_shared == NULL)
		return false;
	if (slot == NULL)
		slot = kairoi_find_slot(MyDatabaseId);
	if (slot != NULL)
		found = note_commit(slot, from_seq, &latch);
	if (!found)
	{
		slot = kairoi_claim_slot(MyDatabaseId);
		if (slot != NULL)
			(void) note_commit(slot, from_seq, &latch);
	}
	if (latch != NULL)
		SetLatch(latch);
	return !found;
}

/* ---------------------------------------------------------------------
 * A delivery worker's slot
 * ---------------------------------------------------------------------
 */

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

static void
unpublish_worker(int code, Datum arg)
{
	KairoiDatabaseSlot *slot = (KairoiDatabaseSlot *) DatumGetPointer(arg);

	SpinLockAcquire(&slot->mutex);
	if (slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
		slot->wants_wakeup = false;
		slot->state = KAIROI_STATE_STARTING;
		slot->in_flight = 0;
		slot->connected_at = 0;
	}
	SpinLockRelease(&slot->mutex);
	ConditionVariableBroadcast(&kairoi_shared->progress_cv);
}

/*
 * The worker takes database's slot, claiming it if needed, and leaves it
 * when it exits.  NULL if another worker serves the database already, or
 * if every slot is taken.
 */
KairoiDatabaseSlot *
kairoi_publish_worker(Oid database, const char *datname)
{
	KairoiDatabaseSlot *slot = kairoi_claim_slot(database);
	bool		taken = false;

	if (slot == NULL)
	{
		ereport(LOG,
				(errmsg("kairoi: database \"%s\" has the kairoi extension but cannot be served",
						datname),
				 errdetail("kairoi.max_databases (%d) databases are served already.",
						   kairoi_max_databases),
				 errhint("Raise kairoi.max_databases and restart PostgreSQL.")));
		return NULL;
	}

	SpinLockAcquire(&slot->mutex);
	if (slot->database == database && slot->worker_pid == 0)
	{
		slot->worker_pid = MyProcPid;
		slot->worker_latch = &MyProc->procLatch;
		slot->wants_wakeup = false;
		slot->restart_requested = false;
		slot->blocked = KAIROI_BLOCKED_NONE;
		slot->state = KAIROI_STATE_STARTING;
		slot->acknowledged = 0;
		slot->connection_attempts = 0;
		slot->pending = -1;
		strlcpy(NameStr(slot->datname), datname, NAMEDATALEN);
		taken = true;
	}
	SpinLockRelease(&slot->mutex);
	if (!taken)
		return NULL;
	before_shmem_exit(unpublish_worker, PointerGetDatum(slot));
	return slot;
}

void
kairoi_publish_state(KairoiDatabaseSlot *slot, KairoiWorkerState state,
					 int in_flight, const char *server)
{
	TimestampTz now = GetCurrentTimestamp();	/* not under the spinlock */

	SpinLockAcquire(&slot->mutex);
	slot->state = state;
	slot->in_flight = in_flight;
	strlcpy(slot->server, server, KAIROI_SERVER_MAXLEN);
	if (state == KAIROI_STATE_CONNECTED && slot->connected_at == 0)
		slot->connected_at = now;
	else if (state != KAIROI_STATE_CONNECTED)
		slot->connected_at = 0;
	SpinLockRelease(&slot->mutex);
}

/* Outbox rows at the worker's last count, or -1 */
void
kairoi_publish_pending(KairoiDatabaseSlot *slot, int64 pending)
{
	SpinLockAcquire(&slot->mutex);
	slot->pending = pending;
	SpinLockRelease(&slot->mutex);
}

void
kairoi_count_acknowledged(KairoiDatabaseSlot *slot, uint64 n)
{
	SpinLockAcquire(&slot->mutex);
	slot->acknowledged += n;
	SpinLockRelease(&slot->mutex);
}

void
kairoi_count_connection_attempt(KairoiDatabaseSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->connection_attempts++;
	SpinLockRelease(&slot->mutex);
}

/*
 * Tell committing backends whether to set the worker's latch while it
 * sleeps.  Returns true if a commit announced itself in the meantime and
 * the worker should not sleep at all.
 */
bool
kairoi_ask_for_commit_wakeups(KairoiDatabaseSlot *slot, bool wanted)
{
	bool		announced;

	SpinLockAcquire(&slot->mutex);
	slot->wants_wakeup = wanted;
	announced = (slot->rescan_from_seq != PG_INT64_MAX);
	SpinLockRelease(&slot->mutex);
	return wanted && announced;
}

/* Has kairoi_request_restart() asked the slot's worker to exit? */
bool
kairoi_restart_requested(KairoiDatabaseSlot *slot)
{
	bool		restart;

	SpinLockAcquire(&slot->mutex);
	restart = slot->restart_requested;
	SpinLockRelease(&slot->mutex);
	return restart;
}

/*
 * The worker found its database to be a copy of another (kairoi.origin):
 * the launcher starts no worker for it until a restart is requested
 * (kairoi_serve_copy()).
 */
void
kairoi_block_copy(KairoiDatabaseSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->blocked = KAIROI_BLOCKED_COPY;
	SpinLockRelease(&slot->mutex);
}
