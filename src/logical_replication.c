/*-------------------------------------------------------------------------
 *
 * logical_replication.c
 *	  kairoi's tables are node-local under logical replication: the trigger
 *	  that skips the changes a subscription applies to them, and the
 *	  warning when a publication includes them.
 *
 *	  A publication FOR ALL TABLES (or FOR TABLES IN SCHEMA kairoi)
 *	  includes kairoi's tables, and PostgreSQL 15 to 18
 *	  cannot leave a table out of it.  Applied on a subscriber, those rows
 *	  would be delivered by both nodes, their seq and id (from sequences,
 *	  which are not replicated) would collide with the subscriber's own,
 *	  and the publisher's deletes would remove the subscriber's entries.
 *	  So each node delivers what was scheduled on it, the way sequences
 *	  are not replicated: kairoi._skip_replicated_change(), a BEFORE INSERT
 *	  OR UPDATE OR DELETE row trigger on each table, returns NULL (skip the
 *	  row) in a logical replication worker.  The apply worker, the
 *	  tablesync worker (the initial COPY of CREATE SUBSCRIPTION) and, from
 *	  PostgreSQL 16, the parallel apply worker all attach to a
 *	  LogicalRepWorker slot, which is what IsLogicalWorker() tests.
 *
 *	  The triggers are ENABLE REPLICA (kairoi--1.1--1.2.sql): they fire only
 *	  under session_replication_role = replica, which those workers set, so
 *	  ordinary sessions never call the function.  A session that sets
 *	  replica itself is no logical worker: its rows are kept.  A replicated
 *	  TRUNCATE fires no row trigger and is not skipped; kairoi never
 *	  truncates its tables, and the warning says how to publish without it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_publication.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "replication/logicalworker.h"
#include "utils/lsyscache.h"

#include "logical_replication.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(kairoi_skip_replicated_change);

Datum
kairoi_skip_replicated_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kairoi._skip_replicated_change() must be fired BEFORE ... FOR EACH ROW")));

	if (IsLogicalWorker())
		return PointerGetDatum(NULL);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_newtuple);
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/* kairoi's tables, in the schema kairoi: 1.2's, and 1.1's */
static const char *const tables_1_2[] = {
	"pending_jobs", "pending_rules", "rejections", "failed", "origin"
};
static const char *const tables_1_1[] = {"outbox", "failed"};

#define MAX_TABLES ((int) lengthof(tables_1_2))

/* The publications that include relid: by name, by schema, or all tables */
static List *
publications_including(Oid relid)
{
	List	   *publications = GetRelationPublications(relid);

	publications = list_concat_unique_oid(publications,
										  GetSchemaPublications(get_rel_namespace(relid)));
	return list_concat_unique_oid(publications, GetAllTablesPublications());
}

static void
warn_published(Oid publication, const char *const *table_names, int ntables,
			   List *const *including)
{
	StringInfoData tables;

	initStringInfo(&tables);
	for (int i = 0; i < ntables; i++)
		if (list_member_oid(including[i], publication))
			appendStringInfo(&tables, "%skairoi.%s",
							 tables.len > 0 ? ", " : "", table_names[i]);
	ereport(WARNING,
			(errmsg("publication \"%s\" includes %s",
					get_publication_name(publication, false), tables.data),
			 errdetail("A subscriber with kairoi 1.2 or later skips the inserts, "
					   "updates and deletes replicated to these tables, but not a "
					   "TRUNCATE: each node delivers the jobs and rules scheduled on it."),
			 errhint("Publish the application's tables instead (FOR TABLE, FOR "
					 "TABLES IN SCHEMA), or leave TRUNCATE out with publish = "
					 "'insert, update, delete'.")));
	pfree(tables.data);
}

void
kairoi_warn_if_published(const char *publication)
{
	Oid			only = InvalidOid;
	List	   *including[MAX_TABLES];
	List	   *publications = NIL;
	ListCell   *cell;
	const char *const *table_names;
	int			ntables;

	/* see what the statement wrote to the catalogs */
	CommandCounterIncrement();
	if (!outbox_extension_exists())
		return;
	if (publication != NULL)
	{
		only = get_publication_oid(publication, true);
		if (!OidIsValid(only))
			return;
	}
	if (outbox_is_current())
	{
		table_names = tables_1_2;
		ntables = lengthof(tables_1_2);
	}
	else
	{
		table_names = tables_1_1;
		ntables = lengthof(tables_1_1);
	}
	for (int i = 0; i < ntables; i++)
	{
		including[i] = publications_including(outbox_relation_oid(table_names[i]));
		publications = list_concat_unique_oid(publications, including[i]);
	}
	/* in the order they were created */
	list_sort(publications, list_oid_cmp);
	foreach(cell, publications)
	{
		if (!OidIsValid(only) || lfirst_oid(cell) == only)
			warn_published(lfirst_oid(cell), table_names, ntables, including);
	}
}
