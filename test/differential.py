#!/usr/bin/python3
"""test/differential.py: a randomized differential test of kairoi's enqueueing.

One seeded random stream of operations runs two ways at once, in the same
transactions: through kairoi's scheduling functions (kairoi_job_set, the
kairoi_rule_set* family, kairoi_job_set_many) and its C row trigger
(kairoi_job_trigger), which write kairoi's queue; and through plain SQL, an
INSERT ... ON CONFLICT (kind, identifier) DO UPDATE of the same row into
diff.copy, a copy of the outbox with its own seq (from its own sequence,
drawn on insert and kept on update, as the outbox does).  Every operation
first calls kairoi, then writes the copy, in the same transaction, so both
commit or roll back together: savepoints and ROLLBACK TO, errors after an
enqueue, plpgsql exception blocks (with and without DDL on kairoi.pending_jobs,
mirrored on the copy), 2PC, READ COMMITTED / REPEATABLE READ / SERIALIZABLE
(serialization failures are expected outcomes) and lock and statement
timeouts, from several concurrent sessions whose identifiers collide.

No worker delivers (the caller's cluster has no worker or a server address
nobody listens on), so the outbox keeps everything committed.  At the end,
per (kind, identifier): the same identifiers both ways, the same arguments,
and the same relative order by seq.  Two concurrent transactions that each
insert a new identifier draw from the two sequences at slightly different
moments, so the order of such a pair is not determined; the copy records
which operation inserted each row (ins_op), each operation's time window is
known, and a pair whose order differs is accepted only if it was inserted
by two operations of different sessions whose windows overlap.  Everything
else must agree.

Prints "ok - ..." / "not ok - ..." lines (test/integration/differential.sh
counts them), the per-category figures, and exits non-zero on a failure.
The seed is printed: --seed replays the same stream per session (the
interleaving of sessions is the scheduler's).
"""

import argparse
import bisect
import collections
import datetime
import itertools
import random
import sys
import threading
import time
import traceback

import psycopg2
import psycopg2.extensions

POOL_JOBS = 30          # p0 .. p29: shared by all sessions (and the trigger)
POOL_RULES = 8          # r0 .. r7
NEW_SHARE = 0.3         # share of identifiers never used before

# Outcomes that a test of this kind must expect: both sides roll back
EXPECTED = {
    '40001': 'serialization failure',
    '40P01': 'deadlock',
    '55P03': 'lock timeout',
    '57014': 'statement timeout',
}

SETUP_SQL = """
CREATE EXTENSION IF NOT EXISTS kairoi;
CREATE SCHEMA diff;
CREATE SEQUENCE diff.copy_seq;
CREATE TABLE diff.copy (
    seq bigint NOT NULL DEFAULT nextval('diff.copy_seq') PRIMARY KEY,
    kind "char" NOT NULL,
    identifier text NOT NULL,
    arguments text[] NOT NULL,
    ins_op bigint NOT NULL,         -- the operation that inserted the row
    UNIQUE (kind, identifier)
);
-- the application table of the C trigger: job 'p' || id at (at - 15 min)
CREATE TABLE diff.app (id integer PRIMARY KEY, at timestamptz);
CREATE TRIGGER app_job AFTER INSERT OR UPDATE ON diff.app FOR EACH ROW
    EXECUTE FUNCTION kairoi_job_trigger('p', 'id', 'at', '-15 minutes');
-- an index of each table that exception blocks drop and restore
CREATE INDEX queue_diff_idx ON kairoi.pending_jobs (enqueued_at);
CREATE INDEX copy_diff_idx ON diff.copy (ins_op);
"""

# The queue's table of each kind of entry
QUEUE_TABLE = {'j': 'pending_jobs', 'r': 'pending_rules'}

MIRROR_SQL = (
    "INSERT INTO diff.copy AS c (kind, identifier, arguments, ins_op) "
    "VALUES (%s, %s, %s::text[], %s) "
    "ON CONFLICT (kind, identifier) DO UPDATE SET arguments = EXCLUDED.arguments")

TEXT_ALPHABET = ("abcdefghijklmnopqrstuvwxyz0123456789 ._-/:'\"\\\n\téü✓日"
                 "ABCXYZ")
TRIGGER_OFFSET = -15 * 60
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def format_execution(micros):
    """What kairoi stores for a time (µs since 1970): rounded up, UTC."""
    secs = -(-micros // 1000000)
    return (EPOCH + datetime.timedelta(seconds=secs)).strftime('%Y-%m-%d %H:%M:%S')


def time_literal(micros):
    secs, us = divmod(micros, 1000000)
    t = EPOCH + datetime.timedelta(seconds=secs)
    return '%s.%06d+00' % (t.strftime('%Y-%m-%d %H:%M:%S'), us)


class Entry:
    """One row scheduled: what kairoi and the copy must both end with."""
    __slots__ = ('kind', 'identifier', 'arguments')

    def __init__(self, kind, identifier, arguments):
        self.kind = kind
        self.identifier = identifier
        self.arguments = arguments


class Op:
    """A kairoi statement and the rows it schedules, in order."""

    def __init__(self, category, stmt, entries, plstmt=None, returning=False):
        self.category = category
        self.stmt = stmt                  # run from the client
        self.plstmt = plstmt or stmt      # run inside a plpgsql block
        self.entries = entries
        self.returning = returning        # entries come from its RETURNING


class Provoked(Exception):
    """The provoked error happened as planned (the transaction is aborted)."""


class Shared:
    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.seconds
        self.op_ids = itertools.count(1)
        self.windows = {}                 # op id -> (start, end, session)
        self.lock = threading.Lock()
        self.ops = collections.Counter()          # category -> ops run
        self.ops_committed = collections.Counter()
        self.ops_rolled_back = collections.Counter()
        self.step_errors = collections.Counter()  # (category, outcome) -> n
        self.outcomes = collections.Counter()     # transaction outcomes
        self.isolation = collections.Counter()    # (level, committed?) -> n
        self.unexpected = []                      # (category, sqlstate, message)
        self.transactions = 0
        self.fresh = 0                            # see Session.fresh_id


class Session(threading.Thread):
    def __init__(self, number, shared, seed):
        super().__init__(name='session-%d' % number)
        self.number = number
        self.shared = shared
        self.rng = random.Random(seed)
        self.new_ids = itertools.count()
        self.gids = itertools.count()
        self.conn = None
        self.cur = None
        self.ops_in_tx = []
        self.current = None             # the category of the step running
        self.crashed = None

    # ---- connection and statements ----

    def connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.conn = psycopg2.connect(self.shared.args.dsn)
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.conn.autocommit = True       # transactions are explicit
        self.cur = self.conn.cursor()
        # a session's time zone must not change what kairoi stores (UTC)
        self.ex("SET TIME ZONE %s", (self.rng.choice(
            ['UTC', 'Asia/Kolkata', 'America/St_Johns', 'Pacific/Chatham']),))

    def ex(self, sql, params=None):
        self.cur.execute(sql, params)

    def lit(self, sql, params):
        return self.cur.mogrify(sql, params).decode()

    # ---- random values ----

    def text(self, n_min=1, n_max=12):
        return ''.join(self.rng.choice(TEXT_ALPHABET)
                       for _ in range(self.rng.randint(n_min, n_max)))

    def micros(self):
        # 2030 .. 2040, whole seconds or not
        secs = self.rng.randint(1893456000, 2208988800)
        us = self.rng.randint(1, 999999) if self.rng.random() < 0.4 else 0
        return secs * 1000000 + us

    def job_id(self):
        r = self.rng.random()
        if r < NEW_SHARE:
            return 'n%d_%d' % (self.number, next(self.new_ids))
        if r < NEW_SHARE + 0.05:
            return self.fresh_id()
        return 'p%d' % self.rng.randrange(POOL_JOBS)

    def fresh_id(self):
        """A new identifier that other sessions are likely to insert too,
        at about the same time: first insertions of one key collide."""
        self.fresh_used.add(self.shared.fresh)
        return 'f%d' % self.shared.fresh

    def committed(self):
        # the next contended identifier is one nobody committed yet
        if self.shared.fresh in self.fresh_used:
            self.shared.fresh += 1

    def op_contended(self):
        """The first schedule of a new identifier that the other sessions
        schedule too, kept a moment: they wait for it, and if it rolls back
        they all try to insert the row at once."""
        ident, t = self.fresh_id(), self.micros()
        call = self.lit("kairoi_job_set(%s, %s::timestamptz)", (ident, time_literal(t)))
        return Op('job_set_contended', 'SELECT ' + call,
                  [Entry('j', ident, [format_execution(t)])], 'PERFORM ' + call)

    def rule_id(self):
        if self.rng.random() < NEW_SHARE:
            return 'rn%d_%d' % (self.number, next(self.new_ids))
        return 'r%d' % self.rng.randrange(POOL_RULES)

    def app_id(self):
        if self.rng.random() < NEW_SHARE:
            return 100000 + self.number * 10000000 + next(self.new_ids)
        return self.rng.randrange(POOL_JOBS)

    # ---- operations ----

    def op_job(self):
        ident, t = self.job_id(), self.micros()
        call = self.lit("kairoi_job_set(%s, %s::timestamptz)", (ident, time_literal(t)))
        return Op('job_set', 'SELECT ' + call,
                  [Entry('j', ident, [format_execution(t)])], 'PERFORM ' + call)

    def op_rule(self):
        ident, pattern = self.rule_id(), self.text()
        form = self.rng.randrange(4)
        if form == 0:
            script = self.text()
            call = self.lit("kairoi_rule_set_shell(%s, %s, %s)", (ident, pattern, script))
            args = [pattern, 'shell', script]
        elif form == 1:
            dsn, exchange, key = self.text(), self.text(), self.text()
            call = self.lit("kairoi_rule_set_amqp(%s, %s, %s, %s, %s)",
                            (ident, pattern, dsn, exchange, key))
            args = [pattern, 'amqp', dsn, exchange, key]
        elif form == 2:
            script = self.text()
            call = self.lit("kairoi_rule_set(%s, %s, 'shell', %s)", (ident, pattern, script))
            args = [pattern, 'shell', script]
        else:
            runner_args = [self.text() for _ in range(3)]
            call = self.lit("kairoi_rule_set(%s, %s, 'amqp', VARIADIC %s::text[])",
                            (ident, pattern, runner_args))
            args = [pattern, 'amqp'] + runner_args
        return Op('rule_set', 'SELECT ' + call, [Entry('r', ident, args)], 'PERFORM ' + call)

    def op_many(self):
        ids = [self.job_id() for _ in range(self.rng.randint(2, 6))]
        if self.rng.random() < 0.3:       # duplicates: the last one wins
            ids.append(self.rng.choice(ids))
            self.rng.shuffle(ids)
        times = [self.micros() for _ in ids]
        call = self.lit("kairoi_job_set_many(%s::text[], %s::timestamptz[])",
                        (ids, [time_literal(t) for t in times]))
        # as successive single calls: the copy gets one upsert per element
        entries = [Entry('j', i, [format_execution(t)]) for i, t in zip(ids, times)]
        return Op('job_set_many', 'SELECT ' + call, entries, 'PERFORM ' + call)

    def op_trigger(self):
        ids = []
        while len(ids) < self.rng.randint(1, 3):
            i = self.app_id()
            if i not in ids:
                ids.append(i)
        times = [self.micros() for _ in ids]
        rows = ', '.join(self.lit("(%s, %s::timestamptz)", (i, time_literal(t)))
                         for i, t in zip(ids, times))
        stmt = ("INSERT INTO diff.app AS a (id, at) VALUES %s "
                "ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at" % rows)
        entries = [Entry('j', 'p%d' % i, [format_execution(t + TRIGGER_OFFSET * 1000000)])
                   for i, t in zip(ids, times)]
        return Op('trigger', stmt, entries)

    def op_trigger_update(self):
        # rows in the order the statement updated them, as the trigger fired
        ids = sorted({self.rng.randrange(POOL_JOBS) for _ in range(self.rng.randint(1, 4))})
        stmt = self.lit("UPDATE diff.app SET at = at + %s * interval '1 second' "
                        "WHERE id = ANY (%s) RETURNING id, at",
                        (self.rng.randint(-86400, 86400) + self.rng.random(), ids))
        return Op('trigger_update', stmt, None, returning=True)

    def plain_op(self):
        r = self.rng.random()
        if r < 0.25:
            return self.op_contended()
        if r < 0.35:
            return self.op_job()
        if r < 0.55:
            return self.op_rule()
        if r < 0.72:
            return self.op_many()
        if r < 0.90:
            return self.op_trigger()
        return self.op_trigger_update()

    def block_op(self):
        """An op that can run inside a plpgsql block (its rows known before)."""
        op = self.plain_op()
        while op.returning:
            op = self.plain_op()
        return op

    def mirror_sql(self, entries, op_id):
        return ';\n'.join(self.lit(MIRROR_SQL, (e.kind, e.identifier, e.arguments, op_id))
                          for e in entries)

    def run_op(self, op):
        """Run one op both ways, as one window."""
        op_id = next(self.shared.op_ids)
        self.current = op.category
        start = time.monotonic()
        try:
            self.ex(op.stmt)
            entries = op.entries
            if op.returning:
                entries = [Entry('j', 'p%d' % i,
                                 [format_execution(int((at - EPOCH).total_seconds()) * 1000000
                                                   + at.microsecond
                                                   + TRIGGER_OFFSET * 1000000)])
                           for i, at in self.cur.fetchall()]
            for e in entries:
                self.ex(MIRROR_SQL, (e.kind, e.identifier, e.arguments, op_id))
        finally:
            self.shared.windows[op_id] = (start, time.monotonic(), self.number)
        self.count_op(op.category)
        if op.category == 'job_set_contended':
            # keep it a moment, then often give up: its waiters race
            time.sleep(self.rng.uniform(0.005, 0.05))
            if self.rng.random() < 0.5:
                self.provoke_error()

    def run_block(self, category, body_ops, handler_ops=(), after_ops=(),
                  inside='', raise_sql="RAISE EXCEPTION 'diff: undo the block'",
                  catch='raise_exception'):
        """A DO block: body ops, then `inside` (DDL), body ops again, then
        raise (caught by `catch`, whose handler runs handler_ops); after_ops
        follow the block in the same statement."""
        op_id = next(self.shared.op_ids)

        def ops_sql(ops):
            return ''.join('%s;\n%s;\n' % (o.plstmt, self.mirror_sql(o.entries, op_id))
                           for o in ops)

        half = len(body_ops) // 2
        sql = ("DO $diff$\nBEGIN\n  BEGIN\n%s%s%s%s;\n  EXCEPTION WHEN %s THEN\n%s  END;\n%sEND\n$diff$"
               % (ops_sql(body_ops[:half]), inside, ops_sql(body_ops[half:]),
                  raise_sql or 'NULL', catch, ops_sql(handler_ops) or 'NULL;\n',
                  ops_sql(after_ops)))
        assert '$diff$' not in sql[7:-6]
        self.current = category
        start = time.monotonic()
        try:
            self.ex(sql)
        finally:
            self.shared.windows[op_id] = (start, time.monotonic(), self.number)
        self.count_op(category)

    def count_op(self, category):
        self.ops_in_tx.append(category)
        with self.shared.lock:
            self.shared.ops[category] += 1

    # ---- steps of a transaction ----

    def step_block(self):
        body = [self.block_op() for _ in range(self.rng.randint(1, 3))]
        handler = [self.block_op() for _ in range(self.rng.randint(0, 2))]
        after = [self.block_op() for _ in range(self.rng.randint(0, 1))]
        kind = self.rng.randrange(3)
        if kind == 0:       # raise: the block's rows vanish, the handler's stay
            self.run_block('block_raise', body, handler, after)
        elif kind == 1:     # kairoi itself raises inside the block
            bad = self.rng.choice(["PERFORM kairoi_job_set('', now())",
                                   "PERFORM kairoi_job_set(NULL, now())",
                                   "PERFORM kairoi_rule_set('x', 'p', 'nope', 'a')"])
            self.run_block('block_kairoi_error', body, handler, after, raise_sql=bad,
                           catch='invalid_parameter_value OR null_value_not_allowed')
        else:               # the block ends normally: its subtransaction commits
            self.run_block('block_commit', body, handler, after, raise_sql=None)

    def step_ddl_block(self):
        self.ex("SET LOCAL lock_timeout = '1s'")
        body = [self.block_op() for _ in range(self.rng.randint(1, 3))]
        handler = [self.block_op() for _ in range(self.rng.randint(0, 1))]
        after = [self.block_op() for _ in range(self.rng.randint(1, 2))]
        kind = self.rng.randrange(4)
        if kind == 0:
            n = next(self.shared.op_ids)
            ddl = ("CREATE INDEX queue_tmp_%d ON kairoi.pending_jobs (version);\n"
                   "CREATE INDEX copy_tmp_%d ON diff.copy (seq, kind);\n" % (n, n))
            self.run_block('ddl_create_index_raise', body, handler, after, inside=ddl)
        elif kind == 1:
            ddl = "DROP INDEX kairoi.queue_diff_idx;\nDROP INDEX diff.copy_diff_idx;\n"
            self.run_block('ddl_drop_index_raise', body, handler, after, inside=ddl)
        elif kind == 2:
            ddl = "TRUNCATE kairoi.pending_jobs, kairoi.pending_rules;\nTRUNCATE diff.copy;\n"
            self.run_block('ddl_truncate_raise', body, handler, after, inside=ddl)
        else:
            # an index created for good (if the transaction commits), or one
            # such index dropped for good
            self.ex("SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'queue\\_keep\\_%%'"
                    " AND c.relnamespace = 'kairoi'::regnamespace")
            kept = [r[0] for r in self.cur.fetchall()]
            if len(kept) < 2:
                n = next(self.shared.op_ids)
                ddl = ("CREATE INDEX queue_keep_%d ON kairoi.pending_jobs (identifier, seq);\n"
                       "CREATE INDEX copy_keep_%d ON diff.copy (identifier, seq);\n" % (n, n))
                self.run_block('ddl_create_index_kept', body, handler, after, inside=ddl,
                               raise_sql=None)
            else:
                suffix = self.rng.choice(kept)[len('queue_keep_'):]
                ddl = ("DROP INDEX IF EXISTS kairoi.queue_keep_%s;\n"
                       "DROP INDEX IF EXISTS diff.copy_keep_%s;\n" % (suffix, suffix))
                self.run_block('ddl_drop_index_kept', body, handler, after, inside=ddl,
                               raise_sql=None)

    def step_savepoint(self, depth):
        name = 's%d' % depth
        self.ex('SAVEPOINT ' + name)
        try:
            for _ in range(self.rng.randint(1, 3)):
                self.step(depth + 1)
            r = self.rng.random()
            if r < 0.2:
                self.provoke_error()
        except (psycopg2.Error, Provoked) as e:
            code = e.pgcode if isinstance(e, psycopg2.Error) else 'provoked'
            if isinstance(e, psycopg2.Error) and code not in EXPECTED:
                raise
            if not self.connection_alive():
                raise
            self.ex('ROLLBACK TO ' + name)
            self.count_op('savepoint_rollback_after_error')
            with self.shared.lock:
                self.shared.step_errors[('savepoint', EXPECTED.get(code, 'provoked error'))] += 1
            return
        if self.rng.random() < 0.5:
            self.ex('ROLLBACK TO ' + name)
            self.count_op('savepoint_rollback')
        else:
            self.ex('RELEASE ' + name)
            self.count_op('savepoint_release')

    def provoke_error(self):
        """An error after an enqueue: the statement fails as planned."""
        self.current = 'error_after_enqueue'
        choice = self.rng.randrange(4)
        if choice == 0:
            sql, code = "SELECT 1 / 0", '22012'
        elif choice == 1:
            sql, code = "SELECT kairoi_job_set(NULL, now())", '22004'
        elif choice == 2:
            sql, code = self.lit("SELECT kairoi_job_set_many(%s::text[], ARRAY[now(), now()])",
                                 (['p1', ''],)), '22023'
        else:
            # a trigger error after the same statement enqueued a first row
            sql = self.lit("INSERT INTO diff.app (id, at) VALUES (%s, now()), (%s, NULL) "
                           "ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                           (self.app_id(), 200000000 + self.number * 10000000
                            + next(self.new_ids)))
            code = '22004'
        try:
            self.ex(sql)
        except psycopg2.Error as e:
            if e.pgcode == code:
                self.count_op('error_after_enqueue')
                raise Provoked() from e
            raise
        raise AssertionError('statement did not fail: ' + sql)

    def step_hold(self):
        """Lock some shared rows of both tables, and keep them a while."""
        self.current = 'hold_rows_for_update'
        ids = [('j', 'p%d' % self.rng.randrange(POOL_JOBS)) for _ in range(self.rng.randint(1, 2))]
        if self.rng.random() < 0.3:
            ids.append(('r', 'r%d' % self.rng.randrange(POOL_RULES)))
        for kind, ident in ids:
            self.ex("SELECT 1 FROM kairoi.%s WHERE identifier = %%s FOR UPDATE"
                    % QUEUE_TABLE[kind], (ident,))
            self.ex("SELECT 1 FROM diff.copy WHERE kind = %s AND identifier = %s FOR UPDATE",
                    (kind, ident))
        self.count_op('hold_rows_for_update')
        time.sleep(self.rng.uniform(0.02, 0.1))

    def step_delete(self):
        """Delete rows as the worker does once they are delivered (none is,
        here), so that shared identifiers get inserted anew."""
        keys = [('j', 'p%d' % self.rng.randrange(POOL_JOBS)) for _ in range(self.rng.randint(1, 3))]
        keys.append(('j', 'f%d' % (self.shared.fresh - self.rng.randrange(1, 4))))
        if self.rng.random() < 0.3:
            keys.append(('r', 'r%d' % self.rng.randrange(POOL_RULES)))
        self.current = 'delete_as_delivered'
        op_id = next(self.shared.op_ids)
        start = time.monotonic()
        # one statement, so one snapshot: in READ COMMITTED, two would
        # differ on a row committed between them
        keyset = ("(kind, identifier) IN (SELECT k::\"char\", i "
                  "FROM unnest(%(k)s::text[], %(i)s::text[]) AS u (k, i))")
        try:
            self.ex("WITH j AS (DELETE FROM kairoi.pending_jobs WHERE identifier IN ("
                    "  SELECT i FROM unnest(%(k)s::text[], %(i)s::text[]) AS u (k, i) WHERE k = 'j') "
                    "  RETURNING 1), "
                    "r AS (DELETE FROM kairoi.pending_rules WHERE identifier IN ("
                    "  SELECT i FROM unnest(%(k)s::text[], %(i)s::text[]) AS u (k, i) WHERE k = 'r') "
                    "  RETURNING 1) "
                    "DELETE FROM diff.copy WHERE " + keyset,
                    {'k': [k for k, _ in keys], 'i': [i for _, i in keys]})
        finally:
            self.shared.windows[op_id] = (start, time.monotonic(), self.number)
        self.count_op('delete_as_delivered')

    def step(self, depth=0):
        r = self.rng.random()
        if r < 0.06 and depth <= 1:
            self.step_delete()
        elif r < 0.62 or depth > 1:
            self.run_op(self.plain_op())
        elif r < 0.74:
            self.step_savepoint(depth)
        elif r < 0.84:
            self.step_block()
        elif r < 0.87:
            if self.shared.args.without_ddl:
                self.step_block()
            else:
                self.step_ddl_block()
        elif r < 0.93:
            self.step_hold()
        else:
            self.run_op(self.plain_op())
            self.provoke_error()

    # ---- transactions ----

    def connection_alive(self):
        return self.conn is not None and self.conn.closed == 0

    def transaction(self):
        self.ops_in_tx = []
        self.current = None
        self.fresh_used = set()
        outcome = None
        category = None
        iso = self.rng.choices(['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'],
                               [55, 35, 10])[0]
        try:
            self.ex('BEGIN ISOLATION LEVEL ' + iso)
            if self.rng.random() < 0.25:
                self.ex("SET LOCAL lock_timeout = %s", (self.rng.choice(['5ms', '20ms', '50ms']),))
            if self.rng.random() < 0.1:
                self.ex("SET LOCAL statement_timeout = %s", (self.rng.choice(['30ms', '80ms']),))
            for _ in range(self.rng.randint(1, 5)):
                self.step()
            if self.rng.random() < 0.1:
                time.sleep(self.rng.uniform(0.01, 0.06))  # hold what it wrote
            end = self.rng.random()
            if end < 0.65:
                category = 'commit'
                self.ex('COMMIT')
                self.committed()
                outcome = 'committed'
            elif end < 0.8:
                self.ex('ROLLBACK')
                outcome = 'rolled back'
            else:
                category = 'prepare'
                gid = 'diff_%d_%d' % (self.number, next(self.gids))
                self.ex("PREPARE TRANSACTION %s", (gid,))
                if self.rng.random() < 0.5:
                    time.sleep(self.rng.uniform(0.0, 0.05))   # others wait on it
                if self.rng.random() < 0.7:
                    self.ex("COMMIT PREPARED %s", (gid,))
                    self.committed()
                    outcome = 'committed (2PC)'
                else:
                    self.ex("ROLLBACK PREPARED %s", (gid,))
                    outcome = 'rolled back (2PC)'
        except Provoked:
            category = 'error_after_enqueue'
            outcome = 'rolled back after a provoked error'
            self.ex('ROLLBACK')
        except psycopg2.Error as e:
            code = e.pgcode
            category = category or self.current
            if code in EXPECTED:
                outcome = EXPECTED[code]
            else:
                outcome = 'unexpected error'
                with self.shared.lock:
                    self.shared.unexpected.append(
                        (self.name, category, code,
                         str(e).strip().splitlines()[0] if str(e) else repr(e)))
            if self.connection_alive():
                try:
                    self.ex('ROLLBACK')
                except psycopg2.Error:
                    pass
            if not self.connection_alive():
                self.connect()
        with self.shared.lock:
            self.shared.transactions += 1
            self.shared.outcomes[outcome] += 1
            self.shared.isolation[(iso, outcome.startswith('committed'))] += 1
            if outcome not in ('committed', 'committed (2PC)', 'rolled back',
                               'rolled back (2PC)', 'rolled back after a provoked error'):
                self.shared.step_errors[(category or 'begin', outcome)] += 1
            counter = (self.shared.ops_committed if outcome.startswith('committed')
                       else self.shared.ops_rolled_back)
            for c in self.ops_in_tx:
                counter[c] += 1

    def run(self):
        try:
            self.connect()
            done = 0
            while (time.monotonic() < self.shared.deadline
                   and done < self.shared.args.max_transactions):
                self.transaction()
                done += 1
            self.conn.close()
        except Exception:           # reported as a failure
            self.crashed = traceback.format_exc()


# ---- the comparison ----

def compare(conn, shared):
    cur = conn.cursor()
    failures = []

    def check(ok, what, detail=''):
        print('%s - %s%s' % ('ok' if ok else 'not ok', what, (': ' + detail) if detail and not ok else ''))
        if not ok:
            failures.append(what)

    cur.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'diff\\_%%'")
    left = [r[0] for r in cur.fetchall()]
    conn.autocommit = True
    for gid in left:      # sessions whose connection broke after PREPARE
        cur.execute("COMMIT PREPARED %s", (gid,))
    check(not left, 'no prepared transaction left behind',
          '%d committed now: %s' % (len(left), left[:5]))

    cur.execute("SELECT kind, identifier, arguments, seq FROM kairoi.outbox")
    outbox = {(k, i): (a, s) for k, i, a, s in cur.fetchall()}
    cur.execute("SELECT kind, identifier, arguments, seq, ins_op FROM diff.copy")
    copy = {(k, i): (a, s, o) for k, i, a, s, o in cur.fetchall()}
    print('# committed identifiers: %d in kairoi.outbox, %d in the copy' % (len(outbox), len(copy)))

    missing = sorted(set(copy) - set(outbox))
    extra = sorted(set(outbox) - set(copy))
    check(not missing and not extra, 'the same identifiers in kairoi.outbox and the copy',
          '%d missing from kairoi.outbox %s, %d only there %s'
          % (len(missing), missing[:5], len(extra), extra[:5]))

    common = set(outbox) & set(copy)
    wrong = sorted(k for k in common if outbox[k][0] != copy[k][0])
    check(not wrong, 'the same arguments per identifier',
          '%d differ, e.g. %s' % (len(wrong), [(k, outbox[k][0], copy[k][0]) for k in wrong[:3]]))

    # order: every pair inverted between the two sides must be two
    # overlapping insertions of different sessions
    ordered = sorted(common, key=lambda k: outbox[k][1])
    prior = []                  # copy seqs seen so far, sorted
    key_of = {}
    concurrent = 0
    bad = []
    windows = shared.windows
    for k in ordered:
        cseq = copy[k][1]
        for other_seq in prior[bisect.bisect_right(prior, cseq):]:
            o = key_of[other_seq]
            wa, wb = windows.get(copy[o][2]), windows.get(copy[k][2])
            if (wa and wb and wa[2] != wb[2] and wa[0] < wb[1] and wb[0] < wa[1]):
                concurrent += 1
            else:
                bad.append((o, k))
                if len(bad) > 1000:
                    break
        if len(bad) > 1000:
            break
        bisect.insort(prior, cseq)
        key_of[cseq] = k
    print('# pairs in a different order because inserted concurrently: %d' % concurrent)
    check(not bad, 'the same order by seq among identifiers (rank by seq on both sides)',
          '%s%d pairs out of order, e.g. %s'
          % ('over ' if len(bad) > 1000 else '', len(bad),
             [(a, outbox[a][1], copy[a][1], b, outbox[b][1], copy[b][1]) for a, b in bad[:3]]))
    return failures


def report(shared, seed, elapsed):
    print('# seed %d, %d sessions, %.1f s, %d transactions'
          % (seed, shared.args.sessions, elapsed, shared.transactions))
    print('# transaction outcomes:')
    for outcome, n in sorted(shared.outcomes.items(), key=lambda x: -x[1]):
        print('#   %-40s %7d' % (outcome, n))
    print('# isolation levels: transactions, committed')
    for iso in ('READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'):
        print('#   %-32s %7d %7d' % (iso, shared.isolation[(iso, True)] + shared.isolation[(iso, False)],
                                      shared.isolation[(iso, True)]))
    print('# operations per category: run, in committed transactions, in rolled-back ones')
    for c in sorted(shared.ops):
        print('#   %-32s %7d %7d %7d' % (c, shared.ops[c], shared.ops_committed[c],
                                          shared.ops_rolled_back[c]))
    if shared.step_errors:
        print('# errors per category of the step that met them:')
        for (c, o), n in sorted(shared.step_errors.items()):
            print('#   %-32s %-24s %6d' % (c, o, n))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dsn', required=True)
    parser.add_argument('--seconds', type=float, default=30)
    parser.add_argument('--seed', type=int, default=None)
    parser.add_argument('--sessions', type=int, default=4)
    parser.add_argument('--max-transactions', type=int, default=10 ** 9,
                        help='per session (the run stops at whichever comes first)')
    parser.add_argument('--without-ddl', action='store_true',
                        help='no DDL in exception blocks (to tell defects apart)')
    parser.add_argument('--setup', action='store_true',
                        help='create the copy, the trigger table and the extension first')
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 31)
    print('# differential: seed %d (replay with --seed %d)' % (seed, seed))
    sys.stdout.flush()

    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    if args.setup:
        conn.cursor().execute(SETUP_SQL)

    shared = Shared(args)
    sessions = [Session(n, shared, seed * 100 + n) for n in range(args.sessions)]
    started = time.monotonic()
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    elapsed = time.monotonic() - started
    report(shared, seed, elapsed)

    failures = []
    crashed = [s for s in sessions if s.crashed]
    for s in crashed:
        print('# %s stopped:\n%s' % (s.name, ''.join('#   ' + l + '\n' for l in s.crashed.splitlines())))
    print('%s - every session ran to the end' % ('not ok' if crashed else 'ok'))
    if crashed:
        failures.append('sessions')
    if shared.unexpected:
        print('not ok - no unexpected error: %d, first ones:' % len(shared.unexpected))
        for name, category, code, msg in shared.unexpected[:10]:
            print('#   %s, %s: %s %s' % (name, category, code, msg))
        print('# unexpected errors per category of the step that met them, and SQLSTATE:')
        kinds = collections.Counter((c, code) for _, c, code, _ in shared.unexpected)
        for (c, code), n in sorted(kinds.items(), key=str):
            print('#   %-32s %-6s %6d' % (c, code, n))
        failures.append('unexpected')
    else:
        print('ok - no unexpected error')
    # the stream must have covered what it claims to
    wanted_ops = ['job_set', 'job_set_contended', 'rule_set', 'job_set_many', 'trigger', 'trigger_update',
                  'savepoint_rollback', 'savepoint_release', 'error_after_enqueue',
                  'block_raise', 'block_kairoi_error', 'block_commit', 'hold_rows_for_update',
                  'delete_as_delivered']
    wanted_outcomes = ['committed', 'rolled back', 'committed (2PC)', 'rolled back (2PC)',
                       'serialization failure', 'lock timeout', 'statement timeout']
    lacking = ([c for c in wanted_ops if not shared.ops[c]]
               + [o for o in wanted_outcomes if not shared.outcomes[o]])
    ddl = sum(n for c, n in shared.ops.items() if c.startswith('ddl_'))
    if not ddl and not args.without_ddl:
        lacking.append('DDL in an exception block')
    print('%s - the stream covered every category and outcome%s'
          % ('not ok' if lacking else 'ok', (': none of ' + ', '.join(lacking)) if lacking else ''))
    if lacking:
        failures.append('coverage')
    failures += compare(conn, shared)
    conn.close()
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
