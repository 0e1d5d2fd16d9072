/*-------------------------------------------------------------------------
 *
 * utility.h
 *	  The utility hook (utility.c), installed by _PG_init when preloaded.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_UTILITY_H
#define KAIROI_UTILITY_H

extern void kairoi_install_utility_hook(void);

#endif							/* KAIROI_UTILITY_H */
