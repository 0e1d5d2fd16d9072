/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Access to the transactional outbox (kairoi.outbox) and the failed
 *	  entries (kairoi.failed): enqueueing from user backends, and fetching,
 *	  acknowledging and rejecting entries from the delivery worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_OUTBOX_H
#define KAIROI_OUTBOX_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"

/* Kinds of entries, as stored in kairoi.outbox.kind */
#define OUTBOX_KIND_RULE 'r'
#define OUTBOX_KIND_JOB 'j'

/*
 * One pending entry as the worker sees it.  Strings are UTF-8, ready for
 * the wire.  For a job, arguments = {execution}; for a rule, arguments =
 * {pattern, runner, runner arguments...}.
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
 * User backends: insert or replace the pending entry for (kind,
 * identifier), superseding its failed entries.  Returns the entry's seq.
 */
extern int64 outbox_enqueue(char kind, text *identifier, Datum arguments);

/*
 * User backends: insert or replace n jobs (text identifiers, executions as
 * formatted text) through one writer.  Duplicate identifiers count once, at
 * the place of the first and with the execution of the last; the arrays
 * are rewritten to that effect.  Returns the lowest seq written.
 */
extern int64 outbox_enqueue_jobs(Datum *identifiers, Datum *executions,
								 int n);

/*
 * Worker, inside a transaction: up to limit due entries with seq > after,
 * in queue order, skipping those in exclude_seqs (in flight).  Entries are
 * allocated in the caller's memory context.
 */
extern int	outbox_fetch(int64 after, const int64 *exclude_seqs, int nexclude,
						 int limit, OutboxEntry *entries);

/* Worker: earliest retry time of a rejected entry, or 0 if none */
extern TimestampTz outbox_next_retry_at(void);

/*
 * Worker: remove acknowledged entries whose version is still the one sent,
 * found by where they were read (OutboxEntry.tid).  Returns the number of
 * rows removed.
 */
extern uint64 outbox_delete_acknowledged(const ItemPointerData *tids,
										 const int64 *versions, int n);

/*
 * Worker: the server answered ERROR for this entry.  Counts the attempt and
 * schedules a retry with backoff, or moves the entry to kairoi.failed once
 * max_attempts is reached.  Returns true if the entry was moved.
 */
extern bool outbox_record_rejection(int64 seq, int64 version,
									const char *reason);

/*
 * The OID of kairoi.<name>, a table or sequence of the extension; an error
 * saying the extension is damaged if it is missing.
 */
extern Oid	outbox_relation_oid(const char *name);

/* True if the extension's objects exist in the current database */
extern bool outbox_extension_exists(void);

/* Worker: does the outbox hold any row at all (due or not)? */
extern bool outbox_has_entries(void);

/* Worker: number of rows in the outbox (due or not) */
extern int64 outbox_count_entries(void);

#endif							/* KAIROI_OUTBOX_H */
