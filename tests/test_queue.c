/* The async queue: FIFO order, waiting puts and gets, callbacks exactly once and never
 * inside the call, cancel, close, destroy, join — and the lecture's producer/consumer. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include <squall.h>

static int freed_items;

static void item_free(void *item, void *data)
{
    freed_items++;
    free(item);
}

static void setup(void)
{
    freed_items = 0;
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
}

#define I(n) ((void *)(intptr_t)(n))

typedef struct ev {
    int calls;
    int status;
    void *item;
    int order;
} ev_t;

static int seq;

static void rec(sq_queue_t *q, int status, void *item, void *data)
{
    ev_t *e = data;
    e->calls++;
    e->status = status;
    e->item = item;
    e->order = seq++;
}

static void destroyed(sq_queue_t *q, void *data)
{
    (*(int *)data)++;
}

Test(queue, items_come_out_in_put_order, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    sq_queue_t *q;
    cr_assert_eq(sq_queue_create(&q, &loop, 0, NULL, NULL), UV_EINVAL);
    cr_assert_eq(sq_queue_create(&q, &loop, 100, NULL, NULL), 0);
    ev_t puts[40] = {{0}}, gets[40] = {{0}};
    for (int i = 0; i < 40; i++)
        cr_assert_eq(sq_queue_put(q, I(i + 1), rec, &puts[i], NULL), 0);
    cr_assert_eq(sq_queue_size(q), 40);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(sq_queue_get(q, rec, &gets[i], NULL), 0);
    cr_assert_eq(puts[0].calls + gets[0].calls, 0, "never from inside the call");
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(puts[i].calls, 1);
        cr_assert_eq(puts[i].status, 0);
        cr_assert_eq(gets[i].calls, 1);
        cr_assert_eq(gets[i].status, 0);
        cr_assert_eq(gets[i].item, I(i + 1));
    }
    cr_assert_eq(sq_queue_size(q), 0);
    int d = 0;
    cr_assert_eq(sq_queue_destroy(q, destroyed, &d), 0);
    cr_assert_eq(sq_queue_destroy(q, destroyed, &d), SQ_ECLOSED);
    close_loop(&loop);
    cr_assert_eq(d, 1);
}

Test(queue, put_waits_while_full_and_resumes_in_order, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 2, NULL, NULL);
    ev_t p[4] = {{0}}, g = {0};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(sq_queue_put(q, I(i + 1), rec, &p[i], NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(p[0].calls + p[1].calls, 2);
    cr_assert_eq(p[2].calls + p[3].calls, 0, "waiting for room");
    cr_assert_eq(sq_queue_size(q), 2);
    cr_assert_eq(sq_queue_try_put(q, I(9)), UV_EAGAIN);
    cr_assert_eq(sq_queue_get(q, rec, &g, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g.item, I(1));
    cr_assert_eq(p[2].calls, 1, "the first waiting putter got the room");
    cr_assert_eq(p[2].status, 0);
    cr_assert_eq(p[3].calls, 0);
    void *it;
    for (int want = 2; want <= 4; want++) {
        cr_assert_eq(sq_queue_try_get(q, &it), 0);
        cr_assert_eq(it, I(want));
    }
    cr_assert_eq(sq_queue_try_get(q, &it), UV_EAGAIN);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(p[3].calls, 1);
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

Test(queue, get_waits_while_empty_and_getters_are_served_in_arrival_order, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seq = 0;
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 8, NULL, NULL);
    ev_t g[3] = {{0}};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sq_queue_get(q, rec, &g[i], NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g[0].calls + g[1].calls + g[2].calls, 0);
    cr_assert_eq(sq_queue_try_put(q, I(10)), 0);
    cr_assert_eq(sq_queue_try_put(q, I(11)), 0);
    cr_assert_eq(sq_queue_size(q), 0, "handed straight to waiting getters");
    cr_assert_eq(g[0].calls, 0, "not from inside try_put");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g[0].item, I(10));
    cr_assert_eq(g[1].item, I(11));
    cr_assert_eq(g[2].calls, 0);
    sq_queue_destroy(q, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g[2].calls, 1);
    cr_assert_eq(g[2].status, UV_ECANCELED);
    close_loop(&loop);
}

Test(queue, cancel_a_waiting_get_or_put_but_not_a_completed_one, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 1, NULL, NULL);
    ev_t g = {0}, p1 = {0}, p2 = {0};
    sq_queue_op_t *og, *op1, *op2;
    cr_assert_eq(sq_queue_get(q, rec, &g, &og), 0);
    cr_assert_eq(sq_queue_cancel(og), 0);
    cr_assert_eq(sq_queue_cancel(og), UV_EALREADY);
    cr_assert_eq(g.calls, 0, "not from inside cancel");
    cr_assert_eq(sq_queue_put(q, I(1), rec, &p1, &op1), 0);
    cr_assert_eq(sq_queue_cancel(op1), UV_EALREADY, "already queued: too late");
    cr_assert_eq(sq_queue_put(q, I(2), rec, &p2, &op2), 0); /* full: waits */
    cr_assert_eq(sq_queue_cancel(op2), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g.calls, 1);
    cr_assert_eq(g.status, UV_ECANCELED);
    cr_assert_null(g.item);
    cr_assert_eq(p1.calls, 1);
    cr_assert_eq(p1.status, 0);
    cr_assert_eq(p2.calls, 1);
    cr_assert_eq(p2.status, UV_ECANCELED);
    cr_assert_eq(p2.item, I(2), "a cancelled put hands its item back");
    cr_assert_eq(sq_queue_size(q), 1, "the cancelled getter took nothing");
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

Test(queue, close_wakes_every_waiter_and_lets_getters_drain, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    /* Waiting getters on an empty queue. */
    sq_queue_create(&q, &loop, 2, NULL, NULL);
    ev_t g1 = {0}, g2 = {0};
    sq_queue_get(q, rec, &g1, NULL);
    sq_queue_get(q, rec, &g2, NULL);
    cr_assert_eq(sq_queue_close(q), 0);
    cr_assert_eq(sq_queue_close(q), SQ_ECLOSED);
    cr_assert_eq(sq_queue_is_closed(q), 1);
    cr_assert_eq(g1.calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g1.status, SQ_ECLOSED);
    cr_assert_eq(g2.status, SQ_ECLOSED);
    cr_assert_eq(g1.calls + g2.calls, 2);
    sq_queue_destroy(q, NULL, NULL);

    /* Waiting putters on a full queue; queued items are still handed out. */
    sq_queue_create(&q, &loop, 2, NULL, NULL);
    ev_t p[3] = {{0}}, g[3] = {{0}};
    for (int i = 0; i < 3; i++)
        sq_queue_put(q, I(i + 1), rec, &p[i], NULL);
    sq_queue_close(q);
    cr_assert_eq(sq_queue_put(q, I(9), rec, &p[0], NULL), SQ_ECLOSED);
    cr_assert_eq(sq_queue_try_put(q, I(9)), SQ_ECLOSED);
    cr_assert_eq(sq_queue_get(q, rec, &g[0], NULL), 0);
    cr_assert_eq(sq_queue_get(q, rec, &g[1], NULL), 0);
    cr_assert_eq(sq_queue_get(q, rec, &g[2], NULL), SQ_ECLOSED, "closed and drained");
    void *it;
    cr_assert_eq(sq_queue_try_get(q, &it), SQ_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(p[0].status, 0);
    cr_assert_eq(p[1].status, 0);
    cr_assert_eq(p[2].status, SQ_ECLOSED);
    cr_assert_eq(p[2].item, I(3), "the refused item goes back to its producer");
    cr_assert_eq(g[0].item, I(1));
    cr_assert_eq(g[1].item, I(2));
    cr_assert_eq(g[2].calls, 0, "an error return means no callback");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(p[i].calls, 1);
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

typedef struct destroy_check {
    ev_t *evs;
    int n;
    int calls_at_destroy_cb;
    int destroyed;
} destroy_check_t;

static void destroy_check_cb(sq_queue_t *q, void *data)
{
    destroy_check_t *d = data;
    d->destroyed++;
    for (int i = 0; i < d->n; i++)
        d->calls_at_destroy_cb += d->evs[i].calls;
}

Test(queue, destroy_cancels_waiters_frees_items_and_closes_last, .init = setup,
     .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 2, item_free, NULL);
    ev_t evs[4] = {{0}};
    for (int i = 0; i < 3; i++) {
        int *it = malloc(sizeof(*it));
        *it = i;
        sq_queue_put(q, it, rec, &evs[i], NULL);
    }
    sq_queue_join(q, rec, &evs[3], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(evs[0].calls + evs[1].calls, 2);
    destroy_check_t d = {.evs = evs, .n = 4};
    cr_assert_eq(sq_queue_destroy(q, destroy_check_cb, &d), 0);
    cr_assert_eq(freed_items, 2, "queued items freed with item_free");
    cr_assert_eq(sq_queue_get(q, rec, &evs[0], NULL), SQ_ECLOSED);
    cr_assert_eq(sq_queue_join(q, rec, &evs[0], NULL), SQ_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(evs[2].calls, 1);
    cr_assert_eq(evs[2].status, UV_ECANCELED);
    free(evs[2].item); /* handed back */
    cr_assert_eq(evs[3].calls, 1);
    cr_assert_eq(evs[3].status, UV_ECANCELED);
    cr_assert_eq(d.destroyed, 1);
    cr_assert_eq(d.calls_at_destroy_cb, 4, "the destroy callback runs after every waiter's");
    close_loop(&loop);
}

typedef struct self_destroyer {
    int calls;
    int destroyed;
    int get_rc;
} self_destroyer_t;

static void destroy_in_cb(sq_queue_t *q, int status, void *item, void *data)
{
    self_destroyer_t *s = data;
    if (s->calls++ == 0) {
        cr_assert_eq(status, 0);
        sq_queue_destroy(q, destroyed, &s->destroyed);
        s->get_rc = sq_queue_get(q, destroy_in_cb, s, NULL);
    } else {
        cr_assert_eq(status, UV_ECANCELED);
    }
}

Test(queue, destroy_from_a_callback, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 4, NULL, NULL);
    self_destroyer_t s = {0};
    sq_queue_get(q, destroy_in_cb, &s, NULL);
    sq_queue_get(q, destroy_in_cb, &s, NULL);
    sq_queue_try_put(q, I(1));
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(s.calls, 2);
    cr_assert_eq(s.get_rc, SQ_ECLOSED);
    cr_assert_eq(s.destroyed, 1);
    close_loop(&loop);
}

Test(queue, join_waits_for_task_done_of_every_item, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 4, NULL, NULL);
    ev_t j0 = {0}, j1 = {0};
    cr_assert_eq(sq_queue_task_done(q), UV_EINVAL);
    sq_queue_join(q, rec, &j0, NULL); /* nothing unfinished */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j0.calls, 1);
    cr_assert_eq(j0.status, 0);
    sq_queue_try_put(q, I(1));
    sq_queue_try_put(q, I(2));
    sq_queue_join(q, rec, &j1, NULL);
    void *it;
    sq_queue_try_get(q, &it);
    sq_queue_try_get(q, &it);
    sq_queue_close(q); /* does not wake joiners */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j1.calls, 0, "items were taken but not done");
    cr_assert_eq(sq_queue_task_done(q), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j1.calls, 0);
    cr_assert_eq(sq_queue_task_done(q), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(j1.calls, 1);
    cr_assert_eq(j1.status, 0);
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

/* A put in a get's callback and a get in a put's: each turn delivers only what was ready
 * when it began, so such a pair cannot monopolise one turn of the loop. */
typedef struct pingpong {
    int gets;
    int turns_seen;
} pingpong_t;

static void pp_get(sq_queue_t *q, int status, void *item, void *data)
{
    pingpong_t *pp = data;
    if (status < 0)
        return;
    pp->gets++;
    if (pp->gets < 1000) {
        sq_queue_try_put(q, item);
        sq_queue_get(q, pp_get, pp, NULL);
    }
}

static void count_turn(uv_check_t *c)
{
    (*(int *)c->data)++;
}

Test(queue, callbacks_that_feed_each_other_yield_to_the_loop, .init = setup, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_queue_t *q;
    sq_queue_create(&q, &loop, 1, NULL, NULL);
    pingpong_t pp = {0};
    uv_check_t check;
    int turns = 0;
    uv_check_init(&loop, &check);
    check.data = &turns;
    uv_check_start(&check, count_turn);
    uv_unref((uv_handle_t *)&check);
    sq_queue_try_put(q, I(7));
    sq_queue_get(q, pp_get, &pp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(pp.gets, 1000);
    cr_assert_geq(turns, 1000, "one delivery per turn: %d turns", turns);
    uv_close((uv_handle_t *)&check, NULL);
    sq_queue_destroy(q, NULL, NULL);
    close_loop(&loop);
}

/* ---- the lecture's producer/consumer ----
 *
 *     async def producer(q, n):            async def consumer(q):
 *         for i in range(n):                   while True:
 *             await asyncio.sleep(rnd())           item = await q.get()
 *             await q.put(i)                       await asyncio.sleep(rnd())
 *                                                  q.task_done()
 *     q = asyncio.Queue(maxsize=4)
 *     consumers = [create_task(consumer(q)) for _ in range(3)]
 *     await gather(*[producer(q, 25) for _ in range(4)])
 *     await q.join()
 *     for c in consumers: c.cancel()
 *
 * Each coroutine becomes a small state machine whose states are the awaits. */

#define NPROD 4
#define NCONS 3
#define NITEMS 25
#define QCAP 4

typedef struct world world_t;

typedef struct producer {
    world_t *w;
    int id;
    int next;          /* items produced so far */
} producer_t;

typedef struct consumer {
    world_t *w;
    sq_queue_op_t *get; /* the pending get, cancelled at the end */
    int consumed;
    int cancelled;
    int item;          /* the item being worked on */
} consumer_t;

struct world {
    uv_loop_t *loop;
    sq_queue_t *q;
    producer_t prod[NPROD];
    consumer_t cons[NCONS];
    int producers_left;
    int seen[NPROD * NITEMS];
    size_t max_size;
    uint32_t rnd;
    int joined;
    int destroyed;
    bool use_close;    /* end with sq_queue_close instead of join + cancel */
};

static uint64_t rnd_ms(world_t *w)
{
    w->rnd = w->rnd * 1103515245u + 12345u;
    return (w->rnd >> 16) % 4;
}

static void produce_next(producer_t *p);

static void put_done(sq_queue_t *q, int status, void *item, void *data)
{
    producer_t *p = data;
    cr_assert_eq(status, 0);
    world_t *w = p->w;
    if (sq_queue_size(q) > w->max_size)
        w->max_size = sq_queue_size(q);
    produce_next(p);
}

static void producer_woke(sq_sleep_t *s, int status, void *data)
{
    producer_t *p = data;
    int *item = malloc(sizeof(*item));
    *item = p->id * NITEMS + p->next++;
    cr_assert_eq(sq_queue_put(p->w->q, item, put_done, p, NULL), 0);
}

static void consume_next(consumer_t *c);

static void all_done(sq_queue_t *q, int status, void *item, void *data)
{
    world_t *w = data;
    cr_assert_eq(status, 0);
    w->joined++;
    for (int i = 0; i < NCONS; i++)
        cr_assert_eq(sq_queue_cancel(w->cons[i].get), 0, "consumer %d waits in get", i);
    sq_queue_destroy(q, destroyed, &w->destroyed);
}

static void produce_next(producer_t *p)
{
    world_t *w = p->w;
    if (p->next == NITEMS) {
        if (--w->producers_left == 0) {
            if (w->use_close)
                sq_queue_close(w->q);
            else
                cr_assert_eq(sq_queue_join(w->q, all_done, w, NULL), 0);
        }
        return;
    }
    cr_assert_eq(sq_sleep(NULL, w->loop, rnd_ms(w), producer_woke, p), 0);
}

static void consumer_woke(sq_sleep_t *s, int status, void *data)
{
    consumer_t *c = data;
    c->w->seen[c->item]++;
    c->consumed++;
    cr_assert_eq(sq_queue_task_done(c->w->q), 0);
    consume_next(c);
}

static void got_item(sq_queue_t *q, int status, void *item, void *data)
{
    consumer_t *c = data;
    c->get = NULL;
    if (status < 0) {
        cr_assert_eq(status, c->w->use_close ? SQ_ECLOSED : UV_ECANCELED);
        c->cancelled++;
        return;
    }
    c->item = *(int *)item;
    free(item);
    cr_assert_eq(sq_sleep(NULL, c->w->loop, rnd_ms(c->w), consumer_woke, c), 0);
}

static void consume_next(consumer_t *c)
{
    int rc = sq_queue_get(c->w->q, got_item, c, &c->get);
    if (rc == SQ_ECLOSED) { /* closed and drained */
        cr_assert(c->w->use_close);
        c->cancelled++;
        return;
    }
    cr_assert_eq(rc, 0);
}

static void run_world(bool use_close)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    world_t w = {.loop = &loop, .producers_left = NPROD, .rnd = 42, .use_close = use_close};
    cr_assert_eq(sq_queue_create(&w.q, &loop, QCAP, item_free, NULL), 0);
    for (int i = 0; i < NCONS; i++) {
        w.cons[i] = (consumer_t){.w = &w};
        consume_next(&w.cons[i]);
    }
    for (int i = 0; i < NPROD; i++) {
        w.prod[i] = (producer_t){.w = &w, .id = i};
        produce_next(&w.prod[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int total = 0;
    for (int i = 0; i < NPROD * NITEMS; i++)
        cr_assert_eq(w.seen[i], 1, "item %d consumed %d times", i, w.seen[i]);
    for (int i = 0; i < NCONS; i++) {
        total += w.cons[i].consumed;
        cr_assert_eq(w.cons[i].cancelled, 1, "each consumer stopped exactly once");
        cr_assert_gt(w.cons[i].consumed, 0, "consumer %d did some of the work", i);
    }
    cr_assert_eq(total, NPROD * NITEMS);
    cr_assert_leq(w.max_size, QCAP);
    cr_assert_eq(freed_items, 0);
    if (use_close)
        sq_queue_destroy(w.q, destroyed, &w.destroyed);
    else
        cr_assert_eq(w.joined, 1);
    close_loop(&loop);
    cr_assert_eq(w.destroyed, 1);
}

Test(queue, producer_consumer_join_then_cancel_consumers, .init = setup, .timeout = 20)
{
    run_world(false);
}

Test(queue, producer_consumer_close_and_drain, .init = setup, .timeout = 20)
{
    run_world(true);
}
