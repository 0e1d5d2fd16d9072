#!/usr/bin/python3
"""Test of bench/report.py (benchmark TSVs to markdown and PNGs) on the
hand-written fixture TSVs in bench/fixtures/, and of bench/run-all with
stand-in scripts that copy those files: no benchmark runs here.

Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed";
exit status 1 on failure.  Needs gnuplot (scripts/install-deps).
Regenerate the golden file after an intended change of the output with
    python3 bench/report.py markdown bench/fixtures > bench/fixtures/expected.md
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'bench', 'fixtures')
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, 'bench'))
import report  # noqa: E402

passed = failed = 0


def check(what, cond, detail=''):
    global passed, failed
    if cond:
        passed += 1
        print('ok - %s' % what)
    else:
        failed += 1
        print('not ok - %s%s' % (what, ': ' + detail if detail else ''))


def raises(fn, *args):
    """The ReportError message fn(*args) raises, or None."""
    try:
        fn(*args)
    except report.ReportError as e:
        return str(e)
    return None


def write(directory, name, text):
    with open(os.path.join(directory, name), 'w') as f:
        f.write(text)


def test_markdown(tmp):
    with open(os.path.join(FIXTURES, 'expected.md')) as f:
        expected = f.read()
    got = report.markdown(FIXTURES)
    check('markdown of the fixtures matches bench/fixtures/expected.md', got == expected,
          'differs; first differing line: %r' % next(
              (g for g, e in zip(got.splitlines(), expected.splitlines()) if g != e), '(length)'))
    for heading in ('Enqueue cost', 'Set-based enqueue', 'Delivery', 'Non-ASCII',
                    'Commit-to-acknowledgement latency', 'Idle databases'):
        check('a section for %s' % heading, '### ' + heading in got)
    only = os.path.join(tmp, 'only-latency')
    os.mkdir(only)
    for name in ('latency.tsv', 'run.tsv'):
        shutil.copy(os.path.join(FIXTURES, name), only)
    got = report.markdown(only)
    check('absent result files give no table and no image link',
          'Enqueue' not in got and 'img/enqueue.png' not in got and 'img/latency.png' in got)
    check('the machine and the commit are named', 'AMD EPYC' in got and '0123456789ab' in got)


def test_percentile():
    v = list(range(100, 0, -1))
    check('nearest-rank percentiles of 1..100',
          [report.percentile(v, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100])
    check('percentiles of 10 samples', [report.percentile(list(range(1, 11)), p)
                                        for p in (50, 90, 99)] == [5, 9, 10])
    check('percentile of one sample', report.percentile([3.5], 99) == 3.5)
    rows = [{'state': 'connected', 'latency_ms': str(x), 'delay_ms': '0'} for x in (3, 1, 2)]
    check('latency table: p50 p90 p99 max per state', '| 0 | `connected` | 3 | 2.00 | 3.00 | '
          '3.00 | 3.00 |' in report.md_latency(rows))
    rows = [{'idle_databases': n, 'rate': r, 'ratio': q, 'idle_timeout_ms': t}
            for n, r, q, t in (('0', '100', '1.00', '60000'), ('9', '98', '0.98', '0'),
                               ('9', '99', '0.99', '60000'))]
    got = report.md_idle_databases(rows)
    check('idle databases: the optional idle_timeout_ms column tells the variants apart',
          '| 9 | 0 | 98 | **0.98** |' in got and '| 9 | 60000 | 99 | **0.99** |' in got, str(got))


def test_bad_input(tmp):
    bad = os.path.join(tmp, 'bad')
    os.mkdir(bad)
    write(bad, 'delivery.tsv', 'delay_ms\traw_rate\tratio\n0\t1\t1\n')
    msg = raises(report.read_tsv, bad, 'delivery.tsv')
    check('a missing column is named', msg is not None and 'ext_rate' in msg, str(msg))
    write(bad, 'delivery.tsv', 'delay_ms\traw_rate\text_rate\tratio\n0\t1\t1\n')
    msg = raises(report.read_tsv, bad, 'delivery.tsv')
    check('a short row is reported with its line', msg is not None and 'line 2' in msg, str(msg))
    write(bad, 'delivery.tsv', 'delay_ms\traw_rate\text_rate\tratio\n0\tfast\t1\t1\n')
    msg = raises(report.markdown, bad)
    check('a value that is not a number is reported', msg is not None and 'fast' in msg, str(msg))
    write(bad, 'delivery.tsv', '')
    check('an empty file is reported', raises(report.read_tsv, bad, 'delivery.tsv') is not None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'report.py'), 'markdown', bad],
                       capture_output=True, text=True)
    check('the command exits 1 with the message', p.returncode == 1 and 'empty' in p.stderr,
          '%d %s' % (p.returncode, p.stderr))


def test_splice(tmp):
    s, e = report.START, report.END
    doc = '# Benchmarks\n\nhand-written history\n'
    once = report.splice(doc, 'generated 1\n')
    check('markers are appended when absent', once == doc + '\n%s\ngenerated 1\n%s\n' % (s, e),
          repr(once))
    twice = report.splice(once, 'generated 2\n')
    check('the generated part is replaced and the rest kept',
          twice == doc + '\n%s\ngenerated 2\n%s\n' % (s, e), repr(twice))
    around = 'intro\n%s\nold\n%s\nhistory after\n' % (s, e)
    check('text after the end marker is kept',
          report.splice(around, 'new\n') == 'intro\n%s\nnew\n%s\nhistory after\n' % (s, e))
    check('splicing the same section again changes nothing',
          report.splice(report.splice(around, 'x\n'), 'x\n') == report.splice(around, 'x\n'))
    for broken in ('%s\nno end\n' % s, '%s\n%s\n' % (e, s), '%s\n%s\n%s\n%s\n' % (s, e, s, e)):
        check('malformed markers are refused: %r' % broken[:40],
              raises(report.splice, broken, 'x\n') is not None)
    path = os.path.join(tmp, 'doc.md')
    write(tmp, 'doc.md', around)
    write(tmp, 'section.md', 'from file\n')
    rc = report.main(['splice', path, os.path.join(tmp, 'section.md')])
    with open(path) as f:
        check('splice command rewrites the document', rc == 0 and 'from file' in f.read())


def png_ok(path):
    with open(path, 'rb') as f:
        return f.read(8) == b'\x89PNG\r\n\x1a\n' and os.path.getsize(path) > 10000


def test_plots(tmp):
    if shutil.which('gnuplot') is None:
        check('gnuplot is installed (scripts/install-deps)', False)
        return
    img = os.path.join(tmp, 'img')
    drawn = report.plots(FIXTURES, img)
    names = sorted(os.path.basename(p) for p in drawn)
    check('three plots drawn from the fixtures', names ==
          ['delivery_window.png', 'enqueue.png', 'latency.png'], str(names))
    check('each plot is a PNG of some substance', all(png_ok(p) for p in drawn))
    only = os.path.join(tmp, 'only-latency')
    img2 = os.path.join(tmp, 'img2')
    drawn = report.plots(only, img2)
    check('no plot without its result file', [os.path.basename(p) for p in drawn] ==
          ['latency.png'] and os.listdir(img2) == ['latency.png'], str(drawn))


FAKE_SCRIPT = """#!/bin/bash
# a stand-in for a benchmark: copies fixture result files to BENCH_RESULTS_DIR
for f in %(files)s; do cp "%(fixtures)s/$f" "$BENCH_RESULTS_DIR/$f"; done
%(extra)s
echo "%(summary)s"
exit %(rc)d
"""


def sandbox(tmp, name, scripts):
    """A copy of bench/run-all and bench/report.py with stand-in scripts
    {script: (files, extra shell, rc)} (files None: a script that does not
    know BENCH_RESULTS_DIR), docs/benchmarks.md with hand-written text around
    the markers, a stale plot, and a fake PGBIN."""
    root = os.path.join(tmp, name)
    for d in ('bench', 'docs/img', 'pgbin'):
        os.makedirs(os.path.join(root, d))
    for f in ('run-all', 'report.py'):
        shutil.copy(os.path.join(ROOT, 'bench', f), os.path.join(root, 'bench', f))
    for script, (files, extra, rc) in scripts.items():
        if files is None:
            text = '#!/bin/bash\necho "a benchmark without result files"\n'
        else:
            text = FAKE_SCRIPT % {'files': ' '.join(files), 'fixtures': FIXTURES, 'extra': extra,
                                  'summary': '%d passed, %d failed' % (1 - bool(rc), bool(rc)),
                                  'rc': rc}
        write(os.path.join(root, 'bench'), script, text)
    write(os.path.join(root, 'pgbin'), 'postgres',
          '#!/bin/sh\necho "postgres (PostgreSQL) 15.99"\n')
    os.chmod(os.path.join(root, 'pgbin', 'postgres'), 0o755)
    write(os.path.join(root, 'docs'), 'benchmarks.md', 'history before\n\n%s\nold section\n%s\n'
          '\nhistory after\n' % (report.START, report.END))
    write(os.path.join(root, 'docs', 'img'), 'enqueue.png', 'stale plot of an earlier run')
    return root


def run_all(root, **env):
    e = dict(os.environ, PGBIN=os.path.join(root, 'pgbin'), **env)
    for k in ('BENCH_ONLY', 'BENCH_DOCS', 'BENCH_KEEP_RESULTS'):
        if k not in env:
            e.pop(k, None)
    p = subprocess.run(['bash', os.path.join(root, 'bench', 'run-all')], env=e,
                       capture_output=True, text=True, timeout=120)
    with open(os.path.join(root, 'docs', 'benchmarks.md')) as f:
        return p.returncode, p.stdout + p.stderr, f.read()


def test_run_all(tmp):
    root = sandbox(tmp, 'repo', {
        'latency.sh': (['latency.tsv'], 'echo "note: idle_reconnect not measured"', 0),
        'delivery.sh': (None, '', 0),
        'nonascii.sh': (['nonascii.tsv'], '', 1)})
    rc, out, doc = run_all(root)
    check('run-all exits non-zero when a script failed', rc == 1, out)
    check('run-all keeps the hand-written text and replaces the section',
          doc.startswith('history before\n') and doc.endswith('\nhistory after\n')
          and 'old section' not in doc and '### Commit-to-acknowledgement latency' in doc)
    for text in ('enqueue.sh: not present, skipped',
                 'delivery.sh: writes no result files (BENCH_RESULTS_DIR) yet, skipped',
                 'nonascii.sh: FAILED (exit 1, 0 passed, 1 failed); its results are left out',
                 'latency.sh: idle_reconnect not measured', 'PostgreSQL 15.99', '`latency.sh: '):
        check('run-all notes %r' % text, text in doc, doc[:1500])
    check('a failed script\'s results are left out', 'Non-ASCII' not in doc)
    img = os.path.join(root, 'docs', 'img')
    check('run-all draws the plot of this run and removes the stale one',
          sorted(os.listdir(img)) == ['latency.png'] and png_ok(os.path.join(img, 'latency.png')),
          str(os.listdir(img)))
    rc, out, doc2 = run_all(root, BENCH_DOCS='0', BENCH_ONLY='latency.sh')
    check('BENCH_DOCS=0 prints the section and leaves docs alone',
          rc == 0 and doc2 == doc and '### Commit-to-acknowledgement latency' in out
          and 'nonascii.sh: not in BENCH_ONLY, not run' in out, out)
    bad = sandbox(tmp, 'bad', {'latency.sh': (['latency.tsv'], 'echo oops >"$BENCH_RESULTS_DIR/'
                                              'latency.tsv"', 0)})
    rc, out, doc = run_all(bad)
    kept = [line.rsplit(' ', 1)[1] for line in out.splitlines() if 'results and logs kept in' in line]
    check('bad result files: run-all fails, docs untouched, results kept',
          rc == 1 and 'old section' in doc and len(kept) == 1 and os.path.isdir(kept[0])
          and os.listdir(os.path.join(bad, 'docs', 'img')) == ['enqueue.png'], out)
    for d in kept:
        shutil.rmtree(d, ignore_errors=True)


def main():
    with tempfile.TemporaryDirectory(prefix='kairoi-report-') as tmp:
        test_markdown(tmp)
        test_percentile()
        test_bad_input(tmp)
        test_splice(tmp)
        test_plots(tmp)
        test_run_all(tmp)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
