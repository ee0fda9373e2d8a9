/* multipart/form-data (RFC 7578), framed as RFC 2046 §5.1 says, parsed as it arrives.
 *
 *   multipart-body := [preamble CRLF] dash-boundary transport-padding CRLF body-part
 *                     *encapsulation close-delimiter transport-padding [CRLF epilogue]
 *   delimiter      := CRLF "--" boundary
 *
 * The body is read as if it began with a CRLF, so the first dash-boundary is a delimiter
 * like the others and one search finds them all. The delimiter's bytes after its leading
 * CR are never a CR (a boundary is made of bchars), so a delimiter cut by the end of a feed
 * is kept as a count alone: the bytes held are always delim[0..held), and when the next
 * feed shows they were data they are handed on from the parser's own copy of the
 * delimiter. No byte of a part's content is ever copied or held. */
#include <stdlib.h>
#include <strings.h>

#include "core/abi.h"
#include "form/form_int.h"

static const sq_multipart_opts_t mp_defaults = {
    .size = sizeof(sq_multipart_opts_t),
    .max_parts = 1000,
    .max_header_bytes = 8 * 1024,
    .max_headers = 16,
    .max_field_bytes = 1024 * 1024,
    .max_total_bytes = (uint64_t)1 << 30,
};

void sq_multipart_opts_init_sized(sq_multipart_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &mp_defaults);
}

/* ---- Content-Type and Content-Disposition: a type, then "; name=value" parameters
 * (RFC 9110 §5.6.6, §5.6.4 quoted-string) ---- */

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 2046 §5.1.1: bchars := bcharsnospace / " " */
static bool is_bchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
        return true;
    return c != '\0' && strchr("'()+_,-./:=? ", c) != NULL;
}

static bool boundary_ok(const char *b, size_t n)
{
    if (n < 1 || n > SQ_FORM_BOUNDARY_MAX || b[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_bchar((unsigned char)b[i]))
            return false;
    return true;
}

/* A token at *sp: its length (0: none), *sp moved past it. */
static size_t token(const char **sp)
{
    const char *s = *sp;
    while (sq__is_tchar((unsigned char)*s))
        s++;
    size_t n = (size_t)(s - *sp);
    *sp = s;
    return n;
}

typedef struct param {
    const char *name, *v; /* v: the value as written, quotes excluded */
    size_t name_len, v_len;
    bool quoted;
} param_t;

/* Reads the next "; name=value" at *sp (empty parameters skipped). Returns 1 with *pm
 * filled and *sp past it, 0 at the end of the string, -1 when malformed. Whitespace
 * around '=' is allowed, as senders put it there. */
static int param_next(const char **sp, param_t *pm)
{
    const char *s = *sp;
    for (;;) {
        while (is_ows(*s))
            s++;
        if (*s == '\0')
            return 0;
        if (*s != ';')
            return -1;
        s++;
        while (is_ows(*s))
            s++;
        if (*s != ';' && *s != '\0')
            break;
    }
    pm->name = s;
    if ((pm->name_len = token(&s)) == 0)
        return -1;
    while (is_ows(*s))
        s++;
    if (*s++ != '=')
        return -1;
    while (is_ows(*s))
        s++;
    if (*s == '"') {
        pm->v = ++s;
        for (; *s != '"'; s++) {
            unsigned char c = (unsigned char)*s;
            if (c == '\\')
                c = (unsigned char)*++s; /* quoted-pair */
            if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f)
                return -1;
        }
        pm->v_len = (size_t)(s - pm->v);
        pm->quoted = true;
        s++;
    } else {
        pm->v = s;
        if ((pm->v_len = token(&s)) == 0)
            return -1;
        pm->quoted = false;
    }
    *sp = s;
    return 1;
}

/* The value of pm, unquoted, into out (room for v_len + 1); returns its length. A
 * backslash takes the next character literally when it is '"' or '\'; before any other it
 * is kept, so a Windows path sent unescaped (`filename="C:\docs\a.txt"`) survives — as
 * python-multipart, which FastAPI runs, reads it. */
static size_t unquote(const param_t *pm, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < pm->v_len; i++) {
        char c = pm->v[i];
        if (pm->quoted && c == '\\' && i + 1 < pm->v_len &&
            (pm->v[i + 1] == '"' || pm->v[i + 1] == '\\'))
            c = pm->v[++i];
        out[o++] = c;
    }
    out[o] = '\0';
    return o;
}

static bool name_is(const param_t *pm, const char *name)
{
    return pm->name_len == strlen(name) && strncasecmp(pm->name, name, pm->name_len) == 0;
}

ssize_t sq_form_boundary(const char *content_type, char *buf, size_t size)
{
    const char *s = content_type;
    if (s == NULL)
        return UV_EINVAL;
    while (is_ows(*s))
        s++;
    const char *type = s;
    size_t tlen = token(&s);
    if (tlen == 0 || *s++ != '/')
        return UV_EINVAL;
    const char *sub = s;
    size_t slen = token(&s);
    if (slen == 0)
        return UV_EINVAL;
    bool form = tlen == 9 && strncasecmp(type, "multipart", 9) == 0 && slen == 9 &&
                strncasecmp(sub, "form-data", 9) == 0;
    char tmp[2 * SQ_FORM_BOUNDARY_MAX + 3];
    ssize_t n = -1;
    param_t pm;
    int rc;
    while ((rc = param_next(&s, &pm)) == 1) {
        if (!name_is(&pm, "boundary"))
            continue;
        if (n >= 0 || pm.v_len >= sizeof(tmp))
            return UV_EINVAL; /* twice (which one?), or too long to be 70 characters */
        n = (ssize_t)unquote(&pm, tmp);
    }
    if (rc < 0)
        return UV_EINVAL;
    if (!form)
        return UV_EFTYPE;
    if (n < 0 || !boundary_ok(tmp, (size_t)n))
        return UV_EINVAL;
    if ((size_t)n + 1 > size)
        return UV_ENOBUFS;
    memcpy(buf, tmp, (size_t)n + 1);
    return n;
}

/* ---- the parser ---- */

int sq_multipart_create_sized(sq_multipart_t **out, const char *boundary,
                              const sq_multipart_opts_t *opts, const sq_multipart_cbs_t *cbs,
                              size_t cbs_size, void *data)
{
    int rc;
    *out = NULL;
    if (boundary == NULL || !boundary_ok(boundary, strlen(boundary)))
        return UV_EINVAL;
    sq_multipart_t *mp = calloc(1, sizeof(*mp));
    if (mp == NULL)
        return UV_ENOMEM;
    mp->opts = mp_defaults;
    if (opts != NULL && (rc = SQ__OPTS_IN(&mp->opts, opts)) != 0)
        goto free_mp;
    if (cbs != NULL && (rc = sq__abi_table_in(&mp->cbs, sizeof(mp->cbs), cbs, cbs_size)) != 0)
        goto free_mp;
    mp->data = data;
    mp->reason = "";
    mp->state = SQ__MP_PREAMBLE;
    mp->held = 2; /* the CRLF the body is read as beginning with */
    memcpy(mp->delim, "\r\n--", 4);
    strcpy(mp->delim + 4, boundary);
    size_t m = mp->dlen = 4 + strlen(boundary);
    /* Horspool: how far the window may move when the byte under its last position is c */
    memset(mp->skip, (int)m, sizeof(mp->skip));
    for (size_t j = 0; j + 1 < m; j++)
        mp->skip[(unsigned char)mp->delim[j]] = (unsigned char)(m - 1 - j);
    *out = mp;
    return 0;

free_mp:
    free(mp);
    return rc;
}

void sq_multipart_destroy(sq_multipart_t *mp)
{
    if (mp == NULL)
        return;
    sq__buf_free(&mp->hdr);
    sq__buf_free(&mp->strs);
    free(mp->headers);
    free(mp);
}

const char *sq_multipart_error(const sq_multipart_t *mp)
{
    return mp->reason;
}

int sq_multipart_is_paused(const sq_multipart_t *mp)
{
    return mp->paused;
}

/* The parser fails: kept, told once. Returns err. */
static int mp_fail(sq_multipart_t *mp, int err, const char *reason)
{
    mp->state = SQ__MP_ERROR;
    mp->err = err;
    mp->reason = reason;
    if (mp->cbs.error != NULL)
        mp->cbs.error(mp, err, reason, mp->data);
    return err;
}

/* A callback's answer: 0 go on, 1 pause, or the parser fails with its code. */
static int cb_result(sq_multipart_t *mp, int rc)
{
    rc = sq__form_cb_rc(rc);
    return rc < 0 ? mp_fail(mp, rc, "a callback stopped the parser") : rc;
}

/* Bytes before a delimiter: a part's content, or the preamble (ignored). */
static int emit(sq_multipart_t *mp, const char *at, size_t n)
{
    if (n == 0 || mp->state != SQ__MP_DATA)
        return 0;
    if (!mp->part_is_file && n > mp->opts.max_field_bytes - mp->part_bytes)
        return mp_fail(mp, UV_E2BIG, "a field (a part without filename) is over max_field_bytes");
    mp->part_bytes += n;
    if (mp->cbs.part_data == NULL)
        return 0;
    return cb_result(mp, mp->cbs.part_data(mp, at, n, mp->data));
}

/* A delimiter was read: it ends the current part, or the preamble. */
static int on_delim(sq_multipart_t *mp)
{
    bool was_data = mp->state == SQ__MP_DATA;
    mp->in_preamble = !was_data;
    mp->state = SQ__MP_AFTER;
    mp->part_bytes = 0; /* now counts the transport padding */
    if (!was_data || mp->cbs.part_end == NULL)
        return 0;
    return cb_result(mp, mp->cbs.part_end(mp, mp->data));
}

/* The first position of the delimiter in p[0..n), or -1 with *tail the length of the
 * longest end of p that begins it. Horspool's search: the window moves by the shift of
 * the byte under its end, most often the whole delimiter's length. A window position it
 * jumps over cannot start a delimiter, not even one cut by the end of p, so only the last
 * dlen-1 bytes past the last window need a look; and since the delimiter has its one CR
 * first, only the last CR among them can begin it. */
static ssize_t find_delim(const sq_multipart_t *mp, const unsigned char *p, size_t n, size_t *tail)
{
    const unsigned char *d = (const unsigned char *)mp->delim;
    size_t m = mp->dlen, i = 0;
    *tail = 0;
    if (n >= m) {
        const unsigned char last = d[m - 1];
        while (i <= n - m) {
            unsigned char c = p[i + m - 1];
            if (c == last && p[i] == '\r' && memcmp(p + i + 1, d + 1, m - 2) == 0)
                return (ssize_t)i;
            i += mp->skip[c];
        }
    }
    size_t from = n >= m ? n - m + 1 : 0;
    if (from < i)
        from = i;
    if (from >= n)
        return -1;
    const unsigned char *r = memrchr(p + from, '\r', n - from);
    if (r != NULL && memcmp(r, d, (size_t)(p + n - r)) == 0)
        *tail = (size_t)(p + n - r);
    return -1;
}

/* The preamble or a part's content, from *i: hands on what is not a delimiter and stops
 * past one. Returns 0, 1 (paused) or a negative code; *i is what was consumed. */
static int scan(sq_multipart_t *mp, const char *p, size_t len, size_t *i)
{
    size_t start = *i, m = mp->dlen;
    int rc;
    if (mp->held > 0) {
        size_t want = m - mp->held, j = len - start < want ? len - start : want;
        if (memcmp(p + start, mp->delim + mp->held, j) == 0) {
            if (j < want) {
                mp->held += j;
                *i = len;
                return 0;
            }
            mp->held = 0;
            *i = start + j;
            return on_delim(mp);
        }
        /* no delimiter after all: the bytes held were data, and none of them but the
         * first is a CR, so no delimiter starts among them */
        size_t k = mp->held;
        mp->held = 0;
        if ((rc = emit(mp, mp->delim, k)) != 0)
            return rc;
    }
    size_t tail;
    ssize_t at = find_delim(mp, (const unsigned char *)p + start, len - start, &tail);
    if (at >= 0) {
        *i = start + (size_t)at;
        if ((rc = emit(mp, p + start, (size_t)at)) != 0)
            return rc; /* the delimiter is read on the next feed */
        *i += m;
        return on_delim(mp);
    }
    mp->held = tail;
    *i = len;
    return emit(mp, p + start, len - start - tail);
}

/* What follows "--boundary" is not "--", padding or CRLF. In the preamble it was text
 * that looked like a boundary: the search goes on from this byte. In the body it breaks
 * the rule that a boundary never appears in content (RFC 2046 §5.1.1). */
static int not_a_boundary(sq_multipart_t *mp)
{
    if (mp->in_preamble) {
        mp->state = SQ__MP_PREAMBLE;
        return 0;
    }
    return mp_fail(mp, UV_EPROTO, "a delimiter not followed by CRLF or \"--\"");
}

/* Past a boundary line's CRLF: a part begins. */
static int begin_part(sq_multipart_t *mp)
{
    if (mp->parts >= mp->opts.max_parts)
        return mp_fail(mp, UV_E2BIG, "more parts than max_parts");
    mp->parts++;
    mp->in_preamble = false;
    mp->state = SQ__MP_HEADERS;
    mp->hdr.len = 0;
    mp->line_start = 0;
    mp->nlines = 0;
    return 0;
}

/* Content-Disposition: form-data; name="..."[; filename="..."] (RFC 7578 §4.2). Other
 * parameters are ignored, filename* among them (§4.2: senders do not use it). */
static int parse_disposition(sq_multipart_t *mp, const char *v)
{
    const char *s = v;
    size_t tlen = token(&s);
    if (tlen != 9 || strncasecmp(v, "form-data", 9) != 0)
        return mp_fail(mp, UV_ENOENT, "a part whose Content-Disposition is not form-data");
    size_t vlen = strlen(v);
    mp->strs.len = 0;
    if (sq__buf_reserve(&mp->strs, vlen + 2) != 0) /* both values, unquoted, and NULs */
        return mp_fail(mp, UV_ENOMEM, "out of memory");
    mp->part.name = mp->part.filename = NULL;
    param_t pm;
    int rc;
    while ((rc = param_next(&s, &pm)) == 1) {
        const char **dst;
        size_t *dlen;
        if (name_is(&pm, "name")) {
            dst = &mp->part.name;
            dlen = &mp->part.name_len;
        } else if (name_is(&pm, "filename")) {
            dst = &mp->part.filename;
            dlen = &mp->part.filename_len;
        } else {
            continue;
        }
        if (*dst != NULL)
            return mp_fail(mp, UV_EPROTO, "a Content-Disposition with a parameter twice");
        char *out = mp->strs.base + mp->strs.len;
        *dlen = unquote(&pm, out);
        *dst = out;
        mp->strs.len += *dlen + 1;
    }
    if (rc < 0)
        return mp_fail(mp, UV_EPROTO, "a malformed Content-Disposition");
    if (mp->part.name == NULL)
        return mp_fail(mp, UV_ENOENT, "a part whose Content-Disposition has no name");
    return 0;
}

/* The header block of a part is complete (hdr[0..line_start), each line ending in CRLF):
 * split it into lines, check them, describe the part and begin it. */
static int end_headers(sq_multipart_t *mp)
{
    char *b = mp->hdr.base;
    size_t n = mp->line_start;
    if (n > 0 && is_ows(b[0]))
        return mp_fail(mp, UV_EPROTO, "a folded part header line with no header before it");
    /* a folded line (obs-fold, RFC 9112 §5.2) is joined to the one before with spaces */
    for (size_t k = 0; k + 2 < n; k++)
        if (b[k] == '\r' && b[k + 1] == '\n' && is_ows(b[k + 2]))
            b[k] = b[k + 1] = ' ';
    if (mp->nlines > mp->headers_cap) {
        sq_form_header_t *h = realloc(mp->headers, mp->nlines * sizeof(*h));
        if (h == NULL)
            return mp_fail(mp, UV_ENOMEM, "out of memory");
        mp->headers = h;
        mp->headers_cap = mp->nlines;
    }
    size_t nh = 0;
    const char *disp = NULL, *ctype = NULL;
    for (size_t pos = 0; pos < n;) {
        size_t e = pos;
        while (b[e] != '\r' || b[e + 1] != '\n')
            e++; /* every line ends in CRLF: read_headers checked it */
        char *line = b + pos, *colon = memchr(line, ':', e - pos);
        if (colon == NULL)
            return mp_fail(mp, UV_EPROTO, "a part header line without a colon");
        if (colon == line)
            return mp_fail(mp, UV_EPROTO, "a part header with no name");
        for (char *c = line; c < colon; c++)
            if (!sq__is_tchar((unsigned char)*c))
                return mp_fail(mp, UV_EPROTO, "a part header name that is not a token");
        char *v = colon + 1, *ve = b + e;
        while (v < ve && is_ows(*v))
            v++;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        for (char *c = v; c < ve; c++) {
            unsigned char u = (unsigned char)*c;
            if ((u < 0x20 && u != '\t') || u == 0x7f)
                return mp_fail(mp, UV_EPROTO, "a control character in a part header value");
        }
        *colon = '\0';
        *ve = '\0';
        mp->headers[nh].name = line;
        mp->headers[nh].value = v;
        nh++;
        if (strcasecmp(line, "Content-Disposition") == 0) {
            if (disp != NULL)
                return mp_fail(mp, UV_EPROTO, "a part with two Content-Disposition headers");
            disp = v;
        } else if (strcasecmp(line, "Content-Type") == 0) {
            if (ctype != NULL)
                return mp_fail(mp, UV_EPROTO, "a part with two Content-Type headers");
            ctype = v;
        }
        pos = e + 2;
    }
    if (disp == NULL)
        return mp_fail(mp, UV_ENOENT, "a part without Content-Disposition");
    int rc = parse_disposition(mp, disp);
    if (rc != 0)
        return rc;
    mp->part.index = mp->parts - 1;
    mp->part.content_type = ctype;
    mp->part.headers = mp->headers;
    mp->part.nheaders = nh;
    mp->part_is_file = mp->part.filename != NULL;
    mp->part_bytes = 0;
    mp->held = 0;
    mp->state = SQ__MP_DATA;
    if (mp->cbs.part_begin == NULL)
        return 0;
    return cb_result(mp, mp->cbs.part_begin(mp, &mp->part, mp->data));
}

/* A part's header lines, from *i, into hdr (bounded by max_header_bytes). */
static int read_headers(sq_multipart_t *mp, const char *p, size_t len, size_t *i)
{
    size_t s = *i;
    const char *nl = memchr(p + s, '\n', len - s);
    size_t seg = nl != NULL ? (size_t)(nl - (p + s)) + 1 : len - s;
    if (seg > mp->opts.max_header_bytes - mp->hdr.len)
        return mp_fail(mp, UV_E2BIG, "a part's headers are over max_header_bytes");
    if (sq__buf_append(&mp->hdr, p + s, seg) != 0)
        return mp_fail(mp, UV_ENOMEM, "out of memory");
    *i = s + seg;
    if (nl == NULL)
        return 0;
    const char *line = mp->hdr.base + mp->line_start;
    size_t ll = mp->hdr.len - mp->line_start;
    if (ll < 2 || line[ll - 2] != '\r')
        return mp_fail(mp, UV_EPROTO, "a part header line not ended by CRLF");
    if (ll == 2)
        return end_headers(mp);
    if (!is_ows(line[0]) && ++mp->nlines > mp->opts.max_headers)
        return mp_fail(mp, UV_E2BIG, "more header lines in a part than max_headers");
    mp->line_start = mp->hdr.len;
    return 0;
}

ssize_t sq_multipart_feed(sq_multipart_t *mp, const char *buf, size_t len)
{
    if (mp->state == SQ__MP_ERROR)
        return mp->err;
    mp->paused = false;
    if (len > mp->opts.max_total_bytes - mp->total)
        return mp_fail(mp, UV_E2BIG, "the body is over max_total_bytes");
    size_t i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        char c = buf[i];
        switch (mp->state) {
        case SQ__MP_PREAMBLE:
        case SQ__MP_DATA:
            rc = scan(mp, buf, len, &i);
            break;
        case SQ__MP_AFTER:
        case SQ__MP_PADDING:
            if (c == '-' && mp->state == SQ__MP_AFTER) {
                mp->state = SQ__MP_DASH2;
            } else if (is_ows(c)) {
                mp->state = SQ__MP_PADDING;
                if (++mp->part_bytes > mp->opts.max_header_bytes) {
                    rc = mp_fail(mp, UV_E2BIG, "transport padding over max_header_bytes");
                    break;
                }
            } else if (c == '\r') {
                mp->state = SQ__MP_LF;
            } else {
                rc = not_a_boundary(mp);
                break;
            }
            i++;
            break;
        case SQ__MP_DASH2:
            if (c != '-') {
                rc = not_a_boundary(mp);
                break;
            }
            mp->state = SQ__MP_EPILOGUE; /* the close delimiter */
            i++;
            break;
        case SQ__MP_LF:
            if (c != '\n') {
                rc = not_a_boundary(mp);
                break;
            }
            i++;
            rc = begin_part(mp);
            break;
        case SQ__MP_HEADERS:
            rc = read_headers(mp, buf, len, &i);
            break;
        case SQ__MP_EPILOGUE:
            i = len;
            break;
        case SQ__MP_ERROR:
            return mp->err;
        }
    }
    if (rc < 0)
        return rc;
    mp->paused = rc > 0;
    mp->total += i;
    return (ssize_t)i;
}

int sq_multipart_finish(sq_multipart_t *mp)
{
    switch (mp->state) {
    case SQ__MP_ERROR:
        return mp->err;
    case SQ__MP_EPILOGUE:
        return 0;
    case SQ__MP_PREAMBLE:
        return mp_fail(mp, UV_EOF, "the body ended before its first delimiter");
    default:
        return mp_fail(mp, UV_EOF, "the body ended before the close delimiter");
    }
}
