
/*
 * Copyright (C) ngx_chat_module authors
 *
 * chat_status: the zone's counters, read through ngx_chat_shm_stats().
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_status.h"


ngx_int_t
ngx_chat_status_handler(ngx_http_request_t *r)
{
    size_t                len;
    ngx_int_t             rc;
    ngx_str_t             format;
    ngx_buf_t            *b;
    char                 *redis, *postgres;
    ngx_uint_t            prometheus;
    ngx_chain_t           out;
    ngx_chat_shm_ctx_t   *ctx;
    ngx_chat_shm_stats_t  st;
    ngx_chat_loc_conf_t  *lcf;
    ngx_chat_main_conf_t *cmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);
    ctx = lcf->status_zone->data;

    prometheus = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK) {
        if (format.len == 10
            && ngx_strncmp(format.data, "prometheus", 10) == 0)
        {
            prometheus = 1;

        } else if (!(format.len == 4
                     && ngx_strncmp(format.data, "json", 4) == 0))
        {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    ngx_chat_shm_stats(ctx, &st);

    cmcf = ngx_http_get_module_main_conf(r, ngx_chat_module);

    redis = cmcf->redis == NULL ? "off" : (st.redis_up ? "up" : "down");
    postgres = cmcf->store == NULL ? "off" : (st.pg_down ? "down" : "up");

    len = 2176 + 17 * ctx->name.len;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (prometheus) {
        b->last = ngx_sprintf(b->last,
            "# TYPE chat_connections gauge\n"
            "chat_connections{zone=\"%V\"} %ui\n"
            "# TYPE chat_rooms gauge\n"
            "chat_rooms{zone=\"%V\"} %ui\n"
            "# TYPE chat_users gauge\n"
            "chat_users{zone=\"%V\"} %ui\n"
            "# TYPE chat_messages_in_total counter\n"
            "chat_messages_in_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_messages_out_total counter\n"
            "chat_messages_out_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_rate_limited_total counter\n"
            "chat_rate_limited_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_zone_full_total counter\n"
            "chat_zone_full_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_relay_invalid_total counter\n"
            "chat_relay_invalid_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_relay_duplicates_total counter\n"
            "chat_relay_duplicates_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_workers gauge\n"
            "chat_workers{zone=\"%V\"} %ui\n"
            "# TYPE chat_redis_up gauge\n"
            "chat_redis_up{zone=\"%V\"} %ui\n"
            "# TYPE chat_postgres_up gauge\n"
            "chat_postgres_up{zone=\"%V\"} %ui\n"
            "# TYPE chat_bytes_in_total counter\n"
            "chat_bytes_in_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_bytes_in_raw_total counter\n"
            "chat_bytes_in_raw_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_bytes_out_total counter\n"
            "chat_bytes_out_total{zone=\"%V\"} %uL\n"
            "# TYPE chat_bytes_out_raw_total counter\n"
            "chat_bytes_out_raw_total{zone=\"%V\"} %uL\n",
            &ctx->name, st.connections, &ctx->name, st.rooms,
            &ctx->name, st.users, &ctx->name, st.messages_in,
            &ctx->name, st.messages_out, &ctx->name, st.rate_limited,
            &ctx->name, st.zone_full, &ctx->name, st.relay_invalid,
            &ctx->name, st.relay_duplicates, &ctx->name, st.workers,
            &ctx->name, st.redis_up, &ctx->name,
            (ngx_uint_t) (cmcf->store && !st.pg_down),
            &ctx->name, st.bytes[0], &ctx->name, st.bytes[1],
            &ctx->name, st.bytes[2], &ctx->name, st.bytes[3]);

        ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");

    } else {
        b->last = ngx_sprintf(b->last,
            "{\"connections\":%ui,\"rooms\":%ui,\"users\":%ui,"
            "\"messages_in\":%uL,\"messages_out\":%uL,"
            "\"rate_limited\":%uL,\"redis\":\"%s\",\"postgres\":\"%s\","
            "\"zone_full\":%uL,\"workers\":%ui,\"relay_dropped\":%uL,"
            "\"relay_invalid\":%uL,\"relay_duplicates\":%uL,"
            "\"bytes_in\":%uL,\"bytes_in_raw\":%uL,"
            "\"bytes_out\":%uL,\"bytes_out_raw\":%uL}\n",
            st.connections, st.rooms, st.users, st.messages_in,
            st.messages_out, st.rate_limited, redis, postgres,
            st.zone_full,
            st.workers, st.relay_dropped, st.relay_invalid,
            st.relay_duplicates,
            st.bytes[0], st.bytes[1], st.bytes[2], st.bytes[3]);

        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
