/* producer_consumer — the asyncio.Queue example of a lecture on asynchronous Python
 * (asyncio, aiohttp, Tornado, FastAPI), in C on squall. The Python it mirrors:
 *
 *     async def producer(q, name, n):             async def consumer(q, name):
 *         for i in range(n):                          while True:
 *             await asyncio.sleep(random())               item = await q.get()
 *             await q.put(f"{name}-{i}")                  await asyncio.sleep(random())
 *                                                         q.task_done()
 *     q = asyncio.Queue(maxsize=4)
 *     consumers = [asyncio.create_task(consumer(q, c)) for c in ...]
 *     await asyncio.gather(*(producer(q, p, n) for p in ...))
 *     await q.join()                    # every item processed
 *     for c in consumers: c.cancel()    # CancelledError in each pending q.get()
 *
 * Each coroutine becomes a struct (its local variables) and a few callbacks (the code
 * between two awaits): a state machine driven by the loop.
 *
 *   build/bin/producer_consumer [--producers 3] [--consumers 2] [--items 5] [--capacity 4]
 *                               [--max-ms 300] [--seed 1] [--quiet]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct app app_t;

typedef struct producer {
    app_t *app;
    int id;
    int made;            /* items put so far */
} producer_t;

typedef struct consumer {
    app_t *app;
    int id;
    sq_queue_op_t *get;  /* the pending get: what cancel() interrupts */
    char *item;          /* the item being worked on */
    int done;
} consumer_t;

struct app {
    uv_loop_t loop;
    sq_queue_t *q;
    producer_t *producers;
    consumer_t *consumers;
    int nproducers, nconsumers, nitems;
    int producers_left;
    unsigned max_ms;
    unsigned seed;
    int quiet;
    uint64_t start;
};

static void say(app_t *app, const char *fmt, const char *who, int id, const char *item)
{
    if (app->quiet)
        return;
    printf("%6.3fs  %s %d %s%s%s (queue %zu/%zu)\n",
           (double)(uv_now(&app->loop) - app->start) / 1000.0, who, id, fmt, item ? " " : "",
           item ? item : "", sq_queue_size(app->q), sq_queue_capacity(app->q));
}

static uint64_t random_ms(app_t *app)
{
    return app->max_ms ? (uint64_t)rand_r(&app->seed) % app->max_ms : 0;
}

/* ---- producer: sleep, put, repeat ---- */

static void producer_step(producer_t *p);

static void producer_put_done(sq_queue_t *q, int status, void *item, void *data)
{
    producer_t *p = data;
    if (status < 0) { /* the queue went away: take the item back */
        free(item);
        return;
    }
    say(p->app, "put", "producer", p->id, item);
    producer_step(p);
}

static void producer_woke(sq_sleep_t *s, int status, void *data)
{
    producer_t *p = data;
    char *item = malloc(32);
    if (item == NULL)
        return;
    snprintf(item, 32, "p%d-item%d", p->id, p->made++);
    /* Waits here while the queue is full: back-pressure on the producer. */
    if (sq_queue_put(p->app->q, item, producer_put_done, p, NULL) < 0)
        free(item);
}

static void all_processed(sq_queue_t *q, int status, void *item, void *data);

static void producer_step(producer_t *p)
{
    app_t *app = p->app;
    if (p->made == app->nitems) {
        say(app, "finished", "producer", p->id, NULL);
        if (--app->producers_left == 0) /* gather() returned: now await q.join() */
            sq_queue_join(app->q, all_processed, app, NULL);
        return;
    }
    sq_sleep(NULL, &app->loop, random_ms(app), producer_woke, p);
}

/* ---- consumer: get, work, task_done, repeat ---- */

static void consumer_step(consumer_t *c);

static void consumer_worked(sq_sleep_t *s, int status, void *data)
{
    consumer_t *c = data;
    say(c->app, "processed", "consumer", c->id, c->item);
    free(c->item);
    c->item = NULL;
    c->done++;
    sq_queue_task_done(c->app->q);
    consumer_step(c);
}

static void consumer_got(sq_queue_t *q, int status, void *item, void *data)
{
    consumer_t *c = data;
    c->get = NULL;
    if (status == UV_ECANCELED) { /* CancelledError raised at `await q.get()` */
        say(c->app, "cancelled while waiting in get", "consumer", c->id, NULL);
        return;
    }
    if (status < 0)
        return;
    c->item = item;
    say(c->app, "got", "consumer", c->id, c->item);
    sq_sleep(NULL, &c->app->loop, random_ms(c->app), consumer_worked, c);
}

static void consumer_step(consumer_t *c)
{
    if (sq_queue_get(c->app->q, consumer_got, c, &c->get) < 0)
        c->get = NULL;
}

/* ---- main: q.join(), then cancel the consumers ---- */

static void queue_gone(sq_queue_t *q, void *data)
{
    app_t *app = data;
    app->q = NULL;
}

static void all_processed(sq_queue_t *q, int status, void *item, void *data)
{
    app_t *app = data;
    if (!app->quiet)
        printf("%6.3fs  join: every item processed; cancelling the consumers\n",
               (double)(uv_now(&app->loop) - app->start) / 1000.0);
    for (int i = 0; i < app->nconsumers; i++)
        if (app->consumers[i].get)
            sq_queue_cancel(app->consumers[i].get);
    sq_queue_destroy(q, queue_gone, app);
}

static int parse_int(const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "producer_consumer: bad number '%s' (%d..%d)\n", s, lo, hi);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    app_t app;
    memset(&app, 0, sizeof(app));
    app.nproducers = 3;
    app.nconsumers = 2;
    app.nitems = 5;
    app.max_ms = 300;
    app.seed = 1;
    int capacity = 4;

    static const struct option longopts[] = {
        {"producers", required_argument, NULL, 'p'}, {"consumers", required_argument, NULL, 'c'},
        {"items", required_argument, NULL, 'n'},     {"capacity", required_argument, NULL, 'k'},
        {"max-ms", required_argument, NULL, 'm'},    {"seed", required_argument, NULL, 's'},
        {"quiet", no_argument, NULL, 'q'},           {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "p:c:n:k:m:s:q", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': app.nproducers = parse_int(optarg, 1, 1000); break;
        case 'c': app.nconsumers = parse_int(optarg, 1, 1000); break;
        case 'n': app.nitems = parse_int(optarg, 0, 1000000); break;
        case 'k': capacity = parse_int(optarg, 1, 1000000); break;
        case 'm': app.max_ms = (unsigned)parse_int(optarg, 0, 60000); break;
        case 's': app.seed = (unsigned)parse_int(optarg, 0, 1 << 30); break;
        case 'q': app.quiet = 1; break;
        default:
            fprintf(stderr, "usage: producer_consumer [--producers N] [--consumers N] "
                            "[--items N] [--capacity N] [--max-ms MS] [--seed N] [--quiet]\n");
            return 2;
        }
    }

    int err = uv_loop_init(&app.loop);
    if (err == 0)
        err = sq_queue_create(&app.q, &app.loop, (size_t)capacity, NULL, NULL);
    app.producers = calloc((size_t)app.nproducers, sizeof(*app.producers));
    app.consumers = calloc((size_t)app.nconsumers, sizeof(*app.consumers));
    if (err < 0 || app.producers == NULL || app.consumers == NULL) {
        fprintf(stderr, "producer_consumer: %s\n", err < 0 ? sq_strerror(err) : "no memory");
        return 1;
    }
    app.start = uv_now(&app.loop);
    app.producers_left = app.nproducers;
    for (int i = 0; i < app.nconsumers; i++) {
        app.consumers[i] = (consumer_t){.app = &app, .id = i};
        consumer_step(&app.consumers[i]);
    }
    for (int i = 0; i < app.nproducers; i++) {
        app.producers[i] = (producer_t){.app = &app, .id = i};
        producer_step(&app.producers[i]);
    }

    uv_run(&app.loop, UV_RUN_DEFAULT);

    int total = 0;
    for (int i = 0; i < app.nconsumers; i++) {
        printf("consumer %d processed %d items\n", i, app.consumers[i].done);
        total += app.consumers[i].done;
    }
    printf("%d items produced, %d processed, in %.3f s\n", app.nproducers * app.nitems, total,
           (double)(uv_now(&app.loop) - app.start) / 1000.0);
    free(app.producers);
    free(app.consumers);
    err = uv_loop_close(&app.loop);
    return err == 0 && total == app.nproducers * app.nitems ? 0 : 1;
}
