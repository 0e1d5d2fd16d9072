# shellcheck shell=bash
# test/invariants.sh: the structural invariants of kairoi's tables, checked
# at the end of every test that writes concurrently, crashes or restarts
# (sourced by test/lib.sh).
#
# check_outbox_invariants VAR_PREFIX DATABASE [LABEL]
#   On every table of schema kairoi in DATABASE of the cluster VAR_PREFIX
#   (see new_cluster): 1.2's queue (kairoi.pending_jobs, pending_rules),
#   kairoi.rejections and kairoi.failed, or 1.1's kairoi.outbox and
#   kairoi.failed; expects no finding from:
#   - amcheck's verify_heapam on each table;
#   - bt_index_check(index, heapallindexed => true) on each of their
#     indexes: every index tuple points at a heap tuple and every heap
#     tuple that should be indexed is, so every row is reachable through
#     each index;
#   - bt_index_parent_check(index, heapallindexed => true) as well, unless
#     the cluster is a hot standby (it needs a ShareLock there is no taking);
#   and also that no (kind, identifier) appears twice in the queue (1.1's
#   table or 1.2's view of it, kairoi.outbox), read from the heap alone (a
#   sequential scan, so that a broken unique index cannot hide a
#   duplicate).
#   Each check is one pass or fail.  Creates the amcheck extension in
#   DATABASE if it is missing (it ships with the server package).

check_outbox_invariants() {
	local prefix=$1 db=$2 label=${3:-$2}
	local in_recovery findings duplicates

	in_recovery=$(psql_at "$prefix" "$db" -c "SELECT pg_is_in_recovery()")
	if [ "$in_recovery" = "f" ]; then
		psql_at "$prefix" "$db" -c "SET client_min_messages = warning" \
			-c "CREATE EXTENSION IF NOT EXISTS amcheck" >/dev/null ||
			{ fail "$label: amcheck could not be created"; return 1; }
	fi

	findings=$(psql_at "$prefix" "$db" -c "
SELECT format('%s: block %s offset %s: %s', t.oid::regclass, blkno, offnum, msg)
FROM pg_class t, LATERAL verify_heapam(t.oid, check_toast => true)
WHERE t.relnamespace = 'kairoi'::regnamespace AND t.relkind = 'r'" 2>&1)
	# bt_index_check and bt_index_parent_check raise an error on a finding
	findings+=$(psql_at "$prefix" "$db" -v in_recovery="$in_recovery" 2>&1 >/dev/null <<'SQL'
SELECT i.indexrelid::regclass, bt_index_check(i.indexrelid, true)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relnamespace = 'kairoi'::regnamespace AND t.relkind = 'r';
SELECT i.indexrelid::regclass, bt_index_parent_check(i.indexrelid, true)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE :'in_recovery' = 'f'
  AND t.relnamespace = 'kairoi'::regnamespace AND t.relkind = 'r';
SQL
	)
	if [ -n "$findings" ]; then
		fail "$label: amcheck: $findings"
	else
		pass "$label: amcheck finds nothing in kairoi's tables"
	fi

	duplicates=$(psql_at "$prefix" "$db" <<'SQL'
SET enable_indexscan = off;
SET enable_indexonlyscan = off;
SET enable_bitmapscan = off;
SELECT count(*) FROM (
	SELECT kind, identifier FROM kairoi.outbox
	GROUP BY kind, identifier HAVING count(*) > 1) d;
SQL
	)
	check "$label: no (kind, identifier) twice in kairoi.outbox" "0" "$duplicates"
}
