/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  The delivery worker's TCP connection to the Kairoi server.
 *
 *	  Everything here is non-blocking: the worker's main loop waits for
 *	  socket readiness together with its latch, so neither a slow server nor
 *	  a full socket buffer ever keeps it from reacting to signals.  Errors
 *	  are reported as text in conn->error for the worker to publish; this
 *	  file never raises them.
 *
 *	  A single write (connection_begin_single_write) is what the worker's
 *	  protection against the reference server's split reads rests on: its
 *	  bytes go to the kernel in one send() or not at all.  If the kernel
 *	  ever takes only part of them, the rest must not follow in a later
 *	  write, which the server could read separately, cutting a character
 *	  in two: the flush fails instead and the worker drops the connection.
 *	  The server never completes the cut request, so never executes it,
 *	  and everything unanswered is sent again on the next connection.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connection.h"

#define RECEIVE_CHUNK 8192

/*
 * The output buffer holds at most kairoi.window requests; once written, a
 * buffer grown past this is shrunk back to it.
 */
#define OUTBUF_RETAIN_BYTES (1024 * 1024)

bool
kairoi_parse_server(const char *server, char *host, size_t hostlen,
					char *port, size_t portlen)
{
	const char *host_start = server;
	const char *host_end;
	const char *colon;

	if (server[0] == '[')
	{
		host_start = server + 1;
		host_end = strchr(host_start, ']');
		if (host_end == NULL || host_end[1] != ':')
			return false;
		colon = host_end + 1;
	}
	else
	{
		colon = strrchr(server, ':');
		if (colon == NULL || memchr(server, ':', colon - server) != NULL)
			return false;
		host_end = colon;
	}

	if (host_end == host_start || (size_t) (host_end - host_start) >= hostlen)
		return false;
	if (colon[1] == '\0' || strlen(colon + 1) >= portlen ||
		strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
		return false;

	memcpy(host, host_start, host_end - host_start);
	host[host_end - host_start] = '\0';
	strcpy(port, colon + 1);
	return true;
}

static bool
fail(KairoiConnection *conn, const char *format,...) pg_attribute_printf(2, 3);

static bool
fail(KairoiConnection *conn, const char *format,...)
{
	va_list		args;

	va_start(args, format);
	vsnprintf(conn->error, sizeof(conn->error), format, args);
	va_end(args);
	return false;
}

void
connection_init(KairoiConnection *conn)
{
	conn->sock = PGINVALID_SOCKET;
	conn->connecting = false;
	initStringInfo(&conn->outbuf);
	conn->outpos = 0;
	conn->single_write = false;
	kcp_parser_reset(&conn->parser);
	conn->error[0] = '\0';
}

static void
set_socket_options(pgsocket sock)
{
	int			on = 1;

	(void) setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	(void) setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
}

bool
connection_open(KairoiConnection *conn, const char *server)
{
	char		host[256];
	char		port[16];
	struct addrinfo hints;
	struct addrinfo *addresses;
	int			rc;
	pgsocket	sock;

	Assert(conn->sock == PGINVALID_SOCKET);
	if (!kairoi_parse_server(server, host, sizeof(host), port, sizeof(port)))
		return fail(conn, "kairoi.server \"%s\" is not host:port", server);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &addresses);
	if (rc != 0)
		return fail(conn, "could not resolve \"%s\": %s", host,
					gai_strerror(rc));

	sock = socket(addresses->ai_family, SOCK_STREAM, 0);
	if (sock == PGINVALID_SOCKET)
	{
		freeaddrinfo(addresses);
		return fail(conn, "could not create socket: %m");
	}
	if (fcntl(sock, F_SETFL, O_NONBLOCK) < 0 ||
		fcntl(sock, F_SETFD, FD_CLOEXEC) < 0)
	{
		closesocket(sock);
		freeaddrinfo(addresses);
		return fail(conn, "could not make socket non-blocking: %m");
	}
	set_socket_options(sock);

	rc = connect(sock, addresses->ai_addr, addresses->ai_addrlen);
	freeaddrinfo(addresses);
	if (rc < 0 && errno != EINPROGRESS)
	{
		closesocket(sock);
		return fail(conn, "could not connect to %s: %m", server);
	}

	conn->sock = sock;
	conn->connecting = (rc < 0);
	return true;
}

bool
connection_finish_connect(KairoiConnection *conn)
{
	int			so_error = 0;
	socklen_t	len = sizeof(so_error);

	Assert(conn->connecting);
	if (getsockopt(conn->sock, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
		return fail(conn, "could not read connection status: %m");
	if (so_error != 0)
	{
		errno = so_error;
		return fail(conn, "could not connect: %m");
	}
	conn->connecting = false;
	return true;
}

void
connection_close(KairoiConnection *conn)
{
	if (conn->sock != PGINVALID_SOCKET)
		closesocket(conn->sock);
	conn->sock = PGINVALID_SOCKET;
	conn->connecting = false;
	resetStringInfo(&conn->outbuf);
	conn->outpos = 0;
	conn->single_write = false;
	kcp_parser_reset(&conn->parser);
}

bool
connection_is_open(const KairoiConnection *conn)
{
	return conn->sock != PGINVALID_SOCKET;
}

void
connection_queue_bytes(KairoiConnection *conn, const char *data, size_t len)
{
	/* Compact: drop what was written before growing the buffer */
	if (conn->outpos > 0 && conn->outpos == conn->outbuf.len)
	{
		resetStringInfo(&conn->outbuf);
		conn->outpos = 0;
	}
	appendBinaryStringInfo(&conn->outbuf, data, (int) len);
}

void
connection_begin_single_write(KairoiConnection *conn)
{
	Assert(connection_unsent(conn) == 0);
	conn->single_write = true;
}

int
connection_max_segment(const KairoiConnection *conn)
{
	int			mss = 0;
	socklen_t	len = sizeof(mss);

	if (getsockopt(conn->sock, IPPROTO_TCP, TCP_MAXSEG, &mss, &len) < 0)
		return 0;
	return mss;
}

int
connection_unsent(const KairoiConnection *conn)
{
	return conn->outbuf.len - conn->outpos;
}

/*
 * One send() of the unsent bytes: the number written, 0 if the socket
 * takes nothing now, -1 on failure.
 */
static ssize_t
send_unsent(KairoiConnection *conn)
{
	for (;;)
	{
		ssize_t		n = send(conn->sock, conn->outbuf.data + conn->outpos,
							 connection_unsent(conn), MSG_NOSIGNAL);

		if (n >= 0)
			return n;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
		{
			fail(conn, "could not send to the server: %m");
			return -1;
		}
	}
}

/* Forget what was written; a burst must not pin a large buffer for good */
static void
reset_output(KairoiConnection *conn)
{
	resetStringInfo(&conn->outbuf);
	conn->outpos = 0;
	conn->single_write = false;
	if (conn->outbuf.maxlen > OUTBUF_RETAIN_BYTES)
	{
		conn->outbuf.data = repalloc(conn->outbuf.data, OUTBUF_RETAIN_BYTES);
		conn->outbuf.maxlen = OUTBUF_RETAIN_BYTES;
	}
}

bool
connection_flush(KairoiConnection *conn)
{
	while (connection_unsent(conn) > 0)
	{
		int			unsent = connection_unsent(conn);
		ssize_t		n = send_unsent(conn);

		if (n < 0)
			return false;
		if (n == 0)
			return true;		/* the socket is full: wait for it */
		if (conn->single_write && n < unsent)
			return fail(conn, "the kernel took only %zd of the %d bytes that had to go out in one write",
						n, unsent);
		conn->outpos += (int) n;
	}
	reset_output(conn);
	return true;
}

/* Parse one chunk of input, handing each response to handler */
static bool
parse_chunk(KairoiConnection *conn, const char *data, size_t len,
			KairoiResponseHandler handler, void *arg)
{
	while (len > 0)
	{
		KcpResponse response;
		size_t		consumed;

		switch (kcp_parser_feed(&conn->parser, data, len, &consumed, &response))
		{
			case KCP_PARSE_RESPONSE:
				if (!handler(&response, arg))
					return fail(conn, "the server answered an unknown request identifier \"%s\"",
								response.request_id);
				break;
			case KCP_PARSE_NEED_MORE:
				break;
			case KCP_PARSE_PROTOCOL_ERROR:
				return fail(conn, "the server sent an invalid response: %s",
							conn->parser.error);
		}
		data += consumed;
		len -= consumed;
	}
	return true;
}

/*
 * Acknowledge the server's next segment at once instead of delaying the ACK.
 *
 * The reference server writes each reply with its own write() on a socket
 * with Nagle's algorithm on: of a burst of replies, the first goes out at
 * once and the others wait in its socket until that first one is ACKed.
 * Linux delays ACKs (up to 40 ms) once a connection looks interactive, as a
 * request-response connection does, so every burst of two or more requests
 * would take ~40 ms more to be answered: a commit of a few jobs, a
 * kairoi_flush(), packed non-ASCII writes.  TCP_QUICKACK turns delayed ACKs
 * off, but Linux clears it again by itself (when data is sent and received
 * soon after): re-arm it after every read.  Platforms without TCP_QUICKACK
 * keep their delayed ACKs.  Best effort: failing to set it only costs time.
 */
static void
rearm_quick_ack(KairoiConnection *conn)
{
#ifdef TCP_QUICKACK
	int			on = 1;

	(void) setsockopt(conn->sock, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on));
#endif
}

bool
connection_receive(KairoiConnection *conn, KairoiResponseHandler handler,
				   void *arg)
{
	char		buf[RECEIVE_CHUNK];

	for (;;)
	{
		ssize_t		n = recv(conn->sock, buf, sizeof(buf), 0);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			if (errno == EINTR)
				continue;
			return fail(conn, "could not receive from the server: %m");
		}
		if (n == 0)
			return fail(conn, "the server closed the connection");
		rearm_quick_ack(conn);
		if (!parse_chunk(conn, buf, (size_t) n, handler, arg))
			return false;
	}
}
