#!/usr/bin/python3
"""Print what the test server holds as CSV, for psql's \\copy ... FROM PROGRAM.

    python3 test/server_to_csv.py --port CONTROL_PORT jobs
        identifier,execution                      (one row per stored job)
    python3 test/server_to_csv.py --port CONTROL_PORT rules
        identifier,pattern,runner,arguments      (arguments as a text[] literal)
    python3 test/server_to_csv.py --port CONTROL_PORT requests
        position,instruction,identifier           (every request line received)

Strings are the exact stored bytes decoded as UTF-8, so the regression tests
can compare them with what they scheduled, byte for byte.
"""
import argparse
import base64
import csv
import sys

sys.path.insert(0, __import__('os').path.dirname(__file__))
from kairoi_ctl import Control  # noqa: E402


def array_literal(items):
    quoted = ('"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"' for s in items)
    return '{' + ','.join(quoted) + '}'


def decode(b64):
    return base64.b64decode(b64).decode('utf-8', errors='replace')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', required=True, type=int)
    parser.add_argument('what', choices=['jobs', 'rules', 'requests'])
    args = parser.parse_args()
    out = csv.writer(sys.stdout, lineterminator='\n', quoting=csv.QUOTE_ALL)
    with Control('127.0.0.1', args.port) as control:
        if args.what == 'jobs':
            for ident, execution in control.state(raw=True)['jobs_b64'].items():
                out.writerow([decode(ident), decode(execution)])
        elif args.what == 'rules':
            for ident, rule in control.state(raw=True)['rules_b64'].items():
                fields = [decode(f) for f in rule]
                out.writerow([decode(ident), fields[0], fields[1], array_literal(fields[2:])])
        else:
            for position, request in enumerate(control.requests(), 1):
                fields = request['args'][1:]  # after the request id
                if fields[:2] == ['RULE', 'SET']:
                    out.writerow([position, 'RULE SET', fields[2] if len(fields) > 2 else ''])
                else:
                    out.writerow([position, fields[0] if fields else '', fields[1] if len(fields) > 1 else ''])


if __name__ == '__main__':
    main()
