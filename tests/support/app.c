/* squall's app binaries started, stopped and run to their end by tests (see app.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/app.h"
#include "support/harness.h"

#define MAX_ARGS 32

const char *th_app_path(const char *name)
{
    static char path[512];
    const char *d = getenv("SQUALL_BIN");
    snprintf(path, sizeof(path), "%s/%s", d && *d ? d : "build/bin", name);
    cr_assert_eq(access(path, X_OK), 0, "%s: not built (set SQUALL_BIN)", path);
    return path;
}

/* Forks argv[0] with argv; its stdout and stderr go to the write ends given (or stay the
 * test's own when -1). The child dies with the test process. */
static pid_t spawn(const char *const *argv, int out_fd, int err_fd)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (out_fd >= 0)
            dup2(out_fd, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

pid_t th_app_spawn(const char *name, const char *const *args, int out_fd, int err_fd)
{
    const char *argv[MAX_ARGS + 2] = {th_app_path(name)};
    int argc = 1;
    for (; args[argc - 1] != NULL; argc++) {
        cr_assert_lt(argc, MAX_ARGS);
        argv[argc] = args[argc - 1];
    }
    argv[argc] = NULL;
    return spawn(argv, out_fd, err_fd);
}

int th_app_wait(pid_t pid, int timeout_ms)
{
    int status = 0;
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && th_now_ms() < end)
        th_sleep_ms(5);
    if (w == pid)
        return status;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

th_app_t th_app_startv(const char *name, bool keep_err, const char *const *args)
{
    const char *argv[MAX_ARGS + 4] = {th_app_path(name), "--port", NULL};
    int argc = 3;
    for (int i = 0; args != NULL && args[i] != NULL; i++) {
        cr_assert_lt(argc, MAX_ARGS);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;

    for (int attempt = 0; attempt < 5; attempt++) {
        th_app_t a = {.port = th_free_port()};
        snprintf(a.name, sizeof(a.name), "%s", name);
        char port[16];
        snprintf(port, sizeof(port), "%d", a.port);
        argv[2] = port;
        int errfd = -1;
        if (keep_err) {
            snprintf(a.errpath, sizeof(a.errpath), "/tmp/squall-%.12s-err-XXXXXX", name);
            errfd = mkostemp(a.errpath, O_CLOEXEC);
            cr_assert_geq(errfd, 0, "mkostemp: %s", strerror(errno));
        }
        int out[2];
        cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
        a.pid = spawn(argv, out[1], errfd);
        close(out[1]);
        if (errfd >= 0)
            close(errfd);
        size_t n = 0;
        uint64_t end = th_now_ms() + 5000;
        while (n < sizeof(a.line) - 1 && strchr(a.line, '\n') == NULL) {
            uint64_t now = th_now_ms();
            struct pollfd p = {.fd = out[0], .events = POLLIN};
            if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
                break;
            ssize_t r = read(out[0], a.line + n, sizeof(a.line) - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            a.line[n] = '\0';
        }
        close(out[0]);
        if (strstr(a.line, "serving on") != NULL)
            return a;
        kill(a.pid, SIGKILL);
        waitpid(a.pid, NULL, 0);
        if (keep_err)
            unlink(a.errpath);
    }
    cr_assert_fail("%s did not start", name);
    return (th_app_t){0};
}

/* Collects the NULL-terminated arguments after `arg` into args (MAX_ARGS + 1 slots). */
static void collect_args(const char **args, const char *arg, va_list ap)
{
    int n = 0;
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, MAX_ARGS);
        args[n++] = a;
    }
    args[n] = NULL;
}

th_app_t th_app_start(const char *name, const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect_args(args, arg, ap);
    va_end(ap);
    return th_app_startv(name, false, args);
}

th_app_t th_app_start_logged(const char *name, const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect_args(args, arg, ap);
    va_end(ap);
    return th_app_startv(name, true, args);
}

char *th_app_stderr(const th_app_t *a)
{
    cr_assert_neq(a->errpath[0], '\0', "%s was not started with a logged start", a->name);
    FILE *f = fopen(a->errpath, "r");
    cr_assert_not_null(f, "%s: %s", a->errpath, strerror(errno));
    char *s = calloc(1, 65536);
    cr_assert_not_null(s);
    size_t n = fread(s, 1, 65535, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

char *th_app_wait_stderr(const th_app_t *a, const char *needle, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *s = th_app_stderr(a);
        if (strstr(s, needle) != NULL || th_now_ms() >= end)
            return s;
        free(s);
        th_sleep_ms(10);
    }
}

void th_app_stop(th_app_t *a)
{
    cr_assert_eq(kill(a->pid, SIGTERM), 0);
    int status = th_app_wait(a->pid, 8000);
    if (a->errpath[0] != '\0')
        unlink(a->errpath);
    cr_assert_neq(status, -1, "%s did not exit within 8 s of SIGTERM", a->name);
    cr_assert(WIFEXITED(status), "%s died of signal %d", a->name, WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "%s exited with %d", a->name, WEXITSTATUS(status));
}

void th_app_runv(th_app_run_t *r, const char *name, int timeout_ms, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    int out[2], err[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
    uint64_t t0 = th_now_ms(), end = t0 + (uint64_t)timeout_ms;
    pid_t pid = th_app_spawn(name, args, out[1], err[1]);
    close(out[1]);
    close(err[1]);

    struct pollfd p[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    char *buf[2] = {r->out, r->err};
    size_t len[2] = {0, 0};
    int open_fds = 2;
    while (open_fds > 0) {
        uint64_t now = th_now_ms();
        if (now >= end || poll(p, 2, (int)(end - now)) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || p[i].revents == 0)
                continue;
            char scratch[512];
            size_t room = sizeof(r->out) - 1 - len[i];
            ssize_t n = read(p[i].fd, room > 0 ? buf[i] + len[i] : scratch,
                             room > 0 ? room : sizeof(scratch));
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                open_fds--;
            } else if (room > 0) {
                len[i] += (size_t)n;
                buf[i][len[i]] = '\0';
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    uint64_t now = th_now_ms();
    int status = th_app_wait(pid, now < end ? (int)(end - now) : 0);
    r->ms = th_now_ms() - t0;
    r->code = -1;
    if (status == -1) {
        r->timed_out = true;
        r->signal = SIGKILL;
    } else if (WIFEXITED(status)) {
        r->code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r->signal = WTERMSIG(status);
    }
}

void th_app_run(th_app_run_t *r, const char *name, int timeout_ms, const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect_args(args, arg, ap);
    va_end(ap);
    th_app_runv(r, name, timeout_ms, args);
}

int th_count_lines(const char *s)
{
    int n = 0;
    for (const char *p = s; *p != '\0'; p++)
        if (*p == '\n' || p[1] == '\0')
            n++;
    return n;
}
