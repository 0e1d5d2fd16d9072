/*-------------------------------------------------------------------------
 *
 * rejections.c
 *	  The delivery worker's bookkeeping of answers of ERROR.
 *
 *	  kairoi.rejections holds, for each entry the server rejected, the
 *	  version rejected, how many times, when to try again and why.  It is
 *	  written only here, only when the server answers ERROR, so that
 *	  scheduling never touches it: a replacement gives the entry a new
 *	  version, which has no rejection yet, and the old row is merely stale
 *	  (removed when the entry is acknowledged).
 *
 *	  The worker keeps the table's content in memory (read at the first
 *	  use, again after any failed transaction, then kept in step with what
 *	  it writes), so that the fetch skips entries waiting for a retry
 *	  without a look-up per row, and knows when the next retry falls due.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "outbox.h"
#include "rejections.h"

/* One row of kairoi.rejections, by seq */
typedef struct Rejection
{
	int64		seq;			/* hash key */
	int64		version;
	int			attempts;
	TimestampTz next_attempt_at;
} Rejection;

static HTAB *rejections = NULL;
static bool loaded = false;

static void
load(void)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL		ctl;

	if (rejections == NULL)
	{
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(Rejection);
		ctl.hcxt = TopMemoryContext;
		rejections = hash_create("kairoi rejections", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	else
	{
		HASH_SEQ_STATUS status;
		Rejection  *r;

		hash_seq_init(&status, rejections);
		while ((r = hash_seq_search(&status)) != NULL)
			hash_search(rejections, &r->seq, HASH_REMOVE, NULL);
	}

	SPI_connect();
	outbox_prepare_once(&plan,
						"SELECT seq, version, attempts, next_attempt_at "
						"FROM kairoi.rejections", 0, NULL);
	outbox_execute(plan, NULL, NULL, true, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		seq = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		Rejection  *r = hash_search(rejections, &seq, HASH_ENTER, NULL);

		r->version = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		r->attempts = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
		r->next_attempt_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 4,
															   &isnull));
	}
	SPI_finish();
	loaded = true;
}

static void
ensure_loaded(void)
{
	if (!loaded)
		load();
}

void
rejections_invalidate(void)
{
	loaded = false;
}

bool
rejections_is_due(int64 seq, int64 version, TimestampTz at)
{
	Rejection  *r;

	ensure_loaded();
	r = hash_search(rejections, &seq, HASH_FIND, NULL);
	return r == NULL || r->version != version || r->next_attempt_at <= at;
}

TimestampTz
rejections_next_retry(void)
{
	TimestampTz current = GetCurrentTimestamp();
	TimestampTz next = 0;
	HASH_SEQ_STATUS status;
	Rejection  *r;

	if (!loaded)
		return 0;
	hash_seq_init(&status, rejections);
	while ((r = hash_seq_search(&status)) != NULL)
	{
		if (r->next_attempt_at > current &&
			(next == 0 || r->next_attempt_at < next))
			next = r->next_attempt_at;
	}
	return next;
}

static void
forget(int64 seq)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(seq)};

	SPI_connect();
	outbox_prepare_once(&plan,
						"DELETE FROM kairoi.rejections "
						"WHERE seq OPERATOR(pg_catalog.=) $1",
						1, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_DELETE);
	SPI_finish();
	hash_search(rejections, &seq, HASH_REMOVE, NULL);
}

static void
store(Rejection *r, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID,
	TEXTOID};
	Datum		values[5] = {Int64GetDatum(r->seq), Int64GetDatum(r->version),
		Int32GetDatum(r->attempts), TimestampTzGetDatum(r->next_attempt_at),
	CStringGetTextDatum(reason)};

	SPI_connect();
	outbox_prepare_once(&plan,
						"INSERT INTO kairoi.rejections AS r "
						"  (seq, version, attempts, next_attempt_at, last_error) "
						"VALUES ($1, $2, $3, $4, $5) "
						"ON CONFLICT (seq) DO UPDATE "
						"SET version = excluded.version, attempts = excluded.attempts, "
						"    next_attempt_at = excluded.next_attempt_at, "
						"    last_error = excluded.last_error",
						5, argtypes);
	outbox_execute(plan, values, NULL, false, SPI_OK_INSERT);
	SPI_finish();
}

bool
rejections_record(const OutboxSent *sent, const char *reason)
{
	Rejection  *r;
	bool		found;
	int			attempts;

	ensure_loaded();
	r = hash_search(rejections, &sent->seq, HASH_ENTER, &found);
	attempts = (found && r->version == sent->version) ? r->attempts + 1 : 1;
	if (attempts >= kairoi_max_attempts)
	{
		/*
		 * Not moved: replaced meanwhile (the new value is sent) or locked
		 * (sent again after the next safety poll).
		 */
		if (!outbox_move_to_failed(sent, attempts, reason))
		{
			if (!found)
				hash_search(rejections, &sent->seq, HASH_REMOVE, NULL);
			return false;
		}
		forget(sent->seq);
		return true;
	}
	r->version = sent->version;
	r->attempts = attempts;
	r->next_attempt_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 kairoi_backoff_delay_ms(attempts));
	store(r, reason);
	return false;
}

void
rejections_forget(const OutboxSent *acknowledged, int n)
{
	ensure_loaded();
	if (hash_get_num_entries(rejections) == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		if (hash_search(rejections, &acknowledged[i].seq, HASH_FIND, NULL))
			forget(acknowledged[i].seq);
	}
}
