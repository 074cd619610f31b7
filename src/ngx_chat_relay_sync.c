/*
 * Copyright (C) ngx_chat_module authors
 *
 * A room's sync between servers (the "S" and "R" payloads: the top of
 * ngx_chat_relay.c): a server that subscribes to a room asks the others,
 * and each answers with who is here and, after an outage, its messages
 * the asker may have missed; each kind at most once per room per
 * NGX_CHAT_RELAY_SYNC_MIN, what comes meanwhile merged and done by the
 * tick.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_store.h"
#include "ngx_chat_relay_int.h"


#define NGX_CHAT_RELAY_SYNC_MIN    3000
#define NGX_CHAT_RELAY_SYNC_KEEP   30000
#define NGX_CHAT_RELAY_SYNC_ARG    (2 + NGX_CHAT_MAX_SERVERS               \
                                        * (2 + 12 + NGX_INT64_LEN))


static ngx_int_t ngx_chat_relay_sync_mark(ngx_chat_relay_t *rl,
    ngx_str_t *arg, uint64_t *from);
static ngx_uint_t ngx_chat_relay_room_due(ngx_chat_relay_t *rl,
    ngx_chat_relay_room_t *r);
static void ngx_chat_relay_republish(ngx_chat_relay_t *rl, ngx_str_t *room,
    uint64_t from);


/*
 * Asks the others who is in a room we just subscribed to and what they
 * published since we followed it ("S +" and "<tag>:<follow number>" for
 * each server we know of), or, "again" (1: subscribed again after an
 * outage; 2: the same request again), what we may have missed: "S +" and
 * what we have of each server
 */

void
ngx_chat_relay_sync(ngx_chat_relay_t *rl, ngx_str_t *room, ngx_uint_t again)
{
    u_char      buf[NGX_CHAT_RELAY_SYNC_ARG];
    ngx_str_t   arg;
    ngx_msec_t  catchup;

    arg.data = buf;

    if (again) {
        catchup = ngx_chat_store_enabled() ? NGX_CHAT_RELAY_CATCHUP_MAX : 0;

        arg.len = ngx_chat_remote_resubscribed(rl->ctx, room, again == 1,
                                               catchup, buf,
                                               buf + sizeof(buf))
                  - buf;

    } else {
        /*
         * new to the relay: what the others published since the room was
         * followed, before the subscription took, never came
         */
        arg.len = ngx_chat_remote_fresh(rl->ctx, room, buf, buf + sizeof(buf))
                  - buf;
    }

    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, 0, room, 'S',
                                &arg, NULL);
}


/*
 * In a valid "S +..." argument, what the requester has of our messages:
 * NGX_OK and *from (ours above it are wanted), NGX_DECLINED when we are
 * not listed (all are)
 */

static ngx_int_t
ngx_chat_relay_sync_mark(ngx_chat_relay_t *rl, ngx_str_t *arg,
    uint64_t *from)
{
    u_char    *p, *last;
    u_char     tag[12];
    uint64_t   n;

    (void) ngx_sprintf(tag, "%012xL", rl->tag);

    p = arg->data + 1;
    last = arg->data + arg->len;

    while (last - p >= 15) {
        p++;    /* ' ' */

        if (ngx_memcmp(p, tag, 12) != 0) {
            p = ngx_strlchr(p, last, ' ');
            if (p == NULL) {
                break;
            }

            continue;
        }

        p += 13;
        n = 0;

        while (p < last && *p >= '0' && *p <= '9') {
            n = n * 10 + (*p++ - '0');
        }

        *from = n;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * Another server subscribed to a room: tell it who is here, and, when it
 * subscribed again after an outage, what of ours it may have missed.  At
 * most once per room per NGX_CHAT_RELAY_SYNC_MIN: requests meanwhile are
 * merged and answered by the tick then.  Should we ourselves still miss
 * that server's messages (our own request may have come before it was
 * subscribed), we ask again, as rarely.
 */

void
ngx_chat_relay_sync_request(ngx_chat_relay_t *rl,
    ngx_chat_relay_payload_t *pl)
{
    uint64_t                from;
    ngx_chat_relay_room_t  *r;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat relay: sync request for \"%V\" from %V: \"%V\"",
                   &pl->room, &pl->sid, &pl->sync);

    if (ngx_chat_shm_members(rl->ctx, &pl->room) == 0) {
        /* nobody here: nothing to tell */
        return;
    }

    r = ngx_chat_relay_room(rl, &pl->room, 1);
    if (r == NULL) {
        return;
    }

    r->pending |= NGX_CHAT_RELAY_PRESENCE;

    if (pl->sync.len && pl->sync.data[0] == '+') {

        if (ngx_chat_relay_sync_mark(rl, &pl->sync, &from) != NGX_OK) {
            from = 0;
        }

        r->from = (r->pending & NGX_CHAT_RELAY_REPUBLISH)
                  ? ngx_min(r->from, from) : from;
        r->pending |= NGX_CHAT_RELAY_REPUBLISH;
    }

    if (pl->sync.len && pl->sync.data[0] == '+'
        && ngx_chat_remote_gap_open(rl->ctx, &pl->room,
                                    ngx_chat_server_tag(pl->server)))
    {
        /* it was away too: it may not have heard our own request */
        r->pending |= NGX_CHAT_RELAY_RESYNC;
    }

    if (ngx_chat_relay_room_due(rl, r)) {
        ngx_chat_relay_flush(rl);
    }
}


ngx_chat_relay_room_t *
ngx_chat_relay_room(ngx_chat_relay_t *rl, ngx_str_t *name, ngx_uint_t create)
{
    uint32_t                hash;
    ngx_uint_t              k;
    ngx_chat_relay_room_t  *r;

    hash = ngx_crc32_short(name->data, name->len);

    r = (ngx_chat_relay_room_t *) ngx_str_rbtree_lookup(&rl->rooms, name,
                                                        hash);
    if (r || !create) {
        return r;
    }

    r = ngx_alloc(sizeof(ngx_chat_relay_room_t) + name->len, ngx_cycle->log);
    if (r == NULL) {
        return NULL;
    }

    ngx_memzero(r, sizeof(ngx_chat_relay_room_t));

    r->sn.str.data = (u_char *) r + sizeof(ngx_chat_relay_room_t);
    r->sn.str.len = name->len;
    ngx_memcpy(r->sn.str.data, name->data, name->len);

    r->sn.node.key = hash;
    for (k = 0; k < NGX_CHAT_RELAY_KINDS; k++) {
        r->last[k] = ngx_current_msec - NGX_CHAT_RELAY_SYNC_MIN;
    }

    ngx_rbtree_insert(&rl->rooms, &r->sn.node);

    return r;
}


/* what is pending for a room and not done recently, done now: any? */

static ngx_uint_t
ngx_chat_relay_room_due(ngx_chat_relay_t *rl, ngx_chat_relay_room_t *r)
{
    ngx_str_t    *users;
    ngx_uint_t    i, k, done;
    ngx_pool_t   *pool;
    ngx_array_t  *a;

    done = 0;

    for (k = 0; k < NGX_CHAT_RELAY_KINDS; k++) {
        if (!(r->pending & (1 << k))
            || ngx_current_msec - r->last[k] < NGX_CHAT_RELAY_SYNC_MIN
            || ((1 << k) == NGX_CHAT_RELAY_FRESH
                && (ngx_msec_int_t) (ngx_current_msec - r->fresh_at) < 0))
        {
            continue;
        }

        r->pending &= ~(1 << k);
        r->last[k] = ngx_current_msec;
        done = 1;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat relay: sync of \"%V\": %s, from %uL",
                       &r->sn.str,
                       k == 0 ? "presence"
                              : (k == 1 ? "republish"
                                        : (k == 2 ? "ask again"
                                                  : "first request again")),
                       r->from);

        switch (1 << k) {

        case NGX_CHAT_RELAY_PRESENCE:
            pool = ngx_create_pool(4096, ngx_cycle->log);
            if (pool == NULL) {
                break;
            }

            a = ngx_chat_shm_users(rl->ctx, &r->sn.str, 1, pool);

            if (a) {
                users = a->elts;

                for (i = 0; i < a->nelts; i++) {
                    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, 0,
                                                &r->sn.str, 'J', &users[i],
                                                NULL);
                }
            }

            ngx_destroy_pool(pool);
            break;

        case NGX_CHAT_RELAY_REPUBLISH:
            ngx_chat_relay_republish(rl, &r->sn.str, r->from);
            break;

        case NGX_CHAT_RELAY_RESYNC:
            ngx_chat_relay_sync(rl, &r->sn.str, 2);
            break;

        default: /* NGX_CHAT_RELAY_FRESH */
            if (ngx_chat_remote_known(rl->ctx) > r->fresh_known
                && ngx_chat_shm_members(rl->ctx, &r->sn.str))
            {
                ngx_chat_relay_sync(rl, &r->sn.str, 0);
            }

            break;
        }
    }

    return done;
}


/* every tick: what waited is done; rooms quiet for long forgotten */

void
ngx_chat_relay_rooms_tick(ngx_chat_relay_t *rl)
{
    ngx_uint_t              done, k, quiet;
    ngx_rbtree_node_t      *node, *next;
    ngx_chat_relay_room_t  *r;

    if (rl->rooms.root == rl->rooms.sentinel) {
        return;
    }

    done = 0;

    for (node = ngx_rbtree_min(rl->rooms.root, rl->rooms.sentinel);
         node;
         node = next)
    {
        next = ngx_rbtree_next(&rl->rooms, node);
        r = (ngx_chat_relay_room_t *) node;

        if (r->unsub
            && (ngx_msec_int_t) (ngx_current_msec - r->unsub_at) >= 0)
        {
            r->unsub = 0;

            if (ngx_chat_remote_unfollow(rl->ctx, &r->sn.str) == NGX_OK) {
                (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_UNSUBSCRIBE, 0,
                                            &r->sn.str, 0, NULL, NULL);
                done = 1;
            }
        }

        if (r->pending) {
            done |= ngx_chat_relay_room_due(rl, r);
            continue;
        }

        if (r->unsub) {
            continue;
        }

        quiet = 1;

        for (k = 0; k < NGX_CHAT_RELAY_KINDS; k++) {
            if (ngx_current_msec - r->last[k] < NGX_CHAT_RELAY_SYNC_KEEP) {
                quiet = 0;
            }
        }

        if (quiet) {
            ngx_rbtree_delete(&rl->rooms, node);
            ngx_free(r);
        }
    }

    if (done) {
        ngx_chat_relay_flush(rl);
    }
}


void
ngx_chat_relay_rooms_unsub_clear(ngx_chat_relay_t *rl)
{
    ngx_rbtree_node_t  *node;

    if (rl->rooms.root == NULL || rl->rooms.root == rl->rooms.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(rl->rooms.root, rl->rooms.sentinel);
         node;
         node = ngx_rbtree_next(&rl->rooms, node))
    {
        ((ngx_chat_relay_room_t *) node)->unsub = 0;
    }
}


void
ngx_chat_relay_rooms_free(ngx_chat_relay_t *rl)
{
    ngx_rbtree_node_t  *node;

    if (rl->rooms.root == NULL) {
        return;
    }

    while (rl->rooms.root != rl->rooms.sentinel) {
        node = ngx_rbtree_min(rl->rooms.root, rl->rooms.sentinel);
        ngx_rbtree_delete(&rl->rooms, node);
        ngx_free(node);
    }
}


/*
 * Our messages of a room above "from", published again (R) for a server
 * that subscribed again after an outage: Redis keeps nothing for a
 * subscriber that was away.  Only what the ring still holds; receivers
 * take each at most once (ngx_chat_remote_message()).
 */

static void
ngx_chat_relay_republish(ngx_chat_relay_t *rl, ngx_str_t *room,
    uint64_t from)
{
    uint64_t              num, tag;
    ngx_str_t             id;
    ngx_uint_t            i;
    ngx_chat_shm_ring_t  *ring;

    ring = ngx_chat_shm_ring_copy(rl->ctx, room);
    if (ring == NULL) {
        return;
    }

    for (i = 0; i < ring->n; i++) {
        id = ring->msgs[i].id;

        if (ngx_chat_remote_id_parse(&id, &num, &tag) == NGX_OK
            && tag == rl->tag && num > from)
        {
            (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, 0, room,
                                        'R', &id, &ring->msgs[i].json);
        }
    }

    ngx_free(ring);
}
