/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Access to the queue of pending entries (kairoi.pending_jobs and
 *	  kairoi.pending_rules), their retry state (kairoi.rejections) and the
 *	  failed entries (kairoi.failed): enqueueing from user backends, and
 *	  fetching, acknowledging and rejecting entries from the delivery
 *	  worker.
 *
 *	  outbox.c enqueues (through the executor) and counts; outbox_direct.c
 *	  holds the worker's fetch and deletes (without SQL); rejections.c the
 *	  worker's bookkeeping of answers of ERROR; outbox_1_1.c the enqueueing
 *	  into a database whose extension is still at 1.1.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_OUTBOX_H
#define KAIROI_OUTBOX_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "storage/itemptr.h"

/* Kinds of entries, as in kairoi.failed.kind and the views */
#define OUTBOX_KIND_RULE 'r'
#define OUTBOX_KIND_JOB 'j'

/*
 * One pending entry as the worker sees it.  Strings are UTF-8, ready for
 * the wire.  For a job, arguments = {execution, formatted}; for a rule,
 * arguments = {pattern, runner, runner arguments...}.
 */
typedef struct OutboxEntry
{
	int64		seq;			/* place in the queue, kept on replacement */
	int64		version;		/* renewed on every replacement */
	ItemPointerData tid;		/* where this version of the row was read */
	char		kind;
	char	   *identifier;
	int			nargs;
	char	  **args;
} OutboxEntry;

/*
 * A job's execution as Kairoi reads it, UTC "YYYY-MM-DD HH:MM:SS" (the
 * execution is already rounded to a whole second): what the worker sends,
 * and what kairoi.failed and 1.1's outbox keep.  buf holds
 * KAIROI_EXECUTION_LEN + 1 bytes.
 */
#define KAIROI_EXECUTION_LEN 19
extern void kairoi_format_execution(TimestampTz execution, char *buf);

/*
 * User backends: insert or replace the pending job, or rule (arguments: a
 * text[] of pattern, runner and its arguments).  Returns the entry's seq.
 */
extern int64 outbox_enqueue_job(text *identifier, TimestampTz execution);
extern int64 outbox_enqueue_rule(text *identifier, Datum arguments);

/*
 * User backends: insert or replace n jobs (text identifiers, timestamptz
 * executions) through one statement.  Duplicate identifiers count once, at
 * the place of the first and with the execution of the last; the arrays
 * are rewritten to that effect.  Returns the lowest seq written.
 */
extern int64 outbox_enqueue_jobs(Datum *identifiers, Datum *executions,
								 int n);

/*
 * Is this database's extension at 1.2 or later (the queue in
 * kairoi.pending_jobs and kairoi.pending_rules)?  False while it is still
 * at 1.1, between the library's upgrade and ALTER EXTENSION kairoi UPDATE.
 */
extern bool outbox_is_current(void);

/* An error for what needs the extension at 1.2 in a database still at 1.1 */
extern void outbox_require_current(const char *what);

/*
 * Worker, inside a transaction: up to limit due entries with seq > after,
 * in queue order, skipping those in exclude_seqs (in flight) and those
 * waiting for a retry (rejections.h).  Entries are allocated in the
 * caller's memory context.
 */
extern int	outbox_fetch(int64 after, const int64 *exclude_seqs, int nexclude,
						 int limit, OutboxEntry *entries);

/* What the worker sent of an entry: where it read which version */
typedef struct OutboxSent
{
	char		kind;
	int64		seq;
	int64		version;
	ItemPointerData tid;
} OutboxSent;

/*
 * Worker: remove acknowledged entries whose version is still the one sent,
 * found by where they were read.  Returns the number of rows removed.
 * Failed entries of their identifiers with an older version are superseded
 * (removed) with them.
 */
extern uint64 outbox_delete_acknowledged(const OutboxSent *sent, int n);

/*
 * Worker: move an entry the server kept rejecting to kairoi.failed, with
 * its attempts and why, if its version is still the one sent and no other
 * transaction is modifying it (no wait for a lock).  False if not moved:
 * it was replaced meanwhile (the new value is sent), or is locked.
 */
extern bool outbox_move_to_failed(const OutboxSent *sent, int attempts,
								  const char *reason);

/*
 * The OID of kairoi.<name>, a relation of the extension; an error saying
 * the extension is damaged if it is missing.
 */
extern Oid	outbox_relation_oid(const char *name);

/*
 * The database the queue was created in (kairoi.origin), InvalidOid if
 * unknown: another one than the current database's means a copy.
 */
extern Oid	outbox_origin_database(void);

/* True if the extension's objects exist in the current database */
extern bool outbox_extension_exists(void);

/*
 * False if kairoi.failed certainly holds no entry: it has no block (vacuum
 * truncates it once its entries are retried or purged, and a committed row
 * lives in a block).  Nearly always the case: what would delete failed
 * entries is then not run at all.
 */
extern bool outbox_failed_may_have_entries(void);

/* Worker: does the queue hold any entry at all (due or not)? */
extern bool outbox_has_entries(void);

/*
 * Entries of the queue, and of kairoi.failed: exact up to
 * OUTBOX_EXACT_COUNT, and above the planner's estimate (*estimated is set),
 * so that counting costs the same however long the queue is.
 */
#define OUTBOX_EXACT_COUNT 10000
extern int64 outbox_count_pending(bool *estimated);
extern int64 outbox_count_failed(bool *estimated);

/*
 * Run by callers of the SPI helpers below: prepare a statement once per
 * backend and keep it (the plan cache re-plans it after DDL), and execute
 * it, failing unless SPI answers expected.
 */
extern SPIPlanPtr outbox_prepare_once(SPIPlanPtr *plan, const char *sql,
									  int nargs, Oid *argtypes);
extern void outbox_execute(SPIPlanPtr plan, Datum *values, const char *nulls,
						   bool read_only, int expected);

#endif							/* KAIROI_OUTBOX_H */
