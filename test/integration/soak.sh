#!/bin/bash
# test/integration/soak.sh: concurrent scheduling in two databases, each
# delivered to its own server, while both servers are repeatedly killed; at
# the end each server must hold exactly what its database committed, and
# nothing of the other database.
#
#   bash test/integration/soak.sh                       # suite size, ~30 s
#   SOAK_JOBS=200000 bash test/integration/soak.sh      # long variant
#
# Two databases with the extension: soak_a is delivered to server S1 (the
# cluster's kairoi.server), soak_b to server S2 (ALTER DATABASE soak_b SET
# kairoi.server). In each, pgbench (-n -c 2 -j 1, half of SOAK_JOBS
# transactions; both run at once, so 4 clients in all) runs a script that,
# in one transaction, schedules job 'soak-<db>-<id>' (id random in
# 1..SOAK_IDS, by default as many as that database's transactions: about
# 63 % of the identifiers are distinct and the rest re-schedule them,
# concurrently) with kairoi_job_set and upserts the same value, formatted as
# the extension sends it (UTC 'YYYY-MM-DD HH24:MI:SS', whole seconds so no
# rounding happens), into soak_expected: the committed state per identifier.
# Meanwhile S1, S2 or both are killed with SIGKILL and restarted on the same
# --data directory at random intervals (each server at least SOAK_KILLS
# times, more while pgbench still runs). Then kairoi_flush('300s') in each
# database, and each server's jobs are compared with its database's
# soak_expected (test/integration/soak_compare.py): nothing missing, nothing
# wrong, nothing unexpected, equal counts, and no job of the other database.
#
# The two pgbench runs use seeds SOAK_SEED and SOAK_SEED + 1.
#
# Environment: SOAK_JOBS (40000 transactions over both databases; 200000 for
# the long variant), SOAK_IDS (SOAK_JOBS / 2), SOAK_KILLS (5, the minimum
# number of kills of each server), SOAK_SEED (random seed for pgbench and
# the kill schedule; printed, so a run can be replayed).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

SOAK_JOBS=${SOAK_JOBS:-40000}
SOAK_IDS=${SOAK_IDS:-$((SOAK_JOBS / 2))}
SOAK_KILLS=${SOAK_KILLS:-5}
SOAK_SEED=${SOAK_SEED:-$((RANDOM * 32768 + RANDOM))}
CLIENTS_PER_DB=2
DBS=(soak_a soak_b)
declare -A SERVER_OF=([soak_a]=S1 [soak_b]=S2)
declare -A OTHER_OF=([soak_a]=soak_b [soak_b]=soak_a)
RANDOM=$SOAK_SEED
started=$SECONDS

echo "# soak: SOAK_JOBS=$SOAK_JOBS SOAK_IDS=$SOAK_IDS SOAK_KILLS=$SOAK_KILLS SOAK_SEED=$SOAK_SEED"

# random_seconds MIN MAX: a random duration, two decimals
random_seconds() {
	awk -v r="$RANDOM" -v lo="$1" -v hi="$2" 'BEGIN {printf "%.2f", lo + (hi - lo) * r / 32767}'
}
# indirect VAR_PREFIX SUFFIX: the value of ${PREFIX}_SUFFIX
indirect() {
	local var="${1}_$2"
	echo "${!var}"
}
# the job identifiers of a database start with this
prefix_of() { echo "soak-${1#soak_}-"; }
server_of_db() { psql_at P soak_a -c "SELECT server FROM kairoi_workers WHERE database = '$1'"; }
server_is() { [ "$(server_of_db "$1")" = "$2" ]; }
pending_in() { psql_at P "$1" -c "SELECT pending FROM kairoi_status()"; }

start_server S1 || { fail "start test server S1"; finish; exit 1; }
start_server S2 || { fail "start test server S2"; finish; exit 1; }
start_cluster P "$S1_PORT" || { fail "start PostgreSQL"; finish; exit 1; }
for db in "${DBS[@]}"; do
	if ! { psql_at P postgres -c "CREATE DATABASE $db" &&
		psql_at P "$db" -c "CREATE EXTENSION kairoi" \
			-c "CREATE TABLE soak_expected (id text PRIMARY KEY, execution text NOT NULL)"; }; then
		fail "set up database $db"
		finish
		exit 1
	fi
done
psql_at P postgres -c "ALTER DATABASE soak_b SET kairoi.server = '127.0.0.1:$S2_PORT'" ||
	{ fail "give soak_b its own server"; finish; exit 1; }
for db in "${DBS[@]}"; do
	wait_for "the worker of $db" 30 worker_is_up P "$db" || { fail "worker of $db started"; finish; exit 1; }
	port=$(indirect "${SERVER_OF[$db]}" PORT)
	wait_for "$db delivered to ${SERVER_OF[$db]}" 30 server_is "$db" "127.0.0.1:$port"
	check "$db's worker uses ${SERVER_OF[$db]}" "127.0.0.1:$port" "$(server_of_db "$db")"
done
for s in S1 S2; do
	$KCTL --port "$(indirect $s CPORT)" reset >/dev/null
	check "$s starts empty" 0 "$($KCTL --port "$(indirect $s CPORT)" count-jobs)"
done

# One transaction: schedule the job and record what was committed for it.
# The execution is a whole second, so the extension sends it unchanged.
work=$(make_temp_dir)
per_db=$((SOAK_JOBS / 2))
# Same transactions per client, the remainder to none: round up
per_client=$(((per_db + CLIENTS_PER_DB - 1) / CLIENTS_PER_DB))
declare -A BENCH_PID
seed=$SOAK_SEED
for db in "${DBS[@]}"; do
	prefix=$(prefix_of "$db")
	cat >"$work/$db.sql" <<EOF
\\set id random(1, $SOAK_IDS)
\\set secs random(1, 1000000)
BEGIN;
SELECT kairoi_job_set('$prefix' || :id, date_trunc('second', now()) + :secs * interval '1 second');
INSERT INTO soak_expected VALUES ('$prefix' || :id,
  to_char((date_trunc('second', now()) + :secs * interval '1 second') AT TIME ZONE 'UTC',
          'YYYY-MM-DD HH24:MI:SS'))
  ON CONFLICT (id) DO UPDATE SET execution = excluded.execution;
END;
EOF
	chown postgres: "$work/$db.sql"
	"$PGBIN/pgbench" -n -c "$CLIENTS_PER_DB" -j 1 -t "$per_client" --random-seed="$seed" \
		--max-tries=10 -h "$P_HOST" -p "$P_PORT" -U postgres -f "$work/$db.sql" "$db" \
		>"$work/$db.pgbench.log" 2>&1 &
	BENCH_PID[$db]=$!
	seed=$((seed + 1))
	CLEANUP_PIDS+=("${BENCH_PID[$db]}")
done

pgbench_running() {
	local db
	for db in "${DBS[@]}"; do
		kill -0 "${BENCH_PID[$db]}" 2>/dev/null && return 0
	done
	return 1
}

# Kill S1, S2 or both at random moments while pgbench runs, and each at
# least SOAK_KILLS times (so also during the delivery of the backlog).
declare -A KILLS=([S1]=0 [S2]=0)
events=0
while pgbench_running || [ "${KILLS[S1]}" -lt "$SOAK_KILLS" ] || [ "${KILLS[S2]}" -lt "$SOAK_KILLS" ]; do
	sleep "$(random_seconds 0.3 2.0)"
	if pgbench_running; then
		case $((RANDOM % 3)) in
		0) victims=(S1) ;;
		1) victims=(S2) ;;
		*) victims=(S1 S2) ;;
		esac
	else
		victims=()
		for s in S1 S2; do
			[ "${KILLS[$s]}" -lt "$SOAK_KILLS" ] && victims+=("$s")
		done
	fi
	for s in "${victims[@]}"; do
		kill_server "$s" KILL
		KILLS[$s]=$((KILLS[$s] + 1))
	done
	events=$((events + 1))
	echo "kill $events at $((SECONDS - started))s: ${victims[*]} killed;" \
		"pending soak_a $(pending_in soak_a), soak_b $(pending_in soak_b)"
	sleep "$(random_seconds 0 1.5)"
	for s in "${victims[@]}"; do
		restart_server "$s" || { fail "restart test server $s"; finish; exit 1; }
	done
done

for db in "${DBS[@]}"; do
	wait "${BENCH_PID[$db]}"
	bench_rc=$?
	grep -E "^(number of (transactions actually processed|failed transactions)|tps)" \
		"$work/$db.pgbench.log" | sed "s/^/$db: /"
	check "pgbench in $db finished without error" 0 "$bench_rc"
	[ "$bench_rc" -eq 0 ] || cat "$work/$db.pgbench.log"
done
for s in S1 S2; do
	if [ "${KILLS[$s]}" -ge "$SOAK_KILLS" ]; then
		pass "$s was killed ${KILLS[$s]} times (at least $SOAK_KILLS)"
	else
		fail "$s was killed only ${KILLS[$s]} times"
	fi
done

for db in "${DBS[@]}"; do
	flush_start=$SECONDS
	if psql_at P "$db" -c "SELECT kairoi_flush('300s')" >/dev/null; then
		pass "$db: kairoi_flush('300s') returned after $((SECONDS - flush_start))s"
	else
		fail "$db: kairoi_flush('300s')"
	fi
	psql_at P "$db" -F ' ' -c "SELECT '$db worker: acknowledged', acknowledged,
		'connection attempts', connection_attempts, 'pending', pending, 'failed', failed
		FROM kairoi_status()"
	check "$db: nothing failed" 0 "$(psql_at P "$db" -c 'SELECT count(*) FROM kairoi.failed')"
done

# field NAME LINE: the number after NAME in a soak_compare.py summary line
field() { echo "$2" | sed -n "s/.*\b$1 \([0-9]*\).*/\1/p"; }
for db in "${DBS[@]}"; do
	s=${SERVER_OF[$db]}
	psql_at P "$db" -F $'\t' -c "SELECT id, execution FROM soak_expected" >"$work/$db.expected.tsv"
	result=$($PYTHON "$KAIROI_ROOT/test/integration/soak_compare.py" \
		--cport "$(indirect "$s" CPORT)" --expected "$work/$db.expected.tsv" \
		--prefix "$(prefix_of "$db")" --foreign "$(prefix_of "${OTHER_OF[$db]}")")
	compare_rc=$?
	echo "$db on $s: $result"
	summary=$(echo "$result" | head -1)
	committed=$(field committed "$summary")
	on_server=$(field "on server" "$summary")
	check "$db: missing entries on $s" 0 "$(field missing "$summary")"
	check "$db: wrong executions on $s" 0 "$(field wrong "$summary")"
	check "$db: unexpected jobs on $s" 0 "$(field unexpected "$summary")"
	check "$db: no job of ${OTHER_OF[$db]} on $s" 0 "$(field foreign "$summary")"
	if [ -n "$committed" ] && [ "$committed" -gt 0 ] && [ "$committed" = "$on_server" ]; then
		pass "$db: $s holds as many jobs as were committed ($committed)"
	else
		fail "$db: committed [$committed] but $s holds [$on_server]"
	fi
	check "$db: soak_compare.py agrees" 0 "$compare_rc"
done
# after concurrent writers and the worker's deletes: amcheck, no duplicate
for db in "${DBS[@]}"; do
	check_outbox_invariants P "$db"
done
echo "runtime $((SECONDS - started))s"
finish
