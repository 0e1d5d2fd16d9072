#!/bin/bash
# bench/profile_enqueue.sh: where a scheduling transaction spends its CPU.
#
#   bash bench/profile_enqueue.sh     # about 1 minute; needs perf (linux-perf)
#
# A fresh cluster, the Kairoi server down (the worker waits in backoff, as
# in the "server down" runs of bench/enqueue.sh).  For each case, pgbench
# runs for DURATION seconds with one client and the backend is recorded
# with `perf record -g` for the middle PERF_SECONDS.  Cases:
#   plain_upsert    plpgsql INSERT ... ON CONFLICT into (job text PRIMARY
#                   KEY, at timestamptz): bench/enqueue.sh's baseline
#   kairoi_plpgsql  plpgsql PERFORM kairoi_job_set(...)
#   kairoi_c_trigger  kairoi_job_trigger('order.', 'id', 'placed_at', '1 day')
#   kairoi_array    TRUNCATE kairoi.pending_jobs, then SELECT
#                   kairoi_job_set_many(...) of SET_ROWS new jobs per
#                   transaction (the set-based path)
# Prints, per case, the share of the backend's samples (inclusive: a sample
# counts for every function on its stack) spent in the trigger or
# statement, and in the parts of kairoi's write: the upsert's executor
# start and end, the unique-index pre-check, index insertions, the heap
# insertion, nextval and the speculative-insertion lock.  perf.data of each
# case is left in PERF_DIR for `perf report -i`.  For counts that do not
# depend on the machine's load, see bench/instructions.sh (callgrind).
#
# Environment: DURATION (10), PERF_SECONDS (6), SET_ROWS (100000),
# CASES (all four), PERF_DIR (/tmp/kairoi-enqueue-perf).
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
PERF_SECONDS=${PERF_SECONDS:-6}
SET_ROWS=${SET_ROWS:-100000}
CASES=${CASES:-"plain_upsert kairoi_plpgsql kairoi_c_trigger kairoi_array"}
PERF_DIR=${PERF_DIR:-/tmp/kairoi-enqueue-perf}

command -v perf >/dev/null || broken "perf is not installed"
mkdir -p "$PERF_DIR"
WORK=$(make_temp_dir)
# port 1: nothing listens there, the worker stays in backoff
start_cluster P 1 || broken "start PostgreSQL"
sql() { psql_at P postgres -c "$1"; }
sql "CREATE EXTENSION kairoi" >/dev/null || broken "CREATE EXTENSION"
sql "CREATE TABLE reminders_plain (job text PRIMARY KEY, at timestamptz);
	CREATE FUNCTION trig_plain_upsert() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
		INSERT INTO reminders_plain VALUES ('order.' || NEW.id, NEW.placed_at + interval '1 day')
		ON CONFLICT (job) DO UPDATE SET at = EXCLUDED.at;
		RETURN NULL;
	END \$\$;
	CREATE FUNCTION trig_kairoi_plpgsql() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
		PERFORM kairoi_job_set('order.' || NEW.id, NEW.placed_at + interval '1 day');
		RETURN NULL;
	END \$\$;" >/dev/null || broken "create the trigger functions"
for c in plain_upsert kairoi_plpgsql kairoi_c_trigger; do
	sql "CREATE TABLE orders_$c (id bigserial PRIMARY KEY, placed_at timestamptz NOT NULL DEFAULT now())" \
		>/dev/null || broken "create orders_$c"
	echo "INSERT INTO orders_$c DEFAULT VALUES;" >"$WORK/$c.sql"
done
sql "CREATE TRIGGER schedule AFTER INSERT ON orders_plain_upsert FOR EACH ROW
		EXECUTE FUNCTION trig_plain_upsert();
	CREATE TRIGGER schedule AFTER INSERT ON orders_kairoi_plpgsql FOR EACH ROW
		EXECUTE FUNCTION trig_kairoi_plpgsql();
	CREATE TRIGGER schedule AFTER INSERT ON orders_kairoi_c_trigger FOR EACH ROW
		EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '1 day')" \
	>/dev/null || broken "create the triggers"
# from an empty outbox each time, as bench/enqueue.sh's set-based cases:
# the same identifiers again would profile replacements instead
cat >"$WORK/kairoi_array.sql" <<EOF
TRUNCATE kairoi.pending_jobs;
SELECT kairoi_job_set_many(array_agg('order.' || g), array_agg(now() + g * interval '1 second')) FROM generate_series(1, $SET_ROWS) g;
EOF
echo "# $(nproc) CPU, load average $(cut -d' ' -f1-3 /proc/loadavg), $("$PGBIN/postgres" --version)"

# The share of samples whose stack holds any of the patterns (an awk
# regular expression over the stack's lines)
share() {
	perf script -i "$1" 2>/dev/null | awk -v re="$2" 'BEGIN {RS = ""}
		{n++; if ($0 ~ re) hit++}
		END {printf "%5.1f %%", n ? 100 * hit / n : 0}'
}

report() {
	local data=$1 case=$2
	echo "$case ($(perf script -i "$data" 2>/dev/null | awk 'BEGIN {RS = ""} END {print NR}') samples):"
	case $case in
	plain_upsert) echo "  $(share "$data" 'plpgsql_exec_trigger')  the trigger" ;;
	kairoi_plpgsql) echo "  $(share "$data" 'plpgsql_exec_trigger')  the trigger" ;;
	kairoi_c_trigger) echo "  $(share "$data" 'kairoi_job_trigger')  the trigger" ;;
	kairoi_array) echo "  $(share "$data" 'kairoi_job_set_many')  kairoi_job_set_many" ;;
	esac
	[ "$case" = plain_upsert ] && return
	echo "  $(share "$data" 'SPI_execute_plan')  the upsert (SPI_execute_plan_extended), of which:"
	# perf script prints each stack innermost first
	echo "    $(share "$data" 'standard_ExecutorStart.*SPI_execute_plan')  executor start"
	echo "    $(share "$data" 'ExecCheckIndexConstraints')  unique-index pre-check"
	echo "    $(share "$data" 'ExecInsertIndexTuples')  index insertions (both B-trees)"
	echo "    $(share "$data" '[ \t]heap_insert')  heap insertion"
	echo "    $(share "$data" 'SpeculativeInsertionLock')  speculative-insertion lock"
	echo "  $(share "$data" 'nextval_internal')  nextval (seq and version)"
}

for c in $CASES; do
	sql "TRUNCATE kairoi.pending_jobs, reminders_plain; CHECKPOINT" >/dev/null
	"$PGBIN/pgbench" -n -h "$P_HOST" -p "$P_PORT" -U postgres -c 1 -j 1 \
		-T "$DURATION" -f "$WORK/$c.sql" postgres >"$WORK/$c.out" 2>&1 &
	bench_pid=$!
	sleep 2
	backend=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'")
	if [ -z "$backend" ]; then
		fail "$c: pgbench's backend found"
		wait "$bench_pid"
		continue
	fi
	perf record -F 2000 -g -p "$backend" -o "$PERF_DIR/$c.data" -- sleep "$PERF_SECONDS" \
		>/dev/null 2>&1
	wait "$bench_pid"
	check "$c: pgbench ran" 1 "$(grep -c '^tps = ' "$WORK/$c.out")"
	report "$PERF_DIR/$c.data" "$c"
done
echo "# perf report -i $PERF_DIR/<case>.data --children   for the details"
finish
