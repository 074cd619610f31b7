
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Fan-out across workers (see ngx_chat_fanout.h).  Why a bus in the zone
 * and datagram wake-ups: a message is serialised once, by the worker that
 * accepted it; other workers need only a wake-up, not the payload, so one
 * byte per worker per burst is all that crosses between processes, and a
 * slow worker costs nobody else anything.  Abstract UNIX datagram sockets
 * work across reloads and respawns without any descriptor being
 * inherited.
 *
 * Any local process can bind an abstract name or send to one (SPEC §8,
 * "Local neighbours"), so a worker's name is random, not derived from its
 * pid: if it is taken all the same, another is drawn, and at last the
 * kernel picks a free one; the name is published in the worker's slot of
 * each zone, where the others look it up.  A wake-up only means "read the
 * bus", so any datagram is harmless; reading them is bounded, and when one
 * comes from a process that is not a worker of these zones (or more come
 * than workers send), the socket is left alone for a few milliseconds and
 * the bus read on a timer instead, so that a flood cannot make the worker
 * spin.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <sys/un.h>
#include <sys/uio.h>
#include "ngx_chat.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"


#define NGX_CHAT_FANOUT_REAP      1000
#define NGX_CHAT_FANOUT_CACHE     4096   /* slots, a power of 2 */

/* the notification socket */
#define NGX_CHAT_FANOUT_BIND      8      /* random names tried */
#define NGX_CHAT_FANOUT_READS     32     /* datagrams read per event */
#define NGX_CHAT_FANOUT_PAUSE     10     /* ms it rests when flooded */
#define NGX_CHAT_FANOUT_RCVBUF    4096
#define NGX_CHAT_FANOUT_LOG       60     /* s between lines on a flood */

#if (NGX_LINUX && defined SO_PASSCRED && defined SCM_CREDENTIALS)
#define NGX_CHAT_FANOUT_CREDS     1      /* who sent a datagram */
#endif

#if (NGX_LINUX && defined MSG_WAITFORONE)
#define NGX_CHAT_FANOUT_MMSG      1      /* recvmmsg() */
#define NGX_CHAT_FANOUT_BATCH     NGX_CHAT_FANOUT_READS
typedef struct mmsghdr            ngx_chat_fanout_mmsg_t;
#else
#define NGX_CHAT_FANOUT_BATCH     1
typedef struct {
    struct msghdr                 msg_hdr;
} ngx_chat_fanout_mmsg_t;
#endif


typedef struct {
    ngx_chat_buf_t            *buf;
    ngx_chat_local_room_t     *room;
    uint64_t                   pos;
    uint64_t                   accepted;  /* MESSAGE: entered the bus */
    ngx_uint_t                 kind;
    ngx_uint_t                 flags;
    ngx_str_t                  user;
    ngx_str_t                  id;
} ngx_chat_fanout_pending_t;


static void ngx_chat_fanout_notify_handler(ngx_event_t *ev);
static void ngx_chat_fanout_wake_handler(ngx_event_t *ev);
static void ngx_chat_fanout_wake(ngx_chat_fanout_t *fo);
static ngx_int_t ngx_chat_fanout_read(ngx_connection_t *c);
#if (NGX_CHAT_FANOUT_CREDS)
static ngx_uint_t ngx_chat_fanout_from_worker(struct msghdr *msg,
    ngx_pid_t *pid);
#endif
static void ngx_chat_fanout_reap_handler(ngx_event_t *ev);
static ngx_chat_local_room_t *ngx_chat_fanout_find(ngx_chat_fanout_t *fo,
    ngx_str_t *name, uint32_t hash);
static void ngx_chat_fanout_room_free(ngx_chat_fanout_t *fo,
    ngx_chat_local_room_t *room);
static void ngx_chat_fanout_collect(void *data, uint64_t pos,
    ngx_chat_bus_entry_t *e);
static void ngx_chat_fanout_drain(ngx_chat_fanout_t *fo);
static ngx_uint_t ngx_chat_fanout_deliver(ngx_chat_member_t *m,
    ngx_chat_fanout_pending_t *pd, ngx_uint_t n);
static ngx_uint_t ngx_chat_fanout_had(ngx_chat_member_t *m, ngx_str_t *id);
static ngx_chat_buf_t *ngx_chat_fanout_batch(ngx_chat_fanout_pending_t *pd,
    ngx_uint_t n);
static void ngx_chat_fanout_observe(ngx_chat_fanout_t *fo,
    ngx_chat_fanout_pending_t *pd, ngx_uint_t n, ngx_uint_t delivered);
static void ngx_chat_fanout_lost(ngx_chat_fanout_t *fo, uint64_t lost);
static ngx_int_t ngx_chat_fanout_socket(ngx_cycle_t *cycle);
static ngx_int_t ngx_chat_fanout_bind(ngx_socket_t s, ngx_log_t *log);
static uint64_t ngx_chat_fanout_random(void);
static ngx_int_t ngx_chat_fanout_hold(ngx_chat_member_t *m,
    ngx_chat_fanout_pending_t *pd);
static void ngx_chat_fanout_address(struct sockaddr_un *sun,
    socklen_t *len, ngx_chat_bus_name_t *name);


static ngx_connection_t     *ngx_chat_fanout_conn;
static ngx_chat_bus_name_t   ngx_chat_fanout_name;   /* its name */
static ngx_event_t           ngx_chat_fanout_rest;   /* flooded: a timer */
static ngx_event_t           ngx_chat_fanout_waker;  /* posted: wake-ups */
static time_t                ngx_chat_fanout_logged;
static ngx_array_t           ngx_chat_fanout_zones;  /* of ngx_chat_fanout_t */


static void
ngx_chat_fanout_address(struct sockaddr_un *sun, socklen_t *len,
    ngx_chat_bus_name_t *name)
{
    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    /* abstract namespace: a leading NUL, no file */
    ngx_memcpy(sun->sun_path + 1, name->data, name->len);

    *len = offsetof(struct sockaddr_un, sun_path) + 1 + name->len;
}


ngx_int_t
ngx_chat_fanout_init_process(ngx_cycle_t *cycle, ngx_chat_main_conf_t *cmcf)
{
    ngx_uint_t            i;
    ngx_chat_fanout_t    *fo;
    ngx_chat_shm_ctx_t  **ctxp, *ctx;

    if (ngx_array_init(&ngx_chat_fanout_zones, cycle->pool, cmcf->zones.nelts,
                       sizeof(ngx_chat_fanout_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_chat_fanout_socket(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    ctxp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        ctx = ctxp[i];
        ctx->wslot = -1;

        if (ngx_chat_shm_worker_attach(ctx, &ngx_chat_fanout_name,
                                       cycle->log)
            != NGX_OK)
        {
            continue;
        }

        fo = ngx_array_push(&ngx_chat_fanout_zones);
        if (fo == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(fo, sizeof(ngx_chat_fanout_t));

        fo->zone = ctx;
        ngx_rbtree_init(&fo->rooms, &fo->sentinel,
                        ngx_str_rbtree_insert_value);

        /* without it, lookups walk the tree */
        fo->cache = ngx_pcalloc(cycle->pool, NGX_CHAT_FANOUT_CACHE
                                             * sizeof(ngx_chat_local_room_t *));

        if (ngx_array_init(&fo->pending, cycle->pool, 64,
                           sizeof(ngx_chat_fanout_pending_t))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        fo->reap.handler = ngx_chat_fanout_reap_handler;
        fo->reap.data = fo;
        fo->reap.log = cycle->log;
        fo->reap.cancelable = 1;
    }

    /* the array is complete: its elements no longer move */

    fo = ngx_chat_fanout_zones.elts;

    for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {

        /* a worker respawned after a crash clears what the old one held */

        if (ngx_chat_shm_reap(fo[i].zone, cycle->log)) {
            ngx_chat_fanout_publish(&fo[i]);
        }

        ngx_add_timer(&fo[i].reap, NGX_CHAT_FANOUT_REAP);
    }

    /*
     * not a turn of the event loop yet: a posted wake-up would wait for
     * the first event or timer
     */

    ngx_chat_fanout_wake_posted();

    return NGX_OK;
}


/* the wake-up posted for this turn, sent now (not waiting for the loop) */

void
ngx_chat_fanout_wake_posted(void)
{
    if (ngx_chat_fanout_waker.posted) {
        ngx_delete_posted_event(&ngx_chat_fanout_waker);
        ngx_chat_fanout_wake_handler(&ngx_chat_fanout_waker);
    }
}


/* this worker's notification socket, bound to its name */

static ngx_int_t
ngx_chat_fanout_socket(ngx_cycle_t *cycle)
{
    int                  value;
    ngx_socket_t         s;
    ngx_connection_t    *c;

    s = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "chat: socket(AF_UNIX) failed");
        return NGX_ERROR;
    }

    if (ngx_nonblocking(s) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      ngx_nonblocking_n " failed");
        ngx_close_socket(s);
        return NGX_ERROR;
    }

    /* wake-ups coalesce: a few bytes wait at a time, at most */

    value = NGX_CHAT_FANOUT_RCVBUF;

    if (setsockopt(s, SOL_SOCKET, SO_RCVBUF, (const void *) &value,
                   sizeof(int))
        == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "chat: setsockopt(SO_RCVBUF) failed, ignored");
    }

#if (NGX_CHAT_FANOUT_CREDS)

    /* every datagram comes with its sender's pid */

    value = 1;

    if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, (const void *) &value,
                   sizeof(int))
        == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "chat: setsockopt(SO_PASSCRED) failed");
        ngx_close_socket(s);
        return NGX_ERROR;
    }

#endif

    if (ngx_chat_fanout_bind(s, cycle->log) != NGX_OK) {
        ngx_close_socket(s);
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, cycle->log);
    if (c == NULL) {
        ngx_close_socket(s);
        return NGX_ERROR;
    }

    c->read->handler = ngx_chat_fanout_notify_handler;
    c->read->log = cycle->log;
    c->write->log = cycle->log;
    c->data = NULL;

    ngx_memzero(&ngx_chat_fanout_rest, sizeof(ngx_event_t));
    ngx_chat_fanout_rest.handler = ngx_chat_fanout_notify_handler;
    ngx_chat_fanout_rest.data = c;
    ngx_chat_fanout_rest.log = cycle->log;
    ngx_chat_fanout_rest.cancelable = 1;

    ngx_memzero(&ngx_chat_fanout_waker, sizeof(ngx_event_t));
    ngx_chat_fanout_waker.handler = ngx_chat_fanout_wake_handler;
    ngx_chat_fanout_waker.log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    ngx_chat_fanout_conn = c;

    return NGX_OK;
}


/*
 * The socket's name: "ngx_chat/<16 random hex digits>", nothing another
 * local user can guess (with "ngx_chat/<pid>", a process that had bound
 * the names of the next pids first made bind() fail, and each new worker
 * exit for good).  A name taken all the same: another one; after
 * NGX_CHAT_FANOUT_BIND of them, the kernel picks a free name (autobind).
 */

static ngx_int_t
ngx_chat_fanout_bind(ngx_socket_t s, ngx_log_t *log)
{
    u_char               *p;
    socklen_t             len;
    ngx_str_t             name;
    ngx_err_t             err;
    ngx_uint_t            i;
    struct sockaddr_un    sun;
    ngx_chat_bus_name_t  *bn;

    bn = &ngx_chat_fanout_name;

    for (i = 0; i < NGX_CHAT_FANOUT_BIND; i++) {
        p = ngx_sprintf(bn->data, "ngx_chat/%016xL", ngx_chat_fanout_random());
        bn->len = p - bn->data;

        ngx_chat_fanout_address(&sun, &len, bn);

        if (bind(s, (struct sockaddr *) &sun, len) == 0) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                           "chat fanout: notification socket \"@%*s\"",
                           bn->len, bn->data);
            return NGX_OK;
        }

        err = ngx_socket_errno;

        name.data = bn->data;
        name.len = bn->len;

        if (err != NGX_EADDRINUSE) {
            ngx_log_error(NGX_LOG_ALERT, log, err,
                          "chat: bind() of the notification socket "
                          "to \"@%V\" failed", &name);
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_WARN, log, err,
                      "chat: the notification socket name \"@%V\" is "
                      "taken, trying another one", &name);
    }

    ngx_memzero(&sun, sizeof(struct sockaddr_un));
    sun.sun_family = AF_UNIX;

    if (bind(s, (struct sockaddr *) &sun, sizeof(sa_family_t)) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_socket_errno,
                      "chat: bind() of the notification socket to a name "
                      "of the kernel's failed");
        return NGX_ERROR;
    }

    len = sizeof(struct sockaddr_un);

    if (getsockname(s, (struct sockaddr *) &sun, &len) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_socket_errno,
                      "chat: getsockname() of the notification socket "
                      "failed");
        return NGX_ERROR;
    }

    if (len <= offsetof(struct sockaddr_un, sun_path) + 1
        || sun.sun_path[0] != '\0'
        || len - offsetof(struct sockaddr_un, sun_path) - 1
           > NGX_CHAT_BUS_NAME_LEN)
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat: the kernel gave the notification socket an "
                      "unexpected name");
        return NGX_ERROR;
    }

    bn->len = len - offsetof(struct sockaddr_un, sun_path) - 1;
    ngx_memcpy(bn->data, sun.sun_path + 1, bn->len);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat fanout: notification socket \"@%*s\" (autobind)",
                   bn->len, bn->data);

    return NGX_OK;
}


/* ngx_random() is seeded from the pid and the time: guessable */

static uint64_t
ngx_chat_fanout_random(void)
{
    ssize_t    n;
    uint64_t   r;
    ngx_fd_t   fd;

    r = 0;

    fd = ngx_open_file("/dev/urandom", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd != NGX_INVALID_FILE) {
        n = ngx_read_fd(fd, &r, sizeof(uint64_t));

        if (n != (ssize_t) sizeof(uint64_t)) {
            r = 0;
        }

        (void) ngx_close_file(fd);
    }

    if (r == 0) {
        r = ((uint64_t) ngx_random() << 32) ^ (uint64_t) ngx_random()
            ^ ((uint64_t) ngx_pid << 16) ^ (uint64_t) ngx_current_msec;
    }

    return r;
}


ngx_chat_fanout_t *
ngx_chat_fanout_get(ngx_chat_shm_ctx_t *ctx)
{
    ngx_uint_t          i;
    ngx_chat_fanout_t  *fo;

    fo = ngx_chat_fanout_zones.elts;

    for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {
        if (fo[i].zone == ctx) {
            return &fo[i];
        }
    }

    return NULL;
}


void
ngx_chat_fanout_tap(ngx_chat_fanout_t *fo, ngx_chat_bus_pt entry,
    ngx_chat_fanout_flush_pt flush, void *data)
{
    fo->tap_entry = entry;
    fo->tap_flush = flush;
    fo->tap_data = data;
}


void
ngx_chat_fanout_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t          i;
    ngx_chat_fanout_t  *fo;

    fo = ngx_chat_fanout_zones.elts;

    for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {

        /* members still here leave: presence goes to the other workers */

        ngx_chat_shm_worker_detach(fo[i].zone);
        ngx_chat_fanout_wake(&fo[i]);
    }

    if (ngx_chat_fanout_waker.posted) {
        ngx_delete_posted_event(&ngx_chat_fanout_waker);
    }

    ngx_chat_fanout_zones.nelts = 0;

    ngx_chat_shm_exit_process();

    if (ngx_chat_fanout_rest.timer_set) {
        ngx_del_timer(&ngx_chat_fanout_rest);
    }

    if (ngx_chat_fanout_conn) {
        ngx_close_connection(ngx_chat_fanout_conn);
        ngx_chat_fanout_conn = NULL;
    }
}


static void
ngx_chat_fanout_reap_handler(ngx_event_t *ev)
{
    ngx_chat_fanout_t  *fo;

    fo = ev->data;

    if (ngx_chat_shm_reap(fo->zone, ev->log)) {
        ngx_chat_fanout_publish(fo);
    }

    ngx_add_timer(ev, NGX_CHAT_FANOUT_REAP);
}


/*
 * The worker's rooms: a tree, with a direct-mapped cache by hash in front
 * of it.  Every bus entry is looked up here by every worker; the tree walk
 * was a cache miss per level (perf, W2 at 1,000 rooms); the cache makes it
 * one or two.
 */

static ngx_chat_local_room_t *
ngx_chat_fanout_find(ngx_chat_fanout_t *fo, ngx_str_t *name, uint32_t hash)
{
    ngx_chat_local_room_t  **slot, *room;

    slot = fo->cache ? &fo->cache[hash & (NGX_CHAT_FANOUT_CACHE - 1)] : NULL;

    if (slot && *slot) {
        room = *slot;

        if (room->node.key == hash
            && room->name.len == name->len
            && ngx_memcmp(room->name.data, name->data, name->len) == 0)
        {
            return room;
        }
    }

    room = (ngx_chat_local_room_t *) ngx_str_rbtree_lookup(&fo->rooms, name,
                                                           hash);
    if (room && slot) {
        *slot = room;
    }

    return room;
}


static void
ngx_chat_fanout_room_free(ngx_chat_fanout_t *fo, ngx_chat_local_room_t *room)
{
    ngx_chat_local_room_t  **slot;

    if (fo->cache) {
        slot = &fo->cache[room->node.key & (NGX_CHAT_FANOUT_CACHE - 1)];

        if (*slot == room) {
            *slot = NULL;
        }
    }

    ngx_rbtree_delete(&fo->rooms, &room->node);
    ngx_free(room);
}


ngx_chat_member_t *
ngx_chat_fanout_add(ngx_chat_fanout_t *fo, ngx_str_t *name,
    ngx_chat_shm_room_t *shm_room, ngx_chat_ws_t *ws, uint64_t start)
{
    uint32_t                hash;
    ngx_chat_member_t      *m;
    ngx_chat_local_room_t  *room;

    hash = ngx_crc32_short(name->data, name->len);

    room = ngx_chat_fanout_find(fo, name, hash);

    if (room == NULL) {
        room = ngx_alloc(sizeof(ngx_chat_local_room_t) + name->len,
                         ws->connection->log);
        if (room == NULL) {
            return NULL;
        }

        room->name.data = (u_char *) room + sizeof(ngx_chat_local_room_t);
        room->name.len = name->len;
        ngx_memcpy(room->name.data, name->data, name->len);

        ngx_queue_init(&room->members);

        room->shm_room = shm_room;
        room->node.key = hash;
        ngx_rbtree_insert(&fo->rooms, &room->node);
    }

    m = ngx_alloc(sizeof(ngx_chat_member_t), ws->connection->log);
    if (m == NULL) {
        if (ngx_queue_empty(&room->members)) {
            ngx_chat_fanout_room_free(fo, room);
        }

        return NULL;
    }

    ngx_memzero(m, sizeof(ngx_chat_member_t));

    m->room = room;
    m->ws = ws;
    m->start = start;

    ngx_queue_insert_tail(&room->members, &m->queue);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "chat fanout: member of \"%V\" from bus %uL", name, start);

    return m;
}


static ngx_int_t
ngx_chat_fanout_hold(ngx_chat_member_t *m, ngx_chat_fanout_pending_t *pd)
{
    ngx_uint_t        n;
    ngx_chat_held_t  *held;

    if (m->ws->closing) {
        return NGX_OK;
    }

    if (m->held_bytes + pd->buf->len > m->ws->conf->send_buffer) {
        return NGX_ERROR;
    }

    if (m->nheld == m->held_cap) {
        n = m->held_cap ? 2 * m->held_cap : 8;

        held = ngx_alloc(n * sizeof(ngx_chat_held_t), ngx_cycle->log);
        if (held == NULL) {
            return NGX_ERROR;
        }

        if (m->held) {
            ngx_memcpy(held, m->held, m->nheld * sizeof(ngx_chat_held_t));
            ngx_free(m->held);
        }

        m->held = held;
        m->held_cap = n;
    }

    m->held[m->nheld].buf = pd->buf;
    m->held[m->nheld].id = pd->id;
    m->nheld++;
    m->held_bytes += pd->buf->len;
    pd->buf->refs++;

    return NGX_OK;
}


/* entries before pos are not delivered to the member (they reach it
 * otherwise: a history reply) */

void
ngx_chat_fanout_start(ngx_chat_member_t *m, uint64_t pos)
{
    if (pos > m->start) {
        m->start = pos;
    }
}


void
ngx_chat_fanout_release(ngx_chat_fanout_t *fo, ngx_chat_member_t *m)
{
    ngx_uint_t  i, out;

    m->hold = 0;
    out = 0;

    for (i = 0; i < m->nheld; i++) {
        if (ngx_chat_ws_send_buf(m->ws, m->held[i].buf) == NGX_OK
            && m->held[i].id.len)
        {
            out++;
        }

        ngx_chat_buf_release(m->held[i].buf);
    }

    if (m->held) {
        ngx_free(m->held);
    }

    m->held = NULL;
    m->nheld = 0;
    m->held_cap = 0;
    m->held_bytes = 0;

    if (out) {
        ngx_chat_shm_count_out(fo->zone, out);
    }
}


void
ngx_chat_fanout_remove(ngx_chat_fanout_t *fo, ngx_chat_member_t *m)
{
    ngx_uint_t              i;
    ngx_chat_local_room_t  *room;

    room = m->room;

    for (i = 0; i < m->nheld; i++) {
        ngx_chat_buf_release(m->held[i].buf);
    }

    if (m->held) {
        ngx_free(m->held);
    }

    ngx_queue_remove(&m->queue);
    ngx_free(m);

    if (ngx_queue_empty(&room->members)) {
        ngx_chat_fanout_room_free(fo, room);
    }
}


/*
 * The other workers are woken once per turn of the event loop, not once
 * per bus entry, and before this worker's own writes: the wake-up event
 * goes to the head of the posted events, ahead of the flush that writes
 * the local members (ngx_chat_ws.c), so that the other workers fan out in
 * parallel with it, and with every entry of the turn at once (W1 closed
 * loop: a worker woken at the first of several entries wrote every member
 * twice).  The local members get the entries now: the sender's own copy
 * must precede its ack in its queue.
 */

void
ngx_chat_fanout_publish(ngx_chat_fanout_t *fo)
{
    if (fo->zone->bus.nnotify && !ngx_chat_fanout_waker.posted) {
        ngx_chat_fanout_waker.posted = 1;
        ngx_queue_insert_head(&ngx_posted_events,
                              &ngx_chat_fanout_waker.queue);
    }

    ngx_chat_fanout_drain(fo);
}


static void
ngx_chat_fanout_wake_handler(ngx_event_t *ev)
{
    ngx_uint_t          i;
    ngx_chat_fanout_t  *fo;

    fo = ngx_chat_fanout_zones.elts;

    for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {
        ngx_chat_fanout_wake(&fo[i]);
    }
}


static void
ngx_chat_fanout_wake(ngx_chat_fanout_t *fo)
{
    ssize_t                 n;
    ngx_uint_t              i, j;
    socklen_t               len;
    struct sockaddr_un      sun;
    ngx_chat_bus_name_t    *name;
    ngx_chat_bus_reader_t  *bus;

    bus = &fo->zone->bus;

    for (i = 0; ngx_chat_fanout_conn && i < bus->nnotify; i++) {
        name = &bus->notify[i];

        /* flagged again after it read the bus: one wake-up is enough */

        for (j = 0; j < i; j++) {
            if (bus->notify[j].len == name->len
                && ngx_memcmp(bus->notify[j].data, name->data, name->len)
                   == 0)
            {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        ngx_chat_fanout_address(&sun, &len, name);

        n = sendto(ngx_chat_fanout_conn->fd, "", 1, 0,
                   (struct sockaddr *) &sun, len);

        /*
         * EAGAIN: that worker's socket is full of wake-ups already;
         * ECONNREFUSED: it is gone, the reaper will see to it
         */

        if (n == -1 && ngx_socket_errno != NGX_EAGAIN
            && ngx_socket_errno != NGX_ECONNREFUSED)
        {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log,
                           ngx_socket_errno,
                           "chat fanout: sendto \"@%*s\" failed",
                           name->len, name->data);
        }
    }

    bus->nnotify = 0;
}


/*
 * A wake-up, or the rest timer of a flooded socket (see the top of this
 * file): the datagrams waiting are read, a bounded number of them, and the
 * bus of every zone.  When the socket is flooded, it is not watched until
 * the timer has found it quiet.
 */

static void
ngx_chat_fanout_notify_handler(ngx_event_t *ev)
{
    ngx_int_t           rc;
    ngx_uint_t          i;
    ngx_connection_t   *c;
    ngx_chat_fanout_t  *fo;

    c = ev->data;

    rc = ngx_chat_fanout_read(c);

    fo = ngx_chat_fanout_zones.elts;

    for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {
        ngx_chat_fanout_drain(&fo[i]);
    }

    if (rc == NGX_BUSY) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "chat fanout: notification socket flooded, "
                       "resting %d ms", NGX_CHAT_FANOUT_PAUSE);

        if (c->read->active
            && ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "chat: cannot stop watching the notification "
                          "socket");
        }

        ngx_add_timer(&ngx_chat_fanout_rest, NGX_CHAT_FANOUT_PAUSE);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "chat: cannot watch the notification socket");
    }
}


/*
 * NGX_OK: every datagram read (the socket is empty), all from workers of
 * our zones; NGX_BUSY: one from another process, or more than the bound
 */

static ngx_int_t
ngx_chat_fanout_read(ngx_connection_t *c)
{
    u_char                   buf[NGX_CHAT_FANOUT_BATCH][8];
    ssize_t                  n;
    ngx_err_t                err;
    ngx_pid_t                pid, who;
    ngx_uint_t               i, k, stranger;
    struct iovec             iov[NGX_CHAT_FANOUT_BATCH];
    ngx_chat_fanout_mmsg_t   mm[NGX_CHAT_FANOUT_BATCH];
#if (NGX_CHAT_FANOUT_CREDS)
    union {
        struct cmsghdr       cm;
        u_char               data[CMSG_SPACE(sizeof(struct ucred))];
    }                        control[NGX_CHAT_FANOUT_BATCH];
#endif

    stranger = 0;
    pid = 0;
    who = 0;

    for (i = 0; i < NGX_CHAT_FANOUT_READS; /* void */) {

        k = ngx_min(NGX_CHAT_FANOUT_BATCH, NGX_CHAT_FANOUT_READS - i);

        ngx_memzero(mm, k * sizeof(ngx_chat_fanout_mmsg_t));

        for (n = 0; n < (ssize_t) k; n++) {
            iov[n].iov_base = buf[n];
            iov[n].iov_len = sizeof(buf[n]);
            mm[n].msg_hdr.msg_iov = &iov[n];
            mm[n].msg_hdr.msg_iovlen = 1;

#if (NGX_CHAT_FANOUT_CREDS)
            mm[n].msg_hdr.msg_control = &control[n];
            mm[n].msg_hdr.msg_controllen = sizeof(control[n]);
#endif
        }

        /*
         * one recvmmsg() takes every wake-up waiting: it stops at the
         * first EAGAIN, so fewer than asked means the socket is empty
         */

#if (NGX_CHAT_FANOUT_MMSG)
        n = recvmmsg(c->fd, mm, k, MSG_DONTWAIT, NULL);
#else
        n = recvmsg(c->fd, &mm[0].msg_hdr, 0);
        n = (n == -1) ? -1 : 1;
#endif

        if (n == -1) {
            err = ngx_socket_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            if (err == NGX_EAGAIN) {
                c->read->ready = 0;
                break;
            }

            ngx_log_error(NGX_LOG_ALERT, c->log, err,
                          "chat: recvmsg() on the notification socket "
                          "failed");
            return NGX_BUSY;
        }

#if (NGX_CHAT_FANOUT_CREDS)
        for (k = 0; k < (ngx_uint_t) n; k++) {
            if (!ngx_chat_fanout_from_worker(&mm[k].msg_hdr, &pid)) {
                stranger = 1;
                who = pid;
            }
        }
#endif

        i += n;

#if (NGX_CHAT_FANOUT_MMSG)
        if (i < NGX_CHAT_FANOUT_READS) {
            c->read->ready = 0;
            break;
        }
#endif
    }

    if (stranger && ngx_time() - ngx_chat_fanout_logged
                    >= NGX_CHAT_FANOUT_LOG)
    {
        ngx_chat_fanout_logged = ngx_time();

        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "chat: process %P, not a worker of this nginx, sends "
                      "datagrams to the notification socket \"@%*s\"; "
                      "while they come, it is read every %d ms", who,
                      ngx_chat_fanout_name.len, ngx_chat_fanout_name.data,
                      NGX_CHAT_FANOUT_PAUSE);
    }

    if (stranger || i == NGX_CHAT_FANOUT_READS) {
        return NGX_BUSY;
    }

    return NGX_OK;
}


#if (NGX_CHAT_FANOUT_CREDS)

/* the sender, as the kernel tells, is a worker attached to one of our zones */

static ngx_uint_t
ngx_chat_fanout_from_worker(struct msghdr *msg, ngx_pid_t *pid)
{
    ngx_uint_t          i;
    struct ucred        cred;
    struct cmsghdr     *cmsg;
    ngx_chat_fanout_t  *fo;

    for (cmsg = CMSG_FIRSTHDR(msg);
         cmsg != NULL;
         cmsg = CMSG_NXTHDR(msg, cmsg))
    {
        if (cmsg->cmsg_level != SOL_SOCKET
            || cmsg->cmsg_type != SCM_CREDENTIALS
            || cmsg->cmsg_len < CMSG_LEN(sizeof(struct ucred)))
        {
            continue;
        }

        ngx_memcpy(&cred, CMSG_DATA(cmsg), sizeof(struct ucred));

        *pid = cred.pid;

        fo = ngx_chat_fanout_zones.elts;

        for (i = 0; i < ngx_chat_fanout_zones.nelts; i++) {
            if (ngx_chat_shm_worker_known(fo[i].zone, cred.pid)) {
                return 1;
            }
        }

        return 0;
    }

    return 0;
}

#endif


/* each entry read: kept when this worker has members in its room */

static void
ngx_chat_fanout_collect(void *data, uint64_t pos, ngx_chat_bus_entry_t *e)
{
    ngx_chat_fanout_t *fo = data;

    u_char                     *p;
    uint32_t                    hash;
    ngx_str_t                   name;
    ngx_chat_buf_t             *b;
    ngx_chat_local_room_t      *room;
    ngx_chat_fanout_pending_t  *pd;

    if (fo->tap_entry) {
        fo->tap_entry(fo->tap_data, pos, e);
    }

    if (e->kind == NGX_CHAT_BUS_KICK) {
        /* chat_api disconnect: close frames only, the rest comes later */
        name.data = (u_char *) e + sizeof(ngx_chat_bus_entry_t)
                    + e->room_len;
        name.len = e->user_len;

        (void) ngx_chat_ws_close_user(&name, NGX_CHAT_CLOSE_POLICY,
                                      "disconnected");
        return;
    }

    if (e->kind != NGX_CHAT_BUS_MESSAGE && e->kind != NGX_CHAT_BUS_PRESENCE) {
        return;
    }

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);

    name.data = p;
    name.len = e->room_len;

    hash = ngx_crc32_short(name.data, name.len);

    room = ngx_chat_fanout_find(fo, &name, hash);
    if (room == NULL) {
        return;
    }

    b = ngx_chat_buf_alloc(e->frame_len + e->user_len + e->id_len,
                           ngx_cycle->log);
    if (b == NULL) {
        return;
    }

    p += e->room_len;

    /* the frame first, then the user a presence event skips, the id */

    ngx_memcpy(b->data, p + e->user_len + e->id_len, e->frame_len);
    ngx_memcpy(b->data + e->frame_len, p, e->user_len + e->id_len);
    b->len = e->frame_len;

    pd = ngx_array_push(&fo->pending);
    if (pd == NULL) {
        ngx_chat_buf_release(b);
        return;
    }

    pd->buf = b;
    pd->room = room;
    pd->pos = pos;
    pd->accepted = e->accepted;
    pd->kind = e->kind;
    pd->flags = e->flags;
    pd->user.data = b->data + e->frame_len;
    pd->user.len = e->user_len;
    pd->id.data = pd->user.data + e->user_len;
    pd->id.len = e->id_len;
}


/*
 * Entries are delivered in runs: consecutive entries of one room.  A run of
 * several messages (a closed-loop sender, a busy room: what one turn of the
 * event loop brought) is copied once into one buffer of all its frames,
 * and that buffer is what most members get: one queue slot and one
 * contiguous send() per member per turn, however many messages, instead of
 * one slot per message (a queue that outgrew its inline slots was an
 * allocation per member and turn: W1 closed loop, 7 frames per member) and
 * a writev() of as many pieces.  The first recipients are not held back:
 * it is still this turn's flush that writes them.  A member that needs the
 * frames one by one gets them one by one: one whose live stream starts
 * inside the run, one held for its history from storage, a
 * permessage-deflate one (each message is compressed on its own), and a
 * run with presence events (not sent to the user they are about).
 */

static void
ngx_chat_fanout_drain(ngx_chat_fanout_t *fo)
{
    uint64_t                    lost;
    ngx_uint_t                  i, j, out, sent;
    ngx_queue_t                *q;
    ngx_chat_ws_t              *ws;
    ngx_chat_buf_t             *batch;
    ngx_chat_member_t          *m;
    ngx_chat_local_room_t      *room;
    ngx_chat_fanout_pending_t  *pd;

    if (fo->zone->wslot < 0) {
        /* detached (worker exit): nothing to deliver any more */
        return;
    }

    fo->pending.nelts = 0;

    lost = ngx_chat_shm_bus_read(fo->zone, ngx_chat_fanout_collect, fo,
                                 ngx_cycle->log);

    if (lost) {
        ngx_chat_fanout_lost(fo, lost);
    }

    pd = fo->pending.elts;
    out = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat fanout: %ui entries of \"%V\" to deliver",
                   fo->pending.nelts, &fo->zone->name);

    for (i = 0; i < fo->pending.nelts; i = j) {

        room = pd[i].room;

        for (j = i + 1;
             j < fo->pending.nelts && pd[j].room == room;
             j++)
        {
            /* void */
        }

        batch = (j - i > 1) ? ngx_chat_fanout_batch(pd + i, j - i) : NULL;

        sent = out;

        for (q = ngx_queue_head(&room->members);
             q != ngx_queue_sentinel(&room->members);
             q = ngx_queue_next(q))
        {
            m = ngx_queue_data(q, ngx_chat_member_t, queue);
            ws = m->ws;

            if (batch && !m->hold && !ws->deflate && pd[i].pos >= m->start) {
                if (ngx_chat_ws_send_buf(ws, batch) == NGX_OK) {
                    out += j - i;
                }

                continue;
            }

            out += ngx_chat_fanout_deliver(m, pd + i, j - i);
        }

        if (batch) {
            ngx_chat_buf_release(batch);
        }

        ngx_chat_fanout_observe(fo, pd + i, j - i, out != sent);
    }

    fo->pending.nelts = 0;

    if (out) {
        ngx_chat_shm_count_out(fo->zone, out);
    }

    if (fo->tap_flush) {
        fo->tap_flush(fo->tap_data);
    }
}


/* the entries of a run one by one, to one member: how many messages went */

static ngx_uint_t
ngx_chat_fanout_deliver(ngx_chat_member_t *m, ngx_chat_fanout_pending_t *pd,
    ngx_uint_t n)
{
    ngx_uint_t      k, out;
    ngx_chat_ws_t  *ws;

    ws = m->ws;
    out = 0;

    for (k = 0; k < n; k++) {

        if (pd[k].pos < m->start) {
            continue;
        }

        if (pd[k].kind == NGX_CHAT_BUS_PRESENCE
            && ws->user.len == pd[k].user.len
            && ngx_memcmp(ws->user.data, pd[k].user.data, ws->user.len) == 0)
        {
            continue;
        }

        if ((pd[k].flags & NGX_CHAT_BUS_LATE) && m->since_tag
            && ngx_chat_fanout_had(m, &pd[k].id))
        {
            continue;
        }

        if (m->hold) {
            if (ngx_chat_fanout_hold(m, &pd[k]) != NGX_OK) {
                ngx_chat_ws_close(ws, NGX_CHAT_CLOSE_POLICY,
                                  "send buffer full");
            }

            continue;
        }

        if (ngx_chat_ws_send_buf(ws, pd[k].buf) == NGX_OK
            && pd[k].kind == NGX_CHAT_BUS_MESSAGE)
        {
            out++;
        }
    }

    return out;
}


/*
 * Whether a member had a message that came late (NGX_CHAT_BUS_LATE): its
 * join's "since" is of the same server, at or after it (a server's
 * messages reach a member in the order of their numbers)
 */

static ngx_uint_t
ngx_chat_fanout_had(ngx_chat_member_t *m, ngx_str_t *id)
{
    uint64_t  num, tag;

    return ngx_chat_remote_id_parse(id, &num, &tag) == NGX_OK
           && tag == m->since_tag && num <= m->since_num;
}


/*
 * The frames of a run of messages in one buffer (its one reference is the
 * caller's), or NULL: a run with a presence event, or no memory (the
 * members then get the frames one by one)
 */

static ngx_chat_buf_t *
ngx_chat_fanout_batch(ngx_chat_fanout_pending_t *pd, ngx_uint_t n)
{
    u_char          *p;
    size_t           len;
    ngx_uint_t       k;
    ngx_chat_buf_t  *b;

    len = 0;

    for (k = 0; k < n; k++) {
        if (pd[k].kind != NGX_CHAT_BUS_MESSAGE
            || (pd[k].flags & NGX_CHAT_BUS_LATE))
        {
            return NULL;
        }

        len += pd[k].buf->len;
    }

    b = ngx_chat_buf_alloc(len, ngx_cycle->log);
    if (b == NULL) {
        return NULL;
    }

    p = b->data;

    for (k = 0; k < n; k++) {
        p = ngx_cpymem(p, pd[k].buf->data, pd[k].buf->len);
    }

    return b;
}


/*
 * Delivery lag, once per message and worker, after its last member; the
 * run's buffers are released
 */

static void
ngx_chat_fanout_observe(ngx_chat_fanout_t *fo, ngx_chat_fanout_pending_t *pd,
    ngx_uint_t n, ngx_uint_t delivered)
{
    uint64_t    now;
    ngx_uint_t  k;

    now = 0;

    for (k = 0; k < n; k++) {

        if (delivered && pd[k].accepted) {
            if (now == 0) {
                now = ngx_chat_bus_clock();
            }

            ngx_chat_shm_observe(fo->zone, NGX_CHAT_SHM_LAG,
                                 now > pd[k].accepted
                                 ? now - pd[k].accepted : 0);
        }

        ngx_chat_buf_release(pd[k].buf);
    }
}


/*
 * This worker fell a whole ring behind: its members missed messages; they
 * are closed so that they resume with "since"
 */

static void
ngx_chat_fanout_lost(ngx_chat_fanout_t *fo, uint64_t lost)
{
    ngx_queue_t            *q;
    ngx_rbtree_node_t      *node;
    ngx_chat_member_t      *m;
    ngx_chat_local_room_t  *room;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "chat: worker fell behind the bus of zone \"%V\" by "
                  "%uL bytes, closing its members", &fo->zone->name, lost);

    if (fo->rooms.root == fo->rooms.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(fo->rooms.root, fo->rooms.sentinel);
         node;
         node = ngx_rbtree_next(&fo->rooms, node))
    {
        room = (ngx_chat_local_room_t *) node;

        for (q = ngx_queue_head(&room->members);
             q != ngx_queue_sentinel(&room->members);
             q = ngx_queue_next(q))
        {
            m = ngx_queue_data(q, ngx_chat_member_t, queue);
            ngx_chat_ws_close(m->ws, 1013, "missed messages");
        }
    }
}
