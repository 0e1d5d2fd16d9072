# shellcheck shell=bash
# test/lib_exporter.sh: run the Prometheus postgres_exporter (Debian package
# prometheus-postgres-exporter) with kairoi's custom queries and read its
# metrics.  Source it after test/lib.sh.

EXPORTER=${EXPORTER:-/usr/bin/prometheus-postgres-exporter}
EXPORTER_QUERIES="$KAIROI_ROOT/monitoring/postgres_exporter_queries.yaml"

# start_exporter VAR_PREFIX CLUSTER_PREFIX ROLE DATABASE [exporter flags...]
# Sets ${PREFIX}_URL (the /metrics address) and ${PREFIX}_LOG.
start_exporter() {
	local prefix=$1 cluster=$2 role=$3 db=$4
	shift 4
	local host_var="${cluster}_HOST" port_var="${cluster}_PORT"
	local port log url
	port=$(free_port)
	log=$(make_temp_dir)/exporter.log
	url="http://127.0.0.1:$port/metrics"
	DATA_SOURCE_NAME="host=${!host_var} port=${!port_var} user=$role dbname=$db sslmode=disable" \
		"$EXPORTER" --extend.query-path="$EXPORTER_QUERIES" \
		--web.listen-address="127.0.0.1:$port" \
		--disable-default-metrics --disable-settings-metrics \
		--no-collector.database --no-collector.bgwriter "$@" >"$log" 2>&1 &
	CLEANUP_PIDS+=("$!")
	printf -v "${prefix}_URL" '%s' "$url"
	printf -v "${prefix}_LOG" '%s' "$log"
	wait_for "the exporter on port $port" 30 curl -sf -o /dev/null "$url" || {
		cat "$log" >&2
		return 1
	}
}

# scrape VAR_PREFIX FILE: one scrape of /metrics into FILE
scrape() {
	local url_var="${1}_URL"
	curl -sf -o "$2" "${!url_var}"
}

# metric FILE NAME [label=value...]: the sum of the samples of NAME whose
# labels include every label=value given (other labels, such as the
# exporter's "server", are ignored); prints "absent" if none matches.
# Integers print without a fraction.
metric() {
	$PYTHON - "$@" <<'PY'
import re, sys
path, name, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
wanted = dict(w.split('=', 1) for w in wanted)
total, found = 0.0, False
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
for line in open(path):
    m = sample.match(line.rstrip('\n'))
    if not m or m.group(1) != name:
        continue
    labels = dict(label.findall(m.group(2) or ''))
    if all(labels.get(k) == v for k, v in wanted.items()):
        total += float(m.group(3))
        found = True
if not found:
    print('absent')
elif total == int(total):
    print(int(total))
else:
    print(total)
PY
}
