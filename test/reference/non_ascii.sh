#!/bin/bash
# test/reference/non_ascii.sh: thousands of non-ASCII identifiers reach the
# reference Kairoi server's store exact.
#
# The reference server reads at most 2048 bytes at a time and corrupts a
# multi-byte character that a read cuts in two (docs/kairoi-server.md); the
# worker packs requests holding non-ASCII text into writes the server reads
# whole.  Against the reference server (KAIROI_REFERENCE_SERVER, see
# docs/testing.md):
#   a. JOBS (2,000) jobs with non-ASCII identifiers of varying lengths, in
#      one kairoi_job_set_many call: once acknowledged, the server's store
#      (read with the server stopped) holds exactly them, none with U+FFFD;
#   b. control: the same with kairoi.non_ascii_write_limit lifted to 1MB
#      (the protection off), against a second server with a fresh store:
#      some identifiers are stored corrupted, so check a can see corruption.
# Prints "N passed, M failed".
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=test/lib_reference.sh
. "$KAIROI_ROOT/test/lib_reference.sh"

JOBS=${JOBS:-2000}
FFFD=efbfbd

reference_cluster KAIROI_REFERENCE_SERVER
start_reference C "$KAIROI_REFERENCE_SERVER" || exit 1
sql -c "CREATE TABLE expected (id text PRIMARY KEY, run text)" || exit 1

# deliver RUN: JOBS jobs 'ジョブ RUN g é…ü…' in one call; waits for the
# acknowledgements; writes their identifiers in hex to $OUT/RUN
deliver() {
	sql -c "WITH e AS (INSERT INTO expected
			SELECT format('ジョブ %s %s é%s', '$1', g, repeat('ü', g % 11)), '$1'
			FROM generate_series(1, $JOBS) g RETURNING id)
		SELECT kairoi_job_set_many(array_agg(id), array_agg(timestamptz '2030-01-01 00:00:00+00'))
		FROM e" >/dev/null || exit 1
	flush_check "$1: kairoi_flush: the reference server acknowledged all $JOBS jobs" "120 s"
	hex_ids "expected WHERE run = '$1'" >"$OUT/$1"
}

# stored PREFIX: the identifiers of the store of server PREFIX, in hex
stored() {
	store_jobs "$1" | sed 's/^[a-z]* //'
}

# a. the worker's packed writes
deliver protected
kill_reference K TERM
stored K >"$OUT/protected.stored"
compare_hex "protected: the server's store holds exactly the non-ASCII identifiers" \
	"$OUT/protected" "$OUT/protected.stored"
check "protected: no stored identifier holds U+FFFD" 0 "$(grep -c "^\(..\)*$FFFD" "$OUT/protected.stored")"

# b. control: the protection off (the new server's address, set with the
# limit, proves the worker has read both)
sql -c "ALTER SYSTEM SET kairoi.non_ascii_write_limit = '1MB'" \
	-c "ALTER SYSTEM SET kairoi.server = '127.0.0.1:$C_PORT'" -c "SELECT pg_reload_conf()" >/dev/null
serving_control() {
	[ "$(sql -c "SELECT server || ' ' || state FROM kairoi_status()")" = "127.0.0.1:$C_PORT connected" ]
}
wait_for "the worker on the control server" 60 serving_control || fail "the worker did not move to the control server"
deliver control
kill_reference C TERM
stored C >"$OUT/control.stored"
corrupted=$(comm -13 <(sort "$OUT/control") <(sort "$OUT/control.stored") | wc -l)
echo "# control: $corrupted of $JOBS identifiers stored corrupted with kairoi.non_ascii_write_limit = 1MB"
if [ "$corrupted" -gt 0 ]; then
	pass "control: with the protection off, the reference server corrupted $corrupted of $JOBS (check a can fail)"
else
	fail "control: with the protection off, nothing was corrupted: check a proves nothing"
fi
finish
