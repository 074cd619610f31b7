
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the RFC 6455 frame parser and the UTF-8 validator.
 *
 * Input: byte 0 chooses max_message, byte 1 how to split the stream,
 * bytes 2-5 seed the split sizes; the rest is the client byte stream.
 * The stream is parsed once in one piece and once in pieces, each piece in
 * its own exactly-sized allocation so that ASan sees any overread.  Both
 * parses must give the same complete text messages, control frames and
 * final result; anything else, or a broken invariant, aborts.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"


#define PREFIX  6


typedef struct {
    unsigned char  *data;
    size_t          len;
    size_t          cap;
} buf_t;


static buf_t  log_one, log_split, message;


#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


static void
buf_add(buf_t *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 256;
        b->data = realloc(b->data, b->cap);
        ASSERT(b->data != NULL);
    }

    if (len) {
        memcpy(b->data + b->len, data, len);
    }

    b->len += len;
}


static void
buf_num(buf_t *b, uint64_t n, int bytes)
{
    unsigned char  c;

    while (bytes--) {
        c = (unsigned char) (n >> (bytes * 8));
        buf_add(b, &c, 1);
    }
}


/* a reference UTF-8 check, written differently from the validator */

static int
utf8_ref(const unsigned char *s, size_t len)
{
    size_t    i, j, n;
    uint32_t  cp, min;

    for (i = 0; i < len; i += n) {

        if (s[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 2; cp = s[i] & 0x1f; min = 0x80;

        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3; cp = s[i] & 0x0f; min = 0x800;

        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4; cp = s[i] & 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (j = 1; j < n; j++) {
            if ((s[i + j] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (s[i + j] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static int
close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003)
           || (code >= 1007 && code <= 1014)
           || (code >= 3000 && code <= 4999);
}


static uint32_t
next_random(uint32_t *x)
{
    /* xorshift32 */

    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;

    return *x;
}


static size_t
piece_size(unsigned mode, uint32_t *rnd, size_t left)
{
    size_t  n;

    switch (mode) {

    case 0:
        n = 1;
        break;

    case 1:
        n = 1 + next_random(rnd) % 4;
        break;

    case 2:
        n = 1 + next_random(rnd) % 64;
        break;

    default:
        n = 1 + next_random(rnd) % (left + 1);
        break;
    }

    return n < left ? n : left;
}


/*
 * Parses stream, split by mode (or in one piece with mode -1), and logs
 * what it gives; checks the invariants of every event on the way.
 */

static void
parse(const unsigned char *stream, size_t len, uint64_t max_message,
    int mode, uint32_t seed, buf_t *log)
{
    int                      rc, in_msg;
    size_t                   off, n;
    uint32_t                 rnd;
    unsigned char           *piece, *pos, *before, *last;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = max_message;

    log->len = 0;
    message.len = 0;
    in_msg = 0;
    rc = NGX_CHAT_FRAME_AGAIN;
    rnd = seed;

    for (off = 0; off < len; off += n) {
        n = (mode < 0) ? len - off
                       : piece_size((unsigned) mode, &rnd, len - off);

        piece = malloc(n);
        ASSERT(piece != NULL);
        memcpy(piece, stream + off, n);

        pos = piece;
        last = piece + n;

        for ( ;; ) {
            before = pos;
            memset(&f, 0xa5, sizeof(ngx_chat_frame_t));

            rc = ngx_chat_frame_parse(&p, &pos, last, &f);

            if (rc != NGX_CHAT_FRAME_OK) {
                ASSERT(rc == NGX_CHAT_FRAME_AGAIN
                       || rc == NGX_CHAT_FRAME_ERROR);
                break;
            }

            /* every event consumes input: no endless loops */

            ASSERT(pos > before && pos <= last);

            switch (f.opcode) {

            case NGX_CHAT_FRAME_TEXT:
                ASSERT(f.data >= before && f.data <= pos);
                ASSERT(f.len <= (size_t) (pos - f.data));
                ASSERT(f.first == !in_msg);

                in_msg = 1;
                buf_add(&message, f.data, f.len);

                ASSERT(message.len <= max_message);

                if (f.last) {
                    ASSERT(utf8_ref(message.data, message.len));

                    buf_add(log, "T", 1);
                    buf_num(log, message.len, 8);
                    buf_add(log, message.data, message.len);

                    message.len = 0;
                    in_msg = 0;
                }

                break;

            case NGX_CHAT_FRAME_CLOSE:
                ASSERT(f.len <= 123);
                ASSERT(f.close_code == NGX_CHAT_CLOSE_NO_STATUS
                       ? f.len == 0 : close_code_ok(f.close_code));
                ASSERT(utf8_ref(f.data, f.len));

                /* fall through */

            case NGX_CHAT_FRAME_PING:
            case NGX_CHAT_FRAME_PONG:
                ASSERT(f.len <= 125);
                ASSERT((f.data >= before && f.data + f.len <= pos)
                       || (p.ctl && f.data >= p.ctl
                           && f.data + f.len <= p.ctl + 125));

                buf_num(log, f.opcode, 1);
                buf_num(log, f.opcode == NGX_CHAT_FRAME_CLOSE
                             ? f.close_code : 0, 2);
                buf_num(log, f.len, 1);
                buf_add(log, f.data, f.len);
                break;

            default:
                ASSERT(0);
            }
        }

        free(piece);

        if (rc == NGX_CHAT_FRAME_ERROR) {
            break;
        }

        ASSERT(pos == last);
    }

    ngx_chat_frame_parser_free(&p);
    ASSERT(p.ctl == NULL);

    if (rc == NGX_CHAT_FRAME_ERROR) {
        ASSERT(p.error != NULL);
        ASSERT(p.close_code == NGX_CHAT_CLOSE_PROTOCOL
               || p.close_code == NGX_CHAT_CLOSE_UNSUPPORTED
               || p.close_code == NGX_CHAT_CLOSE_INVALID_DATA
               || p.close_code == NGX_CHAT_CLOSE_TOO_BIG
               || p.close_code == NGX_CHAT_CLOSE_INTERNAL);

        buf_add(log, "E", 1);
        buf_num(log, p.close_code, 2);

    } else {
        buf_add(log, "A", 1);
    }
}


/* the validator against the reference, in one call and split in two */

static void
check_utf8(const unsigned char *s, size_t len, size_t split)
{
    int       ok;
    uint32_t  one, two;

    ok = utf8_ref(s, len);

    one = NGX_CHAT_UTF8_ACCEPT;
    ngx_chat_utf8_validate(&one, s, len);
    ASSERT((one == NGX_CHAT_UTF8_ACCEPT) == ok);

    if (split > len) {
        split = len;
    }

    two = NGX_CHAT_UTF8_ACCEPT;
    ngx_chat_utf8_validate(&two, s, split);
    ASSERT(two != NGX_CHAT_UTF8_REJECT || !ok);
    ngx_chat_utf8_validate(&two, s + split, len - split);
    ASSERT(one == two);
}


static void
check_header(uint64_t len)
{
    size_t         n;
    uint64_t       got;
    unsigned char  buf[NGX_CHAT_FRAME_MAX_HEADER];

    n = ngx_chat_frame_header(buf, NGX_CHAT_FRAME_TEXT, len);

    ASSERT(n == ngx_chat_frame_header_size(len));
    ASSERT(buf[0] == 0x81);

    if (n == 2) {
        got = buf[1];
        ASSERT(got <= 125);

    } else if (n == 4) {
        ASSERT(buf[1] == 126);
        got = ((uint64_t) buf[2] << 8) | buf[3];
        ASSERT(got > 125);

    } else {
        ASSERT(n == 10 && buf[1] == 127);
        got = 0;

        for (n = 2; n < 10; n++) {
            got = (got << 8) | buf[n];
        }

        ASSERT(got > 0xffff);
    }

    ASSERT(got == len);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   mode;
    size_t                len;
    uint32_t              seed;
    uint64_t              max_message;
    const unsigned char  *stream;

    static const uint64_t  limits[16] = {
        0, 1, 2, 3, 5, 8, 16, 64, 125, 126, 127, 200, 1000, 65535, 65536,
        (uint64_t) -1
    };

    if (size < PREFIX) {
        return 0;
    }

    max_message = (data[0] & 0x80) ? limits[data[0] & 0x0f] : data[0];
    mode = data[1] & 3;
    seed = (uint32_t) data[2] | (uint32_t) data[3] << 8
           | (uint32_t) data[4] << 16 | (uint32_t) data[5] << 24;

    if (seed == 0) {
        seed = 0x9e3779b9;
    }

    stream = data + PREFIX;
    len = size - PREFIX;

    parse(stream, len, max_message, -1, seed, &log_one);
    parse(stream, len, max_message, mode, seed, &log_split);

    if (log_one.len != log_split.len
        || memcmp(log_one.data, log_split.data, log_one.len) != 0)
    {
        fprintf(stderr, "split parse (mode %d, max_message %llu) differs "
                "from one-shot parse\n", mode,
                (unsigned long long) max_message);
        abort();
    }

    check_utf8(stream, len, seed % (len + 1));

    if (len >= 8) {
        check_header(((uint64_t) stream[0] << 56 | (uint64_t) stream[1] << 48
                      | (uint64_t) stream[2] << 40
                      | (uint64_t) stream[3] << 32
                      | (uint64_t) stream[4] << 24
                      | (uint64_t) stream[5] << 16
                      | (uint64_t) stream[6] << 8 | stream[7])
                     >> (stream[0] & 63));
    }

    return 0;
}
