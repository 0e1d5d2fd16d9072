#!/bin/bash
# test/integration/postgres_faults.sh: PostgreSQL-side faults.
#
# Each scenario commits jobs while the Kairoi test server cannot take them
# (stalled or refusing), then breaks PostgreSQL in one way, and ends by
# asserting that every committed job is on the server with exactly its
# committed execution time and that the outbox is empty:
#   a. immediate shutdown with entries pending and in flight (plus a
#      prepared transaction committed after the restart, and an open one
#      that must leave nothing)
#   b. SIGKILL of the delivery worker (crash restart), then
#      pg_terminate_backend of the worker
#   c. application transactions holding row locks on pending entries for
#      30 s: everything else is delivered meanwhile
#   e. DROP DATABASE, ALTER DATABASE RENAME and DROP EXTENSION while the
#      worker is busy: not blocked, quiet afterwards, delivery resumes
#   f. fast and smart shutdown while the server stalls
#   d. streaming replica: silent while standby, delivers after promotion
#   g. pg_terminate_backend of the launcher and the worker (on the
#      promoted replica): delivery must resume without a restart
# Prints "N passed, M failed".
set -u
source "$(dirname "$0")/../lib.sh"

DB=app
VERIFY="$PYTHON $KAIROI_ROOT/test/integration/postgres_faults_verify.py"
T_START=$SECONDS

now_ms() { date +%s%3N; }
sql() { psql_at PG "$DB" -c "$1"; }
fault() { $KCTL --port "$SRV_CPORT" fault "$@" >/dev/null; }
outbox_count() { psql_at "${1:-PG}" "$DB" -c "SELECT count(*) FROM kairoi.outbox"; }
outbox_is() { [ "$(outbox_count "${2:-PG}")" = "$1" ]; }
in_flight_positive() {
	local n
	n=$(sql "SELECT in_flight FROM kairoi_status()") && [ "${n:-0}" -gt 0 ]
}
server_field() { # server_field CONTROL_PORT FIELD
	$KCTL --port "$1" counts | $PYTHON -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
postmaster_pid() { head -1 "$PG_DIR/data/postmaster.pid"; }

# schedule PREFIX FROM TO BASE: jobs PREFIX<g> at BASE + g seconds (UTC)
schedule() {
	sql "SELECT count(kairoi_job_set('$1' || g, '$4+00'::timestamptz + g * interval '1 second'))
	     FROM generate_series($2, $3) g"
}

# verify DESCRIPTION PREFIX FROM TO BASE [more helper options]: every job
# PREFIX<g> (g in FROM..TO) on the server with BASE + g seconds, no other
# job with that prefix
verify() {
	local what=$1 prefix=$2 from=$3 to=$4 base=$5
	shift 5
	check "$what" "expected=$((to - from + 1)) matching=$((to - from + 1)) wrong=0 missing=0 extra=0" \
		"$($VERIFY --port "$SRV_CPORT" --prefix "$prefix" --expect "$from:$to:1:$base" --wait 90 "$@")"
}

check_outbox_empty() {
	if wait_for "outbox empty" 60 outbox_is 0 "${2:-PG}"; then
		pass "$1: outbox empty"
	else
		fail "$1: outbox still holds $(outbox_count "${2:-PG}") entries"
	fi
}

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" "max_wal_senders = 4
max_prepared_transactions = 2" || exit 1
# pg_basebackup (d) connects through the local socket
if ! grep -Eq '^local +replication +all +trust' "$PG_DIR/data/pg_hba.conf"; then
	echo 'local replication all trust' >>"$PG_DIR/data/pg_hba.conf"
	psql_at PG postgres -c "SELECT pg_reload_conf()" >/dev/null
fi
psql_at PG postgres -c "CREATE DATABASE $DB" || exit 1
sql "CREATE EXTENSION kairoi" || exit 1
wait_for "worker up" 60 worker_is_up PG "$DB" || exit 1

# ---------------------------------------------------------------------------
# a. Immediate shutdown while committed entries are undelivered
# ---------------------------------------------------------------------------
echo "# a. pg_ctl stop -m immediate with entries pending and in flight"
fault stall=true
check "a: 2000 jobs committed while the server stalls" 2000 "$(schedule a- 1 2000 '2031-01-01 00:00:00')"
if wait_for "requests in flight" 60 in_flight_positive; then
	pass "a: the worker has requests in flight (unanswered) before the crash"
else
	fail "a: the worker never sent anything"
fi
# at the crash, one transaction is prepared (two-phase) and one is open
sql "BEGIN; SELECT kairoi_job_set('a-prepared', '2031-06-01 00:00:00+00'); PREPARE TRANSACTION 'kairoi_a'" >/dev/null
"$PGBIN/psql" -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$DB" >/dev/null 2>&1 <<'EOF' &
BEGIN;
SELECT kairoi_job_set('a-uncommitted', '2031-06-01 00:00:00+00');
SELECT pg_sleep(600);
EOF
OPEN_TX=$!
CLEANUP_PIDS+=("$OPEN_TX")
open_tx_waiting() {
	[ "$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" = 1 ]
}
wait_for "open transaction" 30 open_tx_waiting || fail "a: the open transaction did not start"
check "a: all 2000 still in the outbox" 2000 "$(outbox_count)"
if stop_postgres PG immediate; then pass "a: immediate stop"; else fail "a: immediate stop failed"; fi
kill -KILL "$OPEN_TX" 2>/dev/null
# forget the dead connections (requests read but not executed are dropped)
$KCTL --port "$SRV_CPORT" kick >/dev/null
fault stall=false
check "a: nothing of it reached the server before the crash" \
	"expected=2000 matching=0 wrong=0 missing=2000 extra=0" \
	"$($VERIFY --port "$SRV_CPORT" --prefix a- --expect "1:2000:1:2031-01-01 00:00:00")"
start_postgres PG || exit 1
verify "a: after restart every job is on the server with its committed time" a- 1 2000 '2031-01-01 00:00:00'
check "a: the prepared transaction survived the crash (its entry not yet visible), the open one left nothing" "kairoi_a|0" \
	"$(psql_at PG postgres -c "SELECT gid FROM pg_prepared_xacts")|$(outbox_count)"
sql "COMMIT PREPARED 'kairoi_a'"
check "a: after COMMIT PREPARED (no commit wake-up: the safety poll) every committed job, nothing uncommitted" \
	"expected=2001 matching=2001 wrong=0 missing=0 extra=0" \
	"$($VERIFY --port "$SRV_CPORT" --prefix a- --expect "1:2000:1:2031-01-01 00:00:00" --id 'a-prepared=2031-06-01 00:00:00' --wait 60)"
check_outbox_empty a
check_outbox_invariants PG "$DB" "a (after the immediate stop)"

# ---------------------------------------------------------------------------
# b. The worker killed with SIGKILL
# ---------------------------------------------------------------------------
echo "# b. SIGKILL of the delivery worker"
wait_for "worker up" 60 worker_is_up PG "$DB"
fault stall=true
check "b: 1500 jobs committed while the server stalls" 1500 "$(schedule b- 1 1500 '2032-01-01 00:00:00')"
wait_for "requests in flight" 60 in_flight_positive
OLD_WORKER=$(worker_pid PG "$DB")
OLD_POSTMASTER=$(postmaster_pid)
LOG_OFFSET=$(stat -c %s "$PG_DIR/postgres.log")
kill -KILL "$OLD_WORKER"
new_worker() {
	local pid
	pid=$(worker_pid PG "$DB") && [ -n "$pid" ] && [ "$pid" != "$OLD_WORKER" ]
}
T0=$(now_ms)
if wait_for "a new worker" 90 new_worker; then
	pass "b: crash restart done, a new worker runs (pid $OLD_WORKER -> $(worker_pid PG "$DB"), $(($(now_ms) - T0)) ms)"
else
	fail "b: no new worker after SIGKILL"
fi
check "b: same postmaster (crash restart, not a new server)" "$OLD_POSTMASTER" "$(postmaster_pid)"
NEW_LOG=$(tail -c +"$((LOG_OFFSET + 1))" "$PG_DIR/postgres.log")
check "b: postmaster saw the worker killed by signal 9" 1 \
	"$(grep -c "kairoi worker.*PID $OLD_WORKER.*terminated by signal 9" <<<"$NEW_LOG")"
check "b: postmaster reinitialized" 1 "$(grep -c "all server processes terminated; reinitializing" <<<"$NEW_LOG")"
check "b: the 1500 pending entries survived the crash" 1500 "$(outbox_count)"
$KCTL --port "$SRV_CPORT" kick >/dev/null
fault stall=false
check "b: 500 more jobs committed after the crash" 500 "$(schedule b- 1501 2000 '2032-01-01 00:00:00')"
verify "b: every job (before and after the kill) on the server with its time" b- 1 2000 '2032-01-01 00:00:00'
check_outbox_empty b

# pg_terminate_backend of the worker (an administrator's SIGTERM)
fault stall=true
check "b: 1000 jobs committed while the server stalls" 1000 "$(schedule b2- 1 1000 '2032-06-01 00:00:00')"
wait_for "requests in flight" 60 in_flight_positive
OLD_WORKER=$(worker_pid PG "$DB")
check "b: pg_terminate_backend(worker)" t "$(sql "SELECT pg_terminate_backend($OLD_WORKER)")"
$KCTL --port "$SRV_CPORT" kick >/dev/null
fault stall=false
T0=$(now_ms)
if wait_for "a new worker" 60 new_worker; then
	pass "b: the launcher started a new worker after pg_terminate_backend ($(($(now_ms) - T0)) ms)"
else
	fail "b: no new worker after pg_terminate_backend"
fi
verify "b: every job pending at the termination on the server with its time" b2- 1 1000 '2032-06-01 00:00:00'
check_outbox_empty "b (terminated)"
check_outbox_invariants PG "$DB" "b (after the crash restart)"

# ---------------------------------------------------------------------------
# c. Row locks held by an application for 30 s do not stall delivery
# ---------------------------------------------------------------------------
echo "# c. application row locks held for 30 s"
fault refuse=true
sql "SELECT kairoi_job_set('clock-a', '2033-01-01 00:00:01+00'), kairoi_job_set('clock-b', '2033-01-01 00:00:02+00')" >/dev/null
# lock_a: SELECT ... FOR UPDATE on a pending entry; lock_b: re-schedules a
# pending job (the committed value stays pending, the new one is uncommitted)
lock_session() { # lock_session APPNAME SQL
	PGAPPNAME=$1 "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
		-U postgres -d "$DB" >/dev/null 2>&1 <<EOF &
BEGIN;
$2;
SELECT pg_sleep(30);
COMMIT;
EOF
}
T_LOCK=$(now_ms)
lock_session kairoi_lock_a "SELECT 1 FROM kairoi.pending_jobs WHERE identifier = 'clock-a' FOR UPDATE"
LOCK_A=$!
CLEANUP_PIDS+=("$LOCK_A")
lock_session kairoi_lock_b "SELECT kairoi_job_set('clock-b', '2033-06-01 00:00:00+00')"
LOCK_B=$!
CLEANUP_PIDS+=("$LOCK_B")
locks_sleeping() {
	[ "$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity
		WHERE application_name IN ('kairoi_lock_a', 'kairoi_lock_b')
		  AND wait_event = 'PgSleep' AND state = 'active'")" = 2 ]
}
if wait_for "both lock sessions sleeping" 30 locks_sleeping; then
	pass "c: two application transactions hold row locks on pending entries"
else
	fail "c: lock sessions did not start"
fi
check "c: 2000 jobs committed after the locks were taken" 2000 "$(schedule c- 1 2000 '2033-01-01 00:00:00')"
fault refuse=false
verify "c: all 2000 delivered while the locks are held" c- 1 2000 '2033-01-01 00:00:00'
ELAPSED=$(($(now_ms) - T_LOCK))
echo "# c: 2000 delivered $ELAPSED ms after the locks were taken"
if [ "$ELAPSED" -lt 25000 ] && locks_sleeping && kill -0 "$LOCK_A" 2>/dev/null && kill -0 "$LOCK_B" 2>/dev/null; then
	pass "c: delivered while both locks were still held ($ELAPSED ms < 25 s)"
else
	fail "c: the locks were not held while delivering (elapsed $ELAPSED ms)"
fi
check "c: only the two locked entries are pending" "clock-a clock-b" \
	"$(sql "SELECT string_agg(identifier, ' ' ORDER BY identifier) FROM kairoi.outbox")"
# The worker reads committed values without locking: a locked entry may be
# sent with its committed value, never with the uncommitted replacement,
# and it is not deleted while locked.  It must not be re-sent in a loop:
# at most once per safety poll (kairoi.poll_interval = 1 s here).
CLOCK_B_NOW=$($KCTL --port "$SRV_CPORT" job clock-b 2>/dev/null)
if [ -z "$CLOCK_B_NOW" ] || [ "$CLOCK_B_NOW" = "2033-01-01 00:00:02" ]; then
	pass "c: the uncommitted replacement of clock-b is not on the server ($CLOCK_B_NOW)"
else
	fail "c: clock-b on the server has an uncommitted value: $CLOCK_B_NOW"
fi
ELAPSED=$(($(now_ms) - T_LOCK))
CLOCK_SENDS=$("$PYTHON" - "$SRV_CPORT" "$KAIROI_ROOT/test" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from kairoi_ctl import Control
with Control('127.0.0.1', int(sys.argv[1])) as c:
    print(sum(1 for r in c.requests() if r['args'][2:3] in (['clock-a'], ['clock-b'])))
PY
)
if [ "$CLOCK_SENDS" -le $((2 * (ELAPSED / 1000 + 2))) ]; then
	pass "c: locked entries sent $CLOCK_SENDS times in $ELAPSED ms: no resend loop"
else
	fail "c: locked entries sent $CLOCK_SENDS times in $ELAPSED ms: resend loop"
fi
locks_gone() { ! kill -0 "$LOCK_A" 2>/dev/null && ! kill -0 "$LOCK_B" 2>/dev/null; }
if wait_for "lock sessions to commit" 60 locks_gone; then
	wait "$LOCK_A"
	RC_A=$?
	wait "$LOCK_B"
	RC_B=$?
	check "c: lock sessions committed after holding the locks" "0 0" "$RC_A $RC_B"
else
	fail "c: lock sessions still running"
fi
echo "# c: locks released $(($(now_ms) - T_LOCK)) ms after they were taken"
check "c: locked entries delivered after release (clock-b with the value committed last)" \
	"expected=2 matching=2 wrong=0 missing=0 extra=0" \
	"$($VERIFY --port "$SRV_CPORT" --prefix clock- --id 'clock-a=2033-01-01 00:00:01' \
		--id 'clock-b=2033-06-01 00:00:00' --wait 60)"
echo "# c: locked entries delivered $(($(now_ms) - T_LOCK)) ms after the locks were taken"
check_outbox_empty c
kill -KILL "$LOCK_A" "$LOCK_B" 2>/dev/null

# completes_promptly LABEL COMMAND...: the command succeeds within 15 s
# (the worker must not block it)
completes_promptly() {
	local label=$1 t0 t
	shift
	t0=$(now_ms)
	if "$@"; then
		t=$(($(now_ms) - t0))
		if [ "$t" -lt 15000 ]; then pass "$label completed in $t ms"; else fail "$label took $t ms"; fi
	else
		fail "$label failed"
	fi
}

# ---------------------------------------------------------------------------
# e. DROP DATABASE / DROP EXTENSION while the worker is busy
# ---------------------------------------------------------------------------
echo "# e. DROP DATABASE and DROP EXTENSION while delivering"
POSTMASTER=$(postmaster_pid)
server_has_some() { # server_has_some PREFIX: at least one such job delivered
	$VERIFY --port "$SRV_CPORT" --prefix "$1" | grep -qv ' extra=0$'
}
# kairoi_status() as seen by its C function while the extension is absent:
# the function and the relations its summary queries read exist only
# inside this rolled-back transaction.
worker_state_without_extension() {
	psql_at PG "$DB" <<'EOF'
BEGIN;
CREATE SCHEMA kairoi;
CREATE TABLE kairoi.pending_jobs (seq bigint, enqueued_at timestamptz);
CREATE TABLE kairoi.pending_rules (LIKE kairoi.pending_jobs);
CREATE TABLE kairoi.failed ();
CREATE SEQUENCE kairoi.outbox_seq;
CREATE TABLE kairoi.origin AS SELECT oid AS database FROM pg_database
	WHERE datname = current_database();
CREATE FUNCTION pg_temp.status_probe(OUT worker_pid integer, OUT state text,
	OUT server text, OUT database name, OUT in_flight integer,
	OUT acknowledged bigint, OUT connection_attempts bigint,
	OUT connected_at timestamptz, OUT last_error text,
	OUT last_error_at timestamptz, OUT pending bigint, OUT failed bigint,
	OUT oldest_pending_age interval)
RETURNS record AS 'kairoi', 'kairoi_status' LANGUAGE C;
SELECT worker_pid IS NOT NULL, state FROM pg_temp.status_probe();
ROLLBACK;
EOF
}
# quiet_log DESCRIPTION SECONDS: kairoi log lines over that much real time
quiet_log() {
	local offset lines
	offset=$(stat -c %s "$PG_DIR/postgres.log")
	sleep "$2"
	lines=$(tail -c +"$((offset + 1))" "$PG_DIR/postgres.log" | grep -i kairoi)
	check "$1: no kairoi log line in $2 s" 0 "$(grep -c . <<<"$lines")"
	[ -n "$lines" ] && echo "$lines" | head -5
	return 0
}

fault slow_read=20000
check "e: 5000 jobs committed (slow server: delivery takes ~10 s)" 5000 \
	"$(schedule e1- 1 5000 '2034-01-01 00:00:00')"
wait_for "delivery under way" 60 server_has_some e1-
wait_for "requests in flight" 60 in_flight_positive
OLD_WORKER=$(worker_pid PG "$DB")
echo "# e: worker $OLD_WORKER busy: $(sql "SELECT in_flight || ' in flight, ' || pending || ' pending' FROM kairoi_status()")"
LOG_OFFSET=$(stat -c %s "$PG_DIR/postgres.log")
completes_promptly "e: DROP DATABASE" psql_at PG postgres -c "DROP DATABASE $DB"
# The worker ends through die() on SIGTERM: one FATAL "terminating
# background worker" line is its normal exit notice; nothing else may say
# ERROR/FATAL/PANIC about kairoi.
DROP_LOG=$(tail -c +"$((LOG_OFFSET + 1))" "$PG_DIR/postgres.log" | grep -i kairoi)
check "e: DROP DATABASE: at most one worker termination notice" 1 \
	"$(($(grep -c 'terminating background worker "kairoi worker" due to administrator command' <<<"$DROP_LOG") <= 1))"
check "e: DROP DATABASE: no other kairoi ERROR/FATAL/PANIC line" 0 \
	"$(grep -v 'terminating background worker "kairoi worker" due to administrator command' <<<"$DROP_LOG" |
		grep -Ec 'ERROR|FATAL|PANIC')"
fault slow_read=null
E1=$($VERIFY --port "$SRV_CPORT" --prefix e1- --expect "1:5000:1:2034-01-01 00:00:00")
echo "# e: before the drop: $E1 (the rest was dropped with the database)"
check "e: what arrived before the drop has its committed time" "wrong=0 extra=0" \
	"$(grep -o 'wrong=[0-9]* ' <<<"$E1")$(grep -o 'extra=[0-9]*' <<<"$E1")"
quiet_log "e: launcher waits quietly for the dropped database" 5
check "e: the launcher still runs" 1 \
	"$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi launcher'")"
check "e: no worker while the database is gone" 0 \
	"$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker'")"
psql_at PG postgres -c "CREATE DATABASE $DB" && sql "CREATE EXTENSION kairoi" ||
	fail "e: could not re-create the database"
check "e: 1000 jobs committed in the re-created database" 1000 "$(schedule e2- 1 1000 '2034-06-01 00:00:00')"
verify "e: delivery resumed after re-creating the database" e2- 1 1000 '2034-06-01 00:00:00'
check_outbox_empty "e (re-created database)"
check "e: without a server restart" "$POSTMASTER" "$(postmaster_pid)"

# ALTER DATABASE ... RENAME of the worker's database is not blocked either
fault stall=true
check "e: 500 jobs committed while the server stalls" 500 "$(schedule e2b- 1 500 '2034-07-01 00:00:00')"
wait_for "requests in flight" 60 in_flight_positive
completes_promptly "e: ALTER DATABASE RENAME" psql_at PG postgres -c "ALTER DATABASE $DB RENAME TO ${DB}_renamed"
$KCTL --port "$SRV_CPORT" kick >/dev/null
fault stall=false
workers_in() {
	psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker' AND datname = '$1'"
}
serves() { [ "$(workers_in "$1")" = 1 ]; }
no_worker() {
	[ "$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker'")" = 0 ]
}
if wait_for "worker of the renamed database" 30 serves "${DB}_renamed"; then
	pass "e: a worker serves the database under its new name"
else
	fail "e: no worker for the renamed database"
fi
verify "e: the entries pending at the rename delivered" e2b- 1 500 '2034-07-01 00:00:00'
psql_at PG postgres -c "ALTER DATABASE ${DB}_renamed RENAME TO $DB" || fail "e: could not rename back"
wait_for "worker of the database renamed back" 30 serves "$DB"
check_outbox_empty "e (renamed back)"

# DROP EXTENSION while delivering
fault slow_read=20000
check "e: 5000 jobs committed (slow server)" 5000 "$(schedule e3- 1 5000 '2034-09-01 00:00:00')"
wait_for "delivery under way" 60 server_has_some e3-
wait_for "requests in flight" 60 in_flight_positive
WORKER=$(worker_pid PG "$DB")
LOG_OFFSET=$(stat -c %s "$PG_DIR/postgres.log")
completes_promptly "e: DROP EXTENSION" sql "DROP EXTENSION kairoi"
fault slow_read=null
if wait_for "worker gone" 30 no_worker; then
	pass "e: the worker exits after DROP EXTENSION"
else
	fail "e: a worker still runs after DROP EXTENSION"
fi
check "e: kairoi_status() says no worker serves the database" \
	"f|not running: the launcher has not started a worker for this database yet" \
	"$(worker_state_without_extension)"
DROP_LOG=$(tail -c +"$((LOG_OFFSET + 1))" "$PG_DIR/postgres.log" | grep -i kairoi)
[ -n "$DROP_LOG" ] && echo "$DROP_LOG" | sed 's/^/#   /'
check "e: DROP EXTENSION: no kairoi ERROR/FATAL/PANIC line" 0 "$(grep -Ec 'ERROR|FATAL|PANIC' <<<"$DROP_LOG")"
check "e: DROP EXTENSION: the worker's exit, and at most one more kairoi message (a transaction racing the drop)" 1 \
	"$(($(grep -Ec '(LOG|WARNING): +kairoi' <<<"$DROP_LOG") <= 2))"
check "e: DROP EXTENSION: the worker says why it exits" 1 \
	"$(grep -c 'extension is not installed in database' <<<"$DROP_LOG")"
no_connection() { [ "$(server_field "$SRV_CPORT" connections)" = 0 ]; }
if wait_for "worker disconnected" 30 no_connection; then
	pass "e: no connection to the server is left"
else
	fail "e: still $(server_field "$SRV_CPORT" connections) connection(s) to the server"
fi
check "e: worker $WORKER is gone" 0 "$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $WORKER")"
quiet_log "e: the launcher stays quiet after the worker left" 3
E3=$($VERIFY --port "$SRV_CPORT" --prefix e3- --expect "1:5000:1:2034-09-01 00:00:00")
echo "# e: before DROP EXTENSION: $E3 (the rest was dropped with the outbox)"
check "e: what arrived before DROP EXTENSION has its committed time" "wrong=0 extra=0" \
	"$(grep -o 'wrong=[0-9]* ' <<<"$E3")$(grep -o 'extra=[0-9]*' <<<"$E3")"
sql "CREATE EXTENSION kairoi" || fail "e: CREATE EXTENSION failed"
check "e: 1000 jobs committed after CREATE EXTENSION" 1000 "$(schedule e4- 1 1000 '2034-12-01 00:00:00')"
verify "e: delivery resumed after CREATE EXTENSION" e4- 1 1000 '2034-12-01 00:00:00'
check_outbox_empty "e (extension re-created)"
check "e: still without a server restart" "$POSTMASTER" "$(postmaster_pid)"

# ---------------------------------------------------------------------------
# f. Fast shutdown while the server stalls
# ---------------------------------------------------------------------------
echo "# f. pg_ctl stop (fast, then smart) with a stalled server"
# shutdown_while_stalled MODE PREFIX TIME: stop while requests are in
# flight to a stalled server, restart, check everything is delivered.
# A smart shutdown waits for client sessions only, never for the worker.
shutdown_while_stalled() {
	local mode=$1 prefix=$2 time=$3 t0 t
	wait_for "worker up" 60 worker_is_up PG "$DB"
	fault stall=true
	check "f: 1000 jobs committed while the server stalls ($mode)" 1000 \
		"$(schedule "$prefix" 1 1000 "$time")"
	wait_for "requests in flight" 60 in_flight_positive
	t0=$(now_ms)
	if stop_postgres PG "$mode"; then
		t=$(($(now_ms) - t0))
		if [ "$t" -lt 10000 ]; then pass "f: $mode shutdown completed in $t ms"; else fail "f: $mode shutdown took $t ms"; fi
	else
		fail "f: $mode shutdown failed"
	fi
	check "f: shut down cleanly ($mode)" 1 "$(tail -3 "$PG_DIR/postgres.log" | grep -c 'database system is shut down')"
	$KCTL --port "$SRV_CPORT" kick >/dev/null
	fault stall=false
	start_postgres PG || exit 1
	verify "f: after the $mode shutdown every job on the server with its time" "$prefix" 1 1000 "$time"
	check_outbox_empty "f ($mode)"
}
shutdown_while_stalled fast f- '2035-01-01 00:00:00'
shutdown_while_stalled smart f2- '2035-06-01 00:00:00'
check_outbox_invariants PG "$DB" "f (after fast and smart shutdowns)"

# ---------------------------------------------------------------------------
# d. Streaming replica: nothing sent while standby, everything after promotion
# ---------------------------------------------------------------------------
echo "# d. streaming replica"
start_server SRV2 || exit 1
R_DIR=$(make_temp_dir)
R_HOST=$R_DIR
R_PORT=$(free_port)
CLUSTER_DIRS+=("$R_DIR")
if as_postgres "$PGBIN/pg_basebackup" -D "$R_DIR/data" -R -X stream -c fast \
	-h "$PG_HOST" -p "$PG_PORT" -U postgres >"$R_DIR/basebackup.log" 2>&1; then
	pass "d: pg_basebackup"
else
	cat "$R_DIR/basebackup.log"
	fail "d: pg_basebackup failed"
fi
cat >>"$R_DIR/data/postgresql.conf" <<EOF
port = $R_PORT
unix_socket_directories = '$R_DIR'
kairoi.server = '127.0.0.1:$SRV2_PORT'
hot_standby = on
EOF
start_postgres R || exit 1
check "d: the replica is in recovery" t "$(psql_at R postgres -c "SELECT pg_is_in_recovery()")"
fault refuse=true
check "d: 2000 jobs committed on the primary while its server refuses" 2000 \
	"$(schedule d- 1 2000 '2036-01-01 00:00:00')"
check "d: primary outbox holds them" 2000 "$(outbox_count)"
if wait_for "replica replayed the outbox" 60 outbox_is 2000 R; then
	pass "d: the replica replayed the 2000 outbox entries"
else
	fail "d: replica outbox holds $(outbox_count R)"
fi
STANDBY_STATE=$(psql_at R "$DB" -c "SELECT coalesce(worker_pid::text, 'none') || ' ' || state FROM kairoi_status()")
check "d: kairoi_status on the standby" "none not running: hot standby (the worker starts on promotion)" "$STANDBY_STATE"
check "d: no kairoi process on the standby" 0 \
	"$(psql_at R postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'kairoi%'")"
# real time is the scenario: give a misbehaving standby several poll
# intervals (kairoi.poll_interval = 1 s) to connect
sleep 3
check "d: the replica's server got no connection while standby" 0 "$(server_field "$SRV2_CPORT" accepted)"
# amcheck was created on the primary (a) and replicated
check_outbox_invariants R "$DB" "d (hot standby)"
check_outbox_invariants PG "$DB" "d (primary)"
stop_postgres PG immediate || fail "d: could not stop the primary"
check "d: still no connection after the primary stopped" 0 "$(server_field "$SRV2_CPORT" accepted)"
if as_postgres "$PGBIN/pg_ctl" -D "$R_DIR/data" -w -t 60 promote >/dev/null; then
	pass "d: replica promoted"
else
	fail "d: promotion failed"
fi
SRV_CPORT_PRIMARY=$SRV_CPORT
SRV_CPORT=$SRV2_CPORT verify "d: the promoted replica delivered every job with its time" d- 1 2000 '2036-01-01 00:00:00'
check "d: exactly those 2000 on the replica's server" 2000 "$(server_field "$SRV2_CPORT" jobs)"
check_outbox_empty d R
check_outbox_invariants R "$DB" "d (promoted replica)"
check "d: kairoi_status on the promoted replica" "connected 127.0.0.1:$SRV2_PORT" \
	"$(psql_at R "$DB" -c "SELECT state || ' ' || server FROM kairoi_status()")"
check "d: nothing of it reached the primary's server" \
	"expected=2000 matching=0 wrong=0 missing=2000 extra=0" \
	"$($VERIFY --port "$SRV_CPORT_PRIMARY" --prefix d- --expect "1:2000:1:2036-01-01 00:00:00")"

# ---------------------------------------------------------------------------
# g. An administrator terminates every kairoi process (launcher included)
# ---------------------------------------------------------------------------
# e.g. "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <>
# pg_backend_pid()" before maintenance.  Runs on the promoted replica.
echo "# g. pg_terminate_backend of the launcher and the worker"
R_POSTMASTER=$(head -1 "$R_DIR/data/postmaster.pid")
check "g: both kairoi processes terminated" "true true" \
	"$(psql_at R postgres -c "SELECT string_agg(pg_terminate_backend(pid)::text, ' ')
		FROM pg_stat_activity WHERE backend_type IN ('kairoi launcher', 'kairoi worker')")"
check "g: 500 jobs committed after the termination" 500 \
	"$(psql_at R "$DB" -c "SELECT count(kairoi_job_set('g-' || g, '2037-01-01 00:00:00+00'::timestamptz + g * interval '1 second'))
		FROM generate_series(1, 500) g")"
r_worker_up() { worker_is_up R "$DB"; }
T0=$(now_ms)
# the launcher's bgw_restart_time is 10 s
if wait_for "a worker again" 45 r_worker_up; then
	pass "g: a worker runs again ($(($(now_ms) - T0)) ms)"
	G_WAIT=90
else
	fail "g: no kairoi worker 45 s after pg_terminate_backend: $(psql_at R "$DB" -c "SELECT state FROM kairoi_status()");" \
		"processes: [$(psql_at R postgres -c "SELECT string_agg(backend_type, ',') FROM pg_stat_activity WHERE backend_type LIKE 'kairoi%'")]"
	G_WAIT=0
fi
check "g: the jobs committed after the termination delivered" "expected=500 matching=500 wrong=0 missing=0 extra=0" \
	"$($VERIFY --port "$SRV2_CPORT" --prefix g- --expect "1:500:1:2037-01-01 00:00:00" --wait "$G_WAIT")"
check "g: without a server restart" "$R_POSTMASTER" "$(head -1 "$R_DIR/data/postmaster.pid")"

check_outbox_invariants R "$DB" "g (promoted replica, at the end)"

echo "# runtime $((SECONDS - T_START)) s"
finish
