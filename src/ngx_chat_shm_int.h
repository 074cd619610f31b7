
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_SHM_INT_H_INCLUDED_
#define _NGX_CHAT_SHM_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"


/*
 * The zone's layout, private to the zone's files (ngx_chat_shm.c and
 * ngx_chat_remote.c): nothing above the zone reads or writes these
 * structures, nor takes the zone's mutex.
 */


/* slots from here on are other servers (Redis relay), not workers */
#define NGX_CHAT_REMOTE_SLOT      1000

/*
 * What a zone from an earlier configuration must match to be adopted:
 * changed with every change of the structures below ("ch" and a number)
 */
#define NGX_CHAT_SHM_LAYOUT       0x63680011


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
    ngx_chat_rate_t            rate;      /* chat_rate: zone users only */
} ngx_chat_shm_user_t;


typedef struct {
    u_char                     id[NGX_CHAT_ID_LEN];
    uint32_t                   hash;      /* of the id, for the index */
    uint32_t                   refs;      /* the ring's, and replies' being
                                             written outside the lock */
    size_t                     id_len;
    size_t                     len;
    u_char                     data[1];   /* the "message" JSON object */
} ngx_chat_shm_msg_t;


/*
 * What this server has had of another server's messages in a room (the
 * relay's dedupe, ngx_chat_remote.c).  Each server's ids are ordered (the
 * number of "<number>-<tag>" grows within a zone, and one publisher
 * connection keeps their order), so "high", the highest number delivered
 * from that tag, recognises every live copy ever delivered without keeping
 * the ids.  A republish (after an outage) may bring older ones: those are
 * taken only inside the gap our resubscription opened, (gap_lo, gap_hi),
 * in order, so each at most once.
 */
typedef struct {
    uint64_t                   tag;       /* the sender's 48-bit tag */
    uint64_t                   high;
    uint64_t                   gap_lo;
    uint64_t                   gap_hi;    /* NGX_CHAT_SHM_GAP_OPEN until
                                             the first live message */
    ngx_uint_t                 unanswered;    /* no republish from it since
                                                 our resubscription */
    uint64_t                   floor;     /* the newest number the seen
                                             window forgot: at or below
                                             it, nothing is taken */
    ngx_msec_t                 catchup_at;    /* the sender is gone: when
                                                 to read what it left from
                                                 storage (again) */
    ngx_msec_t                 catchup_end;   /* when to give up */
    unsigned                   catchup:1;
} ngx_chat_shm_mark_t;


/*
 * The ids of other servers' messages this server delivered in a room,
 * the newest "cap" of them (4 x chat_history, at least 64): whatever path
 * a copy takes (live, a queue sent again, a republish), it is delivered
 * at most once while its id is in the window, and a number at or below a
 * sender's "floor" (what the window forgot) not at all.  A FIFO of the
 * ids and an index (open addressing, linear probing, twice the slots):
 * O(1) per message under the zone's lock.  Grows with the room's remote
 * messages up to cap; one slab block.
 */
typedef struct {
    uint64_t                   num;
    uint64_t                   tag;
} ngx_chat_shm_seen_id_t;

typedef struct {
    uint32_t                   cap;       /* ids now (a power of 2) */
    uint32_t                   max;       /* ids at most */
    uint32_t                   n;
    uint32_t                   head;      /* the oldest */
    ngx_chat_shm_seen_id_t    *fifo;      /* cap */
    uint64_t                  *keys;      /* 2 x cap, 0: free */
} ngx_chat_shm_seen_t;

#define NGX_CHAT_SHM_GAP_OPEN     ((uint64_t) -1)


struct ngx_chat_shm_room_s {
    ngx_rbtree_node_t          node;
    ngx_str_t                  name;      /* as in ngx_str_node_t */
    ngx_queue_t                lru;       /* in sh->empty when no member */
    ngx_uint_t                 in_lru;
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          sentinel;
    ngx_uint_t                 nusers;
    ngx_uint_t                 nconns;
    ngx_chat_shm_msg_t       **hist;      /* the ring, NULL while empty */
    uint32_t                  *index;     /* by id: ring slot + 1, or 0 */
    ngx_uint_t                 index_size;    /* a power of 2 */
    ngx_uint_t                 hist_cap;  /* slots now */
    ngx_uint_t                 hist_max;  /* chat_history of the room */
    ngx_uint_t                 hist_head; /* oldest */
    ngx_uint_t                 hist_n;
    uint64_t                   total;     /* messages ever posted */

    /* the relay: ngx_chat_remote.c */
    ngx_chat_shm_mark_t       *marks;
    uint32_t                   nmarks;
    uint32_t                   marks_cap;
    ngx_chat_shm_seen_t       *seen;      /* NULL until the first */
    uint64_t                   follow_num;    /* our id number when the
                                             room was followed (again):
                                             a republished message at or
                                             below it is history, not ours
                                             to deliver */
    uint64_t                   had_lo;    /* other servers' history rows
                                             numbered after had_lo, up to
                                             had_hi (follow_num) were all
                                             given by replies, and are in
                                             the seen window: one that is
                                             not came late (0, 0: none) */
    uint64_t                   had_hi;
    uint64_t                   prior;     /* the highest number of another
                                             server's message delivered
                                             here, whatever the path */
    ngx_msec_t                 unfollow_at;   /* when it was unfollowed
                                             (0: followed, or long ago) */
    uint64_t                   follow;    /* "total" when this server
                                             began to follow the room again
                                             after not following it: the
                                             ring may lack what other
                                             servers sent before */
    uint64_t                   catchup_num;   /* every other server's
                                             rows after it are read from
                                             storage: our subscriber was
                                             away, or a reply left one
                                             out as pending
                                             (ngx_chat_remote.c) */
    ngx_msec_t                 catchup_at;    /* when (again) */
    ngx_msec_t                 catchup_end;   /* when to give up */
    uint64_t                   unpublished;   /* the lowest number of
                                             ours the relay dropped unsent
                                             and not yet published again
                                             from storage, or 0 */
    uint64_t                   unpublished_top;   /* the highest */
    ngx_msec_t                 unpublished_at;    /* when to read (again) */
    ngx_msec_t                 unpublished_end;   /* when to give up */
    unsigned                   catchup:1;     /* catchup_num is due */
    unsigned                   catchup_read:1;    /* a read was begun */
    unsigned                   gap_any:1; /* new marks open a gap */
    unsigned                   subscribed:1;  /* Redis confirmed a
                                                 subscription once */
    unsigned                   followed:1;    /* the relay is subscribed
                                                 (also a few seconds after
                                                 the last member left) */
};


/* a chat_api publish's idempotency key, remembered for a while */
typedef struct {
    ngx_rbtree_node_t          node;      /* key: crc32 of the name */
    ngx_str_t                  name;      /* as in ngx_str_node_t */
    ngx_queue_t                queue;     /* oldest first */
    time_t                     expires;
    size_t                     id_len;    /* 0: its publish is under way */
    ngx_uint_t                 committed; /* stored, or no storage */
    u_char                     id[NGX_CHAT_ID_LEN];
} ngx_chat_shm_key_t;


typedef struct {
    ngx_pid_t                  pid;
    ngx_uint_t                 active;
    ngx_uint_t                 connections;
    ngx_uint_t                 pg_down;
} ngx_chat_shm_worker_t;


typedef struct {
    uint64_t                   id;
    ngx_msec_t                 last_seen;
    ngx_uint_t                 active;
} ngx_chat_shm_server_t;


typedef struct {
    ngx_atomic_t               bucket[NGX_CHAT_SHM_BUCKETS];
    ngx_atomic_t               sum;
} ngx_chat_shm_atomic_hist_t;


struct ngx_chat_shm_s {
    ngx_uint_t                 layout;    /* NGX_CHAT_SHM_LAYOUT */

    ngx_rbtree_t               rooms;
    ngx_rbtree_node_t          rooms_sentinel;
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          users_sentinel;
    ngx_queue_t                empty;     /* rooms kept only for history */
    ngx_queue_t                idle;      /* users kept only for rate */

    ngx_chat_shm_worker_t      workers[NGX_CHAT_MAX_WORKERS];

    ngx_chat_bus_t             bus;

    uint64_t                   last_id;

    /* the Redis relay: ngx_chat_remote.c */
    uint64_t                   server_id;
    ngx_pid_t                  relay_owner;
    ngx_uint_t                 redis_up;
    ngx_atomic_t               relay_dropped;
    ngx_atomic_t               relay_invalid;
    ngx_atomic_t               relay_duplicates;
    u_char                    *relay_handover;    /* a queue given by an
                                                     exiting owner */
    size_t                     relay_handover_len;
    ngx_chat_shm_server_t      servers[NGX_CHAT_MAX_SERVERS];
    ngx_uint_t                 catchups;  /* a mark may have a catch-up
                                             due (ngx_chat_remote.c) */
    ngx_pid_t                  catchup_pid;   /* the worker that made the
                                                 last ones */
    ngx_uint_t                 unpublished;   /* a room may have some
                                                 (ngx_chat_remote.c) */

    ngx_uint_t                 rooms_active;
    ngx_uint_t                 users_active;
    ngx_uint_t                 connections;
    ngx_atomic_t               messages_in;
    ngx_atomic_t               messages_out;
    ngx_atomic_t               rate_limited;
    ngx_atomic_t               zone_full;

    /* chat_api publish keys */
    ngx_rbtree_t               keys;
    ngx_rbtree_node_t          keys_sentinel;
    ngx_queue_t                keys_queue;
    ngx_uint_t                 nkeys;

    /* on the wire, and as they would be without permessage-deflate */
    ngx_atomic_t               bytes_in;
    ngx_atomic_t               bytes_in_raw;
    ngx_atomic_t               bytes_out;
    ngx_atomic_t               bytes_out_raw;

    /* chat_status: per code, and the histograms (ngx_chat_shm.h) */
    ngx_atomic_t               errors[NGX_CHAT_SHM_ERRORS];
    ngx_atomic_t               closes[NGX_CHAT_SHM_CLOSES];
    ngx_chat_shm_atomic_hist_t hist[NGX_CHAT_SHM_HISTOGRAMS];
};


/* references to ring messages, for a reply written outside the lock */
typedef struct {
    ngx_chat_shm_msg_t       **msgs;
    ngx_uint_t                 n;
    ngx_uint_t                 complete;
} ngx_chat_shm_snap_t;


/* everything below is called with the zone's mutex held */

void *ngx_chat_shm_alloc(ngx_chat_shm_ctx_t *ctx, size_t size);

ngx_chat_shm_room_t *ngx_chat_shm_room_lookup(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *name);
void ngx_chat_shm_room_release(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
void ngx_chat_shm_room_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_str_t *user, ngx_uint_t slot,
    ngx_uint_t count);

ngx_chat_shm_user_t *ngx_chat_shm_user_get(ngx_chat_shm_ctx_t *ctx,
    ngx_rbtree_t *tree, ngx_str_t *name, ngx_uint_t create);
void ngx_chat_shm_user_free(ngx_chat_shm_ctx_t *ctx, ngx_rbtree_t *tree,
    ngx_chat_shm_user_t *u);
ngx_int_t ngx_chat_shm_user_add(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_user_t *u, ngx_uint_t slot, ngx_int_t delta);
ngx_int_t ngx_chat_shm_user_slot(ngx_chat_shm_user_t *u, ngx_uint_t slot);
ngx_uint_t ngx_chat_shm_local_count(ngx_chat_shm_user_t *u);

ngx_int_t ngx_chat_shm_presence(ngx_chat_shm_ctx_t *ctx, ngx_str_t *room,
    ngx_str_t *user, ngx_uint_t join);

/* the ring: ngx_chat_shm_hist.c */
ngx_int_t ngx_chat_shm_hist_find(ngx_chat_shm_room_t *room, ngx_str_t *id);
ngx_uint_t ngx_chat_shm_hist_hole(ngx_chat_shm_room_t *room);
void ngx_chat_shm_hist_push(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_chat_shm_msg_t *msg);
void ngx_chat_shm_hist_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
void ngx_chat_shm_hist_free(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
void ngx_chat_shm_msg_release(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_msg_t *msg);

void ngx_chat_shm_reap_slot(ngx_chat_shm_ctx_t *ctx, ngx_uint_t slot);

/* the relay's marks of a room: ngx_chat_remote.c */
void ngx_chat_remote_room_follow(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
void ngx_chat_remote_room_free(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room);
ngx_uint_t ngx_chat_remote_room_history(ngx_chat_shm_room_t *room,
    ngx_str_t *id);
ngx_uint_t ngx_chat_remote_room_blind(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_str_t *since);
void ngx_chat_remote_room_place(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_chat_shm_place_t *place);

/* a remote server's user leaves a room */
void ngx_chat_shm_remote_drop(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_shm_room_t *room, ngx_chat_shm_user_t *u, ngx_uint_t slot,
    ngx_uint_t notify);

#define ngx_chat_shm_bus_append(ctx, kind, flags, room, user, id, json, len) \
    ngx_chat_bus_append(&(ctx)->sh->bus, &(ctx)->bus, kind, flags, room,   \
                        user, id, json, len)


#endif /* _NGX_CHAT_SHM_INT_H_INCLUDED_ */
