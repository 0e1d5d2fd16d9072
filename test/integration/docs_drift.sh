#!/bin/bash
# test/integration/docs_drift.sh: docs/operations.md must be what
# scripts/gen-docs produces from docs/operations.md.in today: regenerates it
# into a temporary file (real psql transcripts from a throwaway cluster) and
# compares.  After changing the template or anything its transcripts show,
# run scripts/gen-docs and commit docs/operations.md.
set -u
source "$(dirname "$0")/../lib.sh"

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
