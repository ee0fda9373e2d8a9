/* N loops in N threads, each with its own server; the calling thread watches signals from
 * before the first worker starts until the last has stopped. */
#include <signal.h>
#include <stdlib.h>

#include "internal.h"
#include "squall/workers.h"

typedef struct control control_t;

typedef struct worker {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t stop;   /* sent once by the control thread; closed on this worker's thread */
    control_t *ctl;
    sq_server_t *srv;  /* this worker's thread only */
    unsigned index;
    int rc;            /* setup's result: under ctl->mu once `done` */
    bool done;         /* setup returned and `ready` was sent (under ctl->mu) */
    bool seen;         /* the control thread has counted it */
} worker_t;

struct control {
    worker_t *w;
    unsigned n;
    unsigned started;       /* threads running */
    unsigned nready;        /* of which setup has returned */
    uint64_t grace_ms;
    sq_worker_setup_cb setup;
    sq_worker_teardown_cb teardown;
    void *data;
    uv_loop_t loop;
    uv_mutex_t mu;
    uv_async_t ready;       /* a worker's setup returned */
    uv_signal_t sigint, sigterm;
    bool stopping;
    bool ready_closed;
    int rc;                 /* the first setup error seen */
};

static void on_server_closed(sq_server_t *srv, void *data)
{
    worker_t *w = data;
    w->srv = NULL;
    uv_close((uv_handle_t *)&w->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
    worker_t *w = a->data;
    if (w->srv == NULL || sq_server_destroy(w->srv, w->ctl->grace_ms, on_server_closed, w) != 0)
        uv_close((uv_handle_t *)a, NULL);
}

/* A worker runs its loop until the control thread sends `stop`, whether its setup worked
 * or not: the loop also finishes closing what a failed setup left closing, and the stop
 * handle is only ever closed by its own thread, after the one send it gets. */
static void worker_main(void *arg)
{
    worker_t *w = arg;
    control_t *ctl = w->ctl;
    int rc = ctl->setup(&w->loop, w->index, ctl->data, &w->srv);
    if (rc != 0)
        w->srv = NULL;
    /* Sent under the lock that the control thread takes to count it and to close `ready`:
     * it is never closed before this send. */
    uv_mutex_lock(&ctl->mu);
    w->rc = rc;
    w->done = true;
    uv_async_send(&ctl->ready);
    uv_mutex_unlock(&ctl->mu);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (ctl->teardown != NULL)
        ctl->teardown(&w->loop, w->index, ctl->data);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* `ready` goes once stopping and every running worker has reported. */
static void maybe_close_ready(control_t *ctl)
{
    uv_mutex_lock(&ctl->mu);
    if (ctl->stopping && !ctl->ready_closed && ctl->nready == ctl->started) {
        ctl->ready_closed = true;
        uv_close((uv_handle_t *)&ctl->ready, NULL);
    }
    uv_mutex_unlock(&ctl->mu);
}

static void stop_all(control_t *ctl)
{
    if (ctl->stopping)
        return;
    ctl->stopping = true;
    for (unsigned i = 0; i < ctl->started; i++)
        uv_async_send(&ctl->w[i].stop);
    uv_close((uv_handle_t *)&ctl->sigint, NULL);
    uv_close((uv_handle_t *)&ctl->sigterm, NULL);
    maybe_close_ready(ctl);
}

static void on_ready(uv_async_t *a)
{
    control_t *ctl = a->data;
    bool failed = false;
    uv_mutex_lock(&ctl->mu);
    for (unsigned i = 0; i < ctl->started; i++) {
        worker_t *w = &ctl->w[i];
        if (!w->done || w->seen)
            continue;
        w->seen = true;
        ctl->nready++;
        if (w->rc != 0 && ctl->rc == 0)
            ctl->rc = w->rc;
        failed |= w->rc != 0;
    }
    uv_mutex_unlock(&ctl->mu);
    if (failed)
        stop_all(ctl); /* one worker that cannot serve stops them all: a failed start */
    maybe_close_ready(ctl);
}

static void on_signal(uv_signal_t *s, int signum)
{
    sq_log(SQ_LOG_INFO, "signal %d: shutting down", signum);
    stop_all(s->data);
}

int sq_workers_run(unsigned n, sq_worker_setup_cb setup, sq_worker_teardown_cb teardown,
                   void *data, uint64_t grace_ms)
{
    if (n == 0 || setup == NULL)
        return UV_EINVAL;
    /* libuv writes to sockets with write(2), not send(MSG_NOSIGNAL): without this, a
     * client that closes while its answer is being written kills the whole process. */
    signal(SIGPIPE, SIG_IGN);
    control_t ctl = {.n = n, .grace_ms = grace_ms, .setup = setup, .teardown = teardown,
                     .data = data};
    ctl.w = calloc(n, sizeof(worker_t));
    if (ctl.w == NULL)
        return UV_ENOMEM;
    int rc = uv_loop_init(&ctl.loop);
    if (rc != 0)
        goto fail_workers;
    rc = uv_mutex_init(&ctl.mu);
    if (rc != 0)
        goto fail_loop;
    /* Signals are watched before the first worker starts: a SIGINT or SIGTERM while they
     * set up (a slow host name lookup) stops them as soon as their setup returns. */
    uv_async_init(&ctl.loop, &ctl.ready, on_ready);
    uv_signal_init(&ctl.loop, &ctl.sigint);
    uv_signal_init(&ctl.loop, &ctl.sigterm);
    ctl.ready.data = ctl.sigint.data = ctl.sigterm.data = &ctl;
    uv_signal_start(&ctl.sigint, on_signal, SIGINT);
    uv_signal_start(&ctl.sigterm, on_signal, SIGTERM);

    for (unsigned i = 0; i < n; i++) {
        worker_t *w = &ctl.w[i];
        w->index = i;
        w->ctl = &ctl;
        if ((rc = uv_loop_init(&w->loop)) != 0)
            break;
        uv_async_init(&w->loop, &w->stop, on_stop);
        w->stop.data = w;
        if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0) {
            uv_close((uv_handle_t *)&w->stop, NULL);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            uv_loop_close(&w->loop);
            break;
        }
        ctl.started++;
    }
    if (rc != 0)
        stop_all(&ctl);
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < ctl.started; i++) {
        uv_thread_join(&ctl.w[i].thread);
        uv_loop_close(&ctl.w[i].loop);
    }
    uv_mutex_destroy(&ctl.mu);
    if (rc == 0)
        rc = ctl.rc;
fail_loop:
    uv_loop_close(&ctl.loop);
fail_workers:
    free(ctl.w);
    return rc;
}
