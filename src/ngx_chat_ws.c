
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The WebSocket connection layer: the RFC 6455 handshake inside the worker,
 * reading and parsing frames, a bounded per-connection output queue of
 * shared frames written with one send() or writev() per connection per
 * event loop turn, keepalive pings and the close handshake.  It knows
 * nothing of rooms nor of the protocol: complete text messages go up
 * through ws->message (see ngx_chat_ws.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_deflate.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_ws.h"


#define NGX_CHAT_WS_READ_SIZE     16384
#define NGX_CHAT_WS_READ_LOOPS    8
#define NGX_CHAT_WS_IOV           64
#define NGX_CHAT_WS_LINGER        2000
#define NGX_CHAT_WS_MSG_KEEP      4096
#define NGX_CHAT_WS_INFLATERS     32

#define NGX_CHAT_WS_LIVE          0
#define NGX_CHAT_WS_CONTROL       1
#define NGX_CHAT_WS_REPLY         2


static void ngx_chat_ws_start_handler(ngx_event_t *wev);
static void ngx_chat_ws_compact(ngx_connection_t *c);
static ngx_uint_t ngx_chat_ws_in_pool(ngx_pool_t *pool, void *p);
static void ngx_chat_ws_read_handler(ngx_event_t *rev);
static void ngx_chat_ws_read(ngx_event_t *rev);
static void ngx_chat_ws_idle(ngx_chat_ws_t *ws);
static void ngx_chat_ws_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_chat_ws_process(ngx_chat_ws_t *ws, u_char *pos,
    u_char *last);
static ngx_int_t ngx_chat_ws_append(ngx_chat_ws_t *ws, u_char *data,
    size_t len);
static ngx_int_t ngx_chat_ws_inflate(ngx_chat_ws_t *ws, ngx_chat_frame_t *f);
static void ngx_chat_ws_inflate_done(ngx_chat_ws_t *ws,
    ngx_chat_inflate_t *inf);
static void ngx_chat_ws_count(ngx_chat_ws_t *ws, ngx_uint_t i, size_t n);
static void ngx_chat_ws_count_flush(void);
static ngx_int_t ngx_chat_ws_queue(ngx_chat_ws_t *ws, ngx_chat_buf_t *b,
    ngx_uint_t control);
static void ngx_chat_ws_send_control(ngx_chat_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len);
static ngx_uint_t ngx_chat_ws_pong_again(ngx_chat_ws_t *ws, u_char *data,
    size_t len);
static ngx_uint_t ngx_chat_ws_over(ngx_chat_ws_t *ws, ngx_chat_buf_t *b,
    ngx_uint_t kind);
static void ngx_chat_ws_offer(ngx_chat_ws_t *ws);
static void ngx_chat_ws_unqueued(ngx_chat_ws_t *ws, ngx_chat_buf_t *b);
static void ngx_chat_ws_timer(ngx_chat_ws_t *ws);
static void ngx_chat_ws_arm(ngx_chat_ws_t *ws, ngx_msec_t timer);
static ngx_uint_t ngx_chat_ws_jwt_later(ngx_chat_ws_t *ws);
static void ngx_chat_ws_schedule(ngx_chat_ws_t *ws);
static void ngx_chat_ws_flush_handler(ngx_event_t *ev);
static void ngx_chat_ws_flush(ngx_chat_ws_t *ws);
static ngx_int_t ngx_chat_ws_write(ngx_chat_ws_t *ws);
static void ngx_chat_ws_linger(ngx_chat_ws_t *ws);
static void ngx_chat_ws_drop_queue(ngx_chat_ws_t *ws, ngx_uint_t keep_head);
static void ngx_chat_ws_notify_closed(ngx_chat_ws_t *ws);
static void ngx_chat_ws_finalize(ngx_chat_ws_t *ws);


static ngx_queue_t   ngx_chat_ws_flush_queue;
static ngx_event_t   ngx_chat_ws_flush_event;
static u_char        ngx_chat_ws_rbuf[NGX_CHAT_WS_READ_SIZE];

/* an inflater kept for the next compressed message (reset), or NULL */
static ngx_chat_inflate_t  *ngx_chat_ws_inflater;

/* inflaters kept by connections in the middle of a compressed message */
static ngx_uint_t           ngx_chat_ws_inflaters_busy;

/*
 * byte counters (ngx_chat_shm_stats_t's order) gathered during a turn of
 * the event loop and added to the zone once, after reading or flushing
 */
static ngx_chat_shm_ctx_t  *ngx_chat_ws_count_ctx;
static uint64_t             ngx_chat_ws_counts[4];


void
ngx_chat_ws_init_worker(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_chat_ws_flush_queue);

    ngx_chat_ws_flush_event.handler = ngx_chat_ws_flush_handler;
    ngx_chat_ws_flush_event.log = cycle->log;
    ngx_chat_ws_flush_event.data = NULL;
}


void
ngx_chat_ws_abort(ngx_chat_ws_t *ws)
{
    if (ws->flush_posted) {
        ngx_queue_remove(&ws->flush);
        ws->flush_posted = 0;
    }

    ngx_chat_ws_drop_queue(ws, 0);

    ws->request = NULL;
    ws->destroyed = 1;
}


ngx_int_t
ngx_chat_ws_start(ngx_chat_ws_t *ws)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ws->request;
    c = ws->connection;

    /* from here on the connection is ours */

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->keepalive = 0;
    r->lingering_close = 0;
    r->main->count++;

    c->log->action = "serving chat WebSocket";
    c->idle = 0;
    c->read->handler = ngx_chat_ws_read_handler;
    c->write->handler = ngx_chat_ws_start_handler;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /*
     * frames go out as they are written: with Nagle's algorithm, a frame
     * written while the previous one is unacknowledged waits for the
     * client's delayed ACK, up to 40 ms (W1 and W2 p99, bench/compare);
     * "tcp_nodelay off;" keeps it, as for nginx's proxied WebSockets
     */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->tcp_nodelay) {
        /* a failure is logged; the connection works all the same */
        (void) ngx_tcp_nodelay(c);
    }

    /* the rest once nginx is done with the request: see the start handler */

    ngx_post_event(c->write, &ngx_posted_events);

    return NGX_DONE;
}


/*
 * Runs once the handler has returned NGX_DONE and nginx has finished with
 * the request.  Unless a module hooked a cleanup on the request (as
 * limit_conn does, to count the connection until it closes), the request
 * is freed here: it is logged with status 101, its pool and header buffers
 * go back, and the connection keeps only what the WebSocket needs.
 */

static void
ngx_chat_ws_start_handler(ngx_event_t *wev)
{
    u_char                  *pending;
    size_t                   len;
    ngx_chain_t             *cl;
    ngx_chat_ws_t           *ws;
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_connection_t   *hc;

    c = wev->data;
    r = c->data;
    ws = ngx_http_get_module_ctx(r, ngx_chat_module);

    pending = NULL;
    len = r->header_in->last - r->header_in->pos;

    if (len) {
        /* bytes the client sent right after its handshake */

        pending = ngx_alloc(len, c->log);
        if (pending == NULL) {
            ngx_chat_ws_finalize(ws);
            return;
        }

        ngx_memcpy(pending, r->header_in->pos, len);
        r->header_in->pos = r->header_in->last;
    }

    c->data = ws;

    if (r->pool->cleanup == NULL && r->cleanup == NULL) {
        hc = r->http_connection;

        ngx_http_free_request(r, 0);
        ws->request = NULL;
        c->destroyed = 0;

        if (c->buffer && c->buffer->start
            && ngx_pfree(c->pool, c->buffer->start) == NGX_OK)
        {
            c->buffer->start = NULL;
            c->buffer->pos = NULL;
            c->buffer->last = NULL;
            c->buffer->end = NULL;
        }

        for (cl = hc->busy; cl; cl = cl->next) {
            (void) ngx_pfree(c->pool, cl->buf->start);
        }

        for (cl = hc->free; cl; cl = cl->next) {
            (void) ngx_pfree(c->pool, cl->buf->start);
        }

        hc->busy = NULL;
        hc->free = NULL;
        hc->nbusy = 0;

        ngx_chat_ws_compact(c);
    }

#if (NGX_DEBUG)
    {
    size_t             size;
    ngx_uint_t         blocks, large;
    ngx_pool_t        *p;
    ngx_pool_large_t  *l;

    size = 0;
    blocks = 0;
    large = 0;

    for (p = c->pool; p; p = p->d.next) {
        size += p->d.end - (u_char *) p;
        blocks++;
    }

    for (l = c->pool->large; l; l = l->next) {
        large += (l->alloc != NULL);
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "chat ws: started, request %s, connection pool of %uz "
                   "bytes in %ui blocks, %ui large allocations",
                   ws->request ? "kept" : "freed", size, blocks, large);
    }
#endif

    c->write->handler = ngx_chat_ws_write_handler;
    ws->started = 1;

    ngx_chat_ws_arm(ws, ws->conf->ping_interval);

    ngx_chat_ws_schedule(ws);

    if (pending) {
        (void) ngx_chat_ws_process(ws, pending, pending + len);
        ngx_free(pending);
    }

    if (ws->closing) {
        return;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        c->error = 1;
        ngx_chat_ws_finalize(ws);
    }
}


/*
 * What ngx_chat_ws_compact() moves into the connection's new pool, each
 * allocation aligned as ngx_palloc() does
 */

size_t
ngx_chat_ws_compact_size(ngx_connection_t *c)
{
    size_t  local;

    /* a wildcard listen's local address: nginx looked it up into the pool */

    local = (c->local_sockaddr && ngx_chat_ws_in_pool(c->pool,
                                                      c->local_sockaddr))
            ? ngx_align(c->local_socklen, NGX_ALIGNMENT) : 0;

    return ngx_align(sizeof(ngx_pool_cleanup_t), NGX_ALIGNMENT) + local
           + ngx_align(c->socklen, NGX_ALIGNMENT)
           + ngx_align(sizeof(ngx_log_t), NGX_ALIGNMENT)
           + ngx_align(sizeof(ngx_http_log_ctx_t), NGX_ALIGNMENT)
           + ngx_align(c->addr_text.len, NGX_ALIGNMENT);
}


/*
 * The request is freed: the connection's pool (512 bytes by default, its
 * first block mostly nginx's parsing state now unused: the connection's
 * ngx_http_connection_t, the header buffer's descriptor) is replaced by
 * the right-sized one that holds the WebSocket's state, into which what
 * nginx still uses of the old one is copied: the client's address, its
 * text, the local address, the log and its context.  Only for a plain
 * HTTP/1.1 connection whose pool holds nothing else (one block, no large
 * allocation, no cleanup but ours): TLS and PROXY protocol connections,
 * or a pool another module used, keep theirs.
 */

static void
ngx_chat_ws_compact(ngx_connection_t *c)
{
    u_char              *text;
    ngx_log_t           *log;
    ngx_pool_t          *old, *np;
    ngx_sockaddr_t      *sa, *local;
    ngx_pool_large_t    *l;
    ngx_pool_cleanup_t  *cln, *ours;
    ngx_http_log_ctx_t  *ctx;

    old = c->pool;

#if (NGX_SSL || NGX_COMPAT)
    if (c->ssl) {
        return;
    }
#endif

    if (c->proxy_protocol || old->d.next) {
        return;
    }

    for (l = old->large; l; l = l->next) {
        if (l->alloc) {
            return;
        }
    }

    ours = NULL;

    for (cln = old->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_chat_ws_pool_cleanup || ours) {
            return;
        }

        ours = cln;
    }

    if (ours == NULL || !ngx_chat_ws_in_pool(old, c->log)
        || !ngx_chat_ws_in_pool(old, c->log->data))
    {
        return;
    }

    np = ours->data;

    sa = ngx_palloc(np, c->socklen);
    log = ngx_palloc(np, sizeof(ngx_log_t));
    ctx = ngx_palloc(np, sizeof(ngx_http_log_ctx_t));
    text = ngx_pnalloc(np, c->addr_text.len);

    if (sa == NULL || log == NULL || ctx == NULL || text == NULL) {
        return;
    }

    local = NULL;

    if (c->local_sockaddr && ngx_chat_ws_in_pool(old, c->local_sockaddr)) {
        local = ngx_palloc(np, c->local_socklen);
        if (local == NULL) {
            return;
        }

        ngx_memcpy(local, c->local_sockaddr, c->local_socklen);
        c->local_sockaddr = &local->sockaddr;
    }

    ngx_memcpy(sa, c->sockaddr, c->socklen);
    ngx_memcpy(text, c->addr_text.data, c->addr_text.len);
    ngx_memcpy(ctx, c->log->data, sizeof(ngx_http_log_ctx_t));
    ngx_memcpy(log, c->log, sizeof(ngx_log_t));

    ctx->request = NULL;
    ctx->current_request = NULL;
    log->data = ctx;

    c->sockaddr = &sa->sockaddr;
    c->addr_text.data = text;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->buffer = NULL;
    c->pool = np;
    np->log = log;

    ours->handler = NULL;
    ngx_destroy_pool(old);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "chat ws: connection pool replaced, %uz bytes",
                   (size_t) (np->d.end - (u_char *) np));
}


static ngx_uint_t
ngx_chat_ws_in_pool(ngx_pool_t *pool, void *p)
{
    return (u_char *) p >= (u_char *) pool && (u_char *) p < pool->d.end;
}


ngx_int_t
ngx_chat_ws_send_buf(ngx_chat_ws_t *ws, ngx_chat_buf_t *b)
{
    return ngx_chat_ws_queue(ws, b, NGX_CHAT_WS_LIVE);
}


ngx_int_t
ngx_chat_ws_send_reply(ngx_chat_ws_t *ws, ngx_chat_buf_t *b)
{
    return ngx_chat_ws_queue(ws, b, NGX_CHAT_WS_REPLY);
}


static ngx_int_t
ngx_chat_ws_queue(ngx_chat_ws_t *ws, ngx_chat_buf_t *b, ngx_uint_t control)
{
    ngx_uint_t        i, n;
    ngx_chat_buf_t  **out;

    if (ws->closing || ws->destroyed) {
        return NGX_DECLINED;
    }

    if (ws->deflate && control != NGX_CHAT_WS_CONTROL) {
        /* made once per message and worker, shared by every member */
        b = ngx_chat_buf_deflated(b, ws->deflate_wbits,
                                  ws->conf->deflate_level,
                                  ws->conf->deflate_min_size,
                                  ws->connection->log);
    }

    if (ngx_chat_ws_over(ws, b, control)) {

        /*
         * what was queued during this turn of the event loop has not been
         * offered to the kernel yet: a client that reads is judged by what
         * the kernel would not take
         */

        ngx_chat_ws_offer(ws);

        if (ngx_chat_ws_over(ws, b, control)) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "chat: client reads too slowly, %uz bytes queued, "
                          "closing", ws->out_bytes);
            ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_POLICY, "send buffer full");
            return NGX_DECLINED;
        }
    }

    if (ws->out_n == ws->out_cap) {
        n = ws->out_cap * 2;

        out = ngx_alloc(n * sizeof(ngx_chat_buf_t *), ws->connection->log);
        if (out == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < ws->out_n; i++) {
            out[i] = ws->out[(ws->out_head + i) % ws->out_cap];
        }

        if (ws->out != ws->out_inline) {
            ngx_free(ws->out);
        }

        ws->out = out;
        ws->out_cap = n;
        ws->out_head = 0;
    }

    ws->out[(ws->out_head + ws->out_n) % ws->out_cap] = b;
    ws->out_n++;
    ws->out_bytes += b->len;
    b->refs++;

    ngx_chat_ws_schedule(ws);

    return NGX_OK;
}


/*
 * chat_send_buffer bounds what is queued beyond what the kernel accepted
 * (control frames count): live traffic must fit it; the reply to the
 * client's own request (a history reply may be large) only needs the
 * client to be within it; control frames always go
 */

static ngx_uint_t
ngx_chat_ws_over(ngx_chat_ws_t *ws, ngx_chat_buf_t *b, ngx_uint_t kind)
{
    switch (kind) {

    case NGX_CHAT_WS_LIVE:
        return ws->out_n && ws->out_bytes + b->len > ws->conf->send_buffer;

    case NGX_CHAT_WS_REPLY:
        return ws->out_bytes > ws->conf->send_buffer;

    default:
        return 0;
    }
}


/*
 * Writes what the kernel takes now, before the queue is judged; a write
 * error is left to the flush that is scheduled anyway (the caller may be
 * walking a room's members: the connection must not go away under it)
 */

static void
ngx_chat_ws_offer(ngx_chat_ws_t *ws)
{
    if (!ws->started || ws->lingering || ws->write_blocked
        || ws->connection->error)
    {
        return;
    }

    if (ngx_chat_ws_write(ws) == NGX_ERROR) {
        ws->connection->error = 1;
        ngx_chat_ws_schedule(ws);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat ws: offered the queue to the kernel, %uz bytes left",
                   ws->out_bytes);
}


/* a frame left the queue: written, or dropped */

static void
ngx_chat_ws_unqueued(ngx_chat_ws_t *ws, ngx_chat_buf_t *b)
{
    if (b == ws->pong) {
        ws->pong = NULL;
    }

    ngx_chat_buf_release(b);
}


void
ngx_chat_ws_close(ngx_chat_ws_t *ws, ngx_uint_t code, char *reason)
{
    u_char             buf[125];
    size_t             len;
    ngx_connection_t  *c;

    if (ws->closing) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat ws: closing with %ui \"%s\"", code,
                   reason ? reason : "");

    ngx_chat_shm_count_close(ws->conf->zone->data, code);

    if (code == NGX_CHAT_CLOSE_POLICY) {
        /* a slow reader: what it has not started to read is dropped */
        ngx_chat_ws_drop_queue(ws, 1);
    }

    buf[0] = (u_char) (code >> 8);
    buf[1] = (u_char) (code & 0xff);
    len = 2;

    if (reason) {
        len += ngx_min(ngx_strlen(reason), sizeof(buf) - 2);
        ngx_memcpy(buf + 2, reason, len - 2);
    }

    ngx_chat_ws_send_control(ws, NGX_CHAT_FRAME_CLOSE, buf, len);

    ws->closing = 1;

    /* a client that does not read its close frame in time is dropped */

    if (ws->started) {
        c = ws->connection;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        ngx_add_timer(c->read, NGX_CHAT_WS_LINGER);
    }

    ngx_chat_ws_schedule(ws);
}


static void
ngx_chat_ws_send_control(ngx_chat_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    size_t           hlen;
    ngx_chat_buf_t  *b;

    if (opcode == NGX_CHAT_FRAME_PONG && ngx_chat_ws_pong_again(ws, data, len))
    {
        return;
    }

    hlen = ngx_chat_frame_header_size(len);

    /* a pong gets room for the longest one, so that a later one fits */

    b = ngx_chat_buf_alloc(opcode == NGX_CHAT_FRAME_PONG ? 2 + 125 : hlen + len,
                           ws->connection->log);
    if (b == NULL) {
        return;
    }

    (void) ngx_chat_frame_header(b->data, opcode, len);

    if (len) {
        ngx_memcpy(b->data + hlen, data, len);
    }

    b->len = hlen + len;

    /* control frames are small: never refused for the send buffer */

    if (ngx_chat_ws_queue(ws, b, NGX_CHAT_WS_CONTROL) == NGX_OK
        && opcode == NGX_CHAT_FRAME_PONG)
    {
        ws->pong = b;
    }

    ngx_chat_buf_release(b);
}


/*
 * A ping while a pong still waits in the queue, not started: that pong
 * answers this ping instead (RFC 6455 5.5.3 allows answering only the
 * latest), so a client that pings faster than it reads has at most one
 * pong queued
 */

static ngx_uint_t
ngx_chat_ws_pong_again(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    size_t           hlen;
    ngx_chat_buf_t  *b;

    b = ws->pong;

    if (b == NULL
        || (ws->out[ws->out_head] == b && (ws->out_sent || ws->ssl_pending)))
    {
        return 0;
    }

    hlen = ngx_chat_frame_header_size(len);

    ws->out_bytes -= b->len;

    (void) ngx_chat_frame_header(b->data, NGX_CHAT_FRAME_PONG, len);

    if (len) {
        ngx_memcpy(b->data + hlen, data, len);
    }

    b->len = hlen + len;
    ws->out_bytes += b->len;

    return 1;
}


static void
ngx_chat_ws_read_handler(ngx_event_t *rev)
{
    ngx_chat_ws_read(rev);
    ngx_chat_ws_count_flush();
}


static void
ngx_chat_ws_read(ngx_event_t *rev)
{
    ssize_t              n;
    ngx_uint_t           i;
    ngx_chat_ws_t       *ws;
    ngx_connection_t    *c;

    c = rev->data;

    if (c->write->handler == ngx_chat_ws_start_handler) {
        /* the start handler will look */
        return;
    }

    ws = c->data;

    if (c->close) {
        /* worker shutdown (worker_shutdown_timeout) */
        ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_GOING_AWAY, "server shutdown");
        ngx_chat_ws_notify_closed(ws);
        (void) ngx_chat_ws_write(ws);
        ngx_chat_ws_finalize(ws);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        ngx_chat_ws_timer(ws);
        return;
    }

    for (i = 0; i < NGX_CHAT_WS_READ_LOOPS; i++) {

        if (!rev->ready) {
            break;
        }

        n = c->recv(c, ngx_chat_ws_rbuf, NGX_CHAT_WS_READ_SIZE);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "chat: client closed connection");

            if (ws->lingering || ws->closing) {
                ngx_chat_ws_finalize(ws);
                return;
            }

            c->error = 1;
            ngx_chat_ws_finalize(ws);
            return;
        }

        if (ws->lingering) {
            continue;
        }

        ws->last_seen = ngx_current_msec;

        ngx_chat_ws_count(ws, 0, n);
        ngx_chat_ws_count(ws, 1, n);

        if (ngx_chat_ws_process(ws, ngx_chat_ws_rbuf, ngx_chat_ws_rbuf + n)
            != NGX_OK)
        {
            if (!ws->lingering) {
                return;
            }
        }
    }

    if (rev->ready) {
        /* let other connections have their turn */
        ngx_post_event(rev, &ngx_posted_events);
        return;
    }

    ngx_chat_ws_idle(ws);

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        c->error = 1;
        ngx_chat_ws_finalize(ws);
    }
}


/*
 * The client has nothing more to say for now: what was kept for a message
 * spanning reads goes, as nginx frees an idle keepalive connection's
 * buffer.  A message that ends in a later read takes a buffer again (one
 * malloc() per such message at most, not per frame read in one piece).
 */

static void
ngx_chat_ws_idle(ngx_chat_ws_t *ws)
{
    if (ws->msg == NULL || ws->parser.in_message) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat ws: idle, message buffer of %uz bytes freed",
                   ws->msg_cap);

    ngx_free(ws->msg);
    ws->msg = NULL;
    ws->msg_cap = 0;
}


/*
 * Returns NGX_OK to go on reading, NGX_DONE when the connection is closing
 * and reading should stop.
 */

static ngx_int_t
ngx_chat_ws_process(ngx_chat_ws_t *ws, u_char *pos, u_char *last)
{
    int                rc;
    ngx_uint_t         code;
    ngx_chat_frame_t   f;
    ngx_connection_t  *c;

    c = ws->connection;

    for ( ;; ) {

        if (ws->closing) {
            /* after our close frame, the client's data is discarded */
            return NGX_DONE;
        }

        rc = ngx_chat_frame_parse(&ws->parser, &pos, last, &f);

        if (rc == NGX_CHAT_FRAME_AGAIN) {
            return NGX_OK;
        }

        if (rc == NGX_CHAT_FRAME_ERROR) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "chat: client sent invalid frame: %s, closing "
                          "with %ui", ws->parser.error,
                          (ngx_uint_t) ws->parser.close_code);

            ngx_chat_ws_close(ws, ws->parser.close_code, NULL);
            return NGX_DONE;
        }

        switch (f.opcode) {

        case NGX_CHAT_FRAME_TEXT:

            if (f.compressed) {
                if (ngx_chat_ws_inflate(ws, &f) != NGX_OK) {
                    return NGX_DONE;
                }

                break;
            }

            if (f.first && f.last) {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                               "chat ws: text message of %uz bytes", f.len);
                ws->message(ws, f.data, f.len);
                break;
            }

            if (f.first) {
                ws->msg_len = 0;
            }

            if (ngx_chat_ws_append(ws, f.data, f.len) != NGX_OK) {
                ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_INTERNAL, NULL);
                return NGX_DONE;
            }

            if (f.last) {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                               "chat ws: text message of %uz bytes, "
                               "fragmented", ws->msg_len);
                ws->message(ws, ws->msg, ws->msg_len);
                ws->msg_len = 0;

                if (ws->msg_cap > NGX_CHAT_WS_MSG_KEEP) {
                    ngx_free(ws->msg);
                    ws->msg = NULL;
                    ws->msg_cap = 0;
                }
            }

            break;

        case NGX_CHAT_FRAME_PING:
            ngx_chat_ws_send_control(ws, NGX_CHAT_FRAME_PONG, f.data, f.len);
            break;

        case NGX_CHAT_FRAME_PONG:
            ws->ping_sent = 0;
            break;

        default: /* NGX_CHAT_FRAME_CLOSE */

            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "chat ws: close frame %ui",
                           (ngx_uint_t) f.close_code);

            ws->close_received = 1;

            code = f.close_code;

            if (code == NGX_CHAT_CLOSE_NO_STATUS) {
                code = NGX_CHAT_CLOSE_NORMAL;
            }

            ngx_chat_ws_close(ws, code, NULL);
            return NGX_DONE;
        }
    }
}


static ngx_int_t
ngx_chat_ws_append(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    u_char  *p;
    size_t   cap;

    if (ws->msg_len + len > ws->msg_cap) {
        cap = ngx_max(ws->msg_cap * 2, 256);

        while (cap < ws->msg_len + len) {
            cap *= 2;
        }

        p = ngx_alloc(cap, ws->connection->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ws->msg) {
            ngx_memcpy(p, ws->msg, ws->msg_len);
            ngx_free(ws->msg);
        }

        ws->msg = p;
        ws->msg_cap = cap;
    }

    if (len) {
        ngx_memcpy(ws->msg + ws->msg_len, data, len);
        ws->msg_len += len;
    }

    return NGX_OK;
}


/*
 * A compressed message (RFC 7692): inflated as its chunks come, the output
 * bounded by chat_max_message_size (1009 as soon as it would pass) and
 * checked as UTF-8 across fragments.  An inflater exists only while a
 * message is read: a message in one read takes the worker's spare one and
 * gives it back; one that spans reads keeps one (the spare, or a new one)
 * until it ends.  Those are at most NGX_CHAT_WS_INFLATERS per worker:
 * beyond, a message's compressed bytes are gathered like a plain
 * message's (its wire size is bounded by the parser) and inflated when it
 * is complete, so that clients stalling in the middle of compressed
 * messages cannot make the worker hold an inflater (some 40 KB) each.
 * An idle connection holds no compression state.
 */

static ngx_int_t
ngx_chat_ws_inflate(ngx_chat_ws_t *ws, ngx_chat_frame_t *f)
{
    int                  rc;
    u_char              *data;
    size_t               len;
    ngx_chat_inflate_t  *inf;

    inf = ws->inflate;

    if (f->first) {
        ws->inflate_later = 0;

        if (!f->last && ngx_chat_ws_inflaters_busy >= NGX_CHAT_WS_INFLATERS) {
            ws->inflate_later = 1;
            ws->msg_len = 0;
        }
    }

    if (ws->inflate_later) {

        if (ngx_chat_ws_append(ws, f->data, f->len) != NGX_OK) {
            ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_INTERNAL, NULL);
            return NGX_ERROR;
        }

        if (!f->last) {
            return NGX_OK;
        }

        data = ws->msg;
        len = ws->msg_len;

    } else {
        data = f->data;
        len = f->len;
    }

    if (inf == NULL) {
        inf = ngx_chat_ws_inflater;
        ngx_chat_ws_inflater = NULL;

        if (inf == NULL) {
            inf = ngx_chat_inflate_create(ws->conf->max_message_size);

            if (inf == NULL) {
                ngx_log_error(NGX_LOG_ALERT, ws->connection->log, 0,
                              "chat: inflateInit2() failed");
                ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_INTERNAL, NULL);
                return NGX_ERROR;
            }
        }

        inf->max = ws->conf->max_message_size;
    }

    rc = ngx_chat_inflate_add(inf, data, len, f->last || ws->inflate_later);

    if (ws->inflate_later) {
        ws->msg_len = 0;
        ws->inflate_later = 0;

        if (ws->msg_cap > NGX_CHAT_WS_MSG_KEEP) {
            ngx_free(ws->msg);
            ws->msg = NULL;
            ws->msg_cap = 0;
        }
    }

    if (rc != NGX_CHAT_INFLATE_OK) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "chat: client sent %s, closing with %d",
                      rc == NGX_CHAT_INFLATE_TOO_BIG
                      ? "a compressed message too big"
                      : rc == NGX_CHAT_INFLATE_CORRUPT
                        ? "a corrupt compressed message or invalid UTF-8"
                        : "a compressed message, no memory", rc);

        ngx_chat_ws_inflate_done(ws, inf);
        ngx_chat_ws_close(ws, rc, NULL);
        return NGX_ERROR;
    }

    if (!f->last) {
        /* the message goes on in a later read: the inflater stays */

        if (ws->inflate == NULL) {
            ws->inflate = inf;
            ngx_chat_ws_inflaters_busy++;
        }

        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat ws: text message of %uz bytes, inflated from %uz",
                   inf->len, inf->in_len);

    /* what it would have cost uncompressed */
    ngx_chat_ws_count(ws, 1, inf->len - ngx_min(inf->len, inf->in_len));

    if (ws->inflate) {
        ws->inflate = NULL;
        ngx_chat_ws_inflaters_busy--;
    }

    ws->message(ws, inf->buf, inf->len);
    ngx_chat_ws_inflate_done(NULL, inf);

    return NGX_OK;
}


/* ws: the connection that kept inf across reads, or NULL */

static void
ngx_chat_ws_inflate_done(ngx_chat_ws_t *ws, ngx_chat_inflate_t *inf)
{
    if (ws && ws->inflate == inf) {
        ws->inflate = NULL;
        ngx_chat_ws_inflaters_busy--;
    }

    if (ngx_chat_ws_inflater == NULL) {
        ngx_chat_inflate_reset(inf, NGX_CHAT_WS_MSG_KEEP);
        ngx_chat_ws_inflater = inf;
        return;
    }

    ngx_chat_inflate_destroy(inf);
}


static void
ngx_chat_ws_count(ngx_chat_ws_t *ws, ngx_uint_t i, size_t n)
{
    ngx_chat_shm_ctx_t  *ctx;

    ctx = ws->conf->zone->data;

    if (ctx != ngx_chat_ws_count_ctx) {
        ngx_chat_ws_count_flush();
        ngx_chat_ws_count_ctx = ctx;
    }

    ngx_chat_ws_counts[i] += n;
}


static void
ngx_chat_ws_count_flush(void)
{
    if (ngx_chat_ws_count_ctx == NULL) {
        return;
    }

    if (ngx_chat_ws_counts[0] | ngx_chat_ws_counts[1]
        | ngx_chat_ws_counts[2] | ngx_chat_ws_counts[3])
    {
        ngx_chat_shm_count_bytes(ngx_chat_ws_count_ctx, ngx_chat_ws_counts);
        ngx_memzero(ngx_chat_ws_counts, sizeof(ngx_chat_ws_counts));
    }
}


/*
 * One timer per connection (its read event's): it pings an idle client and
 * closes it when the ping stays unanswered.  Data received does not touch
 * the timer: the handler looks at ws->last_seen when it fires, so the hot
 * path has no timer operations.
 */

static void
ngx_chat_ws_timer(ngx_chat_ws_t *ws)
{
    ngx_msec_t         idle;
    ngx_connection_t  *c;

    c = ws->connection;

    if (ws->lingering || ws->closing) {
        ngx_chat_ws_finalize(ws);
        return;
    }

    if (ws->expiring && (ngx_msec_int_t) (ws->expires - ngx_current_msec) <= 0
        && !ngx_chat_ws_jwt_later(ws))
    {
        /* SPEC 10: the token's exp passed, no refresh came */
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "chat: token expired");
        ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_POLICY, "token expired");
        ngx_chat_ws_notify_closed(ws);
        return;
    }

    idle = ngx_current_msec - ws->last_seen;

    if (ws->ping_sent) {

        if (idle < ws->conf->ping_timeout) {
            /* the client said something: alive */
            ws->ping_sent = 0;

        } else if (idle < 2 * ws->conf->ping_timeout) {
            /* early, for a token's exp that a refresh moved since */
            ngx_chat_ws_arm(ws, 2 * ws->conf->ping_timeout - idle);
            return;

        } else {
            ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                          "chat: client timed out");
            c->timedout = 1;
            ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_GOING_AWAY, "ping timeout");
            ngx_chat_ws_notify_closed(ws);
            (void) ngx_chat_ws_write(ws);
            ngx_chat_ws_finalize(ws);
            return;
        }
    }

    if (idle < ws->conf->ping_interval) {
        ngx_chat_ws_arm(ws, ws->conf->ping_interval - idle);
        return;
    }

    ngx_chat_ws_send_control(ws, NGX_CHAT_FRAME_PING, NULL, 0);
    ws->ping_sent = 1;
    ws->last_seen = ngx_current_msec - ws->conf->ping_timeout;

    ngx_chat_ws_arm(ws, ws->conf->ping_timeout);
}


/* the keepalive timer, or the token's exp when that comes first */

static void
ngx_chat_ws_arm(ngx_chat_ws_t *ws, ngx_msec_t timer)
{
    ngx_msec_int_t  left;

    if (ws->expiring) {
        left = ws->expires - ngx_current_msec;
        timer = ngx_min(timer, (ngx_msec_t) ngx_max(left, 1));
    }

    ngx_add_timer(ws->connection->read, timer);
}


/*
 * The timer's deadline came, but by the wall clock the token's exp has
 * not (an exp further than the timer reaches, or the clock was set back):
 * the deadline moves on
 */

static ngx_uint_t
ngx_chat_ws_jwt_later(ngx_chat_ws_t *ws)
{
    int64_t          left;
    struct timeval   tv;

    if (ws->jwt == NULL) {
        return 0;
    }

    ngx_gettimeofday(&tv);

    left = ws->jwt->exp - ((int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000);

    if (left <= 0) {
        return 0;
    }

    left = ngx_min(left, (int64_t) NGX_MAX_INT32_VALUE);
    ws->expires = ngx_current_msec + (ngx_msec_t) left;

    return 1;
}


void
ngx_chat_ws_set_jwt(ngx_chat_ws_t *ws, ngx_chat_jwt_t *jwt)
{
    int64_t          now, left;
    ngx_event_t     *rev;
    struct timeval   tv;

    if (ws->jwt && ws->jwt != jwt) {
        ngx_chat_jwt_free(ws->jwt);
    }

    ws->jwt = jwt;

    /*
     * exp is wall-clock time, the timer nginx's monotonic one: the time
     * left now; a token taken within the leeway after its exp has the
     * leeway's rest
     */

    ngx_gettimeofday(&tv);
    now = (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;

    left = jwt->exp - now;

    if (left <= 0) {
        left = jwt->exp + NGX_CHAT_JWT_LEEWAY * 1000 - now;
    }

    left = ngx_max(left, 1);
    left = ngx_min(left, (int64_t) NGX_MAX_INT32_VALUE);

    ws->expires = ngx_current_msec + (ngx_msec_t) left;
    ws->expiring = 1;

    if (!ws->started || ws->closing || ws->lingering) {
        /* the start handler arms the timer */
        return;
    }

    rev = ws->connection->read;

    if (!rev->timer_set
        || (ngx_msec_int_t) (rev->timer.key - ws->expires) > 0)
    {
        ngx_add_timer(rev, (ngx_msec_t) left);
    }
}


/*
 * Writes are coalesced: a connection with new output joins the worker's
 * flush list, and one posted event writes every listed connection after
 * the current turn of the event loop, with one send() or writev() each.
 */

static void
ngx_chat_ws_schedule(ngx_chat_ws_t *ws)
{
    if (ws->flush_posted || ws->destroyed) {
        return;
    }

    ws->flush_posted = 1;
    ngx_queue_insert_tail(&ngx_chat_ws_flush_queue, &ws->flush);

    if (!ngx_chat_ws_flush_event.posted) {
        ngx_post_event(&ngx_chat_ws_flush_event, &ngx_posted_events);
    }
}


static void
ngx_chat_ws_flush_handler(ngx_event_t *ev)
{
    ngx_queue_t    *q;
    ngx_chat_ws_t  *ws;

    while (!ngx_queue_empty(&ngx_chat_ws_flush_queue)) {
        q = ngx_queue_head(&ngx_chat_ws_flush_queue);
        ngx_queue_remove(q);

        ws = ngx_queue_data(q, ngx_chat_ws_t, flush);
        ws->flush_posted = 0;

        ngx_chat_ws_flush(ws);
    }

    ngx_chat_ws_count_flush();
}


static void
ngx_chat_ws_flush(ngx_chat_ws_t *ws)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = ws->connection;

    if (ws->closing) {
        ngx_chat_ws_notify_closed(ws);
    }

    if (ws->lingering) {
        return;
    }

    rc = ngx_chat_ws_write(ws);

    if (rc == NGX_ERROR) {
        c->error = 1;
        ngx_chat_ws_finalize(ws);
        return;
    }

    if (rc == NGX_AGAIN) {
        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            c->error = 1;
            ngx_chat_ws_finalize(ws);
        }

        return;
    }

    if (ws->closing) {
        if (ws->close_received) {
            ngx_chat_ws_finalize(ws);
            return;
        }

        ngx_chat_ws_linger(ws);
    }
}


static void
ngx_chat_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t  *c;
    ngx_chat_ws_t     *ws;

    c = wev->data;
    ws = c->data;

    if (wev->ready) {
        ws->write_blocked = 0;
    }

    if (ws->out_n == 0 && !ws->closing) {
        return;
    }

    ngx_chat_ws_flush(ws);
    ngx_chat_ws_count_flush();
}


static ngx_int_t
ngx_chat_ws_write(ngx_chat_ws_t *ws)
{
    size_t             sent, len;
    ssize_t            n;
    ngx_err_t          err;
    ngx_uint_t         i, k;
    struct iovec       iov[NGX_CHAT_WS_IOV];
    ngx_chat_buf_t    *b;
    ngx_connection_t  *c;

    c = ws->connection;

    while (ws->out_n) {

#if (NGX_SSL || NGX_COMPAT)

        if (c->ssl) {
            if (!c->write->ready) {
                return NGX_AGAIN;
            }

            b = ws->out[ws->out_head];
            n = c->send(c, b->data + ws->out_sent, b->len - ws->out_sent);

            if (n == NGX_AGAIN) {
                /*
                 * OpenSSL may hold part of it: the retry must be this same
                 * buffer (a close must not drop it, or SSL_write() fails
                 * with "bad length")
                 */
                ws->ssl_pending = 1;
                return NGX_AGAIN;
            }

            if (n == NGX_ERROR) {
                return NGX_ERROR;
            }

            ws->ssl_pending = 0;

        } else
#endif
        {
            /*
             * our own flag, not c->write->ready: at one frame per write (a
             * quiet room) the write event's cache line was the costliest
             * load of the write path (perf annotate, W2)
             */

            if (ws->write_blocked) {
                return NGX_AGAIN;
            }

            if (ws->out_n == 1) {
                /* send(): no iovec to copy in, no VFS layer */
                b = ws->out[ws->out_head];
                n = send(c->fd, b->data + ws->out_sent,
                         b->len - ws->out_sent, 0);

            } else {
                k = ngx_min(ws->out_n, NGX_CHAT_WS_IOV);

                for (i = 0; i < k; i++) {
                    b = ws->out[(ws->out_head + i) % ws->out_cap];
                    iov[i].iov_base = b->data;
                    iov[i].iov_len = b->len;
                }

                iov[0].iov_base = (u_char *) iov[0].iov_base + ws->out_sent;
                iov[0].iov_len -= ws->out_sent;

                n = writev(c->fd, iov, k);
            }

            if (n == -1) {
                err = ngx_socket_errno;

                if (err == NGX_EAGAIN) {
                    ws->write_blocked = 1;
                    c->write->ready = 0;
                    return NGX_AGAIN;
                }

                if (err == NGX_EINTR) {
                    continue;
                }

                c->write->error = 1;
                ngx_log_error(NGX_LOG_INFO, c->log, err,
                              "chat: send() failed");
                return NGX_ERROR;
            }
        }

        c->sent += n;
        sent = n;

        while (sent && ws->out_n) {
            b = ws->out[ws->out_head];
            len = b->len - ws->out_sent;

            if (sent < len) {
                ws->out_sent += sent;
                break;
            }

            sent -= len;
            ngx_chat_ws_count(ws, 2, b->len);
            ngx_chat_ws_count(ws, 3, b->plain_len ? b->plain_len : b->len);
            ws->out_bytes -= b->len;
            ws->out_sent = 0;
            ws->out_head = (ws->out_head + 1) % ws->out_cap;
            ws->out_n--;

            ngx_chat_ws_unqueued(ws, b);
        }
    }

    if (ws->out != ws->out_inline) {
        ngx_free(ws->out);
        ws->out = ws->out_inline;
        ws->out_cap = NGX_CHAT_WS_INLINE_OUT;
    }

    ws->out_head = 0;

    return NGX_OK;
}


/*
 * After our close frame is out: half-close, discard what the client still
 * sends, and close when it closes or after a while, so that our close frame
 * is not lost to a reset.
 */

static void
ngx_chat_ws_linger(ngx_chat_ws_t *ws)
{
    ngx_connection_t  *c;

    c = ws->connection;

    if (ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1) {
        ngx_chat_ws_finalize(ws);
        return;
    }

    ws->lingering = 1;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_add_timer(c->read, NGX_CHAT_WS_LINGER);

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_chat_ws_finalize(ws);
    }
}


static void
ngx_chat_ws_drop_queue(ngx_chat_ws_t *ws, ngx_uint_t keep_head)
{
    ngx_uint_t       keep;
    ngx_chat_buf_t  *b;

    keep = (keep_head && (ws->out_sent || ws->ssl_pending)) ? 1 : 0;

    while (ws->out_n > keep) {
        b = ws->out[(ws->out_head + ws->out_n - 1) % ws->out_cap];
        ws->out_bytes -= b->len;
        ws->out_n--;
        ngx_chat_ws_unqueued(ws, b);
    }

    if (ws->out_n == 0) {
        ws->out_sent = 0;
        ws->ssl_pending = 0;
    }
}


static void
ngx_chat_ws_notify_closed(ngx_chat_ws_t *ws)
{
    ngx_chat_ws_closed_pt  closed;

    closed = ws->closed;

    if (closed) {
        ws->closed = NULL;
        closed(ws);
    }
}


static void
ngx_chat_ws_finalize(ngx_chat_ws_t *ws)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (ws->destroyed) {
        return;
    }

    ngx_chat_ws_notify_closed(ws);

    ws->destroyed = 1;

    if (ws->flush_posted) {
        ngx_queue_remove(&ws->flush);
        ws->flush_posted = 0;
    }

    ngx_chat_ws_drop_queue(ws, 0);

    if (ws->out != ws->out_inline) {
        ngx_free(ws->out);
        ws->out = ws->out_inline;
    }

    if (ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
    }

    ngx_chat_frame_parser_free(&ws->parser);

    if (ws->inflate) {
        ngx_chat_ws_inflate_done(ws, ws->inflate);
    }

    c = ws->connection;
    r = ws->request;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0, "chat ws: finalize");

    if (r) {
        ws->request = NULL;
        ngx_http_free_request(r, 0);
    }

    ngx_http_close_connection(c);
}


ngx_uint_t
ngx_chat_ws_close_user(ngx_str_t *user, ngx_uint_t code, char *reason)
{
    ngx_uint_t         i, n;
    ngx_chat_ws_t     *ws;
    ngx_connection_t  *c;

    n = 0;
    c = ngx_cycle->connections;

    for (i = 0; i < ngx_cycle->connection_n; i++) {

        if (c[i].fd == (ngx_socket_t) -1
            || c[i].read->handler != ngx_chat_ws_read_handler
            || c[i].data == NULL)
        {
            continue;
        }

        /* a connection upgraded this turn still has its request */

        ws = (c[i].write->handler == ngx_chat_ws_start_handler)
             ? ngx_http_get_module_ctx((ngx_http_request_t *) c[i].data,
                                       ngx_chat_module)
             : c[i].data;

        if (ws == NULL) {
            continue;
        }

        if (ws->closing || ws->destroyed
            || ws->user.len != user->len
            || ngx_memcmp(ws->user.data, user->data, user->len) != 0)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, c[i].log, 0,
                      "chat: \"%V\" disconnected by the API", user);

        ngx_chat_ws_close(ws, code, reason);
        n++;
    }

    return n;
}
