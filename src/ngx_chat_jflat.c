
/*
 * Copyright (C) ngx_chat_module authors
 */


#include <string.h>

#include "ngx_chat_jflat.h"
#include "ngx_chat_utf8.h"


/* past JSON whitespace */

static const unsigned char *
ngx_chat_jflat_skip(const unsigned char *p, const unsigned char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* a plain string at *pp (after its opening quote): no '\\', no control */

static int
ngx_chat_jflat_string(const unsigned char **pp, const unsigned char *last,
    const unsigned char **start, size_t *len)
{
    uint32_t              state;
    const unsigned char  *p;

    p = *pp;
    *start = p;

    while (p < last && *p != '"') {
        if (*p == '\\' || *p < 0x20) {
            return -1;
        }

        p++;
    }

    if (p == last) {
        return -1;
    }

    *len = (size_t) (p - *start);

    state = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&state, *start, *len) != NGX_CHAT_UTF8_ACCEPT)
    {
        return -1;
    }

    *pp = p + 1;

    return 0;
}


int
ngx_chat_jflat_parse(const unsigned char *p, size_t len,
    ngx_chat_jflat_pair_t *pairs, int max)
{
    int                   n, i;
    const unsigned char  *last;

    last = p + len;
    n = 0;

    p = ngx_chat_jflat_skip(p, last);

    if (p == last || *p++ != '{') {
        return -1;
    }

    for ( ;; ) {
        p = ngx_chat_jflat_skip(p, last);

        if (p == last || *p++ != '"' || n == max) {
            return -1;
        }

        if (ngx_chat_jflat_string(&p, last, &pairs[n].key, &pairs[n].key_len)
            != 0)
        {
            return -1;
        }

        p = ngx_chat_jflat_skip(p, last);

        if (p == last || *p++ != ':') {
            return -1;
        }

        p = ngx_chat_jflat_skip(p, last);

        if (p == last || *p++ != '"') {
            return -1;
        }

        if (ngx_chat_jflat_string(&p, last, &pairs[n].value,
                                  &pairs[n].value_len)
            != 0)
        {
            return -1;
        }

        /* a duplicate key: jansson decides which one counts */

        for (i = 0; i < n; i++) {
            if (pairs[i].key_len == pairs[n].key_len
                && memcmp(pairs[i].key, pairs[n].key, pairs[n].key_len) == 0)
            {
                return -1;
            }
        }

        n++;

        p = ngx_chat_jflat_skip(p, last);

        if (p == last) {
            return -1;
        }

        if (*p == ',') {
            p++;
            continue;
        }

        if (*p++ != '}') {
            return -1;
        }

        break;
    }

    p = ngx_chat_jflat_skip(p, last);

    return p == last ? n : -1;
}


ngx_chat_jflat_pair_t *
ngx_chat_jflat_get(ngx_chat_jflat_pair_t *pairs, int n, const char *key,
    size_t key_len)
{
    int  i;

    for (i = 0; i < n; i++) {
        if (pairs[i].key_len == key_len
            && memcmp(pairs[i].key, key, key_len) == 0)
        {
            return &pairs[i];
        }
    }

    return NULL;
}
