
/*
 * Copyright (C) ngx_chat_module authors
 *
 * JSON Web Tokens (SPEC §10), verified with OpenSSL's EVP interface and
 * parsed with jansson, both linked already.  Why not libjwt (Debian 12's
 * libjwt 1.10): its jwt_decode() verifies with whatever algorithm the
 * token's header names, so the pinning against "alg: none" and HS/RS
 * confusion (RFC 8725 §2.1, §3.1) would still be ours to get right around
 * it; it answers every failure with the same EINVAL, where the log must
 * say why; and it checks no claim (exp, nbf) at all.  What is left once
 * the algorithm is fixed is three calls: HMAC() with a constant-time
 * compare (CRYPTO_memcmp), or EVP_DigestVerify() with the PEM public key
 * (ECDSA's JOSE r||s signature turned into DER first).  The key file is
 * read in ngx_chat_jwt_conf.c, at configuration time.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ecdsa.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include "ngx_chat.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_jwt.h"


static const EVP_MD *ngx_chat_jwt_md(ngx_uint_t bits);
static ngx_int_t ngx_chat_jwt_base64url(ngx_str_t *dst, ngx_str_t *src);
static json_t *ngx_chat_jwt_part(u_char *p, size_t len, ngx_log_t *log);
static ngx_int_t ngx_chat_jwt_signature(ngx_chat_jwt_key_t *key,
    u_char *input, size_t len, u_char *sig, size_t siglen);
static ngx_int_t ngx_chat_jwt_time(json_t *claims, const char *name,
    int64_t *value);


static ngx_chat_jwt_alg_t  ngx_chat_jwt_algs[] = {
    { ngx_string("HS256"), NGX_CHAT_JWT_HMAC, 256, NULL },
    { ngx_string("HS384"), NGX_CHAT_JWT_HMAC, 384, NULL },
    { ngx_string("HS512"), NGX_CHAT_JWT_HMAC, 512, NULL },
    { ngx_string("RS256"), NGX_CHAT_JWT_RSA, 256, NULL },
    { ngx_string("RS384"), NGX_CHAT_JWT_RSA, 384, NULL },
    { ngx_string("RS512"), NGX_CHAT_JWT_RSA, 512, NULL },
    { ngx_string("ES256"), NGX_CHAT_JWT_ECDSA, 256, "prime256v1" },
    { ngx_string("ES384"), NGX_CHAT_JWT_ECDSA, 384, "secp384r1" },
    { ngx_null_string, 0, 0, NULL }
};


ngx_chat_jwt_alg_t *
ngx_chat_jwt_alg(ngx_str_t *name)
{
    ngx_chat_jwt_alg_t  *a;

    for (a = ngx_chat_jwt_algs; a->name.len; a++) {
        if (a->name.len == name->len
            && ngx_strncmp(a->name.data, name->data, name->len) == 0)
        {
            return a;
        }
    }

    return NULL;
}


static const EVP_MD *
ngx_chat_jwt_md(ngx_uint_t bits)
{
    switch (bits) {
    case 384:
        return EVP_sha384();
    case 512:
        return EVP_sha512();
    default:
        return EVP_sha256();
    }
}


ngx_chat_jwt_t *
ngx_chat_jwt_verify(ngx_chat_jwt_key_t *key, u_char *token, size_t len,
    char **why, ngx_log_t *log)
{
    u_char          *p, *dot1, *dot2, *last, *sig;
    size_t           size, n;
    json_t          *header, *claims, *v, *rooms;
    int64_t          exp, nbf;
    uint32_t         utf8;
    ngx_str_t        s, src, dst;
    ngx_uint_t       i, nrooms;
    ngx_chat_jwt_t  *jwt;
    struct timeval   tv;

    header = NULL;
    claims = NULL;
    jwt = NULL;

    if (len == 0) {
        *why = "no token";
        return NULL;
    }

    if (len > NGX_CHAT_JWT_MAX_LEN) {
        *why = "token too long";
        return NULL;
    }

    last = token + len;

    dot1 = ngx_strlchr(token, last, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, last, '.') : NULL;

    if (dot2 == NULL || ngx_strlchr(dot2 + 1, last, '.') != NULL) {
        *why = "not a compact JWS (three parts)";
        return NULL;
    }

    header = ngx_chat_jwt_part(token, dot1 - token, log);

    if (header == NULL || !json_is_object(header)) {
        *why = "malformed header";
        goto failed;
    }

    v = json_object_get(header, "alg");

    if (!json_is_string(v)) {
        *why = "no \"alg\" in the header";
        goto failed;
    }

    /* the configured algorithm and no other: "none" and confusion too */

    if (json_string_length(v) != key->alg->name.len
        || ngx_strncmp(json_string_value(v), key->alg->name.data,
                       key->alg->name.len) != 0)
    {
        *why = "algorithm is not the configured one";
        goto failed;
    }

    if (json_object_get(header, "crit") != NULL) {
        *why = "\"crit\" header parameters are not supported";
        goto failed;
    }

    /* the signature, before any claim is looked at */

    src.data = dot2 + 1;
    src.len = last - src.data;

    sig = ngx_alloc(ngx_base64_decoded_length(src.len) + 1, log);
    if (sig == NULL) {
        *why = NULL;
        goto failed;
    }

    dst.data = sig;

    if (src.len == 0 || ngx_chat_jwt_base64url(&dst, &src) != NGX_OK) {
        ngx_free(sig);
        *why = "malformed signature";
        goto failed;
    }

    if (ngx_chat_jwt_signature(key, token, dot2 - token, dst.data, dst.len)
        != NGX_OK)
    {
        ngx_free(sig);
        *why = "bad signature";
        goto failed;
    }

    ngx_free(sig);

    claims = ngx_chat_jwt_part(dot1 + 1, dot2 - dot1 - 1, log);

    if (claims == NULL || !json_is_object(claims)) {
        *why = "malformed claims";
        goto failed;
    }

    ngx_gettimeofday(&tv);

    switch (ngx_chat_jwt_time(claims, "exp", &exp)) {
    case NGX_DECLINED:
        *why = "no \"exp\" claim";
        goto failed;
    case NGX_ERROR:
        *why = "\"exp\" is not a number";
        goto failed;
    default:
        break;
    }

    if (exp + NGX_CHAT_JWT_LEEWAY * 1000
        <= (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000)
    {
        *why = "token expired";
        goto failed;
    }

    switch (ngx_chat_jwt_time(claims, "nbf", &nbf)) {
    case NGX_ERROR:
        *why = "\"nbf\" is not a number";
        goto failed;
    case NGX_OK:
        if (nbf > (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000
                  + NGX_CHAT_JWT_LEEWAY * 1000)
        {
            *why = "token not yet valid (nbf)";
            goto failed;
        }
        break;
    default:
        break;
    }

    v = json_object_get(claims, "sub");

    if (!json_is_string(v) || json_string_length(v) == 0) {
        *why = "no \"sub\" claim (a non-empty string)";
        goto failed;
    }

    if (json_string_length(v) > NGX_CHAT_MAX_USER) {
        *why = "\"sub\" is longer than a user id may be";
        goto failed;
    }

    size = sizeof(ngx_chat_jwt_t) + json_string_length(v);
    nrooms = 0;

    rooms = json_object_get(claims, "rooms");

    if (rooms) {
        if (!json_is_array(rooms)) {
            *why = "\"rooms\" is not an array";
            goto failed;
        }

        nrooms = json_array_size(rooms);

        for (i = 0; i < nrooms; i++) {
            v = json_array_get(rooms, i);

            if (!json_is_string(v)
                || json_string_length(v) > NGX_CHAT_MAX_ROOM_NAME)
            {
                *why = "\"rooms\" holds something that is not a room name";
                goto failed;
            }

            size += sizeof(ngx_str_t) + json_string_length(v);
        }
    }

    jwt = ngx_alloc(size, log);
    if (jwt == NULL) {
        *why = NULL;
        goto failed;
    }

    p = (u_char *) jwt + sizeof(ngx_chat_jwt_t);

    jwt->exp = exp;
    jwt->nrooms = nrooms;
    jwt->rooms = NULL;

    if (rooms) {
        jwt->rooms = (ngx_str_t *) p;
        p += nrooms * sizeof(ngx_str_t);

        for (i = 0; i < nrooms; i++) {
            v = json_array_get(rooms, i);
            n = json_string_length(v);

            jwt->rooms[i].data = p;
            jwt->rooms[i].len = n;
            p = ngx_cpymem(p, json_string_value(v), n);
        }
    }

    v = json_object_get(claims, "sub");

    s.len = json_string_length(v);
    s.data = p;
    ngx_memcpy(p, json_string_value(v), s.len);

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&utf8, s.data, s.len) != NGX_CHAT_UTF8_ACCEPT
        || ngx_strlchr(s.data, s.data + s.len, '\0'))
    {
        *why = "\"sub\" is not valid UTF-8 or holds U+0000";
        goto failed;
    }

    jwt->sub = s;

    json_decref(header);
    json_decref(claims);

    return jwt;

failed:

    if (jwt) {
        ngx_free(jwt);
    }

    if (header) {
        json_decref(header);
    }

    if (claims) {
        json_decref(claims);
    }

    return NULL;
}


/*
 * base64url without padding, in its one canonical spelling: nginx's
 * decoder stops at a '=' (what follows would be ignored) and ignores the
 * unused low bits of the last character, so that one token would have
 * several spellings
 */

static ngx_int_t
ngx_chat_jwt_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    u_char      c, *p, *last;
    ngx_uint_t  v, unused;

    p = src->data;
    last = p + src->len;

    for ( /* void */ ; p < last; p++) {
        c = *p;

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }
    }

    switch (src->len % 4) {
    case 1:
        return NGX_ERROR;
    case 2:
        unused = 0x0f;
        break;
    case 3:
        unused = 0x03;
        break;
    default:
        unused = 0;
        break;
    }

    if (unused) {
        c = src->data[src->len - 1];

        v = (c >= 'A' && c <= 'Z') ? (ngx_uint_t) (c - 'A')
            : (c >= 'a' && c <= 'z') ? (ngx_uint_t) (c - 'a' + 26)
            : (c >= '0' && c <= '9') ? (ngx_uint_t) (c - '0' + 52)
            : (c == '-') ? 62 : 63;

        if (v & unused) {
            return NGX_ERROR;
        }
    }

    return ngx_decode_base64url(dst, src);
}


/* a base64url part, decoded and parsed: a JSON value or NULL */

static json_t *
ngx_chat_jwt_part(u_char *p, size_t len, ngx_log_t *log)
{
    json_t     *json;
    ngx_str_t   src, dst;

    if (len == 0) {
        return NULL;
    }

    src.data = p;
    src.len = len;

    dst.data = ngx_alloc(ngx_base64_decoded_length(len) + 1, log);
    if (dst.data == NULL) {
        return NULL;
    }

    if (ngx_chat_jwt_base64url(&dst, &src) != NGX_OK) {
        ngx_free(dst.data);
        return NULL;
    }

    /* duplicate names would let two readers see two different tokens */

    json = json_loadb((const char *) dst.data, dst.len,
                      JSON_REJECT_DUPLICATES, NULL);

    ngx_free(dst.data);

    return json;
}


static ngx_int_t
ngx_chat_jwt_signature(ngx_chat_jwt_key_t *key, u_char *input, size_t len,
    u_char *sig, size_t siglen)
{
    int             ok;
    u_char          mac[EVP_MAX_MD_SIZE], *der, *q;
    size_t          half;
    BIGNUM         *r, *s;
    ECDSA_SIG      *es;
    EVP_MD_CTX     *md;
    unsigned int    maclen;
    const EVP_MD   *type;

    type = ngx_chat_jwt_md(key->alg->bits);

    if (key->alg->family == NGX_CHAT_JWT_HMAC) {
        maclen = 0;

        if (HMAC(type, key->secret.data, (int) key->secret.len, input, len,
                 mac, &maclen)
            == NULL)
        {
            return NGX_ERROR;
        }

        if (siglen != maclen || CRYPTO_memcmp(mac, sig, maclen) != 0) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    der = NULL;

    if (key->alg->family == NGX_CHAT_JWT_ECDSA) {

        /* JOSE: r || s, each the curve's size (RFC 7518 §3.4); DER here */

        half = key->alg->bits / 8;

        if (siglen != 2 * half) {
            return NGX_ERROR;
        }

        es = ECDSA_SIG_new();
        if (es == NULL) {
            return NGX_ERROR;
        }

        r = BN_bin2bn(sig, (int) half, NULL);
        s = BN_bin2bn(sig + half, (int) half, NULL);

        if (r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return NGX_ERROR;
        }

        ok = i2d_ECDSA_SIG(es, NULL);

        der = ok > 0 ? OPENSSL_malloc(ok) : NULL;
        if (der == NULL) {
            ECDSA_SIG_free(es);
            return NGX_ERROR;
        }

        q = der;
        siglen = i2d_ECDSA_SIG(es, &q);
        sig = der;

        ECDSA_SIG_free(es);
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        OPENSSL_free(der);
        return NGX_ERROR;
    }

    ok = EVP_DigestVerifyInit(md, NULL, type, NULL, key->pkey) == 1
         && EVP_DigestVerify(md, sig, siglen, input, len) == 1;

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    /* what a failed verification left on the thread's error queue */
    ERR_clear_error();

    return ok ? NGX_OK : NGX_ERROR;
}


/* a NumericDate claim in ms: NGX_OK, NGX_DECLINED (absent), NGX_ERROR */

static ngx_int_t
ngx_chat_jwt_time(json_t *claims, const char *name, int64_t *value)
{
    double   d;
    json_t  *v;

    v = json_object_get(claims, name);

    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0
            || json_integer_value(v) > 253402300799LL)   /* year 9999 */
        {
            return NGX_ERROR;
        }

        *value = (int64_t) json_integer_value(v) * 1000;
        return NGX_OK;
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        if (!(d >= 0 && d <= 253402300799.0)) {
            return NGX_ERROR;
        }

        *value = (int64_t) (d * 1000);
        return NGX_OK;
    }

    return NGX_ERROR;
}


void
ngx_chat_jwt_free(ngx_chat_jwt_t *jwt)
{
    ngx_free(jwt);
}


ngx_uint_t
ngx_chat_jwt_room_allowed(ngx_chat_jwt_t *jwt, ngx_str_t *room)
{
    size_t      n;
    ngx_str_t  *a;
    ngx_uint_t  i;

    if (jwt == NULL || jwt->rooms == NULL) {
        return 1;
    }

    for (i = 0; i < jwt->nrooms; i++) {
        a = &jwt->rooms[i];

        if (a->len && a->data[a->len - 1] == '*') {
            n = a->len - 1;

            if (room->len >= n && ngx_memcmp(room->data, a->data, n) == 0) {
                return 1;
            }

            continue;
        }

        if (a->len == room->len
            && ngx_memcmp(a->data, room->data, room->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
