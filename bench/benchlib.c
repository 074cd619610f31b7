/*
 * benchlib - code shared by chatbench and abuse; see benchlib.h.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "benchlib.h"


#define WS_GUID         "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


uint64_t  bench_rng = 0x9e3779b97f4a7c15ULL;


/* ------------------------------------------------------------------------ */
/* small utilities                                                          */

uint64_t
splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}


void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", bench_prog, n);
        exit(2);
    }
    return p;
}


void
die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fprintf(stderr, "%s: ", bench_prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}


void
kv_add(kvtab_t *t, const char *key, size_t len)
{
    int  i;

    if (len >= sizeof(t->e[0].key)) {
        len = sizeof(t->e[0].key) - 1;
    }

    for (i = 0; i < t->n; i++) {
        if (strlen(t->e[i].key) == len && memcmp(t->e[i].key, key, len) == 0) {
            t->e[i].n++;
            return;
        }
    }

    if (t->n == KV_MAX) {
        t->overflow++;
        return;
    }

    memcpy(t->e[t->n].key, key, len);
    t->e[t->n].key[len] = '\0';
    t->e[t->n].n = 1;
    t->n++;
}


void
kv_addf(kvtab_t *t, const char *fmt, ...)
{
    char     buf[64];
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    kv_add(t, buf, strlen(buf));
}


uint64_t
kv_get(const kvtab_t *t, const char *key)
{
    int  i;

    for (i = 0; i < t->n; i++) {
        if (strcmp(t->e[i].key, key) == 0) {
            return t->e[i].n;
        }
    }
    return 0;
}


void
print_kv(FILE *f, const kvtab_t *t)
{
    int  i;

    if (t->n == 0 && t->overflow == 0) {
        fprintf(f, "none");
    }
    for (i = 0; i < t->n; i++) {
        fprintf(f, "%s%s=%llu", i ? ", " : "", t->e[i].key, U64(t->e[i].n));
    }
    if (t->overflow) {
        fprintf(f, ", (other)=%llu", U64(t->overflow));
    }
}


/* ------------------------------------------------------------------------ */
/* SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept                  */

static inline uint32_t
rol32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}


static void
sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t  w[80], a, b, c, d, e, f, k, t;
    int       i;

    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t) p[4 * i] << 24 | (uint32_t) p[4 * i + 1] << 16
               | (uint32_t) p[4 * i + 2] << 8 | (uint32_t) p[4 * i + 3];
    }
    for (i = 16; i < 80; i++) {
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }

    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];

    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }

    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}


void
sha1(const void *data, size_t len, uint8_t out[20])
{
    const uint8_t  *p = data;
    uint32_t        h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE,
                             0x10325476, 0xC3D2E1F0 };
    uint8_t         blk[64];
    uint64_t        bits = (uint64_t) len * 8;
    size_t          rest;
    int             i;

    while (len >= 64) {
        sha1_block(h, p);
        p += 64;
        len -= 64;
    }

    rest = len;
    memset(blk, 0, sizeof(blk));
    memcpy(blk, p, rest);
    blk[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, blk);
        memset(blk, 0, sizeof(blk));
    }
    for (i = 0; i < 8; i++) {
        blk[63 - i] = (uint8_t) (bits >> (8 * i));
    }
    sha1_block(h, blk);

    for (i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t) (h[i] >> 24);
        out[4 * i + 1] = (uint8_t) (h[i] >> 16);
        out[4 * i + 2] = (uint8_t) (h[i] >> 8);
        out[4 * i + 3] = (uint8_t) h[i];
    }
}


size_t
base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char  tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t             i, o = 0;
    uint32_t           v;

    for (i = 0; i + 2 < n; i += 3) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        v = (uint32_t) in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}


/* accept = base64(sha1(key + GUID)), 28 chars + NUL */
void
ws_accept_for(const char *key, char out[32])
{
    char     buf[128];
    uint8_t  dig[20];
    int      n;

    n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
    sha1(buf, (size_t) n, dig);
    base64_encode(dig, 20, out);
}


/* ------------------------------------------------------------------------ */
/* log-linear histogram                                                     */

int
h_index(uint64_t v)
{
    int  e;

    if (v < H_SUB) {
        return (int) v;
    }
    e = 63 - __builtin_clzll(v);
    if (e > H_MAX_EXP) {
        e = H_MAX_EXP;
        v = (2ULL << H_MAX_EXP) - 1;
    }
    return (e - H_SUB_BITS + 1) * H_SUB
           + (int) ((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
}


/* representative value of a bucket: its midpoint */
uint64_t
h_value(int idx)
{
    int       e, sub;
    uint64_t  lo, w;

    if (idx < H_SUB) {
        return (uint64_t) idx;
    }
    e = idx / H_SUB + H_SUB_BITS - 1;
    sub = idx % H_SUB;
    lo = (uint64_t) (H_SUB + sub) << (e - H_SUB_BITS);
    w = 1ULL << (e - H_SUB_BITS);
    return lo + w / 2;
}


void
h_record(hist_t *h, uint64_t v)
{
    h->b[h_index(v)]++;
    if (h->n == 0 || v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
    h->n++;
    h->sum += (double) v;
}


uint64_t
h_quantile(const hist_t *h, double q)
{
    uint64_t  rank, acc = 0, v;
    int       i;

    if (h->n == 0) {
        return 0;
    }
    rank = (uint64_t) (q * (double) h->n);
    if ((double) rank < q * (double) h->n) {
        rank++;
    }
    if (rank == 0) {
        rank = 1;
    }
    for (i = 0; i < H_BUCKETS; i++) {
        acc += h->b[i];
        if (acc >= rank) {
            v = h_value(i);
            if (v > h->max) {
                v = h->max;
            }
            if (v < h->min) {
                v = h->min;
            }
            return v;
        }
    }
    return h->max;
}


/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

/* find "key" : in a JSON text, return the value start (after blanks) */
const char *
json_find(const char *p, size_t n, const char *key, size_t klen)
{
    const char  *end = p + n, *q = p, *v;

    while (q < end) {
        q = memmem(q, (size_t) (end - q), key, klen);
        if (q == NULL) {
            return NULL;
        }
        v = q + klen;
        /* key is given with its quotes; require a preceding { , or blank */
        if (q > p && q[-1] != '{' && q[-1] != ',' && !isspace((u_char) q[-1]))
        {
            q = v;
            continue;
        }
        while (v < end && isspace((u_char) *v)) {
            v++;
        }
        if (v < end && *v == ':') {
            v++;
            while (v < end && isspace((u_char) *v)) {
                v++;
            }
            return v < end ? v : NULL;
        }
        q = v;
    }
    return NULL;
}


/* a scalar at v: string contents (no unescaping) or bare token */
int
json_scalar(const char *v, const char *end, const char **out, size_t *len)
{
    const char  *s;

    if (v == NULL || v >= end) {
        return -1;
    }
    if (*v == '"') {
        s = ++v;
        while (v < end && *v != '"') {
            if (*v == '\\') {
                v++;
            }
            v++;
        }
        if (v >= end) {
            return -1;
        }
        *out = s;
        *len = (size_t) (v - s);
        return 0;
    }
    s = v;
    while (v < end && *v != ',' && *v != '}' && *v != ']'
           && !isspace((u_char) *v))
    {
        v++;
    }
    *out = s;
    *len = (size_t) (v - s);
    return 0;
}


void
json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
            fputc(*s, f);
        } else if ((u_char) *s < 0x20) {
            fprintf(f, "\\u%04x", (u_char) *s);
        } else {
            fputc(*s, f);
        }
    }
    fputc('"', f);
}


void
json_kv(FILE *f, const char *name, const kvtab_t *t)
{
    int  i;

    fprintf(f, ",\"%s\":{", name);
    for (i = 0; i < t->n; i++) {
        if (i) {
            fputc(',', f);
        }
        json_str(f, t->e[i].key);
        fprintf(f, ":%llu", U64(t->e[i].n));
    }
    if (t->overflow) {
        fprintf(f, "%s\"(other)\":%llu", t->n ? "," : "", U64(t->overflow));
    }
    fputc('}', f);
}


void
json_hist(FILE *f, const char *name, const hist_t *h)
{
    fprintf(f, ",\"%s\":{\"n\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
            "\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}", name, U64(h->n),
            h_quantile(h, 0.5) / NS_PER_MS, h_quantile(h, 0.9) / NS_PER_MS,
            h_quantile(h, 0.99) / NS_PER_MS, h_quantile(h, 0.999) / NS_PER_MS,
            h->max / NS_PER_MS, h->n ? h->sum / h->n / NS_PER_MS : 0.0);
}


/* ------------------------------------------------------------------------ */
/* RFC 6455 client side: frames out                                         */

size_t
ws_frame(char *out, int opcode, const char *payload, size_t len)
{
    uint8_t   *o = (uint8_t *) out, *mk;
    uint32_t   m;
    size_t     h, i;

    o[0] = (uint8_t) (0x80 | opcode);
    if (len < 126) {
        o[1] = (uint8_t) (0x80 | len);
        h = 2;
    } else if (len < 65536) {
        o[1] = 0x80 | 126;
        o[2] = (uint8_t) (len >> 8);
        o[3] = (uint8_t) len;
        h = 4;
    } else {
        o[1] = 0x80 | 127;
        for (i = 0; i < 8; i++) {
            o[2 + i] = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
        }
        h = 10;
    }
    m = (uint32_t) rng64();
    memcpy(o + h, &m, 4);
    mk = o + h;
    h += 4;
    for (i = 0; i < len; i++) {
        o[h + i] = (uint8_t) payload[i] ^ mk[i & 3];
    }
    return h + len;
}


/* ------------------------------------------------------------------------ */
/* RFC 6455 client side: frames in                                          */

static void
ws_rx_append(char **buf, uint32_t *len, uint32_t *cap, const char *p,
    size_t n, size_t first)
{
    size_t  need = (size_t) *len + n, c;

    if (need > *cap) {
        c = *cap ? *cap : first;
        while (c < need) {
            c *= 2;
        }
        *buf = xrealloc(*buf, c);
        *cap = (uint32_t) c;
    }
    memcpy(*buf + *len, p, n);
    *len += (uint32_t) n;
}


static void
ws_rx_error(ws_rx_t *rx, const char *what)
{
    rx->stopped = 1;
    rx->h->error(rx->data, what);
}


int  ws_deflate;


/* a compressed message: inflated into a buffer of the process (reused) */
static int
ws_rx_inflated(ws_rx_t *rx, int op, char *p, size_t n)
{
    int              rc;
    static z_stream  z;
    static int       init;
    static char     *out;
    static size_t    cap;
    static char      tail[4] = { 0x00, 0x00, (char) 0xff, (char) 0xff };
    size_t           len;
    int              piece;

    if (!init) {
        if (inflateInit2(&z, -15) != Z_OK) {
            ws_rx_error(rx, "inflateInit2");
            return 1;
        }
        init = 1;
    } else {
        inflateReset(&z);
    }

    if (cap < 65536) {
        cap = 65536;
        out = xrealloc(out, cap);
    }

    len = 0;

    for (piece = 0; piece < 2; piece++) {
        z.next_in = (Bytef *) (piece ? tail : p);
        z.avail_in = (uInt) (piece ? 4 : n);

        for ( ;; ) {
            if (len == cap) {
                cap *= 2;
                out = xrealloc(out, cap);
            }
            z.next_out = (Bytef *) out + len;
            z.avail_out = (uInt) (cap - len);
            rc = inflate(&z, Z_SYNC_FLUSH);
            len = cap - z.avail_out;
            if (rc == Z_STREAM_END) {
                piece = 2;
                break;
            }
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                ws_rx_error(rx, "corrupt compressed message");
                return 1;
            }
            if (z.avail_out != 0) {
                break;
            }
        }
    }

    return op == 0x1 ? rx->h->text(rx->data, out, len)
                     : rx->h->binary(rx->data, out, len);
}


/* parse complete frames from buf; returns the bytes consumed */
static size_t
ws_rx_parse(ws_rx_t *rx, char *buf, size_t len)
{
    size_t    off = 0, hdr, i;
    uint64_t  plen, max;
    uint8_t  *b, *mk, *pl;
    int       fin, op, masked, stop;
    unsigned  code;

    max = rx->max ? rx->max : WS_MAX_FRAME;

    while (!rx->stopped) {
        b = (uint8_t *) buf + off;
        if (len - off < 2) {
            break;
        }
        fin = b[0] & 0x80;
        op = b[0] & 0x0f;
        masked = b[1] & 0x80;
        plen = b[1] & 0x7f;
        hdr = 2;

        if ((b[0] & 0x70) && !(ws_deflate && (b[0] & 0x70) == 0x40
                                && (b[0] & 0x0f) != 0 && (b[0] & 0x08) == 0))
        {
            ws_rx_error(rx, "rsv bits");
            break;
        }
        if (plen == 126) {
            if (len - off < 4) {
                break;
            }
            plen = (uint64_t) b[2] << 8 | b[3];
            hdr = 4;
        } else if (plen == 127) {
            if (len - off < 10) {
                break;
            }
            plen = 0;
            for (i = 0; i < 8; i++) {
                plen = plen << 8 | b[2 + i];
            }
            hdr = 10;
        }
        if (plen > max) {
            ws_rx_error(rx, "frame too large");
            break;
        }
        mk = b + hdr;
        if (masked) {
            hdr += 4;
        }
        if (len - off < hdr + plen) {
            break;
        }
        pl = b + hdr;
        if (masked) {           /* servers must not mask; tolerate it */
            for (i = 0; i < plen; i++) {
                pl[i] ^= mk[i & 3];
            }
        }
        off += hdr + plen;

        if (op & 0x08) {                        /* control frame */
            if (!fin || plen > 125) {
                ws_rx_error(rx, "bad control frame");
                break;
            }
            if (op == 0x9) {
                stop = rx->h->ping(rx->data, (char *) pl, plen);
            } else if (op == 0xA) {
                stop = rx->h->pong(rx->data, (char *) pl, plen);
            } else if (op == 0x8) {
                code = plen >= 2 ? (unsigned) (pl[0] << 8 | pl[1]) : 1005;
                stop = rx->h->close(rx->data, code,
                                    (char *) pl + (plen >= 2 ? 2 : 0),
                                    plen >= 2 ? plen - 2 : 0);
            } else {
                ws_rx_error(rx, "bad opcode");
                break;
            }
            if (stop) {
                rx->stopped = 1;
            }
            continue;
        }

        if (op == 0x0) {                        /* continuation */
            if (!rx->in_msg) {
                ws_rx_error(rx, "stray continuation");
                break;
            }
            if ((uint64_t) rx->mlen + plen > max) {
                ws_rx_error(rx, "message too large");
                break;
            }
            ws_rx_append(&rx->msg, &rx->mlen, &rx->mcap, (char *) pl, plen,
                         1024);
            if (fin && rx->msg_z) {
                rx->in_msg = 0;
                stop = ws_rx_inflated(rx, rx->msg_op, rx->msg, rx->mlen);
                rx->mlen = 0;
                if (stop) {
                    rx->stopped = 1;
                }
            } else if (fin) {
                rx->in_msg = 0;
                if (rx->msg_op == 0x1) {
                    stop = rx->h->text(rx->data, rx->msg, rx->mlen);
                } else {
                    stop = rx->h->binary(rx->data, rx->msg, rx->mlen);
                }
                rx->mlen = 0;
                if (rx->mcap > 65536) {
                    free(rx->msg);
                    rx->msg = NULL;
                    rx->mcap = 0;
                }
                if (stop) {
                    rx->stopped = 1;
                }
            }
            continue;
        }

        if (op != 0x1 && op != 0x2) {
            ws_rx_error(rx, "bad opcode");
            break;
        }
        if (rx->in_msg) {
            ws_rx_error(rx, "data frame inside fragmented message");
            break;
        }
        rx->msg_z = (b[0] & 0x40) ? 1 : 0;
        if (fin && rx->msg_z) {
            stop = ws_rx_inflated(rx, op, (char *) pl, plen);
            if (stop) {
                rx->stopped = 1;
            }
        } else if (fin) {
            if (op == 0x1) {
                stop = rx->h->text(rx->data, (char *) pl, plen);
            } else {
                stop = rx->h->binary(rx->data, (char *) pl, plen);
            }
            if (stop) {
                rx->stopped = 1;
            }
        } else {
            rx->in_msg = 1;
            rx->msg_op = (uint8_t) op;
            rx->mlen = 0;
            ws_rx_append(&rx->msg, &rx->mlen, &rx->mcap, (char *) pl, plen,
                         1024);
        }
    }
    return off;
}


void
ws_rx_feed(ws_rx_t *rx, const char *data, size_t n)
{
    size_t  used;

    if (rx->stopped) {
        return;
    }

    if (rx->rlen == 0) {
        if (n == 0) {
            return;
        }
        /* common case: parse straight from the receive buffer */
        used = ws_rx_parse(rx, (char *) data, n);
        if (used == n || rx->stopped) {
            return;
        }
        data += used;
        n -= used;
    }

    /* keep the partial frame (and whatever was buffered before it) */
    if (n > 0) {
        ws_rx_append(&rx->rbuf, &rx->rlen, &rx->rcap, data, n, 2048);
        if (rx->rlen == n) {
            return;             /* just parsed: nothing complete in it */
        }
    }

    used = ws_rx_parse(rx, rx->rbuf, rx->rlen);
    ws_rx_discard(rx, used);
}


void
ws_rx_buffer(ws_rx_t *rx, const char *data, size_t n)
{
    ws_rx_append(&rx->rbuf, &rx->rlen, &rx->rcap, data, n, 1024);
}


void
ws_rx_discard(ws_rx_t *rx, size_t n)
{
    if (n > 0) {
        memmove(rx->rbuf, rx->rbuf + n, rx->rlen - n);
        rx->rlen -= (uint32_t) n;
    }
    if (rx->rlen == 0) {
        free(rx->rbuf);
        rx->rbuf = NULL;
        rx->rcap = 0;
    }
}


void
ws_rx_free(ws_rx_t *rx)
{
    free(rx->rbuf);
    free(rx->msg);
    rx->rbuf = rx->msg = NULL;
    rx->rlen = rx->rcap = rx->mlen = rx->mcap = 0;
    rx->in_msg = 0;
}


/* ------------------------------------------------------------------------ */
/* output the socket did not take                                           */

static void
ws_tx_append(ws_tx_t *tx, const char *p, size_t n)
{
    size_t  need, cap;

    if (tx->woff > 0 && tx->woff == tx->wlen) {
        tx->woff = tx->wlen = 0;
    }
    need = (size_t) tx->wlen + n;
    if (need > tx->wcap) {
        if (tx->woff > 0) {
            memmove(tx->wbuf, tx->wbuf + tx->woff, tx->wlen - tx->woff);
            tx->wlen -= tx->woff;
            tx->woff = 0;
            need = (size_t) tx->wlen + n;
        }
        if (need > tx->wcap) {
            cap = tx->wcap ? tx->wcap : 1024;
            while (cap < need) {
                cap *= 2;
            }
            tx->wbuf = xrealloc(tx->wbuf, cap);
            tx->wcap = (uint32_t) cap;
        }
    }
    memcpy(tx->wbuf + tx->wlen, p, n);
    tx->wlen += (uint32_t) n;
}


int
ws_tx_write(ws_tx_t *tx, int fd, const char *p, size_t n)
{
    ssize_t  r;

    if (fd >= 0 && tx->wlen == tx->woff) {
        r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r == (ssize_t) n) {
            return 0;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                return -1;
            }
            r = 0;
        }
        p += r;
        n -= (size_t) r;
    }
    ws_tx_append(tx, p, n);
    return 0;
}


int
ws_tx_frame(ws_tx_t *tx, int fd, int opcode, const char *p, size_t n)
{
    char    stackbuf[4096];
    char   *buf = stackbuf;
    size_t  len;
    int     rc;

    if (n + WS_FRAME_HDR > sizeof(stackbuf)) {
        buf = xrealloc(NULL, n + WS_FRAME_HDR);
    }
    len = ws_frame(buf, opcode, p, n);
    rc = ws_tx_write(tx, fd, buf, len);
    if (buf != stackbuf) {
        free(buf);
    }
    return rc;
}


int
ws_tx_flush(ws_tx_t *tx, int fd)
{
    ssize_t  r;
    int      rc = 0;

    while (tx->wlen > tx->woff) {
        r = send(fd, tx->wbuf + tx->woff, tx->wlen - tx->woff,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                rc = -1;
            }
            break;
        }
        tx->woff += (uint32_t) r;
    }
    if (tx->woff == tx->wlen) {
        tx->woff = tx->wlen = 0;
        if (tx->wcap > 65536) {
            free(tx->wbuf);
            tx->wbuf = NULL;
            tx->wcap = 0;
        }
    }
    return rc;
}


void
ws_tx_free(ws_tx_t *tx)
{
    free(tx->wbuf);
    tx->wbuf = NULL;
    tx->wlen = tx->woff = tx->wcap = 0;
}


/* ------------------------------------------------------------------------ */
/* handshake                                                                */

void
ws_make_key(uint64_t seed, char out[32])
{
    uint8_t   raw[16];
    uint64_t  a, b;

    a = splitmix64(seed);
    b = splitmix64(a ^ 0x5bd1e995);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    base64_encode(raw, 16, out);
}


size_t
ws_request(char *out, size_t cap, const char *target, const char *host,
    const char *key)
{
    int  n;

    n = snprintf(out, cap,
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "%s"
                 "\r\n", target, host, key,
                 ws_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                              "client_max_window_bits\r\n" : "");
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}


int
ws_response(const char *buf, size_t len, const char *key, size_t *hlen,
    int *status, char *why, size_t wcap)
{
    const char  *end, *v;
    size_t       vlen;
    char         acc[32];

    *status = 0;
    end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > WS_MAX_HEADER) {
            snprintf(why, wcap, "handshake: response too long");
            return -1;
        }
        return 0;
    }
    *hlen = (size_t) (end - buf) + 4;

    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) {
        snprintf(why, wcap, "handshake: not HTTP");
        return -1;
    }
    *status = atoi(buf + 9);
    if (*status != 101) {
        snprintf(why, wcap, "handshake: status %d", *status);
        return -1;
    }
    ws_accept_for(key, acc);
    v = http_header(buf, *hlen, "Sec-WebSocket-Accept", &vlen);
    if (v == NULL || vlen != strlen(acc) || memcmp(v, acc, vlen) != 0) {
        snprintf(why, wcap, "handshake: bad Sec-WebSocket-Accept");
        return -1;
    }
    return 1;
}


const char *
http_header(const char *hdrs, size_t len, const char *name, size_t *vlen)
{
    const char  *p = hdrs, *end = hdrs + len, *eol, *v;
    size_t       nl = strlen(name);

    while (p < end) {
        eol = memmem(p, (size_t) (end - p), "\r\n", 2);
        if (eol == NULL) {
            eol = end;
        }
        if ((size_t) (eol - p) > nl && p[nl] == ':'
            && strncasecmp(p, name, nl) == 0)
        {
            v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            *vlen = (size_t) (eol - v);
            while (*vlen > 0 && (v[*vlen - 1] == ' ' || v[*vlen - 1] == '\t')) {
                (*vlen)--;
            }
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}


/* ------------------------------------------------------------------------ */
/* targets and /proc                                                        */

int
is_loopback(const struct sockaddr_storage *ss)
{
    const struct sockaddr_in   *a4 = (const struct sockaddr_in *) ss;
    const struct sockaddr_in6  *a6 = (const struct sockaddr_in6 *) ss;

    if (ss->ss_family == AF_INET) {
        return (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        return IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)
               || (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)
                   && a6->sin6_addr.s6_addr[12] == 127);
    }
    return 0;
}


void
resolve_loopback(const char *host, int port, struct sockaddr_storage *ss,
    socklen_t *len, char *host_hdr, size_t cap)
{
    struct sockaddr_in   *a4 = (struct sockaddr_in *) ss;
    struct sockaddr_in6  *a6 = (struct sockaddr_in6 *) ss;
    const char           *h = host;

    memset(ss, 0, sizeof(*ss));
    if (strcmp(h, "localhost") == 0) {
        h = "127.0.0.1";
    }
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t) port);
        *len = sizeof(*a4);
        snprintf(host_hdr, cap, "%s:%d", h, port);
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t) port);
        *len = sizeof(*a6);
        snprintf(host_hdr, cap, "[%s]:%d", h, port);
    } else {
        die("--host must be a numeric loopback address (127.x.x.x or ::1)");
    }
    if (!is_loopback(ss)) {
        die("refusing non-loopback target %s", host);
    }
}


int
proc_stat(pid_t pid, uint64_t *ticks, pid_t *ppid)
{
    char      path[64], buf[1024], *p;
    int       fd, i;
    ssize_t   n;
    uint64_t  ut = 0, stt = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL) {
        return -1;
    }
    p++;
    /* fields after "(comm)": 3 state, 4 ppid, ... 14 utime, 15 stime */
    for (i = 3; i <= 15 && *p; i++) {
        while (*p == ' ') {
            p++;
        }
        if (i == 4 && ppid != NULL) {
            *ppid = (pid_t) strtol(p, NULL, 10);
        } else if (i == 14) {
            ut = strtoull(p, NULL, 10);
        } else if (i == 15) {
            stt = strtoull(p, NULL, 10);
        }
        while (*p && *p != ' ') {
            p++;
        }
    }
    if (ticks != NULL) {
        *ticks = ut + stt;
    }
    return 0;
}


pid_t
read_pidfile(const char *path)
{
    FILE  *f;
    long   v = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%ld", &v) != 1) {
        v = 0;
    }
    fclose(f);
    return (pid_t) v;
}
