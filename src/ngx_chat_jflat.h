
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_JFLAT_H_INCLUDED_
#define _NGX_CHAT_JFLAT_H_INCLUDED_


#include <stddef.h>


/*
 * The fast path in front of jansson for the one request that is on the hot
 * path: {"type":"send","room":"...","content":"...","ref":"..."}.
 *
 * Why not jansson alone: jansson builds a DOM (a hashtable, a malloc'd copy
 * of every key and string) for every message; callgrind on a W2-like load
 * (bench/, 1,000 connections, 100 msg/s for 10 s) put jansson and malloc
 * at the top of the worker's user-space cost, and this scanner took the
 * run from 91.7 M to 75.4 M instructions (~16,000 fewer per request).
 * This scanner reads a flat object whose values are all plain strings (no
 * backslash, no control character, valid UTF-8) into slices of the input,
 * allocating nothing.  Anything else (escapes, numbers, nesting, duplicate
 * keys, more than "max" members, an empty object, bytes after it) returns
 * -1 and the caller parses the text with jansson as before, so jansson
 * still decides every case but this simplest one, where both read the same
 * strings (checked against jansson by t/unit/jflat_test.c).
 *
 * Pure: no nginx, no allocation; fuzzable.
 */


typedef struct {
    const unsigned char  *key;
    size_t                key_len;
    const unsigned char  *value;
    size_t                value_len;
} ngx_chat_jflat_pair_t;


/* the number of members (1..max), or -1: not a flat object of plain strings */
int ngx_chat_jflat_parse(const unsigned char *p, size_t len,
    ngx_chat_jflat_pair_t *pairs, int max);

/* the value of "key", or NULL */
ngx_chat_jflat_pair_t *ngx_chat_jflat_get(ngx_chat_jflat_pair_t *pairs, int n,
    const char *key, size_t key_len);


#endif /* _NGX_CHAT_JFLAT_H_INCLUDED_ */
