/* Hooks (before/after, sq_req_next), sub-apps (sq_app_mount), error handlers
 * (sq_app_on_error), named routes (sq_app_url_for) and request ids: through the test
 * client, and a hook that answers late after its client left through a real socket. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <squall.h>
#include <squall/testing.h>

#include "support/harness.h"

static char trail[512]; /* what ran, in order */

static void note(const char *what)
{
    strncat(trail, what, sizeof(trail) - strlen(trail) - 1);
}

static void ok_get(sq_req_t *req, sq_res_t *res, void *data)
{
    note("H");
    sq_res_send(res, 200, "text/plain", data, strlen(data));
}

static const sq_handler_t ok_route = {.get = ok_get};

static int before_a(sq_req_t *req, sq_res_t *res, void *data)
{
    note("a");
    return SQ_NEXT;
}

static int before_b(sq_req_t *req, sq_res_t *res, void *data)
{
    note("b");
    return SQ_NEXT;
}

/* Answers 401 unless the request carries X-Token: yes. */
static int auth(sq_req_t *req, sq_res_t *res, void *data)
{
    note("A");
    const char *t = sq_req_header(req, "X-Token");
    if (t != NULL && strcmp(t, "yes") == 0)
        return SQ_NEXT;
    sq_res_send_error(res, 401, "Not authenticated");
    return SQ_PAUSE;
}

static void after_stamp(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    char v[64];
    snprintf(v, sizeof(v), "%s:%d", (const char *)data, status);
    sq_res_header(res, "X-After", v);
    note("z");
    /* nothing but headers here */
    if (sq_res_send(res, 500, "text/plain", "x", 1) != SQ_EALREADY_SENT)
        note("!");
}

static char s_home[] = "home", s_item[] = "item", s_file[] = "file", s_app[] = "app",
            s_api[] = "api", s_slow[] = "slow";
static sq_app_t *app, *api;
static sq_test_t *client;

static void setup(void)
{
    trail[0] = '\0';
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_create(&api), 0);
    cr_assert_eq(sq_app_route_named(app, "home", "/", &ok_route, s_home), 0);
    cr_assert_eq(sq_app_route_named(api, "item", "/items/{id:int}", &ok_route, s_item), 0);
    cr_assert_eq(sq_app_route_named(api, "file", "/files/{p:path}", &ok_route, s_file), 0);
    cr_assert_eq(sq_app_before(app, before_a, NULL), 0);
    cr_assert_eq(sq_app_after(app, after_stamp, s_app), 0);
    cr_assert_eq(sq_app_before(api, auth, NULL), 0);
    cr_assert_eq(sq_app_before(api, before_b, NULL), 0);
    cr_assert_eq(sq_app_mount(app, "/api/v1", api), 0);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
}

static void teardown(void)
{
    cr_assert_eq(sq_test_destroy(client), 0);
    sq_app_destroy(app); /* and api, mounted in it */
}

TestSuite(hooks, .init = setup, .fini = teardown, .timeout = 20);

static sq_test_res_t *get(const char *target, const char *const *headers)
{
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(client, "GET", target, headers, NULL, &r), 0);
    return r;
}

Test(hooks, the_apps_hooks_run_in_order_for_every_request_and_a_sub_apps_for_its_routes)
{
    sq_test_res_t *r = get("/", NULL);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body, "home");
    cr_assert_str_eq(sq_test_res_header(r, "X-After"), "app:200");
    cr_assert_str_eq(trail, "aHz");
    sq_test_res_free(r);

    trail[0] = '\0';
    static const char *const tok[] = {"X-Token: yes", NULL};
    r = get("/api/v1/items/5", tok);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body, "item");
    cr_assert_str_eq(trail, "aAbHz");
    sq_test_res_free(r);

    /* a 404 outside the sub-app: the app's hooks only */
    trail[0] = '\0';
    r = get("/nope", NULL);
    cr_assert_eq(r->status, 404);
    cr_assert_str_eq(sq_test_res_header(r, "X-After"), "app:404");
    cr_assert_str_eq(trail, "az");
    sq_test_res_free(r);
}

Test(hooks, a_before_hook_answers_itself_and_the_handler_never_runs)
{
    sq_test_res_t *r = get("/api/v1/items/5", NULL);
    cr_assert_eq(r->status, 401);
    cr_assert_str_eq(r->body, "{\"detail\":\"Not authenticated\"}");
    cr_assert_str_eq(sq_test_res_header(r, "X-After"), "app:401");
    cr_assert_str_eq(trail, "aAz");
    sq_test_res_free(r);
}

Test(hooks, a_mount_matches_its_prefix_only_and_405_names_the_sub_apps_methods)
{
    static const char *const tok[] = {"X-Token: yes", NULL};
    sq_test_res_t *r = get("/api/v1items/5", tok);
    cr_assert_eq(r->status, 404);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_request(client, "POST", "/api/v1/items/5", tok, "", &r), 0);
    cr_assert_eq(r->status, 405);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "GET, HEAD");
    sq_test_res_free(r);
    r = get("/api/v1/files/a/b%20c", tok);
    cr_assert_eq(r->status, 200);
    sq_test_res_free(r);
}

static void custom_404(sq_req_t *req, sq_res_t *res, int status, const json_t *detail, void *data)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "<h1>%d %s</h1> at %s", status, json_string_value(detail),
                     sq_req_path(req));
    sq_res_send(res, status, "text/html", body, (size_t)n);
}

static void custom_422(sq_req_t *req, sq_res_t *res, int status, const json_t *detail, void *data)
{
    sq_res_send_json_new(res, 400, json_pack("{s:s,s:O}", "error", (const char *)data, "errors",
                                             (json_t *)detail));
}

Test(hooks, error_handlers_choose_the_body_and_the_nearest_app_wins)
{
    cr_assert_eq(sq_app_on_error(app, 404, custom_404, NULL), 0);
    cr_assert_eq(sq_app_on_error(app, 422, custom_422, s_app), 0);
    cr_assert_eq(sq_app_on_error(api, 422, custom_422, s_api), 0);
    cr_assert_eq(sq_app_on_error(app, 418, custom_422, NULL), UV_EINVAL);
    sq_test_res_t *r = get("/missing", NULL);
    cr_assert_eq(r->status, 404);
    cr_assert_str_eq(sq_test_res_header(r, "Content-Type"), "text/html");
    cr_assert_str_eq(r->body, "<h1>404 Not Found</h1> at /missing");
    sq_test_res_free(r);
    static const char *const tok[] = {"X-Token: yes", NULL};
    r = get("/api/v1/items/x", tok);
    cr_assert_eq(r->status, 400);
    json_t *j = sq_test_res_json(r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "error")), "api");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "errors"), 0), "type")),
                     "int_parsing");
    sq_test_res_free(r);
    /* removed: the default again */
    cr_assert_eq(sq_app_on_error(app, 404, NULL, NULL), 0);
    r = get("/missing", NULL);
    cr_assert_str_eq(r->body, "{\"detail\":\"Not Found\"}");
    sq_test_res_free(r);
}

Test(hooks, url_for_builds_paths_through_mounts_with_encoded_parameters)
{
    char buf[128];
    cr_assert_eq(sq_app_url_for(app, "home", NULL, buf, sizeof(buf)), 1);
    cr_assert_str_eq(buf, "/");
    const char *p1[] = {"id", "42", NULL};
    cr_assert_eq(sq_app_url_for(app, "item", p1, buf, sizeof(buf)), 16);
    cr_assert_str_eq(buf, "/api/v1/items/42");
    const char *p2[] = {"p", "a b/ü?.txt", NULL};
    cr_assert_gt(sq_app_url_for(app, "file", p2, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "/api/v1/files/a%20b/%C3%BC%3F.txt");
    const char *bad[] = {"id", "x", NULL};
    cr_assert_eq(sq_app_url_for(app, "item", bad, buf, sizeof(buf)), UV_EINVAL);
    cr_assert_eq(sq_app_url_for(app, "item", NULL, buf, sizeof(buf)), UV_EINVAL);
    cr_assert_eq(sq_app_url_for(app, "nope", NULL, buf, sizeof(buf)), UV_ENOENT);
    cr_assert_eq(sq_app_url_for(app, "item", p1, buf, 10), UV_ENOBUFS);
    /* the built path is served */
    static const char *const tok[] = {"X-Token: yes", NULL};
    sq_test_res_t *r = get("/api/v1/files/a%20b/%C3%BC%3F.txt", tok);
    cr_assert_eq(r->status, 200);
    sq_test_res_free(r);
}

Test(hooks, mounting_is_refused_when_it_would_make_a_cycle_or_a_bad_prefix)
{
    sq_app_t *x;
    cr_assert_eq(sq_app_create(&x), 0);
    cr_assert_eq(sq_app_mount(app, "/api/v2", api), UV_EINVAL); /* mounted already */
    cr_assert_eq(sq_app_mount(api, "/up", app), UV_EINVAL);     /* above it */
    cr_assert_eq(sq_app_mount(x, "/x", x), UV_EINVAL);
    cr_assert_eq(sq_app_mount(app, "api", x), SQ_EPATTERN);
    cr_assert_eq(sq_app_mount(app, "/a/", x), SQ_EPATTERN);
    cr_assert_eq(sq_app_mount(app, "/a/{b}", x), SQ_EPATTERN);
    cr_assert_eq(sq_app_mount(app, "/", x), SQ_EPATTERN);
    sq_app_destroy(x);
    /* 8 apps deep at most: app > api > 6 more */
    sq_app_t *parent = api;
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(sq_app_create(&x), 0);
        cr_assert_eq(sq_app_mount(parent, "/d", x), 0, "depth %d", i + 3);
        parent = x;
    }
    cr_assert_eq(sq_app_create(&x), 0);
    cr_assert_eq(sq_app_mount(parent, "/d", x), UV_EINVAL);
    sq_app_destroy(x);
}

/* ---- a hook that decides later ---- */

typedef struct later {
    uv_timer_t t;
    sq_req_t *req;
    sq_res_t *res;
    int answer; /* 0: go on (sq_req_next), else that status */
} later_t;

static atomic_int next_rc = 1, late_runs;

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    if (l->answer)
        sq_res_send_error(l->res, l->answer, "decided later");
    else
        atomic_store(&next_rc, sq_req_next(l->req));
    atomic_fetch_add(&late_runs, 1);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static int later_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    later_t *l = calloc(1, sizeof(*l));
    l->req = req;
    l->res = res;
    const char *a = sq_req_query(req, "answer");
    l->answer = a ? atoi(a) : 0;
    uv_timer_init(sq_req_loop(req), &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, (uint64_t)(data ? 300 : 20), 0);
    return SQ_PAUSE;
}

static void id_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)sq_req_id(req));
    sq_res_send(res, 200, "text/plain", b, (size_t)n);
}
static const sq_handler_t id_route = {.get = id_get};

Test(hooks, a_hook_that_pauses_goes_on_or_answers_later_and_ids_are_distinct)
{
    sq_app_t *a2;
    cr_assert_eq(sq_app_create(&a2), 0);
    cr_assert_eq(sq_app_route(a2, "/id", &id_route, NULL), 0);
    cr_assert_eq(sq_app_before(a2, later_hook, NULL), 0);
    sq_test_t *t2;
    cr_assert_eq(sq_test_create(&t2, a2, NULL), 0);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t2, "GET", "/id", NULL, NULL, &r), 0);
    cr_assert_eq(r->status, 200);
    unsigned long long first = strtoull(r->body, NULL, 10);
    cr_assert_eq(atomic_load(&next_rc), 0);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_request(t2, "GET", "/id", NULL, NULL, &r), 0);
    cr_assert_gt(strtoull(r->body, NULL, 10), first);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_request(t2, "GET", "/id?answer=403", NULL, NULL, &r), 0);
    cr_assert_eq(r->status, 403);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t2), 0);
    sq_app_destroy(a2);
}

static atomic_int handler_ran;
static void never_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_ran, 1);
    sq_res_send(res, 200, NULL, NULL, 0);
}
static void never_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_ran, 100);
}
static const sq_handler_t never_route = {.get = never_get, .aborted = never_aborted};

/* The client leaves while the hook waits: sq_req_next says so (UV_ECANCELED), releases the
 * response itself, and the handler never runs (nor its .aborted). Over a real socket, so
 * the leaving is a real reset. */
Test(hooks, a_hook_that_goes_on_after_its_client_left_is_told_and_nothing_leaks)
{
    sq_app_t *a2;
    cr_assert_eq(sq_app_create(&a2), 0);
    cr_assert_eq(sq_app_route(a2, "/slow", &never_route, NULL), 0);
    cr_assert_eq(sq_app_before(a2, later_hook, s_slow), 0);
    atomic_store(&next_rc, 1);
    atomic_store(&late_runs, 0);
    th_server_t *ts = th_server_start(a2, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    th_sleep_ms(50);
    struct linger lg = {1, 0}; /* a reset: a FIN alone would still be answered */
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    th_conn_close(&c);
    cr_assert_geq(th_wait_atomic(&late_runs, 1, 5000), 1);
    th_server_stop(ts, 1000);
    sq_app_destroy(a2);
    cr_assert_eq(atomic_load(&next_rc), UV_ECANCELED);
    cr_assert_eq(atomic_load(&handler_ran), 0);
}

static int failing_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    return UV_EIO;
}

Test(hooks, a_failing_hook_is_answered_500)
{
    cr_assert_eq(sq_app_before(api, failing_hook, NULL), 0);
    static const char *const tok[] = {"X-Token: yes", NULL};
    sq_test_res_t *r = get("/api/v1/items/1", tok);
    cr_assert_eq(r->status, 500);
    cr_assert_str_eq(r->body, "{\"detail\":\"Internal Server Error\"}");
    cr_assert_str_eq(sq_test_res_header(r, "X-After"), "app:500");
    sq_test_res_free(r);
}

/* The served app has no hook of its own; the hooks are in a sub-app two mounts down, one
 * added before its mount and one after: both run for its routes (the served app knows
 * its tree has hooks), and an app with none anywhere runs none. */
Test(hooks, hooks_deep_in_a_sub_app_run_though_the_served_app_has_none)
{
    sq_app_t *root, *mid, *leaf;
    cr_assert_eq(sq_app_create(&root), 0);
    cr_assert_eq(sq_app_create(&mid), 0);
    cr_assert_eq(sq_app_create(&leaf), 0);
    cr_assert_eq(sq_app_route(leaf, "/id", &id_route, NULL), 0);
    cr_assert_eq(sq_app_route(root, "/id", &id_route, NULL), 0);
    cr_assert_eq(sq_app_before(leaf, before_a, NULL), 0);
    cr_assert_eq(sq_app_mount(mid, "/m", leaf), 0);
    cr_assert_eq(sq_app_mount(root, "/r", mid), 0);
    cr_assert_eq(sq_app_after(leaf, after_stamp, s_api), 0); /* after both mounts */
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, root, NULL), 0);
    sq_test_res_t *r;
    trail[0] = '\0';
    cr_assert_eq(sq_test_request(t, "GET", "/r/m/id", NULL, NULL, &r), 0);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(sq_test_res_header(r, "X-After"), "api:200");
    cr_assert_str_eq(trail, "az");
    sq_test_res_free(r);
    cr_assert_eq(sq_test_request(t, "GET", "/id", NULL, NULL, &r), 0);
    cr_assert_eq(r->status, 200);
    cr_assert_null(sq_test_res_header(r, "X-After"), "the served app's own route has none");
    cr_assert_str_eq(trail, "az");
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(root);
}

/* The watchdog times the handler, not the wait of a hook before it: a before hook that
 * decides 300 ms later (the handler itself is quick) makes no slow span under a 100 ms
 * watchdog, though the request is 300 ms old when its handler runs; a request whose head
 * and handler come in one read starts its span at the request's stamp. */
Test(hooks, the_watchdog_times_the_handler_not_a_hook_that_waited, .timeout = 10)
{
    sq_app_t *a2;
    cr_assert_eq(sq_app_create(&a2), 0);
    cr_assert_eq(sq_app_route(a2, "/id", &id_route, NULL), 0);
    cr_assert_eq(sq_app_before(a2, later_hook, s_slow), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.slow_callback_ms = 100;
    sq_test_t *t2;
    cr_assert_eq(sq_test_create(&t2, a2, &o), 0);
    sq_test_res_t *r;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(sq_test_request(t2, "GET", "/id", NULL, NULL, &r), 0);
        cr_assert_eq(r->status, 200);
        sq_test_res_free(r);
    }
    sq_watchdog_stats_t st;
    sq_watchdog_stats(sq_server_watchdog(sq_test_server(t2)), &st);
    cr_assert_eq(st.slow_spans, 0, "a hook's 300 ms wait is not the handler's");
    cr_assert_eq(st.spans, 2);
    cr_assert_eq(sq_test_destroy(t2), 0);
    sq_app_destroy(a2);
}
