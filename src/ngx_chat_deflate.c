
/*
 * Copyright (C) ngx_chat_module authors
 *
 * permessage-deflate (RFC 7692): offers and the bounded inflater (see
 * ngx_chat_deflate.h).
 */


#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ngx_chat_deflate.h"
#include "ngx_chat_utf8.h"


#define NGX_CHAT_DEFLATE_VALUE_MAX  16


/* one offer's parameters as they are parsed */
typedef struct {
    unsigned        bad:1;              /* declined */
    unsigned        server_nct:1;
    unsigned        client_nct:1;
    unsigned        server_bits_seen:1;
    unsigned        client_bits_seen:1;
    unsigned        server_bits:4;
    unsigned        client_bits:4;
} ngx_chat_deflate_offer_t;


static size_t ngx_chat_deflate_ows(const unsigned char *p, size_t pos,
    size_t len);
static size_t ngx_chat_deflate_token(const unsigned char *p, size_t pos,
    size_t len);
static int ngx_chat_deflate_tchar(unsigned char c);
static int ngx_chat_deflate_is(const unsigned char *s, size_t len,
    const char *name);
static void ngx_chat_deflate_param(ngx_chat_deflate_offer_t *o,
    const unsigned char *name, size_t name_len, const unsigned char *value,
    size_t value_len, int has_value);
static int ngx_chat_deflate_bits(const unsigned char *v, size_t len);


void
ngx_chat_deflate_negotiate(ngx_chat_deflate_params_t *p,
    const unsigned char *value, size_t len)
{
    int                        has_value, quoted, esc;
    size_t                     pos, start, name_len, vlen;
    unsigned char              c, v[NGX_CHAT_DEFLATE_VALUE_MAX];
    const unsigned char       *name;
    ngx_chat_deflate_offer_t   o;

    pos = 0;

    while (pos < len) {

        /* empty list elements are allowed (RFC 7230 7) */

        while (pos < len && (value[pos] == ' ' || value[pos] == '\t'
                             || value[pos] == ','))
        {
            pos++;
        }

        if (pos >= len) {
            break;
        }

        memset(&o, 0, sizeof(ngx_chat_deflate_offer_t));

        start = pos;
        pos = ngx_chat_deflate_token(value, pos, len);

        if (pos == start) {
            goto skip;
        }

        if (!ngx_chat_deflate_is(value + start, pos - start,
                                 "permessage-deflate"))
        {
            o.bad = 1;
        }

        for ( ;; ) {
            pos = ngx_chat_deflate_ows(value, pos, len);

            if (pos >= len || value[pos] == ',') {
                break;
            }

            if (value[pos] != ';') {
                    goto skip;
            }

            pos = ngx_chat_deflate_ows(value, pos + 1, len);

            start = pos;
            pos = ngx_chat_deflate_token(value, pos, len);

            if (pos == start) {
                    goto skip;
            }

            name = value + start;
            name_len = pos - start;

            pos = ngx_chat_deflate_ows(value, pos, len);

            has_value = 0;
            vlen = 0;

            if (pos < len && value[pos] == '=') {
                has_value = 1;
                pos = ngx_chat_deflate_ows(value, pos + 1, len);

                if (pos < len && value[pos] == '"') {

                    /* a quoted string, unescaped into v */

                    pos++;
                    esc = 0;

                    for ( ;; ) {
                        if (pos >= len) {
                                            goto skip;
                        }

                        c = value[pos++];

                        if (!esc && c == '\\') {
                            esc = 1;
                            continue;
                        }

                        if (!esc && c == '"') {
                            break;
                        }

                        esc = 0;

                        if (vlen < NGX_CHAT_DEFLATE_VALUE_MAX) {
                            v[vlen] = c;
                        }

                        vlen++;
                    }

                    if (vlen > NGX_CHAT_DEFLATE_VALUE_MAX) {
                        /* too long for any value we know: invalid */
                        vlen = 0;
                    }

                } else {
                    start = pos;
                    pos = ngx_chat_deflate_token(value, pos, len);

                    if (pos == start) {
                                    goto skip;
                    }

                    vlen = pos - start;

                    if (vlen > NGX_CHAT_DEFLATE_VALUE_MAX) {
                        vlen = 0;

                    } else {
                        memcpy(v, value + start, vlen);
                    }
                }
            }

            if (!o.bad) {
                ngx_chat_deflate_param(&o, name, name_len, v, vlen,
                                       has_value);
            }
        }

        if (!o.bad && !p->accepted) {
            p->accepted = 1;
            p->server_wbits = o.server_bits_seen ? o.server_bits : 15;
            p->server_wbits_offered = o.server_bits_seen;
            p->client_wbits = o.client_bits_seen
                              ? (o.client_bits ? o.client_bits : 15) : 0;
        }

        continue;

    skip:

        /* not a valid list element: up to the next comma outside quotes */

        quoted = 0;
        esc = 0;

        while (pos < len) {
            c = value[pos];

            if (quoted) {
                if (esc) {
                    esc = 0;

                } else if (c == '\\') {
                    esc = 1;

                } else if (c == '"') {
                    quoted = 0;
                }

            } else if (c == '"') {
                quoted = 1;

            } else if (c == ',') {
                break;
            }

            pos++;
        }
    }
}


static void
ngx_chat_deflate_param(ngx_chat_deflate_offer_t *o, const unsigned char *name,
    size_t name_len, const unsigned char *value, size_t value_len,
    int has_value)
{
    int  bits;

    if (ngx_chat_deflate_is(name, name_len, "server_no_context_takeover")) {
        if (has_value || o->server_nct) {
            o->bad = 1;
        }

        o->server_nct = 1;
        return;
    }

    if (ngx_chat_deflate_is(name, name_len, "client_no_context_takeover")) {
        if (has_value || o->client_nct) {
            o->bad = 1;
        }

        o->client_nct = 1;
        return;
    }

    if (ngx_chat_deflate_is(name, name_len, "server_max_window_bits")) {
        bits = has_value ? ngx_chat_deflate_bits(value, value_len) : -1;

        /* 8: zlib's raw deflate cannot keep to it, and we may not raise it */

        if (bits < 9 || o->server_bits_seen) {
            o->bad = 1;
            return;
        }

        o->server_bits_seen = 1;
        o->server_bits = bits;
        return;
    }

    if (ngx_chat_deflate_is(name, name_len, "client_max_window_bits")) {
        bits = has_value ? ngx_chat_deflate_bits(value, value_len) : 0;

        if (bits < 0 || o->client_bits_seen) {
            o->bad = 1;
            return;
        }

        o->client_bits_seen = 1;
        o->client_bits = bits;
        return;
    }

    o->bad = 1;
}


/* 8-15 without leading zeros (RFC 7692 7.1.2.1), else -1 */

static int
ngx_chat_deflate_bits(const unsigned char *v, size_t len)
{
    if (len == 1 && v[0] >= '8' && v[0] <= '9') {
        return v[0] - '0';
    }

    if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') {
        return 10 + v[1] - '0';
    }

    return -1;
}


size_t
ngx_chat_deflate_response(ngx_chat_deflate_params_t *p, unsigned char *buf)
{
    size_t  n;

    static const char  head[] = "permessage-deflate; "
                                "server_no_context_takeover; "
                                "client_no_context_takeover";

    memcpy(buf, head, sizeof(head) - 1);
    n = sizeof(head) - 1;

    if (p->server_wbits_offered) {
        memcpy(buf + n, "; server_max_window_bits=", 25);
        n += 25;

        if (p->server_wbits >= 10) {
            buf[n++] = '1';
        }

        buf[n++] = (unsigned char) ('0' + p->server_wbits % 10);
    }

    if (p->client_wbits) {
        memcpy(buf + n, "; client_max_window_bits=", 25);
        n += 25;

        if (p->client_wbits >= 10) {
            buf[n++] = '1';
        }

        buf[n++] = (unsigned char) ('0' + p->client_wbits % 10);
    }

    return n;
}


static size_t
ngx_chat_deflate_ows(const unsigned char *p, size_t pos, size_t len)
{
    while (pos < len && (p[pos] == ' ' || p[pos] == '\t')) {
        pos++;
    }

    return pos;
}


static size_t
ngx_chat_deflate_token(const unsigned char *p, size_t pos, size_t len)
{
    while (pos < len && ngx_chat_deflate_tchar(p[pos])) {
        pos++;
    }

    return pos;
}


/* RFC 7230 3.2.6 */

static int
ngx_chat_deflate_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}


static int
ngx_chat_deflate_is(const unsigned char *s, size_t len, const char *name)
{
    size_t         i;
    unsigned char  c;

    if (len != strlen(name)) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (unsigned char) name[i]) {
            return 0;
        }
    }

    return 1;
}


ngx_chat_inflate_t *
ngx_chat_inflate_create(size_t max)
{
    ngx_chat_inflate_t  *inf;

    inf = calloc(1, sizeof(ngx_chat_inflate_t));
    if (inf == NULL) {
        return NULL;
    }

    /* a raw stream with the largest window: any client window fits it */

    if (inflateInit2(&inf->z, -15) != Z_OK) {
        free(inf);
        return NULL;
    }

    inf->max = max;
    inf->utf8 = NGX_CHAT_UTF8_ACCEPT;

    return inf;
}


int
ngx_chat_inflate_add(ngx_chat_inflate_t *inf, const unsigned char *in,
    size_t len, int last)
{
    int             rc, piece;
    size_t          cap, n;
    unsigned char  *p;

    static unsigned char  tail[4] = { 0x00, 0x00, 0xff, 0xff };

    inf->in_len += len;

    for (piece = 0; piece < 2; piece++) {

        if (inf->ended) {
            /* what follows the final block is ignored */
            break;
        }

        if (piece == 0) {
            inf->z.next_in = (unsigned char *) in;
            inf->z.avail_in = (uInt) len;

        } else if (last) {
            inf->z.next_in = tail;
            inf->z.avail_in = sizeof(tail);

        } else {
            break;
        }

        for ( ;; ) {

            if (inf->len == inf->cap) {

                /* room for one byte past max, to see it is passed */

                cap = inf->cap ? inf->cap * 2 : 256;

                if (cap > inf->max + 1) {
                    cap = inf->max + 1;
                }

                p = malloc(cap);
                if (p == NULL) {
                    return NGX_CHAT_INFLATE_NOMEM;
                }

                if (inf->buf) {
                    memcpy(p, inf->buf, inf->len);
                    free(inf->buf);
                }

                inf->buf = p;
                inf->cap = cap;
            }

            inf->z.next_out = inf->buf + inf->len;
            inf->z.avail_out = (uInt) (inf->cap - inf->len);

            rc = inflate(&inf->z, Z_SYNC_FLUSH);

            n = (inf->cap - inf->len) - inf->z.avail_out;

            if (ngx_chat_utf8_validate(&inf->utf8, inf->buf + inf->len, n)
                == NGX_CHAT_UTF8_REJECT)
            {
                return NGX_CHAT_INFLATE_CORRUPT;
            }

            inf->len += n;

            if (inf->len > inf->max) {
                return NGX_CHAT_INFLATE_TOO_BIG;
            }

            switch (rc) {

            case Z_OK:
                break;

            case Z_STREAM_END:
                inf->ended = 1;
                break;

            case Z_BUF_ERROR:
                /* no progress possible: input used up, or output full */
                break;

            case Z_MEM_ERROR:
                return NGX_CHAT_INFLATE_NOMEM;

            default:
                /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
                return NGX_CHAT_INFLATE_CORRUPT;
            }

            if (inf->ended) {
                break;
            }

            if (inf->z.avail_out != 0) {
                /* all the input taken and all its output written */
                break;
            }
        }
    }

    if (last && inf->utf8 != NGX_CHAT_UTF8_ACCEPT) {
        return NGX_CHAT_INFLATE_CORRUPT;
    }

    return NGX_CHAT_INFLATE_OK;
}


void
ngx_chat_inflate_reset(ngx_chat_inflate_t *inf, size_t keep)
{
    (void) inflateReset(&inf->z);

    inf->len = 0;
    inf->in_len = 0;
    inf->utf8 = NGX_CHAT_UTF8_ACCEPT;
    inf->ended = 0;

    if (inf->cap > keep) {
        free(inf->buf);
        inf->buf = NULL;
        inf->cap = 0;
    }
}


void
ngx_chat_inflate_destroy(ngx_chat_inflate_t *inf)
{
    (void) inflateEnd(&inf->z);
    free(inf->buf);
    free(inf);
}
