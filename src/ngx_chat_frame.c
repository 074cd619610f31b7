
/*
 * Copyright (C) ngx_chat_module authors
 */


#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"


/* parser states; 0 must be the initial one */
#define NGX_CHAT_ST_OPCODE      0   /* FIN, RSV and opcode byte */
#define NGX_CHAT_ST_LENGTH      1   /* MASK and 7-bit length byte */
#define NGX_CHAT_ST_EXT_LENGTH  2   /* 16- or 64-bit length */
#define NGX_CHAT_ST_MASK        3   /* masking key */
#define NGX_CHAT_ST_DATA        4   /* text or continuation payload */
#define NGX_CHAT_ST_CONTROL     5   /* control frame payload */
#define NGX_CHAT_ST_ERROR       6   /* a violation was reported */

#define NGX_CHAT_FRAME_FIN      0x80
#define NGX_CHAT_FRAME_RSV      0x70
#define NGX_CHAT_FRAME_RSV1     0x40
#define NGX_CHAT_FRAME_OPCODE   0x0f
#define NGX_CHAT_FRAME_MASKED   0x80
#define NGX_CHAT_FRAME_LEN7     0x7f

#define NGX_CHAT_FRAME_MAX_CONTROL  125


static int ngx_chat_frame_opcode(ngx_chat_frame_parser_t *p, unsigned char c);
static int ngx_chat_frame_length(ngx_chat_frame_parser_t *p, unsigned char c);
static int ngx_chat_frame_ext_length(ngx_chat_frame_parser_t *p,
    unsigned char c);
static int ngx_chat_frame_started(ngx_chat_frame_parser_t *p,
    ngx_chat_frame_t *f, unsigned char *pos);
static int ngx_chat_frame_data(ngx_chat_frame_parser_t *p,
    unsigned char **pos, unsigned char *last, ngx_chat_frame_t *f);
static int ngx_chat_frame_control(ngx_chat_frame_parser_t *p,
    unsigned char **pos, unsigned char *last, ngx_chat_frame_t *f);
static int ngx_chat_frame_control_done(ngx_chat_frame_parser_t *p,
    ngx_chat_frame_t *f, unsigned char *data);
static int ngx_chat_frame_close_code_valid(unsigned code);
static void ngx_chat_frame_unmask(ngx_chat_frame_parser_t *p,
    unsigned char *data, size_t len);
static int ngx_chat_frame_fail(ngx_chat_frame_parser_t *p, unsigned code,
    const char *error);


int
ngx_chat_frame_parse(ngx_chat_frame_parser_t *p, unsigned char **pos,
    unsigned char *last, ngx_chat_frame_t *f)
{
    int            rc;
    unsigned char  c;

    if (p->ctl && p->state != NGX_CHAT_ST_CONTROL) {
        /* a control frame that spanned calls was reported */
        free(p->ctl);
        p->ctl = NULL;
    }

    for ( ;; ) {

        switch (p->state) {

        case NGX_CHAT_ST_DATA:
            return ngx_chat_frame_data(p, pos, last, f);

        case NGX_CHAT_ST_CONTROL:
            return ngx_chat_frame_control(p, pos, last, f);

        case NGX_CHAT_ST_ERROR:
            return NGX_CHAT_FRAME_ERROR;

        default:
            break;
        }

        /* the header, a byte at a time */

        if (*pos >= last) {
            return NGX_CHAT_FRAME_AGAIN;
        }

        c = *(*pos)++;

        switch (p->state) {

        case NGX_CHAT_ST_OPCODE:
            rc = ngx_chat_frame_opcode(p, c);
            break;

        case NGX_CHAT_ST_LENGTH:
            rc = ngx_chat_frame_length(p, c);
            break;

        case NGX_CHAT_ST_EXT_LENGTH:
            rc = ngx_chat_frame_ext_length(p, c);
            break;

        case NGX_CHAT_ST_MASK:
            p->mask[4 - p->len_bytes] = c;

            if (--p->len_bytes) {
                rc = NGX_CHAT_FRAME_AGAIN;
                break;
            }

            /* the header is complete */

            rc = ngx_chat_frame_started(p, f, *pos);
            break;

        default:
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_INTERNAL,
                                       "invalid parser state");
        }

        if (rc != NGX_CHAT_FRAME_AGAIN) {
            return rc;
        }
    }
}


static int
ngx_chat_frame_opcode(ngx_chat_frame_parser_t *p, unsigned char c)
{
    unsigned  opcode;

    opcode = c & NGX_CHAT_FRAME_OPCODE;

    if (c & NGX_CHAT_FRAME_RSV) {

        if ((c & NGX_CHAT_FRAME_RSV) != NGX_CHAT_FRAME_RSV1 || !p->rsv1_ok) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "reserved bits set");
        }

        /* RFC 7692 6.1: RSV1 only on the first frame of a data message */

        if (opcode != NGX_CHAT_FRAME_TEXT && opcode != NGX_CHAT_FRAME_BINARY)
        {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "RSV1 set on a control or "
                                       "continuation frame");
        }
    }

    p->fin = (c & NGX_CHAT_FRAME_FIN) ? 1 : 0;
    p->opcode = opcode;

    switch (opcode) {

    case NGX_CHAT_FRAME_CONT:

        if (!p->in_message) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "continuation without a message");
        }

        break;

    case NGX_CHAT_FRAME_TEXT:

        if (p->in_message) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "new message inside a fragmented one");
        }

        p->in_message = 1;
        p->first_chunk = 1;
        p->compressed = (c & NGX_CHAT_FRAME_RSV1) ? 1 : 0;
        p->message_len = 0;
        p->utf8_state = NGX_CHAT_UTF8_ACCEPT;
        break;

    case NGX_CHAT_FRAME_BINARY:

        if (p->in_message) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "new message inside a fragmented one");
        }

        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_UNSUPPORTED,
                                   "binary messages are not supported");

    case NGX_CHAT_FRAME_CLOSE:
    case NGX_CHAT_FRAME_PING:
    case NGX_CHAT_FRAME_PONG:

        if (!p->fin) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "fragmented control frame");
        }

        break;

    default:
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                   "unknown opcode");
    }

    p->state = NGX_CHAT_ST_LENGTH;

    return NGX_CHAT_FRAME_AGAIN;
}


static int
ngx_chat_frame_length(ngx_chat_frame_parser_t *p, unsigned char c)
{
    unsigned  len;

    if (!(c & NGX_CHAT_FRAME_MASKED)) {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                   "unmasked client frame");
    }

    len = c & NGX_CHAT_FRAME_LEN7;

    if (p->opcode & 0x8) {

        if (len > NGX_CHAT_FRAME_MAX_CONTROL) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "control frame too long");
        }

        p->frame_left = len;
        p->len_bytes = 4;
        p->state = NGX_CHAT_ST_MASK;

        return NGX_CHAT_FRAME_AGAIN;
    }

    if (len == 126 || len == 127) {
        p->frame_left = 0;
        p->len_bytes = (len == 126) ? 2 : 8;
        p->state = NGX_CHAT_ST_EXT_LENGTH;

        return NGX_CHAT_FRAME_AGAIN;
    }

    p->frame_left = len;

    return ngx_chat_frame_ext_length(p, 0);
}


/*
 * Takes one byte of the extended length, or, with len_bytes already 0,
 * checks the complete length of a data frame.
 */

static int
ngx_chat_frame_ext_length(ngx_chat_frame_parser_t *p, unsigned char c)
{
    uint64_t  max;

    if (p->len_bytes) {

        if (p->len_bytes == 8 && (c & 0x80)) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                       "64-bit length with the top bit set");
        }

        p->frame_left = (p->frame_left << 8) | c;

        if (--p->len_bytes) {
            return NGX_CHAT_FRAME_AGAIN;
        }
    }

    /*
     * message_len never exceeds the bound, so this cannot wrap; compressed
     * bytes may exceed the inflated size by deflate's stored-block
     * overhead (5 bytes per block, plus the final flush)
     */

    max = p->max_message;

    if (p->compressed) {
        max += (max >> 3) + 64;
    }

    if (p->frame_left > max - p->message_len) {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_TOO_BIG,
                                   "message too big");
    }

    p->message_len += p->frame_left;

    p->len_bytes = 4;
    p->state = NGX_CHAT_ST_MASK;

    return NGX_CHAT_FRAME_AGAIN;
}


/*
 * The header is complete: starts reading the payload, and reports
 * the frames that have none.
 */

static int
ngx_chat_frame_started(ngx_chat_frame_parser_t *p, ngx_chat_frame_t *f,
    unsigned char *pos)
{
    p->mask_pos = 0;

    if (p->opcode & 0x8) {
        p->ctl_len = 0;
        p->state = NGX_CHAT_ST_CONTROL;

        if (p->frame_left == 0) {
            return ngx_chat_frame_control_done(p, f, pos);
        }

        return NGX_CHAT_FRAME_AGAIN;
    }

    p->state = NGX_CHAT_ST_DATA;

    if (p->frame_left) {
        return NGX_CHAT_FRAME_AGAIN;
    }

    if (!p->fin) {
        /* an empty fragment: nothing to report */
        p->state = NGX_CHAT_ST_OPCODE;
        return NGX_CHAT_FRAME_AGAIN;
    }

    /* an empty final fragment still ends the message */

    return ngx_chat_frame_data(p, &pos, pos, f);
}


static int
ngx_chat_frame_data(ngx_chat_frame_parser_t *p, unsigned char **pos,
    unsigned char *last, ngx_chat_frame_t *f)
{
    size_t          n;
    unsigned char  *data;

    n = (size_t) (last - *pos);

    if (n > p->frame_left) {
        n = (size_t) p->frame_left;
    }

    if (n == 0 && p->frame_left) {
        return NGX_CHAT_FRAME_AGAIN;
    }

    data = *pos;

    ngx_chat_frame_unmask(p, data, n);

    if (!p->compressed
        && ngx_chat_utf8_validate(&p->utf8_state, data, n)
           == NGX_CHAT_UTF8_REJECT)
    {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_INVALID_DATA,
                                   "invalid UTF-8 in a text message");
    }

    *pos += n;
    p->frame_left -= n;

    f->opcode = NGX_CHAT_FRAME_TEXT;
    f->first = p->first_chunk;
    f->last = 0;
    f->compressed = p->compressed;
    f->data = data;
    f->len = n;
    f->close_code = 0;

    p->first_chunk = 0;

    if (p->frame_left == 0) {
        p->state = NGX_CHAT_ST_OPCODE;

        if (p->fin) {

            if (p->utf8_state != NGX_CHAT_UTF8_ACCEPT) {
                return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_INVALID_DATA,
                                           "text message ends inside "
                                           "a UTF-8 sequence");
            }

            p->in_message = 0;
            f->last = 1;
        }
    }

    return NGX_CHAT_FRAME_OK;
}


static int
ngx_chat_frame_control(ngx_chat_frame_parser_t *p, unsigned char **pos,
    unsigned char *last, ngx_chat_frame_t *f)
{
    size_t          n;
    unsigned char  *data;

    n = (size_t) (last - *pos);

    if (n > p->frame_left) {
        n = (size_t) p->frame_left;
    }

    if (n == 0) {
        return NGX_CHAT_FRAME_AGAIN;
    }

    if (p->ctl == NULL && n == p->frame_left) {
        /* whole in this buffer: unmasked where it is */

        data = *pos;
        ngx_chat_frame_unmask(p, data, n);

        *pos += n;
        p->ctl_len = n;
        p->frame_left = 0;

        return ngx_chat_frame_control_done(p, f, data);
    }

    if (p->ctl == NULL) {
        p->ctl = malloc(NGX_CHAT_FRAME_MAX_CONTROL);

        if (p->ctl == NULL) {
            return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_INTERNAL,
                                       "no memory for a control frame");
        }
    }

    memcpy(p->ctl + p->ctl_len, *pos, n);
    ngx_chat_frame_unmask(p, p->ctl + p->ctl_len, n);

    *pos += n;
    p->ctl_len += n;
    p->frame_left -= n;

    if (p->frame_left) {
        return NGX_CHAT_FRAME_AGAIN;
    }

    return ngx_chat_frame_control_done(p, f, p->ctl);
}


void
ngx_chat_frame_parser_free(ngx_chat_frame_parser_t *p)
{
    if (p->ctl) {
        free(p->ctl);
        p->ctl = NULL;
    }
}


static int
ngx_chat_frame_control_done(ngx_chat_frame_parser_t *p, ngx_chat_frame_t *f,
    unsigned char *data)
{
    unsigned  code;
    uint32_t  utf8;

    p->state = NGX_CHAT_ST_OPCODE;

    f->opcode = p->opcode;
    f->first = 0;
    f->last = 0;
    f->compressed = 0;
    f->data = data;
    f->len = p->ctl_len;
    f->close_code = 0;

    if (p->opcode != NGX_CHAT_FRAME_CLOSE) {
        return NGX_CHAT_FRAME_OK;
    }

    if (p->ctl_len == 0) {
        f->close_code = NGX_CHAT_CLOSE_NO_STATUS;
        return NGX_CHAT_FRAME_OK;
    }

    if (p->ctl_len == 1) {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                   "one-byte close payload");
    }

    code = ((unsigned) data[0] << 8) | data[1];

    if (!ngx_chat_frame_close_code_valid(code)) {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_PROTOCOL,
                                   "invalid close code");
    }

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&utf8, data + 2, p->ctl_len - 2)
        != NGX_CHAT_UTF8_ACCEPT)
    {
        return ngx_chat_frame_fail(p, NGX_CHAT_CLOSE_INVALID_DATA,
                                   "invalid UTF-8 in a close reason");
    }

    f->close_code = code;
    f->data = data + 2;
    f->len = p->ctl_len - 2;

    return NGX_CHAT_FRAME_OK;
}


/* RFC 6455, section 7.4: the codes an endpoint may send */

static int
ngx_chat_frame_close_code_valid(unsigned code)
{
    if (code >= 1000 && code <= 1003) {
        return 1;
    }

    if (code >= 1007 && code <= 1014) {
        return 1;
    }

    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    return 0;
}


static void
ngx_chat_frame_unmask(ngx_chat_frame_parser_t *p, unsigned char *data,
    size_t len)
{
    size_t    i;
    unsigned  k;

    k = p->mask_pos;

    for (i = 0; i < len; i++) {
        data[i] ^= p->mask[k];
        k = (k + 1) & 3;
    }

    p->mask_pos = k;
}


static int
ngx_chat_frame_fail(ngx_chat_frame_parser_t *p, unsigned code,
    const char *error)
{
    p->state = NGX_CHAT_ST_ERROR;
    p->close_code = code;
    p->error = error;

    return NGX_CHAT_FRAME_ERROR;
}


size_t
ngx_chat_frame_header_size(uint64_t len)
{
    if (len <= 125) {
        return 2;
    }

    if (len <= 0xffff) {
        return 4;
    }

    return 10;
}


size_t
ngx_chat_frame_header(unsigned char *buf, unsigned opcode, uint64_t len)
{
    int  i;

    buf[0] = (unsigned char) (NGX_CHAT_FRAME_FIN
                              | (opcode & NGX_CHAT_FRAME_OPCODE));

    if (len <= 125) {
        buf[1] = (unsigned char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (unsigned char) (len >> 8);
        buf[3] = (unsigned char) len;
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[2 + i] = (unsigned char) (len >> (56 - 8 * i));
    }

    return 10;
}
