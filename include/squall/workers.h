/* squall — running a server on N loops in N threads, with graceful shutdown on signals.
 *
 * Each worker thread gets its own uv_loop_t and builds its own server with `setup`; with
 * more than one worker, listeners must set opts.reuseport so the kernel spreads
 * connections among them (SO_REUSEPORT). The app passed to the servers is shared read-only.
 */
#ifndef SQUALL_WORKERS_H
#define SQUALL_WORKERS_H

#include "common.h"
#include "server.h"

/* Builds worker `index`'s server on `loop` (on that worker's thread, before its loop runs:
 * called from inside sq_workers_run, but on that thread, not the caller's) and stores it
 * in *srv.
 * Returns 0 or a negative code, which stops every worker and is returned by
 * sq_workers_run. On failure it leaves no server behind: it calls
 * sq_server_destroy(srv, 0, NULL, NULL) on one it made and returns, without running the
 * loop (the worker runs it to finish the closing). Workers set up at the same time, each
 * on its own thread, so `data` is shared read-only. */
typedef int (*sq_worker_setup_cb)(uv_loop_t *loop, unsigned index, void *data,
                                  sq_server_t **srv);

/* Called on the worker's thread after its server closed (or its setup failed), before its
 * loop is closed; may be NULL. Frees what setup made besides the server. */
typedef void (*sq_worker_teardown_cb)(uv_loop_t *loop, unsigned index, void *data);

/* Runs `nworkers` workers until SIGINT or SIGTERM, then destroys each server with
 * `grace_ms` to finish in-flight requests, joins the threads and returns 0. Blocks the
 * calling thread, which only watches for the signals — from before the first worker
 * starts, so a signal during start-up stops every worker as soon as its setup returns.
 * A setup that fails stops every worker at once, and its code is returned (the first one
 * seen, when several fail); UV_EINVAL for 0 workers or no setup; UV_ENOMEM, or libuv's
 * error when a loop or a thread cannot be made. Ignores SIGPIPE for the whole process
 * (see server.h). */
SQ_EXTERN int sq_workers_run(unsigned nworkers, sq_worker_setup_cb setup,
                             sq_worker_teardown_cb teardown, void *data, uint64_t grace_ms);

/* Forks `n` processes that each go on from this call, as a copy of the caller: in each,
 * it returns 0 with *index set to 0..n-1 (the child then builds its server, usually with
 * sq_workers_run, on the same port with opts.reuseport). The calling process stays in the
 * call as their supervisor: SIGINT, SIGTERM and SIGHUP are passed on to every child (a
 * child that does not handle SIGHUP, as the access log's reopen_on_sighup does, ends by it
 * and stops the others), the first
 * child that exits with a failure (a bind error, a crash) stops the others with SIGTERM,
 * and once all have exited it returns 1 with *exit_code 0, or the first failure's status
 * (its exit code, or 128 + the signal that ended it). On Linux a child is sent SIGTERM
 * when its supervisor dies without passing a signal on (SIGKILL). Negative: UV_EINVAL
 * (n is 0), UV_ENOMEM, or fork's error (the children already started are stopped and
 * waited for first). Each process has its own file descriptor limit: n processes hold n times the
 * connections one can. Call it before any thread or loop is started; Linux and other
 * systems with fork(2). */
SQ_EXTERN int sq_processes_run(unsigned n, unsigned *index, int *exit_code);

#endif
