
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The chat protocol: the content handler (upgrade, then the session), the
 * requests and the history merge.  Each client text message is one JSON
 * object, parsed with jansson (Debian's libjansson), which also refuses
 * U+0000 and lone surrogate escapes in strings; a flat "send" is read in
 * place (ngx_chat_jflat.h).  Replies come from the wire format
 * (ngx_chat_wire.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_chat.h"
#include "ngx_chat_jflat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_proto.h"


typedef struct {
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_fanout_t         *fo;
    ngx_chat_member_t        **rooms;     /* &room1, or malloc()ed beyond
                                             one room */
    ngx_chat_member_t         *room1;
    ngx_uint_t                 nrooms;
    ngx_uint_t                 cap;
    ngx_queue_t                stored;    /* messages waiting for COMMIT */
    ngx_queue_t                reads;     /* history read from storage, in
                                             order; the first in flight */
    ngx_uint_t                 nreads;
    ngx_chat_rate_t            requests;  /* chat_request_rate */
} ngx_chat_proto_session_t;


/* where a stored row came among other servers' on its server */
typedef struct {
    uint64_t                   prior;     /* 0: not known */
    ngx_str_t                  holes;
} ngx_chat_proto_place_t;


/* a history reply that storage answers */
typedef struct {
    ngx_queue_t                queue;     /* in the session's reads */
    ngx_chat_proto_session_t  *s;         /* NULL: the connection is gone */
    ngx_chat_ws_t             *ws;
    ngx_chat_member_t         *m;         /* a join's held member; NULL
                                             when it left meanwhile */
    ngx_uint_t                 mode;
    ngx_uint_t                 limit;
    ngx_uint_t                 join;
    ngx_uint_t                 inflight;
    ngx_uint_t                 unstored;  /* messages it cannot see */
    ngx_uint_t                 asked;     /* rows the last read asked */
    ngx_uint_t                 more;      /* storage may have rows older
                                             than those read */
    ngx_uint_t                 found;     /* SINCE, BEFORE: the id is
                                             stored */
    ngx_uint_t                 failed;    /* a read failed or was not
                                             made: not complete */
    ngx_uint_t                 rounds;    /* reads made */
    ngx_uint_t                 overlap;   /* SINCE: messages of the reply
                                             before the id (the merge) */
    u_char                    *pending;   /* the rows the zone will
                                             deliver live, asked before
                                             the bus was read (the reply) */
    ngx_array_t                had;       /* of uint64_t pairs: other
                                             servers' recent messages in
                                             a reply past what the zone
                                             vouches for (the merge) */
    ngx_chat_shm_ring_t       *ring;      /* copied, sorted by id */
    ngx_int_t                 *order;     /* the copy in the order it
                                             came, when not the ids': its
                                             places in the sorted copy */
    u_char                    *defer;     /* by place in the sorted copy:
                                             late history, after what
                                             storage gives (ring_sort()) */
    ngx_array_t                late;      /* of ngx_chat_shm_copy_msg_t:
                                             rows left out to be
                                             delivered now (the merge) */
    ngx_pool_t                *pool;      /* the rows read, the reply */
    ngx_array_t                rows;      /* of ngx_chat_shm_copy_msg_t:
                                             the rows read, newest first */
    ngx_array_t                places;    /* of ngx_chat_proto_place_t,
                                             by row (ngx_chat_proto_
                                             lineage()) */
    ngx_str_t                  room;
    ngx_str_t                  id;
} ngx_chat_proto_read_t;


#define NGX_CHAT_PROTO_FLAT        8
#define NGX_CHAT_PROTO_READ_RETRY  100    /* ms, when reads are queued */
#define NGX_CHAT_PROTO_READ_ROUNDS 4      /* reads for one reply, at most */

/* an ngx_str_t is this literal */
#define ngx_chat_proto_is(t, s)                                              \
    ((t).len == sizeof(s) - 1 && ngx_strncmp((t).data, s, sizeof(s) - 1) == 0)


typedef struct {
    ngx_chat_ws_t             *ws;
    ngx_chat_proto_session_t  *s;
    json_t                    *json;
    /* or, for a flat "send" of plain strings, the members as read */
    ngx_chat_jflat_pair_t     *flat;
    int                        nflat;
    ngx_str_t                  ref;
    ngx_uint_t                 has_ref;
    ngx_str_t                  room;
} ngx_chat_proto_req_t;


static ngx_int_t ngx_chat_proto_open(ngx_chat_ws_t *ws);
static void ngx_chat_proto_message(ngx_chat_ws_t *ws, u_char *data,
    size_t len);
static void ngx_chat_proto_closed(ngx_chat_ws_t *ws);
static void ngx_chat_proto_join(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_leave(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_send(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_history(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_who(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_refresh(ngx_chat_proto_req_t *rq);
typedef void (*ngx_chat_proto_request_pt)(ngx_chat_proto_req_t *rq);

static ngx_chat_proto_request_pt ngx_chat_proto_request(ngx_str_t *type);
static ngx_uint_t ngx_chat_proto_limited(ngx_chat_proto_req_t *rq);
static void ngx_chat_proto_refuse(ngx_chat_proto_req_t *rq, char *message);
static json_t *ngx_chat_proto_parse(ngx_chat_ws_t *ws, u_char *data,
    size_t len);
static ngx_uint_t ngx_chat_proto_bad_strings(json_t *json);
static ngx_int_t ngx_chat_proto_string(ngx_chat_proto_req_t *rq,
    const char *key, ngx_str_t *value, ngx_uint_t required);
static ngx_int_t ngx_chat_proto_find(ngx_chat_proto_session_t *s,
    ngx_str_t *room);
static void ngx_chat_proto_error(ngx_chat_proto_req_t *rq, char *code,
    char *message, ngx_int_t retry_ms);
static void ngx_chat_proto_stored(ngx_chat_store_item_t *it);
static void ngx_chat_proto_read(ngx_chat_ws_t *ws, ngx_str_t *room,
    ngx_uint_t mode, ngx_str_t *id, ngx_uint_t limit, ngx_chat_member_t *m);
static void ngx_chat_proto_read_next(ngx_chat_proto_session_t *s);
static void ngx_chat_proto_forget_member(ngx_chat_proto_session_t *s,
    ngx_chat_member_t *m);
static void ngx_chat_proto_read_free(ngx_chat_proto_read_t *rd);
static void ngx_chat_proto_read_reply(ngx_chat_proto_read_t *rd);
static void ngx_chat_proto_read_done(ngx_chat_store_rows_t *rows,
    void *data);
static ngx_int_t ngx_chat_proto_read_rows(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows);
static u_char *ngx_chat_proto_read_pending(ngx_chat_proto_read_t *rd);
static ngx_int_t ngx_chat_proto_had(ngx_chat_proto_read_t *rd, ngx_str_t *id,
    uint64_t recent);
static void ngx_chat_proto_read_late(ngx_chat_proto_read_t *rd);
static ngx_chat_buf_t *ngx_chat_proto_read_frame(ngx_chat_proto_read_t *rd,
    ngx_chat_member_t *m);
static uint64_t ngx_chat_proto_id_num(ngx_str_t *id);
static ngx_int_t ngx_chat_proto_merge(ngx_chat_proto_read_t *rd,
    ngx_chat_member_t *m, ngx_array_t *msgs, ngx_uint_t *window);
static ngx_int_t ngx_chat_proto_id_cmp(ngx_str_t *a, ngx_str_t *b);
static int ngx_chat_proto_msg_cmp(const void *a, const void *b);
static int ngx_chat_proto_idp_cmp(const void *a, const void *b);
static ngx_uint_t ngx_chat_proto_own(ngx_chat_proto_read_t *rd,
    ngx_str_t *id);
static void ngx_chat_proto_ring_sort(ngx_chat_proto_read_t *rd);
static ngx_int_t ngx_chat_proto_ring_find(ngx_chat_shm_ring_t *ring,
    ngx_str_t *id);
static ngx_uint_t ngx_chat_proto_ring_has(ngx_str_t *id, void *data);
static ngx_uint_t ngx_chat_proto_held(ngx_str_t **held, ngx_uint_t n,
    ngx_str_t *id);
static void ngx_chat_proto_lineage(ngx_chat_proto_read_t *rd,
    ngx_str_t *msgs, ngx_uint_t *stored, ngx_uint_t *slots, ngx_uint_t n);
static void ngx_chat_proto_ring_order(ngx_chat_proto_read_t *rd,
    ngx_str_t *msgs, u_char *used, ngx_uint_t *slots, ngx_uint_t nslots);
static u_char *ngx_chat_proto_ring_late(ngx_chat_proto_read_t *rd,
    ngx_str_t *id);
static void ngx_chat_proto_send_frame(ngx_chat_ws_t *ws, ngx_chat_buf_t *b,
    ngx_uint_t reply);


ngx_int_t
ngx_chat_proto_handler(ngx_http_request_t *r)
{
    ngx_int_t       rc;
    ngx_chat_ws_t  *ws;

    ws = ngx_chat_ws_upgrade(r, sizeof(ngx_chat_proto_session_t), &rc);
    if (ws == NULL) {
        return rc;
    }

    rc = ngx_chat_proto_open(ws);

    if (rc != NGX_OK) {
        ngx_chat_ws_abort(ws);
        return rc == NGX_ERROR ? NGX_HTTP_INTERNAL_SERVER_ERROR : rc;
    }

    return ngx_chat_ws_start(ws);
}


/* the session: ws->message and ws->closed, and the welcome frame */

static ngx_int_t
ngx_chat_proto_open(ngx_chat_ws_t *ws)
{
    ngx_chat_buf_t            *b;
    ngx_chat_fanout_t         *fo;
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_proto_session_t  *s;

    ctx = ws->conf->zone->data;

    fo = ngx_chat_fanout_get(ctx);
    if (fo == NULL) {
        /* this worker could not attach to the zone */
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    s = ws->data;            /* zeroed, with the connection's state */

    s->ctx = ctx;
    s->fo = fo;
    s->rooms = &s->room1;
    s->cap = 1;
    ngx_queue_init(&s->stored);
    ngx_queue_init(&s->reads);

    b = ngx_chat_wire_welcome(&ws->user, ws->connection->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (ngx_chat_shm_connect(ctx, &ws->user) != NGX_OK) {
        ngx_chat_buf_release(b);
        ngx_log_error(NGX_LOG_ERR, ws->connection->log, 0,
                      "chat: zone \"%V\" is full, connection refused",
                      &ctx->name);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ws->data = s;
    ws->message = ngx_chat_proto_message;
    ws->closed = ngx_chat_proto_closed;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat proto: session of \"%V\" on zone \"%V\"",
                   &ws->user, &ctx->name);

    ngx_chat_proto_send_frame(ws, b, 0);

    return NGX_OK;
}


static void
ngx_chat_proto_closed(ngx_chat_ws_t *ws)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_chat_proto_read_t     *rd;
    ngx_chat_member_t         *m;
    ngx_chat_proto_session_t  *s;

    s = ws->data;

    /* the read in flight is freed when it completes, the others now */

    while (!ngx_queue_empty(&s->reads)) {
        q = ngx_queue_head(&s->reads);
        ngx_queue_remove(q);
        rd = ngx_queue_data(q, ngx_chat_proto_read_t, queue);

        if (rd->inflight) {
            rd->s = NULL;
            continue;
        }

        ngx_chat_proto_read_free(rd);
    }

    s->nreads = 0;

    /* stored later all the same; only the acks have nobody to go to */

    while (!ngx_queue_empty(&s->stored)) {
        q = ngx_queue_head(&s->stored);
        ngx_queue_remove(q);
        ngx_chat_store_forget(ngx_queue_data(q, ngx_chat_store_item_t,
                                             owner));
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat proto: \"%V\" closed, in %ui rooms", &ws->user,
                   s->nrooms);

    for (i = 0; i < s->nrooms; i++) {
        m = s->rooms[i];
        ngx_chat_shm_leave(s->ctx, &m->room->name, &ws->user);
        ngx_chat_fanout_remove(s->fo, m);
    }

    s->nrooms = 0;

    if (s->rooms != &s->room1) {
        ngx_free(s->rooms);
        s->rooms = &s->room1;
        s->cap = 1;
    }

    ngx_chat_shm_disconnect(s->ctx, &ws->user);
    ngx_chat_fanout_publish(s->fo);
}


static void
ngx_chat_proto_message(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    int                     n;
    json_t                 *type;
    ngx_str_t                   t;
    ngx_chat_proto_req_t        rq;
    ngx_chat_jflat_pair_t       flat[NGX_CHAT_PROTO_FLAT], *v;
    ngx_chat_proto_request_pt   handler;

    ngx_memzero(&rq, sizeof(ngx_chat_proto_req_t));

    rq.ws = ws;
    rq.s = ws->data;

    /*
     * a "send", "join" or "leave" of plain strings is read in place (see
     * ngx_chat_jflat.h): a join was parsed by jansson at some 6,900
     * instructions, more than the join itself costs (callgrind, LOAD=idle
     * bench/callgrind); everything else, and anything the scanner
     * declines, goes to jansson
     */

    n = ngx_chat_jflat_parse(data, len, flat, NGX_CHAT_PROTO_FLAT);

    if (n > 0) {
        v = ngx_chat_jflat_get(flat, n, "type", sizeof("type") - 1);

        t.data = (u_char *) (v ? v->value : NULL);
        t.len = v ? v->value_len : 0;

        if (ngx_chat_proto_is(t, "send") || ngx_chat_proto_is(t, "join")
            || ngx_chat_proto_is(t, "leave"))
        {
            rq.flat = flat;
            rq.nflat = n;
        }
    }

    if (rq.flat == NULL) {
        rq.json = ngx_chat_proto_parse(ws, data, len);

        if (rq.json == NULL || !json_is_object(rq.json)) {
            ngx_chat_proto_refuse(&rq, "not a JSON object");
            goto done;
        }
    }

    switch (ngx_chat_proto_string(&rq, "ref", &rq.ref, 0)) {
    case NGX_OK:
        rq.has_ref = 1;

        if (ngx_strlchr(rq.ref.data, rq.ref.data + rq.ref.len, '\0')) {
            rq.has_ref = 0;
            ngx_chat_proto_refuse(&rq, "U+0000 and lone surrogates are not "
                                       "allowed");
            goto done;
        }

        break;
    case NGX_ERROR:
        ngx_chat_proto_refuse(&rq, "\"ref\" must be a string");
        goto done;
    default:
        break;
    }

    if (rq.flat) {
        /* "send", "join" or "leave", from the input */

    } else {
        type = json_object_get(rq.json, "type");

        if (!json_is_string(type)) {
            ngx_chat_proto_refuse(&rq, "\"type\" must be a string");
            goto done;
        }

        /* as C strings: a type holding U+0000 is no known type */
        t.data = (u_char *) json_string_value(type);
        t.len = ngx_strlen(t.data);
    }

    handler = ngx_chat_proto_request(&t);

    if (handler == NULL) {
        ngx_chat_proto_refuse(&rq, "unknown \"type\"");
        goto done;
    }

    /* send has chat_rate, per user, in the zone; the rest, this */

    if (handler != ngx_chat_proto_send && ngx_chat_proto_limited(&rq)) {
        goto done;
    }

    if (handler == ngx_chat_proto_refresh) {
        /* the one request without a room */
        handler(&rq);
        goto done;
    }

    if (ngx_chat_proto_string(&rq, "room", &rq.room, 1) != NGX_OK) {
        ngx_chat_proto_error(&rq, "bad_request", "\"room\" must be a string",
                             -1);
        goto done;
    }

    /* plain strings (rq.flat) hold neither: no escapes, valid UTF-8 */

    if (rq.json && ngx_chat_proto_bad_strings(rq.json)) {
        ngx_chat_proto_error(&rq, "bad_request",
                             "U+0000 and lone surrogates are not allowed",
                             -1);
        goto done;
    }

    if (rq.room.len == 0 || rq.room.len > NGX_CHAT_MAX_ROOM_NAME) {
        ngx_chat_proto_error(&rq, "bad_request",
                             "\"room\" must be 1 to 128 bytes", -1);
        goto done;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat proto: \"%V\" request for \"%V\"", &t, &rq.room);

    handler(&rq);

done:

    if (rq.json) {
        json_decref(rq.json);
    }
}


static ngx_chat_proto_request_pt
ngx_chat_proto_request(ngx_str_t *type)
{
    if (ngx_chat_proto_is(*type, "send")) {
        return ngx_chat_proto_send;
    }

    if (ngx_chat_proto_is(*type, "join")) {
        return ngx_chat_proto_join;
    }

    if (ngx_chat_proto_is(*type, "leave")) {
        return ngx_chat_proto_leave;
    }

    if (ngx_chat_proto_is(*type, "history")) {
        return ngx_chat_proto_history;
    }

    if (ngx_chat_proto_is(*type, "who")) {
        return ngx_chat_proto_who;
    }

    if (ngx_chat_proto_is(*type, "refresh")) {
        return ngx_chat_proto_refresh;
    }

    return NULL;
}


/*
 * chat_request_rate, per connection, for every request but "send"
 * (malformed ones too): refused with rate_limited and no effect
 */

static ngx_uint_t
ngx_chat_proto_limited(ngx_chat_proto_req_t *rq)
{
    ngx_msec_t             retry;
    ngx_chat_rate_conf_t  *rcf;

    rcf = &rq->ws->conf->request_rate;

    if (rcf->rate == 0
        || ngx_chat_rate_take(&rq->s->requests, ngx_current_msec, rcf->rate,
                              rcf->burst, &retry)
           == NGX_OK)
    {
        return 0;
    }

    ngx_chat_proto_error(rq, "rate_limited", "too many requests",
                         (ngx_int_t) retry);

    return 1;
}


/* a malformed request: bad_request, unless over chat_request_rate */

static void
ngx_chat_proto_refuse(ngx_chat_proto_req_t *rq, char *message)
{
    if (!ngx_chat_proto_limited(rq)) {
        ngx_chat_proto_error(rq, "bad_request", message, -1);
    }
}


/*
 * jansson refuses a lone surrogate escape ("\ud800") by failing the whole
 * document, which would lose the "ref" the error must echo.  So U+0000 is
 * let through (JSON_ALLOW_NUL) and, when parsing failed, surrogate escapes
 * are turned into \u0000 (the same length) and the text parsed again: the
 * request is then refused for its bad string, with its ref.
 */

static json_t *
ngx_chat_proto_parse(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    u_char        *copy, *p, *last;
    json_t        *json;
    ngx_uint_t     found;
    json_error_t   err;

    json = json_loadb((const char *) data, len, JSON_ALLOW_NUL, &err);

    if (json) {
        return json;
    }

    copy = ngx_alloc(len, ws->connection->log);
    if (copy == NULL) {
        return NULL;
    }

    ngx_memcpy(copy, data, len);

    found = 0;
    last = copy + len;

    for (p = copy; p < last; p++) {

        if (*p != '\\' || p + 1 == last) {
            continue;
        }

        p++;

        if (*p == 'u' && last - p >= 5
            && (p[1] == 'd' || p[1] == 'D')
            && ((p[2] >= '8' && p[2] <= '9')
                || (p[2] >= 'a' && p[2] <= 'f')
                || (p[2] >= 'A' && p[2] <= 'F')))
        {
            ngx_memcpy(p + 1, "0000", 4);
            found = 1;
        }
    }

    json = found ? json_loadb((const char *) copy, len, JSON_ALLOW_NUL, &err)
                 : NULL;

    ngx_free(copy);

    return json;
}


/* a string value anywhere at the top level holds U+0000 */

static ngx_uint_t
ngx_chat_proto_bad_strings(json_t *json)
{
    json_t      *v;
    const char  *key;

    json_object_foreach(json, key, v) {
        if (json_is_string(v)
            && ngx_strlchr((u_char *) json_string_value(v),
                           (u_char *) json_string_value(v)
                           + json_string_length(v), '\0'))
        {
            return 1;
        }
    }

    return 0;
}


/* NGX_OK: a string; NGX_DECLINED: absent (and not required); NGX_ERROR */

static ngx_int_t
ngx_chat_proto_string(ngx_chat_proto_req_t *rq, const char *key,
    ngx_str_t *value, ngx_uint_t required)
{
    json_t                 *v;
    ngx_chat_jflat_pair_t  *f;

    if (rq->flat) {
        f = ngx_chat_jflat_get(rq->flat, rq->nflat, key, ngx_strlen(key));

        if (f == NULL) {
            return required ? NGX_ERROR : NGX_DECLINED;
        }

        value->data = (u_char *) f->value;
        value->len = f->value_len;

        return NGX_OK;
    }

    v = json_object_get(rq->json, key);

    if (v == NULL) {
        return required ? NGX_ERROR : NGX_DECLINED;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) json_string_value(v);
    value->len = json_string_length(v);

    return NGX_OK;
}


static ngx_int_t
ngx_chat_proto_find(ngx_chat_proto_session_t *s, ngx_str_t *room)
{
    ngx_uint_t          i;
    ngx_chat_member_t  *m;

    for (i = 0; i < s->nrooms; i++) {
        m = s->rooms[i];

        if (m->room->name.len == room->len
            && ngx_memcmp(m->room->name.data, room->data, room->len) == 0)
        {
            return i;
        }
    }

    return -1;
}


static void
ngx_chat_proto_join(ngx_chat_proto_req_t *rq)
{
    json_t                    *h;
    ngx_int_t                  history, rc;
    ngx_str_t                  since, *sincep;
    ngx_uint_t                 n;
    ngx_chat_ws_t             *ws;
    ngx_chat_member_t         *m, **rooms;
    ngx_chat_shm_join_t        res;
    ngx_chat_proto_session_t  *s;

    ws = rq->ws;
    s = rq->s;

    if (!ngx_chat_jwt_room_allowed(ws->jwt, &rq->room)) {
        /* SPEC 10: the token's rooms claim does not cover it */
        ngx_chat_proto_error(rq, "forbidden",
                             "the token does not allow this room", -1);
        return;
    }

    history = -1;

    if (rq->flat) {
        /* a plain string: jansson's path would refuse it the same way */
        h = NULL;

        if (ngx_chat_jflat_get(rq->flat, rq->nflat, "history",
                               sizeof("history") - 1))
        {
            ngx_chat_proto_error(rq, "bad_request",
                                 "\"history\" must be a non-negative integer",
                                 -1);
            return;
        }

    } else {
        h = json_object_get(rq->json, "history");
    }

    if (h) {
        if (!json_is_integer(h) || json_integer_value(h) < 0) {
            ngx_chat_proto_error(rq, "bad_request",
                                 "\"history\" must be a non-negative integer",
                                 -1);
            return;
        }

        history = (ngx_int_t) ngx_min(json_integer_value(h),
                                      NGX_CHAT_MAX_HISTORY);
    }

    sincep = NULL;

    switch (ngx_chat_proto_string(rq, "since", &since, 0)) {
    case NGX_OK:
        sincep = &since;
        break;
    case NGX_ERROR:
        ngx_chat_proto_error(rq, "bad_request", "\"since\" must be a string",
                             -1);
        return;
    default:
        break;
    }

    if (ngx_chat_proto_find(s, &rq->room) >= 0) {
        /* already a member: joined again, no presence, no replay */
        ngx_chat_proto_send_frame(ws,
            ngx_chat_wire_joined(&rq->room,
                                 ngx_chat_shm_members(s->ctx, &rq->room),
                                 ws->connection->log), 0);
        return;
    }

    if (s->nrooms >= ws->conf->max_rooms) {
        ngx_chat_proto_error(rq, "too_many_rooms",
                             "too many rooms on this connection", -1);
        return;
    }

    if (s->nrooms == s->cap) {
        n = (s->cap == 1) ? 4 : s->cap * 2;

        rooms = ngx_alloc(n * sizeof(ngx_chat_member_t *),
                          ws->connection->log);
        if (rooms == NULL) {
            ngx_chat_proto_error(rq, "unavailable", "out of memory", -1);
            return;
        }

        ngx_memcpy(rooms, s->rooms, s->nrooms * sizeof(ngx_chat_member_t *));

        if (s->rooms != &s->room1) {
            ngx_free(s->rooms);
        }

        s->rooms = rooms;
        s->cap = n;
    }

    rc = ngx_chat_shm_join(s->ctx, &rq->room, &ws->user, ws->conf->history,
                           history, sincep, &res, ws->connection->log);

    if (rc != NGX_OK) {
        ngx_chat_proto_error(rq, "unavailable",
                             "the chat zone is full, try again later", -1);
        ngx_chat_fanout_publish(s->fo);
        return;
    }

    m = ngx_chat_fanout_add(s->fo, &rq->room, res.room, ws, res.bus_pos);
    if (m == NULL) {
        if (res.history) {
            ngx_chat_buf_release(res.history);
        }

        ngx_chat_shm_leave(s->ctx, &rq->room, &ws->user);
        ngx_chat_proto_error(rq, "unavailable", "out of memory", -1);
        ngx_chat_fanout_publish(s->fo);
        return;
    }

    s->rooms[s->nrooms++] = m;

    /*
     * a since this zone cannot vouch for (numbered before the follow: had
     * on another server, or here before a restart): what its server sent
     * up to it the member had, in its order, a late one too.  A since of
     * ours is not: a late message is one the zone did not deliver before
     */

    if (res.blind
        && ngx_chat_remote_id_parse(sincep, &m->since_num, &m->since_tag)
           != NGX_OK)
    {
        m->since_num = 0;
        m->since_tag = 0;
    }

    ngx_chat_proto_send_frame(ws, ngx_chat_wire_joined(&rq->room,
                                                       res.members,
                                                       ws->connection->log),
                              0);

    if (res.history) {
        ngx_chat_proto_send_frame(ws, res.history, 1);

    } else if (res.storage) {
        /* live messages wait until the history from storage is out */
        m->hold = 1;

        ngx_chat_proto_read(ws, &rq->room,
                            sincep ? NGX_CHAT_STORE_SINCE
                                   : NGX_CHAT_STORE_LAST,
                            sincep, sincep ? NGX_CHAT_MAX_HISTORY + 1
                                           : (ngx_uint_t) history,
                            m);
    }

    ngx_chat_fanout_publish(s->fo);
}


static void
ngx_chat_proto_leave(ngx_chat_proto_req_t *rq)
{
    ngx_int_t                  i;
    ngx_chat_ws_t             *ws;
    ngx_chat_member_t         *m;
    ngx_chat_proto_session_t  *s;

    ws = rq->ws;
    s = rq->s;

    i = ngx_chat_proto_find(s, &rq->room);

    if (i < 0) {
        ngx_chat_proto_error(rq, "not_member", "not a member of this room",
                             -1);
        return;
    }

    m = s->rooms[i];
    s->rooms[i] = s->rooms[--s->nrooms];

    if (s->nrooms <= 1 && s->rooms != &s->room1) {
        /* back to one room: the array goes */
        s->room1 = s->nrooms ? s->rooms[0] : NULL;
        ngx_free(s->rooms);
        s->rooms = &s->room1;
        s->cap = 1;
    }

    ngx_chat_proto_forget_member(s, m);
    ngx_chat_fanout_remove(s->fo, m);
    ngx_chat_shm_leave(s->ctx, &rq->room, &ws->user);

    ngx_chat_proto_send_frame(ws, ngx_chat_wire_left(&rq->room,
                                                     ws->connection->log),
                              0);

    ngx_chat_fanout_publish(s->fo);
}


static void
ngx_chat_proto_send(ngx_chat_proto_req_t *rq)
{
    u_char                     idbuf[NGX_CHAT_ID_LEN];
    uint64_t                   ts, accepted;
    ngx_int_t                  rc, i;
    ngx_str_t                  content, id, holes;
    ngx_msec_t                 retry;
    ngx_chat_ws_t             *ws;
    ngx_chat_shm_place_t       place;
    ngx_chat_store_item_t     *it;
    ngx_chat_proto_session_t  *s;

    ws = rq->ws;
    s = rq->s;

    if (ngx_chat_proto_string(rq, "content", &content, 1) != NGX_OK) {
        ngx_chat_proto_error(rq, "bad_request",
                             "\"content\" must be a string", -1);
        return;
    }

    i = ngx_chat_proto_find(s, &rq->room);

    if (i < 0) {
        ngx_chat_proto_error(rq, "not_member", "not a member of this room",
                             -1);
        return;
    }

    if (ngx_chat_store_enabled() && ngx_chat_store_full()) {
        /* nothing is delivered that could not be stored */
        ngx_chat_proto_error(rq, "unavailable",
                             "storage is behind, try again later", -1);
        return;
    }

    id.data = idbuf;

    rc = ngx_chat_shm_post(s->ctx, &rq->room, s->rooms[i]->room->shm_room,
                           &ws->user, &content, ws->conf->rate.rate,
                           ws->conf->rate.burst, &id, &ts, &place, &retry,
                           ws->connection->log);

    if (rc == NGX_BUSY) {
        ngx_chat_proto_error(rq, "rate_limited", "too many messages",
                             (ngx_int_t) retry);
        return;
    }

    if (rc != NGX_OK) {
        ngx_chat_proto_error(rq, "unavailable",
                             "the message could not be stored, try again",
                             -1);
        return;
    }

    /* accepted: the ack latency (with storage) counts from here */

    accepted = ngx_chat_store_enabled() ? ngx_chat_bus_clock() : 0;

    /* the room gets the message first, the sender included, then the ack */

    ngx_chat_fanout_publish(s->fo);

    if (!ngx_chat_store_enabled()) {
        ngx_chat_proto_send_frame(ws,
            ngx_chat_wire_ack(rq->has_ref ? &rq->ref : NULL, &id,
                              ws->connection->log), 0);
        return;
    }

    /* with storage, the ack waits for the COMMIT */

    holes.data = place.holes;
    holes.len = place.holes_len;

    it = ngx_chat_store_add(&id, &s->ctx->name, &rq->room, &ws->user,
                            &content, ts, rq->has_ref ? &rq->ref : NULL,
                            place.prior, &holes);
    if (it == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ws->connection->log, 0,
                      "chat: message %V delivered but not queued for "
                      "storage", &id);
        return;
    }

    it->done = ngx_chat_proto_stored;
    it->data = ws;
    it->accepted = accepted;
    ngx_queue_insert_tail(&s->stored, &it->owner);
}


static void
ngx_chat_proto_stored(ngx_chat_store_item_t *it)
{
    uint64_t        now;
    ngx_chat_ws_t  *ws;

    ws = it->data;

    ngx_queue_remove(&it->owner);

    if (it->refused) {

        /* delivered live already, but not stored: no ack, ever */

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                       "chat proto: %V refused by storage", &it->id);

        ngx_chat_shm_count_error(ws->conf->zone->data, "unavailable");

        ngx_chat_proto_send_frame(ws,
            ngx_chat_wire_error("unavailable",
                                "the message could not be stored",
                                it->has_ref ? &it->ref : NULL, -1,
                                ws->connection->log), 0);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat proto: %V stored, ack", &it->id);

    ngx_chat_proto_send_frame(ws,
        ngx_chat_wire_ack(it->has_ref ? &it->ref : NULL, &it->id,
                          ws->connection->log), 0);

    now = ngx_chat_bus_clock();

    ngx_chat_shm_observe(ws->conf->zone->data, NGX_CHAT_SHM_ACK,
                         now > it->accepted ? now - it->accepted : 0);
}


/*
 * {"type":"refresh","token":T} (SPEC 10): a valid token for the same sub
 * replaces the connection's, and with it its exp and rooms claim
 */

static void
ngx_chat_proto_refresh(ngx_chat_proto_req_t *rq)
{
    char            *why;
    ngx_str_t        token;
    ngx_chat_ws_t   *ws;
    ngx_chat_jwt_t  *jwt;

    ws = rq->ws;

    if (ngx_chat_proto_string(rq, "token", &token, 1) != NGX_OK) {
        ngx_chat_proto_error(rq, "bad_request", "\"token\" must be a string",
                             -1);
        return;
    }

    if (ws->jwt == NULL || ws->conf->jwt_key == NULL) {
        ngx_chat_proto_error(rq, "bad_request",
                             "this endpoint takes no tokens", -1);
        return;
    }

    jwt = ngx_chat_jwt_verify(ws->conf->jwt_key, token.data, token.len, &why,
                              ws->connection->log);

    if (jwt == NULL) {
        if (why == NULL) {
            ngx_chat_proto_error(rq, "unavailable", "out of memory", -1);
            return;
        }

        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "chat: refresh token refused: %s", why);
        ngx_chat_proto_error(rq, "forbidden", "token refused", -1);
        return;
    }

    if (jwt->sub.len != ws->user.len
        || ngx_memcmp(jwt->sub.data, ws->user.data, ws->user.len) != 0)
    {
        ngx_chat_jwt_free(jwt);
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "chat: refresh token refused: another \"sub\"");
        ngx_chat_proto_error(rq, "forbidden", "the token is for another user",
                             -1);
        return;
    }

    ngx_chat_ws_set_jwt(ws, jwt);

    ngx_chat_proto_send_frame(ws, ngx_chat_wire_refreshed(jwt->exp,
                                                          ws->connection->log),
                              0);
}


/* {"type":"ack","ref":REF,"id":"ID"} */




static void
ngx_chat_proto_history(ngx_chat_proto_req_t *rq)
{
    json_t                    *l;
    ngx_str_t                  before, *beforep;
    ngx_uint_t                 limit, storage;
    ngx_chat_buf_t            *b;
    ngx_chat_ws_t             *ws;
    ngx_chat_proto_session_t  *s;

    ws = rq->ws;
    s = rq->s;

    limit = 50;
    l = json_object_get(rq->json, "limit");

    if (l) {
        if (!json_is_integer(l) || json_integer_value(l) < 0) {
            ngx_chat_proto_error(rq, "bad_request",
                                 "\"limit\" must be a non-negative integer",
                                 -1);
            return;
        }

        limit = (ngx_uint_t) ngx_min(json_integer_value(l),
                                     NGX_CHAT_MAX_HISTORY);
    }

    beforep = NULL;

    switch (ngx_chat_proto_string(rq, "before", &before, 0)) {
    case NGX_OK:
        beforep = &before;
        break;
    case NGX_ERROR:
        ngx_chat_proto_error(rq, "bad_request", "\"before\" must be a string",
                             -1);
        return;
    default:
        break;
    }

    if (ngx_chat_proto_find(s, &rq->room) < 0) {
        ngx_chat_proto_error(rq, "not_member", "not a member of this room",
                             -1);
        return;
    }

    storage = 0;

    b = ngx_chat_shm_history(s->ctx, &rq->room, limit, beforep, &storage,
                             ws->connection->log);

    if (b == NULL && storage) {

        /* one read in flight per connection, at most chat_max_rooms queued */

        if (s->nreads > ws->conf->max_rooms || ngx_chat_store_reads_full()) {
            ngx_chat_proto_error(rq, "rate_limited",
                                 "too many history reads waiting",
                                 NGX_CHAT_PROTO_READ_RETRY);
            return;
        }

        ngx_chat_proto_read(ws, &rq->room,
                            beforep ? NGX_CHAT_STORE_BEFORE
                                    : NGX_CHAT_STORE_LAST,
                            beforep, limit, NULL);
        return;
    }

    if (b == NULL) {
        ngx_chat_proto_error(rq, "unavailable", "history unavailable", -1);
        return;
    }

    ngx_chat_proto_send_frame(ws, b, 1);
}


/*
 * Queues a history read from storage: one in flight per connection, the
 * others wait in order; m is the member a join holds, released with the
 * reply
 */

static void
ngx_chat_proto_read(ngx_chat_ws_t *ws, ngx_str_t *room, ngx_uint_t mode,
    ngx_str_t *id, ngx_uint_t limit, ngx_chat_member_t *m)
{
    u_char                    *p;
    ngx_chat_proto_read_t     *rd;
    ngx_chat_proto_session_t  *s;

    s = ws->data;

    rd = ngx_alloc(sizeof(ngx_chat_proto_read_t) + room->len
                   + (id ? id->len : 0), ws->connection->log);
    if (rd == NULL) {
        if (m) {
            /* no history, but live messages from now on */
            ngx_chat_fanout_release(s->fo, m);
        }

        return;
    }

    ngx_memzero(rd, sizeof(ngx_chat_proto_read_t));

    rd->s = s;
    rd->ws = ws;
    rd->m = m;
    rd->mode = mode;
    rd->limit = limit;
    rd->join = (m != NULL);

    p = (u_char *) (rd + 1);
    rd->room.data = p;
    rd->room.len = room->len;
    p = ngx_cpymem(p, room->data, room->len);

    rd->id.data = p;
    rd->id.len = id ? id->len : 0;

    if (id) {
        ngx_memcpy(p, id->data, id->len);
    }

    ngx_queue_insert_tail(&s->reads, &rd->queue);
    s->nreads++;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat proto: history of \"%V\" from storage, mode %ui, "
                   "%ui reads", room, mode, s->nreads);

    ngx_chat_proto_read_next(s);
}


/*
 * Starts the first read of the connection unless one is in flight; the
 * ring is copied now, when the read is made (reads that cannot be made,
 * storage down or busy, are answered from the ring alone, not complete)
 */

static void
ngx_chat_proto_read_next(ngx_chat_proto_session_t *s)
{
    ngx_int_t               rc;
    ngx_queue_t            *q;
    ngx_chat_proto_read_t  *rd;

    while (!ngx_queue_empty(&s->reads)) {

        q = ngx_queue_head(&s->reads);
        rd = ngx_queue_data(q, ngx_chat_proto_read_t, queue);

        if (rd->inflight) {
            return;
        }

        if (rd->mode != NGX_CHAT_STORE_BEFORE) {
            rd->ring = ngx_chat_shm_ring_copy(s->ctx, &rd->room);
            ngx_chat_proto_ring_sort(rd);

            if (rd->m && rd->ring) {
                /*
                 * a joining member: what the ring copy holds goes in the
                 * reply; the bus entries before it that this worker has
                 * not read yet must not come live too (those read already
                 * are held, and left out of the reply)
                 */
                ngx_chat_fanout_start(rd->m, rd->ring->head);
            }
        }

        /*
         * messages accepted but not committed yet, and no longer in the
         * ring: the read does not see them, the reply is not complete
         * (repro/store-uncommitted)
         */

        rd->unstored = ngx_chat_store_unstored(&s->ctx->name, &rd->room,
                                               ngx_chat_proto_ring_has,
                                               rd->ring);

        rd->inflight = 1;
        rd->asked = rd->limit;
        rd->rounds = 1;

        rc = ngx_chat_store_history(rd->mode, &s->ctx->name, &rd->room,
                                    &rd->id, rd->limit,
                                    ngx_chat_proto_read_done, rd);
        if (rc == NGX_OK) {
            return;
        }

        rd->failed = 1;
        ngx_chat_proto_read_reply(rd);
    }
}


static void
ngx_chat_proto_read_done(ngx_chat_store_rows_t *rows, void *data)
{
    ngx_chat_proto_read_t *rd = data;

    ngx_chat_proto_session_t  *s;

    s = rd->s;

    if (s == NULL) {
        /* the connection is gone */
        ngx_chat_proto_read_free(rd);
        return;
    }

    if (ngx_chat_proto_read_rows(rd, rows) == NGX_AGAIN) {
        /* a further read of older rows is made (or even answered) */
        return;
    }

    ngx_chat_proto_read_reply(rd);

    ngx_chat_proto_read_next(s);
}


/*
 * Keeps the rows storage answered, as messages; NGX_AGAIN: a "history" N
 * (LAST) whose newest N are not proven yet reads the rows before the
 * oldest it has.  Rows are dropped from the reply (the member got them
 * live after joining, or they were stored after the read was made), so
 * storage's newest N may hold fewer than N of the reply's.
 */

static ngx_int_t
ngx_chat_proto_read_rows(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows)
{
    u_char                   *p;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_str_t                 oldest;
    ngx_uint_t                i, window;
    ngx_array_t               msgs;
    ngx_chat_store_row_t     *r;
    ngx_chat_proto_place_t   *place;
    ngx_chat_shm_copy_msg_t  *c;

    if (rows == NULL || (rd->rounds > 1 && !rows->found)) {
        /* failed, or the oldest row read is gone */
        rd->failed = 1;
        return NGX_OK;
    }

    if (rd->join && rd->m == NULL) {
        /* the member left: the reply goes nowhere */
        return NGX_OK;
    }

    if (rd->pool == NULL) {
        rd->pool = ngx_create_pool(4096, rd->ws->connection->log);

        if (rd->pool == NULL
            || ngx_array_init(&rd->rows, rd->pool, ngx_max(rows->n, 1),
                              sizeof(ngx_chat_shm_copy_msg_t))
               != NGX_OK
            || ngx_array_init(&rd->places, rd->pool, ngx_max(rows->n, 1),
                              sizeof(ngx_chat_proto_place_t))
               != NGX_OK)
        {
            rd->failed = 1;
            return NGX_OK;
        }

        rd->found = rows->found;
    }

    rd->more = (rows->n >= rd->asked);

    /* newest first, each read older than the one before */

    for (i = 0; i < rows->n; i++) {
        r = &rows->rows[i];

        c = ngx_array_push(&rd->rows);
        place = ngx_array_push(&rd->places);

        if (c == NULL || place == NULL) {
            rd->failed = 1;
            return NGX_OK;
        }

        place->prior = ngx_chat_proto_id_num(&r->prior);
        place->holes.len = r->holes.len;
        place->holes.data = NULL;

        if (r->holes.len) {
            place->holes.data = ngx_pstrdup(rd->pool, &r->holes);
            if (place->holes.data == NULL) {
                rd->failed = 1;
                return NGX_OK;
            }
        }

        len = ngx_chat_wire_message_len(&rd->room, &r->id, &r->user,
                                        &r->content, r->ts.len);

        p = ngx_pnalloc(rd->pool, r->id.len + len);
        if (p == NULL) {
            rd->failed = 1;
            return NGX_OK;
        }

        c->id.data = p;
        c->id.len = r->id.len;
        p = ngx_cpymem(p, r->id.data, r->id.len);

        c->json.data = p;
        c->json.len = ngx_chat_wire_message(p, &rd->room, &r->id, &r->user,
                                            &r->content, &r->ts)
                      - p;
    }

    if (rd->mode != NGX_CHAT_STORE_LAST
        || !rd->more
        || rd->rows.nelts == 0
        || rd->rounds >= NGX_CHAT_PROTO_READ_ROUNDS)
    {
        return NGX_OK;
    }

    if (ngx_chat_proto_merge(rd, rd->m, &msgs, &window) != NGX_OK) {
        rd->failed = 1;
        return NGX_OK;
    }

    if (window >= rd->limit) {
        return NGX_OK;
    }

    /* the rows before the oldest read, as many as are missing */

    c = rd->rows.elts;
    oldest = c[rd->rows.nelts - 1].id;

    rd->asked = rd->limit - window;
    rd->rounds++;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, rd->ws->connection->log, 0,
                   "chat proto: history of \"%V\": %ui of %ui proven, "
                   "reading older rows", &rd->room, window, rd->limit);

    rc = ngx_chat_store_history(NGX_CHAT_STORE_BEFORE, &rd->s->ctx->name,
                                &rd->room, &oldest, rd->asked,
                                ngx_chat_proto_read_done, rd);
    if (rc == NGX_OK) {
        return NGX_AGAIN;
    }

    rd->failed = 1;

    return NGX_OK;
}


/* the reply of the first read of the connection, which is done */

static void
ngx_chat_proto_read_reply(ngx_chat_proto_read_t *rd)
{
    ngx_chat_buf_t            *b;
    ngx_chat_proto_session_t  *s;

    s = rd->s;

    ngx_queue_remove(&rd->queue);
    s->nreads--;

    if (rd->m && rd->pool && rd->mode != NGX_CHAT_STORE_BEFORE
        && rd->rows.nelts)
    {
        /*
         * which rows the zone will deliver live is asked first, and then
         * this worker reads the bus: another server's message the relay
         * took meanwhile is then in what the member holds, not both in
         * the reply and live after it
         */

        rd->pending = ngx_chat_proto_read_pending(rd);
        ngx_chat_fanout_publish(s->fo);
    }

    if (!rd->join || rd->m) {
        b = ngx_chat_proto_read_frame(rd, rd->m);

        if (b) {
            ngx_chat_proto_send_frame(rd->ws, b, 1);
        }

        if (rd->m) {
            ngx_chat_fanout_release(s->fo, rd->m);
        }
    }

    ngx_chat_proto_read_free(rd);
}


static u_char *
ngx_chat_proto_read_pending(ngx_chat_proto_read_t *rd)
{
    u_char                   *pending;
    ngx_str_t               **ids;
    ngx_uint_t                j;
    ngx_chat_shm_copy_msg_t  *rows;

    rows = rd->rows.elts;

    pending = ngx_pnalloc(rd->pool, rd->rows.nelts);
    ids = ngx_palloc(rd->pool, rd->rows.nelts * sizeof(ngx_str_t *));

    if (pending == NULL || ids == NULL) {
        return NULL;
    }

    for (j = 0; j < rd->rows.nelts; j++) {
        ids[j] = &rows[j].id;
    }

    ngx_chat_remote_pending(rd->s->ctx, &rd->room, ids, rd->rows.nelts,
                            pending);

    return pending;
}


static void
ngx_chat_proto_read_free(ngx_chat_proto_read_t *rd)
{
    if (rd->ring) {
        ngx_free(rd->ring);
    }

    if (rd->order) {
        ngx_free(rd->order);
    }

    if (rd->defer) {
        ngx_free(rd->defer);
    }

    if (rd->pool) {
        ngx_destroy_pool(rd->pool);
    }

    ngx_free(rd);
}


/*
 * A member leaves: the read of its join is not made, or its reply goes
 * nowhere (a rejoin has a read of its own), so that join/leave churn
 * queues nothing
 */

static void
ngx_chat_proto_forget_member(ngx_chat_proto_session_t *s,
    ngx_chat_member_t *m)
{
    ngx_queue_t            *q, *next;
    ngx_chat_proto_read_t  *rd;

    for (q = ngx_queue_head(&s->reads);
         q != ngx_queue_sentinel(&s->reads);
         q = next)
    {
        next = ngx_queue_next(q);
        rd = ngx_queue_data(q, ngx_chat_proto_read_t, queue);

        if (rd->m != m) {
            continue;
        }

        if (rd->inflight) {
            /* its reply goes nowhere */
            rd->m = NULL;
            continue;
        }

        ngx_queue_remove(q);
        s->nreads--;
        ngx_chat_proto_read_free(rd);
    }
}


/*
 * Ids are ordered: "<number>-<tag>", the number increasing within a zone
 * (the millisecond, times 1000, ngx_chat_shm_post()), and storage orders
 * its rows by time (the id's millisecond), then by id.  Compared here by
 * the length of the leading digits, then the digits, then the rest: for
 * ids of one length of number, that is storage's order.  0: the same id.
 */

static ngx_int_t
ngx_chat_proto_id_cmp(ngx_str_t *a, ngx_str_t *b)
{
    int     rc;
    size_t  na, nb, n;

    for (na = 0; na < a->len && a->data[na] >= '0' && a->data[na] <= '9';
         na++)
    {
        /* void */
    }

    for (nb = 0; nb < b->len && b->data[nb] >= '0' && b->data[nb] <= '9';
         nb++)
    {
        /* void */
    }

    if (na != nb) {
        return (na < nb) ? -1 : 1;
    }

    n = ngx_min(a->len, b->len);

    rc = n ? ngx_memcmp(a->data, b->data, n) : 0;

    if (rc != 0) {
        return (rc < 0) ? -1 : 1;
    }

    if (a->len == b->len) {
        return 0;
    }

    return (a->len < b->len) ? -1 : 1;
}


/* an id's number (its leading digits), 0 when it has none */

static uint64_t
ngx_chat_proto_id_num(ngx_str_t *id)
{
    size_t    i;
    uint64_t  n;

    n = 0;

    for (i = 0; i < id->len && i < 19 && id->data[i] >= '0'
                && id->data[i] <= '9'; i++)
    {
        n = n * 10 + (id->data[i] - '0');
    }

    return n;
}


static int
ngx_chat_proto_msg_cmp(const void *a, const void *b)
{
    return (int) ngx_chat_proto_id_cmp(
                     &((ngx_chat_shm_copy_msg_t *) a)->id,
                     &((ngx_chat_shm_copy_msg_t *) b)->id);
}


static int
ngx_chat_proto_idp_cmp(const void *a, const void *b)
{
    return (int) ngx_chat_proto_id_cmp(*(ngx_str_t **) a, *(ngx_str_t **) b);
}


/*
 * whether the id is among those held (sorted): a binary search, the merge
 * giving what came late after history out of the ids' order
 */

static ngx_uint_t
ngx_chat_proto_held(ngx_str_t **held, ngx_uint_t n, ngx_str_t *id)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_chat_proto_id_cmp(held[mid], id);

        if (rc == 0) {
            return 1;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return 0;
}


/*
 * The ring copy, sorted by id: it is in the order messages came, which is
 * the ids' order but for messages of other servers (chat_redis), whose
 * numbers come from their clocks.  That order is kept aside then: the
 * reply gives what the ring holds in it, the order its members here saw
 * (ngx_chat_proto_ring_order()).  What came since the room was followed
 * though numbered before (another server's history, late: live from a
 * slow relay, or ngx_chat_remote_late()) is marked in rd->defer: the
 * merge puts it after the history storage gives.
 */

static void
ngx_chat_proto_ring_sort(ngx_chat_proto_read_t *rd)
{
    u_char                   *defer;
    ngx_uint_t                i, any;
    ngx_chat_shm_ring_t      *ring;
    ngx_chat_shm_copy_msg_t  *came;

    ring = rd->ring;

    if (ring == NULL) {
        return;
    }

    defer = NULL;

    if (ring->follow && ring->fresh) {
        defer = ngx_calloc(ring->n, ngx_cycle->log);
        any = 0;

        for (i = ring->n - ring->fresh; defer && i < ring->n; i++) {
            if (ngx_chat_proto_id_num(&ring->msgs[i].id) <= ring->follow) {
                defer[i] = 1;
                any = 1;
            }
        }

        if (defer && !any) {
            ngx_free(defer);
            defer = NULL;
        }
    }

    for (i = 1; i < ring->n; i++) {
        if (ngx_chat_proto_id_cmp(&ring->msgs[i - 1].id, &ring->msgs[i].id)
            > 0)
        {
            break;
        }
    }

    if (i >= ring->n) {
        /* in the order it came */
        rd->defer = defer;
        return;
    }

    came = ngx_alloc(ring->n * sizeof(ngx_chat_shm_copy_msg_t),
                     ngx_cycle->log);
    if (came) {
        ngx_memcpy(came, ring->msgs,
                   ring->n * sizeof(ngx_chat_shm_copy_msg_t));
    }

    ngx_qsort(ring->msgs, ring->n, sizeof(ngx_chat_shm_copy_msg_t),
              ngx_chat_proto_msg_cmp);

    if (came) {
        rd->order = ngx_alloc(ring->n * sizeof(ngx_int_t), ngx_cycle->log);

        for (i = 0; rd->order && i < ring->n; i++) {
            rd->order[i] = ngx_chat_proto_ring_find(ring, &came[i].id);
        }

        ngx_free(came);
    }

    if (defer == NULL) {
        return;
    }

    if (rd->order) {
        /* by their places in the sorted copy */

        rd->defer = ngx_calloc(ring->n, ngx_cycle->log);

        for (i = 0; rd->defer && i < ring->n; i++) {
            if (defer[i] && rd->order[i] >= 0) {
                rd->defer[rd->order[i]] = 1;
            }
        }
    }

    ngx_free(defer);
}


/* where the id is in the (sorted) ring copy, or -1: a binary search */

static ngx_int_t
ngx_chat_proto_ring_find(ngx_chat_shm_ring_t *ring, ngx_str_t *id)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = ring ? ring->n : 0;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_chat_proto_id_cmp(&ring->msgs[mid].id, id);

        if (rc == 0) {
            return (ngx_int_t) mid;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return -1;
}


static ngx_uint_t
ngx_chat_proto_ring_has(ngx_str_t *id, void *data)
{
    return ngx_chat_proto_ring_find(data, id) >= 0;
}


/*
 * Which messages of the (sorted) ring copy came here after the id, though
 * numbered before it (another server's, late): by their place in the copy,
 * from pool; all 0 when the id is not in it
 */

static u_char *
ngx_chat_proto_ring_late(ngx_chat_proto_read_t *rd, ngx_str_t *id)
{
    u_char      *late;
    ngx_int_t    x, at;
    ngx_uint_t   a, n, after;

    n = rd->ring->n;

    late = ngx_pcalloc(rd->pool, n ? n : 1);
    if (late == NULL) {
        return NULL;
    }

    at = ngx_chat_proto_ring_find(rd->ring, id);
    after = 0;

    for (a = 0; at >= 0 && a < n; a++) {
        x = rd->order[a];

        if (after && x >= 0
            && ngx_chat_proto_id_cmp(&rd->ring->msgs[x].id, id) < 0)
        {
            late[x] = 1;
        }

        if (x == at) {
            after = 1;
        }
    }

    return late;
}


/*
 * The merge is by id; the reply's messages that came from the ring copy
 * (used: by their place in it, sorted) then take their places (slots) in
 * the order they came here, as the members who were here saw them (a
 * message of another server that came late is after those it came
 * after).  What storage alone gave stays where its id puts it.
 */

static void
ngx_chat_proto_ring_order(ngx_chat_proto_read_t *rd, ngx_str_t *msgs,
    u_char *used, ngx_uint_t *slots, ngx_uint_t nslots)
{
    ngx_int_t   x;
    ngx_uint_t  a, k;

    k = 0;

    for (a = 0; a < rd->ring->n && k < nslots; a++) {
        x = rd->order[a];

        if (x >= 0 && used[x]) {
            msgs[slots[k++]] = rd->ring->msgs[x].json;
        }
    }
}


/* an id of this zone on this server (its tag) */

static ngx_uint_t
ngx_chat_proto_own(ngx_chat_proto_read_t *rd, ngx_str_t *id)
{
    ngx_str_t  *tag;

    tag = &rd->s->ctx->id_tag;

    return id->len > tag->len
           && ngx_memcmp(id->data + id->len - tag->len, tag->data, tag->len)
              == 0;
}


/*
 * The messages of the reply, oldest first, from pool: the rows read
 * (newest first) and the ring copied when the read was made, both sorted
 * by id, merged by id, each message once, whichever has it.  A merge of
 * two sorted lists is linear: no row is looked up in the ring (and the
 * messages held for a joining member, sorted too, are walked along).
 * What the ring gave is then in the order it came here, when that is not
 * the ids' (ngx_chat_proto_ring_order()).
 * Dropped:
 *
 *   - what the member got live after joining (held): it comes after the
 *     reply;
 *   - rows of this zone newer than its newest message in the ring copy:
 *     stored after the read was made, after the request (the ring holds
 *     the room's newest messages; repro/store-newer-rows);
 *   - with "since", whatever is not after the id, when storage knows it
 *     (repro/store-since-newer);
 *   - rows of other servers' messages this server will deliver live and
 *     has not yet (ngx_chat_remote_pending(): stored there before their
 *     copy, or a republish of it, came): they come live to every member
 *     here alike, in this server's order, not twice to this one.
 *
 * *window: how many of them are not older than the oldest row read: the
 * newest N of the reply are proven when N of them are
 * (repro/store-join-held-rows).
 */

static ngx_int_t
ngx_chat_proto_merge(ngx_chat_proto_read_t *rd, ngx_chat_member_t *m,
    ngx_array_t *msgs, ngx_uint_t *window)
{
    u_char                   *pending, *used, *late;
    uint64_t                  from, recent;
    ngx_int_t                 i, c;
    ngx_time_t               *tp;
    ngx_str_t                *msg, **held, *after, *cut, *oldest, *next;
    ngx_uint_t                j, nheld, nring, *slots, nslots, ringed;
    ngx_uint_t               *deferred, nd, d, blind;
    ngx_uint_t               *stored, *sslots, nstored;
    ngx_chat_shm_ring_t      *ring;
    ngx_chat_shm_copy_msg_t  *rows, *e, *lr;

    rows = rd->rows.elts;

    pending = NULL;

    if (rd->pending) {
        pending = rd->pending;

    } else if (rd->mode != NGX_CHAT_STORE_BEFORE && rd->rows.nelts) {
        pending = ngx_chat_proto_read_pending(rd);
        if (pending == NULL) {
            return NGX_ERROR;
        }
    }

    ring = (rd->mode != NGX_CHAT_STORE_BEFORE) ? rd->ring : NULL;
    nring = ring ? ring->n : 0;

    *window = 0;

    if (ngx_array_init(msgs, rd->pool, rd->rows.nelts + nring + 1,
                       sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* rows to deliver now: those of the last merge, the reply's */

    if (rd->late.elts == NULL
        && ngx_array_init(&rd->late, rd->pool, 2,
                          sizeof(ngx_chat_shm_copy_msg_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rd->late.nelts = 0;

    deferred = NULL;
    nd = 0;
    d = 0;

    if (ring && rd->defer) {
        deferred = ngx_palloc(rd->pool, nring * sizeof(ngx_uint_t));
        if (deferred == NULL) {
            return NGX_ERROR;
        }
    }

    used = NULL;
    slots = NULL;
    nslots = 0;

    if (ring && rd->order) {
        /* the ring copy came out of the ids' order: it is given in its own */

        used = ngx_pcalloc(rd->pool, nring);
        slots = ngx_palloc(rd->pool, nring * sizeof(ngx_uint_t));

        if (used == NULL || slots == NULL) {
            return NGX_ERROR;
        }
    }

    /* storage's rows of the reply, for ngx_chat_proto_lineage() */

    stored = NULL;
    sslots = NULL;
    nstored = 0;

    if (rd->rows.nelts > 1 && rd->s->ctx->relayed) {
        stored = ngx_palloc(rd->pool, rd->rows.nelts * sizeof(ngx_uint_t));
        sslots = ngx_palloc(rd->pool, rd->rows.nelts * sizeof(ngx_uint_t));

        if (stored == NULL || sslots == NULL) {
            return NGX_ERROR;
        }
    }

    held = NULL;
    nheld = 0;

    if (m && m->nheld) {
        held = ngx_palloc(rd->pool, m->nheld * sizeof(ngx_str_t *));
        if (held == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < m->nheld; j++) {
            if (m->held[j].id.len) {
                held[nheld++] = &m->held[j].id;
            }
        }

        ngx_qsort(held, nheld, sizeof(ngx_str_t *), ngx_chat_proto_idp_cmp);
    }

    /*
     * storage answers after an id it does not have by the time in its
     * number (ngx_chat_store_history())
     */
    after = (rd->mode == NGX_CHAT_STORE_SINCE
             && (rd->found || ngx_chat_remote_id_ms(&rd->id)))
            ? &rd->id : NULL;

    /*
     * what storage has up to NGX_CHAT_STORE_OVERLAP before the id comes
     * too (ngx_chat_store.h) when this zone cannot vouch for what the
     * member had (ngx_chat_remote_blind()): another server's message
     * numbered before the id may have reached it later, or never
     */
    from = 0;
    rd->overlap = 0;

    recent = 0;
    rd->had.nelts = 0;

    blind = 0;

    if (after && ngx_chat_remote_blind(rd->s->ctx, &rd->room, after)) {
        blind = 1;
        from = ngx_chat_proto_id_num(after);
        from = (from > NGX_CHAT_STORE_OVERLAP * 1000000ULL)
               ? from - NGX_CHAT_STORE_OVERLAP * 1000000ULL : 0;
    }

    if (blind || (rd->mode == NGX_CHAT_STORE_LAST && rd->s->ctx->relayed)) {
        /*
         * other servers' messages of the last NGX_CHAT_STORE_OVERLAP
         * seconds in such a reply (or in the last messages a join gets)
         * may still come live here (their sender's relay held them): they
         * are history here now, for every member alike, and a row found
         * later between them came late (ngx_chat_remote_had())
         */

        tp = ngx_timeofday();
        recent = ((uint64_t) tp->sec * 1000 + tp->msec
                  - NGX_CHAT_STORE_OVERLAP * 1000) * 1000;

        if (rd->had.elts == NULL
            && ngx_array_init(&rd->had, rd->pool, 16, 2 * sizeof(uint64_t))
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (rd->mode == NGX_CHAT_STORE_SINCE && !rd->found
        && ngx_chat_proto_ring_has(&rd->id, ring))
    {
        /*
         * storage could not say (down, or the id not committed yet) but
         * the ring copy knows the id: what is at or before it the client
         * has; the reply is complete when storage answered (an id with
         * no time in it: ngx_chat_proto_read_frame())
         */
        after = &rd->id;
    }

    late = NULL;

    if (after && ring && rd->order) {
        late = ngx_chat_proto_ring_late(rd, after);
        if (late == NULL) {
            return NGX_ERROR;
        }
    }

    cut = NULL;

    for (j = nring; j > 0; j--) {
        if (ngx_chat_proto_own(rd, &ring->msgs[j - 1].id)) {
            cut = &ring->msgs[j - 1].id;
            break;
        }
    }

    oldest = rd->rows.nelts ? &rows[rd->rows.nelts - 1].id : NULL;

    i = (ngx_int_t) rd->rows.nelts - 1;
    j = 0;

    for ( ;; ) {

        if (i >= 0 && j < nring) {
            c = ngx_chat_proto_id_cmp(&rows[i].id, &ring->msgs[j].id);

        } else if (i >= 0) {
            c = -1;

        } else if (j < nring) {
            c = 1;

        } else {
            c = 2;
        }

        next = (c == 2) ? NULL : (c < 0) ? &rows[i].id : &ring->msgs[j].id;

        if (d < nd
            && (next == NULL || ngx_chat_proto_id_num(next) > ring->follow))
        {
            /*
             * the history storage gives is out: what came late after it,
             * here as it came (its row was passed with it)
             */
            ringed = deferred[d++];
            e = &ring->msgs[ringed - 1];

        } else if (next == NULL) {
            break;

        } else if (c < 0) {
            if (pending && pending[i]) {
                if (pending[i] == NGX_CHAT_REMOTE_LATE) {
                    lr = ngx_array_push(&rd->late);
                    if (lr == NULL) {
                        return NGX_ERROR;
                    }

                    *lr = rows[i];
                }

                i--;
                continue;
            }

            e = &rows[i--];
            ringed = 0;

            if (cut && ngx_chat_proto_id_cmp(&e->id, cut) > 0
                && ngx_chat_proto_own(rd, &e->id))
            {
                continue;
            }

        } else {
            ringed = ++j;
            e = &ring->msgs[j - 1];

            if (c == 0) {
                i--;
            }

            if (deferred && rd->defer[ringed - 1]) {
                deferred[nd++] = ringed;
                continue;
            }
        }

        if (after) {
            c = ngx_chat_proto_id_cmp(&e->id, after);

            if (c < 0 && late && ringed && late[ringed - 1]) {
                /* numbered before the id, came here after it */
                c = 1;
            }

            if (c == 0) {
                /* the member has it: had here too, as what the reply gives */

                if (recent && ngx_chat_proto_had(rd, &e->id, recent)
                              != NGX_OK)
                {
                    return NGX_ERROR;
                }

                continue;
            }

            if (c < 0 && (from == 0 || ngx_chat_proto_id_num(&e->id) < from))
            {
                continue;
            }
        }

        if (nheld && ngx_chat_proto_held(held, nheld, &e->id)) {
            /* it comes live */
            continue;
        }

        if (oldest && ngx_chat_proto_id_cmp(&e->id, oldest) >= 0) {
            (*window)++;
        }

        msg = ngx_array_push(msgs);
        if (msg == NULL) {
            return NGX_ERROR;
        }

        *msg = e->json;

        if (used && ringed) {
            used[ringed - 1] = 1;
            slots[nslots++] = msgs->nelts - 1;
        }

        if (stored && !ringed) {
            stored[nstored] = e - rows;
            sslots[nstored++] = msgs->nelts - 1;
        }

        if (after && c < 0) {
            rd->overlap++;
        }

        if (recent && ngx_chat_proto_had(rd, &e->id, recent) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (nslots > 1) {
        ngx_chat_proto_ring_order(rd, msgs->elts, used, slots, nslots);
    }

    if (nstored > 1) {
        ngx_chat_proto_lineage(rd, msgs->elts, stored, sslots, nstored);
    }

    return NGX_OK;
}


/*
 * What storage alone gave (stored: rows, by id; slots: their places in
 * the reply) in the order the members of this server saw it, before a
 * restart too: a message of this server's (any life of it, by the upper
 * half of its tag: ngx_chat_shm_lineage()) came after the other servers'
 * numbered up to its prior but those in its holes, and before the rest,
 * which came here later, or never while it was up (held by a Redis
 * outage, skipped by a resubscription, then a stop):
 * ngx_chat_remote_room_place().  The ids' order otherwise, and for rows
 * stored without a prior.  The priors only grow: the largest so far
 * counts.  Both lists are sorted: the others are walked up to the prior
 * once, but for what a hole held back, in the pool.
 */

static void
ngx_chat_proto_lineage(ngx_chat_proto_read_t *rd, ngx_str_t *msgs,
    ngx_uint_t *stored, ngx_uint_t *slots, ngx_uint_t n)
{
    u_char                   *done;
    uint64_t                  num, tag, mine, top, *xnum, *xtag, *onum;
    ngx_uint_t                k, j, x, nx, no, out, any, *others, *ours;
    ngx_chat_proto_place_t   *places, *pl;
    ngx_chat_shm_copy_msg_t  *rows;

    rows = rd->rows.elts;
    places = rd->places.elts;

    others = ngx_palloc(rd->pool, 2 * n * sizeof(ngx_uint_t));
    xnum = ngx_palloc(rd->pool, 3 * n * sizeof(uint64_t));
    done = ngx_pcalloc(rd->pool, n);

    if (others == NULL || xnum == NULL || done == NULL) {
        return;
    }

    /* each row's number and tag once: ours (of any life) or another's */

    ours = others + n;
    xtag = xnum + n;
    onum = xtag + n;
    nx = 0;
    no = 0;
    any = 0;

    mine = ngx_chat_server_lineage(
               ngx_chat_server_tag(ngx_chat_remote_server_id(rd->s->ctx)));

    for (k = 0; k < n; k++) {
        if (ngx_chat_remote_id_parse(&rows[stored[k]].id, &num, &tag)
            != NGX_OK)
        {
            num = 0;
            tag = 0;

        } else if (ngx_chat_server_lineage(tag) == mine) {
            onum[no] = num;
            ours[no++] = stored[k];
            any |= (places[stored[k]].prior != 0);
            continue;
        }

        xnum[nx] = num;
        xtag[nx] = tag;
        others[nx++] = stored[k];
    }

    if (!any || nx == 0) {
        return;
    }

    x = 0;
    out = 0;
    top = 0;

    for (k = 0; k < no; k++) {
        pl = &places[ours[k]];

        /* no prior: after what is numbered before it, the ids' order */

        top = ngx_max(top, pl->prior ? pl->prior
                                     : (onum[k] ? onum[k] - 1 : 0));

        for (j = x; j < nx && xnum[j] <= top; j++) {
            if (done[j]
                || (pl->holes.len
                    && ngx_chat_remote_in_holes(&pl->holes, xnum[j],
                                                xtag[j])))
            {
                continue;
            }

            msgs[slots[out++]] = rows[others[j]].json;
            done[j] = 1;
        }

        while (x < nx && done[x]) {
            x++;
        }

        msgs[slots[out++]] = rows[ours[k]].json;
    }

    for ( /* void */ ; x < nx; x++) {
        if (!done[x]) {
            msgs[slots[out++]] = rows[others[x]].json;
        }
    }
}


/*
 * The reply: the newest "limit" messages of the merge (LAST, BEFORE), or
 * those after the id (SINCE, at most 1000); "complete" only when storage
 * answered all it was asked and nothing it cannot see is missing: LAST
 * when storage had no more rows than those read, or the reply's newest N
 * are all at or after the oldest row read; SINCE when the id is stored
 * and storage had no more than 1000 after it; BEFORE when the id is
 * stored.
 */

/* another server's message numbered since "recent", for rd->had */

static ngx_int_t
ngx_chat_proto_had(ngx_chat_proto_read_t *rd, ngx_str_t *id, uint64_t recent)
{
    uint64_t  key[2], *k;

    if (ngx_chat_proto_own(rd, id)
        || ngx_chat_remote_id_parse(id, &key[0], &key[1]) != NGX_OK
        || key[0] < recent)
    {
        return NGX_OK;
    }

    k = ngx_array_push(&rd->had);
    if (k == NULL) {
        return NGX_ERROR;
    }

    k[0] = key[0];
    k[1] = key[1];

    return NGX_OK;
}


/*
 * Another server's rows the merge left out as late (ngx_chat_remote_
 * pending()), delivered into the room now: every member here gets them
 * live, this one after its reply, and later replies where they came
 */

static void
ngx_chat_proto_read_late(ngx_chat_proto_read_t *rd)
{
    ngx_uint_t                i, n;
    ngx_chat_shm_copy_msg_t  *lr;

    lr = rd->late.elts;
    n = 0;

    for (i = 0; i < rd->late.nelts; i++) {
        if (ngx_chat_remote_late(rd->s->ctx, &rd->room, &lr[i].id,
                                 lr[i].json.data, lr[i].json.len)
            == NGX_OK)
        {
            n++;
        }
    }

    if (n == 0) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, rd->ws->connection->log, 0,
                  "chat: %ui messages of another server committed late "
                  "delivered in \"%V\"", n, &rd->room);

    ngx_chat_fanout_publish(rd->s->fo);
}


static ngx_chat_buf_t *
ngx_chat_proto_read_frame(ngx_chat_proto_read_t *rd, ngx_chat_member_t *m)
{
    ngx_str_t    *msg;
    ngx_uint_t    complete, skip, max, window;
    ngx_array_t   msgs;

    if (rd->pool == NULL) {
        rd->pool = ngx_create_pool(4096, rd->ws->connection->log);
        if (rd->pool == NULL) {
            return NULL;
        }
    }

    if (ngx_chat_proto_merge(rd, m, &msgs, &window) != NGX_OK) {
        return NULL;
    }

    switch (rd->mode) {

    case NGX_CHAT_STORE_LAST:
        complete = !rd->more || window >= rd->limit;
        max = rd->limit;
        break;

    case NGX_CHAT_STORE_SINCE:
        /*
         * the id is known (stored, or in the ring copy: not committed yet,
         * or never, its sender's worker gone first) and storage had no
         * more, or what it had reached back to the id
         */
        complete = (rd->found || ngx_chat_proto_ring_has(&rd->id, rd->ring))
                   && (!rd->more
                       || (rd->rows.nelts
                           && ngx_chat_proto_id_cmp(
                                  &((ngx_chat_shm_copy_msg_t *)
                                    rd->rows.elts)[rd->rows.nelts - 1].id,
                                  &rd->id)
                              <= 0));
        max = NGX_CHAT_MAX_HISTORY;
        break;

    default: /* NGX_CHAT_STORE_BEFORE */
        complete = rd->found;
        max = rd->limit;
        break;
    }

    if (rd->failed || rd->unstored) {
        complete = 0;
    }

    if (rd->mode == NGX_CHAT_STORE_SINCE) {
        /* at most 1000 after the id, and then none before it */
        skip = (msgs.nelts - rd->overlap > max) ? msgs.nelts - max : 0;

        if (skip) {
            complete = 0;
        }

    } else {
        skip = (msgs.nelts > max) ? msgs.nelts - max : 0;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rd->ws->connection->log, 0,
                   "chat proto: history of \"%V\" from storage: %ui "
                   "messages, %ui reads, complete %ui", &rd->room,
                   msgs.nelts - skip, rd->rounds, complete);

    msg = msgs.elts;

    if (rd->had.nelts) {
        ngx_chat_remote_had(rd->s->ctx, &rd->room, rd->had.elts,
                            rd->had.nelts);
    }

    if (rd->late.nelts) {
        ngx_chat_proto_read_late(rd);
    }

    return ngx_chat_wire_history(&rd->room, msg + skip, msgs.nelts - skip,
                                 complete, rd->ws->connection->log);
}


static void
ngx_chat_proto_who(ngx_chat_proto_req_t *rq)
{
    ngx_pool_t                *pool;
    ngx_array_t               *users;
    ngx_chat_buf_t            *b;
    ngx_chat_ws_t             *ws;
    ngx_chat_proto_session_t  *s;

    ws = rq->ws;
    s = rq->s;

    if (ngx_chat_proto_find(s, &rq->room) < 0) {
        ngx_chat_proto_error(rq, "not_member", "not a member of this room",
                             -1);
        return;
    }

    b = NULL;

    pool = ngx_create_pool(4096, ws->connection->log);

    if (pool) {
        users = ngx_chat_shm_users(s->ctx, &rq->room, 0, pool);

        if (users) {
            b = ngx_chat_wire_who(&rq->room, users->elts, users->nelts,
                                  ws->connection->log);
        }

        ngx_destroy_pool(pool);
    }

    if (b == NULL) {
        ngx_chat_proto_error(rq, "unavailable", "out of memory", -1);
        return;
    }

    ngx_chat_proto_send_frame(ws, b, 1);
}


/*
 * Queues a frame the wire format built (NULL: it could not, out of
 * memory, and the client gets nothing), as a reply to the client's
 * request, which may exceed the send buffer, or as live traffic
 */

static void
ngx_chat_proto_send_frame(ngx_chat_ws_t *ws, ngx_chat_buf_t *b,
    ngx_uint_t reply)
{
    if (b == NULL) {
        return;
    }

    if (reply) {
        (void) ngx_chat_ws_send_reply(ws, b);

    } else {
        (void) ngx_chat_ws_send_buf(ws, b);
    }

    ngx_chat_buf_release(b);
}


static void
ngx_chat_proto_error(ngx_chat_proto_req_t *rq, char *code, char *message,
    ngx_int_t retry_ms)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rq->ws->connection->log, 0,
                   "chat proto: refused: %s, %s", code, message);

    ngx_chat_shm_count_error(rq->ws->conf->zone->data, code);

    ngx_chat_proto_send_frame(rq->ws,
        ngx_chat_wire_error(code, message, rq->has_ref ? &rq->ref : NULL,
                            retry_ms, rq->ws->connection->log), 0);
}
