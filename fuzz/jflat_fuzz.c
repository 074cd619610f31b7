
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the in-place reader of flat "send" requests
 * (ngx_chat_jflat.c) against jansson, as t/unit/jflat_test.c checks it on
 * hand-written and random texts, but guided by coverage.  Pure C: no
 * nginx.
 *
 * Input: byte 0 sets the most members the reader may return (1 to 8), the
 * rest is the text, in an exactly sized allocation so that ASan sees any
 * overread.  The reader may decline anything (-1: jansson decides then);
 * whenever it accepts, jansson (duplicate keys refused) must read the same
 * text as an object of exactly those members, each a string equal to the
 * slice the reader returned, which lies within the text, holds no
 * backslash nor control character, and is found again by
 * ngx_chat_jflat_get().
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "ngx_chat_jflat.h"


#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


static void
plain(const unsigned char *text, size_t len, const unsigned char *s,
    size_t n)
{
    size_t  i;

    ASSERT(s >= text && s + n <= text + len);

    for (i = 0; i < n; i++) {
        ASSERT(s[i] != '\\' && s[i] >= 0x20);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                     n, i, max;
    char                   *key;
    json_t                 *j, *v;
    unsigned char          *text;
    json_error_t            err;
    ngx_chat_jflat_pair_t   pairs[8];

    if (size < 1) {
        return 0;
    }

    max = 1 + data[0] % 8;
    size--;

    text = malloc(size ? size : 1);
    ASSERT(text != NULL);
    memcpy(text, data + 1, size);

    n = ngx_chat_jflat_parse(text, size, pairs, max);

    ASSERT(n == -1 || (n >= 1 && n <= max));

    if (n < 0) {
        free(text);
        return 0;
    }

    j = json_loadb((const char *) text, size, JSON_REJECT_DUPLICATES, &err);

    if (j == NULL || !json_is_object(j) || (int) json_object_size(j) != n) {
        fprintf(stderr, "accepted %d members, jansson: %s: %.*s\n", n,
                j ? "a different object" : err.text, (int) size, text);
        abort();
    }

    for (i = 0; i < n; i++) {
        plain(text, size, pairs[i].key, pairs[i].key_len);
        plain(text, size, pairs[i].value, pairs[i].value_len);

        ASSERT(ngx_chat_jflat_get(pairs, n, (const char *) pairs[i].key,
                                  pairs[i].key_len)
               == &pairs[i]);

        key = malloc(pairs[i].key_len + 1);
        ASSERT(key != NULL);
        memcpy(key, pairs[i].key, pairs[i].key_len);
        key[pairs[i].key_len] = '\0';

        v = json_object_get(j, key);

        ASSERT(v != NULL && json_is_string(v)
               && json_string_length(v) == pairs[i].value_len
               && memcmp(json_string_value(v), pairs[i].value,
                         pairs[i].value_len) == 0);

        free(key);
    }

    json_decref(j);
    free(text);

    return 0;
}
