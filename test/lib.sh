# test/lib.sh: shared helpers for the scripted tests (source it, bash).
#
# Starts throwaway PostgreSQL clusters (as the postgres OS user: PostgreSQL
# refuses to run as root) and Kairoi-compatible test servers, and stops
# every process it started, by pid, when the calling script exits.
#
# Results: each check calls pass/fail; finish prints "N passed, M failed"
# and returns non-zero if anything failed.

KAIROI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# PG_MAJOR (default 15) picks the PostgreSQL version, as in the Makefile
PG_MAJOR=${PG_MAJOR:-15}
PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PYTHON=${PYTHON:-/usr/bin/python3}
KCTL="$PYTHON $KAIROI_ROOT/test/kairoi_ctl.py"

TESTS_PASSED=0
TESTS_FAILED=0
CLEANUP_PIDS=()
CLUSTER_DIRS=()
# Directories to remove at exit, one per line.  A file, not an array:
# make_temp_dir runs in a command substitution, a subshell whose changes
# to variables are lost.
CLEANUP_DIR_LIST=$(mktemp /tmp/kairoi-dirs.XXXXXX)

pass() { TESTS_PASSED=$((TESTS_PASSED + 1)); echo "ok - $*"; }
fail() { TESTS_FAILED=$((TESTS_FAILED + 1)); echo "not ok - $*"; }

# check DESCRIPTION EXPECTED ACTUAL
check() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1: expected [$2], got [$3]"
	fi
}

finish() {
	echo "$TESTS_PASSED passed, $TESTS_FAILED failed"
	[ "$TESTS_FAILED" -eq 0 ]
}

cleanup() {
	local dir pid
	for dir in "${CLUSTER_DIRS[@]}"; do
		if [ -f "$dir/data/postmaster.pid" ]; then
			pid=$(head -1 "$dir/data/postmaster.pid")
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	for pid in "${CLEANUP_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	while read -r dir; do
		rm -rf "$dir"
	done <"$CLEANUP_DIR_LIST"
	rm -f "$CLEANUP_DIR_LIST"
}
trap cleanup EXIT

# A directory the postgres user owns; removed at exit.  Kept short so that
# Unix socket paths stay under 107 bytes.
make_temp_dir() {
	local dir
	dir=$(mktemp -d /tmp/kairoi.XXXXXX)
	chown postgres: "$dir"
	chmod 755 "$dir"
	echo "$dir" >>"$CLEANUP_DIR_LIST"
	echo "$dir"
}

free_port() {
	$PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() { runuser -u postgres -- "$@"; }

# start_server VAR_PREFIX [server options...]
# Starts a test server on fresh ports; sets ${PREFIX}_PORT, ${PREFIX}_CPORT,
# ${PREFIX}_PID and ${PREFIX}_DATA (its data directory, kept across restarts).
start_server() {
	local prefix=$1
	shift
	local port cport data
	port=$(free_port)
	cport=$(free_port)
	data=$(make_temp_dir)
	printf -v "${prefix}_PORT" '%s' "$port"
	printf -v "${prefix}_CPORT" '%s' "$cport"
	printf -v "${prefix}_DATA" '%s' "$data"
	restart_server "$prefix" "$@"
}

# restart_server VAR_PREFIX [server options...]: same ports and data
restart_server() {
	local prefix=$1
	shift
	local port_var="${prefix}_PORT" cport_var="${prefix}_CPORT" data_var="${prefix}_DATA"
	local pidfile="${!data_var}/server.pid"
	rm -f "$pidfile"
	$PYTHON "$KAIROI_ROOT/test/kairoi_server.py" --port "${!port_var}" \
		--control-port "${!cport_var}" --data "${!data_var}" \
		--pidfile "$pidfile" "$@" >>"${!data_var}/server.log" 2>&1 &
	local pid=$!
	CLEANUP_PIDS+=("$pid")
	printf -v "${prefix}_PID" '%s' "$pid"
	for _ in $(seq 1 500); do
		[ -s "$pidfile" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.02
	done
	echo "test server did not start:" >&2
	cat "${!data_var}/server.log" >&2
	return 1
}

# kill_server VAR_PREFIX [SIGNAL]
kill_server() {
	local pid_var="${1}_PID"
	kill "-${2:-KILL}" "${!pid_var}" 2>/dev/null
	wait "${!pid_var}" 2>/dev/null
	return 0
}

# new_cluster VAR_PREFIX CONFIG_LINES: initdb a cluster (UTF8, C locale)
# on a free port, listening only on its own socket directory, with these
# postgresql.conf lines, and start it.  Sets ${PREFIX}_DIR, ${PREFIX}_PORT
# and ${PREFIX}_HOST (socket directory).
new_cluster() {
	local prefix=$1 config=$2
	local dir port
	dir=$(make_temp_dir)
	port=$(free_port)
	printf -v "${prefix}_DIR" '%s' "$dir"
	printf -v "${prefix}_PORT" '%s' "$port"
	printf -v "${prefix}_HOST" '%s' "$dir"
	CLUSTER_DIRS+=("$dir")
	as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2
		return 1
	}
	printf "port = %s\nlisten_addresses = ''\nunix_socket_directories = '%s'\n%s\n" \
		"$port" "$dir" "$config" >>"$dir/data/postgresql.conf"
	start_postgres "$prefix"
}

# start_cluster VAR_PREFIX SERVER_PORT [extra postgresql.conf lines]
# A new cluster (new_cluster) with kairoi preloaded: every database that
# gets the extension is served (kairoi.server is the test server at
# SERVER_PORT); kairoi.idle_timeout = 0 keeps connections open, as most
# tests expect (test/integration/idle_connection.sh sets it).
start_cluster() {
	local server_port=$2 extra=${3:-}
	new_cluster "$1" "shared_preload_libraries = 'kairoi'
kairoi.server = '127.0.0.1:$server_port'
kairoi.poll_interval = 1000
kairoi.backoff_min = 50
kairoi.backoff_max = 1000
kairoi.idle_timeout = 0
fsync = off
log_min_messages = log
$extra"
}

start_postgres() {
	local dir_var="${1}_DIR"
	as_postgres "$PGBIN/pg_ctl" -D "${!dir_var}/data" -l "${!dir_var}/postgres.log" \
		-w -t 60 start >/dev/null || {
		cat "${!dir_var}/postgres.log" >&2
		return 1
	}
}

# stop_postgres VAR_PREFIX [MODE]
stop_postgres() {
	local dir_var="${1}_DIR"
	as_postgres "$PGBIN/pg_ctl" -D "${!dir_var}/data" -m "${2:-fast}" -w -t 60 stop >/dev/null
}

# psql_at VAR_PREFIX DATABASE SQL...: unaligned, tuples only, stop on error
psql_at() {
	local host_var="${1}_HOST" port_var="${1}_PORT" db=$2
	shift 2
	"$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "${!host_var}" \
		-p "${!port_var}" -U postgres -d "$db" "$@"
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll a condition (50 ms)
wait_for() {
	local what=$1 timeout=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	while [ $SECONDS -lt $deadline ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "timed out after ${timeout}s waiting for: $what" >&2
	return 1
}

# The worker's pid, once it runs and serves this database
worker_pid() {
	psql_at "$1" "$2" -c "SELECT worker_pid FROM kairoi_status() WHERE worker_pid IS NOT NULL"
}

worker_is_up() {
	[ -n "$(worker_pid "$1" "$2")" ]
}

# relocated_postgres: a copy of this machine's PostgreSQL (PGBIN's bin, lib
# and share directories) under a new temporary prefix, with the same
# relative layout, where PostgreSQL and pg_config find everything relative
# to the binaries; kairoi is removed from it.  Sets COPY (the prefix),
# COPY_PGBIN, COPY_PG_CONFIG, COPY_PKGLIB and COPY_SHARE.  What is
# installed there leaves the installation the other suites use alone.
relocated_postgres() {
	local host_config=$PGBIN/pg_config home share pkglib
	home=$(dirname "$PGBIN")
	share=$("$host_config" --sharedir)
	pkglib=$("$host_config" --pkglibdir)
	COPY=$(make_temp_dir)/pg
	mkdir -p "$COPY$(dirname "$home")" "$COPY$(dirname "$share")" \
		"$COPY$(dirname "$("$host_config" --includedir)")" "$COPY$("$host_config" --libdir)"
	cp -a "$home" "$COPY$(dirname "$home")/"
	cp -a "$share" "$COPY$(dirname "$share")/"
	# The server headers are only read: the copy uses the host's
	ln -s "$("$host_config" --includedir)" "$COPY$("$host_config" --includedir)"
	COPY_PKGLIB=$COPY$pkglib
	COPY_SHARE=$COPY$share
	rm -f "$COPY_PKGLIB"/kairoi* "$COPY_SHARE"/extension/kairoi*
	COPY_PGBIN=$COPY$PGBIN
	COPY_PG_CONFIG=$COPY_PGBIN/pg_config
}

# previous_release_sources DIR: the sources of the previous release
# (test/previous-release: its version and commit) into DIR: from git when
# the repository has that commit, else from the archive that
# test/pg-versions leaves beside the tree in a root.  Fails, saying why,
# if neither has it (a shallow clone).
previous_release_sources() {
	local commit archive=$KAIROI_ROOT/../kairoi-previous.tar
	commit=$(cut -d' ' -f2 "$KAIROI_ROOT/test/previous-release")
	if git -C "$KAIROI_ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then
		git -C "$KAIROI_ROOT" archive "$commit" | tar -x -C "$1"
	elif [ -f "$archive" ]; then
		tar -x -C "$1" -f "$archive"
	else
		echo "the sources of release $(cut -d' ' -f1 "$KAIROI_ROOT/test/previous-release") (commit $commit) are neither in git nor in $archive" >&2
		return 1
	fi
}

# check_outbox_invariants: amcheck and uniqueness of kairoi's tables
# shellcheck source=test/invariants.sh
. "$KAIROI_ROOT/test/invariants.sh"
