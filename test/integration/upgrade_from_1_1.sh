#!/bin/bash
# test/integration/upgrade_from_1_1.sh: the upgrade from 1.1 as an operator
# does it, with 1.1's own library delivering until PostgreSQL restarts.
#
# In a relocated copy of this machine's PostgreSQL (test/lib.sh), the
# previous release (test/previous-release), built from its sources, runs a
# 1.1 database: jobs acknowledged by the server (delivered, deleted),
# an entry moved to kairoi_failed, one rejected once and waiting for its
# retry, requests in flight that the stalled server read and never
# answered, and pending entries behind them.  PostgreSQL stops (fast) in
# the middle of that.  Then the current library is installed over it and
# PostgreSQL starts: while the extension is still 1.1 the worker delivers
# nothing and says why, and the application keeps scheduling.  ALTER
# EXTENSION kairoi UPDATE then moves every entry into 1.2's queue
# unchanged (places, versions, times, attempts), and exactly the values
# pending and in flight at the restart, and those scheduled since, are
# delivered; nothing acknowledged before the upgrade is sent again; the
# failed entry stays failed until retried.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

PREVIOUS=$(cut -d' ' -f1 "$KAIROI_ROOT/test/previous-release")
SOURCES=$(make_temp_dir)
previous_release_sources "$SOURCES" || {
	fail "the sources of $PREVIOUS"
	finish
	exit 1
}
relocated_postgres
make -C "$SOURCES" -s PG_CONFIG="$COPY_PG_CONFIG" install >"$SOURCES/build.log" 2>&1 || {
	fail "build and install $PREVIOUS"
	tail -20 "$SOURCES/build.log"
	finish
	exit 1
}
pass "$PREVIOUS built and installed in a copy of PostgreSQL"
PGBIN=$COPY_PGBIN

start_server S || exit 1
ctl() { $KCTL --port "$S_CPORT" "$@"; }
start_cluster PG "$S_PORT" "kairoi.max_attempts = 3
kairoi.max_in_flight = 50
kairoi.request_timeout = 600000" || exit 1
sql() { psql_at PG app "$@"; }
sql_is() { [ "$(sql -c "$2")" = "$1" ]; }
psql_at PG postgres -c "CREATE DATABASE app" || exit 1
sql -c "CREATE EXTENSION kairoi" || exit 1
check "the extension is $PREVIOUS's 1.1" "1.1" \
	"$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
wait_for "app's worker" 30 worker_is_up PG app || exit 1

# Acknowledged: 100 jobs and a rule, delivered and deleted by 1.1's worker
sql -c "SELECT kairoi_rule_set_shell('acked rule', 'acked-', '/opt/run.sh')" \
	-c "SELECT kairoi_job_set('acked-' || i, '2030-01-01 00:00:00+00') FROM generate_series(1, 100) i" \
	-c "SELECT kairoi_flush('30 s')" >/dev/null || fail "1.1: the acknowledged jobs"

# Failed after three answers of ERROR; then one rejected once, waiting for
# a retry 5 s later
ctl fault 'error_ids=["failed-1", "retrying-1"]' >/dev/null
sql -c "SELECT kairoi_job_set('failed-1', '2031-01-01 00:00:00+00')" >/dev/null
wait_for "failed-1 in kairoi_failed" 30 sql_is 1 "SELECT count(*) FROM kairoi_failed" &&
	pass "1.1: an entry moved to kairoi_failed" || fail "1.1: nothing in kairoi_failed"
psql_at PG postgres -c "ALTER SYSTEM SET kairoi.backoff_min = 5000" \
	-c "SELECT pg_reload_conf()" >/dev/null
sql -c "SELECT kairoi_job_set('retrying-1', '2031-02-01 00:00:00+00')" >/dev/null
wait_for "retrying-1 rejected once" 30 sql_is 1 \
	"SELECT attempts FROM kairoi_pending WHERE identifier = 'retrying-1'" &&
	pass "1.1: an entry rejected once, waiting for its retry" || fail "1.1: retrying-1 not rejected"

# In flight: the server reads and does not answer; 50 requests (the window)
# go out, the rest waits behind them
ctl fault 'error_ids=[]' stall=true >/dev/null
sql -c "SELECT kairoi_job_set('flight-' || i, '2032-01-01 00:00:00+00'::timestamptz + i * interval '1 s')
	FROM generate_series(1, 80) i" \
	-c "SELECT kairoi_rule_set_amqp('late rule', 'flight-', 'amqp://h/v', 'ex', 'key')" >/dev/null
wait_for "the window in flight" 30 sql_is 50 "SELECT in_flight FROM kairoi_status()" &&
	pass "1.1: 50 requests in flight, unanswered" || fail "1.1: $(sql -c "SELECT in_flight FROM kairoi_status()") in flight"
# the queue as 1.1 holds it, and what the server received so far
QUEUE_SQL="SELECT seq, kind, to_json(identifier), to_json(arguments), version, enqueued_at,
	attempts, next_attempt_at IS NOT NULL, last_error FROM kairoi.outbox ORDER BY seq"
sql -c "$QUEUE_SQL" >"$SOURCES/queue_1_1"
sql -c "SELECT id, kind, identifier, arguments, version, attempts FROM kairoi.failed" >"$SOURCES/failed_1_1"
check "1.1: 82 entries left (80 jobs, the rule, retrying-1)" 82 "$(grep -c . "$SOURCES/queue_1_1")"
stop_postgres PG fast || exit 1
pass "PostgreSQL stopped with requests in flight"

# The current library, installed over the previous one; PostgreSQL restarts
make -C "$KAIROI_ROOT" -s PG_CONFIG="$COPY_PG_CONFIG" install >"$SOURCES/install.log" 2>&1 &&
	pass "the current library installed over $PREVIOUS" || {
	fail "install the current library"
	tail -20 "$SOURCES/install.log"
}
ctl fault stall=false >/dev/null
# connections the server accepted: none is made until the update
accepted() { ctl counts | sed -n 's/.*"accepted": \([0-9]*\).*/\1/p'; }
ACCEPTED=$(accepted)
start_postgres PG || exit 1
waiting="not delivering: run ALTER EXTENSION kairoi UPDATE in this database"
wait_for "the worker waiting for the update" 30 sql_is "$waiting" "SELECT state FROM kairoi_status()" &&
	pass "the new library delivers nothing while the extension is 1.1, and says so" ||
	fail "state under 1.1: $(sql -c "SELECT state FROM kairoi_status()")"
sql -c "SELECT kairoi_job_set('window-' || i, '2033-01-01 00:00:00+00') FROM generate_series(1, 10) i" \
	-c "SELECT kairoi_job_set('flight-1', '2034-01-01 00:00:00+00')" >/dev/null &&
	pass "applications schedule meanwhile, also replacing an entry that was in flight" ||
	fail "scheduling under 1.1 with the new library"
sleep 2
check "no connection to the server meanwhile" "$ACCEPTED" "$(accepted)"

# The update, the server refusing connections until the queue is compared
ctl fault refuse=true >/dev/null
sql -c "ALTER EXTENSION kairoi UPDATE" && pass "ALTER EXTENSION kairoi UPDATE" ||
	fail "ALTER EXTENSION kairoi UPDATE"
check "the extension is 1.2" 1.2 "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
# every entry of 1.1 moved over unchanged, but flight-1, replaced since
sql -c "$QUEUE_SQL" | grep -v 'window-' >"$SOURCES/queue_1_2"
diff <(grep -v '"flight-1"' "$SOURCES/queue_1_1") <(grep -v '"flight-1"' "$SOURCES/queue_1_2") \
	>"$SOURCES/queue.diff" &&
	pass "every entry of 1.1 in 1.2's queue: places, versions, times, attempts" || {
	fail "the queue changed in the update (< 1.1, > 1.2)"
	head -10 "$SOURCES/queue.diff"
}
check "retrying-1's rejection kept" "1|t" \
	"$(sql -c "SELECT attempts, next_attempt_at IS NOT NULL FROM kairoi_pending WHERE identifier = 'retrying-1'")"
check "the failed entry kept" "$(cat "$SOURCES/failed_1_1")" \
	"$(sql -c "SELECT id, kind, identifier, arguments, version, attempts FROM kairoi.failed")"

# Delivery: everything pending is acknowledged, with its last value
ctl fault refuse=false >/dev/null
check "everything pending is acknowledged" "" "$(sql -c "SELECT kairoi_flush('60 s')")"
check "the queue is empty, the failed entry still there" "0|1" \
	"$(sql -c "SELECT pending, failed FROM kairoi_status()")"
check "flight-1 with the value scheduled after the restart" "2034-01-01 00:00:00" "$(ctl job flight-1)"
check "flight-80 as scheduled" "2032-01-01 00:01:20" "$(ctl job flight-80)"
check "window-10 as scheduled" "2033-01-01 00:00:00" "$(ctl job window-10)"
check "retrying-1 delivered after its retry" "2031-02-01 00:00:00" "$(ctl job retrying-1)"
check "the rule scheduled behind the window" '["flight-", "amqp", "amqp://h/v", "ex", "key"]' \
	"$(ctl rule 'late rule')"
check "failed-1 not delivered" "" "$(ctl job failed-1 2>/dev/null)"
# Every SET the server received, by identifier: the acknowledged ones once
$PYTHON - "$KAIROI_ROOT/test" "$S_CPORT" >"$SOURCES/requests" <<'EOF'
import collections, sys
sys.path.insert(0, sys.argv[1])
from kairoi_ctl import Control
with Control(port=int(sys.argv[2])) as c:
    requests = c.requests()
sets = collections.Counter(r['args'][2] for r in requests if r['args'][1:2] == ['SET'])
acked = [i for i in sets if i.startswith('acked-')]
print(len(acked), max(sets[i] for i in acked), sum(1 for i in sets if i.startswith('flight-')),
      sets['window-1'])
EOF
read -r acked most flights windows <"$SOURCES/requests"
check "nothing acknowledged under 1.1 was sent again: 100 acked jobs, each sent once" "100 1" "$acked $most"
check "every job in flight or pending at the restart delivered" 80 "$flights"
check "and those scheduled meanwhile" 1 "$windows"

# The failed entry comes back when retried
check "kairoi_retry_failed takes it back" 1 "$(sql -c "SELECT kairoi_retry_failed()")"
sql -c "SELECT kairoi_flush('30 s')" >/dev/null
check "failed-1 delivered once retried" "2031-01-01 00:00:00" "$(ctl job failed-1)"

check_outbox_invariants PG app
stop_postgres PG fast
finish
