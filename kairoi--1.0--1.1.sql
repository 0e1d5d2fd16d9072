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
