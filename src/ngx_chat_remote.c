
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The zone's side of the Redis relay (see ngx_chat_remote.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"
#include "ngx_chat_remote.h"


/*
 * a stored row of another server's not delivered here yet is left out of
 * history replies (it comes live) for at most this long after it was sent
 */
#define NGX_CHAT_REMOTE_PENDING_MAX  30000

/* a room followed again this soon after it was not keeps its follow number */
#define NGX_CHAT_REMOTE_REFOLLOW     10000

/*
 * a room's catch-up from storage (our subscriber was away, a row left out
 * as pending) waits this long: a copy, or the others' republish answering
 * our request, usually comes first
 */
#define NGX_CHAT_REMOTE_CATCHUP_WAIT 6000

/*
 * after our subscriber was away, it reads from this long back for a
 * server we had nothing of
 */
#define NGX_CHAT_REMOTE_CATCHUP_BACK 60000

/* a row left out of a history reply as pending is read for this long */
#define NGX_CHAT_REMOTE_PENDING_CATCHUP  300000


static ngx_int_t ngx_chat_remote_server_slot(ngx_chat_shm_ctx_t *ctx,
    uint64_t server, ngx_uint_t create);
static void ngx_chat_remote_room_catchup(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t from, ngx_msec_t give_up);
static ngx_int_t ngx_chat_remote_catchup_due(ngx_chat_shm_room_t *room,
    ngx_uint_t fresh, ngx_uint_t *expired);
static ngx_int_t ngx_chat_remote_catchup_push(ngx_array_t *due,
    ngx_chat_shm_room_t *room, uint64_t tag, uint64_t high);
static ngx_chat_shm_mark_t *ngx_chat_remote_mark(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t tag, ngx_uint_t create);
static uint64_t ngx_chat_remote_key(uint64_t num, uint64_t tag);
static ngx_uint_t ngx_chat_remote_ours(ngx_chat_shm_room_t *room,
    uint64_t num);
static ngx_uint_t ngx_chat_remote_seen_has(ngx_chat_shm_seen_t *seen,
    uint64_t key);
static ngx_chat_shm_seen_t *ngx_chat_remote_seen_room(
    ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room);
static void ngx_chat_remote_seen_add(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t num, uint64_t tag);
static void ngx_chat_remote_seen_add_old(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t num, uint64_t tag);
static void ngx_chat_remote_seen_put(ngx_chat_shm_seen_t *seen,
    uint64_t key);
static void ngx_chat_remote_had_cut(ngx_chat_shm_room_t *room, uint64_t num);
static ngx_uint_t ngx_chat_remote_had_between(ngx_chat_shm_room_t *room,
    uint64_t num);
static ngx_int_t ngx_chat_remote_deliver(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_str_t *name, ngx_str_t *id, uint64_t num,
    u_char *json, size_t len, ngx_uint_t flags);
static void ngx_chat_remote_seen_del(ngx_chat_shm_seen_t *seen,
    uint64_t key);



/* the relay: what other servers tell */

static ngx_int_t
ngx_chat_remote_server_slot(ngx_chat_shm_ctx_t *ctx, uint64_t server,
    ngx_uint_t create)
{
    ngx_uint_t       i, free;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    free = NGX_CHAT_MAX_SERVERS;

    for (i = 0; i < NGX_CHAT_MAX_SERVERS; i++) {
        if (sh->servers[i].active && sh->servers[i].id == server) {
            return i;
        }

        if (!sh->servers[i].active && free == NGX_CHAT_MAX_SERVERS) {
            free = i;
        }
    }

    if (!create || free == NGX_CHAT_MAX_SERVERS) {
        return NGX_ERROR;
    }

    sh->servers[free].active = 1;
    sh->servers[free].id = server;
    sh->servers[free].last_seen = ngx_current_msec;

    return free;
}


uint64_t
ngx_chat_remote_server_id(ngx_chat_shm_ctx_t *ctx)
{
    return ctx->sh->server_id;
}


ngx_int_t
ngx_chat_remote_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from,
    ngx_str_t *handover)
{
    ngx_int_t        rc;
    ngx_pid_t        owner;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    rc = NGX_DECLINED;

    ngx_str_null(handover);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    owner = sh->relay_owner;

    if (owner == 0
        || (owner != ngx_pid && kill(owner, 0) == -1
            && ngx_errno == NGX_ESRCH))
    {
        sh->relay_owner = ngx_pid;
        *from = ngx_max(sh->bus.relay_pos, sh->bus.tail);

        if (*from > sh->bus.head || *from == 0) {
            *from = sh->bus.head;
        }

        /* what an exiting owner had not got Redis to take yet */

        if (sh->relay_handover) {
            handover->data = ngx_alloc(sh->relay_handover_len,
                                       ngx_cycle->log);

            if (handover->data) {
                handover->len = sh->relay_handover_len;
                ngx_memcpy(handover->data, sh->relay_handover,
                           handover->len);

            } else {
                ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                              "chat: the relay queue handed over in zone "
                              "\"%V\" is lost (no memory)", &ctx->name);
            }

            ngx_slab_free_locked(ctx->shpool, sh->relay_handover);
            sh->relay_handover = NULL;
            sh->relay_handover_len = 0;
        }

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


void
ngx_chat_remote_release(ngx_chat_shm_ctx_t *ctx)
{
    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->relay_owner == ngx_pid) {
        ctx->sh->relay_owner = 0;
        ctx->sh->redis_up = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_chat_remote_relay_pos(ngx_chat_shm_ctx_t *ctx, uint64_t pos)
{
    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->relay_owner == ngx_pid) {
        ctx->sh->bus.relay_pos = pos ? pos : ctx->bus.read;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_chat_remote_handover(ngx_chat_shm_ctx_t *ctx, u_char *data, size_t len,
    uint64_t pos)
{
    u_char          *p;
    ngx_int_t        rc;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (sh->relay_owner != ngx_pid) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_DECLINED;
    }

    if (len) {
        /* after what an earlier owner handed over, if not taken yet */

        p = ngx_slab_alloc_locked(ctx->shpool, sh->relay_handover_len + len);

        if (p) {
            if (sh->relay_handover) {
                ngx_memcpy(p, sh->relay_handover, sh->relay_handover_len);
                ngx_slab_free_locked(ctx->shpool, sh->relay_handover);
            }

            ngx_memcpy(p + sh->relay_handover_len, data, len);
            sh->relay_handover = p;
            sh->relay_handover_len += len;

            /* what was read is in the queue handed over */
            sh->bus.relay_pos = ctx->bus.read;

        } else {
            /* the next owner reads the bus again from the oldest */
            sh->bus.relay_pos = pos ? pos : ctx->bus.read;
            rc = NGX_ERROR;
        }

    } else {
        sh->bus.relay_pos = ctx->bus.read;
    }

    sh->relay_owner = 0;
    sh->redis_up = 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


void
ngx_chat_remote_set_up(ngx_chat_shm_ctx_t *ctx, ngx_uint_t up)
{
    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->sh->redis_up = up;
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_chat_remote_count_dropped(ngx_chat_shm_ctx_t *ctx)
{
    (void) ngx_atomic_fetch_add(&ctx->sh->relay_dropped, 1);
}


void
ngx_chat_remote_count_invalid(ngx_chat_shm_ctx_t *ctx)
{
    (void) ngx_atomic_fetch_add(&ctx->sh->relay_invalid, 1);
}


void
ngx_chat_remote_seen(ngx_chat_shm_ctx_t *ctx, uint64_t server)
{
    ngx_int_t  i;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    i = ngx_chat_remote_server_slot(ctx, server, 1);

    if (i != NGX_ERROR) {
        ctx->sh->servers[i].last_seen = ngx_current_msec;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * A server not heard of any more (reaped by ngx_chat_remote_expire()):
 * each followed room with a mark of its tag gets a catch-up, kept in the
 * zone until the relay has read from storage what that server committed
 * and never got published (its queue died with it while Redis was down)
 * and delivered it: whichever worker relays then does it, also after the
 * one that began was killed or its read failed (ngx_chat_remote_catchups()).
 * Locked.
 */

static void
ngx_chat_remote_gone(ngx_chat_shm_ctx_t *ctx, uint64_t tag,
    ngx_msec_t catchup)
{
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    if (catchup == 0 || sh->rooms.root == sh->rooms.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
         node;
         node = ngx_rbtree_next(&sh->rooms, node))
    {
        room = (ngx_chat_shm_room_t *) node;

        if (!room->followed || room->nmarks == 0) {
            continue;
        }

        m = ngx_chat_remote_mark(ctx, room, tag, 0);

        if (m == NULL || m->high == 0) {
            continue;
        }

        m->catchup = 1;
        m->catchup_at = ngx_current_msec;
        m->catchup_end = ngx_current_msec + catchup;
        sh->catchups = 1;
    }
}


/*
 * A room's own catch-up (ngx_chat_remote_room_catchup()): NGX_OK when due
 * now, NGX_AGAIN later, NGX_DECLINED when dropped (nobody here, or given
 * up: counted in *expired)
 */

static ngx_int_t
ngx_chat_remote_catchup_due(ngx_chat_shm_room_t *room, ngx_uint_t fresh,
    ngx_uint_t *expired)
{
    if (!room->followed) {
        room->catchup = 0;
        return NGX_DECLINED;
    }

    if ((ngx_msec_int_t) (ngx_current_msec - room->catchup_end) >= 0) {
        room->catchup = 0;
        (*expired)++;
        return NGX_DECLINED;
    }

    if (!(fresh && room->catchup_read)
        && (ngx_msec_int_t) (ngx_current_msec - room->catchup_at) < 0)
    {
        return NGX_AGAIN;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_remote_catchup_push(ngx_array_t *due, ngx_chat_shm_room_t *room,
    uint64_t tag, uint64_t high)
{
    u_char                  *p;
    ngx_chat_remote_gone_t  *g;

    g = ngx_array_push(due);
    if (g == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(due->pool, room->name.len);
    if (p == NULL) {
        due->nelts--;
        return NGX_ERROR;
    }

    ngx_memcpy(p, room->name.data, room->name.len);
    g->room.data = p;
    g->room.len = room->name.len;
    g->tag = tag;
    g->high = high;

    return NGX_OK;
}


ngx_uint_t
ngx_chat_remote_catchups(ngx_chat_shm_ctx_t *ctx, ngx_array_t *due,
    ngx_msec_t retry)
{
    uint32_t              i;
    uint64_t              high;
    ngx_uint_t            any, expired, fresh;
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;
    expired = 0;

    if (!sh->catchups) {
        /* a word read unlocked: set under the lock, seen next time */
        return 0;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    any = 0;

    /* a worker taking the relay over: what the last one read is lost */
    fresh = (sh->catchup_pid != ngx_pid);
    sh->catchup_pid = ngx_pid;

    if (sh->rooms.root == sh->rooms.sentinel) {
        goto done;
    }

    for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
         node;
         node = ngx_rbtree_next(&sh->rooms, node))
    {
        room = (ngx_chat_shm_room_t *) node;

        if (room->catchup) {
            switch (ngx_chat_remote_catchup_due(room, fresh, &expired)) {

            case NGX_OK:
                if (ngx_chat_remote_catchup_push(due, room, 0,
                                                 room->catchup_num)
                    != NGX_OK)
                {
                    goto done;
                }

                room->catchup_at = ngx_current_msec + retry;
                room->catchup_read = 1;

                /* fall through */

            case NGX_AGAIN:
                any = 1;
                break;

            default: /* NGX_DECLINED: dropped */
                break;
            }
        }

        for (i = 0; i < room->nmarks; i++) {
            m = &room->marks[i];

            if (!m->catchup) {
                continue;
            }

            if (!room->followed) {
                /* nobody here to deliver to */
                m->catchup = 0;
                continue;
            }

            if ((ngx_msec_int_t) (ngx_current_msec - m->catchup_end) >= 0) {
                m->catchup = 0;
                expired++;
                continue;
            }

            any = 1;

            if (!fresh
                && (ngx_msec_int_t) (ngx_current_msec - m->catchup_at) < 0)
            {
                continue;
            }

            /*
             * what we have with nothing missing before: while our request
             * after a resubscription was not answered, the gap's low end
             * (live messages after the gap raised "high" above what the
             * outage lost; ngx_chat_remote_resubscribed())
             */

            high = ((m->unanswered || m->gap_hi == NGX_CHAT_SHM_GAP_OPEN)
                    && m->gap_lo)
                   ? m->gap_lo : m->high;

            if (ngx_chat_remote_catchup_push(due, room, m->tag, high)
                != NGX_OK)
            {
                goto done;
            }

            m->catchup_at = ngx_current_msec + retry;
        }
    }

done:

    sh->catchups = any;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return expired;
}


void
ngx_chat_remote_catchup_done(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    uint64_t tag)
{
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room && tag == 0) {
        room->catchup = 0;

    } else if (room) {
        m = ngx_chat_remote_mark(ctx, room, tag, 0);

        if (m) {
            m->catchup = 0;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_chat_remote_unpublished(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    uint64_t num, ngx_msec_t give_up)
{
    ngx_chat_shm_room_t  *room;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room) {
        if (room->unpublished == 0) {
            room->unpublished = num;
            room->unpublished_top = num;
            room->unpublished_at = ngx_current_msec;
            room->unpublished_end = ngx_current_msec + give_up;

        } else {
            room->unpublished = ngx_min(room->unpublished, num);
            room->unpublished_top = ngx_max(room->unpublished_top, num);
        }

        ctx->sh->unpublished = 1;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_uint_t
ngx_chat_remote_unpublished_due(ngx_chat_shm_ctx_t *ctx, ngx_array_t *due,
    ngx_msec_t retry)
{
    uint64_t              own;
    ngx_uint_t            any, expired;
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;
    expired = 0;

    if (!sh->unpublished) {
        /* a word read unlocked: set under the lock, seen next time */
        return 0;
    }

    own = ngx_chat_server_tag(sh->server_id);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    any = 0;

    if (sh->rooms.root == sh->rooms.sentinel) {
        goto done;
    }

    for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
         node;
         node = ngx_rbtree_next(&sh->rooms, node))
    {
        room = (ngx_chat_shm_room_t *) node;

        if (room->unpublished == 0) {
            continue;
        }

        if ((ngx_msec_int_t) (ngx_current_msec - room->unpublished_end)
            >= 0)
        {
            room->unpublished = 0;
            expired++;
            continue;
        }

        any = 1;

        if ((ngx_msec_int_t) (ngx_current_msec - room->unpublished_at) < 0) {
            continue;
        }

        if (ngx_chat_remote_catchup_push(due, room, own,
                                         room->unpublished - 1)
            != NGX_OK)
        {
            goto done;
        }

        room->unpublished_at = ngx_current_msec + retry;
    }

done:

    sh->unpublished = any;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return expired;
}


void
ngx_chat_remote_unpublished_done(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    uint64_t from, uint64_t covered)
{
    ngx_chat_shm_room_t  *room;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    /*
     * what the read covered is published again; one dropped since below
     * where it began, or above what storage had (not committed yet), waits
     * for the next read; what the queue had no room for is read again at
     * the next heartbeat
     */

    if (room && room->unpublished && room->unpublished >= from
        && covered >= room->unpublished)
    {
        if (covered >= room->unpublished_top) {
            room->unpublished = 0;

        } else {
            /* the rest at once: the queue had no room for more */
            room->unpublished = covered + 1;
            room->unpublished_at = ngx_current_msec;
            ctx->sh->unpublished = 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_uint_t
ngx_chat_remote_expire(ngx_chat_shm_ctx_t *ctx, ngx_msec_t timeout,
    ngx_uint_t touch_all, ngx_msec_t catchup)
{
    ngx_uint_t       i, n;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_CHAT_MAX_SERVERS; i++) {
        if (!sh->servers[i].active) {
            continue;
        }

        if (touch_all) {
            sh->servers[i].last_seen = ngx_current_msec;
            continue;
        }

        if ((ngx_msec_int_t) (ngx_current_msec - sh->servers[i].last_seen)
            > (ngx_msec_int_t) timeout)
        {
            ngx_chat_shm_reap_slot(ctx, NGX_CHAT_REMOTE_SLOT + i);
            sh->servers[i].active = 0;
            n++;

            ngx_chat_remote_gone(ctx, ngx_chat_server_tag(sh->servers[i].id),
                                 catchup);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/*
 * "<number>-<12 hex>", as ngx_chat_shm_post() makes them: the number and
 * the tag (the low 48 bits of the sender's server id)
 */

ngx_int_t
ngx_chat_remote_id_parse(ngx_str_t *id, uint64_t *num, uint64_t *tag)
{
    u_char    *p, *last;
    uint64_t   n, t;

    p = id->data;
    last = p + id->len;
    n = 0;

    if (p == last || id->len > NGX_CHAT_ID_LEN) {
        return NGX_ERROR;
    }

    while (p < last && *p >= '0' && *p <= '9') {
        if (n > ((uint64_t) -1 - 9) / 10) {
            return NGX_ERROR;
        }

        n = n * 10 + (*p++ - '0');
    }

    if (p == id->data || last - p != 13 || *p++ != '-') {
        return NGX_ERROR;
    }

    t = 0;

    for ( /* void */ ; p < last; p++) {
        if (*p >= '0' && *p <= '9') {
            t = t * 16 + (*p - '0');

        } else if (*p >= 'a' && *p <= 'f') {
            t = t * 16 + (*p - 'a' + 10);

        } else {
            return NGX_ERROR;
        }
    }

    *num = n;
    *tag = t;

    return NGX_OK;
}


uint64_t
ngx_chat_remote_id_ms(ngx_str_t *id)
{
    uint64_t  num, tag;

    if (ngx_chat_remote_id_parse(id, &num, &tag) != NGX_OK) {
        return 0;
    }

    return num / 1000;
}


/* a room's mark for a sender's tag; locked */

static ngx_chat_shm_mark_t *
ngx_chat_remote_mark(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    uint64_t tag, ngx_uint_t create)
{
    uint32_t              i, low, cap;
    ngx_chat_shm_mark_t  *m, *marks;

    marks = room->marks;

    for (i = 0; i < room->nmarks; i++) {
        if (marks[i].tag == tag) {
            return &marks[i];
        }
    }

    if (!create) {
        return NULL;
    }

    if (room->nmarks == room->marks_cap) {

        if (room->marks_cap >= NGX_CHAT_MAX_SERVERS) {
            /*
             * as many senders as servers can be: one of them (or someone
             * publishing with made-up ids) takes the place of the one
             * heard of least recently; that sender's republished copies
             * are then refused, its live ones still taken
             */

            low = 0;

            for (i = 1; i < room->nmarks; i++) {
                if (marks[i].high < marks[low].high) {
                    low = i;
                }
            }

            m = &marks[low];
            goto fill;
        }

        cap = room->marks_cap ? 2 * room->marks_cap : 2;

        marks = ngx_slab_alloc_locked(ctx->shpool,
                                      cap * sizeof(ngx_chat_shm_mark_t));
        if (marks == NULL) {
            return NULL;
        }

        if (room->marks) {
            ngx_memcpy(marks, room->marks,
                       room->nmarks * sizeof(ngx_chat_shm_mark_t));
            ngx_slab_free_locked(ctx->shpool, room->marks);
        }

        room->marks = marks;
        room->marks_cap = cap;
    }

    m = &marks[room->nmarks++];

fill:

    m->tag = tag;
    m->high = 0;
    m->gap_lo = 0;
    m->gap_hi = room->gap_any ? NGX_CHAT_SHM_GAP_OPEN : 0;
    m->unanswered = room->gap_any;
    m->floor = 0;
    m->catchup = 0;

    return m;
}


/* the seen window's key of an id: never 0 (a free slot) */

static uint64_t
ngx_chat_remote_key(uint64_t num, uint64_t tag)
{
    uint64_t  k;

    k = num * 0x9e3779b97f4a7c15ULL ^ (tag + 1) * 0xc2b2ae3d27d4eb4fULL;
    k ^= k >> 31;

    return k ? k : 1;
}


/*
 * Whether a sender's message is this server's to deliver live: sent since
 * the room was followed here (a room unfollowed for a moment, its members
 * gone with a killed worker, keeps its follow number: see
 * ngx_chat_remote_room_follow())
 */

static ngx_uint_t
ngx_chat_remote_ours(ngx_chat_shm_room_t *room, uint64_t num)
{
    return num > room->follow_num;
}


static ngx_uint_t
ngx_chat_remote_seen_has(ngx_chat_shm_seen_t *seen, uint64_t key)
{
    uint32_t  i, mask;

    if (seen == NULL) {
        return 0;
    }

    mask = 2 * seen->cap - 1;

    for (i = (uint32_t) key & mask; seen->keys[i]; i = (i + 1) & mask) {
        if (seen->keys[i] == key) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_chat_remote_seen_put(ngx_chat_shm_seen_t *seen, uint64_t key)
{
    uint32_t  i, mask;

    mask = 2 * seen->cap - 1;

    for (i = (uint32_t) key & mask; seen->keys[i]; i = (i + 1) & mask) {
        if (seen->keys[i] == key) {
            return;
        }
    }

    seen->keys[i] = key;
}


/* removes a key, moving back those its slot had pushed further */

static void
ngx_chat_remote_seen_del(ngx_chat_shm_seen_t *seen, uint64_t key)
{
    uint32_t  i, j, h, mask;

    mask = 2 * seen->cap - 1;

    for (i = (uint32_t) key & mask; seen->keys[i] != key; i = (i + 1) & mask)
    {
        if (seen->keys[i] == 0) {
            return;
        }
    }

    seen->keys[i] = 0;

    for (j = (i + 1) & mask; seen->keys[j]; j = (j + 1) & mask) {
        h = (uint32_t) seen->keys[j] & mask;

        /* may it move to the free slot i: is i on its way from h to j? */

        if (((j - h) & mask) >= ((j - i) & mask)) {
            seen->keys[i] = seen->keys[j];
            seen->keys[j] = 0;
            i = j;
        }
    }
}


/*
 * The room's window, grown (doubled) when full and allowed to be larger;
 * NULL without memory for one (the marks alone dedupe then, as before
 * there was one).  Locked.
 */

static ngx_chat_shm_seen_t *
ngx_chat_remote_seen_room(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    size_t                   size;
    uint32_t                 cap, max, i;
    ngx_chat_shm_seen_t     *seen, *old;
    ngx_chat_shm_seen_id_t  *e;

    seen = room->seen;

    if (seen && (seen->n < seen->cap || seen->cap == seen->max)) {
        return seen;
    }

    if (seen) {
        max = seen->max;
        cap = 2 * seen->cap;

    } else {
        for (max = 64; max < 4 * room->hist_max && max < 65536; max *= 2) {
            /* void */
        }

        cap = 16;
    }

    size = sizeof(ngx_chat_shm_seen_t)
           + cap * sizeof(ngx_chat_shm_seen_id_t)
           + 2 * cap * sizeof(uint64_t);

    old = seen;
    seen = ngx_slab_calloc_locked(ctx->shpool, size);

    if (seen == NULL) {
        /* it stays as large as it is */
        return old;
    }

    seen->cap = cap;
    seen->max = max;
    seen->fifo = (ngx_chat_shm_seen_id_t *) (seen + 1);
    seen->keys = (uint64_t *) (seen->fifo + cap);

    if (old) {
        for (i = 0; i < old->n; i++) {
            e = &old->fifo[(old->head + i) % old->cap];
            seen->fifo[i] = *e;
            ngx_chat_remote_seen_put(seen,
                                     ngx_chat_remote_key(e->num, e->tag));
        }

        seen->n = old->n;
        ngx_slab_free_locked(ctx->shpool, old);
    }

    room->seen = seen;

    return seen;
}


/*
 * A delivered id goes into the room's window, the newest; when full, the
 * oldest one leaves it and raises its sender's floor.  Locked.
 */

static void
ngx_chat_remote_seen_add(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    uint64_t num, uint64_t tag)
{
    ngx_chat_shm_mark_t     *m;
    ngx_chat_shm_seen_t     *seen;
    ngx_chat_shm_seen_id_t  *e;

    seen = ngx_chat_remote_seen_room(ctx, room);

    if (seen == NULL) {
        return;
    }

    if (seen->n == seen->cap) {
        /* the oldest leaves the window: its sender's floor rises */

        e = &seen->fifo[seen->head];

        ngx_chat_remote_seen_del(seen, ngx_chat_remote_key(e->num, e->tag));

        m = ngx_chat_remote_mark(ctx, room, e->tag, 0);
        if (m && m->floor < e->num) {
            m->floor = e->num;
        }

        ngx_chat_remote_had_cut(room, e->num);

        seen->head = (seen->head + 1) % seen->cap;
        seen->n--;
    }

    e = &seen->fifo[(seen->head + seen->n) % seen->cap];
    e->num = num;
    e->tag = tag;
    seen->n++;

    ngx_chat_remote_seen_put(seen, ngx_chat_remote_key(num, tag));
}


/*
 * An id that came in a history reply, not live: the window's oldest end,
 * so that the ids delivered live stay in it as long as before (each one
 * leaving raises its sender's floor: were the newest pushed out by older
 * ones, the floor would pass a message still to come, see
 * ngx_chat_remote_had()).  When the window is full it leaves at once: its
 * sender's floor, if it has a mark, rises to it.  Locked.
 */

static void
ngx_chat_remote_seen_add_old(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t num, uint64_t tag)
{
    ngx_chat_shm_mark_t     *m;
    ngx_chat_shm_seen_t     *seen;
    ngx_chat_shm_seen_id_t  *e;

    seen = ngx_chat_remote_seen_room(ctx, room);

    if (seen == NULL || seen->n == seen->cap) {
        /* no mark is made for it: marks are the senders heard live */

        m = ngx_chat_remote_mark(ctx, room, tag, 0);

        if (m && m->floor < num) {
            m->floor = num;
        }

        ngx_chat_remote_had_cut(room, num);

        return;
    }

    seen->head = (seen->head + seen->cap - 1) % seen->cap;
    seen->n++;

    e = &seen->fifo[seen->head];
    e->num = num;
    e->tag = tag;

    ngx_chat_remote_seen_put(seen, ngx_chat_remote_key(num, tag));
}


/*
 * An id that may be out of the window now (pushed out, or never in for
 * want of room): the history range of ids all in it ends above it.
 * Locked.
 */

static void
ngx_chat_remote_had_cut(ngx_chat_shm_room_t *room, uint64_t num)
{
    if (room->had_hi && num >= room->had_lo) {
        room->had_lo = ngx_min(num, room->had_hi);
    }
}


/*
 * Whether a number of other servers' history is between rows replies gave
 * (all in the window): one of them not in it came late.  Locked.
 */

static ngx_uint_t
ngx_chat_remote_had_between(ngx_chat_shm_room_t *room, uint64_t num)
{
    return room->seen && num > room->had_lo && num <= room->had_hi;
}


/*
 * A room has its first member here again (locked, from the join): what
 * other servers sent meanwhile never came; it is not asked for again
 * (the members are new) and the ring says where its hole is
 */

void
ngx_chat_remote_room_follow(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room)
{
    uint32_t     i;

    ngx_time_t  *tp;

    tp = ngx_timeofday();

    room->followed = 1;
    room->follow = room->total;

    if (room->follow_num && room->unfollow_at
        && ngx_current_msec - room->unfollow_at < NGX_CHAT_REMOTE_REFOLLOW)
    {
        /*
         * unfollowed a moment ago (the relay taken over while its members
         * reconnected): what was sent since the old follow is still ours
         * (the first subscription asks for it), the members' history
         * having been cut there
         */
        room->unfollow_at = 0;
        return;
    }

    room->gap_any = 0;
    room->unfollow_at = 0;
    room->had_lo = 0;
    room->had_hi = 0;

    /* ids are "<ms * 1000 + n>-<tag>": what was sent before now is history */
    room->follow_num = ((uint64_t) tp->sec * 1000 + tp->msec) * 1000;

    for (i = 0; i < room->nmarks; i++) {
        room->marks[i].gap_lo = 0;
        room->marks[i].gap_hi = 0;
        room->marks[i].unanswered = 0;
    }
}


void
ngx_chat_remote_room_free(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    if (room->marks) {
        ngx_slab_free_locked(ctx->shpool, room->marks);
        room->marks = NULL;
        room->nmarks = 0;
        room->marks_cap = 0;
    }

    if (room->seen) {
        ngx_slab_free_locked(ctx->shpool, room->seen);
        room->seen = NULL;
    }
}


/*
 * Whether an id of the ring is numbered at or below the room's follow (so
 * came after the history storage gives, late).  Locked.
 */

ngx_uint_t
ngx_chat_remote_room_history(ngx_chat_shm_room_t *room, ngx_str_t *id)
{
    uint64_t  num, tag;

    return room->followed
           && ngx_chat_remote_id_parse(id, &num, &tag) == NGX_OK
           && !ngx_chat_remote_ours(room, num);
}


/*
 * What other servers published in a room after "from" may be missing here
 * though it is in storage (locked): the room's rows after it are read
 * NGX_CHAT_REMOTE_CATCHUP_WAIT later (a copy or the others' republish
 * usually comes first) and those of other servers we never had delivered
 * (the seen window drops what we had); given up after "give_up".  One
 * read per room, from the lowest number asked for, kept in the zone until
 * done, whichever worker relays then.
 */

static void
ngx_chat_remote_room_catchup(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, uint64_t from, ngx_msec_t give_up)
{
    if (!room->catchup || from < room->catchup_num) {
        room->catchup_num = from;
    }

    if (!room->catchup) {
        room->catchup_at = ngx_current_msec + NGX_CHAT_REMOTE_CATCHUP_WAIT;
        room->catchup_end = ngx_current_msec + give_up;
        room->catchup_read = 0;
    }

    room->catchup = 1;
    ctx->sh->catchups = 1;
}


/*
 * Our subscriber is subscribed to a room again after a time it was not
 * (Redis down, or a new connection): every sender may have published
 * what never reached us; a republish of it is taken, once, in order.
 * Writes the sync request's argument, "+" and "<tag>:<number>" for each
 * sender, the newest of it we have with nothing missing before.  Without
 * "reopen", only writes it (our request again, the gaps as they are).
 */

u_char *
ngx_chat_remote_resubscribed(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t reopen, ngx_msec_t catchup, u_char *buf, u_char *last)
{
    u_char               *p;
    uint32_t              i;
    uint64_t              from, n;
    ngx_time_t           *tp;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    p = buf;

    if (last - p >= 1) {
        *p++ = '+';
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room && room->nconns && reopen && catchup) {
        /*
         * our subscriber was away: what any server published meanwhile
         * never came, also of one that restarted just before, not known
         * yet; from a little before what we had of each (or a minute
         * back, of a server we have nothing of)
         */

        tp = ngx_timeofday();
        from = ((uint64_t) tp->sec * 1000 + tp->msec
                - NGX_CHAT_REMOTE_CATCHUP_BACK) * 1000;

        for (i = 0; i < room->nmarks; i++) {
            m = &room->marks[i];
            n = (m->gap_lo || m->gap_hi) ? m->gap_lo : m->high;

            if (n && n < from) {
                from = n;
            }
        }

        ngx_chat_remote_room_catchup(ctx, room, from, catchup);
    }

    if (room && room->nconns) {
        room->gap_any |= reopen;

        for (i = 0; i < room->nmarks; i++) {
            m = &room->marks[i];

            if (reopen) {
                if (m->gap_hi != NGX_CHAT_SHM_GAP_OPEN) {
                    /*
                     * a gap closed by a live message: what was not
                     * republished in it by now is given up (one gap per
                     * sender: ids between were delivered live)
                     */
                    m->gap_lo = m->high;
                }

                m->gap_hi = NGX_CHAT_SHM_GAP_OPEN;
                m->unanswered = 1;
            }

            if (last - p < (ssize_t) (1 + 12 + 1 + NGX_INT64_LEN)) {
                continue;
            }

            /*
             * what we have with nothing missing before: the gap's low end
             * while no republish filled it (a live message may have closed
             * it from above already: what is below is still missing)
             */

            p = ngx_sprintf(p, " %012xL:%uL", m->tag,
                            (m->unanswered
                             || m->gap_hi == NGX_CHAT_SHM_GAP_OPEN)
                            ? m->gap_lo : m->high);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return p;
}


/* how many other servers the zone knows of, by tag */

ngx_uint_t
ngx_chat_remote_known(ngx_chat_shm_ctx_t *ctx)
{
    uint64_t         own, tag;
    ngx_uint_t       i, j, n;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    own = ngx_chat_server_tag(sh->server_id);
    n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /* tags: a server's relaying worker changes its id, not its tag */

    for (i = 0; i < NGX_CHAT_MAX_SERVERS; i++) {
        if (!sh->servers[i].active) {
            continue;
        }

        tag = ngx_chat_server_tag(sh->servers[i].id);

        if (tag == own) {
            continue;
        }

        for (j = 0; j < i; j++) {
            if (sh->servers[j].active
                && ngx_chat_server_tag(sh->servers[j].id) == tag)
            {
                break;
            }
        }

        if (j == i) {
            n++;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/*
 * Our subscriber is subscribed to a room for the first time since it was
 * followed: what other servers published since the follow and before the
 * subscription took may never have come.  Writes the sync request's
 * argument, "+" and "<tag>:<our follow number>" for each server we know
 * of (one not listed answers with all it has; what is at or below the
 * follow number, or seen, is not taken), or "-" when we know of none.
 */

u_char *
ngx_chat_remote_fresh(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, u_char *buf,
    u_char *last)
{
    u_char               *p;
    uint64_t              own;
    ngx_uint_t            i;
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;
    p = buf;

    if (last - p >= 1) {
        *p++ = '+';
    }

    own = ngx_chat_server_tag(sh->server_id);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room) {
        for (i = 0; i < NGX_CHAT_MAX_SERVERS; i++) {
            if (!sh->servers[i].active
                || ngx_chat_server_tag(sh->servers[i].id) == own
                || last - p < (ssize_t) (1 + 12 + 1 + NGX_INT64_LEN))
            {
                continue;
            }

            p = ngx_sprintf(p, " %012xL:%uL",
                            ngx_chat_server_tag(sh->servers[i].id),
                            room->follow_num);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (p - buf <= 1) {
        /*
         * nobody known (heartbeats come every 2 s): only who is there;
         * "all you have" would make every server republish its ring
         */
        buf[0] = '-';
        return buf + 1;
    }

    return p;
}


/*
 * The relay unsubscribes from a room a few seconds after its last member
 * left (so that members who come straight back, after a reload's
 * shutdown or a dropped connection, find a ring with no hole): NGX_OK when
 * the room still has nobody, and is not followed any more
 */

ngx_int_t
ngx_chat_remote_unfollow(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    ngx_int_t             rc;
    ngx_chat_shm_room_t  *room;

    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room && room->nconns) {
        rc = NGX_DECLINED;

    } else if (room) {
        if (room->followed) {
            room->unfollow_at = ngx_current_msec;
        }

        room->followed = 0;
        room->subscribed = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/* a new subscriber connection: rooms without members are not followed */

void
ngx_chat_remote_unfollow_empty(ngx_chat_shm_ctx_t *ctx)
{
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (sh->rooms.root != sh->rooms.sentinel) {
        for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
             node;
             node = ngx_rbtree_next(&sh->rooms, node))
        {
            room = (ngx_chat_shm_room_t *) node;

            if (room->nconns == 0) {
                if (room->followed) {
                    room->unfollow_at = ngx_current_msec;
                }

                room->followed = 0;
                room->subscribed = 0;
            }
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * Redis confirmed a subscription to the room (set), or whether it had
 * (NGX_OK): a room the relay has never been subscribed to is new to it,
 * so its first subscription opens no gap, even when the relay's own
 * connection comes up after the room's members joined
 */

ngx_int_t
ngx_chat_remote_subscribed(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t set)
{
    ngx_int_t             rc;
    ngx_chat_shm_room_t  *room;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room) {
        if (set) {
            room->subscribed = 1;
        }

        rc = room->subscribed ? NGX_OK : NGX_DECLINED;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * Whether a sender's messages may still be missing here: no republish has
 * come from it since our resubscription (a live message closing the gap
 * says nothing of what was before it); then our sync request, maybe made
 * before that sender was subscribed again itself, is worth making again
 */

ngx_uint_t
ngx_chat_remote_gap_open(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    uint64_t tag)
{
    ngx_uint_t            open;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    open = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room && room->nconns) {
        m = ngx_chat_remote_mark(ctx, room, tag, 0);

        open = m ? m->unanswered : room->gap_any;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return open;
}


ngx_int_t
ngx_chat_remote_message(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id, u_char *json, size_t len, ngx_uint_t republished)
{
    uint64_t              num, tag;
    ngx_int_t             rc;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    if (ngx_chat_remote_id_parse(id, &num, &tag) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL || (room->nconns == 0 && !room->followed)) {
        /* nobody here, and not followed any more */
        rc = NGX_DECLINED;
        goto done;
    }

    m = ngx_chat_remote_mark(ctx, room, tag, 1);

    if (m && republished) {
        /* it answered our sync request (or another server's) */
        m->unanswered = 0;
    }

    if (ngx_chat_shm_hist_find(room, id) >= 0) {
        goto duplicate;
    }

    if (m == NULL) {
        /* no memory for a mark: live ones are taken, republished not */

        if (republished) {
            goto duplicate;
        }

    } else if (num <= m->floor
               || (room->seen
                   && ngx_chat_remote_seen_has(room->seen,
                                               ngx_chat_remote_key(num, tag)))
               || (republished && !ngx_chat_remote_ours(room, num)
                   && !ngx_chat_remote_had_between(room, num))
               || (room->seen == NULL && !republished && num <= m->high))
    {
        /*
         * the window knows what was delivered, whichever way it came (a
         * copy older than the window: nothing); a republish (or a row
         * read from storage) brings only what is ours, sent since the
         * room was followed, or history that came late (between what
         * replies gave); without a window (no memory for one), live ones
         * come in order
         */
        goto duplicate;
    }

    rc = ngx_chat_remote_deliver(ctx, room, name, id, num, json, len,
                                 ngx_chat_remote_ours(room, num)
                                 ? 0 : NGX_CHAT_BUS_LATE);

    if (rc != NGX_OK) {
        goto done;
    }

    ngx_chat_remote_seen_add(ctx, room, num, tag);

    if (m && republished) {
        if (num > m->gap_lo && num < m->gap_hi) {
            m->gap_lo = num;
        }

        m->high = ngx_max(m->high, num);

    } else if (m) {
        if (m->gap_hi == NGX_CHAT_SHM_GAP_OPEN) {
            m->gap_hi = num;
        }

        m->high = ngx_max(m->high, num);
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;

duplicate:

    /* a copy delivered already, or older than what was delivered */

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    (void) ngx_atomic_fetch_add(&ctx->sh->relay_duplicates, 1);

    return NGX_DECLINED;
}


/* into the room's ring and the bus, as having come now; locked */

static ngx_int_t
ngx_chat_remote_deliver(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_str_t *name, ngx_str_t *id, uint64_t num, u_char *json, size_t len,
    ngx_uint_t flags)
{
    ngx_chat_shm_msg_t  *msg;

    msg = NULL;

    if (room->hist_max) {
        msg = ngx_chat_shm_alloc(ctx, offsetof(ngx_chat_shm_msg_t, data)
                                      + len);
        if (msg) {
            ngx_memcpy(msg->id, id->data, id->len);
            msg->id_len = id->len;
            msg->len = len;
            ngx_memcpy(msg->data, json, len);
        }
    }

    if (ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_MESSAGE,
                                NGX_CHAT_BUS_REMOTE | flags, name, NULL, id,
                                json, len)
        != NGX_OK)
    {
        if (msg) {
            ngx_slab_free_locked(ctx->shpool, msg);
        }

        return NGX_DECLINED;
    }

    if (msg) {
        ngx_chat_shm_hist_push(ctx, room, msg);
    }

    room->total++;

    if (num > room->prior) {
        room->prior = num;
    }

    return NGX_OK;
}


void
ngx_chat_remote_pending(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t **ids, ngx_uint_t n, u_char *pending)
{
    uint64_t              num, tag, own, recent;
    ngx_time_t           *tp;
    ngx_uint_t            i;
    ngx_chat_shm_mark_t  *m;
    ngx_chat_shm_room_t  *room;

    ngx_memzero(pending, n);

    own = ngx_chat_server_tag(ctx->sh->server_id);

    tp = ngx_timeofday();
    recent = ((uint64_t) tp->sec * 1000 + tp->msec
              - NGX_CHAT_REMOTE_PENDING_MAX) * 1000;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL || !room->followed) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (ngx_chat_remote_id_parse(ids[i], &num, &tag) != NGX_OK
            || tag == own)
        {
            continue;
        }

        if (!ngx_chat_remote_ours(room, num)
            && ngx_chat_remote_had_between(room, num)
            && !ngx_chat_remote_seen_has(room->seen,
                                         ngx_chat_remote_key(num, tag)))
        {
            /*
             * history, between rows replies gave, never had here: it was
             * committed after them (another worker of its server stored
             * it later).  The members who had those lack it: it comes now,
             * to them all, after what they have (NGX_CHAT_REMOTE_LATE)
             */

            m = ngx_chat_remote_mark(ctx, room, tag, 0);

            if (m == NULL || num > m->floor) {
                pending[i] = NGX_CHAT_REMOTE_LATE;
            }

            continue;
        }

        if (!ngx_chat_remote_ours(room, num)
            || num < recent)
        {
            /*
             * history: from before the follow, or older than a copy can
             * still come (from the sender, or, when it is gone, from
             * storage: ngx_chat_remote_gone())
             */
            continue;
        }

        m = ngx_chat_remote_mark(ctx, room, tag, 0);

        if (m == NULL) {
            /* nothing of it here yet: it comes */
            pending[i] = NGX_CHAT_REMOTE_PENDING;

        } else if (num <= m->floor) {
            continue;

        } else if (room->seen) {
            pending[i] = !ngx_chat_remote_seen_has(room->seen,
                                          ngx_chat_remote_key(num, tag));

        } else {
            pending[i] = (num > m->high);
        }

        if (pending[i]) {
            /*
             * the promise kept should no copy come (published between our
             * follow and our subscription, its sender's sync answer lost):
             * the row is read from storage a little later and delivered,
             * unless the copy came meanwhile (the seen window)
             */

            ngx_chat_remote_room_catchup(ctx, room, num - 1,
                                         NGX_CHAT_REMOTE_PENDING_CATCHUP);
        }
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_chat_remote_late(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_str_t *id,
    u_char *json, size_t len)
{
    uint64_t              num, tag;
    ngx_int_t             rc;
    ngx_chat_shm_room_t  *room;

    if (ngx_chat_remote_id_parse(id, &num, &tag) != NGX_OK) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    /*
     * another reply's worker may have delivered it meanwhile; the reply
     * left it out, whatever the range is now
     */

    if (room && room->followed && room->seen
        && !ngx_chat_remote_seen_has(room->seen,
                                     ngx_chat_remote_key(num, tag)))
    {
        rc = ngx_chat_remote_deliver(ctx, room, name, id, num, json, len,
                                     NGX_CHAT_BUS_LATE);

        if (rc == NGX_OK) {
            ngx_chat_remote_seen_add(ctx, room, num, tag);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_uint_t
ngx_chat_remote_blind(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *since)
{
    ngx_uint_t            blind;
    ngx_chat_shm_room_t  *room;

    if (!ctx->relayed) {
        /* one server: members here got its messages in their order */
        return 0;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    blind = ngx_chat_remote_room_blind(ctx, room, since);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return blind;
}


/* ngx_chat_remote_blind() of a room looked up (NULL: none), locked */

ngx_uint_t
ngx_chat_remote_room_blind(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_str_t *since)
{
    uint64_t  num, tag;

    if (!ctx->relayed
        || ngx_chat_remote_id_parse(since, &num, &tag) != NGX_OK)
    {
        return 0;
    }

    return room == NULL || !room->followed
           || !ngx_chat_remote_ours(room, num);
}


/*
 * Where a message of ours posted now comes among other servers' in this
 * room, as its members here see it: after every other server's message
 * numbered up to place->prior (delivered here, whatever the path, or
 * history when the room was followed) but those in its holes, before any
 * numbered after it or in a hole, which come later or never.  Each
 * server's messages reach us in their order, but for what a resubscription
 * skipped: a mark's gap (gap_lo, gap_hi) that no republish has answered,
 * or whose catch-up from storage is due, is a hole.  Stored with the
 * message, it lets storage's rows be given in the order this server's
 * members saw, after a restart too (ngx_chat_proto_lineage()).  A row
 * that came late below prior outside a gap is the one it places wrong.
 * prior 0 (none) when the zone does not relay or the room is not
 * followed: no member here saw an order.  Locked.
 */

void
ngx_chat_remote_room_place(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_chat_shm_place_t *place)
{
    u_char               *p;
    ngx_uint_t            i, n;
    ngx_chat_shm_mark_t  *m;

    place->prior = 0;
    place->holes_len = 0;

    if (!ctx->relayed || room == NULL || !room->followed) {
        return;
    }

    place->prior = ngx_max(room->prior, room->follow_num);

    p = place->holes;
    n = 0;

    for (i = 0; i < room->nmarks && n < NGX_CHAT_PLACE_HOLES; i++) {
        m = &room->marks[i];

        if (m->gap_hi <= m->gap_lo + 1
            || !(m->unanswered || m->catchup
                 || m->gap_hi == NGX_CHAT_SHM_GAP_OPEN))
        {
            continue;
        }

        if (n++) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "%012xL:%uL:%uL", m->tag, m->gap_lo,
                        m->gap_hi == NGX_CHAT_SHM_GAP_OPEN ? 0 : m->gap_hi);
    }

    place->holes_len = p - place->holes;
}


ngx_uint_t
ngx_chat_remote_in_holes(ngx_str_t *holes, uint64_t num, uint64_t tag)
{
    u_char     *p, *last, *c1, *c2, *end;
    off_t       lo, hi;
    ngx_int_t   t;

    p = holes->data;
    last = p + holes->len;

    /* "<12 hex>:<lo>:<hi>", comma separated, as written above */

    while (p < last) {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        c1 = ngx_strlchr(p, end, ':');
        c2 = c1 ? ngx_strlchr(c1 + 1, end, ':') : NULL;

        if (c2 == NULL) {
            return 0;
        }

        t = ngx_hextoi(p, c1 - p);
        lo = ngx_atoof(c1 + 1, c2 - c1 - 1);
        hi = ngx_atoof(c2 + 1, end - c2 - 1);

        if (t == NGX_ERROR || lo == NGX_ERROR || hi == NGX_ERROR) {
            return 0;
        }

        if ((uint64_t) t == tag && num > (uint64_t) lo
            && (hi == 0 || num < (uint64_t) hi))
        {
            return 1;
        }

        p = end + 1;
    }

    return 0;
}


void
ngx_chat_remote_had(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    uint64_t *keys, ngx_uint_t n)
{
    uint64_t              num, tag, key;
    ngx_uint_t            i, full, added;
    ngx_chat_shm_room_t  *room;

    full = 0;
    added = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL || !room->followed) {
        goto done;
    }

    /*
     * newest first, each at the window's oldest end: what does not fit
     * only raises its sender's floor, to below the follow.  What was sent
     * since the follow is not added: it is in the window already (had
     * here), below its sender's floor, or was left out of the reply as
     * pending (ngx_chat_remote_pending()), promised live to the member
     */

    for (i = n; i > 0; i--) {
        num = keys[2 * i - 2];
        tag = keys[2 * i - 1];

        if (ngx_chat_remote_ours(room, num)) {
            continue;
        }

        key = ngx_chat_remote_key(num, tag);

        if (!ngx_chat_remote_seen_has(room->seen, key)) {
            ngx_chat_remote_seen_add_old(ctx, room, num, tag);
            added = 1;
        }

        /*
         * the history range grows down to what the window holds, and up
         * to the follow: a reply, read after the follow, gave all of it
         * that was stored (a row another reply finds inside it, never
         * had here, came late: ngx_chat_remote_pending()); not past an id
         * it could not hold (older ones fail too: the window is full)
         */

        if (full || !ngx_chat_remote_seen_has(room->seen, key)) {
            full = 1;
            continue;
        }

        if (room->had_hi == 0) {
            room->had_lo = num;

        } else {
            room->had_lo = ngx_min(room->had_lo, num);
        }

        room->had_hi = room->follow_num;
    }

    if (added && room->had_hi) {
        /*
         * a row between them committed later still (no other reply
         * finding it) is read a little later from storage, and delivered
         * as a late one (ngx_chat_remote_message())
         */

        ngx_chat_remote_room_catchup(ctx, room, room->had_lo,
                                     NGX_CHAT_REMOTE_PENDING_CATCHUP);
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_chat_remote_presence(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *user, uint64_t server, ngx_uint_t join)
{
    ngx_int_t             i, k, rc;
    ngx_uint_t            slot;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL || room->nconns == 0) {
        goto done;
    }

    i = ngx_chat_remote_server_slot(ctx, server, 1);
    if (i == NGX_ERROR) {
        goto done;
    }

    ctx->sh->servers[i].last_seen = ngx_current_msec;
    slot = NGX_CHAT_REMOTE_SLOT + i;

    u = ngx_chat_shm_user_get(ctx, &room->users, user, join);
    if (u == NULL) {
        goto done;
    }

    k = ngx_chat_shm_user_slot(u, slot);

    if (join) {
        if (k >= 0) {
            /* known already: a user is present or not, per server */
            rc = NGX_OK;
            goto done;
        }

        if (ngx_chat_shm_user_add(ctx, u, slot, 1) != NGX_OK) {
            if (u->total == 0) {
                ngx_chat_shm_user_free(ctx, &room->users, u);
            }

            goto done;
        }

        if (u->total == 1) {
            room->nusers++;
            (void) ngx_chat_shm_presence(ctx, name, user, 1);
        }

    } else if (k >= 0) {
        ngx_chat_shm_remote_drop(ctx, room, u, slot, 1);
    }

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_array_t *
ngx_chat_remote_local_rooms(ngx_chat_shm_ctx_t *ctx, ngx_pool_t *pool)
{
    ngx_str_t            *s;
    ngx_array_t          *a;
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    a = ngx_array_create(pool, 16, sizeof(ngx_str_t));
    if (a == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (sh->rooms.root != sh->rooms.sentinel) {
        for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
             node;
             node = ngx_rbtree_next(&sh->rooms, node))
        {
            room = (ngx_chat_shm_room_t *) node;

            if (room->nconns == 0) {
                continue;
            }

            s = ngx_array_push(a);
            if (s == NULL) {
                break;
            }

            s->data = ngx_pstrdup(pool, &room->name);
            s->len = s->data ? room->name.len : 0;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return a;
}
