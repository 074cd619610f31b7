
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * Unit tests of the RFC 6455 frame codec (src/ngx_chat_frame.c) and of
 * the UTF-8 validator (src/ngx_chat_utf8.c).  Prints one line per test
 * and a final "N passed, M failed"; exits non-zero if any failed.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"


#define FIN     0x80
#define TEXT    NGX_CHAT_FRAME_TEXT
#define CONT    NGX_CHAT_FRAME_CONT
#define BINARY  NGX_CHAT_FRAME_BINARY
#define CLOSE   NGX_CHAT_FRAME_CLOSE
#define PING    NGX_CHAT_FRAME_PING
#define PONG    NGX_CHAT_FRAME_PONG

/* length encodings for frame() */
#define LEN_MIN     0
#define LEN_16      16
#define LEN_64      64

#define NO_LIMIT    ((uint64_t) -1)


typedef struct {
    unsigned char  *data;
    size_t          len;
    size_t          cap;
} buf_t;


static int      test_failed;
static int      tests_passed;
static int      tests_failed;

static const unsigned char  key[4] = { 0x37, 0xfa, 0x21, 0x3d };


#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__,      \
                   #cond);                                                   \
            test_failed = 1;                                                 \
        }                                                                    \
    } while (0)

#define RUN(test)                                                            \
    do {                                                                     \
        test_failed = 0;                                                     \
        test();                                                              \
        if (test_failed) {                                                   \
            printf("FAIL %s\n", #test);                                      \
            tests_failed++;                                                  \
                                                                             \
        } else {                                                             \
            printf("ok   %s\n", #test);                                      \
            tests_passed++;                                                  \
        }                                                                    \
    } while (0)


static void
buf_add(buf_t *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->data = realloc(b->data, b->cap);

        if (b->data == NULL) {
            abort();
        }
    }

    if (len) {
        memcpy(b->data + b->len, data, len);
    }

    b->len += len;
}


static void
buf_byte(buf_t *b, unsigned c)
{
    unsigned char  ch;

    ch = (unsigned char) c;
    buf_add(b, &ch, 1);
}


static void
buf_num(buf_t *b, uint64_t n, int bytes)
{
    while (bytes--) {
        buf_byte(b, (unsigned) (n >> (bytes * 8)) & 0xff);
    }
}


static void
buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


static int
buf_eq(const buf_t *a, const buf_t *b)
{
    return a->len == b->len
           && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}


/*
 * Appends a client frame: b0 is the first byte (FIN, RSV, opcode), the
 * payload is masked with key unless masked is 0.  With data NULL only the
 * header is written (for frames announcing more than we want to build).
 */

static void
frame(buf_t *b, unsigned b0, const void *data, uint64_t len, int form,
    int masked)
{
    uint64_t              i;
    unsigned              m;
    const unsigned char  *d;

    buf_byte(b, b0);
    m = masked ? 0x80 : 0;

    if (form == LEN_16 || (form == LEN_MIN && len > 125 && len <= 0xffff)) {
        buf_byte(b, m | 126);
        buf_num(b, len, 2);

    } else if (form == LEN_64 || len > 0xffff) {
        buf_byte(b, m | 127);
        buf_num(b, len, 8);

    } else {
        buf_byte(b, m | (unsigned) len);
    }

    if (masked) {
        buf_add(b, key, 4);
    }

    if (data == NULL) {
        return;
    }

    d = data;

    for (i = 0; i < len; i++) {
        buf_byte(b, masked ? (d[i] ^ key[i % 4]) : d[i]);
    }
}


static void
mframe(buf_t *b, unsigned b0, const char *s)
{
    frame(b, b0, s, strlen(s), LEN_MIN, 1);
}


static void
close_frame(buf_t *b, unsigned code, const char *reason, size_t rlen)
{
    unsigned char  payload[125];

    payload[0] = (unsigned char) (code >> 8);
    payload[1] = (unsigned char) code;
    memcpy(payload + 2, reason, rlen);

    frame(b, FIN | CLOSE, payload, rlen + 2, LEN_MIN, 1);
}


/* the expected-log builders; the same encoding as run() produces */

static void
log_text(buf_t *log, const void *data, size_t len)
{
    buf_byte(log, 'T');
    buf_num(log, len, 8);
    buf_add(log, data, len);
}


static void
log_control(buf_t *log, unsigned opcode, unsigned code, const void *data,
    size_t len)
{
    buf_byte(log, opcode == CLOSE ? 'C' : (opcode == PING ? 'P' : 'O'));
    buf_num(log, code, 2);
    buf_num(log, len, 1);
    buf_add(log, data, len);
}


static void
log_end(buf_t *log, int rc, unsigned code)
{
    buf_byte(log, rc == NGX_CHAT_FRAME_ERROR ? 'E' : 'A');
    buf_num(log, rc == NGX_CHAT_FRAME_ERROR ? code : 0, 2);
}


/*
 * Feeds in to a fresh parser in pieces of step bytes (0: all at once),
 * each piece in its own exactly-sized allocation, and logs complete text
 * messages, control frames and how it ended.  Returns the last rc; the
 * close code is in *code.
 */

static int
run(const buf_t *in, size_t step, uint64_t max_message, buf_t *log,
    unsigned *code)
{
    int                      rc, in_msg;
    size_t                   off, n;
    unsigned char           *piece, *pos, *before, *last;
    buf_t                    msg;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = max_message;

    memset(&msg, 0, sizeof(buf_t));
    in_msg = 0;
    rc = NGX_CHAT_FRAME_AGAIN;
    *code = 0;

    for (off = 0; off < in->len; off += n) {
        n = in->len - off;

        if (step && n > step) {
            n = step;
        }

        piece = malloc(n);

        if (piece == NULL) {
            abort();
        }

        memcpy(piece, in->data + off, n);
        pos = piece;
        last = piece + n;

        for ( ;; ) {
            before = pos;
            memset(&f, 0xa5, sizeof(ngx_chat_frame_t));

            rc = ngx_chat_frame_parse(&p, &pos, last, &f);

            if (rc != NGX_CHAT_FRAME_OK) {
                break;
            }

            CHECK(pos > before && pos <= last);

            if (f.opcode == TEXT) {
                CHECK(f.data >= before && f.data + f.len <= pos);
                CHECK(f.first == !in_msg);

                in_msg = 1;
                buf_add(&msg, f.data, f.len);

                if (f.last) {
                    log_text(log, msg.data, msg.len);
                    msg.len = 0;
                    in_msg = 0;
                }

            } else {
                CHECK(f.opcode == CLOSE || f.opcode == PING
                      || f.opcode == PONG);
                CHECK(f.len <= 125);
                log_control(log, f.opcode, f.close_code, f.data, f.len);
            }
        }

        free(piece);

        if (rc == NGX_CHAT_FRAME_ERROR) {
            CHECK(p.error != NULL);
            *code = p.close_code;
            break;
        }

        CHECK(pos == last);
    }

    ngx_chat_frame_parser_free(&p);
    buf_free(&msg);
    log_end(log, rc, *code);

    return rc;
}


/* runs in with several splits and checks each gives the expected log */

static void
expect(const buf_t *in, uint64_t max_message, const buf_t *want)
{
    size_t    i;
    unsigned  code;
    buf_t     got;

    static const size_t  steps[] = { 0, 1, 2, 3, 5, 7, 13, 64 };

    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        memset(&got, 0, sizeof(buf_t));
        run(in, steps[i], max_message, &got, &code);

        if (!buf_eq(&got, want)) {
            printf("    log mismatch with step %zu\n", steps[i]);
            test_failed = 1;
        }

        buf_free(&got);
    }
}


static void
expect_error(const buf_t *in, uint64_t max_message, unsigned code)
{
    buf_t  want;

    memset(&want, 0, sizeof(buf_t));
    log_end(&want, NGX_CHAT_FRAME_ERROR, code);
    expect(in, max_message, &want);
    buf_free(&want);
}


/* one call on a fresh parser over in */

static int
parse_once(buf_t *in, uint64_t max_message, ngx_chat_frame_t *f,
    ngx_chat_frame_parser_t *p, unsigned char **pos)
{
    memset(p, 0, sizeof(ngx_chat_frame_parser_t));
    p->max_message = max_message;
    *pos = in->data;

    return ngx_chat_frame_parse(p, pos, in->data + in->len, f);
}


/* UTF-8 */

static uint32_t
utf8(const void *s, size_t len)
{
    uint32_t  state;

    state = NGX_CHAT_UTF8_ACCEPT;

    return ngx_chat_utf8_validate(&state, s, len);
}


/* a reference decoder: 1 if s is valid UTF-8 per RFC 3629 */

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


static void
test_utf8_valid(void)
{
    size_t    i, k, len;
    uint32_t  state;

    static const char  *valid[] = {
        "",
        "plain ASCII",
        "\x7f",
        "\xc2\x80",                     /* U+0080 */
        "\xdf\xbf",                     /* U+07FF */
        "\xe0\xa0\x80",                 /* U+0800 */
        "\xe2\x82\xac",                 /* U+20AC */
        "\xed\x9f\xbf",                 /* U+D7FF */
        "\xee\x80\x80",                 /* U+E000 */
        "\xef\xbf\xbf",                 /* U+FFFF */
        "\xf0\x90\x80\x80",             /* U+10000 */
        "\xf3\xbf\xbf\xbf",             /* U+FFFFF */
        "\xf4\x8f\xbf\xbf",             /* U+10FFFF */
        "κόσμε \xf0\x9f\x98\x80 end",
    };

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        len = strlen(valid[i]);
        CHECK(utf8(valid[i], len) == NGX_CHAT_UTF8_ACCEPT);

        /* every split into two calls gives the same */

        for (k = 0; k <= len; k++) {
            state = NGX_CHAT_UTF8_ACCEPT;
            ngx_chat_utf8_validate(&state, (const unsigned char *) valid[i],
                                   k);

            if (k < len) {
                CHECK(state != NGX_CHAT_UTF8_REJECT);
            }

            ngx_chat_utf8_validate(&state,
                                   (const unsigned char *) valid[i] + k,
                                   len - k);
            CHECK(state == NGX_CHAT_UTF8_ACCEPT);
        }
    }

    /* an incomplete sequence is neither accepted nor rejected */

    CHECK(utf8("\xe2\x82", 2) != NGX_CHAT_UTF8_ACCEPT);
    CHECK(utf8("\xe2\x82", 2) != NGX_CHAT_UTF8_REJECT);
    CHECK(utf8("\xf0", 1) != NGX_CHAT_UTF8_REJECT);
}


static void
test_utf8_invalid(void)
{
    size_t    i;
    uint32_t  state;

    static const char  *invalid[] = {
        "\x80",                         /* bare continuation */
        "\xbf",
        "\xc0\x80",                     /* overlong NUL */
        "\xc0\xaf",                     /* overlong '/' */
        "\xc1\xbf",                     /* overlong U+007F */
        "\xe0\x80\x80",                 /* overlong 3-byte */
        "\xe0\x9f\xbf",                 /* overlong U+07FF */
        "\xf0\x80\x80\x80",             /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf",             /* overlong U+FFFF */
        "\xed\xa0\x80",                 /* U+D800 */
        "\xed\xbf\xbf",                 /* U+DFFF */
        "\xed\xa0\x80\xed\xb0\x80",     /* surrogate pair (CESU-8) */
        "\xf4\x90\x80\x80",             /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf7\xbf\xbf\xbf",
        "\xf8\x88\x80\x80\x80",         /* 5-byte form */
        "\xfe",
        "\xff",
        "\xc2\x41",                     /* missing continuation */
        "\xe2\x82\x41",
        "ok\xe2\x28\xa1",
    };

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        CHECK(utf8(invalid[i], strlen(invalid[i])) == NGX_CHAT_UTF8_REJECT);
    }

    /* rejected at the first impossible byte, before the sequence ends */

    CHECK(utf8("\xed\xa0", 2) == NGX_CHAT_UTF8_REJECT);
    CHECK(utf8("\xe0\x80", 2) == NGX_CHAT_UTF8_REJECT);
    CHECK(utf8("\xf4\x90", 2) == NGX_CHAT_UTF8_REJECT);
    CHECK(utf8("\xf0\x8f", 2) == NGX_CHAT_UTF8_REJECT);

    /* sticky */

    state = NGX_CHAT_UTF8_ACCEPT;
    CHECK(ngx_chat_utf8_validate(&state, (const unsigned char *) "\xff", 1)
          == NGX_CHAT_UTF8_REJECT);
    CHECK(ngx_chat_utf8_validate(&state, (const unsigned char *) "abc", 3)
          == NGX_CHAT_UTF8_REJECT);
    CHECK(ngx_chat_utf8_validate(&state, (const unsigned char *) "", 0)
          == NGX_CHAT_UTF8_REJECT);
    CHECK(state == NGX_CHAT_UTF8_REJECT);
}


/* every 1-, 2- and 3-byte string, and many 4-byte ones, vs. the reference */

static void
test_utf8_exhaustive(void)
{
    unsigned       a, b, c, d, bad;
    unsigned char  s[4];

    static const unsigned char  tails[] = {
        0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff
    };

    bad = 0;

    for (a = 0; a < 256; a++) {
        s[0] = (unsigned char) a;
        bad += (utf8(s, 1) == NGX_CHAT_UTF8_ACCEPT) != utf8_ref(s, 1);

        for (b = 0; b < 256; b++) {
            s[1] = (unsigned char) b;
            bad += (utf8(s, 2) == NGX_CHAT_UTF8_ACCEPT) != utf8_ref(s, 2);

            for (c = 0; c < 256; c++) {
                s[2] = (unsigned char) c;
                bad += (utf8(s, 3) == NGX_CHAT_UTF8_ACCEPT)
                       != utf8_ref(s, 3);
            }
        }
    }

    for (a = 0xf0; a < 256; a++) {
        s[0] = (unsigned char) a;

        for (b = 0; b < 256; b++) {
            s[1] = (unsigned char) b;

            for (c = 0; c < sizeof(tails); c++) {
                s[2] = tails[c];

                for (d = 0; d < sizeof(tails); d++) {
                    s[3] = tails[d];
                    bad += (utf8(s, 4) == NGX_CHAT_UTF8_ACCEPT)
                           != utf8_ref(s, 4);
                }
            }
        }
    }

    CHECK(bad == 0);
}


/* frames */

static void
test_single_text(void)
{
    int                      rc;
    buf_t                    in, want;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "Hello");

    /* RFC 6455, section 5.7: a single-frame masked text message */

    CHECK(in.len == 11);
    CHECK(memcmp(in.data, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
                 11) == 0);

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == TEXT);
    CHECK(f.first && f.last);
    CHECK(f.len == 5);
    CHECK(f.data == in.data + 6);             /* unmasked in place */
    CHECK(memcmp(in.data + 6, "Hello", 5) == 0);
    CHECK(pos == in.data + in.len);

    rc = ngx_chat_frame_parse(&p, &pos, in.data + in.len, &f);
    CHECK(rc == NGX_CHAT_FRAME_AGAIN);

    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "Hello");
    mframe(&in, FIN | TEXT, "world");
    log_text(&want, "Hello", 5);
    log_text(&want, "world", 5);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);
}


static void
test_masking(void)
{
    size_t         i;
    buf_t          in, want;
    unsigned char  data[300];

    /* unmasking continues across chunks and restarts with each frame */

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) ('a' + i % 26);
    }

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));

    frame(&in, TEXT, data, 7, LEN_MIN, 1);
    frame(&in, CONT, data + 7, 200, LEN_MIN, 1);
    frame(&in, FIN | CONT, data + 207, 93, LEN_MIN, 1);
    log_text(&want, data, 300);

    /* an all-zero key */

    buf_add(&in, "\x81\x83\x00\x00\x00\x00xyz", 9);
    log_text(&want, "xyz", 3);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);

    expect(&in, NO_LIMIT, &want);

    buf_free(&in);
    buf_free(&want);
}


static void
test_unmasked(void)
{
    buf_t  in;

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, "Hello", 5, LEN_MIN, 0);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | PING, "", 0, LEN_MIN, 0);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | CLOSE, "\x03\xe8", 2, LEN_MIN, 0);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);
}


static void
test_rsv_and_opcodes(void)
{
    unsigned  op;
    buf_t     in;

    for (op = 0x10; op <= 0x40; op <<= 1) {
        memset(&in, 0, sizeof(buf_t));
        mframe(&in, FIN | op | TEXT, "x");
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);

        memset(&in, 0, sizeof(buf_t));
        mframe(&in, FIN | op | PING, "x");
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);
    }

    for (op = 0; op < 16; op++) {
        if (op <= 2 || (op >= 8 && op <= 0xa)) {
            continue;
        }

        memset(&in, 0, sizeof(buf_t));
        mframe(&in, FIN | op, "x");
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);

        /* also between fragments */

        memset(&in, 0, sizeof(buf_t));
        mframe(&in, TEXT, "x");
        mframe(&in, FIN | op, "x");
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);
    }
}


/*
 * permessage-deflate: with rsv1_ok, RSV1 on the first frame of a text
 * message marks it compressed (its bytes are not UTF-8 checked, its wire
 * size may pass max_message by deflate's overhead); RSV1 elsewhere, or
 * RSV2/RSV3, is still 1002
 */

/* the input of the last parse_rsv1(): the frames point into it */
static unsigned char  *rsv1_input;


static int
parse_rsv1(const buf_t *in, uint64_t max, ngx_chat_frame_t *fs, int nfs,
    int *n, unsigned *code)
{
    int                      rc;
    unsigned char           *pos, *last, *copy;
    ngx_chat_frame_parser_t  p;

    free(rsv1_input);

    memset(&p, 0, sizeof(p));
    p.max_message = max;
    p.rsv1_ok = 1;

    copy = malloc(in->len ? in->len : 1);
    if (copy == NULL) {
        abort();
    }

    memcpy(copy, in->data, in->len);
    pos = copy;
    last = copy + in->len;
    *n = 0;

    for ( ;; ) {
        rc = ngx_chat_frame_parse(&p, &pos, last, &fs[*n < nfs ? *n : 0]);

        if (rc != NGX_CHAT_FRAME_OK) {
            break;
        }

        if (*n < nfs) {
            (*n)++;
        }
    }

    *code = p.close_code;
    rsv1_input = copy;

    return rc;
}


static void
test_rsv1_deflate(void)
{
    int               rc, n;
    buf_t             in;
    unsigned          code;
    unsigned char     big[700];
    ngx_chat_frame_t  fs[8];

    /* compressed bytes (not UTF-8) in two fragments, a ping between */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, 0x40 | TEXT, "\xff\xfe", 2, LEN_MIN, 1);
    mframe(&in, FIN | PING, "p");
    frame(&in, FIN | CONT, "\xc3", 1, LEN_MIN, 1);
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_AGAIN && n == 3);
    CHECK(fs[0].opcode == TEXT && fs[0].compressed && fs[0].first
          && !fs[0].last && fs[0].len == 2 && fs[0].data[0] == 0xff);
    CHECK(fs[1].opcode == PING && !fs[1].compressed);
    CHECK(fs[2].opcode == TEXT && fs[2].compressed && fs[2].last
          && fs[2].len == 1);
    buf_free(&in);

    /* a plain message after it is checked as UTF-8 again */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | 0x40 | TEXT, "\xff", 1, LEN_MIN, 1);
    frame(&in, FIN | TEXT, "\xff", 1, LEN_MIN, 1);
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && n == 1 && fs[0].compressed
          && code == NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* RSV1 on a continuation, a ping, a close; RSV2 and RSV3 */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, 0x40 | TEXT, "a", 1, LEN_MIN, 1);
    frame(&in, FIN | 0x40 | CONT, "b", 1, LEN_MIN, 1);
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | 0x40 | PING, "p");
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | 0x40 | CLOSE, "\x03\xe8", 2, LEN_MIN, 1);
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | 0x60 | TEXT, "a");
    rc = parse_rsv1(&in, 16, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    /* the wire bound of a compressed message: max + max / 8 + 64 */

    memset(big, 'z', sizeof(big));

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | 0x40 | TEXT, big, 512 + 64 + 64, LEN_MIN, 1);
    rc = parse_rsv1(&in, 512, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_AGAIN && n == 1 && fs[0].len == 640);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | 0x40 | TEXT, big, 512 + 64 + 65, LEN_MIN, 1);
    rc = parse_rsv1(&in, 512, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_TOO_BIG);
    buf_free(&in);

    /* uncompressed, the bound is max itself */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, big, 513, LEN_MIN, 1);
    rc = parse_rsv1(&in, 512, fs, 8, &n, &code);
    CHECK(rc == NGX_CHAT_FRAME_ERROR && code == NGX_CHAT_CLOSE_TOO_BIG);
    buf_free(&in);

    free(rsv1_input);
    rsv1_input = NULL;
}


static void
test_control_rules(void)
{
    unsigned       i, op;
    buf_t          in, want;
    unsigned char  data[126];

    static const unsigned  ops[] = { CLOSE, PING, PONG };

    memset(data, 'p', sizeof(data));

    for (i = 0; i < 3; i++) {
        op = ops[i];

        /* FIN must be set */

        memset(&in, 0, sizeof(buf_t));
        frame(&in, op, "", 0, LEN_MIN, 1);
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);

        /* at most 125 bytes, whatever the length encoding */

        memset(&in, 0, sizeof(buf_t));
        frame(&in, FIN | op, data, 126, LEN_MIN, 1);
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);

        memset(&in, 0, sizeof(buf_t));
        frame(&in, FIN | op, data, 5, LEN_16, 1);
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);

        memset(&in, 0, sizeof(buf_t));
        frame(&in, FIN | op, data, 5, LEN_64, 1);
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);
    }

    /* 125-byte and empty ping and pong */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));

    frame(&in, FIN | PING, data, 125, LEN_MIN, 1);
    frame(&in, FIN | PONG, data, 125, LEN_MIN, 1);
    mframe(&in, FIN | PING, "");
    mframe(&in, FIN | PONG, "");
    mframe(&in, FIN | PING, "ping?");

    log_control(&want, PING, 0, data, 125);
    log_control(&want, PONG, 0, data, 125);
    log_control(&want, PING, 0, "", 0);
    log_control(&want, PONG, 0, "", 0);
    log_control(&want, PING, 0, "ping?", 5);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);

    expect(&in, 0, &want);

    buf_free(&in);
    buf_free(&want);
}


static void
test_ping_whole(void)
{
    int                      rc;
    buf_t                    in;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | PING, "abc");

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == PING);
    CHECK(f.len == 3);
    CHECK(f.data == in.data + 6);             /* unmasked in place */
    CHECK(p.ctl == NULL);                     /* nothing held */
    CHECK(memcmp(f.data, "abc", 3) == 0);
    CHECK(pos == in.data + in.len);

    buf_free(&in);
}


/*
 * A control frame split between calls: its payload is held (p.ctl) only
 * until it is reported; the next call frees it
 */

static void
test_ping_span(void)
{
    int                      rc;
    buf_t                    in;
    unsigned char           *pos, *last, *one, *two;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | PING, "abcdef");
    mframe(&in, FIN | TEXT, "hi");

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = NO_LIMIT;

    /* the header and 2 bytes of the payload, then the rest */

    one = malloc(8);
    two = malloc(in.len - 8);
    CHECK(one != NULL && two != NULL);
    memcpy(one, in.data, 8);
    memcpy(two, in.data + 8, in.len - 8);

    pos = one;
    rc = ngx_chat_frame_parse(&p, &pos, one + 8, &f);

    CHECK(rc == NGX_CHAT_FRAME_AGAIN);
    CHECK(p.ctl != NULL);
    free(one);

    pos = two;
    last = two + in.len - 8;
    rc = ngx_chat_frame_parse(&p, &pos, last, &f);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == PING);
    CHECK(f.len == 6 && f.data == p.ctl);
    CHECK(memcmp(f.data, "abcdef", 6) == 0);

    rc = ngx_chat_frame_parse(&p, &pos, last, &f);

    CHECK(p.ctl == NULL);
    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == TEXT && f.len == 2);
    CHECK(memcmp(f.data, "hi", 2) == 0);

    /* held when the connection goes: the caller frees it */

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = NO_LIMIT;
    pos = in.data;
    rc = ngx_chat_frame_parse(&p, &pos, in.data + 8, &f);

    CHECK(rc == NGX_CHAT_FRAME_AGAIN && p.ctl != NULL);
    ngx_chat_frame_parser_free(&p);
    CHECK(p.ctl == NULL);

    free(two);
    buf_free(&in);
}


static void
test_close_codes(void)
{
    size_t    i;
    buf_t     in, want;
    unsigned  code;
    char      reason[123];

    static const unsigned  good[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
        1014, 3000, 3999, 4000, 4999
    };

    static const unsigned  bad[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        6000, 65535
    };

    /* no payload: 1005 */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, FIN | CLOSE, "");
    log_control(&want, CLOSE, NGX_CHAT_CLOSE_NO_STATUS, "", 0);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    /* one byte: 1002 */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | CLOSE, "\x03");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        code = good[i];

        memset(&in, 0, sizeof(buf_t));
        memset(&want, 0, sizeof(buf_t));
        close_frame(&in, code, "", 0);
        close_frame(&in, code, "bye", 3);
        log_control(&want, CLOSE, code, "", 0);
        log_control(&want, CLOSE, code, "bye", 3);
        log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
        expect(&in, NO_LIMIT, &want);
        buf_free(&in);
        buf_free(&want);
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&in, 0, sizeof(buf_t));
        close_frame(&in, bad[i], "", 0);
        expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
        buf_free(&in);
    }

    /* the longest reason; a UTF-8 reason */

    memset(reason, 'r', sizeof(reason));
    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    close_frame(&in, 1001, reason, sizeof(reason));
    close_frame(&in, 1000, "\xe2\x82\xac", 3);
    log_control(&want, CLOSE, 1001, reason, sizeof(reason));
    log_control(&want, CLOSE, 1000, "\xe2\x82\xac", 3);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    /* an invalid reason: 1007 */

    memset(&in, 0, sizeof(buf_t));
    close_frame(&in, 1000, "\xc0\xaf", 2);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* a truncated sequence in the reason: 1007 */

    memset(&in, 0, sizeof(buf_t));
    close_frame(&in, 1000, "ok\xe2\x82", 4);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* an invalid code beats an invalid reason */

    memset(&in, 0, sizeof(buf_t));
    close_frame(&in, 1005, "\xff", 1);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);
}


static void
test_close_fields(void)
{
    int                      rc;
    buf_t                    in;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    close_frame(&in, 4321, "gone", 4);

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == CLOSE);
    CHECK(f.close_code == 4321);
    CHECK(f.len == 4);
    CHECK(memcmp(f.data, "gone", 4) == 0);

    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | CLOSE, "");

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == CLOSE);
    CHECK(f.close_code == 1005);
    CHECK(f.len == 0);

    buf_free(&in);
}


static void
test_binary(void)
{
    int                      rc;
    buf_t                    in;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | BINARY, "data");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_UNSUPPORTED);
    buf_free(&in);

    /* the start of a fragmented binary message, too */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, BINARY, "data");
    mframe(&in, FIN | CONT, "data");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_UNSUPPORTED);
    buf_free(&in);

    /* reported as soon as the header is seen */

    memset(&in, 0, sizeof(buf_t));
    buf_byte(&in, FIN | BINARY);

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    CHECK(p.close_code == NGX_CHAT_CLOSE_UNSUPPORTED);
    CHECK(p.error != NULL);

    buf_free(&in);
}


static void
test_fragment_order(void)
{
    buf_t  in, want;

    /* a continuation with no message open */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | CONT, "x");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, CONT, "x");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    /* ... nor after a complete one */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a");
    mframe(&in, FIN | CONT, "b");
    mframe(&in, FIN | CONT, "c");
    log_text(&want, "ab", 2);
    log_end(&want, NGX_CHAT_FRAME_ERROR, NGX_CHAT_CLOSE_PROTOCOL);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    /* a new text message while one is open */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a");
    mframe(&in, FIN | TEXT, "b");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a");
    mframe(&in, FIN | PING, "");
    mframe(&in, TEXT, "b");
    log_control(&want, PING, 0, "", 0);
    log_end(&want, NGX_CHAT_FRAME_ERROR, NGX_CHAT_CLOSE_PROTOCOL);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    /* a binary frame while a text message is open */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a");
    mframe(&in, FIN | BINARY, "b");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);
    buf_free(&in);
}


static void
test_fragmented_with_ping(void)
{
    int                      rc, n, firsts, lasts;
    buf_t                    in, want;
    unsigned char           *pos, *last;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));

    mframe(&in, TEXT, "Hel");
    mframe(&in, FIN | PING, "p1");
    mframe(&in, CONT, "lo ");
    mframe(&in, FIN | PONG, "");
    mframe(&in, CONT, "");
    mframe(&in, FIN | PING, "p2");
    mframe(&in, FIN | CONT, "world");
    mframe(&in, FIN | TEXT, "next");

    log_control(&want, PING, 0, "p1", 2);
    log_control(&want, PONG, 0, "", 0);
    log_control(&want, PING, 0, "p2", 2);
    log_text(&want, "Hello world", 11);
    log_text(&want, "next", 4);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);

    expect(&in, NO_LIMIT, &want);

    /* the events of one call sequence, in order */

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = NO_LIMIT;
    buf_free(&in);
    mframe(&in, TEXT, "Hel");
    mframe(&in, FIN | PING, "p1");
    mframe(&in, CONT, "lo ");
    mframe(&in, FIN | CONT, "world");

    pos = in.data;
    last = in.data + in.len;
    n = 0;
    firsts = 0;
    lasts = 0;

    while ((rc = ngx_chat_frame_parse(&p, &pos, last, &f))
           == NGX_CHAT_FRAME_OK)
    {
        switch (n++) {

        case 0:
            CHECK(f.opcode == TEXT && f.len == 3 && f.first && !f.last);
            break;

        case 1:
            CHECK(f.opcode == PING && f.len == 2);
            break;

        case 2:
            CHECK(f.opcode == TEXT && f.len == 3 && !f.first && !f.last);
            break;

        case 3:
            CHECK(f.opcode == TEXT && f.len == 5 && !f.first && f.last);
            CHECK(memcmp(f.data, "world", 5) == 0);
            break;

        default:
            CHECK(0);
        }

        if (f.opcode == TEXT) {
            firsts += f.first;
            lasts += f.last;
        }
    }

    CHECK(rc == NGX_CHAT_FRAME_AGAIN);
    CHECK(n == 4);
    CHECK(firsts == 1 && lasts == 1);

    buf_free(&in);
    buf_free(&want);
}


static void
test_empty_messages(void)
{
    int                      rc;
    buf_t                    in, want;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    /* an empty message still comes as an event */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "");

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);

    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.opcode == TEXT && f.first && f.last && f.len == 0);
    CHECK(pos == in.data + in.len);

    buf_free(&in);

    /* empty fragments, and an empty final fragment after data */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));

    mframe(&in, TEXT, "");
    mframe(&in, CONT, "");
    mframe(&in, FIN | CONT, "");
    mframe(&in, TEXT, "abc");
    mframe(&in, FIN | CONT, "");
    mframe(&in, FIN | TEXT, "");

    log_text(&want, "", 0);
    log_text(&want, "abc", 3);
    log_text(&want, "", 0);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);

    expect(&in, 3, &want);

    buf_free(&in);
    buf_free(&want);
}


static void
test_lengths(void)
{
    int                      rc;
    size_t                   i, n;
    buf_t                    in, want;
    unsigned char           *data, *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    static const size_t  sizes[] = { 0, 1, 125, 126, 127, 65535, 65536,
                                     70000 };

    data = malloc(70000);

    if (data == NULL) {
        abort();
    }

    for (i = 0; i < 70000; i++) {
        data[i] = (unsigned char) (' ' + i % 90);
    }

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        n = sizes[i];

        memset(&in, 0, sizeof(buf_t));
        frame(&in, FIN | TEXT, data, n, LEN_MIN, 1);

        /* the header form chosen */

        CHECK((size_t) (in.data[1] & 0x7f)
              == (n <= 125 ? n : (n <= 65535 ? 126 : 127)));
        rc = parse_once(&in, n, &f, &p, &pos);

        CHECK(rc == NGX_CHAT_FRAME_OK);
        CHECK(f.opcode == TEXT && f.first && f.last && f.len == n);
        CHECK(n == 0 || memcmp(f.data, data, n) == 0);
        CHECK(pos == in.data + in.len);

        buf_free(&in);
    }

    /* the three forms together, also non-minimal encodings */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));

    frame(&in, FIN | TEXT, data, 100, LEN_MIN, 1);
    frame(&in, FIN | TEXT, data, 300, LEN_16, 1);
    frame(&in, FIN | TEXT, data, 66000, LEN_64, 1);
    frame(&in, FIN | TEXT, data, 5, LEN_16, 1);
    frame(&in, FIN | TEXT, data, 5, LEN_64, 1);
    frame(&in, FIN | TEXT, data, 0, LEN_64, 1);

    log_text(&want, data, 100);
    log_text(&want, data, 300);
    log_text(&want, data, 66000);
    log_text(&want, data, 5);
    log_text(&want, data, 5);
    log_text(&want, data, 0);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);

    expect(&in, 66000, &want);

    buf_free(&in);
    buf_free(&want);

    /* a 64-bit length with the most significant bit set */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, NULL, 0x8000000000000005ULL, LEN_64, 1);
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_PROTOCOL);

    /* ... seen at its first byte */

    rc = parse_once(&in, NO_LIMIT, &f, &p, &pos);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    CHECK(p.close_code == NGX_CHAT_CLOSE_PROTOCOL);
    CHECK(pos == in.data + 3);

    buf_free(&in);

    /* the largest legal 64-bit length needs more input */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, NULL, 0x7fffffffffffffffULL, LEN_64, 1);
    buf_byte(&in, 'a' ^ key[0]);
    buf_byte(&in, 'b' ^ key[1]);
    buf_byte(&in, 'c' ^ key[2]);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    free(data);
}


static void
test_too_big(void)
{
    int                      rc;
    buf_t                    in, want;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    /* exactly max_message is fine */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "0123456789");
    mframe(&in, TEXT, "01234");
    mframe(&in, FIN | PING, "");
    mframe(&in, FIN | CONT, "56789");
    log_text(&want, "0123456789", 10);
    log_control(&want, PING, 0, "", 0);
    log_text(&want, "0123456789", 10);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, 10, &want);
    buf_free(&in);
    buf_free(&want);

    /* one more byte, in one frame or across fragments */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "0123456789A");
    expect_error(&in, 10, NGX_CHAT_CLOSE_TOO_BIG);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, TEXT, "012345");
    mframe(&in, FIN | CONT, "6789A");
    log_end(&want, NGX_CHAT_FRAME_ERROR, NGX_CHAT_CLOSE_TOO_BIG);
    expect(&in, 10, &want);
    buf_free(&want);

    /* detected at the second header, before its payload */

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = 10;
    pos = in.data;

    rc = ngx_chat_frame_parse(&p, &pos, in.data + 12, &f);
    CHECK(rc == NGX_CHAT_FRAME_OK && f.len == 6);
    rc = ngx_chat_frame_parse(&p, &pos, in.data + 14, &f);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    CHECK(p.close_code == NGX_CHAT_CLOSE_TOO_BIG);

    buf_free(&in);

    /* a huge announced length, with no payload at all */

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, NULL, 1ULL << 40, LEN_64, 1);
    in.len -= 4;    /* no mask yet */

    rc = parse_once(&in, 65536, &f, &p, &pos);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    CHECK(p.close_code == NGX_CHAT_CLOSE_TOO_BIG);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    frame(&in, FIN | TEXT, NULL, 65537, LEN_MIN, 1);
    expect_error(&in, 65536, NGX_CHAT_CLOSE_TOO_BIG);
    buf_free(&in);

    /* control frames do not count */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, FIN | PING, "longer than max");
    log_control(&want, PING, 0, "longer than max", 15);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, 1, &want);
    buf_free(&in);
    buf_free(&want);
}


static void
test_utf8_in_frames(void)
{
    int                      rc;
    buf_t                    in, want;
    unsigned char           *pos;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    /* a character split across fragments, with a ping between */

    memset(&in, 0, sizeof(buf_t));
    memset(&want, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a\xf0\x9f");
    mframe(&in, FIN | PING, "");
    mframe(&in, CONT, "\x98");
    mframe(&in, FIN | CONT, "\x80z");
    log_control(&want, PING, 0, "", 0);
    log_text(&want, "a\xf0\x9f\x98\x80z", 6);
    log_end(&want, NGX_CHAT_FRAME_AGAIN, 0);
    expect(&in, NO_LIMIT, &want);
    buf_free(&in);
    buf_free(&want);

    /* an invalid continuation in the next fragment */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, TEXT, "a\xe2\x82");
    mframe(&in, FIN | CONT, "(");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* a surrogate built across fragments */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, TEXT, "\xed");
    mframe(&in, FIN | CONT, "\xa0\x80");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* the message ends inside a character */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "abc\xe2\x82");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, TEXT, "abc\xe2\x82");
    mframe(&in, FIN | CONT, "");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* overlongs, surrogates, too large, in a single frame */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "\xc0\xaf");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "\xe0\x80\xaf");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "\xf0\x80\x80\xaf");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "\xed\xbf\xbf");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "\xf4\x90\x80\x80");
    expect_error(&in, NO_LIMIT, NGX_CHAT_CLOSE_INVALID_DATA);
    buf_free(&in);

    /* detected before the rest of the frame arrives */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "ab\xff and a lot more text");

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = NO_LIMIT;
    pos = in.data;

    rc = ngx_chat_frame_parse(&p, &pos, in.data + 6 + 3, &f);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    CHECK(p.close_code == NGX_CHAT_CLOSE_INVALID_DATA);

    buf_free(&in);
}


/* a long stream of mixed frames: byte at a time equals one shot */

static void
build_stream(buf_t *in)
{
    size_t         i;
    unsigned char  big[1000];

    for (i = 0; i < sizeof(big); i++) {
        big[i] = (unsigned char) ('0' + i % 10);
    }

    mframe(in, FIN | TEXT, "first");
    mframe(in, TEXT, "\xce\xba\xe1");
    mframe(in, FIN | PING, "ping");
    mframe(in, CONT, "\xbd\xb9");
    mframe(in, FIN | PONG, "pong");
    frame(in, CONT, big, sizeof(big), LEN_MIN, 1);
    mframe(in, FIN | CONT, "\xcf\x83\xce\xbc\xce\xb5");
    mframe(in, FIN | TEXT, "");
    frame(in, FIN | TEXT, big, 130, LEN_64, 1);
    close_frame(in, 1000, "done", 4);
}


static void
test_byte_at_a_time(void)
{
    size_t    step;
    buf_t     in, one, got;
    unsigned  code;

    memset(&in, 0, sizeof(buf_t));
    build_stream(&in);

    memset(&one, 0, sizeof(buf_t));
    CHECK(run(&in, 0, 2000, &one, &code) == NGX_CHAT_FRAME_AGAIN);
    CHECK(one.len > 1100);

    for (step = 1; step <= 20; step++) {
        memset(&got, 0, sizeof(buf_t));
        run(&in, step, 2000, &got, &code);
        CHECK(buf_eq(&got, &one));
        buf_free(&got);
    }

    buf_free(&one);

    /* and the same up to an error */

    mframe(&in, TEXT, "ok");
    mframe(&in, FIN | PING, "");
    mframe(&in, FIN | CONT, "\xe2\x82\xac\xe2\x28\xa1 tail");

    memset(&one, 0, sizeof(buf_t));
    CHECK(run(&in, 0, 2000, &one, &code) == NGX_CHAT_FRAME_ERROR);
    CHECK(code == NGX_CHAT_CLOSE_INVALID_DATA);

    for (step = 1; step <= 20; step++) {
        memset(&got, 0, sizeof(buf_t));
        CHECK(run(&in, step, 2000, &got, &code) == NGX_CHAT_FRAME_ERROR);
        CHECK(code == NGX_CHAT_CLOSE_INVALID_DATA);
        CHECK(buf_eq(&got, &one));
        buf_free(&got);
    }

    buf_free(&one);
    buf_free(&in);
}


static void
test_chunks(void)
{
    int                      rc;
    size_t                   total;
    buf_t                    in;
    unsigned char           *pos, *last;
    ngx_chat_frame_t         f;
    ngx_chat_frame_parser_t  p;

    /* a frame arriving in pieces comes as chunks of what is there */

    memset(&in, 0, sizeof(buf_t));
    mframe(&in, FIN | TEXT, "abcdefghij");

    memset(&p, 0, sizeof(ngx_chat_frame_parser_t));
    p.max_message = NO_LIMIT;
    pos = in.data;
    last = in.data + 6;

    rc = ngx_chat_frame_parse(&p, &pos, last, &f);
    CHECK(rc == NGX_CHAT_FRAME_AGAIN);
    CHECK(pos == last);

    last += 4;
    rc = ngx_chat_frame_parse(&p, &pos, last, &f);
    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(f.first && !f.last && f.len == 4);
    CHECK(memcmp(f.data, "abcd", 4) == 0);
    total = f.len;

    rc = ngx_chat_frame_parse(&p, &pos, last, &f);
    CHECK(rc == NGX_CHAT_FRAME_AGAIN);

    last = in.data + in.len;
    rc = ngx_chat_frame_parse(&p, &pos, last, &f);
    CHECK(rc == NGX_CHAT_FRAME_OK);
    CHECK(!f.first && f.last && f.len == 6);
    CHECK(memcmp(f.data, "efghij", 6) == 0);
    total += f.len;
    CHECK(total == 10);

    /* an error is final */

    buf_free(&in);
    mframe(&in, FIN | BINARY, "x");
    mframe(&in, FIN | TEXT, "x");
    pos = in.data;
    rc = ngx_chat_frame_parse(&p, &pos, in.data + in.len, &f);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);
    rc = ngx_chat_frame_parse(&p, &pos, in.data + in.len, &f);
    CHECK(rc == NGX_CHAT_FRAME_ERROR);

    buf_free(&in);
}


static void
test_header_writer(void)
{
    size_t         i, n;
    unsigned char  buf[NGX_CHAT_FRAME_MAX_HEADER + 2];

    static const struct {
        uint64_t        len;
        size_t          size;
        unsigned char   bytes[10];
    } cases[] = {
        { 0,      2,  { 0x81, 0 } },
        { 125,    2,  { 0x81, 125 } },
        { 126,    4,  { 0x81, 126, 0x00, 0x7e } },
        { 65535,  4,  { 0x81, 126, 0xff, 0xff } },
        { 65536,  10, { 0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00 } },
        { 0x0102030405060708ULL, 10,
                      { 0x81, 127, 1, 2, 3, 4, 5, 6, 7, 8 } },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(buf, 0xee, sizeof(buf));

        n = ngx_chat_frame_header(buf, TEXT, cases[i].len);

        CHECK(n == cases[i].size);
        CHECK(ngx_chat_frame_header_size(cases[i].len) == cases[i].size);
        CHECK(memcmp(buf, cases[i].bytes, n) == 0);
        CHECK(buf[n] == 0xee);
    }

    /* other opcodes, FIN always set, never masked */

    n = ngx_chat_frame_header(buf, CLOSE, 2);
    CHECK(n == 2 && buf[0] == 0x88 && buf[1] == 0x02);

    n = ngx_chat_frame_header(buf, PONG, 125);
    CHECK(n == 2 && buf[0] == 0x8a && buf[1] == 125);

    n = ngx_chat_frame_header(buf, PING, 70000);
    CHECK(n == 10 && buf[0] == 0x89 && buf[1] == 127);
}


int
main(void)
{
    RUN(test_utf8_valid);
    RUN(test_utf8_invalid);
    RUN(test_utf8_exhaustive);
    RUN(test_single_text);
    RUN(test_masking);
    RUN(test_unmasked);
    RUN(test_rsv_and_opcodes);
    RUN(test_rsv1_deflate);
    RUN(test_control_rules);
    RUN(test_ping_whole);
    RUN(test_ping_span);
    RUN(test_close_codes);
    RUN(test_close_fields);
    RUN(test_binary);
    RUN(test_fragment_order);
    RUN(test_fragmented_with_ping);
    RUN(test_empty_messages);
    RUN(test_lengths);
    RUN(test_too_big);
    RUN(test_utf8_in_frames);
    RUN(test_byte_at_a_time);
    RUN(test_chunks);
    RUN(test_header_writer);

    printf("%d passed, %d failed\n", tests_passed, tests_failed);

    return tests_failed ? 1 : 0;
}
