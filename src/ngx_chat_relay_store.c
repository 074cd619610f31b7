/*
 * Copyright (C) ngx_chat_module authors
 *
 * What Redis missed, from storage (chat_postgres): what a server gone
 * committed and never got published is read and delivered here (the
 * catch-up), and the messages of ours the relay dropped unsent (Redis
 * down for longer than chat_redis_queue holds) are read and published
 * again.  What is due is kept in the zone (ngx_chat_remote.c), so that
 * whichever worker relays next does it, also after a worker was killed
 * or a read failed.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_relay_int.h"


#define NGX_CHAT_RELAY_CATCHUP_RETRY  15000  /* a read gives up after 10 s */


typedef struct {
    ngx_chat_relay_t          *rl;
    ngx_str_t                  room;
    uint64_t                   tag;
    uint64_t                   high;
} ngx_chat_relay_catchup_t;


typedef ngx_uint_t (*ngx_chat_relay_due_pt)(ngx_chat_shm_ctx_t *ctx,
    ngx_array_t *due, ngx_msec_t retry);


static ngx_uint_t ngx_chat_relay_reads(ngx_chat_relay_t *rl,
    ngx_chat_relay_due_pt due_pt, ngx_chat_store_read_pt handler);
static ngx_int_t ngx_chat_relay_row_message(ngx_str_t *room,
    ngx_chat_store_row_t *r, ngx_str_t *msg);
static void ngx_chat_relay_catchup_done(ngx_chat_store_rows_t *rows,
    void *data);
static void ngx_chat_relay_unpublished_done(ngx_chat_store_rows_t *rows,
    void *data);


/*
 * The reads due (the zone's list, from due_pt: each of ngx_chat_remote_
 * gone_t, due again NGX_CHAT_RELAY_CATCHUP_RETRY later until done): the
 * room's rows after "<high>-<tag>" (NGX_CHAT_STORE_SINCE, at most
 * NGX_CHAT_MAX_HISTORY of the room's newest), to the handler.  Returns how
 * many due_pt gave up.
 */

static ngx_uint_t
ngx_chat_relay_reads(ngx_chat_relay_t *rl, ngx_chat_relay_due_pt due_pt,
    ngx_chat_store_read_pt handler)
{
    u_char                    *p;
    ngx_str_t                  id;
    ngx_uint_t                 i, n;
    ngx_pool_t                *pool;
    ngx_array_t                due;
    ngx_chat_remote_gone_t    *g;
    ngx_chat_relay_catchup_t  *cu;
    u_char                     buf[NGX_CHAT_ID_LEN];

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return 0;
    }

    if (ngx_array_init(&due, pool, 4, sizeof(ngx_chat_remote_gone_t))
        != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return 0;
    }

    n = due_pt(rl->ctx, &due, NGX_CHAT_RELAY_CATCHUP_RETRY);

    g = due.elts;

    for (i = 0; i < due.nelts; i++) {
        cu = ngx_alloc(sizeof(ngx_chat_relay_catchup_t) + g[i].room.len,
                       ngx_cycle->log);
        if (cu == NULL) {
            break;
        }

        cu->rl = rl;
        cu->tag = g[i].tag;
        cu->high = g[i].high;
        cu->room.data = (u_char *) (cu + 1);
        cu->room.len = g[i].room.len;
        ngx_memcpy(cu->room.data, g[i].room.data, g[i].room.len);

        p = ngx_sprintf(buf, "%uL-%012xL", g[i].high, g[i].tag);
        id.data = buf;
        id.len = p - buf;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat relay: \"%V\" after %V from storage",
                       &cu->room, &id);

        if (ngx_chat_store_history(NGX_CHAT_STORE_SINCE, &rl->ctx->name,
                                   &cu->room, &id, NGX_CHAT_MAX_HISTORY,
                                   handler, cu)
            != NGX_OK)
        {
            ngx_free(cu);
        }
    }

    ngx_destroy_pool(pool);

    return n;
}


/*
 * The catch-ups due (ngx_chat_remote.c), begun now, or again (the worker
 * that relayed before was killed meanwhile, or the read failed): what a
 * server gone committed and never got published (its relay queue died
 * with it, Redis being down), for each room where we had its messages, the
 * rows after the newest we had, those of its tag we never had delivered,
 * as a republish would be (ngx_chat_remote_message()), once each; and, in
 * a room where our subscriber was away or a reply left a row out as
 * pending, every other server's rows we never had.  Meanwhile a history
 * reply leaves them out (they are pending).
 */

void
ngx_chat_relay_catchups(ngx_chat_relay_t *rl)
{
    ngx_uint_t  n;

    if (!ngx_chat_store_enabled()) {
        return;
    }

    n = ngx_chat_relay_reads(rl, ngx_chat_remote_catchups,
                             ngx_chat_relay_catchup_done);

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: gave up reading from storage what other "
                      "servers published unheard here in %ui rooms of zone "
                      "\"%V\"",
                      n, &rl->ctx->name);
    }
}


/*
 * A stored row as the wire's message object, in memory of its own (the
 * caller frees msg->data): delivered here, or published again.
 */

static ngx_int_t
ngx_chat_relay_row_message(ngx_str_t *room, ngx_chat_store_row_t *r,
    ngx_str_t *msg)
{
    size_t   len;
    u_char  *p;

    len = ngx_chat_wire_message_len(room, &r->id, &r->user, &r->content,
                                    r->ts.len);

    p = ngx_alloc(len, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    msg->data = p;
    msg->len = ngx_chat_wire_message(p, room, &r->id, &r->user, &r->content,
                                     &r->ts)
               - p;

    return NGX_OK;
}


static void
ngx_chat_relay_catchup_done(ngx_chat_store_rows_t *rows, void *data)
{
    ngx_chat_relay_catchup_t *cu = data;

    uint64_t               num, tag;
    ngx_int_t              i;
    ngx_str_t              msg;
    ngx_uint_t             n;
    ngx_chat_relay_t      *rl;
    ngx_chat_store_row_t  *r;

    rl = cu->rl;
    n = 0;

    if (rows == NULL) {
        /* failed (a read waits for PostgreSQL 10 s at most): again later */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: what other servers published unheard here in "
                      "\"%V\" could not be read from storage yet",
                      &cu->room);
        goto done;
    }

    /* newest first: delivered oldest first */

    for (i = (ngx_int_t) rows->n - 1; i >= 0; i--) {
        r = &rows->rows[i];

        if (ngx_chat_remote_id_parse(&r->id, &num, &tag) != NGX_OK
            || (cu->tag ? tag != cu->tag : tag == rl->tag)
            || num <= cu->high)
        {
            continue;
        }

        if (ngx_chat_relay_row_message(&cu->room, r, &msg) != NGX_OK) {
            break;
        }

        if (ngx_chat_remote_message(rl->ctx, &cu->room, &r->id, msg.data,
                                    msg.len, 1)
            == NGX_OK)
        {
            n++;
        }

        ngx_free(msg.data);
    }

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: %ui messages of another server delivered from "
                      "storage in \"%V\"", n, &cu->room);

        ngx_chat_fanout_publish(rl->fo);
    }

    if (i < 0) {
        /* all of them: done (an allocation failure leaves it for later) */
        ngx_chat_remote_catchup_done(rl->ctx, &cu->room, cu->tag);
    }

done:

    ngx_free(cu);
}


/*
 * A message of ours dropped unsent from the queue (M; or R, a copy for a
 * server that asked): its room and number go to the zone, and whichever
 * worker relays when Redis is back publishes ours again from storage
 * (ngx_chat_relay_unpublished()).  Without storage it is gone for the
 * other servers, counted in relay_dropped.
 */

void
ngx_chat_relay_dropped(ngx_chat_relay_t *rl, ngx_str_t *channel,
    ngx_str_t *payload)
{
    u_char     *p, *last;
    uint64_t    num, tag;
    ngx_str_t   room, id;

    if (!ngx_chat_store_enabled()
        || channel->len <= rl->prefix.len
        || ngx_memcmp(channel->data, rl->prefix.data, rl->prefix.len) != 0
        || payload->len < sizeof(rl->sid) + 4)
    {
        return;
    }

    p = payload->data + sizeof(rl->sid) + 1;
    last = payload->data + payload->len;

    if ((*p != 'M' && *p != 'R') || p[1] != ' ') {
        return;
    }

    id.data = p + 2;
    p = ngx_strlchr(id.data, last, ' ');
    id.len = (p ? p : last) - id.data;

    if (ngx_chat_remote_id_parse(&id, &num, &tag) != NGX_OK
        || tag != rl->tag)
    {
        return;
    }

    room.data = channel->data + rl->prefix.len;
    room.len = channel->len - rl->prefix.len;

    ngx_chat_remote_unpublished(rl->ctx, &room, num,
                                NGX_CHAT_RELAY_CATCHUP_MAX);
}


/*
 * Ours that went unsent, read from storage and published again (R): the
 * rows of the room from the lowest dropped on (NGX_CHAT_STORE_SINCE, at
 * most NGX_CHAT_MAX_HISTORY of the room's newest), ours among them;
 * receivers take each at most once (ngx_chat_remote_message()).
 */

void
ngx_chat_relay_unpublished(ngx_chat_relay_t *rl)
{
    ngx_uint_t  n;

    if (!ngx_chat_store_enabled()) {
        return;
    }

    n = ngx_chat_relay_reads(rl, ngx_chat_remote_unpublished_due,
                             ngx_chat_relay_unpublished_done);

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: gave up publishing again from storage what "
                      "Redis missed of ours in %ui rooms of zone \"%V\"",
                      n, &rl->ctx->name);
    }
}


static void
ngx_chat_relay_unpublished_done(ngx_chat_store_rows_t *rows, void *data)
{
    ngx_chat_relay_catchup_t *cu = data;

    uint64_t               num, tag, covered;
    ngx_int_t              i;
    ngx_str_t              msg;
    ngx_uint_t             n, room;
    ngx_chat_relay_t      *rl;
    ngx_chat_store_row_t  *r;

    rl = cu->rl;

    if (rows == NULL || !rl->owner) {
        /* failed, or no longer ours to publish: again later */
        goto done;
    }

    n = 0;
    covered = 0;

    /* what the queue has room for: the rest is read again at once */

    room = (rl->queued < rl->queue_max) ? rl->queue_max - rl->queued : 0;

    /* newest first: published oldest first */

    for (i = (ngx_int_t) rows->n - 1; i >= 0 && n < room; i--) {
        r = &rows->rows[i];

        if (ngx_chat_remote_id_parse(&r->id, &num, &tag) != NGX_OK
            || tag != cu->tag || num <= cu->high)
        {
            continue;
        }

        if (ngx_chat_relay_row_message(&cu->room, r, &msg) != NGX_OK) {
            break;
        }

        if (ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, 0, &cu->room,
                                 'R', &r->id, &msg)
            != NGX_OK)
        {
            ngx_free(msg.data);
            break;
        }

        ngx_free(msg.data);

        covered = num;
        n++;
    }

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: %ui messages of ours that Redis missed "
                      "published again from storage in \"%V\"",
                      n, &cu->room);

        ngx_chat_relay_flush(rl);
    }

    ngx_chat_remote_unpublished_done(rl->ctx, &cu->room, cu->high + 1,
                                     covered);

done:

    ngx_free(cu);
}
