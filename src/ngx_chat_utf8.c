
/*
 * Copyright (C) ngx_chat_module authors
 */


#include <stddef.h>
#include <stdint.h>

#include "ngx_chat_utf8.h"


/*
 * The validator is a small hand-written state machine.  Besides ACCEPT (0)
 * and REJECT (1), a state says how many continuation bytes are still
 * needed and, right after some lead bytes, which narrower range the next
 * byte must be in (RFC 3629, section 4):
 *
 *   E0       A0..BF  80..BF              (no overlong 3-byte forms)
 *   ED       80..9F  80..BF              (no surrogates D800..DFFF)
 *   F0       90..BF  80..BF  80..BF      (no overlong 4-byte forms)
 *   F4       80..8F  80..BF  80..BF      (nothing above U+10FFFF)
 *
 * C0, C1 and F5..FF never appear, nor do bare continuation bytes.
 */

#define NGX_CHAT_UTF8_NEED1     2   /* one more 80..BF */
#define NGX_CHAT_UTF8_NEED2     3   /* two more 80..BF */
#define NGX_CHAT_UTF8_NEED3     4   /* three more 80..BF */
#define NGX_CHAT_UTF8_E0        5   /* A0..BF, then NEED1 */
#define NGX_CHAT_UTF8_ED        6   /* 80..9F, then NEED1 */
#define NGX_CHAT_UTF8_F0        7   /* 90..BF, then NEED2 */
#define NGX_CHAT_UTF8_F4        8   /* 80..8F, then NEED2 */


uint32_t
ngx_chat_utf8_validate(uint32_t *state, const unsigned char *p, size_t len)
{
    uint32_t              s;
    unsigned char         c;
    const unsigned char  *end;

    s = *state;
    end = p + len;

    while (p < end) {

        if (s == NGX_CHAT_UTF8_ACCEPT) {

            /* fast path over ASCII */

            while (p < end && *p < 0x80) {
                p++;
            }

            if (p == end) {
                break;
            }
        }

        c = *p++;

        switch (s) {

        case NGX_CHAT_UTF8_ACCEPT:

            if (c < 0xc2) {
                /* continuation byte, or C0/C1 (always overlong) */
                s = NGX_CHAT_UTF8_REJECT;

            } else if (c < 0xe0) {
                s = NGX_CHAT_UTF8_NEED1;

            } else if (c == 0xe0) {
                s = NGX_CHAT_UTF8_E0;

            } else if (c == 0xed) {
                s = NGX_CHAT_UTF8_ED;

            } else if (c < 0xf0) {
                s = NGX_CHAT_UTF8_NEED2;

            } else if (c == 0xf0) {
                s = NGX_CHAT_UTF8_F0;

            } else if (c < 0xf4) {
                s = NGX_CHAT_UTF8_NEED3;

            } else if (c == 0xf4) {
                s = NGX_CHAT_UTF8_F4;

            } else {
                s = NGX_CHAT_UTF8_REJECT;
            }

            break;

        case NGX_CHAT_UTF8_NEED1:
            s = (c >= 0x80 && c <= 0xbf) ? NGX_CHAT_UTF8_ACCEPT
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_NEED2:
            s = (c >= 0x80 && c <= 0xbf) ? NGX_CHAT_UTF8_NEED1
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_NEED3:
            s = (c >= 0x80 && c <= 0xbf) ? NGX_CHAT_UTF8_NEED2
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_E0:
            s = (c >= 0xa0 && c <= 0xbf) ? NGX_CHAT_UTF8_NEED1
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_ED:
            s = (c >= 0x80 && c <= 0x9f) ? NGX_CHAT_UTF8_NEED1
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_F0:
            s = (c >= 0x90 && c <= 0xbf) ? NGX_CHAT_UTF8_NEED2
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        case NGX_CHAT_UTF8_F4:
            s = (c >= 0x80 && c <= 0x8f) ? NGX_CHAT_UTF8_NEED2
                                         : NGX_CHAT_UTF8_REJECT;
            break;

        default:
            /* REJECT is sticky, and so is any state we do not know */
            s = NGX_CHAT_UTF8_REJECT;
            break;
        }

        if (s == NGX_CHAT_UTF8_REJECT) {
            break;
        }
    }

    *state = s;

    return s;
}
