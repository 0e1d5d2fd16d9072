#!/bin/bash
# bench/reference.sh: the extension against a raw KCP client, both on the
# reference Kairoi server, side by side in the same run.
#
#   KAIROI_REFERENCE_SERVER=/path/to/kairoi bash bench/reference.sh
#                                     # about 6-8 minutes on 2 vCPU
#
# The reference server (KAIROI_REFERENCE_SERVER: the binary `kairoi`, built
# from its upstream source; the test suite reads the same variable) runs
# with fsync on and framerate 512, with an empty store for every round of
# every variant: its rate falls as its store grows, and a SET that replaces
# a job costs more than a new one, so both sides always meet a store of the
# same size and the same kind of work.  Variants alternate within each
# round (their order too), ROUNDS rounds; each figure is the median over
# the rounds with its min-max, and the extension's median as a ratio of
# the raw client's.  Parts (PARTS, default all of them):
#
#   delivery  JOBS new jobs.  Extension: one statement commits them; the
#             clock runs from its commit timestamp until kairoi_flush()
#             returns (every job acknowledged and deleted).  Raw:
#             bench/raw_client.py, one connection, the worker's window and
#             batch (1000, 500), quick ACKs, from its connect to its last
#             answer.
#   replace   the same, into a store that already holds those JOBS jobs
#             (written untimed by the raw client): every SET replaces one.
#   backlog   JOBS jobs committed while the server was down (the worker in
#             backoff, kairoi.backoff_max = 100 ms); the clock runs from
#             the server's start until kairoi_flush() returns.  Raw: from
#             the server's start to its last answer.
#   nonascii  NONASCII_JOBS jobs with non-ASCII identifiers.  Extension:
#             packed single writes (kairoi.non_ascii_write_limit, default).
#             Raw: RAW_PER_WRITE SETs of the same shape a write, the next
#             write once the first answer to the previous one is in
#             (--first-answer: the pace the worker keeps), and, for
#             reference, once all of them are in (--drain: the worker's
#             pace in release 1.1).  The server's store is searched for U+FFFD
#             after every round: a corrupted identifier is a failure.
#   latency   commits of 1 and BURST_SIZE jobs at random moments (gaps of
#             GAP_MS..1.5*GAP_MS), each followed by kairoi_flush() in the
#             same session (bench/latency.py --phase bursts): burst_ack_N
#             is the commit's timestamp to the worker's delete, burst_flush_N
#             to kairoi_flush()'s return; raw_burst_N a raw client writing
#             the same SETs in one write, quick ACKs, to its last answer,
#             alternating commit for commit.  LATENCY_SAMPLES per size.
#
# With BENCH_RESULTS_DIR set, writes reference.tsv there (part variant
# median min max rounds ratio; rates in SET/s, latencies in ms) and
# reference_latency.tsv (bench/latency.py's samples).  Ends with
# "N passed, M failed" for the sanity checks (everything delivered, nothing
# corrupted, nothing left); nothing is asserted on time.
#
# Environment: KAIROI_REFERENCE_SERVER (required), PARTS ("delivery replace
# backlog nonascii latency"), ROUNDS (3), JOBS (20000), NONASCII_JOBS
# (5000), RAW_PER_WRITE (28), LATENCY_SAMPLES (100), LATENCY_ROUNDS (2),
# BURST_SIZE (10), GAP_MS (40).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=test/lib_reference.sh
. "$KAIROI_ROOT/test/lib_reference.sh"
# the server logs warnings only: nothing written per request while measured
REFERENCE_LOG_LEVEL=warn

PARTS=${PARTS:-delivery replace backlog nonascii latency}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-20000}
NONASCII_JOBS=${NONASCII_JOBS:-5000}
RAW_PER_WRITE=${RAW_PER_WRITE:-28}
LATENCY_SAMPLES=${LATENCY_SAMPLES:-100}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-2}
BURST_SIZE=${BURST_SIZE:-10}
GAP_MS=${GAP_MS:-40}
RUN=0
started=$SECONDS

require_reference_server
[ -z "${BENCH_RESULTS_DIR:-}" ] || mkdir -p "$BENCH_RESULTS_DIR"

# The worker's state in kairoi_status()
worker_state() { psql_at P postgres -c "SELECT state FROM kairoi_status()"; }
worker_connected() { [ "$(worker_state)" = connected ]; }
worker_not_connected() { [ "$(worker_state)" != connected ]; }

# reference_up: the reference server with an empty store (start_reference),
# on the port the worker is configured for
reference_up() { start_reference R "$KAIROI_REFERENCE_SERVER" "$SERVER_PORT"; }

# fresh_server: the server killed, its store removed, and started again
# (reference_up); returns once the worker is connected (or, with "down",
# once it is not, without starting the server)
fresh_server() {
	kill_reference R
	rm -rf "${R_STORE:?}"
	wait_for "the worker to notice the server is gone" 30 worker_not_connected || return 1
	[ "${1:-}" = down ] && return 0
	reference_up || return 1
	wait_for "the worker to connect" 30 worker_connected
}

# raw_seconds ARGS...: bench/raw_client.py on the server; prints its seconds
raw_seconds() {
	$PYTHON "$BENCH/raw_client.py" --port "$SERVER_PORT" --quickack --json "$@" |
		$PYTHON -c "import json,sys; r=json.load(sys.stdin); assert r['error'] == 0, r; print('%.4f' % r['seconds'])"
}

# ext_seconds SQL_EXPRESSION COUNT: commits COUNT jobs named by the
# expression (over g) in one statement; prints the seconds from its commit
# timestamp until kairoi_flush() returned
ext_seconds() {
	local xid
	xid=$(psql_at P postgres -c "SELECT pg_current_xact_id() FROM (SELECT count(kairoi_job_set($1,
		timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $2) g) s") || return 1
	psql_at P postgres -c "SELECT kairoi_flush('600s')" \
		-c "SELECT extract(epoch FROM clock_timestamp() - pg_xact_commit_timestamp('$xid'::xid))" |
		tail -1
}

# store_check PREFIX COUNT: "intact=I fffd=F" for the jobs PREFIX0 ..
# PREFIX<COUNT-1> in the server's store: I of them are stored byte for
# byte, and the store holds F U+FFFD characters.  The store (logfile, and
# logfile.compressed once compacted, which may hold the same entries again)
# keeps each identifier after its length in two bytes, big-endian.
store_check() {
	$PYTHON - "$R_DIR" "$1" "$2" <<'EOF'
import glob, os, struct, sys
store = b''.join(open(f, 'rb').read() for f in glob.glob(os.path.join(sys.argv[1], 'logfile*')))
prefix = os.fsencode(sys.argv[2])
ids = (prefix + str(n).encode() for n in range(int(sys.argv[3])))
intact = sum(1 for i in ids if struct.pack('>H', len(i)) + i in store)
print('intact=%d fffd=%d' % (intact, store.count('\ufffd'.encode())))
EOF
}

declare -A VALUES
TSV_ROWS=""
# record PART VARIANT VALUE
record() { VALUES[$1/$2]="${VALUES[$1/$2]:-} $3"; }

# one_round PART VARIANT: one timed run; sets RATE (SET/s)
one_round() {
	local part=$1 variant=$2 count=$JOBS seconds t0 flag
	RUN=$((RUN + 1))
	case $part in
	nonascii) count=$NONASCII_JOBS ;;
	esac
	if [ "$part" = backlog ]; then
		fresh_server down || return 1
		if [ "$variant" = extension ]; then
			psql_at P postgres -c "SELECT count(kairoi_job_set('b$RUN-' || g,
				timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $count) g" \
				>/dev/null || return 1
			sleep 1
		fi
		t0=$(now)
		reference_up || return 1
		if [ "$variant" = extension ]; then
			psql_at P postgres -c "SELECT kairoi_flush('600s')" >/dev/null || return 1
		else
			raw_seconds --count "$count" --prefix "r$RUN-" >/dev/null || return 1
		fi
		seconds=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}')
	else
		fresh_server || return 1
		if [ "$part" = replace ]; then
			raw_seconds --count "$count" --prefix "job-" >/dev/null || return 1
		fi
		case $part/$variant in
		delivery/extension) seconds=$(ext_seconds "'d$RUN-' || (g - 1)" "$count") ;;
		replace/extension) seconds=$(ext_seconds "'job-' || (g - 1)" "$count") ;;
		delivery/raw) seconds=$(raw_seconds --count "$count" --prefix "d$RUN-") ;;
		replace/raw) seconds=$(raw_seconds --count "$count" --prefix "job-") ;;
		nonascii/extension) seconds=$(ext_seconds "'ジョブ-e$RUN-' || (g - 1)" "$count") ;;
		nonascii/raw_first_answer | nonascii/raw_drain)
			flag=${variant#raw_}
			seconds=$(raw_seconds --count "$count" --prefix "ジョブ-r$RUN-" \
				--window "$((2 * RAW_PER_WRITE))" --batch "$RAW_PER_WRITE" "--${flag//_/-}") ;;
		esac
		[ -n "$seconds" ] || return 1
	fi
	if [ "$part" = nonascii ]; then
		local prefix=ジョブ-r$RUN-
		[ "$variant" = extension ] && prefix=ジョブ-e$RUN-
		check "$part round $RUN ($variant): every identifier intact in the store, no U+FFFD" \
			"intact=$count fffd=0" "$(store_check "$prefix" "$count")"
	fi
	RATE=$(fdiv "$count" "$seconds" %.1f)
}

# variants_of PART: the extension first, then its baselines
variants_of() {
	case $1 in
	nonascii) echo extension raw_first_answer raw_drain ;;
	*) echo extension raw ;;
	esac
}

# report PART: medians, spreads and ratios of one part's rates
report() {
	local part=$1 variant values median_rate base
	# shellcheck disable=SC2086
	base=$(median ${VALUES[$part/$(variants_of "$part" | awk '{print $2}')]})
	for variant in $(variants_of "$part"); do
		values=${VALUES[$part/$variant]}
		# shellcheck disable=SC2086
		median_rate=$(median $values)
		# shellcheck disable=SC2086
		printf '%-10s %-18s %10.0f %10.0f %10.0f %7s   (rounds:%s)\n' "$part" "$variant" \
			"$median_rate" "$(minimum $values)" "$(maximum $values)" \
			"$(fdiv "$median_rate" "$base")" "$values"
		# shellcheck disable=SC2086
		TSV_ROWS+="$part	$variant	$median_rate	$(minimum $values)	$(maximum $values)	$ROUNDS	$(fdiv "$median_rate" "$base")
"
	done
}

echo "# kairoi against the reference Kairoi server: $(date -u '+%Y-%m-%d %H:%M:%S') UTC," \
	"$(nproc) CPU, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# server $KAIROI_REFERENCE_SERVER; PARTS=\"$PARTS\" ROUNDS=$ROUNDS JOBS=$JOBS" \
	"NONASCII_JOBS=$NONASCII_JOBS RAW_PER_WRITE=$RAW_PER_WRITE LATENCY_SAMPLES=$LATENCY_SAMPLES" \
	"BURST_SIZE=$BURST_SIZE GAP_MS=$GAP_MS"

SERVER_PORT=$(free_port)
reference_up || broken "start the reference server"
# autovacuum off: a burst's acknowledgement is read as the last commit
start_cluster P "$SERVER_PORT" "track_commit_timestamp = on
autovacuum = off
kairoi.backoff_min = 20
kairoi.backoff_max = 100" || broken "start PostgreSQL"
psql_at P postgres -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
wait_for "the worker" 30 worker_connected || broken "the worker connected"

for part in $PARTS; do
	[ "$part" = latency ] && continue
	for ((r = 0; r < ROUNDS; r++)); do
		variants=$(variants_of "$part")
		# alternate the order: every other round starts with the last
		((r % 2 == 1)) && variants=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' ')
		for variant in $variants; do
			one_round "$part" "$variant" || broken "$part round $((r + 1)), $variant"
			record "$part" "$variant" "$RATE"
			echo "# $part round $((r + 1)) $variant: $RATE SET/s"
			psql_at P postgres -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || broken "VACUUM"
		done
	done
done

echo
printf '%-10s %-18s %10s %10s %10s %7s\n' part variant "SET/s" min max "vs raw"
for part in $PARTS; do
	[ "$part" = latency ] || report "$part"
done

if [[ " $PARTS " == *" latency "* ]]; then
	echo
	echo "## commits of 1 and $BURST_SIZE jobs, then kairoi_flush(): $LATENCY_SAMPLES per size," \
		"alternating with raw_burst_N (the same SETs in one write, quick ACKs); milliseconds"
	fresh_server || broken "fresh server for the latency part"
	tsv_args=()
	if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
		rm -f "$BENCH_RESULTS_DIR/reference_latency.tsv"
		tsv_args=(--tsv "$BENCH_RESULTS_DIR/reference_latency.tsv")
	fi
	psql_at P postgres -c "SELECT kairoi_job_set('warm-up', now() + interval '1 day')" \
		-c "SELECT kairoi_flush('30s')" >/dev/null || broken "warm-up delivery"
	$PYTHON "$BENCH/latency.py" --conninfo "host=$P_HOST port=$P_PORT user=postgres dbname=postgres" \
		--port "$SERVER_PORT" --phase bursts --samples "$LATENCY_SAMPLES" \
		--rounds "$LATENCY_ROUNDS" --sizes "1 $BURST_SIZE" --gap-ms "$GAP_MS" "${tsv_args[@]}" ||
		broken "latency samples"
fi

if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	printf 'part\tvariant\tmedian\tmin\tmax\trounds\tratio\n%s' "$TSV_ROWS" \
		>"$BENCH_RESULTS_DIR/reference.tsv"
	echo "# wrote $BENCH_RESULTS_DIR/reference.tsv"
fi

echo
psql_at P postgres -c "SELECT kairoi_flush('60s')" >/dev/null || fail "final flush"
check "nothing left in the outbox" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.outbox')"
check "nothing failed" 0 "$(psql_at P postgres -c 'SELECT count(*) FROM kairoi.failed')"
check_outbox_invariants P postgres
echo "runtime $((SECONDS - started))s"
finish
