/*-------------------------------------------------------------------------
 *
 * outbox_direct.c
 *	  The delivery worker's hot paths on kairoi.outbox, without SQL: the
 *	  fetch of due entries and the delete of acknowledged ones.  Enqueueing
 *	  is not here: it goes through the executor (outbox.c).
 *
 *	  These two run for every entry delivered, so they skip the planner
 *	  and the executor, and take over what a SELECT and a DELETE would do.
 *	  What they take over, and how each duty is kept:
 *
 *	  - Visibility: the fetch is an ordered scan of the primary key on seq
 *	    with the active MVCC snapshot (index_getnext_slot checks each heap
 *	    tuple against it); it takes no row lock, as the SELECT it replaces
 *	    took none.  The delete fetches each row at the ctid it was read at,
 *	    checks that it still holds the version sent, and deletes it there
 *	    without waiting (table_tuple_delete with wait = false): a row
 *	    another transaction is modifying or has modified is skipped, as
 *	    FOR UPDATE SKIP LOCKED skipped it.
 *	  - Indexes: a delete leaves index entries to VACUUM, as the executor's
 *	    does; nothing is inserted into any index here.
 *	  - Columns: they are found by name at every call, dropped ones
 *	    skipped, so a table changed by DDL is read correctly (columns this
 *	    file does not use are ignored) or refused if one it needs is gone.
 *	    The primary key is checked to be on seq alone.
 *	  - Triggers, rules, row-level security and foreign keys: kairoi.outbox
 *	    has none but its ENABLE REPLICA trigger, which fires only in
 *	    logical replication workers (logical_replication.c; the worker
 *	    pins session_replication_role = origin), and ordinary roles cannot
 *	    add any; they are skipped deliberately.  Permissions: the worker
 *	    runs as a superuser.
 *	  - Statistics and WAL: heap_delete and the index scan count and log
 *	    themselves, as under the executor.
 *	  - Subtransactions and DDL: each call opens the table afresh under its
 *	    lock in the worker's own transaction and keeps nothing after it.
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
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "outbox.h"

/* The columns of kairoi.outbox that the worker reads */
typedef enum OutboxColumn
{
	COL_SEQ,
	COL_KIND,
	COL_IDENTIFIER,
	COL_ARGUMENTS,
	COL_VERSION,
	COL_NEXT_ATTEMPT_AT,
	OUTBOX_NCOLUMNS
} OutboxColumn;

static const char *const column_names[OUTBOX_NCOLUMNS] = {
	"seq", "kind", "identifier", "arguments", "version", "next_attempt_at"
};

Oid
outbox_relation_oid(const char *name)
{
	Oid			relid = get_relname_relid(name,
										  get_namespace_oid("kairoi", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"kairoi.%s\" does not exist", name),
				 errhint("The kairoi extension is damaged: reinstall it.")));
	return relid;
}

/*
 * Map the columns of kairoi.outbox this file reads to their 0-based
 * positions in attnum[]; refuse the table if one of them is missing.
 */
static void
find_columns(Relation outbox, int *attnum)
{
	TupleDesc	desc = RelationGetDescr(outbox);

	for (int c = 0; c < OUTBOX_NCOLUMNS; c++)
		attnum[c] = -1;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);
		int			c;

		if (attr->attisdropped)
			continue;
		for (c = 0; c < OUTBOX_NCOLUMNS; c++)
			if (strcmp(NameStr(attr->attname), column_names[c]) == 0)
				break;
		if (c < OUTBOX_NCOLUMNS)
			attnum[c] = i;
	}
	for (int c = 0; c < OUTBOX_NCOLUMNS; c++)
		if (attnum[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"kairoi.outbox\" does not exist",
							column_names[c]),
					 errhint("The kairoi extension is damaged: reinstall it.")));
}

static Relation
open_outbox(LOCKMODE lockmode, int *attnum)
{
	Relation	outbox = table_open(outbox_relation_oid("outbox"), lockmode);

	find_columns(outbox, attnum);
	return outbox;
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
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

static void
read_entry(TupleTableSlot *slot, const int *attnum, OutboxEntry *entry)
{
	Datum	   *elements;
	int			nelements;

	entry->seq = DatumGetInt64(slot->tts_values[attnum[COL_SEQ]]);
	entry->version = DatumGetInt64(slot->tts_values[attnum[COL_VERSION]]);
	entry->kind = DatumGetChar(slot->tts_values[attnum[COL_KIND]]);
	entry->tid = slot->tts_tid;
	entry->identifier = text_datum_to_utf8(slot->tts_values[attnum[COL_IDENTIFIER]]);
	deconstruct_array(DatumGetArrayTypeP(slot->tts_values[attnum[COL_ARGUMENTS]]),
					  TEXTOID, -1, false, TYPALIGN_INT,
					  &elements, NULL, &nelements);
	entry->nargs = nelements;
	entry->args = palloc(Max(nelements, 1) * sizeof(char *));
	for (int i = 0; i < nelements; i++)
		entry->args[i] = text_datum_to_utf8(elements[i]);
}

/* Due: never rejected, or its retry time has come */
static bool
entry_is_due(TupleTableSlot *slot, const int *attnum, TimestampTz now)
{
	int			i = attnum[COL_NEXT_ATTEMPT_AT];

	return slot->tts_isnull[i] || DatumGetTimestampTz(slot->tts_values[i]) <= now;
}

/* The primary key's index, which must be on seq alone */
static Relation
open_seq_index(Relation outbox, const int *attnum)
{
	Oid			index_oid = kairoi_primary_key_index(outbox);
	Relation	index;

	if (!OidIsValid(index_oid))
		elog(ERROR, "kairoi: kairoi.outbox has no primary key");
	index = index_open(index_oid, AccessShareLock);
	if (index->rd_index->indnkeyatts != 1 ||
		index->rd_index->indkey.values[0] != attnum[COL_SEQ] + 1)
		elog(ERROR, "kairoi: the primary key of kairoi.outbox is not (seq)");
	return index;
}

/*
 * An ordered scan of the primary key from the cursor, with the active
 * (MVCC) snapshot: no row lock, and a row being replaced is read in its
 * committed version, which is harmless (the replacement gets a new version
 * and is sent once committed).
 */
int
outbox_fetch(int64 after, const int64 *exclude_seqs, int nexclude, int limit,
			 OutboxEntry *entries)
{
	int			attnum[OUTBOX_NCOLUMNS];
	Relation	outbox = open_outbox(AccessShareLock, attnum);
	Relation	seq_index = open_seq_index(outbox, attnum);
	TupleTableSlot *slot = table_slot_create(outbox, NULL);
	int64	   *excluded = palloc(Max(nexclude, 1) * sizeof(int64));
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	IndexScanDesc scan;
	ScanKeyData key;
	int			nfetched = 0;

	memcpy(excluded, exclude_seqs, nexclude * sizeof(int64));
	qsort(excluded, nexclude, sizeof(int64), compare_int64);

	ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(after));
	scan = kairoi_index_beginscan(outbox, seq_index, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	while (nfetched < limit &&
		   index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		int64		seq;

		slot_getallattrs(slot);
		seq = DatumGetInt64(slot->tts_values[attnum[COL_SEQ]]);
		if (!entry_is_due(slot, attnum, now) ||
			bsearch(&seq, excluded, nexclude, sizeof(int64), compare_int64))
			continue;
		read_entry(slot, attnum, &entries[nfetched++]);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(seq_index, NoLock);
	table_close(outbox, NoLock);
	pfree(excluded);
	return nfetched;
}

/*
 * Each acknowledged row is looked up at the ctid it was read at and
 * deleted only if it still holds the version sent: a row replaced
 * meanwhile has a new version (and a new ctid), and a ctid reused by
 * another row, after VACUUM, holds another version.  A row another
 * transaction is modifying or has modified is skipped, never waited for
 * (it is sent again later, or its replacement is).
 */
uint64
outbox_delete_acknowledged(const ItemPointerData *tids, const int64 *versions,
						   int n)
{
	int			attnum[OUTBOX_NCOLUMNS];
	Relation	outbox = open_outbox(RowExclusiveLock, attnum);
	TupleTableSlot *slot = table_slot_create(outbox, NULL);

	/* VACUUM cannot truncate the table while we hold our lock */
	BlockNumber nblocks = RelationGetNumberOfBlocks(outbox);
	CommandId	cid;
	uint64		deleted = 0;

	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	for (int i = 0; i < n; i++)
	{
		ItemPointerData tid = tids[i];
		TM_FailureData tmfd;
		bool		isnull;

		if (ItemPointerGetBlockNumber(&tid) >= nblocks ||
			!table_tuple_fetch_row_version(outbox, &tid, SnapshotAny, slot))
			continue;
		if (DatumGetInt64(slot_getattr(slot, attnum[COL_VERSION] + 1,
									   &isnull)) != versions[i])
			continue;
		if (table_tuple_delete(outbox, &tid, cid, InvalidSnapshot,
							   InvalidSnapshot, false, &tmfd,
							   false) == TM_Ok)
			deleted++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(outbox, NoLock);
	return deleted;
}
