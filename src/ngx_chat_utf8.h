
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_UTF8_H_INCLUDED_
#define _NGX_CHAT_UTF8_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_CHAT_UTF8_ACCEPT  0
#define NGX_CHAT_UTF8_REJECT  1


/*
 * Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF).  *state starts at NGX_CHAT_UTF8_ACCEPT; the call
 * returns the new state: NGX_CHAT_UTF8_REJECT as soon as the bytes so far
 * cannot be valid, NGX_CHAT_UTF8_ACCEPT at a character boundary, another
 * value inside a multi-byte sequence.  A message is valid when the state
 * after its last byte is NGX_CHAT_UTF8_ACCEPT.
 */
uint32_t ngx_chat_utf8_validate(uint32_t *state, const unsigned char *p,
    size_t len);


#endif /* _NGX_CHAT_UTF8_H_INCLUDED_ */
