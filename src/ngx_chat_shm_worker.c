
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The workers of a zone (see ngx_chat_shm.h): a slot each, and the reaper
 * that removes what a worker that died held, members and connections.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"


ngx_int_t
ngx_chat_shm_worker_attach(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_bus_name_t *name, ngx_log_t *log)
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
    sh->workers[i].connections = 0;

    ctx->wslot = i;
    ngx_chat_bus_attach(&sh->bus, &ctx->bus, i, name);

    /*
     * ids get the tag of this zone's life on this server: unique across
     * the zones and servers that share a database, and across restarts,
     * whatever the clock did meanwhile
     */
    ctx->id_tag.data = ctx->id_tag_data;
    ctx->id_tag.len = ngx_sprintf(ctx->id_tag_data, "-%012xL",
                                  ngx_chat_server_tag(sh->server_id))
                      - ctx->id_tag_data;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat zone: worker %P attached to \"%V\" as slot %ui",
                   ngx_pid, &ctx->name, i);

    return NGX_OK;
}


ngx_uint_t
ngx_chat_shm_worker_known(ngx_chat_shm_ctx_t *ctx, ngx_pid_t pid)
{
    ngx_uint_t       i;
    ngx_chat_shm_t  *sh;

    sh = ctx->sh;

    /*
     * active or not: a slot keeps its worker's pid until it is taken
     * again, and a worker that leaves its slot at exit wakes the others
     * once more
     */

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {
        if (sh->workers[i].pid == pid && pid != 0) {
            return 1;
        }
    }

    return 0;
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

    ngx_chat_bus_reader_free(&ctx->bus);
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

void
ngx_chat_shm_reap_slot(ngx_chat_shm_ctx_t *ctx, ngx_uint_t slot)
{
    ngx_int_t             i;
    ngx_uint_t            count;
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

                i = ngx_chat_shm_user_slot(u, slot);

                if (i < 0) {
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

            i = ngx_chat_shm_user_slot(u, slot);

            if (i < 0) {
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
        sh->workers[slot].connections = 0;
        ngx_chat_bus_detach(&sh->bus, slot);
    }
}
