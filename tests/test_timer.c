/* Sleeps and timeouts: order, exactly-once callbacks, cancellation before, during and
 * after firing, and a timeout put on three kinds of operation. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <unistd.h>

#include <squall.h>

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
}

typedef struct woke {
    int calls;
    int status;
    int order;
    uint64_t at;
    uv_loop_t *loop;
} woke_t;

static int seq;

static void woke_cb(sq_sleep_t *s, int status, void *data)
{
    woke_t *w = data;
    w->calls++;
    w->status = status;
    w->order = seq++;
    w->at = w->loop ? uv_now(w->loop) : 0;
    cr_assert_eq(sq_sleep_cancel(s), UV_EALREADY, "cancel from its own callback is harmless");
}

Test(timer, sleeps_fire_once_in_deadline_order, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    woke_t a = {.loop = &loop}, b = {.loop = &loop}, c = {.loop = &loop};
    uint64_t start = uv_now(&loop);
    cr_assert_eq(sq_sleep(NULL, &loop, 60, woke_cb, &a), 0);
    cr_assert_eq(sq_sleep(NULL, &loop, 20, woke_cb, &b), 0);
    cr_assert_eq(sq_sleep(NULL, &loop, 40, woke_cb, &c), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls + b.calls + c.calls, 3);
    cr_assert_eq(b.order, 0);
    cr_assert_eq(c.order, 1);
    cr_assert_eq(a.order, 2);
    cr_assert_eq(a.status, 0);
    cr_assert_geq(a.at - start, 60);
    cr_assert_geq(b.at - start, 20);
    close_loop(&loop);
}

Test(timer, zero_sleep_runs_on_a_later_turn_not_inside_the_call, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    woke_t a = {0};
    cr_assert_eq(sq_sleep(NULL, &loop, 0, woke_cb, &a), 0);
    cr_assert_eq(a.calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(sq_sleep(NULL, &loop, 0, NULL, &a), UV_EINVAL);
    close_loop(&loop);
}

Test(timer, cancel_before_firing_calls_back_once_with_ecanceled, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    woke_t a = {.loop = &loop};
    sq_sleep_t *s;
    uint64_t start = uv_now(&loop);
    cr_assert_eq(sq_sleep(&s, &loop, 10000, woke_cb, &a), 0);
    cr_assert_eq(sq_sleep_cancel(s), 0);
    cr_assert_eq(a.calls, 0, "not from inside cancel");
    cr_assert_eq(sq_sleep_cancel(s), UV_EALREADY);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.status, UV_ECANCELED);
    cr_assert_lt(a.at - start, 1000, "the cancelled timer no longer holds the loop");
    close_loop(&loop);
}

typedef struct canceller {
    sq_sleep_t *victim;
    int rc;
    int calls;
} canceller_t;

static void cancel_other_cb(sq_sleep_t *s, int status, void *data)
{
    canceller_t *c = data;
    c->calls++;
    c->rc = sq_sleep_cancel(c->victim);
}

Test(timer, a_callback_cancels_a_sleep_due_in_the_same_turn, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    woke_t v = {0};
    canceller_t c = {.rc = 1};
    /* Same deadline: the canceller was started first, so it fires first. */
    cr_assert_eq(sq_sleep(NULL, &loop, 10, cancel_other_cb, &c), 0);
    cr_assert_eq(sq_sleep(&c.victim, &loop, 10, woke_cb, &v), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(c.rc, 0);
    cr_assert_eq(v.calls, 1, "exactly once, not fired and cancelled");
    cr_assert_eq(v.status, UV_ECANCELED);
    close_loop(&loop);
}

/* ---- timeouts ---- */

typedef struct timed_job {
    sq_work_t *work;
    sq_timeout_t *timeout;
    int calls;
    int status;
    int expired_calls;
    int useconds;
} timed_job_t;

static int slow_work(sq_work_t *w, void *data)
{
    timed_job_t *j = data;
    for (int i = 0; i < j->useconds / 1000 && !sq_work_is_cancelled(w); i++)
        usleep(1000);
    return 0;
}

static void slow_done(sq_work_t *w, int status, void *data)
{
    timed_job_t *j = data;
    j->calls++;
    j->status = sq_timeout_finish(j->timeout, status);
}

static void expire_work(sq_timeout_t *t, void *data)
{
    timed_job_t *j = data;
    j->expired_calls++;
    cr_assert_eq(sq_timeout_is_expired(t), 1);
    cr_assert_eq(sq_work_cancel(j->work), 0);
}

Test(timer, timeout_cancels_a_thread_pool_job_and_reports_etimedout, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    timed_job_t j = {.useconds = 5000000};
    uint64_t start = uv_now(&loop);
    cr_assert_eq(sq_work_submit(&j.work, &loop, slow_work, slow_done, &j), 0);
    cr_assert_eq(sq_timeout_start(&j.timeout, &loop, 50, expire_work, &j), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j.calls, 1);
    cr_assert_eq(j.expired_calls, 1);
    cr_assert_eq(j.status, UV_ETIMEDOUT);
    cr_assert_lt(uv_now(&loop) - start, 2000);
    close_loop(&loop);
}

Test(timer, timeout_that_does_not_fire_passes_the_status_through, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    timed_job_t j = {.useconds = 1000};
    uint64_t start = uv_now(&loop);
    cr_assert_eq(sq_work_submit(&j.work, &loop, slow_work, slow_done, &j), 0);
    cr_assert_eq(sq_timeout_start(&j.timeout, &loop, 10000, expire_work, &j), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j.calls, 1);
    cr_assert_eq(j.expired_calls, 0);
    cr_assert_eq(j.status, 0);
    cr_assert_lt(uv_now(&loop) - start, 5000, "the disarmed timeout no longer holds the loop");
    close_loop(&loop);
}

/* The same timeout on a queue get and on a sleep: any cancellable operation. */
typedef struct timed_get {
    sq_queue_op_t *op;
    sq_timeout_t *timeout;
    int calls;
    int status;
} timed_get_t;

static void timed_get_cb(sq_queue_t *q, int status, void *item, void *data)
{
    timed_get_t *g = data;
    g->calls++;
    g->status = sq_timeout_finish(g->timeout, status);
}

static void expire_get(sq_timeout_t *t, void *data)
{
    sq_queue_cancel(((timed_get_t *)data)->op);
}

typedef struct timed_sleep {
    sq_sleep_t *sleep;
    sq_timeout_t *timeout;
    int calls;
    int status;
} timed_sleep_t;

static void timed_sleep_cb(sq_sleep_t *s, int status, void *data)
{
    timed_sleep_t *t = data;
    t->calls++;
    t->status = sq_timeout_finish(t->timeout, status);
}

static void expire_sleep(sq_timeout_t *t, void *data)
{
    sq_sleep_cancel(((timed_sleep_t *)data)->sleep);
}

Test(timer, timeout_on_a_queue_get_and_on_a_sleep, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    cr_assert_eq(sq_queue_create(&q, &loop, 4, NULL, NULL), 0);
    timed_get_t g = {0};
    cr_assert_eq(sq_queue_get(q, timed_get_cb, &g, &g.op), 0);
    cr_assert_eq(sq_timeout_start(&g.timeout, &loop, 30, expire_get, &g), 0);
    timed_sleep_t s = {0};
    cr_assert_eq(sq_sleep(&s.sleep, &loop, 10000, timed_sleep_cb, &s), 0);
    cr_assert_eq(sq_timeout_start(&s.timeout, &loop, 20, expire_sleep, &s), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g.calls, 1);
    cr_assert_eq(g.status, UV_ETIMEDOUT);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, UV_ETIMEDOUT);
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

Test(timer, timeout_finish_keeps_other_errors, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_timeout_t *t;
    cr_assert_eq(sq_timeout_start(NULL, &loop, 1, expire_sleep, NULL), UV_EINVAL);
    cr_assert_eq(sq_timeout_start(&t, &loop, 1000, expire_sleep, NULL), 0);
    cr_assert_eq(sq_timeout_is_expired(t), 0);
    cr_assert_eq(sq_timeout_finish(t, UV_ECANCELED), UV_ECANCELED,
                 "a cancel that is not the timeout's stays UV_ECANCELED");
    close_loop(&loop);
}
