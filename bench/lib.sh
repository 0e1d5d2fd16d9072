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
