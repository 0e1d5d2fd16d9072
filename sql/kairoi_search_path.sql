-- The scheduling functions are SECURITY DEFINER without SET search_path:
-- a caller's search_path full of shadowing objects changes nothing.
-- Every hostile object raises an error if it is ever used.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';
\! $KCTL fault refuse=true >/dev/null

CREATE SCHEMA hostile;
CREATE TABLE hostile.outbox (kind "char", identifier text, arguments text[],
	seq bigint, version bigint, enqueued_at timestamptz, updated_at timestamptz,
	attempts int, next_attempt_at timestamptz, last_error text);
CREATE TABLE hostile.failed (LIKE hostile.outbox);
CREATE TABLE hostile.pending_jobs (LIKE kairoi.pending_jobs);
CREATE TABLE hostile.pending_rules (LIKE kairoi.pending_rules);
CREATE FUNCTION hostile.trap() RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'a hostile object was used'; END $$;
CREATE FUNCTION hostile.char_eq("char", "char") RETURNS boolean LANGUAGE sql
	AS 'SELECT hostile.trap()';
CREATE FUNCTION hostile.text_eq(text, text) RETURNS boolean LANGUAGE sql
	AS 'SELECT hostile.trap()';
CREATE OPERATOR hostile.= (LEFTARG = "char", RIGHTARG = "char", FUNCTION = hostile.char_eq);
CREATE OPERATOR hostile.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.text_eq);
CREATE FUNCTION hostile.nextval(regclass) RETURNS bigint LANGUAGE sql
	AS 'SELECT hostile.trap()::int::bigint';
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE sql
	AS 'SELECT CASE WHEN hostile.trap() THEN now() END';
CREATE FUNCTION hostile.unnest(text[]) RETURNS SETOF text
	LANGUAGE sql AS 'SELECT NULL::text WHERE hostile.trap()';
CREATE FUNCTION hostile.min_step(bigint, bigint) RETURNS bigint LANGUAGE sql
	AS 'SELECT CASE WHEN hostile.trap() THEN $1 END';
CREATE AGGREGATE hostile.min(bigint) (SFUNC = hostile.min_step, STYPE = bigint);
-- The traps work
SELECT 'j'::"char" OPERATOR(hostile.=) 'j'::"char";

CREATE ROLE kairoi_test_hostile;
GRANT USAGE ON SCHEMA hostile, kairoi_test TO kairoi_test_hostile;
GRANT EXECUTE ON FUNCTION kairoi_job_set(text, timestamptz),
	kairoi_job_set_many(text[], timestamptz[]), kairoi_job_trigger(),
	kairoi_rule_set_shell(text, text, text) TO kairoi_test_hostile;
GRANT ALL ON ALL TABLES IN SCHEMA hostile TO kairoi_test_hostile;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hostile TO kairoi_test_hostile;
CREATE TABLE kairoi_test.hostile_orders (id int, at timestamptz);
GRANT INSERT ON kairoi_test.hostile_orders TO kairoi_test_hostile;
CREATE TRIGGER reminder AFTER INSERT ON kairoi_test.hostile_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('hostile-trigger-', 'id', 'at');

-- A failed entry, so that the worker's supersede statement runs too
INSERT INTO kairoi.failed (kind, identifier, arguments, version, enqueued_at, attempts, reason)
VALUES ('j', 'hostile-1', '{"2029-01-01 00:00:00"}', 1, now(), 3, 'test');

SET ROLE kairoi_test_hostile;
-- Once with the default search_path (plans cached), then hostile ones
-- (cached plans re-planned under them); the functions themselves are
-- called schema-qualified, as a careful caller would
SELECT kairoi_job_set('hostile-0', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set_many(ARRAY['hostile-00'], ARRAY['2030-01-01']::timestamptz[]);
SET search_path = hostile, pg_catalog;
SELECT public.kairoi_job_set('hostile-1', '2030-01-01 00:00:00+00');
SELECT public.kairoi_job_set('hostile-1', '2030-01-02 00:00:00+00');
SELECT public.kairoi_job_set_many(ARRAY['hostile-2', 'hostile-3'],
						   ARRAY['2030-01-01', '2030-01-02']::timestamptz[]);
SELECT public.kairoi_rule_set_shell('hostile rule', 'hostile-', '/bin/true');
INSERT INTO kairoi_test.hostile_orders VALUES (1, '2030-01-03 00:00:00+00');
SET search_path = pg_temp, hostile;
CREATE TEMP TABLE outbox (LIKE hostile.outbox);
CREATE TEMP TABLE failed (LIKE hostile.outbox);
CREATE TEMP TABLE pending_jobs (LIKE hostile.pending_jobs);
CREATE TEMP TABLE pending_rules (LIKE hostile.pending_rules);
SELECT public.kairoi_job_set('hostile-4', '2030-01-04 00:00:00+00');
SELECT public.kairoi_job_set_many(ARRAY['hostile-5'], ARRAY['2030-01-05']::timestamptz[]);
INSERT INTO kairoi_test.hostile_orders VALUES (2, '2030-01-06 00:00:00+00');
SELECT count(*) AS hostile_rows FROM (
	SELECT 1 FROM hostile.outbox UNION ALL SELECT 1 FROM hostile.failed
	UNION ALL SELECT 1 FROM hostile.pending_jobs
	UNION ALL SELECT 1 FROM hostile.pending_rules
	UNION ALL SELECT 1 FROM pg_temp.outbox UNION ALL SELECT 1 FROM pg_temp.failed
	UNION ALL SELECT 1 FROM pg_temp.pending_jobs
	UNION ALL SELECT 1 FROM pg_temp.pending_rules) t;
DROP TABLE pg_temp.outbox, pg_temp.failed, pg_temp.pending_jobs,
	pg_temp.pending_rules;
RESET search_path;
RESET ROLE;

-- Everything went to the real queue; the failed entry is superseded
-- once the new value is acknowledged
SELECT kind, identifier, arguments FROM kairoi_pending ORDER BY seq;

\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
SELECT count(*) AS failed FROM kairoi_failed;
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;

DROP TABLE kairoi_test.hostile_orders;
DROP SCHEMA hostile CASCADE;
REVOKE ALL ON SCHEMA kairoi_test FROM kairoi_test_hostile;
REVOKE EXECUTE ON FUNCTION kairoi_job_set(text, timestamptz),
	kairoi_job_set_many(text[], timestamptz[]), kairoi_job_trigger(),
	kairoi_rule_set_shell(text, text, text) FROM kairoi_test_hostile;
DROP ROLE kairoi_test_hostile;
TRUNCATE kairoi_test.server_jobs;
RESET timezone;
