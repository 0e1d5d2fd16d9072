#!/bin/bash
# test/integration/upgrade.sh: ALTER EXTENSION kairoi UPDATE from 1.0 and
# 1.1 to the current version, with the current library.
#
#   a  CREATE EXTENSION kairoi VERSION '1.0' with the current library: the
#      1.0 functions still enqueue (awkward values, a rule before the jobs,
#      a replaced entry, a rollback), into 1.0's table; the worker delivers
#      nothing until the update and says so, and kairoi_flush refuses to
#      wait; failed entries (written as 1.0's worker did) stay
#   b  ALTER EXTENSION kairoi UPDATE: the default version, and every pending
#      and failed entry exactly as before (seq order, versions, times,
#      attempts) in the view of 1.0's columns
#   c  the catalog equals a fresh CREATE EXTENSION kairoi in another
#      database: pg_dump --schema-only (plain, and --binary-upgrade, which
#      writes out every member), the members (pg_describe_object), their
#      privileges and initial privileges, extconfig/extcondition; nothing
#      is executable or readable by PUBLIC
#   d  a pg_dump of the upgraded database restores with its queue, and so
#      does one taken under 1.0 (upgrading by dump and restore)
#   e  the server answers: exactly the pending entries reach it, in seq
#      order; kairoi_retry_failed() requeues the failed ones, delivered
#      once the server stops rejecting them
#   f  the update while an application session that enqueued under 1.0,
#      as a role granted kairoi_job_set, stays connected: the update waits
#      for no lock, the grant survives, the session's next call enqueues
#      into the new tables, and everything is delivered
#   g  ALTER EXTENSION kairoi UPDATE from 1.1, with entries pending and
#      failed, in a database with a publication FOR ALL TABLES: it warns
#      that the publication includes kairoi's tables, keeps every row, the
#      catalog (triggers of the extension's tables included) equals a
#      fresh install, everything is delivered; a pg_dump taken under 1.1
#      restores into the default version with the same queue
# Throughout, postgresql.conf keeps kairoi.database and kairoi.window,
# which 1.1 retired: PostgreSQL starts, each is logged once, and every
# database with the extension is served.  The update from 1.1 with 1.1's
# own library, its worker mid-delivery, is upgrade_from_1_1.sh.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server SRV || exit 1
# postgresql.conf still names the settings 1.1 retired: PostgreSQL starts
start_cluster PG "$SRV_PORT" "kairoi.max_attempts = 2
kairoi.database = 'old'
kairoi.window = 100" || exit 1
WORK=$(make_temp_dir)

sql() { psql_at PG "$@"; }
# sql_is DB EXPECTED QUERY: the query's result is EXPECTED (for wait_for)
sql_is() { [ "$(sql "$1" -c "$3")" = "$2" ]; }
pg_dump_of() { "$PGBIN/pg_dump" -h "$PG_HOST" -p "$PG_PORT" -U postgres "$@"; }

# The queue, every column of 1.0, in a form that shows every byte
# (to_json escapes newlines and tabs).  Columns are named so that a
# column added by a later version changes nothing here.
# (updated_at is not kept since 1.2.)
dump_queue() {
	sql "$1" -c "SELECT 'outbox', seq, kind, to_json(identifier), to_json(arguments), version,
			enqueued_at, attempts, next_attempt_at, last_error
		FROM kairoi.outbox ORDER BY seq" \
		-c "SELECT 'failed', id, kind, to_json(identifier), to_json(arguments), version,
			enqueued_at, attempts, reason, failed_at
		FROM kairoi.failed ORDER BY id"
}
# same_queue BEFORE AFTER PASS FAIL: the dump_queue files BEFORE and AFTER
# are equal (pass PASS), or not (fail FAIL, with the start of the diff)
same_queue() {
	if diff "$1" "$2" >"$2.diff"; then
		pass "$3"
	else
		fail "$4"
		head -20 "$2.diff"
	fi
}
# kind, identifier and arguments of the pending entries in seq order
pending_entries() {
	sql "$1" -c "SELECT format('%s %s %s', kind, to_json(identifier), to_json(arguments))
		FROM kairoi.outbox ORDER BY seq"
}
# The same as a JSON array of [kind, identifier, arguments] (for server_diff)
pending_json() {
	sql "$1" -c "SELECT coalesce(json_agg(json_build_array(kind, identifier, arguments)
		ORDER BY seq), '[]') FROM kairoi.outbox"
}

# server_diff EXPECTED_JSON_FILE: compares what the server holds with the
# [kind, identifier, arguments] entries in the file (a job's arguments are
# its execution time, a rule's its pattern, runner and runner arguments).
# Prints "missing N wrong N unexpected N" and the first differences.
server_diff() {
	$PYTHON - "$KAIROI_ROOT/test" "$SRV_CPORT" "$1" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
from kairoi_ctl import Control, compare_jobs
with open(sys.argv[3]) as f:
    entries = json.load(f)
with Control(port=int(sys.argv[2])) as c:
    state = c.state()
jobs = {i: a[0] for k, i, a in entries if k == 'j'}
rules = {i: a for k, i, a in entries if k == 'r'}
missing, wrong, unexpected = [], [], []
for m, w, u in (compare_jobs(jobs, state['jobs']), compare_jobs(rules, state['rules'])):
    missing += m
    wrong += w
    unexpected += u
print('missing %d wrong %d unexpected %d' % (len(missing), len(wrong), len(unexpected)))
for name, ids in (('missing', missing), ('wrong', wrong), ('unexpected', unexpected)):
    for i in ids[:5]:
        print('#   %s: %r' % (name, i), file=sys.stderr)
EOF
}

# request_order EXPECTED_JSON_FILE: "in seq order" if the server received
# the first request of each entry in the file in the file's order.
request_order() {
	$PYTHON - "$KAIROI_ROOT/test" "$SRV_CPORT" "$1" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
from kairoi_ctl import Control
with open(sys.argv[3]) as f:
    expected = [(k, i) for k, i, a in json.load(f)]
wanted = set(expected)
with Control(port=int(sys.argv[2])) as c:
    requests = c.requests()
seen = []
for r in requests:
    args = r['args'][1:]
    key = ('j', args[1]) if args[:1] == ['SET'] else \
          ('r', args[2]) if args[:2] == ['RULE', 'SET'] else None
    if key in wanted and key not in seen:
        seen.append(key)
if seen == expected:
    print('in seq order')
else:
    print('not in seq order')
    for n, (a, b) in enumerate(zip(seen, expected)):
        if a != b:
            print('#   position %d: received %r, expected %r' % (n, a, b), file=sys.stderr)
            break
    print('#   received %d of %d entries' % (len(seen), len(expected)), file=sys.stderr)
EOF
}

# ---------------------------------------------------------------------------
# a: version 1.0 with the current library
for db in old fresh; do sql postgres -c "CREATE DATABASE $db" || exit 1; done
sql old -c "CREATE EXTENSION kairoi VERSION '1.0'" || exit 1
check "a: version 1.0 installed" "1.0" \
	"$(sql old -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
wait_for "the worker of old" 30 worker_is_up PG old && pass "a: a worker serves the 1.0 database" ||
	fail "a: no worker serves the 1.0 database"

# The worker waits for the update and says so; kairoi_flush refuses
waiting_state="not delivering: run ALTER EXTENSION kairoi UPDATE in this database"
wait_for "old's worker waiting for the update" 30 sql_is old "$waiting_state" \
	"SELECT state FROM kairoi_status()" &&
	pass "a: kairoi_status() says the worker waits for ALTER EXTENSION kairoi UPDATE" ||
	fail "a: kairoi_status() under 1.0: $(sql old -c "SELECT state FROM kairoi_status()")"
check "a: the worker logs it once" 1 \
	"$(grep -c 'kairoi extension in database "old" is older than the library' "$PG_DIR/postgres.log")"
check "a: kairoi_flush refuses to wait under 1.0" "ERROR:  kairoi_flush needs the kairoi extension at version 1.2 in database \"old\"" \
	"$(sql old -c "SELECT kairoi_flush('1 s')" 2>&1 | head -1)"

# Failed entries, as 1.0's worker wrote them after kairoi.max_attempts
sql old -c "INSERT INTO kairoi.failed (kind, identifier, arguments, version, enqueued_at, attempts, reason)
	VALUES ('j', 'failed jöb \"1\"', '{\"2031-01-01 00:00:00\"}', 1, now(), 2, 'answered ERROR'),
		   ('r', 'failed rule 2', '{\"failed \",shell,\"/opt/run it.sh\"}', 2, now(), 2, 'answered ERROR')" \
	>/dev/null || fail "a: failed entries of 1.0"
check "a: the failed entries are in kairoi_failed" 2 "$(sql old -c "SELECT count(*) FROM kairoi_failed")"

# Pending entries, while the server refuses connections: a rule before the
# jobs, spaces, quotes, backslashes, newlines, tabs, non-ASCII, fractional
# seconds in another zone, a replaced entry (keeps its place), a rollback
$KCTL --port "$SRV_CPORT" fault refuse=true >/dev/null
sql old >"$WORK/enqueue.out" 2>&1 <<'EOF'
SELECT kairoi_rule_set('rule "one" é', 'job ', 'shell', '/opt/kairoi/run job.sh');
BEGIN;
SELECT kairoi_job_set('job with spaces', '2030-01-01 00:00:00+00');
SELECT kairoi_job_set('job "double" and ''single'' quotes', '2030-01-02 03:04:05.000001+02');
SELECT kairoi_job_set('job\back\slash', '2030-01-03 00:00:00+00');
SELECT kairoi_job_set(E'job\nnew line\tand tab', '2030-01-04 00:00:00+00');
SELECT kairoi_job_set('jöb ñon-ASCII 日本語 🕒', '2030-01-05 00:00:00+00');
SELECT kairoi_job_set('job replaced', '2030-01-06 00:00:00+00');
COMMIT;
SELECT kairoi_rule_set_amqp('rule amqp', 'jöb', 'amqp://user:pa ss@host/vhost', 'ex"change', 'routing key é');
SELECT kairoi_job_set('bulk ' || i, '2030-02-01 00:00:00+00'::timestamptz + i * interval '1 minute')
	FROM generate_series(1, 200) i;
BEGIN;
SELECT kairoi_job_set('rolled back', '2030-01-07 00:00:00+00');
ROLLBACK;
SELECT kairoi_job_set('job replaced', '2030-12-31 23:59:59.5+00');
SELECT kairoi_rule_set_shell('rule last', 'bulk ', '/usr/bin/run "bulk"');
EOF
check "a: the 1.0 functions enqueue while the server refuses" 0 $?
# What the outbox must hold, in seq order (kind, identifier, arguments as
# JSON): execution times in UTC, rounded up to the second
{
	cat <<'EOF'
r "rule \"one\" é" ["job ","shell","/opt/kairoi/run job.sh"]
j "job with spaces" ["2030-01-01 00:00:00"]
j "job \"double\" and 'single' quotes" ["2030-01-02 01:04:06"]
j "job\\back\\slash" ["2030-01-03 00:00:00"]
j "job\nnew line\tand tab" ["2030-01-04 00:00:00"]
j "jöb ñon-ASCII 日本語 🕒" ["2030-01-05 00:00:00"]
j "job replaced" ["2031-01-01 00:00:00"]
r "rule amqp" ["jöb","amqp","amqp://user:pa ss@host/vhost","ex\"change","routing key é"]
EOF
	for i in $(seq 1 200); do
		printf 'j "bulk %d" ["%s"]\n' "$i" "$(date -u -d "2030-02-01 00:00:00 UTC + $i minutes" '+%Y-%m-%d %H:%M:%S')"
	done
	echo 'r "rule last" ["bulk ","shell","/usr/bin/run \"bulk\""]'
} >"$WORK/expected_pending"
pending_entries old >"$WORK/pending_before"
if diff "$WORK/expected_pending" "$WORK/pending_before" >"$WORK/pending.diff"; then
	pass "a: the outbox holds exactly what was enqueued, in seq order"
else
	fail "a: the outbox differs from what was enqueued (expected < > outbox)"
	head -20 "$WORK/pending.diff"
	cat "$WORK/enqueue.out"
fi
check "a: the 1.0 views show the queue" "209 2" \
	"$(sql old -c "SELECT (SELECT count(*) FROM kairoi_pending) || ' ' || (SELECT count(*) FROM kairoi_failed)")"
check "a: kairoi_status counts nothing while the extension is older than the library" "|" \
	"$(sql old -c "SELECT pending, failed FROM kairoi_status()")"
check "a: nothing reached the server" "0 0" \
	"$($KCTL --port "$SRV_CPORT" count-jobs) $($KCTL --port "$SRV_CPORT" count-rules)"
dump_queue old >"$WORK/queue_before"
pg_dump_of -Fc -f "$WORK/old-1.0.dump" old && pass "a: pg_dump under 1.0" ||
	fail "a: pg_dump under 1.0 failed"
pending_json old >"$WORK/pending_before.json"
sql old -c "SELECT json_agg(json_build_array(kind, identifier, arguments) ORDER BY id)
	FROM kairoi.failed" >"$WORK/failed.json"

# ---------------------------------------------------------------------------
# b: the upgrade keeps the queue
sql old -c "ALTER EXTENSION kairoi UPDATE" && pass "b: ALTER EXTENSION kairoi UPDATE" ||
	fail "b: ALTER EXTENSION kairoi UPDATE failed"
default_version=$(sql old -c "SELECT default_version FROM pg_available_extensions WHERE name = 'kairoi'")
check "b: kairoi.control's default version is 1.2" "1.2" "$default_version"
check "b: extversion is the default version" "$default_version" \
	"$(sql old -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
dump_queue old >"$WORK/queue_after"
same_queue "$WORK/queue_before" "$WORK/queue_after" \
	"b: every pending and failed row unchanged by the upgrade ($(wc -l <"$WORK/queue_after") rows)" \
	"b: the upgrade changed the queue (before < > after)"
wait_for "the worker of old after the upgrade" 30 worker_is_up PG old &&
	pass "b: a worker serves the upgraded database" || fail "b: no worker after the upgrade"

# ---------------------------------------------------------------------------
# c: the upgraded catalog equals a fresh install
sql fresh -c "CREATE EXTENSION kairoi" || exit 1
wait_for "the worker of fresh" 30 worker_is_up PG fresh &&
	pass "c: fresh is served although the retired kairoi.database names old" ||
	fail "c: no worker in fresh"

# What pg_dump writes that differs between two databases by nature: OIDs,
# relfrozenxid, the random \restrict key, comments and blank lines; and the
# configuration sequences' values (data: dump_queue compares the rows)
normalise_dump() {
	sed -E -e '/^--/d' -e '/^$/d' -e '/^\\(un)?restrict /d' \
		-e '/^SELECT pg_catalog\.binary_upgrade_set_next_/d' \
		-e "/^SELECT pg_catalog\.setval\('kairoi\./d" \
		-e "s/relfrozenxid = '[0-9]+', relminmxid = '[0-9]+'/relfrozenxid = X, relminmxid = X/" \
		-e "s/^WHERE oid = '[0-9]+';$/WHERE oid = X;/" \
		-e "s/(binary_upgrade_create_empty_extension\('kairoi', [^{]*)'\{[0-9,]*\}'/\1'{OIDS}'/"
}

# catalog DB: the extension's catalog entries, with names instead of OIDs
catalog() {
	sql "$1" <<'EOF'
\pset null '(null)'
CREATE TEMP VIEW member AS
	SELECT classid, objid, objsubid FROM pg_depend
	WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'kairoi');
SELECT 'extension', extname, extowner::regrole, extnamespace::regnamespace,
	   extrelocatable, extversion
FROM pg_extension WHERE extname = 'kairoi';
SELECT 'config', c::regclass, cond
FROM pg_extension, unnest(extconfig, extcondition) AS u(c, cond)
WHERE extname = 'kairoi' ORDER BY c::regclass::text;
SELECT 'member', pg_describe_object(classid, objid, objsubid) FROM member ORDER BY 2;
SELECT 'proacl', p.oid::regprocedure, p.proowner::regrole, p.proacl, p.prosecdef, p.proconfig
FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
ORDER BY p.oid::regprocedure::text;
SELECT 'relacl', c.oid::regclass, c.relkind, c.relowner::regrole, c.relacl
FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
ORDER BY c.oid::regclass::text;
SELECT 'attacl', a.attrelid::regclass, a.attname, a.attacl
FROM member m JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid
WHERE a.attacl IS NOT NULL ORDER BY a.attrelid::regclass::text, a.attname;
SELECT 'trigger', t.tgrelid::regclass, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
FROM member m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid
ORDER BY t.tgrelid::regclass::text, t.tgname;
SELECT 'nspacl', nspname, nspowner::regrole, nspacl FROM pg_namespace WHERE nspname = 'kairoi';
SELECT 'initprivs', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.privtype, i.initprivs
FROM pg_init_privs i JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
ORDER BY 2, 3;
EOF
}

# same_catalog DB: DB's catalog and schema dumps equal fresh's
same_catalog() {
	local db=$1 what
	for what in catalog schema binary; do
		case $what in
		catalog)
			catalog fresh >"$WORK/fresh.$what"
			catalog "$db" >"$WORK/$db.$what"
			;;
		schema)
			pg_dump_of --schema-only fresh | normalise_dump >"$WORK/fresh.$what"
			pg_dump_of --schema-only "$db" | normalise_dump >"$WORK/$db.$what"
			;;
		binary)
			pg_dump_of --schema-only --binary-upgrade fresh | normalise_dump >"$WORK/fresh.$what"
			pg_dump_of --schema-only --binary-upgrade "$db" | normalise_dump >"$WORK/$db.$what"
			;;
		esac
		if [ ! -s "$WORK/fresh.$what" ]; then
			fail "c: $what of fresh is empty"
		elif diff -u "$WORK/fresh.$what" "$WORK/$db.$what" >"$WORK/$db.$what.diff"; then
			pass "$2: $what of $db equals a fresh install ($(wc -l <"$WORK/fresh.$what") lines)"
		else
			fail "$2: $what of $db differs from a fresh install (- fresh, + $db)"
			head -40 "$WORK/$db.$what.diff"
		fi
	done
}
same_catalog old c

# the comparison itself sees what it claims to see
check "c: the binary-upgrade dump writes out the members" t \
	"$(grep -q '^ALTER EXTENSION kairoi ADD TABLE kairoi.pending_jobs;' "$WORK/old.binary" &&
		grep -q '^ALTER EXTENSION kairoi ADD VIEW kairoi.outbox;' "$WORK/old.binary" &&
		grep -q '^ALTER EXTENSION kairoi ADD FUNCTION public.kairoi_job_set(' "$WORK/old.binary" &&
		echo t)"
check "c: the catalog lists the queue's tables as configuration tables" 3 \
	"$(grep -Ec '^config\|kairoi.(pending_jobs|pending_rules|rejections)\|$' "$WORK/old.catalog")"
check "c: the catalog lists the triggers of the extension's tables" t \
	"$(grep -q '^trigger|kairoi\.pending_jobs|' "$WORK/old.catalog" && echo t)"

check "c: no function of the upgraded extension is executable by PUBLIC" "" \
	"$(sql old -c "SELECT p.oid::regprocedure FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
		JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
		CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
		WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
		  AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'")"
check "c: no table, view or sequence of the upgraded extension grants anything to PUBLIC" "" \
	"$(sql old -c "SELECT c.oid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
		JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
		CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
			CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a
		WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND a.grantee = 0")"
check "c: schema kairoi grants nothing to PUBLIC" "" \
	"$(sql old -c "SELECT a.privilege_type FROM pg_namespace n,
		aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
		WHERE n.nspname = 'kairoi' AND a.grantee = 0")"

# ---------------------------------------------------------------------------
# d: a pg_dump of the upgraded database restores, with its queue; so does
# the one taken under 1.0, into the new version (upgrading by dump and
# restore)

# restore_check LABEL DUMP DATABASE QUEUE: restore DUMP into a new
# DATABASE, and check its version, its queue (against the file QUEUE, of
# dump_queue) and catalog; drop it then (its worker would deliver the same
# entries: the counts below are those of the database dumped)
restore_check() {
	local label=$1 dump=$2 db=$3 queue=$4
	sql postgres -c "CREATE DATABASE $db" || exit 1
	if "$PGBIN/pg_restore" -h "$PG_HOST" -p "$PG_PORT" -U postgres --exit-on-error -d "$db" \
		"$dump" 2>"$WORK/$db.err"; then
		pass "$label: pg_restore into $db"
	else
		fail "$label: pg_restore into $db failed"
		cat "$WORK/$db.err"
	fi
	check "$label: $db has the default version" "$default_version" \
		"$(sql "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
	dump_queue "$db" >"$WORK/queue_$db"
	same_queue "$queue" "$WORK/queue_$db" "$label: $db holds every pending and failed row unchanged" \
		"$label: $db's queue differs (before < > restored)"
	check "$label: $db's sequences continue after the restored rows" t \
		"$(sql "$db" -c "SELECT (SELECT last_value FROM kairoi.outbox_seq) >= max(GREATEST(seq, version))
			AND (SELECT last_value FROM kairoi.failed_id_seq) >= (SELECT max(id) FROM kairoi.failed)
			FROM kairoi.outbox")"
	same_catalog "$db" "$label"
	sql postgres -c "DROP DATABASE $db" || fail "$label: DROP DATABASE $db"
}

if pg_dump_of -Fc -f "$WORK/old.dump" old; then pass "d: pg_dump of the upgraded database"
else fail "d: pg_dump of the upgraded database failed"; fi
restore_check d "$WORK/old.dump" restored "$WORK/queue_before"
restore_check d "$WORK/old-1.0.dump" restored_from_10 "$WORK/queue_before"

# ---------------------------------------------------------------------------
# e: the server answers
sql old -c "SELECT kairoi_job_set('after the upgrade', '2032-01-01 00:00:00+00')" >/dev/null ||
	fail "e: kairoi_job_set after the upgrade"
# what the server must hold: what was pending before the upgrade, and that
# job
$PYTHON -c 'import json, sys; print(json.dumps(
	json.load(open(sys.argv[1])) + [["j", "after the upgrade", ["2032-01-01 00:00:00"]]]))' \
	"$WORK/pending_before.json" >"$WORK/pending_all.json"
$KCTL --port "$SRV_CPORT" fault refuse=false >/dev/null
check "e: everything pending is acknowledged" "" "$(sql old -c "SELECT kairoi_flush('60 s')")"
check "e: the server holds exactly the pending entries" \
	"missing 0 wrong 0 unexpected 0" \
	"$(server_diff "$WORK/pending_all.json")"
check "e: received in seq order" "in seq order" "$(request_order "$WORK/pending_all.json")"
check "e: the outbox is empty, the failed entries still there" "0|2" \
	"$(sql old -c "SELECT pending, failed FROM kairoi_status()")"

$KCTL --port "$SRV_CPORT" fault 'error_ids=[]' >/dev/null
sql old >"$WORK/retried" <<'EOF'
BEGIN;
SELECT kairoi_retry_failed();
SELECT count(*) FROM kairoi_failed;
SELECT format('%s %s %s', kind, to_json(identifier), to_json(arguments))
	FROM kairoi.outbox ORDER BY identifier;
COMMIT;
EOF
check "e: kairoi_retry_failed takes both failed entries back" "2 0" "$(head -2 "$WORK/retried" | xargs)"
check "e: and queues them unchanged" 'j "failed jöb \"1\"" ["2031-01-01 00:00:00"]
r "failed rule 2" ["failed ","shell","/opt/run it.sh"]' "$(tail -n +3 "$WORK/retried")"
check "e: the retried entries are acknowledged" "" "$(sql old -c "SELECT kairoi_flush('60 s')")"
$PYTHON -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])) + json.load(open(sys.argv[2]))))' \
	"$WORK/pending_all.json" "$WORK/failed.json" >"$WORK/everything.json"
check "e: the server holds exactly the pending and the failed entries" "missing 0 wrong 0 unexpected 0" \
	"$(server_diff "$WORK/everything.json")"
check "e: nothing left pending or failed" "0|0" \
	"$(sql old -c "SELECT pending, failed FROM kairoi_status()")"

# ---------------------------------------------------------------------------
# f: the update while an application session that enqueued under 1.0, as a
# role granted kairoi_job_set, stays connected: the update waits for no
# lock, the grant survives, the session's next call enqueues into 1.2's
# tables (its plan of 1.0's statement is dropped with 1.0's table), and
# everything is delivered
sql postgres -c "CREATE DATABASE stalled" -c "CREATE ROLE kairoi_upgrade_app" || exit 1
sql stalled -c "CREATE EXTENSION kairoi VERSION '1.0'" \
	-c "GRANT EXECUTE ON FUNCTION kairoi_job_set(text, timestamptz) TO kairoi_upgrade_app" || exit 1
wait_for "the worker of stalled" 30 worker_is_up PG stalled
sql stalled -c "SELECT kairoi_rule_set_shell('stalled rule', 'stalled ', '/opt/stalled.sh')" \
	-c "SELECT kairoi_job_set('stalled ' || i, '2033-01-01 00:00:00+00'::timestamptz + i * interval '1 s')
		FROM generate_series(1, 500) i" >/dev/null || fail "f: enqueueing under 1.0"
pending_json stalled >"$WORK/stalled.json"

# ALTER EXTENSION from another session, run by the application session's \!
cat >"$WORK/alter.sh" <<EOF
t0=\$(date +%s%3N)
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d stalled \\
	-c "SET lock_timeout = '10s'" -c "ALTER EXTENSION kairoi UPDATE" && echo "altered"
echo "# f: ALTER EXTENSION kairoi UPDATE took \$(( \$(date +%s%3N) - t0 )) ms"
EOF
sql stalled >"$WORK/session.out" 2>&1 <<EOF
SET ROLE kairoi_upgrade_app;
SELECT 'enqueued ' || kairoi_job_set('session before', '2034-01-01 00:00:00+00')::text;
\\! bash $WORK/alter.sh
SELECT 'enqueued ' || kairoi_job_set('session after', '2034-01-02 00:00:00+00')::text;
EOF
grep '^# f:' "$WORK/session.out"
session=$(grep -E '^(enqueued|altered)' "$WORK/session.out" | xargs)
check "f: the session enqueues before, ALTER EXTENSION succeeds, the session enqueues after" \
	"enqueued altered enqueued" "$session"
[ "$session" = "enqueued altered enqueued" ] || cat "$WORK/session.out"
check "f: extversion is the default version" "$default_version" \
	"$(sql stalled -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
check "f: the session's call after the update went to 1.2's queue" "session after" \
	"$(sql stalled -c "SELECT identifier FROM kairoi.pending_jobs WHERE identifier = 'session after'")"
check "f: everything pending is acknowledged" "" "$(sql stalled -c "SELECT kairoi_flush('60 s')")"
$PYTHON -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])) + json.load(open(sys.argv[2])) +
	[["j", "session before", ["2034-01-01 00:00:00"]], ["j", "session after", ["2034-01-02 00:00:00"]]]))' \
	"$WORK/everything.json" "$WORK/stalled.json" >"$WORK/everything_stalled.json"
check "f: the server holds exactly old's and stalled's entries" "missing 0 wrong 0 unexpected 0" \
	"$(server_diff "$WORK/everything_stalled.json")"
# the grant made the ACL differ from a fresh install's on purpose
sql stalled -c "REVOKE EXECUTE ON FUNCTION kairoi_job_set(text, timestamptz) FROM kairoi_upgrade_app" || exit 1
same_catalog stalled f

# ---------------------------------------------------------------------------
# g: from 1.1, with entries pending and failed, under a publication
sql postgres -c "CREATE DATABASE from11" || exit 1
sql from11 -c "CREATE EXTENSION kairoi VERSION '1.1'" || exit 1
check "g: version 1.1 installed" "1.1" \
	"$(sql from11 -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
wait_for "the worker of from11" 30 worker_is_up PG from11 || fail "g: no worker serves from11"
# a failed entry, as 1.1's worker wrote them
sql from11 -c "INSERT INTO kairoi.failed (kind, identifier, arguments, version, enqueued_at, attempts, reason)
	VALUES ('j', 'failed under 1.1', '{\"2035-01-01 00:00:00\"}', 1, now(), 2, 'answered ERROR')" \
	>/dev/null || fail "g: a failed entry under 1.1"
$KCTL --port "$SRV_CPORT" fault refuse=true 'error_ids=[]' >/dev/null
sql from11 -c "SELECT kairoi_rule_set_shell('rule under 1.1', 'g ', '/opt/g.sh')" \
	-c "SELECT kairoi_job_set_many(array_agg('g ' || i), array_agg('2035-02-01 00:00:00+00'::timestamptz + i * interval '1 s'))
		FROM generate_series(1, 100) i" \
	-c "SELECT kairoi_job_set('g 50', '2035-12-31 00:00:00+00')" >/dev/null || fail "g: enqueueing under 1.1"
check "g: pending and failed under 1.1" "101|1" \
	"$(sql from11 -c "SELECT (SELECT count(*) FROM kairoi_pending), (SELECT count(*) FROM kairoi_failed)")"
dump_queue from11 >"$WORK/queue_from11_before"
pending_json from11 >"$WORK/from11.json"
sql from11 -c "SELECT json_agg(json_build_array(kind, identifier, arguments)) FROM kairoi.failed" \
	>"$WORK/from11_failed.json"
if pg_dump_of -Fc -f "$WORK/from11-1.1.dump" from11; then pass "g: pg_dump under 1.1"
else fail "g: pg_dump under 1.1 failed"; fi
sql from11 -c "CREATE PUBLICATION g_all FOR ALL TABLES" 2>/dev/null || exit 1
check "g: ALTER EXTENSION kairoi UPDATE warns that g_all includes kairoi's tables" 1 \
	"$(sql from11 -c "ALTER EXTENSION kairoi UPDATE" 2>&1 |
		grep -c '^WARNING:  publication "g_all" includes kairoi.pending_jobs, kairoi.pending_rules, kairoi.rejections, kairoi.failed, kairoi.origin$')"
check "g: extversion is the default version" "$default_version" \
	"$(sql from11 -c "SELECT extversion FROM pg_extension WHERE extname = 'kairoi'")"
dump_queue from11 >"$WORK/queue_from11_after"
same_queue "$WORK/queue_from11_before" "$WORK/queue_from11_after" \
	"g: every pending and failed row unchanged by the upgrade ($(wc -l <"$WORK/queue_from11_after") rows)" \
	"g: the upgrade changed the queue (before < > after)"
# the publication is no part of a fresh install
sql from11 -c "DROP PUBLICATION g_all" || exit 1
same_catalog from11 g
# upgrading by dump and restore: the dump taken under 1.1, into the
# default version (the server still refuses: the restored worker delivers
# nothing before its database is dropped)
restore_check g "$WORK/from11-1.1.dump" restored_from_11 "$WORK/queue_from11_before"
$KCTL --port "$SRV_CPORT" fault refuse=false >/dev/null
check "g: everything pending is acknowledged" "" "$(sql from11 -c "SELECT kairoi_flush('60 s')")"
check "g: the failed entry is retried" 1 "$(sql from11 -c "SELECT kairoi_retry_failed()")"
check "g: and acknowledged" "" "$(sql from11 -c "SELECT kairoi_flush('60 s')")"
$PYTHON -c 'import json, sys; print(json.dumps(sum((json.load(open(f)) for f in sys.argv[1:]), [])))' \
	"$WORK/everything_stalled.json" "$WORK/from11.json" "$WORK/from11_failed.json" >"$WORK/everything_from11.json"
check "g: the server holds exactly old's, stalled's and from11's entries" "missing 0 wrong 0 unexpected 0" \
	"$(server_diff "$WORK/everything_from11.json")"

check "the retired settings are logged once each" "1 1" \
	"$(grep -c 'kairoi.database is ignored since kairoi 1.1' "$PG_DIR/postgres.log") $(grep -c 'kairoi.window is ignored since kairoi 1.1' "$PG_DIR/postgres.log")"

stop_postgres PG fast
finish
