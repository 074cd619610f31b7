
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_PG_H_INCLUDED_
#define _NGX_CHAT_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <libpq-fe.h>


/*
 * A PostgreSQL client on nginx's event loop: libpq in non-blocking mode
 * (PQconnectStartParams/PQconnectPoll, PQsendQueryParams, PQconsumeInput,
 * PQisBusy, PQflush), its socket (PQsocket, re-read after every
 * PQconnectPoll) wrapped in an nginx connection whose read and write
 * events drive everything.  Never a blocking libpq call in a worker.
 *
 * One ngx_chat_pg_t is one database connection.  Queries are queued and
 * run one at a time in order; each handler gets its PGresult (freed by
 * this layer after the handler returns) or NULL when the query could not
 * complete (connection lost, timeout).  After any failure the connection
 * is closed and reopened with exponential backoff and jitter; state
 * changes are reported once each (the state handler may be called with
 * up == 0 before any up).  When a connection is up, the schema (SPEC §7:
 * table "messages" with its "zone" column and its indexes) has been
 * created if missing, a table without the zone column migrated in place;
 * operators may create it themselves for a role that may only read and
 * write (conf-examples/schema.sql).  connect_timeout in the conninfo
 * overrides the default connect timeout.  Every connection's
 * client_encoding is UTF8, whatever the conninfo or the environment say:
 * parameters are UTF-8 text, results come back in UTF-8.
 */


typedef struct ngx_chat_pg_s  ngx_chat_pg_t;


typedef struct {
    ngx_str_t                  conninfo;      /* NUL-terminated */
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 query_timeout;
    ngx_str_t                  role;          /* for logs, or empty */
} ngx_chat_pg_conf_t;


typedef void (*ngx_chat_pg_result_pt)(ngx_chat_pg_t *pg, PGresult *res,
    void *data);
typedef void (*ngx_chat_pg_state_pt)(ngx_chat_pg_t *pg, ngx_uint_t up,
    void *data);


/*
 * Checks a conninfo string or URI at configuration time (PQconninfoParse)
 * and fills conf; returns NGX_CONF_OK or an error string for
 * ngx_conf_log_error ("invalid PostgreSQL conninfo: ...").
 */
char *ngx_chat_pg_parse(ngx_conf_t *cf, ngx_str_t *conninfo,
    ngx_chat_pg_conf_t *conf);

/* creates the connection object and starts connecting (worker only) */
ngx_chat_pg_t *ngx_chat_pg_create(ngx_chat_pg_conf_t *conf, ngx_log_t *log,
    ngx_chat_pg_state_pt state, void *data);

/*
 * Queues a parameterised query (text parameters, which must not contain
 * NUL: NGX_ERROR; lengths may be NULL for NUL-terminated values).  Values
 * are copied.  Returns NGX_OK (the handler
 * will be called exactly once), NGX_DECLINED when the connection is down
 * (nothing queued), NGX_ERROR.
 */
ngx_int_t ngx_chat_pg_query(ngx_chat_pg_t *pg, const char *sql,
    int nparams, const char *const *values, const int *lengths,
    ngx_chat_pg_result_pt handler, void *data);

ngx_uint_t ngx_chat_pg_is_up(ngx_chat_pg_t *pg);

/* libpq's message on one line (control characters folded), for logs */
#define NGX_CHAT_PG_MESSAGE_MAX  512
size_t ngx_chat_pg_message(u_char *buf, size_t size, const char *msg);

/* closes for good (worker exit); pending handlers get NULL */
void ngx_chat_pg_destroy(ngx_chat_pg_t *pg);


#endif /* _NGX_CHAT_PG_H_INCLUDED_ */
