#!/bin/bash
# bench/nonascii.sh: delivery rate of jobs whose identifiers hold non-ASCII
# text, packed into single writes against one request per round trip.
#
#   bash bench/nonascii.sh            # about 1-2 minutes on 2 vCPU
#
# The reference server corrupts a character that one of its 2048-byte reads
# cuts in two, so the worker sends non-ASCII requests in single writes of at
# most kairoi.non_ascii_write_limit bytes, each when nothing else is in
# flight (README, "Pointing it at a real Kairoi server").  Three modes, in
# alternating rounds against one test server started with --split-reads and
# --reference-pace (the reference server's pace: replies in frames, 128 a
# second, one write per reply with Nagle on, one request handed on per
# turn), plus reply_delay_ms=DELAY_MS if set:
#   alone   kairoi.non_ascii_write_limit = 0: every non-ASCII request alone,
#           one round trip each (the behaviour before packing);
#   packed  the default limit (1400 bytes);
#   raw     the baseline: bench/raw_client.py writes RAW_PER_WRITE SETs of
#           the same shape ('ジョブ-r<run>-<n>') in one write, the next once
#           the first answer to the last is in (--first-answer, the worker's
#           pace), re-arming TCP_QUICKACK after each read.
# The same against the reference server itself: bench/reference.sh.
# Each round commits JOBS_<mode> jobs 'ジョブ-e<run>-<g>' in one statement
# and times from the commit until the server stores them all; requests per
# write = jobs / the server's reads (with nothing else in flight, each write
# is one read).  Every delivered identifier is checked byte for byte.
# Prints rates, requests per write and the ratios to alone and to raw
# (medians of REPEAT rounds, with the spread); nothing is asserted on time. Ends with
# "N passed, M failed" for the sanity checks.
#
# Environment: REPEAT (3), DELAY_MS (0), JOBS_ALONE (500), JOBS_PACKED
# (10000, also the raw client's count), RAW_PER_WRITE (28), BENCH_RESULTS_DIR (if set: nonascii.tsv there, columns
# mode requests_per_write rate ratio; ratio against alone).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

TOOL="$PYTHON $KAIROI_ROOT/test/integration/encodings_tool.py"
REPEAT=${REPEAT:-3}
DELAY_MS=${DELAY_MS:-0}
JOBS_ALONE=${JOBS_ALONE:-500}
JOBS_PACKED=${JOBS_PACKED:-10000}
RAW_PER_WRITE=${RAW_PER_WRITE:-28}
RUN=0

server_count() {
	$KCTL --port "$S_CPORT" counts | $PYTHON -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

# set_limit VALUE|DEFAULT: kairoi.non_ascii_write_limit, reloaded by the worker
set_limit() {
	local value="= '$1'"
	[ "$1" = DEFAULT ] && value="TO DEFAULT"
	psql_at P postgres -c "ALTER SYSTEM SET kairoi.non_ascii_write_limit $value" \
		-c "SELECT pg_reload_conf()" >/dev/null || broken "set the limit to $1"
	sleep 1
}

# run_raw COUNT: the raw client's round; prints "rate requests_per_write"
run_raw() {
	local out
	$KCTL --port "$S_CPORT" reset >/dev/null &&
		$KCTL --port "$S_CPORT" fault "reply_delay_ms=$DELAY_MS" >/dev/null || return 1
	RUN=$((RUN + 1))
	out=$($PYTHON "$BENCH/raw_client.py" --port "$S_PORT" --count "$1" --window "$((2 * RAW_PER_WRITE))" \
		--batch "$RAW_PER_WRITE" --first-answer --quickack --prefix "ジョブ-r$RUN-" --json) || return 1
	echo "$(echo "$out" | $PYTHON -c "import json,sys; print('%.1f' % json.load(sys.stdin)['rate'])")" \
		"$(fdiv "$1" "$(server_count reads)" %.1f)"
}

# run_mode MODE COUNT: one round; prints "rate requests_per_write"
run_mode() {
	local mode=$1 count=$2 t1 seconds reads corrupted
	$KCTL --port "$S_CPORT" reset >/dev/null &&
		$KCTL --port "$S_CPORT" fault "reply_delay_ms=$DELAY_MS" >/dev/null || return 1
	RUN=$((RUN + 1))
	psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || return 1
	psql_at P postgres -c "SELECT count(kairoi_job_set('ジョブ-e$RUN-' || g,
		timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $count) g" >/dev/null ||
		return 1
	t1=$(now)
	seconds=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$count" --t0 "$t1") ||
		return 1
	reads=$(server_count reads)
	corrupted=$($TOOL find-job --port "$S_CPORT" --id-expr "'\\ufffd'")
	[ -z "$corrupted" ] || {
		echo "run $RUN ($mode): corrupted identifiers on the server: $corrupted" >&2
		return 1
	}
	psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || return 1
	echo "$(fdiv "$count" "$seconds" %.1f) $(fdiv "$count" "$reads" %.1f)"
}

echo "# kairoi non-ASCII benchmark: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) CPU," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# REPEAT=$REPEAT DELAY_MS=$DELAY_MS JOBS_ALONE=$JOBS_ALONE JOBS_PACKED=$JOBS_PACKED"

start_server S --split-reads --reference-pace || broken "start the test server"
start_cluster P "$S_PORT" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_is_up P postgres || broken "worker started"

declare -A RATES PER_WRITE
TSV_ROWS=""
for ((r = 0; r < REPEAT; r++)); do
	for mode in alone packed raw; do
		case $mode in
		alone) set_limit 0 && count=$JOBS_ALONE ;;
		packed) set_limit DEFAULT && count=$JOBS_PACKED ;;
		raw) count=$JOBS_PACKED ;;
		esac
		if [ "$mode" = raw ]; then
			line=$(run_raw "$count") || broken "round $r, raw client"
		else
			line=$(run_mode "$mode" "$count") || broken "round $r, $mode"
		fi
		read -r rate per_write <<<"$line"
		RATES[$mode]="${RATES[$mode]:-} $rate"
		PER_WRITE[$mode]="${PER_WRITE[$mode]:-} $per_write"
		echo "# round $((r + 1)) $mode: $count jobs, $rate jobs/s, $per_write requests per write"
	done
done

echo
echo "## non-ASCII identifiers, reply_delay_ms=$DELAY_MS, --split-reads --reference-pace (median of $REPEAT)"
printf '%-8s %18s %12s %12s %12s %8s %8s\n' mode "requests/write" "jobs/s" "min" "max" ratio "vs raw"
# shellcheck disable=SC2086
base=$(median ${RATES[alone]})
# shellcheck disable=SC2086
raw=$(median ${RATES[raw]})
for mode in alone packed raw; do
	# shellcheck disable=SC2086
	rate=$(median ${RATES[$mode]})
	# shellcheck disable=SC2086
	per_write=$(median ${PER_WRITE[$mode]})
	# shellcheck disable=SC2086
	printf '%-8s %18s %12.0f %12.0f %12.0f %8s %8s\n' "$mode" "$per_write" "$rate" \
		"$(minimum ${RATES[$mode]})" "$(maximum ${RATES[$mode]})" "$(fdiv "$rate" "$base")" \
		"$(fdiv "$rate" "$raw")"
	TSV_ROWS+="$mode	$per_write	$rate	$(fdiv "$rate" "$base")
"
done
if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	mkdir -p "$BENCH_RESULTS_DIR"
	printf 'mode\trequests_per_write\trate\tratio\n%s' "$TSV_ROWS" >"$BENCH_RESULTS_DIR/nonascii.tsv"
	echo "# wrote $BENCH_RESULTS_DIR/nonascii.tsv"
fi

echo
check "nothing left in the outbox" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check "nothing failed" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.failed')"
check_outbox_invariants P postgres
finish
