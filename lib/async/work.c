/* The thread-pool bridge: jobs on libuv's pool, a per-loop limiter with a FIFO on the loop,
 * and cancellation that reaches every stage of a job (tests/test_work.c pins each one). */
#include <stdio.h>
#include <stdlib.h>

#include "async/async_int.h"
#include "core/abi.h"

#define SQ__THREADPOOL_DEFAULT 4
#define SQ__THREADPOOL_MAX 1024 /* libuv >= 1.30 */

static void pool_dispatch(sq_work_pool_t *pool);
static void pool_maybe_close(sq_work_pool_t *pool);
static void pool_idle_cb(uv_idle_t *idle);

/* ---- libuv's side ---- */

static void run_work(uv_work_t *req)
{
    sq_work_t *w = sq__container_of(req, sq_work_t, req);
    /* A job cancelled after libuv picked it but before it started: skip the work. */
    if (atomic_load_explicit(&w->cancelled, memory_order_relaxed))
        return;
    w->result = w->work(w, w->data);
}

/* Called by libuv on the loop thread, once per job handed to it: status is UV_ECANCELED
 * when uv_cancel took it out of libuv's queue before a thread ran it. */
static void after_work(uv_work_t *req, int status)
{
    sq_work_t *w = sq__container_of(req, sq_work_t, req);
    sq_work_pool_t *pool = w->pool;
    bool cancelled = status == UV_ECANCELED ||
                     atomic_load_explicit(&w->cancelled, memory_order_relaxed);
    int st = cancelled ? UV_ECANCELED : w->result;

    if (pool) {
        sq__list_remove(&w->node);
        pool->stats.in_flight--;
        if (cancelled)
            pool->stats.cancelled++;
        else
            pool->stats.completed++;
        /* Refill the freed slot before the callback, so a slow callback does not idle a
         * thread. */
        pool_dispatch(pool);
    }
    w->state = SQ__WORK_DONE;
    w->done(w, st, w->data);
    free(w);
    if (pool)
        pool_maybe_close(pool);
}

static int submit_to_libuv(sq_work_t *w, uv_loop_t *loop)
{
    int err = uv_queue_work(loop, &w->req, run_work, after_work);
    if (err == 0)
        w->state = SQ__WORK_SUBMITTED;
    return err;
}

static sq_work_t *work_alloc(sq_work_pool_t *pool, sq_work_fn work, sq_work_done_cb done,
                             void *data)
{
    sq_work_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->pool = pool;
    w->work = work;
    w->done = done;
    w->data = data;
    atomic_init(&w->cancelled, 0);
    return w;
}

int sq_work_submit(sq_work_t **out, uv_loop_t *loop, sq_work_fn work, sq_work_done_cb done,
                   void *data)
{
    if (loop == NULL || work == NULL || done == NULL)
        return UV_EINVAL;
    sq_work_t *w = work_alloc(NULL, work, done, data);
    if (w == NULL)
        return UV_ENOMEM;
    int err = submit_to_libuv(w, loop);
    if (err < 0) {
        free(w);
        return err;
    }
    if (out)
        *out = w;
    return 0;
}

int sq_work_cancel(sq_work_t *w)
{
    sq_work_pool_t *pool = w->pool;

    switch (w->state) {
    case SQ__WORK_QUEUED:
        /* Never reached libuv: deliver from the pool's idle handle, on the next turn. */
        sq__list_remove(&w->node);
        pool->stats.queued--;
        pool->stats.cancelled++;
        w->state = SQ__WORK_READY;
        w->status = UV_ECANCELED;
        atomic_store_explicit(&w->cancelled, 1, memory_order_relaxed);
        sq__list_insert_tail(&pool->ready, &w->node);
        uv_idle_start(&pool->idle, pool_idle_cb);
        return 0;
    case SQ__WORK_SUBMITTED:
        if (atomic_load_explicit(&w->cancelled, memory_order_relaxed))
            return UV_EALREADY;
        atomic_store_explicit(&w->cancelled, 1, memory_order_relaxed);
        /* Succeeds only while the job waits in libuv's queue; otherwise it runs or has run,
         * and after_work discards its result because of the flag. */
        (void)uv_cancel((uv_req_t *)&w->req);
        return 0;
    case SQ__WORK_READY:
    case SQ__WORK_DONE:
    default:
        return UV_EALREADY;
    }
}

int sq_work_is_cancelled(const sq_work_t *w)
{
    return atomic_load_explicit(&((sq_work_t *)w)->cancelled, memory_order_relaxed) != 0;
}

/* ---- the pool ---- */

unsigned sq_work_threadpool_size(void)
{
    const char *s = getenv("UV_THREADPOOL_SIZE");
    if (s == NULL || *s == '\0')
        return SQ__THREADPOOL_DEFAULT;
    /* libuv uses atoi(): mirror it, including its "0 means default". */
    long n = atol(s);
    if (n <= 0)
        return SQ__THREADPOOL_DEFAULT;
    if (n > SQ__THREADPOOL_MAX)
        return SQ__THREADPOOL_MAX;
    return (unsigned)n;
}

int sq_work_threadpool_set_size(unsigned n)
{
    if (n == 0 || n > SQ__THREADPOOL_MAX)
        return UV_EINVAL;
    char buf[16];
    snprintf(buf, sizeof(buf), "%u", n);
    if (setenv("UV_THREADPOOL_SIZE", buf, 1) != 0)
        return UV_ENOMEM;
    return 0;
}

static void pool_opts_defaults(sq_work_pool_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    unsigned n = sq_work_threadpool_size();
    o->max_in_flight = n > 1 ? n - 1 : 1;
    o->max_queued = 4096;
}

void sq_work_pool_opts_init_sized(sq_work_pool_opts_t *opts, size_t size)
{
    sq_work_pool_opts_t d;
    pool_opts_defaults(&d);
    SQ__OPTS_INIT(opts, size, &d);
}

/* Delivers the done callbacks of jobs cancelled before they reached libuv. Only those
 * present when the turn starts, so a callback that submits and cancels again cannot keep
 * the loop here. */
static void pool_idle_cb(uv_idle_t *idle)
{
    sq_work_pool_t *pool = sq__container_of(idle, sq_work_pool_t, idle);
    sq__list_t batch;
    sq__list_take(&pool->ready, &batch);
    while (!sq__list_empty(&batch)) {
        sq_work_t *w = sq__container_of(batch.next, sq_work_t, node);
        sq__list_remove(&w->node);
        w->state = SQ__WORK_DONE;
        w->done(w, w->status, w->data);
        free(w);
    }
    if (sq__list_empty(&pool->ready))
        uv_idle_stop(&pool->idle);
    pool_maybe_close(pool);
}

static void pool_closed_cb(uv_handle_t *h)
{
    sq_work_pool_t *pool = sq__container_of((uv_idle_t *)h, sq_work_pool_t, idle);
    if (pool->close_cb)
        pool->close_cb(pool, pool->close_data);
    free(pool);
}

static void pool_maybe_close(sq_work_pool_t *pool)
{
    if (!pool->destroying || pool->closing)
        return;
    if (!sq__list_empty(&pool->active) || !sq__list_empty(&pool->ready) ||
        !sq__list_empty(&pool->fifo))
        return;
    pool->closing = true;
    uv_close((uv_handle_t *)&pool->idle, pool_closed_cb);
}

static void pool_dispatch(sq_work_pool_t *pool)
{
    while (!pool->destroying && pool->stats.in_flight < pool->opts.max_in_flight &&
           !sq__list_empty(&pool->fifo)) {
        sq_work_t *w = sq__container_of(pool->fifo.next, sq_work_t, node);
        sq__list_remove(&w->node);
        pool->stats.queued--;
        if (submit_to_libuv(w, pool->loop) < 0) {
            /* Cannot happen with valid arguments; keep the exactly-once promise anyway. */
            w->state = SQ__WORK_READY;
            w->status = UV_EINVAL;
            sq__list_insert_tail(&pool->ready, &w->node);
            uv_idle_start(&pool->idle, pool_idle_cb);
            continue;
        }
        sq__list_insert_tail(&pool->active, &w->node);
        if (++pool->stats.in_flight > pool->stats.peak_in_flight)
            pool->stats.peak_in_flight = pool->stats.in_flight;
    }
}

int sq_work_pool_create(sq_work_pool_t **out, uv_loop_t *loop, const sq_work_pool_opts_t *opts)
{
    sq_work_pool_opts_t o;
    pool_opts_defaults(&o);
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts); /* only what the caller's header has */
        if (rc != 0)
            return rc;
    }
    if (o.max_in_flight == 0)
        return UV_EINVAL;
    sq_work_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return UV_ENOMEM;
    pool->opts = o;
    pool->loop = loop;
    sq__list_init(&pool->fifo);
    sq__list_init(&pool->active);
    sq__list_init(&pool->ready);
    uv_idle_init(loop, &pool->idle); /* inactive: keeps no loop alive until started */
    *out = pool;
    return 0;
}

int sq_work_pool_submit(sq_work_t **out, sq_work_pool_t *pool, sq_work_fn work,
                        sq_work_done_cb done, void *data)
{
    if (work == NULL || done == NULL)
        return UV_EINVAL;
    if (pool->destroying)
        return SQ_ECLOSED;
    if (pool->stats.in_flight >= pool->opts.max_in_flight &&
        pool->stats.queued >= pool->opts.max_queued) {
        pool->stats.rejected++;
        return UV_EAGAIN;
    }
    sq_work_t *w = work_alloc(pool, work, done, data);
    if (w == NULL)
        return UV_ENOMEM;
    w->state = SQ__WORK_QUEUED;
    sq__list_insert_tail(&pool->fifo, &w->node);
    pool->stats.queued++;
    pool->stats.submitted++;
    pool_dispatch(pool);
    if (out)
        *out = w;
    return 0;
}

int sq_work_pool_destroy(sq_work_pool_t *pool, sq_work_pool_close_cb cb, void *data)
{
    if (pool->destroying)
        return SQ_ECLOSED;
    pool->destroying = true;
    pool->close_cb = cb;
    pool->close_data = data;
    while (!sq__list_empty(&pool->fifo))
        sq_work_cancel(sq__container_of(pool->fifo.next, sq_work_t, node));
    for (sq__list_t *n = pool->active.next; n != &pool->active; n = n->next)
        sq_work_cancel(sq__container_of(n, sq_work_t, node));
    pool_maybe_close(pool);
    return 0;
}

void sq_work_pool_stats_sized(const sq_work_pool_t *pool, sq_work_pool_stats_t *out,
                              size_t size)
{
    sq_work_pool_stats_t st = pool->stats;
    st.size = sizeof(st);
    SQ__STATS_OUT(out, size, &st); /* only what the caller's header has room for */
}
