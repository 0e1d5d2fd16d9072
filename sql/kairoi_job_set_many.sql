-- kairoi_job_set_many(identifiers text[], executions timestamptz[]): many
-- jobs in one statement, with the checks of kairoi_job_set on every
-- element.  A bad element anywhere schedules nothing; duplicates behave as
-- successive calls: the last execution wins, the place of the first.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';
\! $KCTL fault refuse=true >/dev/null

-- Bad arguments
SELECT kairoi_job_set_many(NULL, ARRAY['2030-01-01 00:00:00+00']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a'], NULL);
SELECT kairoi_job_set_many(ARRAY['a', NULL], ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY['2030-01-01', NULL]::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY[['a'], ['b']], ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY[['2030-01-01'], ['2030-01-02']]::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY['2030-01-01']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', ''], ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', repeat('x', 65536)], ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', kairoi_test.incompressible(2689)], ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY['2030-01-01', 'infinity']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY['-infinity', '2030-01-01']::timestamptz[]);
SELECT kairoi_job_set_many(ARRAY['a', 'b'], ARRAY['2030-01-01', '2262-04-11 23:47:16.000001+00']::timestamptz[]);
SELECT count(*) AS pending_after_errors FROM kairoi_pending;

-- Empty arrays schedule nothing
SELECT kairoi_job_set_many('{}', '{}');
SELECT count(*) AS pending_after_empty FROM kairoi_pending;

-- Rolled back: nothing
BEGIN;
SELECT kairoi_job_set_many(ARRAY['rolled back'], ARRAY['2030-01-01']::timestamptz[]);
ROLLBACK;

-- Duplicates; a pending entry replaced keeps its place
SELECT kairoi_job_set('many-b', '2029-01-01 00:00:00+00');
SELECT kairoi_job_set_many(
	ARRAY['many-a', 'many-b', 'many-c', 'many-a', 'many-c', 'many-a'],
	ARRAY['2030-01-01 00:00:00+00', '2030-01-02 00:00:00+00',
		  '2030-01-03 00:00:00+00', '2030-01-04 00:00:00+00',
		  '2030-01-05 00:00:00.5+00', '2030-01-06 00:00:00+00']::timestamptz[]);
SELECT identifier, arguments FROM kairoi_pending ORDER BY seq;

-- A new value supersedes the failed entries of its identifier once the
-- server has acknowledged it
INSERT INTO kairoi.failed (kind, identifier, arguments, version, enqueued_at, attempts, reason)
VALUES ('j', 'many-failed', '{"2029-01-01 00:00:00"}', 1, now(), 3, 'test'),
	   ('j', 'many-kept', '{"2029-01-01 00:00:00"}', 1, now(), 3, 'test');
SELECT kairoi_job_set_many(ARRAY['many-failed'], ARRAY['2030-02-01']::timestamptz[]);
SELECT identifier FROM kairoi_failed ORDER BY identifier;

\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
SELECT identifier FROM kairoi_failed ORDER BY identifier;
SELECT kairoi_purge_failed();
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;
TRUNCATE kairoi_test.server_jobs;
RESET timezone;
