-- The outbox is transactional: commit delivers exactly what was committed,
-- rollback (also to a savepoint) delivers nothing; pending entries
-- coalesce per identifier and are delivered in the order they first
-- entered the queue, rules before the jobs enqueued after them.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

-- Hold delivery: the server refuses connections while we look at the queue
\! $KCTL fault refuse=true >/dev/null

BEGIN;
SELECT kairoi_job_set('rolled back', '2030-01-01 00:00:00+00');
ROLLBACK;

BEGIN;
SELECT kairoi_rule_set_shell('reminders', 'reminder-', '/opt/remind.sh');
SELECT kairoi_job_set('reminder-1', '2030-01-01 00:00:00+00');
SAVEPOINT before_mistake;
SELECT kairoi_job_set('mistake', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('reminder-1', '2031-01-01 00:00:00+00');
ROLLBACK TO SAVEPOINT before_mistake;
SELECT kairoi_job_set('reminder-2', '2030-01-02 00:00:00+00');
-- the same job twice in one transaction: one entry, the last value
SELECT kairoi_job_set('reminder-2', '2030-01-03 00:00:00+00');
COMMIT;

-- A later transaction replaces a pending value; the entry keeps its place
SELECT kairoi_job_set('reminder-1', '2030-02-01 00:00:00+00');
SELECT kairoi_job_set('reminder-3', '2030-01-04 00:00:00+00');
SELECT kairoi_rule_set_amqp('events', 'event-', 'amqp://mq', 'jobs', 'due');
SELECT kairoi_job_set('event-1', '2030-01-05 00:00:00+00');

SELECT kind, identifier, arguments FROM kairoi_pending ORDER BY seq;

-- The worker cannot deliver: flush times out and says why
\set VERBOSITY terse
SELECT kairoi_flush('1 second');
\set VERBOSITY default
SELECT state <> 'connected' AS not_connected, last_error IS NOT NULL AS has_error,
	   pending, oldest_pending_age > '0'::interval AS waiting
FROM kairoi_status();

-- The server comes back: everything arrives once, in queue order
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
SELECT count(*) AS still_pending FROM kairoi.outbox;

\copy kairoi_test.server_requests FROM PROGRAM '$KSERVER requests' WITH (FORMAT csv)
SELECT position, instruction, identifier FROM kairoi_test.server_requests
ORDER BY position;
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;
\copy kairoi_test.server_rules FROM PROGRAM '$KSERVER rules' WITH (FORMAT csv)
SELECT identifier, pattern, runner, arguments FROM kairoi_test.server_rules
ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs, kairoi_test.server_rules, kairoi_test.server_requests;

-- Re-scheduling after delivery sends the new value
SELECT kairoi_job_set('reminder-1', '2030-03-01 00:00:00+00');
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE identifier = 'reminder-1';
TRUNCATE kairoi_test.server_jobs;

-- A savepoint rolled back after the first write, and utility statements
-- on the outbox in the scheduling transaction
\! $KCTL fault refuse=true >/dev/null
BEGIN;
SAVEPOINT first_write;
SELECT kairoi_job_set('savepoint-undone', '2030-05-01 00:00:00+00');
ROLLBACK TO SAVEPOINT first_write;
SELECT kairoi_job_set('after-savepoint', '2030-05-01 00:00:00+00');
ALTER TABLE kairoi.pending_jobs SET (fillfactor = 90);
SELECT kairoi_job_set('after-alter', '2030-05-02 00:00:00+00');
ALTER TABLE kairoi.pending_jobs RESET (fillfactor);
COMMIT;
BEGIN;
SELECT kairoi_job_set('truncated', '2030-05-03 00:00:00+00');
TRUNCATE kairoi.pending_jobs;
SELECT kairoi_job_set('after-truncate', '2030-05-03 00:00:00+00');
SELECT identifier FROM kairoi_pending ORDER BY seq;
ROLLBACK;
SELECT identifier FROM kairoi_pending ORDER BY seq;
SELECT reloptions FROM pg_class WHERE oid = 'kairoi.pending_jobs'::regclass;
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE identifier IN ('savepoint-undone', 'after-savepoint', 'after-alter',
					 'truncated', 'after-truncate')
ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;

-- Columns added to the outbox and dropped again, as an upgrade script
-- might: what is written and delivered is unchanged
\! $KCTL fault refuse=true >/dev/null
ALTER TABLE kairoi.pending_jobs ADD COLUMN junk text DEFAULT 'junk',
	ADD COLUMN junk_number int DEFAULT 7;
SELECT kairoi_job_set('with-added-columns', '2030-06-01 00:00:00+00');
ALTER TABLE kairoi.pending_jobs DROP COLUMN junk, DROP COLUMN junk_number;
SELECT kairoi_job_set('with-dropped-columns', '2030-06-02 00:00:00+00');
SELECT kairoi_job_set('with-added-columns', '2030-06-03 00:00:00+00');
SELECT kind, identifier, arguments, version > 0 AS has_version, attempts,
	   next_attempt_at, last_error, enqueued_at <= now() AS enqueued_in_the_past
FROM kairoi.outbox ORDER BY seq;
SELECT * FROM kairoi_test.amcheck_findings();
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE identifier LIKE 'with-%' ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;

-- DDL on the outbox inside plpgsql exception blocks that roll back (an
-- internal subtransaction: no statement of the session sees it end), and
-- in one that commits; scheduling goes on before, inside and after each
\! $KCTL fault refuse=true >/dev/null
BEGIN;
SELECT kairoi_job_set('before-blocks', '2030-07-01 00:00:00+00');
DO $$
BEGIN
	PERFORM kairoi_job_set('block-index', '2030-07-02 00:00:00+00');
	CREATE INDEX queue_block_idx ON kairoi.pending_jobs (enqueued_at);
	PERFORM kairoi_job_set('block-index-after', '2030-07-02 00:00:00+00');
	RAISE EXCEPTION 'undo the block';
EXCEPTION WHEN raise_exception THEN NULL;
END;
$$;
SELECT kairoi_job_set('after-index-block', '2030-07-03 00:00:00+00');
DO $$
BEGIN
	PERFORM kairoi_job_set('block-truncate', '2030-07-04 00:00:00+00');
	TRUNCATE kairoi.pending_jobs;
	PERFORM kairoi_job_set('block-truncate-after', '2030-07-04 00:00:00+00');
	RAISE EXCEPTION 'undo the block';
EXCEPTION WHEN raise_exception THEN NULL;
END;
$$;
SELECT kairoi_job_set('after-truncate-block', '2030-07-05 00:00:00+00');
DO $$
BEGIN
	PERFORM kairoi_job_set('block-primary-key', '2030-07-06 00:00:00+00');
	ALTER TABLE kairoi.pending_jobs DROP CONSTRAINT pending_jobs_pkey;
	ALTER TABLE kairoi.pending_jobs ADD CONSTRAINT pending_jobs_pkey PRIMARY KEY (seq);
	PERFORM kairoi_job_set('block-primary-key-after', '2030-07-06 00:00:00+00');
	RAISE EXCEPTION 'undo the block';
EXCEPTION WHEN raise_exception THEN NULL;
END;
$$;
SELECT kairoi_job_set('after-primary-key-block', '2030-07-07 00:00:00+00');
DO $$
BEGIN
	PERFORM kairoi_job_set('kept-block', '2030-07-08 00:00:00+00');
	ALTER TABLE kairoi.pending_jobs DROP CONSTRAINT pending_jobs_pkey;
	ALTER TABLE kairoi.pending_jobs ADD CONSTRAINT pending_jobs_pkey PRIMARY KEY (seq);
	PERFORM kairoi_job_set('kept-block-after', '2030-07-08 00:00:00+00');
END;
$$;
SELECT kairoi_job_set('after-kept-block', '2030-07-09 00:00:00+00');
COMMIT;
SELECT identifier FROM kairoi_pending ORDER BY seq;
SELECT indexrelid::regclass AS outbox_index FROM pg_index
WHERE indrelid = 'kairoi.pending_jobs'::regclass ORDER BY 1;
SELECT * FROM kairoi_test.amcheck_findings();
-- every entry is found through the primary key, as the worker reads
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT count(*) AS found_by_seq FROM kairoi.outbox WHERE seq > 0;
RESET enable_seqscan;
RESET enable_bitmapscan;
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
SELECT pending FROM kairoi_status();
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE execution LIKE '2030-07-%' ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;

-- Two-phase commit: COMMIT PREPARED fires no commit callback in the
-- enqueueing session: kairoi_flush, or else the worker's safety poll
-- (kairoi.poll_interval), wakes the worker
BEGIN;
SELECT kairoi_job_set('prepared', '2030-04-01 00:00:00+00');
PREPARE TRANSACTION 'kairoi_prepared';
SELECT count(*) AS visible_before_commit_prepared FROM kairoi.outbox;
COMMIT PREPARED 'kairoi_prepared';
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE identifier = 'prepared';
TRUNCATE kairoi_test.server_jobs;
RESET timezone;
