
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the bus (ngx_chat_bus.c) alone: the ring of
 * entries every worker of a zone reads, against a model.  It knows nothing
 * of rooms nor of the zone, so it runs without the stand-in nginx of
 * proto_fuzz: the zone's lock, ngx_alloc() (which can be made to fail),
 * ngx_pid and a silent log are defined here.
 *
 * Four workers' readers share a ring of 256 bytes to 38k (mostly under
 * 6k, so that it wraps and overwrites all the time).  Input: byte 0 sets the ring's size, then
 * operations, one byte each (the low 3 bits the operation, the next 2 the
 * worker) and the bytes it reads:
 *
 *   0 1 2  the worker appends an entry: 4 more bytes give its kind, flags
 *          and the lengths of its room, user, id and JSON
 *   3      the worker reads what it has not read yet
 *   4      scan from the start of an entry (1 more byte: which)
 *   5      the worker detaches, or attaches again (a new reader)
 *   6      the next ngx_alloc() fails (a read then walks under the lock)
 *   7      nothing (was: the worker relays; the relay keeps relay_pos
 *          itself now)
 *
 * The model keeps every entry appended and where it starts (with the
 * padding where the ring wraps), and predicts: which appends are refused
 * (over a quarter of the ring), which entries are overwritten (the tail),
 * the bytes each reader lost, and the entries each read and scan hands
 * over, in order, at their positions, with their room, user, id and frame
 * byte for byte (also through ngx_chat_bus_parts()); the handler runs
 * without the lock unless the copy could not be allocated; the wake-up
 * flags: an append flags each other attached worker once, until it reads.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat_frame.h"
#include "ngx_chat_bus.h"


#define NWORKER       4
#define PID0          1000

#define ASSERT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


/* what ngx_chat_bus.c needs of nginx */

ngx_pid_t         ngx_pid;

static ngx_uint_t  bfail;        /* the next ngx_alloc() fails */
static ngx_uint_t  bfailed;      /* and it did */
static ngx_uint_t  block;        /* the lock is held */


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    if (bfail) {
        bfail = 0;
        bfailed = 1;
        return NULL;
    }

    return malloc(size ? size : 1);
}


void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    ASSERT(!block);
    block = 1;
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    ASSERT(block);
    block = 0;
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


/* the model */

typedef struct {
    uint64_t     start;
    size_t       len;          /* of the entry, aligned; or of the pad */
    ngx_uint_t   pad;
    ngx_uint_t   seq;
    ngx_uint_t   kind, flags;
    size_t       room, user, id, json;
} bentry_t;


static ngx_log_t               blog;
static ngx_shmtx_t             bmutex;
static ngx_chat_bus_t          bbus;
static ngx_chat_bus_reader_t   brd[NWORKER];
static ngx_uint_t              battached[NWORKER];
static ngx_uint_t              bnotified[NWORKER];
static bentry_t               *bents;
static ngx_uint_t              nbents, capbents;
static ngx_uint_t              btail;       /* first entry in the ring */
static uint64_t                bhead;

/* what a read or scan is expected to hand over */
static ngx_uint_t              bnext;       /* index of the next entry */
static ngx_uint_t              bhanded;
static ngx_uint_t              bexpect_locked;


/* the bytes of a field of an entry */

static u_char
content(ngx_uint_t seq, ngx_uint_t field, size_t k)
{
    return (u_char) (seq * 31 + field * 7 + k * 13);
}


static void
fill(u_char *p, ngx_uint_t seq, ngx_uint_t field, size_t len)
{
    size_t  k;

    for (k = 0; k < len; k++) {
        p[k] = content(seq, field, k);
    }
}


static void
same(u_char *p, ngx_uint_t seq, ngx_uint_t field, size_t len)
{
    size_t  k;

    for (k = 0; k < len; k++) {
        ASSERT(p[k] == content(seq, field, k));
    }
}


static bentry_t *
bent_push(void)
{
    if (nbents == capbents) {
        capbents = capbents ? 2 * capbents : 64;
        bents = realloc(bents, capbents * sizeof(bentry_t));
        ASSERT(bents != NULL);
    }

    ngx_memzero(&bents[nbents], sizeof(bentry_t));

    return &bents[nbents++];
}


/* the next entry (not padding) from index i on */

static ngx_uint_t
next_entry(ngx_uint_t i)
{
    while (i < nbents && bents[i].pad) {
        i++;
    }

    return i;
}


/* the handler of reads and scans: the next entry the model has */

static void
handler(void *data, uint64_t pos, ngx_chat_bus_entry_t *e)
{
    u_char                *p;
    size_t                 hlen;
    bentry_t              *be;
    ngx_chat_bus_parts_t   parts;

    ASSERT(block == bexpect_locked);

    bnext = next_entry(bnext);
    ASSERT(bnext < nbents);

    be = &bents[bnext++];
    bhanded++;

    ASSERT(pos == be->start);
    ASSERT(e->len == be->len && e->kind == be->kind && e->flags == be->flags);
    ASSERT(e->room_len == be->room && e->user_len == be->user
           && e->id_len == be->id);

    hlen = ngx_chat_frame_header_size(be->json);
    ASSERT(e->frame_len == hlen + be->json);

    p = (u_char *) e + sizeof(ngx_chat_bus_entry_t);
    same(p, be->seq, 0, be->room);
    p += be->room;
    same(p, be->seq, 1, be->user);
    p += be->user;
    same(p, be->seq, 2, be->id);
    p += be->id;

    ASSERT(p[0] == (0x80 | NGX_CHAT_FRAME_TEXT));
    same(p + hlen, be->seq, 3, be->json);

    ngx_chat_bus_parts(e, &parts);

    ASSERT(parts.room.data == (u_char *) e + sizeof(ngx_chat_bus_entry_t)
           && parts.room.len == be->room);
    ASSERT(parts.user.data == parts.room.data + be->room
           && parts.user.len == be->user);
    ASSERT(parts.id.data == parts.user.data + be->user
           && parts.id.len == be->id);
    ASSERT(parts.frame.data == p && parts.frame.len == hlen + be->json);
    ASSERT(parts.json.data == p + hlen && parts.json.len == be->json);
}


/* the wake-up name of worker slot w */

static void
bname(ngx_uint_t w, ngx_chat_bus_name_t *nm)
{
    nm->len = snprintf((char *) nm->data, sizeof(nm->data), "fuzz/%u",
                       (unsigned) w);
}


static void
append(ngx_uint_t w, const uint8_t *q)
{
    u_char      *json;
    size_t       len, phys, hlen;
    uint64_t     end;
    ngx_int_t    rc;
    ngx_str_t    room, user, id;
    ngx_uint_t   i, seq, n;
    bentry_t    *be, *pad;
    ngx_uint_t   expect[NWORKER];
    ngx_chat_bus_name_t  nm;

    static u_char  buf[3][256];

    if (!battached[w]) {
        return;
    }

    seq = nbents;

    room.len = 1 + q[1] % 128;
    user.len = q[2] % 64;
    id.len = q[3] % 32;
    len = ((size_t) q[0] << 3 | q[3] >> 5) % (bbus.size / 2 + 1);

    room.data = buf[0];
    user.data = buf[1];
    id.data = buf[2];
    fill(room.data, seq, 0, room.len);
    fill(user.data, seq, 1, user.len);
    fill(id.data, seq, 2, id.len);

    json = malloc(len ? len : 1);
    ASSERT(json != NULL);
    fill(json, seq, 3, len);

    /* as the zone appends: under its lock */

    ngx_shmtx_lock(&bmutex);
    rc = ngx_chat_bus_append(&bbus, &brd[w], 1 + q[0] % 5, q[1] >> 7,
                             &room, user.len ? &user : NULL,
                             id.len ? &id : NULL, json, len);
    ngx_shmtx_unlock(&bmutex);

    free(json);

    hlen = ngx_chat_frame_header_size(len);
    n = (sizeof(ngx_chat_bus_entry_t) + room.len + user.len + id.len + hlen
         + len + 7) & ~((size_t) 7);

    if (n > bbus.size / 4) {
        /* too large: nothing changes */
        ASSERT(rc == NGX_ERROR && bbus.head == bhead);
        ASSERT(brd[w].nnotify == 0);
        return;
    }

    ASSERT(rc == NGX_OK);

    phys = bhead % bbus.size;
    end = bhead + n;

    if (phys + n > bbus.size) {
        /* it does not fit before the end of the ring: padding, and on */
        end += bbus.size - phys;

        pad = bent_push();
        pad->start = bhead;
        pad->len = bbus.size - phys;
        pad->pad = 1;
    }

    be = bent_push();
    be->start = end - n;
    be->len = n;
    be->seq = seq;
    be->kind = 1 + q[0] % 5;
    be->flags = q[1] >> 7;
    be->room = room.len;
    be->user = user.len;
    be->id = id.len;
    be->json = len;

    bhead = end;

    /* the oldest entries it overwrites */

    while (btail < nbents && bents[btail].start + bbus.size < end) {
        btail++;
    }

    ASSERT(bbus.head == bhead);
    ASSERT(bbus.tail == (btail < nbents ? bents[btail].start : bhead));

    /* every other attached worker not flagged yet is, once */

    n = 0;

    for (i = 0; i < NWORKER; i++) {
        if (i != w && battached[i] && !bnotified[i]) {
            bnotified[i] = 1;
            expect[n++] = i;
        }
    }

    ASSERT(brd[w].nnotify == n);

    for (i = 0; i < n; i++) {
        bname(expect[i], &nm);
        ASSERT(brd[w].notify[i].len == nm.len
               && memcmp(brd[w].notify[i].data, nm.data, nm.len) == 0);
    }

    /* the fan-out sends them their wake-up */
    brd[w].nnotify = 0;
}


/* the first entry (or padding) at or after pos */

static ngx_uint_t
entry_at(uint64_t pos)
{
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = nbents;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (bents[mid].start < pos) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    return lo;
}


/* a read or scan from "from" on: how many entries it is to hand over */

static ngx_uint_t
expect_from(uint64_t from)
{
    ngx_uint_t  i, n;

    if (from < (btail < nbents ? bents[btail].start : bhead)) {
        from = btail < nbents ? bents[btail].start : bhead;
    }

    bnext = entry_at(from);
    bhanded = 0;

    /* how many the walk is to hand over */

    for (n = 0, i = next_entry(bnext); i < nbents; i = next_entry(i + 1)) {
        n++;
    }

    return n;
}


static void
bread(ngx_uint_t w)
{
    uint64_t    from, tail, lost;
    ngx_uint_t  n;

    if (!battached[w]) {
        return;
    }

    from = brd[w].read;
    tail = btail < nbents ? bents[btail].start : bhead;

    n = expect_from(from);

    /* the handler runs under the lock only when there was no copy */
    bfailed = 0;
    bexpect_locked = 0;

    if (bfail && bhead - ngx_max(from, tail) > brd[w].copy_cap) {
        bexpect_locked = 1;
    }

    lost = ngx_chat_bus_read(&bbus, &bmutex, &brd[w], handler, NULL, &blog);

    ASSERT(!block);
    ASSERT(bexpect_locked == bfailed);
    ASSERT(lost == (from < tail ? tail - from : 0));
    ASSERT(bhanded == n);
    ASSERT(brd[w].read == bhead);
    ASSERT(bbus.wake[w].notified == 0);

    bnotified[w] = 0;
}


static void
bscan(uint8_t which)
{
    uint64_t    from, pos;
    ngx_uint_t  n;

    /* from the start of an entry, maybe one overwritten, or the head */

    from = (nbents && which < 255) ? bents[which % nbents].start : bhead;

    n = expect_from(from);
    bexpect_locked = 1;

    pos = ngx_chat_bus_scan(&bbus, &bmutex, from, handler, NULL);

    ASSERT(!block);
    ASSERT(pos == bhead && bhanded == n);
}


static void
battach(ngx_uint_t w)
{
    ngx_chat_bus_name_t  nm;

    ngx_pid = PID0 + w;

    ngx_shmtx_lock(&bmutex);
    bname(w, &nm);
    ngx_chat_bus_attach(&bbus, &brd[w], w, &nm);
    ngx_shmtx_unlock(&bmutex);

    ASSERT(bbus.wake[w].pid == PID0 + (ngx_pid_t) w);
    ASSERT(!bbus.wake[w].notified);
    ASSERT(brd[w].slot == (ngx_int_t) w && brd[w].read == bhead);

    battached[w] = 1;
    bnotified[w] = 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t      i;
    ngx_uint_t  w, k;

    if (size < 1) {
        return 0;
    }

    ngx_memzero(&bbus, sizeof(ngx_chat_bus_t));
    ngx_memzero(brd, sizeof(brd));

    /* mostly small, to wrap often; over 16k, a reader's copy regrows */
    bbus.size = 8 * (32 + (data[0] < 192 ? 4 * (size_t) data[0]
                                          : 64 * (size_t) (data[0] - 180)));
    bbus.data = malloc(bbus.size);
    ASSERT(bbus.data != NULL);

    nbents = 0;
    btail = 0;
    bhead = 0;
    bfail = 0;

    for (w = 0; w < NWORKER; w++) {
        battach(w);
    }

    for (i = 1; i < size; /* void */) {
        w = (data[i] >> 3) & 3;
        k = data[i] & 7;
        i++;

        switch (k) {

        case 0: case 1: case 2:
            if (size - i < 4) {
                goto done;
            }

            append(w, data + i);
            i += 4;
            break;

        case 3:
            bread(w);
            break;

        case 4:
            if (i == size) {
                goto done;
            }

            bscan(data[i++]);
            break;

        case 5:
            if (battached[w]) {
                ngx_shmtx_lock(&bmutex);
                ngx_chat_bus_detach(&bbus, w);
                ngx_shmtx_unlock(&bmutex);
                ngx_chat_bus_reader_free(&brd[w]);

                ASSERT(bbus.wake[w].pid == 0 && !bbus.wake[w].notified);
                battached[w] = 0;

            } else {
                battach(w);
            }

            break;

        case 6:
            bfail = 1;
            break;

        default: /* 7 */
            break;
        }
    }

done:

    for (w = 0; w < NWORKER; w++) {
        bread(w);
        ngx_chat_bus_reader_free(&brd[w]);
    }

    free(bbus.data);

    return 0;
}
