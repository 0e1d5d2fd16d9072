#!/usr/bin/python3
"""Client for the control port of test/kairoi_server.py (library and CLI).

Library:
    from kairoi_ctl import Control
    c = Control('127.0.0.1', control_port)
    c.fault(drop_after=100, error_ids=['a'])
    c.wait_jobs(1000, timeout=30)
    c.state()['jobs']

CLI:
    python3 test/kairoi_ctl.py [--host H] --port C <command> [args]
    commands: ping | state | counts | count-jobs | count-rules | job ID | rule ID |
              requests | received | fault key=value ... | kick | reset |
              times [PREFIX] |
              wait-jobs N [--timeout S] | wait-up [--timeout S]
    fault values are JSON: fault refuse=true drop_after=100 error_ids='["a","b"]'
    (a value that is not valid JSON is taken as a string: garbage=line).
"""
import argparse
import base64
import json
import socket
import sys
import time


class ControlError(Exception):
    pass


class Control:
    def __init__(self, host='127.0.0.1', port=None, timeout=30.0):
        if port is None:
            raise ValueError('control port required')
        self.host = host
        self.port = int(port)
        self.timeout = timeout
        self._sock = None
        self._file = None

    # -- transport -----------------------------------------------------------
    def _connect(self):
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile('rwb')

    def close(self):
        if self._sock is not None:
            try:
                self._file.close()
                self._sock.close()
            except OSError:
                pass
        self._sock = self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, cmd, **kw):
        """Send one command, return the decoded answer; raise ControlError if not ok."""
        req = dict(kw, cmd=cmd)
        line = json.dumps(req).encode() + b'\n'
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self._connect()
                self._file.write(line)
                self._file.flush()
                ans = self._file.readline()
                if not ans:
                    raise ConnectionError('control connection closed')
                break
            except OSError:
                self.close()
                if attempt:
                    raise
        res = json.loads(ans)
        if not res.get('ok'):
            raise ControlError(res.get('error', res))
        return res

    # -- commands --------------------------------------------------------------
    def ping(self):
        return self.call('ping')

    def state(self, raw=False):
        return self.call('state', raw=True) if raw else self.call('state')

    def counts(self):
        """Like state() but jobs/rules are counts (cheap with many jobs)."""
        return self.call('counts')

    def job(self, ident):
        """Execution string of a job, or None."""
        res = self.call('job', id=ident)
        return res['execution'] if res['found'] else None

    def rule(self, ident):
        """[pattern, runner, args...] of a rule, or None."""
        res = self.call('rule', id=ident)
        return res['rule'] if res['found'] else None

    def times(self, prefix=''):
        """{job: epoch seconds it was last stored} (server run with --record-times)."""
        return self.call('times', prefix=prefix)['times']

    def requests(self, since=0):
        return self.call('requests', since=since)['requests']

    def requests_raw(self, since=0):
        """Raw bytes of each logged request line."""
        return [base64.b64decode(r['raw_b64']) for r in self.requests(since)]

    def received(self):
        return base64.b64decode(self.call('received')['raw_b64'])

    def fault(self, **kw):
        return self.call('fault', **kw)['faults']

    def kick(self):
        return self.call('kick')['closed']

    def reset(self):
        return self.call('reset')

    # -- helpers ---------------------------------------------------------------
    def wait_until(self, predicate, timeout=10.0, cmd='state'):
        """Poll `cmd` (state by default) every 20 ms until predicate(answer) is true.
        Returns the answer; raises TimeoutError(message, last_answer) on timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.call(cmd)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError('condition not met within %.1fs; last %s: %s'
                                   % (timeout, cmd, _short(last)), last)
            time.sleep(0.02)

    def wait_jobs(self, n, timeout=10.0):
        """Wait until at least n jobs are stored; returns the counts answer."""
        return self.wait_until(lambda s: s['jobs'] >= n, timeout, cmd='counts')

    def wait_rules(self, n, timeout=10.0):
        return self.wait_until(lambda s: s['rules'] >= n, timeout, cmd='counts')

    def wait_up(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ping()
            except (OSError, ValueError, ControlError):
                self.close()
                if time.monotonic() >= deadline:
                    raise TimeoutError('control port %s:%d not answering' % (self.host, self.port))
                time.sleep(0.02)


def compare_jobs(expected, jobs):
    """Compare the committed state {identifier: execution} with the jobs a
    server holds (same key and value types, str or bytes).  Returns sorted
    lists: missing identifiers, identifiers with a wrong execution, and
    unexpected identifiers."""
    missing = sorted(k for k in expected if k not in jobs)
    wrong = sorted(k for k in expected if k in jobs and jobs[k] != expected[k])
    unexpected = sorted(k for k in jobs if k not in expected)
    return missing, wrong, unexpected


def _short(obj, limit=2000):
    s = json.dumps(obj)
    return s if len(s) <= limit else s[:limit] + '...'


def _parse_value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def main(argv=None):
    ap = argparse.ArgumentParser(description='control the Kairoi test server')
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True, help='control port')
    ap.add_argument('--timeout', type=float, default=10.0)
    ap.add_argument('command')
    ap.add_argument('args', nargs='*')
    a = ap.parse_args(argv)
    c = Control(a.host, a.port)
    cmd, args = a.command, a.args
    try:
        if cmd == 'ping':
            c.ping()
            print('ok')
        elif cmd in ('state', 'counts'):
            print(json.dumps(c.call(cmd), indent=1, sort_keys=True, ensure_ascii=False))
        elif cmd == 'count-jobs':
            print(c.counts()['jobs'])
        elif cmd == 'count-rules':
            print(c.counts()['rules'])
        elif cmd == 'job':
            v = c.job(args[0])
            if v is None:
                return 1
            print(v)
        elif cmd == 'rule':
            v = c.rule(args[0])
            if v is None:
                return 1
            print(json.dumps(v, ensure_ascii=False))
        elif cmd == 'requests':
            print(json.dumps(c.requests(), ensure_ascii=False))
        elif cmd == 'times':
            print(json.dumps(c.times(args[0] if args else ''), sort_keys=True,
                             ensure_ascii=False))
        elif cmd == 'received':
            sys.stdout.buffer.write(c.received())
        elif cmd == 'fault':
            kw = {}
            for kv in args:
                k, sep, v = kv.partition('=')
                if not sep:
                    ap.error('fault arguments are key=value')
                kw[k] = _parse_value(v)
            print(json.dumps(c.fault(**kw), sort_keys=True))
        elif cmd == 'kick':
            print(c.kick())
        elif cmd == 'reset':
            c.reset()
            print('ok')
        elif cmd == 'wait-jobs':
            if not args:
                ap.error('wait-jobs N')
            print(c.wait_jobs(int(args[0]), a.timeout)['jobs'])
        elif cmd == 'wait-up':
            c.wait_up(a.timeout)
            print('ok')
        else:
            ap.error('unknown command %r' % cmd)
    except TimeoutError as e:
        print('timeout: %s' % e.args[0], file=sys.stderr)
        return 2
    except (ControlError, OSError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    finally:
        c.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
