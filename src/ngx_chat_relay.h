
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_RELAY_H_INCLUDED_
#define _NGX_CHAT_RELAY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"


/*
 * The Redis relay between nginx servers.  One worker per server (the
 * owner, elected through the zone) holds two Redis connections: one
 * publishes this server's messages and presence changes, read from the
 * bus through the fan-out's tap, once per server; the other is subscribed
 * to one channel per room with members here, and feeds what other servers
 * publish into the zone (ngx_chat_remote.h), where every worker delivers
 * it like a local message.  Every worker tries to become the owner once a
 * second while nobody (alive) is.
 */

ngx_int_t ngx_chat_relay_init_process(ngx_cycle_t *cycle,
    ngx_chat_main_conf_t *cmcf);
void ngx_chat_relay_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_CHAT_RELAY_H_INCLUDED_ */
