#!/bin/bash
# test/integration/installcheck.sh: `make installcheck` against clusters
# started by hand as README.md describes, with PGHOST, PGPORT and PGUSER.
#
# 1. kairoi not preloaded: the worker tests are skipped with a message
#    saying why, the queue test runs and passes.
# 2. Preloaded with other settings than test/installcheck.conf: the same.
# 3. Preloaded with test/installcheck.conf: the test server is started on a
#    free loopback port and given to the regression database only, every
#    worker test runs and passes (the isolation spec too), the cluster's
#    own kairoi.server is never tried, and the test server is stopped
#    afterwards.
# Each run leaves no database and no setting behind.
set -u
source "$(dirname "$0")/../lib.sh"
cd "$KAIROI_ROOT" || exit 1

# installcheck PREFIX: make installcheck against that cluster; output in $OUT
installcheck() {
	local host_var="${1}_HOST" port_var="${1}_PORT"
	OUT=$(PGHOST=${!host_var} PGPORT=${!port_var} PGUSER=postgres \
		make -s PG_CONFIG="$PGBIN/pg_config" installcheck 2>&1)
	RC=$?
	echo "$OUT" | grep -E '^(installcheck:|test |  *[0-9]+ of|  *All)' | sed 's/^/#   /'
}

# leaves_nothing PREFIX DESCRIPTION
leaves_nothing() {
	check "$2: no regression database left" 0 \
		"$(psql_at "$1" postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'kairoi_regression'")"
	check "$2: no per-database or per-role setting left" 0 \
		"$(psql_at "$1" postgres -c "SELECT count(*) FROM pg_db_role_setting")"
	check "$2: nothing in postgresql.auto.conf" 0 \
		"$(grep -vc '^#' "$(eval echo "\$${1}_DIR")/data/postgresql.auto.conf")"
}

WORKER_TESTS="$(make -s print-REGRESS) $(make -s print-ISOLATION)"

# 1. Without shared_preload_libraries
new_cluster PLAIN "" || exit 1
installcheck PLAIN
check "not preloaded: make installcheck passes" 0 "$RC"
check "not preloaded: says the worker tests are skipped and why" 1 \
	"$(grep -c "because kairoi is not in the server's shared_preload_libraries" <<<"$OUT")"
check "not preloaded: names every skipped test" 1 \
	"$(grep -c "SKIPPED (need a delivery worker and the Kairoi test server): $WORKER_TESTS" <<<"$OUT")"
check "not preloaded: the queue test passes" 1 "$(grep -cE '^test kairoi_queue +\.\.\. ok' <<<"$OUT")"
leaves_nothing PLAIN "not preloaded"
stop_postgres PLAIN

# 2. Preloaded with other settings than test/installcheck.conf
new_cluster OTHER "shared_preload_libraries = 'kairoi'" || exit 1
installcheck OTHER
check "other settings: make installcheck passes" 0 "$RC"
check "other settings: says the worker tests are skipped and why" 1 \
	"$(grep -c "because the server's settings differ from test/installcheck.conf" <<<"$OUT")"
check "other settings: the queue test passes" 1 \
	"$(grep -cE '^test kairoi_queue +\.\.\. ok' <<<"$OUT")"
leaves_nothing OTHER "other settings"
stop_postgres OTHER

# 3. Set up for the worker tests as README.md says.  The cluster's own
# kairoi.server is a loopback port where nothing listens: the regression
# database gets the test server through ALTER DATABASE ... SET instead.
NOBODY_PORT=$(free_port)
new_cluster READY "$(cat test/installcheck.conf)
kairoi.server = '127.0.0.1:$NOBODY_PORT'" || exit 1
installcheck READY
check "set up for the worker tests: make installcheck passes" 0 "$RC"
check "set up for the worker tests: the regression database got its own test server" 1 \
	"$(grep -c "Kairoi test server on 127.0.0.1:[0-9]* (kairoi.server of kairoi_regression)" <<<"$OUT")"
for name in $WORKER_TESTS; do
	check "set up for the worker tests: $name passes" 1 "$(grep -cE "^test $name +\.\.\. ok" <<<"$OUT")"
done
check "set up for the worker tests: the cluster's kairoi.server was never tried" 0 \
	"$(grep -c "127.0.0.1:$NOBODY_PORT" "$READY_DIR/postgres.log")"
TEST_PORT=$(grep -o "Kairoi test server on 127.0.0.1:[0-9]*" <<<"$OUT" | grep -o '[0-9]*$')
check "set up for the worker tests: the test server is gone afterwards" 0 \
	"$(ss -Hltn "sport = :${TEST_PORT:-0}" | wc -l)"
leaves_nothing READY "set up for the worker tests"
stop_postgres READY

finish
