#!/usr/bin/python3
"""test/reference_tool.py: what the reference suites (test/reference/) read
from the reference Kairoi server, its shell runner and RabbitMQ.

The reference server has no query interface, so the suites look at what it
leaves behind, printing every identifier as hex (identifiers may hold
newlines), one a line, sorted:

    reference_tool.py store DIR [--prefix HEX]
        the jobs of the server's store in DIR, as the server replays it at
        start-up: logfile.compressed, then logfile.to_compress, then
        logfile (each a series of 4-byte big-endian lengths and entries;
        the last entry of a job or rule wins).  Read it only while the
        server is stopped (its compaction moves entries between the
        files).  One line per job: "<status> <identifier hex>", status
        planned, triggered, executed or failed; --prefix keeps the jobs
        whose identifier starts with those bytes
    reference_tool.py rules DIR
        one line per rule: identifier, pattern, runner and its arguments,
        each in hex, separated by spaces
    reference_tool.py records DIR
        the contents of DIR's *.done files (what the suites' shell rule
        recorded, one file per execution)
    reference_tool.py kcp --port P LINE
        sends one KCP request line and prints the answer (OK or ERROR)
    reference_tool.py amqp-ready --port P [--timeout S] [--pid PID]
        waits until RabbitMQ accepts an AMQP connection (exit 1 if not,
        exit 2 as soon as process PID, its wrapper script, has exited)
    reference_tool.py amqp-declare --port P EXCHANGE QUEUE ROUTING_KEY
        declares a direct exchange and a queue bound to it
    reference_tool.py amqp-consume --port P QUEUE --count N [--timeout S]
            [--quiet S]
        takes messages until N came (or S seconds passed), then QUIET
        seconds more for any extra one, and prints their bodies

RabbitMQ is reached as guest on 127.0.0.1 (python3-pika).  Python 3 and
Debian's python3-pika only.
"""
import argparse
import glob
import os
import socket
import struct
import sys
import time

STATUSES = {0: 'planned', 1: 'triggered', 2: 'executed', 3: 'failed'}
STORE_FILES = ('logfile.compressed', 'logfile.to_compress', 'logfile')


def entries(path):
    """The entries of one logfile; a torn entry at the end (a kill during a
    write) is left out, as the server's replay would refuse it anyway."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return
    pos = 0
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from('>I', data, pos)
        if pos + 4 + size > len(data):
            return
        yield data[pos + 4:pos + 4 + size]
        pos += 4 + size


def sized(data, pos):
    """A string stored as a 2-byte big-endian length and its bytes."""
    (size,) = struct.unpack_from('>H', data, pos)
    return data[pos + 2:pos + 2 + size], pos + 2 + size


def decode(entry):
    """('job', identifier, status) or ('rule', identifier, fields)."""
    if entry[0] == 0:
        ident, pos = sized(entry, 1)
        return 'job', ident, STATUSES[entry[pos + 8]]
    ident, pos = sized(entry, 1)
    pattern, pos = sized(entry, pos)
    runner = entry[pos]
    fields = [pattern, b'shell' if runner == 0 else b'amqp']
    pos += 1
    for _ in range(1 if runner == 0 else 3):
        arg, pos = sized(entry, pos)
        fields.append(arg)
    return 'rule', ident, fields


def store(directory):
    """{identifier: status} of the jobs and {identifier: fields} of the
    rules, as the server would have them after a restart."""
    jobs, rules = {}, {}
    for name in STORE_FILES:
        for entry in entries(os.path.join(directory, name)):
            kind, ident, value = decode(entry)
            (jobs if kind == 'job' else rules)[ident] = value
    return jobs, rules


def print_sorted(lines):
    for line in sorted(lines):
        print(line)


def kcp(port, line):
    with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
        sock.sendall(line.encode() + b'\n')
        answer = b''
        while not answer.endswith(b'\n'):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    words = answer.split()
    return words[-1].decode() if words else 'EOF'


def amqp_connection(port):
    import pika
    return pika.BlockingConnection(pika.ConnectionParameters(
        host='127.0.0.1', port=port, connection_attempts=1,
        socket_timeout=10, blocked_connection_timeout=30))


def running(pid):
    """Whether process pid runs (a zombie has exited)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def amqp_ready(port, timeout, pid):
    """0 once RabbitMQ takes a connection, 1 on timeout, 2 if pid exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            amqp_connection(port).close()
            return 0
        except Exception:  # refused, reset, a handshake timeout: not yet
            if pid is not None and not running(pid):
                return 2
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.2)


def amqp_declare(port, exchange, queue, key):
    conn = amqp_connection(port)
    channel = conn.channel()
    channel.exchange_declare(exchange=exchange, exchange_type='direct')
    channel.queue_declare(queue=queue)
    channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)
    conn.close()


def amqp_consume(port, queue, count, timeout, quiet):
    conn = amqp_connection(port)
    channel = conn.channel()
    bodies = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    for method, _, body in channel.consume(queue, inactivity_timeout=0.2):
        now = time.monotonic()
        if method is not None:
            bodies.append(body)
            channel.basic_ack(method.delivery_tag)
        if quiet_until is None and len(bodies) >= count:
            quiet_until = now + quiet
        if now > (quiet_until if quiet_until is not None else deadline):
            break
    channel.cancel()
    conn.close()
    return bodies


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='command', required=True)
    p = sub.add_parser('store')
    p.add_argument('dir')
    p.add_argument('--prefix', default='')
    sub.add_parser('rules').add_argument('dir')
    sub.add_parser('records').add_argument('dir')
    p = sub.add_parser('kcp')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('line')
    p = sub.add_parser('amqp-ready')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--timeout', type=float, default=60)
    p.add_argument('--pid', type=int)
    p = sub.add_parser('amqp-declare')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('exchange')
    p.add_argument('queue')
    p.add_argument('routing_key')
    p = sub.add_parser('amqp-consume')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('queue')
    p.add_argument('--count', type=int, required=True)
    p.add_argument('--timeout', type=float, default=60)
    p.add_argument('--quiet', type=float, default=2)
    a = ap.parse_args()

    if a.command == 'store':
        prefix = bytes.fromhex(a.prefix)
        jobs, _ = store(a.dir)
        print_sorted('%s %s' % (status, ident.hex())
                     for ident, status in jobs.items() if ident.startswith(prefix))
    elif a.command == 'rules':
        _, rules = store(a.dir)
        print_sorted(' '.join([ident.hex()] + [f.hex() for f in fields])
                     for ident, fields in rules.items())
    elif a.command == 'records':
        contents = []
        for path in glob.glob(os.path.join(a.dir, '*.done')):
            with open(path, 'rb') as f:
                contents.append(f.read().hex())
        print_sorted(contents)
    elif a.command == 'kcp':
        print(kcp(a.port, a.line))
    elif a.command == 'amqp-ready':
        sys.exit(amqp_ready(a.port, a.timeout, a.pid))
    elif a.command == 'amqp-declare':
        amqp_declare(a.port, a.exchange, a.queue, a.routing_key)
    elif a.command == 'amqp-consume':
        print_sorted(b.hex() for b in amqp_consume(a.port, a.queue, a.count, a.timeout, a.quiet))


if __name__ == '__main__':
    main()
