
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The HTTP API for backends (SPEC §11; see ngx_chat_api.h).  The body is
 * read with nginx's own ngx_http_read_client_request_body(), bounded by
 * the location's chat_max_message_size plus an envelope, parsed with
 * jansson and checked as the WebSocket protocol checks its requests.  A
 * publish is posted to the zone like a client's send (ngx_chat_shm_post:
 * id, order, ring, bus; the fan-out wakes the other workers, the relaying
 * worker reads it from the bus for Redis); with storage the answer waits
 * for the COMMIT and is sent from the store's done handler.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_api.h"


#define NGX_CHAT_API_ENVELOPE   65536
#define NGX_CHAT_API_MAX_ROOMS  128
#define NGX_CHAT_API_MAX_KEY    128


typedef struct {
    ngx_http_request_t        *r;
    ngx_chat_loc_conf_t       *lcf;
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_fanout_t         *fo;
    json_t                    *json;

    ngx_str_t                 *ids;       /* published, in order */
    ngx_uint_t                 nids;
    ngx_uint_t                 broadcast;

    ngx_queue_t                items;     /* waiting for the COMMIT */
    ngx_uint_t                 pending;
    ngx_uint_t                 refused;
    ngx_str_t                  key;       /* publish's, .data NULL: none */

    /* history read from storage, merged with the ring copied first */
    ngx_uint_t                 limit;
    ngx_str_t                  room;
    ngx_str_t                  before;    /* .data NULL: the newest */
    ngx_chat_shm_ring_t       *ring;
} ngx_chat_api_ctx_t;


static void ngx_chat_api_body(ngx_http_request_t *r);
static ngx_int_t ngx_chat_api_dispatch(ngx_chat_api_ctx_t *a);
static ngx_int_t ngx_chat_api_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_chat_api_string(ngx_chat_api_ctx_t *a, const char *key,
    ngx_str_t *value, size_t max, ngx_uint_t required);
static ngx_int_t ngx_chat_api_publish(ngx_chat_api_ctx_t *a);
static ngx_int_t ngx_chat_api_post(ngx_chat_api_ctx_t *a, ngx_str_t *room,
    ngx_str_t *user, ngx_str_t *content);
static void ngx_chat_api_stored(ngx_chat_store_item_t *it);
static ngx_int_t ngx_chat_api_published(ngx_chat_api_ctx_t *a);
static ngx_int_t ngx_chat_api_who(ngx_chat_api_ctx_t *a);
static ngx_int_t ngx_chat_api_history(ngx_chat_api_ctx_t *a);
static void ngx_chat_api_history_read(ngx_chat_store_rows_t *rows,
    void *data);
static ngx_int_t ngx_chat_api_history_reply(ngx_chat_api_ctx_t *a,
    ngx_chat_store_rows_t *rows);
static ngx_uint_t ngx_chat_api_in_ring(ngx_str_t *id, void *data);
static void ngx_chat_api_ring_free(void *data);
static ngx_int_t ngx_chat_api_disconnect(ngx_chat_api_ctx_t *a);
static void ngx_chat_api_cleanup(void *data);
static ngx_int_t ngx_chat_api_error(ngx_http_request_t *r, ngx_uint_t status,
    char *error, char *message);
static ngx_int_t ngx_chat_api_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);


ngx_int_t
ngx_chat_api_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_chat_loc_conf_t  *lcf;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);

    if (r->headers_in.content_length_n
        > (off_t) (6 * lcf->max_message_size + NGX_CHAT_API_ENVELOPE))
    {
        /* nginx discards the body of a special response */
        return ngx_chat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "too_large",
                                  "the body is larger than "
                                  "chat_max_message_size allows");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_chat_api_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_chat_api_body(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_str_t             body;
    json_error_t          err;
    ngx_chat_api_ctx_t   *a;
    ngx_chat_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);

    rc = ngx_chat_api_read_body(r, &body);

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
            ngx_chat_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "too_large", "the body is larger than "
                               "chat_max_message_size allows"));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    a = ngx_pcalloc(r->pool, sizeof(ngx_chat_api_ctx_t));
    if (a == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    a->r = r;
    a->lcf = lcf;
    a->ctx = lcf->api_zone->data;
    ngx_queue_init(&a->items);

    a->json = json_loadb((const char *) body.data, body.len,
                         JSON_REJECT_DUPLICATES, &err);

    if (a->json == NULL || !json_is_object(a->json)) {
        if (a->json) {
            json_decref(a->json);
        }

        ngx_http_finalize_request(r,
            ngx_chat_api_error(r, NGX_HTTP_BAD_REQUEST, "bad_request",
                               "the body is not a JSON object"));
        return;
    }

    rc = ngx_chat_api_dispatch(a);

    json_decref(a->json);
    a->json = NULL;

    if (rc == NGX_DONE) {
        /* answered later, from storage's callback */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_chat_api_dispatch(ngx_chat_api_ctx_t *a)
{
    json_t      *v;
    const char  *type;

    v = json_object_get(a->json, "type");

    if (!json_is_string(v)) {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"type\" must be a string");
    }

    type = json_string_value(v);

    a->fo = ngx_chat_fanout_get(a->ctx);

    if (a->fo == NULL) {
        return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "unavailable",
                                  "this worker has no chat zone");
    }

    if (ngx_strcmp(type, "publish") == 0) {
        return ngx_chat_api_publish(a);
    }

    if (ngx_strcmp(type, "broadcast") == 0) {
        a->broadcast = 1;
        return ngx_chat_api_publish(a);
    }

    if (ngx_strcmp(type, "who") == 0) {
        return ngx_chat_api_who(a);
    }

    if (ngx_strcmp(type, "history") == 0) {
        return ngx_chat_api_history(a);
    }

    if (ngx_strcmp(type, "disconnect") == 0) {
        return ngx_chat_api_disconnect(a);
    }

    return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                              "unknown \"type\"");
}


/*
 * The body in one piece: in memory, or, when larger than
 * client_body_buffer_size, in its temporary file (read back once, a file
 * nginx has just written).  NGX_DECLINED: over the limit.
 */

static ngx_int_t
ngx_chat_api_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char               *p;
    size_t                len, max;
    ssize_t               n;
    ngx_buf_t            *b;
    ngx_chain_t          *cl;
    ngx_chat_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);
    max = 6 * lcf->max_message_size + NGX_CHAT_API_ENVELOPE;

    ngx_str_set(body, "");

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    if (len > max) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    body->len = p - body->data;

    return NGX_OK;
}


/*
 * A string member of 1 to max bytes: NGX_OK, NGX_DECLINED (absent, not
 * required), or NGX_ERROR (not a string, empty, too long).  jansson, with
 * no JSON_ALLOW_NUL, refused a document with U+0000 in a string already.
 */

static ngx_int_t
ngx_chat_api_string(ngx_chat_api_ctx_t *a, const char *key, ngx_str_t *value,
    size_t max, ngx_uint_t required)
{
    json_t  *v;

    v = json_object_get(a->json, key);

    if (v == NULL && !required) {
        return NGX_DECLINED;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) json_string_value(v);
    value->len = json_string_length(v);

    if (value->len == 0 || value->len > max) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* publish (one room) and broadcast (rooms) */

static ngx_int_t
ngx_chat_api_publish(ngx_chat_api_ctx_t *a)
{
    u_char       idbuf[NGX_CHAT_ID_LEN];
    json_t      *rooms, *v;
    ngx_int_t    rc;
    ngx_str_t    room, user, content, key, *keyp, id;
    ngx_uint_t   i, n;

    keyp = NULL;

    if (ngx_chat_api_string(a, "user", &user, NGX_CHAT_MAX_USER, 1)
        != NGX_OK)
    {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"user\" must be a string of 1 to 256 "
                                  "bytes");
    }

    v = json_object_get(a->json, "content");

    if (!json_is_string(v)) {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"content\" must be a string");
    }

    content.data = (u_char *) json_string_value(v);
    content.len = json_string_length(v);

    if (content.len > a->lcf->max_message_size) {
        return ngx_chat_api_error(a->r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "too_large", "\"content\" is larger than "
                                  "chat_max_message_size");
    }

    if (a->broadcast) {
        rooms = json_object_get(a->json, "rooms");

        if (!json_is_array(rooms) || json_array_size(rooms) == 0
            || json_array_size(rooms) > NGX_CHAT_API_MAX_ROOMS)
        {
            return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST,
                                      "bad_request",
                                      "\"rooms\" must be an array of 1 to "
                                      "128 room names");
        }

        n = json_array_size(rooms);

        for (i = 0; i < n; i++) {
            v = json_array_get(rooms, i);

            if (!json_is_string(v) || json_string_length(v) == 0
                || json_string_length(v) > NGX_CHAT_MAX_ROOM_NAME)
            {
                return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST,
                                          "bad_request",
                                          "\"rooms\" must hold strings of "
                                          "1 to 128 bytes");
            }
        }

    } else {
        rooms = NULL;
        n = 1;

        if (ngx_chat_api_string(a, "room", &room, NGX_CHAT_MAX_ROOM_NAME, 1)
            != NGX_OK)
        {
            return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST,
                                      "bad_request",
                                      "\"room\" must be a string of 1 to "
                                      "128 bytes");
        }
    }

    if (!a->broadcast) {
        switch (ngx_chat_api_string(a, "key", &key, NGX_CHAT_API_MAX_KEY, 0)) {
        case NGX_OK:
            keyp = &key;
            break;
        case NGX_ERROR:
            return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST,
                                      "bad_request",
                                      "\"key\" must be a string of 1 to 128 "
                                      "bytes");
        default:
            break;
        }
    }

    if (ngx_chat_store_enabled() && ngx_chat_store_full()) {
        /* nothing is delivered that could not be stored */
        return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "unavailable",
                                  "storage is behind, try again later");
    }

    a->ids = ngx_pcalloc(a->r->pool, n * sizeof(ngx_str_t));
    if (a->ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (keyp) {
        id.data = idbuf;

        switch (ngx_chat_shm_key_take(a->ctx, keyp, &id)) {

        case NGX_DECLINED:
            /* published within the last 10 minutes: that id, no more */
            a->ids[0].data = ngx_pstrdup(a->r->pool, &id);
            if (a->ids[0].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            a->ids[0].len = id.len;
            a->nids = 1;

            return ngx_chat_api_published(a);

        case NGX_BUSY:
            return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "unavailable", "the publish with this "
                                      "key is not committed yet, try again");

        case NGX_ERROR:
            return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "unavailable", "the chat zone is "
                                      "full, try again later");

        default:
            break;
        }
    }

    for (i = 0; i < n; i++) {
        if (rooms) {
            v = json_array_get(rooms, i);
            room.data = (u_char *) json_string_value(v);
            room.len = json_string_length(v);
        }

        rc = ngx_chat_api_post(a, &room, &user, &content);

        if (rc != NGX_OK) {
            break;
        }
    }

    if (keyp) {
        ngx_chat_shm_key_set(a->ctx, keyp, a->nids ? &a->ids[0] : NULL,
                             a->pending == 0);

        if (a->pending) {
            /* committed (or refused) in ngx_chat_api_stored() */
            a->key.data = ngx_pstrdup(a->r->pool, keyp);
            if (a->key.data == NULL) {
                ngx_chat_shm_key_commit(a->ctx, keyp, 1);

            } else {
                a->key.len = keyp->len;
            }
        }
    }

    /* the rooms' members get what was posted, whatever followed */

    ngx_chat_fanout_publish(a->fo);

    if (a->nids < n) {
        if (a->pending) {
            /* what was accepted is still stored; nobody waits for it */
            ngx_chat_api_cleanup(a);
        }

        return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "unavailable",
                                  "the chat zone is full, try again later");
    }

    if (a->pending == 0) {
        return ngx_chat_api_published(a);
    }

    /* with storage, the answer waits for the COMMIT */

    return NGX_DONE;
}


static ngx_int_t
ngx_chat_api_post(ngx_chat_api_ctx_t *a, ngx_str_t *room, ngx_str_t *user,
    ngx_str_t *content)
{
    u_char                  idbuf[NGX_CHAT_ID_LEN];
    uint64_t                ts;
    ngx_int_t               rc;
    ngx_str_t               id, *saved, holes;
    ngx_msec_t              retry;
    ngx_pool_cleanup_t     *cln;
    ngx_chat_store_item_t  *it;
    ngx_chat_shm_place_t    place;

    if (ngx_chat_shm_room_ensure(a->ctx, room, a->lcf->history) != NGX_OK) {
        return NGX_ERROR;
    }

    id.data = idbuf;

    rc = ngx_chat_shm_post(a->ctx, room, NULL, user, content, 0, 0, &id, &ts,
                           &place, &retry, a->r->connection->log);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    saved = &a->ids[a->nids++];

    saved->data = ngx_pstrdup(a->r->pool, &id);
    if (saved->data == NULL) {
        return NGX_ERROR;
    }

    saved->len = id.len;

    if (!ngx_chat_store_enabled()) {
        return NGX_OK;
    }

    holes.data = place.holes;
    holes.len = place.holes_len;

    it = ngx_chat_store_add(&id, &a->ctx->name, room, user, content, ts,
                            NULL, place.prior, &holes);
    if (it == NULL) {
        ngx_log_error(NGX_LOG_ALERT, a->r->connection->log, 0,
                      "chat: message %V delivered but not queued for "
                      "storage", &id);
        return NGX_OK;
    }

    if (a->pending == 0 && ngx_queue_empty(&a->items)) {
        /* the request may go before its items: they forget it then */
        cln = ngx_pool_cleanup_add(a->r->pool, 0);
        if (cln == NULL) {
            ngx_chat_store_forget(it);
            return NGX_OK;
        }

        cln->handler = ngx_chat_api_cleanup;
        cln->data = a;
    }

    it->done = ngx_chat_api_stored;
    it->data = a;
    ngx_queue_insert_tail(&a->items, &it->owner);
    a->pending++;

    return NGX_OK;
}


static void
ngx_chat_api_stored(ngx_chat_store_item_t *it)
{
    ngx_chat_api_ctx_t  *a;
    ngx_http_request_t  *r;

    a = it->data;
    r = a->r;

    ngx_queue_remove(&it->owner);

    if (it->refused) {
        a->refused++;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat api: %V committed%s", &it->id,
                   it->refused ? ", refused" : "");

    if (--a->pending) {
        return;
    }

    if (a->key.data) {
        ngx_chat_shm_key_commit(a->ctx, &a->key, a->refused);
    }

    if (a->refused) {
        ngx_http_finalize_request(r,
            ngx_chat_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                               "the message could not be stored"));
        return;
    }

    ngx_http_finalize_request(r, ngx_chat_api_published(a));
}


/* {"id":ID} or {"ids":[ID...]} */

static ngx_int_t
ngx_chat_api_published(ngx_chat_api_ctx_t *a)
{
    u_char      *p, *start;
    size_t       len;
    ngx_uint_t   i;

    len = sizeof("{\"ids\":[]}") + 2;

    for (i = 0; i < a->nids; i++) {
        len += a->ids[i].len + 3;
    }

    start = ngx_pnalloc(a->r->pool, len);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!a->broadcast) {
        p = ngx_sprintf(start, "{\"id\":\"%V\"}", &a->ids[0]);
        return ngx_chat_api_send(a->r, NGX_HTTP_OK, start, p - start);
    }

    p = ngx_cpymem(start, "{\"ids\":[", sizeof("{\"ids\":[") - 1);

    for (i = 0; i < a->nids; i++) {
        p = ngx_sprintf(p, "%s\"%V\"", i ? "," : "", &a->ids[i]);
    }

    p = ngx_cpymem(p, "]}", 2);

    return ngx_chat_api_send(a->r, NGX_HTTP_OK, start, p - start);
}


/* {"users":[U...]}: every server's, as the zone knows them */

static ngx_int_t
ngx_chat_api_who(ngx_chat_api_ctx_t *a)
{
    u_char       *p, *start;
    size_t        len;
    ngx_str_t     room, *users;
    ngx_uint_t    i;
    ngx_array_t  *list;

    if (ngx_chat_api_string(a, "room", &room, NGX_CHAT_MAX_ROOM_NAME, 1)
        != NGX_OK)
    {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"room\" must be a string of 1 to 128 "
                                  "bytes");
    }

    list = ngx_chat_shm_users(a->ctx, &room, 0, a->r->pool);
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    users = list->elts;
    len = sizeof("{\"users\":[]}");

    for (i = 0; i < list->nelts; i++) {
        len += ngx_chat_wire_str_len(&users[i]) + 1;
    }

    start = ngx_pnalloc(a->r->pool, len);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(start, "{\"users\":[", sizeof("{\"users\":[") - 1);

    for (i = 0; i < list->nelts; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_chat_wire_str(p, &users[i]);
    }

    p = ngx_cpymem(p, "]}", 2);

    return ngx_chat_api_send(a->r, NGX_HTTP_OK, start, p - start);
}


/*
 * {"messages":[M...],"complete":B}: the WebSocket reply without its type
 * and room; from the ring, or, when the ring cannot answer and there is
 * storage, from PostgreSQL
 */

static ngx_int_t
ngx_chat_api_history(ngx_chat_api_ctx_t *a)
{
    u_char              *p;
    size_t               hdr, skip;
    json_t              *l;
    ngx_int_t            rc;
    ngx_str_t            room, before, *beforep, body;
    ngx_uint_t           limit, storage;
    ngx_chat_buf_t      *b;
    ngx_pool_cleanup_t  *cln;

    if (ngx_chat_api_string(a, "room", &room, NGX_CHAT_MAX_ROOM_NAME, 1)
        != NGX_OK)
    {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"room\" must be a string of 1 to 128 "
                                  "bytes");
    }

    limit = 50;
    l = json_object_get(a->json, "limit");

    if (l) {
        if (!json_is_integer(l) || json_integer_value(l) < 0) {
            return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST,
                                      "bad_request",
                                      "\"limit\" must be a non-negative "
                                      "integer");
        }

        limit = (ngx_uint_t) ngx_min(json_integer_value(l),
                                     NGX_CHAT_MAX_HISTORY);
    }

    beforep = NULL;

    switch (ngx_chat_api_string(a, "before", &before, NGX_CHAT_ID_LEN + 64,
                                0))
    {
    case NGX_OK:
        beforep = &before;
        break;
    case NGX_ERROR:
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"before\" must be a message id");
    default:
        break;
    }

    storage = 0;

    b = ngx_chat_shm_history(a->ctx, &room, limit, beforep, &storage,
                             a->r->connection->log);

    /* also a room the zone does not know (yet, or since a restart) */

    if (b == NULL && ngx_chat_store_enabled()) {
        a->limit = limit;
        a->room.data = ngx_pstrdup(a->r->pool, &room);
        if (a->room.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        a->room.len = room.len;

        if (beforep) {
            a->before.data = ngx_pstrdup(a->r->pool, beforep);
            if (a->before.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            a->before.len = beforep->len;
        }

        /* the ring now: what is not committed yet is there */

        cln = ngx_pool_cleanup_add(a->r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        a->ring = ngx_chat_shm_ring_copy(a->ctx, &room);
        cln->handler = ngx_chat_api_ring_free;
        cln->data = a;

        rc = ngx_chat_store_history(beforep ? NGX_CHAT_STORE_BEFORE
                                            : NGX_CHAT_STORE_LAST,
                                    &a->ctx->name, &a->room, beforep, limit,
                                    ngx_chat_api_history_read, a);

        if (rc == NGX_OK) {
            return NGX_DONE;
        }

        if (rc == NGX_BUSY) {
            return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "unavailable",
                                      "too many reads, try again later");
        }

        /* PostgreSQL is down: what the ring has, not complete */
        return ngx_chat_api_history_reply(a, NULL);
    }

    if (b == NULL) {
        ngx_str_set(&body, "{\"messages\":[],\"complete\":false}");

        if (!storage && beforep == NULL) {
            /* a room the zone does not know: nothing was ever said */
            ngx_str_set(&body, "{\"messages\":[],\"complete\":true}");
        }

        return ngx_chat_api_send(a->r, NGX_HTTP_OK, body.data, body.len);
    }

    /* the frame's payload, its "type" and "room" left out */

    hdr = (b->data[1] & 0x7f) == 126 ? 4 : (b->data[1] & 0x7f) == 127 ? 10
                                                                     : 2;
    skip = sizeof("{\"type\":\"history\",\"room\":") - 1
           + ngx_chat_wire_str_len(&room) + 1;

    if (b->len < hdr + skip + 1) {
        ngx_chat_buf_release(b);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(a->r->pool, b->len - hdr - skip + 1);
    if (p == NULL) {
        ngx_chat_buf_release(b);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p[0] = '{';
    ngx_memcpy(p + 1, b->data + hdr + skip, b->len - hdr - skip);

    body.data = p;
    body.len = b->len - hdr - skip + 1;

    ngx_chat_buf_release(b);

    return ngx_chat_api_send(a->r, NGX_HTTP_OK, body.data, body.len);
}


static void
ngx_chat_api_history_read(ngx_chat_store_rows_t *rows, void *data)
{
    ngx_chat_api_ctx_t *a = data;

    /* rows NULL: storage could not be read in time, what the ring has */

    ngx_http_finalize_request(a->r, ngx_chat_api_history_reply(a, rows));
}


/*
 * Stored rows (newest first) and the ring copied when asked, as the
 * WebSocket reply merges them: the stored messages the ring does not
 * have, then the ring, the newest "limit" of them; before an id, the rows
 * alone.  Without rows (PostgreSQL down), what the ring has, incomplete.
 */

static ngx_int_t
ngx_chat_api_history_reply(ngx_chat_api_ctx_t *a, ngx_chat_store_rows_t *rows)
{
    u_char                *p, *start;
    size_t                 len;
    ngx_int_t              i, from, end;
    ngx_str_t             *m;
    ngx_uint_t             complete, first, k;
    ngx_array_t            msgs;
    ngx_chat_shm_ring_t   *ring;
    ngx_chat_store_row_t  *row;

    ring = a->ring;

    if (ngx_array_init(&msgs, a->r->pool, 64, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = rows ? (ngx_int_t) rows->n - 1 : -1; i >= 0; i--) {
        row = &rows->rows[i];

        if (a->before.data == NULL && ngx_chat_api_in_ring(&row->id, ring)) {
            continue;
        }

        m = ngx_array_push(&msgs);
        if (m == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        m->data = ngx_pnalloc(a->r->pool,
                              ngx_chat_wire_message_len(&a->room, &row->id,
                                                        &row->user,
                                                        &row->content,
                                                        row->ts.len));
        if (m->data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        m->len = ngx_chat_wire_message(m->data, &a->room, &row->id,
                                       &row->user, &row->content, &row->ts)
                 - m->data;
    }

    /* the ring: all of it, or (without rows) what is before the id */

    end = ring ? (ngx_int_t) ring->n : 0;

    if (a->before.data) {
        end = 0;

        for (k = 0; rows == NULL && ring && k < ring->n; k++) {
            if (ring->msgs[k].id.len == a->before.len
                && ngx_memcmp(ring->msgs[k].id.data, a->before.data,
                              a->before.len) == 0)
            {
                end = (ngx_int_t) k;
                break;
            }
        }
    }

    for (i = 0; i < end; i++) {
        m = ngx_array_push(&msgs);
        if (m == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *m = ring->msgs[i].json;
    }

    /*
     * complete unless storage was not read, or a message accepted and not
     * committed yet is in neither the rows nor the ring
     */

    complete = rows
               && !ngx_chat_store_unstored(&a->ctx->name, &a->room,
                                           ngx_chat_api_in_ring, ring);

    from = (msgs.nelts > a->limit) ? (ngx_int_t) (msgs.nelts - a->limit) : 0;
    m = msgs.elts;

    len = sizeof("{\"messages\":[],\"complete\":false}");

    for (i = from; i < (ngx_int_t) msgs.nelts; i++) {
        len += m[i].len + 1;
    }

    start = ngx_pnalloc(a->r->pool, len);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(start, "{\"messages\":[", sizeof("{\"messages\":[") - 1);
    first = 1;

    for (i = from; i < (ngx_int_t) msgs.nelts; i++) {
        if (!first) {
            *p++ = ',';
        }

        first = 0;
        p = ngx_cpymem(p, m[i].data, m[i].len);
    }

    p = ngx_sprintf(p, "],\"complete\":%s}", complete ? "true" : "false");

    return ngx_chat_api_send(a->r, NGX_HTTP_OK, start, p - start);
}


static ngx_uint_t
ngx_chat_api_in_ring(ngx_str_t *id, void *data)
{
    ngx_chat_shm_ring_t *ring = data;

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


static void
ngx_chat_api_ring_free(void *data)
{
    ngx_chat_api_ctx_t *a = data;

    if (a->ring) {
        ngx_free(a->ring);
        a->ring = NULL;
    }
}


/*
 * {"closed":N}: every connection of the user on this nginx is closed with
 * 1008 "disconnected" (every worker reads it from the zone's bus; with
 * Redis every other server too); N is how many this server had
 */

static ngx_int_t
ngx_chat_api_disconnect(ngx_chat_api_ctx_t *a)
{
    u_char      *p, buf[sizeof("{\"closed\":}") + NGX_INT_T_LEN];
    ngx_str_t    user;
    ngx_uint_t   n;

    if (ngx_chat_api_string(a, "user", &user, NGX_CHAT_MAX_USER, 1)
        != NGX_OK)
    {
        return ngx_chat_api_error(a->r, NGX_HTTP_BAD_REQUEST, "bad_request",
                                  "\"user\" must be a string of 1 to 256 "
                                  "bytes");
    }

    n = ngx_chat_shm_user_connections(a->ctx, &user);

    if (ngx_chat_shm_kick(a->ctx, &user, 0, a->r->connection->log)
        != NGX_OK)
    {
        return ngx_chat_api_error(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "unavailable",
                                  "the chat zone is full, try again later");
    }

    ngx_chat_fanout_publish(a->fo);

    p = ngx_sprintf(buf, "{\"closed\":%ui}", n);

    return ngx_chat_api_send(a->r, NGX_HTTP_OK, buf, p - buf);
}


/* the request is gone before its messages were committed */

static void
ngx_chat_api_cleanup(void *data)
{
    ngx_chat_api_ctx_t *a = data;

    ngx_queue_t  *q;

    while (!ngx_queue_empty(&a->items)) {
        q = ngx_queue_head(&a->items);
        ngx_queue_remove(q);
        ngx_chat_store_forget(ngx_queue_data(q, ngx_chat_store_item_t,
                                             owner));
    }

    if (a->pending && a->key.data) {
        /* it is stored all the same: retries get its id from now on */
        ngx_chat_shm_key_commit(a->ctx, &a->key, 0);
    }

    a->pending = 0;
}


static ngx_int_t
ngx_chat_api_error(ngx_http_request_t *r, ngx_uint_t status, char *error,
    char *message)
{
    u_char     *p, *start;
    size_t      len;
    ngx_str_t   m;

    m.data = (u_char *) message;
    m.len = ngx_strlen(message);

    len = sizeof("{\"error\":\"\",\"message\":}") + ngx_strlen(error)
          + ngx_chat_wire_str_len(&m);

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(start, "{\"error\":\"%s\",\"message\":", error);
    p = ngx_chat_wire_str(p, &m);
    *p++ = '}';

    if (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        r->keepalive = 0;
    }

    return ngx_chat_api_send(r, status, start, p - start);
}


static ngx_int_t
ngx_chat_api_send(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
