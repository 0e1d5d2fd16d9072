#!/bin/bash
# test/integration/release_version.sh: one release version everywhere, and
# a META.json that PGXN takes (scripts/check-release).
#
# 1. The checkout passes: each of its checks is a test here.
# 2. On copies of the files the check reads, each with one file out of
#    step (a version bumped alone, a script the Makefile does not install,
#    a README or docs line naming another version or Debian revision, a
#    CHANGELOG entry of another version), it fails and names exactly that
#    file.
# 3. Copies bumped as the next releases will be pass: X.Y.Z+1 (C only: the
#    SQL version stays X.Y) and X.Y+1.0 (an upgrade script to X.Y+1 and
#    default_version X.Y+1); an "Unreleased" entry above the newest passes.
# 4. META.json breaking the PGXN Meta Spec 1.0.0 fails, naming the key: a
#    required key missing, a key of the wrong type or form, a key the spec
#    does not define (x_ custom keys pass).
# 5. scripts/dist makes no bundle of a tree that disagrees, and makes
#    kairoi-X.Y+1.0.zip of the bumped one.
# Versions are derived from the checkout's META.json: the suite holds
# whatever the current release is.
set -u
source "$(dirname "$0")/../lib.sh"
cd "$KAIROI_ROOT" || exit 1

# 1. The checkout
OUT=$(scripts/check-release 2>&1)
RC=$?
while IFS= read -r line; do
	case $line in
	"ok - "*) pass "checkout: ${line#ok - }" ;;
	"not ok - "*) fail "checkout: ${line#not ok - }" ;;
	"#"*) echo "$line" ;;
	*) echo "# $line" ;;
	esac
done <<<"$OUT"
check "checkout: scripts/check-release exits 0" 0 "$RC"
RELEASE=$(scripts/check-release --version 2>/dev/null)
if ! [[ $RELEASE =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
	fail "the checkout's release version is X.Y.Z: got [$RELEASE]"
	finish
	exit 1
fi
MAJOR=${BASH_REMATCH[1]}
MINOR=${BASH_REMATCH[2]}
PATCH=${BASH_REMATCH[3]}
SQL=$MAJOR.$MINOR
NEXT_PATCH=$MAJOR.$MINOR.$((PATCH + 1))
NEXT_MINOR=$MAJOR.$((MINOR + 1)).0
NEXT_SQL=$MAJOR.$((MINOR + 1))

# The files check-release reads, and scripts/ and .gitattributes for dist
TEMPLATE=$(make_temp_dir)/tree
mkdir -p "$TEMPLATE/debian" "$TEMPLATE/docs" "$TEMPLATE/scripts"
cp META.json Makefile kairoi.control kairoi--*.sql README.md CHANGELOG.md .gitattributes "$TEMPLATE"/
cp debian/changelog "$TEMPLATE/debian/"
cp docs/*.md docs/*.md.in "$TEMPLATE/docs/"
cp scripts/check-release scripts/dist "$TEMPLATE/scripts/"

# variant NAME: a fresh copy of the template; prints its path
variant() {
	local dir
	dir=$(dirname "$TEMPLATE")/$1
	cp -a "$TEMPLATE" "$dir"
	echo "$dir"
}

# edit TREE PYTHON...: run Python statements with T (the tree) and the
# helpers read(name), write(name, text), sub(name, pattern, replacement,
# count=0) and meta(function of the META.json object)
edit() {
	local tree=$1
	shift
	$PYTHON - "$tree" "$@" <<'PY'
import json, re, sys
T = sys.argv[1]
def read(n): return open(f"{T}/{n}", encoding="utf-8").read()
def write(n, s): open(f"{T}/{n}", "w", encoding="utf-8").write(s)
def sub(n, p, r, count=0):
    s, k = re.subn(p, r, read(n), count=count, flags=re.M)
    assert k, f"{p!r} not found in {n}"
    write(n, s)
def meta(f):
    m = json.loads(read("META.json")); f(m); write("META.json", json.dumps(m, indent=3) + "\n")
for statement in sys.argv[2:]:
    exec(statement)
PY
}

# bump TREE VERSION [SQL_VERSION]: every file to release VERSION, as the
# lead would bump it; with SQL_VERSION, an upgrade script to it too
bump() {
	local tree=$1 version=$2 sql=${3:-}
	edit "$tree" \
		"meta(lambda m: m.update(version='$version') or m['provides']['kairoi'].update(version='$version'))" \
		"write('debian/changelog', 'kairoi ($version-1) unstable; urgency=medium\n\n  * Release $version.\n\n -- kairoi maintainers <m@example.invalid>  Mon, 01 Feb 2027 00:00:00 +0000\n\n' + read('debian/changelog'))" \
		"sub('README.md', r'kairoi_$RELEASE-[^_]+_', 'kairoi_$version-1_')" \
		"sub('README.md', r'kairoi-$RELEASE', 'kairoi-$version')" \
		"sub('CHANGELOG.md', r'^## ', '## $version\n\n- Released.\n\n## ', count=1)" || return 1
	[ -z "$sql" ] && return 0
	edit "$tree" \
		"sub('kairoi.control', r\"^default_version = '.*'\", \"default_version = '$sql'\")" \
		"write('kairoi--$SQL--$sql.sql', '-- upgrade\n')" \
		"write('Makefile', read('Makefile') + '\nDATA += kairoi--$SQL--$sql.sql\n')"
}

# expect_failure DESCRIPTION TREE FILES: check-release exits 1 on TREE and
# names exactly FILES (comma-separated, sorted) as disagreeing
expect_failure() {
	local out rc
	out=$(scripts/check-release "$2" 2>&1)
	rc=$?
	check "$1: check-release fails" 1 "$rc"
	check "$1: names $3" "in $3" "$(grep -o 'in .*$' <<<"$(grep '^check-release:' <<<"$out")")"
	grep -E '^(not ok|#   )' <<<"$out" | head -4 | sed 's/^/#   /'
}

# expect_success DESCRIPTION TREE
expect_success() {
	local out rc
	out=$(scripts/check-release "$2" 2>&1)
	rc=$?
	check "$1: check-release passes" 0 "$rc"
	[ "$rc" -eq 0 ] || grep '^not ok' <<<"$out" | sed 's/^/#   /'
}

expect_success "a copy of the checkout's files" "$TEMPLATE"

# 2. One file out of step
tree=$(variant meta-version)
edit "$tree" "meta(lambda m: m.update(version='$NEXT_PATCH'))"
expect_failure "META.json's version bumped alone" "$tree" \
	"CHANGELOG.md, META.json, README.md, debian/changelog"

tree=$(variant provides-version)
edit "$tree" "meta(lambda m: m['provides']['kairoi'].update(version='$SQL'))"
expect_failure "META.json's provides.kairoi.version as X.Y" "$tree" "META.json"

tree=$(variant control)
edit "$tree" "sub('kairoi.control', r\"^default_version = '.*'\", \"default_version = '$NEXT_SQL'\")"
expect_failure "kairoi.control's default_version bumped alone" "$tree" "kairoi.control"

tree=$(variant script)
edit "$tree" "write('kairoi--$SQL--$NEXT_SQL.sql', '-- upgrade\n')" \
	"write('Makefile', read('Makefile') + '\nDATA += kairoi--$SQL--$NEXT_SQL.sql\n')"
expect_failure "an upgrade script to $NEXT_SQL alone" "$tree" "kairoi--$SQL--$NEXT_SQL.sql"

tree=$(variant changelog-debian)
bump "$tree" "$NEXT_PATCH"
edit "$tree" "sub('debian/changelog', r'^kairoi \($NEXT_PATCH-1\)', 'kairoi ($RELEASE-2)')"
expect_failure "debian/changelog's newest entry left at the old version" "$tree" "debian/changelog"

tree=$(variant readme-deb)
edit "$tree" "sub('README.md', r'kairoi_$RELEASE-', 'kairoi_$NEXT_PATCH-', count=1)"
expect_failure "one Debian package name in README.md of another version" "$tree" "README.md"

tree=$(variant readme-revision)
edit "$tree" "sub('README.md', r'kairoi_$RELEASE-[^_]+_', 'kairoi_$RELEASE-99_', count=1)"
expect_failure "one Debian package name in README.md of another revision" "$tree" "README.md"

tree=$(variant readme-zip)
edit "$tree" "sub('README.md', r'kairoi-$RELEASE\.zip', 'kairoi-$NEXT_PATCH.zip', count=1)"
expect_failure "one bundle name in README.md of another version" "$tree" "README.md"

tree=$(variant readme-no-zip)
edit "$tree" "sub('README.md', r'kairoi-$RELEASE\.zip', 'the bundle')"
expect_failure "README.md naming no bundle" "$tree" "README.md"

tree=$(variant docs)
edit "$tree" "write('docs/operations.md', read('docs/operations.md') + '\nInstall kairoi_$NEXT_PATCH-1_amd64.deb.\n')"
expect_failure "docs/operations.md naming another version" "$tree" "docs/operations.md"

tree=$(variant changelog-md)
edit "$tree" "sub('CHANGELOG.md', r'^## ', '## $NEXT_PATCH\n\n- Released.\n\n## ', count=1)"
expect_failure "CHANGELOG.md's newest entry of another version" "$tree" "CHANGELOG.md"

tree=$(variant data)
bump "$tree" "$NEXT_MINOR" "$NEXT_SQL"
edit "$tree" "write('Makefile', read('Makefile').replace('\nDATA += kairoi--$SQL--$NEXT_SQL.sql\n', ''))"
expect_failure "an upgrade script the Makefile does not install" "$tree" "Makefile"

# 3. The next releases
tree=$(variant next-patch)
bump "$tree" "$NEXT_PATCH"
expect_success "bumped to $NEXT_PATCH (SQL version $SQL)" "$tree"
tree=$(variant next-minor)
bump "$tree" "$NEXT_MINOR" "$NEXT_SQL"
expect_success "bumped to $NEXT_MINOR (SQL version $NEXT_SQL)" "$tree"
tree=$(variant unreleased)
edit "$tree" "sub('CHANGELOG.md', r'^## ', '## Unreleased\n\n- Work.\n\n## ', count=1)"
expect_success "an Unreleased entry above the newest" "$tree"

# 4. META.json against the PGXN Meta Spec
meta_problem() {
	local tree
	tree=$(variant "meta-$1")
	edit "$tree" "meta(lambda m: $2)"
	expect_failure "META.json: $3" "$tree" "META.json"
	check "META.json: $3: says $4" 1 "$(scripts/check-release "$tree" | grep -cF -- "$4")"
}
meta_problem no-license "m.pop('license')" "no license" "required key 'license' is missing"
meta_problem no-maintainer "m.pop('maintainer')" "no maintainer" "required key 'maintainer' is missing"
meta_problem no-abstract "m.pop('abstract')" "no abstract" "required key 'abstract' is missing"
meta_problem no-meta-spec "m.pop('meta-spec')" "no meta-spec" "required key 'meta-spec' is missing"
meta_problem no-file "m['provides']['kairoi'].pop('file')" "an extension without file" \
	"META.json.provides.kairoi: required key 'file' is missing"
meta_problem version-number "m.update(version=1.1)" "a version that is a number" \
	"META.json.version: 1.1 is not a semantic version"
meta_problem license "m.update(license='postgres')" "an unknown license" \
	"META.json.license: \"postgres\" is not one of"
meta_problem tags "m.update(tags='scheduling')" "tags as a string" "META.json.tags: must be a non-empty array"
meta_problem status "m.update(release_status='final')" "an unknown release_status" \
	"META.json.release_status: \"final\" is not one of"
meta_problem prereq "m['prereqs']['runtime']['requires'].update(PostgreSQL='15')" \
	"a prerequisite version that is not a range" "META.json.prereqs.runtime.requires.PostgreSQL: \"15\" is not a version range"
meta_problem spec-version "m['meta-spec'].update(version='2.0.0')" "meta-spec 2.0.0" \
	"META.json.meta-spec.version: \"2.0.0\" is not 1.0.x"
meta_problem repository "m['resources'].update(repository={'type': 'git'})" "a repository without url nor web" \
	"META.json.resources.repository: needs url+type or web"
meta_problem unknown-key "m.update(homepage='https://x.example')" "a key the spec does not define" \
	"META.json: key 'homepage' is not in the spec"
meta_problem docfile "m['provides']['kairoi'].update(docfile='docs/nowhere.md')" "a docfile that is not in the tree" \
	"provides.kairoi.docfile \"docs/nowhere.md\" is a file of the tree"
tree=$(variant meta-custom)
edit "$tree" "meta(lambda m: m.update(x_note='free') or m['provides']['kairoi'].update(x_note='free'))"
expect_success "META.json with x_ custom keys" "$tree"
tree=$(variant meta-json)
edit "$tree" "write('META.json', read('META.json').rstrip() + ',')"
expect_failure "META.json that is not JSON" "$tree" "META.json"

# 5. scripts/dist on copies that are git checkouts
git_tree() {
	(cd "$1" && git init -q && git add -A && GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.invalid \
		GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.invalid git commit -q -m t)
}
tree=$(variant dist-disagreeing)
edit "$tree" "sub('kairoi.control', r\"^default_version = '.*'\", \"default_version = '$NEXT_SQL'\")"
git_tree "$tree"
out=$(make_temp_dir)
check "dist of a tree that disagrees fails" 1 "$("$tree/scripts/dist" "$out" >/dev/null 2>&1; echo $?)"
check "dist of a tree that disagrees writes nothing" "" "$(find "$out" -mindepth 1)"
tree=$(variant dist-next-minor)
bump "$tree" "$NEXT_MINOR" "$NEXT_SQL"
git_tree "$tree"
out=$(make_temp_dir)
"$tree/scripts/dist" "$out" >/dev/null 2>&1
check "dist of the tree bumped to $NEXT_MINOR writes kairoi-$NEXT_MINOR.zip and its checksum" \
	"kairoi-$NEXT_MINOR.zip kairoi-$NEXT_MINOR.zip.sha256" "$(find "$out" -mindepth 1 -printf '%f\n' | sort | paste -sd ' ')"
check "its files are under kairoi-$NEXT_MINOR/" "kairoi-$NEXT_MINOR/" \
	"$($PYTHON -c 'import sys, zipfile; print(" ".join(sorted({n.split("/")[0] + "/" for n in zipfile.ZipFile(sys.argv[1]).namelist()})))' "$out/kairoi-$NEXT_MINOR.zip" 2>&1)"

finish
