
/*
 * Copyright (C) ngx_chat_module authors
 */


/*
 * The cost of one token check (ngx_chat_jwt_verify) per algorithm family,
 * what a chat_jwt handshake adds: make -C fuzz jwt-bench, then
 *
 *   build/fuzz/jwt_bench HS256 SECRETFILE TOKEN [N]
 *   build/fuzz/jwt_bench RS256|ES256 PUBKEY.pem TOKEN [N]
 *
 * (tokens from scripts/mint-token.sh); prints microseconds per check.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/pem.h>
#include "ngx_chat_jwt.h"
#include "ngx_fuzz_runtime.h"


int
main(int argc, char **argv)
{
    long                 n, i;
    FILE                *f;
    char                *why;
    size_t               len;
    u_char               buf[4096];
    double               us;
    ngx_str_t            alg;
    ngx_log_t            log;
    ngx_chat_jwt_t      *jwt;
    struct timeval       t0, t1;
    ngx_chat_jwt_key_t   key;

    if (argc < 4) {
        fprintf(stderr, "usage: %s ALG KEYFILE TOKEN [N]\n", argv[0]);
        return 2;
    }

    ngx_memzero(&log, sizeof(ngx_log_t));
    ngx_fuzz_runtime_init(&log);

    alg.data = (u_char *) argv[1];
    alg.len = strlen(argv[1]);
    n = argc > 4 ? atol(argv[4]) : 20000;

    key.alg = ngx_chat_jwt_alg(&alg);
    key.pkey = NULL;

    if (key.alg == NULL) {
        fprintf(stderr, "unknown algorithm %s\n", argv[1]);
        return 2;
    }

    f = fopen(argv[2], "r");
    if (f == NULL) {
        perror(argv[2]);
        return 2;
    }

    if (key.alg->family == NGX_CHAT_JWT_HMAC) {
        len = fread(buf, 1, sizeof(buf), f);

        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
            len--;
        }

        key.secret.data = buf;
        key.secret.len = len;

    } else {
        key.pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    }

    fclose(f);

    gettimeofday(&t0, NULL);

    for (i = 0; i < n; i++) {
        jwt = ngx_chat_jwt_verify(&key, (u_char *) argv[3], strlen(argv[3]),
                                  &why, &log);
        if (jwt == NULL) {
            fprintf(stderr, "refused: %s\n", why ? why : "no memory");
            return 1;
        }

        ngx_chat_jwt_free(jwt);
    }

    gettimeofday(&t1, NULL);

    us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_usec - t0.tv_usec)) / n;

    printf("%s: %.2f us per token check (%ld checks)\n", argv[1], us, n);

    return 0;
}
