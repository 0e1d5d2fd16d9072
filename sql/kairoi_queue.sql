-- The SQL surface without delivery (what `make installcheck` runs when the
-- server cannot run the tests that need a worker: kairoi not preloaded, its
-- worker serving another database, or a worker that test/installcheck.sh
-- points at a test server refusing connections): the extension installs,
-- scheduling enqueues transactionally and coalesces, bad input is refused,
-- and nothing is executable by PUBLIC.  Needs no Kairoi server.
CREATE EXTENSION kairoi;
SELECT extname, extversion FROM pg_extension WHERE extname = 'kairoi';
SET timezone = 'UTC';

SELECT pending, failed FROM kairoi_status();

-- Rolled back, also to a savepoint: nothing is queued
BEGIN;
SELECT kairoi_job_set('rolled back', '2030-01-01 00:00:00+00');
ROLLBACK;
BEGIN;
SELECT kairoi_rule_set_shell('reminders', 'reminder-', '/opt/remind.sh');
SELECT kairoi_job_set('reminder-1', '2030-01-01 00:00:00.25+00');
SAVEPOINT before_mistake;
SELECT kairoi_job_set('mistake', '2030-01-01 00:00:00+00');
ROLLBACK TO SAVEPOINT before_mistake;
COMMIT;

-- A later value replaces the pending one, which keeps its place
SELECT kairoi_job_set('reminder-2', '2030-01-02 00:00:00+00');
SELECT kairoi_job_set('reminder-1', '2031-01-01 00:00:00+00');
SELECT kairoi_rule_set_amqp('events', 'event-', 'amqp://mq', 'jobs', 'due');
SELECT kind, identifier, arguments, attempts FROM kairoi_pending ORDER BY seq;
SELECT pending, failed, oldest_pending_age >= '0'::interval AS has_age
FROM kairoi_status();

-- Bad input: an error with its own SQLSTATE, nothing queued
\set VERBOSITY sqlstate
SELECT kairoi_job_set(NULL, '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('', '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set('r', 'p', 'python', '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'shell', '/bin/true', 'extra');
SELECT kairoi_job_set('job', 'infinity');
SELECT kairoi_job_set('job', '2262-04-11 23:47:17+00');
SELECT kairoi_job_set(repeat('x', 65536), '2030-01-01 00:00:00+00');
\set VERBOSITY default
SELECT count(*) AS pending_after_bad_input FROM kairoi_pending;

-- Nothing is executable by PUBLIC, the outbox is closed to ordinary roles
CREATE ROLE kairoi_test_nobody;
SELECT count(*) AS executable_by_public
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
WHERE has_function_privilege('kairoi_test_nobody', p.oid, 'EXECUTE');
SET ROLE kairoi_test_nobody;
\set VERBOSITY terse
SELECT kairoi_job_set('sneaky', '2030-01-01 00:00:00+00');
SELECT * FROM kairoi.outbox;
SELECT * FROM kairoi.pending_jobs;
INSERT INTO kairoi.pending_jobs VALUES (1, 1, 'sneaky', now(), now());
\set VERBOSITY default
RESET ROLE;
DROP ROLE kairoi_test_nobody;

-- Failed entries: none to retry or purge
SELECT kairoi_retry_failed() AS retried, kairoi_purge_failed() AS purged;

-- The queue goes with the extension
DROP EXTENSION kairoi;
SELECT count(*) AS kairoi_schemas_left FROM pg_namespace WHERE nspname = 'kairoi';
RESET timezone;
