#!/bin/bash
# test/integration/idle_connection.sh: a worker with nothing to deliver
# holds no connection to the Kairoi server (kairoi.idle_timeout), opens one
# on the next commit, closes it again once idle, and says so in
# kairoi_status().  Prints how long the first job after an idle period takes
# from commit to the server (commit timestamp to the server's store time).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S --record-times || exit 1
# 3 s: long enough for the checks made while the connection is open, even
# on a loaded machine, where each psql or control call can take 0.3 s
start_cluster PG "$S_PORT" "kairoi.idle_timeout = 3s
track_commit_timestamp = on" || exit 1

sql() { psql_at PG app "$@"; }
server_connections() { $KCTL --port "$S_CPORT" counts | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["connections"])'; }
has_connections() { [ "$(server_connections)" = "$1" ]; }
state_is() { [ "$(sql -c "SELECT state FROM kairoi_status()")" = "$1" ]; }
IDLE="idle: connection closed, nothing to deliver"

# commit_to_server ID: ms from the commit of kairoi_job_set(ID) to the server
commit_to_server() {
	local xid committed stored
	xid=$(sql -c "BEGIN" -c "SELECT kairoi_job_set('$1', '2030-01-01')" \
		-c "SELECT txid_current()" -c "COMMIT" | tail -1)
	wait_for "$1 on the server" 10 $KCTL --port "$S_CPORT" job "$1" || return 1
	committed=$(sql -c "SELECT extract(epoch FROM pg_xact_commit_timestamp('$xid'::xid))")
	stored=$($KCTL --port "$S_CPORT" times "$1" | $PYTHON -c "import json,sys; print(json.load(sys.stdin)['$1'])")
	awk -v c="$committed" -v s="$stored" 'BEGIN {printf "%.1f", (s - c) * 1000}'
}

psql_at PG postgres -c "CREATE DATABASE app" || exit 1
sql -c "CREATE EXTENSION kairoi" || exit 1
wait_for "worker" 10 worker_is_up PG app
wait_for "idle state" 10 state_is "$IDLE" &&
	pass "a new worker with nothing to deliver does not connect" ||
	fail "state is $(sql -c "SELECT state FROM kairoi_status()")"
check "no connection on the server" 0 "$(server_connections)"

latency=$(commit_to_server idle.1) && pass "first job after an idle period delivered" ||
	fail "first job after an idle period not delivered"
echo "# commit to server, connection closed (connect included): ${latency} ms"
check "the worker connected for it" 1 "$(server_connections)"
check "kairoi_status: connected while there is work" connected \
	"$(sql -c "SELECT state FROM kairoi_status()")"
latency=$(commit_to_server idle.2)
echo "# commit to server, connection open: ${latency} ms"

wait_for "idle close" 10 has_connections 0 &&
	pass "the connection closes after kairoi.idle_timeout" ||
	fail "the connection stays open"
check "kairoi_status: idle" "$IDLE" "$(sql -c "SELECT state FROM kairoi_status()")"
check "kairoi_status: nothing pending" 0 "$(sql -c "SELECT pending FROM kairoi_status()")"
check "kairoi_workers: idle" "$IDLE" "$(sql -c "SELECT state FROM kairoi_workers WHERE database = 'app'")"

# A safety poll with nothing pending does not reopen it
sleep 2.5
check "polls while idle open no connection" 0 "$(server_connections)"
check "accepted connections so far" 1 "$($KCTL --port "$S_CPORT" counts | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["accepted"])')"

delivered=0
for i in 3 4 5; do
	wait_for "idle close" 10 has_connections 0
	latency=$(commit_to_server "idle.$i") && delivered=$((delivered + 1))
	echo "# commit to server after an idle close: ${latency} ms"
done
check "three more idle periods, each first job delivered" 3 "$delivered"

# kairoi.idle_timeout = 0 keeps the connection open
psql_at PG postgres -c "ALTER SYSTEM SET kairoi.idle_timeout = 0" -c "SELECT pg_reload_conf()" >/dev/null
commit_to_server idle.6 >/dev/null
sleep 2
check "idle_timeout = 0: the connection stays open" 1 "$(server_connections)"
check "all jobs on the server" 6 "$($KCTL --port "$S_CPORT" count-jobs)"

stop_postgres PG fast
finish
