/* squall — private structures of the async layer (lib/async). Never installed. */
#ifndef SQUALL_ASYNC_INT_H
#define SQUALL_ASYNC_INT_H

#include <stdatomic.h>

#include "internal.h"
#include "squall/promise.h"
#include "squall/queue.h"
#include "squall/timer.h"
#include "squall/watchdog.h"
#include "squall/work.h"

/* ---- work ---- */

typedef enum {
    SQ__WORK_QUEUED,    /* in pool->fifo, not yet handed to libuv */
    SQ__WORK_SUBMITTED, /* handed to libuv: waiting, running, or finished and undelivered */
    SQ__WORK_READY,     /* in pool->ready: cancelled before libuv saw it, done pending */
    SQ__WORK_DONE       /* the done callback is running */
} sq__work_state_t;

struct sq_work_s {
    uv_work_t req;
    sq__list_t node;          /* in pool->fifo, pool->active or pool->ready */
    sq_work_pool_t *pool;     /* NULL for sq_work_submit */
    sq_work_fn work;
    sq_work_done_cb done;
    void *data;
    int result;               /* the work function's return, written on the pool thread */
    int status;               /* status to deliver from pool->ready */
    atomic_int cancelled;     /* set on the loop thread, polled by the work function */
    sq__work_state_t state;
};

struct sq_work_pool_s {
    uv_loop_t *loop;
    sq_work_pool_opts_t opts;
    sq__list_t fifo;          /* waiting jobs, oldest first */
    sq__list_t active;        /* jobs handed to libuv */
    sq__list_t ready;         /* jobs cancelled in the FIFO, their done still to call */
    uv_idle_t idle;           /* runs pool->ready on the next turn (never inside cancel) */
    bool destroying;
    bool closing;             /* uv_close(&idle) called: freed in its callback */
    sq_work_pool_close_cb close_cb;
    void *close_data;
    sq_work_pool_stats_t stats;
};

/* ---- watchdog: a log-linear histogram of microsecond values ---- */

#define SQ__HIST_SUB 8                              /* sub-buckets per power of two */
#define SQ__HIST_BUCKETS (16 + 60 * SQ__HIST_SUB)

typedef struct sq__hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t buckets[SQ__HIST_BUCKETS];
} sq__hist_t;

SQ__HIDDEN void sq__hist_add(sq__hist_t *h, uint64_t v);
/* The smallest bucket bound at or under which at least q (0 < q <= 1) of the values lie;
 * never above the largest value seen. 0 when empty. */
SQ__HIDDEN uint64_t sq__hist_quantile(const sq__hist_t *h, double q);

#endif
