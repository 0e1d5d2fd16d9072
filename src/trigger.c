/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  kairoi_job_trigger(): the ready-made row trigger that schedules one
 *	  job per inserted or updated row, without plpgsql:
 *
 *		CREATE TRIGGER orders_reminder
 *			AFTER INSERT OR UPDATE ON orders FOR EACH ROW
 *			EXECUTE FUNCTION kairoi_job_trigger('order.', 'id', 'placed_at',
 *												'1 day');
 *
 *	  schedules job 'order.' || id at placed_at + interval '1 day'.  The
 *	  arguments are prefix, key column (any type, as its text output), time
 *	  column (timestamptz) and, optionally, an interval added to it.  The
 *	  job goes through the same checks as kairoi_job_set (sql_api.c).
 *
 *	  DELETE is refused: the Kairoi protocol cannot unschedule a job, so a
 *	  trigger that seemed to remove the job of a deleted row would silently
 *	  leave it scheduled.  PostgreSQL gives a C trigger function no say at
 *	  CREATE TRIGGER time, so the error comes at the first DELETE.
 *
 *	  The function is SECURITY DEFINER, like kairoi_job_set, to write the
 *	  outbox.  Under the definer's rights it runs only built-in code: the
 *	  key's output function (those of base types are C functions only a
 *	  superuser can create), interval input and timestamp arithmetic, the
 *	  schema-qualified statements of outbox.c that upsert the entry and
 *	  supersede failed entries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "sql_api.h"

PG_FUNCTION_INFO_V1(kairoi_job_trigger);

#define TRIGGER_FUNCTION "kairoi_job_trigger"
#define TRIGGER_USAGE \
	"Use CREATE TRIGGER ... AFTER INSERT OR UPDATE ON table FOR EACH ROW " \
	"EXECUTE FUNCTION kairoi_job_trigger(prefix, key_column, time_column " \
	"[, offset_interval])."

/* Error context: which trigger of which table */
static void
trigger_context(void *arg)
{
	TriggerData *trigdata = (TriggerData *) arg;

	errcontext("trigger \"%s\" on table \"%s\"",
			   trigdata->tg_trigger->tgname,
			   RelationGetRelationName(trigdata->tg_relation));
}

/*
 * Only AFTER INSERT or UPDATE ... FOR EACH ROW makes sense: a BEFORE
 * trigger could still see its row rejected or changed, a statement trigger
 * has no row, and a deleted row's job cannot be unscheduled.
 */
static void
check_firing(TriggerData *trigdata)
{
	TriggerEvent event = trigdata->tg_event;

	if (!TRIGGER_FIRED_AFTER(event) || !TRIGGER_FIRED_FOR_ROW(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be fired AFTER ... FOR EACH ROW",
						TRIGGER_FUNCTION),
				 errhint(TRIGGER_USAGE)));

	if (TRIGGER_FIRED_BY_DELETE(event))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot unschedule the job of a deleted row",
						TRIGGER_FUNCTION),
				 errdetail("The Kairoi protocol has no instruction to delete a job: it will run at its time."),
				 errhint("Drop DELETE from the trigger's events, and make the job's runner check that the row still exists.")));
}

/* The number of a column named by a trigger argument, or an error */
static AttrNumber
column_argument(TupleDesc desc, const char *column, const char *role)
{
	int			attnum = SPI_fnumber(desc, column);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of %s does not exist",
						role, column, TRIGGER_FUNCTION),
				 errhint(TRIGGER_USAGE)));
	return (AttrNumber) attnum;
}

/* A column's value in the row, or an error if it is NULL */
static Datum
row_value(HeapTuple row, TupleDesc desc, AttrNumber attnum, const char *role)
{
	bool		isnull;
	Datum		value = heap_getattr(row, attnum, desc, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s column \"%s\" of %s is null in this row",
						role, NameStr(TupleDescAttr(desc, attnum - 1)->attname),
						TRIGGER_FUNCTION),
				 errhint("Nothing was scheduled. Make the column NOT NULL, or skip such rows with a WHEN clause on the trigger.")));
	return value;
}

/* prefix || the key's text output */
static text *
job_identifier(const char *prefix, Datum key, Oid key_type)
{
	Oid			output;
	bool		is_varlena;
	char	   *key_text;

	getTypeOutputInfo(key_type, &output, &is_varlena);
	key_text = OidOutputFunctionCall(output, key);
	return cstring_to_text(psprintf("%s%s", prefix, key_text));
}

/* The time column's value, plus the offset argument if there is one */
static TimestampTz
job_execution(TupleDesc desc, HeapTuple row, AttrNumber attnum,
			  const char *offset)
{
	Datum		time = row_value(row, desc, attnum, "time");

	if (offset == NULL)
		return DatumGetTimestampTz(time);
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   time,
												   DirectFunctionCall3(interval_in,
																	   CStringGetDatum(offset),
																	   ObjectIdGetDatum(InvalidOid),
																	   Int32GetDatum(-1))));
}

Datum
kairoi_job_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ErrorContextCallback callback;
	char	  **args;
	TupleDesc	desc;
	HeapTuple	row;
	AttrNumber	key_attnum;
	AttrNumber	time_attnum;
	Oid			time_type;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s can only be called as a trigger", TRIGGER_FUNCTION),
				 errhint(TRIGGER_USAGE)));

	callback.callback = trigger_context;
	callback.arg = trigdata;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	check_firing(trigdata);
	if (trigdata->tg_trigger->tgnargs != 3 && trigdata->tg_trigger->tgnargs != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s takes 3 or 4 arguments, got %d",
						TRIGGER_FUNCTION, trigdata->tg_trigger->tgnargs),
				 errhint(TRIGGER_USAGE)));
	args = trigdata->tg_trigger->tgargs;

	desc = RelationGetDescr(trigdata->tg_relation);
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	key_attnum = column_argument(desc, args[1], "key");
	time_attnum = column_argument(desc, args[2], "time");
	time_type = TupleDescAttr(desc, time_attnum - 1)->atttypid;
	if (time_type != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("time column \"%s\" of %s is of type %s, not timestamp with time zone",
						args[2], TRIGGER_FUNCTION, format_type_be(time_type)),
				 errhint("Store the time as timestamptz, or schedule from a plpgsql trigger with kairoi_job_set and an explicit conversion.")));

	kairoi_schedule_job(job_identifier(args[0],
									   row_value(row, desc, key_attnum, "key"),
									   TupleDescAttr(desc, key_attnum - 1)->atttypid),
						job_execution(desc, row, time_attnum,
									  trigdata->tg_trigger->tgnargs == 4 ? args[3] : NULL),
						(ArgumentRef) {TRIGGER_FUNCTION, "prefix || key column"},
						(ArgumentRef) {TRIGGER_FUNCTION, "time column + offset"});

	error_context_stack = callback.previous;
	return PointerGetDatum(NULL);
}
