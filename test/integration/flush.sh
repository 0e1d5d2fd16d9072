#!/bin/bash
# test/integration/flush.sh: kairoi_flush() wakes on the worker's progress.
#
# Against the test server at the reference server's pace (--reference-pace:
# replies in frames, one write per reply, Nagle on):
#   a. held answers: while the server holds its replies (reply_delay_ms),
#      kairoi_flush() waits, returns only once every entry it waits for is
#      acknowledged and deleted, and reads the outbox only a few times
#      (counted with pg_stat_xact_user_tables in its own transaction): it
#      sleeps until the worker reports progress, it does not poll;
#   b. commits of a few jobs: kairoi_flush() returns right after the
#      worker's delete of the acknowledged entries commits (that commit's
#      timestamp, pg_last_committed_xact(), to the flush's own
#      clock_timestamp()).  Checked on the median of several commits with a
#      wide margin: under 15 ms, where a fixed 20 ms recheck after each
#      wake-up could never be; the figures are printed.
#   c. a flush with nothing to wait for returns without reading more.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

SAMPLES=${SAMPLES:-9}

start_server S --record-times --reference-pace || exit 1
# autovacuum off: the last committed transaction is the worker's delete
start_cluster PG "$S_PORT" "track_commit_timestamp = on
autovacuum = off" || exit 1
sql() { psql_at PG postgres "$@"; }
sql -c "CREATE EXTENSION kairoi" || exit 1
wait_for "worker" 30 worker_is_up PG postgres || exit 1
sql -c "SELECT kairoi_job_set('warm-up', now() + interval '1 day')" \
	-c "SELECT kairoi_flush('30s')" >/dev/null || exit 1

# scans_sql: how often this transaction read the queue (psql -c strings
# run as one transaction): each look reads both of its tables once
scans_sql="SELECT max(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_xact_user_tables
	WHERE relid IN ('kairoi.pending_jobs'::regclass, 'kairoi.pending_rules'::regclass)"

# a. answers held for 300 ms
$KCTL --port "$S_CPORT" fault reply_delay_ms=300 >/dev/null
sql -c "SELECT count(kairoi_job_set('held-' || g, timestamptz '2030-01-01 00:00:00+00'))
	FROM generate_series(1, 3) g" >/dev/null
out=$(sql -c "BEGIN" -c "SELECT extract(epoch FROM clock_timestamp())" \
	-c "SELECT kairoi_flush('30s')" -c "SELECT extract(epoch FROM clock_timestamp())" \
	-c "$scans_sql" -c "COMMIT")
read -r started returned scans <<<"$(echo "$out" | grep . | tr '\n' ' ')"
$KCTL --port "$S_CPORT" fault reply_delay_ms=0 >/dev/null
stored=$($KCTL --port "$S_CPORT" times held- | $PYTHON -c \
	"import json,sys; t=json.load(sys.stdin); print(len(t), max(t.values()))")
read -r nstored last_stored <<<"$stored"
check "held answers: all three jobs on the server when kairoi_flush returned" 3 "$nstored"
check "held answers: nothing left in the outbox" 0 "$(sql -c "SELECT count(*) FROM kairoi.outbox")"
awk -v s="$last_stored" -v r="$returned" 'BEGIN {exit !(s < r)}' &&
	pass "held answers: kairoi_flush returned after the server answered" ||
	fail "kairoi_flush returned at $returned, before the server stored the last job at $last_stored"
awk -v s="$started" -v r="$returned" 'BEGIN {exit !(r - s >= 0.25)}' &&
	pass "held answers: kairoi_flush waited for the held answers" ||
	fail "kairoi_flush returned after $(awk -v s="$started" -v r="$returned" 'BEGIN {print r - s}') s"
echo "# kairoi_flush read the outbox $scans times while the answers were held 300 ms"
[ "$scans" -le 6 ] && pass "held answers: kairoi_flush sleeps until progress (read the outbox $scans times)" ||
	fail "kairoi_flush read the outbox $scans times in 300 ms without progress: it polls"

# b. commits of a few jobs: flush return after the worker's delete
lags=()
for ((i = 1; i <= SAMPLES; i++)); do
	n=$((2 + (i % 3) * 8))
	# one session: the commit, the flush, then the last commit's time
	lag=$(sql -c "SELECT count(kairoi_job_set('burst-$i-' || g,
			timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $n) g" \
		-c "SELECT kairoi_flush('30s'), extract(epoch FROM clock_timestamp())" \
		-c "SELECT extract(epoch FROM timestamp) FROM pg_last_committed_xact()" |
		sed -n '2,3p' | sed 's/^|//' | tr '\n' ' ' |
		awk '{printf "%.3f", ($1 - $2) * 1000}')
	lags+=("$lag")
	check "commit $i of $n jobs: nothing left in the outbox after kairoi_flush" 0 \
		"$(sql -c "SELECT count(*) FROM kairoi.outbox")"
done
median=$(printf '%s\n' "${lags[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
echo "# kairoi_flush returned this many ms after the worker's delete committed: ${lags[*]} (median $median)"
awk -v m="$median" 'BEGIN {exit !(m >= 0 && m < 15)}' &&
	pass "kairoi_flush returns right after the acknowledged entries are deleted (median $median ms)" ||
	fail "kairoi_flush returned a median $median ms after the worker's delete committed"

# c. nothing to wait for
out=$(sql -c "BEGIN" -c "SELECT kairoi_flush('30s')" -c "$scans_sql" -c "COMMIT" | grep .)
check "empty outbox: kairoi_flush reads it once" 1 "$out"

check "nothing failed" 0 "$(sql -c "SELECT count(*) FROM kairoi.failed")"
finish
