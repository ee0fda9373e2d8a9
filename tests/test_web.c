/* Cookies (sq_req_cookie, sq_res_set_cookie), redirects (sq_res_redirect), CORS
 * (sq_app_cors) and the log sink, through the test client; hostile values included. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>

static atomic_int reached;

/* GET /c?name=N: the request's cookie N, or "(none)". */
static void cookie_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&reached, 1);
    const char *v = sq_req_cookie(req, sq_req_query(req, "name"));
    sq_res_send(res, 200, "text/plain", v ? v : "(none)", strlen(v ? v : "(none)"));
}

/* POST /set: tries hostile cookies first (each must be refused and add nothing), then
 * sets one with every attribute. */
static void set_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&reached, 1);
    int refused = 0;
    sq_cookie_opts_t o;
    sq_cookie_opts_init(&o);
    refused += sq_res_set_cookie(res, "a", "x\r\nSet-Cookie: evil=1", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "a", "x; Domain=evil.example", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "a b", "x", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "a=b", "x", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "", "x", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "a", "sp ace", NULL) == UV_EINVAL;
    refused += sq_res_set_cookie(res, "a", "quo\"te", NULL) == UV_EINVAL;
    o.path = "/x;\r\nX-Evil: 1";
    refused += sq_res_set_cookie(res, "a", "x", &o) == UV_EINVAL;
    o.path = NULL;
    o.domain = "evil.example\r\n";
    refused += sq_res_set_cookie(res, "a", "x", &o) == UV_EINVAL;
    o.domain = NULL;
    o.same_site = SQ_SAMESITE_NONE; /* without Secure */
    refused += sq_res_set_cookie(res, "a", "x", &o) == UV_EINVAL;
    sq_cookie_opts_init(&o);
    o.max_age = 3600;
    o.expires = 784111777; /* RFC 9110's example date */
    o.path = "/";
    o.domain = "example.com";
    o.secure = 1;
    o.http_only = 1;
    o.same_site = SQ_SAMESITE_LAX;
    int rc = sq_res_set_cookie(res, "session", "\"a1b2\"", &o);
    sq_cookie_opts_init(&o);
    o.max_age = 0;
    int rc2 = sq_res_set_cookie(res, "old", "", &o);
    char body[64];
    int n = snprintf(body, sizeof(body), "refused=%d rc=%d rc2=%d", refused, rc, rc2);
    sq_res_send(res, 200, "text/plain", body, (size_t)n);
}

/* GET /go?to=URL&status=S */
static void go_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&reached, 1);
    const char *s = sq_req_query(req, "status");
    int rc = sq_res_redirect(res, s ? atoi(s) : 307, sq_req_query(req, "to"));
    if (rc != 0) {
        char body[32];
        int n = snprintf(body, sizeof(body), "refused %d", rc);
        sq_res_send(res, 200, "text/plain", body, (size_t)n);
    }
}

static const sq_handler_t cookie_route = {.get = cookie_get};
static const sq_handler_t set_route = {.post = set_post};
static const sq_handler_t go_route = {.get = go_get, .post = go_get};

static sq_app_t *app;
static sq_test_t *client;

static void start(const sq_cors_opts_t *cors)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/c", &cookie_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/set", &set_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/go", &go_route, NULL), 0);
    if (cors != NULL)
        cr_assert_eq(sq_app_cors(app, cors), 0);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
    atomic_store(&reached, 0);
}

static void stop(void)
{
    cr_assert_eq(sq_test_destroy(client), 0);
    sq_app_destroy(app);
}

static sq_test_res_t *req(const char *method, const char *target, const char *const *headers)
{
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(client, method, target, headers, method[0] == 'P' ? "" : NULL,
                                 &r),
                 0);
    return r;
}

static void expect_body(const char *target, const char *const *headers, const char *want)
{
    sq_test_res_t *r = req("GET", target, headers);
    cr_expect_eq(r->status, 200);
    cr_expect_str_eq(r->body, want, "%s", target);
    sq_test_res_free(r);
}

Test(cookies, read_as_browsers_send_them)
{
    start(NULL);
    static const char *const h[] = {"Cookie: a=1; b=\"two\"; flag; d = 4 ;a=5;e=", NULL};
    expect_body("/c?name=a", h, "1");
    expect_body("/c?name=b", h, "two");
    expect_body("/c?name=flag", h, "(none)");
    expect_body("/c?name=d", h, "4");
    expect_body("/c?name=e", h, "");
    expect_body("/c?name=A", h, "(none)"); /* names are case-sensitive */
    expect_body("/c?name=a", NULL, "(none)");
    static const char *const two[] = {"Cookie: x=1", "Cookie: y=2", NULL};
    expect_body("/c?name=y", two, "2");
    static const char *const odd[] = {"Cookie: ;;; =v; ==; z=a=b", NULL};
    expect_body("/c?name=z", odd, "a=b");
    stop();
}

Test(cookies, set_with_every_attribute_and_hostile_values_refused)
{
    start(NULL);
    sq_test_res_t *r = req("POST", "/set", NULL);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body, "refused=10 rc=0 rc2=0");
    unsigned n = 0;
    const char *first = NULL, *second = NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, "Set-Cookie") != 0)
            continue;
        n++;
        if (first == NULL)
            first = r->headers[i].value;
        else
            second = r->headers[i].value;
    }
    cr_assert_eq(n, 2, "only the two good cookies are set");
    cr_assert_str_eq(first, "session=\"a1b2\"; Max-Age=3600; Expires=Sun, 06 Nov 1994 08:49:37 "
                            "GMT; Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Lax");
    cr_assert_str_eq(second, "old=; Max-Age=0");
    cr_assert_null(strstr(r->raw, "evil"));
    sq_test_res_free(r);
    stop();
}

Test(redirect, status_and_location_checked)
{
    start(NULL);
    static const int ok[] = {301, 302, 303, 307, 308};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char t[96];
        snprintf(t, sizeof(t), "/go?to=/items/5%%3Fq%%3D1&status=%d", ok[i]);
        sq_test_res_t *r = req("GET", t, NULL);
        cr_expect_eq(r->status, ok[i]);
        cr_expect_str_eq(sq_test_res_header(r, "Location"), "/items/5?q=1");
        cr_expect_eq(r->body_len, 0);
        sq_test_res_free(r);
    }
    expect_body("/go?to=/x&status=200", NULL, "refused -22");
    expect_body("/go?to=/x%0d%0aSet-Cookie:%20a=1", NULL, "refused -22");
    expect_body("/go?to=/a%20b", NULL, "refused -22");
    expect_body("/go?to=/%C3%BC", NULL, "refused -22");
    expect_body("/go?to=", NULL, "refused -22");
    stop();
}

static void cors_start(int credentials, const char *const *origins)
{
    sq_cors_opts_t o;
    sq_cors_opts_init(&o);
    static const char *const methods[] = {"GET", "POST", NULL};
    static const char *const headers[] = {"X-Token", NULL};
    static const char *const expose[] = {"X-Total", NULL};
    o.origins = origins;
    o.methods = methods;
    o.headers = headers;
    o.expose = expose;
    o.credentials = credentials;
    o.max_age = 300;
    start(&o);
}

static const char *const app_origin[] = {"https://app.example", NULL};

Test(cors, a_preflight_from_an_allowed_origin_is_answered_without_the_handler)
{
    cors_start(0, app_origin);
    static const char *const h[] = {"Origin: https://app.example",
                                    "Access-Control-Request-Method: POST",
                                    "Access-Control-Request-Headers: x-token, content-type", NULL};
    sq_test_res_t *r = req("OPTIONS", "/go", h);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Origin"), "https://app.example");
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Methods"), "GET, POST");
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Headers"),
                     "Accept, Accept-Language, Content-Language, Content-Type, x-token");
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Max-Age"), "300");
    cr_assert_str_eq(sq_test_res_header(r, "Vary"), "Origin");
    cr_assert_null(sq_test_res_header(r, "Access-Control-Allow-Credentials"));
    sq_test_res_free(r);
    cr_assert_eq(atomic_load(&reached), 0);
    stop();
}

Test(cors, a_preflight_from_a_foreign_origin_or_for_a_method_or_header_not_allowed_is_400)
{
    cors_start(0, app_origin);
    static const char *const foreign[] = {"Origin: https://evil.example",
                                          "Access-Control-Request-Method: POST", NULL};
    sq_test_res_t *r = req("OPTIONS", "/go", foreign);
    cr_assert_eq(r->status, 400);
    cr_assert_str_eq(r->body, "Disallowed CORS origin");
    cr_assert_null(sq_test_res_header(r, "Access-Control-Allow-Origin"));
    sq_test_res_free(r);
    static const char *const method[] = {"Origin: https://app.example",
                                         "Access-Control-Request-Method: DELETE", NULL};
    r = req("OPTIONS", "/go", method);
    cr_assert_eq(r->status, 400);
    cr_assert_str_eq(r->body, "Disallowed CORS method");
    sq_test_res_free(r);
    static const char *const hdr[] = {"Origin: https://app.example",
                                      "Access-Control-Request-Method: GET",
                                      "Access-Control-Request-Headers: x-token,x-other", NULL};
    r = req("OPTIONS", "/nowhere", hdr);
    cr_assert_eq(r->status, 400);
    cr_assert_str_eq(r->body, "Disallowed CORS headers");
    sq_test_res_free(r);
    cr_assert_eq(atomic_load(&reached), 0);
    stop();
}

Test(cors, simple_requests_get_the_origin_only_when_it_is_allowed)
{
    cors_start(1, app_origin);
    static const char *const ok[] = {"Origin: https://app.example", NULL};
    sq_test_res_t *r = req("GET", "/c?name=a", ok);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Origin"), "https://app.example");
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Credentials"), "true");
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Expose-Headers"), "X-Total");
    cr_assert_str_eq(sq_test_res_header(r, "Vary"), "Origin");
    sq_test_res_free(r);
    static const char *const foreign[] = {"Origin: https://evil.example", NULL};
    r = req("GET", "/c?name=a", foreign);
    cr_assert_eq(r->status, 200); /* served: the browser withholds it from the page */
    cr_assert_null(sq_test_res_header(r, "Access-Control-Allow-Origin"));
    cr_assert_str_eq(sq_test_res_header(r, "Vary"), "Origin");
    sq_test_res_free(r);
    r = req("GET", "/c?name=a", NULL);
    cr_assert_null(sq_test_res_header(r, "Access-Control-Allow-Origin"));
    cr_assert_null(sq_test_res_header(r, "Vary"));
    sq_test_res_free(r);
    stop();
}

Test(cors, any_origin_without_credentials_is_a_star)
{
    static const char *const any[] = {"*", NULL};
    cors_start(0, any);
    static const char *const h[] = {"Origin: https://whoever.example", NULL};
    sq_test_res_t *r = req("GET", "/c?name=a", h);
    cr_assert_str_eq(sq_test_res_header(r, "Access-Control-Allow-Origin"), "*");
    cr_assert_null(sq_test_res_header(r, "Vary"));
    sq_test_res_free(r);
    stop();
}

Test(cors, options_that_could_split_a_header_are_refused)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    sq_cors_opts_t o;
    sq_cors_opts_init(&o);
    static const char *const bad[] = {"https://a.example\r\nX-Evil: 1", NULL};
    o.origins = bad;
    cr_assert_eq(sq_app_cors(a, &o), UV_EINVAL);
    static const char *const comma[] = {"X-A, X-B", NULL};
    sq_cors_opts_init(&o);
    o.headers = comma;
    cr_assert_eq(sq_app_cors(a, &o), UV_EINVAL);
    sq_app_destroy(a);
}

/* ---- the log sink ---- */

static char logged[256];
static int logged_level = -1;

static void sink(sq_log_level_t level, const char *line, void *data)
{
    logged_level = (int)level;
    snprintf(logged, sizeof(logged), "%s|%s", (const char *)data, line);
}

static int fail_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    return UV_EPERM;
}

Test(log_sink, lines_go_to_the_applications_sink_and_back_to_stderr)
{
    static char tag[] = "mine";
    sq_log_set_sink(sink, tag);
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/c", &cookie_route, NULL), 0);
    cr_assert_eq(sq_app_before(app, fail_hook, NULL), 0);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
    sq_test_res_t *r = req("GET", "/c", NULL);
    cr_assert_eq(r->status, 500);
    sq_test_res_free(r);
    stop();
    sq_log_set_sink(NULL, NULL);
    cr_assert_eq(logged_level, SQ_LOG_ERROR);
    cr_assert_str_eq(logged, "mine|GET /c: before hook 1 failed: operation not permitted");
}
