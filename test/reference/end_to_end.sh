#!/bin/bash
# test/reference/end_to_end.sh: jobs run byte for byte by the reference
# Kairoi server's shell runner; rolled-back jobs never reach it.
#
# Against the reference server (KAIROI_REFERENCE_SERVER, see
# docs/testing.md):
#   a. a shell rule whose identifier, pattern and script path hold spaces,
#      quotes, backslashes and non-ASCII text; jobs under it whose
#      identifiers hold spaces, quotes, backslashes, newlines, a tab, a
#      carriage return, non-ASCII text, shell syntax and a would-be second
#      KCP request, due in the past: each runs once, and its script gets
#      the identifier byte for byte as "$1";
#   b. a job in a rolled-back transaction and one rolled back to a
#      savepoint (committed before the others) never run, while a job
#      scheduled after that savepoint in the same transaction does;
#   c. the server's store, read once it is stopped, holds exactly the rule
#      and the committed jobs, each executed: nothing injected, nothing
#      rolled back.
# Prints "N passed, M failed".
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=test/lib_reference.sh
. "$KAIROI_ROOT/test/lib_reference.sh"

reference_cluster KAIROI_REFERENCE_SERVER
RECORDER=$(make_recorder "$OUT")

# The rule, the rolled-back jobs, then the committed jobs (recorded in
# table "expected" in the same transaction), all due a minute ago.  The
# prefix and every identifier are SQL escape strings.
sql -v recorder="$RECORDER" >/dev/null <<'SQL' || exit 1
CREATE TABLE expected (id text PRIMARY KEY);
CREATE TABLE rolled_back (id text PRIMARY KEY);
INSERT INTO rolled_back VALUES (E'e2e "ü" \\ rolled back'),
	(E'e2e "ü" \\ rolled back to a savepoint');
SELECT kairoi_rule_set_shell(E'rule "one" \\ é', E'e2e "ü" \\ ', :'recorder');

BEGIN;
SELECT kairoi_job_set(E'e2e "ü" \\ rolled back', now() - interval '1 minute');
ROLLBACK;

BEGIN;
SAVEPOINT s;
SELECT kairoi_job_set(E'e2e "ü" \\ rolled back to a savepoint', now() - interval '1 minute');
ROLLBACK TO SAVEPOINT s;
INSERT INTO expected VALUES (E'e2e "ü" \\ kept after the savepoint');
SELECT kairoi_job_set(E'e2e "ü" \\ kept after the savepoint', now() - interval '1 minute');
COMMIT;

BEGIN;
INSERT INTO expected
SELECT E'e2e "ü" \\ ' || s FROM unnest(ARRAY[
	E'plain',
	E'two  spaces, and one at the end ',
	E'"double" and \'single\' quotes',
	E'back\\slash, two \\\\ and one at the end \\',
	E'\\" an escaped quote look-alike \\\\"',
	E'new\nline, two\n\nand one at the end\n',
	E'a tab\tand a carriage\rreturn',
	E'ünïcödé, 日本語, 🦀, Ω',
	E'$(touch /tmp/kairoi-injected) `id` ; | & * ? ~ # % $HOME',
	E'x"\n1 SET injected "2030-01-01 00:00:00"\n2 RULE SET r "" shell /bin/false\n',
	repeat('é日', 200)
]) s;
SELECT count(kairoi_job_set(id, now() - interval '1 minute')) FROM expected
	WHERE id NOT LIKE '%kept after the savepoint';
COMMIT;
SQL
hex_ids expected >"$OUT/expected"
hex_ids rolled_back >"$OUT/rolled_back"
expected_count=$(wc -l <"$OUT/expected")

# a. every committed job runs, byte for byte
flush_check "kairoi_flush: the reference server acknowledged every committed entry"
ran_all() { [ "$(records_count "$OUT")" -ge "$expected_count" ]; }
wait_for "$expected_count executions" 60 ran_all ||
	fail "the shell runner ran $(records_count "$OUT") of $expected_count jobs"
# b. what was rolled back had every chance to run: it was scheduled first,
# and the runner then ran nothing more for 2 s
records_settle "$OUT" 2 60
$REFERENCE_TOOL records "$OUT" >"$OUT/ran"
compare_hex "the shell rule ran every committed job once, its identifier byte for byte as \$1" \
	"$OUT/expected" "$OUT/ran"
check "no rolled-back job ran (a rolled-back transaction, a savepoint)" 0 \
	"$(grep -c -x -F -f "$OUT/rolled_back" "$OUT/ran")"
if [ -e /tmp/kairoi-injected ]; then
	fail "shell syntax in an identifier was run"
else
	pass "shell syntax in an identifier stayed text"
fi

check "nothing pending" 0 "$(sql -c "SELECT count(*) FROM kairoi.outbox")"
check "nothing failed" 0 "$(sql -c "SELECT count(*) FROM kairoi.failed")"

# c. the server's store holds the rule and the committed jobs, executed
kill_reference K TERM
store_jobs K >"$OUT/store"
sed 's/^[a-z]* //' "$OUT/store" >"$OUT/stored"
compare_hex "the server's store holds exactly the committed jobs" "$OUT/expected" "$OUT/stored"
check "every stored job executed" "$expected_count" "$(grep -c '^executed ' "$OUT/store")"
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
check "the server's store holds exactly the rule, byte for byte" \
	"$(hex 'rule "one" \ é') $(hex 'e2e "ü" \ ') $(hex shell) $(hex "$RECORDER")" \
	"$($REFERENCE_TOOL rules "$K_STORE")"
finish
