/*-------------------------------------------------------------------------
 *
 * at_commit.h
 *	  Notes a transaction takes of what it changed, for its commit to tell
 *	  the delivery worker and the launcher (at_commit.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_AT_COMMIT_H
#define KAIROI_AT_COMMIT_H

#include "postgres.h"

/* Rows from seq on were enqueued (0: read the whole outbox again) */
extern void kairoi_note_enqueue(int64 seq);
extern bool kairoi_enqueued_in_transaction(void);

/*
 * database was created or altered (InvalidOid: created), or its extension
 * dropped or updated: wake the launcher at commit and, with
 * restart_worker, restart the database's worker.
 */
extern void kairoi_note_database_change(Oid database, bool restart_worker);

/* _PG_init: install the end-of-transaction callback */
extern void kairoi_register_xact_callback(void);

#endif							/* KAIROI_AT_COMMIT_H */
