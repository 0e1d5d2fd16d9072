-- Install the extension and the helpers the other tests share.
CREATE EXTENSION kairoi;

SELECT extname, extversion FROM pg_extension WHERE extname = 'kairoi';
SELECT nspname FROM pg_namespace WHERE nspname = 'kairoi';

-- Functions in the extension's schema, with their security properties
SELECT p.proname, p.prosecdef, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
WHERE d.deptype = 'e'
ORDER BY 1;

-- What the test server holds, loaded with \copy ... FROM PROGRAM
CREATE SCHEMA kairoi_test;
CREATE TABLE kairoi_test.server_jobs (identifier text, execution text);
CREATE TABLE kairoi_test.server_rules (identifier text, pattern text,
	runner text, arguments text[]);
CREATE TABLE kairoi_test.server_requests (position int, instruction text,
	identifier text);

-- For the isolation specs, which cannot run psql's \copy: the test server
-- read and steered through COPY ... PROGRAM with the commands in the
-- database's settings kairoi_test.kserver and kairoi_test.kctl (set by
-- test/regress.sh and test/installcheck.sh: the server's environment is
-- not the test's when the server is the user's).
CREATE TABLE kairoi_test.flushed_jobs (identifier text, execution text);
-- The execution the server holds for a job, once everything is delivered
CREATE FUNCTION kairoi_test.server_job(job text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	PERFORM kairoi_flush('30 seconds');
	TRUNCATE kairoi_test.flushed_jobs;
	EXECUTE format('COPY kairoi_test.flushed_jobs FROM PROGRAM %L WITH (FORMAT csv)',
				   current_setting('kairoi_test.kserver') || ' jobs');
	SELECT execution INTO result FROM kairoi_test.flushed_jobs
	WHERE identifier = job;
	RETURN result;
END;
$$;
CREATE FUNCTION kairoi_test.server_fault(setting text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('COPY (SELECT) TO PROGRAM %L',
				   current_setting('kairoi_test.kctl') || ' fault ' || setting || ' >/dev/null');
END;
$$;
-- Waits (bounded) until the worker has requests in flight
CREATE FUNCTION kairoi_test.wait_in_flight() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..1000 LOOP
		IF (SELECT in_flight FROM kairoi_status()) > 0 THEN
			RETURN true;
		END IF;
		PERFORM pg_sleep(0.01);
	END LOOP;
	RETURN false;
END;
$$;

-- A text of this many bytes that no compression shrinks (base64 of
-- SHA-256 digests), for the identifier length limit of the outbox's index
CREATE FUNCTION kairoi_test.incompressible(bytes int) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT left(string_agg(encode(sha256(i::text::bytea), 'base64'), ''
						   ORDER BY i), bytes)
	FROM generate_series(1, bytes / 44 + 1) AS i
$$;

-- What amcheck finds wrong with kairoi's tables: verify_heapam on each,
-- bt_index_check and bt_index_parent_check (heapallindexed) on each index
CREATE EXTENSION amcheck;
CREATE FUNCTION kairoi_test.amcheck_findings() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
	index regclass;
BEGIN
	RETURN QUERY
		SELECT format('%s: (%s,%s): %s', t.oid::regclass, blkno, offnum, msg)
		FROM pg_class t, LATERAL verify_heapam(t.oid)
		WHERE t.relnamespace = 'kairoi'::regnamespace AND t.relkind = 'r';
	FOR index IN SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
				 WHERE t.relnamespace = 'kairoi'::regnamespace AND t.relkind = 'r'
				 ORDER BY 1
	LOOP
		BEGIN
			PERFORM bt_index_check(index, true);
			PERFORM bt_index_parent_check(index, true);
		EXCEPTION WHEN OTHERS THEN
			RETURN NEXT format('%s: %s', index, SQLERRM);
		END;
	END LOOP;
END;
$$;

-- The launcher starts the worker within kairoi.poll_interval of the
-- database's creation; wait (bounded) until it is connected
DO $$
BEGIN
	FOR i IN 1..3000 LOOP
		EXIT WHEN (SELECT state = 'connected' FROM kairoi_status());
		PERFORM pg_sleep(0.01);
	END LOOP;
END;
$$;
SELECT worker_pid IS NOT NULL AS worker_running, state, database, pending, failed
FROM kairoi_status();

-- The GUCs are defined with their documented ranges and defaults
SELECT name,
	   CASE name WHEN 'kairoi.server' THEN '(test server)' ELSE setting END,
	   unit, min_val, max_val, context, boot_val AS "default"
FROM pg_settings WHERE name LIKE 'kairoi.%' ORDER BY name;
