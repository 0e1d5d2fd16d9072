/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  The SQL-callable scheduling functions: kairoi_job_set,
 *	  kairoi_job_set_many (arrays of jobs) and the kairoi_rule_set family.
 *	  Every argument is checked here, at call time, so that nothing the
 *	  Kairoi server would reject, misread or store wrongly ever reaches the
 *	  outbox; a rejected call changes nothing.  trigger.c goes through the
 *	  same checks.
 *
 *	  What a call enqueued is noted for the end of the transaction
 *	  (at_commit.c), which tells the database's worker at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/itup.h"
#include "access/nbtree.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "at_commit.h"
#include "outbox.h"
#include "sql_api.h"

PG_FUNCTION_INFO_V1(kairoi_job_set);
PG_FUNCTION_INFO_V1(kairoi_job_set_many);
PG_FUNCTION_INFO_V1(kairoi_rule_set);
PG_FUNCTION_INFO_V1(kairoi_rule_set_shell);
PG_FUNCTION_INFO_V1(kairoi_rule_set_amqp);
PG_FUNCTION_INFO_V1(kairoi_wake_worker_at_commit);
PG_FUNCTION_INFO_V1(kairoi_library_version);
PG_FUNCTION_INFO_V1(kairoi_restart_worker_at_commit);

/*
 * Largest identifier, pattern or runner argument, in UTF-8 bytes.  The
 * reference server rejects identifiers over 65535 bytes; the same bound is
 * applied to every argument so that no request can grow without limit.
 */
#define KAIROI_MAX_ARGUMENT_BYTES 65535

/*
 * Execution times the reference server can store: it keeps signed 64-bit
 * nanoseconds since 1970, so whole seconds from 1677-09-21 00:12:44 to
 * 2262-04-11 23:47:16 UTC (kcp.md part 2).  As seconds since 2000-01-01.
 */
#define KAIROI_MIN_EXECUTION_SECS INT64CONST(-9223372036)
#define KAIROI_MAX_EXECUTION_SECS INT64CONST(9223372036)
#define UNIX_EPOCH_TO_PG_EPOCH_SECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

static void
check_not_null(FunctionCallInfo fcinfo, int argno, ArgumentRef ref)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s must not be null",
						ref.name, ref.function),
				 errhint("Nothing was scheduled. Pass a value for \"%s\".",
						 ref.name)));
}

static void
conversion_error_context(void *arg)
{
	ArgumentRef *ref = (ArgumentRef *) arg;

	errcontext("converting argument \"%s\" of %s to UTF-8",
			   ref->name, ref->function);
}

/*
 * Length in bytes of a text value once in UTF-8.  A SQL_ASCII database
 * stores bytes unchecked, so they must already be valid UTF-8; any other
 * encoding is converted, and a character with no UTF-8 equivalent raises
 * the conversion's own error, with a context line naming the argument.
 */
static size_t
utf8_length(const char *data, int len, ArgumentRef *ref)
{
	ErrorContextCallback callback;
	char	   *utf8;
	size_t		utf8_len;

	if (GetDatabaseEncoding() == PG_SQL_ASCII)
	{
		if (!pg_verify_mbstr(PG_UTF8, data, len, true))
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("argument \"%s\" of %s is not valid UTF-8",
							ref->name, ref->function),
					 errdetail("The database encoding is SQL_ASCII, which does not check the bytes it stores."),
					 errhint("The Kairoi protocol carries UTF-8 text only.")));
		return (size_t) len;
	}

	callback.callback = conversion_error_context;
	callback.arg = ref;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	utf8 = pg_server_to_any(data, len, PG_UTF8);
	error_context_stack = callback.previous;

	if (utf8 == data)
		return (size_t) len;
	utf8_len = strlen(utf8);
	pfree(utf8);
	return utf8_len;
}

/*
 * Check that a text argument can travel as one KCP argument: not empty,
 * UTF-8 once converted, and at most KAIROI_MAX_ARGUMENT_BYTES long then.
 */
static void
check_text_argument(text *value, ArgumentRef ref)
{
	int			len = VARSIZE_ANY_EXHDR(value);
	size_t		utf8_len;

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" of %s must not be empty",
						ref.name, ref.function),
				 errhint("Kairoi gives an empty string a special meaning "
						 "(it matches every job); pass a non-empty value.")));

	utf8_len = utf8_length(VARDATA_ANY(value), len, &ref);
	if (utf8_len > KAIROI_MAX_ARGUMENT_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("argument \"%s\" of %s is too long",
						ref.name, ref.function),
				 errdetail("It is %zu bytes in UTF-8; the limit is %d bytes.",
						   utf8_len, KAIROI_MAX_ARGUMENT_BYTES)));
}

/*
 * Largest identifier, in bytes of the database encoding, that the B-tree
 * indexes on (kind, identifier) of kairoi.outbox and kairoi.failed hold
 * whatever its content: nbtree's limit on an index tuple (BTMaxItemSize in
 * access/nbtree.h, for BLCKSZ pages: 2704 bytes for 8 kB), less the index
 * tuple's header, the "char" kind padded to the text's alignment and the
 * text's 4-byte length word (2688 bytes for 8 kB pages).  A longer value
 * fits only if it compresses well enough, which no caller can foresee.
 */
#define BTREE_MAX_ITEM_BYTES \
	MAXALIGN_DOWN((BLCKSZ - \
				   MAXALIGN(SizeOfPageHeaderData + 3 * sizeof(ItemIdData) + \
							3 * sizeof(ItemPointerData)) - \
				   MAXALIGN(sizeof(BTPageOpaqueData))) / 3)
#define KAIROI_MAX_IDENTIFIER_BYTES \
	((int) (BTREE_MAX_ITEM_BYTES - \
			INTALIGN(sizeof(IndexTupleData) + sizeof(char)) - VARHDRSZ))

/* A job's or a rule's identifier must fit in the outbox's unique index */
static void
check_identifier_fits_index(text *value, ArgumentRef ref)
{
	int			len = VARSIZE_ANY_EXHDR(value);

	if (len > KAIROI_MAX_IDENTIFIER_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("argument \"%s\" of %s is too long",
						ref.name, ref.function),
				 errdetail("It is %d bytes; the index of the outbox holds identifiers of at most %d bytes.",
						   len, KAIROI_MAX_IDENTIFIER_BYTES),
				 errhint("Nothing was scheduled. Use a shorter identifier, "
						 "for example a key or a hash of the long one.")));
}

/* check_not_null + check_text_argument for one positional argument */
static text *
get_text_argument(FunctionCallInfo fcinfo, int argno, ArgumentRef ref)
{
	text	   *value;

	check_not_null(fcinfo, argno, ref);
	value = PG_GETARG_TEXT_PP(argno);
	check_text_argument(value, ref);
	return value;
}

/* check_text_argument for an identifier */
static void
check_identifier_argument(text *value, ArgumentRef ref)
{
	check_text_argument(value, ref);
	check_identifier_fits_index(value, ref);
}

/* get_text_argument for an identifier */
static text *
get_identifier_argument(FunctionCallInfo fcinfo, int argno, ArgumentRef ref)
{
	text	   *value = get_text_argument(fcinfo, argno, ref);

	check_identifier_fits_index(value, ref);
	return value;
}

/*
 * A one-dimensional array argument without NULL elements (an empty array
 * is fine).  Sets *elements to its elements and returns how many there
 * are.  element_name names one element in the hint.
 */
static int
get_array_argument(FunctionCallInfo fcinfo, int argno, ArgumentRef ref,
				   const char *element_name, Datum **elements)
{
	ArrayType  *array;
	Oid			element_type;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool	   *nulls;
	int			nelements;

	check_not_null(fcinfo, argno, ref);
	array = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("argument \"%s\" of %s must be a one-dimensional array",
						ref.name, ref.function)));
	element_type = ARR_ELEMTYPE(array);
	get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
	deconstruct_array(array, element_type, typlen, typbyval, typalign,
					  elements, &nulls, &nelements);

	for (int i = 0; i < nelements; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("element %d of argument \"%s\" of %s must not be null",
							i + 1, ref.name, ref.function),
					 errhint("Nothing was scheduled. Pass a value for every %s.",
							 element_name)));
	}
	return nelements;
}

/*
 * Round a timestamp up to the next whole second (a job must never fire
 * before the time asked for) and check that the server can store it.
 */
static TimestampTz
check_execution(TimestampTz execution, ArgumentRef ref)
{
	int64		secs;

	if (TIMESTAMP_NOT_FINITE(execution))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("argument \"%s\" of %s must be a finite timestamp",
						ref.name, ref.function),
				 errhint("Kairoi runs jobs at a given time; \"infinity\" and "
						 "\"-infinity\" have none.")));

	secs = execution / USECS_PER_SEC;
	if (execution % USECS_PER_SEC > 0)
		secs++;

	if (secs < KAIROI_MIN_EXECUTION_SECS - UNIX_EPOCH_TO_PG_EPOCH_SECS ||
		secs > KAIROI_MAX_EXECUTION_SECS - UNIX_EPOCH_TO_PG_EPOCH_SECS)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("argument \"%s\" of %s is out of the range the Kairoi server can store",
						ref.name, ref.function),
				 errdetail("After rounding up to a whole second it is %s.",
						   timestamptz_to_str(secs * USECS_PER_SEC)),
				 errhint("Kairoi stores times from 1677-09-21 00:12:44 to "
						 "2262-04-11 23:47:16 UTC.")));
	return secs * USECS_PER_SEC;
}

static Datum
make_text_array(Datum *elements, int nelements)
{
	return PointerGetDatum(construct_array(elements, nelements, TEXTOID,
										   -1, false, TYPALIGN_INT));
}

/* Number of arguments each runner takes, and what they are */
typedef struct RunnerSpec
{
	const char *name;
	int			nargs;
	const char *usage;
} RunnerSpec;

static const RunnerSpec runners[] = {
	{"shell", 1, "shell takes one argument: the script path"},
	{"amqp", 3, "amqp takes three arguments: dsn, exchange and routing key"},
};

static const RunnerSpec *
lookup_runner(text *runner, const char *function)
{
	char	   *name = text_to_cstring(runner);

	for (size_t i = 0; i < lengthof(runners); i++)
	{
		if (strcmp(name, runners[i].name) == 0)
			return &runners[i];
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("argument \"runner\" of %s names an unknown runner \"%s\"",
					function, name),
			 errhint("Kairoi knows the runners \"shell\" and \"amqp\" "
					 "(lowercase).")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Check a rule and enqueue it.  runner_args are the runner's arguments,
 * already checked for NULL; the rest of the checks happen here.  arg_names
 * names them for error messages (NULL: they came as runner_arguments).
 */
static void
enqueue_rule(const char *function, text *identifier, text *pattern,
			 text *runner, text **runner_args, int nrunner_args,
			 const char *const *arg_names)
{
	const RunnerSpec *spec = lookup_runner(runner, function);
	Datum	   *elements;

	if (nrunner_args != spec->nargs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("runner \"%s\" takes %d argument%s, %s got %d",
						spec->name, spec->nargs, spec->nargs == 1 ? "" : "s",
						function, nrunner_args),
				 errhint("%s.", spec->usage)));

	elements = palloc((2 + nrunner_args) * sizeof(Datum));
	elements[0] = PointerGetDatum(pattern);
	elements[1] = PointerGetDatum(runner);
	for (int i = 0; i < nrunner_args; i++)
	{
		ArgumentRef ref = {function,
		arg_names ? arg_names[i] : "runner_arguments"};

		check_text_argument(runner_args[i], ref);
		elements[2 + i] = PointerGetDatum(runner_args[i]);
	}

	kairoi_note_enqueue(outbox_enqueue_rule(identifier,
											make_text_array(elements,
															2 + nrunner_args)));
}

TimestampTz
kairoi_check_job(text *identifier, TimestampTz execution,
				 ArgumentRef identifier_ref, ArgumentRef execution_ref)
{
	check_identifier_argument(identifier, identifier_ref);
	return check_execution(execution, execution_ref);
}

void
kairoi_schedule_job(text *identifier, TimestampTz execution,
					ArgumentRef identifier_ref, ArgumentRef execution_ref)
{
	execution = kairoi_check_job(identifier, execution, identifier_ref,
								 execution_ref);
	kairoi_note_enqueue(outbox_enqueue_job(identifier, execution));
}

void
kairoi_schedule_checked_jobs(Datum *identifiers, Datum *executions, int n)
{
	if (n > 0)
		kairoi_note_enqueue(outbox_enqueue_jobs(identifiers, executions, n));
}

Datum
kairoi_job_set(PG_FUNCTION_ARGS)
{
	const char *function = "kairoi_job_set";
	ArgumentRef identifier_ref = {function, "identifier"};
	ArgumentRef execution_ref = {function, "execution"};

	check_not_null(fcinfo, 0, identifier_ref);
	check_not_null(fcinfo, 1, execution_ref);
	kairoi_schedule_job(PG_GETARG_TEXT_PP(0), PG_GETARG_TIMESTAMPTZ(1),
						identifier_ref, execution_ref);
	PG_RETURN_VOID();
}

/* Error context of the array form: which element was being checked */
static void
array_element_context(void *arg)
{
	int		   *index = (int *) arg;

	errcontext("element %d of the arrays", *index + 1);
}

/*
 * kairoi_job_set_many(identifiers text[], executions timestamptz[]): every
 * element is checked as kairoi_job_set(text, timestamptz) checks its
 * arguments, before anything is written; then one statement enqueues them
 * all.
 */
Datum
kairoi_job_set_many(PG_FUNCTION_ARGS)
{
	const char *function = "kairoi_job_set_many";
	ArgumentRef identifiers_ref = {function, "identifiers"};
	ArgumentRef executions_ref = {function, "executions"};
	Datum	   *identifiers;
	Datum	   *executions;
	int			nidentifiers = get_array_argument(fcinfo, 0, identifiers_ref,
												  "identifier", &identifiers);
	int			nexecutions = get_array_argument(fcinfo, 1, executions_ref,
												 "execution", &executions);
	ErrorContextCallback callback;
	int			index = 0;

	if (nidentifiers != nexecutions)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("arguments \"identifiers\" and \"executions\" of %s must have the same length",
						function),
				 errdetail("\"identifiers\" has %d elements, \"executions\" has %d.",
						   nidentifiers, nexecutions),
				 errhint("Nothing was scheduled. Pass one execution per identifier.")));

	callback.callback = array_element_context;
	callback.arg = &index;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	for (index = 0; index < nidentifiers; index++)
		executions[index] =
			TimestampTzGetDatum(kairoi_check_job(DatumGetTextPP(identifiers[index]),
												 DatumGetTimestampTz(executions[index]),
												 identifiers_ref, executions_ref));
	error_context_stack = callback.previous;

	kairoi_schedule_checked_jobs(identifiers, executions, nidentifiers);
	PG_RETURN_VOID();
}

Datum
kairoi_rule_set(PG_FUNCTION_ARGS)
{
	const char *function = "kairoi_rule_set";
	text	   *identifier = get_identifier_argument(fcinfo, 0,
													 (ArgumentRef) {function, "identifier"});
	text	   *pattern = get_text_argument(fcinfo, 1,
											(ArgumentRef) {function, "pattern"});
	text	   *runner = get_text_argument(fcinfo, 2,
										   (ArgumentRef) {function, "runner"});
	Datum	   *values;
	int			nvalues;
	text	  **runner_args;

	nvalues = get_array_argument(fcinfo, 3,
								 (ArgumentRef) {function, "runner_arguments"},
								 "runner argument", &values);
	runner_args = palloc0(Max(nvalues, 1) * sizeof(text *));
	for (int i = 0; i < nvalues; i++)
		runner_args[i] = DatumGetTextPP(values[i]);

	enqueue_rule(function, identifier, pattern, runner, runner_args, nvalues,
				 NULL);
	PG_RETURN_VOID();
}

/*
 * The typed helpers: kairoi_rule_set_shell(identifier, pattern, script) and
 * kairoi_rule_set_amqp(identifier, pattern, dsn, exchange, routing_key).
 */
static void
enqueue_typed_rule(FunctionCallInfo fcinfo, const char *function,
				   const char *runner_name, const char *const *arg_names)
{
	text	   *identifier = get_identifier_argument(fcinfo, 0,
													 (ArgumentRef) {function, "identifier"});
	text	   *pattern = get_text_argument(fcinfo, 1,
											(ArgumentRef) {function, "pattern"});
	int			nargs = PG_NARGS() - 2;
	text	  **runner_args = palloc(nargs * sizeof(text *));

	for (int i = 0; i < nargs; i++)
	{
		check_not_null(fcinfo, 2 + i, (ArgumentRef) {function, arg_names[i]});
		runner_args[i] = PG_GETARG_TEXT_PP(2 + i);
	}

	enqueue_rule(function, identifier, pattern, cstring_to_text(runner_name),
				 runner_args, nargs, arg_names);
}

Datum
kairoi_rule_set_shell(PG_FUNCTION_ARGS)
{
	static const char *const arg_names[] = {"script"};

	enqueue_typed_rule(fcinfo, "kairoi_rule_set_shell", "shell", arg_names);
	PG_RETURN_VOID();
}

Datum
kairoi_rule_set_amqp(PG_FUNCTION_ARGS)
{
	static const char *const arg_names[] = {"dsn", "exchange", "routing_key"};

	enqueue_typed_rule(fcinfo, "kairoi_rule_set_amqp", "amqp", arg_names);
	PG_RETURN_VOID();
}

/*
 * Wake the worker when the calling transaction commits, and make it read
 * the outbox from the start: for CREATE EXTENSION and kairoi_retry_failed.
 */
/*
 * kairoi._library_version(): the release of the library loaded, which the
 * script of ALTER EXTENSION kairoi UPDATE TO '1.2' needs (a library loaded
 * before the package was upgraded does not have this function).
 */
Datum
kairoi_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(KAIROI_LIBRARY_VERSION));
}

Datum
kairoi_wake_worker_at_commit(PG_FUNCTION_ARGS)
{
	kairoi_note_enqueue(0);
	PG_RETURN_VOID();
}

/*
 * kairoi._restart_worker_at_commit(): the database's worker restarts when
 * the calling transaction commits, and reads the database afresh (used by
 * kairoi_serve_copy(): a copy's worker starts again).
 */
Datum
kairoi_restart_worker_at_commit(PG_FUNCTION_ARGS)
{
	kairoi_note_database_change(MyDatabaseId, true);
	PG_RETURN_VOID();
}
