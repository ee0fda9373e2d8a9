/* The test client's streams (sq_test_stream_*): an event stream read event by event while
 * it stays open, a chunked response that ends, a head that never comes, and a stream
 * closed by the test (its handler is told) or left for sq_test_destroy. */
#include <criterion/criterion.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>

static sq_res_t *open_stream;
static int aborted;

/* GET /events: a first event at once, then one per /tick, until /end. */
static void events_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_start(res, 200, "text/event-stream");
    sq_res_write(res, "data: hello\n\n", 13, NULL, NULL);
    open_stream = res;
}
static void events_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    aborted++;
    sq_res_end(res);
    open_stream = NULL;
}
static void tick_post(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *what = sq_req_query(req, "end") ? NULL : "data: tick\n\n";
    if (open_stream != NULL && what != NULL)
        sq_res_write(open_stream, what, strlen(what), NULL, NULL);
    else if (open_stream != NULL) {
        sq_res_end(open_stream);
        open_stream = NULL;
    }
    sq_res_send(res, 204, NULL, NULL, 0);
}
/* GET /never: holds the response (answered by abort only). */
static void never_get(sq_req_t *req, sq_res_t *res, void *data)
{
    open_stream = res;
}
static void never_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    aborted++;
    sq_res_send(res, 500, NULL, NULL, 0);
    open_stream = NULL;
}

static const sq_handler_t events = {.get = events_get, .aborted = events_aborted};
static const sq_handler_t tick = {.post = tick_post};
static const sq_handler_t never = {.get = never_get, .aborted = never_aborted};

static sq_app_t *app;
static sq_test_t *client;

static void setup(void)
{
    open_stream = NULL;
    aborted = 0;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/events", &events, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/tick", &tick, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/never", &never, NULL), 0);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
}

static void teardown(void)
{
    cr_assert_eq(sq_test_destroy(client), 0);
    sq_app_destroy(app);
}

TestSuite(testing_stream, .init = setup, .fini = teardown, .timeout = 20);

static void post_tick(const char *target)
{
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(client, "POST", target, NULL, "", &r), 0);
    cr_assert_eq(r->status, 204);
    sq_test_res_free(r);
}

Test(testing_stream, an_event_stream_is_read_event_by_event_while_it_stays_open)
{
    sq_test_stream_t *s;
    const sq_test_res_t *head;
    cr_assert_eq(sq_test_stream_open(client, "GET", "/events", NULL, NULL, 0, &s, &head), 0);
    cr_assert_eq(head->status, 200);
    cr_assert_str_eq(sq_test_res_header(head, "Content-Type"), "text/event-stream");
    const char *d;
    size_t n;
    cr_assert_eq(sq_test_stream_read(s, 1000, &d, &n), 0);
    cr_assert_eq(n, 13);
    cr_assert(memcmp(d, "data: hello\n\n", 13) == 0);
    /* nothing more yet: the stream stays open */
    cr_assert_eq(sq_test_stream_read(s, 50, &d, &n), UV_ETIMEDOUT);
    post_tick("/tick"); /* another request meanwhile, on the client's own connection */
    cr_assert_eq(sq_test_stream_read(s, 1000, &d, &n), 0);
    cr_assert(n == 12 && memcmp(d, "data: tick\n\n", 12) == 0);
    post_tick("/tick?end=1");
    cr_assert_eq(sq_test_stream_read(s, 1000, &d, &n), UV_EOF);
    sq_test_stream_close(s);
    cr_assert_eq(aborted, 0);
}

Test(testing_stream, closing_an_open_stream_tells_its_handler)
{
    sq_test_stream_t *s;
    cr_assert_eq(sq_test_stream_open(client, "GET", "/events", NULL, NULL, 0, &s, NULL), 0);
    sq_test_stream_close(s);
    cr_assert_eq(sq_test_run(client, 50), 0);
    cr_assert_eq(aborted, 1);
    cr_assert_null(open_stream);
}

Test(testing_stream, a_head_that_never_comes_times_out_and_the_handler_is_told)
{
    sq_test_stream_t *s = (sq_test_stream_t *)1;
    cr_assert_eq(sq_test_stream_open(client, "GET", "/never", NULL, NULL, 100, &s, NULL),
                 UV_ETIMEDOUT);
    cr_assert_null(s);
    cr_assert_eq(sq_test_run(client, 50), 0);
    cr_assert_eq(aborted, 1);
}

Test(testing_stream, a_stream_left_open_is_closed_by_destroy)
{
    sq_test_stream_t *s;
    cr_assert_eq(sq_test_stream_open(client, "GET", "/events", NULL, NULL, 0, &s, NULL), 0);
    /* teardown's sq_test_destroy closes it; the handler is told and ends it */
}

Test(testing_stream, a_whole_response_read_as_a_stream_ends_with_eof)
{
    sq_test_stream_t *s;
    const sq_test_res_t *head;
    cr_assert_eq(sq_test_stream_open(client, "POST", "/tick", NULL, "", 0, &s, &head), 0);
    cr_assert_eq(head->status, 204);
    const char *d;
    size_t n;
    cr_assert_eq(sq_test_stream_read(s, 1000, &d, &n), UV_EOF);
    sq_test_stream_close(s);
}
