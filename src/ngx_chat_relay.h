
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_RELAY_H_INCLUDED_
#define _NGX_CHAT_RELAY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_redis.h"


/*
 * The Redis relay between nginx servers.  One worker per server (the
 * owner, elected through the zone) holds two Redis connections: one
 * publishes this server's messages and presence changes, read from the
 * bus, once per server; the other is subscribed to one channel per room
 * with members here, and feeds what other servers publish into the bus,
 * where every worker delivers it like a local message.
 */

void ngx_chat_relay_init(ngx_chat_shm_ctx_t *ctx,
    ngx_chat_redis_conf_t *conf);
void ngx_chat_relay_tick(ngx_chat_shm_ctx_t *ctx);
void ngx_chat_relay_entry(ngx_chat_shm_ctx_t *ctx, uint64_t pos,
    ngx_chat_bus_entry_t *e);
void ngx_chat_relay_flush(ngx_chat_shm_ctx_t *ctx);
void ngx_chat_relay_exit(ngx_chat_shm_ctx_t *ctx);


#endif /* _NGX_CHAT_RELAY_H_INCLUDED_ */
