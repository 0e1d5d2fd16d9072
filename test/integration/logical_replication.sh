#!/bin/bash
# test/integration/logical_replication.sh: kairoi's tables are node-local
# under logical replication.
#
# Publisher P delivers to test server A, subscriber S to test server B.
# P has CREATE PUBLICATION allpub FOR ALL TABLES (kairoi's tables and the
# application's table, orders), S a subscription to it, with streaming: P
# streams transactions over logical_decoding_work_mem = 64kB, and from
# PostgreSQL 16 S applies them in a parallel apply worker.  Every change P
# makes to kairoi's tables reaches S's apply worker, which must skip it.
# P's publication is created before its extension: it warns about nothing
# then, and CREATE EXTENSION kairoi warns that it includes kairoi's tables.
#   a  the initial copy (copy_data) of P's pending entries: S's outbox
#      stays empty, orders is copied
#   b  1000 jobs scheduled on P in one streamed transaction while A is
#      down: S delivers none of P's jobs to B; A gets them once up
#   c  the same identifiers pending on both nodes: P's delivery (its
#      replicated deletes) removes none of S's entries; B gets S's values
#      and A P's
#   d  S's own backlog (B down) under P's new and replaced entries, whose
#      seq collide with S's: the subscription keeps applying, S's entries
#      stay as they were
#   e  P's entries replicated above S's sequence: scheduling on S succeeds
#   f  a session with session_replication_role = replica schedules on
#      each node: its entry is kept and delivered by that node
#   g  kairoi.failed: an entry rejected on each node, both with id 1 (each
#      node's sequence); P's retry (its delete) leaves S's entry alone
#   h  everything delivered: each server holds exactly its node's jobs and
#      received no request for the other's; the subscription's apply and
#      sync error counts are 0; amcheck on both nodes
# Identifiers are GROUP.N, the group naming the node and the phase (Pb: P,
# phase b); P schedules at 2030-01-01, S at 2031-01-01.  Each phase checks
# first that its collisions happen (seq values), so that it keeps testing
# what it says if the phases before it change.
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"

start_server A || exit 1
start_server B || exit 1
NODE_CONF="wal_level = logical
max_worker_processes = 16
kairoi.max_attempts = 2"
start_cluster P "$A_PORT" "$NODE_CONF
logical_decoding_work_mem = 64kB" || exit 1
start_cluster S "$B_PORT" "$NODE_CONF" || exit 1

sql() { psql_at "$1" app "${@:2}"; }
# sql_is NODE EXPECTED QUERY: the query's result is EXPECTED (for wait_for)
sql_is() { [ "$(sql "$1" -c "$3")" = "$2" ]; }
fault() { $KCTL --port "$1" fault "${@:2}" >/dev/null; }
flush() { sql "$1" -c "SELECT kairoi_flush('60 s')" >/dev/null || fail "kairoi_flush on $1"; }
year_of() { if [ "$1" = P ]; then echo 2030; else echo 2031; fi; }

# schedule NODE GROUP COUNT: jobs GROUP.1..COUNT in one transaction;
# prints how many were scheduled
schedule() {
	sql "$1" -c "SELECT count(kairoi_job_set('$2.' || i, '$(year_of "$1")-01-01 00:00:00+00'))
		FROM generate_series(1, $3) i"
}

# replicated: once it returns true, S has applied (or skipped) everything
# P committed before: a marker row of orders, committed after it, is there
MARK=0
replicated() {
	MARK=$((MARK + 1))
	sql P -c "INSERT INTO orders VALUES ($MARK, 'mark')" >/dev/null &&
		wait_for "order $MARK on S" 30 sql_is S 1 "SELECT count(*) FROM orders WHERE id = $MARK"
}

# server_groups CONTROL_PORT: the jobs a test server holds, by group, the
# groups it received a SET for (at least once), and their times
server_groups() {
	$PYTHON - "$KAIROI_ROOT/test" "$1" <<'EOF'
import collections, sys
sys.path.insert(0, sys.argv[1])
from kairoi_ctl import Control
with Control(port=int(sys.argv[2])) as c:
    jobs = c.state()['jobs']
    requests = c.requests()
group = lambda identifier: identifier.split('.', 1)[0]
held = collections.Counter(group(i) for i in jobs)
requested = {group(r['args'][2]) for r in requests if r['args'][1:2] == ['SET']}
print('held %s; requested %s; at %s' % (
    ' '.join('%s=%d' % g for g in sorted(held.items())) or '-',
    ' '.join(sorted(requested)) or '-',
    ' '.join(sorted(set(jobs.values()))) or '-'))
EOF
}

# outbox NODE: "entries|failed entries" of the node
outbox() { sql "$1" -c "SELECT (SELECT count(*) FROM kairoi.outbox), (SELECT count(*) FROM kairoi.failed)"; }

# On P the publication comes first: it warns once kairoi is there
for node in P S; do
	psql_at "$node" postgres -c "CREATE DATABASE app" &&
		sql "$node" -c "CREATE TABLE orders (id integer PRIMARY KEY, note text)" || exit 1
done
check "CREATE PUBLICATION FOR ALL TABLES in a database without kairoi warns about nothing" "" \
	"$(sql P -c "CREATE PUBLICATION allpub FOR ALL TABLES" 2>&1)"
check "CREATE EXTENSION kairoi then warns that allpub includes kairoi's tables" 1 \
	"$(sql P -c "CREATE EXTENSION kairoi" 2>&1 |
		grep -c '^WARNING:  publication "allpub" includes kairoi.pending_jobs, kairoi.pending_rules, kairoi.rejections, kairoi.failed, kairoi.origin$')"
sql S -c "CREATE EXTENSION kairoi" || exit 1
for node in P S; do
	wait_for "the worker of $node" 30 worker_is_up "$node" app || fail "no worker on $node"
done

# ---------------------------------------------------------------------------
# a: the initial copy, both servers down (so that no worker removes what
# the copy may have written)
fault "$A_CPORT" refuse=true
fault "$B_CPORT" refuse=true
check "a: 50 jobs pending on P" 50 "$(schedule P Pa 50)"
sql P -c "INSERT INTO orders VALUES (0, 'before the subscription')" || exit 1
if [ "$(sql S -c "SHOW server_version_num")" -ge 160000 ]; then streaming=parallel; else streaming=on; fi
sql S -c "SET client_min_messages = warning" -c "CREATE SUBSCRIPTION sub
	CONNECTION 'host=$P_HOST port=$P_PORT dbname=app user=postgres'
	PUBLICATION allpub WITH (streaming = $streaming)" || exit 1
wait_for "the initial copy of 6 tables" 60 sql_is S t \
	"SELECT count(*) = 6 AND bool_and(srsubstate = 'r') FROM pg_subscription_rel" &&
	pass "a: the initial copy of kairoi's five tables and orders is done" ||
	fail "a: the initial copy did not finish: $(sql S -c "SELECT srrelid::regclass, srsubstate FROM pg_subscription_rel")"
check "a: orders copied to S" 1 "$(sql S -c "SELECT count(*) FROM orders WHERE id = 0")"
check "a: S's kairoi tables stay empty: the copy of P's pending entries skipped" "0|0" "$(outbox S)"
check "a: S's kairoi.origin still holds S alone (P's row skipped: S is no copy)" "1|t" \
	"$(sql S -c "SELECT count(*), bool_and(database = (SELECT oid FROM pg_database WHERE datname = current_database()))
		FROM kairoi.origin")"

# ---------------------------------------------------------------------------
# b: one streamed transaction of 1000 jobs on P while A is down.  Right
# after the copy, the apply worker may still take a streamed transaction
# itself (it starts parallel apply workers once it has found every table
# ready): one transaction first
replicated || fail "b: S did not apply a transaction after the copy"
check "b: 1000 jobs scheduled on P in one transaction" 1000 "$(schedule P Pb 1000)"
replicated && pass "b: S applied P's transaction" || fail "b: S did not apply P's transaction"
wait_for "a streamed transaction" 10 sql_is P t \
	"SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'sub'" &&
	pass "b: P streamed it" || fail "b: P streamed no transaction"
if [ "$streaming" = parallel ]; then
	wait_for "a parallel apply worker" 10 sql_is S t \
		"SELECT count(*) > 0 FROM pg_stat_subscription WHERE subname = 'sub' AND leader_pid IS NOT NULL" &&
		pass "b: S applied it in a parallel apply worker" ||
		fail "b: S started no parallel apply worker"
fi
check "b: S's kairoi tables stay empty" "0|0" "$(outbox S)"
fault "$B_CPORT" refuse=false
flush S
check "b: B received nothing of P's" "held -; requested -; at -" "$(server_groups "$B_CPORT")"
fault "$A_CPORT" refuse=false
flush P
check "b: A holds P's jobs" "held Pa=50 Pb=1000; requested Pa Pb; at 2030-01-01 00:00:00" \
	"$(server_groups "$A_CPORT")"
replicated || fail "b: S did not apply P's deletes"
check "b: P's deletes change nothing on S" "0|0" "$(outbox S)"

# ---------------------------------------------------------------------------
# c: the same identifiers pending on both nodes
fault "$A_CPORT" refuse=true
fault "$B_CPORT" refuse=true
check "c: 10 shared identifiers scheduled on P" 10 "$(schedule P shared 10)"
replicated || fail "c: S did not apply P's entries"
check "c: the same 10 scheduled on S" 10 "$(schedule S shared 10)"
fault "$A_CPORT" refuse=false
flush P
replicated || fail "c: S did not apply P's deletes"
check "c: P's delivery removed none of S's entries" \
	"10|10" "$(sql S -c "SELECT count(*), count(*) FILTER (WHERE arguments = '{2031-01-01 00:00:00}')
		FROM kairoi.outbox WHERE identifier LIKE 'shared.%'")"
fault "$B_CPORT" refuse=false
flush S
check "c: A holds P's values" "held Pa=50 Pb=1000 shared=10; requested Pa Pb shared; at 2030-01-01 00:00:00" \
	"$(server_groups "$A_CPORT")"
check "c: B holds S's values" "held shared=10; requested shared; at 2031-01-01 00:00:00" \
	"$(server_groups "$B_CPORT")"

# ---------------------------------------------------------------------------
# d: S's backlog under P's new and replaced entries, seq colliding
fault "$B_CPORT" refuse=true
check "d: 1500 jobs pending on S" 1500 "$(schedule S Sd 1500)"
check "d: P's next 200 seq values are among S's pending ones" t \
	"$(sql S -c "SELECT min(seq) <= $(sql P -c "SELECT last_value + 1 FROM kairoi.outbox_seq")
		AND max(seq) >= $(sql P -c "SELECT last_value + 200 FROM kairoi.outbox_seq") FROM kairoi.outbox")"
check "d: 100 jobs scheduled on P" 100 "$(schedule P Pd 100)"
check "d: and replaced" 100 "$(schedule P Pd 100)"
replicated && pass "d: the subscription applies P's changes while S's entries are pending" ||
	fail "d: the subscription stalls on S's pending entries"
check "d: S's entries are unchanged" "1500|1500" \
	"$(sql S -c "SELECT count(*), count(*) FILTER (WHERE identifier LIKE 'Sd.%' AND arguments = '{2031-01-01 00:00:00}')
		FROM kairoi.outbox")"
fault "$B_CPORT" refuse=false
flush S
flush P

# ---------------------------------------------------------------------------
# e: P's entries replicated above S's sequence
fault "$A_CPORT" refuse=true
fault "$B_CPORT" refuse=true
check "e: 1000 jobs pending on P" 1000 "$(schedule P Pe 1000)"
replicated || fail "e: S did not apply P's entries"
check "e: S's next seq value is among those of P's pending entries" t \
	"$(sql P -c "SELECT $(sql S -c "SELECT last_value + 1 FROM kairoi.outbox_seq") BETWEEN min(seq) AND max(seq)
		FROM kairoi.outbox")"
check "e: 700 jobs scheduled on S" 700 "$(schedule S Se 700)"
check "e: S holds exactly its own entries" "700|0" "$(outbox S)"
fault "$A_CPORT" refuse=false
fault "$B_CPORT" refuse=false
flush S
flush P

# ---------------------------------------------------------------------------
# f: session_replication_role = replica in an ordinary session
fault "$A_CPORT" refuse=true
fault "$B_CPORT" refuse=true
for node in P S; do
	group=${node}f
	check "f: $node schedules with session_replication_role = replica" "replica 1" \
		"$(sql "$node" -c "SET session_replication_role = replica" -c "SHOW session_replication_role" \
			-c "SELECT count(kairoi_job_set('$group.1', '$(year_of "$node")-01-01 00:00:00+00'))" | xargs)"
	check "f: $node keeps the entry" 1 \
		"$(sql "$node" -c "SELECT count(*) FROM kairoi.outbox WHERE identifier = '$group.1'")"
done
replicated || fail "f: S did not apply P's entry"
check "f: S holds its entry only" "Sf.1" "$(sql S -c "SELECT string_agg(identifier, ' ') FROM kairoi.outbox")"
fault "$A_CPORT" refuse=false
fault "$B_CPORT" refuse=false
flush P
flush S

# ---------------------------------------------------------------------------
# g: kairoi.failed, ids from each node's sequence
fault "$A_CPORT" 'error_ids=["Pg.1"]'
fault "$B_CPORT" 'error_ids=["Sg.1"]'
check "g: S schedules a job B rejects" 1 "$(schedule S Sg 1)"
wait_for "S's failed entry" 30 sql_is S "0|1" "SELECT * FROM (SELECT count(*) FROM kairoi.outbox) o,
	(SELECT count(*) FROM kairoi.failed) f" || fail "g: no failed entry on S"
check "g: P schedules a job A rejects" 1 "$(schedule P Pg 1)"
wait_for "P's failed entry" 30 sql_is P "0|1" "SELECT * FROM (SELECT count(*) FROM kairoi.outbox) o,
	(SELECT count(*) FROM kairoi.failed) f" || fail "g: no failed entry on P"
check "g: both failed entries have id 1" "1 1" \
	"$(sql P -c "SELECT id FROM kairoi.failed") $(sql S -c "SELECT id FROM kairoi.failed")"
replicated && pass "g: S applies P's failed entry" || fail "g: the subscription stalls on P's failed entry"
check "g: S's kairoi.failed holds its own entry only" "1 Sg.1" \
	"$(sql S -c "SELECT id, identifier FROM kairoi.failed" | tr '|' ' ')"
fault "$A_CPORT" 'error_ids=[]'
check "g: P retries its failed entry" 1 "$(sql P -c "SELECT kairoi_retry_failed()")"
flush P
replicated || fail "g: S did not apply P's retry"
check "g: P's retry leaves S's failed entry alone" "1 Sg.1" \
	"$(sql S -c "SELECT id, identifier FROM kairoi.failed" | tr '|' ' ')"

# ---------------------------------------------------------------------------
# h: everything delivered, each to its own node's server
fault "$B_CPORT" 'error_ids=[]'
check "h: S retries its failed entry" 1 "$(sql S -c "SELECT kairoi_retry_failed()")"
flush S
flush P
replicated || fail "h: S did not apply P's last changes"
check "h: A holds P's jobs, and received none of S's" \
	"held Pa=50 Pb=1000 Pd=100 Pe=1000 Pf=1 Pg=1 shared=10; requested Pa Pb Pd Pe Pf Pg shared; at 2030-01-01 00:00:00" \
	"$(server_groups "$A_CPORT")"
check "h: B holds S's jobs, and received none of P's" \
	"held Sd=1500 Se=700 Sf=1 Sg=1 shared=10; requested Sd Se Sf Sg shared; at 2031-01-01 00:00:00" \
	"$(server_groups "$B_CPORT")"
check "h: nothing left on P" "0|0" "$(outbox P)"
check "h: nothing left on S" "0|0" "$(outbox S)"
check "h: the subscription had no apply or sync error" "0|0" \
	"$(sql S -c "SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subname = 'sub'")"
check_outbox_invariants P app "h: P"
check_outbox_invariants S app "h: S"

stop_postgres S fast
stop_postgres P fast
finish
