/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The delivery worker's entry point (worker.c), which the launcher
 *	  starts by name through the postmaster.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_WORKER_H
#define KAIROI_WORKER_H

#include "postgres.h"

PGDLLEXPORT void kairoi_worker_main(Datum main_arg);

#endif							/* KAIROI_WORKER_H */
