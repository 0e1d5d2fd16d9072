#!/bin/bash
# test/integration/cross_version_restore.sh: a kairoi database dumped
# with pg_dump on PostgreSQL 15 and restored on 17 and on 18 delivers
# exactly its pending entries there.
#
# On this machine's PostgreSQL 15: one failed entry (the server rejected
# it), 10 entries in flight (sent to a stalled server, not acknowledged:
# kairoi.max_in_flight = 10 holds the rest back) and 100 pending ones
# behind them; pg_dump -Fc.  Then, in the root of each version
# (test/pg-versions, built there by test/run-all before this test), this
# script with --restore DUMP EXPECTED: pg_restore into a fresh cluster of
# that version, whose worker delivers to a fresh test server.  The outbox
# restored must be the one dumped, and the server must end up with exactly
# its 110 jobs (an entry in flight was never acknowledged, so it is still
# pending), each with its time, and not the failed entry, which stays in
# kairoi.failed.
#
# PG_VERSIONS (default "17 18") chooses the versions restored on.
set -u
source "$(dirname "$0")/../lib.sh"
PG_ROOTS=${PG_ROOTS:-/var/tmp/kairoi-pg-roots}

# The jobs of the outbox, "identifier|time" a line, sorted
outbox_jobs() {
	psql_at PG app -c "SELECT identifier || '|' || arguments[1] FROM kairoi.outbox
		WHERE kind = 'j' ORDER BY identifier"
}

# restore DUMP EXPECTED: the part that runs in another version's root
restore() {
	local dump=$1 expected=$2
	start_server SRV || exit 1
	start_cluster PG "$SRV_PORT" || exit 1
	check "the cluster runs PostgreSQL $PG_MAJOR" "$PG_MAJOR" \
		"$(psql_at PG postgres -c "SELECT current_setting('server_version_num')::int / 10000")"
	psql_at PG postgres -c "CREATE DATABASE app" || exit 1
	# the worker starts as soon as the extension is restored: hold the
	# delivery until the restored outbox has been compared
	$KCTL --port "$SRV_CPORT" fault refuse=true >/dev/null
	"$PGBIN/pg_restore" -h "$PG_HOST" -p "$PG_PORT" -U postgres -d app "$dump"
	check "pg_restore of the PostgreSQL 15 dump succeeded" 0 $?
	# the dump names no version: CREATE EXTENSION installs the default one
	check "kairoi restored at the default version" \
		"$(psql_at PG app -c "SELECT default_version FROM pg_available_extensions WHERE name = 'kairoi'")" \
		"$(psql_at PG app -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
	check "the restored outbox is the one dumped" "$(cat "$expected")" "$(outbox_jobs)"
	check "the failed entry is restored" rejected \
		"$(psql_at PG app -c "SELECT identifier FROM kairoi.failed")"

	$KCTL --port "$SRV_CPORT" fault refuse=false >/dev/null
	wait_for "the worker on the restored database" 60 worker_is_up PG app
	check "the restored queue is delivered" flushed \
		"$(psql_at PG app -c "SELECT kairoi_flush('60 seconds')" >/dev/null && echo flushed)"
	check "the outbox is empty" 0 "$(psql_at PG app -c "SELECT count(*) FROM kairoi.outbox")"
	check "the server holds exactly the pending jobs, with their times" \
		"$(cat "$expected")" \
		"$($KCTL --port "$SRV_CPORT" state | $PYTHON -c '
import json, sys
for identifier, execution in sorted(json.load(sys.stdin)["jobs"].items()):
    print(identifier + "|" + execution)')"
	check "the failed entry stays in kairoi.failed" 1 \
		"$(psql_at PG app -c "SELECT count(*) FROM kairoi.failed")"
	stop_postgres PG fast
	finish
}

if [ "${1:-}" = --restore ]; then
	restore "$2" "$3"
	exit
fi

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" "kairoi.max_attempts = 1
kairoi.max_in_flight = 10" || exit 1
psql_at PG postgres -c "CREATE DATABASE app" || exit 1
psql_at PG app -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the worker" 60 worker_is_up PG app

$KCTL --port "$SRV_CPORT" fault 'error_ids=["rejected"]' >/dev/null
psql_at PG app -c "SELECT kairoi_job_set('rejected', '2030-01-01 00:00:00+00')" >/dev/null
psql_at PG app -c "SELECT kairoi_flush('30 seconds')" >/dev/null 2>&1
check "one failed entry" 1 "$(psql_at PG app -c "SELECT count(*) FROM kairoi.failed")"

$KCTL --port "$SRV_CPORT" fault stall=true 'error_ids=[]' >/dev/null
psql_at PG app -c "SELECT count(kairoi_job_set('inflight-' || g,
	'2030-01-01 00:00:00+00'::timestamptz + g * interval '1 second'))
	FROM generate_series(1, 10) g" >/dev/null
in_flight() { psql_at PG app -c "SELECT in_flight FROM kairoi_status()"; }
wait_for "10 entries in flight" 30 test "$(in_flight)" = 10
check "10 entries in flight" 10 "$(in_flight)"
psql_at PG app -c "SELECT count(kairoi_job_set('pending-' || g,
	'2030-02-01 00:00:00+00'::timestamptz + g * interval '1 second'))
	FROM generate_series(1, 100) g" >/dev/null
check "110 entries in the outbox, 10 of them in flight" "110 10" \
	"$(psql_at PG app -c "SELECT count(*) FROM kairoi.outbox") $(in_flight)"

WORK=$(make_temp_dir)
"$PGBIN/pg_dump" -h "$PG_HOST" -p "$PG_PORT" -U postgres -Fc -f "$WORK/app.dump" app
check "pg_dump on PostgreSQL 15 succeeded" 0 $?
outbox_jobs >"$WORK/expected"
check "the dump's outbox holds 110 jobs" 110 "$(wc -l <"$WORK/expected")"

for version in ${PG_VERSIONS:-17 18}; do
	dir=$PG_ROOTS/$version/work
	cp "$WORK/app.dump" "$WORK/expected" "$dir/" || {
		fail "PostgreSQL $version: no root at $PG_ROOTS/$version"
		continue
	}
	echo "# restored on PostgreSQL $version"
	"$KAIROI_ROOT/test/pg-versions" suite "$version" \
		"bash test/integration/cross_version_restore.sh --restore /work/app.dump /work/expected" \
		>"$WORK/restore-$version.log" 2>&1
	rc=$?
	rm -f "$dir/app.dump" "$dir/expected"
	sed -e 's/^\(not \)\{0,1\}ok - /&PostgreSQL '"$version"': /' -e '/^[0-9]* passed, [0-9]* failed$/d' \
		"$WORK/restore-$version.log"
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/restore-$version.log" | tail -1)
	if [ -z "$last" ]; then
		fail "PostgreSQL $version: the restore printed no result (exit $rc)"
		continue
	fi
	TESTS_PASSED=$((TESTS_PASSED + ${last%% *}))
	failed=$(echo "$last" | cut -d' ' -f3)
	TESTS_FAILED=$((TESTS_FAILED + failed))
	[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && fail "PostgreSQL $version: the restore exited $rc"
done

$KCTL --port "$SRV_CPORT" fault stall=false >/dev/null
stop_postgres PG immediate
finish
