#!/usr/bin/python3
"""bench/raw_client.py: a raw pipelined KCP client, the baseline for bench/delivery.sh.

Sends COUNT `SET` requests over ONE connection, keeping at most WINDOW
requests in flight, reading responses while writing (non-blocking socket,
selectors) and matching them to requests by identifier (a base-36 counter,
like the extension). No database is involved: this is the fastest a single
connection to the server can go, so the extension's delivery rate is
reported as a ratio of this one.

    python3 bench/raw_client.py --port P [--host H] [--count N] [--window W]
        [--batch B] [--prefix raw-] [--execution '2030-01-01 00:00:00'] [--json]
        [--quickack] [--drain | --first-answer]

--batch bounds how many requests are encoded into one write (default 500,
like kairoi.batch_size). --quickack re-arms TCP_QUICKACK after every read
(like the worker: against the reference server's one-write-per-reply
answers, delayed ACKs cost ~40 ms per burst). --drain writes the next batch
only once everything in flight is answered (like the worker's packed
non-ASCII writes in release 1.1). --first-answer writes the next batch once
the first answer to the previous one is in: the server has then read that
write (a write of at most 2048 bytes that arrived alone is taken by one
read), which is the pace of the worker's packed non-ASCII writes. Prints `sent N ok N error N seconds S rate R/s`
(or one JSON object with --json). Python standard library only.
"""
import argparse
import json
import selectors
import socket
import sys
import time

DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'


def base36(n):
    if n == 0:
        return '0'
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(DIGITS[r])
    return ''.join(reversed(out))


def run(host, port, count, window, batch, prefix, execution, quickack=False, drain=False,
        first_answer=False):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    in_flight = {}          # request id -> sequence number of the job
    unread = set()          # ids of the last write, while none of them is answered
    next_job = 0
    ok = errors = 0
    outbuf = bytearray()
    inbuf = b''
    start = time.monotonic()
    while ok + errors < count:
        # fill the window (encode at most `batch` requests per round)
        room = min(window - len(in_flight), count - next_job, batch)
        if (drain and in_flight) or (first_answer and unread):
            room = 0
        if room > 0:
            lines = []
            for _ in range(room):
                rid = base36(next_job)
                in_flight[rid] = next_job
                if first_answer:
                    unread.add(rid)
                lines.append('%s SET %s%d "%s"\n' % (rid, prefix, next_job, execution))
                next_job += 1
            outbuf += ''.join(lines).encode()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if outbuf else 0)
        sel.modify(sock, events)
        ready = sel.select(timeout=60)
        if not ready:
            raise SystemExit('no answer for 60 s after %d answers' % (ok + errors))
        for _, mask in ready:
            if mask & selectors.EVENT_WRITE and outbuf:
                try:
                    n = sock.send(outbuf)
                    del outbuf[:n]
                except BlockingIOError:
                    pass
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit('server closed the connection after %d answers'
                                     % (ok + errors))
                if quickack:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                inbuf += data
                *lines, inbuf = inbuf.split(b'\n')
                for line in lines:
                    rid, _, status = line.decode().rpartition(' ')
                    if in_flight.pop(rid, None) is None:
                        raise SystemExit('unknown response id %r' % rid)
                    if rid in unread:
                        unread.clear()
                    if status == 'OK':
                        ok += 1
                    else:
                        errors += 1
    seconds = time.monotonic() - start
    sock.close()
    return {'sent': next_job, 'ok': ok, 'error': errors, 'seconds': seconds,
            'rate': count / seconds if seconds > 0 else 0.0, 'window': window}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--count', type=int, default=100000)
    ap.add_argument('--window', type=int, default=1000)
    ap.add_argument('--batch', type=int, default=500)
    ap.add_argument('--prefix', default='raw-')
    ap.add_argument('--execution', default='2030-01-01 00:00:00')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--quickack', action='store_true')
    ap.add_argument('--drain', action='store_true')
    ap.add_argument('--first-answer', action='store_true')
    a = ap.parse_args()
    if a.drain and a.first_answer:
        ap.error('--drain and --first-answer exclude each other')
    r = run(a.host, a.port, a.count, max(1, a.window), max(1, a.batch), a.prefix, a.execution,
            a.quickack, a.drain, a.first_answer)
    if a.json:
        print(json.dumps(r))
    else:
        print('sent %(sent)d ok %(ok)d error %(error)d seconds %(seconds).3f rate %(rate).0f/s' % r)
    return 0 if r['error'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
