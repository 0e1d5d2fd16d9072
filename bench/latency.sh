#!/bin/bash
# bench/latency.sh: commit-to-acknowledgement latency of single-row commits,
# of commits of a few jobs, and of kairoi_flush() after them.
#
#   bash bench/latency.sh             # about 3 minutes on 2 vCPU
#
# The test server runs with --reference-replies: like the reference server,
# it writes each reply on its own on a socket with Nagle's algorithm on, so
# a client that delays its ACKs waits ~40 ms for all but the first reply of
# a burst (README, "Pointing it at a real Kairoi server").
#
# Many single-row commits (kairoi_job_set in its own transaction), spaced so
# that each finds the worker connected and idle, against the test server
# without reply delay and with reply_delay_ms=DELAY_MS (the reference
# server's ~8 ms reply cadence, kcp.md). The latency runs from the commit to
# the moment the server stores the job and answers OK, both on the machine's
# wall clock: PostgreSQL's commit timestamp (track_commit_timestamp, taken
# microseconds before the commit returns) and the test server's store time
# (--record-times). Nothing polls while a sample runs (bench/latency.py says
# why the client does not stamp the commit's return itself).
# Baseline in the same run, sample for sample: a raw KCP client sending one
# SET on its own open connection (state raw_connected).
#
# Commits of several jobs (BURST_SIZES) in one transaction, each followed by
# kairoi_flush() in the same session: time until the worker had every OK and
# deleted the entries (burst_ack_N) and until kairoi_flush() returned
# (burst_flush_N), against a raw client writing the same SETs in one write
# on its open connection with quick ACKs (raw_burst_N); see bench/latency.py.
#
# When the server has kairoi.idle_timeout, a second part measures the first
# commit after the worker closed its idle connection (state idle_reconnect),
# against a raw client that opens a new connection for its SET
# (raw_new_connection). Without that setting the part is skipped with a note.
#
# Prints p10/p50/p90/p99/max per state and delay, and each state's p50 minus
# its baseline's; with BENCH_RESULTS_DIR set, writes latency.tsv there
# (columns state, latency_ms, delay_ms; one row per sample; single-row
# commits) and latency_burst.tsv (same columns, the bursts). Ends with "N passed, M failed" for the sanity checks.
#
# Environment: SAMPLES (300 per state and delay), ROUNDS (5: the delays
# alternate by round), GAP_MS (40: minimum spacing of the samples),
# DELAY_MS (8), IDLE_SAMPLES (20 per delay), IDLE_TIMEOUT (1s: the
# kairoi.idle_timeout of the second part), BURST_SIZES ("2 10 28"),
# BURST_SAMPLES (60 per size, state and delay).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SAMPLES=${SAMPLES:-300}
ROUNDS=${ROUNDS:-5}
GAP_MS=${GAP_MS:-40}
DELAY_MS=${DELAY_MS:-8}
IDLE_SAMPLES=${IDLE_SAMPLES:-20}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-1s}
BURST_SIZES=${BURST_SIZES:-2 10 28}
BURST_SAMPLES=${BURST_SAMPLES:-60}

started=$SECONDS
echo "# kairoi commit-to-acknowledgement latency: $(date -u '+%Y-%m-%d %H:%M:%S') UTC," \
	"$(nproc) CPU, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# SAMPLES=$SAMPLES ROUNDS=$ROUNDS GAP_MS=$GAP_MS DELAY_MS=$DELAY_MS" \
	"IDLE_SAMPLES=$IDLE_SAMPLES IDLE_TIMEOUT=$IDLE_TIMEOUT BURST_SIZES=\"$BURST_SIZES\"" \
	"BURST_SAMPLES=$BURST_SAMPLES"

tsv_args=()
burst_tsv_args=()
if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	rm -f "$BENCH_RESULTS_DIR/latency.tsv" "$BENCH_RESULTS_DIR/latency_burst.tsv"
	tsv_args=(--tsv "$BENCH_RESULTS_DIR/latency.tsv")
	burst_tsv_args=(--tsv "$BENCH_RESULTS_DIR/latency_burst.tsv")
fi

start_server S --record-times --reference-replies || broken "start the test server"
# autovacuum off: a burst's acknowledgement is read as the last commit
start_cluster P "$S_PORT" "track_commit_timestamp = on
autovacuum = off" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_is_up P postgres || broken "worker started"
psql_at P postgres -c "SELECT kairoi_job_set('warm-up', now() + interval '1 day')" \
	-c "SELECT kairoi_flush('30s')" >/dev/null || broken "warm-up delivery"

latency() {
	$PYTHON "$KAIROI_ROOT/bench/latency.py" \
		--conninfo "host=$P_HOST port=$P_PORT user=postgres dbname=postgres" \
		--port "$S_PORT" --cport "$S_CPORT" --delays "0 $DELAY_MS" --gap-ms "$GAP_MS" \
		"${tsv_args[@]}" "$@"
}

echo
echo "## worker connected and idle: $SAMPLES commits per delay; baseline raw_connected"
out=$(latency --phase connected --samples "$SAMPLES" --rounds "$ROUNDS") ||
	broken "connected samples: $out"
echo "$out"
check "every commit found the worker idle (no overlapped sample)" 0 \
	"$(echo "$out" | sed -n 's/^overlapped samples.*: //p')"

echo
echo "## commits of $BURST_SIZES jobs, then kairoi_flush(): $BURST_SAMPLES commits per size and" \
	"delay; baseline raw_burst_N (same SETs in one write, quick ACKs)"
# shellcheck disable=SC2086
out=$(latency --phase bursts --samples "$BURST_SAMPLES" --rounds "$ROUNDS" \
	--sizes "$BURST_SIZES" "${burst_tsv_args[@]}") || broken "burst samples: $out"
echo "$out"

echo
if psql_at P postgres -c "SHOW kairoi.idle_timeout" >/dev/null 2>&1; then
	echo "## first commit after the idle connection was closed (kairoi.idle_timeout = $IDLE_TIMEOUT):" \
		"$IDLE_SAMPLES commits per delay; baseline raw_new_connection"
	psql_at P postgres -c "ALTER SYSTEM SET kairoi.idle_timeout = '$IDLE_TIMEOUT'" \
		-c "SELECT pg_reload_conf()" >/dev/null || broken "set kairoi.idle_timeout"
	out=$(latency --phase idle_reconnect --samples "$IDLE_SAMPLES" --rounds 2) ||
		broken "idle_reconnect samples: $out"
	echo "$out"
	psql_at P postgres -c "ALTER SYSTEM RESET kairoi.idle_timeout" \
		-c "SELECT pg_reload_conf()" >/dev/null || broken "reset kairoi.idle_timeout"
else
	echo "note: this server has no kairoi.idle_timeout; idle_reconnect not measured"
fi

echo
psql_at P postgres -c "SELECT kairoi_flush('30s')" >/dev/null || broken "final flush"
check "nothing left in the outbox" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check "nothing failed" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.failed')"
check_outbox_invariants P postgres
echo "runtime $((SECONDS - started))s"
finish
