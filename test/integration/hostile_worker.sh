#!/bin/bash
# test/integration/hostile_worker.sh: the delivery worker runs as superuser
# inside databases that ordinary roles own.  Nothing a database owner
# plants or sets may run with the worker's rights, or stop its work.
#
# The owner of appdb, an ordinary role with no kairoi privilege, plants in
# public an object under every name the worker's statements and the
# administration functions could resolve: the same signatures as
# pg_catalog's (count(*), min and max, now(), power, the operators =, <=,
# >=, >, +, - and *), exact-type variants that beat pg_catalog's whatever
# the path's order (power(integer, integer)), and domains named like the
# types the statements cast to (float8, interval, int4, int8).  Each
# records who ran it, and in which kind of backend, in public.pwned.
#
# Four rounds, each with a worker started afresh under:
#   1. search_path = public, pg_catalog set by the owner (ALTER DATABASE);
#   2. the same as a role setting of the worker's role in appdb (ALTER
#      ROLE ... IN DATABASE, by a superuser);
#   3. the default search_path: only the exact-type objects could win;
#   4. settings that would break the worker's work: default read-only
#      transactions, SERIALIZABLE, a 1 ms statement_timeout (and
#      transaction_timeout from 17), exit_on_error, role = the owner.
# In each round the worker delivers jobs and a rule, counts the outbox,
# closes its idle connection and reopens it, has an entry answered ERROR
# until it moves to kairoi_failed, and a superuser session using the
# database's own settings calls kairoi_status(), kairoi_flush(),
# kairoi_retry_failed(), kairoi_purge_failed() and reads the views.  Then
# public.pwned must be empty and everything must have worked.  A second
# database created with the hostile settings in place checks the
# launcher's side: its worker starts, and nothing runs there either.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server S || exit 1
# A later line wins: idle connections close after 300 ms here
start_cluster PG "$S_PORT" "kairoi.max_attempts = 2
kairoi.idle_timeout = 300" || exit 1
ctl() { $KCTL --port "$S_CPORT" "$@"; }

# The test's own checks run with settings of their own, which beat the
# database's and the role's: they never resolve a planted name.
VERSION=$(psql_at PG postgres -c "SHOW server_version_num") || exit 1
SAFE_OPTIONS="-c search_path=pg_catalog,pg_temp -c default_transaction_read_only=off
 -c default_transaction_isolation=read\\ committed -c statement_timeout=0
 -c exit_on_error=off -c role=none"
[ "$VERSION" -ge 170000 ] && SAFE_OPTIONS+=" -c transaction_timeout=0"
safe() { PGOPTIONS=$SAFE_OPTIONS psql_at PG "$@"; }
# A superuser session with whatever the database and role settings say
admin() { psql_at PG appdb "$@"; }
owner() { psql_at PG appdb -c "SET ROLE appowner" "$@"; }

safe postgres -c "CREATE ROLE appowner LOGIN" \
	-c "CREATE DATABASE appdb OWNER appowner" || exit 1
safe appdb -c "CREATE EXTENSION kairoi SCHEMA public" || exit 1
wait_for "appdb's worker" 30 worker_is_up PG appdb || exit 1

# Objects under pg_catalog's names: each calls public.trap and then does
# what pg_catalog's would.  plpgsql bodies name everything qualified.
owner -c "
CREATE TABLE public.pwned (who name, backend text, what text);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.trap(what pg_catalog.text) RETURNS boolean
LANGUAGE plpgsql AS \$\$
BEGIN
	INSERT INTO public.pwned
	SELECT current_user, a.backend_type, what FROM pg_catalog.pg_stat_activity a
	WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid();
	RETURN true;
END \$\$;

CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('now()'); RETURN pg_catalog.now(); END \$\$;
CREATE FUNCTION public.power(float8, float8) RETURNS float8 LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('power(float8, float8)'); RETURN pg_catalog.power(\$1, \$2); END \$\$;
CREATE FUNCTION public.power(integer, integer) RETURNS float8 LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('power(integer, integer)');
	RETURN pg_catalog.power(\$1::pg_catalog.float8, \$2::pg_catalog.float8); END \$\$;

CREATE FUNCTION public.count_step(bigint) RETURNS bigint LANGUAGE sql
	AS 'SELECT \$1 OPERATOR(pg_catalog.+) 1';
CREATE FUNCTION public.count_final(bigint) RETURNS bigint LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('count(*)'); RETURN \$1; END \$\$;
CREATE AGGREGATE public.count(*) (SFUNC = public.count_step, STYPE = bigint,
	INITCOND = '0', FINALFUNC = public.count_final);
" >/dev/null || exit 1

# min and max of bigint and timestamptz
for type in bigint timestamptz; do
	for agg in min max; do
		# LEAST and GREATEST are syntax, not names that could be planted
		step=LEAST
		[ $agg = max ] && step=GREATEST
		owner -c "
CREATE FUNCTION public.${agg}_step_$type($type, $type) RETURNS $type
	LANGUAGE sql AS 'SELECT ${step}(\$1, \$2)';
CREATE FUNCTION public.${agg}_final_$type($type) RETURNS $type LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('$agg($type)'); RETURN \$1; END \$\$;
CREATE AGGREGATE public.$agg($type) (SFUNC = public.${agg}_step_$type,
	STYPE = $type, FINALFUNC = public.${agg}_final_$type);" >/dev/null || exit 1
	done
done

# Operators: name, symbol, left, right, result
while read -r name symbol left right result; do
	owner -c "
CREATE FUNCTION public.op_$name($left, $right) RETURNS $result LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('$left $symbol $right');
	RETURN \$1 OPERATOR(pg_catalog.$symbol) \$2; END \$\$;
CREATE OPERATOR public.$symbol (LEFTARG = $left, RIGHTARG = $right,
	FUNCTION = public.op_$name);" >/dev/null || exit 1
done <<'EOF'
int8eq = bigint bigint boolean
int8le <= bigint bigint boolean
int8ge >= bigint bigint boolean
int84le <= bigint integer boolean
int84ge >= bigint integer boolean
int4pl + integer integer integer
tstzgt > timestamptz timestamptz boolean
tstzge >= timestamptz timestamptz boolean
tstzmi - timestamptz timestamptz interval
tstzplint + timestamptz interval timestamptz
float8mulint * pg_catalog.float8 interval interval
float8mul * pg_catalog.float8 pg_catalog.float8 pg_catalog.float8
chareq = "char" "char" boolean
texteq = text text boolean
EOF

# Domains named like the types the statements cast to: their CHECK runs
for type in float8 interval int4 int8; do
	owner -c "CREATE DOMAIN public.$type AS pg_catalog.$type
		CHECK (public.trap('domain $type'))" >/dev/null || exit 1
done

# The traps work: the owner's own call is recorded
owner -c "SELECT public.now()" >/dev/null
check "a planted object records who ran it" "appowner" \
	"$(safe appdb -c "SELECT who FROM public.pwned")"
safe appdb -c "TRUNCATE public.pwned" || exit 1

jobs_on_server() { ctl count-jobs; }
worker_pid_now() { safe appdb -c "SELECT worker_pid FROM public.kairoi_status()"; }
# wait_new_worker OLD_PID: a worker other than OLD_PID serves appdb
worker_is_new() { local pid; pid=$(worker_pid_now); [ -n "$pid" ] && [ "$pid" != "$1" ]; }
restart_worker() {
	local old
	old=$(worker_pid_now)
	[ -n "$old" ] && safe postgres -c "SELECT pg_terminate_backend($old)" >/dev/null
	wait_for "a new worker for appdb" 30 worker_is_new "$old"
}
failed_has() { [ "$(safe appdb -c "SELECT count(*) FROM kairoi.failed WHERE identifier = '$1'")" = 1 ]; }
state_is_idle() { case $(safe appdb -c "SELECT state FROM public.kairoi_status()") in idle*) true ;; *) false ;; esac; }
server_has_job() { ctl job "$1" >/dev/null; }

# exercise ROUND: everything the worker and the administration functions do
exercise() {
	local r=$1 calls="" i
	ctl fault error_ids="[\"r$r-bad\"]" >/dev/null
	for i in 1 2 3 4 5; do
		calls+="SELECT kairoi_job_set('r$r-$i', '2030-01-0$i 00:00:00+00');"
	done
	admin -c "SELECT kairoi_rule_set_shell('r$r rule', 'r$r-', '/bin/true')" \
		-c "$calls" -c "SELECT kairoi_job_set('r$r-bad', '2030-02-01 00:00:00+00')" >/dev/null ||
		fail "round $r: scheduling"
	# rejected twice, then moved to kairoi_failed: kairoi_flush says so
	if admin -c "SELECT kairoi_flush('30 seconds')" >/dev/null 2>&1; then
		fail "round $r: kairoi_flush reports the rejected entry"
	else
		pass "round $r: kairoi_flush reports the rejected entry"
	fi
	wait_for "r$r-bad in kairoi.failed" 10 failed_has "r$r-bad" &&
		pass "round $r: the rejected entry moved to kairoi_failed" ||
		fail "round $r: the rejected entry is not in kairoi_failed"
	check "round $r: kairoi_failed shows it" "r$r-bad" \
		"$(admin -c "SELECT identifier FROM kairoi_failed")"
	ctl fault error_ids='[]' >/dev/null
	check "round $r: kairoi_retry_failed takes it back" 1 \
		"$(admin -c "SELECT kairoi_retry_failed()")"
	admin -c "SELECT kairoi_flush('30 seconds')" >/dev/null &&
		pass "round $r: delivered after the retry" || fail "round $r: kairoi_flush after the retry"
	check "round $r: everything on the server" "yes yes" \
		"$(server_has_job "r$r-5" && echo yes) $(server_has_job "r$r-bad" && echo yes)"
	check "round $r: kairoi_purge_failed" 0 "$(admin -c "SELECT kairoi_purge_failed()")"
	# counts (every poll), the idle close and the reopening
	wait_for "idle" 10 state_is_idle &&
		pass "round $r: the idle connection closes" || fail "round $r: the connection stays open"
	sleep 1.2
	admin -c "SELECT kairoi_job_set('r$r-late', '2030-03-01 00:00:00+00')" \
		-c "SELECT kairoi_flush('30 seconds')" >/dev/null &&
		pass "round $r: the connection reopens for a new entry" || fail "round $r: no delivery after idling"
	check "round $r: kairoi_status() and kairoi_workers" "0|appdb" \
		"$(admin -c "SELECT s.pending, w.database FROM kairoi_status() s, kairoi_workers w")"
	check "round $r: kairoi_pending is empty" "" "$(admin -c "SELECT identifier FROM kairoi_pending")"
	check "round $r: nothing planted ran" "" \
		"$(safe appdb -c "SELECT who || ' in ' || backend || ': ' || what FROM public.pwned")"
	safe appdb -c "TRUNCATE public.pwned" >/dev/null
}

echo "# round 1: search_path = public, pg_catalog by ALTER DATABASE, by the owner"
owner -c "ALTER DATABASE appdb SET search_path = public, pg_catalog" || exit 1
restart_worker || exit 1
exercise 1

echo "# round 2: the same as a setting of the worker's role in appdb"
owner -c "ALTER DATABASE appdb RESET search_path" || exit 1
safe postgres -c "ALTER ROLE postgres IN DATABASE appdb SET search_path = public, pg_catalog" || exit 1
restart_worker || exit 1
exercise 2

echo "# round 3: the default search_path; exact-type objects only could win"
safe postgres -c "ALTER ROLE postgres IN DATABASE appdb RESET search_path" || exit 1
restart_worker || exit 1
exercise 3

echo "# round 4: settings that would break the worker"
# one session: each setting reaches only the sessions that start after it
breaking=(-c "ALTER DATABASE appdb SET default_transaction_read_only = on"
	-c "ALTER DATABASE appdb SET default_transaction_isolation = 'serializable'"
	-c "ALTER DATABASE appdb SET statement_timeout = '1ms'"
	-c "ALTER DATABASE appdb SET exit_on_error = on"
	-c "ALTER DATABASE appdb SET role = 'appowner'")
[ "$VERSION" -ge 170000 ] &&
	breaking+=(-c "ALTER DATABASE appdb SET transaction_timeout = '1ms'")
owner "${breaking[@]}" >/dev/null || exit 1
restart_worker || exit 1
# the superuser session must not inherit them either
admin() { PGOPTIONS="$SAFE_OPTIONS -c search_path=pg_catalog,public" psql_at PG appdb "$@"; }
exercise 4
# A database error in the worker (a table lock it gives up on after its
# lock_timeout) is logged and retried, not fatal: exit_on_error is pinned
pid=$(worker_pid_now)
safe appdb -c "BEGIN" -c "LOCK TABLE kairoi.outbox IN ACCESS EXCLUSIVE MODE" \
	-c "SELECT public.kairoi_job_set('r4-locked', '2030-04-01 00:00:00+00')" \
	-c "SELECT pg_sleep(2.5)" -c "COMMIT" >/dev/null
safe appdb -c "SELECT public.kairoi_flush('30 seconds')" >/dev/null &&
	pass "round 4: delivered after a database error" || fail "round 4: not delivered after a database error"
check "round 4: the worker survived the error" "$pid" "$(worker_pid_now)"

echo "# the launcher: a database created with the hostile settings in place"
safe postgres -c "ALTER ROLE postgres SET search_path = public, pg_catalog" \
	-c "CREATE DATABASE appdb2 OWNER appowner TEMPLATE template0" || exit 1
safe appdb2 -c "CREATE EXTENSION kairoi SCHEMA public" || exit 1
psql_at PG appdb2 -c "SET ROLE appowner" -c "
CREATE TABLE public.pwned (who name, backend text, what text);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.trap(what pg_catalog.text) RETURNS boolean
LANGUAGE plpgsql AS \$\$
BEGIN
	INSERT INTO public.pwned SELECT current_user, 'appdb2', what;
	RETURN true;
END \$\$;
CREATE FUNCTION public.count_step(bigint) RETURNS bigint LANGUAGE sql
	AS 'SELECT \$1 OPERATOR(pg_catalog.+) 1';
CREATE FUNCTION public.count_final(bigint) RETURNS bigint LANGUAGE plpgsql AS
\$\$ BEGIN PERFORM public.trap('count(*)'); RETURN \$1; END \$\$;
CREATE AGGREGATE public.count(*) (SFUNC = public.count_step, STYPE = bigint,
	INITCOND = '0', FINALFUNC = public.count_final);" >/dev/null || exit 1
safe appdb2 -c "SELECT public.kairoi_job_set('second-1', '2030-05-01 00:00:00+00')" >/dev/null || exit 1
wait_for "appdb2's worker" 30 worker_is_up PG appdb2 &&
	pass "the launcher starts appdb2's worker" || fail "appdb2 has no worker"
safe appdb2 -c "SELECT public.kairoi_flush('30 seconds')" >/dev/null &&
	pass "appdb2 delivered" || fail "appdb2 not delivered"
sleep 2.5	# two polls: counts of the outbox
check "nothing planted ran in appdb2" "" \
	"$(safe appdb2 -c "SELECT who || ': ' || what FROM public.pwned")"
safe postgres -c "ALTER ROLE postgres RESET search_path" \
	-c "ALTER DATABASE appdb RESET ALL" >/dev/null

check_outbox_invariants PG appdb
stop_postgres PG fast
finish
