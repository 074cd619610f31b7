
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Test-only module: drives src/ngx_chat_pg.c from HTTP requests, one
 * connection object per directive per worker.
 *
 *   location /q { pg_probe CONNINFO [connect_timeout=T] [query_timeout=T]; }
 *
 * Requests:
 *
 *   ?sql=SELECT+$1&p=a&p=b    a query and its text parameters ($1, $2...)
 *                             in order; %XX escapes make any byte
 *   ...&null=1                one more parameter, NULL
 *   ...&lengths=1             pass lengths, values not NUL-terminated
 *   ?state=1                  "up" or "down"
 *   ?info=1                   "ups=N downs=N queries=N"
 *
 * A query answers 200 with the rows, fields separated by "|", a line each,
 * NULL as "\N" (rows) or "OK <command status>" (no rows); an SQL error
 * 500 "error <SQLSTATE>: <message>"; a connection that is down 503 "down";
 * a query that could not complete (handler called with NULL) 502 "failed".
 * The header X-Seq numbers queries in the order they were queued.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat_pg.h"


typedef struct {
    ngx_chat_pg_conf_t          conf;

    /* per worker */
    ngx_chat_pg_t              *pg;
    ngx_uint_t                  ups;
    ngx_uint_t                  downs;
    ngx_uint_t                  queries;
} ngx_http_pg_probe_server_t;


typedef struct {
    ngx_array_t                 servers;
} ngx_http_pg_probe_main_conf_t;


typedef struct {
    ngx_http_pg_probe_server_t  *server;
} ngx_http_pg_probe_loc_conf_t;


typedef struct {
    ngx_http_request_t          *request;
    ngx_uint_t                   seq;
} ngx_http_pg_probe_ctx_t;


static ngx_int_t ngx_http_pg_probe_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pg_probe_arg(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *val, u_char **p, u_char *last);
static void ngx_http_pg_probe_result(ngx_chat_pg_t *pg, PGresult *res,
    void *data);
static ngx_int_t ngx_http_pg_probe_render(ngx_http_request_t *r,
    PGresult *res, ngx_str_t *out);
static ngx_int_t ngx_http_pg_probe_output(ngx_http_request_t *r,
    ngx_uint_t status, ngx_uint_t seq, u_char *data, size_t len);
static void ngx_http_pg_probe_state(ngx_chat_pg_t *pg, ngx_uint_t up,
    void *data);
static char *ngx_http_pg_probe(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_pg_probe_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_pg_probe_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_pg_probe_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_pg_probe_init_process(ngx_cycle_t *cycle);
static void ngx_http_pg_probe_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_pg_probe_commands[] = {

    { ngx_string("pg_probe"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_pg_probe,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_pg_probe_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_pg_probe_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_pg_probe_create_loc_conf,     /* create location configuration */
    ngx_http_pg_probe_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_pg_probe_module = {
    NGX_MODULE_V1,
    &ngx_http_pg_probe_module_ctx,         /* module context */
    ngx_http_pg_probe_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_pg_probe_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_pg_probe_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_pg_probe_handler(ngx_http_request_t *r)
{
    u_char                        *p, *last;
    ngx_int_t                      rc;
    ngx_str_t                      key, val, sql, *param;
    int                           *lengths;
    ngx_uint_t                     i, state, info, have_sql, use_lengths;
    ngx_array_t                    params;
    const char                   **values;
    ngx_http_pg_probe_ctx_t       *ctx;
    ngx_http_pg_probe_server_t    *server;
    ngx_http_pg_probe_loc_conf_t  *plcf;
    u_char                         buf[128];

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_pg_probe_module);
    server = plcf->server;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&params, r->pool, 4, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    state = 0;
    info = 0;
    have_sql = 0;
    use_lengths = 0;
    ngx_str_null(&sql);

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        if (ngx_http_pg_probe_arg(r, &key, &val, &p, last) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (key.len == 3 && ngx_strncmp(key.data, "sql", 3) == 0) {
            sql = val;
            have_sql = 1;

        } else if (key.len == 1 && key.data[0] == 'p') {
            param = ngx_array_push(&params);
            if (param == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            *param = val;

            if (param->data == NULL) {
                param->data = (u_char *) "";
            }

        } else if (key.len == 4 && ngx_strncmp(key.data, "null", 4) == 0) {
            param = ngx_array_push(&params);
            if (param == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_str_null(param);

        } else if (key.len == 5 && ngx_strncmp(key.data, "state", 5) == 0) {
            state = 1;

        } else if (key.len == 4 && ngx_strncmp(key.data, "info", 4) == 0) {
            info = 1;

        } else if (key.len == 7 && ngx_strncmp(key.data, "lengths", 7) == 0) {
            use_lengths = 1;
        }
    }

    if (state) {
        if (ngx_chat_pg_is_up(server->pg)) {
            return ngx_http_pg_probe_output(r, NGX_HTTP_OK, 0,
                                            (u_char *) "up\n", 3);
        }

        return ngx_http_pg_probe_output(r, NGX_HTTP_OK, 0,
                                        (u_char *) "down\n", 5);
    }

    if (info) {
        p = ngx_sprintf(buf, "ups=%ui downs=%ui queries=%ui\n",
                        server->ups, server->downs, server->queries);

        return ngx_http_pg_probe_output(r, NGX_HTTP_OK, 0, buf, p - buf);
    }

    if (!have_sql || server->pg == NULL) {
        return NGX_HTTP_BAD_REQUEST;
    }

    /* NUL-terminated copies; the lengths are left to strlen() */

    p = ngx_pnalloc(r->pool, sql.len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, sql.data, sql.len);
    p[sql.len] = '\0';
    sql.data = p;

    values = ngx_palloc(r->pool, (params.nelts + 1) * sizeof(char *));
    lengths = ngx_palloc(r->pool, (params.nelts + 1) * sizeof(int));

    if (values == NULL || lengths == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    param = params.elts;

    for (i = 0; i < params.nelts; i++) {
        lengths[i] = 0;

        if (param[i].data == NULL) {
            values[i] = NULL;
            continue;
        }

        p = ngx_pnalloc(r->pool, param[i].len + 1);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* with lengths, garbage after the value: it must not be read */

        ngx_memcpy(p, param[i].data, param[i].len);
        p[param[i].len] = use_lengths ? 'X' : '\0';
        values[i] = (const char *) p;
        lengths[i] = (int) param[i].len;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pg_probe_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->seq = ++server->queries;

    rc = ngx_chat_pg_query(server->pg, (const char *) sql.data,
                           (int) params.nelts, values,
                           use_lengths ? lengths : NULL,
                           ngx_http_pg_probe_result, ctx);

    if (rc == NGX_OK) {
        r->main->count++;
        return NGX_DONE;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_pg_probe_output(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        ctx->seq, (u_char *) "down\n", 5);
    }

    return ngx_http_pg_probe_output(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    ctx->seq, (u_char *) "error\n", 6);
}


/* the next "key=value" of the arguments, the value unescaped */

static ngx_int_t
ngx_http_pg_probe_arg(ngx_http_request_t *r, ngx_str_t *key, ngx_str_t *val,
    u_char **pos, u_char *last)
{
    u_char  *p, *amp, *eq, *dst, *src;

    p = *pos;

    amp = ngx_strlchr(p, last, '&');
    if (amp == NULL) {
        amp = last;
    }

    eq = ngx_strlchr(p, amp, '=');

    key->data = p;
    key->len = (eq ? eq : amp) - p;

    ngx_str_null(val);

    if (eq) {
        dst = ngx_pnalloc(r->pool, amp - eq);
        if (dst == NULL) {
            return NGX_ERROR;
        }

        val->data = dst;
        src = eq + 1;

        /* '+' is a space in a query string */

        for (p = src; p < amp; p++) {
            if (*p == '+') {
                *p = ' ';
            }
        }

        ngx_unescape_uri(&dst, &src, amp - eq - 1, 0);
        val->len = dst - val->data;
    }

    *pos = amp + 1;

    return NGX_OK;
}


static void
ngx_http_pg_probe_result(ngx_chat_pg_t *pg, PGresult *res, void *data)
{
    ngx_http_pg_probe_ctx_t *ctx = data;

    char                *state, *msg;
    ngx_int_t            rc;
    ngx_str_t            out;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    if (res == NULL) {
        rc = ngx_http_pg_probe_output(r, NGX_HTTP_BAD_GATEWAY, ctx->seq,
                                      (u_char *) "failed\n", 7);
        goto done;
    }

    switch (PQresultStatus(res)) {

    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        if (ngx_http_pg_probe_render(r, res, &out) != NGX_OK) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            break;
        }

        rc = ngx_http_pg_probe_output(r, NGX_HTTP_OK, ctx->seq, out.data,
                                      out.len);
        break;

    default:
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

        if (state == NULL) {
            state = "?????";
        }

        if (msg == NULL) {
            msg = "";
        }

        out.data = ngx_pnalloc(r->pool, sizeof("error : \n")
                                        + ngx_strlen(state) + ngx_strlen(msg));
        if (out.data == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            break;
        }

        out.len = ngx_sprintf(out.data, "error %s: %s\n", state, msg)
                  - out.data;

        rc = ngx_http_pg_probe_output(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      ctx->seq, out.data, out.len);
        break;
    }

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_pg_probe_render(ngx_http_request_t *r, PGresult *res,
    ngx_str_t *out)
{
    int      row, col, nrows, ncols;
    u_char  *p;
    size_t   size;
    char    *cmd;

    nrows = PQntuples(res);
    ncols = PQnfields(res);

    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        cmd = PQcmdStatus(res);

        out->data = ngx_pnalloc(r->pool, sizeof("OK \n") + ngx_strlen(cmd));
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        out->len = ngx_sprintf(out->data, "OK %s\n", cmd) - out->data;
        return NGX_OK;
    }

    size = 0;

    for (row = 0; row < nrows; row++) {
        for (col = 0; col < ncols; col++) {
            size += 1 + (PQgetisnull(res, row, col)
                         ? 2 : (size_t) PQgetlength(res, row, col));
        }

        size++;
    }

    p = ngx_pnalloc(r->pool, size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    for (row = 0; row < nrows; row++) {
        for (col = 0; col < ncols; col++) {
            if (col) {
                *p++ = '|';
            }

            if (PQgetisnull(res, row, col)) {
                *p++ = '\\';
                *p++ = 'N';
                continue;
            }

            p = ngx_cpymem(p, PQgetvalue(res, row, col),
                           PQgetlength(res, row, col));
        }

        *p++ = '\n';
    }

    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_pg_probe_output(ngx_http_request_t *r, ngx_uint_t status,
    ngx_uint_t seq, u_char *data, size_t len)
{
    u_char           *p;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (seq) {
        h = ngx_list_push(&r->headers_out.headers);
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

        if (h == NULL || p == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Seq");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%ui", seq) - p;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (len) {
        b = ngx_create_temp_buf(r->pool, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_cpymem(b->last, data, len);

    } else {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }
    }

    b->last_buf = (r == r->main);
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static void
ngx_http_pg_probe_state(ngx_chat_pg_t *pg, ngx_uint_t up, void *data)
{
    ngx_http_pg_probe_server_t *server = data;

    if (up) {
        server->ups++;

    } else {
        server->downs++;
    }
}


static char *
ngx_http_pg_probe(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pg_probe_loc_conf_t *plcf = conf;

    char                           *rv;
    ngx_str_t                      *value, s;
    ngx_int_t                       ms;
    ngx_uint_t                      i;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_pg_probe_server_t     *server, **sp;
    ngx_http_pg_probe_main_conf_t  *pmcf;

    if (plcf->server) {
        return "is duplicate";
    }

    value = cf->args->elts;

    server = ngx_pcalloc(cf->pool, sizeof(ngx_http_pg_probe_server_t));
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_chat_pg_parse(cf, &value[1], &server->conf);
    if (rv != NGX_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rv);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;

            ms = ngx_parse_time(&s, 0);
            if (ms == NGX_ERROR) {
                return "has an invalid timeout";
            }

            server->conf.connect_timeout = ms;
            continue;
        }

        if (ngx_strncmp(value[i].data, "query_timeout=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            ms = ngx_parse_time(&s, 0);
            if (ms == NGX_ERROR) {
                return "has an invalid timeout";
            }

            server->conf.query_timeout = ms;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pg_probe_module);

    sp = ngx_array_push(&pmcf->servers);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = server;
    plcf->server = server;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_pg_probe_handler;

    return NGX_CONF_OK;
}


static void *
ngx_http_pg_probe_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_pg_probe_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pg_probe_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->servers, cf->pool, 4,
                       sizeof(ngx_http_pg_probe_server_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return pmcf;
}


static void *
ngx_http_pg_probe_create_loc_conf(ngx_conf_t *cf)
{
    /* set by ngx_pcalloc(): plcf->server = NULL */

    return ngx_pcalloc(cf->pool, sizeof(ngx_http_pg_probe_loc_conf_t));
}


static char *
ngx_http_pg_probe_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_pg_probe_loc_conf_t *prev = parent;
    ngx_http_pg_probe_loc_conf_t *conf = child;

    if (conf->server == NULL) {
        conf->server = prev->server;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_pg_probe_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_pg_probe_server_t     **servers, *server;
    ngx_http_pg_probe_main_conf_t   *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pg_probe_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        server = servers[i];

        server->pg = ngx_chat_pg_create(&server->conf, cycle->log,
                                        ngx_http_pg_probe_state, server);
        if (server->pg == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_pg_probe_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_pg_probe_server_t     **servers, *server;
    ngx_http_pg_probe_main_conf_t   *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pg_probe_module);
    if (pmcf == NULL) {
        return;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        server = servers[i];

        ngx_chat_pg_destroy(server->pg);
        server->pg = NULL;
    }
}
