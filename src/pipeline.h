/*-------------------------------------------------------------------------
 *
 * pipeline.h
 *	  The delivery worker's requests on one connection (pipeline.c): what
 *	  is in flight, the answers waiting to be applied to the outbox, and
 *	  the cursor that reads the outbox in seq order.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAIROI_PIPELINE_H
#define KAIROI_PIPELINE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "storage/itemptr.h"
#include "utils/hsearch.h"

#include "connection.h"
#include "kcp.h"
#include "outbox.h"

/* An answer to apply to the queue: what it answers */
typedef OutboxSent Answer;

typedef struct AnswerList
{
	Answer	   *items;
	int			count;
	int			capacity;
} AnswerList;

typedef struct Pipeline
{
	HTAB	   *in_flight;		/* requests sent and not yet answered */
	dlist_head	in_flight_order;	/* the same, in send order */
	int			n_in_flight;
	uint64		next_request_number;	/* on this connection */
	uint64		unread_from;	/* the server has provably read every
								 * request numbered below this */
	uint64		single_write_start; /* request numbers of the last single */
	uint64		single_write_end;	/* write of non-ASCII text: [start, end) */
	bool		draining;		/* send nothing until the server has read
								 * everything sent */
	int			last_single_write;	/* requests in the last fetch's single
									 * write of non-ASCII text, or 0 */
	AnswerList	acknowledged;
	AnswerList	rejected;
	bool		maybe_pending;	/* the outbox may hold unsent due rows */
	int64		cursor;			/* rows up to this seq were read */
	TimestampTz last_progress;	/* connected, first request in flight sent,
								 * or last response read */
} Pipeline;

extern void pipeline_init(Pipeline *p);

/* A new connection: request numbers start again */
extern void pipeline_restart_numbering(Pipeline *p);

/* Read the outbox again from seq on (0: from the start) */
extern void pipeline_rewind(Pipeline *p, int64 seq);

/* The connection is gone: forget what is in flight, read everything again */
extern void pipeline_forget_in_flight(Pipeline *p);

/* Room in the window (kairoi.max_in_flight), and not draining */
extern bool pipeline_has_room(const Pipeline *p);

/* Answers applied to the outbox: forget them */
extern void pipeline_forget_answers(Pipeline *p);

/*
 * Match a response to its request and note the answer; false if it
 * answers no request in flight.
 */
extern bool pipeline_handle_response(Pipeline *p, const KcpResponse *response);

/*
 * Inside a transaction: read due entries after the cursor and queue their
 * requests on conn, as many as the window and the packing of non-ASCII
 * writes allow.
 */
extern void pipeline_fetch_and_send(Pipeline *p, KairoiConnection *conn);

#endif							/* KAIROI_PIPELINE_H */
