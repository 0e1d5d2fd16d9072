/*-------------------------------------------------------------------------
 *
 * sql_api.h
 *	  The argument checks of the scheduling functions (sql_api.c), shared
 *	  with the trigger function (trigger.c) so that every way of scheduling
 *	  a job accepts and rejects exactly the same values.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_SQL_API_H
#define KAIROI_SQL_API_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* Which function and argument a check is about, for error messages */
typedef struct ArgumentRef
{
	const char *function;
	const char *name;
} ArgumentRef;

/*
 * Check that a job's identifier and execution can be stored and sent, and
 * enqueue the job; the worker is told when the transaction commits.
 */
extern void kairoi_schedule_job(text *identifier, TimestampTz execution,
								ArgumentRef identifier_ref,
								ArgumentRef execution_ref);

#endif							/* KAIROI_SQL_API_H */
