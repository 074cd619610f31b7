
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_REDIS_H_INCLUDED_
#define _NGX_CHAT_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <hiredis/hiredis.h>


/*
 * A Redis client on nginx's event loop: nginx owns the socket
 * (ngx_event_connect_peer), hiredis formats commands
 * (redisFormatCommandArgv) and parses replies (redisReader).  One
 * ngx_chat_redis_t is one connection, reconnected with exponential backoff
 * and jitter after any failure; AUTH and SELECT are sent on connect when
 * the URL asks for them.  A connection is either a command connection
 * (replies come back in order to each command's handler) or, once
 * SUBSCRIBE was sent on it, a subscriber: then every pub/sub "message"
 * push goes to the message handler.
 *
 * Notes on the contract:
 * - SUBSCRIBE/PSUBSCRIBE with several channels and UNSUBSCRIBE/
 *   PUNSUBSCRIBE without arguments work; the handler gets the last
 *   confirmation.
 * - The state handler gets up=1 on the first connect too; a failed first
 *   attempt logs but does not call it with 0.
 * - Subscriptions are lost on reconnect: the owner subscribes again when
 *   the state handler says up=1 (the relay does).
 * - Commands are queued only during the first attempt; on later
 *   reconnects they are declined until AUTH/SELECT have succeeded.
 * - Handlers are never called from inside ngx_chat_redis_command(); reply,
 *   channel and payload are valid only during the callback; argvlen may be
 *   NULL (strlen); destroy() may be called from a handler, calls pending
 *   handlers with NULL and not the state handler.
 * - An idle subscriber notices a silently dead peer only through TCP
 *   keepalive: its owner should expect traffic (the relay's heartbeats).
 */


typedef struct ngx_chat_redis_s  ngx_chat_redis_t;


/* parsed chat_redis URL */
typedef struct ngx_chat_redis_conf_s {
    ngx_str_t                  url;        /* for logs, password masked */
    ngx_addr_t                *addrs;      /* resolved at configuration */
    ngx_uint_t                 naddrs;
    ngx_str_t                  user;       /* empty: none */
    ngx_str_t                  password;   /* empty: no AUTH */
    ngx_int_t                  db;         /* -1: no SELECT */
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 command_timeout;
} ngx_chat_redis_conf_t;


/* reply is NULL when the connection failed before the reply came */
typedef void (*ngx_chat_redis_reply_pt)(ngx_chat_redis_t *rc,
    redisReply *reply, void *data);

/* a pub/sub message on a subscriber connection */
typedef void (*ngx_chat_redis_message_pt)(ngx_chat_redis_t *rc,
    ngx_str_t *channel, ngx_str_t *payload, void *data);

/* the connection is now up (1) or down (0); called on changes only */
typedef void (*ngx_chat_redis_state_pt)(ngx_chat_redis_t *rc,
    ngx_uint_t up, void *data);


/*
 * Parses "redis://[[user]:password@]host[:port][/db]" or
 * "unix:/path/to/socket[?db=N]" (unix sockets take no password).  Zeroes
 * conf first (set timeouts after).  Returns NGX_CONF_OK or an error string
 * for ngx_conf_log_error, never NGX_CONF_ERROR.
 */
char *ngx_chat_redis_parse_url(ngx_conf_t *cf, ngx_str_t *url,
    ngx_chat_redis_conf_t *conf);

/* creates the connection object and starts connecting (worker only) */
ngx_chat_redis_t *ngx_chat_redis_create(ngx_chat_redis_conf_t *conf,
    ngx_log_t *log, ngx_chat_redis_state_pt state,
    ngx_chat_redis_message_pt message, void *data);

/*
 * Queues a command (argv, binary-safe).  Returns NGX_OK when queued (the
 * handler, if any, is called with the reply or with NULL on failure),
 * NGX_DECLINED when the connection is down (nothing queued), NGX_ERROR.
 * Commands queued while connecting are sent once connected.
 */
ngx_int_t ngx_chat_redis_command(ngx_chat_redis_t *rc,
    ngx_chat_redis_reply_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

ngx_uint_t ngx_chat_redis_is_up(ngx_chat_redis_t *rc);

/* closes the connection for good (worker exit) */
void ngx_chat_redis_destroy(ngx_chat_redis_t *rc);


#endif /* _NGX_CHAT_REDIS_H_INCLUDED_ */
