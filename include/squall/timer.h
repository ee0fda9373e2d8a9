/* squall — sleeping without blocking (asyncio.sleep) and timeouts on any operation.
 *
 *     static void woke(sq_sleep_t *s, int status, void *data) { status: 0 or UV_ECANCELED }
 *     sq_sleep_t *s;
 *     sq_sleep(&s, loop, 250, woke, ctx);
 *     ...
 *     sq_sleep_cancel(s);          // woke runs once, later, with UV_ECANCELED
 *
 * Cancellation follows squall's one convention (see work.h): cancel never calls back from
 * inside itself; 0 means the callback will get UV_ECANCELED, UV_EALREADY that it was too
 * late. Every function is for the loop's thread; every callback runs on it.
 */
#ifndef SQUALL_TIMER_H
#define SQUALL_TIMER_H

#include "common.h"

typedef struct sq_sleep_s sq_sleep_t;

/* Runs once, on the loop thread, from the loop — never from inside sq_sleep or
 * sq_sleep_cancel: status 0 when `ms` have passed (timer phase), UV_ECANCELED when
 * cancelled (close phase). `s` is valid until this returns, then freed by squall. */
typedef void (*sq_sleep_cb)(sq_sleep_t *s, int status, void *data);

/* Calls cb after `ms` milliseconds of loop time (0: on the next turn of the loop, never
 * from inside this call). The pending sleep keeps the loop alive, as any libuv timer does.
 * *out (may be NULL) receives the handle, valid until cb returns.
 * Returns 0 (cb will run exactly once), UV_EINVAL (loop or cb NULL) or UV_ENOMEM (it will
 * not). */
SQ_EXTERN int sq_sleep(sq_sleep_t **out, uv_loop_t *loop, uint64_t ms, sq_sleep_cb cb,
                       void *data);

/* Cancels a pending sleep: its callback runs once, later in this turn of the loop, with
 * UV_ECANCELED. Returns 0, or UV_EALREADY when already cancelled or when called from its
 * own callback. */
SQ_EXTERN int sq_sleep_cancel(sq_sleep_t *s);

/* ---- timeouts on any operation ----
 *
 * Every pending operation of squall can be cancelled, so a timeout is a timer that cancels
 * it, plus a translation of the resulting UV_ECANCELED into UV_ETIMEDOUT:
 *
 *     static void expire(sq_timeout_t *t, void *data) { sq_work_cancel(((job_t *)data)->w); }
 *     static void done(sq_work_t *w, int status, void *data) {
 *         job_t *job = data;
 *         status = sq_timeout_finish(job->timeout, status);  // first thing: UV_ETIMEDOUT?
 *         ...
 *     }
 *     sq_work_submit(&job->w, loop, slow, done, job);
 *     sq_timeout_start(&job->timeout, loop, 500, expire, job);
 *
 * (Promises have the same thing built in: sq_promise_with_timeout.)
 */
typedef struct sq_timeout_s sq_timeout_t;

/* Runs at most once, on the loop thread, from the loop's timer phase (never from inside a
 * squall call), when the time is up and sq_timeout_finish has not been called: it should
 * cancel the operation. `t` stays valid (until sq_timeout_finish). */
typedef void (*sq_timeout_cb)(sq_timeout_t *t, void *data);

/* Arms a timeout of `ms` milliseconds. *out receives it; the caller owns it and must end it
 * with exactly one sq_timeout_finish, normally from the operation's callback.
 * Returns 0, UV_EINVAL (out, loop or cb NULL) or UV_ENOMEM. */
SQ_EXTERN int sq_timeout_start(sq_timeout_t **out, uv_loop_t *loop, uint64_t ms,
                               sq_timeout_cb cb, void *data);

/* Ends a timeout: disarms it if it has not fired and frees it (its memory goes back in the
 * loop's close phase, so run the loop once more before uv_loop_close). Returns the status
 * to act on: UV_ETIMEDOUT when the timeout fired and `status` is UV_ECANCELED (the
 * operation was cancelled because of it), else `status` unchanged. */
SQ_EXTERN int sq_timeout_finish(sq_timeout_t *t, int status);

/* 1 when the timeout has fired, else 0. */
SQ_EXTERN int sq_timeout_is_expired(const sq_timeout_t *t);

#endif
