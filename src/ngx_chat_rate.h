
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_RATE_H_INCLUDED_
#define _NGX_CHAT_RATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A rate bucket counted as limit_req counts with "nodelay": up to 1 + burst
 * requests at once, then rate per second.  Rates and bursts are in
 * thousandths (10r/s is 10000), as limit_req keeps them.  The bucket is 8
 * bytes, so that it fits where it is kept (a zone user, a connection); the
 * caller provides whatever lock it needs.
 */

typedef struct {
    uint32_t                   last;      /* ms, compared modulo 2^32 */
    uint32_t                   excess:31;
    uint32_t                   used:1;    /* the bucket has seen a request */
} ngx_chat_rate_t;


/*
 * Takes one request from the bucket at time now: NGX_OK, or NGX_BUSY with
 * *retry_ms set to how long to wait (rounded up: waiting that long is
 * always enough); a refused request leaves the bucket as it was
 */
ngx_int_t ngx_chat_rate_take(ngx_chat_rate_t *b, ngx_msec_t now,
    ngx_uint_t rate, ngx_uint_t burst, ngx_msec_t *retry_ms);


#endif /* _NGX_CHAT_RATE_H_INCLUDED_ */
