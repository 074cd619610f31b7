/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_RELAY_INT_H_INCLUDED_
#define _NGX_CHAT_RELAY_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_fanout.h"


/*
 * The relay's state, private to its files: ngx_chat_relay.c (the owner,
 * its two Redis connections, the publish queue, what arrives, servers
 * gone), ngx_chat_relay_payload.c (what arrives, validated first),
 * ngx_chat_relay_sync.c (rooms' sync requests and their answers) and
 * ngx_chat_relay_store.c (what Redis missed, from storage).
 */


#define NGX_CHAT_RELAY_CATCHUP_MAX 300000  /* ms: storage reads give up */

#define NGX_CHAT_RELAY_PUBLISH     0
#define NGX_CHAT_RELAY_SUBSCRIBE   1
#define NGX_CHAT_RELAY_UNSUBSCRIBE 2


/* a payload from Redis, once validated (ngx_chat_relay_parse) */
typedef struct {
    ngx_str_t                  sid;       /* as sent, for logs */
    uint64_t                   server;
    u_char                     kind;
    ngx_str_t                  room;      /* M, J, L, S */
    ngx_str_t                  id;        /* M */
    ngx_str_t                  user;      /* J, L */
    ngx_str_t                  json;      /* M, R: written again, ours */
    ngx_str_t                  sync;      /* S: "", "-" or "+..." */
    char                      *error;     /* why it is invalid */
} ngx_chat_relay_payload_t;


/*
 * A room's sync requests and answers: each kind at most once every
 * NGX_CHAT_RELAY_SYNC_MIN; what comes meanwhile waits, merged
 */
#define NGX_CHAT_RELAY_KINDS       4      /* pending bits, below */

typedef struct {
    ngx_str_node_t             sn;
    ngx_msec_t                 last[NGX_CHAT_RELAY_KINDS];  /* done, by
                                                      kind (the bits below) */
    uint64_t                   from;      /* republish ours above it */
    ngx_msec_t                 unsub_at;  /* unsubscribe then, if still
                                             without members */
    ngx_msec_t                 fresh_at;  /* NGX_CHAT_RELAY_FRESH then, */
    ngx_uint_t                 fresh_known;   /* if more servers are known
                                                 than at the first */
    unsigned                   pending:4;
    unsigned                   unsub:1;
} ngx_chat_relay_room_t;

#define NGX_CHAT_RELAY_PRESENCE    0x01   /* who is here */
#define NGX_CHAT_RELAY_REPUBLISH   0x02   /* our messages again */
#define NGX_CHAT_RELAY_RESYNC      0x04   /* our own request again */
#define NGX_CHAT_RELAY_FRESH       0x08   /* our first request again, once
                                             every server is known */


typedef struct {
    ngx_chat_shm_ctx_t        *ctx;
    ngx_chat_fanout_t         *fo;
    ngx_chat_redis_conf_t     *conf;
    ngx_str_t                  name_prefix;   /* chat_redis_prefix */
    ngx_uint_t                 queue_max;     /* chat_redis_queue */
    ngx_event_t                tick;          /* tries to be the owner */

    /* while this worker relays the zone (the owner) */
    ngx_chat_redis_t          *pub;
    ngx_chat_redis_t          *sub;
    ngx_str_t                  prefix;        /* "<p>:<db>:<zone>:r:" */
    ngx_str_t                  control;       /* "<p>:<db>:<zone>:servers" */
    u_char                     sid[16];
    ngx_queue_t                queue;     /* the first "inflight" were
                                             sent, their reply not in */
    ngx_uint_t                 queued;
    ngx_uint_t                 inflight;
    ngx_uint_t                 dropped;
    uint64_t                   tag;       /* our ids' tag */
    ngx_rbtree_t               rooms;     /* ngx_chat_relay_room_t */
    ngx_rbtree_node_t          sentinel;
    ngx_event_t                heartbeat;
    ngx_msec_t                 sub_heard;     /* last payload, ours too */
    ngx_msec_t                 sub_up_at;     /* when it came up */
    u_char                    *json;          /* messages written again */
    size_t                     json_size;
    time_t                     invalid_time;  /* last logged */
    ngx_uint_t                 invalid_held;  /* dropped, not yet logged */
    unsigned                   owner:1;
    unsigned                   pub_up:1;
    unsigned                   sub_up:1;
} ngx_chat_relay_t;


ngx_int_t ngx_chat_relay_queue(ngx_chat_relay_t *rl, ngx_uint_t cmd,
    uint64_t pos, ngx_str_t *room, u_char kind, ngx_str_t *arg1,
    ngx_str_t *arg2);
void ngx_chat_relay_flush(void *data);
ngx_int_t ngx_chat_relay_parse(ngx_chat_relay_t *rl,
    ngx_str_t *channel, ngx_str_t *payload, ngx_chat_relay_payload_t *pl);
void ngx_chat_relay_invalid(ngx_chat_relay_t *rl,
    ngx_chat_relay_payload_t *pl);
void ngx_chat_relay_invalid_report(ngx_chat_relay_t *rl);
void ngx_chat_relay_sync(ngx_chat_relay_t *rl, ngx_str_t *room,
    ngx_uint_t again);
void ngx_chat_relay_sync_request(ngx_chat_relay_t *rl,
    ngx_chat_relay_payload_t *pl);
ngx_chat_relay_room_t *ngx_chat_relay_room(ngx_chat_relay_t *rl,
    ngx_str_t *name, ngx_uint_t create);
void ngx_chat_relay_rooms_tick(ngx_chat_relay_t *rl);
void ngx_chat_relay_rooms_unsub_clear(ngx_chat_relay_t *rl);
void ngx_chat_relay_rooms_free(ngx_chat_relay_t *rl);
void ngx_chat_relay_catchups(ngx_chat_relay_t *rl);
void ngx_chat_relay_dropped(ngx_chat_relay_t *rl, ngx_str_t *channel,
    ngx_str_t *payload);
void ngx_chat_relay_unpublished(ngx_chat_relay_t *rl);


#endif /* _NGX_CHAT_RELAY_INT_H_INCLUDED_ */
