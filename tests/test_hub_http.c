/* The hub's HTTP subscribers in a server of the test's own: polls and long polls (what the
 * answer holds, its headers, the hold, its end by time, by a message, by the client
 * leaving), event streams (framing, resume, heartbeat, a reader that stops), and
 * sq_res_write_ref's free callback. The chat server tests the same over its surface. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "server/server_int.h"
#include "support/harness.h"

static sq_hub_t *hub;
static atomic_int write_ref_frees;

/* GET ?since=N&wait=MS (milliseconds here, to keep tests short) */
static void msgs_get(sq_req_t *req, sq_res_t *res, void *data)
{
    uint64_t since = 0, wait = 0;
    sq_hub_since(sq_req_query(req, "since"), &since);
    sq_hub_since(sq_req_query(req, "wait"), &wait);
    sq_hub_serve_poll(hub, req, res, sq_req_param(req, "room"), since, wait);
}

static void published(sq_hub_t *h, int status, uint64_t id, void *data)
{
    sq_res_t *res = data;
    char body[32];
    int n = snprintf(body, sizeof(body), "%llu", (unsigned long long)id);
    if (status == 0)
        sq_res_send(res, 201, "text/plain", body, (size_t)n);
    else
        sq_res_send_error(res, 503, sq_strerror(status));
}

/* POST: the body is the text, as it is */
static void msgs_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *text = sq_req_body(req, &len);
    int rc = sq_hub_publish(hub, sq_req_loop(req), sq_req_param(req, "room"), text, len,
                            published, res);
    if (rc != 0)
        sq_res_send_error(res, 422, sq_strerror(rc));
}

static void events_get(sq_req_t *req, sq_res_t *res, void *data)
{
    uint64_t since = 0;
    sq_hub_since(sq_req_header(req, "Last-Event-ID"), &since);
    sq_hub_serve_events(hub, req, res, sq_req_param(req, "room"), since);
}

static const sq_handler_t msgs = {.get = msgs_get, .post = msgs_post, .aborted = sq_hub_aborted};
static const sq_handler_t events = {.get = events_get, .aborted = sq_hub_aborted};

static void count_free(void *ptr, void *data)
{
    atomic_fetch_add(&write_ref_frees, 1);
}

/* GET /ref: a stream of three borrowed writes, then its end */
static void ref_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char a[] = "alpha ", b[] = "beta ", c[] = "gamma";
    sq_res_write_ref(res, a, 6, count_free, NULL, NULL, NULL); /* before start: refused */
    sq_res_start(res, 200, "text/plain");
    sq_res_write_ref(res, a, sizeof(a) - 1, count_free, NULL, NULL, NULL);
    sq_res_write_ref(res, b, sizeof(b) - 1, count_free, NULL, NULL, NULL);
    sq_res_write_ref(res, c, 0, count_free, NULL, NULL, NULL); /* nothing to send */
    sq_res_write_ref(res, c, sizeof(c) - 1, NULL, NULL, NULL, NULL);
    sq_res_end(res);
}
static const sq_handler_t refs = {.get = ref_get};

static void attach(sq_server_t *srv, void *data)
{
    cr_assert_eq(sq_hub_attach(hub, sq_server_loop(srv)), 0);
}

static void detach(sq_server_t *srv, void *data)
{
    sq_hub_detach(hub, sq_server_loop(srv));
}

typedef struct env {
    sq_app_t *app;
    th_server_t *ts;
    int port;
} env_t;

static env_t start(const sq_hub_opts_t *o)
{
    env_t e;
    cr_assert_eq(sq_hub_create(&hub, o), 0);
    cr_assert_eq(sq_app_create(&e.app), 0);
    sq_app_route(e.app, "/rooms/{room}/messages", &msgs, NULL);
    sq_app_route(e.app, "/rooms/{room}/events", &events, NULL);
    sq_app_route(e.app, "/ref", &refs, NULL);
    e.ts = th_server_start(e.app, NULL);
    e.port = th_server_port(e.ts);
    th_server_call(e.ts, attach, NULL);
    return e;
}

static void stop(env_t *e)
{
    th_server_call(e->ts, detach, NULL);
    th_server_stop(e->ts, 1000);
    sq_app_destroy(e->app);
    sq_hub_destroy(hub);
    hub = NULL;
}

static void post(int port, const char *room, const char *text, int want_id)
{
    char raw[512];
    snprintf(raw, sizeof(raw),
             "POST /rooms/%s/messages HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             room, strlen(text), text);
    th_res_t r;
    cr_assert_eq(th_request(port, raw, &r), 0);
    cr_assert_eq(r.status, 201, "%s", r.head);
    cr_assert_eq(atoi(r.body), want_id);
    th_res_free(&r);
}

static void get(int port, const char *path, th_res_t *r)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    cr_assert_eq(th_request(port, raw, r), 0);
}

Test(hub_http, a_poll_answers_at_once_with_what_is_above_since, .timeout = 20)
{
    env_t e = start(NULL);
    th_res_t r;
    get(e.port, "/rooms/a/messages", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "[]");
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "application/json");
    th_res_free(&r);
    post(e.port, "a", "one", 1);
    post(e.port, "a", "two", 2);
    post(e.port, "b", "other", 1);
    get(e.port, "/rooms/a/messages", &r);
    cr_assert_str_eq(r.body, "[{\"id\":1,\"room\":\"a\",\"text\":\"one\"},"
                             "{\"id\":2,\"room\":\"a\",\"text\":\"two\"}]");
    cr_assert_null(th_res_header(&r, "X-Hub-Missed"));
    th_res_free(&r);
    get(e.port, "/rooms/a/messages?since=1", &r);
    cr_assert_str_eq(r.body, "[{\"id\":2,\"room\":\"a\",\"text\":\"two\"}]");
    th_res_free(&r);
    get(e.port, "/rooms/a/messages?since=2", &r);
    cr_assert_str_eq(r.body, "[]");
    th_res_free(&r);
    get(e.port, "/rooms/a/messages?since=9", &r);
    cr_assert_str_eq(th_res_header(&r, "X-Hub-Reset"), "1");
    cr_assert_str_eq(r.body, "[{\"id\":1,\"room\":\"a\",\"text\":\"one\"},"
                             "{\"id\":2,\"room\":\"a\",\"text\":\"two\"}]");
    th_res_free(&r);
    stop(&e);
}

Test(hub_http, a_poll_behind_the_history_gets_the_rest_and_how_many_it_missed, .timeout = 20)
{
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.history_count = 3;
    env_t e = start(&o);
    for (int i = 1; i <= 6; i++)
        post(e.port, "a", "m", i);
    th_res_t r;
    get(e.port, "/rooms/a/messages?since=1", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "X-Hub-Missed"), "2");
    cr_assert(strncmp(r.body, "[{\"id\":4,", 9) == 0, "%s", r.body);
    th_res_free(&r);
    stop(&e);
}

Test(hub_http, a_long_poll_is_held_until_a_message_then_answered_with_it, .timeout = 20)
{
    env_t e = start(NULL);
    post(e.port, "a", "old", 1);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, e.port), 0);
    th_conn_sends(&c, "GET /rooms/a/messages?since=1&wait=10000 HTTP/1.1\r\nHost: t\r\n\r\n");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 300, false), UV_ETIMEDOUT, "answered, not held");
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.held_polls, 1);
    uint64_t t0 = th_now_ms();
    post(e.port, "a", "new", 2);
    cr_assert_eq(th_conn_read_res(&c, &r, 2000, false), 0);
    cr_assert(th_now_ms() - t0 < 1000);
    cr_assert_str_eq(r.body, "[{\"id\":2,\"room\":\"a\",\"text\":\"new\"}]");
    th_res_free(&r);
    /* the same connection, something newer already there: at once */
    th_conn_sends(&c, "GET /rooms/a/messages?since=0&wait=10000 HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(th_conn_read_res(&c, &r, 1000, false), 0);
    cr_assert(strncmp(r.body, "[{\"id\":1,", 9) == 0);
    th_res_free(&r);
    th_conn_close(&c);
    stop(&e);
}

Test(hub_http, a_long_poll_ends_with_an_empty_array_when_its_wait_is_over, .timeout = 20)
{
    env_t e = start(NULL);
    uint64_t t0 = th_now_ms();
    th_res_t r;
    get(e.port, "/rooms/a/messages?wait=300", &r);
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "[]");
    cr_assert(took >= 250 && took < 3000, "took %llu ms", (unsigned long long)took);
    th_res_free(&r);
    stop(&e);
}

Test(hub_http, a_client_that_leaves_while_held_is_forgotten_at_once, .timeout = 20)
{
    env_t e = start(NULL);
    th_conn_t c[20];
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(th_conn_open(&c[i], e.port), 0);
        th_conn_sends(&c[i], "GET /rooms/a/messages?wait=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    sq_hub_stats_t st;
    uint64_t end = th_now_ms() + 3000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.held_polls < 20 && th_now_ms() < end);
    cr_assert_eq(st.held_polls, 20);
    for (int i = 0; i < 10; i++)
        th_conn_abort(&c[i]);
    end = th_now_ms() + 3000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.held_polls > 10 && th_now_ms() < end);
    cr_assert_eq(st.held_polls, 10);
    cr_assert_eq(st.subscribers, 10);
    post(e.port, "a", "hi", 1);
    for (int i = 10; i < 20; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c[i], &r, 2000, false), 0);
        cr_assert_str_eq(r.body, "[{\"id\":1,\"room\":\"a\",\"text\":\"hi\"}]");
        th_res_free(&r);
        th_conn_close(&c[i]);
    }
    stop(&e);
}

/* Reads the stream until `needle` is in c->buf or ms pass. */
static bool read_until(th_conn_t *c, const char *needle, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (memmem(c->buf ? c->buf : "", c->len, needle, strlen(needle)) == NULL) {
        if (th_now_ms() >= end || c->eof)
            return false;
        th_conn_read_some(c, 50);
    }
    return true;
}

Test(hub_http, an_event_stream_sends_its_head_at_once_then_each_message, .timeout = 20)
{
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.sse_heartbeat_ms = 200;
    env_t e = start(&o);
    post(e.port, "a", "one", 1);
    post(e.port, "a", "two", 2);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, e.port), 0);
    th_conn_sends(&c, "GET /rooms/a/events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 1\r\n\r\n");
    cr_assert(read_until(&c, "\r\n\r\n", 2000), "no head");
    cr_assert(memmem(c.buf, c.len, "Content-Type: text/event-stream", 31) != NULL);
    cr_assert(read_until(&c, "id: 2\ndata: {\"id\":2,\"room\":\"a\",\"text\":\"two\"}\n\n", 2000));
    cr_assert(memmem(c.buf, c.len, "id: 1\n", 6) == NULL, "resumed after 1: 1 again");
    post(e.port, "a", "line\nbreak", 3);
    cr_assert(read_until(&c, "id: 3\ndata: {\"id\":3,\"room\":\"a\",\"text\":\"line\\nbreak\"}\n\n",
                         2000));
    cr_assert(read_until(&c, ": keep-alive\n\n", 2000), "no heartbeat");
    th_conn_abort(&c);
    sq_hub_stats_t st;
    uint64_t end = th_now_ms() + 3000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.subscribers > 0 && th_now_ms() < end);
    cr_assert_eq(st.subscribers, 0, "a stream whose client left is forgotten");
    stop(&e);
}

Test(hub_http, an_event_stream_that_stops_reading_is_cut_off_and_others_get_everything,
     .timeout = 30)
{
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.sse_max_queued_bytes = 256 << 10;
    o.history_count = 0;
    env_t e = start(&o);
    th_conn_t stuck, good;
    cr_assert_eq(th_conn_open(&stuck, e.port), 0);
    cr_assert_eq(th_conn_open(&good, e.port), 0);
    int small = 4096; /* a small receive buffer, so the server's queue grows soon */
    setsockopt(stuck.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    th_conn_sends(&stuck, "GET /rooms/f/events HTTP/1.1\r\nHost: t\r\n\r\n");
    th_conn_sends(&good, "GET /rooms/f/events HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert(read_until(&good, "\r\n\r\n", 2000));
    sq_hub_stats_t st;
    uint64_t end = th_now_ms() + 3000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.subscribers < 2 && th_now_ms() < end);
    static char text[60001];
    memset(text, 'z', sizeof(text) - 1);
    char *raw = malloc(sizeof(text) + 200);
    th_conn_t pub;
    cr_assert_eq(th_conn_open(&pub, e.port), 0);
    for (int i = 1; i <= 400; i++) {
        int n = snprintf(raw, sizeof(text) + 200,
                         "POST /rooms/f/messages HTTP/1.1\r\nHost: t\r\nContent-Length: %zu"
                         "\r\n\r\n%s", sizeof(text) - 1, text);
        th_conn_send(&pub, raw, (size_t)n);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&pub, &r, 2000, false), 0);
        cr_assert_eq(r.status, 201);
        th_res_free(&r);
        /* the good reader keeps up */
        char idl[32];
        snprintf(idl, sizeof(idl), "id: %d\n", i);
        cr_assert(read_until(&good, idl, 2000), "the reader that reads lost %d", i);
        good.len = 0;
    }
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.dropped_slow, 1, "the stuck stream was not cut off");
    cr_assert_eq(st.subscribers, 1);
    free(raw);
    th_conn_close(&pub);
    th_conn_abort(&stuck);
    th_conn_close(&good);
    stop(&e);
}

Test(hub_http, a_borrowed_streaming_write_is_freed_once_each, .timeout = 20)
{
    env_t e = start(NULL);
    atomic_store(&write_ref_frees, 0);
    th_res_t r;
    get(e.port, "/ref", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "alpha beta gamma");
    th_res_free(&r);
    cr_assert_eq(th_wait_atomic(&write_ref_frees, 4, 2000), 4,
                 "refused, two written and an empty one: four frees");
    stop(&e);
    cr_assert_eq(atomic_load(&write_ref_frees), 4);
}

static atomic_int shutdowns;

static void on_shutdown(sq_server_t *srv, void *data)
{
    atomic_fetch_add(&shutdowns, 1);
    sq_hub_detach(data, sq_server_loop(srv));
}

Test(hub_http, a_shutdown_hook_ends_held_polls_and_streams_without_waiting_the_grace,
     .timeout = 20)
{
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/rooms/{room}/messages", &msgs, NULL);
    sq_app_route(app, "/rooms/{room}/events", &events, NULL);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.on_shutdown = on_shutdown;
    o.on_shutdown_data = hub;
    atomic_store(&shutdowns, 0);
    th_server_t *ts = th_server_start(app, &o);
    th_server_call(ts, attach, NULL);
    th_conn_t poll, sse;
    cr_assert_eq(th_conn_open(&poll, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_open(&sse, th_server_port(ts)), 0);
    th_conn_sends(&poll, "GET /rooms/a/messages?wait=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
    th_conn_sends(&sse, "GET /rooms/a/events HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert(read_until(&sse, "\r\n\r\n", 2000));
    sq_hub_stats_t st;
    uint64_t end = th_now_ms() + 3000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.held_polls < 1 && th_now_ms() < end);
    cr_assert_eq(st.held_polls, 1);
    uint64_t took = th_server_stop(ts, 10000);
    cr_assert(took < 2000, "the shutdown waited %llu ms for held requests",
              (unsigned long long)took);
    cr_assert_eq(atomic_load(&shutdowns), 1);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&poll, &r, 2000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "[]");
    th_res_free(&r);
    cr_assert(read_until(&sse, "0\r\n\r\n", 2000), "the event stream did not end");
    th_conn_close(&poll);
    th_conn_close(&sse);
    sq_app_destroy(app);
    sq_hub_destroy(hub);
    hub = NULL;

    /* a server with nobody connected runs its hook too, once */
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    o.on_shutdown_data = hub;
    ts = th_server_start(app, &o);
    th_server_call(ts, attach, NULL);
    th_server_stop(ts, 1000);
    cr_assert_eq(atomic_load(&shutdowns), 2);
    sq_app_destroy(app);
    sq_hub_destroy(hub);
    hub = NULL;
}

static void read_pool(sq_server_t *srv, void *data)
{
    *(unsigned *)data = srv->wq_free_n;
}

/* A message to N streams lends N write states at once (the flush waits for the tick):
 * the pool keeps them for the next message instead of freeing all but 64 and allocating
 * them again — on every message, which made glibc give the pages back and fault them in
 * again (2 ms more per publish to 1,000 WebSockets). */
Test(hub_http, a_broadcast_reuses_its_write_states, .timeout = 30)
{
    env_t e = start(NULL);
    enum { N = 150 };
    static th_conn_t c[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(th_conn_open(&c[i], e.port), 0);
        th_conn_sends(&c[i], "GET /rooms/b/events HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    sq_hub_stats_t st;
    uint64_t end = th_now_ms() + 5000;
    do {
        sq_hub_stats(hub, &st);
    } while (st.subscribers < N && th_now_ms() < end);
    cr_assert_eq(st.subscribers, N);
    post(e.port, "b", "one", 1);
    for (int i = 0; i < N; i++)
        cr_assert(read_until(&c[i], "id: 1\n", 3000));
    unsigned pooled = 0;
    th_server_call(e.ts, read_pool, &pooled);
    cr_assert_geq(pooled, N, "the pool kept %u of the %d write states", pooled, N);
    for (int i = 0; i < N; i++)
        th_conn_close(&c[i]);
    stop(&e);
}
