#!/bin/bash
# test/integration/worker_slots.sh: more databases with the extension than
# max_worker_processes has slots.  The database left without a worker gets
# one LOG line (not one per retry), kairoi_status() there says why, its
# entries wait, and its worker starts as soon as a slot frees up.  Copies
# of a database (CREATE DATABASE ... TEMPLATE by its owner, who has
# CREATEDB) take no slot and deliver nothing.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S || exit 1
# Three slots: the kairoi launcher and two workers (no logical replication
# launcher, no parallel workers)
start_cluster PG "$S_PORT" "max_worker_processes = 3
max_logical_replication_workers = 0
max_parallel_workers = 0
max_parallel_workers_per_gather = 0" || exit 1
LOG="$PG_DIR/postgres.log"

sql() { psql_at PG "$@"; }
workers_in() { sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker' AND datname = '$1'"; }
has_worker() { [ "$(workers_in "$1")" = 1 ]; }
state_in() { sql "$1" -c "SELECT state FROM kairoi_status()"; }
WAITING="not running: waiting for a background worker slot (raise max_worker_processes)"
state_is() { [ "$(state_in "$1")" = "$2" ]; }

for db in a b c; do sql postgres -c "CREATE DATABASE $db" || exit 1; done
sql a -c "CREATE EXTENSION kairoi" || exit 1
wait_for "a's worker" 10 has_worker a
sql b -c "CREATE EXTENSION kairoi" || exit 1
wait_for "b's worker" 10 has_worker b
sql c -c "CREATE EXTENSION kairoi" || exit 1

wait_for "c waiting" 10 state_is c "$WAITING" &&
	pass "kairoi_status() in c says it waits for a worker slot" ||
	fail "kairoi_status() in c: $(state_in c)"
sql c -c "SELECT kairoi_job_set('c.' || i, '2030-01-01') FROM generate_series(1, 100) i" >/dev/null
sleep 4		# four retries of the launcher
check "c has no worker" 0 "$(workers_in c)"
check "one LOG line for c, not one per retry" 1 \
	"$(grep -c 'no background worker slot is free for database "c"' "$LOG")"
check "its hint says what to raise" 1 "$(grep -c 'HINT:  Raise max_worker_processes' "$LOG")"
check "c's entries wait" 100 "$(sql c -c "SELECT pending FROM kairoi_status()")"
check "kairoi_workers shows c waiting" "$WAITING" \
	"$(sql a -c "SELECT state FROM kairoi_workers WHERE database = 'c'")"
check "nothing of c on the server" 0 "$($KCTL --port "$S_CPORT" count-jobs)"

# DROP EXTENSION in a frees a slot: c's worker starts and delivers
sql a -c "DROP EXTENSION kairoi" || exit 1
wait_for "c's worker" 10 has_worker c && pass "c's worker starts once a slot frees up" ||
	fail "c still has no worker"
sql c -c "SELECT kairoi_flush('30 s')" >/dev/null && pass "c's entries delivered" ||
	fail "c's entries not delivered"
check "c's jobs on the server" 100 "$($KCTL --port "$S_CPORT" count-jobs)"
check "a no longer listed" "b c" \
	"$(sql b -c "SELECT string_agg(database, ' ' ORDER BY database) FROM kairoi_workers")"

# A role with CREATEDB that owns a database with the extension copies it
# six times: the copies take no worker slot (nor any of kairoi's slots),
# so a database a superuser gives the extension later is served at once.
# Two worker slots free: owned's and later's
sql b -c "DROP EXTENSION kairoi" && sql c -c "DROP EXTENSION kairoi" || exit 1
no_kairoi_worker() { [ "$(sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker'")" = 0 ]; }
wait_for "b and c without worker" 10 no_kairoi_worker
sql postgres -c "CREATE ROLE copier LOGIN CREATEDB" \
	-c "CREATE DATABASE owned OWNER copier" || exit 1
# the copies are made with owned's entries pending in them
$KCTL --port "$S_CPORT" fault refuse=true >/dev/null
sql owned -c "CREATE EXTENSION kairoi" \
	-c "SELECT kairoi_job_set('owned.' || i, '2030-01-01') FROM generate_series(1, 5) i" >/dev/null || exit 1
for i in 1 2 3 4 5 6; do
	psql_at PG postgres -c "SET ROLE copier" -c "CREATE DATABASE copy$i TEMPLATE owned" >/dev/null ||
		fail "the owner copies its database ($i)"
	sql "copy$i" -c "SELECT kairoi_job_set('copied.$i', '2030-01-01')" >/dev/null
done
$KCTL --port "$S_CPORT" fault refuse=false >/dev/null
sql owned -c "SELECT kairoi_flush('30 s')" >/dev/null || fail "owned delivers"
sleep 3		# the launcher probes each copy, whose worker leaves at once
check "the six copies run no worker" 0 \
	"$(sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kairoi worker' AND datname LIKE 'copy%'")"
check "and are not listed by kairoi_workers" 0 \
	"$(sql owned -c "SELECT count(*) FROM kairoi_workers WHERE database LIKE 'copy%'")"
sql postgres -c "CREATE DATABASE later" || exit 1
sql later -c "CREATE EXTENSION kairoi" -c "SELECT kairoi_job_set('later.1', '2030-01-01')" >/dev/null || exit 1
wait_for "later's worker" 10 has_worker later && pass "a database created later gets its worker" ||
	fail "no worker for a database created after the copies"
sql later -c "SELECT kairoi_flush('30 s')" >/dev/null && pass "and delivers" || fail "later does not deliver"
sets_of() { # SET requests the server received for identifiers LIKE $1%
	$KCTL --port "$S_CPORT" requests | $PYTHON -c '
import json, sys
print(sum(1 for r in json.load(sys.stdin)
          if r["args"][1:2] == ["SET"] and r["args"][2].startswith(sys.argv[1])))' "$1"
}
check "nothing scheduled in a copy reached the server" 0 "$(sets_of copied.)"
check "owned's entries, pending in every copy, were sent once (by owned)" 5 "$(sets_of owned.)"

stop_postgres PG fast
finish
