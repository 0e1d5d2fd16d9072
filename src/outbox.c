/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Enqueueing into kairoi.outbox, and the worker's bookkeeping of
 *	  rejected entries, all in SQL run through saved SPI plans.
 *
 *	  User backends only ever insert or replace their own pending rows, with
 *	  INSERT ... ON CONFLICT DO UPDATE, and supersede failed entries.  The
 *	  executor does the upsert: the speculative insertion and its retry, the
 *	  unique check, index maintenance, dropped columns, subtransactions and
 *	  DDL (the plan cache re-plans after any change to the tables).  An
 *	  earlier release did the same with heap primitives and got each of
 *	  these wrong at least once (docs/design.md); the executor's path is
 *	  the one that every supported PostgreSQL version keeps correct.
 *
 *	  The delivery worker reads due rows and deletes acknowledged ones
 *	  through outbox_direct.c, and records rejections here.  It never waits
 *	  for a row lock: reading takes none, and its writes skip rows locked by
 *	  other transactions, so an application's long transaction never stalls
 *	  delivery of anything else.  A row it could not delete stays and is
 *	  sent again later.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "outbox.h"

/*
 * Insert, or replace the pending value of the same (kind, identifier).  A
 * replacement keeps seq (the row's place in the queue), renews version and
 * forgets earlier rejections: it is a new value.
 *
 * The scheduling functions are SECURITY DEFINER without a fixed
 * search_path (that would cost a GUC save and restore per call), so the
 * statements they run here must mean the same under any search_path a
 * caller sets: every relation, function and operator is schema-qualified
 * (OPERATOR(pg_catalog.=), pg_catalog.min), column defaults are stored
 * resolved, and ON CONFLICT infers the unique index from plain columns.
 * Nothing else is looked up by name.
 */
#define ENQUEUE_UPSERT \
"ON CONFLICT (kind, identifier) DO UPDATE " \
"SET arguments = excluded.arguments, version = excluded.version, " \
"    updated_at = excluded.updated_at, attempts = 0, " \
"    next_attempt_at = NULL, last_error = NULL "

static const char *const enqueue_sql =
"INSERT INTO kairoi.outbox AS o (kind, identifier, arguments) "
"VALUES ($1, $2, $3) " ENQUEUE_UPSERT
"RETURNING seq";

/*
 * Many jobs, identifiers unique, in queue order; executions already
 * formatted.  Returns the lowest seq written.
 */
static const char *const enqueue_jobs_sql =
"WITH written AS ("
"  INSERT INTO kairoi.outbox AS o (kind, identifier, arguments) "
"  SELECT 'j', u.identifier, ARRAY[u.execution] "
"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), "
"                 pg_catalog.unnest($2::pg_catalog.text[])) "
"       AS u(identifier, execution) "
"  " ENQUEUE_UPSERT
"  RETURNING seq) "
"SELECT pg_catalog.min(seq) FROM written";

/*
 * A new value supersedes the failed entries of its identifier: retrying
 * one later would overwrite the newer value on the server.
 */
static const char *const supersede_sql =
"DELETE FROM kairoi.failed "
"WHERE kind OPERATOR(pg_catalog.=) $1 "
"  AND identifier OPERATOR(pg_catalog.=) ANY ($2)";

/*
 * The worker's statements.  It runs as superuser with its settings pinned
 * (search_path = pg_catalog, pg_temp: guc.c); its statements name every
 * function, operator and type in pg_catalog as well, so that none could
 * ever resolve to an object an ordinary role created, whatever the path.
 * (Every OPERATOR() has the same precedence: parentheses give the order.)
 */
static const char *const next_retry_sql =
"SELECT pg_catalog.min(next_attempt_at) FROM kairoi.outbox "
"WHERE next_attempt_at OPERATOR(pg_catalog.>) pg_catalog.now()";

/* Count one rejection; the retry delay doubles from $4 up to $5 ms */
static const char *const reject_sql =
"UPDATE kairoi.outbox o "
"SET attempts = o.attempts OPERATOR(pg_catalog.+) 1, last_error = $3, "
"    next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) "
"      (LEAST($5::pg_catalog.float8, "
"             $4::pg_catalog.float8 OPERATOR(pg_catalog.*) "
"             pg_catalog.power(2::pg_catalog.float8, "
"                              o.attempts::pg_catalog.float8)) "
"       OPERATOR(pg_catalog.*) '1 millisecond'::pg_catalog.interval) "
"WHERE o.seq OPERATOR(pg_catalog.=) ANY ("
"  SELECT seq FROM kairoi.outbox "
"  WHERE seq OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2 "
"  FOR UPDATE SKIP LOCKED) "
"RETURNING o.attempts";

static const char *const move_to_failed_sql =
"WITH moved AS ("
"  DELETE FROM kairoi.outbox WHERE seq OPERATOR(pg_catalog.=) $1 "
"  RETURNING kind, identifier, arguments, version, enqueued_at, attempts, "
"            last_error) "
"INSERT INTO kairoi.failed "
"  (kind, identifier, arguments, version, enqueued_at, attempts, reason) "
"SELECT * FROM moved";

/*
 * Prepare a statement once per backend and keep it.  The plan cache
 * re-plans it if the extension's tables are dropped and re-created.
 */
static SPIPlanPtr
prepare_once(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
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

static void
execute_expecting(SPIPlanPtr plan, Datum *values, const char *nulls,
				  bool read_only, long count, int expected)
{
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	if (rc != expected)
		elog(ERROR, "kairoi: outbox statement failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * False if kairoi.failed certainly holds no entry our next statement could
 * see: it has no block (vacuum truncates it once its entries are retried
 * or purged, and a committed row lives in a block).  Nearly always the
 * case, and then the supersede DELETE is not run at all.
 */
static bool
failed_may_have_entries(void)
{
	Relation	failed = table_open(outbox_relation_oid("failed"),
									AccessShareLock);
	BlockNumber nblocks = RelationGetNumberOfBlocks(failed);

	table_close(failed, NoLock);
	return nblocks > 0;
}

/*
 * Delete the failed entries of these identifiers (a text[]), inside the
 * caller's SPI connection.  Called after the new values were written, so
 * it runs with a snapshot no older than the write's and sees every failed
 * entry the write could see.
 */
static void
supersede_failed(char kind, Datum identifiers)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {CHAROID, TEXTARRAYOID};
	Datum		values[2] = {CharGetDatum(kind), identifiers};

	if (!failed_may_have_entries())
		return;
	prepare_once(&plan, supersede_sql, 2, argtypes);
	execute_expecting(plan, values, NULL, false, 0, SPI_OK_DELETE);
}

/* The int8 in the first column of the first row SPI returned */
static int64
first_int8_result(void)
{
	bool		isnull;
	Datum		value = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

	Assert(!isnull);
	return DatumGetInt64(value);
}

int64
outbox_enqueue(char kind, text *identifier, Datum arguments)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {CHAROID, TEXTOID, TEXTARRAYOID};
	Datum		values[3] = {CharGetDatum(kind), PointerGetDatum(identifier),
	arguments};
	Datum		identifier_datum = PointerGetDatum(identifier);
	int64		seq;

	PreventCommandIfReadOnly("INSERT");
	SPI_connect();
	prepare_once(&plan, enqueue_sql, 3, argtypes);
	execute_expecting(plan, values, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	seq = first_int8_result();
	supersede_failed(kind, PointerGetDatum(construct_array(&identifier_datum, 1,
														   TEXTOID, -1, false,
														   TYPALIGN_INT)));
	SPI_finish();
	return seq;
}

/* Hash table entry of outbox_enqueue_jobs: an identifier's first position */
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
	Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[2];
	int64		seq;

	PreventCommandIfReadOnly("INSERT");
	n = deduplicate_jobs(identifiers, executions, n);
	values[0] = PointerGetDatum(construct_array(identifiers, n, TEXTOID, -1,
												false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(executions, n, TEXTOID, -1,
												false, TYPALIGN_INT));

	SPI_connect();
	prepare_once(&plan, enqueue_jobs_sql, 2, argtypes);
	execute_expecting(plan, values, NULL, false, 0, SPI_OK_SELECT);
	seq = first_int8_result();
	supersede_failed(OUTBOX_KIND_JOB, values[0]);
	SPI_finish();
	return seq;
}

TimestampTz
outbox_next_retry_at(void)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz result = 0;
	bool		isnull;
	Datum		value;

	SPI_connect();
	prepare_once(&plan, next_retry_sql, 0, NULL);
	execute_expecting(plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	if (!isnull)
		result = DatumGetTimestampTz(value);
	SPI_finish();
	return result;
}

bool
outbox_record_rejection(int64 seq, int64 version, const char *reason)
{
	static SPIPlanPtr reject_plan = NULL;
	static SPIPlanPtr move_plan = NULL;
	Oid			reject_types[5] = {INT8OID, INT8OID, TEXTOID, INT4OID, INT4OID};
	Datum		reject_values[5] = {Int64GetDatum(seq), Int64GetDatum(version),
		CStringGetTextDatum(reason), Int32GetDatum(kairoi_backoff_min_ms),
	Int32GetDatum(kairoi_backoff_max_ms)};
	bool		moved = false;

	SPI_connect();
	prepare_once(&reject_plan, reject_sql, 5, reject_types);
	execute_expecting(reject_plan, reject_values, NULL, false, 0,
					  SPI_OK_UPDATE_RETURNING);
	/* Nothing updated: replaced meanwhile (send the new value) or locked */
	if (SPI_processed == 1)
	{
		bool		isnull;
		int32		attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc,
														   1, &isnull));

		if (attempts >= kairoi_max_attempts)
		{
			Oid			move_types[1] = {INT8OID};
			Datum		move_values[1] = {Int64GetDatum(seq)};

			prepare_once(&move_plan, move_to_failed_sql, 1, move_types);
			execute_expecting(move_plan, move_values, NULL, false, 0,
							  SPI_OK_INSERT);
			moved = true;
		}
	}
	SPI_finish();
	return moved;
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

/* Run a read-only one-value query prepared once */
static Datum
query_single_value(SPIPlanPtr *plan, const char *sql)
{
	Datum		value;
	bool		isnull;

	SPI_connect();
	prepare_once(plan, sql, 0, NULL);
	execute_expecting(*plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	SPI_finish();
	return value;				/* a pass-by-value bool or int8 */
}

bool
outbox_has_entries(void)
{
	static SPIPlanPtr plan = NULL;

	return DatumGetBool(query_single_value(&plan,
										   "SELECT EXISTS (SELECT FROM kairoi.outbox)"));
}

int64
outbox_count_entries(void)
{
	static SPIPlanPtr plan = NULL;

	return DatumGetInt64(query_single_value(&plan,
											"SELECT pg_catalog.count(*) FROM kairoi.outbox"));
}
