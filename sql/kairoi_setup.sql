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

-- The GUCs are defined with their documented ranges
SELECT name,
	   CASE name WHEN 'kairoi.server' THEN '(test server)' ELSE setting END,
	   unit, min_val, max_val, context
FROM pg_settings WHERE name LIKE 'kairoi.%' ORDER BY name;
