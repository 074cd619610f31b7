
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The wire format (see ngx_chat_wire.h): one writer for each server object.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <zlib.h>
#include "ngx_chat_frame.h"
#include "ngx_chat_wire.h"


#define ngx_chat_wire_lit(p, s)  ngx_cpymem(p, s, sizeof(s) - 1)

/* a scratch buffer larger than this is freed after use */
#define NGX_CHAT_WIRE_SCRATCH_KEEP  65536


static ngx_chat_buf_t *ngx_chat_buf_deflate(ngx_chat_buf_t *b, u_char *payload,
    size_t len, ngx_uint_t wbits, ngx_int_t level, ngx_log_t *log);


/* the worker's deflate streams, by window bits, made on first need */
static z_stream  *ngx_chat_wire_zs[16];
static ngx_int_t  ngx_chat_wire_zlevel[16];
static u_char    *ngx_chat_wire_scratch;
static size_t     ngx_chat_wire_scratch_size;


ngx_chat_buf_t *
ngx_chat_buf_alloc(size_t len, ngx_log_t *log)
{
    ngx_chat_buf_t  *b;

    b = ngx_alloc(offsetof(ngx_chat_buf_t, data) + len, log);
    if (b == NULL) {
        return NULL;
    }

    b->refs = 1;
    b->len = len;
    b->deflated = NULL;
    b->plain_len = 0;
    b->wbits = 0;

    return b;
}


void
ngx_chat_buf_release(ngx_chat_buf_t *b)
{
    if (--b->refs == 0) {
        if (b->deflated) {
            ngx_chat_buf_release(b->deflated);
        }

        ngx_free(b);
    }
}


ngx_chat_buf_t *
ngx_chat_buf_deflated(ngx_chat_buf_t *b, ngx_uint_t wbits, ngx_int_t level,
    size_t min, ngx_log_t *log)
{
    size_t           hlen, len;
    u_char          *payload;
    ngx_uint_t       n;
    ngx_chat_buf_t  *z, **last;

    if (b->len < 2) {
        return b;
    }

    /* the payload: our own frames are FIN, unmasked, text */

    n = b->data[1] & 0x7f;
    hlen = (n == 127) ? 10 : (n == 126) ? 4 : 2;

    if (b->len < hlen) {
        return b;
    }

    payload = b->data + hlen;
    len = b->len - hlen;

    if (len < min || len == 0) {
        return b;
    }

    /*
     * a twin made with a window no larger serves this one; one made with
     * a larger window, when the payload is no longer than this window: no
     * distance in it can be farther back
     */

    last = &b->deflated;

    for (z = b->deflated; z; z = z->deflated) {
        if (z->wbits <= wbits || len <= (1u << wbits)) {
            return z;
        }

        last = &z->deflated;
    }

    z = ngx_chat_buf_deflate(b, payload, len, wbits, level, log);

    if (z == NULL) {
        return b;
    }

    *last = z;

    return z;
}


static ngx_chat_buf_t *
ngx_chat_buf_deflate(ngx_chat_buf_t *b, u_char *payload, size_t len,
    ngx_uint_t wbits, ngx_int_t level, ngx_log_t *log)
{
    int              rc;
    size_t           bound, out, hlen;
    z_stream        *zs;
    ngx_chat_buf_t  *z;

    zs = ngx_chat_wire_zs[wbits];

    if (zs == NULL) {
        zs = ngx_calloc(sizeof(z_stream), log);
        if (zs == NULL) {
            return NULL;
        }

        /* raw deflate; memLevel 8 is zlib's default (about 256 KB at 15) */

        rc = deflateInit2(zs, (int) level, Z_DEFLATED, - (int) wbits, 8,
                          Z_DEFAULT_STRATEGY);
        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "chat: deflateInit2() failed: %d", rc);
            ngx_free(zs);
            return NULL;
        }

        ngx_chat_wire_zs[wbits] = zs;
        ngx_chat_wire_zlevel[wbits] = level;

    } else {
        (void) deflateReset(zs);

        if (ngx_chat_wire_zlevel[wbits] != level) {
            /* a fresh stream: nothing to flush at the old level */
            if (deflateParams(zs, (int) level, Z_DEFAULT_STRATEGY) == Z_OK) {
                ngx_chat_wire_zlevel[wbits] = level;
            }
        }
    }

    /* a sync flush adds at most a few bytes to deflate's bound */

    bound = deflateBound(zs, len) + 16;

    if (ngx_chat_wire_scratch_size < bound) {
        if (ngx_chat_wire_scratch) {
            ngx_free(ngx_chat_wire_scratch);
        }

        ngx_chat_wire_scratch_size = 0;

        ngx_chat_wire_scratch = ngx_alloc(bound, log);
        if (ngx_chat_wire_scratch == NULL) {
            return NULL;
        }

        ngx_chat_wire_scratch_size = bound;
    }

    zs->next_in = payload;
    zs->avail_in = len;
    zs->next_out = ngx_chat_wire_scratch;
    zs->avail_out = bound;

    rc = deflate(zs, Z_SYNC_FLUSH);

    out = bound - zs->avail_out;
    z = NULL;

    if (rc != Z_OK || zs->avail_in != 0 || out < 4) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat: deflate() failed: %d", rc);
        goto done;
    }

    /* RFC 7692 7.2.1: the 00 00 ff ff of the sync flush is left out */

    out -= 4;

    hlen = ngx_chat_frame_header_size(out);

    z = ngx_chat_buf_alloc(hlen + out, log);
    if (z == NULL) {
        goto done;
    }

    (void) ngx_chat_frame_header(z->data, NGX_CHAT_FRAME_TEXT, out);
    z->data[0] |= 0x40;     /* RSV1: compressed */
    ngx_memcpy(z->data + hlen, ngx_chat_wire_scratch, out);
    z->wbits = wbits;
    z->plain_len = b->len;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat wire: deflated %uz bytes to %uz, window %ui",
                   len, out, wbits);

done:

    if (ngx_chat_wire_scratch_size > NGX_CHAT_WIRE_SCRATCH_KEEP) {
        ngx_free(ngx_chat_wire_scratch);
        ngx_chat_wire_scratch = NULL;
        ngx_chat_wire_scratch_size = 0;
    }

    return z;
}


void
ngx_chat_wire_deflate_done(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 16; i++) {
        if (ngx_chat_wire_zs[i]) {
            (void) deflateEnd(ngx_chat_wire_zs[i]);
            ngx_free(ngx_chat_wire_zs[i]);
            ngx_chat_wire_zs[i] = NULL;
        }
    }

    if (ngx_chat_wire_scratch) {
        ngx_free(ngx_chat_wire_scratch);
        ngx_chat_wire_scratch = NULL;
        ngx_chat_wire_scratch_size = 0;
    }
}


ngx_chat_buf_t *
ngx_chat_wire_frame_start(size_t max, u_char **payload, ngx_log_t *log)
{
    ngx_chat_buf_t  *b;

    b = ngx_chat_buf_alloc(NGX_CHAT_FRAME_MAX_HEADER + max, log);
    if (b == NULL) {
        return NULL;
    }

    *payload = b->data + NGX_CHAT_FRAME_MAX_HEADER;

    return b;
}


void
ngx_chat_wire_frame_end(ngx_chat_buf_t *b, u_char *end)
{
    size_t  len, hlen;

    len = end - (b->data + NGX_CHAT_FRAME_MAX_HEADER);
    hlen = ngx_chat_frame_header_size(len);

    ngx_memmove(b->data + hlen, b->data + NGX_CHAT_FRAME_MAX_HEADER, len);
    (void) ngx_chat_frame_header(b->data, NGX_CHAT_FRAME_TEXT, len);

    b->len = hlen + len;
}


ngx_chat_buf_t *
ngx_chat_wire_text(u_char *data, size_t len, ngx_log_t *log)
{
    size_t           hlen;
    ngx_chat_buf_t  *b;

    hlen = ngx_chat_frame_header_size(len);

    b = ngx_chat_buf_alloc(hlen + len, log);
    if (b == NULL) {
        return NULL;
    }

    (void) ngx_chat_frame_header(b->data, NGX_CHAT_FRAME_TEXT, len);
    ngx_memcpy(b->data + hlen, data, len);

    return b;
}


size_t
ngx_chat_wire_escape_len(u_char *s, size_t len)
{
    size_t   n;
    u_char  *last;

    n = len;

    for (last = s + len; s < last; s++) {

        if (*s < 0x20) {
            switch (*s) {
            case '\b': case '\f': case '\n': case '\r': case '\t':
                n += 1;
                break;
            default:
                n += 5;     /* \u00XX */
            }

        } else if (*s == '"' || *s == '\\') {
            n += 1;
        }
    }

    return n;
}


u_char *
ngx_chat_wire_escape(u_char *dst, u_char *s, size_t len)
{
    u_char  *last;

    static u_char  hex[] = "0123456789abcdef";

    for (last = s + len; s < last; s++) {

        if (*s >= 0x20 && *s != '"' && *s != '\\') {
            *dst++ = *s;
            continue;
        }

        *dst++ = '\\';

        switch (*s) {
        case '"':  *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '\b': *dst++ = 'b'; break;
        case '\f': *dst++ = 'f'; break;
        case '\n': *dst++ = 'n'; break;
        case '\r': *dst++ = 'r'; break;
        case '\t': *dst++ = 't'; break;
        default:
            *dst++ = 'u';
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = hex[*s >> 4];
            *dst++ = hex[*s & 0xf];
        }
    }

    return dst;
}


u_char *
ngx_chat_wire_str(u_char *dst, ngx_str_t *s)
{
    *dst++ = '"';
    dst = ngx_chat_wire_escape(dst, s->data, s->len);
    *dst++ = '"';

    return dst;
}


ngx_chat_buf_t *
ngx_chat_wire_welcome(ngx_str_t *user, ngx_log_t *log)
{
    u_char          *p;
    ngx_chat_buf_t  *b;

    b = ngx_chat_wire_frame_start(sizeof("{\"type\":\"welcome\",\"user\":}") - 1
                                  + ngx_chat_wire_str_len(user), &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"welcome\",\"user\":");
    p = ngx_chat_wire_str(p, user);
    *p++ = '}';

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_joined(ngx_str_t *room, ngx_uint_t members, ngx_log_t *log)
{
    u_char          *p;
    ngx_chat_buf_t  *b;

    b = ngx_chat_wire_frame_start(sizeof("{\"type\":\"joined\",\"room\":,"
                                         "\"members\":}") - 1
                                  + ngx_chat_wire_str_len(room)
                                  + NGX_INT_T_LEN, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"joined\",\"room\":");
    p = ngx_chat_wire_str(p, room);
    p = ngx_sprintf(p, ",\"members\":%ui}", members);

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_left(ngx_str_t *room, ngx_log_t *log)
{
    u_char          *p;
    ngx_chat_buf_t  *b;

    b = ngx_chat_wire_frame_start(sizeof("{\"type\":\"left\",\"room\":}") - 1
                                  + ngx_chat_wire_str_len(room), &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"left\",\"room\":");
    p = ngx_chat_wire_str(p, room);
    *p++ = '}';

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_refreshed(int64_t exp, ngx_log_t *log)
{
    u_char          *p;
    ngx_chat_buf_t  *b;

    b = ngx_chat_wire_frame_start(sizeof("{\"type\":\"refreshed\",\"exp\":}")
                                  - 1 + NGX_INT64_LEN, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_sprintf(p, "{\"type\":\"refreshed\",\"exp\":%L}", exp);

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_ack(ngx_str_t *ref, ngx_str_t *id, ngx_log_t *log)
{
    u_char          *p;
    size_t           len;
    ngx_chat_buf_t  *b;

    /*
     * the id is this server's own (digits, '-', hex digits): no escaping,
     * which callgrind put at ~400 instructions an ack
     */

    len = sizeof("{\"type\":\"ack\",\"ref\":,\"id\":\"\"}") - 1 + id->len;

    if (ref) {
        len += ngx_chat_wire_str_len(ref);
    }

    b = ngx_chat_wire_frame_start(len, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"ack\"");

    if (ref) {
        p = ngx_chat_wire_lit(p, ",\"ref\":");
        p = ngx_chat_wire_str(p, ref);
    }

    p = ngx_chat_wire_lit(p, ",\"id\":\"");
    p = ngx_cpymem(p, id->data, id->len);
    p = ngx_chat_wire_lit(p, "\"}");

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_error(char *code, char *message, ngx_str_t *ref,
    ngx_int_t retry_ms, ngx_log_t *log)
{
    u_char          *p;
    size_t           len;
    ngx_str_t        msg;
    ngx_chat_buf_t  *b;

    msg.data = (u_char *) message;
    msg.len = ngx_strlen(message);

    len = sizeof("{\"type\":\"error\",\"code\":\"\",\"message\":}") - 1
          + ngx_strlen(code) + ngx_chat_wire_str_len(&msg)
          + sizeof(",\"retry_after_ms\":") - 1 + NGX_INT_T_LEN;

    if (ref) {
        len += sizeof(",\"ref\":") - 1 + ngx_chat_wire_str_len(ref);
    }

    b = ngx_chat_wire_frame_start(len, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_sprintf(p, "{\"type\":\"error\",\"code\":\"%s\",\"message\":",
                    code);
    p = ngx_chat_wire_str(p, &msg);

    if (ref) {
        p = ngx_chat_wire_lit(p, ",\"ref\":");
        p = ngx_chat_wire_str(p, ref);
    }

    if (retry_ms >= 0) {
        p = ngx_sprintf(p, ",\"retry_after_ms\":%i", retry_ms);
    }

    *p++ = '}';

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_who(ngx_str_t *room, ngx_str_t *users, ngx_uint_t n,
    ngx_log_t *log)
{
    u_char          *p;
    size_t           len;
    ngx_uint_t       i;
    ngx_chat_buf_t  *b;

    len = sizeof("{\"type\":\"who\",\"room\":,\"users\":[]}") - 1
          + ngx_chat_wire_str_len(room);

    for (i = 0; i < n; i++) {
        len += ngx_chat_wire_str_len(&users[i]) + 1;
    }

    b = ngx_chat_wire_frame_start(len, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"who\",\"room\":");
    p = ngx_chat_wire_str(p, room);
    p = ngx_chat_wire_lit(p, ",\"users\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_chat_wire_str(p, &users[i]);
    }

    p = ngx_chat_wire_lit(p, "]}");

    ngx_chat_wire_frame_end(b, p);

    return b;
}


ngx_chat_buf_t *
ngx_chat_wire_history(ngx_str_t *room, ngx_str_t *msgs, ngx_uint_t n,
    ngx_uint_t complete, ngx_log_t *log)
{
    u_char          *p;
    size_t           len;
    ngx_uint_t       i;
    ngx_chat_buf_t  *b;

    len = sizeof("{\"type\":\"history\",\"room\":,\"messages\":[],"
                 "\"complete\":false}") - 1
          + ngx_chat_wire_str_len(room);

    for (i = 0; i < n; i++) {
        len += msgs[i].len + 1;
    }

    b = ngx_chat_wire_frame_start(len, &p, log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_lit(p, "{\"type\":\"history\",\"room\":");
    p = ngx_chat_wire_str(p, room);
    p = ngx_chat_wire_lit(p, ",\"messages\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, msgs[i].data, msgs[i].len);
    }

    if (complete) {
        p = ngx_chat_wire_lit(p, "],\"complete\":true}");

    } else {
        p = ngx_chat_wire_lit(p, "],\"complete\":false}");
    }

    ngx_chat_wire_frame_end(b, p);

    return b;
}


size_t
ngx_chat_wire_message_len(ngx_str_t *room, ngx_str_t *id, ngx_str_t *user,
    ngx_str_t *content, size_t ts_len)
{
    return sizeof("{\"type\":\"message\",\"room\":,\"id\":,\"user\":,"
                  "\"content\":,\"ts\":}") - 1
           + ngx_chat_wire_str_len(room) + ngx_chat_wire_str_len(id)
           + ngx_chat_wire_str_len(user) + ngx_chat_wire_str_len(content)
           + ts_len;
}


u_char *
ngx_chat_wire_message_head(u_char *p, ngx_str_t *room)
{
    p = ngx_chat_wire_lit(p, "{\"type\":\"message\",\"room\":");
    p = ngx_chat_wire_str(p, room);

    return ngx_chat_wire_lit(p, ",\"id\":");
}


u_char *
ngx_chat_wire_message_tail(u_char *p, ngx_str_t *user, ngx_str_t *content,
    ngx_str_t *ts)
{
    p = ngx_chat_wire_lit(p, ",\"user\":");
    p = ngx_chat_wire_str(p, user);
    p = ngx_chat_wire_lit(p, ",\"content\":");
    p = ngx_chat_wire_str(p, content);
    p = ngx_chat_wire_lit(p, ",\"ts\":");
    p = ngx_cpymem(p, ts->data, ts->len);
    *p++ = '}';

    return p;
}


u_char *
ngx_chat_wire_message(u_char *p, ngx_str_t *room, ngx_str_t *id,
    ngx_str_t *user, ngx_str_t *content, ngx_str_t *ts)
{
    p = ngx_chat_wire_message_head(p, room);
    p = ngx_chat_wire_str(p, id);

    return ngx_chat_wire_message_tail(p, user, content, ts);
}


size_t
ngx_chat_wire_presence_len(ngx_str_t *room, ngx_str_t *user)
{
    return sizeof("{\"type\":\"presence\",\"room\":,\"user\":,\"event\":"
                  "\"leave\"}") - 1
           + ngx_chat_wire_str_len(room) + ngx_chat_wire_str_len(user);
}


u_char *
ngx_chat_wire_presence(u_char *p, ngx_str_t *room, ngx_str_t *user,
    ngx_uint_t join)
{
    p = ngx_chat_wire_lit(p, "{\"type\":\"presence\",\"room\":");
    p = ngx_chat_wire_str(p, room);
    p = ngx_chat_wire_lit(p, ",\"user\":");
    p = ngx_chat_wire_str(p, user);

    if (join) {
        return ngx_chat_wire_lit(p, ",\"event\":\"join\"}");
    }

    return ngx_chat_wire_lit(p, ",\"event\":\"leave\"}");
}
