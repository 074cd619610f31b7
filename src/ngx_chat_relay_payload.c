/*
 * Copyright (C) ngx_chat_module authors
 *
 * What arrives from Redis, validated as client input is before any of it
 * reaches the zone (the payloads and the rules: the top of
 * ngx_chat_relay.c); invalid ones dropped, counted and logged at most
 * once a second.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>
#include "ngx_chat.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_relay_int.h"


/*
 * A "message" object without its strings and ts; each string may take 6
 * bytes a byte escaped ("\u001f")
 */
#define NGX_CHAT_RELAY_MESSAGE                                              \
    (sizeof("{\"type\":\"message\",\"room\":\"\",\"id\":\"\","              \
            "\"user\":\"\",\"content\":\"\",\"ts\":}") - 1 + NGX_INT64_LEN)


static ngx_int_t ngx_chat_relay_parse_message(ngx_chat_relay_t *rl,
    ngx_str_t *arg, ngx_chat_relay_payload_t *pl);
static ngx_int_t ngx_chat_relay_json_str(json_t *obj, const char *key,
    ngx_str_t *value);
static ngx_uint_t ngx_chat_relay_text(ngx_str_t *s);
static ngx_int_t ngx_chat_relay_sync_arg(ngx_str_t *arg);
static ngx_int_t ngx_chat_relay_kick_parse(ngx_str_t *arg,
    ngx_chat_relay_payload_t *pl);


/*
 * "<sid> <kind>[ <arg>]" on a channel of ours (see the top of this file):
 * NGX_OK with *pl filled, NGX_DONE for our own payloads, NGX_DECLINED with
 * pl->error when invalid, NGX_ERROR when out of memory
 */

ngx_int_t
ngx_chat_relay_parse(ngx_chat_relay_t *rl, ngx_str_t *channel,
    ngx_str_t *payload, ngx_chat_relay_payload_t *pl)
{
    u_char      *p, *last, ch;
    ngx_str_t    arg;
    ngx_uint_t   i;

    ngx_memzero(pl, sizeof(ngx_chat_relay_payload_t));
    ngx_str_set(&pl->sid, "unknown");

    p = payload->data;
    last = p + payload->len;

    if (payload->len < sizeof(rl->sid) + 2 || p[sizeof(rl->sid)] != ' ') {
        pl->error = "no server id";
        return NGX_DECLINED;
    }

    if (ngx_memcmp(p, rl->sid, sizeof(rl->sid)) == 0) {
        return NGX_DONE;
    }

    /* as ngx_chat_relay_start() writes it: lower case */

    for (i = 0; i < sizeof(rl->sid); i++) {
        ch = p[i];

        if (ch >= '0' && ch <= '9') {
            pl->server = pl->server * 16 + (ch - '0');

        } else if (ch >= 'a' && ch <= 'f') {
            pl->server = pl->server * 16 + (ch - 'a' + 10);

        } else {
            pl->error = "bad server id";
            return NGX_DECLINED;
        }
    }

    pl->sid.data = p;
    pl->sid.len = sizeof(rl->sid);

    p += sizeof(rl->sid) + 1;
    pl->kind = *p++;

    if (p < last) {
        if (*p != ' ') {
            pl->error = "bad header";
            return NGX_DECLINED;
        }

        p++;
    }

    arg.data = p;
    arg.len = last - p;

    if (channel->len == rl->control.len
        && ngx_memcmp(channel->data, rl->control.data, channel->len) == 0)
    {
        if (pl->kind == 'K') {
            return ngx_chat_relay_kick_parse(&arg, pl);
        }

        if (pl->kind != 'H' || arg.len) {
            pl->error = "not a heartbeat";
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (channel->len <= rl->prefix.len
        || ngx_memcmp(channel->data, rl->prefix.data, rl->prefix.len) != 0)
    {
        pl->error = "unknown channel";
        return NGX_DECLINED;
    }

    pl->room.data = channel->data + rl->prefix.len;
    pl->room.len = channel->len - rl->prefix.len;

    if (pl->room.len > NGX_CHAT_MAX_ROOM_NAME
        || !ngx_chat_relay_text(&pl->room))
    {
        pl->error = "bad room name";
        return NGX_DECLINED;
    }

    switch (pl->kind) {

    case 'M':
    case 'R':
        return ngx_chat_relay_parse_message(rl, &arg, pl);

    case 'J':
    case 'L':
        if (arg.len == 0 || arg.len > NGX_CHAT_MAX_USER
            || !ngx_chat_relay_text(&arg))
        {
            pl->error = "bad presence user";
            return NGX_DECLINED;
        }

        pl->user = arg;
        return NGX_OK;

    case 'S':
        if (ngx_chat_relay_sync_arg(&arg) != NGX_OK) {
            pl->error = "bad sync request";
            return NGX_DECLINED;
        }

        pl->sync = arg;
        return NGX_OK;

    default:
        pl->error = "unknown kind";
        return NGX_DECLINED;
    }
}


/* "<id> <json>": the JSON must be exactly the "message" object of the id */

static ngx_int_t
ngx_chat_relay_parse_message(ngx_chat_relay_t *rl, ngx_str_t *arg,
    ngx_chat_relay_payload_t *pl)
{
    u_char        *p, *last, ts_data[NGX_INT64_LEN];
    size_t         max, len;
    uint64_t       num, tag;
    json_t        *json, *v;
    uint32_t       utf8;
    ngx_str_t      text, type, room, id, user, content, ts;
    json_int_t     n;
    json_error_t   err;

    last = arg->data + arg->len;

    p = ngx_strlchr(arg->data, last, ' ');
    if (p == NULL) {
        pl->error = "no message";
        return NGX_DECLINED;
    }

    pl->id.data = arg->data;
    pl->id.len = p - arg->data;

    if (ngx_chat_remote_id_parse(&pl->id, &num, &tag) != NGX_OK) {
        pl->error = "bad message id";
        return NGX_DECLINED;
    }

    if (tag != ngx_chat_server_tag(pl->server)) {
        /* each server's ids carry its tag: the dedupe depends on it */
        pl->error = "message id of another server";
        return NGX_DECLINED;
    }

    text.data = p + 1;
    text.len = last - text.data;

    /* what the largest message of the zone's locations can take */

    max = NGX_CHAT_RELAY_MESSAGE
          + 6 * (NGX_CHAT_MAX_ROOM_NAME + NGX_CHAT_ID_LEN + NGX_CHAT_MAX_USER
                 + rl->ctx->max_message);

    if (text.len > max) {
        pl->error = "message too large";
        return NGX_DECLINED;
    }

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&utf8, text.data, text.len)
        != NGX_CHAT_UTF8_ACCEPT)
    {
        pl->error = "message not UTF-8";
        return NGX_DECLINED;
    }

    /*
     * jansson refuses what follows the object, U+0000 in strings (no
     * JSON_ALLOW_NUL) and lone surrogate escapes
     */

    json = json_loadb((const char *) text.data, text.len,
                      JSON_REJECT_DUPLICATES, &err);
    if (json == NULL) {
        pl->error = "message not JSON";
        return NGX_DECLINED;
    }

    pl->error = "not a message object";

    if (!json_is_object(json) || json_object_size(json) != 6
        || ngx_chat_relay_json_str(json, "type", &type) != NGX_OK
        || ngx_chat_relay_json_str(json, "room", &room) != NGX_OK
        || ngx_chat_relay_json_str(json, "id", &id) != NGX_OK
        || ngx_chat_relay_json_str(json, "user", &user) != NGX_OK
        || ngx_chat_relay_json_str(json, "content", &content) != NGX_OK)
    {
        goto failed;
    }

    v = json_object_get(json, "ts");

    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        goto failed;
    }

    n = json_integer_value(v);

    if (type.len != sizeof("message") - 1
        || ngx_strncmp(type.data, "message", type.len) != 0)
    {
        goto failed;
    }

    if (room.len != pl->room.len
        || ngx_memcmp(room.data, pl->room.data, room.len) != 0)
    {
        pl->error = "message of another room";
        goto failed;
    }

    if (id.len != pl->id.len
        || ngx_memcmp(id.data, pl->id.data, id.len) != 0)
    {
        pl->error = "message of another id";
        goto failed;
    }

    if (user.len == 0 || user.len > NGX_CHAT_MAX_USER) {
        pl->error = "bad message user";
        goto failed;
    }

    if (content.len > rl->ctx->max_message) {
        pl->error = "message too large";
        goto failed;
    }

    ts.data = ts_data;
    ts.len = ngx_sprintf(ts_data, "%L", (int64_t) n) - ts_data;

    /* written again: what members and the ring get is ours */

    len = ngx_chat_wire_message_len(&pl->room, &pl->id, &user, &content,
                                    ts.len);

    if (len > rl->json_size) {
        p = ngx_alloc(ngx_max(len, 4096), ngx_cycle->log);
        if (p == NULL) {
            json_decref(json);
            return NGX_ERROR;
        }

        if (rl->json) {
            ngx_free(rl->json);
        }

        rl->json = p;
        rl->json_size = ngx_max(len, 4096);
    }

    pl->json.data = rl->json;
    pl->json.len = ngx_chat_wire_message(rl->json, &pl->room, &pl->id, &user,
                                         &content, &ts)
                   - rl->json;

    json_decref(json);

    pl->error = NULL;

    return NGX_OK;

failed:

    json_decref(json);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_chat_relay_json_str(json_t *obj, const char *key, ngx_str_t *value)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) json_string_value(v);
    value->len = json_string_length(v);

    return NGX_OK;
}


/* UTF-8 without U+0000, as room names and user ids are */

static ngx_uint_t
ngx_chat_relay_text(ngx_str_t *s)
{
    uint32_t  utf8;

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    return s->len > 0
           && ngx_chat_utf8_validate(&utf8, s->data, s->len)
              == NGX_CHAT_UTF8_ACCEPT
           && ngx_strlchr(s->data, s->data + s->len, '\0') == NULL;
}


/*
 * An invalid payload: dropped and counted; one log line a second at most,
 * which says how many more were dropped since the previous one (the
 * heartbeat reports those left)
 */

void
ngx_chat_relay_invalid(ngx_chat_relay_t *rl, ngx_chat_relay_payload_t *pl)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat relay: dropped an invalid payload from server %V: "
                   "%s", &pl->sid, pl->error);

    ngx_chat_remote_count_invalid(rl->ctx);

    if (rl->invalid_time == ngx_time()) {
        rl->invalid_held++;
        return;
    }

    if (rl->invalid_held) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: dropped an invalid payload from Redis in zone "
                      "\"%V\": %s (server %V), and %ui more since the last "
                      "report", &rl->ctx->name, pl->error, &pl->sid,
                      rl->invalid_held);

    } else {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: dropped an invalid payload from Redis in zone "
                      "\"%V\": %s (server %V)", &rl->ctx->name, pl->error,
                      &pl->sid);
    }

    rl->invalid_time = ngx_time();
    rl->invalid_held = 0;
}


void
ngx_chat_relay_invalid_report(ngx_chat_relay_t *rl)
{
    if (rl->invalid_held == 0 || rl->invalid_time == ngx_time()) {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "chat: dropped %ui more invalid payloads from Redis in "
                  "zone \"%V\"", rl->invalid_held, &rl->ctx->name);

    rl->invalid_time = ngx_time();
    rl->invalid_held = 0;
}


/*
 * "", "-", or "+" and up to NGX_CHAT_MAX_SERVERS " <12 hex>:<number>"
 * (see the top of this file)
 */

static ngx_int_t
ngx_chat_relay_sync_arg(ngx_str_t *arg)
{
    u_char      *p, *last, *start;
    ngx_uint_t   n, i;

    p = arg->data;
    last = p + arg->len;

    if (arg->len == 0 || (arg->len == 1 && *p == '-')) {
        return NGX_OK;
    }

    if (*p++ != '+') {
        return NGX_ERROR;
    }

    for (n = 0; p < last; n++) {
        if (n == NGX_CHAT_MAX_SERVERS || last - p < 15 || *p++ != ' ') {
            return NGX_ERROR;
        }

        for (i = 0; i < 12; i++, p++) {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
                return NGX_ERROR;
            }
        }

        if (*p++ != ':') {
            return NGX_ERROR;
        }

        start = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == start || p - start > (ssize_t) NGX_INT64_LEN - 1
            || (p < last && *p != ' '))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_relay_kick_parse(ngx_str_t *arg, ngx_chat_relay_payload_t *pl)
{
    if (arg->len == 0 || arg->len > NGX_CHAT_MAX_USER
        || !ngx_chat_relay_text(arg))
    {
        pl->error = "bad disconnect user";
        return NGX_DECLINED;
    }

    pl->user = *arg;

    return NGX_OK;
}
