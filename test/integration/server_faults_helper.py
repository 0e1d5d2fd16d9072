#!/usr/bin/python3
"""Helper of test/integration/server_faults.sh: questions about the test
server's state and request log that are awkward in bash.

    server_faults_helper.py --port CPORT verify            < "id|YYYY-MM-DD HH:MM:SS" lines
    server_faults_helper.py --port CPORT job-ids PREFIX     ids of SET requests logged (one a line)
    server_faults_helper.py --port CPORT held PREFIX        ids logged (received) but not stored
    server_faults_helper.py --port CPORT resent FILE        how many ids of FILE were received again
    server_faults_helper.py --port CPORT requests-for ID    how many SET requests named job ID
    server_faults_helper.py --port CPORT count-requests     how many requests are logged
    server_faults_helper.py --port CPORT missing FILE       how many ids of FILE are not stored
    server_faults_helper.py --port CPORT freeze N DIR
        once N jobs are stored, freeze the server (stall; set reply_delay_ms
        first) at a moment when it holds requests it has read but not
        answered; writes DIR/received, DIR/stored and DIR/held (job ids)
    server_faults_helper.py --port CPORT rule-first RULE PREFIX
        "ok" if the first RULE SET request for RULE precedes every SET of a
        job whose identifier starts with PREFIX; prints the sequence numbers

Exit status: 0 when the check holds, 1 when it does not, 2 on usage errors.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from kairoi_ctl import Control, compare_jobs  # noqa: E402


def set_requests(ctl):
    """(seq, job id) of every logged SET request"""
    out = []
    for r in ctl.requests():
        args = r['args']
        if len(args) >= 4 and args[1] == 'SET':
            out.append((r['seq'], args[2]))
    return out


def cmd_verify(ctl, _args):
    expected = {}
    for line in sys.stdin:
        line = line.rstrip('\n')
        if not line:
            continue
        ident, sep, when = line.partition('|')
        if not sep:
            print('bad expected line: %r' % line)
            return 2
        expected[ident] = when
    jobs = ctl.state()['jobs']
    missing, wrong, extra = compare_jobs(expected, jobs)
    print('server has %d jobs, %d committed: %d missing, %d with a wrong time, %d unexpected'
          % (len(jobs), len(expected), len(missing), len(wrong), len(extra)))
    for k in missing[:5]:
        print('  missing %s (committed %s)' % (k, expected[k]))
    for k in wrong[:5]:
        print('  wrong time %s: server %s, committed %s' % (k, jobs[k], expected[k]))
    for k in extra[:5]:
        print('  unexpected %s at %s' % (k, jobs[k]))
    return 0 if not (missing or wrong or extra) else 1


def cmd_job_ids(ctl, args):
    ids = sorted({j for _, j in set_requests(ctl) if j.startswith(args.arg[0])})
    for j in ids:
        print(j)
    return 0


def cmd_held(ctl, args):
    jobs = ctl.state()['jobs']
    ids = sorted({j for _, j in set_requests(ctl)
                  if j.startswith(args.arg[0]) and j not in jobs})
    for j in ids:
        print(j)
    return 0


def cmd_resent(ctl, args):
    with open(args.arg[0]) as f:
        before = {line.strip() for line in f if line.strip()}
    again = {j for _, j in set_requests(ctl) if j in before}
    print(len(again))
    return 0


def cmd_missing(ctl, args):
    with open(args.arg[0]) as f:
        ids = {line.strip() for line in f if line.strip()}
    jobs = ctl.state()['jobs']
    print(sum(1 for j in ids if j not in jobs))
    return 0


def wait_applied_stable(ctl, quiet_s):
    """Wait until the server's applied count has not moved for quiet_s."""
    prev = ctl.counts()['applied']
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        cur = ctl.counts()['applied']
        if cur == prev:
            return True
        prev = cur
    return False


def cmd_freeze(ctl, args):
    """With reply_delay_ms set, the server's executor sleeps before each
    batch while its reader keeps reading: most of the time it holds
    requests it has read and not answered.  Stall it then, and check."""
    n = int(args.arg[0])
    outdir = args.arg[1]
    # in-process polling: the freeze comes a few ms after N
    c = ctl.wait_until(lambda c: c['jobs'] >= n, timeout=120, cmd='counts')
    delay_s = c['faults']['reply_delay_ms'] / 1000.0
    quiet_s = delay_s + 0.2
    for attempt in range(1, 21):
        # N was reached by a batch just applied: stall in the middle of the
        # next sleep, once the reader has queued the client's next requests
        time.sleep(delay_s / 2)
        ctl.fault(stall=True)
        # frozen once nothing is applied for longer than the reply delay
        if not wait_applied_stable(ctl, quiet_s):
            print('server did not settle')
            return 1
        received = {j for _, j in set_requests(ctl)}
        stored = set(ctl.state()['jobs'])
        held = received - stored
        if held:
            for name, ids in (('received', received), ('stored', stored), ('held', held)):
                with open(os.path.join(outdir, name), 'w') as f:
                    f.write(''.join(j + '\n' for j in sorted(ids)))
            print('frozen at attempt %d: %d jobs stored, %d distinct received, '
                  '%d received but not answered' % (attempt, len(stored), len(received), len(held)))
            return 0
        ctl.fault(stall=False)
        time.sleep(0.05)
    print('could not freeze the server while it held unanswered requests')
    return 1


def cmd_requests_for(ctl, args):
    print(sum(1 for _, j in set_requests(ctl) if j == args.arg[0]))
    return 0


def cmd_count_requests(ctl, _args):
    print(len(ctl.requests()))
    return 0


def cmd_rule_first(ctl, args):
    rule, prefix = args.arg[0], args.arg[1]
    rule_seqs = []
    job_seqs = []
    for r in ctl.requests():
        a = r['args']
        if len(a) >= 4 and a[1] == 'RULE' and a[2] == 'SET' and a[3] == rule:
            rule_seqs.append(r['seq'])
        elif len(a) >= 4 and a[1] == 'SET' and a[2].startswith(prefix):
            job_seqs.append(r['seq'])
    first_rule = min(rule_seqs) if rule_seqs else None
    first_job = min(job_seqs) if job_seqs else None
    print('rule %s: %d request(s), first at seq %s; jobs %s*: %d request(s), first at seq %s'
          % (rule, len(rule_seqs), first_rule, prefix, len(job_seqs), first_job))
    if first_rule is None or first_job is None:
        return 1
    return 0 if first_rule < first_job else 1


COMMANDS = {
    'verify': (cmd_verify, 0),
    'job-ids': (cmd_job_ids, 1),
    'held': (cmd_held, 1),
    'resent': (cmd_resent, 1),
    'requests-for': (cmd_requests_for, 1),
    'missing': (cmd_missing, 1),
    'freeze': (cmd_freeze, 2),
    'count-requests': (cmd_count_requests, 0),
    'rule-first': (cmd_rule_first, 2),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True, help='control port')
    ap.add_argument('command', choices=sorted(COMMANDS))
    ap.add_argument('arg', nargs='*')
    args = ap.parse_args()
    func, nargs = COMMANDS[args.command]
    if len(args.arg) != nargs:
        ap.error('%s takes %d argument(s)' % (args.command, nargs))
    with Control('127.0.0.1', args.port, timeout=60) as ctl:
        return func(ctl, args)


if __name__ == '__main__':
    sys.exit(main())
