#!/bin/bash
# bench/flush_overhead.sh: what a session waiting in kairoi_flush() costs the
# delivery of a large backlog.
#
#   bash bench/flush_overhead.sh      # FLUSH_JOBS=300000: about 1-2 minutes
#
# Fills the outbox with FLUSH_JOBS jobs while the test server refuses
# connections, then lets the worker drain it twice (VACUUM in between, so
# both start from the same table state):
#   a. nobody waits: the clock stops when the server stores every job;
#   b. one session sits in kairoi_flush('600s') while the worker drains.
# Prints both drain times, their ratio, the CPU seconds of the worker and
# of the flushing backend, and the flushing session's backend_xmin sampled
# during the drain (one value = it held the xmin horizon back throughout).
# No timing assertion (only sanity checks).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

FLUSH_JOBS=${FLUSH_JOBS:-300000}
started=$SECONDS

sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }

# fill PREFIX: FLUSH_JOBS jobs in the outbox, none delivered
fill() {
	local i
	$KCTL --port "$S_CPORT" reset >/dev/null
	$KCTL --port "$S_CPORT" fault refuse=true >/dev/null
	for ((i = 0; i < FLUSH_JOBS; i += 100000)); do
		psql_at P postgres -c "SELECT count(kairoi_job_set('$1' || g,
			timestamptz '2030-01-01 00:00:00+00')) FROM generate_series($i + 1,
			least($i + 100000, $FLUSH_JOBS)) g" >/dev/null || return 1
	done
}

echo "# flush overhead: FLUSH_JOBS=$FLUSH_JOBS"
start_server S || broken "start the test server"
start_cluster P "$S_PORT" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_is_up P postgres || broken "worker started"
wpid=$(worker_pid P postgres)

# a. nobody waits
fill a- || broken "fill the outbox"
w0=$(cpu_seconds "$wpid")
t0=$(now)
$KCTL --port "$S_CPORT" fault refuse=false >/dev/null
plain=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$FLUSH_JOBS" --t0 "$t0") ||
	broken "drain without flush"
plain_cpu=$(sub "$(cpu_seconds "$wpid")" "$w0")
psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null
psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules"

# b. one session waits in kairoi_flush
fill b- || broken "fill the outbox"
# the session lingers 10 s after the flush, so its CPU time can still be read
psql_at P postgres -c "SELECT kairoi_flush('600s')" -c "SELECT pg_sleep(10)" >/dev/null &
flusher=$!
CLEANUP_PIDS+=("$flusher")
flusher_pid() {
	psql_at P postgres -c "SELECT pid FROM pg_stat_activity
		WHERE query LIKE 'SELECT kairoi_flush%' AND pid <> pg_backend_pid()"
}
flusher_waiting() { [ -n "$(flusher_pid)" ]; }
wait_for "the flushing session" 30 flusher_waiting || broken "kairoi_flush session"
fpid=$(flusher_pid)
w0=$(cpu_seconds "$wpid")
f0=$(cpu_seconds "$fpid")
t0=$(now)
$KCTL --port "$S_CPORT" fault refuse=false >/dev/null
# sample the flushing session's xmin horizon while the worker drains
work=$(make_temp_dir)
(
	while [ ! -e "$work/stop" ]; do
		psql_at P postgres -c "SELECT backend_xmin FROM pg_stat_activity
			WHERE pid = $fpid AND state = 'active' AND query LIKE 'SELECT kairoi_flush%'"
		sleep 0.5
	done
) >"$work/xmin" 2>/dev/null &
sampler=$!
CLEANUP_PIDS+=("$sampler")
flushed=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$FLUSH_JOBS" --t0 "$t0") ||
	broken "drain with flush"
touch "$work/stop"
wait "$sampler"
flush_wcpu=$(sub "$(cpu_seconds "$wpid")" "$w0")
flush_fcpu=$(sub "$(cpu_seconds "$fpid")" "$f0")
wait "$flusher"
check "kairoi_flush returned without error" 0 $?

printf '%-28s %10s %10s %12s %12s\n' "" "drain s" "jobs/s" "worker CPU s" "flusher CPU s"
printf '%-28s %10.2f %10.0f %12s %12s\n' "nobody waiting" "$plain" \
	"$(awk -v n="$FLUSH_JOBS" -v s="$plain" 'BEGIN {print n / s}')" "$plain_cpu" "-"
printf '%-28s %10.2f %10.0f %12s %12s\n' "a session in kairoi_flush" "$flushed" \
	"$(awk -v n="$FLUSH_JOBS" -v s="$flushed" 'BEGIN {print n / s}')" "$flush_wcpu" "$flush_fcpu"
echo "backend_xmin of the flushing session during the drain: $(grep -c . "$work/xmin") samples," \
	"distinct values: $(sort -u "$work/xmin" | grep . | tr '\n' ' ')"
echo "slowdown with a waiting kairoi_flush: $(awk -v a="$flushed" -v b="$plain" 'BEGIN {printf "%.2f", a / b}')x"
check "outbox empty" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check_outbox_invariants P postgres
echo "runtime $((SECONDS - started))s"
finish
