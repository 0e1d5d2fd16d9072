/*-------------------------------------------------------------------------
 *
 * outbox_1_1.h
 *	  Enqueueing into a database whose extension is still at 1.1
 *	  (outbox_1_1.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_OUTBOX_1_1_H
#define KAIROI_OUTBOX_1_1_H

#include "postgres.h"

#include "datatype/timestamp.h"

extern int64 outbox_1_1_enqueue_job(text *identifier, TimestampTz execution);
extern int64 outbox_1_1_enqueue_rule(text *identifier, Datum arguments);
extern int64 outbox_1_1_enqueue_jobs(Datum *identifiers, Datum *executions,
									 int n);

#endif							/* KAIROI_OUTBOX_1_1_H */
