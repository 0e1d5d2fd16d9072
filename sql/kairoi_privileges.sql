-- Rules make the Kairoi host run commands: no function is executable by
-- PUBLIC and the outbox is not writable by ordinary roles.  An application
-- role granted kairoi_job_set schedules jobs and nothing more.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

CREATE ROLE kairoi_test_nobody;
CREATE ROLE kairoi_test_app;
GRANT USAGE ON SCHEMA kairoi_test TO kairoi_test_app;
GRANT EXECUTE ON FUNCTION kairoi_job_set(text, timestamptz) TO kairoi_test_app;

-- No routine of the extension is executable by PUBLIC
SELECT p.proname
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
WHERE has_function_privilege('kairoi_test_nobody', p.oid, 'EXECUTE');

SET ROLE kairoi_test_nobody;
SELECT kairoi_rule_set_shell('evil', '', '/bin/sh');
SELECT kairoi_rule_set('evil', 'x', 'shell', '/bin/sh');
SELECT kairoi_rule_set_amqp('evil', 'x', 'amqp://h', 'e', 'k');
SELECT kairoi_job_set('sneaky', '2030-01-01 00:00:00+00');
SELECT kairoi_status();
SELECT kairoi_flush();
SELECT kairoi_retry_failed();
SELECT kairoi_purge_failed();
SELECT * FROM kairoi_pending;
SELECT * FROM kairoi_failed;
INSERT INTO kairoi.outbox (kind, identifier, arguments)
	VALUES ('r', 'evil', '{"", shell, /bin/sh}');
SELECT * FROM kairoi.outbox;
DELETE FROM kairoi.failed;
RESET ROLE;

SET ROLE kairoi_test_app;
SELECT kairoi_job_set('app job', '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set_shell('evil', '', '/bin/sh');
UPDATE kairoi.outbox SET arguments = '{"", shell, /bin/sh}';
-- SECURITY DEFINER functions ignore the caller's search_path
CREATE TEMP TABLE outbox (x int);
SET search_path = pg_temp, public;
SELECT kairoi_job_set('app job 2', '2030-01-01 00:00:00+00');
RESET search_path;
RESET ROLE;
DROP TABLE pg_temp.outbox;

SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;
\copy kairoi_test.server_rules FROM PROGRAM '$KSERVER rules' WITH (FORMAT csv)
SELECT count(*) AS rules_on_server FROM kairoi_test.server_rules;
TRUNCATE kairoi_test.server_jobs, kairoi_test.server_rules;

REVOKE ALL ON SCHEMA kairoi_test FROM kairoi_test_app;
REVOKE ALL ON FUNCTION kairoi_job_set(text, timestamptz) FROM kairoi_test_app;
DROP ROLE kairoi_test_nobody;
DROP ROLE kairoi_test_app;
RESET timezone;
