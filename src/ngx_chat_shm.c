
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The shared zone: rooms, members, users, recent history, the workers
 * (see ngx_chat_shm.h).  All functions take the slab pool's mutex
 * themselves and do no I/O while holding it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"


static u_char *ngx_chat_shm_scratch(size_t size);
static ngx_chat_shm_room_t *ngx_chat_shm_room_get(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *name, ngx_uint_t keep);
static void ngx_chat_shm_room_free(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
static ngx_int_t ngx_chat_shm_join_history(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_int_t history, ngx_str_t *since,
    ngx_chat_shm_join_t *res, ngx_chat_shm_snap_t *snap, ngx_log_t *log);
static void ngx_chat_shm_relay_event(ngx_chat_shm_ctx_t *ctx,
    ngx_uint_t kind, ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user);
static u_char *ngx_chat_shm_post_build(ngx_str_t *name, ngx_str_t *user,
    ngx_str_t *content, uint64_t now_ms, u_char **id_at, size_t *tail);
static ngx_chat_shm_room_t *ngx_chat_shm_post_room(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *name, ngx_chat_shm_room_t *hint);
static ngx_int_t ngx_chat_shm_snap(ngx_chat_shm_room_t *room,
    ngx_uint_t from, ngx_uint_t n, ngx_uint_t complete,
    ngx_chat_shm_snap_t *snap, ngx_log_t *log);
static ngx_chat_buf_t *ngx_chat_shm_snap_frame(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *name, ngx_chat_shm_snap_t *snap, ngx_log_t *log);
static ngx_chat_shm_ring_t *ngx_chat_shm_ring_copy_locked(
    ngx_chat_shm_room_t *room);
static uint64_t ngx_chat_shm_server_id(ngx_log_t *log);
static uint64_t ngx_chat_shm_post_time(u_char *end, uint64_t now_ms,
    uint64_t msg_id);


static u_char  *ngx_chat_shm_scratch_buf;
static size_t   ngx_chat_shm_scratch_size;



ngx_int_t
ngx_chat_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_chat_shm_ctx_t  *octx = data;

    size_t               len, bus;
    ngx_chat_shm_t      *sh;
    ngx_chat_shm_ctx_t  *ctx;

    ctx = shm_zone->data;

    bus = ngx_chat_bus_size(shm_zone->shm.size, ctx->max_message);

    if (octx) {
        /*
         * nginx -s reload with the same size: keep everything, if this
         * module's code can read the zone (it may be a newer build) and
         * the bus fits the new chat_max_message_size, as limit_req refuses
         * a zone whose key changed
         */

        sh = octx->sh;

        if (sh->layout != NGX_CHAT_SHM_LAYOUT) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "chat_zone \"%V\" was created by another version "
                          "of ngx_chat_module; to replace it, change its "
                          "size or restart nginx", &shm_zone->shm.name);
            return NGX_ERROR;
        }

        if (sh->bus.size < bus) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "chat_max_message_size %uz does not fit the "
                          "running chat_zone \"%V\" (its bus holds %uz "
                          "bytes, %uz needed); to replace the zone, change "
                          "its size or restart nginx", ctx->max_message,
                          &shm_zone->shm.name, sh->bus.size, bus);
            return NGX_ERROR;
        }

        ctx->sh = sh;
        ctx->shpool = octx->shpool;

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_chat_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ctx->sh = sh;
    ctx->shpool->data = sh;

    sh->layout = NGX_CHAT_SHM_LAYOUT;

    /*
     * this zone's identity on this server, new on each start: the tag of
     * its message ids and its name for the relay; the tag's upper half is
     * the same on every start (ngx_chat_shm_lineage())
     */
    sh->server_id = (ngx_chat_shm_server_id(shm_zone->shm.log)
                     & ~((uint64_t) 0xffffff << 24))
                    | ((uint64_t) ctx->lineage << 24);

    /* ngx_chat_server_lineage() takes it back from a tag */

    ngx_rbtree_init(&sh->rooms, &sh->rooms_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_rbtree_init(&sh->users, &sh->users_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->empty);
    ngx_queue_init(&sh->idle);
    ngx_rbtree_init(&sh->keys, &sh->keys_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->keys_queue);

    if (bus == 0) {
        return NGX_ERROR;
    }

    sh->bus.size = bus;

    sh->bus.data = ngx_slab_alloc(ctx->shpool, bus);
    if (sh->bus.data == NULL) {
        return NGX_ERROR;
    }

    len = sizeof(" in chat zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in chat zone \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/* a per-process buffer to build JSON in */

static u_char *
ngx_chat_shm_scratch(size_t size)
{
    u_char  *p;

    if (size > ngx_chat_shm_scratch_size) {
        size = ngx_max(size, 4096);

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return NULL;
        }

        if (ngx_chat_shm_scratch_buf) {
            ngx_free(ngx_chat_shm_scratch_buf);
        }

        ngx_chat_shm_scratch_buf = p;
        ngx_chat_shm_scratch_size = size;
    }

    return ngx_chat_shm_scratch_buf;
}


void
ngx_chat_shm_exit_process(void)
{
    if (ngx_chat_shm_scratch_buf) {
        ngx_free(ngx_chat_shm_scratch_buf);
        ngx_chat_shm_scratch_buf = NULL;
        ngx_chat_shm_scratch_size = 0;
    }
}


/*
 * Allocation with eviction: rooms kept only for their history go first,
 * then users kept only for their rate buckets (so that a user who
 * reconnects keeps its limit while the zone has any history to give up),
 * oldest first.
 */

void *
ngx_chat_shm_alloc(ngx_chat_shm_ctx_t *ctx, size_t size)
{
    void                 *p;
    ngx_queue_t          *q;
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(ctx->shpool, size);
        if (p) {
            return p;
        }

        if (!ngx_queue_empty(&sh->empty)) {
            q = ngx_queue_head(&sh->empty);
            room = ngx_queue_data(q, ngx_chat_shm_room_t, lru);
            ngx_chat_shm_room_free(ctx, room);
            continue;
        }

        if (!ngx_queue_empty(&sh->idle)) {
            q = ngx_queue_head(&sh->idle);
            u = ngx_queue_data(q, ngx_chat_shm_user_t, idle);
            ngx_chat_shm_user_free(ctx, &sh->users, u);
            continue;
        }

        (void) ngx_atomic_fetch_add(&sh->zone_full, 1);

        return NULL;
    }
}


/* the zone's room of this name, or NULL */

ngx_chat_shm_room_t *
ngx_chat_shm_room_lookup(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    uint32_t  hash;

    hash = ngx_crc32_short(name->data, name->len);

    return (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);
}


ngx_chat_shm_user_t *
ngx_chat_shm_user_get(ngx_chat_shm_ctx_t *ctx, ngx_rbtree_t *tree,
    ngx_str_t *name, ngx_uint_t create)
{
    uint32_t              hash;
    ngx_chat_shm_user_t  *u;

    hash = ngx_crc32_short(name->data, name->len);

    u = (ngx_chat_shm_user_t *) ngx_str_rbtree_lookup(tree, name, hash);

    if (u || !create) {
        return u;
    }

    u = ngx_chat_shm_alloc(ctx, sizeof(ngx_chat_shm_user_t) + name->len);
    if (u == NULL) {
        return NULL;
    }

    ngx_memzero(u, sizeof(ngx_chat_shm_user_t));

    u->name.data = (u_char *) u + sizeof(ngx_chat_shm_user_t);
    u->name.len = name->len;
    ngx_memcpy(u->name.data, name->data, name->len);

    u->node.key = hash;
    ngx_rbtree_insert(tree, &u->node);

    return u;
}


void
ngx_chat_shm_user_free(ngx_chat_shm_ctx_t *ctx, ngx_rbtree_t *tree,
    ngx_chat_shm_user_t *u)
{
    ngx_rbtree_delete(tree, &u->node);

    if (u->idle.next) {
        ngx_queue_remove(&u->idle);
    }

    if (u->slots) {
        ngx_slab_free_locked(ctx->shpool, u->slots);
    }

    ngx_slab_free_locked(ctx->shpool, u);
}


/* the index of slot in the user's slots, or -1 */

ngx_int_t
ngx_chat_shm_user_slot(ngx_chat_shm_user_t *u, ngx_uint_t slot)
{
    ngx_uint_t  i;

    for (i = 0; i < u->nslots; i++) {
        if (u->slots[i].slot == slot) {
            return i;
        }
    }

    return -1;
}


/* counts a connection (delta 1) or its end (delta -1) on a worker slot */

ngx_int_t
ngx_chat_shm_user_add(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_user_t *u,
    ngx_uint_t slot, ngx_int_t delta)
{
    ngx_int_t             k;
    ngx_uint_t            i, cap;
    ngx_chat_shm_slot_t  *s;

    k = ngx_chat_shm_user_slot(u, slot);

    if (k >= 0) {
        i = k;

    } else {
        i = u->nslots;

        if (delta < 0) {
            return NGX_OK;
        }

        if (u->nslots == u->cap) {
            cap = u->cap ? u->cap * 2 : 1;

            s = ngx_chat_shm_alloc(ctx, cap * sizeof(ngx_chat_shm_slot_t));
            if (s == NULL) {
                return NGX_ERROR;
            }

            if (u->slots) {
                ngx_memcpy(s, u->slots,
                           u->nslots * sizeof(ngx_chat_shm_slot_t));
                ngx_slab_free_locked(ctx->shpool, u->slots);
            }

            u->slots = s;
            u->cap = cap;
        }

        u->slots[i].slot = slot;
        u->slots[i].count = 0;
        u->nslots++;
    }

    if (delta > 0) {
        u->slots[i].count++;
        u->total++;

    } else {
        u->slots[i].count--;
        u->total--;

        if (u->slots[i].count == 0) {
            u->slots[i] = u->slots[--u->nslots];
        }
    }

    return NGX_OK;
}


ngx_uint_t
ngx_chat_shm_local_count(ngx_chat_shm_user_t *u)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < u->nslots; i++) {
        if (u->slots[i].slot < NGX_CHAT_REMOTE_SLOT) {
            n += u->slots[i].count;
        }
    }

    return n;
}


ngx_int_t
ngx_chat_shm_connect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user)
{
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_user_t  *u;

    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_chat_shm_user_get(ctx, &sh->users, user, 1);

    if (u == NULL || ngx_chat_shm_user_add(ctx, u, ctx->wslot, 1) != NGX_OK) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_ERROR;
    }

    if (u->total == 1) {
        sh->users_active++;

        if (u->idle.next) {
            ngx_queue_remove(&u->idle);
            u->idle.next = NULL;
        }
    }

    sh->connections++;
    sh->workers[ctx->wslot].connections++;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


void
ngx_chat_shm_disconnect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user)
{
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_user_t  *u;

    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_chat_shm_user_get(ctx, &sh->users, user, 0);

    if (u && u->total) {
        (void) ngx_chat_shm_user_add(ctx, u, ctx->wslot, -1);

        sh->connections--;
        sh->workers[ctx->wslot].connections--;

        if (u->total == 0) {
            sh->users_active--;
            ngx_queue_insert_tail(&sh->idle, &u->idle);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_chat_shm_room_t *
ngx_chat_shm_room_get(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t keep)
{
    uint32_t              hash;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);
    if (room) {
        if (room->in_lru) {
            ngx_queue_remove(&room->lru);
            room->in_lru = 0;
        }

        return room;
    }

    if (keep == 0) {
        return NULL;
    }

    /* the ring comes with the first message (ngx_chat_shm_hist.c) */

    room = ngx_chat_shm_alloc(ctx, sizeof(ngx_chat_shm_room_t) + name->len);
    if (room == NULL) {
        return NULL;
    }

    ngx_memzero(room, sizeof(ngx_chat_shm_room_t));

    room->hist_max = keep - 1;

    room->name.data = (u_char *) room + sizeof(ngx_chat_shm_room_t);
    room->name.len = name->len;
    ngx_memcpy(room->name.data, name->data, name->len);

    ngx_rbtree_init(&room->users, &room->sentinel,
                    ngx_str_rbtree_insert_value);

    room->node.key = hash;
    ngx_rbtree_insert(&ctx->sh->rooms, &room->node);

    return room;
}


static void
ngx_chat_shm_room_free(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    if (room->in_lru) {
        ngx_queue_remove(&room->lru);
    }

    ngx_chat_shm_hist_free(ctx, room);
    ngx_chat_remote_room_free(ctx, room);

    ngx_rbtree_delete(&ctx->sh->rooms, &room->node);
    ngx_slab_free_locked(ctx->shpool, room);
}


/* a room left without members is kept for its history, or freed */

void
ngx_chat_shm_room_release(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_user_t  *u;

    if (room->nconns) {
        return;
    }

    /* other servers' users: no longer followed once nobody is here */

    while (room->users.root != room->users.sentinel) {
        node = ngx_rbtree_min(room->users.root, room->users.sentinel);
        u = (ngx_chat_shm_user_t *) node;
        ngx_chat_shm_user_free(ctx, &room->users, u);
    }

    room->nusers = 0;

    if (room->hist_n == 0) {
        ngx_chat_shm_room_free(ctx, room);
        return;
    }

    if (!room->in_lru) {
        ngx_queue_insert_tail(&ctx->sh->empty, &room->lru);
        room->in_lru = 1;
    }
}


ngx_int_t
ngx_chat_shm_join(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_str_t *user,
    ngx_uint_t keep, ngx_int_t history, ngx_str_t *since,
    ngx_chat_shm_join_t *res, ngx_log_t *log)
{
    ngx_uint_t            created;
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_snap_t   snap;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    ngx_memzero(res, sizeof(ngx_chat_shm_join_t));

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_get(ctx, name, keep + 1);
    if (room == NULL) {
        goto full;
    }

    created = (room->nconns == 0);

    u = ngx_chat_shm_user_get(ctx, &room->users, user, 1);
    if (u == NULL) {
        goto failed;
    }

    if (ngx_chat_shm_user_add(ctx, u, ctx->wslot, 1) != NGX_OK) {
        if (u->total == 0) {
            ngx_chat_shm_user_free(ctx, &room->users, u);
        }

        goto failed;
    }

    room->nconns++;

    if (created) {
        sh->rooms_active++;
        ngx_chat_shm_relay_event(ctx, NGX_CHAT_BUS_SUBSCRIBE, 0, name, NULL);

        if (ctx->relayed && !room->followed) {
            ngx_chat_remote_room_follow(ctx, room);
        }
    }

    if (ngx_chat_shm_local_count(u) == 1) {
        ngx_chat_shm_relay_event(ctx, NGX_CHAT_BUS_RPRESENCE, 0, name, user);
    }

    if (u->total == 1) {
        room->nusers++;
        res->first = 1;

        if (ngx_chat_shm_presence(ctx, name, user, 1) != NGX_OK) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "chat: presence event lost, zone \"%V\" bus full",
                          &ctx->name);
        }
    }

    res->members = room->nusers;
    res->bus_pos = sh->bus.head;
    res->room = room;
    res->blind = since && ngx_chat_remote_room_blind(ctx, room, since);

    snap.msgs = NULL;

    if (ngx_chat_shm_join_history(ctx, room, history, since, res, &snap, log)
        != NGX_OK)
    {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        ngx_chat_shm_leave(ctx, name, user);
        return NGX_ERROR;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (snap.msgs) {
        res->history = ngx_chat_shm_snap_frame(ctx, name, &snap, log);

        if (res->history == NULL) {
            ngx_chat_shm_leave(ctx, name, user);
            return NGX_ERROR;
        }
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat zone: \"%V\" joined \"%V\", %ui members, first %ui, "
                   "bus at %uL", user, name, res->members, res->first,
                   res->bus_pos);

    return NGX_OK;

failed:

    ngx_chat_shm_room_release(ctx, room);

full:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "chat: zone \"%V\" is full, join refused", &ctx->name);

    return NGX_DECLINED;
}


/*
 * what a join replays: the messages of the ring for its history reply
 * (written after the lock), or storage; locked
 */

static ngx_int_t
ngx_chat_shm_join_history(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_int_t history, ngx_str_t *since, ngx_chat_shm_join_t *res,
    ngx_chat_shm_snap_t *snap, ngx_log_t *log)
{
    ngx_int_t   found, before_hole;
    ngx_uint_t  n, complete, hole;

    found = since ? ngx_chat_shm_hist_find(room, since) : -1;
    before_hole = -1;

    hole = ngx_chat_shm_hist_hole(room);

    if (since && found >= 0
        && ((ngx_uint_t) found < hole
            || (ctx->store && ngx_chat_remote_room_history(room, since))))
    {
        /*
         * known, but what came after it may not all be here: storage
         * answers, or the ring says what it has after it, not complete.
         * So too for another server's history that came late (numbered
         * before the follow): what storage gave the others before it
         * never was in the ring, and the member may have had it elsewhere
         */
        before_hole = found;
        found = -1;
    }

    if (!since && history > 0 && hole
        && room->hist_n - hole < (ngx_uint_t) history)
    {
        /* the newest "history" reach back before the hole */

        if (ctx->store) {
            res->storage = 1;
            return NGX_OK;
        }

        n = ngx_min((ngx_uint_t) history, room->hist_n);

        return ngx_chat_shm_snap(room, room->hist_n - n, n, 0, snap, log);
    }

    if (ctx->store
        && ((since && found < 0)
            || (!since && history > 0
                && room->hist_n < (ngx_uint_t) history)))
    {
        /*
         * older than the ring: storage answers, with the ring merged (it is
         * copied when the read is made, not here: reads of a connection
         * wait in turn)
         */

        res->storage = 1;

        return NGX_OK;
    }

    if (since) {
        if (found >= 0) {
            n = room->hist_n - found - 1;
            complete = 1;

        } else if (before_hole >= 0) {
            n = room->hist_n - before_hole - 1;
            complete = 0;

        } else {
            n = room->hist_n;
            complete = 0;
        }

    } else if (history >= 0) {
        n = ngx_min((ngx_uint_t) history, room->hist_n);
        complete = (n == (ngx_uint_t) history || room->total == room->hist_n);

    } else {
        return NGX_OK;
    }

    return ngx_chat_shm_snap(room, room->hist_n - n, n, complete, snap, log);
}


ngx_uint_t
ngx_chat_shm_members(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    ngx_uint_t            n;
    ngx_chat_shm_room_t  *room;


    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);
    n = room ? room->nusers : 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


void
ngx_chat_shm_leave(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_str_t *user)
{
    ngx_chat_shm_room_t  *room;


    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);
    if (room) {
        ngx_chat_shm_room_drop(ctx, room, user, ctx->wslot, 1);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat zone: \"%V\" left \"%V\"", user, name);
}


/* removes count connections of user on slot from the room; locked */

void
ngx_chat_shm_room_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_str_t *user, ngx_uint_t slot, ngx_uint_t count)
{
    ngx_int_t             i;
    ngx_uint_t            local;
    ngx_chat_shm_user_t  *u;

    u = ngx_chat_shm_user_get(ctx, &room->users, user, 0);
    if (u == NULL) {
        return;
    }

    i = ngx_chat_shm_user_slot(u, slot);

    if (i < 0) {
        return;
    }

    count = ngx_min(count, u->slots[i].count);
    local = ngx_chat_shm_local_count(u);

    while (count--) {
        (void) ngx_chat_shm_user_add(ctx, u, slot, -1);
        room->nconns--;
    }

    if (local && ngx_chat_shm_local_count(u) == 0) {
        ngx_chat_shm_relay_event(ctx, NGX_CHAT_BUS_RPRESENCE,
                                 NGX_CHAT_BUS_LEAVE, &room->name, &u->name);
    }

    if (u->total == 0) {
        room->nusers--;

        (void) ngx_chat_shm_presence(ctx, &room->name, &u->name, 0);

        ngx_chat_shm_user_free(ctx, &room->users, u);
    }

    if (room->nconns == 0) {
        ctx->sh->rooms_active--;
        ngx_chat_shm_relay_event(ctx, NGX_CHAT_BUS_UNSUBSCRIBE, 0,
                                 &room->name, NULL);
        ngx_chat_shm_room_release(ctx, room);
    }
}


/* a remote server's user leaves a room; locked */

void
ngx_chat_shm_remote_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_chat_shm_user_t *u, ngx_uint_t slot, ngx_uint_t notify)
{
    ngx_int_t   k;
    ngx_uint_t  count;

    k = ngx_chat_shm_user_slot(u, slot);
    count = (k >= 0) ? u->slots[k].count : 0;

    while (count--) {
        (void) ngx_chat_shm_user_add(ctx, u, slot, -1);
    }

    if (u->total == 0) {
        room->nusers--;

        if (notify) {
            (void) ngx_chat_shm_presence(ctx, &room->name, &u->name, 0);
        }

        ngx_chat_shm_user_free(ctx, &room->users, u);
    }
}


/* an entry only the relay reads; nothing without a relay.  Locked */

static void
ngx_chat_shm_relay_event(ngx_chat_shm_ctx_t *ctx, ngx_uint_t kind,
    ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user)
{
    if (!ctx->relayed) {
        return;
    }

    if (ngx_chat_shm_bus_append(ctx, kind, flags, room, user, NULL,
                                (u_char *) "", 0)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: relay event lost in zone \"%V\"", &ctx->name);
    }
}


ngx_int_t
ngx_chat_shm_presence(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user, ngx_uint_t join)
{
    u_char  *p, *start;

    start = ngx_chat_shm_scratch(ngx_chat_wire_presence_len(room, user));
    if (start == NULL) {
        return NGX_ERROR;
    }

    p = ngx_chat_wire_presence(start, room, user, join);

    return ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_PRESENCE,
                               join ? 0 : NGX_CHAT_BUS_LEAVE, room, user,
                               NULL, start, p - start);
}


ngx_int_t
ngx_chat_shm_post(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_chat_shm_room_t *hint, ngx_str_t *user, ngx_str_t *content,
    ngx_uint_t rate, ngx_uint_t burst, ngx_str_t *id, uint64_t *ts,
    ngx_chat_shm_place_t *place, ngx_msec_t *retry_ms, ngx_log_t *log)
{
    u_char               *p, *start, *id_at;
    size_t                len, tail;
    uint64_t              msg_id, now_ms;
    ngx_str_t             ids;
    ngx_time_t           *tp;
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_msg_t   *msg;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;
    tp = ngx_timeofday();
    now_ms = (uint64_t) tp->sec * 1000 + tp->msec;

    start = ngx_chat_shm_post_build(name, user, content, now_ms, &id_at,
                                    &tail);
    if (start == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_post_room(ctx, name, hint);
    if (room == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_DECLINED;
    }

    u = rate ? ngx_chat_shm_user_get(ctx, &sh->users, user, 0) : NULL;

    if (u && ngx_chat_rate_take(&u->rate, ngx_current_msec, rate, burst,
                                retry_ms)
             == NGX_BUSY)
    {
        (void) ngx_atomic_fetch_add(&sh->rate_limited, 1);
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                       "chat zone: \"%V\" rate limited in \"%V\", retry "
                       "after %M ms", user, name, *retry_ms);
        return NGX_BUSY;
    }

    msg_id = ngx_max(sh->last_id + 1, now_ms * 1000);

    /* the id, then the tail moved to follow it */

    p = ngx_sprintf(id_at, "%uL%V", msg_id, &ctx->id_tag);
    ids.data = id_at;
    ids.len = p - id_at;
    ngx_memmove(p, id_at + NGX_CHAT_ID_LEN, tail);
    len = (size_t) (p + tail - start);
    now_ms = ngx_chat_shm_post_time(start + len, now_ms, msg_id);

    msg = NULL;

    if (room->hist_max) {
        msg = ngx_chat_shm_alloc(ctx, offsetof(ngx_chat_shm_msg_t, data)
                                      + len);

        if (msg == NULL && room->hist_n) {
            /* make room from this room's own oldest message */
            ngx_chat_shm_hist_drop(ctx, room);

            msg = ngx_chat_shm_alloc(ctx, offsetof(ngx_chat_shm_msg_t, data)
                                          + len);
        }

        if (msg == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "chat: zone \"%V\" is full, message refused",
                          &ctx->name);
            return NGX_DECLINED;
        }

        ngx_memcpy(msg->id, ids.data, ids.len);
        msg->id_len = ids.len;
        msg->len = len;
        ngx_memcpy(msg->data, start, len);
    }

    if (ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_MESSAGE, 0, name, NULL, &ids,
                            start, len)
        != NGX_OK)
    {
        if (msg) {
            ngx_slab_free_locked(ctx->shpool, msg);
        }

        ngx_shmtx_unlock(&ctx->shpool->mutex);
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "chat: message too large for the bus of zone \"%V\"",
                      &ctx->name);
        return NGX_DECLINED;
    }

    if (msg) {
        ngx_chat_shm_hist_push(ctx, room, msg);
    }

    room->total++;
    sh->last_id = msg_id;

    ngx_memcpy(id->data, ids.data, ids.len);
    id->len = ids.len;
    *ts = now_ms;
    ngx_chat_remote_room_place(ctx, room, place);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->messages_in, 1);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat zone: \"%V\" posted %V in \"%V\"", user, id, name);

    return NGX_OK;
}


/*
 * The message's time follows its id (its millisecond), so that stored
 * rows, ordered by time, then id, are in the order of the ids, which is
 * the order of the ring and of delivery: the time never goes back within
 * the zone's life, even when the wall clock steps back or this worker's
 * cached time lags another's (a "since" read from storage would miss the
 * later messages otherwise).  Written over the digits before the closing
 * brace, which have the same width until the year 2286.  Locked.
 */

static uint64_t
ngx_chat_shm_post_time(u_char *end, uint64_t now_ms, uint64_t msg_id)
{
    u_char    buf[NGX_INT64_LEN], now[NGX_INT64_LEN];
    size_t    n;
    uint64_t  ms;

    ms = msg_id / 1000;

    if (ms == now_ms) {
        return now_ms;
    }

    n = ngx_sprintf(buf, "%uL", ms) - buf;

    if (n != (size_t) (ngx_sprintf(now, "%uL", now_ms) - now)) {
        return now_ms;
    }

    ngx_memcpy(end - 1 - n, buf, n);

    return ms;
}


/*
 * The message object, built outside the lock but for its id, which gets a
 * slot of NGX_CHAT_ID_LEN bytes at *id_at, between the head and the tail
 * (*tail bytes) of the object
 */

static u_char *
ngx_chat_shm_post_build(ngx_str_t *name, ngx_str_t *user, ngx_str_t *content,
    uint64_t now_ms, u_char **id_at, size_t *tail)
{
    u_char     *p, *start, tsbuf[NGX_INT64_LEN];
    ngx_str_t   none, ts;

    ts.data = tsbuf;
    ts.len = ngx_sprintf(tsbuf, "%uL", now_ms) - tsbuf;

    none.len = 0;
    none.data = (u_char *) "";      /* no NULL + 0 in the escaping */

    start = ngx_chat_shm_scratch(ngx_chat_wire_message_len(name, &none, user,
                                                           content, ts.len)
                                 + NGX_CHAT_ID_LEN);
    if (start == NULL) {
        return NULL;
    }

    p = ngx_chat_wire_message_head(start, name);
    *p++ = '"';
    *id_at = p;
    p += NGX_CHAT_ID_LEN;
    *p++ = '"';
    p = ngx_chat_wire_message_tail(p, user, content, &ts);

    *tail = p - (*id_at + NGX_CHAT_ID_LEN);

    return start;
}


/*
 * The sender's room from its join (a room with members is never freed),
 * checked all the same; it saves a tree walk of the zone's rooms under the
 * lock for every message (perf: ngx_str_rbtree_lookup was the largest
 * user-space cost of the workers at 1,000 rooms).  Locked.
 */

static ngx_chat_shm_room_t *
ngx_chat_shm_post_room(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_chat_shm_room_t *hint)
{
    if (hint
        && hint->name.len == name->len
        && ngx_memcmp(hint->name.data, name->data, name->len) == 0)
    {
        return hint;
    }

    return ngx_chat_shm_room_lookup(ctx, name);
}


/*
 * The history reply of messages from..from+n of the ring: their references
 * are taken under the lock, the reply is written after it (one memcpy of
 * up to 1,000 messages is not done while every worker waits), and the
 * references are given back under the lock again
 */

static ngx_int_t
ngx_chat_shm_snap(ngx_chat_shm_room_t *room, ngx_uint_t from, ngx_uint_t n,
    ngx_uint_t complete, ngx_chat_shm_snap_t *snap, ngx_log_t *log)
{
    ngx_uint_t           i;
    ngx_chat_shm_msg_t  *msg;

    snap->msgs = ngx_alloc((n ? n : 1) * sizeof(ngx_chat_shm_msg_t *), log);
    if (snap->msgs == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        msg = room->hist[(room->hist_head + from + i) % room->hist_cap];
        msg->refs++;
        snap->msgs[i] = msg;
    }

    snap->n = n;
    snap->complete = complete;

    return NGX_OK;
}


static ngx_chat_buf_t *
ngx_chat_shm_snap_frame(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_chat_shm_snap_t *snap, ngx_log_t *log)
{
    ngx_str_t       *msgs;
    ngx_uint_t       i;
    ngx_chat_buf_t  *b;

    b = NULL;

    msgs = ngx_alloc((snap->n ? snap->n : 1) * sizeof(ngx_str_t), log);

    if (msgs) {
        for (i = 0; i < snap->n; i++) {
            msgs[i].data = snap->msgs[i]->data;
            msgs[i].len = snap->msgs[i]->len;
        }

        b = ngx_chat_wire_history(name, msgs, snap->n, snap->complete, log);

        ngx_free(msgs);
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < snap->n; i++) {
        ngx_chat_shm_msg_release(ctx, snap->msgs[i]);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_free(snap->msgs);
    snap->msgs = NULL;

    return b;
}


ngx_chat_buf_t *
ngx_chat_shm_history(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t limit, ngx_str_t *before, ngx_uint_t *storage, ngx_log_t *log)
{
    ngx_int_t             end;
    ngx_uint_t            n, complete, hole, across;
    ngx_chat_shm_snap_t   snap;
    ngx_chat_shm_room_t  *room;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);
    if (room == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    if (before) {
        end = ngx_chat_shm_hist_find(room, before);

    } else {
        end = room->hist_n;
    }

    hole = ngx_chat_shm_hist_hole(room);

    across = (end > 0 && (ngx_uint_t) end > hole
              && (ngx_uint_t) end - ngx_min(limit, (ngx_uint_t) end) < hole);

    if (ctx->store && (end < 0 || (ngx_uint_t) end < limit || across)) {
        *storage = 1;
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    if (end < 0) {
        /* an id we no longer have, or never had */
        n = 0;
        complete = 0;

    } else {
        n = ngx_min(limit, (ngx_uint_t) end);
        complete = !across && (n == limit || room->total == room->hist_n);
    }

    if (ngx_chat_shm_snap(room, (end < 0) ? 0 : end - n, n, complete, &snap,
                          log)
        != NGX_OK)
    {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return ngx_chat_shm_snap_frame(ctx, name, &snap, log);
}


ngx_chat_shm_ring_t *
ngx_chat_shm_ring_copy(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    ngx_chat_shm_ring_t  *ring;
    ngx_chat_shm_room_t  *room;


    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    ring = ngx_chat_shm_ring_copy_locked(room);

    if (ring) {
        ring->head = ctx->sh->bus.head;
        ring->follow = 0;
        ring->fresh = 0;

        if (room && room->followed && room->total > room->follow) {
            ring->follow = room->follow_num;
            ring->fresh = (ngx_uint_t) ngx_min(room->total - room->follow,
                                               ring->n);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return ring;
}


/* one allocation: the header, the entries, then ids and JSON; locked */

static ngx_chat_shm_ring_t *
ngx_chat_shm_ring_copy_locked(ngx_chat_shm_room_t *room)
{
    u_char               *p;
    size_t                size;
    ngx_uint_t            i, n;
    ngx_chat_shm_msg_t   *msg;
    ngx_chat_shm_ring_t  *ring;

    n = room ? room->hist_n : 0;
    size = sizeof(ngx_chat_shm_ring_t) + n * sizeof(ngx_chat_shm_copy_msg_t);

    for (i = 0; i < n; i++) {
        msg = room->hist[(room->hist_head + i) % room->hist_cap];
        size += msg->id_len + msg->len;
    }

    ring = ngx_alloc(size, ngx_cycle->log);
    if (ring == NULL) {
        return NULL;
    }

    ring->n = n;
    ring->msgs = (ngx_chat_shm_copy_msg_t *) (ring + 1);

    p = (u_char *) (ring->msgs + n);

    for (i = 0; i < n; i++) {
        msg = room->hist[(room->hist_head + i) % room->hist_cap];

        ring->msgs[i].id.data = p;
        ring->msgs[i].id.len = msg->id_len;
        p = ngx_cpymem(p, msg->id, msg->id_len);

        ring->msgs[i].json.data = p;
        ring->msgs[i].json.len = msg->len;
        p = ngx_cpymem(p, msg->data, msg->len);
    }

    return ring;
}


ngx_array_t *
ngx_chat_shm_users(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t local, ngx_pool_t *pool)
{
    ngx_str_t            *s;
    ngx_array_t          *a;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    a = ngx_array_create(pool, 16, sizeof(ngx_str_t));
    if (a == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room && room->users.root != room->users.sentinel) {
        for (node = ngx_rbtree_min(room->users.root, room->users.sentinel);
             node;
             node = ngx_rbtree_next(&room->users, node))
        {
            u = (ngx_chat_shm_user_t *) node;

            if (local && ngx_chat_shm_local_count(u) == 0) {
                continue;
            }

            s = ngx_array_push(a);
            if (s == NULL) {
                a = NULL;
                break;
            }

            s->data = ngx_pstrdup(pool, &u->name);
            if (s->data == NULL) {
                a = NULL;
                break;
            }

            s->len = u->name.len;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return a;
}


uint64_t
ngx_chat_shm_bus_read(ngx_chat_shm_ctx_t *ctx, ngx_chat_bus_pt handler,
    void *data, ngx_log_t *log)
{
    return ngx_chat_bus_read(&ctx->sh->bus, &ctx->shpool->mutex, &ctx->bus,
                             handler, data, log);
}


uint64_t
ngx_chat_shm_bus_scan(ngx_chat_shm_ctx_t *ctx, uint64_t from,
    ngx_chat_bus_pt handler, void *data)
{
    return ngx_chat_bus_scan(&ctx->sh->bus, &ctx->shpool->mutex, from,
                             handler, data);
}


void
ngx_chat_shm_stats(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_stats_t *st)
{
    ngx_uint_t       i, j;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;

    ngx_memzero(st, sizeof(ngx_chat_shm_stats_t));

    ngx_shmtx_lock(&ctx->shpool->mutex);

    st->connections = sh->connections;
    st->rooms = sh->rooms_active;
    st->users = sh->users_active;
    st->redis_up = sh->redis_up;

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {
        if (sh->workers[i].active) {
            st->workers++;

            if (sh->workers[i].pg_down) {
                st->pg_down = 1;
            }
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    st->messages_in = sh->messages_in;
    st->messages_out = sh->messages_out;
    st->rate_limited = sh->rate_limited;
    st->zone_full = sh->zone_full;
    st->relay_dropped = sh->relay_dropped;
    st->relay_invalid = sh->relay_invalid;
    st->relay_duplicates = sh->relay_duplicates;
    st->bytes[0] = sh->bytes_in;
    st->bytes[1] = sh->bytes_in_raw;
    st->bytes[2] = sh->bytes_out;
    st->bytes[3] = sh->bytes_out_raw;

    for (i = 0; i < NGX_CHAT_SHM_ERRORS; i++) {
        st->errors[i] = sh->errors[i];
    }

    for (i = 0; i < NGX_CHAT_SHM_CLOSES; i++) {
        st->closes[i] = sh->closes[i];
    }

    for (i = 0; i < NGX_CHAT_SHM_HISTOGRAMS; i++) {
        for (j = 0; j < NGX_CHAT_SHM_BUCKETS; j++) {
            st->hist[i].bucket[j] = sh->hist[i].bucket[j];
        }

        st->hist[i].sum = sh->hist[i].sum;
    }
}


uint64_t  ngx_chat_shm_bucket_us[NGX_CHAT_SHM_BUCKETS - 1] = {
    500, 1000, 2000, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000
};

char  *ngx_chat_shm_error_codes[NGX_CHAT_SHM_ERRORS] = {
    "bad_request", "not_member", "rate_limited", "too_many_rooms",
    "forbidden", "unavailable"
};

ngx_uint_t  ngx_chat_shm_close_codes[NGX_CHAT_SHM_CLOSES - 1] = {
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011
};


void
ngx_chat_shm_count_error(ngx_chat_shm_ctx_t *ctx, char *code)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_CHAT_SHM_ERRORS; i++) {
        if (ngx_strcmp(code, ngx_chat_shm_error_codes[i]) == 0) {
            (void) ngx_atomic_fetch_add(&ctx->sh->errors[i], 1);
            return;
        }
    }
}


void
ngx_chat_shm_count_close(ngx_chat_shm_ctx_t *ctx, ngx_uint_t code)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_CHAT_SHM_CLOSES - 1; i++) {
        if (code == ngx_chat_shm_close_codes[i]) {
            break;
        }
    }

    /* i == NGX_CHAT_SHM_CLOSES - 1: another code (a client's, echoed) */

    (void) ngx_atomic_fetch_add(&ctx->sh->closes[i], 1);
}


void
ngx_chat_shm_observe(ngx_chat_shm_ctx_t *ctx, ngx_uint_t which, uint64_t us)
{
    ngx_uint_t                   i;
    ngx_chat_shm_atomic_hist_t  *h;

    h = &ctx->sh->hist[which];

    for (i = 0; i < NGX_CHAT_SHM_BUCKETS - 1; i++) {
        if (us <= ngx_chat_shm_bucket_us[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, (ngx_atomic_int_t) us);
}


void
ngx_chat_shm_count_bytes(ngx_chat_shm_ctx_t *ctx, uint64_t *bytes)
{
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;

    (void) ngx_atomic_fetch_add(&sh->bytes_in, bytes[0]);
    (void) ngx_atomic_fetch_add(&sh->bytes_in_raw, bytes[1]);
    (void) ngx_atomic_fetch_add(&sh->bytes_out, bytes[2]);
    (void) ngx_atomic_fetch_add(&sh->bytes_out_raw, bytes[3]);
}


void
ngx_chat_shm_count_out(ngx_chat_shm_ctx_t *ctx, ngx_uint_t n)
{
    (void) ngx_atomic_fetch_add(&ctx->sh->messages_out, n);
}


void
ngx_chat_shm_set_pg_down(ngx_chat_shm_ctx_t *ctx, ngx_uint_t down)
{
    if (ctx->wslot < 0) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->sh->workers[ctx->wslot].pg_down = down;
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


uint32_t
ngx_chat_shm_lineage(ngx_cycle_t *cycle, ngx_str_t *zone)
{
    uint32_t  h;

    h = ngx_crc32_short(cycle->hostname.data, cycle->hostname.len);
    h = h * 31 + ngx_crc32_short(cycle->conf_file.data, cycle->conf_file.len);
    h = h * 31 + ngx_crc32_short(zone->data, zone->len);

    return h & 0xffffff;
}


/*
 * 64 random bits from the kernel (at configuration time, in the master:
 * the read may block).  random() alone is seeded with the pid and the
 * time, which two containers started together share.
 */

static uint64_t
ngx_chat_shm_server_id(ngx_log_t *log)
{
    ssize_t    n;
    uint64_t   id;
    ngx_fd_t   fd;

    id = 0;
    n = -1;

    fd = ngx_open_file("/dev/urandom", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd != NGX_INVALID_FILE) {
        n = ngx_read_fd(fd, &id, sizeof(uint64_t));

        if (ngx_close_file(fd) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          ngx_close_file_n " \"/dev/urandom\" failed");
        }
    }

    if (n != (ssize_t) sizeof(uint64_t)) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "chat: cannot read /dev/urandom, the zone's id tag "
                      "comes from random()");

        id = 0;
    }

    return id ^ ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
           ^ ((uint64_t) ngx_pid << 16) ^ (uint64_t) ngx_time();
}


/*
 * chat_api publish: a room the message goes to must exist in the zone,
 * members or not; a new one is created as rooms kept for their history
 * are (in the zone's LRU of rooms without members), with keep messages
 */

ngx_int_t
ngx_chat_shm_room_ensure(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t keep)
{
    ngx_chat_shm_room_t  *room;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL) {
        room = ngx_chat_shm_room_get(ctx, name, keep + 1);

        if (room == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_DECLINED;
        }

        ngx_queue_insert_tail(&ctx->sh->empty, &room->lru);
        room->in_lru = 1;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


/* connections of a user on this server (every worker's) */

ngx_uint_t
ngx_chat_shm_user_connections(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user)
{
    ngx_uint_t            n;
    ngx_chat_shm_user_t  *u;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_chat_shm_user_get(ctx, &ctx->sh->users, user, 0);
    n = u ? ngx_chat_shm_local_count(u) : 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/* chat_api disconnect: every worker (and the relay) reads it on the bus */

ngx_int_t
ngx_chat_shm_kick(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user, ngx_uint_t flags,
    ngx_log_t *log)
{
    ngx_int_t  rc;
    ngx_str_t  none;

    ngx_str_set(&none, "");

    ngx_shmtx_lock(&ctx->shpool->mutex);

    rc = ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_KICK, flags, &none, user,
                                 NULL, (u_char *) "{}", 2);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat zone: disconnect \"%V\" on zone \"%V\"", user,
                   &ctx->name);

    return rc;
}


/*
 * chat_api publish keys: a key is taken (NGX_OK: publish, then set its
 * id or drop it), already known (NGX_DECLINED, *id is what it published)
 * or being published right now by another worker (NGX_BUSY).  Keys are
 * kept NGX_CHAT_SHM_KEY_TTL seconds, at most NGX_CHAT_SHM_MAX_KEYS of them
 * (the oldest go first).
 */

ngx_int_t
ngx_chat_shm_key_take(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id)
{
    time_t               now;
    uint32_t             hash;
    ngx_queue_t         *q;
    ngx_chat_shm_t      *sh;
    ngx_chat_shm_key_t  *k;

    sh = ctx->sh;
    now = ngx_time();
    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    while (!ngx_queue_empty(&sh->keys_queue)) {
        q = ngx_queue_head(&sh->keys_queue);
        k = ngx_queue_data(q, ngx_chat_shm_key_t, queue);

        if (k->expires > now && sh->nkeys < NGX_CHAT_SHM_MAX_KEYS) {
            break;
        }

        if (k->id_len == 0 && k->expires > now) {
            /* under way: not dropped for room */
            break;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&sh->keys, &k->node);
        ngx_slab_free_locked(ctx->shpool, k);
        sh->nkeys--;
    }

    k = (ngx_chat_shm_key_t *) ngx_str_rbtree_lookup(&sh->keys, name, hash);

    if (k) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (k->id_len == 0 || !k->committed) {
            return NGX_BUSY;
        }

        ngx_memcpy(id->data, k->id, k->id_len);
        id->len = k->id_len;

        return NGX_DECLINED;
    }

    k = ngx_chat_shm_alloc(ctx, sizeof(ngx_chat_shm_key_t) + name->len);
    if (k == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_ERROR;
    }

    k->name.data = (u_char *) k + sizeof(ngx_chat_shm_key_t);
    k->name.len = name->len;
    ngx_memcpy(k->name.data, name->data, name->len);
    k->node.key = hash;
    k->expires = now + NGX_CHAT_SHM_KEY_TTL;
    k->id_len = 0;
    k->committed = 0;

    ngx_rbtree_insert(&sh->keys, &k->node);
    ngx_queue_insert_tail(&sh->keys_queue, &k->queue);
    sh->nkeys++;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


/*
 * the taken key's publish: its id, committed or not yet (id NULL: it
 * failed, the key goes); then, with storage, ngx_chat_shm_key_commit()
 */

void
ngx_chat_shm_key_set(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_str_t *id,
    ngx_uint_t committed)
{
    uint32_t             hash;
    ngx_chat_shm_t      *sh;
    ngx_chat_shm_key_t  *k;

    sh = ctx->sh;
    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    k = (ngx_chat_shm_key_t *) ngx_str_rbtree_lookup(&sh->keys, name, hash);

    if (k && k->id_len == 0) {
        if (id) {
            k->id_len = ngx_min(id->len, NGX_CHAT_ID_LEN);
            ngx_memcpy(k->id, id->data, k->id_len);
            k->committed = committed;

        } else {
            ngx_queue_remove(&k->queue);
            ngx_rbtree_delete(&sh->keys, &k->node);
            ngx_slab_free_locked(ctx->shpool, k);
            sh->nkeys--;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * the key's message is committed; or storage refused it (refused): the
 * key goes, so that a retry publishes again
 */

void
ngx_chat_shm_key_commit(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t refused)
{
    uint32_t             hash;
    ngx_chat_shm_t      *sh;
    ngx_chat_shm_key_t  *k;

    sh = ctx->sh;
    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    k = (ngx_chat_shm_key_t *) ngx_str_rbtree_lookup(&sh->keys, name, hash);

    if (k && k->id_len) {
        if (refused) {
            ngx_queue_remove(&k->queue);
            ngx_rbtree_delete(&sh->keys, &k->node);
            ngx_slab_free_locked(ctx->shpool, k);
            sh->nkeys--;

        } else {
            k->committed = 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
