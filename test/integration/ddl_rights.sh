#!/bin/bash
# test/integration/ddl_rights.sh: the utility hook stops a database's
# worker only for statements that PostgreSQL will allow, and a pause never
# outlives the session that set it.
#
#   1. A role with no privileges, connected to postgres, loops for 8 s over
#      DROP DATABASE, ALTER DATABASE ... RENAME and SET TABLESPACE, and
#      CREATE DATABASE ... TEMPLATE of appdb: each is refused, and
#      meanwhile appdb's jobs are delivered by the same worker, never
#      signalled (its pid and its count of connection attempts stay).
#   2. Statements refused for other reasons: the owner without CREATEDB
#      renaming; DROP DATABASE, SET TABLESPACE and CREATE DATABASE in a
#      transaction block, and DROP DATABASE from a function; dropping the
#      database one is connected to.  The worker is not stopped.
#   3. Allowed statements still get the worker out of the way: the owner,
#      given CREATEDB, renames appdb and copies it (WITH TEMPLATE), and
#      the worker comes back for the renamed database.
#   4. A superuser's DROP DATABASE, waiting for a session that stays
#      connected, is terminated (FATAL, which runs no PG_FINALLY): the
#      worker is started again at once.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S || exit 1
start_cluster PG "$S_PORT" || exit 1
sql() { psql_at PG "$@"; }
ctl() { $KCTL --port "$S_CPORT" "$@"; }

sql postgres -c "CREATE ROLE nobody LOGIN" -c "CREATE ROLE appowner LOGIN" \
	-c "CREATE DATABASE appdb OWNER appowner" || exit 1
sql appdb -c "CREATE EXTENSION kairoi" || exit 1
wait_for "appdb's worker" 30 worker_is_up PG appdb || exit 1

worker_pid_of() { sql "$1" -c "SELECT worker_pid FROM kairoi_status()"; }
# connections the test server accepted: a restarted worker connects anew
accepted() { ctl counts | sed -n 's/.*"accepted": \([0-9]*\).*/\1/p'; }
refused() {
	local who=$1 db=$2
	shift 2
	if psql_at PG "$db" -c "SET ROLE $who" "$@" >/dev/null 2>&1; then
		fail "refused: $*"
	fi
}

echo "# 1. a role with no privileges, in a loop"
pid=$(worker_pid_of appdb)
connections=$(accepted)
(
	end=$((SECONDS + 8))
	while [ $SECONDS -lt $end ]; do
		for statement in "DROP DATABASE appdb" "ALTER DATABASE appdb RENAME TO elsewhere" \
			"ALTER DATABASE appdb SET TABLESPACE pg_default" "CREATE DATABASE copy TEMPLATE appdb"; do
			psql_at PG postgres -c "SET ROLE nobody" -c "$statement" >/dev/null 2>&1 &&
				echo "not refused: $statement"
		done
	done
) >"$PG_DIR/loop.log" &
loop=$!
CLEANUP_PIDS+=("$loop")
delivered_during=0
for batch in 1 2 3 4; do
	sql appdb -c "SELECT kairoi_job_set('loop-$batch-' || i, '2030-01-01') FROM generate_series(1, 500) i" \
		-c "SELECT kairoi_flush('6 seconds')" >/dev/null && delivered_during=$((delivered_during + 500))
done
loop_running=$(kill -0 "$loop" 2>/dev/null && echo yes)
wait "$loop"
check "2,000 jobs delivered while the loop ran" "2000 yes" "$delivered_during $loop_running"
check "every statement of the loop was refused" "" "$(cat "$PG_DIR/loop.log")"
check "the same worker, never signalled" "$pid" "$(worker_pid_of appdb)"
check "no new connection to the server" "$connections" "$(accepted)"
check "the jobs are on the server" 2000 "$(ctl count-jobs)"

echo "# 2. statements that PostgreSQL refuses for another reason"
refused appowner postgres -c "ALTER DATABASE appdb RENAME TO elsewhere"
refused postgres postgres -c "BEGIN" -c "DROP DATABASE appdb"
refused postgres postgres -c "BEGIN" -c "ALTER DATABASE appdb SET TABLESPACE pg_default"
refused postgres postgres -c "BEGIN" -c "CREATE DATABASE copy TEMPLATE appdb"
refused postgres postgres -c "CREATE FUNCTION drop_appdb() RETURNS void LANGUAGE plpgsql
	AS 'BEGIN DROP DATABASE appdb; END'" -c "SELECT drop_appdb()"
refused postgres appdb -c "DROP DATABASE appdb"
refused nobody postgres -c "DROP DATABASE IF EXISTS appdb"
sql appdb -c "SELECT kairoi_job_set('after-refusals', '2030-01-01')" \
	-c "SELECT kairoi_flush('10 seconds')" >/dev/null &&
	pass "delivery goes on" || fail "no delivery after the refused statements"
check "the same worker after the refused statements" "$pid" "$(worker_pid_of appdb)"

echo "# 3. allowed statements still stop the worker first"
sql postgres -c "ALTER ROLE appowner CREATEDB" || exit 1
psql_at PG postgres -c "SET ROLE appowner" -c "CREATE DATABASE appcopy TEMPLATE appdb" >/dev/null &&
	pass "the owner copies appdb" || fail "the owner could not copy appdb"
psql_at PG postgres -c "SET ROLE appowner" -c "ALTER DATABASE appdb RENAME TO renamed" >/dev/null &&
	pass "the owner renames appdb" || fail "the owner could not rename appdb"
wait_for "renamed's worker" 30 worker_is_up PG renamed &&
	pass "the worker comes back for the renamed database" || fail "no worker for the renamed database"
sql renamed -c "SELECT kairoi_job_set('renamed-1', '2030-01-01')" \
	-c "SELECT kairoi_flush('10 seconds')" >/dev/null &&
	pass "the renamed database delivers" || fail "the renamed database does not deliver"

echo "# 4. a pausing session terminated while it waits"
# a session that stays connected: DROP DATABASE waits 5 s for it
psql_at PG renamed -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
holder=$!
CLEANUP_PIDS+=("$holder")
holding() { [ "$(sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'renamed' AND query LIKE '%pg_sleep%'")" = 1 ]; }
wait_for "the holding session" 10 holding || exit 1
psql_at PG postgres -c "SET application_name = 'dropper'" -c "DROP DATABASE renamed" >/dev/null 2>&1 &
dropper=$!
CLEANUP_PIDS+=("$dropper")
# from another database: DROP DATABASE keeps new sessions out of renamed
no_worker() {
	[ "$(sql postgres -c "SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'kairoi worker' AND datname = 'renamed'")" = 0 ]
}
wait_for "the worker stopped for DROP DATABASE" 10 no_worker &&
	pass "DROP DATABASE stops the worker" || fail "DROP DATABASE did not stop the worker"
sql postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dropper'" >/dev/null
wait "$dropper"
wait_for "the worker back after the terminated DROP DATABASE" 10 worker_is_up PG renamed &&
	pass "the worker restarts once the dropping session is gone" ||
	fail "the worker stays paused after its session died: $(sql renamed -c "SELECT state FROM kairoi_status()")"
kill "$holder" 2>/dev/null
sql renamed -c "SELECT kairoi_job_set('after-terminate', '2030-01-01')" \
	-c "SELECT kairoi_flush('10 seconds')" >/dev/null &&
	pass "and delivers" || fail "no delivery after the terminated DROP DATABASE"

check_outbox_invariants PG renamed
stop_postgres PG fast
finish
