
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Message storage in PostgreSQL (see ngx_chat_store.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_remote.h"
#include "ngx_chat_pg.h"
#include "ngx_chat_store.h"


#define NGX_CHAT_STORE_BATCH      1000
#define NGX_CHAT_STORE_RETRY      1000
#define NGX_CHAT_STORE_READS_MAX  100     /* in flight per worker */

/*
 * how long a read waits for its turn or for PostgreSQL to come back (a
 * reconnect after a short outage takes up to ~6 s of backoff) before it
 * is answered as failed: a resume then says complete:false
 */
#define NGX_CHAT_STORE_READ_WAIT  10000

/* the arrays of an INSERT: id, zone, room, user, content, ts, prior, holes */
#define NGX_CHAT_STORE_FIELDS     8
#define NGX_CHAT_STORE_TS         5
#define NGX_CHAT_STORE_PRIOR      6

/* halves of halves of a batch: at most log2(NGX_CHAT_STORE_BATCH) + 1 */
#define NGX_CHAT_STORE_PLAN_MAX   16


struct ngx_chat_store_conf_s {
    ngx_chat_pg_conf_t         pg;
    ngx_uint_t                 queue_max;
};


/*
 * a read, waiting (in the FIFO "reads") or in flight; its parameters are
 * copied after it, so that it can be sent again after a lost connection
 */
typedef struct {
    ngx_queue_t                queue;
    ngx_chat_store_read_pt     handler;
    void                      *data;
    ngx_msec_t                 deadline;
    const char                *sql;
    int                        n;
    const char                *values[5];
    int                        lens[5];
} ngx_chat_store_read_t;


/* a batch's parameters: text array literals */
typedef struct {
    u_char                    *buf;
    const char                *values[NGX_CHAT_STORE_FIELDS];
    int                        lens[NGX_CHAT_STORE_FIELDS];
} ngx_chat_store_arrays_t;


typedef struct {
    ngx_chat_pg_t             *pg;
    ngx_chat_store_conf_t     *conf;
    ngx_chat_main_conf_t      *cmcf;
    ngx_queue_t                pending;
    ngx_queue_t                inflight;
    ngx_uint_t                 npending;
    ngx_uint_t                 ninflight;
    ngx_event_t                flush;     /* posted after each turn */
    ngx_event_t                retry;     /* while anything waits */
    ngx_uint_t                 up;
    ngx_uint_t                 connecting;    /* the first attempt */
    ngx_uint_t                 full_logged;

    /*
     * batches: at most limit messages (halved after a batch timed out,
     * doubled back after each success); after a batch was refused for a
     * reason one of its messages may be, the sizes of the halves still to
     * try, the next one last (a recursive bisection)
     */
    ngx_uint_t                 limit;
    ngx_uint_t                 plan[NGX_CHAT_STORE_PLAN_MAX];
    ngx_uint_t                 nplan;
    ngx_msec_t                 sent;      /* the batch in flight */

    /*
     * reads have a connection of their own: PostgreSQL answers the queries
     * of one connection in turn, and an INSERT (and its acks) must not
     * wait behind a history read
     */
    ngx_chat_pg_t             *rpg;
    ngx_chat_pg_conf_t         wconf;         /* the conf, with a role */
    ngx_chat_pg_conf_t         rconf;
    ngx_uint_t                 rup;
    ngx_uint_t                 rconnecting;
    ngx_uint_t                 nreads;        /* in flight */
    ngx_queue_t                reads;         /* waiting, oldest first */
    ngx_uint_t                 exiting;
    ngx_uint_t                 nwaiting;
    ngx_event_t                rwait;         /* the oldest one's deadline */
} ngx_chat_store_t;


static void ngx_chat_store_state(ngx_chat_pg_t *pg, ngx_uint_t up,
    void *data);
static void ngx_chat_store_flush_handler(ngx_event_t *ev);
static void ngx_chat_store_retry_handler(ngx_event_t *ev);
static void ngx_chat_store_schedule(void);
static void ngx_chat_store_done(ngx_chat_pg_t *pg, PGresult *res,
    void *data);
static u_char *ngx_chat_store_array(u_char *p, ngx_str_t *s);
static size_t ngx_chat_store_array_len(ngx_str_t *s);
static void ngx_chat_store_set_state(ngx_uint_t up);
static void ngx_chat_store_read_done(ngx_chat_pg_t *pg, PGresult *res,
    void *data);
static void ngx_chat_store_read_state(ngx_chat_pg_t *pg, ngx_uint_t up,
    void *data);
static void ngx_chat_store_reads_run(ngx_chat_store_t *st);
static void ngx_chat_store_read_fail(ngx_chat_store_read_t *rd);
static void ngx_chat_store_rwait_handler(ngx_event_t *ev);
static ngx_chat_store_conf_t *ngx_chat_store_conf(ngx_conf_t *cf,
    ngx_chat_store_conf_t **scfp);
static void ngx_chat_store_requeue(ngx_chat_store_t *st);
static void ngx_chat_store_again(ngx_chat_store_t *st);
static void ngx_chat_store_check(ngx_chat_store_t *st);
static void ngx_chat_store_checked(ngx_chat_pg_t *pg, PGresult *res,
    void *data);
static void ngx_chat_store_commit(ngx_chat_store_t *st);
static void ngx_chat_store_failed(ngx_chat_store_t *st, PGresult *res);
static ngx_uint_t ngx_chat_store_lasting(PGresult *res);
static ngx_int_t ngx_chat_store_arrays(ngx_chat_store_t *st, ngx_uint_t nf,
    ngx_chat_store_arrays_t *a, ngx_log_t *log);
static ngx_str_t *ngx_chat_store_field(ngx_chat_store_item_t *it,
    ngx_uint_t k);


static ngx_chat_store_t  *ngx_chat_store;


/*
 * rows are scoped by zone: rooms of different zones share nothing; prior
 * (NULL for 0) and holes (NULL for none) say where the message came among
 * other servers' here (ngx_chat_store_item_t)
 */

static const char  ngx_chat_store_insert[] =
    "INSERT INTO messages (id, zone, room_id, user_id, content, created_at, "
    "prior, holes) "
    "SELECT i, z, r, u, c, to_timestamp(t / 1000.0), nullif(p, 0), "
    "nullif(h, '') "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[], $6::bigint[], $7::bigint[], $8::text[]) "
    "AS x(i, z, r, u, c, t, p, h) "
    "ON CONFLICT (id) DO NOTHING";


/*
 * After an INSERT that did not insert everything: the positions of the
 * messages whose row is this very message (committed by an earlier try
 * of the batch whose reply was lost), in order; a separate statement, so
 * that it sees rows committed while the INSERT waited for them
 */

static const char  ngx_chat_store_identical[] =
    "SELECT x.n FROM unnest($1::text[], $2::text[], $3::text[], "
    "$4::text[], $5::text[]) WITH ORDINALITY AS x(i, z, r, u, c, n) "
    "JOIN messages m ON m.id = x.i AND m.zone = x.z AND m.room_id = x.r "
    "AND m.user_id = x.u AND m.content = x.c "
    "ORDER BY x.n";


static const char  ngx_chat_store_last[] =
    "SELECT id, user_id, content, "
    "(extract(epoch FROM created_at) * 1000)::bigint, prior, holes "
    "FROM messages WHERE zone = $1 AND room_id = $2 "
    "ORDER BY created_at DESC, id DESC LIMIT $3";


/*
 * SINCE: the id's row, if stored, then the rows after it and those up to
 * NGX_CHAT_STORE_OVERLAP before it (the caller sorts them out).  An id not
 * stored (not committed yet, or never: a message delivered live whose
 * sender's worker died before the commit) is placed by the time in its
 * number ($5, NULL when it has none): the reply has what storage has after
 * it, and says it does not know the id (no row of NULLs).
 */

#define ngx_chat_store_str(x)   ngx_chat_store_str_(x)
#define ngx_chat_store_str_(x)  #x

static const char  ngx_chat_store_since[] =
    "WITH f AS (SELECT created_at FROM messages "
    "WHERE zone = $1 AND room_id = $2 AND id = $3), "
    "s AS (SELECT created_at FROM f UNION ALL "
    "SELECT to_timestamp($5::bigint / 1000.0) "
    "WHERE $5::bigint IS NOT NULL AND NOT EXISTS (SELECT 1 FROM f)) "
    "SELECT NULL::text, NULL::text, NULL::text, NULL::bigint, "
    "NULL::bigint, NULL::text FROM f "
    "UNION ALL (SELECT m.id, m.user_id, m.content, "
    "(extract(epoch FROM m.created_at) * 1000)::bigint, m.prior, m.holes "
    "FROM messages m, s WHERE m.zone = $1 AND m.room_id = $2 "
    "AND m.created_at >= s.created_at - interval '"
    ngx_chat_store_str(NGX_CHAT_STORE_OVERLAP) " seconds' "
    "ORDER BY m.created_at DESC, m.id DESC LIMIT $4)";


static const char  ngx_chat_store_before[] =
    "WITH s AS (SELECT created_at, id FROM messages "
    "WHERE zone = $1 AND room_id = $2 AND id = $3) "
    "SELECT NULL::text, NULL::text, NULL::text, NULL::bigint, "
    "NULL::bigint, NULL::text FROM s "
    "UNION ALL (SELECT m.id, m.user_id, m.content, "
    "(extract(epoch FROM m.created_at) * 1000)::bigint, m.prior, m.holes "
    "FROM messages m, s WHERE m.zone = $1 AND m.room_id = $2 "
    "AND (m.created_at, m.id) < (s.created_at, s.id) "
    "ORDER BY m.created_at DESC, m.id DESC LIMIT $4)";


static ngx_chat_store_conf_t *
ngx_chat_store_conf(ngx_conf_t *cf, ngx_chat_store_conf_t **scfp)
{
    ngx_chat_store_conf_t  *scf;

    if (*scfp) {
        return *scfp;
    }

    scf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_store_conf_t));
    if (scf == NULL) {
        return NULL;
    }

    scf->queue_max = 10000;
    *scfp = scf;

    return scf;
}


char *
ngx_chat_store_conf_conninfo(ngx_conf_t *cf, ngx_chat_store_conf_t **scfp,
    ngx_str_t *conninfo)
{
    ngx_chat_store_conf_t  *scf;

    if (*scfp && (*scfp)->pg.conninfo.len) {
        return "is duplicate";
    }

    scf = ngx_chat_store_conf(cf, scfp);
    if (scf == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_chat_pg_parse(cf, conninfo, &scf->pg);
}


char *
ngx_chat_store_conf_queue(ngx_conf_t *cf, ngx_chat_store_conf_t **scfp,
    ngx_str_t *size)
{
    ngx_int_t               n;
    ngx_chat_store_conf_t  *scf;

    n = ngx_atoi(size->data, size->len);
    if (n <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid queue size \"%V\"", size);
        return NGX_CONF_ERROR;
    }

    scf = ngx_chat_store_conf(cf, scfp);
    if (scf == NULL) {
        return NGX_CONF_ERROR;
    }

    scf->queue_max = n;

    return NGX_CONF_OK;
}


ngx_uint_t
ngx_chat_store_conf_enabled(ngx_chat_store_conf_t *scf)
{
    return scf && scf->pg.conninfo.len;
}


ngx_int_t
ngx_chat_store_history(ngx_uint_t mode, ngx_str_t *zone, ngx_str_t *room,
    ngx_str_t *id, ngx_uint_t limit, ngx_chat_store_read_pt handler,
    void *data)
{
    int                     i, n;
    u_char                 *p;
    size_t                  size;
    uint64_t                t;
    ngx_str_t               v[5];
    ngx_chat_store_t       *st;
    ngx_chat_store_read_t  *rd;
    u_char                  buf[NGX_INT_T_LEN], ms[NGX_INT64_LEN];

    st = ngx_chat_store;

    if (st == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_chat_store_reads_full()) {
        return NGX_BUSY;
    }

    n = (mode == NGX_CHAT_STORE_LAST) ? 3 : 4;

    v[0] = *zone;
    v[1] = *room;

    if (n == 4) {
        v[2] = *id;
    }

    v[n - 1].data = buf;
    v[n - 1].len = ngx_sprintf(buf, "%ui", limit) - buf;

    if (mode == NGX_CHAT_STORE_SINCE) {
        /* the time of an id not stored, in its number */

        t = ngx_chat_remote_id_ms(id);

        v[4].len = 0;
        v[4].data = NULL;

        if (t) {
            v[4].data = ms;
            v[4].len = ngx_sprintf(ms, "%uL", t) - ms;
        }

        n = 5;
    }

    size = sizeof(ngx_chat_store_read_t);

    for (i = 0; i < n; i++) {
        size += v[i].len + 1;
    }

    rd = ngx_alloc(size, ngx_cycle->log);
    if (rd == NULL) {
        return NGX_DECLINED;
    }

    rd->handler = handler;
    rd->data = data;
    rd->deadline = ngx_current_msec + NGX_CHAT_STORE_READ_WAIT;
    rd->n = n;
    rd->sql = (mode == NGX_CHAT_STORE_LAST) ? ngx_chat_store_last
              : (mode == NGX_CHAT_STORE_SINCE) ? ngx_chat_store_since
                                              : ngx_chat_store_before;

    /* text parameters, NUL-terminated copies */

    p = (u_char *) (rd + 1);

    for (i = 0; i < rd->n; i++) {
        if (v[i].data == NULL) {
            /* SQL NULL */
            rd->values[i] = NULL;
            rd->lens[i] = 0;
            continue;
        }

        rd->values[i] = (const char *) p;
        rd->lens[i] = (int) v[i].len;
        p = ngx_cpymem(p, v[i].data, v[i].len);
        *p++ = '\0';
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: read \"%V\" of zone \"%V\", mode %ui, "
                   "limit %ui", room, zone, mode, limit);

    ngx_queue_insert_tail(&st->reads, &rd->queue);
    st->nwaiting++;

    ngx_chat_store_reads_run(st);

    return NGX_OK;
}


/*
 * Sends the waiting reads, oldest first, while the read connection is up
 * (or being made the first time: libpq's queue holds them) and fewer
 * than NGX_CHAT_STORE_READS_MAX are in flight; the others wait, at most
 * until their deadline
 */

static void
ngx_chat_store_reads_run(ngx_chat_store_t *st)
{
    ngx_int_t               rc;
    ngx_queue_t            *q;
    ngx_chat_store_read_t  *rd;

    while (!ngx_queue_empty(&st->reads)
           && st->nreads < NGX_CHAT_STORE_READS_MAX
           && (st->rup || st->rconnecting))
    {
        q = ngx_queue_head(&st->reads);
        rd = ngx_queue_data(q, ngx_chat_store_read_t, queue);

        ngx_queue_remove(q);
        st->nwaiting--;

        st->nreads++;

        rc = ngx_chat_pg_query(st->rpg, rd->sql, rd->n, rd->values,
                               rd->lens, ngx_chat_store_read_done, rd);
        if (rc == NGX_OK) {
            continue;
        }

        st->nreads--;

        if (rc == NGX_DECLINED) {
            /* down after all: it waits for the connection */
            ngx_queue_insert_head(&st->reads, q);
            st->nwaiting++;
            break;
        }

        ngx_chat_store_read_fail(rd);
    }

    if (ngx_queue_empty(&st->reads)) {
        if (st->rwait.timer_set) {
            ngx_del_timer(&st->rwait);
        }

        return;
    }

    rd = ngx_queue_data(ngx_queue_head(&st->reads), ngx_chat_store_read_t,
                        queue);

    ngx_add_timer(&st->rwait,
                  (ngx_msec_int_t) (rd->deadline - ngx_current_msec) > 0
                  ? rd->deadline - ngx_current_msec : 1);
}


static void
ngx_chat_store_read_fail(ngx_chat_store_read_t *rd)
{
    rd->handler(NULL, rd->data);
    ngx_free(rd);
}


/* the reads that waited too long are answered as failed */

static void
ngx_chat_store_rwait_handler(ngx_event_t *ev)
{
    ngx_chat_store_t *st = ev->data;

    ngx_uint_t              n;
    ngx_queue_t            *q;
    ngx_chat_store_read_t  *rd;

    n = 0;

    while (!ngx_queue_empty(&st->reads)) {
        q = ngx_queue_head(&st->reads);
        rd = ngx_queue_data(q, ngx_chat_store_read_t, queue);

        if ((ngx_msec_int_t) (rd->deadline - ngx_current_msec) > 0) {
            break;
        }

        ngx_queue_remove(q);
        st->nwaiting--;
        n++;

        ngx_chat_store_read_fail(rd);
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat postgres: %ui history reads waited %M ms and "
                      "are answered from memory alone", n,
                      (ngx_msec_t) NGX_CHAT_STORE_READ_WAIT);
    }

    ngx_chat_store_reads_run(st);
}


ngx_uint_t
ngx_chat_store_unstored(ngx_str_t *zone, ngx_str_t *room,
    ngx_chat_store_known_pt known, void *data)
{
    ngx_uint_t              i;
    ngx_queue_t            *q, *queues[2];
    ngx_chat_store_item_t  *it;

    if (ngx_chat_store == NULL) {
        return 0;
    }

    queues[0] = &ngx_chat_store->pending;
    queues[1] = &ngx_chat_store->inflight;

    for (i = 0; i < 2; i++) {
        for (q = ngx_queue_head(queues[i]);
             q != ngx_queue_sentinel(queues[i]);
             q = ngx_queue_next(q))
        {
            it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

            if (it->room.len == room->len
                && it->zone.len == zone->len
                && ngx_memcmp(it->room.data, room->data, room->len) == 0
                && ngx_memcmp(it->zone.data, zone->data, zone->len) == 0
                && !known(&it->id, data))
            {
                return 1;
            }
        }
    }

    return 0;
}


/*
 * one read per connection at a time (the protocol and the API make them
 * in turn): a worker never has more waiting than connections
 */

ngx_uint_t
ngx_chat_store_reads_full(void)
{
    return ngx_chat_store
           && ngx_chat_store->nwaiting >= (ngx_uint_t) ngx_cycle->connection_n;
}


static void
ngx_chat_store_read_state(ngx_chat_pg_t *pg, ngx_uint_t up, void *data)
{
    ngx_chat_store_t *st = data;

    st->rup = up;
    st->rconnecting = 0;

    ngx_chat_store_reads_run(st);
}


/*
 * The rows (id, user_id, content, ts in ms), decoded: with SINCE and
 * BEFORE a row of NULLs among them says the id was found
 */

static void
ngx_chat_store_read_done(ngx_chat_pg_t *pg, PGresult *res, void *data)
{
    ngx_chat_store_read_t *rd = data;

    int                     row, nrows;
    size_t                  len;
    u_char                  buf[NGX_CHAT_PG_MESSAGE_MAX];
    ngx_uint_t              n;
    ngx_chat_store_t       *st;
    ngx_chat_store_row_t   *r;
    ngx_chat_store_rows_t   rows;

    st = ngx_chat_store;

    if (st) {
        st->nreads--;
    }

    if (res == NULL && st && !st->exiting
        && (ngx_msec_int_t) (rd->deadline - ngx_current_msec) > 0)
    {
        /*
         * the connection was lost (or the query timed out): a read is
         * harmless to make again, first in line, once it is back
         */

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "chat store: read lost with the connection, waits");

        ngx_queue_insert_head(&st->reads, &rd->queue);
        st->nwaiting++;

        ngx_chat_store_reads_run(st);
        return;
    }

    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        len = ngx_chat_pg_message(buf, sizeof(buf),
                                  PQresultErrorMessage(res));
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: reading history failed: %*s", len, buf);
        res = NULL;
    }

    nrows = res ? PQntuples(res) : 0;

    rows.rows = res ? ngx_alloc((nrows ? nrows : 1)
                                * sizeof(ngx_chat_store_row_t),
                                ngx_cycle->log)
                    : NULL;

    if (rows.rows == NULL) {
        ngx_chat_store_read_fail(rd);

        if (ngx_chat_store && !ngx_chat_store->exiting) {
            ngx_chat_store_reads_run(ngx_chat_store);
        }

        return;
    }

    n = 0;
    rows.found = 0;

    for (row = 0; row < nrows; row++) {

        if (PQgetisnull(res, row, 0)) {
            rows.found = 1;
            continue;
        }

        r = &rows.rows[n++];

        r->id.data = (u_char *) PQgetvalue(res, row, 0);
        r->id.len = PQgetlength(res, row, 0);
        r->user.data = (u_char *) PQgetvalue(res, row, 1);
        r->user.len = PQgetlength(res, row, 1);
        r->content.data = (u_char *) PQgetvalue(res, row, 2);
        r->content.len = PQgetlength(res, row, 2);
        r->ts.data = (u_char *) PQgetvalue(res, row, 3);
        r->ts.len = PQgetlength(res, row, 3);
        r->prior.data = (u_char *) PQgetvalue(res, row, 4);
        r->prior.len = PQgetlength(res, row, 4);
        r->holes.data = (u_char *) PQgetvalue(res, row, 5);
        r->holes.len = PQgetlength(res, row, 5);
    }

    rows.n = n;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: read %ui rows, found %ui", n, rows.found);

    rd->handler(&rows, rd->data);

    ngx_free(rows.rows);
    ngx_free(rd);

    if (ngx_chat_store && !ngx_chat_store->exiting) {
        /* its place in flight is free */
        ngx_chat_store_reads_run(ngx_chat_store);
    }
}


ngx_int_t
ngx_chat_store_init_process(ngx_cycle_t *cycle, ngx_chat_main_conf_t *cmcf)
{
    ngx_chat_store_t  *st;

    if (cmcf->store == NULL) {
        return NGX_OK;
    }

    st = ngx_pcalloc(cycle->pool, sizeof(ngx_chat_store_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->conf = cmcf->store;
    st->cmcf = cmcf;
    st->limit = NGX_CHAT_STORE_BATCH;

    ngx_queue_init(&st->pending);
    ngx_queue_init(&st->inflight);
    ngx_queue_init(&st->reads);

    st->rwait.handler = ngx_chat_store_rwait_handler;
    st->rwait.data = st;
    st->rwait.log = cycle->log;
    st->rwait.cancelable = 1;

    /*
     * data: with a debug log, the event timer code reads an fd from it
     * (ngx_event_ident), and NULL crashed the worker at the first send
     */

    st->flush.handler = ngx_chat_store_flush_handler;
    st->flush.data = st;
    st->flush.log = cycle->log;

    /* not cancelable: a worker that exits waits for its queue */
    st->retry.handler = ngx_chat_store_retry_handler;
    st->retry.data = st;
    st->retry.log = cycle->log;

    ngx_chat_store = st;

    /* down for chat_status until the first connection is up */
    st->connecting = 1;
    ngx_chat_store_set_state(0);

    st->wconf = st->conf->pg;
    ngx_str_set(&st->wconf.role, "stores");
    st->rconf = st->conf->pg;
    ngx_str_set(&st->rconf.role, "reads");

    st->pg = ngx_chat_pg_create(&st->wconf, cycle->log,
                                ngx_chat_store_state, st);
    if (st->pg == NULL) {
        ngx_chat_store = NULL;
        return NGX_ERROR;
    }

    st->rconnecting = 1;

    st->rpg = ngx_chat_pg_create(&st->rconf, cycle->log,
                                 ngx_chat_store_read_state, st);
    if (st->rpg == NULL) {
        ngx_chat_pg_destroy(st->pg);
        ngx_chat_store = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_chat_store_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t       *q;
    ngx_chat_store_t  *st;

    st = ngx_chat_store;

    if (st == NULL) {
        return;
    }

    if (st->npending + st->ninflight) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "chat postgres: %ui messages were not stored "
                      "before the worker exited",
                      st->npending + st->ninflight);
    }

    /* reads in flight are answered as failed, and those waiting too */

    st->exiting = 1;
    ngx_chat_pg_destroy(st->rpg);

    if (st->rwait.timer_set) {
        ngx_del_timer(&st->rwait);
    }

    while (!ngx_queue_empty(&st->reads)) {
        q = ngx_queue_head(&st->reads);
        ngx_queue_remove(q);
        st->nwaiting--;

        ngx_chat_store_read_fail(ngx_queue_data(q, ngx_chat_store_read_t,
                                                queue));
    }

    ngx_chat_pg_destroy(st->pg);
    ngx_chat_store = NULL;
}


ngx_uint_t
ngx_chat_store_enabled(void)
{
    return ngx_chat_store != NULL;
}


ngx_uint_t
ngx_chat_store_full(void)
{
    ngx_chat_store_t  *st;

    st = ngx_chat_store;

    if (st->npending + st->ninflight < st->conf->queue_max) {
        st->full_logged = 0;
        return 0;
    }

    if (!st->full_logged) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: %ui messages wait to be stored, "
                      "refusing new ones", st->npending + st->ninflight);
        st->full_logged = 1;
    }

    return 1;
}


ngx_chat_store_item_t *
ngx_chat_store_add(ngx_str_t *id, ngx_str_t *zone, ngx_str_t *room,
    ngx_str_t *user, ngx_str_t *content, uint64_t ts, ngx_str_t *ref,
    uint64_t prior, ngx_str_t *holes)
{
    u_char                 *p;
    size_t                  len;
    ngx_chat_store_t       *st;
    ngx_chat_store_item_t  *it;

    st = ngx_chat_store;

    len = sizeof(ngx_chat_store_item_t) + id->len + zone->len + room->len
          + user->len + content->len + (ref ? ref->len : 0) + holes->len;

    it = ngx_alloc(len, ngx_cycle->log);
    if (it == NULL) {
        return NULL;
    }

    ngx_memzero(it, sizeof(ngx_chat_store_item_t));

    p = (u_char *) it + sizeof(ngx_chat_store_item_t);

    it->id.data = p;
    it->id.len = id->len;
    p = ngx_cpymem(p, id->data, id->len);

    it->zone.data = p;
    it->zone.len = zone->len;
    p = ngx_cpymem(p, zone->data, zone->len);

    it->room.data = p;
    it->room.len = room->len;
    p = ngx_cpymem(p, room->data, room->len);

    it->user.data = p;
    it->user.len = user->len;
    p = ngx_cpymem(p, user->data, user->len);

    it->content.data = p;
    it->content.len = content->len;
    p = ngx_cpymem(p, content->data, content->len);

    it->prior = prior;
    it->holes.data = p;
    it->holes.len = holes->len;
    p = ngx_cpymem(p, holes->data, holes->len);

    if (ref) {
        it->ref.data = p;
        it->ref.len = ref->len;
        ngx_memcpy(p, ref->data, ref->len);
        it->has_ref = 1;
    }

    it->ts = ts;

    ngx_queue_insert_tail(&st->pending, &it->queue);
    st->npending++;

    ngx_chat_store_schedule();

    return it;
}


void
ngx_chat_store_forget(ngx_chat_store_item_t *it)
{
    it->done = NULL;
    it->data = NULL;
}


static void
ngx_chat_store_schedule(void)
{
    ngx_chat_store_t  *st;

    st = ngx_chat_store;

    if (!st->flush.posted) {
        ngx_post_event(&st->flush, &ngx_posted_events);
    }

    if (!st->retry.timer_set) {
        ngx_add_timer(&st->retry, NGX_CHAT_STORE_RETRY);
    }
}


static void
ngx_chat_store_state(ngx_chat_pg_t *pg, ngx_uint_t up, void *data)
{
    ngx_chat_store_t *st = data;

    st->up = up;
    st->connecting = 0;
    ngx_chat_store_set_state(up);

    if (up && st->npending) {
        ngx_chat_store_schedule();
    }
}


/* tells the zones, for chat_status */

static void
ngx_chat_store_set_state(ngx_uint_t up)
{
    ngx_uint_t            i;
    ngx_chat_shm_ctx_t  **ctxp;

    ctxp = ngx_chat_store->cmcf->zones.elts;

    for (i = 0; i < ngx_chat_store->cmcf->zones.nelts; i++) {
        ngx_chat_shm_set_pg_down(ctxp[i], up ? 0 : 1);
    }
}


static void
ngx_chat_store_retry_handler(ngx_event_t *ev)
{
    ngx_chat_store_t  *st;

    st = ngx_chat_store;

    if (st == NULL) {
        return;
    }

    if (st->npending + st->ninflight == 0) {
        return;
    }

    ngx_add_timer(ev, NGX_CHAT_STORE_RETRY);

    if (st->npending && st->ninflight == 0) {
        ngx_chat_store_flush_handler(&st->flush);
    }
}


static size_t
ngx_chat_store_array_len(ngx_str_t *s)
{
    size_t   n;
    u_char  *p, *last;

    n = s->len + 3;         /* quotes and a comma */

    for (p = s->data, last = p + s->len; p < last; p++) {
        if (*p == '"' || *p == '\\') {
            n++;
        }
    }

    return n;
}


/* an element of a text array literal: "..." with \ and " escaped */

static u_char *
ngx_chat_store_array(u_char *p, ngx_str_t *s)
{
    u_char  *q, *last;

    *p++ = '"';

    for (q = s->data, last = q + s->len; q < last; q++) {
        if (*q == '"' || *q == '\\') {
            *p++ = '\\';
        }

        *p++ = *q;
    }

    *p++ = '"';

    return p;
}


/* one INSERT with everything queued: the parameters are text arrays */

static void
ngx_chat_store_flush_handler(ngx_event_t *ev)
{
    ngx_int_t                 rc;
    ngx_uint_t                n, max;
    ngx_queue_t              *q;
    ngx_chat_store_t         *st;
    ngx_chat_store_arrays_t   a;

    st = ngx_chat_store;

    if (st == NULL || !st->up || st->ninflight || st->npending == 0) {
        return;
    }

    max = st->nplan ? st->plan[st->nplan - 1] : st->limit;

    for (n = 0; n < max && st->npending; n++) {
        q = ngx_queue_head(&st->pending);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&st->inflight, q);
        st->npending--;
    }

    st->ninflight = n;

    if (ngx_chat_store_arrays(st, NGX_CHAT_STORE_FIELDS, &a, ev->log)
        != NGX_OK)
    {
        ngx_chat_store_requeue(st);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "chat store: INSERT of %ui messages", n);

    st->sent = ngx_current_msec;

    rc = ngx_chat_pg_query(st->pg, ngx_chat_store_insert,
                           NGX_CHAT_STORE_FIELDS, a.values, a.lens,
                           ngx_chat_store_done, st);

    ngx_free(a.buf);

    if (rc != NGX_OK) {
        /* down after all: back to the front of the queue, in order */
        ngx_chat_store_requeue(st);
    }
}


/*
 * The text array literals of the batch in flight, one per field (nf: the
 * first nf of id, zone, room, user, content, ts, prior, holes), in a.buf
 * (ngx_free)
 */

static ngx_int_t
ngx_chat_store_arrays(ngx_chat_store_t *st, ngx_uint_t nf,
    ngx_chat_store_arrays_t *a, ngx_log_t *log)
{
    u_char                 *p[NGX_CHAT_STORE_FIELDS];
    size_t                  size[NGX_CHAT_STORE_FIELDS], total;
    ngx_uint_t              k, first;
    ngx_queue_t            *q;
    ngx_chat_store_item_t  *it;

    ngx_memzero(size, sizeof(size));

    for (q = ngx_queue_head(&st->inflight);
         q != ngx_queue_sentinel(&st->inflight);
         q = ngx_queue_next(q))
    {
        it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

        for (k = 0; k < nf; k++) {
            size[k] += (k == NGX_CHAT_STORE_TS || k == NGX_CHAT_STORE_PRIOR)
                       ? NGX_INT64_LEN + 1
                       : ngx_chat_store_array_len(ngx_chat_store_field(it, k));
        }
    }

    total = 0;

    for (k = 0; k < nf; k++) {
        total += size[k] + 2;       /* braces */
    }

    a->buf = ngx_alloc(total, log);
    if (a->buf == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < nf; k++) {
        p[k] = k ? (u_char *) a->values[k - 1] + size[k - 1] + 2 : a->buf;
        a->values[k] = (const char *) p[k];
        *p[k]++ = '{';
    }

    first = 1;

    for (q = ngx_queue_head(&st->inflight);
         q != ngx_queue_sentinel(&st->inflight);
         q = ngx_queue_next(q))
    {
        it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

        for (k = 0; k < nf; k++) {
            if (!first) {
                *p[k]++ = ',';
            }

            if (k == NGX_CHAT_STORE_TS) {
                p[k] = ngx_sprintf(p[k], "%uL", it->ts);

            } else if (k == NGX_CHAT_STORE_PRIOR) {
                p[k] = ngx_sprintf(p[k], "%uL", it->prior);

            } else {
                p[k] = ngx_chat_store_array(p[k],
                                            ngx_chat_store_field(it, k));
            }
        }

        first = 0;
    }

    for (k = 0; k < nf; k++) {
        *p[k]++ = '}';
        a->lens[k] = (int) (p[k] - (u_char *) a->values[k]);
    }

    return NGX_OK;
}


/* the fields in the order of the queries' arrays */

static ngx_str_t *
ngx_chat_store_field(ngx_chat_store_item_t *it, ngx_uint_t k)
{
    switch (k) {

    case 0:
        return &it->id;

    case 1:
        return &it->zone;

    case 2:
        return &it->room;

    case 3:
        return &it->user;

    case 4:
        return &it->content;

    default: /* 7 */
        return &it->holes;
    }
}


/* the batch in flight goes back before what is pending */

static void
ngx_chat_store_requeue(ngx_chat_store_t *st)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&st->inflight)) {
        q = ngx_queue_last(&st->inflight);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&st->pending, q);
    }

    st->npending += st->ninflight;
    st->ninflight = 0;
}


static void
ngx_chat_store_done(ngx_chat_pg_t *pg, PGresult *res, void *data)
{
    ngx_chat_store_t *st = data;

    ngx_int_t    n;
    const char  *tuples;

    if (res == NULL) {

        /* no reply: lost connection, or a batch too slow (halved) */

        if (ngx_current_msec - st->sent >= st->conf->pg.query_timeout
            && st->ninflight > 1 && st->nplan == 0)
        {
            st->limit = st->ninflight / 2;
        }

        ngx_chat_store_again(st);
        return;
    }

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        ngx_chat_store_failed(st, res);
        return;
    }

    /* committed: the rows inserted are ours; an id that was taken... */

    tuples = PQcmdTuples(res);
    n = ngx_atoi((u_char *) tuples, ngx_strlen(tuples));

    if (n == (ngx_int_t) st->ninflight) {
        ngx_chat_store_commit(st);
        return;
    }

    /* ...is ours only if its row is this message: a batch retried */

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: %i of %ui messages inserted, checking "
                   "the others", n, st->ninflight);

    ngx_chat_store_check(st);
}


/*
 * PostgreSQL refused the INSERT.  For a reason of the server's (not
 * allowed, read only, out of resources...) the batch waits and is
 * retried whole; for a reason one of its messages may be (a value it
 * refuses, a constraint, the statement timeout) the batch is split in
 * halves until that message is alone, and that one is refused: the
 * others are stored, and nothing blocks the queue for good.
 */

static void
ngx_chat_store_failed(ngx_chat_store_t *st, PGresult *res)
{
    size_t                  len;
    u_char                  buf[NGX_CHAT_PG_MESSAGE_MAX];
    ngx_chat_store_item_t  *it;

    len = ngx_chat_pg_message(buf, sizeof(buf), PQresultErrorMessage(res));

    if (!ngx_chat_store_lasting(res)) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: storing %ui messages failed: %*s",
                      st->ninflight, len, buf);

        ngx_chat_store_again(st);
        return;
    }

    if (st->ninflight == 1) {
        it = ngx_queue_data(ngx_queue_head(&st->inflight),
                            ngx_chat_store_item_t, queue);
        it->refused = 1;

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: message %V of zone \"%V\" refused: "
                      "%*s", &it->id, &it->zone, len, buf);

        ngx_chat_store_commit(st);
        return;
    }

    if (st->nplan == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: storing %ui messages failed: %*s; "
                      "splitting the batch to find the message refused",
                      st->ninflight, len, buf);

    } else {
        st->nplan--;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: a batch of %ui messages refused, halved",
                   st->ninflight);

    /* the second half, then the first one, which goes next */

    if (st->nplan + 2 <= NGX_CHAT_STORE_PLAN_MAX) {
        st->plan[st->nplan++] = st->ninflight / 2;
        st->plan[st->nplan++] = st->ninflight - st->ninflight / 2;
    }

    ngx_chat_store_requeue(st);
    ngx_chat_store_flush_handler(&st->flush);
}


/*
 * Errors of a message rather than of the server: SQLSTATE classes 22
 * (data exception: a value over a limit, a character the database's
 * encoding has not), 23 (integrity constraint), 54 (program limit
 * exceeded), P0 (raised by a trigger), and 57014 (the statement timeout)
 */

static ngx_uint_t
ngx_chat_store_lasting(PGresult *res)
{
    char  *state;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state == NULL || ngx_strlen(state) != 5) {
        return 0;
    }

    return ngx_strncmp(state, "22", 2) == 0
           || ngx_strncmp(state, "23", 2) == 0
           || ngx_strncmp(state, "54", 2) == 0
           || ngx_strncmp(state, "P0", 2) == 0
           || ngx_strcmp(state, "57014") == 0;
}


/* retried later, in order, before anything newer */

static void
ngx_chat_store_again(ngx_chat_store_t *st)
{
    ngx_chat_store_requeue(st);

    if (!st->retry.timer_set) {
        ngx_add_timer(&st->retry, NGX_CHAT_STORE_RETRY);
    }
}


/* which messages of the batch in flight have a row that is them */

static void
ngx_chat_store_check(ngx_chat_store_t *st)
{
    ngx_int_t                 rc;
    ngx_chat_store_arrays_t   a;

    if (ngx_chat_store_arrays(st, NGX_CHAT_STORE_TS, &a, ngx_cycle->log)
        != NGX_OK)
    {
        ngx_chat_store_again(st);
        return;
    }

    rc = ngx_chat_pg_query(st->pg, ngx_chat_store_identical,
                           NGX_CHAT_STORE_TS, a.values, a.lens,
                           ngx_chat_store_checked, st);

    ngx_free(a.buf);

    if (rc != NGX_OK) {
        ngx_chat_store_again(st);
    }
}


/*
 * The positions (1-based, in order) of the messages whose row is them:
 * the others clash with another row that has their id, and are refused
 */

static void
ngx_chat_store_checked(ngx_chat_pg_t *pg, PGresult *res, void *data)
{
    ngx_chat_store_t *st = data;

    int                     row, nrows;
    size_t                  len;
    u_char                  buf[NGX_CHAT_PG_MESSAGE_MAX];
    ngx_int_t               pos, i;
    ngx_queue_t            *q;
    ngx_chat_store_item_t  *it;

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {

        if (res) {
            len = ngx_chat_pg_message(buf, sizeof(buf),
                                      PQresultErrorMessage(res));
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "chat postgres: checking %ui stored messages "
                          "failed: %*s", st->ninflight, len, buf);
        }

        /* the INSERT again: it inserts nothing more, then this again */

        ngx_chat_store_again(st);
        return;
    }

    nrows = PQntuples(res);
    row = 0;
    i = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: %d of %ui messages are stored as sent",
                   nrows, st->ninflight);

    for (q = ngx_queue_head(&st->inflight);
         q != ngx_queue_sentinel(&st->inflight);
         q = ngx_queue_next(q), i++)
    {
        it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

        pos = (row < nrows) ? ngx_atoi((u_char *) PQgetvalue(res, row, 0),
                                       PQgetlength(res, row, 0))
                            : -1;

        if (pos == i) {
            row++;
            continue;
        }

        it->refused = 1;

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "chat postgres: message %V of zone \"%V\" refused: "
                      "another row has its id (an id clash)",
                      &it->id, &it->zone);
    }

    ngx_chat_store_commit(st);
}


/* the batch in flight is done: acks, or errors for those refused */

static void
ngx_chat_store_commit(ngx_chat_store_t *st)
{
    ngx_queue_t            *q;
    ngx_chat_store_item_t  *it;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "chat store: %ui messages committed", st->ninflight);

    if (st->nplan) {
        st->nplan--;
    }

    st->limit = ngx_min(2 * st->limit, NGX_CHAT_STORE_BATCH);

    while (!ngx_queue_empty(&st->inflight)) {
        q = ngx_queue_head(&st->inflight);
        ngx_queue_remove(q);

        it = ngx_queue_data(q, ngx_chat_store_item_t, queue);

        if (it->done) {
            it->done(it);
        }

        ngx_free(it);
    }

    st->ninflight = 0;

    if (st->npending) {
        ngx_chat_store_flush_handler(&st->flush);
    }
}
