
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The bus of a zone (see ngx_chat_bus.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat_frame.h"
#include "ngx_chat_bus.h"


#define ngx_chat_bus_align(n)   (((n) + 7) & ~((size_t) 7))


static uint64_t ngx_chat_bus_walk(ngx_chat_bus_t *bus, uint64_t from,
    uint64_t to, u_char *copy, ngx_chat_bus_pt handler, void *data);



size_t
ngx_chat_bus_size(size_t zone_size, size_t max_message)
{
    size_t  size, need;

    /* an entry: the message as JSON, its room, user, id and headers */

    need = 4 * (max_message + 2048);

    size = zone_size / 4;
    size = ngx_max(size, 64 * 1024);
    size = ngx_min(size, 16 * 1024 * 1024);
    size = ngx_max(size, need);

    if (size > zone_size / 2) {
        return 0;
    }

    return size & ~((size_t) 7);
}


/*
 * The bus: a byte ring of entries addressed by absolute positions.  The
 * writer overwrites the oldest entries; a reader that finds its position
 * below the tail knows it lost them.  Locked.
 */

ngx_int_t
ngx_chat_bus_append(ngx_chat_bus_t *bus, ngx_chat_bus_reader_t *rd,
    ngx_uint_t kind, ngx_uint_t flags, ngx_str_t *room, ngx_str_t *user,
    ngx_str_t *id, u_char *json, size_t jlen)
{
    u_char                *p;
    size_t                 len, hlen, phys;
    uint64_t               end;
    ngx_uint_t             i;
    ngx_chat_bus_entry_t  *e;

    hlen = ngx_chat_frame_header_size(jlen);

    len = ngx_chat_bus_align(sizeof(ngx_chat_bus_entry_t) + room->len
                             + (user ? user->len : 0) + (id ? id->len : 0)
                             + hlen + jlen);

    if (len > bus->size / 4) {
        return NGX_ERROR;
    }

    phys = bus->head % bus->size;

    end = bus->head + len;

    if (phys + len > bus->size) {
        end += bus->size - phys;
    }

    /* drop the entries the new one overwrites */

    while (bus->tail + bus->size < end) {
        i = bus->tail % bus->size;
        e = (ngx_chat_bus_entry_t *) (bus->data + i);

        if (i + sizeof(ngx_chat_bus_entry_t) > bus->size || e->len == 0) {
            bus->tail += bus->size - i;

        } else {
            bus->tail += e->len;
        }
    }

    if (phys + len > bus->size) {
        if (phys + sizeof(ngx_chat_bus_entry_t) <= bus->size) {
            e = (ngx_chat_bus_entry_t *) (bus->data + phys);
            e->len = 0;
        }

        bus->head += bus->size - phys;
        phys = 0;
    }

    e = (ngx_chat_bus_entry_t *) (bus->data + phys);
    e->len = (uint32_t) len;
    e->kind = (uint8_t) kind;
    e->flags = (uint8_t) flags;
    e->room_len = (uint16_t) room->len;
    e->user_len = user ? (uint32_t) user->len : 0;
    e->id_len = id ? (uint32_t) id->len : 0;
    e->frame_len = (uint32_t) (hlen + jlen);
    e->reserved = 0;
    e->accepted = (kind == NGX_CHAT_BUS_MESSAGE) ? ngx_chat_bus_clock() : 0;

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);
    p = ngx_cpymem(p, room->data, room->len);

    if (user) {
        p = ngx_cpymem(p, user->data, user->len);
    }

    if (id) {
        p = ngx_cpymem(p, id->data, id->len);
    }

    p += ngx_chat_frame_header(p, NGX_CHAT_FRAME_TEXT, jlen);
    ngx_memcpy(p, json, jlen);

    bus->head += len;

    /* wake the other workers, once until they read */

    for (i = 0; i < NGX_CHAT_MAX_WORKERS; i++) {
        if (bus->wake[i].pid == 0 || bus->wake[i].notified
            || (ngx_int_t) i == rd->slot)
        {
            continue;
        }

        bus->wake[i].notified = 1;

        if (rd->nnotify < NGX_CHAT_MAX_WORKERS) {
            rd->notify[rd->nnotify++] = bus->wake[i].name;
        }
    }

    return NGX_OK;
}


/*
 * The new entries are copied out under the lock with at most two memcpy()s
 * and handed to the handler after it is released: the handler (room lookup,
 * buffer allocation, copy) then runs without holding up the other workers.
 * Measured with perf on W2 (bench/, 10,000 connections, 5,000 msg/s): the
 * handler under the lock had the workers spinning in ngx_shmtx_lock().
 */

uint64_t
ngx_chat_bus_read(ngx_chat_bus_t *bus, ngx_shmtx_t *mutex,
    ngx_chat_bus_reader_t *rd, ngx_chat_bus_pt handler, void *data,
    ngx_log_t *log)
{
    u_char    *copy;
    size_t     phys, len, first, cap;
    uint64_t   lost, from, head;

    lost = 0;

    ngx_shmtx_lock(mutex);

    bus->wake[rd->slot].notified = 0;

    from = rd->read;

    if (from < bus->tail) {
        lost = bus->tail - from;
        from = bus->tail;
    }

    head = bus->head;

    if (head < from) {
        /* ahead of the bus (as the walk leaves it): nothing to read */
        head = from;
    }

    len = (size_t) (head - from);

    if (len > rd->copy_cap) {
        cap = ngx_max(len, ngx_max(2 * rd->copy_cap, 16384));
        cap = ngx_min(cap, ngx_max(bus->size, len));

        copy = ngx_alloc(cap, log);

        if (copy == NULL) {
            /* no memory: the handler runs under the lock, as it can */
            rd->read = ngx_chat_bus_walk(bus, from, head, NULL, handler,
                                         data);

            ngx_shmtx_unlock(mutex);
            return lost;
        }

        if (rd->copy) {
            ngx_free(rd->copy);
        }

        rd->copy = copy;
        rd->copy_cap = cap;
    }

    if (len) {
        /* logical byte "pos" goes to copy[pos - from] */
        phys = (size_t) (from % bus->size);
        first = ngx_min(len, bus->size - phys);

        ngx_memcpy(rd->copy, bus->data + phys, first);

        if (first < len) {
            ngx_memcpy(rd->copy + first, bus->data, len - first);
        }
    }

    rd->read = head;

    ngx_shmtx_unlock(mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "chat bus: read %uz bytes at %uL, lost %uL", len, from,
                   lost);

    (void) ngx_chat_bus_walk(bus, from, head, rd->copy, handler, data);

    return lost;
}


uint64_t
ngx_chat_bus_scan(ngx_chat_bus_t *bus, ngx_shmtx_t *mutex, uint64_t from,
    ngx_chat_bus_pt handler, void *data)
{
    uint64_t  pos;

    ngx_shmtx_lock(mutex);

    if (from < bus->tail) {
        from = bus->tail;
    }

    pos = ngx_chat_bus_walk(bus, from, bus->head, NULL, handler, data);

    ngx_shmtx_unlock(mutex);

    return pos;
}


/*
 * The entries from "from" to "to": in the bus itself (locked), or in a copy
 * of that stretch of it, where logical byte "pos" is copy[pos - from]
 */

static uint64_t
ngx_chat_bus_walk(ngx_chat_bus_t *bus, uint64_t from, uint64_t to,
    u_char *copy, ngx_chat_bus_pt handler, void *data)
{
    size_t                 phys;
    uint64_t               pos;
    ngx_chat_bus_entry_t  *e;

    for (pos = from; pos < to; /* void */) {
        phys = (size_t) (pos % bus->size);
        e = (ngx_chat_bus_entry_t *) (copy ? copy + (pos - from)
                                           : bus->data + phys);

        if (phys + sizeof(ngx_chat_bus_entry_t) > bus->size || e->len == 0) {
            pos += bus->size - phys;
            continue;
        }

        handler(data, pos, e);

        pos += e->len;
    }

    return pos;
}


void
ngx_chat_bus_attach(ngx_chat_bus_t *bus, ngx_chat_bus_reader_t *rd,
    ngx_uint_t slot, ngx_chat_bus_name_t *name)
{
    bus->wake[slot].pid = ngx_pid;
    bus->wake[slot].notified = 0;
    bus->wake[slot].name = *name;

    rd->slot = slot;
    rd->read = bus->head;
    rd->nnotify = 0;
}


void
ngx_chat_bus_detach(ngx_chat_bus_t *bus, ngx_uint_t slot)
{
    bus->wake[slot].pid = 0;
    bus->wake[slot].notified = 0;
    bus->wake[slot].name.len = 0;
}


void
ngx_chat_bus_reader_free(ngx_chat_bus_reader_t *rd)
{
    if (rd->copy) {
        ngx_free(rd->copy);
        rd->copy = NULL;
        rd->copy_cap = 0;
    }
}


void
ngx_chat_bus_parts(ngx_chat_bus_entry_t *e, ngx_chat_bus_parts_t *parts)
{
    u_char  *p;
    size_t   hlen;

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);

    parts->room.data = p;
    parts->room.len = e->room_len;
    p += e->room_len;

    parts->user.data = p;
    parts->user.len = e->user_len;
    p += e->user_len;

    parts->id.data = p;
    parts->id.len = e->id_len;
    p += e->id_len;

    parts->frame.data = p;
    parts->frame.len = e->frame_len;

    /* the frame's header: as ngx_chat_frame_header() wrote it */
    hlen = (p[1] & 0x7f) == 126 ? 4 : (p[1] & 0x7f) == 127 ? 10 : 2;

    parts->json.data = p + hlen;
    parts->json.len = e->frame_len - hlen;
}
