
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_STATUS_H_INCLUDED_
#define _NGX_CHAT_STATUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* chat_status: the zone's counters as JSON, or Prometheus text */
ngx_int_t ngx_chat_status_handler(ngx_http_request_t *r);


#endif /* _NGX_CHAT_STATUS_H_INCLUDED_ */
