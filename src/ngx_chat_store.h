
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_STORE_H_INCLUDED_
#define _NGX_CHAT_STORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"


/*
 * Message storage (chat_postgres): each worker stores the messages it
 * accepted, with their zone.  Messages wait in a bounded per-worker queue;
 * everything queued during one turn of the event loop goes to PostgreSQL
 * in one INSERT (array parameters, ON CONFLICT (id) DO NOTHING, so a batch
 * retried after a lost connection adds no duplicates).  Once the INSERT
 * has committed, each item's done handler runs: the sender's ack, or, with
 * it->refused set, its error, when the row with its id is another message
 * (an id clash).  While PostgreSQL is down the queue waits and is retried;
 * when it is full, new sends are refused.  Nothing of libpq shows above
 * this file: reads come back as decoded rows.
 */

typedef struct ngx_chat_store_item_s  ngx_chat_store_item_t;

typedef void (*ngx_chat_store_done_pt)(ngx_chat_store_item_t *it);


struct ngx_chat_store_item_s {
    ngx_queue_t                queue;     /* in the store */
    ngx_queue_t                owner;     /* in the owner's pending list */
    ngx_chat_store_done_pt     done;      /* NULL once the owner is gone */
    void                      *data;
    ngx_str_t                  id;
    ngx_str_t                  zone;      /* its rows are this zone's */
    ngx_str_t                  room;
    ngx_str_t                  user;
    ngx_str_t                  content;
    ngx_str_t                  ref;
    uint64_t                   ts;
    uint64_t                   prior;     /* where it came among other
                                             servers' messages (0: none) */
    ngx_str_t                  holes;     /* and what of theirs below
                                             prior had not (ngx_chat_shm_
                                             place_t) */
    uint64_t                   accepted;  /* the owner's: ngx_chat_bus_clock()
                                             when the send was accepted */
    unsigned                   has_ref:1;
    unsigned                   refused:1; /* for done: not stored, the
                                             sender gets "unavailable" */
};


typedef struct ngx_chat_store_conf_s  ngx_chat_store_conf_t;


/* a stored message as read */
typedef struct {
    ngx_str_t                  id;
    ngx_str_t                  user;
    ngx_str_t                  content;
    ngx_str_t                  ts;        /* ms since the epoch, decimal */
    ngx_str_t                  prior;     /* decimal, empty: none (the
                                             item's prior) */
    ngx_str_t                  holes;     /* the item's, empty: none */
} ngx_chat_store_row_t;


typedef struct {
    ngx_chat_store_row_t      *rows;      /* newest first */
    ngx_uint_t                 n;
    ngx_uint_t                 found;     /* SINCE, BEFORE: the id is known */
} ngx_chat_store_rows_t;


/* rows is NULL when the read failed */
typedef void (*ngx_chat_store_read_pt)(ngx_chat_store_rows_t *rows,
    void *data);


/* chat_postgres and chat_postgres_queue (configuration) */
char *ngx_chat_store_conf_conninfo(ngx_conf_t *cf,
    ngx_chat_store_conf_t **scfp, ngx_str_t *conninfo);
char *ngx_chat_store_conf_queue(ngx_conf_t *cf, ngx_chat_store_conf_t **scfp,
    ngx_str_t *size);
/* chat_postgres_queue alone configures no storage */
ngx_uint_t ngx_chat_store_conf_enabled(ngx_chat_store_conf_t *scf);


ngx_int_t ngx_chat_store_init_process(ngx_cycle_t *cycle,
    ngx_chat_main_conf_t *cmcf);
void ngx_chat_store_exit_process(ngx_cycle_t *cycle);

ngx_uint_t ngx_chat_store_enabled(void);
ngx_uint_t ngx_chat_store_full(void);

ngx_chat_store_item_t *ngx_chat_store_add(ngx_str_t *id, ngx_str_t *zone,
    ngx_str_t *room, ngx_str_t *user, ngx_str_t *content, uint64_t ts,
    ngx_str_t *ref, uint64_t prior, ngx_str_t *holes);

#define NGX_CHAT_STORE_LAST     0    /* the newest limit messages */
#define NGX_CHAT_STORE_SINCE    1    /* everything after id (at most 1000),
                                        and what was stored up to
                                        NGX_CHAT_STORE_OVERLAP before it */
#define NGX_CHAT_STORE_BEFORE   2    /* limit messages before id */

/*
 * Seconds before a SINCE id that its read covers too: ids of different
 * servers are ordered by number, not by when they reach a member (another
 * server's message, numbered lower, comes later when its relay held it
 * through a Redis outage, or never, when the server the member was on
 * stopped first), so "after the id" in storage's order may skip what the
 * member never had.  The caller keeps what is after the id and, of the
 * rest, what is within this much of it: what the client had comes again
 * (clients dedupe by id; SPEC: at most once per connection).
 */
#define NGX_CHAT_STORE_OVERLAP  60

/*
 * Reads the stored messages of a zone's room, newest first; with SINCE and
 * BEFORE, rows->found says whether the id is stored (SINCE with an id not
 * stored: the rows from the time in its number, less
 * NGX_CHAT_STORE_OVERLAP).  Reads have a PostgreSQL connection of their
 * own, so that stores never wait behind them.
 * A read waits for its turn (at most 100 in flight per worker) and, when
 * PostgreSQL is down or the connection is lost under it, for PostgreSQL
 * to be back, up to 10 s in all; then the handler gets NULL.  Returns
 * NGX_DECLINED without storage, NGX_BUSY when as many reads wait as the
 * worker has connections (the handler is not called then).
 */
ngx_int_t ngx_chat_store_history(ngx_uint_t mode, ngx_str_t *zone,
    ngx_str_t *room, ngx_str_t *id, ngx_uint_t limit,
    ngx_chat_store_read_pt handler, void *data);

/*
 * Whether a message of this room, accepted and not committed yet, is
 * unknown to known() (the ring a read merges): a read, on a connection of
 * its own, does not see it, so its reply cannot be complete
 */
typedef ngx_uint_t (*ngx_chat_store_known_pt)(ngx_str_t *id, void *data);

ngx_uint_t ngx_chat_store_unstored(ngx_str_t *zone, ngx_str_t *room,
    ngx_chat_store_known_pt known, void *data);

/* as many reads wait as the worker takes */
ngx_uint_t ngx_chat_store_reads_full(void);

/* the owner is gone: the item is still stored, nobody is told */
void ngx_chat_store_forget(ngx_chat_store_item_t *it);


#endif /* _NGX_CHAT_STORE_H_INCLUDED_ */
