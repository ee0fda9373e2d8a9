/* N loops in N threads, each with its own server; the calling thread watches signals. */
#include <signal.h>
#include <stdlib.h>

#include "internal.h"
#include "squall/workers.h"

typedef struct worker {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    uv_sem_t ready;
    sq_server_t *srv;
    unsigned index;
    int rc;
    uint64_t grace_ms;
    sq_worker_setup_cb setup;
    sq_worker_teardown_cb teardown;
    void *data;
} worker_t;

typedef struct control {
    worker_t *w;
    unsigned n;
    unsigned started;
    uv_signal_t sigint, sigterm;
    bool stopping;
} control_t;

static void on_server_closed(sq_server_t *srv, void *data)
{
    worker_t *w = data;
    w->srv = NULL;
    uv_close((uv_handle_t *)&w->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
    worker_t *w = a->data;
    if (w->srv == NULL || sq_server_destroy(w->srv, w->grace_ms, on_server_closed, w) != 0)
        uv_close((uv_handle_t *)a, NULL);
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    w->rc = w->setup(&w->loop, w->index, w->data, &w->srv);
    uv_sem_post(&w->ready);
    if (w->rc == 0)
        uv_run(&w->loop, UV_RUN_DEFAULT);
    else
        uv_close((uv_handle_t *)&w->stop, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->teardown != NULL)
        w->teardown(&w->loop, w->index, w->data);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static void stop_all(control_t *ctl)
{
    if (ctl->stopping)
        return;
    ctl->stopping = true;
    for (unsigned i = 0; i < ctl->started; i++)
        if (ctl->w[i].rc == 0) /* a worker whose setup failed closed its handle itself */
            uv_async_send(&ctl->w[i].stop);
    uv_close((uv_handle_t *)&ctl->sigint, NULL);
    uv_close((uv_handle_t *)&ctl->sigterm, NULL);
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
    control_t ctl = {.n = n};
    ctl.w = calloc(n, sizeof(worker_t));
    if (ctl.w == NULL)
        return UV_ENOMEM;
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0)
        goto fail_workers;
    uv_signal_init(&loop, &ctl.sigint);
    uv_signal_init(&loop, &ctl.sigterm);
    ctl.sigint.data = ctl.sigterm.data = &ctl;
    uv_signal_start(&ctl.sigint, on_signal, SIGINT);
    uv_signal_start(&ctl.sigterm, on_signal, SIGTERM);

    unsigned started = 0;
    ctl.started = 0;
    for (unsigned i = 0; i < n; i++) {
        worker_t *w = &ctl.w[i];
        w->index = i;
        w->grace_ms = grace_ms;
        w->setup = setup;
        w->teardown = teardown;
        w->data = data;
        if ((rc = uv_loop_init(&w->loop)) != 0)
            break;
        uv_async_init(&w->loop, &w->stop, on_stop);
        w->stop.data = w;
        uv_sem_init(&w->ready, 0);
        if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0) {
            uv_close((uv_handle_t *)&w->stop, NULL);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            uv_loop_close(&w->loop);
            uv_sem_destroy(&w->ready);
            break;
        }
        started++;
        uv_sem_wait(&w->ready);
        ctl.started = started;
        if (w->rc != 0) {
            rc = w->rc;
            break;
        }
    }
    if (rc != 0 || started < n)
        stop_all(&ctl);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < started; i++) {
        uv_thread_join(&ctl.w[i].thread);
        uv_loop_close(&ctl.w[i].loop);
        uv_sem_destroy(&ctl.w[i].ready);
    }
    uv_loop_close(&loop);
fail_workers:
    free(ctl.w);
    return rc;
}
