/*-------------------------------------------------------------------------
 *
 * outbox_direct.c
 *	  The delivery worker's hot paths on the queue (kairoi.pending_jobs and
 *	  kairoi.pending_rules), without SQL: the fetch of due entries in queue
 *	  order, and the delete of acknowledged or failed ones.  Enqueueing is
 *	  not here: it goes through the executor (outbox.c).
 *
 *	  These run for every entry delivered, so they skip the planner and
 *	  the executor, and take over what a SELECT and a DELETE would do.
 *	  What they take over, and how each duty is kept:
 *
 *	  - Visibility: the fetch is an ordered scan of each table's primary
 *	    key on seq with the active MVCC snapshot (index_getnext_slot
 *	    checks each heap tuple against it), the two merged by seq; it takes
 *	    no row lock, as the SELECT it replaces took none.  A delete fetches
 *	    the row at the ctid it was read at, checks that it still holds the
 *	    version sent, and deletes it there without waiting
 *	    (table_tuple_delete with wait = false): a row another transaction
 *	    is modifying or has modified is skipped, as FOR UPDATE SKIP LOCKED
 *	    skipped it.  A version is never given twice (outbox.c), so a ctid
 *	    reused by another row after VACUUM never holds the version sent.
 *	  - Indexes: a delete leaves index entries to VACUUM, as the executor's
 *	    does; nothing is inserted into any index here.
 *	  - Columns: they are found by name at every call, dropped ones
 *	    skipped, so a table changed by DDL is read correctly (columns this
 *	    file does not use are ignored) or refused if one it needs is gone.
 *	    The primary key is checked to be on seq alone.
 *	  - Triggers, rules, row-level security and foreign keys: the queue's
 *	    tables have none but their ENABLE REPLICA trigger, which fires
 *	    only in logical replication workers (logical_replication.c; the
 *	    worker pins session_replication_role = origin), and ordinary roles
 *	    cannot add any; they are skipped deliberately.  Permissions: the
 *	    worker runs as a superuser.
 *	  - Statistics and WAL: heap_delete and the index scan count and log
 *	    themselves, as under the executor.
 *	  - Subtransactions and DDL: each call opens the tables afresh under
 *	    their lock in the worker's own transaction and keeps nothing after.
 *
 *	  Checked against ExecDeleteAct and ExecIndexScan of PostgreSQL 15 and
 *	  18 (17's headers declare the same calls); what differs in spelling
 *	  between versions is in compat.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "outbox.h"
#include "rejections.h"

/* The columns of a queue table that the worker reads */
typedef enum QueueColumn
{
	COL_SEQ,
	COL_VERSION,
	COL_IDENTIFIER,
	COL_VALUE,					/* a job's execution, a rule's arguments */
	COL_ENQUEUED_AT,
	QUEUE_NCOLUMNS
} QueueColumn;

/* One table of the queue: its name and that of its value column */
typedef struct QueueTable
{
	char		kind;
	const char *name;
	const char *value_column;
} QueueTable;

static const QueueTable queue_tables[] = {
	{OUTBOX_KIND_JOB, "pending_jobs", "execution"},
	{OUTBOX_KIND_RULE, "pending_rules", "arguments"},
};

#define NQUEUE_TABLES lengthof(queue_tables)

static const QueueTable *
queue_table_of(char kind)
{
	return &queue_tables[kind == OUTBOX_KIND_JOB ? 0 : 1];
}

/* A queue table, open, with the positions of its columns */
typedef struct OpenQueue
{
	const QueueTable *table;
	Relation	rel;
	int			attnum[QUEUE_NCOLUMNS];	/* 0-based */
} OpenQueue;

/*
 * Open a queue table and map the columns this file reads to their
 * positions; refuse the table if one of them is missing.
 */
static void
open_queue(OpenQueue *queue, const QueueTable *table, LOCKMODE lockmode)
{
	const char *names[QUEUE_NCOLUMNS] = {
		"seq", "version", "identifier", table->value_column, "enqueued_at"
	};
	TupleDesc	desc;

	queue->table = table;
	queue->rel = table_open(outbox_relation_oid(table->name), lockmode);
	desc = RelationGetDescr(queue->rel);
	for (int c = 0; c < QUEUE_NCOLUMNS; c++)
	{
		queue->attnum[c] = -1;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute attr = TupleDescAttr(desc, i);

			if (!attr->attisdropped &&
				strcmp(NameStr(attr->attname), names[c]) == 0)
				queue->attnum[c] = i;
		}
		if (queue->attnum[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"kairoi.%s\" does not exist",
							names[c], table->name),
					 errhint("The kairoi extension is damaged: reinstall it.")));
	}
}

static Datum
column_value(TupleTableSlot *slot, const OpenQueue *queue, QueueColumn c)
{
	return slot->tts_values[queue->attnum[c]];
}

static int64
column_int8(TupleTableSlot *slot, const OpenQueue *queue, QueueColumn c)
{
	return DatumGetInt64(column_value(slot, queue, c));
}

/* Text in the database encoding to a NUL-terminated UTF-8 string */
static char *
text_datum_to_utf8(Datum value)
{
	text	   *t = DatumGetTextPP(value);
	const char *data = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	char	   *utf8 = pg_server_to_any(data, len, PG_UTF8);

	return (utf8 == data) ? pnstrdup(data, len) : utf8;
}

/* The entry in a slot holding all its columns */
static void
read_entry(TupleTableSlot *slot, const OpenQueue *queue, OutboxEntry *entry)
{
	Datum		value = column_value(slot, queue, COL_VALUE);

	entry->kind = queue->table->kind;
	entry->seq = column_int8(slot, queue, COL_SEQ);
	entry->version = column_int8(slot, queue, COL_VERSION);
	entry->tid = slot->tts_tid;
	entry->identifier = text_datum_to_utf8(column_value(slot, queue,
														COL_IDENTIFIER));
	if (entry->kind == OUTBOX_KIND_JOB)
	{
		entry->nargs = 1;
		entry->args = palloc(sizeof(char *));
		entry->args[0] = palloc(KAIROI_EXECUTION_LEN + 1);
		kairoi_format_execution(DatumGetTimestampTz(value), entry->args[0]);
	}
	else
	{
		Datum	   *elements;

		deconstruct_array(DatumGetArrayTypeP(value), TEXTOID, -1, false,
						  TYPALIGN_INT, &elements, NULL, &entry->nargs);
		entry->args = palloc(Max(entry->nargs, 1) * sizeof(char *));
		for (int i = 0; i < entry->nargs; i++)
			entry->args[i] = text_datum_to_utf8(elements[i]);
	}
}

/* ---------------------------------------------------------------------
 * The fetch
 * ---------------------------------------------------------------------
 */

/* An ordered scan of one queue table from the cursor */
typedef struct QueueScan
{
	OpenQueue	queue;
	Relation	seq_index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		has_row;		/* slot holds the next row, all columns */
} QueueScan;

/* The primary key's index, which must be on seq alone */
static Relation
open_seq_index(const OpenQueue *queue)
{
	Oid			index_oid = kairoi_primary_key_index(queue->rel);
	Relation	index;

	if (!OidIsValid(index_oid))
		elog(ERROR, "kairoi: kairoi.%s has no primary key", queue->table->name);
	index = index_open(index_oid, AccessShareLock);
	if (index->rd_index->indnkeyatts != 1 ||
		index->rd_index->indkey.values[0] != queue->attnum[COL_SEQ] + 1)
		elog(ERROR, "kairoi: the primary key of kairoi.%s is not (seq)",
			 queue->table->name);
	return index;
}

static void
advance(QueueScan *qs)
{
	qs->has_row = index_getnext_slot(qs->scan, ForwardScanDirection, qs->slot);
	if (qs->has_row)
		slot_getallattrs(qs->slot);
}

/*
 * With the active (MVCC) snapshot: no row lock, and a row being replaced
 * is read in its committed version, which is harmless (the replacement
 * gets a new version and is sent once committed).
 */
static void
begin_queue_scan(QueueScan *qs, const QueueTable *table, int64 after)
{
	ScanKeyData key;

	open_queue(&qs->queue, table, AccessShareLock);
	qs->seq_index = open_seq_index(&qs->queue);
	qs->slot = table_slot_create(qs->queue.rel, NULL);
	ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(after));
	qs->scan = kairoi_index_beginscan(qs->queue.rel, qs->seq_index,
									  GetActiveSnapshot(), 1, 0);
	index_rescan(qs->scan, &key, 1, NULL, 0);
	advance(qs);
}

static void
end_queue_scan(QueueScan *qs)
{
	index_endscan(qs->scan);
	ExecDropSingleTupleTableSlot(qs->slot);
	index_close(qs->seq_index, NoLock);
	table_close(qs->queue.rel, NoLock);
}

/* The scan whose next row comes first in the queue, or NULL if none */
static QueueScan *
next_in_queue(QueueScan *scans)
{
	QueueScan  *first = NULL;

	for (int t = 0; t < (int) NQUEUE_TABLES; t++)
	{
		QueueScan  *qs = &scans[t];

		if (qs->has_row &&
			(first == NULL ||
			 column_int8(qs->slot, &qs->queue, COL_SEQ) <
			 column_int8(first->slot, &first->queue, COL_SEQ)))
			first = qs;
	}
	return first;
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

int
outbox_fetch(int64 after, const int64 *exclude_seqs, int nexclude, int limit,
			 OutboxEntry *entries)
{
	QueueScan	scans[NQUEUE_TABLES];
	int64	   *excluded = palloc(Max(nexclude, 1) * sizeof(int64));
	TimestampTz fetch_time = GetCurrentTransactionStartTimestamp();
	QueueScan  *qs;
	int			nfetched = 0;

	memcpy(excluded, exclude_seqs, nexclude * sizeof(int64));
	qsort(excluded, nexclude, sizeof(int64), compare_int64);

	for (int t = 0; t < (int) NQUEUE_TABLES; t++)
		begin_queue_scan(&scans[t], &queue_tables[t], after);
	while (nfetched < limit && (qs = next_in_queue(scans)) != NULL)
	{
		int64		seq = column_int8(qs->slot, &qs->queue, COL_SEQ);
		int64		version = column_int8(qs->slot, &qs->queue, COL_VERSION);

		if (rejections_is_due(seq, version, fetch_time) &&
			!bsearch(&seq, excluded, nexclude, sizeof(int64), compare_int64))
			read_entry(qs->slot, &qs->queue, &entries[nfetched++]);
		advance(qs);
	}
	for (int t = 0; t < (int) NQUEUE_TABLES; t++)
		end_queue_scan(&scans[t]);
	pfree(excluded);
	return nfetched;
}

/* ---------------------------------------------------------------------
 * Deletes
 * ---------------------------------------------------------------------
 */

/*
 * Delete the row read at sent->tid if it still holds the version sent,
 * without waiting for a lock.  On success slot holds the row deleted.
 * The caller opened the queue under RowExclusiveLock (so VACUUM cannot
 * truncate it meanwhile), and made a command id for the deletes.
 */
static bool
delete_sent(const OpenQueue *queue, const OutboxSent *sent,
			BlockNumber nblocks, CommandId cid, TupleTableSlot *slot)
{
	ItemPointerData tid = sent->tid;
	TM_FailureData tmfd;

	if (ItemPointerGetBlockNumber(&tid) >= nblocks ||
		!table_tuple_fetch_row_version(queue->rel, &tid, SnapshotAny, slot))
		return false;
	slot_getallattrs(slot);
	if (column_int8(slot, queue, COL_VERSION) != sent->version)
		return false;
	return table_tuple_delete(queue->rel, &tid, cid, InvalidSnapshot,
							  InvalidSnapshot, false, &tmfd, false) == TM_Ok;
}

/*
 * A new value acknowledged supersedes the failed entries of its
 * identifier: retrying one of them later would overwrite it on the server.
 * identifiers is a text[].  Nothing to do while kairoi.failed has no block.
 */
static void
supersede_failed(char kind, Datum identifiers)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {CHAROID, TEXTARRAYOID};
	Datum		values[2] = {CharGetDatum(kind), identifiers};

	SPI_connect();
	outbox_prepare_once(&plan,
						"DELETE FROM kairoi.failed "
						"WHERE kind OPERATOR(pg_catalog.=) $1 "
						"  AND identifier OPERATOR(pg_catalog.=) ANY ($2)",
						2, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_DELETE);
	SPI_finish();
}

/* The acknowledged entries of one table; returns the rows deleted */
static uint64
delete_acknowledged_of(const QueueTable *table, const OutboxSent *sent, int n,
					   bool supersede)
{
	OpenQueue	queue;
	TupleTableSlot *slot;
	BlockNumber nblocks;
	CommandId	cid;
	Datum	   *identifiers = palloc(Max(n, 1) * sizeof(Datum));
	uint64		deleted = 0;

	open_queue(&queue, table, RowExclusiveLock);
	slot = table_slot_create(queue.rel, NULL);
	nblocks = RelationGetNumberOfBlocks(queue.rel);
	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	for (int i = 0; i < n; i++)
	{
		if (sent[i].kind != table->kind ||
			!delete_sent(&queue, &sent[i], nblocks, cid, slot))
			continue;
		identifiers[deleted++] = datumCopy(column_value(slot, &queue,
														COL_IDENTIFIER),
										   false, -1);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(queue.rel, NoLock);
	if (supersede && deleted > 0)
		supersede_failed(table->kind,
						 PointerGetDatum(construct_array(identifiers, deleted,
														 TEXTOID, -1, false,
														 TYPALIGN_INT)));
	return deleted;
}

uint64
outbox_delete_acknowledged(const OutboxSent *sent, int n)
{
	bool		supersede = outbox_failed_may_have_entries();
	uint64		deleted = 0;

	for (int t = 0; t < (int) NQUEUE_TABLES; t++)
		deleted += delete_acknowledged_of(&queue_tables[t], sent, n, supersede);
	return deleted;
}

/* The row in slot as kairoi.failed keeps it, with why it failed */
static void
insert_failed(TupleTableSlot *slot, const OpenQueue *queue, int attempts,
			  const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[7] = {CHAROID, TEXTOID, TEXTARRAYOID, INT8OID,
	TIMESTAMPTZOID, INT4OID, TEXTOID};
	Datum		values[7];
	Datum		arguments = column_value(slot, queue, COL_VALUE);

	if (queue->table->kind == OUTBOX_KIND_JOB)
	{
		char		buf[KAIROI_EXECUTION_LEN + 1];
		Datum		formatted;

		kairoi_format_execution(DatumGetTimestampTz(arguments), buf);
		formatted = CStringGetTextDatum(buf);
		arguments = PointerGetDatum(construct_array(&formatted, 1, TEXTOID,
													-1, false, TYPALIGN_INT));
	}
	values[0] = CharGetDatum(queue->table->kind);
	values[1] = column_value(slot, queue, COL_IDENTIFIER);
	values[2] = arguments;
	values[3] = column_value(slot, queue, COL_VERSION);
	values[4] = column_value(slot, queue, COL_ENQUEUED_AT);
	values[5] = Int32GetDatum(attempts);
	values[6] = CStringGetTextDatum(reason);
	SPI_connect();
	outbox_prepare_once(&plan,
						"INSERT INTO kairoi.failed (kind, identifier, arguments, "
						"  version, enqueued_at, attempts, reason) "
						"VALUES ($1, $2, $3, $4, $5, $6, $7)",
						7, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_INSERT);
	SPI_finish();
}

bool
outbox_move_to_failed(const OutboxSent *sent, int attempts,
					  const char *reason)
{
	OpenQueue	queue;
	TupleTableSlot *slot;
	bool		taken;

	open_queue(&queue, queue_table_of(sent->kind), RowExclusiveLock);
	slot = table_slot_create(queue.rel, NULL);
	CommandCounterIncrement();
	taken = delete_sent(&queue, sent, RelationGetNumberOfBlocks(queue.rel),
						GetCurrentCommandId(true), slot);
	if (taken)
		insert_failed(slot, &queue, attempts, reason);
	ExecDropSingleTupleTableSlot(slot);
	table_close(queue.rel, NoLock);
	return taken;
}
