#!/bin/bash
# test/reference/amqp_rabbitmq.sh: kairoi_rule_set_amqp makes the reference
# Kairoi server publish each committed job to RabbitMQ.
#
# Against the reference server's AMQP build (KAIROI_REFERENCE_SERVER_AMQP,
# default KAIROI_REFERENCE_SERVER; see docs/testing.md) and Debian's
# rabbitmq-server, started here as the rabbitmq user on 127.0.0.1 with its
# own node, data directory, ports and epmd (test/lib_reference.sh):
#   a. an exchange and a queue bound to it are declared (python3-pika);
#      an AMQP rule is set with kairoi_rule_set_amqp;
#   b. a rolled-back job, one rolled back to a savepoint, then JOBS (100)
#      committed jobs due a minute ago (identifiers with spaces, quotes,
#      backslashes, a newline and non-ASCII text among them): RabbitMQ's
#      queue gets every committed identifier once, byte for byte, and
#      nothing else (the server publishes a few dozen jobs a second, one
#      at a time: hence so few);
#   c. RabbitMQ is stopped by pid, and no process of it (epmd, the Erlang
#      VM beam.smp and what it spawned) survives.
# Prints "N passed, M failed".
set -u
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=test/lib_reference.sh
. "$KAIROI_ROOT/test/lib_reference.sh"

JOBS=${JOBS:-100}
KAIROI_REFERENCE_SERVER_AMQP=${KAIROI_REFERENCE_SERVER_AMQP:-${KAIROI_REFERENCE_SERVER:-}}

require_binary KAIROI_REFERENCE_SERVER_AMQP
# RabbitMQ takes seconds to boot: it does while the rest starts
rabbitmq_started=$SECONDS
start_rabbitmq R
reference_cluster KAIROI_REFERENCE_SERVER_AMQP

if wait_rabbitmq R 120; then
	pass "RabbitMQ took connections, $((SECONDS - rabbitmq_started)) s after it was started"
else
	fail "RabbitMQ did not start"
	finish
	exit 1
fi
$REFERENCE_TOOL amqp-declare --port "$R_PORT" kairoi-exchange kairoi-queue kairoi-key ||
	fail "RabbitMQ: declaring the exchange and queue failed"
case $($REFERENCE_TOOL kcp --port "$K_PORT" \
	"0 RULE SET probe probe- amqp amqp://127.0.0.1:$R_PORT/%2f kairoi-exchange kairoi-key") in
OK) pass "the server has the AMQP runner" ;;
*)
	fail "KAIROI_REFERENCE_SERVER_AMQP=$KAIROI_REFERENCE_SERVER_AMQP refuses an AMQP rule: a build without the AMQP runner"
	finish
	exit 1
	;;
esac

# a, b. the rule, the rolled-back jobs, then the committed ones
sql -v dsn="amqp://guest:guest@127.0.0.1:$R_PORT/%2f" -v jobs="$JOBS" >/dev/null <<'SQL' || exit 1
CREATE TABLE expected (id text PRIMARY KEY);
CREATE TABLE rolled_back (id text PRIMARY KEY);
INSERT INTO rolled_back VALUES ('amqp rolled back'), ('amqp rolled back to a savepoint');
SELECT kairoi_rule_set_amqp('amqp rule', 'amqp ', :'dsn', 'kairoi-exchange', 'kairoi-key');

BEGIN;
SELECT kairoi_job_set('amqp rolled back', now() - interval '1 minute');
ROLLBACK;

BEGIN;
SAVEPOINT s;
SELECT kairoi_job_set('amqp rolled back to a savepoint', now() - interval '1 minute');
ROLLBACK TO SAVEPOINT s;
INSERT INTO expected VALUES (E'amqp "quoted" \\ back\\slash\nnew line, ünïcödé 日本語');
INSERT INTO expected SELECT 'amqp ' || g || ' é' FROM generate_series(2, :jobs) g;
SELECT kairoi_job_set_many(array_agg(id), array_agg(now() - interval '1 minute')) FROM expected;
COMMIT;
SQL
flush_check "kairoi_flush: the reference server acknowledged the AMQP rule and every committed job"
check "nothing failed" 0 "$(sql -c "SELECT count(*) FROM kairoi.failed")"

hex_ids expected >"$OUT/expected"
hex_ids rolled_back >"$OUT/rolled_back"
# every message, then 2 s more for any that should not be there
$REFERENCE_TOOL amqp-consume --port "$R_PORT" kairoi-queue --count "$JOBS" --timeout 60 \
	--quiet 2 >"$OUT/published"
compare_hex "RabbitMQ's queue got every committed job's identifier once, byte for byte, nothing else" \
	"$OUT/expected" "$OUT/published"
check "RabbitMQ got no rolled-back job (a rolled-back transaction, a savepoint)" 0 \
	"$(grep -c -x -F -f "$OUT/rolled_back" "$OUT/published")"

# c. stopped by pid, nothing left
if stop_rabbitmq R; then
	pass "RabbitMQ stopped: no process of it (epmd, beam.smp, its children) runs"
else
	fail "RabbitMQ processes survived being killed"
fi
echo "# took $((SECONDS - rabbitmq_started)) s"
finish
