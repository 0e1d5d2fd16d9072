-- Administration: kairoi_status, kairoi_flush's errors, and the life of an
-- entry the server keeps rejecting (retried, failed, retried by hand).
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

SELECT worker_pid IS NOT NULL AS worker_running, state, database,
	   in_flight, connected_at IS NOT NULL AS connected, pending, failed
FROM kairoi_status();

-- kairoi_flush refuses what it cannot do
SELECT kairoi_flush(NULL);
SELECT kairoi_flush('-1 second');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT kairoi_flush();
ROLLBACK;
BEGIN;
SELECT kairoi_job_set('own transaction', '2030-01-01 00:00:00+00');
SELECT kairoi_flush();
ROLLBACK;

-- The server answers ERROR for one job: it is retried (kairoi.max_attempts
-- = 3 in this cluster) and then moved to kairoi_failed with the reason;
-- the other jobs are delivered.
\! $KCTL fault 'error_ids=["rejected job"]' >/dev/null
SELECT kairoi_job_set('accepted job 1', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('rejected job', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('accepted job 2', '2030-01-01 00:00:00+00');
\set VERBOSITY terse
SELECT kairoi_flush('30 seconds');
\set VERBOSITY default
SELECT kind, identifier, arguments, attempts, reason ~ 'answered ERROR' AS reason_given
FROM kairoi_failed;
SELECT pending, failed FROM kairoi_status();
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier FROM kairoi_test.server_jobs ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;
\copy kairoi_test.server_requests FROM PROGRAM '$KSERVER requests' WITH (FORMAT csv)
SELECT identifier, count(*) AS requests FROM kairoi_test.server_requests
GROUP BY identifier ORDER BY identifier;
TRUNCATE kairoi_test.server_requests;

-- Once the cause is fixed, an administrator retries it
\! $KCTL fault 'error_ids=[]' >/dev/null
SELECT kairoi_retry_failed();
SELECT kairoi_flush('30 seconds');
SELECT count(*) AS failed_left FROM kairoi_failed;
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier FROM kairoi_test.server_jobs ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;

-- Scheduling an identifier again supersedes its failed entry, once the
-- new value is acknowledged: a later retry must not overwrite the newer
-- value on the server
\! $KCTL fault 'error_ids=["stale"]' >/dev/null
SELECT kairoi_job_set('stale', '2030-01-01 00:00:00+00');
\set VERBOSITY terse
SELECT kairoi_flush('30 seconds');
\set VERBOSITY default
SELECT identifier, arguments FROM kairoi_failed;
\! $KCTL fault 'error_ids=[]' refuse=true >/dev/null
SELECT kairoi_job_set('stale', '2031-01-01 00:00:00+00');
SELECT count(*) AS failed_before_delivery FROM kairoi_failed;
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
SELECT count(*) AS failed_after_delivery FROM kairoi_failed;
SELECT kairoi_retry_failed();
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs WHERE identifier = 'stale';
TRUNCATE kairoi_test.server_jobs;

-- Purging
\! $KCTL fault 'error_ids=["purged"]' >/dev/null
SELECT kairoi_job_set('purged', '2030-01-01 00:00:00+00');
\set VERBOSITY terse
SELECT kairoi_flush('30 seconds');
\set VERBOSITY default
SELECT kairoi_purge_failed((SELECT id FROM kairoi_failed WHERE identifier = 'purged'));
SELECT kairoi_purge_failed();
SELECT pending, failed FROM kairoi_status();
\! $KCTL fault 'error_ids=[]' >/dev/null
RESET timezone;
