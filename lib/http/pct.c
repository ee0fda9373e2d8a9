/* Percent-decoding for paths and query strings (RFC 3986 §2.1). */
#include "internal.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t sq__pct_decode(char *dst, const char *src, size_t n, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval((unsigned char)src[i + 1])) < 0 ||
                (lo = hexval((unsigned char)src[i + 2])) < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            if (c == 0)
                return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return (ssize_t)o;
}
