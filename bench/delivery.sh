#!/bin/bash
# bench/delivery.sh: delivery throughput of the kairoi worker, as a ratio of
# a raw pipelined KCP client measured in the same run.
#
#   bash bench/delivery.sh            # about 4-5 minutes on 2 vCPU
#
# One run, one fresh test server (test/kairoi_server.py) and one fresh
# cluster (test/lib.sh):
#   1. baseline: bench/raw_client.py sends JOBS SETs over one connection
#      (window 1000, 500 per write) -> raw rate;
#   2. the extension: one statement commits JOBS kairoi_job_set() calls; the
#      clock runs from the commit until the server stores all JOBS jobs
#      (bench/wait_jobs.py polls the control port) -> extension rate, and
#      until kairoi_flush() returns (outbox empty, acknowledgements applied);
#   1 and 2 alternate, one of each per round, both without and with
#   reply_delay_ms=DELAY_MS (the reference server hands replies to
#   connections every 7.9 ms, kcp.md part 2: where windowing matters);
#   3. window sweep at DELAY_MS: kairoi.max_in_flight in SWEEP_WINDOWS (ALTER
#      SYSTEM + pg_reload_conf), the raw client at the same window as
#      baseline; then a kairoi.batch_size sweep at the default window;
#   4. backlog: with BACKLOGS entries pending when delivery starts (one
#      statement of kairoi_job_set_many commits them all, the worker is
#      woken by its commit), no reply delay, window WINDOW: the rate of the
#      first BACKLOG_FIRST entries (from the commit until the server stores
#      them), the rate of the whole, and the worker's CPU µs per entry until
#      kairoi_flush() returns; the sizes alternate round by round.  Whether
#      delivery costs the same per entry whatever the backlog.
# Each extension run starts from a vacuumed outbox (see docs/benchmarks.md).
# Section 1 also reports the worker's CPU µs per entry (CPU from the commit
# until kairoi_flush() returns, divided by JOBS).
# Every figure is the median of REPEAT runs. Nothing is asserted on time:
# the script prints rates and ratios extension/raw only (exit 0 unless
# something broke). Ends with "N passed, M failed" for the sanity checks
# (every job delivered, nothing left pending).
#
# With BENCH_RESULTS_DIR set, also writes there (tab-separated, one header
# line): delivery.tsv (delay_ms raw_rate ext_rate ratio) for section 1 and
# delivery_window.tsv (window raw_rate ext_rate ratio) for section 2 and
# delivery_backlog.tsv (pending first_rate whole_rate worker_us_per_entry)
# for section 4.
#
# Environment: JOBS (100000), REPEAT (3), DELAY_MS (8), SWEEP_WINDOWS
# ("1 10 100 1000 2000 5000"), SWEEP_JOBS (20000; a window W sends at most
# W*SWEEP_PER_SLOT jobs, SWEEP_PER_SLOT=500, so that window 1 stays short),
# BATCH_SIZES ("100 500 2000"), WINDOW (1000: window of the main runs and
# the batch sweep), BATCH (500: batch of the main runs), BACKLOGS ("10000
# 1000000"), BACKLOG_FIRST (10000), SECTIONS ("1 2 3 4": which sections
# run, e.g. SECTIONS=4 for the backlog alone).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

JOBS=${JOBS:-100000}
REPEAT=${REPEAT:-3}
DELAY_MS=${DELAY_MS:-8}
SWEEP_WINDOWS=${SWEEP_WINDOWS:-"1 10 100 1000 2000 5000"}
SWEEP_JOBS=${SWEEP_JOBS:-20000}
SWEEP_PER_SLOT=${SWEEP_PER_SLOT:-500}
BATCH_SIZES=${BATCH_SIZES:-"100 500 2000"}
WINDOW=${WINDOW:-1000}
BATCH=${BATCH:-500}
BACKLOGS=${BACKLOGS:-"10000 1000000"}
BACKLOG_FIRST=${BACKLOG_FIRST:-10000}
SECTIONS=${SECTIONS:-"1 2 3 4"}
RUN=0

# server_reset DELAY: forget all jobs, clear faults, set the reply delay
server_reset() {
	$KCTL --port "$S_CPORT" reset >/dev/null &&
		$KCTL --port "$S_CPORT" fault "reply_delay_ms=$1" >/dev/null
}

# raw_rate DELAY WINDOW COUNT BATCH: one raw-client run; prints its rate
raw_rate() {
	local out
	server_reset "$1" || return 1
	RUN=$((RUN + 1))
	out=$($PYTHON "$BENCH/raw_client.py" --port "$S_PORT" --count "$3" \
		--window "$2" --batch "$4" --prefix "raw$RUN-" --json) || {
		echo "raw client failed: $out" >&2
		return 1
	}
	$PYTHON -c 'import json,sys; print("%.1f" % json.loads(sys.argv[1])["rate"])' "$out"
}

# set_guc NAME VALUE: change a kairoi.NAME setting and let the worker reload
set_guc() {
	psql_at P postgres -c "ALTER SYSTEM SET kairoi.$1 = $2" \
		-c "SELECT pg_reload_conf()" >/dev/null || broken "set kairoi.$1 = $2"
	sleep 0.3
	check "kairoi.$1 is $2" "$2" "$(psql_at P postgres -c "SHOW kairoi.$1")" >/dev/null
}

# ext_run DELAY COUNT: one extension run; prints
# "rate flush_rate enqueue_seconds worker_cpu% server_cpu% worker_us_per_entry"
# (worker CPU% over the delivery; CPU µs per entry until kairoi_flush returns)
ext_run() {
	local delay=$1 count=$2 t0 t1 t2 deliver flush enq wpid w0 w1 w2 s0 s1 stored
	server_reset "$delay" || return 1
	RUN=$((RUN + 1))
	# every run starts from a vacuumed outbox: the rows deleted by the runs
	# before would otherwise slow the worker's fetches until autovacuum
	psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || return 1
	wpid=$(worker_pid P postgres)
	t0=$(now)
	psql_at P postgres -c "SELECT count(kairoi_job_set('ext$RUN-' || g,
		timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $count) g" >/dev/null ||
		return 1
	t1=$(now)
	w0=$(cpu_seconds "$wpid")
	s0=$(cpu_seconds "$S_PID")
	deliver=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$count" --t0 "$t1") ||
		return 1
	w1=$(cpu_seconds "$wpid")
	s1=$(cpu_seconds "$S_PID")
	psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || return 1
	t2=$(now)
	w2=$(cpu_seconds "$wpid")
	stored=$($KCTL --port "$S_CPORT" count-jobs)
	if [ "$stored" != "$count" ]; then
		echo "run $RUN: server stores $stored jobs, expected $count" >&2
		return 1
	fi
	flush=$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')
	enq=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
	echo "$(fdiv "$count" "$deliver" %.1f) $(fdiv "$count" "$flush" %.1f) $enq" \
		"$(fdiv "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print 100 * (b - a)}')" "$deliver" %.0f)" \
		"$(fdiv "$(awk -v a="$s0" -v b="$s1" 'BEGIN {print 100 * (b - a)}')" "$deliver" %.0f)" \
		"$(fdiv "$(awk -v a="$w0" -v b="$w2" 'BEGIN {print 1000000 * (b - a)}')" "$count" %.1f)"
}

# backlog_run COUNT: COUNT jobs committed by one statement, delivered
# without reply delay; prints "first_rate whole_rate worker_us_per_entry
# enqueue_seconds" (first_rate: the first BACKLOG_FIRST entries, from the
# commit)
backlog_run() {
	local count=$1 first=$((BACKLOG_FIRST < $1 ? BACKLOG_FIRST : $1)) t0 t1 times t_first t_whole wpid w0 w2
	server_reset 0 || return 1
	RUN=$((RUN + 1))
	psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || return 1
	wpid=$(worker_pid P postgres)
	t0=$(now)
	psql_at P postgres -c "SELECT kairoi_job_set_many(array_agg('bl$RUN-' || g),
		array_agg(timestamptz '2030-01-01 00:00:00+00' + g * interval '1 second'))
		FROM generate_series(1, $count) g" >/dev/null || return 1
	t1=$(now)
	w0=$(precise_cpu_seconds "$wpid")
	times=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$first" --count "$count" \
		--t0 "$t1") &&
		psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || return 1
	w2=$(precise_cpu_seconds "$wpid")
	t_first=$(head -1 <<<"$times")
	t_whole=$(tail -1 <<<"$times")
	echo "$(fdiv "$first" "$t_first" %.1f) $(fdiv "$count" "$t_whole" %.1f)" \
		"$(fdiv "$(awk -v a="$w0" -v b="$w2" 'BEGIN {print 1000000 * (b - a)}')" "$count" %.2f)" \
		"$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
}

# rounds DELAY COUNT [WINDOW BATCH]: REPEAT extension runs, each preceded
# by a raw-client run when WINDOW is given (alternating, so that both see
# the same machine); prints the medians "raw" (0 without WINDOW) and the
# fields of ext_run
rounds() {
	local r raws=(0) fields=() line f i
	[ $# -gt 2 ] && raws=()
	for ((r = 0; r < REPEAT; r++)); do
		if [ $# -gt 2 ]; then
			line=$(raw_rate "$1" "$3" "$2" "$4") || return 1
			raws+=("$line")
		fi
		line=$(ext_run "$1" "$2") || return 1
		read -r -a f <<<"$line"
		for i in "${!f[@]}"; do
			fields[i]="${fields[i]:-} ${f[i]}"
		done
	done
	line=$(median "${raws[@]}")
	for i in "${!fields[@]}"; do
		# shellcheck disable=SC2086
		line+=" $(median ${fields[i]})"
	done
	echo "$line"
}

# tsv_row FILE HEADER FIELDS...: append a row to BENCH_RESULTS_DIR/FILE,
# writing its header line first (nothing without BENCH_RESULTS_DIR)
tsv_row() {
	local file=$1 header=$2
	shift 2
	[ -n "${BENCH_RESULTS_DIR:-}" ] || return 0
	file="$BENCH_RESULTS_DIR/$file"
	[ -s "$file" ] || printf '%s\n' "$header" >"$file"
	(IFS=$'\t'; printf '%s\n' "$*") >>"$file"
}

started=$SECONDS
echo "# kairoi delivery benchmark: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) CPU," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# JOBS=$JOBS REPEAT=$REPEAT DELAY_MS=$DELAY_MS WINDOW=$WINDOW BATCH=$BATCH" \
	"SWEEP_WINDOWS=\"$SWEEP_WINDOWS\" SWEEP_JOBS=$SWEEP_JOBS BATCH_SIZES=\"$BATCH_SIZES\""

if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	mkdir -p "$BENCH_RESULTS_DIR" || broken "create $BENCH_RESULTS_DIR"
	rm -f "$BENCH_RESULTS_DIR/delivery.tsv" "$BENCH_RESULTS_DIR/delivery_window.tsv" \
		"$BENCH_RESULTS_DIR/delivery_backlog.tsv"
fi
start_server S || broken "start the test server"
start_cluster P "$S_PORT" "kairoi.max_in_flight = $WINDOW
kairoi.batch_size = $BATCH" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_is_up P postgres || broken "worker started"
# one small delivery so the worker is connected before the clock runs
ext_run 0 100 >/dev/null || broken "warm-up delivery"

if [[ " $SECTIONS " == *" 1 "* ]]; then
	echo
	echo "## 1. $JOBS jobs, window $WINDOW, batch $BATCH (median of $REPEAT)"
	printf '%-22s %12s %12s %8s %12s %10s %10s %10s %10s\n' "server" "raw SET/s" "ext SET/s" \
		"ext/raw" "flushed/s" "enqueue s" "worker CPU" "server CPU" "worker µs"
	for delay in 0 "$DELAY_MS"; do
		line=$(rounds "$delay" "$JOBS" "$WINDOW" "$BATCH") || broken "delivery, delay $delay"
		read -r raw rate frate enq wcpu scpu wus <<<"$line"
		printf '%-22s %12.0f %12.0f %8s %12.0f %10.2f %9s%% %9s%% %10s\n' "reply_delay_ms=$delay" \
			"$raw" "$rate" "$(fdiv "$rate" "$raw")" "$frate" "$enq" "$wcpu" "$scpu" "$wus"
		tsv_row delivery.tsv "$(printf 'delay_ms\traw_rate\text_rate\tratio')" \
			"$delay" "$raw" "$rate" "$(fdiv "$rate" "$raw")"
	done
fi

if [[ " $SECTIONS " == *" 2 "* ]]; then
	echo
	echo "## 2. window sweep, reply_delay_ms=$DELAY_MS, batch $BATCH (median of $REPEAT)"
	printf '%8s %8s %12s %12s %8s %12s %10s\n' "window" "jobs" "raw SET/s" "ext SET/s" "ext/raw" \
		"flushed/s" "worker CPU"
	best_window="" best_rate=0
	for w in $SWEEP_WINDOWS; do
		n=$((w * SWEEP_PER_SLOT < SWEEP_JOBS ? w * SWEEP_PER_SLOT : SWEEP_JOBS))
		set_guc max_in_flight "$w"
		line=$(rounds "$DELAY_MS" "$n" "$w" "$BATCH") || broken "delivery, window $w"
		read -r raw rate frate enq wcpu scpu _ <<<"$line"
		printf '%8s %8s %12.0f %12.0f %8s %12.0f %9s%%\n' "$w" "$n" "$raw" "$rate" \
			"$(fdiv "$rate" "$raw")" "$frate" "$wcpu"
		tsv_row delivery_window.tsv "$(printf 'window\traw_rate\text_rate\tratio')" \
			"$w" "$raw" "$rate" "$(fdiv "$rate" "$raw")"
		if awk -v a="$rate" -v b="$best_rate" 'BEGIN {exit !(a > b)}'; then
			best_window=$w best_rate=$rate
		fi
	done
	echo "best window by measurement: $best_window ($(printf '%.0f' "$best_rate") SET/s)"
fi

if [[ " $SECTIONS " == *" 3 "* ]]; then
	echo
	echo "## 3. batch_size sweep, window $WINDOW, reply_delay_ms=$DELAY_MS, $SWEEP_JOBS jobs (median of $REPEAT)"
	printf '%8s %12s %12s %10s\n' "batch" "ext SET/s" "flushed/s" "worker CPU"
	set_guc max_in_flight "$WINDOW"
	for b in $BATCH_SIZES; do
		set_guc batch_size "$b"
		line=$(rounds "$DELAY_MS" "$SWEEP_JOBS") || broken "extension delivery, batch $b"
		read -r _ rate frate enq wcpu scpu _ <<<"$line"
		printf '%8s %12.0f %12.0f %9s%%\n' "$b" "$rate" "$frate" "$wcpu"
	done
	set_guc batch_size "$BATCH"
fi

if [[ " $SECTIONS " == *" 4 "* ]]; then
	echo
	echo "## 4. backlog: delivery with $BACKLOGS pending, no reply delay, window $WINDOW (median of $REPEAT)"
	printf '%10s %16s %12s %10s %10s\n' "pending" "first $BACKLOG_FIRST/s" "whole/s" "worker µs" "enqueue s"
	declare -A BACKLOG_RESULTS
	for ((r = 0; r < REPEAT; r++)); do
		# shellcheck disable=SC2086
		for n in $(rotate "$r" $BACKLOGS); do
			line=$(backlog_run "$n") || broken "backlog of $n"
			BACKLOG_RESULTS[$n]+="$line"$'\n'
			echo "  round $((r + 1)): $n pending: $line (load $(cut -d' ' -f1 /proc/loadavg))"
		done
	done
	for n in $BACKLOGS; do
		fields=()
		for i in 1 2 3 4; do
			# shellcheck disable=SC2046
			fields+=("$(median $(printf '%s' "${BACKLOG_RESULTS[$n]}" | awk -v i="$i" 'NF {print $i}'))")
		done
		printf '%10s %16.0f %12.0f %10s %10s\n' "$n" "${fields[@]}"
		tsv_row delivery_backlog.tsv "$(printf 'pending\tfirst_rate\twhole_rate\tworker_us_per_entry')" \
			"$n" "${fields[0]}" "${fields[1]}" "${fields[2]}"
	done
fi

echo
check "nothing left in the outbox" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check "nothing failed" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.failed')"
check_outbox_invariants P postgres
echo "runtime ${SECONDS}s (benchmark $((SECONDS - started))s)"
finish
