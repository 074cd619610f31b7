
/*
 * Copyright (C) ngx_chat_module authors
 *
 * Module definition, directives, configuration and init hooks.  No
 * protocol logic lives here.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_chat.h"
#include "ngx_chat_jwt.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_bus.h"
#include "ngx_chat_shm.h"
#include "ngx_chat_ws.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_store.h"
#include "ngx_chat_relay.h"
#include "ngx_chat_status.h"
#include "ngx_chat_proto.h"
#include "ngx_chat_api.h"


/*
 * The sanitizer build (make test-asan) keeps the module mapped until the
 * process ends.  nginx dlclose()s a module when its cycle's pool is
 * destroyed, and a worker destroys it just before exit(): LeakSanitizer
 * reports at exit, after that, so every frame of the module showed as
 * <unknown module> and its leaks could not be told from nginx's own.
 * Pinning from the module itself (dlopen of its own file with
 * RTLD_NOLOAD | RTLD_NODELETE, from the init_module hook, which runs in
 * the master and in nginx -t, before workers are forked) works with any
 * nginx binary, Debian's or one's own build, with no preload and no
 * wrapper.  Only the sanitizer build does it: a pinned module would also
 * survive a reload that drops its load_module line, which a production
 * nginx should not see.  A static build (--add-module) has nothing to pin.
 * -DNGX_CHAT_PIN=0 turns it off: then the module's static data goes with
 * it, and LeakSanitizer also reports what only a static still points to.
 */

#ifndef NGX_CHAT_PIN
#if defined(__SANITIZE_ADDRESS__)
#define NGX_CHAT_PIN  1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NGX_CHAT_PIN  1
#endif
#endif
#endif

#ifndef NGX_CHAT_PIN
#define NGX_CHAT_PIN  0
#endif


typedef struct {
    ngx_shm_zone_t  *zone;
    ngx_str_t        file;
    ngx_uint_t       line;
} ngx_chat_zone_ref_t;


static void *ngx_chat_create_main_conf(ngx_conf_t *cf);
static char *ngx_chat_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_chat_create_loc_conf(ngx_conf_t *cf);
static char *ngx_chat_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_chat_postconfiguration(ngx_conf_t *cf);
static char *ngx_chat_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_redis_prefix_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_chat_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_postgres_queue(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_shm_zone_t *ngx_chat_zone_ref(ngx_conf_t *cf, ngx_str_t *name);
static ngx_int_t ngx_chat_init_process(ngx_cycle_t *cycle);
#if (NGX_CHAT_PIN)
static ngx_int_t ngx_chat_init_module(ngx_cycle_t *cycle);
#endif
static void ngx_chat_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_chat_history_bounds = {
    ngx_conf_check_num_bounds, 0, 100000
};

static ngx_conf_num_bounds_t  ngx_chat_max_rooms_bounds = {
    ngx_conf_check_num_bounds, 1, 100000
};

static ngx_conf_num_bounds_t  ngx_chat_redis_queue_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};

static ngx_conf_num_bounds_t  ngx_chat_deflate_level_bounds = {
    ngx_conf_check_num_bounds, 1, 9
};

static ngx_conf_post_t  ngx_chat_redis_prefix_post = {
    ngx_chat_redis_prefix_check
};


static ngx_command_t  ngx_chat_commands[] = {

    { ngx_string("chat_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_chat_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_chat_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_redis_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis_prefix),
      &ngx_chat_redis_prefix_post },

    { ngx_string("chat_redis_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis_queue),
      &ngx_chat_redis_queue_bounds },

    { ngx_string("chat_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_chat_postgres,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_postgres_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_chat_postgres_queue,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_chat,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, user),
      NULL },

    { ngx_string("chat_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, jwt),
      NULL },

    { ngx_string("chat_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_chat_jwt_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_chat_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, rate),
      NULL },

    { ngx_string("chat_request_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_chat_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, request_rate),
      NULL },

    { ngx_string("chat_history"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, history),
      &ngx_chat_history_bounds },

    { ngx_string("chat_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, max_message_size),
      NULL },

    { ngx_string("chat_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_chat_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_max_rooms"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, max_rooms),
      &ngx_chat_max_rooms_bounds },

    { ngx_string("chat_send_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, send_buffer),
      NULL },

    { ngx_string("chat_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ping_interval),
      NULL },

    { ngx_string("chat_ping_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ping_timeout),
      NULL },

    { ngx_string("chat_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, deflate),
      NULL },

    { ngx_string("chat_deflate_min_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, deflate_min_size),
      NULL },

    { ngx_string("chat_deflate_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, deflate_level),
      &ngx_chat_deflate_level_bounds },

    { ngx_string("chat_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_chat_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_chat_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_chat_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_chat_postconfiguration,            /* postconfiguration */

    ngx_chat_create_main_conf,             /* create main configuration */
    ngx_chat_init_main_conf,               /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_chat_create_loc_conf,              /* create location configuration */
    ngx_chat_merge_loc_conf                /* merge location configuration */
};


ngx_module_t  ngx_chat_module = {
    NGX_MODULE_V1,
    &ngx_chat_module_ctx,                  /* module context */
    ngx_chat_commands,                     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
#if (NGX_CHAT_PIN)
    ngx_chat_init_module,                  /* init module */
#else
    NULL,                                  /* init module */
#endif
    ngx_chat_init_process,                 /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_chat_exit_process,                 /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_chat_create_main_conf(ngx_conf_t *cf)
{
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->redis = NULL;
     *     cmcf->redis_prefix = { 0, NULL };
     *     cmcf->store = NULL;
     */

    cmcf->redis_queue = NGX_CONF_UNSET;

    if (ngx_array_init(&cmcf->zones, cf->pool, 2,
                       sizeof(ngx_chat_shm_ctx_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&cmcf->refs, cf->pool, 4, sizeof(ngx_chat_zone_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    return cmcf;
}


static char *
ngx_chat_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_chat_main_conf_t *cmcf = conf;

    if (cmcf->redis_prefix.data == NULL) {
        ngx_str_set(&cmcf->redis_prefix, "chat");
    }

    ngx_conf_init_value(cmcf->redis_queue, 10000);

    return NGX_CONF_OK;
}


static void *
ngx_chat_create_loc_conf(ngx_conf_t *cf)
{
    ngx_chat_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->zone = NULL;
     *     conf->status_zone = NULL;
     *     conf->api_zone = NULL;
     *     conf->user = NULL;
     *     conf->jwt = NULL;
     *     conf->jwt_key = NULL;
     *     conf->chat_file = { 0, NULL };
     */

    conf->origins = NGX_CONF_UNSET_PTR;
    conf->rate.rate = NGX_CONF_UNSET_UINT;
    conf->rate.burst = NGX_CONF_UNSET_UINT;
    conf->request_rate.rate = NGX_CONF_UNSET_UINT;
    conf->request_rate.burst = NGX_CONF_UNSET_UINT;
    conf->history = NGX_CONF_UNSET_UINT;
    conf->max_message_size = NGX_CONF_UNSET_SIZE;
    conf->max_rooms = NGX_CONF_UNSET_UINT;
    conf->send_buffer = NGX_CONF_UNSET_SIZE;
    conf->ping_interval = NGX_CONF_UNSET_MSEC;
    conf->ping_timeout = NGX_CONF_UNSET_MSEC;
    conf->deflate = NGX_CONF_UNSET;
    conf->deflate_min_size = NGX_CONF_UNSET_SIZE;
    conf->deflate_level = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_chat_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_chat_loc_conf_t *prev = parent;
    ngx_chat_loc_conf_t *conf = child;

    ngx_chat_shm_ctx_t  *ctx;

    if (conf->user == NULL) {
        conf->user = prev->user;
    }

    if (conf->jwt == NULL) {
        conf->jwt = prev->jwt;
    }

    if (conf->jwt_key == NULL) {
        conf->jwt_key = prev->jwt_key;
    }

    ngx_conf_merge_ptr_value(conf->origins, prev->origins, NULL);
    ngx_conf_merge_uint_value(conf->rate.rate, prev->rate.rate, 0);
    ngx_conf_merge_uint_value(conf->rate.burst, prev->rate.burst, 0);

    /* chat_request_rate: 20r/s burst=50 unless set */
    ngx_conf_merge_uint_value(conf->request_rate.rate,
                              prev->request_rate.rate, 20 * 1000);
    ngx_conf_merge_uint_value(conf->request_rate.burst,
                              prev->request_rate.burst, 50 * 1000);
    ngx_conf_merge_uint_value(conf->history, prev->history, 50);
    ngx_conf_merge_size_value(conf->max_message_size,
                              prev->max_message_size, 4096);
    ngx_conf_merge_uint_value(conf->max_rooms, prev->max_rooms, 32);
    ngx_conf_merge_size_value(conf->send_buffer, prev->send_buffer,
                              256 * 1024);
    ngx_conf_merge_msec_value(conf->ping_interval, prev->ping_interval,
                              30000);
    ngx_conf_merge_msec_value(conf->ping_timeout, prev->ping_timeout,
                              10000);
    ngx_conf_merge_value(conf->deflate, prev->deflate, 0);
    ngx_conf_merge_size_value(conf->deflate_min_size, prev->deflate_min_size,
                              256);
    ngx_conf_merge_value(conf->deflate_level, prev->deflate_level, 1);

    if (conf->max_message_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chat_max_message_size\" must not be zero");
        return NGX_CONF_ERROR;
    }

    if (conf->zone && conf->zone->data) {
        ctx = conf->zone->data;
        ctx->max_message = ngx_max(ctx->max_message, conf->max_message_size);
    }

    if (conf->api_zone && conf->api_zone->data) {
        /* the API publishes messages of this size too */
        ctx = conf->api_zone->data;
        ctx->max_message = ngx_max(ctx->max_message, conf->max_message_size);
    }

    if (conf->zone && conf->user == NULL && conf->jwt == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"chat_user\" is required in a \"chat\" location "
                      "in %V:%ui", &conf->chat_file, conf->chat_line);
        return NGX_CONF_ERROR;
    }

    if (conf->zone && conf->jwt && conf->jwt_key == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"chat_jwt\" needs \"chat_jwt_key\" in the "
                      "\"chat\" location in %V:%ui", &conf->chat_file,
                      conf->chat_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_chat_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t             i;
    ngx_chat_shm_ctx_t    *ctx, **zones;
    ngx_chat_zone_ref_t   *ref;
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_chat_module);

    if (!ngx_chat_store_conf_enabled(cmcf->store)) {
        /* chat_postgres_queue alone */
        cmcf->store = NULL;
    }

    zones = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        zones[i]->store = (cmcf->store != NULL);
        zones[i]->relayed = (cmcf->redis != NULL);
    }

    ref = cmcf->refs.elts;

    for (i = 0; i < cmcf->refs.nelts; i++) {
        if (ref[i].zone->data == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown chat zone \"%V\" in %V:%ui",
                          &ref[i].zone->shm.name, &ref[i].file, ref[i].line);
            return NGX_ERROR;
        }

        ctx = ref[i].zone->data;

        if (ngx_chat_bus_size(ref[i].zone->shm.size, ctx->max_message)
            == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "chat zone \"%V\" is too small for "
                          "chat_max_message_size %uz, at least %uzk "
                          "in %V:%ui", &ref[i].zone->shm.name,
                          ctx->max_message,
                          8 * (ctx->max_message + 2048) / 1024 + 1,
                          &ref[i].file, ref[i].line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_chat_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_main_conf_t *cmcf = conf;

    ssize_t               size;
    ngx_str_t            *value;
    ngx_shm_zone_t       *shm_zone;
    ngx_chat_shm_ctx_t   *ctx, **p;

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid chat zone name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid chat zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (64 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chat zone \"%V\" is too small, at least %uzk",
                           &value[1], 64 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size, &ngx_chat_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate chat zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_chat_shm_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->shm_zone = shm_zone;
    ctx->name = shm_zone->shm.name;
    ctx->lineage = ngx_chat_shm_lineage(cf->cycle, &ctx->name);

    shm_zone->init = ngx_chat_shm_init_zone;
    shm_zone->data = ctx;

    p = ngx_array_push(&cmcf->zones);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *p = ctx;

    return NGX_CONF_OK;
}


/* chat_jwt_key FILE [ALG]: read now, so a reload rotates it */

static char *
ngx_chat_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t *lcf = conf;

    ngx_str_t  *value, alg;

    if (lcf->jwt_key) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_str_null(&alg);

    if (cf->args->nelts == 3) {
        alg = value[2];
    }

    lcf->jwt_key = ngx_chat_jwt_key_read(cf, &value[1], &alg);

    if (lcf->jwt_key == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_chat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_main_conf_t *cmcf = conf;

    char                   *rv;
    ngx_str_t              *value;
    ngx_chat_redis_conf_t  *rcf;

    if (cmcf->redis) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_redis_conf_t));
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_chat_redis_parse_url(cf, &value[1], rcf);

    if (rv != NGX_CONF_OK) {
        if (rv != NGX_CONF_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s \"%V\"",
                               rv, &value[1]);
        }

        return NGX_CONF_ERROR;
    }

    cmcf->redis = rcf;

    return NGX_CONF_OK;
}


/*
 * chat_redis_prefix: the first part of every channel name, so one segment
 * of "<prefix>:<db>:<zone>:..." (no ':', nothing that needs quoting)
 */

static char *
ngx_chat_redis_prefix_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *prefix = data;

    u_char  *p, *last;

    p = prefix->data;
    last = p + prefix->len;

    if (prefix->len == 0 || prefix->len > NGX_CHAT_MAX_REDIS_PREFIX) {
        goto invalid;
    }

    for ( /* void */ ; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9')
              || *p == '-' || *p == '_' || *p == '.'))
        {
            goto invalid;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid chat_redis_prefix \"%V\": 1 to %d letters, "
                       "digits, \"-\", \"_\" or \".\"", prefix,
                       NGX_CHAT_MAX_REDIS_PREFIX);

    return NGX_CONF_ERROR;
}


static char *
ngx_chat_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_main_conf_t *cmcf = conf;

    char       *rv;
    ngx_str_t  *value;

    value = cf->args->elts;

    rv = ngx_chat_store_conf_conninfo(cf, &cmcf->store, &value[1]);

    if (rv != NGX_CONF_OK && rv != NGX_CONF_ERROR
        && ngx_strcmp(rv, "is duplicate") != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rv);
        return NGX_CONF_ERROR;
    }

    return rv;
}


static char *
ngx_chat_postgres_queue(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_main_conf_t *cmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    return ngx_chat_store_conf_queue(cf, &cmcf->store, &value[1]);
}


static ngx_shm_zone_t *
ngx_chat_zone_ref(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_shm_zone_t        *zone;
    ngx_chat_zone_ref_t   *ref;
    ngx_chat_main_conf_t  *cmcf;

    zone = ngx_shared_memory_add(cf, name, 0, &ngx_chat_module);
    if (zone == NULL) {
        return NULL;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_chat_module);

    ref = ngx_array_push(&cmcf->refs);
    if (ref == NULL) {
        return NULL;
    }

    ref->zone = zone;
    ref->file = cf->conf_file->file.name;
    ref->line = cf->conf_file->line;

    return zone;
}


static char *
ngx_chat(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->zone = ngx_chat_zone_ref(cf, &value[1]);
    if (lcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    lcf->chat_file = cf->conf_file->file.name;
    lcf->chat_line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_chat_proto_handler;

    return NGX_CONF_OK;
}


static char *
ngx_chat_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->status_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->status_zone = ngx_chat_zone_ref(cf, &value[1]);
    if (lcf->status_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_chat_status_handler;

    return NGX_CONF_OK;
}


/* chat_api NAME: the HTTP API for backends on zone NAME */

static char *
ngx_chat_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->api_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->api_zone = ngx_chat_zone_ref(cf, &value[1]);
    if (lcf->api_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_chat_api_handler;

    return NGX_CONF_OK;
}


/*
 * chat_rate, chat_request_rate: off | Nr/s [burst=M] | N r/s [burst=M]
 * (also r/m)
 */

static char *
ngx_chat_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    size_t                 len;
    ngx_int_t              rate, scale, burst;
    ngx_str_t             *value, s;
    ngx_uint_t             i;
    ngx_chat_rate_conf_t  *rcf;

    rcf = (ngx_chat_rate_conf_t *) ((char *) conf + cmd->offset);

    if (rcf->rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        rcf->rate = 0;
        rcf->burst = 0;
        return NGX_CONF_OK;
    }

    rate = NGX_ERROR;
    scale = 1;
    burst = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            /* the zone keeps a bucket's excess in 31 bits, in 1/1000s */
            if (burst <= 0 || burst > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid burst value \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (rate != NGX_ERROR) {
            goto invalid;
        }

        s = value[i];
        len = s.len;

        if (i + 1 < cf->args->nelts
            && (ngx_strcmp(value[i + 1].data, "r/s") == 0
                || ngx_strcmp(value[i + 1].data, "r/m") == 0))
        {
            /* "N r/s": the unit as its own word */
            scale = (value[i + 1].data[2] == 'm') ? 60 : 1;
            i++;

        } else if (len >= 4 && ngx_strncmp(s.data + len - 3, "r/s", 3) == 0) {
            scale = 1;
            len -= 3;

        } else if (len >= 4 && ngx_strncmp(s.data + len - 3, "r/m", 3) == 0) {
            scale = 60;
            len -= 3;

        } else {
            goto invalid;
        }

        rate = ngx_atoi(s.data, len);
        if (rate <= 0) {
            goto invalid;
        }
    }

    if (rate == NGX_ERROR) {
        goto invalid;
    }

    rcf->rate = rate * 1000 / scale;
    rcf->burst = burst * 1000;

    if (rcf->rate == 0) {
        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid rate \"%V\", expected \"Nr/s [burst=M]\" "
                       "or \"off\"", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_chat_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t *lcf = conf;

    ngx_str_t   *value, *origin;
    ngx_uint_t   i;

    if (lcf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        lcf->origins = NULL;
        return NGX_CONF_OK;
    }

    lcf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                    sizeof(ngx_str_t));
    if (lcf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "empty origin");
            return NGX_CONF_ERROR;
        }

        origin = ngx_array_push(lcf->origins);
        if (origin == NULL) {
            return NGX_CONF_ERROR;
        }

        /* an origin is compared without a trailing slash */

        *origin = value[i];

        if (origin->data[origin->len - 1] == '/') {
            origin->len--;
        }
    }

    return NGX_CONF_OK;
}


#if (NGX_CHAT_PIN)

static ngx_int_t
ngx_chat_init_module(ngx_cycle_t *cycle)
{
    void     *handle;
    Dl_info   info;

    if (dladdr((void *) &ngx_chat_module, &info) == 0
        || info.dli_fname == NULL)
    {
        return NGX_OK;
    }

    /* a reference that is never dropped: the file stays mapped */

    handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);

    if (handle == NULL) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "chat: could not pin \"%s\" for the leak check: %s",
                      info.dli_fname, dlerror());
    }

    return NGX_OK;
}

#endif


/*
 * A worker starts its layers bottom up: the connection layer, the fan-out
 * (which attaches the worker to every zone), the relay, the store
 */

static ngx_int_t
ngx_chat_init_process(ngx_cycle_t *cycle)
{
    ngx_chat_main_conf_t  *cmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_chat_module);
    if (cmcf == NULL || cmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    ngx_chat_ws_init_worker(cycle);

    if (ngx_chat_fanout_init_process(cycle, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_chat_relay_init_process(cycle, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_chat_store_init_process(cycle, cmcf);
}


/* and stops them top down */

static void
ngx_chat_exit_process(ngx_cycle_t *cycle)
{
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_chat_module);
    if (cmcf == NULL || cmcf->zones.nelts == 0) {
        return;
    }

    ngx_chat_store_exit_process(cycle);
    ngx_chat_relay_exit_process(cycle);
    ngx_chat_fanout_exit_process(cycle);
    ngx_chat_wire_deflate_done();
}
