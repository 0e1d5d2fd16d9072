#!/bin/bash
# test/integration/pgxn_bundle.sh: the release bundle, installed the way
# PGXN users install extensions.
#
# 1. scripts/dist (`make dist`) makes kairoi-X.Y.Z.zip (X.Y.Z: META.json's
#    version) and its checksum from the checkout, twice byte for byte the
#    same; every file is under kairoi-X.Y.Z/; it holds every file that
#    building, installing and `make installcheck` need, and none of the
#    files only the project's development uses.
# 2. `pgxn install` (Debian's pgxnclient, offline, from the zip) builds it
#    with PGXS and installs it into a relocated copy of this machine's
#    PostgreSQL: its lib and share directories copied under a temporary
#    prefix, where PostgreSQL and pg_config find them relative to the
#    binaries.  The installation the other suites use (test/run-all's
#    `make install`) is never touched: the copy's pg_config reports the
#    copy's directories, the files appear there only, and the host's kairoi
#    files are the same at the end.
# 3. `pgxn check` runs the bundle's `make installcheck` against clusters of
#    the copy: without kairoi preloaded (the tests that need no worker run,
#    the others are said to be skipped), then preloaded with
#    test/installcheck.conf (every regression and isolation test), the
#    server mapping the library pgxn installed.
# 4. `pgxn uninstall` removes every file it installed.
set -u
source "$(dirname "$0")/../lib.sh"
cd "$KAIROI_ROOT" || exit 1

HOST_PG_CONFIG=$PGBIN/pg_config
HOST_PKGLIB=$("$HOST_PG_CONFIG" --pkglibdir)
HOST_SHARE=$("$HOST_PG_CONFIG" --sharedir)

# zip_list ZIP: the names in the zip, one a line
zip_list() {
	$PYTHON -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
}

# outside_copy: of the paths that the install, mkdir and rm commands in
# $OUT (make's output) write, those outside the copy, one a line
outside_copy() {
	grep -E '^(/usr/bin/install|/bin/mkdir|rm) ' <<<"$OUT" | grep -o "'[^']*'" | tr -d "'" |
		grep -v "^$COPY/"
}

# kairoi_files DIR...: the kairoi files in these directories, with their
# checksums
kairoi_files() {
	find "$@" -maxdepth 1 -name 'kairoi*' -type f -print0 | sort -z | xargs -0 -r sha256sum
}

HOST_BEFORE=$(kairoi_files "$HOST_PKGLIB" "$HOST_SHARE/extension")

# 1. The bundle
VERSION=$(scripts/check-release --version 2>/dev/null)
check "META.json's version is a release version" 1 "$(grep -cE '^[0-9]+\.[0-9]+\.[0-9]+$' <<<"$VERSION")"
NAME=kairoi-$VERSION
DIST=$(make_temp_dir)
DIST_AGAIN=$(make_temp_dir)
OUT=$(make -s dist DIST_DIR="$DIST" 2>&1 && scripts/dist "$DIST_AGAIN" 2>&1)
check "make dist and scripts/dist succeed" 0 "$?"
echo "$OUT" | grep '^dist:' | sed 's/^/#   /'
ZIP=$DIST/$NAME.zip
check "make dist writes $NAME.zip and its checksum" "yes" \
	"$([ -s "$ZIP" ] && [ -s "$ZIP.sha256" ] && echo yes)"
check "the checksum file is sha256sum's, and matches" "$NAME.zip: OK" \
	"$(cd "$DIST" && sha256sum -c "$NAME.zip.sha256" 2>&1)"
check "made twice, the bundle is the same byte for byte" 0 \
	"$(cmp "$ZIP" "$DIST_AGAIN/$NAME.zip" >/dev/null 2>&1; echo $?)"

LIST=$(zip_list "$ZIP")
check "every file is under $NAME/" 0 "$(grep -vc "^$NAME/" <<<"$LIST")"
# What building, installing and installcheck need: the Makefile's sources,
# scripts and tests, the test server installcheck starts, META.json
needed=(META.json Makefile kairoi.control README.md debian/rules docs/reference.md
	test/installcheck.sh test/installcheck.conf test/kairoi_server.py
	test/kairoi_ctl.py test/server_to_csv.py)
for object in $(make -s print-OBJS); do needed+=("${object%.o}.c"); done
for header in src/*.h; do needed+=("$header"); done
for script in $(make -s print-DATA); do needed+=("$script"); done
for name in $(make -s print-REGRESS) $(make -s print-REGRESS_NO_WORKER); do
	needed+=("sql/$name.sql" "expected/$name.out")
done
for name in $(make -s print-ISOLATION); do
	needed+=("specs/$name.spec" "expected/$name.out")
done
missing=()
for file in "${needed[@]}"; do
	grep -qxF "$NAME/$file" <<<"$LIST" || missing+=("$file")
done
check "the bundle holds the ${#needed[@]} files building, installing and installcheck need" "" "${missing[*]}"
check "the bundle holds no development-only file (CI, benchmarks, scripts, the other tests)" "" \
	"$(grep -E "^$NAME/(\.ci/|bench/|scripts/|test/(run-all|lib\.sh|pg-versions|integration/|unit/)|\.git)" <<<"$LIST" | paste -sd ' ')"
check "the bundle's META.json names $VERSION" "$VERSION" \
	"$($PYTHON -c 'import json, sys, zipfile; print(json.loads(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))["version"])' "$ZIP" "$NAME/META.json")"

# 2. A relocated copy of this machine's PostgreSQL, without kairoi
relocated_postgres
PKGLIB=$COPY_PKGLIB
SHARE=$COPY_SHARE
PGBIN=$COPY_PGBIN
PG_CONFIG=$COPY_PG_CONFIG
for dir in bindir pkglibdir sharedir includedir-server pgxs; do
	check "the copy's pg_config --$dir is in the copy" "$COPY$("$HOST_PG_CONFIG" "--$dir")" \
		"$("$PG_CONFIG" "--$dir")"
done

# pgxn_run COMMAND [OPTIONS]: pgxn COMMAND ... of the zip into the copy;
# output in $OUT, exit status in $RC
pgxn_run() {
	local command=$1
	shift
	OUT=$(cd "$DIST" && pgxn "$command" --pg_config "$PG_CONFIG" "$@" "./$NAME.zip" 2>&1)
	RC=$?
}

INSTALLED=("$PKGLIB/kairoi.so" "$SHARE/extension/kairoi.control")
for script in $(make -s print-DATA); do INSTALLED+=("$SHARE/extension/$script"); done

pgxn_run install
check "pgxn install of the zip succeeds" 0 "$RC"
[ "$RC" -eq 0 ] || echo "$OUT" | tail -20 | sed 's/^/#   /'
missing=()
for file in "${INSTALLED[@]}"; do [ -f "$file" ] || missing+=("$file"); done
check "pgxn installed the library, the control file and every SQL script in the copy" "" "${missing[*]}"
check "pgxn install wrote into the copy only" "yes " \
	"$(grep -q "^/usr/bin/install .*'$PKGLIB/kairoi.so'" <<<"$OUT" && echo yes) $(outside_copy)"
check "pgxn built with the copy's PGXS and headers" 1 \
	"$(grep -c -- "-I$COPY$("$HOST_PG_CONFIG" --includedir-server) .*-c -o src/init.o" <<<"$OUT")"

# 3. pgxn check: its make installcheck, against clusters of the copy
new_cluster PLAIN "" || exit 1
check "the copy's server takes its libraries from the copy" "$PKGLIB" \
	"$(psql_at PLAIN postgres -c "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")"
pgxn_run check -h "$PLAIN_HOST" -p "$PLAIN_PORT" -U postgres
echo "$OUT" | grep -E '^(installcheck:|test |ok |not ok |  *[0-9]+ of|  *All)' | sed 's/^/#   /'
check "not preloaded: pgxn check passes" 0 "$RC"
check "not preloaded: the worker tests are said to be skipped, and why" 1 \
	"$(grep -c "because kairoi is not in the server's shared_preload_libraries" <<<"$OUT")"
check "not preloaded: the queue test passes" 1 \
	"$(grep -cE '^test kairoi_queue +\.\.\. ok' <<<"$OUT")"
stop_postgres PLAIN

new_cluster READY "$(cat test/installcheck.conf)
kairoi.server = '127.0.0.1:$(free_port)'" || exit 1
check "preloaded: the server maps the kairoi.so pgxn installed" yes \
	"$(grep -q " $PKGLIB/kairoi.so$" "/proc/$(head -1 "$READY_DIR/data/postmaster.pid")/maps" && echo yes)"
pgxn_run check -h "$READY_HOST" -p "$READY_PORT" -U postgres
echo "$OUT" | grep -E '^(installcheck:|test |ok |not ok |  *[0-9]+ of|  *All)' | sed 's/^/#   /'
check "preloaded: pgxn check passes" 0 "$RC"
for name in $(make -s print-REGRESS) $(make -s print-ISOLATION); do
	check "preloaded: $name passes" 1 "$(grep -cE "^test $name +\.\.\. ok" <<<"$OUT")"
done
stop_postgres READY

# 4. pgxn uninstall
pgxn_run uninstall
check "pgxn uninstall succeeds" 0 "$RC"
check "pgxn uninstall removed from the copy only" "yes " \
	"$(grep -q "^rm -f '$PKGLIB/kairoi.so'" <<<"$OUT" && echo yes) $(outside_copy)"
left=()
for file in "${INSTALLED[@]}"; do [ -e "$file" ] && left+=("$file"); done
check "pgxn uninstall removed every file it installed" "" "${left[*]}"
check "no kairoi file is left in the copy" "" "$(find "$COPY" -name 'kairoi*' -print)"

# (a `make install` run by someone else meanwhile would change them too)
check "the host's kairoi files are as before" "$HOST_BEFORE" \
	"$(kairoi_files "$HOST_PKGLIB" "$HOST_SHARE/extension")"
finish
