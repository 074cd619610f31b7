
/*
 * Copyright (C) ngx_chat_module authors
 *
 * A Redis client on nginx's event loop (see ngx_chat_redis.h).  nginx owns
 * the socket (ngx_event_connect_peer); hiredis only formats commands and
 * parses replies, so nothing here blocks: no redisConnect(), no name
 * lookups in a worker, no sleeps.
 *
 * States of a connection object:
 *
 *   CONNECTING  the first attempt, started by a zero timer so that no
 *               handler runs before ngx_chat_redis_create() returns;
 *               commands are queued and sent once connected
 *   UP          connected, and AUTH and SELECT (if any) answered
 *   DOWN        after any failure: commands are declined while a
 *               cancelable timer reconnects with exponential backoff
 *
 * Commands are formatted into one output buffer and their handlers queued
 * in order; replies are matched to handlers first in, first out.  AUTH and
 * SELECT are queued ahead of everything else before every attempt.  Logs:
 * ERR once when a connection goes down (with the reason), again only if a
 * later attempt fails in AUTH or SELECT, INFO for every other failed
 * attempt, NOTICE when it is up.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include "ngx_chat_backoff.h"
#include "ngx_chat_redis.h"


#define NGX_CHAT_REDIS_BACKOFF_MIN       100
#define NGX_CHAT_REDIS_BACKOFF_MAX       10000
#define NGX_CHAT_REDIS_RECV_SIZE         16384
#define NGX_CHAT_REDIS_POOL_SIZE         512
#define NGX_CHAT_REDIS_OUT_MIN           4096
#define NGX_CHAT_REDIS_OUT_KEEP          65536
#define NGX_CHAT_REDIS_FREE_MAX          64
#define NGX_CHAT_REDIS_DETAIL_MAX        200

/*
 * The most elements an array reply may have.  hiredis 0.14 (Debian 12)
 * allocates an array for as many elements as the reply's header claims,
 * before any of them arrived: "*2147483647\r\n" from whatever answers on
 * the socket was a 16 GB calloc() in the worker.  Pub/sub pushes and
 * confirmations have 3 or 4; no command of ours gets more than this.
 */
#define NGX_CHAT_REDIS_ELEMENTS_MAX      65536

#define NGX_CHAT_REDIS_CONNECTING        0
#define NGX_CHAT_REDIS_UP                1
#define NGX_CHAT_REDIS_DOWN              2

/* command kinds; a pub/sub confirmation has the kind of its command */
#define NGX_CHAT_REDIS_CMD               0
#define NGX_CHAT_REDIS_CMD_SUBSCRIBE     1
#define NGX_CHAT_REDIS_CMD_PSUBSCRIBE    2
#define NGX_CHAT_REDIS_CMD_UNSUBSCRIBE   3
#define NGX_CHAT_REDIS_CMD_PUNSUBSCRIBE  4
#define NGX_CHAT_REDIS_PUSH_MESSAGE      5
#define NGX_CHAT_REDIS_PUSH_PMESSAGE     6


typedef struct {
    ngx_queue_t                  queue;
    ngx_chat_redis_reply_pt      handler;
    void                        *data;
    ngx_msec_t                   time;       /* queued, or connected */
    ngx_uint_t                   replies;    /* confirmations still due */
    unsigned                     kind:3;
    unsigned                     all:1;      /* UNSUBSCRIBE without args */
    unsigned                     pubsub:1;   /* pushes may come first */
} ngx_chat_redis_cmd_t;


struct ngx_chat_redis_s {
    ngx_chat_redis_conf_t       *conf;
    ngx_log_t                   *log;
    ngx_log_t                    quiet_log;  /* attempts while down */

    ngx_chat_redis_state_pt      state_handler;
    ngx_chat_redis_message_pt    message_handler;
    void                        *data;

    ngx_peer_connection_t        peer;
    ngx_connection_t            *connection;
    redisReader                 *reader;
    u_char                      *recv_buf;

    u_char                      *out;
    size_t                       out_pos;
    size_t                       out_last;
    size_t                       out_size;

    ngx_queue_t                  pending;
    ngx_queue_t                  free;
    ngx_uint_t                   nfree;

    ngx_event_t                  reconnect;
    ngx_chat_backoff_t           backoff;
    ngx_msec_t                   up_time;
    ngx_uint_t                   addr;

    ngx_uint_t                   handshake;    /* AUTH/SELECT replies due */
    ngx_uint_t                   subscribing;  /* SUBSCRIBEs unconfirmed */
    ngx_int_t                    channels;     /* subscribed, confirmed */
    ngx_int_t                    patterns;
    ngx_uint_t                   nesting;      /* handlers on the stack */

    unsigned                     state:2;
    unsigned                     connected:1;
    unsigned                     down_logged:1;
    unsigned                     handshake_logged:1;
    unsigned                     handshake_failed:1;
    unsigned                     destroyed:1;
};


static ngx_int_t ngx_chat_redis_prepare(ngx_chat_redis_t *rc);
static ngx_int_t ngx_chat_redis_queue(ngx_chat_redis_t *rc,
    ngx_chat_redis_reply_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);
static ngx_int_t ngx_chat_redis_append(ngx_chat_redis_t *rc, u_char *data,
    size_t len);
static void ngx_chat_redis_recycle(ngx_chat_redis_t *rc,
    ngx_chat_redis_cmd_t *cmd);
static void ngx_chat_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_chat_redis_connect(ngx_chat_redis_t *rc);
static void ngx_chat_redis_connect_handler(ngx_event_t *ev);
static void ngx_chat_redis_connected(ngx_chat_redis_t *rc);
static void ngx_chat_redis_read_handler(ngx_event_t *rev);
static void ngx_chat_redis_write_handler(ngx_event_t *wev);
static void ngx_chat_redis_read(ngx_chat_redis_t *rc);
static ngx_int_t ngx_chat_redis_process(ngx_chat_redis_t *rc,
    ngx_connection_t *c);
static void ngx_chat_redis_dispatch(ngx_chat_redis_t *rc,
    redisReply *reply);
static ngx_uint_t ngx_chat_redis_push_kind(redisReply *reply);
static ngx_uint_t ngx_chat_redis_kind(u_char *name, size_t len);
static ngx_int_t ngx_chat_redis_flush(ngx_chat_redis_t *rc);
static ngx_int_t ngx_chat_redis_check_timeout(ngx_chat_redis_t *rc);
static void ngx_chat_redis_handshake_handler(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);
static void ngx_chat_redis_set_up(ngx_chat_redis_t *rc);
static void ngx_chat_redis_fail(ngx_chat_redis_t *rc, ngx_err_t err,
    const char *reason, ngx_str_t *detail);
static void ngx_chat_redis_close(ngx_chat_redis_t *rc);
static void ngx_chat_redis_fail_pending(ngx_chat_redis_t *rc);
static void ngx_chat_redis_leave(ngx_chat_redis_t *rc);
static void ngx_chat_redis_free(ngx_chat_redis_t *rc);
static void ngx_chat_redis_reader_cleanup(void *data);
static redisReader *ngx_chat_redis_reader_create(void);
#if (HIREDIS_MAJOR >= 1)
static void *ngx_chat_redis_create_array(const redisReadTask *task,
    size_t elements);
#else
static void *ngx_chat_redis_create_array(const redisReadTask *task,
    int elements);
#endif


static redisReplyObjectFunctions   ngx_chat_redis_functions;
static redisReplyObjectFunctions  *ngx_chat_redis_default;


ngx_chat_redis_t *
ngx_chat_redis_create(ngx_chat_redis_conf_t *conf, ngx_log_t *log,
    ngx_chat_redis_state_pt state, ngx_chat_redis_message_pt message,
    void *data)
{
    ngx_chat_redis_t  *rc;

    if (log == NULL) {
        log = ngx_cycle->log;
    }

    if (conf->naddrs == 0) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat redis: \"%V\" has no address", &conf->url);
        return NULL;
    }

    rc = ngx_calloc(sizeof(ngx_chat_redis_t), log);
    if (rc == NULL) {
        return NULL;
    }

    rc->conf = conf;
    rc->log = log;
    rc->state_handler = state;
    rc->message_handler = message;
    rc->data = data;

    ngx_queue_init(&rc->pending);
    ngx_queue_init(&rc->free);

    ngx_chat_backoff_init(&rc->backoff, NGX_CHAT_REDIS_BACKOFF_MIN,
                          NGX_CHAT_REDIS_BACKOFF_MAX);
    rc->state = NGX_CHAT_REDIS_CONNECTING;

    rc->reconnect.handler = ngx_chat_redis_reconnect_handler;
    rc->reconnect.data = rc;
    rc->reconnect.log = log;
    rc->reconnect.cancelable = 1;

    /* AUTH and SELECT go ahead of anything queued while connecting */

    if (ngx_chat_redis_prepare(rc) != NGX_OK) {
        ngx_chat_redis_free(rc);
        return NULL;
    }

    /* connect from the event loop, after the caller has its pointer */

    ngx_add_timer(&rc->reconnect, 0);

    return rc;
}


ngx_int_t
ngx_chat_redis_command(ngx_chat_redis_t *rc, ngx_chat_redis_reply_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    if (rc->destroyed || rc->state == NGX_CHAT_REDIS_DOWN) {
        return NGX_DECLINED;
    }

    if (argc < 1 || argv == NULL) {
        return NGX_ERROR;
    }

    return ngx_chat_redis_queue(rc, handler, data, argc, argv, argvlen);
}


ngx_uint_t
ngx_chat_redis_is_up(ngx_chat_redis_t *rc)
{
    return rc->state == NGX_CHAT_REDIS_UP && !rc->destroyed;
}


void
ngx_chat_redis_destroy(ngx_chat_redis_t *rc)
{
    if (rc == NULL || rc->destroyed) {
        return;
    }

    rc->destroyed = 1;
    rc->state = NGX_CHAT_REDIS_DOWN;

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    ngx_chat_redis_close(rc);

    rc->nesting++;
    ngx_chat_redis_fail_pending(rc);
    ngx_chat_redis_leave(rc);
}


static ngx_int_t
ngx_chat_redis_prepare(ngx_chat_redis_t *rc)
{
    int                     argc;
    u_char                  db[NGX_INT_T_LEN];
    size_t                  argvlen[3];
    const char             *argv[3];
    ngx_chat_redis_conf_t  *conf;

    conf = rc->conf;
    rc->handshake = 0;

    if (conf->password.len) {
        argc = 0;

        argv[argc] = "AUTH";
        argvlen[argc++] = sizeof("AUTH") - 1;

        if (conf->user.len) {
            argv[argc] = (const char *) conf->user.data;
            argvlen[argc++] = conf->user.len;
        }

        argv[argc] = (const char *) conf->password.data;
        argvlen[argc++] = conf->password.len;

        if (ngx_chat_redis_queue(rc, ngx_chat_redis_handshake_handler,
                                 "AUTH failed", argc, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        rc->handshake++;
    }

    if (conf->db >= 0) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", conf->db) - db;

        if (ngx_chat_redis_queue(rc, ngx_chat_redis_handshake_handler,
                                 "SELECT failed", 2, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        rc->handshake++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_redis_queue(ngx_chat_redis_t *rc, ngx_chat_redis_reply_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    int                    len;
    char                  *buf;
    size_t                 len0;
    ngx_uint_t             empty;
    ngx_queue_t           *q;
    ngx_connection_t      *c;
    ngx_chat_redis_cmd_t  *cmd;

    len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0) {
        ngx_log_error(NGX_LOG_ALERT, rc->log, 0,
                      "chat redis: redisFormatCommandArgv() failed");
        return NGX_ERROR;
    }

    if (!ngx_queue_empty(&rc->free)) {
        q = ngx_queue_head(&rc->free);
        ngx_queue_remove(q);
        rc->nfree--;
        cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);

    } else {
        cmd = ngx_alloc(sizeof(ngx_chat_redis_cmd_t), rc->log);
        if (cmd == NULL) {
            redisFreeCommand(buf);
            return NGX_ERROR;
        }
    }

    if (ngx_chat_redis_append(rc, (u_char *) buf, len) != NGX_OK) {
        redisFreeCommand(buf);
        ngx_chat_redis_recycle(rc, cmd);
        return NGX_ERROR;
    }

    redisFreeCommand(buf);

    len0 = argvlen ? argvlen[0] : ngx_strlen(argv[0]);

    cmd->handler = handler;
    cmd->data = data;
    cmd->time = ngx_current_msec;
    cmd->kind = ngx_chat_redis_kind((u_char *) argv[0], len0);
    cmd->replies = argc - 1;
    cmd->all = (argc == 1
                && (cmd->kind == NGX_CHAT_REDIS_CMD_UNSUBSCRIBE
                    || cmd->kind == NGX_CHAT_REDIS_CMD_PUNSUBSCRIBE));
    cmd->pubsub = (cmd->kind != NGX_CHAT_REDIS_CMD || rc->subscribing
                   || rc->channels || rc->patterns);

    if (cmd->kind == NGX_CHAT_REDIS_CMD_SUBSCRIBE
        || cmd->kind == NGX_CHAT_REDIS_CMD_PSUBSCRIBE)
    {
        rc->subscribing++;
    }

    empty = ngx_queue_empty(&rc->pending);

    ngx_queue_insert_tail(&rc->pending, &cmd->queue);

    if (rc->connected) {
        c = rc->connection;

        if (empty && !c->read->timer_set) {
            ngx_add_timer(c->read, rc->conf->command_timeout);
        }

        /* one send() for everything queued in this event loop iteration */

        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_redis_append(ngx_chat_redis_t *rc, u_char *data, size_t len)
{
    u_char  *out;
    size_t   used, size;

    if (rc->out_pos == rc->out_last) {
        rc->out_pos = 0;
        rc->out_last = 0;
    }

    if (rc->out_size - rc->out_last < len) {
        used = rc->out_last - rc->out_pos;

        if (len > NGX_MAX_SIZE_T_VALUE / 4 - used) {
            return NGX_ERROR;
        }

        if (rc->out_size - used >= len) {
            ngx_memmove(rc->out, rc->out + rc->out_pos, used);

        } else {
            size = ngx_max(rc->out_size * 2, NGX_CHAT_REDIS_OUT_MIN);

            while (size < used + len) {
                size *= 2;
            }

            out = ngx_alloc(size, rc->log);
            if (out == NULL) {
                return NGX_ERROR;
            }

            if (used) {
                ngx_memcpy(out, rc->out + rc->out_pos, used);
            }

            if (rc->out) {
                ngx_free(rc->out);
            }

            rc->out = out;
            rc->out_size = size;
        }

        rc->out_pos = 0;
        rc->out_last = used;
    }

    ngx_memcpy(rc->out + rc->out_last, data, len);
    rc->out_last += len;

    return NGX_OK;
}


static void
ngx_chat_redis_recycle(ngx_chat_redis_t *rc, ngx_chat_redis_cmd_t *cmd)
{
    if (rc->nfree < NGX_CHAT_REDIS_FREE_MAX) {
        ngx_queue_insert_head(&rc->free, &cmd->queue);
        rc->nfree++;
        return;
    }

    ngx_free(cmd);
}


static void
ngx_chat_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_chat_redis_t  *rc;

    rc = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    rc->nesting++;
    ngx_chat_redis_connect(rc);
    ngx_chat_redis_leave(rc);
}


static void
ngx_chat_redis_connect(ngx_chat_redis_t *rc)
{
    ngx_int_t               rv;
    ngx_addr_t             *addr;
    ngx_pool_t             *pool;
    ngx_connection_t       *c;
    ngx_pool_cleanup_t     *cln;
    ngx_peer_connection_t  *pc;

    pool = NULL;

    /* the first attempt had its AUTH and SELECT queued by create() */

    if (rc->state != NGX_CHAT_REDIS_CONNECTING
        && ngx_chat_redis_prepare(rc) != NGX_OK)
    {
        goto failed;
    }

    pool = ngx_create_pool(NGX_CHAT_REDIS_POOL_SIZE, rc->log);
    if (pool == NULL) {
        goto failed;
    }

    rc->recv_buf = ngx_pnalloc(pool, NGX_CHAT_REDIS_RECV_SIZE);
    if (rc->recv_buf == NULL) {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    rc->reader = ngx_chat_redis_reader_create();
    if (rc->reader == NULL) {
        goto failed;
    }

    cln->handler = ngx_chat_redis_reader_cleanup;
    cln->data = rc->reader;

    addr = &rc->conf->addrs[rc->addr++ % rc->conf->naddrs];

    pc = &rc->peer;
    ngx_memzero(pc, sizeof(ngx_peer_connection_t));

    pc->sockaddr = addr->sockaddr;
    pc->socklen = addr->socklen;
    pc->name = &addr->name;
    pc->get = ngx_event_get_peer;
    pc->log = rc->log;
    pc->log_error = NGX_ERROR_INFO;
    pc->so_keepalive = 1;

    if (rc->down_logged) {

        /*
         * the outage is logged already: nginx's own "connect() failed"
         * at ERR or CRIT on every retry would only repeat it
         */

        rc->quiet_log = *rc->log;

        if (rc->quiet_log.log_level > NGX_LOG_ALERT
            && rc->quiet_log.log_level <= NGX_LOG_DEBUG)
        {
            rc->quiet_log.log_level = NGX_LOG_ALERT;
        }

        pc->log = &rc->quiet_log;
    }

    rv = ngx_event_connect_peer(pc);

    if (rv == NGX_ERROR || rv == NGX_BUSY || rv == NGX_DECLINED) {

        /* nginx has logged why; all of these are retried after a backoff */

        ngx_destroy_pool(pool);
        rc->reader = NULL;
        rc->recv_buf = NULL;

        ngx_chat_redis_fail(rc, 0, "connect() failed", NULL);
        return;
    }

    /* rv == NGX_OK || rv == NGX_AGAIN */

    c = pc->connection;
    c->data = rc;
    c->pool = pool;
    c->read->handler = ngx_chat_redis_connect_handler;
    c->write->handler = ngx_chat_redis_connect_handler;

    rc->connection = c;

    if (rv == NGX_AGAIN) {

        /* a connect in progress does not hold up a worker's exit */

        c->write->cancelable = 1;
        ngx_add_timer(c->write, rc->conf->connect_timeout);
        return;
    }

    ngx_chat_redis_connected(rc);

    return;

failed:

    if (pool) {
        ngx_destroy_pool(pool);
    }

    rc->reader = NULL;
    rc->recv_buf = NULL;

    ngx_chat_redis_fail(rc, 0, "out of memory", NULL);
}


static void
ngx_chat_redis_connect_handler(ngx_event_t *ev)
{
    int                err;
    socklen_t          len;
    ngx_connection_t  *c;
    ngx_chat_redis_t  *rc;

    c = ev->data;
    rc = c->data;

    rc->nesting++;

    if (ev->timedout) {
        ngx_chat_redis_fail(rc, NGX_ETIMEDOUT, "connect() timed out", NULL);
        goto done;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_chat_redis_fail(rc, err, "connect() failed", NULL);
        goto done;
    }

    ngx_chat_redis_connected(rc);

done:

    ngx_chat_redis_leave(rc);
}


static void
ngx_chat_redis_connected(ngx_chat_redis_t *rc)
{
    ngx_msec_t             now;
    ngx_queue_t           *q;
    ngx_connection_t      *c;
    ngx_chat_redis_cmd_t  *cmd;

    c = rc->connection;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->write->cancelable = 0;

    rc->connected = 1;

    rc->peer.log = rc->log;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->pool->log = rc->log;

    c->read->handler = ngx_chat_redis_read_handler;
    c->write->handler = ngx_chat_redis_write_handler;

    /* a no-op on unix sockets */

    if (ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_chat_redis_fail(rc, 0, "setsockopt(TCP_NODELAY) failed", NULL);
        return;
    }

    /* the command timeout starts now, not when the command was queued */

    now = ngx_current_msec;

    for (q = ngx_queue_head(&rc->pending);
         q != ngx_queue_sentinel(&rc->pending);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);
        cmd->time = now;
    }

    if (!ngx_queue_empty(&rc->pending)) {
        ngx_add_timer(c->read, rc->conf->command_timeout);
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    if (ngx_chat_redis_flush(rc) != NGX_OK) {
        return;
    }

    if (rc->handshake == 0) {
        ngx_chat_redis_set_up(rc);
    }
}


static void
ngx_chat_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t  *c;
    ngx_chat_redis_t  *rc;

    c = rev->data;
    rc = c->data;

    rc->nesting++;
    ngx_chat_redis_read(rc);
    ngx_chat_redis_leave(rc);
}


static void
ngx_chat_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t  *c;
    ngx_chat_redis_t  *rc;

    c = wev->data;
    rc = c->data;

    rc->nesting++;
    (void) ngx_chat_redis_flush(rc);
    ngx_chat_redis_leave(rc);
}


static void
ngx_chat_redis_read(ngx_chat_redis_t *rc)
{
    ssize_t            n;
    ngx_err_t          err;
    ngx_connection_t  *c;

    c = rc->connection;

    if (c->read->timedout) {
        c->read->timedout = 0;

        if (ngx_chat_redis_check_timeout(rc) != NGX_OK) {
            return;
        }
    }

    for ( ;; ) {
        n = c->recv(c, rc->recv_buf, NGX_CHAT_REDIS_RECV_SIZE);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_chat_redis_fail(rc, 0, "connection closed by server", NULL);
            return;
        }

        if (n == NGX_ERROR) {
            err = ngx_socket_errno;
            ngx_chat_redis_fail(rc, err, "recv() failed", NULL);
            return;
        }

        if (redisReaderFeed(rc->reader, (const char *) rc->recv_buf, n)
            != REDIS_OK)
        {
            ngx_chat_redis_fail(rc, 0, "redisReaderFeed() failed", NULL);
            return;
        }

        if (ngx_chat_redis_process(rc, c) != NGX_OK) {
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_chat_redis_fail(rc, 0, "ngx_handle_read_event() failed", NULL);
    }
}


static ngx_int_t
ngx_chat_redis_process(ngx_chat_redis_t *rc, ngx_connection_t *c)
{
    void       *reply;
    ngx_str_t   detail;

    for ( ;; ) {
        reply = NULL;

        if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
            detail.data = (u_char *) rc->reader->errstr;
            detail.len = ngx_strlen(detail.data);

            ngx_chat_redis_fail(rc, 0, "protocol error", &detail);
            return NGX_ERROR;
        }

        if (reply == NULL) {
            return NGX_OK;
        }

        ngx_chat_redis_dispatch(rc, reply);

        /* a handler may have failed or destroyed the connection */

        if (rc->destroyed || rc->connection != c) {
            return NGX_DONE;
        }
    }
}


static void
ngx_chat_redis_dispatch(ngx_chat_redis_t *rc, redisReply *reply)
{
    void                     *data;
    ngx_int_t                 delta;
    ngx_str_t                 channel, payload, detail;
    ngx_uint_t                push, done;
    redisReply              **e;
    ngx_connection_t         *c;
    ngx_chat_redis_cmd_t     *cmd;
    ngx_chat_redis_reply_pt   handler;

    push = ngx_chat_redis_push_kind(reply);
    e = reply->element;

    cmd = NULL;

    if (!ngx_queue_empty(&rc->pending)) {
        cmd = ngx_queue_data(ngx_queue_head(&rc->pending),
                             ngx_chat_redis_cmd_t, queue);
    }

    /*
     * a pub/sub push, unless it is the reply of a command sent before
     * the connection became a subscriber (LRANGE may return the same shape)
     */

    if ((push == NGX_CHAT_REDIS_PUSH_MESSAGE
         || push == NGX_CHAT_REDIS_PUSH_PMESSAGE)
        && (rc->subscribing || rc->channels || rc->patterns)
        && (cmd == NULL || cmd->pubsub))
    {
        if (rc->message_handler) {
            if (push == NGX_CHAT_REDIS_PUSH_PMESSAGE) {
                e++;
            }

            channel.len = e[1]->len;
            channel.data = (u_char *) e[1]->str;
            payload.len = e[2]->len;
            payload.data = (u_char *) e[2]->str;

            rc->message_handler(rc, &channel, &payload, rc->data);
        }

        freeReplyObject(reply);
        return;
    }

    if (cmd == NULL) {
        if (reply->type == REDIS_REPLY_ERROR
            || reply->type == REDIS_REPLY_STATUS)
        {
            detail.len = reply->len;
            detail.data = (u_char *) reply->str;

        } else {
            ngx_str_set(&detail, "no command waits for it");
        }

        ngx_chat_redis_fail(rc, 0, "unexpected reply", &detail);
        freeReplyObject(reply);
        return;
    }

    if (push != NGX_CHAT_REDIS_CMD && push == cmd->kind) {

        /*
         * one confirmation per channel; its count is channels plus
         * patterns, and it changes only the kind it confirms
         */

        delta = (ngx_int_t) e[2]->integer - (rc->channels + rc->patterns);

        if (push == NGX_CHAT_REDIS_CMD_PSUBSCRIBE
            || push == NGX_CHAT_REDIS_CMD_PUNSUBSCRIBE)
        {
            rc->patterns = ngx_max(rc->patterns + delta, 0);

        } else {
            rc->channels = ngx_max(rc->channels + delta, 0);
        }

        if (cmd->all) {
            done = (push == NGX_CHAT_REDIS_CMD_UNSUBSCRIBE)
                   ? (rc->channels == 0) : (rc->patterns == 0);

        } else {
            done = (cmd->replies <= 1);

            if (!done) {
                cmd->replies--;
            }
        }

        if (!done) {
            freeReplyObject(reply);
            return;
        }
    }

    if ((cmd->kind == NGX_CHAT_REDIS_CMD_SUBSCRIBE
         || cmd->kind == NGX_CHAT_REDIS_CMD_PSUBSCRIBE)
        && rc->subscribing)
    {
        rc->subscribing--;
    }

    handler = cmd->handler;
    data = cmd->data;

    ngx_queue_remove(&cmd->queue);
    ngx_chat_redis_recycle(rc, cmd);

    c = rc->connection;

    if (ngx_queue_empty(&rc->pending) && c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (handler) {
        handler(rc, reply, data);
    }

    freeReplyObject(reply);
}


static ngx_uint_t
ngx_chat_redis_push_kind(redisReply *reply)
{
    redisReply  **e;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        return NGX_CHAT_REDIS_CMD;
    }

    e = reply->element;

    if (e[0]->type != REDIS_REPLY_STRING) {
        return NGX_CHAT_REDIS_CMD;
    }

    if (reply->elements == 4) {
        if (e[0]->len == 8
            && ngx_strncmp(e[0]->str, "pmessage", 8) == 0
            && e[2]->type == REDIS_REPLY_STRING
            && e[3]->type == REDIS_REPLY_STRING)
        {
            return NGX_CHAT_REDIS_PUSH_PMESSAGE;
        }

        return NGX_CHAT_REDIS_CMD;
    }

    if (reply->elements != 3) {
        return NGX_CHAT_REDIS_CMD;
    }

    if (e[0]->len == 7
        && ngx_strncmp(e[0]->str, "message", 7) == 0
        && e[1]->type == REDIS_REPLY_STRING
        && e[2]->type == REDIS_REPLY_STRING)
    {
        return NGX_CHAT_REDIS_PUSH_MESSAGE;
    }

    if (e[2]->type != REDIS_REPLY_INTEGER) {
        return NGX_CHAT_REDIS_CMD;
    }

    return ngx_chat_redis_kind((u_char *) e[0]->str, e[0]->len);
}


static ngx_uint_t
ngx_chat_redis_kind(u_char *name, size_t len)
{
    switch (len) {

    case 9:
        if (ngx_strncasecmp(name, (u_char *) "subscribe", 9) == 0) {
            return NGX_CHAT_REDIS_CMD_SUBSCRIBE;
        }

        break;

    case 10:
        if (ngx_strncasecmp(name, (u_char *) "psubscribe", 10) == 0) {
            return NGX_CHAT_REDIS_CMD_PSUBSCRIBE;
        }

        break;

    case 11:
        if (ngx_strncasecmp(name, (u_char *) "unsubscribe", 11) == 0) {
            return NGX_CHAT_REDIS_CMD_UNSUBSCRIBE;
        }

        break;

    case 12:
        if (ngx_strncasecmp(name, (u_char *) "punsubscribe", 12) == 0) {
            return NGX_CHAT_REDIS_CMD_PUNSUBSCRIBE;
        }

        break;
    }

    return NGX_CHAT_REDIS_CMD;
}


static ngx_int_t
ngx_chat_redis_flush(ngx_chat_redis_t *rc)
{
    ssize_t            n;
    ngx_err_t          err;
    ngx_connection_t  *c;

    c = rc->connection;

    while (rc->out_pos < rc->out_last) {
        n = c->send(c, rc->out + rc->out_pos, rc->out_last - rc->out_pos);

        if (n == NGX_AGAIN || n == 0) {
            break;
        }

        if (n == NGX_ERROR) {
            err = ngx_socket_errno;
            ngx_chat_redis_fail(rc, err, "send() failed", NULL);
            return NGX_ERROR;
        }

        rc->out_pos += n;
    }

    if (rc->out_pos == rc->out_last) {
        rc->out_pos = 0;
        rc->out_last = 0;

        /* do not keep a buffer grown by one big payload */

        if (rc->out_size > NGX_CHAT_REDIS_OUT_KEEP) {
            ngx_free(rc->out);
            rc->out = NULL;
            rc->out_size = 0;
        }
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_chat_redis_fail(rc, 0, "ngx_handle_write_event() failed", NULL);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_redis_check_timeout(ngx_chat_redis_t *rc)
{
    ngx_msec_t             elapsed, timeout;
    ngx_chat_redis_cmd_t  *cmd;

    if (ngx_queue_empty(&rc->pending)) {
        return NGX_OK;
    }

    /* one timer for the whole queue: it measures the oldest command */

    cmd = ngx_queue_data(ngx_queue_head(&rc->pending),
                         ngx_chat_redis_cmd_t, queue);

    elapsed = ngx_current_msec - cmd->time;
    timeout = rc->conf->command_timeout;

    if (elapsed >= timeout) {
        ngx_chat_redis_fail(rc, NGX_ETIMEDOUT, "command timed out", NULL);
        return NGX_ERROR;
    }

    ngx_add_timer(rc->connection->read, timeout - elapsed);

    return NGX_OK;
}


static void
ngx_chat_redis_handshake_handler(ngx_chat_redis_t *rc, redisReply *reply,
    void *data)
{
    ngx_str_t  detail;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        detail.len = reply->len;
        detail.data = (u_char *) reply->str;

        rc->handshake_failed = 1;

        /* data is the reason: "AUTH failed" or "SELECT failed" */

        ngx_chat_redis_fail(rc, 0, data, &detail);
        return;
    }

    if (rc->handshake && --rc->handshake == 0) {
        ngx_chat_redis_set_up(rc);
    }
}


static void
ngx_chat_redis_set_up(ngx_chat_redis_t *rc)
{
    rc->state = NGX_CHAT_REDIS_UP;
    rc->up_time = ngx_current_msec;
    rc->down_logged = 0;
    rc->handshake_logged = 0;

    ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                  "chat redis: \"%V\" is up", &rc->conf->url);

    if (rc->state_handler) {
        rc->state_handler(rc, 1, rc->data);
    }
}


static void
ngx_chat_redis_fail(ngx_chat_redis_t *rc, ngx_err_t err, const char *reason,
    ngx_str_t *detail)
{
    u_char       buf[NGX_CHAT_REDIS_DETAIL_MAX], *p, ch;
    size_t       i, len;
    ngx_msec_t   delay;
    ngx_uint_t   was_up, handshake, level;
    const char  *what;

    was_up = (rc->state == NGX_CHAT_REDIS_UP);
    handshake = rc->handshake_failed;
    rc->handshake_failed = 0;

    /* the detail may point into the reader: copy it before closing */

    p = buf;

    if (detail && detail->len) {
        *p++ = ':';
        *p++ = ' ';

        len = ngx_min(detail->len, sizeof(buf) - 2);

        for (i = 0; i < len; i++) {
            ch = detail->data[i];
            *p++ = (ch < 0x20 || ch == 0x7f) ? '?' : ch;
        }
    }

    ngx_chat_redis_close(rc);

    rc->state = NGX_CHAT_REDIS_DOWN;

    /* backoff: 100ms doubling to 10s, restarted after 10s of being up */

    delay = ngx_chat_backoff_next(&rc->backoff, was_up ? rc->up_time : 0);

    if (!rc->down_logged) {
        level = NGX_LOG_ERR;
        what = "is down";

    } else if (handshake && !rc->handshake_logged) {
        level = NGX_LOG_ERR;
        what = "is still down";

    } else {
        level = NGX_LOG_INFO;
        what = "is still down";
    }

    rc->down_logged = 1;

    if (handshake) {
        rc->handshake_logged = 1;
    }

    if (ngx_exiting || ngx_terminate) {
        ngx_log_error(level, rc->log, err, "chat redis: \"%V\" %s: %s%*s",
                      &rc->conf->url, what, reason, (size_t) (p - buf), buf);

    } else {
        ngx_log_error(level, rc->log, err,
                      "chat redis: \"%V\" %s, reconnecting in %Mms: %s%*s",
                      &rc->conf->url, what, delay, reason,
                      (size_t) (p - buf), buf);

        ngx_add_timer(&rc->reconnect, delay);
    }

    ngx_chat_redis_fail_pending(rc);

    if (rc->destroyed) {
        return;
    }

    if (was_up && rc->state_handler) {
        rc->state_handler(rc, 0, rc->data);
    }
}


static void
ngx_chat_redis_close(ngx_chat_redis_t *rc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    c = rc->connection;

    if (c == NULL) {
        return;
    }

    pool = c->pool;

    /* drops the events, timers and posted events */

    ngx_close_connection(c);

    /* frees the reader and the receive buffer */

    ngx_destroy_pool(pool);

    rc->connection = NULL;
    rc->peer.connection = NULL;
    rc->reader = NULL;
    rc->recv_buf = NULL;
    rc->connected = 0;

    rc->out_pos = 0;
    rc->out_last = 0;

    rc->handshake = 0;
    rc->subscribing = 0;
    rc->channels = 0;
    rc->patterns = 0;
}


static void
ngx_chat_redis_fail_pending(ngx_chat_redis_t *rc)
{
    void                     *data;
    ngx_queue_t               pending, *q;
    ngx_chat_redis_cmd_t     *cmd;
    ngx_chat_redis_reply_pt   handler;

    if (ngx_queue_empty(&rc->pending)) {
        return;
    }

    /* handlers may queue (declined) or destroy: work on a detached list */

    ngx_queue_init(&pending);
    ngx_queue_add(&pending, &rc->pending);
    ngx_queue_init(&rc->pending);

    while (!ngx_queue_empty(&pending)) {
        q = ngx_queue_head(&pending);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);
        handler = cmd->handler;
        data = cmd->data;

        ngx_chat_redis_recycle(rc, cmd);

        if (handler) {
            handler(rc, NULL, data);
        }
    }
}


static void
ngx_chat_redis_leave(ngx_chat_redis_t *rc)
{
    /* the object is freed only when no handler of ours is on the stack */

    if (--rc->nesting == 0 && rc->destroyed) {
        ngx_chat_redis_free(rc);
    }
}


static void
ngx_chat_redis_free(ngx_chat_redis_t *rc)
{
    ngx_queue_t           *q;
    ngx_chat_redis_cmd_t  *cmd;

    while (!ngx_queue_empty(&rc->pending)) {
        q = ngx_queue_head(&rc->pending);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);
        ngx_free(cmd);
    }

    while (!ngx_queue_empty(&rc->free)) {
        q = ngx_queue_head(&rc->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);
        ngx_free(cmd);
    }

    if (rc->out) {
        ngx_free(rc->out);
    }

    ngx_free(rc);
}


static void
ngx_chat_redis_reader_cleanup(void *data)
{
    redisReader  *reader = data;

    redisReaderFree(reader);
}


/* hiredis's reader, with arrays bounded (NGX_CHAT_REDIS_ELEMENTS_MAX) */

static redisReader *
ngx_chat_redis_reader_create(void)
{
    redisReader  *reader;

    reader = redisReaderCreate();
    if (reader == NULL) {
        return NULL;
    }

    if (ngx_chat_redis_default == NULL) {
        ngx_chat_redis_default = reader->fn;
        ngx_chat_redis_functions = *reader->fn;
        ngx_chat_redis_functions.createArray = ngx_chat_redis_create_array;
    }

    reader->fn = &ngx_chat_redis_functions;

    return reader;
}


/* NULL: the reader fails with "Out of memory", the connection with it */

#if (HIREDIS_MAJOR >= 1)

static void *
ngx_chat_redis_create_array(const redisReadTask *task, size_t elements)
{
    if (elements > NGX_CHAT_REDIS_ELEMENTS_MAX) {
        return NULL;
    }

    return ngx_chat_redis_default->createArray(task, elements);
}

#else

static void *
ngx_chat_redis_create_array(const redisReadTask *task, int elements)
{
    /* -1, a nil array, is createNil's; hiredis 0.14 lets any other pass */

    if (elements < 0 || elements > NGX_CHAT_REDIS_ELEMENTS_MAX) {
        return NULL;
    }

    return ngx_chat_redis_default->createArray(task, elements);
}

#endif
