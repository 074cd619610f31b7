
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_CHAT_H_INCLUDED_
#define _NGX_CHAT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_CHAT_MAX_ROOM_NAME    128
#define NGX_CHAT_MAX_USER         256
#define NGX_CHAT_MAX_HISTORY      1000
#define NGX_CHAT_MAX_REDIS_PREFIX 64


/*
 * Shared types of every layer: the configuration.  Each layer's own types
 * are in its header; the layers, bottom up, are listed in README.md
 * ("How it works"), and a header includes only headers of layers below.
 */


typedef struct ngx_chat_ws_s       ngx_chat_ws_t;
typedef struct ngx_chat_shm_ctx_s  ngx_chat_shm_ctx_t;
typedef struct ngx_chat_jwt_key_s  ngx_chat_jwt_key_t;


/* chat_rate, chat_request_rate: in thousandths, as limit_req keeps them */
typedef struct {
    ngx_uint_t                 rate;              /* r/s * 1000; 0: off */
    ngx_uint_t                 burst;             /* burst * 1000 */
} ngx_chat_rate_conf_t;


typedef struct {
    ngx_shm_zone_t            *zone;              /* chat NAME */
    ngx_shm_zone_t            *status_zone;       /* chat_status NAME */
    ngx_shm_zone_t            *api_zone;          /* chat_api NAME */
    ngx_http_complex_value_t  *user;
    ngx_http_complex_value_t  *jwt;               /* chat_jwt */
    ngx_chat_jwt_key_t        *jwt_key;           /* chat_jwt_key */
    ngx_array_t               *origins;           /* of ngx_str_t */
    ngx_chat_rate_conf_t       rate;              /* chat_rate, per user */
    ngx_chat_rate_conf_t       request_rate;      /* per connection */
    ngx_uint_t                 history;
    size_t                     max_message_size;
    ngx_uint_t                 max_rooms;
    size_t                     send_buffer;
    ngx_msec_t                 ping_interval;
    ngx_msec_t                 ping_timeout;
    ngx_flag_t                 deflate;           /* chat_deflate */
    size_t                     deflate_min_size;
    ngx_int_t                  deflate_level;
    ngx_str_t                  chat_file;         /* where "chat" is */
    ngx_uint_t                 chat_line;
} ngx_chat_loc_conf_t;


typedef struct {
    ngx_array_t                zones;             /* of ngx_chat_shm_ctx_t * */
    ngx_array_t                refs;              /* zone references */
    struct ngx_chat_redis_conf_s  *redis;         /* chat_redis, or NULL */
    ngx_str_t                  redis_prefix;      /* chat_redis_prefix */
    ngx_int_t                  redis_queue;       /* chat_redis_queue */
    struct ngx_chat_store_conf_s  *store;         /* chat_postgres, or NULL */
} ngx_chat_main_conf_t;


extern ngx_module_t  ngx_chat_module;


#endif /* _NGX_CHAT_H_INCLUDED_ */
