#!/bin/bash
# test/integration/docs_drift.sh: the docs say what is true now.
# - docs/operations.md must be what scripts/gen-docs produces from
#   docs/operations.md.in today: regenerates it into a temporary file (real
#   psql transcripts from a throwaway cluster) and compares.  After changing
#   the template or anything its transcripts show, run scripts/gen-docs and
#   commit docs/operations.md.
# - docs/reference.md names every function and view the installed
#   extension defines and every kairoi.* setting the C sources define (the
#   hidden ones of 1.0 included), and no kairoi_* or kairoi.* name that is
#   none of these nor one of the extension's tables.
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

psql_at PG postgres -c "CREATE DATABASE reference" &&
	psql_at PG reference -c "CREATE EXTENSION kairoi" >/dev/null || exit 1
# name<TAB>what, one per line: what the reference must name, and what it
# may name besides (the extension's tables)
{
	psql_at PG reference -F $'\t' -c "
		SELECT p.proname, 'required' FROM pg_proc p
		JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
		JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
		WHERE d.deptype = 'e' AND p.pronamespace <> 'kairoi'::regnamespace
		UNION
		SELECT c.relname, 'required' FROM pg_class c
		JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
		JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kairoi'
		WHERE d.deptype = 'e' AND c.relkind = 'v'
		  AND c.relnamespace <> 'kairoi'::regnamespace
		UNION
		SELECT 'kairoi.' || c.relname, 'allowed' FROM pg_class c
		WHERE c.relnamespace = 'kairoi'::regnamespace
		UNION
		SELECT name, 'required' FROM pg_settings WHERE name LIKE 'kairoi.%'"
	# the settings pg_settings hides (1.0's, still accepted): every
	# "kairoi.*", in the file that defines the settings
	grep -ho '"kairoi\.[a-z_]*",' "$KAIROI_ROOT/src/guc.c" |
		sed 's/[",]//g; s/$/\trequired/'
} >"$RAW.names"
$PYTHON - "$RAW.names" "$KAIROI_ROOT/docs/reference.md" >"$RAW.drift" <<'PY'
import re, sys
known = dict(line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip())
# names, not file paths such as sql/kairoi_search_path.sql
named = set(re.findall(r"(?<![/\w])kairoi(?:_[a-z_]+|\.[a-z_]+)(?!\.sql)",
                       open(sys.argv[2]).read()))
for name in sorted(n for n, what in known.items() if what == "required" and n not in named):
    print("does not name " + name)
for name in sorted(named - set(known)):
    print("names " + name + ", which the extension does not define")
PY
if [ "$(awk -F'\t' '$2 == "required"' "$RAW.names" | wc -l)" -lt 20 ]; then
	fail "too few functions, views and settings found to check docs/reference.md"
elif [ -s "$RAW.drift" ]; then
	fail "docs/reference.md is out of step with the extension:"
	sed 's/^/# docs\/reference.md /' "$RAW.drift"
else
	pass "docs/reference.md names each function, view and setting, and nothing else"
fi
finish
