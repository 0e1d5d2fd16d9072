#!/bin/bash
# test/integration/worker_log.sh: the worker logs one LOG line per state
# change, not per retry or per job.
#
#   a  a 60-second outage with kairoi.backoff_min = 100ms: the LOG lines do
#      not grow with the number of connection attempts (a 20-second outage
#      logs as many), and the reconnection is logged once
#   b  delivering 1,000 jobs logs nothing at LOG level
#   c  entries moved to kairoi_failed: one line with their count
#   d  a new kairoi.server: one line
# OUTAGE_SECONDS (60) and SHORT_OUTAGE_SECONDS (20) set the outages.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

OUTAGE_SECONDS=${OUTAGE_SECONDS:-60}
SHORT_OUTAGE_SECONDS=${SHORT_OUTAGE_SECONDS:-20}

start_server S || exit 1
start_server S2 || exit 1
start_cluster PG "$S_PORT" "kairoi.backoff_min = 100ms
kairoi.backoff_max = 1s
kairoi.max_attempts = 2" || exit 1
LOG="$PG_DIR/postgres.log"
sql() { psql_at PG postgres "$@"; }
sql -c "CREATE EXTENSION kairoi" || exit 1
wait_for "worker" 10 worker_is_up PG postgres

log_size() { stat -c %s "$LOG"; }
# kairoi LOG lines written since byte offset $1
kairoi_lines_since() { tail -c +"$(($1 + 1))" "$LOG" | grep -c 'LOG:  kairoi:'; }
attempts() { sql -c "SELECT connection_attempts FROM kairoi_status()"; }
connected() { [ "$(sql -c "SELECT state FROM kairoi_status()")" = connected ]; }

# outage SECONDS: the server down that long with an entry pending; sets
# OUTAGE_LINES and OUTAGE_ATTEMPTS (LOG lines and connection attempts of
# the outage and the reconnection).  Not in a subshell: it restarts S.
outage() {
	local size before
	size=$(log_size)
	before=$(attempts)
	kill_server S
	sql -c "SELECT kairoi_job_set('outage.$1', '2030-01-01')" >/dev/null
	sleep "$1"
	restart_server S || return 1
	sql -c "SELECT kairoi_flush('30 s')" >/dev/null
	wait_for "reconnected" 10 connected
	OUTAGE_LINES=$(kairoi_lines_since "$size")
	OUTAGE_ATTEMPTS=$(($(attempts) - before))
}

# --- a
outage "$OUTAGE_SECONDS"
long_lines=$OUTAGE_LINES long_attempts=$OUTAGE_ATTEMPTS
echo "# ${OUTAGE_SECONDS} s outage: $long_lines kairoi LOG lines for $long_attempts connection attempts"
outage "$SHORT_OUTAGE_SECONDS"
short_lines=$OUTAGE_LINES short_attempts=$OUTAGE_ATTEMPTS
echo "# ${SHORT_OUTAGE_SECONDS} s outage: $short_lines kairoi LOG lines for $short_attempts connection attempts"
check "a: many attempts during the long outage (>= 2 per 3 s)" 1 "$((long_attempts * 3 >= OUTAGE_SECONDS * 2))"
check "a: the long outage logs as many lines as the short one" "$short_lines" "$long_lines"
# first failure, the backoff growing 100 -> 200 -> 400 -> 800 -> 1000 ms,
# and the reconnection
check "a: 6 lines per outage" 6 "$long_lines"
check "a: one line says further failures go to DEBUG1" 2 "$(grep -c 'further failures are logged at DEBUG1' "$LOG")"
check "a: the first connection and each reconnection logged once" 3 \
	"$(grep -c 'LOG:  kairoi: connected to Kairoi server' "$LOG")"

# --- b
size=$(log_size)
sql -c "SELECT kairoi_job_set('job.' || i, '2030-01-01') FROM generate_series(1, 1000) i" >/dev/null
sql -c "SELECT kairoi_flush('30 s')" >/dev/null
check "b: 1,000 jobs delivered, no LOG line" 0 "$(kairoi_lines_since "$size")"

# --- c
failed_is() { [ "$(sql -c "SELECT failed FROM kairoi_status()")" = "$1" ]; }
$KCTL --port "$S_CPORT" fault "error_ids=[$(seq -s, -f '"bad.%g"' 1 30)]" >/dev/null
size=$(log_size)
sql -c "SELECT kairoi_job_set('bad.' || i, '2030-01-01') FROM generate_series(1, 30) i" >/dev/null
wait_for "30 failed" 20 failed_is 30
moved_lines=$(tail -c +"$((size + 1))" "$LOG" | grep -c 'moved [0-9]* entries to kairoi_failed')
echo "# c: 30 entries moved to kairoi_failed in $moved_lines LOG line(s)"
check "c: fewer lines than entries moved" 1 "$((moved_lines >= 1 && moved_lines < 30))"
check "c: the lines count every entry" 30 \
	"$(tail -c +"$((size + 1))" "$LOG" | grep -o 'moved [0-9]* entries' | awk '{n += $2} END {print n}')"

# --- d
size=$(log_size)
sql -c "ALTER SYSTEM SET kairoi.server = '127.0.0.1:$S2_PORT'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "new server" 10 sh -c "grep -q 'kairoi.server changed' '$LOG'"
sql -c "SELECT kairoi_job_set('d.1', '2030-01-01')" -c "SELECT kairoi_flush('30 s')" >/dev/null
check "d: one line for the server change" 1 \
	"$(tail -c +"$((size + 1))" "$LOG" | grep -c 'kairoi.server changed from')"
check "d: the job reached the new server" 1 "$($KCTL --port "$S2_CPORT" count-jobs)"

stop_postgres PG fast
finish
