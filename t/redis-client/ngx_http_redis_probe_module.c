
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Test-only module: drives src/ngx_chat_redis.c from HTTP requests, one
 * connection object per directive per worker (run it with one worker).
 *
 *   location /cmd { redis_probe URL [connect_timeout=T] [command_timeout=T]; }
 *   location /sub { redis_probe_subscriber URL CHANNEL [pattern] [...]; }
 *
 * Requests, on either kind of location:
 *
 *   ?cmd=SET&a=key&a=value    the command; %XX escapes make any byte
 *   ...&body=1                the request body is one more argument
 *   ?state=1                  "up" or "down"
 *   ?info=1                   "ups=N downs=N subscribed=N messages=N"
 *   (subscriber, no args)     the messages received: "channel\nlen\npayload\n"
 *   ?clear=1                  forget the messages
 *
 * A reply is rendered as: a string as is, "+status", "-error", ":integer",
 * "(nil)", "*N" and each element on a line of its own.  A command on a
 * connection that is down gets 503 "down", one whose connection failed
 * before the reply 502 "failed".  A subscriber location subscribes to
 * CHANNEL (PSUBSCRIBE with "pattern") whenever its connection comes up.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat_redis.h"


typedef struct {
    ngx_chat_redis_conf_t       conf;
    ngx_str_t                   channel;
    ngx_uint_t                  pattern;

    /* per worker */
    ngx_chat_redis_t           *rc;
    ngx_uint_t                  ups;
    ngx_uint_t                  downs;
    ngx_uint_t                  subscribed;
    ngx_uint_t                  nmessages;
    u_char                     *messages;
    size_t                      len;
    size_t                      size;
} ngx_http_redis_probe_server_t;


typedef struct {
    ngx_array_t                 servers;
} ngx_http_redis_probe_main_conf_t;


typedef struct {
    ngx_http_redis_probe_server_t  *server;
} ngx_http_redis_probe_loc_conf_t;


typedef struct {
    ngx_http_redis_probe_server_t  *server;
    ngx_array_t                     args;
} ngx_http_redis_probe_ctx_t;


static ngx_int_t ngx_http_redis_probe_handler(ngx_http_request_t *r);
static void ngx_http_redis_probe_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_redis_probe_send(ngx_http_request_t *r,
    ngx_http_redis_probe_ctx_t *ctx);
static void ngx_http_redis_probe_reply(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);
static size_t ngx_http_redis_probe_size(redisReply *reply);
static u_char *ngx_http_redis_probe_render(u_char *p, redisReply *reply);
static ngx_int_t ngx_http_redis_probe_output(ngx_http_request_t *r,
    ngx_uint_t status, u_char *data, size_t len);
static void ngx_http_redis_probe_state(ngx_chat_redis_t *rc, ngx_uint_t up,
    void *data);
static void ngx_http_redis_probe_subscribed(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);
static void ngx_http_redis_probe_message(ngx_chat_redis_t *rc,
    ngx_str_t *channel, ngx_str_t *payload, void *data);
static char *ngx_http_redis_probe(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_redis_probe_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_redis_probe_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_redis_probe_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_redis_probe_init_process(ngx_cycle_t *cycle);
static void ngx_http_redis_probe_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_redis_probe_commands[] = {

    { ngx_string("redis_probe"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_redis_probe,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("redis_probe_subscriber"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_redis_probe,
      NGX_HTTP_LOC_CONF_OFFSET,
      1,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_redis_probe_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_redis_probe_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_redis_probe_create_loc_conf,  /* create location configuration */
    ngx_http_redis_probe_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_redis_probe_module = {
    NGX_MODULE_V1,
    &ngx_http_redis_probe_module_ctx,      /* module context */
    ngx_http_redis_probe_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_redis_probe_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_redis_probe_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_redis_probe_handler(ngx_http_request_t *r)
{
    u_char                           *p, *last, *amp, *eq, *dst;
    ngx_int_t                         rc;
    ngx_str_t                        *arg, key, val;
    ngx_uint_t                        state, info, clear, body, cmd;
    ngx_http_redis_probe_ctx_t       *ctx;
    ngx_http_redis_probe_server_t    *server;
    ngx_http_redis_probe_loc_conf_t  *plcf;
    u_char                            buf[128];

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_redis_probe_module);
    server = plcf->server;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_redis_probe_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->server = server;

    if (ngx_array_init(&ctx->args, r->pool, 4, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_redis_probe_module);

    state = 0;
    info = 0;
    clear = 0;
    body = 0;
    cmd = 0;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        key.data = p;
        key.len = (eq ? eq : amp) - p;

        val.len = 0;
        val.data = NULL;

        if (eq) {
            dst = ngx_pnalloc(r->pool, amp - eq);
            if (dst == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            val.data = dst;
            p = eq + 1;
            ngx_unescape_uri(&dst, &p, amp - eq - 1, 0);
            val.len = dst - val.data;
        }

        if ((key.len == 3 && ngx_strncmp(key.data, "cmd", 3) == 0)
            || (key.len == 1 && key.data[0] == 'a'))
        {
            if (key.len == 3) {
                if (cmd) {
                    return NGX_HTTP_BAD_REQUEST;
                }

                cmd = 1;

                /* the command goes first */

                arg = ngx_array_push(&ctx->args);
                if (arg == NULL) {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }

                if (ctx->args.nelts > 1) {
                    ngx_memmove((ngx_str_t *) ctx->args.elts + 1,
                                ctx->args.elts,
                                (ctx->args.nelts - 1) * sizeof(ngx_str_t));
                    arg = ctx->args.elts;
                }

            } else {
                arg = ngx_array_push(&ctx->args);
                if (arg == NULL) {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }
            }

            *arg = val;

        } else if (key.len == 5 && ngx_strncmp(key.data, "state", 5) == 0) {
            state = 1;

        } else if (key.len == 4 && ngx_strncmp(key.data, "info", 4) == 0) {
            info = 1;

        } else if (key.len == 5 && ngx_strncmp(key.data, "clear", 5) == 0) {
            clear = 1;

        } else if (key.len == 4 && ngx_strncmp(key.data, "body", 4) == 0) {
            body = 1;
        }

        p = amp + 1;
    }

    if (cmd) {
        if (body) {
            rc = ngx_http_read_client_request_body(r,
                                        ngx_http_redis_probe_body_handler);

            if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
                return rc;
            }

            return NGX_DONE;
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_http_redis_probe_send(r, ctx);

        if (rc == NGX_DONE) {
            r->main->count++;
        }

        return rc;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (state) {
        if (server->rc && ngx_chat_redis_is_up(server->rc)) {
            return ngx_http_redis_probe_output(r, NGX_HTTP_OK,
                                               (u_char *) "up\n", 3);
        }

        return ngx_http_redis_probe_output(r, NGX_HTTP_OK,
                                           (u_char *) "down\n", 5);
    }

    if (info) {
        p = ngx_sprintf(buf, "ups=%ui downs=%ui subscribed=%ui messages=%ui\n",
                        server->ups, server->downs, server->subscribed,
                        server->nmessages);

        return ngx_http_redis_probe_output(r, NGX_HTTP_OK, buf, p - buf);
    }

    if (clear) {
        server->len = 0;
        server->nmessages = 0;

        return ngx_http_redis_probe_output(r, NGX_HTTP_OK,
                                           (u_char *) "cleared\n", 8);
    }

    if (server->channel.len) {
        return ngx_http_redis_probe_output(r, NGX_HTTP_OK, server->messages,
                                           server->len);
    }

    return NGX_HTTP_BAD_REQUEST;
}


static void
ngx_http_redis_probe_body_handler(ngx_http_request_t *r)
{
    u_char                      *p;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_str_t                   *arg;
    ngx_chain_t                 *cl;
    ngx_http_redis_probe_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_redis_probe_module);

    len = 0;

    if (r->request_body && r->request_body->bufs) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (cl->buf->in_file) {
                ngx_http_finalize_request(r,
                                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
                return;
            }

            len += cl->buf->last - cl->buf->pos;
        }
    }

    p = ngx_pnalloc(r->pool, len + 1);
    arg = ngx_array_push(&ctx->args);

    if (p == NULL || arg == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    arg->data = p;
    arg->len = len;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    rc = ngx_http_redis_probe_send(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }

    /* else the reply handler finalizes the request */
}


static ngx_int_t
ngx_http_redis_probe_send(ngx_http_request_t *r,
    ngx_http_redis_probe_ctx_t *ctx)
{
    size_t       *argvlen;
    ngx_int_t     rc;
    ngx_str_t    *args;
    ngx_uint_t    i, n;
    const char  **argv;

    if (ctx->server->rc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ctx->args.nelts;
    args = ctx->args.elts;

    argv = ngx_palloc(r->pool, n * sizeof(char *));
    argvlen = ngx_palloc(r->pool, n * sizeof(size_t));

    if (argv == NULL || argvlen == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        argv[i] = (const char *) (args[i].data ? args[i].data
                                               : (u_char *) "");
        argvlen[i] = args[i].len;
    }

    rc = ngx_chat_redis_command(ctx->server->rc, ngx_http_redis_probe_reply,
                                r, (int) n, argv, argvlen);

    if (rc == NGX_OK) {
        return NGX_DONE;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_redis_probe_output(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           (u_char *) "down\n", 5);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static void
ngx_http_redis_probe_reply(ngx_chat_redis_t *rc, redisReply *reply,
    void *data)
{
    ngx_http_request_t *r = data;

    u_char            *p, *last;
    ngx_int_t          rv;
    ngx_connection_t  *c;

    c = r->connection;

    if (reply == NULL) {
        rv = ngx_http_redis_probe_output(r, NGX_HTTP_BAD_GATEWAY,
                                         (u_char *) "failed\n", 7);

    } else {
        p = ngx_pnalloc(r->pool, ngx_http_redis_probe_size(reply));

        if (p == NULL) {
            rv = NGX_HTTP_INTERNAL_SERVER_ERROR;

        } else {
            last = ngx_http_redis_probe_render(p, reply);
            rv = ngx_http_redis_probe_output(r, NGX_HTTP_OK, p, last - p);
        }
    }

    ngx_http_finalize_request(r, rv);
    ngx_http_run_posted_requests(c);
}


static size_t
ngx_http_redis_probe_size(redisReply *reply)
{
    size_t  size;
    size_t  i;

    switch (reply->type) {

    case REDIS_REPLY_STRING:
        return reply->len;

    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        return 1 + reply->len;

    case REDIS_REPLY_INTEGER:
        return 1 + NGX_INT64_LEN;

    case REDIS_REPLY_ARRAY:
        size = 1 + NGX_SIZE_T_LEN;

        for (i = 0; i < reply->elements; i++) {
            size += 1 + ngx_http_redis_probe_size(reply->element[i]);
        }

        return size;

    default: /* REDIS_REPLY_NIL */
        return sizeof("(nil)") - 1;
    }
}


static u_char *
ngx_http_redis_probe_render(u_char *p, redisReply *reply)
{
    size_t  i;

    switch (reply->type) {

    case REDIS_REPLY_STRING:
        return ngx_cpymem(p, reply->str, reply->len);

    case REDIS_REPLY_STATUS:
        *p++ = '+';
        return ngx_cpymem(p, reply->str, reply->len);

    case REDIS_REPLY_ERROR:
        *p++ = '-';
        return ngx_cpymem(p, reply->str, reply->len);

    case REDIS_REPLY_INTEGER:
        return ngx_sprintf(p, ":%L", reply->integer);

    case REDIS_REPLY_ARRAY:
        p = ngx_sprintf(p, "*%uz", reply->elements);

        for (i = 0; i < reply->elements; i++) {
            *p++ = '\n';
            p = ngx_http_redis_probe_render(p, reply->element[i]);
        }

        return p;

    default: /* REDIS_REPLY_NIL */
        return ngx_cpymem(p, "(nil)", sizeof("(nil)") - 1);
    }
}


static ngx_int_t
ngx_http_redis_probe_output(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/octet-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

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
ngx_http_redis_probe_state(ngx_chat_redis_t *rc, ngx_uint_t up, void *data)
{
    ngx_http_redis_probe_server_t *server = data;

    size_t       argvlen[2];
    const char  *argv[2];

    if (!up) {
        server->downs++;
        return;
    }

    server->ups++;

    if (server->channel.len == 0) {
        return;
    }

    /* a new connection has no subscriptions: subscribe again */

    argv[0] = server->pattern ? "PSUBSCRIBE" : "SUBSCRIBE";
    argvlen[0] = ngx_strlen(argv[0]);
    argv[1] = (const char *) server->channel.data;
    argvlen[1] = server->channel.len;

    if (ngx_chat_redis_command(rc, ngx_http_redis_probe_subscribed, server,
                               2, argv, argvlen)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis probe: SUBSCRIBE not sent");
    }
}


static void
ngx_http_redis_probe_subscribed(ngx_chat_redis_t *rc, redisReply *reply,
    void *data)
{
    ngx_http_redis_probe_server_t *server = data;

    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        server->subscribed++;
    }
}


static void
ngx_http_redis_probe_message(ngx_chat_redis_t *rc, ngx_str_t *channel,
    ngx_str_t *payload, void *data)
{
    ngx_http_redis_probe_server_t *server = data;

    u_char  *p;
    size_t   need, size;

    need = channel->len + payload->len + NGX_SIZE_T_LEN + 3;

    if (server->size - server->len < need) {
        size = ngx_max(server->size * 2, server->len + need + 4096);

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return;
        }

        if (server->messages) {
            ngx_memcpy(p, server->messages, server->len);
            ngx_free(server->messages);
        }

        server->messages = p;
        server->size = size;
    }

    p = server->messages + server->len;
    p = ngx_sprintf(p, "%V\n%uz\n", channel, payload->len);
    p = ngx_cpymem(p, payload->data, payload->len);
    *p++ = '\n';

    server->len = p - server->messages;
    server->nmessages++;
}


static char *
ngx_http_redis_probe(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_redis_probe_loc_conf_t *plcf = conf;

    char                              *rv;
    ngx_str_t                         *value, s;
    ngx_int_t                          ms;
    ngx_uint_t                         i;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_redis_probe_server_t     *server, **sp;
    ngx_http_redis_probe_main_conf_t  *pmcf;

    if (plcf->server) {
        return "is duplicate";
    }

    value = cf->args->elts;

    server = ngx_pcalloc(cf->pool, sizeof(ngx_http_redis_probe_server_t));
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_chat_redis_parse_url(cf, &value[1], &server->conf);
    if (rv != NGX_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rv);
        return NGX_CONF_ERROR;
    }

    i = 2;

    if (cmd->offset) {
        server->channel = value[2];
        i = 3;
    }

    for ( /* void */ ; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0
            || ngx_strncmp(value[i].data, "command_timeout=", 16) == 0)
        {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;

            ms = ngx_parse_time(&s, 0);
            if (ms == NGX_ERROR) {
                return "has an invalid timeout";
            }

            if (value[i].data[1] == 'o' && value[i].data[2] == 'n') {
                server->conf.connect_timeout = ms;

            } else {
                server->conf.command_timeout = ms;
            }

            continue;
        }

        if (cmd->offset && ngx_strcmp(value[i].data, "pattern") == 0) {
            server->pattern = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_redis_probe_module);

    sp = ngx_array_push(&pmcf->servers);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = server;
    plcf->server = server;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_redis_probe_handler;

    return NGX_CONF_OK;
}


static void *
ngx_http_redis_probe_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_redis_probe_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_redis_probe_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->servers, cf->pool, 4,
                       sizeof(ngx_http_redis_probe_server_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return pmcf;
}


static void *
ngx_http_redis_probe_create_loc_conf(ngx_conf_t *cf)
{
    /* set by ngx_pcalloc(): plcf->server = NULL */

    return ngx_pcalloc(cf->pool, sizeof(ngx_http_redis_probe_loc_conf_t));
}


static char *
ngx_http_redis_probe_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_redis_probe_loc_conf_t *prev = parent;
    ngx_http_redis_probe_loc_conf_t *conf = child;

    if (conf->server == NULL) {
        conf->server = prev->server;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_redis_probe_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                          i;
    ngx_http_redis_probe_server_t     **servers, *server;
    ngx_http_redis_probe_main_conf_t   *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_redis_probe_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        server = servers[i];

        server->rc = ngx_chat_redis_create(&server->conf, cycle->log,
                                           ngx_http_redis_probe_state,
                                           ngx_http_redis_probe_message,
                                           server);
        if (server->rc == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_redis_probe_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                          i;
    ngx_http_redis_probe_server_t     **servers, *server;
    ngx_http_redis_probe_main_conf_t   *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_redis_probe_module);
    if (pmcf == NULL) {
        return;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        server = servers[i];

        ngx_chat_redis_destroy(server->rc);
        server->rc = NULL;

        if (server->messages) {
            ngx_free(server->messages);
            server->messages = NULL;
        }
    }
}
