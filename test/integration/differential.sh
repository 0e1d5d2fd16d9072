#!/bin/bash
# test/integration/differential.sh: the randomized differential test of
# enqueueing (test/differential.py), then amcheck on kairoi's tables.
#
# The same seeded random stream of operations runs through kairoi's
# scheduling functions and its C trigger, and through plain INSERT ... ON
# CONFLICT DO UPDATE into a copy of the outbox, in the same transactions,
# from DIFF_SESSIONS concurrent sessions; at the end the committed state per
# identifier (arguments, and order by seq) must be the same both ways and
# check_outbox_invariants must find nothing.  Two phases, on two clusters in
# which nothing is ever delivered, so that the outbox keeps everything
# committed:
#   1. kairoi preloaded: a worker runs, but kairoi.server is a port where
#      nothing listens;
#   2. kairoi not preloaded: no worker at all.
#
#   bash test/integration/differential.sh                  # CI: 60 s in all
#   DIFF_SECONDS=1800 bash test/integration/differential.sh
#
# Environment: DIFF_SECONDS (60: the time of both phases together, split
# evenly), DIFF_SEED (random; printed; phase 2 uses DIFF_SEED + 1),
# DIFF_SESSIONS (4).
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

DIFF_SECONDS=${DIFF_SECONDS:-60}
DIFF_SEED=${DIFF_SEED:-$((RANDOM * 32768 + RANDOM))}
DIFF_SESSIONS=${DIFF_SESSIONS:-4}
echo "# differential: DIFF_SECONDS=$DIFF_SECONDS DIFF_SEED=$DIFF_SEED DIFF_SESSIONS=$DIFF_SESSIONS"

# 2PC needs prepared transactions; deadlocks (sessions take shared rows in
# any order) are resolved quickly rather than after the default second
SETTINGS="max_prepared_transactions = 20
deadlock_timeout = 50ms
fsync = off"

# run_differential VAR_PREFIX LABEL SECONDS SEED: one run in database diff
# of that cluster; each "ok" / "not ok" line of the run is one check
run_differential() {
	local prefix=$1 label=$2 seconds=$3 seed=$4
	local host_var="${prefix}_HOST" port_var="${prefix}_PORT"
	local log line rc
	log=$(make_temp_dir)/differential.log
	psql_at "$prefix" postgres -c "CREATE DATABASE diff" ||
		{ fail "$label: create database diff"; return 1; }
	$PYTHON "$KAIROI_ROOT/test/differential.py" --setup \
		--dsn "host=${!host_var} port=${!port_var} user=postgres dbname=diff" \
		--seconds "$seconds" --seed "$seed" --sessions "$DIFF_SESSIONS" >"$log" 2>&1
	rc=$?
	while IFS= read -r line; do
		case $line in
		"ok - "*) pass "$label: ${line#ok - }" ;;
		"not ok - "*) fail "$label: ${line#not ok - }" ;;
		*) echo "$line" ;;
		esac
	done <"$log"
	# a run that broke without saying why still fails
	if [ $rc -ne 0 ] && ! grep -q '^not ok - ' "$log"; then
		fail "$label: test/differential.py exited $rc"
	fi
	check_outbox_invariants "$prefix" diff "$label"
}

half=$((DIFF_SECONDS / 2))

# 1. a worker that cannot deliver: kairoi.server is a port nobody listens on
# (port 1: unlike a free port of the moment, no test server of a suite
# running alongside can take it)
start_cluster W 1 "$SETTINGS" || { fail "start PostgreSQL (preloaded)"; finish; exit 1; }
run_differential W "preloaded, server unreachable" "$half" "$DIFF_SEED"
if worker_is_up W diff; then
	pass "preloaded: the worker still runs"
else
	fail "preloaded: the worker still runs"
fi
stop_postgres W fast

# 2. no worker at all
new_cluster N "$SETTINGS" || { fail "start PostgreSQL (not preloaded)"; finish; exit 1; }
run_differential N "not preloaded" "$((DIFF_SECONDS - half))" "$((DIFF_SEED + 1))"
stop_postgres N fast

finish
