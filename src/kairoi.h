/*-------------------------------------------------------------------------
 *
 * kairoi.h
 *	  Declarations shared by the kairoi extension's translation units: the
 *	  configuration variables, the shared-memory state that the launcher,
 *	  the delivery worker and user backends exchange, and the entry points
 *	  of each module.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_H
#define KAIROI_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"

/*
 * Largest identifier, pattern or runner argument, in UTF-8 bytes.  The
 * reference server rejects identifiers over 65535 bytes; the same bound is
 * applied to every argument so that no request can grow without limit.
 */
#define KAIROI_MAX_ARGUMENT_BYTES 65535

/*
 * Default bound, in bytes, of one write of requests holding non-ASCII text
 * (kairoi.non_ascii_write_limit): what fits in one TCP segment on an
 * Ethernet path (MTU 1500: 1460 bytes of payload over IPv4, 1440 over
 * IPv6, less TCP options), with some room for tunnels.  A write that
 * arrives in one segment is read whole by the reference server, whose
 * reads (2048 bytes) then cannot end inside a character.
 */
#define KAIROI_NON_ASCII_WRITE_LIMIT 1400

#define KAIROI_SERVER_MAXLEN 256
#define KAIROI_ERROR_MAXLEN 512

/* Configuration (GUCs), defined in kairoi.c */
extern char *kairoi_server;
extern int	kairoi_poll_interval_ms;
extern int	kairoi_batch_size;
extern int	kairoi_max_in_flight;
extern int	kairoi_connect_timeout_ms;
extern int	kairoi_request_timeout_ms;
extern int	kairoi_backoff_min_ms;
extern int	kairoi_backoff_max_ms;
extern int	kairoi_max_attempts;
extern int	kairoi_idle_timeout_ms;
extern int	kairoi_batch_delay_ms;
extern int	kairoi_max_databases;
extern char *kairoi_obsolete_database;
extern int	kairoi_obsolete_window;
extern int	kairoi_non_ascii_write_limit;

/* What a delivery worker is doing, as shown by kairoi_status() */
typedef enum KairoiWorkerState
{
	KAIROI_STATE_STARTING = 0,
	KAIROI_STATE_CONNECTING,
	KAIROI_STATE_CONNECTED,
	KAIROI_STATE_BACKOFF,		/* waiting before the next connection attempt */
	KAIROI_STATE_IDLE			/* connection closed after kairoi.idle_timeout */
} KairoiWorkerState;

/* Why the launcher runs no worker for a database that has the extension */
typedef enum KairoiBlockedReason
{
	KAIROI_BLOCKED_NONE = 0,
	KAIROI_BLOCKED_NO_WORKER_SLOT,	/* max_worker_processes exhausted */
	KAIROI_BLOCKED_NO_CONNECTIONS,	/* ALLOW_CONNECTIONS false, or a template */
	KAIROI_BLOCKED_PAUSED		/* DROP or RENAME DATABASE in progress */
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

/* kairoi.c */
extern KairoiShared *kairoi_shared;
extern KairoiDatabaseSlot *kairoi_find_slot(Oid database);
extern KairoiDatabaseSlot *kairoi_claim_slot(Oid database);
extern void kairoi_release_slot(KairoiDatabaseSlot *slot);
extern bool kairoi_release_slot_if_quiet(KairoiDatabaseSlot *slot);
extern void kairoi_wake_launcher(void);
extern void kairoi_wake_worker(Oid database);
extern void kairoi_request_restart(Oid database);
extern void kairoi_announce_commit(int64 from_seq);
extern int64 kairoi_take_rescan_request(KairoiDatabaseSlot *slot);
extern void kairoi_set_last_error(KairoiDatabaseSlot *slot, const char *message);

/* sql_api.c */
extern void kairoi_note_enqueue(int64 seq);
extern bool kairoi_enqueued_in_transaction(void);
extern void kairoi_note_database_change(Oid database, bool restart_worker);
extern void kairoi_register_xact_callback(void);

/* launcher.c */
extern void kairoi_register_launcher(void);
extern void kairoi_install_utility_hook(void);
PGDLLEXPORT void kairoi_launcher_main(Datum main_arg);

/* worker.c */
PGDLLEXPORT void kairoi_worker_main(Datum main_arg);

#endif							/* KAIROI_H */
