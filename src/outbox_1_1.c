/*-------------------------------------------------------------------------
 *
 * outbox_1_1.c
 *	  Enqueueing into a database whose extension is still at 1.1: the 1.2
 *	  library is loaded (PostgreSQL restarted after the upgrade of the
 *	  package) but ALTER EXTENSION kairoi UPDATE has not run yet.
 *
 *	  Applications keep scheduling meanwhile, into 1.1's kairoi.outbox,
 *	  with 1.1's statements.  The worker delivers nothing there until the
 *	  update, whose script moves every entry into 1.2's queue (the worker
 *	  restarts with it).  A backend that took this path sees the update at
 *	  once: the drop of 1.1's table makes outbox.c look again.
 *
 *	  This file goes with the last release that can be updated from 1.1.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "outbox.h"
#include "outbox_1_1.h"

/*
 * 1.1's statements: insert or replace, keeping seq; a new version; earlier
 * rejections forgotten.  Every name is schema-qualified (see outbox.c).
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

/* A new value supersedes the failed entries of its identifier */
static const char *const supersede_sql =
"DELETE FROM kairoi.failed "
"WHERE kind OPERATOR(pg_catalog.=) $1 "
"  AND identifier OPERATOR(pg_catalog.=) ANY ($2)";

static void
supersede_failed(char kind, Datum identifiers)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {CHAROID, TEXTARRAYOID};
	Datum		values[2] = {CharGetDatum(kind), identifiers};

	if (!outbox_failed_may_have_entries())
		return;
	outbox_prepare_once(&plan, supersede_sql, 2, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_DELETE);
}

static Datum
text_array(Datum *elements, int n)
{
	return PointerGetDatum(construct_array(elements, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/* A formatted execution, as a text datum */
static Datum
execution_text(TimestampTz execution)
{
	char		buf[KAIROI_EXECUTION_LEN + 1];

	kairoi_format_execution(execution, buf);
	return CStringGetTextDatum(buf);
}

static int64
enqueue(char kind, text *identifier, Datum arguments)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[3] = {CHAROID, TEXTOID, TEXTARRAYOID};
	Datum		values[3] = {CharGetDatum(kind), PointerGetDatum(identifier),
	arguments};
	Datum		identifier_datum = PointerGetDatum(identifier);
	bool		isnull;
	int64		seq;

	SPI_connect();
	outbox_prepare_once(&plan, enqueue_sql, 3, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_INSERT_RETURNING);
	seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
	supersede_failed(kind, text_array(&identifier_datum, 1));
	SPI_finish();
	return seq;
}

int64
outbox_1_1_enqueue_job(text *identifier, TimestampTz execution)
{
	Datum		formatted = execution_text(execution);

	return enqueue(OUTBOX_KIND_JOB, identifier, text_array(&formatted, 1));
}

int64
outbox_1_1_enqueue_rule(text *identifier, Datum arguments)
{
	return enqueue(OUTBOX_KIND_RULE, identifier, arguments);
}

int64
outbox_1_1_enqueue_jobs(Datum *identifiers, Datum *executions, int n)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[2];
	bool		isnull;
	int64		seq;

	for (int i = 0; i < n; i++)
		executions[i] = execution_text(DatumGetTimestampTz(executions[i]));
	values[0] = text_array(identifiers, n);
	values[1] = text_array(executions, n);

	SPI_connect();
	outbox_prepare_once(&plan, enqueue_jobs_sql, 2, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_SELECT);
	seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
	supersede_failed(OUTBOX_KIND_JOB, values[0]);
	SPI_finish();
	return seq;
}
