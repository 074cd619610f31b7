
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_BACKOFF_H_INCLUDED_
#define _NGX_CHAT_BACKOFF_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * Reconnect back-off of the Redis and PostgreSQL clients: min doubling to
 * max, +-25% jitter (so that the workers of many servers do not reconnect
 * in step), back to min once a connection had stayed up for max.
 */

typedef struct {
    ngx_msec_t                 min;
    ngx_msec_t                 max;
    ngx_msec_t                 next;
} ngx_chat_backoff_t;


void ngx_chat_backoff_init(ngx_chat_backoff_t *b, ngx_msec_t min,
    ngx_msec_t max);

/*
 * The delay before the next attempt; up_since is when the connection that
 * failed came up, or 0 when it never did
 */
ngx_msec_t ngx_chat_backoff_next(ngx_chat_backoff_t *b, ngx_msec_t up_since);


#endif /* _NGX_CHAT_BACKOFF_H_INCLUDED_ */
