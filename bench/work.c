/* bench-work — what one trip through the thread-pool bridge costs.
 *
 *   build/bin/bench-work [--jobs N] [--inflight K]
 *
 * 1. Round trip: one job with an empty work function at a time, the next submitted from the
 *    previous one's done callback: loop -> pool thread -> loop, in microseconds per job.
 *    The same with bare uv_queue_work, to show what squall adds.
 * 2. Throughput: N empty jobs, K in flight at a time, on libuv's default pool (size from
 *    UV_THREADPOOL_SIZE, 4 when unset): jobs per second, straight and through a
 *    sq_work_pool with its default limit.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <squall.h>

typedef struct run {
    uv_loop_t *loop;
    sq_work_pool_t *pool; /* NULL: sq_work_submit */
    long total;           /* jobs to run */
    long submitted;
    long done;
    int failed;
} run_t;

static int empty_work(sq_work_t *w, void *data)
{
    return 0;
}

static void submit_one(run_t *r);

static void done_cb(sq_work_t *w, int status, void *data)
{
    run_t *r = data;
    if (status != 0)
        r->failed = 1;
    r->done++;
    if (r->submitted < r->total)
        submit_one(r);
}

static void submit_one(run_t *r)
{
    int err = r->pool ? sq_work_pool_submit(NULL, r->pool, empty_work, done_cb, r)
                      : sq_work_submit(NULL, r->loop, empty_work, done_cb, r);
    if (err < 0) {
        fprintf(stderr, "submit: %s\n", sq_strerror(err));
        exit(1);
    }
    r->submitted++;
}

/* Runs `total` jobs keeping `inflight` of them submitted; returns seconds. */
static double run_jobs(uv_loop_t *loop, sq_work_pool_t *pool, long total, long inflight)
{
    run_t r = {.loop = loop, .pool = pool, .total = total};
    uint64_t t0 = uv_hrtime();
    for (long i = 0; i < inflight && r.submitted < total; i++)
        submit_one(&r);
    uv_run(loop, UV_RUN_DEFAULT);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    if (r.done != total || r.failed) {
        fprintf(stderr, "bench-work: %ld of %ld jobs done\n", r.done, total);
        exit(1);
    }
    return secs;
}

/* The same round trip with bare libuv. */
typedef struct raw {
    uv_work_t req;
    long left;
} raw_t;

static void raw_work(uv_work_t *req)
{
}

static void raw_after(uv_work_t *req, int status)
{
    raw_t *r = (raw_t *)req;
    if (--r->left > 0)
        uv_queue_work(req->loop, &r->req, raw_work, raw_after);
}

static double run_raw(uv_loop_t *loop, long total)
{
    raw_t r = {.left = total};
    uint64_t t0 = uv_hrtime();
    uv_queue_work(loop, &r.req, raw_work, raw_after);
    uv_run(loop, UV_RUN_DEFAULT);
    return (double)(uv_hrtime() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    long jobs = 200000, inflight = 1024;
    static const struct option longopts[] = {{"jobs", required_argument, NULL, 'n'},
                                             {"inflight", required_argument, NULL, 'k'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "n:k:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': jobs = atol(optarg); break;
        case 'k': inflight = atol(optarg); break;
        default:
            fprintf(stderr, "usage: bench-work [--jobs N] [--inflight K]\n");
            return 2;
        }
    }
    if (jobs < 1 || inflight < 1) {
        fprintf(stderr, "bench-work: --jobs and --inflight must be positive\n");
        return 2;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    long seq = jobs / 10 > 0 ? jobs / 10 : 1;
    run_jobs(&loop, NULL, 1000 < seq ? 1000 : seq, 1); /* warm up: start libuv's threads */

    printf("libuv thread pool: %u threads\n", sq_work_threadpool_size());
    double raw = run_raw(&loop, seq);
    double one = run_jobs(&loop, NULL, seq, 1);
    printf("round trip, 1 in flight, %ld jobs:\n", seq);
    printf("  uv_queue_work        %7.2f us/job\n", raw * 1e6 / (double)seq);
    printf("  sq_work_submit       %7.2f us/job\n", one * 1e6 / (double)seq);

    double many = run_jobs(&loop, NULL, jobs, inflight);
    sq_work_pool_t *pool;
    if (sq_work_pool_create(&pool, &loop, NULL) < 0)
        return 1;
    sq_work_pool_opts_t o;
    sq_work_pool_opts_init(&o);
    double pooled = run_jobs(&loop, pool, jobs, inflight);
    printf("throughput, %ld jobs, %ld submitted at a time:\n", jobs, inflight);
    printf("  sq_work_submit       %9.0f jobs/s\n", (double)jobs / many);
    printf("  sq_work_pool (max %u in flight) %9.0f jobs/s\n", o.max_in_flight,
           (double)jobs / pooled);
    sq_work_pool_destroy(pool, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
