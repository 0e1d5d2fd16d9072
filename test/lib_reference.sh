# shellcheck shell=bash
# test/lib_reference.sh: the reference Kairoi server and RabbitMQ for the
# reference suites (test/reference/*.sh); source it after test/lib.sh.
#
# The reference server (Kairoi 0.1.0, Rust) is the binary named by
# KAIROI_REFERENCE_SERVER; KAIROI_REFERENCE_SERVER_AMQP names a build with
# the AMQP runner (default: KAIROI_REFERENCE_SERVER).  It has no query
# interface: the suites read its store (test/reference_tool.py store,
# with the server stopped) and what its shell runner ran (a rule whose
# script records "$1" byte for byte, make_recorder).
#
# Each server runs in its own temporary directory, where it keeps its
# store; RabbitMQ runs as the rabbitmq user on 127.0.0.1 with its own node
# name, data directory, configuration, ports and epmd.  Everything started
# here is stopped by pid when the calling script exits.

REFERENCE_TOOL="$PYTHON $KAIROI_ROOT/test/reference_tool.py"
REFERENCE_CLEANUP_RABBITS=()

# require_binary VARIABLE: the variable names an executable file, or the
# suite fails here with one line saying so
require_binary() {
	local value=${!1:-}
	if [ -z "$value" ]; then
		fail "$1 is not set: it names the reference Kairoi server's binary (docs/testing.md)"
	elif [ ! -x "$value" ] || [ -d "$value" ]; then
		fail "$1=$value is not an executable file"
	else
		return 0
	fi
	finish
	exit 1
}

# reference_cluster VARIABLE [SETTINGS]: the reference server K named by
# VARIABLE (require_binary, start_reference), a cluster PG it serves
# (start_cluster, with the postgresql.conf lines SETTINGS) with kairoi in
# database postgres (sql), and OUT, a directory for the suite's files
reference_cluster() {
	require_binary "$1"
	start_reference K "${!1}" || exit 1
	start_cluster PG "$K_PORT" "${2:-}" || exit 1
	sql -c "CREATE EXTENSION kairoi" || exit 1
	# shellcheck disable=SC2034  # for the calling suite
	OUT=$(make_temp_dir)
}

sql() { psql_at PG postgres "$@"; }

# flush_check DESCRIPTION [TIMEOUT]: kairoi_flush returns in time (pass),
# or not (fail, with the worker's state)
flush_check() {
	if sql -c "SELECT kairoi_flush('${2:-60 s}')" >/dev/null; then
		pass "$1"
	else
		fail "$1: kairoi_flush did not return: $(sql -c "SELECT state, last_error FROM kairoi_status()")"
	fi
}

# hex_ids FROM: column id of the FROM clause (a table, and a WHERE if need
# be) in UTF-8, as hex, one a line
hex_ids() {
	sql -c "SELECT encode(convert_to(id, 'UTF8'), 'hex') FROM $1 ORDER BY 1"
}

# store_jobs PREFIX: the jobs of server PREFIX's store, "<status> <hex>"
# a line; stop the server first (test/reference_tool.py store)
store_jobs() {
	local store_var="${1}_STORE"
	$REFERENCE_TOOL store "${!store_var}"
}

# start_reference PREFIX BINARY [PORT]: the reference server on PORT, or
# on a free loopback port, with a new store.  Sets ${PREFIX}_PORT,
# ${PREFIX}_PID, ${PREFIX}_STORE (its working directory: store,
# configuration.toml, server.log) and ${PREFIX}_BIN.  A failed bind does not
# stop the server (it keeps running without listening): the port is
# checked, and without PORT another one tried.
start_reference() {
	local prefix=$1
	printf -v "${prefix}_BIN" '%s' "$2"
	printf -v "${prefix}_STORE" '%s' "$(make_temp_dir)"
	if [ -n "${3:-}" ]; then
		printf -v "${prefix}_PORT" '%s' "$3"
		restart_reference "$prefix"
		return
	fi
	for _ in 1 2 3 4 5; do
		printf -v "${prefix}_PORT" '%s' "$(free_port)"
		restart_reference "$prefix" 2>/dev/null && return 0
	done
	restart_reference "$prefix"
}

# restart_reference PREFIX: start the server again on the same store and
# port (it replays its store at start-up); returns once its own process
# listens on the port.  Fsync on, framerate 512; its log level is
# REFERENCE_LOG_LEVEL (info).
restart_reference() {
	local prefix=$1 pid
	local bin_var="${prefix}_BIN" port_var="${prefix}_PORT" store_var="${prefix}_STORE"
	local store=${!store_var} port=${!port_var}
	printf '[log]\nlevel = "%s"\n[controller]\nlisten = "127.0.0.1:%s"\n[database]\nfsync_on_persist = true\nframerate = 512\n' \
		"${REFERENCE_LOG_LEVEL:-info}" "$port" >"$store/configuration.toml"
	(cd "$store" && exec "${!bin_var}" -c configuration.toml >>server.log 2>&1) &
	pid=$!
	CLEANUP_PIDS+=("$pid")
	printf -v "${prefix}_PID" '%s' "$pid"
	local deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do
		listening "$port" "$pid" && return 0
		sleep 0.05
	done
	echo "the reference server did not listen on 127.0.0.1:$port:" >&2
	tail -n 5 "$store/server.log" >&2
	kill_reference "$prefix"
	return 1
}

# listening PORT PID: that process listens on 127.0.0.1:PORT
listening() {
	ss -Hltnp "sport = :$1" | grep -q "pid=$2,"
}

# kill_reference PREFIX [SIGNAL]: it has no signal handling; any signal
# stops it at once (default KILL)
kill_reference() {
	local pid_var="${1}_PID"
	kill "-${2:-KILL}" "${!pid_var}" 2>/dev/null
	{ wait "${!pid_var}"; } 2>/dev/null
	return 0
}

# make_recorder DIR: DIR/record job.sh (a space in its path, as a rule's
# argument must survive it too) writes its first argument, byte for byte,
# to a new file DIR/*.done (written aside, then renamed: a reader never
# sees half of one).  test/reference_tool.py records DIR reads them.
make_recorder() {
	cat >"$1/record job.sh" <<EOF
tmp=\$(mktemp "$1/run.XXXXXX") && printf '%s' "\$1" >"\$tmp" && mv "\$tmp" "\$tmp.done"
EOF
	echo "$1/record job.sh"
}

# records_count DIR: how many executions the recorder saw
records_count() {
	find "$1" -name '*.done' | wc -l
}

# records_settle DIR QUIET TIMEOUT: wait until the recorder has seen no new
# execution for QUIET seconds (the server triggers a due job within about
# a second; a job sent again is run again), TIMEOUT seconds at most
records_settle() {
	local count last=-1 since=$SECONDS deadline=$((SECONDS + $3))
	while [ $SECONDS -lt $deadline ]; do
		count=$(records_count "$1")
		if [ "$count" -ne "$last" ]; then
			last=$count
			since=$SECONDS
		elif [ $((SECONDS - since)) -ge "$2" ]; then
			return 0
		fi
		sleep 0.2
	done
	echo "the shell runner was still running jobs after $3 s" >&2
	return 1
}

# compare_hex DESCRIPTION EXPECTED_FILE ACTUAL_FILE [at-least-once]: two
# lists of identifiers in hex, one a line; passes if every expected one is
# there exactly once (at least once with at-least-once) and nothing else is
compare_hex() {
	local missing extra dups=0
	missing=$(comm -23 <(sort -u "$2") <(sort -u "$3") | wc -l)
	extra=$(comm -13 <(sort -u "$2") <(sort -u "$3") | wc -l)
	[ "${4:-}" = at-least-once ] || dups=$(sort "$3" | uniq -d | wc -l)
	if [ "$missing" -eq 0 ] && [ "$extra" -eq 0 ] && [ "$dups" -eq 0 ]; then
		pass "$1 ($(wc -l <"$2") identifiers)"
	else
		fail "$1: $missing missing, $extra unexpected, $dups more than once (of $(wc -l <"$2"))"
		comm -3 <(sort -u "$2") <(sort -u "$3") | head -n 5 |
			while read -r line; do echo "# differs: $line"; done
	fi
}

# start_rabbitmq PREFIX: Debian's rabbitmq-server as the rabbitmq user,
# without systemd, in the background: node kairoi-<port>@localhost on
# 127.0.0.1, its own data directory, configuration (no plugins), AMQP and
# distribution ports, and its own epmd (-address 127.0.0.1, a free port;
# the node is told not to start one).  Sets ${PREFIX}_PORT and
# ${PREFIX}_DIR; wait_rabbitmq waits until it takes connections.
start_rabbitmq() {
	local prefix=$1 dir port dist epmd
	dir=$(make_temp_dir)
	port=$(free_port)
	dist=$(free_port)
	epmd=$(free_port)
	printf -v "${prefix}_PORT" '%s' "$port"
	printf -v "${prefix}_DIR" '%s' "$dir"
	printf 'listeners.tcp.default = 127.0.0.1:%s\nlog.console = false\nlog.file.level = warning\n' \
		"$port" >"$dir/rabbitmq.conf"
	echo '[].' >"$dir/enabled_plugins"
	chown -R rabbitmq: "$dir"
	local env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir" LANG=C.UTF-8
		ERL_EPMD_PORT="$epmd")
	# setsid: a session of its own, so that what it spawns can be found
	setsid setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
		"${env[@]}" epmd -address 127.0.0.1 -port "$epmd" >"$dir/epmd.log" 2>&1 &
	echo "$!" >"$dir/epmd.pid"
	REFERENCE_CLEANUP_RABBITS+=("$dir")
	setsid setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${env[@]}" \
		RABBITMQ_NODENAME="kairoi-$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" \
		RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
		RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
		RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
		RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}" \
		/usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/server.out" 2>&1 &
	echo "$!" >"$dir/server.pid"
}

# wait_rabbitmq PREFIX TIMEOUT: until RabbitMQ takes AMQP connections.  If
# it exits at start-up (a port taken meanwhile, say), it is started again
# on new ports, twice at most.
wait_rabbitmq() {
	local port_var="${1}_PORT" dir_var="${1}_DIR" rc
	for _ in 1 2 3; do
		$REFERENCE_TOOL amqp-ready --port "${!port_var}" --timeout "$2" \
			--pid "$(cat "${!dir_var}/server.pid")"
		rc=$?
		[ "$rc" -eq 0 ] && return 0
		if [ "$rc" -ne 2 ]; then
			echo "RabbitMQ did not take connections on 127.0.0.1:${!port_var} within $2 s:" >&2
			tail -n 20 "${!dir_var}/server.out" >&2
			return 1
		fi
		echo "RabbitMQ exited at start-up; starting it again:" >&2
		tail -n 20 "${!dir_var}/server.out" >&2
		stop_rabbitmq "$1"
		start_rabbitmq "$1"
	done
	return 1
}

# rabbitmq_pids DIR: RabbitMQ's processes: epmd, the wrapper script, and
# every process of the rabbitmq user in the wrapper's session or below it
# (the Erlang VM beam.smp, erl_child_setup, inet_gethost), alive or not
# yet reaped
rabbitmq_pids() {
	local server
	server=$(cat "$1/server.pid")
	cat "$1/epmd.pid"
	ps -e -o pid=,ppid=,sid=,uid= | awk -v root="$server" -v uid="$(id -u rabbitmq)" '
		$4 != uid { next }
		{ parent[$1] = $2; if ($3 == root) keep[$1] = 1 }
		END {
			keep[root] = 1
			do {
				grew = 0
				for (p in parent)
					if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
			} while (grew)
			for (p in keep) print p
		}'
}

# alive PID...: those that run (a zombie has stopped running)
alive() {
	local pid state
	for pid in "$@"; do
		state=$(ps -o stat= -p "$pid" 2>/dev/null) || continue
		case $state in Z*) ;; *) echo "$pid" ;; esac
	done
}

# stop_rabbitmq PREFIX: stop RabbitMQ by pid: TERM to the wrapper script
# (it stops the Erlang VM and waits for it, about a second), then KILL to
# whatever of it still runs 15 s later and to epmd; fails if a process of
# it still runs 10 s after that
stop_rabbitmq() {
	local dir_var="${1}_DIR"
	stop_rabbitmq_in "${!dir_var}"
}

# until_none_alive SECONDS PID...: wait until none of them runs
until_none_alive() {
	local deadline=$((SECONDS + $1))
	shift
	while [ -n "$(alive "$@")" ]; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.05
	done
}

stop_rabbitmq_in() {
	local dir=$1 wrapper epmd pids
	[ -e "$dir/stopped" ] && return 0
	wrapper=$(cat "$dir/server.pid")
	epmd=$(cat "$dir/epmd.pid")
	# shellcheck disable=SC2207  # pids: one word each
	pids=($(rabbitmq_pids "$dir"))
	kill -TERM "$wrapper" 2>/dev/null
	until_none_alive 15 "$wrapper"
	kill -KILL "${pids[@]}" 2>/dev/null
	{ wait "$wrapper" "$epmd"; } 2>/dev/null
	if until_none_alive 10 "${pids[@]}"; then
		touch "$dir/stopped"
		return 0
	fi
	echo "RabbitMQ processes still running: $(alive "${pids[@]}")" >&2
	return 1
}

reference_cleanup() {
	local dir
	for dir in "${REFERENCE_CLEANUP_RABBITS[@]}"; do
		stop_rabbitmq_in "$dir"
	done
	cleanup
}
trap reference_cleanup EXIT
