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

-- A session keeps what it opened to write the outbox until its transaction
-- ends: a savepoint rolled back after the first write leaves it usable, and
-- a utility statement on the outbox in the same transaction (which refuses
-- to run on a table its own session holds open) first closes it
\! $KCTL fault refuse=true >/dev/null
BEGIN;
SAVEPOINT first_write;
SELECT kairoi_job_set('savepoint-undone', '2030-05-01 00:00:00+00');
ROLLBACK TO SAVEPOINT first_write;
SELECT kairoi_job_set('after-savepoint', '2030-05-01 00:00:00+00');
ALTER TABLE kairoi.outbox SET (fillfactor = 90);
SELECT kairoi_job_set('after-alter', '2030-05-02 00:00:00+00');
ALTER TABLE kairoi.outbox RESET (fillfactor);
COMMIT;
BEGIN;
SELECT kairoi_job_set('truncated', '2030-05-03 00:00:00+00');
TRUNCATE kairoi.outbox;
SELECT kairoi_job_set('after-truncate', '2030-05-03 00:00:00+00');
SELECT identifier FROM kairoi_pending ORDER BY seq;
ROLLBACK;
SELECT identifier FROM kairoi_pending ORDER BY seq;
SELECT reloptions FROM pg_class WHERE oid = 'kairoi.outbox'::regclass;
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs
WHERE identifier IN ('savepoint-undone', 'after-savepoint', 'after-alter',
					 'truncated', 'after-truncate')
ORDER BY identifier;
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
