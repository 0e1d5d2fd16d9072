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
 * Check that a job's identifier and execution can be stored and sent;
 * returns the execution rounded up to a whole second.
 */
extern TimestampTz kairoi_check_job(text *identifier, TimestampTz execution,
									ArgumentRef identifier_ref,
									ArgumentRef execution_ref);

/*
 * Check a job and enqueue it; the worker is told when the transaction
 * commits.
 */
extern void kairoi_schedule_job(text *identifier, TimestampTz execution,
								ArgumentRef identifier_ref,
								ArgumentRef execution_ref);

/*
 * Enqueue n jobs checked with kairoi_check_job (text identifiers,
 * timestamptz executions) as one statement; duplicates count as
 * successive calls would.  The arrays are rewritten.
 */
extern void kairoi_schedule_checked_jobs(Datum *identifiers,
										 Datum *executions, int n);

#endif							/* KAIROI_SQL_API_H */
