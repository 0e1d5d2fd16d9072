#!/bin/bash
# test/installcheck.sh: `make installcheck`, the pg_regress suites against
# a running server the user already has (PGHOST, PGPORT, PGUSER as for
# psql; the role must be a superuser: the extension needs one).
#
# Which tests run depends on what the server offers:
# - kairoi not preloaded: no worker can run; says which tests are skipped
#   and why, then runs REGRESS_NO_WORKER, which needs neither a worker nor a
#   Kairoi server.
# - preloaded (every database with the extension has a worker): starts the
#   project's test server on a free loopback port and points the regression
#   database at it (ALTER DATABASE ... SET kairoi.server), so that nothing
#   reaches the server's own kairoi.server.  With the settings of
#   test/installcheck.conf, runs REGRESS and ISOLATION, the tests that need
#   a worker and a server; otherwise says why they are skipped and runs
#   REGRESS_NO_WORKER, the test server refusing connections so that nothing
#   is delivered.
# The isolation specs reach the test server with COPY ... PROGRAM: the
# server must run on this machine.
#
# Leaves no setting changed on the server.  The regression database is
# dropped at the end, so that no worker stays attached to it.
#
# Called by the Makefile with PG_CONFIG, REGRESS, REGRESS_NO_WORKER and
# ISOLATION in the environment.
set -u
cd "$(dirname "$0")/.." || exit 1

DB=kairoi_regression
# The system's python3 first: the server's OS user runs it too
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
BINDIR=$("$PG_CONFIG" --bindir)
PGXS_DIR=$("$PG_CONFIG" --pkglibdir)/pgxs
PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"
PG_ISOLATION_REGRESS="$PGXS_DIR/src/test/isolation/pg_isolation_regress"
SERVER_DIR=
SERVER_PID=

cleanup() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null
	fi
	[ -n "$SERVER_DIR" ] && rm -rf "$SERVER_DIR"
}
trap cleanup EXIT
trap "exit 1" INT TERM

# query SQL: one value from the server (database postgres)
query() {
	"$BINDIR/psql" -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -c "$1"
}

skip() {
	echo "installcheck: SKIPPED (need a delivery worker and the Kairoi test server): $REGRESS $ISOLATION"
	echo "installcheck:   because $1"
	echo "installcheck:   to run them, see README.md, \"Running the tests against your own server\""
}

# The settings of test/installcheck.conf that differ on the server, one
# "name = wanted (server: actual)" per line
differing_settings() {
	local name value actual
	while IFS= read -r line; do
		[[ $line =~ ^([a-z_.]+)\ =\ \'?([^\']*)\'?$ ]] || continue
		name=${BASH_REMATCH[1]}
		value=${BASH_REMATCH[2]}
		[ "$name" = shared_preload_libraries ] && continue
		actual=$(query "SELECT setting FROM pg_settings WHERE name = '$name'")
		[ "$actual" = "$value" ] || echo "$name = $value (server: ${actual:-unset})"
	done <test/installcheck.conf
}

# start_test_server HOST PORT: the project's Kairoi test server where the
# worker connects; sets KCTL and KSERVER for the tests, with copies of the
# tools that the server's OS user can run too (readable by all: the tree
# may not be, e.g. unpacked by pgxn, which makes scripts mode 0700)
start_test_server() {
	local host=$1 port=$2 cport
	SERVER_DIR=$(mktemp -d)
	chmod 755 "$SERVER_DIR"
	install -m 644 test/kairoi_ctl.py test/server_to_csv.py "$SERVER_DIR"/
	cport=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	$PYTHON test/kairoi_server.py --host "$host" --port "$port" --control-port "$cport" \
		--data "$SERVER_DIR" --pidfile "$SERVER_DIR/server.pid" >"$SERVER_DIR/server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 250); do
		[ -s "$SERVER_DIR/server.pid" ] && break
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.02
	done
	if [ ! -s "$SERVER_DIR/server.pid" ]; then
		echo "installcheck: could not start the test server on $host:$port (kairoi.server):" >&2
		cat "$SERVER_DIR/server.log" >&2
		return 1
	fi
	TEST_SERVER_PORT=$port
	export KCTL="$PYTHON $SERVER_DIR/kairoi_ctl.py --port $cport"
	export KSERVER="$PYTHON $SERVER_DIR/server_to_csv.py --port $cport"
}

# run_regress [--use-existing] TESTS...: pg_regress makes the database
# afresh, unless told to use the one create_database made
run_regress() {
	# shellcheck disable=SC2086  # EXTRA_REGRESS_OPTS is a list of options
	"$PG_REGRESS" --inputdir=. --bindir="$BINDIR" --dbname="$DB" \
		${EXTRA_REGRESS_OPTS:-} "$@"
}

# run_isolation TESTS...: in the database the regression tests used, after
# them (a failing REGRESS does not skip them, unlike PGXS's installcheck)
run_isolation() {
	query "ALTER DATABASE $DB SET kairoi_test.kserver = '$KSERVER'" >/dev/null &&
		query "ALTER DATABASE $DB SET kairoi_test.kctl = '$KCTL'" >/dev/null || return 1
	# shellcheck disable=SC2086  # EXTRA_REGRESS_OPTS is a list of options
	"$PG_ISOLATION_REGRESS" --inputdir=. --outputdir=output_iso --bindir="$BINDIR" \
		--use-existing --dbname="$DB" ${EXTRA_REGRESS_OPTS:-} "$@"
}

# create_database SETTING...: the database as pg_regress makes it, with
# these settings too ("name TO value"), before anything connects to it
create_database() {
	local setting
	drop_database && query "CREATE DATABASE $DB TEMPLATE template0" >/dev/null || return 1
	for setting in "lc_messages TO 'C'" "lc_monetary TO 'C'" "lc_numeric TO 'C'" \
		"lc_time TO 'C'" "bytea_output TO 'hex'" "timezone_abbreviations TO 'Default'" "$@"; do
		query "ALTER DATABASE $DB SET $setting" >/dev/null || return 1
	done
}

drop_database() {
	query "DROP DATABASE IF EXISTS $DB" >/dev/null
}

query "SELECT 1" >/dev/null || {
	echo "installcheck: cannot connect to the server (set PGHOST, PGPORT, PGUSER)" >&2
	exit 1
}

preloaded=$(query "SELECT 'kairoi' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))")
if [ "$preloaded" != t ]; then
	skip "kairoi is not in the server's shared_preload_libraries"
	run_regress $REGRESS_NO_WORKER
	rc=$?
	drop_database || rc=1
	exit $rc
fi

# The regression database's worker talks to the test server only
start_test_server 127.0.0.1 "$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" || exit 1
server="kairoi.server TO '127.0.0.1:$TEST_SERVER_PORT'"
differing=$(differing_settings)
if [ -n "$differing" ]; then
	skip "the server's settings differ from test/installcheck.conf: $(echo "$differing" | paste -sd ';')"
	$KCTL fault refuse=true >/dev/null || exit 1
	create_database "$server" || exit 1
	run_regress --use-existing $REGRESS_NO_WORKER
	rc=$?
else
	echo "installcheck: Kairoi test server on 127.0.0.1:$TEST_SERVER_PORT (kairoi.server of $DB)"
	create_database "$server" || exit 1
	run_regress --use-existing $REGRESS
	rc=$?
	run_isolation $ISOLATION || rc=1
fi
drop_database || rc=1
exit $rc
