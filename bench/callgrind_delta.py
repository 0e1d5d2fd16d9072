#!/usr/bin/python3
"""bench/callgrind_delta.py: where the instructions of one statement go.

    python3 bench/callgrind_delta.py SHORT LONG STATEMENTS [TOP]

SHORT and LONG are callgrind output files of the same single-user postgres
session shape, LONG running STATEMENTS more statements (or rows) than
SHORT.  Prints the TOP (default 25) functions whose inclusive instructions
(callgrind_annotate --inclusive=yes) grew the most, per statement: what
one more statement costs in each function and below it, start-up and
first-call lookups cancelled out.  Standard library only.
"""
import re
import subprocess
import sys

LINE = re.compile(r'^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$')


def inclusive(path):
    """{function: inclusive instructions} of a callgrind file."""
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100',
                          '--auto=no', path],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m and m.group(2) != 'PROGRAM TOTALS':
            # file:function [object] -> function (file and object dropped;
            # a name in two files keeps the larger)
            name = m.group(2).split(' [')[0].rsplit(':', 1)[-1]
            costs[name] = max(costs.get(name, 0), int(m.group(1).replace(',', '')))
    return costs


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    short, long_, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) == 5 else 25
    a, b = inclusive(short), inclusive(long_)
    delta = sorted(((b[f] - a.get(f, 0)) / count, f) for f in b)
    delta.reverse()
    for per, name in delta[:top]:
        print('%10.1fk  %s' % (per / 1000, name))


if __name__ == '__main__':
    main()
