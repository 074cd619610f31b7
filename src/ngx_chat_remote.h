
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_REMOTE_H_INCLUDED_
#define _NGX_CHAT_REMOTE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"


/*
 * The zone's side of the Redis relay: which worker of this server relays
 * (the owner, elected here), and what other servers tell: their messages
 * and their users, kept per server (present or not) in worker slots from
 * NGX_CHAT_REMOTE_SLOT on, so that "members", "who" and presence events
 * include them.  Functions take the zone's mutex themselves; those that
 * change a room return NGX_OK when members must be told (the caller then
 * publishes), NGX_DECLINED otherwise.
 */


/* this server's identity, random, new on each start of the zone */
uint64_t ngx_chat_remote_server_id(ngx_chat_shm_ctx_t *ctx);

/*
 * Claims the relay for this worker when nobody (alive) has it: *from is
 * where to read the bus from, *handover (ngx_alloc()ed, or empty) the
 * queue an exiting owner handed over, to publish first.
 */
ngx_int_t ngx_chat_remote_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from,
    ngx_str_t *handover);
void ngx_chat_remote_release(ngx_chat_shm_ctx_t *ctx);

/*
 * The owner's oldest bus entry Redis has not taken yet (0: none, all read
 * is taken): where a next owner starts reading if this one dies.
 */
void ngx_chat_remote_relay_pos(ngx_chat_shm_ctx_t *ctx, uint64_t pos);

/*
 * An exiting owner hands its queue over (any bytes; the next owner gets
 * them from ngx_chat_remote_claim()) and releases the relay; pos is its
 * oldest entry not taken, kept as the bus position if the zone has no
 * room for the queue (NGX_ERROR then).
 */
ngx_int_t ngx_chat_remote_handover(ngx_chat_shm_ctx_t *ctx, u_char *data,
    size_t len, uint64_t pos);

void ngx_chat_remote_set_up(ngx_chat_shm_ctx_t *ctx, ngx_uint_t up);
void ngx_chat_remote_count_dropped(ngx_chat_shm_ctx_t *ctx);
/* a payload from Redis that failed validation; no lock taken */
void ngx_chat_remote_count_invalid(ngx_chat_shm_ctx_t *ctx);

/*
 * A catch-up due (ngx_chat_remote_catchups()): what a server may have
 * committed and we never had in a room, after "high"; tag 0: any other
 * server's (our subscriber was away)
 */
typedef struct {
    ngx_str_t                  room;
    uint64_t                   tag;
    uint64_t                   high;      /* its newest delivered here */
} ngx_chat_remote_gone_t;

/* "<number>-<tag>": NGX_OK with both, or NGX_ERROR */
ngx_int_t ngx_chat_remote_id_parse(ngx_str_t *id, uint64_t *num,
    uint64_t *tag);

/* the time in an id's number, ms since the epoch; 0 when not an id */
uint64_t ngx_chat_remote_id_ms(ngx_str_t *id);

/*
 * Whether another server's message (its number and tag) is in the holes a
 * stored row of ours keeps (ngx_chat_shm_place_t: what had not come here
 * when it was posted, ngx_chat_remote_room_place())
 */
ngx_uint_t ngx_chat_remote_in_holes(ngx_str_t *holes, uint64_t num,
    uint64_t tag);

/*
 * Another server's message: NGX_OK when new here (the caller publishes),
 * NGX_DECLINED when a copy (its id is in the room's seen window, or at or
 * below its sender's floor), a republished one sent before the room was
 * followed here, or the room has no member here.  Counted (relay_duplicates in status) when refused as a
 * copy.
 */
ngx_int_t ngx_chat_remote_message(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *id, u_char *json, size_t len,
    ngx_uint_t republished);

/*
 * Of the ids of stored rows (n of them), which a history reply leaves
 * out: pending[i] NGX_CHAT_REMOTE_PENDING for other servers' messages
 * this server has not delivered yet though it will (sent since the room
 * was followed and within the last 30 s, not in the seen window): they
 * come live, in this server's order, to every member alike: their copy,
 * or, should none come, the row itself, read from storage a few seconds
 * later by the relay's catch-up (ngx_chat_remote_catchups());
 * NGX_CHAT_REMOTE_LATE for another server's history (numbered before the
 * follow) that earlier replies went past without it, never had here: the
 * reply's worker delivers it (ngx_chat_remote_late()), to every member
 * but those whose resume was after it, from its server.
 */
#define NGX_CHAT_REMOTE_PENDING    1
#define NGX_CHAT_REMOTE_LATE       2

void ngx_chat_remote_pending(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t **ids, ngx_uint_t n, u_char *pending);

/*
 * A row of NGX_CHAT_REMOTE_LATE delivered into the room now, as a live
 * message that came late: to every member here, into the ring (later
 * replies give it where it came); NGX_DECLINED when it was had meanwhile
 */
ngx_int_t ngx_chat_remote_late(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *id, u_char *json, size_t len);

/*
 * Whether a member resuming after "since" may lack other servers'
 * messages numbered before it: the zone relays and the room was not
 * followed here when the id was numbered (the member had it on another
 * server, or on this one before a restart), so what reached the member
 * then, and in which order, is known nowhere now.
 */
ngx_uint_t ngx_chat_remote_blind(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *since);

/*
 * Other servers' messages (n pairs of number and tag, oldest first) that
 * a history reply past what the zone vouches for (ngx_chat_remote_blind())
 * gave: history here from now on, their live copy refused as one (those
 * sent before the follow, the newest the room's seen window can hold
 * besides the ids delivered here, which stay its newest)
 */
void ngx_chat_remote_had(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    uint64_t *keys, ngx_uint_t n);

/* how many other servers this zone knows of (heard within 7 s) */
ngx_uint_t ngx_chat_remote_known(ngx_chat_shm_ctx_t *ctx);

/* the room's sync request argument after our first subscription (.c) */
u_char *ngx_chat_remote_fresh(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    u_char *buf, u_char *last);

/*
 * The room's sync request argument after our resubscription (see .c);
 * with reopen and catchup (ms, not 0: storage), each sender's catch-up
 * from storage is due a little later, given up after catchup
 */
u_char *ngx_chat_remote_resubscribed(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_uint_t reopen, ngx_msec_t catchup, u_char *buf,
    u_char *last);
ngx_uint_t ngx_chat_remote_gap_open(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, uint64_t tag);

/* following a room without members here, for a few seconds (see .c) */
ngx_int_t ngx_chat_remote_unfollow(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room);
void ngx_chat_remote_unfollow_empty(ngx_chat_shm_ctx_t *ctx);
ngx_int_t ngx_chat_remote_subscribed(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_uint_t set);

ngx_int_t ngx_chat_remote_presence(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *user, uint64_t server, ngx_uint_t join);
void ngx_chat_remote_seen(ngx_chat_shm_ctx_t *ctx, uint64_t server);

/*
 * Drops the servers not seen for timeout (their users leave); with
 * touch_all, marks every known server seen now instead.  Returns how many
 * were dropped.  With catchup (ms, not 0), each followed room where a
 * dropped server's messages came gets a catch-up for that long.
 */
ngx_uint_t ngx_chat_remote_expire(ngx_chat_shm_ctx_t *ctx,
    ngx_msec_t timeout, ngx_uint_t touch_all, ngx_msec_t catchup);

/*
 * The catch-ups due now, pushed onto "due" (of ngx_chat_remote_gone_t,
 * from due->pool); each is due again "retry" later until
 * ngx_chat_remote_catchup_done() (a worker killed, a read failed).
 * Returns how many were dropped: past their time, given up.
 */
ngx_uint_t ngx_chat_remote_catchups(ngx_chat_shm_ctx_t *ctx,
    ngx_array_t *due, ngx_msec_t retry);
void ngx_chat_remote_catchup_done(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    uint64_t tag);

/*
 * Our own messages the relay dropped unsent (Redis down for longer than
 * chat_redis_queue holds): the room keeps the lowest and highest numbers,
 * and whichever worker relays once Redis is back publishes ours again
 * from storage (each read due again "retry" later, until "give_up" after
 * the first drop); ngx_chat_remote_unpublished_due() pushes the rooms due
 * onto "due" (ngx_chat_remote_gone_t: our tag, "high" the number before
 * the lowest) and returns how many were given up; _done() says up to
 * which number storage had ours ("covered"), which clears what it covers.
 */
void ngx_chat_remote_unpublished(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    uint64_t num, ngx_msec_t give_up);
ngx_uint_t ngx_chat_remote_unpublished_due(ngx_chat_shm_ctx_t *ctx,
    ngx_array_t *due, ngx_msec_t retry);
void ngx_chat_remote_unpublished_done(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, uint64_t from, uint64_t covered);

/* the rooms with members here, copied into an array of ngx_str_t */
ngx_array_t *ngx_chat_remote_local_rooms(ngx_chat_shm_ctx_t *ctx,
    ngx_pool_t *pool);


#endif /* _NGX_CHAT_REMOTE_H_INCLUDED_ */
