/* squall — a loop-lag watchdog (asyncio's debug mode, Node's monitorEventLoopDelay).
 *
 *     sq_watchdog_opts_t o;
 *     sq_watchdog_opts_init(&o);
 *     o.slow_ms = 50;
 *     sq_watchdog_t *wd;
 *     sq_watchdog_create(&wd, loop, &o);
 *
 *     sq_watchdog_span_t span;                       // around any callback you run
 *     sq_watchdog_span_begin(wd, &span, "GET /items/{id}");
 *     handler(req, res, data);
 *     sq_watchdog_span_end(wd, &span);              // logged if it took > slow_ms
 *
 * Two measures. Lag: a repeating timer (unreferenced: it never keeps the loop alive) notes
 * how late each of its ticks fires; a tick is late exactly when something held the loop.
 * Max, mean and p99 of those lags are kept (p99 to within 1/8 of its value). Spans: the
 * time a named callback took, measured around it by the caller; one longer than slow_ms is
 * logged (sq_log, WARN) with its name and reported to on_slow. A stall the timer sees
 * with no slow span to blame is logged too, naming the last span that ended.
 *
 * All functions are for the loop's thread. No global state: one watchdog per loop.
 */
#ifndef SQUALL_WATCHDOG_H
#define SQUALL_WATCHDOG_H

#include "common.h"

typedef struct sq_watchdog_s sq_watchdog_t;

/* A slow callback or a stall: `name` is the span's (NULL for a stall nobody claimed; see
 * `last` then: the name of the span that ended last, or NULL), `blocked_us` how long the
 * loop was held. Both names are borrowed (they live as long as the watchdog). Runs on the
 * loop thread: for a slow span inside the sq_watchdog_span_end that measured it (the
 * caller asked for the measure), for a stall from the probe timer. */
typedef void (*sq_watchdog_slow_cb)(sq_watchdog_t *wd, const char *name, const char *last,
                                    uint64_t blocked_us, void *data);

/* Options; fill with sq_watchdog_opts_init(). The struct grows by squall's rule (common.h,
 * "Structs that grow"): `size` first, set by sq_watchdog_opts_init; fields missing from
 * an older header take their defaults. */
typedef struct sq_watchdog_opts {
    size_t size;                 /* sizeof the caller's struct: set by sq_watchdog_opts_init */
    uint64_t slow_ms;            /* spans and stalls longer than this are reported; 100 */
    uint64_t probe_ms;           /* lag probe period; 20. The probe runs while the loop
                                    is busy: once it finds the loop woke for nothing
                                    else, it parks until the loop next wakes, so an idle
                                    loop is not woken by it. The cost: a stall in the
                                    I/O callbacks that end a quiet period (a work-pool
                                    completion, a socket read) is not measured by the
                                    probe; only spans see it */
    int log;                     /* 1: report with sq_log at WARN (default); 0: only on_slow */
    sq_watchdog_slow_cb on_slow; /* may be NULL */
    void *data;                  /* for on_slow */
} sq_watchdog_opts_t;

/* What sq_watchdog_opts_init calls: fills the `size` bytes of opts with the defaults and
 * sets opts->size. Call sq_watchdog_opts_init. */
SQ_EXTERN void sq_watchdog_opts_init_sized(sq_watchdog_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_watchdog_opts_init(sq_watchdog_opts_t *opts)
{
    sq_watchdog_opts_init_sized(opts, sizeof(*opts));
}

/* Starts watching `loop` (as sq_watchdog_start does). opts is copied (NULL: defaults;
 * opts->data is borrowed, handed to on_slow). Returns 0, UV_EINVAL (probe_ms 0, or
 * opts->size 0: opts never initialised), UV_ENOTSUP (opts from a newer header setting a
 * field this library lacks) or UV_ENOMEM. */
SQ_EXTERN int sq_watchdog_create(sq_watchdog_t **wd, uv_loop_t *loop,
                                 const sq_watchdog_opts_t *opts);

/* Stops the lag probe (Node's histogram.disable()): while stopped, nothing is sampled and
 * no stall is reported; spans are still measured. Counters are kept. Returns 0, or
 * SQ_ECLOSED after sq_watchdog_destroy. */
SQ_EXTERN int sq_watchdog_stop(sq_watchdog_t *wd);
/* (Re)starts the lag probe. Measuring begins when the loop next turns (its next timer
 * phase, at once for a loop not yet run): what held the thread until then — a set-up
 * before uv_run, a stopped period — is not counted as lag. Counters are kept. A server
 * with opts.slow_callback_ms calls it at its first successful listen. Returns 0, or
 * SQ_ECLOSED after sq_watchdog_destroy. */
SQ_EXTERN int sq_watchdog_start(sq_watchdog_t *wd);

/* The watchdog is closed: runs once, on the loop thread, from the loop's close phase —
 * never from inside sq_watchdog_destroy. wd is freed when it returns. */
typedef void (*sq_watchdog_close_cb)(sq_watchdog_t *wd, void *data);

/* Stops watching; cb (may be NULL) runs from the loop's close phase, then wd is freed.
 * Returns 0, or SQ_ECLOSED when called twice. */
SQ_EXTERN int sq_watchdog_destroy(sq_watchdog_t *wd, sq_watchdog_close_cb cb, void *data);

/* A measured callback; caller memory (the stack is the usual place), no allocation.
 * Spans may nest. The fields are squall's, set by sq_watchdog_span_begin; the struct
 * grows by squall's rule (common.h): `size` first, set by sq_watchdog_span_begin. */
typedef struct sq_watchdog_span {
    size_t size;     /* bytes squall uses: set by sq_watchdog_span_begin */
    uint64_t start_ns;
    const char *name;
} sq_watchdog_span_t;

/* What sq_watchdog_span_begin calls, with sizeof the caller's span. */
SQ_EXTERN void sq_watchdog_span_begin_sized(sq_watchdog_t *wd, sq_watchdog_span_t *span,
                                            size_t size, const char *name);
/* Starts a span. `name` is borrowed: it must live as long as the watchdog (a route
 * pattern, a literal). wd may be NULL (then nothing is measured), so callers need no
 * branch. */
static inline void sq_watchdog_span_begin(sq_watchdog_t *wd, sq_watchdog_span_t *span,
                                          const char *name)
{
    sq_watchdog_span_begin_sized(wd, span, sizeof(*span), name);
}
/* Returns the span's duration in microseconds (0 when wd is NULL). */
SQ_EXTERN uint64_t sq_watchdog_span_end(sq_watchdog_t *wd, sq_watchdog_span_t *span);

/* The watchdog's counters. Grows by squall's rule (common.h): `size` first, set by
 * sq_watchdog_stats to the bytes filled. */
typedef struct sq_watchdog_stats {
    size_t size;              /* bytes filled: set by sq_watchdog_stats */
    uint64_t samples;         /* lag probes taken */
    uint64_t lag_max_us;
    uint64_t lag_mean_us;
    uint64_t lag_p99_us;
    uint64_t stalls;          /* probes later than slow_ms */
    uint64_t spans;           /* spans ended */
    uint64_t slow_spans;      /* spans longer than slow_ms */
    uint64_t span_max_us;
    uint64_t span_p99_us;
    const char *slowest_span; /* its name (borrowed: a span's name, which lives as long
                                 as the watchdog), NULL before the first span */
} sq_watchdog_stats_t;

/* What sq_watchdog_stats calls: fills the `size` bytes of out. Call sq_watchdog_stats. */
SQ_EXTERN void sq_watchdog_stats_sized(const sq_watchdog_t *wd, sq_watchdog_stats_t *out,
                                       size_t size);
/* Copies the counters into *out (a snapshot; out->size is set). */
static inline void sq_watchdog_stats(const sq_watchdog_t *wd, sq_watchdog_stats_t *out)
{
    sq_watchdog_stats_sized(wd, out, sizeof(*out));
}

#endif
