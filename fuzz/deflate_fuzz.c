
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for permessage-deflate's pure parts
 * (ngx_chat_deflate.c): the negotiation of Sec-WebSocket-Extensions offers
 * and the bounded inflater of an incoming message.
 *
 * Input: byte 0 even: negotiation; the rest are header values separated
 * by '\n'.  An accepted offer must have a window of 9-15 and a client
 * window of 0 or 8-15, and our response, offered back, must be accepted
 * with the same parameters.
 *
 * Byte 0 odd: inflation; bytes 1-2 are max (chat_max_message_size, 1 to
 * 65536), byte 3 seeds how the rest, the compressed payload, is cut into
 * fragments, each in its own exactly-sized allocation.  The result is
 * checked against zlib inflating the whole payload at once with room for
 * max + 1 bytes: OK only when that gives the same bytes, at most max, as
 * complete UTF-8; TOO_BIG only when it gives more than max; CORRUPT only
 * when zlib fails or the bytes are not UTF-8.  The same inflater, reset,
 * then inflates the payload in one piece: the same result.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ngx_chat_deflate.h"
#include "ngx_chat_utf8.h"


#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


static void
negotiate(const uint8_t *data, size_t size)
{
    size_t                     len;
    uint8_t                   *copy;
    const uint8_t             *p, *last, *nl;
    unsigned char              resp[NGX_CHAT_DEFLATE_RESPONSE_MAX + 1];
    ngx_chat_deflate_params_t  pmd, back;

    memset(&pmd, 0, sizeof(pmd));

    p = data;
    last = data + size;

    while (p <= last) {
        nl = memchr(p, '\n', last - p);

        if (nl == NULL) {
            nl = last;
        }

        /* each header value in its own allocation */

        copy = malloc(nl - p + 1);
        ASSERT(copy != NULL);
        memcpy(copy, p, nl - p);
        ngx_chat_deflate_negotiate(&pmd, copy, nl - p);
        free(copy);

        p = nl + 1;
    }

    if (!pmd.accepted) {
        ASSERT(pmd.server_wbits == 0 && pmd.client_wbits == 0);
        return;
    }

    ASSERT(pmd.server_wbits >= 9 && pmd.server_wbits <= 15);
    ASSERT(pmd.server_wbits_offered || pmd.server_wbits == 15);
    ASSERT(pmd.client_wbits == 0
           || (pmd.client_wbits >= 8 && pmd.client_wbits <= 15));

    memset(resp, 0xaa, sizeof(resp));
    len = ngx_chat_deflate_response(&pmd, resp);
    ASSERT(len <= NGX_CHAT_DEFLATE_RESPONSE_MAX);
    ASSERT(resp[NGX_CHAT_DEFLATE_RESPONSE_MAX] == 0xaa);

    memset(&back, 0, sizeof(back));
    ngx_chat_deflate_negotiate(&back, resp, len);

    ASSERT(back.accepted);
    ASSERT(back.server_wbits == pmd.server_wbits);
    ASSERT(back.server_wbits_offered == pmd.server_wbits_offered);
    ASSERT(back.client_wbits == pmd.client_wbits);
}


/* zlib at once: 0, or -1 on a zlib error; *out, *len what it gave */

static int
reference(const uint8_t *in, size_t size, size_t max, uint8_t **out,
    size_t *len)
{
    int        rc, piece, err;
    z_stream   z;

    static uint8_t  tail[4] = { 0x00, 0x00, 0xff, 0xff };

    *out = malloc(max + 1);
    ASSERT(*out != NULL);

    memset(&z, 0, sizeof(z));
    ASSERT(inflateInit2(&z, -15) == Z_OK);

    z.next_out = *out;
    z.avail_out = max + 1;
    err = 0;

    for (piece = 0; piece < 2; piece++) {
        z.next_in = piece ? tail : (uint8_t *) in;
        z.avail_in = piece ? 4 : size;

        rc = inflate(&z, Z_SYNC_FLUSH);

        if (rc == Z_STREAM_END) {
            break;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            err = -1;
            break;
        }

        if (z.avail_out == 0) {
            /* more than max: enough to know */
            break;
        }
    }

    *len = (max + 1) - z.avail_out;
    inflateEnd(&z);

    return err;
}


static int
run(ngx_chat_inflate_t *inf, const uint8_t *in, size_t size, unsigned seed)
{
    int       rc;
    size_t    pos, n;
    uint8_t  *copy;

    pos = 0;

    do {
        n = seed ? 1 + (seed * 7 + pos * 13) % (seed * 3 + 1) : size;

        if (n > size - pos) {
            n = size - pos;
        }

        copy = malloc(n ? n : 1);
        ASSERT(copy != NULL);
        memcpy(copy, in + pos, n);

        pos += n;

        rc = ngx_chat_inflate_add(inf, copy, n, pos == size);

        free(copy);

        if (rc != NGX_CHAT_INFLATE_OK) {
            return rc;
        }

        ASSERT(inf->len <= inf->max);

    } while (pos < size);

    return NGX_CHAT_INFLATE_OK;
}


static void
inflation(const uint8_t *data, size_t size)
{
    int                  rc, rc2, err;
    size_t               max, len;
    uint8_t             *ref;
    uint32_t             utf8, ustate;
    ngx_chat_inflate_t  *inf;

    if (size < 3) {
        return;
    }

    max = 1 + (((size_t) data[0] << 8) | data[1]);

    inf = ngx_chat_inflate_create(max);
    ASSERT(inf != NULL);

    rc = run(inf, data + 3, size - 3, data[2]);

    ASSERT(rc == NGX_CHAT_INFLATE_OK || rc == NGX_CHAT_INFLATE_CORRUPT
           || rc == NGX_CHAT_INFLATE_TOO_BIG);

    err = reference(data + 3, size - 3, max, &ref, &len);

    utf8 = NGX_CHAT_UTF8_ACCEPT;
    ustate = ngx_chat_utf8_validate(&utf8, ref, len);

    switch (rc) {

    case NGX_CHAT_INFLATE_OK:
        ASSERT(err == 0 && len <= max && len == inf->len);
        ASSERT(memcmp(ref, inf->buf, len) == 0);
        ASSERT(ustate == NGX_CHAT_UTF8_ACCEPT);
        break;

    case NGX_CHAT_INFLATE_TOO_BIG:
        ASSERT(len > max);
        break;

    default: /* CORRUPT */
        ASSERT(err || ustate != NGX_CHAT_UTF8_ACCEPT);
    }

    /* the same inflater, reset (the worker's spare), in one piece */

    ngx_chat_inflate_reset(inf, 4096);
    inf->max = max;

    rc2 = run(inf, data + 3, size - 3, 0);

    if (rc == NGX_CHAT_INFLATE_OK || rc2 == NGX_CHAT_INFLATE_OK) {
        ASSERT(rc == rc2);
    }

    ngx_chat_inflate_destroy(inf);
    free(ref);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }

    if (data[0] & 1) {
        inflation(data + 1, size - 1);

    } else {
        negotiate(data + 1, size - 1);
    }

    return 0;
}
