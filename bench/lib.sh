# bench/lib.sh: helpers shared by the benchmark scripts (source it, bash).
#
# Sources test/lib.sh (clusters, test servers, pass/fail/finish, cleanup by
# pid) and adds the arithmetic the benchmarks report with.

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"

BENCH="$KAIROI_ROOT/bench"

now() { date +%s.%N; }
# median, min and max of the arguments (numbers)
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
minimum() { printf '%s\n' "$@" | sort -g | head -1; }
maximum() { printf '%s\n' "$@" | sort -g | tail -1; }
# fdiv A B [FORMAT [SCALE]]: A * SCALE / B, "n/a" if B is not positive
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" -v s="${4:-1}" 'BEGIN {if (b > 0) printf f, a*s/b; else print "n/a"}'; }

# rotate N WORDS...: the words, one a line, starting from the (N mod
# count)-th
rotate() {
	local n=$1
	shift
	local words=("$@") i
	for ((i = 0; i < ${#words[@]}; i++)); do
		printf '%s\n' "${words[$(((i + n) % ${#words[@]}))]}"
	done
}

# cpu_seconds PID...: CPU seconds (user+system) used so far by the processes
cpu_seconds() {
	local hz pid total=0 s
	hz=$(getconf CLK_TCK)
	for pid in "$@"; do
		s=$(awk -v hz="$hz" '{print ($14 + $15) / hz}' "/proc/$pid/stat" 2>/dev/null || echo 0)
		total=$(awk -v a="$total" -v b="$s" 'BEGIN {print a + b}')
	done
	echo "$total"
}

# precise_cpu_seconds PID: CPU seconds used so far by the process, to the
# nanosecond, from /proc/PID/schedstat (the scheduler's run time), where
# /proc/PID/stat counts in clock ticks (10 ms); cpu_seconds where the
# kernel keeps no scheduler statistics
precise_cpu_seconds() {
	awk '{printf "%.9f\n", $1 / 1e9}' "/proc/$1/schedstat" 2>/dev/null || cpu_seconds "$1"
}

# postgres_cpu_seconds DATADIR: CPU seconds (user+system) used so far by
# the cluster: the postmaster, its live children and (through the
# postmaster's cutime/cstime) the children it has reaped.  A backend's CPU
# reaches the total only once the postmaster has reaped it: wait a moment
# after its client disconnects.
postgres_cpu_seconds() {
	local postmaster reaped
	postmaster=$(head -1 "$1/postmaster.pid")
	reaped=$(awk -v hz="$(getconf CLK_TCK)" '{print ($16 + $17) / hz}' "/proc/$postmaster/stat")
	# shellcheck disable=SC2046
	awk -v a="$reaped" -v b="$(cpu_seconds "$postmaster" $(pgrep -P "$postmaster"))" \
		'BEGIN {printf "%.3f\n", a + b}'
}

# broken MESSAGE: the benchmark cannot go on; count a failure and stop
broken() {
	fail "$*"
	finish
	exit 1
}

# The reference Kairoi server: the binary KAIROI_REFERENCE_SERVER names (the
# test suite's variable too).  require_reference_server stops the calling
# benchmark, saying why, when it is not set or not executable.
require_reference_server() {
	if [ -z "${KAIROI_REFERENCE_SERVER:-}" ] || [ ! -x "$KAIROI_REFERENCE_SERVER" ]; then
		echo "$(basename "$0"): KAIROI_REFERENCE_SERVER must name the reference Kairoi server's" \
			"binary (kairoi, built from its upstream source); it is" \
			"'${KAIROI_REFERENCE_SERVER:-unset}': nothing measured" >&2
		broken "no reference Kairoi server"
	fi
}
