-- Scheduling from a trigger: an AFTER INSERT trigger on orders schedules a
-- reminder job per order, in the inserting transaction.
\! $KCTL reset >/dev/null
SET timezone = 'UTC';

CREATE TABLE orders (
	id			int PRIMARY KEY,
	customer	text NOT NULL,
	placed_at	timestamptz NOT NULL
);

CREATE FUNCTION schedule_order_reminder() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM kairoi_job_set('order-reminder-' || NEW.id,
						   NEW.placed_at + interval '1 day');
	RETURN NULL;
END;
$$;

CREATE TRIGGER orders_reminder AFTER INSERT ON orders
	FOR EACH ROW EXECUTE FUNCTION schedule_order_reminder();

SELECT kairoi_rule_set_shell('order reminders', 'order-reminder-',
							 '/opt/shop/remind.sh');
INSERT INTO orders VALUES
	(1, 'ada', '2030-05-01 10:00:00+00'),
	(2, 'grace', '2030-05-01 11:30:00.25+00');
INSERT INTO orders VALUES (3, 'linus', '2030-05-02 09:00:00+00');

-- A failed insert schedules nothing
BEGIN;
INSERT INTO orders VALUES (4, 'rolled back', '2030-05-03 09:00:00+00');
ROLLBACK;
INSERT INTO orders VALUES (3, 'duplicate key', '2030-05-04 09:00:00+00');

SELECT kairoi_flush('30 seconds');
\copy kairoi_test.server_jobs FROM PROGRAM '$KSERVER jobs' WITH (FORMAT csv)
SELECT identifier, execution FROM kairoi_test.server_jobs ORDER BY identifier;
\copy kairoi_test.server_rules FROM PROGRAM '$KSERVER rules' WITH (FORMAT csv)
SELECT identifier, pattern, runner, arguments FROM kairoi_test.server_rules;

DROP TABLE orders;
DROP FUNCTION schedule_order_reminder();
TRUNCATE kairoi_test.server_jobs, kairoi_test.server_rules;
RESET timezone;
