/* squall — promises: a value that will exist later, on the caller's loop.
 *
 *     static void parsed(sq_promise_t *p, int status, void *value, sq_promise_t *next,
 *                        void *data) {
 *         sq_promise_resolve(next, parse(value), free);          // or reject, or follow
 *     }
 *     static void shown(sq_promise_t *p, int status, void *value, sq_promise_t *next,
 *                       void *data) {
 *         if (status < 0) report(status);                          // any step's error
 *         else show(value);
 *     }
 *     sq_promise_t *job, *step, *timed;
 *     sq_promise_work(&job, loop, pool, read_file, buf, buf_free); // the operation
 *     sq_promise_then(&step, job, parsed, NULL);                   // a new promise
 *     sq_promise_with_timeout(&timed, step, 2000);
 *     sq_promise_await(timed, shown, NULL);
 *     sq_promise_release(job); sq_promise_release(step); sq_promise_release(timed);
 *
 * A promise is pending, then settles once: fulfilled with a value, or rejected with a
 * negative code and an optional detail value. Callbacks registered on it ("reactions":
 * then, catch, await, and the combinators) run after it settles, on a later turn of the
 * loop, never from inside the call that settled it or registered them, in registration
 * order, exactly once each.
 *
 * Ownership, in jansson's words:
 * - Every promise handed back through an out parameter is a new reference: the caller
 *   releases it exactly once (sq_promise_release). Promises passed in (the source of a
 *   then, the inputs of all/race/any) are borrowed: the call takes a reference of its own
 *   where it needs one.
 * - resolve/reject steal the value with its destructor, even when they fail: the promise
 *   calls destructor(value) when it is freed, so the value lives as long as any reference
 *   to the promise. A callback gets the value borrowed: valid until it returns, or longer
 *   by taking a reference to `p`, its first argument.
 * - `data` given with a callback is borrowed and never freed by squall. A then or catch
 *   callback may never run (the outcome it does not handle passes it by), so keep a chain's
 *   state in one context freed by the await at the chain's end, which always runs once.
 * - Whoever will settle a promise holds a reference to it until it does (the operation
 *   under sq_promise_work/sq_promise_sleep does); a reaction holds a reference to the
 *   promise it settles (`next`). Nothing holds its source: a chain whose head is still
 *   pending lives as long as the head's operation, runs to its end, and frees itself.
 * - Releasing the last reference to a pending promise that something waits on cancels it
 *   (the waiters get UV_ECANCELED — nobody could settle it any more) and frees it after
 *   they ran. A promise nobody waits on is freed at once.
 *
 * Errors go down a chain: then() passes a rejection on to `next` unchanged (same code,
 * same detail) without calling its callback; catch() does the same with a fulfilment.
 *
 * Cancellation, squall's one convention (see work.h): sq_promise_cancel rejects a pending
 * promise with UV_ECANCELED (its reactions run later), tells the operation underneath
 * (sq_promise_on_cancel), and cancels every promise it was waiting on that nothing else
 * waits on — up a chain to the operation at its head. More generally, once a promise
 * settles it stops waiting on its inputs, and an input left with nothing waiting on it is
 * cancelled: the losers of race/any, the rest of all after a rejection, the operation under
 * a with_timeout that expired.
 *
 * Threads: every function is for the loop's thread (the loop the promise was made on);
 * every callback runs on it. A released promise that had reactions gives its memory back in
 * the loop's close phase: run the loop until uv_run returns before uv_loop_close.
 */
#ifndef SQUALL_PROMISE_H
#define SQUALL_PROMISE_H

#include "common.h"
#include "work.h"

typedef struct sq_promise_s sq_promise_t;

/* Frees a settled value; `free` fits. Called once, on the promise's loop thread: when
 * the promise is freed — inside sq_promise_release of its last reference, or from the
 * loop after its reactions ran — or inside the call it was given to when that call does
 * not keep the value (sq_promise_resolve/reject on a settled promise, a
 * sq_promise_work that fails). */
typedef void (*sq_value_free_cb)(void *value);

typedef enum {
    SQ_PROMISE_PENDING,
    SQ_PROMISE_FULFILLED,
    SQ_PROMISE_REJECTED
} sq_promise_state_t;

/* A reaction. `p` is the settled promise (borrowed; sq_promise_ref it to keep the value),
 * `status` is 0 (fulfilled; `value` is the value) or the rejection code (`value` is the
 * detail, maybe NULL). `next` is the promise this reaction must settle — with
 * sq_promise_resolve/reject now, with sq_promise_follow (it will settle as another promise
 * does), or later after sq_promise_ref(next) — or NULL for sq_promise_await. Runs on the
 * promise's loop thread, from the loop after `p` settled (its idle phase) — never from
 * inside the call that settled p or registered the reaction. */
typedef void (*sq_promise_cb)(sq_promise_t *p, int status, void *value, sq_promise_t *next,
                              void *data);

/* Tells the operation under a promise that the promise was cancelled (at most once, on
 * the loop thread, while the operation still holds its reference). The operation should
 * stop; when it ends, its resolve/reject return UV_EALREADY and free the value. Unlike a
 * reaction it runs inside the call that cancelled the promise (sq_promise_cancel;
 * sq_promise_release of the last reference to a promise something waits on), or from the
 * loop when a settled combinator or timeout cancels the inputs it no longer waits on:
 * it is how the operation hears of it, at once. */
typedef void (*sq_promise_cancel_cb)(sq_promise_t *p, void *data);

/* ---- making and settling ---- */

/* A new pending promise on `loop`; the caller owns the reference. Returns 0 or UV_ENOMEM.
 */
SQ_EXTERN int sq_promise_create(sq_promise_t **out, uv_loop_t *loop);

/* Takes one more reference; returns p. */
SQ_EXTERN sq_promise_t *sq_promise_ref(sq_promise_t *p);

/* Drops one reference; see the header comment for what the last one does. NULL is a
 * no-op. */
SQ_EXTERN void sq_promise_release(sq_promise_t *p);

/* Fulfils a pending promise with `value`, which the promise owns from now on (dtor may be
 * NULL). Stolen even on failure: when the promise was already settled (typically
 * cancelled) dtor(value) runs at once and UV_EALREADY is returned. Returns 0 or
 * UV_EALREADY. */
SQ_EXTERN int sq_promise_resolve(sq_promise_t *p, void *value, sq_value_free_cb dtor);

/* Rejects a pending promise with `err` (negative: UV_E* or SQ_E*) and an optional detail
 * value, stolen as in resolve. Returns 0, UV_EALREADY (already settled), or UV_EINVAL
 * (err >= 0; the detail is freed and p is left as it was). */
SQ_EXTERN int sq_promise_reject(sq_promise_t *p, int err, void *detail, sq_value_free_cb dtor);

/* Makes pending `p` settle as `src` does (the same outcome; the value is shared, kept alive
 * by p): how a reaction continues with another asynchronous step. src is borrowed;
 * cancelling p cancels src when nothing else waits on it. Returns 0, UV_EALREADY (p is
 * settled: nothing happens), UV_EINVAL (src == p) or SQ_EBUSY (p already waits on
 * another promise). */
SQ_EXTERN int sq_promise_follow(sq_promise_t *p, sq_promise_t *src);

/* Sets the hook an operation uses to hear that its promise was cancelled (one per
 * promise). Returns 0, UV_EALREADY (p is settled) or SQ_EBUSY (a hook is set). */
SQ_EXTERN int sq_promise_on_cancel(sq_promise_t *p, sq_promise_cancel_cb cb, void *data);

/* Cancels a pending promise (see the header comment). Returns 0, or UV_EALREADY when p was
 * already settled (nothing changes). */
SQ_EXTERN int sq_promise_cancel(sq_promise_t *p);

/* ---- looking ---- */

SQ_EXTERN sq_promise_state_t sq_promise_state(const sq_promise_t *p);

/* The outcome of a settled promise: returns 0 and sets *value (may be NULL) to the value
 * (borrowed) when fulfilled; returns the code and sets *value to the detail when rejected.
 * Returns UV_EAGAIN for a pending promise — ambiguous if you reject with UV_EAGAIN, so ask
 * sq_promise_state first. */
SQ_EXTERN int sq_promise_result(const sq_promise_t *p, void **value);

SQ_EXTERN uv_loop_t *sq_promise_loop(const sq_promise_t *p);

/* ---- chaining ---- */

/* When `p` fulfils, cb runs with its value and a new promise `next` to settle; when p is
 * rejected, next is rejected the same way and cb does not run. *next_out (may be NULL:
 * then only the reaction holds next) receives a new reference. Returns 0 or UV_ENOMEM. */
SQ_EXTERN int sq_promise_then(sq_promise_t **next_out, sq_promise_t *p, sq_promise_cb cb,
                              void *data);

/* The mirror of then: cb runs only when `p` is rejected (status and detail given), and may
 * recover by resolving next; a fulfilment passes to next unchanged. Returns 0 or
 * UV_ENOMEM. */
SQ_EXTERN int sq_promise_catch(sq_promise_t **next_out, sq_promise_t *p, sq_promise_cb cb,
                               void *data);

/* The end of a chain (asyncio's await): cb runs once when p settles, whatever the outcome,
 * with next == NULL. Does not keep p alive. Returns 0 or UV_ENOMEM. */
SQ_EXTERN int sq_promise_await(sq_promise_t *p, sq_promise_cb cb, void *data);

/* ---- combinators (inputs borrowed, n >= 1, all on one loop) ---- */

/* Fulfils when every input has, with a `void **` array of their values in input order (the
 * array belongs to the result; the values stay the inputs', kept alive by it). Rejected as
 * the first input to be rejected; the other inputs are then cancelled if nothing else waits
 * on them. Returns 0, UV_EINVAL (n == 0) or UV_ENOMEM. */
SQ_EXTERN int sq_promise_all(sq_promise_t **out, sq_promise_t *const *ps, size_t n);

/* Settles as the first input to settle (its value shared); the others are cancelled if
 * nothing else waits on them. Returns 0, UV_EINVAL (n == 0) or UV_ENOMEM. */
SQ_EXTERN int sq_promise_race(sq_promise_t **out, sq_promise_t *const *ps, size_t n);

/* Fulfils as the first input to fulfil (the others are then cancelled if nothing else
 * waits on them); when all are rejected, rejected as the last one was. Returns 0,
 * UV_EINVAL (n == 0) or UV_ENOMEM. */
SQ_EXTERN int sq_promise_any(sq_promise_t **out, sq_promise_t *const *ps, size_t n);

/* Settles as `p` if p settles within `ms` milliseconds; otherwise is rejected with
 * UV_ETIMEDOUT, and p is cancelled if nothing else waits on it (asyncio.wait_for).
 * Returns 0 or UV_ENOMEM. */
SQ_EXTERN int sq_promise_with_timeout(sq_promise_t **out, sq_promise_t *p, uint64_t ms);

/* ---- operations as promises ---- */

/* A promise fulfilled with NULL after `ms` milliseconds (a sq_sleep underneath; cancelling
 * the promise cancels the sleep). Returns 0, UV_EINVAL (loop NULL) or UV_ENOMEM. */
SQ_EXTERN int sq_promise_sleep(sq_promise_t **out, uv_loop_t *loop, uint64_t ms);

/* A promise for a thread-pool job (work.h): `work(w, data)` runs on a pool thread (through
 * `pool` when not NULL, on `loop`, its loop); when it returns 0 (or more) the promise is
 * fulfilled with `data`, when it returns a negative code the promise is rejected with it
 * and `data` as detail; either way the promise then owns data (dtor). Cancelling the
 * promise rejects it at once and cancels the job; data then stays with the job, which
 * frees it with dtor when it ends. data is stolen even on failure.
 * `work` runs on a pool thread as a sq_work_fn does (work.h); the promise settles on the
 * loop thread. Returns 0; UV_EINVAL (work or loop NULL, or a pool of another loop);
 * UV_ENOMEM; or what sq_work_pool_submit returns (UV_EAGAIN, SQ_ECLOSED). On an error
 * dtor(data) has run, and *out is not set. */
SQ_EXTERN int sq_promise_work(sq_promise_t **out, uv_loop_t *loop, sq_work_pool_t *pool,
                              sq_work_fn work, void *data, sq_value_free_cb dtor);

#endif
