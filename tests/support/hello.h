/* build/bin/hello as a user meets it, for tests that drive the real binary.
 *
 *     th_hello_t h = th_hello_start("--workers=2", NULL);   a free port, waits to serve
 *     th_request(h.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r);
 *     th_hello_stop(&h);                                   SIGTERM; asserts exit 0
 *
 *     th_hello_t h = th_hello_start_logged(NULL);           its stderr kept in a file
 *     char *err = th_hello_wait_stderr(&h, "slow callback", 2000);
 *
 *     th_hello_run_t r;
 *     th_hello_run(&r, 5000, "--workers", "0", NULL);       runs it to its end
 *     cr_assert_eq(r.code, 2); ... r.err holds its stderr
 *
 * The binary is $SQUALL_BIN/hello (`make test` sets it), else build/bin/hello. Every wait
 * has a deadline; a child left running by a failed test dies with it (PR_SET_PDEATHSIG).
 * Functions that fail the test do so with cr_assert, on the calling (test) thread.
 */
#ifndef SQUALL_TESTS_HELLO_H
#define SQUALL_TESTS_HELLO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct th_hello {
    pid_t pid;
    int port;
    char line[256];   /* its first line on stdout: "hello: serving on http://...:PORT/ ..." */
    char errpath[64]; /* the file holding its stderr (th_hello_start_logged), else "" */
} th_hello_t;

/* The path of the hello binary (static storage). Fails the test when it is not built. */
const char *th_hello_path(void);

/* Starts `hello --port P` on a free port P, then the NULL-terminated extra arguments
 * (th_hello_start(NULL): none), and waits up to 5 s for its "serving on" line. Retries
 * with another port when another process took P in between. Fails the test when hello
 * does not start. */
th_hello_t th_hello_start(const char *arg, ...);

/* As th_hello_start, with hello's stderr kept in a file (h.errpath) for th_hello_stderr;
 * th_hello_stop removes it. */
th_hello_t th_hello_start_logged(const char *arg, ...);

/* What hello has written to stderr so far (malloc'd, NUL-terminated; the first 64 KiB).
 * Only for a hello started with th_hello_start_logged. */
char *th_hello_stderr(const th_hello_t *h);
/* Waits up to timeout_ms for `needle` in hello's stderr; returns the text then (or at the
 * deadline), as th_hello_stderr. */
char *th_hello_wait_stderr(const th_hello_t *h, const char *needle, int timeout_ms);

/* SIGTERM: graceful shutdown; asserts that hello exits with status 0 within 8 s. */
void th_hello_stop(th_hello_t *h);

/* A run of hello to its end. */
typedef struct th_hello_run {
    int code;       /* exit status, or -1 when it died of a signal or was killed */
    int signal;     /* the signal that ended it, or 0 */
    bool timed_out; /* still running at the deadline: killed (SIGKILL) */
    uint64_t ms;    /* how long it ran */
    char out[4096]; /* its stdout and stderr, NUL-terminated, cut at 4095 bytes */
    char err[4096];
} th_hello_run_t;

/* Runs hello with the NULL-terminated arguments (no --port is added) until it exits, or
 * kills it after timeout_ms. */
void th_hello_run(th_hello_run_t *r, int timeout_ms, const char *arg, ...);
void th_hello_runv(th_hello_run_t *r, int timeout_ms, const char *const *argv);

/* Forks and execs hello with the NULL-terminated arguments (no --port is added); its
 * stdout and stderr go to out_fd and err_fd (-1: the test's own). Returns its pid. */
pid_t th_hello_spawn(const char *const *args, int out_fd, int err_fd);

/* Waits up to timeout_ms for pid to exit. Returns its wait status, or -1 after killing it
 * (SIGKILL) at the deadline. */
int th_hello_wait(pid_t pid, int timeout_ms);

/* The number of lines in s (a last line without '\n' counts). */
int th_count_lines(const char *s);

#endif
