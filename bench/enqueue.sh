#!/bin/bash
# bench/enqueue.sh: what scheduling a job costs the application's write, as
# a ratio of a plain upsert measured in the same run, beside PgQ's and
# graphile-worker's ready-made ways of queueing from a trigger.
#
#   bash bench/enqueue.sh            # about 10 minutes on 2 vCPU
#
# Part 1, per-row triggers: pgbench runs `INSERT INTO orders_<variant>
# DEFAULT VALUES` (orders: id bigserial, placed_at timestamptz) with one
# AFTER INSERT FOR EACH ROW trigger per variant:
#   plain_upsert      plpgsql INSERT INTO reminders_plain (job text PRIMARY
#                     KEY, at timestamptz) ... ON CONFLICT (job) DO UPDATE:
#                     the baseline, ratio 1.00
#   kairoi_plpgsql    plpgsql PERFORM kairoi_job_set('order.' || NEW.id,
#                     NEW.placed_at + interval '1 day')
#   empty_trigger     plpgsql RETURN NULL (the floor of any trigger)
#   c_noop            plpgsql PERFORM pg_catalog.num_nulls(<the same two
#                     argument expressions>): a built-in C function that
#                     returns at once, so the cost of a call without SPI
#   outbox_copy       plpgsql INSERT ... ON CONFLICT (identifier) DO UPDATE
#                     into bench_queue, a copy of kairoi.pending_jobs
#                     (columns, indexes) numbered by a sequence of its own,
#                     one nextval per call, as kairoi does: what the queue's
#                     shape costs with no kairoi code
#   kairoi_c_trigger  EXECUTE FUNCTION kairoi_job_trigger('order.', 'id',
#                     'placed_at', '1 day'), no plpgsql at all
#   pgq_logutriga     PgQ's ready-made trigger, EXECUTE FUNCTION
#                     pgq.logutriga('bench') (a queue of its own; no
#                     consumer, no ticker).  Needs Debian's
#                     postgresql-<major>-pgq3: installed with apt-get when
#                     missing, and copied into PGBIN's installation when
#                     that is a relocated copy of Debian's (test/lib.sh,
#                     relocated_postgres)
#   graphile_add_job  plpgsql PERFORM graphile_worker.add_job('remind',
#                     json_build_object('order', NEW.id), run_at := ...,
#                     job_key := 'order.' || NEW.id): graphile-worker's
#                     coalescing.  Its schema is installed by its own CLI
#                     (`graphile-worker --schema-only`), from npm (npm install
#                     graphile-worker@GRAPHILE_VERSION in a temporary
#                     directory; needs Node.js, npm and the npm registry)
# at CLIENTS (1 and 4) clients, fsync = off, once with the Kairoi test
# server down (the worker waits in backoff, the queue grows) and once with
# it up and delivering.  ROUNDS rounds of DURATION seconds per variant; in
# each round every variant runs once, the order rotated from round to round,
# so that load from elsewhere on the machine spreads over all of them.
# Medians and the spread over the rounds are reported, with
# ratio = median tps / median tps of plain_upsert at the same server state
# and client count; "paired" is the median over the rounds of the variant's
# tps over plain_upsert's in the same round, which a machine whose speed
# drifts between rounds disturbs less.  Also per variant: PostgreSQL's CPU
# per transaction (every process of the cluster: backends, the worker,
# WAL writer...; not pgbench, not the test server) and its ratio to
# plain_upsert's ("CPU ratio": plain µs / variant µs, higher is cheaper),
# the worker's CPU and, server up, the test server's CPU (% of a core).
# With the server up, every run starts with the queue delivered.  Every
# round starts from empty tables (kairoi's too, server down; PgQ's event
# tables and graphile-worker's jobs always).
#
# Part 2, set-based (server down): rows/s of
#   plain_insert_select       INSERT INTO reminders_plain SELECT ... FROM
#                             generate_series(1, SET_ROWS) ON CONFLICT ...
#   outbox_copy_insert_select the same into bench_queue (the copy of
#                             kairoi.pending_jobs, a nextval per row):
#                             what the queue's shape costs
#   kairoi_select             SELECT count(kairoi_job_set(...)) FROM
#                             generate_series(1, SET_ROWS)
#   kairoi_array              SELECT kairoi_job_set_many(array_agg(...),
#                             array_agg(...)) FROM generate_series(...)
#   plain_statement_trigger   INSERT INTO bulk_orders_plain SELECT ... FROM
#                             generate_series(...); an AFTER INSERT FOR EACH
#                             STATEMENT trigger upserts its transition table
#                             into reminders_plain (ON CONFLICT)
#   kairoi_statement_trigger  the same INSERT into bulk_orders_kairoi, whose
#                             plpgsql statement trigger calls the array form
#                             on the transition table
#   kairoi_c_statement_trigger the same INSERT into bulk_orders_c, whose
#                             statement trigger is kairoi_job_trigger('order.',
#                             'id', 'placed_at', '1 day') with REFERENCING NEW
#                             TABLE AS new_rows FOR EACH STATEMENT
# ratio against plain_insert_select; every run starts from empty tables.
#
# Nothing is asserted on time.  Ends with "N passed, M failed" for the
# sanity checks only (every variant ran, rows arrived, the server got every
# job of the "up" runs, the peers' schemas could be installed: a peer that
# cannot be set up is left out and counted as a failure, saying why).
#
# Environment: ROUNDS (3), DURATION (4 seconds per pgbench run), CLIENTS
# ("1 4"), SERVER_STATES ("down up"), VARIANTS (all eight, as above),
# SET_ROWS (100000), SET_ROUNDS (3), SET_CASES (all seven, as above), PG_CONF
# (extra postgresql.conf lines, e.g. "kairoi.batch_delay = 0"),
# GRAPHILE_VERSION (0.16), GRAPHILE_DIR (a directory where graphile-worker
# is already installed by npm: skips the install).  With BENCH_RESULTS_DIR
# set, writes enqueue.tsv and enqueue_set.tsv there (columns:
# docs/benchmarks.md).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=bench/enqueue_variants.sh
. "$BENCH/enqueue_variants.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
CLIENTS=${CLIENTS:-"1 4"}
SERVER_STATES=${SERVER_STATES:-"down up"}
VARIANTS=${VARIANTS:-"plain_upsert kairoi_plpgsql empty_trigger c_noop outbox_copy kairoi_c_trigger pgq_logutriga graphile_add_job"}
SET_ROWS=${SET_ROWS:-100000}
SET_ROUNDS=${SET_ROUNDS:-3}
SET_CASES=${SET_CASES:-"plain_insert_select outbox_copy_insert_select kairoi_select kairoi_array plain_statement_trigger kairoi_statement_trigger kairoi_c_statement_trigger"}
GRAPHILE_VERSION=${GRAPHILE_VERSION:-0.16}
GRAPHILE_DIR=${GRAPHILE_DIR:-}
# The orders tables whose triggers schedule jobs through kairoi
KAIROI_ORDERS=$(for v in $VARIANTS; do case $v in kairoi_*) printf 'orders_%s ' "$v" ;; esac; done)

sql() { psql_at P postgres -c "$1"; }
worker_connected() { [ "$(sql "SELECT state FROM kairoi_status()")" = connected ]; }

setup_schema() {
	local v range=0
	create_target_tables || return 1
	for v in $VARIANTS; do
		range=$((range + 1))
		create_variant "$v" "$range" || return 1
		echo "INSERT INTO orders_$v DEFAULT VALUES;" >"$WORK/$v.sql"
	done
	create_set_tables
}

# Empty the tables a run writes, outside the timed part, and the peers'
# queues.  With the server down kairoi's queue is emptied too, so every run
# starts from the same state.
reset_tables() {
	local tables="reminders_plain, bench_queue, bulk_orders_plain, bulk_orders_kairoi, bulk_orders_c"
	[ "$1" = down ] && tables+=", kairoi.pending_jobs, kairoi.pending_rules"
	[ -n "${PGQ_EVENTS:-}" ] && tables+=", $PGQ_EVENTS"
	[ -n "${GRAPHILE_INSTALLED:-}" ] && tables+=", graphile_worker._private_jobs"
	sql "TRUNCATE $tables; CHECKPOINT" >/dev/null
}

# pgbench_run VARIANT CLIENTS: prints "tps transactions"
pgbench_run() {
	"$PGBIN/pgbench" -n -h "$P_HOST" -p "$P_PORT" -U postgres -c "$2" -j "$2" \
		-T "$DURATION" -f "$WORK/$1.sql" postgres 2>&1 |
		awk '/^number of transactions actually processed: / {n = $6}
			/^tps = / {print $3, n; exit}'
}

# cpu_percent BEFORE AFTER: CPU seconds over DURATION, as % of one core
cpu_percent() {
	awk -v a="$1" -v b="$2" -v d="$DURATION" 'BEGIN {printf "%.0f", 100 * (b - a) / d}'
}

# Part 1 for one server state: fills, per run (round order), the lists
# TPS_<state>_<clients>_<variant>, PGCPU_... (PostgreSQL's CPU µs per
# transaction: backends, worker and every other process of the cluster),
# CPU_... (the worker's CPU, % of a core) and SRVCPU_... (the test
# server's)
run_triggers() {
	local state=$1 clients round v result tps txns wpid w0 w1 s0 s1 p0 p1 suffix
	for clients in $CLIENTS; do
		for round in $(seq 1 "$ROUNDS"); do
			reset_tables "$state"
			# shellcheck disable=SC2046,SC2086
			for v in $(rotate "$round" $VARIANTS); do
				# The worker starts each run idle: what an earlier run left
				# to deliver would count against this one
				[ "$state" = down ] || sql "SELECT kairoi_flush('300s')" >/dev/null
				wpid=$(worker_pid P postgres)
				w0=$(cpu_seconds "${wpid:-0}")
				s0=$(cpu_seconds "${S_PID:-0}")
				p0=$(postgres_cpu_seconds "$P_DIR/data")
				result=$(pgbench_run "$v" "$clients")
				w1=$(cpu_seconds "${wpid:-0}")
				s1=$(cpu_seconds "${S_PID:-0}")
				sleep 0.3 # the postmaster reaps pgbench's backends
				p1=$(postgres_cpu_seconds "$P_DIR/data")
				read -r tps txns <<<"$result"
				if [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" -eq 0 ]; then
					fail "pgbench ran $v at $clients clients (server $state)"
					continue
				fi
				suffix="${state}_${clients}_${v}"
				append "TPS_$suffix" "$tps"
				append "PGCPU_$suffix" "$(awk -v a="$p0" -v b="$p1" -v n="$txns" 'BEGIN {printf "%.1f", 1e6 * (b - a) / n}')"
				append "CPU_$suffix" "$(cpu_percent "$w0" "$w1")"
				if [ "$state" = up ]; then
					append "SRVCPU_$suffix" "$(cpu_percent "$s0" "$s1")"
				else
					append "SRVCPU_$suffix" 0
				fi
				printf '  server %-4s clients %d round %d %-17s %8.0f tps\n' \
					"$state" "$clients" "$round" "$v" "$tps"
			done
		done
	done
}

# append VAR VALUE: add a word to a list variable
append() {
	printf -v "$1" '%s' "${!1:-} $2"
}

# paired_ratio LIST BASE_LIST: median over rounds of LIST[i] / BASE_LIST[i]
# (each round ran every variant once, close together in time)
paired_ratio() {
	# shellcheck disable=SC2046,SC2086
	median $(paste <(printf '%s\n' $1) <(printf '%s\n' $2) |
		awk '$2 > 0 {printf "%.4f\n", $1 / $2}')
}

report_triggers() {
	local state=$1 clients v suffix base base_cpu med cpu
	for clients in $CLIENTS; do
		suffix="${state}_${clients}"
		var="TPS_${suffix}_plain_upsert"
		# shellcheck disable=SC2086
		base=$(median ${!var:-0})
		var="PGCPU_${suffix}_plain_upsert"
		# shellcheck disable=SC2086
		base_cpu=$(median ${!var:-0})
		echo
		echo "server $state, $clients client(s), $ROUNDS rounds of ${DURATION}s:"
		printf '| %-17s | %9s | %9s | %9s | %5s | %6s | %9s | %9s | %10s | %10s |\n' variant "median tps" \
			min max ratio paired "PG µs/txn" "CPU ratio" "worker CPU" "server CPU"
		for v in $VARIANTS; do
			var="TPS_${suffix}_${v}"
			[ -n "${!var:-}" ] || continue
			local tps_list=${!var} base_list pg_list cpu_list srv_list
			base_list="TPS_${suffix}_plain_upsert"
			base_list=${!base_list}
			pg_list="PGCPU_${suffix}_${v}"
			pg_list=${!pg_list}
			cpu_list="CPU_${suffix}_${v}"
			cpu_list=${!cpu_list}
			srv_list="SRVCPU_${suffix}_${v}"
			srv_list=${!srv_list}
			# shellcheck disable=SC2086
			med=$(median $tps_list)
			# shellcheck disable=SC2086
			cpu=$(median $pg_list)
			# shellcheck disable=SC2086
			printf '| %-17s | %9.0f | %9.0f | %9.0f | %5s | %6.2f | %9.1f | %9s | %9s%% | %9s%% |\n' "$v" "$med" \
				"$(minimum $tps_list)" "$(maximum $tps_list)" "$(fdiv "$med" "$base")" \
				"$(paired_ratio "$tps_list" "$base_list")" "$cpu" "$(fdiv "$base_cpu" "$cpu")" \
				"$(median $cpu_list)" "$(median $srv_list)"
			if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
				# shellcheck disable=SC2086
				printf '%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%.3f\t%.1f\t%s\t%s\t%s\n' \
					"$state" "$clients" "$v" "$med" "$(minimum $tps_list)" "$(maximum $tps_list)" \
					"$(echo $tps_list | wc -w)" "$(fdiv "$med" "$base" %.3f)" \
					"$(paired_ratio "$tps_list" "$base_list")" "$cpu" \
					"$(fdiv "$base_cpu" "$cpu" %.3f)" "$(median $cpu_list)" "$(median $srv_list)" \
					>>"$BENCH_RESULTS_DIR/enqueue.tsv"
			fi
		done
	done
}

# Milliseconds one statement takes, as psql's \timing measures it
timed_ms() {
	psql_at P postgres -c '\timing on' -c "$1" | awk '/^Time: / {print $2}' | tail -1
}

run_sets() {
	local round c ms var target
	for round in $(seq 1 "$SET_ROUNDS"); do
		# shellcheck disable=SC2046,SC2086
		for c in $(rotate "$round" $SET_CASES); do
			reset_tables down
			ms=$(timed_ms "$(set_case_sql "$c" "generate_series(1, $SET_ROWS) AS g")")
			target=$(set_case_target "$c")
			if [ -z "$ms" ] || [ "$(sql "SELECT count(*) FROM $target")" != "$SET_ROWS" ]; then
				fail "set-based case $c wrote $SET_ROWS rows into $target (round $round)"
				continue
			fi
			var="ROWS_$c"
			printf -v "$var" '%s' "${!var:-} $(fdiv "$SET_ROWS" "$ms" '%.0f' 1000)"
			printf '  round %d %-25s %9.1f ms\n' "$round" "$c" "$ms"
		done
	done
	for c in $SET_CASES; do
		var="ROWS_$c"
		# shellcheck disable=SC2086
		check "set-based case $c ran $SET_ROUNDS rounds" "$SET_ROUNDS" "$(echo ${!var:-} | wc -w)"
	done
}

report_sets() {
	local c var med base
	var=ROWS_plain_insert_select
	# shellcheck disable=SC2086
	base=$(median ${!var:-0})
	echo
	echo "set-based, $SET_ROWS rows, server down, $SET_ROUNDS rounds:"
	printf '| %-26s | %12s | %12s | %12s | %5s |\n' case "median rows/s" min max ratio
	for c in $SET_CASES; do
		var="ROWS_$c"
		[ -n "${!var:-}" ] || continue
		# shellcheck disable=SC2086
		med=$(median ${!var})
		# shellcheck disable=SC2086
		printf '| %-26s | %12.0f | %12.0f | %12.0f | %5s |\n' "$c" "$med" \
			"$(minimum ${!var})" "$(maximum ${!var})" "$(fdiv "$med" "$base")"
		if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
			# shellcheck disable=SC2086
			printf '%s\t%.0f\t%.0f\t%.0f\t%s\t%s\n' "$c" "$med" "$(minimum ${!var})" \
				"$(maximum ${!var})" "$(echo ${!var} | wc -w)" "$(fdiv "$med" "$base" %.3f)" \
				>>"$BENCH_RESULTS_DIR/enqueue_set.tsv"
		fi
	done
	# Like for like: each kairoi case against the plain one of its shape
	set_ratio kairoi_array outbox_copy_insert_select
	set_ratio kairoi_statement_trigger plain_statement_trigger
	set_ratio kairoi_c_statement_trigger plain_statement_trigger
}

# set_ratio CASE BASE: one more ratio line of the set-based report
set_ratio() {
	local a="ROWS_$1" b="ROWS_$2"
	[ -n "${!a:-}" ] && [ -n "${!b:-}" ] || return 0
	# shellcheck disable=SC2086
	echo "$1 / $2: $(fdiv "$(median ${!a})" "$(median ${!b})")"
}

if [ -n "${BENCH_RESULTS_DIR:-}" ]; then
	mkdir -p "$BENCH_RESULTS_DIR"
	printf 'server\tclients\tvariant\tmedian_tps\tmin_tps\tmax_tps\trounds\tratio\tpaired_ratio\tpg_cpu_us\tcpu_ratio\tworker_cpu\tserver_cpu\n' \
		>"$BENCH_RESULTS_DIR/enqueue.tsv"
	printf 'case\tmedian_rows_per_s\tmin_rows_per_s\tmax_rows_per_s\trounds\tratio\n' \
		>"$BENCH_RESULTS_DIR/enqueue_set.tsv"
fi

WORK=$(make_temp_dir)
start_server S || broken "start the test server"
start_cluster P "$S_PORT" "${PG_CONF:-}" || broken "start PostgreSQL"
sql "CREATE EXTENSION kairoi" >/dev/null || broken "CREATE EXTENSION"
setup_peers
setup_schema >/dev/null || broken "create the benchmark tables and triggers"
wait_for "worker" 30 worker_is_up P postgres || broken "worker running"
echo "# $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
	"$("$PGBIN/postgres" --version)${PGQ_EVENTS:+, PgQ $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pgq'")}${GRAPHILE_INSTALLED:+, graphile-worker $GRAPHILE_INSTALLED}"

for state in $SERVER_STATES; do
	if [ "$state" = down ]; then
		kill_server S
	else
		# Count, at the end, what the kairoi variants of this state scheduled
		# shellcheck disable=SC2086
		sql "TRUNCATE kairoi.pending_jobs, kairoi.pending_rules $(printf ', %s' $KAIROI_ORDERS)" >/dev/null
		kill_server S # still running when SERVER_STATES has no "down"
		restart_server S || broken "restart the test server"
		$KCTL --port "$S_CPORT" reset >/dev/null
		wait_for "worker connected" 30 worker_connected || broken "worker connects"
	fi
	echo "server $state:"
	run_triggers "$state"
	# concurrent clients wrote the outbox (and, up, the worker deleted)
	check_outbox_invariants P postgres "server $state: after the runs"
	if [ "$state" = up ]; then
		# Everything the kairoi variants scheduled reaches the server
		sql "SELECT kairoi_flush('300s')" >/dev/null
		check "server up: outbox drained after the runs" 0 \
			"$(sql "SELECT count(*) FROM kairoi.outbox")"
		# shellcheck disable=SC2086
		check "server up: the server stores every job the kairoi variants scheduled" \
			"$(sql "SELECT 0 $(printf ' + (SELECT count(*) FROM %s)' $KAIROI_ORDERS)")" \
			"$($KCTL --port "$S_CPORT" count-jobs)"
	fi
done

for state in $SERVER_STATES; do
	for clients in $CLIENTS; do
		for v in $VARIANTS; do
			var="TPS_${state}_${clients}_${v}"
			# shellcheck disable=SC2086
			check "server $state, $clients client(s): $v ran $ROUNDS rounds" "$ROUNDS" \
				"$(echo ${!var:-} | wc -w)"
		done
	done
done

kill_server S
echo "set-based:"
run_sets
check_outbox_invariants P postgres "set-based: after the runs"

for state in $SERVER_STATES; do
	report_triggers "$state"
done
report_sets
echo
finish
