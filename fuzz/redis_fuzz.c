
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the Redis client's reply side (ngx_chat_redis.c):
 * what a Redis server, or whatever answers on its socket, sends goes
 * through the real read path (c->recv, redisReaderFeed, the reply loop,
 * ngx_chat_redis_dispatch: replies to command handlers in order, pub/sub
 * pushes to the message handler, confirmations counted) on the stand-in
 * nginx of ngx_fuzz_runtime.c.  ngx_chat_redis.c is included, so that the
 * harness can run its events; the socket is the harness's: connect
 * succeeds at once, send() takes everything, recv() hands out the input.
 *
 * The first input byte chooses the mode.
 *
 * Raw (bit 7 clear): bit 0 queues AUTH, bit 1 SELECT on every connect
 * (the handshake), then the rest is operations, each an op byte and a
 * length byte N followed by N bytes of data:
 *
 *   op % 7 == 0   the server sends the N bytes (in recv() chunks of
 *                 (op / 7) % 7 * 3 + 1 bytes)
 *   op % 7 == 1   a command is queued, by the first data byte: SUBSCRIBE,
 *                 PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE (each with the
 *                 other bytes as channels, split at ','; none: all),
 *                 PUBLISH, PING, GET
 *   op % 7 == 2   the command timeout passes
 *   op % 7 == 3   the reconnect timer fires (when set)
 *   op % 7 == 4   the connection is destroyed (then the input ends)
 *   op % 7 == 5   the server closes the connection (recv() returns 0)
 *   op % 7 == 6   the server stops reading (send() says EAGAIN: what is
 *                 queued piles up in the output buffer) or, stopped,
 *                 reads again (the write event runs)
 *
 * Every reply a handler gets is read whole, every channel and payload the
 * message handler gets too (ASan sees any overread); libFuzzer's
 * -malloc_limit_mb (make run/replay: 64) catches an allocation sized by
 * what the server claims rather than by what it sent.
 *
 * Model (bit 7 set): well-formed replies, built by the harness from the
 * input, must be dispatched exactly.  Bit 6 set: a subscriber, SUBSCRIBE
 * "c" confirmed, then "message" and "pmessage" pushes of arbitrary channel
 * and payload bytes (CR LF included), interleaved with PINGs and their
 * replies; the message handler must get every push, in order, byte for
 * byte, and each PING handler its "PONG".  Bit 6 clear: a command
 * connection, commands answered with arrays of bulk strings (nil ones
 * too), bulk strings, integers, status and error replies, each handler
 * must get its reply, equal to the model's.  The stream is fed in chunks
 * of sizes taken from the input (down to one byte).
 */


#include "../src/ngx_chat_redis.c"
#include "ngx_fuzz_runtime.h"


#define ASSERT  ngx_fuzz_assert

#define MAX_ITEMS      64
#define MAX_ARGS       8


sig_atomic_t  ngx_terminate;
ngx_uint_t    ngx_exiting;


typedef struct {
    int          type;          /* REDIS_REPLY_*, or -1: a push */
    ngx_uint_t   pattern;       /* a push: pmessage */
    long long    integer;
    ngx_str_t    str[MAX_ARGS]; /* array elements, or the string */
    ngx_uint_t   nil[MAX_ARGS];
    ngx_uint_t   n;
} fitem_t;


static ngx_log_t           flog;
static ngx_cycle_t         fcycle;
static ngx_chat_redis_conf_t  fconf;
static ngx_addr_t          faddr;
static struct sockaddr_in  fsin;

static ngx_chat_redis_t   *frc;
static ngx_connection_t   *fc;          /* the current connection */
static u_char             *fin;         /* what recv() hands out next */
static size_t              fin_len;
static size_t              fchunk;
static const u_char       *fchunks;     /* model: chunk sizes */
static size_t              fchunks_len;
static ngx_uint_t          fconnects;
static ngx_uint_t          fstate_up;
static ngx_uint_t          fsum;
static ngx_uint_t          fclosed;        /* recv() returns 0 */
static ngx_uint_t          fstalled;    /* send() returns NGX_AGAIN */

/* model */
static fitem_t             fexpect[MAX_ITEMS];
static ngx_uint_t          fnexpect;
static ngx_uint_t          fgot;
static ngx_uint_t          fmodel;


/* the socket */

static ssize_t
fuzz_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t  n;

    if (fclosed) {
        fclosed = 0;
        return 0;
    }

    if (fin_len == 0) {
        c->read->ready = 0;
        return NGX_AGAIN;
    }

    n = ngx_min(ngx_min(size, fin_len), fchunk);

    if (fchunks_len) {
        n = ngx_min(ngx_min(size, fin_len), (size_t) fchunks[0] % 37 + 1);
        fchunks++;
        fchunks_len--;
    }

    ngx_memcpy(buf, fin, n);
    fin += n;
    fin_len -= n;

    return n;
}


static ssize_t
fuzz_send(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t  i;

    if (fstalled) {
        c->write->ready = 0;
        return NGX_AGAIN;
    }

    /* what is sent is read whole */

    for (i = 0; i < size; i++) {
        fsum += buf[i];
    }

    return size;
}


ngx_int_t
ngx_event_connect_peer(ngx_peer_connection_t *pc)
{
    ngx_connection_t  *c;

    c = ngx_get_connection((ngx_socket_t) -1, pc->log);
    ASSERT(c != NULL);

    c->recv = fuzz_recv;
    c->send = fuzz_send;
    c->read->ready = 1;
    c->write->ready = 1;

    pc->connection = c;
    fconnects++;

    return NGX_OK;
}


ngx_int_t
ngx_event_get_peer(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


ngx_int_t
ngx_tcp_nodelay(ngx_connection_t *c)
{
    return NGX_OK;
}


/* the event loop: posted events until none is left */

static void
run_posted(void)
{
    ngx_event_t  *ev;
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&ngx_posted_events)) {
        q = ngx_queue_head(&ngx_posted_events);
        ev = ngx_queue_data(q, ngx_event_t, queue);
        ngx_delete_posted_event(ev);
        ev->handler(ev);
    }

    fc = frc ? frc->connection : NULL;
}


/* what handlers get is read whole */

static void
touch_reply(redisReply *r, ngx_uint_t depth)
{
    size_t  i;

    ASSERT(depth < 16);

    switch (r->type) {

    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        for (i = 0; i < r->len; i++) {
            fsum += (u_char) r->str[i];
        }

        /* hiredis terminates them */
        ASSERT(r->str[r->len] == '\0');
        break;

    case REDIS_REPLY_ARRAY:
        for (i = 0; i < r->elements; i++) {
            ASSERT(r->element[i] != NULL);
            touch_reply(r->element[i], depth + 1);
        }

        break;

    case REDIS_REPLY_INTEGER:
        fsum += (ngx_uint_t) r->integer;
        break;

    case REDIS_REPLY_NIL:
        break;

    default:
        ASSERT(0);
    }
}


static void
touch_str(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        fsum += s->data[i];
    }
}


static ngx_uint_t
str_eq(ngx_str_t *s, const char *p, size_t len)
{
    return s->len == len && (len == 0 || ngx_memcmp(s->data, p, len) == 0);
}


static fitem_t *
next_expected(void)
{
    ASSERT(fgot < fnexpect);
    return &fexpect[fgot++];
}


/* handlers */

static void
on_reply(ngx_chat_redis_t *rc, redisReply *reply, void *data)
{
    size_t    i;
    fitem_t  *it;

    ASSERT(rc == frc);

    if (reply) {
        touch_reply(reply, 0);
    }

    if (!fmodel || data == NULL) {
        return;
    }

    /* a command of the model: its reply, exactly */

    ASSERT(reply != NULL);

    it = next_expected();
    ASSERT(it->type == reply->type);

    switch (it->type) {

    case REDIS_REPLY_ARRAY:
        ASSERT(reply->elements == it->n);

        for (i = 0; i < it->n; i++) {
            if (it->nil[i]) {
                ASSERT(reply->element[i]->type == REDIS_REPLY_NIL);

            } else {
                ASSERT(reply->element[i]->type == REDIS_REPLY_STRING);
                ASSERT(str_eq(&it->str[i], reply->element[i]->str,
                              reply->element[i]->len));
            }
        }

        break;

    case REDIS_REPLY_INTEGER:
        ASSERT(reply->integer == it->integer);
        break;

    case REDIS_REPLY_NIL:
        break;

    default:
        ASSERT(str_eq(&it->str[0], reply->str, reply->len));
    }
}


static void
on_message(ngx_chat_redis_t *rc, ngx_str_t *channel, ngx_str_t *payload,
    void *data)
{
    fitem_t  *it;

    ASSERT(rc == frc);

    touch_str(channel);
    touch_str(payload);

    if (!fmodel) {
        return;
    }

    it = next_expected();
    ASSERT(it->type == -1);
    ASSERT(str_eq(&it->str[0], (char *) channel->data, channel->len));
    ASSERT(str_eq(&it->str[1], (char *) payload->data, payload->len));
}


static void
on_state(ngx_chat_redis_t *rc, ngx_uint_t up, void *data)
{
    ASSERT(rc == frc);
    ASSERT(up != fstate_up);
    fstate_up = up;
}


/* the first attempt, or a reconnect: the reconnect timer's handler */

static void
fire_reconnect(void)
{
    if (frc == NULL || !frc->reconnect.timer_set) {
        return;
    }

    ngx_del_timer(&frc->reconnect);
    frc->reconnect.handler(&frc->reconnect);
    run_posted();
}


static void
fire_timeout(void)
{
    if (fc == NULL || !fc->read->timer_set) {
        return;
    }

    ngx_del_timer(fc->read);
    ngx_current_msec += fconf.command_timeout;
    fc->read->timedout = 1;
    fc->read->handler(fc->read);
    run_posted();
}


static void
server_sends(u_char *data, size_t len, size_t chunk)
{
    fin = data;
    fin_len = len;
    fchunk = chunk;

    while (fc && fin_len) {
        fc->read->ready = 1;
        fc->read->handler(fc->read);
        run_posted();
    }

    fin_len = 0;
}


static void
command(u_char *data, size_t len, void *mark)
{
    int          argc;
    u_char      *p, *last, *comma;
    size_t       argvlen[MAX_ARGS];
    const char  *argv[MAX_ARGS];

    static const char  *names[] = {
        "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
        "PUBLISH", "PING", "GET"
    };

    if (frc == NULL) {
        return;
    }

    argc = 0;
    argv[argc] = names[len ? data[0] % 7 : 5];
    argvlen[argc] = ngx_strlen(argv[argc]);
    argc++;

    if (len) {
        p = data + 1;
        last = data + len;

        while (p < last && argc < MAX_ARGS) {
            comma = memchr(p, ',', last - p);
            if (comma == NULL) {
                comma = last;
            }

            argv[argc] = (const char *) p;
            argvlen[argc] = comma - p;
            argc++;
            p = comma + 1;
        }
    }

    (void) ngx_chat_redis_command(frc, on_reply, mark, argc, argv, argvlen);
    run_posted();
}


static void
start(ngx_uint_t auth, ngx_uint_t db)
{
    ngx_memzero(&fconf, sizeof(fconf));
    ngx_str_set(&fconf.url, "redis://fuzz");
    fconf.addrs = &faddr;
    fconf.naddrs = 1;
    fconf.db = db ? 3 : -1;
    fconf.connect_timeout = 1000;
    fconf.command_timeout = 1000;

    if (auth) {
        ngx_str_set(&fconf.password, "secret");
    }

    fstate_up = 0;
    fconnects = 0;

    frc = ngx_chat_redis_create(&fconf, &flog, on_state, on_message, NULL);
    ASSERT(frc != NULL);

    fire_reconnect();
}


static void
stop(void)
{
    if (frc) {
        ngx_chat_redis_destroy(frc);
        frc = NULL;
        fc = NULL;
    }

    run_posted();

    ASSERT(ngx_event_timer_rbtree.root == ngx_event_timer_rbtree.sentinel);
    ASSERT(ngx_queue_empty(&ngx_posted_events));
}


/* raw bytes from the "server" */

static void
raw(const u_char *data, size_t size)
{
    u_char      op, *copy;
    size_t      n;

    fclosed = 0;
    fstalled = 0;

    start(data[0] & 1, data[0] & 2);
    data++;
    size--;

    while (size >= 2 && frc) {
        op = data[0];
        n = ngx_min((size_t) data[1], size - 2);
        data += 2;
        size -= 2;

        /* an exactly sized copy: ASan sees any overread */

        copy = malloc(n ? n : 1);
        ASSERT(copy != NULL);
        ngx_memcpy(copy, data, n);
        data += n;
        size -= n;

        switch (op % 7) {

        case 0:
            server_sends(copy, n, (op / 7) % 7 * 3 + 1);
            break;

        case 1:
            command(copy, n, NULL);
            break;

        case 2:
            fire_timeout();
            break;

        case 3:
            fire_reconnect();
            break;

        case 4:
            ngx_chat_redis_destroy(frc);
            frc = NULL;
            fc = NULL;
            break;

        case 5:
            if (fc) {
                fclosed = 1;
                fc->read->ready = 1;
                fc->read->handler(fc->read);
                run_posted();
                fclosed = 0;
            }

            break;

        default:
            fstalled = !fstalled;

            if (!fstalled && fc) {
                fc->write->ready = 1;
                fc->write->handler(fc->write);
                run_posted();
            }
        }

        free(copy);
    }

    stop();
}


/* model: RESP written by the harness */

typedef struct {
    u_char     *buf;
    size_t      len;
    size_t      cap;
} fout_t;


static void
out_add(fout_t *o, const void *p, size_t len)
{
    if (len == 0) {
        return;
    }

    if (o->len + len > o->cap) {
        o->cap = ngx_max(o->cap * 2, o->len + len + 256);
        o->buf = realloc(o->buf, o->cap);
        ASSERT(o->buf != NULL);
    }

    ngx_memcpy(o->buf + o->len, p, len);
    o->len += len;
}


static void
out_fmt(fout_t *o, char type, long long n)
{
    char  line[64];
    int   len;

    len = snprintf(line, sizeof(line), "%c%lld\r\n", type, n);
    out_add(o, line, len);
}


static void
out_bulk(fout_t *o, ngx_str_t *s)
{
    out_fmt(o, '$', (long long) s->len);
    out_add(o, s->data, s->len);
    out_add(o, "\r\n", 2);
}


static void
out_cstr(fout_t *o, const char *s)
{
    ngx_str_t  str;

    str.data = (u_char *) s;
    str.len = ngx_strlen(s);
    out_bulk(o, &str);
}


/* a string of the input: a length byte, then the bytes */

static ngx_uint_t
take(const u_char **data, size_t *size, ngx_str_t *s, size_t max)
{
    size_t  n;

    if (*size == 0) {
        return 0;
    }

    n = ngx_min((size_t) (*data)[0] % (max + 1), *size - 1);
    s->data = (u_char *) *data + 1;
    s->len = n;
    *data += n + 1;
    *size -= n + 1;

    return 1;
}


static void
model(const u_char *data, size_t size)
{
    u_char       kind, *copy;
    size_t       i, k, chunks;
    fout_t       out;
    fitem_t     *it;
    ngx_str_t    chan, tag;
    ngx_uint_t   sub, queued;
    const char  *argv[2];

    static char  mark[1];

    fmodel = 1;
    sub = data[0] & 0x40;

    /* the first bytes are chunk sizes */

    chunks = ngx_min((size_t) (data[0] & 0x3f), size - 1);
    copy = malloc(chunks ? chunks : 1);
    ASSERT(copy != NULL);
    ngx_memcpy(copy, data + 1, chunks);
    data += 1 + chunks;
    size -= 1 + chunks;

    ngx_memzero(&out, sizeof(out));
    fnexpect = 0;
    fgot = 0;
    queued = 0;

    start(0, 0);
    ASSERT(fstate_up == 1);

    if (sub) {
        argv[0] = "SUBSCRIBE";
        argv[1] = "c";
        ASSERT(ngx_chat_redis_command(frc, on_reply, NULL, 2, argv, NULL)
               == NGX_OK);
        run_posted();

        out_fmt(&out, '*', 3);
        out_cstr(&out, "subscribe");
        out_cstr(&out, "c");
        out_fmt(&out, ':', 1);
    }

    while (size && fnexpect < MAX_ITEMS) {
        kind = data[0];
        data++;
        size--;

        it = &fexpect[fnexpect];
        ngx_memzero(it, sizeof(fitem_t));

        if (sub && kind % 4 != 3) {

            /* a push: "message" or "pmessage" */

            if (!take(&data, &size, &chan, 255)
                || !take(&data, &size, &it->str[1], 255))
            {
                break;
            }

            it->type = -1;
            it->str[0] = chan;
            it->pattern = kind & 1;

            out_fmt(&out, '*', it->pattern ? 4 : 3);
            out_cstr(&out, it->pattern ? "pmessage" : "message");

            if (it->pattern) {
                out_cstr(&out, "c*");
            }

            out_bulk(&out, &chan);
            out_bulk(&out, &it->str[1]);
            fnexpect++;
            continue;
        }

        /* a command and its reply */

        argv[0] = sub ? "PING" : "GET";

        if (ngx_chat_redis_command(frc, on_reply, mark, 1, argv, NULL)
            != NGX_OK)
        {
            break;
        }

        queued++;

        if (sub) {
            it->type = REDIS_REPLY_STATUS;
            ngx_str_set(&it->str[0], "PONG");
            out_add(&out, "+PONG\r\n", 7);
            fnexpect++;
            continue;
        }

        switch (kind % 6) {

        case 0:
        case 1:
            it->type = REDIS_REPLY_ARRAY;
            it->n = (kind >> 3) % MAX_ARGS;
            out_fmt(&out, '*', (long long) it->n);

            for (k = 0; k < it->n; k++) {
                if (!take(&data, &size, &it->str[k], 255)) {
                    ngx_str_null(&it->str[k]);
                }

                it->nil[k] = (it->str[k].len == 1
                              && it->str[k].data[0] == 0xff);

                if (it->nil[k]) {
                    out_add(&out, "$-1\r\n", 5);

                } else {
                    out_bulk(&out, &it->str[k]);
                }
            }

            break;

        case 2:
            it->type = REDIS_REPLY_STRING;
            if (!take(&data, &size, &it->str[0], 255)) {
                ngx_str_null(&it->str[0]);
            }

            out_bulk(&out, &it->str[0]);
            break;

        case 3:
            it->type = REDIS_REPLY_INTEGER;
            it->integer = (long long) (kind >> 3) * 1000003 - 5000;
            out_fmt(&out, ':', it->integer);
            break;

        case 4:
        case 5:
            /* a status or error line: no CR or LF in it */
            it->type = (kind % 6 == 4) ? REDIS_REPLY_STATUS
                                       : REDIS_REPLY_ERROR;
            if (!take(&data, &size, &tag, 64)) {
                ngx_str_null(&tag);
            }

            for (i = 0; i < tag.len; i++) {
                if (tag.data[i] == '\r' || tag.data[i] == '\n') {
                    tag.len = i;
                    break;
                }
            }

            it->str[0] = tag;
            out_add(&out, it->type == REDIS_REPLY_STATUS ? "+" : "-", 1);
            out_add(&out, tag.data, tag.len);
            out_add(&out, "\r\n", 2);
            break;
        }

        fnexpect++;
    }

    fchunks = copy;
    fchunks_len = chunks;

    server_sends(out.buf, out.len, 4096);

    /* everything dispatched, exactly, and the connection still up */

    ASSERT(fgot == fnexpect);

    if (getenv("REDIS_FUZZ_LOG")) {
        fprintf(stderr, "model: %u items dispatched as expected\n",
                (unsigned) fgot);
    }
    ASSERT(frc->connection != NULL && fstate_up == 1);
    ASSERT(ngx_queue_empty(&frc->pending));

    if (sub) {
        ASSERT(frc->channels == 1 && frc->subscribing == 0);
    }

    (void) queued;

    free(out.buf);
    free(copy);
    fchunks = NULL;
    fchunks_len = 0;

    stop();
    fmodel = 0;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    flog.log_level = NGX_LOG_DEBUG_ALL | NGX_LOG_DEBUG;

    ngx_fuzz_runtime_init(&flog);

    fcycle.log = &flog;
    ngx_cycle = &fcycle;

    fsin.sin_family = AF_INET;
    fsin.sin_port = htons(6379);
    fsin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    faddr.sockaddr = (struct sockaddr *) &fsin;
    faddr.socklen = sizeof(fsin);
    ngx_str_set(&faddr.name, "127.0.0.1:6379");

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }

    ngx_current_msec = 1000000;
    ngx_fuzz_fail_alloc(0);
    fclosed = 0;
    fstalled = 0;

    if (data[0] & 0x80) {
        model(data, size);

    } else {
        raw(data, size);
    }

    return 0;
}
