#!/bin/bash
# test/integration/debian_package.sh: the Debian package postgresql-N-kairoi
# for PG_MAJOR=N (default 15; test/pg-versions runs it for 17 and 18 in
# their roots).
#
# Builds it with dpkg-buildpackage from a copy of the work tree (which the
# build must leave untouched), checks its file list and lintian (errors
# fail), installs it with `apt-get install ./….deb` (an earlier package of that name
# purged first, whatever its version), and runs the
# regression suites against the installed files: test/regress.sh in a fresh
# cluster, and the package's own autopkgtests (debian/tests: `make
# installcheck` through pg_buildext, with and without the worker).  A file
# missing from the package fails the file-list checks; the suites show the
# installed files work.
#
# The package STAYS INSTALLED: its files are the ones `make install` puts
# at the same paths, built from the same tree, so the suites that follow
# use them unchanged.  `apt-get remove postgresql-N-kairoi` removes them.
#
# With PGBIN set to a private relocated copy of PostgreSQL
# (/some/root/usr/lib/postgresql/N/bin, for development next to other
# users of the system PostgreSQL), the package is extracted into that copy
# instead of installed, and the autopkgtests, which need the system
# PostgreSQL, are not run.
set -u
source "$(dirname "$0")/../lib.sh"

PACKAGE=postgresql-$PG_MAJOR-kairoi
SYSTEM_PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
ROOT=${PGBIN%"$SYSTEM_PGBIN"}
if [ "$ROOT" = "$PGBIN" ]; then
	echo "PGBIN=$PGBIN is not a copy of $SYSTEM_PGBIN" >&2
	exit 1
fi

WORK=$(make_temp_dir)
SRC=$WORK/kairoi
mkdir "$SRC"
tree_state() { git -C "$KAIROI_ROOT" status --porcelain --untracked-files=all; }
before=$(tree_state)
# The work tree as it is (tracked and new files), without what git ignores
git -C "$KAIROI_ROOT" ls-files -z --cached --others --exclude-standard |
	(cd "$KAIROI_ROOT" && tar -c --null -T -) | tar -x -C "$SRC" || exit 1
chown -R postgres: "$WORK"
# debian/control is committed for Debian 12, whose PostgreSQL is 15 (the
# build's checkcontrol fails if it is out of date).  For another version,
# generate it in the copy from debian/control.in and debian/pgversions,
# as pg_buildext does for backports.
if ! grep -qx "Package: $PACKAGE" "$SRC/debian/control"; then
	(cd "$SRC" && pg_buildext updatecontrol) >"$WORK/updatecontrol.log" 2>&1
	check "pg_buildext updatecontrol lists $PACKAGE" "0 1" \
		"$? $(grep -cx "Package: $PACKAGE" "$SRC/debian/control")"
fi

(cd "$SRC" && dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1
rc=$?
check "dpkg-buildpackage -us -uc -b succeeds" 0 "$rc"
[ $rc -eq 0 ] || { tail -40 "$WORK/build.log"; finish; exit; }
check "the build leaves the work tree as it was" "$before" "$(tree_state)"
DEB=$(ls "$WORK"/${PACKAGE}_*_*.deb)
echo "# built $(basename "$DEB")"

check "every object compiled with the Makefile's -Werror flags" \
	"$(cd "$SRC" && make -s print-OBJS | wc -w)" \
	"$(grep -E "^$("$PGBIN/pg_config" --cc) .* -c " "$WORK/build.log" | grep -c -- '-Wall -Wextra -Werror')"

# The files the package must ship: what `make install` installs
LIBDIR=/usr/lib/postgresql/$PG_MAJOR/lib
SHAREDIR=/usr/share/postgresql/$PG_MAJOR/extension
EXPECTED=("$LIBDIR/kairoi.so" "$SHAREDIR/kairoi.control")
for script in $(cd "$SRC" && make -s print-DATA); do
	EXPECTED+=("$SHAREDIR/$script")
done
check "the tree's SQL scripts are all listed in DATA" \
	"$(cd "$SRC" && ls kairoi--*.sql | sort | tr '\n' ' ')" \
	"$(cd "$SRC" && make -s print-DATA | tr ' ' '\n' | sort | tr '\n' ' ')"
CONTENTS=$(dpkg-deb -c "$DEB" | awk '{print substr($6, 2)}')
for file in "${EXPECTED[@]}"; do
	check "the package ships $file" 1 "$(grep -cx "$file" <<<"$CONTENTS")"
done
check "no JIT bitcode in the package" 0 "$(grep -c '\.bc$' <<<"$CONTENTS")"
check "it depends on the PostgreSQL $PG_MAJOR server" 1 \
	"$(dpkg-deb -f "$DEB" Depends | grep -c "postgresql-$PG_MAJOR")"

lintian --fail-on error "$DEB" >"$WORK/lintian.log" 2>&1
rc=$?
grep -v '^running with root privileges' "$WORK/lintian.log" | sed 's/^/# lintian: /'
check "lintian reports no errors" "0 0" "$rc $(grep -c '^E:' "$WORK/lintian.log")"

if [ -z "$ROOT" ]; then
	# A package left by an earlier run, of whatever version and contents
	# (a machine image can carry one), is purged first: apt may otherwise
	# refuse a downgrade, or keep an installed package of the same version
	# built from another tree, and exit 0 without unpacking anything
	if dpkg-query -W "$PACKAGE" >/dev/null 2>&1; then
		dpkg --purge "$PACKAGE" >"$WORK/purge.log" 2>&1 || cat "$WORK/purge.log"
	fi
	check "no $PACKAGE is installed before this one" "" \
		"$(dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -v '^unknown ok not-installed$')"
	apt-get install -y -q -o DPkg::Lock::Timeout=600 "$DEB" >"$WORK/install.log" 2>&1
	check "apt-get install ./$(basename "$DEB") succeeds" 0 $?
	check "the package built here is installed" \
		"install ok installed $(dpkg-deb -f "$DEB" Version)" \
		"$(dpkg-query -W -f='${Status} ${Version}' "$PACKAGE" 2>&1)"
	INSTALLED=$(dpkg -L "$PACKAGE")
	for file in "${EXPECTED[@]}"; do
		check "installed and owned by the package: $file" 1 \
			"$(grep -cx "$file" <<<"$INSTALLED")"
	done
	check "installed files match the package (dpkg -V)" "" "$(dpkg -V "$PACKAGE")"
else
	dpkg-deb -x "$DEB" "$ROOT" || exit 1
	for file in "${EXPECTED[@]}"; do
		check "extracted into $ROOT: $file" 0 "$(cmp -s <(dpkg-deb --fsys-tarfile "$DEB" |
			tar -xO ".$file") "$ROOT$file"; echo $?)"
	done
fi

# The regression suites in a fresh cluster against the installed files
echo "# test/regress.sh with PGBIN=$PGBIN"
PGBIN=$PGBIN bash "$SRC/test/regress.sh" >"$WORK/regress.log" 2>&1
rc=$?
sed 's/^/#   /' "$WORK/regress.log"
check "test/regress.sh passes against the installed package" "0 0" \
	"$rc $(grep -c '^not ok' "$WORK/regress.log")"

if [ -z "$ROOT" ]; then
	for test in $(sed -n 's/^Tests: //p' "$SRC/debian/tests/control" | tr ',' ' '); do
		(cd "$SRC" && "debian/tests/$test") >"$WORK/$test.log" 2>&1
		rc=$?
		sed 's/^/#   /' "$WORK/$test.log" | grep -v 'ALTER DATABASE'
		check "autopkgtest $test passes against the installed package" 0 "$rc"
	done
	echo "# $PACKAGE stays installed (same files as make install, from this tree)"
else
	echo "# autopkgtests not run: they use the system PostgreSQL, and PGBIN is a private copy"
fi
finish
