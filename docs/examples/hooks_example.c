/* Hooks, a sub-app, an error handler, a redirect built with url_for, cookies and CORS,
 * exercised through the test client. Prints what each request got. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <squall.h>
#include <squall/testing.h>

/* ---- the app ---- */

static void me_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "user", sq_req_cookie(req, "user")));
}

/* POST /login?user=NAME: sets the cookie, then sends the browser to /api/v1/me */
static void login_post(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *user = sq_req_query(req, "user");
    sq_cookie_opts_t o;
    sq_cookie_opts_init(&o);
    o.http_only = 1;
    o.same_site = SQ_SAMESITE_LAX;
    o.path = "/";
    if (user == NULL || sq_res_set_cookie(res, "user", user, &o) != 0) {
        sq_res_send_error(res, 400, "a plain user name is expected");
        return;
    }
    char url[64];
    sq_app_url_for(data, "me", NULL, url, sizeof(url)); /* "/api/v1/me" */
    sq_res_redirect(res, 303, url);
}

static const sq_handler_t me = {.get = me_get};
static const sq_handler_t login = {.post = login_post};

/* every request: an id on the answer */
static int request_id(sq_req_t *req, sq_res_t *res, void *data)
{
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)sq_req_id(req));
    sq_res_header(res, "X-Request-Id", id);
    return SQ_NEXT;
}

/* the API's routes only: a cookie is needed */
static int need_user(sq_req_t *req, sq_res_t *res, void *data)
{
    if (sq_req_cookie(req, "user") != NULL)
        return SQ_NEXT;
    sq_res_send_error(res, 401, "log in first");
    return SQ_PAUSE; /* answered */
}

/* every answer: how long it took */
static void timing(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    char v[32];
    snprintf(v, sizeof(v), "app;dur=%.3f", (double)(uv_hrtime() - sq_req_start_ns(req)) / 1e6);
    sq_res_header(res, "Server-Timing", v);
}

/* 404s in the page's own words */
static void not_found(sq_req_t *req, sq_res_t *res, int status, const json_t *detail, void *data)
{
    static const char page[] = "<h1>Nothing here</h1>";
    sq_res_send(res, 404, "text/html", page, sizeof(page) - 1);
}

static sq_app_t *make_app(void)
{
    sq_app_t *app, *api;
    sq_app_create(&app);
    sq_app_create(&api);
    sq_app_route_named(api, "me", "/me", &me, NULL);
    sq_app_before(api, need_user, NULL);
    sq_app_route(app, "/login", &login, app);
    sq_app_mount(app, "/api/v1", api); /* app owns api now */
    sq_app_before(app, request_id, NULL);
    sq_app_after(app, timing, NULL);
    sq_app_on_error(app, 404, not_found, NULL);
    sq_cors_opts_t cors;
    sq_cors_opts_init(&cors);
    static const char *const origins[] = {"https://app.example", NULL};
    cors.origins = origins;
    cors.credentials = 1;
    sq_app_cors(app, &cors);
    return app;
}

/* ---- a walk through it ---- */

static void show(sq_test_t *t, const char *method, const char *target, const char *const *h)
{
    sq_test_res_t *r;
    if (sq_test_request(t, method, target, h, method[0] == 'P' ? "" : NULL, &r) != 0)
        return;
    printf("%s %s -> %d %s", method, target, r->status, r->body);
    const char *names[] = {"Location", "Set-Cookie", "Access-Control-Allow-Origin"};
    for (size_t i = 0; i < 3; i++)
        if (sq_test_res_header(r, names[i]) != NULL)
            printf(" [%s: %s]", names[i], sq_test_res_header(r, names[i]));
    printf("\n");
    sq_test_res_free(r);
}

int main(void)
{
    sq_app_t *app = make_app();
    sq_test_t *t;
    if (sq_test_create(&t, app, NULL) != 0)
        return 1;
    show(t, "GET", "/api/v1/me", NULL);
    show(t, "POST", "/login?user=ada", NULL);
    const char *cookie[] = {"Cookie: user=ada", "Origin: https://app.example", NULL};
    show(t, "GET", "/api/v1/me", cookie);
    show(t, "GET", "/nowhere", NULL);
    const char *preflight[] = {"Origin: https://evil.example",
                               "Access-Control-Request-Method: GET", NULL};
    show(t, "OPTIONS", "/api/v1/me", preflight);
    sq_test_destroy(t);
    sq_app_destroy(app);
    return 0;
}
