/* What may go into a request line or a header of one squall sends (the HTTP and the
 * WebSocket clients): RFC 3986 §2-3 characters, RFC 9110 §5.6.2 tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* The class of each byte for header fields (SQ__CH_*): one load per byte on the response
 * path. A test checks the table against the RFC's definitions
 * (charclass/char_classes_match_rfc_9110). */
#define T (SQ__CH_TCHAR | SQ__CH_VALUE)
#define V SQ__CH_VALUE
const uint8_t sq__char_class[256] = {
    /* 0x00-0x1f: controls; only HTAB may stand in a value (RFC 9110 §5.5) */
    0, 0, 0, 0, 0, 0, 0, 0, 0, V, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* SP ! " # $ % & ' ( ) * + , - . / */
    V, T, V, T, T, T, T, T, V, V, T, T, V, T, T, V,
    /* 0-9 : ; < = > ? */
    T, T, T, T, T, T, T, T, T, T, V, V, V, V, V, V,
    /* @ A-O */
    V, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T,
    /* P-Z [ \ ] ^ _ */
    T, T, T, T, T, T, T, T, T, T, T, V, V, V, T, T,
    /* ` a-o */
    T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T,
    /* p-z { | } ~ DEL */
    T, T, T, T, T, T, T, T, T, T, T, V, T, V, T, 0,
    /* 0x80-0xff: obs-text, allowed in values */
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
};
#undef T
#undef V

/* Whether the 8 bytes at s hold a byte below 0x20 (NUL, CR, LF, the other controls, HTAB)
 * or one equal to 0x7F: a word with neither holds only value bytes. */
static bool word_has_control(const char *s)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t w, d;
    memcpy(&w, s, sizeof(w));
    d = w ^ (ones * 0x7f);
    return ((((w - ones * 0x20) & ~w) | ((d - ones) & ~d)) & highs) != 0;
}

/* A field value (a content type on every response): its length first, then 8 bytes at a
 * time, the last word overlapping the one before; a string with a word that has a
 * control (a tab, or a byte to refuse) and one shorter than a word are looked at byte by
 * byte. Reads stay inside the string. */
static size_t value_len(const char *s)
{
    size_t n = strlen(s);
    if (n >= 8) {
        size_t i = 0;
        while (i + 8 < n && !word_has_control(s + i))
            i += 8;
        if (i + 8 >= n && !word_has_control(s + n - 8))
            return n;
    }
    for (size_t i = 0; i < n; i++)
        if (!(sq__char_class[(unsigned char)s[i]] & SQ__CH_VALUE))
            return SIZE_MAX;
    return n;
}

size_t sq__field_len(const char *s, unsigned cls)
{
    if (cls == SQ__CH_VALUE)
        return value_len(s);
    const unsigned char *p = (const unsigned char *)s;
    while (sq__char_class[*p] & cls)
        p++;
    return *p == '\0' ? (size_t)(p - (const unsigned char *)s) : SIZE_MAX;
}

void sq__url_free(sq__url_t *u)
{
    free(u->host);
    free(u->hostport);
    free(u->target);
    memset(u, 0, sizeof(*u));
}

int sq__url_parse(const char *url, const char *scheme, const char *tls_scheme, sq__url_t *u)
{
    memset(u, 0, sizeof(*u));
    size_t sn = strlen(scheme), tn = strlen(tls_scheme);
    const char *h;
    bool tls = false;
    if (strncasecmp(url, scheme, sn) == 0) {
        h = url + sn;
    } else if (strncasecmp(url, tls_scheme, tn) == 0) {
        tls = true;
        h = url + tn;
    } else {
        return UV_EINVAL;
    }
    const char *p; /* past the host */
    if (*h == '[') {
        /* RFC 3986 §3.2.2: an IPv6 address between brackets (no zone, no IPvFuture) */
        const char *hend = strchr(h, ']');
        if (hend == NULL || hend == h + 1 || (size_t)(hend - h - 1) >= 46)
            return UV_EINVAL;
        char addr[46];
        unsigned char bin[16];
        memcpy(addr, h + 1, (size_t)(hend - h - 1));
        addr[hend - h - 1] = '\0';
        if (strspn(addr, "0123456789abcdefABCDEF:.") != strlen(addr) ||
            uv_inet_pton(AF_INET6, addr, bin) != 0)
            return UV_EINVAL;
        u->host = strdup(addr);
        p = hend + 1;
    } else {
        p = h + strcspn(h, ":/?#");
        if (p == h || !sq__uri_span_ok(h, (size_t)(p - h), sq__uri_host_char))
            return UV_EINVAL; /* empty, user info ("@"), a space, a control or non-ASCII */
        u->host = strndup(h, (size_t)(p - h));
    }
    if (u->host == NULL)
        return UV_ENOMEM;
    long port = tls ? 443 : 80;
    if (*p == ':') {
        size_t nd = strspn(p + 1, "0123456789");
        if (nd == 0 || nd > 5 || (port = strtol(p + 1, NULL, 10)) <= 0 || port > 65535) {
            sq__url_free(u);
            return UV_EINVAL;
        }
        p += 1 + nd;
    }
    /* no fragment: the rest goes into the request line as it is */
    if ((*p != '\0' && *p != '/' && *p != '?') ||
        !sq__uri_span_ok(p, strlen(p), sq__uri_path_char)) {
        sq__url_free(u);
        return UV_EINVAL;
    }
    u->tls = tls;
    snprintf(u->port, sizeof(u->port), "%ld", port);
    u->hostport = strndup(h, (size_t)(p - h));
    if (*p == '?') {
        u->target = malloc(strlen(p) + 2);
        if (u->target != NULL)
            sprintf(u->target, "/%s", p);
    } else {
        u->target = strdup(*p ? p : "/");
    }
    if (u->hostport == NULL || u->target == NULL) {
        sq__url_free(u);
        return UV_ENOMEM;
    }
    return 0;
}
