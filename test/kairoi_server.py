#!/usr/bin/python3
"""Kairoi-compatible test server (KCP) with a JSON control port for fault injection.

Behaves like the reference Kairoi 0.1.0 server as observed in /work/shared/kcp.md
part 2 where tests depend on it; it has no runners (jobs are only stored).

Usage:
  python3 test/kairoi_server.py --port P --control-port C [--host 127.0.0.1]
      [--data DIR] [--fsync] [--pidfile FILE] [--no-amqp] [--split-reads]
      [--record-times] [--reference-replies] [--reference-pace]

--reference-replies answers like the reference server (kcp.md, "Speed"): each
reply goes out in its own write on a socket with Nagle's algorithm on (no
TCP_NODELAY), and each parsed request is handed on (or answered ERROR) on its
own, one per turn.  A client that delays its ACKs then gets the first reply
of a burst at once and the rest only after its delayed ACK (~40 ms on Linux).
Without it, replies are joined into one write on a TCP_NODELAY socket.

--reference-pace (implies --reference-replies) also keeps the reference
server's pace: each turn of a connection's reader hands on one request, then
waits TURN_S (the reference server's connection thread waits up to 100 us for
replies), and replies to executed requests reach the connection only at the
server's reply frames, FRAME_HZ (128) times a second, on a clock shared by all
connections (ERRORs for requests rejected before execution still go at once).
So a write of a few requests is answered in one or two frames, its first
answers before its last, and one request's round trip takes up to a frame
more than its execution.  It bounds a connection to ~5,000 requests a second:
for tests of pace, not of volume.  The counter `overlapped_reads` counts reads
that brought requests while requests read earlier on the same connection were
still unanswered.

The pid file is written once both sockets listen; SIGTERM/SIGINT exit 0 at once.
See the docstring of Server.control() for the control protocol (one JSON object
per line in, one per line out), and test/kairoi_ctl.py for a client.
"""
import argparse
import base64
import binascii
import calendar
import collections
import itertools
import json
import os
import queue
import re
import select
import signal
import socket
import struct
import threading
import time

# --------------------------------------------------------------------------
# KCP tokenizer
# --------------------------------------------------------------------------
# A complete request: arguments (simple or universal) separated by zero or
# more spaces, ended by '\n' outside quotes.  Possessive quantifiers: no
# backtracking, linear time.  Adjacent arguments without a space in between
# (`"a"b`) are taken as two arguments, like a hand-written lexer would.
_TOKEN = rb'"(?:[^"\\]|\\[\\"])*+"|[^ "\n]++'
LINE_RE = re.compile(rb'(?:[ ]*+(?:' + _TOKEN + rb'))*+[ ]*+\n')
TOK_RE = re.compile(rb'"((?:[^"\\]|\\[\\"])*+)"|([^ "\n]++)')
UNESC_RE = re.compile(rb'\\([\\"])')
SIMPLE_END_RE = re.compile(rb'[ "\n]')
QSPECIAL_RE = re.compile(rb'[\\"]')
DATE_RE = re.compile(rb'(-?[0-9]{1,4})-([0-9]{1,2})-([0-9]{1,2}) '
                     rb'([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})')

FFFD = b'\xef\xbf\xbd'
GARBAGE_LINE = b'%%% not kcp %%%\n'
GARBAGE_UNKNOWN = b'zzzzzzzzzzzzz OK\n'
STOP = 'STOP'     # executor sentinel: exit
CLOSE = 'CLOSE'   # executor sentinel: answer what came before, then close (FIN)

DEFAULT_FAULTS = {
    'refuse': False,
    'drop_after': None,
    'stall': False,
    'error_ids': [],
    'garbage': None,
    'slow_read': None,
    'reply_delay_ms': 0,
}
RECEIVED_CAP = 256 * 1024 * 1024      # bytes of "received" kept (the last ones)
REQUESTS_CAP = 1_000_000              # request log entries kept (the last ones)
SEND_TIMEOUT_S = 10                   # replies not writable that long: drop
FRAME_HZ = 128                        # --reference-pace: reply frames a second
TURN_S = 0.0001                       # --reference-pace: a reader's turn per request
DRAIN_S = 5                           # after a server-side FIN, read until EOF at most that long


def valid_date(b):
    """Loose `Y-M-D h:m:s` like the reference server (2030-1-1 0:0:0, :60 ok)."""
    m = DATE_RE.fullmatch(b)
    if m is None:
        return False
    y, mo, d, h, mi, s = (int(x) for x in m.groups())
    if not 1 <= mo <= 12 or h > 23 or mi > 59 or s > 60:
        return False
    mdays = (31, 29 if calendar.isleap(y) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return 1 <= d <= mdays[mo - 1]


def incomplete_utf8_tail(data):
    """Index of the lead byte if data ends inside a multi-byte UTF-8 char, else -1."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b & 0xC0 == 0x80:          # continuation byte, keep looking for the lead
            continue
        if 0xC2 <= b <= 0xDF:
            need = 2
        elif 0xE0 <= b <= 0xEF:
            need = 3
        elif 0xF0 <= b <= 0xF4:
            need = 4
        else:
            return -1
        return n - back if back < need else -1
    return -1


def dec(b):
    return b.decode('utf-8', 'replace')


def b64(b):
    return binascii.b2a_base64(b, newline=False)


# --------------------------------------------------------------------------
# Client connection: a reader thread (parses, answers ERROR at once) and an
# executor thread (applies valid requests in order, answers OK/ERROR).
# --------------------------------------------------------------------------
class Conn:
    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.sock = sock
        self.cid = cid
        self.q = queue.SimpleQueue()
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.closing = False        # no more requests are applied
        self.server_closed = False  # we sent FIN
        self.counted_closed = False
        self.nlines = 0
        self.sp = None              # slow-parser state for a partial line
        self.valid = []
        self.errs = []
        self.order = []             # is_error of each parsed request, in order
        self.handed = 0             # valid requests handed to the executor
        self.answered = 0           # of which answered
        self.frame_out = []         # --reference-pace: replies for the next frame
        self.frame_lock = threading.Lock()
        self.executor = threading.Thread(target=self.exec_loop, daemon=True,
                                         name='kcp-exec-%d' % cid)
        self.reader = threading.Thread(target=self.read_loop, daemon=True,
                                       name='kcp-read-%d' % cid)

    def start(self):
        self.executor.start()
        self.reader.start()

    # -- closing ------------------------------------------------------------
    def mark_closed(self):
        with self.lock:
            if self.counted_closed:
                return
            self.counted_closed = True
            self.closing = True
        self.srv.conn_gone(self)

    def server_close(self, dropped=False):
        """Close from the server side with a FIN; the reader then drains input."""
        with self.lock:
            if self.server_closed:
                return False
            self.server_closed = True
            self.closing = True
        if dropped:
            self.srv.count('dropped')
        self.mark_closed()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.srv.wake_stalled()
        return True

    def send(self, data):
        try:
            with self.send_lock:
                self.sock.sendall(data)
            return True
        except OSError:
            # replies cannot be written (client gone or not reading): drop
            self.mark_closed()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False

    # -- parsing ------------------------------------------------------------
    def slow(self, data, pos):
        """Resumable byte-by-byte parser for a partial or malformed line.
        Returns ('line'|'bad', raw, args, newpos) or None when more input is needed."""
        st = self.sp
        if st is None:
            st = self.sp = [bytearray(), [], None, 0]
        raw, args, cur, mode = st
        n = len(data)
        i = pos
        while i < n:
            if mode == 0:            # between arguments
                c = data[i]
                if c == 32:
                    i += 1
                elif c == 10:
                    i += 1
                    raw += data[pos:i]
                    self.sp = None
                    return ('line', bytes(raw), args, i)
                elif c == 34:
                    cur = bytearray()
                    mode = 2
                    i += 1
                else:
                    cur = bytearray()
                    mode = 1
            elif mode == 1:          # simple argument
                m = SIMPLE_END_RE.search(data, i)
                if m is None:
                    cur += data[i:]
                    i = n
                    break
                k = m.start()
                cur += data[i:k]
                args.append(bytes(cur))
                cur = None
                mode = 0
                i = k
            elif mode == 2:          # inside a universal string
                m = QSPECIAL_RE.search(data, i)
                if m is None:
                    cur += data[i:]
                    i = n
                    break
                k = m.start()
                cur += data[i:k]
                if data[k] == 34:
                    args.append(bytes(cur))
                    cur = None
                    mode = 0
                else:
                    mode = 3
                i = k + 1
            else:                    # after a backslash inside a universal string
                c = data[i]
                if c == 92 or c == 34:
                    cur.append(c)
                    mode = 2
                    i += 1
                else:
                    raw += data[pos:i + 1]
                    self.sp = None
                    return ('bad', bytes(raw), args, i + 1)
        raw += data[pos:n]
        st[2] = cur
        st[3] = mode
        return None

    def feed(self, data):
        """Parse data; fills self.valid / self.errs. Returns True to drop the connection."""
        pos = 0
        n = len(data)
        if self.sp is not None:
            r = self.slow(data, 0)
            if r is None:
                return False
            if self.handle(r[1], r[2], r[0] == 'bad'):
                return True
            pos = r[3]
        match = LINE_RE.match
        tokens = TOK_RE.findall
        handle = self.handle
        while pos < n:
            m = match(data, pos)
            if m is None:
                r = self.slow(data, pos)
                if r is None:
                    return False
                if handle(r[1], r[2], r[0] == 'bad'):
                    return True
                pos = r[3]
                continue
            end = m.end()
            line = data[pos:end]
            pos = end
            if b'"' in line:
                args = [s if s else (UNESC_RE.sub(rb'\1', q) if b'\\' in q else q)
                        for q, s in tokens(line)]
            else:
                args = [a for a in line[:-1].split(b' ') if a]
            if handle(line, args, False):
                return True
        return False

    def handle(self, raw, args, bad):
        srv = self.srv
        self.nlines += 1
        srv.log_request(self.cid, raw, args)
        da = srv.faults['drop_after']
        if bad or len(args) < 2 or (da is not None and self.nlines >= da):
            return True
        instr = args[1]
        if instr == b'SET':
            if len(args) == 4 and valid_date(args[3]):
                self.valid.append((0, args[0], args[2], args[3]))
                self.order.append(False)
                return False
        elif instr == b'RULE':
            if len(args) >= 6 and args[2] == b'SET':
                runner = args[5]
                k = len(args) - 6
                if (runner == b'shell' and k == 1) or (runner == b'amqp' and k == 3 and srv.amqp):
                    self.valid.append((1, args[0], args[3], args[4:]))
                    self.order.append(False)
                    return False
        self.errs.append(args[0])
        self.order.append(True)
        return False

    # -- reader thread --------------------------------------------------------
    def flush_parsed(self):
        """Send immediate ERRORs, queue valid requests. False if the connection closed."""
        srv = self.srv
        if srv.reference_replies and not srv.faults['garbage']:
            return self.flush_parsed_one_by_one()
        self.order = []
        if self.errs:
            errs = self.errs
            self.errs = []
            srv.count('errors', len(errs))
            g = srv.faults['garbage']
            if g == 'half_line':
                ans = dec(errs[0]).encode() + b' ERROR\n'
                self.send(ans[:max(1, len(ans) // 2)])
                self.valid = []
                self.server_close(dropped=True)
                return False
            if g == 'line':
                out = GARBAGE_LINE * len(errs)
            elif g == 'unknown_id':
                out = GARBAGE_UNKNOWN * len(errs)
            else:
                out = b''.join([dec(e).encode() + b' ERROR\n' for e in errs])
            if not self.send(out):
                return False
        if self.valid:
            self.q.put(self.valid)
            self.valid = []
        return True

    def flush_parsed_one_by_one(self):
        """--reference-replies: like the reference server's connection thread,
        hand each request on by itself, in parse order, and write each ERROR
        with its own send().  False if the connection closed."""
        errs = iter(self.errs)
        valid = iter(self.valid)
        order = self.order
        self.errs = []
        self.valid = []
        self.order = []
        pace = self.srv.reference_pace
        for i, is_error in enumerate(order):
            if pace and i > 0:
                time.sleep(TURN_S)          # one request per turn
            if is_error:
                self.srv.count('errors')
                if not self.send(dec(next(errs)).encode() + b' ERROR\n'):
                    return False
            else:
                self.handed += 1
                self.q.put([next(valid)])
        return True

    def send_replies(self, out):
        """The executor's replies: at once, or at the next reply frame."""
        if self.srv.reference_pace:
            with self.frame_lock:
                self.frame_out.extend(out)
            return
        self.answered += len(out)
        if self.srv.reference_replies:
            for reply in out:           # one write per reply
                if not self.send(reply):
                    break
        else:
            self.send(b''.join(out))

    def flush_frame(self):
        """--reference-pace: hand this frame's replies on, one write each."""
        with self.frame_lock:
            out = self.frame_out
            self.frame_out = []
        self.answered += len(out)
        for reply in out:
            if self.closing or not self.send(reply):
                break

    def read_loop(self):
        srv = self.srv
        sock = self.sock
        split = srv.split_reads
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        try:
            while not self.closing:
                # wait for input first, so a stall set meanwhile is honoured
                # before anything is taken from the kernel buffer
                if not poller.poll(200) or self.closing:
                    continue
                faults = srv.faults
                if faults['stall']:
                    srv.stall_wait(0.2)
                    continue
                rate = faults['slow_read']
                size = 2048 if split else 262144
                if rate:
                    size = max(1, min(size, rate // 20))
                try:
                    data = sock.recv(size)
                except (BlockingIOError, InterruptedError, socket.timeout):
                    continue
                except OSError:
                    break
                if not data:
                    break
                srv.record_received(data)
                if self.handed > self.answered:
                    srv.count('overlapped_reads')
                if rate:
                    time.sleep(len(data) / rate)
                if split:
                    k = incomplete_utf8_tail(data)
                    if k >= 0:
                        data = data[:k] + FFFD + data[k:]
                drop = self.feed(data)
                if not self.flush_parsed():
                    break
                if drop:
                    self.q.put(CLOSE)
                    self.drain(wait_for_close=True)
                    break
            if self.server_closed:
                self.drain()
        finally:
            self.closing = True
            self.mark_closed()
            self.q.put(STOP)
            self.executor.join(SEND_TIMEOUT_S + 1)
            try:
                sock.close()
            except OSError:
                pass

    def drain(self, wait_for_close=False):
        """After we decided to close: read and discard until EOF (avoids an RST)."""
        start = time.monotonic()
        deadline = None
        while True:
            now = time.monotonic()
            if deadline is None and self.server_closed:
                deadline = now + DRAIN_S
            if (deadline is not None and now > deadline) or now - start > 60:
                return
            if wait_for_close and not self.server_closed and self.counted_closed:
                return   # executor could not send: connection is gone
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError, socket.timeout):
                continue
            except OSError:
                return
            if not data:
                return

    # -- executor thread ------------------------------------------------------
    def exec_loop(self):
        srv = self.srv
        q = self.q
        while True:
            item = q.get()
            if item is STOP:
                return
            delay = srv.faults['reply_delay_ms']
            if delay:
                time.sleep(delay / 1000.0)
            items = [item]
            try:
                while True:
                    items.append(q.get_nowait())
            except queue.Empty:
                pass
            while srv.faults['stall'] and not self.closing:
                srv.stall_wait(0.2)
            out = []
            stop = close_after = half = False
            with srv.lock:
                err_ids = srv.error_ids
                jobs = srv.jobs
                rules = srv.rules
                logw = srv.logf.write if srv.logf else None
                stored_at = srv.stored_at
                now = time.time() if stored_at is not None else None
                applied = errors = 0
                for it in items:
                    if it is STOP:
                        stop = True
                        break
                    if it is CLOSE:
                        close_after = True
                        break
                    if self.closing:
                        continue
                    for kind, rid, key, val in it:
                        if err_ids and dec(key) in err_ids:
                            errors += 1
                            ans = b' ERROR\n'
                        else:
                            if kind == 0:
                                jobs[key] = val
                                if stored_at is not None:
                                    stored_at[key] = now
                                if logw:
                                    logw(b'J ' + b64(key) + b' ' + b64(val) + b'\n')
                            else:
                                rules[key] = val
                                if logw:
                                    logw(b'R ' + b64(key) + b' ' +
                                         b' '.join([b64(x) for x in val]) + b'\n')
                            applied += 1
                            ans = b' OK\n'
                        g = srv.faults['garbage']
                        if g is None:
                            out.append(dec(rid).encode() + ans)
                        elif g == 'line':
                            out.append(GARBAGE_LINE)
                        elif g == 'unknown_id':
                            out.append(GARBAGE_UNKNOWN)
                        else:   # half_line
                            a = dec(rid).encode() + ans
                            out.append(a[:max(1, len(a) // 2)])
                            half = True
                            break
                    if half:
                        break
                srv.applied += applied
                srv.errors += errors
                if logw and (applied or errors):
                    srv.logf.flush()
                    if srv.fsync:
                        os.fsync(srv.logf.fileno())
            if out and not self.closing:
                self.send_replies(out)
            if half or close_after:
                self.flush_frame()
                self.server_close(dropped=True)
                return
            if stop:
                return


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------
class Server:
    def __init__(self, args):
        self.host = args.host
        self.port = args.port
        self.control_port = args.control_port
        self.amqp = not args.no_amqp
        self.split_reads = args.split_reads
        self.record_times = args.record_times
        self.reference_pace = args.reference_pace
        self.reference_replies = args.reference_replies or args.reference_pace
        self.fsync = args.fsync
        self.data = args.data
        self.lock = threading.RLock()          # state: jobs, rules, counters, log file
        self.conns_lock = threading.Lock()
        self.conns = set()
        self.stall_cv = threading.Condition()
        self.listener = None
        self.listener_lock = threading.Lock()
        self.next_cid = itertools.count(1)
        self.jobs = {}
        self.rules = {}
        self.logf = None
        self.recv_lock = threading.Lock()
        self.reset_state()
        self.faults = dict(DEFAULT_FAULTS)
        self.error_ids = frozenset()
        if self.data:
            self.load_data()

    # -- state ----------------------------------------------------------------
    def reset_state(self):
        self.jobs.clear()
        self.rules.clear()
        # job -> wall-clock time (time.time()) it was last stored, or None
        self.stored_at = {} if self.record_times else None
        self.applied = 0
        self.errors = 0
        self.accepted = 0
        self.dropped = 0
        self.req_seq = itertools.count()
        self.reqlog = collections.deque(maxlen=REQUESTS_CAP)
        with self.recv_lock:
            self.received = collections.deque()
            self.received_bytes = 0
            self.received_dropped = 0
            self.reads = 0          # recv() calls that returned data
            self.overlapped_reads = 0   # ... while requests read before were unanswered
            self.largest_read = 0   # bytes

    def count(self, name, n=1):
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def log_request(self, cid, raw, args):
        self.reqlog.append((next(self.req_seq), cid, raw, args))

    def record_received(self, data):
        with self.recv_lock:
            self.received.append(data)
            self.received_bytes += len(data)
            self.reads += 1
            self.largest_read = max(self.largest_read, len(data))
            while self.received_bytes > RECEIVED_CAP and len(self.received) > 1:
                old = self.received.popleft()
                self.received_bytes -= len(old)
                self.received_dropped += len(old)

    def log_path(self):
        return os.path.join(self.data, 'kairoi-test.log')

    def load_data(self):
        os.makedirs(self.data, exist_ok=True)
        path = self.log_path()
        good = 0
        if os.path.exists(path):
            with open(path, 'rb') as f:
                content = f.read()
            for line in content.split(b'\n')[:-1]:
                parts = line.split(b' ')
                try:
                    vals = [base64.b64decode(p, validate=True) for p in parts[1:]]
                except (binascii.Error, ValueError):
                    break
                if parts[0] == b'J' and len(vals) == 2:
                    self.jobs[vals[0]] = vals[1]
                elif parts[0] == b'R' and len(vals) >= 3:
                    self.rules[vals[0]] = vals[1:]
                else:
                    break
                good += len(line) + 1
            if good != len(content):    # torn last line (never acknowledged): cut it
                with open(path, 'r+b') as f:
                    f.truncate(good)
        self.logf = open(path, 'ab')

    # -- connections ----------------------------------------------------------
    def open_listener(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(512)
        self.listener = s
        threading.Thread(target=self.accept_loop, args=(s,), daemon=True,
                         name='kcp-accept').start()

    def close_listener(self):
        s = self.listener
        self.listener = None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def accept_loop(self, lsock):
        while True:
            try:
                sock, _ = lsock.accept()
            except OSError:
                if self.listener is not lsock:
                    return
                time.sleep(0.01)
                continue
            if self.listener is not lsock:
                sock.close()
                return
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,
                                0 if self.reference_replies else 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                struct.pack('ll', 0, 200000))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack('ll', SEND_TIMEOUT_S, 0))
                if self.faults['slow_read']:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            except OSError:
                pass
            conn = Conn(self, sock, next(self.next_cid))
            with self.conns_lock:
                self.conns.add(conn)
            self.count('accepted')
            conn.start()

    def frame_loop(self):
        """--reference-pace: hand replies to the connections FRAME_HZ times a
        second, on the ticks of one clock."""
        period = 1.0 / FRAME_HZ
        while True:
            now = time.monotonic()
            time.sleep(period - now % period)
            with self.conns_lock:
                conns = list(self.conns)
            for c in conns:
                c.flush_frame()

    def conn_gone(self, conn):
        with self.conns_lock:
            self.conns.discard(conn)

    def kick(self):
        with self.conns_lock:
            conns = list(self.conns)
        n = 0
        for c in conns:
            if c.server_close():
                n += 1
        return n

    def stall_wait(self, timeout):
        with self.stall_cv:
            if self.faults['stall']:
                self.stall_cv.wait(timeout)

    def wake_stalled(self):
        with self.stall_cv:
            self.stall_cv.notify_all()

    # -- control --------------------------------------------------------------
    def set_faults(self, kw):
        new = dict(self.faults)
        for k, v in kw.items():
            if k not in DEFAULT_FAULTS:
                raise ValueError('unknown fault %r' % k)
            if k in ('refuse', 'stall'):
                if not isinstance(v, bool):
                    raise ValueError('%s must be a boolean' % k)
            elif k in ('drop_after', 'slow_read'):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    raise ValueError('%s must be a non-negative integer or null' % k)
                if k == 'slow_read' and v == 0:
                    v = None
            elif k == 'reply_delay_ms':
                if v is None:
                    v = 0
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise ValueError('reply_delay_ms must be a non-negative number')
            elif k == 'error_ids':
                if v is None:
                    v = []
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError('error_ids must be a list of strings')
            elif k == 'garbage':
                if v not in (None, 'line', 'unknown_id', 'half_line'):
                    raise ValueError('garbage must be null, "line", "unknown_id" or "half_line"')
            new[k] = v
        self.apply_faults(new)

    def apply_faults(self, new):
        old = self.faults
        self.error_ids = frozenset(new['error_ids'])
        self.faults = new
        if new['refuse'] and not old['refuse']:
            with self.listener_lock:
                self.close_listener()
            self.kick()
        elif not new['refuse'] and old['refuse']:
            with self.listener_lock:
                if self.listener is None:
                    try:
                        self.open_listener()
                    except OSError:
                        self.faults = dict(new, refuse=True)
                        raise
        self.wake_stalled()

    def snapshot_counts(self):
        with self.conns_lock:
            nconn = len(self.conns)
        with self.recv_lock:
            reads, largest_read = self.reads, self.largest_read
        return {'applied': self.applied, 'errors': self.errors, 'connections': nconn,
                'accepted': self.accepted, 'dropped': self.dropped,
                'reads': reads, 'largest_read': largest_read,
                'overlapped_reads': self.overlapped_reads}

    def control(self, req):
        """Control commands (JSON object per line, answer per line):
        ping; state [raw]; counts; job {id}; rule {id}; requests [since];
        received; fault {refuse, drop_after, stall, error_ids, garbage,
        slow_read, reply_delay_ms}; kick; reset;
        times [prefix]: with --record-times, {job: epoch seconds} of the
        moment each job (whose identifier starts with prefix) was last
        stored, just before its OK is sent; same clock as time.time() in
        any process of the machine (for latency measurements)."""
        cmd = req.get('cmd')
        if cmd == 'ping':
            return {'ok': True}
        if cmd in ('state', 'counts'):
            with self.lock:
                res = {'ok': True}
                if cmd == 'state':
                    res['jobs'] = {dec(k): dec(v) for k, v in self.jobs.items()}
                    res['rules'] = {dec(k): [dec(x) for x in v] for k, v in self.rules.items()}
                    if req.get('raw'):
                        res['jobs_b64'] = {b64(k).decode(): b64(v).decode()
                                           for k, v in self.jobs.items()}
                        res['rules_b64'] = {b64(k).decode(): [b64(x).decode() for x in v]
                                            for k, v in self.rules.items()}
                else:
                    res['jobs'] = len(self.jobs)
                    res['rules'] = len(self.rules)
                res.update(self.snapshot_counts())
            res['faults'] = dict(self.faults)
            return res
        if cmd in ('job', 'rule'):
            ident = req.get('id')
            if 'id_b64' in req:
                key = base64.b64decode(req['id_b64'])
            elif isinstance(ident, str):
                key = ident.encode('utf-8', 'surrogateescape')
            else:
                raise ValueError('id or id_b64 required')
            with self.lock:
                table = self.jobs if cmd == 'job' else self.rules
                val = table.get(key)
                if val is None and ident is not None:
                    for k, v in table.items():
                        if dec(k) == ident:
                            val = v
                            break
            if val is None:
                return {'ok': True, 'found': False}
            if cmd == 'job':
                return {'ok': True, 'found': True, 'execution': dec(val)}
            return {'ok': True, 'found': True, 'rule': [dec(x) for x in val]}
        if cmd == 'times':
            if self.stored_at is None:
                raise ValueError('times needs a server started with --record-times')
            prefix = req.get('prefix', '') or ''
            if not isinstance(prefix, str):
                raise ValueError('prefix must be a string')
            with self.lock:
                times = {dec(k): t for k, t in self.stored_at.items()
                         if dec(k).startswith(prefix)}
            return {'ok': True, 'times': times}
        if cmd == 'requests':
            since = req.get('since', 0) or 0
            entries = list(self.reqlog)
            out = [{'seq': seq, 'conn': cid, 'raw_b64': b64(raw).decode(),
                    'args': [dec(a) for a in args]}
                   for seq, cid, raw, args in entries if seq >= since]
            return {'ok': True, 'requests': out}
        if cmd == 'received':
            with self.recv_lock:
                data = b''.join(self.received)
                lost = self.received_dropped
            res = {'ok': True, 'raw_b64': b64(data).decode()}
            if lost:
                res['truncated_bytes'] = lost
            return res
        if cmd == 'fault':
            kw = {k: v for k, v in req.items() if k != 'cmd'}
            self.set_faults(kw)
            return {'ok': True, 'faults': dict(self.faults)}
        if cmd == 'kick':
            return {'ok': True, 'closed': self.kick()}
        if cmd == 'reset':
            self.apply_faults(dict(DEFAULT_FAULTS))
            with self.lock:
                self.reset_state()
                if self.logf:
                    self.logf.flush()
                    self.logf.truncate(0)
                    self.logf.flush()
                    if self.fsync:
                        os.fsync(self.logf.fileno())
            return {'ok': True}
        return {'ok': False, 'error': 'unknown command %r' % (cmd,)}

    def control_conn(self, sock):
        f = sock.makefile('rwb')
        try:
            for line in f:
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError('expected a JSON object')
                    res = self.control(req)
                except Exception as e:   # noqa: BLE001 - report any failure to the client
                    res = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
                f.write(json.dumps(res).encode() + b'\n')
                f.flush()
        except OSError:
            pass
        finally:
            try:
                f.close()
                sock.close()
            except OSError:
                pass

    def control_loop(self, lsock):
        while True:
            try:
                sock, _ = lsock.accept()
            except OSError:
                time.sleep(0.01)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.control_conn, args=(sock,), daemon=True,
                             name='control').start()


def main():
    ap = argparse.ArgumentParser(description='Kairoi-compatible KCP test server')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--control-port', type=int, required=True)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--data', help='directory for the persistent change log')
    ap.add_argument('--fsync', action='store_true', help='fsync the log before each OK batch')
    ap.add_argument('--pidfile')
    ap.add_argument('--no-amqp', action='store_true', help='reject the amqp runner')
    ap.add_argument('--split-reads', action='store_true',
                    help='read <=2048 bytes per recv and corrupt UTF-8 split across reads')
    ap.add_argument('--record-times', action='store_true',
                    help='remember when each job was stored (control command times)')
    ap.add_argument('--reference-replies', action='store_true',
                    help='one write per reply, Nagle on, one request handed on per turn '
                         '(the reference server\'s pace with delayed ACKs)')
    ap.add_argument('--reference-pace', action='store_true',
                    help='--reference-replies, a turn of TURN_S per request, and replies '
                         'handed on in frames, FRAME_HZ a second (the reference server\'s pace)')
    args = ap.parse_args()

    srv = Server(args)

    def on_signal(signum, frame):
        try:
            if srv.logf:
                srv.logf.flush()
            if args.pidfile:
                os.unlink(args.pidfile)
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctl = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ctl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ctl.bind((args.host, args.control_port))
    ctl.listen(64)
    with srv.listener_lock:
        srv.open_listener()
    threading.Thread(target=srv.control_loop, args=(ctl,), daemon=True,
                     name='control-accept').start()
    if srv.reference_pace:
        threading.Thread(target=srv.frame_loop, daemon=True, name='frames').start()
    if args.pidfile:
        tmp = args.pidfile + '.tmp'
        with open(tmp, 'w') as f:
            f.write('%d\n' % os.getpid())
        os.replace(tmp, args.pidfile)
    while True:
        time.sleep(3600)


if __name__ == '__main__':
    main()
