/*-------------------------------------------------------------------------
 *
 * outbox_direct.c
 *	  The hot paths of kairoi.outbox, without SQL: the user backends'
 *	  upsert of a pending entry, and the delivery worker's fetch of due
 *	  entries and delete of acknowledged ones.
 *
 *	  The upsert is the cost every scheduling transaction pays, so it skips the
 *	  parser, planner and executor tree that an INSERT ... ON CONFLICT DO
 *	  UPDATE would go through per call, and does what that statement does
 *	  with the same primitives: a speculative insertion checked against the
 *	  unique index on (kind, identifier), and on conflict a lock of the
 *	  existing row and its update.  Concurrency therefore behaves exactly as
 *	  the statement does: a second writer of the same identifier waits for
 *	  the first to commit or abort and then replaces its row, so the last
 *	  committer wins; a REPEATABLE READ or SERIALIZABLE transaction that
 *	  meets a row it cannot see gets a serialization failure.
 *
 *	  The columns are found by name, and the unique index by its columns,
 *	  so that a later version of the table is written correctly or refused
 *	  with an error, never written wrong.  No name is resolved through the
 *	  caller's search_path.
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
#include "commands/sequence.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

#include "outbox.h"

/* The columns of kairoi.outbox */
typedef enum OutboxColumn
{
	COL_SEQ,
	COL_KIND,
	COL_IDENTIFIER,
	COL_ARGUMENTS,
	COL_VERSION,
	COL_ENQUEUED_AT,
	COL_UPDATED_AT,
	COL_ATTEMPTS,
	COL_NEXT_ATTEMPT_AT,
	COL_LAST_ERROR,
	OUTBOX_NCOLUMNS
} OutboxColumn;

static const char *const column_names[OUTBOX_NCOLUMNS] = {
	"seq", "kind", "identifier", "arguments", "version", "enqueued_at",
	"updated_at", "attempts", "next_attempt_at", "last_error"
};

/* What enqueueing keeps open: the table, its indexes, two slots */
struct OutboxWriter
{
	Relation	outbox;
	EState	   *estate;
	ResultRelInfo *result_rel;
	List	   *arbiter;		/* the unique index on (kind, identifier) */
	int			attnum[OUTBOX_NCOLUMNS];	/* 0-based positions, -1 unknown */
	Oid			seq_sequence;
	Oid			version_sequence;
	Relation	failed;			/* kairoi.failed, only to see if it is empty */
	TupleTableSlot *proposed;	/* the row we would insert */
	TupleTableSlot *replacement;	/* the new version of a conflicting row */
};

static Oid
kairoi_relation_oid(Oid namespace, const char *name)
{
	Oid			relid = get_relname_relid(name, namespace);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("relation \"kairoi.%s\" does not exist", name),
				 errhint("The kairoi extension is damaged: reinstall it.")));
	return relid;
}

/*
 * Map every column of kairoi.outbox to its 0-based position in attnum[];
 * refuse a column this file does not know.
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
		if (c == OUTBOX_NCOLUMNS)
			elog(ERROR, "kairoi: unexpected column \"%s\" in kairoi.outbox",
				 NameStr(attr->attname));
		attnum[c] = i;
	}
	for (int c = 0; c < OUTBOX_NCOLUMNS; c++)
		if (attnum[c] < 0)
			elog(ERROR, "kairoi: column \"%s\" of kairoi.outbox is missing",
				 column_names[c]);
}

static Relation
open_outbox(Oid namespace, LOCKMODE lockmode, int *attnum)
{
	Relation	outbox = table_open(kairoi_relation_oid(namespace, "outbox"),
									lockmode);

	find_columns(outbox, attnum);
	return outbox;
}

/* The unique index whose key is exactly (kind, identifier) */
static Oid
find_arbiter_index(OutboxWriter *w)
{
	ResultRelInfo *rri = w->result_rel;

	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		Form_pg_index index = rri->ri_IndexRelationDescs[i]->rd_index;

		if (index->indisunique && index->indnkeyatts == 2 &&
			index->indkey.values[0] == w->attnum[COL_KIND] + 1 &&
			index->indkey.values[1] == w->attnum[COL_IDENTIFIER] + 1)
			return index->indexrelid;
	}
	elog(ERROR, "kairoi: kairoi.outbox has no unique index on (kind, identifier)");
	return InvalidOid;			/* keep compiler quiet */
}

/*
 * The writer of the current transaction, opened by its first enqueue and
 * kept until it ends, so that a transaction scheduling many rows (a row
 * trigger, SELECT kairoi_job_set(...) FROM ...) opens the outbox and its
 * indexes once.  Its relations and their locks belong to the top-level
 * transaction, so that a rolled-back savepoint leaves it usable (keeping a
 * RowExclusiveLock until the end is harmless), and its memory to
 * TopTransactionContext.  It holds no buffer pin between calls.  It is
 * closed at commit or prepare, forgotten at abort (the resource owner
 * closes what it held), and closed before any utility statement of this
 * session, which might alter or drop the outbox and would refuse to while
 * it is open.
 */
static OutboxWriter *transaction_writer = NULL;

static OutboxWriter *
open_writer(void)
{
	ResourceOwner caller_owner = CurrentResourceOwner;
	MemoryContext caller_context = MemoryContextSwitchTo(TopTransactionContext);
	OutboxWriter *w = palloc0(sizeof(OutboxWriter));
	Oid			namespace = get_namespace_oid("kairoi", false);

	CurrentResourceOwner = TopTransactionResourceOwner;
	w->outbox = open_outbox(namespace, RowExclusiveLock, w->attnum);
	w->failed = table_open(kairoi_relation_oid(namespace, "failed"),
						   AccessShareLock);
	w->seq_sequence = kairoi_relation_oid(namespace, "outbox_seq");
	w->version_sequence = kairoi_relation_oid(namespace, "outbox_version");

	w->estate = CreateExecutorState();
	w->result_rel = makeNode(ResultRelInfo);
	InitResultRelInfo(w->result_rel, w->outbox, 0, NULL, 0);
	ExecOpenIndices(w->result_rel, true);
	w->arbiter = list_make1_oid(find_arbiter_index(w));

	w->proposed = table_slot_create(w->outbox, NULL);
	w->replacement = table_slot_create(w->outbox, NULL);
	CurrentResourceOwner = caller_owner;
	MemoryContextSwitchTo(caller_context);
	return w;
}

OutboxWriter *
outbox_writer_begin(void)
{
	/* What the INSERT this replaces would have refused */
	PreventCommandIfReadOnly("INSERT");

	if (transaction_writer == NULL)
		transaction_writer = open_writer();

	/*
	 * A new command, as a statement would start: this call sees (and can
	 * lock) the rows earlier calls wrote, even in the same statement.
	 */
	CommandCounterIncrement();
	transaction_writer->estate->es_output_cid = GetCurrentCommandId(true);
	transaction_writer->estate->es_snapshot = GetActiveSnapshot();
	return transaction_writer;
}

void
outbox_writer_release(void)
{
	OutboxWriter *w = transaction_writer;
	ResourceOwner caller_owner = CurrentResourceOwner;

	if (w == NULL)
		return;
	transaction_writer = NULL;
	CurrentResourceOwner = TopTransactionResourceOwner;
	ExecDropSingleTupleTableSlot(w->proposed);
	ExecDropSingleTupleTableSlot(w->replacement);
	ExecCloseIndices(w->result_rel);
	FreeExecutorState(w->estate);
	table_close(w->failed, NoLock);
	table_close(w->outbox, NoLock);
	CurrentResourceOwner = caller_owner;
	pfree(w);
}

void
outbox_writer_forget(void)
{
	transaction_writer = NULL;
}

bool
outbox_writer_failed_may_have_entries(OutboxWriter *w)
{
	/*
	 * kairoi.failed has no block when it certainly holds no entry our next
	 * statement could see (vacuum truncates it once its entries are retried
	 * or purged, and a committed row lives in a block): nearly always, and
	 * then the supersede DELETE is skipped.
	 */
	return RelationGetNumberOfBlocks(w->failed) > 0;
}

static void
set_column(TupleTableSlot *slot, OutboxWriter *w, OutboxColumn c,
		   Datum value, bool isnull)
{
	slot->tts_values[w->attnum[c]] = value;
	slot->tts_isnull[w->attnum[c]] = isnull;
}

/* The new value of an entry, as the unique check and an insert see it */
static void
store_proposed(OutboxWriter *w, char kind, text *identifier, Datum arguments)
{
	TupleTableSlot *slot = w->proposed;
	Datum		now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	ExecClearTuple(slot);
	set_column(slot, w, COL_SEQ, Int64GetDatum(0), false);
	set_column(slot, w, COL_KIND, CharGetDatum(kind), false);
	set_column(slot, w, COL_IDENTIFIER, PointerGetDatum(identifier), false);
	set_column(slot, w, COL_ARGUMENTS, arguments, false);
	set_column(slot, w, COL_VERSION, Int64GetDatum(0), false);
	set_column(slot, w, COL_ENQUEUED_AT, now, false);
	set_column(slot, w, COL_UPDATED_AT, now, false);
	set_column(slot, w, COL_ATTEMPTS, Int32GetDatum(0), false);
	set_column(slot, w, COL_NEXT_ATTEMPT_AT, (Datum) 0, true);
	set_column(slot, w, COL_LAST_ERROR, (Datum) 0, true);
	ExecStoreVirtualTuple(slot);
}

/*
 * Insert the proposed row, speculatively: false if a concurrent
 * transaction inserted the same (kind, identifier) meanwhile, in which case
 * nothing was inserted and the caller starts over.
 */
static bool
insert_speculatively(OutboxWriter *w, int64 *seq)
{
	TupleTableSlot *slot = w->proposed;
	TransactionId xid = GetCurrentTransactionId();
	uint32		token;
	bool		conflict = false;
	List	   *recheck;

	*seq = nextval_internal(w->seq_sequence, false);
	slot->tts_values[w->attnum[COL_SEQ]] = Int64GetDatum(*seq);
	slot->tts_values[w->attnum[COL_VERSION]] =
		Int64GetDatum(nextval_internal(w->version_sequence, false));

	token = SpeculativeInsertionLockAcquire(xid);
	table_tuple_insert_speculative(w->outbox, slot, w->estate->es_output_cid,
								   0, NULL, token);
	recheck = ExecInsertIndexTuples(w->result_rel, slot, w->estate, false,
									true, &conflict, w->arbiter);
	table_tuple_complete_speculative(w->outbox, slot, token, !conflict);
	SpeculativeInsertionLockRelease(xid);
	list_free(recheck);
	return !conflict;
}

/* As ExecCheckTupleVisible: what a transaction snapshot may not miss */
static void
check_visible_to_transaction(OutboxWriter *w, TupleTableSlot *existing)
{
	bool		isnull;
	TransactionId xmin;

	if (!IsolationUsesXactSnapshot() ||
		table_tuple_satisfies_snapshot(w->outbox, existing,
									   w->estate->es_snapshot))
		return;
	xmin = DatumGetTransactionId(slot_getsysattr(existing,
												 MinTransactionIdAttributeNumber,
												 &isnull));
	if (!TransactionIdIsCurrentTransactionId(xmin))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to concurrent update")));
}

/*
 * Lock the row at conflict and replace its value by the proposed one: it
 * keeps its seq and enqueued_at, gets a new version and forgets earlier
 * rejections.  False if the row was updated or deleted meanwhile (the
 * caller starts over).
 */
static bool
replace_existing(OutboxWriter *w, ItemPointer conflict, int64 *seq)
{
	/* Per call: it holds a buffer pin, which an error would release */
	TupleTableSlot *old = table_slot_create(w->outbox, NULL);
	TupleTableSlot *new = w->replacement;
	TM_FailureData tmfd;
	TM_Result	result;
	LockTupleMode lockmode;
	bool		update_indexes;
	int			natts = RelationGetDescr(w->outbox)->natts;

	result = table_tuple_lock(w->outbox, conflict, w->estate->es_snapshot, old,
							  w->estate->es_output_cid,
							  LockTupleNoKeyExclusive, LockWaitBlock, 0,
							  &tmfd);
	switch (result)
	{
		case TM_Ok:
			break;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update")));
			ExecDropSingleTupleTableSlot(old);
			return false;
		default:
			elog(ERROR, "kairoi: unexpected result %d locking an outbox row",
				 (int) result);
	}
	check_visible_to_transaction(w, old);

	slot_getallattrs(old);
	slot_getallattrs(w->proposed);
	ExecClearTuple(new);
	memcpy(new->tts_values, old->tts_values, natts * sizeof(Datum));
	memcpy(new->tts_isnull, old->tts_isnull, natts * sizeof(bool));
	for (int c = COL_ARGUMENTS; c < OUTBOX_NCOLUMNS; c++)
	{
		if (c == COL_ENQUEUED_AT)
			continue;
		set_column(new, w, c, w->proposed->tts_values[w->attnum[c]],
				   w->proposed->tts_isnull[w->attnum[c]]);
	}
	set_column(new, w, COL_VERSION,
			   Int64GetDatum(nextval_internal(w->version_sequence, false)),
			   false);
	ExecStoreVirtualTuple(new);

	result = table_tuple_update(w->outbox, &old->tts_tid, new,
								w->estate->es_output_cid,
								w->estate->es_snapshot, InvalidSnapshot, true,
								&tmfd, &lockmode, &update_indexes);
	if (result != TM_Ok)
		elog(ERROR, "kairoi: unexpected result %d updating a locked outbox row",
			 (int) result);
	if (update_indexes)
		list_free(ExecInsertIndexTuples(w->result_rel, new, w->estate, true,
										false, NULL, NIL));
	*seq = DatumGetInt64(old->tts_values[w->attnum[COL_SEQ]]);
	ExecDropSingleTupleTableSlot(old);
	return true;
}

int64
outbox_writer_upsert(OutboxWriter *w, char kind, text *identifier,
					 Datum arguments)
{
	int64		seq;

	store_proposed(w, kind, identifier, arguments);
	for (;;)
	{
		ItemPointerData conflict;

		ResetPerTupleExprContext(w->estate);
		if (ExecCheckIndexConstraints(w->result_rel, w->proposed, w->estate,
									  &conflict, w->arbiter))
		{
			if (insert_speculatively(w, &seq))
				return seq;
		}
		else if (replace_existing(w, &conflict, &seq))
			return seq;
		CHECK_FOR_INTERRUPTS();
	}
}

/* ---- The delivery worker ---- */

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
	Oid			index_oid = RelationGetPrimaryKeyIndex(outbox);
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
	Relation	outbox = open_outbox(get_namespace_oid("kairoi", false),
									 AccessShareLock, attnum);
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
	scan = index_beginscan(outbox, seq_index, GetActiveSnapshot(), 1, 0);
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
	Relation	outbox = open_outbox(get_namespace_oid("kairoi", false),
									 RowExclusiveLock, attnum);
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

/* ---- Closing the transaction's writer before utility statements ---- */

static ProcessUtility_hook_type prev_process_utility_hook = NULL;

static void
release_writer_before_utility(PlannedStmt *pstmt, const char *queryString,
							  bool readOnlyTree, ProcessUtilityContext context,
							  ParamListInfo params, QueryEnvironment *queryEnv,
							  DestReceiver *dest, QueryCompletion *qc)
{
	outbox_writer_release();
	if (prev_process_utility_hook)
		prev_process_utility_hook(pstmt, queryString, readOnlyTree, context,
								  params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
outbox_install_utility_hook(void)
{
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = release_writer_before_utility;
}
