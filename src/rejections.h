/*-------------------------------------------------------------------------
 *
 * rejections.h
 *	  The delivery worker's bookkeeping of answers of ERROR (rejections.c):
 *	  attempts and retry times in kairoi.rejections, and the move to
 *	  kairoi.failed after kairoi.max_attempts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_REJECTIONS_H
#define KAIROI_REJECTIONS_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "outbox.h"

/*
 * Inside a transaction: is the entry due at that time, rather than waiting
 * for the retry of its version's last rejection?
 */
extern bool rejections_is_due(int64 seq, int64 version, TimestampTz at);

/*
 * Inside a transaction: the server answered ERROR for what was sent.
 * Counts the attempt and sets the retry time (the delay doubles from
 * kairoi.backoff_min up to kairoi.backoff_max), or moves the entry to
 * kairoi.failed once kairoi.max_attempts is reached.  Returns true if it
 * was moved.
 */
extern bool rejections_record(const OutboxSent *sent, const char *reason);

/* Inside a transaction: these entries were acknowledged and deleted */
extern void rejections_forget(const OutboxSent *acknowledged, int n);

/* The earliest retry time still to come, or 0 if none */
extern TimestampTz rejections_next_retry(void);

/*
 * A transaction of the worker failed: what it wrote of kairoi.rejections
 * is undone, so read the table again before the next use.
 */
extern void rejections_invalidate(void);

#endif							/* KAIROI_REJECTIONS_H */
