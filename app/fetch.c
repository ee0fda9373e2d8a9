/* fetch — a lecture's "load one page 500 times" demo, in every style of concurrency.
 *
 *   build/bin/fetch --style S [-n 500] [-c 100] [--timeout MS] [-v] URL
 *
 * fetches URL n times with at most c requests in flight and prints one line:
 *
 *   fetch: style=callbacks n=500 c=100 requests=500 ok=500 errors=0 seconds=0.042 rps=11904
 *
 * (ok: answered 2xx; requests: HTTP requests made; rps: requests per second). -v prints
 * each status. Exit 0 when every job succeeded, 1 when one failed (the first reason on
 * stderr), 2 for a bad command line.
 *
 * Styles, each the C form of the lecture's Python:
 *   callbacks  sq_fetch(url, cb), c at a time (Tornado's AsyncHTTPClient.fetch(url, cb))
 *   hell       a job of three requests — A (the URL), B (the URL with ?step=2&prev=<A's
 *              status>), C (?step=3&prev=<B's status>&len=<B's body length>) — written as
 *              nested callbacks; n jobs, c at a time
 *   promises   the same job as a flat chain of promises; the n jobs as sq_promise_all
 *              (the client's pool keeps c connections: aiohttp's connector limit)
 *   fsm        the same job as a state machine: a struct, a state, one step function —
 *              what a coroutine is underneath
 *   threads    c POSIX threads, each a blocking keep-alive HTTP/1.1 client on a plain
 *              socket (ThreadPoolExecutor + requests)
 *   processes  c forked workers doing the same, results back over a pipe
 *              (ProcessPoolExecutor)
 *   queue      n fetches put their results on an sq_queue; one consumer takes them; every
 *              request within --timeout (aiohttp's ClientTimeout(total=) and asyncio.Queue)
 *
 * --timeout (30 s) is the client's total timeout of a request in the loop styles, and the
 * socket's SO_RCVTIMEO/SO_SNDTIMEO (connect, each read, each write) in threads and
 * processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <squall.h>

#define MAX_N 10000000u
#define MAX_C 10000u
#define URL_MAX 2048

/* A non-2xx answer ends a job as an error, as Tornado's response.error has it. */
#define EHTTP UV_EPROTO

typedef struct app app_t;

/* What every style counts: jobs that succeeded or failed, HTTP requests made, and the
 * first failure's reason (for stderr). */
struct app {
    const char *style;
    const char *url;
    unsigned n, c;
    uint64_t timeout_ms;
    bool verbose;
    unsigned ok, errors;
    uint64_t requests;
    char first_err[256];
    /* the loop styles */
    uv_loop_t loop;
    sq_client_t *client;
    unsigned started, finished, in_flight;
    void (*start_job)(app_t *app, unsigned i);
    bool filling;
    struct promise_job *promise_jobs;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool ok_status(int s)
{
    return s >= 200 && s < 300;
}

/* Counts one ended job. status: the last HTTP status, or a negative error (why: its words;
 * NULL: sq_strerror). */
static void record(app_t *app, unsigned i, int status, const char *why)
{
    bool good = ok_status(status);
    if (good)
        app->ok++;
    else
        app->errors++;
    char reason[160];
    if (status < 0)
        snprintf(reason, sizeof(reason), "%s", why != NULL ? why : sq_strerror(status));
    else
        snprintf(reason, sizeof(reason), "HTTP %d", status);
    if (!good && app->first_err[0] == '\0')
        snprintf(app->first_err, sizeof(app->first_err), "%s", reason);
    if (app->verbose)
        printf("%u %s\n", i, status >= 0 ? reason + 5 : reason);
}

/* url + "?step=S&prev=P[&len=L]" (or '&' when url has a query already). */
static void step_url(char *out, size_t cap, const char *url, int step, int prev, long len)
{
    const char *sep = strchr(url, '?') != NULL ? "&" : "?";
    if (len < 0)
        snprintf(out, cap, "%s%sstep=%d&prev=%d", url, sep, step, prev);
    else
        snprintf(out, cap, "%s%sstep=%d&prev=%d&len=%ld", url, sep, step, prev, len);
}

/* ---- the loop styles: a window of c jobs ------------------------------------------- */

static void client_closed(sq_client_t *client, void *data)
{
    (void)client;
    ((app_t *)data)->client = NULL;
}

/* Starts jobs until c are in flight or n were started. */
static void fill_window(app_t *app)
{
    if (app->filling) /* a job that failed at once, from inside this loop */
        return;
    app->filling = true;
    while (app->in_flight < app->c && app->started < app->n) {
        app->in_flight++;
        app->start_job(app, app->started++);
    }
    app->filling = false;
}

/* A job of the window ended: the next one starts; after the last, the client closes. */
static void job_done(app_t *app, unsigned i, int status, const char *why)
{
    record(app, i, status, why);
    app->in_flight--;
    app->finished++;
    fill_window(app);
    if (app->finished == app->n && app->client != NULL)
        sq_client_close(app->client, client_closed, app);
}

/* Starts a GET of url with cb(data); a refusal at once is that job's error. Returns 0 or
 * the error. */
static int get(app_t *app, const char *url, sq_fetch_cb cb, void *data)
{
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = url;
    app->requests++;
    return sq_fetch(app->client, &req, cb, data, NULL);
}

/* -- callbacks: Tornado's fetch(url, handle_response) -- */

static void handle_response(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    app_t *app = data;
    unsigned i = app->finished; /* the order they end in */
    job_done(app, i, status < 0 ? status : sq_response_status(res), NULL);
}

static void callbacks_start(app_t *app, unsigned i)
{
    int rc = get(app, app->url, handle_response, app);
    if (rc != 0)
        job_done(app, i, rc, NULL);
}

/* -- hell: the job as nested callbacks (docs/styles.md shows this part) -- */

/* hell:begin */
typedef struct hell_job {
    app_t *app;
    unsigned i;
    char url[URL_MAX];
} hell_job_t;

static void hell_end(hell_job_t *job, int status)
{
    job_done(job->app, job->i, status, NULL);
    free(job);
}

static void hell_c_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    hell_job_t *job = data;
    if (status < 0) { /* C failed */
        hell_end(job, status);
        return;
    }
    hell_end(job, sq_response_status(res)); /* the job's result */
}

static void hell_b_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    hell_job_t *job = data;
    if (status < 0) { /* B failed */
        hell_end(job, status);
        return;
    }
    if (!ok_status(sq_response_status(res))) { /* B answered an error */
        hell_end(job, sq_response_status(res));
        return;
    }
    size_t len;
    sq_response_body(res, &len);
    step_url(job->url, sizeof(job->url), job->app->url, 3, sq_response_status(res), (long)len);
    int rc = get(job->app, job->url, hell_c_done, job);
    if (rc != 0) /* C not started */
        hell_end(job, rc);
}

static void hell_a_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    hell_job_t *job = data;
    if (status < 0) { /* A failed */
        hell_end(job, status);
        return;
    }
    if (!ok_status(sq_response_status(res))) { /* A answered an error */
        hell_end(job, sq_response_status(res));
        return;
    }
    step_url(job->url, sizeof(job->url), job->app->url, 2, sq_response_status(res), -1);
    int rc = get(job->app, job->url, hell_b_done, job);
    if (rc != 0) /* B not started */
        hell_end(job, rc);
}

static void hell_start(app_t *app, unsigned i)
{
    hell_job_t *job = malloc(sizeof(*job));
    if (job == NULL) {
        job_done(app, i, UV_ENOMEM, NULL);
        return;
    }
    job->app = app;
    job->i = i;
    int rc = get(app, app->url, hell_a_done, job);
    if (rc != 0) /* A not started */
        hell_end(job, rc);
}
/* hell:end */

/* -- fsm: the job as a state machine (docs/styles.md shows this part) -- */

/* fsm:begin */
typedef enum { FETCH_A, FETCH_B, FETCH_C } fsm_state_t;

typedef struct fsm_job {
    app_t *app;
    unsigned i;
    fsm_state_t state; /* which request is out: where the coroutine is suspended */
    char url[URL_MAX]; /* its locals */
} fsm_job_t;

/* One step: the request of `state` ended with (status, res); start the next or finish. */
static void fsm_step(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    fsm_job_t *job = data;
    int http = status < 0 ? status : sq_response_status(res);
    if (status == 0 && ok_status(http) && job->state != FETCH_C) {
        size_t len;
        sq_response_body(res, &len);
        if (job->state == FETCH_A)
            step_url(job->url, sizeof(job->url), job->app->url, 2, http, -1);
        else
            step_url(job->url, sizeof(job->url), job->app->url, 3, http, (long)len);
        job->state++;
        http = get(job->app, job->url, fsm_step, job);
        if (http == 0)
            return; /* suspended until the next request ends */
    }
    job_done(job->app, job->i, http, NULL); /* C's answer, or the first error */
    free(job);
}

static void fsm_start(app_t *app, unsigned i)
{
    fsm_job_t *job = malloc(sizeof(*job));
    if (job == NULL) {
        job_done(app, i, UV_ENOMEM, NULL);
        return;
    }
    *job = (fsm_job_t){.app = app, .i = i, .state = FETCH_A};
    int rc = get(app, app->url, fsm_step, job);
    if (rc != 0) {
        job_done(app, i, rc, NULL);
        free(job);
    }
}
/* fsm:end */

/* -- promises: the job as a flat chain, the n jobs as sq_promise_all -- */

/* promises:begin */
typedef struct promise_job {
    app_t *app;
    int step;        /* the request made last: 1 (A), 2 (B), 3 (C) */
    int result;      /* C's status, or the first error */
    bool http_error; /* result is an answer that was not 2xx */
    char url[URL_MAX];
} promise_job_t;

/* The job's next request (A, B or C): `next` settles as its fetch does. */
static void then_get(promise_job_t *job, sq_promise_t *next)
{
    sq_promise_t *p;
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = job->url;
    job->step++;
    job->app->requests++;
    int rc = sq_fetch_promise(job->app->client, &req, &p);
    if (rc != 0) {
        sq_promise_reject(next, rc, NULL, NULL);
        return;
    }
    sq_promise_follow(next, p);
    sq_promise_release(p);
}

/* A's answer -> B, B's answer -> C, C's answer -> the job's result. */
static void answered(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    promise_job_t *job = data;
    job->result = sq_response_status(value);
    if (!ok_status(job->result)) {
        job->http_error = true;
        sq_promise_reject(next, EHTTP, NULL, NULL);
        return;
    }
    if (job->step == 3) {
        sq_promise_resolve(next, job, NULL);
        return;
    }
    size_t len;
    sq_response_body(value, &len);
    step_url(job->url, sizeof(job->url), job->app->url, job->step + 1, job->result,
             job->step == 2 ? (long)len : -1);
    then_get(job, next);
}

/* Any step's error, once, at the end of the chain; the job still fulfils (as
 * asyncio.gather(..., return_exceptions=True)), so that all waits for every job. */
static void failed(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    promise_job_t *job = data;
    if (!job->http_error) /* an answer that was not 2xx keeps its status */
        job->result = status;
    sq_promise_resolve(next, job, NULL);
}

/* A -> B -> C -> the job's result; *out: the chain's end. */
static int promise_job(promise_job_t *job, sq_promise_t **out)
{
    sq_promise_t *a, *b, *c, *result;
    snprintf(job->url, sizeof(job->url), "%s", job->app->url);
    sq_promise_create(&a, &job->app->loop);
    then_get(job, a);
    sq_promise_then(&b, a, answered, job);
    sq_promise_then(&c, b, answered, job);
    sq_promise_then(&result, c, answered, job);
    int rc = sq_promise_catch(out, result, failed, job);
    sq_promise_release(a);
    sq_promise_release(b);
    sq_promise_release(c);
    sq_promise_release(result);
    return rc;
}
/* promises:end */

static void all_done(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    app_t *app = data;
    for (unsigned i = 0; i < app->n; i++) /* the values are the jobs, in order */
        record(app, i, status < 0 ? status : app->promise_jobs[i].result, NULL);
    sq_client_close(app->client, client_closed, app);
}

static int run_promises(app_t *app)
{
    promise_job_t *jobs = calloc(app->n, sizeof(*jobs));
    app->promise_jobs = jobs;
    sq_promise_t **ends = calloc(app->n, sizeof(*ends));
    sq_promise_t *all = NULL;
    int rc = jobs != NULL && ends != NULL ? 0 : UV_ENOMEM;
    for (unsigned i = 0; rc == 0 && i < app->n; i++) {
        jobs[i] = (promise_job_t){.app = app, .result = UV_ECANCELED};
        rc = promise_job(&jobs[i], &ends[i]);
    }
    if (rc == 0)
        rc = sq_promise_all(&all, ends, app->n);
    if (rc == 0)
        rc = sq_promise_await(all, all_done, app);
    for (unsigned i = 0; ends != NULL && i < app->n; i++)
        sq_promise_release(ends[i]);
    if (rc == 0)
        uv_run(&app->loop, UV_RUN_DEFAULT);
    sq_promise_release(all);
    uv_run(&app->loop, UV_RUN_DEFAULT); /* released promises give their memory back */
    free(ends);
    free(jobs);
    return rc;
}

/* -- queue: fetches put their results on a queue; one consumer takes them -- */

typedef struct result {
    unsigned i;
    int status;
} result_t;

typedef struct queue_fetch {
    app_t *app;
    sq_queue_t *q;
    unsigned i;
} queue_fetch_t;

static void free_result(void *item, void *data)
{
    free(item);
}

static void put_done(sq_queue_t *q, int status, void *item, void *data)
{
    if (status != 0)
        free(item); /* the queue is gone: the result was not wanted any more */
}

/* A producer: `await queue.put((num, await result.json()))`. */
static void produced(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    queue_fetch_t *qf = data;
    result_t *r = malloc(sizeof(*r));
    if (r != NULL) {
        *r = (result_t){.i = qf->i, .status = status < 0 ? status : sq_response_status(res)};
        if (sq_queue_put(qf->q, r, put_done, NULL, NULL) != 0)
            free(r);
    }
    free(qf);
}

/* The consumer: `num, data = await queue.get()`. */
static void consumed(sq_queue_t *q, int status, void *item, void *data)
{
    app_t *app = data;
    if (status < 0)
        return;
    result_t *r = item;
    record(app, r->i, r->status, NULL);
    free(r);
    sq_queue_task_done(q);
    if (++app->finished < app->n) {
        sq_queue_get(q, consumed, app, NULL);
        return;
    }
    sq_queue_destroy(q, NULL, NULL);
    sq_client_close(app->client, client_closed, app);
}

static int run_queue(app_t *app)
{
    sq_queue_t *q;
    int rc = sq_queue_create(&q, &app->loop, app->c, free_result, NULL);
    if (rc != 0)
        return rc;
    sq_queue_get(q, consumed, app, NULL);
    for (unsigned i = 0; i < app->n; i++) {
        queue_fetch_t *qf = malloc(sizeof(*qf));
        if (qf == NULL)
            return UV_ENOMEM;
        *qf = (queue_fetch_t){.app = app, .q = q, .i = i};
        rc = get(app, app->url, produced, qf);
        if (rc != 0) { /* its result is the error, on the queue all the same */
            result_t *r = malloc(sizeof(*r));
            free(qf);
            if (r == NULL)
                return UV_ENOMEM;
            *r = (result_t){.i = i, .status = rc};
            if (sq_queue_put(q, r, put_done, NULL, NULL) != 0)
                free(r);
        }
    }
    uv_run(&app->loop, UV_RUN_DEFAULT);
    return 0;
}

/* Runs a loop style. Returns 0, or an error from setting up. */
static int run_loop_style(app_t *app)
{
    int rc = uv_loop_init(&app->loop);
    if (rc != 0)
        return rc;
    sq_client_opts_t opts;
    sq_client_opts_init(&opts);
    opts.max_conns_per_host = app->c;
    opts.max_queued = app->n * 3 + 16;
    opts.timeout_ms = app->timeout_ms;
    opts.connect_timeout_ms = app->timeout_ms;
    rc = sq_client_new(&app->client, &app->loop, &opts);
    if (rc != 0)
        goto out_loop;
    if (strcmp(app->style, "promises") == 0) {
        rc = run_promises(app);
    } else if (strcmp(app->style, "queue") == 0) {
        rc = run_queue(app);
    } else {
        if (strcmp(app->style, "callbacks") == 0)
            app->start_job = callbacks_start;
        else if (strcmp(app->style, "hell") == 0)
            app->start_job = hell_start;
        else
            app->start_job = fsm_start;
        fill_window(app);
        uv_run(&app->loop, UV_RUN_DEFAULT);
    }
    if (app->client != NULL) /* set-up failed half-way */
        sq_client_close(app->client, client_closed, app);
    uv_run(&app->loop, UV_RUN_DEFAULT);
out_loop:
    uv_loop_close(&app->loop);
    return rc;
}

/* ---- threads and processes: a blocking HTTP/1.1 client on a plain socket -------------- */

typedef struct target {
    char host[256];
    char port[8];
    char hostport[300]; /* the Host header */
    const char *prefix; /* "/" when the URL has no path ("http://h?q") */
    const char *path;   /* the rest of the URL after host[:port]: "/p?q", "?q", "" */
    struct addrinfo *ai;
} target_t;

/* http://host[:port][/path]. Returns 0 or -1. */
static int parse_url(const char *url, target_t *t)
{
    if (strncmp(url, "http://", 7) != 0 || strchr(url, '#') != NULL)
        return -1;
    const char *h = url + 7, *end = h + strcspn(h, "/?");
    const char *hend = end, *port = "80", *after = h; /* the port's ':' is after `after` */
    char portbuf[8];
    if (*h == '[') { /* an IPv6 address */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL)
            return -1;
        hend = after = rb + 1;
    }
    const char *colon = memchr(after, ':', (size_t)(end - after));
    if (colon != NULL) {
        size_t pl = (size_t)(end - colon - 1);
        if (pl == 0 || pl >= sizeof(portbuf))
            return -1;
        memcpy(portbuf, colon + 1, pl);
        portbuf[pl] = '\0';
        port = portbuf;
        hend = colon;
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0 || hl >= sizeof(t->host))
        return -1;
    if (*h == '[') {
        memcpy(t->host, h + 1, hl - 2);
        t->host[hl - 2] = '\0';
    } else {
        memcpy(t->host, h, hl);
        t->host[hl] = '\0';
    }
    snprintf(t->port, sizeof(t->port), "%s", port);
    snprintf(t->hostport, sizeof(t->hostport), "%.*s", (int)(end - h), h);
    t->path = end;
    t->prefix = *end == '/' ? "" : "/";
    return 0;
}

typedef struct conn {
    int fd;
    char buf[16384];
    size_t off, len;
} conn_t;

static void conn_close(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->off = c->len = 0;
}

static int conn_open(conn_t *c, const target_t *t, uint64_t timeout_ms)
{
    int err = ECONNREFUSED;
    for (const struct addrinfo *ai = t->ai; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                             .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* connect's too */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            c->fd = fd;
            c->off = c->len = 0;
            return 0;
        }
        err = errno == EINPROGRESS ? ETIMEDOUT : errno;
        close(fd);
    }
    return -err;
}

/* One byte of the response; -errno, or -ECONNRESET at EOF. */
static int conn_byte(conn_t *c)
{
    if (c->off == c->len) {
        ssize_t r;
        do
            r = read(c->fd, c->buf, sizeof(c->buf));
        while (r < 0 && errno == EINTR);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        c->off = 0;
        c->len = (size_t)r;
    }
    return (unsigned char)c->buf[c->off++];
}

/* A line ending in CRLF (or LF) into line (cut at cap - 1). Returns its length or -errno. */
static int conn_line(conn_t *c, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        int b = conn_byte(c);
        if (b < 0)
            return b;
        if (b == '\n')
            break;
        if (n + 1 < cap)
            line[n++] = (char)b;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return (int)n;
}

/* Skips len bytes of body. */
static int conn_skip(conn_t *c, uint64_t len)
{
    while (len > 0) {
        if (c->off == c->len) {
            int b = conn_byte(c);
            if (b < 0)
                return b;
            len--;
            continue;
        }
        size_t k = c->len - c->off < len ? c->len - c->off : (size_t)len;
        c->off += k;
        len -= k;
    }
    return 0;
}

/* GET on the connection: the status (100..599), or -errno (-EPROTO: not HTTP/1.x). *keep:
 * the connection can take the next request. *got_any: some of the response came. */
static int blocking_get(conn_t *c, const target_t *t, bool *keep, bool *got_any)
{
    char req[URL_MAX + 400];
    int len = snprintf(req, sizeof(req),
                       "GET %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: squall-fetch\r\n\r\n",
                       t->prefix, t->path, t->hostport);
    *keep = false;
    *got_any = false;
    for (int off = 0; off < len;) {
        ssize_t w = send(c->fd, req + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        off += (int)w;
    }
    char line[8192];
    int r = conn_line(c, line, sizeof(line));
    if (r < 0)
        return r;
    *got_any = true;
    int minor, status;
    if (sscanf(line, "HTTP/1.%1d %3d", &minor, &status) != 2 || status < 100 || status > 599)
        return -EPROTO;
    bool chunked = false, close_after = minor == 0;
    int64_t clen = -1;
    while ((r = conn_line(c, line, sizeof(line))) > 0) { /* RFC 9112 §6: the framing */
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0)
            chunked = strcasestr(line + 18, "chunked") != NULL;
        else if (strncasecmp(line, "connection:", 11) == 0)
            close_after = strcasestr(line + 11, "close") != NULL ||
                          (minor == 0 && strcasestr(line + 11, "keep-alive") == NULL);
    }
    if (r < 0)
        return r;
    if (status == 204 || status == 304 || status < 200) {
        clen = 0;
    } else if (chunked) { /* RFC 9112 §7.1 */
        for (;;) {
            if ((r = conn_line(c, line, sizeof(line))) < 0)
                return r;
            char *end;
            unsigned long long sz = strtoull(line, &end, 16);
            if (end == line)
                return -EPROTO;
            if (sz == 0)
                break;
            if ((r = conn_skip(c, sz)) < 0 || (r = conn_line(c, line, sizeof(line))) < 0)
                return r;
        }
        while ((r = conn_line(c, line, sizeof(line))) > 0) /* trailers */
            ;
        if (r < 0)
            return r;
        clen = 0;
    } else if (clen < 0) { /* ended by the close */
        while ((r = conn_byte(c)) >= 0)
            ;
        *keep = false;
        return status;
    } else if ((r = conn_skip(c, (uint64_t)clen)) < 0) {
        return r;
    }
    *keep = !close_after;
    return status;
}

/* One request, on a kept connection or a new one; a kept connection the server had closed
 * (nothing came back) is replaced once, as a pooled client does. */
static int worker_get(conn_t *c, const target_t *t, const app_t *app)
{
    for (int attempt = 0;; attempt++) {
        bool reused = c->fd >= 0, keep, got_any;
        if (!reused) {
            int rc = conn_open(c, t, app->timeout_ms);
            if (rc < 0)
                return rc;
        }
        int st = blocking_get(c, t, &keep, &got_any);
        if (st < 0 || !keep)
            conn_close(c);
        if (st < 0 && reused && !got_any && attempt == 0)
            continue;
        return st;
    }
}

typedef struct shared {
    app_t *app;
    target_t *t;
    pthread_mutex_t lock;
    unsigned next; /* the next request to make */
    int *results;  /* per request */
} shared_t;

static void *thread_main(void *arg)
{
    shared_t *s = arg;
    conn_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = -1;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        unsigned i = s->next < s->app->n ? s->next++ : UINT_MAX;
        pthread_mutex_unlock(&s->lock);
        if (i == UINT_MAX)
            break;
        s->results[i] = worker_get(c, s->t, s->app);
    }
    conn_close(c);
    free(c);
    return NULL;
}

/* A worker's result: a status, or -errno, which is libuv's code on Unix. */
static void record_errno(app_t *app, unsigned i, int st)
{
    record(app, i, st, NULL);
}

static int resolve(target_t *t)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    return getaddrinfo(t->host, t->port, &hints, &t->ai);
}

static int run_threads(app_t *app, target_t *t)
{
    shared_t s = {.app = app, .t = t};
    s.results = calloc(app->n, sizeof(*s.results));
    pthread_t *th = calloc(app->c, sizeof(*th));
    if (s.results == NULL || th == NULL) {
        free(s.results);
        free(th);
        return UV_ENOMEM;
    }
    pthread_mutex_init(&s.lock, NULL);
    unsigned made = 0, want = app->c < app->n ? app->c : app->n;
    for (; made < want; made++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024); /* blocking_get's buffers fit */
        int rc = pthread_create(&th[made], &attr, thread_main, &s);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
    }
    if (made == 0) /* none at all: the request count is still made, by this thread */
        thread_main(&s);
    for (unsigned i = 0; i < made; i++)
        pthread_join(th[i], NULL);
    app->requests = app->n;
    for (unsigned i = 0; i < app->n; i++)
        record_errno(app, i, s.results[i]);
    pthread_mutex_destroy(&s.lock);
    free(s.results);
    free(th);
    return 0;
}

/* A worker process's result, written whole (smaller than PIPE_BUF: atomic). */
typedef struct wire_result {
    uint32_t i;
    int32_t status;
} wire_result_t;

static int run_processes(app_t *app, target_t *t)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return uv_translate_sys_error(errno);
    pid_t *pids = calloc(app->c, sizeof(*pids));
    char *seen = calloc(app->n, 1);
    if (pids == NULL || seen == NULL) {
        free(pids);
        free(seen);
        close(fds[0]);
        close(fds[1]);
        return UV_ENOMEM;
    }
    fflush(stdout);
    unsigned made = 0, want = app->c < app->n ? app->c : app->n;
    for (; made < want; made++) {
        pid_t pid = fork();
        if (pid < 0)
            break;
        if (pid == 0) { /* worker w: requests w, w + c, w + 2c, ... */
            close(fds[0]);
            conn_t c = {.fd = -1};
            for (unsigned i = made; i < app->n; i += want) {
                wire_result_t r = {.i = i, .status = worker_get(&c, t, app)};
                if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
                    _exit(1);
            }
            conn_close(&c);
            _exit(0);
        }
        pids[made] = pid;
    }
    close(fds[1]);
    unsigned got = 0;
    wire_result_t r;
    ssize_t k;
    while ((k = read(fds[0], &r, sizeof(r))) == (ssize_t)sizeof(r) || (k < 0 && errno == EINTR)) {
        if (k < 0 || r.i >= app->n || seen[r.i])
            continue;
        seen[r.i] = 1;
        got++;
        record_errno(app, r.i, r.status);
    }
    close(fds[0]);
    for (unsigned i = 0; i < made; i++)
        waitpid(pids[i], NULL, 0);
    for (unsigned i = 0; i < app->n; i++) /* a worker that died, or was never made */
        if (!seen[i])
            record(app, i, UV_ESRCH, "no worker process made the request");
    app->requests = app->n;
    free(pids);
    free(seen);
    return 0;
}

/* ---- the command line ---------------------------------------------------------------- */

static const char *const styles[] = {"callbacks", "hell",      "promises", "fsm",
                                     "threads",   "processes", "queue"};

static void usage(FILE *f)
{
    fprintf(f, "usage: fetch --style callbacks|hell|promises|fsm|threads|processes|queue\n"
               "             [-n REQUESTS (500)] [-c IN_FLIGHT (100)] [--timeout MS (30000)]\n"
               "             [-v] [--help] URL\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fetch: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    usage(stderr);
    return 2;
}

/* A flag's number: decimal digits only, 1..max. Returns 0 or -1. */
static int parse_count(const char *s, unsigned long long max, unsigned long long *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    app_t app = {.n = 500, .c = 100, .timeout_ms = 30000};
    static const struct option longopts[] = {
        {"style", required_argument, NULL, 's'},
        {"requests", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch, li = -1;
    unsigned long long v = 0;
    opterr = 0;
    while ((li = -1, ch = getopt_long(argc, argv, ":n:c:v", longopts, &li)) != -1) {
        switch (ch) {
        case 's':
            app.style = optarg;
            break;
        case 'n':
            if (parse_count(optarg, MAX_N, &v) != 0)
                return bad_usage("-n must be 1..%u, not '%s'", MAX_N, optarg);
            app.n = (unsigned)v;
            break;
        case 'c':
            if (parse_count(optarg, MAX_C, &v) != 0)
                return bad_usage("-c must be 1..%u, not '%s'", MAX_C, optarg);
            app.c = (unsigned)v;
            break;
        case 't':
            if (parse_count(optarg, UINT64_MAX / 2, &v) != 0)
                return bad_usage("--timeout must be a positive number of ms, not '%s'", optarg);
            app.timeout_ms = v;
            break;
        case 'v':
            app.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return bad_usage("%s needs a value", argv[optind - 1]);
        default:
            if (optopt != 0)
                return bad_usage("unknown option '-%c'", optopt);
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (app.style == NULL)
        return bad_usage("--style is required");
    bool known = false;
    for (size_t i = 0; i < sizeof(styles) / sizeof(styles[0]); i++)
        known = known || strcmp(app.style, styles[i]) == 0;
    if (!known)
        return bad_usage("unknown style '%s'", app.style);
    if (optind == argc)
        return bad_usage("a URL is required");
    if (optind + 1 < argc)
        return bad_usage("unexpected argument '%s'", argv[optind + 1]);
    app.url = argv[optind];
    target_t t = {0};
    if (strlen(app.url) > URL_MAX - 64 || parse_url(app.url, &t) != 0)
        return bad_usage("not an http://host[:port][/path] URL: '%s'", app.url);

    uint64_t start = now_ns();
    int rc;
    bool blocking = strcmp(app.style, "threads") == 0 || strcmp(app.style, "processes") == 0;
    if (blocking) {
        int gai = resolve(&t);
        if (gai != 0) {
            fprintf(stderr, "fetch: %s: %s\n", t.host, gai_strerror(gai));
            return 1;
        }
        start = now_ns();
        rc = app.style[0] == 't' ? run_threads(&app, &t) : run_processes(&app, &t);
        freeaddrinfo(t.ai);
    } else {
        rc = run_loop_style(&app);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    if (rc != 0) {
        fprintf(stderr, "fetch: %s\n", sq_strerror(rc));
        return 1;
    }
    printf("fetch: style=%s n=%u c=%u requests=%llu ok=%u errors=%u seconds=%.3f rps=%.0f\n",
           app.style, app.n, app.c, (unsigned long long)app.requests, app.ok, app.errors, secs,
           secs > 0 ? (double)app.requests / secs : 0.0);
    fflush(stdout);
    if (app.errors > 0) {
        fprintf(stderr, "fetch: %u of %u %s failed (first: %s)\n", app.errors, app.n,
                strcmp(app.style, "hell") == 0 || strcmp(app.style, "promises") == 0 ||
                        strcmp(app.style, "fsm") == 0
                    ? "jobs"
                    : "requests",
                app.first_err);
        return 1;
    }
    return 0;
}
