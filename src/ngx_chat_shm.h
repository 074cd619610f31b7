
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_SHM_H_INCLUDED_
#define _NGX_CHAT_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_bus.h"


/* a server's tag in the ids it makes: the low 48 bits of its zone's id */
#define ngx_chat_server_tag(id)   ((uint64_t) (id) & 0xffffffffffffULL)

/* a tag's upper 24 bits: the same on every start (ngx_chat_shm_lineage()) */
#define ngx_chat_server_lineage(tag)  (((uint64_t) (tag) >> 24) & 0xffffff)


/*
 * The shared zone: rooms with their members and recent messages, users
 * with their connection counts and rate buckets, and the workers that use
 * it; its bus is in ngx_chat_bus.c, the registry of other servers (for the
 * relay) in ngx_chat_remote.c, the zone's layout in ngx_chat_shm_int.h,
 * private to the zone's files.  Every function here takes the slab
 * pool's mutex itself and does no I/O while holding it.  Counts are kept
 * per worker slot, so that what a dead worker held can be removed by
 * another one.
 */


#define NGX_CHAT_ID_LEN           (NGX_INT64_LEN + 18)

/* other servers a zone keeps track of (the Redis relay) */
#define NGX_CHAT_MAX_SERVERS      64


typedef struct ngx_chat_shm_s       ngx_chat_shm_t;
typedef struct ngx_chat_shm_room_s  ngx_chat_shm_room_t;


struct ngx_chat_shm_ctx_s {
    ngx_shm_zone_t            *shm_zone;
    ngx_str_t                  name;
    size_t                     max_message;   /* largest of its locations */
    ngx_chat_shm_t            *sh;
    ngx_slab_pool_t           *shpool;

    /* from the configuration */
    unsigned                   store:1;   /* chat_postgres: messages are
                                             stored, the ring may not
                                             hold everything asked */
    unsigned                   relayed:1; /* chat_redis: relay events
                                             go on the bus */
    uint32_t                   lineage;   /* ngx_chat_shm_lineage() */

    /* this worker's, set once it is attached */
    ngx_int_t                  wslot;     /* -1: not attached */
    ngx_str_t                  id_tag;    /* "-<12 hex>": this zone's life
                                             on this server */
    u_char                     id_tag_data[16];
    ngx_chat_bus_reader_t      bus;
};


/* a copy of a room's recent messages, oldest first */
typedef struct {
    ngx_str_t                  id;
    ngx_str_t                  json;
} ngx_chat_shm_copy_msg_t;


typedef struct {
    ngx_uint_t                 n;
    ngx_chat_shm_copy_msg_t   *msgs;
    uint64_t                   head;      /* the bus when it was copied:
                                             what it holds was appended
                                             before */
    uint64_t                   follow;    /* the room's follow number
                                             (chat_redis; else 0) */
    ngx_uint_t                 fresh;     /* how many of the newest came
                                             since the follow: those
                                             numbered at or below it came
                                             after that history, late */
} ngx_chat_shm_ring_t;


/* what a join did */
typedef struct {
    ngx_uint_t                 members;   /* users present */
    uint64_t                   bus_pos;   /* deliver live from here */
    ngx_chat_buf_t            *history;   /* history frame, or NULL */
    ngx_uint_t                 first;     /* the user's first connection */
    ngx_uint_t                 storage;   /* the ring cannot answer: ask
                                             storage, merge with the ring */
    ngx_chat_shm_room_t       *room;      /* the zone's room: stays while
                                             it has members */
    ngx_uint_t                 blind;     /* the since is one the zone
                                             cannot vouch for
                                             (ngx_chat_remote_blind()) */
} ngx_chat_shm_join_t;


/*
 * chat_status histograms: NGX_CHAT_SHM_BUCKETS - 1 upper bounds in
 * microseconds (ngx_chat_shm_bucket_us), then +Inf
 */
#define NGX_CHAT_SHM_BUCKETS      13

#define NGX_CHAT_SHM_LAG          0       /* bus entry -> last local member */
#define NGX_CHAT_SHM_ACK          1       /* send accepted -> ack (storage) */
#define NGX_CHAT_SHM_HISTOGRAMS   2

/* the error codes of error frames, and the close codes sent, then others */
#define NGX_CHAT_SHM_ERRORS       6
#define NGX_CHAT_SHM_CLOSES       9

typedef struct {
    uint64_t                   bucket[NGX_CHAT_SHM_BUCKETS]; /* not
                                                                cumulative */
    uint64_t                   sum;       /* microseconds */
} ngx_chat_shm_histogram_t;

extern uint64_t    ngx_chat_shm_bucket_us[NGX_CHAT_SHM_BUCKETS - 1];
extern char       *ngx_chat_shm_error_codes[NGX_CHAT_SHM_ERRORS];
extern ngx_uint_t  ngx_chat_shm_close_codes[NGX_CHAT_SHM_CLOSES - 1];


/* what chat_status shows */
typedef struct {
    ngx_uint_t                 connections;
    ngx_uint_t                 rooms;
    ngx_uint_t                 users;
    ngx_uint_t                 workers;
    ngx_uint_t                 redis_up;
    ngx_uint_t                 pg_down;   /* a worker's storage is down */
    uint64_t                   messages_in;
    uint64_t                   messages_out;
    uint64_t                   rate_limited;
    uint64_t                   zone_full;
    uint64_t                   relay_dropped;
    uint64_t                   relay_invalid;
    uint64_t                   relay_duplicates;  /* copies recognised */
    uint64_t                   bytes[4];  /* in, in_raw, out, out_raw */
    uint64_t                   errors[NGX_CHAT_SHM_ERRORS];
    uint64_t                   closes[NGX_CHAT_SHM_CLOSES];
    ngx_chat_shm_histogram_t   hist[NGX_CHAT_SHM_HISTOGRAMS];
} ngx_chat_shm_stats_t;


/*
 * shm_zone->init: a new zone, one that exists (a binary upgrade), or the
 * previous cycle's (a reload), which is adopted when its layout fits
 */
ngx_int_t ngx_chat_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data);

ngx_int_t ngx_chat_shm_connect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user);
void ngx_chat_shm_disconnect(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user);

/*
 * A zone's name on this server that outlives its restarts: 24 bits from
 * the host name, the configuration file and the zone name.  The 24 upper
 * bits of the zone's id tag (the lower 24 are new on each start): a
 * restarted server knows its earlier lives' messages by them.
 */
uint32_t ngx_chat_shm_lineage(ngx_cycle_t *cycle, ngx_str_t *zone);

/*
 * Where a message of ours comes among other servers' in its room, as the
 * members here see it (ngx_chat_remote_room_place()), stored with it:
 * prior, the highest number of another server's message delivered here
 * before it (0: none known), and holes, "<tag>:<lo>:<hi>" ranges of a
 * server's numbers below it that may not have come yet (our subscriber
 * was away: what came between is still to come, or never), comma
 * separated, hi 0 for no end yet
 */
#define NGX_CHAT_PLACE_HOLES      8
#define NGX_CHAT_PLACE_HOLE_LEN   (12 + 2 * NGX_INT64_LEN + 3)

typedef struct {
    uint64_t                   prior;
    size_t                     holes_len;
    u_char                     holes[NGX_CHAT_PLACE_HOLES
                                     * NGX_CHAT_PLACE_HOLE_LEN];
} ngx_chat_shm_place_t;


/* history: -1 none, else the count asked; since: NULL or the id */
ngx_int_t ngx_chat_shm_join(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user, ngx_uint_t keep, ngx_int_t history, ngx_str_t *since,
    ngx_chat_shm_join_t *res, ngx_log_t *log);
ngx_uint_t ngx_chat_shm_members(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room);
void ngx_chat_shm_leave(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user);

/*
 * Posts a message: rate check, id, history, bus.  hint is the sender's
 * room from its join, or NULL.  Returns NGX_OK with *id set and *place
 * (where it came among other servers' messages here), NGX_BUSY when rate
 * limited (*retry_ms set), NGX_DECLINED when the zone is full.
 */
ngx_int_t ngx_chat_shm_post(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_chat_shm_room_t *hint, ngx_str_t *user, ngx_str_t *content,
    ngx_uint_t rate, ngx_uint_t burst, ngx_str_t *id, uint64_t *ts,
    ngx_chat_shm_place_t *place, ngx_msec_t *retry_ms, ngx_log_t *log);

/* the room exists (created without members, keeping keep messages) */
ngx_int_t ngx_chat_shm_room_ensure(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t keep);

/* chat_api publish keys: remembered 10 minutes, at most 100,000 */
#define NGX_CHAT_SHM_KEY_TTL      600
#define NGX_CHAT_SHM_MAX_KEYS     100000

/*
 * NGX_OK: taken, publish then ngx_chat_shm_key_set(); NGX_DECLINED: known,
 * *id (room for NGX_CHAT_ID_LEN) is its message, committed; NGX_BUSY: its
 * publish is under way, or waits for its COMMIT; NGX_ERROR: the zone is
 * full
 */
ngx_int_t ngx_chat_shm_key_take(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id);
void ngx_chat_shm_key_set(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_str_t *id, ngx_uint_t committed);
void ngx_chat_shm_key_commit(ngx_chat_shm_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t refused);

/*
 * closes the user's connections in every worker (a bus entry the relay
 * passes on to the other servers unless flags has NGX_CHAT_BUS_REMOTE)
 */
ngx_int_t ngx_chat_shm_kick(ngx_chat_shm_ctx_t *ctx, ngx_str_t *user,
    ngx_uint_t flags, ngx_log_t *log);

/* connections of a user on this server */
ngx_uint_t ngx_chat_shm_user_connections(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *user);

/* NULL with *storage set: the ring cannot answer, ask storage */
ngx_chat_buf_t *ngx_chat_shm_history(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_uint_t limit, ngx_str_t *before,
    ngx_uint_t *storage, ngx_log_t *log);

/* a malloc()ed copy of the room's ring (free with ngx_free), or NULL */
ngx_chat_shm_ring_t *ngx_chat_shm_ring_copy(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room);

/*
 * The users present in a room (local: only those with a connection on
 * this server), copied into an array of ngx_str_t from pool; NULL: no
 * memory
 */
ngx_array_t *ngx_chat_shm_users(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_uint_t local, ngx_pool_t *pool);

/* name: where this worker's wake-ups go (ngx_chat_fanout.c) */
ngx_int_t ngx_chat_shm_worker_attach(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_bus_name_t *name, ngx_log_t *log);
/* pid is or was a worker of the zone's slots; read without the lock */
ngx_uint_t ngx_chat_shm_worker_known(ngx_chat_shm_ctx_t *ctx, ngx_pid_t pid);
void ngx_chat_shm_worker_detach(ngx_chat_shm_ctx_t *ctx);

/* frees the process's own buffers (after every zone is detached) */
void ngx_chat_shm_exit_process(void);

/* removes what dead workers left; returns how many were reaped */
ngx_uint_t ngx_chat_shm_reap(ngx_chat_shm_ctx_t *ctx, ngx_log_t *log);

/* the zone's bus (ngx_chat_bus.h), read by this worker */
uint64_t ngx_chat_shm_bus_read(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_bus_pt handler, void *data, ngx_log_t *log);
uint64_t ngx_chat_shm_bus_scan(ngx_chat_shm_ctx_t *ctx, uint64_t from,
    ngx_chat_bus_pt handler, void *data);

/* counters */
void ngx_chat_shm_stats(ngx_chat_shm_ctx_t *ctx, ngx_chat_shm_stats_t *st);
void ngx_chat_shm_count_out(ngx_chat_shm_ctx_t *ctx, ngx_uint_t n);
/* bytes read and written: in, in_raw, out, out_raw (ngx_chat_shm_stats_t) */
void ngx_chat_shm_count_bytes(ngx_chat_shm_ctx_t *ctx, uint64_t *bytes);
/* an error frame sent (code: one of ngx_chat_shm_error_codes) */
void ngx_chat_shm_count_error(ngx_chat_shm_ctx_t *ctx, char *code);
/* a close frame sent */
void ngx_chat_shm_count_close(ngx_chat_shm_ctx_t *ctx, ngx_uint_t code);
/* which: NGX_CHAT_SHM_LAG or NGX_CHAT_SHM_ACK; us: microseconds */
void ngx_chat_shm_observe(ngx_chat_shm_ctx_t *ctx, ngx_uint_t which,
    uint64_t us);
void ngx_chat_shm_set_pg_down(ngx_chat_shm_ctx_t *ctx, ngx_uint_t down);


#endif /* _NGX_CHAT_SHM_H_INCLUDED_ */
