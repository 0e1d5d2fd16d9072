-- Escaping round trip: any text arrives as exactly one argument, byte for
-- byte, and nothing a user passes can inject a second instruction.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

CREATE TABLE kairoi_test.tricky (identifier text PRIMARY KEY);
INSERT INTO kairoi_test.tricky VALUES
	('plain'),
	('with space'),
	('  two leading spaces'),
	(' leading space'),
	('trailing space '),
	('double"quote'),
	('"fully quoted"'),
	('"'),
	('back\slash'),
	('\\two backslashes'),
	('ends with backslash\'),
	('\"escaped quote\"'),
	(E'new\nline'),
	(E'\n'),
	(E'tab\there'),
	(E'carriage\rreturn'),
	(E'crlf\r\n'),
	('é accented'),
	('日本語のジョブ'),
	('emoji 🎉'),
	(E'x "2030-01-01 00:00:00"\n0 RULE SET evil "" shell /bin/sh'),
	(E'y 2030-01-01 00:00:00\n1 SET z 2030-01-01 00:00:00\n');

SELECT count(*) FROM (SELECT kairoi_job_set(identifier, '2030-01-01 00:00:00+00')
					  FROM kairoi_test.tricky) s;

-- Rules: patterns, scripts and AMQP arguments with the same characters
SELECT kairoi_rule_set_shell(E'rule "one"\n', E'pattern with space\n"',
							 E'/opt/my scripts/run "it".sh\n0 RULE SET x y shell z');
SELECT kairoi_rule_set_amqp('amqp rule', 'é', E'amqp://user:p"w@host/\\vhost',
							'exchange name', E'routing\nkey');
SELECT kairoi_rule_set('generic', 'gen-', 'shell', E'\\"');

SELECT kairoi_flush('30 seconds');

\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
-- Every identifier arrived exactly as sent, and nothing else
SELECT count(*) AS sent, count(s.identifier) AS arrived_identical
FROM kairoi_test.tricky t
LEFT JOIN kairoi_test.server_jobs s ON s.identifier = t.identifier
	AND s.execution = '2030-01-01 00:00:00';
SELECT identifier AS unexpected_on_server FROM kairoi_test.server_jobs
EXCEPT SELECT identifier FROM kairoi_test.tricky;

\copy kairoi_test.server_rules FROM PROGRAM '$KSERVER rules' WITH (FORMAT csv)
SELECT identifier, pattern, runner, arguments FROM kairoi_test.server_rules
ORDER BY identifier;

-- One request per call: the injected lines were not executed
\copy kairoi_test.server_requests FROM PROGRAM '$KSERVER requests' WITH (FORMAT csv)
SELECT instruction, count(*) FROM kairoi_test.server_requests
GROUP BY instruction ORDER BY instruction;

DROP TABLE kairoi_test.tricky;
TRUNCATE kairoi_test.server_jobs, kairoi_test.server_rules, kairoi_test.server_requests;
RESET timezone;
