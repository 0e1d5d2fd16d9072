#!/usr/bin/env bash
#
# test/unit/run.sh
#	  Build and run the KCP codec unit tests and fuzzers.
#
# Steps (each counts as one test in the final "N passed, M failed" line):
#   1. test_kcp built with gcc (strict warnings, -Werror) and run;
#   2. test_kcp built with clang and ASan+UBSan (no recovery) and run;
#   3. fuzz_response_parser, libFuzzer+ASan+UBSan, FUZZ_SECONDS seconds;
#   4. fuzz_roundtrip, likewise.
# The fuzzers run on a temporary copy of the seed corpus, so the repository's
# corpus never grows; crash inputs are kept in test/unit/build/artifacts/.
#
# Environment: FUZZ_SECONDS (default 30), CC_GCC (default gcc), CC_CLANG
# (default clang-14, else clang).  Needs gcc, clang-14, libclang-rt-14-dev.
# Runnable from any directory.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$here/build"
fuzz_seconds="${FUZZ_SECONDS:-30}"
cc_gcc="${CC_GCC:-gcc}"
if [[ -z "${CC_CLANG:-}" ]]; then
	if command -v clang-14 >/dev/null 2>&1; then
		CC_CLANG=clang-14
	else
		CC_CLANG=clang
	fi
fi
cc_clang="$CC_CLANG"

warn=(-std=c99 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
	-Wmissing-prototypes -Wmissing-declarations)
incs=(-I"$root/src" -I"$here")
san=("-fsanitize=address,undefined" "-fno-sanitize-recover=all")

passed=0
failed=0

tmp="$(mktemp -d "${TMPDIR:-/tmp}/kcp-tests.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$build" "$build/artifacts"

pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }

# run_unit NAME COMPILER [FLAGS...]: build test_kcp and run it.
run_unit() {
	local name="$1" cc="$2"
	shift 2
	local exe="$build/test_kcp_$name"

	echo "== unit tests ($name): $cc $*"
	if ! "$cc" "${warn[@]}" "$@" "${incs[@]}" \
		"$root/src/kcp.c" "$here/test_kcp.c" -o "$exe"; then
		fail "unit tests ($name): build"
		return
	fi
	if "$exe"; then
		pass "unit tests ($name)"
	else
		fail "unit tests ($name)"
	fi
}

# run_fuzzer NAME: build test/fuzz/NAME.c, fuzz a copy of its seed corpus.
run_fuzzer() {
	local name="$1"
	local corpus_name="${name#fuzz_}"
	local exe="$build/$name"
	local corpus="$tmp/corpus_$corpus_name"
	local log="$tmp/$name.log"
	local execs

	echo "== fuzzer $name: ${fuzz_seconds}s"
	if ! "$cc_clang" "${warn[@]}" -g -O1 \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		"${incs[@]}" "$root/src/kcp.c" "$root/test/fuzz/$name.c" -o "$exe"; then
		fail "fuzzer $name: build"
		return
	fi
	mkdir -p "$corpus"
	cp "$root/test/fuzz/corpus/$corpus_name/"* "$corpus/"

	if "$exe" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
		-artifact_prefix="$build/artifacts/$name-" \
		"$corpus" >"$log" 2>&1; then
		execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
			tail -n 1)"
		pass "fuzzer $name: ${execs:-?} executions in ${fuzz_seconds}s"
	else
		tail -n 40 "$log"
		fail "fuzzer $name (crash input in $build/artifacts/)"
	fi
}

run_unit gcc "$cc_gcc" -O2
run_unit sanitize "$cc_clang" -g -O1 "${san[@]}"
run_fuzzer fuzz_response_parser
run_fuzzer fuzz_roundtrip

echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
