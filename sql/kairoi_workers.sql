-- Every database's worker as seen from SQL (kairoi_workers), who may see
-- it, how pg_stat_activity names it, and the settings renamed or retired
-- in 1.1.

-- This cluster has one database with the extension: one worker, the one
-- kairoi_status() reports
SELECT count(*) AS databases_served FROM kairoi_workers;
SELECT w.database = current_database() AS this_database,
	   w.worker_pid = s.worker_pid AS same_worker,
	   w.state, w.server = s.server AS same_server,
	   w.in_flight >= 0 AS in_flight_known
FROM kairoi_workers w, kairoi_status() s;

-- pg_stat_activity names the worker and its database
SELECT backend_type,
	   application_name = 'kairoi worker ' || current_database() AS named,
	   datname = current_database() AS connected_here
FROM pg_stat_activity WHERE pid = (SELECT worker_pid FROM kairoi_status());
SELECT backend_type, application_name, datname
FROM pg_stat_activity WHERE backend_type = 'kairoi launcher';

-- A monitoring role (member of pg_monitor) sees everything; others nothing
CREATE ROLE kairoi_test_monitor IN ROLE pg_monitor;
CREATE ROLE kairoi_test_plain;
SET ROLE kairoi_test_monitor;
SELECT count(*) AS visible_to_monitor FROM kairoi_workers;
SELECT state FROM kairoi_status();
SELECT kairoi_job_set('monitor job', '2030-01-01 00:00:00+00');
RESET ROLE;
SET ROLE kairoi_test_plain;
SELECT * FROM kairoi_workers;
SELECT * FROM kairoi_workers();
SELECT * FROM kairoi_status();
RESET ROLE;
DROP ROLE kairoi_test_monitor;
DROP ROLE kairoi_test_plain;

-- kairoi.window was renamed: its successor is not a reserved word
ALTER SYSTEM SET kairoi.max_in_flight = 64;
ALTER SYSTEM RESET kairoi.max_in_flight;
-- The 1.0 settings kairoi.database and kairoi.window are still accepted
-- (a 1.0 postgresql.conf loads) but hidden and ignored
SELECT count(*) AS listed FROM pg_settings
WHERE name IN ('kairoi.database', 'kairoi.window');
-- (SHOW kairoi.window is a syntax error: window is a reserved word)
SELECT current_setting('kairoi.window') AS window_setting,
	   current_setting('kairoi.database') AS database_setting;
