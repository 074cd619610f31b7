
/*
 * Copyright (C) ngx_chat_module authors
 *
 * A room's ring of recent messages, in the zone (see ngx_chat_shm_int.h):
 * it grows with the room's messages up to chat_history (an empty room
 * costs the same whatever chat_history is), and an index by id (open
 * addressing with linear probing, twice the ring's slots) finds a message
 * for "since" and "before" in O(1), where a scan of up to 100,000 entries
 * under the zone's lock held up every worker.  Ids are not ordered in the
 * ring once other servers' messages are in it, so a binary search would
 * not do.  All functions are called with the zone's mutex held.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"


#define NGX_CHAT_SHM_HIST_MIN     8


static ngx_int_t ngx_chat_shm_hist_grow(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
static void ngx_chat_shm_hist_index(ngx_chat_shm_room_t *room,
    ngx_uint_t phys);
static void ngx_chat_shm_hist_unindex(ngx_chat_shm_room_t *room,
    ngx_uint_t phys);


#define ngx_chat_shm_hist_hash(data, len)  ngx_crc32_short(data, len)


void
ngx_chat_shm_hist_push(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room,
    ngx_chat_shm_msg_t *msg)
{
    ngx_uint_t  phys;

    if (room->hist_n == room->hist_cap
        && (room->hist_cap == room->hist_max
            || ngx_chat_shm_hist_grow(ctx, room) != NGX_OK))
    {
        if (room->hist_n == 0) {
            /* no ring at all: no memory for one */
            ngx_slab_free_locked(ctx->shpool, msg);
            return;
        }

        ngx_chat_shm_hist_drop(ctx, room);
    }

    msg->hash = ngx_chat_shm_hist_hash(msg->id, msg->id_len);
    msg->refs = 1;

    phys = (room->hist_head + room->hist_n) % room->hist_cap;
    room->hist[phys] = msg;
    room->hist_n++;

    ngx_chat_shm_hist_index(room, phys);
}


void
ngx_chat_shm_hist_drop(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    ngx_chat_shm_hist_unindex(room, room->hist_head);

    ngx_chat_shm_msg_release(ctx, room->hist[room->hist_head]);
    room->hist_head = (room->hist_head + 1) % room->hist_cap;
    room->hist_n--;
}


void
ngx_chat_shm_hist_free(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    ngx_uint_t  i;

    for (i = 0; i < room->hist_n; i++) {
        ngx_chat_shm_msg_release(ctx, room->hist[(room->hist_head + i)
                                                 % room->hist_cap]);
    }

    if (room->hist) {
        ngx_slab_free_locked(ctx->shpool, room->hist);
        ngx_slab_free_locked(ctx->shpool, room->index);
    }

    room->hist = NULL;
    room->index = NULL;
    room->hist_cap = 0;
    room->hist_n = 0;
    room->hist_head = 0;
}


/*
 * The ring holds a reference to each of its messages; a history reply
 * being written outside the lock holds one too, so that a message dropped
 * from the ring meanwhile stays until the reply is written
 */

void
ngx_chat_shm_msg_release(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_msg_t *msg)
{
    if (--msg->refs == 0) {
        ngx_slab_free_locked(ctx->shpool, msg);
    }
}


/* the position (0: oldest) of the message with this id, or -1 */

ngx_int_t
ngx_chat_shm_hist_find(ngx_chat_shm_room_t *room, ngx_str_t *id)
{
    uint32_t             hash;
    ngx_uint_t           i, mask, phys;
    ngx_chat_shm_msg_t  *msg;

    if (room->hist_n == 0) {
        return -1;
    }

    hash = ngx_chat_shm_hist_hash(id->data, id->len);
    mask = room->index_size - 1;

    for (i = hash & mask; room->index[i]; i = (i + 1) & mask) {
        phys = room->index[i] - 1;
        msg = room->hist[phys];

        if (msg->hash == hash
            && msg->id_len == id->len
            && ngx_memcmp(msg->id, id->data, id->len) == 0)
        {
            return (phys + room->hist_cap - room->hist_head) % room->hist_cap;
        }
    }

    return -1;
}


/*
 * Doubles the ring (from NGX_CHAT_SHM_HIST_MIN, up to hist_max) and its
 * index, oldest first at 0
 */

static ngx_int_t
ngx_chat_shm_hist_grow(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_room_t *room)
{
    uint32_t             *index;
    ngx_uint_t            i, cap, size;
    ngx_chat_shm_msg_t  **hist;

    cap = room->hist_cap ? 2 * room->hist_cap : NGX_CHAT_SHM_HIST_MIN;
    cap = ngx_min(cap, room->hist_max);

    for (size = 1; size < 2 * cap; size <<= 1) { /* void */ }

    hist = ngx_chat_shm_alloc(ctx, cap * sizeof(ngx_chat_shm_msg_t *));
    if (hist == NULL) {
        return NGX_ERROR;
    }

    index = ngx_chat_shm_alloc(ctx, size * sizeof(uint32_t));
    if (index == NULL) {
        ngx_slab_free_locked(ctx->shpool, hist);
        return NGX_ERROR;
    }

    for (i = 0; i < room->hist_n; i++) {
        hist[i] = room->hist[(room->hist_head + i) % room->hist_cap];
    }

    if (room->hist) {
        ngx_slab_free_locked(ctx->shpool, room->hist);
        ngx_slab_free_locked(ctx->shpool, room->index);
    }

    ngx_memzero(index, size * sizeof(uint32_t));

    room->hist = hist;
    room->index = index;
    room->index_size = size;
    room->hist_cap = cap;
    room->hist_head = 0;

    for (i = 0; i < room->hist_n; i++) {
        ngx_chat_shm_hist_index(room, i);
    }

    return NGX_OK;
}


static void
ngx_chat_shm_hist_index(ngx_chat_shm_room_t *room, ngx_uint_t phys)
{
    ngx_uint_t  i, mask;

    mask = room->index_size - 1;

    for (i = room->hist[phys]->hash & mask;
         room->index[i];
         i = (i + 1) & mask)
    {
        /* void */
    }

    room->index[i] = (uint32_t) (phys + 1);
}


/* removes the entry of ring slot phys, shifting back what follows it */

static void
ngx_chat_shm_hist_unindex(ngx_chat_shm_room_t *room, ngx_uint_t phys)
{
    ngx_uint_t  i, j, home, mask;

    mask = room->index_size - 1;

    for (i = room->hist[phys]->hash & mask;
         room->index[i] != phys + 1;
         i = (i + 1) & mask)
    {
        /* void */
    }

    for (j = (i + 1) & mask; room->index[j]; j = (j + 1) & mask) {

        home = room->hist[room->index[j] - 1]->hash & mask;

        /* the entry at j may move to i unless its home is in (i, j] */

        if ((j > i && (home <= i || home > j))
            || (j < i && home <= i && home > j))
        {
            room->index[i] = room->index[j];
            i = j;
        }
    }

    room->index[i] = 0;
}


/*
 * With the relay, the ring lacks what other servers sent while no member
 * was here: only its messages from "follow" on are known to be all there
 * were.  The ring slots before the one returned may have a hole after
 * them (0: none).
 */

ngx_uint_t
ngx_chat_shm_hist_hole(ngx_chat_shm_room_t *room)
{
    ngx_uint_t  hole;

    if (room->follow <= room->total - room->hist_n) {
        return 0;
    }

    hole = (ngx_uint_t) (room->follow - (room->total - room->hist_n));

    return ngx_min(hole, room->hist_n);
}
