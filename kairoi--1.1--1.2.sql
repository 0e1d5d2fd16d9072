/* kairoi--1.1--1.2.sql: upgrade from 1.1 to 1.2 */

\echo Use "ALTER EXTENSION kairoi UPDATE TO '1.2'" to load this file. \quit

/*
 * There is no kairoi--1.2.sql: CREATE EXTENSION kairoi installs 1.0 and
 * runs the upgrade scripts, so that a fresh 1.2 and an upgraded 1.0 or 1.1
 * are the same by construction (test/integration/upgrade.sh).
 */

/* ---- Logical replication: kairoi's tables are node-local ---- */

/*
 * A publication FOR ALL TABLES includes kairoi.outbox and kairoi.failed.
 * On a subscriber, the rows logical replication applies to them are
 * skipped: each node delivers what was scheduled on it, as sequences are
 * not replicated (their seq and id would collide with the subscriber's
 * own, and the publisher's deletes would remove the subscriber's entries).
 * The function returns NULL in a logical replication worker (apply,
 * tablesync, parallel apply) and the row unchanged anywhere else.
 *
 * ENABLE REPLICA: the triggers fire only under session_replication_role =
 * replica, which those workers set; ordinary sessions and the delivery
 * worker (which pins origin) never call the function.  A replicated
 * TRUNCATE fires no row trigger: it is not skipped (src/logical_replication.c).
 */
CREATE FUNCTION kairoi._skip_replicated_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kairoi_skip_replicated_change'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION kairoi._skip_replicated_change() FROM PUBLIC;

CREATE TRIGGER skip_replicated_change
	BEFORE INSERT OR UPDATE OR DELETE ON kairoi.outbox
	FOR EACH ROW EXECUTE FUNCTION kairoi._skip_replicated_change();
ALTER TABLE kairoi.outbox ENABLE REPLICA TRIGGER skip_replicated_change;

CREATE TRIGGER skip_replicated_change
	BEFORE INSERT OR UPDATE OR DELETE ON kairoi.failed
	FOR EACH ROW EXECUTE FUNCTION kairoi._skip_replicated_change();
ALTER TABLE kairoi.failed ENABLE REPLICA TRIGGER skip_replicated_change;
