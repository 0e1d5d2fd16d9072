-- Every bad input is rejected at call time with a clear error and changes
-- nothing; good inputs at every boundary are accepted.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

-- NULL arguments
SELECT kairoi_job_set(NULL, '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('job', NULL);
SELECT kairoi_rule_set(NULL, 'p', 'shell', '/bin/true');
SELECT kairoi_rule_set('r', NULL, 'shell', '/bin/true');
SELECT kairoi_rule_set('r', 'p', NULL, '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'shell', VARIADIC NULL::text[]);
SELECT kairoi_rule_set('r', 'p', 'shell', NULL);
SELECT kairoi_rule_set('r', 'p', 'amqp', 'amqp://h', NULL, 'key');
SELECT kairoi_rule_set_shell(NULL, 'p', '/bin/true');
SELECT kairoi_rule_set_shell('r', NULL, '/bin/true');
SELECT kairoi_rule_set_shell('r', 'p', NULL);
SELECT kairoi_rule_set_amqp(NULL, 'p', 'amqp://h', 'ex', 'key');
SELECT kairoi_rule_set_amqp('r', NULL, 'amqp://h', 'ex', 'key');
SELECT kairoi_rule_set_amqp('r', 'p', NULL, 'ex', 'key');
SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h', NULL, 'key');
SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h', 'ex', NULL);

-- Empty strings
SELECT kairoi_job_set('', '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set('', 'p', 'shell', '/bin/true');
SELECT kairoi_rule_set('r', '', 'shell', '/bin/true');
SELECT kairoi_rule_set('r', 'p', '', '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'shell', '');
SELECT kairoi_rule_set_shell('r', 'p', '');
SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h', '', 'key');

-- Unknown runners and wrong arity
SELECT kairoi_rule_set('r', 'p', 'python', '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'SHELL', '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'shell', VARIADIC ARRAY[]::text[]);
SELECT kairoi_rule_set('r', 'p', 'shell', '/bin/true', 'extra');
SELECT kairoi_rule_set('r', 'p', 'amqp', 'amqp://h', 'ex');
SELECT kairoi_rule_set('r', 'p', 'amqp', 'amqp://h', 'ex', 'key', 'extra');
SELECT kairoi_rule_set('r', 'p', 'shell', VARIADIC '{{a},{b}}'::text[]);

-- Times that are not finite or that the server cannot store
SELECT kairoi_job_set('job', 'infinity');
SELECT kairoi_job_set('job', '-infinity');
SELECT kairoi_job_set('job', '1677-09-21 00:12:43+00');
SELECT kairoi_job_set('job', '2262-04-11 23:47:16.000001+00');
SELECT kairoi_job_set('job', '2262-04-11 23:47:17+00');
SELECT kairoi_job_set('job', '0100-01-01 00:00:00+00');
SELECT kairoi_job_set('job', '9999-12-31 23:59:59+00');
SELECT kairoi_job_set('job', '4713-01-01 00:00:00+00 BC');

-- Oversized strings (the limit is 65535 bytes of UTF-8)
SELECT kairoi_job_set(repeat('x', 65536), '2030-01-01 00:00:00+00');
SELECT kairoi_job_set(repeat('é', 32768), '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set_shell('r', repeat('p', 65536), '/bin/true');
SELECT kairoi_rule_set_shell('r', 'p', repeat('s', 65536));
SELECT kairoi_rule_set('r', 'p', 'amqp', 'amqp://h', repeat('e', 65536), 'key');

-- Identifiers too long for the outbox's index on (kind, identifier): the
-- limit is 2688 bytes in the database encoding, compressible or not
SELECT kairoi_job_set(kairoi_test.incompressible(2689), '2030-01-01 00:00:00+00');
SELECT kairoi_job_set(repeat('x', 2689), '2030-01-01 00:00:00+00');
SELECT kairoi_job_set(repeat('é', 1345), '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set_shell(kairoi_test.incompressible(2689), 'p', '/bin/true');
SELECT kairoi_rule_set_amqp(kairoi_test.incompressible(2689), 'p', 'amqp://h', 'e', 'k');
SELECT kairoi_rule_set(kairoi_test.incompressible(2689), 'p', 'shell', '/bin/true');
-- ... and that limit is the index's own: one byte more does not fit a
-- B-tree on ("char", text)
CREATE TEMP TABLE index_limit (kind "char", identifier text, UNIQUE (kind, identifier));
INSERT INTO index_limit VALUES ('j', kairoi_test.incompressible(2689));
INSERT INTO index_limit VALUES ('j', kairoi_test.incompressible(2688));
DROP TABLE index_limit;

-- Nothing above reached the outbox
SELECT count(*) AS pending_after_bad_input FROM kairoi.outbox;

-- Boundaries that are accepted; fractions of a second round up
SELECT kairoi_job_set('min', '1677-09-21 00:12:44+00');
SELECT kairoi_job_set('min rounded up', '1677-09-21 00:12:43.000001+00');
SELECT kairoi_job_set('max', '2262-04-11 23:47:16+00');
SELECT kairoi_job_set('max minus a fraction', '2262-04-11 23:47:15.5+00');
SELECT kairoi_job_set('whole', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('just above whole', '2030-01-01 00:00:00.000001+00');
SELECT kairoi_job_set('just below whole', '2029-12-31 23:59:59.999999+00');
SELECT kairoi_job_set('before 2000', '1999-12-31 23:59:59.5+00');
SELECT kairoi_job_set('before 1970', '1969-12-31 23:59:59.000001+00');
SELECT kairoi_job_set('leap day', '2028-02-29 12:00:00+00');
SET timezone = 'America/New_York';
SELECT kairoi_job_set('new york noon', '2030-06-01 12:00:00');
SET timezone = 'Asia/Kolkata';
SELECT kairoi_job_set('kolkata midnight', '2030-01-01 00:00:00');
SET timezone = 'UTC';
SELECT kairoi_job_set(kairoi_test.incompressible(2688), '2030-01-01 00:00:00+00');
SELECT kairoi_job_set(repeat('é', 1344), '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set_shell(kairoi_test.incompressible(2688), 'p', '/bin/true');
SELECT kairoi_rule_set_shell('long script', 'p', repeat('s', 65535));

SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT CASE WHEN length(identifier) > 40
			THEN left(identifier, 3) || '... (' || octet_length(identifier) || ' bytes)'
			ELSE identifier END AS identifier,
	   execution
FROM kairoi_test.server_jobs ORDER BY execution, identifier;
\copy kairoi_test.server_rules FROM PROGRAM '$KSERVER rules' WITH (FORMAT csv)
SELECT CASE WHEN length(identifier) > 40
			THEN left(identifier, 3) || '... (' || octet_length(identifier) || ' bytes)'
			ELSE identifier END AS identifier,
	   pattern, runner, octet_length(arguments[1]) AS script_bytes
FROM kairoi_test.server_rules ORDER BY 1;
\copy kairoi_test.server_requests FROM PROGRAM '$KSERVER requests' WITH (FORMAT csv)
SELECT count(*) AS requests_received FROM kairoi_test.server_requests;
TRUNCATE kairoi_test.server_jobs, kairoi_test.server_rules, kairoi_test.server_requests;
RESET timezone;

-- Each kind of bad input has its own SQLSTATE
\set VERBOSITY sqlstate
SELECT kairoi_job_set(NULL, '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('', '2030-01-01 00:00:00+00');
SELECT kairoi_rule_set('r', 'p', 'python', '/bin/true');
SELECT kairoi_rule_set('r', 'p', 'shell', '/bin/true', 'extra');
SELECT kairoi_job_set('job', 'infinity');
SELECT kairoi_job_set('job', '2262-04-11 23:47:17+00');
SELECT kairoi_job_set(repeat('x', 65536), '2030-01-01 00:00:00+00');
SELECT kairoi_job_set(repeat('x', 2689), '2030-01-01 00:00:00+00');
\set VERBOSITY default

-- A read-only transaction cannot schedule, by any of the functions
BEGIN READ ONLY;
SELECT kairoi_job_set('read-only', '2030-01-01 00:00:00+00');
ROLLBACK;
BEGIN READ ONLY;
SELECT kairoi_job_set_many(ARRAY['read-only'], ARRAY['2030-01-01 00:00:00+00']::timestamptz[]);
ROLLBACK;
BEGIN READ ONLY;
SELECT kairoi_rule_set_shell('read-only', 'p', '/bin/true');
ROLLBACK;
SELECT count(*) AS read_only_pending FROM kairoi_pending WHERE identifier = 'read-only';
