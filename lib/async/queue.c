/* The async queue: a ring of items, three lists of waiters, and one idle handle that
 * delivers completions on the next turn (tests/test_queue.c).
 *
 * Invariants between calls: getters wait only while the ring is empty; putters wait only
 * while it is full; joiners wait only while unfinished > 0. pump() restores them after
 * every change, completing waiters in arrival order. */
#include <stdlib.h>

#include "async/async_int.h"

#define OP_CACHE_MAX 32 /* completed ops kept for reuse: no malloc per item once warm */

typedef enum { OP_PUT, OP_GET, OP_JOIN } op_kind_t;
typedef enum { OPS_WAITING, OPS_READY, OPS_DONE } op_state_t;

struct sq_queue_op_s {
    sq__list_t node;  /* in a waiter list, q->ready, a delivery batch, or q->cache */
    sq_queue_t *q;
    op_kind_t kind;
    op_state_t state;
    int status;
    void *item;
    sq_queue_cb cb;
    void *data;
};

struct sq_queue_s {
    uv_loop_t *loop;
    size_t cap;
    void **ring;
    size_t ring_cap;  /* allocated slots, grown up to cap */
    size_t head;
    size_t len;
    sq_free_cb item_free;
    void *free_data;
    sq__list_t getters, putters, joiners;
    sq__list_t ready;     /* completed, callbacks on the next turn */
    sq__list_t cache;
    size_t ncache;
    uv_idle_t idle;
    size_t unfinished;    /* items put and not yet task_done */
    bool closed;
    bool destroying;
    bool delivering;      /* inside idle_cb: destroy waits for its batch */
    bool closing;         /* uv_close(&idle) called: freed in its callback */
    sq_queue_close_cb close_cb;
    void *close_data;
};

static void idle_cb(uv_idle_t *idle);

/* ---- the ring ---- */

static int ring_push(sq_queue_t *q, void *item)
{
    if (q->len == q->ring_cap) {
        size_t ncap = q->ring_cap ? q->ring_cap * 2 : 16;
        if (ncap > q->cap || ncap < q->ring_cap)
            ncap = q->cap;
        void **nring = malloc(ncap * sizeof(*nring));
        if (nring == NULL)
            return UV_ENOMEM;
        for (size_t i = 0; i < q->len; i++)
            nring[i] = q->ring[(q->head + i) % q->ring_cap];
        free(q->ring);
        q->ring = nring;
        q->ring_cap = ncap;
        q->head = 0;
    }
    q->ring[(q->head + q->len) % q->ring_cap] = item;
    q->len++;
    return 0;
}

static void *ring_pop(sq_queue_t *q)
{
    void *item = q->ring[q->head];
    q->head = (q->head + 1) % q->ring_cap;
    q->len--;
    return item;
}

/* ---- ops ---- */

static sq_queue_op_t *op_new(sq_queue_t *q, op_kind_t kind, sq_queue_cb cb, void *data)
{
    sq_queue_op_t *op;
    if (!sq__list_empty(&q->cache)) {
        op = sq__container_of(q->cache.next, sq_queue_op_t, node);
        sq__list_remove(&op->node);
        q->ncache--;
    } else {
        op = malloc(sizeof(*op));
        if (op == NULL)
            return NULL;
    }
    op->node.prev = op->node.next = NULL;
    op->q = q;
    op->kind = kind;
    op->state = OPS_WAITING;
    op->status = 0;
    op->item = NULL;
    op->cb = cb;
    op->data = data;
    return op;
}

static void op_recycle(sq_queue_t *q, sq_queue_op_t *op)
{
    if (q->ncache < OP_CACHE_MAX && !q->destroying) {
        sq__list_insert_tail(&q->cache, &op->node);
        q->ncache++;
    } else {
        free(op);
    }
}

/* op is done: its callback runs on the next turn with `status`. */
static void complete(sq_queue_t *q, sq_queue_op_t *op, int status)
{
    sq__list_remove(&op->node);
    op->state = OPS_READY;
    op->status = status;
    sq__list_insert_tail(&q->ready, &op->node);
    uv_idle_start(&q->idle, idle_cb);
}

static void complete_all(sq_queue_t *q, sq__list_t *waiters, int status)
{
    while (!sq__list_empty(waiters))
        complete(q, sq__container_of(waiters->next, sq_queue_op_t, node), status);
}

/* Serves waiters as far as the ring allows. */
static void pump(sq_queue_t *q)
{
    for (;;) {
        bool progress = false;
        while (!sq__list_empty(&q->getters) && q->len > 0) {
            sq_queue_op_t *g = sq__container_of(q->getters.next, sq_queue_op_t, node);
            g->item = ring_pop(q);
            complete(q, g, 0);
            progress = true;
        }
        while (!sq__list_empty(&q->putters) && q->len < q->cap) {
            sq_queue_op_t *p = sq__container_of(q->putters.next, sq_queue_op_t, node);
            if (ring_push(q, p->item) < 0)
                break; /* out of memory: it keeps waiting for the next get */
            q->unfinished++;
            complete(q, p, 0);
            progress = true;
        }
        if (!progress)
            break;
    }
    if (q->closed && q->len == 0)
        complete_all(q, &q->getters, SQ_ECLOSED);
    if (q->unfinished == 0)
        complete_all(q, &q->joiners, 0);
}

/* ---- lifetime ---- */

static void queue_closed_cb(uv_handle_t *h)
{
    sq_queue_t *q = sq__container_of((uv_idle_t *)h, sq_queue_t, idle);
    if (q->close_cb)
        q->close_cb(q, q->close_data);
    while (!sq__list_empty(&q->cache)) {
        sq__list_t *n = q->cache.next;
        sq__list_remove(n);
        free(sq__container_of(n, sq_queue_op_t, node));
    }
    free(q->ring);
    free(q);
}

static void maybe_close(sq_queue_t *q)
{
    if (!q->destroying || q->closing || q->delivering || !sq__list_empty(&q->ready))
        return;
    q->closing = true;
    uv_close((uv_handle_t *)&q->idle, queue_closed_cb);
}

/* Delivers the completions present when the turn starts; those the callbacks cause wait
 * for the next turn, so a producer and a consumer feeding each other cannot hold the loop.
 */
static void idle_cb(uv_idle_t *idle)
{
    sq_queue_t *q = sq__container_of(idle, sq_queue_t, idle);
    sq__list_t batch;
    sq__list_take(&q->ready, &batch);
    q->delivering = true;
    while (!sq__list_empty(&batch)) {
        sq_queue_op_t *op = sq__container_of(batch.next, sq_queue_op_t, node);
        sq__list_remove(&op->node);
        op->state = OPS_DONE;
        op->cb(q, op->status, op->item, op->data);
        op_recycle(q, op);
    }
    q->delivering = false;
    if (sq__list_empty(&q->ready))
        uv_idle_stop(&q->idle);
    maybe_close(q);
}

int sq_queue_create(sq_queue_t **out, uv_loop_t *loop, size_t capacity, sq_free_cb item_free,
                    void *free_data)
{
    if (capacity == 0)
        return UV_EINVAL;
    sq_queue_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return UV_ENOMEM;
    q->loop = loop;
    q->cap = capacity;
    q->item_free = item_free;
    q->free_data = free_data;
    sq__list_init(&q->getters);
    sq__list_init(&q->putters);
    sq__list_init(&q->joiners);
    sq__list_init(&q->ready);
    sq__list_init(&q->cache);
    uv_idle_init(loop, &q->idle); /* inactive: the queue keeps the loop alive only while a
                                     callback is due */
    *out = q;
    return 0;
}

int sq_queue_destroy(sq_queue_t *q, sq_queue_close_cb cb, void *data)
{
    if (q->destroying)
        return SQ_ECLOSED;
    q->destroying = true;
    q->closed = true;
    q->close_cb = cb;
    q->close_data = data;
    complete_all(q, &q->putters, UV_ECANCELED);
    complete_all(q, &q->getters, UV_ECANCELED);
    complete_all(q, &q->joiners, UV_ECANCELED);
    while (q->len > 0) {
        void *item = ring_pop(q);
        if (q->item_free)
            q->item_free(item, q->free_data);
    }
    maybe_close(q);
    return 0;
}

int sq_queue_close(sq_queue_t *q)
{
    if (q->closed)
        return SQ_ECLOSED;
    q->closed = true;
    complete_all(q, &q->putters, SQ_ECLOSED);
    pump(q);
    return 0;
}

/* ---- operations ---- */

int sq_queue_put(sq_queue_t *q, void *item, sq_queue_cb cb, void *data, sq_queue_op_t **out)
{
    if (q->closed)
        return SQ_ECLOSED;
    sq_queue_op_t *op = op_new(q, OP_PUT, cb, data);
    if (op == NULL)
        return UV_ENOMEM;
    op->item = item;
    if (sq__list_empty(&q->putters) && q->len < q->cap) {
        if (ring_push(q, item) < 0) {
            op_recycle(q, op);
            return UV_ENOMEM;
        }
        q->unfinished++;
        complete(q, op, 0);
        pump(q);
    } else {
        sq__list_insert_tail(&q->putters, &op->node);
    }
    if (out)
        *out = op;
    return 0;
}

int sq_queue_get(sq_queue_t *q, sq_queue_cb cb, void *data, sq_queue_op_t **out)
{
    if (q->destroying || (q->closed && q->len == 0))
        return SQ_ECLOSED;
    sq_queue_op_t *op = op_new(q, OP_GET, cb, data);
    if (op == NULL)
        return UV_ENOMEM;
    sq__list_insert_tail(&q->getters, &op->node);
    pump(q);
    if (out)
        *out = op;
    return 0;
}

int sq_queue_try_put(sq_queue_t *q, void *item)
{
    if (q->closed)
        return SQ_ECLOSED;
    if (!sq__list_empty(&q->putters) || q->len >= q->cap)
        return UV_EAGAIN;
    int err = ring_push(q, item);
    if (err < 0)
        return err;
    q->unfinished++;
    pump(q);
    return 0;
}

int sq_queue_try_get(sq_queue_t *q, void **item)
{
    if (q->len == 0)
        return q->closed ? SQ_ECLOSED : UV_EAGAIN;
    *item = ring_pop(q);
    pump(q);
    return 0;
}

int sq_queue_cancel(sq_queue_op_t *op)
{
    if (op->state != OPS_WAITING)
        return UV_EALREADY;
    complete(op->q, op, UV_ECANCELED);
    return 0;
}

int sq_queue_task_done(sq_queue_t *q)
{
    if (q->unfinished == 0)
        return UV_EINVAL;
    if (--q->unfinished == 0)
        complete_all(q, &q->joiners, 0);
    return 0;
}

int sq_queue_join(sq_queue_t *q, sq_queue_cb cb, void *data, sq_queue_op_t **out)
{
    if (q->destroying)
        return SQ_ECLOSED;
    sq_queue_op_t *op = op_new(q, OP_JOIN, cb, data);
    if (op == NULL)
        return UV_ENOMEM;
    sq__list_insert_tail(&q->joiners, &op->node);
    pump(q);
    if (out)
        *out = op;
    return 0;
}

size_t sq_queue_size(const sq_queue_t *q)
{
    return q->len;
}

size_t sq_queue_capacity(const sq_queue_t *q)
{
    return q->cap;
}

int sq_queue_is_closed(const sq_queue_t *q)
{
    return q->closed ? 1 : 0;
}
