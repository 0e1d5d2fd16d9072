#!/bin/bash
# test/integration/docs_drift.sh: docs/operations.md must be what
# scripts/gen-docs produces from docs/operations.md.in today: regenerates it
# into a temporary file (real psql transcripts from a throwaway cluster) and
# compares.  After changing the template or anything its transcripts show,
# run scripts/gen-docs and commit docs/operations.md.
set -u
source "$(dirname "$0")/../lib.sh"

# The re-alignment after normalising must draw tables as psql does: a
# transcript with nothing to normalise comes out as psql printed it (but
# for trailing blanks and blank lines at the end, which the docs drop)
start_server SRV || exit 1
start_cluster PG "$SRV_PORT" || exit 1
RAW=$(make_temp_dir)/raw
"$PGBIN/psql" -X -a -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres >"$RAW" 2>&1 <<'SQL'
SELECT name, boot_val AS "default", unit FROM pg_settings WHERE name LIKE 'max_w%' ORDER BY name;
SELECT 1 AS a, 'x' AS a_long_header, 12345.5 AS n, NULL AS e, -7 AS m;
SELECT g AS n, repeat('y', g) AS text FROM generate_series(8, 11) g;
SELECT 1 WHERE false;
\x on
SELECT 1 AS a, 'xyz' AS bb;
SELECT g AS a_long_name, repeat('y', 20 * g) AS b FROM generate_series(1, 2) g;
SQL
$PYTHON -c 'import sys
print("\n".join(l.rstrip() for l in sys.stdin.read().rstrip("\n").split("\n")))' <"$RAW" >"$RAW.expected"
$PYTHON "$KAIROI_ROOT/scripts/gen_docs.py" render <"$RAW" >"$RAW.rendered"
if diff -u "$RAW.expected" "$RAW.rendered" >"$RAW.diff"; then
	pass "gen_docs.py re-draws psql tables as psql does"
else
	fail "gen_docs.py re-draws psql tables differently:"
	sed 's/^/# /' "$RAW.diff"
fi

OUT=$(make_temp_dir)/operations.md
LOG=$(make_temp_dir)/gen-docs.log
if "$KAIROI_ROOT/scripts/gen-docs" --keep-going "$OUT" >"$LOG" 2>&1; then
	pass "scripts/gen-docs: every block ran as the template says"
else
	fail "scripts/gen-docs failed:"
	grep 'gen-docs:' "$LOG" | sed 's/^/# /'
fi
if [ ! -s "$OUT" ]; then
	fail "scripts/gen-docs wrote nothing"
elif diff -u "$KAIROI_ROOT/docs/operations.md" "$OUT" >"$OUT.diff"; then
	pass "docs/operations.md matches a fresh generation"
else
	fail "docs/operations.md differs from a fresh generation (run scripts/gen-docs):"
	head -60 "$OUT.diff" | sed 's/^/# /'
fi
finish
