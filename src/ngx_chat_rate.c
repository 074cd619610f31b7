
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The rate bucket (see ngx_chat_rate.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat_rate.h"


ngx_int_t
ngx_chat_rate_take(ngx_chat_rate_t *b, ngx_msec_t now, ngx_uint_t rate,
    ngx_uint_t burst, ngx_msec_t *retry_ms)
{
    ngx_int_t       excess;
    ngx_msec_int_t  elapsed;

    /* b->last is kept modulo 2^32 ms (~49.7 days) */
    elapsed = (int32_t) ((uint32_t) now - b->last);

    if (b->used && elapsed >= -60000) {
        /*
         * workers' cached clocks differ a little: a request recorded
         * "later" by another worker counts as now (far "later" is a
         * bucket idle for over 24 days: a full one)
         */

        if (elapsed < 0) {
            elapsed = 0;
        }

        excess = (ngx_int_t) b->excess - (ngx_int_t) (rate * elapsed / 1000)
                 + 1000;

        if (excess < 0) {
            excess = 0;
        }

    } else {
        excess = 0;
    }

    if ((ngx_uint_t) excess > burst) {
        *retry_ms = ((excess - burst) * 1000 + rate - 1) / rate;
        return NGX_BUSY;
    }

    b->excess = (uint32_t) excess;
    b->last = (uint32_t) now;
    b->used = 1;

    return NGX_OK;
}
