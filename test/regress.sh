#!/bin/bash
# test/regress.sh: the pg_regress and isolation suites (sql/, expected/,
# specs/) against a throwaway cluster with kairoi preloaded and a test
# server.  Prints one line per test and "N passed, M failed".
set -u
source "$(dirname "$0")/lib.sh"
cd "$KAIROI_ROOT"

PGXS_DIR=$($PGBIN/pg_config --pkglibdir)/pgxs
PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"
PG_ISOLATION_REGRESS="$PGXS_DIR/src/test/isolation/pg_isolation_regress"
DB=kairoi_regression

start_server SRV || exit 1

# Used by the tests through psql's \! and \copy ... FROM PROGRAM, and by the
# isolation specs through COPY ... PROGRAM (kairoi_test.kserver and .kctl
# below), which the server runs as the postgres user: hence copies in a
# directory it can read.
TOOLS=$(make_temp_dir)
cp test/kairoi_ctl.py test/server_to_csv.py "$TOOLS"/
export KCTL="$PYTHON $TOOLS/kairoi_ctl.py --port $SRV_CPORT"
export KSERVER="$PYTHON $TOOLS/server_to_csv.py --port $SRV_CPORT"

# The settings the expected output assumes, as for make installcheck
start_cluster PG "$SRV_PORT" "$(cat test/installcheck.conf)" || exit 1
psql_at PG postgres -c "CREATE DATABASE $DB" || exit 1
# for the isolation specs, whose COPY ... PROGRAM runs in the server
psql_at PG postgres -c "ALTER DATABASE $DB SET kairoi_test.kserver = '$KSERVER'" \
	-c "ALTER DATABASE $DB SET kairoi_test.kctl = '$KCTL'" || exit 1

export PGHOST=$PG_HOST PGPORT=$PG_PORT PGUSER=postgres

# run_suite RUNNER OUTPUT_DIR TESTS...: count each test's ok / FAILED line
run_suite() {
	local runner=$1 outdir=$2
	shift 2
	rm -rf "$outdir"
	mkdir -p "$outdir"
	"$runner" --inputdir=. --outputdir="$outdir" --bindir="$PGBIN" \
		--use-existing --dbname="$DB" "$@" >"$outdir/run.log" 2>&1
	local rc=$? listed=0 name
	for name in "$@"; do
		# "test NAME ... ok" up to PostgreSQL 15, TAP-style
		# "ok N - NAME  12 ms" from 16 on
		if grep -Eq "^((test |     )?[ ]*$name +\.\.\. ok|ok +[0-9]+ +[-+] +$name +[0-9]+ ms)" "$outdir/run.log"; then
			pass "$name"
		else
			fail "$name"
		fi
		listed=$((listed + 1))
	done
	if [ $rc -ne 0 ]; then
		cat "$outdir/run.log"
		[ -f "$outdir/regression.diffs" ] && cat "$outdir/regression.diffs"
		# a runner failure that no test line shows still counts
		grep -q "FAILED\|failed" "$outdir/run.log" || fail "$runner exited $rc"
	fi
}

run_suite "$PG_REGRESS" results $(make -s print-REGRESS)
run_suite "$PG_ISOLATION_REGRESS" output_iso $(make -s print-ISOLATION)
# what the regression tests and the concurrent isolation specs left
check_outbox_invariants PG "$DB" "$DB (after the regression and isolation suites)"

stop_postgres PG fast
finish
