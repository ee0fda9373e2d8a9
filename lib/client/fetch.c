/* A fetch of the HTTP client: the URL and what it may hold, the request's checks and
 * serialization, the end of a fetch (once), redirects, cancel and the promise form. */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "client/client_int.h"

/* ---- what may go into the request (RFC 3986 §2-3, RFC 9110 §5.6.2: lib/core/uri.c) ---- */

static bool is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!sq__is_tchar((unsigned char)*s))
            return false;
    return true;
}

typedef sq__url_t cl_url_t;

/* "http://host[:port][/path][?query]" split and checked (lib/core/uri.c); a host name is
 * at most 255 bytes (RFC 1035 §2.3.4). */
static int url_parse(const char *url, cl_url_t *u)
{
    int rc = sq__url_parse(url, "http://", "https://", u);
    if (rc == 0 && strlen(u->host) > 255) {
        sq__url_free(u);
        return UV_EINVAL;
    }
    return rc;
}

static void fetch_set_url(sq_fetch_t *f, cl_url_t *u)
{
    free(f->host);
    free(f->hostport);
    free(f->target);
    f->host = u->host;
    f->hostport = u->hostport;
    f->target = u->target;
    memcpy(f->port, u->port, sizeof(f->port));
    memset(u, 0, sizeof(*u));
}

/* ---- the request ---- */

static const char *const reserved_headers[] = {"host", "content-length", "transfer-encoding",
                                               "connection"};

/* RFC 9110 §5.5: a field value is visible characters, obs-text, spaces and tabs — no
 * CR or LF that would end the line, no other control character (NUL ends the string). */
static bool value_ok(const char *v)
{
    if (v == NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* The caller's header lines, checked, and User-Agent unless one is there. */
static int build_extra(sq_fetch_t *f, const sq_fetch_req_t *req, const char *ua)
{
    sq__buf_t b = {0};
    bool has_ua = false;
    if (req->nheaders > 0 && req->headers == NULL)
        return UV_EINVAL;
    for (size_t i = 0; i < req->nheaders; i++) {
        const sq_header_t *h = &req->headers[i];
        if (!is_token(h->name) || !value_ok(h->value))
            goto invalid;
        for (size_t k = 0; k < SQ__ARRAY_SIZE(reserved_headers); k++)
            if (strcasecmp(h->name, reserved_headers[k]) == 0)
                goto invalid;
        has_ua |= strcasecmp(h->name, "user-agent") == 0;
        if (sq__buf_append(&b, h->name, strlen(h->name)) || sq__buf_append(&b, ": ", 2) ||
            sq__buf_append(&b, h->value, strlen(h->value)) || sq__buf_append(&b, "\r\n", 2))
            goto nomem;
    }
    if (!has_ua && ua != NULL && *ua != '\0' &&
        (sq__buf_append(&b, "User-Agent: ", 12) || sq__buf_append(&b, ua, strlen(ua)) ||
         sq__buf_append(&b, "\r\n", 2)))
        goto nomem;
    if (sq__buf_append(&b, "", 1))
        goto nomem;
    f->extra = b.base;
    return 0;

invalid:
    sq__buf_free(&b);
    return UV_EINVAL;
nomem:
    sq__buf_free(&b);
    return UV_ENOMEM;
}

static bool method_is(const sq_fetch_t *f, const char *m)
{
    return strcmp(f->method, m) == 0;
}

/* RFC 9110 §9.2.2 */
bool sq__fetch_idempotent(const sq_fetch_t *f)
{
    return method_is(f, "GET") || method_is(f, "HEAD") || method_is(f, "PUT") ||
           method_is(f, "DELETE") || method_is(f, "OPTIONS") || method_is(f, "TRACE");
}

/* The request as it goes on the wire: head and body (RFC 9112 §3, §6.2). Every string in
 * it was checked by sq_fetch (or by the redirect that set it). */
int sq__fetch_head(const sq_fetch_t *f, sq__buf_t *b)
{
    char cl[48] = "";
    /* RFC 9110 §8.6: a body's length; 0 for a method that is expected to have one */
    if (f->body_len > 0 || method_is(f, "POST") || method_is(f, "PUT") || method_is(f, "PATCH"))
        snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", f->body_len);
    const char *parts[] = {f->method, " ", f->target, " HTTP/1.1\r\nHost: ", f->hostport, "\r\n",
                           f->extra,  cl,  "\r\n"};
    for (size_t i = 0; i < SQ__ARRAY_SIZE(parts); i++)
        if (sq__buf_append(b, parts[i], strlen(parts[i])))
            return UV_ENOMEM;
    return f->body_len > 0 && sq__buf_append(b, f->body, f->body_len) ? UV_ENOMEM : 0;
}

/* ---- the end of a fetch ---- */

/* Ends a fetch, once: off its queue or connection (closed: the exchange on it cannot
 * go on), and its callback due from the loop. */
void sq__fetch_finish(sq_fetch_t *f, int status)
{
    if (f->state == CL_F_DONE)
        return;
    sq_client_t *c = f->client;
    if (f->state == CL_F_QUEUED) {
        sq__list_remove(&f->link);
        c->stats.queued--;
    }
    sq__list_remove(&f->all);
    f->state = CL_F_DONE;
    f->status = status;
    sq__list_insert_tail(&c->done, &f->link);
    sq__cl_due(c);
    cl_conn_t *conn = f->conn;
    if (conn != NULL) {
        f->conn = NULL;
        conn->fetch = NULL;
        sq__clconn_close(conn);
    }
}

void sq__fetch_free(sq_fetch_t *f)
{
    sq_response_free(f->res);
    free(f->method);
    free(f->host);
    free(f->hostport);
    free(f->target);
    free(f->extra);
    free(f->body);
    free(f);
}

/* The Location of a redirect as an absolute http:// or https:// URL (RFC 9110 §10.2.2,
 * resolved as RFC 3986 §5.2 has it, without removing dot segments: a relative one keeps
 * the scheme of the request), or NULL. */
static char *resolve_location(const sq_fetch_t *f, const char *loc)
{
    size_t n = strcspn(loc, "#"); /* a fragment is the client's own */
    char *out = NULL;
    const char *http = f->pool->tls ? "https" : "http";
    int rc;
    if (n == 0)
        return NULL;
    if (strncasecmp(loc, "http://", 7) == 0 || strncasecmp(loc, "https://", 8) == 0)
        rc = asprintf(&out, "%.*s", (int)n, loc);
    else if (loc[0] == '/' && loc[1] == '/')
        rc = asprintf(&out, "%s:%.*s", http, (int)n, loc);
    else if (loc[0] == '/')
        rc = asprintf(&out, "%s://%s%.*s", http, f->hostport, (int)n, loc);
    else if (loc[0] == '?')
        rc = asprintf(&out, "%s://%s%.*s%.*s", http, f->hostport, (int)strcspn(f->target, "?"),
                      f->target, (int)n, loc);
    else if (strchr(loc, ':') != NULL && strcspn(loc, ":") < strcspn(loc, "/?"))
        return NULL; /* another scheme */
    else {
        size_t plen = strcspn(f->target, "?");
        while (plen > 0 && f->target[plen - 1] != '/')
            plen--;
        rc = asprintf(&out, "%s://%s%.*s%.*s", http, f->hostport, (int)plen, f->target, (int)n,
                      loc);
    }
    return rc < 0 ? NULL : out;
}

/* Drops Authorization, Proxy-Authorization and Cookie from the caller's header lines
 * (f->extra, "Name: value\r\n"...), as browsers (the Fetch standard, §4.4 HTTP-redirect
 * fetch) and curl do when a redirect leaves the origin. */
static void drop_credentials(sq_fetch_t *f)
{
    static const char *const secret[] = {"authorization:", "proxy-authorization:", "cookie:"};
    char *in = f->extra, *out = f->extra;
    while (in != NULL && *in != '\0') {
        char *eol = strstr(in, "\r\n");
        size_t n = eol != NULL ? (size_t)(eol - in) + 2 : strlen(in);
        bool drop = false;
        for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
            drop = drop || strncasecmp(in, secret[i], strlen(secret[i])) == 0;
        if (!drop) {
            memmove(out, in, n);
            out += n;
        }
        in += n;
    }
    if (out != NULL)
        *out = '\0';
}

static int follow(sq_fetch_t *f, const char *loc)
{
    char *url = resolve_location(f, loc);
    if (url == NULL)
        return UV_EPROTO;
    cl_url_t u;
    int rc = url_parse(url, &u);
    free(url);
    if (rc != 0)
        return rc == UV_ENOMEM ? rc : UV_EPROTO;
    cl_pool_t *pool = sq__cl_pool_get(f->client, u.host, u.port, u.tls);
    if (pool == NULL) {
        sq__url_free(&u);
        return UV_ENOMEM;
    }
    int st = f->res->status;
    /* RFC 9110 §15.4: 303 (and 301/302 as user agents do) go on with GET, no body */
    if ((st == 301 || st == 302 || st == 303) && !method_is(f, "HEAD")) {
        char *get = strdup("GET");
        if (get == NULL) {
            sq__url_free(&u);
            return UV_ENOMEM;
        }
        free(f->method);
        f->method = get;
        free(f->body);
        f->body = NULL;
        f->body_len = 0;
    }
    if (pool != f->pool)
        drop_credentials(f); /* another origin: the caller's secrets stay with theirs */
    fetch_set_url(f, &u);
    f->pool = pool;
    f->redirects++;
    f->fresh = false;
    sq_response_free(f->res);
    f->res = NULL;
    sq__cl_enqueue(f, true);
    sq__cl_dispatch(pool, f->client);
    return 0;
}

bool sq__fetch_will_follow(const sq_fetch_t *f)
{
    const sq_response_t *r = f->res;
    int st = r->status;
    return f->state == CL_F_ACTIVE && !f->client->closing &&
           sq_response_header(r, "location") != NULL &&
           f->redirects < f->client->opts.max_redirects &&
           (st == 301 || st == 302 || st == 303 || st == 307 || st == 308);
}

/* The final response of f is whole (f is off its connection): a redirect to follow, or
 * the fetch's end. */
void sq__fetch_response(sq_fetch_t *f, bool *redirected)
{
    sq_response_t *r = f->res;
    *redirected = false;
    const char *loc = sq_response_header(r, "location");
    if (sq__fetch_will_follow(f)) {
        int rc = follow(f, loc);
        if (rc != 0)
            sq__fetch_finish(f, rc);
        *redirected = rc == 0;
        return;
    }
    if (asprintf(&r->url, "%s://%s%s", f->pool->tls ? "https" : "http", f->hostport,
                 f->target) < 0) {
        r->url = NULL;
        sq__fetch_finish(f, UV_ENOMEM);
        return;
    }
    sq__fetch_finish(f, 0);
}

/* ---- the calls ---- */

void sq_fetch_req_init_sized(sq_fetch_req_t *req, size_t size)
{
    static const sq_fetch_req_t defaults = {.size = sizeof(sq_fetch_req_t), .method = "GET"};
    if (req != NULL)
        SQ__OPTS_INIT(req, size, &defaults);
}

int sq_fetch(sq_client_t *client, const sq_fetch_req_t *req, sq_fetch_cb cb, void *data,
             sq_fetch_t **out)
{
    if (client == NULL || req == NULL || cb == NULL)
        return UV_EINVAL;
    sq_fetch_req_t r = {.size = sizeof(r), .method = "GET"};
    int rc = SQ__OPTS_IN(&r, req);
    if (rc != 0)
        return rc;
    if (r.url == NULL || (r.body_len > 0 && r.body == NULL))
        return UV_EINVAL;
    if (client->closing)
        return SQ_ECLOSED;
    const char *method = r.method != NULL ? r.method : "GET";
    if (!is_token(method))
        return UV_EINVAL;
    cl_url_t u;
    rc = url_parse(r.url, &u);
    if (rc != 0)
        return rc;
    if (client->opts.max_queued != 0 && client->stats.queued >= client->opts.max_queued) {
        sq__url_free(&u);
        return UV_ENOBUFS;
    }
    sq_fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        sq__url_free(&u);
        return UV_ENOMEM;
    }
    f->client = client;
    bool tls = u.tls;
    fetch_set_url(f, &u);
    rc = UV_ENOMEM;
    f->method = strdup(method);
    if (f->method == NULL)
        goto fail;
    rc = build_extra(f, &r, client->user_agent);
    if (rc != 0)
        goto fail;
    rc = UV_ENOMEM;
    if (r.body_len > 0) {
        f->body = malloc(r.body_len);
        if (f->body == NULL)
            goto fail;
        memcpy(f->body, r.body, r.body_len);
        f->body_len = r.body_len;
    }
    f->pool = sq__cl_pool_get(client, f->host, f->port, tls);
    if (f->pool == NULL)
        goto fail;
    f->cb = cb;
    f->data = data;
    f->on_body = r.on_body;
    uint64_t total = r.timeout_ms != 0 ? r.timeout_ms : client->opts.timeout_ms;
    if (total > 0)
        f->deadline = uv_now(client->loop) + total;
    sq__list_insert_tail(&client->fetches, &f->all);
    client->stats.requests++;
    sq__cl_enqueue(f, false);
    sq__cl_arm(client, f->deadline);
    if (out != NULL)
        *out = f;
    sq__cl_dispatch(f->pool, client);
    return 0;

fail:
    sq__fetch_free(f);
    return rc;
}

void sq_fetch_cancel(sq_fetch_t *f)
{
    if (f != NULL)
        sq__fetch_finish(f, UV_ECANCELED);
}

const sq_response_t *sq_fetch_head(const sq_fetch_t *f)
{
    if (f == NULL || f->on_body == NULL || f->conn == NULL || !f->conn->head_done)
        return NULL;
    return f->res;
}

/* ---- the promise form ---- */

static void response_free(void *res)
{
    sq_response_free(res);
}

static void promise_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    sq_promise_t *p = data;
    if (status == 0) {
        sq_response_t *own = f->res; /* the promise takes it: not freed with f */
        f->res = NULL;
        sq_promise_resolve(p, own, response_free);
    } else {
        sq_promise_reject(p, status, NULL, NULL);
    }
    sq_promise_release(p);
}

static void promise_cancelled(sq_promise_t *p, void *data)
{
    sq_fetch_cancel(data);
}

int sq_fetch_promise(sq_client_t *client, const sq_fetch_req_t *req, sq_promise_t **out)
{
    if (client == NULL || req == NULL || out == NULL)
        return UV_EINVAL;
    sq_fetch_req_t r = {.size = sizeof(r)};
    int rc = SQ__OPTS_IN(&r, req);
    if (rc != 0)
        return rc;
    if (r.on_body != NULL)
        return UV_EINVAL;
    sq_promise_t *p;
    rc = sq_promise_create(&p, client->loop);
    if (rc != 0)
        return rc;
    sq_fetch_t *f;
    rc = sq_fetch(client, req, promise_done, sq_promise_ref(p), &f);
    if (rc != 0) {
        sq_promise_release(p);
        sq_promise_release(p);
        return rc;
    }
    sq_promise_on_cancel(p, promise_cancelled, f);
    *out = p;
    return 0;
}
