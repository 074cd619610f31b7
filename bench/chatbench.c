/*
 * chatbench - single-process epoll load generator for ngx_chat_module.
 *
 * Opens N WebSocket connections (RFC 6455 client framing), joins each to a
 * room, lets a set of senders post timestamped messages at a paced rate (or
 * closed loop), and measures one-way delivery latency, delivery counts and the
 * CPU the server spent for them.  See README.md in this directory.
 *
 * Load goes only to loopback addresses (127.0.0.0/8, ::1); anything else is
 * refused.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"


#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RX_CHUNK        (256 * 1024)    /* one recv() at most */
#define WBUF_CAP        (1u << 20)      /* open-loop sender skips above this */
#define MAX_PIDS        256
#define DUP_MAX_SPR     4096            /* dup detection when senders/room <= */


const char  *bench_prog = "chatbench";

static uint64_t g_now;                  /* CLOCK_MONOTONIC ns, refreshed often */


/* ------------------------------------------------------------------------ */
/* protocol adapters                                                        */

typedef enum {
    EV_OTHER = 0,
    EV_READY,           /* session usable: send the join now (chat: welcome) */
    EV_JOINED,          /* join confirmed */
    EV_MESSAGE,         /* a room message; content/content_len set */
    EV_ACK,             /* send accepted; ref set when present */
    EV_ERROR,           /* request refused; code set, ref when present */
    EV_PRESENCE         /* presence noise */
} ev_kind_e;

typedef struct {
    ev_kind_e    kind;
    const char  *content;
    size_t       content_len;
    const char  *code;
    size_t       code_len;
    const char  *ref;           /* raw ref value (string contents or number) */
    size_t       ref_len;
    uint64_t     retry_after_ms;
    const char  *reply;         /* text frame to send back, e.g. a pong */
    size_t       reply_len;
} pev_t;

/*
 * One adapter per wire protocol.  The core does the WebSocket framing, the
 * pacing and the accounting; an adapter only maps chat operations to payloads
 * and classifies incoming text payloads.
 */
typedef struct {
    const char  *name;
    const char  *default_path;
    /* join can be sent right after the 101 (else wait for EV_READY) */
    int          ready_on_open;
    /* the server acknowledges sends (else closed loop uses self-delivery) */
    int          has_acks;
    /* request target for the handshake (path + query) */
    int        (*target)(char *out, size_t cap, const char *path,
                         const char *user, const char *room);
    /* payload of the join request; 0 = joining is implicit (joined at once) */
    size_t     (*encode_join)(char *out, size_t cap, const char *room);
    /* payload of a send; content needs no JSON escaping (we make it) */
    size_t     (*encode_send)(char *out, size_t cap, const char *room,
                              const char *content, size_t clen,
                              const char *ref);
    void       (*classify)(const char *p, size_t n, pev_t *ev);
} proto_t;


static int
chat_target(char *out, size_t cap, const char *path, const char *user,
    const char *room)
{
    (void) room;
    return snprintf(out, cap, "%s%suser=%s", path,
                    strchr(path, '?') ? "&" : "?", user);
}


static size_t
chat_encode_join(char *out, size_t cap, const char *room)
{
    int  n;

    n = snprintf(out, cap, "{\"type\":\"join\",\"room\":\"%s\"}", room);
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}


static size_t
chat_encode_send(char *out, size_t cap, const char *room, const char *content,
    size_t clen, const char *ref)
{
    int  n;

    n = snprintf(out, cap,
                 "{\"type\":\"send\",\"room\":\"%s\",\"content\":\"%.*s\","
                 "\"ref\":\"%s\"}", room, (int) clen, content, ref);
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}


static void
chat_classify(const char *p, size_t n, pev_t *ev)
{
    const char  *end = p + n, *v, *t;
    size_t       tl;

    ev->kind = EV_OTHER;

    v = json_find(p, n, KEY("\"type\""));
    if (v == NULL || json_scalar(v, end, &t, &tl) != 0) {
        return;
    }

#define IS(lit)  (tl == sizeof(lit) - 1 && memcmp(t, lit, tl) == 0)

    if (IS("message")) {
        v = json_find(p, n, KEY("\"content\""));
        if (v != NULL
            && json_scalar(v, end, &ev->content, &ev->content_len) == 0)
        {
            ev->kind = EV_MESSAGE;
        }

    } else if (IS("ack")) {
        ev->kind = EV_ACK;
        v = json_find(p, n, KEY("\"ref\""));
        if (v != NULL) {
            (void) json_scalar(v, end, &ev->ref, &ev->ref_len);
        }

    } else if (IS("joined")) {
        ev->kind = EV_JOINED;

    } else if (IS("welcome")) {
        ev->kind = EV_READY;

    } else if (IS("presence")) {
        ev->kind = EV_PRESENCE;

    } else if (IS("error")) {
        ev->kind = EV_ERROR;
        v = json_find(p, n, KEY("\"code\""));
        if (v != NULL) {
            (void) json_scalar(v, end, &ev->code, &ev->code_len);
        }
        v = json_find(p, n, KEY("\"ref\""));
        if (v != NULL) {
            (void) json_scalar(v, end, &ev->ref, &ev->ref_len);
        }
        v = json_find(p, n, KEY("\"retry_after_ms\""));
        if (v != NULL) {
            ev->retry_after_ms = strtoull(v, NULL, 10);
        }
    }

#undef IS
}


static const proto_t  proto_chat = {
    "chat", "/chat", 0, 1,
    chat_target, chat_encode_join, chat_encode_send, chat_classify
};


/*
 * Socket.IO v4 over a raw WebSocket (Engine.IO v4 framing, one packet per
 * WebSocket text frame).  Engine.IO packet types: 0 open, 1 close, 2 ping,
 * 3 pong, 4 message; inside a message, Socket.IO types: 0 connect,
 * 1 disconnect, 2 event, 3 ack, 4 connect_error.  The default namespace
 * "/" is implied, so an event is "42[...]" and an ack "43<id>[...]".
 *
 * The server (bench/socketio/server.js) handles "join-room" (room, ack) and
 * "send-message" ({room, content}, ack) and emits "receive-message"
 * {room, id, user, content, ts} to the room.  Acks carry our ids: the join
 * uses SIO_JOIN_ACK, a send uses its ref (the send time in ns, far above
 * SIO_JOIN_ACK and exact in a JavaScript number for 104 days of uptime).
 */

#define SIO_JOIN_ACK  "1"


static int
sio_target(char *out, size_t cap, const char *path, const char *user,
    const char *room)
{
    (void) room;
    return snprintf(out, cap, "%s%sEIO=4&transport=websocket&user=%s", path,
                    strchr(path, '?') ? "&" : "?", user);
}


static size_t
sio_encode_join(char *out, size_t cap, const char *room)
{
    int  n;

    n = snprintf(out, cap, "42" SIO_JOIN_ACK "[\"join-room\",\"%s\"]", room);
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}


static size_t
sio_encode_send(char *out, size_t cap, const char *room, const char *content,
    size_t clen, const char *ref)
{
    int  n;

    n = snprintf(out, cap,
                 "42%s[\"send-message\",{\"room\":\"%s\",\"content\":\"%.*s\"}]",
                 ref, room, (int) clen, content);
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}


static void
sio_classify(const char *p, size_t n, pev_t *ev)
{
    static const char  connect_ns[] = "40", pong[] = "3";
    const char        *end = p + n, *v, *id;
    size_t             idl;

    ev->kind = EV_OTHER;
    if (n == 0) {
        return;
    }

    switch (p[0]) {

    case '0':                                   /* Engine.IO open */
        ev->reply = connect_ns;
        ev->reply_len = sizeof(connect_ns) - 1;
        return;

    case '2':                                   /* ping */
        ev->reply = pong;
        ev->reply_len = sizeof(pong) - 1;
        return;

    case '4':                                   /* Socket.IO packet */
        break;

    default:                                    /* pong, close, noop */
        return;
    }

    if (n < 2) {
        return;
    }

    switch (p[1]) {

    case '0':                                   /* namespace connected */
        ev->kind = EV_READY;
        return;

    case '1':
        ev->kind = EV_ERROR;
        ev->code = "disconnect";
        ev->code_len = sizeof("disconnect") - 1;
        return;

    case '4':
        ev->kind = EV_ERROR;
        ev->code = "connect_error";
        ev->code_len = sizeof("connect_error") - 1;
        return;

    case '2':                                   /* event */
        if (n > 20 && memcmp(p + 2, "[\"receive-message\",", 19) == 0) {
            v = json_find(p, n, KEY("\"content\""));
            if (v != NULL
                && json_scalar(v, end, &ev->content, &ev->content_len) == 0)
            {
                ev->kind = EV_MESSAGE;
            }
        } else if (n > 15 && memcmp(p + 2, "[\"user-joined\"", 14) == 0) {
            ev->kind = EV_PRESENCE;
        }
        return;

    case '3':                                   /* ack: 43<id>[...] */
        id = p + 2;
        for (idl = 0; id + idl < end && isdigit((u_char) id[idl]); idl++) {
            /* void */
        }
        if (idl == 0) {
            return;
        }
        if (idl == sizeof(SIO_JOIN_ACK) - 1
            && memcmp(id, SIO_JOIN_ACK, idl) == 0)
        {
            ev->kind = EV_JOINED;
            return;
        }
        ev->ref = id;
        ev->ref_len = idl;
        v = json_find(p, n, KEY("\"ok\""));
        if (v != NULL && end - v >= 5 && memcmp(v, "false", 5) == 0) {
            ev->kind = EV_ERROR;
            v = json_find(p, n, KEY("\"error\""));
            if (v != NULL) {
                (void) json_scalar(v, end, &ev->code, &ev->code_len);
            }
            return;
        }
        ev->kind = EV_ACK;
        return;
    }
}


static const proto_t  proto_socketio = {
    "socketio", "/socket.io/", 0, 1,
    sio_target, sio_encode_join, sio_encode_send, sio_classify
};


/*
 * nchan pub/sub over WebSocket: the room is the channel id at the end of the
 * URL of an nchan_pubsub location, so the connection subscribes by opening
 * (joined on the 101) and every text frame it sends is published to that
 * channel.  Subscribers get the raw message data: every text frame is a
 * delivery.  No acks: the closed loop counts the sender's own delivery.
 */

static int
nchan_target(char *out, size_t cap, const char *path, const char *user,
    const char *room)
{
    size_t  pl = strlen(path);

    (void) user;
    return snprintf(out, cap, "%s%s%s", path,
                    pl > 0 && path[pl - 1] == '/' ? "" : "/", room);
}


static size_t
nchan_encode_join(char *out, size_t cap, const char *room)
{
    (void) out;
    (void) cap;
    (void) room;
    return 0;
}


static size_t
nchan_encode_send(char *out, size_t cap, const char *room,
    const char *content, size_t clen, const char *ref)
{
    (void) room;
    (void) ref;
    if (clen >= cap) {
        return 0;
    }
    memcpy(out, content, clen);
    return clen;
}


static void
nchan_classify(const char *p, size_t n, pev_t *ev)
{
    ev->kind = EV_MESSAGE;
    ev->content = p;
    ev->content_len = n;
}


static const proto_t  proto_nchan = {
    "nchan", "/pubsub", 1, 0,
    nchan_target, nchan_encode_join, nchan_encode_send, nchan_classify
};

static const proto_t  *protocols[] = {
    &proto_chat, &proto_socketio, &proto_nchan, NULL
};


/* ------------------------------------------------------------------------ */
/* configuration, connections, global state                                 */

typedef struct {
    const char  *host;
    int          port;
    const char  *path;
    int          conns;
    int          rooms;
    int          senders;
    double       rate;              /* per sender; 0 = closed loop */
    double       total_rate;
    int          window;
    int          window_on;     /* WIN_ACK, WIN_ECHO, WIN_ALL */
    double       duration;
    double       drain;
    int          inflight;
    double       connect_rate;
    double       connect_timeout;
    double       join_timeout;
    double       settle;
    int          src_ips;
    const char  *src_base;
    const char  *server_pids;
    const char  *server_pidfile;
    const char  *protocol;
    int          idle;
    int          json;
    int          quiet;
    int          size;
    const char  *room_prefix;
    const char  *user_prefix;
    int          no_dup;
    int          selftest;
    uint32_t     run_id;        /* --run-id: shared by split processes */
    int          recv_only;     /* --recv-only: the senders are elsewhere */
    const char  *barrier;       /* --barrier FILE: ready, wait for SIGUSR1 */
    int          json_buckets;  /* --json-buckets: raw histogram buckets */
} cfg_t;

enum {
    CS_NEW = 0,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_OPEN,
    CS_CLOSED
};

typedef struct conn_s  conn_t;

/* highest sequence seen from one sender, and which of the 64 below it */
typedef struct {
    uint32_t   last;
    uint64_t   seen;            /* bit i: sequence last - 1 - i arrived */
} seqwin_t;

struct conn_s {
    int        fd;
    uint32_t   idx;
    uint32_t   room;
    int32_t    sender;          /* index into senders, -1 if not one */
    uint8_t    state;
    uint8_t    joined;
    uint8_t    join_sent;
    uint8_t    settled;         /* joined or given up: counted once */
    uint8_t    broken;          /* close after the current event */
    uint8_t    closing;         /* close frame exchanged */
    uint32_t   ev_mask;
    uint64_t   t_start;
    ws_rx_t    rx;              /* input: handshake, then frames */
    ws_tx_t    tx;              /* output the socket did not take */
    seqwin_t  *lastseq;         /* per sender of my room, dup detection */
};

/* what completes a send in the closed loop (--window-on) */
#define WIN_ACK    0    /* its ack (the default where the protocol has acks) */
#define WIN_ECHO   1    /* the sender's own copy (nchan: always) */
#define WIN_ALL    2    /* its delivery to every member of the room */
#define WIN_RING   256  /* sends tracked per sender for WIN_ALL */

typedef struct {
    uint32_t   seq;
    uint32_t   left;            /* deliveries still to come */
} inflight_t;

typedef struct {
    conn_t    *c;
    inflight_t *inflight;       /* WIN_ALL: WIN_RING of them */
    uint32_t   seq;
    uint32_t   outstanding;
    uint64_t   next_ns;
    uint64_t   hold_until;
    uint64_t   sent;
} sender_t;

typedef struct {
    uint64_t  started, opened, connect_failed, hs_failed, timeouts;
    uint64_t  welcome, joined, join_failed, closed_after_open;
    uint64_t  sent, expected, received, acks, acks_ref, refused;
    uint64_t  expected_refused, foreign, stale, bad_content, dup, gaps;
    uint64_t  reorder;
    uint64_t  presence, other, binary, pings, pongs_rx, proto_errors;
    uint64_t  skipped_backpressure, neg_latency, self_acks;
    uint64_t  max_behind_ns;
    kvtab_t   fail;             /* connect/handshake failures by reason */
    kvtab_t   errors;           /* error frames by code */
    kvtab_t   closes;           /* closes after open by reason */
} stats_t;

enum {
    PH_RAMP = 0,
    PH_SETTLE,
    PH_SEND,
    PH_DRAIN,
    PH_HOLD,
    PH_DONE,
    PH_WAIT             /* --barrier: joined, waiting for SIGUSR1 */
};

static const char  *phase_names[] = { "ramp", "settle", "send", "drain", "hold",
                                      "done", "wait" };

static cfg_t           cfg;
static const proto_t  *proto;
static stats_t         st;
static hist_t          h_lat;           /* one-way latency */
static hist_t          h_ack;           /* send -> ack */
static conn_t         *conns;
static sender_t       *senders;
static uint32_t       *room_members;    /* joined connections per room */
static char          **room_names;
static int             epfd = -1;
static int             phase = PH_RAMP;
static int             next_conn;       /* next index to start */
static int             n_inflight;      /* connecting or handshaking */
static int             n_pending;       /* started and not settled */
static uint32_t        run_id;
static uint64_t        t_last_delivery;
static double          per_sender_rate;
static uint64_t        send_interval_ns;
static volatile sig_atomic_t  g_interrupted;
static volatile sig_atomic_t  g_go;     /* SIGUSR1: leave the barrier */
static struct sockaddr_storage  dst_addr;
static socklen_t       dst_len;
static int             dst_family;
static uint32_t        src_base_ip;     /* host order */
static char            host_hdr[128];
static char            rx_buf[RX_CHUNK];

/* selftest hook: receives every text message instead of the adapter */
static void          (*text_hook)(conn_t *c, const char *p, size_t n);


static void conn_close(conn_t *c, const char *reason);
static void on_text(conn_t *c, char *p, size_t n);
static void sender_pump(sender_t *s);
static void on_send_done(conn_t *c, const pev_t *ev, int refused,
    int complete);


/* ------------------------------------------------------------------------ */
/* output path                                                              */

static void
conn_update_events(conn_t *c)
{
    struct epoll_event  ev;
    uint32_t            want;

    if (c->fd < 0 || c->state == CS_CLOSED) {
        return;
    }
    if (c->state == CS_CONNECTING) {
        want = EPOLLOUT;
    } else {
        want = EPOLLIN | (ws_tx_pending(&c->tx) ? EPOLLOUT : 0);
    }
    if (want == c->ev_mask) {
        return;
    }
    ev.events = want;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        c->broken = 1;
        return;
    }
    c->ev_mask = want;
}


/* write or queue; on a socket error mark the connection broken */
static void
conn_write(conn_t *c, const char *p, size_t n)
{
    if (c->broken || c->state == CS_CLOSED) {
        return;
    }
    if (ws_tx_write(&c->tx, c->fd, p, n) != 0) {
        c->broken = 1;
        return;
    }
    conn_update_events(c);
}


static void
conn_flush(conn_t *c)
{
    if (ws_tx_flush(&c->tx, c->fd) != 0) {
        c->broken = 1;
    }
    conn_update_events(c);
}


static void
conn_send_frame(conn_t *c, int opcode, const char *p, size_t n)
{
    if (c->broken || c->state == CS_CLOSED) {
        return;
    }
    if (ws_tx_frame(&c->tx, c->fd, opcode, p, n) != 0) {
        c->broken = 1;
        return;
    }
    conn_update_events(c);
}


/* ------------------------------------------------------------------------ */
/* input path: benchlib's incremental parser calls these                    */

static void
proto_error(void *data, const char *what)
{
    conn_t  *c = data;

    st.proto_errors++;
    kv_addf(&st.closes, "client:%s", what);
    c->broken = 1;
}


static int
rx_text(void *data, char *p, size_t n)
{
    conn_t  *c = data;

    on_text(c, p, n);
    return c->broken || c->closing;
}


static int
rx_binary(void *data, char *p, size_t n)
{
    conn_t  *c = data;

    st.binary++;
    return c->broken || c->closing;
}


static int
rx_ping(void *data, char *p, size_t n)
{
    conn_t  *c = data;

    st.pings++;
    conn_send_frame(c, 0xA, p, n);
    return c->broken || c->closing;
}


static int
rx_pong(void *data, char *p, size_t n)
{
    conn_t  *c = data;

    st.pongs_rx++;
    return c->broken || c->closing;
}


/* close: echo its code and finish */
static int
rx_close(void *data, unsigned code, char *p, size_t n)
{
    conn_t  *c = data;
    char     cb[2];

    if (c->state == CS_OPEN) {
        kv_addf(&st.closes, "server close %u", code);
    }
    cb[0] = (char) (code >> 8);
    cb[1] = (char) code;
    conn_send_frame(c, 0x8, cb, code != 1005 ? 2 : 0);
    c->closing = 1;
    return 1;
}


static const ws_rx_handler_t  conn_rx_handler = {
    rx_text, rx_binary, rx_ping, rx_pong, rx_close, proto_error
};


static void
conn_init(conn_t *c, uint32_t idx)
{
    memset(c, 0, sizeof(conn_t));
    c->fd = -1;
    c->idx = idx;
    c->rx.h = &conn_rx_handler;
    c->rx.data = c;
}


/* ------------------------------------------------------------------------ */
/* connection life cycle                                                    */

static void
make_user(uint32_t idx, char *out, size_t cap)
{
    snprintf(out, cap, "%s%u", cfg.user_prefix, idx);
}


static void
make_key(uint32_t idx, char out[32])
{
    ws_make_key(((uint64_t) run_id << 32) ^ idx, out);
}


static void
settle(conn_t *c)
{
    if (!c->settled) {
        c->settled = 1;
        n_pending--;
    }
}


static void
mark_joined(conn_t *c)
{
    if (c->joined) {
        return;
    }
    c->joined = 1;
    room_members[c->room]++;
    st.joined++;
    settle(c);
}


static void
send_join(conn_t *c)
{
    char    buf[512];
    size_t  n;

    if (c->join_sent) {
        return;
    }
    c->join_sent = 1;
    n = proto->encode_join(buf, sizeof(buf), room_names[c->room]);
    if (n == 0) {
        mark_joined(c);         /* implicit membership */
        return;
    }
    conn_send_frame(c, 0x1, buf, n);
}


static void
conn_close(conn_t *c, const char *reason)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW) {
        return;
    }
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) {
        n_inflight--;
        if (reason != NULL) {
            kv_add(&st.fail, reason, strlen(reason));
            if (c->state == CS_CONNECTING) {
                st.connect_failed++;
            } else {
                st.hs_failed++;
            }
        }
    } else if (reason != NULL && phase != PH_DONE) {
        st.closed_after_open++;
        kv_add(&st.closes, reason, strlen(reason));
    }
    if (c->joined) {
        room_members[c->room]--;
        c->joined = 0;
    }
    if (!c->settled && c->state == CS_OPEN) {
        st.join_failed++;
    }
    settle(c);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->state = CS_CLOSED;
    ws_rx_free(&c->rx);
    ws_tx_free(&c->tx);
    free(c->lastseq);
    c->lastseq = NULL;
}


static void
conn_start(conn_t *c)
{
    struct sockaddr_in  src;
    struct epoll_event  ev;
    int                 fd, one = 1;
    char                why[64];

    c->t_start = g_now;
    c->state = CS_CONNECTING;
    st.started++;
    n_pending++;
    n_inflight++;

    fd = socket(dst_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        c->fd = -1;
        conn_close(c, why);
        return;
    }
    c->fd = fd;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (cfg.src_ips > 0) {
        (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                          sizeof(one));
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(src_base_ip
                                    + c->idx % (uint32_t) cfg.src_ips);
        if (bind(fd, (struct sockaddr *) &src, sizeof(src)) != 0) {
            snprintf(why, sizeof(why), "bind: %s", strerror(errno));
            conn_close(c, why);
            return;
        }
    }

    if (connect(fd, (struct sockaddr *) &dst_addr, dst_len) != 0
        && errno != EINPROGRESS)
    {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        conn_close(c, why);
        return;
    }

    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        snprintf(why, sizeof(why), "epoll: %s", strerror(errno));
        conn_close(c, why);
        return;
    }
    c->ev_mask = EPOLLOUT;
}


static void
conn_on_connected(conn_t *c)
{
    int        err = 0;
    socklen_t  el = sizeof(err);
    char       req[1024], user[128], target[512], key[32], why[64];
    size_t     n;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
        err = errno;
    }
    if (err != 0) {
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        conn_close(c, why);
        return;
    }

    make_user(c->idx, user, sizeof(user));
    make_key(c->idx, key);
    proto->target(target, sizeof(target), cfg.path, user,
                  room_names[c->room]);
    n = ws_request(req, sizeof(req), target, host_hdr, key);

    c->state = CS_HANDSHAKE;
    conn_update_events(c);
    conn_write(c, req, n);
}


/* handshake bytes: returns 1 when the connection is open */
static int
conn_handshake_input(conn_t *c, const char *data, size_t n)
{
    size_t  hlen = 0;
    char    key[32], why[64];
    int     status, rc;

    ws_rx_buffer(&c->rx, data, n);
    make_key(c->idx, key);
    rc = ws_response(c->rx.rbuf, c->rx.rlen, key, &hlen, &status, why,
                     sizeof(why));
    if (rc <= 0) {
        if (rc < 0) {
            conn_close(c, why);
        }
        return 0;
    }

    c->state = CS_OPEN;
    n_inflight--;
    st.opened++;

    ws_rx_discard(&c->rx, hlen);

    if (proto->ready_on_open) {
        send_join(c);
    }
    ws_rx_feed(&c->rx, NULL, 0);        /* frames that came with the 101 */
    return 1;
}


static void
conn_on_readable(conn_t *c)
{
    ssize_t  r;
    int      i;
    char     why[64];

    for (i = 0; i < 4; i++) {
        r = recv(c->fd, rx_buf, sizeof(rx_buf), 0);
        if (r == 0) {
            if (c->state == CS_HANDSHAKE) {
                conn_close(c, "handshake: eof");
            } else {
                conn_close(c, c->closing ? NULL : "eof");
            }
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            snprintf(why, sizeof(why), "%s%s",
                     c->state == CS_HANDSHAKE ? "handshake: " : "",
                     strerror(errno));
            conn_close(c, why);
            return;
        }
        g_now = now_ns();
        if (c->state == CS_HANDSHAKE) {
            (void) conn_handshake_input(c, rx_buf, (size_t) r);
        } else {
            ws_rx_feed(&c->rx, rx_buf, (size_t) r);
        }
        if (c->state != CS_HANDSHAKE && c->state != CS_OPEN) {
            return;
        }
        if (c->broken || c->closing || (size_t) r < sizeof(rx_buf)) {
            return;
        }
    }
}


static void
conn_on_event(conn_t *c, uint32_t events)
{
    if (c->state == CS_CONNECTING) {
        conn_on_connected(c);
    } else {
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            conn_on_readable(c);
        }
        if ((events & EPOLLOUT) && c->state != CS_CLOSED && !c->broken) {
            conn_flush(c);
        }
    }
    if (c->state != CS_CLOSED && c->broken) {
        conn_close(c, c->state == CS_OPEN ? "client: write/protocol error"
                                          : "handshake: write error");
    } else if (c->state != CS_CLOSED && c->closing) {
        if (ws_tx_pending(&c->tx)) {
            conn_flush(c);
        }
        conn_close(c, NULL);
    }
}


/* ------------------------------------------------------------------------ */
/* chat semantics                                                           */

static uint64_t
parse_u64(const char *p, const char *end, const char **after)
{
    uint64_t  v = 0;

    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t) (*p - '0');
        p++;
    }
    *after = p;
    return v;
}


/* content "t=<ns>;s=<sender>;n=<seq>;r=<run>[;p=...]" */
static int
parse_content(const char *p, size_t n, uint64_t *t, uint64_t *s, uint64_t *q,
    uint64_t *r)
{
    const char  *end = p + n, *a;

    if (n < 14 || memcmp(p, "t=", 2) != 0) {
        return -1;
    }
    *t = parse_u64(p + 2, end, &a);
    if (end - a < 3 || memcmp(a, ";s=", 3) != 0) {
        return -1;
    }
    *s = parse_u64(a + 3, end, &a);
    if (end - a < 3 || memcmp(a, ";n=", 3) != 0) {
        return -1;
    }
    *q = parse_u64(a + 3, end, &a);
    if (end - a < 3 || memcmp(a, ";r=", 3) != 0) {
        return -1;
    }
    *r = parse_u64(a + 3, end, &a);
    return 0;
}


static uint32_t
senders_in_room(uint32_t room)
{
    uint32_t  s = (uint32_t) cfg.senders, r = (uint32_t) cfg.rooms;

    return room < s ? (s - room + r - 1) / r : 0;
}


static void
on_delivery(conn_t *c, const char *p, size_t n)
{
    uint64_t  t, s, q, r, lat;
    uint32_t  k, spr;

    if (parse_content(p, n, &t, &s, &q, &r) != 0) {
        st.bad_content++;
        return;
    }
    if (r != run_id || s >= (uint64_t) cfg.senders) {
        st.foreign++;
        return;
    }

    /*
     * Duplicate / reorder detection: a receiver should see each sender of its
     * room in order (the chat spec promises it).  Per (receiver, sender) we
     * keep the highest sequence seen and a 64-bit window below it: a
     * sequence seen before is a duplicate (counted apart, not received); one
     * below the highest but not seen yet arrived out of order (counted as
     * reordered, and received: it fills its gap).  Further back than the
     * window it cannot be told apart and counts as reordered.
     */
    if (!cfg.no_dup && (uint32_t) s % (uint32_t) cfg.rooms == c->room) {
        spr = senders_in_room(c->room);
        if (spr > 0 && spr <= DUP_MAX_SPR && c->lastseq == NULL) {
            c->lastseq = calloc(spr, sizeof(seqwin_t));
        }
        if (c->lastseq != NULL) {
            seqwin_t  *w;
            uint64_t   d, bit;

            k = (uint32_t) s / (uint32_t) cfg.rooms;
            w = &c->lastseq[k];
            if (q == w->last) {
                st.dup++;
                return;
            }
            if (q < w->last) {
                d = w->last - q;
                if (d <= 64) {
                    bit = 1ULL << (d - 1);
                    if (w->seen & bit) {
                        st.dup++;
                        return;
                    }
                    w->seen |= bit;
                }
                st.reorder++;
                if (st.gaps > 0) {
                    st.gaps--;
                }
            } else {
                d = q - w->last;
                if (d > 1) {
                    st.gaps += d - 1;
                }
                if (d >= 64) {
                    w->seen = 0;
                } else {
                    w->seen <<= d;
                }
                if (w->last > 0 && d <= 64) {
                    w->seen |= 1ULL << (d - 1);     /* the old highest */
                }
                w->last = (uint32_t) q;
            }
        }
    }

    st.received++;
    t_last_delivery = g_now;

    if (senders != NULL && senders[s].inflight != NULL) {
        inflight_t  *f = &senders[s].inflight[q % WIN_RING];

        if (f->seq == q && f->left > 0 && --f->left == 0) {
            pev_t  all;

            memset(&all, 0, sizeof(all));
            on_send_done(senders[s].c, &all, 0, 1);
        }
    }

    if (t > g_now) {
        st.neg_latency++;
        lat = 0;
    } else {
        lat = g_now - t;
    }
    h_record(&h_lat, lat);
}


/*
 * A send is answered: by its ack, by an error for its ref, or by the
 * sender's own copy (nchan; any protocol with --window-on echo).  Only
 * "complete" answers free a place in the closed-loop window.
 */
static void
on_send_done(conn_t *c, const pev_t *ev, int refused, int complete)
{
    sender_t    *s;
    const char  *a;
    uint64_t     t;

    if (c->sender < 0) {
        return;
    }
    s = &senders[c->sender];
    if (complete && s->outstanding > 0) {
        s->outstanding--;
    }
    if (ev->ref != NULL && ev->ref_len > 0) {
        t = parse_u64(ev->ref, ev->ref + ev->ref_len, &a);
        if (!refused && t > 0 && t <= g_now) {
            h_record(&h_ack, g_now - t);
            st.acks_ref++;
        }
    }
    if (refused && ev->retry_after_ms > 0) {
        s->hold_until = g_now + ev->retry_after_ms * 1000000ULL;
    }
    if (complete && phase == PH_SEND && send_interval_ns == 0) {
        sender_pump(s);
    }
}


static void
on_text(conn_t *c, char *p, size_t n)
{
    pev_t  ev;

    if (text_hook != NULL) {
        text_hook(c, p, n);
        return;
    }

    memset(&ev, 0, sizeof(ev));
    proto->classify(p, n, &ev);

    if (ev.reply != NULL) {
        conn_send_frame(c, 0x1, ev.reply, ev.reply_len);
    }

    switch (ev.kind) {

    case EV_READY:
        st.welcome++;
        send_join(c);
        break;

    case EV_JOINED:
        mark_joined(c);
        break;

    case EV_MESSAGE:
        on_delivery(c, ev.content, ev.content_len);
        if ((!proto->has_acks ? cfg.window_on != WIN_ALL
                              : cfg.window_on == WIN_ECHO)
            && c->sender >= 0)
        {
            /* own message coming back completes the send */
            uint64_t  t, s, q, r;
            pev_t     self;

            if (parse_content(ev.content, ev.content_len, &t, &s, &q, &r) == 0
                && s == (uint64_t) c->sender && r == run_id)
            {
                memset(&self, 0, sizeof(self));
                st.self_acks++;
                on_send_done(c, &self, 0, 1);
            }
        }
        break;

    case EV_ACK:
        st.acks++;
        on_send_done(c, &ev, 0, cfg.window_on == WIN_ACK);
        break;

    case EV_ERROR:
        if (ev.code != NULL) {
            kv_add(&st.errors, ev.code, ev.code_len);
        } else {
            kv_add(&st.errors, "(no code)", 9);
        }
        if (c->join_sent && !c->joined && !c->settled) {
            st.join_failed++;
            settle(c);
        } else if (ev.ref != NULL && c->sender >= 0) {
            /* a refused send is delivered to no one */
            st.refused++;
            st.expected_refused += room_members[c->room];
            on_send_done(c, &ev, 1, 1);
        }
        break;

    case EV_PRESENCE:
        st.presence++;
        break;

    default:
        st.other++;
        break;
    }
}


/* ------------------------------------------------------------------------ */
/* senders                                                                  */

static void
send_one(sender_t *s)
{
    conn_t    *c = s->c;
    char       content[8192], ref[32], payload[9000];
    uint64_t   t;
    size_t     n;
    int        cl;

    t = now_ns();
    s->seq++;
    cl = snprintf(content, sizeof(content), "t=%llu;s=%d;n=%u;r=%u",
                  U64(t), c->sender, s->seq, run_id);
    if (cfg.size > cl && cfg.size < (int) sizeof(content) - 1) {
        if (cfg.size - cl >= 3) {
            memcpy(content + cl, ";p=", 3);
            memset(content + cl + 3, 'x', (size_t) (cfg.size - cl - 3));
            cl = cfg.size;
            content[cl] = '\0';
        }
    }
    snprintf(ref, sizeof(ref), "%llu", U64(t));
    n = proto->encode_send(payload, sizeof(payload), room_names[c->room],
                           content, (size_t) cl, ref);
    if (n == 0) {
        die("message too large to encode");
    }
    conn_send_frame(c, 0x1, payload, n);
    if (s->inflight != NULL) {
        s->inflight[s->seq % WIN_RING].seq = s->seq;
        s->inflight[s->seq % WIN_RING].left = room_members[c->room];
    }
    s->sent++;
    s->outstanding++;
    st.sent++;
    st.expected += room_members[c->room];
}


static void
sender_pump(sender_t *s)
{
    conn_t    *c = s->c;
    uint64_t   behind;
    int        k;

    if (phase != PH_SEND || c == NULL || c->state != CS_OPEN || !c->joined
        || c->broken || c->closing)
    {
        return;
    }

    if (send_interval_ns == 0) {                /* closed loop */
        while (s->outstanding < (uint32_t) cfg.window
               && g_now >= s->hold_until && !c->broken)
        {
            send_one(s);
        }
        return;
    }

    for (k = 0; s->next_ns <= g_now && k < 1000 && !c->broken; k++) {
        behind = g_now - s->next_ns;
        if (behind > st.max_behind_ns) {
            st.max_behind_ns = behind;
        }
        if (g_now < s->hold_until || ws_tx_pending(&c->tx) > WBUF_CAP) {
            st.skipped_backpressure++;
        } else {
            send_one(s);
        }
        s->next_ns += send_interval_ns;
    }
}


/* ------------------------------------------------------------------------ */
/* server CPU and memory from /proc                                         */

typedef struct {
    int       n;
    pid_t     pid[MAX_PIDS];
    uint64_t  ticks[MAX_PIDS];
} pidset_t;


/* current server processes: explicit pids, or pidfile master + children */
static void
server_pids(pidset_t *ps)
{
    const char     *p;
    char           *e = NULL;
    long            v;
    pid_t           master, pp;
    DIR            *d;
    struct dirent  *de;

    ps->n = 0;
    if (cfg.server_pids != NULL) {
        for (p = cfg.server_pids; *p && ps->n < MAX_PIDS; ) {
            v = strtol(p, &e, 10);
            if (e == p) {
                break;
            }
            if (v > 0) {
                ps->pid[ps->n++] = (pid_t) v;
            }
            p = *e ? e + 1 : e;
        }
    }
    /* --server-pidfile F[,F...]: each file's process and its children */
    for (p = cfg.server_pidfile; p != NULL && *p; p = *e ? e + 1 : e) {
        char  path[512];
        int   k, nm = 0;

        e = strchr(p, ',');
        if (e == NULL) {
            e = (char *) p + strlen(p);
        }
        if ((size_t) (e - p) >= sizeof(path) || e == p) {
            continue;
        }
        memcpy(path, p, (size_t) (e - p));
        path[e - p] = '\0';
        master = read_pidfile(path);
        if (master <= 0 || ps->n >= MAX_PIDS) {
            continue;
        }
        for (k = 0; k < ps->n; k++) {
            nm += ps->pid[k] == master;
        }
        if (nm) {
            continue;
        }
        ps->pid[ps->n++] = master;
        d = opendir("/proc");
        if (d == NULL) {
            continue;
        }
        while ((de = readdir(d)) != NULL && ps->n < MAX_PIDS) {
            if (!isdigit((u_char) de->d_name[0])) {
                continue;
            }
            v = atol(de->d_name);
            pp = 0;
            if (v != master && proc_stat((pid_t) v, NULL, &pp) == 0
                && pp == master)
            {
                ps->pid[ps->n++] = (pid_t) v;
            }
        }
        closedir(d);
    }
}


static void
server_cpu_sample(pidset_t *ps)
{
    int  i;

    server_pids(ps);
    for (i = 0; i < ps->n; i++) {
        if (proc_stat(ps->pid[i], &ps->ticks[i], NULL) != 0) {
            ps->ticks[i] = 0;
        }
    }
}


/* CPU seconds between two samples; a process new in b counts fully */
static double
server_cpu_delta(const pidset_t *a, const pidset_t *b)
{
    uint64_t  sum = 0;
    int       i, j;

    for (j = 0; j < b->n; j++) {
        uint64_t  base = 0;

        for (i = 0; i < a->n; i++) {
            if (a->pid[i] == b->pid[j]) {
                base = a->ticks[i];
                break;
            }
        }
        if (b->ticks[j] >= base) {
            sum += b->ticks[j] - base;
        }
    }
    return (double) sum / (double) sysconf(_SC_CLK_TCK);
}


/* summed PSS (or RSS) of the server processes, in kB */
static uint64_t
server_mem_kb(void)
{
    pidset_t  ps;
    char      path[64], line[256];
    FILE     *f;
    uint64_t  total = 0, v;
    int       i, found;

    server_pids(&ps);
    for (i = 0; i < ps.n; i++) {
        found = 0;
        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int) ps.pid[i]);
        f = fopen(path, "r");
        if (f != NULL) {
            while (fgets(line, sizeof(line), f) != NULL) {
                if (sscanf(line, "Pss: %" SCNu64, &v) == 1) {
                    total += v;
                    found = 1;
                    break;
                }
            }
            fclose(f);
        }
        if (found) {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%d/status", (int) ps.pid[i]);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        while (fgets(line, sizeof(line), f) != NULL) {
            if (sscanf(line, "VmRSS: %" SCNu64, &v) == 1) {
                total += v;
                break;
            }
        }
        fclose(f);
    }
    return total;
}


/*
 * Machine-wide CPU from the first line of /proc/stat, in seconds:
 * proc = user + nice + system (processes), irq = irq + softirq (loopback
 * TCP is mostly softirq work, charged to no process).
 */
static void
machine_cpu(double *proc, double *irq)
{
    FILE                *f;
    unsigned long long   u = 0, ni = 0, sy = 0, id = 0, io = 0, hi = 0, si = 0;
    double               hz = (double) sysconf(_SC_CLK_TCK);

    *proc = *irq = 0;
    f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return;
    }
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id,
               &io, &hi, &si) == 7)
    {
        *proc = (double) (u + ni + sy) / hz;
        *irq = (double) (hi + si) / hz;
    }
    fclose(f);
}


static double
self_cpu(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}


/* ------------------------------------------------------------------------ */
/* setup                                                                    */

static void
resolve_target(void)
{
    struct in_addr  sb;

    resolve_loopback(cfg.host, cfg.port, &dst_addr, &dst_len, host_hdr,
                     sizeof(host_hdr));
    dst_family = dst_addr.ss_family;

    if (cfg.src_ips > 0) {
        if (dst_family != AF_INET) {
            die("--src-ips needs an IPv4 target");
        }
        if (inet_pton(AF_INET, cfg.src_base, &sb) != 1
            || (ntohl(sb.s_addr) >> 24) != 127)
        {
            die("--src-base must be a 127.x.x.x address");
        }
        src_base_ip = ntohl(sb.s_addr);
        if (((src_base_ip + (uint32_t) cfg.src_ips - 1) >> 24) != 127) {
            die("--src-ips leaves 127.0.0.0/8");
        }
    }
}


static rlim_t
raise_nofile(void)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 1024;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
        (void) getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}


static void
on_signal(int sig)
{
    if (sig == SIGUSR1) {
        g_go = 1;
        return;
    }
    g_interrupted++;
}


/*
 * Which connections send: 0..S-1, unless --recv-only (a process of a split
 * generator whose rooms' senders are in another process: --senders S still
 * says how many there are, so their messages are recognised and checked for
 * duplicates and order, but nothing is sent from here).
 */
static void
assign_senders(void)
{
    int  i;

    for (i = 0; i < cfg.conns; i++) {
        conns[i].sender = !cfg.recv_only && i < cfg.senders ? i : -1;
    }
    for (i = 0; i < cfg.senders; i++) {
        senders[i].c = cfg.recv_only ? NULL : &conns[i];
    }
}


/* --barrier FILE: say "joined" (the file appears, atomically) */
static void
barrier_ready(void)
{
    char   tmp[1024];
    FILE  *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.barrier);
    f = fopen(tmp, "w");
    if (f == NULL) {
        die("--barrier %s: %s", cfg.barrier, strerror(errno));
    }
    fprintf(f, "%d %llu\n", (int) getpid(), U64(st.joined));
    if (fclose(f) != 0 || rename(tmp, cfg.barrier) != 0) {
        die("--barrier %s: %s", cfg.barrier, strerror(errno));
    }
}


/*
 * --json-buckets: the histogram's non-empty buckets as [value_ns, count]
 * pairs (value = the bucket's representative, what h_quantile returns), so
 * the histograms of several processes can be merged exactly: percentiles of
 * a merged run come from the summed counts, never from averaged percentiles.
 */
static void
json_hist_buckets(FILE *f, const char *name, const hist_t *h)
{
    int          i;
    const char  *sep = "";

    fprintf(f, ",\"%s\":{\"n\":%llu,\"min_ns\":%llu,\"max_ns\":%llu,"
            "\"sum_ns\":%.0f,\"b\":[", name, U64(h->n), U64(h->min),
            U64(h->max), h->sum);
    for (i = 0; i < H_BUCKETS; i++) {
        if (h->b[i] != 0) {
            fprintf(f, "%s[%llu,%llu]", sep, U64(h_value(i)), U64(h->b[i]));
            sep = ",";
        }
    }
    fprintf(f, "]}");
}


/* ------------------------------------------------------------------------ */
/* self test: framing under every segmentation, SHA-1, histogram, parsing   */

static int     st_texts;
static char    st_last[80000];
static size_t  st_last_len;
static size_t  st_total_bytes;


static void
selftest_hook(conn_t *c, const char *p, size_t n)
{
    (void) c;
    st_texts++;
    st_total_bytes += n;
    if (n <= sizeof(st_last)) {
        memcpy(st_last, p, n);
        st_last_len = n;
    }
}


/* a server (unmasked) frame */
static size_t
srv_frame(char *out, int fin, int op, const char *p, size_t n)
{
    size_t  h = 2, i;

    out[0] = (char) ((fin ? 0x80 : 0) | op);
    if (n < 126) {
        out[1] = (char) n;
    } else if (n < 65536) {
        out[1] = 126;
        out[2] = (char) (n >> 8);
        out[3] = (char) n;
        h = 4;
    } else {
        out[1] = 127;
        for (i = 0; i < 8; i++) {
            out[2 + i] = (char) ((uint64_t) n >> (56 - 8 * i));
        }
        h = 10;
    }
    memcpy(out + h, p, n);
    return h + n;
}


#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "selftest FAILED at line %d: ", __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            return 1;                                                        \
        }                                                                    \
        passed++;                                                            \
    } while (0)


static int
selftest(void)
{
    static char  stream[300000], big[70000], mid[300];
    char         acc[32], tmp[64];
    size_t       len = 0, off, chunk, i;
    int          passed = 0, round, pongs;
    conn_t       c;
    hist_t      *h;
    pev_t        ev;
    uint64_t     t, s, q, r;
    const char  *msg = "{\"type\":\"message\",\"room\":\"r1\",\"id\":\"7\","
                       "\"user\":\"u1\",\"content\":\"t=123;s=4;n=5;r=6\","
                       "\"ts\":1}";

    /* RFC 6455 section 1.3 example */
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc);
    CHECK(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "accept %s", acc);

    /* SHA-1 of "abc" and of a two-block message */
    {
        uint8_t  d[20];
        char     hex[41];

        sha1("abc", 3, d);
        for (i = 0; i < 20; i++) {
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        }
        CHECK(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0,
              "sha1(abc) %s", hex);
        sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
             d);
        for (i = 0; i < 20; i++) {
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        }
        CHECK(strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0,
              "sha1(448 bits) %s", hex);
    }

    /* adapter classification */
    memset(&ev, 0, sizeof(ev));
    chat_classify(msg, strlen(msg), &ev);
    CHECK(ev.kind == EV_MESSAGE && ev.content_len == 17, "classify message");
    CHECK(parse_content(ev.content, ev.content_len, &t, &s, &q, &r) == 0
          && t == 123 && s == 4 && q == 5 && r == 6, "parse content");
    memset(&ev, 0, sizeof(ev));
    chat_classify("{\"type\" : \"ack\", \"ref\" : \"99\", \"id\":\"3\"}", 39,
                  &ev);
    CHECK(ev.kind == EV_ACK && ev.ref_len == 2 && memcmp(ev.ref, "99", 2) == 0,
          "classify ack");
    memset(&ev, 0, sizeof(ev));
    {
        const char  *e = "{\"type\":\"error\",\"code\":\"rate_limited\","
                         "\"message\":\"x\",\"ref\":\"5\","
                         "\"retry_after_ms\":250}";

        chat_classify(e, strlen(e), &ev);
    }
    CHECK(ev.kind == EV_ERROR && ev.code_len == 12 && ev.retry_after_ms == 250
          && ev.ref_len == 1, "classify error");
    memset(&ev, 0, sizeof(ev));
    {
        /* a user named "type" must not confuse the scan */
        const char  *e = "{\"user\":\"type\",\"type\":\"joined\",\"members\":3}";

        chat_classify(e, strlen(e), &ev);
    }
    CHECK(ev.kind == EV_JOINED, "classify joined after decoy");

    /* Socket.IO adapter */
    {
        static const struct {
            const char  *in;
            ev_kind_e    kind;
            const char  *reply, *field;     /* field: content, ref or code */
        } sio[] = {
            { "0{\"sid\":\"a\",\"pingInterval\":25000}", EV_OTHER, "40", NULL },
            { "2", EV_OTHER, "3", NULL },
            { "40{\"sid\":\"b\"}", EV_READY, NULL, NULL },
            { "431[{\"ok\":true,\"room\":\"r\"}]", EV_JOINED, NULL, NULL },
            { "43123456789[{\"ok\":true,\"id\":\"5\"}]", EV_ACK, NULL,
              "123456789" },
            { "4377[{\"ok\" : false,\"error\":\"not_member\"}]", EV_ERROR,
              NULL, "not_member" },
            { "42[\"receive-message\",{\"room\":\"r\",\"id\":\"1\","
              "\"user\":\"content\",\"content\":\"t=1;s=2;n=3;r=4\","
              "\"ts\":5}]", EV_MESSAGE, NULL, "t=1;s=2;n=3;r=4" },
            { "42[\"user-joined\",{\"room\":\"r\",\"user\":\"u\"}]",
              EV_PRESENCE, NULL, NULL },
            { "44{\"message\":\"nope\"}", EV_ERROR, NULL, "connect_error" },
            { "3", EV_OTHER, NULL, NULL },
        };
        char    buf[256];
        size_t  k, fl;

        for (k = 0; k < sizeof(sio) / sizeof(sio[0]); k++) {
            const char  *f = NULL;

            memset(&ev, 0, sizeof(ev));
            sio_classify(sio[k].in, strlen(sio[k].in), &ev);
            CHECK(ev.kind == sio[k].kind, "sio kind %zu: %d", k, ev.kind);
            CHECK(sio[k].reply == NULL
                  ? ev.reply == NULL
                  : ev.reply != NULL && ev.reply_len == strlen(sio[k].reply)
                    && memcmp(ev.reply, sio[k].reply, ev.reply_len) == 0,
                  "sio reply %zu", k);
            fl = 0;
            if (ev.kind == EV_MESSAGE) {
                f = ev.content;
                fl = ev.content_len;
            } else if (ev.kind == EV_ACK) {
                f = ev.ref;
                fl = ev.ref_len;
            } else if (ev.kind == EV_ERROR) {
                f = ev.code;
                fl = ev.code_len;
            }
            CHECK(sio[k].field == NULL || (f != NULL && fl == strlen(sio[k].field)
                  && memcmp(f, sio[k].field, fl) == 0), "sio field %zu", k);
        }
        fl = sio_encode_send(buf, sizeof(buf), "r1", "t=1", 3, "99");
        CHECK(fl > 0 && strcmp(buf, "4299[\"send-message\",{\"room\":\"r1\","
                                    "\"content\":\"t=1\"}]") == 0, "sio send %s",
              buf);
        fl = sio_encode_join(buf, sizeof(buf), "r1");
        CHECK(fl > 0 && strcmp(buf, "421[\"join-room\",\"r1\"]") == 0,
              "sio join %s", buf);
        sio_target(buf, sizeof(buf), "/socket.io/", "u1", "r1");
        CHECK(strcmp(buf, "/socket.io/?EIO=4&transport=websocket&user=u1") == 0,
              "sio target %s", buf);

        /* nchan adapter */
        nchan_target(buf, sizeof(buf), "/pubsub", "u1", "r1");
        CHECK(strcmp(buf, "/pubsub/r1") == 0, "nchan target %s", buf);
        CHECK(nchan_encode_join(buf, sizeof(buf), "r1") == 0, "nchan join");
        CHECK(nchan_encode_send(buf, sizeof(buf), "r1", "t=1;x", 5, "9") == 5
              && memcmp(buf, "t=1;x", 5) == 0, "nchan send");
        memset(&ev, 0, sizeof(ev));
        nchan_classify("t=1;s=0;n=1;r=2", 15, &ev);
        CHECK(ev.kind == EV_MESSAGE && ev.content_len == 15, "nchan message");
    }

    /* duplicates are dropped, late arrivals counted as reordered */
    {
        static const unsigned  seqs[] = { 1, 3, 2, 2, 5, 4, 1, 200, 100, 199,
                                          199 };
        char     m[64];
        size_t   k;
        conn_t   rc;

        memset(&rc, 0, sizeof(rc));
        cfg.rooms = 1;
        cfg.senders = 1;
        run_id = 7;
        g_now = 1000;
        for (k = 0; k < sizeof(seqs) / sizeof(seqs[0]); k++) {
            snprintf(m, sizeof(m), "t=1;s=0;n=%u;r=7", seqs[k]);
            on_delivery(&rc, m, strlen(m));
        }
        /* received 1 3 2 5 4 200 100 199; dup 2 1 199; reordered 2 4 100 199 */
        CHECK(st.received == 8 && st.dup == 3 && st.reorder == 4,
              "seq window: received %llu dup %llu reordered %llu",
              U64(st.received), U64(st.dup), U64(st.reorder));
        free(rc.lastseq);
        memset(&st, 0, sizeof(st));
        memset(&h_lat, 0, sizeof(h_lat));
        cfg.rooms = cfg.senders = 0;
        run_id = 0;
    }

    /* split generator: who sends, what a receive-only process accepts */
    {
        conn_t    cs[3];
        sender_t  ss[3];
        char      m[64];

        memset(cs, 0, sizeof(cs));
        memset(ss, 0, sizeof(ss));
        conns = cs;
        senders = ss;
        cfg.conns = 3;
        cfg.senders = 2;
        cfg.recv_only = 0;
        assign_senders();
        CHECK(cs[0].sender == 0 && cs[1].sender == 1 && cs[2].sender == -1
              && ss[1].c == &cs[1], "senders 0 and 1");
        cfg.recv_only = 1;
        assign_senders();
        CHECK(cs[0].sender == -1 && cs[1].sender == -1 && ss[0].c == NULL
              && ss[1].c == NULL, "--recv-only: no sender here");

        /* sender 0 of run 42 sends from another process */
        senders = NULL;
        cfg.rooms = 1;
        cfg.senders = 1;
        run_id = 42;
        g_now = 1000;
        for (i = 1; i <= 3; i++) {
            snprintf(m, sizeof(m), "t=%zu;s=0;n=%zu;r=42", 900 + i, i);
            on_delivery(&cs[2], m, strlen(m));
        }
        on_delivery(&cs[2], "t=1;s=0;n=4;r=43", 16);     /* other run */
        on_delivery(&cs[2], "t=1;s=1;n=5;r=42", 16);     /* no such sender */
        CHECK(st.received == 3 && st.foreign == 2 && st.dup == 0
              && st.reorder == 0 && h_lat.n == 3 && h_lat.max == 99,
              "--recv-only deliveries: received %llu foreign %llu",
              U64(st.received), U64(st.foreign));
        free(cs[2].lastseq);
        memset(&st, 0, sizeof(st));
        memset(&h_lat, 0, sizeof(h_lat));
        cfg.rooms = cfg.senders = cfg.conns = cfg.recv_only = 0;
        run_id = 0;
        conns = NULL;
    }

    /* --json-buckets: the dump gives back every count and percentile */
    {
        static const double  qs[] = { 0.5, 0.9, 0.99, 0.999, 1.0 };
        char                *dump = NULL, *p;
        size_t               dl = 0, k;
        uint64_t             v, cnt, tot = 0, acc, rank, got;
        FILE                *f;
        int                  nb = 0, used;
        static uint64_t      bv[H_BUCKETS], bc[H_BUCKETS];

        h = calloc(1, sizeof(hist_t));
        for (i = 0; i < 20000; i++) {
            h_record(h, 1000 + rng64() % (i % 10 ? 3000000 : 90000000));
        }
        f = open_memstream(&dump, &dl);
        json_hist_buckets(f, "latency_hist", h);
        fclose(f);
        p = strstr(dump, "\"b\":[");
        CHECK(p != NULL && strstr(dump, "\"n\":20000,") != NULL,
              "bucket dump %.80s", dump);
        p += 5;
        while (sscanf(p, "[%" SCNu64 ",%" SCNu64 "]%n", &v, &cnt, &used) == 2)
        {
            CHECK(nb == 0 || v > bv[nb - 1], "bucket order");
            bv[nb] = v;
            bc[nb++] = cnt;
            tot += cnt;
            p += used;
            if (*p == ',') {
                p++;
            }
        }
        CHECK(tot == 20000 && strcmp(p, "]}") == 0, "bucket total %llu",
              U64(tot));
        /* the walk bench/cbmerge.js does over merged buckets */
        for (k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
            rank = (uint64_t) (qs[k] * 20000);
            if ((double) rank < qs[k] * 20000) {
                rank++;
            }
            got = 0;
            for (acc = 0, i = 0; i < (size_t) nb; i++) {
                acc += bc[i];
                if (acc >= rank) {
                    got = bv[i] > h->max ? h->max
                          : bv[i] < h->min ? h->min : bv[i];
                    break;
                }
            }
            CHECK(got == h_quantile(h, qs[k]), "q %.3f: %llu vs %llu", qs[k],
                  U64(got), U64(h_quantile(h, qs[k])));
        }
        free(dump);
        free(h);
    }

    /* histogram */
    h = calloc(1, sizeof(hist_t));
    for (i = 1; i <= 100000; i++) {
        h_record(h, (uint64_t) i * 1000);       /* 1 us .. 100 ms */
    }
    t = h_quantile(h, 0.5);
    CHECK(t > 49000000ULL && t < 51000000ULL, "p50 %llu", U64(t));
    t = h_quantile(h, 0.99);
    CHECK(t > 97500000ULL && t < 100500000ULL, "p99 %llu", U64(t));
    CHECK(h_quantile(h, 1.0) == 100000000ULL, "max");
    for (i = 0; i < 5000000000ULL; i = i * 3 + 1) {
        CHECK(h_value(h_index(i)) <= i + i / 60 + 1
              && h_value(h_index(i)) + i / 60 + 1 >= i, "bucket %zu", i);
    }
    free(h);

    /* a stream of server frames */
    len += srv_frame(stream + len, 1, 1, "{\"type\":\"welcome\"}", 18);
    memset(mid, 'm', sizeof(mid));
    len += srv_frame(stream + len, 1, 1, mid, sizeof(mid));
    len += srv_frame(stream + len, 1, 9, "ping!", 5);
    for (i = 0; i < sizeof(big); i++) {
        big[i] = (char) ('a' + i % 26);
    }
    len += srv_frame(stream + len, 1, 1, big, sizeof(big));
    /* fragmented text with a ping in the middle */
    len += srv_frame(stream + len, 0, 1, "frag-", 5);
    len += srv_frame(stream + len, 1, 9, "", 0);
    len += srv_frame(stream + len, 0, 0, "ment", 4);
    len += srv_frame(stream + len, 1, 0, "ed", 2);
    len += srv_frame(stream + len, 1, 10, "pong", 4);
    len += srv_frame(stream + len, 1, 1, msg, strlen(msg));

    text_hook = selftest_hook;
    for (round = 0; round < 400; round++) {
        conn_init(&c, 0);
        c.state = CS_OPEN;
        st_texts = 0;
        st_total_bytes = 0;
        for (off = 0; off < len; off += chunk) {
            if (round == 0) {
                chunk = 1;                              /* byte by byte */
            } else if (round == 1) {
                chunk = len;                            /* all at once */
            } else {
                chunk = 1 + rng64() % (round < 200 ? 16 : 9000);
            }
            if (chunk > len - off) {
                chunk = len - off;
            }
            ws_rx_feed(&c.rx, stream + off, chunk);
            if (c.broken) {
                break;
            }
        }
        CHECK(!c.broken, "parser error in round %d", round);
        CHECK(st_texts == 5, "round %d: %d texts", round, st_texts);
        CHECK(st_total_bytes == 18 + sizeof(mid) + sizeof(big) + 11
              + strlen(msg), "round %d: bytes %zu", round, st_total_bytes);
        CHECK(st_last_len == strlen(msg)
              && memcmp(st_last, msg, st_last_len) == 0, "last message");
        CHECK(c.rx.rlen == 0 && !c.rx.in_msg, "leftover");

        /* two pongs were queued, masked, echoing the ping payloads */
        pongs = 0;
        for (off = 0; off < c.tx.wlen; ) {
            uint8_t  *b = (uint8_t *) c.tx.wbuf + off;
            size_t    pl = b[1] & 0x7f;

            CHECK(b[0] == 0x8A && (b[1] & 0x80), "pong header");
            if (pongs == 0) {
                for (i = 0; i < pl; i++) {
                    tmp[i] = (char) (b[6 + i] ^ b[2 + (i & 3)]);
                }
                CHECK(pl == 5 && memcmp(tmp, "ping!", 5) == 0, "pong payload");
            }
            pongs++;
            off += 6 + pl;
        }
        CHECK(pongs == 2, "pongs %d", pongs);
        ws_rx_free(&c.rx);
        ws_tx_free(&c.tx);
    }
    text_hook = NULL;

    /* protocol errors are caught */
    conn_init(&c, 0);
    c.state = CS_OPEN;
    len = srv_frame(stream, 1, 0, "x", 1);
    ws_rx_feed(&c.rx, stream, len);
    CHECK(c.broken, "stray continuation accepted");
    ws_rx_free(&c.rx);

    /* our client frames round-trip (masking) */
    {
        char      fr[70100];
        size_t    fl = ws_frame(fr, 1, big, sizeof(big));
        uint8_t  *b = (uint8_t *) fr;

        CHECK(fl == sizeof(big) + 14 && (b[1] & 0x7f) == 127 && (b[1] & 0x80),
              "client frame header");
        for (i = 0; i < sizeof(big); i++) {
            if (((uint8_t) fr[14 + i] ^ b[10 + (i & 3)]) != (uint8_t) big[i]) {
                break;
            }
        }
        CHECK(i == sizeof(big), "client frame masking");
    }

    printf("selftest: %d passed, 0 failed\n", passed);
    return 0;
}


/* ------------------------------------------------------------------------ */
/* reporting                                                                */

static void
print_hist(const char *name, const hist_t *h)
{
    if (h->n == 0) {
        printf("%-12s n=0\n", name);
        return;
    }
    printf("%-12s n=%llu  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
           "max %.3f  mean %.3f\n", name, U64(h->n),
           h_quantile(h, 0.5) / NS_PER_MS, h_quantile(h, 0.9) / NS_PER_MS,
           h_quantile(h, 0.99) / NS_PER_MS, h_quantile(h, 0.999) / NS_PER_MS,
           h->max / NS_PER_MS, h->sum / h->n / NS_PER_MS);
}


/* ------------------------------------------------------------------------ */
/* main                                                                     */

static void
usage(FILE *f)
{
    fprintf(f,
"usage: chatbench [options]\n"
"  target\n"
"    --host ADDR            loopback address, 127.x.x.x or ::1 (127.0.0.1)\n"
"    --port N               (8080)\n"
"    --path PATH            endpoint path (protocol default: /chat)\n"
"    --protocol NAME        chat (default), socketio, nchan\n"
"  connections\n"
"    --conns N              connections to open (100)\n"
"    --rooms R              rooms; connection i joins room i %% R (10)\n"
"    --inflight N           max handshakes in flight during the ramp (256)\n"
"    --connect-rate N       max new connections per second (0 = no limit)\n"
"    --connect-timeout S    per connection, until the 101 (10)\n"
"    --join-timeout S       for the whole ramp until all joined (60)\n"
"    --settle S             wait S seconds between the ramp and the sends (0)\n"
"    --src-ips K            bind sources round-robin to K addresses from\n"
"    --src-base A           ... A (127.0.0.1): beats the per-address port limit\n"
"    --room-prefix P        room names P0..P{R-1} (bench-r)\n"
"    --user-prefix P        user names P<i> (b<runid>-)\n"
"  load\n"
"    --senders S            connections 0..S-1 send (default: = rooms)\n"
"    --rate X               messages/s per sender (10); 0 = closed loop\n"
"    --total-rate X         messages/s over all senders (overrides --rate;\n"
"                           0 = closed loop)\n"
"    --window W             closed loop: unacked sends per sender (4)\n"
"    --window-on ack|echo|all  what answers a send in the closed loop: its\n"
"                           ack (default where the protocol has acks), the\n"
"                           sender's own copy (nchan's default), or its\n"
"                           delivery to every member (window <= 256)\n"
"    --size B               pad message content to B bytes\n"
"    --duration S           send phase (or hold time with --idle) (10)\n"
"    --drain S              wait for late deliveries after sending (2)\n"
"    --idle                 open + join, then hold for --duration; no sends\n"
"    --no-dup               skip duplicate/reorder detection\n"
"    --deflate              offer permessage-deflate, inflate what comes\n"
"  measurement and output\n"
"    --server-pids P,P,...  server processes for CPU/memory\n"
"    --server-pidfile F,... pidfiles: each process + its children (nginx\n"
"                           master + workers, postmaster + backends, ...)\n"
"    --json                 one JSON line on stdout (instead of the summary)\n"
"    --quiet                no progress lines on stderr\n"
"    --selftest             run the built-in parser/hash/histogram tests\n"
"  split generator (several processes, one run; see bench/compare GEN_PROCS)\n"
"    --run-id N             the run id in every content (default: random);\n"
"                           the same in every process of one split run\n"
"    --recv-only            these connections only receive: --senders S says\n"
"                           how many senders the rooms have elsewhere; the\n"
"                           drain ends 250 ms after the last delivery\n"
"    --barrier FILE         when all joined (and settled) write FILE, then\n"
"                           wait for SIGUSR1 before sending (or holding)\n"
"    --json-buckets         add the raw latency/ack histogram buckets\n"
"                           (latency_hist, ack_hist) to --json: merge those\n");
}


static double
arg_double(const char *name, const char *v, double lo, double hi)
{
    char    *e;
    double   d = strtod(v, &e);

    if (e == v || *e != '\0' || d < lo || d > hi) {
        die("bad value for --%s: %s", name, v);
    }
    return d;
}


static void
parse_args(int argc, char **argv)
{
    static struct option  opts[] = {
        { "host", 1, 0, 'h' }, { "port", 1, 0, 'p' }, { "path", 1, 0, 'P' },
        { "protocol", 1, 0, 'x' }, { "conns", 1, 0, 'c' },
        { "rooms", 1, 0, 'r' }, { "inflight", 1, 0, 'i' },
        { "connect-rate", 1, 0, 'C' }, { "connect-timeout", 1, 0, 'T' },
        { "join-timeout", 1, 0, 'J' }, { "settle", 1, 0, 'L' },
        { "src-ips", 1, 0, 'k' },
        { "src-base", 1, 0, 'b' }, { "room-prefix", 1, 0, 'R' },
        { "user-prefix", 1, 0, 'U' }, { "senders", 1, 0, 's' },
        { "rate", 1, 0, 'a' }, { "total-rate", 1, 0, 'A' },
        { "window", 1, 0, 'w' }, { "window-on", 1, 0, 'W' },
        { "size", 1, 0, 'z' },
        { "duration", 1, 0, 'd' }, { "drain", 1, 0, 'D' },
        { "idle", 0, 0, 'I' }, { "no-dup", 0, 0, 'N' },
        { "deflate", 0, 0, 'E' },
        { "server-pids", 1, 0, 'S' }, { "server-pidfile", 1, 0, 'F' },
        { "json", 0, 0, 'j' }, { "quiet", 0, 0, 'q' },
        { "selftest", 0, 0, 'Z' }, { "help", 0, 0, '?' },
        { "run-id", 1, 0, 'G' }, { "recv-only", 0, 0, 'O' },
        { "barrier", 1, 0, 'B' }, { "json-buckets", 0, 0, 'H' },
        { NULL, 0, 0, 0 }
    };
    static char  user_prefix[32];
    int          o, i;

    cfg.host = "127.0.0.1";
    cfg.port = 8080;
    cfg.protocol = "chat";
    cfg.conns = 100;
    cfg.rooms = 10;
    cfg.senders = -1;
    cfg.rate = 10;
    cfg.total_rate = -1;                /* unset */
    cfg.window = 4;
    cfg.duration = 10;
    cfg.drain = 2;
    cfg.inflight = 256;
    cfg.connect_timeout = 10;
    cfg.join_timeout = 60;
    cfg.src_base = "127.0.0.1";
    cfg.room_prefix = "bench-r";

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': cfg.host = optarg; break;
        case 'p': cfg.port = (int) arg_double("port", optarg, 1, 65535); break;
        case 'P': cfg.path = optarg; break;
        case 'x': cfg.protocol = optarg; break;
        case 'c': cfg.conns = (int) arg_double("conns", optarg, 1, 1e7); break;
        case 'r': cfg.rooms = (int) arg_double("rooms", optarg, 1, 1e7); break;
        case 'i':
            cfg.inflight = (int) arg_double("inflight", optarg, 1, 1e6);
            break;
        case 'C':
            cfg.connect_rate = arg_double("connect-rate", optarg, 0, 1e7);
            break;
        case 'T':
            cfg.connect_timeout = arg_double("connect-timeout", optarg, 0.01,
                                             1e5);
            break;
        case 'J':
            cfg.join_timeout = arg_double("join-timeout", optarg, 0.01, 1e6);
            break;
        case 'L':
            cfg.settle = arg_double("settle", optarg, 0, 3600);
            break;
        case 'k':
            cfg.src_ips = (int) arg_double("src-ips", optarg, 0, 1 << 20);
            break;
        case 'b': cfg.src_base = optarg; break;
        case 'R': cfg.room_prefix = optarg; break;
        case 'U': cfg.user_prefix = optarg; break;
        case 's':
            cfg.senders = (int) arg_double("senders", optarg, 0, 1e7);
            break;
        case 'a': cfg.rate = arg_double("rate", optarg, 0, 1e7); break;
        case 'A':
            cfg.total_rate = arg_double("total-rate", optarg, 0, 1e9);
            break;
        case 'W':
            if (strcmp(optarg, "echo") == 0) {
                cfg.window_on = WIN_ECHO;
            } else if (strcmp(optarg, "ack") == 0) {
                cfg.window_on = WIN_ACK;
            } else if (strcmp(optarg, "all") == 0) {
                cfg.window_on = WIN_ALL;
            } else {
                die("--window-on: \"ack\", \"echo\" or \"all\"");
            }
            break;
        case 'w':
            cfg.window = (int) arg_double("window", optarg, 1, 1e6);
            break;
        case 'z': cfg.size = (int) arg_double("size", optarg, 0, 8000); break;
        case 'd':
            cfg.duration = arg_double("duration", optarg, 0, 1e6);
            break;
        case 'D': cfg.drain = arg_double("drain", optarg, 0, 1e5); break;
        case 'I': cfg.idle = 1; break;
        case 'N': cfg.no_dup = 1; break;
        case 'E': ws_deflate = 1; break;
        case 'S': cfg.server_pids = optarg; break;
        case 'F': cfg.server_pidfile = optarg; break;
        case 'j': cfg.json = 1; break;
        case 'q': cfg.quiet = 1; break;
        case 'Z': cfg.selftest = 1; break;
        case 'G':
            cfg.run_id = (uint32_t) arg_double("run-id", optarg, 1,
                                               999999999);
            break;
        case 'O': cfg.recv_only = 1; break;
        case 'B': cfg.barrier = optarg; break;
        case 'H': cfg.json_buckets = 1; break;
        case '?':
        default:
            usage(o == '?' && optopt == 0 ? stdout : stderr);
            exit(o == '?' && optopt == 0 ? 0 : 2);
        }
    }
    if (optind < argc) {
        usage(stderr);
        exit(2);
    }

    for (i = 0; protocols[i] != NULL; i++) {
        if (strcmp(protocols[i]->name, cfg.protocol) == 0) {
            proto = protocols[i];
        }
    }
    if (proto == NULL) {
        die("unknown --protocol %s", cfg.protocol);
    }
    if (cfg.path == NULL) {
        cfg.path = proto->default_path;
    }
    if (cfg.senders < 0) {
        cfg.senders = cfg.rooms;
    }
    if (cfg.senders > cfg.conns && !cfg.recv_only) {
        cfg.senders = cfg.conns;
    }
    if (cfg.idle) {
        cfg.senders = 0;
    }

    run_id = cfg.run_id != 0
             ? cfg.run_id
             : (uint32_t) (splitmix64((uint64_t) getpid() ^ now_ns())
                           % 1000000000u);
    if (cfg.user_prefix == NULL) {
        snprintf(user_prefix, sizeof(user_prefix), "b%u-", run_id);
        cfg.user_prefix = user_prefix;
    }
}


int
main(int argc, char **argv)
{
    struct epoll_event  *evs;
    struct sigaction     sa;
    pidset_t             cpu_a, cpu_b, cpu_r;
    rlim_t               nofile;
    uint64_t             t_ramp0, t_ramp1 = 0, t_last_open = 0, t_phase0 = 0;
    uint64_t             t_send_end = 0, t_end = 0, t_progress, t_scan = 0;
    uint64_t             next_due = 0, t_settle_end = 0, t_bscan = 0;
    uint32_t             send_cursor = 0;
    uint64_t             mem0 = 0, mem1 = 0, mem2 = 0, expected_net;
    double               cli_cpu0 = 0, cli_cpu1 = 0, srv_cpu = 0, wall = 0;
    double               ramp_s, hs_s, ramp_srv_cpu = 0, ramp_cli_cpu = 0;
    double               mach_proc0 = 0, mach_proc1 = 0, mach_irq0 = 0;
    double               mach_irq1 = 0;
    int                  n, i, k, timeout, have_server, max_evs = 1024;
    char                 name[256];

    memset(&cpu_b, 0, sizeof(cpu_b));
    parse_args(argc, argv);
    bench_rng ^= splitmix64(now_ns() ^ (uint64_t) getpid());

    if (cfg.selftest) {
        return selftest();
    }

    resolve_target();

    nofile = raise_nofile();
    if ((rlim_t) cfg.conns + 32 > nofile) {
        fprintf(stderr, "chatbench: warning: %d connections but RLIMIT_NOFILE "
                "is %llu; expect socket failures\n", cfg.conns, U64(nofile));
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    conns = calloc((size_t) cfg.conns, sizeof(conn_t));
    senders = calloc((size_t) cfg.senders + 1, sizeof(sender_t));
    room_members = calloc((size_t) cfg.rooms, sizeof(uint32_t));
    room_names = calloc((size_t) cfg.rooms, sizeof(char *));
    evs = calloc((size_t) max_evs, sizeof(*evs));
    if (!conns || !senders || !room_members || !room_names || !evs) {
        die("out of memory");
    }
    for (i = 0; i < cfg.rooms; i++) {
        snprintf(name, sizeof(name), "%s%d", cfg.room_prefix, i);
        room_names[i] = strdup(name);
    }
    for (i = 0; i < cfg.conns; i++) {
        conn_init(&conns[i], (uint32_t) i);
        conns[i].room = (uint32_t) (i % cfg.rooms);
    }
    assign_senders();

    per_sender_rate = cfg.total_rate >= 0 && cfg.senders > 0
                      ? cfg.total_rate / cfg.senders : cfg.rate;
    send_interval_ns = per_sender_rate > 0
                       ? (uint64_t) (1e9 / per_sender_rate) : 0;
    if (per_sender_rate > 0 && send_interval_ns == 0) {
        send_interval_ns = 1;
    }

    if (cfg.window_on == WIN_ALL && send_interval_ns == 0 && !cfg.recv_only)
    {
        if (cfg.window > WIN_RING) {
            die("--window-on all: --window %d is over %d", cfg.window,
                WIN_RING);
        }
        for (i = 0; i < cfg.senders; i++) {
            senders[i].inflight = calloc(WIN_RING, sizeof(inflight_t));
            if (senders[i].inflight == NULL) {
                die("out of memory");
            }
        }
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        die("epoll_create1: %s", strerror(errno));
    }

    have_server = cfg.server_pids != NULL || cfg.server_pidfile != NULL;
    if (have_server) {
        mem0 = server_mem_kb();
    }

    if (!cfg.quiet) {
        fprintf(stderr, "chatbench: run %u, %s://%s%s, %d conns, %d rooms, "
                "%d senders, %s, nofile %llu\n", run_id, proto->name,
                host_hdr, cfg.path, cfg.conns, cfg.rooms, cfg.senders,
                cfg.idle ? "idle" : (send_interval_ns ? "open loop"
                                                      : "closed loop"),
                U64(nofile));
    }

    server_cpu_sample(&cpu_r);
    ramp_cli_cpu = self_cpu();
    g_now = now_ns();
    t_ramp0 = g_now;
    t_progress = g_now + NS_PER_S;
    phase = PH_RAMP;

    while (phase != PH_DONE) {

        /* start connections */
        if (phase == PH_RAMP) {
            while (next_conn < cfg.conns && n_inflight < cfg.inflight
                   && !g_interrupted)
            {
                if (cfg.connect_rate > 0
                    && (double) next_conn >= (double) (g_now - t_ramp0)
                                             / 1e9 * cfg.connect_rate)
                {
                    break;
                }
                conn_start(&conns[next_conn++]);
            }
        }

        if (phase == PH_SEND && send_interval_ns > 0 && !cfg.recv_only) {
            /* sleep until the earliest sender is due (ms granularity) */
            timeout = next_due <= g_now ? 0
                      : (int) ((next_due - g_now + 999999) / 1000000);
            if (timeout > 10) {
                timeout = 10;
            }
        } else if (phase == PH_RAMP || phase == PH_SEND || phase == PH_DRAIN) {
            timeout = 10;
        } else {
            timeout = 100;
        }

        n = epoll_wait(epfd, evs, max_evs, timeout);
        if (n < 0 && errno != EINTR) {
            die("epoll_wait: %s", strerror(errno));
        }
        g_now = now_ns();
        for (i = 0; i < n; i++) {
            conn_on_event(evs[i].data.ptr, evs[i].events);
        }
        g_now = now_ns();

        /* handshake timeouts, every 100 ms */
        if (phase == PH_RAMP && g_now >= t_scan) {
            uint64_t  lim = (uint64_t) (cfg.connect_timeout * 1e9);

            t_scan = g_now + 100000000ULL;
            for (i = 0; i < next_conn; i++) {
                conn_t  *c = &conns[i];

                if ((c->state == CS_CONNECTING || c->state == CS_HANDSHAKE)
                    && g_now - c->t_start > lim)
                {
                    st.timeouts++;
                    conn_close(c, c->state == CS_CONNECTING
                                  ? "connect: timeout" : "handshake: timeout");
                }
            }
        }

        if (st.opened > 0 && n_inflight == 0 && next_conn == cfg.conns
            && t_last_open == 0)
        {
            t_last_open = g_now;
        }

        switch (phase) {

        case PH_RAMP:
            if ((next_conn == cfg.conns && n_pending == 0)
                || g_now - t_ramp0 > (uint64_t) (cfg.join_timeout * 1e9)
                || g_interrupted)
            {
                t_ramp1 = g_now;
                if (t_last_open == 0) {
                    t_last_open = g_now;
                }
                if (have_server) {
                    mem1 = server_mem_kb();
                }
                if (!cfg.quiet) {
                    fprintf(stderr, "chatbench: ramp done in %.2f s: "
                            "%llu open, %llu joined, %llu failed\n",
                            (t_ramp1 - t_ramp0) / 1e9, U64(st.opened),
                            U64(st.joined),
                            U64(st.connect_failed + st.hs_failed));
                }
                server_cpu_sample(&cpu_b);
                ramp_srv_cpu = server_cpu_delta(&cpu_r, &cpu_b);
                ramp_cli_cpu = self_cpu() - ramp_cli_cpu;
                if (g_interrupted || st.joined == 0) {
                    phase = PH_DONE;
                    break;
                }
                if (cfg.settle > 0) {
                    /* let the server finish what the joins started */
                    t_settle_end = g_now + (uint64_t) (cfg.settle * 1e9);
                    phase = PH_SETTLE;
                    break;
                }
            } else {
                break;                  /* still ramping */
            }
            /* fall through: start sending (or holding) now */

        case PH_SETTLE:
            if (phase == PH_SETTLE && g_now < t_settle_end && !g_interrupted)
            {
                break;
            }
            if (cfg.barrier != NULL && !g_interrupted) {
                barrier_ready();
                if (!cfg.quiet) {
                    fprintf(stderr, "chatbench: at the barrier (%s), waiting "
                            "for SIGUSR1\n", cfg.barrier);
                }
                phase = PH_WAIT;
                break;
            }
            /* fall through */

        case PH_WAIT:
            if (phase == PH_WAIT && !g_go && !g_interrupted) {
                break;
            }
            {
                if (g_interrupted) {
                    phase = PH_DONE;
                    break;
                }
                server_cpu_sample(&cpu_a);
                cli_cpu0 = self_cpu();
                machine_cpu(&mach_proc0, &mach_irq0);
                t_phase0 = g_now;
                if (cfg.idle) {
                    phase = PH_HOLD;
                } else {
                    phase = PH_SEND;
                    for (i = 0; i < cfg.senders; i++) {
                        senders[i].next_ns = g_now + (uint64_t) ((double)
                            send_interval_ns * i / cfg.senders);
                    }
                }
            }
            break;

        case PH_SEND:
            if (cfg.recv_only) {
                /* nothing to send: the senders are in another process */

            } else if (send_interval_ns == 0) {     /* closed loop */
                for (i = 0; i < cfg.senders; i++) {
                    sender_pump(&senders[i]);
                }

            } else {
                /*
                 * paced: the senders are due in a fixed cyclic order (same
                 * interval, evenly staggered), so only those from the cursor
                 * on that are due are looked at: O(due), not O(senders), per
                 * loop turn (scanning all 5,000 W2 senders every turn cost
                 * the load generator a third of its CPU)
                 */
                for (k = 0; k < cfg.senders; k++) {
                    sender_t  *s = &senders[send_cursor];

                    if (s->next_ns > g_now) {
                        break;
                    }
                    sender_pump(s);
                    while (s->next_ns <= g_now) {
                        s->next_ns += send_interval_ns;  /* not open: skip */
                    }
                    if (++send_cursor == (uint32_t) cfg.senders) {
                        send_cursor = 0;
                    }
                }
                next_due = senders[send_cursor].next_ns;
            }
            if (g_now >= t_bscan && !cfg.recv_only) {
                t_bscan = g_now + 100000000ULL;
                for (i = 0; i < cfg.senders; i++) {
                    conn_t  *c = senders[i].c;

                    if (c->state != CS_CLOSED && c->broken) {
                        conn_close(c, "client: write error");
                    }
                }
            }
            if (g_now - t_phase0 >= (uint64_t) (cfg.duration * 1e9)
                || g_interrupted)
            {
                t_send_end = g_now;
                phase = PH_DRAIN;
                g_interrupted = 0;
            }
            break;

        case PH_DRAIN:
            /*
             * done when everything expected is in; a --recv-only process
             * expects nothing it knows of, so it is done when deliveries
             * have stopped (250 ms without one)
             */
            if (g_now - t_send_end >= (uint64_t) (cfg.drain * 1e9)
                || g_interrupted
                || (!cfg.recv_only
                    && st.received >= st.expected - st.expected_refused
                    && (!proto->has_acks || st.acks + st.refused >= st.sent))
                || (cfg.recv_only
                    && g_now - (t_last_delivery > t_send_end
                                ? t_last_delivery : t_send_end)
                       >= 250000000ULL))
            {
                phase = PH_DONE;
            }
            break;

        case PH_HOLD:
            if (g_now - t_phase0 >= (uint64_t) (cfg.duration * 1e9)
                || g_interrupted)
            {
                phase = PH_DONE;
            }
            break;
        }

        if (phase == PH_DONE) {
            t_end = g_now;
            if (t_phase0 != 0) {
                server_cpu_sample(&cpu_b);
                cli_cpu1 = self_cpu();
                srv_cpu = server_cpu_delta(&cpu_a, &cpu_b);
                machine_cpu(&mach_proc1, &mach_irq1);
                wall = (t_end - t_phase0) / 1e9;
            }
            if (have_server) {
                mem2 = server_mem_kb();
            }
        }

        if (!cfg.quiet && g_now >= t_progress && phase != PH_DONE) {
            t_progress += NS_PER_S;
            fprintf(stderr, "  [%6.1fs %-5s] open %llu joined %llu fail %llu "
                    "sent %llu recv %llu/%llu acks %llu\n",
                    (g_now - t_ramp0) / 1e9, phase_names[phase],
                    U64(st.opened), U64(st.joined),
                    U64(st.connect_failed + st.hs_failed), U64(st.sent),
                    U64(st.received), U64(st.expected), U64(st.acks));
        }
    }

    /* leave politely: a close frame, then the socket */
    for (i = 0; i < next_conn; i++) {
        conn_t  *c = &conns[i];

        if (c->state == CS_OPEN && !c->broken) {
            conn_send_frame(c, 0x8, "\x03\xe8", 2);
        }
        conn_close(c, NULL);
    }

    /* ---- report ---- */

    ramp_s = t_ramp1 > t_ramp0 ? (t_ramp1 - t_ramp0) / 1e9 : 0;
    hs_s = t_last_open > t_ramp0 ? (t_last_open - t_ramp0) / 1e9 : 0;
    expected_net = st.expected - st.expected_refused;
    {
        double    send_s = t_send_end > t_phase0 ? (t_send_end - t_phase0) / 1e9
                                                 : 0;
        double    cli_cpu = cli_cpu1 - cli_cpu0;
        uint64_t  lost = expected_net > st.received
                         ? expected_net - st.received : 0;
        double    dps = srv_cpu > 0 ? st.received / srv_cpu : 0;
        double    dwin = t_last_delivery > t_phase0 && t_phase0 != 0
                         ? (t_last_delivery - t_phase0) / 1e9 : 0;
        double    drate = dwin > 0 ? st.received / dwin : 0;
        double    conn_rate = hs_s > 0 ? st.opened / hs_s : 0;
        double    per_conn_kb = st.joined > 0 && mem1 >= mem0
                                ? (double) (mem1 - mem0) / st.joined : 0;
        double    irq_cpu = mach_irq1 - mach_irq0;
        double    other_cpu = mach_proc1 - mach_proc0 - cli_cpu - srv_cpu;

        if (other_cpu < 0 || !have_server) {
            other_cpu = have_server ? 0 : -1;
        }

        if (cfg.json) {
            printf("{\"tool\":\"chatbench\",\"protocol\":\"%s\","
                   "\"mode\":\"%s\",\"run\":%u,\"conns\":%d,\"rooms\":%d,"
                   "\"senders\":%d,\"rate_per_sender\":%.3f,\"window\":%d,"
                   "\"window_on\":\"%s\",\"size\":%d,\"duration_s\":%.3f,\"drain_s\":%.3f,"
                   "\"opened\":%llu,\"connect_failed\":%llu,"
                   "\"handshake_failed\":%llu,\"timeouts\":%llu,"
                   "\"joined\":%llu,\"join_failed\":%llu,"
                   "\"closed_after_open\":%llu,"
                   "\"ramp_s\":%.3f,\"connect_rate\":%.1f,"
                   "\"ramp_client_cpu_s\":%.3f,\"ramp_server_cpu_s\":%.3f,"
                   "\"sent\":%llu,\"send_s\":%.3f,\"acks\":%llu,"
                   "\"refused\":%llu,\"expected\":%llu,\"received\":%llu,"
                   "\"lost\":%llu,\"dup_or_reorder\":%llu,\"dup\":%llu,"
                   "\"reordered\":%llu,\"gaps\":%llu,"
                   "\"foreign\":%llu,\"bad_content\":%llu,"
                   "\"presence\":%llu,\"other\":%llu,\"pings\":%llu,"
                   "\"protocol_errors\":%llu,\"skipped_backpressure\":%llu,"
                   "\"max_behind_ms\":%.3f,",
                   proto->name, cfg.idle ? "idle" : send_interval_ns
                   ? "open" : "closed", run_id, cfg.conns, cfg.rooms,
                   cfg.senders, per_sender_rate, cfg.window,
                   cfg.window_on == WIN_ALL ? "all"
                   : cfg.window_on == WIN_ECHO || !proto->has_acks ? "echo"
                   : "ack",
                   cfg.size,
                   cfg.duration, cfg.drain, U64(st.opened),
                   U64(st.connect_failed), U64(st.hs_failed),
                   U64(st.timeouts), U64(st.joined), U64(st.join_failed),
                   U64(st.closed_after_open), ramp_s, conn_rate,
                   ramp_cli_cpu, ramp_srv_cpu,
                   U64(st.sent), send_s, U64(st.acks), U64(st.refused),
                   U64(expected_net), U64(st.received), U64(lost),
                   U64(st.dup + st.reorder), U64(st.dup), U64(st.reorder),
                   U64(st.gaps), U64(st.foreign), U64(st.bad_content), U64(st.presence), U64(st.other),
                   U64(st.pings), U64(st.proto_errors),
                   U64(st.skipped_backpressure), st.max_behind_ns / NS_PER_MS);
            printf("\"settle_s\":%.3f,\"other_cpu_s\":%.3f,"
                   "\"irq_cpu_s\":%.3f,", cfg.settle, other_cpu, irq_cpu);
            printf("\"measured_s\":%.3f,\"client_cpu_s\":%.3f,"
                   "\"server_cpu_s\":%.3f,\"deliveries_per_s\":%.1f,"
                   "\"deliveries_per_server_cpu_s\":%.1f,"
                   "\"server_mem_kb\":[%llu,%llu,%llu],"
                   "\"server_kb_per_conn\":%.2f",
                   wall, cli_cpu, srv_cpu, drate, dps,
                   U64(mem0), U64(mem1), U64(mem2), per_conn_kb);
            json_hist(stdout, "latency_ms", &h_lat);
            json_hist(stdout, "ack_ms", &h_ack);
            printf(",\"recv_only\":%d,\"pid\":%d", cfg.recv_only,
                   (int) getpid());
            if (cfg.json_buckets) {
                json_hist_buckets(stdout, "latency_hist", &h_lat);
                json_hist_buckets(stdout, "ack_hist", &h_ack);
            }
            json_kv(stdout, "failures", &st.fail);
            json_kv(stdout, "errors", &st.errors);
            json_kv(stdout, "closes", &st.closes);
            printf("}\n");
        } else {
            printf("chatbench run %u: %s %s%s, %d conns, %d rooms",
                   run_id, proto->name, host_hdr, cfg.path, cfg.conns,
                   cfg.rooms);
            if (cfg.idle) {
                printf(", idle hold %.1f s\n", cfg.duration);
            } else if (send_interval_ns) {
                printf(", %d senders x %.2f msg/s, %.1f s + drain %.1f s\n",
                       cfg.senders, per_sender_rate, cfg.duration, cfg.drain);
            } else {
                printf(", %d senders closed loop (window %d), %.1f s + drain "
                       "%.1f s\n", cfg.senders, cfg.window, cfg.duration,
                       cfg.drain);
            }
            printf("connections  opened %llu/%d (connect failed %llu, "
                   "handshake failed %llu, timeouts %llu), joined %llu, "
                   "join failed %llu\n", U64(st.opened), cfg.conns,
                   U64(st.connect_failed), U64(st.hs_failed),
                   U64(st.timeouts), U64(st.joined), U64(st.join_failed));
            printf("ramp         %.3f s to all joined; handshakes %.3f s = "
                   "%.0f conn/s; cpu client %.2f s", ramp_s, hs_s, conn_rate,
                   ramp_cli_cpu);
            if (have_server) {
                printf(", server %.2f s (%.1f us per connection)",
                       ramp_srv_cpu, st.opened ? ramp_srv_cpu * 1e6 / st.opened
                                               : 0.0);
            }
            printf("\n");
            if (st.fail.n) {
                printf("failures     ");
                print_kv(stdout, &st.fail);
                printf("\n");
            }
            if (!cfg.idle) {
                printf("messages     sent %llu (%.1f/s), acks %llu, "
                       "refused %llu, behind schedule max %.1f ms, "
                       "skipped (backpressure/retry-after) %llu\n", U64(st.sent),
                       send_s > 0 ? st.sent / send_s : 0.0, U64(st.acks),
                       U64(st.refused), st.max_behind_ns / NS_PER_MS,
                       U64(st.skipped_backpressure));
                printf("deliveries   expected %llu, received %llu (%.2f%%), "
                       "lost %llu, dup %llu, reordered %llu, seq gaps %llu, "
                       "foreign %llu\n", U64(expected_net), U64(st.received),
                       expected_net ? 100.0 * st.received / expected_net
                                    : 0.0,
                       U64(lost), U64(st.dup), U64(st.reorder), U64(st.gaps),
                       U64(st.foreign));
                printf("throughput   %.0f deliveries/s (send start to last "
                       "delivery, %.3f s)\n", drate, dwin);
                print_hist("latency ms", &h_lat);
                print_hist("ack rtt ms", &h_ack);
            }
            printf("frames       presence %llu, other %llu, pings %llu, "
                   "bad content %llu, protocol errors %llu\n",
                   U64(st.presence), U64(st.other), U64(st.pings),
                   U64(st.bad_content), U64(st.proto_errors));
            printf("errors       ");
            print_kv(stdout, &st.errors);
            printf("\ncloses       ");
            print_kv(stdout, &st.closes);
            printf("\n");
            printf("cpu          client %.2f s (%.0f%% of a core",
                   cli_cpu, wall > 0 ? 100 * cli_cpu / wall : 0.0);
            if (st.received > 0) {
                printf(", %.2f us per delivery", cli_cpu * 1e6 / st.received);
            }
            printf(")");
            if (have_server) {
                printf(", server %.2f s (%.0f%% of a core) over %.2f s",
                       srv_cpu, wall > 0 ? 100 * srv_cpu / wall : 0.0, wall);
                if (cpu_b.n == 0) {
                    printf("\n             (no server process left at the "
                           "end: server CPU unknown)");
                } else if (!cfg.idle) {
                    printf("\n             => %.0f deliveries per server "
                           "CPU-second (%.2f us per delivery)", dps,
                           st.received ? srv_cpu * 1e6 / st.received : 0.0);
                }
                printf("\nserver mem   %.1f MB before, %.1f MB joined, "
                       "%.1f MB end => %.2f kB per joined connection",
                       mem0 / 1024.0, mem1 / 1024.0, mem2 / 1024.0,
                       per_conn_kb);
            }
            printf("\n");
            if (wall > 0) {
                printf("machine      irq+softirq %.2f s (%.0f%% of a core)",
                       irq_cpu, 100 * irq_cpu / wall);
                if (other_cpu >= 0) {
                    printf(", other processes %.2f s (%.0f%% of a core)",
                           other_cpu, 100 * other_cpu / wall);
                }
                printf(" over %.2f s\n", wall);
            }
            if (wall > 0 && other_cpu / wall > 0.10) {
                printf("note         other processes used >10%% of a core "
                       "during the measurement: figures are disturbed\n");
            }
            if (wall > 0 && cli_cpu / wall > 0.85) {
                printf("note         the client used >85%% of a core: the "
                       "result may be client-bound\n");
            }
        }
    }

    return st.opened == 0 ? 1 : 0;
}
