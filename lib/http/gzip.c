/* gzip responses (include/squall/gzip.h): an app's settings hung on each exchange by a
 * before hook, and the few entries response.c calls when an exchange has them. Whole
 * bodies are compressed in one call; a streamed body keeps a deflate state flushed at each
 * write. Each entry hands the compressed bytes back to the public call it came from,
 * with x->gz cleared for that call, so framing, HEAD and a client gone are decided in
 * one place (response.c). */
#include <limits.h>
#include <stdlib.h>
#include <strings.h>

#include <zlib.h>

#include "core/abi.h"
#include "http/h1_int.h"

typedef struct gz_cfg {
    struct sq__gz base;       /* cfg_ops */
    size_t min_bytes;
    int level;
    int streams;
    char **types;             /* lower-cased, NULL-terminated */
} gz_cfg_t;

typedef struct gz_stream {
    struct sq__gz base;       /* stream_ops */
    z_stream z;
} gz_stream_t;

/* A streamed body's window and hash: 8 KiB and 2^12 entries, about 64 KiB of state
 * (zlib's formula: 2^(wbits+2) + 2^(memlevel+9)) instead of 256 KiB: an event stream is
 * held open for a long time, many at once, and repeats itself over short distances. */
#define STREAM_WBITS 13
#define STREAM_MEMLEVEL 6
#define GZIP_WRAP 16 /* windowBits + 16: a gzip header and trailer (zlib.h) */

static const sq_gzip_opts_t gzip_defaults = {
    .size = sizeof(sq_gzip_opts_t), .min_bytes = 1024, .level = 6, .streams = 1};

static const char *const default_types[] = {
    "text/*",          "application/json", "application/*+json", "application/javascript",
    "application/xml", "application/*+xml", "image/svg+xml",     NULL};

void sq_gzip_opts_init_sized(sq_gzip_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &gzip_defaults);
}

static void cfg_free(void *p)
{
    gz_cfg_t *c = p;
    for (size_t i = 0; c->types != NULL && c->types[i] != NULL; i++)
        free(c->types[i]);
    free(c->types);
    free(c);
}

/* A type pattern: type "/" (subtype | "*" | "*+" suffix), token characters. */
static bool type_ok(const char *t)
{
    const char *slash = strchr(t, '/');
    if (slash == NULL || slash == t || slash[1] == '\0')
        return false;
    for (const char *p = t; *p; p++)
        if (p != slash && !sq__field_ok((char[]){*p, 0}, true))
            return false;
    return true;
}

static const sq__gz_ops_t cfg_ops, stream_ops;

static int gzip_before(sq_req_t *req, sq_res_t *res, void *data)
{
    req->gz = &((gz_cfg_t *)data)->base; /* the nearest app's: a sub-app's hook runs after its parent's */
    return SQ_NEXT;
}

int sq_app_gzip(sq_app_t *app, const sq_gzip_opts_t *opts)
{
    sq_gzip_opts_t o = gzip_defaults;
    if (app == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (o.level < 1 || o.level > 9)
        return UV_EINVAL;
    const char *const *types = o.types ? o.types : default_types;
    size_t n = 0;
    while (types[n] != NULL)
        if (!type_ok(types[n++]))
            return UV_EINVAL;
    gz_cfg_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UV_ENOMEM;
    c->base.ops = &cfg_ops;
    c->min_bytes = o.min_bytes;
    c->level = o.level;
    c->streams = o.streams != 0;
    c->types = calloc(n + 1, sizeof(*c->types));
    if (c->types == NULL)
        goto fail_cfg;
    for (size_t i = 0; i < n; i++) {
        if ((c->types[i] = strdup(types[i])) == NULL)
            goto fail_cfg;
        for (char *p = c->types[i]; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    int rc = sq__app_keep(app, c, cfg_free);
    if (rc != 0)
        return rc; /* sq__app_keep freed it */
    return sq_app_before(app, gzip_before, c);

fail_cfg:
    cfg_free(c);
    return UV_ENOMEM;
}

/* ---- what may be compressed ---- */

/* Does the media type `ct` (parameters after ';' ignored, any case) match pattern `pat`
 * (lower case)? */
static bool type_match(const char *pat, const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    const char *star = strchr(pat, '*');
    if (star == NULL)
        return strlen(pat) == n && strncasecmp(pat, ct, n) == 0;
    size_t pre = (size_t)(star - pat); /* "text/" or "application/" */
    if (n < pre || strncasecmp(pat, ct, pre) != 0 || memchr(ct + pre, '/', n - pre))
        return false;
    const char *suffix = star + 1; /* "" (any subtype) or "+json" */
    size_t sl = strlen(suffix);
    return n - pre > sl && strncasecmp(ct + n - sl, suffix, sl) == 0;
}

/* Is a header named `name` among the response's own (x->rh: "Name: value\r\n" lines)? */
static bool rh_has(const sq__exch_t *x, const char *name)
{
    size_t nl = strlen(name);
    const char *p = x->rh.base, *end = p + x->rh.len;
    while (p < end) {
        if ((size_t)(end - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0)
            return true;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        p = eol ? eol + 1 : end;
    }
    return false;
}

/* A response that may be compressed, whatever the client says (and so varies). */
static bool eligible(const sq__exch_t *x, const gz_cfg_t *c, int status, const char *ctype)
{
    if (ctype == NULL || status < 200 || status == 204 || status == 304 || status == 206)
        return false;
    if (x->rh.len > 0 && (rh_has(x, "Content-Encoding") || rh_has(x, "Content-Range")))
        return false;
    for (size_t i = 0; c->types[i] != NULL; i++)
        if (type_match(c->types[i], ctype))
            return true;
    return false;
}

/* A qvalue (RFC 9110 §12.4.2) in thousandths, or -1 when malformed. */
static int parse_q(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

enum { ACC_NO = 0, ACC_YES = 1, ACC_FORCE = 2 };

/* What the request's Accept-Encoding fields (all of them: one list, RFC 9110 §5.3) say
 * of gzip: ACC_NO, ACC_YES, or ACC_FORCE when identity is refused outright. */
static int accepts_gzip(const sq__exch_t *x)
{
    int q_gzip = -1, q_identity = -1, q_star = -1; /* -1: not named */
    bool seen = false;
    size_t nh = sq_req_header_count(x);
    for (size_t i = 0; i < nh; i++) {
        const char *name, *v;
        sq_req_header_at(x, i, &name, &v);
        if (strcasecmp(name, "Accept-Encoding") != 0)
            continue;
        seen = true;
        while (*v) {
            v += strspn(v, " \t,");
            size_t el = strcspn(v, ",");
            if (el == 0)
                break;
            size_t tl = strcspn(v, ";, \t");
            int q = 1000;
            const char *w = v + tl, *end = v + el;
            while (w < end) { /* parameters: only the weight means something */
                w += strspn(w, " \t;");
                if (w >= end)
                    break;
                size_t pl = strcspn(w, ";,");
                if (w + pl > end)
                    pl = (size_t)(end - w);
                if (pl >= 2 && (w[0] | 0x20) == 'q' && w[1] == '=') {
                    size_t ql = pl - 2;
                    while (ql > 0 && (w[2 + ql - 1] == ' ' || w[2 + ql - 1] == '\t'))
                        ql--;
                    q = parse_q(w + 2, ql);
                    if (q < 0)
                        q = 0; /* a weight we cannot read: not acceptable */
                }
                w += pl;
            }
            if ((tl == 4 && strncasecmp(v, "gzip", 4) == 0) ||
                (tl == 6 && strncasecmp(v, "x-gzip", 6) == 0))
                q_gzip = q > q_gzip ? q : q_gzip;
            else if (tl == 8 && strncasecmp(v, "identity", 8) == 0)
                q_identity = q;
            else if (tl == 1 && v[0] == '*')
                q_star = q;
            v = end;
        }
    }
    if (!seen)
        return ACC_NO; /* no preference stated: RFC 9110 §12.5.3 allows any, but a client
                          that did not ask may not decode it */
    if (q_gzip < 0)
        q_gzip = q_star < 0 ? 0 : q_star;
    if (q_identity < 0)
        q_identity = q_star; /* unnamed, identity is acceptable unless `*;q=0` refuses it
                                (§12.5.3), with no preference over gzip */
    if (q_gzip == 0 || q_gzip < q_identity)
        return ACC_NO;
    return q_identity == 0 ? ACC_FORCE : ACC_YES;
}

/* ---- whole bodies ---- */

/* The smallest window that holds a body of len bytes (zlib takes 9-15 bits), and a hash
 * table to match: less state to set up for the small bodies most answers are. */
static int wbits_for(size_t len)
{
    int b = 9;
    while (b < 15 && ((size_t)1 << b) < len)
        b++;
    return b;
}

static void out_free(void *p, void *data)
{
    free(p);
}

/* Compresses len bytes (at most UINT_MAX / 2: zlib counts in uInt) into a malloc'd
 * buffer; NULL when out of memory. */
static unsigned char *deflate_all(const gz_cfg_t *c, const void *body, size_t len,
                                  size_t *out_len)
{
    z_stream z = {0};
    int wb = wbits_for(len);
    if (deflateInit2(&z, c->level, Z_DEFLATED, wb + GZIP_WRAP, wb >= 14 ? 8 : wb - 6,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    uLong cap = deflateBound(&z, (uLong)len);
    unsigned char *out = malloc(cap);
    if (out == NULL)
        goto fail_init;
    z.next_in = (Bytef *)body;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) /* deflateBound's room: one call ends it */
        goto fail_out;
    *out_len = (size_t)z.total_out;
    deflateEnd(&z);
    return out;

fail_out:
    free(out);
fail_init:
    deflateEnd(&z);
    return NULL;
}

/* The checks a finishing call makes before it sends anything: when one fails the plain
 * call answers (UV_EINVAL, SQ_EALREADY_SENT, UV_ECANCELED) and the settings stay. */
static bool may_send(const sq__exch_t *x, int status, const char *ctype)
{
    return sq__status_is_final(status) && sq__field_value_ok(ctype) &&
           !(x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT | SQ__XF_IN_AFTER)) &&
           x->ops->open(x);
}

static int gz_send(sq__exch_t *x, int status, const char *ctype, const void *body, size_t len,
                   sq_free_cb free_cb, void *free_data)
{
    const gz_cfg_t *c = (const gz_cfg_t *)x->gz;
    if (!may_send(x, status, ctype) || !eligible(x, c, status, ctype))
        return 1;
    x->gz = NULL; /* the call below takes the plain path */
    if (sq_res_header(&x->res, "Vary", "Accept-Encoding") != 0)
        return 1;
    int acc = accepts_gzip(x);
    if (acc == ACC_NO || (acc == ACC_YES && len < c->min_bytes) || len == 0 ||
        len > (size_t)UINT_MAX / 2)
        return 1;
    size_t zlen;
    unsigned char *z = deflate_all(c, body, len, &zlen);
    if (z == NULL)
        return 1; /* out of memory for the state: the body goes as it is */
    if (zlen >= len && acc != ACC_FORCE) {
        free(z); /* it did not get smaller */
        return 1;
    }
    if (sq_res_header(&x->res, "Content-Encoding", "gzip") != 0) {
        free(z);
        return 1;
    }
    if (free_cb != NULL)
        free_cb((void *)body, free_data); /* sq_res_send_ref's: nothing more reads it */
    return sq_res_send_ref(&x->res, status, ctype, z, zlen, out_free, NULL);
}

/* ---- streamed bodies ---- */

static int gz_start(sq__exch_t *x, int status, const char *ctype)
{
    const gz_cfg_t *c = (const gz_cfg_t *)x->gz;
    if (!may_send(x, status, ctype))
        return 1;
    x->gz = NULL; /* whatever is decided, the plain path from here on... */
    if (!c->streams || !eligible(x, c, status, ctype))
        return 1;
    if (sq_res_header(&x->res, "Vary", "Accept-Encoding") != 0 || accepts_gzip(x) == ACC_NO)
        return 1;
    if (x->flags & SQ__XF_HEAD) { /* the headers GET would get; no body to compress */
        sq_res_header(&x->res, "Content-Encoding", "gzip");
        return 1;
    }
    gz_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    s->base.ops = &stream_ops;
    if (deflateInit2(&s->z, c->level, Z_DEFLATED, STREAM_WBITS + GZIP_WRAP, STREAM_MEMLEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        goto fail_stream;
    if (sq_res_header(&x->res, "Content-Encoding", "gzip") != 0)
        goto fail_init;
    int rc = sq_res_start(&x->res, status, ctype);
    x->gz = &s->base; /* ...but sq_res_write and sq_res_end: kept until sq_res_end */
    return rc;

fail_init:
    deflateEnd(&s->z);
fail_stream:
    free(s);
    return 1;
}

/* Runs the stream over len bytes with `flush`; the output in a malloc'd buffer (NULL and
 * *out_len 0 when out of memory or zlib failed). */
static unsigned char *deflate_step(gz_stream_t *s, const void *data, size_t len, int flush,
                                   size_t *out_len)
{
    size_t cap = len + len / 8 + 64, done = 0;
    unsigned char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    const unsigned char *in = data;
    size_t left = len;
    for (;;) {
        uInt slice = left > UINT_MAX ? UINT_MAX : (uInt)left;
        s->z.next_in = (Bytef *)in;
        s->z.avail_in = slice;
        size_t room = cap - done;
        s->z.next_out = out + done;
        s->z.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        uInt before_out = s->z.avail_out;
        int zrc = deflate(&s->z, left > slice ? Z_NO_FLUSH : flush);
        done += before_out - s->z.avail_out;
        in += slice - s->z.avail_in;
        left -= slice - s->z.avail_in;
        if (zrc == Z_STREAM_END)
            break;
        if (zrc != Z_OK && zrc != Z_BUF_ERROR)
            goto fail;
        if (left == 0 && s->z.avail_out != 0)
            break; /* all in, all flushed */
        if (done == cap) {
            unsigned char *bigger = realloc(out, cap * 2);
            if (bigger == NULL)
                goto fail;
            out = bigger;
            cap *= 2;
        }
    }
    *out_len = done;
    return out;

fail:
    free(out);
    return NULL;
}

static int gz_write(sq__exch_t *x, const void *data, size_t len, sq_free_cb free_cb,
                    void *free_data, sq_res_write_cb cb, void *cb_data)
{
    gz_stream_t *s = (gz_stream_t *)x->gz;
    if (len == 0 || (x->flags & SQ__XF_HEAD) ||
        !(x->flags & SQ__XF_STREAMING) || (x->flags & SQ__XF_FINISHED) || !x->ops->open(x))
        return 1; /* the plain call answers (a HEAD's bytes are dropped there) */
    size_t zlen = 0;
    unsigned char *z = deflate_step(s, data, len, Z_SYNC_FLUSH, &zlen);
    if (free_cb != SQ__WRITE_COPY && free_cb != NULL)
        free_cb((void *)data, free_data); /* compressed: the caller's bytes are done with */
    x->gz = NULL;
    int rc = z != NULL ? sq_res_write_ref(&x->res, z, zlen, out_free, NULL, cb, cb_data)
                       : UV_ENOMEM;
    x->gz = &s->base;
    if (z == NULL) { /* as a plain write out of memory: the connection closes */
        x->ops->fail(x);
    }
    return rc;
}

static void gz_end(sq__exch_t *x)
{
    gz_stream_t *s = (gz_stream_t *)x->gz;
    x->gz = NULL;
    if ((x->flags & SQ__XF_STREAMING) && !(x->flags & (SQ__XF_HEAD | SQ__XF_FINISHED)) &&
        x->ops->open(x)) {
        size_t zlen = 0;
        unsigned char *z = deflate_step(s, NULL, 0, Z_FINISH, &zlen);
        if (z != NULL)
            sq_res_write_ref(&x->res, z, zlen, out_free, NULL, NULL, NULL); /* closes the
                                                  connection itself when out of memory */
        else
            x->ops->fail(x); /* a body without its end must not look whole */
    }
    deflateEnd(&s->z);
    free(s); /* sq_res_end goes on: it reports what became of the response */
}

static void stream_drop(sq__exch_t *x)
{
    gz_stream_t *s = (gz_stream_t *)x->gz;
    x->gz = NULL;
    deflateEnd(&s->z);
    free(s);
}

/* What the other kind does not do: the plain path. */
static int pass_send(sq__exch_t *x, int status, const char *ctype, const void *body,
                     size_t len, sq_free_cb free_cb, void *free_data)
{
    return 1;
}
static int pass_start(sq__exch_t *x, int status, const char *ctype)
{
    return 1;
}
static int pass_write(sq__exch_t *x, const void *data, size_t len, sq_free_cb free_cb,
                      void *free_data, sq_res_write_cb cb, void *cb_data)
{
    return 1;
}
static void cfg_end(sq__exch_t *x)
{
}
static void cfg_drop(sq__exch_t *x)
{
    x->gz = NULL; /* the app's: nothing to free */
}

/* An app's settings: a response not yet begun. */
static const sq__gz_ops_t cfg_ops = {.send = gz_send,
                                     .start = gz_start,
                                     .write = pass_write,
                                     .end = cfg_end,
                                     .drop = cfg_drop};
/* A streamed body being compressed. */
static const sq__gz_ops_t stream_ops = {.send = pass_send,
                                        .start = pass_start,
                                        .write = gz_write,
                                        .end = gz_end,
                                        .drop = stream_drop};
