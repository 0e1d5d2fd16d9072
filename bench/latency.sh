#!/bin/bash
# bench/latency.sh: commit-to-acknowledgement latency of single-row commits.
#
#   bash bench/latency.sh             # about 2 minutes on 2 vCPU
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
# When the server has kairoi.idle_timeout, a second part measures the first
# commit after the worker closed its idle connection (state idle_reconnect),
# against a raw client that opens a new connection for its SET
# (raw_new_connection). Without that setting the part is skipped with a note.
#
# Prints p50/p90/p99/max per state and delay; with BENCH_RESULTS_DIR set,
# writes latency.tsv there (columns state, latency_ms, delay_ms; one row per
# sample). Ends with "N passed, M failed" for the sanity checks.
#
# Environment: SAMPLES (300 per state and delay), ROUNDS (5: the delays
# alternate by round), GAP_MS (40: minimum spacing of the samples),
# DELAY_MS (8), IDLE_SAMPLES (20 per delay), IDLE_TIMEOUT (1s: the
# kairoi.idle_timeout of the second part).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SAMPLES=${SAMPLES:-300}
ROUNDS=${ROUNDS:-5}
GAP_MS=${GAP_MS:-40}
DELAY_MS=${DELAY_MS:-8}
IDLE_SAMPLES=${IDLE_SAMPLES:-20}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-1s}

started=$SECONDS
echo "# kairoi commit-to-acknowledgement latency: $(date -u '+%Y-%m-%d %H:%M:%S') UTC," \
	"$(nproc) CPU, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# SAMPLES=$SAMPLES ROUNDS=$ROUNDS GAP_MS=$GAP_MS DELAY_MS=$DELAY_MS" \
	"IDLE_SAMPLES=$IDLE_SAMPLES IDLE_TIMEOUT=$IDLE_TIMEOUT"

tsv_args=()
if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	rm -f "$BENCH_RESULTS_DIR/latency.tsv"
	tsv_args=(--tsv "$BENCH_RESULTS_DIR/latency.tsv")
fi

start_server S --record-times || broken "start the test server"
start_cluster P "$S_PORT" "track_commit_timestamp = on" || broken "start PostgreSQL"
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
echo "runtime $((SECONDS - started))s"
finish
