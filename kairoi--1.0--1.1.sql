/* kairoi--1.0--1.1.sql: upgrade from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION kairoi UPDATE TO '1.1'" to load this file. \quit

/*
 * There is no kairoi--1.1.sql: CREATE EXTENSION kairoi installs 1.0 and
 * runs this script, as contrib modules do, so that a fresh 1.1 and an
 * upgraded 1.0 are the same by construction.  test/integration/upgrade.sh
 * checks it, with entries queued.
 */

/* ---- Every database served: launcher, a worker per database ---- */

/*
 * Every database's worker, from shared memory: callable in any database
 * that has the extension, by superusers and pg_monitor.
 */
CREATE FUNCTION kairoi_workers(
	OUT database name,
	OUT worker_pid integer,
	OUT state text,
	OUT server text,
	OUT in_flight integer,
	OUT acknowledged bigint,
	OUT connection_attempts bigint,
	OUT connected_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT pending bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kairoi_workers'
LANGUAGE C VOLATILE;

CREATE VIEW kairoi_workers AS
	SELECT * FROM kairoi_workers() ORDER BY database;

COMMENT ON VIEW kairoi_workers IS
	'One row per database whose outbox a kairoi worker delivers; pending is as last counted by that worker (every kairoi.poll_interval)';

REVOKE ALL ON FUNCTION kairoi_workers() FROM PUBLIC;
REVOKE ALL ON kairoi_workers FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kairoi_workers() TO pg_monitor;
GRANT SELECT ON kairoi_workers TO pg_monitor;
GRANT EXECUTE ON FUNCTION kairoi_status() TO pg_monitor;

/* ---- Cheaper enqueueing ---- */

/*
 * The C functions are the only writers of kairoi.outbox (ordinary roles
 * cannot write it), and they only ever write 'j' or 'r': the CHECK on kind
 * guarded nothing, yet PostgreSQL parsed and planned it again at every
 * enqueue.
 */
ALTER TABLE kairoi.outbox DROP CONSTRAINT outbox_kind_check;

/*
 * The scheduling functions stay SECURITY DEFINER but no longer SET
 * search_path, which cost a GUC save and restore at every call.  They are
 * still immune to the caller's search_path: every name in the SQL they run
 * (src/outbox.c) is schema-qualified, operators and functions included,
 * column defaults are stored already resolved, and the C code calls no
 * other SQL.  sql/kairoi_search_path.sql checks it with shadowing objects.
 */
ALTER FUNCTION kairoi_job_set(text, timestamptz) RESET search_path;
ALTER FUNCTION kairoi_rule_set(text, text, text, text[]) RESET search_path;
ALTER FUNCTION kairoi_rule_set_shell(text, text, text) RESET search_path;
ALTER FUNCTION kairoi_rule_set_amqp(text, text, text, text, text) RESET search_path;

/*
 * Many jobs in one call: one statement for the whole set.  Duplicate
 * identifiers behave as successive calls would: the last execution wins,
 * the job keeps the queue position of its first occurrence.  Not an
 * overload of kairoi_job_set: with one, kairoi_job_set('a', '2030-01-01')
 * (two untyped literals) would become ambiguous.
 */
CREATE FUNCTION kairoi_job_set_many(identifiers text[], executions timestamptz[])
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_job_set_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER;

COMMENT ON FUNCTION kairoi_job_set_many(text[], timestamptz[]) IS
'Schedule job identifiers[i] at executions[i], for every i, as one statement; '
'duplicates: the last one wins.  Same checks as kairoi_job_set(text, timestamptz).';

/*
 * The ready-made per-row trigger.  It is SECURITY DEFINER like
 * kairoi_job_set; CREATE TRIGGER needs EXECUTE on it, which nobody has by
 * default.
 */
CREATE FUNCTION kairoi_job_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kairoi_job_trigger'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER;

COMMENT ON FUNCTION kairoi_job_trigger() IS
'Row trigger: AFTER INSERT OR UPDATE ... FOR EACH ROW EXECUTE FUNCTION '
'kairoi_job_trigger(prefix, key_column, time_column [, offset_interval]) '
'schedules job prefix || key_column::text at time_column + offset '
'(time_column: timestamptz). DELETE is refused: Kairoi cannot unschedule a job.';

REVOKE ALL ON FUNCTION kairoi_job_set_many(text[], timestamptz[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_job_trigger() FROM PUBLIC;
