
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for the protocol layer (ngx_chat_proto.c) with the real
 * zone (ngx_chat_shm.c, _bus.c, _rate.c, _remote.c), wire format
 * (ngx_chat_wire.c), fan-out (ngx_chat_fanout.c) and connection layer
 * (ngx_chat_ws.c) under it, on the stand-in nginx of ngx_fuzz_runtime.c.
 *
 * Two workers (A and B) share one zone, each with its own zone context,
 * fan-out and clock, as two nginx worker processes would; B hears of A's
 * messages through the real notification socket.  Four connections:
 *
 *   0  worker A  "alice"        history 5,  max_rooms 4,  no rate limit,
 *                               send buffer 8k, request rate 20 r/s
 *                               burst 50 (the default)
 *   1  worker A  "bob"          the same, but 2 r/s burst 2, no request
 *                               rate
 *   2  worker B  "alice"        history 50, max_rooms 32, 1 r/s burst 2,
 *                               send buffer 64k, no request rate
 *   3  worker B  "Zoë \"q\"\\\1" history 0, max_rooms 2,  no rate limit,
 *                               request rate 2 r/s burst 3
 *
 * A connection opens as nginx would run the "chat" location: a WebSocket
 * upgrade request goes to ngx_chat_proto_handler(), its 101 response is
 * checked, and the start handler ngx_chat_ws_start() posted runs.  The
 * client's bytes come through the connection's recv(): the real read
 * handler, frame parser and UTF-8 check pass each text message up to the
 * protocol, with the harness in between (it models the request, then hands
 * the protocol an exactly sized copy, so that ASan sees any overread).  The
 * kernel's side of the socket is the harness's too: the connection layer's
 * send() and writev() (to a descriptor of the harness's) come to
 * client_write(), which takes nothing from a client that stopped reading
 * (EAGAIN) and everything from one that reads, once it has checked the
 * frames leaving the queue; after each step the write event of every
 * client that reads runs (the real write path; its timers do not run).
 *
 * Input: lines separated by '\n'.  A line is one client text message (one
 * masked frame) on the current connection (0 at first; a closed one opens
 * with the message right behind its handshake), except a line of "@" and a
 * command:
 *
 *   @0 .. @3   make that connection current (and open it if closed)
 *   @c         the client sends a close frame     @x   the TCP connection
 *                                                      drops
 *   @s         the client stops / resumes reading (its send buffer fills)
 *   @p         worker B stops / resumes handling its notifications
 *   @k  @K     worker B crashes; A's reaper (@k) or the respawned B (@K)
 *              removes what it held
 *   @e         worker B exits gracefully (a reload) and is replaced
 *   @tN        N ms pass (default 1000)       @wN  only the current
 *                                                  connection's worker's
 *                                                  clock moves (skew)
 *   @rN        the next message is sent N times (at most 600)
 *   @gN        messages go in fragments of N bytes, with a ping after
 *              the first (0, the default: one frame)
 *   @fN        the N-th allocation from now fails
 *   @iDATA     the client sends a ping with DATA (over 125 bytes: 1002)
 *   @z         the client compresses (permessage-deflate) what it sends
 *              from now on, or stops; only connections 1 and 2 negotiate
 *              it (2 with the defaults, 1 with a 10-bit server window,
 *              chat_deflate_min_size 0 and level 6): the others send as
 *              they did
 *   @uNAME     the current connection reconnects as user NAME (any bytes:
 *              the handshake refuses an empty one with 401, one that is
 *              not UTF-8, holds U+0000 or is over 256 bytes with 400)
 *
 * After each line the workers' event loops are run until idle (wake-ups
 * read, closing connections finalised), then every frame queued to a
 * client is checked: a FIN server frame, unmasked, minimal length; a text
 * frame's payload (inflated with the connection's window when it has
 * RSV1: only on text frames of connections that negotiated compression,
 * of at least their chat_deflate_min_size) must parse with
 * json_loadb(flags 0) (and also without
 * duplicate keys) as an object with a "type" string, and a close frame
 * must carry a valid code.  A message the connection layer must refuse
 * (larger than chat_max_message_size, or not UTF-8) must close the
 * connection with 1009 or 1007 and not reach the protocol.  A model of
 * each connection's rooms checks the replies: one reply per request, "ref"
 * echoed, bad_request exactly for malformed requests, not_member exactly
 * for non-members, "members" and "who" equal to the users the model has in
 * the room, acks preceded by the sender's copy of its message with the
 * same content, messages and presence only to members, per room in
 * increasing id order, and every copy of a message (live or from history)
 * the same; every other member gets each message sent and hears of each
 * new user joining; a model of the rate buckets (limit_req's leaky bucket,
 * ngx_chat_rate.h) predicts each rate-limited send and its retry_after_ms,
 * and, per connection, each request chat_request_rate refuses (every one
 * but "send", malformed ones too: rate_limited, and nothing else).  Each
 * queue holds at most chat_send_buffer plus the one frame that went over
 * it, the latest pong and the close frame; 1008 only for a client that
 * stopped reading; at most one pong waits, carrying the latest ping's
 * payload, and every ping is answered.  History replies are exactly what
 * the model's ring of the room gives (messages, "complete").  Then the
 * zone is checked against the model: counts per user, room and worker
 * slot; each room's ring and index by id (blocks of their own, the ring
 * grown 8, 16, 32... up to chat_history, one index entry per message,
 * reachable by linear probing, ngx_chat_shm_hist_find() against a scan);
 * each ring the model's (the newest chat_history messages of the room)
 * but where the zone ran out of memory in that step, when it may have
 * lost its oldest; rooms appear only when joined and go, when they have
 * messages, only evicted, in the order they became empty, and all of them
 * before any idle user, idle users in order too; the local rooms of each
 * worker's fan-out (and its cache), the bus, the LRU lists, the mutex,
 * and that every zone block is reachable from the zone (no leak in the
 * zone).  The zone is 160k (64k of it the bus); the Redis relay and
 * PostgreSQL storage are not configured (ngx_chat_relay.c and
 * ngx_chat_store.c are not linked).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <sys/un.h>
#include <jansson.h>
#include <zlib.h>
#include "ngx_chat.h"
#include "ngx_chat_frame.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_wire.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"     /* the zone's layout, for its checks */
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_proto.h"
#include "ngx_fuzz_runtime.h"


#define NCONN             4
#define NWORKER           2
#define ZONE_SIZE         (160 * 1024)     /* the bus takes 64k */
#define MAX_DELIVERIES    2000
#define MAX_REPEAT        600
#define MAX_USER          300            /* the zone takes 256 */
#define MAX_RING          64             /* the largest chat_history here */
#define MAX_PING          125
#define MAX_MODEL_ROOMS   64
#define CLOCK_SEC         1700000000
#define CLOCK_MSEC        1000000
#define DEAD_PID          0x3ffffff0     /* above any pid_max */
#define MAX_FRAGMENT      4096
#define FANOUT_CACHE      4096           /* as ngx_chat_fanout.c has it */
#define FAKE_FD           0x3fff0000     /* above any descriptor */

/* the key of RFC 6455, 1.3, and the answer it must get */
#define WS_KEY            "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT         "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define ASSERT(cond)      ngx_fuzz_assert(cond)

/*
 * The checks walk the zone after every step: they are left out of the
 * coverage the fuzzer is guided by (their loops would only add noise) and
 * of its cost (they took half of the time)
 */
#define NO_COVERAGE       __attribute__((no_sanitize("coverage")))


typedef struct {
    ngx_chat_shm_ctx_t         ctx;
    ngx_shm_zone_t             shm_zone;
    ngx_chat_fanout_t         *fo;
    ngx_msec_t                 clock;
} fworker_t;


typedef struct {
    u_char                     name[NGX_CHAT_MAX_ROOM_NAME];
    size_t                     len;
    uint64_t                   last_id;     /* last live message id */
} mroom_t;


typedef struct {
    ngx_uint_t                 index;
    ngx_uint_t                 open;
    ngx_uint_t                 worker;
    ngx_chat_loc_conf_t       *conf;
    u_char                     user[MAX_USER];
    size_t                     user_len;

    ngx_connection_t          *c;
    ngx_log_t                  log;
    ngx_chat_ws_t             *ws;
    ngx_chat_ws_message_pt     message;     /* the protocol's */
    ngx_http_complex_value_t   user_cv;     /* chat_user, a constant */

    ngx_uint_t                 stalled;     /* its writes: EAGAIN */
    ngx_uint_t                 validated;   /* queued frames checked */
    ngx_uint_t                 expect_welcome;
    ngx_uint_t                 closed_now;  /* finalised in this step */

    json_t                    *got[128];    /* messages and presence */
    ngx_uint_t                 ngot;        /* queued in this step */

    mroom_t                    rooms[MAX_MODEL_ROOMS];
    ngx_uint_t                 nrooms;

    /* chat_request_rate: the session's bucket, as ngx_chat_rate.h has it */
    ngx_uint_t                 req_excess;
    uint32_t                   req_last;
    ngx_uint_t                 req_used;

    u_char                     ping[MAX_PING];   /* the latest ping */
    size_t                     ping_len;
    ngx_uint_t                 pinged;      /* since the last pong out */
} fconn_t;


/*
 * A room of the zone as the model has it: its ring (ids, oldest first),
 * what its chat_history is, how many messages it has had, and its place in
 * the zone's list of empty rooms at the end of the last step (1: first;
 * 0: not there)
 */

typedef struct {
    uint32_t                   key;
    size_t                     len;
    u_char                     name[NGX_CHAT_MAX_ROOM_NAME];
    ngx_uint_t                 hist_max;
    uint64_t                   total;
    uint64_t                   ids[MAX_RING];
    ngx_uint_t                 n;
    ngx_uint_t                 lru;
    ngx_uint_t                 seen;        /* in the zone at this step */
} zroom_t;


/* an idle zone user (kept for its rate bucket), in eviction order */

typedef struct {
    size_t                     len;
    u_char                     name[NGX_CHAT_MAX_USER];
} zidle_t;


typedef struct {
    uint64_t                   id;
    json_t                    *msg;         /* the message object */
} frec_t;


/* a zone user's rate bucket, as limit_req keeps one */

typedef struct {
    u_char                     user[MAX_USER];
    size_t                     len;
    ngx_uint_t                 excess;
    uint32_t                   last;        /* ms modulo 2^32 */
    ngx_uint_t                 used;
} fbucket_t;


/* what the current step's message asked for */

typedef struct {
    fconn_t                   *sender;
    json_t                    *req;         /* NULL: not a JSON object */
    ngx_uint_t                 malformed;
    const char                *type;
    json_t                    *ref;         /* a string, or NULL */
    const char                *room;
    size_t                     room_len;
    ngx_uint_t                 want_history;
    ngx_uint_t                 new_join;
    ngx_uint_t                 primaries;
    ngx_uint_t                 history_frames;
    ngx_uint_t                 injected;    /* an allocation failed */
    json_t                    *mine[64];    /* messages to the sender */
    ngx_uint_t                 nmine;
    fbucket_t                 *bucket;      /* a rate-limited send */
    fbucket_t                  before;      /* the bucket before it */
    ngx_uint_t                 limited;     /* the model limits it */
    ngx_msec_t                 retry;       /* and says when to retry */
    ngx_msec_t                 now;
    ngx_uint_t                 got_limited;
    json_t                    *ack_id;      /* the id a send got */
    ngx_uint_t                 user_new;    /* first of its user in room */
    ngx_uint_t                 counted;     /* by chat_request_rate */
    ngx_uint_t                 req_limited; /* and refused by it */
    ngx_msec_t                 req_retry;
} fstep_t;


static ngx_log_t               flog;
static ngx_cycle_t             fcycle;
static ngx_chat_main_conf_t    fcmcf;
static ngx_chat_shm_ctx_t     *fzones[NWORKER];
static fworker_t               fworkers[NWORKER];
static ngx_chat_loc_conf_t     fconfs[4];
static fconn_t                 fconns[NCONN];
static ngx_fuzz_zone_t        *fzone;
static ngx_connection_t       *fnotify;
static ngx_uint_t              fpaused;
static fstep_t                 fstep;
static frec_t                 *frecs;
static ngx_uint_t              nfrecs, capfrecs;
static ngx_uint_t              fallocs_seen;
static fbucket_t               fbuckets[NCONN];
static ngx_uint_t              nfbuckets;
static ngx_uint_t              frepeat;
static size_t                  ffragment;
static ngx_uint_t              fcompress;

/* the zone's rooms, in its tree's order; its idle users, in LRU order */
static zroom_t                *fzrooms;
static ngx_uint_t              nfzrooms, capfzrooms;
static zidle_t                *fzidle;
static ngx_uint_t              nfzidle, capfzidle;
static uint64_t                flast_id;     /* sh->last_id, last step */
static ngx_uint_t              fslab_seen;   /* ngx_fuzz_slab_failed */

/* the upgrade request's headers (Upgrade first) */
static ngx_table_elt_t         fheaders[5];

/* what the client has sent and the server not read yet */
static struct {
    u_char                    *pos;
    size_t                     len;
    ngx_uint_t                 eof;
} fwire;


static const struct {
    ngx_uint_t   worker;
    ngx_uint_t   conf;
    const char  *user;
} fconn_defaults[NCONN] = {
    { 0, 0, "alice" },
    { 0, 3, "bob" },
    { 1, 1, "alice" },
    { 1, 2, "Zo\xc3\xab \"q\"\\\x01" },
};


static void step_end(void);
static void request_parse(u_char *data, size_t len);
static void notify_drain(void);
static ngx_uint_t notify_pending(void);
static void rate_predict(fconn_t *fc);
static void rate_check(void);
static void request_rate_predict(fconn_t *fc);
static zroom_t *zroom_find(const void *name, size_t len);
static ngx_int_t zroom_cmp(uint32_t key, const u_char *name, size_t len,
    zroom_t *zr);
static void queue_check(fconn_t *fc, ngx_uint_t semantics);


/* helpers */

static ngx_uint_t
jstr_eq(json_t *s, const void *data, size_t len)
{
    return json_is_string(s) && json_string_length(s) == len
           && ngx_memcmp(json_string_value(s), data, len) == 0;
}


static ngx_uint_t
jtype_is(json_t *j, const char *type)
{
    json_t  *t;

    t = json_object_get(j, "type");

    return json_is_string(t) && ngx_strcmp(json_string_value(t), type) == 0;
}


/*
 * an id as the server writes it: digits (no leading zero, 64 bits), then
 * "-" and the zone's tag of 12 hex digits; the number is returned
 */

static uint64_t
parse_id(json_t *s)
{
    size_t       i, len;
    uint64_t     v;
    const char  *p;

    ASSERT(json_is_string(s));

    p = json_string_value(s);
    len = json_string_length(s);

    ASSERT(len > 13 && p[len - 13] == '-');

    for (i = len - 12; i < len; i++) {
        ASSERT((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'));
    }

    len -= 13;

    ASSERT(len >= 1 && len <= 20 && (p[0] != '0' || len == 1));

    v = 0;

    for (i = 0; i < len; i++) {
        ASSERT(p[i] >= '0' && p[i] <= '9');
        ASSERT(v <= (UINT64_MAX - (p[i] - '0')) / 10);
        v = v * 10 + (p[i] - '0');
    }

    return v;
}


static void
dump(const char *what, u_char *p, size_t len)
{
    size_t  i;

    fprintf(stderr, "%s (%zu bytes): ", what, len);

    for (i = 0; i < len && i < 2048; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            fputc(p[i], stderr);
        } else {
            fprintf(stderr, "\\x%02x", p[i]);
        }
    }

    fprintf(stderr, "%s\n", len > 2048 ? "..." : "");
}


/* the model */

static mroom_t *
model_find(fconn_t *fc, const void *name, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < fc->nrooms; i++) {
        if (fc->rooms[i].len == len
            && ngx_memcmp(fc->rooms[i].name, name, len) == 0)
        {
            return &fc->rooms[i];
        }
    }

    return NULL;
}


static void
model_add(fconn_t *fc, const void *name, size_t len)
{
    mroom_t  *r;

    ASSERT(fc->nrooms < MAX_MODEL_ROOMS && len <= NGX_CHAT_MAX_ROOM_NAME);

    r = &fc->rooms[fc->nrooms++];
    ngx_memcpy(r->name, name, len);
    r->len = len;
    r->last_id = 0;
}


static void
model_remove(fconn_t *fc, mroom_t *r)
{
    *r = fc->rooms[--fc->nrooms];
}


/* the users the model has in a room (at the time of the step's message) */

static ngx_uint_t
model_users(const void *room, size_t len, const u_char **users,
    size_t *lens)
{
    ngx_uint_t  i, k, n;
    fconn_t    *fc;

    n = 0;

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if ((!fc->open && !fc->closed_now) || !model_find(fc, room, len)) {
            continue;
        }

        for (k = 0; k < n; k++) {
            if (lens[k] == fc->user_len
                && ngx_memcmp(users[k], fc->user, fc->user_len) == 0)
            {
                break;
            }
        }

        if (k == n) {
            users[n] = fc->user;
            lens[n] = fc->user_len;
            n++;
        }
    }

    return n;
}


/* other connections of fc's user in a room, by the model */

static ngx_uint_t
model_count_user(fconn_t *fc, const void *room, size_t len)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < NCONN; i++) {
        if (&fconns[i] != fc && (fconns[i].open || fconns[i].closed_now)
            && fconns[i].user_len == fc->user_len
            && ngx_memcmp(fconns[i].user, fc->user, fc->user_len) == 0
            && model_find(&fconns[i], room, len))
        {
            n++;
        }
    }

    return n;
}


/*
 * Delivery: after a send, every other member of the room has the message;
 * after a user's first join, every member of another user hears of it.
 * Worker B's members only when B reads its notifications (not paused),
 * and not those being closed.
 */

static ngx_uint_t
got(fconn_t *fc, const char *type, const char *key, json_t *value)
{
    ngx_uint_t  i;

    for (i = 0; i < fc->ngot; i++) {
        if (jtype_is(fc->got[i], type)
            && jstr_eq(json_object_get(fc->got[i], "room"), fstep.room,
                       fstep.room_len)
            && json_equal(json_object_get(fc->got[i], key), value))
        {
            return 1;
        }
    }

    return 0;
}


static void
delivery_check(void)
{
    json_t      *user;
    fconn_t     *fc, *s;
    ngx_uint_t   i;

    s = fstep.sender;

    if (s == NULL || fstep.injected || fstep.malformed) {
        return;
    }

    user = NULL;

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (fc == s || !fc->open || fc->ws->closing
            || (fpaused && fc->worker != s->worker)
            || !model_find(fc, fstep.room, fstep.room_len))
        {
            continue;
        }

        if (fstep.ack_id && !got(fc, "message", "id", fstep.ack_id)) {
            fprintf(stderr, "connection %lu did not get message %s\n",
                    (unsigned long) i, json_string_value(fstep.ack_id));
            ASSERT(0);
        }

        if (fstep.new_join && fstep.user_new
            && !(fc->user_len == s->user_len
                 && ngx_memcmp(fc->user, s->user, s->user_len) == 0))
        {
            if (user == NULL) {
                user = json_stringn((const char *) s->user, s->user_len);
                ASSERT(user != NULL);
            }

            if (!got(fc, "presence", "user", user)) {
                fprintf(stderr, "connection %lu did not hear of a join\n",
                        (unsigned long) i);
                ASSERT(0);
            }
        }
    }

    if (user) {
        json_decref(user);
    }
}


/* message records: every copy of a message must be the same */

static NO_COVERAGE void
record_check(json_t *m, uint64_t id)
{
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = nfrecs;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (frecs[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    if (lo < nfrecs && frecs[lo].id == id) {
        if (!json_equal(frecs[lo].msg, m)) {
            fprintf(stderr, "message %llu differs from an earlier copy\n",
                    (unsigned long long) id);
            ASSERT(0);
        }

        return;
    }

    if (nfrecs == capfrecs) {
        capfrecs = capfrecs ? capfrecs * 2 : 256;
        frecs = realloc(frecs, capfrecs * sizeof(frec_t));
        ASSERT(frecs != NULL);
    }

    ngx_memmove(&frecs[lo + 1], &frecs[lo], (nfrecs - lo) * sizeof(frec_t));
    frecs[lo].id = id;
    frecs[lo].msg = json_incref(m);
    nfrecs++;
}


static void
records_free(void)
{
    ngx_uint_t  i;

    for (i = 0; i < nfrecs; i++) {
        json_decref(frecs[i].msg);
    }

    free(frecs);
    frecs = NULL;
    nfrecs = 0;
    capfrecs = 0;
}


/* frames */

static u_char *frame_inflate(u_char *p, size_t plen, ngx_uint_t wbits,
    size_t *len);


static json_t *
frame_check(fconn_t *fc, ngx_chat_buf_t *b, ngx_uint_t *opcode)
{
    u_char        *p, *inflated;
    size_t         hlen;
    uint32_t       utf8;
    uint64_t       plen;
    ngx_uint_t     i, code;
    json_t        *j, *d;
    json_error_t   err;

    ASSERT(b->refs >= 1);
    ASSERT(b->len >= 2);

    p = b->data;

    /*
     * FIN, no RSV bits but RSV1 on the text frames of a connection that
     * negotiated compression, no mask from a server
     */
    ASSERT((p[0] & 0xb0) == 0x80);
    ASSERT((p[0] & 0x40) == 0
           || (fc->ws->deflate && (p[0] & 0x0f) == NGX_CHAT_FRAME_TEXT));
    ASSERT((p[1] & 0x80) == 0);

    *opcode = p[0] & 0x0f;
    plen = p[1] & 0x7f;
    hlen = 2;

    if (plen == 126) {
        ASSERT(b->len >= 4);
        plen = ((uint64_t) p[2] << 8) | p[3];
        hlen = 4;
        ASSERT(plen >= 126);

    } else if (plen == 127) {
        ASSERT(b->len >= 10);
        plen = 0;
        for (i = 2; i < 10; i++) {
            plen = (plen << 8) | p[i];
        }
        hlen = 10;
        ASSERT(plen > 0xffff && plen < ((uint64_t) 1 << 63));
    }

    if (b->len != hlen + plen) {
        dump("frame", b->data, b->len);
        ASSERT(b->len == hlen + plen);
    }

    p += hlen;

    switch (*opcode) {

    case NGX_CHAT_FRAME_TEXT:
        break;

    case NGX_CHAT_FRAME_CLOSE:
        ASSERT(plen >= 2 && plen <= 125);
        code = (p[0] << 8) | p[1];
        ASSERT((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
               || (code >= 3000 && code <= 4999));
        utf8 = NGX_CHAT_UTF8_ACCEPT;
        ASSERT(ngx_chat_utf8_validate(&utf8, p + 2, plen - 2)
               == NGX_CHAT_UTF8_ACCEPT);
        return NULL;

    case NGX_CHAT_FRAME_PING:
    case NGX_CHAT_FRAME_PONG:
        ASSERT(plen <= 125);
        return NULL;

    default:
        dump("frame", b->data, b->len);
        ASSERT(0 && "not a server frame opcode");
    }

    inflated = NULL;

    if (b->data[0] & 0x40) {
        inflated = frame_inflate(p, plen, fc->ws->deflate_wbits, &plen);
        ASSERT(plen >= fc->conf->deflate_min_size);
        p = inflated;
    }

    j = json_loadb((const char *) p, plen, 0, &err);

    if (j == NULL) {
        fprintf(stderr, "json_loadb: %s at %d\n", err.text, err.position);
        dump("payload", p, plen);
        abort();
    }

    d = json_loadb((const char *) p, plen, JSON_REJECT_DUPLICATES, &err);

    if (d == NULL) {
        fprintf(stderr, "duplicate key: %s\n", err.text);
        dump("payload", p, plen);
        abort();
    }

    json_decref(d);

    if (!json_is_object(j) || !json_is_string(json_object_get(j, "type"))) {
        dump("payload", p, plen);
        ASSERT(0 && "not an object with a \"type\" string");
    }

    free(inflated);

    return j;
}


/*
 * A compressed payload (RFC 7692) inflated as a client with this window
 * would: malloc()ed, *len its size
 */

static u_char *
frame_inflate(u_char *p, size_t plen, ngx_uint_t wbits, size_t *len)
{
    int        rc, piece;
    u_char    *out;
    size_t     cap;
    z_stream   z;

    static u_char  tail[4] = { 0x00, 0x00, 0xff, 0xff };

    ngx_memzero(&z, sizeof(z_stream));
    ASSERT(inflateInit2(&z, - (int) wbits) == Z_OK);

    cap = 1024;
    out = malloc(cap);
    ASSERT(out != NULL);
    *len = 0;

    for (piece = 0; piece < 2; piece++) {
        z.next_in = piece ? tail : p;
        z.avail_in = piece ? 4 : plen;

        for ( ;; ) {
            if (*len == cap) {
                cap *= 2;
                out = realloc(out, cap);
                ASSERT(out != NULL);
            }

            z.next_out = out + *len;
            z.avail_out = cap - *len;

            rc = inflate(&z, Z_SYNC_FLUSH);
            *len = cap - z.avail_out;

            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                dump("compressed payload", p, plen);
                ASSERT(0 && "a compressed frame that does not inflate");
            }

            if (z.avail_out) {
                break;
            }
        }
    }

    /* no final block: the next message starts afresh */
    ASSERT(z.avail_in == 0);
    inflateEnd(&z);

    return out;
}


/* a "message" object, live or in a history frame */

static uint64_t
message_check(json_t *m, const void *room, size_t room_len)
{
    uint64_t  id;

    ASSERT(json_is_object(m) && jtype_is(m, "message"));
    ASSERT(json_is_string(json_object_get(m, "room")));
    ASSERT(json_is_string(json_object_get(m, "user")));
    ASSERT(json_is_string(json_object_get(m, "content")));
    ASSERT(json_is_integer(json_object_get(m, "ts"))
           && json_integer_value(json_object_get(m, "ts")) >= 0);

    if (room) {
        ASSERT(jstr_eq(json_object_get(m, "room"), room, room_len));
    }

    id = parse_id(json_object_get(m, "id"));
    record_check(m, id);

    return id;
}


/* where the model's ring has the id a client names (exactly), or -1 */

static ngx_int_t
zroom_pos(zroom_t *zr, json_t *s)
{
    u_char      buf[NGX_INT64_LEN + 13];
    size_t      len;
    ngx_uint_t  i;

    for (i = 0; zr && i < zr->n; i++) {
        len = ngx_sprintf(buf, "%uL-000000000000", zr->ids[i]) - buf;

        if (jstr_eq(s, buf, len)) {
            return i;
        }
    }

    return -1;
}


/*
 * A history reply, against the model's ring of the room as it was when
 * the request came (the end of the last step): the messages asked for,
 * oldest first, and "complete" as the zone computes it
 */

static void
history_check(fconn_t *fc, json_t *j, ngx_uint_t join)
{
    size_t       i, n;
    json_t      *msgs, *limit, *before, *since, *complete;
    mroom_t     *r;
    zroom_t     *zr;
    uint64_t     id, prev, total;
    ngx_int_t    end;
    ngx_uint_t   from, cnt, comp, zn;
    json_int_t   max;

    ASSERT(jstr_eq(json_object_get(j, "room"), fstep.room, fstep.room_len));

    msgs = json_object_get(j, "messages");
    complete = json_object_get(j, "complete");

    ASSERT(json_is_array(msgs) && json_is_boolean(complete));

    n = json_array_size(msgs);
    prev = 0;

    for (i = 0; i < n; i++) {
        id = message_check(json_array_get(msgs, i), fstep.room,
                           fstep.room_len);
        ASSERT(id > prev);
        prev = id;
    }

    r = model_find(fc, fstep.room, fstep.room_len);
    ASSERT(r != NULL);

    /* NULL: the room is new (this join made it) */
    zr = zroom_find(fstep.room, fstep.room_len);
    zn = zr ? zr->n : 0;
    total = zr ? zr->total : 0;

    if (join) {
        since = json_object_get(fstep.req, "since");

        if (since) {
            end = zroom_pos(zr, since);

            if (end >= 0) {
                from = end + 1;
                cnt = zn - from;
                comp = 1;

            } else {
                from = 0;
                cnt = zn;
                comp = 0;
            }

        } else {
            max = json_integer_value(json_object_get(fstep.req, "history"));
            max = ngx_min(max, NGX_CHAT_MAX_HISTORY);
            cnt = ngx_min((ngx_uint_t) max, zn);
            from = zn - cnt;
            comp = (cnt == (ngx_uint_t) max || total == zn);
        }

        /* live messages follow, newer than these */
        r->last_id = ngx_max(r->last_id, prev);

    } else {
        limit = json_object_get(fstep.req, "limit");
        max = limit ? json_integer_value(limit) : 50;
        max = ngx_min(max, NGX_CHAT_MAX_HISTORY);

        before = json_object_get(fstep.req, "before");
        end = before ? zroom_pos(zr, before) : (ngx_int_t) zn;

        if (end < 0) {
            /* an id the ring does not have */
            from = 0;
            cnt = 0;
            comp = 0;

        } else {
            cnt = ngx_min((ngx_uint_t) max, (ngx_uint_t) end);
            from = end - cnt;
            comp = (cnt == (ngx_uint_t) max || total == zn);
        }
    }

    if (n != cnt || (ngx_uint_t) json_is_true(complete) != comp) {
        fprintf(stderr, "history of %zu messages, complete %d; the model: "
                "%lu from %lu of %lu, complete %lu\n", n,
                json_is_true(complete), (unsigned long) cnt,
                (unsigned long) from, (unsigned long) zn,
                (unsigned long) comp);
        ASSERT(0);
    }

    for (i = 0; i < n; i++) {
        id = parse_id(json_object_get(json_array_get(msgs, i), "id"));
        ASSERT(id == zr->ids[from + i]);
    }
}


static void
error_check(fconn_t *fc, json_t *j)
{
    json_t       *code, *retry;
    mroom_t      *r;
    const char   *c;

    code = json_object_get(j, "code");
    retry = json_object_get(j, "retry_after_ms");

    ASSERT(json_is_string(code));
    ASSERT(json_is_string(json_object_get(j, "message")));

    c = json_string_value(code);

    if (fstep.req_limited) {
        /* over chat_request_rate: refused, whatever it was */
        if (ngx_strcmp(c, "rate_limited") != 0) {
            fprintf(stderr, "a request over chat_request_rate got \"%s\"\n",
                    c);
            ASSERT(0);
        }

        if (!json_is_integer(retry)
            || json_integer_value(retry) != (json_int_t) fstep.req_retry)
        {
            fprintf(stderr, "retry_after_ms is not %lu\n",
                    (unsigned long) fstep.req_retry);
            ASSERT(0);
        }

        return;
    }

    if (fstep.malformed) {
        if (ngx_strcmp(c, "bad_request") != 0) {
            fprintf(stderr, "a malformed request got \"%s\"\n", c);
            ASSERT(0);
        }

        return;
    }

    r = model_find(fc, fstep.room, fstep.room_len);

    if (ngx_strcmp(c, "bad_request") == 0) {
        fprintf(stderr, "a well-formed request got bad_request\n");
        ASSERT(0);

    } else if (ngx_strcmp(c, "not_member") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "join") != 0);
        ASSERT(r == NULL);

    } else if (ngx_strcmp(c, "too_many_rooms") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "join") == 0);
        ASSERT(r == NULL && fc->nrooms >= fc->conf->max_rooms);

    } else if (ngx_strcmp(c, "rate_limited") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "send") == 0 && fc->conf->rate.rate);
        ASSERT(fstep.bucket && fstep.limited);
        fstep.got_limited = 1;

        if (!json_is_integer(retry)
            || json_integer_value(retry) != (json_int_t) fstep.retry)
        {
            fprintf(stderr, "retry_after_ms is not %lu\n",
                    (unsigned long) fstep.retry);
            ASSERT(0);
        }

    } else if (ngx_strcmp(c, "unavailable") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "leave") != 0);

    } else {
        fprintf(stderr, "unknown error code \"%s\"\n", c);
        ASSERT(0);
    }

    if (ngx_strcmp(c, "rate_limited") != 0) {
        ASSERT(retry == NULL);
    }
}


static void
reply_check(fconn_t *fc, json_t *j)
{
    size_t        i, n, k, nusers, lens[NCONN];
    json_t       *ref, *u, *users;
    mroom_t      *r;
    uint64_t      id;
    const char   *t;
    const u_char *names[NCONN];

    t = json_string_value(json_object_get(j, "type"));

    if (fc != fstep.sender) {
        fprintf(stderr, "a \"%s\" reply that no request asked for\n", t);
        ASSERT(0);
    }

    ref = json_object_get(j, "ref");

    if (ngx_strcmp(t, "error") == 0 || ngx_strcmp(t, "ack") == 0) {
        /* the request's "ref", when it is a string, comes back */
        if (fstep.ref) {
            ASSERT(ref != NULL && json_equal(ref, fstep.ref));
        } else {
            ASSERT(ref == NULL);
        }
    }

    if (ngx_strcmp(t, "error") == 0) {
        fstep.primaries++;
        error_check(fc, j);
        return;
    }

    /* anything else answers a well-formed request of its own type */

    ASSERT(!fstep.malformed && !fstep.req_limited);

    r = model_find(fc, fstep.room, fstep.room_len);

    if (ngx_strcmp(t, "joined") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "join") == 0);
        ASSERT(jstr_eq(json_object_get(j, "room"), fstep.room,
                       fstep.room_len));
        fstep.primaries++;

        if (r == NULL) {
            ASSERT(fc->nrooms < fc->conf->max_rooms);
            fstep.user_new = (model_count_user(fc, fstep.room,
                                               fstep.room_len) == 0);
            model_add(fc, fstep.room, fstep.room_len);
            fstep.new_join = 1;
        }

        nusers = model_users(fstep.room, fstep.room_len, names, lens);

        if (!json_is_integer(json_object_get(j, "members"))
            || json_integer_value(json_object_get(j, "members"))
               != (json_int_t) nusers)
        {
            fprintf(stderr, "\"members\" is not %zu\n", nusers);
            ASSERT(0);
        }

        return;
    }

    if (ngx_strcmp(t, "history") == 0) {
        if (ngx_strcmp(fstep.type, "join") == 0) {
            if (fstep.injected && !fstep.new_join) {
                /* the "joined" frame was lost to a failed allocation */
                ASSERT(fstep.want_history);
                model_add(fc, fstep.room, fstep.room_len);
                fstep.new_join = 1;
            }

            /* the replay after a first join that asked for one */
            ASSERT(fstep.new_join && fstep.want_history);
            ASSERT(fstep.history_frames++ == 0);
            history_check(fc, j, 1);
            return;
        }

        ASSERT(ngx_strcmp(fstep.type, "history") == 0);
        fstep.primaries++;
        history_check(fc, j, 0);
        return;
    }

    fstep.primaries++;

    if (ngx_strcmp(t, "left") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "leave") == 0 && r != NULL);
        ASSERT(jstr_eq(json_object_get(j, "room"), fstep.room,
                       fstep.room_len));
        model_remove(fc, r);
        return;
    }

    if (ngx_strcmp(t, "who") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "who") == 0 && r != NULL);
        ASSERT(jstr_eq(json_object_get(j, "room"), fstep.room,
                       fstep.room_len));

        users = json_object_get(j, "users");
        ASSERT(json_is_array(users));

        nusers = model_users(fstep.room, fstep.room_len, names, lens);
        n = json_array_size(users);

        if (n != nusers) {
            fprintf(stderr, "\"who\" lists %zu users, the model %zu\n", n,
                    nusers);
            ASSERT(0);
        }

        for (i = 0; i < n; i++) {
            u = json_array_get(users, i);

            for (k = 0; k < nusers; k++) {
                if (jstr_eq(u, names[k], lens[k])) {
                    break;
                }
            }

            ASSERT(k < nusers);
        }

        return;
    }

    if (ngx_strcmp(t, "ack") == 0) {
        ASSERT(ngx_strcmp(fstep.type, "send") == 0 && r != NULL);

        id = parse_id(json_object_get(j, "id"));
        if (fstep.ack_id == NULL) {
            fstep.ack_id = json_incref(json_object_get(j, "id"));
        }

        if (fstep.injected) {
            return;
        }

        /* the sender got its own message, the same, before the ack */

        for (i = 0; i < fstep.nmine; i++) {
            if (parse_id(json_object_get(fstep.mine[i], "id")) == id) {
                break;
            }
        }

        if (i == fstep.nmine) {
            fprintf(stderr, "ack of %llu before the message\n",
                    (unsigned long long) id);
            ASSERT(0);
        }

        ASSERT(jstr_eq(json_object_get(fstep.mine[i], "room"), fstep.room,
                       fstep.room_len));
        ASSERT(jstr_eq(json_object_get(fstep.mine[i], "user"), fc->user,
                       fc->user_len));
        ASSERT(json_equal(json_object_get(fstep.mine[i], "content"),
                          json_object_get(fstep.req, "content")));
        return;
    }

    fprintf(stderr, "unknown frame type \"%s\"\n", t);
    ASSERT(0);
}


/* a frame queued to fc in this step, in queue order */

static void
frame_semantics(fconn_t *fc, json_t *j)
{
    json_t      *room, *user, *event;
    mroom_t     *r;
    uint64_t     id;

    if (fc->expect_welcome) {
        ASSERT(jtype_is(j, "welcome"));
        ASSERT(jstr_eq(json_object_get(j, "user"), fc->user, fc->user_len));
        fc->expect_welcome = 0;
        return;
    }

    ASSERT(!jtype_is(j, "welcome"));

    if (jtype_is(j, "message")) {
        id = message_check(j, NULL, 0);
        room = json_object_get(j, "room");
        r = model_find(fc, json_string_value(room), json_string_length(room));

        if (r == NULL) {
            dump("message to a non-member",
                 (u_char *) json_string_value(room),
                 json_string_length(room));
            ASSERT(0);
        }

        if (id <= r->last_id) {
            fprintf(stderr, "message %llu after %llu on connection %lu\n",
                    (unsigned long long) id, (unsigned long long) r->last_id,
                    (unsigned long) fc->index);
            ASSERT(0);
        }

        r->last_id = id;

        if (fc->ngot < 128) {
            fc->got[fc->ngot++] = json_incref(j);
        }

        if (fc == fstep.sender && fstep.nmine < 64) {
            fstep.mine[fstep.nmine++] = json_incref(j);
        }

        return;
    }

    if (jtype_is(j, "presence")) {
        room = json_object_get(j, "room");
        user = json_object_get(j, "user");
        event = json_object_get(j, "event");

        ASSERT(json_is_string(room) && json_is_string(user));
        ASSERT(jstr_eq(event, "join", 4) || jstr_eq(event, "leave", 5));
        ASSERT(model_find(fc, json_string_value(room),
                          json_string_length(room)) != NULL);

        /* nobody hears of their own user coming or going */
        ASSERT(!jstr_eq(user, fc->user, fc->user_len));

        if (fc->ngot < 128) {
            fc->got[fc->ngot++] = json_incref(j);
        }
        return;
    }

    reply_check(fc, j);
}


/*
 * What the connection layer may hold for a slow reader (SPEC 8): the
 * frames it queued beyond what the kernel took, at most chat_send_buffer
 * plus the one frame that went over it, plus the latest pong (at most one
 * pong waits) and the close frame.  ping, pinged: the latest ping's
 * payload is the one the waiting pong carries, and a ping is answered.
 */

static void
queue_bound_check(fconn_t *fc)
{
    u_char          *p;
    size_t           hlen, bytes, data, max;
    ngx_uint_t       k, pongs;
    ngx_chat_ws_t   *ws;
    ngx_chat_buf_t  *b, *pong;

    ws = fc->ws;

    bytes = 0;
    data = 0;
    max = 0;
    pongs = 0;
    pong = NULL;

    for (k = 0; k < ws->out_n; k++) {
        b = ws->out[(ws->out_head + k) % ws->out_cap];
        bytes += b->len;

        if ((b->data[0] & 0x88) != 0x88) {
            /* data (the 101 response too) */
            data += b->len;
            max = ngx_max(max, b->len);
            continue;
        }

        if ((b->data[0] & 0x0f) == NGX_CHAT_FRAME_PONG) {
            pongs++;
            pong = b;
        }
    }

    ASSERT(ws->out_bytes == bytes);
    ASSERT(pongs <= 1);
    ASSERT(ws->pong == NULL || ws->pong == pong);

    if (data > fc->conf->send_buffer + max) {
        fprintf(stderr, "connection %lu holds %zu bytes of data, its send "
                "buffer is %zu, its largest frame %zu\n",
                (unsigned long) fc->index, data, fc->conf->send_buffer, max);
        ASSERT(0);
    }

    if (ws->closing) {
        /* whether the ping before the error was read: not known here */
        return;
    }

    if (ws->pong) {
        p = ws->pong->data;
        hlen = 2;
        ASSERT((p[1] & 0x7f) == fc->ping_len);
        ASSERT(ws->pong->len == hlen + fc->ping_len);
        ASSERT(ngx_memcmp(p + hlen, fc->ping, fc->ping_len) == 0);

    } else if (fc->pinged && !fstep.injected
               && ngx_fuzz_allocs_failed == fallocs_seen)
    {
        /* (unless its allocation failed) */
        fprintf(stderr, "connection %lu: a ping without a pong\n",
                (unsigned long) fc->index);
        ASSERT(0);
    }
}


/* checks the frames queued to fc since the last call; semantics: in order */

static void
queue_check(fconn_t *fc, ngx_uint_t semantics)
{
    json_t          *j;
    ngx_uint_t       k, opcode, code;
    ngx_chat_ws_t   *ws;
    ngx_chat_buf_t  *b;

    ws = fc->ws;

    ASSERT(ws->out_n <= ws->out_cap && ws->out_head < ws->out_cap);
    ASSERT(ws->out_sent == 0);

    if (ws->closing) {
        /*
         * what follows the close frame is not read; a slow reader's queue
         * was dropped behind the frames validated: all again, for form
         */
        fc->validated = 0;
        semantics = 0;
    }

    ASSERT(fc->validated <= ws->out_n);

    for (k = fc->validated; k < ws->out_n; k++) {
        b = ws->out[(ws->out_head + k) % ws->out_cap];

        j = frame_check(fc, b, &opcode);

        if (opcode == NGX_CHAT_FRAME_CLOSE) {
            /* the close frame is the last thing sent */
            ASSERT(ws->closing && k == ws->out_n - 1);

            /* "send buffer full" only for a client that stopped reading */
            code = (b->data[2] << 8) | b->data[3];
            ASSERT(code != NGX_CHAT_CLOSE_POLICY || fc->stalled);
        }

        if (j) {
            if (semantics) {
                frame_semantics(fc, j);
            }

            json_decref(j);
        }
    }

    fc->validated = ws->out_n;

    queue_bound_check(fc);
}


/*
 * The kernel's side of the connection's writes, send() and writev(): the
 * connection layer offers its queue before it judges the send buffer, and
 * the write event flushes it (queue_consume()).  A client that stopped
 * reading takes nothing; one that reads, everything, once the harness has
 * checked the frames, as they leave the queue.
 */

static ssize_t
client_write(ngx_socket_t fd, const struct iovec *iov, int n)
{
    int              i;
    size_t           len;
    fconn_t         *fc;
    ngx_chat_ws_t   *ws;
    ngx_chat_buf_t  *b;

    if (fd < FAKE_FD || fd >= FAKE_FD + NCONN) {
        return NGX_DECLINED;
    }

    fc = &fconns[fd - FAKE_FD];
    ASSERT(fc->c != NULL && fc->c->fd == fd);

    ws = fc->ws;

    if (fc->stalled) {
        ngx_set_socket_errno(NGX_EAGAIN);
        return -1;
    }

    queue_check(fc, !ws->closing);

    ASSERT(n >= 1 && (ngx_uint_t) n <= ws->out_n && ws->out_sent == 0);

    len = 0;

    for (i = 0; i < n; i++) {
        b = ws->out[(ws->out_head + i) % ws->out_cap];
        ASSERT(iov[i].iov_base == b->data && iov[i].iov_len == b->len);
        len += b->len;

        if ((b->data[0] & 0x0f) == NGX_CHAT_FRAME_PONG) {
            fc->pinged = 0;
        }
    }

    /* they leave the queue */
    fc->validated -= n;

    return len;
}


/* the client reads: the socket is writable again, the write event runs */

static void
queue_consume(fconn_t *fc)
{
    ngx_connection_t  *c;

    c = fc->c;

    ASSERT(!fc->ws->closing);

    c->write->ready = 1;
    c->write->handler(c->write);

    ASSERT(fc->ws->out_n == 0 && fc->ws->out_bytes == 0);
    ASSERT(fc->validated == 0 && !fc->ws->write_blocked);
}


/* the client's side of a connection */

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

    /* as ngx_unix_recv(): a short read means the socket is drained */
    if (n < size) {
        c->read->ready = 0;
    }

    return n;
}


/* the server reads what the client sent, as the event loop would run it */

static void
client_send(fconn_t *fc, u_char *data, size_t len)
{
    ngx_connection_t  *c;

    c = fc->c;
    fwire.pos = data;
    fwire.len = len;

    while (fwire.len && !fc->ws->closing) {
        c->read->ready = 1;
        c->read->handler(c->read);

        /* it posts itself for another turn when it stops reading early */
        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }
    }

    /* after its close frame, the server discards what the client sends */
    fwire.len = 0;
}


/* one masked client frame at p; returns its end */

static u_char *
client_frame(u_char *p, ngx_uint_t fin, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    size_t             i;
    ngx_uint_t         k;
    static const u_char  mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

    /* opcode | 0x40: RSV1, the message is compressed */
    *p++ = (u_char) ((fin ? 0x80 : 0) | opcode);

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


/*
 * A text message as the client sends it: one frame, or fragments of
 * ffragment bytes with a ping after the first (*pinged); malloc()ed, *n
 * its size
 */

static u_char *
client_message_frames(fconn_t *fc, u_char *data, size_t len, size_t *n,
    ngx_uint_t *pinged)
{
    u_char    *buf, *p, *z;
    size_t     frag, off, k, nfrag, zlen;
    z_stream   zs;

    z = NULL;

    if (fcompress && fc->conf->deflate) {
        /* permessage-deflate: raw, sync flush, without its 00 00 ff ff */

        ngx_memzero(&zs, sizeof(z_stream));
        ASSERT(deflateInit2(&zs, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY)
               == Z_OK);

        zlen = deflateBound(&zs, len) + 16;
        z = malloc(zlen);
        ASSERT(z != NULL);

        zs.next_in = data;
        zs.avail_in = len;
        zs.next_out = z;
        zs.avail_out = zlen;

        ASSERT(deflate(&zs, Z_SYNC_FLUSH) == Z_OK && zs.avail_in == 0);

        zlen -= zs.avail_out;
        deflateEnd(&zs);

        ASSERT(zlen >= 4 && ngx_memcmp(z + zlen - 4, "\0\0\377\377", 4) == 0);

        data = z;
        len = zlen - 4;
    }

    frag = (ffragment && ffragment < len) ? ffragment : len;
    nfrag = frag ? (len + frag - 1) / frag : 1;

    /* each frame: 14 bytes of header at most; the ping: 7 */
    buf = malloc(nfrag * (14 + frag) + 7);
    ASSERT(buf != NULL);

    p = buf;
    off = 0;

    for (k = 0; k < nfrag; k++) {
        if (k == 1) {
            p = client_frame(p, 1, NGX_CHAT_FRAME_PING, (u_char *) "p", 1);
        }

        p = client_frame(p, k == nfrag - 1,
                         k ? NGX_CHAT_FRAME_CONT
                           : NGX_CHAT_FRAME_TEXT | (z ? 0x40 : 0),
                         data + off, ngx_min(frag, len - off));
        off += frag;
    }

    *n = p - buf;

    /* fragments of the compressed bytes when compressed */
    *pinged = nfrag > 1;

    free(z);

    return buf;
}


static fconn_t *
conn_of(ngx_chat_ws_t *ws)
{
    ngx_uint_t  i;

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].ws == ws) {
            return &fconns[i];
        }
    }

    ASSERT(0 && "a connection the harness did not open");
    return NULL;
}


/*
 * ws->message: what the connection layer passes up goes through the model,
 * then, in an exactly sized copy, to the protocol
 */

static void
client_message(ngx_chat_ws_t *ws, u_char *data, size_t len)
{
    u_char   *copy;
    fconn_t  *fc;

    fc = conn_of(ws);

    /* one message per step */
    ASSERT(fstep.sender == NULL);

    copy = malloc(len ? len : 1);
    ASSERT(copy != NULL);
    ngx_memcpy(copy, data, len);

    fstep.sender = fc;
    request_parse(copy, len);

    if (fstep.counted && fc->conf->request_rate.rate) {
        request_rate_predict(fc);
    }

    if (!fstep.malformed && !fstep.counted
        && fc->conf->rate.rate && model_find(fc, fstep.room, fstep.room_len))
    {
        rate_predict(fc);
    }

    fc->message(ws, copy, len);

    free(copy);
}


/* what the handshake answers for this user */

static ngx_int_t
user_status(fconn_t *fc)
{
    uint32_t  utf8;

    if (fc->user_len == 0) {
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (fc->user_len > NGX_CHAT_MAX_USER) {
        return NGX_HTTP_BAD_REQUEST;
    }

    utf8 = NGX_CHAT_UTF8_ACCEPT;

    if (ngx_chat_utf8_validate(&utf8, fc->user, fc->user_len)
        != NGX_CHAT_UTF8_ACCEPT
        || memchr(fc->user, '\0', fc->user_len))
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_DONE;
}


/*
 * A connection of its worker asks for the upgrade; data: what the client
 * sent right behind its handshake (the start handler reads it), or NULL
 */

static void
conn_open(fconn_t *fc, u_char *data, size_t len)
{
    ngx_int_t            rc, expect;
    ngx_uint_t           closed;
    ngx_pool_t          *pool;
    ngx_chat_ws_t       *ws;
    ngx_chat_buf_t      *b;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    u_char          *response;
    size_t           response_len;

    static u_char  plain[] = "HTTP/1.1 101 Switching Protocols" CRLF
                             "Upgrade: websocket" CRLF
                             "Connection: Upgrade" CRLF
                             "Sec-WebSocket-Accept: " WS_ACCEPT CRLF CRLF;
    static u_char  pmd15[] = "HTTP/1.1 101 Switching Protocols" CRLF
                             "Upgrade: websocket" CRLF
                             "Connection: Upgrade" CRLF
                             "Sec-WebSocket-Accept: " WS_ACCEPT CRLF
                             "Sec-WebSocket-Extensions: permessage-deflate; "
                             "server_no_context_takeover; "
                             "client_no_context_takeover; "
                             "client_max_window_bits=15" CRLF CRLF;
    static u_char  pmd10[] = "HTTP/1.1 101 Switching Protocols" CRLF
                             "Upgrade: websocket" CRLF
                             "Connection: Upgrade" CRLF
                             "Sec-WebSocket-Accept: " WS_ACCEPT CRLF
                             "Sec-WebSocket-Extensions: permessage-deflate; "
                             "server_no_context_takeover; "
                             "client_no_context_takeover; "
                             "server_max_window_bits=10" CRLF CRLF;

    /*
     * every client offers compression (connection 1 with a window of 10
     * bits, after an offer it may not honour); 1 and 2 take it
     */

    if (fc->index == 1) {
        ngx_str_set(&fheaders[4].value,
                    "permessage-deflate; server_max_window_bits=8, "
                    "permessage-deflate; server_max_window_bits=10");
        response = pmd10;
        response_len = sizeof(pmd10) - 1;

    } else {
        ngx_str_set(&fheaders[4].value,
                    "permessage-deflate; client_max_window_bits");
        response = pmd15;
        response_len = sizeof(pmd15) - 1;
    }

    if (!fc->conf->deflate) {
        response = plain;
        response_len = sizeof(plain) - 1;
    }

    ASSERT(!fc->open);

    ngx_current_msec = fworkers[fc->worker].clock;

    /* as nginx has them: the connection, and the request in its own pool */

    fc->log = flog;

    /* writes go to client_write() */
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

    /* one slot each: ngx_chat_module's ctx_index is 0 here */
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

    if (data) {
        r->header_in->pos = data;
        r->header_in->last = data + len;
    }

    c->data = r;

    fc->user_cv.value.data = fc->user;
    fc->user_cv.value.len = fc->user_len;
    fc->conf->user = &fc->user_cv;

    rc = ngx_chat_proto_handler(r);

    expect = user_status(fc);
    ws = ngx_http_get_module_ctx(r, ngx_chat_module);

    if (rc != NGX_DONE) {
        /*
         * refused: for the user, or (503) the zone is full, or (500) an
         * allocation failed; nothing may be left behind
         */

        if (expect != NGX_DONE) {
            ASSERT(rc == expect);

        } else if (rc != NGX_HTTP_SERVICE_UNAVAILABLE) {
            ASSERT(rc == NGX_HTTP_INTERNAL_SERVER_ERROR
                   && ngx_fuzz_allocs_failed != fallocs_seen);
        }

        if (ws) {
            /* the upgrade (ngx_chat_ws_abort() then), or its 101 failed */
            ASSERT(ws->out_n == 0 && !ws->flush_posted);
        }

        /* nginx finalizes the request with rc, then closes */
        ngx_http_free_request(r, rc);
        ngx_http_close_connection(c);
        return;
    }

    ASSERT(expect == NGX_DONE);
    ASSERT(ws != NULL && ws->connection == c && ws->request == r);
    ASSERT(ws->message != NULL && ws->closed != NULL);

    /* the 101 response goes first */

    ASSERT(ws->out_n >= 1 && ws->out_sent == 0);
    b = ws->out[ws->out_head];

    if (b->len != response_len
        || ngx_memcmp(b->data, response, b->len) != 0)
    {
        dump("101 response", b->data, b->len);
        ASSERT(0);
    }

    ws->out_head = (ws->out_head + 1) % ws->out_cap;
    ws->out_n--;
    ws->out_bytes -= b->len;
    ngx_chat_buf_release(b);

    fc->c = c;
    fc->ws = ws;
    fc->message = ws->message;
    ws->message = client_message;

    fc->open = 1;
    fc->expect_welcome = 1;
    fc->validated = 0;
    fc->nrooms = 0;
    fc->stalled = 0;
    fc->req_used = 0;
    fc->pinged = 0;

    /* nginx is done with the request: the start handler posted runs */

    ASSERT(c->write->posted);
    ngx_delete_posted_event(c->write);

    closed = ngx_fuzz_connections_closed;
    c->write->handler(c->write);

    if (ngx_fuzz_connections_closed != closed) {
        /* finalized: no copy of what the client sent (out of memory) */
        ASSERT(data && ngx_fuzz_allocs_failed != fallocs_seen);

        fc->ws = NULL;
        fc->c = NULL;
        fc->open = 0;
        return;
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    ASSERT(ws->started && ws->request == NULL && c->data == ws);
    ASSERT(c->read->timer_set);
}


/*
 * The client closes its side (having read the server's close frame, or
 * not: the TCP connection drops); shutdown: the worker exits meanwhile.
 * The read handler sees it and finalizes the connection.
 */

static void
conn_close(fconn_t *fc, ngx_uint_t shutdown)
{
    ngx_uint_t         closed;
    ngx_connection_t  *c;

    c = fc->c;

    /* what was queued until now is written */
    queue_check(fc, 0);

    closed = ngx_fuzz_connections_closed;

    if (shutdown) {
        /* worker_shutdown_timeout */
        c->close = 1;

    } else {
        fwire.len = 0;
        fwire.eof = 1;
        c->read->ready = 1;
    }

    c->read->handler(c->read);

    fwire.eof = 0;

    /* ngx_chat_ws_finalize(): closed, with everything it had */
    ASSERT(ngx_fuzz_connections_closed == closed + 1);

    fc->ws = NULL;
    fc->c = NULL;
    fc->open = 0;
    fc->closed_now = 1;     /* the model goes at the end of the step */
}


static void
conn_finalize(fconn_t *fc)
{
    conn_close(fc, 0);
}


/* the event loops of both workers, until nothing happens */

static ngx_uint_t
notify_pending(void)
{
    u_char  c;

    return recv(fnotify->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}


static void
pump(void)
{
    ngx_uint_t  i, round, progress;

    for (round = 0; round < 1000; round++) {
        progress = 0;

        /* a turn of the loop runs the posted wake-up of the other worker */
        ngx_chat_fanout_wake_posted();

        if (!fpaused && notify_pending()) {
            fnotify->read->handler(fnotify->read);
            progress = 1;
        }

        for (i = 0; i < NCONN; i++) {
            if (fconns[i].open && fconns[i].ws->closing) {
                conn_finalize(&fconns[i]);
                progress = 1;
            }
        }

        if (!progress) {
            return;
        }
    }

    ASSERT(0 && "the event loop does not settle");
}


/* the zone against the model */

/* an id in the zone: the decimal number (before "-" and the zone's tag) */

static NO_COVERAGE uint64_t
shm_id(u_char *p, size_t len)
{
    size_t    i;
    uint64_t  v;

    ASSERT(len > 13 && p[len - 13] == '-');
    len -= 13;

    v = 0;

    for (i = 0; i < len; i++) {
        ASSERT(p[i] >= '0' && p[i] <= '9');
        v = v * 10 + (p[i] - '0');
    }

    return v;
}


static NO_COVERAGE ngx_uint_t
slot_worker(ngx_uint_t slot)
{
    ngx_uint_t  w;

    for (w = 0; w < NWORKER; w++) {
        if (fworkers[w].ctx.wslot == (ngx_int_t) slot) {
            return w;
        }
    }

    return NWORKER;
}


/* open connections of worker w as user, in room (NULL: any) */

static NO_COVERAGE ngx_uint_t
model_count(ngx_uint_t w, ngx_str_t *user, ngx_str_t *room)
{
    ngx_uint_t  i, n;
    fconn_t    *fc;

    n = 0;

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (fc->open && fc->worker == w && fc->user_len == user->len
            && ngx_memcmp(fc->user, user->data, user->len) == 0
            && (room == NULL || model_find(fc, room->data, room->len)))
        {
            n++;
        }
    }

    return n;
}


static NO_COVERAGE void
mark(void *p, size_t min)
{
    ssize_t  size;

    size = ngx_fuzz_zone_mark(fzone, p);

    if (size < 0 || (size_t) size < min) {
        fprintf(stderr, "zone pointer %p is not a live block of %zu bytes "
                "(%zd)\n", p, min, size);
        ASSERT(0);
    }
}


static NO_COVERAGE void
tree_check(ngx_rbtree_t *tree, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *parent, ngx_uint_t *n)
{
    if (node == tree->sentinel) {
        return;
    }

    ASSERT(node->parent == parent);
    (*n)++;
    ASSERT(*n < 1000000);

    tree_check(tree, node->left, node, n);
    tree_check(tree, node->right, node, n);
}


static NO_COVERAGE ngx_uint_t
user_check(ngx_chat_shm_user_t *u, ngx_str_t *room, ngx_uint_t *total)
{
    ngx_uint_t  i, k, w, sum;

    mark(u, sizeof(ngx_chat_shm_user_t) + u->name.len);
    ASSERT(u->name.data == (u_char *) u + sizeof(ngx_chat_shm_user_t));
    ASSERT(u->node.key == ngx_crc32_short(u->name.data, u->name.len));
    ASSERT(u->nslots <= u->cap);

    if (u->slots) {
        mark(u->slots, u->cap * sizeof(ngx_chat_shm_slot_t));
    } else {
        ASSERT(u->cap == 0);
    }

    sum = 0;

    for (i = 0; i < u->nslots; i++) {
        ASSERT(u->slots[i].count > 0);

        for (k = 0; k < i; k++) {
            ASSERT(u->slots[k].slot != u->slots[i].slot);
        }

        w = slot_worker(u->slots[i].slot);

        if (w == NWORKER
            || u->slots[i].count != model_count(w, &u->name, room))
        {
            fprintf(stderr, "user \"%.*s\" has %lu connections on slot %lu "
                    "in %s\"%.*s\", the model %lu\n",
                    (int) u->name.len, u->name.data,
                    (unsigned long) u->slots[i].count,
                    (unsigned long) u->slots[i].slot,
                    room ? "room " : "the zone", room ? (int) room->len : 0,
                    room ? (char *) room->data : "",
                    w == NWORKER ? 0 : (unsigned long)
                                       model_count(w, &u->name, room));
            ASSERT(0);
        }

        sum += u->slots[i].count;
    }

    ASSERT(u->total == sum);

    /* and every connection of the model is counted */
    for (w = 0; w < NWORKER; w++) {
        if (model_count(w, &u->name, room)) {
            for (i = 0; i < u->nslots; i++) {
                if (u->slots[i].slot == (ngx_uint_t) fworkers[w].ctx.wslot) {
                    break;
                }
            }

            ASSERT(i < u->nslots);
        }
    }

    *total += sum;

    return sum;
}


/*
 * A room's ring and its index by id (ngx_chat_shm_hist.c): slab blocks of
 * their own, grown 8, 16, 32... up to the room's chat_history, the index
 * the smallest power of 2 with twice the ring's slots, one entry per
 * message, each found from its home slot by linear probing; and the index
 * lookup against a scan of the ring.  ids: the ring's ids, oldest first.
 */

static NO_COVERAGE void
ring_check(ngx_chat_shm_t *sh, ngx_chat_shm_room_t *room, uint64_t *ids)
{
    u_char               buf[NGX_INT64_LEN + 1], seen[MAX_RING];
    size_t               size;
    uint64_t             prev;
    ngx_str_t            id;
    ngx_uint_t           i, k, cap, n, mask, phys, home;
    ngx_chat_shm_msg_t  *msg;

    cap = room->hist_cap;

    ASSERT(room->hist_max <= MAX_RING);
    ASSERT(room->hist_n <= cap && cap <= room->hist_max);
    ASSERT(room->total >= room->hist_n);

    if (room->hist == NULL) {
        ASSERT(cap == 0 && room->hist_n == 0 && room->index == NULL);
        return;
    }

    ASSERT(room->index != NULL && cap > 0 && room->hist_head < cap);
    ASSERT(cap == room->hist_max || (cap >= 8 && (cap & (cap - 1)) == 0));

    size = room->index_size;
    ASSERT(size >= 2 * cap && size / 2 < 2 * cap && (size & (size - 1)) == 0);

    mark(room->hist, cap * sizeof(ngx_chat_shm_msg_t *));
    mark(room->index, size * sizeof(uint32_t));

    prev = 0;

    for (i = 0; i < room->hist_n; i++) {
        msg = room->hist[(room->hist_head + i) % cap];
        mark(msg, offsetof(ngx_chat_shm_msg_t, data) + msg->len);
        ASSERT(msg->id_len >= 1 && msg->id_len <= NGX_CHAT_ID_LEN);
        ASSERT(msg->hash == ngx_crc32_short(msg->id, msg->id_len));
        ids[i] = shm_id(msg->id, msg->id_len);
        ASSERT(ids[i] > prev);
        prev = ids[i];
    }

    ASSERT(prev <= sh->last_id);

    /* the index: one entry per message, each reachable from its home */

    ngx_memzero(seen, sizeof(seen));
    mask = size - 1;
    n = 0;

    for (i = 0; i < size; i++) {
        if (room->index[i] == 0) {
            continue;
        }

        n++;
        ASSERT(room->index[i] <= cap);
        phys = room->index[i] - 1;

        ASSERT((phys + cap - room->hist_head) % cap < room->hist_n);
        ASSERT(!seen[phys]);
        seen[phys] = 1;

        home = room->hist[phys]->hash & mask;

        for (k = home; k != i; k = (k + 1) & mask) {
            ASSERT(room->index[k] != 0);
        }
    }

    ASSERT(n == room->hist_n);

    /* lookups: each message where it is; ids it does not have nowhere */

    for (i = 0; i < room->hist_n; i++) {
        msg = room->hist[(room->hist_head + i) % cap];
        id.data = msg->id;
        id.len = msg->id_len;
        ASSERT(ngx_chat_shm_hist_find(room, &id) == (ngx_int_t) i);

        /* the id but its last digit */
        id.len--;
        ASSERT(id.len == 0 || ngx_chat_shm_hist_find(room, &id) == -1);
    }

    id.data = buf;
    id.len = ngx_sprintf(buf, "%uL", sh->last_id + 1) - buf;
    ASSERT(ngx_chat_shm_hist_find(room, &id) == -1);

    ngx_str_set(&id, "0");
    ASSERT(ngx_chat_shm_hist_find(room, &id) == -1);
}


/* the zone tree's order of names (ngx_fuzz_runtime.c): key, length, bytes */

static ngx_int_t
zroom_cmp(uint32_t key, const u_char *name, size_t len, zroom_t *zr)
{
    if (key != zr->key) {
        return key < zr->key ? -1 : 1;
    }

    if (len != zr->len) {
        return len < zr->len ? -1 : 1;
    }

    return ngx_memcmp(name, zr->name, len);
}


static zroom_t *
zroom_find(const void *name, size_t len)
{
    uint32_t    key;
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    key = ngx_crc32_short((u_char *) name, len);
    lo = 0;
    hi = nfzrooms;

    while (lo < hi) {
        mid = (lo + hi) / 2;
        rc = zroom_cmp(key, name, len, &fzrooms[mid]);

        if (rc == 0) {
            return &fzrooms[mid];
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


static ngx_uint_t
step_joins(const void *name, size_t len)
{
    return fstep.sender && !fstep.malformed && !fstep.req_limited
           && ngx_strcmp(fstep.type, "join") == 0
           && fstep.room_len == len
           && ngx_memcmp(fstep.room, name, len) == 0;
}


/*
 * The zone's rooms against the model's, after a step: a room appears only
 * when joined, with the joining location's chat_history; a message posted
 * goes at the end of its room's ring, which drops its oldest beyond
 * chat_history, and nothing else changes a ring unless the zone ran out
 * of memory in this step (then the ring may have lost its oldest); a room
 * with messages goes only when evicted, in the order the rooms became
 * empty, and every empty room goes before any idle user.  rooms: the
 * zone's, in tree order; ids: their rings.
 */

static NO_COVERAGE void
zone_model_check(ngx_chat_shm_t *sh, ngx_chat_shm_room_t **rooms,
    uint64_t (*ids)[MAX_RING], ngx_uint_t nrooms)
{
    uint64_t              posted;
    ngx_str_t             name;
    ngx_int_t             rc;
    ngx_uint_t            i, j, k, pressure, evicted, survivor, nidle;
    ngx_uint_t            room_left;
    ngx_queue_t          *q;
    zroom_t              *zr, *next;
    zidle_t              *zi;
    ngx_chat_shm_user_t  *u;
    ngx_chat_shm_room_t  *room;

    pressure = (ngx_fuzz_slab_failed != fslab_seen);
    fslab_seen = ngx_fuzz_slab_failed;

    posted = 0;

    if (sh->last_id != flast_id) {
        /* one message a step, a "send" */
        ASSERT(sh->last_id > flast_id);
        ASSERT(fstep.sender && !fstep.malformed
               && ngx_strcmp(fstep.type, "send") == 0);

        if (fstep.ack_id) {
            ASSERT(parse_id(fstep.ack_id) == sh->last_id);
        }

        posted = sh->last_id;
        flast_id = sh->last_id;

    } else {
        ASSERT(fstep.ack_id == NULL);
    }

    next = malloc((nfzrooms + nrooms + 1) * sizeof(zroom_t));
    ASSERT(next != NULL);

    k = 0;
    j = 0;
    evicted = 0;              /* the last place of an evicted room, + 1 */
    survivor = (ngx_uint_t) -1;   /* the first place of one still empty */

    for (i = 0; i <= nrooms; i++) {
        room = (i < nrooms) ? rooms[i] : NULL;

        /* the model's rooms before this one are gone from the zone */

        for ( ;; ) {
            if (j == nfzrooms) {
                rc = -1;
                break;
            }

            zr = &fzrooms[j];

            rc = room ? zroom_cmp(room->node.key, room->name.data,
                                  room->name.len, zr)
                      : 1;

            if (rc <= 0) {
                break;
            }

            if (zr->lru) {
                /* evicted, as the zone ran out of memory */
                ASSERT(pressure);
                evicted = ngx_max(evicted, zr->lru);

            } else if (zr->n) {
                dump("a room with messages went, not evicted", zr->name,
                     zr->len);
                ASSERT(0);
            }

            j++;
        }

        if (room == NULL) {
            break;
        }

        zr = &next[k++];

        if (rc == 0) {
            *zr = fzrooms[j++];
            ASSERT(room->hist_max == zr->hist_max);

            if (zr->lru && !step_joins(zr->name, zr->len)) {
                survivor = ngx_min(survivor, zr->lru);
            }

            if (posted && fstep.room_len == zr->len
                && ngx_memcmp(fstep.room, zr->name, zr->len) == 0)
            {
                zr->total++;

                if (zr->hist_max) {
                    if (zr->n == zr->hist_max) {
                        ngx_memmove(zr->ids, zr->ids + 1,
                                    (zr->n - 1) * sizeof(uint64_t));
                        zr->n--;
                    }

                    zr->ids[zr->n++] = posted;
                }

                posted = 0;
            }

        } else {
            /* made by this step's join */
            if (!step_joins(room->name.data, room->name.len)) {
                dump("a room appeared unasked", room->name.data,
                     room->name.len);
                ASSERT(0);
            }

            ASSERT(room->hist_max == fstep.sender->conf->history);
            ASSERT(room->total == 0 && room->hist_n == 0);

            ngx_memzero(zr, sizeof(zroom_t));
            zr->key = room->node.key;
            zr->len = room->name.len;
            ngx_memcpy(zr->name, room->name.data, room->name.len);
            zr->hist_max = room->hist_max;
        }

        ASSERT(room->total == zr->total);

        /* the ring: the model's, or under pressure its newest part */

        if (room->hist_n > zr->n
            || memcmp(ids[i], &zr->ids[zr->n - room->hist_n],
                      room->hist_n * sizeof(uint64_t)) != 0
            || (room->hist_n != zr->n && !pressure))
        {
            dump("the ring differs from the model's", room->name.data,
                 room->name.len);
            fprintf(stderr, "zone %lu messages, model %lu\n",
                    (unsigned long) room->hist_n, (unsigned long) zr->n);
            ASSERT(0);
        }

        ngx_memcpy(zr->ids, ids[i], room->hist_n * sizeof(uint64_t));
        zr->n = room->hist_n;
        zr->lru = 0;
    }

    ASSERT(posted == 0);

    if (evicted && survivor <= evicted) {
        fprintf(stderr, "the empty room %lu of the list stayed and %lu was "
                "evicted\n", (unsigned long) survivor,
                (unsigned long) evicted);
        ASSERT(0);
    }

    room_left = survivor;

    free(fzrooms);
    fzrooms = next;
    nfzrooms = k;
    capfzrooms = nfzrooms + nrooms + 1;

    /* idle users: evicted in order, and only once no empty room is left */

    evicted = 0;
    survivor = (ngx_uint_t) -1;

    for (i = 0; i < nfzidle; i++) {
        name.data = fzidle[i].name;
        name.len = fzidle[i].len;

        u = (ngx_chat_shm_user_t *) ngx_str_rbtree_lookup(&sh->users, &name,
                                        ngx_crc32_short(name.data, name.len));

        if (u == NULL) {
            ASSERT(pressure);
            evicted = i + 1;

        } else if (u->total == 0) {
            survivor = ngx_min(survivor, i + 1);
        }
    }

    if (evicted) {
        ASSERT(survivor > evicted);

        if (room_left != (ngx_uint_t) -1) {
            fprintf(stderr, "an idle user was evicted before the empty "
                    "room %lu of the list\n", (unsigned long) room_left);
            ASSERT(0);
        }
    }

    /* the places at the end of this step */

    for (q = ngx_queue_head(&sh->empty), i = 1;
         q != ngx_queue_sentinel(&sh->empty);
         q = ngx_queue_next(q), i++)
    {
        room = ngx_queue_data(q, ngx_chat_shm_room_t, lru);
        zr = zroom_find(room->name.data, room->name.len);
        ASSERT(zr != NULL);
        zr->lru = i;
    }

    nidle = 0;

    for (q = ngx_queue_head(&sh->idle); q != ngx_queue_sentinel(&sh->idle);
         q = ngx_queue_next(q))
    {
        nidle++;
    }

    if (nidle > capfzidle) {
        capfzidle = nidle * 2;
        fzidle = realloc(fzidle, capfzidle * sizeof(zidle_t));
        ASSERT(fzidle != NULL);
    }

    nfzidle = 0;

    for (q = ngx_queue_head(&sh->idle); q != ngx_queue_sentinel(&sh->idle);
         q = ngx_queue_next(q))
    {
        u = ngx_queue_data(q, ngx_chat_shm_user_t, idle);
        zi = &fzidle[nfzidle++];
        ASSERT(u->name.len <= NGX_CHAT_MAX_USER);
        zi->len = u->name.len;
        ngx_memcpy(zi->name, u->name.data, u->name.len);
    }
}


static NO_COVERAGE void
zone_check(void)
{
    size_t                 len, hlen;
    uint64_t               pos;
    ngx_str_t              name;
    ngx_uint_t             i, k, w, n, users, conns, rooms, active, idle;
    ngx_uint_t             lru, pairs, members, total, sum;
    ngx_queue_t           *q;
    ngx_chat_shm_t        *sh;
    ngx_rbtree_node_t     *node, *unode;
    ngx_chat_member_t     *m;
    ngx_chat_shm_user_t   *u;
    ngx_chat_shm_room_t   *room;
    ngx_chat_fanout_t     *fo;
    ngx_chat_bus_entry_t  *e;
    ngx_chat_local_room_t *lr;
    fconn_t               *fc;
    void                  *first;
    size_t                 first_size;
    ngx_chat_local_room_t *cached;

    static ngx_chat_shm_room_t  **zrooms;
    static uint64_t             (*zids)[MAX_RING];
    static ngx_uint_t             caprooms;

    sh = fworkers[0].ctx.sh;

    ASSERT(!ngx_fuzz_zone_locked(fzone));
    ASSERT(fworkers[1].ctx.sh == sh);

    mark(sh, sizeof(ngx_chat_shm_t));
    mark(sh->bus.data, sh->bus.size);
    mark(fzone->pool.log_ctx, 1);
    ASSERT(sh->layout == NGX_CHAT_SHM_LAYOUT);

    /* rooms */

    n = 0;
    tree_check(&sh->rooms, sh->rooms.root, NULL, &n);

    rooms = 0;
    active = 0;
    lru = 0;

    if (sh->rooms.root != sh->rooms.sentinel) {
        for (node = ngx_rbtree_min(sh->rooms.root, sh->rooms.sentinel);
             node;
             node = ngx_rbtree_next(&sh->rooms, node))
        {
            room = (ngx_chat_shm_room_t *) node;

            if (rooms == caprooms) {
                caprooms = caprooms ? 2 * caprooms : 64;
                zrooms = realloc(zrooms, caprooms * sizeof(void *));
                zids = realloc(zids, caprooms * sizeof(*zids));
                ASSERT(zrooms != NULL && zids != NULL);
            }

            zrooms[rooms] = room;

            /* the room, with its name behind; the ring is apart */
            mark(room, sizeof(ngx_chat_shm_room_t) + room->name.len);
            ASSERT(room->name.data
                   == (u_char *) room + sizeof(ngx_chat_shm_room_t));
            ASSERT(room->name.len >= 1
                   && room->name.len <= NGX_CHAT_MAX_ROOM_NAME);
            ASSERT(node->key == ngx_crc32_short(room->name.data,
                                                room->name.len));

            ring_check(sh, room, zids[rooms]);

            rooms++;

            k = 0;
            tree_check(&room->users, room->users.root, NULL, &k);

            users = 0;
            total = 0;

            if (room->users.root != room->users.sentinel) {
                for (unode = ngx_rbtree_min(room->users.root,
                                            room->users.sentinel);
                     unode;
                     unode = ngx_rbtree_next(&room->users, unode))
                {
                    u = (ngx_chat_shm_user_t *) unode;
                    users++;
                    ASSERT(user_check(u, &room->name, &total) > 0);
                    ASSERT(u->idle.next == NULL);
                }
            }

            ASSERT(users == k);
            ASSERT(room->nusers == users);
            ASSERT(room->nconns == total);

            if (room->nconns) {
                active++;
                ASSERT(!room->in_lru);

            } else {
                /* kept for its history only, and evictable */
                ASSERT(room->in_lru && room->hist_n > 0);
                lru++;
            }
        }
    }

    ASSERT(rooms == n);
    ASSERT(sh->rooms_active == active);

    zone_model_check(sh, zrooms, zids, rooms);

    n = 0;
    for (q = ngx_queue_head(&sh->empty); q != ngx_queue_sentinel(&sh->empty);
         q = ngx_queue_next(q))
    {
        room = ngx_queue_data(q, ngx_chat_shm_room_t, lru);
        ASSERT(room->in_lru && room->nconns == 0);
        ASSERT(++n <= lru);
    }
    ASSERT(n == lru);

    /* the model's rooms are all in the zone, with the user in them */

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (!fc->open) {
            continue;
        }

        for (k = 0; k < fc->nrooms; k++) {
            name.data = fc->rooms[k].name;
            name.len = fc->rooms[k].len;

            room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&sh->rooms,
                       &name, ngx_crc32_short(name.data, name.len));

            if (room == NULL) {
                dump("the zone lost a room of the model", name.data,
                     name.len);
                ASSERT(0);
            }

            name.data = fc->user;
            name.len = fc->user_len;

            if (ngx_str_rbtree_lookup(&room->users, &name,
                                      ngx_crc32_short(name.data, name.len))
                == NULL)
            {
                fprintf(stderr, "connection %lu is not in room \"%.*s\" "
                        "in the zone\n", (unsigned long) i,
                        (int) room->name.len, room->name.data);
                ASSERT(0);
            }
        }
    }

    /* zone users */

    n = 0;
    tree_check(&sh->users, sh->users.root, NULL, &n);

    users = 0;
    active = 0;
    idle = 0;
    conns = 0;

    if (sh->users.root != sh->users.sentinel) {
        for (node = ngx_rbtree_min(sh->users.root, sh->users.sentinel);
             node;
             node = ngx_rbtree_next(&sh->users, node))
        {
            u = (ngx_chat_shm_user_t *) node;
            users++;

            if (user_check(u, NULL, &conns)) {
                active++;
                ASSERT(u->idle.next == NULL);

            } else {
                ASSERT(u->idle.next != NULL);
                idle++;
            }
        }
    }

    ASSERT(users == n);
    ASSERT(sh->users_active == active);
    ASSERT(sh->connections == conns);

    n = 0;
    for (q = ngx_queue_head(&sh->idle); q != ngx_queue_sentinel(&sh->idle);
         q = ngx_queue_next(q))
    {
        u = ngx_queue_data(q, ngx_chat_shm_user_t, idle);
        ASSERT(u->total == 0);
        ASSERT(++n <= idle);
    }
    ASSERT(n == idle);

    for (w = 0; w < NWORKER; w++) {
        k = fworkers[w].ctx.wslot;
        ASSERT(fworkers[w].ctx.wslot >= 0 && k < NGX_CHAT_MAX_WORKERS);
        ASSERT(sh->workers[k].active && sh->workers[k].pid == ngx_pid);
        ASSERT(sh->bus.wake[k].pid == ngx_pid);
        ASSERT(fworkers[w].ctx.bus.slot == (ngx_int_t) k);

        n = 0;
        for (i = 0; i < NCONN; i++) {
            n += (fconns[i].open && fconns[i].worker == w);
        }

        ASSERT(sh->workers[k].connections == n);
    }

    /* a slot's wake-up flag is kept while the slot is held */

    for (k = 0; k < NGX_CHAT_MAX_WORKERS; k++) {
        if (!sh->workers[k].active) {
            ASSERT(sh->bus.wake[k].pid == 0 && !sh->bus.wake[k].notified);
        }
    }

    /* every block of the zone is reachable from it */

    n = ngx_fuzz_zone_unmarked(fzone, &first, &first_size);

    if (n) {
        fprintf(stderr, "%lu zone blocks are not reachable, one of %zu "
                "bytes:\n", (unsigned long) n, first_size);
        dump("block", first, ngx_min(first_size, 256));
        ASSERT(0);
    }

    /* the bus */

    ASSERT(sh->bus.tail <= sh->bus.head);
    ASSERT(sh->bus.head - sh->bus.tail <= sh->bus.size);
    ASSERT(sh->bus.size % 8 == 0);

    pos = sh->bus.tail;

    while (pos < sh->bus.head) {
        i = pos % sh->bus.size;
        e = (ngx_chat_bus_entry_t *) (sh->bus.data + i);

        if (i + sizeof(ngx_chat_bus_entry_t) > sh->bus.size || e->len == 0) {
            pos += sh->bus.size - i;
            continue;
        }

        ASSERT(e->len % 8 == 0 && i + e->len <= sh->bus.size);

        /* no relay: no events for it */
        ASSERT(e->kind == NGX_CHAT_BUS_MESSAGE
               || e->kind == NGX_CHAT_BUS_PRESENCE);
        ASSERT(e->room_len >= 1 && e->room_len <= NGX_CHAT_MAX_ROOM_NAME);
        ASSERT((e->flags & ~NGX_CHAT_BUS_LEAVE) == 0);
        ASSERT(e->kind == NGX_CHAT_BUS_PRESENCE || e->flags == 0);

        hlen = e->frame_len > 0xffff + 10 ? 10 : (e->frame_len > 125 + 2
                                                  ? 4 : 2);
        ASSERT(e->kind == NGX_CHAT_BUS_PRESENCE || e->user_len == 0);
        ASSERT(e->kind == NGX_CHAT_BUS_MESSAGE || e->id_len == 0);
        ASSERT(e->id_len <= NGX_CHAT_ID_LEN);

        len = sizeof(ngx_chat_bus_entry_t) + e->room_len + e->user_len
              + e->id_len + e->frame_len;
        ASSERT(len <= e->len && e->len - len < 8);
        ASSERT(e->frame_len >= hlen);

        pos += e->len;
    }

    ASSERT(pos == sh->bus.head);

    /*
     * The fan-out of each worker: its local rooms hold the members the
     * model has (a room freed but left in the cache would be read there:
     * ASan sees it)
     */

    for (w = 0; w < NWORKER; w++) {
        fo = fworkers[w].fo;
        ASSERT(fo->zone == &fworkers[w].ctx);
        ASSERT(fo->pending.nelts == 0);

        pairs = 0;

        for (i = 0; i < NCONN; i++) {
            if (fconns[i].open && fconns[i].worker == w) {
                pairs += fconns[i].nrooms;
            }
        }

        ASSERT(fworkers[w].ctx.bus.read <= sh->bus.head);
        ASSERT(fworkers[w].ctx.bus.nnotify == 0);

        members = 0;
        n = 0;
        tree_check(&fo->rooms, fo->rooms.root, NULL, &n);

        if (fo->rooms.root == fo->rooms.sentinel) {
            ASSERT(pairs == 0);
            continue;
        }

        for (node = ngx_rbtree_min(fo->rooms.root, fo->rooms.sentinel);
             node;
             node = ngx_rbtree_next(&fo->rooms, node))
        {
            lr = (ngx_chat_local_room_t *) node;
            ASSERT(!ngx_queue_empty(&lr->members));
            ASSERT(node->key == ngx_crc32_short(lr->name.data,
                                                lr->name.len));

            /* its slot of the cache: empty, it, or a room of that slot */
            if (fo->cache) {
                cached = fo->cache[node->key & (FANOUT_CACHE - 1)];
                ASSERT(cached == NULL || cached == lr
                       || ((cached->node.key ^ node->key)
                           & (FANOUT_CACHE - 1)) == 0);
            }

            /* the zone's room, while it has members */

            room = (ngx_chat_shm_room_t *) ngx_str_rbtree_lookup(&sh->rooms,
                                                    &lr->name, node->key);
            ASSERT(room != NULL && lr->shm_room == room && room->nconns);

            sum = 0;

            for (q = ngx_queue_head(&lr->members);
                 q != ngx_queue_sentinel(&lr->members);
                 q = ngx_queue_next(q))
            {
                m = ngx_queue_data(q, ngx_chat_member_t, queue);
                ASSERT(m->room == lr);
                ASSERT(m->start <= sh->bus.head);

                /* held only while storage answers, and there is none */
                ASSERT(!m->hold && m->nheld == 0 && m->held == NULL);

                for (i = 0; i < NCONN; i++) {
                    if (fconns[i].open && fconns[i].ws == m->ws) {
                        break;
                    }
                }

                ASSERT(i < NCONN && fconns[i].worker == w);
                ASSERT(model_find(&fconns[i], lr->name.data, lr->name.len));
                sum++;
            }

            members += sum;
        }

        if (members != pairs) {
            fprintf(stderr, "worker %lu has %lu local members, the model "
                    "%lu\n", (unsigned long) w, (unsigned long) members,
                    (unsigned long) pairs);
            ASSERT(0);
        }
    }
}


/* steps */

static ngx_uint_t
nonneg_int(json_t *v)
{
    return v == NULL || (json_is_integer(v) && json_integer_value(v) >= 0);
}


static ngx_uint_t
has_nul(json_t *s)
{
    return memchr(json_string_value(s), '\0', json_string_length(s)) != NULL;
}


/*
 * The protocol: a JSON object whose strings have no U+0000 and no lone
 * surrogate; a request breaking only that rule still has its "ref"
 * echoed.  So the request is read with U+0000 allowed and, if it does not
 * parse, again with each surrogate escape made a \u0000: a lone one then
 * shows as U+0000 (a valid pair only fails with it, and the request is
 * malformed either way).
 */

static json_t *
request_json(u_char *data, size_t len)
{
    u_char        *copy, *p;
    json_t        *j;
    ngx_uint_t     n;
    json_error_t   err;

    j = json_loadb((const char *) data, len, JSON_ALLOW_NUL, &err);

    if (j || len == 0) {
        return j;
    }

    copy = malloc(len);
    ASSERT(copy != NULL);
    ngx_memcpy(copy, data, len);

    n = 0;

    for (p = copy; p + 1 < copy + len; p++) {
        if (*p != '\\') {
            continue;
        }

        p++;

        if (*p == 'u' && copy + len - p >= 5 && (p[1] | 0x20) == 'd'
            && ((p[2] >= '8' && p[2] <= '9') || ((p[2] | 0x20) >= 'a'
                                                 && (p[2] | 0x20) <= 'f')))
        {
            ngx_memcpy(p + 1, "0000", 4);
            n++;
        }
    }

    j = n ? json_loadb((const char *) copy, len, JSON_ALLOW_NUL, &err) : NULL;

    free(copy);

    return j;
}


static void
request_parse(u_char *data, size_t len)
{
    json_t        *ref, *type, *room, *req, *v;
    const char    *t, *key;

    fstep.malformed = 1;

    /* by chat_request_rate: everything but a "send" (malformed too) */
    fstep.counted = 1;

    req = request_json(data, len);

    if (req == NULL || !json_is_object(req)) {
        if (req) {
            json_decref(req);
        }

        return;
    }

    fstep.req = req;

    ref = json_object_get(req, "ref");
    type = json_object_get(req, "type");
    room = json_object_get(req, "room");

    if (ref && (!json_is_string(ref) || has_nul(ref))) {
        return;
    }

    fstep.ref = ref;

    if (!json_is_string(type)) {
        return;
    }

    t = json_string_value(type);

    if (ngx_strcmp(t, "send") == 0) {
        fstep.counted = 0;
    }

    if (ngx_strcmp(t, "send") != 0 && ngx_strcmp(t, "join") != 0
        && ngx_strcmp(t, "leave") != 0 && ngx_strcmp(t, "history") != 0
        && ngx_strcmp(t, "who") != 0)
    {
        return;
    }

    fstep.type = t;

    if (!json_is_string(room) || json_string_length(room) == 0
        || json_string_length(room) > NGX_CHAT_MAX_ROOM_NAME)
    {
        return;
    }

    json_object_foreach(req, key, v) {
        if (json_is_string(v) && has_nul(v)) {
            return;
        }
    }

    fstep.room = json_string_value(room);
    fstep.room_len = json_string_length(room);

    if (ngx_strcmp(t, "send") == 0
        && !json_is_string(json_object_get(req, "content")))
    {
        return;
    }

    if (ngx_strcmp(t, "join") == 0) {
        if (!nonneg_int(json_object_get(req, "history"))) {
            return;
        }

        if (json_object_get(req, "since")
            && !json_is_string(json_object_get(req, "since")))
        {
            return;
        }

        fstep.want_history = json_object_get(req, "history") != NULL
                             || json_object_get(req, "since") != NULL;
    }

    if (ngx_strcmp(t, "history") == 0) {
        if (!nonneg_int(json_object_get(req, "limit"))) {
            return;
        }

        if (json_object_get(req, "before")
            && !json_is_string(json_object_get(req, "before")))
        {
            return;
        }
    }

    fstep.malformed = 0;
}


/* the model from the workers' local rooms (after a failed allocation) */

static void
model_resync(fconn_t *fc)
{
    ngx_queue_t            *q;
    ngx_rbtree_t           *tree;
    ngx_rbtree_node_t      *node;
    ngx_chat_member_t      *m;
    ngx_chat_local_room_t  *lr;

    fc->nrooms = 0;
    tree = &fworkers[fc->worker].fo->rooms;

    if (tree->root == tree->sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(tree->root, tree->sentinel);
         node;
         node = ngx_rbtree_next(tree, node))
    {
        lr = (ngx_chat_local_room_t *) node;

        for (q = ngx_queue_head(&lr->members);
             q != ngx_queue_sentinel(&lr->members);
             q = ngx_queue_next(q))
        {
            m = ngx_queue_data(q, ngx_chat_member_t, queue);

            if (m->ws == fc->ws) {
                model_add(fc, lr->name.data, lr->name.len);
            }
        }
    }
}


static void
step_end(void)
{
    ngx_uint_t         i;
    fconn_t           *fc, *s;
    ngx_event_t       *ev;
    ngx_queue_t       *q;

    pump();

    /* a reply or a copy may be missing where an allocation failed */
    fstep.injected = (ngx_fuzz_allocs_failed != fallocs_seen);
    fallocs_seen = ngx_fuzz_allocs_failed;

    s = fstep.sender;

    for (i = 0; i < NCONN; i++) {
        fc = &fconns[i];

        if (!fc->open) {
            continue;
        }

        queue_check(fc, 1);

        if (!fc->stalled) {
            queue_consume(fc);
        }

        if (fc->ws->flush_posted) {
            ngx_queue_remove(&fc->ws->flush);
            fc->ws->flush_posted = 0;
        }
    }

    if (s && s->open && !fstep.injected) {
        /* one answer to each request */

        if (fstep.primaries != 1) {
            fprintf(stderr, "%lu replies to a \"%s\" request\n",
                    (unsigned long) fstep.primaries,
                    fstep.type ? fstep.type : "(malformed)");
            ASSERT(0);
        }

        if (fstep.new_join && fstep.want_history) {
            ASSERT(fstep.history_frames == 1);
        }

        if (fstep.bucket && fstep.limited) {
            ASSERT(fstep.got_limited);
        }
    }

    delivery_check();

    for (i = 0; i < NCONN; i++) {
        while (fconns[i].ngot) {
            json_decref(fconns[i].got[--fconns[i].ngot]);
        }
    }

    if (fstep.bucket) {
        rate_check();
    }

    if (fstep.injected) {
        for (i = 0; i < NCONN; i++) {
            if (fconns[i].open) {
                model_resync(&fconns[i]);
            }

            /* a pong may have been lost */
            fconns[i].pinged = 0;
        }
    }

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].closed_now) {
            fconns[i].closed_now = 0;
            fconns[i].nrooms = 0;
        }
    }

    /*
     * The events posted are not run: the flush event's writes were played
     * above (queue_consume()), the read events' by client_send(); the
     * other workers' wake-up is sent (the loop would send it now)
     */

    ngx_chat_fanout_wake_posted();

    while (!ngx_queue_empty(&ngx_posted_events)) {
        q = ngx_queue_head(&ngx_posted_events);
        ev = ngx_queue_data(q, ngx_event_t, queue);
        ngx_delete_posted_event(ev);
    }

    zone_check();

    if (ngx_fuzz_trace) {
        fprintf(stderr, "-- step: %s%.*s, zone %zu of %zu bytes used\n",
                fstep.sender ? "message " : "command",
                fstep.type ? 16 : 0, fstep.type ? fstep.type : "",
                fzone->used, fzone->size);
    }

    if (fstep.req) {
        json_decref(fstep.req);
    }

    for (i = 0; i < fstep.nmine; i++) {
        json_decref(fstep.mine[i]);
    }

    if (fstep.ack_id) {
        json_decref(fstep.ack_id);
    }

    ngx_memzero(&fstep, sizeof(fstep_t));
}


/* the rate limiter: predicted before a send, compared with the zone after */

static ngx_chat_shm_user_t *
zone_user(fconn_t *fc)
{
    ngx_str_t  name;

    name.data = fc->user;
    name.len = fc->user_len;

    return (ngx_chat_shm_user_t *) ngx_str_rbtree_lookup(
               &fworkers[0].ctx.sh->users, &name,
               ngx_crc32_short(name.data, name.len));
}


/*
 * The bucket as ngx_chat_rate.h describes it: limit_req's, with "nodelay"
 * (1 + burst requests at once, then rate per second), in thousandths, its
 * time kept modulo 2^32 ms; a bucket recorded up to a minute "later" (by
 * another worker's clock) counts as recorded now, one further "later" is
 * one idle for weeks: empty.  A refused request leaves it as it was.
 */

static ngx_uint_t
bucket_take(ngx_uint_t *bexcess, uint32_t *blast, ngx_uint_t *bused,
    ngx_msec_t now, ngx_chat_rate_conf_t *rcf, ngx_msec_t *retry)
{
    ngx_int_t       excess;
    ngx_msec_int_t  ms;

    ms = (int32_t) ((uint32_t) now - *blast);

    if (*bused && ms >= -60000) {
        if (ms < 0) {
            ms = 0;
        }

        excess = (ngx_int_t) *bexcess
                 - (ngx_int_t) (rcf->rate * (ngx_uint_t) ms / 1000) + 1000;

        if (excess < 0) {
            excess = 0;
        }

    } else {
        excess = 0;
    }

    if ((ngx_uint_t) excess > rcf->burst) {
        /* rounded up: waiting that long is always enough */
        *retry = ((excess - rcf->burst) * 1000 + rcf->rate - 1) / rcf->rate;
        return 1;
    }

    *bexcess = excess;
    *blast = (uint32_t) now;
    *bused = 1;

    return 0;
}


static void
rate_predict(fconn_t *fc)
{
    ngx_uint_t            i;
    fbucket_t            *b;
    ngx_msec_t            now;
    ngx_chat_shm_user_t  *u;

    u = zone_user(fc);
    ASSERT(u != NULL);

    for (i = 0; i < nfbuckets; i++) {
        if (fbuckets[i].len == fc->user_len
            && ngx_memcmp(fbuckets[i].user, fc->user, fc->user_len) == 0)
        {
            break;
        }
    }

    if (i == nfbuckets) {
        ASSERT(nfbuckets < NCONN);
        ngx_memzero(&fbuckets[i], sizeof(fbucket_t));
        ngx_memcpy(fbuckets[i].user, fc->user, fc->user_len);
        fbuckets[i].len = fc->user_len;
        nfbuckets++;
    }

    b = &fbuckets[i];

    if (!u->rate.used) {
        /* a zone user made anew (the old one was evicted when idle) */
        b->used = 0;
    }

    ASSERT(u->rate.used == b->used);

    now = ngx_current_msec;

    fstep.bucket = b;
    fstep.before = *b;
    fstep.now = now;

    fstep.limited = bucket_take(&b->excess, &b->last, &b->used, now,
                                &fc->conf->rate, &fstep.retry);
}


/* chat_request_rate: the same bucket, the connection's own */

static void
request_rate_predict(fconn_t *fc)
{
    fstep.req_limited = bucket_take(&fc->req_excess, &fc->req_last,
                                    &fc->req_used, ngx_current_msec,
                                    &fc->conf->request_rate,
                                    &fstep.req_retry);
}


static void
rate_check(void)
{
    fbucket_t            *b;
    ngx_chat_shm_user_t  *u;

    b = fstep.bucket;
    u = zone_user(fstep.sender);

    if (u == NULL) {
        b->used = 0;
        return;
    }

    if (fstep.injected) {
        b->excess = u->rate.excess;
        b->last = u->rate.last;
        b->used = u->rate.used;
        return;
    }

    if (u->rate.excess != b->excess || u->rate.last != b->last
        || u->rate.used != b->used)
    {
        fprintf(stderr, "rate bucket of \"%.*s\" after a send at %lu "
                "(worker clock): zone excess %lu last %lu, expected excess "
                "%lu last %lu (%s); before: excess %lu last %lu\n",
                (int) b->len, b->user, (unsigned long) fstep.now,
                (unsigned long) u->rate.excess, (unsigned long) u->rate.last,
                (unsigned long) b->excess, (unsigned long) b->last,
                fstep.limited ? "limited" : "accepted",
                (unsigned long) fstep.before.excess,
                (unsigned long) fstep.before.last);
        ASSERT(0);
    }
}


/* the code of the close frame last queued to fc, or 0 */

static ngx_uint_t
close_code(fconn_t *fc)
{
    u_char          *p;
    ngx_chat_ws_t   *ws;
    ngx_chat_buf_t  *b;

    ws = fc->ws;

    if (ws->out_n == 0) {
        return 0;
    }

    b = ws->out[(ws->out_head + ws->out_n - 1) % ws->out_cap];
    p = b->data;

    if ((p[0] & 0x0f) != NGX_CHAT_FRAME_CLOSE || b->len < 4) {
        return 0;
    }

    return (p[2] << 8) | p[3];
}


static void
deliver(fconn_t *fc, u_char *line, size_t len)
{
    u_char      *frames;
    size_t       n;
    uint32_t     utf8;
    ngx_uint_t   closing, code, compressed, pinged;

    frames = client_message_frames(fc, line, len, &n, &pinged);
    compressed = fcompress && fc->conf->deflate;
    closing = 0;

    if (!fc->open) {
        /* the message follows the handshake at once */
        conn_open(fc, frames, n);

    } else {
        ngx_current_msec = fworkers[fc->worker].clock;
        closing = fc->ws->closing;
        client_send(fc, frames, n);
    }

    free(frames);

    if (pinged && fc->open && !fc->ws->closing) {
        /* the ping between the fragments, answered */
        fc->ping[0] = 'p';
        fc->ping_len = 1;
        fc->pinged = 1;
    }

    if (fc->open && !closing) {

        /* what the connection layer lets through to the protocol */

        utf8 = NGX_CHAT_UTF8_ACCEPT;
        code = 0;

        if (len > fc->conf->max_message_size) {
            code = NGX_CHAT_CLOSE_TOO_BIG;

        } else if (ngx_chat_utf8_validate(&utf8, line, len)
                   != NGX_CHAT_UTF8_ACCEPT)
        {
            code = NGX_CHAT_CLOSE_INVALID_DATA;
        }

        if (code) {
            ASSERT(fstep.sender == NULL && fc->ws->closing);

            /*
             * the close frame, unless its allocation failed; a compressed
             * message too big may have been found invalid first: its
             * UTF-8 is checked as it is inflated
             */
            ASSERT(close_code(fc) == code
                   || (compressed && code == NGX_CHAT_CLOSE_TOO_BIG
                       && close_code(fc) == NGX_CHAT_CLOSE_INVALID_DATA)
                   || ngx_fuzz_allocs_failed != fallocs_seen);

        } else {
            /* or the fragments could not be put together (1011) */
            ASSERT(fstep.sender == fc
                   || (fc->ws->closing
                       && ngx_fuzz_allocs_failed != fallocs_seen));
        }
    }

    step_end();
}


/* the client pings (a payload over 125 bytes is an error: 1002) */

static void
ping_send(fconn_t *fc, u_char *data, size_t len)
{
    u_char      *frame;
    size_t       n;
    ngx_uint_t   closing;

    frame = malloc(len + 14);
    ASSERT(frame != NULL);

    n = client_frame(frame, 1, NGX_CHAT_FRAME_PING, data, len) - frame;

    ngx_current_msec = fworkers[fc->worker].clock;
    closing = fc->ws->closing;

    client_send(fc, frame, n);

    free(frame);

    if (closing) {
        return;
    }

    if (len > MAX_PING) {
        ASSERT(fc->ws->closing);
        ASSERT(close_code(fc) == NGX_CHAT_CLOSE_PROTOCOL
               || ngx_fuzz_allocs_failed != fallocs_seen);
        return;
    }

    ngx_memcpy(fc->ping, data, len);
    fc->ping_len = len;
    fc->pinged = 1;
}


/* a timer of the event loop fires */

static void
timer_fire(ngx_event_t *ev)
{
    ASSERT(ev->timer_set);

    ngx_del_timer(ev);
    ev->timedout = 1;
    ev->handler(ev);
    ev->timedout = 0;
}


/*
 * A new worker B: what ngx_chat_fanout_init_process() does for the zone
 * (the fan-out's process-wide part, its notification socket and its
 * zones, is worker A's too here, and stays)
 */

/*
 * Worker B's wake-up name: one process plays both workers, with one
 * notification socket, so the new B publishes the name of that socket,
 * the one worker A (and the first B) published in its slot.  A name no
 * socket is bound to would send A's wake-ups for B nowhere: B would hear
 * of A's entries only when a wake-up for A came, and delivery_check()
 * would rightly miss them (seeds presence-after-respawn, -reload and
 * -rate-limit in corpus/proto).
 */

static void
worker_b_start(void)
{
    fworker_t            *a, *b;
    ngx_chat_bus_name_t   name;

    a = &fworkers[0];
    b = &fworkers[1];

    ASSERT(b->fo->rooms.root == b->fo->rooms.sentinel);
    ASSERT(b->fo->pending.nelts == 0);

    ASSERT(a->ctx.wslot >= 0);
    name = a->ctx.sh->bus.wake[a->ctx.wslot].name;
    ASSERT(name.len > 0);

    b->ctx.wslot = -1;
    ASSERT(ngx_chat_shm_worker_attach(&b->ctx, &name, &flog) == NGX_OK);

    ngx_current_msec = b->clock;

    if (ngx_chat_shm_reap(&b->ctx, &flog)) {
        ngx_chat_fanout_publish(b->fo);
    }
}


/* worker B dies with its connections; A's reaper or B's successor cleans */

static void
worker_b_crash(ngx_uint_t respawn_first)
{
    ngx_uint_t            i;
    ngx_chat_shm_t       *sh;
    ngx_shm_zone_t        dzone;
    fworker_t            *b, *a;
    ngx_fuzz_zone_t      *dummy;
    ngx_slab_pool_t      *shpool;
    ngx_chat_shm_ctx_t    dctx;

    a = &fworkers[0];
    b = &fworkers[1];
    sh = b->ctx.sh;
    shpool = b->ctx.shpool;

    /*
     * The process is gone: its connections' memory goes with it, and the
     * zone keeps what they held.  To free that memory without touching
     * the zone, the connections are finalised against a scratch zone.
     */

    dummy = ngx_fuzz_zone_create(ZONE_SIZE);

    ngx_memzero(&dzone, sizeof(ngx_shm_zone_t));
    ngx_memzero(&dctx, sizeof(ngx_chat_shm_ctx_t));
    ngx_str_set(&dctx.name, "scratch");
    dctx.max_message = b->ctx.max_message;
    dzone.data = &dctx;
    dzone.shm.addr = (u_char *) &dummy->pool;
    dzone.shm.size = ZONE_SIZE;
    ngx_str_set(&dzone.shm.name, "scratch");
    ASSERT(ngx_chat_shm_init_zone(&dzone, NULL) == NGX_OK);

    b->ctx.sh = dctx.sh;
    b->ctx.shpool = dctx.shpool;

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].open && fconns[i].worker == 1) {
            conn_finalize(&fconns[i]);
        }
    }

    b->ctx.sh = sh;
    b->ctx.shpool = shpool;

    ngx_fuzz_zone_destroy(dummy);

    sh->workers[b->ctx.wslot].pid = DEAD_PID;
    sh->bus.wake[b->ctx.wslot].pid = DEAD_PID;
    b->ctx.bus.nnotify = 0;

    if (!respawn_first) {
        /* the reap timer of worker A */
        ngx_current_msec = a->clock;
        timer_fire(&a->fo->reap);
    }

    worker_b_start();

    /* A's reaper, later, finds nothing more */
    ngx_current_msec = a->clock;
    ASSERT(ngx_chat_shm_reap(&a->ctx, &flog) == 0);
}


/*
 * Worker B exits gracefully (a reload) and the master starts a new one:
 * its connections close at worker_shutdown_timeout, then its exit process
 * (what ngx_chat_fanout_exit_process() does for the zone)
 */

static void
worker_b_exit(void)
{
    ngx_uint_t   i;
    fworker_t   *b;

    b = &fworkers[1];
    ngx_current_msec = b->clock;

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].open && fconns[i].worker == 1) {
            conn_close(&fconns[i], 1);
        }
    }

    ngx_chat_shm_worker_detach(&b->ctx);
    ngx_chat_fanout_publish(b->fo);

    ASSERT(b->ctx.wslot == -1);

    worker_b_start();
}


static ngx_uint_t
number(u_char *p, size_t len, ngx_uint_t dflt, ngx_uint_t max)
{
    ngx_uint_t  n;

    if (len == 0 || *p < '0' || *p > '9') {
        return dflt;
    }

    n = 0;

    while (len-- && *p >= '0' && *p <= '9') {
        n = n * 10 + (*p++ - '0');

        if (n > max) {
            return max;
        }
    }

    return n;
}


static void
control(fconn_t **cur, u_char *p, size_t len)
{
    u_char      frame[8];
    size_t      n;
    ngx_uint_t  w;
    fconn_t    *fc;

    fc = *cur;

    switch (p[0]) {

    case '0': case '1': case '2': case '3':
        *cur = &fconns[p[0] - '0'];

        if (!(*cur)->open) {
            conn_open(*cur, NULL, 0);
        }

        break;

    case 'c':
        if (fc->open) {
            /* the client's close frame (1000), answered */
            ngx_current_msec = fworkers[fc->worker].clock;
            n = client_frame(frame, 1, NGX_CHAT_FRAME_CLOSE,
                             (u_char *) "\x03\xe8", 2)
                - frame;
            client_send(fc, frame, n);

            ASSERT(fc->ws->closing && fc->ws->close_received);
        }
        break;

    case 'x':
        if (fc->open) {
            conn_finalize(fc);
        }
        break;

    case 's':
        fc->stalled = !fc->stalled;
        break;

    case 'p':
        fpaused = !fpaused;
        break;

    case 'k':
    case 'K':
        worker_b_crash(p[0] == 'K');
        break;

    case 'e':
        worker_b_exit();
        break;

    case 't':
        n = number(p + 1, len - 1, 1000, 100000000);

        for (w = 0; w < NWORKER; w++) {
            fworkers[w].clock += n;
        }

        n += ngx_cached_time->msec;
        ((ngx_time_t *) ngx_cached_time)->sec += n / 1000;
        ((ngx_time_t *) ngx_cached_time)->msec = n % 1000;
        break;

    case 'w':
        fworkers[fc->worker].clock += number(p + 1, len - 1, 1000, 100000);
        break;

    case 'r':
        frepeat = number(p + 1, len - 1, 2, MAX_REPEAT);
        break;

    case 'g':
        ffragment = number(p + 1, len - 1, 0, MAX_FRAGMENT);
        break;

    case 'z':
        fcompress = !fcompress;
        break;

    case 'f':
        ngx_fuzz_fail_alloc(number(p + 1, len - 1, 1, 1000));
        break;

    case 'i':
        if (fc->open) {
            ping_send(fc, p + 1, len - 1);
        }
        break;

    case 'u':
        if (len - 1 > MAX_USER) {
            break;
        }

        if (fc->open) {
            conn_finalize(fc);
            step_end();
        }

        ngx_memcpy(fc->user, p + 1, len - 1);
        fc->user_len = len - 1;

        /* the handshake may refuse it (user_status()) */
        conn_open(fc, NULL, 0);
        break;

    default:
        break;
    }

    step_end();
}


/* setup */

static void
zone_create(void)
{
    ngx_uint_t  w;

    fzone = ngx_fuzz_zone_create(ZONE_SIZE);

    for (w = 0; w < NWORKER; w++) {
        ngx_memzero(&fworkers[w].shm_zone, sizeof(ngx_shm_zone_t));
        fworkers[w].shm_zone.data = &fworkers[w].ctx;
        fworkers[w].shm_zone.shm.addr = (u_char *) &fzone->pool;
        fworkers[w].shm_zone.shm.size = ZONE_SIZE;
        ngx_str_set(&fworkers[w].shm_zone.shm.name, "chat");

        /* as ngx_chat_zone() makes it, and postconfiguration sets it */
        ngx_memzero(&fworkers[w].ctx, sizeof(ngx_chat_shm_ctx_t));
        fworkers[w].ctx.shm_zone = &fworkers[w].shm_zone;
        ngx_str_set(&fworkers[w].ctx.name, "chat");
        fworkers[w].ctx.store = 0;
        fworkers[w].ctx.relayed = 0;

        /* as ngx_chat_module.c sets it: the largest chat_max_message_size */
        fworkers[w].ctx.max_message = 4096;
    }

    /* the master creates the zone; the workers inherit the context */

    ASSERT(ngx_chat_shm_init_zone(&fworkers[0].shm_zone, NULL) == NGX_OK);

    /*
     * the zone's tag (random in nginx) fixed, so that inputs can name ids:
     * "1700000000000000-000000000000"
     */
    fworkers[0].ctx.sh->server_id = 0;

    fworkers[1].ctx.sh = fworkers[0].ctx.sh;
    fworkers[1].ctx.shpool = fworkers[0].ctx.shpool;
}


static void
notify_drain(void)
{
    u_char  buf[64];

    while (recv(fnotify->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
        /* void */
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_uint_t   i;

    /* every log and debug line is formatted (and dropped) */
    flog.log_level = NGX_LOG_DEBUG_ALL | NGX_LOG_DEBUG;

    ngx_fuzz_runtime_init(&flog);

    ngx_fuzz_write_hook = client_write;

    ASSERT(kill(DEAD_PID, 0) == -1 && errno == ESRCH);

    fcycle.log = &flog;
    ngx_cycle = &fcycle;

    for (i = 0; i < 4; i++) {
        fconfs[i].ping_interval = 30000;
        fconfs[i].ping_timeout = 10000;
        fconfs[i].max_message_size = 4096;
    }

    fconfs[0].zone = &fworkers[0].shm_zone;
    fconfs[0].history = 5;
    fconfs[0].max_rooms = 4;
    fconfs[0].send_buffer = 8192;
    /* chat_request_rate's default: 20r/s burst=50 */
    fconfs[0].request_rate.rate = 20000;
    fconfs[0].request_rate.burst = 50000;

    fconfs[1].zone = &fworkers[1].shm_zone;
    fconfs[1].history = 50;
    fconfs[1].max_rooms = 32;
    fconfs[1].rate.rate = 1000;
    fconfs[1].rate.burst = 2000;
    fconfs[1].send_buffer = 65536;

    fconfs[2].zone = &fworkers[1].shm_zone;
    fconfs[2].history = 0;
    fconfs[2].max_rooms = 2;
    fconfs[2].send_buffer = 1024 * 1024;
    fconfs[2].request_rate.rate = 2000;
    fconfs[2].request_rate.burst = 3000;

    fconfs[3] = fconfs[0];
    fconfs[3].rate.rate = 2000;
    fconfs[3].rate.burst = 2000;
    fconfs[3].request_rate.rate = 0;
    fconfs[3].request_rate.burst = 0;

    /*
     * permessage-deflate: connection 2 (fconfs[1]) with the defaults,
     * connection 1 (fconfs[3]) everything, at level 6
     */
    fconfs[1].deflate = 1;
    fconfs[1].deflate_min_size = 256;
    fconfs[1].deflate_level = 1;
    fconfs[3].deflate = 1;
    fconfs[3].deflate_min_size = 0;
    fconfs[3].deflate_level = 6;
    fconfs[0].deflate_min_size = 256;
    fconfs[0].deflate_level = 1;
    fconfs[2].deflate_min_size = 256;
    fconfs[2].deflate_level = 1;

    fzones[0] = &fworkers[0].ctx;
    fzones[1] = &fworkers[1].ctx;

    fcmcf.zones.elts = fzones;
    fcmcf.zones.nelts = NWORKER;
    fcmcf.zones.size = sizeof(ngx_chat_shm_ctx_t *);
    fcmcf.zones.nalloc = NWORKER;

    /* a WebSocket upgrade as a browser asks for it */

    ngx_str_set(&fheaders[0].key, "Upgrade");
    ngx_str_set(&fheaders[0].value, "websocket");
    ngx_str_set(&fheaders[1].key, "Connection");
    ngx_str_set(&fheaders[1].value, "keep-alive, Upgrade");
    ngx_str_set(&fheaders[2].key, "Sec-WebSocket-Version");
    ngx_str_set(&fheaders[2].value, "13");
    ngx_str_set(&fheaders[3].key, "Sec-WebSocket-Key");
    ngx_str_set(&fheaders[3].value, WS_KEY);
    /* its value is the connection's (conn_open) */
    ngx_str_set(&fheaders[4].key, "Sec-WebSocket-Extensions");

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *p, *end, *nl;
    size_t       len;
    fconn_t     *cur;
    ngx_uint_t   i, n, deliveries;

    ngx_fuzz_fail_alloc(0);
    ngx_fuzz_allocs_failed = 0;
    fallocs_seen = 0;

    ((ngx_time_t *) ngx_cached_time)->sec = CLOCK_SEC;
    ((ngx_time_t *) ngx_cached_time)->msec = 0;
    ngx_current_msec = CLOCK_MSEC;

    fpaused = 0;
    frepeat = 0;
    ffragment = 0;
    fcompress = 0;
    nfbuckets = 0;

    nfzrooms = 0;
    nfzidle = 0;
    flast_id = 0;
    fslab_seen = ngx_fuzz_slab_failed;

    /*
     * The workers start: one process plays both, with one notification
     * socket; ngx_chat_init_process() without relay and store (not
     * configured, and not linked)
     */

    fcycle.pool = ngx_create_pool(16384, &flog);
    ASSERT(fcycle.pool != NULL);

    zone_create();

    ngx_chat_ws_init_worker(&fcycle);

    ASSERT(ngx_chat_fanout_init_process(&fcycle, &fcmcf) == NGX_OK);

    for (i = 0; i < NWORKER; i++) {
        fworkers[i].clock = CLOCK_MSEC;
        fworkers[i].fo = ngx_chat_fanout_get(&fworkers[i].ctx);
        ASSERT(fworkers[i].fo != NULL && fworkers[i].ctx.wslot >= 0);
    }

    fnotify = ngx_fuzz_last_connection;
    ASSERT(fnotify != NULL && fnotify->read->handler != NULL);
    notify_drain();

    for (i = 0; i < NCONN; i++) {
        ngx_memzero(&fconns[i], sizeof(fconn_t));
        fconns[i].index = i;
        fconns[i].worker = fconn_defaults[i].worker;
        fconns[i].conf = &fconfs[fconn_defaults[i].conf];
        fconns[i].user_len = ngx_strlen(fconn_defaults[i].user);
        ngx_memcpy(fconns[i].user, fconn_defaults[i].user,
                   fconns[i].user_len);
    }

    cur = &fconns[0];
    deliveries = 0;

    p = (u_char *) data;
    end = p + size;

    for ( ;; ) {
        nl = memchr(p, '\n', end - p);
        len = (nl ? nl : end) - p;

        if (len >= 2 && p[0] == '@') {
            control(&cur, p + 1, len - 1);

        } else {
            n = frepeat ? frepeat : 1;
            frepeat = 0;

            while (n-- && deliveries < MAX_DELIVERIES) {
                deliver(cur, p, len);
                deliveries++;
            }
        }

        if (nl == NULL || deliveries >= MAX_DELIVERIES) {
            break;
        }

        p = nl + 1;
    }

    /* every client goes away */

    for (i = 0; i < NCONN; i++) {
        if (fconns[i].open) {
            conn_finalize(&fconns[i]);
        }
    }

    step_end();

    ASSERT(fworkers[0].ctx.sh->connections == 0);
    ASSERT(fworkers[0].ctx.sh->users_active == 0);
    ASSERT(fworkers[0].ctx.sh->rooms_active == 0);

    /*
     * The workers exit: ngx_chat_exit_process(), once nginx has dropped
     * the cancelable timers (the fan-out's reapers); none may be left
     */

    ngx_fuzz_fail_alloc(0);

    for (i = 0; i < NWORKER; i++) {
        ASSERT(fworkers[i].fo->reap.timer_set
               && fworkers[i].fo->reap.cancelable);
        ngx_del_timer(&fworkers[i].fo->reap);
    }

    ngx_chat_fanout_exit_process(&fcycle);
    ASSERT(fworkers[0].ctx.wslot == -1 && fworkers[1].ctx.wslot == -1);

    ASSERT(ngx_event_timer_rbtree.root == ngx_event_timer_rbtree.sentinel);
    ASSERT(ngx_queue_empty(&ngx_posted_events));

    ngx_fuzz_zone_destroy(fzone);
    fzone = NULL;
    ngx_destroy_pool(fcycle.pool);
    fcycle.pool = NULL;
    records_free();

    return 0;
}
