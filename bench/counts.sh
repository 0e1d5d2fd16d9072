#!/bin/bash
# bench/counts.sh: what watching the queue costs when millions of entries
# are pending: the monitoring queries, and the worker's periodic duties.
#
#   bash bench/counts.sh             # about 6 minutes on 2 vCPU
#
# One cluster, the Kairoi server down (kairoi.server is a port nothing
# listens on: the workers count, poll and retry connecting, deliver
# nothing), and a database with the extension for each of DATABASES:
#   small    SMALL (10) entries pending
#   large    LARGE (2,000,000) entries pending
#   drained  LARGE entries written, then all deleted (as the worker deletes
#            what the server acknowledged) while another session of that
#            database holds a transaction open from before the delete: the
#            dead rows stay until it ends, as they do behind a long
#            transaction after a backlog drained.  Nothing is pending.
# The entries are written by kairoi_job_set_many in statements of CHUNK
# (100,000) jobs, then the queue's tables get VACUUM ANALYZE.
#
# Part 1, queries: in each database, in one session, REPEAT rounds of each
# of kairoi_status(), SELECT * FROM kairoi_workers and every query of
# monitoring/postgres_exporter_queries.yaml (the order rotated from round
# to round), timed by psql's \timing (client round trip included); median,
# 90th percentile and maximum in milliseconds.  For scale, a count(*) of
# kairoi.pending_jobs in "large" (COUNT_REPEAT times), what 1.1's
# kairoi_status() did.  Goal: each monitoring query under 10 ms (median)
# with LARGE pending.
#
# Part 2, the workers' periodic duties: kairoi.poll_interval = POLL (200
# ms), every worker's CPU (/proc/PID/schedstat) over the same ROUNDS (3)
# windows of WINDOW (20) seconds, in CPU milliseconds per poll interval
# (median of the windows, min-max).  Goal: the same with SMALL and LARGE
# pending.
#
# Nothing is asserted on time.  Ends with "N passed, M failed" for the
# sanity checks only (the queues hold what was written, every query ran,
# the workers kept their pids).
#
# Environment: DATABASES ("small large drained"), SMALL (10), LARGE
# (2000000), CHUNK (100000), REPEAT (50), COUNT_REPEAT (5), POLL (200,
# milliseconds), ROUNDS (3), WINDOW (20, seconds).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

DATABASES=${DATABASES:-"small large drained"}
SMALL=${SMALL:-10}
LARGE=${LARGE:-2000000}
CHUNK=${CHUNK:-100000}
REPEAT=${REPEAT:-50}
COUNT_REPEAT=${COUNT_REPEAT:-5}
POLL=${POLL:-200}
ROUNDS=${ROUNDS:-3}
WINDOW=${WINDOW:-20}
QUERIES_FILE=$KAIROI_ROOT/monitoring/postgres_exporter_queries.yaml

sql() { psql_at P "$1" -c "$2"; }

# fill DATABASE COUNT: COUNT jobs pending in DATABASE, CHUNK per statement
fill() {
	local db=$1 count=$2 from
	for ((from = 1; from <= count; from += CHUNK)); do
		sql "$db" "SELECT kairoi_job_set_many(array_agg('job.' || g),
				array_agg(timestamptz '2030-01-01 00:00:00+00' + g * interval '1 second'))
			FROM generate_series($from, $((from + CHUNK - 1 < count ? from + CHUNK - 1 : count))) AS g" \
			>/dev/null || return 1
	done
	sql "$db" "VACUUM ANALYZE kairoi.pending_jobs, kairoi.pending_rules" >/dev/null
}

# holds_xid DATABASE: a session of DATABASE is in a transaction with an xid
holds_xid() {
	[ "$(sql "$1" "SELECT count(*) FROM pg_stat_activity
		WHERE datname = '$1' AND application_name = 'xmin holder' AND backend_xid IS NOT NULL")" = 1 ]
}

# drain DATABASE: delete every entry of DATABASE while a session (left
# running, killed at exit) holds a transaction open from before
drain() {
	local db=$1
	PGAPPNAME="xmin holder" psql_at P "$db" \
		-c "BEGIN; SELECT pg_catalog.txid_current(); SELECT pg_catalog.pg_sleep(86400)" \
		>/dev/null 2>&1 &
	CLEANUP_PIDS+=("$!")
	wait_for "a transaction held open in $db" 30 holds_xid "$db" || return 1
	sql "$db" "DELETE FROM kairoi.pending_jobs" >/dev/null &&
		sql "$db" "VACUUM kairoi.pending_jobs" >/dev/null
}

# prepare DATABASE: its queue as DATABASES describes it
prepare() {
	case $1 in
	small) fill small "$SMALL" ;;
	large) fill large "$LARGE" ;;
	drained) fill drained "$LARGE" && drain drained ;;
	*)
		echo "unknown database $1 (small, large or drained)" >&2
		return 1
		;;
	esac
}

expected_pending() {
	case $1 in
	small) echo "$SMALL" ;;
	large) echo "$LARGE" ;;
	drained) echo 0 ;;
	esac
}

# The queries of the exporter's file, one file per metric in $WORK/queries
# (the block under each "query: |", its indentation removed), and two more
extract_queries() {
	mkdir -p "$WORK/queries"
	awk -v dir="$WORK/queries" '
		/^[a-z_]+:$/ {name = substr($0, 1, length($0) - 1)}
		/^  query: \|$/ {inq = 1; file = dir "/" name ".sql"; next}
		inq && /^    / {print substr($0, 5) > file; next}
		inq {inq = 0; close(file)}' "$QUERIES_FILE"
	printf 'SELECT * FROM kairoi_status()\n' >"$WORK/queries/kairoi_status().sql"
	printf 'SELECT * FROM kairoi_workers\n' >"$WORK/queries/kairoi_workers view.sql"
}

# time_queries DATABASE ROUNDS FILE...: one session runs the queries of the
# FILEs ROUNDS times, rotated; prints "file<TAB>milliseconds" per call
time_queries() {
	local db=$1 rounds=$2 round f
	shift 2
	{
		printf '%s\n' '\timing on'
		for ((round = 0; round < rounds; round++)); do
			rotate "$round" "$@" | while read -r f; do
				printf '\\echo @ %s\n' "$f"
				cat "$f"
				echo ';'
			done
		done
	} >"$WORK/timed.sql"
	psql_at P "$db" -f "$WORK/timed.sql" |
		awk '/^@ / {name = substr($0, 3)} /^Time: / {print name "\t" $2}'
}

# "median p90 max" of the numbers on stdin
summarize() {
	sort -g | awk '{v[NR] = $1} END {
		printf "%.2f %.2f %.2f\n", v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.999)], v[NR]}'
}

WORK=$(make_temp_dir)
# port 1: nothing listens there, the workers stay disconnected
start_cluster P 1 "kairoi.poll_interval = $POLL" || broken "start PostgreSQL"
started=$SECONDS
for db in $DATABASES; do
	if ! sql postgres "CREATE DATABASE $db" >/dev/null ||
		! sql "$db" "CREATE EXTENSION kairoi" >/dev/null; then
		broken "CREATE EXTENSION in $db"
	fi
	prepare "$db" || broken "prepare $db"
	check "$db: $(expected_pending "$db") pending" "$(expected_pending "$db")" \
		"$(sql "$db" "SELECT count(*) FROM kairoi.pending_jobs")"
done
echo "# $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
	"$("$PGBIN/postgres" --version); prepared in $((SECONDS - started)) s"
for db in $DATABASES; do
	wait_for "worker of $db" 30 worker_is_up P "$db" || broken "worker of $db"
	echo "$db: kairoi.pending_jobs has $(sql "$db" "SELECT pg_relation_size('kairoi.pending_jobs') / 8192") pages"
done
sleep $(((POLL * 3 + 999) / 1000)) # the workers count once more, after the fill

echo
echo "## Part 1: monitoring queries, $REPEAT calls each (ms, psql's timing)"
extract_queries
queries=("$WORK/queries/"*.sql)
check "4 queries from the exporter's file, 2 more" 6 "${#queries[@]}"
calls=()
printf '| %-7s | %-22s | %8s | %8s | %8s |\n' database query median p90 max
for db in $DATABASES; do
	time_queries "$db" "$REPEAT" "${queries[@]}" >"$WORK/times.$db"
	for f in "${queries[@]}"; do
		read -r med p90 max < <(awk -F'\t' -v f="$f" '$1 == f {print $2}' "$WORK/times.$db" | summarize)
		printf '| %-7s | %-22s | %8s | %8s | %8s |\n' "$db" "$(basename "$f" .sql)" "$med" "$p90" "$max"
		calls+=("$db: $(basename "$f" .sql) ran $REPEAT times|$(awk -F'\t' -v f="$f" '$1 == f' "$WORK/times.$db" | wc -l)")
	done
done
for call in "${calls[@]}"; do
	check "${call%|*}" "$REPEAT" "${call##*|}"
done
if [[ " $DATABASES " == *" large "* ]]; then
	printf 'SELECT count(*) FROM kairoi.pending_jobs\n' >"$WORK/count(*).sql"
	read -r med _ max < <(time_queries large "$COUNT_REPEAT" "$WORK/count(*).sql" | cut -f2 | summarize)
	echo "for scale, large: SELECT count(*) FROM kairoi.pending_jobs: median $med ms, max $max ms ($COUNT_REPEAT calls)"
fi
for db in $DATABASES; do
	echo "$db: kairoi_status() says pending $(sql "$db" "SELECT pending FROM kairoi_status()")," \
		"kairoi_workers says $(sql "$db" "SELECT pending FROM kairoi_workers WHERE database = '$db'")"
done

echo
echo "## Part 2: the workers' CPU per poll interval ($POLL ms), $ROUNDS windows of $WINDOW s"
declare -A PID CPU before
for db in $DATABASES; do
	PID[$db]=$(worker_pid P "$db")
done
for ((round = 1; round <= ROUNDS; round++)); do
	for db in $DATABASES; do
		before[$db]=$(precise_cpu_seconds "${PID[$db]}")
	done
	sleep "$WINDOW"
	line=""
	for db in $DATABASES; do
		CPU[$db]+=" $(awk -v a="${before[$db]}" -v b="$(precise_cpu_seconds "${PID[$db]}")" \
			-v polls="$((WINDOW * 1000 / POLL))" 'BEGIN {printf "%.4f", 1000 * (b - a) / polls}')"
		line+=" $db ${CPU[$db]##* } ms,"
	done
	echo "  window $round:$line per poll (load $(cut -d' ' -f1 /proc/loadavg))"
done
echo
printf '| %-7s | %-8s | %-21s | %-16s |\n' database pending "CPU ms per poll (med)" min-max
for db in $DATABASES; do
	# shellcheck disable=SC2086
	printf '| %-7s | %-8s | %-21s | %-16s |\n' "$db" "$(expected_pending "$db")" \
		"$(median ${CPU[$db]})" "$(minimum ${CPU[$db]})-$(maximum ${CPU[$db]})"
done
for db in $DATABASES; do
	check "$db: the same worker throughout" "${PID[$db]}" "$(worker_pid P "$db")"
done
echo
finish
