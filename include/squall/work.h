/* squall — the bridge to libuv's thread pool (uv_queue_work), asyncio's run_in_executor.
 *
 *     static int resize(sq_work_t *w, void *data) { ... blocking code ...; return 0; }
 *     static void resized(sq_work_t *w, int status, void *data) { ... back on the loop ... }
 *
 *     sq_work_pool_t *pool;
 *     sq_work_pool_create(&pool, loop, NULL);           // at most N jobs in flight
 *     sq_work_pool_submit(NULL, pool, resize, resized, img);
 *
 * A job's work function runs on one of libuv's pool threads; its done callback runs
 * afterwards on the loop thread, exactly once, with the work function's return value, or
 * UV_ECANCELED when the job was cancelled (before or while it ran: a result that comes
 * back after a cancel is discarded).
 *
 * The thread pool. libuv has one pool per process, shared by every loop and also used for
 * getaddrinfo, getnameinfo and every uv_fs_* call. Its size is the environment variable
 * UV_THREADPOOL_SIZE (default 4, at most 1024), read once, when the first job of the process
 * starts; sq_work_threadpool_set_size() sets it and must run before that (first thing in
 * main). A blocking job holds a pool thread for its whole duration: submit blocking jobs
 * through a sq_work_pool_t, whose max_in_flight (default: pool size - 1) leaves threads for
 * DNS and files; jobs past that limit wait in a FIFO on the loop, not in libuv's queue.
 *
 * The cancellation convention (the same for every pending operation of squall: jobs,
 * sleeps, queue waits, promises): cancel never runs the callback itself. When it returns 0
 * the callback runs later, on the loop thread, exactly once, with UV_ECANCELED; when it
 * returns UV_EALREADY it was too late (or already asked) and the callback runs exactly once
 * with its own status. Destroying an owner (a work pool) cancels everything pending on it
 * and runs its close callback only after every one of those callbacks.
 *
 * Threads: every function here is for the loop's thread, except sq_work_is_cancelled(),
 * which is for the work function, and the two threadpool_* functions (see each).
 */
#ifndef SQUALL_WORK_H
#define SQUALL_WORK_H

#include "common.h"

typedef struct sq_work_s sq_work_t;
typedef struct sq_work_pool_s sq_work_pool_t;

/* Runs on a thread of libuv's pool, never on the loop thread; it may start before the
 * submitting call returns (on that other thread). It must not touch the loop or any squall
 * object other than `work` (for sq_work_is_cancelled); `data` is the pointer given at
 * submission, which nothing else uses until the done callback. Returns 0 or a negative
 * code; the value is handed to the done callback as its status (unless the job was
 * cancelled). */
typedef int (*sq_work_fn)(sq_work_t *work, void *data);

/* Runs on the loop thread once the job is over, exactly once per accepted job, from the
 * loop — never from inside sq_work_submit, sq_work_pool_submit or sq_work_cancel. status is
 * what the work function returned, or UV_ECANCELED when the job was cancelled (it may then
 * have run, fully or in part: its effects on `data` are for this callback to undo or free).
 * `work` is valid until this callback returns, then freed by squall. */
typedef void (*sq_work_done_cb)(sq_work_t *work, int status, void *data);

/* Submits a job straight to libuv's pool, with no limit of its own. *out (may be NULL)
 * receives the handle, valid until the done callback returns. Returns 0 (done will run
 * exactly once), or UV_EINVAL (loop, work or done NULL) / UV_ENOMEM (nothing will run). */
SQ_EXTERN int sq_work_submit(sq_work_t **out, uv_loop_t *loop, sq_work_fn work,
                             sq_work_done_cb done, void *data);

/* Asks a job to stop. A job still waiting (in a pool's FIFO or in libuv's queue) never
 * runs; a job already running finishes its work function (it can poll
 * sq_work_is_cancelled to stop early) and its result is discarded. Either way `done` gets
 * UV_ECANCELED, later, never from inside this call.
 * Returns 0, or UV_EALREADY when cancellation was already asked or the done callback is
 * running (calling it from inside done is harmless). */
SQ_EXTERN int sq_work_cancel(sq_work_t *work);

/* For the work function, on its pool thread: 1 once sq_work_cancel was called for this
 * job, else 0. Lets a long job stop early; whatever it returns then is discarded. */
SQ_EXTERN int sq_work_is_cancelled(const sq_work_t *work);

/* ---- the per-loop limiter ---- */

/* Options of a work pool; fill with sq_work_pool_opts_init() and change what you need.
 * The struct grows by squall's rule (common.h, "Structs that grow"): `size` first, set by
 * sq_work_pool_opts_init; fields missing from an older header take their defaults. */
typedef struct sq_work_pool_opts {
    size_t size;            /* sizeof the caller's struct: set by sq_work_pool_opts_init */
    unsigned max_in_flight; /* jobs on libuv's threads at once; sq_work_threadpool_size()-1,
                               at least 1 */
    size_t max_queued;      /* jobs waiting in the FIFO; 4096, past it submit gives
                               UV_EAGAIN (a server answers 503) */
} sq_work_pool_opts_t;

/* What sq_work_pool_opts_init calls: fills the `size` bytes of opts with the defaults and
 * sets opts->size. Call sq_work_pool_opts_init. */
SQ_EXTERN void sq_work_pool_opts_init_sized(sq_work_pool_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_work_pool_opts_init(sq_work_pool_opts_t *opts)
{
    sq_work_pool_opts_init_sized(opts, sizeof(*opts));
}

/* Creates a limiter on `loop`: at most opts->max_in_flight of its jobs run at once, the
 * others wait in FIFO order on the loop. opts is copied; NULL means defaults. The pool
 * holds no thread of its own and does not keep the loop alive while idle.
 * Returns 0, UV_EINVAL (max_in_flight 0, or opts->size 0: opts never initialised),
 * UV_ENOTSUP (opts from a newer header setting a field this library lacks) or
 * UV_ENOMEM. */
SQ_EXTERN int sq_work_pool_create(sq_work_pool_t **pool, uv_loop_t *loop,
                                  const sq_work_pool_opts_t *opts);

/* As sq_work_submit, through the pool. Returns 0, UV_EINVAL (work or done NULL),
 * SQ_ECLOSED (the pool is being destroyed), UV_EAGAIN (the FIFO is full) or UV_ENOMEM; on
 * an error nothing will run. */
SQ_EXTERN int sq_work_pool_submit(sq_work_t **out, sq_work_pool_t *pool, sq_work_fn work,
                                  sq_work_done_cb done, void *data);

/* The pool is destroyed: runs once, on the loop thread, from the loop's close phase after
 * the last done callback — never from inside sq_work_pool_destroy. pool is freed when it
 * returns. */
typedef void (*sq_work_pool_close_cb)(sq_work_pool_t *pool, void *data);

/* Cancels every job of the pool (waiting ones never run, running ones are discarded: each
 * done gets UV_ECANCELED), then, after the last done callback and once no pool thread
 * still runs one of its jobs, calls cb (may be NULL) and frees the pool. Do not use `pool`
 * after cb. May be called from a done callback. Returns 0, or SQ_ECLOSED when called
 * twice. */
SQ_EXTERN int sq_work_pool_destroy(sq_work_pool_t *pool, sq_work_pool_close_cb cb,
                                   void *data);

/* A work pool's counters. Grows by squall's rule (common.h): `size` first, set by
 * sq_work_pool_stats to the bytes filled. */
typedef struct sq_work_pool_stats {
    size_t size;          /* bytes filled: set by sq_work_pool_stats */
    unsigned in_flight;   /* jobs handed to libuv and not yet done */
    unsigned peak_in_flight;
    size_t queued;        /* jobs waiting in the FIFO */
    uint64_t submitted;   /* accepted by sq_work_pool_submit */
    uint64_t completed;   /* done called with the work function's status */
    uint64_t cancelled;   /* done called with UV_ECANCELED */
    uint64_t rejected;    /* refused with UV_EAGAIN */
} sq_work_pool_stats_t;

/* What sq_work_pool_stats calls: fills the `size` bytes of out. Call sq_work_pool_stats. */
SQ_EXTERN void sq_work_pool_stats_sized(const sq_work_pool_t *pool, sq_work_pool_stats_t *out,
                                        size_t size);
/* Copies the pool's counters into *out (a snapshot; out->size is set). */
static inline void sq_work_pool_stats(const sq_work_pool_t *pool, sq_work_pool_stats_t *out)
{
    sq_work_pool_stats_sized(pool, out, sizeof(*out));
}

/* ---- libuv's pool size (process-wide) ---- */

/* The number of threads libuv's pool has or will have: UV_THREADPOOL_SIZE as libuv reads
 * it (unset or 0: 4; clamped to 1024). Any thread. */
SQ_EXTERN unsigned sq_work_threadpool_size(void);

/* Sets UV_THREADPOOL_SIZE for this process. libuv reads it once, when the first job of any
 * loop starts (uv_queue_work, getaddrinfo, uv_fs_*): call it at the start of main, before
 * any thread is started (it uses setenv(3)); later calls change nothing libuv sees.
 * Returns 0, UV_EINVAL (n is 0 or over 1024) or UV_ENOMEM. */
SQ_EXTERN int sq_work_threadpool_set_size(unsigned n);

#endif
