/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  What differs between the PostgreSQL major versions kairoi builds on,
 *	  15 to 18, in one place.
 *
 * Each guard names the major version whose server API changed and what
 * changed.  The rest of the source calls the kairoi_* names below and
 * never tests PG_VERSION_NUM itself; no function exists once per version.
 * None of these guards changes behaviour: each maps one call to its
 * spelling on the running version, with the arguments that keep 15's
 * behaviour.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_COMPAT_H
#define KAIROI_COMPAT_H

#include "access/genam.h"
#include "catalog/pg_database.h"
#include "catalog/pg_tablespace.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/memutils.h"
#include "utils/relcache.h"

#if PG_VERSION_NUM < 150000
#error "kairoi needs PostgreSQL 15 or later"
#endif

/*
 * A wait event set that lives until FreeWaitEventSet.
 *
 * PostgreSQL 17 (resource owner rework): CreateWaitEventSet takes the
 * ResourceOwner that releases the set instead of the MemoryContext that
 * holds it.  Without an owner (NULL), 17 allocates it in TopMemoryContext:
 * the same as passing TopMemoryContext to 15 and 16.
 */
#if PG_VERSION_NUM >= 170000
#define kairoi_create_wait_event_set(nevents) \
	CreateWaitEventSet(NULL, (nevents))
#else
#define kairoi_create_wait_event_set(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * The OID of a relation's primary key index, InvalidOid if it has none.
 *
 * PostgreSQL 18: RelationGetPrimaryKeyIndex(rel, deferrable_ok).  The
 * relation cache now also remembers a deferrable primary key, returned
 * only when deferrable_ok is true; false gives what 15 to 17 return
 * (a deferrable primary key is no primary key to them).
 */
#if PG_VERSION_NUM >= 180000
#define kairoi_primary_key_index(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define kairoi_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * index_beginscan(heap, index, snapshot, nkeys, norderbys).
 *
 * PostgreSQL 18: a fourth argument, IndexScanInstrumentation *instrument,
 * collects the number of index searches for EXPLAIN ANALYZE; NULL (no
 * instrumentation) is what every scan did before.
 */
#if PG_VERSION_NUM >= 180000
#define kairoi_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define kairoi_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * Is role the owner of database (or a superuser)?  May role create objects
 * in tablespace?
 *
 * PostgreSQL 16: object_ownercheck() and object_aclcheck(), given the
 * catalog, replace the functions of each kind of object
 * (pg_database_ownercheck(), pg_tablespace_aclcheck()); the checks are
 * the same.
 */
#if PG_VERSION_NUM >= 160000
#define kairoi_database_ownercheck(database, role) \
	object_ownercheck(DatabaseRelationId, (database), (role))
#define kairoi_tablespace_aclcheck(tablespace, role, mode) \
	object_aclcheck(TableSpaceRelationId, (tablespace), (role), (mode))
#else
#define kairoi_database_ownercheck(database, role) \
	pg_database_ownercheck((database), (role))
#define kairoi_tablespace_aclcheck(tablespace, role, mode) \
	pg_tablespace_aclcheck((tablespace), (role), (mode))
#endif

#endif							/* KAIROI_COMPAT_H */
