/* Logging to stderr, one write(2) per line. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

/* The only process-wide setting: read with relaxed atomics, so setting it is thread-safe. */
static _Atomic int log_level = SQ_LOG_WARN;

void sq_log_set_level(sq_log_level_t level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

sq_log_level_t sq_log_level(void)
{
    return (sq_log_level_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

static sq_log_sink_cb _Atomic log_sink;
static void *_Atomic log_sink_data;

void sq_log_set_sink(sq_log_sink_cb sink, void *data)
{
    atomic_store(&log_sink_data, data);
    atomic_store(&log_sink, sink);
}

void sq_log(sq_log_level_t level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed) ||
        level >= SQ_LOG_OFF)
        return;
    char line[1024];
    sq_log_sink_cb sink = atomic_load(&log_sink);
    int n = sink != NULL ? 0 : snprintf(line, sizeof(line), "squall %s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    if (sink != NULL) {
        line[len] = '\0';
        sink(level, line, atomic_load(&log_sink_data));
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
