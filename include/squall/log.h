/* squall — logging to stderr. The level is per process (set once at start-up, before
 * any loop runs); lines are written with one write(2) so threads do not interleave. */
#ifndef SQUALL_LOG_H
#define SQUALL_LOG_H

#include "common.h"

typedef enum { SQ_LOG_DEBUG, SQ_LOG_INFO, SQ_LOG_WARN, SQ_LOG_ERROR, SQ_LOG_OFF } sq_log_level_t;

SQ_EXTERN void sq_log_set_level(sq_log_level_t level);
SQ_EXTERN sq_log_level_t sq_log_level(void);
SQ_EXTERN void sq_log(sq_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Where lines go instead of stderr: sink(level, line, data) gets each line at or above the
 * level, without its newline ("GET /x: before hook 1 failed: ..."), on whatever thread
 * logged it (loops, the thread pool): it must be thread-safe, and must not call sq_log.
 * NULL: stderr again. Set it at start-up, before any loop runs, as the level. */
typedef void (*sq_log_sink_cb)(sq_log_level_t level, const char *line, void *data);
SQ_EXTERN void sq_log_set_sink(sq_log_sink_cb sink, void *data);

#endif
