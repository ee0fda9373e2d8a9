/* Cookies (RFC 6265): the request's Cookie header read as browsers write it (§5.4), and
 * Set-Cookie written with every part checked (§4.1.1), so nothing from an application
 * can split the header; and redirects (RFC 9110 §15.4) with a checked Location. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/abi.h"
#include "http/h1_int.h"

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Looks for name in one Cookie header value: "a=1; b=2". Returns a copy of its value in
 * the request's memory, or NULL. */
static const char *find_in(sq_req_t *req, const char *v, const char *name, size_t nlen)
{
    const char *end = v + strlen(v);
    while (v < end) {
        const char *semi = memchr(v, ';', (size_t)(end - v)); /* v < end */
        const char *pe = semi ? semi : end;
        const char *p = skip_ows(v, pe);
        const char *eq = p < pe ? memchr(p, '=', (size_t)(pe - p)) : NULL;
        v = semi ? semi + 1 : end;
        if (eq == NULL)
            continue;
        const char *ne = eq;
        while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        if ((size_t)(ne - p) != nlen || memcmp(p, name, nlen) != 0)
            continue;
        const char *vb = skip_ows(eq + 1, pe), *ve = pe;
        while (ve > vb && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (ve - vb >= 2 && vb[0] == '"' && ve[-1] == '"') { /* §4.1.1 allows DQUOTEs */
            vb++;
            ve--;
        }
        char *out = sq__arena_alloc(&req->arena, (size_t)(ve - vb) + 1);
        if (out == NULL)
            return NULL;
        memcpy(out, vb, (size_t)(ve - vb));
        out[ve - vb] = '\0';
        return out;
    }
    return NULL;
}

const char *sq_req_cookie(sq_req_t *req, const char *name)
{
    if (name == NULL || *name == '\0')
        return NULL;
    size_t nlen = strlen(name), n = sq_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *hn, *hv;
        if (sq_req_header_at(req, i, &hn, &hv) != 0 || strcasecmp(hn, "Cookie") != 0)
            continue;
        const char *v = find_in(req, hv, name, nlen);
        if (v != NULL)
            return v;
    }
    return NULL;
}

static const sq_cookie_opts_t cookie_defaults = {
    .size = sizeof(sq_cookie_opts_t), .max_age = -1, .same_site = SQ_SAMESITE_UNSET};

void sq_cookie_opts_init_sized(sq_cookie_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &cookie_defaults);
}

/* RFC 6265 §4.1.1 cookie-value: *cookie-octet, or the same in DQUOTEs; cookie-octet is
 * %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E. */
static bool cookie_octets(const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    for (const unsigned char *p = (const unsigned char *)s; n > 0; p++, n--)
        if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == ',' || *p == ';' || *p == '\\')
            return false;
    return true;
}

/* §4.1.1 path-value: any CHAR except CTLs or ';' (visible characters and spaces). */
static bool path_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p >= 0x7f || *p == ';')
            return false;
    return true;
}

/* A host name (RFC 1034 §3.5 letters, digits, hyphens, dots; a leading dot tolerated). */
static bool domain_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') && !(*p >= '0' && *p <= '9') && *p != '-' &&
            *p != '.')
            return false;
    return true;
}

int sq_res_set_cookie(sq_res_t *res, const char *name, const char *value,
                      const sq_cookie_opts_t *opts)
{
    sq_cookie_opts_t o = cookie_defaults;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (name == NULL || *name == '\0' || value == NULL || !cookie_octets(value) ||
        (o.path != NULL && !path_ok(o.path)) || (o.domain != NULL && !domain_ok(o.domain)) ||
        (o.same_site == SQ_SAMESITE_NONE && !o.secure) ||
        (unsigned)o.same_site > SQ_SAMESITE_NONE || o.expires < 0 || o.max_age < -1)
        return UV_EINVAL;
    for (const char *p = name; *p; p++)
        if (!sq__is_tchar((unsigned char)*p))
            return UV_EINVAL;
    size_t cap = strlen(name) + strlen(value) + (o.path ? strlen(o.path) : 0) +
                 (o.domain ? strlen(o.domain) : 0) + 160;
    char *v = sq__arena_alloc(&res->req->arena, cap);
    if (v == NULL)
        return UV_ENOMEM;
    int n = snprintf(v, cap, "%s=%s", name, value);
    if (o.max_age >= 0)
        n += snprintf(v + n, cap - (size_t)n, "; Max-Age=%" PRId64, o.max_age);
    if (o.expires > 0) {
        char date[30];
        /* RFC 6265 §5.1.1 reads years to 9999: a later date is the end of that year */
        sq__date_format(o.expires < 253402300799 ? o.expires : 253402300799, date);
        n += snprintf(v + n, cap - (size_t)n, "; Expires=%s", date);
    }
    if (o.domain != NULL)
        n += snprintf(v + n, cap - (size_t)n, "; Domain=%s", o.domain);
    if (o.path != NULL)
        n += snprintf(v + n, cap - (size_t)n, "; Path=%s", o.path);
    if (o.secure)
        n += snprintf(v + n, cap - (size_t)n, "; Secure");
    if (o.http_only)
        n += snprintf(v + n, cap - (size_t)n, "; HttpOnly");
    static const char *const same[] = {NULL, "Lax", "Strict", "None"};
    if (o.same_site != SQ_SAMESITE_UNSET)
        snprintf(v + n, cap - (size_t)n, "; SameSite=%s", same[o.same_site]);
    return sq_res_header(res, "Set-Cookie", v);
}

int sq_res_redirect(sq_res_t *res, int status, const char *location)
{
    if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
        return UV_EINVAL;
    if (location == NULL || *location == '\0')
        return UV_EINVAL;
    for (const unsigned char *p = (const unsigned char *)location; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return UV_EINVAL;
    int rc = sq_res_header(res, "Location", location);
    if (rc != 0)
        return rc;
    return sq_res_send(res, status, NULL, NULL, 0);
}
