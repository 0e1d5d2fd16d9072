#!/bin/bash
# test/integration/monitoring.sh: monitoring/postgres_exporter_queries.yaml
# run by the real postgres_exporter (Debian package
# prometheus-postgres-exporter) against a cluster whose Kairoi server is
# down, then back: the kairoi metrics it serves must carry the values
# kairoi_status() and kairoi_workers hold.
#
# Two databases have the extension: postgres (the exporter's DSN) and app2
# (auto-discovered), so the per-database labels are checked too.
set -u
source "$(dirname "$0")/../lib.sh"
source "$KAIROI_ROOT/test/lib_exporter.sh"

PENDING_POSTGRES=5
PENDING_APP2=3

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" "kairoi.max_attempts = 2" || exit 1
psql_at PG postgres -c "CREATE EXTENSION kairoi" || exit 1
psql_at PG postgres -c "CREATE DATABASE app2" || exit 1
psql_at PG app2 -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the worker of postgres" 30 worker_is_up PG postgres || exit 1

start_exporter EXP PG postgres postgres \
	--auto-discover-databases --include-databases=app2 || exit 1
SCRAPE=$(make_temp_dir)/metrics

state_of() {
	psql_at PG postgres -c "SELECT state FROM kairoi_status()"
}
failed_count_is() {
	[ "$(psql_at PG postgres -c "SELECT failed FROM kairoi_status()")" = "$1" ]
}
worker_waits_to_reconnect() {
	case "$(state_of)" in
	connecting* | disconnected*) return 0 ;;
	esac
	return 1
}
# A value of kairoi_status() in the postgres database, for comparisons
status_value() {
	psql_at PG postgres -c "SELECT $1 FROM kairoi_status()"
}

# Two entries the server rejects end up in kairoi_failed
$KCTL --port "$SRV_CPORT" fault 'error_ids=["rejected-1","rejected-2"]' >/dev/null
psql_at PG postgres -c "SELECT kairoi_job_set('rejected-' || g, '2030-01-01 00:00:00+00')
	FROM generate_series(1, 2) g" >/dev/null
wait_for "two failed entries" 60 failed_count_is 2 || exit 1
$KCTL --port "$SRV_CPORT" fault 'error_ids=[]' >/dev/null

# The server goes away; entries pile up in both databases
kill_server SRV
psql_at PG postgres -c "SELECT kairoi_job_set('down-' || g, '2030-01-01 00:00:00+00')
	FROM generate_series(1, $PENDING_POSTGRES) g" >/dev/null
psql_at PG app2 -c "SELECT kairoi_job_set('app2-' || g, '2030-01-01 00:00:00+00')
	FROM generate_series(1, $PENDING_APP2) g" >/dev/null
wait_for "the worker to notice the server is down" 60 worker_waits_to_reconnect || exit 1

if scrape EXP "$SCRAPE"; then pass "exporter serves /metrics"; else fail "exporter serves /metrics"; fi
check "the exporter loaded the queries file" 0 "$(metric "$SCRAPE" pg_exporter_user_queries_load_error)"
check "pending in postgres while the server is down" "$PENDING_POSTGRES" \
	"$(metric "$SCRAPE" kairoi_status_pending database=postgres)"
check "pending in app2 (auto-discovered database)" "$PENDING_APP2" \
	"$(metric "$SCRAPE" kairoi_status_pending database=app2)"
check "failed in postgres" 2 "$(metric "$SCRAPE" kairoi_status_failed database=postgres)"
check "failed in app2" 0 "$(metric "$SCRAPE" kairoi_status_failed database=app2)"
check "worker_running in postgres" 1 "$(metric "$SCRAPE" kairoi_status_worker_running database=postgres)"
check "state: connecting or disconnected" 1 "$(
	$PYTHON -c 'import sys; print(int(sys.argv[1]) + int(sys.argv[2]))' \
		"$(metric "$SCRAPE" kairoi_status_state_current database=postgres state=connecting)" \
		"$(metric "$SCRAPE" kairoi_status_state_current database=postgres state=disconnected)")"
check "state: exactly one current state" 1 \
	"$(metric "$SCRAPE" kairoi_status_state_current database=postgres)"
check "state: not connected" 0 \
	"$(metric "$SCRAPE" kairoi_status_state_current database=postgres state=connected)"
check "one series per state and database" 16 "$(grep -c '^kairoi_status_state_current{' "$SCRAPE")"

# Values that move while the worker retries: bounded by kairoi_status()
# read before (the scrape) and after
age=$(metric "$SCRAPE" kairoi_status_oldest_pending_age_seconds database=postgres)
age_after=$(status_value "extract(epoch FROM oldest_pending_age)")
if $PYTHON -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(not 0 < a <= b)' "$age" "$age_after"; then
	pass "oldest pending age: 0 < $age <= $age_after (kairoi_status() after the scrape)"
else
	fail "oldest pending age: expected 0 < [$age] <= [$age_after]"
fi
attempts=$(metric "$SCRAPE" kairoi_status_connection_attempts database=postgres)
attempts_after=$(status_value connection_attempts)
# At least the first connection; retries after the kill depend on timing
if [ "$attempts" != absent ] && [ "$attempts" -ge 1 ] && [ "$attempts" -le "$attempts_after" ]; then
	pass "connection attempts: 1 <= $attempts <= $attempts_after (kairoi_status() after the scrape)"
else
	fail "connection attempts: expected 1 <= [$attempts] <= [$attempts_after]"
fi
last_error=$(metric "$SCRAPE" kairoi_status_last_error_timestamp_seconds database=postgres)
if $PYTHON -c 'import sys, time; t = float(sys.argv[1]); sys.exit(not time.time() - 600 < t <= time.time())' "$last_error"; then
	pass "last error timestamp is recent"
else
	fail "last error timestamp: got [$last_error]"
fi

# The server is back: everything is delivered, counters settle
restart_server SRV || exit 1
psql_at PG postgres -c "SELECT kairoi_flush('60 seconds')" >/dev/null
scrape EXP "$SCRAPE" || fail "second scrape"
check "pending in postgres after the flush" 0 "$(metric "$SCRAPE" kairoi_status_pending database=postgres)"
check "oldest pending age when nothing is pending" 0 \
	"$(metric "$SCRAPE" kairoi_status_oldest_pending_age_seconds database=postgres)"
check "state: connected" 1 "$(metric "$SCRAPE" kairoi_status_state_current database=postgres state=connected)"
check "in flight" 0 "$(metric "$SCRAPE" kairoi_status_in_flight database=postgres)"
check "acknowledged equals kairoi_status()" "$(status_value acknowledged)" \
	"$(metric "$SCRAPE" kairoi_status_acknowledged database=postgres)"
acknowledged=$(metric "$SCRAPE" kairoi_status_acknowledged database=postgres)
if [ "$acknowledged" != absent ] && [ "$acknowledged" -ge "$PENDING_POSTGRES" ]; then
	pass "acknowledged ($acknowledged) counts at least the $PENDING_POSTGRES delivered entries"
else
	fail "acknowledged: expected at least $PENDING_POSTGRES, got [$acknowledged]"
fi
grep '^kairoi_status_pending' "$SCRAPE" | sed 's/^/# /'

# ---- Needs kairoi 1.1 (kairoi_workers, a worker per database, pg_monitor
# grants).  On 1.0 these checks fail: they are the part to re-check once
# the per-database workers are merged. ----
if [ "$(metric "$SCRAPE" pg_exporter_last_scrape_error)" = 0 ]; then
	pass "every query of the file ran (pg_exporter_last_scrape_error 0)"
else
	fail "some query of the file failed; exporter log:"
	grep -i 'error' "$EXP_LOG" | tail -5 | sed 's/^/# /'
fi
check "app2 has its own worker" 1 "$(metric "$SCRAPE" kairoi_status_worker_running database=app2)"
check "pending in app2 after its worker delivered" 0 \
	"$(psql_at PG app2 -c "SELECT kairoi_flush('20 seconds') IS NULL; SELECT pending FROM kairoi_status()" | tail -1)"
scrape EXP "$SCRAPE" || fail "third scrape"
for db in postgres app2; do
	check "kairoi_workers: worker of $db running" 1 \
		"$(metric "$SCRAPE" kairoi_workers_worker_running database=$db)"
	check "kairoi_workers: worker of $db connected or idle" 1 "$(
		$PYTHON -c 'import sys; print(sum(int(v) for v in sys.argv[1:] if v != "absent"))' \
			"$(metric "$SCRAPE" kairoi_workers_state_current database=$db state=connected)" \
			"$(metric "$SCRAPE" kairoi_workers_state_current database=$db state=idle)")"
	check "kairoi_workers: acknowledged of $db equals kairoi_status() there" \
		"$(psql_at PG $db -c "SELECT acknowledged FROM kairoi_status()")" \
		"$(metric "$SCRAPE" kairoi_workers_acknowledged database=$db)"
done
check "kairoi_workers: reported once per database (master: true)" 2 \
	"$(grep -c '^kairoi_workers_worker_running{' "$SCRAPE")"

# A role with only pg_monitor (what docs/operations.md tells operators to
# use) gets the same metrics
psql_at PG postgres -c "CREATE ROLE kairoi_exporter LOGIN IN ROLE pg_monitor" || exit 1
start_exporter MON PG kairoi_exporter postgres || exit 1
scrape MON "$SCRAPE" || fail "scrape as a pg_monitor role"
check "pg_monitor role: no query failed" 0 "$(metric "$SCRAPE" pg_exporter_last_scrape_error)"
check "pg_monitor role: pending" 0 "$(metric "$SCRAPE" kairoi_status_pending database=postgres)"
check "pg_monitor role: kairoi_workers" 1 \
	"$(metric "$SCRAPE" kairoi_workers_worker_running database=postgres)"

finish
