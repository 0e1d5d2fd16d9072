/* kairoi--1.1--1.2.sql: upgrade from 1.1 to 1.2 */

\echo Use "ALTER EXTENSION kairoi UPDATE TO '1.2'" to load this file. \quit

/*
 * As for 1.1, there is no kairoi--1.2.sql: CREATE EXTENSION kairoi runs
 * 1.0, then the upgrade scripts, so that a fresh 1.2 and an upgraded one
 * are the same by construction (test/integration/upgrade.sh checks it).
 */

/*
 * The library must be 1.2's: the tables below are what its worker reads.
 * A library loaded before it was replaced on disk (PostgreSQL not restarted
 * since the new package was installed) would not find this function.
 */
DO $$
BEGIN
	EXECUTE $sql$
		CREATE FUNCTION kairoi._library_version() RETURNS pg_catalog.text
		AS 'MODULE_PATHNAME', 'kairoi_library_version'
		LANGUAGE C IMMUTABLE STRICT
	$sql$;
EXCEPTION WHEN undefined_function THEN
	RAISE EXCEPTION 'the kairoi library loaded in this server is older than 1.2'
		USING HINT = 'Restart PostgreSQL after installing kairoi 1.2, then run ALTER EXTENSION kairoi UPDATE.';
END
$$;
REVOKE ALL ON FUNCTION kairoi._library_version() FROM PUBLIC;

/* ---- A lean queue ---- */

/*
 * 1.1 kept every entry in one table of ten columns with three indexes and
 * two sequences.  The queue is now two tables with only what enqueueing,
 * the worker and the views need, each with its two indexes: the primary
 * key on seq (the queue order, and the worker's cursor) and the unique
 * identifier (coalescing: the upsert's arbiter).  Jobs and rules are apart
 * so that neither index carries the kind.  A job's execution is a
 * timestamptz (already rounded up to the second), formatted by the worker.
 *
 * seq and version come from one sequence, kairoi.outbox_seq: an entry
 * first written takes a value for both; a replacement takes a new version
 * and keeps seq (its place in the queue).  So a version is never reused,
 * whichever entry it belongs to.  kairoi.outbox_version is no longer used;
 * it stays so that dumps of 1.1, which set it, restore.
 *
 * Retry state (attempts, next attempt, last error) is written only when
 * the server answers ERROR, into kairoi.rejections, for the version
 * rejected: a replacement (new version) starts afresh without touching it.
 */
CREATE TABLE kairoi.pending_jobs (
	seq				bigint NOT NULL PRIMARY KEY,
	version			bigint NOT NULL,
	identifier		text NOT NULL UNIQUE,
	execution		timestamptz NOT NULL,
	enqueued_at		timestamptz NOT NULL
);

CREATE TABLE kairoi.pending_rules (
	seq				bigint NOT NULL PRIMARY KEY,
	version			bigint NOT NULL,
	identifier		text NOT NULL UNIQUE,
	arguments		text[] NOT NULL,	/* pattern, runner, its arguments */
	enqueued_at		timestamptz NOT NULL
);

CREATE TABLE kairoi.rejections (
	seq				bigint NOT NULL PRIMARY KEY,
	version			bigint NOT NULL,
	attempts		integer NOT NULL,
	next_attempt_at	timestamptz NOT NULL,
	last_error		text NOT NULL
);

/* What 1.1 had pending moves over, with its places, versions and times */
INSERT INTO kairoi.pending_jobs (seq, version, identifier, execution, enqueued_at)
	SELECT seq, version, identifier,
		   (arguments[1] OPERATOR(pg_catalog.||) '+00')::pg_catalog.timestamptz,
		   enqueued_at
	FROM kairoi.outbox WHERE kind OPERATOR(pg_catalog.=) 'j';
INSERT INTO kairoi.pending_rules (seq, version, identifier, arguments, enqueued_at)
	SELECT seq, version, identifier, arguments, enqueued_at
	FROM kairoi.outbox WHERE kind OPERATOR(pg_catalog.=) 'r';
INSERT INTO kairoi.rejections (seq, version, attempts, next_attempt_at, last_error)
	SELECT seq, version, attempts,
		   COALESCE(next_attempt_at, pg_catalog.now()),
		   COALESCE(last_error, '')
	FROM kairoi.outbox WHERE attempts OPERATOR(pg_catalog.>) 0;

/* One sequence from now on: past every seq and every version given */
SELECT pg_catalog.setval('kairoi.outbox_seq',
	GREATEST((SELECT last_value FROM kairoi.outbox_seq),
			 (SELECT last_value FROM kairoi.outbox_version)));

SELECT pg_catalog.pg_extension_config_dump('kairoi.pending_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.pending_rules', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.rejections', '');

/*
 * Every pending entry in 1.1's shape, first under a name of its own: the
 * view that replaces the 1.1 table once it is gone.  updated_at is no
 * longer kept: NULL.
 */
CREATE VIEW kairoi.outbox_1_1 AS
	SELECT q.seq, 'j'::"char" AS kind, q.identifier,
		   ARRAY[pg_catalog.to_char(q.execution AT TIME ZONE 'UTC',
									'YYYY-MM-DD HH24:MI:SS')] AS arguments,
		   q.version, q.enqueued_at, NULL::timestamptz AS updated_at,
		   COALESCE(r.attempts, 0) AS attempts,
		   r.next_attempt_at, r.last_error
	FROM kairoi.pending_jobs q
		 LEFT JOIN kairoi.rejections r
		 ON r.seq OPERATOR(pg_catalog.=) q.seq
			AND r.version OPERATOR(pg_catalog.=) q.version
	UNION ALL
	SELECT q.seq, 'r'::"char", q.identifier, q.arguments, q.version,
		   q.enqueued_at, NULL::timestamptz,
		   COALESCE(r.attempts, 0), r.next_attempt_at, r.last_error
	FROM kairoi.pending_rules q
		 LEFT JOIN kairoi.rejections r
		 ON r.seq OPERATOR(pg_catalog.=) q.seq
			AND r.version OPERATOR(pg_catalog.=) q.version;

/*
 * kairoi_pending keeps its columns (and so the grants on it and the views
 * built on it); updated_at is NULL since 1.2.
 */
CREATE OR REPLACE VIEW kairoi_pending AS
	SELECT seq, CASE kind WHEN 'j' THEN 'job' ELSE 'rule' END AS kind,
		   identifier, arguments, enqueued_at, updated_at, attempts,
		   next_attempt_at, last_error
	FROM kairoi.outbox_1_1;

CREATE OR REPLACE FUNCTION kairoi_retry_failed(failed_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT kairoi._wake_worker_at_commit();
	WITH taken AS (
		DELETE FROM kairoi.failed
		WHERE kairoi_retry_failed.failed_id IS NULL
		   OR id = kairoi_retry_failed.failed_id
		RETURNING id, kind, identifier, arguments
	), newest AS (
		SELECT DISTINCT ON (kind, identifier) id, kind, identifier, arguments
		FROM taken
		ORDER BY kind, identifier, id DESC
	), numbered AS (
		SELECT nextval('kairoi.outbox_seq') AS v, kind, identifier, arguments
		FROM (SELECT * FROM newest ORDER BY id) oldest_first
	), jobs AS (
		INSERT INTO kairoi.pending_jobs (seq, version, identifier, execution, enqueued_at)
		SELECT v, v, identifier, (arguments[1] || '+00')::timestamptz, now()
		FROM numbered WHERE kind = 'j'
		ON CONFLICT (identifier) DO NOTHING
		RETURNING 1
	), rules AS (
		INSERT INTO kairoi.pending_rules (seq, version, identifier, arguments, enqueued_at)
		SELECT v, v, identifier, arguments, now()
		FROM numbered WHERE kind = 'r'
		ON CONFLICT (identifier) DO NOTHING
		RETURNING 1
	)
	SELECT count(*) FROM taken;
END;

ALTER EXTENSION kairoi DROP TABLE kairoi.outbox;
DROP TABLE kairoi.outbox;

/*
 * kairoi.outbox is now that view.  Dumps of 1.1 hold the 1.1 table's rows
 * (COPY kairoi.outbox ...): the trigger files each in the new tables, so
 * that they restore into 1.2.
 */
ALTER VIEW kairoi.outbox_1_1 RENAME TO outbox;

CREATE FUNCTION kairoi._file_outbox_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.kind = 'j' THEN
		INSERT INTO kairoi.pending_jobs (seq, version, identifier, execution, enqueued_at)
		VALUES (NEW.seq, NEW.version, NEW.identifier,
				(NEW.arguments[1] || '+00')::timestamptz, NEW.enqueued_at);
	ELSE
		INSERT INTO kairoi.pending_rules (seq, version, identifier, arguments, enqueued_at)
		VALUES (NEW.seq, NEW.version, NEW.identifier, NEW.arguments, NEW.enqueued_at);
	END IF;
	IF NEW.attempts > 0 THEN
		INSERT INTO kairoi.rejections (seq, version, attempts, next_attempt_at, last_error)
		VALUES (NEW.seq, NEW.version, NEW.attempts,
				coalesce(NEW.next_attempt_at, now()), coalesce(NEW.last_error, ''));
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER file_row INSTEAD OF INSERT ON kairoi.outbox
	FOR EACH ROW EXECUTE FUNCTION kairoi._file_outbox_row();

REVOKE ALL ON kairoi.pending_jobs, kairoi.pending_rules, kairoi.rejections,
	kairoi.outbox FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi._file_outbox_row() FROM PUBLIC;

/* ---- Copies of a database are not delivered until a superuser says so ---- */

/*
 * The database the queue was created in.  A copy (CREATE DATABASE ...
 * TEMPLATE, which a role with CREATEDB may run on a database it owns) has
 * another OID: its queue is the original's, and delivering it would send
 * old jobs and rules again, from a worker per copy.  Its worker leaves, and
 * none is started there, until a superuser runs kairoi_serve_copy() in it.
 * Not dumped: a database restored from a dump writes its own OID when the
 * dump's CREATE EXTENSION runs, and is delivered, as it always was.
 */
CREATE TABLE kairoi.origin (database oid NOT NULL);
INSERT INTO kairoi.origin
	SELECT oid FROM pg_catalog.pg_database
	WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database();

CREATE FUNCTION kairoi._restart_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_restart_worker_at_commit'
LANGUAGE C VOLATILE;

/*
 * Deliver the queue of a copy here: the copy becomes a database of its
 * own.  Superusers only (not SECURITY DEFINER; it writes kairoi.origin).
 */
CREATE FUNCTION kairoi_serve_copy()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	DELETE FROM kairoi.origin;
	INSERT INTO kairoi.origin
		SELECT oid FROM pg_database WHERE datname = current_database();
	SELECT kairoi._wake_worker_at_commit();
	SELECT kairoi._restart_worker_at_commit();
END;

COMMENT ON FUNCTION kairoi_serve_copy() IS
'In a copy of a database with kairoi (CREATE DATABASE ... TEMPLATE), whose queue is not delivered: deliver it from here on.  Superusers only.';

REVOKE ALL ON kairoi.origin FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi._restart_worker_at_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_serve_copy() FROM PUBLIC;

/* ---- Logical replication: kairoi's tables are node-local ---- */

/*
 * A publication FOR ALL TABLES includes kairoi's tables.  On a subscriber,
 * the rows logical replication applies to them are skipped: each node
 * delivers what was scheduled on it, as sequences are not replicated
 * (their seq and id would collide with the subscriber's own, the
 * publisher's deletes would remove the subscriber's entries, and its
 * kairoi.origin would make the subscriber a copy).  The function returns
 * NULL in a logical replication worker (apply, tablesync, parallel apply)
 * and the row unchanged anywhere else.
 *
 * ENABLE REPLICA: the triggers fire only under session_replication_role =
 * replica, which those workers set; ordinary sessions and the delivery
 * worker (which pins origin) never call the function.  A replicated
 * TRUNCATE fires no row trigger: it is not skipped (src/logical_replication.c).
 */
CREATE FUNCTION kairoi._skip_replicated_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kairoi_skip_replicated_change'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION kairoi._skip_replicated_change() FROM PUBLIC;

DO $$
DECLARE
	name pg_catalog.text;
BEGIN
	FOREACH name IN ARRAY ARRAY['pending_jobs', 'pending_rules', 'rejections',
								'failed', 'origin']
	LOOP
		EXECUTE pg_catalog.format(
			'CREATE TRIGGER skip_replicated_change'
			'  BEFORE INSERT OR UPDATE OR DELETE ON kairoi.%I'
			'  FOR EACH ROW EXECUTE FUNCTION kairoi._skip_replicated_change()', name);
		EXECUTE pg_catalog.format(
			'ALTER TABLE kairoi.%I ENABLE REPLICA TRIGGER skip_replicated_change',
			name);
	END LOOP;
END
$$;
