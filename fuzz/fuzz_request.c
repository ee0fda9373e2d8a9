/* The request path end to end: bytes in -> responses out, through the real connection
 * code (the memory transport: no socket), cut where the input says (cuts.h). The app has what
 * parsing reaches: plain, declared (validated), hooked, streamed and WebSocket routes.
 * Each input goes to two servers, one reading plain requests without llhttp
 * (lib/http/h1_fast.c) and one leaving every request to llhttp: their answers must be the
 * same bytes, but for the Date line (tests/test_h1_fast.c holds the same by hand). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <squall.h>

#include "cuts.h"
#include "http/h1_int.h"
#include "server/server_int.h"

static uv_loop_t loop;
static sq_server_t *srv[2]; /* [1]: llhttp reads every request */

static void plain_get(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *body = sq_req_body(req, &len);
    sq_req_cookie(req, "a");
    sq_req_query(req, "q");
    sq_res_send(res, 200, "text/plain", body, len);
}

typedef struct item_in {
    int64_t id;
    const char *name;
    double price;
} item_in_t;
static const sq_field_t item_path[] = {
    {.name = "id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_in_t, id)}, {0}};
static const sq_field_t item_fields[] = {
    {.name = "name",
     .type = SQ_T_STRING,
     .max_length = SQ_LEN(20),
     .pattern = "^\\w+$",
     .bind = SQ_BIND(item_in_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .gt = SQ_LIMIT(0), .bind = SQ_BIND(item_in_t, price)},
    {0}};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};
static const sq_op_t item_op = {
    .path = item_path, .body = &item_schema, .input_size = sizeof(item_in_t)};

static void item_put(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    sq_res_send_json_new(res, 200,
                         json_pack("{s:I,s:s}", "id", (json_int_t)in->id, "name", in->name));
}

static void on_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    if (status != 0)
        sq_res_send(ud, status == UV_EOF ? 200 : 400, NULL, NULL, 0);
}

static void upload_post(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_req_body_read(req, on_piece, res);
}

static int stamp(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_header(res, "X-Id", "1");
    return SQ_NEXT;
}

static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_handler_t plain = {.get = plain_get, .post = plain_get};
static const sq_handler_t items = {.put = item_put, .op.put = &item_op};
static const sq_handler_t upload = {
    .post = upload_post, .stream_body = SQ_STREAM(SQ_METHOD_POST), .stream_body_max = 1 << 20};
static const sq_ws_handler_t echo = {.message = ws_message};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    uv_loop_init(&loop);
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_route(app, "/", &plain, NULL);
    sq_app_route(app, "/items/{id}", &items, NULL);
    sq_app_route(app, "/upload", &upload, NULL);
    sq_app_websocket(app, "/ws", &echo, NULL, NULL);
    sq_app_before(app, stamp, NULL);
    static const char *const origins[] = {"https://a.example", NULL};
    sq_cors_opts_t cors;
    sq_cors_opts_init(&cors);
    cors.origins = origins;
    sq_app_cors(app, &cors);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_body_bytes = 64 * 1024;
    sq_server_create(&srv[0], &loop, app, &o);
    sq_server_create(&srv[1], &loop, app, &o);
    sq__hs(srv[1])->fast_off = true;
    return 0;
}

/* The answers to data cut as cuts says, in out (without Date lines). */
static void run(sq_server_t *server, const uint8_t *data, size_t size, cuts_t cuts, sq__buf_t *out)
{
    sq__memsink_t sink;
    memset(&sink, 0, sizeof(sink));
    if (sq__mem_accept(server, &sink) != 0)
        abort(); /* memory: the comparison would not hold */
    for (size_t off = 0, n; off < size && !sink.closed; off += n) {
        n = cuts_next(&cuts, size - off);
        sq__mem_feed(&sink, data + off, n);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    if (!sink.closed)
        sq__mem_feed(&sink, NULL, 0); /* the client's half-close: answer, then close */
    for (int i = 0; i < 64 && !sink.closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!sink.closed && sink.conn != NULL)
        sq__conn_on_read(sink.conn, NULL, UV_ECONNRESET); /* a held WebSocket: reset */
    for (int i = 0; i < 64 && !sink.closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    const char *p = sink.out.base, *end = sink.out.len ? p + sink.out.len : p;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        const char *next = eol ? eol + 2 : end;
        if (!(end - p >= 6 && memcmp(p, "Date: ", 6) == 0) &&
            sq__buf_append(out, p, (size_t)(next - p)) != 0)
            abort();
        p = next;
    }
    sq__buf_free(&sink.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the first byte (and, in list mode, those after it) says where the input is cut
     * (cuts.h), so the fuzzer explores where reads end as well as what they hold */
    cuts_t cuts;
    size_t skip = cuts_init(&cuts, data, size);
    if (skip == 0)
        return 0;
    sq__buf_t out[2];
    memset(out, 0, sizeof(out));
    for (int i = 0; i < 2; i++)
        run(srv[i], data + skip, size - skip, cuts, &out[i]); /* each from the first cut */
    if (out[0].len != out[1].len ||
        (out[0].len != 0 && memcmp(out[0].base, out[1].base, out[0].len) != 0)) {
        fprintf(stderr, "the two readers answered differently:\n%.*s\n----\n%.*s\n",
                (int)out[0].len, out[0].base, (int)out[1].len, out[1].base);
        abort();
    }
    sq__buf_free(&out[0]);
    sq__buf_free(&out[1]);
    return 0;
}
