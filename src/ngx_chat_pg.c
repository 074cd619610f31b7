
/*
 * Copyright (C) ngx_chat_module authors
 *
 * A PostgreSQL client on nginx's event loop (see ngx_chat_pg.h).  libpq
 * owns the socket and the protocol; nginx only watches the socket: it is
 * wrapped in an nginx connection (ngx_get_connection) whose read and
 * write events call PQconnectPoll, PQconsumeInput and PQflush.  Nothing
 * here blocks: no PQconnectdb, no PQexec, no PQgetResult while PQisBusy.
 *
 * States of a connection object:
 *
 *   CONNECTING  the first attempt, started by a zero timer so that no
 *               handler runs before ngx_chat_pg_create() returns; queries
 *               are queued and run once the connection is up
 *   UP          connected and the schema is there
 *   DOWN        after any failure: queries are declined while a cancelable
 *               timer reconnects with exponential backoff (200ms doubling
 *               to 10s, +-25% jitter; back to 200ms after 10s of being up)
 *
 * and phases of one connection: POLLING (PQconnectPoll, under the connect
 * timeout), SCHEMA (the schema query, under the query timeout), READY.
 *
 * libpq may close its socket and open another during PQconnectPoll (the
 * next address of a host, an SSL retry), possibly with the same number:
 * after every call the socket is compared by number and inode and wrapped
 * anew when it changed.  A socket is unwrapped without epoll_ctl() calls
 * (NGX_CLOSE_EVENT): libpq closes it, which removes it from epoll.
 *
 * Logs: ERR once per outage (the first failure, with libpq's message),
 * INFO for every further failed attempt, NOTICE when up; server notices
 * at INFO, server warnings at WARN, and a FATAL the server sends before
 * closing the connection becomes the reason of the ERR line.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <libpq-fe.h>
#include "ngx_chat_backoff.h"
#include "ngx_chat_pg.h"


#define NGX_CHAT_PG_BACKOFF_MIN      200
#define NGX_CHAT_PG_BACKOFF_MAX      10000
#define NGX_CHAT_PG_SCHEMA_TRIES     3
#define NGX_CHAT_PG_READ_ROUNDS      32
#define NGX_CHAT_PG_LABEL_MAX        128
#define NGX_CHAT_PG_MAX_PARAMS       65535

#define NGX_CHAT_PG_CONNECTING       0
#define NGX_CHAT_PG_UP               1
#define NGX_CHAT_PG_DOWN             2

#define NGX_CHAT_PG_CLOSED           0
#define NGX_CHAT_PG_POLLING          1
#define NGX_CHAT_PG_SCHEMA           2
#define NGX_CHAT_PG_READY            3


typedef struct {
    ngx_queue_t                 queue;
    ngx_chat_pg_result_pt       handler;
    void                       *data;
    char                       *sql;
    const char                **values;
    int                         nparams;
} ngx_chat_pg_query_t;


struct ngx_chat_pg_s {
    ngx_chat_pg_conf_t         *conf;
    ngx_log_t                  *log;
    ngx_chat_pg_state_pt        state_handler;
    void                       *data;

    PGconn                     *conn;
    ngx_connection_t           *connection;  /* wraps PQsocket() */
    ngx_file_uniq_t             uniq;        /* of the wrapped socket */

    ngx_queue_t                 queries;     /* the head may be running */
    ngx_chat_pg_query_t        *running;
    PGresult                   *result;      /* kept for the handler */

    ngx_event_t                 reconnect;   /* first attempt, backoff */
    ngx_event_t                 timeout;     /* connect, schema, query */
    ngx_event_t                 next;        /* posted: run a query */

    ngx_chat_backoff_t          backoff;
    ngx_msec_t                  up_time;
    ngx_uint_t                  schema_tries;
    ngx_uint_t                  nesting;     /* our frames on the stack */

    size_t                      fatal_len;   /* a FATAL notice, if any */
    u_char                      fatal[NGX_CHAT_PG_MESSAGE_MAX];

    size_t                      label_len;   /* "user@host:port/db" */
    u_char                      label[NGX_CHAT_PG_LABEL_MAX];

    unsigned                    state:2;
    unsigned                    phase:2;
    unsigned                    poll_write:1;  /* PQconnectPoll waits */
    unsigned                    flushing:1;    /* PQflush() returned 1 */
    unsigned                    down_logged:1;
    unsigned                    destroyed:1;
};


static void ngx_chat_pg_reconnect_handler(ngx_event_t *ev);
static void ngx_chat_pg_timeout_handler(ngx_event_t *ev);
static void ngx_chat_pg_next_handler(ngx_event_t *ev);
static void ngx_chat_pg_read_handler(ngx_event_t *rev);
static void ngx_chat_pg_write_handler(ngx_event_t *wev);
static void ngx_chat_pg_connect(ngx_chat_pg_t *pg);
static void ngx_chat_pg_poll(ngx_chat_pg_t *pg);
static ngx_int_t ngx_chat_pg_wrap(ngx_chat_pg_t *pg);
static void ngx_chat_pg_unwrap(ngx_chat_pg_t *pg);
static void ngx_chat_pg_send_schema(ngx_chat_pg_t *pg);
static void ngx_chat_pg_send(ngx_chat_pg_t *pg);
static ngx_int_t ngx_chat_pg_flush(ngx_chat_pg_t *pg);
static void ngx_chat_pg_read(ngx_chat_pg_t *pg);
static ngx_int_t ngx_chat_pg_collect(ngx_chat_pg_t *pg);
static void ngx_chat_pg_complete(ngx_chat_pg_t *pg);
static void ngx_chat_pg_schema_done(ngx_chat_pg_t *pg, PGresult *res);
static void ngx_chat_pg_set_up(ngx_chat_pg_t *pg);
static void ngx_chat_pg_set_label(ngx_chat_pg_t *pg);
static void ngx_chat_pg_fail(ngx_chat_pg_t *pg, const char *what,
    const char *detail);
static void ngx_chat_pg_close(ngx_chat_pg_t *pg);
static void ngx_chat_pg_fail_pending(ngx_chat_pg_t *pg);
static void ngx_chat_pg_leave(ngx_chat_pg_t *pg);
static void ngx_chat_pg_free(ngx_chat_pg_t *pg);
static ngx_uint_t ngx_chat_pg_more(ngx_connection_t *c);
static ngx_uint_t ngx_chat_pg_is_error(PGresult *res);
static void ngx_chat_pg_notice(void *arg, const PGresult *res);


/*
 * SPEC 7.  Nothing to do (and no privilege needed) when the table, its
 * "zone", "prior" and "holes" columns and its indexes exist, e.g.
 * created by an operator from conf-examples/schema.sql for a role that
 * may only read and write them.  Otherwise creates them under an advisory lock, so that
 * workers starting together do not race on the catalogs (those that
 * waited find them: no "already exists" notices).  A table of an earlier
 * version, without those columns, is migrated in place (its rows get the
 * zone '', no prior, no holes); a role that may not do that gets an
 * error saying what to run; one that may not create an index of a table
 * that has its columns gets a warning.
 */

static const char  ngx_chat_pg_schema[] =
    "DO $ngx_chat$\n"
    "BEGIN\n"
    "    IF to_regclass('messages') IS NOT NULL\n"
    "       AND to_regclass('messages_room_created') IS NOT NULL\n"
    "       AND to_regclass('messages_zone_room_created') IS NOT NULL\n"
    "       AND (SELECT count(*) FROM pg_attribute\n"
    "            WHERE attrelid = to_regclass('messages')\n"
    "              AND attname IN ('zone', 'prior', 'holes')\n"
    "              AND NOT attisdropped) = 3\n"
    "    THEN\n"
    "        RETURN;\n"
    "    END IF;\n"
    "\n"
    "    PERFORM pg_advisory_xact_lock(7955448578046601588);\n"
    "    PERFORM set_config('client_min_messages', 'warning', true);\n"
    "\n"
    "    CREATE TABLE IF NOT EXISTS messages (\n"
    "        id          text PRIMARY KEY,\n"
    "        zone        text NOT NULL DEFAULT '',\n"
    "        room_id     text NOT NULL,\n"
    "        user_id     text NOT NULL,\n"
    "        content     text NOT NULL,\n"
    "        created_at  timestamptz NOT NULL DEFAULT now(),\n"
    "        prior       bigint,\n"
    "        holes       text\n"
    "    );\n"
    "\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_attribute\n"
    "                   WHERE attrelid = to_regclass('messages')\n"
    "                     AND attname = 'zone' AND NOT attisdropped)\n"
    "    THEN\n"
    "        ALTER TABLE messages\n"
    "            ADD COLUMN IF NOT EXISTS zone text NOT NULL DEFAULT '';\n"
    "    END IF;\n"
    "\n"
    "    IF (SELECT count(*) FROM pg_attribute\n"
    "        WHERE attrelid = to_regclass('messages')\n"
    "          AND attname IN ('prior', 'holes') AND NOT attisdropped) < 2\n"
    "    THEN\n"
    "        ALTER TABLE messages ADD COLUMN IF NOT EXISTS prior bigint,\n"
    "                             ADD COLUMN IF NOT EXISTS holes text;\n"
    "    END IF;\n"
    "\n"
    "    CREATE INDEX IF NOT EXISTS messages_room_created\n"
    "        ON messages (room_id, created_at);\n"
    "\n"
    "    CREATE INDEX IF NOT EXISTS messages_zone_room_created\n"
    "        ON messages (zone, room_id, created_at, id);\n"
    "\n"
    "EXCEPTION WHEN insufficient_privilege THEN\n"
    "    IF to_regclass('messages') IS NULL THEN\n"
    "        RAISE;\n"
    "    END IF;\n"
    "\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_attribute\n"
    "                   WHERE attrelid = to_regclass('messages')\n"
    "                     AND attname = 'zone' AND NOT attisdropped)\n"
    "    THEN\n"
    "        RAISE EXCEPTION 'table messages has no column zone (%), its"
    " owner must add it: ALTER TABLE messages ADD COLUMN zone text NOT NULL"
    " DEFAULT ''''', SQLERRM USING ERRCODE = 'insufficient_privilege';\n"
    "    END IF;\n"
    "\n"
    "    IF (SELECT count(*) FROM pg_attribute\n"
    "        WHERE attrelid = to_regclass('messages')\n"
    "          AND attname IN ('prior', 'holes') AND NOT attisdropped) < 2\n"
    "    THEN\n"
    "        RAISE EXCEPTION 'table messages lacks column prior or holes (%),"
    " its owner must add them: ALTER TABLE messages ADD COLUMN IF NOT"
    " EXISTS prior bigint, ADD COLUMN IF NOT EXISTS holes text',"
    " SQLERRM USING ERRCODE = 'insufficient_privilege';\n"
    "    END IF;\n"
    "\n"
    "    RAISE WARNING 'table messages lacks index %: %',\n"
    "        concat_ws(', ',\n"
    "            CASE WHEN to_regclass('messages_room_created') IS NULL\n"
    "                 THEN 'messages_room_created' END,\n"
    "            CASE WHEN to_regclass('messages_zone_room_created') IS NULL\n"
    "                 THEN 'messages_zone_room_created' END),\n"
    "        SQLERRM;\n"
    "END\n"
    "$ngx_chat$";


/* PQconnectStartParams(): the conninfo, expanded from "dbname", then ours */

static const char *const  ngx_chat_pg_keywords[] = {
    "dbname", "client_encoding", NULL
};


ngx_chat_pg_t *
ngx_chat_pg_create(ngx_chat_pg_conf_t *conf, ngx_log_t *log,
    ngx_chat_pg_state_pt state, void *data)
{
    ngx_chat_pg_t  *pg;

    if (log == NULL) {
        log = ngx_cycle->log;
    }

    if (conf->conninfo.data == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat postgres: no conninfo (not parsed)");
        return NULL;
    }

    pg = ngx_calloc(sizeof(ngx_chat_pg_t), log);
    if (pg == NULL) {
        return NULL;
    }

    pg->conf = conf;
    pg->log = log;
    pg->state_handler = state;
    pg->data = data;

    ngx_queue_init(&pg->queries);

    ngx_chat_backoff_init(&pg->backoff, NGX_CHAT_PG_BACKOFF_MIN,
                          NGX_CHAT_PG_BACKOFF_MAX);
    pg->state = NGX_CHAT_PG_CONNECTING;
    pg->phase = NGX_CHAT_PG_CLOSED;

    pg->reconnect.handler = ngx_chat_pg_reconnect_handler;
    pg->reconnect.data = pg;
    pg->reconnect.log = log;
    pg->reconnect.cancelable = 1;

    pg->timeout.handler = ngx_chat_pg_timeout_handler;
    pg->timeout.data = pg;
    pg->timeout.log = log;

    pg->next.handler = ngx_chat_pg_next_handler;
    pg->next.data = pg;
    pg->next.log = log;

    /* connect from the event loop, once the caller has its pointer */

    ngx_add_timer(&pg->reconnect, 0);

    return pg;
}


ngx_int_t
ngx_chat_pg_query(ngx_chat_pg_t *pg, const char *sql, int nparams,
    const char *const *values, const int *lengths,
    ngx_chat_pg_result_pt handler, void *data)
{
    u_char               *p;
    size_t                size, len;
    ngx_int_t             i;
    ngx_chat_pg_query_t  *q;

    if (pg == NULL || pg->destroyed || pg->state == NGX_CHAT_PG_DOWN) {
        return NGX_DECLINED;
    }

    if (sql == NULL
        || nparams < 0
        || nparams > NGX_CHAT_PG_MAX_PARAMS
        || (nparams > 0 && values == NULL))
    {
        return NGX_ERROR;
    }

    size = sizeof(ngx_chat_pg_query_t) + nparams * sizeof(char *)
           + ngx_strlen(sql) + 1;

    for (i = 0; i < nparams; i++) {
        if (values[i] == NULL) {
            continue;
        }

        if (lengths == NULL) {
            size += ngx_strlen(values[i]) + 1;
            continue;
        }

        /* text parameters are NUL-terminated: PostgreSQL text has no NUL */

        if (lengths[i] < 0
            || ngx_strlchr((u_char *) values[i],
                           (u_char *) values[i] + lengths[i], '\0')
               != NULL)
        {
            ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                          "chat postgres: parameter $%i of a query is not "
                          "text (a NUL byte)", i + 1);
            return NGX_ERROR;
        }

        size += lengths[i] + 1;
    }

    q = ngx_alloc(size, pg->log);
    if (q == NULL) {
        return NGX_ERROR;
    }

    q->handler = handler;
    q->data = data;
    q->nparams = nparams;

    p = (u_char *) q + sizeof(ngx_chat_pg_query_t);

    q->values = (const char **) p;
    p += nparams * sizeof(char *);

    for (i = 0; i < nparams; i++) {
        if (values[i] == NULL) {
            q->values[i] = NULL;
            continue;
        }

        len = lengths ? (size_t) lengths[i] : ngx_strlen(values[i]);

        q->values[i] = (const char *) p;
        p = ngx_cpymem(p, values[i], len);
        *p++ = '\0';
    }

    q->sql = (char *) p;
    p = ngx_cpymem(p, sql, ngx_strlen(sql));
    *p = '\0';

    ngx_queue_insert_tail(&pg->queries, &q->queue);

    /* sent from the event loop: a handler never runs inside this call */

    if (pg->phase == NGX_CHAT_PG_READY
        && pg->running == NULL
        && !pg->next.posted)
    {
        ngx_post_event(&pg->next, &ngx_posted_events);
    }

    return NGX_OK;
}


ngx_uint_t
ngx_chat_pg_is_up(ngx_chat_pg_t *pg)
{
    return pg != NULL && pg->state == NGX_CHAT_PG_UP && !pg->destroyed;
}


void
ngx_chat_pg_destroy(ngx_chat_pg_t *pg)
{
    if (pg == NULL || pg->destroyed) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "chat postgres destroy");

    pg->destroyed = 1;
    pg->state = NGX_CHAT_PG_DOWN;

    if (pg->reconnect.timer_set) {
        ngx_del_timer(&pg->reconnect);
    }

    if (pg->next.posted) {
        ngx_delete_posted_event(&pg->next);
    }

    ngx_chat_pg_close(pg);

    pg->nesting++;
    ngx_chat_pg_fail_pending(pg);
    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_reconnect_handler(ngx_event_t *ev)
{
    ngx_chat_pg_t  *pg;

    pg = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    pg->nesting++;
    ngx_chat_pg_connect(pg);
    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_timeout_handler(ngx_event_t *ev)
{
    ngx_chat_pg_t  *pg;

    pg = ev->data;

    pg->nesting++;

    switch (pg->phase) {

    case NGX_CHAT_PG_POLLING:
        ngx_chat_pg_fail(pg, "connection timed out", NULL);
        break;

    case NGX_CHAT_PG_SCHEMA:
        ngx_chat_pg_fail(pg, "schema creation timed out", NULL);
        break;

    default: /* NGX_CHAT_PG_READY */
        ngx_chat_pg_fail(pg, "query timed out", NULL);
        break;
    }

    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_next_handler(ngx_event_t *ev)
{
    ngx_chat_pg_t  *pg;

    pg = ev->data;

    pg->nesting++;
    ngx_chat_pg_send(pg);
    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_read_handler(ngx_event_t *rev)
{
    ngx_chat_pg_t     *pg;
    ngx_connection_t  *c;

    c = rev->data;
    pg = c->data;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rev->log, 0,
                   "chat postgres read handler, phase:%ui",
                   (ngx_uint_t) pg->phase);

    pg->nesting++;

    if (pg->phase == NGX_CHAT_PG_POLLING) {

        if (!pg->poll_write) {
            ngx_chat_pg_poll(pg);

        } else if (ngx_handle_read_event(rev, 0) != NGX_OK) {
            ngx_chat_pg_fail(pg, "connection failed",
                             "cannot watch the socket");
        }

    } else {
        ngx_chat_pg_read(pg);
    }

    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_write_handler(ngx_event_t *wev)
{
    ngx_chat_pg_t     *pg;
    ngx_connection_t  *c;

    c = wev->data;
    pg = c->data;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, wev->log, 0,
                   "chat postgres write handler, phase:%ui",
                   (ngx_uint_t) pg->phase);

    pg->nesting++;

    if (pg->phase == NGX_CHAT_PG_POLLING) {

        if (pg->poll_write) {
            ngx_chat_pg_poll(pg);

        } else if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_chat_pg_fail(pg, "connection failed",
                             "cannot watch the socket");
        }

        goto done;
    }

    if (pg->flushing) {
        if (ngx_chat_pg_flush(pg) != NGX_OK) {
            goto done;
        }

    } else if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_chat_pg_fail(pg, "connection lost", "cannot watch the socket");
        goto done;
    }

    if (!pg->flushing) {
        ngx_chat_pg_send(pg);
    }

done:

    ngx_chat_pg_leave(pg);
}


static void
ngx_chat_pg_connect(ngx_chat_pg_t *pg)
{
    const char  *values[3];

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "chat postgres connect");

    pg->fatal_len = 0;

    /*
     * the conninfo (expanded from "dbname"), then client_encoding, which
     * overrides the conninfo's and PGCLIENTENCODING: our text is UTF-8,
     * and a database in another encoding converts it or refuses it
     */

    values[0] = (const char *) pg->conf->conninfo.data;
    values[1] = "UTF8";
    values[2] = NULL;

    /* with a host name this looks it up: see ngx_chat_pg_check_hosts() */

    pg->conn = PQconnectStartParams(ngx_chat_pg_keywords, values, 1);

    if (pg->conn == NULL) {
        ngx_chat_pg_fail(pg, "connection failed", "out of memory");
        return;
    }

    ngx_chat_pg_set_label(pg);

    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        ngx_chat_pg_fail(pg, "connection failed", PQerrorMessage(pg->conn));
        return;
    }

    if (PQsetnonblocking(pg->conn, 1) != 0) {
        ngx_chat_pg_fail(pg, "connection failed", PQerrorMessage(pg->conn));
        return;
    }

    PQsetNoticeReceiver(pg->conn, ngx_chat_pg_notice, pg);

    pg->phase = NGX_CHAT_PG_POLLING;

    /* as if PQconnectPoll() had returned PGRES_POLLING_WRITING */

    pg->poll_write = 1;

    /* a connection in progress does not hold up a worker's exit */

    if (pg->conf->connect_timeout) {
        pg->timeout.cancelable = 1;
        ngx_add_timer(&pg->timeout, pg->conf->connect_timeout);
    }

    if (ngx_chat_pg_wrap(pg) != NGX_OK) {
        ngx_chat_pg_fail(pg, "connection failed", "cannot watch the socket");
    }
}


static void
ngx_chat_pg_poll(ngx_chat_pg_t *pg)
{
    ngx_connection_t             *c;
    PostgresPollingStatusType     rc;

    for ( ;; ) {
        rc = PQconnectPoll(pg->conn);

        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                       "chat postgres poll: %d, status:%d",
                       (int) rc, (int) PQstatus(pg->conn));

        if (rc == PGRES_POLLING_FAILED) {
            ngx_chat_pg_fail(pg, "connection failed",
                             PQerrorMessage(pg->conn));
            return;
        }

        /* the socket may be another one now */

        if (ngx_chat_pg_wrap(pg) != NGX_OK) {
            ngx_chat_pg_fail(pg, "connection failed",
                             "cannot watch the socket");
            return;
        }

        c = pg->connection;

        switch (rc) {

        case PGRES_POLLING_OK:
            ngx_chat_pg_send_schema(pg);
            return;

        case PGRES_POLLING_READING:
            pg->poll_write = 0;

            /* an event came while libpq waited for the other one */

            if (c->read->ready) {
                c->read->ready = 0;
                continue;
            }

            break;

        case PGRES_POLLING_WRITING:
            pg->poll_write = 1;

            if (c->write->ready) {
                c->write->ready = 0;
                continue;
            }

            break;

        default:
            ngx_chat_pg_fail(pg, "connection failed",
                             "unexpected PQconnectPoll() status");
            return;
        }

        if (ngx_handle_read_event(c->read, 0) != NGX_OK
            || ngx_handle_write_event(c->write, 0) != NGX_OK)
        {
            ngx_chat_pg_fail(pg, "connection failed",
                             "cannot watch the socket");
        }

        return;
    }
}


static ngx_int_t
ngx_chat_pg_wrap(ngx_chat_pg_t *pg)
{
    int                fd;
    ngx_file_info_t    fi;
    ngx_connection_t  *c;

    fd = PQsocket(pg->conn);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, pg->log, 0,
                      "chat postgres: libpq has no socket");
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, pg->log, ngx_errno,
                      "chat postgres: " ngx_fd_info_n " failed");
        return NGX_ERROR;
    }

    c = pg->connection;

    if (c) {
        if (c->fd == fd && pg->uniq == ngx_file_uniq(&fi)) {
            return NGX_OK;
        }

        /* libpq has closed that socket and opened another */

        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                       "chat postgres socket changed: %d -> %d", c->fd, fd);

        ngx_chat_pg_unwrap(pg);
    }

    c = ngx_get_connection(fd, pg->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pg;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    c->read->handler = ngx_chat_pg_read_handler;
    c->write->handler = ngx_chat_pg_write_handler;
    c->read->log = pg->log;
    c->write->log = pg->log;

    pg->connection = c;
    pg->uniq = ngx_file_uniq(&fi);

    /* both directions, for good: events are never missed */

    if (ngx_handle_read_event(c->read, 0) != NGX_OK
        || ngx_handle_write_event(c->write, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_chat_pg_unwrap(ngx_chat_pg_t *pg)
{
    ngx_connection_t  *c;

    c = pg->connection;

    if (c == NULL) {
        return;
    }

    pg->connection = NULL;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /*
     * NGX_CLOSE_EVENT: no epoll_ctl(), libpq closes (or has closed) the
     * socket, and that removes it from the epoll set
     */

    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;

    ngx_free_connection(c);

    /* stale events of this epoll_wait() batch are recognised by this */

    c->fd = (ngx_socket_t) -1;
}


static void
ngx_chat_pg_send_schema(ngx_chat_pg_t *pg)
{
    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "chat postgres connected, schema");

    if (pg->timeout.timer_set) {
        ngx_del_timer(&pg->timeout);
    }

    pg->phase = NGX_CHAT_PG_SCHEMA;

    if (!PQsendQuery(pg->conn, ngx_chat_pg_schema)) {
        ngx_chat_pg_fail(pg, "connection lost", PQerrorMessage(pg->conn));
        return;
    }

    /* still part of connecting: does not hold up a worker's exit */

    if (pg->conf->query_timeout) {
        pg->timeout.cancelable = 1;
        ngx_add_timer(&pg->timeout, pg->conf->query_timeout);
    }

    (void) ngx_chat_pg_flush(pg);
}


static void
ngx_chat_pg_send(ngx_chat_pg_t *pg)
{
    ngx_queue_t          *qu;
    ngx_chat_pg_query_t  *q;

    while (pg->phase == NGX_CHAT_PG_READY
           && pg->running == NULL
           && !ngx_queue_empty(&pg->queries))
    {
        qu = ngx_queue_head(&pg->queries);
        q = ngx_queue_data(qu, ngx_chat_pg_query_t, queue);

        if (PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, q->values,
                              NULL, NULL, 0))
        {
            pg->running = q;

            /* a query in flight: a worker that exits waits for it */

            if (pg->conf->query_timeout) {
                pg->timeout.cancelable = 0;
                ngx_add_timer(&pg->timeout, pg->conf->query_timeout);
            }

            (void) ngx_chat_pg_flush(pg);
            return;
        }

        if (PQstatus(pg->conn) != CONNECTION_OK) {
            ngx_chat_pg_fail(pg, "connection lost", PQerrorMessage(pg->conn));
            return;
        }

        /* this query only: the next one may do */

        ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                      "chat postgres: query not sent: %s",
                      PQerrorMessage(pg->conn));

        ngx_queue_remove(qu);

        if (q->handler) {
            q->handler(pg, NULL, q->data);
        }

        ngx_free(q);
    }
}


static ngx_int_t
ngx_chat_pg_flush(ngx_chat_pg_t *pg)
{
    int                rc;
    ngx_connection_t  *c;

    rc = PQflush(pg->conn);

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "chat postgres flush: %d", rc);

    if (rc == -1) {
        ngx_chat_pg_fail(pg, "connection lost", PQerrorMessage(pg->conn));
        return NGX_ERROR;
    }

    c = pg->connection;

    if (rc == 1) {

        /* the socket buffer is full: more when it is writable */

        pg->flushing = 1;
        c->write->ready = 0;

    } else {
        pg->flushing = 0;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_chat_pg_fail(pg, "connection lost", "cannot watch the socket");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_chat_pg_read(ngx_chat_pg_t *pg)
{
    ngx_uint_t         i, tls;
    ngx_connection_t  *c;

    c = pg->connection;
    tls = 0;

    for (i = 0; /* void */ ; i++) {

        if (!PQconsumeInput(pg->conn)) {
            ngx_chat_pg_fail(pg, "connection lost", PQerrorMessage(pg->conn));
            return;
        }

        if (ngx_chat_pg_collect(pg) != NGX_OK) {
            return;
        }

        if (pg->connection != c) {
            /* closed by a handler */
            return;
        }

        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            ngx_chat_pg_fail(pg, "connection lost", PQerrorMessage(pg->conn));
            return;
        }

        /*
         * PQconsumeInput() reads once: with edge-triggered events go on
         * until the socket has nothing more; with TLS once more after
         * that, for the rest of a record that did not fit libpq's buffer
         * (at most 8k, it always has 8k free)
         */

        if (ngx_chat_pg_more(c)) {
            tls = 0;

        } else if (tls || !PQsslInUse(pg->conn)) {
            break;

        } else {
            tls = 1;
        }

        if (i == NGX_CHAT_PG_READ_ROUNDS) {
            /* let others run too */
            ngx_post_event(c->read, &ngx_posted_events);
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_chat_pg_fail(pg, "connection lost", "cannot watch the socket");
    }
}


/* takes the results complete so far; NGX_ERROR: closed meanwhile */

static ngx_int_t
ngx_chat_pg_collect(ngx_chat_pg_t *pg)
{
    PGnotify        *n;
    PGresult        *res;
    ExecStatusType   status;

    while (pg->phase == NGX_CHAT_PG_SCHEMA || pg->running) {

        if (PQisBusy(pg->conn)) {
            return NGX_OK;
        }

        res = PQgetResult(pg->conn);

        if (res == NULL) {

            /* the query is complete */

            ngx_chat_pg_complete(pg);

            if (pg->conn == NULL) {
                return NGX_ERROR;
            }

            continue;
        }

        status = PQresultStatus(res);

        if (status == PGRES_COPY_IN
            || status == PGRES_COPY_OUT
            || status == PGRES_COPY_BOTH)
        {
            PQclear(res);
            ngx_chat_pg_fail(pg, "connection lost",
                             "COPY is not supported");
            return NGX_ERROR;
        }

        /* the last result, or the first error */

        if (pg->result && ngx_chat_pg_is_error(pg->result)) {
            PQclear(res);
            continue;
        }

        if (pg->result) {
            PQclear(pg->result);
        }

        pg->result = res;
    }

    /* nothing asked: let libpq parse notices and the like that came */

    (void) PQisBusy(pg->conn);

    while ((n = PQnotifies(pg->conn)) != NULL) {
        PQfreemem(n);
    }

    return NGX_OK;
}


static void
ngx_chat_pg_complete(ngx_chat_pg_t *pg)
{
    PGresult             *res;
    ngx_chat_pg_query_t  *q;

    res = pg->result;
    pg->result = NULL;

    if (pg->timeout.timer_set) {
        ngx_del_timer(&pg->timeout);
    }

    if (pg->phase == NGX_CHAT_PG_SCHEMA) {
        ngx_chat_pg_schema_done(pg, res);
        return;
    }

    q = pg->running;
    pg->running = NULL;

    ngx_queue_remove(&q->queue);

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "chat postgres query done: %s",
                   res ? PQresStatus(PQresultStatus(res)) : "no result");

    if (q->handler) {
        q->handler(pg, res, q->data);
    }

    if (res) {
        PQclear(res);
    }

    ngx_free(q);

    ngx_chat_pg_send(pg);
}


static void
ngx_chat_pg_schema_done(ngx_chat_pg_t *pg, PGresult *res)
{
    char  *state;

    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        ngx_chat_pg_set_up(pg);
        return;
    }

    if (res == NULL) {
        ngx_chat_pg_fail(pg, "schema creation failed", "no result");
        return;
    }

    /* created by another worker or process meanwhile: once more */

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state
        && (ngx_strcmp(state, "23505") == 0 || ngx_strcmp(state, "42P07") == 0)
        && ++pg->schema_tries < NGX_CHAT_PG_SCHEMA_TRIES)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                       "chat postgres schema race (%s), again", state);

        PQclear(res);
        ngx_chat_pg_send_schema(pg);
        return;
    }

    ngx_chat_pg_fail(pg, "schema creation failed", PQresultErrorMessage(res));

    PQclear(res);
}


static void
ngx_chat_pg_set_up(ngx_chat_pg_t *pg)
{
    pg->phase = NGX_CHAT_PG_READY;
    pg->state = NGX_CHAT_PG_UP;
    pg->up_time = ngx_current_msec;
    pg->down_logged = 0;
    pg->schema_tries = 0;

    /* of a list of hosts, the one connected to */

    ngx_chat_pg_set_label(pg);

    ngx_log_error(NGX_LOG_NOTICE, pg->log, 0,
                  "chat postgres: \"%*s\" is up", pg->label_len, pg->label);

    if (pg->state_handler) {
        pg->state_handler(pg, 1, pg->data);
    }

    ngx_chat_pg_send(pg);
}


/* names the server in logs, never with the password */

static void
ngx_chat_pg_set_label(ngx_chat_pg_t *pg)
{
    u_char  *p;
    char    *user, *host, *port, *db;

    user = PQuser(pg->conn);
    host = PQhost(pg->conn);
    port = PQport(pg->conn);
    db = PQdb(pg->conn);

    p = ngx_snprintf(pg->label, NGX_CHAT_PG_LABEL_MAX, "%s@%s:%s/%s",
                     user ? user : "", host ? host : "", port ? port : "",
                     db ? db : "");

    if (pg->conf->role.len) {
        p = ngx_snprintf(p, NGX_CHAT_PG_LABEL_MAX - (p - pg->label), " (%V)",
                         &pg->conf->role);
    }

    pg->label_len = p - pg->label;
}


static void
ngx_chat_pg_fail(ngx_chat_pg_t *pg, const char *what, const char *detail)
{
    size_t       len;
    ngx_msec_t   delay;
    ngx_uint_t   was, level;
    u_char       buf[NGX_CHAT_PG_MESSAGE_MAX];

    was = pg->state;

    /* copy the message: it lives in the PGconn, closed below */

    if (pg->fatal_len) {

        /* what the server said before it closed the connection */

        len = pg->fatal_len;
        ngx_memcpy(buf, pg->fatal, len);
        pg->fatal_len = 0;

    } else {
        len = ngx_chat_pg_message(buf, sizeof(buf), detail);
    }

    ngx_chat_pg_close(pg);

    pg->state = NGX_CHAT_PG_DOWN;

    delay = ngx_chat_backoff_next(&pg->backoff,
                                  was == NGX_CHAT_PG_UP ? pg->up_time : 0);

    level = pg->down_logged ? NGX_LOG_INFO : NGX_LOG_ERR;
    pg->down_logged = 1;

    if (ngx_exiting || ngx_terminate || pg->destroyed) {
        ngx_log_error(level, pg->log, 0, "chat postgres: %s%s%*s (%*s)",
                      what, len ? ": " : "", len, buf,
                      pg->label_len, pg->label);

    } else {
        ngx_log_error(level, pg->log, 0,
                      "chat postgres: %s%s%*s (%*s, reconnecting in %Mms)",
                      what, len ? ": " : "", len, buf,
                      pg->label_len, pg->label, delay);

        ngx_add_timer(&pg->reconnect, delay);
    }

    ngx_chat_pg_fail_pending(pg);

    if (was != NGX_CHAT_PG_DOWN && !pg->destroyed && pg->state_handler) {
        pg->state_handler(pg, 0, pg->data);
    }
}


static void
ngx_chat_pg_close(ngx_chat_pg_t *pg)
{
    if (pg->timeout.timer_set) {
        ngx_del_timer(&pg->timeout);
    }

    ngx_chat_pg_unwrap(pg);

    if (pg->result) {
        PQclear(pg->result);
        pg->result = NULL;
    }

    if (pg->conn) {

        /* closes the socket; non-blocking: a Terminate is only tried */

        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    pg->phase = NGX_CHAT_PG_CLOSED;
    pg->running = NULL;
    pg->flushing = 0;
    pg->poll_write = 0;
}


static void
ngx_chat_pg_fail_pending(ngx_chat_pg_t *pg)
{
    ngx_queue_t          *qu, pending;
    ngx_chat_pg_query_t  *q;

    if (ngx_queue_empty(&pg->queries)) {
        return;
    }

    /* handlers may query (declined) or destroy: a detached list */

    ngx_queue_init(&pending);
    ngx_queue_add(&pending, &pg->queries);
    ngx_queue_init(&pg->queries);

    while (!ngx_queue_empty(&pending)) {
        qu = ngx_queue_head(&pending);
        ngx_queue_remove(qu);

        q = ngx_queue_data(qu, ngx_chat_pg_query_t, queue);

        if (q->handler) {
            q->handler(pg, NULL, q->data);
        }

        ngx_free(q);
    }
}


static void
ngx_chat_pg_leave(ngx_chat_pg_t *pg)
{
    /* the object is freed only when no frame of ours is on the stack */

    if (--pg->nesting == 0 && pg->destroyed) {
        ngx_chat_pg_free(pg);
    }
}


static void
ngx_chat_pg_free(ngx_chat_pg_t *pg)
{
    ngx_queue_t          *qu;
    ngx_chat_pg_query_t  *q;

    ngx_chat_pg_close(pg);

    if (pg->reconnect.timer_set) {
        ngx_del_timer(&pg->reconnect);
    }

    if (pg->next.posted) {
        ngx_delete_posted_event(&pg->next);
    }

    while (!ngx_queue_empty(&pg->queries)) {
        qu = ngx_queue_head(&pg->queries);
        ngx_queue_remove(qu);
        q = ngx_queue_data(qu, ngx_chat_pg_query_t, queue);
        ngx_free(q);
    }

    ngx_free(pg);
}


/* whether the socket has more to read (or an EOF or error to report) */

static ngx_uint_t
ngx_chat_pg_more(ngx_connection_t *c)
{
    u_char     ch;
    ssize_t    n;
    ngx_err_t  err;

    n = recv(c->fd, &ch, 1, MSG_PEEK);

    if (n >= 0) {
        return 1;
    }

    err = ngx_socket_errno;

    if (err == NGX_EAGAIN) {
        c->read->ready = 0;
        return 0;
    }

    /* NGX_EINTR, or an error that libpq is to report */

    return 1;
}


static ngx_uint_t
ngx_chat_pg_is_error(PGresult *res)
{
    switch (PQresultStatus(res)) {

    case PGRES_BAD_RESPONSE:
    case PGRES_NONFATAL_ERROR:
    case PGRES_FATAL_ERROR:
        return 1;

    default:
        return 0;
    }
}


/* the notice receiver: server messages that are not query results */

static void
ngx_chat_pg_notice(void *arg, const PGresult *res)
{
    ngx_chat_pg_t *pg = arg;

    char        *severity;
    size_t       len;
    ngx_uint_t   level;
    u_char       buf[NGX_CHAT_PG_MESSAGE_MAX];

    severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (severity == NULL) {
        severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
    }

    len = ngx_chat_pg_message(buf, sizeof(buf), PQresultErrorMessage(res));

    if (severity
        && (ngx_strcmp(severity, "FATAL") == 0
            || ngx_strcmp(severity, "PANIC") == 0))
    {
        /* the connection is about to close: the reason for the ERR line */

        ngx_memcpy(pg->fatal, buf, len);
        pg->fatal_len = len;
        return;
    }

    if (severity && ngx_strcmp(severity, "WARNING") == 0) {
        level = NGX_LOG_WARN;

    } else {
        level = NGX_LOG_INFO;
    }

    ngx_log_error(level, pg->log, 0, "chat postgres: %*s (%*s)",
                  len, buf, pg->label_len, pg->label);
}


/* libpq's message on one line: no newlines, tabs, trailing blanks */

size_t
ngx_chat_pg_message(u_char *buf, size_t size, const char *msg)
{
    u_char  *p, *last, ch;

    if (msg == NULL) {
        return 0;
    }

    p = buf;
    last = buf + size;

    for ( /* void */ ; *msg && p < last; msg++) {
        ch = (u_char) *msg;

        if (ch < 0x20 || ch == 0x7f) {
            if (p > buf && p[-1] != ' ') {
                *p++ = ' ';
            }

            continue;
        }

        *p++ = ch;
    }

    while (p > buf && p[-1] == ' ') {
        p--;
    }

    return p - buf;
}
