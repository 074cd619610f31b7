
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The Redis relay (see ngx_chat_relay.h).
 *
 * Channels: "<prefix>:<db>:<zone>:r:<room>" per room and
 * "<prefix>:<db>:<zone>:servers" for heartbeats, where <prefix> is
 * chat_redis_prefix ("chat" by default) and <db> the database number of
 * chat_redis (0 when the URL names none).  Redis pub/sub ignores SELECT:
 * the number in the name is what keeps deployments on different databases
 * of one Redis apart, as the prefix keeps those on different prefixes.
 * Payloads start with the sender's server id (16 hex digits) and a letter:
 *
 *   M <id> <json>   a message (the "message" JSON object as delivered)
 *   R <id> <json>   one published again, for a server that may have
 *                   missed it (below)
 *   J <user>        the user's first connection to the room on that server
 *   L <user>        the user's last connection to the room there is gone
 *   S [-]           that server just subscribed: tell it who is here
 *   S +[ <tag>:<n>]...  that server subscribed (again, after an outage;
 *                   or for the first time since it followed the room,
 *                   with <n> its follow number for every server it
 *                   knows): who is here, and our messages it has not
 *                   had (the ids of our tag above <n>; all we have when
 *                   we are not listed)
 *   H               heartbeat, every 2 s on the servers channel
 *   K <user>        chat_api disconnect: close the user's connections
 *                   (on the servers channel too)
 *
 * Everything that arrives is validated as client input is (SPEC §8) before
 * any of it reaches the zone, since anyone who can PUBLISH on this Redis
 * can send anything: the header; the room (1 to 128 bytes of UTF-8, no
 * U+0000); an id of the form ours have (digits, optionally "-" and 12 hex
 * digits); the message, which must be exactly a "message" object of that
 * room and id (valid UTF-8 and JSON, nothing after it, no other members, a
 * user of 1 to 256 bytes, content within the zone's largest
 * chat_max_message_size, an integer ts) and is written again with
 * ngx_chat_wire_message(), so that members and the ring get our own bytes;
 * presence users as user ids are.  An invalid payload is dropped, counted
 * in the zone (relay_invalid) and logged, at most once a second.  Which
 * server sent a payload is not checked: a well-formed payload from a
 * server id never heard before is taken (the trust model: whoever may
 * publish on the channels is a server of this deployment).
 *
 * A server ignores its own payloads.  Other servers' users are kept in the
 * zone per server (present or not), so "members", "who" and presence
 * events include them; a server not heard from for 7 s is dropped, with
 * presence "leave" for its users.
 *
 * Nothing is lost on the way out: what this server has to publish waits
 * in a bounded queue (chat_redis_queue; the oldest dropped, counted, when
 * Redis stays down, and our messages among them published again from
 * storage once it is back: ngx_chat_relay_dropped()) and leaves it only
 * when Redis has answered the PUBLISH; a connection lost before that
 * sends it again.  The zone keeps the bus position of the
 * oldest entry not taken yet, so a worker that takes the relay over after
 * the owner died reads the bus again from there; an owner that exits
 * (reload, shutdown) hands its queue over through the zone at once and
 * lets another worker take the relay.  Publishing is thus at least once;
 * receivers recognise copies by id without keeping them (each server's
 * ids are ordered: ngx_chat_remote_message()).
 *
 * Redis keeps nothing for a subscriber that was away, so a server that
 * subscribes again after an outage says what it has of each server
 * ("S +"), and each answers with what it published since, once (R), at
 * most once per room per NGX_CHAT_RELAY_SYNC_MIN ms (requests meanwhile
 * are merged and answered then).  A server that subscribes to a room
 * because its first member joined asks only for presence: its members
 * are new, and its ring knows where it has a hole.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_relay.h"
#include "ngx_chat_relay_int.h"


#define NGX_CHAT_RELAY_HEARTBEAT   2000
#define NGX_CHAT_RELAY_EXPIRE      7000
#define NGX_CHAT_RELAY_TICK        1000
#define NGX_CHAT_RELAY_KNOWN       (NGX_CHAT_RELAY_HEARTBEAT + 1000)
#define NGX_CHAT_RELAY_UNFOLLOW    5000


typedef struct {
    ngx_queue_t                queue;
    ngx_uint_t                 cmd;
    uint64_t                   pos;       /* its bus entry, or 0 */
    size_t                     channel_len;
    size_t                     payload_len;
    u_char                     data[1];
} ngx_chat_relay_item_t;


/* a room's subscription waiting for Redis to confirm it */
typedef struct {
    void                      *rl;        /* ngx_chat_relay_t */
    ngx_uint_t                 again;
    size_t                     len;
    u_char                     room[1];
} ngx_chat_relay_subscribed_t;


static void ngx_chat_relay_tick(ngx_event_t *ev);
static void ngx_chat_relay_start(ngx_chat_relay_t *rl, uint64_t from,
    ngx_str_t *handover);
static void ngx_chat_relay_stop(ngx_chat_relay_t *rl);
static void ngx_chat_relay_handover(ngx_chat_relay_t *rl);
static void ngx_chat_relay_hold(ngx_chat_relay_t *rl);
static void ngx_chat_relay_published(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);
static void ngx_chat_relay_entry(void *data, uint64_t pos,
    ngx_chat_bus_entry_t *e);
static void ngx_chat_relay_state(ngx_chat_redis_t *rc, ngx_uint_t up,
    void *data);
static void ngx_chat_relay_message(ngx_chat_redis_t *rc, ngx_str_t *channel,
    ngx_str_t *payload, void *data);
static void ngx_chat_relay_subscribe(ngx_chat_relay_t *rl,
    ngx_str_t *channel, ngx_uint_t on, ngx_uint_t again);
static void ngx_chat_relay_subscribed(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);
static void ngx_chat_relay_heartbeat(ngx_event_t *ev);
static void ngx_chat_relay_expire(ngx_chat_relay_t *rl);
static void ngx_chat_relay_kick_out(ngx_chat_relay_t *rl, uint64_t pos,
    ngx_str_t *user);
static void ngx_chat_relay_kick_in(ngx_chat_relay_t *rl, ngx_str_t *user);
static void ngx_chat_relay_set_state(ngx_chat_relay_t *rl);


static ngx_array_t  ngx_chat_relays;     /* of ngx_chat_relay_t * */


ngx_int_t
ngx_chat_relay_init_process(ngx_cycle_t *cycle, ngx_chat_main_conf_t *cmcf)
{
    ngx_uint_t            i;
    ngx_chat_fanout_t    *fo;
    ngx_chat_relay_t     *rl, **rlp;
    ngx_chat_shm_ctx_t  **ctxp;

    if (ngx_array_init(&ngx_chat_relays, cycle->pool, 1,
                       sizeof(ngx_chat_relay_t *))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (cmcf->redis == NULL) {
        return NGX_OK;
    }

    ctxp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {

        fo = ngx_chat_fanout_get(ctxp[i]);
        if (fo == NULL) {
            /* not attached to this zone */
            continue;
        }

        rl = ngx_pcalloc(cycle->pool, sizeof(ngx_chat_relay_t));
        if (rl == NULL) {
            return NGX_ERROR;
        }

        rlp = ngx_array_push(&ngx_chat_relays);
        if (rlp == NULL) {
            return NGX_ERROR;
        }

        *rlp = rl;

        rl->ctx = ctxp[i];
        rl->fo = fo;
        rl->conf = cmcf->redis;
        rl->name_prefix = cmcf->redis_prefix;
        rl->queue_max = cmcf->redis_queue;

        rl->tick.handler = ngx_chat_relay_tick;
        rl->tick.data = rl;
        rl->tick.log = cycle->log;
        rl->tick.cancelable = 1;

        ngx_chat_relay_tick(&rl->tick);
    }

    return NGX_OK;
}


void
ngx_chat_relay_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t          i;
    ngx_chat_relay_t  **rlp;

    rlp = ngx_chat_relays.elts;

    for (i = 0; i < ngx_chat_relays.nelts; i++) {
        if (rlp[i]->tick.timer_set) {
            ngx_del_timer(&rlp[i]->tick);
        }

        ngx_chat_relay_handover(rlp[i]);
    }

    ngx_chat_relays.nelts = 0;
}


/* every second: take the relay if nobody has it */

static void
ngx_chat_relay_tick(ngx_event_t *ev)
{
    uint64_t           from;
    ngx_str_t          handover;
    ngx_chat_relay_t  *rl;

    rl = ev->data;

    if (ngx_exiting) {
        /*
         * a worker shutting down gets no Redis connection back
         * (ngx_chat_redis.c): a live one takes the relay and the queue
         */

        ngx_chat_relay_handover(rl);
        return;
    }

    if (!rl->owner && rl->ctx->wslot >= 0
        && ngx_chat_remote_claim(rl->ctx, &from, &handover) == NGX_OK)
    {
        ngx_chat_relay_start(rl, from, &handover);

        if (handover.data) {
            ngx_free(handover.data);
        }
    }

    if (rl->owner) {
        ngx_chat_relay_rooms_tick(rl);
    }

    ngx_add_timer(ev, NGX_CHAT_RELAY_TICK);
}


static void
ngx_chat_relay_start(ngx_chat_relay_t *rl, uint64_t from,
    ngx_str_t *handover)
{
    u_char                 *p, *last;
    size_t                  len[2];
    ngx_int_t               db;
    ngx_chat_shm_ctx_t     *ctx;
    ngx_chat_relay_item_t  *it;

    ctx = rl->ctx;

    ngx_queue_init(&rl->queue);
    rl->queued = 0;
    rl->inflight = 0;

    ngx_rbtree_init(&rl->rooms, &rl->sentinel, ngx_str_rbtree_insert_value);

    rl->tag = ngx_chat_server_tag(ngx_chat_remote_server_id(ctx));
    (void) ngx_sprintf(rl->sid, "%016xL", ngx_chat_remote_server_id(ctx));

    /* the channels' names: see the top of this file */

    db = (rl->conf->db < 0) ? 0 : rl->conf->db;

    p = ngx_alloc(2 * (rl->name_prefix.len + NGX_INT_T_LEN + ctx->name.len)
                  + sizeof(":::r:::::servers"), ngx_cycle->log);
    if (p == NULL) {
        ngx_chat_remote_release(ctx);
        return;
    }

    rl->prefix.data = p;
    rl->prefix.len = ngx_sprintf(p, "%V:%i:%V:r:", &rl->name_prefix, db,
                                 &ctx->name)
                     - p;
    rl->control.data = p + rl->prefix.len;
    rl->control.len = ngx_sprintf(rl->control.data, "%V:%i:%V:servers",
                                  &rl->name_prefix, db, &ctx->name)
                      - rl->control.data;

    rl->heartbeat.handler = ngx_chat_relay_heartbeat;
    rl->heartbeat.data = rl;
    rl->heartbeat.log = ngx_cycle->log;
    rl->heartbeat.cancelable = 1;

    rl->owner = 1;

    ngx_chat_fanout_tap(rl->fo, ngx_chat_relay_entry, ngx_chat_relay_flush,
                        rl);

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "chat: this worker relays zone \"%V\" through Redis %V",
                  &ctx->name, &rl->conf->url);

    rl->pub = ngx_chat_redis_create(rl->conf, ngx_cycle->log,
                                    ngx_chat_relay_state, NULL, rl);
    rl->sub = ngx_chat_redis_create(rl->conf, ngx_cycle->log,
                                    ngx_chat_relay_state,
                                    ngx_chat_relay_message, rl);

    if (rl->pub == NULL || rl->sub == NULL) {
        ngx_chat_relay_stop(rl);
        return;
    }

    /*
     * what the previous owner, if any, had not got Redis to take: the
     * queue it handed over (channel and payload lengths, then both, as
     * ngx_chat_relay_handover() writes them), then the bus from where it
     * was taken or read up to
     */

    p = handover->data;
    last = handover->len ? p + handover->len : p;

    while (last - p >= (ssize_t) sizeof(len)) {
        ngx_memcpy(len, p, sizeof(len));
        p += sizeof(len);

        if ((size_t) (last - p) < len[0] + len[1]) {
            break;
        }

        it = ngx_alloc(offsetof(ngx_chat_relay_item_t, data) + len[0]
                       + len[1], ngx_cycle->log);
        if (it == NULL) {
            break;
        }

        it->cmd = NGX_CHAT_RELAY_PUBLISH;
        it->pos = 0;
        it->channel_len = len[0];
        it->payload_len = len[1];
        ngx_memcpy(it->data, p, len[0] + len[1]);
        p += len[0] + len[1];

        ngx_queue_insert_tail(&rl->queue, &it->queue);
        rl->queued++;
    }

    if (handover->len) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: took over %ui relay publishes of zone \"%V\" "
                      "from an exiting worker", rl->queued, &ctx->name);
    }

    (void) ngx_chat_shm_bus_scan(ctx, from, ngx_chat_relay_entry, rl);

    ngx_chat_relay_hold(rl);

    ngx_add_timer(&rl->heartbeat, NGX_CHAT_RELAY_HEARTBEAT);
}


static void
ngx_chat_relay_stop(ngx_chat_relay_t *rl)
{
    ngx_queue_t       *q;
    ngx_chat_redis_t  *rc;

    if (!rl->owner) {
        return;
    }

    rl->owner = 0;

    ngx_chat_fanout_tap(rl->fo, NULL, NULL, NULL);

    if (rl->heartbeat.timer_set) {
        ngx_del_timer(&rl->heartbeat);
    }

    /* replies to come are ignored: rl->pub no longer is their connection */

    if (rl->pub) {
        rc = rl->pub;
        rl->pub = NULL;
        ngx_chat_redis_destroy(rc);
    }

    if (rl->sub) {
        rc = rl->sub;
        rl->sub = NULL;
        ngx_chat_redis_destroy(rc);
    }

    ngx_chat_relay_rooms_free(rl);

    while (!ngx_queue_empty(&rl->queue)) {
        q = ngx_queue_head(&rl->queue);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_chat_relay_item_t, queue));
    }

    rl->queued = 0;
    rl->inflight = 0;
    rl->pub_up = 0;
    rl->sub_up = 0;

    ngx_free(rl->prefix.data);
    ngx_str_null(&rl->prefix);

    if (rl->json) {
        ngx_free(rl->json);
        rl->json = NULL;
        rl->json_size = 0;
    }

    if (rl->invalid_held) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: dropped %ui more invalid payloads from Redis in "
                      "zone \"%V\"", rl->invalid_held, &rl->ctx->name);
        rl->invalid_held = 0;
    }

    ngx_chat_remote_release(rl->ctx);
}


/*
 * The owner exits (reload, shutdown): its publishes not taken by Redis
 * yet go to the zone for the next owner, which is any other worker from
 * its next tick on
 */

static void
ngx_chat_relay_handover(ngx_chat_relay_t *rl)
{
    u_char                 *buf, *p;
    size_t                  size, len[2];
    uint64_t                pos;
    ngx_uint_t              n;
    ngx_queue_t            *q;
    ngx_chat_relay_item_t  *it;

    if (!rl->owner) {
        return;
    }

    size = 0;
    pos = 0;
    n = 0;

    for (q = ngx_queue_head(&rl->queue);
         q != ngx_queue_sentinel(&rl->queue);
         q = ngx_queue_next(q))
    {
        it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

        if (it->cmd == NGX_CHAT_RELAY_PUBLISH) {
            size += sizeof(len) + it->channel_len + it->payload_len;

            if (pos == 0) {
                pos = it->pos;
            }
        }
    }

    buf = size ? ngx_alloc(size, ngx_cycle->log) : NULL;
    p = buf;

    if (buf) {
        for (q = ngx_queue_head(&rl->queue);
             q != ngx_queue_sentinel(&rl->queue);
             q = ngx_queue_next(q))
        {
            it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

            if (it->cmd != NGX_CHAT_RELAY_PUBLISH) {
                continue;
            }

            len[0] = it->channel_len;
            len[1] = it->payload_len;
            p = ngx_cpymem(p, len, sizeof(len));
            p = ngx_cpymem(p, it->data, len[0] + len[1]);
            n++;
        }
    }

    if (ngx_chat_remote_handover(rl->ctx, buf, p - buf, pos) == NGX_ERROR
        || (size && buf == NULL))
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: no memory to hand the relay queue of zone "
                      "\"%V\" over; the next relaying worker reads the bus "
                      "again", &rl->ctx->name);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: this worker exits and hands the relay of zone "
                      "\"%V\" over with %ui publishes", &rl->ctx->name, n);
    }

    if (buf) {
        ngx_free(buf);
    }

    ngx_chat_relay_stop(rl);
}


/* the zone learns the oldest bus entry Redis has not taken yet */

static void
ngx_chat_relay_hold(ngx_chat_relay_t *rl)
{
    uint64_t                pos;
    ngx_queue_t            *q;
    ngx_chat_relay_item_t  *it;

    pos = 0;

    for (q = ngx_queue_head(&rl->queue);
         q != ngx_queue_sentinel(&rl->queue);
         q = ngx_queue_next(q))
    {
        it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

        if (it->pos) {
            pos = it->pos;
            break;
        }
    }

    ngx_chat_remote_relay_pos(rl->ctx, pos);
}


/* Redis answered the oldest PUBLISH sent: it leaves the queue */

static void
ngx_chat_relay_published(ngx_chat_redis_t *rc, redisReply *reply, void *data)
{
    ngx_chat_relay_t *rl = data;

    uint64_t                pos;
    ngx_queue_t            *q;
    ngx_chat_relay_item_t  *it;

    if (rc != rl->pub || !rl->owner) {
        /* the connection was closed for good (ngx_chat_relay_stop()) */
        return;
    }

    if (reply == NULL) {
        /* lost with the connection: all sent are sent again */
        rl->inflight = 0;
        return;
    }

    if (rl->inflight == 0 || ngx_queue_empty(&rl->queue)) {
        return;
    }

    q = ngx_queue_head(&rl->queue);
    it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

    if (reply->type == REDIS_REPLY_ERROR) {
        /* refused, not lost in transit: sending it again would not help */

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat: Redis refused a PUBLISH on \"%*s\": %*s",
                      it->channel_len, it->data, (size_t) reply->len,
                      reply->str);

        rl->dropped++;
        ngx_chat_remote_count_dropped(rl->ctx);
    }

    pos = it->pos;

    ngx_queue_remove(q);
    ngx_free(it);
    rl->queued--;
    rl->inflight--;

    if (pos) {
        ngx_chat_relay_hold(rl);
    }
}


/* each bus entry this worker reads: what this server tells the others */

static void
ngx_chat_relay_entry(void *data, uint64_t pos, ngx_chat_bus_entry_t *e)
{
    ngx_chat_relay_t *rl = data;

    ngx_chat_bus_parts_t    parts;
    ngx_chat_relay_room_t  *r;

    if (!rl->owner || (e->flags & NGX_CHAT_BUS_REMOTE)) {
        return;
    }

    ngx_chat_bus_parts(e, &parts);

    switch (e->kind) {

    case NGX_CHAT_BUS_MESSAGE:
        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, pos,
                                    &parts.room, 'M', &parts.id, &parts.json);
        break;

    case NGX_CHAT_BUS_RPRESENCE:
        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, pos,
                                    &parts.room,
                                    (e->flags & NGX_CHAT_BUS_LEAVE) ? 'L'
                                                                    : 'J',
                                    &parts.user, NULL);
        break;

    case NGX_CHAT_BUS_SUBSCRIBE:
        r = ngx_chat_relay_room(rl, &parts.room, 0);

        if (r) {
            /* back within NGX_CHAT_RELAY_UNFOLLOW: still subscribed */
            r->unsub = 0;
        }

        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_SUBSCRIBE, 0,
                                    &parts.room, 0, NULL, NULL);
        break;

    case NGX_CHAT_BUS_UNSUBSCRIBE:
        /*
         * the room's last member here left: still followed for a few
         * seconds, so that members coming straight back (a reload's
         * shutdown, a dropped connection) find no hole in the ring
         */

        r = ngx_chat_relay_room(rl, &parts.room, 1);

        if (r) {
            r->unsub = 1;
            r->unsub_at = ngx_current_msec + NGX_CHAT_RELAY_UNFOLLOW;
            break;
        }

        (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_UNSUBSCRIBE, 0,
                                    &parts.room, 0, NULL, NULL);
        break;

    case NGX_CHAT_BUS_KICK:
        ngx_chat_relay_kick_out(rl, pos, &parts.user);
        break;

    default:
        break;
    }
}


/* channel, and "<sid> <kind>[ <arg1>[ <arg2>]]" as the payload */

ngx_int_t
ngx_chat_relay_queue(ngx_chat_relay_t *rl, ngx_uint_t cmd, uint64_t pos,
    ngx_str_t *room, u_char kind, ngx_str_t *arg1, ngx_str_t *arg2)
{
    u_char                 *p;
    size_t                  clen, plen;
    ngx_uint_t              i;
    ngx_queue_t            *q;
    ngx_str_t               channel, payload;
    ngx_chat_relay_item_t  *it, *old;

    clen = room ? rl->prefix.len + room->len : rl->control.len;
    plen = 0;

    if (kind) {
        plen = sizeof(rl->sid) + 2 + (arg1 ? 1 + arg1->len : 0)
               + (arg2 ? 1 + arg2->len : 0);
    }

    if (cmd == NGX_CHAT_RELAY_PUBLISH && rl->queued >= rl->queue_max) {
        /*
         * Redis has been down for long: the oldest publish goes, of
         * those not sent (a reply may still come for those sent); a
         * message of ours is published again from storage when Redis is
         * back (ngx_chat_relay_unpublished())
         */

        for (i = 0, q = ngx_queue_head(&rl->queue);
             q != ngx_queue_sentinel(&rl->queue);
             i++, q = ngx_queue_next(q))
        {
            old = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

            if (i >= rl->inflight && old->cmd == NGX_CHAT_RELAY_PUBLISH) {
                channel.data = old->data;
                channel.len = old->channel_len;
                payload.data = old->data + old->channel_len;
                payload.len = old->payload_len;

                ngx_chat_relay_dropped(rl, &channel, &payload);
                ngx_queue_remove(q);
                ngx_free(old);
                rl->queued--;
                rl->dropped++;
                ngx_chat_remote_count_dropped(rl->ctx);
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
    it->pos = pos;
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
ngx_chat_relay_flush(void *data)
{
    ngx_chat_relay_t *rl = data;

    int                     argc;
    size_t                  argvlen[3];
    ngx_int_t               rc;
    ngx_str_t               channel;
    ngx_uint_t              i;
    const char             *argv[3];
    ngx_queue_t            *q, *next;
    ngx_chat_relay_item_t  *it;

    if (!rl->owner) {
        return;
    }

    /* past those sent: they stay until Redis answers */

    q = ngx_queue_head(&rl->queue);

    for (i = 0; i < rl->inflight && q != ngx_queue_sentinel(&rl->queue); i++) {
        q = ngx_queue_next(q);
    }

    while (q != ngx_queue_sentinel(&rl->queue)) {
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

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "chat relay: PUBLISH %*s",
                           it->channel_len, it->data);

            rc = ngx_chat_redis_command(rl->pub, ngx_chat_relay_published,
                                        rl, argc, argv, argvlen);
            if (rc != NGX_OK) {
                break;
            }

            rl->inflight++;
            q = ngx_queue_next(q);
            continue;

        } else {
            /* (un)subscriptions are redone whole when "sub" reconnects */

            if (rl->sub_up) {
                channel.data = it->data;
                channel.len = it->channel_len;

                ngx_chat_relay_subscribe(rl, &channel,
                                 it->cmd == NGX_CHAT_RELAY_SUBSCRIBE, 0);
            }
        }


        next = ngx_queue_next(q);

        ngx_queue_remove(q);
        ngx_free(it);
        rl->queued--;

        q = next;
    }

    ngx_chat_relay_hold(rl);
}


static void
ngx_chat_relay_subscribe(ngx_chat_relay_t *rl, ngx_str_t *channel,
    ngx_uint_t on, ngx_uint_t again)
{
    size_t                        argvlen[2];
    ngx_str_t                     room;
    ngx_msec_t                    catchup;
    const char                   *argv[2];
    ngx_chat_relay_subscribed_t  *sd;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat relay: %s %V", on ? "SUBSCRIBE" : "UNSUBSCRIBE",
                   channel);

    argv[0] = on ? "SUBSCRIBE" : "UNSUBSCRIBE";
    argvlen[0] = on ? 9 : 11;
    argv[1] = (const char *) channel->data;
    argvlen[1] = channel->len;

    sd = NULL;

    if (on && channel->len > rl->prefix.len
        && ngx_memcmp(channel->data, rl->prefix.data, rl->prefix.len) == 0)
    {
        /*
         * a room: its sync request goes once Redis confirms the
         * subscription, so that an answer cannot come before it (another
         * server subscribing again at the same moment then always hears
         * one of the two requests; see ngx_chat_relay_sync_request())
         */

        sd = ngx_alloc(sizeof(ngx_chat_relay_subscribed_t) + channel->len
                       - rl->prefix.len, ngx_cycle->log);

        if (sd) {
            sd->rl = rl;
            sd->again = again;
            sd->len = channel->len - rl->prefix.len;
            ngx_memcpy(sd->room, channel->data + rl->prefix.len, sd->len);

            room.data = sd->room;
            room.len = sd->len;

            if (again == 1
                && ngx_chat_remote_subscribed(rl->ctx, &room, 0) != NGX_OK)
            {
                /* never subscribed to yet: new to the relay, no gap */
                sd->again = 0;

            } else if (again == 1) {
                /*
                 * subscribed again: the gaps open now, before any message
                 * of the new subscription can come (it would close them
                 * above what was missed); the request, once confirmed,
                 * says them as they are then
                 */

                catchup = ngx_chat_store_enabled()
                          ? NGX_CHAT_RELAY_CATCHUP_MAX : 0;

                (void) ngx_chat_remote_resubscribed(rl->ctx, &room, 1,
                                                    catchup, sd->room,
                                                    sd->room);
                sd->again = 2;
            }
        }
    }

    if (ngx_chat_redis_command(rl->sub,
                               sd ? ngx_chat_relay_subscribed : NULL, sd,
                               2, argv, argvlen)
        != NGX_OK
        && sd)
    {
        ngx_free(sd);
    }
}


static void
ngx_chat_relay_subscribed(ngx_chat_redis_t *rc, redisReply *reply,
    void *data)
{
    ngx_chat_relay_subscribed_t *sd = data;

    ngx_str_t               room;
    ngx_chat_relay_t       *rl;
    ngx_chat_relay_room_t  *r;

    rl = sd->rl;

    if (reply && reply->type != REDIS_REPLY_ERROR && rl->owner
        && rc == rl->sub)
    {
        room.data = sd->room;
        room.len = sd->len;

        ngx_chat_relay_sync(rl, &room, sd->again);
        (void) ngx_chat_remote_subscribed(rl->ctx, &room, 1);

        if (sd->again == 0
            && ngx_current_msec - rl->sub_up_at < NGX_CHAT_RELAY_KNOWN)
        {
            /*
             * a subscriber just up (a fresh zone) may not know every
             * server yet (a heartbeat every 2 s): one it did not list
             * would not republish what it sent between our follow and
             * the subscription; asked again once they are known
             */

            r = ngx_chat_relay_room(rl, &room, 1);

            if (r) {
                r->pending |= NGX_CHAT_RELAY_FRESH;
                r->fresh_at = rl->sub_up_at + NGX_CHAT_RELAY_KNOWN;
                r->fresh_known = ngx_chat_remote_known(rl->ctx);
            }
        }

        ngx_chat_relay_flush(rl);
    }

    ngx_free(sd);
}


static void
ngx_chat_relay_state(ngx_chat_redis_t *rc, ngx_uint_t up, void *data)
{
    ngx_chat_relay_t *rl = data;

    ngx_str_t               channel, *rooms;
    ngx_uint_t              i;
    ngx_pool_t             *pool;
    ngx_queue_t            *q, *next;
    ngx_array_t            *a;
    ngx_chat_shm_ctx_t     *ctx;
    ngx_chat_relay_item_t  *it;

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
        ngx_chat_relay_flush(rl);
        return;
    }

    rl->sub_up = up ? 1 : 0;
    rl->sub_heard = ngx_current_msec;
    rl->sub_up_at = ngx_current_msec;
    ngx_chat_relay_set_state(rl);

    if (!up) {
        return;
    }

    /*
     * a new subscriber connection: subscribe to every room with members
     * again; those without are followed no more (what was published
     * while nobody here subscribed is a hole their rings know of)
     */

    (void) ngx_chat_remote_expire(ctx, 0, 1, 0);

    ngx_chat_remote_unfollow_empty(ctx);
    ngx_chat_relay_rooms_unsub_clear(rl);

    ngx_chat_relay_subscribe(rl, &rl->control, 1, 0);

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    a = ngx_chat_remote_local_rooms(ctx, pool);

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

            ngx_chat_relay_subscribe(rl, &channel, 1, 1);
        }
    }

    ngx_destroy_pool(pool);

    /*
     * (un)subscriptions queued while "sub" was down are done: every room
     * with members here was just subscribed to
     */

    for (q = ngx_queue_head(&rl->queue);
         q != ngx_queue_sentinel(&rl->queue);
         q = next)
    {
        next = ngx_queue_next(q);
        it = ngx_queue_data(q, ngx_chat_relay_item_t, queue);

        if (it->cmd != NGX_CHAT_RELAY_PUBLISH) {
            ngx_queue_remove(q);
            ngx_free(it);
            rl->queued--;
        }
    }

    ngx_chat_relay_flush(rl);
}


static void
ngx_chat_relay_set_state(ngx_chat_relay_t *rl)
{
    ngx_chat_remote_set_up(rl->ctx, (rl->pub_up && rl->sub_up) ? 1 : 0);
}


static void
ngx_chat_relay_message(ngx_chat_redis_t *rc, ngx_str_t *channel,
    ngx_str_t *payload, void *data)
{
    ngx_chat_relay_t *rl = data;

    ngx_int_t                 rc2;
    ngx_chat_shm_ctx_t       *ctx;
    ngx_chat_relay_payload_t  pl;

    ctx = rl->ctx;
    rl->sub_heard = ngx_current_msec;

    rc2 = ngx_chat_relay_parse(rl, channel, payload, &pl);

    if (rc2 == NGX_DONE) {
        /* our own */
        return;
    }

    if (rc2 == NGX_DECLINED) {
        ngx_chat_relay_invalid(rl, &pl);
        return;
    }

    if (rc2 != NGX_OK) {
        /* no memory (logged): not the payload's fault */
        return;
    }

    switch (pl.kind) {

    case 'H':
        ngx_chat_remote_seen(ctx, pl.server);
        return;

    case 'K':
        ngx_chat_remote_seen(ctx, pl.server);
        ngx_chat_relay_kick_in(rl, &pl.user);
        return;

    case 'M':
    case 'R':
        ngx_chat_remote_seen(ctx, pl.server);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat relay: message %V in \"%V\"%s", &pl.id,
                       &pl.room, pl.kind == 'R' ? " (again)" : "");

        if (ngx_chat_remote_message(ctx, &pl.room, &pl.id, pl.json.data,
                                    pl.json.len, pl.kind == 'R')
            == NGX_OK)
        {
            ngx_chat_fanout_publish(rl->fo);
        }

        return;

    case 'J':
    case 'L':
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat relay: presence %c of \"%V\" in \"%V\"",
                       pl.kind, &pl.user, &pl.room);

        if (ngx_chat_remote_presence(ctx, &pl.room, &pl.user, pl.server,
                                     pl.kind == 'J')
            == NGX_OK)
        {
            ngx_chat_fanout_publish(rl->fo);
        }

        return;

    default: /* 'S' */
        ngx_chat_remote_seen(ctx, pl.server);
        ngx_chat_relay_sync_request(rl, &pl);
        return;
    }
}


/*
 * Servers not heard of for NGX_CHAT_RELAY_EXPIRE are dropped (their users
 * leave the rooms), and what they left unpublished is read from storage
 * (ngx_chat_relay_catchups())
 */

static void
ngx_chat_relay_expire(ngx_chat_relay_t *rl)
{
    ngx_uint_t  n;

    n = ngx_chat_remote_expire(rl->ctx, NGX_CHAT_RELAY_EXPIRE, 0,
                               ngx_chat_store_enabled()
                               ? NGX_CHAT_RELAY_CATCHUP_MAX : 0);

    if (n) {
        ngx_chat_fanout_publish(rl->fo);
    }

    ngx_chat_relay_catchups(rl);
}


static void
ngx_chat_relay_heartbeat(ngx_event_t *ev)
{
    ngx_chat_relay_t *rl = ev->data;

    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, 0, NULL, 'H', NULL,
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
            ngx_chat_relay_stop(rl);
            return;
        }
    }

    ngx_chat_relay_invalid_report(rl);

    /* while we hear nothing ourselves, nobody is declared dead */

    if (rl->sub_up) {
        ngx_chat_relay_expire(rl);
    }

    /* what went unsent, once Redis takes publishes and the queue has room */

    if (rl->pub_up && rl->queued < rl->queue_max / 2) {
        ngx_chat_relay_unpublished(rl);
    }

    ngx_chat_relay_flush(rl);

    ngx_add_timer(ev, NGX_CHAT_RELAY_HEARTBEAT);
}


/*
 * chat_api disconnect across servers: "<sid> K <user>" on the servers
 * channel, which every server is subscribed to; a receiver puts it on its
 * bus (marked remote, so it is not sent on again) for its workers
 */

static void
ngx_chat_relay_kick_out(ngx_chat_relay_t *rl, uint64_t pos, ngx_str_t *user)
{
    (void) ngx_chat_relay_queue(rl, NGX_CHAT_RELAY_PUBLISH, pos, NULL, 'K',
                                user, NULL);
}


static void
ngx_chat_relay_kick_in(ngx_chat_relay_t *rl, ngx_str_t *user)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat relay: disconnect \"%V\"", user);

    if (ngx_chat_shm_kick(rl->ctx, user, NGX_CHAT_BUS_REMOTE, ngx_cycle->log)
        == NGX_OK)
    {
        ngx_chat_fanout_publish(rl->fo);
    }
}
