
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


static u_char *ngx_chat_status_prometheus(u_char *p, ngx_str_t *zone,
    ngx_chat_shm_stats_t *st);
static u_char *ngx_chat_status_json(u_char *p, ngx_chat_shm_stats_t *st);
static u_char *ngx_chat_status_seconds(u_char *p, uint64_t us);


static char  *ngx_chat_status_hist_names[NGX_CHAT_SHM_HISTOGRAMS] = {
    "chat_delivery_lag_seconds", "chat_ack_latency_seconds"
};

static char  *ngx_chat_status_hist_help[NGX_CHAT_SHM_HISTOGRAMS] = {
    "a message entering the zone's bus to its write to the last local "
    "member, per worker",
    "a send accepted to its ack, written after the PostgreSQL COMMIT"
};

static char  *ngx_chat_status_hist_json[NGX_CHAT_SHM_HISTOGRAMS] = {
    "delivery_lag", "ack_latency"
};


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

    len = 2176 + 17 * ctx->name.len
          + 8192 + (NGX_CHAT_SHM_ERRORS + NGX_CHAT_SHM_CLOSES
                    + NGX_CHAT_SHM_HISTOGRAMS * (NGX_CHAT_SHM_BUCKETS + 2))
                   * (ctx->name.len + 16);

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

        b->last = ngx_chat_status_prometheus(b->last, &ctx->name, &st);

        ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");

    } else {
        b->last = ngx_sprintf(b->last,
            "{\"connections\":%ui,\"rooms\":%ui,\"users\":%ui,"
            "\"messages_in\":%uL,\"messages_out\":%uL,"
            "\"rate_limited\":%uL,\"redis\":\"%s\",\"postgres\":\"%s\","
            "\"zone_full\":%uL,\"workers\":%ui,\"relay_dropped\":%uL,"
            "\"relay_invalid\":%uL,\"relay_duplicates\":%uL,"
            "\"bytes_in\":%uL,\"bytes_in_raw\":%uL,"
            "\"bytes_out\":%uL,\"bytes_out_raw\":%uL",
            st.connections, st.rooms, st.users, st.messages_in,
            st.messages_out, st.rate_limited, redis, postgres,
            st.zone_full,
            st.workers, st.relay_dropped, st.relay_invalid,
            st.relay_duplicates,
            st.bytes[0], st.bytes[1], st.bytes[2], st.bytes[3]);

        b->last = ngx_chat_status_json(b->last, &st);

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


static u_char *
ngx_chat_status_prometheus(u_char *p, ngx_str_t *zone,
    ngx_chat_shm_stats_t *st)
{
    uint64_t                   n;
    ngx_uint_t                 i, j;
    ngx_chat_shm_histogram_t  *h;

    p = ngx_cpymem(p, "# TYPE chat_errors_total counter\n",
                   sizeof("# TYPE chat_errors_total counter\n") - 1);

    for (i = 0; i < NGX_CHAT_SHM_ERRORS; i++) {
        p = ngx_sprintf(p, "chat_errors_total{zone=\"%V\",code=\"%s\"} %uL\n",
                        zone, ngx_chat_shm_error_codes[i], st->errors[i]);
    }

    p = ngx_cpymem(p, "# TYPE chat_closes_total counter\n",
                   sizeof("# TYPE chat_closes_total counter\n") - 1);

    for (i = 0; i < NGX_CHAT_SHM_CLOSES; i++) {
        if (i < NGX_CHAT_SHM_CLOSES - 1) {
            p = ngx_sprintf(p, "chat_closes_total{zone=\"%V\",code=\"%ui\"} ",
                            zone, ngx_chat_shm_close_codes[i]);

        } else {
            p = ngx_sprintf(p, "chat_closes_total{zone=\"%V\",code=\"other\"} ",
                            zone);
        }

        p = ngx_sprintf(p, "%uL\n", st->closes[i]);
    }

    for (i = 0; i < NGX_CHAT_SHM_HISTOGRAMS; i++) {
        h = &st->hist[i];

        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s histogram\n",
                        ngx_chat_status_hist_names[i],
                        ngx_chat_status_hist_help[i],
                        ngx_chat_status_hist_names[i]);

        n = 0;

        for (j = 0; j < NGX_CHAT_SHM_BUCKETS; j++) {
            n += h->bucket[j];

            p = ngx_sprintf(p, "%s_bucket{zone=\"%V\",le=\"",
                            ngx_chat_status_hist_names[i], zone);

            if (j < NGX_CHAT_SHM_BUCKETS - 1) {
                p = ngx_chat_status_seconds(p, ngx_chat_shm_bucket_us[j]);

            } else {
                p = ngx_cpymem(p, "+Inf", 4);
            }

            p = ngx_sprintf(p, "\"} %uL\n", n);
        }

        p = ngx_sprintf(p, "%s_sum{zone=\"%V\"} ",
                        ngx_chat_status_hist_names[i], zone);
        p = ngx_chat_status_seconds(p, h->sum);

        p = ngx_sprintf(p, "\n%s_count{zone=\"%V\"} %uL\n",
                        ngx_chat_status_hist_names[i], zone, n);
    }

    return p;
}


static u_char *
ngx_chat_status_json(u_char *p, ngx_chat_shm_stats_t *st)
{
    uint64_t                   n;
    ngx_uint_t                 i, j;
    ngx_chat_shm_histogram_t  *h;

    p = ngx_cpymem(p, ",\"errors\":{", sizeof(",\"errors\":{") - 1);

    for (i = 0; i < NGX_CHAT_SHM_ERRORS; i++) {
        p = ngx_sprintf(p, "%s\"%s\":%uL", i ? "," : "",
                        ngx_chat_shm_error_codes[i], st->errors[i]);
    }

    p = ngx_cpymem(p, "},\"closes\":{", sizeof("},\"closes\":{") - 1);

    for (i = 0; i < NGX_CHAT_SHM_CLOSES - 1; i++) {
        p = ngx_sprintf(p, "\"%ui\":%uL,", ngx_chat_shm_close_codes[i],
                        st->closes[i]);
    }

    p = ngx_sprintf(p, "\"other\":%uL}", st->closes[i]);

    /* {"le_ms":[...],"buckets":[cumulative...],"count":N,"sum_ms":S} */

    for (i = 0; i < NGX_CHAT_SHM_HISTOGRAMS; i++) {
        h = &st->hist[i];

        p = ngx_sprintf(p, ",\"%s\":{\"le_ms\":[",
                        ngx_chat_status_hist_json[i]);

        for (j = 0; j < NGX_CHAT_SHM_BUCKETS - 1; j++) {
            p = ngx_sprintf(p, "%s%uL.%uL", j ? "," : "",
                            ngx_chat_shm_bucket_us[j] / 1000,
                            ngx_chat_shm_bucket_us[j] % 1000 / 100);
        }

        p = ngx_cpymem(p, "],\"buckets\":[", sizeof("],\"buckets\":[") - 1);

        n = 0;

        for (j = 0; j < NGX_CHAT_SHM_BUCKETS; j++) {
            n += h->bucket[j];
            p = ngx_sprintf(p, "%s%uL", j ? "," : "", n);
        }

        p = ngx_sprintf(p, "],\"count\":%uL,\"sum_ms\":%uL.%03uL}", n,
                        h->sum / 1000, h->sum % 1000);
    }

    *p++ = '}';
    *p++ = LF;

    return p;
}


/* microseconds as seconds, without trailing zeros: 500 -> 0.0005 */

static u_char *
ngx_chat_status_seconds(u_char *p, uint64_t us)
{
    uint64_t  frac;

    p = ngx_sprintf(p, "%uL", us / 1000000);

    frac = us % 1000000;

    if (frac == 0) {
        return p;
    }

    p = ngx_sprintf(p, ".%06uL", frac);

    while (p[-1] == '0') {
        p--;
    }

    return p;
}
