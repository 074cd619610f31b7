
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The WebSocket handshake (RFC 6455 4.2; SPEC 3) inside the worker: the
 * checks and their HTTP answers, the connection's ngx_chat_ws_t and the
 * 101 response queued on it (see ngx_chat_ws.h).  The rest of the
 * connection layer is in ngx_chat_ws.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include "ngx_chat.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_deflate.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_ws.h"


#define NGX_CHAT_WS_GUID              "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NGX_CHAT_WS_UPGRADE_REQUIRED  426


static ngx_int_t ngx_chat_ws_check(ngx_http_request_t *r,
    ngx_chat_loc_conf_t *lcf, ngx_str_t *key);
static ngx_table_elt_t *ngx_chat_ws_header(ngx_http_request_t *r,
    char *name, size_t len);
static ngx_uint_t ngx_chat_ws_has_token(ngx_table_elt_t *h, char *token,
    size_t len);
static ngx_int_t ngx_chat_ws_origin_allowed(ngx_http_request_t *r,
    ngx_chat_loc_conf_t *lcf);
static ngx_int_t ngx_chat_ws_upgrade_required(ngx_http_request_t *r);
static void ngx_chat_ws_extensions(ngx_http_request_t *r,
    ngx_chat_deflate_params_t *pmd);
static ngx_int_t ngx_chat_ws_accept(ngx_http_request_t *r,
    ngx_chat_ws_t *ws, ngx_str_t *key, ngx_chat_deflate_params_t *pmd);
static void ngx_chat_ws_cleanup(void *data);


ngx_chat_ws_t *
ngx_chat_ws_upgrade(ngx_http_request_t *r, size_t data_size, ngx_int_t *rcp)
{
    size_t                size;
    uint32_t              utf8;
    ngx_int_t             rc;
    char                 *why;
    ngx_str_t             key, user, token;
    ngx_pool_t           *np;
    ngx_chat_ws_t        *ws;
    ngx_chat_jwt_t       *jwt;
    ngx_connection_t     *c;
    ngx_log_handler_pt    handler;
    ngx_pool_cleanup_t   *cln;
    ngx_chat_loc_conf_t  *lcf;

    ngx_chat_deflate_params_t  pmd;

    ngx_str_null(&key);
    jwt = NULL;
    ws = NULL;

    lcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);
    c = r->connection;

    rc = ngx_chat_ws_check(r, lcf, &key);

    if (rc == NGX_CHAT_WS_UPGRADE_REQUIRED) {
        *rcp = ngx_chat_ws_upgrade_required(r);
        return NULL;
    }

    if (rc != NGX_OK) {
        *rcp = rc;
        return NULL;
    }

    *rcp = NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (ngx_chat_ws_origin_allowed(r, lcf) != NGX_OK) {
        *rcp = NGX_HTTP_FORBIDDEN;
        return NULL;
    }

    if (lcf->jwt) {

        /* SPEC 10: the token's sub is the user, whatever chat_user says */

        if (ngx_http_complex_value(r, lcf->jwt, &token) != NGX_OK) {
            return NULL;
        }

        /* chat_jwt $http_authorization: "Bearer TOKEN" */

        if (token.len > 7
            && ngx_strncasecmp(token.data, (u_char *) "Bearer ", 7) == 0)
        {
            token.data += 7;
            token.len -= 7;
        }

        jwt = ngx_chat_jwt_verify(lcf->jwt_key, token.data, token.len, &why,
                                  c->log);

        if (jwt == NULL) {
            if (why == NULL) {
                return NULL;
            }

            /*
             * without the request line, which nginx's log handler adds and
             * which holds the token when it comes in the query string
             */

            handler = c->log->handler;
            c->log->handler = NULL;

            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "chat: token refused: %s, client: %V", why,
                          &c->addr_text);

            c->log->handler = handler;

            *rcp = NGX_HTTP_UNAUTHORIZED;
            return NULL;
        }

        user = jwt->sub;

    } else if (ngx_http_complex_value(r, lcf->user, &user) != NGX_OK) {
        return NULL;
    }

    if (user.len == 0) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "chat: empty user");
        *rcp = NGX_HTTP_UNAUTHORIZED;
        goto failed;
    }

    if (user.len > NGX_CHAT_MAX_USER) {
        /* every joined room keeps the id twice in the zone */
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "chat: user id of %uz bytes, at most %d",
                      user.len, NGX_CHAT_MAX_USER);
        *rcp = NGX_HTTP_BAD_REQUEST;
        goto failed;
    }

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&utf8, user.data, user.len)
        != NGX_CHAT_UTF8_ACCEPT
        || ngx_strlchr(user.data, user.data + user.len, '\0'))
    {
        /* user ids go into JSON as they are: UTF-8, and no U+0000 */
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "chat: user id is not valid UTF-8 or holds U+0000");
        *rcp = NGX_HTTP_BAD_REQUEST;
        goto failed;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        *rcp = rc;
        goto failed;
    }

    /*
     * The connection's state, the layer above's (data_size) and the user
     * id in a pool of their own, sized to also take what nginx keeps of
     * the connection: once the request is freed, the start handler moves
     * that here and this pool becomes the connection's (see
     * ngx_chat_ws_compact).  Until then the connection's pool destroys it.
     */

    data_size = ngx_align(data_size, NGX_ALIGNMENT);
    size = sizeof(ngx_chat_ws_t) + data_size + user.len;

    np = ngx_create_pool(sizeof(ngx_pool_t) + ngx_align(size, NGX_ALIGNMENT)
                         + ngx_chat_ws_compact_size(c), c->log);
    if (np == NULL) {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        ngx_destroy_pool(np);
        goto failed;
    }

    cln->handler = ngx_chat_ws_pool_cleanup;
    cln->data = np;

    ws = ngx_pcalloc(np, size);
    if (ws == NULL) {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(np, 0);
    if (cln == NULL) {
        ws = NULL;
        goto failed;
    }

    cln->handler = ngx_chat_ws_cleanup;
    cln->data = ws;

    ws->connection = c;
    ws->conf = lcf;
    ws->out = ws->out_inline;
    ws->out_cap = NGX_CHAT_WS_INLINE_OUT;
    ws->parser.max_message = lcf->max_message_size;
    ws->last_seen = ngx_current_msec;

    if (jwt) {
        ngx_chat_ws_set_jwt(ws, jwt);
    }

    ws->data = data_size ? (u_char *) ws + sizeof(ngx_chat_ws_t) : NULL;

    ws->user.data = (u_char *) ws + sizeof(ngx_chat_ws_t) + data_size;
    ngx_memcpy(ws->user.data, user.data, user.len);
    ws->user.len = user.len;

    ngx_http_set_ctx(r, ws, ngx_chat_module);

    ngx_memzero(&pmd, sizeof(ngx_chat_deflate_params_t));

    if (lcf->deflate) {
        ngx_chat_ws_extensions(r, &pmd);
    }

    if (ngx_chat_ws_accept(r, ws, &key, &pmd) != NGX_OK) {
        return NULL;
    }

    if (pmd.accepted) {
        /* from the first frame after the 101 on */
        ws->deflate = 1;
        ws->deflate_wbits = pmd.server_wbits;
        ws->parser.rsv1_ok = 1;
    }

    ws->request = r;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "chat ws: upgrade for \"%V\"", &ws->user);

    return ws;

failed:

    if (jwt && (ws == NULL || ws->jwt == NULL)) {
        ngx_chat_jwt_free(jwt);
    }

    return NULL;
}


/* the connection's state goes: its token, a partial control frame */

static void
ngx_chat_ws_cleanup(void *data)
{
    ngx_chat_ws_t  *ws = data;

    if (ws->jwt) {
        ngx_chat_jwt_free(ws->jwt);
        ws->jwt = NULL;
    }

    ngx_chat_frame_parser_free(&ws->parser);
}


void
ngx_chat_ws_pool_cleanup(void *data)
{
    ngx_destroy_pool(data);
}


static ngx_int_t
ngx_chat_ws_check(ngx_http_request_t *r, ngx_chat_loc_conf_t *lcf,
    ngx_str_t *key)
{
    u_char            buf[32];
    ngx_str_t         decoded;
    ngx_table_elt_t  *h, *connection;

    /* nginx 1.22 does not keep the Connection header: look it up */

    connection = ngx_chat_ws_header(r, "Connection",
                                    sizeof("Connection") - 1);

    if (r->headers_in.upgrade == NULL
        || !ngx_chat_ws_has_token(r->headers_in.upgrade, "websocket", 9)
        || connection == NULL
        || !ngx_chat_ws_has_token(connection, "upgrade", 7)
        || r->http_version != NGX_HTTP_VERSION_11)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat: not a WebSocket upgrade request");
        return NGX_CHAT_WS_UPGRADE_REQUIRED;
    }

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    h = ngx_chat_ws_header(r, "Sec-WebSocket-Version",
                           sizeof("Sec-WebSocket-Version") - 1);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat: missing or unsupported Sec-WebSocket-Version");
        return NGX_CHAT_WS_UPGRADE_REQUIRED;
    }

    h = ngx_chat_ws_header(r, "Sec-WebSocket-Key",
                           sizeof("Sec-WebSocket-Key") - 1);

    if (h == NULL || h->value.len != 24) {
        goto bad_key;
    }

    decoded.data = buf;

    if (ngx_decode_base64(&decoded, &h->value) != NGX_OK
        || decoded.len != 16)
    {
        goto bad_key;
    }

    *key = h->value;

    return NGX_OK;

bad_key:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "chat: missing or invalid Sec-WebSocket-Key");

    return NGX_HTTP_BAD_REQUEST;
}


static ngx_table_elt_t *
ngx_chat_ws_header(ngx_http_request_t *r, char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* a comma-separated header value contains the token (case-insensitive) */

static ngx_uint_t
ngx_chat_ws_has_token(ngx_table_elt_t *h, char *token, size_t len)
{
    u_char  *p, *last, *start, *end;

    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < last && *p != ',') {
            p++;
        }

        end = p;

        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }

        if ((size_t) (end - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_chat_ws_origin_allowed(ngx_http_request_t *r, ngx_chat_loc_conf_t *lcf)
{
    ngx_str_t         origin, *allowed;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (lcf->origins == NULL) {
        return NGX_OK;
    }

    h = ngx_chat_ws_header(r, "Origin", sizeof("Origin") - 1);

    if (h == NULL) {
        /* not a browser */
        return NGX_OK;
    }

    origin = h->value;

    if (origin.len && origin.data[origin.len - 1] == '/') {
        origin.len--;
    }

    allowed = lcf->origins->elts;

    for (i = 0; i < lcf->origins->nelts; i++) {
        if (allowed[i].len == origin.len
            && ngx_strncasecmp(allowed[i].data, origin.data, origin.len) == 0)
        {
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "chat: origin \"%V\" not allowed", &h->value);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_chat_ws_upgrade_required(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    static u_char  body[] = "426 Upgrade Required: "
                            "this is a WebSocket endpoint\n";

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = 426;
    ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");
    r->headers_out.content_length_n = sizeof(body) - 1;
    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Version");
    ngx_str_set(&h->value, "13");

    /*
     * HTTP/2 forbids connection-specific headers (RFC 9113, 8.2.2): a
     * client resets the stream that carries one, and never sees the 426
     */

    if (r->http_version < NGX_HTTP_VERSION_20) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Upgrade");
        ngx_str_set(&h->value, "websocket");
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + sizeof(body) - 1;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * permessage-deflate (RFC 7692): every offer of every
 * Sec-WebSocket-Extensions header, in order; the first we can honour wins
 */

static void
ngx_chat_ws_extensions(ngx_http_request_t *r, ngx_chat_deflate_params_t *pmd)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static char  name[] = "Sec-WebSocket-Extensions";

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof(name) - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) name,
                               sizeof(name) - 1) == 0)
        {
            ngx_chat_deflate_negotiate(pmd, h[i].value.data, h[i].value.len);
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat ws: permessage-deflate %s, window %ui",
                   pmd->accepted ? "accepted" : "not offered or declined",
                   (ngx_uint_t) pmd->server_wbits);
}


/* queue the 101 response: we write it ourselves, as frames follow it */

static ngx_int_t
ngx_chat_ws_accept(ngx_http_request_t *r, ngx_chat_ws_t *ws, ngx_str_t *key,
    ngx_chat_deflate_params_t *pmd)
{
    u_char          *p, hash[20];
    ngx_str_t        src, dst;
    ngx_sha1_t       sha1;
    ngx_chat_buf_t  *b;

    static u_char  ext[] = CRLF "Sec-WebSocket-Extensions: ";

    static u_char  head[] = "HTTP/1.1 101 Switching Protocols" CRLF
                            "Upgrade: websocket" CRLF
                            "Connection: Upgrade" CRLF
                            "Sec-WebSocket-Accept: ";

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->data, key->len);
    ngx_sha1_update(&sha1, NGX_CHAT_WS_GUID, sizeof(NGX_CHAT_WS_GUID) - 1);
    ngx_sha1_final(hash, &sha1);

    b = ngx_chat_buf_alloc(sizeof(head) - 1 + ngx_base64_encoded_length(20)
                           + sizeof(ext) - 1 + NGX_CHAT_DEFLATE_RESPONSE_MAX
                           + sizeof(CRLF CRLF) - 1, r->connection->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->data, head, sizeof(head) - 1);

    src.data = hash;
    src.len = 20;
    dst.data = p;

    ngx_encode_base64(&dst, &src);

    p += dst.len;

    if (pmd->accepted) {
        p = ngx_cpymem(p, ext, sizeof(ext) - 1);
        p += ngx_chat_deflate_response(pmd, p);
    }

    p = ngx_cpymem(p, CRLF CRLF, sizeof(CRLF CRLF) - 1);
    b->len = p - b->data;

    if (ngx_chat_ws_send_buf(ws, b) != NGX_OK) {
        ngx_chat_buf_release(b);
        return NGX_ERROR;
    }

    ngx_chat_buf_release(b);

    return NGX_OK;
}
