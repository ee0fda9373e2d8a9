/* squall's app binaries (build/bin/hello, build/bin/chat, ...) as a user meets them, for
 * tests that drive the real program.
 *
 *     th_app_t a = th_app_start("chat", "--history", "5", NULL);  a free port, waits to serve
 *     th_request(a.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r);
 *     th_app_stop(&a);                                         SIGTERM; asserts exit 0
 *
 *     th_app_t a = th_app_start_logged("chat", NULL);           its stderr kept in a file
 *     char *err = th_app_wait_stderr(&a, "slow callback", 2000);
 *
 *     th_app_run_t r;
 *     th_app_run(&r, "chat", 5000, "--workers", "0", NULL);     runs it to its end
 *     cr_assert_eq(r.code, 2); ... r.err holds its stderr
 *
 * The binary is $SQUALL_BIN/NAME (`make test` sets it), else build/bin/NAME. Every wait
 * has a deadline; a child left running by a failed test dies with it (PR_SET_PDEATHSIG).
 * Functions that fail the test do so with cr_assert, on the calling (test) thread.
 * tests/support/hello.h is this for hello, under its older names.
 */
#ifndef SQUALL_TESTS_APP_H
#define SQUALL_TESTS_APP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct th_app {
    pid_t pid;
    int port;
    char line[256];   /* its first line on stdout: "NAME: serving on http://...:PORT/ ..." */
    char errpath[64]; /* the file holding its stderr (th_app_start_logged), else "" */
    char name[32];    /* the binary's name: "hello", "chat" */
} th_app_t;

/* The path of the binary `name` (static storage, overwritten by the next call). Fails the
 * test when it is not built. */
const char *th_app_path(const char *name);

/* Starts `NAME --port P` on a free port P, then the NULL-terminated extra arguments
 * (th_app_start("chat", NULL): none), and waits up to 5 s for its "serving on" line.
 * Retries with another port when another process took P in between. Fails the test when
 * the program does not start. */
th_app_t th_app_start(const char *name, const char *arg, ...);
/* As th_app_start, with the program's stderr kept in a file (a.errpath) for
 * th_app_stderr; th_app_stop removes it. */
th_app_t th_app_start_logged(const char *name, const char *arg, ...);
/* The two above with the arguments in an array (NULL-terminated). */
th_app_t th_app_startv(const char *name, bool keep_err, const char *const *args);

/* What the program has written to stderr so far (malloc'd, NUL-terminated; the first 64
 * KiB). Only for one started with th_app_start_logged. */
char *th_app_stderr(const th_app_t *a);
/* Waits up to timeout_ms for `needle` in its stderr; returns the text then (or at the
 * deadline), as th_app_stderr. */
char *th_app_wait_stderr(const th_app_t *a, const char *needle, int timeout_ms);

/* SIGTERM: graceful shutdown; asserts that the program exits with status 0 within 8 s. */
void th_app_stop(th_app_t *a);

/* A run of a program to its end. */
typedef struct th_app_run {
    int code;       /* exit status, or -1 when it died of a signal or was killed */
    int signal;     /* the signal that ended it, or 0 */
    bool timed_out; /* still running at the deadline: killed (SIGKILL) */
    uint64_t ms;    /* how long it ran */
    char out[4096]; /* its stdout and stderr, NUL-terminated, cut at 4095 bytes */
    char err[4096];
} th_app_run_t;

/* Runs NAME with the NULL-terminated arguments (no --port is added) until it exits, or
 * kills it after timeout_ms. */
void th_app_run(th_app_run_t *r, const char *name, int timeout_ms, const char *arg, ...);
void th_app_runv(th_app_run_t *r, const char *name, int timeout_ms, const char *const *argv);

/* Forks and execs NAME with the NULL-terminated arguments (no --port is added); its
 * stdout and stderr go to out_fd and err_fd (-1: the test's own). Returns its pid. */
pid_t th_app_spawn(const char *name, const char *const *args, int out_fd, int err_fd);

/* Waits up to timeout_ms for pid to exit. Returns its wait status, or -1 after killing it
 * (SIGKILL) at the deadline. */
int th_app_wait(pid_t pid, int timeout_ms);

/* The number of lines in s (a last line without '\n' counts). */
int th_count_lines(const char *s);

#endif
