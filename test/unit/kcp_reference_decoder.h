/*-------------------------------------------------------------------------
 *
 * kcp_reference_decoder.h
 *	  An independent KCP request tokenizer, used as the oracle for the
 *	  encoder in the unit tests and the round-trip fuzzer.
 *
 * It follows shared/kcp.md part 1 and deliberately shares no code with
 * src/kcp.c: arguments are separated by spaces (U+0020 only; a TAB is an
 * ordinary byte), a simple argument is a run of bytes other than space,
 * '"' and '\n', a universal argument is '"' ... '"' where only '\\' and
 * '\"' are escapes, and the line ends with an unquoted '\n'.
 *
 * In strict mode the decoder also insists on the canonical layout our
 * encoder promises: exactly one space between arguments and none at either
 * end, no control byte (< 0x20 or 0x7F) in a simple argument, and the
 * universal form only for an argument that needs it.
 *
 * Header-only (static functions) so each test program compiles it in.
 *
 * IDENTIFICATION
 *	  test/unit/kcp_reference_decoder.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef KCP_REFERENCE_DECODER_H
#define KCP_REFERENCE_DECODER_H

#include <stddef.h>

/* One decoded argument: its bytes are out[off .. off + len). */
typedef struct RefArg
{
	size_t		off;
	size_t		len;
} RefArg;

/* Decoder state while walking one line. */
typedef struct RefDecoder
{
	const char *in;
	size_t		len;
	size_t		pos;
	char	   *out;
	size_t		out_len;
	int			strict;
	const char *error;
} RefDecoder;

/*
 * The quoting policy, restated independently of kcp.c: the protocol forces
 * quotes for the empty string, space, '"' and '\n'; our policy adds every
 * other control byte (< 0x20, which includes '\n', and 0x7F).
 */
static int
ref_needs_quotes(const char *data, size_t len)
{
	size_t		i;

	if (len == 0)
		return 1;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) data[i];

		if (c == ' ' || c == '"' || c < 0x20 || c == 0x7F)
			return 1;
	}
	return 0;
}

/* Decode a universal argument; d->pos is just after the opening quote. */
static int
ref_decode_universal(RefDecoder *d)
{
	for (;;)
	{
		char		c;

		if (d->pos >= d->len)
		{
			d->error = "unterminated universal string";
			return 0;
		}
		c = d->in[d->pos++];
		if (c == '"')
			return 1;
		if (c == '\\')
		{
			if (d->pos >= d->len)
			{
				d->error = "unterminated universal string";
				return 0;
			}
			c = d->in[d->pos++];
			if (c != '\\' && c != '"')
			{
				d->error = "invalid escape in universal string";
				return 0;
			}
		}
		d->out[d->out_len++] = c;
	}
}

/* Decode a simple argument starting at d->pos. */
static int
ref_decode_simple(RefDecoder *d)
{
	while (d->pos < d->len && d->in[d->pos] != ' ' && d->in[d->pos] != '\n')
	{
		unsigned char c = (unsigned char) d->in[d->pos];

		if (c == '"')
		{
			d->error = "double quote inside simple argument";
			return 0;
		}
		if (d->strict && (c < 0x20 || c == 0x7F))
		{
			d->error = "control byte in simple argument (strict)";
			return 0;
		}
		d->out[d->out_len++] = (char) c;
		d->pos++;
	}
	return 1;
}

/* Decode one argument at d->pos (not a space, not '\n') into args[n]. */
static int
ref_decode_argument(RefDecoder *d, RefArg *arg)
{
	arg->off = d->out_len;
	if (d->in[d->pos] == '"')
	{
		d->pos++;
		if (!ref_decode_universal(d))
			return 0;
		arg->len = d->out_len - arg->off;
		if (d->strict && !ref_needs_quotes(d->out + arg->off, arg->len))
		{
			d->error = "unnecessary universal form (strict)";
			return 0;
		}
		return 1;
	}
	if (!ref_decode_simple(d))
		return 0;
	arg->len = d->out_len - arg->off;
	return 1;
}

/* Check the spaces before an argument or the end of line. */
static int
ref_check_spacing(RefDecoder *d, int nargs, size_t nspaces, int at_end)
{
	if (!at_end && nargs > 0 && nspaces == 0)
	{
		d->error = "arguments not separated by a space";
		return 0;
	}
	if (!d->strict)
		return 1;
	if (at_end ? nspaces != 0 : nspaces != (nargs == 0 ? 0u : 1u))
	{
		d->error = "non-canonical spacing (strict)";
		return 0;
	}
	return 1;
}

/*
 * ref_decode_request
 *		Decode the request line in[0..len), which must end with its only
 *		unquoted '\n' as the last byte.
 *
 * out needs room for len bytes; args for max_args entries.  Returns the
 * number of arguments (the request identifier included), or -1 with
 * *error set.
 */
static int
ref_decode_request(const char *in, size_t len, int strict,
				   char *out, RefArg *args, int max_args,
				   const char **error)
{
	RefDecoder	d;
	int			n = 0;

	d.in = in;
	d.len = len;
	d.pos = 0;
	d.out = out;
	d.out_len = 0;
	d.strict = strict;
	d.error = NULL;

	for (;;)
	{
		size_t		nspaces = 0;

		while (d.pos < d.len && d.in[d.pos] == ' ')
		{
			d.pos++;
			nspaces++;
		}
		if (d.pos >= d.len)
		{
			d.error = "missing final newline";
			break;
		}
		if (d.in[d.pos] == '\n')
		{
			if (!ref_check_spacing(&d, n, nspaces, 1))
				break;
			if (d.pos + 1 != d.len)
				d.error = "bytes after the end of the line";
			else if (n == 0)
				d.error = "empty line";
			else
			{
				*error = NULL;
				return n;
			}
			break;
		}
		if (!ref_check_spacing(&d, n, nspaces, 0))
			break;
		if (n == max_args)
		{
			d.error = "too many arguments";
			break;
		}
		if (!ref_decode_argument(&d, &args[n]))
			break;
		n++;
	}

	*error = d.error;
	return -1;
}

#endif							/* KCP_REFERENCE_DECODER_H */
