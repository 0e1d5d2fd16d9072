/*-------------------------------------------------------------------------
 *
 * logical_replication.h
 *	  kairoi's tables under logical replication (logical_replication.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_LOGICAL_REPLICATION_H
#define KAIROI_LOGICAL_REPLICATION_H

/*
 * After a statement that may have added kairoi's tables to a publication:
 * a WARNING for each publication that includes them, the one named or, if
 * publication is NULL, any.  Does nothing in a database without kairoi.
 */
extern void kairoi_warn_if_published(const char *publication);

#endif							/* KAIROI_LOGICAL_REPLICATION_H */
