
/*
 * Copyright (C) ngx_chat_module authors
 *
 * ngx_chat_jflat_parse() against jansson: whenever the scanner accepts a
 * text, jansson must read the same object (same members, same strings);
 * the scanner may decline anything (jansson then decides).  Hand-written
 * cases, then random texts built from JSON-ish pieces and mutated.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "ngx_chat_jflat.h"


static int  failures, checks, accepted;


static void
check(const char *what, const unsigned char *p, size_t len, int expect)
{
    int                     n, i;
    json_t                 *j, *v;
    json_error_t            err;
    ngx_chat_jflat_pair_t   pairs[8];
    char                    key[256];

    checks++;

    n = ngx_chat_jflat_parse(p, len, pairs, 8);

    if (expect != 0 && ((expect > 0) != (n > 0) || (expect > 0 && n != expect)))
    {
        printf("FAIL %s: returned %d, expected %d: %.*s\n", what, n, expect,
               (int) len, p);
        failures++;
    }

    if (n <= 0) {
        return;
    }

    accepted++;

    j = json_loadb((const char *) p, len, JSON_ALLOW_NUL, &err);

    if (j == NULL || !json_is_object(j) || (int) json_object_size(j) != n) {
        printf("FAIL %s: accepted %d members, jansson: %s: %.*s\n", what, n,
               j ? "a different object" : err.text, (int) len, p);
        failures++;
        json_decref(j);
        return;
    }

    for (i = 0; i < n; i++) {
        if (pairs[i].key_len >= sizeof(key)) {
            continue;
        }

        memcpy(key, pairs[i].key, pairs[i].key_len);
        key[pairs[i].key_len] = '\0';

        v = json_object_get(j, key);

        if (v == NULL || !json_is_string(v)
            || json_string_length(v) != pairs[i].value_len
            || memcmp(json_string_value(v), pairs[i].value,
                      pairs[i].value_len) != 0)
        {
            printf("FAIL %s: member \"%s\" differs from jansson's: %.*s\n",
                   what, key, (int) len, p);
            failures++;
        }
    }

    json_decref(j);
}


#define CASE(s, e)  check(s, (const unsigned char *) s, sizeof(s) - 1, e)


static const char  *pieces[] = {
    "{", "}", "\"", ":", ",", " ", "\n", "\t", "\r", "type", "send", "room",
    "content", "ref", "r1", "hello world", "\\", "\\\"", "\\u0000", "\\ud800",
    "1", "-2.5e3", "true", "null", "[", "]", "{}", "\xc3\xa9", "\xe2\x82\xac",
    "\xf0\x9f\x98\x80", "\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xff", "\x01",
    "\x7f", "a", "\"\"", "\"type\":\"send\"", "\"room\":\"r\"",
    "\"content\":\"x\"", "\xef\xbb\xbf"
};


int
main(void)
{
    int            i, k, m, len;
    unsigned char  buf[512];
    unsigned int   seed;

    /* accepted: flat objects of plain strings */
    CASE("{\"type\":\"send\",\"room\":\"r\",\"content\":\"hi\",\"ref\":\"1\"}",
         4);
    CASE(" \r\n\t{ \"type\" : \"send\" , \"room\":\"\" } \n", 2);
    CASE("{\"type\":\"send\",\"content\":\"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\"}",
         2);
    CASE("{\"a\":\"1\"}", 1);
    CASE("{\"\":\"\"}", 1);
    CASE("{\"a\":\"/ ' < > & \x7f\"}", 1);

    /* declined: jansson decides */
    CASE("{}", -1);
    CASE("", -1);
    CASE("[]", -1);
    CASE("\"x\"", -1);
    CASE("{\"a\":\"1\",}", -1);
    CASE("{\"a\":\"1\"", -1);
    CASE("{\"a\":\"1\"}x", -1);
    CASE("{\"a\":\"1\"}{}", -1);
    CASE("{\"a\":1}", -1);
    CASE("{\"a\":null}", -1);
    CASE("{\"a\":{\"b\":\"c\"}}", -1);
    CASE("{\"a\":\"\\n\"}", -1);
    CASE("{\"a\":\"\\u0000\"}", -1);
    CASE("{\"a\\\"\":\"x\"}", -1);
    CASE("{\"a\":\"x\",\"a\":\"y\"}", -1);
    CASE("{\"a\":\"tab\there\"}", -1);
    CASE("{\"a\":\"\xc3\"}", -1);
    CASE("{\"a\":\"\xed\xa0\x80\"}", -1);
    CASE("{\"a\":\"\xc0\xaf\"}", -1);
    CASE("\xef\xbb\xbf{\"a\":\"x\"}", -1);
    CASE("{'a':'x'}", -1);
    CASE("{a:\"x\"}", -1);
    CASE("{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\","
         "\"7\":\"\",\"8\":\"\",\"9\":\"\"}", -1);
    check("NUL inside", (const unsigned char *) "{\"a\":\"x\0y\"}", 11, -1);
    check("NUL after", (const unsigned char *) "{\"a\":\"x\"}\0", 10, -1);

    /* random texts from pieces, and mutations of them */
    seed = 12345;
    srand(seed);

    for (i = 0; i < 300000; i++) {
        len = 0;
        m = 1 + rand() % 24;

        for (k = 0; k < m; k++) {
            const char  *s = pieces[rand() % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t       l = strlen(s);

            if (len + l > sizeof(buf)) {
                break;
            }

            memcpy(buf + len, s, l);
            len += (int) l;
        }

        if (i % 3 == 0 && len > 0) {
            for (k = rand() % 3; k >= 0; k--) {
                buf[rand() % len] = (unsigned char) rand();
            }
        }

        check("random", buf, len, 0);
    }

    /* well-formed flat objects built at random: most must be accepted */
    for (i = 0; i < 100000; i++) {
        int  before = accepted;

        len = 0;
        buf[len++] = '{';
        m = 1 + rand() % 6;

        for (k = 0; k < m; k++) {
            len += sprintf((char *) buf + len, "%s\"k%d\"%s:%s\"v%d \xc3\xa9%s\"",
                           k ? "," : "", k, rand() % 2 ? " " : "",
                           rand() % 2 ? "\n" : "", rand(),
                           rand() % 2 ? "\xf0\x9f\x98\x80" : "");
        }

        buf[len++] = '}';

        check("built", buf, len, m);

        if (accepted == before) {
            break;
        }

        /* and the same with a byte or two changed or cut short */
        k = rand() % len;
        buf[k] = (unsigned char) (rand() % 3 ? pieces[rand() % 10][0] : rand());

        if (rand() % 2) {
            buf[rand() % len] = (unsigned char) rand();
        }

        check("mutated", buf, rand() % 4 ? len : (int) (rand() % len), 0);
    }

    printf("jflat: %d checks, %d accepted by the scanner, %d failures\n",
           checks, accepted, failures);

    return failures ? 1 : 0;
}
