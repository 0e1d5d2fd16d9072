/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  The state in shared memory that the launcher, the delivery workers
 *	  and user backends exchange: one slot per database served, and the
 *	  functions that read and change a slot under its spinlock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_SHMEM_H
#define KAIROI_SHMEM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define KAIROI_SERVER_MAXLEN 256
#define KAIROI_ERROR_MAXLEN 512

/* What a delivery worker is doing, as shown by kairoi_status() */
typedef enum KairoiWorkerState
{
	KAIROI_STATE_STARTING = 0,
	KAIROI_STATE_CONNECTING,
	KAIROI_STATE_CONNECTED,
	KAIROI_STATE_BACKOFF,		/* waiting before the next connection attempt */
	KAIROI_STATE_IDLE,			/* connection closed after kairoi.idle_timeout */
	KAIROI_STATE_OUTDATED		/* the extension is older than the library */
} KairoiWorkerState;

/* Why the launcher runs no worker for a database that has the extension */
typedef enum KairoiBlockedReason
{
	KAIROI_BLOCKED_NONE = 0,
	KAIROI_BLOCKED_NO_WORKER_SLOT,	/* max_worker_processes exhausted */
	KAIROI_BLOCKED_NO_CONNECTIONS,	/* ALLOW_CONNECTIONS false, or a template */
	KAIROI_BLOCKED_PAUSED,		/* DROP or RENAME DATABASE in progress */
	KAIROI_BLOCKED_COPY			/* a copy of a database: written by its worker */
} KairoiBlockedReason;

/*
 * One database whose outbox is delivered: it has the extension (as far as
 * anyone knows).  A slot is claimed by the commit of a transaction that
 * enqueued in a database without one (CREATE EXTENSION does), or by a
 * worker that found the extension in its database; it is released when
 * the worker finds the extension gone, or by the launcher when the
 * database is gone.  Fields are protected by the slot's own spinlock, so
 * that commits in one database never contend with another's.
 */
typedef struct KairoiDatabaseSlot
{
	slock_t		mutex;
	Oid			database;		/* InvalidOid: the slot is free */
	NameData	datname;		/* as of the worker's start, for display */
	pid_t		worker_pid;		/* 0: no worker runs */
	Latch	   *worker_latch;
	/* the worker sleeps waiting for commits: the next commit sets its latch */
	bool		wants_wakeup;
	/* settings or the extension changed: the worker exits, the launcher restarts it */
	bool		restart_requested;
	int			paused;			/* DROP/RENAME DATABASE statements in progress */
	KairoiBlockedReason blocked;	/* written by the launcher */
	/* lowest seq committed since the worker last looked, or INT64_MAX */
	int64		rescan_from_seq;
	KairoiWorkerState state;
	char		server[KAIROI_SERVER_MAXLEN];
	char		last_error[KAIROI_ERROR_MAXLEN];
	TimestampTz last_error_at;
	TimestampTz connected_at;
	int			in_flight;
	uint64		acknowledged;	/* since the worker started */
	uint64		connection_attempts;	/* since the worker started */
	int64		pending;		/* outbox rows at the worker's last count, or -1 */
} KairoiDatabaseSlot;

/*
 * State in shared memory.  Nothing persistent is derived from here: a crash
 * restart resets it while the outbox tables persist.
 */
typedef struct KairoiShared
{
	slock_t		mutex;			/* protects the launcher fields */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	/* set when a worker could not be registered; cleared on success */
	bool		worker_slots_exhausted;
	/* broadcast whenever a worker removed acknowledged entries or exited */
	ConditionVariable progress_cv;
	int			nslots;
	KairoiDatabaseSlot slots[FLEXIBLE_ARRAY_MEMBER];
} KairoiShared;

/* NULL unless the module was preloaded (no shared memory otherwise) */
extern KairoiShared *kairoi_shared;

/* _PG_init, when preloaded: request and initialise the shared memory */
extern void kairoi_install_shmem_hooks(void);

/* Slots: finding, claiming and releasing them */
extern KairoiDatabaseSlot *kairoi_find_slot(Oid database);
extern KairoiDatabaseSlot *kairoi_claim_slot(Oid database);
extern void kairoi_release_slot(KairoiDatabaseSlot *slot);
extern bool kairoi_release_slot_if_quiet(KairoiDatabaseSlot *slot);

/* Wake-ups and requests between processes */
extern void kairoi_wake_launcher(void);
extern void kairoi_wake_worker(Oid database);
extern void kairoi_request_restart(Oid database);
extern bool kairoi_announce_commit(int64 from_seq);

/* A delivery worker's side of its slot */
extern KairoiDatabaseSlot *kairoi_publish_worker(Oid database,
												 const char *datname);
extern void kairoi_publish_state(KairoiDatabaseSlot *slot,
								 KairoiWorkerState state, int in_flight,
								 const char *server);
extern void kairoi_publish_pending(KairoiDatabaseSlot *slot, int64 pending);
extern void kairoi_count_acknowledged(KairoiDatabaseSlot *slot, uint64 n);
extern void kairoi_count_connection_attempt(KairoiDatabaseSlot *slot);
extern void kairoi_set_last_error(KairoiDatabaseSlot *slot,
								  const char *message);
extern bool kairoi_ask_for_commit_wakeups(KairoiDatabaseSlot *slot,
										  bool wanted);
extern int64 kairoi_take_rescan_request(KairoiDatabaseSlot *slot);
extern void kairoi_block_copy(KairoiDatabaseSlot *slot);
extern bool kairoi_restart_requested(KairoiDatabaseSlot *slot);

#endif							/* KAIROI_SHMEM_H */
