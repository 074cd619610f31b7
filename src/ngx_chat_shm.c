
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The shared zone: rooms, members, users, rate buckets, recent history and
 * the bus.  All functions take the slab pool's mutex themselves and do no
 * I/O while holding it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_json.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_ws.h"


#define ngx_chat_shm_align(n)   (((n) + 7) & ~((size_t) 7))


static void *ngx_chat_shm_alloc(ngx_chat_shm_ctx_t *ctx, size_t size);
static ngx_chat_shm_user_t *ngx_chat_shm_user_get(ngx_chat_shm_ctx_t *ctx,
    ngx_rbtree_t *tree, ngx_str_t *name, ngx_uint_t create);
static void ngx_chat_shm_user_free(ngx_chat_shm_ctx_t *ctx,
    ngx_rbtree_t *tree, ngx_chat_shm_user_t *u);
static ngx_int_t ngx_chat_shm_user_add(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_user_t *u, ngx_uint_t slot, ngx_int_t delta);
static ngx_chat_shm_room_t *ngx_chat_shm_room_get(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *name, ngx_uint_t keep);
static void ngx_chat_shm_room_free(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
static void ngx_chat_shm_room_release(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
static void ngx_chat_shm_room_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_str_t *user, ngx_uint_t slot,
    ngx_uint_t count);
static ngx_int_t ngx_chat_shm_presence(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *user, ngx_uint_t join);
static ngx_int_t ngx_chat_shm_bus_append(ngx_chat_shm_ctx_t *ctx,
    ngx_uint_t kind, ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user,
    ngx_str_t *id, u_char *json, size_t len);
static ngx_chat_buf_t *ngx_chat_shm_history_frame(ngx_chat_shm_room_t *room,
    ngx_str_t *name, ngx_uint_t from, ngx_uint_t n, ngx_uint_t complete,
    ngx_log_t *log);
static ngx_int_t ngx_chat_shm_find(ngx_chat_shm_room_t *room,
    ngx_str_t *id);
static void ngx_chat_shm_reap_slot(ngx_chat_shm_ctx_t *ctx, ngx_uint_t slot);
static ngx_uint_t ngx_chat_shm_local_count(ngx_chat_shm_user_t *u);
static void ngx_chat_shm_relay_event(ngx_chat_shm_ctx_t *ctx,
    ngx_uint_t kind, ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user);
static void ngx_chat_shm_remote_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_chat_shm_user_t *u, ngx_uint_t slot,
    ngx_uint_t notify);
static ngx_int_t ngx_chat_shm_server_slot(ngx_chat_shm_ctx_t *ctx,
    uint64_t server, ngx_uint_t create);
static u_char *ngx_chat_shm_scratch(size_t size);
static void ngx_chat_shm_hist_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
static void ngx_chat_shm_hist_push(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_chat_shm_msg_t *msg);
static ngx_chat_shm_ring_t *ngx_chat_shm_ring_copy_locked(
    ngx_chat_shm_room_t *room);
static uint64_t ngx_chat_shm_bus_scan_locked(ngx_chat_shm_ctx_t *ctx,
    uint64_t pos, ngx_chat_shm_bus_pt handler);
static uint64_t ngx_chat_shm_bus_walk(ngx_chat_shm_ctx_t *ctx,
    uint64_t from, uint64_t to, u_char *copy, ngx_chat_shm_bus_pt handler);


static u_char  *ngx_chat_shm_scratch_buf;
static size_t   ngx_chat_shm_scratch_size;


ngx_int_t
ngx_chat_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_chat_shm_ctx_t  *octx = data;

    size_t               len;
    ngx_chat_shm_t      *sh;
    ngx_chat_shm_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* nginx -s reload with the same size: keep everything */
        ctx->sh = octx->sh;
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

    /* this server's identity for the relay: random, new on each start */
    sh->server_id = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
                    ^ ((uint64_t) ngx_pid << 16) ^ (uint64_t) ngx_time();

    ngx_rbtree_init(&sh->rooms, &sh->rooms_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_rbtree_init(&sh->users, &sh->users_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->empty);
    ngx_queue_init(&sh->idle);

    sh->bus_size = ngx_chat_shm_bus_size(shm_zone->shm.size,
                                         ctx->max_message);
    if (sh->bus_size == 0) {
        return NGX_ERROR;
    }

    sh->bus = ngx_slab_alloc(ctx->shpool, sh->bus_size);
    if (sh->bus == NULL) {
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


size_t
ngx_chat_shm_bus_size(size_t zone_size, size_t max_message)
{
    size_t  size, need;

    /* an entry: the message as JSON, its room, user, id and headers */

    need = 4 * (max_message + 2048);

    size = zone_size / 4;
    size = ngx_max(size, 64 * 1024);
    size = ngx_min(size, 16 * 1024 * 1024);
    size = ngx_max(size, need);

    if (size > zone_size / 2) {
        return 0;
    }

    return size & ~((size_t) 7);
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


/*
 * Allocation with eviction: rooms kept only for their history and users
 * kept only for their rate buckets go first, oldest first.
 */

static void *
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

        if (!ngx_queue_empty(&sh->idle)) {
            q = ngx_queue_head(&sh->idle);
            u = ngx_queue_data(q, ngx_chat_shm_user_t, idle);
            ngx_chat_shm_user_free(ctx, &sh->users, u);
            continue;
        }

        if (!ngx_queue_empty(&sh->empty)) {
            q = ngx_queue_head(&sh->empty);
            room = ngx_queue_data(q, ngx_chat_shm_room_t, lru);
            ngx_chat_shm_room_free(ctx, room);
            continue;
        }

        (void) ngx_atomic_fetch_add(&sh->zone_full, 1);

        return NULL;
    }
}


static ngx_chat_shm_user_t *
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


static void
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


/* counts a connection (delta 1) or its end (delta -1) on a worker slot */

static ngx_int_t
ngx_chat_shm_user_add(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_user_t *u,
    ngx_uint_t slot, ngx_int_t delta)
{
    ngx_uint_t            i, cap;
    ngx_chat_shm_slot_t  *s;

    for (i = 0; i < u->nslots; i++) {
        if (u->slots[i].slot == slot) {
            break;
        }
    }

    if (i == u->nslots) {

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
    size_t                size;
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

    keep--;

    size = sizeof(ngx_chat_shm_room_t) + keep * sizeof(ngx_chat_shm_msg_t *)
           + name->len;

    room = ngx_chat_shm_alloc(ctx, size);
    if (room == NULL) {
        return NULL;
    }

    ngx_memzero(room, sizeof(ngx_chat_shm_room_t));

    room->hist = (ngx_chat_shm_msg_t **) ((u_char *) room
                                          + sizeof(ngx_chat_shm_room_t));
    room->hist_cap = keep;

    room->name.data = (u_char *) (room->hist + keep);
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
    ngx_uint_t  i;

    if (room->in_lru) {
        ngx_queue_remove(&room->lru);
    }

    for (i = 0; i < room->hist_n; i++) {
        ngx_slab_free_locked(ctx->shpool,
                             room->hist[(room->hist_head + i)
                                        % room->hist_cap]);
    }

    ngx_rbtree_delete(&ctx->sh->rooms, &room->node);
    ngx_slab_free_locked(ctx->shpool, room);
}


/* a room left without members is kept for its history, or freed */

static void
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
    ngx_int_t             found;
    ngx_uint_t            n, complete, created;
    ngx_chat_shm_t       *sh;
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
    res->bus_pos = sh->bus_head;
    res->room = room;

    if (ctx->store
        && ((since && ngx_chat_shm_find(room, since) < 0)
            || (!since && history > 0
                && room->hist_n < (ngx_uint_t) history)))
    {
        /* older than the ring: storage answers, with the ring merged */

        res->ring = ngx_chat_shm_ring_copy_locked(room);
        if (res->ring == NULL) {
            goto history_failed;
        }

    } else if (since) {
        found = ngx_chat_shm_find(room, since);

        if (found >= 0) {
            n = room->hist_n - found - 1;
            complete = 1;

        } else {
            n = room->hist_n;
            complete = 0;
        }

        res->history = ngx_chat_shm_history_frame(room, name,
                                                  room->hist_n - n, n,
                                                  complete, log);
        if (res->history == NULL) {
            goto history_failed;
        }

    } else if (history >= 0) {
        n = ngx_min((ngx_uint_t) history, room->hist_n);
        complete = (n == (ngx_uint_t) history || room->total == room->hist_n);

        res->history = ngx_chat_shm_history_frame(room, name,
                                                  room->hist_n - n, n,
                                                  complete, log);
        if (res->history == NULL) {
            goto history_failed;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;

history_failed:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_chat_shm_leave(ctx, name, user);

    return NGX_ERROR;

failed:

    ngx_chat_shm_room_release(ctx, room);

full:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "chat: zone \"%V\" is full, join refused", &ctx->name);

    return NGX_DECLINED;
}


ngx_uint_t
ngx_chat_shm_members(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    uint32_t              hash;
    ngx_uint_t            n;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);
    n = room ? room->nusers : 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


void
ngx_chat_shm_leave(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_str_t *user)
{
    uint32_t              hash;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);
    if (room) {
        ngx_chat_shm_room_drop(ctx, room, user, ctx->wslot, 1);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* removes count connections of user on slot from the room; locked */

static void
ngx_chat_shm_room_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_str_t *user, ngx_uint_t slot, ngx_uint_t count)
{
    ngx_uint_t            i, local;
    ngx_chat_shm_user_t  *u;

    u = ngx_chat_shm_user_get(ctx, &room->users, user, 0);
    if (u == NULL) {
        return;
    }

    for (i = 0; i < u->nslots; i++) {
        if (u->slots[i].slot == slot) {
            break;
        }
    }

    if (i == u->nslots) {
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


static ngx_uint_t
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


/* an entry only the relay reads; nothing without a relay.  Locked */

static void
ngx_chat_shm_relay_event(ngx_chat_shm_ctx_t *ctx, ngx_uint_t kind,
    ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user)
{
    if (ctx->id_tag.len == 0) {
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


static ngx_int_t
ngx_chat_shm_presence(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user, ngx_uint_t join)
{
    u_char  *p, *start;
    size_t   len;

    len = sizeof("{\"type\":\"presence\",\"room\":,\"user\":,\"event\":"
                 "\"leave\"}") - 1
          + ngx_chat_json_str_len(room) + ngx_chat_json_str_len(user);

    start = ngx_chat_shm_scratch(len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(start, "{\"type\":\"presence\",\"room\":",
                   sizeof("{\"type\":\"presence\",\"room\":") - 1);
    p = ngx_chat_json_str(p, room);
    p = ngx_cpymem(p, ",\"user\":", sizeof(",\"user\":") - 1);
    p = ngx_chat_json_str(p, user);

    if (join) {
        p = ngx_cpymem(p, ",\"event\":\"join\"}",
                       sizeof(",\"event\":\"join\"}") - 1);
    } else {
        p = ngx_cpymem(p, ",\"event\":\"leave\"}",
                       sizeof(",\"event\":\"leave\"}") - 1);
    }

    return ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_PRESENCE,
                                   join ? 0 : NGX_CHAT_BUS_LEAVE, room, user,
                                   NULL, start, p - start);
}


ngx_int_t
ngx_chat_shm_post(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, void *hint,
    ngx_str_t *user, ngx_str_t *content, ngx_uint_t rate, ngx_uint_t burst,
    ngx_str_t *id, uint64_t *ts, ngx_msec_t *retry_ms, ngx_log_t *log)
{
    u_char               *p, *start, *id_at;
    size_t                len, tail;
    ngx_str_t             ids;
    uint32_t              hash;
    uint64_t              msg_id, now_ms;
    ngx_int_t             excess;
    ngx_msec_t            now;
    ngx_msec_int_t        elapsed;
    ngx_time_t           *tp;
    ngx_chat_shm_t       *sh;
    ngx_chat_shm_msg_t   *msg;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;
    tp = ngx_timeofday();
    now_ms = (uint64_t) tp->sec * 1000 + tp->msec;
    now = ngx_current_msec;

    /*
     * {"type":"message","room":R,"id":"ID","user":U,"content":C,"ts":T}
     * built outside the lock but for the id
     */

    len = sizeof("{\"type\":\"message\",\"room\":,\"id\":\"\",\"user\":,"
                 "\"content\":,\"ts\":}") - 1
          + ngx_chat_json_str_len(name) + NGX_CHAT_ID_LEN
          + ngx_chat_json_str_len(user) + ngx_chat_json_str_len(content)
          + NGX_INT64_LEN;

    start = ngx_chat_shm_scratch(len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    /* the tail after the id is written at the end of the scratch buffer */

    p = ngx_cpymem(start, "{\"type\":\"message\",\"room\":",
                   sizeof("{\"type\":\"message\",\"room\":") - 1);
    p = ngx_chat_json_str(p, name);
    p = ngx_cpymem(p, ",\"id\":\"", sizeof(",\"id\":\"") - 1);
    id_at = p;

    p += NGX_CHAT_ID_LEN;
    tail = (size_t) (p - start);

    p = ngx_cpymem(p, "\",\"user\":", sizeof("\",\"user\":") - 1);
    p = ngx_chat_json_str(p, user);
    p = ngx_cpymem(p, ",\"content\":", sizeof(",\"content\":") - 1);
    p = ngx_chat_json_str(p, content);
    p = ngx_sprintf(p, ",\"ts\":%uL}", now_ms);

    tail = (size_t) (p - start) - tail;     /* bytes after the id */

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /*
     * the sender's room from its join (a room with members is never freed),
     * checked all the same; it saves a tree walk of the zone's rooms under
     * the lock for every message (perf: ngx_str_rbtree_lookup was the
     * largest user-space cost of the workers at 1,000 rooms)
     */

    room = hint;

    if (room == NULL
        || room->node.key != hash
        || room->name.len != name->len
        || ngx_memcmp(room->name.data, name->data, name->len) != 0)
    {
        room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&sh->rooms,
                                                             name, hash);
        if (room == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_DECLINED;
        }
    }

    if (rate) {
        u = ngx_chat_shm_user_get(ctx, &sh->users, user, 0);

        if (u) {
            /* u->last is kept modulo 2^32 ms (~49.7 days) */
            elapsed = (int32_t) ((uint32_t) now - u->last);

            if (u->used && elapsed >= -60000) {
                /*
                 * workers' cached clocks differ a little: a send recorded
                 * "later" by another worker counts as now (far "later" is
                 * a bucket idle for over 24 days: a full one)
                 */

                if (elapsed < 0) {
                    elapsed = 0;
                }

                excess = (ngx_int_t) u->excess
                         - (ngx_int_t) (rate * elapsed / 1000) + 1000;

                if (excess < 0) {
                    excess = 0;
                }

            } else {
                excess = 0;
            }

            if ((ngx_uint_t) excess > burst) {
                /* rounded up: waiting that long is always enough */
                *retry_ms = ((excess - burst) * 1000 + rate - 1) / rate;
                (void) ngx_atomic_fetch_add(&sh->rate_limited, 1);
                ngx_shmtx_unlock(&ctx->shpool->mutex);
                return NGX_BUSY;
            }

            u->excess = (uint32_t) excess;
            u->last = (uint32_t) now;
            u->used = 1;
        }
    }

    msg_id = ngx_max(sh->last_id + 1, now_ms * 1000);

    /* the id, then the tail moved to follow it */

    p = ngx_sprintf(id_at, "%uL%V", msg_id, &ctx->id_tag);
    ids.data = id_at;
    ids.len = p - id_at;
    ngx_memmove(p, id_at + NGX_CHAT_ID_LEN, tail);
    len = (size_t) (p + tail - start);

    msg = NULL;

    if (room->hist_cap) {
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

    if (ngx_chat_shm_bus_append(ctx, NGX_CHAT_BUS_MESSAGE, 0, name, NULL,
                                &ids, start, len)
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

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->messages_in, 1);

    return NGX_OK;
}


/* a room's ring of recent messages; locked */

static void
ngx_chat_shm_hist_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    ngx_slab_free_locked(ctx->shpool, room->hist[room->hist_head]);
    room->hist_head = (room->hist_head + 1) % room->hist_cap;
    room->hist_n--;
}


static void
ngx_chat_shm_hist_push(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_chat_shm_msg_t *msg)
{
    if (room->hist_n == room->hist_cap) {
        ngx_chat_shm_hist_drop(ctx, room);
    }

    room->hist[(room->hist_head + room->hist_n) % room->hist_cap] = msg;
    room->hist_n++;
}


/* index of the history message with this id, or -1 */

static ngx_int_t
ngx_chat_shm_find(ngx_chat_shm_room_t *room, ngx_str_t *id)
{
    ngx_int_t            i;
    ngx_chat_shm_msg_t  *msg;

    for (i = (ngx_int_t) room->hist_n - 1; i >= 0; i--) {
        msg = room->hist[(room->hist_head + i) % room->hist_cap];

        if (msg->id_len == id->len
            && ngx_memcmp(msg->id, id->data, id->len) == 0)
        {
            return i;
        }
    }

    return -1;
}


/* the history reply of messages from..from+n of the ring; locked */

static ngx_chat_buf_t *
ngx_chat_shm_history_frame(ngx_chat_shm_room_t *room, ngx_str_t *name,
    ngx_uint_t from, ngx_uint_t n, ngx_uint_t complete, ngx_log_t *log)
{
    u_char              *p;
    ngx_str_t           *msgs;
    ngx_uint_t           i;
    ngx_chat_buf_t      *b;
    ngx_chat_shm_msg_t  *msg;

    msgs = ngx_alloc((n ? n : 1) * sizeof(ngx_str_t), log);
    if (msgs == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        msg = room->hist[(room->hist_head + from + i) % room->hist_cap];
        msgs[i].data = msg->data;
        msgs[i].len = msg->len;
    }

    b = ngx_chat_ws_frame_start(ngx_chat_json_history_len(name, msgs, n), &p,
                                log);
    if (b) {
        p = ngx_chat_json_history(p, name, msgs, n, complete);
        ngx_chat_ws_frame_end(b, p);
    }

    ngx_free(msgs);

    return b;
}


ngx_chat_buf_t *
ngx_chat_shm_history(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t limit, ngx_str_t *before, ngx_chat_shm_ring_t **ring,
    ngx_log_t *log)
{
    uint32_t              hash;
    ngx_int_t             end;
    ngx_uint_t            n, complete;
    ngx_chat_buf_t       *b;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);
    if (room == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    if (before) {
        end = ngx_chat_shm_find(room, before);

    } else {
        end = room->hist_n;
    }

    if (ctx->store && (end < 0 || (ngx_uint_t) end < limit)) {
        *ring = ngx_chat_shm_ring_copy_locked(room);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    if (end < 0) {
        /* an id we no longer have, or never had */
        n = 0;
        complete = 0;

    } else {
        n = ngx_min(limit, (ngx_uint_t) end);
        complete = (n == limit
                    || room->total == room->hist_n);
    }

    b = ngx_chat_shm_history_frame(room, name, (end < 0) ? 0 : end - n, n,
                                   complete, log);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return b;
}


ngx_chat_shm_ring_t *
ngx_chat_shm_ring_copy(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name)
{
    uint32_t              hash;
    ngx_chat_shm_ring_t  *ring;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);

    ring = ngx_chat_shm_ring_copy_locked(room);

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


/* {"type":"who","room":R,"users":[...]} */

ngx_chat_buf_t *
ngx_chat_shm_who(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name, ngx_log_t *log)
{
    u_char               *p;
    size_t                len, hlen;
    uint32_t              hash;
    ngx_uint_t            first;
    ngx_chat_buf_t       *b;
    ngx_rbtree_node_t    *node, *root, *sentinel;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);

    len = sizeof("{\"type\":\"who\",\"room\":,\"users\":[]}") - 1
          + ngx_chat_json_str_len(name);

    root = room ? room->users.root : NULL;
    sentinel = room ? room->users.sentinel : NULL;

    if (room && root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&room->users, node))
        {
            u = (ngx_chat_shm_user_t *) node;
            len += ngx_chat_json_str_len(&u->name) + 1;
        }
    }

    hlen = ngx_chat_frame_header_size(len);

    b = ngx_chat_buf_alloc(hlen + len, log);
    if (b == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    p = b->data + hlen;
    p = ngx_cpymem(p, "{\"type\":\"who\",\"room\":",
                   sizeof("{\"type\":\"who\",\"room\":") - 1);
    p = ngx_chat_json_str(p, name);
    p = ngx_cpymem(p, ",\"users\":[", sizeof(",\"users\":[") - 1);

    first = 1;

    if (room && root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&room->users, node))
        {
            u = (ngx_chat_shm_user_t *) node;

            if (!first) {
                *p++ = ',';
            }

            first = 0;
            p = ngx_chat_json_str(p, &u->name);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    p = ngx_cpymem(p, "]}", 2);

    len = p - (b->data + hlen);
    (void) ngx_chat_frame_header(b->data, NGX_CHAT_FRAME_TEXT, len);
    b->len = hlen + len;

    return b;
}


/*
 * The bus: a byte ring of entries addressed by absolute positions.  The
 * writer overwrites the oldest entries; a reader that finds its position
 * below the tail knows it lost them.  Locked.
 */

static ngx_int_t
ngx_chat_shm_bus_append(ngx_chat_shm_ctx_t *ctx, ngx_uint_t kind,
    ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user, ngx_str_t *id,
    u_char *json, size_t jlen)
{
    u_char                *p;
    size_t                 len, hlen, phys;
    uint64_t               end;
    ngx_uint_t             i;
    ngx_chat_shm_t        *sh;
    ngx_chat_bus_entry_t  *e;

    sh = ctx->sh;

    hlen = ngx_chat_frame_header_size(jlen);

    len = ngx_chat_shm_align(sizeof(ngx_chat_bus_entry_t) + room->len
                             + (user ? user->len : 0) + (id ? id->len : 0)
                             + hlen + jlen);

    if (len > sh->bus_size / 4) {
        return NGX_ERROR;
    }

    phys = sh->bus_head % sh->bus_size;

    end = sh->bus_head + len;

    if (phys + len > sh->bus_size) {
        end += sh->bus_size - phys;
    }

    /* drop the entries the new one overwrites */

    while (sh->bus_tail + sh->bus_size < end) {
        i = sh->bus_tail % sh->bus_size;
        e = (ngx_chat_bus_entry_t *) (sh->bus + i);

        if (i + sizeof(ngx_chat_bus_entry_t) > sh->bus_size || e->len == 0) {
            sh->bus_tail += sh->bus_size - i;

        } else {
            sh->bus_tail += e->len;
        }
    }

    if (phys + len > sh->bus_size) {
        if (phys + sizeof(ngx_chat_bus_entry_t) <= sh->bus_size) {
            e = (ngx_chat_bus_entry_t *) (sh->bus + phys);
            e->len = 0;
        }

        sh->bus_head += sh->bus_size - phys;
        phys = 0;
    }

    e = (ngx_chat_bus_entry_t *) (sh->bus + phys);
    e->len = (uint32_t) len;
    e->kind = (uint8_t) kind;
    e->flags = (uint8_t) flags;
    e->room_len = (uint16_t) room->len;
    e->user_len = user ? (uint32_t) user->len : 0;
    e->id_len = id ? (uint32_t) id->len : 0;
    e->frame_len = (uint32_t) (hlen + jlen);

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);
    p = ngx_cpymem(p, room->data, room->len);

    if (user) {
        p = ngx_cpymem(p, user->data, user->len);
    }

    if (id) {
        p = ngx_cpymem(p, id->data, id->len);
    }

    p += ngx_chat_frame_header(p, NGX_CHAT_FRAME_TEXT, jlen);
    ngx_memcpy(p, json, jlen);

    sh->bus_head += len;

    /* wake the other workers, once until they read */

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {
        if (!sh->workers[i].active || sh->workers[i].notified
            || (ngx_int_t) i == ctx->wslot)
        {
            continue;
        }

        sh->workers[i].notified = 1;

        if (ctx->nnotify < NGX_CHAT_MAX_WORKERS) {
            ctx->notify[ctx->nnotify++] = sh->workers[i].pid;
        }
    }

    return NGX_OK;
}


/*
 * The new entries are copied out under the lock with at most two memcpy()s
 * and handed to the handler after it is released: the handler (room lookup,
 * buffer allocation, copy) then runs without holding up the other workers.
 * Measured with perf on W2 (bench/, 10,000 connections, 5,000 msg/s): the
 * handler under the lock had the workers spinning in ngx_shmtx_lock().
 */

uint64_t
ngx_chat_shm_bus_read(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_bus_pt handler,
    ngx_log_t *log)
{
    u_char          *copy;
    size_t           phys, len, first, cap;
    uint64_t         lost, from, head;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    lost = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sh->workers[ctx->wslot].notified = 0;

    from = ctx->bus_read;

    if (from < sh->bus_tail) {
        lost = sh->bus_tail - from;
        from = sh->bus_tail;
    }

    head = sh->bus_head;

    if (head < from) {
        /* ahead of the bus (as the walk leaves it): nothing to read */
        head = from;
    }

    len = (size_t) (head - from);

    if (len > ctx->bus_copy_cap) {
        cap = ngx_max(len, ngx_max(2 * ctx->bus_copy_cap, 16384));
        cap = ngx_min(cap, ngx_max(sh->bus_size, len));

        copy = ngx_alloc(cap, log);

        if (copy == NULL) {
            /* no memory: the handler runs under the lock, as it can */
            ctx->bus_read = ngx_chat_shm_bus_walk(ctx, from, head, NULL,
                                                  handler);

            if (ctx->relay) {
                sh->relay_pos = ctx->bus_read;
            }

            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return lost;
        }

        if (ctx->bus_copy) {
            ngx_free(ctx->bus_copy);
        }

        ctx->bus_copy = copy;
        ctx->bus_copy_cap = cap;
    }

    if (len) {
        /* logical byte "pos" goes to bus_copy[pos - from] */
        phys = (size_t) (from % sh->bus_size);
        first = ngx_min(len, sh->bus_size - phys);

        ngx_memcpy(ctx->bus_copy, sh->bus + phys, first);

        if (first < len) {
            ngx_memcpy(ctx->bus_copy + first, sh->bus, len - first);
        }
    }

    ctx->bus_read = head;

    if (ctx->relay) {
        sh->relay_pos = head;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    (void) ngx_chat_shm_bus_walk(ctx, from, head, ctx->bus_copy, handler);

    return lost;
}


uint64_t
ngx_chat_shm_bus_scan(ngx_chat_shm_ctx_t *ctx, uint64_t from,
    ngx_chat_shm_bus_pt handler)
{
    uint64_t  pos;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    pos = ngx_chat_shm_bus_scan_locked(ctx, from, handler);
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return pos;
}


static uint64_t
ngx_chat_shm_bus_scan_locked(ngx_chat_shm_ctx_t *ctx, uint64_t pos,
    ngx_chat_shm_bus_pt handler)
{
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;

    if (pos < sh->bus_tail) {
        pos = sh->bus_tail;
    }

    return ngx_chat_shm_bus_walk(ctx, pos, sh->bus_head, NULL, handler);
}


/*
 * The entries from "from" to "to": in the bus itself (locked), or in a copy
 * of that stretch of it, where logical byte "pos" is copy[pos - from]
 */

static uint64_t
ngx_chat_shm_bus_walk(ngx_chat_shm_ctx_t *ctx, uint64_t from, uint64_t to,
    u_char *copy, ngx_chat_shm_bus_pt handler)
{
    size_t                 phys;
    uint64_t               pos;
    ngx_chat_shm_t        *sh;
    ngx_chat_bus_entry_t  *e;

    sh = ctx->sh;

    for (pos = from; pos < to; /* void */) {
        phys = (size_t) (pos % sh->bus_size);
        e = (ngx_chat_bus_entry_t *) (copy ? copy + (pos - from)
                                           : sh->bus + phys);

        if (phys + sizeof(ngx_chat_bus_entry_t) > sh->bus_size
            || e->len == 0)
        {
            pos += sh->bus_size - phys;
            continue;
        }

        handler(ctx, pos, e);

        pos += e->len;
    }

    return pos;
}


ngx_int_t
ngx_chat_shm_worker_attach(ngx_chat_shm_ctx_t *ctx, ngx_log_t *log)
{
    ngx_uint_t       i;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {
        if (!sh->workers[i].active) {
            break;
        }
    }

    if (i == NGX_CHAT_MAX_WORKERS) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat: zone \"%V\" has no free worker slot, "
                      "at most %d workers", &ctx->name,
                      NGX_CHAT_MAX_WORKERS);
        return NGX_ERROR;
    }

    sh->workers[i].active = 1;
    sh->workers[i].pid = ngx_pid;
    sh->workers[i].notified = 0;
    sh->workers[i].connections = 0;

    ctx->wslot = i;
    ctx->bus_read = sh->bus_head;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


void
ngx_chat_shm_worker_detach(ngx_chat_shm_ctx_t *ctx)
{
    if (ctx->wslot < 0) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_chat_shm_reap_slot(ctx, ctx->wslot);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ctx->wslot = -1;

    if (ctx->bus_copy) {
        ngx_free(ctx->bus_copy);
        ctx->bus_copy = NULL;
        ctx->bus_copy_cap = 0;
    }
}


ngx_uint_t
ngx_chat_shm_reap(ngx_chat_shm_ctx_t *ctx, ngx_log_t *log)
{
    ngx_uint_t       i, n;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {

        if (!sh->workers[i].active || (ngx_int_t) i == ctx->wslot) {
            continue;
        }

        if (kill(sh->workers[i].pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "chat: removing the members of exited worker %P "
                          "from zone \"%V\"", sh->workers[i].pid,
                          &ctx->name);

            ngx_chat_shm_reap_slot(ctx, i);
            n++;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/* removes everything a worker slot holds; locked */

static void
ngx_chat_shm_reap_slot(ngx_chat_shm_ctx_t *ctx, ngx_uint_t slot)
{
    ngx_uint_t            i, count;
    ngx_chat_shm_t       *sh;
    ngx_rbtree_node_t    *node, *next, *unode, *unext;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    sh = ctx->sh;

    if (sh->rooms.root != sh->rooms.sentinel) {

        for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
             node;
             node = next)
        {
            next = ngx_rbtree_next(&sh->rooms, node);
            room = (ngx_chat_shm_room_t *) node;

            if (room->users.root == room->users.sentinel) {
                continue;
            }

            for (unode = ngx_rbtree_min(room->users.root,
                                        room->users.sentinel);
                 unode;
                 unode = unext)
            {
                unext = ngx_rbtree_next(&room->users, unode);
                u = (ngx_chat_shm_user_t *) unode;

                for (i = 0; i < u->nslots; i++) {
                    if (u->slots[i].slot == slot) {
                        break;
                    }
                }

                if (i == u->nslots) {
                    continue;
                }

                if (slot >= NGX_CHAT_REMOTE_SLOT) {
                    ngx_chat_shm_remote_drop(ctx, room, u, slot, 1);
                    continue;
                }

                count = u->slots[i].count;

                if (count == u->total && count == room->nconns) {
                    /* the room goes away with this user: find next first */
                    unext = NULL;
                }

                ngx_chat_shm_room_drop(ctx, room, &u->name, slot, count);

                if (unext == NULL) {
                    break;
                }
            }
        }
    }

    if (sh->users.root != sh->users.sentinel) {

        for (node = ngx_rbtree_min(sh->users.root, sh->users.sentinel);
             node;
             node = next)
        {
            next = ngx_rbtree_next(&sh->users, node);
            u = (ngx_chat_shm_user_t *) node;

            for (i = 0; i < u->nslots; i++) {
                if (u->slots[i].slot == slot) {
                    break;
                }
            }

            if (i == u->nslots) {
                continue;
            }

            count = u->slots[i].count;

            while (count--) {
                (void) ngx_chat_shm_user_add(ctx, u, slot, -1);
                sh->connections--;
            }

            if (u->total == 0) {
                sh->users_active--;
                ngx_queue_insert_tail(&sh->idle, &u->idle);
            }
        }
    }

    if (slot < NGX_CHAT_MAX_WORKERS) {
        sh->workers[slot].active = 0;
        sh->workers[slot].notified = 0;
        sh->workers[slot].connections = 0;
    }
}


/* the relay: what other servers tell */


static ngx_int_t
ngx_chat_shm_server_slot(ngx_chat_shm_ctx_t *ctx, uint64_t server,
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


void
ngx_chat_shm_remote_seen(ngx_chat_shm_ctx_t *ctx, uint64_t server)
{
    ngx_int_t  i;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    i = ngx_chat_shm_server_slot(ctx, server, 1);

    if (i != NGX_ERROR) {
        ctx->sh->servers[i].last_seen = ngx_current_msec;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_uint_t
ngx_chat_shm_remote_expire(ngx_chat_shm_ctx_t *ctx, ngx_msec_t timeout,
    ngx_uint_t touch_all)
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
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


ngx_int_t
ngx_chat_shm_remote_message(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id, u_char *json, size_t len)
{
    uint32_t              hash;
    ngx_int_t             rc;
    ngx_chat_shm_msg_t   *msg;
    ngx_chat_shm_room_t  *room;

    if (id->len == 0 || id->len > NGX_CHAT_ID_LEN) {
        return NGX_DECLINED;
    }

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);

    if (room == NULL || room->nconns == 0) {
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_chat_shm_find(room, id) >= 0) {
        /* a publish retried after a lost connection */
        rc = NGX_DECLINED;
        goto done;
    }

    msg = NULL;

    if (room->hist_cap) {
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
                                NGX_CHAT_BUS_REMOTE, name, NULL, id, json, len)
        != NGX_OK)
    {
        if (msg) {
            ngx_slab_free_locked(ctx->shpool, msg);
        }

        rc = NGX_DECLINED;
        goto done;
    }

    if (msg) {
        ngx_chat_shm_hist_push(ctx, room, msg);
    }

    room->total++;
    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_chat_shm_remote_presence(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *user, uint64_t server, ngx_uint_t join)
{
    uint32_t              hash;
    ngx_int_t             i, rc;
    ngx_uint_t            k, slot;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);

    if (room == NULL || room->nconns == 0) {
        goto done;
    }

    i = ngx_chat_shm_server_slot(ctx, server, 1);
    if (i == NGX_ERROR) {
        goto done;
    }

    ctx->sh->servers[i].last_seen = ngx_current_msec;
    slot = NGX_CHAT_REMOTE_SLOT + i;

    u = ngx_chat_shm_user_get(ctx, &room->users, user, join);
    if (u == NULL) {
        goto done;
    }

    for (k = 0; k < u->nslots; k++) {
        if (u->slots[k].slot == slot) {
            break;
        }
    }

    if (join) {
        if (k < u->nslots) {
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

    } else if (k < u->nslots) {
        ngx_chat_shm_remote_drop(ctx, room, u, slot, 1);
    }

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/* a remote server's user leaves a room; locked */

static void
ngx_chat_shm_remote_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_chat_shm_user_t *u, ngx_uint_t slot, ngx_uint_t notify)
{
    ngx_uint_t  k, count;

    for (k = 0; k < u->nslots; k++) {
        if (u->slots[k].slot == slot) {
            break;
        }
    }

    count = (k < u->nslots) ? u->slots[k].count : 0;

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


ngx_array_t *
ngx_chat_shm_local_rooms(ngx_chat_shm_ctx_t *ctx, ngx_pool_t *pool)
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


ngx_array_t *
ngx_chat_shm_local_users(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_pool_t *pool)
{
    uint32_t              hash;
    ngx_str_t            *s;
    ngx_array_t          *a;
    ngx_rbtree_node_t    *node;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    a = ngx_array_create(pool, 16, sizeof(ngx_str_t));
    if (a == NULL) {
        return NULL;
    }

    hash = ngx_crc32_short(name->data, name->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&ctx->sh->rooms,
                                                         name, hash);

    if (room && room->users.root != room->users.sentinel) {
        for (node = ngx_rbtree_min(room->users.root, room->users.sentinel);
             node;
             node = ngx_rbtree_next(&room->users, node))
        {
            u = (ngx_chat_shm_user_t *) node;

            if (ngx_chat_shm_local_count(u) == 0) {
                continue;
            }

            s = ngx_array_push(a);
            if (s == NULL) {
                break;
            }

            s->data = ngx_pstrdup(pool, &u->name);
            s->len = s->data ? u->name.len : 0;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return a;
}


ngx_int_t
ngx_chat_shm_relay_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from)
{
    ngx_int_t        rc;
    ngx_pid_t        owner;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    owner = sh->relay_owner;

    if (owner == 0
        || (owner != ngx_pid && kill(owner, 0) == -1
            && ngx_errno == NGX_ESRCH))
    {
        sh->relay_owner = ngx_pid;
        *from = ngx_max(sh->relay_pos, sh->bus_tail);

        if (*from > sh->bus_head || *from == 0) {
            *from = sh->bus_head;
        }

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


void
ngx_chat_shm_relay_release(ngx_chat_shm_ctx_t *ctx)
{
    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->relay_owner == ngx_pid) {
        ctx->sh->relay_owner = 0;
        ctx->sh->redis_up = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
