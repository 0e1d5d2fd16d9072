#!/bin/bash
# test/integration/encodings.sh: hostile text and times, end to end.
#
#   a. LATIN1 database: text arrives as the right UTF-8, byte for byte
#   b. SQL_ASCII database: valid UTF-8 passes through, invalid bytes are
#      rejected at call time (22021) and nothing is enqueued
#   c. EUC_JP database: a character with no Unicode equivalent is rejected
#      at call time (22P05); convertible text arrives as UTF-8
#   d. split reads (--split-reads): SPLIT_JOBS (100,000) non-ASCII jobs in
#      one transaction arrive intact, packed into writes of at most
#      kairoi.non_ascii_write_limit (1400) bytes; with the limit at 0 each
#      goes alone; at the reference server's pace (--reference-pace: replies
#      in frames, so the next packed write goes out while the last is still
#      being answered) PACE_JOBS (5,000) arrive intact; controls: with the
#      limit lifted to 1MB, and pipelined in one write by a raw client, they
#      are corrupted
#   e. execution time boundaries and rounding up
#   f. protocol injection through every argument position
#   g. argument size limit (65535 bytes of UTF-8; identifiers 2688 bytes
#      in the database encoding, what the outbox's index holds)
# One cluster; the worker is moved from database to database with ALTER
# SYSTEM SET kairoi.database (the launcher replaces it).
# Prints "N passed, M failed".
set -u
source "$(dirname "$0")/../lib.sh"

TOOL="$PYTHON $KAIROI_ROOT/test/integration/encodings_tool.py"
T_START=$SECONDS

# q DB SQL: run SQL in DB with client_encoding UTF8 (this file is UTF-8)
q() { PGCLIENTENCODING=UTF8 psql_at PG "$1" -c "$2"; }
# sqlstate DB SQL: the SQLSTATE the statement fails with ("none" if it
# succeeds); the whole error report is left in $ERR
sqlstate() {
	ERR=$(PGCLIENTENCODING=${CLIENT_ENCODING:-UTF8} psql_at PG "$1" -v VERBOSITY=verbose -c "$2" 2>&1 >/dev/null)
	if [ -z "$ERR" ]; then
		echo none
	else
		sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' <<<"$ERR" | head -1
	fi
}
outbox_count() { q "$1" "SELECT count(*) FROM kairoi.outbox"; }
flush() { q "$1" "SELECT kairoi_flush('60 seconds')" >/dev/null || fail "flush in $1"; }
# check_job DESCRIPTION CONTROL_PORT PYTHON_EXPR EXECUTION
check_job() {
	check "$1" ok "$($TOOL check-job --port "$2" --id-expr "$3" --exec "$4")"
}
check_job_hex() {
	check "$1" ok "$($TOOL check-job --port "$2" --id-hex "$3" --exec "$4")"
}
# serve DB SERVER_PORT: point the worker at DB and SERVER_PORT, wait for it
serve() {
	psql_at PG postgres -c "ALTER SYSTEM SET kairoi.database = '$1'" \
		-c "ALTER SYSTEM SET kairoi.server = '127.0.0.1:$2'" -c "SELECT pg_reload_conf()" >/dev/null
	serving() {
		[ "$(q "$1" "SELECT (worker_pid IS NOT NULL) || ' ' || state || ' ' || server FROM kairoi_status()")" = \
			"true connected 127.0.0.1:$2" ]
	}
	if wait_for "worker serving $1 via $2" 60 serving "$1" "$2"; then
		pass "worker now serves $1"
	else
		fail "worker does not serve $1: $(q "$1" "SELECT state, server FROM kairoi_status()")"
	fi
}

start_server SRV || exit 1
start_cluster PG "$SRV_PORT" || exit 1
psql_at PG postgres -c "CREATE DATABASE latin1db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
	-c "CREATE DATABASE sqlasciidb ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
	-c "CREATE DATABASE eucjpdb ENCODING 'EUC_JP' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
	-c "CREATE DATABASE utf8db ENCODING 'UTF8' TEMPLATE template0" || exit 1
for db in latin1db sqlasciidb eucjpdb utf8db; do
	psql_at PG "$db" -c "CREATE EXTENSION kairoi" || exit 1
done
check "database encodings" "latin1db LATIN1 sqlasciidb SQL_ASCII eucjpdb EUC_JP utf8db UTF8" \
	"$(psql_at PG postgres -c "SELECT string_agg(datname || ' ' || pg_encoding_to_char(encoding), ' ' ORDER BY oid)
		FROM pg_database WHERE datname IN ('latin1db', 'sqlasciidb', 'eucjpdb', 'utf8db')")"

# ---------------------------------------------------------------------------
# a. LATIN1
# ---------------------------------------------------------------------------
echo "# a. LATIN1 database"
serve latin1db "$SRV_PORT"
# The server refuses while the outbox is inspected, then takes everything.
$KCTL --port "$SRV_CPORT" fault refuse=true >/dev/null
# Sent as UTF-8 (client_encoding UTF8; PostgreSQL converts to LATIN1)
q latin1db "SELECT kairoi_job_set('café', '2030-01-01 00:00:01+00'),
                   kairoi_job_set('Ñandú', '2030-01-01 00:00:02+00'),
                   kairoi_job_set('naïve ÿ', '2030-01-01 00:00:03+00')" >/dev/null
# Sent as LATIN1 bytes (client_encoding LATIN1): 'Zoë ¿qué?' and '©®±µ¶'
PGCLIENTENCODING=LATIN1 psql_at PG latin1db \
	-c $'SELECT kairoi_job_set(\'Zo\xeb \xbfqu\xe9?\', \'2030-01-01 00:00:04+00\')' \
	-c $'SELECT kairoi_job_set(\'latin1 \xa9\xae\xb1\xb5\xb6\', \'2030-01-01 00:00:05+00\')' >/dev/null
# Every non-ASCII LATIN1 byte, 0x80..0xFF (C1 controls included)
q latin1db "SELECT kairoi_job_set('all:' || string_agg(chr(g), '' ORDER BY g), '2030-01-01 00:00:06+00')
            FROM generate_series(128, 255) g" >/dev/null
q latin1db "SELECT kairoi_rule_set_shell('règle', 'préfixe-', '/opt/scripts/exécuter ça.sh'),
                   kairoi_rule_set_amqp('règle amqp', 'ü-', 'amqp://usér@hôte/', 'échange', 'clé')" >/dev/null
check "a: what reached the LATIN1 database is what was meant (LATIN1 bytes)" \
	"café:636166e9 Ñandú:d1616e64fa naïve ÿ:6e61ef766520ff Zoë ¿qué?:5a6feb20bf7175e93f latin1 ©®±µ¶:6c6174696e3120a9aeb1b5b6" \
	"$(q latin1db "SELECT string_agg(identifier || ':' || encode(convert_to(identifier, 'LATIN1'), 'hex'), ' ' ORDER BY seq)
		FROM kairoi.outbox WHERE kind = 'j' AND identifier NOT LIKE 'all:%'")"
$KCTL --port "$SRV_CPORT" fault refuse=false >/dev/null
flush latin1db
check_job "a: café arrives as UTF-8" "$SRV_CPORT" "'café'" "2030-01-01 00:00:01"
check_job "a: Ñandú arrives as UTF-8" "$SRV_CPORT" "'Ñandú'" "2030-01-01 00:00:02"
check_job "a: naïve ÿ arrives as UTF-8" "$SRV_CPORT" "'naïve ÿ'" "2030-01-01 00:00:03"
check_job "a: LATIN1-encoded input arrives as UTF-8" "$SRV_CPORT" "b'Zo\\xeb \\xbfqu\\xe9?'.decode('latin-1')" "2030-01-01 00:00:04"
check_job "a: LATIN1 symbols arrive as UTF-8" "$SRV_CPORT" "'latin1 ©®±µ¶'" "2030-01-01 00:00:05"
check_job "a: all 128 non-ASCII LATIN1 characters arrive as UTF-8" "$SRV_CPORT" \
	"'all:' + bytes(range(128, 256)).decode('latin-1')" "2030-01-01 00:00:06"
check "a: shell rule arrives as UTF-8" ok \
	"$($TOOL check-rule --port "$SRV_CPORT" --id-expr "'règle'" --args-expr "['préfixe-', 'shell', '/opt/scripts/exécuter ça.sh']")"
check "a: amqp rule arrives as UTF-8" ok \
	"$($TOOL check-rule --port "$SRV_CPORT" --id-expr "'règle amqp'" --args-expr "['ü-', 'amqp', 'amqp://usér@hôte/', 'échange', 'clé']")"
check "a: no mis-encoded copy (e.g. double-encoded UTF-8) on the server" "6 2" \
	"$($KCTL --port "$SRV_CPORT" counts | $PYTHON -c 'import json,sys; c=json.load(sys.stdin); print(c["jobs"], c["rules"])')"
# 32768 LATIN1 bytes are 65536 bytes of UTF-8: over the limit
check "a: a pattern of 32768 × 'é' (32768 bytes in LATIN1, 65536 in UTF-8) rejected" 54000 \
	"$(sqlstate latin1db "SELECT kairoi_rule_set_shell('r', repeat('é', 32768), '/bin/true')")"
check "a: a script of 32767 × 'é' + 'x' (65535 bytes of UTF-8) accepted" none \
	"$(sqlstate latin1db "SELECT kairoi_rule_set_shell('long script', 'p', repeat('é', 32767) || 'x')")"
# identifiers are bounded in the database's bytes: 2688 LATIN1 bytes are
# 5376 bytes of UTF-8
check "a: an identifier of 2689 × 'é' (2689 bytes in LATIN1) rejected" 54000 \
	"$(sqlstate latin1db "SELECT kairoi_job_set(repeat('é', 2689), '2030-01-01 00:00:00+00')")"
check "a: an identifier of 2688 × 'é' (2688 bytes in LATIN1, 5376 in UTF-8) accepted" none \
	"$(sqlstate latin1db "SELECT kairoi_job_set(repeat('é', 2688), '2030-01-01 00:00:07+00')")"
flush latin1db
check "a: the 65535-byte UTF-8 script arrives intact" ok \
	"$($TOOL check-rule --port "$SRV_CPORT" --id-expr "'long script'" --args-expr "['p', 'shell', 'é' * 32767 + 'x']")"
check_job "a: the identifier of 2688 × 'é' arrives intact" "$SRV_CPORT" "'é' * 2688" "2030-01-01 00:00:07"
check "a: outbox empty" 0 "$(outbox_count latin1db)"
echo "# a: LATIN1 has no character without a Unicode equivalent: see c for an unconvertible one"

# ---------------------------------------------------------------------------
# b. SQL_ASCII
# ---------------------------------------------------------------------------
echo "# b. SQL_ASCII database"
$KCTL --port "$SRV_CPORT" reset >/dev/null
serve sqlasciidb "$SRV_PORT"
# valid UTF-8, given as exact bytes: é, ジョブ, U+0080, U+07FF, U+0800,
# U+FFFD, U+FFFF, U+10000, 🎉, U+10FFFF
VALID_HEX=(c3a9 e382b8e383a7e38396 c280 dfbf e0a080 efbfbd efbfbf f0908080 f09f8e89 f48fbfbf)
for i in "${!VALID_HEX[@]}"; do
	h=${VALID_HEX[$i]}
	q sqlasciidb "SELECT kairoi_job_set('ok-' || convert_from('\\x$h'::bytea, 'SQL_ASCII'), '2030-01-01 00:00:0$i+00')" >/dev/null ||
		fail "b: valid UTF-8 $h refused"
done
# and as raw bytes from a SQL_ASCII client
PGCLIENTENCODING=SQL_ASCII psql_at PG sqlasciidb \
	-c $'SELECT kairoi_job_set(\'raw-\xe3\x82\xb8\xe3\x83\xa7\xe3\x83\x96-\xc3\xa9\', \'2030-01-01 00:00:10+00\')' >/dev/null
flush sqlasciidb
for i in "${!VALID_HEX[@]}"; do
	check_job_hex "b: valid UTF-8 ${VALID_HEX[$i]} passes through byte for byte" "$SRV_CPORT" \
		"$(printf 'ok-' | od -An -tx1 | tr -d ' \n')${VALID_HEX[$i]}" "2030-01-01 00:00:0$i"
done
check_job "b: raw UTF-8 bytes from a SQL_ASCII client pass through" "$SRV_CPORT" "'raw-ジョブ-é'" "2030-01-01 00:00:10"
check "b: outbox empty" 0 "$(outbox_count sqlasciidb)"

# invalid: lone 0xFF, overlong '/', surrogate U+D800, truncated sequence,
# beyond U+10FFFF, lone continuation byte, 0xFE, overlong NUL
INVALID_HEX=(ff c0af eda080 e382 f4908080 80 fe c080)
ACCEPTED_BEFORE=$($KCTL --port "$SRV_CPORT" count-jobs)
for h in "${INVALID_HEX[@]}"; do
	bad="'bad-' || convert_from('\\x$h'::bytea, 'SQL_ASCII')"
	check "b: invalid UTF-8 $h in an identifier rejected with 22021" 22021 \
		"$(sqlstate sqlasciidb "SELECT kairoi_job_set($bad, '2030-01-01 00:00:00+00')")"
done
# the report names the argument and the function (README: "each failure is
# an ERROR that names the argument")
sqlstate sqlasciidb "SELECT kairoi_job_set('bad-' || convert_from('\\xff'::bytea, 'SQL_ASCII'), '2030-01-01 00:00:00+00')" >/dev/null
echo "$ERR" | sed 's/^/#   /'
if grep -q 'identifier' <<<"$ERR" && grep -q 'kairoi_job_set' <<<"$ERR"; then
	pass "b: the error names the argument (identifier) and the function"
else
	fail "b: the error does not say which argument is not UTF-8: $(head -1 <<<"$ERR")"
fi
BAD="convert_from('\\xe382'::bytea, 'SQL_ASCII')"
check "b: invalid UTF-8 in a rule identifier rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_shell('r' || $BAD, 'p', '/bin/true')")"
check "b: invalid UTF-8 in a pattern rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_shell('r', 'p' || $BAD, '/bin/true')")"
check "b: invalid UTF-8 in a shell script rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_shell('r', 'p', '/bin/' || $BAD)")"
check "b: invalid UTF-8 in an amqp dsn rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://' || $BAD, 'e', 'k')")"
check "b: invalid UTF-8 in an amqp exchange rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h/', 'e' || $BAD, 'k')")"
check "b: invalid UTF-8 in an amqp routing key rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h/', 'e', 'k' || $BAD)")"
check "b: invalid UTF-8 in a variadic runner argument rejected" 22021 \
	"$(sqlstate sqlasciidb "SELECT kairoi_rule_set('r', 'p', 'amqp', 'amqp://h/', 'e', 'k' || $BAD)")"
check "b: invalid raw bytes from a SQL_ASCII client rejected" 22021 \
	"$(CLIENT_ENCODING=SQL_ASCII sqlstate sqlasciidb $'SELECT kairoi_job_set(\'raw-\xff\xfe\', \'2030-01-01 00:00:00+00\')')"
check "b: a rejected call inside a transaction enqueues nothing, not even earlier good calls" 22021 \
	"$(sqlstate sqlasciidb "BEGIN; SELECT kairoi_job_set('good-in-tx', '2030-01-01 00:00:00+00');
		SELECT kairoi_job_set('x' || $BAD, '2030-01-01 00:00:00+00'); COMMIT;")"
check "b: nothing enqueued by any rejected call" 0 "$(outbox_count sqlasciidb)"
flush sqlasciidb
check "b: nothing more reached the server" "$ACCEPTED_BEFORE" "$($KCTL --port "$SRV_CPORT" count-jobs)"

# ---------------------------------------------------------------------------
# c. A character with no Unicode equivalent (EUC_JP)
# ---------------------------------------------------------------------------
echo "# c. EUC_JP database"
serve eucjpdb "$SRV_PORT"
# 0xA9 0xA1 is well-formed EUC_JP (so PostgreSQL stores it) but row 9 of
# JIS X 0208 is unassigned: no UTF-8 equivalent.
check "c: the EUC_JP database stores the unassigned character" 3 \
	"$(PGCLIENTENCODING=EUC_JP psql_at PG eucjpdb -c $'SELECT octet_length(\'x\xa9\xa1\')')"
CLIENT_ENCODING=EUC_JP sqlstate eucjpdb $'SELECT kairoi_job_set(\'x\xa9\xa1\', \'2030-01-01 00:00:00+00\')' >/dev/null
echo "$ERR" | sed 's/^/#   /'
check "c: an unconvertible character in an identifier is rejected at call time (22P05)" 22P05 \
	"$(sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' <<<"$ERR")"
if grep -q 'identifier' <<<"$ERR" && grep -q 'kairoi_job_set' <<<"$ERR"; then
	pass "c: the error names the argument (identifier) and the function"
else
	fail "c: the error does not say which argument cannot be converted: $(head -1 <<<"$ERR")"
fi
check "c: ... in a script (22P05)" 22P05 \
	"$(sqlstate eucjpdb "SELECT kairoi_rule_set_shell('r', 'p', convert_from('\\xa9a1'::bytea, 'EUC_JP'))")"
check "c: ... in a routing key (22P05)" 22P05 \
	"$(sqlstate eucjpdb "SELECT kairoi_rule_set_amqp('r', 'p', 'amqp://h/', 'e', convert_from('\\xa9a1'::bytea, 'EUC_JP'))")"
check "c: nothing enqueued" 0 "$(outbox_count eucjpdb)"
# convertible EUC_JP text, sent as EUC_JP bytes: ジョブ-日本 (JIS X 0208)
# and a JIS X 0212 character (0x8F 0xB0 0xA1 = U+4E02)
PGCLIENTENCODING=EUC_JP psql_at PG eucjpdb \
	-c $'SELECT kairoi_job_set(\'\xa5\xb8\xa5\xe7\xa5\xd6-\xc6\xfc\xcb\xdc\', \'2030-01-01 00:00:11+00\')' \
	-c $'SELECT kairoi_job_set(\'x0212-\x8f\xb0\xa1\', \'2030-01-01 00:00:12+00\')' >/dev/null
flush eucjpdb
check_job "c: EUC_JP text arrives as UTF-8" "$SRV_CPORT" "'ジョブ-日本'" "2030-01-01 00:00:11"
check_job "c: a JIS X 0212 character arrives as UTF-8" "$SRV_CPORT" "'x0212-\\u4e02'" "2030-01-01 00:00:12"

# ---------------------------------------------------------------------------
# d. The reference server's split reads
# ---------------------------------------------------------------------------
echo "# d. split reads"
# server_count CONTROL_PORT FIELD: a field of the test server's counts
server_count() {
	$KCTL --port "$1" counts | $PYTHON -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
# set_write_limit VALUE: kairoi.non_ascii_write_limit for the next serve
# (which reloads; the worker serving the new port proves it has reloaded)
set_write_limit() {
	psql_at PG postgres -c "ALTER SYSTEM SET kairoi.non_ascii_write_limit = '$1'" >/dev/null
}
# enqueue_split N [KIND]: N jobs of encodings_tool.py's split identifiers
# in one transaction, then wait until all are acknowledged
enqueue_split() {
	local ident="'ジョブ-' || g || '-é'"
	[ "${2:-}" = mix ] && ident="CASE WHEN g % 2 = 1 THEN 'mix-' || g ELSE 'ミックス-' || g || '-ü' END"
	check "d: $1 ${2:-non-ASCII} jobs enqueued in one transaction" "$1" \
		"$(q utf8db "SELECT count(kairoi_job_set($ident, '2030-01-01 00:00:00+00'::timestamptz + g * interval '1 second'))
			FROM generate_series(1, $1) g")"
	q utf8db "SELECT kairoi_flush('600 seconds')" >/dev/null || fail "flush in utf8db"
}
SPLIT_JOBS=${SPLIT_JOBS:-100000}
start_server SPLIT --split-reads || exit 1
start_server SPLIT3 --split-reads || exit 1
start_server SPLIT4 --split-reads --reference-pace || exit 1
serve utf8db "$SPLIT_PORT"
T0=$(date +%s%3N)
enqueue_split "$SPLIT_JOBS"
echo "# d: delivered in $(($(date +%s%3N) - T0)) ms, $(server_count "$SPLIT_CPORT" reads) reads by the server," \
	"largest $(server_count "$SPLIT_CPORT" largest_read) bytes"
EXTENSION_RESULT=$($TOOL split-check --port "$SPLIT_CPORT" --n "$SPLIT_JOBS")
echo "# d: through the extension: $EXTENSION_RESULT"
check "d: all $SPLIT_JOBS arrive byte for byte, no U+FFFD" \
	"intact=$SPLIT_JOBS corrupted=0 missing=0 fffd=0" "$EXTENSION_RESULT"
LARGEST=$(server_count "$SPLIT_CPORT" largest_read)
if [ "$LARGEST" -le 1400 ]; then
	pass "d: no write larger than the 1400-byte default bound ($LARGEST bytes)"
else
	fail "d: the server read $LARGEST bytes at once, over the 1400-byte bound"
fi
PER_READ=$(( SPLIT_JOBS / $(server_count "$SPLIT_CPORT" reads) ))
if [ "$PER_READ" -ge 10 ]; then
	pass "d: non-ASCII requests are packed ($PER_READ requests per read)"
else
	fail "d: only $PER_READ requests per read: not packed"
fi
# ASCII and non-ASCII interleaved: ASCII is pipelined, a non-ASCII request
# waits until the server has provably read everything sent and opens a
# single write that what follows joins
$KCTL --port "$SPLIT_CPORT" reset >/dev/null
enqueue_split 2000 mix
MIX_RESULT=$($TOOL split-check --kind mix --port "$SPLIT_CPORT" --n 2000)
check "d: interleaved ASCII / non-ASCII all arrive byte for byte" "intact=2000 corrupted=0 missing=0 fffd=0" "$MIX_RESULT"
check "d: outbox empty" 0 "$(outbox_count utf8db)"
# At the reference server's pace the answers of a packed write come in two
# frames, and the next write goes out once the first is in: the server
# reads it while earlier requests are unanswered, and nothing is corrupted
PACE_JOBS=${PACE_JOBS:-5000}
serve utf8db "$SPLIT4_PORT"
enqueue_split "$PACE_JOBS"
check "d: reference pace: all $PACE_JOBS arrive byte for byte, no U+FFFD" \
	"intact=$PACE_JOBS corrupted=0 missing=0 fffd=0" "$($TOOL split-check --port "$SPLIT4_CPORT" --n "$PACE_JOBS")"
OVERLAPPED=$(server_count "$SPLIT4_CPORT" overlapped_reads)
LARGEST=$(server_count "$SPLIT4_CPORT" largest_read)
echo "# d: reference pace: $(server_count "$SPLIT4_CPORT" reads) reads, $OVERLAPPED while earlier" \
	"requests were unanswered, largest $LARGEST bytes"
if [ "$OVERLAPPED" -gt 0 ] && [ "$LARGEST" -le 1400 ]; then
	pass "d: reference pace: packed writes overlap the answers of the last ($OVERLAPPED reads), none over 1400 bytes"
else
	fail "d: reference pace: $OVERLAPPED overlapped reads, largest $LARGEST bytes"
fi
# kairoi.non_ascii_write_limit = 0: each request alone, one per read
set_write_limit 0
serve utf8db "$SPLIT3_PORT"
enqueue_split 300
check "d: limit 0: 300 requests, each alone in its write" "300 intact=300 corrupted=0 missing=0 fffd=0" \
	"$(server_count "$SPLIT3_CPORT" reads) $($TOOL split-check --port "$SPLIT3_CPORT" --n 300)"
# Control: the same code with the bound far above the server's 2048-byte
# reads packs up to kairoi.batch_size requests per write, and the server
# corrupts them, so the checks above can fail
set_write_limit 1MB
$KCTL --port "$SPLIT_CPORT" reset >/dev/null
serve utf8db "$SPLIT_PORT"
enqueue_split "$SPLIT_JOBS"
LIMIT_RESULT=$($TOOL split-check --port "$SPLIT_CPORT" --n "$SPLIT_JOBS")
echo "# d: control, kairoi.non_ascii_write_limit = 1MB: $LIMIT_RESULT, largest read $(server_count "$SPLIT_CPORT" largest_read) bytes"
LIMIT_CORRUPTED=$(sed -n 's/.* corrupted=\([0-9]*\) .*/\1/p' <<<"$LIMIT_RESULT")
if [ "${LIMIT_CORRUPTED:-0}" -gt 0 ]; then
	pass "d: control: $LIMIT_CORRUPTED of $SPLIT_JOBS corrupted when packing ignores the bound (the check can fail)"
else
	fail "d: control with the bound lifted did not reproduce the corruption: $LIMIT_RESULT"
fi
psql_at PG postgres -c "ALTER SYSTEM RESET kairoi.non_ascii_write_limit" >/dev/null
start_server SPLIT2 --split-reads || exit 1
CONTROL_RESULT=$($TOOL split-control --port "$SPLIT2_PORT" --cport "$SPLIT2_CPORT" --n 2000)
echo "# d: control, same 2000 SETs pipelined in one write: $CONTROL_RESULT"
CORRUPTED=$(sed -n 's/.* corrupted=\([0-9]*\) .*/\1/p' <<<"$CONTROL_RESULT")
if [ "${CORRUPTED:-0}" -gt 0 ] && grep -q '^answers=2000 ok=2000 ' <<<"$CONTROL_RESULT"; then
	pass "d: control experiment: $CORRUPTED of 2000 corrupted when pipelined by a raw client"
else
	fail "d: control experiment did not reproduce the corruption: $CONTROL_RESULT"
fi
echo "# d: corrupted identifiers: extension $(sed -n 's/.* corrupted=\([0-9]*\) .*/\1/p' <<<"$EXTENSION_RESULT")," \
	"extension with the bound lifted $LIMIT_CORRUPTED, raw pipelined client $CORRUPTED"

# ---------------------------------------------------------------------------
# e. Execution times
# ---------------------------------------------------------------------------
echo "# e. execution time boundaries"
$KCTL --port "$SRV_CPORT" reset >/dev/null
serve utf8db "$SRV_PORT"
# id|input (timestamptz literal, session time zone UTC)|expected or 22008
DATES=(
	'min|1677-09-21 00:12:44+00|1677-09-21 00:12:44'
	'below-min|1677-09-21 00:12:43+00|22008'
	'min-frac|1677-09-21 00:12:43.000001+00|1677-09-21 00:12:44'
	'min-frac9|1677-09-21 00:12:43.999999+00|1677-09-21 00:12:44'
	'far-below|1600-01-01 00:00:00+00|22008'
	'max|2262-04-11 23:47:16+00|2262-04-11 23:47:16'
	'above-max|2262-04-11 23:47:16.000001+00|22008'
	'max-frac|2262-04-11 23:47:15.000001+00|2262-04-11 23:47:16'
	'far-above|2262-04-12 00:00:00+00|22008'
	'usec|2030-01-01 00:00:00.000001+00|2030-01-01 00:00:01'
	'half|2030-01-01 00:00:00.5+00|2030-01-01 00:00:01'
	'whole|2030-01-01 00:00:00+00|2030-01-01 00:00:00'
	'year-carry|2030-12-31 23:59:59.000001+00|2031-01-01 00:00:00'
	'leap-day|2028-02-28 23:59:59.999999+00|2028-02-29 00:00:00'
	'pg-epoch|1999-12-31 23:59:59.000001+00|2000-01-01 00:00:00'
	'unix-epoch|1969-12-31 23:59:59.000001+00|1970-01-01 00:00:00'
	'pre-1900|1899-12-31 23:59:59.000001+00|1900-01-01 00:00:00'
	'offset|2030-06-01 02:00:00.25+02|2030-06-01 00:00:01'
	'infinity|infinity|22008'
	'minus-infinity|-infinity|22008'
)
for d in "${DATES[@]}"; do
	IFS='|' read -r id input want <<<"$d"
	got=$(sqlstate utf8db "SET timezone = 'UTC'; SELECT kairoi_job_set('date-$id', '$input'::timestamptz)")
	if [ "$want" = 22008 ]; then
		check "e: $input rejected (22008)" 22008 "$got"
	else
		check "e: $input accepted" none "$got"
	fi
done
# a session time zone other than UTC, across a DST change
q utf8db "SET timezone = 'America/New_York'; SELECT kairoi_job_set('date-new-york', '2030-07-04 12:00:00.000001')" >/dev/null
flush utf8db
for d in "${DATES[@]}" 'new-york||2030-07-04 16:00:01'; do
	IFS='|' read -r id input want <<<"$d"
	if [ "$want" = 22008 ]; then
		check "e: date-$id not on the server" missing "$($TOOL check-job --port "$SRV_CPORT" --id-expr "'date-$id'" --exec x)"
	else
		check "e: date-$id arrives as '$want'" ok "$($TOOL check-job --port "$SRV_CPORT" --id-expr "'date-$id'" --exec "$want")"
	fi
done
check "e: exactly the accepted dates on the server" 15 "$($KCTL --port "$SRV_CPORT" count-jobs)"

# ---------------------------------------------------------------------------
# f. Injection
# ---------------------------------------------------------------------------
echo "# f. protocol injection"
$KCTL --port "$SRV_CPORT" reset >/dev/null
$TOOL injection-sql >"$PG_DIR/injection.sql"
check "f: every hostile call accepted" 0 \
	"$(PGCLIENTENCODING=UTF8 psql_at PG utf8db -f "$PG_DIR/injection.sql" >/dev/null 2>&1; echo $?)"
flush utf8db
INJ=$($TOOL injection-check --port "$SRV_CPORT")
echo "# f: $INJ"
check "f: one request per call with the literal arguments, no injected rule or job" ok "${INJ##* }"
check "f: outbox empty" 0 "$(outbox_count utf8db)"

# ---------------------------------------------------------------------------
# g. Sizes
# ---------------------------------------------------------------------------
echo "# g. argument sizes"
$KCTL --port "$SRV_CPORT" reset >/dev/null
check "g: an identifier of 2688 ASCII bytes accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('x', 2688), '2030-01-01 00:00:01+00')")"
check "g: an identifier of 2689 ASCII bytes rejected (54000)" 54000 \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('y', 2689), '2030-01-01 00:00:01+00')")"
check "g: an identifier of 2688 bytes of UTF-8 (1344 × é) accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('é', 1344), '2030-01-01 00:00:02+00')")"
check "g: an identifier of 2690 bytes of UTF-8 (1345 × é) rejected (54000)" 54000 \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('é', 1345), '2030-01-01 00:00:02+00')")"
check "g: an identifier of 2688 bytes of 4-byte characters accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('🎉', 672), '2030-01-01 00:00:03+00')")"
check "g: an identifier of 2688 double quotes (5378 bytes once quoted) accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat('\"', 2688), '2030-01-01 00:00:04+00')")"
check "g: an identifier of 2688 backslashes accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_job_set(repeat(E'\\\\', 2688), '2030-01-01 00:00:05+00')")"
check "g: a rule with four 65535-byte arguments accepted" none \
	"$(sqlstate utf8db "SELECT kairoi_rule_set_amqp(repeat('\"', 2688), repeat('p', 65535), repeat(' ', 65535), repeat(E'\\\\', 65535), repeat(E'\\n', 65535))")"
check "g: a 65536-byte pattern rejected (54000)" 54000 \
	"$(sqlstate utf8db "SELECT kairoi_rule_set_shell('r', repeat('p', 65536), '/bin/true')")"
check "g: a 65536-byte script rejected (54000)" 54000 \
	"$(sqlstate utf8db "SELECT kairoi_rule_set_shell('r', 'p', repeat('s', 65536))")"
check "g: a 65536-byte routing key rejected (54000)" 54000 \
	"$(sqlstate utf8db "SELECT kairoi_rule_set_amqp('r', 'p', 'd', 'e', repeat('k', 65536))")"
flush utf8db
check_job "g: 2688 ASCII bytes arrive intact" "$SRV_CPORT" "'x' * 2688" "2030-01-01 00:00:01"
check_job "g: 2688 bytes of UTF-8 arrive intact" "$SRV_CPORT" "'é' * 1344" "2030-01-01 00:00:02"
check_job "g: 2688 bytes of 4-byte characters arrive intact" "$SRV_CPORT" "'🎉' * 672" "2030-01-01 00:00:03"
check_job "g: 2688 double quotes arrive intact" "$SRV_CPORT" "'\"' * 2688" "2030-01-01 00:00:04"
check_job "g: 2688 backslashes arrive intact" "$SRV_CPORT" "'\\\\' * 2688" "2030-01-01 00:00:05"
check "g: the rule with four 65535-byte arguments arrives intact" ok \
	"$($TOOL check-rule --port "$SRV_CPORT" --id-expr "'\"' * 2688" \
		--args-expr "['p' * 65535, 'amqp', ' ' * 65535, '\\\\' * 65535, '\\n' * 65535]")"
check "g: nothing rejected reached the server" "5 1" \
	"$($KCTL --port "$SRV_CPORT" counts | $PYTHON -c 'import json,sys; c=json.load(sys.stdin); print(c["jobs"], c["rules"])')"
check "g: outbox empty" 0 "$(outbox_count utf8db)"

echo "# runtime $((SECONDS - T_START)) s"
finish
