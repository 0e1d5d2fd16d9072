#!/usr/bin/python3
"""bench/wait_jobs.py: wait until the test server stores COUNT jobs; print elapsed time.

    python3 bench/wait_jobs.py --cport C --count N [--count M ...] --t0 EPOCH [--timeout S]

Polls the control port of test/kairoi_server.py (the cheap `counts` command)
every 5 ms. EPOCH is a wall-clock start time in seconds (`date +%s.%N` taken
right after the enqueueing transaction committed), so the start-up time of
this script is not added to the measurement. Prints the seconds from EPOCH
until the count was reached (with several --count, one line per count, in
increasing order of the counts, as each is reached); exits 2 on timeout.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test'))
from kairoi_ctl import Control  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--cport', type=int, required=True)
    ap.add_argument('--count', type=int, required=True, action='append')
    ap.add_argument('--t0', type=float, required=True)
    ap.add_argument('--timeout', type=float, default=600)
    a = ap.parse_args()
    ctl = Control(a.host, a.cport)
    deadline = time.monotonic() + a.timeout
    counts = sorted(a.count)
    while True:
        jobs = ctl.counts()['jobs']
        now = time.time()
        while counts and jobs >= counts[0]:
            print('%.4f' % (now - a.t0), flush=True)
            counts.pop(0)
        if not counts:
            return 0
        if time.monotonic() > deadline:
            print('timeout: %d of %d jobs after %.0f s' % (jobs, counts[-1], a.timeout),
                  file=sys.stderr)
            return 2
        time.sleep(0.005)


if __name__ == '__main__':
    sys.exit(main())
