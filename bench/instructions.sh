#!/bin/bash
# bench/instructions.sh: instructions per statement of each way of
# scheduling (bench/enqueue.sh's variants), counted by valgrind's callgrind
# in a single-user postgres: no other process, no scheduler, no other
# engineer's tests, so the count is the same from run to run (to a few
# hundred instructions), where timings on a shared machine swing by 2x.
#
#   bash bench/instructions.sh       # about 3 minutes; needs valgrind
#
# A fresh cluster (kairoi preloaded, the Kairoi server down) gets the
# tables and triggers of bench/enqueue_variants.sh, and is stopped; then,
# for each variant, from empty tables, `postgres --single` runs under
# callgrind N and then 2N times the variant's statement, each its own
# transaction as under pgbench (fsync off, autovacuum off; full_page_writes
# off, so that the checkpoint at each start adds no page images).
# (instructions(2N) - instructions(N)) / N is what one statement costs,
# start-up and the first calls' catalog lookups cancelled out.  Per-row
# variants: `INSERT INTO orders_<variant> DEFAULT VALUES` (one row, its
# AFTER INSERT trigger); set-based cases: the statement of
# bench/enqueue.sh's Part 2 over SET_ROWS new identifiers per statement,
# reported per row.  What is left depends on the tables' size and keys (the
# B-trees' depth, comparisons and page splits): a per-row variant moves by
# up to ~2 % between a run from empty tables and one from tables holding a
# few hundred rows, a set-based case by more between SET_N=10 and 20.  Ratio: plain_upsert's instructions over the
# variant's (higher is cheaper), plain_insert_select's for the set-based
# cases.
#
# With TOP=K (default 25) prints, per variant, the K functions with the
# most inclusive instructions per statement (callgrind_annotate
# --inclusive=yes, N and 2N subtracted): where the cost goes.  Callgrind
# files stay in CG_DIR for callgrind_annotate.
#
# Environment: VARIANTS ("plain_upsert kairoi_c_trigger kairoi_plpgsql
# outbox_copy pgq_logutriga empty_trigger"), SET_CASES
# ("plain_insert_select kairoi_array outbox_copy_insert_select
# plain_statement_trigger kairoi_statement_trigger
# kairoi_c_statement_trigger"), N (300), SET_N (10),
# SET_ROWS (1000), TOP (25), CG_DIR (/tmp/kairoi-callgrind).  Ends with
# "N passed, M failed": each variant ran and wrote its rows.
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=bench/enqueue_variants.sh
. "$BENCH/enqueue_variants.sh"

VARIANTS=${VARIANTS:-"plain_upsert kairoi_c_trigger kairoi_plpgsql outbox_copy pgq_logutriga empty_trigger"}
SET_CASES=${SET_CASES:-"plain_insert_select kairoi_array outbox_copy_insert_select plain_statement_trigger kairoi_statement_trigger kairoi_c_statement_trigger"}
N=${N:-300}
SET_N=${SET_N:-10}
SET_ROWS=${SET_ROWS:-1000}
TOP=${TOP:-25}
CG_DIR=${CG_DIR:-/tmp/kairoi-callgrind}

command -v valgrind >/dev/null || broken "valgrind is not installed"
sql() { psql_at P postgres -c "$1"; }

WORK=$(make_temp_dir)
mkdir -p "$CG_DIR" || broken "create $CG_DIR"
chown postgres: "$CG_DIR"
# port 1: nothing listens there
start_cluster P 1 "autovacuum = off" || broken "start PostgreSQL"
sql "CREATE EXTENSION kairoi" >/dev/null || broken "CREATE EXTENSION"
setup_peers
range=0
create_target_tables >/dev/null || broken "create the target tables"
for v in $VARIANTS; do
	range=$((range + 1))
	create_variant "$v" "$range" >/dev/null || broken "create variant $v"
done
create_set_tables >/dev/null || broken "create the set-based tables"
# Each set-based statement takes new identifiers: rows b*SET_ROWS .. +SET_ROWS-1
sql "CREATE SEQUENCE bench_batch" >/dev/null || broken "create bench_batch"
SET_ROWS_SQL="generate_series(nextval('bench_batch') * $SET_ROWS, currval('bench_batch') * $SET_ROWS + $((SET_ROWS - 1))) AS g"
stop_postgres P || broken "stop PostgreSQL"
echo "# $(date -u '+%Y-%m-%d %H:%M') UTC, $("$PGBIN/postgres" --version), valgrind $(valgrind --version)"

# callgrind_run NAME STATEMENT COUNT: the statement COUNT times in a
# single-user postgres under callgrind; prints its total instructions
callgrind_run() {
	local out=$CG_DIR/$1.$3
	yes "$2" | head -n "$3" >"$WORK/$1.$3.sql"
	as_postgres valgrind --tool=callgrind --callgrind-out-file="$out" \
		"$PGBIN/postgres" --single -D "$P_DIR/data" -c log_min_messages=fatal -c full_page_writes=off \
		postgres <"$WORK/$1.$3.sql" >"$WORK/$1.$3.out" 2>&1 || {
		echo "$1: postgres --single failed:" >&2
		tail -5 "$WORK/$1.$3.out" >&2
		return 1
	}
	if grep -q ERROR "$WORK/$1.$3.out"; then
		echo "$1: $(grep -m1 ERROR "$WORK/$1.$3.out")" >&2
		return 1
	fi
	awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# The tables the variants write, emptied (single-user, not counted), and
# the set-based cases' identifiers numbered from the start again: each
# variant starts from the same state whatever ran before it, and every
# set-based case writes the same identifiers
empty_tables() {
	echo "TRUNCATE reminders_plain, bench_queue, bulk_orders_plain, bulk_orders_kairoi, bulk_orders_c, kairoi.pending_jobs, kairoi.pending_rules; ALTER SEQUENCE bench_batch RESTART; CHECKPOINT" |
		as_postgres "$PGBIN/postgres" --single -D "$P_DIR/data" -c log_min_messages=fatal -c full_page_writes=off postgres \
			>"$WORK/empty.out" 2>&1 && ! grep -q ERROR "$WORK/empty.out"
}

# measure NAME STATEMENT COUNT PER: instructions of one statement (PER:
# per row of it) from runs of COUNT and 2*COUNT, from empty tables; stores
# INSNS_<NAME>
measure() {
	local a b
	if ! empty_tables || ! a=$(callgrind_run "$1" "$2" "$3") ||
		! b=$(callgrind_run "$1" "$2" $(($3 * 2))); then
		fail "$1 ran under callgrind"
		return 1
	fi
	printf -v "INSNS_$1" '%s' $(((b - a) / ($3 * $4)))
	pass "$1 ran under callgrind"
}

# top NAME COUNT PER: the TOP functions with the most inclusive
# instructions per statement (per row)
top() {
	$PYTHON "$BENCH/callgrind_delta.py" "$CG_DIR/$1.$2" "$CG_DIR/$1.$(($2 * 2))" \
		$(($2 * $3)) "$TOP"
}

for v in $VARIANTS; do
	measure "$v" "INSERT INTO orders_$v DEFAULT VALUES;" "$N" 1
done
for c in $SET_CASES; do
	measure "$c" "$(set_case_sql "$c" "$SET_ROWS_SQL" | tr '\n\t' '  ');" "$SET_N" "$SET_ROWS"
done

start_postgres P || broken "restart PostgreSQL"
for v in $VARIANTS; do
	check "$v wrote one row per statement" $((N * 3)) "$(sql "SELECT count(*) FROM orders_$v")"
done
check_outbox_invariants P postgres

# report TITLE BASE NAMES...: instructions and ratio to BASE
report() {
	local title=$1 base_var="INSNS_$2" name var
	shift 2
	echo
	echo "$title"
	printf '| %-26s | %12s | %5s |\n' variant instructions ratio
	for name in "$@"; do
		var="INSNS_$name"
		[ -n "${!var:-}" ] || continue
		printf '| %-26s | %12s | %5s |\n' "$name" "${!var}" "$(fdiv "${!base_var:-0}" "${!var}")"
	done
}
# shellcheck disable=SC2086
report "per INSERT of one row (its trigger included), ratio = plain_upsert / variant:" \
	plain_upsert $VARIANTS
# shellcheck disable=SC2086
report "set-based, per row ($SET_ROWS rows a statement), ratio = plain_insert_select / case:" \
	plain_insert_select $SET_CASES
if [ "$TOP" -gt 0 ]; then
	for v in $VARIANTS; do
		echo
		echo "$v: inclusive instructions per statement"
		top "$v" "$N" 1
	done
	for c in $SET_CASES; do
		echo
		echo "$c: inclusive instructions per row"
		top "$c" "$SET_N" "$SET_ROWS"
	done
fi
echo
finish
