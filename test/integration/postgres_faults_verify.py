#!/usr/bin/python3
"""Check the jobs a Kairoi test server holds against what was committed.

    postgres_faults_verify.py --port CONTROL_PORT --prefix P
        --expect FROM:TO:STEP:BASE [--expect ...] [--id ID=EXECUTION ...]
        [--wait SECONDS]

Each --expect says that jobs P<g> for g in FROM..TO were committed with the
execution BASE + g * STEP seconds (BASE is 'YYYY-MM-DD HH:MM:SS' UTC); each
--id names one more committed job (any identifier) and its execution.  The
server's jobs are compared byte for byte (raw state) and one line is printed:

    expected=E matching=M wrong=W missing=X extra=Y

extra counts jobs on the server whose identifier starts with P but that were
not expected.  With --wait, the state is polled until every expected job is
there with its value (or the time is up); the line is printed either way.
Exit status 0 when matching == expected and wrong == extra == 0.
"""
import argparse
import base64
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from kairoi_ctl import Control, compare_jobs  # noqa: E402

FMT = '%Y-%m-%d %H:%M:%S'


def expected_jobs(args):
    exp = {}
    for spec in args.expect:
        lo, hi, step, base = spec.split(':', 3)
        t0 = datetime.datetime.strptime(base, FMT)
        for g in range(int(lo), int(hi) + 1):
            ident = (args.prefix + str(g)).encode()
            exp[ident] = (t0 + datetime.timedelta(seconds=g * int(step))).strftime(FMT).encode()
    for item in args.id:
        ident, _, execution = item.partition('=')
        exp[ident.encode()] = execution.encode()
    return exp


def compare(ctl, exp, prefix):
    state = ctl.state(raw=True)
    jobs = {base64.b64decode(k): base64.b64decode(v) for k, v in state['jobs_b64'].items()}
    # extra jobs count only under the prefix: other scenarios share the server
    relevant = {k: v for k, v in jobs.items() if k in exp or k.startswith(prefix)}
    missing, wrong, extra = compare_jobs(exp, relevant)
    return len(exp) - len(missing) - len(wrong), len(wrong), len(missing), len(extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--prefix', required=True)
    ap.add_argument('--expect', action='append', default=[])
    ap.add_argument('--id', action='append', default=[])
    ap.add_argument('--wait', type=float, default=0)
    args = ap.parse_args()
    exp = expected_jobs(args)
    prefix = args.prefix.encode()
    deadline = time.monotonic() + args.wait
    with Control('127.0.0.1', args.port) as ctl:
        while True:
            matching, wrong, missing, extra = compare(ctl, exp, prefix)
            if matching == len(exp) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    print('expected=%d matching=%d wrong=%d missing=%d extra=%d'
          % (len(exp), matching, wrong, missing, extra))
    return 0 if (matching == len(exp) and wrong == 0 and extra == 0) else 1


if __name__ == '__main__':
    sys.exit(main())
