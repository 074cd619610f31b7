
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_JWT_H_INCLUDED_
#define _NGX_CHAT_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/evp.h>
#include "ngx_chat.h"


/*
 * Token authentication (SPEC §10): JSON Web Tokens in compact form (RFC
 * 7519, 7515), checked with one key and exactly one algorithm, both fixed
 * by the configuration (chat_jwt_key FILE [ALG]).  No chat knowledge and
 * no I/O but reading the key file at configuration time
 * (ngx_chat_jwt_conf.c).
 */

/* clock skew allowed for exp and nbf, seconds */
#define NGX_CHAT_JWT_LEEWAY  3

#define NGX_CHAT_JWT_MAX_LEN 8192


typedef enum {
    NGX_CHAT_JWT_HMAC = 0,
    NGX_CHAT_JWT_RSA,
    NGX_CHAT_JWT_ECDSA
} ngx_chat_jwt_family_e;


typedef struct {
    ngx_str_t                  name;
    ngx_chat_jwt_family_e      family;
    ngx_uint_t                 bits;      /* of the hash */
    char                      *curve;     /* ECDSA */
} ngx_chat_jwt_alg_t;


/* a key and the one algorithm it verifies */
struct ngx_chat_jwt_key_s {
    ngx_chat_jwt_alg_t        *alg;
    ngx_str_t                  secret;    /* HMAC */
    EVP_PKEY                  *pkey;      /* RSA, ECDSA */
};


/* a verified token: one ngx_alloc() block, ngx_chat_jwt_free() */
typedef struct {
    ngx_str_t                  sub;
    int64_t                    exp;       /* ms since the epoch */
    ngx_str_t                 *rooms;     /* NULL: every room */
    ngx_uint_t                 nrooms;
} ngx_chat_jwt_t;


/* HS256 ... ES384 by name, or NULL */
ngx_chat_jwt_alg_t *ngx_chat_jwt_alg(ngx_str_t *name);

/*
 * chat_jwt_key (ngx_chat_jwt_conf.c): reads the file and returns the key,
 * or NULL with an error logged against the directive (file and line); alg
 * may be empty (HS256 for a secret, RS256/ES256/ES384 after a PEM public
 * key's type)
 */
ngx_chat_jwt_key_t *ngx_chat_jwt_key_read(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *alg);

/*
 * Verifies a token: the claims, or NULL with *why saying what was wrong
 * (a static string, never a part of the token); *why is NULL when only
 * memory ran out
 */
ngx_chat_jwt_t *ngx_chat_jwt_verify(ngx_chat_jwt_key_t *key, u_char *token,
    size_t len, char **why, ngx_log_t *log);

void ngx_chat_jwt_free(ngx_chat_jwt_t *jwt);

/* the rooms claim covers this room */
ngx_uint_t ngx_chat_jwt_room_allowed(ngx_chat_jwt_t *jwt, ngx_str_t *room);


#endif /* _NGX_CHAT_JWT_H_INCLUDED_ */
