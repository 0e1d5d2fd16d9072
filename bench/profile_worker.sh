#!/bin/bash
# bench/profile_worker.sh: where the delivery worker spends its CPU per entry.
#
#   bash bench/profile_worker.sh       # about 1 minute; needs perf (linux-perf)
#
# One fresh cluster and test server (reply_delay_ms=0, like section 1 of
# bench/delivery.sh): ROUNDS deliveries of JOBS jobs committed in one
# statement; the last one runs under `perf record -g -p <worker pid>`.
# Prints the worker's CPU per entry of each round and the share of the
# profiled samples by what the worker was doing (the acknowledgement delete,
# the fetch, the periodic count, commits, socket reads, the rest), then
# leaves perf.data in PERF_DATA for `perf report -i`.
#
# Environment: JOBS (100000), ROUNDS (3), PERF_DATA (/tmp/kairoi-worker.perf).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../test/lib.sh"

JOBS=${JOBS:-100000}
ROUNDS=${ROUNDS:-3}
PERF_DATA=${PERF_DATA:-/tmp/kairoi-worker.perf}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

command -v perf >/dev/null || { fail "perf is not installed"; finish; exit 1; }
start_server S || exit 1
start_cluster P "$S_PORT" "kairoi.batch_size = 500" || exit 1
psql_at P postgres -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the worker" 30 worker_is_up P postgres || exit 1
wpid=$(worker_pid P postgres)
hz=$(getconf CLK_TCK)
echo "# worker pid $wpid, $JOBS jobs per round, $(nproc) CPU, load average $(cut -d' ' -f1-3 /proc/loadavg)"
perf_pid=""
for ((round = 1; round <= ROUNDS; round++)); do
	$KCTL --port "$S_CPORT" reset >/dev/null
	psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || exit 1
	psql_at P postgres -c "SELECT count(kairoi_job_set('p$round-' || g,
		timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $JOBS) g" >/dev/null || exit 1
	if [ "$round" -eq "$ROUNDS" ]; then
		perf record -F 2000 -g -p "$wpid" -o "$PERF_DATA" >/dev/null 2>&1 &
		perf_pid=$!
		sleep 0.3
	fi
	t1=$(date +%s.%N)
	w0=$(cpu_ticks "$wpid")
	seconds=$($PYTHON "$KAIROI_ROOT/bench/wait_jobs.py" --cport "$S_CPORT" --count "$JOBS" --t0 "$t1") || exit 1
	psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || exit 1
	w1=$(cpu_ticks "$wpid")
	echo "round $round: delivered in ${seconds}s," \
		"worker $(awk -v t=$((w1 - w0)) -v hz="$hz" -v n="$JOBS" 'BEGIN {printf "%.2f", 1e6 * t / hz / n}') CPU µs per entry"
done
kill -INT "$perf_pid"
wait "$perf_pid"

# Each sample is counted once, under the first of these it is inside
perf script -i "$PERF_DATA" 2>/dev/null | awk 'BEGIN {RS = ""}
{
	n++
	if (/outbox_delete_acknowledged/) { k = "acknowledgement delete" }
	else if (/outbox_fetch/) { k = "outbox fetch" }
	else if (/outbox_count_pending/) { k = "periodic count (kairoi.poll_interval)" }
	else if (/fetch_and_send/) { k = "encode and queue requests" }
	else if (/CommitTransactionCommand/) { k = "commits" }
	else if (/connection_receive/) { k = "socket reads and response parsing" }
	else if (/connection_flush/) { k = "socket writes" }
	else { k = "the rest (loop, waits, transaction start)" }
	count[k]++
	if (/standard_planner/) { planned[k]++ }
}
END {
	printf "%d samples\n", n
	split("acknowledgement delete|outbox fetch|periodic count (kairoi.poll_interval)|encode and queue requests|commits|socket reads and response parsing|socket writes|the rest (loop, waits, transaction start)", keys, "|")
	for (i = 1; i in keys; i++)
		printf "%5.1f %%  %s (of which planning %.1f %%)\n", 100 * count[keys[i]] / n, keys[i], 100 * planned[keys[i]] / n
}'
echo "# perf report -i $PERF_DATA --children   for the details"
finish
