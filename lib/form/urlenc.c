/* application/x-www-form-urlencoded, parsed as it arrives (WHATWG URL §5.1, "urlencoded
 * parsing"; the percent-encoding of RFC 3986 §2.1 with '+' for a space). A field is
 * decoded byte by byte as it comes, so an escape split across two feeds needs nothing
 * kept but its state, and the limits bound the decoded bytes held. */
#include <stdlib.h>

#include "core/abi.h"
#include "form/form_int.h"

static const sq_urlenc_opts_t urlenc_defaults = {
    .size = sizeof(sq_urlenc_opts_t),
    .max_fields = 1000,
    .max_name_bytes = 4096,
    .max_value_bytes = 1024 * 1024,
    .max_total_bytes = 2 * 1024 * 1024,
    .strict = false,
};

void sq_urlenc_opts_init_sized(sq_urlenc_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &urlenc_defaults);
}

int sq_urlenc_create(sq_urlenc_t **out, const sq_urlenc_opts_t *opts, sq_urlenc_field_cb cb,
                     void *data)
{
    *out = NULL;
    if (cb == NULL)
        return UV_EINVAL;
    sq_urlenc_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return UV_ENOMEM;
    p->opts = urlenc_defaults;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&p->opts, opts);
        if (rc != 0) {
            free(p);
            return rc;
        }
    }
    p->cb = cb;
    p->data = data;
    p->reason = "";
    *out = p;
    return 0;
}

void sq_urlenc_destroy(sq_urlenc_t *p)
{
    if (p == NULL)
        return;
    sq__buf_free(&p->name);
    sq__buf_free(&p->value);
    free(p);
}

const char *sq_urlenc_error(const sq_urlenc_t *p)
{
    return p->reason;
}

static int fail(sq_urlenc_t *p, int err, const char *reason)
{
    p->err = err;
    p->reason = reason;
    return err;
}

/* Appends decoded bytes to the name or the value, within its limit. */
static int put(sq_urlenc_t *p, const char *s, size_t n)
{
    p->started = true;
    sq__buf_t *b = p->part == SQ__UE_NAME ? &p->name : &p->value;
    size_t max = p->part == SQ__UE_NAME ? p->opts.max_name_bytes : p->opts.max_value_bytes;
    if (n > max - b->len)
        return fail(p, UV_E2BIG,
                    p->part == SQ__UE_NAME ? "a field name is over max_name_bytes"
                                           : "a field value is over max_value_bytes");
    /* one more for the NUL the callback sees */
    if (sq__buf_reserve(b, n + 1) != 0)
        return fail(p, UV_ENOMEM, "out of memory");
    sq__buf_append_unsafe(b, s, n);
    return 0;
}

/* An escape that turned out malformed: kept as written (WHATWG), or an error. */
static int pct_bad(sq_urlenc_t *p)
{
    unsigned char state = p->pct;
    p->pct = 0;
    if (p->opts.strict)
        return fail(p, UV_EINVAL, "a '%' not followed by two hexadecimal digits");
    char raw[2] = {'%', (char)p->pct_c};
    return put(p, raw, state == 2 ? 2 : 1);
}

/* A piece ended (at '&' or the end of the body): delivers it unless it was empty. Returns
 * 0, 1 (paused) or a negative code. */
static int end_piece(sq_urlenc_t *p)
{
    int rc;
    if (p->pct != 0 && (rc = pct_bad(p)) != 0)
        return rc;
    if (!p->started)
        return 0; /* "a&&b", a trailing '&', an empty body */
    if (p->fields >= p->opts.max_fields)
        return fail(p, UV_E2BIG, "more fields than max_fields");
    if (sq__buf_reserve(&p->name, 1) != 0 || sq__buf_reserve(&p->value, 1) != 0)
        return fail(p, UV_ENOMEM, "out of memory");
    p->name.base[p->name.len] = '\0';
    p->value.base[p->value.len] = '\0';
    p->fields++;
    rc = sq__form_cb_rc(p->cb(p, p->name.base, p->name.len, p->value.base, p->value.len, p->data));
    p->name.len = p->value.len = 0;
    p->part = SQ__UE_NAME;
    p->started = false;
    if (rc < 0)
        return fail(p, rc, "a callback stopped the parser");
    return rc;
}

static inline bool is_special(const sq_urlenc_t *p, unsigned char c)
{
    return c == '&' || c == '%' || c == '+' || (c == '=' && p->part == SQ__UE_NAME);
}

ssize_t sq_urlenc_feed(sq_urlenc_t *p, const char *buf, size_t len)
{
    if (p->err != 0)
        return p->err;
    if (len > p->opts.max_total_bytes - p->total)
        return fail(p, UV_E2BIG, "the body is over max_total_bytes");
    size_t i = 0;
    int rc = 0;
    while (i < len) {
        unsigned char c = (unsigned char)buf[i];
        if (p->pct == 1) {
            if (sq__hexval(c) < 0) {
                if ((rc = pct_bad(p)) != 0)
                    break;
                continue; /* c is read again, as itself */
            }
            p->pct = 2;
            p->pct_c = c;
            i++;
            continue;
        }
        if (p->pct == 2) {
            int lo = sq__hexval(c);
            if (lo < 0) {
                if ((rc = pct_bad(p)) != 0)
                    break;
                continue;
            }
            char b = (char)(sq__hexval(p->pct_c) << 4 | lo);
            p->pct = 0;
            i++;
            if ((rc = put(p, &b, 1)) != 0)
                break;
            continue;
        }
        switch (c) {
        case '&':
            i++;
            rc = end_piece(p);
            break;
        case '%':
            p->started = true;
            p->pct = 1;
            i++;
            break;
        case '+':
            i++;
            rc = put(p, " ", 1);
            break;
        case '=':
            if (p->part == SQ__UE_NAME) {
                p->started = true;
                p->part = SQ__UE_VALUE;
                i++;
                break;
            }
            /* a '=' in a value is itself */
            __attribute__((fallthrough));
        default: {
            size_t j = i + 1;
            while (j < len && !is_special(p, (unsigned char)buf[j]))
                j++;
            rc = put(p, buf + i, j - i);
            i = j;
        }
        }
        if (rc != 0)
            break;
    }
    if (rc < 0)
        return rc;
    p->total += i;
    return (ssize_t)i;
}

int sq_urlenc_finish(sq_urlenc_t *p)
{
    if (p->err != 0)
        return p->err;
    int rc = end_piece(p);
    return rc < 0 ? rc : 0;
}

/* ---- the whole body into a JSON object ---- */

/* The next sequence of s[0..n) (n > 0): its length, and in *ok whether it is valid
 * UTF-8 (RFC 3629 §4). An invalid one is a maximal subpart (Unicode §3.9): the lead byte
 * and the continuation bytes that still could have completed it. */
static size_t utf8_next(const unsigned char *s, size_t n, bool *ok)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
    size_t need;
    *ok = true;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong form */
        else if (c == 0xed)
            hi = 0x9f; /* no surrogate */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* nothing past U+10FFFF */
    } else {
        *ok = false;
        return 1;
    }
    size_t k = 1;
    if (n > 1 && s[1] >= lo && s[1] <= hi) {
        k = 2;
        while (k < need && k < n && (s[k] & 0xc0) == 0x80)
            k++;
    }
    *ok = k == need;
    return k;
}

/* s[0..n) as UTF-8 into b, each maximal invalid subpart a U+FFFD (WHATWG Encoding, "UTF-8
 * decode without BOM"). Returns 0 or UV_ENOMEM. */
static int utf8_fix(sq__buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    b->len = 0;
    if (sq__buf_reserve(b, n + 1) != 0)
        return UV_ENOMEM;
    for (size_t i = 0; i < n;) {
        bool ok;
        size_t k = utf8_next(u + i, n - i, &ok);
        if (sq__buf_append(b, ok ? (const char *)u + i : "\xef\xbf\xbd", ok ? k : 3) != 0)
            return UV_ENOMEM;
        i += k;
    }
    return 0;
}

typedef struct json_ctx {
    json_t *obj;
    sq__buf_t key, val;
} json_ctx_t;

static int json_field(sq_urlenc_t *p, const char *name, size_t name_len, const char *value,
                      size_t value_len, void *data)
{
    json_ctx_t *ctx = data;
    if (utf8_fix(&ctx->key, name, name_len) != 0 || utf8_fix(&ctx->val, value, value_len) != 0)
        return UV_ENOMEM;
    json_t *s = json_stringn_nocheck(ctx->val.base, ctx->val.len);
    if (s == NULL || json_object_setn_new_nocheck(ctx->obj, ctx->key.base, ctx->key.len, s) != 0)
        return UV_ENOMEM; /* setn_new steals s even when it fails */
    return 0;
}

int sq_urlenc_parse_json(const char *buf, size_t len, const sq_urlenc_opts_t *opts, json_t **out)
{
    json_ctx_t ctx = {0};
    sq_urlenc_t *p;
    *out = NULL;
    ctx.obj = json_object();
    if (ctx.obj == NULL)
        return UV_ENOMEM;
    int rc = sq_urlenc_create(&p, opts, json_field, &ctx);
    if (rc != 0)
        goto free_obj;
    ssize_t n = sq_urlenc_feed(p, buf, len);
    rc = n < 0 ? (int)n : sq_urlenc_finish(p);
    sq_urlenc_destroy(p);
    if (rc != 0)
        goto free_obj;
    sq__buf_free(&ctx.key);
    sq__buf_free(&ctx.val);
    *out = ctx.obj;
    return 0;

free_obj:
    sq__buf_free(&ctx.key);
    sq__buf_free(&ctx.val);
    json_decref(ctx.obj);
    return rc;
}
