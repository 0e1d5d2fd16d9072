/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  kairoi_job_trigger(): the ready-made trigger that schedules one job
 *	  per inserted or updated row, without plpgsql:
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
 *	  As a statement trigger with a transition table (AFTER INSERT ...
 *	  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT, and the same
 *	  for UPDATE), it schedules the jobs of all the statement's rows with
 *	  one statement, as kairoi_job_set_many does: what a statement writing
 *	  many rows at once should use.
 *
 *	  DELETE is refused: the Kairoi protocol cannot unschedule a job, so a
 *	  trigger that seemed to remove the job of a deleted row would silently
 *	  leave it scheduled.  PostgreSQL gives a C trigger function no say at
 *	  CREATE TRIGGER time, so the error comes at the first DELETE.
 *
 *	  The function is SECURITY DEFINER, like kairoi_job_set, to write the
 *	  queue.  Under the definer's rights it runs only built-in code: the
 *	  key's output function (those of base types are C functions only a
 *	  superuser can create), interval input and timestamp arithmetic, the
 *	  schema-qualified statements of outbox.c that upsert the entries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "sql_api.h"

PG_FUNCTION_INFO_V1(kairoi_job_trigger);

#define TRIGGER_FUNCTION "kairoi_job_trigger"
#define TRIGGER_USAGE \
	"Use CREATE TRIGGER ... AFTER INSERT OR UPDATE ON table FOR EACH ROW " \
	"EXECUTE FUNCTION kairoi_job_trigger(prefix, key_column, time_column " \
	"[, offset_interval]), or AFTER INSERT (or UPDATE) ... REFERENCING NEW " \
	"TABLE AS new_rows FOR EACH STATEMENT with the same arguments."

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
 * Only AFTER INSERT or UPDATE makes sense, for each row or for a statement
 * with its transition table: a BEFORE trigger could still see its row
 * rejected or changed, a statement trigger without a transition table has
 * no rows, and a deleted row's job cannot be unscheduled.
 */
static void
check_firing(TriggerData *trigdata)
{
	TriggerEvent event = trigdata->tg_event;

	if (!TRIGGER_FIRED_AFTER(event) ||
		(!TRIGGER_FIRED_FOR_ROW(event) && trigdata->tg_newtable == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be fired AFTER ... FOR EACH ROW, or FOR EACH STATEMENT with a transition table of new rows",
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

/*
 * What a trigger's arguments say, found once per statement: the prefix,
 * the key column and its output function, the time column, the offset.
 */
typedef struct JobTrigger
{
	Oid			tgoid;			/* the trigger these are for */
	const char *prefix;
	int			prefix_len;
	AttrNumber	key_attnum;
	FmgrInfo	key_output;
	AttrNumber	time_attnum;
	bool		has_offset;
	Interval	offset;
} JobTrigger;

static void
read_trigger_arguments(TriggerData *trigdata, MemoryContext context,
					   JobTrigger *jt)
{
	Trigger    *trigger = trigdata->tg_trigger;
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	Oid			time_type;
	Oid			output;
	bool		is_varlena;

	if (trigger->tgnargs != 3 && trigger->tgnargs != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s takes 3 or 4 arguments, got %d",
						TRIGGER_FUNCTION, trigger->tgnargs),
				 errhint(TRIGGER_USAGE)));
	jt->prefix = MemoryContextStrdup(context, trigger->tgargs[0]);
	jt->prefix_len = strlen(jt->prefix);
	jt->key_attnum = column_argument(desc, trigger->tgargs[1], "key");
	jt->time_attnum = column_argument(desc, trigger->tgargs[2], "time");
	time_type = TupleDescAttr(desc, jt->time_attnum - 1)->atttypid;
	if (time_type != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("time column \"%s\" of %s is of type %s, not timestamp with time zone",
						trigger->tgargs[2], TRIGGER_FUNCTION,
						format_type_be(time_type)),
				 errhint("Store the time as timestamptz, or schedule from a plpgsql trigger with kairoi_job_set and an explicit conversion.")));
	getTypeOutputInfo(TupleDescAttr(desc, jt->key_attnum - 1)->atttypid,
					  &output, &is_varlena);
	fmgr_info_cxt(output, &jt->key_output, context);
	jt->has_offset = (trigger->tgnargs == 4);
	if (jt->has_offset)
		jt->offset = *DatumGetIntervalP(DirectFunctionCall3(interval_in,
															CStringGetDatum(trigger->tgargs[3]),
															ObjectIdGetDatum(InvalidOid),
															Int32GetDatum(-1)));
	jt->tgoid = trigger->tgoid;
}

/*
 * The trigger's arguments, read at its first row of the statement and
 * kept with the function's call information for the others.
 */
static JobTrigger *
job_trigger(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	JobTrigger *jt = (JobTrigger *) fcinfo->flinfo->fn_extra;

	if (jt == NULL || jt->tgoid != trigdata->tg_trigger->tgoid)
	{
		MemoryContext context = fcinfo->flinfo->fn_mcxt;

		jt = MemoryContextAllocZero(context, sizeof(JobTrigger));
		read_trigger_arguments(trigdata, context, jt);
		fcinfo->flinfo->fn_extra = jt;
	}
	return jt;
}

/* A column's value in the row, or an error if it is NULL */
static Datum
row_value(TupleTableSlot *row, AttrNumber attnum, const char *role)
{
	bool		isnull;
	Datum		value = slot_getattr(row, attnum, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s column \"%s\" of %s is null in this row",
						role,
						NameStr(TupleDescAttr(row->tts_tupleDescriptor,
											  attnum - 1)->attname),
						TRIGGER_FUNCTION),
				 errhint("Nothing was scheduled. Make the column NOT NULL, or skip such rows with a WHEN clause on the trigger.")));
	return value;
}

/* prefix || the key's text output, built in place (once per row) */
static text *
job_identifier(JobTrigger *jt, TupleTableSlot *row)
{
	char	   *key_text = OutputFunctionCall(&jt->key_output,
											  row_value(row, jt->key_attnum,
														"key"));
	int			key_len = strlen(key_text);
	text	   *identifier = palloc(VARHDRSZ + jt->prefix_len + key_len);

	SET_VARSIZE(identifier, VARHDRSZ + jt->prefix_len + key_len);
	memcpy(VARDATA(identifier), jt->prefix, jt->prefix_len);
	memcpy(VARDATA(identifier) + jt->prefix_len, key_text, key_len);
	return identifier;
}

/* The time column's value, plus the offset argument if there is one */
static TimestampTz
job_execution(JobTrigger *jt, TupleTableSlot *row)
{
	Datum		time = row_value(row, jt->time_attnum, "time");

	if (!jt->has_offset)
		return DatumGetTimestampTz(time);
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   time,
												   IntervalPGetDatum(&jt->offset)));
}

static const ArgumentRef identifier_ref = {TRIGGER_FUNCTION, "prefix || key column"};
static const ArgumentRef execution_ref = {TRIGGER_FUNCTION, "time column + offset"};

/* FOR EACH ROW: the job of the row inserted, or of its new version */
static void
schedule_row(TriggerData *trigdata, JobTrigger *jt)
{
	TupleTableSlot *row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newslot : trigdata->tg_trigslot;

	kairoi_schedule_job(job_identifier(jt, row), job_execution(jt, row),
						identifier_ref, execution_ref);
}

/* Error context of a statement trigger: which row of the transition table */
static void
transition_row_context(void *arg)
{
	errcontext("row %d of the transition table", *(int *) arg + 1);
}

/* FOR EACH STATEMENT: the jobs of all the new rows, as one statement */
static void
schedule_transition_table(TriggerData *trigdata, JobTrigger *jt)
{
	Tuplestorestate *rows = trigdata->tg_newtable;
	TupleTableSlot *row = MakeSingleTupleTableSlot(RelationGetDescr(trigdata->tg_relation),
												   &TTSOpsMinimalTuple);
	int			capacity = 64;
	Datum	   *identifiers = palloc(capacity * sizeof(Datum));
	Datum	   *executions = palloc(capacity * sizeof(Datum));
	ErrorContextCallback callback;
	int			n = 0;

	callback.callback = transition_row_context;
	callback.arg = &n;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, row))
	{
		text	   *identifier = job_identifier(jt, row);

		if (n == capacity)
		{
			capacity *= 2;
			identifiers = repalloc_huge(identifiers, capacity * sizeof(Datum));
			executions = repalloc_huge(executions, capacity * sizeof(Datum));
		}
		executions[n] = TimestampTzGetDatum(kairoi_check_job(identifier,
															 job_execution(jt, row),
															 identifier_ref,
															 execution_ref));
		identifiers[n++] = PointerGetDatum(identifier);
	}
	error_context_stack = callback.previous;
	ExecDropSingleTupleTableSlot(row);
	kairoi_schedule_checked_jobs(identifiers, executions, n);
}

Datum
kairoi_job_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ErrorContextCallback callback;
	JobTrigger *jt;

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
	jt = job_trigger(fcinfo, trigdata);
	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		schedule_row(trigdata, jt);
	else
		schedule_transition_table(trigdata, jt);

	error_context_stack = callback.previous;
	return PointerGetDatum(NULL);
}
