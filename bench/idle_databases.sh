#!/bin/bash
# bench/idle_databases.sh: one database's delivery rate with nine idle
# databases that have the extension, as a ratio of the same database's rate
# with no other database having it; what the idle workers and the launcher
# cost; and what the launcher's scan of pg_database costs with 200
# databases without the extension.
#
#   bash bench/idle_databases.sh      # about 5-7 minutes on 2 vCPU
#
# One run, one fresh test server (test/kairoi_server.py) and one fresh
# cluster (test/lib.sh, kairoi.poll_interval back at its default 10 s):
#   1. delivery rate of database "bench", ROUNDS rounds, each measuring the
#      three variants one after the other (order reversed every other round):
#        none    no other database has the extension (baseline);
#        open    IDLE_DBS databases have it, kairoi.idle_timeout = 0: their
#                workers stay connected to the same server;
#        closed  IDLE_DBS databases have it, kairoi.idle_timeout = 60 s (the
#                default): their workers run with the connection closed.
#      A variant is set up with ALTER SYSTEM SET kairoi.idle_timeout and
#      DROP / CREATE EXTENSION in the idle databases, then waits until their
#      workers are in the expected state (kairoi_workers) and the server
#      counts the expected connections. A measurement is delivery.sh's
#      approach: a 100-job warm-up delivery (the worker is connected), the
#      server emptied, a vacuumed outbox, then one statement commits JOBS
#      kairoi_job_set() calls; the rate runs from the commit until the
#      server stores all JOBS jobs (bench/wait_jobs.py), then kairoi_flush.
#   2. CPU used over CPU_SECONDS by the nine idle workers, the launcher and
#      the test server (utime + stime from /proc/<pid>/stat), in the open
#      and closed variants.
#   3. SCAN_DBS databases without the extension: created (the launcher
#      probes each once), then the launcher's CPU over SCAN_SECONDS; then
#      PostgreSQL is restarted with log_min_messages = debug1 and the time
#      from "ready to accept connections" until the launcher has probed
#      every one of them (the postmaster's "starting background worker
#      process" and "unregistering background worker" lines of their
#      probes) is read from the log.
# Nothing is asserted on time: the script prints rates, spreads and ratios
# (of the medians, and the median of the ratios to the baseline of the same
# round).
# Ends with "N passed, M failed" for the sanity checks (every job delivered,
# the variants' states reached, no connection left to a database without
# the extension).
#
# Environment: JOBS (30000), ROUNDS (5), DELAY_MS (0: the test server's
# reply_delay_ms), IDLE_DBS (9), CPU_SECONDS (30), SCAN_DBS (200),
# SCAN_SECONDS (60). With BENCH_RESULTS_DIR set, writes idle_databases.tsv:
# idle_databases rate ratio idle_timeout_ms min_rate max_rate rounds
# (idle_timeout_ms: the kairoi.idle_timeout of the variant, 0 = open).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

JOBS=${JOBS:-30000}
ROUNDS=${ROUNDS:-5}
DELAY_MS=${DELAY_MS:-0}
IDLE_DBS=${IDLE_DBS:-9}
CPU_SECONDS=${CPU_SECONDS:-30}
SCAN_DBS=${SCAN_DBS:-200}
SCAN_SECONDS=${SCAN_SECONDS:-60}
DEFAULT_IDLE_TIMEOUT_MS=60000
VARIANTS=(none open closed)
RUN=0

# CPU nanoseconds on a core so far, all threads (first field of
# /proc/<pid>/task/*/schedstat): the time utime + stime count, without
# /proc/<pid>/stat's 10 ms ticks
cpu_ns() {
	local pid
	for pid in "$@"; do
		cat /proc/"$pid"/task/*/schedstat 2>/dev/null
	done | awk '{t += $1} END {printf "%.0f\n", t}'
}
# cpu_used S0 S1 NS0 NS1 SECONDS: CPU between two readings of cpu_seconds
# and cpu_ns taken SECONDS apart, as "X ms (Y % of a core; stat: Z ms)"
cpu_used() {
	awk -v s0="$1" -v s1="$2" -v n0="$3" -v n1="$4" -v t="$5" 'BEGIN {
		printf "%.2f ms (%.4f %% of a core; stat: %.0f ms)", (n1 - n0) / 1e6,
			100 * (n1 - n0) / 1e9 / t, 1000 * (s1 - s0) }'
}

sql() { psql_at P "$@"; }
idle_db() { echo "idle$1"; }
idle_dbs() { for ((i = 1; i <= IDLE_DBS; i++)); do idle_db "$i"; done; }
server_connections() {
	$PYTHON -c 'import json,sys; print(json.loads(sys.argv[1])["connections"])' \
		"$($KCTL --port "$S_CPORT" counts)"
}
# pids of the running kairoi workers of the idle databases
idle_worker_pids() {
	sql postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'kairoi worker'
		AND datname LIKE 'idle%' ORDER BY pid"
}
launcher_pid() { sql postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'kairoi launcher'"; }

# set_idle_timeout MS: kairoi.idle_timeout for the whole cluster, reloaded
set_idle_timeout() {
	sql postgres -c "ALTER SYSTEM SET kairoi.idle_timeout = $1" \
		-c "SELECT pg_reload_conf()" >/dev/null || broken "set kairoi.idle_timeout = $1"
	sleep 0.3
}

# variant_reached VARIANT: the idle databases' workers are as VARIANT wants
variant_reached() {
	local want_workers want_conns state
	case $1 in
	none) want_workers=0 state="" want_conns=1 ;;
	open) want_workers=$IDLE_DBS state="connected" want_conns=$((IDLE_DBS + 1)) ;;
	closed) want_workers=$IDLE_DBS state="idle:%" want_conns=1 ;;
	esac
	[ "$(idle_worker_pids | grep -c .)" = "$want_workers" ] || return 1
	[ "$(sql bench -c "SELECT count(*) FROM kairoi_workers WHERE database LIKE 'idle%'
		AND worker_pid IS NOT NULL AND state LIKE '$state'")" = "$want_workers" ] || return 1
	# the measured database's worker is connected (warm-up), the others per variant
	[ "$(server_connections)" = "$want_conns" ]
}

# setup_variant VARIANT: from any state to VARIANT's (see the header)
setup_variant() {
	local db
	case $1 in
	open) set_idle_timeout 0 ;;
	*) set_idle_timeout "$DEFAULT_IDLE_TIMEOUT_MS" ;;
	esac
	for db in $(idle_dbs); do
		sql "$db" -c "DROP EXTENSION IF EXISTS kairoi" 2>/dev/null || broken "DROP EXTENSION in $db"
	done
	wait_for "idle workers gone" 30 variant_reached_none_workers || broken "idle workers stopped"
	if [ "$1" != none ]; then
		for db in $(idle_dbs); do
			sql "$db" -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION in $db"
		done
	fi
	warm_up || broken "warm-up delivery ($1)"
	if wait_for "variant $1" 30 variant_reached "$1"; then
		pass "variant $1 reached"
	else
		fail "variant $1: idle workers not in the expected state"
		sql bench -c "SELECT database, worker_pid, state FROM kairoi_workers"
		echo "server connections: $(server_connections)"
	fi
}
variant_reached_none_workers() { [ -z "$(idle_worker_pids)" ]; }

# server_reset: forget all jobs, set the reply delay
server_reset() {
	$KCTL --port "$S_CPORT" reset >/dev/null &&
		$KCTL --port "$S_CPORT" fault "reply_delay_ms=$DELAY_MS" >/dev/null
}

# deliver COUNT: enqueue COUNT jobs in one statement; prints the seconds from
# the commit until the server stores them all, after checking the count
deliver() {
	local count=$1 t1 seconds stored
	server_reset || return 1
	RUN=$((RUN + 1))
	sql bench -c "VACUUM kairoi.pending_jobs, kairoi.pending_rules" || return 1
	sql bench -c "SELECT count(kairoi_job_set('r$RUN-' || g,
		timestamptz '2030-01-01 00:00:00+00')) FROM generate_series(1, $count) g" >/dev/null ||
		return 1
	t1=$(now)
	seconds=$($PYTHON "$BENCH/wait_jobs.py" --cport "$S_CPORT" --count "$count" --t0 "$t1") ||
		return 1
	sql bench -c "SELECT kairoi_flush('600s')" >/dev/null || return 1
	stored=$($KCTL --port "$S_CPORT" count-jobs)
	if [ "$stored" != "$count" ]; then
		echo "run $RUN: server stores $stored jobs, expected $count" >&2
		return 1
	fi
	echo "$seconds"
}

# one small delivery so that the measured worker is connected
warm_up() { deliver 100 >/dev/null; }

started=$SECONDS
echo "# kairoi idle databases benchmark: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) CPU," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# JOBS=$JOBS ROUNDS=$ROUNDS DELAY_MS=$DELAY_MS IDLE_DBS=$IDLE_DBS CPU_SECONDS=$CPU_SECONDS" \
	"SCAN_DBS=$SCAN_DBS SCAN_SECONDS=$SCAN_SECONDS"

start_server S || broken "start the test server"
start_cluster P "$S_PORT" "kairoi.poll_interval = 10000
max_worker_processes = $((IDLE_DBS + 16))
log_line_prefix = '%m [%p] '" || broken "start PostgreSQL"
LOG="$P_DIR/postgres.log"
sql postgres -c "CREATE DATABASE bench" || broken "CREATE DATABASE bench"
sql bench -c "CREATE EXTENSION kairoi" || broken "CREATE EXTENSION"
for db in $(idle_dbs); do
	sql postgres -c "CREATE DATABASE $db" || broken "CREATE DATABASE $db"
done
wait_for "the worker" 30 worker_is_up P bench || broken "worker started"
# one untimed delivery of JOBS: the first one of a cluster is slower
if ! { warm_up && deliver "$JOBS" >/dev/null; }; then broken "first delivery"; fi

# --- 1. delivery rate per variant, alternating
declare -A RATES ROUND_RATE
echo
echo "## 1. delivery rate of one database, $JOBS jobs, reply_delay_ms=$DELAY_MS ($ROUNDS rounds)"
for ((round = 1; round <= ROUNDS; round++)); do
	order=("${VARIANTS[@]}")
	[ $((round % 2)) = 0 ] && order=(closed open none)
	line="round $round:"
	for v in "${order[@]}"; do
		setup_variant "$v"
		seconds=$(deliver "$JOBS") || broken "delivery, variant $v, round $round"
		r=$(fdiv "$JOBS" "$seconds" %.1f)
		RATES[$v]="${RATES[$v]:-} $r"
		ROUND_RATE[$v,$round]=$r
		line="$line $v $(printf '%.0f' "$r")/s"
	done
	echo "$line"
done

[ -n "${BENCH_RESULTS_DIR:-}" ] &&
	printf 'idle_databases\trate\tratio\tidle_timeout_ms\tmin_rate\tmax_rate\trounds\n' \
		>"$BENCH_RESULTS_DIR/idle_databases.tsv"
echo
printf '%-8s %6s %16s %12s %12s %12s %8s %24s\n' "variant" "idle" "idle_timeout" "median/s" \
	"min/s" "max/s" "ratio" "same-round ratio med/min/max"
# shellcheck disable=SC2086
base=$(median ${RATES[none]})
for v in "${VARIANTS[@]}"; do
	# shellcheck disable=SC2086
	set -- ${RATES[$v]}
	med=$(median "$@")
	case $v in
	none) n=0 timeout=$DEFAULT_IDLE_TIMEOUT_MS ;;
	open) n=$IDLE_DBS timeout=0 ;;
	closed) n=$IDLE_DBS timeout=$DEFAULT_IDLE_TIMEOUT_MS ;;
	esac
	ratio=$(fdiv "$med" "$base")
	# the ratio to the baseline measured in the same round, less exposed
	# to the machine's load changing over the run
	paired=()
	for ((round = 1; round <= ROUNDS; round++)); do
		paired+=("$(fdiv "${ROUND_RATE[$v,$round]}" "${ROUND_RATE[none,$round]}")")
	done
	printf '%-8s %6s %16s %12.0f %12.0f %12.0f %8s %24s\n' "$v" "$n" "${timeout} ms" "$med" \
		"$(minimum "$@")" "$(maximum "$@")" "$ratio" \
		"$(median "${paired[@]}") / $(minimum "${paired[@]}") / $(maximum "${paired[@]}")"
	[ -n "${BENCH_RESULTS_DIR:-}" ] &&
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$med" "$ratio" "$timeout" \
			"$(minimum "$@")" "$(maximum "$@")" "$#" >>"$BENCH_RESULTS_DIR/idle_databases.tsv"
done

# --- 2. CPU of the idle workers, the launcher and the server
echo
echo "## 2. CPU over ${CPU_SECONDS} s with $IDLE_DBS idle databases"
for v in open closed; do
	setup_variant "$v"
	mapfile -t pids < <(idle_worker_pids)
	lpid=$(launcher_pid)
	check "$v: $IDLE_DBS idle workers found" "$IDLE_DBS" "${#pids[@]}"
	w0=$(cpu_seconds "${pids[@]}") l0=$(cpu_seconds "$lpid") s0=$(cpu_seconds "$S_PID")
	wn0=$(cpu_ns "${pids[@]}") ln0=$(cpu_ns "$lpid") sn0=$(cpu_ns "$S_PID")
	sleep "$CPU_SECONDS"
	w1=$(cpu_seconds "${pids[@]}") l1=$(cpu_seconds "$lpid") s1=$(cpu_seconds "$S_PID")
	wn1=$(cpu_ns "${pids[@]}") ln1=$(cpu_ns "$lpid") sn1=$(cpu_ns "$S_PID")
	check "$v: the idle workers ran throughout" "${pids[*]}" "$(idle_worker_pids | tr '\n' ' ' | sed 's/ $//')"
	echo "$v ($(server_connections) connections to the server):"
	echo "  $IDLE_DBS idle workers: $(cpu_used "$w0" "$w1" "$wn0" "$wn1" "$CPU_SECONDS")"
	echo "  launcher:        $(cpu_used "$l0" "$l1" "$ln0" "$ln1" "$CPU_SECONDS")"
	echo "  test server:     $(cpu_used "$s0" "$s1" "$sn0" "$sn1" "$CPU_SECONDS")"
done
setup_variant none

# --- 3. the launcher's scan with SCAN_DBS databases without the extension
echo
echo "## 3. $SCAN_DBS databases without the extension"
t0=$(now)
for ((i = 1; i <= SCAN_DBS; i++)); do
	printf 'CREATE DATABASE scan%03d;\n' "$i"
done | sql postgres >/dev/null || broken "create $SCAN_DBS databases"
echo "created in $(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"
scan_connections() { sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'scan%'"; }
no_scan_connection() { [ "$(scan_connections)" = 0 ]; }
wait_for "probes of the new databases over" 120 no_scan_connection
sleep 2
lpid=$(launcher_pid)
l0=$(cpu_seconds "$lpid") ln0=$(cpu_ns "$lpid")
sleep "$SCAN_SECONDS"
l1=$(cpu_seconds "$lpid") ln1=$(cpu_ns "$lpid")
echo "launcher CPU over ${SCAN_SECONDS} s with $(sql postgres -c 'SELECT count(*) FROM pg_database')" \
	"rows in pg_database (a scan every kairoi.poll_interval, 10 s):" \
	"$(cpu_used "$l0" "$l1" "$ln0" "$ln1" "$SCAN_SECONDS")"
check "no connection to a database without the extension" 0 "$(scan_connections)"
check "no worker for a database without the extension" 0 \
	"$(sql bench -c "SELECT count(*) FROM kairoi_workers WHERE database LIKE 'scan%'")"

sql postgres -c "ALTER SYSTEM SET log_min_messages = debug1" >/dev/null || broken "log_min_messages"
stop_postgres P fast || broken "stop PostgreSQL"
size=$(stat -c %s "$LOG")
t0=$(now)
start_postgres P || broken "restart PostgreSQL"
# probe_lines: the postmaster's start and end lines of the scan databases'
# probes (a worker that exits is unregistered: it is never restarted)
probe_lines() {
	tail -c +"$size" "$LOG" |
		grep -E "(starting background worker process|unregistering background worker) \"kairoi worker for database scan[0-9]+\""
}
all_probed() {
	local lines
	lines=$(probe_lines)
	[ "$(echo "$lines" | grep -c 'starting background worker process')" -ge "$SCAN_DBS" ] &&
		[ "$(echo "$lines" | grep -c 'unregistering background worker')" -ge "$SCAN_DBS" ]
}
wait_for "the first probe of $SCAN_DBS databases" 300 all_probed || fail "not every database probed"
polled=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
# log timestamps: "2026-11-29 21:00:00.123 UTC"
log_epoch() { date -d "$(echo "$1" | cut -d' ' -f1-3)" +%s.%N; }
ready=$(tail -c +"$size" "$LOG" | grep -m1 'database system is ready to accept connections')
first=$(probe_lines | grep -m1 'starting background worker process')
last=$(probe_lines | grep 'unregistering background worker' | tail -1)
echo "first probe of all $SCAN_DBS databases at start:" \
	"$(awk -v a="$(log_epoch "$ready")" -v b="$(log_epoch "$last")" 'BEGIN {printf "%.2f", b - a}') s" \
	"from \"ready to accept connections\" to the last probe's exit" \
	"(first probe started after $(awk -v a="$(log_epoch "$ready")" -v b="$(log_epoch "$first")" 'BEGIN {printf "%.2f", b - a}') s;" \
	"${polled} s from pg_ctl start, polling the log)"
check "probes left no connection" 0 "$(scan_connections)"
wait_for "the worker after the restart" 30 worker_is_up P bench
check "the measured database is served again" 1 \
	"$(sql bench -c "SELECT count(*) FROM kairoi_workers WHERE database = 'bench'")"

echo
check "nothing left in the outbox" 0 "$(sql bench -c 'SELECT count(*) FROM kairoi.outbox')"
check "nothing failed" 0 "$(sql bench -c 'SELECT count(*) FROM kairoi.failed')"
check_outbox_invariants P bench
echo "runtime $((SECONDS - started))s"
finish
