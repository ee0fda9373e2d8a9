/* WebSocket (lib/ws) over real sockets.
 *
 * Three kinds of tests:
 *  - server and squall client (sq_ws_connect) on one loop in the test's thread: every
 *    callback is counted on that thread and compared exactly, and each test ends with
 *    sq_server_destroy, the loop run dry and uv_loop_close() == 0;
 *  - the server on its own loop thread (tests/support/harness.h) against a raw blocking
 *    socket that writes the handshake and the frames by hand, to produce what a
 *    well-behaved client never sends (RFC 6455 §5, §7.4.1, §8.1); the close frame the
 *    server sends back is parsed here, by the test's own code;
 *  - the client against servers that fail in each way it must report.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"
#include "support/ws_raw.h"

/* An embedding program ignores SIGPIPE (libuv's advice); so do the tests, where a peer
 * that resets is part of the scenario. */
static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws, .init = ignore_sigpipe);

/* ======================================================================================
 * One loop: a server and squall clients
 * ==================================================================================== */

typedef struct env {
    uv_loop_t loop;
    sq_app_t *app;
    sq_server_t *srv;
    int port;
    int srv_closed; /* sq_server_destroy's callback */
    bool stopping;
} env_t;

static void env_init(env_t *e)
{
    memset(e, 0, sizeof(*e));
    cr_assert_eq(uv_loop_init(&e->loop), 0);
    cr_assert_eq(sq_app_create(&e->app), 0);
}

static void env_listen(env_t *e)
{
    cr_assert_eq(sq_server_create(&e->srv, &e->loop, e->app, NULL), 0);
    cr_assert_eq(sq_server_listen(e->srv, "127.0.0.1", 0), 0);
    e->port = sq_server_port(e->srv);
    cr_assert_gt(e->port, 0);
}

static void on_env_server_closed(sq_server_t *srv, void *data)
{
    env_t *e = data;
    e->srv_closed++;
}

/* Starts the server's shutdown (once); the loop runs dry afterwards. */
static void env_stop(env_t *e)
{
    if (e->stopping)
        return;
    e->stopping = true;
    cr_assert_eq(sq_server_destroy(e->srv, 2000, on_env_server_closed, e), 0);
}

/* Runs the loop until nothing is left, then checks the shutdown was clean. */
static void env_run_and_finish(env_t *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
    cr_assert(e->stopping, "the loop ran dry before the test stopped the server");
    cr_assert_eq(e->srv_closed, 1);
    int rc = uv_loop_close(&e->loop);
    if (rc != 0)
        uv_print_all_handles(&e->loop, stderr);
    cr_assert_eq(rc, 0, "uv_loop_close: %s", uv_err_name(rc));
    sq_app_destroy(e->app);
}

static void env_url(const env_t *e, char *buf, size_t cap, const char *path)
{
    snprintf(buf, cap, "ws://127.0.0.1:%d%s", e->port, path);
}

/* What one side saw. */
typedef struct side {
    env_t *env;
    int opens, messages, closes, pongs, drains;
    int close_code;
    char close_reason[128];
    char pong[128];
    size_t pong_len;
    sq_ws_t *ws;
    const char *subprotocol; /* at .open */
    int stop_after_closes;   /* env_stop when this many .close have run (0: never) */
    void *extra;
} side_t;

static void side_record_close(side_t *s, int code, const char *reason)
{
    s->closes++;
    s->close_code = code;
    snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason ? reason : "");
    if (s->stop_after_closes > 0 && s->closes == s->stop_after_closes)
        env_stop(s->env);
}

/* ---- a plain echo route ---- */

static void echo_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    s->ws = ws;
    s->subprotocol = sq_ws_subprotocol(ws);
    cr_assert_not_null(req);
    cr_assert_not(sq_ws_is_client(ws));
}

static void echo_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    side_t *s = data;
    s->messages++;
    int rc = sq_ws_send(ws, binary, msg, len);
    cr_assert_eq(rc, 0, "echo of %zu bytes: %s", len, sq_strerror(rc));
}

static void echo_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    side_t *s = data;
    side_record_close(s, code, reason);
    if (s->ws == ws)
        s->ws = NULL;
}

static void echo_pong(sq_ws_t *ws, const char *payload, size_t len, void *data)
{
    side_t *s = data;
    s->pongs++;
    s->pong_len = len < sizeof(s->pong) ? len : sizeof(s->pong) - 1;
    memcpy(s->pong, payload, s->pong_len);
}

static const sq_ws_handler_t echo_handler = {
    .open = echo_open,
    .message = echo_message,
    .close = echo_close,
    .pong = echo_pong,
};

/* ---- echo of every size, text and binary ---- */

static const size_t sizes[] = {0, 125, 126, 65535, 65536, 1024 * 1024};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Message i of the sequence: text first (letters), then binary (every byte value). */
static void fill_message(size_t i, uint8_t *buf, size_t len)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = i < NSIZES ? (uint8_t)('a' + (k + i) % 26) : (uint8_t)(k * 7 + i);
}

typedef struct echo_client {
    side_t side;
    size_t next; /* the echo expected next */
    uint8_t *expect;
} echo_client_t;

static void sizes_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    echo_client_t *c = data;
    c->side.opens++;
    cr_assert_null(req);
    cr_assert(sq_ws_is_client(ws));
    uint8_t *buf = malloc(1024 * 1024);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < 2 * NSIZES; i++) {
        size_t len = sizes[i % NSIZES];
        fill_message(i, buf, len);
        int rc = sq_ws_send(ws, i >= NSIZES, buf, len);
        cr_assert_eq(rc, 0, "send %zu: %s", i, sq_strerror(rc));
    }
    free(buf);
}

static void sizes_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    echo_client_t *c = data;
    size_t i = c->next++;
    c->side.messages++;
    cr_assert_lt(i, 2 * NSIZES);
    cr_assert_eq(binary, i >= NSIZES, "message %zu: binary %d", i, binary);
    cr_assert_eq(len, sizes[i % NSIZES], "message %zu: %zu bytes", i, len);
    fill_message(i, c->expect, len);
    cr_assert(len == 0 || memcmp(msg, c->expect, len) == 0, "message %zu differs", i);
    if (c->next == 2 * NSIZES)
        cr_assert_eq(sq_ws_close(ws, SQ_WS_NORMAL, "done"), 0);
}

static void client_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    side_record_close(data, code, reason);
}

static const sq_ws_handler_t sizes_handler = {
    .open = sizes_open,
    .message = sizes_message,
    .close = client_close,
};

Test(ws, echo_of_text_and_binary_of_every_size_with_the_squall_client, .timeout = 30)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &echo_handler, NULL, &srv), 0);
    env_listen(&e);
    echo_client_t cli = {.side = {.env = &e, .stop_after_closes = 1}};
    cli.expect = malloc(1024 * 1024);
    char url[64];
    env_url(&e, url, sizeof(url), "/echo");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &sizes_handler, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);
    free(cli.expect);

    cr_assert_eq(cli.side.opens, 1);
    cr_assert_eq(cli.side.messages, 2 * NSIZES);
    cr_assert_eq(cli.side.closes, 1);
    cr_assert_eq(cli.side.close_code, SQ_WS_NORMAL);
    cr_assert_str_eq(cli.side.close_reason, "done");
    cr_assert_eq(srv.opens, 1);
    cr_assert_eq(srv.messages, 2 * NSIZES);
    cr_assert_eq(srv.closes, 1);
    cr_assert_eq(srv.close_code, SQ_WS_NORMAL);
    cr_assert_str_eq(srv.close_reason, "done");
}

/* ---- the close handshake, both ways ---- */

static void bye_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    cr_assert_eq(sq_ws_close(ws, 4000, "client bye"), 0);
    cr_assert_eq(sq_ws_close(ws, 4000, "twice"), SQ_ECLOSED);
    cr_assert_eq(sq_ws_send_text(ws, "late", 4), SQ_ECLOSED);
}

static const sq_ws_handler_t client_closes_handler = {.open = bye_open, .close = client_close};

Test(ws, close_handshake_started_by_the_client_carries_code_and_reason, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &echo_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/echo");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &client_closes_handler, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_eq(srv.opens, 1);
    cr_assert_eq(srv.closes, 1);
    cr_assert_eq(srv.close_code, 4000);
    cr_assert_str_eq(srv.close_reason, "client bye");
    cr_assert_eq(cli.opens, 1);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, 4000, "the server echoes the code (RFC 6455 §5.5.1)");
    cr_assert_eq(srv.messages, 0);
}

static void closer_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    side_t *s = data;
    s->messages++;
    cr_assert_eq(sq_ws_close(ws, 4001, "server bye"), 0);
    cr_assert_eq(sq_ws_send_text(ws, "late", 4), SQ_ECLOSED);
}

static const sq_ws_handler_t server_closes_handler = {
    .open = echo_open,
    .message = closer_message,
    .close = echo_close,
};

static void ask_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    cr_assert_eq(sq_ws_send_text(ws, "close, please", 13), 0);
}

static void count_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    side_t *s = data;
    s->messages++;
}

static const sq_ws_handler_t ask_handler = {
    .open = ask_open,
    .message = count_message,
    .close = client_close,
};

Test(ws, close_handshake_started_by_the_server_carries_code_and_reason, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e, .stop_after_closes = 1};
    cr_assert_eq(sq_app_websocket(e.app, "/closer", &server_closes_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e};
    char url[64];
    env_url(&e, url, sizeof(url), "/closer");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &ask_handler, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_eq(cli.opens, 1);
    cr_assert_eq(cli.messages, 0);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, 4001);
    cr_assert_str_eq(cli.close_reason, "server bye");
    cr_assert_eq(srv.opens, 1);
    cr_assert_eq(srv.messages, 1);
    cr_assert_eq(srv.closes, 1);
    cr_assert_eq(srv.close_code, 4001, "the client echoes the code");
}

/* ---- .open sees the upgrade request ---- */

typedef struct seen_req {
    side_t side;
    char room[32], token[32], path[64];
    int64_t uid;
    int param_rc;
} seen_req_t;

static void params_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    seen_req_t *s = data;
    s->side.opens++;
    const char *room = sq_req_param(req, "room");
    const char *token = sq_req_query(req, "token");
    snprintf(s->room, sizeof(s->room), "%s", room ? room : "(null)");
    snprintf(s->token, sizeof(s->token), "%s", token ? token : "(null)");
    snprintf(s->path, sizeof(s->path), "%s", sq_req_path(req));
    s->param_rc = sq_req_param_int(req, "uid", &s->uid);
    cr_assert_eq(sq_ws_send_text(ws, "welcome", 7), 0);
}

static const sq_ws_handler_t params_handler = {.open = params_open, .close = echo_close};

static void close_on_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    side_t *s = data;
    s->messages++;
    sq_ws_close(ws, SQ_WS_NORMAL, NULL);
}

static void count_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    s->ws = ws;
    s->subprotocol = sq_ws_subprotocol(ws);
}

static const sq_ws_handler_t close_on_message_handler = {
    .open = count_open,
    .message = close_on_message,
    .close = client_close,
};

Test(ws, open_gets_the_path_params_and_query_of_the_upgrade_request, .timeout = 10)
{
    env_t e;
    env_init(&e);
    seen_req_t srv = {.side = {.env = &e}};
    cr_assert_eq(
        sq_app_websocket(e.app, "/rooms/{room}/users/{uid:int}", &params_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[128];
    env_url(&e, url, sizeof(url), "/rooms/lob%20by/users/42?x=1&token=abc%2Fdef");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &close_on_message_handler, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_eq(srv.side.opens, 1);
    cr_assert_str_eq(srv.room, "lob by");
    cr_assert_eq(srv.param_rc, 0);
    cr_assert_eq(srv.uid, 42);
    cr_assert_str_eq(srv.token, "abc/def");
    cr_assert_str_eq(srv.path, "/rooms/lob by/users/42");
    cr_assert_eq(srv.side.closes, 1);
    cr_assert_eq(cli.opens, 1);
    cr_assert_eq(cli.messages, 1);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_NORMAL);
}

/* ---- subprotocols ---- */

static const char *const server_protos[] = {"v3.chat", "v2.chat", NULL};

static int override_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    const char *want = sq_req_query(req, "want");
    if (want != NULL && strcmp(want, "v2") == 0)
        *subprotocol = "v2.chat";
    return 0;
}

static const sq_ws_handler_t proto_handler = {
    .open = echo_open,
    .close = echo_close,
    .accept = override_accept,
};

typedef struct proto_case {
    const char *path;
    const char *const *offer;
    const char *expect;
} proto_case_t;

static void proto_client_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    s->subprotocol = sq_ws_subprotocol(ws);
    sq_ws_close(ws, SQ_WS_NORMAL, NULL);
}

static const sq_ws_handler_t proto_client = {.open = proto_client_open, .close = client_close};

Test(ws, subprotocol_is_the_servers_first_preference_that_the_client_offered, .timeout = 10)
{
    static const char *const offer_all[] = {"v1.chat", "v2.chat", "v3.chat", NULL};
    static const char *const offer_v2[] = {"v2.chat", NULL};
    static const char *const offer_none_known[] = {"v9.chat", NULL};
    static const proto_case_t cases[] = {
        {"/p", offer_all, "v3.chat"}, /* the server's order wins over the client's */
        {"/p", offer_v2, "v2.chat"},
        {"/p", offer_none_known, NULL},       /* no common protocol: none, and still open */
        {"/p", NULL, NULL},                   /* nothing offered */
        {"/p?want=v2", offer_all, "v2.chat"}, /* the accept hook changed squall's choice */
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    env_t e;
    env_init(&e);
    sq_ws_opts_t so;
    sq_ws_opts_init(&so);
    so.subprotocols = server_protos;
    side_t srv[N];
    side_t cli[N];
    /* one route per case, so each server side records into its own slot */
    for (int i = 0; i < N; i++) {
        char pattern[16];
        snprintf(pattern, sizeof(pattern), "/p%d", i);
        memset(&srv[i], 0, sizeof(srv[i]));
        srv[i].env = &e;
        cr_assert_eq(sq_app_websocket(e.app, pattern, &proto_handler, &so, &srv[i]), 0);
    }
    env_listen(&e);
    int closes = 0;
    for (int i = 0; i < N; i++) {
        memset(&cli[i], 0, sizeof(cli[i]));
        cli[i].env = &e;
        sq_ws_opts_t co;
        sq_ws_opts_init(&co);
        co.subprotocols = cases[i].offer;
        char path[32], url[80];
        const char *q = strchr(cases[i].path, '?');
        snprintf(path, sizeof(path), "/p%d%s", i, q ? q : "");
        env_url(&e, url, sizeof(url), path);
        cr_assert_eq(sq_ws_connect(&e.loop, url, &proto_client, &cli[i], &co, NULL), 0);
    }
    /* stop once every client has closed */
    while (!e.stopping) {
        uv_run(&e.loop, UV_RUN_ONCE);
        closes = 0;
        for (int i = 0; i < N; i++)
            closes += cli[i].closes;
        if (closes == N)
            env_stop(&e);
    }
    env_run_and_finish(&e);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(cli[i].opens, 1, "case %d", i);
        cr_assert_eq(cli[i].closes, 1, "case %d", i);
        cr_assert_eq(cli[i].close_code, SQ_WS_NORMAL, "case %d", i);
        cr_assert_eq(srv[i].opens, 1, "case %d", i);
        if (cases[i].expect == NULL) {
            cr_assert_null(cli[i].subprotocol, "case %d: %s", i, cli[i].subprotocol);
            cr_assert_null(srv[i].subprotocol, "case %d: %s", i, srv[i].subprotocol);
        } else {
            cr_assert_not_null(cli[i].subprotocol, "case %d", i);
            cr_assert_str_eq(cli[i].subprotocol, cases[i].expect, "case %d", i);
            cr_assert_not_null(srv[i].subprotocol, "case %d", i);
            cr_assert_str_eq(srv[i].subprotocol, cases[i].expect, "case %d", i);
        }
    }
}

/* ---- the accept hook refuses ---- */

typedef struct refuser {
    side_t side;
    int accepts;
    char path[32];
} refuser_t;

static int refuse_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    refuser_t *r = data;
    r->accepts++;
    snprintf(r->path, sizeof(r->path), "%s", sq_req_path(req));
    return 403;
}

static const sq_ws_handler_t refusing_handler = {
    .open = echo_open,
    .close = echo_close,
    .accept = refuse_accept,
};

static const sq_ws_handler_t plain_client = {
    .open = count_open,
    .message = count_message,
    .close = client_close,
};

Test(ws, accept_hook_refusing_gives_the_client_status_403, .timeout = 10)
{
    env_t e;
    env_init(&e);
    refuser_t srv = {.side = {.env = &e}};
    cr_assert_eq(sq_app_websocket(e.app, "/private", &refusing_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/private");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &plain_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_eq(srv.accepts, 1);
    cr_assert_str_eq(srv.path, "/private");
    cr_assert_eq(srv.side.opens, 0);
    cr_assert_eq(srv.side.closes, 0);
    cr_assert_eq(cli.opens, 0);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_ABNORMAL);
    cr_assert_str_eq(cli.close_reason, "upgrade refused with status 403");
}

/* ---- ping and pong ---- */

static void pinger_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    char big[126];
    memset(big, 'x', sizeof(big));
    cr_assert_eq(sq_ws_ping(ws, big, sizeof(big)), UV_EINVAL, "RFC 6455 §5.5: 125 at most");
    cr_assert_eq(sq_ws_ping(ws, req ? "from server" : "from client", req ? 11 : 11), 0);
}

static void close_on_pong(sq_ws_t *ws, const char *payload, size_t len, void *data)
{
    echo_pong(ws, payload, len, data);
    if (sq_ws_is_client(ws))
        sq_ws_close(ws, SQ_WS_NORMAL, NULL);
}

static const sq_ws_handler_t ping_server = {
    .open = pinger_open,
    .close = echo_close,
    .pong = echo_pong,
};
static const sq_ws_handler_t ping_client = {
    .open = pinger_open,
    .close = client_close,
    .pong = close_on_pong,
};

Test(ws, ping_is_answered_with_a_pong_carrying_its_payload_both_ways, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/ping", &ping_server, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/ping");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &ping_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_eq(cli.pongs, 1);
    cr_assert_eq(cli.pong_len, 11);
    cr_assert_str_eq(cli.pong, "from client");
    cr_assert_eq(srv.pongs, 1);
    cr_assert_str_eq(srv.pong, "from server");
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_NORMAL);
    cr_assert_eq(srv.closes, 1);
}

/* ---- keepalive with a peer that answers ---- */

static void keepalive_done(uv_timer_t *t)
{
    side_t *cli = t->data;
    cr_assert_eq(cli->closes, 0, "the connection went before the test closed it");
    cr_assert_eq(sq_ws_close(cli->ws, SQ_WS_NORMAL, "enough"), 0);
    uv_close((uv_handle_t *)t, NULL);
}

/* Opens, then closes 500 ms later: the keepalive runs meanwhile. */
static void keepalive_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    count_open(ws, req, data);
    uv_timer_t *t = s->extra;
    uv_timer_init(sq_ws_loop(ws), t);
    t->data = s;
    uv_timer_start(t, keepalive_done, 500, 0);
}

static const sq_ws_handler_t keepalive_client = {
    .open = keepalive_open,
    .message = count_message,
    .close = client_close,
};

Test(ws, keepalive_pings_keep_a_connection_whose_peer_answers, .timeout = 10)
{
    env_t e;
    env_init(&e);
    sq_ws_opts_t so;
    sq_ws_opts_init(&so);
    so.ping_interval_ms = 30;
    so.pong_timeout_ms = 2000; /* generous: valgrind slows the answering peer down */
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/ka", &echo_handler, &so, &srv), 0);
    env_listen(&e);
    uv_timer_t t;
    side_t cli = {.env = &e, .stop_after_closes = 1, .extra = &t};
    char url[64];
    env_url(&e, url, sizeof(url), "/ka");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &keepalive_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);

    cr_assert_geq(srv.pongs, 3, "pongs: %d in 500 ms at one ping per 30 ms", srv.pongs);
    cr_assert_eq(srv.pong_len, 8);
    cr_assert_eq(srv.closes, 1);
    cr_assert_eq(srv.close_code, SQ_WS_NORMAL, "closed by the client, not by the keepalive");
    cr_assert_str_eq(srv.close_reason, "enough");
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_NORMAL);
}

static void pace_done(uv_timer_t *t)
{
    side_t *cli = t->data;
    cr_assert_eq(sq_ws_close(cli->ws, SQ_WS_NORMAL, NULL), 0);
    uv_close((uv_handle_t *)t, NULL);
}

static void pace_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    count_open(ws, req, data);
    uv_timer_t *t = s->extra;
    uv_timer_init(sq_ws_loop(ws), t);
    t->data = s;
    uv_timer_start(t, pace_done, 2050, 0);
}

static const sq_ws_handler_t pace_client = {
    .open = pace_open,
    .message = count_message,
    .close = client_close,
};

Test(ws, keepalive_pings_at_the_ping_interval_when_the_pong_timeout_is_shorter, .timeout = 10)
{
    env_t e;
    env_init(&e);
    sq_ws_opts_t so;
    sq_ws_opts_init(&so);
    so.ping_interval_ms = 200;
    so.pong_timeout_ms = 100; /* half the interval: a pong late by that would close it */
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/ka", &echo_handler, &so, &srv), 0);
    env_listen(&e);
    uv_timer_t t;
    side_t cli = {.env = &e, .stop_after_closes = 1, .extra = &t};
    char url[64];
    env_url(&e, url, sizeof(url), "/ka");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &pace_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);
    /* 2050 ms at one ping per 200 ms: 10 (not one per 100 ms: 20). A timer never fires
     * early, so 11 is the most; a loaded machine only makes fewer (4: over a second lost). */
    cr_assert_geq(srv.pongs, 4, "pongs: %d", srv.pongs);
    cr_assert_leq(srv.pongs, 11, "pongs: %d, pinged faster than ping_interval_ms", srv.pongs);
    cr_assert_eq(srv.close_code, SQ_WS_NORMAL);
}

/* ---- server shutdown with open WebSockets ---- */

enum { SHUTDOWN_CLIENTS = 5 };

typedef struct shutdown_state {
    env_t *env;
    side_t srv;
    side_t cli[SHUTDOWN_CLIENTS];
    uv_timer_t timer;
    int client_closes_at_server_cb;
    int server_closes_at_server_cb;
    int srv_closed;
} shutdown_state_t;

static void on_shutdown_server_closed(sq_server_t *srv, void *data)
{
    shutdown_state_t *s = data;
    s->srv_closed++;
    s->env->srv_closed++;
    s->server_closes_at_server_cb = s->srv.closes;
    for (int i = 0; i < SHUTDOWN_CLIENTS; i++)
        s->client_closes_at_server_cb += s->cli[i].closes;
}

static void shutdown_now(uv_timer_t *t)
{
    shutdown_state_t *s = t->data;
    s->env->stopping = true;
    cr_assert_eq(sq_server_destroy(s->env->srv, 2000, on_shutdown_server_closed, s), 0);
    uv_close((uv_handle_t *)t, NULL);
}

static void shutdown_srv_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    shutdown_state_t *s = data;
    if (++s->srv.opens == SHUTDOWN_CLIENTS) {
        uv_timer_init(sq_ws_loop(ws), &s->timer);
        s->timer.data = s;
        uv_timer_start(&s->timer, shutdown_now, 0, 0);
    }
}

static void shutdown_srv_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    shutdown_state_t *s = data;
    cr_assert_eq(code, SQ_WS_GOING_AWAY, "server side %d: the client echoes 1001", s->srv.closes);
    side_record_close(&s->srv, code, reason);
}

static const sq_ws_handler_t shutdown_handler = {
    .open = shutdown_srv_open,
    .message = echo_message,
    .close = shutdown_srv_close,
};

Test(ws, valgrind_server_destroy_with_open_websockets_sends_1001_then_closes, .timeout = 20)
{
    env_t e;
    env_init(&e);
    shutdown_state_t s;
    memset(&s, 0, sizeof(s));
    s.env = &e;
    cr_assert_eq(sq_app_websocket(e.app, "/stay", &shutdown_handler, NULL, &s), 0);
    env_listen(&e);
    char url[64];
    env_url(&e, url, sizeof(url), "/stay");
    for (int i = 0; i < SHUTDOWN_CLIENTS; i++) {
        s.cli[i].env = &e;
        cr_assert_eq(sq_ws_connect(&e.loop, url, &plain_client, &s.cli[i], NULL, NULL), 0);
    }
    env_run_and_finish(&e);

    cr_assert_eq(s.srv_closed, 1);
    cr_assert_eq(s.srv.opens, SHUTDOWN_CLIENTS);
    cr_assert_eq(s.srv.closes, SHUTDOWN_CLIENTS);
    cr_assert_eq(s.server_closes_at_server_cb, SHUTDOWN_CLIENTS,
                 "every server-side .close runs before the server's close callback");
    cr_assert_eq(s.client_closes_at_server_cb, SHUTDOWN_CLIENTS,
                 "every client saw its close before the server's close callback");
    for (int i = 0; i < SHUTDOWN_CLIENTS; i++) {
        cr_assert_eq(s.cli[i].opens, 1, "client %d", i);
        cr_assert_eq(s.cli[i].closes, 1, "client %d", i);
        cr_assert_eq(s.cli[i].close_code, SQ_WS_GOING_AWAY, "client %d: %d", i,
                     s.cli[i].close_code);
        cr_assert_str_eq(s.cli[i].close_reason, "server shutting down");
    }
}

/* ---- broadcast ---- */

enum { BROADCAST_CLIENTS = 20 };

typedef struct bcast {
    env_t *env;
    side_t srv;
    sq_ws_t *conns[BROADCAST_CLIENTS];
    side_t cli[BROADCAST_CLIENTS];
    uint8_t *big;
    size_t big_len;
    size_t took_small, took_big;
    int client_frame_rc;
    int server_got_from_client_frame;
} bcast_t;

static void bcast_srv_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    bcast_t *b = data;
    b->conns[b->srv.opens++] = ws;
    if (b->srv.opens < BROADCAST_CLIENTS)
        return;
    /* everyone is here: one small text frame, one large binary frame, each framed once */
    b->took_small = sq_ws_broadcast(b->conns, BROADCAST_CLIENTS, 0, "news", 4);
    b->took_big = sq_ws_broadcast(b->conns, BROADCAST_CLIENTS, 1, b->big, b->big_len);
}

static void bcast_srv_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    bcast_t *b = data;
    b->srv.messages++;
    if (len == 9 && memcmp(msg, "via frame", 9) == 0)
        b->server_got_from_client_frame++;
}

static void bcast_srv_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    bcast_t *b = data;
    side_record_close(&b->srv, code, reason);
    if (b->srv.closes == BROADCAST_CLIENTS)
        env_stop(b->env);
}

static const sq_ws_handler_t bcast_server = {
    .open = bcast_srv_open,
    .message = bcast_srv_message,
    .close = bcast_srv_close,
};

typedef struct bcast_cli {
    side_t side;
    bcast_t *b;
    int got_small, got_big;
} bcast_cli_t;

static void bcast_cli_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    bcast_cli_t *c = data;
    c->side.messages++;
    if (!binary && len == 4 && memcmp(msg, "news", 4) == 0) {
        c->got_small++;
    } else if (binary && len == c->b->big_len && memcmp(msg, c->b->big, len) == 0) {
        c->got_big++;
        if (c == (bcast_cli_t *)c->b->cli[0].extra) {
            /* a client-side connection masks, so a shared frame is copied for it */
            sq_ws_frame_t *f;
            cr_assert_eq(sq_ws_frame_create(&f, 0, "via frame", 9), 0);
            c->b->client_frame_rc = sq_ws_send_frame(ws, f);
            sq_ws_frame_release(f);
        }
        sq_ws_close(ws, SQ_WS_NORMAL, NULL);
    } else {
        cr_assert_fail("unexpected message of %zu bytes", len);
    }
}

static const sq_ws_handler_t bcast_client = {
    .open = count_open,
    .message = bcast_cli_message,
    .close = client_close,
};

Test(ws, broadcast_reaches_each_of_20_connections_exactly_once, .timeout = 20)
{
    env_t e;
    env_init(&e);
    bcast_t b;
    memset(&b, 0, sizeof(b));
    b.env = &e;
    b.client_frame_rc = 1;
    b.big_len = 300 * 1024; /* larger than a socket takes at once: partial writes */
    b.big = malloc(b.big_len);
    for (size_t i = 0; i < b.big_len; i++)
        b.big[i] = (uint8_t)(i * 31 + 7);
    cr_assert_eq(sq_app_websocket(e.app, "/room", &bcast_server, NULL, &b), 0);
    env_listen(&e);
    char url[64];
    env_url(&e, url, sizeof(url), "/room");
    bcast_cli_t cli[BROADCAST_CLIENTS];
    memset(cli, 0, sizeof(cli));
    for (int i = 0; i < BROADCAST_CLIENTS; i++) {
        cli[i].b = &b;
        cli[i].side.env = &e;
        b.cli[i].extra = &cli[i];
        cr_assert_eq(sq_ws_connect(&e.loop, url, &bcast_client, &cli[i], NULL, NULL), 0);
    }
    env_run_and_finish(&e);
    free(b.big);

    cr_assert_eq(b.took_small, BROADCAST_CLIENTS);
    cr_assert_eq(b.took_big, BROADCAST_CLIENTS);
    for (int i = 0; i < BROADCAST_CLIENTS; i++) {
        cr_assert_eq(cli[i].side.opens, 1, "client %d", i);
        cr_assert_eq(cli[i].got_small, 1, "client %d", i);
        cr_assert_eq(cli[i].got_big, 1, "client %d", i);
        cr_assert_eq(cli[i].side.messages, 2, "client %d", i);
        cr_assert_eq(cli[i].side.closes, 1, "client %d", i);
        cr_assert_eq(cli[i].side.close_code, SQ_WS_NORMAL, "client %d", i);
    }
    cr_assert_eq(b.client_frame_rc, 0);
    cr_assert_eq(b.server_got_from_client_frame, 1);
    cr_assert_eq(b.srv.messages, 1);
    cr_assert_eq(b.srv.closes, BROADCAST_CLIENTS);
}

Test(ws, broadcast_frame_outlives_the_callers_reference_until_written, .timeout = 5)
{
    /* sq_ws_frame_create/release without connections: the last release frees it (ASan
     * and valgrind see a leak or a double free otherwise). */
    sq_ws_frame_t *f;
    cr_assert_eq(sq_ws_frame_create(&f, 1, "x", 1), 0);
    sq_ws_frame_release(f);
    cr_assert_eq(sq_ws_broadcast(NULL, 0, 0, "nobody", 6), 0);
    sq_ws_frame_release(NULL);
}

/* ======================================================================================
 * The client's failures: each comes back as .close(SQ_WS_ABNORMAL, reason), once
 * ==================================================================================== */

typedef struct lone {
    uv_loop_t loop;
    side_t cli;
    uint64_t started, closed_at;
    int error; /* sq_ws_error() in .close */
} lone_t;

static void lone_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    lone_t *l = data;
    l->closed_at = uv_now(&l->loop);
    l->error = sq_ws_error(ws);
    side_record_close(&l->cli, code, reason);
}

static void lone_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    lone_t *l = data;
    count_open(ws, req, &l->cli);
}

static void lone_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    lone_t *l = data;
    count_message(ws, binary, msg, len, &l->cli);
}

static const sq_ws_handler_t lone_client = {
    .open = lone_open,
    .message = lone_message,
    .close = lone_close,
};

/* Connects to url on a fresh loop, runs it dry, checks the single .close. */
static void expect_connect_failure(const char *url, const sq_ws_opts_t *opts,
                                   const char *reason_prefix, lone_t *l)
{
    memset(l, 0, sizeof(*l));
    cr_assert_eq(uv_loop_init(&l->loop), 0);
    l->started = uv_now(&l->loop);
    cr_assert_eq(sq_ws_connect(&l->loop, url, &lone_client, l, opts, NULL), 0);
    cr_assert_eq(l->cli.closes, 0, "never called back from inside sq_ws_connect");
    uv_run(&l->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&l->loop), 0);
    cr_assert_eq(l->cli.opens, 0);
    cr_assert_eq(l->cli.closes, 1);
    cr_assert_eq(l->cli.close_code, SQ_WS_ABNORMAL);
    cr_assert(strncmp(l->cli.close_reason, reason_prefix, strlen(reason_prefix)) == 0,
              "reason \"%s\", expected \"%s...\"", l->cli.close_reason, reason_prefix);
}

Test(ws, client_connect_to_a_refused_port_reports_abnormal_close, .timeout = 10)
{
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", th_free_port());
    lone_t l;
    expect_connect_failure(url, NULL, "connect: ", &l);
    cr_assert(strstr(l.cli.close_reason, "refused") != NULL, "%s", l.cli.close_reason);
    cr_assert_eq(l.error, UV_ECONNREFUSED, "sq_ws_error: %s", sq_err_name(l.error));
}

Test(ws, client_dns_failure_reports_abnormal_close, .timeout = 30)
{
    lone_t l;
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.handshake_timeout_ms = 20000; /* a resolver that is slow to fail still says DNS */
    expect_connect_failure("ws://no-such-host.invalid:80/ws", &o, "DNS: ", &l);
}

/* A TCP listener that never accepts: the kernel completes the connection, nobody answers. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 8), 0);
    socklen_t sl = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

Test(ws, client_handshake_timeout_reports_abnormal_close, .timeout = 10)
{
    int port;
    int fd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.handshake_timeout_ms = 200;
    lone_t l;
    expect_connect_failure(url, &o, "handshake timed out", &l);
    cr_assert_eq(l.error, UV_ETIMEDOUT, "sq_ws_error: %s", sq_err_name(l.error));
    cr_assert_geq(l.closed_at - l.started, 190, "after %llu ms",
                  (unsigned long long)(l.closed_at - l.started));
    close(fd);
}

/* ---- an IPv6 literal in the URL ---- */

static void v6_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    count_open(ws, req, data);
    cr_assert_eq(sq_ws_send_text(ws, "over v6", 7), 0);
}

static const sq_ws_handler_t v6_client = {
    .open = v6_open,
    .message = close_on_message,
    .close = client_close,
};

Test(ws, client_connects_to_an_ipv6_literal, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &echo_handler, NULL, &srv), 0);
    cr_assert_eq(sq_server_create(&e.srv, &e.loop, e.app, NULL), 0);
    int rc = sq_server_listen(e.srv, "::1", 0);
    if (rc != 0) {
        sq_server_destroy(e.srv, 0, NULL, NULL);
        uv_run(&e.loop, UV_RUN_DEFAULT);
        uv_loop_close(&e.loop);
        sq_app_destroy(e.app);
        cr_skip_test("no IPv6 loopback here: %s", sq_strerror(rc));
    }
    e.port = sq_server_port(e.srv);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    snprintf(url, sizeof(url), "ws://[::1]:%d/echo", e.port);
    cr_assert_eq(sq_ws_connect(&e.loop, url, &v6_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);
    cr_assert_eq(cli.opens, 1);
    cr_assert_eq(cli.messages, 1);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_NORMAL);
    cr_assert_eq(srv.messages, 1);
}

/* ---- the client's own limits and checks ---- */

static void big_on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    static char big[2000];
    memset(big, 'b', sizeof(big));
    cr_assert_eq(sq_ws_send_text(ws, big, sizeof(big)), 0);
}

static const sq_ws_handler_t big_sender = {
    .open = big_on_open,
    .message = count_message,
    .close = echo_close,
};

static void text_checks_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    side_t *s = data;
    s->opens++;
    /* RFC 6455 §5.6: text is UTF-8; squall refuses to send anything else */
    cr_assert_eq(sq_ws_send_text(ws, "bad \xC0\xAF", 6), UV_EINVAL);
    cr_assert_eq(sq_ws_send_text(ws, "cut \xE2\x82", 6), UV_EINVAL);
    cr_assert_eq(sq_ws_send_binary(ws, "\xC0\xAF", 2), 0, "binary is anything");
}

static const sq_ws_handler_t text_checks_client = {
    .open = text_checks_open,
    .message = count_message,
    .close = client_close,
};

Test(ws, client_message_over_its_max_message_bytes_gets_1009, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/big", &big_sender, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    sq_ws_opts_t co;
    sq_ws_opts_init(&co);
    co.max_message_bytes = 1000;
    char url[64];
    env_url(&e, url, sizeof(url), "/big");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &plain_client, &cli, &co, NULL), 0);
    env_run_and_finish(&e);
    cr_assert_eq(cli.opens, 1);
    cr_assert_eq(cli.messages, 0);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_TOO_BIG, "the client failed it: %d", cli.close_code);
    cr_assert_eq(srv.closes, 1);
    cr_assert_eq(srv.close_code, SQ_WS_TOO_BIG, "the server heard why: %d", srv.close_code);
}

Test(ws, sending_invalid_utf8_as_text_is_refused_with_einval, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &echo_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/echo");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &text_checks_client, &cli, NULL, NULL), 0);
    /* run until the binary message has come back */
    while (cli.messages == 0 && cli.closes == 0)
        uv_run(&e.loop, UV_RUN_ONCE);
    cr_assert_eq(cli.messages, 1);
    cr_assert_eq(srv.messages, 1, "only the binary message went out");
    env_stop(&e);
    env_run_and_finish(&e);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_GOING_AWAY);
}

Test(ws, client_upgrade_refused_reports_the_status, .timeout = 10)
{
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/ws", &echo_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/nowhere");
    cr_assert_eq(sq_ws_connect(&e.loop, url, &plain_client, &cli, NULL, NULL), 0);
    env_run_and_finish(&e);
    cr_assert_eq(cli.opens, 0);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_ABNORMAL);
    cr_assert_str_eq(cli.close_reason, "upgrade refused with status 404");
    cr_assert_eq(srv.opens, 0);
}

Test(ws, client_closed_before_open_is_cancelled_with_one_close, .timeout = 10)
{
    /* at once (while resolving), against a live server */
    env_t e;
    env_init(&e);
    side_t srv = {.env = &e};
    cr_assert_eq(sq_app_websocket(e.app, "/ws", &echo_handler, NULL, &srv), 0);
    env_listen(&e);
    side_t cli = {.env = &e, .stop_after_closes = 1};
    char url[64];
    env_url(&e, url, sizeof(url), "/ws");
    sq_ws_t *ws = NULL;
    cr_assert_eq(sq_ws_connect(&e.loop, url, &plain_client, &cli, NULL, &ws), 0);
    cr_assert_not_null(ws);
    cr_assert_eq(sq_ws_close(ws, SQ_WS_NORMAL, NULL), 0);
    env_run_and_finish(&e);
    cr_assert_eq(cli.opens, 0);
    cr_assert_eq(cli.closes, 1);
    cr_assert_eq(cli.close_code, SQ_WS_ABNORMAL);
    cr_assert_str_eq(cli.close_reason, "cancelled");
    cr_assert_eq(srv.opens, 0);
    cr_assert_eq(srv.closes, 0);
}

static void cancel_later(uv_timer_t *t)
{
    sq_ws_t *ws = t->data;
    cr_assert_eq(sq_ws_close(ws, SQ_WS_NORMAL, NULL), 0);
    uv_close((uv_handle_t *)t, NULL);
}

Test(ws, client_closed_during_the_handshake_is_cancelled_with_one_close, .timeout = 10)
{
    int port;
    int fd = silent_listener(&port);
    lone_t l;
    memset(&l, 0, sizeof(l));
    cr_assert_eq(uv_loop_init(&l.loop), 0);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    sq_ws_t *ws = NULL;
    cr_assert_eq(sq_ws_connect(&l.loop, url, &lone_client, &l, NULL, &ws), 0);
    uv_timer_t t;
    uv_timer_init(&l.loop, &t);
    t.data = ws;
    uv_timer_start(&t, cancel_later, 100, 0);
    uv_run(&l.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&l.loop), 0);
    cr_assert_eq(l.cli.opens, 0);
    cr_assert_eq(l.cli.closes, 1);
    cr_assert_eq(l.cli.close_code, SQ_WS_ABNORMAL);
    cr_assert_str_eq(l.cli.close_reason, "cancelled");
    cr_assert_eq(l.error, UV_ECANCELED, "sq_ws_error: %s", sq_err_name(l.error));
    close(fd);
}

Test(ws, client_bad_url_returns_einval_and_calls_nothing, .timeout = 5)
{
    static const char *const bad[] = {
        "http://127.0.0.1/ws", "wss:/x",         "ws://",      "ws://:80/",      "ws://host:0/",
        "ws://host:99999/",    "ws://host:abc/", "ws://[::1/", "ws://host#frag", "",
    };
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    side_t cli;
    memset(&cli, 0, sizeof(cli));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sq_ws_t *ws = (sq_ws_t *)&cli;
        int rc = sq_ws_connect(&loop, bad[i], &plain_client, &cli, NULL, &ws);
        cr_assert_eq(rc, UV_EINVAL, "\"%s\": %s", bad[i], sq_err_name(rc));
        cr_assert_eq(ws, (sq_ws_t *)&cli, "\"%s\": out untouched on failure", bad[i]);
    }
    cr_assert_eq(sq_ws_connect(&loop, NULL, &plain_client, &cli, NULL, NULL), UV_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(cli.opens + cli.closes + cli.messages, 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ======================================================================================
 * The server against hand-built frames over a plain TCP socket
 * ==================================================================================== */

/* What the server-side handler saw, read by the test thread (atomics, or after stop). */
typedef struct raw_srv {
    atomic_int opens, messages, closes, pongs, drains;
    atomic_int close_code;
    atomic_int last_len;
} raw_srv_t;

static void raw_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    raw_srv_t *s = data;
    atomic_fetch_add(&s->opens, 1);
}

static void raw_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    raw_srv_t *s = data;
    atomic_store(&s->last_len, (int)len);
    atomic_fetch_add(&s->messages, 1);
    sq_ws_send(ws, binary, msg, len);
}

static void raw_pong(sq_ws_t *ws, const char *payload, size_t len, void *data)
{
    raw_srv_t *s = data;
    atomic_fetch_add(&s->pongs, 1);
}

static void raw_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    raw_srv_t *s = data;
    atomic_store(&s->close_code, code);
    atomic_fetch_add(&s->closes, 1);
}

static const sq_ws_handler_t raw_echo = {
    .open = raw_open,
    .message = raw_message,
    .close = raw_close,
    .pong = raw_pong,
};

/* raw_echo, but the text "bye" starts the close handshake (4000) instead. */
static void bye_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    if (!binary && len == 3 && memcmp(msg, "bye", 3) == 0) {
        raw_srv_t *s = data;
        atomic_fetch_add(&s->messages, 1);
        sq_ws_close(ws, 4000, "bye");
        return;
    }
    raw_message(ws, binary, msg, len, data);
}

static const sq_ws_handler_t bye_on_message = {
    .open = raw_open,
    .message = bye_message,
    .close = raw_close,
    .pong = raw_pong,
};

enum { RAW_MAX_MESSAGE = 64 * 1024 };

typedef struct raw_env {
    sq_app_t *app;
    th_server_t *ts;
    int port;
    raw_srv_t st;
} raw_env_t;

/* A server with /echo (max_message_bytes RAW_MAX_MESSAGE) on its own thread. */
static void raw_start(raw_env_t *r)
{
    memset(r, 0, sizeof(*r));
    cr_assert_eq(sq_app_create(&r->app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = RAW_MAX_MESSAGE;
    o.close_timeout_ms = 1000;
    cr_assert_eq(sq_app_websocket(r->app, "/echo", &raw_echo, &o, &r->st), 0);
    r->ts = th_server_start(r->app, NULL);
    r->port = th_server_port(r->ts);
}

static void raw_stop(raw_env_t *r)
{
    th_server_stop(r->ts, 1000);
    sq_app_destroy(r->app);
}

Test(ws, bytes_behind_the_upgrade_request_in_the_same_write_are_the_first_frames, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    uint8_t frames[64];
    size_t n = frame_build(frames, FIN | OP_TEXT, true, "early", 5);
    n += frame_build(frames + n, FIN | OP_BIN, true, "\x00\x01", 2);
    th_conn_t c;
    raw_upgrade_with(&c, r.port, frames, n);
    expect_frame(&c, OP_TEXT, "early", 5);
    expect_frame(&c, OP_BIN, "\x00\x01", 2);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.opens), 1);
    cr_assert_eq(atomic_load(&r.st.messages), 2);
}

Test(ws, bytes_behind_the_upgrade_request_may_end_inside_a_frame, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    uint8_t frame[64];
    size_t n = frame_build(frame, FIN | OP_TEXT, true, "split frame", 11);
    th_conn_t c;
    /* header, mask, one payload byte: read with the request, which the 101 says was read */
    raw_upgrade_with(&c, r.port, frame, 5);
    cr_assert_eq(th_conn_send(&c, frame + 5, n - 5), 0);
    expect_frame(&c, OP_TEXT, "split frame", 11);
    th_conn_close(&c);
    raw_stop(&r);
}

Test(ws, fragmented_message_is_reassembled, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, OP_TEXT, true, "Hel", 3);
    frame_send(&c, OP_CONT, true, "", 0);
    frame_send(&c, OP_CONT, true, "lo, ", 4);
    frame_send(&c, FIN | OP_CONT, true, "world", 5);
    expect_frame(&c, OP_TEXT, "Hello, world", 12);
    frame_send(&c, OP_BIN, true, "\x01\x02", 2);
    frame_send(&c, FIN | OP_CONT, true, "\x03", 1);
    expect_frame(&c, OP_BIN, "\x01\x02\x03", 3);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.messages), 2);
}

Test(ws, ping_between_fragments_is_answered_before_the_message_completes, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, OP_TEXT, true, "first half, ", 12);
    frame_send(&c, FIN | OP_PING, true, "mid", 3);
    expect_frame(&c, OP_PONG, "mid", 3);
    cr_assert_eq(atomic_load(&r.st.messages), 0);
    frame_send(&c, FIN | OP_CONT, true, "second half", 11);
    expect_frame(&c, OP_TEXT, "first half, second half", 23);
    th_conn_close(&c);
    raw_stop(&r);
}

Test(ws, unsolicited_pong_is_ignored, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, FIN | OP_PONG, true, "unasked", 7);
    frame_send(&c, FIN | OP_TEXT, true, "after", 5);
    expect_frame(&c, OP_TEXT, "after", 5); /* the first thing back: no close, no pong */
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.pongs), 1);
    cr_assert_eq(atomic_load(&r.st.closes), 1);
    cr_assert_eq(atomic_load(&r.st.close_code), SQ_WS_ABNORMAL);
}

Test(ws, client_close_is_echoed_then_the_server_closes_tcp, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    uint8_t p[64];
    size_t n = close_payload(p, 3001, "app says bye");
    frame_send(&c, FIN | OP_CLOSE, true, p, n);
    expect_close(&c, 3001);
    th_conn_close(&c);
    /* and a close frame without a code is answered by one without a code */
    raw_upgrade(&c, r.port);
    frame_send(&c, FIN | OP_CLOSE, true, "", 0);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_eq(f.len, 0);
    frame_free(&f);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.closes), 2);
    cr_assert_eq(atomic_load(&r.st.close_code), SQ_WS_NO_STATUS);
}

/* ---- the close-code table: what a client must never send, and the code that fails the
 * connection (RFC 6455 §5.1-5.5, §7.4, §8.1) ----
 *
 * One row per input, after a good handshake on a connection of its own: the frames (or
 * raw bytes), and the close code the server must fail the connection with. The server
 * sends a close frame with that code, unmasked, and closes TCP; its .close runs once with
 * the same code; no message reaches .message. A row with code 0 is accepted instead: the
 * message comes back whole, and the peer leaving without a close frame is reported as
 * 1006. Every row runs even when one before it failed; each failure names its row. */

/* One frame of a row: b0 is FIN | RSV bits | opcode. */
typedef struct frame_spec {
    uint8_t b0;
    bool unmasked; /* a client must mask (RFC 6455 §5.3) */
    const char *p; /* the payload ... */
    size_t len;
    size_t fill; /* ... or this many bytes of 'm' (after the code, in a close) */
    bool close;  /* a close payload: the code, big-endian, then the reason */
    int code;
    const char *reason;
} frame_spec_t;

typedef struct ws_row {
    const char *name;
    frame_spec_t f[2];
    int nframes;
    const uint8_t *raw; /* raw bytes instead of frames */
    size_t raw_len;
    size_t split; /* the last `split` bytes go in a second write, sent once a ping
                     written in front of the first has been answered: the server has
                     read the first part by then */
    int code;     /* the close code; 0: the message is accepted and echoed */
} ws_row_t;

#define PL(lit) .p = (lit), .len = sizeof(lit) - 1
#define FRAME(b0_, ...)                                                                            \
    {                                                                                              \
        .b0 = (b0_), __VA_ARGS__                                                                   \
    }
#define CLOSE_FRAME(b0_, code_, ...)                                                               \
    {                                                                                              \
        .b0 = (b0_), .close = true, .code = (code_), __VA_ARGS__                                   \
    }
#define ONE(fr) .f = {fr}, .nframes = 1
#define TWO(a, b) .f = {a, b}, .nframes = 2

/* a header that announces 2^62 bytes, and the first payload byte */
static const uint8_t header_2_62[] = {
    FIN | OP_BIN, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 'x'};

static const ws_row_t ws_rows[] = {
    /* RFC 6455 §5.1: a server fails an unmasked client frame */
    {"unmasked: text", ONE(FRAME(FIN | OP_TEXT, PL("plain"), .unmasked = true)), .code = 1002},
    {"unmasked: ping", ONE(FRAME(FIN | OP_PING, PL("plain"), .unmasked = true)), .code = 1002},
    /* §5.2: reserved bits without an extension that defines them */
    {"RSV1", ONE(FRAME(FIN | RSV1 | OP_TEXT, PL("x"))), .code = 1002},
    {"RSV2", ONE(FRAME(FIN | RSV2 | OP_BIN, PL("x"))), .code = 1002},
    {"RSV3", ONE(FRAME(FIN | RSV3 | OP_PING, PL("x"))), .code = 1002},
    /* reserved opcodes, and continuations that continue nothing */
    {"reserved opcode 0x3", ONE(FRAME(FIN | 0x3, PL("x"))), .code = 1002},
    {"reserved opcode 0x7", ONE(FRAME(FIN | 0x7, PL("x"))), .code = 1002},
    {"reserved opcode 0xB", ONE(FRAME(FIN | 0xB, PL("x"))), .code = 1002},
    {"reserved opcode 0xF", ONE(FRAME(FIN | 0xF, PL("x"))), .code = 1002},
    {"continuation without a message", ONE(FRAME(FIN | OP_CONT, PL("x"))), .code = 1002},
    {"new data frame inside a fragmented message",
     TWO(FRAME(OP_TEXT, PL("a")), FRAME(FIN | OP_TEXT, PL("b"))), .code = 1002},
    /* §5.5: control frames carry 125 bytes at most, and are never fragmented */
    {"control frame of 126 bytes: ping", ONE(FRAME(FIN | OP_PING, .fill = 126)), .code = 1002},
    {"control frame of 126 bytes: pong", ONE(FRAME(FIN | OP_PONG, .fill = 126)), .code = 1002},
    {"control frame of 126 bytes: close", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1000, .fill = 126)),
     .code = 1002},
    {"fragmented control frame: ping", ONE(FRAME(OP_PING, PL("no fin"))), .code = 1002},
    {"fragmented control frame: close", ONE(CLOSE_FRAME(OP_CLOSE, 1000)), .code = 1002},
    /* §7.4.1-2: 1005 and 1006 are never sent, 1004 and 1015 are reserved, under 1000 and
     * 1016-2999 are not assigned to endpoints, 5000 and up do not exist */
    {"close code 0", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 0)), .code = 1002},
    {"close code 999", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 999)), .code = 1002},
    {"close code 1004", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1004)), .code = 1002},
    {"close code 1005", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1005)), .code = 1002},
    {"close code 1006", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1006)), .code = 1002},
    {"close code 1015", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1015)), .code = 1002},
    {"close code 1016", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1016)), .code = 1002},
    {"close code 2000", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 2000)), .code = 1002},
    {"close code 2999", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 2999)), .code = 1002},
    {"close code 5000", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 5000)), .code = 1002},
    {"close code 65535", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 65535)), .code = 1002},
    /* §5.5.1: a body of one byte cannot hold a status code */
    {"close body of one byte", ONE(FRAME(FIN | OP_CLOSE, PL("\x03"))), .code = 1002},
    /* §5.6, §8.1: text is UTF-8, checked as it comes */
    {"invalid UTF-8: overlong, in one frame", ONE(FRAME(FIN | OP_TEXT, PL("bad \xC0\xAF"))),
     .code = 1007},
    {"invalid UTF-8: a surrogate, in one frame", ONE(FRAME(FIN | OP_TEXT, PL("\xED\xA0\x80"))),
     .code = 1007},
    {"invalid UTF-8: truncated at the end of the message",
     ONE(FRAME(FIN | OP_TEXT, PL("ok \xE2\x82"))), .code = 1007},
    /* each fragment alone could still become valid, together not */
    {"invalid UTF-8: across two fragments",
     TWO(FRAME(OP_TEXT, PL("euro \xE2\x82")), FRAME(FIN | OP_CONT, PL("\x28 !"))), .code = 1007},
    /* a fragment that ends inside a character, and a final fragment that does not end it */
    {"invalid UTF-8: fragments ending inside a character",
     TWO(FRAME(OP_TEXT, PL("\xF0\x9F")), FRAME(FIN | OP_CONT, PL("\x98"))), .code = 1007},
    /* inside one frame: the first write ends after E2 82 */
    {"invalid UTF-8: across two TCP writes", ONE(FRAME(FIN | OP_TEXT, PL("abc\xE2\x82\x41xyz"))),
     .split = 4, .code = 1007},
    {"invalid UTF-8: a close reason", ONE(CLOSE_FRAME(FIN | OP_CLOSE, 1000, .reason = "\xFF\xFE")),
     .code = 1007},
    /* max_message_bytes (RAW_MAX_MESSAGE): exactly the limit passes */
    {"max_message_bytes: exactly", ONE(FRAME(FIN | OP_BIN, .fill = RAW_MAX_MESSAGE)), .code = 0},
    {"max_message_bytes: one byte over, in one frame",
     ONE(FRAME(FIN | OP_BIN, .fill = RAW_MAX_MESSAGE + 1)), .code = 1009},
    {"max_message_bytes: over in two fragments that each fit",
     TWO(FRAME(OP_TEXT, .fill = RAW_MAX_MESSAGE / 2 + 1),
         FRAME(FIN | OP_CONT, .fill = RAW_MAX_MESSAGE / 2 + 1)),
     .code = 1009},
    /* refused at its first payload byte, not after 2^62 of them */
    {"max_message_bytes: a header announcing 2^62 bytes", .raw = header_2_62,
     .raw_len = sizeof(header_2_62), .code = 1009},
};

/* The payload of frame spec f (malloc'd). */
static uint8_t *spec_payload(const frame_spec_t *f, size_t *len)
{
    size_t head = f->close ? 2 + (f->reason ? strlen(f->reason) : 0) : 0;
    size_t n = f->fill > 0 ? (f->fill > head ? f->fill : head) : head + f->len;
    uint8_t *p = malloc(n + 1);
    cr_assert_not_null(p, "out of memory");
    if (f->close)
        close_payload(p, f->code, f->reason);
    if (f->fill > 0)
        memset(p + head, 'm', n - head);
    else if (f->len > 0)
        memcpy(p + head, f->p, f->len);
    *len = n;
    return p;
}

/* TH_ROW_CHECK for the row at hand */
#define ROW_CHECK(cond, fmt, ...) TH_ROW_CHECK(row->name, cond, fmt, ##__VA_ARGS__)

static void run_ws_row(raw_env_t *r, const ws_row_t *row)
{
    /* the bytes on the wire, and (for an accepted row) the message they make */
    uint8_t *bytes = NULL, *msg = NULL;
    size_t n = 0, msg_len = 0;
    if (row->raw != NULL) {
        bytes = malloc(row->raw_len);
        cr_assert_not_null(bytes, "[%s] out of memory", row->name);
        memcpy(bytes, row->raw, row->raw_len);
        n = row->raw_len;
    }
    for (int i = 0; i < row->nframes; i++) {
        const frame_spec_t *f = &row->f[i];
        size_t pl;
        uint8_t *p = spec_payload(f, &pl);
        uint8_t *b = realloc(bytes, n + pl + 14);
        uint8_t *m = realloc(msg, msg_len + pl + 1);
        cr_assert(b != NULL && m != NULL, "[%s] out of memory", row->name);
        bytes = b;
        msg = m;
        n += frame_build(bytes + n, f->b0, !f->unmasked, p, pl);
        memcpy(msg + msg_len, p, pl);
        msg_len += pl;
        free(p);
    }
    int opcode = row->nframes > 0 ? row->f[0].b0 & 0x0F : -1;
    int closes0 = atomic_load(&r->st.closes), messages0 = atomic_load(&r->st.messages);
    th_conn_t c = {.fd = -1};
    rframe_t f = {0};
    raw_case = row->name; /* raw_upgrade's messages name the row */
    raw_upgrade(&c, r->port);
    size_t first = n - row->split;
    if (row->split > 0) {
        uint8_t *w = malloc(first + 32);
        cr_assert_not_null(w, "[%s] out of memory", row->name);
        size_t wl = frame_build(w, FIN | OP_PING, true, "sync", 4);
        memcpy(w + wl, bytes, first);
        int rc = th_conn_send(&c, w, wl + first);
        free(w);
        ROW_CHECK(rc == 0, "send: %s", uv_err_name(rc));
        rc = frame_read(&c, &f, 5000);
        ROW_CHECK(rc == 0 && f.opcode == OP_PONG && f.len == 4 && memcmp(f.payload, "sync", 4) == 0,
                  "the pong to the ping in front: %s, opcode %d", uv_err_name(rc), f.opcode);
        frame_free(&f);
    }
    size_t from = row->split > 0 ? first : 0;
    int rc = th_conn_send(&c, bytes + from, n - from);
    ROW_CHECK(rc == 0, "send: %s", uv_err_name(rc));
    rc = frame_read(&c, &f, 5000);
    ROW_CHECK(rc == 0, "waiting for %s: %s", row->code ? "the close frame" : "the echo",
              uv_err_name(rc));
    ROW_CHECK(!f.masked, "a server never masks (RFC 6455 §5.1)");
    ROW_CHECK(f.fin && (f.b0 & 0x70) == 0, "frame header 0x%02X", f.b0);
    int closes, code;
    if (row->code != 0) {
        ROW_CHECK(f.opcode == OP_CLOSE, "opcode %d, want a close frame", f.opcode);
        ROW_CHECK(f.len >= 2, "a close frame without a status code; want %d", row->code);
        int got = f.payload[0] << 8 | f.payload[1];
        ROW_CHECK(got == row->code, "close code %d, want %d (reason \"%s\")", got, row->code,
                  (char *)f.payload + 2);
        rc = th_conn_wait_closed(&c, 5000);
        ROW_CHECK(rc == 0, "the server closes TCP after failing: %s", uv_err_name(rc));
        code = row->code;
    } else {
        ROW_CHECK(f.opcode == opcode, "opcode %d, want %d", f.opcode, opcode);
        ROW_CHECK(f.len == msg_len && memcmp(f.payload, msg, msg_len) == 0,
                  "an echo of %zu bytes, want the %zu sent", f.len, msg_len);
        th_conn_close(&c); /* without a close frame */
        code = SQ_WS_ABNORMAL;
    }
    closes = th_wait_atomic(&r->st.closes, closes0 + 1, 5000);
    ROW_CHECK(closes == closes0 + 1, "%d .close calls, want one", closes - closes0);
    ROW_CHECK(atomic_load(&r->st.close_code) == code, ".close got %d, want %d",
              atomic_load(&r->st.close_code), code);
    int delivered = atomic_load(&r->st.messages) - messages0;
    ROW_CHECK(delivered == (row->code == 0), "%d messages delivered", delivered);
out:
    frame_free(&f);
    th_conn_close(&c);
    free(bytes);
    free(msg);
}

Test(ws, every_row_of_the_close_code_table, .timeout = 60)
{
    raw_env_t r;
    raw_start(&r);
    for (size_t i = 0; i < sizeof(ws_rows) / sizeof(ws_rows[0]); i++)
        run_ws_row(&r, &ws_rows[i]);
    /* and the server still serves */
    raw_case = "after the table";
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, FIN | OP_TEXT, true, "still here", 10);
    expect_frame(&c, OP_TEXT, "still here", 10);
    th_conn_close(&c);
    raw_stop(&r);
}

Test(ws, valid_utf8_split_across_fragments_and_writes_is_accepted, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    static const char text[] = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
    size_t tl = sizeof(text) - 1;
    /* a fragment boundary after every byte */
    for (size_t i = 0; i < tl; i++)
        frame_send(&c, (i + 1 == tl ? FIN : 0) | (i == 0 ? OP_TEXT : OP_CONT), true, text + i, 1);
    expect_frame(&c, OP_TEXT, text, tl);
    /* one frame, one byte per TCP write */
    uint8_t f[64];
    size_t fl = frame_build(f, FIN | OP_TEXT, true, text, tl);
    cr_assert_eq(th_conn_send_split(&c, f, fl, 1, 2000), 0);
    expect_frame(&c, OP_TEXT, text, tl);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.messages), 2);
}

Test(ws, handshake_errors_get_400_or_426, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    th_res_t res;
    /* no key */
    cr_assert_eq(th_request(r.port,
                            "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                            &res),
                 0);
    cr_assert_eq(res.status, 400);
    th_res_free(&res);
    /* a key that is not 16 bytes of base64 */
    cr_assert_eq(th_request(r.port,
                            "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n",
                            &res),
                 0);
    cr_assert_eq(res.status, 400);
    th_res_free(&res);
    /* version 8: 426 naming the version squall speaks (RFC 6455 §4.4) */
    cr_assert_eq(th_request(r.port,
                            "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                            "Sec-WebSocket-Version: 8\r\n\r\n",
                            &res),
                 0);
    cr_assert_eq(res.status, 426);
    const char *v = th_res_header(&res, "Sec-WebSocket-Version");
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "13");
    th_res_free(&res);
    /* a plain GET */
    cr_assert_eq(th_request(r.port, "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", &res), 0);
    cr_assert_eq(res.status, 426);
    v = th_res_header(&res, "Sec-WebSocket-Version");
    cr_assert(v != NULL && strcmp(v, "13") == 0);
    th_res_free(&res);
    /* Upgrade without Connection: upgrade */
    cr_assert_eq(th_request(r.port,
                            "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                            "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                            &res),
                 0);
    cr_assert_eq(res.status, 426);
    th_res_free(&res);
    /* HTTP/1.0 has no Upgrade (RFC 6455 §4.1: the handshake is HTTP/1.1 or later) */
    cr_assert_eq(th_request(r.port,
                            "GET /echo HTTP/1.0\r\nHost: t\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n",
                            &res),
                 0);
    cr_assert_eq(res.status, 400);
    th_res_free(&res);
    /* and a real one still works on the same server */
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, FIN | OP_TEXT, true, "fine", 4);
    expect_frame(&c, OP_TEXT, "fine", 4);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.opens), 1);
}

/* ---- the accept hook as an origin check ---- */

static int origin_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    const char *origin = sq_req_header(req, "Origin");
    return origin != NULL && strcmp(origin, "https://good.example") == 0 ? 0 : 403;
}

static const sq_ws_handler_t origin_handler = {
    .open = raw_open,
    .message = raw_message,
    .close = raw_close,
    .accept = origin_accept,
};

Test(ws, accept_hook_sees_the_origin_header_of_the_handshake, .timeout = 10)
{
    raw_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/echo", &origin_handler, NULL, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    static const char *const origins[] = {"Origin: https://evil.example\r\n", "", NULL};
    for (int i = 0; origins[i] != NULL; i++) {
        char req[512];
        snprintf(req, sizeof(req),
                 "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 origins[i]);
        th_res_t res;
        cr_assert_eq(th_request(th_server_port(ts), req, &res), 0);
        cr_assert_eq(res.status, 403, "origin \"%s\": %d", origins[i], res.status);
        th_res_free(&res);
    }
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Origin: https://good.example\r\n\r\n"),
                 0);
    th_res_t res;
    cr_assert_eq(th_conn_read_res(&c, &res, 5000, false), 0);
    cr_assert_eq(res.status, 101);
    th_res_free(&res);
    frame_send(&c, FIN | OP_TEXT, true, "welcome", 7);
    expect_frame(&c, OP_TEXT, "welcome", 7);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.opens), 1);
}

/* ---- shutdown with a peer that never answers the 1001 ---- */

Test(ws, server_destroy_waits_for_the_close_handshake_until_the_grace_deadline, .timeout = 15)
{
    raw_env_t r;
    raw_start(&r); /* close_timeout_ms 1000: longer than the grace below */
    th_conn_t c;
    raw_upgrade(&c, r.port);
    frame_send(&c, FIN | OP_TEXT, true, "hello", 5);
    expect_frame(&c, OP_TEXT, "hello", 5);
    uint64_t took = th_server_stop(r.ts, 300);
    sq_app_destroy(r.app);
    /* the client got the 1001 and, never answering, was cut off at the deadline */
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 1000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_geq(f.len, 2);
    cr_assert_eq(f.payload[0] << 8 | f.payload[1], SQ_WS_GOING_AWAY);
    frame_free(&f);
    cr_assert_eq(th_conn_wait_closed(&c, 1000), 0);
    th_conn_close(&c);
    cr_assert_geq(took, 250, "the server waited %llu ms for the answer", (unsigned long long)took);
    cr_assert_lt(took, 3000, "took %llu ms", (unsigned long long)took);
    cr_assert_eq(atomic_load(&r.st.closes), 1);
    cr_assert_eq(atomic_load(&r.st.close_code), SQ_WS_ABNORMAL);
}

Test(ws, handshake_tokens_are_case_insensitive_and_may_share_a_header, .timeout = 10)
{
    /* Firefox sends "Connection: keep-alive, Upgrade"; RFC 6455 §4.2.1 compares the
     * tokens case-insensitively */
    raw_env_t r;
    raw_start(&r);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, r.port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: WebSocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\n"
                                   "Sec-WebSocket-Key: " WS_KEY "\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
                 0);
    th_res_t res;
    cr_assert_eq(th_conn_read_res(&c, &res, 5000, false), 0);
    cr_assert_eq(res.status, 101);
    cr_assert_str_eq(th_res_header(&res, "Sec-WebSocket-Accept"), WS_ACCEPT);
    cr_assert_null(th_res_header(&res, "Sec-WebSocket-Extensions"), "no extension agreed");
    cr_assert_null(th_res_header(&res, "Sec-WebSocket-Protocol"), "no subprotocol offered");
    th_res_free(&res);
    frame_send(&c, FIN | OP_TEXT, true, "ff", 2);
    expect_frame(&c, OP_TEXT, "ff", 2);
    th_conn_close(&c);
    raw_stop(&r);
}

/* ---- keepalive with a raw peer that never answers a ping ---- */

Test(ws, keepalive_closes_a_connection_whose_peer_does_not_answer_pings, .timeout = 10)
{
    raw_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.ping_interval_ms = 50;
    o.pong_timeout_ms = 150;
    cr_assert_eq(sq_app_websocket(app, "/echo", &raw_echo, &o, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    uint64_t t0 = th_now_ms(); /* before the upgrade: the keepalive starts with it */
    raw_upgrade(&c, th_server_port(ts));
    int pings = 0;
    rframe_t f;
    int rc;
    while ((rc = frame_read(&c, &f, 3000)) == 0) {
        cr_assert_eq(f.opcode, OP_PING, "only pings come, got opcode %d", f.opcode);
        cr_assert_eq(f.len, 8);
        pings++;
        frame_free(&f);
    }
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(rc, UV_EOF, "the server closed the connection: %s", uv_err_name(rc));
    cr_assert_geq(pings, 1);
    cr_assert_geq(took, 150, "closed after %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 2000, "closed after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.closes), 1);
    cr_assert_eq(atomic_load(&st.close_code), SQ_WS_ABNORMAL);
}

/* ======================================================================================
 * Slow consumers: a client that stops reading while the server sends
 * ==================================================================================== */

enum { PUMP_CHUNK = 64 * 1024, PUMP_MAX_QUEUED = 256 * 1024 };

typedef struct pump_state {
    sq_ws_overflow_t policy;
    uint64_t close_timeout_ms;
    int drop_stop_after; /* DROP: stop after this many refused sends */
    atomic_int opens, closes, close_code, drains;
    atomic_int sent, refused, refused_other; /* refused: UV_ENOBUFS; other: anything else */
    atomic_size_t max_queued;
    atomic_int stopped; /* the pump stopped sending */
    atomic_int nomem;   /* .open could not allocate its pump (asserted on the test's thread) */
    atomic_int after_drain_sent;
    atomic_ullong failed_at, closed_at; /* uv_now of the first refusal and of .close */
    uint8_t *chunk;
} pump_state_t;

typedef struct pump {
    uv_timer_t timer;
    sq_ws_t *ws;
    pump_state_t *st;
} pump_t;

static void pump_tick(uv_timer_t *t)
{
    pump_t *p = t->data;
    pump_state_t *st = p->st;
    for (int i = 0; i < 4; i++) {
        int rc = sq_ws_send_binary(p->ws, st->chunk, PUMP_CHUNK);
        size_t q = sq_ws_queued_bytes(p->ws);
        if (q > atomic_load(&st->max_queued))
            atomic_store(&st->max_queued, q);
        if (rc == 0) {
            atomic_fetch_add(&st->sent, 1);
            continue;
        }
        if (rc == UV_ENOBUFS) {
            if (atomic_fetch_add(&st->refused, 1) == 0)
                atomic_store(&st->failed_at, uv_now(t->loop));
        } else {
            atomic_fetch_add(&st->refused_other, 1);
        }
        if (st->policy != SQ_WS_OVERFLOW_DROP || atomic_load(&st->refused) >= st->drop_stop_after) {
            uv_timer_stop(t);
            atomic_store(&st->stopped, 1);
            return;
        }
    }
}

static void pump_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    pump_state_t *st = data;
    pump_t *p = calloc(1, sizeof(*p));
    if (p == NULL) { /* server thread: recorded, not asserted */
        atomic_fetch_add(&st->nomem, 1);
        sq_ws_close(ws, SQ_WS_INTERNAL, "out of memory");
        return;
    }
    p->ws = ws;
    p->st = st;
    uv_timer_init(sq_ws_loop(ws), &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, pump_tick, 1, 1);
    sq_ws_set_data(ws, p);
    atomic_fetch_add(&st->opens, 1);
}

static void pump_drain(sq_ws_t *ws, void *data)
{
    pump_state_t *st = data;
    atomic_fetch_add(&st->drains, 1);
    /* the producer that paused goes on: one more message, which must get through */
    if (atomic_load(&st->stopped) && !atomic_load(&st->after_drain_sent) &&
        sq_ws_send_text(ws, "after drain", 11) == 0)
        atomic_store(&st->after_drain_sent, 1);
}

static void pump_freed(uv_handle_t *h)
{
    free(h->data);
}

static void pump_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    pump_state_t *st = data;
    pump_t *p = sq_ws_data(ws);
    atomic_store(&st->closed_at, uv_now(sq_ws_loop(ws)));
    atomic_store(&st->close_code, code);
    atomic_fetch_add(&st->closes, 1);
    if (p == NULL)
        return;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, pump_freed);
}

static void pump_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_ws_handler_t pump_handler = {
    .open = pump_open,
    .message = pump_message,
    .close = pump_close,
    .drain = pump_drain,
};

/* Resident set size of this process (server thread and test thread together). */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

typedef struct pump_env {
    sq_app_t *app;
    th_server_t *ts;
    th_conn_t c;
    size_t rss0, rss_max;
} pump_env_t;

static void pump_start(pump_env_t *pe, pump_state_t *st)
{
    memset(pe, 0, sizeof(*pe));
    st->chunk = malloc(PUMP_CHUNK);
    memset(st->chunk, 's', PUMP_CHUNK);
    cr_assert_eq(sq_app_create(&pe->app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_queued_bytes = PUMP_MAX_QUEUED;
    o.overflow = st->policy;
    o.close_timeout_ms = st->close_timeout_ms;
    cr_assert_eq(sq_app_websocket(pe->app, "/echo", &pump_handler, &o, st), 0);
    pe->ts = th_server_start(pe->app, NULL);
    pe->rss0 = rss_bytes();
    raw_upgrade(&pe->c, th_server_port(pe->ts));
    /* from here on the client reads nothing */
}

/* Waits (sampling RSS) until *flag >= want. */
static int pump_wait(pump_env_t *pe, const atomic_int *flag, int want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int v;
    while ((v = atomic_load(flag)) < want && th_now_ms() < end) {
        size_t rss = rss_bytes();
        if (rss > pe->rss_max)
            pe->rss_max = rss;
        th_sleep_ms(5);
    }
    return v;
}

static void pump_check_bounded(pump_env_t *pe, pump_state_t *st)
{
    size_t maxq = atomic_load(&st->max_queued);
    /* the limit holds for data; the close frame (at most 127 bytes) may go past it */
    cr_assert_leq(maxq, PUMP_MAX_QUEUED + 128, "queued %zu bytes, limit %d", maxq, PUMP_MAX_QUEUED);
    cr_assert_gt(maxq, PUMP_MAX_QUEUED / 2, "the queue did fill: %zu", maxq);
    size_t grew = pe->rss_max > pe->rss0 ? pe->rss_max - pe->rss0 : 0;
    size_t tried = (size_t)(atomic_load(&st->sent) + atomic_load(&st->refused)) * PUMP_CHUNK;
    cr_assert_lt(grew, 32u << 20, "RSS grew by %zu bytes while %zu bytes were offered", grew,
                 tried);
}

static void slow_consumer_is_closed(sq_ws_overflow_t policy, int code)
{
    pump_state_t st;
    memset(&st, 0, sizeof(st));
    st.policy = policy;
    st.close_timeout_ms = 300;
    pump_env_t pe;
    pump_start(&pe, &st);
    cr_assert_eq(pump_wait(&pe, &st.closes, 1, 20000), 1, "the server closed it");
    cr_assert_eq(atomic_load(&st.nomem), 0, ".open could not allocate");
    cr_assert_eq(atomic_load(&st.refused), 1, "one refused send, then the close");
    cr_assert_eq(atomic_load(&st.refused_other), 0);
    cr_assert_eq(atomic_load(&st.close_code), code, ".close got %d", atomic_load(&st.close_code));
    unsigned long long waited = atomic_load(&st.closed_at) - atomic_load(&st.failed_at);
    cr_assert_geq(waited, 290, "closed %llu ms after the refusal, close_timeout 300", waited);
    cr_assert_lt(waited, 3000, "closed %llu ms after the refusal", waited);
    pump_check_bounded(&pe, &st);
    th_conn_close(&pe.c);
    th_server_stop(pe.ts, 1000);
    sq_app_destroy(pe.app);
    cr_assert_eq(atomic_load(&st.opens), 1);
    cr_assert_eq(atomic_load(&st.closes), 1);
    free(st.chunk);
}

Test(ws, slow_consumer_with_policy_close_is_closed_with_1008_and_memory_stays_bounded,
     .timeout = 30)
{
    slow_consumer_is_closed(SQ_WS_OVERFLOW_CLOSE, SQ_WS_POLICY);
}

Test(ws, slow_consumer_with_policy_try_again_is_closed_with_1013, .timeout = 30)
{
    slow_consumer_is_closed(SQ_WS_OVERFLOW_TRY_AGAIN, SQ_WS_TRY_AGAIN);
}

/* Frames skipped as they stream by, without keeping their payloads. */
typedef struct skipper {
    uint8_t hdr[10];
    size_t hlen, need;
    uint64_t left; /* payload bytes of the current frame still to come */
    bool in_payload, is_text;
    char text[64]; /* the start of a text frame's payload */
    size_t tlen;
    size_t frames;
} skipper_t;

/* Consumes p[0, n) until a whole text frame equal to `want` has passed. Returns how many
 * bytes it took (n when the frame is not complete yet) and sets *found. */
static size_t skip_feed(skipper_t *k, const uint8_t *p, size_t n, const char *want, bool *found)
{
    size_t i = 0;
    while (i < n) {
        if (!k->in_payload) {
            k->hdr[k->hlen++] = p[i++];
            if (k->hlen == 2)
                k->need = 2 + ((k->hdr[1] & 0x7F) == 126 ? 2 : (k->hdr[1] & 0x7F) == 127 ? 8 : 0);
            if (k->hlen < k->need)
                continue;
            k->left = k->hdr[1] & 0x7F;
            if (k->left == 126) {
                k->left = (uint64_t)k->hdr[2] << 8 | k->hdr[3];
            } else if (k->left == 127) {
                k->left = 0;
                for (int j = 0; j < 8; j++)
                    k->left = k->left << 8 | k->hdr[2 + j];
            }
            k->is_text = (k->hdr[0] & 0x0F) == OP_TEXT;
            k->tlen = 0;
            k->hlen = 0;
            k->need = 2;
            k->in_payload = true;
        }
        size_t take = n - i < k->left ? n - i : (size_t)k->left;
        if (k->is_text && k->tlen + take < sizeof(k->text)) {
            memcpy(k->text + k->tlen, p + i, take);
            k->tlen += take;
        }
        i += take;
        k->left -= take;
        if (k->left == 0) {
            k->in_payload = false;
            k->frames++;
            if (k->is_text && k->tlen == strlen(want) && memcmp(k->text, want, k->tlen) == 0) {
                *found = true;
                return i;
            }
        }
    }
    return i;
}

/* Reads and discards frames until a text frame equal to `want` (kept small) has come:
 * first what c->buf holds (bytes that came with the 101), then straight from the socket.
 * Bytes past that frame stay in c->buf. Returns 0, UV_ETIMEDOUT or UV_EOF. */
static int skip_frames_until_text(th_conn_t *c, const char *want, int timeout_ms, size_t *frames)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    static uint8_t buf[64 * 1024];
    skipper_t k = {.need = 2};
    bool found = false;
    size_t used = 0;
    if (c->len > 0) {
        used = skip_feed(&k, (const uint8_t *)c->buf, c->len, want, &found);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
    while (!found && th_now_ms() < end) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return UV_EOF;
        used = skip_feed(&k, buf, (size_t)n, want, &found);
        if (found && used < (size_t)n) {
            /* what follows goes back to c->buf, where frame_read looks first */
            char *nb = realloc(c->buf, c->len + (size_t)n - used + 1);
            cr_assert_not_null(nb);
            c->buf = nb;
            memcpy(c->buf + c->len, buf + used, (size_t)n - used);
            c->len += (size_t)n - used;
            c->cap = c->len;
        }
    }
    *frames = k.frames;
    return found ? 0 : UV_ETIMEDOUT;
}

Test(ws, slow_consumer_with_policy_drop_loses_messages_keeps_the_connection_and_drains,
     .timeout = 40)
{
    pump_state_t st;
    memset(&st, 0, sizeof(st));
    st.policy = SQ_WS_OVERFLOW_DROP;
    st.close_timeout_ms = 1000;
    st.drop_stop_after = 400; /* 400 refused sends of 64 KiB: 25 MiB that must not stay */
    pump_env_t pe;
    pump_start(&pe, &st);
    cr_assert_eq(pump_wait(&pe, &st.stopped, 1, 30000), 1, "the pump stopped (%d out of memory)",
                 atomic_load(&st.nomem));
    /* a moment passes with the queue full: DROP keeps the connection (a close would show
     * here or, at the latest, as a close frame among what is read below) */
    th_sleep_ms(100);
    cr_assert_eq(atomic_load(&st.closes), 0, "the connection stays");
    cr_assert_eq(atomic_load(&st.refused), 400);
    cr_assert_eq(atomic_load(&st.refused_other), 0);
    pump_check_bounded(&pe, &st);
    int drains_before = atomic_load(&st.drains);

    /* the client reads again: everything queued arrives, then .drain, then one more */
    size_t frames = 0;
    int rc = skip_frames_until_text(&pe.c, "after drain", 20000, &frames);
    cr_assert_eq(rc, 0,
                 "\"after drain\" arrived: %s (%zu frames read, %d sent, %d drains before "
                 "reading, %d in all, after-drain sent %d)",
                 uv_err_name(rc), frames, atomic_load(&st.sent), drains_before,
                 atomic_load(&st.drains), atomic_load(&st.after_drain_sent));
    cr_assert_eq(frames, (size_t)atomic_load(&st.sent) + 1, "%zu frames, %d sent", frames,
                 atomic_load(&st.sent));
    cr_assert_gt(atomic_load(&st.drains), drains_before);
    cr_assert_eq(atomic_load(&st.after_drain_sent), 1);

    /* and it still talks both ways */
    frame_send(&pe.c, FIN | OP_TEXT, true, "still here", 10);
    expect_frame(&pe.c, OP_TEXT, "still here", 10);
    uint8_t p[8];
    size_t n = close_payload(p, SQ_WS_NORMAL, NULL);
    frame_send(&pe.c, FIN | OP_CLOSE, true, p, n);
    expect_close(&pe.c, SQ_WS_NORMAL);
    th_conn_close(&pe.c);
    th_server_stop(pe.ts, 1000);
    sq_app_destroy(pe.app);
    cr_assert_eq(atomic_load(&st.closes), 1);
    cr_assert_eq(atomic_load(&st.close_code), SQ_WS_NORMAL);
    free(st.chunk);
}

/* ======================================================================================
 * The client against a hand-written server: what it must check in the handshake (RFC
 * 6455 §4.1) and in the frames (§5.1)
 * ==================================================================================== */

typedef struct script_srv {
    int lfd, port;
    uv_thread_t thread;
    const char *response; /* its "%s" is replaced by the right Sec-WebSocket-Accept */
    const uint8_t *then;  /* bytes sent right after the response */
    size_t then_len;
    bool hang_up;   /* close right after sending */
    char got[4096]; /* what the client sent after the handshake */
    size_t got_len;
} script_srv_t;

static void script_main(void *arg)
{
    script_srv_t *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return;
    char accept_value[64];
    raw_read_handshake(fd, accept_value); /* with OpenSSL, not squall's code */
    char res[1024];
    const char *at = strstr(s->response, "%s");
    int rl = at ? snprintf(res, sizeof(res), "%.*s%s%s", (int)(at - s->response), s->response,
                           accept_value, at + 2)
                : snprintf(res, sizeof(res), "%s", s->response);
    send(fd, res, (size_t)rl, MSG_NOSIGNAL);
    if (s->then_len > 0)
        send(fd, s->then, s->then_len, MSG_NOSIGNAL);
    if (!s->hang_up) {
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ssize_t n;
        while (s->got_len < sizeof(s->got) &&
               (n = recv(fd, s->got + s->got_len, sizeof(s->got) - s->got_len, 0)) > 0)
            s->got_len += (size_t)n;
    }
    close(fd);
}

static void script_start(script_srv_t *s)
{
    s->lfd = silent_listener(&s->port);
    cr_assert_eq(uv_thread_create(&s->thread, script_main, s), 0);
}

static void script_join(script_srv_t *s)
{
    uv_thread_join(&s->thread);
    close(s->lfd);
}

/* Runs the squall client against a scripted server; returns what the client saw. */
static void client_vs_script(script_srv_t *s, lone_t *l)
{
    script_start(s);
    memset(l, 0, sizeof(*l));
    cr_assert_eq(uv_loop_init(&l->loop), 0);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/x", s->port);
    static const char *const offer[] = {"chat", NULL};
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.subprotocols = offer;
    o.handshake_timeout_ms = 3000;
    cr_assert_eq(sq_ws_connect(&l->loop, url, &lone_client, l, &o, NULL), 0);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&l->loop), 0);
    script_join(s);
}

#define GOOD_101                                                                                   \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"            \
    "Sec-WebSocket-Accept: %s\r\n"

Test(ws, client_refuses_a_handshake_response_that_does_not_check_out, .timeout = 30)
{
    static const struct {
        const char *response;
        const char *reason;
    } cases[] = {
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==%s\r\n\r\n",
         "invalid handshake response"}, /* the wrong accept value */
        {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: %s\r\n\r\n",
         "invalid handshake response"}, /* no Upgrade */
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Accept: %s\r\n\r\n",
         "invalid handshake response"}, /* no Connection */
        {GOOD_101 "Sec-WebSocket-Protocol: other\r\n\r\n",
         "invalid handshake response"}, /* a subprotocol the client did not offer */
        {GOOD_101 "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
         "invalid handshake response"}, /* RFC 6455 §4.1: an extension never offered */
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n%s", "upgrade refused with status 200"},
        {"HELLO%s\r\n\r\n", "bad handshake response"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        script_srv_t s = {.response = cases[i].response};
        lone_t l;
        client_vs_script(&s, &l);
        cr_assert_eq(l.cli.opens, 0, "case %zu", i);
        cr_assert_eq(l.cli.closes, 1, "case %zu", i);
        cr_assert_eq(l.cli.close_code, SQ_WS_ABNORMAL, "case %zu", i);
        cr_assert_str_eq(l.cli.close_reason, cases[i].reason, "case %zu", i);
    }
}

Test(ws, client_takes_frames_that_come_with_the_101_and_the_agreed_subprotocol, .timeout = 10)
{
    uint8_t frames[64];
    size_t n = frame_build(frames, FIN | OP_TEXT, false, "first", 5);
    uint8_t p[32];
    size_t pl = close_payload(p, 4003, "go away");
    n += frame_build(frames + n, FIN | OP_CLOSE, false, p, pl);
    script_srv_t s = {
        .response = GOOD_101 "Sec-WebSocket-Protocol: chat\r\n\r\n",
        .then = frames,
        .then_len = n,
    };
    lone_t l;
    client_vs_script(&s, &l);
    cr_assert_eq(l.cli.opens, 1);
    cr_assert_str_eq(l.cli.subprotocol, "chat");
    cr_assert_eq(l.cli.messages, 1);
    cr_assert_eq(l.cli.closes, 1);
    cr_assert_eq(l.cli.close_code, 4003);
    cr_assert_str_eq(l.cli.close_reason, "go away");
    /* the client answered with its own close frame, masked, echoing the code */
    cr_assert_geq(s.got_len, 8, "the client sent %zu bytes", s.got_len);
    const uint8_t *g = (const uint8_t *)s.got;
    cr_assert_eq(g[0], FIN | OP_CLOSE);
    cr_assert(g[1] & 0x80, "a client masks (RFC 6455 §5.3)");
    size_t len = g[1] & 0x7F;
    cr_assert_geq(len, 2);
    int code = (g[6] ^ g[2]) << 8 | (g[7] ^ g[3]);
    cr_assert_eq(code, 4003);
}

Test(ws, client_fails_a_masked_frame_from_the_server_with_1002, .timeout = 10)
{
    uint8_t frame[32];
    size_t n = frame_build(frame, FIN | OP_TEXT, true, "masked", 6);
    script_srv_t s = {.response = GOOD_101 "\r\n", .then = frame, .then_len = n};
    lone_t l;
    client_vs_script(&s, &l);
    cr_assert_eq(l.cli.opens, 1);
    cr_assert_eq(l.cli.messages, 0);
    cr_assert_eq(l.cli.closes, 1);
    cr_assert_eq(l.cli.close_code, SQ_WS_PROTOCOL_ERROR, ".close got %d", l.cli.close_code);
    cr_assert_geq(s.got_len, 8);
    const uint8_t *g = (const uint8_t *)s.got;
    cr_assert_eq(g[0], FIN | OP_CLOSE);
    int code = (g[6] ^ g[2]) << 8 | (g[7] ^ g[3]);
    cr_assert_eq(code, SQ_WS_PROTOCOL_ERROR);
}

Test(ws, client_sees_abnormal_close_when_the_server_hangs_up, .timeout = 10)
{
    script_srv_t s = {.response = GOOD_101 "\r\n", .hang_up = true};
    lone_t l;
    client_vs_script(&s, &l);
    cr_assert_eq(l.cli.opens, 1);
    cr_assert_eq(l.cli.closes, 1);
    cr_assert_eq(l.cli.close_code, SQ_WS_ABNORMAL);
}

/* ======================================================================================
 * The handshake's method and list headers; what 0 means; data after a close; 4 GiB
 * ==================================================================================== */

/* RFC 6455 §4.1: the handshake is a GET. HEAD reaches a GET handler in the router (RFC
 * 9110 §9.3.2), so the WebSocket route itself refuses it: 400, as §4.2.1 asks for a
 * request that is not a valid handshake; other methods get the router's 405. */
Test(ws, head_or_post_with_a_valid_handshake_is_not_upgraded, .timeout = 10)
{
    raw_env_t r;
    raw_start(&r);
    static const struct {
        const char *method;
        int status;
    } cases[] = {{"HEAD", 400}, {"POST", 405}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[512];
        snprintf(req, sizeof(req),
                 "%s /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
                 cases[i].method);
        th_res_t res;
        cr_assert_eq(th_request(r.port, req, &res), 0, "%s", cases[i].method);
        cr_assert_eq(res.status, cases[i].status, "%s: status %d", cases[i].method, res.status);
        cr_assert_null(th_res_header(&res, "Sec-WebSocket-Accept"), "%s", cases[i].method);
        if (res.status == 405) {
            const char *allow = th_res_header(&res, "Allow");
            cr_assert(allow != NULL && strstr(allow, "GET") != NULL, "Allow: %s", allow);
        }
        th_res_free(&res);
    }
    /* a HEAD without the upgrade headers is answered as the GET would be: 426 */
    th_res_t res;
    cr_assert_eq(th_request(r.port, "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n", &res), 0);
    cr_assert_eq(res.status, 426);
    th_res_free(&res);
    th_conn_t c;
    raw_upgrade(&c, r.port);
    th_conn_close(&c);
    raw_stop(&r);
    cr_assert_eq(atomic_load(&r.st.opens), 1, "only the GET was upgraded");
}

static const char *const split_protos[] = {"v3.chat", "v2.chat", NULL};

/* RFC 9110 §5.3: a list header may come as several lines, which mean their values joined
 * by commas; Connection, Upgrade, Sec-WebSocket-Protocol and Sec-WebSocket-Extensions
 * are lists. RFC 6455 §11.3.1: one Sec-WebSocket-Key only. */
Test(ws, list_headers_split_over_several_lines_are_combined, .timeout = 10)
{
    raw_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.subprotocols = split_protos;
    cr_assert_eq(sq_app_websocket(app, "/echo", &raw_echo, &o, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    static const struct {
        const char *headers;
        int status;
        const char *protocol; /* agreed, or NULL */
    } cases[] = {
        {"Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n", 101, NULL},
        {"Connection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n", 101, NULL},
        {"Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: TE\r\n"
         "Connection: x, upgrade\r\n",
         101, NULL},
        {"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v1.chat\r\n"
         "Sec-WebSocket-Protocol: v2.chat\r\n",
         101, "v2.chat"},
        {"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v2.chat\r\n"
         "Sec-WebSocket-Protocol: x, v3.chat\r\n",
         101, "v3.chat"},
        {"Upgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: x\r\n",
         101, NULL},
        {"Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: close\r\n", 426, NULL},
        {"Upgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n",
         400, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[1024];
        snprintf(req, sizeof(req),
                 "GET /echo HTTP/1.1\r\nHost: t\r\n%sSec-WebSocket-Key: " WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 cases[i].headers);
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, req), 0);
        th_res_t res;
        cr_assert_eq(th_conn_read_res(&c, &res, 5000, false), 0, "case %zu", i);
        cr_assert_eq(res.status, cases[i].status, "case %zu: status %d", i, res.status);
        const char *p = th_res_header(&res, "Sec-WebSocket-Protocol");
        if (cases[i].protocol == NULL)
            cr_assert_null(p, "case %zu: protocol %s", i, p);
        else
            cr_assert(p != NULL && strcmp(p, cases[i].protocol) == 0, "case %zu: protocol %s", i,
                      p);
        cr_assert_null(th_res_header(&res, "Sec-WebSocket-Extensions"), "case %zu", i);
        th_res_free(&res);
        if (cases[i].status == 101) {
            frame_send(&c, FIN | OP_TEXT, true, "hi", 2);
            expect_frame(&c, OP_TEXT, "hi", 2);
        }
        th_conn_close(&c);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.opens), 6);
}

/* 0 means "no limit" for every option: max_message_bytes (wslay took it as a limit of
 * zero bytes), pong_timeout_ms (it closed at the first tick after a ping) and
 * close_timeout_ms (it dropped TCP as soon as the close frame went). */
Test(ws, zero_means_no_limit_for_every_option, .timeout = 20)
{
    raw_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = 0;
    o.max_queued_bytes = 0;
    o.ping_interval_ms = 50;
    o.pong_timeout_ms = 0;
    o.close_timeout_ms = 0;
    o.idle_timeout_ms = 0;
    o.message_timeout_ms = 0;
    cr_assert_eq(sq_app_websocket(app, "/echo", &bye_on_message, &o, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    raw_upgrade(&c, th_server_port(ts));
    enum { BIG = 256 * 1024 };
    uint8_t *big = malloc(BIG);
    memset(big, 'z', BIG);
    frame_send(&c, FIN | OP_BIN, true, big, BIG);
    /* pings keep coming, unanswered, and the connection stays */
    int pings = 0;
    bool echoed = false;
    uint64_t end = th_now_ms() + 600;
    while (th_now_ms() < end) {
        rframe_t f;
        int rc = frame_read(&c, &f, 50);
        if (rc == UV_ETIMEDOUT)
            continue;
        cr_assert_eq(rc, 0, "%s", uv_err_name(rc));
        if (f.opcode == OP_PING) {
            pings++;
        } else {
            cr_assert_eq(f.opcode, OP_BIN, "opcode %d", f.opcode);
            cr_assert_eq(f.len, BIG);
            echoed = true;
        }
        frame_free(&f);
    }
    free(big);
    cr_assert(echoed, "a %d-byte message with max_message_bytes = 0", BIG);
    cr_assert_geq(pings, 3, "%d pings", pings);
    cr_assert_eq(atomic_load(&st.closes), 0);
    /* close_timeout_ms = 0: the server waits for the answer to its close (here 300 ms) */
    frame_send(&c, FIN | OP_TEXT, true, "bye", 3);
    rframe_t f;
    do {
        cr_assert_eq(frame_read(&c, &f, 5000), 0);
        if (f.opcode == OP_PING)
            frame_free(&f);
    } while (f.opcode == OP_PING);
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_eq(f.payload[0] << 8 | f.payload[1], 4000);
    frame_free(&f);
    cr_assert_eq(th_conn_wait_closed(&c, 300), UV_ETIMEDOUT, "the server did not wait");
    uint8_t p[8];
    frame_send(&c, FIN | OP_CLOSE, true, p, close_payload(p, 4001, NULL));
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.closes), 1);
    cr_assert_eq(atomic_load(&st.close_code), 4001, "the peer's answer was heard");
}

/* RFC 6455 §7.1.4 (the CLOSING state): once the application has called sq_ws_close, data
 * messages that still arrive are dropped, as browsers do, whether they came in the same
 * read as the message that made it close or later, before the peer's close frame. */
Test(ws, data_after_the_applications_close_is_not_delivered, .timeout = 10)
{
    raw_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/echo", &bye_on_message, NULL, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    raw_upgrade(&c, th_server_port(ts));
    uint8_t frames[256];
    size_t n = frame_build(frames, FIN | OP_TEXT, true, "bye", 3);
    n += frame_build(frames + n, FIN | OP_TEXT, true, "same read", 9);
    n += frame_build(frames + n, OP_BIN, true, "frag", 4);
    n += frame_build(frames + n, FIN | OP_CONT, true, "ment", 4);
    cr_assert_eq(th_conn_send(&c, frames, n), 0);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE, "the close frame comes first and alone: opcode %d", f.opcode);
    frame_free(&f);
    frame_send(&c, FIN | OP_TEXT, true, "later", 5);
    frame_send(&c, OP_TEXT, true, "and a fragment", 14);
    uint8_t p[8];
    frame_send(&c, FIN | OP_CLOSE, true, p, close_payload(p, SQ_WS_NORMAL, NULL));
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.messages), 1, "%d messages after the close",
                 atomic_load(&st.messages) - 1);
    cr_assert_eq(atomic_load(&st.close_code), SQ_WS_NORMAL);
}

/* ---- sends of 4 GiB or more ---- */

enum { HUGE_CALLS = 9 };

typedef struct huge {
    atomic_int done;
    int mapped;
    int rc[HUGE_CALLS];
    size_t taken;
} huge_t;

/* Every send entry point, given 4 GiB + 1 bytes (a sparse read-only mapping: nothing is
 * touched unless a send copies it), and the first size over the limit: each refuses with
 * UV_EMSGSIZE, and what goes out afterwards is framed right. */
static void huge_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    huge_t *h = data;
    size_t len = ((size_t)4 << 30) + 1;
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    h->mapped = p != MAP_FAILED;
    if (h->mapped) {
        int k = 0;
        h->rc[k++] = sq_ws_send_binary(ws, p, len);
        h->rc[k++] = sq_ws_send_text(ws, p, len);
        h->rc[k++] = sq_ws_send(ws, 1, p, SQ_WS_MAX_SEND_BYTES + 1);
        h->rc[k++] = sq_ws_send_fragment(ws, 1, p, len, 0);
        h->rc[k++] = sq_ws_send_fragment(ws, 0, p, SQ_WS_MAX_SEND_BYTES + 1, 1);
        sq_ws_frame_t *f = NULL;
        h->rc[k++] = sq_ws_frame_create(&f, 1, p, len);
        if (f != NULL) {
            h->rc[k] = sq_ws_send_frame(ws, f);
            sq_ws_frame_release(f);
            f = NULL;
        }
        k++;
        h->rc[k++] = sq_ws_frame_create(&f, 0, p, SQ_WS_MAX_SEND_BYTES + 1);
        sq_ws_frame_release(f);
        h->rc[k++] = sq_ws_ping(ws, p, len);
        h->taken = sq_ws_broadcast(&ws, 1, 1, p, len);
        munmap(p, len);
    }
    sq_ws_send_text(ws, "still framed", 12);
    atomic_store(&h->done, 1);
}

static const sq_ws_handler_t huge_handler = {.open = huge_open};

Test(ws, sends_of_4_gib_or_more_are_refused_with_emsgsize, .timeout = 30)
{
    huge_t h;
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < HUGE_CALLS; i++)
        h.rc[i] = 1;
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/echo", &huge_handler, NULL, &h), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    raw_upgrade(&c, th_server_port(ts));
    cr_assert_eq(th_wait_atomic(&h.done, 1, 20000), 1);
    expect_frame(&c, OP_TEXT, "still framed", 12);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert(h.mapped, "mmap of 4 GiB + 1 (MAP_NORESERVE)");
    static const char *const names[HUGE_CALLS] = {
        "sq_ws_send_binary",
        "sq_ws_send_text",
        "sq_ws_send at the limit + 1",
        "sq_ws_send_fragment",
        "sq_ws_send_fragment at the limit + 1",
        "sq_ws_frame_create",
        "sq_ws_send_frame (no frame: not reached)",
        "sq_ws_frame_create at the limit + 1",
        "sq_ws_ping",
    };
    for (int i = 0; i < HUGE_CALLS; i++) {
        int want = i == 6 ? 1 : i == 8 ? UV_EINVAL : UV_EMSGSIZE;
        cr_assert_eq(h.rc[i], want, "%s: %s", names[i],
                     h.rc[i] == 1 ? "not called" : sq_strerror(h.rc[i]));
    }
    cr_assert_eq(h.taken, 0, "sq_ws_broadcast");
}

/* ---- big messages to a client that reads late ---- */

/* A message of 4 KiB or more goes straight to the socket when nothing waits before it
 * (lib/server/writeq.c, write_through); what the socket does not take is queued, and
 * what follows queues behind it. The client's small receive buffer and late reading make
  * the first write short: every message must still arrive whole and in order. */
#define LATE_N 24 /* 6 MiB: more than the socket buffers on both ends hold */
#define LATE_LEN (256 * 1024)

static atomic_int late_failed; /* sends refused, on the server's thread */

static void late_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    uint8_t *m = malloc(LATE_LEN);
    if (m == NULL) {
        atomic_fetch_add(&late_failed, 1);
        return;
    }
    for (int k = 0; k < LATE_N; k++) {
        memset(m, 'a' + k, LATE_LEN);
        m[0] = (uint8_t)k; /* each message starts with its number */
        if (sq_ws_send_binary(ws, m, LATE_LEN) != 0)
            atomic_fetch_add(&late_failed, 1);
    }
    free(m);
    if (sq_ws_send_text(ws, "end", 3) != 0)
        atomic_fetch_add(&late_failed, 1);
}

static const sq_ws_handler_t late_handler = {.message = late_message};

Test(ws, big_messages_to_a_client_that_reads_late_arrive_whole_and_in_order, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_queued_bytes = 2 * LATE_N * LATE_LEN;
    cr_assert_eq(sq_app_websocket(app, "/echo", &late_handler, &o, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    int small = 65536; /* far above one segment */
    cr_assert_eq(setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    cr_assert_eq(th_conn_sends(&c, upgrade_request), 0);
    th_res_t res;
    cr_assert_eq(th_conn_read_res(&c, &res, 5000, false), 0);
    cr_assert_eq(res.status, 101);
    th_res_free(&res);
    /* asked for after the 101 has left, the first message finds nothing queued */
    frame_send(&c, FIN | OP_TEXT, true, "go", 2);
    th_sleep_ms(300); /* the server writes meanwhile, and the socket fills */
    for (int k = 0; k < LATE_N; k++) {
        rframe_t f;
        cr_assert_eq(frame_read(&c, &f, 5000), 0, "message %d", k);
        cr_assert(f.fin && f.opcode == OP_BIN, "message %d: opcode %d", k, f.opcode);
        cr_assert_eq(f.len, LATE_LEN, "message %d: %zu bytes", k, f.len);
        cr_assert_eq(f.payload[0], k, "message %d came as %d", k, f.payload[0]);
        size_t bad = 0;
        for (size_t i = 1; i < f.len; i++)
            bad += f.payload[i] != (uint8_t)('a' + k);
        cr_assert_eq(bad, 0, "message %d: %zu bytes differ", k, bad);
        frame_free(&f);
    }
    expect_frame(&c, OP_TEXT, "end", 3);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&late_failed), 0);
}
