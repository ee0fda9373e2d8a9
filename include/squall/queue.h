/* squall — an async queue on the loop (asyncio.Queue): a bounded FIFO of `void *` items
 * between producers and consumers that wait with callbacks instead of blocking.
 *
 *     static void got(sq_queue_t *q, int status, void *item, void *data) {
 *         if (status < 0) return;            // SQ_ECLOSED: drained; UV_ECANCELED
 *         handle(item);
 *         sq_queue_task_done(q);
 *         sq_queue_get(q, got, data, NULL);   // the next one
 *     }
 *     sq_queue_t *q;
 *     sq_queue_create(&q, loop, 8, free, NULL);
 *     sq_queue_get(q, got, NULL, NULL);
 *     sq_queue_put(q, item, put_done, NULL, NULL);   // waits while 8 items are queued
 *
 * Every callback runs on the loop thread, later — never from inside the call that
 * registered it, even when the operation could complete at once — and exactly once for
 * every call that returned 0. Items are handed out in put order; waiting getters are served
 * in arrival order, and so are waiting putters.
 *
 * Two ways to stop. sq_queue_close: no more puts (waiting putters get SQ_ECLOSED and their
 * item back), getters drain what is queued and then get SQ_ECLOSED — the producer's "no
 * more" (Go's close(ch)). sq_queue_destroy: every waiter gets UV_ECANCELED, queued items
 * are freed, then the queue. Cancelling one wait follows squall's convention (work.h).
 *
 * Item ownership: put takes the item when its callback gets status 0 (the queue, then the
 * getter that receives it, owns it); on any other status the callback hands the item back
 * to the producer. Items still queued at destroy are freed with item_free.
 * All functions are for the loop's thread.
 */
#ifndef SQUALL_QUEUE_H
#define SQUALL_QUEUE_H

#include "common.h"

typedef struct sq_queue_s sq_queue_t;
typedef struct sq_queue_op_s sq_queue_op_t;

/* The end of a put, get or join. Runs once per operation, on the queue's loop thread,
 * from the loop (an idle turn) — never from inside the call that registered it or
 * completed it. status: 0; SQ_ECLOSED (the queue was closed: for a get, closed and
 * drained); UV_ECANCELED (sq_queue_cancel, or the queue destroyed).
 * item: for a get with status 0, the item (now the caller's); for a put, the item it was
 * given (the caller's again unless status is 0); NULL for join. The op handle, if one was
 * asked for, is freed after this returns. */
typedef void (*sq_queue_cb)(sq_queue_t *q, int status, void *item, void *data);

/* The queue is destroyed: runs once, on the loop thread, from the loop's close phase after
 * the last operation's callback — never from inside sq_queue_destroy. q is freed when it
 * returns. */
typedef void (*sq_queue_close_cb)(sq_queue_t *q, void *data);

/* Creates a queue on `loop` holding at most `capacity` items (SIZE_MAX: no bound).
 * item_free (may be NULL) frees items left at destroy, as item_free(item, free_data), on
 * the loop thread, inside sq_queue_destroy; free_data is borrowed.
 * Returns 0, UV_EINVAL (capacity 0) or UV_ENOMEM. */
SQ_EXTERN int sq_queue_create(sq_queue_t **q, uv_loop_t *loop, size_t capacity,
                              sq_free_cb item_free, void *free_data);

/* Puts `item` at the tail; when the queue is full, waits for room (asyncio's
 * `await q.put(item)`). cb gets 0 once the item is queued. *op (may be NULL) receives a
 * handle for sq_queue_cancel, valid until cb returns. Returns 0, SQ_ECLOSED (closed or
 * being destroyed: the item stays the caller's, cb never runs) or UV_ENOMEM. */
SQ_EXTERN int sq_queue_put(sq_queue_t *q, void *item, sq_queue_cb cb, void *data,
                           sq_queue_op_t **op);

/* Takes the head item; when the queue is empty, waits for one. Returns 0, SQ_ECLOSED
 * (closed and drained, or being destroyed: cb never runs) or UV_ENOMEM. */
SQ_EXTERN int sq_queue_get(sq_queue_t *q, sq_queue_cb cb, void *data, sq_queue_op_t **op);

/* Without waiting: queues item now and returns 0, or returns UV_EAGAIN (full, or putters
 * are waiting), SQ_ECLOSED or UV_ENOMEM; on an error the item stays the caller's. A
 * waiting getter, if any, is handed the item (its callback runs later). */
SQ_EXTERN int sq_queue_try_put(sq_queue_t *q, void *item);

/* Without waiting: takes the head item into *item and returns 0, or returns UV_EAGAIN
 * (empty) or SQ_ECLOSED (closed and drained). */
SQ_EXTERN int sq_queue_try_get(sq_queue_t *q, void **item);

/* Cancels a waiting put, get or join: its callback runs later with UV_ECANCELED (a put's
 * item handed back). Returns 0, or UV_EALREADY when the operation has already completed
 * (its callback, still to run or running, gets its own status — e.g. the item). */
SQ_EXTERN int sq_queue_cancel(sq_queue_op_t *op);

/* asyncio's task_done/join: every item put successfully counts as unfinished until a
 * consumer calls sq_queue_task_done for it; join's callback runs (status 0) once none is.
 * task_done returns 0, or UV_EINVAL when called more times than items were put. join
 * returns 0, SQ_ECLOSED (being destroyed) or UV_ENOMEM; closing the queue does not wake
 * joiners (they wait for the consumers), destroying it does (UV_ECANCELED). */
SQ_EXTERN int sq_queue_task_done(sq_queue_t *q);
SQ_EXTERN int sq_queue_join(sq_queue_t *q, sq_queue_cb cb, void *data, sq_queue_op_t **op);

/* No more puts (see the header comment). Returns 0, or SQ_ECLOSED when already closed. */
SQ_EXTERN int sq_queue_close(sq_queue_t *q);

/* Closes the queue if needed, cancels every waiter (UV_ECANCELED; operations already
 * completed still get their own status), frees the items still queued with item_free
 * (before this returns), and after the last of those callbacks calls cb (may be NULL;
 * `data` borrowed) and frees the queue. Do not use q after cb. Returns 0, or SQ_ECLOSED
 * when called twice. */
SQ_EXTERN int sq_queue_destroy(sq_queue_t *q, sq_queue_close_cb cb, void *data);

SQ_EXTERN size_t sq_queue_size(const sq_queue_t *q);       /* items queued now */
SQ_EXTERN size_t sq_queue_capacity(const sq_queue_t *q);
SQ_EXTERN int sq_queue_is_closed(const sq_queue_t *q);     /* 1 after close or destroy */

#endif
