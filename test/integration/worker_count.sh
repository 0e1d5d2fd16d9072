#!/bin/bash
# test/integration/worker_count.sh: the worker's count of its queue
# (kairoi_workers.pending) and its table statistics.
# - The count follows commits while the server is down, deliveries, and
#   rows removed by hand (within ten polls).
# - An unchanged queue is not counted at every poll: with many dead rows
#   each count reads them all (a backlog drained behind a long
#   transaction).  Counted through the worker's
#   sequential scans of kairoi.pending_jobs in pg_stat_user_tables.
# - The worker flushes its table statistics, so that autovacuum sees the
#   rows it deleted (n_tup_del).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S || exit 1
start_cluster PG "$S_PORT" "kairoi.poll_interval = 200ms" || exit 1
kill_server S

sql() { psql_at PG postgres "$@"; }
worker_pending() { sql -c "SELECT pending FROM kairoi_workers WHERE database = 'postgres'"; }
pending_is() { [ "$(worker_pending)" = "$1" ]; }
scans() { sql -c "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'kairoi.pending_jobs'::regclass"; }
deleted() { sql -c "SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'kairoi.pending_jobs'::regclass"; }
deleted_is() { [ "$(deleted)" = "$1" ]; }

sql -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the first count" 10 pending_is 0 && pass "the worker counted its empty queue" ||
	fail "kairoi_workers.pending: [$(worker_pending)]"

sql -c "SELECT kairoi_job_set('count.' || i, '2030-01-01') FROM generate_series(1, 30) i" >/dev/null
wait_for "30 counted" 5 pending_is 30 && pass "a commit while the server is down is counted" ||
	fail "after 30 scheduled, kairoi_workers.pending: [$(worker_pending)]"

# 4 s of an unchanged queue: 20 polls.  Before, one count each; now one
# every ten polls.  (Statistics reach the view within a second.)
sleep 1.5
before=$(scans)
sleep 4
after=$(scans)
counts=$((after - before))
if [ "$counts" -ge 1 ] && [ "$counts" -le 3 ]; then
	pass "an unchanged queue is counted every ten polls, not at each ($counts counts in 20 polls)"
else
	fail "an unchanged queue: $counts counts in 20 polls (seq_scan $before -> $after), expected 1 to 3"
fi

restart_server S || exit 1
sql -c "SELECT kairoi_flush('30 s')" >/dev/null && pass "delivered once the server is back" ||
	fail "not delivered once the server is back"
wait_for "0 counted" 5 pending_is 0 && pass "deliveries are counted" ||
	fail "after delivery, kairoi_workers.pending: [$(worker_pending)]"
wait_for "deletes in the statistics" 10 deleted_is 30 &&
	pass "the worker's 30 deletes reach pg_stat_user_tables (autovacuum sees them)" ||
	fail "n_tup_del of kairoi.pending_jobs: [$(deleted)], expected 30"

# Rows removed by hand announce nothing: counted within ten polls
kill_server S
sql -c "SELECT kairoi_job_set('by_hand.' || i, '2030-01-01') FROM generate_series(1, 10) i" >/dev/null
wait_for "10 counted" 5 pending_is 10 || fail "after 10 scheduled: [$(worker_pending)]"
sql -c "DELETE FROM kairoi.pending_jobs" || exit 1
wait_for "rows deleted by hand counted" 5 pending_is 0 &&
	pass "rows removed by hand are counted within ten polls" ||
	fail "after DELETE by hand, kairoi_workers.pending: [$(worker_pending)]"

stop_postgres PG fast
finish
