
/*
 * Copyright (C) ngx_chat_module authors
 *
 * chat_redis at configuration time: the URL is parsed and its host
 * resolved (see ngx_chat_redis.h); the connection is in ngx_chat_redis.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_chat_redis.h"


#define NGX_CHAT_REDIS_DEFAULT_PORT      6379
#define NGX_CHAT_REDIS_CONNECT_TIMEOUT   3000
#define NGX_CHAT_REDIS_COMMAND_TIMEOUT   5000


static char *ngx_chat_redis_parse_host(ngx_conf_t *cf, ngx_str_t *host,
    ngx_chat_redis_conf_t *conf);
static ngx_int_t ngx_chat_redis_unescape(ngx_pool_t *pool, u_char *p,
    u_char *last, ngx_str_t *out);


char *
ngx_chat_redis_parse_url(ngx_conf_t *cf, ngx_str_t *url,
    ngx_chat_redis_conf_t *conf)
{
    u_char     *p, *q, *at, *colon, *slash, *last;
    char       *rv;
    ngx_int_t   db;
    ngx_str_t   host, name;

    ngx_memzero(conf, sizeof(ngx_chat_redis_conf_t));

    /*
     * set by ngx_memzero():
     *
     *     conf->user = { 0, NULL };
     *     conf->password = { 0, NULL };
     */

    conf->db = -1;
    conf->connect_timeout = NGX_CHAT_REDIS_CONNECT_TIMEOUT;
    conf->command_timeout = NGX_CHAT_REDIS_COMMAND_TIMEOUT;

    p = url->data;
    last = p + url->len;

    if (url->len > 8 && ngx_strncasecmp(p, (u_char *) "redis://", 8) == 0) {
        p += 8;

        /* the last '@': a password may contain '@' and '/' */

        at = NULL;
        colon = NULL;

        for (q = p; q < last; q++) {
            if (*q == '@') {
                at = q;
            }
        }

        if (at) {
            colon = ngx_strlchr(p, at, ':');

            if (colon == NULL) {
                return "invalid redis URL: credentials must be "
                       "\"[user]:password@\"";
            }

            if (ngx_chat_redis_unescape(cf->pool, p, colon, &conf->user)
                != NGX_OK
                || ngx_chat_redis_unescape(cf->pool, colon + 1, at,
                                           &conf->password)
                   != NGX_OK)
            {
                return "invalid redis URL: bad %-escape in credentials";
            }

            if (conf->password.len == 0) {
                return "invalid redis URL: empty password";
            }

            p = at + 1;
        }

        slash = ngx_strlchr(p, last, '/');

        host.data = p;
        host.len = (slash ? slash : last) - p;

        if (slash && slash + 1 < last) {
            db = ngx_atoi(slash + 1, last - slash - 1);

            if (db == NGX_ERROR) {
                return "invalid redis database number";
            }

            conf->db = db;
        }

        if (host.len == 0
            || (host.len >= 5
                && ngx_strncasecmp(host.data, (u_char *) "unix:", 5) == 0))
        {
            return "invalid redis URL: no host";
        }

        rv = ngx_chat_redis_parse_host(cf, &host, conf);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        /* for logs: "redis://user:***@host:port/db", no password */

        name.len = sizeof("redis://") - 1 + (last - p);

        if (at) {
            name.len += (colon - url->data - 8) + sizeof(":***@") - 1;
        }

        name.data = ngx_pnalloc(cf->pool, name.len);
        if (name.data == NULL) {
            return "out of memory";
        }

        q = ngx_cpymem(name.data, url->data, 8);

        if (at) {
            q = ngx_cpymem(q, url->data + 8, colon - url->data - 8);
            q = ngx_cpymem(q, ":***@", sizeof(":***@") - 1);
        }

        ngx_memcpy(q, p, last - p);

        conf->url = name;

        return NGX_CONF_OK;
    }

    if (url->len > 5 && ngx_strncasecmp(p, (u_char *) "unix:", 5) == 0) {

        if (url->len > 6 && p[5] == '/' && p[6] == '/') {
            return "invalid redis URL: use \"unix:/path/to/socket\"";
        }

        q = ngx_strlchr(p, last, '?');

        if (q) {
            if (last - q < 5 || ngx_strncmp(q + 1, "db=", 3) != 0) {
                return "invalid redis URL: only \"?db=N\" may follow "
                       "the socket path";
            }

            db = ngx_atoi(q + 4, last - q - 4);

            if (db == NGX_ERROR) {
                return "invalid redis database number";
            }

            conf->db = db;
        }

        host.data = p;
        host.len = (q ? q : last) - p;

        rv = ngx_chat_redis_parse_host(cf, &host, conf);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        conf->url = *url;

        return NGX_CONF_OK;
    }

    return "invalid redis URL";
}


static char *
ngx_chat_redis_parse_host(ngx_conf_t *cf, ngx_str_t *host,
    ngx_chat_redis_conf_t *conf)
{
    u_char     *p;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *host;
    u.default_port = NGX_CHAT_REDIS_DEFAULT_PORT;

    /* resolves names: configuration time only */

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {

        if (u.err == NULL) {
            return "out of memory";
        }

        if (ngx_strcmp(u.err, "host not found") == 0) {
            return "redis host not found";
        }

        p = ngx_pnalloc(cf->pool, sizeof("invalid redis URL: ")
                                  + ngx_strlen(u.err));
        if (p == NULL) {
            return "out of memory";
        }

        (void) ngx_sprintf(p, "invalid redis URL: %s%Z", u.err);

        return (char *) p;
    }

    if (u.naddrs == 0) {
        return "redis host not found";
    }

    conf->addrs = u.addrs;
    conf->naddrs = u.naddrs;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_chat_redis_unescape(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_str_t *out)
{
    u_char     *d;
    ngx_int_t   hi, lo;

    if (p == last) {
        ngx_str_null(out);
        return NGX_OK;
    }

    d = ngx_pnalloc(pool, last - p);
    if (d == NULL) {
        return NGX_ERROR;
    }

    out->data = d;

    while (p < last) {

        if (*p != '%') {
            *d++ = *p++;
            continue;
        }

        if (last - p < 3) {
            return NGX_ERROR;
        }

        hi = ngx_hextoi(p + 1, 1);
        lo = ngx_hextoi(p + 2, 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        *d++ = (u_char) (hi * 16 + lo);
        p += 3;
    }

    out->len = d - out->data;

    return NGX_OK;
}
