
/*
 * Copyright (C) ngx_chat_module authors
 *
 * chat_postgres at configuration time: the conninfo is checked with
 * libpq's own parser (see ngx_chat_pg.h); the connection is in
 * ngx_chat_pg.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <libpq-fe.h>
#include "ngx_chat_pg.h"


#define NGX_CHAT_PG_CONNECT_TIMEOUT  5000
#define NGX_CHAT_PG_QUERY_TIMEOUT    10000


static char *ngx_chat_pg_check_option(ngx_conf_t *cf,
    ngx_chat_pg_conf_t *conf, PQconninfoOption *o);
static void ngx_chat_pg_check_hosts(ngx_conf_t *cf, const char *hosts);
static ngx_uint_t ngx_chat_pg_no_lookup(u_char *host, size_t len);


char *
ngx_chat_pg_parse(ngx_conf_t *cf, ngx_str_t *conninfo,
    ngx_chat_pg_conf_t *conf)
{
    u_char            *p, *err;
    char              *rv, *errmsg;
    size_t             len;
    const char        *hosts, *hostaddr;
    PQconninfoOption  *opts, *o;
    u_char             buf[NGX_CHAT_PG_MESSAGE_MAX];

    ngx_memzero(conf, sizeof(ngx_chat_pg_conf_t));

    conf->connect_timeout = NGX_CHAT_PG_CONNECT_TIMEOUT;
    conf->query_timeout = NGX_CHAT_PG_QUERY_TIMEOUT;

    if (ngx_strlchr(conninfo->data, conninfo->data + conninfo->len, '\0')
        != NULL)
    {
        return "invalid PostgreSQL conninfo: a NUL byte";
    }

    p = ngx_pnalloc(cf->pool, conninfo->len + 1);
    if (p == NULL) {
        return "invalid PostgreSQL conninfo: out of memory";
    }

    ngx_memcpy(p, conninfo->data, conninfo->len);
    p[conninfo->len] = '\0';

    conf->conninfo.data = p;
    conf->conninfo.len = conninfo->len;

    /* no defaults, environment or service files: syntax only */

    errmsg = NULL;
    opts = PQconninfoParse((const char *) p, &errmsg);

    if (opts == NULL) {
        if (errmsg == NULL) {
            return "invalid PostgreSQL conninfo: out of memory";
        }

        len = ngx_chat_pg_message(buf, sizeof(buf), errmsg);
        PQfreemem(errmsg);

        err = ngx_pnalloc(cf->pool,
                          sizeof("invalid PostgreSQL conninfo: ") + len);
        if (err == NULL) {
            return "invalid PostgreSQL conninfo";
        }

        ngx_sprintf(err, "invalid PostgreSQL conninfo: %*s%Z", len, buf);

        return (char *) err;
    }

    hosts = NULL;
    hostaddr = NULL;
    rv = NGX_CONF_OK;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            hosts = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;

        } else {
            rv = ngx_chat_pg_check_option(cf, conf, o);
            if (rv != NGX_CONF_OK) {
                break;
            }
        }
    }

    if (rv == NGX_CONF_OK
        && hosts != NULL
        && (hostaddr == NULL || hostaddr[0] == '\0'))
    {
        ngx_chat_pg_check_hosts(cf, hosts);
    }

    PQconninfoFree(opts);

    return rv;
}


/* what libpq would only find at connect time */

static char *
ngx_chat_pg_check_option(ngx_conf_t *cf, ngx_chat_pg_conf_t *conf,
    PQconninfoOption *o)
{
    u_char     *p, *last;
    size_t      len;
    ngx_int_t   n;

    len = ngx_strlen(o->val);

    if (ngx_strcmp(o->keyword, "connect_timeout") == 0) {

        /* libpq's own, in seconds: honoured here, at least 2s as there */

        if (len == 0) {
            return NGX_CONF_OK;
        }

        n = ngx_atoi((u_char *) o->val, len);
        if (n == NGX_ERROR) {
            return "invalid PostgreSQL conninfo: invalid connect_timeout";
        }

        if (n > 0) {
            conf->connect_timeout = (ngx_msec_t) ngx_max(n, 2) * 1000;
        }

        return NGX_CONF_OK;
    }

    if (ngx_strcmp(o->keyword, "port") == 0) {

        /* a port, or a list of them for a list of hosts */

        p = (u_char *) o->val;
        last = p + len;

        while (p <= last) {
            len = 0;

            while (p + len < last && p[len] != ',') {
                len++;
            }

            if (len) {
                n = ngx_atoi(p, len);

                if (n < 1 || n > 65535) {
                    return "invalid PostgreSQL conninfo: invalid port";
                }
            }

            p += len + 1;
        }
    }

    return NGX_CONF_OK;
}


/* a host name makes libpq call getaddrinfo(), which blocks the worker */

static void
ngx_chat_pg_check_hosts(ngx_conf_t *cf, const char *hosts)
{
    u_char  *p, *last;
    size_t   len;

    p = (u_char *) hosts;
    last = p + ngx_strlen(hosts);

    while (p <= last) {
        len = 0;

        while (p + len < last && p[len] != ',') {
            len++;
        }

        if (!ngx_chat_pg_no_lookup(p, len)) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "chat postgres: host \"%*s\" is looked up "
                               "by libpq with a blocking call at every "
                               "connect, consider \"hostaddr=\"", len, p);
        }

        p += len + 1;
    }
}


/* a socket directory, an address, or localhost (from /etc/hosts) */

static ngx_uint_t
ngx_chat_pg_no_lookup(u_char *host, size_t len)
{
#if (NGX_HAVE_INET6)
    u_char  addr6[16];
#endif

    if (len == 0 || host[0] == '/' || host[0] == '@') {
        return 1;
    }

    if (len == 9 && ngx_strncasecmp(host, (u_char *) "localhost", 9) == 0) {
        return 1;
    }

    if (ngx_inet_addr(host, len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host, len, addr6) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}
