
/*
 * Copyright (C) ngx_chat_module authors
 */


#ifndef _NGX_FUZZ_RUNTIME_H_INCLUDED_
#define _NGX_FUZZ_RUNTIME_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * Stand-ins for the nginx core functions the module calls, for fuzzing
 * without nginx's sources (Debian ships only the headers).  They keep the
 * contracts the module relies on and check more than nginx does:
 *
 *   - a "zone" is a slab pool whose blocks are separate malloc()s, so that
 *     ASan sees any overflow, use after free or double free of zone memory;
 *     a byte budget, charged as the slab allocator rounds sizes, makes
 *     allocations fail when the zone is full;
 *   - ngx_slab_*_locked() abort unless the zone's mutex is held, and
 *     ngx_shmtx_lock() aborts if it is already held (a self-deadlock);
 *   - ngx_str_rbtree_insert_value() aborts on a duplicate name;
 *   - ngx_alloc() can be made to fail on purpose (ngx_fuzz_fail_alloc);
 *   - pools are lists of separate malloc()s, so that ASan checks each
 *     allocation; ngx_close_connection() frees the connection, its
 *     timers and posted events go first, as in nginx;
 *   - send() and writev() (the connection layer writes with them, not
 *     with c->send) go to the harness's write hook first, which plays the
 *     kernel for the descriptors it owns.
 */


typedef struct {
    ngx_slab_pool_t    pool;          /* first: what the module sees */
    size_t             size;          /* budget */
    size_t             used;          /* charged */
    ngx_uint_t         nblocks;
    void              *blocks;        /* registry of live blocks */
} ngx_fuzz_zone_t;


#define ngx_fuzz_assert(cond)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            ngx_fuzz_fail(__FILE__, __LINE__, #cond);                        \
        }                                                                    \
    } while (0)


void ngx_fuzz_fail(const char *file, int line, const char *what)
    __attribute__((noreturn));

void ngx_fuzz_runtime_init(ngx_log_t *log);

ngx_fuzz_zone_t *ngx_fuzz_zone_create(size_t size);
void ngx_fuzz_zone_destroy(ngx_fuzz_zone_t *z);
ngx_uint_t ngx_fuzz_zone_locked(ngx_fuzz_zone_t *z);

/* size of a live block of the zone, or -1; marks it as seen */
ssize_t ngx_fuzz_zone_mark(ngx_fuzz_zone_t *z, void *p);
/* live blocks not marked since the last call (then clears the marks) */
ngx_uint_t ngx_fuzz_zone_unmarked(ngx_fuzz_zone_t *z, void **first,
    size_t *first_size);

/* the n-th ngx_alloc() from now fails (1: the next one; 0: none) */
void ngx_fuzz_fail_alloc(ngx_uint_t n);
extern ngx_uint_t  ngx_fuzz_allocs_failed;

/* log lines go to stderr when PROTO_FUZZ_LOG is set */
extern ngx_uint_t  ngx_fuzz_trace;

/* zone allocations refused because the zone was full */
extern ngx_uint_t  ngx_fuzz_slab_failed;

/*
 * The harness's side of send() and writev(): what the call returns (-1
 * with errno set, e.g. NGX_EAGAIN), or NGX_DECLINED for a descriptor that
 * is not the harness's (the system call is made).  iov[0] may be a partly
 * written frame.
 */
typedef ssize_t (*ngx_fuzz_write_pt)(ngx_socket_t fd, const struct iovec *iov,
    int n);
extern ngx_fuzz_write_pt  ngx_fuzz_write_hook;

/* the last connection ngx_get_connection() made */
extern ngx_connection_t  *ngx_fuzz_last_connection;
/* how many ngx_close_connection() closed */
extern ngx_uint_t         ngx_fuzz_connections_closed;

#ifdef _NGX_HTTP_H_INCLUDED_
/* the core module's location configuration of the harness's requests */
extern ngx_http_core_loc_conf_t  ngx_fuzz_core_loc_conf;
#endif


#endif /* _NGX_FUZZ_RUNTIME_H_INCLUDED_ */
