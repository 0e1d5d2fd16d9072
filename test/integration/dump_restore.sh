#!/bin/bash
# test/integration/dump_restore.sh: pg_dump keeps the queue.
#
# Entries pending in the outbox (and failed entries) are part of a logical
# backup: restored into another database, they are delivered from there.
set -u
source "$(dirname "$0")/../lib.sh"

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" "kairoi.max_attempts = 1" || exit 1
psql_at PG postgres -c "CREATE DATABASE app" || exit 1
psql_at PG app -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the worker" 60 worker_is_up PG app

# One failed entry, then 1000 pending ones while the server refuses
$KCTL --port "$SRV_CPORT" fault 'error_ids=["rejected"]' >/dev/null
psql_at PG app -c "SELECT kairoi_job_set('rejected', '2030-01-01 00:00:00+00')" >/dev/null
psql_at PG app -c "SELECT kairoi_flush('30 seconds')" >/dev/null 2>&1
check "one failed entry" 1 "$(psql_at PG app -c "SELECT count(*) FROM kairoi_failed")"
$KCTL --port "$SRV_CPORT" fault refuse=true 'error_ids=[]' >/dev/null
check "1000 jobs pending" 1000 "$(psql_at PG app -c "SELECT count(kairoi_job_set('dump-' || g,
	'2030-01-01 00:00:00+00'::timestamptz + g * interval '1 second')) FROM generate_series(1, 1000) g")"

DUMP=$(make_temp_dir)/app.dump
"$PGBIN/pg_dump" -h "$PG_HOST" -p "$PG_PORT" -U postgres -Fc -f "$DUMP" app
check "pg_dump succeeded" 0 $?
psql_at PG postgres -c "CREATE DATABASE restored" || exit 1
"$PGBIN/pg_restore" -h "$PG_HOST" -p "$PG_PORT" -U postgres -d restored "$DUMP"
check "pg_restore succeeded" 0 $?
check "the restored outbox holds the 1000 pending entries" 1000 \
	"$(psql_at PG restored -c "SELECT count(*) FROM kairoi.outbox WHERE identifier LIKE 'dump-%'")"
check "the restored failed table holds the failed entry" "rejected" \
	"$(psql_at PG restored -c "SELECT identifier FROM kairoi.failed")"
check "the sequences continue after the restored rows" t \
	"$(psql_at PG restored -c "SELECT (SELECT last_value FROM kairoi.outbox_seq) >= max(GREATEST(seq, version))
		FROM kairoi.outbox")"

# Deliver from the restored database (it has its own worker, as every
# database with the extension does)
$KCTL --port "$SRV_CPORT" fault refuse=false >/dev/null
wait_for "the worker on the restored database" 60 worker_is_up PG restored
check "the restored queue is delivered" "" \
	"$(psql_at PG restored -c "SELECT kairoi_flush('60 seconds')")"
check "all 1000 on the server" 1000 "$($KCTL --port "$SRV_CPORT" count-jobs)"
check "with their times" "2030-01-01 00:16:40" "$($KCTL --port "$SRV_CPORT" job dump-1000)"
check "the failed entry can be retried from the restored database" 1 \
	"$(psql_at PG restored -c "SELECT kairoi_retry_failed()")"
psql_at PG restored -c "SELECT kairoi_flush('60 seconds')" >/dev/null
check "and is then delivered" "2030-01-01 00:00:00" "$($KCTL --port "$SRV_CPORT" job rejected)"

stop_postgres PG fast
finish
