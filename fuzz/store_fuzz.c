
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the merge of stored history rows with the zone's
 * ring (ngx_chat_proto_read_frame() and the read queue of
 * ngx_chat_proto.c), reached through the real path: the protocol layer
 * with the real zone, fan-out and connection layer on the stand-in nginx
 * of ngx_fuzz_runtime.c, as proto_fuzz.c drives them, but with storage on
 * (the zone's ctx->store set, as postconfiguration sets it with
 * chat_postgres) and a fake store in place of ngx_chat_store.c:
 *
 *   - ngx_chat_store_add() queues the message; it is committed (put in the
 *     fake table, then it->done, the ack) when the input says (@a);
 *   - ngx_chat_store_history() answers from the fake table (LAST: the
 *     newest limit rows; SINCE: the rows after id, none when the id is not
 *     stored (ids are compared as storage does, exactly: with the tag);
 *     BEFORE: the limit rows before id; newest first, "found"),
 *     at once, later (@d), with a failure (NULL rows), or returns
 *     NGX_DECLINED or NGX_BUSY, as the input says (@m);
 *   - the table may hold old rows of a room (@o), older than every message
 *     of the run: rows the ring never had.
 *
 * One worker, three connections: 0 "alice" and 2 "carol" (chat_history 5,
 * chat_max_rooms 4), 1 "bob" (chat_history 3, chat_max_rooms 2); no rate
 * limit, 1 MB send buffers, clients that always read.
 *
 * Input: lines separated by '\n'.  A line is one client text message (one
 * frame) on the current connection, except a line of "@" and a command:
 *
 *   @0 .. @2   make that connection current (and open it if closed)
 *   @x         the current connection drops
 *   @aN        the N oldest messages queued for storage commit (default:
 *              all), acks in order
 *   @dN        the N-th queued read (from 0, default 0) is answered
 *   @D         every queued read is answered, in order
 *   @mMODES    how the next reads are answered, one letter each, in turn:
 *              q later (@d), s at once, f failed at once, F failed later,
 *              D NGX_DECLINED, B NGX_BUSY (default: q)
 *   @F         storage full on / off (sends refused)
 *   @b         the worker's reads full on / off (history refused)
 *   @oN ROOM   N old rows for ROOM in the table (while no read waits)
 *
 * After each line every frame queued is written to its client and
 * checked: valid JSON; each history reply (to a join with "history" or
 * "since", or to "history") is matched with its request: reads from
 * storage are answered in the connection's order, each reply to a join
 * comes before any live message of its room and shares no message with
 * what comes live after it; messages oldest first, no duplicate, at most
 * the limit (1000 for since), each a message of the room (sent in this
 * run or an old row) with its content; "complete" true only when the
 * reply is exactly what was asked for (SPEC §4).  The fake store checks
 * that a connection never has more than one read in flight, and the
 * harness that at most chat_max_rooms wait behind it (beyond: history
 * requests are refused with rate_limited).  A room left and joined again
 * while its read is in flight: the old read must not release the new
 * join's hold.
 *
 * Known, not fixed (fuzz/repro/README, "store-uncommitted"): a reply is
 * "complete" although messages neither committed nor in the ring any
 * more are missing; the check is skipped for such reads unless
 * STORE_FUZZ_STRICT is defined.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_chat.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"     /* sh->connections, at the end */
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_proto.h"
#include "ngx_chat_store.h"
#include "ngx_fuzz_runtime.h"


#define NCONN             3
#define ZONE_SIZE         (160 * 1024)
#define MAX_DELIVERIES    400
#define MAX_ROOMS         16
#define MAX_FIFO          64
#define MAX_MODES         16
#define CLOCK_SEC         1700000000
#define CLOCK_MSEC        1000000
#define FAKE_FD           0x3fff0000
#define OLD_BASE          ((uint64_t) CLOCK_SEC * 1000 * 1000)

#define WS_KEY            "dGhlIHNhbXBsZSBub25jZQ=="

#define ASSERT(cond)      ngx_fuzz_assert(cond)


/* a message of the run or an old row: the truth */

typedef struct {
    uint64_t                   id;
    char                      *user;
    char                      *content;
    uint64_t                   ts;
    ngx_uint_t                 committed;
} tmsg_t;


typedef struct {
    char                       name[NGX_CHAT_MAX_ROOM_NAME + 1];
    size_t                     len;
    tmsg_t                    *msgs;        /* by id */
    ngx_uint_t                 n, cap;
    ngx_uint_t                 olds;
} troom_t;


/* a history reply a connection waits for from storage */

typedef struct {
    troom_t                   *room;
    ngx_uint_t                 join;
    ngx_uint_t                 mode;
    ngx_uint_t                 limit;
    uint64_t                   id;          /* since, before */
    ngx_uint_t                 last;        /* messages of the room then */
} expect_t;


typedef struct {
    troom_t                   *room;
    ngx_uint_t                 awaiting;    /* a join's reply from storage */
    uint64_t                   reply_max;
    uint64_t                   live_max;
} mroom_t;


typedef struct {
    ngx_uint_t                 index;
    ngx_uint_t                 open;
    ngx_uint_t                 gen;
    ngx_chat_loc_conf_t       *conf;
    const char                *user;

    ngx_connection_t          *c;
    ngx_log_t                  log;
    ngx_chat_ws_t             *ws;
    ngx_chat_ws_message_pt     message;
    ngx_http_complex_value_t   user_cv;

    json_t                    *got[256];    /* this step's frames */
    ngx_uint_t                 ngot;

    mroom_t                    rooms[MAX_ROOMS];
    ngx_uint_t                 nrooms;

    expect_t                   fifo[MAX_FIFO];
    ngx_uint_t                 nfifo;

    ngx_uint_t                 inflight;    /* calls into the fake store */
    ngx_uint_t                 orphan;      /* the read in flight is of a
                                               room left: it still counts */
} fconn_t;


/* a read the fake store will answer */

typedef struct {
    ngx_chat_store_read_pt     handler;
    void                      *data;
    fconn_t                   *fc;
    ngx_uint_t                 gen;
    ngx_uint_t                 fail;
    ngx_uint_t                 mode;
    troom_t                   *room;
    ngx_str_t                  id;
    ngx_uint_t                 limit;
    uint64_t                  *ring;        /* the ring's ids at the call */
    ngx_uint_t                 nring;
    ngx_uint_t                 last;        /* messages of the room then */
} fread_t;


/* what the current step's message asked for */

typedef struct {
    fconn_t                   *sender;
    ngx_uint_t                 kind;        /* 0 none, 1 join, 2 history,
                                               3 leave */
    ngx_uint_t                 want;        /* a history reply */
    expect_t                   ex;
    ngx_uint_t                 member;      /* before the request */
    ngx_uint_t                 replied;
    ngx_uint_t                 joined;
    ngx_uint_t                 limited;
    ngx_uint_t                 error;
    ngx_uint_t                 fifo_before;
} fstep_t;


static ngx_log_t               flog;
static ngx_cycle_t             fcycle;
static ngx_chat_main_conf_t    fcmcf;
static ngx_chat_shm_ctx_t     *fzones[1];
static ngx_chat_shm_ctx_t      fctx;
static ngx_shm_zone_t          fshm_zone;
static ngx_chat_fanout_t      *ffo;
static ngx_fuzz_zone_t        *fzone;
static ngx_connection_t       *fnotify;
static ngx_chat_loc_conf_t     fconfs[2];
static fconn_t                 fconns[NCONN];
static ngx_table_elt_t         fheaders[4];
static fstep_t                 fstep;

static troom_t                 frooms[MAX_ROOMS];
static ngx_uint_t              nfrooms;

static ngx_queue_t             fitems;      /* waiting for commit */
static fread_t                *freads[MAX_FIFO * NCONN];
static ngx_uint_t              nfreads;
static u_char                  fmodes[MAX_MODES];
static ngx_uint_t              nfmodes, fmode_next;
static ngx_uint_t              ffull, freads_full;
static fconn_t                *fcontext;    /* whose read is made now */
static uint64_t                fold_next;
static ngx_uint_t              flossy;      /* complete not checked */

static struct {
    u_char                    *pos;
    size_t                     len;
    ngx_uint_t                 eof;
} fwire;


static const struct {
    ngx_uint_t   conf;
    const char  *user;
} fconn_defaults[NCONN] = {
    { 0, "alice" },
    { 1, "bob" },
    { 0, "carol" },
};


/* the truth */

static troom_t *
troom_get(const char *name, size_t len, ngx_uint_t create)
{
    ngx_uint_t  i;
    troom_t    *r;

    for (i = 0; i < nfrooms; i++) {
        if (frooms[i].len == len && memcmp(frooms[i].name, name, len) == 0) {
            return &frooms[i];
        }
    }

    if (!create || nfrooms == MAX_ROOMS || len > NGX_CHAT_MAX_ROOM_NAME) {
        return NULL;
    }

    r = &frooms[nfrooms++];
    ngx_memzero(r, sizeof(troom_t));
    memcpy(r->name, name, len);
    r->len = len;

    return r;
}


static tmsg_t *
troom_add(troom_t *r, uint64_t id, const char *user, size_t ulen,
    const char *content, size_t clen, uint64_t ts)
{
    ngx_uint_t  k;
    tmsg_t     *m;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->msgs = realloc(r->msgs, r->cap * sizeof(tmsg_t));
        ASSERT(r->msgs != NULL);
    }

    /* by id: old rows go in front */
    for (k = r->n; k > 0 && r->msgs[k - 1].id > id; k--) { /* void */ }
    ASSERT(k == 0 || r->msgs[k - 1].id != id);

    memmove(&r->msgs[k + 1], &r->msgs[k], (r->n - k) * sizeof(tmsg_t));
    r->n++;

    m = &r->msgs[k];
    m->id = id;
    m->user = strndup(user, ulen);
    m->content = malloc(clen + 1);
    ASSERT(m->user != NULL && m->content != NULL);
    memcpy(m->content, content, clen);
    m->content[clen] = '\0';
    m->ts = ts;
    m->committed = 0;

    return m;
}


/* position of id in the room, or -1 */

static ngx_int_t
troom_pos(troom_t *r, uint64_t id)
{
    ngx_uint_t  i;

    for (i = 0; i < r->n; i++) {
        if (r->msgs[i].id == id) {
            return i;
        }
    }

    return -1;
}


static void
truth_free(void)
{
    ngx_uint_t  i, k;

    for (i = 0; i < nfrooms; i++) {
        for (k = 0; k < frooms[i].n; k++) {
            free(frooms[i].msgs[k].user);
            free(frooms[i].msgs[k].content);
        }

        free(frooms[i].msgs);
    }

    nfrooms = 0;
}


/* a decimal id as the zone writes them, or 0 */

static uint64_t
parse_id(const u_char *p, size_t len)
{
    size_t    i;
    uint64_t  v;

    /* the zone's tag, fixed here: "-000000000000" */
    if (len > 13 && ngx_strncmp(p + len - 13, "-000000000000", 13) == 0) {
        len -= 13;
    }

    if (len == 0 || len > 19 || p[0] == '0') {
        return 0;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }

        v = v * 10 + (p[i] - '0');
    }

    return v;
}


/*
 * An id a client names (since, before): the same message only with the
 * tag, as storage and the ring compare ids (exactly); an untagged number
 * is no id of the run (0)
 */

static uint64_t
parse_tagged(const u_char *p, size_t len)
{
    if (len <= 13 || ngx_strncmp(p + len - 13, "-000000000000", 13) != 0) {
        return 0;
    }

    return parse_id(p, len);
}


/* the fake store */

ngx_uint_t
ngx_chat_store_enabled(void)
{
    return 1;
}


ngx_uint_t
ngx_chat_store_full(void)
{
    return ffull;
}


ngx_uint_t
ngx_chat_store_reads_full(void)
{
    return freads_full;
}


ngx_chat_store_item_t *
ngx_chat_store_add(ngx_str_t *id, ngx_str_t *zone, ngx_str_t *room,
    ngx_str_t *user, ngx_str_t *content, uint64_t ts, ngx_str_t *ref,
    uint64_t prior, ngx_str_t *holes)
{
    u_char                 *p;
    uint64_t                v;
    troom_t                *r;
    ngx_chat_store_item_t  *it;

    v = parse_id(id->data, id->len);
    ASSERT(v >= OLD_BASE);

    r = troom_get((char *) room->data, room->len, 1);
    ASSERT(r != NULL);

    troom_add(r, v, (char *) user->data, user->len, (char *) content->data,
              content->len, ts);

    it = calloc(1, sizeof(ngx_chat_store_item_t) + id->len + room->len
                + (ref ? ref->len : 0));
    ASSERT(it != NULL);

    p = (u_char *) (it + 1);
    it->id.data = p;
    it->id.len = id->len;
    p = ngx_cpymem(p, id->data, id->len);
    it->room.data = p;
    it->room.len = room->len;
    p = ngx_cpymem(p, room->data, room->len);

    if (ref) {
        it->ref.data = p;
        it->ref.len = ref->len;
        it->has_ref = 1;
        ngx_memcpy(p, ref->data, ref->len);
    }

    it->ts = ts;

    ngx_queue_insert_tail(&fitems, &it->queue);

    return it;
}


void
ngx_chat_store_forget(ngx_chat_store_item_t *it)
{
    it->done = NULL;
}


/* the oldest n messages commit */

static void
store_commit(ngx_uint_t n)
{
    uint64_t                v;
    ngx_int_t               pos;
    troom_t                *r;
    ngx_queue_t            *q;
    ngx_chat_store_item_t  *it;

    while (n-- && !ngx_queue_empty(&fitems)) {
        q = ngx_queue_head(&fitems);
        ngx_queue_remove(q);
        it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

        r = troom_get((char *) it->room.data, it->room.len, 0);
        v = parse_id(it->id.data, it->id.len);
        pos = troom_pos(r, v);
        ASSERT(pos >= 0);
        r->msgs[pos].committed = 1;

        if (it->done) {
            it->done(it);
        }

        free(it);
    }
}


static ngx_int_t
id_cmp(uint64_t a, uint64_t b)
{
    return (a < b) ? -1 : (a > b);
}


/* the rows of the table for a read, newest first; NULL: it failed */

static ngx_chat_store_rows_t *
store_rows(fread_t *rd)
{
    u_char                 *p;
    uint64_t                id;
    troom_t                *r;
    tmsg_t                 *m;
    ngx_int_t               i, end, start;
    ngx_uint_t              k, n;
    ngx_chat_store_row_t   *row;
    ngx_chat_store_rows_t  *rows;

    r = rd->room;

    rows = calloc(1, sizeof(ngx_chat_store_rows_t));
    ASSERT(rows != NULL);

    /* the committed rows in [start, end) */

    id = parse_tagged(rd->id.data, rd->id.len);

    start = 0;
    end = r ? (ngx_int_t) r->n : 0;

    if (rd->mode != NGX_CHAT_STORE_LAST) {
        i = (r && id) ? troom_pos(r, id) : -1;

        if (i >= 0 && r->msgs[i].committed) {
            rows->found = 1;

            if (rd->mode == NGX_CHAT_STORE_SINCE) {
                start = i + 1;

            } else {
                end = i;
            }

        } else {
            end = 0;
        }
    }

    rows->rows = calloc(rd->limit + 1, sizeof(ngx_chat_store_row_t));
    ASSERT(rows->rows != NULL);

    n = 0;

    for (i = end - 1; i >= start && n < rd->limit; i--) {
        m = &r->msgs[i];

        if (!m->committed) {
            continue;
        }

        row = &rows->rows[n++];

        p = malloc(64);
        ASSERT(p != NULL);
        row->id.data = p;
        row->id.len = ngx_sprintf(p, "%uL-000000000000", m->id) - p;
        row->ts.data = p + 32;
        row->ts.len = ngx_sprintf(p + 32, "%uL", m->ts) - (p + 32);
        row->user.data = (u_char *) m->user;
        row->user.len = strlen(m->user);
        row->content.data = (u_char *) m->content;
        row->content.len = strlen(m->content);
    }

    rows->n = n;

    /* lossy: a message of the room then neither in the ring nor stored */

    for (k = 0; r && k < rd->last; k++) {
        m = &r->msgs[k];

        if (m->committed) {
            continue;
        }

        for (i = 0; i < (ngx_int_t) rd->nring; i++) {
            if (id_cmp(rd->ring[i], m->id) == 0) {
                break;
            }
        }

        if (i == (ngx_int_t) rd->nring) {
            flossy = 1;
        }
    }

    return rows;
}


static void
rows_free(ngx_chat_store_rows_t *rows)
{
    ngx_uint_t  i;

    if (rows == NULL) {
        return;
    }

    for (i = 0; i < rows->n; i++) {
        free(rows->rows[i].id.data);
    }

    free(rows->rows);
    free(rows);
}


static void
read_free(fread_t *rd)
{
    free(rd->ring);
    free(rd);
}


/* the answer to a read: its handler runs (in its connection's name) */

static void
store_answer(fread_t *rd)
{
    fconn_t                *saved;
    ngx_chat_store_rows_t  *rows;

    if (rd->fc->gen == rd->gen) {
        ASSERT(rd->fc->inflight == 1);
        rd->fc->inflight = 0;
        rd->fc->orphan = 0;
    }

    rows = rd->fail ? NULL : store_rows(rd);

    saved = fcontext;
    fcontext = rd->fc;

    rd->handler(rows, rd->data);

    fcontext = saved;

    rows_free(rows);
    read_free(rd);
}


/* the accepted messages of a room not committed yet, as the store has */

ngx_uint_t
ngx_chat_store_unstored(ngx_str_t *zone, ngx_str_t *room,
    ngx_chat_store_known_pt known, void *data)
{
    u_char       buf[64];
    troom_t     *r;
    ngx_str_t    id;
    ngx_uint_t   i;

    r = troom_get((char *) room->data, room->len, 0);

    for (i = 0; r && i < r->n; i++) {
        if (r->msgs[i].committed || r->msgs[i].id < OLD_BASE) {
            continue;
        }

        id.data = buf;
        id.len = ngx_sprintf(buf, "%uL-000000000000", r->msgs[i].id) - buf;

        if (!known(&id, data)) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_chat_store_history(ngx_uint_t mode, ngx_str_t *zone, ngx_str_t *room,
    ngx_str_t *id, ngx_uint_t limit, ngx_chat_store_read_pt handler,
    void *data)
{
    u_char                c;
    fconn_t              *fc;
    fread_t              *rd;
    ngx_uint_t            i;
    ngx_chat_shm_ring_t  *ring;

    fc = fcontext;
    ASSERT(fc != NULL && fc->open);

    /* SPEC §8: one read in flight per connection */
    ASSERT(fc->inflight == 0);

    ASSERT(mode <= NGX_CHAT_STORE_BEFORE);
    ASSERT(limit <= NGX_CHAT_MAX_HISTORY + 1);

    c = nfmodes ? fmodes[fmode_next++ % nfmodes] : 'q';

    if (c == 'D') {
        return NGX_DECLINED;
    }

    if (c == 'B') {
        return NGX_BUSY;
    }

    rd = calloc(1, sizeof(fread_t) + id->len);
    ASSERT(rd != NULL);

    rd->handler = handler;
    rd->data = data;
    rd->fc = fc;
    rd->gen = fc->gen;
    rd->fail = (c == 'f' || c == 'F');
    rd->mode = mode;
    rd->room = troom_get((char *) room->data, room->len, 0);
    rd->id.data = (u_char *) (rd + 1);
    rd->id.len = id->len;
    ngx_memcpy(rd->id.data, id->data, id->len);
    rd->limit = limit;
    rd->last = rd->room ? rd->room->n : 0;

    /* the ring as the protocol copied it just now */

    ring = ngx_chat_shm_ring_copy(&fctx, room);

    if (ring) {
        rd->ring = calloc(ring->n + 1, sizeof(uint64_t));
        ASSERT(rd->ring != NULL);

        for (i = 0; i < ring->n; i++) {
            rd->ring[i] = parse_id(ring->msgs[i].id.data,
                                   ring->msgs[i].id.len);
        }

        rd->nring = ring->n;
        ngx_free(ring);
    }

    fc->inflight = 1;

    if (c == 's' || c == 'f') {
        store_answer(rd);
        return NGX_OK;
    }

    ASSERT(nfreads < sizeof(freads) / sizeof(freads[0]));
    freads[nfreads++] = rd;

    return NGX_OK;
}


static void
store_deliver(ngx_uint_t k)
{
    fread_t  *rd;

    if (k >= nfreads) {
        return;
    }

    rd = freads[k];
    memmove(&freads[k], &freads[k + 1], (nfreads - k - 1) * sizeof(fread_t *));
    nfreads--;

    store_answer(rd);
}


/* the client's side */

static fconn_t *
conn_of_fd(ngx_socket_t fd)
{
    if (fd < FAKE_FD || fd >= FAKE_FD + NCONN) {
        return NULL;
    }

    return &fconns[fd - FAKE_FD];
}


/* a server frame: form, then its JSON goes to the connection's list */

static void
frame_take(fconn_t *fc, u_char *p, size_t len)
{
    size_t         hlen;
    uint64_t       plen;
    ngx_uint_t     i, opcode;
    json_t        *j;
    json_error_t   err;

    ASSERT(len >= 2 && (p[0] & 0xf0) == 0x80 && (p[1] & 0x80) == 0);

    opcode = p[0] & 0x0f;
    plen = p[1] & 0x7f;
    hlen = 2;

    if (plen == 126) {
        plen = ((uint64_t) p[2] << 8) | p[3];
        hlen = 4;

    } else if (plen == 127) {
        plen = 0;

        for (i = 2; i < 10; i++) {
            plen = (plen << 8) | p[i];
        }

        hlen = 10;
    }

    ASSERT(len == hlen + plen);

    if (opcode != NGX_CHAT_FRAME_TEXT) {
        return;
    }

    j = json_loadb((char *) p + hlen, plen, JSON_REJECT_DUPLICATES, &err);

    if (j == NULL || !json_is_object(j)) {
        fprintf(stderr, "not JSON: %.*s\n", (int) plen, p + hlen);
        ASSERT(0);
    }

    ASSERT(fc->ngot < sizeof(fc->got) / sizeof(fc->got[0]));
    fc->got[fc->ngot++] = j;
}


static ssize_t
client_write(ngx_socket_t fd, const struct iovec *iov, int n)
{
    int       i;
    size_t    len;
    fconn_t  *fc;

    fc = conn_of_fd(fd);

    if (fc == NULL) {
        return NGX_DECLINED;
    }

    ASSERT(fc->ws->out_sent == 0);

    len = 0;

    for (i = 0; i < n; i++) {
        frame_take(fc, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }

    return len;
}


static ssize_t
client_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t  n;

    if (fwire.len == 0) {
        c->read->ready = 0;

        if (fwire.eof) {
            c->read->eof = 1;
            return 0;
        }

        return NGX_AGAIN;
    }

    n = ngx_min(size, fwire.len);
    ngx_memcpy(buf, fwire.pos, n);
    fwire.pos += n;
    fwire.len -= n;

    if (n < size) {
        c->read->ready = 0;
    }

    return n;
}


static u_char *
client_frame(u_char *p, u_char *data, size_t len)
{
    size_t               i;
    ngx_uint_t           k;
    static const u_char  mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

    *p++ = 0x80 | NGX_CHAT_FRAME_TEXT;

    if (len < 126) {
        *p++ = (u_char) (0x80 | len);

    } else if (len <= 0xffff) {
        *p++ = 0x80 | 126;
        *p++ = (u_char) (len >> 8);
        *p++ = (u_char) len;

    } else {
        *p++ = 0x80 | 127;

        for (k = 0; k < 8; k++) {
            *p++ = (u_char) ((uint64_t) len >> (56 - 8 * k));
        }
    }

    p = ngx_cpymem(p, mask, 4);

    for (i = 0; i < len; i++) {
        *p++ = data[i] ^ mask[i % 4];
    }

    return p;
}


static void
client_message(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    u_char   *copy;
    fconn_t  *fc;

    for (fc = &fconns[0]; fc < &fconns[NCONN]; fc++) {
        if (fc->ws == ws) {
            break;
        }
    }

    ASSERT(fc < &fconns[NCONN]);

    copy = malloc(len ? len : 1);
    ASSERT(copy != NULL);
    ngx_memcpy(copy, data, len);

    fcontext = fc;
    fc->message(ws, copy, len);
    fcontext = NULL;

    free(copy);
}


static void
conn_open(fconn_t *fc)
{
    ngx_int_t            rc;
    ngx_pool_t          *pool;
    ngx_chat_ws_t       *ws;
    ngx_chat_buf_t      *b;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    fc->log = flog;

    c = ngx_get_connection((ngx_socket_t) (FAKE_FD + fc->index), &fc->log);
    c->pool = ngx_create_pool(4096, &fc->log);
    pool = ngx_create_pool(4096, &fc->log);
    ASSERT(c->pool != NULL && pool != NULL);

    c->recv = client_recv;

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    ASSERT(r != NULL);

    r->pool = pool;
    r->connection = c;
    r->main = r;
    r->method = NGX_HTTP_GET;
    r->http_version = NGX_HTTP_VERSION_11;

    r->ctx = ngx_pcalloc(pool, sizeof(void *));
    r->loc_conf = ngx_pcalloc(pool, 2 * sizeof(void *));
    r->header_in = ngx_calloc_buf(pool);
    r->http_connection = ngx_pcalloc(c->pool, sizeof(ngx_http_connection_t));
    ASSERT(r->ctx && r->loc_conf && r->header_in && r->http_connection);

    r->loc_conf[ngx_chat_module.ctx_index] = fc->conf;
    r->loc_conf[ngx_http_core_module.ctx_index] = &ngx_fuzz_core_loc_conf;

    r->headers_in.headers.part.elts = fheaders;
    r->headers_in.headers.part.nelts = sizeof(fheaders) / sizeof(fheaders[0]);
    r->headers_in.upgrade = &fheaders[0];

    c->data = r;

    fc->user_cv.value.data = (u_char *) fc->user;
    fc->user_cv.value.len = strlen(fc->user);
    fc->conf->user = &fc->user_cv;

    rc = ngx_chat_proto_handler(r);
    ASSERT(rc == NGX_DONE);

    ws = ngx_http_get_module_ctx(r, ngx_chat_module);
    ASSERT(ws != NULL && ws->out_n >= 1);

    /* the 101 response */
    b = ws->out[ws->out_head];
    ws->out_head = (ws->out_head + 1) % ws->out_cap;
    ws->out_n--;
    ws->out_bytes -= b->len;
    ngx_chat_buf_release(b);

    fc->c = c;
    fc->ws = ws;
    fc->message = ws->message;
    ws->message = client_message;
    fc->open = 1;
    fc->gen++;
    fc->nrooms = 0;
    fc->nfifo = 0;
    fc->inflight = 0;
    fc->orphan = 0;

    ASSERT(c->write->posted);
    ngx_delete_posted_event(c->write);
    c->write->handler(c->write);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    ASSERT(ws->started);
}


static void
conn_close(fconn_t *fc)
{
    ngx_uint_t         closed;
    ngx_connection_t  *c;

    c = fc->c;
    closed = ngx_fuzz_connections_closed;

    fwire.len = 0;
    fwire.eof = 1;
    c->read->ready = 1;
    c->read->handler(c->read);
    fwire.eof = 0;

    ASSERT(ngx_fuzz_connections_closed == closed + 1);

    /* what it got is not read */
    while (fc->ngot) {
        json_decref(fc->got[--fc->ngot]);
    }

    fc->ws = NULL;
    fc->c = NULL;
    fc->open = 0;
    fc->nrooms = 0;
    fc->nfifo = 0;
}


static void
client_send(fconn_t *fc, u_char *line, size_t len)
{
    u_char            *buf, *end;
    ngx_connection_t  *c;

    buf = malloc(len + 14);
    ASSERT(buf != NULL);
    end = client_frame(buf, line, len);

    c = fc->c;
    fwire.pos = buf;
    fwire.len = end - buf;

    while (fwire.len && !fc->ws->closing) {
        c->read->ready = 1;
        c->read->handler(c->read);

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }
    }

    fwire.len = 0;
    free(buf);
}


/* the model of a connection */

static mroom_t *
model_find(fconn_t *fc, troom_t *r)
{
    ngx_uint_t  i;

    for (i = 0; i < fc->nrooms; i++) {
        if (fc->rooms[i].room == r) {
            return &fc->rooms[i];
        }
    }

    return NULL;
}


static void
fifo_pop(fconn_t *fc, ngx_uint_t k)
{
    memmove(&fc->fifo[k], &fc->fifo[k + 1],
            (fc->nfifo - k - 1) * sizeof(expect_t));
    fc->nfifo--;
}


/* a history reply against what was asked */

static void
history_check(fconn_t *fc, json_t *j, expect_t *ex)
{
    size_t       n, i, max, len;
    json_t      *msgs, *m, *v;
    uint64_t     id, prev;
    mroom_t     *mr;
    tmsg_t      *t;
    troom_t     *r;
    ngx_int_t    pos, first, last, p;
    ngx_uint_t   complete, k;

    r = ex->room;

    if (ngx_fuzz_trace) {
        char  *dump;

        dump = json_dumps(j, JSON_COMPACT);
        fprintf(stderr, "-- reply: join %lu mode %lu limit %lu id %llu, "
                "%lu messages then, lossy %lu: %s\n",
                (unsigned long) ex->join, (unsigned long) ex->mode,
                (unsigned long) ex->limit, (unsigned long long) ex->id,
                (unsigned long) ex->last, (unsigned long) flossy, dump);
        free(dump);
    }

    msgs = json_object_get(j, "messages");
    v = json_object_get(j, "complete");
    ASSERT(json_is_array(msgs) && json_is_boolean(v));
    complete = json_is_true(v);

    n = json_array_size(msgs);
    max = (ex->mode == NGX_CHAT_STORE_SINCE) ? NGX_CHAT_MAX_HISTORY
                                             : ex->limit;
    ASSERT(n <= max);

    prev = 0;
    first = -1;
    last = -1;

    for (i = 0; i < n; i++) {
        m = json_array_get(msgs, i);
        ASSERT(json_is_object(m));
        v = json_object_get(m, "type");
        ASSERT(json_is_string(v) && strcmp(json_string_value(v), "message")
                                    == 0);
        v = json_object_get(m, "room");
        ASSERT(json_is_string(v) && json_string_length(v) == r->len
               && memcmp(json_string_value(v), r->name, r->len) == 0);

        v = json_object_get(m, "id");
        ASSERT(json_is_string(v));
        id = parse_id((u_char *) json_string_value(v), json_string_length(v));

        /* oldest first, no duplicate (store-newer-rows, a seed) */
        ASSERT(id > prev);
        prev = id;

        /* a message of the room, as sent */
        pos = troom_pos(r, id);
        ASSERT(pos >= 0);
        t = &r->msgs[pos];

        v = json_object_get(m, "content");
        len = strlen(t->content);
        ASSERT(json_is_string(v) && json_string_length(v) == len
               && memcmp(json_string_value(v), t->content, len) == 0);
        v = json_object_get(m, "user");
        ASSERT(json_is_string(v) && strcmp(json_string_value(v), t->user)
                                    == 0);
        v = json_object_get(m, "ts");
        ASSERT(json_is_integer(v)
               && (uint64_t) json_integer_value(v) == t->ts);

        if (first < 0) {
            first = pos;
        }

        /* for "complete": no gap */
        if (last >= 0 && pos != last + 1) {
            complete = complete ? 2 : 0;
        }

        last = pos;
    }

    if (ex->join) {
        mr = model_find(fc, r);
        ASSERT(mr != NULL);
        mr->awaiting = 0;
        mr->reply_max = prev;

        /* nothing live came before (held), so none is in the reply */
        ASSERT(mr->live_max == 0);
    }

    if (!complete) {
        return;
    }

    if (flossy) {
#ifndef STORE_FUZZ_STRICT
        return;
#endif
    }

    /* exactly what was asked for (SPEC §4) */

    if (complete == 2) {
        fprintf(stderr, "complete, with a gap\n");
        ASSERT(0);
    }

    switch (ex->mode) {

    case NGX_CHAT_STORE_LAST:
        if (ex->limit == 0) {
            ASSERT(n == 0);
            break;
        }

        if (ex->join) {
            /*
             * up to the join; what came after it comes live, and does not
             * make the reply shorter (store-join-held-rows, a seed)
             */
            ASSERT((ngx_int_t) ex->last - 1 == last);

        } else {
            ASSERT(last >= (ngx_int_t) ex->last - 1);
        }

        p = (last + 1 > (ngx_int_t) ex->limit) ? last + 1 - ex->limit : 0;
        ASSERT(n == 0 || first == p);
        ASSERT(n == (size_t) (last + 1 - p));
        break;

    case NGX_CHAT_STORE_SINCE:
        /* the id may be of a message sent after the join: none then */
        p = troom_pos(r, ex->id);
        ASSERT(p >= 0);

        if (p >= (ngx_int_t) ex->last - 1) {
            /* none of the ring's older messages (store-since-newer) */
            ASSERT(n == 0);
            break;
        }

        ASSERT(n == 0 || first == p + 1);
        ASSERT((ngx_int_t) ex->last - 1 == (n ? last : p));
        break;

    default:
        p = troom_pos(r, ex->id);
        ASSERT(p >= 0);
        ASSERT(n == 0 || last == p - 1);
        k = ((ngx_uint_t) p > ex->limit) ? p - ex->limit : 0;
        ASSERT(n == (size_t) p - k);
        break;
    }
}


/* the frames a connection got in this step, in order */

static void
frames_check(fconn_t *fc)
{
    json_t      *j, *v, *room;
    troom_t     *r;
    mroom_t     *mr;
    uint64_t     id;
    ngx_uint_t   i, own;
    const char  *type;

    own = (fstep.sender == fc);

    for (i = 0; i < fc->ngot; i++) {
        j = fc->got[i];
        v = json_object_get(j, "type");
        ASSERT(json_is_string(v));
        type = json_string_value(v);

        room = json_object_get(j, "room");
        r = json_is_string(room) ? troom_get(json_string_value(room),
                                             json_string_length(room), 0)
                                 : NULL;

        if (strcmp(type, "history") == 0) {
            ASSERT(r != NULL);

            if (own && fstep.want && !fstep.replied && fstep.ex.room == r) {
                /* the step's own request (from the ring, or at once) */
                fstep.replied = 1;
                history_check(fc, j, &fstep.ex);
                continue;
            }

            /* storage's, in the connection's order */
            ASSERT(fc->nfifo > 0 && fc->fifo[0].room == r);
            history_check(fc, j, &fc->fifo[0]);
            fifo_pop(fc, 0);
            continue;
        }

        if (strcmp(type, "message") == 0) {
            ASSERT(r != NULL);
            v = json_object_get(j, "id");
            ASSERT(json_is_string(v));
            id = parse_id((u_char *) json_string_value(v),
                          json_string_length(v));
            ASSERT(troom_pos(r, id) >= 0);

            mr = model_find(fc, r);
            ASSERT(mr != NULL);

            /* held while the join's reply is read */
            ASSERT(!mr->awaiting);
            ASSERT(id > mr->reply_max && id > mr->live_max);
            mr->live_max = id;
            continue;
        }

        if (own && strcmp(type, "joined") == 0) {
            fstep.joined = 1;
            continue;
        }

        if (own && strcmp(type, "error") == 0) {
            fstep.error = 1;
            v = json_object_get(j, "code");

            if (json_is_string(v)
                && strcmp(json_string_value(v), "rate_limited") == 0)
            {
                fstep.limited = 1;
            }
        }
    }

    while (fc->ngot) {
        json_decref(fc->got[--fc->ngot]);
    }
}


static void
step_end(void)
{
    u_char             ch;
    fconn_t           *fc;
    mroom_t           *mr;
    ngx_uint_t         i, k;
    ngx_queue_t       *q;
    ngx_event_t       *ev;

    /* the event loop */
    for (k = 0; k < 100; k++) {
        if (recv(fnotify->fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
            break;
        }

        fnotify->read->handler(fnotify->read);
    }

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (fc->open && fc->ws->closing) {
            conn_close(fc);
            continue;
        }

        if (!fc->open) {
            continue;
        }

        fc->c->write->ready = 1;
        fc->c->write->handler(fc->c->write);
        ASSERT(fc->ws->out_n == 0);

        if (fc->ws->flush_posted) {
            ngx_queue_remove(&fc->ws->flush);
            fc->ws->flush_posted = 0;
        }
    }

    fc = fstep.sender;

    if (fc && fc->open && fstep.kind == 1 && !fstep.member) {
        /* a new member: live from the join on */
        ASSERT(fc->nrooms < MAX_ROOMS);
        mr = &fc->rooms[fc->nrooms];
        ngx_memzero(mr, sizeof(mroom_t));
        mr->room = fstep.ex.room;
    }

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].open || fconns[i].ngot) {
            if (&fconns[i] == fc && fstep.kind == 1 && !fstep.member) {
                /* the room is the model's while its frames are read */
                fc->nrooms++;
                frames_check(fc);

                if (!fstep.joined) {
                    fc->nrooms--;
                    continue;
                }

                if (fstep.want && !fstep.replied) {
                    /* storage answers later */
                    ASSERT(fc->nfifo < MAX_FIFO);
                    fc->fifo[fc->nfifo++] = fstep.ex;
                    fc->rooms[fc->nrooms - 1].awaiting = 1;
                }

                continue;
            }

            frames_check(&fconns[i]);
        }
    }

    if (fc && fc->open && fstep.kind == 2 && fstep.member) {
        if (fstep.limited) {
            /* SPEC §8: refused only beyond chat_max_rooms waiting */
            ASSERT(!fstep.replied);
            ASSERT(fstep.fifo_before > fc->conf->max_rooms || freads_full);

        } else if (fstep.want && !fstep.replied && !fstep.error) {
            ASSERT(fstep.fifo_before <= fc->conf->max_rooms && !freads_full);
            ASSERT(fc->nfifo < MAX_FIFO);
            fc->fifo[fc->nfifo++] = fstep.ex;
        }
    }

    if (fc && fc->open && fstep.kind == 3 && fstep.member) {
        /* the join's reply goes nowhere */
        for (k = 0; k < fc->nfifo; /* void */) {
            if (fc->fifo[k].join && fc->fifo[k].room == fstep.ex.room) {
                if (k == 0 && fc->inflight) {
                    /* in flight: no reply, but a read all the same */
                    fc->orphan = 1;
                }

                fifo_pop(fc, k);
                continue;
            }

            k++;
        }

        mr = model_find(fc, fstep.ex.room);
        *mr = fc->rooms[--fc->nrooms];
    }

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (fc->open) {
            /* joins: at most chat_max_rooms; history: that many more */
            ASSERT(fc->nfifo + fc->orphan <= 2 * fc->conf->max_rooms + 1);
        }
    }

    while (!ngx_queue_empty(&ngx_posted_events)) {
        q = ngx_queue_head(&ngx_posted_events);
        ev = ngx_queue_data(q, ngx_event_t, queue);
        ngx_delete_posted_event(ev);
    }

    flossy = 0;
    ngx_memzero(&fstep, sizeof(fstep_t));
}


/* what a request asks for */

static void
request_model(fconn_t *fc, u_char *line, size_t len)
{
    json_t        *j, *v, *h, *s;
    troom_t       *r;
    const char    *type;
    json_error_t   err;

    fstep.sender = fc;

    /* as ngx_chat_proto_parse() reads it (a repeated key: the last) */
    j = json_loadb((char *) line, len, JSON_ALLOW_NUL, &err);
    if (j == NULL || !json_is_object(j)) {
        goto done;
    }

    v = json_object_get(j, "type");
    type = json_is_string(v) ? json_string_value(v) : "";

    v = json_object_get(j, "room");
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > NGX_CHAT_MAX_ROOM_NAME
        || memchr(json_string_value(v), 0, json_string_length(v)))
    {
        goto done;
    }

    r = troom_get(json_string_value(v), json_string_length(v),
                  strcmp(type, "join") == 0);
    if (r == NULL) {
        goto done;
    }

    fstep.ex.room = r;
    fstep.ex.last = r->n;
    fstep.member = (model_find(fc, r) != NULL);

    if (strcmp(type, "join") == 0) {
        fstep.kind = 1;
        h = json_object_get(j, "history");
        s = json_object_get(j, "since");

        if (h && (!json_is_integer(h) || json_integer_value(h) < 0)) {
            fstep.kind = 0;
            goto done;
        }

        if (s && !json_is_string(s)) {
            fstep.kind = 0;
            goto done;
        }

        fstep.ex.join = 1;

        if (s) {
            fstep.want = !fstep.member;
            fstep.ex.mode = NGX_CHAT_STORE_SINCE;
            fstep.ex.limit = NGX_CHAT_MAX_HISTORY + 1;
            fstep.ex.id = parse_tagged((u_char *) json_string_value(s),
                                       json_string_length(s));

        } else if (h) {
            fstep.ex.mode = NGX_CHAT_STORE_LAST;
            fstep.ex.limit = ngx_min(json_integer_value(h),
                                     NGX_CHAT_MAX_HISTORY);
            fstep.want = !fstep.member;
        }

        goto done;
    }

    if (strcmp(type, "history") == 0) {
        fstep.kind = 2;
        fstep.fifo_before = fc->nfifo + fc->orphan;
        h = json_object_get(j, "limit");
        s = json_object_get(j, "before");

        if ((h && (!json_is_integer(h) || json_integer_value(h) < 0))
            || (s && !json_is_string(s)))
        {
            fstep.kind = 0;
            goto done;
        }

        fstep.want = fstep.member;
        fstep.ex.limit = h ? ngx_min(json_integer_value(h),
                                     NGX_CHAT_MAX_HISTORY)
                           : 50;
        fstep.ex.mode = s ? NGX_CHAT_STORE_BEFORE : NGX_CHAT_STORE_LAST;

        if (s) {
            fstep.ex.id = parse_tagged((u_char *) json_string_value(s),
                                       json_string_length(s));
        }

        goto done;
    }

    if (strcmp(type, "leave") == 0) {
        fstep.kind = 3;
    }

done:

    if (j) {
        json_decref(j);
    }
}


static ngx_uint_t
number(u_char *p, size_t len, ngx_uint_t dflt, ngx_uint_t max)
{
    size_t      i;
    ngx_uint_t  n;

    if (len == 0 || *p < '0' || *p > '9') {
        return dflt;
    }

    n = 0;

    for (i = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        n = n * 10 + (p[i] - '0');

        if (n > max) {
            return max;
        }
    }

    return n;
}


static void
old_rows(u_char *p, size_t len)
{
    u_char      *sp;
    troom_t     *r;
    ngx_uint_t   n, k;
    char         content[32];

    if (nfreads) {
        return;
    }

    n = number(p, len, 1, 64);
    sp = memchr(p, ' ', len);

    if (sp == NULL) {
        return;
    }

    r = troom_get((char *) sp + 1, p + len - sp - 1, 1);

    if (r == NULL || sp + 1 == p + len) {
        return;
    }

    for (k = 0; k < n; k++) {
        snprintf(content, sizeof(content), "old %lu",
                 (unsigned long) fold_next);
        troom_add(r, OLD_BASE - fold_next, "old\"user", 8, content,
                  strlen(content),
                  (uint64_t) CLOCK_SEC * 1000 - 1000 - fold_next)
            ->committed = 1;
        fold_next++;
        r->olds++;
    }
}


static void
control(fconn_t **cur, u_char *p, size_t len)
{
    switch (p[0]) {

    case '0': case '1': case '2':
        *cur = &fconns[p[0] - '0'];

        if (!(*cur)->open) {
            conn_open(*cur);
        }

        break;

    case 'x':
        if ((*cur)->open) {
            conn_close(*cur);
        }

        break;

    case 'a':
        store_commit(number(p + 1, len - 1, (ngx_uint_t) -1, 100000));
        break;

    case 'd':
        store_deliver(number(p + 1, len - 1, 0, MAX_FIFO * NCONN));
        break;

    case 'D':
        while (nfreads) {
            store_deliver(0);
        }

        break;

    case 'm':
        nfmodes = ngx_min(len - 1, MAX_MODES);
        ngx_memcpy(fmodes, p + 1, nfmodes);
        fmode_next = 0;
        break;

    case 'F':
        ffull = !ffull;
        break;

    case 'b':
        freads_full = !freads_full;
        break;

    case 'o':
        old_rows(p + 1, len - 1);
        break;

    default:
        break;
    }

    step_end();
}


static void
deliver(fconn_t *fc, u_char *line, size_t len)
{
    if (!fc->open) {
        conn_open(fc);
        step_end();
    }

    request_model(fc, line, len);

    if (len > fc->conf->max_message_size) {
        fstep.kind = 0;
        fstep.want = 0;
    }

    client_send(fc, line, len);

    step_end();
}


/* setup */

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_uint_t  i;

    flog.log_level = NGX_LOG_DEBUG_ALL | NGX_LOG_DEBUG;

    ngx_fuzz_runtime_init(&flog);
    ngx_fuzz_write_hook = client_write;

    fcycle.log = &flog;
    ngx_cycle = &fcycle;

    for (i = 0; i < 2; i++) {
        fconfs[i].zone = &fshm_zone;
        fconfs[i].ping_interval = 30000;
        fconfs[i].ping_timeout = 10000;
        fconfs[i].max_message_size = 4096;
        fconfs[i].send_buffer = 1024 * 1024;
    }

    fconfs[0].history = 5;
    fconfs[0].max_rooms = 4;
    fconfs[1].history = 3;
    fconfs[1].max_rooms = 2;

    fzones[0] = &fctx;
    fcmcf.zones.elts = fzones;
    fcmcf.zones.nelts = 1;
    fcmcf.zones.size = sizeof(ngx_chat_shm_ctx_t *);
    fcmcf.zones.nalloc = 1;

    ngx_str_set(&fheaders[0].key, "Upgrade");
    ngx_str_set(&fheaders[0].value, "websocket");
    ngx_str_set(&fheaders[1].key, "Connection");
    ngx_str_set(&fheaders[1].value, "Upgrade");
    ngx_str_set(&fheaders[2].key, "Sec-WebSocket-Version");
    ngx_str_set(&fheaders[2].value, "13");
    ngx_str_set(&fheaders[3].key, "Sec-WebSocket-Key");
    ngx_str_set(&fheaders[3].value, WS_KEY);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *p, *end, *nl;
    size_t       len;
    fconn_t     *cur;
    ngx_uint_t   i, steps;
    u_char       buf[64];

    ngx_fuzz_fail_alloc(0);

    ((ngx_time_t *) ngx_cached_time)->sec = CLOCK_SEC;
    ((ngx_time_t *) ngx_cached_time)->msec = 0;
    ngx_current_msec = CLOCK_MSEC;

    ngx_queue_init(&fitems);
    nfreads = 0;
    nfmodes = 0;
    fmode_next = 0;
    ffull = 0;
    freads_full = 0;
    fold_next = 1;
    flossy = 0;
    fcontext = NULL;
    ngx_memzero(&fstep, sizeof(fstep_t));

    fcycle.pool = ngx_create_pool(16384, &flog);
    ASSERT(fcycle.pool != NULL);

    /* the zone, with chat_postgres: postconfiguration sets ctx->store */

    fzone = ngx_fuzz_zone_create(ZONE_SIZE);

    ngx_memzero(&fshm_zone, sizeof(ngx_shm_zone_t));
    fshm_zone.data = &fctx;
    fshm_zone.shm.addr = (u_char *) &fzone->pool;
    fshm_zone.shm.size = ZONE_SIZE;
    ngx_str_set(&fshm_zone.shm.name, "chat");

    ngx_memzero(&fctx, sizeof(ngx_chat_shm_ctx_t));
    fctx.shm_zone = &fshm_zone;
    ngx_str_set(&fctx.name, "chat");
    fctx.store = 1;
    fctx.max_message = 4096;

    ASSERT(ngx_chat_shm_init_zone(&fshm_zone, NULL) == NGX_OK);

    /* the zone's tag (random in nginx) fixed: ids end in -000000000000 */
    fctx.sh->server_id = 0;

    ngx_chat_ws_init_worker(&fcycle);
    ASSERT(ngx_chat_fanout_init_process(&fcycle, &fcmcf) == NGX_OK);

    ffo = ngx_chat_fanout_get(&fctx);
    ASSERT(ffo != NULL);

    fnotify = ngx_fuzz_last_connection;

    while (recv(fnotify->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
        /* void */
    }

    for (i = 0; i < NCONN; i++) {
        ngx_memzero(&fconns[i], sizeof(fconn_t));
        fconns[i].index = i;
        fconns[i].conf = &fconfs[fconn_defaults[i].conf];
        fconns[i].user = fconn_defaults[i].user;
    }

    cur = &fconns[0];
    steps = 0;

    p = (u_char *) data;
    end = p + size;

    for ( ;; ) {
        nl = memchr(p, '\n', end - p);
        len = (nl ? nl : end) - p;

        if (len >= 2 && p[0] == '@') {
            control(&cur, p + 1, len - 1);

        } else {
            deliver(cur, p, len);
        }

        if (nl == NULL || ++steps >= MAX_DELIVERIES) {
            break;
        }

        p = nl + 1;
    }

    /* storage answers everything; every client goes away */

    while (nfreads) {
        store_deliver(0);
        step_end();
    }

    store_commit((ngx_uint_t) -1);
    step_end();

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].open) {
            conn_close(&fconns[i]);
        }
    }

    step_end();

    ASSERT(nfreads == 0 && ngx_queue_empty(&fitems));
    ASSERT(fctx.sh->connections == 0);

    ASSERT(ffo->reap.timer_set);
    ngx_del_timer(&ffo->reap);
    ngx_chat_fanout_exit_process(&fcycle);

    ASSERT(ngx_event_timer_rbtree.root == ngx_event_timer_rbtree.sentinel);

    ngx_fuzz_zone_destroy(fzone);
    fzone = NULL;
    ngx_destroy_pool(fcycle.pool);
    fcycle.pool = NULL;
    truth_free();

    return 0;
}
