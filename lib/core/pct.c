/* Percent-decoding for paths and query strings (RFC 3986 §2.1). */
#include "internal.h"

int sq__hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes n bytes of src into dst (which has room for n + 1) and NUL-terminates it.
 * Returns the decoded length, or -1 for a malformed escape or an encoded NUL. With
 * SQ__PCT_LENIENT neither fails: such an escape stays as it was, as Python's
 * urllib.parse.unquote and the WHATWG URL parser leave it (`q=%zz` is "%zz"). */
ssize_t sq__pct_decode(char *dst, const char *src, size_t n, unsigned flags)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 < n && (hi = sq__hexval((unsigned char)src[i + 1])) >= 0 &&
                (lo = sq__hexval((unsigned char)src[i + 2])) >= 0 && (hi | lo) != 0) {
                c = (unsigned char)(hi << 4 | lo);
                i += 2;
            } else if (!(flags & SQ__PCT_LENIENT)) {
                return -1;
            }
        } else if (c == '+' && (flags & SQ__PCT_PLUS)) {
            c = ' ';
        }
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return (ssize_t)o;
}
