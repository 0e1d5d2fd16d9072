/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher's entry points (launcher.c): its registration, done by
 *	  _PG_init when preloaded, and its main function, which the postmaster
 *	  calls by name.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_LAUNCHER_H
#define KAIROI_LAUNCHER_H

#include "postgres.h"

extern void kairoi_register_launcher(void);
PGDLLEXPORT void kairoi_launcher_main(Datum main_arg);

#endif							/* KAIROI_LAUNCHER_H */
