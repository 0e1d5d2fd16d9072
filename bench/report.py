#!/usr/bin/python3
"""bench/report.py: benchmark result files (TSV) to markdown tables and gnuplot PNGs.

    python3 bench/report.py markdown RESULTS_DIR         # generated section, on stdout
    python3 bench/report.py plots RESULTS_DIR IMG_DIR    # draws PNGs, prints their names
    python3 bench/report.py splice DOC SECTION_FILE      # puts the section into DOC

RESULTS_DIR holds what the bench scripts wrote with BENCH_RESULTS_DIR set
(columns: docs/benchmarks.md, "Result files") and run.tsv, written by
bench/run-all: `key value` rows describing the machine and the run (keys
`script` and `note` may repeat). A result file that is absent gives no table
and no plot. splice replaces what lies between the START and END markers of
DOC (appends both at the end if DOC has neither) and keeps the rest.
Standard library only; gnuplot (Debian gnuplot-nox) draws the plots.
"""
import math
import os
import subprocess
import sys
import tempfile

START = '<!-- bench-run-all:start -->'
END = '<!-- bench-run-all:end -->'

COLUMNS = {
    'run.tsv': ('key', 'value'),
    'enqueue.tsv': ('server', 'clients', 'variant', 'median_tps', 'min_tps', 'max_tps',
                    'rounds', 'ratio'),
    'enqueue_set.tsv': ('case', 'median_rows_per_s', 'min_rows_per_s', 'max_rows_per_s',
                        'rounds', 'ratio'),
    'delivery.tsv': ('delay_ms', 'raw_rate', 'ext_rate', 'ratio'),
    'delivery_window.tsv': ('window', 'raw_rate', 'ext_rate', 'ratio'),
    'nonascii.tsv': ('mode', 'requests_per_write', 'rate', 'ratio'),
    'latency.tsv': ('state', 'latency_ms', 'delay_ms'),
    'idle_databases.tsv': ('idle_databases', 'rate', 'ratio'),
}
ENQUEUE_COMBOS = (('down', '1'), ('down', '4'), ('up', '1'), ('up', '4'))
LATENCY_STATES = {
    'connected': 'kairoi, worker connected and idle',
    'raw_connected': 'raw KCP client, open connection (baseline)',
    'idle_reconnect': 'kairoi, first commit after the idle connection was closed',
    'raw_new_connection': 'raw KCP client, new connection (baseline)',
}
LATENCY_COLORS = {'connected': '#1f77b4', 'raw_connected': '#7f7f7f',
                  'idle_reconnect': '#2ca02c', 'raw_new_connection': '#ff7f0e'}


class ReportError(Exception):
    pass


def read_tsv(directory, name):
    """Rows of directory/name as dicts, or None if the file does not exist."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        lines = [line.rstrip('\n') for line in f if line.strip()]
    if not lines:
        raise ReportError('%s: empty (no header line)' % path)
    header = lines[0].split('\t')
    missing = [c for c in COLUMNS[name] if c not in header]
    if missing:
        raise ReportError('%s: missing column(s) %s' % (path, ', '.join(missing)))
    rows = []
    for n, line in enumerate(lines[1:], 2):
        fields = line.split('\t')
        if len(fields) != len(header):
            raise ReportError('%s line %d: %d fields, header has %d'
                              % (path, n, len(fields), len(header)))
        rows.append(dict(zip(header, fields)))
    return rows


def num(row, col):
    try:
        v = float(row[col])
    except ValueError:
        raise ReportError('%s is not a number: %r' % (col, row[col])) from None
    if math.isnan(v) or math.isinf(v):
        raise ReportError('%s is not finite: %r' % (col, row[col]))
    return v


def rate(v):
    return '{:,.0f}'.format(v)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(len(s) * p / 100) - 1)]


def delay_key(d):
    return float(d)


def run_info(results):
    """run.tsv as {key: value} plus the lists of 'script' and 'note' values."""
    info, scripts, notes = {}, [], []
    for r in read_tsv(results, 'run.tsv') or []:
        if r['key'] == 'script':
            scripts.append(r['value'])
        elif r['key'] == 'note':
            notes.append(r['value'])
        else:
            info[r['key']] = r['value']
    return info, scripts, notes


def machine_line(info):
    return '%s CPU (%s), %s RAM, %s, %s' % (
        info.get('nproc', '?'), info.get('cpu_model', '?'), info.get('ram', '?'),
        info.get('kernel', '?'), info.get('postgresql', '?'))


def baseline_of(rows, key):
    """The key of the rows whose ratio is 1 (the script's baseline), joined."""
    names = [r[key] for r in rows if abs(num(r, 'ratio') - 1) < 0.005]
    return ', '.join('`%s`' % n for n in names) if names else 'the script\'s baseline'


# ---------------------------------------------------------------- markdown
def md_table(head, align, rows):
    out = ['| ' + ' | '.join(head) + ' |',
           '| ' + ' | '.join('---:' if a == 'r' else '---' for a in align) + ' |']
    out += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return out


def md_header(info, scripts, notes):
    out = ['## Latest run of `bench/run-all`', '',
           'Generated by `bench/run-all` (do not edit between the markers) on %s at '
           'commit `%s`.' % (info.get('date', '?'), info.get('commit', '?')), '',
           '- Machine: %s; %s.' % (machine_line(info), info.get('python', '?')),
           '- Load average at the start: %s; run time %s. The machine may be shared: '
           'compare ratios, measured against a baseline in the same run, rather than '
           'absolute rates.' % (info.get('load_average', '?'), info.get('runtime', '?'))]
    out += ['- `%s`' % s for s in scripts]
    out += ['- %s' % n for n in notes]
    return out + ['']


def md_enqueue(rows, rows_set):
    out = []
    if rows:
        combos = [c for c in ENQUEUE_COMBOS if any((r['server'], r['clients']) == c for r in rows)]
        combos += sorted({(r['server'], r['clients']) for r in rows} - set(combos))
        variants = list(dict.fromkeys(r['variant'] for r in rows))
        cell = {(r['variant'], r['server'], r['clients']): r for r in rows}
        rounds = sorted({r['rounds'] for r in rows}, key=int)
        out += ['### Enqueue cost (`bench/enqueue.sh`)', '',
                'Transactions per second of an `INSERT` with an `AFTER INSERT` row trigger, '
                'per trigger body, as a ratio of the plain-upsert trigger (`plain_upsert`) '
                'measured in the same run with the same number of clients and the same '
                'server state (down: the worker waits in backoff; up: it delivers). Cell: '
                'ratio (median tps; min-max over %s rounds). Goal: `kairoi_*` >= 0.90.'
                % '/'.join(rounds), '',
                '![enqueue cost per variant](img/enqueue.png)', '']
        body = []
        for v in variants:
            line = ['`%s`' % v]
            for s, c in combos:
                r = cell.get((v, s, c))
                line.append('-' if r is None else '**%.2f** (%s; %s-%s)' % (
                    num(r, 'ratio'), rate(num(r, 'median_tps')), rate(num(r, 'min_tps')),
                    rate(num(r, 'max_tps'))))
            body.append(line)
        out += md_table(['variant'] + ['server %s, %s client%s' % (s, c, '' if c == '1' else 's')
                                       for s, c in combos],
                        'l' + 'r' * len(combos), body) + ['']
    if rows_set:
        out += ['### Set-based enqueue (`bench/enqueue.sh`)', '',
                'Rows per second, as a ratio of `plain_insert_select` (`INSERT ... SELECT '
                '... ON CONFLICT` into a plain table) in the same run.', '']
        out += md_table(['case', 'median rows/s', 'min-max', 'rounds', 'ratio'], 'lrrrr',
                        [['`%s`' % r['case'], rate(num(r, 'median_rows_per_s')),
                          '%s-%s' % (rate(num(r, 'min_rows_per_s')), rate(num(r, 'max_rows_per_s'))),
                          r['rounds'], '**%.2f**' % num(r, 'ratio')] for r in rows_set]) + ['']
    return out


def md_delivery(rows, rows_window, info):
    out = []
    if rows or rows_window:
        out += ['### Delivery (`bench/delivery.sh`)', '',
                'SET/s from the commit of a bulk enqueue (one statement) until the test '
                'server stores every job, against `bench/raw_client.py` (one connection, '
                'same in-flight window) on the same test server in the same run.', '']
    if rows:
        out += md_table(['reply_delay_ms', 'raw SET/s', 'extension SET/s', 'extension/raw'],
                        'rrrr', [[r['delay_ms'], rate(num(r, 'raw_rate')),
                                  rate(num(r, 'ext_rate')), '**%.2f**' % num(r, 'ratio')]
                                 for r in rows]) + ['']
    if rows_window:
        out += ['In-flight window sweep at reply_delay_ms=%s (the raw client uses the same '
                'window):' % info.get('delivery_delay_ms', '8'), '',
                '![delivery rate against the in-flight window](img/delivery_window.png)', '']
        out += md_table(['window', 'raw SET/s', 'extension SET/s', 'extension/raw'], 'rrrr',
                        [[r['window'], rate(num(r, 'raw_rate')), rate(num(r, 'ext_rate')),
                          '**%.2f**' % num(r, 'ratio')]
                         for r in sorted(rows_window, key=lambda r: num(r, 'window'))]) + ['']
    return out


def md_nonascii(rows):
    if not rows:
        return []
    return ['### Non-ASCII identifiers (`bench/nonascii.sh`)', '',
            'Requests per second with non-ASCII identifiers, as a ratio of %s in the same '
            'run.' % baseline_of(rows, 'mode'), ''] + md_table(
        ['mode', 'requests per write', 'requests/s', 'ratio'], 'lrrr',
        [['`%s`' % r['mode'], r['requests_per_write'], rate(num(r, 'rate')),
          '**%.2f**' % num(r, 'ratio')] for r in rows]) + ['']


def latency_groups(rows):
    """{(delay, state): [latency_ms...]} in display order."""
    groups = {}
    for r in rows:
        groups.setdefault((r['delay_ms'], r['state']), []).append(num(r, 'latency_ms'))
    order = list(LATENCY_STATES)

    def key(k):
        return (delay_key(k[0]), order.index(k[1]) if k[1] in order else len(order), k[1])
    return {k: groups[k] for k in sorted(groups, key=key)}


def md_latency(rows):
    if not rows:
        return []
    body = []
    for (delay, state), v in latency_groups(rows).items():
        body.append([delay, '`%s`' % state, str(len(v))] +
                    ['%.2f' % x for x in (percentile(v, 50), percentile(v, 90),
                                          percentile(v, 99), max(v))])
    return ['### Commit-to-acknowledgement latency (`bench/latency.sh`)', '',
            'Milliseconds from the return of a single-row commit (`kairoi_job_set` in its own '
            'transaction) until the test server stores the job and answers OK, both ends on '
            'the machine\'s wall clock. Baseline in the same run, alternating sample for '
            'sample: a raw KCP client sending one SET on an open connection '
            '(`raw_connected`) or on a new one (`raw_new_connection`). '
            '`reply_delay_ms` emulates the reference server\'s ~8 ms reply cadence.', '',
            '![commit-to-acknowledgement latency distribution](img/latency.png)', ''] + \
        md_table(['reply_delay_ms', 'state', 'samples', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'],
                 'rlrrrrr', body) + ['']


def md_idle_databases(rows):
    if not rows:
        return []
    return ['### Idle databases (`bench/idle_databases.sh`)', '',
            'Delivery rate with idle databases served by their own workers, as a ratio of '
            '%s in the same run.' % baseline_of(rows, 'idle_databases'), ''] + md_table(
        ['idle databases', 'rate', 'ratio'], 'rrr',
        [[r['idle_databases'], rate(num(r, 'rate')), '**%.2f**' % num(r, 'ratio')]
         for r in rows]) + ['']


def markdown(results):
    info, scripts, notes = run_info(results)

    def t(name):
        return read_tsv(results, name)
    out = md_header(info, scripts, notes)
    out += md_enqueue(t('enqueue.tsv'), t('enqueue_set.tsv'))
    out += md_delivery(t('delivery.tsv'), t('delivery_window.tsv'), info)
    out += md_nonascii(t('nonascii.tsv'))
    out += md_latency(t('latency.tsv'))
    out += md_idle_databases(t('idle_databases.tsv'))
    return '\n'.join(out).rstrip('\n') + '\n'


# ---------------------------------------------------------------- plots
def gp_quote(s):
    return '"%s"' % s.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def gp_preamble(png, title, info, height=560):
    return ['set terminal pngcairo size 1000,%d font "sans,10"' % height,
            'set output %s' % gp_quote(png),
            'set termoption noenhanced',
            'set title %s' % gp_quote('%s\n%s; %s, commit %s' % (
                title, machine_line(info), info.get('date', '?'), info.get('commit', '?'))),
            'set grid ytics', 'set key top left box opaque']


def plot_enqueue(rows, info, work, png):
    combos = [c for c in ENQUEUE_COMBOS if any((r['server'], r['clients']) == c for r in rows)]
    cell = {(r['variant'], r['server'], r['clients']): r for r in rows}
    with open(os.path.join(work, 'enqueue.dat'), 'w') as f:
        for v in dict.fromkeys(r['variant'] for r in rows):
            f.write(gp_quote(v))
            for s, c in combos:
                r = cell.get((v, s, c))
                if r is None:
                    f.write(' NaN NaN NaN')
                    continue
                ratio, median = num(r, 'ratio'), num(r, 'median_tps')
                f.write(' %.4f %.4f %.4f' % (ratio, ratio * num(r, 'min_tps') / median,
                                             ratio * num(r, 'max_tps') / median))
            f.write('\n')
    plots = ["'enqueue.dat' using %d:%d:%d%s title %s" % (
        2 + 3 * i, 3 + 3 * i, 4 + 3 * i, ':xtic(1)' if i == 0 else '',
        gp_quote('server %s, %s client%s' % (s, c, '' if c == '1' else 's')))
        for i, (s, c) in enumerate(combos)]
    return gp_preamble(png, 'Enqueue cost per trigger body: tps relative to the plain-upsert '
                       'trigger\n(baseline plain_upsert = 1.0: same clients, same server '
                       'state, same run)', info) + [
        'set style data histogram', 'set style histogram errorbars gap 2 lw 1',
        'set style fill solid 0.75 border -1', 'set boxwidth 0.9',
        'set xlabel "trigger body (variant)"',
        'set ylabel "tps / plain-upsert tps (median; whiskers: min-max of the rounds)"',
        'set yrange [0:*]',
        'set arrow from graph 0, first 0.9 to graph 1, first 0.9 nohead dt 2 lw 1.5 lc rgb "red"',
        'set label "goal 0.9" at graph 0.995, first 0.93 right tc rgb "red"',
        'plot ' + ', \\\n     '.join(plots)]


def plot_delivery_window(rows, info, work, png):
    with open(os.path.join(work, 'window.dat'), 'w') as f:
        for r in sorted(rows, key=lambda r: num(r, 'window')):
            f.write('%s %s %s %s\n' % (r['window'], num(r, 'raw_rate'), num(r, 'ext_rate'),
                                       num(r, 'ratio')))
    return gp_preamble(png, 'Delivery rate against the in-flight window, test server with '
                       'reply_delay_ms=%s\n(baseline: raw KCP client, same window, same run)'
                       % info.get('delivery_delay_ms', '8'), info) + [
        'set logscale x', 'set logscale y', 'set grid xtics',
        'set xlabel "requests in flight at most (kairoi.max_in_flight; raw client: same)"',
        'set ylabel "SET/s (median of the rounds, log scale)"', 'set ytics nomirror',
        'set y2label "extension / raw"', 'set y2range [0:1.2]', 'set y2tics 0.1',
        "plot 'window.dat' using 1:2 with linespoints lw 2 pt 7 title 'raw KCP client (baseline)', \\",
        "     '' using 1:3 with linespoints lw 2 pt 5 title 'kairoi worker', \\",
        "     '' using 1:4 axes x1y2 with linespoints dt 2 pt 6 title 'extension / raw (right axis)'"]


def plot_latency(rows, info, work, png):
    plots = []
    groups = latency_groups(rows)
    delays = sorted({d for d, _ in groups}, key=delay_key)
    values = [max(x, 0.01) for v in groups.values() for x in v]
    with open(os.path.join(work, 'latency.dat'), 'w') as f:
        for i, ((delay, state), v) in enumerate(groups.items()):
            v = sorted(v)
            if i:
                f.write('\n\n')
            for k, x in enumerate(v, 1):
                # a job can be stored a hair before the client sees its commit
                # return: clamp for the log axis (the tables keep the value)
                f.write('%.4f %.5f\n' % (max(x, 0.01), k / len(v)))
            plots.append("'latency.dat' index %d using 1:2 with steps lw 2 dt %d lc rgb %s "
                         "title %s" % (i, 1 + delays.index(delay) % 5,
                                       gp_quote(LATENCY_COLORS.get(state, '#9467bd')),
                                       gp_quote('%s, reply delay %s ms (n=%d)' % (
                                           LATENCY_STATES.get(state, state), delay, len(v)))))
    return gp_preamble(png, 'Commit-to-acknowledgement latency of single-row commits (CDF)\n'
                       '(baseline: raw KCP client on the same test server, alternating with '
                       'the commits, same run)', info, height=720) + [
        'set logscale x', 'set grid xtics', 'set xtics add (0.2, 0.5, 2, 5, 20, 50, 200, 500)',
        'set bmargin 12', 'set key at screen 0.5, screen 0.01 center bottom box',
        'set xrange [%g:%g]' % (min(values) / 1.5, max(values) * 1.5),
        'set xlabel "commit return to job stored on the server (ms, log scale)"',
        'set ylabel "fraction of commits"', 'set yrange [0:1.02]',
        'plot ' + ', \\\n     '.join(plots)]


PLOTS = (('enqueue.tsv', 'enqueue.png', plot_enqueue),
         ('delivery_window.tsv', 'delivery_window.png', plot_delivery_window),
         ('latency.tsv', 'latency.png', plot_latency))


def plots(results, img_dir):
    """Draws a PNG for each result file present; returns their paths."""
    info = run_info(results)[0]
    drawn = []
    os.makedirs(img_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='kairoi-plot-') as work:
        for tsv, png, make in PLOTS:
            rows = read_tsv(results, tsv)
            if not rows:
                continue
            path = os.path.abspath(os.path.join(img_dir, png))
            script = os.path.join(work, png + '.gp')
            with open(script, 'w') as f:
                f.write('\n'.join(make(rows, info, work, path)) + '\n')
            p = subprocess.run(['gnuplot', script], cwd=work, capture_output=True, text=True)
            if p.returncode != 0:
                raise ReportError('gnuplot failed for %s: %s' % (png, p.stderr.strip()))
            drawn.append(path)
    return drawn


# ---------------------------------------------------------------- splice
def splice(doc_text, section):
    """doc_text with the text between the markers replaced by section."""
    starts, ends = doc_text.count(START), doc_text.count(END)
    block = '%s\n%s%s' % (START, section, END)
    if starts == 0 and ends == 0:
        return doc_text.rstrip('\n') + '\n\n' + block + '\n'
    if starts != 1 or ends != 1 or doc_text.index(START) > doc_text.index(END):
        raise ReportError('expected one %s followed by one %s' % (START, END))
    head, rest = doc_text.split(START, 1)
    return head + block + rest.split(END, 1)[1]


def main(argv):
    try:
        if len(argv) == 2 and argv[0] == 'markdown':
            sys.stdout.write(markdown(argv[1]))
        elif len(argv) == 3 and argv[0] == 'plots':
            for path in plots(argv[1], argv[2]):
                print(path)
        elif len(argv) == 3 and argv[0] == 'splice':
            with open(argv[1], encoding='utf-8') as f:
                doc = f.read()
            with open(argv[2], encoding='utf-8') as f:
                section = f.read()
            with open(argv[1], 'w', encoding='utf-8') as f:
                f.write(splice(doc, section))
        else:
            sys.stderr.write(__doc__)
            return 2
    except (ReportError, OSError) as e:
        print('report.py: %s' % e, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
