
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the wire format (ngx_chat_wire.c) alone: it knows
 * nothing of rooms, connections or the zone, so it runs without the
 * stand-in nginx of proto_fuzz; the two nginx functions it calls,
 * ngx_alloc() and ngx_sprintf() (for %s, %i and %ui only), are defined
 * here.
 *
 * Input: byte 0 picks the object and its flags, bytes 1-8 are a number
 * (little endian), byte 9 how many times the list of strings is repeated
 * for "who" and raw payloads (to reach frames over 64k), and the rest are
 * the strings, separated by 0xff (a byte UTF-8 never has).  The wire format takes UTF-8 (that is its
 * contract): an input with a string that is not is skipped.
 *
 * Each frame written must be one FIN text frame with the shortest header
 * for its length, of exactly that length, and its payload must parse with
 * jansson (duplicate keys refused) to the very object jansson builds from
 * the same values: every string escaped so that it comes back as it was.
 * A "message" object must be the same whether written at once or as head,
 * id and tail (as the zone writes it), and no longer than its _len
 * function said; every buffer is allocated to its exact size, so that ASan
 * sees any write past it.
 *
 * Each frame's compressed twin (permessage-deflate, a window and level
 * derived from its length) must be one FIN text frame with RSV1 whose
 * payload, with 00 00 ff ff appended, inflates with that window to the
 * plain payload; asked again, the same twin comes back.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>
#include <zlib.h>
#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_wire.h"


#define HEAD          10
#define MAX_STRINGS   64

#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


/* the nginx functions ngx_chat_wire.c calls */

void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size ? size : 1);
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size ? size : 1);
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    /* only deflate's failures log: none is expected */
    fprintf(stderr, "ngx_log_error(%s)\n", fmt);
    abort();
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    char     *s;
    va_list   args;

    va_start(args, fmt);

    while (*fmt) {
        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;

        if (fmt[0] == 'u' && fmt[1] == 'i') {
            buf += sprintf((char *) buf, "%lu",
                           (unsigned long) va_arg(args, ngx_uint_t));
            fmt += 2;

        } else if (fmt[0] == 'i') {
            buf += sprintf((char *) buf, "%ld",
                           (long) va_arg(args, ngx_int_t));
            fmt++;

        } else if (fmt[0] == 's') {
            s = va_arg(args, char *);
            buf = ngx_cpymem(buf, s, strlen(s));
            fmt++;

        } else {
            fprintf(stderr, "ngx_sprintf(\"%s\"): not emulated\n", fmt - 1);
            abort();
        }
    }

    va_end(args);

    return buf;
}


static ngx_log_t  wlog;


static void deflate_check(ngx_chat_buf_t *b, u_char *payload, size_t len);


static json_t *
jstr(ngx_str_t *s)
{
    json_t  *j;

    j = json_stringn((const char *) s->data, s->len);
    ASSERT(j != NULL);

    return j;
}


/* the frame: its payload must be exactly that of the object expected */

static void
frame_check(ngx_chat_buf_t *b, json_t *expect, u_char *raw, size_t raw_len)
{
    u_char        *p;
    size_t         hlen;
    uint64_t       plen;
    ngx_uint_t     i;
    json_t        *j;
    json_error_t   err;

    ASSERT(b != NULL && b->refs == 1 && b->len >= 2);

    p = b->data;

    ASSERT(p[0] == (0x80 | NGX_CHAT_FRAME_TEXT));
    ASSERT((p[1] & 0x80) == 0);

    plen = p[1];
    hlen = 2;

    if (plen == 126) {
        ASSERT(b->len >= 4);
        plen = ((uint64_t) p[2] << 8) | p[3];
        hlen = 4;
        ASSERT(plen >= 126);

    } else if (plen == 127) {
        ASSERT(b->len >= 10);
        plen = 0;

        for (i = 2; i < 10; i++) {
            plen = (plen << 8) | p[i];
        }

        hlen = 10;
        ASSERT(plen > 0xffff);
    }

    ASSERT(b->len == hlen + plen);
    ASSERT(hlen == ngx_chat_frame_header_size(plen));

    if (raw) {
        ASSERT(plen == raw_len && ngx_memcmp(p + hlen, raw, raw_len) == 0);
    }

    if (expect) {
        j = json_loadb((const char *) p + hlen, plen,
                       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);

        if (j == NULL) {
            fprintf(stderr, "json_loadb: %s at %d: %.*s\n", err.text,
                    err.position, (int) ngx_min(plen, 2048), p + hlen);
            abort();
        }

        if (!json_equal(j, expect)) {
            fprintf(stderr, "not the object expected: %.*s\n",
                    (int) ngx_min(plen, 2048), p + hlen);
            abort();
        }

        json_decref(j);
        json_decref(expect);
    }

    deflate_check(b, p + hlen, plen);

    ngx_chat_buf_release(b);
}


static void
deflate_check(ngx_chat_buf_t *b, u_char *payload, size_t len)
{
    int              rc;
    u_char          *out, *zp;
    size_t           zlen, zhlen;
    z_stream         zs;
    ngx_uint_t       wbits, i;
    ngx_int_t        level;
    ngx_chat_buf_t  *z;

    static u_char  tail[4] = { 0x00, 0x00, 0xff, 0xff };

    wbits = 9 + len % 7;
    level = 1 + len % 9;

    z = ngx_chat_buf_deflated(b, wbits, level, 0, &wlog);

    ASSERT(z != NULL);
    ASSERT(ngx_chat_buf_deflated(b, wbits, level, 0, &wlog) == z);

    if (z == b) {
        /* only an empty payload goes as it is */
        ASSERT(len == 0);
        return;
    }

    ASSERT(z->refs == 1 && z->data[0] == (0x80 | 0x40 | NGX_CHAT_FRAME_TEXT));
    ASSERT(z->plain_len == b->len);

    zlen = z->data[1];
    zhlen = 2;

    if (zlen == 126) {
        zlen = ((size_t) z->data[2] << 8) | z->data[3];
        zhlen = 4;

    } else if (zlen == 127) {
        zlen = 0;

        for (i = 2; i < 10; i++) {
            zlen = (zlen << 8) | z->data[i];
        }

        zhlen = 10;
    }

    /* a stored block at worst: 5 bytes per 16k, the final empty one */
    ASSERT(z->len == zhlen + zlen && zlen <= len + 5 * (len / 16384 + 2));
    zp = z->data + zhlen;

    out = malloc(len + 1);
    ASSERT(out != NULL);

    ngx_memzero(&zs, sizeof(z_stream));
    ASSERT(inflateInit2(&zs, - (int) wbits) == Z_OK);

    zs.next_in = zp;
    zs.avail_in = zlen;
    zs.next_out = out;
    zs.avail_out = len + 1;

    rc = inflate(&zs, Z_SYNC_FLUSH);
    ASSERT(rc == Z_OK || rc == Z_BUF_ERROR);

    zs.next_in = tail;
    zs.avail_in = 4;

    rc = inflate(&zs, Z_SYNC_FLUSH);
    ASSERT(rc == Z_OK || rc == Z_BUF_ERROR);

    ASSERT(zs.avail_out == 1 && ngx_memcmp(out, payload, len) == 0);

    inflateEnd(&zs);
    free(out);
}


/*
 * A "message" object written at once, and as the zone writes it (head,
 * then the id, then the tail): the same bytes, within the _len
 */

static ngx_str_t
message(ngx_str_t *room, ngx_str_t *id, ngx_str_t *user, ngx_str_t *content,
    ngx_str_t *ts, json_t **expect)
{
    u_char     *m, *m2, *p;
    size_t      len;
    ngx_str_t   s;

    len = ngx_chat_wire_message_len(room, id, user, content, ts->len);

    m = malloc(len);
    m2 = malloc(len);
    ASSERT(m != NULL && m2 != NULL);

    s.data = m;
    s.len = ngx_chat_wire_message(m, room, id, user, content, ts) - m;
    ASSERT(s.len <= len);

    p = ngx_chat_wire_message_head(m2, room);
    p = ngx_chat_wire_str(p, id);
    p = ngx_chat_wire_message_tail(p, user, content, ts);
    ASSERT((size_t) (p - m2) == s.len && ngx_memcmp(m, m2, s.len) == 0);

    free(m2);

    *expect = json_pack("{s:s, s:o, s:o, s:o, s:o, s:I}",
                        "type", "message", "room", jstr(room), "id", jstr(id),
                        "user", jstr(user), "content", jstr(content),
                        "ts", (json_int_t) strtoll((char *) ts->data, NULL,
                                                   10));
    ASSERT(*expect != NULL);

    return s;
}


/* an id of the form the module makes: digits, then "-" and hex digits */

static int
ack_id(ngx_str_t *id)
{
    size_t  i;

    if (id->len == 0) {
        return 0;
    }

    for (i = 0; i < id->len; i++) {
        if (!((id->data[i] >= '0' && id->data[i] <= '9')
              || (id->data[i] >= 'a' && id->data[i] <= 'f')
              || id->data[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char          *p, *last, *end, tsbuf[NGX_INT64_LEN + 1], *copy;
    char            *msg;
    size_t           len;
    int64_t          num;
    uint32_t         utf8;
    json_t          *expect, *a, *m;
    ngx_str_t        s[MAX_STRINGS], *list, empty, ts, *msgs;
    ngx_uint_t       i, n, k, sel, flag, rep, total;
    ngx_chat_buf_t  *b;

    static char  *codes[] = { "bad_request", "not_member", "too_many_rooms",
                              "rate_limited", "unavailable" };

    if (size < HEAD) {
        return 0;
    }

    sel = data[0] % 10;
    flag = data[0] / 10;

    num = 0;
    for (i = 8; i >= 1; i--) {
        num = (int64_t) (((uint64_t) num << 8) | data[i]);
    }

    rep = data[9] + 1;

    /* the strings, each in its own exactly sized allocation */

    copy = malloc(size - HEAD + 1);
    ASSERT(copy != NULL);
    ngx_memcpy(copy, data + HEAD, size - HEAD);

    n = 0;
    p = copy;
    last = copy + size - HEAD;

    for ( ;; ) {
        end = memchr(p, 0xff, last - p);
        len = (end ? end : last) - p;

        utf8 = NGX_CHAT_UTF8_ACCEPT;

        if (ngx_chat_utf8_validate(&utf8, p, len) != NGX_CHAT_UTF8_ACCEPT) {
            goto done;
        }

        s[n].data = malloc(len ? len : 1);
        ASSERT(s[n].data != NULL);
        ngx_memcpy(s[n].data, p, len);
        s[n].len = len;
        n++;

        if (end == NULL || n == MAX_STRINGS) {
            break;
        }

        p = end + 1;
    }

    ngx_str_set(&empty, "");

    for (i = n; i < 4; i++) {
        s[i] = empty;
    }

    /* the list of strings, repeated for "who" and raw payloads */

    total = (sel == 5 || sel >= 8) ? n * rep : n;
    list = malloc((total ? total : 1) * sizeof(ngx_str_t));
    ASSERT(list != NULL);

    for (i = 0; i < total; i++) {
        list[i] = s[i % n];
    }

    switch (sel) {

    case 0:
        frame_check(ngx_chat_wire_welcome(&s[0], &wlog),
                    json_pack("{s:s, s:o}", "type", "welcome",
                              "user", jstr(&s[0])), NULL, 0);
        break;

    case 1:
        /* a count: at most what a JSON integer holds */
        num &= INT64_MAX;
        frame_check(ngx_chat_wire_joined(&s[0], (ngx_uint_t) num, &wlog),
                    json_pack("{s:s, s:o, s:I}", "type", "joined",
                              "room", jstr(&s[0]),
                              "members", (json_int_t) num), NULL, 0);
        break;

    case 2:
        frame_check(ngx_chat_wire_left(&s[0], &wlog),
                    json_pack("{s:s, s:o}", "type", "left",
                              "room", jstr(&s[0])), NULL, 0);
        break;

    case 3:
        /*
         * an ack's id is one this server made (digits, '-', hex digits:
         * src/ngx_chat_wire.h), written as it is: only such ids are given
         */
        if (!ack_id(&s[1])) {
            break;
        }

        expect = json_pack("{s:s, s:o}", "type", "ack", "id", jstr(&s[1]));

        if (flag & 1) {
            json_object_set_new(expect, "ref", jstr(&s[0]));
        }

        frame_check(ngx_chat_wire_ack((flag & 1) ? &s[0] : NULL, &s[1],
                                      &wlog),
                    expect, NULL, 0);
        break;

    case 4:
        /* code and message are C strings of the module's own */
        msg = malloc(s[1].len + 1);
        ASSERT(msg != NULL);
        ngx_memcpy(msg, s[1].data, s[1].len);
        msg[s[1].len] = '\0';

        expect = json_pack("{s:s, s:s, s:s}", "type", "error",
                           "code", codes[flag % 5], "message", msg);
        ASSERT(expect != NULL);

        if (flag & 8) {
            json_object_set_new(expect, "ref", jstr(&s[0]));
        }

        if (num >= 0) {
            json_object_set_new(expect, "retry_after_ms",
                                json_integer((json_int_t) num));
        }

        frame_check(ngx_chat_wire_error(codes[flag % 5], msg,
                                        (flag & 8) ? &s[0] : NULL,
                                        (ngx_int_t) num, &wlog),
                    expect, NULL, 0);
        free(msg);
        break;

    case 5:
        a = json_array();

        for (i = 1; i < total; i++) {
            json_array_append_new(a, jstr(&list[i]));
        }

        frame_check(ngx_chat_wire_who(&s[0], total ? list + 1 : NULL,
                                      total ? total - 1 : 0, &wlog),
                    json_pack("{s:s, s:o, s:o}", "type", "who",
                              "room", jstr(&s[0]), "users", a), NULL, 0);
        break;

    case 6:
        /* messages of room s[0]: id, user, content of each, in turn */

        num &= INT64_MAX;
        ts.data = tsbuf;
        ts.len = sprintf((char *) tsbuf, "%lld", (long long) num);

        k = total > 1 ? (total - 1) / 3 : 0;
        msgs = malloc((k ? k : 1) * sizeof(ngx_str_t));
        ASSERT(msgs != NULL);

        a = json_array();

        for (i = 0; i < k; i++) {
            msgs[i] = message(&s[0], &list[1 + 3 * i], &list[2 + 3 * i],
                              &list[3 + 3 * i], &ts, &m);
            json_array_append_new(a, m);
        }

        frame_check(ngx_chat_wire_history(&s[0], msgs, k, flag & 1, &wlog),
                    json_pack("{s:s, s:o, s:o, s:b}", "type", "history",
                              "room", jstr(&s[0]), "messages", a,
                              "complete", (int) (flag & 1)), NULL, 0);

        for (i = 0; i < k; i++) {
            free(msgs[i].data);
        }

        free(msgs);
        break;

    case 7:
        len = ngx_chat_wire_presence_len(&s[0], &s[1]);
        p = malloc(len);
        ASSERT(p != NULL);

        last = ngx_chat_wire_presence(p, &s[0], &s[1], flag & 1);
        ASSERT((size_t) (last - p) <= len);

        /* as the bus carries it: in a text frame of its own */
        frame_check(ngx_chat_wire_text(p, last - p, &wlog),
                    json_pack("{s:s, s:o, s:o, s:s}", "type", "presence",
                              "room", jstr(&s[0]), "user", jstr(&s[1]),
                              "event", (flag & 1) ? "join" : "leave"),
                    NULL, 0);
        free(p);
        break;

    default: /* 8, 9: any payload, copied or written in place */

        for (len = 0, i = 0; i < total; i++) {
            len += list[i].len;
        }

        p = malloc(len ? len : 1);
        ASSERT(p != NULL);

        for (last = p, i = 0; i < total; i++) {
            last = ngx_cpymem(last, list[i].data, list[i].len);
        }

        if (sel == 8) {
            b = ngx_chat_wire_text(p, len, &wlog);

        } else {
            b = ngx_chat_wire_frame_start(len, &end, &wlog);
            ASSERT(b != NULL);
            ngx_chat_wire_frame_end(b, ngx_cpymem(end, p, len));
        }

        frame_check(b, NULL, p, len);
        free(p);
        break;
    }

    free(list);

done:

    for (i = 0; i < n; i++) {
        free(s[i].data);
    }

    free(copy);

    return 0;
}
