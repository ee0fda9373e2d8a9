/* Incremental UTF-8 validation (RFC 3629 §4): rejects overlong forms, surrogates and code
 * points past U+10FFFF as soon as the offending byte arrives, so a text message split
 * across frames and reads is checked without being buffered first. */
#include "ws/ws_int.h"

bool sq__utf8_feed(sq__utf8_t *u, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        if (u->need == 0) {
            /* ASCII runs, 32 then eight bytes at a time */
            while (i + 32 <= n) {
                uint64_t w[4];
                memcpy(w, p + i, 32);
                if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull)
                    break;
                i += 32;
            }
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            b = p[i++];
            if (b < 0x80)
                continue;
            u->lo = 0x80;
            u->hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                u->need = 1;
            } else if (b >= 0xE0 && b <= 0xEF) {
                u->need = 2;
                if (b == 0xE0)
                    u->lo = 0xA0; /* overlong */
                else if (b == 0xED)
                    u->hi = 0x9F; /* UTF-16 surrogates */
            } else if (b >= 0xF0 && b <= 0xF4) {
                u->need = 3;
                if (b == 0xF0)
                    u->lo = 0x90; /* overlong */
                else if (b == 0xF4)
                    u->hi = 0x8F; /* past U+10FFFF */
            } else {
                return false;
            }
        } else {
            if (b < u->lo || b > u->hi)
                return false;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
            i++;
        }
    }
    return true;
}
