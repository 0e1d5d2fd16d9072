/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The configuration variables: the kairoi.* settings, their defaults,
 *	  bounds and checks, and the settings of kairoi 1.0 that are still
 *	  accepted and ignored; and the PostgreSQL settings that kairoi's
 *	  background processes pin for themselves.
 *
 *	  Defined by _PG_init (init.c) in every process that loads the module;
 *	  kairoi.max_databases, which sizes shared memory, only when the module
 *	  is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "connection.h"
#include "guc.h"

char	   *kairoi_server = NULL;
int			kairoi_poll_interval_ms = 10000;
int			kairoi_batch_size = 500;
int			kairoi_max_in_flight = 1000;
int			kairoi_connect_timeout_ms = 5000;
int			kairoi_request_timeout_ms = 30000;
int			kairoi_backoff_min_ms = 100;
int			kairoi_backoff_max_ms = 30000;
int			kairoi_max_attempts = 10;
int			kairoi_idle_timeout_ms = 60000;
int			kairoi_batch_delay_ms = 1;
int			kairoi_max_databases = 64;
int			kairoi_non_ascii_write_limit = KAIROI_NON_ASCII_WRITE_LIMIT;

/*
 * Settings of kairoi 1.0 that 1.1 no longer uses.  They stay defined so that
 * a postgresql.conf written for 1.0 loads without complaint; the launcher
 * logs once that they are ignored.
 */
char	   *kairoi_obsolete_database = NULL;
int			kairoi_obsolete_window = 0;

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
	{"kairoi.max_in_flight", "Requests in flight at most on a connection.",
	&kairoi_max_in_flight, 1, 100000, 0},
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
	{"kairoi.idle_timeout",
		"Time with nothing to deliver after which a worker closes its connection (0: never).",
	&kairoi_idle_timeout_ms, 0, 86400000, GUC_UNIT_MS},
	{"kairoi.batch_delay",
		"Under a steady flow of commits, least time between two reads of newly committed entries (0: read at every commit).",
	&kairoi_batch_delay_ms, 0, 1000, GUC_UNIT_MS},
	{"kairoi.non_ascii_write_limit",
		"Largest write packing requests that hold non-ASCII text; 0 sends each alone.",
	&kairoi_non_ascii_write_limit, 0, 1024 * 1024, GUC_UNIT_BYTE},
};

static void
define_obsolete_variables(void)
{
	DefineCustomStringVariable("kairoi.database",
							   "Obsolete since kairoi 1.1 and ignored: every database with the extension is served.",
							   NULL, &kairoi_obsolete_database, "", PGC_SIGHUP,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("kairoi.window",
							"Obsolete since kairoi 1.1 and ignored: renamed kairoi.max_in_flight.",
							NULL, &kairoi_obsolete_window, 0, 0, 100000, PGC_SIGHUP,
							GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

void
kairoi_define_variables(void)
{
	/*
	 * PGC_SUSET, not PGC_SIGHUP, so that ALTER DATABASE ... SET can give a
	 * database its own server (a superuser-only change).  A session's own
	 * SET changes nothing but what that session's kairoi_status() shows.
	 */
	DefineCustomStringVariable("kairoi.server",
							   "Address (host:port) of the Kairoi server.",
							   "A database can override it with ALTER DATABASE ... SET; "
							   "a change makes the worker reconnect.",
							   &kairoi_server, "127.0.0.1:5678", PGC_SUSET,
							   0, check_server, NULL, NULL);
	/* A PGC_POSTMASTER variable can only be defined at postmaster start */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("kairoi.max_databases",
								"Databases with the extension that the launcher can serve.",
								"Sizes a shared-memory array; each served database also takes "
								"one of max_worker_processes.",
								&kairoi_max_databases, 64, 1, 10000, PGC_POSTMASTER,
								0, NULL, NULL, NULL);
	for (size_t i = 0; i < lengthof(int_variables); i++)
	{
		const IntVariable *v = &int_variables[i];

		DefineCustomIntVariable(v->name, v->description, NULL, v->variable,
								*v->variable, v->min_value, v->max_value,
								PGC_SIGHUP, v->flags, NULL, NULL, NULL);
	}
	define_obsolete_variables();
	MarkGUCPrefixReserved("kairoi");
}

/*
 * PostgreSQL settings that a database or role setting (ALTER DATABASE ...
 * SET, ALTER ROLE ... SET, which a database owner or any role may write
 * for itself) would give the launcher and the workers when they connect,
 * and that would make them resolve a name the database's owner planted
 * (search_path: pg_catalog comes first, and pg_temp, which holds no
 * function or operator, last) or fail their work (a role without rights
 * on kairoi's tables, read-only or serializable transactions, timeouts
 * meant for interactive sessions, errors made fatal).  A setting this
 * version of PostgreSQL lacks (transaction_timeout before 17) is skipped.
 */
static const struct
{
	const char *name;
	const char *value;
}			pinned_settings[] =
{
	{"search_path", "pg_catalog, pg_temp"},
	{"role", "none"},
	{"session_replication_role", "origin"},
	{"default_transaction_read_only", "off"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_deferrable", "off"},
	{"statement_timeout", "0"},
	{"transaction_timeout", "0"},
	{"idle_in_transaction_session_timeout", "0"},
	{"idle_session_timeout", "0"},
	{"exit_on_error", "off"},
};

void
kairoi_pin_background_settings(void)
{
	for (size_t i = 0; i < lengthof(pinned_settings); i++)
	{
		if (GetConfigOption(pinned_settings[i].name, true, false) != NULL)
			SetConfigOption(pinned_settings[i].name, pinned_settings[i].value,
							PGC_SUSET, PGC_S_OVERRIDE);
	}
}

long
kairoi_backoff_delay_ms(int failures)
{
	long		delay = kairoi_backoff_min_ms;

	for (int i = 1; i < failures && delay < kairoi_backoff_max_ms; i++)
		delay *= 2;
	return Min(delay, (long) kairoi_backoff_max_ms);
}
