/*-------------------------------------------------------------------------
 *
 * connection.h
 *	  The delivery worker's one TCP connection to the Kairoi server:
 *	  non-blocking connect, buffered non-blocking writes and incremental
 *	  reads parsed into KCP responses.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_CONNECTION_H
#define KAIROI_CONNECTION_H

#include "postgres.h"

#include "lib/stringinfo.h"

#include "kcp.h"

typedef struct KairoiConnection
{
	pgsocket	sock;			/* PGINVALID_SOCKET when closed */
	bool		connecting;		/* non-blocking connect() in progress */
	StringInfoData outbuf;		/* encoded requests not yet written */
	int			outpos;			/* bytes of outbuf already written */
	bool		single_write;	/* outbuf must go out in one send() */
	KcpParser	parser;
	char		error[256];		/* why the last call failed */
} KairoiConnection;

/* Called for each response read; returns false if the id is unknown */
typedef bool (*KairoiResponseHandler) (const KcpResponse *response,
									   void *arg);

/*
 * Split "host:port" ("[v6addr]:port" for IPv6 literals).  Returns false if
 * the value is malformed.
 */
extern bool kairoi_parse_server(const char *server, char *host, size_t hostlen,
								char *port, size_t portlen);

extern void connection_init(KairoiConnection *conn);

/* Start connecting; false (and conn->error) if that failed at once */
extern bool connection_open(KairoiConnection *conn, const char *server);

/* After the socket became writable while connecting: did it succeed? */
extern bool connection_finish_connect(KairoiConnection *conn);

/* Close the socket and forget buffered input and output */
extern void connection_close(KairoiConnection *conn);

extern bool connection_is_open(const KairoiConnection *conn);

/* Append encoded requests to the output buffer */
extern void connection_queue_bytes(KairoiConnection *conn, const char *data,
								   size_t len);

/*
 * From now on, everything queued (the output buffer must be empty before
 * this call) goes out in ONE send() or not at all: connection_flush()
 * writes it whole, or nothing while the socket is full, and fails if the
 * kernel takes only part of it.  Ends once it is written.
 */
extern void connection_begin_single_write(KairoiConnection *conn);

/*
 * The largest TCP segment the connection sends (TCP_MAXSEG), or 0 if the
 * kernel does not say.
 */
extern int	connection_max_segment(const KairoiConnection *conn);

/* Bytes queued but not yet written */
extern int	connection_unsent(const KairoiConnection *conn);

/*
 * Write what the socket takes without blocking; false on failure, which
 * includes a single write (see above) that went out only in part.
 */
extern bool connection_flush(KairoiConnection *conn);

/*
 * Read what is available without blocking and hand each complete response
 * to handler.  False on EOF, socket error, unparsable data or a response
 * the handler does not know.
 */
extern bool connection_receive(KairoiConnection *conn,
							   KairoiResponseHandler handler, void *arg);

#endif							/* KAIROI_CONNECTION_H */
