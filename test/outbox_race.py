#!/usr/bin/python3
"""The race of kairoi_race.spec, many times over: a retried insertion.

For each identifier, session C schedules it and keeps its transaction
open; sessions A and B schedule it too and wait for C; C rolls back, so A
and B try to insert at once; then A rolls back and B commits, in whichever
order their calls return.  A writer that retried its speculative insertion
with stale values left the heap row and the primary key disagreeing in
about one identifier in five (amcheck finds it, and the check below that
every entry is found by its seq).  Prints what it did; the caller checks
the outbox.

usage: outbox_race.py DSN COUNT
"""
import sys
import threading
import time

import psycopg2

dsn, count = sys.argv[1], int(sys.argv[2])


def connect():
    connection = psycopg2.connect(dsn)
    connection.autocommit = False
    return connection


def schedule(connection, identifier, execution):
    with connection.cursor() as cursor:
        cursor.execute("SELECT kairoi_job_set(%s, %s)", (identifier, execution))


def wait_until_blocked(watcher, pid):
    with watcher.cursor() as cursor:
        for _ in range(2000):
            cursor.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                           "WHERE pid = %s", (pid,))
            row = cursor.fetchone()
            if row and row[0]:
                return
            time.sleep(0.005)
    raise RuntimeError("session %d never waited for the lock" % pid)


c, a, b, watcher = connect(), connect(), connect(), connect()
watcher.autocommit = True
for k in range(1, count + 1):
    identifier = "race-%d" % k
    schedule(c, identifier, "2030-01-01 03:00:00+00")
    threads = []
    for session, execution, commit in ((a, "2030-01-01 01:00:00+00", False),
                                       (b, "2030-01-01 02:00:00+00", True)):
        def run(session=session, execution=execution, commit=commit):
            schedule(session, identifier, execution)
            session.commit() if commit else session.rollback()
        thread = threading.Thread(target=run)
        thread.start()
        wait_until_blocked(watcher, session.get_backend_pid())
        threads.append(thread)
    c.rollback()
    for thread in threads:
        thread.join(60)
        if thread.is_alive():
            raise RuntimeError("a session did not finish: " + identifier)
print("raced %d identifiers" % count)
