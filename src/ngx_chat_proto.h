
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_PROTO_H_INCLUDED_
#define _NGX_CHAT_PROTO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_ws.h"


/*
 * The protocol layer: client JSON in, room operations out (SPEC §4).
 * ngx_chat_proto_open() is called once the handshake is accepted; it sets
 * ws->message and ws->closed and queues the welcome frame.  It returns
 * NGX_OK, or an HTTP status to refuse the upgrade with.
 */

ngx_int_t ngx_chat_proto_open(ngx_chat_ws_t *ws);


#endif /* _NGX_CHAT_PROTO_H_INCLUDED_ */
