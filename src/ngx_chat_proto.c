
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
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_proto.h"


typedef struct {
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_fanout_t         *fo;
    ngx_chat_member_t        **rooms;
    ngx_uint_t                 nrooms;
    ngx_uint_t                 cap;
    ngx_queue_t                stored;    /* messages waiting for COMMIT */
    ngx_queue_t                reads;     /* history read from storage, in
                                             order; the first in flight */
    ngx_uint_t                 nreads;
    ngx_chat_rate_t            requests;  /* chat_request_rate */
} ngx_chat_proto_session_t;


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
    ngx_chat_shm_ring_t       *ring;
    ngx_str_t                  room;
    ngx_str_t                  id;
} ngx_chat_proto_read_t;


#define NGX_CHAT_PROTO_FLAT        8
#define NGX_CHAT_PROTO_READ_RETRY  100    /* ms, when reads are queued */

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
static void ngx_chat_proto_read_reply(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows);
static void ngx_chat_proto_read_done(ngx_chat_store_rows_t *rows,
    void *data);
static ngx_chat_buf_t *ngx_chat_proto_read_frame(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows, ngx_chat_member_t *m, ngx_pool_t *pool);
static ngx_uint_t ngx_chat_proto_in_ring(ngx_chat_shm_ring_t *ring,
    ngx_str_t *id);
static ngx_uint_t ngx_chat_proto_ring_has(ngx_str_t *id, void *data);
static ngx_uint_t ngx_chat_proto_held(ngx_chat_member_t *m, ngx_str_t *id);
static void ngx_chat_proto_send_frame(ngx_chat_ws_t *ws, ngx_chat_buf_t *b,
    ngx_uint_t reply);


ngx_int_t
ngx_chat_proto_handler(ngx_http_request_t *r)
{
    ngx_int_t       rc;
    ngx_chat_ws_t  *ws;

    ws = ngx_chat_ws_upgrade(r, &rc);
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

    s = ngx_pcalloc(ws->connection->pool, sizeof(ngx_chat_proto_session_t));
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->ctx = ctx;
    s->fo = fo;
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

        if (rd->ring) {
            ngx_free(rd->ring);
        }

        ngx_free(rd);
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

    if (s->rooms) {
        ngx_free(s->rooms);
        s->rooms = NULL;
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
     * a "send" of plain strings is read in place (see ngx_chat_jflat.h);
     * everything else, and anything the scanner declines, goes to jansson
     */

    n = ngx_chat_jflat_parse(data, len, flat, NGX_CHAT_PROTO_FLAT);

    if (n > 0) {
        v = ngx_chat_jflat_get(flat, n, "type", sizeof("type") - 1);

        t.data = (u_char *) (v ? v->value : NULL);
        t.len = v ? v->value_len : 0;

        if (ngx_chat_proto_is(t, "send")) {
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
        ngx_str_set(&t, "send");

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
    h = json_object_get(rq->json, "history");

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
        n = s->cap ? s->cap * 2 : 4;

        rooms = ngx_alloc(n * sizeof(ngx_chat_member_t *),
                          ws->connection->log);
        if (rooms == NULL) {
            ngx_chat_proto_error(rq, "unavailable", "out of memory", -1);
            return;
        }

        if (s->rooms) {
            ngx_memcpy(rooms, s->rooms,
                       s->nrooms * sizeof(ngx_chat_member_t *));
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
    uint64_t                   ts;
    ngx_int_t                  rc, i;
    ngx_str_t                  content, id;
    ngx_msec_t                 retry;
    ngx_chat_ws_t             *ws;
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
                           ws->conf->rate.burst, &id, &ts, &retry,
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

    /* the room gets the message first, the sender included, then the ack */

    ngx_chat_fanout_publish(s->fo);

    if (!ngx_chat_store_enabled()) {
        ngx_chat_proto_send_frame(ws,
            ngx_chat_wire_ack(rq->has_ref ? &rq->ref : NULL, &id,
                              ws->connection->log), 0);
        return;
    }

    /* with storage, the ack waits for the COMMIT */

    it = ngx_chat_store_add(&id, &s->ctx->name, &rq->room, &ws->user,
                            &content, ts, rq->has_ref ? &rq->ref : NULL);
    if (it == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ws->connection->log, 0,
                      "chat: message %V delivered but not queued for "
                      "storage", &id);
        return;
    }

    it->done = ngx_chat_proto_stored;
    it->data = ws;
    ngx_queue_insert_tail(&s->stored, &it->owner);
}


static void
ngx_chat_proto_stored(ngx_chat_store_item_t *it)
{
    ngx_chat_ws_t  *ws;

    ws = it->data;

    ngx_queue_remove(&it->owner);

    if (it->refused) {

        /* delivered live already, but not stored: no ack, ever */

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                       "chat proto: %V refused by storage", &it->id);

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

        rc = ngx_chat_store_history(rd->mode, &s->ctx->name, &rd->room,
                                    &rd->id, rd->limit,
                                    ngx_chat_proto_read_done, rd);
        if (rc == NGX_OK) {
            return;
        }

        ngx_chat_proto_read_reply(rd, NULL);
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

        if (rd->ring) {
            ngx_free(rd->ring);
        }

        ngx_free(rd);
        return;
    }

    ngx_chat_proto_read_reply(rd, rows);

    ngx_chat_proto_read_next(s);
}


/* the reply of the first read of the connection, which is done */

static void
ngx_chat_proto_read_reply(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows)
{
    ngx_pool_t                *pool;
    ngx_chat_buf_t            *b;
    ngx_chat_proto_session_t  *s;

    s = rd->s;

    ngx_queue_remove(&rd->queue);
    s->nreads--;

    if (!rd->join || rd->m) {
        pool = ngx_create_pool(4096, rd->ws->connection->log);

        b = pool ? ngx_chat_proto_read_frame(rd, rows, rd->m, pool) : NULL;

        if (b) {
            ngx_chat_proto_send_frame(rd->ws, b, 1);
        }

        if (pool) {
            ngx_destroy_pool(pool);
        }

        if (rd->m) {
            ngx_chat_fanout_release(s->fo, rd->m);
        }
    }

    if (rd->ring) {
        ngx_free(rd->ring);
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
        ngx_free(rd);
    }
}


static ngx_uint_t
ngx_chat_proto_held(ngx_chat_member_t *m, ngx_str_t *id)
{
    ngx_uint_t  i;

    for (i = 0; m && i < m->nheld; i++) {
        if (m->held[i].id.len == id->len
            && ngx_memcmp(m->held[i].id.data, id->data, id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_chat_proto_ring_has(ngx_str_t *id, void *data)
{
    return ngx_chat_proto_in_ring(data, id);
}


static ngx_uint_t
ngx_chat_proto_in_ring(ngx_chat_shm_ring_t *ring, ngx_str_t *id)
{
    ngx_uint_t  i;

    for (i = 0; ring && i < ring->n; i++) {
        if (ring->msgs[i].id.len == id->len
            && ngx_memcmp(ring->msgs[i].id.data, id->data, id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The reply from stored rows (newest first) and the ring copied when
 * asked: stored messages the ring no longer has, then the ring, without
 * what the member got live meanwhile, the newest "limit" of them.
 */

static ngx_chat_buf_t *
ngx_chat_proto_read_frame(ngx_chat_proto_read_t *rd,
    ngx_chat_store_rows_t *rows, ngx_chat_member_t *m, ngx_pool_t *pool)
{
    u_char                *p;
    ngx_int_t              row;
    ngx_str_t             *msg;
    ngx_uint_t             i, complete, skip, max;
    ngx_array_t            msgs;
    ngx_chat_store_row_t  *r;

    if (ngx_array_init(&msgs, pool, 64, sizeof(ngx_str_t)) != NGX_OK) {
        return NULL;
    }

    /* stored rows, oldest first */

    for (row = rows ? (ngx_int_t) rows->n - 1 : -1; row >= 0; row--) {

        r = &rows->rows[row];

        if (rd->mode != NGX_CHAT_STORE_BEFORE
            && ngx_chat_proto_in_ring(rd->ring, &r->id))
        {
            continue;
        }

        if (ngx_chat_proto_held(m, &r->id)) {
            /* stored after the join: it comes live */
            continue;
        }

        p = ngx_pnalloc(pool, ngx_chat_wire_message_len(&rd->room, &r->id,
                                                        &r->user, &r->content,
                                                        r->ts.len));
        if (p == NULL) {
            return NULL;
        }

        msg = ngx_array_push(&msgs);
        if (msg == NULL) {
            return NULL;
        }

        msg->data = p;
        msg->len = ngx_chat_wire_message(p, &rd->room, &r->id, &r->user,
                                         &r->content, &r->ts)
                   - p;
    }

    /* then the ring, but for what the member got live after joining */

    if (rd->mode != NGX_CHAT_STORE_BEFORE && rd->ring) {

        for (i = 0; i < rd->ring->n; i++) {

            if (ngx_chat_proto_held(m, &rd->ring->msgs[i].id)) {
                continue;
            }

            msg = ngx_array_push(&msgs);
            if (msg == NULL) {
                return NULL;
            }

            *msg = rd->ring->msgs[i].json;
        }
    }

    switch (rd->mode) {

    case NGX_CHAT_STORE_LAST:
        complete = (rows != NULL);
        max = rd->limit;
        break;

    case NGX_CHAT_STORE_SINCE:
        complete = rows && rows->found && rows->n <= NGX_CHAT_MAX_HISTORY;
        max = NGX_CHAT_MAX_HISTORY;
        break;

    default: /* NGX_CHAT_STORE_BEFORE */
        complete = rows && rows->found;
        max = rd->limit;
        break;
    }

    if (rd->unstored) {
        complete = 0;
    }

    skip = (msgs.nelts > max) ? msgs.nelts - max : 0;

    if (skip && rd->mode == NGX_CHAT_STORE_SINCE) {
        complete = 0;
    }

    msg = msgs.elts;

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

    ngx_chat_proto_send_frame(rq->ws,
        ngx_chat_wire_error(code, message, rq->has_ref ? &rq->ref : NULL,
                            retry_ms, rq->ws->connection->log), 0);
}
