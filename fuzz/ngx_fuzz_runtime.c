
/*
 * Copyright (C) ngx_chat_module authors
 *
 * The nginx core functions the chat module calls, written for the fuzzer
 * (see ngx_fuzz_runtime.h): memory and pools, arrays, the printf family,
 * logging, CRC32, a binary search tree behind the ngx_rbtree API, a zone
 * allocator behind the ngx_slab API, the zone mutex, the few event
 * functions of a worker, SHA-1 and base64 for the handshake, and the HTTP
 * functions an accepted upgrade calls.  The 426 response (not an upgrade)
 * aborts if reached: the harness always asks for a valid upgrade.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include <sys/syscall.h>
#include "ngx_fuzz_runtime.h"


ngx_uint_t                 ngx_fuzz_allocs_failed;
ngx_uint_t                 ngx_fuzz_trace;
ngx_connection_t          *ngx_fuzz_last_connection;
ngx_uint_t                 ngx_fuzz_connections_closed;
ngx_uint_t                 ngx_fuzz_slab_failed;
ngx_fuzz_write_pt          ngx_fuzz_write_hook;

static ngx_uint_t          ngx_fuzz_fail_countdown;

/* the globals of nginx.c, ngx_times.c, ngx_process_cycle.c, ngx_event*.c */

volatile ngx_cycle_t      *ngx_cycle;
ngx_pid_t                  ngx_pid;
volatile ngx_msec_t        ngx_current_msec;
volatile ngx_time_t       *ngx_cached_time;
ngx_queue_t                ngx_posted_events;
ngx_rbtree_t               ngx_event_timer_rbtree;
uint32_t                  *ngx_crc32_table_short;

/*
 * ngx_chat_ws.c finds its location configuration and request context by
 * the module's ctx_index, which is 0 here: the harness's requests have one
 * slot of each
 */
ngx_module_t               ngx_chat_module;

/*
 * and nginx's core module (ngx_chat_ws.c reads tcp_nodelay from its
 * location configuration) has ctx_index 1: the second slot, a zeroed
 * configuration (tcp_nodelay off: the harness's sockets are not TCP)
 */
ngx_module_t               ngx_http_core_module = { .ctx_index = 1 };
ngx_http_core_loc_conf_t   ngx_fuzz_core_loc_conf;

static ngx_time_t          ngx_fuzz_time;
static ngx_rbtree_node_t   ngx_fuzz_timer_sentinel;
static uint32_t            ngx_fuzz_crc32_nibbles[16];


void
ngx_fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    abort();
}


static void
ngx_fuzz_unreachable(const char *func)
{
    fprintf(stderr, "%s() called: the harness does not emulate it\n", func);
    abort();
}


void
ngx_fuzz_runtime_init(ngx_log_t *log)
{
    uint32_t    c;
    ngx_uint_t  i, k;

    /* the reflected CRC-32 polynomial, four bits at a time */

    for (i = 0; i < 16; i++) {
        c = (uint32_t) i;

        for (k = 0; k < 4; k++) {
            c = (c & 1) ? (c >> 1) ^ 0xedb88320 : c >> 1;
        }

        ngx_fuzz_crc32_nibbles[i] = c;
    }

    ngx_crc32_table_short = ngx_fuzz_crc32_nibbles;

    ngx_pid = getpid();
    ngx_cached_time = &ngx_fuzz_time;

    ngx_queue_init(&ngx_posted_events);
    ngx_rbtree_init(&ngx_event_timer_rbtree, &ngx_fuzz_timer_sentinel,
                    ngx_rbtree_insert_timer_value);

    ngx_fuzz_trace = (getenv("PROTO_FUZZ_LOG") != NULL);

    (void) log;
}


/* memory */

void
ngx_fuzz_fail_alloc(ngx_uint_t n)
{
    ngx_fuzz_fail_countdown = n;
}


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    void  *p;

    if (ngx_fuzz_fail_countdown && --ngx_fuzz_fail_countdown == 0) {
        ngx_fuzz_allocs_failed++;
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "malloc(%uz) failed (injected)", size);
        return NULL;
    }

    p = malloc(size ? size : 1);
    if (p == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "malloc(%uz) failed", size);
    }

    return p;
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    void  *p;

    p = ngx_alloc(size, log);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


/*
 * Pools: every allocation is its own malloc(), kept on pool->large, so
 * that ASan checks each one separately.
 */

ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t  *pool;

    pool = calloc(1, sizeof(ngx_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->log = log;

    return pool;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c, *cnext;

    /* cleanups first, newest first, as nginx runs them */

    for (c = pool->cleanup; c; c = cnext) {
        cnext = c->next;

        if (c->handler) {
            c->handler(c->data);
        }

        free(c);
    }

    for (l = pool->large; l; l = next) {
        next = l->next;
        free(l->alloc);
        free(l);
    }

    free(pool);
}


/* size bytes of data follow the cleanup, freed with it */

ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = calloc(1, sizeof(ngx_pool_cleanup_t) + size);
    if (c == NULL) {
        return NULL;
    }

    c->data = size ? (void *) (c + 1) : NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    ngx_pool_large_t  *l;

    l = malloc(sizeof(ngx_pool_large_t));
    if (l == NULL) {
        return NULL;
    }

    l->alloc = malloc(size ? size : 1);
    if (l->alloc == NULL) {
        free(l);
        return NULL;
    }

    l->next = pool->large;
    pool->large = l;

    return l->alloc;
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_palloc(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


ngx_int_t
ngx_pfree(ngx_pool_t *pool, void *p)
{
    ngx_pool_large_t  **lp, *l;

    for (lp = &pool->large; *lp; lp = &(*lp)->next) {
        l = *lp;

        if (l->alloc == p) {
            *lp = l->next;
            free(l->alloc);
            free(l);
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


void *
ngx_array_push(ngx_array_t *a)
{
    void  *elts;

    if (a->nelts == a->nalloc) {
        elts = ngx_palloc(a->pool, 2 * a->size * (a->nalloc ? a->nalloc : 1));
        if (elts == NULL) {
            return NULL;
        }

        if (a->nelts) {
            ngx_memcpy(elts, a->elts, a->nelts * a->size);
        }

        a->elts = elts;
        a->nalloc = a->nalloc ? 2 * a->nalloc : 2;
    }

    return (u_char *) a->elts + a->size * a->nelts++;
}


ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    if (a == NULL) {
        return NULL;
    }

    if (ngx_array_init(a, p, n, size) != NGX_OK) {
        return NULL;
    }

    return a;
}


/* strings */

u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = ngx_pnalloc(pool, src->len);
    if (dst == NULL) {
        return NULL;
    }

    if (src->len) {
        ngx_memcpy(dst, src->data, src->len);
    }

    return dst;
}


/* nginx's semantics: NGX_ERROR on an empty string, a bad digit, overflow */

ngx_int_t
ngx_hextoi(u_char *line, size_t n)
{
    u_char     c, ch;
    ngx_int_t  value, cutoff;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_INT_T_VALUE / 16;

    for (value = 0; n--; line++) {
        if (value > cutoff) {
            return NGX_ERROR;
        }

        ch = *line;

        if (ch >= '0' && ch <= '9') {
            value = value * 16 + (ch - '0');
            continue;
        }

        c = (u_char) (ch | 0x20);

        if (c >= 'a' && c <= 'f') {
            value = value * 16 + (c - 'a' + 10);
            continue;
        }

        return NGX_ERROR;
    }

    return value;
}


off_t
ngx_atoof(u_char *line, size_t n)
{
    off_t  value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_OFF_T_VALUE / 10;
    cutlim = NGX_MAX_OFF_T_VALUE % 10;

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  a, b;

    while (n--) {
        a = ngx_tolower(*s1);
        b = ngx_tolower(*s2);

        if (a != b) {
            return (ngx_int_t) a - (ngx_int_t) b;
        }

        if (a == 0) {
            return 0;
        }

        s1++;
        s2++;
    }

    return 0;
}


static u_char *
ngx_fuzz_number(u_char *buf, u_char *last, uint64_t n, u_char pad,
    ngx_uint_t hex, ngx_uint_t width)
{
    u_char       digits[32], *p;
    const char  *set;

    set = (hex == 2) ? "0123456789ABCDEF" : "0123456789abcdef";
    p = digits + sizeof(digits);

    do {
        *--p = set[hex ? n & 0xf : n % 10];
        n = hex ? n >> 4 : n / 10;
    } while (n);

    while (width > (ngx_uint_t) (digits + sizeof(digits) - p)
           && buf < last)
    {
        *buf++ = pad;
        width--;
    }

    while (p < digits + sizeof(digits) && buf < last) {
        *buf++ = *p++;
    }

    return buf;
}


/*
 * The nginx format language as the module and nginx's own headers use it:
 * %V %s %c %p %Z %N %%, and the integers %d %i %z %L %M %P with the 0,
 * width, u and x/X modifiers.  Anything else aborts: a format this file
 * has to learn first.
 */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char      *s, pad;
    size_t       n;
    int64_t      i64;
    uint64_t     ui64;
    ngx_str_t   *v;
    ngx_msec_t   ms;
    ngx_uint_t   width, sign, hex;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = (u_char) *fmt++;
            continue;
        }

        fmt++;

        pad = ' ';
        width = 0;
        sign = 1;
        hex = 0;
        i64 = 0;
        ui64 = 0;

        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        if (*fmt == '*' && fmt[1] == 's') {
            /* "%*s": a length (size_t), then the bytes */
            n = va_arg(args, size_t);
            s = va_arg(args, u_char *);
            fmt += 2;
            goto copy_n;
        }

        for ( /* void */ ; *fmt == 'u' || *fmt == 'x' || *fmt == 'X'; fmt++) {
            sign = 0;

            if (*fmt != 'u') {
                hex = (*fmt == 'x') ? 1 : 2;
            }
        }

        switch (*fmt++) {

        case 'V':
            v = va_arg(args, ngx_str_t *);
            s = v->data;
            n = v->len;
            goto copy;

        case 's':
            s = va_arg(args, u_char *);
            n = ngx_strlen(s);

        copy:
        copy_n:

            /* an empty string may have no data (ngx_null_string) */
            n = ngx_min(n, (size_t) (last - buf));

            if (n) {
                buf = ngx_cpymem(buf, s, n);
            }

            continue;

        case 'c':
            *buf++ = (u_char) va_arg(args, int);
            continue;

        case 'Z':
            *buf++ = '\0';
            continue;

        case 'N':
            *buf++ = LF;
            continue;

        case '%':
            *buf++ = '%';
            continue;

        case 'p':
            ui64 = (uintptr_t) va_arg(args, void *);
            sign = 0;
            hex = 2;
            pad = '0';
            width = 2 * sizeof(void *);
            break;

        case 'd':
            if (sign) {
                i64 = va_arg(args, int);
            } else {
                ui64 = va_arg(args, u_int);
            }
            break;

        case 'i':
            if (sign) {
                i64 = va_arg(args, ngx_int_t);
            } else {
                ui64 = va_arg(args, ngx_uint_t);
            }
            break;

        case 'z':
            if (sign) {
                i64 = va_arg(args, ssize_t);
            } else {
                ui64 = va_arg(args, size_t);
            }
            break;

        case 'L':
            if (sign) {
                i64 = va_arg(args, int64_t);
            } else {
                ui64 = va_arg(args, uint64_t);
            }
            break;

        case 'M':
            ms = va_arg(args, ngx_msec_t);
            sign = ((ngx_msec_int_t) ms == -1);
            i64 = -1;
            ui64 = ms;
            break;

        case 'P':
            i64 = va_arg(args, ngx_pid_t);
            sign = 1;
            break;

        default:
            fprintf(stderr, "format \"%%%s\": ", fmt - 1);
            ngx_fuzz_unreachable("ngx_vslprintf");
        }

        if (sign) {
            if (i64 < 0 && buf < last) {
                *buf++ = '-';
            }

            ui64 = (i64 < 0) ? 0 - (uint64_t) i64 : (uint64_t) i64;
        }

        buf = ngx_fuzz_number(buf, last, ui64, pad, hex, width);
    }

    return buf;
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


/* every message is formatted (so that a bad argument shows), then dropped */

void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   line[NGX_MAX_ERROR_STR], *p, *last;
    va_list  args;

    last = line + sizeof(line) - 1;

    p = ngx_slprintf(line, last, "[%ui] ", level);

    va_start(args, fmt);
    p = ngx_vslprintf(p, last, fmt, args);
    va_end(args);

    if (err) {
        p = ngx_slprintf(p, last, " (%d)", err);
    }

    *p++ = LF;

    if (ngx_fuzz_trace) {
        fwrite(line, 1, p - line, stderr);
    }
}


/*
 * ngx_rbtree API over an unbalanced binary search tree: the module uses
 * the tree through insert, delete, min (inline) and next, and walks
 * root/left/right/parent against the sentinel; all of those hold here.
 * A deleted node is relinked, never copied, so that pointers to the
 * others stay valid, as in nginx.
 */

static void
ngx_fuzz_tree_replace(ngx_rbtree_t *tree, ngx_rbtree_node_t *u,
    ngx_rbtree_node_t *v)
{
    if (u->parent == NULL) {
        tree->root = v;

    } else if (u == u->parent->left) {
        u->parent->left = v;

    } else {
        u->parent->right = v;
    }

    if (v != tree->sentinel) {
        v->parent = u->parent;
    }
}


void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    if (tree->root == tree->sentinel) {
        node->parent = NULL;
        node->left = tree->sentinel;
        node->right = tree->sentinel;
        ngx_rbt_black(node);
        tree->root = node;
        return;
    }

    tree->insert(tree->root, node, tree->sentinel);
}


void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    ngx_rbtree_node_t  *s, *sentinel;

    sentinel = tree->sentinel;

    ngx_fuzz_assert(node != sentinel && node->left && node->right);

    if (node->left == sentinel) {
        ngx_fuzz_tree_replace(tree, node, node->right);

    } else if (node->right == sentinel) {
        ngx_fuzz_tree_replace(tree, node, node->left);

    } else {
        s = ngx_rbtree_min(node->right, sentinel);

        if (s->parent != node) {
            ngx_fuzz_tree_replace(tree, s, s->right);
            s->right = node->right;
            s->right->parent = s;
        }

        ngx_fuzz_tree_replace(tree, node, s);
        s->left = node->left;
        s->left->parent = s;
    }

    if (tree->root == NULL) {
        tree->root = sentinel;
    }

    /* as nginx does: a deleted node is not in any tree */
    node->left = NULL;
    node->right = NULL;
    node->parent = NULL;
    node->key = 0;
}


ngx_rbtree_node_t *
ngx_rbtree_next(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    ngx_rbtree_node_t  *parent;

    if (node->right != tree->sentinel) {
        return ngx_rbtree_min(node->right, tree->sentinel);
    }

    for (parent = node->parent;
         parent && node == parent->right;
         parent = parent->parent)
    {
        node = parent;
    }

    return parent;
}


void
ngx_rbtree_insert_value(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {
        p = (node->key < temp->key) ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


void
ngx_rbtree_insert_timer_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {
        p = ((ngx_rbtree_key_int_t) (node->key - temp->key) < 0)
            ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* order: key, then length, then bytes; lookup below uses the same */

static ngx_int_t
ngx_fuzz_str_cmp(ngx_rbtree_node_t *a, ngx_str_t *as, ngx_rbtree_node_t *b,
    ngx_str_t *bs)
{
    if (a->key != b->key) {
        return (a->key < b->key) ? -1 : 1;
    }

    if (as->len != bs->len) {
        return (as->len < bs->len) ? -1 : 1;
    }

    return ngx_memcmp(as->data, bs->data, as->len);
}


void
ngx_str_rbtree_insert_value(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_int_t            rc;
    ngx_str_node_t      *n, *t;
    ngx_rbtree_node_t  **p;

    n = (ngx_str_node_t *) node;

    for ( ;; ) {
        t = (ngx_str_node_t *) temp;

        rc = ngx_fuzz_str_cmp(node, &n->str, temp, &t->str);

        /* every tree of names in the module is a set */
        ngx_fuzz_assert(rc != 0);

        p = (rc < 0) ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_str_node_t *
ngx_str_rbtree_lookup(ngx_rbtree_t *rbtree, ngx_str_t *val, uint32_t hash)
{
    ngx_int_t           rc;
    ngx_str_node_t     *n;
    ngx_rbtree_node_t   key, *node;

    key.key = hash;
    node = rbtree->root;

    while (node != rbtree->sentinel) {
        n = (ngx_str_node_t *) node;

        rc = ngx_fuzz_str_cmp(&key, val, node, &n->str);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * Zones.  The registry of live blocks is an open-addressing hash table
 * keyed by address, with linear probing and deletion by backward shift.
 */

typedef struct {
    void        *p;
    size_t       size;
    ngx_uint_t   mark;
} ngx_fuzz_block_t;

typedef struct {
    ngx_fuzz_block_t  *slots;
    ngx_uint_t         cap;           /* a power of two */
    ngx_uint_t         n;
} ngx_fuzz_blocks_t;


static ngx_uint_t
ngx_fuzz_hash(void *p, ngx_uint_t cap)
{
    uint64_t  h;

    h = (uint64_t) (uintptr_t) p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;

    return (ngx_uint_t) h & (cap - 1);
}


static ngx_fuzz_block_t *
ngx_fuzz_blocks_find(ngx_fuzz_blocks_t *t, void *p)
{
    ngx_uint_t  i;

    for (i = ngx_fuzz_hash(p, t->cap); t->slots[i].p; i = (i + 1) & (t->cap - 1))
    {
        if (t->slots[i].p == p) {
            return &t->slots[i];
        }
    }

    return NULL;
}


static void ngx_fuzz_blocks_add(ngx_fuzz_blocks_t *t, void *p, size_t size);


static void
ngx_fuzz_blocks_grow(ngx_fuzz_blocks_t *t)
{
    ngx_uint_t         i, cap;
    ngx_fuzz_block_t  *old;

    old = t->slots;
    cap = t->cap;

    t->cap = cap ? cap * 2 : 1024;
    t->slots = calloc(t->cap, sizeof(ngx_fuzz_block_t));
    ngx_fuzz_assert(t->slots != NULL);
    t->n = 0;

    for (i = 0; i < cap; i++) {
        if (old[i].p) {
            ngx_fuzz_blocks_add(t, old[i].p, old[i].size);
        }
    }

    free(old);
}


static void
ngx_fuzz_blocks_add(ngx_fuzz_blocks_t *t, void *p, size_t size)
{
    ngx_uint_t  i;

    if (2 * (t->n + 1) > t->cap) {
        ngx_fuzz_blocks_grow(t);
    }

    for (i = ngx_fuzz_hash(p, t->cap); t->slots[i].p; i = (i + 1) & (t->cap - 1))
    {
        ngx_fuzz_assert(t->slots[i].p != p);
    }

    t->slots[i].p = p;
    t->slots[i].size = size;
    t->slots[i].mark = 0;
    t->n++;
}


static void
ngx_fuzz_blocks_remove(ngx_fuzz_blocks_t *t, ngx_fuzz_block_t *b)
{
    ngx_uint_t  i, j, h, mask;

    mask = t->cap - 1;
    i = b - t->slots;
    t->slots[i].p = NULL;
    t->n--;

    /* move back the entries that probed past the hole */

    for (j = (i + 1) & mask; t->slots[j].p; j = (j + 1) & mask) {
        h = ngx_fuzz_hash(t->slots[j].p, t->cap);

        if (((j - h) & mask) >= ((j - i) & mask)) {
            t->slots[i] = t->slots[j];
            t->slots[j].p = NULL;
            i = j;
        }
    }
}


/* what the slab allocator would take for size bytes (4k pages) */

static size_t
ngx_fuzz_charge(size_t size)
{
    size_t  n;

    if (size > 2048) {
        return ngx_align(size, 4096);
    }

    for (n = 8; n < size; n *= 2) { /* void */ }

    return n;
}


ngx_fuzz_zone_t *
ngx_fuzz_zone_create(size_t size)
{
    ngx_fuzz_zone_t    *z;
    ngx_fuzz_blocks_t  *t;

    z = calloc(1, sizeof(ngx_fuzz_zone_t));
    t = calloc(1, sizeof(ngx_fuzz_blocks_t));
    ngx_fuzz_assert(z != NULL && t != NULL);

    z->size = size;
    z->blocks = t;
    ngx_fuzz_blocks_grow(t);

#if (NGX_HAVE_ATOMIC_OPS)
    z->pool.mutex.lock = &z->pool.lock.lock;
#else
#error the zone mutex stand-in needs NGX_HAVE_ATOMIC_OPS
#endif

    z->pool.addr = z;
    z->pool.log_nomem = 1;

    return z;
}


void
ngx_fuzz_zone_destroy(ngx_fuzz_zone_t *z)
{
    ngx_uint_t          i;
    ngx_fuzz_blocks_t  *t;

    t = z->blocks;

    for (i = 0; i < t->cap; i++) {
        if (t->slots[i].p) {
            free(t->slots[i].p);
        }
    }

    free(t->slots);
    free(t);
    free(z);
}


ngx_uint_t
ngx_fuzz_zone_locked(ngx_fuzz_zone_t *z)
{
    return *z->pool.mutex.lock != 0;
}


ssize_t
ngx_fuzz_zone_mark(ngx_fuzz_zone_t *z, void *p)
{
    ngx_fuzz_block_t  *b;

    b = ngx_fuzz_blocks_find(z->blocks, p);
    if (b == NULL) {
        return -1;
    }

    b->mark = 1;

    return (ssize_t) b->size;
}


ngx_uint_t
ngx_fuzz_zone_unmarked(ngx_fuzz_zone_t *z, void **first, size_t *first_size)
{
    ngx_uint_t          i, n;
    ngx_fuzz_blocks_t  *t;

    t = z->blocks;
    n = 0;

    for (i = 0; i < t->cap; i++) {
        if (t->slots[i].p == NULL) {
            continue;
        }

        if (!t->slots[i].mark && n++ == 0) {
            *first = t->slots[i].p;
            *first_size = t->slots[i].size;
        }

        t->slots[i].mark = 0;
    }

    return n;
}


void
ngx_slab_sizes_init(void)
{
}


void
ngx_slab_init(ngx_slab_pool_t *pool)
{
}


void *
ngx_slab_alloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    void             *p;
    size_t            charge;
    ngx_fuzz_zone_t  *z;

    z = (ngx_fuzz_zone_t *) pool;

    /* the pool's mutex must be held */
    ngx_fuzz_assert(ngx_fuzz_zone_locked(z));

    charge = ngx_fuzz_charge(size);

    if (z->used + charge > z->size) {
        ngx_fuzz_slab_failed++;

        if (pool->log_nomem) {
            ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                          "ngx_slab_alloc() failed: no memory%s",
                          pool->log_ctx ? pool->log_ctx : (u_char *) "");
        }

        return NULL;
    }

    p = malloc(size ? size : 1);
    ngx_fuzz_assert(p != NULL);

    z->used += charge;
    ngx_fuzz_blocks_add(z->blocks, p, size);

    return p;
}


void *
ngx_slab_calloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_slab_alloc_locked(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


void *
ngx_slab_alloc(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    ngx_shmtx_lock(&pool->mutex);
    p = ngx_slab_alloc_locked(pool, size);
    ngx_shmtx_unlock(&pool->mutex);

    return p;
}


void *
ngx_slab_calloc(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    ngx_shmtx_lock(&pool->mutex);
    p = ngx_slab_calloc_locked(pool, size);
    ngx_shmtx_unlock(&pool->mutex);

    return p;
}


void
ngx_slab_free_locked(ngx_slab_pool_t *pool, void *p)
{
    ngx_fuzz_zone_t   *z;
    ngx_fuzz_block_t  *b;

    z = (ngx_fuzz_zone_t *) pool;

    ngx_fuzz_assert(ngx_fuzz_zone_locked(z));

    b = ngx_fuzz_blocks_find(z->blocks, p);

    /* a pointer that is not a live block of this zone: a double free */
    ngx_fuzz_assert(b != NULL);

    z->used -= ngx_fuzz_charge(b->size);
    ngx_fuzz_blocks_remove(z->blocks, b);

    free(p);
}


void
ngx_slab_free(ngx_slab_pool_t *pool, void *p)
{
    ngx_shmtx_lock(&pool->mutex);
    ngx_slab_free_locked(pool, p);
    ngx_shmtx_unlock(&pool->mutex);
}


/* one process: a held lock can only be a self-deadlock */

void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    ngx_fuzz_assert(*mtx->lock == 0);
    *mtx->lock = (ngx_atomic_uint_t) ngx_pid;
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    ngx_fuzz_assert(*mtx->lock == (ngx_atomic_uint_t) ngx_pid);
    *mtx->lock = 0;
}


/* events: a worker with one notification socket and no event loop */

ngx_connection_t *
ngx_get_connection(ngx_socket_t s, ngx_log_t *log)
{
    ngx_event_t       *rev, *wev;
    ngx_connection_t  *c;

    c = calloc(1, sizeof(ngx_connection_t));
    rev = calloc(1, sizeof(ngx_event_t));
    wev = calloc(1, sizeof(ngx_event_t));
    ngx_fuzz_assert(c != NULL && rev != NULL && wev != NULL);

    c->read = rev;
    c->write = wev;
    c->fd = s;
    c->log = log;

    rev->data = c;
    rev->log = log;
    rev->index = NGX_INVALID_INDEX;

    wev->data = c;
    wev->log = log;
    wev->write = 1;
    wev->index = NGX_INVALID_INDEX;

    ngx_fuzz_last_connection = c;

    return c;
}


/* as nginx does: timers and posted events go with the connection */

void
ngx_close_connection(ngx_connection_t *c)
{
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->fd != (ngx_socket_t) -1) {
        close(c->fd);
    }

    ngx_fuzz_connections_closed++;

    free(c->read);
    free(c->write);
    free(c);
}


ngx_int_t
ngx_handle_read_event(ngx_event_t *rev, ngx_uint_t flags)
{
    rev->active = 1;
    return NGX_OK;
}


ngx_int_t
ngx_handle_write_event(ngx_event_t *wev, size_t lowat)
{
    return NGX_OK;
}


/*
 * ngx_add_event() / ngx_del_event() (the fan-out stops watching its
 * notification socket while another process floods it): the event is
 * marked, nothing is watched
 */

static ngx_int_t
ngx_fuzz_add_event(ngx_event_t *ev, ngx_int_t event, ngx_uint_t flags)
{
    ev->active = 1;
    return NGX_OK;
}


static ngx_int_t
ngx_fuzz_del_event(ngx_event_t *ev, ngx_int_t event, ngx_uint_t flags)
{
    ev->active = 0;
    return NGX_OK;
}


ngx_event_actions_t  ngx_event_actions = {
    ngx_fuzz_add_event, ngx_fuzz_del_event, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL
};


/*
 * The connection layer's writes: the harness's hook first; the system
 * call otherwise (not the libc wrapper: with ASan, that is these very
 * symbols' weak interceptors, which these definitions replace)
 */

ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
    ssize_t       n;
    struct iovec  iov;

    if (ngx_fuzz_write_hook) {
        iov.iov_base = (void *) buf;
        iov.iov_len = len;

        n = ngx_fuzz_write_hook(fd, &iov, 1);

        if (n != NGX_DECLINED) {
            return n;
        }
    }

    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}


ssize_t
writev(int fd, const struct iovec *iov, int n)
{
    ssize_t  rc;

    if (ngx_fuzz_write_hook) {
        rc = ngx_fuzz_write_hook(fd, iov, n);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return syscall(SYS_writev, fd, iov, n);
}


#if (NGX_HAVE_FIONBIO)

int
ngx_nonblocking(ngx_socket_t s)
{
    int  nb;

    nb = 1;

    return ioctl(s, FIONBIO, &nb);
}

#endif


/* the handshake: SHA-1 (FIPS 180-4) and base64, as nginx's */

#define ngx_fuzz_rol(x, n)  (((x) << (n)) | ((x) >> (32 - (n))))

static void
ngx_fuzz_sha1_block(ngx_sha1_t *ctx, const u_char *p)
{
    uint32_t    w[80], a, b, c, d, e, f, k, t;
    ngx_uint_t  i;

    for (i = 0; i < 16; i++) {
        w[i] = ((uint32_t) p[4 * i] << 24) | ((uint32_t) p[4 * i + 1] << 16)
               | ((uint32_t) p[4 * i + 2] << 8) | p[4 * i + 3];
    }

    for (i = 16; i < 80; i++) {
        w[i] = ngx_fuzz_rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }

    a = ctx->a; b = ctx->b; c = ctx->c; d = ctx->d; e = ctx->e;

    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;

        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;

        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;

        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }

        t = ngx_fuzz_rol(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ngx_fuzz_rol(b, 30); b = a; a = t;
    }

    ctx->a += a; ctx->b += b; ctx->c += c; ctx->d += d; ctx->e += e;
}


void
ngx_sha1_init(ngx_sha1_t *ctx)
{
    ctx->a = 0x67452301;
    ctx->b = 0xefcdab89;
    ctx->c = 0x98badcfe;
    ctx->d = 0x10325476;
    ctx->e = 0xc3d2e1f0;
    ctx->bytes = 0;
}


void
ngx_sha1_update(ngx_sha1_t *ctx, const void *data, size_t size)
{
    const u_char  *p;

    for (p = data; size--; p++) {
        ctx->buffer[ctx->bytes++ % 64] = *p;

        if (ctx->bytes % 64 == 0) {
            ngx_fuzz_sha1_block(ctx, ctx->buffer);
        }
    }
}


void
ngx_sha1_final(u_char result[20], ngx_sha1_t *ctx)
{
    u_char      len[8];
    uint64_t    bits;
    uint32_t    h[5];
    ngx_uint_t  i;

    bits = ctx->bytes * 8;

    for (i = 0; i < 8; i++) {
        len[i] = (u_char) (bits >> (56 - 8 * i));
    }

    ngx_sha1_update(ctx, "\x80", 1);

    while (ctx->bytes % 64 != 56) {
        ngx_sha1_update(ctx, "", 1);
    }

    ngx_sha1_update(ctx, len, 8);

    h[0] = ctx->a; h[1] = ctx->b; h[2] = ctx->c; h[3] = ctx->d; h[4] = ctx->e;

    for (i = 0; i < 20; i++) {
        result[i] = (u_char) (h[i / 4] >> (24 - 8 * (i % 4)));
    }
}


static const char  ngx_fuzz_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


void
ngx_encode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    u_char      *d;
    uint32_t     v;
    ngx_uint_t   i, k, n;

    d = dst->data;

    for (i = 0; i < src->len; i += 3) {
        n = ngx_min(src->len - i, 3);
        v = 0;

        for (k = 0; k < 3; k++) {
            v = (v << 8) | (k < n ? src->data[i + k] : 0);
        }

        for (k = 0; k < 4; k++) {
            *d++ = (k <= n) ? ngx_fuzz_b64[(v >> (18 - 6 * k)) & 0x3f] : '=';
        }
    }

    dst->len = d - dst->data;
}


/* as nginx's: it stops at the first '=', and fails outside the alphabet */

static ngx_int_t
ngx_fuzz_decode_base64(ngx_str_t *dst, ngx_str_t *src, const char *alphabet)
{
    u_char      *d;
    size_t       len;
    uint32_t     v;
    const char  *c;
    ngx_uint_t   i, bits;

    for (len = 0; len < src->len && src->data[len] != '='; len++) {
        /* void */
    }

    if (len % 4 == 1) {
        return NGX_ERROR;
    }

    d = dst->data;
    v = 0;
    bits = 0;

    for (i = 0; i < len; i++) {
        c = src->data[i] ? strchr(alphabet, src->data[i]) : NULL;

        if (c == NULL) {
            return NGX_ERROR;
        }

        v = (v << 6) | (uint32_t) (c - alphabet);
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            *d++ = (u_char) (v >> bits);
        }
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


ngx_int_t
ngx_decode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    return ngx_fuzz_decode_base64(dst, src, ngx_fuzz_b64);
}


/* tokens (ngx_chat_jwt.c): the URL-safe alphabet, as nginx's */

ngx_int_t
ngx_decode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    return ngx_fuzz_decode_base64(dst, src,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
}


/*
 * HTTP: a request whose user is a constant (no variables), without a body,
 * freed as nginx frees it (the request lives in its own pool, the
 * connection's memory in the connection's pool)
 */

ngx_int_t
ngx_http_complex_value(ngx_http_request_t *r, ngx_http_complex_value_t *val,
    ngx_str_t *value)
{
    ngx_fuzz_assert(val->lengths == NULL);

    *value = val->value;

    return NGX_OK;
}


ngx_int_t
ngx_http_discard_request_body(ngx_http_request_t *r)
{
    return NGX_OK;
}


void
ngx_http_free_request(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_pool_t  *pool;

    ngx_fuzz_assert(r->pool != NULL);

    r->connection->destroyed = 1;

    pool = r->pool;
    r->pool = NULL;
    ngx_destroy_pool(pool);
}


/*
 * tcp_nodelay is off in the harness's core configuration: never called
 * (weak: the Redis harness has its own)
 */

__attribute__((weak)) ngx_int_t
ngx_tcp_nodelay(ngx_connection_t *c)
{
    return NGX_OK;
}


void
ngx_http_close_connection(ngx_connection_t *c)
{
    ngx_pool_t  *pool;

    c->destroyed = 1;

    pool = c->pool;
    ngx_close_connection(c);
    ngx_destroy_pool(pool);
}


/* the 426 response: not reached */

void *
ngx_list_push(ngx_list_t *list)
{
    ngx_fuzz_unreachable(__func__);
    return NULL;
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    ngx_fuzz_unreachable(__func__);
    return NGX_ERROR;
}


ngx_int_t
ngx_http_output_filter(ngx_http_request_t *r, ngx_chain_t *chain)
{
    ngx_fuzz_unreachable(__func__);
    return NGX_ERROR;
}


/*
 * Message storage (chat_postgres): ngx_chat_store.c is not linked (it needs
 * ngx_chat_pg.c, libpq and a server), so storage is off, as without
 * chat_postgres; ngx_chat_proto.c calls only ngx_chat_store_enabled()
 * then, and the rest must not run.  (Weak: a build that links the real
 * file gets that.)
 */

#define ngx_fuzz_weak_stub(name)                                             \
    void name(void) __attribute__((weak));                                   \
    void name(void) { ngx_fuzz_unreachable(#name); }

ngx_uint_t ngx_chat_store_enabled(void) __attribute__((weak));

ngx_uint_t
ngx_chat_store_enabled(void)
{
    return 0;
}

ngx_fuzz_weak_stub(ngx_chat_store_full)
ngx_fuzz_weak_stub(ngx_chat_store_add)
ngx_fuzz_weak_stub(ngx_chat_store_forget)
ngx_fuzz_weak_stub(ngx_chat_store_history)
ngx_fuzz_weak_stub(ngx_chat_store_reads_full)
ngx_fuzz_weak_stub(ngx_chat_store_unstored)
