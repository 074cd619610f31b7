
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_WIRE_H_INCLUDED_
#define _NGX_CHAT_WIRE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The wire format (SPEC §4): every object the server writes, and the
 * WebSocket text frames that carry them.  Parsing uses jansson; output is
 * written directly into frames, so that a message is serialised once,
 * without a DOM.  String input is valid UTF-8 (it came through jansson, a
 * checked header or the relay's validation); quotes, backslashes and
 * control characters are escaped, the rest is copied as it is.  Nothing
 * here knows of rooms, connections or the zone.
 */


/*
 * One serialised server frame (header and payload).  A message fanned out
 * to many local members is one ngx_chat_buf_t referenced by every member's
 * output queue; the last reference frees it.
 */
typedef struct ngx_chat_buf_s  ngx_chat_buf_t;

struct ngx_chat_buf_s {
    ngx_uint_t                 refs;
    size_t                     len;
    ngx_chat_buf_t            *deflated;   /* compressed twin(s), made on
                                              first need, or NULL */
    size_t                     plain_len;  /* a twin: its plain frame's
                                              length (status) */
    unsigned                   wbits:4;    /* a twin: its window */
    u_char                     data[1];
};


ngx_chat_buf_t *ngx_chat_buf_alloc(size_t len, ngx_log_t *log);
void ngx_chat_buf_release(ngx_chat_buf_t *b);


/*
 * permessage-deflate (RFC 7692) of a whole text frame b: its compressed
 * twin (RSV1 set, the payload deflated without context, the 00 00 ff ff
 * tail removed), made once, the first time a member that negotiated
 * compression with window wbits needs it, and kept beside b until b is
 * freed, so that every such member shares its bytes; one deflate stream
 * per worker and window, reset for each message.  Returns b itself when
 * its payload is under min or on an error (the plain frame is always
 * valid).  A payload that does not shrink is sent compressed all the same
 * (a few bytes more: SPEC 9 says every message of at least min is).  b
 * keeps the twin's reference: the caller takes its own.
 */
ngx_chat_buf_t *ngx_chat_buf_deflated(ngx_chat_buf_t *b, ngx_uint_t wbits,
    ngx_int_t level, size_t min, ngx_log_t *log);

/* frees the worker's deflate streams (exit_process) */
void ngx_chat_wire_deflate_done(void);


/*
 * A text frame whose payload length is known only after writing it: the
 * payload goes at *payload (room for max bytes); ngx_chat_wire_frame_end()
 * puts the header in front of what was written up to end.
 */
ngx_chat_buf_t *ngx_chat_wire_frame_start(size_t max, u_char **payload,
    ngx_log_t *log);
void ngx_chat_wire_frame_end(ngx_chat_buf_t *b, u_char *end);

/* a text frame carrying this payload, copied */
ngx_chat_buf_t *ngx_chat_wire_text(u_char *data, size_t len, ngx_log_t *log);


/* JSON strings */

size_t ngx_chat_wire_escape_len(u_char *s, size_t len);
u_char *ngx_chat_wire_escape(u_char *dst, u_char *s, size_t len);

/* "s" with quotes: 2 + escaped length */
#define ngx_chat_wire_str_len(s)                                            \
    (2 + ngx_chat_wire_escape_len((s)->data, (s)->len))

u_char *ngx_chat_wire_str(u_char *dst, ngx_str_t *s);


/* server objects, each in a text frame of its own */

/* {"type":"welcome","user":U} */
ngx_chat_buf_t *ngx_chat_wire_welcome(ngx_str_t *user, ngx_log_t *log);

/* {"type":"joined","room":R,"members":N} */
ngx_chat_buf_t *ngx_chat_wire_joined(ngx_str_t *room, ngx_uint_t members,
    ngx_log_t *log);

/* {"type":"left","room":R} */
ngx_chat_buf_t *ngx_chat_wire_left(ngx_str_t *room, ngx_log_t *log);

/* {"type":"refreshed","exp":MS}: a token's exp in ms */
ngx_chat_buf_t *ngx_chat_wire_refreshed(int64_t exp, ngx_log_t *log);

/*
 * {"type":"ack"[,"ref":REF],"id":ID}; ref may be NULL; the id is this
 * server's own and is written as it is
 */
ngx_chat_buf_t *ngx_chat_wire_ack(ngx_str_t *ref, ngx_str_t *id,
    ngx_log_t *log);

/*
 * {"type":"error","code":C,"message":M[,"ref":R][,"retry_after_ms":N]};
 * ref may be NULL, retry_ms < 0 leaves it out
 */
ngx_chat_buf_t *ngx_chat_wire_error(char *code, char *message,
    ngx_str_t *ref, ngx_int_t retry_ms, ngx_log_t *log);

/* {"type":"who","room":R,"users":[U...]} */
ngx_chat_buf_t *ngx_chat_wire_who(ngx_str_t *room, ngx_str_t *users,
    ngx_uint_t n, ngx_log_t *log);

/*
 * {"type":"history","room":R,"messages":[M...],"complete":B}, where each
 * M is a "message" object as stored or delivered
 */
ngx_chat_buf_t *ngx_chat_wire_history(ngx_str_t *room, ngx_str_t *msgs,
    ngx_uint_t n, ngx_uint_t complete, ngx_log_t *log);


/*
 * Bare objects, written at p (the caller sizes the buffer with the _len
 * function); the bus carries them in frames of its own.
 *
 * {"type":"message","room":R,"id":ID,"user":U,"content":C,"ts":T}: the
 * head is everything before ID, the tail everything after it, so that a
 * writer that learns the id last (the zone, under its lock) fills it in
 * between; ts is the decimal milliseconds.
 */
size_t ngx_chat_wire_message_len(ngx_str_t *room, ngx_str_t *id,
    ngx_str_t *user, ngx_str_t *content, size_t ts_len);
u_char *ngx_chat_wire_message(u_char *p, ngx_str_t *room, ngx_str_t *id,
    ngx_str_t *user, ngx_str_t *content, ngx_str_t *ts);
u_char *ngx_chat_wire_message_head(u_char *p, ngx_str_t *room);
u_char *ngx_chat_wire_message_tail(u_char *p, ngx_str_t *user,
    ngx_str_t *content, ngx_str_t *ts);

/* {"type":"presence","room":R,"user":U,"event":"join"|"leave"} */
size_t ngx_chat_wire_presence_len(ngx_str_t *room, ngx_str_t *user);
u_char *ngx_chat_wire_presence(u_char *p, ngx_str_t *room, ngx_str_t *user,
    ngx_uint_t join);


#endif /* _NGX_CHAT_WIRE_H_INCLUDED_ */
