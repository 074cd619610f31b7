
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_REMOTE_H_INCLUDED_
#define _NGX_CHAT_REMOTE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_chat.h"
#include "ngx_chat_shm.h"


/*
 * The zone's side of the Redis relay: which worker of this server relays
 * (the owner, elected here), and what other servers tell: their messages
 * and their users, kept per server (present or not) in worker slots from
 * NGX_CHAT_REMOTE_SLOT on, so that "members", "who" and presence events
 * include them.  Functions take the zone's mutex themselves; those that
 * change a room return NGX_OK when members must be told (the caller then
 * publishes), NGX_DECLINED otherwise.
 */


/* this server's identity, random, new on each start of the zone */
uint64_t ngx_chat_remote_server_id(ngx_chat_shm_ctx_t *ctx);

/* claims the relay for this worker when nobody (alive) has it */
ngx_int_t ngx_chat_remote_claim(ngx_chat_shm_ctx_t *ctx, uint64_t *from);
void ngx_chat_remote_release(ngx_chat_shm_ctx_t *ctx);
void ngx_chat_remote_set_up(ngx_chat_shm_ctx_t *ctx, ngx_uint_t up);
void ngx_chat_remote_count_dropped(ngx_chat_shm_ctx_t *ctx);
/* a payload from Redis that failed validation; no lock taken */
void ngx_chat_remote_count_invalid(ngx_chat_shm_ctx_t *ctx);

ngx_int_t ngx_chat_remote_message(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *id, u_char *json, size_t len);
ngx_int_t ngx_chat_remote_presence(ngx_chat_shm_ctx_t *ctx,
    ngx_str_t *room, ngx_str_t *user, uint64_t server, ngx_uint_t join);
void ngx_chat_remote_seen(ngx_chat_shm_ctx_t *ctx, uint64_t server);

/*
 * Drops the servers not seen for timeout (their users leave); with
 * touch_all, marks every known server seen now instead.  Returns how many
 * were dropped.
 */
ngx_uint_t ngx_chat_remote_expire(ngx_chat_shm_ctx_t *ctx,
    ngx_msec_t timeout, ngx_uint_t touch_all);

/* the rooms with members here, copied into an array of ngx_str_t */
ngx_array_t *ngx_chat_remote_local_rooms(ngx_chat_shm_ctx_t *ctx,
    ngx_pool_t *pool);


#endif /* _NGX_CHAT_REMOTE_H_INCLUDED_ */
