/*
 * chaosgen - the client side of the chaos soak (bench/chaos, issue 12).
 *
 * One process, one epoll loop: N WebSocket clients, client i is user
 * "cu<i>" in room "cr<i % R>" on server (i / R) % P, so every room has
 * members on every server.  After the ramp (all joined) it prints READY and
 * sends --rate messages per second in all (the clients take turns in a
 * fixed cyclic order; a client that is not joined at its turn skips it).
 *
 * A client whose connection goes away (reset, close frame, worker killed,
 * server stopped) reconnects to the same server after 50-150 ms, retrying
 * every 250 ms while the server is down, and joins again with "since" = the
 * last id it saw in its room (with "history": 1000 if it saw none yet).
 *
 * Every frame but presence, ping and pong is logged, one line each,
 * tab-separated, t in ms since start:
 *   T  0 epoch_ms                   the wall clock at t 0 (first line)
 *   N  cl room port user            a client (at start)
 *   C  t cl conn                    upgraded (connection number conn)
 *   J  t cl conn since              join sent (since: "-" first join,
 *                                    "h" history 1000, else the id)
 *   j  t cl conn                    joined
 *   H  t cl conn complete n         history reply, then its n messages:
 *   h  t cl conn id user content
 *   R, r                            the same for the reply to a history
 *                                    request (limit 1000) that a resume
 *                                    answered complete:false makes
 *   m  t cl conn id user content    live message
 *   S  t cl conn ref                send (content "k<cl>.<ref>")
 *   A  t cl conn ref id             ack
 *   E  t cl conn ref code           error (ref "-" when none)
 *   X  t cl conn why                connection lost
 *   U  t cl conn type               any other frame
 *
 * Commands on stdin, one a line: "drop PCT" resets PCT% of the open
 * connections (RST, they reconnect); "end" stops sending and drains: exit
 * once every client is joined and resumed, no ack is outstanding on a live
 * connection and nothing arrived for --quiet seconds (or after --drain).
 * The last line on stdout is a JSON summary (CPU seconds, counts).
 *
 * Loopback only (resolve_loopback).
 */

#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "benchlib.h"


const char  *bench_prog = "chaosgen";

enum { ST_WAIT, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_JOINING,
       ST_RESUMING, ST_READY };

/*
 * A resume asks for what came after an id seen RESUME_MARGIN_MS before the
 * last one, not after the last: ids of different servers are ordered by
 * their number, not by when they arrive here (another server's message,
 * numbered lower, can come later through Redis, later still after an
 * outage), so the last id seen is no cut of what was received.  The
 * overlap comes again in the history reply; a client dedupes it by id
 * (the checker counts it apart).
 */
#define RECENT           64
#define RESUME_MARGIN_MS 3000

typedef struct {
    int        fd;
    int        idx;
    int        server;
    int        state;
    int        closing;
    int        joined_once;
    int        recovering;      /* a history request after complete:false */
    uint64_t   retry_ns;        /* when to ask again after an error */
    uint32_t   conn;            /* connection number, global */
    uint32_t   seq;             /* sends of this client */
    uint32_t   unacked;         /* sends on this connection without reply */
    uint32_t   ev;
    uint64_t   wake_ns;         /* ST_WAIT: when to reconnect */
    char       key[32];
    char       last[64];        /* last id seen in the room */
    char       recent[RECENT][64];  /* ids seen lately, and when */
    uint64_t   recent_ns[RECENT];
    uint32_t   nrecent;             /* ever seen; ring index % RECENT */
    ws_rx_t    rx;
    ws_tx_t    tx;
} client_t;


static struct {
    const char  *host;
    int          ports[8];
    int          nports;
    int          clients;
    int          rooms;
    double       rate;
    double       drain;
    double       quiet;
    int          inflight;
    uint64_t     seed;
    const char  *log;
    const char  *path;
} cfg = { "127.0.0.1", { 0 }, 0, 200, 20, 100, 60, 3, 200, 1, NULL,
          "/chat" };

static client_t                 *cl;
static int                       epfd;
static FILE                     *lg;
static uint64_t                  t0;
static uint32_t                  conn_seq;
static struct sockaddr_storage   addrs[8];
static socklen_t                 alens[8];
static char                      hosts[8][64];
static char                      rx_buf[65536];
static uint64_t                  last_input_ns;
static uint64_t                  n_sent, n_skipped, n_frames, n_conns,
                                 n_lost, n_dropped;
static int                       inflight;


static double
tms(void)
{
    return (double) (now_ns() - t0) / NS_PER_MS;
}


static void
set_events(client_t *c, uint32_t want)
{
    struct epoll_event  ev;

    if (c->fd < 0 || c->ev == want) {
        return;
    }
    ev.events = want;
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->ev = want;
}


static void
update_events(client_t *c)
{
    uint32_t  want = EPOLLIN;

    if (c->state == ST_CONNECTING || ws_tx_pending(&c->tx) > 0) {
        want |= EPOLLOUT;
    }
    set_events(c, want);
}


static void
lose(client_t *c, const char *why, int rst)
{
    struct linger  l = { 1, 0 };

    if (c->fd < 0) {
        return;
    }
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        inflight--;
    }
    if (c->state >= ST_OPEN) {
        fprintf(lg, "X\t%.3f\t%d\t%u\t%s\n", tms(), c->idx, c->conn, why);
        n_lost++;
    }
    if (rst) {
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd);
    c->fd = -1;
    c->ev = 0;
    ws_rx_free(&c->rx);
    ws_tx_free(&c->tx);
    memset(&c->rx, 0, sizeof(ws_rx_t));
    memset(&c->tx, 0, sizeof(ws_tx_t));
    c->state = ST_WAIT;
    c->closing = 0;
    c->unacked = 0;
    c->recovering = 0;
    c->retry_ns = 0;
    /* first attempt soon, then every 250 ms while the server is down */
    c->wake_ns = now_ns() + (c->conn ? 50 + rng64() % 100 : 250) * 1000000ULL;
}


static void
xmit(client_t *c, const char *p, size_t n)
{
    if (ws_tx_frame(&c->tx, c->fd, 1, p, n) != 0) {
        c->closing = 1;
        return;
    }
    update_events(c);
}


static const ws_rx_handler_t  handler;


static void
start(client_t *c)
{
    struct epoll_event  ev;
    int                 fd, one = 1;

    c->wake_ns = 0;
    fd = socket(addrs[c->server].ss_family,
                SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket: %s", strerror(errno));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->rx.h = &handler;
    c->rx.data = c;
    c->state = ST_CONNECTING;
    c->conn = 0;
    inflight++;
    if (connect(fd, (struct sockaddr *) &addrs[c->server], alens[c->server])
        != 0 && errno != EINPROGRESS)
    {
        lose(c, "connect", 0);
        return;
    }
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    c->ev = ev.events;
}


static void
on_connected(client_t *c)
{
    char       req[512], target[128];
    size_t     n;
    int        err = 0;
    socklen_t  el = sizeof(err);

    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) {
        lose(c, "connect", 0);
        return;
    }
    ws_make_key(rng64(), c->key);
    snprintf(target, sizeof(target), "%s?user=cu%d", cfg.path, c->idx);
    n = ws_request(req, sizeof(req), target, hosts[c->server], c->key);
    c->state = ST_HANDSHAKE;
    if (ws_tx_write(&c->tx, c->fd, req, n) != 0) {
        lose(c, "write", 0);
        return;
    }
    update_events(c);
}


static void
send_recover(client_t *c)
{
    char    buf[128];
    size_t  n;

    n = (size_t) snprintf(buf, sizeof(buf), "{\"type\":\"history\","
                          "\"room\":\"cr%d\",\"limit\":1000}",
                          c->idx % cfg.rooms);
    c->recovering = 1;
    c->retry_ns = 0;
    xmit(c, buf, n);
}


static const char *resume_since(client_t *c);


static void
send_join(client_t *c)
{
    char         buf[256];
    const char  *since;
    int          n;

    if (!c->joined_once) {
        n = snprintf(buf, sizeof(buf), "{\"type\":\"join\",\"room\":\"cr%d\"}",
                     c->idx % cfg.rooms);
        since = "-";
        c->state = ST_JOINING;

    } else if (c->last[0] == '\0') {
        n = snprintf(buf, sizeof(buf),
                     "{\"type\":\"join\",\"room\":\"cr%d\",\"history\":1000}",
                     c->idx % cfg.rooms);
        since = "h";
        c->state = ST_RESUMING;

    } else {
        since = resume_since(c);
        n = snprintf(buf, sizeof(buf),
                     "{\"type\":\"join\",\"room\":\"cr%d\",\"since\":\"%s\"}",
                     c->idx % cfg.rooms, since);
        c->state = ST_RESUMING;
    }
    fprintf(lg, "J\t%.3f\t%d\t%u\t%s\n", tms(), c->idx, c->conn, since);
    xmit(c, buf, (size_t) n);
}


/* field value (string contents or bare token) of key in [p, end) */
static int
field(const char *p, const char *end, const char *key, const char **v,
    size_t *vl)
{
    return json_scalar(json_find(p, (size_t) (end - p), key, strlen(key)),
                       end, v, vl);
}


static void
log_message(client_t *c, char kind, const char *p, const char *end)
{
    const char  *id, *user, *content;
    size_t       il, ul, cl_;

    if (field(p, end, "\"id\"", &id, &il) != 0) {
        id = "?"; il = 1;
    }
    if (field(p, end, "\"user\"", &user, &ul) != 0) {
        user = "?"; ul = 1;
    }
    if (field(p, end, "\"content\"", &content, &cl_) != 0) {
        content = "?"; cl_ = 1;
    }
    /* our contents and ids have no tabs or newlines; others are shown
     * as they are, escaped by the server's JSON */
    fprintf(lg, "%c\t%.3f\t%d\t%u\t%.*s\t%.*s\t%.*s\n", kind, tms(), c->idx,
            c->conn, (int) il, id, (int) ul, user, (int) cl_, content);
    if (il < sizeof(c->last) && id[0] != '?') {
        memcpy(c->last, id, il);
        c->last[il] = '\0';
        memcpy(c->recent[c->nrecent % RECENT], id, il);
        c->recent[c->nrecent % RECENT][il] = '\0';
        c->recent_ns[c->nrecent % RECENT] = now_ns();
        c->nrecent++;
    }
}


/* the id to resume after: see RESUME_MARGIN_MS */
static const char *
resume_since(client_t *c)
{
    uint32_t  i, n, k;
    uint64_t  newest;

    n = c->nrecent < RECENT ? c->nrecent : RECENT;
    newest = c->recent_ns[(c->nrecent - 1) % RECENT];

    for (i = 1; i <= n; i++) {
        k = (c->nrecent - i) % RECENT;
        if (newest - c->recent_ns[k] >= (uint64_t) RESUME_MARGIN_MS * 1000000) {
            return c->recent[k];
        }
    }

    /* all seen lately: the oldest kept */
    return c->recent[(c->nrecent - n) % RECENT];
}


/* the objects of the "messages" array of a history reply */
static int
log_history(client_t *c, const char *p, const char *end)
{
    const char  *v, *o, *s;
    size_t       vl;
    int          depth, str, n, complete;

    v = json_find(p, (size_t) (end - p), "\"complete\"", 10);
    if (json_scalar(v, end, &s, &vl) != 0) {
        s = "?"; vl = 1;
    }
    v = json_find(p, (size_t) (end - p), "\"messages\"", 10);
    n = 0;
    if (v != NULL && *v == '[') {
        /* count first: the header line carries n */
        for (o = v + 1, depth = 0, str = 0; o < end; o++) {
            if (str) {
                if (*o == '\\') { o++; } else if (*o == '"') { str = 0; }
                continue;
            }
            if (*o == '"') { str = 1; }
            else if (*o == '{') { if (depth++ == 0) { n++; } }
            else if (*o == '}') { depth--; }
            else if (*o == ']' && depth == 0) { break; }
        }
    }
    complete = (vl == 4 && memcmp(s, "true", 4) == 0);
    fprintf(lg, "%c\t%.3f\t%d\t%u\t%.*s\t%d\n", c->recovering ? 'R' : 'H',
            tms(), c->idx, c->conn, (int) vl, s, n);
    if (n == 0) {
        return complete;
    }
    for (o = v + 1, depth = 0, str = 0, s = NULL; o < end; o++) {
        if (str) {
            if (*o == '\\') { o++; } else if (*o == '"') { str = 0; }
            continue;
        }
        if (*o == '"') { str = 1; }
        else if (*o == '{') { if (depth++ == 0) { s = o; } }
        else if (*o == '}') {
            if (--depth == 0 && s != NULL) {
                log_message(c, c->recovering ? 'r' : 'h', s, o + 1);
            }
        }
        else if (*o == ']' && depth == 0) { break; }
    }
    return complete;
}


static int
rx_text(void *data, char *p, size_t n)
{
    client_t    *c = data;
    const char  *end = p + n, *t, *a, *b;
    size_t       tl, al, bl;

    n_frames++;
    last_input_ns = now_ns();
    if (field(p, end, "\"type\"", &t, &tl) != 0) {
        t = "?"; tl = 1;
    }

#define IS(s)  (tl == sizeof(s) - 1 && memcmp(t, s, tl) == 0)

    if (IS("message")) {
        log_message(c, 'm', p, end);

    } else if (IS("ack")) {
        if (field(p, end, "\"ref\"", &a, &al) != 0) {
            a = "-"; al = 1;
        }
        if (field(p, end, "\"id\"", &b, &bl) != 0) {
            b = "?"; bl = 1;
        }
        fprintf(lg, "A\t%.3f\t%d\t%u\t%.*s\t%.*s\n", tms(), c->idx, c->conn,
                (int) al, a, (int) bl, b);
        if (c->unacked) {
            c->unacked--;
        }

    } else if (IS("error")) {
        if (field(p, end, "\"ref\"", &a, &al) != 0) {
            a = "-"; al = 1;
        }
        if (field(p, end, "\"code\"", &b, &bl) != 0) {
            b = "?"; bl = 1;
        }
        fprintf(lg, "E\t%.3f\t%d\t%u\t%.*s\t%.*s\n", tms(), c->idx, c->conn,
                (int) al, a, (int) bl, b);
        if (al != 1 || a[0] != '-') {
            if (c->unacked) {
                c->unacked--;
            }

        } else if (c->recovering && c->state == ST_RESUMING) {
            /* our fill-in request was refused: ask again later */
            if (field(p, end, "\"retry_after_ms\"", &a, &al) != 0) {
                a = "1000";
            }
            c->retry_ns = now_ns() + (uint64_t) (atoi(a) + 100) * 1000000ULL;
        }

    } else if (IS("history")) {
        if (!log_history(c, p, end) && c->state == ST_RESUMING
            && !c->recovering)
        {
            /*
             * the server could not say what came after our since (an id
             * it never stored): what a client does then, fetch the latest
             * and keep what it has not seen (logged as R and r lines)
             */
            send_recover(c);
            return c->closing;
        }
        c->recovering = 0;
        if (c->state == ST_RESUMING) {
            c->state = ST_READY;
        }

    } else if (IS("joined")) {
        fprintf(lg, "j\t%.3f\t%d\t%u\n", tms(), c->idx, c->conn);
        if (c->state == ST_JOINING) {
            c->state = ST_READY;
            c->joined_once = 1;
        }

    } else if (IS("welcome")) {
        c->conn = ++conn_seq;
        n_conns++;
        fprintf(lg, "C\t%.3f\t%d\t%u\t%d\n", tms(), c->idx, c->conn,
                cfg.ports[c->server]);
        c->state = ST_OPEN;
        send_join(c);

    } else if (!IS("presence")) {
        fprintf(lg, "U\t%.3f\t%d\t%u\t%.*s\n", tms(), c->idx, c->conn,
                (int) tl, t);
    }

#undef IS

    return c->closing;
}


static int
rx_binary(void *data, char *p, size_t n)
{
    ((client_t *) data)->closing = 2;
    return 1;
}


static int
rx_ping(void *data, char *p, size_t n)
{
    client_t  *c = data;

    if (ws_tx_frame(&c->tx, c->fd, 0xA, p, n) != 0) {
        c->closing = 1;
    }
    return c->closing;
}


static int
rx_pong(void *data, char *p, size_t n)
{
    return 0;
}


static int
rx_close(void *data, unsigned code, char *p, size_t n)
{
    client_t  *c = data;

    c->closing = 1000000 + (int) code;
    return 1;
}


static void
rx_error(void *data, const char *what)
{
    ((client_t *) data)->closing = 3;
}


static const ws_rx_handler_t  handler = {
    rx_text, rx_binary, rx_ping, rx_pong, rx_close, rx_error
};


static void
closing_lose(client_t *c)
{
    u_char  code[2];
    char    why[32];

    if (c->closing >= 1000000) {
        /* answer the close frame as RFC 6455 wants, then go */
        code[0] = (u_char) ((c->closing - 1000000) >> 8);
        code[1] = (u_char) (c->closing - 1000000);
        (void) ws_tx_frame(&c->tx, c->fd, 8, (char *) code,
                           c->closing == 1000000 + 1005 ? 0 : 2);
        snprintf(why, sizeof(why), "close-%d", c->closing - 1000000);
    } else {
        snprintf(why, sizeof(why), c->closing == 2 ? "binary"
                 : c->closing == 3 ? "protocol" : "write");
    }
    lose(c, why, 0);
}


static void
on_readable(client_t *c)
{
    ssize_t  r;
    size_t   hlen;
    int      i, rc, status;
    char     why[128];

    for (i = 0; i < 8; i++) {
        r = recv(c->fd, rx_buf, sizeof(rx_buf), 0);
        if (r == 0) {
            lose(c, "eof", 0);
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            lose(c, errno == ECONNRESET ? "reset" : "error", 0);
            return;
        }
        if (c->state == ST_HANDSHAKE) {
            ws_rx_buffer(&c->rx, rx_buf, (size_t) r);
            rc = ws_response(c->rx.rbuf, c->rx.rlen, c->key, &hlen, &status,
                             why, sizeof(why));
            if (rc < 0) {
                lose(c, "handshake", 0);
                return;
            }
            if (rc == 0) {
                continue;
            }
            inflight--;
            c->state = ST_OPEN;
            ws_rx_discard(&c->rx, hlen);
            ws_rx_feed(&c->rx, NULL, 0);

        } else {
            ws_rx_feed(&c->rx, rx_buf, (size_t) r);
        }
        if (c->closing) {
            closing_lose(c);
            return;
        }
        if ((size_t) r < sizeof(rx_buf)) {
            return;
        }
    }
}


static void
do_send(client_t *c)
{
    char  buf[256];
    int   n;

    c->seq++;
    n = snprintf(buf, sizeof(buf),
                 "{\"type\":\"send\",\"room\":\"cr%d\",\"content\":"
                 "\"k%d.%u\",\"ref\":\"%u\"}",
                 c->idx % cfg.rooms, c->idx, c->seq, c->seq);
    fprintf(lg, "S\t%.3f\t%d\t%u\t%u\n", tms(), c->idx, c->conn, c->seq);
    c->unacked++;
    n_sent++;
    xmit(c, buf, (size_t) n);
}


static void
drop(int pct)
{
    int  i, open = 0, k = 0;

    for (i = 0; i < cfg.clients; i++) {
        if (cl[i].fd >= 0 && cl[i].state >= ST_OPEN) {
            open++;
        }
    }
    for (i = 0; i < cfg.clients; i++) {
        if (cl[i].fd >= 0 && cl[i].state >= ST_OPEN
            && (int) (rng64() % 100) < pct)
        {
            lose(&cl[i], "drop", 1);
            k++;
        }
    }
    n_dropped += k;
    fprintf(lg, "F\t%.3f\tdrop\t%d\t%d\n", tms(), k, open);
    fflush(lg);
}


static void
usage(void)
{
    fprintf(stderr,
        "usage: chaosgen --ports P1,P2 --log FILE [--clients N] [--rooms R]\n"
        "                [--rate MSG/S] [--seed N] [--drain S] [--quiet S]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    static struct option  lo[] = {
        { "ports", 1, 0, 'p' }, { "clients", 1, 0, 'c' },
        { "rooms", 1, 0, 'r' }, { "rate", 1, 0, 'R' }, { "seed", 1, 0, 's' },
        { "log", 1, 0, 'l' }, { "drain", 1, 0, 'd' }, { "quiet", 1, 0, 'q' },
        { "host", 1, 0, 'H' }, { 0, 0, 0, 0 }
    };
    struct epoll_event  evs[512], ev;
    struct rlimit       rl;
    struct rusage       ru;
    client_t           *c;
    uint64_t            now, send_t0 = 0, end_ns = 0, next_i = 0, due, sends;
    double              cpu_ready = 0, cpu;
    char                line[256], *tok, *save, *s;
    size_t              linelen = 0;
    ssize_t             r;
    int                 o, i, n, timeout, ready = 0, sending = 0, ending = 0,
                        all;

    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 'p':
            s = strdup(optarg);
            for (tok = strtok_r(s, ",", &save); tok && cfg.nports < 8;
                 tok = strtok_r(NULL, ",", &save))
            {
                cfg.ports[cfg.nports++] = atoi(tok);
            }
            break;
        case 'c': cfg.clients = atoi(optarg); break;
        case 'r': cfg.rooms = atoi(optarg); break;
        case 'R': cfg.rate = atof(optarg); break;
        case 's': cfg.seed = strtoull(optarg, NULL, 10); break;
        case 'l': cfg.log = optarg; break;
        case 'd': cfg.drain = atof(optarg); break;
        case 'q': cfg.quiet = atof(optarg); break;
        case 'H': cfg.host = optarg; break;
        default: usage();
        }
    }
    if (cfg.nports == 0 || cfg.log == NULL || cfg.clients < 1
        || cfg.rooms < 1)
    {
        usage();
    }

    bench_rng = splitmix64(cfg.seed ^ 0xc4a05);
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (i = 0; i < cfg.nports; i++) {
        resolve_loopback(cfg.host, cfg.ports[i], &addrs[i], &alens[i],
                         hosts[i], sizeof(hosts[i]));
    }
    lg = fopen(cfg.log, "w");
    if (lg == NULL) {
        die("%s: %s", cfg.log, strerror(errno));
    }
    setvbuf(lg, NULL, _IOFBF, 1 << 20);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);

    t0 = now_ns();
    {
        struct timespec  wall;

        /* the wall clock at t 0: the checker places the rows' commit
         * times (PostgreSQL's clock, this machine's) among the frames */
        clock_gettime(CLOCK_REALTIME, &wall);
        fprintf(lg, "T\t0.000\t%.3f\n",
                (double) wall.tv_sec * 1000 + wall.tv_nsec / 1e6);
    }
    cl = calloc((size_t) cfg.clients, sizeof(client_t));
    for (i = 0; i < cfg.clients; i++) {
        c = &cl[i];
        c->idx = i;
        c->fd = -1;
        c->server = (i / cfg.rooms) % cfg.nports;
        c->state = ST_WAIT;
        c->wake_ns = 1;
        fprintf(lg, "N\t%d\tcr%d\t%d\tcu%d\n", i, i % cfg.rooms,
                cfg.ports[c->server], i);
    }

    for ( ;; ) {
        now = now_ns();

        /* (re)connections due, at most cfg.inflight handshakes at once */
        for (i = 0; i < cfg.clients && inflight < cfg.inflight; i++) {
            c = &cl[i];
            if (c->state == ST_WAIT && c->wake_ns != 0 && c->wake_ns <= now
                && !(ending && now > end_ns + (uint64_t) (cfg.drain * 1e9)))
            {
                start(c);
            }
        }

        for (i = 0; i < cfg.clients; i++) {
            c = &cl[i];
            if (c->retry_ns != 0 && c->retry_ns <= now && c->fd >= 0
                && c->recovering)
            {
                send_recover(c);
            }
        }

        all = 1;
        for (i = 0; i < cfg.clients; i++) {
            if (cl[i].state != ST_READY || (ending && cl[i].unacked)) {
                all = 0;
                break;
            }
        }

        if (!ready && all) {
            ready = 1;
            getrusage(RUSAGE_SELF, &ru);
            cpu_ready = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
                        + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
            fprintf(lg, "F\t%.3f\tready\n", tms());
            printf("READY %.3f\n", tms());
            fflush(stdout);
            sending = 1;
            send_t0 = now;
            next_i = 0;
            sends = 0;
        }

        if (sending) {
            due = (uint64_t) ((double) (now - send_t0) / 1e9 * cfg.rate);
            while (sends < due) {
                c = &cl[next_i++ % (uint64_t) cfg.clients];
                sends++;
                if (c->state == ST_READY && c->fd >= 0) {
                    do_send(c);
                } else {
                    n_skipped++;
                }
            }
        }

        if (ending
            && ((all && now - last_input_ns > (uint64_t) (cfg.quiet * 1e9))
                || now > end_ns + (uint64_t) (cfg.drain * 1e9)))
        {
            break;
        }

        timeout = sending ? 2 : 20;
        n = epoll_wait(epfd, evs, 512, timeout);
        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            if (c == NULL) {
                while ((r = read(0, line + linelen,
                                 sizeof(line) - 1 - linelen)) > 0)
                {
                    linelen += (size_t) r;
                }
                if (r == 0) {
                    /* stdin closed: end */
                    epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
                    strcpy(line + linelen, "\nend\n");
                    linelen += 5;
                }
                line[linelen] = '\0';
                while ((s = strchr(line, '\n')) != NULL) {
                    *s = '\0';
                    if (strncmp(line, "drop ", 5) == 0) {
                        drop(atoi(line + 5));
                    } else if (strcmp(line, "end") == 0 && !ending) {
                        ending = 1;
                        sending = 0;
                        end_ns = now_ns();
                        fprintf(lg, "F\t%.3f\tend\n", tms());
                    } else if (strncmp(line, "mark ", 5) == 0) {
                        fprintf(lg, "F\t%.3f\t%s\n", tms(), line + 5);
                    }
                    linelen -= (size_t) (s + 1 - line);
                    memmove(line, s + 1, linelen + 1);
                }
                if (linelen >= sizeof(line) - 1) {
                    linelen = 0;
                }
                continue;
            }
            if (c->fd < 0) {
                continue;
            }
            if (c->state == ST_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    on_connected(c);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (ws_tx_flush(&c->tx, c->fd) != 0) {
                    lose(c, "write", 0);
                    continue;
                }
                update_events(c);
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(c);
            }
            if (c->fd >= 0 && c->closing) {
                closing_lose(c);
            }
        }
    }

    getrusage(RUSAGE_SELF, &ru);
    cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
          + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    n = 0;
    for (i = 0; i < cfg.clients; i++) {
        if (cl[i].state != ST_READY) {
            n++;
        }
    }
    fprintf(lg, "F\t%.3f\tdone\n", tms());
    fclose(lg);
    printf("{\"sent\":%llu,\"skipped\":%llu,\"frames\":%llu,"
           "\"connections\":%llu,\"lost\":%llu,\"dropped\":%llu,"
           "\"not_ready_at_end\":%d,\"cpu_s\":%.2f,\"cpu_ramp_s\":%.2f,"
           "\"send_s\":%.1f,\"cpu_pct\":%.1f}\n",
           U64(n_sent), U64(n_skipped), U64(n_frames), U64(n_conns),
           U64(n_lost), U64(n_dropped), n, cpu, cpu_ready,
           (double) (end_ns - send_t0) / 1e9,
           end_ns > send_t0
           ? 100.0 * (cpu - cpu_ready) / ((double) (now_ns() - send_t0) / 1e9)
           : 0.0);
    return 0;
}
