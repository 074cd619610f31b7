
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_FRAME_H_INCLUDED_
#define _NGX_CHAT_FRAME_H_INCLUDED_


/*
 * RFC 6455 frame codec: pure functions over buffers, no nginx I/O and no
 * nginx headers, so that it can be fuzzed and unit-tested alone.
 * The parser is incremental: any split of the input into reads gives the
 * same result as one read.
 */

#include <stddef.h>
#include <stdint.h>


#define NGX_CHAT_FRAME_CONT     0x0
#define NGX_CHAT_FRAME_TEXT     0x1
#define NGX_CHAT_FRAME_BINARY   0x2
#define NGX_CHAT_FRAME_CLOSE    0x8
#define NGX_CHAT_FRAME_PING     0x9
#define NGX_CHAT_FRAME_PONG     0xa

/* return codes, equal to nginx's NGX_OK, NGX_ERROR, NGX_AGAIN */
#define NGX_CHAT_FRAME_OK        0
#define NGX_CHAT_FRAME_ERROR    -1
#define NGX_CHAT_FRAME_AGAIN    -2

/* close codes */
#define NGX_CHAT_CLOSE_NORMAL          1000
#define NGX_CHAT_CLOSE_GOING_AWAY      1001
#define NGX_CHAT_CLOSE_PROTOCOL        1002
#define NGX_CHAT_CLOSE_UNSUPPORTED     1003
#define NGX_CHAT_CLOSE_NO_STATUS       1005
#define NGX_CHAT_CLOSE_INVALID_DATA    1007
#define NGX_CHAT_CLOSE_POLICY          1008
#define NGX_CHAT_CLOSE_TOO_BIG         1009
#define NGX_CHAT_CLOSE_INTERNAL        1011

/* largest server frame header: 2 + 8 bytes of extended length */
#define NGX_CHAT_FRAME_MAX_HEADER      10


typedef struct {
    /* configuration, set before the first call */
    uint64_t        max_message;    /* largest text message payload */
    unsigned        rsv1_ok:1;      /* permessage-deflate negotiated */

    /* state; zero-filled memory is the initial state */
    unsigned        state:4;
    unsigned        fin:1;
    unsigned        in_message:1;   /* a fragmented text message is open */
    unsigned        first_chunk:1;  /* next data chunk starts a message */
    unsigned        compressed:1;   /* the open message has RSV1 */
    unsigned        opcode:4;       /* opcode of the frame being read */
    unsigned        len_bytes:4;    /* extended length bytes still to read */
    unsigned        mask_pos:2;
    unsigned        ctl_len:7;      /* control payload bytes so far */

    uint64_t        frame_left;     /* payload bytes of the frame left */
    uint64_t        message_len;    /* text payload bytes so far */
    uint32_t        utf8_state;
    unsigned char   mask[4];

    /*
     * a control frame's payload while it spans reads (malloc()ed then,
     * freed by the next call once the frame is reported), or NULL: a
     * control frame that comes whole is unmasked in the caller's buffer
     */
    unsigned char  *ctl;

    unsigned        close_code;     /* set when NGX_CHAT_FRAME_ERROR */
    const char     *error;          /* static text for the log */
} ngx_chat_frame_parser_t;


typedef struct {
    unsigned        opcode;         /* TEXT, CLOSE, PING or PONG */
    unsigned        first:1;        /* TEXT: this chunk starts a message */
    unsigned        last:1;         /* TEXT: this chunk ends a message */
    unsigned        compressed:1;   /* TEXT: the message is deflated (RSV1):
                                       chunks are compressed bytes, not
                                       checked as UTF-8 */
    unsigned char  *data;           /* unmasked payload (chunk) */
    size_t          len;
    unsigned        close_code;     /* CLOSE: code sent, or 1005 if none */
} ngx_chat_frame_t;


/*
 * Parses from *pos to last.  Returns
 *   NGX_CHAT_FRAME_OK: *f holds one event, *pos is advanced past what was
 *     consumed; call again with the rest.  TEXT events are chunks of one
 *     message, unmasked in place in the caller's buffer (f->data points
 *     into [*pos, last) as it was), validated as UTF-8 so far; a message
 *     comes as one or more chunks, the first with f->first, the last with
 *     f->last (a one-chunk message has both; chunks may be empty).
 *     Control frames come whole, also between the fragments of a
 *     message: f->data points into the caller's buffer, unmasked in place,
 *     or, for one that spanned calls, into parser->ctl.  For CLOSE,
 *     f->close_code is the code the peer sent (1005 when none) and
 *     f->data/len its reason.
 *     With rsv1_ok (permessage-deflate, RFC 7692), a text message whose
 *     first frame has RSV1 comes with f->compressed: its payload is the
 *     compressed bytes, not checked as UTF-8, and bounded by max_message
 *     plus deflate's worst-case growth (the inflated size is the caller's
 *     to bound).  RSV1 on a control or continuation frame, or without
 *     rsv1_ok, and RSV2/RSV3 always, are 1002.
 *   NGX_CHAT_FRAME_AGAIN: all input consumed, need more.
 *   NGX_CHAT_FRAME_ERROR: protocol violation; p->close_code is the code to
 *     close with (1002, 1003, 1007 or 1009; 1011 when no memory was left
 *     for a control frame spanning calls) and p->error a short text.
 *     The parser must not be called again.
 */
int ngx_chat_frame_parse(ngx_chat_frame_parser_t *p, unsigned char **pos,
    unsigned char *last, ngx_chat_frame_t *f);

/* frees what the parser holds (a partial control frame), if anything */
void ngx_chat_frame_parser_free(ngx_chat_frame_parser_t *p);

/*
 * Writes an unmasked, FIN server frame header for a payload of len bytes
 * into buf (at least NGX_CHAT_FRAME_MAX_HEADER bytes) and returns the
 * header length (2, 4 or 10).
 */
size_t ngx_chat_frame_header(unsigned char *buf, unsigned opcode,
    uint64_t len);

/* the header length ngx_chat_frame_header() would write for len */
size_t ngx_chat_frame_header_size(uint64_t len);


#endif /* _NGX_CHAT_FRAME_H_INCLUDED_ */
