/* hello's names for the calls of app.c (see hello.h). */
#include <stdarg.h>

#include <criterion/criterion.h>

#include "support/hello.h"

#define MAX_ARGS 32

const char *th_hello_path(void)
{
    return th_app_path("hello");
}

/* The NULL-terminated arguments after `arg`, into args (MAX_ARGS + 1 slots). */
static void collect(const char **args, const char *arg, va_list ap)
{
    int n = 0;
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, MAX_ARGS);
        args[n++] = a;
    }
    args[n] = NULL;
}

th_hello_t th_hello_start(const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect(args, arg, ap);
    va_end(ap);
    return th_app_startv("hello", false, args);
}

th_hello_t th_hello_start_logged(const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect(args, arg, ap);
    va_end(ap);
    return th_app_startv("hello", true, args);
}

char *th_hello_stderr(const th_hello_t *h)
{
    return th_app_stderr(h);
}

char *th_hello_wait_stderr(const th_hello_t *h, const char *needle, int timeout_ms)
{
    return th_app_wait_stderr(h, needle, timeout_ms);
}

void th_hello_stop(th_hello_t *h)
{
    th_app_stop(h);
}

void th_hello_run(th_hello_run_t *r, int timeout_ms, const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect(args, arg, ap);
    va_end(ap);
    th_app_runv(r, "hello", timeout_ms, args);
}

void th_hello_runv(th_hello_run_t *r, int timeout_ms, const char *const *argv)
{
    th_app_runv(r, "hello", timeout_ms, argv);
}

pid_t th_hello_spawn(const char *const *args, int out_fd, int err_fd)
{
    return th_app_spawn("hello", args, out_fd, err_fd);
}

int th_hello_wait(pid_t pid, int timeout_ms)
{
    return th_app_wait(pid, timeout_ms);
}
