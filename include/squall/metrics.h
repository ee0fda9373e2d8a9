/* squall — Prometheus metrics: GET /metrics in the text exposition format 0.0.4.
 *
 *     sq_app_metrics(app, "/metrics", NULL);
 *
 * An after hook (router.h) counts every response of the app when its head is written —
 * squall's own 404/405/408 too — by route and status: the route's pattern with the
 * prefixes of the mounts on the way ("/api/v1/items/{id:int}"), never the raw path, so
 * the number of series stays bounded by the routes; a response no route took (404, 405,
 * a bad request) has route="". Its latency — from the request's head to its response's
 * head, so the start of a streamed body — goes into a histogram of the same labels.
 * Counting is a hash lookup and a few relaxed atomic additions; servers on several
 * threads (workers.h) sharing the app count into the same series.
 *
 * A scrape also reports, for the server that answers it (with workers, each worker's
 * server answers its own share of the scrapes: use processes, or one worker, to scrape
 * one whole process), its connections and WebSockets open, bytes in and out
 * (sq_server_stats_t), its blocking pool's queue (jobs waiting and running, work.h),
 * the loop's lag (max, mean and p99 of its watchdog's probes: only for a server with
 * opts.slow_callback_ms > 0, which makes the watchdog), and the process's resident
 * memory, CPU time and start time (Linux /proc; opts.process).
 *
 * Names (all squall_* but the process_* ones Prometheus's own clients use):
 *   squall_http_requests_total{route,status}            counter
 *   squall_http_request_duration_seconds{route,status}  histogram
 *   squall_connections_open, squall_websockets_open      gauge
 *   squall_connections_total, squall_received_bytes_total, squall_sent_bytes_total counter
 *   squall_work_queued_jobs, squall_work_running_jobs    gauge
 *   squall_loop_lag_seconds{stat="max|mean|p99"}         gauge
 *   squall_metrics_series_dropped_total                  counter (past max_series)
 *   process_resident_memory_bytes, process_cpu_seconds_total, process_start_time_seconds
 */
#ifndef SQUALL_METRICS_H
#define SQUALL_METRICS_H

#include "common.h"
#include "router.h"

#define SQ_METRICS_MAX_BUCKETS 32

/* Fill with sq_metrics_opts_init (squall's rule, common.h). */
typedef struct sq_metrics_opts {
    size_t size;
    const double *buckets;  /* the latency histogram's upper bounds in seconds, strictly
                               increasing, positive, at most SQ_METRICS_MAX_BUCKETS
                               (copied); NULL (default): 0.0001 0.00025 0.0005 0.001
                               0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 */
    unsigned nbuckets;      /* how many `buckets` holds */
    unsigned max_series;    /* (route, status) pairs kept; 1024 (default). Responses of
                               a pair past it are counted only in
                               squall_metrics_series_dropped_total */
    int process;            /* 1 (default): the process_* metrics; 0: leave them out */
    int reserved0;          /* 0. Fills what would be tail padding (common.h) */
} sq_metrics_opts_t;
SQ_EXTERN void sq_metrics_opts_init_sized(sq_metrics_opts_t *opts, size_t size);
static inline void sq_metrics_opts_init(sq_metrics_opts_t *opts)
{
    sq_metrics_opts_init_sized(opts, sizeof(*opts));
}

/* Counts app's responses (an after hook) and serves them at `path` (a route, GET and
 * HEAD, answered `text/plain; version=0.0.4; charset=utf-8`). The app owns what this
 * makes. Call it once per app. opts NULL: defaults. Returns 0; UV_EINVAL (app or path
 * NULL, buckets not increasing or positive, too many, or nbuckets 0 with buckets set,
 * max_series 0); SQ_EPATTERN (a bad path); UV_ENOTSUP (opts from a newer header with a
 * field set this library lacks); UV_ENOMEM. */
SQ_EXTERN int sq_app_metrics(sq_app_t *app, const char *path, const sq_metrics_opts_t *opts);

#endif
