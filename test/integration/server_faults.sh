#!/bin/bash
# test/integration/server_faults.sh: fault tests of the delivery worker
# against the Kairoi-compatible test server (test/kairoi_server.py).
#
# Scenarios: 1 server down while jobs commit, back 10 s later; 2 SIGKILL with
# thousands of requests in flight; 3 a server that never answers (request
# timeout, worker CPU); 4 garbage, unknown identifiers, half a line; 5 a
# server that reads slowly (worker memory, fast shutdown, restart); 6 ERROR
# answers up to kairoi.max_attempts, kairoi_failed, kairoi_retry_failed;
# 7 kairoi.server changed on SIGHUP with requests in flight; 8 a rule
# committed while the server is down goes before later jobs; 9 kairoi.server
# changed while the worker backs off from a dead server; 10 answers that
# arrive together with the server closing the connection.
#
# One PostgreSQL cluster (database "faults", kairoi.max_attempts = 3) and one
# test server A; scenario 7 adds a server B, which scenario 8 then uses.
# Each scenario resets the server, commits jobs (recorded in the table
# "expected" in the same statement) and ends with exact checks: the server
# holds exactly the committed jobs, each at its committed time, the outbox
# is empty and kairoi_failed holds what it should.  Waits are on conditions;
# the only sleeps are where a scenario needs time to pass (a server down for
# 10 s, CPU and memory measured over a few seconds, the helper's freeze
# watching the server settle).
#
# Run as root: bash test/integration/server_faults.sh
source "$(dirname "$0")/../lib.sh"

HELPER="$PYTHON $KAIROI_ROOT/test/integration/server_faults_helper.py"
DB=faults
FLUSH_TIMEOUT='120 s'
WORK=$(make_temp_dir)
SCRIPT_START=$SECONDS

# ---- helpers ----------------------------------------------------------------

sql() { psql_at PG "$DB" -c "$1"; }

# status COLUMN-EXPRESSION: one value of kairoi_status()
status() { sql "SELECT $1 FROM kairoi_status()"; }

# status_holds BOOLEAN-EXPRESSION over kairoi_status()'s columns
status_holds() { [ "$(sql "SELECT ($1) FROM kairoi_status()" 2>/dev/null)" = t ]; }

status_line() {
	sql "SELECT format('state=%s server=%s in_flight=%s acknowledged=%s connection_attempts=%s pending=%s failed=%s last_error=%s',
		state, server, in_flight, acknowledged, connection_attempts, pending, failed, coalesce(last_error, '-'))
		FROM kairoi_status()"
}

set_guc() {
	sql "ALTER SYSTEM SET $1 = '$2'" && sql "SELECT pg_reload_conf()" >/dev/null
}

reset_guc() {
	sql "ALTER SYSTEM RESET $1" && sql "SELECT pg_reload_conf()" >/dev/null
}

# Current server (A, later B): its control port
CUR=A
cport() { local v="${CUR}_CPORT"; echo "${!v}"; }
ctl() { $KCTL --port "$(cport)" "$@"; }
server_jobs() { ctl count-jobs; }
server_has_at_least() { [ "$(server_jobs)" -ge "$1" ]; }

begin_scenario() {
	echo "# scenario $*"
	ctl reset >/dev/null || fail "reset of server $CUR"
	sql "TRUNCATE expected"
	SCENARIO_START=$SECONDS
}

end_scenario() {
	echo "# ... scenario took $((SECONDS - SCENARIO_START)) s"
}

# commit_jobs PREFIX COUNT DAY: one transaction schedules PREFIX1..PREFIXCOUNT
# one second apart from 2030-01-01 + DAY days, and records them in expected
commit_jobs() {
	sql "WITH e AS (
			INSERT INTO expected
			SELECT '$1' || g, timestamptz '2030-01-01 00:00:00+00'
				+ $3 * interval '1 day' + g * interval '1 second'
			FROM generate_series(1, $2) g
			RETURNING id, at)
		SELECT count(kairoi_job_set(id, at)) FROM e" >/dev/null
}

# flush LABEL: kairoi_flush must return (everything acknowledged)
flush() {
	local t0=$SECONDS out
	if out=$(sql "SELECT kairoi_flush('$FLUSH_TIMEOUT')" 2>&1); then
		pass "$1 (kairoi_flush returned after $((SECONDS - t0)) s)"
	else
		fail "$1: $out"
		status_line
	fi
}

# verify_server LABEL [WHERE-CLAUSE over expected]: the current server holds
# exactly these jobs, each at its committed time (UTC, whole seconds)
verify_server() {
	local where=${2:-true} out
	sql "SELECT id || '|' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
		FROM expected WHERE $where" >"$WORK/expected"
	if out=$($HELPER --port "$(cport)" verify <"$WORK/expected"); then
		pass "$1: $out"
	else
		fail "$1: $out"
	fi
}

check_outbox_empty() {
	check "$1: outbox empty" 0 "$(sql 'SELECT count(*) FROM kairoi.outbox')"
}

check_no_failed() {
	check "$1: kairoi_failed empty" 0 "$(sql 'SELECT count(*) FROM kairoi_failed')"
}

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- setup --------------------------------------------------------------------

# setup failed: report it in the result line CI reads, and stop
setup_failed() {
	fail "setup: $1"
	finish
	exit 1
}

start_server A || setup_failed "test server A did not start"
start_cluster PG "$A_PORT" "kairoi.max_attempts = 3" || setup_failed "cluster did not start"
psql_at PG postgres -c "CREATE DATABASE $DB" || setup_failed "CREATE DATABASE"
sql "CREATE EXTENSION kairoi" || setup_failed "CREATE EXTENSION kairoi"
sql "CREATE TABLE expected (id text PRIMARY KEY, at timestamptz NOT NULL)" || setup_failed "table expected"
wait_for "worker connected" 60 status_holds "state = 'connected'" ||
	fail "worker did not connect: $(status_line)"
echo "# worker $(worker_pid PG $DB) connected to server A at 127.0.0.1:$A_PORT"

# ---- 1. server down when jobs commit, back 10 s later -------------------------

begin_scenario "1: server down when jobs commit, restarted 10 s later"
T0=$(sql "SELECT now()")
kill_server A
commit_jobs s1- 1000 1
wait_for "worker notices the server is down" 30 status_holds \
	"state <> 'connected' AND last_error IS NOT NULL AND last_error_at > '$T0'"
echo "  while down: $(status_line)"
check "1: not connected while the server is down" f "$(status "state = 'connected'")"
check "1: last_error set while the server is down" t \
	"$(status "last_error IS NOT NULL AND last_error_at > '$T0'")"
check "1: nothing acknowledged while down" 1000 "$(status pending)"
sleep 10 # the scenario: the server comes back 10 s later
# the worker kept trying (backoff_max = 1 s) and still reports the outage
check "1: still failing after 10 s, last error recent" t \
	"$(status "state <> 'connected' AND last_error_at > now() - interval '5 s'")"
echo "  after 10 s: $(status_line)"
restart_server A
flush "1: delivered after the restart"
verify_server "1: every job committed while down is on the server"
check_outbox_empty 1
check "1: connected again" connected "$(status state)"
end_scenario

# ---- 2. SIGKILL with thousands of requests in flight ----------------------------

begin_scenario "2: server SIGKILLed with thousands of requests in flight"
set_guc kairoi.max_in_flight 5000
N2=20000
# A slow server: it answers what it has read once a second
ctl fault reply_delay_ms=1000 >/dev/null
commit_jobs s2- $N2 2
# Once 2000 jobs are stored, freeze the server (it reads and answers nothing
# more, as if its machine hung) at a moment when it has read requests it has
# not answered; the worker keeps filling its window meanwhile.  Then SIGKILL.
mkdir -p "$WORK/s2"
FREEZE2=$($HELPER --port "$(cport)" freeze 2000 "$WORK/s2") ||
	fail "2: could not freeze the server: $FREEZE2 $(status_line)"
echo "  $FREEZE2"
wait_for "thousands of requests in flight" 60 status_holds "in_flight >= 2000" ||
	fail "2: in_flight did not reach 2000: $(status_line)"
IN_FLIGHT2=$(status in_flight)
touch "$WORK/s2/stored" "$WORK/s2/held" "$WORK/s2/received"
STORED2=$(wc -l <"$WORK/s2/stored")
HELD2=$(wc -l <"$WORK/s2/held")
kill_server A KILL
echo "  SIGKILL with $STORED2 jobs stored, $HELD2 read but not answered, worker in_flight=$IN_FLIGHT2"
check "2: some but not all jobs on the server at the kill" t \
	"$([ "$STORED2" -gt 0 ] && [ "$STORED2" -lt $N2 ] && echo t || echo f)"
check "2: thousands of requests in flight at the kill" t \
	"$([ "$IN_FLIGHT2" -ge 2000 ] && echo t || echo f)"
restart_server A
flush "2: delivered after the restart"
verify_server "2: every committed job on the server with its time"
check_outbox_empty 2
RESENT2=$($HELPER --port "$(cport)" resent "$WORK/s2/received")
HELD_RESENT2=$($HELPER --port "$(cport)" resent "$WORK/s2/held")
STORED_RESENT2=$($HELPER --port "$(cport)" resent "$WORK/s2/stored")
echo "  after the restart: $RESENT2 of the jobs received before the kill were sent again" \
	"($HELD_RESENT2 of the $HELD2 unanswered, $STORED_RESENT2 of the $STORED2 stored)"
check "2: requests received before the kill were sent again" t \
	"$([ "$RESENT2" -gt 0 ] && echo t || echo f)"
check "2: every request read but not answered was sent again" "$HELD2" "$HELD_RESENT2"
check "2: every job stored before the kill is still on the server" 0 \
	"$($HELPER --port "$(cport)" missing "$WORK/s2/stored")"
check "2: stored jobs that were not sent again survived the kill ($((STORED2 - STORED_RESENT2)))" t \
	"$([ $((STORED2 - STORED_RESENT2)) -gt 0 ] && echo t || echo f)"
reset_guc kairoi.max_in_flight
end_scenario

# ---- 3. server accepts and never answers -------------------------------------------

begin_scenario "3: server accepts connections and never answers"
set_guc kairoi.request_timeout 1000
ATTEMPTS3=$(status connection_attempts)
T3=$(sql "SELECT now()")
ctl fault stall=true >/dev/null
commit_jobs s3- 2000 3
wait_for "request timeouts and reconnections" 60 status_holds \
	"last_error LIKE '%request_timeout%' AND last_error_at > '$T3' AND connection_attempts >= $ATTEMPTS3 + 2" ||
	fail "3: no request timeout seen: $(status_line)"
PID3=$(worker_pid PG $DB)
HZ=$(getconf CLK_TCK)
A0=$(status connection_attempts)
C0=$(cpu_ticks "$PID3")
W0=$(now_ms)
sleep 5 # the scenario: measure the worker while the server stays silent
C1=$(cpu_ticks "$PID3")
W1=$(now_ms)
A1=$(status connection_attempts)
TICKS3=$((C1 - C0))
BOUND3=$(((W1 - W0) * HZ / 1000 / 20)) # 5% of the wall time, in ticks
echo "  stalled $((W1 - W0)) ms: worker $PID3 used $TICKS3 CPU ticks (HZ=$HZ, bound $BOUND3)," \
	"connection_attempts $A0 -> $A1"
echo "  $(status_line)"
check "3: last_error mentions request_timeout" t "$(status "last_error LIKE '%request_timeout%'")"
check "3: the worker reconnects while the server is silent" t \
	"$([ "$A1" -gt "$A0" ] && [ "$A0" -ge $((ATTEMPTS3 + 2)) ] && echo t || echo f)"
check "3: worker CPU while waiting below 5% ($TICKS3 ticks <= $BOUND3)" t \
	"$([ "$TICKS3" -le "$BOUND3" ] && echo t || echo f)"
check "3: nothing stored while the server is silent" 0 "$(server_jobs)"
# Close the silent connections first: the requests they still hold in
# their buffers are discarded, so whatever arrives must be resent
ctl kick >/dev/null
ctl fault stall=false >/dev/null
flush "3: delivered once the server answers"
verify_server "3: every committed job on the server with its time"
check_outbox_empty 3
reset_guc kairoi.request_timeout
end_scenario

# ---- 4. garbage, unknown identifiers, half a line -----------------------------------

n4=0
for spec in "line:invalid response" "unknown_id:unknown request identifier" \
	"half_line:closed the connection"; do
	kind=${spec%%:*}
	pattern=${spec#*:}
	n4=$((n4 + 1))
	begin_scenario "4.$n4: server answers garbage=$kind"
	ATTEMPTS4=$(status connection_attempts)
	T4=$(sql "SELECT now()")
	ctl fault garbage="$kind" >/dev/null
	commit_jobs "s4$kind-" 500 $((40 + n4))
	wait_for "connection dropped on $kind" 60 status_holds \
		"last_error LIKE '%$pattern%' AND last_error_at > '$T4' AND connection_attempts >= $ATTEMPTS4 + 2" ||
		fail "4.$n4: $kind did not drop the connection twice: $(status_line)"
	echo "  with garbage=$kind: $(status_line)"
	check "4.$n4: $kind: last_error says '$pattern'" t \
		"$(status "last_error LIKE '%$pattern%' AND last_error_at > '$T4'")"
	check "4.$n4: $kind: the worker reconnected" t \
		"$(status "connection_attempts >= $ATTEMPTS4 + 2")"
	# The server stored what it answered with garbage: forget it (reset
	# also clears the fault), so that only what is resent counts
	STORED4=$(server_jobs)
	ctl reset >/dev/null
	echo "  the server had stored $STORED4 jobs despite the garbage: forgotten"
	flush "4.$n4: $kind: delivered once the fault is cleared"
	verify_server "4.$n4: $kind: every committed job on the server with its time"
	check_outbox_empty "4.$n4"
	end_scenario
done

# ---- 5. server reads slowly ---------------------------------------------------------

begin_scenario "5: server reads slowly"
N5=5000
ctl fault slow_read=20000 >/dev/null
ctl kick >/dev/null # reconnect: new connections get a small receive buffer
PID5=$(worker_pid PG $DB)
RSS5_BEFORE=$(rss_kb "$PID5")
commit_jobs s5- $N5 5
wait_for "slow delivery under way" 60 server_has_at_least 100 ||
	fail "5: delivery did not start: $(status_line)"
RSS5_PEAK=$RSS5_BEFORE
for _ in $(seq 1 12); do # the scenario: 3 s of slow reading
	r=$(rss_kb "$PID5")
	[ "$r" -gt "$RSS5_PEAK" ] && RSS5_PEAK=$r
	sleep 0.25
done
RSS5_AFTER=$(rss_kb "$PID5")
# bytes the kernel holds unsent on the worker's connection: the server is
# the bottleneck, the worker waits for its socket to become writable
SENDQ5=$(ss -tnH state established "( dport = :$A_PORT )" 2>/dev/null | awk '{ s += $2 } END { print s + 0 }')
[ "$RSS5_AFTER" -gt "$RSS5_PEAK" ] && RSS5_PEAK=$RSS5_AFTER
ON_SERVER5=$(server_jobs)
echo "  worker $PID5 VmRSS before ${RSS5_BEFORE} kB, peak ${RSS5_PEAK} kB, after ${RSS5_AFTER} kB;" \
	"$ON_SERVER5 of $N5 jobs on the server; kernel send queue $SENDQ5 bytes; $(status_line)"
check "5a: worker RSS growth below 16 MB ($((RSS5_PEAK - RSS5_BEFORE)) kB)" t \
	"$([ $((RSS5_PEAK - RSS5_BEFORE)) -lt 16384 ] && echo t || echo f)"
check "5: still delivering when PostgreSQL stops" t \
	"$([ "$ON_SERVER5" -lt $N5 ] && echo t || echo f)"
S0=$(now_ms)
stop_postgres PG fast
STOP_RC=$?
S1=$(now_ms)
echo "  pg_ctl stop -m fast took $((S1 - S0)) ms (exit $STOP_RC) with the server still slow"
check "5b: pg_ctl stop -m fast succeeds while the server is slow" 0 "$STOP_RC"
check "5b: shutdown within 30 s ($((S1 - S0)) ms)" t \
	"$([ $((S1 - S0)) -lt 30000 ] && echo t || echo f)"
check "5b: the worker is gone" f "$([ -d "/proc/$PID5" ] && echo t || echo f)"
ctl fault slow_read=null >/dev/null
start_postgres PG || fail "5: PostgreSQL did not start again"
wait_for "worker up again" 60 worker_is_up PG $DB
flush "5c: delivered after restarting PostgreSQL"
verify_server "5c: every committed job on the server with its time"
check_outbox_empty 5
check_outbox_invariants PG "$DB" "5 (after the fast shutdown)"
end_scenario

# ---- 6. server answers ERROR for chosen identifiers ------------------------------------

begin_scenario "6: server answers ERROR for chosen identifiers (max_attempts = 3)"
ctl fault error_ids='["s6-7", "s6-500", "s6-1000"]' >/dev/null
commit_jobs s6- 1000 6
OUT6=$(sql "SELECT kairoi_flush('$FLUSH_TIMEOUT')" 2>&1)
RC6=$?
echo "  kairoi_flush: $OUT6" | head -2
check "6: kairoi_flush reports the 3 rejected entries" "1 1" \
	"$RC6 $(echo "$OUT6" | grep -c '3 entries were rejected')"
check "6: the rejected entries are in kairoi_failed after 3 attempts" \
	"s6-1000:3,s6-500:3,s6-7:3" \
	"$(sql "SELECT string_agg(identifier || ':' || attempts, ',' ORDER BY identifier) FROM kairoi_failed")"
check "6: each failed entry has a reason" t \
	"$(sql "SELECT bool_and(reason LIKE '%ERROR%') FROM kairoi_failed")"
echo "  reason: $(sql "SELECT reason FROM kairoi_failed LIMIT 1")"
for id in s6-7 s6-500 s6-1000; do
	check "6: server received $id exactly 3 times" 3 \
		"$($HELPER --port "$(cport)" requests-for "$id")"
done
verify_server "6: every other job on the server with its time" \
	"id NOT IN ('s6-7', 's6-500', 's6-1000')"
check_outbox_empty 6
check "6: status counts the failed entries" 3 "$(status failed)"
ctl fault error_ids='[]' >/dev/null
check "6: kairoi_retry_failed takes back the 3 entries" 3 "$(sql "SELECT kairoi_retry_failed()")"
flush "6: retried entries delivered"
verify_server "6: every committed job on the server with its time"
check_outbox_empty 6
check_no_failed 6
for id in s6-7 s6-500 s6-1000; do
	check "6: server received $id a 4th time after the retry" 4 \
		"$($HELPER --port "$(cport)" requests-for "$id")"
done
end_scenario

# ---- 7. kairoi.server changed on SIGHUP while entries are in flight --------------------

start_server B || setup_failed "test server B did not start"
begin_scenario "7: kairoi.server changed on SIGHUP while entries are in flight"
$KCTL --port "$B_CPORT" reset >/dev/null
N7=10000
# A reads slowly and holds its answers: delivery to A is under way (requests
# in flight, some still unsent or half sent) when the address changes.
ctl fault slow_read=20000 reply_delay_ms=600000 >/dev/null
ctl kick >/dev/null
commit_jobs s7- $N7 7
wait_for "delivery to A under way" 60 status_holds "in_flight > 0 AND state = 'connected'" ||
	fail "7: nothing in flight to A: $(status_line)"
wait_for "A received requests" 60 \
	bash -c "[ \$($HELPER --port $A_CPORT count-requests) -ge 200 ]" ||
	fail "7: A received nothing"
REQ7_A=$($HELPER --port "$A_CPORT" count-requests)
STORED7_A=$(server_jobs)
echo "  before the change: A received $REQ7_A requests, stored $STORED7_A jobs; $(status_line)"
check "7: A acknowledged nothing before the change" 0 "$STORED7_A"
sql "ALTER SYSTEM SET kairoi.server = '127.0.0.1:$B_PORT'"
sql "SELECT pg_reload_conf()" >/dev/null
CUR=B
flush "7: delivered to the new server"
check "7: status shows the new server" "127.0.0.1:$B_PORT connected" \
	"$(status "server || ' ' || state")"
verify_server "7: every committed job on server B with its time"
check_outbox_empty 7
echo "  after: $(status_line)"
end_scenario

# ---- 8. server down then up, for rules too ------------------------------------------------

begin_scenario "8: server down then up, a rule committed while down goes first"
T8=$(sql "SELECT now()")
kill_server B
wait_for "worker notices B is down" 30 status_holds \
	"state <> 'connected' AND last_error_at > '$T8'"
sql "SELECT kairoi_rule_set_shell('r8', 's8-', '/usr/local/bin/run-s8')" >/dev/null
commit_jobs s8- 500 8
T8B=$(sql "SELECT now()")
wait_for "worker retries while B is down" 30 status_holds "last_error_at > '$T8B'"
echo "  while down: $(status_line)"
check "8: rule and jobs pending while down" 501 "$(status pending)"
restart_server B
flush "8: delivered after B came back"
check "8: the rule is on the server" '["s8-", "shell", "/usr/local/bin/run-s8"]' "$(ctl rule r8)"
verify_server "8: every committed job on the server with its time"
ORDER8=$($HELPER --port "$B_CPORT" rule-first r8 s8-)
RC8=$?
echo "  $ORDER8"
check "8: the rule was sent before the jobs committed after it" 0 "$RC8"
check_outbox_empty 8
check_no_failed 8
end_scenario

# ---- 9. kairoi.server changed while the worker backs off from a dead server -------------
# The usual reason to change the address is that the old server is gone: the
# worker must try the new one at once, not after the backoff it computed for
# the old one (design: "a changed server address makes the worker reconnect").

begin_scenario "9: kairoi.server changed while the worker backs off from a dead server"
$KCTL --port "$A_CPORT" reset >/dev/null
set_guc kairoi.backoff_max 60000
set_guc kairoi.backoff_min 15000
T9=$(sql "SELECT now()")
LOGSIZE9=$(stat -c %s "$PG_DIR/postgres.log")
ctl fault refuse=true >/dev/null # B goes away: connection closed, listener gone
wait_for "worker backs off from B" 30 status_holds \
	"state <> 'connected' AND last_error_at > '$T9'" ||
	fail "9: the worker did not notice B going away: $(status_line)"
# the new backoff is in effect: the worker logged the 15 s delay
wait_for "15 s backoff logged" 30 \
	bash -c "tail -c +$((LOGSIZE9 + 1)) '$PG_DIR/postgres.log' | grep -q 'next attempt in 15000 ms'" ||
	fail "9: the worker did not back off for 15 s"
echo "  backing off: $(status_line)"
commit_jobs s9- 500 9
sql "ALTER SYSTEM SET kairoi.server = '127.0.0.1:$A_PORT'"
sql "SELECT pg_reload_conf()" >/dev/null
CUR=A
S9=$(now_ms)
flush "9: delivered to the new server"
E9=$(($(now_ms) - S9))
echo "  delivered to the new server $E9 ms after the change; $(status_line)"
check "9: the new server is tried at once, not after the old backoff (${E9} ms < 5000 ms)" t \
	"$([ "$E9" -lt 5000 ] && echo t || echo f)"
[ "$E9" -lt 5000 ] ||
	tail -c +$((LOGSIZE9 + 1)) "$PG_DIR/postgres.log" | grep -A1 'kairoi' | sed 's/^/  log: /'

check "9: status shows the new server" "127.0.0.1:$A_PORT connected" \
	"$(status "server || ' ' || state")"
verify_server "9: every committed job on the new server with its time"
check_outbox_empty 9
reset_guc kairoi.backoff_min
reset_guc kairoi.backoff_max
end_scenario

# ---- 10. answers read together with the server's EOF --------------------------------------
# The server answers OK to the requests before the drop_after-th one on its
# connection, drops that one and closes.  The answered jobs are
# acknowledged: they must leave the outbox at once, not when (if ever) the
# worker manages to reconnect.  The worker is paused (SIGSTOP) while the
# server answers and closes, as a busy worker on a loaded machine would be,
# so that it finds the answers and the end of the stream in one read.

begin_scenario "10: answers that arrive together with the server closing the connection"
N10=1000
DROP10=500
# a fresh connection, so that drop_after counts this scenario's requests only
ATTEMPTS10=$(status connection_attempts)
ctl kick >/dev/null
wait_for "worker reconnected" 30 status_holds \
	"state = 'connected' AND connection_attempts > $ATTEMPTS10" ||
	fail "10: the worker did not reconnect: $(status_line)"
set_guc kairoi.backoff_max 60000
set_guc kairoi.backoff_min 8000 # the worker stays away 8 s after the drop
LOGSIZE10=$(stat -c %s "$PG_DIR/postgres.log")
ctl fault drop_after=$DROP10 reply_delay_ms=3000 >/dev/null
PID10=$(worker_pid PG $DB)
commit_jobs s10- $N10 10
wait_for "the server read up to the dropped request" 30 \
	bash -c "[ \$($HELPER --port $(cport) count-requests) -ge $DROP10 ]" ||
	fail "10: the server did not receive $DROP10 requests"
kill -STOP "$PID10"
wait_for "the server answered and closed" 30 \
	bash -c "$KCTL --port $(cport) counts | grep -q '\"dropped\": 1'" ||
	fail "10: the server did not drop the connection"
kill -CONT "$PID10"
STORED10=$(server_jobs) # each of them was answered OK before the close
ATTEMPTS10=$(status connection_attempts)
wait_for "backoff logged" 30 \
	bash -c "tail -c +$((LOGSIZE10 + 1)) '$PG_DIR/postgres.log' | grep -q 'next attempt in 8000 ms'" ||
	fail "10: the worker did not back off for 8 s"
wait_for "acknowledged entries leave the outbox" 5 status_holds \
	"pending = $N10 - $STORED10 AND connection_attempts = $ATTEMPTS10"
echo "  the server answered $STORED10 OK then closed; before reconnecting: $(status_line)"
check "10: the $STORED10 answered entries left the outbox without a reconnection" \
	"$((N10 - STORED10)) $ATTEMPTS10" "$(status "pending || ' ' || connection_attempts")"
[ "$(status pending)" -eq $((N10 - STORED10)) ] ||
	tail -c +$((LOGSIZE10 + 1)) "$PG_DIR/postgres.log" | grep -A1 'kairoi' | sed 's/^/  log: /'

ctl fault drop_after=null reply_delay_ms=0 >/dev/null
reset_guc kairoi.backoff_min
reset_guc kairoi.backoff_max
flush "10: the dropped entries delivered after reconnecting"
verify_server "10: every committed job on the server with its time"
check_outbox_empty 10
end_scenario

check_outbox_invariants PG "$DB" "at the end"

echo "# total $((SECONDS - SCRIPT_START)) s"
finish
