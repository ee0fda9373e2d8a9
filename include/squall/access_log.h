/* squall — an access log: one line per response, in Common or Combined Log Format or as
 * JSON lines, to a file or standard output, written without blocking the loop.
 *
 *     sq_access_log_opts_t o;
 *     sq_access_log_opts_init(&o);
 *     o.path = "/var/log/hello/access.log";   // or "-": standard output
 *     sq_access_log_t *log;
 *     sq_app_access_log(app, &o, &log);       // the app owns it
 *     ... on logrotate's SIGHUP (o.reopen_on_sighup) or at any time:
 *     sq_access_log_reopen(log);
 *
 * An after hook (router.h) formats each line on the loop thread that answered, when the
 * response's head is written — so for every response, squall's own 404/408 and those
 * whose client left included — and appends it to a bounded buffer. A thread of the log's
 * own writes the buffer out in batches: at once when it is half full, else every
 * flush_ms. When the file takes bytes more slowly than the server answers, the buffer
 * fills and further lines are dropped and counted (sq_access_log_stats), never waited
 * for: the loop is never held by the disk.
 *
 * Fields: the peer's address (no port; "unix" for a Unix socket, "-" once the client has
 * gone), the time the line was made (UTC), the request line, the status, the body bytes
 * sent (0 for HEAD, 204, 304 and a client gone; "-" (null in JSON) for a streamed body,
 * whose length is not known when its head is written), and for Combined the Referer and
 * User-Agent. JSON lines add the request id (sq_req_id) and the time from the request's
 * head to its response's head in seconds. Bytes that could end a field or a line are
 * escaped (\" \\ \xHH in the text formats, JSON escapes in JSON). Long fields are cut,
 * escapes counted: the target at 4096 bytes, Referer and User-Agent at 1024 each, the
 * method at 64; a line is at most 8 KiB.
 */
#ifndef SQUALL_ACCESS_LOG_H
#define SQUALL_ACCESS_LOG_H

#include "common.h"
#include "router.h"

typedef struct sq_access_log_s sq_access_log_t;

typedef enum sq_access_log_format {
    SQ_ACCESS_LOG_COMBINED = 0, /* CLF + "referer" "user-agent" (Apache's, nginx's) */
    SQ_ACCESS_LOG_COMMON,       /* host ident user [time] "request" status bytes */
    SQ_ACCESS_LOG_JSON,         /* one JSON object per line */
} sq_access_log_format_t;

/* Fill with sq_access_log_opts_init (squall's rule, common.h). */
typedef struct sq_access_log_opts {
    size_t size;
    const char *path;           /* a file, opened O_APPEND and created 0644; "-" or NULL
                                   (default): standard output */
    sq_access_log_format_t format; /* SQ_ACCESS_LOG_COMBINED (default) */
    int reopen_on_sighup;       /* 1: SIGHUP reopens the file (logrotate's signal). It is
                                   then handled by libuv in this process (no longer
                                   ending it). 0 (default): only sq_access_log_reopen */
    size_t buffer_bytes;        /* lines waiting for the writer; 1 MiB (default), at
                                   least 4 KiB. Past it, lines are dropped and counted */
    uint64_t flush_ms;          /* the longest a line waits to be written; 200 (default) */
} sq_access_log_opts_t;
SQ_EXTERN void sq_access_log_opts_init_sized(sq_access_log_opts_t *opts, size_t size);
static inline void sq_access_log_opts_init(sq_access_log_opts_t *opts)
{
    sq_access_log_opts_init_sized(opts, sizeof(*opts));
}

/* Opens the log and logs every response of app (an after hook: the app's own and its
 * sub-apps' routes, its 404s and 405s). The app owns the log: sq_app_destroy writes out
 * what is buffered, stops the writer thread and closes the file. *out (may be NULL) is
 * the log, for reopen and stats; borrowed, valid until the app is destroyed.
 * Returns 0; UV_EINVAL (app NULL, an unknown format, buffer_bytes under 4 KiB, flush_ms
 * 0); UV_ENOTSUP (opts from a newer header setting a field this library lacks);
 * UV_ENOMEM; or the error of open(2) (UV_ENOENT, UV_EACCES, ...) or of starting the
 * thread. On an error nothing was added. */
SQ_EXTERN int sq_app_access_log(sq_app_t *app, const sq_access_log_opts_t *opts,
                                sq_access_log_t **out);

/* Closes and opens the file again by its path (after logrotate moved it), once what is
 * buffered was written to the old one. Asynchronous and thread-safe: any thread may call
 * it (not a signal handler: use reopen_on_sighup). For standard output it does nothing.
 * Returns 0, or UV_EINVAL for NULL. A path that cannot be opened again is reported once
 * with sq_log (ERROR); lines are then dropped until a reopen works. */
SQ_EXTERN int sq_access_log_reopen(sq_access_log_t *log);

/* Counters since the log was opened. Grows by squall's rule (common.h). */
typedef struct sq_access_log_stats {
    size_t size;            /* bytes filled: set by sq_access_log_stats */
    uint64_t lines;         /* lines taken into the buffer */
    uint64_t dropped;       /* lines dropped: the buffer was full, or no file */
    uint64_t written_bytes; /* bytes the writer wrote */
    uint64_t write_errors;  /* failed writes (their bytes are lost) */
    uint64_t reopens;       /* files opened again */
} sq_access_log_stats_t;
SQ_EXTERN void sq_access_log_stats_sized(sq_access_log_t *log, sq_access_log_stats_t *out,
                                         size_t size);
/* A snapshot of the counters; thread-safe. */
static inline void sq_access_log_stats(sq_access_log_t *log, sq_access_log_stats_t *out)
{
    sq_access_log_stats_sized(log, out, sizeof(*out));
}

#endif
