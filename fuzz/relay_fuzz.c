
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * libFuzzer target for what other servers send through Redis: payloads on
 * the relay's channels go to the relay's message handler
 * (ngx_chat_relay_message(): ngx_chat_relay_parse(), then
 * ngx_chat_remote_message() / _presence() / _seen() or a sync reply) and
 * into the real zone (ngx_chat_shm.c, _bus.c, _remote.c), with the
 * fan-out of one worker on the stand-in nginx of ngx_fuzz_runtime.c.
 * The relay is reached through its public API and the Redis seam only:
 * ngx_chat_relay_init_process() claims the zone, and the harness plays
 * ngx_chat_redis.c (create, command, is_up, destroy): it keeps the
 * handlers the relay gives, says both connections are up, records the
 * channels the relay subscribes to and takes every PUBLISH, which comes
 * back to the subscriber (as Redis sends a server its own payloads); a
 * connection the relay makes again comes up when time passes.  So the
 * harness does not depend on the relay's internals nor on the payload
 * kinds it knows (new ones are just more input).
 *
 * One local user, "local", is in rooms "a" (chat_history 5) and "Zoë"
 * (50) from the start; the zone's server id is fixed to 0 (our own
 * payloads start with sixteen '0').
 *
 * Input: lines separated by '\n'; the first byte of a line says what it is:
 *
 *   r ROOM \t PAYLOAD   a payload on the channel of ROOM (the relay's
 *                       room prefix, learned from its SUBSCRIBE of the
 *                       servers channel, then ROOM)
 *   c PAYLOAD           a payload on the servers channel
 *   x CHANNEL \t PAYLOAD  a payload on any channel
 *   p ROOM \t CONTENT    "local" posts CONTENT in ROOM (relayed out)
 *   j ROOM              "local" joins ROOM (chat_history 5)
 *   l ROOM              "local" leaves ROOM
 *   d / u               the subscriber connection goes down / comes up
 *   s                   what is published stops / starts coming back (a
 *                       subscriber connection dead without being closed)
 *   t [N]               time passes: (N % 16) seconds (8 without N), the
 *                       timers due run (heartbeats, servers expired)
 *
 * In PAYLOAD, "\n" stands for a newline and "\\" for a backslash.
 *
 * After each line, the checks (SPEC §8: nothing invalid reaches the ring
 * or the members): every message in the ring of every room the zone has
 * is a "message" object of exactly the six members type, room (the
 * room's name), id (its ring id), user (1 to 256 bytes), content (a
 * string), ts (an integer), valid UTF-8 (jansson's parser, flags 0 and
 * JSON_REJECT_DUPLICATES), each id once; a payload adds messages to
 * the room of its channel only; when it adds any, relay_invalid does not
 * move, and it moves by at most one; a payload with this server's own id
 * changes nothing; every user the zone lists in a room is 1 to 256 bytes
 * of UTF-8 without U+0000.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <jansson.h>
#include "ngx_chat.h"
#include "ngx_chat_utf8.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_shm_int.h"
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_relay.h"
#include "ngx_fuzz_runtime.h"


#define ASSERT  ngx_fuzz_assert

#define ZONE_SIZE     (256 * 1024)
#define MAX_ROOMS     16
#define MAX_LINES     400


sig_atomic_t  ngx_terminate;
ngx_uint_t    ngx_exiting;


#define MAX_REDIS     16
#define MAX_ECHO      64


/* the harness's Redis connections */
#define MAX_PENDING  16384

/* a command's reply handler, called at the next turn (or NULL on failure) */
typedef struct {
    ngx_chat_redis_reply_pt     handler;
    void                       *data;
} fpending_t;


struct ngx_chat_redis_s {
    ngx_chat_redis_state_pt     state;
    ngx_chat_redis_message_pt   message;
    void                       *data;
    ngx_uint_t                  up;
    ngx_uint_t                  destroyed;
    fpending_t                 *pending;
    ngx_uint_t                  npending;
};


static void redis_replies(ngx_chat_redis_t *rc, redisReply *reply);


/* what was published, to come back to the subscriber as Redis would */
typedef struct {
    u_char                     *channel;
    size_t                      channel_len;
    u_char                     *payload;
    size_t                      payload_len;
} fecho_t;


static ngx_log_t               flog;
static ngx_cycle_t             fcycle;
static ngx_fuzz_zone_t        *fzone;
static ngx_shm_zone_t          fshm_zone;
static ngx_chat_shm_ctx_t      fctx;
static ngx_chat_shm_ctx_t     *fzones[1];
static ngx_chat_main_conf_t    fcmcf;
static ngx_chat_redis_conf_t   fconf;
static ngx_connection_t       *fnotify;

static ngx_chat_redis_t        fredis[MAX_REDIS];
static ngx_uint_t              nfredis;
static ngx_chat_redis_t       *fsub;
static fecho_t                 fecho[MAX_ECHO];
static ngx_uint_t              nfecho;
static ngx_uint_t              fmute;    /* echoes are lost */

static u_char                  fcontrol[256];
static size_t                  fcontrol_len;
static ngx_uint_t              fpublished;

static ngx_str_t               fuser = ngx_string("local");
static ngx_uint_t              ftrace;   /* RELAY_FUZZ_LOG */


/* the Redis seam (ngx_chat_redis.h) */

ngx_chat_redis_t *
ngx_chat_redis_create(ngx_chat_redis_conf_t *conf, ngx_log_t *log,
    ngx_chat_redis_state_pt state, ngx_chat_redis_message_pt message,
    void *data)
{
    ngx_chat_redis_t  *rc;

    if (nfredis == MAX_REDIS) {
        return NULL;
    }

    rc = &fredis[nfredis++];
    rc->pending = malloc(MAX_PENDING * sizeof(fpending_t));
    ASSERT(rc->pending != NULL);
    rc->npending = 0;
    rc->state = state;
    rc->message = message;
    rc->data = data;
    rc->up = 0;
    rc->destroyed = 0;

    if (message) {
        ASSERT(fsub == NULL);
        fsub = rc;
    }

    return rc;
}


ngx_int_t
ngx_chat_redis_command(ngx_chat_redis_t *rc, ngx_chat_redis_reply_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    size_t  len;

    ASSERT(rc >= fredis && rc < fredis + nfredis && !rc->destroyed);
    ASSERT(argc >= 1);

    if (!rc->up) {
        return NGX_DECLINED;
    }

    len = argvlen ? argvlen[0] : ngx_strlen(argv[0]);

    /* the servers channel: the first SUBSCRIBE ending in ":servers" */

    if (len == 9 && ngx_strncasecmp((u_char *) argv[0],
                                    (u_char *) "SUBSCRIBE", 9) == 0
        && argc == 2 && fcontrol_len == 0)
    {
        len = argvlen ? argvlen[1] : ngx_strlen(argv[1]);

        if (len > 8 && len < sizeof(fcontrol)
            && ngx_memcmp(argv[1] + len - 8, ":servers", 8) == 0)
        {
            ngx_memcpy(fcontrol, argv[1], len);
            fcontrol_len = len;
        }
    }

    if (len == 7 && ngx_strncasecmp((u_char *) argv[0],
                                    (u_char *) "PUBLISH", 7) == 0)
    {
        fpublished++;

        if (argc == 3 && nfecho < MAX_ECHO) {
            fecho_t  *e = &fecho[nfecho++];

            e->channel_len = argvlen ? argvlen[1] : ngx_strlen(argv[1]);
            e->payload_len = argvlen ? argvlen[2] : ngx_strlen(argv[2]);
            e->channel = malloc(e->channel_len + 1);
            e->payload = malloc(e->payload_len + 1);
            ASSERT(e->channel != NULL && e->payload != NULL);
            ngx_memcpy(e->channel, argv[1], e->channel_len);
            ngx_memcpy(e->payload, argv[2], e->payload_len);
        }
    }

    /* handlers are never called from inside: at the next turn */

    if (handler) {
        ASSERT(rc->npending < MAX_PENDING);
        rc->pending[rc->npending].handler = handler;
        rc->pending[rc->npending].data = data;
        rc->npending++;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_chat_redis_is_up(ngx_chat_redis_t *rc)
{
    return rc->up;
}


void
ngx_chat_redis_destroy(ngx_chat_redis_t *rc)
{
    ASSERT(rc >= fredis && rc < fredis + nfredis && !rc->destroyed);
    rc->up = 0;
    rc->destroyed = 1;

    if (rc == fsub) {
        fsub = NULL;
    }

    /* as the client does: pending handlers with NULL, not the state one */
    redis_replies(rc, NULL);
    free(rc->pending);
    rc->pending = NULL;
}


/* what was sent on a connection is answered (OK), or fails (NULL) */

static void
redis_replies(ngx_chat_redis_t *rc, redisReply *reply)
{
    ngx_uint_t   i, n;
    fpending_t  *p;

    n = rc->npending;

    if (n == 0) {
        return;
    }

    p = malloc(n * sizeof(fpending_t));
    ASSERT(p != NULL);
    ngx_memcpy(p, rc->pending, n * sizeof(fpending_t));
    rc->npending = 0;

    for (i = 0; i < n; i++) {
        p[i].handler(rc, reply, p[i].data);
    }

    free(p);
}


static void
redis_state(ngx_chat_redis_t *rc, ngx_uint_t up)
{
    if (rc->up == up) {
        return;
    }

    rc->up = up;

    if (!up) {
        /* the connection failed: what was sent is lost */
        redis_replies(rc, NULL);
    }

    if (rc->state) {
        rc->state(rc, up, rc->data);
    }
}


/* the worker's event loop: wake-ups read, posted events run */

static void
run_events(void)
{
    ngx_uint_t    i;
    ngx_event_t  *ev;
    ngx_queue_t  *q;
    ngx_str_t     ch, pl;

    static redisReply  ok = { .type = REDIS_REPLY_INTEGER, .integer = 1 };

    /* Redis answers what was sent on the connections that are up */

    for (i = 0; i < nfredis; i++) {
        if (!fredis[i].destroyed && fredis[i].up) {
            redis_replies(&fredis[i], &ok);
        }
    }

    /* what this server published comes back to it, once */

    for (i = 0; i < nfecho; i++) {
        if (fsub && fsub->up && fsub->message && !fmute) {
            ch.data = fecho[i].channel;
            ch.len = fecho[i].channel_len;
            pl.data = fecho[i].payload;
            pl.len = fecho[i].payload_len;
            fsub->message(fsub, &ch, &pl, fsub->data);
        }

        free(fecho[i].channel);
        free(fecho[i].payload);
    }

    nfecho = 0;

    if (fnotify && fnotify->read->handler) {
        fnotify->read->ready = 1;
        fnotify->read->handler(fnotify->read);
    }

    while (!ngx_queue_empty(&ngx_posted_events)) {
        q = ngx_queue_head(&ngx_posted_events);
        ev = ngx_queue_data(q, ngx_event_t, queue);
        ngx_delete_posted_event(ev);
        ev->handler(ev);
    }
}


/* time passes, in steps of a second: the timers due run */

static void
time_passes(ngx_msec_t ms)
{
    ngx_uint_t          i;
    ngx_msec_t          end;
    ngx_event_t        *ev;
    ngx_rbtree_node_t  *node, *root, *sentinel;

    end = ngx_current_msec + ms;

    while (ngx_current_msec < end) {
        ngx_current_msec += ngx_min(1000, end - ngx_current_msec);
        ((ngx_time_t *) ngx_cached_time)->sec =
                               1700000000 + (ngx_current_msec - 1000000) / 1000;

        for ( ;; ) {
            root = ngx_event_timer_rbtree.root;
            sentinel = ngx_event_timer_rbtree.sentinel;

            if (root == sentinel) {
                break;
            }

            node = ngx_rbtree_min(root, sentinel);

            if ((ngx_msec_int_t) (node->key - ngx_current_msec) > 0) {
                break;
            }

            ev = ngx_rbtree_data(node, ngx_event_t, timer);

            ngx_rbtree_delete(&ngx_event_timer_rbtree, &ev->timer);
            ev->timer_set = 0;
            ev->timedout = 1;
            ev->handler(ev);
        }

        /* connections made since come up */

        for (i = 0; i < nfredis; i++) {
            if (!fredis[i].destroyed) {
                redis_state(&fredis[i], 1);
            }
        }

        run_events();
    }
}


/* checks */

static ngx_uint_t
text_ok(const char *s, size_t len, size_t max)
{
    uint32_t  state;

    if (len == 0 || len > max || memchr(s, '\0', len) != NULL) {
        return 0;
    }

    state = NGX_CHAT_UTF8_ACCEPT;

    return ngx_chat_utf8_validate(&state, (u_char *) s, len)
           == NGX_CHAT_UTF8_ACCEPT;
}


static void
check_message(ngx_str_t *room, ngx_str_t *id, ngx_str_t *json)
{
    json_t        *j, *v;
    json_error_t   err;

    /* as a browser would: valid JSON, valid UTF-8 */

    j = json_loadb((char *) json->data, json->len, 0, &err);
    ASSERT(j != NULL);
    json_decref(j);

    j = json_loadb((char *) json->data, json->len, JSON_REJECT_DUPLICATES,
                   &err);
    ASSERT(j != NULL);
    ASSERT(json_is_object(j) && json_object_size(j) == 6);

    v = json_object_get(j, "type");
    ASSERT(json_is_string(v) && strcmp(json_string_value(v), "message") == 0);

    v = json_object_get(j, "room");
    ASSERT(json_is_string(v) && json_string_length(v) == room->len
           && ngx_memcmp(json_string_value(v), room->data, room->len) == 0);

    v = json_object_get(j, "id");
    ASSERT(json_is_string(v) && json_string_length(v) == id->len
           && ngx_memcmp(json_string_value(v), id->data, id->len) == 0);

    v = json_object_get(j, "user");
    ASSERT(json_is_string(v)
           && text_ok(json_string_value(v), json_string_length(v),
                      NGX_CHAT_MAX_USER));

    v = json_object_get(j, "content");
    ASSERT(json_is_string(v));

    v = json_object_get(j, "ts");
    ASSERT(json_is_integer(v));

    json_decref(j);
}


typedef struct {
    u_char       name[NGX_CHAT_MAX_ROOM_NAME];
    size_t       len;
    ngx_uint_t   messages;
    ngx_uint_t   users;
} fsnap_room_t;


typedef struct {
    ngx_uint_t     rooms;
    ngx_uint_t     messages;   /* in all rings */
    uint64_t       invalid;
    fsnap_room_t   room[MAX_ROOMS];
    ngx_uint_t     nroom;
} fsnap_t;


/* every room of the zone, walked in its tree */

static void
check_zone(fsnap_t *snap)
{
    ngx_str_t             *users;
    ngx_uint_t             i, k;
    ngx_pool_t            *pool;
    ngx_array_t           *a;
    ngx_rbtree_node_t     *node, *root, *sentinel;
    ngx_chat_shm_ring_t   *ring;
    ngx_chat_shm_room_t   *room;
    ngx_chat_shm_stats_t   st;
    ngx_str_t              names[64];
    ngx_uint_t             n;

    ngx_memzero(snap, sizeof(fsnap_t));

    n = 0;
    root = fctx.sh->rooms.root;
    sentinel = fctx.sh->rooms.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node && n < 64;
             node = ngx_rbtree_next(&fctx.sh->rooms, node))
        {
            room = (ngx_chat_shm_room_t *) node;
            names[n++] = room->name;
        }
    }

    pool = ngx_create_pool(4096, &flog);
    ASSERT(pool != NULL);

    for (i = 0; i < n; i++) {
        snap->rooms++;

        ring = ngx_chat_shm_ring_copy(&fctx, &names[i]);
        ASSERT(ring != NULL);

        for (k = 0; k < ring->n; k++) {
            check_message(&names[i], &ring->msgs[k].id, &ring->msgs[k].json);
        }

        /* each id once */

        for (k = 1; k < ring->n; k++) {
            ngx_uint_t  m;

            for (m = 0; m < k; m++) {
                ASSERT(ring->msgs[m].id.len != ring->msgs[k].id.len
                       || ngx_memcmp(ring->msgs[m].id.data,
                                     ring->msgs[k].id.data,
                                     ring->msgs[k].id.len) != 0);
            }
        }

        snap->messages += ring->n;

        if (snap->nroom < MAX_ROOMS && names[i].len <= NGX_CHAT_MAX_ROOM_NAME)
        {
            ngx_memcpy(snap->room[snap->nroom].name, names[i].data,
                       names[i].len);
            snap->room[snap->nroom].len = names[i].len;
            snap->room[snap->nroom].messages = ring->n;
            snap->room[snap->nroom].users = 0;
        }

        ngx_free(ring);

        a = ngx_chat_shm_users(&fctx, &names[i], 0, pool);
        ASSERT(a != NULL);

        users = a->elts;

        for (k = 0; k < a->nelts; k++) {
            ASSERT(text_ok((char *) users[k].data, users[k].len,
                           NGX_CHAT_MAX_USER));
        }

        if (snap->nroom < MAX_ROOMS && names[i].len <= NGX_CHAT_MAX_ROOM_NAME)
        {
            snap->room[snap->nroom++].users = a->nelts;
        }
    }

    ngx_destroy_pool(pool);

    ngx_chat_shm_stats(&fctx, &st);
    snap->invalid = st.relay_invalid;
}


/* a line */

static fsnap_room_t *
snap_room(fsnap_t *snap, u_char *name, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < snap->nroom; i++) {
        if (snap->room[i].len == len
            && ngx_memcmp(snap->room[i].name, name, len) == 0)
        {
            return &snap->room[i];
        }
    }

    return NULL;
}


static size_t
unescape(u_char *dst, u_char *src, size_t len)
{
    u_char  *p, *last, *d;

    d = dst;
    last = src + len;

    for (p = src; p < last; p++) {
        if (*p == '\\' && p + 1 < last && (p[1] == 'n' || p[1] == '\\')) {
            *d++ = (p[1] == 'n') ? '\n' : '\\';
            p++;
            continue;
        }

        *d++ = *p;
    }

    return d - dst;
}


static void
deliver(u_char *channel, size_t clen, u_char *payload, size_t plen)
{
    u_char     *c, *p;
    ngx_str_t   ch, pl;

    if (fsub == NULL || !fsub->up || fsub->message == NULL) {
        return;
    }

    /* exactly sized copies: ASan sees any overread */

    c = malloc(clen ? clen : 1);
    p = malloc(plen ? plen : 1);
    ASSERT(c != NULL && p != NULL);

    ngx_memcpy(c, channel, clen);
    ch.data = c;
    ch.len = clen;

    pl.len = unescape(p, payload, plen);
    pl.data = p;

    fsub->message(fsub, &ch, &pl, fsub->data);

    free(c);
    free(p);
}


static void
join(ngx_str_t *room, ngx_uint_t keep)
{
    ngx_chat_shm_join_t  res;

    if (ngx_chat_shm_join(&fctx, room, &fuser, keep, -1, NULL, &res, &flog)
        == NGX_OK)
    {
        if (res.history) {
            ngx_chat_buf_release(res.history);
        }
    }
}


/*
 * a payload of this server's own: "0000000000000000 K..." (its id is 0;
 * without a kind letter it is not a payload at all, and may be counted)
 */

static ngx_uint_t
own(u_char *payload, size_t len)
{
    static u_char  sid[] = "0000000000000000 ";

    return len >= sizeof(sid)
           && ngx_memcmp(payload, sid, sizeof(sid) - 1) == 0;
}


static void
line(u_char *p, size_t len)
{
    u_char        *tab, *payload, prefix[300];
    size_t         plen;
    fsnap_t        before, after;
    ngx_str_t      room;
    ngx_uint_t     i, room_line;
    fsnap_room_t  *b, *a;

    check_zone(&before);
    room_line = 0;
    payload = NULL;
    ngx_str_null(&room);

    switch (p[0]) {

    case 'r':
        tab = memchr(p + 1, '\t', len - 1);
        if (tab == NULL || fcontrol_len == 0) {
            break;
        }

        /* "<prefix>:<db>:<zone>:servers" -> "<prefix>:<db>:<zone>:r:" */

        plen = fcontrol_len - 7;
        ngx_memcpy(prefix, fcontrol, plen);
        prefix[plen++] = 'r';
        prefix[plen++] = ':';

        room.len = tab - (p + 1);
        if (plen + room.len > sizeof(prefix)) {
            break;
        }

        ngx_memcpy(prefix + plen, p + 1, room.len);
        room.data = p + 1;
        room_line = 1;
        payload = tab + 1;

        deliver(prefix, plen + room.len, tab + 1, len - (tab + 1 - p));
        break;

    case 'c':
        if (fcontrol_len) {
            payload = p + 1;
            deliver(fcontrol, fcontrol_len, p + 1, len - 1);
        }

        break;

    case 'x':
        tab = memchr(p + 1, '\t', len - 1);
        if (tab) {
            payload = tab + 1;

            /* a channel of a room: the room's messages may change */

            plen = fcontrol_len - 7;

            if (fcontrol_len && (size_t) (tab - (p + 1)) > plen + 2
                && ngx_memcmp(p + 1, fcontrol, plen) == 0
                && p[1 + plen] == 'r' && p[2 + plen] == ':')
            {
                room.data = p + 1 + plen + 2;
                room.len = tab - room.data;
                room_line = 1;
            }

            deliver(p + 1, tab - (p + 1), tab + 1, len - (tab + 1 - p));
        }

        break;

    case 'p':
        tab = memchr(p + 1, '\t', len - 1);
        if (tab == NULL) {
            break;
        }

        room.data = p + 1;
        room.len = tab - (p + 1);

        {
            u_char      idbuf[NGX_CHAT_ID_LEN];
            uint64_t    ts;
            ngx_chat_shm_place_t  place;
            ngx_str_t   content, id;
            ngx_msec_t  retry;

            id.data = idbuf;
            id.len = 0;

            content.data = tab + 1;
            content.len = len - (tab + 1 - p);

            /* what the protocol layer lets through */

            if (!text_ok((char *) room.data, room.len, NGX_CHAT_MAX_ROOM_NAME)
                || !text_ok((char *) content.data, content.len,
                            fctx.max_message))
            {
                break;
            }

            (void) ngx_chat_shm_post(&fctx, &room, NULL, &fuser, &content,
                                     0, 0, &id, &ts, &place, &retry, &flog);
        }

        break;

    case 'j':
    case 'l':
        room.data = p + 1;
        room.len = len - 1;

        if (room.len == 0 || room.len > NGX_CHAT_MAX_ROOM_NAME
            || !text_ok((char *) room.data, room.len, NGX_CHAT_MAX_ROOM_NAME))
        {
            break;
        }

        if (p[0] == 'j') {
            join(&room, 5);

        } else if (ngx_chat_shm_members(&fctx, &room)) {
            ngx_chat_shm_leave(&fctx, &room, &fuser);
        }

        break;

    case 't':
        time_passes(len > 1 ? (ngx_msec_t) (p[1] % 16) * 1000 : 8000);
        break;

    case 's':
        fmute = !fmute;
        break;

    case 'd':
        if (fsub) {
            redis_state(fsub, 0);
        }

        break;

    case 'u':
        if (fsub) {
            redis_state(fsub, 1);
        }

        break;
    }

    run_events();

    check_zone(&after);

    if (ftrace) {
        fprintf(stderr, "line '%c': rooms %u, messages %u, relay_invalid %u,"
                " published %u\n", p[0], (unsigned) after.rooms,
                (unsigned) after.messages, (unsigned) after.invalid,
                (unsigned) fpublished);
    }

    if (p[0] == 'r' || p[0] == 'c' || p[0] == 'x') {

        /*
         * one payload: counted invalid at most once, and then nothing
         * added (how many messages a valid one may add is the relay's
         * business: a republish may carry several)
         */

        ASSERT(after.invalid <= before.invalid + 1);
        ASSERT(after.messages == before.messages
               || after.invalid == before.invalid);

        for (i = 0; i < before.nroom; i++) {
            b = &before.room[i];
            a = snap_room(&after, b->name, b->len);

            if (a == NULL) {
                continue;
            }

            /* a message only to the room of the channel */

            if (a->messages > b->messages) {
                ASSERT(room_line && room.len == b->len
                       && ngx_memcmp(room.data, b->name, b->len) == 0);
            }

            /* our own payloads change nothing */

            if (payload && own(payload, len - (payload - p))) {
                ASSERT(a->messages == b->messages && a->users == b->users);
            }
        }

        if (payload && own(payload, len - (payload - p))) {
            ASSERT(after.invalid == before.invalid);
        }
    }
}


static void
zone_create(void)
{
    fzone = ngx_fuzz_zone_create(ZONE_SIZE);

    ngx_memzero(&fshm_zone, sizeof(ngx_shm_zone_t));
    fshm_zone.data = &fctx;
    fshm_zone.shm.addr = (u_char *) &fzone->pool;
    fshm_zone.shm.size = ZONE_SIZE;
    ngx_str_set(&fshm_zone.shm.name, "chat");

    ngx_memzero(&fctx, sizeof(ngx_chat_shm_ctx_t));
    fctx.shm_zone = &fshm_zone;
    ngx_str_set(&fctx.name, "chat");
    fctx.relayed = 1;
    fctx.max_message = 4096;

    ASSERT(ngx_chat_shm_init_zone(&fshm_zone, NULL) == NGX_OK);

    /* ids and the server id fixed: inputs can name them */
    fctx.sh->server_id = 0;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    flog.log_level = NGX_LOG_DEBUG_ALL | NGX_LOG_DEBUG;

    ngx_fuzz_runtime_init(&flog);

    fcycle.log = &flog;
    ngx_cycle = &fcycle;

    fzones[0] = &fctx;
    ftrace = (getenv("RELAY_FUZZ_LOG") != NULL);

    fcmcf.zones.elts = fzones;
    fcmcf.zones.nelts = 1;
    fcmcf.zones.size = sizeof(ngx_chat_shm_ctx_t *);
    fcmcf.zones.nalloc = 1;

    ngx_str_set(&fconf.url, "redis://fuzz");
    fconf.naddrs = 1;
    fconf.db = -1;
    fconf.connect_timeout = 1000;
    fconf.command_timeout = 1000;

    fcmcf.redis = &fconf;
    ngx_str_set(&fcmcf.redis_prefix, "chat");

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *p, *end, *nl, *copy;
    size_t       len;
    ngx_str_t    room;
    ngx_uint_t   i, n;

    ((ngx_time_t *) ngx_cached_time)->sec = 1700000000;
    ((ngx_time_t *) ngx_cached_time)->msec = 0;
    ngx_current_msec = 1000000;
    ngx_fuzz_fail_alloc(0);

    nfredis = 0;
    nfecho = 0;
    fmute = 0;
    fsub = NULL;
    fcontrol_len = 0;
    fpublished = 0;

    fcycle.pool = ngx_create_pool(16384, &flog);
    ASSERT(fcycle.pool != NULL);

    zone_create();

    ngx_chat_ws_init_worker(&fcycle);
    ASSERT(ngx_chat_fanout_init_process(&fcycle, &fcmcf) == NGX_OK);
    fnotify = ngx_fuzz_last_connection;

    ASSERT(ngx_chat_shm_connect(&fctx, &fuser) == NGX_OK);

    ngx_str_set(&room, "a");
    join(&room, 5);
    room.data = (u_char *) "Zo\xc3\xab";
    room.len = 4;
    join(&room, 50);

    ASSERT(ngx_chat_relay_init_process(&fcycle, &fcmcf) == NGX_OK);

    /* the relay claimed the zone: both connections come up */

    ASSERT(nfredis == 2 && fsub != NULL);

    for (i = 0; i < nfredis; i++) {
        redis_state(&fredis[i], 1);
    }

    run_events();
    ASSERT(fcontrol_len != 0);

    p = (u_char *) data;
    end = p + size;
    n = 0;

    while (p < end && n++ < MAX_LINES) {
        nl = memchr(p, '\n', end - p);
        len = (nl ? nl : end) - p;

        if (len) {
            copy = malloc(len);
            ASSERT(copy != NULL);
            ngx_memcpy(copy, p, len);
            line(copy, len);
            free(copy);
        }

        if (nl == NULL) {
            break;
        }

        p = nl + 1;
    }

    /* the worker exits */

    ngx_chat_relay_exit_process(&fcycle);

    for (i = 0; i < nfecho; i++) {
        free(fecho[i].channel);
        free(fecho[i].payload);
    }

    nfecho = 0;

    if (ngx_chat_fanout_get(&fctx)) {
        ngx_fuzz_fail_alloc(0);
    }

    ngx_chat_shm_disconnect(&fctx, &fuser);

    {
        ngx_chat_fanout_t  *fo;

        fo = ngx_chat_fanout_get(&fctx);
        if (fo && fo->reap.timer_set) {
            ngx_del_timer(&fo->reap);
        }
    }

    ngx_chat_fanout_exit_process(&fcycle);

    ASSERT(ngx_event_timer_rbtree.root == ngx_event_timer_rbtree.sentinel);

    while (!ngx_queue_empty(&ngx_posted_events)) {
        ngx_delete_posted_event(ngx_queue_data(ngx_queue_head(
                                     &ngx_posted_events), ngx_event_t, queue));
    }

    ngx_fuzz_zone_destroy(fzone);
    fzone = NULL;
    ngx_destroy_pool(fcycle.pool);
    fcycle.pool = NULL;

    return 0;
}
