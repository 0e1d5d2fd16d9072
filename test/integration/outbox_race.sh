#!/bin/bash
# test/integration/outbox_race.sh: three sessions race on the first
# schedule of each of RACES identifiers (test/outbox_race.py, the race of
# specs/kairoi_race.spec many times over), with no server listening so
# that every entry stays in the outbox.  Then: B's value is the one kept,
# every entry is found through the primary key on seq, and amcheck finds
# nothing (check_outbox_invariants).
set -u
source "$(dirname "$0")/../lib.sh"
RACES=${RACES:-200}

start_cluster PG "$(free_port)" || exit 1
psql_at PG postgres -c "CREATE EXTENSION kairoi" >/dev/null || exit 1

$PYTHON "$KAIROI_ROOT/test/outbox_race.py" \
	"host=$PG_HOST port=$PG_PORT user=postgres dbname=postgres" "$RACES" ||
	fail "the race driver failed"

check "one entry per identifier, each with B's value" "$RACES" \
	"$(psql_at PG postgres -c "SELECT count(*) FROM kairoi.outbox
		WHERE identifier LIKE 'race-%' AND arguments = '{\"2030-01-01 02:00:00\"}'")"
check "every entry is found through the primary key" "$RACES" \
	"$(psql_at PG postgres -c "SET enable_seqscan = off; SET enable_bitmapscan = off;
		SELECT count(*) FROM kairoi.outbox o WHERE o.seq = ANY (ARRAY(
			SELECT seq FROM kairoi.outbox WHERE identifier LIKE 'race-%'))")"
check_outbox_invariants PG postgres
finish
