
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_FANOUT_H_INCLUDED_
#define _NGX_CHAT_FANOUT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_ws.h"


/*
 * Fan-out across workers.  Every worker keeps the members it serves in
 * local rooms.  A message is written once to the zone's bus; the writer
 * wakes the other workers with a one-byte datagram on their notification
 * socket (at most one pending per worker: the bus's wake-up flags coalesce
 * wake-ups; and one per turn of the writer's event loop, sent before its
 * own members are written), and each worker copies each new entry whose
 * room it has local members in once, then queues that one buffer to every
 * local member.
 *
 * A layer above may watch every bus entry this worker reads through a tap
 * (the relay does, in the worker that relays): entry is called for each
 * entry as read, flush once the entries read are delivered.
 */

typedef struct ngx_chat_fanout_s      ngx_chat_fanout_t;
typedef struct ngx_chat_local_room_s  ngx_chat_local_room_t;

typedef void (*ngx_chat_fanout_flush_pt)(void *data);


typedef struct {
    ngx_chat_buf_t            *buf;
    ngx_str_t                  id;        /* MESSAGE: its id, in buf */
} ngx_chat_held_t;


typedef struct {
    ngx_queue_t                queue;     /* in the local room */
    ngx_chat_local_room_t     *room;
    ngx_chat_ws_t             *ws;
    uint64_t                   start;     /* bus position of the join */
    uint64_t                   since_num; /* the join's "since": it had */
    uint64_t                   since_tag; /* what its server sent up to
                                             it (0: none) */

    /* live messages held while the history reply is being read */
    ngx_chat_held_t           *held;
    ngx_uint_t                 nheld;
    ngx_uint_t                 held_cap;
    size_t                     held_bytes;
    unsigned                   hold:1;
} ngx_chat_member_t;


struct ngx_chat_local_room_s {
    ngx_rbtree_node_t          node;
    ngx_str_t                  name;      /* as in ngx_str_node_t */
    ngx_queue_t                members;
    ngx_chat_shm_room_t       *shm_room;  /* the zone's, while members */
};


struct ngx_chat_fanout_s {
    ngx_chat_shm_ctx_t        *zone;
    ngx_rbtree_t               rooms;     /* of ngx_chat_local_room_t */
    ngx_rbtree_node_t          sentinel;
    ngx_chat_local_room_t    **cache;     /* by hash, in front of it */
    ngx_event_t                reap;      /* dead workers' members */
    ngx_array_t                pending;   /* entries read, to deliver */

    ngx_chat_bus_pt            tap_entry;
    ngx_chat_fanout_flush_pt   tap_flush;
    void                      *tap_data;
};


/*
 * Attaches this worker to every zone and starts the notification socket;
 * a zone the worker could not attach to has no fan-out (NULL from get)
 */
ngx_int_t ngx_chat_fanout_init_process(ngx_cycle_t *cycle,
    ngx_chat_main_conf_t *cmcf);
void ngx_chat_fanout_exit_process(ngx_cycle_t *cycle);

/* this worker's fan-out of a zone, or NULL */
ngx_chat_fanout_t *ngx_chat_fanout_get(ngx_chat_shm_ctx_t *ctx);

void ngx_chat_fanout_tap(ngx_chat_fanout_t *fo, ngx_chat_bus_pt entry,
    ngx_chat_fanout_flush_pt flush, void *data);

ngx_chat_member_t *ngx_chat_fanout_add(ngx_chat_fanout_t *fo,
    ngx_str_t *room, ngx_chat_shm_room_t *shm_room, ngx_chat_ws_t *ws,
    uint64_t start);
void ngx_chat_fanout_remove(ngx_chat_fanout_t *fo, ngx_chat_member_t *m);

/* sends what was held for the member, and delivers live from now on */
void ngx_chat_fanout_start(ngx_chat_member_t *m, uint64_t pos);
void ngx_chat_fanout_release(ngx_chat_fanout_t *fo, ngx_chat_member_t *m);

/* wakes the workers the last zone operations flagged, and reads the bus */
/* the other workers' wake-up posted for this turn, sent at once */
void ngx_chat_fanout_wake_posted(void);

void ngx_chat_fanout_publish(ngx_chat_fanout_t *fo);


#endif /* _NGX_CHAT_FANOUT_H_INCLUDED_ */
