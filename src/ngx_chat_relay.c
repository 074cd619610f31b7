
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The Redis relay (see ngx_chat_relay.h).
 *
 * Channels: "chat:<zone>:r:<room>" per room, "chat:<zone>:servers" for
 * heartbeats.  Payloads start with the sender's server id (16 hex digits)
 * and a letter:
 *
 *   M <id> <json>   a message (the "message" JSON object as delivered)
 *   J <user>        the user's first connection to the room on that server
 *   L <user>        the user's last connection to the room there is gone
 *   S               that server just subscribed: tell it who is here
 *   H               heartbeat, every 2 s on the servers channel
 *
 * A server ignores its own payloads.  Other servers' users are kept in the
 * zone per server (present or not), so "members", "who" and presence
 * events include them; a server not heard from for 7 s is dropped, with
 * presence "leave" for its users.  While Redis is down, what this server
 * has to publish waits in a bounded queue (oldest dropped, counted) and
 * goes out in order when Redis is back; remote users are kept as they were
 * until then.  Publishing is at least once: a receiver drops a message
 * whose id its room already has.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_relay.h"


#define NGX_CHAT_RELAY_HEARTBEAT   2000
#define NGX_CHAT_RELAY_EXPIRE      7000
#define NGX_CHAT_RELAY_QUEUE_MAX   10000

#define NGX_CHAT_RELAY_PUBLISH     0
#define NGX_CHAT_RELAY_SUBSCRIBE   1
#define NGX_CHAT_RELAY_UNSUBSCRIBE 2


typedef struct {
    ngx_queue_t                queue;
    ngx_uint_t                 cmd;
    size_t                     channel_len;
    size_t                     payload_len;
    u_char                     data[1];
} ngx_chat_relay_item_t;


typedef struct {
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_redis_conf_t     *conf;
    ngx_chat_redis_t          *pub;
    ngx_chat_redis_t          *sub;
    ngx_str_t                  prefix;        /* chat:<zone>:r: */
    ngx_str_t                  control;       /* chat:<zone>:servers */
    u_char                     sid[16];
    ngx_queue_t                queue;
    ngx_uint_t                 queued;
    ngx_uint_t                 dropped;
    ngx_event_t                heartbeat;
    ngx_msec_t                 sub_heard;     /* last payload, ours too */
    unsigned                   pub_up:1;
    unsigned                   sub_up:1;
} ngx_chat_relay_t;


static void ngx_chat_relay_start(ngx_chat_shm_ctx_t *ctx, uint64_t from);
static ngx_int_t ngx_chat_relay_queue(ngx_chat_relay_t *rl, ngx_uint_t cmd,
    ngx_str_t *room, u_char kind, ngx_str_t *arg1, ngx_str_t *arg2);
static void ngx_chat_relay_state(ngx_chat_redis_t *rc, ngx_uint_t up,
    void *data);
static void ngx_chat_relay_message(ngx_chat_redis_t *rc, ngx_str_t *channel,
    ngx_str_t *payload, void *data);
static void ngx_chat_relay_sync(ngx_chat_relay_t *rl, ngx_str_t *room);
static void ngx_chat_relay_subscribe(ngx_chat_relay_t *rl,
    ngx_str_t *channel, ngx_uint_t on);
static void ngx_chat_relay_heartbeat(ngx_event_t *ev);
static void ngx_chat_relay_republish(ngx_chat_relay_t *rl, ngx_str_t *room);
static void ngx_chat_relay_set_state(ngx_chat_relay_t *rl);


void
ngx_chat_relay_init(ngx_chat_shm_ctx_t *ctx, ngx_chat_redis_conf_t *conf)
{
    u_char  *p;

    ctx->relay_conf = conf;

    /* ids get this server's tag, so that they are unique across servers */

    p = ngx_alloc(16, ngx_cycle->log);
    if (p == NULL) {
        return;
    }

    ctx->id_tag.data = p;
    ctx->id_tag.len = ngx_sprintf(p, "-%012xL",
                                  ctx->sh->server_id & 0xffffffffffffULL)
                      - p;

    ngx_chat_relay_tick(ctx);
}


/* every second, from the zone's timer: take the relay if nobody has it */

void
ngx_chat_relay_tick(ngx_chat_shm_ctx_t *ctx)
{
    uint64_t  from;

    if (ctx->relay || ctx->wslot < 0 || ngx_exiting) {
        return;
    }

    if (ngx_chat_shm_relay_claim(ctx, &from) == NGX_OK) {
        ngx_chat_relay_start(ctx, from);
    }
}


static void
ngx_chat_relay_start(ngx_chat_shm_ctx_t *ctx, uint64_t from)
{
    u_char            *p;
    ngx_chat_relay_t  *rl;

    rl = ngx_calloc(sizeof(ngx_chat_relay_t), ngx_cycle->log);
    if (rl == NULL) {
        ngx_chat_shm_relay_release(ctx);
        return;
    }

    rl->ctx = ctx;
    rl->conf = ctx->relay_conf;
    ngx_queue_init(&rl->queue);

    (void) ngx_sprintf(rl->sid, "%016xL", ctx->sh->server_id);

    p = ngx_alloc(2 * ctx->name.len + sizeof("chat::r:chat::servers"),
                  ngx_cycle->log);
    if (p == NULL) {
        ngx_free(rl);
        ngx_chat_shm_relay_release(ctx);
        return;
    }

    rl->prefix.data = p;
    rl->prefix.len = ngx_sprintf(p, "chat:%V:r:", &ctx->name) - p;
    rl->control.data = p + rl->prefix.len;
    rl->control.len = ngx_sprintf(rl->control.data, "chat:%V:servers",
                                  &ctx->name)
                      - rl->control.data;

    rl->heartbeat.handler = ngx_chat_relay_heartbeat;
    rl->heartbeat.data = rl;
    rl->heartbeat.log = ngx_cycle->log;
    rl->heartbeat.cancelable = 1;

    ctx->relay = rl;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "chat: this worker relays zone \"%V\" through Redis %V",
                  &ctx->name, &rl->conf->url);

    rl->pub = ngx_chat_redis_create(rl->conf, ngx_cycle->log,
                                    ngx_chat_relay_state, NULL, rl);
    rl->sub = ngx_chat_redis_create(rl->conf, ngx_cycle->log,
                                    ngx_chat_relay_state,
                                    ngx_chat_relay_message, rl);

    if (rl->pub == NULL || rl->sub == NULL) {
        ngx_chat_relay_exit(ctx);
        return;
    }

    /* what the previous owner, if any, had not published yet */

    (void) ngx_chat_shm_bus_scan(ctx, from, ngx_chat_relay_entry);

    ngx_add_timer(&rl->heartbeat, NGX_CHAT_RELAY_HEARTBEAT);
}


void
ngx_chat_relay_exit(ngx_chat_shm_ctx_t *ctx)
{
    ngx_queue_t       *q;
    ngx_chat_relay_t  *rl;

    rl = ctx->relay;
    if (rl == NULL) {
        return;
    }

    ctx->relay = NULL;

    if (rl->heartbeat.timer_set) {
        ngx_del_timer(&rl->heartbeat);
    }

    if (rl->pub) {
        ngx_chat_redis_destroy(rl->pub);
    }

    if (rl->sub) {
        ngx_chat_redis_destroy(rl->sub);
    }

    while (!ngx_queue_empty(&rl->queue)) {
        q = ngx_queue_head(&rl->queue);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_chat_relay_item_t, queue));
    }

    ngx_free(rl->prefix.data);
    ngx_free(rl);

    ngx_chat_shm_relay_release(ctx);
}


/* under the zone lock: what this server has to tell the others */

void
ngx_chat_relay_entry(ngx_chat_shm_ctx_t *ctx, uint64_t pos,
    ngx_chat_bus_entry_t *e)
{
    u_char            *p;
    size_t             hlen;
    ngx_str_t          room, user, id, json;
    ngx_chat_relay_t  *rl;

    rl = ctx->relay;

    if (rl == NULL || (e->flags & NGX_CHAT_BUS_REMOTE)) {
        return;
    }

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);

    room.data = p;
    room.len = e->room_len;
    p += e->room_len;

    user.data = p;
    user.len = e->user_len;
    p += e->user_len;

    id.data = p;
    id.len = e->id_len;
    p += e->id_len;

    switch (e->kind) {

    case NGX_CHAT_BUS_MESSAGE:
        /* the frame's payload: skip its header */
        hlen = (p[1] & 0x7f) == 126 ? 4 : (p[1] & 0x7f) == 127 ? 10 : 2;
        json.data = p + hlen;
        json.len = e->frame_len - hlen;

        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, &room, 'M',
                                    &id, &json);
        break;

    case NGX_CHAT_BUS_RPRESENCE:
        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, &room,
                                    (e->flags & NGX_CHAT_BUS_LEAVE) ? 'L'
                                                                    : 'J',
                                    &user, NULL);
        break;

    case NGX_CHAT_BUS_SUBSCRIBE:
        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_SUBSCRIBE, &room, 0,
                                    NULL, NULL);
        break;

    case NGX_CHAT_BUS_UNSUBSCRIBE:
        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_UNSUBSCRIBE, &room, 0,
                                    NULL, NULL);
        break;

    default:
        break;
    }
}


/* channel, and "<sid> <kind>[ <arg1>[ <arg2>]]" as the payload */

static ngx_int_t
ngx_chat_relay_queue(ngx_chat_relay_t *rl, ngx_uint_t cmd, ngx_str_t *room,
    u_char kind, ngx_str_t *arg1, ngx_str_t *arg2)
{
    u_char                 *p;
    size_t                  clen, plen;
    ngx_queue_t            *q;
    ngx_chat_relay_item_t  *it, *old;

    clen = room ? rl->prefix.len + room->len : rl->control.len;
    plen = 0;

    if (kind) {
        plen = sizeof(rl->sid) + 2 + (arg1 ? 1 + arg1->len : 0)
               + (arg2 ? 1 + arg2->len : 0);
    }

    if (cmd == NGX_CHAT_RELAY_PUBLISH
        && rl->queued >= NGX_CHAT_RELAY_QUEUE_MAX)
    {
        /* Redis has been down for long: the oldest publish goes */

        for (q = ngx_queue_head(&rl->queue);
             q != ngx_queue_sentinel(&rl->queue);
             q = ngx_queue_next(q))
        {
            old = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

            if (old->cmd == NGX_CHAT_RELAY_PUBLISH) {
                ngx_queue_remove(q);
                ngx_free(old);
                rl->queued--;
                rl->dropped++;
                (void) ngx_atomic_fetch_add(&rl->ctx->sh->relay_dropped, 1);
                break;
            }
        }
    }

    it = ngx_alloc(offsetof(ngx_chat_relay_item_t, data) + clen + plen,
                   ngx_cycle->log);
    if (it == NULL) {
        return NGX_ERROR;
    }

    it->cmd = cmd;
    it->channel_len = clen;
    it->payload_len = plen;

    if (room) {
        p = ngx_cpymem(it->data, rl->prefix.data, rl->prefix.len);
        p = ngx_cpymem(p, room->data, room->len);

    } else {
        p = ngx_cpymem(it->data, rl->control.data, rl->control.len);
    }

    if (kind) {
        p = ngx_cpymem(p, rl->sid, sizeof(rl->sid));
        *p++ = ' ';
        *p++ = kind;

        if (arg1) {
            *p++ = ' ';
            p = ngx_cpymem(p, arg1->data, arg1->len);
        }

        if (arg2) {
            *p++ = ' ';
            p = ngx_cpymem(p, arg2->data, arg2->len);
        }
    }

    ngx_queue_insert_tail(&rl->queue, &it->queue);
    rl->queued++;

    return NGX_OK;
}


/* hands the queue to the connections, in order, as far as they are up */

void
ngx_chat_relay_flush(ngx_chat_shm_ctx_t *ctx)
{
    int                     argc;
    size_t                  argvlen[3];
    ngx_int_t               rc;
    ngx_str_t               channel;
    const char             *argv[3];
    ngx_queue_t            *q;
    ngx_chat_relay_t       *rl;
    ngx_chat_relay_item_t  *it;

    rl = ctx->relay;
    if (rl == NULL) {
        return;
    }

    while (!ngx_queue_empty(&rl->queue)) {
        q = ngx_queue_head(&rl->queue);
        it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

        if (it->cmd == NGX_CHAT_RELAY_PUBLISH) {

            if (!rl->pub_up) {
                break;
            }

            argv[0] = "PUBLISH";
            argvlen[0] = 7;
            argv[1] = (const char *) it->data;
            argvlen[1] = it->channel_len;
            argv[2] = (const char *) it->data + it->channel_len;
            argvlen[2] = it->payload_len;
            argc = 3;

            rc = ngx_chat_redis_command(rl->pub, NULL, NULL, argc, argv,
                                        argvlen);
            if (rc == NGX_DECLINED) {
                break;
            }

        } else {
            /* (un)subscriptions are redone whole when "sub" reconnects */

            if (rl->sub_up) {
                channel.data = it->data;
                channel.len = it->channel_len;

                ngx_chat_relay_subscribe(rl, &channel,
                                 it->cmd == NGX_CHAT_RELAY_SUBSCRIBE);

                if (it->cmd == NGX_CHAT_RELAY_SUBSCRIBE) {
                    channel.data = it->data + rl->prefix.len;
                    channel.len = it->channel_len - rl->prefix.len;
                    ngx_chat_relay_sync(rl, &channel);
                }
            }
        }

        ngx_queue_remove(q);
        ngx_free(it);
        rl->queued--;
    }
}


static void
ngx_chat_relay_subscribe(ngx_chat_relay_t *rl, ngx_str_t *channel,
    ngx_uint_t on)
{
    size_t       argvlen[2];
    const char  *argv[2];

    argv[0] = on ? "SUBSCRIBE" : "UNSUBSCRIBE";
    argvlen[0] = on ? 9 : 11;
    argv[1] = (const char *) channel->data;
    argvlen[1] = channel->len;

    (void) ngx_chat_redis_command(rl->sub, NULL, NULL, 2, argv, argvlen);
}


/* asks the others who is in a room we just subscribed to */

static void
ngx_chat_relay_sync(ngx_chat_relay_t *rl, ngx_str_t *room)
{
    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, room, 'S', NULL,
                                NULL);
}


static void
ngx_chat_relay_state(ngx_chat_redis_t *rc, ngx_uint_t up, void *data)
{
    ngx_chat_relay_t *rl = data;

    ngx_str_t          channel, *rooms;
    ngx_uint_t         i;
    ngx_pool_t        *pool;
    ngx_array_t       *a;
    ngx_chat_shm_ctx_t  *ctx;

    ctx = rl->ctx;

    if (rc == rl->pub) {
        rl->pub_up = up ? 1 : 0;

        if (up && rl->dropped) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "chat: %ui relayed messages were dropped while "
                          "Redis was down", rl->dropped);
            rl->dropped = 0;
        }

        ngx_chat_relay_set_state(rl);
        ngx_chat_relay_flush(ctx);
        return;
    }

    rl->sub_up = up ? 1 : 0;
    rl->sub_heard = ngx_current_msec;
    ngx_chat_relay_set_state(rl);

    if (!up) {
        return;
    }

    /* a new subscriber connection: subscribe to everything again */

    (void) ngx_chat_shm_remote_expire(ctx, 0, 1);

    ngx_chat_relay_subscribe(rl, &rl->control, 1);

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    a = ngx_chat_shm_local_rooms(ctx, pool);

    if (a) {
        rooms = a->elts;

        for (i = 0; i < a->nelts; i++) {
            channel.len = rl->prefix.len + rooms[i].len;
            channel.data = ngx_pnalloc(pool, channel.len);
            if (channel.data == NULL) {
                break;
            }

            ngx_memcpy(ngx_cpymem(channel.data, rl->prefix.data,
                                  rl->prefix.len),
                       rooms[i].data, rooms[i].len);

            ngx_chat_relay_subscribe(rl, &channel, 1);
            ngx_chat_relay_sync(rl, &rooms[i]);
            ngx_chat_relay_republish(rl, &rooms[i]);
        }
    }

    ngx_destroy_pool(pool);

    ngx_chat_relay_flush(ctx);
}


static void
ngx_chat_relay_set_state(ngx_chat_relay_t *rl)
{
    ngx_chat_shm_ctx_t  *ctx;

    ctx = rl->ctx;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->sh->redis_up = (rl->pub_up && rl->sub_up) ? 1 : 0;
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static void
ngx_chat_relay_message(ngx_chat_redis_t *rc, ngx_str_t *channel,
    ngx_str_t *payload, void *data)
{
    ngx_chat_relay_t *rl = data;

    u_char              *p, *last, kind;
    uint64_t             server;
    ngx_int_t            rc2;
    ngx_str_t            room, arg, id, *users;
    ngx_uint_t           i;
    ngx_pool_t          *pool;
    ngx_array_t         *a;
    ngx_chat_shm_ctx_t  *ctx;

    ctx = rl->ctx;
    rl->sub_heard = ngx_current_msec;

    p = payload->data;
    last = p + payload->len;

    if (payload->len < sizeof(rl->sid) + 2 || p[sizeof(rl->sid)] != ' ') {
        goto invalid;
    }

    if (ngx_memcmp(p, rl->sid, sizeof(rl->sid)) == 0) {
        /* our own */
        return;
    }

    server = 0;

    for (i = 0; i < sizeof(rl->sid); i++) {
        kind = ngx_tolower(p[i]);

        if (kind >= '0' && kind <= '9') {
            server = server * 16 + (kind - '0');

        } else if (kind >= 'a' && kind <= 'f') {
            server = server * 16 + (kind - 'a' + 10);

        } else {
            goto invalid;
        }
    }

    p += sizeof(rl->sid) + 1;
    kind = *p++;

    if (p < last) {
        if (*p != ' ') {
            goto invalid;
        }

        p++;
    }

    arg.data = p;
    arg.len = last - p;

    if (channel->len == rl->control.len
        && ngx_memcmp(channel->data, rl->control.data, channel->len) == 0)
    {
        ngx_chat_shm_remote_seen(ctx, server);
        return;
    }

    if (channel->len <= rl->prefix.len
        || ngx_memcmp(channel->data, rl->prefix.data, rl->prefix.len) != 0)
    {
        goto invalid;
    }

    room.data = channel->data + rl->prefix.len;
    room.len = channel->len - rl->prefix.len;

    switch (kind) {

    case 'M':
        p = ngx_strlchr(arg.data, last, ' ');
        if (p == NULL) {
            goto invalid;
        }

        id.data = arg.data;
        id.len = p - arg.data;

        ngx_chat_shm_remote_seen(ctx, server);

        rc2 = ngx_chat_shm_remote_message(ctx, &room, &id, p + 1, last - p - 1);
        if (rc2 == NGX_OK) {
            ngx_chat_fanout_publish(ctx);
        }

        return;

    case 'J':
    case 'L':
        if (arg.len == 0) {
            goto invalid;
        }

        if (ngx_chat_shm_remote_presence(ctx, &room, &arg, server, kind == 'J')
            == NGX_OK)
        {
            ngx_chat_fanout_publish(ctx);
        }

        return;

    case 'S':
        ngx_chat_shm_remote_seen(ctx, server);

        pool = ngx_create_pool(4096, ngx_cycle->log);
        if (pool == NULL) {
            return;
        }

        a = ngx_chat_shm_local_users(ctx, &room, pool);

        if (a) {
            users = a->elts;

            for (i = 0; i < a->nelts; i++) {
                (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, &room,
                                            'J', &users[i], NULL);
            }
        }

        ngx_destroy_pool(pool);

        ngx_chat_relay_republish(rl, &room);

        ngx_chat_relay_flush(ctx);
        return;

    default:
        goto invalid;
    }

invalid:

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "chat: ignored an invalid relay payload on \"%V\"", channel);
}


/*
 * Our recent messages of a room, published again: Redis keeps nothing for
 * a subscriber that comes late, so what we published while another server
 * was not subscribed (around an outage) would be lost.  Done when our
 * subscriber (re)connects and when another server asks (its sync request);
 * receivers drop the ids they have.
 */

static void
ngx_chat_relay_republish(ngx_chat_relay_t *rl, ngx_str_t *room)
{
    ngx_str_t             id;
    ngx_uint_t            i;
    ngx_chat_shm_ctx_t   *ctx;
    ngx_chat_shm_ring_t  *ring;

    ctx = rl->ctx;

    ring = ngx_chat_shm_ring_copy(ctx, room);
    if (ring == NULL) {
        return;
    }

    for (i = 0; i < ring->n; i++) {
        id = ring->msgs[i].id;

        if (id.len > ctx->id_tag.len
            && ngx_memcmp(id.data + id.len - ctx->id_tag.len,
                          ctx->id_tag.data, ctx->id_tag.len) == 0)
        {
            (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, room, 'M',
                                        &id, &ring->msgs[i].json);
        }
    }

    ngx_free(ring);
}


static void
ngx_chat_relay_heartbeat(ngx_event_t *ev)
{
    ngx_chat_relay_t *rl = ev->data;

    ngx_chat_shm_ctx_t  *ctx;

    ctx = rl->ctx;

    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, NULL, 'H', NULL,
                                NULL);

    if (rl->sub_up && rl->pub_up
        && ngx_current_msec - rl->sub_heard > 3 * NGX_CHAT_RELAY_EXPIRE)
    {
        /*
         * not even our own heartbeats come back: the subscriber connection
         * is dead without having been closed; start a new one
         */

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "chat: the Redis subscriber hears nothing, reconnecting");

        ngx_chat_redis_destroy(rl->sub);
        rl->sub_up = 0;
        ngx_chat_relay_set_state(rl);

        rl->sub = ngx_chat_redis_create(rl->conf, ngx_cycle->log,
                                        ngx_chat_relay_state,
                                        ngx_chat_relay_message, rl);
        if (rl->sub == NULL) {
            ngx_chat_relay_exit(ctx);
            return;
        }
    }

    /* while we hear nothing ourselves, nobody is declared dead */

    if (rl->sub_up
        && ngx_chat_shm_remote_expire(ctx, NGX_CHAT_RELAY_EXPIRE, 0))
    {
        ngx_chat_fanout_publish(ctx);
    }

    ngx_chat_relay_flush(ctx);

    ngx_add_timer(ev, NGX_CHAT_RELAY_HEARTBEAT);
}
