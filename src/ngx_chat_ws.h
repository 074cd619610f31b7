
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_WS_H_INCLUDED_
#define _NGX_CHAT_WS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_jwt.h"
#include "ngx_chat_deflate.h"
#include "ngx_chat_wire.h"


/*
 * The connection layer: handshake, reads, the bounded output queue and the
 * keepalive timer.  It knows nothing of rooms nor of the protocol above it:
 * the layer above accepts the upgrade (ngx_chat_ws_upgrade), opens its
 * session on the connection and sets ws->message, through which complete
 * text messages go up, and ws->closed, which tells it that the connection
 * is gone (called once); then ngx_chat_ws_start() hands the connection to
 * this layer's event handlers.
 */

typedef void (*ngx_chat_ws_message_pt)(ngx_chat_ws_t *ws, u_char *data,
    size_t len);
typedef void (*ngx_chat_ws_closed_pt)(ngx_chat_ws_t *ws);


#define NGX_CHAT_WS_INLINE_OUT  4


struct ngx_chat_ws_s {
    ngx_connection_t          *connection;
    ngx_http_request_t        *request;        /* while kept */
    ngx_chat_loc_conf_t       *conf;
    ngx_str_t                  user;
    ngx_chat_jwt_t            *jwt;            /* chat_jwt: its token */

    ngx_chat_ws_message_pt     message;
    ngx_chat_ws_closed_pt      closed;
    void                      *data;           /* the layer above */

    ngx_chat_frame_parser_t    parser;

    u_char                    *msg;            /* message being assembled */
    size_t                     msg_len;
    size_t                     msg_cap;

    ngx_chat_inflate_t        *inflate;        /* only while a compressed
                                                  message spans reads */

    /* output queue: a ring of frame references */
    ngx_chat_buf_t           **out;
    ngx_uint_t                 out_head;
    ngx_uint_t                 out_n;
    ngx_uint_t                 out_cap;
    size_t                     out_sent;       /* of out[out_head] */
    size_t                     out_bytes;      /* queued, not yet sent */
    ngx_chat_buf_t            *out_inline[NGX_CHAT_WS_INLINE_OUT];
    ngx_chat_buf_t            *pong;           /* queued, not started */

    ngx_queue_t                flush;          /* in the worker's list */
    ngx_msec_t                 last_seen;
    ngx_msec_t                 expires;        /* the token's, if expiring */

    unsigned                   started:1;
    unsigned                   flush_posted:1;
    unsigned                   ping_sent:1;
    unsigned                   closing:1;      /* close frame queued */
    unsigned                   close_received:1;
    unsigned                   lingering:1;
    unsigned                   destroyed:1;
    unsigned                   write_blocked:1; /* last write: EAGAIN */
    unsigned                   expiring:1;     /* a token's exp */
    unsigned                   ssl_pending:1;   /* out[out_head] is in
                                                   SSL_write() */
    unsigned                   deflate:1;       /* permessage-deflate */
    unsigned                   deflate_wbits:4; /* the client's window for
                                                   what we send */
    unsigned                   inflate_later:1; /* a compressed message
                                                   gathered in msg, inflated
                                                   when complete */
};


/*
 * Checks the handshake (SPEC §3) and queues the 101 response: the
 * connection, or NULL with *rc the content handler's answer (an HTTP
 * status, or what sending the 426 response returned).  ws->data points to
 * data_size zeroed bytes for the layer above, which live as long as the
 * connection (no allocation from the connection's pool: it is replaced).
 */
ngx_chat_ws_t *ngx_chat_ws_upgrade(ngx_http_request_t *r, size_t data_size,
    ngx_int_t *rc);

/* the layer above refused the upgrade: forget the 101 */
void ngx_chat_ws_abort(ngx_chat_ws_t *ws);

/* the connection is the layer's from here on: returns NGX_DONE */
ngx_int_t ngx_chat_ws_start(ngx_chat_ws_t *ws);

/* queue a shared frame; takes a reference */
ngx_int_t ngx_chat_ws_send_buf(ngx_chat_ws_t *ws, ngx_chat_buf_t *b);

/* the same for the reply to a request, which may exceed the send buffer */
ngx_int_t ngx_chat_ws_send_reply(ngx_chat_ws_t *ws, ngx_chat_buf_t *b);

/* queue a close frame with this code, then close the connection */
void ngx_chat_ws_close(ngx_chat_ws_t *ws, ngx_uint_t code, char *reason);

/*
 * The connection's token: it replaces the one before (freed with the
 * connection), and the connection is closed with 1008 "token expired"
 * when the token's exp passes, by the keepalive timer
 */
void ngx_chat_ws_set_jwt(ngx_chat_ws_t *ws, ngx_chat_jwt_t *jwt);

/*
 * Closes every connection of this user in this worker with this code
 * (chat_api disconnect); returns how many.  It looks at the worker's
 * connections, which a rare request of a backend may.
 */
ngx_uint_t ngx_chat_ws_close_user(ngx_str_t *user, ngx_uint_t code,
    char *reason);

/* the connection layer's own (ngx_chat_ws.c, ngx_chat_ws_handshake.c) */
size_t ngx_chat_ws_compact_size(ngx_connection_t *c);
void ngx_chat_ws_pool_cleanup(void *data);

/* sets up the worker's write coalescing (init_process) */
void ngx_chat_ws_init_worker(ngx_cycle_t *cycle);


#endif /* _NGX_CHAT_WS_H_INCLUDED_ */
