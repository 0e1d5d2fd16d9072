/* kairoi--1.0.sql: objects of the kairoi extension */

\echo Use "CREATE EXTENSION kairoi" to load this file. \quit

/*
 * Internal objects live in schema kairoi, owned by the extension.  Ordinary
 * roles get no privilege on it: the SQL functions below write the outbox
 * with the extension owner's rights.
 */
CREATE SCHEMA kairoi;
REVOKE ALL ON SCHEMA kairoi FROM PUBLIC;

CREATE SEQUENCE kairoi.outbox_seq;
CREATE SEQUENCE kairoi.outbox_version;

/*
 * One pending row per (kind, identifier).  seq is the row's place in the
 * queue and survives replacement; version is renewed on every replacement,
 * so the worker deletes a row only if what it sent is still current.
 */
CREATE TABLE kairoi.outbox (
	seq				bigint NOT NULL DEFAULT nextval('kairoi.outbox_seq') PRIMARY KEY,
	kind			"char" NOT NULL CHECK (kind IN ('j', 'r')),
	identifier		text NOT NULL,
	arguments		text[] NOT NULL,
	version			bigint NOT NULL DEFAULT nextval('kairoi.outbox_version'),
	enqueued_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at	timestamptz,
	last_error		text,
	UNIQUE (kind, identifier)
);
CREATE INDEX outbox_retry_idx ON kairoi.outbox (next_attempt_at)
	WHERE next_attempt_at IS NOT NULL;

/*
 * Entries the server kept rejecting, with when and why.  Scheduling the
 * same identifier again supersedes (deletes) its failed entries.
 */
CREATE TABLE kairoi.failed (
	id				bigserial PRIMARY KEY,
	kind			"char" NOT NULL CHECK (kind IN ('j', 'r')),
	identifier		text NOT NULL,
	arguments		text[] NOT NULL,
	version			bigint NOT NULL,
	enqueued_at		timestamptz NOT NULL,
	attempts		integer NOT NULL,
	reason			text NOT NULL,
	failed_at		timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_identifier_idx ON kairoi.failed (kind, identifier);

/*
 * pg_dump keeps the queue: a restored database delivers what was pending
 * (at least once: the original may have delivered it too).
 */
SELECT pg_catalog.pg_extension_config_dump('kairoi.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.failed', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.outbox_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.outbox_version', '');
SELECT pg_catalog.pg_extension_config_dump('kairoi.failed_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA kairoi FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA kairoi FROM PUBLIC;

/* ---- Scheduling ---- */

CREATE FUNCTION kairoi_job_set(identifier text, execution timestamptz)
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_job_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION kairoi_rule_set(identifier text, pattern text, runner text,
								VARIADIC runner_arguments text[])
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_rule_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION kairoi_rule_set_shell(identifier text, pattern text, script text)
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_rule_set_shell'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION kairoi_rule_set_amqp(identifier text, pattern text, dsn text,
									 exchange text, routing_key text)
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_rule_set_amqp'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

/* ---- Administration ---- */

/*
 * Wakes the worker, and makes it read the whole outbox, when the calling
 * transaction commits: used by CREATE EXTENSION and kairoi_retry_failed.
 */
CREATE FUNCTION kairoi._wake_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_wake_worker_at_commit'
LANGUAGE C VOLATILE;

SELECT kairoi._wake_worker_at_commit();

CREATE FUNCTION kairoi_status(
	OUT worker_pid integer,
	OUT state text,
	OUT server text,
	OUT database name,
	OUT in_flight integer,
	OUT acknowledged bigint,
	OUT connection_attempts bigint,
	OUT connected_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT pending bigint,
	OUT failed bigint,
	OUT oldest_pending_age interval)
RETURNS record
AS 'MODULE_PATHNAME', 'kairoi_status'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION kairoi_flush(timeout interval DEFAULT '30 seconds')
RETURNS void
AS 'MODULE_PATHNAME', 'kairoi_flush'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE VIEW kairoi_pending AS
	SELECT seq, CASE kind WHEN 'j' THEN 'job' ELSE 'rule' END AS kind,
		   identifier, arguments, enqueued_at, updated_at, attempts,
		   next_attempt_at, last_error
	FROM kairoi.outbox;

CREATE VIEW kairoi_failed AS
	SELECT id, CASE kind WHEN 'j' THEN 'job' ELSE 'rule' END AS kind,
		   identifier, arguments, enqueued_at, attempts, reason, failed_at
	FROM kairoi.failed;

/*
 * Put failed entries back in the queue (all of them, or one by id), the
 * newest first if one identifier failed several times.  Returns the number
 * of failed entries taken back.
 */
CREATE FUNCTION kairoi_retry_failed(failed_id bigint DEFAULT NULL)
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
	), requeued AS (
		INSERT INTO kairoi.outbox (kind, identifier, arguments)
		SELECT DISTINCT ON (kind, identifier) kind, identifier, arguments
		FROM taken
		ORDER BY kind, identifier, id DESC
		ON CONFLICT (kind, identifier) DO NOTHING
		RETURNING 1
	)
	SELECT count(*) FROM taken;
END;

/* Forget failed entries (all of them, or one by id); returns how many */
CREATE FUNCTION kairoi_purge_failed(failed_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH purged AS (
		DELETE FROM kairoi.failed
		WHERE kairoi_purge_failed.failed_id IS NULL
		   OR id = kairoi_purge_failed.failed_id
		RETURNING 1
	)
	SELECT count(*) FROM purged;
END;


/*
 * Rules make the Kairoi host run commands: nothing here is for PUBLIC.
 * Grant kairoi_job_set to application roles explicitly.
 */
REVOKE ALL ON FUNCTION kairoi_job_set(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_rule_set(text, text, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_rule_set_shell(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_rule_set_amqp(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_flush(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_retry_failed(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi_purge_failed(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kairoi._wake_worker_at_commit() FROM PUBLIC;
REVOKE ALL ON kairoi_pending, kairoi_failed FROM PUBLIC;
