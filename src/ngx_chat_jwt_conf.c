
/*
 * Copyright (C) ngx_chat_module authors
 *
 * chat_jwt_key at configuration time (see ngx_chat_jwt.h): the file is
 * read, an HMAC secret or a PEM public key checked against the algorithm,
 * and every problem reported with the directive's file and line; so a
 * reload reads the keys again, and "nginx -t" finds a bad one.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "ngx_chat.h"
#include "ngx_chat_jwt.h"


#define NGX_CHAT_JWT_MAX_KEY  65536


static void ngx_chat_jwt_key_cleanup(void *data);


ngx_chat_jwt_key_t *
ngx_chat_jwt_key_read(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *alg)
{
    u_char              *buf;
    char                 group[64];
    BIO                 *bio;
    size_t               len;
    ssize_t              n;
    ngx_fd_t             fd;
    ngx_str_t            name, def;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;
    ngx_chat_jwt_key_t  *key;

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NULL;
    }

    key = ngx_pcalloc(cf->pool, sizeof(ngx_chat_jwt_key_t));
    if (key == NULL) {
        return NULL;
    }

    if (alg->len) {
        key->alg = ngx_chat_jwt_alg(alg);

        if (key->alg == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown chat_jwt_key algorithm \"%V\" (HS256, "
                               "HS384, HS512, RS256, RS384, RS512, ES256, "
                               "ES384)", alg);
            return NULL;
        }
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "chat_jwt_key: cannot open \"%V\"", &name);
        return NULL;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "chat_jwt_key: cannot stat \"%V\"", &name);
        goto failed;
    }

    len = (size_t) ngx_file_size(&fi);

    if (len == 0 || len > NGX_CHAT_JWT_MAX_KEY) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat_jwt_key: \"%V\" has %uz bytes, a key must "
                           "have 1 to %d", &name, len, NGX_CHAT_JWT_MAX_KEY);
        goto failed;
    }

    buf = ngx_pnalloc(cf->pool, len);
    if (buf == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, buf, len);

    if (n == -1 || (size_t) n != len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "chat_jwt_key: cannot read \"%V\"", &name);
        goto failed;
    }

    ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    /* a PEM public key, or the bytes of an HMAC secret */

    bio = BIO_new_mem_buf(buf, (int) len);
    if (bio == NULL) {
        return NULL;
    }

    key->pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (key->pkey) {
        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            EVP_PKEY_free(key->pkey);
            return NULL;
        }

        cln->handler = ngx_chat_jwt_key_cleanup;
        cln->data = key;
    }

    if (key->alg == NULL) {
        if (key->pkey == NULL) {
            ngx_str_set(&def, "HS256");

        } else if (EVP_PKEY_get_base_id(key->pkey) == EVP_PKEY_RSA) {
            ngx_str_set(&def, "RS256");

        } else if (EVP_PKEY_get_base_id(key->pkey) == EVP_PKEY_EC
                   && EVP_PKEY_get_bits(key->pkey) == 384)
        {
            ngx_str_set(&def, "ES384");

        } else {
            ngx_str_set(&def, "ES256");
        }

        key->alg = ngx_chat_jwt_alg(&def);
    }

    if (key->alg->family == NGX_CHAT_JWT_HMAC) {

        if (key->pkey || ngx_strlcasestrn(buf, buf + len,
                                          (u_char *) "-----BEGIN", 10 - 1))
        {
            /* a public key as an HMAC secret: HS/RS confusion */
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat_jwt_key: \"%V\" holds a PEM key, which "
                               "%V would use as a shared secret",
                               &name, &key->alg->name);
            return NULL;
        }

        /* the file's bytes as they are, one trailing newline ignored */

        if (buf[len - 1] == '\n') {
            len--;

            if (len && buf[len - 1] == '\r') {
                len--;
            }
        }

        if (len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat_jwt_key: \"%V\" is an empty secret",
                               &name);
            return NULL;
        }

        key->secret.data = buf;
        key->secret.len = len;

        return key;
    }

    if (key->pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat_jwt_key: \"%V\" is not a PEM public key, "
                           "which %V needs", &name, &key->alg->name);
        return NULL;
    }

    if (key->alg->family == NGX_CHAT_JWT_RSA) {

        if (EVP_PKEY_get_base_id(key->pkey) != EVP_PKEY_RSA) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat_jwt_key: \"%V\" is not an RSA public "
                               "key, which %V needs", &name, &key->alg->name);
            return NULL;
        }

        if (EVP_PKEY_get_bits(key->pkey) < 2048) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "chat_jwt_key: \"%V\" is an RSA key of %d "
                               "bits, at least 2048 are needed", &name,
                               EVP_PKEY_get_bits(key->pkey));
            return NULL;
        }

        return key;
    }

    if (EVP_PKEY_get_base_id(key->pkey) != EVP_PKEY_EC
        || EVP_PKEY_get_group_name(key->pkey, group, sizeof(group), NULL)
           != 1
        || ngx_strcmp(group, key->alg->curve) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat_jwt_key: \"%V\" is not an EC public key on "
                           "curve %s, which %V needs", &name, key->alg->curve,
                           &key->alg->name);
        return NULL;
    }

    return key;

failed:

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }

    return NULL;
}


static void
ngx_chat_jwt_key_cleanup(void *data)
{
    ngx_chat_jwt_key_t  *key = data;

    if (key->pkey) {
        EVP_PKEY_free(key->pkey);
        key->pkey = NULL;
    }
}
