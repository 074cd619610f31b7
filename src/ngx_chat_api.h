
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_API_H_INCLUDED_
#define _NGX_CHAT_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * The HTTP API for backends (SPEC §11): the content handler of a
 * "chat_api" location.  A POSTed JSON request (publish, broadcast, who,
 * history, disconnect) is answered with JSON; a published message takes
 * the path of a client's send (ids, order, ring, fan-out, relay,
 * storage), and with storage its answer waits for the COMMIT.  Access
 * control is nginx's (allow/deny, auth_request, auth_basic).
 */

ngx_int_t ngx_chat_api_handler(ngx_http_request_t *r);


#endif /* _NGX_CHAT_API_H_INCLUDED_ */
