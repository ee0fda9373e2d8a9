/* UTF-8 (RFC 3629) for the layers that check text they are given: declarations, query
 * values. The WebSocket layer has its own, faster validator for message payloads. */
#include "internal.h"

size_t sq__utf8_seq(const unsigned char *p)
{
    size_t n = *p < 0x80             ? 1
               : (*p & 0xe0) == 0xc0 ? 2
               : (*p & 0xf0) == 0xe0 ? 3
               : (*p & 0xf8) == 0xf0 ? 4
                                     : 0;
    uint32_t cp = n == 1 ? *p : n == 2 ? *p & 0x1fu : n == 3 ? *p & 0x0fu : *p & 0x07u;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    /* §3: no overlong forms, no surrogates, nothing past U+10FFFF */
    if (n == 0 || (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

bool sq__utf8_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = sq__utf8_seq(p);
        if (n == 0)
            return false;
        p += n;
    }
    return true;
}
