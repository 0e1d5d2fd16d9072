# shellcheck shell=bash
# bench/enqueue_variants.sh: the ways of scheduling from an application's
# write that bench/enqueue.sh times and bench/instructions.sh counts the
# instructions of: the tables and triggers of each variant, the peers (PgQ,
# graphile-worker) and the statements of the set-based cases.  Source it
# after bench/lib.sh; the caller defines `sql SQL` (runs SQL in the
# benchmark's database, cluster P of test/lib.sh) and WORK (a scratch
# directory).  Each variant and case is described in bench/enqueue.sh's
# header.

# What kairoi's upsert does on a conflict, in the copy of its table
QUEUE_COPY_CONFLICT="ON CONFLICT (identifier) DO UPDATE
	SET version = excluded.version, execution = excluded.execution"

# The trigger body of each plpgsql variant
trigger_body() {
	case $1 in
	plain_upsert)
		echo "INSERT INTO reminders_plain VALUES ('order.' || NEW.id, NEW.placed_at + interval '1 day')
			ON CONFLICT (job) DO UPDATE SET at = EXCLUDED.at;" ;;
	kairoi_plpgsql)
		echo "PERFORM kairoi_job_set('order.' || NEW.id, NEW.placed_at + interval '1 day');" ;;
	empty_trigger)
		echo "" ;;
	c_noop)
		echo "PERFORM pg_catalog.num_nulls('order.' || NEW.id, NEW.placed_at + interval '1 day');" ;;
	outbox_copy)
		echo "INSERT INTO bench_queue AS q (seq, version, identifier, execution, enqueued_at)
			SELECT v, v, 'order.' || NEW.id, NEW.placed_at + interval '1 day',
				transaction_timestamp()
			FROM nextval('bench_queue_seq') AS v
			$QUEUE_COPY_CONFLICT;" ;;
	graphile_add_job)
		echo "PERFORM graphile_worker.add_job('remind', json_build_object('order', NEW.id),
			run_at := NEW.placed_at + interval '1 day', job_key := 'order.' || NEW.id);" ;;
	esac
}

# PgQ from Debian's package, in PGBIN's installation: installed with
# apt-get when missing; when PGBIN is a relocated copy of Debian's
# PostgreSQL (test/lib.sh, relocated_postgres), the package's library and
# extension files are copied into it
install_pgq() {
	local package=postgresql-$PG_MAJOR-pgq3 share lib file
	share=$("$PGBIN/pg_config" --sharedir)/extension
	lib=$("$PGBIN/pg_config" --pkglibdir)
	[ -f "$share/pgq.control" ] && return 0
	if ! dpkg -s "$package" >/dev/null 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >"$WORK/apt.log" 2>&1 || {
			echo "apt-get install $package failed:" >&2
			tail -5 "$WORK/apt.log" >&2
			return 1
		}
	fi
	for file in $(dpkg -L "$package"); do
		case $file in
		*/lib/*.so) [ "$file" -ef "$lib/${file##*/}" ] || cp "$file" "$lib/" ;;
		*/extension/pgq*) [ "$file" -ef "$share/${file##*/}" ] || cp "$file" "$share/" ;;
		esac
	done
	[ -f "$share/pgq.control" ] || {
		echo "$package installed no pgq.control for $PGBIN" >&2
		return 1
	}
}

# PgQ and its queue "bench"; PGQ_EVENTS names the queue's event table
setup_pgq() {
	install_pgq &&
		sql "CREATE EXTENSION pgq; SELECT pgq.create_queue('bench')" >/dev/null &&
		PGQ_EVENTS=$(sql "SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = 'bench'")
}

# graphile-worker's schema, installed by its own CLI from npm (or from
# GRAPHILE_DIR, where it is already installed); GRAPHILE_INSTALLED says
# which version
setup_graphile() {
	local dir=${GRAPHILE_DIR:-}
	command -v npm >/dev/null || {
		echo "npm is not installed (graphile-worker needs Node.js and npm)" >&2
		return 1
	}
	if [ -z "$dir" ]; then
		dir=$WORK/graphile
		mkdir -p "$dir"
		(cd "$dir" && npm install --no-audit --no-fund --loglevel=error \
			"graphile-worker@${GRAPHILE_VERSION:-0.16}" >"$WORK/npm.log" 2>&1) || {
			echo "npm install graphile-worker@${GRAPHILE_VERSION:-0.16} failed:" >&2
			tail -5 "$WORK/npm.log" >&2
			return 1
		}
	fi
	"$dir/node_modules/.bin/graphile-worker" --schema-only \
		-c "postgres:///postgres?host=$P_HOST&port=$P_PORT&user=postgres" \
		>"$WORK/graphile.log" 2>&1 || {
		echo "graphile-worker --schema-only failed:" >&2
		tail -5 "$WORK/graphile.log" >&2
		return 1
	}
	GRAPHILE_INSTALLED=$("$dir/node_modules/.bin/graphile-worker" --version 2>/dev/null)
}

# setup_peers: install the peers named in VARIANTS; one that cannot be set
# up is dropped from VARIANTS, as a failure that says why
setup_peers() {
	local v kept=""
	for v in $VARIANTS; do
		case $v in
		pgq_logutriga) setup_pgq || {
			fail "PgQ could not be set up: $v left out"
			continue
		} ;;
		graphile_add_job) setup_graphile || {
			fail "graphile-worker's schema could not be installed: $v left out"
			continue
		} ;;
		esac
		kept+="$v "
	done
	VARIANTS=$kept
}

# The tables the plain and copy variants write
create_target_tables() {
	sql "CREATE TABLE reminders_plain (job text PRIMARY KEY, at timestamptz);
		CREATE TABLE bench_queue (LIKE kairoi.pending_jobs INCLUDING ALL);
		CREATE SEQUENCE bench_queue_seq;"
}

# create_variant VARIANT RANGE: orders_VARIANT, its ids starting at
# RANGE000000000001 (the jobs of two kairoi variants must not share
# identifiers), and the variant's trigger on it
create_variant() {
	local v=$1
	sql "CREATE TABLE orders_$v (id bigserial PRIMARY KEY,
			placed_at timestamptz NOT NULL DEFAULT now());
		ALTER SEQUENCE orders_${v}_id_seq RESTART WITH ${2}000000000001" || return 1
	case $v in
	kairoi_c_trigger)
		sql "CREATE TRIGGER schedule AFTER INSERT ON orders_$v FOR EACH ROW
			EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '1 day')" ;;
	pgq_logutriga)
		sql "CREATE TRIGGER schedule AFTER INSERT ON orders_$v FOR EACH ROW
			EXECUTE FUNCTION pgq.logutriga('bench')" ;;
	*)
		sql "CREATE FUNCTION trig_$v() RETURNS trigger LANGUAGE plpgsql AS \$\$
			BEGIN $(trigger_body "$v") RETURN NULL; END \$\$;
			CREATE TRIGGER schedule AFTER INSERT ON orders_$v FOR EACH ROW
			EXECUTE FUNCTION trig_$v()" ;;
	esac
}

# The tables of the statement-trigger cases, and their triggers
create_set_tables() {
	sql "CREATE TABLE bulk_orders_plain (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL);
		CREATE TABLE bulk_orders_kairoi (LIKE bulk_orders_plain INCLUDING ALL);
		CREATE TABLE bulk_orders_c (LIKE bulk_orders_plain INCLUDING ALL);
		CREATE FUNCTION bulk_plain() RETURNS trigger LANGUAGE plpgsql AS \$\$
		BEGIN
			INSERT INTO reminders_plain
			SELECT 'order.' || id, placed_at + interval '1 day' FROM new_rows
			ON CONFLICT (job) DO UPDATE SET at = EXCLUDED.at;
			RETURN NULL;
		END \$\$;
		CREATE FUNCTION bulk_kairoi() RETURNS trigger LANGUAGE plpgsql AS \$\$
		BEGIN
			PERFORM kairoi_job_set_many(array_agg('order.' || id), array_agg(placed_at + interval '1 day'))
			FROM new_rows;
			RETURN NULL;
		END \$\$;
		CREATE TRIGGER schedule AFTER INSERT ON bulk_orders_plain
			REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bulk_plain();
		CREATE TRIGGER schedule AFTER INSERT ON bulk_orders_kairoi
			REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bulk_kairoi();
		CREATE TRIGGER schedule AFTER INSERT ON bulk_orders_c
			REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
			EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at', '1 day');"
}

# set_case_sql CASE ROWS: the statement of a set-based case over ROWS, a
# FROM item with a column g (e.g. "generate_series(1, 1000) AS g")
set_case_sql() {
	local rows=$2
	case $1 in
	plain_insert_select)
		echo "INSERT INTO reminders_plain SELECT 'order.' || g, now() + interval '1 day' FROM $rows
			ON CONFLICT (job) DO UPDATE SET at = EXCLUDED.at" ;;
	outbox_copy_insert_select)
		echo "INSERT INTO bench_queue AS q (seq, version, identifier, execution, enqueued_at)
			SELECT v, v, 'order.' || g, now() + interval '1 day', now()
			FROM (SELECT nextval('bench_queue_seq') AS v, g FROM $rows) AS n
			$QUEUE_COPY_CONFLICT" ;;
	kairoi_select)
		echo "SELECT count(kairoi_job_set('order.' || g, now() + interval '1 day')) FROM $rows" ;;
	kairoi_array)
		echo "SELECT kairoi_job_set_many(array_agg('order.' || g), array_agg(now() + interval '1 day')) FROM $rows" ;;
	plain_statement_trigger)
		echo "INSERT INTO bulk_orders_plain SELECT g, now() FROM $rows" ;;
	kairoi_statement_trigger)
		echo "INSERT INTO bulk_orders_kairoi SELECT g, now() FROM $rows" ;;
	kairoi_c_statement_trigger)
		echo "INSERT INTO bulk_orders_c SELECT g, now() FROM $rows" ;;
	esac
}

# set_case_target CASE: the table a set-based case writes
set_case_target() {
	case $1 in
	plain*) echo reminders_plain ;;
	outbox_copy*) echo bench_queue ;;
	*) echo kairoi.pending_jobs ;;
	esac
}
