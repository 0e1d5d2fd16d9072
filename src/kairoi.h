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
extern char *kairoi_database;
extern int	kairoi_poll_interval_ms;
extern int	kairoi_batch_size;
extern int	kairoi_window;
extern int	kairoi_connect_timeout_ms;
extern int	kairoi_request_timeout_ms;
extern int	kairoi_backoff_min_ms;
extern int	kairoi_backoff_max_ms;
extern int	kairoi_max_attempts;
extern int	kairoi_non_ascii_write_limit;

/* What the delivery worker is doing, as shown by kairoi_status() */
typedef enum KairoiWorkerState
{
	KAIROI_STATE_STARTING = 0,
	KAIROI_STATE_NO_EXTENSION,	/* connected, extension not installed */
	KAIROI_STATE_CONNECTING,
	KAIROI_STATE_CONNECTED,
	KAIROI_STATE_BACKOFF		/* waiting before the next connection attempt */
} KairoiWorkerState;

/*
 * State in shared memory.  Scalar fields are protected by mutex; readers
 * copy them out under the spinlock.  Nothing persistent is derived from
 * here: a crash restart resets it while the outbox tables persist.
 */
typedef struct KairoiShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	pid_t		worker_pid;
	Oid			worker_database;	/* database the worker serves */
	Latch	   *worker_latch;	/* set to wake the worker */
	Latch	   *launcher_latch;
	Oid			paused_database;	/* DROP DATABASE in progress */
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
	/* broadcast whenever acknowledged entries have been removed */
	ConditionVariable progress_cv;
} KairoiShared;

/* kairoi.c */
extern KairoiShared *kairoi_shared;
extern void kairoi_wake_worker(void);
extern void kairoi_request_rescan(int64 from_seq);
extern int64 kairoi_take_rescan_request(void);
extern void kairoi_set_last_error(const char *message);

/* sql_api.c */
extern void kairoi_note_enqueue(int64 seq);
extern bool kairoi_enqueued_in_transaction(void);
extern void kairoi_register_xact_callback(void);

/* launcher.c */
extern void kairoi_register_launcher(void);
extern void kairoi_install_utility_hook(void);
PGDLLEXPORT void kairoi_launcher_main(Datum main_arg);

/* worker.c */
PGDLLEXPORT void kairoi_worker_main(Datum main_arg);

#endif							/* KAIROI_H */
