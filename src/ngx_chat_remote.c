
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


static ngx_int_t ngx_chat_remote_server_slot(ngx_chat_shm_ctx_t *ctx,
    uint64_t server, ngx_uint_t create);



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
ngx_chat_remote_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from)
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
        *from = ngx_max(sh->bus.relay_pos, sh->bus.tail);

        if (*from > sh->bus.head || *from == 0) {
            *from = sh->bus.head;
        }

        ctx->bus.relay = 1;
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

    ctx->bus.relay = 0;
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


ngx_uint_t
ngx_chat_remote_expire(ngx_chat_shm_ctx_t *ctx, ngx_msec_t timeout,
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
ngx_chat_remote_message(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id, u_char *json, size_t len)
{
    ngx_int_t             rc;
    ngx_chat_shm_msg_t   *msg;
    ngx_chat_shm_room_t  *room;

    if (id->len == 0 || id->len > NGX_CHAT_ID_LEN) {
        return NGX_DECLINED;
    }


    ngx_shmtx_lock(&ctx->shpool->mutex);

    room = ngx_chat_shm_room_lookup(ctx, name);

    if (room == NULL || room->nconns == 0) {
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_chat_shm_hist_find(room, id) >= 0) {
        /* a publish retried after a lost connection */
        rc = NGX_DECLINED;
        goto done;
    }

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
