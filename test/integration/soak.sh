#!/bin/bash
# test/integration/soak.sh: concurrent scheduling while the Kairoi server is
# repeatedly killed; at the end the server must hold exactly what the
# database committed.
#
#   bash test/integration/soak.sh                       # suite size, ~1 min
#   SOAK_JOBS=200000 bash test/integration/soak.sh      # long variant
#
# pgbench (-n -c 4 -j 2, SOAK_JOBS transactions in all) runs a script that,
# in one transaction, schedules job 'soak-<id>' (id random in 1..SOAK_IDS,
# by default as many as transactions: about 63 % of the identifiers are
# distinct and the rest re-schedule them, concurrently) with
# kairoi_job_set and upserts the same value, formatted as the extension
# sends it (UTC 'YYYY-MM-DD HH24:MI:SS', whole seconds so no rounding
# happens), into soak_expected: the committed state per identifier.
# Meanwhile the test server is killed with SIGKILL and restarted on the same
# --data directory at random intervals (at least SOAK_KILLS times, more
# while pgbench still runs). Then kairoi_flush('300s'), and the server's
# jobs are compared with soak_expected (test/integration/soak_compare.py):
# nothing missing, nothing wrong, nothing unexpected, equal counts.
#
# Environment: SOAK_JOBS (40000; 200000 for the long variant), SOAK_IDS
# (SOAK_JOBS), SOAK_KILLS (5, the minimum number of kills), SOAK_SEED (random
# seed for pgbench and the kill schedule; printed, so a run can be replayed).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

SOAK_JOBS=${SOAK_JOBS:-40000}
SOAK_IDS=${SOAK_IDS:-$SOAK_JOBS}
SOAK_KILLS=${SOAK_KILLS:-5}
SOAK_SEED=${SOAK_SEED:-$((RANDOM * 32768 + RANDOM))}
CLIENTS=4
RANDOM=$SOAK_SEED
started=$SECONDS

echo "# soak: SOAK_JOBS=$SOAK_JOBS SOAK_IDS=$SOAK_IDS SOAK_KILLS=$SOAK_KILLS SOAK_SEED=$SOAK_SEED"

# random_seconds MIN MAX: a random duration, two decimals
random_seconds() {
	awk -v r="$RANDOM" -v lo="$1" -v hi="$2" 'BEGIN {printf "%.2f", lo + (hi - lo) * r / 32767}'
}

start_server S || { fail "start the test server"; finish; exit 1; }
start_cluster P "$S_PORT" postgres || { fail "start PostgreSQL"; finish; exit 1; }
psql_at P postgres <<'EOF' || { fail "set up the database"; finish; exit 1; }
CREATE EXTENSION kairoi;
CREATE TABLE soak_expected (id text PRIMARY KEY, execution text NOT NULL);
EOF
wait_for "the worker" 30 worker_is_up P postgres || { fail "worker started"; finish; exit 1; }
$KCTL --port "$S_CPORT" reset >/dev/null
check "the server starts empty" 0 "$($KCTL --port "$S_CPORT" count-jobs)"

# One transaction: schedule the job and record what was committed for it.
# The execution is a whole second, so the extension sends it unchanged.
work=$(make_temp_dir)
cat >"$work/soak.sql" <<EOF
\\set id random(1, $SOAK_IDS)
\\set secs random(1, 1000000)
BEGIN;
SELECT kairoi_job_set('soak-' || :id, date_trunc('second', now()) + :secs * interval '1 second');
INSERT INTO soak_expected VALUES ('soak-' || :id,
  to_char((date_trunc('second', now()) + :secs * interval '1 second') AT TIME ZONE 'UTC',
          'YYYY-MM-DD HH24:MI:SS'))
  ON CONFLICT (id) DO UPDATE SET execution = excluded.execution;
END;
EOF
chown postgres: "$work/soak.sql"

# Same transactions per client, the remainder to none: round up
per_client=$(((SOAK_JOBS + CLIENTS - 1) / CLIENTS))
"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -t "$per_client" --random-seed="$SOAK_SEED" \
	--max-tries=10 -h "$P_HOST" -p "$P_PORT" -U postgres -f "$work/soak.sql" postgres \
	>"$work/pgbench.log" 2>&1 &
bench_pid=$!
CLEANUP_PIDS+=("$bench_pid")

# Kill the server at random moments while pgbench runs (and at least
# SOAK_KILLS times, so also during the delivery of the backlog).
kills=0
while kill -0 "$bench_pid" 2>/dev/null || [ "$kills" -lt "$SOAK_KILLS" ]; do
	sleep "$(random_seconds 0.3 2.0)"
	kill_server S KILL
	kills=$((kills + 1))
	pending=$(psql_at P postgres -c "SELECT pending FROM kairoi_status()")
	echo "kill $kills at $((SECONDS - started))s: server killed, $pending pending in the outbox"
	sleep "$(random_seconds 0 1.5)"
	restart_server S || { fail "restart the test server"; finish; exit 1; }
done

wait "$bench_pid"
bench_rc=$?
grep -E "^(number of (transactions actually processed|failed transactions)|tps)" "$work/pgbench.log"
check "pgbench finished without error" 0 "$bench_rc"
[ "$bench_rc" -eq 0 ] || cat "$work/pgbench.log"
if [ "$kills" -ge "$SOAK_KILLS" ]; then
	pass "the server was killed $kills times (at least $SOAK_KILLS)"
else
	fail "the server was killed only $kills times"
fi

flush_start=$SECONDS
if psql_at P postgres -c "SELECT kairoi_flush('300s')" >/dev/null; then
	pass "kairoi_flush('300s') returned after $((SECONDS - flush_start))s"
else
	fail "kairoi_flush('300s')"
fi
psql_at P postgres -F ' ' -c "SELECT 'worker: acknowledged', acknowledged,
	'connection attempts', connection_attempts, 'pending', pending, 'failed', failed
	FROM kairoi_status()"
check "nothing failed" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.failed')"

psql_at P postgres -F $'\t' -c "SELECT id, execution FROM soak_expected" >"$work/expected.tsv"
result=$($PYTHON "$KAIROI_ROOT/test/integration/soak_compare.py" --cport "$S_CPORT" \
	--expected "$work/expected.tsv" --prefix soak-)
compare_rc=$?
echo "$result"
summary=$(echo "$result" | head -1)
committed=$(echo "$summary" | sed -n 's/^committed \([0-9]*\),.*/\1/p')
on_server=$(echo "$summary" | sed -n 's/.* on server \([0-9]*\),.*/\1/p')
check "missing entries" 0 "$(echo "$summary" | sed -n 's/.* missing \([0-9]*\),.*/\1/p')"
check "wrong executions" 0 "$(echo "$summary" | sed -n 's/.* wrong \([0-9]*\),.*/\1/p')"
check "unexpected jobs" 0 "$(echo "$summary" | sed -n 's/.* unexpected \([0-9]*\).*/\1/p')"
if [ -n "$committed" ] && [ "$committed" -gt 0 ] && [ "$committed" = "$on_server" ]; then
	pass "the server holds as many jobs as were committed ($committed)"
else
	fail "committed [$committed] but the server holds [$on_server]"
fi
check "soak_compare.py agrees" 0 "$compare_rc"
echo "runtime $((SECONDS - started))s"
finish
