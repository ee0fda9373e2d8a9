/* build/bin/hello as a user meets it, for tests that drive the real binary: the calls of
 * app.h, named for hello.
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
 * See app.h for what each call does and how long it waits.
 */
#ifndef SQUALL_TESTS_HELLO_H
#define SQUALL_TESTS_HELLO_H

#include "support/app.h"

typedef th_app_t th_hello_t;
typedef th_app_run_t th_hello_run_t;

/* The path of the hello binary (static storage). Fails the test when it is not built. */
const char *th_hello_path(void);
/* th_app_start("hello", ...). */
th_hello_t th_hello_start(const char *arg, ...);
/* th_app_start_logged("hello", ...). */
th_hello_t th_hello_start_logged(const char *arg, ...);
char *th_hello_stderr(const th_hello_t *h);
char *th_hello_wait_stderr(const th_hello_t *h, const char *needle, int timeout_ms);
void th_hello_stop(th_hello_t *h);
/* th_app_run("hello", ...): no --port is added. */
void th_hello_run(th_hello_run_t *r, int timeout_ms, const char *arg, ...);
void th_hello_runv(th_hello_run_t *r, int timeout_ms, const char *const *argv);
pid_t th_hello_spawn(const char *const *args, int out_fd, int err_fd);
/* th_app_wait. */
int th_hello_wait(pid_t pid, int timeout_ms);

#endif
