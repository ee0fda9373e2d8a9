/* Request accessors: everything a handler reads, stored in the exchange. */
#include <stdlib.h>
#include <strings.h>

#include <jansson.h>

#include "http/h1_int.h"
#include "server/server_int.h"

void sq__exch_reset(sq__exch_t *x)
{
    x->flags &= SQ__XF_HOLD_CONN | SQ__XF_HOLD_HANDLER;
    x->status = 0;
    x->method = SQ_METHOD_OTHER;
    x->llmethod = 0;
    x->http_minor = 0;
    x->host_count = 0;
    x->err_status = 0;
    x->hb.len = 0;
    x->hidx.len = 0;
    x->target_len = 0;
    x->cur_off = 0;
    x->gap_n = 0;
    x->gap_from = NULL;
    x->header_bytes = 0;
    x->body.len = 0;
    x->rh.len = 0;
    x->path = NULL;
    x->query = NULL;
    x->qparams = NULL;
    x->nqparams = 0;
    x->verdict = SQ__MATCH_NONE;
    memset(&x->match, 0, offsetof(sq__match_result_t, params));
    x->user_data = NULL;
    x->input = NULL;
    x->hook_i = 0;
    x->id = 0;
    x->body_cb = NULL;
    x->body_ud = NULL;
    x->body_seen = 0;
    x->body_err = 0;
    json_decref(x->in_path);
    json_decref(x->in_query);
    json_decref(x->in_body);
    x->in_path = x->in_query = x->in_body = NULL;
    if (x->arena.more != NULL) {
        sq__arena_reset(&x->arena);
    } else { /* only the inline block was used (most requests): back to its start */
        x->arena.cur = x->arena.inline_base;
        x->arena.end = x->arena.inline_base + x->arena.inline_cap;
    }
    if (x->gz != NULL)
        x->gz->ops->drop(x); /* gzip (gzip.c) */
    /* A request that needed a lot of memory does not keep it while pooled. */
    if (x->body.cap > 64 * 1024)
        sq__buf_free(&x->body);
    if (x->hb.cap > 16 * 1024)
        sq__buf_free(&x->hb);
}

const char *sq_req_method(const sq_req_t *req)
{
    if (!(req->flags & SQ__XF_HEAD_DONE))
        return ""; /* squall's answer to a head that never ended (400, 408, 431) */
    return llhttp_method_name((llhttp_method_t)req->llmethod);
}

sq_method_t sq_req_method_id(const sq_req_t *req)
{
    return req->method;
}

const char *sq_req_target(const sq_req_t *req)
{
    return req->hb.base;
}

const char *sq_req_path(sq_req_t *req)
{
    if (!(req->flags & SQ__XF_PATH_DECODED) && req->path != NULL) {
        /* decoded in place, once: decoding never lengthens; a bad escape stays raw */
        req->flags |= SQ__XF_PATH_DECODED;
        char *p = (char *)req->path;
        size_t n = strlen(p);
        char *tmp = strchr(p, '%') ? sq__arena_alloc(&req->arena, n + 1) : NULL;
        if (tmp != NULL && sq__pct_decode(tmp, p, n, 0) >= 0)
            req->path = tmp;
    }
    return req->path;
}

const char *sq_req_query_string(const sq_req_t *req)
{
    return req->query ? req->query : "";
}

int sq_req_version_minor(const sq_req_t *req)
{
    return req->http_minor;
}

const char *sq_req_header(const sq_req_t *req, const char *name)
{
    const sq__hdr_t *h = (const sq__hdr_t *)req->hidx.base;
    size_t n = req->hidx.len / sizeof(*h);
    size_t nlen = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == nlen && strcasecmp(req->hb.base + h[i].name_off, name) == 0)
            return req->hb.base + h[i].val_off;
    return NULL;
}

size_t sq_req_header_count(const sq_req_t *req)
{
    return req->hidx.len / sizeof(sq__hdr_t);
}

int sq_req_header_at(const sq_req_t *req, size_t i, const char **name, const char **value)
{
    const sq__hdr_t *h = (const sq__hdr_t *)req->hidx.base;
    if (i >= sq_req_header_count(req))
        return UV_EINVAL;
    *name = req->hb.base + h[i].name_off;
    *value = req->hb.base + h[i].val_off;
    return 0;
}

/* application/x-www-form-urlencoded pairs of the query, decoded once into the arena. */
static void parse_query(sq_req_t *req)
{
    req->flags |= SQ__XF_QUERY_PARSED;
    const char *q = req->query;
    if (q == NULL || *q == '\0')
        return;
    unsigned n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    req->qparams = sq__arena_alloc(&req->arena, n * sizeof(sq__qparam_t));
    if (req->qparams == NULL)
        return;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            size_t vlen = eq ? len - klen - 1 : 0;
            char *k = sq__arena_alloc(&req->arena, klen + 1);
            char *v = sq__arena_alloc(&req->arena, vlen + 1);
            if (k == NULL || v == NULL)
                return;
            /* leniently: a pair with a bad escape is still the first of its name, so
             * `q=%zz&q=ok` gives "%zz", not "ok" (test: regress_http/query_bad_escape_*) */
            sq__pct_decode(k, p, klen, SQ__PCT_PLUS | SQ__PCT_LENIENT);
            sq__pct_decode(v, eq ? eq + 1 : "", vlen, SQ__PCT_PLUS | SQ__PCT_LENIENT);
            req->qparams[req->nqparams].name = k;
            req->qparams[req->nqparams].value = v;
            req->nqparams++;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
}

const char *sq_req_query(sq_req_t *req, const char *name)
{
    if (!(req->flags & SQ__XF_QUERY_PARSED))
        parse_query(req);
    for (unsigned i = 0; i < req->nqparams; i++)
        if (strcmp(req->qparams[i].name, name) == 0)
            return req->qparams[i].value;
    return NULL;
}

const char *sq__req_query_last(sq_req_t *req, const char *name)
{
    if (!(req->flags & SQ__XF_QUERY_PARSED))
        parse_query(req);
    for (unsigned i = req->nqparams; i-- > 0;)
        if (strcmp(req->qparams[i].name, name) == 0)
            return req->qparams[i].value;
    return NULL;
}

static const sq__param_t *find_param(const sq_req_t *req, const char *name)
{
    for (unsigned i = 0; i < req->match.nparams; i++)
        if (strcmp(req->match.params[i].name, name) == 0)
            return &req->match.params[i];
    return NULL;
}

const char *sq_req_param(const sq_req_t *req, const char *name)
{
    const sq__param_t *p = find_param(req, name);
    return p ? p->value : NULL;
}

int sq_req_param_int(const sq_req_t *req, const char *name, int64_t *out)
{
    const sq__param_t *p = find_param(req, name);
    if (p == NULL || !p->is_int)
        return UV_ENOENT;
    *out = p->ival;
    return 0;
}

const char *sq_req_body(const sq_req_t *req, size_t *len)
{
    if (len != NULL)
        *len = req->body.len;
    return req->body.base ? req->body.base : "";
}

json_t *sq_req_json(const sq_req_t *req, void *error)
{
    return json_loadb(req->body.base ? req->body.base : "", req->body.len, 0,
                      (json_error_t *)error);
}

int sq_req_peer(const sq_req_t *req, char *buf, size_t len)
{
    if (req->conn == NULL)
        return UV_ECANCELED;
    return sq__conn_io(req->conn)->peer(req->conn, buf, len);
}

int sq_req_is_aborted(const sq_req_t *req)
{
    return req->conn == NULL && !(req->flags & SQ__XF_FINISHED);
}

void sq_req_set_data(sq_req_t *req, void *data)
{
    req->user_data = data;
}

void *sq_req_data(const sq_req_t *req)
{
    return req->user_data;
}

uv_loop_t *sq_req_loop(const sq_req_t *req)
{
    return req->srv->loop;
}
