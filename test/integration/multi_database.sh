#!/bin/bash
# test/integration/multi_database.sh: every database that has the extension
# is delivered, each to its own server if it overrides kairoi.server, and
# the DDL around databases does the right thing promptly.
#
#   a  two databases (a, b) on server S1, one (c) on S2 through ALTER
#      DATABASE c SET kairoi.server, one (d) without the extension:
#      concurrent enqueueing lands exactly where it belongs; d has no
#      worker and no connection
#   b  a database created and given the extension mid-run is delivered
#      within 1 s
#   c  DROP DATABASE b (and another WITH (FORCE)) while its worker has
#      requests in flight: prompt, and a and c lose nothing
#   d  ALTER DATABASE a SET kairoi.server while requests are unanswered:
#      everything reaches the new server
#   e  ALLOW_CONNECTIONS false stops the worker, true restarts it
#   f  a template with the extension: its worker stops when it becomes a
#      template, CREATE DATABASE from it works, and the copy is delivered
#      once a superuser runs kairoi_serve_copy() there (not before)
#   g  RENAME, DROP EXTENSION and CREATE EXTENSION again
#   h  crash restarts (immediate stop, SIGKILL of one worker): every
#      database delivered, exact counts
# Each DDL leaves at most one ERROR/FATAL line in the log.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S1 || exit 1
start_server S2 || exit 1
start_cluster PG "$S1_PORT" "kairoi.poll_interval = 2000
max_worker_processes = 16" || exit 1
LOG="$PG_DIR/postgres.log"

sql() { psql_at PG "$@"; }

# server_jobs CONTROL_PORT PREFIX...: "prefix:count" for each PREFIX (the
# text of a job identifier before its first dot), in that order, and
# "wrong:N" if any of their jobs has another time than the one enqueued.
# Identifiers carry a phase in their prefix (ah = database a, phase h), so
# that requests resent at least once to another server blur no count.
server_jobs() {
	$PYTHON - "$KAIROI_ROOT/test" "$@" <<'EOF'
import collections, sys
sys.path.insert(0, sys.argv[1])
from kairoi_ctl import Control
port, prefixes = int(sys.argv[2]), sys.argv[3:]
with Control(port=port) as c:
    jobs = c.state()['jobs']
mine = {k: v for k, v in jobs.items() if k.split('.', 1)[0] in prefixes}
counts = collections.Counter(k.split('.', 1)[0] for k in mine)
bad = [k for k, v in mine.items() if v != '2030-01-01 00:00:00']
print(' '.join('%s:%d' % (p, counts[p]) for p in prefixes) +
      (' wrong:%d' % len(bad) if bad else ''))
EOF
}

# enqueue DB PREFIX FIRST LAST [PER_TRANSACTION]: jobs PREFIX.FIRST..LAST
enqueue() {
	local db=$1 prefix=$2 first=$3 last=$4 per=${5:-100} from
	for ((from = first; from <= last; from += per)); do
		echo "SELECT kairoi_job_set('$prefix.' || i, '2030-01-01') FROM generate_series($from, $((from + per - 1 < last ? from + per - 1 : last))) i;"
	done | sql "$db" >/dev/null
}

flush() { sql "$1" -c "SELECT kairoi_flush('60 s')" >/dev/null || fail "kairoi_flush in $1"; }
workers_in() { sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker' AND datname = '$1'"; }
worker_pid_in() { sql postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'kairoi worker' AND datname = '$1'"; }
has_worker() { [ "$(workers_in "$1")" = 1 ]; }
has_no_worker() { [ "$(workers_in "$1")" = 0 ]; }
# sql_is DB EXPECTED QUERY: the query's result is EXPECTED (for wait_for)
sql_is() { [ "$(sql "$1" -c "$3")" = "$2" ]; }
server_has_job() { $KCTL --port "$1" job "$2" >/dev/null; }
log_errors_since() { tail -c +"$1" "$LOG" | grep -cE '(ERROR|FATAL):'; }
log_size() { stat -c %s "$LOG"; }
now_ms() { date +%s%3N; }

# drop_promptly STATEMENT: the drop succeeds within 2 s, with at most
# one ERROR/FATAL line in the log (the worker's termination)
drop_promptly() {
	local size t0 t1
	size=$(log_size)
	t0=$(now_ms)
	sql postgres -c "$1" || fail "c: $1 failed"
	t1=$(now_ms)
	echo "# c: $1 took $((t1 - t0)) ms with requests in flight"
	if [ $((t1 - t0)) -le 2000 ]; then pass "c: $1 completes promptly"
	else fail "c: $1 took $((t1 - t0)) ms"; fi
	check "c: at most one ERROR/FATAL line for $1" 1 "$(( $(log_errors_since "$size") <= 1 ))"
}
# forgotten FROM_DB DB SECONDS DESCRIPTION: kairoi_workers, read in FROM_DB,
# stops listing DB within SECONDS; shows the view and the log if not
forgotten() {
	if wait_for "$2 forgotten" "$3" sql_is "$1" 0 "SELECT count(*) FROM kairoi_workers WHERE database = '$2'"; then
		pass "$4"
	else
		fail "$4: $2 still listed"
		sql "$1" -c "SELECT * FROM kairoi_workers"
		grep -E 'kairoi|FATAL|ERROR' "$LOG" | tail -20
	fi
}

# enqueue_all "DB PREFIX FIRST LAST"...: those enqueues at once, waited for
# by pid (a bare wait would also wait for the test servers)
enqueue_all() {
	local spec pids=()
	for spec in "$@"; do
		# shellcheck disable=SC2086  # DB PREFIX FIRST LAST
		enqueue $spec &
		pids+=($!)
	done
	wait "${pids[@]}"
}

# --- a: three databases, two servers, one database without the extension
for db in a b c d; do sql postgres -c "CREATE DATABASE $db" || exit 1; done
for db in a b c; do sql "$db" -c "CREATE EXTENSION kairoi" || exit 1; done
sql postgres -c "ALTER DATABASE c SET kairoi.server = '127.0.0.1:$S2_PORT'" || exit 1
for db in a b c; do wait_for "worker of $db" 10 has_worker "$db"; done
wait_for "c's worker on S2" 10 sql_is c "127.0.0.1:$S2_PORT" "SELECT server FROM kairoi_status()"
check "a: kairoi_workers lists a, b and c" "a b c" \
	"$(sql a -c "SELECT string_agg(database, ' ' ORDER BY database) FROM kairoi_workers")"
check "a: c's worker uses its database's server" "127.0.0.1:$S2_PORT" \
	"$(sql a -c "SELECT server FROM kairoi_workers WHERE database = 'c'")"

enqueue_all "a a 1 3000" "b b 1 3000" "c c 1 3000"
for db in a b c; do flush "$db"; done
check "a: S1 holds exactly a's and b's jobs" "a:3000 b:3000 c:0" "$(server_jobs "$S1_CPORT" a b c)"
check "a: S2 holds exactly c's jobs" "a:0 b:0 c:3000" "$(server_jobs "$S2_CPORT" a b c)"
check "a: no worker in d (no extension)" 0 "$(workers_in d)"
check "a: no connection to d at all" 0 \
	"$(sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'd'")"
check "a: kairoi_workers does not list d" 0 \
	"$(sql a -c "SELECT count(*) FROM kairoi_workers WHERE database = 'd'")"

# --- b: a new database with the extension, delivered within 1 s
sql postgres -c "CREATE DATABASE e" || exit 1
t0=$(now_ms)
sql e -c "CREATE EXTENSION kairoi" -c "SELECT kairoi_job_set('e.1', '2030-01-01')" >/dev/null
t1=$(now_ms)
wait_for "e.1 on S1" 5 server_has_job "$S1_CPORT" e.1
t2=$(now_ms)
echo "# b: CREATE EXTENSION + first job took $((t1 - t0)) ms; on the server $((t2 - t1)) ms after the commit"
if [ $((t2 - t1)) -le 1000 ]; then pass "b: new database delivered within 1 s of the commit"
else fail "b: new database delivered $((t2 - t1)) ms after the commit (over 1 s)"; fi
check "b: S1 holds e's job" "e:1" "$(server_jobs "$S1_CPORT" e)"

# --- c: DROP DATABASE b with requests in flight
$KCTL --port "$S1_CPORT" fault stall=true >/dev/null
enqueue_all "b bc 1 500" "a ac 1 1000"
wait_for "b's requests in flight" 10 sql_is a "t" "SELECT in_flight > 0 FROM kairoi_workers WHERE database = 'b'"
drop_promptly "DROP DATABASE b"
forgotten a b 10 "c: kairoi_workers forgets the dropped database"
enqueue c cc 1 1000

# DROP DATABASE ... WITH (FORCE), the worker busy with a stalled server
sql postgres -c "CREATE DATABASE forced" || exit 1
sql forced -c "CREATE EXTENSION kairoi" || exit 1
enqueue forced fc 1 300
wait_for "forced's requests in flight" 10 sql_is a "t" "SELECT in_flight > 0 FROM kairoi_workers WHERE database = 'forced'"
drop_promptly "DROP DATABASE forced WITH (FORCE)"
forgotten a forced 10 "c: kairoi_workers forgets the database dropped WITH (FORCE)"

# --- d: a's server changes to S2 while S1 holds its requests unanswered
wait_for "a's requests in flight" 10 sql_is a "t" "SELECT in_flight > 0 FROM kairoi_status()"
sql postgres -c "ALTER DATABASE a SET kairoi.server = '127.0.0.1:$S2_PORT'" || exit 1
flush a
check "d: a's worker now uses S2" "127.0.0.1:$S2_PORT" "$(sql a -c "SELECT server FROM kairoi_status()")"
flush c
check "d: S2 holds all of a's unanswered jobs, and c's" "ac:1000 cc:1000" "$(server_jobs "$S2_CPORT" ac cc)"
$KCTL --port "$S1_CPORT" fault stall=false >/dev/null
sql postgres -c "ALTER DATABASE a RESET kairoi.server" || exit 1

# --- e: ALLOW_CONNECTIONS false stops the worker; true brings it back
size=$(log_size)
sql postgres -c "ALTER DATABASE e WITH ALLOW_CONNECTIONS false" || exit 1
wait_for "e's worker stopped" 5 has_no_worker e && pass "e: worker stops when e refuses connections" ||
	fail "e: worker still runs in e"
check "e: kairoi_workers says why" "not running: the database does not allow connections" \
	"$(sql a -c "SELECT state FROM kairoi_workers WHERE database = 'e'")"
check "e: one LOG line says so" 1 "$(tail -c +"$size" "$LOG" | grep -c 'database "e" does not allow connections')"
sql postgres -c "ALTER DATABASE e WITH ALLOW_CONNECTIONS true" || exit 1
wait_for "e's worker back" 5 has_worker e && pass "e: worker back when e accepts connections" ||
	fail "e: no worker after ALLOW_CONNECTIONS true"
enqueue e ee 1 9
flush e
check "e: e's new jobs delivered" "ee:9" "$(server_jobs "$S1_CPORT" ee)"

# --- f: a template with the extension
sql postgres -c "CREATE DATABASE tmpl" || exit 1
sql tmpl -c "CREATE EXTENSION kairoi" || exit 1
wait_for "tmpl's worker" 10 has_worker tmpl
sql postgres -c "ALTER DATABASE tmpl WITH IS_TEMPLATE true" || exit 1
wait_for "tmpl's worker stopped" 5 has_no_worker tmpl && pass "f: a template gets no worker" ||
	fail "f: a worker stays connected to a template"
t0=$(now_ms)
sql postgres -c "CREATE DATABASE f TEMPLATE tmpl" && pass "f: CREATE DATABASE from the template works" ||
	fail "f: CREATE DATABASE from the template failed"
echo "# f: CREATE DATABASE f TEMPLATE tmpl took $(( $(now_ms) - t0 )) ms"
# a copy is not delivered (its queue was the template's) until a superuser
# says so
COPY_STATE="not delivering: a copy of another database; a superuser runs kairoi_serve_copy() to deliver its queue"
copy_state() { [ "$(sql "$1" -c "SELECT state FROM kairoi_status()")" = "$COPY_STATE" ]; }
wait_for "f recognised as a copy" 10 copy_state f &&
	pass "f: kairoi_status() in the copy says it is not delivered, and why" ||
	fail "f: kairoi_status() in the copy: $(sql f -c "SELECT state FROM kairoi_status()")"
enqueue f f 1 10
sleep 1
check "f: the copy has no worker, its entries wait" "0 10" \
	"$(workers_in f) $(sql f -c "SELECT pending FROM kairoi_status()")"
sql f -c "SELECT kairoi_serve_copy()" >/dev/null || fail "f: kairoi_serve_copy()"
wait_for "f's worker" 10 has_worker f && pass "f: the copy gets a worker once a superuser serves it" ||
	fail "f: no worker in the copy after kairoi_serve_copy()"
flush f
check "f: the copy is delivered" "f:10" "$(server_jobs "$S1_CPORT" f)"
# a database used as a template without being one: its worker steps aside
t0=$(now_ms)
sql postgres -c "CREATE DATABASE f2 TEMPLATE f" && pass "f: CREATE DATABASE from a served database works" ||
	fail "f: CREATE DATABASE from a served database failed"
echo "# f: CREATE DATABASE f2 TEMPLATE f took $(( $(now_ms) - t0 )) ms"
sql f2 -c "SELECT kairoi_serve_copy()" >/dev/null || fail "f: kairoi_serve_copy() in f2"
wait_for "f's worker back" 10 has_worker f && wait_for "f2's worker" 10 has_worker f2 &&
	pass "f: both the source and the served copy have a worker" || fail "f: source or copy not served"

# --- g: RENAME, DROP EXTENSION, CREATE EXTENSION again
size=$(log_size)
t0=$(now_ms)
sql postgres -c "ALTER DATABASE f2 RENAME TO f3" || fail "g: RENAME failed"
echo "# g: RENAME took $(( $(now_ms) - t0 )) ms"
wait_for "f3's worker" 10 has_worker f3 && pass "g: renamed database served" || fail "g: renamed database not served"
wait_for "kairoi_workers shows the new name" 10 sql_is f "1" "SELECT count(*) FROM kairoi_workers WHERE database = 'f3'"
check "g: at most one ERROR/FATAL line for RENAME" 1 "$(( $(log_errors_since "$size") <= 1 ))"
size=$(log_size)
t0=$(now_ms)
sql f3 -c "DROP EXTENSION kairoi" || fail "g: DROP EXTENSION failed"
echo "# g: DROP EXTENSION took $(( $(now_ms) - t0 )) ms"
wait_for "f3's worker gone" 5 has_no_worker f3 && pass "g: DROP EXTENSION stops the worker" ||
	fail "g: worker still runs after DROP EXTENSION"
forgotten f f3 5 "g: kairoi_workers no longer lists f3"
check "g: no ERROR/FATAL line for DROP EXTENSION" 0 "$(log_errors_since "$size")"
sql f3 -c "CREATE EXTENSION kairoi" -c "SELECT kairoi_job_set('g.1', '2030-01-01')" >/dev/null
wait_for "g.1 on S1" 5 server_has_job "$S1_CPORT" g.1 && pass "g: CREATE EXTENSION again: delivered" ||
	fail "g: not delivered after CREATE EXTENSION again"

# --- h: crash restarts with several databases
$KCTL --port "$S1_CPORT" fault refuse=true >/dev/null
$KCTL --port "$S2_CPORT" fault refuse=true >/dev/null
enqueue_all "a ah 1 1000" "c ch 1 1000" "f fh 1 1000"
stop_postgres PG immediate
start_postgres PG || exit 1
$KCTL --port "$S1_CPORT" fault refuse=false >/dev/null
$KCTL --port "$S2_CPORT" fault refuse=false >/dev/null
for db in a c f; do flush "$db"; done
check "h: S1 after immediate stop" "ah:1000 fh:1000" "$(server_jobs "$S1_CPORT" ah fh)"
check "h: S2 after immediate stop" "ch:1000" "$(server_jobs "$S2_CPORT" ch)"

$KCTL --port "$S1_CPORT" fault stall=true >/dev/null
enqueue_all "a ak 1 1000" "f fk 1 1000"
wait_for "a's worker" 10 has_worker a
kill -KILL "$(worker_pid_in f)"
sleep 1
wait_for "cluster back after a worker's SIGKILL" 30 sql postgres -c "SELECT 1"
$KCTL --port "$S1_CPORT" fault stall=false >/dev/null
for db in a c f; do
	wait_for "worker of $db after the crash restart" 30 has_worker "$db"
	flush "$db"
done
check "h: S1 after a worker's SIGKILL" "ak:1000 fk:1000" "$(server_jobs "$S1_CPORT" ak fk)"
check "h: no worker in d, ever" 0 "$(workers_in d)"

# after several workers and crash restarts: every database with kairoi
for db in $(sql postgres -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
	[ "$(sql "$db" -c "SELECT count(*) FROM pg_extension WHERE extname = 'kairoi'")" = 1 ] &&
		check_outbox_invariants PG "$db"
done

stop_postgres PG fast
finish
