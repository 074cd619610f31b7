
/*
 * Copyright (C) ngx_chat_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat_json.h"


size_t
ngx_chat_json_escape_len(u_char *s, size_t len)
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
ngx_chat_json_escape(u_char *dst, u_char *s, size_t len)
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
ngx_chat_json_str(u_char *dst, ngx_str_t *s)
{
    *dst++ = '"';
    dst = ngx_chat_json_escape(dst, s->data, s->len);
    *dst++ = '"';

    return dst;
}


size_t
ngx_chat_json_history_len(ngx_str_t *room, ngx_str_t *msgs, ngx_uint_t n)
{
    size_t      len;
    ngx_uint_t  i;

    len = sizeof("{\"type\":\"history\",\"room\":,\"messages\":[],"
                 "\"complete\":false}") - 1
          + ngx_chat_json_str_len(room);

    for (i = 0; i < n; i++) {
        len += msgs[i].len + 1;
    }

    return len;
}


u_char *
ngx_chat_json_history(u_char *p, ngx_str_t *room, ngx_str_t *msgs,
    ngx_uint_t n, ngx_uint_t complete)
{
    ngx_uint_t  i;

    p = ngx_cpymem(p, "{\"type\":\"history\",\"room\":",
                   sizeof("{\"type\":\"history\",\"room\":") - 1);
    p = ngx_chat_json_str(p, room);
    p = ngx_cpymem(p, ",\"messages\":[", sizeof(",\"messages\":[") - 1);

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, msgs[i].data, msgs[i].len);
    }

    if (complete) {
        return ngx_cpymem(p, "],\"complete\":true}",
                          sizeof("],\"complete\":true}") - 1);
    }

    return ngx_cpymem(p, "],\"complete\":false}",
                      sizeof("],\"complete\":false}") - 1);
}
