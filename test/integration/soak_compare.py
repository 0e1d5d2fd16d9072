#!/usr/bin/python3
"""test/integration/soak_compare.py: compare the server's jobs with the committed state.

    python3 test/integration/soak_compare.py --cport C --expected FILE \
        [--prefix soak-] [--foreign PREFIX]...

FILE holds the committed state, one `identifier<TAB>execution` line per job
(psql -A -F tab output of soak_expected). The test server's jobs (control
`state`) whose identifier starts with PREFIX are compared with it. Jobs
starting with a --foreign prefix belong to another database (and its own
server): each of them on this server counts as foreign. Prints

    committed N, on server M, missing X, wrong Y, unexpected Z[, foreign F]

and up to 10 examples of each kind of difference; exits 0 only if nothing
is missing, wrong, unexpected or foreign and the counts are equal.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from kairoi_ctl import Control, compare_jobs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--cport', type=int, required=True)
    ap.add_argument('--expected', required=True)
    ap.add_argument('--prefix', default='soak-')
    ap.add_argument('--foreign', action='append', default=[])
    a = ap.parse_args()

    expected = {}
    with open(a.expected, encoding='utf-8') as f:
        for line in f:
            ident, _, execution = line.rstrip('\n').partition('\t')
            expected[ident] = execution
    jobs = Control(a.host, a.cport, timeout=120).state()['jobs']
    on_server = {k: v for k, v in jobs.items() if k.startswith(a.prefix)}
    foreign = sorted(k for k in jobs if any(k.startswith(p) for p in a.foreign))

    missing, wrong, unexpected = compare_jobs(expected, on_server)
    print('committed %d, on server %d, missing %d, wrong %d, unexpected %d%s'
          % (len(expected), len(on_server), len(missing), len(wrong), len(unexpected),
             ', foreign %d' % len(foreign) if a.foreign else ''))
    for k in missing[:10]:
        print('  missing %s (committed %s)' % (k, expected[k]))
    for k in wrong[:10]:
        print('  wrong %s: committed %s, server has %s' % (k, expected[k], on_server[k]))
    for k in unexpected[:10]:
        print('  unexpected %s = %s' % (k, on_server[k]))
    for k in foreign[:10]:
        print('  foreign %s = %s' % (k, jobs[k]))
    ok = (not missing and not wrong and not unexpected and not foreign
          and len(expected) == len(on_server))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
