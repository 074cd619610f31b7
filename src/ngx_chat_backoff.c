
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Reconnect back-off (see ngx_chat_backoff.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat_backoff.h"


void
ngx_chat_backoff_init(ngx_chat_backoff_t *b, ngx_msec_t min, ngx_msec_t max)
{
    b->min = min;
    b->max = max;
    b->next = min;
}


ngx_msec_t
ngx_chat_backoff_next(ngx_chat_backoff_t *b, ngx_msec_t up_since)
{
    ngx_msec_t  backoff;

    if (up_since && ngx_current_msec - up_since >= b->max) {
        b->next = b->min;
    }

    backoff = b->next;
    b->next = ngx_min(backoff * 2, b->max);

    return backoff - backoff / 4
           + (ngx_msec_t) ngx_random() % (backoff / 2 + 1);
}
