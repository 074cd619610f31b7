
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_BUS_H_INCLUDED_
#define _NGX_CHAT_BUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The bus of a zone: a byte ring of entries in the shared zone, addressed
 * by absolute positions (bytes ever written).  Each entry is one event of
 * a room (a message, a presence change, or an event only the relay reads)
 * with the serialised frame that members get.  The writer overwrites the
 * oldest entries; a reader that finds its position below the tail knows
 * it lost them.  Appending flags every other worker that is not flagged
 * yet (the wake-up flags coalesce wake-ups: at most one pending per
 * worker); the fan-out sends those workers their wake-up once the zone's
 * lock is released, to the socket name each worker published in its slot.
 * The bus lives in the zone but knows nothing of rooms: the zone passes
 * its ring and lock in.
 */


#define NGX_CHAT_MAX_WORKERS      64      /* worker slots of a zone */
#define NGX_CHAT_BUS_NAME_LEN     32      /* a wake-up socket's name */

#define NGX_CHAT_BUS_MESSAGE      1       /* delivered to members */
#define NGX_CHAT_BUS_PRESENCE     2       /* delivered to other users */
#define NGX_CHAT_BUS_RPRESENCE    3       /* relay: a user's first / last
                                             connection on this server */
#define NGX_CHAT_BUS_SUBSCRIBE    4       /* relay: first member here */
#define NGX_CHAT_BUS_UNSUBSCRIBE  5       /* relay: last member gone */
#define NGX_CHAT_BUS_KICK         6       /* chat_api disconnect: close
                                             the user's connections */

#define NGX_CHAT_BUS_REMOTE       0x01    /* came from another server */
#define NGX_CHAT_BUS_LEAVE        0x02    /* PRESENCE: a leave */
#define NGX_CHAT_BUS_LATE         0x04    /* MESSAGE: another server's
                                             history that came late
                                             (ngx_chat_remote_late()): not
                                             to a member whose resume was
                                             after it, from its server */


typedef struct {
    uint32_t                   len;       /* entry size; 0: wrap */
    uint8_t                    kind;
    uint8_t                    flags;
    uint16_t                   room_len;
    uint32_t                   user_len;  /* PRESENCE: user not to notify */
    uint32_t                   frame_len;
    uint32_t                   id_len;    /* MESSAGE: its id */
    uint32_t                   reserved;
    uint64_t                   accepted;  /* MESSAGE: ngx_chat_bus_clock()
                                             when it entered the bus */
    /* room, user, id, frame (WebSocket header and JSON) follow */
} ngx_chat_bus_entry_t;


/* microseconds of CLOCK_MONOTONIC: the same in every worker of a host */
static ngx_inline uint64_t
ngx_chat_bus_clock(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return 0;
    }

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* an entry's parts, pointing into it */
typedef struct {
    ngx_str_t                  room;
    ngx_str_t                  user;
    ngx_str_t                  id;
    ngx_str_t                  frame;     /* header and JSON */
    ngx_str_t                  json;      /* the frame's payload */
} ngx_chat_bus_parts_t;


/* where a worker's wake-ups go: an abstract socket name, without its NUL */
typedef struct {
    u_char                     data[NGX_CHAT_BUS_NAME_LEN];
    size_t                     len;
} ngx_chat_bus_name_t;


/* a worker slot's wake-up flag */
typedef struct {
    ngx_pid_t                  pid;       /* 0: no worker */
    ngx_uint_t                 notified;
    ngx_chat_bus_name_t        name;
} ngx_chat_bus_wake_t;


/* the ring, in the zone */
typedef struct {
    u_char                    *data;
    size_t                     size;
    uint64_t                   head;      /* bytes ever written */
    uint64_t                   tail;      /* oldest entry still there */
    uint64_t                   relay_pos; /* the relay's oldest entry not
                                             taken by Redis yet */
    ngx_chat_bus_wake_t        wake[NGX_CHAT_MAX_WORKERS];
} ngx_chat_bus_t;


/* a worker's reading state */
typedef struct {
    ngx_int_t                  slot;      /* its worker slot */
    uint64_t                   read;      /* what it has read up to */
    u_char                    *copy;      /* what the last read copied */
    size_t                     copy_cap;
    ngx_chat_bus_name_t        notify[NGX_CHAT_MAX_WORKERS]; /* to wake */
    ngx_uint_t                 nnotify;
} ngx_chat_bus_reader_t;


typedef void (*ngx_chat_bus_pt)(void *data, uint64_t pos,
    ngx_chat_bus_entry_t *e);


/*
 * The bus of a zone: a quarter of it within 64k..16m, but always room for
 * four entries of the largest message its locations accept; 0 when the
 * zone is too small for that
 */
size_t ngx_chat_bus_size(size_t zone_size, size_t max_message);

/*
 * Appends an entry (the caller holds the zone's lock) for the worker that
 * reads with rd; the frame is a text frame of json.  NGX_ERROR: larger
 * than a quarter of the bus
 */
ngx_int_t ngx_chat_bus_append(ngx_chat_bus_t *bus, ngx_chat_bus_reader_t *rd,
    ngx_uint_t kind, ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user,
    ngx_str_t *id, u_char *json, size_t len);

/*
 * Hands every entry this worker has not read yet to handler, after the
 * zone's lock (mutex) is released: the entries are copied out under it.
 * Returns the bytes of entries lost because this worker fell a whole ring
 * behind (0 normally).
 */
uint64_t ngx_chat_bus_read(ngx_chat_bus_t *bus, ngx_shmtx_t *mutex,
    ngx_chat_bus_reader_t *rd, ngx_chat_bus_pt handler, void *data,
    ngx_log_t *log);

/*
 * Hands the entries from "from" to the head that are still in the ring to
 * handler, under the zone's lock; returns where it stopped
 */
uint64_t ngx_chat_bus_scan(ngx_chat_bus_t *bus, ngx_shmtx_t *mutex,
    uint64_t from, ngx_chat_bus_pt handler, void *data);

/*
 * a worker takes a slot, with the name its wake-ups go to, or leaves it
 * (the caller holds the lock)
 */
void ngx_chat_bus_attach(ngx_chat_bus_t *bus, ngx_chat_bus_reader_t *rd,
    ngx_uint_t slot, ngx_chat_bus_name_t *name);
void ngx_chat_bus_detach(ngx_chat_bus_t *bus, ngx_uint_t slot);
void ngx_chat_bus_reader_free(ngx_chat_bus_reader_t *rd);

void ngx_chat_bus_parts(ngx_chat_bus_entry_t *e, ngx_chat_bus_parts_t *parts);


#endif /* _NGX_CHAT_BUS_H_INCLUDED_ */
