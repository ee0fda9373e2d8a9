/* An access log to standard output, in Combined Log Format and as JSON lines: requests
 * through the test client, the lines written out when the app is destroyed (or every
 * flush_ms before that). */
#include <stdio.h>

#include <squall.h>
#include <squall/testing.h>

static void hello_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "Hello, world", 12);
}
static const sq_handler_t hello = {.get = hello_get};

static int serve(sq_access_log_format_t format)
{
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_route(app, "/", &hello, NULL);
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = "-"; /* standard output; a file name appends to that file */
    o.format = format;
    sq_access_log_t *log;
    if (sq_app_access_log(app, &o, &log) != 0)
        return 1;
    sq_test_t *t;
    if (sq_test_create(&t, app, NULL) != 0)
        return 1;
    const char *ua[] = {"User-Agent: example/1.0", "Referer: http://example.com/", NULL};
    sq_test_res_t *r;
    if (sq_test_request(t, "GET", "/?greet=1", ua, NULL, &r) == 0)
        sq_test_res_free(r);
    if (sq_test_request(t, "GET", "/missing", NULL, NULL, &r) == 0)
        sq_test_res_free(r);
    sq_access_log_stats_t st;
    sq_access_log_stats(log, &st);
    sq_test_destroy(t);
    fflush(stdout);
    sq_app_destroy(app); /* the lines are written out before it returns */
    fprintf(stderr, "%llu lines, %llu dropped\n", (unsigned long long)st.lines,
            (unsigned long long)st.dropped);
    return 0;
}

int main(void)
{
    return serve(SQ_ACCESS_LOG_COMBINED) || serve(SQ_ACCESS_LOG_JSON);
}
