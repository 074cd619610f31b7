
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_DEFLATE_H_INCLUDED_
#define _NGX_CHAT_DEFLATE_H_INCLUDED_


/*
 * permessage-deflate (RFC 7692), the pure parts: the negotiation of
 * Sec-WebSocket-Extensions offers and the bounded inflater of one incoming
 * message.  No nginx headers and no nginx I/O, so that both can be fuzzed
 * and unit-tested alone; the inflater's memory comes from malloc(), as
 * zlib's own does.
 */

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>


/* what an accepted offer asks of us */
typedef struct {
    unsigned        accepted:1;
    unsigned        server_wbits:4;     /* the window we compress with,
                                           9-15 (15 when not offered) */
    unsigned        server_wbits_offered:1;
    unsigned        client_wbits:4;     /* 0: not offered; else 8-15, the
                                           value our response carries */
} ngx_chat_deflate_params_t;


/* longest response ngx_chat_deflate_response() writes */
#define NGX_CHAT_DEFLATE_RESPONSE_MAX  128


/*
 * Looks at one Sec-WebSocket-Extensions header value (a list of offers).
 * When p is not accepted yet and an offer of permessage-deflate in it is
 * one we can honour, p is set from the first such offer.  Offers of other
 * extensions, with unknown, duplicate or invalid parameters, or with
 * server_max_window_bits=8 (which zlib's raw deflate cannot produce), are
 * declined; a value that is not a valid header list declines only the
 * offers it spoils.  Call once per header, in order.
 */
void ngx_chat_deflate_negotiate(ngx_chat_deflate_params_t *p,
    const unsigned char *value, size_t len);

/*
 * The response's extension for an accepted p, at buf (at least
 * NGX_CHAT_DEFLATE_RESPONSE_MAX bytes); returns its length.  It always
 * carries server_no_context_takeover and client_no_context_takeover.
 */
size_t ngx_chat_deflate_response(ngx_chat_deflate_params_t *p,
    unsigned char *buf);


/* return codes of the inflater: 0 or an RFC 6455 close code */
#define NGX_CHAT_INFLATE_OK          0
#define NGX_CHAT_INFLATE_CORRUPT     1007     /* bad stream or UTF-8 */
#define NGX_CHAT_INFLATE_TOO_BIG     1009
#define NGX_CHAT_INFLATE_NOMEM       1011


/* one compressed text message being received */
typedef struct {
    z_stream        z;
    unsigned char  *buf;                /* the message inflated so far */
    size_t          len;
    size_t          cap;
    size_t          max;                /* chat_max_message_size */
    size_t          in_len;             /* compressed bytes taken */
    uint32_t        utf8;
    unsigned        ended:1;            /* the deflate stream ended */
} ngx_chat_inflate_t;


/* a new inflater (NULL: no memory); max may be changed per message */
ngx_chat_inflate_t *ngx_chat_inflate_create(size_t max);

/*
 * Inflates a chunk of the message's compressed payload; last: the chunk
 * ends the message (the 00 00 ff ff tail is added, the UTF-8 must be
 * complete).  The output never grows past max: beyond, TOO_BIG at once.
 * On OK with last, the message is buf[0..len).
 */
int ngx_chat_inflate_add(ngx_chat_inflate_t *inf, const unsigned char *in,
    size_t len, int last);

/* ready for the next message; buffers above keep bytes are freed */
void ngx_chat_inflate_reset(ngx_chat_inflate_t *inf, size_t keep);

void ngx_chat_inflate_destroy(ngx_chat_inflate_t *inf);


#endif /* _NGX_CHAT_DEFLATE_H_INCLUDED_ */
