
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the token verifier (ngx_chat_jwt.c), with an HS256
 * secret.  Random tokens almost never carry a valid signature, so most
 * inputs are signed by the harness to reach the header and claims checks:
 *
 * Input: byte 0 is the mode; bit 0 clear: the rest is the token as it is;
 * bit 0 set: the rest is a header and claims (any bytes, separated by
 * 0xff), which the harness encodes (base64url) and signs with the secret;
 * bit 1 set as well: one byte of that signature is changed.
 *
 * Checks: a token is accepted only with the configured algorithm in its
 * header and an intact signature; what is accepted has a sub of 1 to 256
 * bytes of UTF-8 without U+0000, an exp not past (within the leeway),
 * rooms of at most 128 bytes each; the rooms check answers for any name.
 * ASan and UBSan watch the decoding, the ECDSA-free HMAC path and the
 * claims' copy into one allocation.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "ngx_chat_utf8.h"
#include "ngx_chat_jwt.h"
#include "ngx_fuzz_runtime.h"


#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


static const char  b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


static size_t
encode(u_char *dst, const u_char *src, size_t len)
{
    u_char    *d;
    size_t     i;
    uint32_t   v;

    d = dst;

    for (i = 0; i + 2 < len; i += 3) {
        v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
        *d++ = b64url[(v >> 18) & 63];
        *d++ = b64url[(v >> 12) & 63];
        *d++ = b64url[(v >> 6) & 63];
        *d++ = b64url[v & 63];
    }

    if (len - i == 1) {
        v = src[i] << 16;
        *d++ = b64url[(v >> 18) & 63];
        *d++ = b64url[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = (src[i] << 16) | (src[i + 1] << 8);
        *d++ = b64url[(v >> 18) & 63];
        *d++ = b64url[(v >> 12) & 63];
        *d++ = b64url[(v >> 6) & 63];
    }

    return d - dst;
}


/* the header names exactly HS256 as its "alg" */

static int
alg_is_hs256(const u_char *h, size_t len)
{
    int      ok;
    json_t  *j, *v;

    j = json_loadb((const char *) h, len, JSON_REJECT_DUPLICATES, NULL);
    if (j == NULL) {
        return 0;
    }

    v = json_object_get(j, "alg");
    ok = json_is_string(v) && json_string_length(v) == 5
         && memcmp(json_string_value(v), "HS256", 5) == 0;

    json_decref(j);

    return ok;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char               *tok, *p, mac[EVP_MAX_MD_SIZE];
    char                 *why;
    size_t                hlen, clen, toklen;
    uint32_t              utf8;
    ngx_str_t             alg, room;
    ngx_uint_t            i, mode, signed_ok;
    unsigned int          maclen;
    const uint8_t        *sep;
    ngx_chat_jwt_t       *jwt;
    struct timeval        tv;
    ngx_chat_jwt_key_t    key;
    static ngx_log_t      log;
    static int            init;

    if (!init) {
        ngx_fuzz_runtime_init(&log);
        init = 1;
    }

    if (size < 1 || size > NGX_CHAT_JWT_MAX_LEN) {
        return 0;
    }

    ngx_str_set(&alg, "HS256");
    key.alg = ngx_chat_jwt_alg(&alg);
    key.pkey = NULL;
    ngx_str_set(&key.secret, "fuzz secret");

    mode = data[0];
    data++;
    size--;

    signed_ok = 0;

    if (!(mode & 1)) {
        tok = malloc(size ? size : 1);
        memcpy(tok, data, size);
        toklen = size;

    } else {
        sep = memchr(data, 0xff, size);
        hlen = sep ? (size_t) (sep - data) : size;
        clen = sep ? size - hlen - 1 : 0;

        tok = malloc(2 * size + 128);
        p = tok;
        p += encode(p, data, hlen);
        *p++ = '.';
        p += encode(p, sep ? sep + 1 : data, clen);

        HMAC(EVP_sha256(), key.secret.data, (int) key.secret.len, tok,
             p - tok, mac, &maclen);

        if (mode & 2) {
            mac[(size ? data[0] : 0) % maclen] ^= 1;

        } else {
            signed_ok = alg_is_hs256(data, hlen);
        }

        *p++ = '.';
        p += encode(p, mac, maclen);
        toklen = p - tok;
    }

    jwt = ngx_chat_jwt_verify(&key, tok, toklen, &why, &log);

    if (jwt == NULL) {
        ASSERT(why != NULL);
        free(tok);
        return 0;
    }

    /* accepted: a signature the harness made, over an HS256 header */

    ASSERT((mode & 1) == 0 || signed_ok);

    ASSERT(jwt->sub.len >= 1 && jwt->sub.len <= NGX_CHAT_MAX_USER);
    ASSERT(memchr(jwt->sub.data, '\0', jwt->sub.len) == NULL);

    utf8 = NGX_CHAT_UTF8_ACCEPT;
    ASSERT(ngx_chat_utf8_validate(&utf8, jwt->sub.data, jwt->sub.len)
           == NGX_CHAT_UTF8_ACCEPT);

    gettimeofday(&tv, NULL);
    ASSERT(jwt->exp + NGX_CHAT_JWT_LEEWAY * 1000
           > (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000 - 1000);

    for (i = 0; jwt->rooms && i < jwt->nrooms; i++) {
        ASSERT(jwt->rooms[i].len <= NGX_CHAT_MAX_ROOM_NAME);
        (void) ngx_chat_jwt_room_allowed(jwt, &jwt->rooms[i]);
    }

    room.data = (u_char *) data;
    room.len = ngx_min(size, NGX_CHAT_MAX_ROOM_NAME);
    (void) ngx_chat_jwt_room_allowed(jwt, &room);

    ngx_chat_jwt_free(jwt);
    free(tok);

    return 0;
}
