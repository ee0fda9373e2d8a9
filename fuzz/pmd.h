/* A permessage-deflate element (RFC 7692 §7.1) read by the harnesses' own code, to check
 * squall's offers and answers against: fuzz_handshake.c (the server's answer to the
 * input's offers) and fuzz_ws_client.c (the input's answer to the client's offer). */
#ifndef SQ_FUZZ_PMD_H
#define SQ_FUZZ_PMD_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* One permessage-deflate element's parameters as read here: for each window parameter,
 * 0 absent, -1 without a value, -2 a bad value, else its bits. */
typedef struct pmd {
    int smwb, cmwb;
    bool sntc, cntc;
    bool ok; /* known parameters, each once, values where they belong */
} pmd_t;

/* RFC 7692 §7.1.2: 8-15 in decimal, no leading zero, quoted or not (a quoted-string's
 * backslash escapes the next character, RFC 9110 §5.6.4: "1\0" is 10). */
static int bits_of(const char *v, size_t n)
{
    char u[4];
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        size_t k = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            if (v[i] == '\\' && i + 2 < n)
                i++;
            if (k == sizeof(u))
                return -2;
            u[k++] = v[i];
        }
        v = u;
        n = k;
    }
    if (n == 1 && v[0] >= '8' && v[0] <= '9')
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return -2;
}

/* Reads [b, e) as a permessage-deflate element; false when it names another extension. */
static bool pmd_read(const char *b, const char *e, pmd_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ok = true;
    const char *t = b;
    while (t < e && *t != ';' && *t != ' ' && *t != '\t')
        t++;
    if ((size_t)(t - b) != 18 || strncasecmp(b, "permessage-deflate", 18) != 0)
        return false;
    const char *p = t;
    while (p < e) {
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= e)
            break;
        if (*p != ';') {
            out->ok = false; /* junk after the name or a value */
            return true;
        }
        p++;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        const char *nb = p;
        while (p < e && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - nb);
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        const char *vb = NULL;
        size_t vl = 0;
        if (p < e && *p == '=') {
            p++;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            vb = p;
            bool q = false;
            for (; p < e && (q || (*p != ';' && *p != ' ' && *p != '\t')); p++) {
                if (*p == '"')
                    q = !q;
                else if (q && *p == '\\' && p + 1 < e)
                    p++;
            }
            vl = (size_t)(p - vb);
        }
        int *w = NULL;
        bool *f = NULL;
        if (nl == 22 && strncasecmp(nb, "server_max_window_bits", 22) == 0)
            w = &out->smwb;
        else if (nl == 22 && strncasecmp(nb, "client_max_window_bits", 22) == 0)
            w = &out->cmwb;
        else if (nl == 26 && strncasecmp(nb, "server_no_context_takeover", 26) == 0)
            f = &out->sntc;
        else if (nl == 26 && strncasecmp(nb, "client_no_context_takeover", 26) == 0)
            f = &out->cntc;
        else
            out->ok = false;
        if (w != NULL) {
            if (*w != 0)
                out->ok = false;
            *w = vb == NULL ? -1 : bits_of(vb, vl);
        } else if (f != NULL) {
            if (*f || vb != NULL)
                out->ok = false;
            *f = true;
        }
    }
    return true;
}

#endif
