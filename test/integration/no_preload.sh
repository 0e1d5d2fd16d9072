#!/bin/bash
# test/integration/no_preload.sh: kairoi without shared_preload_libraries.
#
# design.md: without preloading, the SQL functions still enqueue, and the
# status output says that no worker runs.  Once the library is preloaded
# (restart) the entries queued meanwhile are delivered, and a bad
# kairoi.server is refused.
set -u
source "$(dirname "$0")/../lib.sh"

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" || exit 1
DB=app
psql_at PG postgres -c "CREATE DATABASE $DB" || exit 1

# Restart without the library in shared_preload_libraries
stop_postgres PG fast
sed -i "s/^shared_preload_libraries = 'kairoi'$/shared_preload_libraries = ''/" "$PG_DIR/data/postgresql.conf"
start_postgres PG || exit 1

psql_at PG "$DB" -c "CREATE EXTENSION kairoi" || exit 1
check "no kairoi process runs" 0 \
	"$(psql_at PG postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'kairoi%'")"
check "kairoi_job_set enqueues" "" \
	"$(psql_at PG "$DB" -c "SELECT kairoi_job_set('queued', '2030-01-01 00:00:00+00')")"
check "kairoi_rule_set_shell enqueues" "" \
	"$(psql_at PG "$DB" -c "SELECT kairoi_rule_set_shell('rule', 'q', '/bin/true')")"
check "status says no worker runs, and why" \
	"|not running: kairoi is not in shared_preload_libraries|2|0" \
	"$(psql_at PG "$DB" -c "SELECT worker_pid, state, pending, failed FROM kairoi_status()")"
ERR=$(psql_at PG "$DB" -v VERBOSITY=verbose -c "SELECT kairoi_flush('1 second')" 2>&1)
check "kairoi_flush refuses at once (55000)" 1 "$(grep -c 'ERROR:  55000: no kairoi worker delivers the outbox' <<<"$ERR")"
check "the hint says how to fix it" 1 "$(grep -c 'HINT:  Add kairoi to shared_preload_libraries' <<<"$ERR")"
check "nothing reached the server" 0 "$($KCTL --port "$SRV_CPORT" count-jobs)"

# Preload it: what was queued meanwhile is delivered
stop_postgres PG fast
sed -i "s/^shared_preload_libraries = ''$/shared_preload_libraries = 'kairoi'/" "$PG_DIR/data/postgresql.conf"
start_postgres PG || exit 1
wait_for "the worker" 60 worker_is_up PG "$DB"
check "queued entries delivered once preloaded" "" \
	"$(psql_at PG "$DB" -c "SELECT kairoi_flush('60 seconds')")"
check "the job is on the server" "2030-01-01 00:00:00" "$($KCTL --port "$SRV_CPORT" job queued)"
check "the rule is on the server" '["q", "shell", "/bin/true"]' \
	"$($KCTL --port "$SRV_CPORT" rule rule | tr -d '\n ' | sed 's/,/, /g')"

# Once loaded, a bad address is refused by the GUC check
ERR=$(psql_at PG "$DB" -c "ALTER SYSTEM SET kairoi.server = 'no-port-here'" 2>&1)
check "kairoi.server without a port is refused" 1 "$(grep -c 'invalid value for parameter "kairoi.server"' <<<"$ERR")"
ERR=$(psql_at PG "$DB" -c "ALTER SYSTEM SET kairoi.server = 'host:99999'" 2>&1)
check "kairoi.server with a port out of range is refused" 1 "$(grep -c 'invalid value for parameter "kairoi.server"' <<<"$ERR")"
check "an IPv6 literal is accepted" "" \
	"$(psql_at PG "$DB" -c "ALTER SYSTEM SET kairoi.server = '[::1]:5678'" 2>&1)"
psql_at PG "$DB" -c "ALTER SYSTEM RESET kairoi.server" >/dev/null

stop_postgres PG fast
finish
