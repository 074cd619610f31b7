/*
 * benchlib - what chatbench and abuse share: RFC 6455 client framing (masked
 * frames out, an incremental parser of server frames in, the upgrade request
 * and the check of its response), a write queue, SHA-1/base64, a log-linear
 * histogram, a small counted table, a JSON scanner, /proc readers and the
 * loopback-only target resolution.
 *
 * Nothing here keeps global state but the random generator; every function
 * works on what it is given, so both programs drive their own event loops.
 */

#ifndef BENCHLIB_H_INCLUDED
#define BENCHLIB_H_INCLUDED

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>


#define U64(x)          ((unsigned long long) (x))
#define NS_PER_S        1000000000ULL
#define NS_PER_MS       1000000.0

#define KV_MAX          24
#define WS_MAX_FRAME    (16u << 20)     /* largest server message accepted */
#define WS_MAX_HEADER   8192            /* largest handshake response */
#define WS_FRAME_HDR    14              /* largest client frame header */

#define KEY(s)          s, sizeof(s) - 1


/* the program's name in messages ("chatbench", "abuse"): set by main() */
extern const char  *bench_prog;

extern uint64_t     bench_rng;


/* ------------------------------------------------------------------------ */
/* small utilities                                                          */

static inline uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * NS_PER_S + (uint64_t) ts.tv_nsec;
}


static inline uint64_t
rng64(void)
{
    /* xorshift64* */
    bench_rng ^= bench_rng >> 12;
    bench_rng ^= bench_rng << 25;
    bench_rng ^= bench_rng >> 27;
    return bench_rng * 0x2545F4914F6CDD1DULL;
}


uint64_t splitmix64(uint64_t x);
void *xrealloc(void *p, size_t n);
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));


/* a tiny counted table: "reason" -> count, for error codes and failures */
typedef struct {
    char      key[40];
    uint64_t  n;
} kv_t;

typedef struct {
    kv_t      e[KV_MAX];
    int       n;
    uint64_t  overflow;
} kvtab_t;

void kv_add(kvtab_t *t, const char *key, size_t len);
void kv_addf(kvtab_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
uint64_t kv_get(const kvtab_t *t, const char *key);
void print_kv(FILE *f, const kvtab_t *t);


/* ------------------------------------------------------------------------ */
/* SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept                  */

void sha1(const void *data, size_t len, uint8_t out[20]);
size_t base64_encode(const uint8_t *in, size_t n, char *out);
void ws_accept_for(const char *key, char out[32]);


/* ------------------------------------------------------------------------ */
/* log-linear histogram: 64 linear sub-buckets per power of two (~1.6%)      */

#define H_SUB_BITS  6
#define H_SUB       (1 << H_SUB_BITS)
#define H_MAX_EXP   44                  /* 2^45 ns ~ 9.7 hours, clamped */
#define H_BUCKETS   ((H_MAX_EXP - H_SUB_BITS + 2) * H_SUB)

typedef struct {
    uint64_t  b[H_BUCKETS];
    uint64_t  n;
    uint64_t  min;
    uint64_t  max;
    double    sum;
} hist_t;

int h_index(uint64_t v);
uint64_t h_value(int idx);
void h_record(hist_t *h, uint64_t v);
uint64_t h_quantile(const hist_t *h, double q);


/* ------------------------------------------------------------------------ */
/* JSON: scanning server objects, writing our reports                       */

const char *json_find(const char *p, size_t n, const char *key, size_t klen);
int json_scalar(const char *v, const char *end, const char **out,
    size_t *len);
void json_str(FILE *f, const char *s);
void json_kv(FILE *f, const char *name, const kvtab_t *t);
void json_hist(FILE *f, const char *name, const hist_t *h);


/* ------------------------------------------------------------------------ */
/* RFC 6455 client side                                                     */

/* one masked client frame into out (len + WS_FRAME_HDR bytes); its size */
size_t ws_frame(char *out, int opcode, const char *payload, size_t len);

/*
 * Incremental parser of server frames, under any TCP segmentation:
 * fragmented messages are reassembled, control frames may come between
 * fragments.  Every handler returns 0 to go on or non-zero to stop parsing
 * (the connection is going away); after a stop or an error the parser
 * ignores further input.  Payloads are only valid during the call.
 */
typedef struct {
    int   (*text)(void *data, char *p, size_t n);
    int   (*binary)(void *data, char *p, size_t n);
    int   (*ping)(void *data, char *p, size_t n);
    int   (*pong)(void *data, char *p, size_t n);
    /* code 1005 when the frame has none; p, n: the reason */
    int   (*close)(void *data, unsigned code, char *p, size_t n);
    /* a protocol error (what: a short phrase); parsing stops */
    void  (*error)(void *data, const char *what);
} ws_rx_handler_t;

typedef struct {
    const ws_rx_handler_t  *h;
    void                   *data;
    uint64_t                max;        /* message size limit, 0: default */
    char                   *rbuf;       /* unparsed input */
    uint32_t                rlen, rcap;
    char                   *msg;        /* fragments of the current message */
    uint32_t                mlen, mcap;
    uint8_t                 in_msg;
    uint8_t                 msg_op;
    uint8_t                 stopped;
    uint8_t                 msg_z;      /* the message has RSV1 */
} ws_rx_t;

/*
 * permessage-deflate (RFC 7692): when set, ws_request() offers it and the
 * parser inflates messages with RSV1 (no context takeover: the server's
 * answer always says so)
 */
extern int  ws_deflate;

/* parse newly received bytes (n may be 0 to parse what is buffered) */
void ws_rx_feed(ws_rx_t *rx, const char *data, size_t n);
/* buffer bytes without parsing them (the handshake response) */
void ws_rx_buffer(ws_rx_t *rx, const char *data, size_t n);
/* drop the first n buffered bytes */
void ws_rx_discard(ws_rx_t *rx, size_t n);
void ws_rx_free(ws_rx_t *rx);

/*
 * Output the socket did not take.  ws_tx_write sends at once when nothing
 * is queued and queues the rest; ws_tx_flush offers the queue again.  Both
 * return -1 on a socket error, else 0.  With fd < 0 (tests) they only queue.
 */
typedef struct {
    char      *wbuf;
    uint32_t   woff, wlen, wcap;
} ws_tx_t;

int ws_tx_write(ws_tx_t *tx, int fd, const char *p, size_t n);
int ws_tx_frame(ws_tx_t *tx, int fd, int opcode, const char *p, size_t n);
int ws_tx_flush(ws_tx_t *tx, int fd);
void ws_tx_free(ws_tx_t *tx);


static inline size_t
ws_tx_pending(const ws_tx_t *tx)
{
    return tx->wlen - tx->woff;
}


/* a random Sec-WebSocket-Key (16 bytes of seed, base64) */
void ws_make_key(uint64_t seed, char out[32]);

/* the upgrade request for target ("/chat?user=u"); 0 if it does not fit */
size_t ws_request(char *out, size_t cap, const char *target,
    const char *host, const char *key);

/*
 * The response buffered so far: 0 incomplete, 1 upgraded (*hlen: bytes of
 * the response head, frames may follow), -1 refused (why: "handshake: ...",
 * *status: the HTTP status or 0).
 */
int ws_response(const char *buf, size_t len, const char *key, size_t *hlen,
    int *status, char *why, size_t wcap);

/* a header's value in a response, case-insensitive name */
const char *http_header(const char *hdrs, size_t len, const char *name,
    size_t *vlen);


/* ------------------------------------------------------------------------ */
/* targets and /proc                                                        */

int is_loopback(const struct sockaddr_storage *ss);

/*
 * host must be a numeric loopback address (127.0.0.0/8, ::1, or
 * "localhost"): anything else dies.  Fills the address and the Host header.
 */
void resolve_loopback(const char *host, int port, struct sockaddr_storage *ss,
    socklen_t *len, char *host_hdr, size_t cap);

/* utime + stime in ticks and the parent; -1 when the process is gone */
int proc_stat(pid_t pid, uint64_t *ticks, pid_t *ppid);
pid_t read_pidfile(const char *path);


#endif /* BENCHLIB_H_INCLUDED */
