-- kairoi's tables under logical replication: the triggers that skip what a
-- subscription applies to them, and the WARNING when a publication
-- includes them.  Replication itself, between two clusters:
-- test/integration/logical_replication.sh.  The expected output assumes
-- wal_level = logical (test/installcheck.conf): PostgreSQL warns otherwise.

-- Each table has the trigger, fired only in replica sessions (tgenabled R)
SELECT tgrelid::regclass, tgenabled, pg_get_triggerdef(oid)
FROM pg_trigger
WHERE tgrelid IN (SELECT oid FROM pg_class
				  WHERE relnamespace = 'kairoi'::regnamespace AND relkind = 'r')
ORDER BY tgrelid::regclass::text;

-- A session that sets session_replication_role = replica itself is no
-- logical replication worker: the triggers fire and keep its inserts,
-- updates and deletes (in a transaction, so that the worker cannot deliver
-- the entries before they are shown)
BEGIN;
SET LOCAL session_replication_role = replica;
SELECT kairoi_job_set('replica session', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('replica session', '2030-01-02 00:00:00+00');
SELECT kairoi_job_set('replica session, deleted', '2030-01-03 00:00:00+00');
DELETE FROM kairoi.pending_jobs WHERE identifier = 'replica session, deleted';
SELECT identifier, arguments FROM kairoi.outbox WHERE identifier LIKE 'replica session%';
INSERT INTO kairoi.failed (kind, identifier, arguments, version, enqueued_at,
						   attempts, reason)
VALUES ('j', 'replica session, failed', '{2030-01-04 00:00:00}', 0, now(), 1, 'test');
UPDATE kairoi.failed SET reason = 'test, updated' WHERE identifier = 'replica session, failed';
SELECT identifier, reason FROM kairoi.failed WHERE identifier = 'replica session, failed';
DELETE FROM kairoi.failed WHERE identifier = 'replica session, failed';
SELECT count(*) FROM kairoi.failed WHERE identifier = 'replica session, failed';
COMMIT;
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT execution FROM kairoi_test.server_jobs WHERE identifier = 'replica session';
TRUNCATE kairoi_test.server_jobs;

-- A publication of kairoi's tables warns: all tables, the schema, by name
CREATE PUBLICATION kairoi_all FOR ALL TABLES;
CREATE PUBLICATION kairoi_schema FOR TABLES IN SCHEMA kairoi;
CREATE PUBLICATION kairoi_named FOR TABLE kairoi.failed;

-- One of the application's tables does not, nor a table named like
-- kairoi's in another schema, nor another schema
CREATE TABLE public.orders (id integer PRIMARY KEY);
CREATE TABLE public.outbox (seq bigint PRIMARY KEY);
CREATE PUBLICATION kairoi_app FOR TABLE public.orders, public.outbox;
CREATE PUBLICATION kairoi_public FOR TABLES IN SCHEMA public;

-- ALTER PUBLICATION that adds or sets kairoi's tables warns; one that
-- drops them, sets other tables or only options does not
ALTER PUBLICATION kairoi_app ADD TABLE kairoi.pending_jobs;
ALTER PUBLICATION kairoi_app SET (publish = 'insert, update, delete');
ALTER PUBLICATION kairoi_app DROP TABLE kairoi.pending_jobs;
ALTER PUBLICATION kairoi_app ADD TABLES IN SCHEMA kairoi;
ALTER PUBLICATION kairoi_app SET TABLE public.orders;
ALTER PUBLICATION kairoi_app SET TABLE public.orders, kairoi.pending_jobs, kairoi.failed;
ALTER PUBLICATION kairoi_app DROP TABLE kairoi.pending_jobs, kairoi.failed;

-- Rolled back, it warns all the same: the statement succeeded
BEGIN;
CREATE PUBLICATION kairoi_rolled_back FOR TABLE kairoi.pending_jobs;
ROLLBACK;

-- ALTER EXTENSION kairoi UPDATE warns about each publication that
-- includes kairoi's tables (here already at the default version)
ALTER EXTENSION kairoi UPDATE;

-- How to check an existing publication (docs/operations.md)
SELECT pubname, tablename FROM pg_publication_tables
WHERE schemaname = 'kairoi' ORDER BY pubname, tablename;

DROP PUBLICATION kairoi_all, kairoi_schema, kairoi_named, kairoi_app, kairoi_public;
DROP TABLE public.orders, public.outbox;
