
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_PROTO_H_INCLUDED_
#define _NGX_CHAT_PROTO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * The protocol layer (SPEC §4): the content handler of a "chat" location.
 * It has the connection layer check and accept the upgrade, opens a
 * session on the connection (the welcome frame, then client JSON in, room
 * operations out) and hands the connection to the connection layer.
 */

ngx_int_t ngx_chat_proto_handler(ngx_http_request_t *r);


#endif /* _NGX_CHAT_PROTO_H_INCLUDED_ */
