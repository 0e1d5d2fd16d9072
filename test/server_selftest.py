#!/usr/bin/python3
"""Self-test of test/kairoi_server.py and test/kairoi_ctl.py.

Runs servers as subprocesses on free ports, drives them with raw sockets.
Prints one line per test and `N passed, M failed`; exit status 1 on failure.
Usage: python3 test/server_selftest.py [-k substring] [-v]
"""
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
from kairoi_ctl import Control, ControlError  # noqa: E402

SERVER = os.path.join(HERE, 'kairoi_server.py')
CTL = os.path.join(HERE, 'kairoi_ctl.py')
PY = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
D = b'"2030-01-01 00:00:00"'


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


class ServerProc:
    """A kairoi_server.py subprocess; killed by pid in stop()."""

    def __init__(self, tmp, *extra, data=None, port=None, cport=None):
        self.tmp = tmp
        self.extra = list(extra)
        self.data = data
        self.port = port or free_port()
        self.cport = cport or free_port()
        self.pidfile = os.path.join(tmp, 'server-%d.pid' % self.port)
        self.proc = None
        self.start()

    def start(self):
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)
        cmd = [PY, SERVER, '--port', str(self.port), '--control-port', str(self.cport),
               '--pidfile', self.pidfile] + self.extra
        if self.data:
            cmd += ['--data', self.data]
        self.proc = subprocess.Popen(cmd, stderr=open(os.path.join(self.tmp, 'server-%d.err' % self.port), 'ab'))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                raise RuntimeError('server exited with %s' % self.proc.returncode)
            if time.monotonic() > deadline:
                raise RuntimeError('server did not write its pid file')
            time.sleep(0.01)
        with open(self.pidfile) as f:
            assert int(f.read()) == self.proc.pid
        self.ctl = Control('127.0.0.1', self.cport)

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        if self.ctl:
            self.ctl.close()

    def connect(self, timeout=5.0):
        s = socket.create_connection(('127.0.0.1', self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


# ---------------------------------------------------------------- helpers
def read_lines(s, n, timeout=5.0):
    """Read n answer lines (bytes without '\n')."""
    s.settimeout(timeout)
    buf = b''
    deadline = time.monotonic() + timeout
    while buf.count(b'\n') < n:
        if time.monotonic() > deadline:
            raise AssertionError('timeout waiting for %d lines, got %r' % (n, buf[:300]))
        d = s.recv(65536)
        if not d:
            raise AssertionError('EOF after %r, wanted %d lines' % (buf[:300], n))
        buf += d
    lines = buf.split(b'\n')
    assert len(lines) == n + 1 and lines[-1] == b'', 'extra data: %r' % buf[-200:]
    return lines[:-1]


def read_until_eof(s, timeout=5.0):
    s.settimeout(timeout)
    buf = b''
    while True:
        d = s.recv(65536)
        if not d:
            return buf
        buf += d


def expect_silence(s, t=0.3):
    s.settimeout(t)
    try:
        d = s.recv(65536)
    except socket.timeout:
        return
    raise AssertionError('expected nothing, got %r' % d[:200])


def kcp(srv, payload, n):
    s = srv.connect()
    try:
        s.sendall(payload)
        return read_lines(s, n)
    finally:
        s.close()


def eq(a, b, what=''):
    assert a == b, '%s: %r != %r' % (what, a, b)


# ---------------------------------------------------------------- tests
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def t_simple_and_universal(ctx):
    srv = ctx.main
    out = kcp(srv, b'1 SET job1 ' + D + b'\n'
                   b'2 SET "job 2" "2030-12-31 23:59:59"\n'
                   b'3 SET "a\\\\b\\"c" ' + D + b'\n'
                   b'4 SET "multi\nline" ' + D + b'\n'
                   b'5 SET "" ' + D + b'\n'
                   b'6 RULE SET r1 "" shell "/tmp/my script.sh"\n'
                   b'7 RULE SET r2 pre amqp amqp://x ex "rk"\n', 7)
    eq(out, [b'1 OK', b'2 OK', b'3 OK', b'4 OK', b'5 OK', b'6 OK', b'7 OK'])
    st = srv.ctl.state()
    eq(st['jobs'], {'job1': '2030-01-01 00:00:00', 'job 2': '2030-12-31 23:59:59',
                    'a\\b"c': '2030-01-01 00:00:00', 'multi\nline': '2030-01-01 00:00:00',
                    '': '2030-01-01 00:00:00'})
    eq(st['rules'], {'r1': ['', 'shell', '/tmp/my script.sh'],
                     'r2': ['pre', 'amqp', 'amqp://x', 'ex', 'rk']})
    eq(st['applied'], 7)


@test
def t_separators(ctx):
    srv = ctx.main
    out = kcp(srv, b'1    SET   sp   ' + D + b'   \n   2 SET sp2 ' + D + b'\n', 2)
    eq(out, [b'1 OK', b'2 OK'])
    # TAB is not a separator: "SET\tx" is one (unknown) instruction
    eq(kcp(srv, b'3 SET\tx ' + D + b'\n', 1), [b'3 ERROR'])
    # a TAB inside a simple argument is data
    eq(kcp(srv, b'4 SET a\tb ' + D + b'\n', 1), [b'4 OK'])
    eq(set(srv.ctl.state()['jobs']), {'sp', 'sp2', 'a\tb'})


@test
def t_answer_repeats_decoded_id(ctx):
    srv = ctx.main
    eq(kcp(srv, b'"a b" SET j ' + D + b'\n', 1), [b'a b OK'])
    eq(kcp(srv, b'"q\\"x" SET j ' + D + b'\n', 1), [b'q"x OK'])
    eq(kcp(srv, b'"e r" set j ' + D + b'\n', 1), [b'e r ERROR'])
    eq(kcp(srv, b'i\xff SET j ' + D + b'\n', 1), [b'i\xef\xbf\xbd OK'])


@test
def t_pipelining(ctx):
    srv = ctx.main
    n = 2000
    s = srv.connect()
    s.sendall(b''.join(b'%x SET job%d ' % (i, i) + D + b'\n' for i in range(n)))
    lines = read_lines(s, n)
    s.close()
    eq(lines, [b'%x OK' % i for i in range(n)])   # valid requests are answered in order
    ctx.main.ctl.wait_jobs(n, 2)
    eq(srv.ctl.counts()['applied'], n)


@test
def t_error_overtakes(ctx):
    srv = ctx.main
    srv.ctl.fault(reply_delay_ms=300)
    s = srv.connect()
    s.sendall(b'v1 SET a ' + D + b'\nv2 SET b ' + D + b'\nbad SET c\n')
    lines = read_lines(s, 3)
    s.close()
    eq(lines[0], b'bad ERROR')
    eq(sorted(lines), [b'bad ERROR', b'v1 OK', b'v2 OK'])


@test
def t_drop_cases(ctx):
    srv = ctx.main
    cases = [b'onlyid\n', b'\n', b'    \n', b'1 SET "bad\\nescape" ' + D + b'\n',
             b'1 SET "bad\\x" ' + D + b'\n', b'"only quoted id"\n']
    for i, payload in enumerate(cases):
        s = srv.connect()
        s.sendall(payload + b'2 SET after ' + D + b'\n')
        got = read_until_eof(s)
        s.close()
        eq(got, b'', 'drop case %r' % payload)
        eq(srv.ctl.counts()['dropped'], i + 1)
    assert 'after' not in srv.ctl.state()['jobs']
    # requests before the malformed line are executed and answered, then FIN
    s = srv.connect()
    s.sendall(b'1 SET before ' + D + b'\n2\n3 SET after ' + D + b'\n')
    eq(read_until_eof(s), b'1 OK\n')
    s.close()
    eq(set(srv.ctl.state()['jobs']), {'before'})
    # the server carries on
    eq(kcp(srv, b'x SET ok ' + D + b'\n', 1), [b'x OK'])


@test
def t_error_cases(ctx):
    srv = ctx.main
    bad = [
        b'SETX j ' + D, b'set j ' + D, b'Set j ' + D, b'SET j', b'SET j ' + D + b' extra', b'SET',
        b'SET j "2030-01-01 00:00:00.5"', b'SET j "2030-01-01T00:00:00"',
        b'SET j "2030-01-01 00:00:00Z"', b'SET j "2030-01-01 00:00:00+00:00"',
        b'SET j "2030-01-01 00:00:00 UTC"', b'SET j 2030-01-01', b'SET j "2030-13-01 00:00:00"',
        b'SET j "2030-02-29 00:00:00"', b'SET j "2030-01-32 00:00:00"', b'SET j "2030-01-01 24:00:00"',
        b'SET j "2030-01-01 00:60:00"', b'SET j "2030-01-01 00:00:61"', b'SET j "12345-01-01 00:00:00"',
        b'SET j "2030-001-01 00:00:00"', b'SET j "2030-01-01  00:00:00"', b'SET j ""',
        b'SET j ' + D + b'\r',                                      # CRLF
        b'RULE SET r p', b'RULE SET r p shell', b'RULE SET r p shell a b', b'RULE SET r p ftp x',
        b'RULE SET r p amqp a b', b'RULE SET r p amqp a b c d', b'RULE GET r p shell x',
        b'RULE r p shell x', b'rule set r p shell x', b'RULE SET r p SHELL x',
        b'GET j', b'DEL j',
    ]
    payload = b''.join(b'e%d ' % i + b + b'\n' for i, b in enumerate(bad))
    lines = kcp(srv, payload, len(bad))
    eq(sorted(lines), sorted(b'e%d ERROR' % i for i in range(len(bad))))
    c = srv.ctl.counts()
    eq((c['jobs'], c['rules'], c['applied'], c['errors']), (0, 0, 0, len(bad)))


@test
def t_loose_dates(ctx):
    srv = ctx.main
    good = [b'2030-1-1 0:0:0', b'2030-06-30 23:59:60', b'2028-02-29 12:00:00', b'5-01-01 00:00:00',
            b'2262-04-12 00:00:00', b'0-01-01 00:00:00', b'-1-01-01 00:00:00', b'1600-2-29 1:2:3']
    payload = b''.join(b'd%d SET j%d "%s"\n' % (i, i, d) for i, d in enumerate(good))
    eq(kcp(srv, payload, len(good)), [b'd%d OK' % i for i in range(len(good))])
    jobs = srv.ctl.state()['jobs']
    eq(jobs, {'j%d' % i: d.decode() for i, d in enumerate(good)})


@test
def t_no_amqp(ctx):
    srv = ServerProc(ctx.tmp, '--no-amqp')
    try:
        eq(kcp(srv, b'1 RULE SET r p amqp a b c\n2 RULE SET r p shell s\n', 2), [b'1 ERROR', b'2 OK'])
    finally:
        srv.kill()


@test
def t_unterminated_waits(ctx):
    srv = ctx.main
    s = srv.connect()
    s.sendall(b'1 SET "abc\n2 SET b x\n')
    expect_silence(s, 0.4)
    s.sendall(b'def" ' + D + b'\n')
    eq(read_lines(s, 1), [b'1 OK'])
    s.close()
    eq(srv.ctl.state()['jobs'], {'abc\n2 SET b x\ndef': '2030-01-01 00:00:00'})
    # a quote split byte by byte, escapes across writes
    s = srv.connect()
    for b in b'7 SET "x\\"y\\\\z" ' + D + b'\n':
        s.send(bytes([b]))
        time.sleep(0.001)
    eq(read_lines(s, 1), [b'7 OK'])
    s.close()
    assert 'x"y\\z' in srv.ctl.state()['jobs']


@test
def t_invalid_utf8_nul_cr(ctx):
    srv = ctx.main
    eq(kcp(srv, b'1 SET j\xff\xfe ' + D + b'\n2 SET a\x00b\rc ' + D + b'\n', 2), [b'1 OK', b'2 OK'])
    st = srv.ctl.state(raw=True)
    eq(set(st['jobs']), {'j\ufffd\ufffd', 'a\x00b\rc'})
    raw_ids = {base64.b64decode(k) for k in st['jobs_b64']}
    eq(raw_ids, {b'j\xff\xfe', b'a\x00b\rc'})


@test
def t_requests_and_received(ctx):
    srv = ctx.main
    a = b'r1 SET  "x y" ' + D + b'\n'
    b = b'r2 BAD\n'
    c = b'r3 SET "multi\nline" ' + D + b'\n'
    s = srv.connect()
    s.sendall(a + b[:3])
    time.sleep(0.05)
    s.sendall(b[3:] + c)
    read_lines(s, 3)
    s.close()
    eq(srv.ctl.received(), a + b + c)
    reqs = srv.ctl.requests()
    eq([base64.b64decode(r['raw_b64']) for r in reqs], [a, b, c])
    eq(reqs[0]['args'], ['r1', 'SET', 'x y', '2030-01-01 00:00:00'])
    eq(reqs[2]['args'], ['r3', 'SET', 'multi\nline', '2030-01-01 00:00:00'])
    assert reqs[0]['conn'] == reqs[2]['conn']
    # exact bytes, including junk
    srv.ctl.reset()
    junk = b'1 SET "' + bytes(b for b in range(256) if b not in b'"\\') + b'" ' + D + b'\n'
    s = srv.connect()
    s.sendall(junk)
    read_lines(s, 1)
    s.close()
    eq(srv.ctl.received(), junk)


@test
def t_fault_refuse(ctx):
    srv = ctx.main
    s = srv.connect()
    eq(kcp(srv, b'1 SET a ' + D + b'\n', 1), [b'1 OK'])
    srv.ctl.fault(refuse=True)
    eq(read_until_eof(s), b'')
    s.close()
    try:
        srv.connect().close()
        raise AssertionError('connect succeeded while refusing')
    except ConnectionRefusedError:
        pass
    srv.ctl.fault(refuse=False)
    eq(kcp(srv, b'2 SET b ' + D + b'\n', 1), [b'2 OK'])
    # reset also reopens
    srv.ctl.fault(refuse=True)
    srv.ctl.reset()
    eq(kcp(srv, b'3 SET c ' + D + b'\n', 1), [b'3 OK'])


@test
def t_fault_drop_after(ctx):
    srv = ctx.main
    srv.ctl.fault(drop_after=3)
    s = srv.connect()
    s.sendall(b''.join(b'%d SET j%d ' % (i, i) + D + b'\n' for i in range(1, 6)))
    eq(read_until_eof(s), b'1 OK\n2 OK\n')
    s.close()
    eq(set(srv.ctl.state()['jobs']), {'j1', 'j2'})
    eq(srv.ctl.counts()['dropped'], 1)
    # counted per connection: a fresh connection gets 2 more
    s = srv.connect()
    s.sendall(b'a SET x ' + D + b'\n')
    eq(read_lines(s, 1), [b'a OK'])
    s.sendall(b'b SET y ' + D + b'\n')
    eq(read_lines(s, 1), [b'b OK'])
    s.sendall(b'c SET z ' + D + b'\n')
    eq(read_until_eof(s), b'')
    s.close()
    srv.ctl.fault(drop_after=None)
    eq(kcp(srv, b''.join(b'%d SET k ' % i + D + b'\n' for i in range(10)), 10)[-1], b'9 OK')


@test
def t_fault_stall(ctx):
    srv = ctx.main
    s1 = srv.connect()
    eq(kcp(srv, b'0 SET a ' + D + b'\n', 1), [b'0 OK'])
    srv.ctl.fault(stall=True)
    s2 = srv.connect()
    s1.sendall(b'1 SET b ' + D + b'\n')
    s2.sendall(b'2 SET c ' + D + b'\n')
    expect_silence(s1, 0.3)
    expect_silence(s2, 0.1)
    c = srv.ctl.counts()
    eq((c['jobs'], c['accepted']), (1, 3))
    eq(srv.ctl.received(), b'0 SET a ' + D + b'\n')   # nothing read while stalled
    srv.ctl.fault(stall=False)
    eq(read_lines(s1, 1), [b'1 OK'])
    eq(read_lines(s2, 1), [b'2 OK'])
    s1.close()
    s2.close()


@test
def t_fault_error_ids(ctx):
    srv = ctx.main
    srv.ctl.fault(error_ids=['bad', 'rbad', 'b\u00e9'])
    out = kcp(srv, b'1 SET good ' + D + b'\n2 SET bad ' + D + b'\n3 RULE SET rbad "" shell s\n'
                   b'4 RULE SET rgood "" shell s\n5 SET b\xc3\xa9 ' + D + b'\n', 5)
    eq(out, [b'1 OK', b'2 ERROR', b'3 ERROR', b'4 OK', b'5 ERROR'])
    st = srv.ctl.state()
    eq((set(st['jobs']), set(st['rules']), st['applied'], st['errors']), ({'good'}, {'rgood'}, 2, 3))


@test
def t_fault_garbage(ctx):
    srv = ctx.main
    srv.ctl.fault(garbage='line')
    eq(kcp(srv, b'1 SET a ' + D + b'\n2 SET b\n', 2), [b'%%% not kcp %%%'] * 2)
    srv.ctl.fault(garbage='unknown_id')
    eq(kcp(srv, b'1 SET c ' + D + b'\n', 1), [b'zzzzzzzzzzzzz OK'])
    srv.ctl.fault(garbage='half_line')
    s = srv.connect()
    s.sendall(b'abc SET d ' + D + b'\nabd SET e ' + D + b'\n')
    eq(read_until_eof(s), b'abc')
    s.close()
    s = srv.connect()
    s.sendall(b'abcd SET\n')   # an immediate ERROR is cut too
    eq(read_until_eof(s), b'abcd ')
    s.close()
    eq(set(srv.ctl.state()['jobs']), {'a', 'c', 'd'})
    srv.ctl.fault(garbage=None)
    eq(kcp(srv, b'1 SET f ' + D + b'\n', 1), [b'1 OK'])


@test
def t_kick(ctx):
    srv = ctx.main
    s1, s2 = srv.connect(), srv.connect()
    s1.sendall(b'1 SET a ' + D + b'\n')
    read_lines(s1, 1)
    srv.ctl.wait_until(lambda c: c['connections'] == 2, 2, cmd='counts')
    eq(srv.ctl.kick(), 2)
    eq(read_until_eof(s1), b'')
    eq(read_until_eof(s2), b'')
    s1.close()
    s2.close()
    srv.ctl.wait_until(lambda c: c['connections'] == 0, 2, cmd='counts')
    eq(kcp(srv, b'2 SET b ' + D + b'\n', 1), [b'2 OK'])


@test
def t_slow_read_and_reply_delay(ctx):
    srv = ctx.main
    srv.ctl.fault(slow_read=40000)
    line = b'%06d SET job%06d ' + D + b'\n'
    n = 1000
    payload = b''.join(line % (i, i) for i in range(n))      # 41 KB -> ~1 s
    s = srv.connect(timeout=30)
    t0 = time.monotonic()
    threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
    read_lines(s, n, timeout=30)
    dt = time.monotonic() - t0
    s.close()
    assert 0.7 < dt < 10, 'slow_read took %.2fs' % dt
    srv.ctl.fault(slow_read=None, reply_delay_ms=150)
    s = srv.connect()
    t0 = time.monotonic()
    s.sendall(b'1 SET x ' + D + b'\n')
    read_lines(s, 1)
    dt = time.monotonic() - t0
    s.close()
    assert 0.14 < dt < 2, 'reply_delay took %.3fs' % dt


def burst_ms(s, n, base, quickack):
    """Send n SETs in one write, read all n answers; milliseconds taken."""
    data = b''.join(b'%x SET nagle-%d ' % (base + i, base + i) + D + b'\n' for i in range(n))
    t0 = time.monotonic()
    s.sendall(data)
    lines = b''
    while lines.count(b'\n') < n:
        d = s.recv(65536)
        if not d:
            raise AssertionError('EOF after %r' % lines[:200])
        if quickack:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # Linux clears it
        lines += d
    ms = (time.monotonic() - t0) * 1000
    eq(sorted(lines.split(b'\n')[:-1]),
       sorted(b'%x OK' % (base + i) for i in range(n)), 'answers')
    return ms


@test
def t_reference_replies_nagle(ctx):
    """--reference-replies: one write per reply with Nagle on, so a client that
    delays its ACKs waits ~40 ms more for every burst of 2+ requests than one
    re-arming TCP_QUICKACK after each read (kcp.md, "Speed")."""
    srv = ServerProc(ctx.tmp, '--reference-replies')
    tries = 7
    try:
        srv.ctl.fault(reply_delay_ms=8)
        medians = {}
        for quickack in (False, True):
            s = srv.connect()
            base = 0
            try:
                for _ in range(3):                  # past the connection's first ACKs
                    burst_ms(s, 1, base, quickack)
                    base += 1
                for n in (1, 2, 10, 28):
                    v = []
                    for _ in range(tries):
                        v.append(burst_ms(s, n, base, quickack))
                        base += n
                        time.sleep(0.01)
                    medians[quickack, n] = sorted(v)[tries // 2]
            finally:
                s.close()
        single = min(medians[False, 1], medians[True, 1])
        for n in (2, 10, 28):
            stall = medians[False, n] - single
            assert stall > 25, 'burst of %d without quick ACKs: only %.1f ms more than one ' \
                'request (%.1f ms)' % (n, stall, single)
            assert medians[True, n] - single < 5, 'burst of %d with quick ACKs: %.1f ms, ' \
                'one request %.1f ms' % (n, medians[True, n], single)
        ctx.note = 'median ms, 1/2/10/28 requests: delayed ACK %s, quick ACK %s' % (
            '/'.join('%.1f' % medians[False, n] for n in (1, 2, 10, 28)),
            '/'.join('%.1f' % medians[True, n] for n in (1, 2, 10, 28)))
    finally:
        srv.kill()


@test
def t_reference_replies_errors_in_order(ctx):
    """--reference-replies keeps the protocol: ERRORs overtake, all answered."""
    srv = ServerProc(ctx.tmp, '--reference-replies')
    try:
        srv.ctl.fault(reply_delay_ms=100)
        s = srv.connect()
        try:
            s.sendall(b'1 SET a ' + D + b'\n2 BOGUS x y\n3 SET b ' + D + b'\n4 SET c bad\n')
            out = read_lines(s, 4)
        finally:
            s.close()
        eq(out, [b'2 ERROR', b'4 ERROR', b'1 OK', b'3 OK'], 'order')
    finally:
        srv.kill()


def answer_times(s, data, n):
    """Send data (n SETs) in one write, read the n answers re-arming
    TCP_QUICKACK; (ms to the first answer, ms to the last)."""
    t0 = time.monotonic()
    s.sendall(data)
    got = 0
    first = None
    while got < n:
        d = s.recv(65536)
        if not d:
            raise AssertionError('EOF after %d answers' % got)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if first is None:
            first = time.monotonic()
        got += d.count(b'\n')
    return (first - t0) * 1000, (time.monotonic() - t0) * 1000


@test
def t_reference_pace(ctx):
    """--reference-pace: replies reach the client in frames (128 a second) and
    one request is handed on per turn, so the answers of a write of 28 are
    often split across two frames, one request waits up to a frame, and an
    ERROR (rejected before execution) still comes at once; a write that
    arrives while earlier requests are unanswered counts as overlapped."""
    srv = ServerProc(ctx.tmp, '--reference-pace')
    try:
        s = srv.connect()
        try:
            rid = 0
            singles, spans = [], []
            for k in range(12):
                time.sleep(0.01)
                _, ms = answer_times(s, b'%x SET one-%d ' % (rid, rid) + D + b'\n', 1)
                rid += 1
                singles.append(ms)
                time.sleep(k * 0.00065)     # that answer came at a frame: vary the phase
                data = b''.join(b'%x SET p-%d ' % (rid + i, rid + i) + D + b'\n' for i in range(28))
                first, last = answer_times(s, data, 28)
                rid += 28
                spans.append(last - first)
            assert max(singles) < 1000.0 / 128 + 5, 'one request took %.1f ms' % max(singles)
            assert max(spans) > 4, 'the answers of a write of 28 never spanned two frames: %s' % (
                ['%.1f' % x for x in spans])
            t0 = time.monotonic()
            s.sendall(b'e1 BOGUS a b\n')
            eq(read_lines(s, 1), [b'e1 ERROR'], 'error')
            error_ms = (time.monotonic() - t0) * 1000
            assert error_ms < 3, 'an ERROR took %.1f ms' % error_ms
            eq(srv.ctl.counts()['overlapped_reads'], 0, 'overlapped reads so far')
            # 100 turns outlast a frame: the first answers come while later
            # requests are still being handed on
            data = b''.join(b'%x SET q-%d ' % (rid + i, rid + i) + D + b'\n' for i in range(100))
            s.sendall(data)
            read_lines(s, 1)
            s.sendall(b'z SET q-last ' + D + b'\n')
            read_lines(s, 100)
            eq(srv.ctl.counts()['overlapped_reads'], 1, 'overlapped reads')
        finally:
            s.close()
        ctx.note = 'one request %.1f-%.1f ms; first to last answer of 28: median %.1f, max %.1f ms' % (
            min(singles), max(singles), sorted(spans)[len(spans) // 2], max(spans))
    finally:
        srv.kill()


def straddle_payload(prefix_len, job, lead_offset_in_line):
    """Padding SETs so that the line `p SET <job> D` starts at prefix_len."""
    pad = []
    total = 0
    i = 0
    while prefix_len - total > 80:
        ln = b'%d SET pad%d ' % (i, i) + D + b'\n'
        pad.append(ln)
        total += len(ln)
        i += 1
    rest = prefix_len - total
    base = len(b'z SET  ' + D + b'\n')
    pad.append(b'z SET ' + b'q' * (rest - base) + b' ' + D + b'\n')
    data = b''.join(pad)
    assert len(data) == prefix_len, (len(data), prefix_len)
    return data + b'p SET ' + job + b' ' + D + b'\n', i + 2


@test
def t_split_reads(ctx):
    srv = ServerProc(ctx.tmp, '--split-reads')
    try:
        job = 'x\u00e9y\u20acw'.encode()   # C3 A9 at offset 1, E2 82 AC at offset 4
        # alone, in one write: intact
        eq(kcp(srv, b'1 SET ' + job + b' ' + D + b'\n', 1), [b'1 OK'])
        eq(set(srv.ctl.state()['jobs']), {'x\u00e9y\u20acw'})
        # the line 'p SET <job> ...' has the job at offset 6; the read boundary is at 2048
        for cut, expect in ((2048 - 6 - 2, 'x\ufffd\u00e9y\u20acw'),     # split C3 | A9
                            (2048 - 6 - 5, 'x\u00e9y\ufffd\u20acw'),     # split E2 | 82 AC
                            (2048 - 6 - 6, 'x\u00e9y\ufffd\u20acw'),     # split E2 82 | AC
                            (2048 - 6 - 4, 'x\u00e9y\u20acw'),            # boundary before E2
                            (2048 - 6 - 7, 'x\u00e9y\u20acw')):           # boundary before w
            srv.ctl.reset()
            payload, n = straddle_payload(cut, job, 0)
            srv.ctl.fault(stall=True)          # let the whole write queue up, then read it
            s = srv.connect()
            s.sendall(payload)
            time.sleep(0.2)
            srv.ctl.fault(stall=False)
            lines = read_lines(s, n)
            s.close()
            eq(lines[-1], b'p OK')
            jobs = srv.ctl.state(raw=True)
            stored = [k for k in jobs['jobs'] if k.startswith('x')]
            eq(stored, [expect], 'cut at %d' % cut)
            if expect != 'x\u00e9y\u20acw':
                raw = [base64.b64decode(k) for k in jobs['jobs_b64']
                       if base64.b64decode(k).startswith(b'x')]
                eq(raw, [expect.encode()], 'raw bytes keep the char plus EF BF BD')
        # the same straddling stream to a normal server: intact
        payload, n = straddle_payload(2048 - 6 - 2, job, 0)
        s = ctx.main.connect()
        s.sendall(payload)
        read_lines(s, n)
        s.close()
        assert 'x\u00e9y\u20acw' in ctx.main.ctl.state()['jobs']
    finally:
        srv.kill()


@test
def t_record_times(ctx):
    """--record-times: when each job was stored, on the machine's wall clock."""
    try:
        ctx.main.ctl.times()
        raise AssertionError('times answered without --record-times')
    except ControlError as e:
        assert '--record-times' in str(e), e
    srv = ServerProc(ctx.tmp, '--record-times')
    try:
        srv.ctl.fault(reply_delay_ms=100)
        t0 = time.time()
        eq(kcp(srv, b'1 SET lat-a ' + D + b'\n2 SET other ' + D + b'\n', 2),
           [b'1 OK', b'2 OK'])
        t1 = time.time()
        times = srv.ctl.times('lat-')
        eq(sorted(times), ['lat-a'], 'prefix filter')
        assert t0 + 0.1 <= times['lat-a'] <= t1, (t0, times, t1)
        eq(sorted(srv.ctl.times()), ['lat-a', 'other'])
        srv.ctl.fault(reply_delay_ms=0)
        kcp(srv, b'3 SET lat-a ' + D + b'\n', 1)
        assert srv.ctl.times('lat-')['lat-a'] >= t1, 'a re-plan records the new time'
        srv.ctl.reset()
        eq(srv.ctl.times(), {})
    finally:
        srv.kill()


@test
def t_persistence(ctx):
    data = os.path.join(ctx.tmp, 'data')
    srv = ServerProc(ctx.tmp, '--fsync', data=data)
    try:
        n = 500
        payload = b''.join(b'%d SET job%d "2030-01-01 00:00:%02d"\n' % (i, i % 300, i % 60)
                           for i in range(n))
        payload += b'r1 RULE SET r1 "" shell "/x y"\nr2 RULE SET r2 pre amqp d e f\n'
        payload += b'w SET w\xff\xfe ' + D + b'\n'
        lines = kcp(srv, payload, n + 3)
        assert all(ln.endswith(b' OK') for ln in lines)
        before = srv.ctl.state(raw=True)
        srv.kill(signal.SIGKILL)
        srv.start()
        after = srv.ctl.state(raw=True)
        for k in ('jobs', 'rules', 'jobs_b64', 'rules_b64'):
            eq(after[k], before[k], k)
        eq(len(after['jobs']), 301)
        # changes after restart are appended; reset clears the log
        eq(kcp(srv, b'1 SET job0 "2031-01-01 00:00:00"\n', 1), [b'1 OK'])
        srv.kill(signal.SIGKILL)
        srv.start()
        eq(srv.ctl.job('job0'), '2031-01-01 00:00:00')
        srv.ctl.reset()
        srv.kill(signal.SIGKILL)
        srv.start()
        eq(srv.ctl.counts()['jobs'], 0)
    finally:
        srv.kill()


@test
def t_sigterm(ctx):
    srv = ServerProc(ctx.tmp)
    s = srv.connect()
    s.sendall(b'1 SET a ' + D + b'\n')
    read_lines(s, 1)
    t0 = time.monotonic()
    os.kill(srv.proc.pid, signal.SIGTERM)
    rc = srv.proc.wait(5)
    eq(rc, 0)
    assert time.monotonic() - t0 < 2
    assert not os.path.exists(srv.pidfile)
    eq(read_until_eof(s), b'')
    s.close()


@test
def t_control_misc(ctx):
    srv = ctx.main
    c = srv.ctl
    try:
        c.call('nope')
        raise AssertionError('unknown command accepted')
    except Exception as e:   # ControlError
        assert 'unknown' in str(e)
    try:
        c.fault(bogus=1)
        raise AssertionError('unknown fault accepted')
    except Exception as e:
        assert 'bogus' in str(e)
    f = c.fault(drop_after=5, error_ids=['a'])
    eq((f['drop_after'], f['error_ids'], f['refuse']), (5, ['a'], False))
    c.reset()
    eq(c.fault()['drop_after'], None)
    # many commands on one raw connection
    s = socket.create_connection(('127.0.0.1', srv.cport))
    s.sendall(b'{"cmd":"ping"}\n{"cmd":"counts"}\n')
    eq(read_lines(s, 2)[0], b'{"ok": true}')
    s.close()
    try:
        c.wait_jobs(1, 0.1)
        raise AssertionError('wait_jobs did not time out')
    except TimeoutError as e:
        assert e.args[1]['jobs'] == 0


@test
def t_ctl_cli(ctx):
    srv = ctx.main
    kcp(srv, b'1 SET "a b" ' + D + b'\n2 RULE SET r "" shell s\n', 2)

    def cli(*args):
        p = subprocess.run([PY, CTL, '--port', str(srv.cport)] + list(args),
                           capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout.strip()
    eq(cli('ping'), (0, 'ok'))
    eq(cli('wait-up', '--timeout', '2'), (0, 'ok'))
    eq(cli('count-jobs'), (0, '1'))
    eq(cli('count-rules'), (0, '1'))
    eq(cli('job', 'a b'), (0, '2030-01-01 00:00:00'))
    eq(cli('job', 'nope')[0], 1)
    eq(cli('rule', 'r'), (0, '["", "shell", "s"]'))
    eq(cli('rule', 'nope')[0], 1)
    rc, out = cli('fault', 'drop_after=100', 'error_ids=["x","y"]', 'garbage=line')
    eq(rc, 0)
    assert '"drop_after": 100' in out and '"garbage": "line"' in out, out
    eq(cli('reset'), (0, 'ok'))
    eq(cli('wait-jobs', '1', '--timeout', '0.3')[0], 2)
    threading.Timer(0.3, lambda: kcp(srv, b'1 SET j ' + D + b'\n', 1)).start()
    eq(cli('wait-jobs', '1', '--timeout', '5'), (0, '1'))
    rc, out = cli('state')
    assert rc == 0 and '"jobs"' in out
    eq(cli('kick'), (0, '0'))


@test
def t_client_fin_drops_unexecuted(ctx):
    """On client FIN, requests not yet executed are dropped (kcp.md part 2)."""
    srv = ctx.main
    srv.ctl.fault(reply_delay_ms=300)
    s = srv.connect()
    s.sendall(b'1 SET a ' + D + b'\n')
    time.sleep(0.1)
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.5)
    s.close()
    eq(srv.ctl.counts()['jobs'], 0)


@test
def t_throughput(ctx):
    srv = ctx.main
    n = 100000
    reqs = [b'%x SET job-%d ' % (i, i) + D + b'\n' for i in range(n)]
    s = srv.connect(timeout=60)
    got = [0]

    def reader():
        while got[0] < n:
            d = s.recv(1 << 20)
            if not d:
                break
            got[0] += d.count(b'\n')
    t = threading.Thread(target=reader)
    t0 = time.monotonic()
    t.start()
    for i in range(0, n, 1000):
        s.sendall(b''.join(reqs[i:i + 1000]))
    t.join(60)
    dt = time.monotonic() - t0
    s.close()
    eq(got[0], n)
    rate = n / dt
    ctx.note = '%d pipelined SET/s on one connection' % rate
    assert rate >= 20000, 'only %d SET/s' % rate


class Ctx:
    pass


def main():
    args = sys.argv[1:]
    only = None
    if '-k' in args:
        only = args[args.index('-k') + 1]
    verbose = '-v' in args
    passed = failed = 0
    servers = []
    with tempfile.TemporaryDirectory(prefix='kairoi-selftest-') as tmp:
        ctx = Ctx()
        ctx.tmp = tmp
        try:
            ctx.main = ServerProc(tmp)
            servers.append(ctx.main)
            for fn in TESTS:
                if only and only not in fn.__name__:
                    continue
                ctx.note = ''
                ctx.main.ctl.reset()
                t0 = time.monotonic()
                try:
                    fn(ctx)
                    passed += 1
                    print('PASS %-32s %5.2fs %s' % (fn.__name__, time.monotonic() - t0, ctx.note),
                          flush=True)
                except Exception as e:   # noqa: BLE001
                    failed += 1
                    print('FAIL %-32s %s: %s' % (fn.__name__, type(e).__name__, e), flush=True)
                    if verbose:
                        traceback.print_exc()
                    if ctx.main.proc.poll() is not None:
                        print('main server died; restarting', flush=True)
                        ctx.main.start()
        finally:
            for s in servers:
                s.kill()
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
