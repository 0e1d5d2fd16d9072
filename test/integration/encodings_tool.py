#!/usr/bin/python3
"""Byte-exact checks of what a Kairoi test server holds, for encodings.sh.

    encodings_tool.py check-job --port C (--id-expr E | --id-hex H) --exec S
        prints "ok", "missing" or "wrong <hex of the stored execution>"
        (E is a Python expression giving a str, sent as UTF-8; exit 0 if ok)
    encodings_tool.py check-rule --port C --id-expr E --args-expr E
        args: a Python list of str (pattern, runner, runner arguments)
    encodings_tool.py find-job --port C --id-expr E
        prints the hex of the stored identifiers that contain E's UTF-8
        bytes (to show what a wrong conversion produced)
    encodings_tool.py split-check --port C --n N
        jobs 'ジョブ-<g>-é' (g = 1..N) with execution 2030-01-01 00:00:00 + g s:
        prints "intact=I corrupted=C missing=M fffd=F"
        (--kind mix: 'mix-<g>' for odd g, 'ミックス-<g>-ü' for even g)
    encodings_tool.py split-control --port P --cport C --n N
        sends those N SETs pipelined in ONE write on a raw socket, reads the
        N answers, then prints the split-check line for that server
    encodings_tool.py injection-sql
        SQL calls, one per line, each scheduling a hostile string in one
        argument position
    encodings_tool.py injection-check --port C
        the server's request log holds exactly one request per call above,
        with the literal arguments, and only the expected jobs and rules
"""
import argparse
import base64
import datetime
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from kairoi_ctl import Control  # noqa: E402

FFFD = '\ufffd'.encode()


def raw_jobs(ctl):
    st = ctl.state(raw=True)
    return {base64.b64decode(k): base64.b64decode(v) for k, v in st['jobs_b64'].items()}


def raw_rules(ctl):
    st = ctl.state(raw=True)
    return {base64.b64decode(k): [base64.b64decode(x) for x in v]
            for k, v in st['rules_b64'].items()}


def ident_bytes(args):
    if args.id_hex is not None:
        return bytes.fromhex(args.id_hex)
    v = eval(args.id_expr)  # noqa: S307 - test code, expressions written in encodings.sh
    return v if isinstance(v, bytes) else v.encode('utf-8')


# -- split reads ---------------------------------------------------------------
BASE = datetime.datetime(2030, 1, 1)


KIND = 'split'


def split_ident(g):
    if KIND == 'mix':       # odd: ASCII, even: non-ASCII
        return ('mix-%d' % g if g % 2 else 'ミックス-%d-ü' % g).encode('utf-8')
    return ('ジョブ-%d-é' % g).encode('utf-8')


def split_exec(g):
    return (BASE + datetime.timedelta(seconds=g)).strftime('%Y-%m-%d %H:%M:%S').encode()


def split_summary(cport, n):
    with Control('127.0.0.1', cport) as ctl:
        jobs = raw_jobs(ctl)
    intact = missing = 0
    for g in range(1, n + 1):
        if jobs.get(split_ident(g)) == split_exec(g):
            intact += 1
        elif split_ident(g) not in jobs:
            missing += 1
    expected = {split_ident(g) for g in range(1, n + 1)}
    corrupted = sum(1 for k in jobs if k not in expected)
    fffd = sum(1 for k in jobs if FFFD in k)
    return 'intact=%d corrupted=%d missing=%d fffd=%d' % (intact, corrupted, missing, fffd)


def split_control(port, cport, n):
    lines = b''.join(b'%x SET %s "%s"\n' % (g, split_ident(g), split_exec(g))
                     for g in range(1, n + 1))
    s = socket.create_connection(('127.0.0.1', port), timeout=60)
    s.sendall(lines)           # one write: the server reads it 2048 bytes at a time
    got = b''
    deadline = time.monotonic() + 60
    while got.count(b'\n') < n and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    answers = got.count(b'\n')
    oks = got.count(b' OK\n')
    return 'answers=%d ok=%d %s' % (answers, oks, split_summary(cport, n))


# -- injection -----------------------------------------------------------------
PAYLOADS = [
    'x "2030-01-01 00:00:00"\n0 RULE SET evil "" shell /bin/sh',
    'y 2030-01-01 00:00:00\n1 RULE SET evil2 "" shell /bin/sh\n',
    'z\\" 0 RULE SET evil3 "" shell /bin/sh\n2 SET w "2030-01-01 00:00:00"\\',
    '"\r\n3 RULE SET evil4 "" shell /bin/sh\r\n',
]
EXEC = '2030-01-01 00:00:00'


def injection_calls():
    """(SQL call, expected KCP arguments after the request id, kind, id)"""
    calls = []
    for i, p in enumerate(PAYLOADS):
        n = 'inj%d-' % i
        calls += [
            ("kairoi_job_set(%s, '%s+00')" % (lit(p), EXEC), ['SET', p, EXEC]),
            ("kairoi_rule_set_shell(%s, %s, '/bin/true')" % (lit(n + 'pattern'), lit(p)),
             ['RULE', 'SET', n + 'pattern', p, 'shell', '/bin/true']),
            ("kairoi_rule_set_shell(%s, 'inj-', %s)" % (lit(n + 'script'), lit(p)),
             ['RULE', 'SET', n + 'script', 'inj-', 'shell', p]),
            ("kairoi_rule_set_amqp(%s, 'inj-', %s, 'ex', 'rk')" % (lit(n + 'dsn'), lit(p)),
             ['RULE', 'SET', n + 'dsn', 'inj-', 'amqp', p, 'ex', 'rk']),
            ("kairoi_rule_set_amqp(%s, 'inj-', 'amqp://h/', %s, 'rk')" % (lit(n + 'exchange'), lit(p)),
             ['RULE', 'SET', n + 'exchange', 'inj-', 'amqp', 'amqp://h/', p, 'rk']),
            ("kairoi_rule_set_amqp(%s, 'inj-', 'amqp://h/', 'ex', %s)" % (lit(n + 'key'), lit(p)),
             ['RULE', 'SET', n + 'key', 'inj-', 'amqp', 'amqp://h/', 'ex', p]),
            ("kairoi_rule_set(%s, 'inj-', 'shell', '/bin/true')" % lit(p),
             ['RULE', 'SET', p, 'inj-', 'shell', '/bin/true']),
            ("kairoi_rule_set(%s, 'inj-', 'amqp', %s, %s, %s)" % (lit(n + 'variadic'), lit(p), lit(p), lit(p)),
             ['RULE', 'SET', n + 'variadic', 'inj-', 'amqp', p, p, p]),
        ]
    return calls


def lit(s):
    """A standard-conforming SQL string literal (newlines kept as is)."""
    return "'" + s.replace("'", "''") + "'"


def injection_check(cport):
    calls = injection_calls()
    with Control('127.0.0.1', cport) as ctl:
        reqs = ctl.requests()
        jobs = raw_jobs(ctl)
        rules = raw_rules(ctl)
    got = sorted(tuple(r['args'][1:]) for r in reqs)
    want = sorted(tuple(a) for _, a in calls)
    problems = []
    if len(reqs) != len(calls):
        problems.append('%d requests for %d calls' % (len(reqs), len(calls)))
    if got != want:
        extra = [g for g in got if g not in want]
        missing = [w for w in want if w not in got]
        problems.append('unexpected requests %r; missing %r' % (extra[:3], missing[:3]))
    want_jobs = {a[1].encode(): a[2].encode() for _, a in calls if a[0] == 'SET'}
    if jobs != want_jobs:
        problems.append('jobs differ: %r' % sorted(jobs)[:5])
    want_rules = {a[2].encode(): [x.encode() for x in a[3:]] for _, a in calls if a[0] == 'RULE'}
    if rules != want_rules:
        problems.append('rules differ: %r' % sorted(rules)[:5])
    evil = [k for k in rules if k.startswith(b'evil')] + [k for k in jobs if k in (b'w', b'z')]
    if evil:
        problems.append('injected objects exist: %r' % evil)
    print('requests=%d calls=%d jobs=%d rules=%d injected=%d %s'
          % (len(reqs), len(calls), len(jobs), len(rules), len(evil),
             'ok' if not problems else 'PROBLEMS: ' + '; '.join(problems)))
    return 0 if not problems else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('command')
    ap.add_argument('--port', type=int)
    ap.add_argument('--cport', type=int)
    ap.add_argument('--id-expr')
    ap.add_argument('--id-hex')
    ap.add_argument('--args-expr')
    ap.add_argument('--exec')
    ap.add_argument('--n', type=int)
    ap.add_argument('--kind', choices=['split', 'mix'], default='split')
    a = ap.parse_args()
    global KIND
    KIND = a.kind
    if a.command == 'check-job':
        with Control('127.0.0.1', a.port) as ctl:
            got = raw_jobs(ctl).get(ident_bytes(a))
        if got is None:
            print('missing')
            return 1
        if got != a.exec.encode():
            print('wrong %s' % got.hex())
            return 1
        print('ok')
        return 0
    if a.command == 'check-rule':
        want = [x.encode('utf-8') for x in eval(a.args_expr)]  # noqa: S307
        with Control('127.0.0.1', a.port) as ctl:
            got = raw_rules(ctl).get(ident_bytes(a))
        if got is None:
            print('missing')
            return 1
        if got != want:
            print('wrong %s' % [x.hex() for x in got])
            return 1
        print('ok')
        return 0
    if a.command == 'find-job':
        needle = ident_bytes(a)
        with Control('127.0.0.1', a.port) as ctl:
            print(' '.join(k.hex() for k in raw_jobs(ctl) if needle in k))
        return 0
    if a.command == 'split-check':
        print(split_summary(a.port, a.n))
        return 0
    if a.command == 'split-control':
        print(split_control(a.port, a.cport, a.n))
        return 0
    if a.command == 'injection-sql':
        for call, _ in injection_calls():
            print('SELECT %s;' % call)
        return 0
    if a.command == 'injection-check':
        return injection_check(a.port)
    ap.error('unknown command')
    return 2


if __name__ == '__main__':
    sys.exit(main())
