#!/usr/bin/python3
"""bench/latency.py: commit-to-acknowledgement latency samples (driven by bench/latency.sh).

    python3 bench/latency.py --conninfo CONNINFO --port KCP_PORT [--cport CONTROL_PORT]
        --phase connected|idle_reconnect|bursts --delays "0 8" --samples N [--rounds R]
        [--gap-ms G] [--sizes "2 10 28"] [--tsv FILE]

Without --cport (a server with no control port, such as the reference Kairoi
server) only the phase `bursts` runs, and its delay column reads `ref`.

Both ends are timestamped on the machine's wall clock: the commit by
PostgreSQL itself (its commit timestamp, track_commit_timestamp = on: taken
as the commit record is written, microseconds before the commit becomes
visible, wakes the worker and returns), the job by the test server (started
with --record-times) when it stores it, just before sending OK. A client-side
stamp after the commit returns would add the client's own scheduling delay:
on 2 busy cores the job was often stored before the client saw its commit
return. Nothing polls while a sample runs: the commit and store times are
fetched after each round.

Phase `connected`: rounds alternate over the reply delays; in each, samples
alternate between the extension (`SELECT kairoi_job_set(...)` in its own
transaction, over libpq) and the baseline, a raw KCP client that sends one
SET on its own open connection (state raw_connected), timed from just
before its write. Samples are spaced
GAP..1.5*GAP ms apart, so each commit finds the worker connected and idle;
a sample whose job was stored after the next commit began is counted as
overlapped and reported.

Phase `idle_reconnect`: before each sample, waits until the worker has
closed its idle connection (the server counts no connection), then commits
(state idle_reconnect); the baseline is a raw client that opens a new
connection, sends one SET and closes (state raw_new_connection).

Phase `bursts`: commits of several jobs in one transaction (a count(*) over
generate_series, --sizes jobs each), each followed in the same session by
`SELECT kairoi_flush('30s'), clock_timestamp()`. Two latencies per commit,
both from its commit timestamp: until the worker has received every OK and
deleted the entries (state burst_ack_N: the commit timestamp of the last
transaction committed when the flush returned, pg_last_committed_xact();
the script runs the cluster with autovacuum off so that this is the
worker's delete), and until kairoi_flush() returned (burst_flush_N: its
clock_timestamp()). The test server must run with --reference-replies (one
write per reply, Nagle on, like the reference server). Baseline, alternating
commit for commit: a raw KCP client that writes the same number of SETs in
one write on its open connection and reads every answer, re-arming
TCP_QUICKACK after each read (raw_burst_N), timed from just before its
write to the last answer read.

Appends rows `state latency_ms delay_ms` to FILE and prints, per state and
delay, samples, p10, p50, p90, p99 and max, and each state's p50 minus its
baseline's p50 (same delay, same run). libpq is used through ctypes: no
module beyond the standard library.
"""
import argparse
import ctypes
import ctypes.util
import os
import random
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test'))
from kairoi_ctl import Control  # noqa: E402
from report import percentile  # noqa: E402  (bench/report.py, next to this file)

EXECUTION = '2030-01-01 00:00:00'
PGRES_TUPLES_OK = 2
CONNECTION_OK = 0


class Postgres:
    """One libpq connection; query() runs a statement in its own transaction."""

    def __init__(self, conninfo):
        lib = ctypes.CDLL(ctypes.util.find_library('pq') or 'libpq.so.5')
        lib.PQconnectdb.restype = ctypes.c_void_p
        lib.PQconnectdb.argtypes = [ctypes.c_char_p]
        lib.PQstatus.argtypes = [ctypes.c_void_p]
        lib.PQerrorMessage.restype = ctypes.c_char_p
        lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQexec.restype = ctypes.c_void_p
        lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.PQgetvalue.restype = ctypes.c_char_p
        lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQntuples.argtypes = [ctypes.c_void_p]
        lib.PQnfields.argtypes = [ctypes.c_void_p]
        lib.PQgetisnull.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQresultStatus.argtypes = [ctypes.c_void_p]
        lib.PQclear.argtypes = [ctypes.c_void_p]
        lib.PQfinish.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.conn = lib.PQconnectdb(conninfo.encode())
        if lib.PQstatus(self.conn) != CONNECTION_OK:
            raise RuntimeError('connection failed: %s' % self.error())

    def error(self):
        return self.lib.PQerrorMessage(self.conn).decode(errors='replace').strip()

    def query(self, sql):
        """Rows of the result, each a list of strings (NULL as None)."""
        lib = self.lib
        res = lib.PQexec(self.conn, sql.encode())
        try:
            if not res or lib.PQresultStatus(res) != PGRES_TUPLES_OK:
                raise RuntimeError('%s: %s' % (sql, self.error()))
            return [[None if lib.PQgetisnull(res, r, c) else lib.PQgetvalue(res, r, c).decode()
                     for c in range(lib.PQnfields(res))]
                    for r in range(lib.PQntuples(res))]
        finally:
            lib.PQclear(res)

    def close(self):
        self.lib.PQfinish(self.conn)


class RawClient:
    """The baseline: one SET on a KCP connection, reply read."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.next_id = 0

    def connect(self):
        self.sock = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def set_job(self, job):
        """Sends one SET, waits for its reply; returns the time before sending."""
        self.next_id += 1
        rid = b'%x' % self.next_id
        t0 = time.time()
        self.sock.sendall(rid + b' SET ' + job.encode() + b' "' + EXECUTION.encode() + b'"\n')
        reply = b''
        while not reply.endswith(b'\n'):
            data = self.sock.recv(4096)
            if not data:
                raise RuntimeError('server closed the connection')
            reply += data
        if reply != rid + b' OK\n':
            raise RuntimeError('unexpected reply %r' % reply)
        return t0

    def set_burst(self, prefix, n):
        """Sends n SETs in one write, reads every answer re-arming TCP_QUICKACK
        after each read (Linux clears it); returns milliseconds taken."""
        first = self.next_id + 1
        self.next_id += n
        data = b''.join(b'%x SET %s%d "%s"\n' % (first + i, prefix.encode(), i,
                                                 EXECUTION.encode()) for i in range(n))
        t0 = time.time()
        self.sock.sendall(data)
        reply = b''
        while reply.count(b'\n') < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError('server closed the connection')
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            reply += chunk
        t1 = time.time()
        if reply.count(b' OK\n') != n:
            raise RuntimeError('unexpected replies %r' % reply[:200])
        return (t1 - t0) * 1000.0


class Bench:
    def __init__(self, a):
        self.a = a
        self.pg = Postgres(a.conninfo)
        self.ctl = Control('127.0.0.1', a.cport) if a.cport else None
        self.raw = RawClient(a.port)
        self.samples = []      # (state, latency_ms, delay_ms)
        self.overlapped = 0
        self.seq = 0

    def job(self, kind):
        self.seq += 1
        return 'lat-%s-%d' % (kind, self.seq)

    def commit_one(self, job):
        """Commits one kairoi_job_set; returns its transaction id."""
        return self.pg.query("SELECT pg_current_xact_id(), kairoi_job_set('%s', "
                             "timestamptz '%s+00')" % (job, EXECUTION))[0][0]

    def commit_times(self, xids):
        """{xid: epoch seconds of its commit record}."""
        rows = self.pg.query("SELECT x, extract(epoch FROM pg_xact_commit_timestamp(x::text::xid)) "
                             "FROM unnest('{%s}'::text[]) x" % ','.join(xids))
        return {x: float(t) for x, t in rows}

    def pause(self):
        gap = self.a.gap_ms / 1000.0
        time.sleep(random.uniform(gap, 1.5 * gap))

    def collect(self, sent, delay):
        """sent: [state, job, start, next_start] where start is a time.time() or, for
        the extension, a transaction id; waits for every job, records latencies."""
        commits = self.commit_times([s[2] for s in sent if isinstance(s[2], str)])
        for s in sent:
            s[2] = commits.get(s[2], s[2])
            s[3] = commits.get(s[3], s[3])
        deadline = time.monotonic() + 60
        while True:
            times = self.ctl.times('lat-')
            missing = [job for _, job, _, _ in sent if job not in times]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError('%d jobs never reached the server, e.g. %s'
                                   % (len(missing), missing[0]))
            time.sleep(0.05)
        for state, job, t_start, t_next in sent:
            stored = times[job]
            if t_next is not None and stored > t_next:
                self.overlapped += 1
            self.samples.append((state, (stored - t_start) * 1000.0, delay))

    def connected_round(self, delay, n):
        self.ctl.fault(reply_delay_ms=delay)
        self.raw.connect()
        sent = []
        try:
            for i in range(n):
                order = ('ext', 'raw') if i % 2 == 0 else ('raw', 'ext')
                for kind in order:
                    job = self.job(kind)
                    if kind == 'ext':
                        t = self.commit_one(job)
                        state = 'connected'
                    else:
                        t = self.raw.set_job(job)
                        state = 'raw_connected'
                    if sent:
                        sent[-1][3] = t
                    sent.append([state, job, t, None])
                    self.pause()
        finally:
            self.raw.close()
        self.collect(sent, delay)

    def commit_burst(self, prefix, n):
        """Commits n jobs in one transaction, then waits in kairoi_flush;
        returns (ms to acknowledgement, ms until the flush returned)."""
        xid = self.pg.query("SELECT pg_current_xact_id(), count(kairoi_job_set('%s' || g, "
                            "timestamptz '%s+00')) FROM generate_series(1, %d) g"
                            % (prefix, EXECUTION, n))[0][0]
        flushed = float(self.pg.query("SELECT kairoi_flush('30s'), "
                                      "extract(epoch FROM clock_timestamp())")[0][1])
        last, acked, committed = self.pg.query(
            "SELECT l.xid, extract(epoch FROM l.timestamp), "
            "extract(epoch FROM pg_xact_commit_timestamp('%s'::xid)) "
            "FROM pg_last_committed_xact() l" % xid)[0]
        if int(last) <= int(xid) % 2**32:
            raise RuntimeError('no transaction committed after the burst %s (last %s)'
                               % (xid, last))
        committed = float(committed)
        return (float(acked) - committed) * 1000.0, (flushed - committed) * 1000.0

    def set_delay(self, delay):
        if self.ctl is not None:
            self.ctl.fault(reply_delay_ms=delay)

    def burst_round(self, delay, n):
        self.set_delay(delay)
        self.raw.connect()
        try:
            self.raw.set_burst('lat-warm-', 1)
            for i in range(n):
                size = self.sizes[i % len(self.sizes)]
                order = ('ext', 'raw') if (i // len(self.sizes)) % 2 == 0 else ('raw', 'ext')
                for kind in order:
                    prefix = '%s-%d-' % (self.job(kind), size)
                    if kind == 'ext':
                        ack, flush = self.commit_burst(prefix, size)
                        self.samples.append(('burst_ack_%d' % size, ack, delay))
                        self.samples.append(('burst_flush_%d' % size, flush, delay))
                    else:
                        self.samples.append(('raw_burst_%d' % size,
                                             self.raw.set_burst(prefix, size), delay))
                    self.pause()
        finally:
            self.raw.close()

    def wait_worker_disconnected(self):
        deadline = time.monotonic() + self.a.idle_wait_s
        while self.ctl.counts()['connections'] != 0:
            if time.monotonic() > deadline:
                raise RuntimeError('the worker kept its connection for %.0f s: is '
                                   'kairoi.idle_timeout in effect?' % self.a.idle_wait_s)
            time.sleep(0.05)

    def idle_round(self, delay, n):
        self.ctl.fault(reply_delay_ms=delay)
        sent = []
        for _ in range(n):
            accepted = self.ctl.counts()['accepted']
            self.wait_worker_disconnected()
            job = self.job('ext')
            sent.append(['idle_reconnect', job, self.commit_one(job), None])
            self.pause()
            self.raw.connect()
            job = self.job('raw')
            try:
                sent.append(['raw_new_connection', job, self.raw.set_job(job), None])
            finally:
                self.raw.close()
            self.collect(sent[-2:], delay)
            del sent[:]
            if self.ctl.counts()['accepted'] < accepted + 2:
                raise RuntimeError('the worker did not open a new connection for its sample')

    def run(self):
        delays = [float(d) if '.' in d else int(d) for d in self.a.delays.split()]
        if self.ctl is None:
            delays = ['ref']
        self.sizes = [int(x) for x in self.a.sizes.split()]
        per_round = max(1, self.a.samples // self.a.rounds)
        if self.a.phase == 'bursts':
            per_round *= len(self.sizes)
        for r in range(self.a.rounds):
            for delay in (delays if r % 2 == 0 else delays[::-1]):
                if self.a.phase == 'connected':
                    accepted = self.ctl.counts()['accepted']
                    self.connected_round(delay, per_round)
                    # the raw client opens one connection per round; any other
                    # means the worker reconnected during the round
                    if self.ctl.counts()['accepted'] != accepted + 1:
                        raise RuntimeError('the worker reconnected during a connected round')
                elif self.a.phase == 'bursts':
                    self.burst_round(delay, per_round)
                else:
                    self.idle_round(delay, per_round)
        self.set_delay(0)
        self.pg.close()


def baseline_of(state):
    """The raw client's state that state is compared with."""
    if state.startswith('burst_'):
        return 'raw_burst_' + state.rsplit('_', 1)[1]
    return {'connected': 'raw_connected',
            'idle_reconnect': 'raw_new_connection'}.get(state)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--conninfo', required=True)
    ap.add_argument('--port', type=int, required=True, help='KCP port of the test server')
    ap.add_argument('--cport', type=int, help='its control port (test server only)')
    ap.add_argument('--phase', choices=('connected', 'idle_reconnect', 'bursts'), required=True)
    ap.add_argument('--sizes', default='2 10 28', help='jobs per commit (phase bursts)')
    ap.add_argument('--delays', default='0 8', help='reply_delay_ms values')
    ap.add_argument('--samples', type=int, default=300, help='per state and delay')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--gap-ms', type=float, default=40)
    ap.add_argument('--idle-wait-s', type=float, default=120)
    ap.add_argument('--tsv')
    a = ap.parse_args()
    if a.cport is None and a.phase != 'bursts':
        ap.error('--phase %s needs the test server\'s --cport' % a.phase)
    b = Bench(a)
    b.run()
    if a.tsv:
        new = not os.path.exists(a.tsv)
        with open(a.tsv, 'a') as f:
            if new:
                f.write('state\tlatency_ms\tdelay_ms\n')
            for state, ms, delay in b.samples:
                f.write('%s\t%.3f\t%s\n' % (state, ms, delay))
    groups = {}
    for state, ms, delay in b.samples:
        groups.setdefault((delay, state), []).append(ms)
    print('%-10s %-20s %7s %8s %8s %8s %8s %8s %14s' % (
        'delay ms', 'state', 'samples', 'p10 ms', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms',
        'p50-baseline'))
    for (delay, state), v in sorted(groups.items()):
        base = groups.get((delay, baseline_of(state)))
        diff = '%+14.2f' % (percentile(v, 50) - percentile(base, 50)) if base else '%14s' % '-'
        print('%-10s %-20s %7d %8.2f %8.2f %8.2f %8.2f %8.2f %s' % (
            delay, state, len(v), percentile(v, 10), percentile(v, 50), percentile(v, 90),
            percentile(v, 99), max(v), diff))
    print('overlapped samples (job stored after the next commit began): %d' % b.overlapped)
    return 0


if __name__ == '__main__':
    sys.exit(main())
