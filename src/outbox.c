/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Enqueueing into the queue (kairoi.pending_jobs, kairoi.pending_rules)
 *	  through saved SPI plans, which version of the extension's tables this
 *	  database has, and counting the queue without reading it all.
 *
 *	  User backends only ever insert or replace their own pending rows,
 *	  with INSERT ... ON CONFLICT DO UPDATE.  The executor does the upsert:
 *	  the speculative insertion and its retry, the unique check, index
 *	  maintenance, dropped columns, subtransactions and DDL (the plan cache
 *	  re-plans after any change to the tables).  An earlier release did the
 *	  same with heap primitives and got each of these wrong at least once
 *	  (docs/design.md); the executor's path is the one that every supported
 *	  PostgreSQL version keeps correct.
 *
 *	  What a call costs is kept to the upsert itself: one value of the
 *	  sequence (taken here, used for seq and version), every column given
 *	  as a parameter, no other statement.  Failed entries of an identifier
 *	  scheduled again are superseded by the worker once the new value is
 *	  acknowledged (outbox_direct.c), not here.
 *
 *	  The delivery worker reads due rows and deletes acknowledged ones
 *	  through outbox_direct.c, and records rejections in rejections.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/datetime.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "outbox.h"
#include "outbox_1_1.h"

/*
 * Every name in these statements is schema-qualified, operators and
 * functions included, and ON CONFLICT infers its index from a plain
 * column: the scheduling functions are SECURITY DEFINER without a fixed
 * search_path (that would cost a GUC save and restore per call), and the
 * statements must mean the same under any search_path a caller sets.
 * Column defaults are none: every value is a parameter.
 *
 * A replacement keeps seq (the row's place in the queue) and enqueued_at,
 * and takes the new version: a new value, whose earlier rejections no
 * longer count (they were for another version).
 */
static const char *const enqueue_job_sql =
"INSERT INTO kairoi.pending_jobs AS q "
"  (seq, version, identifier, execution, enqueued_at) "
"VALUES ($1, $1, $2, $3, $4) "
"ON CONFLICT (identifier) DO UPDATE "
"SET version = excluded.version, execution = excluded.execution "
"RETURNING q.seq";

static const char *const enqueue_rule_sql =
"INSERT INTO kairoi.pending_rules AS q "
"  (seq, version, identifier, arguments, enqueued_at) "
"VALUES ($1, $1, $2, $3, $4) "
"ON CONFLICT (identifier) DO UPDATE "
"SET version = excluded.version, arguments = excluded.arguments "
"RETURNING q.seq";

/*
 * Many jobs, identifiers unique, in queue order: a value of the sequence
 * for each, in that order.  Returns the seq of each entry written.  The
 * arrays are unnested in the select list (one row at a time, in array
 * order, both arrays of the same length) rather than by ROWS FROM, which
 * would first copy both into tuplestores.
 */
static const char *const enqueue_jobs_sql =
"INSERT INTO kairoi.pending_jobs AS q "
"  (seq, version, identifier, execution, enqueued_at) "
"SELECT n.v, n.v, n.identifier, n.execution, $3 "
"FROM (SELECT pg_catalog.nextval('kairoi.outbox_seq'::pg_catalog.regclass) AS v, "
"             u.identifier, u.execution "
"      FROM (SELECT pg_catalog.unnest($1::pg_catalog.text[]) AS identifier, "
"                   pg_catalog.unnest($2::pg_catalog.timestamptz[]) AS execution) "
"           AS u) AS n "
"ON CONFLICT (identifier) DO UPDATE "
"SET version = excluded.version, execution = excluded.execution "
"RETURNING q.seq";

/*
 * What this backend knows of the extension's relations in this database,
 * found once and forgotten when any of them changes (ALTER EXTENSION
 * UPDATE, DROP EXTENSION): whether the queue is 1.2's, and the sequence
 * that numbers it.
 */
typedef struct OutboxCatalog
{
	bool		valid;
	bool		current;		/* kairoi.pending_jobs exists */
	Oid			queue_relid;	/* kairoi.pending_jobs, or 1.1's outbox */
	Oid			seq_relid;		/* kairoi.outbox_seq */
} OutboxCatalog;

static OutboxCatalog catalog;

static void
forget_catalog(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == catalog.queue_relid ||
		relid == catalog.seq_relid)
		catalog.valid = false;
}

static const OutboxCatalog *
get_catalog(void)
{
	static bool callback_registered = false;
	Oid			namespace;

	if (catalog.valid)
		return &catalog;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_catalog, (Datum) 0);
		callback_registered = true;
	}
	namespace = get_namespace_oid("kairoi", false);
	catalog.queue_relid = get_relname_relid("pending_jobs", namespace);
	catalog.current = OidIsValid(catalog.queue_relid);
	if (!catalog.current)
		catalog.queue_relid = outbox_relation_oid("outbox");
	catalog.seq_relid = outbox_relation_oid("outbox_seq");
	catalog.valid = true;
	return &catalog;
}

bool
outbox_is_current(void)
{
	return get_catalog()->current;
}

void
outbox_require_current(const char *what)
{
	if (!outbox_is_current())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs the kairoi extension at version 1.2 in database \"%s\"",
						what, get_database_name(MyDatabaseId)),
				 errdetail("The kairoi library is 1.2, the extension in this database is older."),
				 errhint("Run ALTER EXTENSION kairoi UPDATE in this database.")));
}

SPIPlanPtr
outbox_prepare_once(SPIPlanPtr *plan, const char *sql, int nargs,
					Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(sql, nargs, argtypes);

		if (prepared == NULL)
			elog(ERROR, "kairoi: could not prepare \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}

void
outbox_execute(SPIPlanPtr plan, Datum *values, const char *nulls,
			   bool read_only, int expected)
{
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, 0);

	if (rc != expected)
		elog(ERROR, "kairoi: queue statement failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * Where an upsert's RETURNING q.seq goes: only the lowest seq written is
 * kept, each row read in place.  SPI's own receiver would copy every row
 * into a tuple table of its own memory context, for that one number.
 */
typedef struct LowestSeqReceiver
{
	DestReceiver pub;
	int64		lowest;
} LowestSeqReceiver;

static bool
lowest_seq_receive(TupleTableSlot *slot, DestReceiver *self)
{
	LowestSeqReceiver *receiver = (LowestSeqReceiver *) self;
	bool		isnull;
	int64		seq = DatumGetInt64(slot_getattr(slot, 1, &isnull));

	Assert(!isnull);
	receiver->lowest = Min(receiver->lowest, seq);
	return true;
}

static void
lowest_seq_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
lowest_seq_done(DestReceiver *self)
{
}

/*
 * Run an upsert whose RETURNING gives the seq of each entry written, with
 * nargs parameters (none null); returns the lowest seq, PG_INT64_MAX if
 * none was written.
 */
static int64
execute_upsert(SPIPlanPtr plan, int nargs, const Oid *argtypes,
			   const Datum *values)
{
	LowestSeqReceiver receiver;
	SPIExecuteOptions options;
	ParamListInfo params = makeParamList(nargs);
	int			rc;

	for (int i = 0; i < nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = argtypes[i];
	}
	receiver.pub.receiveSlot = lowest_seq_receive;
	receiver.pub.rStartup = lowest_seq_startup;
	receiver.pub.rShutdown = lowest_seq_done;
	receiver.pub.rDestroy = lowest_seq_done;
	receiver.pub.mydest = DestNone;
	receiver.lowest = PG_INT64_MAX;
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.dest = &receiver.pub;
	rc = SPI_execute_plan_extended(plan, &options);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "kairoi: queue statement failed: %s",
			 SPI_result_code_string(rc));
	return receiver.lowest;
}

/* One entry: $1 a new value of the sequence, $2 identifier, $3 value */
static int64
enqueue_one(SPIPlanPtr *plan, const char *sql, Oid value_type,
			text *identifier, Datum value)
{
	Oid			argtypes[4] = {INT8OID, TEXTOID, value_type, TIMESTAMPTZOID};
	Datum		values[4];
	int64		seq;

	values[0] = Int64GetDatum(nextval_internal(catalog.seq_relid, false));
	values[1] = PointerGetDatum(identifier);
	values[2] = value;
	values[3] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	SPI_connect();
	outbox_prepare_once(plan, sql, 4, argtypes);
	seq = execute_upsert(*plan, 4, argtypes, values);
	SPI_finish();
	return seq;
}

int64
outbox_enqueue_job(text *identifier, TimestampTz execution)
{
	static SPIPlanPtr plan = NULL;

	PreventCommandIfReadOnly("INSERT");
	if (!get_catalog()->current)
		return outbox_1_1_enqueue_job(identifier, execution);
	return enqueue_one(&plan, enqueue_job_sql, TIMESTAMPTZOID, identifier,
					   TimestampTzGetDatum(execution));
}

int64
outbox_enqueue_rule(text *identifier, Datum arguments)
{
	static SPIPlanPtr plan = NULL;

	PreventCommandIfReadOnly("INSERT");
	if (!get_catalog()->current)
		return outbox_1_1_enqueue_rule(identifier, arguments);
	return enqueue_one(&plan, enqueue_rule_sql, TEXTARRAYOID, identifier,
					   arguments);
}

/* Hash table entry of deduplicate_jobs: an identifier's first position */
typedef struct IdentifierSlot
{
	text	   *identifier;		/* key: points into the caller's array */
	int			position;		/* index in the deduplicated arrays */
} IdentifierSlot;

static uint32
identifier_hash(const void *key, Size keysize)
{
	text	   *t = *(text *const *) key;

	return DatumGetUInt32(hash_any((const unsigned char *) VARDATA_ANY(t),
								   VARSIZE_ANY_EXHDR(t)));
}

static int
identifier_match(const void *key1, const void *key2, Size keysize)
{
	text	   *a = *(text *const *) key1;
	text	   *b = *(text *const *) key2;
	int			len = VARSIZE_ANY_EXHDR(a);

	if (len != (int) VARSIZE_ANY_EXHDR(b))
		return 1;
	return memcmp(VARDATA_ANY(a), VARDATA_ANY(b), len);
}

/*
 * Collapse duplicate identifiers as successive single calls would: the
 * job takes the place of its first occurrence and the execution of its
 * last.  Rewrites the arrays in place and returns the new count.
 */
static int
deduplicate_jobs(Datum *identifiers, Datum *executions, int n)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	int			unique = 0;

	ctl.keysize = sizeof(text *);
	ctl.entrysize = sizeof(IdentifierSlot);
	ctl.hash = identifier_hash;
	ctl.match = identifier_match;
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("kairoi identifiers", n, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);

	for (int i = 0; i < n; i++)
	{
		text	   *identifier = DatumGetTextPP(identifiers[i]);
		bool		found;
		IdentifierSlot *slot = hash_search(seen, &identifier, HASH_ENTER,
										   &found);

		if (!found)
		{
			slot->position = unique++;
			identifiers[slot->position] = identifiers[i];
		}
		executions[slot->position] = executions[i];
	}
	hash_destroy(seen);
	return unique;
}

int64
outbox_enqueue_jobs(Datum *identifiers, Datum *executions, int n)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
	Datum		values[3];
	int64		seq;

	PreventCommandIfReadOnly("INSERT");
	n = deduplicate_jobs(identifiers, executions, n);
	if (!get_catalog()->current)
		return outbox_1_1_enqueue_jobs(identifiers, executions, n);
	values[0] = PointerGetDatum(construct_array(identifiers, n, TEXTOID, -1,
												false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(executions, n, TIMESTAMPTZOID,
												sizeof(TimestampTz),
												FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	SPI_connect();
	outbox_prepare_once(&plan, enqueue_jobs_sql, 3, argtypes);
	seq = execute_upsert(plan, 3, argtypes, values);
	SPI_finish();
	return seq;
}

void
kairoi_format_execution(TimestampTz execution, char *buf)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(execution, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	snprintf(buf, KAIROI_EXECUTION_LEN + 1, "%04d-%02d-%02d %02d:%02d:%02d",
			 tm.tm_year, tm.tm_mon, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec);
}

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
 * A scan of pg_extension with the catalog snapshot, not get_extension_oid():
 * since PostgreSQL 18 that reads the system cache, and the worker asks
 * right after DROP EXTENSION's commit callback woke it, before the dropping
 * backend has sent the invalidation that would clear the cached entry.
 * The snapshot of a new transaction already sees the drop.
 */
bool
outbox_extension_exists(void)
{
	Relation	pg_extension = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("kairoi"));
	scan = systable_beginscan(pg_extension, ExtensionNameIndexId, true, NULL,
							  1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(pg_extension, AccessShareLock);
	return found;
}

/* Run a read-only one-value query prepared once: a bool or an int8 */
static Datum
query_single_value(SPIPlanPtr *plan, const char *sql)
{
	Datum		value;
	bool		isnull;

	SPI_connect();
	outbox_prepare_once(plan, sql, 0, NULL);
	outbox_execute(*plan, NULL, NULL, true, SPI_OK_SELECT);
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	SPI_finish();
	return value;
}

bool
outbox_has_entries(void)
{
	static SPIPlanPtr plan = NULL;

	return DatumGetBool(query_single_value(&plan,
										   "SELECT EXISTS (SELECT FROM kairoi.pending_jobs) "
										   "    OR EXISTS (SELECT FROM kairoi.pending_rules)"));
}

bool
outbox_failed_may_have_entries(void)
{
	Relation	failed = table_open(outbox_relation_oid("failed"),
									AccessShareLock);
	BlockNumber nblocks = RelationGetNumberOfBlocks(failed);

	table_close(failed, NoLock);
	return nblocks > 0;
}

/*
 * The rows of a relation as the planner would estimate them: the density
 * of rows per page that the last VACUUM or ANALYZE found, times the pages
 * the relation has now; at least floor (what was counted) when the
 * relation has no statistics yet.
 */
static int64
estimated_rows(const char *name, int64 floor)
{
	Relation	rel = table_open(outbox_relation_oid(name), AccessShareLock);
	BlockNumber pages = RelationGetNumberOfBlocks(rel);
	double		tuples = 0;

	if (rel->rd_rel->relpages > 0 && rel->rd_rel->reltuples >= 0)
		tuples = rel->rd_rel->reltuples / rel->rd_rel->relpages * pages;
	table_close(rel, AccessShareLock);
	return Max((int64) tuples, floor);
}

/*
 * Rows of a relation, counted up to OUTBOX_EXACT_COUNT + 1 (sql counts
 * with that LIMIT), estimated beyond.
 */
static int64
bounded_count(SPIPlanPtr *plan, const char *sql, const char *name,
			  bool *estimated)
{
	int64		exact = DatumGetInt64(query_single_value(plan, sql));

	if (exact <= OUTBOX_EXACT_COUNT)
		return exact;
	*estimated = true;
	return estimated_rows(name, exact);
}

#define BOUNDED_COUNT_SQL(relation) \
	"SELECT pg_catalog.count(*) FROM (SELECT FROM " relation " LIMIT " \
	CppAsString2(OUTBOX_EXACT_COUNT) " + 1) AS bounded"

int64
outbox_count_pending(bool *estimated)
{
	static SPIPlanPtr jobs_plan = NULL;
	static SPIPlanPtr rules_plan = NULL;

	*estimated = false;
	return bounded_count(&jobs_plan, BOUNDED_COUNT_SQL("kairoi.pending_jobs"),
						 "pending_jobs", estimated) +
		bounded_count(&rules_plan, BOUNDED_COUNT_SQL("kairoi.pending_rules"),
					  "pending_rules", estimated);
}

int64
outbox_count_failed(bool *estimated)
{
	static SPIPlanPtr plan = NULL;

	*estimated = false;
	return bounded_count(&plan, BOUNDED_COUNT_SQL("kairoi.failed"), "failed",
						 estimated);
}

/*
 * The database this queue was created in (kairoi.origin), or InvalidOid if
 * kairoi.origin holds no row.  Another OID than the current database's
 * means a copy (CREATE DATABASE ... TEMPLATE).
 */
Oid
outbox_origin_database(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			origin = InvalidOid;

	SPI_connect();
	outbox_prepare_once(&plan, "SELECT database FROM kairoi.origin", 0, NULL);
	outbox_execute(plan, NULL, NULL, true, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		bool		isnull;

		origin = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1,
												&isnull));
	}
	SPI_finish();
	return origin;
}
