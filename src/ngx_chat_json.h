
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_JSON_H_INCLUDED_
#define _NGX_CHAT_JSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * JSON string output.  Parsing uses jansson; output is written directly
 * into frames, so that a message is serialised once, without a DOM.
 * The input is valid UTF-8 (it came through jansson or a checked header);
 * quotes, backslashes and control characters are escaped, the rest is
 * copied as it is.
 */

size_t ngx_chat_json_escape_len(u_char *s, size_t len);
u_char *ngx_chat_json_escape(u_char *dst, u_char *s, size_t len);

/* "s" with quotes: 2 + escaped length */
#define ngx_chat_json_str_len(s)                                            \
    (2 + ngx_chat_json_escape_len((s)->data, (s)->len))

u_char *ngx_chat_json_str(u_char *dst, ngx_str_t *s);

/*
 * {"type":"history","room":R,"messages":[M,...],"complete":B}, where each
 * M is a "message" object as stored or delivered
 */
size_t ngx_chat_json_history_len(ngx_str_t *room, ngx_str_t *msgs,
    ngx_uint_t n);
u_char *ngx_chat_json_history(u_char *p, ngx_str_t *room, ngx_str_t *msgs,
    ngx_uint_t n, ngx_uint_t complete);


#endif /* _NGX_CHAT_JSON_H_INCLUDED_ */
