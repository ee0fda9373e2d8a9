/* hello — the examples of a lecture on asynchronous Python (asyncio, aiohttp, Tornado,
 * FastAPI), written with squall: FastAPI's first app (`@app.get("/")` returning
 * {"Hello": "World"}, `/items/{item_id}` with a query `q`), its WebSocket echo, and a
 * blocking sleep done right (on the thread pool) and wrong (on the loop).
 *
 *   build/bin/hello --port 8000
 *   curl http://127.0.0.1:8000/                   {"Hello":"World"}
 *   curl http://127.0.0.1:8000/items/5?q=somequery {"item_id":5,"q":"somequery"}
 *   curl -X PUT http://127.0.0.1:8000/items/5 -H 'Content-Type: application/json' \
 *        -d '{"name":"x","price":1.5}'
 *                                                 {"item_name":"x","item_id":5}
 *   curl http://127.0.0.1:8000/openapi.json      the OpenAPI document; /docs to try it
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <squall.h>

/* GET / */
static void root_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "Hello", "World"));
}
static const sq_op_t read_root_op = {.summary = "Read Root",
                                     .operation_id = "read_root__get"};
static const sq_handler_t root = {.get = root_get, .op.get = &read_root_op};

/* GET /plaintext */
static void plaintext_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char body[] = "Hello, world";
    sq_res_send(res, 200, "text/plain", body, sizeof(body) - 1);
}
static const sq_handler_t plaintext = {.get = plaintext_get};

/* /items/{item_id} — the lecture's FastAPI example, declared once (schema.h) and checked
 * before the handlers run, with FastAPI's 422 answers:
 *
 *     class Item(BaseModel):
 *         name: str
 *         price: float
 *         is_offer: bool = None
 *
 *     @app.get("/items/{item_id}")
 *     async def read_item(item_id: int, q: str = None):
 *         return {"item_id": item_id, "q": q}
 *
 *     @app.put("/items/{item_id}")
 *     async def update_item(item_id: int, item: Item):
 *         return {"item_name": item.name, "item_id": item_id}
 *
 * `bool = None` is pydantic's "a bool, absent by default": null is not sent as a bool. */
typedef struct item {
    const char *name;
    double price;
    bool is_offer;
} item_t;

typedef struct item_in {
    int64_t item_id;
    const char *q; /* NULL when absent */
    item_t item;
} item_in_t;

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .bind = SQ_BIND(item_t, price)},
    {.name = "is_offer", .type = SQ_T_BOOLEAN, .default_json = "null",
     .bind = SQ_BIND(item_t, is_offer)},
    {0}};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};

static const sq_field_t item_path[] = {
    {.name = "item_id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_in_t, item_id)}, {0}};
static const sq_field_t item_query[] = {
    {.name = "q", .type = SQ_T_STRING, .default_json = "null", .bind = SQ_BIND(item_in_t, q)},
    {0}};

static const sq_op_t read_item_op = {
    .summary = "Read Item",
    .operation_id = "read_item_items__item_id__get",
    .path = item_path,
    .query = item_query,
    .input_size = sizeof(item_in_t),
};
static const sq_op_t update_item_op = {
    .summary = "Update Item",
    .operation_id = "update_item_items__item_id__put",
    .path = item_path,
    .body = &item_schema,
    .input_size = sizeof(item_in_t),
    .body_bind = SQ_BIND(item_in_t, item),
};

static void read_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    sq_res_send_json_new(res, 200, json_pack("{s:I,s:s?}", "item_id", (json_int_t)in->item_id,
                                             "q", in->q));
}

static void update_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    sq_res_send_json_new(res, 200, json_pack("{s:s,s:I}", "item_name", in->item.name, "item_id",
                                             (json_int_t)in->item_id));
}

static const sq_handler_t items = {.get = read_item,
                                   .put = update_item,
                                   .op.get = &read_item_op,
                                   .op.put = &update_item_op};

/* POST /echo — a byte echo: the body back, byte for byte, with 200 and the request's own
 * Content-Type (application/octet-stream when it had none). Nothing is parsed: a body
 * sent as application/json comes back as application/json whether it is JSON or not. */
static void echo_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *body = sq_req_body(req, &len);
    const char *ctype = sq_req_header(req, "Content-Type");
    sq_res_send(res, 200, ctype ? ctype : "application/octet-stream", body, len);
}
static const sq_handler_t echo = {.post = echo_post};

/* WS /ws — the lecture's FastAPI example (`await websocket.send_text(f"Message text was:
 * {data}")`): text X is answered "Message text was: X". */
static void ws_said(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    static const char prefix[] = "Message text was: ";
    char stack[512];
    size_t n = sizeof(prefix) - 1 + len;
    char *out = n <= sizeof(stack) ? stack : malloc(n);
    if (out == NULL)
        return;
    memcpy(out, prefix, sizeof(prefix) - 1);
    memcpy(out + sizeof(prefix) - 1, msg, len);
    sq_ws_send(ws, binary, out, n);
    if (out != stack)
        free(out);
}
static const sq_ws_handler_t ws_said_handler = {.message = ws_said};

/* WS /ws/echo — text and binary messages back as they came. */
static void ws_echo(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}
static const sq_ws_handler_t ws_echo_handler = {.message = ws_echo};

/* ?ms=N for the sleep routes, declared as FastAPI's `ms: int = Query(ge=0, le=10000)`:
 * squall checks it before the handler runs (422 otherwise) and binds it here. */
typedef struct sleep_in {
    int64_t ms;
} sleep_in_t;
static const sq_field_t sleep_query[] = {{.name = "ms",
                                          .type = SQ_T_INTEGER,
                                          .ge = SQ_LIMIT(0),
                                          .le = SQ_LIMIT(10000),
                                          .bind = SQ_BIND(sleep_in_t, ms)},
                                         {0}};
static const sq_op_t sleep_op = {.summary = "Sleep",
                                 .description = "Sleeps on the thread pool: the loop serves "
                                                "everyone else meanwhile.",
                                 .query = sleep_query,
                                 .input_size = sizeof(sleep_in_t)};
static const sq_op_t sleep_blocking_op = {.summary = "Sleep Blocking",
                                          .description = "Sleeps on the loop: every other "
                                                         "client waits (the lecture's mistake).",
                                          .query = sleep_query,
                                          .input_size = sizeof(sleep_in_t)};

/* GET /sleep?ms=N — a blocking call done right: it runs on the thread pool, the loop goes
 * on serving everyone else (FastAPI's plain `def` endpoint, asyncio's run_in_executor). */
static void sleep_get(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    int64_t ms = ((const sleep_in_t *)sq_breq_input(req))->ms;
    usleep((useconds_t)ms * 1000);
    sq_bres_send_json_new(res, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}
static const sq_handler_t sleeper = {.blocking.get = sleep_get, .op.get = &sleep_op};

/* GET /sleep-blocking?ms=N — the lecture's mistake (time.sleep in an `async def`):
 * sleeping on the loop. Every other client waits meanwhile, and the watchdog
 * (--slow-callback-ms) names the culprit. */
static void sleep_blocking_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t ms = ((const sleep_in_t *)sq_req_input(req))->ms;
    usleep((useconds_t)ms * 1000);
    sq_res_send_json_new(res, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}
static const sq_handler_t sleeper_on_loop = {.get = sleep_blocking_get,
                                             .op.get = &sleep_blocking_op};

/* ---- forms, uploads, cookies, hooks ---- */

static int parse_flag(const char *s, unsigned long long max, unsigned long long *out);

/* POST /upload — multipart/form-data read as a stream (sq_handler_t.stream_body): each
 * file part is hashed as it arrives and never held, so an upload may be far larger than
 * --max-body (up to --max-upload) in constant memory. Answers
 * {"files": [{"field", "filename", "size", "sha256"}], "fields": {name: value}}. */
typedef struct upload {
    sq_res_t *res;
    sq_multipart_t *mp;
    json_t *files, *fields;
    char *field;         /* the current part's name, and its filename (NULL: a field) */
    char *filename;
    uint64_t size;
    EVP_MD_CTX *sha;
    char *value;         /* a field's value, up to the parser's max_field_bytes */
    size_t value_len;
} upload_t;

static void upload_free(upload_t *u)
{
    sq_multipart_destroy(u->mp);
    json_decref(u->files);
    json_decref(u->fields);
    free(u->field);
    free(u->filename);
    free(u->value);
    EVP_MD_CTX_free(u->sha);
    free(u);
}

static int part_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    upload_t *u = data;
    free(u->field);
    free(u->filename);
    u->field = strndup(part->name, part->name_len);
    u->filename = part->filename ? strndup(part->filename, part->filename_len) : NULL;
    u->size = 0;
    u->value_len = 0;
    if (u->field == NULL || (part->filename && u->filename == NULL))
        return UV_ENOMEM;
    if (u->filename != NULL && EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL) != 1)
        return UV_ENOMEM;
    return 0;
}

static int part_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    upload_t *u = data;
    u->size += len;
    if (u->filename != NULL)
        return EVP_DigestUpdate(u->sha, at, len) == 1 ? 0 : UV_ENOMEM;
    char *v = realloc(u->value, u->value_len + len + 1); /* bounded by max_field_bytes */
    if (v == NULL)
        return UV_ENOMEM;
    memcpy(v + u->value_len, at, len);
    u->value = v;
    u->value_len += len;
    return 0;
}

static int part_end(sq_multipart_t *mp, void *data)
{
    upload_t *u = data;
    if (u->filename == NULL) {
        json_t *v = json_stringn(u->value ? u->value : "", u->value_len);
        /* a value that is not UTF-8 is null; a name that is not fails the upload (400) */
        return json_object_set_new(u->fields, u->field, v ? v : json_null()) == 0 ? 0 : UV_EINVAL;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    if (EVP_DigestFinal_ex(u->sha, md, &mdlen) != 1)
        return UV_ENOMEM;
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    json_t *name = json_string(u->filename); /* not UTF-8: null */
    json_t *file = json_pack("{s:s,s:o,s:I,s:s}", "field", u->field, "filename",
                             name ? name : json_null(), "size", (json_int_t)u->size, "sha256", hex);
    /* a field name that is not UTF-8 fails the upload (400), never drops the file */
    return file != NULL && json_array_append_new(u->files, file) == 0 ? 0 : UV_EINVAL;
}

static const sq_multipart_cbs_t upload_cbs = {
    .part_begin = part_begin, .part_data = part_data, .part_end = part_end};

/* The parser's error as an answer: a limit is 413, the rest of the body's faults 400. */
static void upload_refuse(upload_t *u, int rc)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "multipart: %s", sq_multipart_error(u->mp));
    sq_res_send_error(u->res, rc == UV_E2BIG ? 413 : 400, msg);
}

static void upload_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    upload_t *u = ud;
    if (status == 0) {
        ssize_t n = sq_multipart_feed(u->mp, data, len);
        if (n < 0) {
            upload_refuse(u, (int)n);
            upload_free(u); /* finished: the callback runs no more */
        }
        return;
    }
    if (status == UV_EOF) {
        int rc = sq_multipart_finish(u->mp);
        if (rc != 0)
            upload_refuse(u, rc);
        else
            sq_res_send_json_new(u->res, 200, json_pack("{s:O,s:O}", "files", u->files, "fields",
                                                        u->fields));
    } else if (status == UV_E2BIG) {
        sq_res_send_error(u->res, 413, "the upload is larger than --max-upload");
    } else {
        sq_res_send_error(u->res, 400, "the upload was cut short"); /* released: gone */
    }
    upload_free(u);
}

static void upload_post(sq_req_t *req, sq_res_t *res, void *data)
{
    char boundary[SQ_FORM_BOUNDARY_MAX + 1];
    ssize_t b = sq_form_boundary(sq_req_header(req, "Content-Type"), boundary, sizeof(boundary));
    if (b < 0) {
        sq_res_send_error(res, b == UV_EFTYPE ? 415 : 400,
                          "a multipart/form-data body with a boundary is expected");
        return;
    }
    upload_t *u = calloc(1, sizeof(*u));
    sq_multipart_opts_t mo;
    sq_multipart_opts_init(&mo);
    mo.max_total_bytes = UINT64_MAX; /* the route's own limit (--max-upload) bounds it */
    if (u == NULL || (u->files = json_array()) == NULL || (u->fields = json_object()) == NULL ||
        (u->sha = EVP_MD_CTX_new()) == NULL ||
        sq_multipart_create(&u->mp, boundary, &mo, &upload_cbs, u) != 0) {
        if (u != NULL)
            upload_free(u);
        sq_res_send_error(res, 500, NULL);
        return;
    }
    u->res = res;
    sq_req_body_read(req, upload_piece, u);
}
static const sq_handler_t uploads = {.post = upload_post,
                                     .stream_body = SQ_STREAM(SQ_METHOD_POST)};

/* POST /form — application/x-www-form-urlencoded, or multipart/form-data without files,
 * buffered (it is bounded by --max-body): the fields as a JSON object. */
typedef struct form {
    json_t *fields;
    char *name;
    char *value;
    size_t len;
    bool file;
} form_t;

static int form_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    form_t *f = data;
    if (part->filename != NULL) {
        f->file = true;
        return UV_EINVAL;
    }
    free(f->name);
    f->name = strndup(part->name, part->name_len);
    f->len = 0;
    return f->name ? 0 : UV_ENOMEM;
}

static int form_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    form_t *f = data;
    char *v = realloc(f->value, f->len + len + 1);
    if (v == NULL)
        return UV_ENOMEM;
    memcpy(v + f->len, at, len);
    f->value = v;
    f->len += len;
    return 0;
}

static int form_end(sq_multipart_t *mp, void *data)
{
    form_t *f = data;
    json_t *v = json_stringn(f->value ? f->value : "", f->len);
    json_object_set_new(f->fields, f->name, v ? v : json_null());
    return 0;
}

static const sq_multipart_cbs_t form_cbs = {
    .part_begin = form_begin, .part_data = form_data, .part_end = form_end};

static void form_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *body = sq_req_body(req, &len);
    const char *ct = sq_req_header(req, "Content-Type");
    char boundary[SQ_FORM_BOUNDARY_MAX + 1];
    json_t *out = NULL;
    if (ct != NULL && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        if (sq_urlenc_parse_json(body, len, NULL, &out) != 0) {
            sq_res_send_error(res, 400, "a malformed or too large form");
            return;
        }
        sq_res_send_json_new(res, 200, out);
        return;
    }
    if (sq_form_boundary(ct, boundary, sizeof(boundary)) < 0) {
        sq_res_send_error(res, 415, "a form is expected: application/x-www-form-urlencoded or "
                                    "multipart/form-data");
        return;
    }
    form_t f = {.fields = json_object()};
    sq_multipart_t *mp = NULL;
    int rc = f.fields == NULL ? UV_ENOMEM : sq_multipart_create(&mp, boundary, NULL, &form_cbs, &f);
    if (rc == 0 && (rc = (int)sq_multipart_feed(mp, body, len)) >= 0)
        rc = sq_multipart_finish(mp);
    if (rc == 0)
        sq_res_send_json(res, 200, f.fields);
    else if (f.file)
        sq_res_send_error(res, 400, "files are taken by POST /upload, not here");
    else
        sq_res_send_error(res, rc == UV_E2BIG ? 413 : 400, mp ? sq_multipart_error(mp) : NULL);
    sq_multipart_destroy(mp);
    json_decref(f.fields);
    free(f.name);
    free(f.value);
}
static const sq_handler_t forms = {.post = form_post};

/* GET /cookie — counts the visits of a browser in a cookie it keeps. */
static void cookie_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *v = sq_req_cookie(req, "visits");
    unsigned long long n = 0;
    if (v == NULL || parse_flag(v, 1000000000, &n) != 0)
        n = 0; /* none, or not ours: start again */
    n++;
    char val[24];
    snprintf(val, sizeof(val), "%llu", n);
    sq_cookie_opts_t o;
    sq_cookie_opts_init(&o);
    o.http_only = 1;
    o.same_site = SQ_SAMESITE_LAX;
    o.path = "/";
    sq_res_set_cookie(res, "visits", val, &o);
    sq_res_send_json_new(res, 200, json_pack("{s:I}", "visits", (json_int_t)n));
}
static const sq_handler_t cookies = {.get = cookie_get};

/* Every answer says which request it was (X-Request-Id: the server option
 * request_id_header), and --log-level debug logs each from an after hook, registered only
 * then: method, path, status, duration and id. */
static void log_request(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    double ms = (double)(uv_hrtime() - sq_req_start_ns(req)) / 1e6;
    sq_log(SQ_LOG_DEBUG, "%s %s %d %.3f ms id=%llu", sq_req_method(req), sq_req_path(req), status,
           ms, (unsigned long long)sq_req_id(req));
}

typedef struct config {
    const char *host;
    int port;
    unsigned workers;
    unsigned processes;          /* --processes: copies of the whole server, one port */
    unsigned process;            /* which one this is */
    unsigned threadpool;
    sq_server_opts_t opts;
    sq_app_t *app;
    uint64_t max_upload;         /* POST /upload's limit */
    const char *cors[16 + 1];    /* --cors-origin, NULL-terminated */
    unsigned ncors;
    int ws_deflate;              /* --ws-deflate: permessage-deflate on the WebSocket routes */
} config_t;

/* Each worker's server. A failure is reported once, by main, from sq_workers_run's
 * result; the worker's loop finishes closing the server. */
static int setup(uv_loop_t *loop, unsigned index, void *data, sq_server_t **out)
{
    config_t *cfg = data;
    sq_server_t *srv;
    int rc = sq_server_create(&srv, loop, cfg->app, &cfg->opts);
    if (rc != 0)
        return rc;
    rc = sq_server_listen(srv, cfg->host, cfg->port); /* a host name is resolved here */
    if (rc != 0) {
        sq_server_destroy(srv, 0, NULL, NULL);
        return rc;
    }
    if (index == 0 && cfg->process == 0) {
        printf("hello: serving on %s://%s%s%s:%d/ with %u worker%s", cfg->opts.tls ? "https" : "http",
               strchr(cfg->host, ':') ? "[" : "", cfg->host, strchr(cfg->host, ':') ? "]" : "", sq_server_port(srv), cfg->workers,
               cfg->workers == 1 ? "" : "s");
        if (cfg->processes > 1)
            printf(" in each of %u processes", cfg->processes);
        printf("\n");
        fflush(stdout);
    }
    *out = srv;
    return 0;
}

/* Listens on the configured address once and closes again: 0, or why it cannot. */
static int try_listen(config_t *cfg)
{
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0)
        return rc;
    sq_server_t *srv;
    rc = sq_server_create(&srv, &loop, cfg->app, &cfg->opts);
    if (rc == 0) {
        rc = sq_server_listen(srv, cfg->host, cfg->port);
        sq_server_destroy(srv, 0, NULL, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}

/* A flag's number: decimal digits only (no sign, no blanks, nothing after), at most max.
 * Returns 0, or -1 for anything else. */
static int parse_flag(const char *s, unsigned long long max, unsigned long long *out)
{
    if (*s < '0' || *s > '9') /* strtoull would take blanks, '+' and a wrapping '-' */
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

#define MAX_WORKERS 64      /* threads, each with its own loop and listener */
#define MAX_PROCESSES 64    /* processes, each with its workers */
#define MAX_THREADPOOL 1024 /* libuv's limit for UV_THREADPOOL_SIZE */

static void usage(FILE *f)
{
    fprintf(f, "usage: hello [--host ADDR|NAME] [--port N] [--workers N] [--processes N]\n"
               "             [--max-body BYTES] [--max-header BYTES] [--header-timeout MS]\n"
               "             [--body-timeout MS] [--max-connections N (16384 a worker)]\n"
               "             [--idle-timeout MS] [--slow-callback-ms MS (100; 0 off)]\n"
               "             [--threadpool N] [--static DIR (served under /static/)]\n"
               "             [--max-upload BYTES (10 GiB)] [--cors-origin ORIGIN]...\n"
               "             [--log-level debug|info|warn|error] [--ws-deflate] [--help]\n"
               "             [--tls-cert FILE --tls-key FILE (HTTPS and WSS)]\n"
               "             [--access-log FILE|-] [--metrics] [--gzip]\n");
}

/* What is wrong, on one line, then the usage; status 2. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hello: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a client that leaves mid-write must not kill us */
    config_t cfg = {.host = "127.0.0.1", .port = 8000, .workers = 1, .processes = 1,
                    .max_upload = 10ull << 30};
    sq_server_opts_init(&cfg.opts);
    cfg.opts.slow_callback_ms = 100;
    cfg.opts.request_id_header = "X-Request-Id";
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"workers", required_argument, NULL, 'w'},
        {"processes", required_argument, NULL, 'P'},
        {"max-connections", required_argument, NULL, 'M'},
        {"max-body", required_argument, NULL, 'b'},
        {"max-header", required_argument, NULL, 'H'},
        {"header-timeout", required_argument, NULL, 't'},
        {"body-timeout", required_argument, NULL, 'B'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"slow-callback-ms", required_argument, NULL, 's'},
        {"threadpool", required_argument, NULL, 'T'},
        {"max-upload", required_argument, NULL, 'U'},
        {"cors-origin", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'L'},
        {"static", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'u'},
        {"ws-deflate", no_argument, NULL, 'D'},
        {"tls-cert", required_argument, NULL, 'c'},
        {"tls-key", required_argument, NULL, 'k'},
        {"access-log", required_argument, NULL, 'A'}, /* combined format; SIGHUP reopens */
        {"metrics", no_argument, NULL, 'm'},          /* GET /metrics (Prometheus) */
        {"gzip", no_argument, NULL, 'g'},             /* gzip what the client accepts */
        {NULL, 0, NULL, 0},
    };
    int ch, li = 0;
    const char *static_dir = NULL; /* --static: a folder served under /static/ */
    unsigned long long v = 0;
    const char *tls_cert = NULL, *tls_key = NULL;
    struct { const char *access_log; bool metrics, gzip; } obs = {NULL, false, false};
    opterr = 0; /* getopt's own messages would name argv[0]: hello words its own */
    while ((ch = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'h': cfg.host = optarg; break;
        case 'S': static_dir = optarg; break;
        case 'p': bad = parse_flag(optarg, 65535, &v); cfg.port = (int)v; break;
        case 'w': bad = parse_flag(optarg, UINT_MAX, &v); cfg.workers = (unsigned)v; break;
        case 'P': bad = parse_flag(optarg, UINT_MAX, &v); cfg.processes = (unsigned)v; break;
        case 'M': bad = parse_flag(optarg, UINT_MAX, &v); cfg.opts.max_connections = (unsigned)v; break;
        case 'b': bad = parse_flag(optarg, SIZE_MAX, &v); cfg.opts.max_body_bytes = v; break;
        case 'H': bad = parse_flag(optarg, SIZE_MAX, &v); cfg.opts.max_header_bytes = v; break;
        case 't': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.header_timeout_ms = v; break;
        case 'B': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.body_timeout_ms = v; break;
        case 'i': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.idle_timeout_ms = v; break;
        case 's': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.slow_callback_ms = v; break;
        case 'T': bad = parse_flag(optarg, UINT_MAX, &v); cfg.threadpool = (unsigned)v; break;
        case 'U': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.max_upload = v; break;
        case 'D': cfg.ws_deflate = 1; break;
        case 'C':
            if (cfg.ncors == sizeof(cfg.cors) / sizeof(cfg.cors[0]) - 1)
                return bad_usage("--cors-origin: at most 16");
            cfg.cors[cfg.ncors++] = optarg;
            break;
        case 'L': {
            static const char *const levels[] = {"debug", "info", "warn", "error"};
            size_t l = 0;
            while (l < 4 && strcmp(optarg, levels[l]) != 0)
                l++;
            if (l == 4)
                return bad_usage("--log-level: one of debug, info, warn, error: '%s'", optarg);
            sq_log_set_level((sq_log_level_t)l);
            break;
        }
        case 'c': tls_cert = optarg; break;
        case 'k': tls_key = optarg; break;
        case 'A': obs.access_log = optarg; break;
        case 'm': obs.metrics = true; break;
        case 'g': obs.gzip = true; break;
        case 'u':
            usage(stdout);
            return 0;
        case ':':
            return bad_usage("%s needs a value", argv[optind - 1]);
        default:
            if (optopt != 0)
                return bad_usage("unknown option '-%c'", optopt);
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
        if (bad != 0)
            return bad_usage("--%s: not a valid number: '%s'", longopts[li].name, optarg);
        if (ch == 'w' && (cfg.workers == 0 || cfg.workers > MAX_WORKERS))
            return bad_usage("--workers must be 1..%d", MAX_WORKERS);
        if (ch == 'M' && cfg.opts.max_connections == 0)
            return bad_usage("--max-connections must be 1 or more");
        if (ch == 'P' && (cfg.processes == 0 || cfg.processes > MAX_PROCESSES))
            return bad_usage("--processes must be 1..%d", MAX_PROCESSES);
        if (ch == 'T' && (cfg.threadpool == 0 || cfg.threadpool > MAX_THREADPOOL))
            return bad_usage("--threadpool must be 1..%d", MAX_THREADPOOL);
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if ((tls_cert == NULL) != (tls_key == NULL))
        return bad_usage("--tls-cert and --tls-key go together");
    if (tls_cert != NULL) {
        int trc = sq_tls_ctx_server(&cfg.opts.tls, tls_cert, tls_key);
        if (trc != 0) {
            fprintf(stderr, "hello: --tls-cert %s --tls-key %s: %s\n", tls_cert, tls_key,
                    sq_strerror(trc));
            return 1;
        }
    }
    /* each worker listens on its own socket (SO_REUSEPORT): with port 0 each would get a
     * port of its own, and all but one would be unreachable */
    if (cfg.port == 0 && (cfg.workers > 1 || cfg.processes > 1))
        return bad_usage("--port 0 needs --workers 1 and --processes 1 (each would get its "
                         "own port)");
    cfg.opts.reuseport = cfg.workers > 1 || cfg.processes > 1;
    if (cfg.threadpool > 0 && sq_work_threadpool_set_size(cfg.threadpool) != 0)
        return bad_usage("--threadpool must be 1..%d", MAX_THREADPOOL);
    /* libuv has one thread pool per process: each worker's blocking routes get their
     * share of it, and one thread stays free for DNS and files */
    unsigned threads = sq_work_threadpool_size();
    cfg.opts.blocking_max_in_flight = threads > cfg.workers ? (threads - 1) / cfg.workers : 1;
    if (cfg.opts.blocking_max_in_flight == 0)
        cfg.opts.blocking_max_in_flight = 1;
    sq_app_create(&cfg.app);
    sq_app_route(cfg.app, "/", &root, NULL);
    sq_app_route(cfg.app, "/plaintext", &plaintext, NULL);
    sq_app_route(cfg.app, "/items/{item_id}", &items, NULL);
    sq_app_route(cfg.app, "/echo", &echo, NULL);
    sq_app_route(cfg.app, "/sleep", &sleeper, NULL);
    sq_app_route(cfg.app, "/sleep-blocking", &sleeper_on_loop, NULL);
    sq_ws_opts_t wso; /* docs/deflate.md */
    sq_ws_opts_init(&wso);
    wso.deflate = cfg.ws_deflate;
    sq_app_websocket(cfg.app, "/ws", &ws_said_handler, &wso, NULL);
    sq_app_websocket(cfg.app, "/ws/echo", &ws_echo_handler, &wso, NULL);
    sq_handler_t up = uploads;
    up.stream_body_max = cfg.max_upload;
    sq_app_route(cfg.app, "/upload", &up, NULL);
    sq_app_route(cfg.app, "/form", &forms, NULL);
    sq_app_route(cfg.app, "/cookie", &cookies, NULL);
    if (sq_log_level() <= SQ_LOG_DEBUG)
        sq_app_after(cfg.app, log_request, NULL);
    /* GET /openapi.json and /docs, written from the routes' declarations; /docs needs
     * swagger-ui-dist (scripts/deps.sh installs it in web/): without it, the document */
    sq_openapi_opts_t oa;
    sq_openapi_opts_init(&oa);
    oa.title = "hello";
    oa.description = "FastAPI's first examples, in C with squall";
    int orc = sq_openapi_mount(cfg.app, &oa);
    if (orc == UV_ENOENT) {
        fprintf(stderr, "hello: /docs is off: no swagger-ui-dist (run scripts/deps.sh)\n");
        oa.docs_url = NULL;
        orc = sq_openapi_mount(cfg.app, &oa);
    }
    if (orc != 0) {
        fprintf(stderr, "hello: openapi: %s\n", sq_strerror(orc));
        sq_app_destroy(cfg.app);
        return 1;
    }
    if (cfg.ncors > 0) {
        static const char *const any[] = {"*", NULL};
        sq_cors_opts_t co;
        sq_cors_opts_init(&co);
        co.origins = cfg.cors;
        co.methods = any;
        co.headers = any;
        if (sq_app_cors(cfg.app, &co) != 0) {
            sq_app_destroy(cfg.app);
            return bad_usage("--cors-origin: not a valid origin");
        }
    }

    int src = static_dir ? sq_static_route(cfg.app, "/static", static_dir, NULL) : 0;
    if (src != 0) {
        fprintf(stderr, "hello: --static %s: %s\n", static_dir, sq_strerror(src));
        sq_app_destroy(cfg.app);
        return 1;
    }

    if (cfg.processes > 1) {
        /* copies of this process, all on one port: each has its own descriptor limit. The
         * address is tried once first, so that a busy port is one line, not one per copy */
        int prc = try_listen(&cfg);
        if (prc != 0) {
            bool v6 = strchr(cfg.host, ':') != NULL;
            fprintf(stderr, "hello: listen %s%s%s:%d: %s\n", v6 ? "[" : "", cfg.host,
                    v6 ? "]" : "", cfg.port, sq_strerror(prc));
            sq_app_destroy(cfg.app);
            return 1;
        }
        int code = 0;
        prc = sq_processes_run(cfg.processes, &cfg.process, &code);
        if (prc < 0) {
            fprintf(stderr, "hello: --processes: %s\n", sq_strerror(prc));
            sq_app_destroy(cfg.app);
            return 1;
        }
        if (prc == 1) { /* the supervisor: every copy has exited (each said why it failed) */
            sq_app_destroy(cfg.app);
            return code;
        }
    }
    /* --access-log, --metrics, --gzip (docs/access-log.md, metrics.md, compression.md):
     * after the fork of --processes, so each copy has its log's writer thread */
    sq_access_log_opts_t alo;
    sq_access_log_opts_init(&alo);
    alo.path = obs.access_log;
    alo.reopen_on_sighup = 1;
    int xrc = obs.access_log ? sq_app_access_log(cfg.app, &alo, NULL) : 0;
    if (xrc != 0) {
        fprintf(stderr, "hello: --access-log %s: %s\n", obs.access_log, sq_strerror(xrc));
        sq_app_destroy(cfg.app);
        sq_tls_ctx_free(cfg.opts.tls);
        return 1;
    }
    if ((obs.metrics && (xrc = sq_app_metrics(cfg.app, "/metrics", NULL)) != 0) ||
        (obs.gzip && (xrc = sq_app_gzip(cfg.app, NULL)) != 0)) {
        fprintf(stderr, "hello: %s\n", sq_strerror(xrc));
        sq_app_destroy(cfg.app);
        sq_tls_ctx_free(cfg.opts.tls);
        return 1;
    }
    int rc = sq_workers_run(cfg.workers, setup, NULL, &cfg, 5000);
    sq_app_destroy(cfg.app);
    sq_tls_ctx_free(cfg.opts.tls);
    if (rc != 0) {
        bool v6 = strchr(cfg.host, ':') != NULL;
        fprintf(stderr, "hello: listen %s%s%s:%d: %s\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
                cfg.port, sq_strerror(rc));
        return 1;
    }
    return 0;
}
