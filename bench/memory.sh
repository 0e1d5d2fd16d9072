#!/bin/bash
# bench/memory.sh: the delivery worker's memory stays flat while it delivers
# MEMORY_JOBS (1,000,000) outbox entries.
#
#   bash bench/memory.sh              # about 1-2 minutes on 2 vCPU
#
# Commits MEMORY_JOBS jobs in transactions of MEMORY_BATCH (100,000) rows,
# back to back, while the worker delivers them to a fresh test server
# (reply_delay_ms=MEMORY_DELAY_MS, default 0). The worker's /proc/PID/status
# is sampled every 0.5 s: VmRSS and VmHWM as asked, and RssAnon, its private
# memory, and RssShmem. VmRSS also counts the pages of shared memory (shared_buffers) the
# worker has touched, which grows up to shared_buffers without any leak, so
# the checks are on RssAnon:
#   - every job delivered, outbox empty, same worker pid throughout;
#   - RssAnon after - before <= MEMORY_BOUND_MB (64);
#   - RssAnon peak during delivery - before <= MEMORY_BOUND_MB;
#   - VmRSS after - before <= MEMORY_BOUND_MB + shared_buffers.
# Prints before / during (sampled) / after and ends with "N passed, M failed"
# (exit status non-zero on failure), so it can run as a test.
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

MEMORY_JOBS=${MEMORY_JOBS:-1000000}
MEMORY_BATCH=${MEMORY_BATCH:-100000}
MEMORY_DELAY_MS=${MEMORY_DELAY_MS:-0}
MEMORY_BOUND_MB=${MEMORY_BOUND_MB:-64}
started=$SECONDS

# status_kb PID FIELD: a field of /proc/PID/status in kB
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

echo "# memory: MEMORY_JOBS=$MEMORY_JOBS MEMORY_BATCH=$MEMORY_BATCH" \
	"MEMORY_DELAY_MS=$MEMORY_DELAY_MS MEMORY_BOUND_MB=$MEMORY_BOUND_MB"
start_server S || broken "start the test server"
start_cluster P "$S_PORT" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_is_up P postgres || broken "worker started"
$KCTL --port "$S_CPORT" fault "reply_delay_ms=$MEMORY_DELAY_MS" >/dev/null
# warm up: one small delivery, so "before" is a worker that has worked
psql_at P postgres -c "SELECT kairoi_job_set('warm-' || g, now() + interval '1 day')
	FROM generate_series(1, 1000) g" >/dev/null
psql_at P postgres -c "SELECT kairoi_flush('60s')" >/dev/null || broken "warm-up delivery"
$KCTL --port "$S_CPORT" reset >/dev/null
$KCTL --port "$S_CPORT" fault "reply_delay_ms=$MEMORY_DELAY_MS" >/dev/null

wpid=$(worker_pid P postgres)
work=$(make_temp_dir)
rss0=$(status_kb "$wpid" VmRSS) hwm0=$(status_kb "$wpid" VmHWM) anon0=$(status_kb "$wpid" RssAnon)
shm0=$(status_kb "$wpid" RssShmem)
printf '%-8s %10s %10s %10s %11s %10s\n' "" "VmRSS MB" "VmHWM MB" "RssAnon MB" "RssShmem MB" "on server"
printf '%-8s %10s %10s %10s %11s %10s\n' "before" "$(mb "$rss0")" "$(mb "$hwm0")" "$(mb "$anon0")" "$(mb "$shm0")" 0

# sampler: every 0.5 s until told to stop
(
	while [ ! -e "$work/stop" ] && [ -e "/proc/$wpid" ]; do
		echo "$((SECONDS - started)) $(status_kb "$wpid" VmRSS) $(status_kb "$wpid" VmHWM)" \
			"$(status_kb "$wpid" RssAnon) $(status_kb "$wpid" RssShmem)" \
			"$($KCTL --port "$S_CPORT" count-jobs 2>/dev/null)"
		sleep 0.5
	done
) >"$work/samples" &
sampler=$!
CLEANUP_PIDS+=("$sampler")

deliver_start=$SECONDS
for ((done_jobs = 0; done_jobs < MEMORY_JOBS; done_jobs += MEMORY_BATCH)); do
	n=$((MEMORY_JOBS - done_jobs < MEMORY_BATCH ? MEMORY_JOBS - done_jobs : MEMORY_BATCH))
	psql_at P postgres -c "SELECT count(kairoi_job_set('mem-' || g,
		timestamptz '2030-01-01 00:00:00+00' + g * interval '1 second'))
		FROM generate_series($done_jobs + 1, $done_jobs + $n) g" >/dev/null ||
		broken "commit jobs $((done_jobs + 1))..$((done_jobs + n))"
done
commit_seconds=$((SECONDS - deliver_start))
# wait on the server's count first: a session waiting in kairoi_flush slows
# the drain of a large backlog (docs/benchmarks.md, finding 1)
$PYTHON "$KAIROI_ROOT/bench/wait_jobs.py" --cport "$S_CPORT" --count "$MEMORY_JOBS" \
	--t0 "$(date +%s.%N)" >/dev/null || fail "all jobs reach the server within 600 s"
psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || fail "kairoi_flush('600s')"
deliver_seconds=$((SECONDS - deliver_start))
touch "$work/stop"
wait "$sampler"

rss1=$(status_kb "$wpid" VmRSS) hwm1=$(status_kb "$wpid" VmHWM) anon1=$(status_kb "$wpid" RssAnon)
shm1=$(status_kb "$wpid" RssShmem)
stored=$($KCTL --port "$S_CPORT" count-jobs)
# print about 20 of the samples, and the peaks of all of them
awk -v every="$(($(wc -l <"$work/samples") / 20 + 1))" \
	'NR % every == 1 {printf "%-8s %10.1f %10.1f %10.1f %11.1f %10s\n", $1 "s", $2/1024, $3/1024, $4/1024, $5/1024, $6}' \
	"$work/samples"
printf '%-8s %10s %10s %10s %11s %10s\n' "after" "$(mb "$rss1")" "$(mb "$hwm1")" "$(mb "$anon1")" "$(mb "$shm1")" "$stored"
anon_peak=$(awk -v m="$anon1" '$4 > m {m = $4} END {print m}' "$work/samples")
rss_peak=$(awk -v m="$rss1" '$2 > m {m = $2} END {print m}' "$work/samples")
echo "committed in ${commit_seconds}s, delivered in ${deliver_seconds}s" \
	"($(awk -v n="$MEMORY_JOBS" -v s="$deliver_seconds" 'BEGIN {printf "%.0f", s ? n / s : 0}') jobs/s)"
echo "growth after - before: VmRSS $(mb $((rss1 - rss0))) MB, VmHWM $(mb $((hwm1 - hwm0))) MB," \
	"RssAnon $(mb $((anon1 - anon0))) MB, RssShmem $(mb $((shm1 - shm0))) MB; peak during: VmRSS $(mb "$rss_peak") MB," \
	"RssAnon $(mb "$anon_peak") MB"

check "all jobs on the server" "$MEMORY_JOBS" "$stored"
check "outbox empty" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check "same worker throughout" "$wpid" "$(worker_pid P postgres)"
check_outbox_invariants P postgres
bound=$((MEMORY_BOUND_MB * 1024))
if [ $((anon1 - anon0)) -le "$bound" ]; then
	pass "RssAnon growth $(mb $((anon1 - anon0))) MB <= $MEMORY_BOUND_MB MB"
else
	fail "RssAnon grew by $(mb $((anon1 - anon0))) MB (bound $MEMORY_BOUND_MB MB)"
fi
if [ $((anon_peak - anon0)) -le "$bound" ]; then
	pass "RssAnon peak $(mb $((anon_peak - anon0))) MB above start <= $MEMORY_BOUND_MB MB"
else
	fail "RssAnon peaked $(mb $((anon_peak - anon0))) MB above start (bound $MEMORY_BOUND_MB MB)"
fi
# VmRSS may also grow by the shared buffers the worker touched, no more
sb_kb=$(psql_at P postgres -c "SELECT setting::bigint * 8 FROM pg_settings WHERE name = 'shared_buffers'")
if [ $((rss1 - rss0)) -le $((bound + sb_kb)) ]; then
	pass "VmRSS growth $(mb $((rss1 - rss0))) MB <= $MEMORY_BOUND_MB MB + shared_buffers $(mb "$sb_kb") MB"
else
	fail "VmRSS grew by $(mb $((rss1 - rss0))) MB (bound $MEMORY_BOUND_MB MB + shared_buffers $(mb "$sb_kb") MB)"
fi
echo "runtime $((SECONDS - started))s"
finish
