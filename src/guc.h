/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  The configuration variables (kairoi.* settings), defined in guc.c.
 *
 *	  Below every module that reads a setting; guc.c itself uses only the
 *	  address parser of connection.c, which reads no setting.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_GUC_H
#define KAIROI_GUC_H

/*
 * Default bound, in bytes, of one write of requests holding non-ASCII text
 * (kairoi.non_ascii_write_limit): what fits in one TCP segment on an
 * Ethernet path (MTU 1500: 1460 bytes of payload over IPv4, 1440 over
 * IPv6, less TCP options), with some room for tunnels.  A write that
 * arrives in one segment is read whole by the reference server, whose
 * reads (2048 bytes) then cannot end inside a character.
 */
#define KAIROI_NON_ASCII_WRITE_LIMIT 1400

extern char *kairoi_server;
extern int	kairoi_poll_interval_ms;
extern int	kairoi_batch_size;
extern int	kairoi_max_in_flight;
extern int	kairoi_connect_timeout_ms;
extern int	kairoi_request_timeout_ms;
extern int	kairoi_backoff_min_ms;
extern int	kairoi_backoff_max_ms;
extern int	kairoi_max_attempts;
extern int	kairoi_idle_timeout_ms;
extern int	kairoi_batch_delay_ms;
extern int	kairoi_max_databases;
extern int	kairoi_non_ascii_write_limit;

/*
 * The delay after the n-th failure in a row (n >= 1): kairoi.backoff_min,
 * doubled for each failure after the first, at most kairoi.backoff_max.
 * Used for reconnecting and for retrying an entry answered ERROR.
 */
extern long kairoi_backoff_delay_ms(int failures);

/* Settings of kairoi 1.0, still accepted and ignored */
extern char *kairoi_obsolete_database;
extern int	kairoi_obsolete_window;

/* Define every kairoi.* setting; kairoi.max_databases only when preloaded */
extern void kairoi_define_variables(void);

/*
 * The launcher and the workers, right after connecting: override the
 * settings a database or role could give them to plant names or break
 * their work (search_path = pg_catalog, pg_temp; no role; read-write READ
 * COMMITTED transactions; no timeouts; errors not fatal).
 */
extern void kairoi_pin_background_settings(void);

#endif							/* KAIROI_GUC_H */
