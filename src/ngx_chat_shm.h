
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_SHM_H_INCLUDED_
#define _NGX_CHAT_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"


/*
 * The shared zone: rooms with their members and recent messages, users
 * with their connection counts and rate buckets, the workers that use it,
 * and the bus: a ring of serialised frames that every worker reads new
 * messages from.  Everything is under the slab pool's mutex; nothing here
 * does I/O.  Counts are kept per worker slot, so that the members a dead
 * worker held can be removed by another one.
 */


#define NGX_CHAT_MAX_WORKERS      64

#define NGX_CHAT_BUS_MESSAGE      1       /* delivered to members */
#define NGX_CHAT_BUS_PRESENCE     2       /* delivered to other users */
#define NGX_CHAT_BUS_RPRESENCE    3       /* relay: a user's first / last
                                             connection on this server */
#define NGX_CHAT_BUS_SUBSCRIBE    4       /* relay: first member here */
#define NGX_CHAT_BUS_UNSUBSCRIBE  5       /* relay: last member gone */

/* slots from here on are other servers (Redis relay), not workers */
#define NGX_CHAT_REMOTE_SLOT      1000
#define NGX_CHAT_MAX_SERVERS      64


typedef struct {
    uint32_t                   slot;
    uint32_t                   count;
} ngx_chat_shm_slot_t;


/*
 * A user in the zone, or a user in one room: two per joined connection,
 * allocated with the name behind.  Kept at 96 bytes so that with a name of
 * up to 32 bytes it takes the slab's 128-byte class, not the 256-byte one
 * (bench/capacity: ~250 bytes less per idle joined connection).
 */
typedef struct {
    ngx_rbtree_node_t          node;      /* key: crc32 of the name */
    ngx_str_t                  name;      /* as in ngx_str_node_t */
    ngx_queue_t                idle;      /* zone users without connections */
    ngx_chat_shm_slot_t       *slots;
    uint32_t                   total;
    uint16_t                   nslots;
    uint16_t                   cap;
    uint32_t                   last;      /* rate bucket, as limit_req: ms, */
    uint32_t                   excess:31; /* compared modulo 2^32 */
    uint32_t                   used:1;    /* the bucket has seen a send */
} ngx_chat_shm_user_t;


#define NGX_CHAT_ID_LEN           (NGX_INT64_LEN + 18)


typedef struct {
    u_char                     id[NGX_CHAT_ID_LEN];
    size_t                     id_len;
    size_t                     len;
    u_char                     data[1];   /* the "message" JSON object */
} ngx_chat_shm_msg_t;


typedef struct {
    ngx_rbtree_node_t          node;
    ngx_str_t                  name;      /* as in ngx_str_node_t */
    ngx_queue_t                lru;       /* in sh->empty when no member */
    ngx_uint_t                 in_lru;
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          sentinel;
    ngx_uint_t                 nusers;
    ngx_uint_t                 nconns;
    ngx_chat_shm_msg_t       **hist;
    ngx_uint_t                 hist_cap;
    ngx_uint_t                 hist_head; /* oldest */
    ngx_uint_t                 hist_n;
    uint64_t                   total;     /* messages ever posted */
} ngx_chat_shm_room_t;


typedef struct {
    ngx_pid_t                  pid;
    ngx_uint_t                 active;
    ngx_uint_t                 notified;
    ngx_uint_t                 connections;
    ngx_uint_t                 pg_down;
} ngx_chat_shm_worker_t;


typedef struct {
    uint64_t                   id;
    ngx_msec_t                 last_seen;
    ngx_uint_t                 active;
} ngx_chat_shm_server_t;


typedef struct {
    ngx_rbtree_t               rooms;
    ngx_rbtree_node_t          rooms_sentinel;
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          users_sentinel;
    ngx_queue_t                empty;     /* rooms kept only for history */
    ngx_queue_t                idle;      /* users kept only for rate */

    ngx_chat_shm_worker_t      workers[NGX_CHAT_MAX_WORKERS];

    u_char                    *bus;
    size_t                     bus_size;
    uint64_t                   bus_head;  /* bytes ever written */
    uint64_t                   bus_tail;  /* oldest entry still there */

    uint64_t                   last_id;

    /* the Redis relay */
    uint64_t                   server_id;
    ngx_pid_t                  relay_owner;
    uint64_t                   relay_pos;
    ngx_uint_t                 redis_up;
    ngx_atomic_t               relay_dropped;
    ngx_chat_shm_server_t      servers[NGX_CHAT_MAX_SERVERS];

    ngx_uint_t                 rooms_active;
    ngx_uint_t                 users_active;
    ngx_uint_t                 connections;
    ngx_atomic_t               messages_in;
    ngx_atomic_t               messages_out;
    ngx_atomic_t               rate_limited;
    ngx_atomic_t               zone_full;
} ngx_chat_shm_t;


#define NGX_CHAT_BUS_REMOTE       0x01       /* came from another server */
#define NGX_CHAT_BUS_LEAVE        0x02       /* PRESENCE: a leave */


typedef struct {
    uint32_t                   len;       /* entry size; 0: wrap */
    uint8_t                    kind;
    uint8_t                    flags;
    uint16_t                   room_len;
    uint32_t                   user_len;  /* PRESENCE: user not to notify */
    uint32_t                   frame_len;
    uint32_t                   id_len;    /* MESSAGE: its id */
    /* room, user, id, frame (WebSocket header and JSON) follow */
} ngx_chat_bus_entry_t;


struct ngx_chat_shm_ctx_s {
    ngx_shm_zone_t            *shm_zone;
    ngx_str_t                  name;
    size_t                     max_message;   /* largest of its locations */
    ngx_chat_shm_t            *sh;
    ngx_slab_pool_t           *shpool;

    /* per worker, set in init_process */
    ngx_int_t                  wslot;
    uint64_t                   bus_read;
    u_char                    *bus_copy;  /* what bus_read copied out */
    size_t                     bus_copy_cap;
    ngx_rbtree_t               local_rooms;
    ngx_rbtree_node_t          local_sentinel;
    void                     **local_cache;  /* by hash, in front of it */
    ngx_event_t                reap_event;
    ngx_pid_t                  notify[NGX_CHAT_MAX_WORKERS];
    ngx_uint_t                 nnotify;
    ngx_str_t                  id_tag;    /* "-<server>" with a relay */
    ngx_uint_t                 store;     /* messages are in PostgreSQL */
    void                      *relay;     /* the owner's relay state */
    void                      *relay_conf;
};


typedef void (*ngx_chat_shm_bus_pt)(ngx_chat_shm_ctx_t *ctx, uint64_t pos,
    ngx_chat_bus_entry_t *e);


/* a copy of a room's recent messages, oldest first */
typedef struct {
    ngx_str_t                  id;
    ngx_str_t                  json;
} ngx_chat_shm_copy_msg_t;


typedef struct {
    ngx_uint_t                 n;
    ngx_chat_shm_copy_msg_t   *msgs;
} ngx_chat_shm_ring_t;


/* what a join did */
typedef struct {
    ngx_uint_t                 members;   /* users present */
    uint64_t                   bus_pos;   /* deliver live from here */
    ngx_chat_buf_t            *history;   /* history frame, or NULL */
    ngx_uint_t                 first;     /* the user's first connection */
    ngx_chat_shm_ring_t       *ring;      /* the ring cannot answer: its
                                             copy, to merge with storage */
    void                      *room;      /* the zone's room: stays while
                                             it has members */
} ngx_chat_shm_join_t;


ngx_int_t ngx_chat_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data);

/*
 * The bus of a zone: a quarter of it within 64k..16m, but always room for
 * four entries of the largest message its locations accept; 0 when the
 * zone is too small for that
 */
size_t ngx_chat_shm_bus_size(size_t zone_size, size_t max_message);

ngx_int_t ngx_chat_shm_connect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user);
void ngx_chat_shm_disconnect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user);

/* history: -1 none, else the count asked; since: NULL or the id */
ngx_int_t ngx_chat_shm_join(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user, ngx_uint_t keep, ngx_int_t history, ngx_str_t *since,
    ngx_chat_shm_join_t *res, ngx_log_t *log);
ngx_uint_t ngx_chat_shm_members(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room);
void ngx_chat_shm_leave(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user);

/*
 * Posts a message: rate check, id, history, bus.  Returns NGX_OK with
 * *id set, NGX_BUSY when rate limited (*retry_ms set), NGX_DECLINED when
 * the zone is full.
 */
ngx_int_t ngx_chat_shm_post(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    void *hint, ngx_str_t *user, ngx_str_t *content, ngx_uint_t rate,
    ngx_uint_t burst, ngx_str_t *id, uint64_t *ts, ngx_msec_t *retry_ms,
    ngx_log_t *log);

/* NULL with *ring set: the ring cannot answer, ask storage */
ngx_chat_buf_t *ngx_chat_shm_history(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_uint_t limit, ngx_str_t *before,
    ngx_chat_shm_ring_t **ring, ngx_log_t *log);
/* a malloc()ed copy of the room's ring (free with ngx_free), or NULL */
ngx_chat_shm_ring_t *ngx_chat_shm_ring_copy(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room);

ngx_chat_buf_t *ngx_chat_shm_who(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_log_t *log);

ngx_int_t ngx_chat_shm_worker_attach(ngx_chat_shm_ctx_t *ctx,
    ngx_log_t *log);
void ngx_chat_shm_worker_detach(ngx_chat_shm_ctx_t *ctx);
/* removes what dead workers left; returns how many were reaped */
ngx_uint_t ngx_chat_shm_reap(ngx_chat_shm_ctx_t *ctx, ngx_log_t *log);

/* the relay: what other servers tell; all return NGX_OK or NGX_DECLINED */
ngx_int_t ngx_chat_shm_remote_message(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *id, u_char *json, size_t len);
ngx_int_t ngx_chat_shm_remote_presence(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *user, uint64_t server, ngx_uint_t join);
void ngx_chat_shm_remote_seen(ngx_chat_shm_ctx_t *ctx, uint64_t server);
/* drops the servers not seen for timeout; returns how many */
ngx_uint_t ngx_chat_shm_remote_expire(ngx_chat_shm_ctx_t *ctx,
    ngx_msec_t timeout, ngx_uint_t touch_all);
/* the rooms with members here, or the local users of one room */
ngx_array_t *ngx_chat_shm_local_rooms(ngx_chat_shm_ctx_t *ctx,
    ngx_pool_t *pool);
ngx_array_t *ngx_chat_shm_local_users(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_pool_t *pool);
/* claims the relay for this worker when nobody (alive) has it */
ngx_int_t ngx_chat_shm_relay_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from);
void ngx_chat_shm_relay_release(ngx_chat_shm_ctx_t *ctx);

/*
 * Calls handler, under the zone's lock, for the entries in [from, to) that
 * are still in the ring; returns where it stopped
 */
uint64_t ngx_chat_shm_bus_scan(ngx_chat_shm_ctx_t *ctx, uint64_t from,
    ngx_chat_shm_bus_pt handler);

/*
 * Calls handler, under the zone's lock, for each bus entry this worker
 * has not read yet.  Returns the bytes of entries lost because this
 * worker fell behind the ring (0 normally).
 */
uint64_t ngx_chat_shm_bus_read(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_bus_pt handler, ngx_log_t *log);


#endif /* _NGX_CHAT_SHM_H_INCLUDED_ */
