/* Promises: values and errors down a chain, reactions exactly once and never inside the
 * call that caused them, combinators, timeouts, cancellation reaching the operation
 * underneath, and every value freed exactly once whether a chain ends, is abandoned or is
 * cancelled (the value destructors are counted; ASan and valgrind check the rest). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squall.h>

static int made;  /* boxes allocated */
static int freed; /* boxes freed */
static int box_steps; /* steps of sleep_then_box that ran */

static int *box(int v)
{
    int *p = malloc(sizeof(*p));
    *p = v;
    made++;
    return p;
}

static void box_free(void *p)
{
    freed++;
    free(p);
}

static void setup(void)
{
    made = freed = 0;
    box_steps = 0;
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
    cr_assert_eq(made, freed, "%d values made, %d freed", made, freed);
}

/* What an await saw. */
typedef struct seen {
    int calls;
    int status;
    int value; /* *(int *)value when fulfilled with a box */
    bool has_value;
    int order;
} seen_t;

static int seq;

static void record(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    seen_t *s = data;
    cr_assert_null(next);
    s->calls++;
    s->status = status;
    s->has_value = value != NULL;
    if (value && status == 0)
        s->value = *(int *)value;
    s->order = seq++;
}

/* then: next = value + 1; catch: recovers with 100 + -status. */
static void plus_one(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    cr_assert_eq(status, 0);
    if (data)
        (*(int *)data)++;
    cr_assert_eq(sq_promise_resolve(next, box(*(int *)value + 1), box_free), 0);
}

static void times_two(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                      void *data)
{
    if (data)
        (*(int *)data)++;
    sq_promise_resolve(next, box(*(int *)value * 2), box_free);
}

static void recover(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    cr_assert_lt(status, 0);
    if (data)
        (*(int *)data)++;
    sq_promise_resolve(next, box(100 - status), box_free);
}

static void fail_with_eio(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                          void *data)
{
    if (data)
        (*(int *)data)++;
    sq_promise_reject(next, UV_EIO, strdup("disk on fire"), free);
}

/* sleep_then_box's step: the value rides in the data pointer itself: a then
 * callback may never run (a rejection or a cancel passes it by), so per-step data must not
 * need freeing by it (see promise.h). */

static void resolve_box(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                        void *data)
{
    int v = (int)(intptr_t)data;
    box_steps++;
    if (v < 0)
        sq_promise_reject(next, v, NULL, NULL);
    else
        sq_promise_resolve(next, box(v), box_free);
}

/* A promise of box(v) (or a rejection with v < 0) after ms. */
static sq_promise_t *sleep_then_box(uv_loop_t *loop, uint64_t ms, int v)
{
    sq_promise_t *s, *t;
    cr_assert_eq(sq_promise_sleep(&s, loop, ms), 0);
    cr_assert_eq(sq_promise_then(&t, s, resolve_box, (void *)(intptr_t)v), 0);
    sq_promise_release(s);
    return t;
}

/* ---- basics ---- */

Test(promise, resolve_runs_reactions_later_once_in_registration_order, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    sq_promise_t *p;
    cr_assert_eq(sq_promise_create(&p, &loop), 0);
    seen_t a = {0}, b = {0}, c = {0};
    cr_assert_eq(sq_promise_await(p, record, &a), 0);
    cr_assert_eq(sq_promise_await(p, record, &b), 0);
    cr_assert_eq(sq_promise_state(p), SQ_PROMISE_PENDING);
    cr_assert_eq(sq_promise_result(p, NULL), UV_EAGAIN);
    cr_assert_eq(sq_promise_resolve(p, box(41), box_free), 0);
    cr_assert_eq(a.calls, 0, "not from inside resolve");
    cr_assert_eq(sq_promise_state(p), SQ_PROMISE_FULFILLED);
    cr_assert_eq(sq_promise_resolve(p, box(1), box_free), UV_EALREADY,
                 "settles once; the value is freed anyway");
    cr_assert_eq(freed, 1);
    cr_assert_eq(sq_promise_await(p, record, &c), 0);
    cr_assert_eq(c.calls, 0, "not from inside await on a settled promise");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(a.value, 41);
    cr_assert_eq(a.order, 0);
    cr_assert_eq(b.order, 1);
    cr_assert_eq(c.order, 2);
    void *v;
    cr_assert_eq(sq_promise_result(p, &v), 0);
    cr_assert_eq(*(int *)v, 41);
    sq_promise_release(p);
    close_loop(&loop);
}

Test(promise, then_chain_transforms_values, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p, *a, *b;
    int calls = 0;
    cr_assert_eq(sq_promise_create(&p, &loop), 0);
    cr_assert_eq(sq_promise_then(&a, p, plus_one, &calls), 0);
    cr_assert_eq(sq_promise_then(&b, a, times_two, &calls), 0);
    seen_t s = {0};
    sq_promise_await(b, record, &s);
    sq_promise_resolve(p, box(20), box_free);
    sq_promise_release(p);
    sq_promise_release(a);
    sq_promise_release(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(calls, 2);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, 0);
    cr_assert_eq(s.value, 42);
    close_loop(&loop);
}

Test(promise, rejection_skips_thens_and_reaches_catch_with_its_detail, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int thens = 0, catches = 0;
    sq_promise_t *p, *a, *b, *c, *d;
    sq_promise_create(&p, &loop);
    sq_promise_then(&a, p, plus_one, &thens);
    sq_promise_then(&b, a, times_two, &thens);
    sq_promise_catch(&c, b, recover, &catches);
    sq_promise_then(&d, c, plus_one, &thens);
    seen_t sb = {0}, sd = {0};
    sq_promise_await(b, record, &sb);
    sq_promise_await(d, record, &sd);
    cr_assert_eq(sq_promise_reject(p, UV_ENOENT, box(7), box_free), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(thens, 1, "only the then after the catch ran");
    cr_assert_eq(catches, 1);
    cr_assert_eq(sb.status, UV_ENOENT, "the error went down unchanged");
    cr_assert(sb.has_value, "with its detail");
    void *detail;
    cr_assert_eq(sq_promise_result(b, &detail), UV_ENOENT);
    cr_assert_eq(*(int *)detail, 7);
    cr_assert_eq(sd.status, 0);
    cr_assert_eq(sd.value, 100 - UV_ENOENT + 1);
    sq_promise_release(p);
    sq_promise_release(a);
    sq_promise_release(b);
    sq_promise_release(c);
    sq_promise_release(d);
    close_loop(&loop);
}

Test(promise, error_raised_mid_chain_goes_down_to_the_end, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int thens = 0, fails = 0, catches = 0;
    sq_promise_t *p, *a, *b, *c, *d;
    sq_promise_create(&p, &loop);
    sq_promise_catch(&a, p, recover, &catches); /* a fulfilment passes through catch */
    sq_promise_then(&b, a, fail_with_eio, &fails);
    sq_promise_then(&c, b, plus_one, &thens);
    sq_promise_then(&d, c, times_two, &thens);
    seen_t s = {0};
    sq_promise_await(d, record, &s);
    sq_promise_resolve(p, box(1), box_free);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(catches, 0);
    cr_assert_eq(fails, 1);
    cr_assert_eq(thens, 0);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, UV_EIO);
    void *detail;
    cr_assert_eq(sq_promise_result(d, &detail), UV_EIO);
    cr_assert_str_eq((char *)detail, "disk on fire");
    sq_promise_release(p);
    sq_promise_release(a);
    sq_promise_release(b);
    sq_promise_release(c);
    sq_promise_release(d);
    close_loop(&loop);
}

Test(promise, reject_needs_a_negative_code_and_frees_the_detail_anyway, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p;
    sq_promise_create(&p, &loop);
    cr_assert_eq(sq_promise_reject(p, 0, box(1), box_free), UV_EINVAL);
    cr_assert_eq(freed, 1);
    cr_assert_eq(sq_promise_state(p), SQ_PROMISE_PENDING);
    cr_assert_eq(sq_promise_cancel(p), 0);
    cr_assert_eq(sq_promise_cancel(p), UV_EALREADY);
    cr_assert_eq(sq_promise_reject(p, UV_EIO, box(2), box_free), UV_EALREADY);
    cr_assert_eq(freed, 2);
    cr_assert_eq(sq_promise_result(p, NULL), UV_ECANCELED);
    cr_assert_eq(sq_promise_follow(p, p), UV_EALREADY);
    sq_promise_release(p);
    close_loop(&loop);
}

/* ---- asynchronous steps ---- */

/* A reaction that continues with another operation: next follows a sleep. */
static void then_sleep(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                       void *data)
{
    sq_promise_t *s;
    cr_assert_eq(sq_promise_sleep(&s, sq_promise_loop(p), 20), 0);
    cr_assert_eq(sq_promise_follow(next, s), 0);
    cr_assert_eq(sq_promise_follow(next, s), SQ_EBUSY);
    sq_promise_release(s);
}

/* A reaction that settles next later, holding a reference meanwhile. */
typedef struct later {
    sq_promise_t *next;
    int value;
} later_t;

static void later_fire(sq_sleep_t *s, int status, void *data)
{
    later_t *l = data;
    sq_promise_resolve(l->next, box(l->value), box_free);
    sq_promise_release(l->next);
}

static void then_later(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                       void *data)
{
    later_t *l = data;
    l->next = sq_promise_ref(next);
    l->value = *(int *)value * 10;
    sq_sleep(NULL, sq_promise_loop(p), 10, later_fire, l);
}

Test(promise, reactions_can_continue_asynchronously, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p, *a, *b;
    sq_promise_create(&p, &loop);
    later_t l = {0};
    sq_promise_then(&a, p, then_later, &l);
    sq_promise_then(&b, a, then_sleep, NULL);
    seen_t sa = {0}, sb = {0};
    sq_promise_await(a, record, &sa);
    sq_promise_await(b, record, &sb);
    sq_promise_resolve(p, box(4), box_free);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_geq(uv_now(&loop) - start, 30);
    cr_assert_eq(sa.calls, 1);
    cr_assert_eq(sa.value, 40);
    cr_assert_eq(sb.calls, 1);
    cr_assert_eq(sb.status, 0);
    cr_assert(!sb.has_value, "a sleep fulfils with NULL");
    sq_promise_release(p);
    sq_promise_release(a);
    sq_promise_release(b);
    close_loop(&loop);
}

Test(promise, a_thousand_links_run_without_recursion, .init = setup, .timeout = 20)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int calls = 0;
    sq_promise_t *head, *cur;
    sq_promise_create(&head, &loop);
    cur = sq_promise_ref(head);
    for (int i = 0; i < 1000; i++) {
        sq_promise_t *next;
        cr_assert_eq(sq_promise_then(&next, cur, plus_one, &calls), 0);
        sq_promise_release(cur);
        cur = next;
    }
    seen_t s = {0};
    sq_promise_await(cur, record, &s);
    sq_promise_release(cur);
    sq_promise_resolve(head, box(0), box_free);
    sq_promise_release(head);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(calls, 1000);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.value, 1000);
    close_loop(&loop);
}

/* ---- lifetimes ---- */

Test(promise, an_abandoned_chain_still_runs_and_frees_itself, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int calls = 0;
    sq_promise_t *s, *a, *b;
    cr_assert_eq(sq_promise_work(&s, &loop, NULL, NULL, box(1), box_free), UV_EINVAL);
    cr_assert_eq(freed, 1, "data is stolen even on failure");
    cr_assert_eq(sq_promise_sleep(&s, &loop, 10), 0);
    sq_promise_then(&a, s, then_sleep, &calls);
    sq_promise_then(&b, a, then_sleep, &calls);
    sq_promise_then(NULL, b, then_sleep, NULL);
    /* Nobody keeps anything: the sleep's operation holds the head until it fires. */
    sq_promise_release(s);
    sq_promise_release(a);
    sq_promise_release(b);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_geq(uv_now(&loop) - start, 70, "all four sleeps ran one after the other");
    close_loop(&loop);
}

Test(promise, releasing_the_last_reference_to_a_pending_promise_cancels_its_waiters,
     .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p, *a;
    int calls = 0;
    sq_promise_create(&p, &loop);
    sq_promise_then(&a, p, plus_one, &calls);
    seen_t sp = {0}, sa = {0};
    sq_promise_await(p, record, &sp);
    sq_promise_await(a, record, &sa);
    sq_promise_release(a);
    sq_promise_release(p); /* nobody can resolve p any more */
    cr_assert_eq(sp.calls, 0, "not from inside release");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(calls, 0);
    cr_assert_eq(sp.calls, 1);
    cr_assert_eq(sp.status, UV_ECANCELED);
    cr_assert_eq(sa.calls, 1);
    cr_assert_eq(sa.status, UV_ECANCELED);
    close_loop(&loop);
}

Test(promise, a_promise_nobody_waits_on_is_freed_at_once, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p;
    sq_promise_create(&p, &loop);
    sq_promise_resolve(p, box(3), box_free);
    sq_promise_release(p);
    cr_assert_eq(freed, 1);
    sq_promise_create(&p, &loop);
    sq_promise_release(p); /* pending, no waiter */
    sq_promise_release(NULL);
    close_loop(&loop);
}

/* ---- cancellation ---- */

Test(promise, cancelling_the_end_of_a_chain_cancels_the_sleep_at_its_head, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int calls = 0;
    sq_promise_t *s, *a, *b;
    sq_promise_sleep(&s, &loop, 10000);
    sq_promise_then(&a, s, plus_one, &calls);
    sq_promise_then(&b, a, plus_one, &calls);
    seen_t ss = {0}, sb = {0};
    sq_promise_await(s, record, &ss);
    sq_promise_await(b, record, &sb);
    cr_assert_eq(sq_promise_cancel(b), 0);
    cr_assert_eq(sq_promise_state(b), SQ_PROMISE_REJECTED, "rejected at once");
    cr_assert_eq(sb.calls, 0, "its reactions run later");
    /* a had only b waiting; s had a and an await: s is still wanted. */
    cr_assert_eq(sq_promise_state(a), SQ_PROMISE_REJECTED);
    cr_assert_eq(sq_promise_state(s), SQ_PROMISE_PENDING);
    cr_assert_eq(sq_promise_cancel(a), UV_EALREADY);
    sq_promise_cancel(s);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_lt(uv_now(&loop) - start, 1000, "the timer underneath was stopped");
    cr_assert_eq(calls, 0);
    cr_assert_eq(sb.calls, 1);
    cr_assert_eq(sb.status, UV_ECANCELED);
    cr_assert_eq(ss.calls, 1);
    cr_assert_eq(ss.status, UV_ECANCELED);
    sq_promise_release(s);
    sq_promise_release(a);
    sq_promise_release(b);
    close_loop(&loop);
}

Test(promise, cancel_goes_up_only_while_nothing_else_waits, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int calls = 0;
    sq_promise_t *s = sleep_then_box(&loop, 20, 3), *a, *b;
    sq_promise_then(&a, s, plus_one, &calls);
    sq_promise_then(&b, s, times_two, &calls);
    cr_assert_eq(sq_promise_cancel(a), 0);
    cr_assert_eq(sq_promise_state(s), SQ_PROMISE_PENDING, "b still waits on s");
    sq_promise_release(s);
    sq_promise_release(a);
    seen_t sb = {0};
    sq_promise_await(b, record, &sb);
    sq_promise_release(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(calls, 1);
    cr_assert_eq(sb.calls, 1);
    cr_assert_eq(sb.status, 0);
    cr_assert_eq(sb.value, 6);
    close_loop(&loop);
}

/* A job that blocks until released (or sees its cancellation). */
typedef struct gate {
    uv_sem_t started;
    uv_sem_t release;
    int ran;
} gate_t;

static int gate_work(sq_work_t *w, void *data)
{
    gate_t *g = *(gate_t **)data;
    g->ran++;
    uv_sem_post(&g->started);
    uv_sem_wait(&g->release);
    return 0;
}

static int spin_until_cancelled(sq_work_t *w, void *data)
{
    while (!sq_work_is_cancelled(w))
        usleep(1000);
    return 0;
}

static gate_t **gate_box(gate_t *g)
{
    gate_t **b = malloc(sizeof(*b));
    *b = g;
    made++;
    return b;
}

Test(promise, cancel_reaches_a_work_job_waiting_in_a_pool, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 8};
    sq_work_pool_t *pool;
    sq_work_pool_create(&pool, &loop, &o);
    gate_t g1 = {0}, g2 = {0};
    uv_sem_init(&g1.started, 0);
    uv_sem_init(&g1.release, 0);
    uv_sem_init(&g2.started, 0);
    uv_sem_init(&g2.release, 0);
    sq_promise_t *w1, *w2, *t2;
    cr_assert_eq(sq_promise_work(&w1, &loop, pool, gate_work, gate_box(&g1), box_free), 0);
    cr_assert_eq(sq_promise_work(&w2, &loop, pool, gate_work, gate_box(&g2), box_free), 0);
    int calls = 0;
    sq_promise_then(&t2, w2, plus_one, &calls);
    seen_t s1 = {0}, s2 = {0};
    sq_promise_await(w1, record, &s1);
    sq_promise_await(w2, record, &s2);
    uv_sem_wait(&g1.started);
    /* w2 has an await besides t2: cancel w2 itself. */
    cr_assert_eq(sq_promise_cancel(w2), 0);
    uv_sem_post(&g1.release);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g2.ran, 0, "the job never ran");
    cr_assert_eq(calls, 0);
    cr_assert_eq(s2.status, UV_ECANCELED);
    cr_assert(!s2.has_value, "a cancelled job's data stays with the job");
    cr_assert_eq(s1.status, 0);
    cr_assert_eq(sq_promise_state(t2), SQ_PROMISE_REJECTED);
    sq_promise_release(w1);
    sq_promise_release(w2);
    sq_promise_release(t2);
    sq_work_pool_destroy(pool, NULL, NULL);
    uv_sem_destroy(&g1.started);
    uv_sem_destroy(&g1.release);
    uv_sem_destroy(&g2.started);
    uv_sem_destroy(&g2.release);
    close_loop(&loop);
}

Test(promise, destroying_the_pool_rejects_its_work_promises, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 8};
    sq_work_pool_t *pool;
    sq_work_pool_create(&pool, &loop, &o);
    sq_promise_t *a, *b;
    sq_promise_work(&a, &loop, pool, spin_until_cancelled, box(1), box_free);
    sq_promise_work(&b, &loop, pool, spin_until_cancelled, box(2), box_free);
    seen_t sa = {0}, sb = {0};
    sq_promise_await(a, record, &sa);
    sq_promise_await(b, record, &sb);
    sq_promise_release(a);
    sq_promise_release(b);
    sq_work_pool_destroy(pool, NULL, NULL);
    cr_assert_eq(sq_promise_work(&a, &loop, pool, spin_until_cancelled, box(3), box_free),
                 SQ_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sa.status, UV_ECANCELED);
    cr_assert_eq(sb.status, UV_ECANCELED);
    close_loop(&loop);
}

static int fill_42(sq_work_t *w, void *data)
{
    *(int *)data = 42;
    return 0;
}

static int fail_eio(sq_work_t *w, void *data)
{
    *(int *)data = -1;
    return UV_EIO;
}

Test(promise, work_promise_fulfils_with_its_data_or_rejects_with_the_code, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *ok, *bad;
    cr_assert_eq(sq_promise_work(&ok, &loop, NULL, fill_42, box(0), box_free), 0);
    cr_assert_eq(sq_promise_work(&bad, &loop, NULL, fail_eio, box(0), box_free), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    void *v;
    cr_assert_eq(sq_promise_result(ok, &v), 0);
    cr_assert_eq(*(int *)v, 42);
    cr_assert_eq(sq_promise_result(bad, &v), UV_EIO);
    cr_assert_eq(*(int *)v, -1, "the data is the detail");
    cr_assert_eq(freed, 0);
    sq_promise_release(ok);
    sq_promise_release(bad);
    close_loop(&loop);
}

static void hook(sq_promise_t *p, void *data)
{
    (*(int *)data)++;
    cr_assert_eq(sq_promise_state(p), SQ_PROMISE_REJECTED);
}

Test(promise, on_cancel_hook_runs_once, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int hooks = 0;
    sq_promise_t *p;
    sq_promise_create(&p, &loop);
    cr_assert_eq(sq_promise_on_cancel(p, hook, &hooks), 0);
    cr_assert_eq(sq_promise_on_cancel(p, hook, &hooks), SQ_EBUSY);
    sq_promise_cancel(p);
    sq_promise_cancel(p);
    cr_assert_eq(hooks, 1);
    cr_assert_eq(sq_promise_on_cancel(p, hook, &hooks), UV_EALREADY);
    sq_promise_release(p);
    /* A resolved promise never calls its hook. */
    sq_promise_create(&p, &loop);
    sq_promise_on_cancel(p, hook, &hooks);
    sq_promise_resolve(p, NULL, NULL);
    sq_promise_cancel(p);
    sq_promise_release(p);
    cr_assert_eq(hooks, 1);
    close_loop(&loop);
}

/* ---- combinators ---- */

static void check_all(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                      void *data)
{
    seen_t *s = data;
    s->calls++;
    s->status = status;
    cr_assert_eq(status, 0);
    void **vals = value;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(*(int *)vals[i], i + 1, "value %d in input order", i);
}

Test(promise, all_fulfils_with_values_in_input_order, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *ps[3] = {sleep_then_box(&loop, 30, 1), sleep_then_box(&loop, 10, 2),
                           NULL};
    sq_promise_create(&ps[2], &loop);
    sq_promise_resolve(ps[2], box(3), box_free); /* already settled */
    sq_promise_t *all;
    cr_assert_eq(sq_promise_all(&all, ps, 0), UV_EINVAL);
    cr_assert_eq(sq_promise_all(&all, ps, 3), 0);
    for (int i = 0; i < 3; i++)
        sq_promise_release(ps[i]);
    seen_t s = {0};
    sq_promise_await(all, check_all, &s);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, 0);
    cr_assert_eq(freed, 0, "the result keeps its inputs' values alive");
    sq_promise_release(all);
    close_loop(&loop);
}

Test(promise, all_rejects_on_the_first_rejection_and_cancels_the_rest, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *ps[3] = {sleep_then_box(&loop, 10000, 1),
                           sleep_then_box(&loop, 10, UV_EPIPE),
                           sleep_then_box(&loop, 10000, 3)};
    sq_promise_t *all;
    sq_promise_all(&all, ps, 3);
    seen_t s = {0};
    sq_promise_await(all, record, &s);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_lt(uv_now(&loop) - start, 1000, "the slow sleeps were cancelled");
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, UV_EPIPE);
    cr_assert_eq(box_steps, 1, "only the failing input's step ran");
    cr_assert_eq(sq_promise_result(ps[0], NULL), UV_ECANCELED);
    cr_assert_eq(sq_promise_result(ps[2], NULL), UV_ECANCELED);
    for (int i = 0; i < 3; i++)
        sq_promise_release(ps[i]);
    sq_promise_release(all);
    close_loop(&loop);
}

Test(promise, race_takes_the_first_outcome_and_cancels_the_losers, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (int fail = 0; fail <= 1; fail++) {
        sq_promise_t *ps[3] = {sleep_then_box(&loop, 10000, 1),
                               sleep_then_box(&loop, 10, fail ? UV_EPIPE : 2),
                               sleep_then_box(&loop, 10000, 3)};
        sq_promise_t *r;
        cr_assert_eq(sq_promise_race(&r, ps, 3), 0);
        for (int i = 0; i < 3; i++)
            sq_promise_release(ps[i]);
        seen_t s = {0};
        sq_promise_await(r, record, &s);
        uint64_t start = uv_now(&loop);
        uv_run(&loop, UV_RUN_DEFAULT);
        cr_assert_lt(uv_now(&loop) - start, 1000);
        cr_assert_eq(s.calls, 1);
        cr_assert_eq(s.status, fail ? UV_EPIPE : 0);
        if (!fail)
            cr_assert_eq(s.value, 2);
        sq_promise_release(r);
    }
    cr_assert_eq(box_steps, 2);
    close_loop(&loop);
}

Test(promise, any_takes_the_first_fulfilment_or_the_last_error, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *ps[3] = {sleep_then_box(&loop, 10, UV_EPIPE),
                           sleep_then_box(&loop, 30, 2),
                           sleep_then_box(&loop, 10000, 3)};
    sq_promise_t *a;
    cr_assert_eq(sq_promise_any(&a, ps, 3), 0);
    seen_t s = {0};
    sq_promise_await(a, record, &s);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(s.status, 0);
    cr_assert_eq(s.value, 2);
    cr_assert_eq(sq_promise_result(ps[2], NULL), UV_ECANCELED);
    for (int i = 0; i < 3; i++)
        sq_promise_release(ps[i]);
    sq_promise_release(a);

    sq_promise_t *qs[2] = {sleep_then_box(&loop, 10, UV_EPIPE),
                           sleep_then_box(&loop, 20, UV_EIO)};
    cr_assert_eq(sq_promise_any(&a, qs, 2), 0);
    sq_promise_release(qs[0]);
    sq_promise_release(qs[1]);
    seen_t t = {0};
    sq_promise_await(a, record, &t);
    sq_promise_release(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(t.calls, 1);
    cr_assert_eq(t.status, UV_EIO, "every input failed: the last error");
    close_loop(&loop);
}

Test(promise, cancelling_a_combinator_cancels_its_inputs, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *ps[2] = {sleep_then_box(&loop, 10000, 1),
                           sleep_then_box(&loop, 10000, 2)};
    sq_promise_t *all;
    sq_promise_all(&all, ps, 2);
    sq_promise_release(ps[0]);
    sq_promise_release(ps[1]);
    seen_t s = {0};
    sq_promise_await(all, record, &s);
    cr_assert_eq(sq_promise_cancel(all), 0);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_lt(uv_now(&loop) - start, 1000);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, UV_ECANCELED);
    sq_promise_release(all);
    close_loop(&loop);
}

/* ---- timeouts ---- */

Test(promise, with_timeout_expires_and_cancels_the_job_underneath, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *w, *t;
    cr_assert_eq(sq_promise_work(&w, &loop, NULL, spin_until_cancelled, box(9), box_free), 0);
    cr_assert_eq(sq_promise_with_timeout(&t, w, 40), 0);
    sq_promise_release(w);
    seen_t s = {0};
    sq_promise_await(t, record, &s);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_geq(uv_now(&loop) - start, 40);
    cr_assert_lt(uv_now(&loop) - start, 2000);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, UV_ETIMEDOUT);
    cr_assert_eq(freed, 1, "the job's data was freed by the job");
    sq_promise_release(t);
    close_loop(&loop);
}

Test(promise, with_timeout_in_time_passes_the_value_and_stops_its_timer, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_promise_t *p = sleep_then_box(&loop, 10, 5), *t;
    cr_assert_eq(sq_promise_with_timeout(&t, p, 10000), 0);
    sq_promise_release(p);
    seen_t s = {0};
    sq_promise_await(t, record, &s);
    uint64_t start = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_lt(uv_now(&loop) - start, 1000, "the timeout's timer was cancelled");
    cr_assert_eq(s.status, 0);
    cr_assert_eq(s.value, 5);
    sq_promise_release(t);
    close_loop(&loop);
}

Test(promise, cancel_at_every_stage_of_a_chain_calls_each_await_once, .init = setup,
     .timeout = 20)
{
    /* Cancel link k of a 4-link chain before it runs, while its step sleeps, and after it
     * settled; every await fires exactly once and every value is freed. */
    for (int k = 0; k < 4; k++) {
        for (int when = 0; when < 3; when++) {
            uv_loop_t loop;
            uv_loop_init(&loop);
            made = freed = 0;
            box_steps = 0;
            sq_promise_t *links[4];
            seen_t seen[4] = {{0}};
            links[0] = sleep_then_box(&loop, 5, 1);
            for (int i = 1; i < 4; i++)
                sq_promise_then(&links[i], links[i - 1], plus_one, NULL);
            for (int i = 0; i < 4; i++)
                sq_promise_await(links[i], record, &seen[i]);
            if (when == 0) {
                sq_promise_cancel(links[k]);
            } else {
                uv_run(&loop, when == 1 ? UV_RUN_NOWAIT : UV_RUN_DEFAULT);
                sq_promise_cancel(links[k]);
            }
            uv_run(&loop, UV_RUN_DEFAULT);
            for (int i = 0; i < 4; i++) {
                cr_assert_eq(seen[i].calls, 1, "k=%d when=%d link %d", k, when, i);
                sq_promise_release(links[i]);
            }
            if (when == 2)
                for (int i = 0; i < 4; i++)
                    cr_assert_eq(seen[i].status, 0);
            else
                cr_assert_eq(seen[3].status, UV_ECANCELED);
            close_loop(&loop);
        }
    }
}
