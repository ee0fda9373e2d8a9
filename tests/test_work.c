/* The thread-pool bridge: where each side runs, exactly-once done callbacks, cancellation
 * at every stage of a job, the per-loop limiter and its FIFO, destroying a pool. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include <squall.h>

/* ---- helpers ---- */

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
}

/* A job whose work function reports that it started and then waits to be released. */
typedef struct gate_job {
    uv_sem_t started;
    uv_sem_t release;
    atomic_int ran;         /* work function entered */
    atomic_int saw_cancel;  /* sq_work_is_cancelled was 1 when released */
    int ret;                /* what the work function returns */
    int done_calls;
    int done_status;
    int order;              /* position among done callbacks */
} gate_job_t;

static int done_seq;

static void gate_init(gate_job_t *j, int ret)
{
    memset(j, 0, sizeof(*j));
    uv_sem_init(&j->started, 0);
    uv_sem_init(&j->release, 0);
    j->ret = ret;
    j->order = -1;
}

static void gate_fini(gate_job_t *j)
{
    uv_sem_destroy(&j->started);
    uv_sem_destroy(&j->release);
}

static int gate_work(sq_work_t *w, void *data)
{
    gate_job_t *j = data;
    atomic_fetch_add(&j->ran, 1);
    uv_sem_post(&j->started);
    uv_sem_wait(&j->release);
    atomic_store(&j->saw_cancel, sq_work_is_cancelled(w));
    return j->ret;
}

static void gate_done(sq_work_t *w, int status, void *data)
{
    gate_job_t *j = data;
    j->done_calls++;
    j->done_status = status;
    j->order = done_seq++;
    cr_assert_eq(sq_work_cancel(w), UV_EALREADY, "cancel from inside done is harmless");
}

/* ---- threads and statuses ---- */

typedef struct where {
    pthread_t loop_thread;
    pthread_t work_thread;
    pthread_t done_thread;
    int done_calls;
    int status;
} where_t;

static int where_work(sq_work_t *w, void *data)
{
    where_t *x = data;
    x->work_thread = pthread_self();
    return UV_EIO;
}

static void where_done(sq_work_t *w, int status, void *data)
{
    where_t *x = data;
    x->done_thread = pthread_self();
    x->done_calls++;
    x->status = status;
}

Test(work, work_on_pool_thread_done_on_loop_thread_with_its_status, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    where_t x = {.loop_thread = pthread_self()};
    cr_assert_eq(sq_work_submit(NULL, &loop, where_work, where_done, &x), 0);
    cr_assert_eq(x.done_calls, 0, "done never runs inside submit");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(x.done_calls, 1);
    cr_assert_eq(x.status, UV_EIO, "done gets the work function's return value");
    cr_assert(!pthread_equal(x.work_thread, x.loop_thread));
    cr_assert(pthread_equal(x.done_thread, x.loop_thread));
    close_loop(&loop);
}

Test(work, submit_checks_arguments, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    where_t x = {0};
    cr_assert_eq(sq_work_submit(NULL, &loop, NULL, where_done, &x), UV_EINVAL);
    cr_assert_eq(sq_work_submit(NULL, &loop, where_work, NULL, &x), UV_EINVAL);
    sq_work_pool_opts_t o;
    sq_work_pool_opts_init(&o);
    o.max_in_flight = 0;
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), UV_EINVAL);
    close_loop(&loop);
}

/* ---- cancellation at every stage ---- */

/* Occupies every thread of libuv's pool, so the next job waits in libuv's queue. */
typedef struct blockers {
    unsigned n;
    gate_job_t *jobs;
} blockers_t;

static void blockers_start(blockers_t *b, uv_loop_t *loop)
{
    b->n = sq_work_threadpool_size();
    b->jobs = calloc(b->n, sizeof(*b->jobs));
    for (unsigned i = 0; i < b->n; i++) {
        gate_init(&b->jobs[i], 0);
        cr_assert_eq(sq_work_submit(NULL, loop, gate_work, gate_done, &b->jobs[i]), 0);
    }
    for (unsigned i = 0; i < b->n; i++)
        uv_sem_wait(&b->jobs[i].started);
}

static void blockers_release(blockers_t *b)
{
    for (unsigned i = 0; i < b->n; i++)
        uv_sem_post(&b->jobs[i].release);
}

static void blockers_check(blockers_t *b)
{
    for (unsigned i = 0; i < b->n; i++) {
        cr_assert_eq(b->jobs[i].done_calls, 1);
        cr_assert_eq(b->jobs[i].done_status, 0);
        gate_fini(&b->jobs[i]);
    }
    free(b->jobs);
}

Test(work, cancel_in_libuv_queue_never_runs, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    done_seq = 0;
    blockers_t b;
    blockers_start(&b, &loop);

    gate_job_t j;
    gate_init(&j, 0);
    sq_work_t *w;
    cr_assert_eq(sq_work_submit(&w, &loop, gate_work, gate_done, &j), 0);
    cr_assert_eq(sq_work_cancel(w), 0);
    cr_assert_eq(j.done_calls, 0, "cancel never calls back from inside itself");
    cr_assert_eq(sq_work_cancel(w), UV_EALREADY);
    blockers_release(&b);
    uv_run(&loop, UV_RUN_DEFAULT);

    cr_assert_eq(j.done_calls, 1);
    cr_assert_eq(j.done_status, UV_ECANCELED);
    cr_assert_eq(atomic_load(&j.ran), 0, "a job cancelled while waiting never runs");
    blockers_check(&b);
    gate_fini(&j);
    close_loop(&loop);
}

typedef struct cancel_later {
    sq_work_t *w;
    gate_job_t *j;
    int cancel_rc;
} cancel_later_t;

static void cancel_running_cb(uv_timer_t *t)
{
    cancel_later_t *c = t->data;
    uv_sem_wait(&c->j->started); /* it is running now */
    c->cancel_rc = sq_work_cancel(c->w);
    uv_sem_post(&c->j->release);
    uv_close((uv_handle_t *)t, NULL);
}

Test(work, cancel_while_running_discards_the_result, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    gate_job_t j;
    gate_init(&j, 7);
    cancel_later_t c = {.j = &j, .cancel_rc = 1};
    cr_assert_eq(sq_work_submit(&c.w, &loop, gate_work, gate_done, &j), 0);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &c;
    uv_timer_start(&t, cancel_running_cb, 0, 0);
    uv_run(&loop, UV_RUN_DEFAULT);

    cr_assert_eq(c.cancel_rc, 0);
    cr_assert_eq(atomic_load(&j.ran), 1);
    cr_assert_eq(atomic_load(&j.saw_cancel), 1, "the work function can see the request");
    cr_assert_eq(j.done_calls, 1);
    cr_assert_eq(j.done_status, UV_ECANCELED, "its return value (7) is discarded");
    gate_fini(&j);
    close_loop(&loop);
}

/* The job has finished on its thread, its done callback not yet delivered. */
typedef struct finished_job {
    uv_sem_t finished;
    int done_calls;
    int done_status;
    sq_work_t *w;
    int cancel_rc;
} finished_job_t;

static int finish_work(sq_work_t *w, void *data)
{
    finished_job_t *f = data;
    uv_sem_post(&f->finished);
    return 0;
}

static void finish_done(sq_work_t *w, int status, void *data)
{
    finished_job_t *f = data;
    f->done_calls++;
    f->done_status = status;
}

static void cancel_finished_cb(uv_timer_t *t)
{
    finished_job_t *f = t->data;
    uv_sem_wait(&f->finished);
    usleep(20000); /* let the thread return and post its completion */
    f->cancel_rc = sq_work_cancel(f->w);
    uv_close((uv_handle_t *)t, NULL);
}

Test(work, cancel_after_the_work_ran_before_done_discards_it, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    finished_job_t f = {.cancel_rc = 1};
    uv_sem_init(&f.finished, 0);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &f;
    /* The timer runs before the loop polls for the job's completion. */
    cr_assert_eq(sq_work_submit(&f.w, &loop, finish_work, finish_done, &f), 0);
    uv_timer_start(&t, cancel_finished_cb, 0, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(f.cancel_rc, 0);
    cr_assert_eq(f.done_calls, 1);
    cr_assert_eq(f.done_status, UV_ECANCELED);
    uv_sem_destroy(&f.finished);
    close_loop(&loop);
}

/* ---- the limiter ---- */

typedef struct counted {
    atomic_int *running;
    atomic_int *peak;
    atomic_int *seq;
    int started_at;
    int done_calls;
    int status;
} counted_t;

static int counted_work(sq_work_t *w, void *data)
{
    counted_t *c = data;
    c->started_at = atomic_fetch_add(c->seq, 1);
    int now = atomic_fetch_add(c->running, 1) + 1;
    int peak = atomic_load(c->peak);
    while (now > peak && !atomic_compare_exchange_weak(c->peak, &peak, now))
        ;
    usleep(5000);
    atomic_fetch_sub(c->running, 1);
    return 0;
}

static void counted_done(sq_work_t *w, int status, void *data)
{
    counted_t *c = data;
    c->done_calls++;
    c->status = status;
}

static void pool_closed(sq_work_pool_t *pool, void *data)
{
    (*(int *)data)++;
}

Test(work, pool_caps_jobs_in_flight_and_starts_them_in_fifo_order, .timeout = 20)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (unsigned limit = 1; limit <= 2; limit++) {
        atomic_int running = 0, peak = 0, seq = 0;
        sq_work_pool_opts_t o;
        sq_work_pool_opts_init(&o);
        o.max_in_flight = limit;
        sq_work_pool_t *pool;
        cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), 0);
        counted_t jobs[12];
        for (int i = 0; i < 12; i++) {
            jobs[i] = (counted_t){.running = &running, .peak = &peak, .seq = &seq};
            cr_assert_eq(sq_work_pool_submit(NULL, pool, counted_work, counted_done, &jobs[i]),
                         0);
        }
        sq_work_pool_stats_t st;
        sq_work_pool_stats(pool, &st);
        cr_assert_eq(st.in_flight, limit);
        cr_assert_eq(st.queued, 12 - limit);
        uv_run(&loop, UV_RUN_DEFAULT);
        for (int i = 0; i < 12; i++) {
            cr_assert_eq(jobs[i].done_calls, 1);
            cr_assert_eq(jobs[i].status, 0);
            if (limit == 1)
                cr_assert_eq(jobs[i].started_at, i, "FIFO: job %d started %d-th", i,
                             jobs[i].started_at);
        }
        cr_assert_leq(atomic_load(&peak), (int)limit);
        sq_work_pool_stats(pool, &st);
        cr_assert_eq(st.peak_in_flight, limit);
        cr_assert_eq(st.submitted, 12);
        cr_assert_eq(st.completed, 12);
        cr_assert_eq(st.cancelled, 0);
        cr_assert_eq(st.in_flight, 0);
        int closed = 0;
        cr_assert_eq(sq_work_pool_destroy(pool, pool_closed, &closed), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        cr_assert_eq(closed, 1);
    }
    close_loop(&loop);
}

Test(work, pool_fifo_full_gives_eagain, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 2};
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), 0);
    gate_job_t a, b, c, d;
    gate_init(&a, 0);
    gate_init(&b, 0);
    gate_init(&c, 0);
    gate_init(&d, 0);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &a), 0);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &b), 0);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &c), 0);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &d), UV_EAGAIN);
    sq_work_pool_stats_t st;
    sq_work_pool_stats(pool, &st);
    cr_assert_eq(st.rejected, 1);
    uv_sem_post(&a.release);
    uv_sem_post(&b.release);
    uv_sem_post(&c.release);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.done_calls + b.done_calls + c.done_calls, 3);
    cr_assert_eq(d.done_calls, 0);
    sq_work_pool_destroy(pool, NULL, NULL);
    gate_fini(&a);
    gate_fini(&b);
    gate_fini(&c);
    gate_fini(&d);
    close_loop(&loop);
}

Test(work, cancel_in_pool_fifo_never_runs_and_frees_the_slot_order, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    done_seq = 0;
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 10};
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), 0);
    gate_job_t a, b, c;
    gate_init(&a, 0);
    gate_init(&b, 0);
    gate_init(&c, 0);
    sq_work_t *wb;
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &a), 0);
    cr_assert_eq(sq_work_pool_submit(&wb, pool, gate_work, gate_done, &b), 0);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &c), 0);
    cr_assert_eq(sq_work_cancel(wb), 0);
    cr_assert_eq(b.done_calls, 0, "not from inside cancel");
    cr_assert_eq(sq_work_cancel(wb), UV_EALREADY);
    uv_sem_wait(&a.started);
    uv_run(&loop, UV_RUN_NOWAIT); /* b's cancellation is delivered while a still runs */
    cr_assert_eq(b.done_calls, 1);
    cr_assert_eq(b.done_status, UV_ECANCELED);
    cr_assert_eq(b.order, 0);
    uv_sem_post(&a.release);
    uv_sem_post(&c.release);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(atomic_load(&b.ran), 0);
    cr_assert_eq(a.done_calls, 1);
    cr_assert_eq(c.done_calls, 1);
    cr_assert_eq(a.done_status, 0);
    cr_assert_eq(c.done_status, 0);
    cr_assert_lt(a.order, c.order);
    sq_work_pool_stats_t st;
    sq_work_pool_stats(pool, &st);
    cr_assert_eq(st.cancelled, 1);
    cr_assert_eq(st.completed, 2);
    sq_work_pool_destroy(pool, NULL, NULL);
    gate_fini(&a);
    gate_fini(&b);
    gate_fini(&c);
    close_loop(&loop);
}

typedef struct destroy_watch {
    int closed;
    int dones_at_close;
    gate_job_t *jobs;
    int njobs;
} destroy_watch_t;

static void destroy_watch_cb(sq_work_pool_t *pool, void *data)
{
    destroy_watch_t *dw = data;
    dw->closed++;
    for (int i = 0; i < dw->njobs; i++)
        dw->dones_at_close += dw->jobs[i].done_calls;
}

static void release_later_cb(uv_timer_t *t)
{
    uv_sem_post(&((gate_job_t *)t->data)->release);
    uv_close((uv_handle_t *)t, NULL);
}

Test(work, pool_destroy_cancels_every_job_then_closes_last, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 10};
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), 0);
    gate_job_t jobs[3];
    for (int i = 0; i < 3; i++) {
        gate_init(&jobs[i], 0);
        cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &jobs[i]), 0);
    }
    uv_sem_wait(&jobs[0].started);
    destroy_watch_t dw = {.jobs = jobs, .njobs = 3};
    cr_assert_eq(sq_work_pool_destroy(pool, destroy_watch_cb, &dw), 0);
    cr_assert_eq(sq_work_pool_destroy(pool, destroy_watch_cb, &dw), SQ_ECLOSED);
    cr_assert_eq(sq_work_pool_submit(NULL, pool, gate_work, gate_done, &jobs[0]), SQ_ECLOSED);
    /* The running job is released later, from the loop: the close waits for it. */
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &jobs[0];
    uv_timer_start(&t, release_later_cb, 30, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(jobs[i].done_calls, 1);
        cr_assert_eq(jobs[i].done_status, UV_ECANCELED);
        cr_assert_eq(atomic_load(&jobs[i].ran), i == 0 ? 1 : 0);
        gate_fini(&jobs[i]);
    }
    cr_assert_eq(dw.closed, 1);
    cr_assert_eq(dw.dones_at_close, 3, "the pool closes after every done callback");
    close_loop(&loop);
}

typedef struct self_destroy {
    sq_work_pool_t *pool;
    int done_calls;
    int statuses[4];
    int closed;
} self_destroy_t;

static int quick_work(sq_work_t *w, void *data)
{
    return 0;
}

static void destroy_from_done(sq_work_t *w, int status, void *data)
{
    self_destroy_t *s = data;
    s->statuses[s->done_calls++] = status;
    if (s->done_calls == 1)
        cr_assert_eq(sq_work_pool_destroy(s->pool, pool_closed, &s->closed), 0);
}

Test(work, pool_destroy_from_a_done_callback, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    self_destroy_t s = {0};
    sq_work_pool_opts_t o = {.size = sizeof(o), .max_in_flight = 1, .max_queued = 10};
    cr_assert_eq(sq_work_pool_create(&s.pool, &loop, &o), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sq_work_pool_submit(NULL, s.pool, quick_work, destroy_from_done, &s), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(s.done_calls, 3);
    cr_assert_eq(s.statuses[0], 0);
    /* The second job was already handed to libuv (waiting, running or finished) when the
     * first one's done ran, the third waited in the FIFO: both are cancelled. */
    cr_assert_eq(s.statuses[1], UV_ECANCELED);
    cr_assert_eq(s.statuses[2], UV_ECANCELED);
    cr_assert_eq(s.closed, 1);
    close_loop(&loop);
}

/* ---- the pool leaves threads for the file system ---- */

static int sleepy_work(sq_work_t *w, void *data)
{
    usleep(150000);
    return 0;
}

static void count_done(sq_work_t *w, int status, void *data)
{
    (*(int *)data)++;
}

typedef struct fs_probe {
    uint64_t start;
    uint64_t took_ms;
} fs_probe_t;

static void fs_probe_cb(uv_fs_t *req)
{
    fs_probe_t *p = req->data;
    p->took_ms = uv_now(req->loop) - p->start;
    uv_fs_req_cleanup(req);
}

Test(work, blocking_jobs_through_a_pool_leave_a_thread_for_fs, .timeout = 20)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, NULL), 0); /* pool size - 1 */
    int dones = 0;
    /* Start libuv's threads first (slow under valgrind), so only waiting is measured. */
    cr_assert_eq(sq_work_submit(NULL, &loop, quick_work, count_done, &dones), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    dones = 0;
    unsigned njobs = 3 * sq_work_threadpool_size();
    for (unsigned i = 0; i < njobs; i++)
        cr_assert_eq(sq_work_pool_submit(NULL, pool, sleepy_work, count_done, &dones), 0);
    fs_probe_t probe = {.start = uv_now(&loop)};
    uv_fs_t req;
    req.data = &probe;
    cr_assert_eq(uv_fs_stat(&loop, &req, ".", fs_probe_cb), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(dones, (int)njobs);
    /* Behind even one job it would wait 150 ms or more. */
    cr_assert_lt(probe.took_ms, 120, "uv_fs_stat waited %llu ms behind blocking jobs",
                 (unsigned long long)probe.took_ms);
    sq_work_pool_destroy(pool, NULL, NULL);
    close_loop(&loop);
}

Test(work, threadpool_size_setter_validates_and_is_read_back, .timeout = 10)
{
    const char *old = getenv("UV_THREADPOOL_SIZE");
    char *saved = old ? strdup(old) : NULL;
    cr_assert_eq(sq_work_threadpool_set_size(0), UV_EINVAL);
    cr_assert_eq(sq_work_threadpool_set_size(1025), UV_EINVAL);
    cr_assert_eq(sq_work_threadpool_set_size(16), 0);
    cr_assert_eq(sq_work_threadpool_size(), 16);
    setenv("UV_THREADPOOL_SIZE", "5000", 1);
    cr_assert_eq(sq_work_threadpool_size(), 1024);
    unsetenv("UV_THREADPOOL_SIZE");
    cr_assert_eq(sq_work_threadpool_size(), 4);
    sq_work_pool_opts_t o;
    sq_work_pool_opts_init(&o);
    cr_assert_eq(o.max_in_flight, 3);
    if (saved) {
        setenv("UV_THREADPOOL_SIZE", saved, 1);
        free(saved);
    }
}
