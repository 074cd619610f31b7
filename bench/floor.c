/*
 * floor - the kernel's price of one chat delivery on this machine.
 *
 * Opens N loopback TCP connection pairs, then, for several rounds, times N
 * send() calls of one 110-byte WebSocket frame (one per connection, as a chat
 * server fanning a message out to N members does) and the N recv() calls that
 * pick them up on the other ends.  Prints the CPU microseconds per send and per
 * recv and the deliveries per CPU-second that implies: no server can beat
 * one send() per delivery, and no client can beat one recv() per delivery.
 *
 *   floor [--conns N] [--rounds R] [--size B] [--fanout F] [--json]
 *
 * The mean (total CPU / total calls) is what the ceilings use: on loopback
 * the ACKs and wake-ups that some calls trigger are processed in the caller's
 * context, so per-round figures are bimodal and the minimum is optimistic.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


typedef struct {
    double  cpu_us;         /* per call */
    double  wall_us;
} sample_t;


static double
clock_us(clockid_t id)
{
    struct timespec  ts;

    clock_gettime(id, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


static void
die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(2);
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


typedef struct {
    double  mean, med, min, wall;   /* CPU us per call; wall: mean */
} summary_t;


static void
stats(sample_t *s, int n, summary_t *out)
{
    double  *v = malloc(sizeof(double) * (size_t) n);
    int      i;

    out->mean = out->wall = 0;
    for (i = 0; i < n; i++) {
        v[i] = s[i].cpu_us;
        out->mean += s[i].cpu_us / n;
        out->wall += s[i].wall_us / n;
    }
    qsort(v, (size_t) n, sizeof(double), cmp_double);
    out->med = v[n / 2];
    out->min = v[0];
    free(v);
}


int
main(int argc, char **argv)
{
    static struct option  opts[] = {
        { "conns", 1, 0, 'n' }, { "rounds", 1, 0, 'r' },
        { "size", 1, 0, 's' }, { "fanout", 1, 0, 'f' },
        { "json", 0, 0, 'j' }, { "help", 0, 0, 'h' }, { NULL, 0, 0, 0 }
    };
    int                 conns = 1000, rounds = 50, size = 110, fanout = 10;
    int                 json = 0, o, i, r, lfd, ep, one = 1, got, k;
    int                *srv, *cli;
    struct sockaddr_in  sa;
    socklen_t           sl = sizeof(sa);
    struct rlimit       rl;
    struct epoll_event  ev, *evs;
    char               *frame, buf[65536];
    sample_t           *s_send, *s_recv, *s_epoll;
    double              t0, w0;
    summary_t           S, R, E;
    ssize_t             n;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n': conns = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'f': fanout = atoi(optarg); break;
        case 'j': json = 1; break;
        default:
            printf("usage: floor [--conns N (1000)] [--rounds R (50)] "
                   "[--size B (110)] [--fanout F (10)] [--json]\n");
            return o == 'h' ? 0 : 2;
        }
    }
    if (conns < 1 || rounds < 1 || size < 2 || size > 65000 || fanout < 1) {
        fprintf(stderr, "floor: bad arguments\n");
        return 2;
    }

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0
        && (rlim_t) conns * 2 + 16 > rl.rlim_cur)
    {
        fprintf(stderr, "floor: --conns %d needs %d descriptors, limit %llu\n",
                conns, conns * 2 + 16, (unsigned long long) rl.rlim_cur);
        return 2;
    }

    /* a server -> client chat frame: FIN+text, 7-bit length, JSON */
    frame = malloc((size_t) size);
    {
        const char  *json_msg = "{\"type\":\"message\",\"room\":\"bench-r3\","
                                "\"id\":\"1234567\",\"user\":\"b42-17\","
                                "\"content\":\"t=1234567890123;s=3;n=99\","
                                "\"ts\":1700000000000}";
        size_t       pl = (size_t) size - 2, jl = strlen(json_msg);

        if (pl > 125) {
            pl = (size_t) size - 4;
        }
        frame[0] = (char) 0x81;
        if ((size_t) size - 2 <= 125) {
            frame[1] = (char) pl;
            memset(frame + 2, ' ', pl);
            memcpy(frame + 2, json_msg, jl < pl ? jl : pl);
        } else {
            frame[1] = 126;
            frame[2] = (char) (pl >> 8);
            frame[3] = (char) pl;
            memset(frame + 4, ' ', pl);
            memcpy(frame + 4, json_msg, jl < pl ? jl : pl);
        }
    }

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        die("socket");
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(lfd, 4096) != 0
        || getsockname(lfd, (struct sockaddr *) &sa, &sl) != 0)
    {
        die("listen");
    }

    srv = calloc((size_t) conns, sizeof(int));
    cli = calloc((size_t) conns, sizeof(int));
    for (i = 0; i < conns; i++) {
        cli[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cli[i] < 0 || connect(cli[i], (struct sockaddr *) &sa, sizeof(sa))) {
            die("connect");
        }
        srv[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (srv[i] < 0) {
            die("accept");
        }
        /* as nginx does for WebSocket connections */
        (void) setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) setsockopt(cli[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (fcntl(cli[i], F_SETFL, O_NONBLOCK) != 0) {
            die("fcntl");
        }
    }
    close(lfd);

    ep = epoll_create1(EPOLL_CLOEXEC);
    evs = calloc((size_t) conns, sizeof(*evs));
    for (i = 0; i < conns; i++) {
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t) i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cli[i], &ev) != 0) {
            die("epoll_ctl");
        }
    }

    s_send = calloc((size_t) rounds, sizeof(sample_t));
    s_recv = calloc((size_t) rounds, sizeof(sample_t));
    s_epoll = calloc((size_t) rounds, sizeof(sample_t));

    /* round -1 warms caches and the allocator; odd rounds use epoll */
    for (r = -1; r < 2 * rounds; r++) {
        sample_t  *ss = r >= 0 ? &s_send[r / 2] : NULL;

        w0 = clock_us(CLOCK_MONOTONIC);
        t0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
        for (i = 0; i < conns; i++) {
            n = send(srv[i], frame, (size_t) size, MSG_NOSIGNAL);
            if (n != size) {
                die("send");
            }
        }
        if (ss != NULL && r % 2 == 0) {
            ss->cpu_us = (clock_us(CLOCK_THREAD_CPUTIME_ID) - t0) / conns;
            ss->wall_us = (clock_us(CLOCK_MONOTONIC) - w0) / conns;
        }

        w0 = clock_us(CLOCK_MONOTONIC);
        t0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
        if (r < 0 || r % 2 == 0) {
            /* plain: one recv per connection */
            for (i = 0; i < conns; i++) {
                got = 0;
                while (got < size) {
                    n = recv(cli[i], buf, sizeof(buf), 0);
                    if (n > 0) {
                        got += (int) n;
                    } else if (n < 0 && errno != EAGAIN) {
                        die("recv");
                    }
                }
            }
            if (r >= 0) {
                s_recv[r / 2].cpu_us =
                    (clock_us(CLOCK_THREAD_CPUTIME_ID) - t0) / conns;
                s_recv[r / 2].wall_us =
                    (clock_us(CLOCK_MONOTONIC) - w0) / conns;
            }
        } else {
            /* as an event loop does: epoll_wait, then recv the ready ones */
            got = 0;
            while (got < conns) {
                k = epoll_wait(ep, evs, conns, 1000);
                if (k < 0) {
                    die("epoll_wait");
                }
                for (i = 0; i < k; i++) {
                    n = recv(cli[evs[i].data.u32], buf, sizeof(buf), 0);
                    if (n != size) {
                        errno = EIO;
                        die("recv (epoll)");
                    }
                    got++;
                }
            }
            s_epoll[r / 2].cpu_us =
                (clock_us(CLOCK_THREAD_CPUTIME_ID) - t0) / conns;
            s_epoll[r / 2].wall_us = (clock_us(CLOCK_MONOTONIC) - w0) / conns;
        }
    }

    stats(s_send, rounds, &S);
    stats(s_recv, rounds, &R);
    stats(s_epoll, rounds, &E);

    /*
     * Ceilings, in deliveries per CPU-second:
     *  - end to end: the server's send() plus the member's recv(), both on
     *    this machine's CPUs: 1e6 / (send + recv);
     *  - server only: one send() per delivery plus, once per message, the
     *    recv (with epoll) of the sender's frame, shared by F members:
     *    1e6 / (send + recv_epoll / F).  Compare with chatbench's
     *    "deliveries per server CPU-second".
     */
    {
        double  e2e = 1e6 / (S.mean + R.mean);
        double  srv_only = 1e6 / (S.mean + E.mean / fanout);

        if (json) {
            printf("{\"tool\":\"floor\",\"conns\":%d,\"rounds\":%d,"
                   "\"size\":%d,\"fanout\":%d,"
                   "\"send_cpu_us\":%.3f,\"send_cpu_us_median\":%.3f,"
                   "\"send_cpu_us_min\":%.3f,\"send_wall_us\":%.3f,"
                   "\"recv_cpu_us\":%.3f,\"recv_cpu_us_median\":%.3f,"
                   "\"recv_cpu_us_min\":%.3f,\"recv_wall_us\":%.3f,"
                   "\"epoll_recv_cpu_us\":%.3f,"
                   "\"epoll_recv_cpu_us_median\":%.3f,"
                   "\"epoll_recv_cpu_us_min\":%.3f,"
                   "\"epoll_recv_wall_us\":%.3f,"
                   "\"ceiling_end_to_end\":%.0f,\"ceiling_server\":%.0f}\n",
                   conns, rounds, size, fanout,
                   S.mean, S.med, S.min, S.wall, R.mean, R.med, R.min, R.wall,
                   E.mean, E.med, E.min, E.wall, e2e, srv_only);
        } else {
            printf("floor: %d loopback TCP pairs, %d-byte frames, %d rounds; "
                   "CPU us per call (thread CPU time)\n", conns, size, rounds);
            printf("                        mean   median     min    wall\n");
            printf("  send()              %6.3f  %6.3f  %6.3f  %6.3f\n",
                   S.mean, S.med, S.min, S.wall);
            printf("  recv()              %6.3f  %6.3f  %6.3f  %6.3f\n",
                   R.mean, R.med, R.min, R.wall);
            printf("  epoll_wait + recv() %6.3f  %6.3f  %6.3f  %6.3f\n",
                   E.mean, E.med, E.min, E.wall);
            printf("  ceiling end to end  1e6/(send+recv)          = %8.0f "
                   "deliveries per CPU-second\n", e2e);
            printf("  ceiling server      1e6/(send+epoll_recv/%d) = %8.0f "
                   "deliveries per server CPU-second\n", fanout, srv_only);
        }
    }

    for (i = 0; i < conns; i++) {
        close(srv[i]);
        close(cli[i]);
    }
    return 0;
}
