/*-------------------------------------------------------------------------
 *
 * init.c
 *	  The module's entry point: _PG_init wires the layers together and
 *	  does nothing else.
 *
 *	  Loaded through shared_preload_libraries, the module runs the launcher
 *	  and one delivery worker per database that has the extension.  Loaded
 *	  on demand by a backend (no preloading), the SQL functions still
 *	  enqueue; kairoi_status() then reports that no worker runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "at_commit.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"
#include "utility.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	kairoi_define_variables();
	kairoi_register_xact_callback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	kairoi_install_shmem_hooks();
	kairoi_install_utility_hook();
	kairoi_register_launcher();
}
