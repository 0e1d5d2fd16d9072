/*-------------------------------------------------------------------------
 *
 * kairoi.c
 *	  Module entry point: configuration variables, shared memory, and the
 *	  registration of the launcher, the commit callback and the utility
 *	  hook.
 *
 *	  Loaded through shared_preload_libraries, the module runs the launcher
 *	  and its delivery worker.  Loaded on demand by a backend (no
 *	  preloading), the SQL functions still enqueue; kairoi_status() then
 *	  reports that no worker runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "kairoi.h"

PG_MODULE_MAGIC;

char	   *kairoi_server = NULL;
char	   *kairoi_database = NULL;
int			kairoi_poll_interval_ms = 10000;
int			kairoi_batch_size = 500;
int			kairoi_window = 1000;
int			kairoi_connect_timeout_ms = 5000;
int			kairoi_request_timeout_ms = 30000;
int			kairoi_backoff_min_ms = 100;
int			kairoi_backoff_max_ms = 30000;
int			kairoi_max_attempts = 5;
int			kairoi_non_ascii_write_limit = KAIROI_NON_ASCII_WRITE_LIMIT;

KairoiShared *kairoi_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static bool
check_server(char **newval, void **extra, GucSource source)
{
	char		host[256];
	char		port[16];

	if (kairoi_parse_server(*newval, host, sizeof(host), port, sizeof(port)))
		return true;
	GUC_check_errdetail("kairoi.server must be host:port, for example 127.0.0.1:5678 or [::1]:5678.");
	return false;
}

/* The integer GUCs, all reloadable; flags is 0 or a unit */
typedef struct IntVariable
{
	const char *name;
	const char *description;
	int		   *variable;
	int			min_value;
	int			max_value;
	int			flags;
} IntVariable;

static const IntVariable int_variables[] = {
	{"kairoi.poll_interval",
		"Safety poll of the outbox when no commit woke the worker.",
	&kairoi_poll_interval_ms, 100, 3600000, GUC_UNIT_MS},
	{"kairoi.batch_size", "Outbox rows read per query.",
	&kairoi_batch_size, 1, 10000, 0},
	{"kairoi.window", "Requests in flight at most on the connection.",
	&kairoi_window, 1, 100000, 0},
	{"kairoi.connect_timeout", "Time allowed to establish a connection.",
	&kairoi_connect_timeout_ms, 100, 600000, GUC_UNIT_MS},
	{"kairoi.request_timeout",
		"Time without any response, while requests are in flight, before reconnecting.",
	&kairoi_request_timeout_ms, 100, 3600000, GUC_UNIT_MS},
	{"kairoi.backoff_min",
		"First delay before reconnecting or retrying a rejected entry; doubles each time.",
	&kairoi_backoff_min_ms, 1, 3600000, GUC_UNIT_MS},
	{"kairoi.backoff_max",
		"Largest delay before reconnecting or retrying a rejected entry.",
	&kairoi_backoff_max_ms, 1, 3600000, GUC_UNIT_MS},
	{"kairoi.max_attempts",
		"Answers of ERROR after which an entry moves to kairoi.failed.",
	&kairoi_max_attempts, 1, 1000, 0},
	{"kairoi.non_ascii_write_limit",
		"Largest write packing requests that hold non-ASCII text; 0 sends each alone.",
	&kairoi_non_ascii_write_limit, 0, 1024 * 1024, GUC_UNIT_BYTE},
};

static void
define_variables(void)
{
	DefineCustomStringVariable("kairoi.server",
							   "Address (host:port) of the Kairoi server.",
							   "Changing it makes the worker reconnect.",
							   &kairoi_server, "127.0.0.1:5678", PGC_SIGHUP,
							   0, check_server, NULL, NULL);
	DefineCustomStringVariable("kairoi.database",
							   "Database whose outbox the worker delivers.",
							   NULL, &kairoi_database, "postgres", PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	for (size_t i = 0; i < lengthof(int_variables); i++)
	{
		const IntVariable *v = &int_variables[i];

		DefineCustomIntVariable(v->name, v->description, NULL, v->variable,
								*v->variable, v->min_value, v->max_value,
								PGC_SIGHUP, v->flags, NULL, NULL, NULL);
	}
	MarkGUCPrefixReserved("kairoi");
}

static void
kairoi_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(KairoiShared)));
}

static void
kairoi_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kairoi_shared = ShmemInitStruct("kairoi", sizeof(KairoiShared), &found);
	if (!found)
	{
		memset(kairoi_shared, 0, sizeof(KairoiShared));
		SpinLockInit(&kairoi_shared->mutex);
		kairoi_shared->rescan_from_seq = PG_INT64_MAX;
		ConditionVariableInit(&kairoi_shared->progress_cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	define_variables();
	kairoi_register_xact_callback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kairoi_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kairoi_shmem_startup;
	kairoi_install_utility_hook();
	kairoi_register_launcher();
}

void
kairoi_wake_worker(void)
{
	Latch	   *latch;

	if (kairoi_shared == NULL)
		return;
	SpinLockAcquire(&kairoi_shared->mutex);
	latch = kairoi_shared->worker_latch;
	SpinLockRelease(&kairoi_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Tell the worker that rows from from_seq on became visible: its fetch
 * cursor may already be past them (a transaction that took its seq early
 * committed late, or replaced a row the worker had skipped).
 */
void
kairoi_request_rescan(int64 from_seq)
{
	if (kairoi_shared == NULL)
		return;
	SpinLockAcquire(&kairoi_shared->mutex);
	kairoi_shared->rescan_from_seq = Min(kairoi_shared->rescan_from_seq,
										 from_seq);
	SpinLockRelease(&kairoi_shared->mutex);
	kairoi_wake_worker();
}

/* The worker: lowest seq to read again (INT64_MAX if none), and reset it */
int64
kairoi_take_rescan_request(void)
{
	int64		from_seq;

	SpinLockAcquire(&kairoi_shared->mutex);
	from_seq = kairoi_shared->rescan_from_seq;
	kairoi_shared->rescan_from_seq = PG_INT64_MAX;
	SpinLockRelease(&kairoi_shared->mutex);
	return from_seq;
}

void
kairoi_set_last_error(const char *message)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&kairoi_shared->mutex);
	strlcpy(kairoi_shared->last_error, message, KAIROI_ERROR_MAXLEN);
	kairoi_shared->last_error_at = now;
	SpinLockRelease(&kairoi_shared->mutex);
}
