-- kairoi_job_trigger: the ready-made row trigger.  Job identifier = prefix
-- || key column's text, execution = time column + offset.  Every bad
-- argument or row value is an error that changes nothing; DELETE is
-- refused (Kairoi cannot unschedule a job).
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

-- The interface is described where \df+ shows it
SELECT obj_description('kairoi_job_trigger()'::regprocedure, 'pg_proc');

-- Hold delivery to look at the queue
\! $KCTL fault refuse=true >/dev/null

CREATE TABLE shop_orders (
	id			int PRIMARY KEY,
	customer	text,
	placed_at	timestamptz,
	local_time	timestamp
);
CREATE TRIGGER reminder AFTER INSERT OR UPDATE OR DELETE ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '1 day');

INSERT INTO shop_orders VALUES
	(1, 'ada', '2030-05-01 10:00:00+00'),
	(2, 'grace', '2030-05-01 11:30:00.25+00');
BEGIN;
INSERT INTO shop_orders VALUES (3, 'rolled back', '2030-05-03 09:00:00+00');
ROLLBACK;
-- An update schedules the row's job again with its new time; the entry
-- keeps its place in the queue
UPDATE shop_orders SET placed_at = '2030-06-01 08:00:00+00' WHERE id = 1;
SELECT kind, identifier, arguments FROM kairoi_pending ORDER BY seq;

-- DELETE is refused and deletes nothing
DELETE FROM shop_orders WHERE id = 2;
SELECT count(*) AS orders FROM shop_orders;

-- A NULL key or time schedules nothing
INSERT INTO shop_orders VALUES (4, 'no time', NULL);
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('customer.', 'customer', 'placed_at');
INSERT INTO shop_orders VALUES (5, NULL, '2030-05-01 10:00:00+00');
-- Three arguments: no offset; any key type, as its text output
INSERT INTO shop_orders VALUES (6, 'linus', '2030-05-02 09:00:00.5+00');
DROP TRIGGER reminder ON shop_orders;

-- Bad trigger arguments: an error at the first row, nothing scheduled
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '1 day', 'extra');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'no_such_column', 'placed_at');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'ctid');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'local_time');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00', '2030-05-01 10:00:00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', 'soon');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
-- Bad values: empty identifier, infinite or out-of-range execution
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('', 'customer', 'placed_at');
INSERT INTO shop_orders VALUES (7, '', '2030-05-01 10:00:00+00');
INSERT INTO shop_orders VALUES (7, 'x', 'infinity');
-- prefix and key together too long for the outbox's index
INSERT INTO shop_orders VALUES (7, kairoi_test.incompressible(2689), '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '300 years');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
-- Not AFTER ... FOR EACH ROW
CREATE TRIGGER reminder BEFORE INSERT ON shop_orders
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
CREATE TRIGGER reminder AFTER INSERT ON shop_orders
	FOR EACH STATEMENT EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at');
INSERT INTO shop_orders VALUES (7, 'x', '2030-05-01 10:00:00+00');
DROP TRIGGER reminder ON shop_orders;
-- Not a trigger call at all
SELECT kairoi_job_trigger();

-- None of the errors above scheduled anything or left a row
SELECT kind, identifier, arguments FROM kairoi_pending ORDER BY seq;
SELECT id FROM shop_orders ORDER BY id;

-- As a statement trigger on its transition table: the jobs of all the
-- statement's rows, scheduled by one statement, each as its row trigger
-- would (duplicates: the last wins, in the place of the first)
CREATE TABLE bulk_orders (id int, placed_at timestamptz);
CREATE TRIGGER bulk_reminder AFTER INSERT ON bulk_orders
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION kairoi_job_trigger('bulk.', 'id', 'placed_at', '1 hour');
CREATE TRIGGER bulk_reminder_update AFTER UPDATE ON bulk_orders
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION kairoi_job_trigger('bulk.', 'id', 'placed_at');
INSERT INTO bulk_orders
SELECT i, timestamptz '2030-08-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 3) i;
INSERT INTO bulk_orders VALUES (4, '2030-08-02 00:00:00+00'),
	(4, '2030-08-03 00:00:00.5+00');
UPDATE bulk_orders SET placed_at = placed_at + interval '1 day' WHERE id = 2;
-- a statement that writes no row schedules nothing
INSERT INTO bulk_orders SELECT 5, now() WHERE false;
SELECT identifier, arguments FROM kairoi_pending
WHERE identifier LIKE 'bulk.%' ORDER BY seq;
-- A bad row fails the whole statement, and says which row
INSERT INTO bulk_orders VALUES (6, '2030-08-04 00:00:00+00'), (7, NULL);
INSERT INTO bulk_orders VALUES (8, 'infinity');
SELECT count(*) AS bulk_jobs FROM kairoi_pending WHERE identifier LIKE 'bulk.%';
-- Without a transition table, a statement trigger has no rows to read
CREATE TRIGGER bulk_no_table AFTER INSERT ON bulk_orders
	FOR EACH STATEMENT EXECUTE FUNCTION kairoi_job_trigger('bulk.', 'id', 'placed_at');
INSERT INTO bulk_orders VALUES (9, '2030-08-05 00:00:00+00');
DROP TABLE bulk_orders;

-- Privileges: creating the trigger needs EXECUTE on kairoi_job_trigger;
-- once created, it schedules for whoever writes the table
CREATE ROLE kairoi_test_owner;
CREATE ROLE kairoi_test_writer;
GRANT CREATE ON SCHEMA public TO kairoi_test_owner;
SET ROLE kairoi_test_owner;
CREATE TABLE owned (id int, at timestamptz);
GRANT INSERT ON owned TO kairoi_test_writer;
CREATE TRIGGER reminder AFTER INSERT ON owned
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('owned.', 'id', 'at');
RESET ROLE;
GRANT EXECUTE ON FUNCTION kairoi_job_trigger() TO kairoi_test_owner;
SET ROLE kairoi_test_owner;
CREATE TRIGGER reminder AFTER INSERT ON owned
	FOR EACH ROW EXECUTE FUNCTION kairoi_job_trigger('owned.', 'id', 'at');
SET ROLE kairoi_test_writer;
INSERT INTO owned VALUES (1, '2030-07-01 00:00:00+00');
SELECT kairoi_job_set('direct', '2030-07-01 00:00:00+00');
RESET ROLE;

-- Deliver and compare with what the server stores
\! $KCTL fault refuse=false >/dev/null
SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;

DROP TABLE owned;
DROP TABLE shop_orders;
REVOKE CREATE ON SCHEMA public FROM kairoi_test_owner;
REVOKE EXECUTE ON FUNCTION kairoi_job_trigger() FROM kairoi_test_owner;
DROP ROLE kairoi_test_owner;
DROP ROLE kairoi_test_writer;
TRUNCATE kairoi_test.server_jobs;
RESET timezone;
