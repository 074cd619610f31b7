/*
 * abuse - the client-side attacks of issue 11 against a running
 * ngx_chat_module server, a few seconds each, and what each cost the
 * server's workers (RSS, CPU) and a well-behaved neighbour (reply latency,
 * missed acks, closes).  See README.md in this directory.
 *
 * One process, one epoll loop, non-blocking sockets; the WebSocket client
 * side (framing, parser, handshake, write queue) is benchlib's, as in
 * chatbench.  Load goes only to loopback addresses (127.0.0.0/8, ::1);
 * anything else is refused.  Every loop is bounded in count and in time;
 * the server's processes are only read, from /proc.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"


#define RX_CHUNK        (64 * 1024)     /* one recv() at most */
#define RX_TURNS        4               /* recv() calls per event at most */
#define PUMP_BYTES      (64 * 1024)     /* attacker output per loop turn */
#define MAX_WORKERS     64
#define MAX_ATT         64              /* attacker connections */
#define SAMPLE_NS       (100 * 1000000ULL)      /* RSS sampling period */
#define SETUP_NS        (3 * NS_PER_S)  /* neighbour connect + join */
#define SETTLE_NS       (300 * 1000000ULL)      /* after closing, for RSS */

#define PING_PAYLOAD    125             /* the largest control frame */
#define FILL_SENDS      20              /* history-flood: messages first */
#define FILL_CONTENT    100
#define BURST_SENDS     200             /* burst-reader: sends per write */
#define BURST_CONTENT   1024
#define BURST_WAIT_NS   NS_PER_S        /* longest wait for a burst's replies */
#define LONG_USER_LEN   7000
#define LONG_CONNS      8
#define LONG_ROOMS      40              /* each; over chat_max_rooms' 32 */
#define EMPTY_CONNS     64
#define EMPTY_ROOMS     32              /* each: chat_max_rooms' default */


const char  *bench_prog = "abuse";


typedef enum {
    A_BASELINE = 0,
    A_PING_FLOOD,
    A_HISTORY_FLOOD,
    A_JOIN_CHURN,
    A_WHO_FLOOD,
    A_BURST_READER,
    A_LONG_USER,
    A_EMPTY_ROOMS,
    A_N
} attack_e;

typedef struct {
    const char  *name;
    const char  *unit;          /* one request, in reports */
    uint64_t     count;         /* default bound on requests */
    int          window;        /* unanswered requests at most (0: no
                                   limit); -1: not a request flood */
    const char  *help;
} attack_t;

static const attack_t  attacks[A_N] = {
    { "baseline", "requests", 0, -1,
      "no attacker: the neighbour alone (the control figures)" },
    { "ping-flood", "pings", 0, -1,
      "125-byte pings as fast as the server reads them, never reading "
      "(bounded by --bytes)" },
    { "history-flood", "history requests", 5000, 0,
      "a member of the neighbour's room puts 20 messages in it, then asks "
      "history limit 1000 before an unknown id, pipelined (--window)" },
    { "join-churn", "join/leave pairs", 5000, 0,
      "join/leave of the neighbour's room, pipelined (presence to it)" },
    { "who-flood", "who requests", 20000, 0,
      "a member of the neighbour's room asks who, pipelined (--window)" },
    { "burst-reader", "bursts", 10, -1,
      "reads promptly, sends 200 sends of 1 KiB in one write, again once "
      "answered; must never be closed" },
    { "long-user", "joins", LONG_CONNS * LONG_ROOMS, 0,
      "8 connections with 7,000-byte user ids join 40 rooms each" },
    { "empty-rooms", "joins", EMPTY_CONNS * EMPTY_ROOMS, 0,
      "64 connections join 32 distinct new rooms each and stay (2,048 "
      "empty rooms held: zone use per empty room)" },
};


typedef struct {
    const char  *host;
    int          port;
    const char  *path;
    const char  *status_path;
    pid_t        master;
    double       seconds;
    double       grace;
    int          interval_ms;
    uint64_t     bytes;
    uint64_t     count;         /* 0: each attack's default */
    int          window;        /* -1: each attack's own */
    const char  *prefix;
    int          json;
    int          selected[A_N];
} cfg_t;

enum {
    CS_NEW = 0,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_OPEN,
    CS_CLOSED
};

typedef struct {
    int        fd;
    int        idx;             /* attacker index; -1: the neighbour */
    uint8_t    state;
    uint8_t    no_read;         /* ping flood: output only */
    uint8_t    broken;          /* close after the current event */
    uint8_t    closing;         /* close frame received */
    uint8_t    ready;           /* attacker: set up, may flood */
    uint8_t    done;            /* attacker: bound reached */
    uint32_t   ev_mask;
    char      *target;
    char       key[32];
    ws_rx_t    rx;
    ws_tx_t    tx;
    uint64_t   sent;            /* requests on this connection */
    uint64_t   t_burst;         /* burst reader: the last burst */
    uint64_t   burst_wait;      /* its replies still to come */
    uint64_t   reqs;            /* request floods: requests sent */
    uint64_t   answered;        /* and the replies to them */
    int        fill;            /* history-flood: fill messages sent */
    char       end[64];         /* how it ended */
} aconn_t;

typedef struct {
    int        n;
    pid_t      pid[MAX_WORKERS];
    uint64_t   ticks[MAX_WORKERS];
    uint64_t   rss_kb[MAX_WORKERS];
    uint8_t    gone[MAX_WORKERS];
} workers_t;

static const char  *status_keys[] = {
    "connections", "rooms", "users", "rate_limited", "zone_full", NULL
};

#define N_STATUS  5

typedef struct {
    int       ok;
    int64_t   v[N_STATUS];
} status_t;

enum {
    P_SETUP = 0,
    P_ATTACK,
    P_GRACE,
    P_DONE
};

enum {
    PR_NONE = 0,
    PR_SENT,
    PR_DONE
};

typedef struct {
    attack_e    a;
    uint64_t    budget;
    int         phase;
    uint64_t    t0, t_end, t_grace_end, t_first, t_last;
    aconn_t     nb;
    aconn_t     att[MAX_ATT];
    int         natt;

    /* attacker */
    uint64_t    req;            /* units of attacks[a].unit sent */
    uint64_t    bytes_out, bytes_in, frames_in, pongs;
    kvtab_t     types;          /* frames received by type */
    kvtab_t     errors;         /* error frames by code */
    kvtab_t     ends;           /* how its connections ended */

    /* neighbour */
    uint64_t    nb_seq, nb_acks, nb_err_ref, nb_presence, nb_messages;
    uint64_t   *nb_t;           /* send time by seq */
    uint64_t    nb_max, nb_next, nb_behind;
    int         nb_joined;
    int         probe;
    char        probe_res[48];
    kvtab_t     nb_errors, nb_ends;
    hist_t      nb_lat;

    /* server */
    workers_t   w0, w1, w2, w3; /* before, attack end, grace end, closed */
    uint64_t    rss_peak, t_sample;
    status_t    s0, s1;

    char        room_nb[128], room_att[128], room_probe[128];
} run_t;


static cfg_t           cfg;
static run_t          *R;
static int             epfd = -1;
static pid_t           master_pid;
static pid_t           port_pids[MAX_WORKERS];
static int             n_port_pids;
static volatile sig_atomic_t  g_interrupted;
static struct sockaddr_storage  dst_addr;
static socklen_t       dst_len;
static char            host_hdr[128];
static char            rx_buf[RX_CHUNK];
static char            batch[PUMP_BYTES + 2 * (BURST_SENDS + 1)
                             * (BURST_CONTENT + 256)];
static uint64_t        g_now;


static void conn_close(aconn_t *c, const char *why);
static void conn_write(aconn_t *c, const char *p, size_t n);
static void conn_text_frame(aconn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void att_text(aconn_t *c, const char *p, size_t n);
static void nb_text(aconn_t *c, const char *p, size_t n);


/* ------------------------------------------------------------------------ */
/* connections                                                              */

static void
conn_update_events(aconn_t *c)
{
    struct epoll_event  ev;
    uint32_t            want;

    if (c->fd < 0 || c->state == CS_CLOSED) {
        return;
    }
    if (c->state == CS_CONNECTING) {
        want = EPOLLOUT;
    } else {
        want = (c->no_read ? EPOLLRDHUP : EPOLLIN)
               | (ws_tx_pending(&c->tx) ? EPOLLOUT : 0);
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


static void
conn_set_end(aconn_t *c, const char *why)
{
    if (c->end[0] == '\0') {
        snprintf(c->end, sizeof(c->end), "%s", why);
    }
}


static void
conn_write(aconn_t *c, const char *p, size_t n)
{
    char  why[64];

    if (c->broken || c->closing || c->state == CS_CLOSED) {
        return;
    }
    if (ws_tx_write(&c->tx, c->fd, p, n) != 0) {
        snprintf(why, sizeof(why), "write: %s", strerror(errno));
        conn_set_end(c, why);
        c->broken = 1;
        return;
    }
    if (c->idx >= 0) {
        R->bytes_out += n;
    }
    conn_update_events(c);
}


static void
conn_text_frame(aconn_t *c, const char *fmt, ...)
{
    char     p[1024], f[1024 + WS_FRAME_HDR];
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(p, sizeof(p), fmt, ap);
    va_end(ap);
    if (n <= 0 || (size_t) n >= sizeof(p)) {
        die("request too long");
    }
    conn_write(c, f, ws_frame(f, 0x1, p, (size_t) n));
}


static int
rx_text(void *data, char *p, size_t n)
{
    aconn_t  *c = data;

    if (c->idx < 0) {
        nb_text(c, p, n);
    } else {
        R->frames_in++;
        att_text(c, p, n);
    }
    return c->broken || c->closing;
}


static int
rx_binary(void *data, char *p, size_t n)
{
    aconn_t  *c = data;

    return c->broken || c->closing;
}


static int
rx_ping(void *data, char *p, size_t n)
{
    aconn_t  *c = data;
    char      f[PING_PAYLOAD + WS_FRAME_HDR];

    conn_write(c, f, ws_frame(f, 0xA, p, n));
    return c->broken || c->closing;
}


static int
rx_pong(void *data, char *p, size_t n)
{
    aconn_t  *c = data;

    if (c->idx >= 0) {
        R->pongs++;
    }
    return c->broken || c->closing;
}


static int
rx_close(void *data, unsigned code, char *p, size_t n)
{
    aconn_t  *c = data;
    char      why[64], f[2 + WS_FRAME_HDR], cb[2];

    snprintf(why, sizeof(why), "close %u", code);
    conn_set_end(c, why);
    cb[0] = (char) (code >> 8);
    cb[1] = (char) code;
    conn_write(c, f, ws_frame(f, 0x8, cb, code != 1005 ? 2 : 0));
    c->closing = 1;
    return 1;
}


static void
rx_error(void *data, const char *what)
{
    aconn_t  *c = data;
    char      why[64];

    snprintf(why, sizeof(why), "client: %s", what);
    conn_set_end(c, why);
    c->broken = 1;
}


static const ws_rx_handler_t  conn_rx_handler = {
    rx_text, rx_binary, rx_ping, rx_pong, rx_close, rx_error
};


/* a connection for user to path; its requests begin at the welcome */
static void
conn_start(aconn_t *c, int idx, const char *user, int rcvbuf)
{
    struct epoll_event  ev;
    size_t              tl;
    int                 fd, one = 1;
    char                why[64];

    memset(c, 0, sizeof(aconn_t));
    c->fd = -1;
    c->idx = idx;
    c->rx.h = &conn_rx_handler;
    c->rx.data = c;
    c->state = CS_CONNECTING;
    ws_make_key(rng64(), c->key);

    tl = strlen(cfg.path) + strlen(user) + 8;
    c->target = xrealloc(NULL, tl);
    snprintf(c->target, tl, "%s%suser=%s", cfg.path,
             strchr(cfg.path, '?') ? "&" : "?", user);

    fd = socket(dst_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        conn_close(c, why);
        return;
    }
    c->fd = fd;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rcvbuf > 0) {
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
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
conn_close(aconn_t *c, const char *why)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW) {
        return;
    }
    conn_set_end(c, why != NULL ? why : "closed");
    if (c->idx >= 0) {
        kv_add(&R->ends, c->end, strlen(c->end));
    } else {
        kv_add(&R->nb_ends, c->end, strlen(c->end));
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->state = CS_CLOSED;
    ws_rx_free(&c->rx);
    ws_tx_free(&c->tx);
    free(c->target);
    c->target = NULL;
}


static void
conn_on_connected(aconn_t *c)
{
    int        err = 0;
    socklen_t  el = sizeof(err);
    size_t     cap, n;
    char      *req, why[64];

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
        err = errno;
    }
    if (err != 0) {
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        conn_close(c, why);
        return;
    }
    cap = strlen(c->target) + strlen(host_hdr) + 256;
    req = xrealloc(NULL, cap);
    n = ws_request(req, cap, c->target, host_hdr, c->key);
    c->state = CS_HANDSHAKE;
    conn_update_events(c);
    conn_write(c, req, n);
    free(req);
}


static void att_on_open(aconn_t *c);


static void
conn_handshake_input(aconn_t *c, const char *data, size_t n)
{
    size_t  hlen = 0;
    char    why[64];
    int     status, rc;

    ws_rx_buffer(&c->rx, data, n);
    rc = ws_response(c->rx.rbuf, c->rx.rlen, c->key, &hlen, &status, why,
                     sizeof(why));
    if (rc <= 0) {
        if (rc < 0) {
            conn_close(c, why);
        }
        return;
    }
    c->state = CS_OPEN;
    ws_rx_discard(&c->rx, hlen);
    if (c->idx >= 0) {
        att_on_open(c);
    }
    ws_rx_feed(&c->rx, NULL, 0);        /* frames that came with the 101 */
    conn_update_events(c);
}


static void
conn_on_readable(aconn_t *c)
{
    ssize_t  r;
    int      i;
    char     why[64];

    for (i = 0; i < RX_TURNS; i++) {
        r = recv(c->fd, rx_buf, sizeof(rx_buf), 0);
        if (r == 0) {
            conn_close(c, c->state == CS_HANDSHAKE ? "handshake: eof" : "eof");
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
        if (c->idx >= 0) {
            R->bytes_in += (uint64_t) r;
        }
        if (c->state == CS_HANDSHAKE) {
            conn_handshake_input(c, rx_buf, (size_t) r);
        } else {
            ws_rx_feed(&c->rx, rx_buf, (size_t) r);
        }
        if (c->state != CS_HANDSHAKE && c->state != CS_OPEN) {
            return;
        }
        if (c->broken || c->closing || c->no_read) {
            return;
        }
    }
}


static void
conn_on_event(aconn_t *c, uint32_t events)
{
    if (c->state == CS_CONNECTING) {
        conn_on_connected(c);

    } else {
        if (c->no_read && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
            /* the server is done with the flooder: read why */
            c->no_read = 0;
            c->done = 1;
            events |= EPOLLIN;
        }
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->no_read) {
            conn_on_readable(c);
        }
        if ((events & EPOLLOUT) && c->state != CS_CLOSED && !c->broken) {
            if (ws_tx_flush(&c->tx, c->fd) != 0) {
                char  why[64];

                snprintf(why, sizeof(why), "write: %s", strerror(errno));
                conn_set_end(c, why);
                c->broken = 1;
            }
            conn_update_events(c);
        }
    }
    if (c->state != CS_CLOSED && (c->broken || c->closing)) {
        if (ws_tx_pending(&c->tx)) {
            (void) ws_tx_flush(&c->tx, c->fd);
        }
        conn_close(c, c->broken ? "write/protocol error" : NULL);
    }
}


/* ------------------------------------------------------------------------ */
/* the neighbour: joins a room, one send every interval, times the replies  */

static int
frame_type(const char *p, size_t n, const char **t, size_t *tl)
{
    return json_scalar(json_find(p, n, KEY("\"type\"")), p + n, t, tl);
}


static int
frame_str_is(const char *p, size_t n, const char *key, size_t klen,
    const char *want)
{
    const char  *v;
    size_t       vl;

    if (json_scalar(json_find(p, n, key, klen), p + n, &v, &vl) != 0) {
        return 0;
    }
    return vl == strlen(want) && memcmp(v, want, vl) == 0;
}


static void
nb_text(aconn_t *c, const char *p, size_t n)
{
    const char  *t, *v;
    size_t       tl, vl;
    uint64_t     seq;
    char        *e;

    if (frame_type(p, n, &t, &tl) != 0) {
        kv_add(&R->nb_errors, "(not a chat frame)", 18);
        return;
    }

#define IS(lit)  (tl == sizeof(lit) - 1 && memcmp(t, lit, tl) == 0)

    if (IS("welcome")) {
        conn_text_frame(c, "{\"type\":\"join\",\"room\":\"%s\"}", R->room_nb);

    } else if (IS("joined")) {
        if (frame_str_is(p, n, KEY("\"room\""), R->room_probe)) {
            snprintf(R->probe_res, sizeof(R->probe_res), "ok");
            R->probe = PR_DONE;
        } else {
            R->nb_joined = 1;
        }

    } else if (IS("ack") || IS("error")) {
        v = json_find(p, n, KEY("\"ref\""));
        if (v != NULL && json_scalar(v, p + n, &v, &vl) == 0 && vl > 0
            && vl < 20)
        {
            seq = strtoull(v, &e, 10);
            if (e == v + vl && seq > 0 && seq <= R->nb_seq
                && R->nb_t[seq - 1] != 0)
            {
                h_record(&R->nb_lat, g_now - R->nb_t[seq - 1]);
                R->nb_t[seq - 1] = 0;
                if (IS("ack")) {
                    R->nb_acks++;
                } else {
                    R->nb_err_ref++;
                }
            }
        }
        if (IS("error")) {
            v = json_find(p, n, KEY("\"code\""));
            if (v == NULL || json_scalar(v, p + n, &v, &vl) != 0) {
                v = "(no code)";
                vl = 9;
            }
            kv_add(&R->nb_errors, v, vl);
            if (json_find(p, n, KEY("\"ref\"")) == NULL
                && R->probe == PR_SENT)
            {
                snprintf(R->probe_res, sizeof(R->probe_res), "refused: %.*s",
                         (int) (vl < 30 ? vl : 30), v);
                R->probe = PR_DONE;
            }
        }

    } else if (IS("presence")) {
        R->nb_presence++;

    } else if (IS("message")) {
        R->nb_messages++;
    }

#undef IS
}


static void
nb_send(void)
{
    aconn_t  *c = &R->nb;

    if (c->state != CS_OPEN || !R->nb_joined || R->nb_seq >= R->nb_max) {
        return;
    }
    R->nb_t[R->nb_seq] = g_now;
    R->nb_seq++;
    conn_text_frame(c, "{\"type\":\"send\",\"room\":\"%s\",\"content\":"
                    "\"neighbour %llu\",\"ref\":\"%llu\"}", R->room_nb,
                    U64(R->nb_seq), U64(R->nb_seq));
}


/* ------------------------------------------------------------------------ */
/* attackers                                                                */

static void
att_on_open(aconn_t *c)
{
    if (R->a == A_PING_FLOOD) {
        /* never reads again: the server's pongs pile up */
        c->no_read = 1;
        c->ready = 1;
    }
}


/*
 * history-flood puts FILL_SENDS messages in the room first, one at a time
 * (each after the answer to the previous one: a burst of sends would be
 * the burst-reader attack), so that history replies are not empty.
 */
static void
att_fill(aconn_t *c)
{
    char  content[FILL_CONTENT + 1];

    memset(content, 'f', FILL_CONTENT);
    content[FILL_CONTENT] = '\0';
    conn_text_frame(c, "{\"type\":\"send\",\"room\":\"%s\",\"content\":"
                    "\"%s\",\"ref\":\"fill%d\"}", R->room_nb, content,
                    c->fill);
    c->fill++;
}


static void
att_text(aconn_t *c, const char *p, size_t n)
{
    const char  *t, *v;
    size_t       tl, vl;

    if (frame_type(p, n, &t, &tl) != 0) {
        kv_add(&R->types, "(not a chat frame)", 18);
        return;
    }
    kv_add(&R->types, t, tl);

#define IS(lit)  (tl == sizeof(lit) - 1 && memcmp(t, lit, tl) == 0)

    if (IS("error")) {
        v = json_find(p, n, KEY("\"code\""));
        if (v == NULL || json_scalar(v, p + n, &v, &vl) != 0) {
            v = "(no code)";
            vl = 9;
        }
        kv_add(&R->errors, v, vl);
    }

    if (IS("welcome")) {
        switch (R->a) {

        case A_HISTORY_FLOOD:
        case A_WHO_FLOOD:
            conn_text_frame(c, "{\"type\":\"join\",\"room\":\"%s\"}",
                            R->room_nb);
            break;

        case A_BURST_READER:
            conn_text_frame(c, "{\"type\":\"join\",\"room\":\"%s\"}",
                            R->room_att);
            break;

        default:
            c->ready = 1;
            break;
        }

    } else if (!c->ready && c->fill > 0 && (IS("ack") || IS("error"))) {
        /* the answer to a fill message */
        if (c->fill < FILL_SENDS) {
            att_fill(c);
        } else {
            c->ready = 1;
        }

    } else if (!c->ready && (IS("joined") || IS("error"))) {
        /* the answer to the set-up join */
        if (IS("error")) {
            conn_set_end(c, "set-up join refused");
            c->done = 1;
            return;
        }
        if (R->a == A_HISTORY_FLOOD) {
            att_fill(c);
        } else {
            c->ready = 1;
        }

    } else if (c->ready && (IS("joined") || IS("left") || IS("history")
                            || IS("who") || IS("error")))
    {
        c->answered++;
        if (R->a == A_BURST_READER && IS("error") && c->burst_wait > 0) {
            c->burst_wait--;
        }

    } else if (R->a == A_BURST_READER && (IS("ack") || IS("error"))
               && c->burst_wait > 0)
    {
        c->burst_wait--;
    }

#undef IS
}


/* the next request of c into out (queued: bytes of this turn before it);
 * 0 when c's bound is reached */
static size_t
att_request(aconn_t *c, char *out, size_t queued)
{
    static const char  ping[PING_PAYLOAD] = { 'p' };
    char               p[512];
    size_t             len;
    int                n;

    switch (R->a) {

    case A_PING_FLOOD:
        if (R->bytes_out + queued + PING_PAYLOAD + 6 > cfg.bytes) {
            return 0;
        }
        return ws_frame(out, 0x9, ping, PING_PAYLOAD);

    case A_HISTORY_FLOOD:
        if (R->req >= R->budget) {
            return 0;
        }
        n = snprintf(p, sizeof(p), "{\"type\":\"history\",\"room\":\"%s\","
                     "\"limit\":1000,\"before\":\"no-such-id-%llu\"}",
                     R->room_nb, U64(R->req));
        return ws_frame(out, 0x1, p, (size_t) n);

    case A_JOIN_CHURN:
        if (R->req >= R->budget) {
            return 0;
        }
        n = snprintf(p, sizeof(p), "{\"type\":\"join\",\"room\":\"%s\"}",
                     R->room_nb);
        len = ws_frame(out, 0x1, p, (size_t) n);
        n = snprintf(p, sizeof(p), "{\"type\":\"leave\",\"room\":\"%s\"}",
                     R->room_nb);
        return len + ws_frame(out + len, 0x1, p, (size_t) n);

    case A_WHO_FLOOD:
        if (R->req >= R->budget) {
            return 0;
        }
        n = snprintf(p, sizeof(p), "{\"type\":\"who\",\"room\":\"%s\"}",
                     R->room_nb);
        return ws_frame(out, 0x1, p, (size_t) n);

    case A_BURST_READER:
        if (R->req >= R->budget) {
            return 0;
        }
        if (c->burst_wait > 0 && g_now - c->t_burst < BURST_WAIT_NS) {
            return 0;
        }
        {
            char  content[BURST_CONTENT + 1], m[BURST_CONTENT + 256];
            int   i;

            memset(content, 'b', BURST_CONTENT);
            content[BURST_CONTENT] = '\0';
            len = 0;
            for (i = 0; i < BURST_SENDS; i++) {
                n = snprintf(m, sizeof(m), "{\"type\":\"send\",\"room\":\"%s\","
                             "\"content\":\"%s\",\"ref\":\"b%llu-%d\"}",
                             R->room_att, content, U64(R->req), i);
                len += ws_frame(out + len, 0x1, m, (size_t) n);
            }
            c->burst_wait = BURST_SENDS;
            c->t_burst = g_now;
            return len;
        }

    case A_LONG_USER:
        if (c->sent >= LONG_ROOMS) {
            return 0;
        }
        n = snprintf(p, sizeof(p),
                     "{\"type\":\"join\",\"room\":\"%s-l%d-%llu\"}",
                     R->room_att, c->idx, U64(c->sent));
        return ws_frame(out, 0x1, p, (size_t) n);

    case A_EMPTY_ROOMS:
        if (c->sent >= EMPTY_ROOMS || R->req >= R->budget) {
            return 0;
        }
        n = snprintf(p, sizeof(p),
                     "{\"type\":\"join\",\"room\":\"%s-e%d-%llu\"}",
                     R->room_att, c->idx, U64(c->sent));
        return ws_frame(out, 0x1, p, (size_t) n);

    default:
        return 0;
    }
}


/*
 * Offer c the next requests while the socket takes them: at most
 * PUMP_BYTES per loop turn, so that the neighbour, in this same loop, is
 * served promptly; the burst reader's burst is one write whatever its size.
 */
static int
att_pump(aconn_t *c)
{
    size_t    len = 0, n;
    uint64_t  outstanding;
    int       window, pairs;

    if (c->state != CS_OPEN || !c->ready || c->done || c->broken
        || c->closing || ws_tx_pending(&c->tx) || R->phase != P_ATTACK)
    {
        return 0;
    }

    window = cfg.window >= 0 ? cfg.window : attacks[R->a].window;
    pairs = R->a == A_JOIN_CHURN;

    while (len < PUMP_BYTES) {
        /* a unit (one request, or a join/leave pair) goes out when it
         * fits in the window, or when nothing is unanswered */
        outstanding = c->reqs > c->answered ? c->reqs - c->answered : 0;
        if (attacks[R->a].window >= 0 && window > 0 && outstanding > 0
            && outstanding + 1 + pairs > (uint64_t) window)
        {
            break;
        }
        n = att_request(c, batch + len, len);
        if (n == 0) {
            if (R->a != A_BURST_READER || R->req >= R->budget) {
                c->done = 1;
            }
            break;
        }
        len += n;
        c->sent++;
        c->reqs += 1 + pairs;
        R->req++;
        if (R->t_first == 0) {
            R->t_first = g_now;
        }
        R->t_last = g_now;
        if (R->a == A_BURST_READER) {
            break;
        }
    }
    if (len > 0) {
        conn_write(c, batch, len);
    }
    return len > 0 && !ws_tx_pending(&c->tx);
}


static void
att_start(void)
{
    char  user[LONG_USER_LEN + 64];
    int   i, k;

    switch (R->a) {

    case A_BASELINE:
        R->natt = 0;
        break;

    case A_LONG_USER:
        R->natt = LONG_CONNS;
        break;

    case A_EMPTY_ROOMS:
        R->natt = (int) ((R->budget + EMPTY_ROOMS - 1) / EMPTY_ROOMS);
        if (R->natt > EMPTY_CONNS) {
            R->natt = EMPTY_CONNS;
        }
        break;

    default:
        R->natt = 1;
        break;
    }

    for (i = 0; i < R->natt; i++) {
        k = snprintf(user, sizeof(user), "%s-%s-a%d-", cfg.prefix,
                     attacks[R->a].name, i);
        if (R->a == A_LONG_USER) {
            memset(user + k, 'x', LONG_USER_LEN - (size_t) k);
            user[LONG_USER_LEN] = '\0';
        }
        conn_start(&R->att[i], i, user,
                   R->a == A_PING_FLOOD ? 4096 : 0);
    }
}


/* ------------------------------------------------------------------------ */
/* the server: workers from /proc, status                                   */

/* inodes of the sockets listening on the port, from /proc/net/tcp{,6} */
static int
listen_inodes(unsigned long *ino, int max)
{
    static const char  *files[] = { "/proc/net/tcp", "/proc/net/tcp6" };
    char                line[512], local[128];
    unsigned            st, port;
    unsigned long       inode;
    FILE               *f;
    char               *colon;
    int                 i, n = 0;

    for (i = 0; i < 2; i++) {
        f = fopen(files[i], "r");
        if (f == NULL) {
            continue;
        }
        while (fgets(line, sizeof(line), f) != NULL && n < max) {
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*s %*s %lu",
                       local, &st, &inode) != 3)
            {
                continue;
            }
            colon = strrchr(local, ':');
            if (colon == NULL || st != 0x0A) {
                continue;
            }
            port = (unsigned) strtoul(colon + 1, NULL, 16);
            if ((int) port == cfg.port && inode != 0) {
                ino[n++] = inode;
            }
        }
        fclose(f);
    }
    return n;
}


/* processes holding one of the inodes */
static int
inode_owners(const unsigned long *ino, int nino, pid_t *pids, int max)
{
    DIR            *d, *fd_d;
    struct dirent  *de, *fe;
    char            path[600], link[64];
    unsigned long   v;
    ssize_t         l;
    int             n = 0, i, hit;

    d = opendir("/proc");
    if (d == NULL) {
        return 0;
    }
    while ((de = readdir(d)) != NULL && n < max) {
        if (!isdigit((u_char) de->d_name[0])) {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%s/fd", de->d_name);
        fd_d = opendir(path);
        if (fd_d == NULL) {
            continue;
        }
        hit = 0;
        while (!hit && (fe = readdir(fd_d)) != NULL) {
            snprintf(path, sizeof(path), "/proc/%s/fd/%s", de->d_name,
                     fe->d_name);
            l = readlink(path, link, sizeof(link) - 1);
            if (l <= 0) {
                continue;
            }
            link[l] = '\0';
            if (sscanf(link, "socket:[%lu]", &v) != 1) {
                continue;
            }
            for (i = 0; i < nino; i++) {
                if (ino[i] == v) {
                    hit = 1;
                }
            }
        }
        closedir(fd_d);
        if (hit) {
            pids[n++] = (pid_t) atol(de->d_name);
        }
    }
    closedir(d);
    return n;
}


/* the master: --master-pid, or the listening socket's owner whose parent
 * does not hold it too; with one owner (master_process off) no master */
static void
find_server(void)
{
    unsigned long  ino[64];
    pid_t          pp;
    int            nino, i, j, parent_in;

    if (cfg.master > 0) {
        if (proc_stat(cfg.master, NULL, NULL) != 0) {
            die("--master-pid %d: no such process", (int) cfg.master);
        }
        master_pid = cfg.master;
        return;
    }
    nino = listen_inodes(ino, 64);
    if (nino == 0) {
        die("nothing listens on port %d (see /proc/net/tcp); is the server "
            "running?", cfg.port);
    }
    n_port_pids = inode_owners(ino, nino, port_pids, MAX_WORKERS);
    if (n_port_pids == 0) {
        die("cannot see which process listens on port %d (run as the "
            "server's user or root, or pass --master-pid)", cfg.port);
    }
    for (i = 0; i < n_port_pids; i++) {
        pp = 0;
        (void) proc_stat(port_pids[i], NULL, &pp);
        parent_in = 0;
        for (j = 0; j < n_port_pids; j++) {
            parent_in |= port_pids[j] == pp;
        }
        if (!parent_in && n_port_pids > 1) {
            master_pid = port_pids[i];
            return;
        }
    }
}


static int
is_worker_title(pid_t pid)
{
    char     path[64], buf[256];
    int      fd;
    ssize_t  n;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    return strstr(buf, "worker process") != NULL;
}


/* the workers now: the master's children titled "worker process" (all its
 * children when none is titled so), or the port's owner */
static void
workers_find(workers_t *w)
{
    DIR            *d;
    struct dirent  *de;
    pid_t           pp, kids[MAX_WORKERS];
    int             nk = 0, i;

    memset(w, 0, sizeof(*w));
    if (master_pid == 0) {
        for (i = 0; i < n_port_pids; i++) {
            w->pid[w->n++] = port_pids[i];
        }
        return;
    }
    d = opendir("/proc");
    if (d == NULL) {
        return;
    }
    while ((de = readdir(d)) != NULL && nk < MAX_WORKERS) {
        if (!isdigit((u_char) de->d_name[0])) {
            continue;
        }
        pp = 0;
        if (proc_stat((pid_t) atol(de->d_name), NULL, &pp) == 0
            && pp == master_pid)
        {
            kids[nk++] = (pid_t) atol(de->d_name);
        }
    }
    closedir(d);
    for (i = 0; i < nk; i++) {
        if (is_worker_title(kids[i])) {
            w->pid[w->n++] = kids[i];
        }
    }
    if (w->n == 0) {
        memcpy(w->pid, kids, (size_t) nk * sizeof(pid_t));
        w->n = nk;
    }
}


static uint64_t
proc_rss_kb(pid_t pid)
{
    char      path[64], line[256];
    FILE     *f;
    uint64_t  v = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %" SCNu64, &v) == 1) {
            break;
        }
    }
    fclose(f);
    return v;
}


/* CPU ticks and RSS of the same pids as before */
static void
workers_sample(workers_t *w)
{
    int  i;

    for (i = 0; i < w->n; i++) {
        if (proc_stat(w->pid[i], &w->ticks[i], NULL) != 0) {
            w->gone[i] = 1;
            w->ticks[i] = 0;
            w->rss_kb[i] = 0;
            continue;
        }
        w->rss_kb[i] = proc_rss_kb(w->pid[i]);
    }
}


static uint64_t
workers_rss(const workers_t *w)
{
    uint64_t  s = 0;
    int       i;

    for (i = 0; i < w->n; i++) {
        s += w->rss_kb[i];
    }
    return s;
}


/* CPU seconds from a to b over a's workers that are still there */
static double
workers_cpu(const workers_t *a, const workers_t *b)
{
    uint64_t  s = 0;
    int       i;

    for (i = 0; i < a->n && i < b->n; i++) {
        if (!b->gone[i] && b->ticks[i] >= a->ticks[i]) {
            s += b->ticks[i] - a->ticks[i];
        }
    }
    return (double) s / (double) sysconf(_SC_CLK_TCK);
}


static int
workers_gone(const workers_t *w)
{
    int  i, n = 0;

    for (i = 0; i < w->n; i++) {
        n += w->gone[i];
    }
    return n;
}


/* GET --status PATH (a blocking exchange of at most 2 s) */
static void
status_fetch(status_t *s)
{
    struct timeval  tv = { 2, 0 };
    char            buf[16384], *body;
    size_t          len = 0;
    ssize_t         r;
    int             fd, n, i;
    const char     *v;

    memset(s, 0, sizeof(*s));
    if (cfg.status_path == NULL) {
        return;
    }
    fd = socket(dst_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *) &dst_addr, dst_len) != 0) {
        close(fd);
        return;
    }
    n = snprintf(buf, sizeof(buf), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n",
                 cfg.status_path, host_hdr);
    if (send(fd, buf, (size_t) n, MSG_NOSIGNAL) != n) {
        close(fd);
        return;
    }
    while (len < sizeof(buf) - 1) {
        r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (r <= 0) {
            break;
        }
        len += (size_t) r;
    }
    close(fd);
    buf[len] = '\0';
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || atoi(buf + 9) != 200) {
        return;
    }
    body = strstr(buf, "\r\n\r\n");
    if (body == NULL) {
        return;
    }
    body += 4;
    for (i = 0; status_keys[i] != NULL; i++) {
        char  key[64];

        n = snprintf(key, sizeof(key), "\"%s\"", status_keys[i]);
        v = json_find(body, strlen(body), key, (size_t) n);
        s->v[i] = v != NULL && isdigit((u_char) *v) ? strtoll(v, NULL, 10)
                                                    : -1;
    }
    s->ok = 1;
}


/* ------------------------------------------------------------------------ */
/* one attack                                                               */

/* run the loop until deadline or until done() says so */
static void
run_loop(uint64_t deadline, int (*done)(void))
{
    struct epoll_event  evs[64];
    uint64_t            wake;
    int                 n, i, busy, timeout;

    for ( ;; ) {
        g_now = now_ns();
        if (g_now >= deadline || g_interrupted || (done != NULL && done())) {
            return;
        }

        /* the neighbour's sends, on schedule (never more than one late) */
        if (R->phase == P_ATTACK && g_now >= R->nb_next) {
            nb_send();
            R->nb_next += (uint64_t) cfg.interval_ms * 1000000ULL;
            if (R->nb_next < g_now) {
                R->nb_behind++;
                R->nb_next = g_now + (uint64_t) cfg.interval_ms * 1000000ULL;
            }
        }
        if (R->phase == P_ATTACK || R->phase == P_GRACE) {
            if (g_now >= R->t_sample) {
                workers_t  ws = R->w0;
                uint64_t   rss;

                workers_sample(&ws);
                rss = workers_rss(&ws);
                if (rss > R->rss_peak) {
                    R->rss_peak = rss;
                }
                R->t_sample = g_now + SAMPLE_NS;
            }
        }

        busy = 0;
        for (i = 0; i < R->natt; i++) {
            busy |= att_pump(&R->att[i]);
        }

        wake = deadline;
        if (R->phase == P_ATTACK && R->nb_next < wake) {
            wake = R->nb_next;
        }
        if ((R->phase == P_ATTACK || R->phase == P_GRACE)
            && R->t_sample < wake)
        {
            wake = R->t_sample;
        }
        timeout = busy || wake <= g_now
                  ? 0 : (int) ((wake - g_now + 999999) / 1000000);

        n = epoll_wait(epfd, evs, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait: %s", strerror(errno));
        }
        g_now = now_ns();
        for (i = 0; i < n; i++) {
            conn_on_event(evs[i].data.ptr, evs[i].events);
        }
        /* the flood is over: read what the server kept for the flooder */
        for (i = 0; i < R->natt && R->phase != P_ATTACK; i++) {
            aconn_t  *c = &R->att[i];

            if (c->state == CS_OPEN && c->no_read) {
                c->no_read = 0;
                conn_update_events(c);
            }
        }
    }
}


static int
nb_ready(void)
{
    return R->nb_joined || R->nb.state == CS_CLOSED;
}


static void
run_attack(attack_e a)
{
    int  i;

    memset(R, 0, sizeof(*R));
    R->a = a;
    R->budget = cfg.count > 0 && a != A_LONG_USER ? cfg.count
                                                 : attacks[a].count;
    R->nb_max = (uint64_t) (cfg.seconds * 1000.0 / cfg.interval_ms) + 2;
    R->nb_t = calloc(R->nb_max, sizeof(uint64_t));
    if (R->nb_t == NULL) {
        die("out of memory");
    }
    snprintf(R->room_nb, sizeof(R->room_nb), "%s-%s-nb", cfg.prefix,
             attacks[a].name);
    snprintf(R->room_att, sizeof(R->room_att), "%s-%s-a", cfg.prefix,
             attacks[a].name);
    snprintf(R->room_probe, sizeof(R->room_probe), "%s-%s-probe", cfg.prefix,
             attacks[a].name);

    /* the neighbour joins first */
    {
        char  user[256];

        snprintf(user, sizeof(user), "%s-%s-nb", cfg.prefix, attacks[a].name);
        conn_start(&R->nb, -1, user, 0);
    }
    R->phase = P_SETUP;
    run_loop(now_ns() + SETUP_NS, nb_ready);

    /* before */
    status_fetch(&R->s0);
    workers_find(&R->w0);
    workers_sample(&R->w0);
    R->rss_peak = workers_rss(&R->w0);

    /* the attack */
    R->phase = P_ATTACK;
    R->t0 = now_ns();
    R->t_end = R->t0 + (uint64_t) (cfg.seconds * 1e9);
    R->nb_next = R->t0;
    R->t_sample = R->t0 + SAMPLE_NS;
    if (R->nb_joined) {
        att_start();
    }
    run_loop(R->t_end, NULL);

    /* the attacker stops; the neighbour asks to join a new room (does the
     * zone still have room?) and collects its last replies */
    R->w1 = R->w0;
    workers_sample(&R->w1);
    R->phase = P_GRACE;
    R->t_grace_end = now_ns() + (uint64_t) (cfg.grace * 1e9);
    if (R->nb.state == CS_OPEN && R->nb_joined) {
        R->probe = PR_SENT;
        conn_text_frame(&R->nb, "{\"type\":\"join\",\"room\":\"%s\"}",
                        R->room_probe);
    }
    run_loop(R->t_grace_end, NULL);
    R->w2 = R->w0;
    workers_sample(&R->w2);
    if (workers_rss(&R->w2) > R->rss_peak) {
        R->rss_peak = workers_rss(&R->w2);
    }

    /* after: everyone gone */
    R->phase = P_DONE;
    for (i = 0; i < R->natt; i++) {
        if (R->att[i].state != CS_CLOSED && R->att[i].state != CS_NEW) {
            conn_close(&R->att[i], R->att[i].state == CS_OPEN ? "open"
                                                               : "not open");
        }
    }
    conn_close(&R->nb, R->nb.state == CS_OPEN ? "open" : "not open");
    usleep(SETTLE_NS / 1000);
    R->w3 = R->w0;
    workers_sample(&R->w3);
    status_fetch(&R->s1);
    if (R->probe == PR_SENT) {
        snprintf(R->probe_res, sizeof(R->probe_res), "no answer");
    } else if (R->probe == PR_NONE) {
        snprintf(R->probe_res, sizeof(R->probe_res), "not tried");
    }
}


/* ------------------------------------------------------------------------ */
/* reporting                                                                */

static void
print_line(void)
{
    const attack_t  *at = &attacks[R->a];
    uint64_t         missed;
    double           t;
    int              i;

    missed = R->nb_seq - R->nb_acks - R->nb_err_ref;

    printf("%-13s |", at->name);
    if (R->a == A_BASELINE) {
        printf(" no attacker");
    } else {
        t = R->t_last > R->t_first ? (R->t_last - R->t_first) / 1e9 : 0;
        printf(" attacker: %llu %s in %.2f s (%.1f MB out, %.1f MB in",
               U64(R->req), at->unit, t, R->bytes_out / 1e6,
               R->bytes_in / 1e6);
        if (R->pongs > 0) {
            printf(", %llu pongs", U64(R->pongs));
        }
        printf("), frames ");
        print_kv(stdout, &R->types);
        if (R->errors.n > 0) {
            printf(", errors ");
            print_kv(stdout, &R->errors);
        }
        printf(", ended ");
        print_kv(stdout, &R->ends);
    }

    printf(" | workers: RSS %.1f -> peak %.1f (%+.1f) -> %.1f MB after close, "
           "CPU %.2f s + %.2f s after", workers_rss(&R->w0) / 1024.0,
           R->rss_peak / 1024.0,
           ((double) R->rss_peak - (double) workers_rss(&R->w0)) / 1024.0,
           workers_rss(&R->w3) / 1024.0, workers_cpu(&R->w0, &R->w1),
           workers_cpu(&R->w1, &R->w2));
    if (workers_gone(&R->w3) > 0) {
        printf(", %d WORKER(S) GONE", workers_gone(&R->w3));
    }
    if (R->s0.ok && R->s1.ok) {
        for (i = 0; status_keys[i] != NULL; i++) {
            if (strcmp(status_keys[i], "zone_full") == 0
                && R->s1.v[i] != R->s0.v[i])
            {
                printf(", zone_full +%lld", (long long) (R->s1.v[i]
                                                         - R->s0.v[i]));
            }
        }
    }

    if (!R->nb_joined) {
        printf(" | neighbour: could not join (ended ");
        print_kv(stdout, &R->nb_ends);
        printf(")\n");
        return;
    }
    printf(" | neighbour: %llu sent, %llu acked, %llu missed",
           U64(R->nb_seq), U64(R->nb_acks), U64(missed));
    if (R->nb_errors.n > 0) {
        printf(", errors ");
        print_kv(stdout, &R->nb_errors);
    }
    printf(", ended ");
    print_kv(stdout, &R->nb_ends);
    printf(", reply ms p50 %.2f p99 %.2f max %.2f",
           h_quantile(&R->nb_lat, 0.5) / NS_PER_MS,
           h_quantile(&R->nb_lat, 0.99) / NS_PER_MS,
           R->nb_lat.max / NS_PER_MS);
    printf(", presence %llu, probe join %s", U64(R->nb_presence),
           R->probe_res);
    if (R->nb_behind > 0) {
        printf(" (this client fell behind its schedule %llu times)",
               U64(R->nb_behind));
    }
    printf("%s\n", g_interrupted ? " [INTERRUPTED]" : "");
    fflush(stdout);
}


static void
json_workers(const char *name, const workers_t *w)
{
    int  i;

    printf(",\"%s\":[", name);
    for (i = 0; i < w->n; i++) {
        printf("%s{\"pid\":%d,\"rss_kb\":%llu,\"gone\":%s}", i ? "," : "",
               (int) w->pid[i], U64(w->rss_kb[i]),
               w->gone[i] ? "true" : "false");
    }
    printf("]");
}


static void
json_status(const char *name, const status_t *s)
{
    int  i;

    if (!s->ok) {
        printf(",\"%s\":null", name);
        return;
    }
    printf(",\"%s\":{", name);
    for (i = 0; status_keys[i] != NULL; i++) {
        printf("%s\"%s\":%lld", i ? "," : "", status_keys[i],
               (long long) s->v[i]);
    }
    printf("}");
}


static void
print_json(void)
{
    const attack_t  *at = &attacks[R->a];

    printf("{\"attack\":\"%s\",\"seconds\":%.3f,\"target\":", at->name,
           cfg.seconds);
    {
        char  t[256];

        snprintf(t, sizeof(t), "%s%s", host_hdr, cfg.path);
        json_str(stdout, t);
    }
    printf(",\"attacker\":{\"conns\":%d,\"unit\":\"%s\",\"requests\":%llu,"
           "\"budget\":%llu,\"window\":%d,\"send_s\":%.3f,\"bytes_out\":%llu,"
           "\"bytes_in\":%llu,\"frames_in\":%llu,\"pongs\":%llu",
           R->natt, at->unit, U64(R->req), U64(R->budget),
           attacks[R->a].window < 0 ? -1
           : cfg.window >= 0 ? cfg.window : attacks[R->a].window,
           R->t_last > R->t_first ? (R->t_last - R->t_first) / 1e9 : 0.0,
           U64(R->bytes_out), U64(R->bytes_in), U64(R->frames_in),
           U64(R->pongs));
    json_kv(stdout, "frames", &R->types);
    json_kv(stdout, "errors", &R->errors);
    json_kv(stdout, "ended", &R->ends);
    printf("},\"workers\":{\"rss_kb_before\":%llu,\"rss_kb_peak\":%llu,"
           "\"rss_kb_end\":%llu,\"rss_kb_after_close\":%llu,\"cpu_s\":%.3f,"
           "\"cpu_after_s\":%.3f,\"gone\":%d",
           U64(workers_rss(&R->w0)), U64(R->rss_peak),
           U64(workers_rss(&R->w2)), U64(workers_rss(&R->w3)),
           workers_cpu(&R->w0, &R->w1), workers_cpu(&R->w1, &R->w2),
           workers_gone(&R->w3));
    json_workers("before", &R->w0);
    json_workers("after_close", &R->w3);
    printf("},\"neighbour\":{\"joined\":%s,\"interval_ms\":%d,\"sent\":%llu,"
           "\"acks\":%llu,\"refused\":%llu,\"missed\":%llu,\"late_ticks\":%llu,"
           "\"presence\":%llu,\"messages\":%llu,\"probe_join\":",
           R->nb_joined ? "true" : "false", cfg.interval_ms, U64(R->nb_seq),
           U64(R->nb_acks), U64(R->nb_err_ref),
           U64(R->nb_seq - R->nb_acks - R->nb_err_ref), U64(R->nb_behind),
           U64(R->nb_presence), U64(R->nb_messages));
    json_str(stdout, R->probe_res);
    json_kv(stdout, "errors", &R->nb_errors);
    json_kv(stdout, "ended", &R->nb_ends);
    json_hist(stdout, "reply_ms", &R->nb_lat);
    printf("}");
    json_status("status_before", &R->s0);
    json_status("status_after", &R->s1);
    printf(",\"interrupted\":%s}\n", g_interrupted ? "true" : "false");
    fflush(stdout);
}


/* ------------------------------------------------------------------------ */
/* main                                                                     */

static void
usage(FILE *f)
{
    int  i;

    fprintf(f,
"usage: abuse --port N [options] [ATTACK...]\n"
"\n"
"Runs each attack (all by default, in this order) for a few seconds against\n"
"a running ngx_chat_module server on loopback, and prints what it cost the\n"
"server's workers and a well-behaved neighbour.\n"
"\n"
"  --host ADDR        numeric loopback address (default 127.0.0.1)\n"
"  --port N           the server's port (required)\n"
"  --path PATH        chat location (default /chat)\n"
"  --status PATH      chat_status location, read before and after each\n"
"                     attack (e.g. /chat/status); off by default\n"
"  --master-pid PID   nginx master (workers are its children); by default\n"
"                     found from the socket listening on --port (/proc)\n"
"  --seconds S        attack duration (default 3, at most 60)\n"
"  --grace S          after each attack, replies and CPU still counted\n"
"                     (default 1)\n"
"  --interval-ms N    neighbour's send period (default 50)\n"
"  --bytes N          ping-flood bound, bytes (default 100000000)\n"
"  --count N          bound on requests for history-flood, join-churn\n"
"                     (pairs), who-flood, burst-reader (bursts) and\n"
"                     empty-rooms (joins, at most 64 x 32)\n"
"  --window N         request floods (history-flood, join-churn, who-flood,\n"
"                     long-user, empty-rooms) keep at most N requests\n"
"                     unanswered; 0 (the default): no limit, pipelined\n"
"  --prefix STR       user and room name prefix (default abuse-<pid>)\n"
"  --json             one JSON object per attack instead of a line\n"
"  --list             list the attacks\n"
"\n"
"attacks:\n");
    for (i = 0; i < A_N; i++) {
        fprintf(f, "  %-14s %s\n", attacks[i].name, attacks[i].help);
    }
}


static double
arg_double(const char *name, const char *v, double lo, double hi)
{
    char    *e;
    double   d = strtod(v, &e);

    if (e == v || *e != '\0' || d < lo || d > hi) {
        die("%s: expected a number in [%g, %g], got \"%s\"", name, lo, hi, v);
    }
    return d;
}


static void
parse_args(int argc, char **argv)
{
    static char           prefix[64];
    static struct option  opts[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "path", required_argument, NULL, 'P' },
        { "status", required_argument, NULL, 's' },
        { "master-pid", required_argument, NULL, 'm' },
        { "seconds", required_argument, NULL, 'S' },
        { "grace", required_argument, NULL, 'g' },
        { "interval-ms", required_argument, NULL, 'i' },
        { "bytes", required_argument, NULL, 'b' },
        { "count", required_argument, NULL, 'c' },
        { "prefix", required_argument, NULL, 'x' },
        { "window", required_argument, NULL, 'w' },
        { "json", no_argument, NULL, 'j' },
        { "list", no_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'H' },
        { NULL, 0, NULL, 0 }
    };
    int                   o, i, any = 0;

    cfg.host = "127.0.0.1";
    cfg.path = "/chat";
    cfg.seconds = 3;
    cfg.grace = 1;
    cfg.interval_ms = 50;
    cfg.bytes = 100000000ULL;
    cfg.window = -1;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': cfg.host = optarg; break;
        case 'p': cfg.port = (int) arg_double("--port", optarg, 1, 65535);
                  break;
        case 'P': cfg.path = optarg; break;
        case 's': cfg.status_path = optarg; break;
        case 'm': cfg.master = (pid_t) arg_double("--master-pid", optarg, 1,
                                                  1e9);
                  break;
        case 'S': cfg.seconds = arg_double("--seconds", optarg, 0.1, 60);
                  break;
        case 'g': cfg.grace = arg_double("--grace", optarg, 0, 30); break;
        case 'i': cfg.interval_ms = (int) arg_double("--interval-ms", optarg,
                                                     1, 10000);
                  break;
        case 'b': cfg.bytes = (uint64_t) arg_double("--bytes", optarg, 1000,
                                                    1e10);
                  break;
        case 'c': cfg.count = (uint64_t) arg_double("--count", optarg, 1,
                                                    1e7);
                  break;
        case 'x': cfg.prefix = optarg; break;
        case 'w': cfg.window = (int) arg_double("--window", optarg, 0, 1e6);
                  break;
        case 'j': cfg.json = 1; break;
        case 'l':
            for (i = 0; i < A_N; i++) {
                printf("%-14s %s\n", attacks[i].name, attacks[i].help);
            }
            exit(0);
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }

    for (; optind < argc; optind++) {
        for (i = 0; i < A_N; i++) {
            if (strcmp(argv[optind], attacks[i].name) == 0) {
                cfg.selected[i] = 1;
                any = 1;
                break;
            }
        }
        if (i == A_N) {
            die("unknown attack \"%s\" (--list lists them)", argv[optind]);
        }
    }
    if (!any) {
        for (i = 0; i < A_N; i++) {
            cfg.selected[i] = 1;
        }
    }
    if (cfg.port == 0) {
        die("--port is required (--help for usage)");
    }
    if (cfg.path[0] != '/' || strlen(cfg.path) > 200) {
        die("--path must start with / (at most 200 bytes)");
    }
    if (cfg.status_path != NULL
        && (cfg.status_path[0] != '/' || strlen(cfg.status_path) > 200))
    {
        die("--status must start with / (at most 200 bytes)");
    }
    if (cfg.prefix == NULL) {
        snprintf(prefix, sizeof(prefix), "abuse-%d-%llu", (int) getpid(),
                 U64(time(NULL) % 100000));
        cfg.prefix = prefix;
    }
    for (i = 0; cfg.prefix[i]; i++) {
        if (!isalnum((u_char) cfg.prefix[i]) && cfg.prefix[i] != '-'
            && cfg.prefix[i] != '_')
        {
            die("--prefix: letters, digits, - and _ only");
        }
    }
    if (i > 40) {
        die("--prefix: at most 40 bytes");
    }
}


static void
on_signal(int sig)
{
    g_interrupted++;
}


int
main(int argc, char **argv)
{
    struct sigaction  sa;
    int               i;

    parse_args(argc, argv);
    bench_rng ^= splitmix64(now_ns() ^ (uint64_t) getpid());
    resolve_loopback(cfg.host, cfg.port, &dst_addr, &dst_len, host_hdr,
                     sizeof(host_hdr));
    find_server();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        die("epoll_create1: %s", strerror(errno));
    }
    R = calloc(1, sizeof(run_t));
    if (R == NULL) {
        die("out of memory");
    }

    if (!cfg.json) {
        workers_t  w;

        workers_find(&w);
        printf("abuse: %s%s, master %d, %d worker(s), %.1f s per attack "
               "+ %.1f s grace, neighbour sends every %d ms\n", host_hdr,
               cfg.path, (int) master_pid, w.n, cfg.seconds, cfg.grace,
               cfg.interval_ms);
        fflush(stdout);
    }

    for (i = 0; i < A_N && !g_interrupted; i++) {
        if (!cfg.selected[i]) {
            continue;
        }
        run_attack((attack_e) i);
        if (cfg.json) {
            print_json();
        } else {
            print_line();
        }
        free(R->nb_t);
    }
    return g_interrupted ? 130 : 0;
}
