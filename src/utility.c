/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  The utility hook: keeping delivery workers out of the way of DDL, and
 *	  noting the statements the launcher and the workers react to.
 *
 *	  It stops a database's worker before DROP DATABASE, ALTER DATABASE
 *	  RENAME or SET TABLESPACE, and CREATE DATABASE ... TEMPLATE (which
 *	  need the database to themselves), and notes the statements the
 *	  launcher or a worker must react to at commit (at_commit.c): CREATE
 *	  and ALTER DATABASE, ALTER DATABASE SET (the worker restarts to read
 *	  its new settings, kairoi.server among them), and DROP or ALTER
 *	  EXTENSION kairoi.  After CREATE or ALTER PUBLICATION, and CREATE or
 *	  ALTER EXTENSION kairoi, it warns about a publication that includes
 *	  kairoi's tables (logical_replication.c).
 *
 *	  The hook runs before PostgreSQL's own checks, in any session, so it
 *	  stops a worker only for a statement those checks will let through:
 *	  the caller owns the database (and may create databases, to rename
 *	  or copy it) and the statement may run where it is (not in a
 *	  transaction block or a function).  Otherwise any role could stop any
 *	  database's delivery with statements that are then refused.  The
 *	  pause that keeps the launcher from restarting the worker is released
 *	  however the statement ends, also when its session dies on the way
 *	  (FATAL, pg_terminate_backend).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/tablespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "tcop/utility.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "at_commit.h"
#include "compat.h"
#include "logical_replication.h"
#include "shmem.h"
#include "utility.h"

/* How long DROP DATABASE waits for the worker to exit */
#define WORKER_STOP_TIMEOUT_MS 10000

static ProcessUtility_hook_type prev_process_utility_hook = NULL;

/* Change the pause count of database's slot, if it has one */
static void
pause_database(Oid database, int delta)
{
	KairoiDatabaseSlot *slot = kairoi_find_slot(database);

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->database == database)
		slot->paused = Max(0, slot->paused + delta);
	SpinLockRelease(&slot->mutex);
	if (delta < 0)
		kairoi_wake_launcher();
}

/* Release the pause of a database: also run if the session dies */
static void
release_pause(int code, Datum database)
{
	pause_database(DatumGetObjectId(database), -1);
}

/* Ask the worker serving database to exit, and wait until it has */
static void
stop_worker_for(Oid database)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   WORKER_STOP_TIMEOUT_MS);

	ConditionVariablePrepareToSleep(&kairoi_shared->progress_cv);
	for (;;)
	{
		KairoiDatabaseSlot *slot = kairoi_find_slot(database);
		pid_t		pid = 0;

		if (slot != NULL)
		{
			SpinLockAcquire(&slot->mutex);
			if (slot->database == database)
				pid = slot->worker_pid;
			SpinLockRelease(&slot->mutex);
		}
		if (pid == 0 || GetCurrentTimestamp() >= deadline)
			break;
		(void) kill(pid, SIGTERM);
		(void) ConditionVariableTimedSleep(&kairoi_shared->progress_cv, 100,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* The DefElem of a statement's option, or NULL */
static DefElem *
find_option(List *options, const char *name)
{
	ListCell   *cell;

	foreach(cell, options)
	{
		DefElem    *option = lfirst_node(DefElem, cell);

		if (strcmp(option->defname, name) == 0)
			return option;
	}
	return NULL;
}

static bool
has_option(List *options, const char *name)
{
	return find_option(options, name) != NULL;
}

static const char *
option_value(List *options, const char *name)
{
	DefElem    *option = find_option(options, name);

	return (option != NULL && option->arg != NULL) ? defGetString(option) : NULL;
}

/* Has the current user CREATEDB (or is a superuser)? */
static bool
has_createdb_privilege(void)
{
	HeapTuple	tuple;
	bool		result;

	if (superuser())
		return true;
	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	if (!HeapTupleIsValid(tuple))
		return false;
	result = ((Form_pg_authid) GETSTRUCT(tuple))->rolcreatedb;
	ReleaseSysCache(tuple);
	return result;
}

static bool
is_template(Oid database)
{
	HeapTuple	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(database));
	bool		result;

	if (!HeapTupleIsValid(tuple))
		return false;
	result = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
	ReleaseSysCache(tuple);
	return result;
}

static bool
may_create_in_tablespace(const char *name)
{
	Oid			tablespace = name ? get_tablespace_oid(name, true) : InvalidOid;

	return OidIsValid(tablespace) &&
		kairoi_tablespace_aclcheck(tablespace, GetUserId(), ACL_CREATE) == ACLCHECK_OK;
}

/*
 * Will PostgreSQL let the current user run this statement, which needs
 * database to itself?  The checks of dbcommands.c that decide who may run
 * it and where (dropdb, RenameDatabase, movedb, createdb), made before
 * they are: the caller must pass them before the hook stops a worker.
 * Checks that do not depend on the caller (a name taken, sessions still
 * connected) are left to PostgreSQL.
 */
static bool
statement_is_allowed(Node *statement, Oid database, bool top_level)
{
	Oid			user = GetUserId();

	if (database == MyDatabaseId)
		return false;			/* no statement of these may */
	switch (nodeTag(statement))
	{
		case T_DropdbStmt:
			return !IsInTransactionBlock(top_level) &&
				kairoi_database_ownercheck(database, user);
		case T_RenameStmt:
			return kairoi_database_ownercheck(database, user) &&
				has_createdb_privilege();
		case T_AlterDatabaseStmt:
			return !IsInTransactionBlock(top_level) &&
				kairoi_database_ownercheck(database, user) &&
				may_create_in_tablespace(option_value(((AlterDatabaseStmt *) statement)->options,
													  "tablespace"));
		case T_CreatedbStmt:
			return !IsInTransactionBlock(top_level) &&
				has_createdb_privilege() &&
				(is_template(database) ||
				 kairoi_database_ownercheck(database, user));
		default:
			return false;
	}
}

/* The database a utility statement needs exclusive use of, if any */
static const char *
database_needing_exclusive_use(Node *statement)
{
	if (IsA(statement, DropdbStmt))
		return ((DropdbStmt *) statement)->dbname;
	if (IsA(statement, RenameStmt) &&
		((RenameStmt *) statement)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) statement)->subname;
	if (IsA(statement, AlterDatabaseStmt) &&
		has_option(((AlterDatabaseStmt *) statement)->options, "tablespace"))
		return ((AlterDatabaseStmt *) statement)->dbname;
	if (IsA(statement, CreatedbStmt))
		return option_value(((CreatedbStmt *) statement)->options, "template");
	return NULL;
}

static bool
names_kairoi(const char *extension)
{
	return strcmp(extension, "kairoi") == 0;
}

static bool
names_kairoi_extension(DropStmt *stmt)
{
	ListCell   *cell;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(cell, stmt->objects)
	{
		if (names_kairoi(strVal(lfirst(cell))))
			return true;
	}
	return false;
}

/*
 * After a statement succeeded: note what the launcher (new or changed
 * databases) or a worker (new settings, extension dropped or updated) must
 * see once the transaction commits.
 */
static void
note_statement_for_commit(Node *statement)
{
	switch (nodeTag(statement))
	{
		case T_CreatedbStmt:
			kairoi_note_database_change(InvalidOid, false);
			break;
		case T_AlterDatabaseStmt:
			kairoi_note_database_change(get_database_oid(((AlterDatabaseStmt *) statement)->dbname, true),
										false);
			break;
		case T_AlterDatabaseSetStmt:
			kairoi_note_database_change(get_database_oid(((AlterDatabaseSetStmt *) statement)->dbname, true),
										true);
			break;
		case T_DropStmt:
			if (names_kairoi_extension((DropStmt *) statement))
				kairoi_note_database_change(MyDatabaseId, true);
			break;
		case T_AlterExtensionStmt:
			if (names_kairoi(((AlterExtensionStmt *) statement)->extname))
				kairoi_note_database_change(MyDatabaseId, true);
			break;
		default:
			break;
	}
}

/*
 * After a statement succeeded: warn if it put kairoi's tables in a
 * publication, or created or updated kairoi where a publication includes
 * them.  ALTER PUBLICATION that drops objects or only sets options adds
 * nothing.
 */
static void
warn_if_publishing_kairoi(Node *statement)
{
	switch (nodeTag(statement))
	{
		case T_CreatePublicationStmt:
			kairoi_warn_if_published(((CreatePublicationStmt *) statement)->pubname);
			break;
		case T_AlterPublicationStmt:
			{
				AlterPublicationStmt *stmt = (AlterPublicationStmt *) statement;

				if (stmt->pubobjects != NIL && stmt->action != AP_DropObjects)
					kairoi_warn_if_published(stmt->pubname);
			}
			break;
		case T_CreateExtensionStmt:
			if (names_kairoi(((CreateExtensionStmt *) statement)->extname))
				kairoi_warn_if_published(NULL);
			break;
		case T_AlterExtensionStmt:
			if (names_kairoi(((AlterExtensionStmt *) statement)->extname))
				kairoi_warn_if_published(NULL);
			break;
		default:
			break;
	}
}

static void
next_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	(prev_process_utility_hook ? prev_process_utility_hook
	 : standard_ProcessUtility) (pstmt, queryString, readOnlyTree,
								 context, params, queryEnv, dest, qc);
}

/* Run a statement that needs database to itself, its worker stopped */
static void
process_utility_with_worker_stopped(Oid database, PlannedStmt *pstmt,
									const char *queryString,
									bool readOnlyTree,
									ProcessUtilityContext context,
									ParamListInfo params,
									QueryEnvironment *queryEnv,
									DestReceiver *dest, QueryCompletion *qc)
{
	pause_database(database, 1);
	PG_ENSURE_ERROR_CLEANUP(release_pause, ObjectIdGetDatum(database));
	{
		stop_worker_for(database);
		next_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	}
	PG_END_ENSURE_ERROR_CLEANUP(release_pause, ObjectIdGetDatum(database));
	release_pause(0, ObjectIdGetDatum(database));
}

static void
kairoi_process_utility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *statement = pstmt->utilityStmt;
	const char *dbname = database_needing_exclusive_use(statement);
	Oid			database = InvalidOid;

	if (dbname != NULL)
		database = get_database_oid(dbname, true);

	if (OidIsValid(database) &&
		statement_is_allowed(statement, database,
							 context == PROCESS_UTILITY_TOPLEVEL))
		process_utility_with_worker_stopped(database, pstmt, queryString,
											readOnlyTree, context, params,
											queryEnv, dest, qc);
	else
		next_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	note_statement_for_commit(statement);
	warn_if_publishing_kairoi(statement);
}

void
kairoi_install_utility_hook(void)
{
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = kairoi_process_utility;
}
