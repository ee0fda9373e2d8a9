/* What may go into a request line or a header of one squall sends (the HTTP and the
 * WebSocket clients): RFC 3986 §2-3 characters, RFC 9110 §5.6.2 tokens. */
#include <string.h>

#include "internal.h"

static bool is_alnum(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool sq__uri_host_char(unsigned char ch)
{
    return is_alnum(ch) || (ch != '\0' && strchr("-._~!$&'()*+,;=", ch) != NULL);
}

bool sq__uri_path_char(unsigned char ch)
{
    return sq__uri_host_char(ch) || ch == ':' || ch == '@' || ch == '/' || ch == '?';
}

bool sq__uri_span_ok(const char *s, size_t len, bool (*ok)(unsigned char))
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= len || !is_hex((unsigned char)s[i + 1]) ||
                !is_hex((unsigned char)s[i + 2]))
                return false;
            i += 2;
        } else if (!ok(ch)) {
            return false;
        }
    }
    return true;
}

bool sq__is_tchar(unsigned char ch)
{
    return is_alnum(ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}
