/* Start-up, as a user meets it: listening on a busy port, a socket path that exists, a host
 * name, an unknown host; hello's flags and its failures (one line on stderr, non-zero exit,
 * at once); signals during start-up; the server's watchdog, which measures from the first
 * listen; the name of error 0. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "server/server_int.h"
#include "support/harness.h"
#include "support/hello.h"

/* ---- helpers ---- */

/* A socket of ours listening on host:port (port 0: any); returns its fd and the port, or
 * -1 when the machine cannot bind that address (no IPv6, say). */
static int listen_on(const char *host, int port, int *bound)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        cr_assert_eq(inet_pton(AF_INET6, host, &a->sin6_addr), 1);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        cr_assert_eq(inet_pton(AF_INET, host, &a->sin_addr), 1);
        len = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (ss.ss_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 8) != 0) {
        close(fd);
        return -1;
    }
    len = sizeof(ss);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (bound != NULL)
        *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static bool have_ipv6_loopback(void)
{
    int fd = listen_on("::1", 0, NULL);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Whether `name` resolves (as the server resolves it) to the numeric address `addr`. */
static bool resolves_to(const char *name, const char *addr)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    if (getaddrinfo(name, NULL, &hints, &res) != 0)
        return false;
    bool found = false;
    for (struct addrinfo *ai = res; ai != NULL && !found; ai = ai->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        const void *src = ai->ai_family == AF_INET6
                              ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                              : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        found = inet_ntop(ai->ai_family, src, buf, sizeof(buf)) != NULL && !strcmp(buf, addr);
    }
    freeaddrinfo(res);
    return found;
}

/* A connection to host:port completes (the kernel answers for a listening socket even
 * while its loop is not running). */
static bool connects(const char *host, int port)
{
    th_conn_t c;
    if (th_conn_open_host(&c, host, port) != 0)
        return false;
    th_conn_close(&c);
    return true;
}

typedef struct lib_fixture {
    uv_loop_t loop;
    sq_app_t *app;
    sq_server_t *srv;
    int closed;
} lib_fixture_t;

static void on_closed(sq_server_t *srv, void *data)
{
    ((lib_fixture_t *)data)->closed++;
}

static void fixture_open(lib_fixture_t *f, const sq_server_opts_t *opts)
{
    memset(f, 0, sizeof(*f));
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    cr_assert_eq(sq_app_create(&f->app), 0);
    cr_assert_eq(sq_server_create(&f->srv, &f->loop, f->app, opts), 0);
}

/* Destroys the server, runs the loop until it closed, and closes the loop: every handle a
 * failed listen made must be gone by then. */
static void fixture_close(lib_fixture_t *f)
{
    cr_assert_eq(sq_server_destroy(f->srv, 0, on_closed, f), 0);
    cr_assert_eq(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(f->closed, 1);
    cr_assert_eq(uv_loop_close(&f->loop), 0);
    sq_app_destroy(f->app);
}

/* An addrinfo list over caller memory, for sq__server_listen_ai. */
typedef struct ai_node {
    struct addrinfo ai;
    struct sockaddr_storage ss;
} ai_node_t;

static void ai_list(ai_node_t *nodes, const char *const *addrs, int n)
{
    for (int i = 0; i < n; i++) {
        ai_node_t *a = &nodes[i];
        memset(a, 0, sizeof(*a));
        if (strchr(addrs[i], ':') != NULL) {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a->ss;
            s->sin6_family = AF_INET6;
            cr_assert_eq(inet_pton(AF_INET6, addrs[i], &s->sin6_addr), 1);
            a->ai.ai_addrlen = sizeof(*s);
        } else {
            struct sockaddr_in *s = (struct sockaddr_in *)&a->ss;
            s->sin_family = AF_INET;
            cr_assert_eq(inet_pton(AF_INET, addrs[i], &s->sin_addr), 1);
            a->ai.ai_addrlen = sizeof(*s);
        }
        a->ai.ai_family = a->ss.ss_family;
        a->ai.ai_socktype = SOCK_STREAM;
        a->ai.ai_addr = (struct sockaddr *)&a->ss;
        a->ai.ai_next = i + 1 < n ? &nodes[i + 1].ai : NULL;
    }
}

/* ---- sq_server_listen and sq_server_listen_unix, through the library ---- */

Test(listen, a_busy_port_returns_eaddrinuse_and_the_loop_still_closes, .timeout = 10)
{
    int port;
    int fd = listen_on("127.0.0.1", 0, &port);
    cr_assert_geq(fd, 0);
    lib_fixture_t f;
    fixture_open(&f, NULL);
    cr_assert_eq(sq_server_listen(f.srv, "127.0.0.1", port), UV_EADDRINUSE);
    cr_assert_eq(sq_server_port(f.srv), UV_EINVAL, "no listener was added");
    /* the server goes on: another address still works, and so does a second failure */
    cr_assert_eq(sq_server_listen(f.srv, "127.0.0.1", 0), 0);
    int good = sq_server_port(f.srv);
    cr_assert_gt(good, 0);
    cr_assert_eq(sq_server_listen(f.srv, "127.0.0.1", port), UV_EADDRINUSE);
    cr_assert_eq(sq_server_port(f.srv), good);
    cr_assert(connects("127.0.0.1", good));
    fixture_close(&f);
    close(fd);
}

Test(listen, an_existing_unix_socket_path_returns_eaddrinuse_and_stays, .timeout = 10)
{
    char dir[] = "/tmp/squall-startup.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    cr_assert_eq(listen(fd, 8), 0);

    lib_fixture_t f;
    fixture_open(&f, NULL);
    cr_assert_eq(sq_server_listen_unix(f.srv, path), UV_EADDRINUSE);
    cr_assert_eq(sq_server_listen_unix(f.srv, path), UV_EADDRINUSE);
    fixture_close(&f);
    cr_assert_eq(access(path, F_OK), 0, "the existing socket file was removed");
    close(fd);
    unlink(path);
    rmdir(dir);
}

Test(listen, a_host_name_is_resolved_and_every_address_it_names_is_bound, .timeout = 10)
{
    lib_fixture_t f;
    fixture_open(&f, NULL);
    cr_assert_eq(sq_server_listen(f.srv, "localhost", 0), 0);
    int port = sq_server_port(f.srv);
    cr_assert_gt(port, 0);
    cr_assert(connects("127.0.0.1", port), "localhost:%d is not 127.0.0.1:%d", port, port);
    if (resolves_to("localhost", "::1") && have_ipv6_loopback())
        cr_assert(connects("::1", port), "localhost names ::1, which is not bound");
    fixture_close(&f);
}

/* Python's create_server: port 0 picks a port once, and every address gets that one. */
Test(listen, every_address_of_a_name_gets_the_same_port, .timeout = 10)
{
    if (!have_ipv6_loopback())
        cr_skip_test("no IPv6 loopback on this machine");
    static const char *const addrs[] = {"127.0.0.1", "::1"};
    ai_node_t nodes[2];
    ai_list(nodes, addrs, 2);
    lib_fixture_t f;
    fixture_open(&f, NULL);
    cr_assert_eq(sq__server_listen_ai(f.srv, &nodes[0].ai, 0), 0);
    int port = sq_server_port(f.srv);
    cr_assert_gt(port, 0);
    cr_assert(connects("127.0.0.1", port));
    cr_assert(connects("::1", port));
    fixture_close(&f);
}

/* A name whose addresses include one the machine does not have (an IPv6 address on a
 * host without it) is served on the others; with none left, the bind error is returned. */
Test(listen, an_address_the_machine_lacks_is_skipped_if_another_binds, .timeout = 10)
{
    static const char *const addrs[] = {"2001:db8::1", "127.0.0.1"};
    ai_node_t nodes[2];
    ai_list(nodes, addrs, 2);
    lib_fixture_t f;
    fixture_open(&f, NULL);
    cr_assert_eq(sq__server_listen_ai(f.srv, &nodes[0].ai, 0), 0);
    int port = sq_server_port(f.srv);
    cr_assert(connects("127.0.0.1", port));
    nodes[0].ai.ai_next = NULL; /* alone: nothing binds */
    int rc = sq__server_listen_ai(f.srv, &nodes[0].ai, 0);
    cr_assert(rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT, "%s", sq_err_name(rc));
    fixture_close(&f);
}

/* One address busy: the call fails as a whole, and the addresses it had bound are let go. */
Test(listen, a_busy_address_fails_the_name_and_leaves_no_listener, .timeout = 10)
{
    if (!have_ipv6_loopback())
        cr_skip_test("no IPv6 loopback on this machine");
    int port;
    int busy = listen_on("127.0.0.1", 0, &port);
    cr_assert_geq(busy, 0);
    static const char *const addrs[] = {"::1", "127.0.0.1"};
    ai_node_t nodes[2];
    ai_list(nodes, addrs, 2);
    lib_fixture_t f;
    fixture_open(&f, NULL);
    int probe = listen_on("::1", port, NULL);
    if (probe < 0)
        cr_skip_test("[::1]:%d is taken by another process", port);
    close(probe);
    cr_assert_eq(sq__server_listen_ai(f.srv, &nodes[0].ai, port), UV_EADDRINUSE);
    cr_assert_eq(sq_server_port(f.srv), UV_EINVAL);
    /* the listener on ::1 closes with the next loop turn */
    cr_assert_eq(uv_run(&f.loop, UV_RUN_NOWAIT), 0);
    probe = listen_on("::1", port, NULL);
    cr_assert_geq(probe, 0, "[::1]:%d is still bound", port);
    close(probe);
    fixture_close(&f);
    close(busy);
}

Test(listen, an_unknown_host_fails_with_the_resolver_error, .timeout = 30)
{
    lib_fixture_t f;
    fixture_open(&f, NULL);
    int rc = sq_server_listen(f.srv, "no-such-host.invalid", 0);
    cr_assert(rc == UV_EAI_NONAME || rc == UV_EAI_AGAIN || rc == UV_EAI_FAIL ||
                  rc == UV_EAI_NODATA,
              "%s", sq_err_name(rc));
    cr_assert_eq(sq_server_listen(f.srv, "", 0), UV_EINVAL);
    cr_assert_eq(sq_server_listen(f.srv, NULL, 0), UV_EINVAL);
    cr_assert_eq(sq_server_listen(f.srv, "localhost", 65536), UV_EINVAL);
    cr_assert_eq(sq_server_port(f.srv), UV_EINVAL);
    fixture_close(&f);
}

/* ---- hello's start-up, through the binary ---- */

/* A failed start: non-zero status at once (the run's deadline), one line on stderr that
 * contains `reason`, nothing on stdout, no abort. */
static void expect_failed_start(const th_hello_run_t *r, const char *what, const char *reason)
{
    cr_assert_not(r->timed_out, "%s: still running after %llu ms; stderr: %s", what,
                  (unsigned long long)r->ms, r->err);
    cr_assert_eq(r->signal, 0, "%s: died of signal %d; stderr: %s", what, r->signal, r->err);
    cr_assert_eq(r->code, 1, "%s: exit status %d; stderr: %s", what, r->code, r->err);
    cr_assert_eq(th_count_lines(r->err), 1, "%s: stderr is not one line: %s", what, r->err);
    cr_assert_not_null(strstr(r->err, reason), "%s: stderr: %s", what, r->err);
    cr_assert_str_eq(r->out, "", "%s: stdout: %s", what, r->out);
}

Test(hello, a_busy_port_fails_at_once_with_a_one_line_reason, .timeout = 30)
{
    int port;
    int fd = listen_on("127.0.0.1", 0, &port);
    cr_assert_geq(fd, 0);
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    th_hello_run_t r;
    th_hello_run(&r, 5000, "--port", p, NULL);
    expect_failed_start(&r, "busy port", "address already in use");
    cr_assert_not_null(strstr(r.err, p), "the port is not named: %s", r.err);
    th_hello_run(&r, 5000, "--port", p, "--workers", "2", NULL);
    expect_failed_start(&r, "busy port, 2 workers", "address already in use");
    th_hello_run(&r, 5000, "--port", p, "--workers", "4", "--slow-callback-ms", "0", NULL);
    expect_failed_start(&r, "busy port, 4 workers", "address already in use");
    close(fd);
}

Test(hello, an_unknown_host_fails_at_once_with_a_one_line_reason, .timeout = 30)
{
    th_hello_run_t r;
    th_hello_run(&r, 20000, "--host", "no-such-host.invalid", "--port", "0", NULL);
    expect_failed_start(&r, "unknown host", "no-such-host.invalid");
}

static void get_root(const char *host, int port)
{
    th_conn_t c;
    cr_assert_eq(th_conn_open_host(&c, host, port), 0, "[%s]:%d refused", host, port);
    cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"Hello\":\"World\"}");
    th_res_free(&r);
    th_conn_close(&c);
}

Test(hello, host_localhost_serves_on_the_loopback_addresses_it_names, .timeout = 30)
{
    th_hello_t h = th_hello_start("--host", "localhost", NULL);
    cr_assert_not_null(strstr(h.line, "http://localhost:"), "%s", h.line);
    get_root("127.0.0.1", h.port);
    if (resolves_to("localhost", "::1") && have_ipv6_loopback())
        get_root("::1", h.port);
    th_hello_stop(&h);
}

Test(hello, host_ipv6_loopback_serves, .timeout = 30)
{
    if (!have_ipv6_loopback())
        cr_skip_test("no IPv6 loopback on this machine");
    th_hello_t h = th_hello_start("--host", "::1", "--workers", "2", NULL);
    cr_assert_not_null(strstr(h.line, "http://[::1]:"), "%s", h.line);
    get_root("::1", h.port);
    th_hello_stop(&h);
}

/* SIGTERM's handler is installed (its bit in /proc/PID/status' SigCgt), or hello ended. */
static bool catches_sigterm(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    unsigned long long mask = 0;
    bool seen = false;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "SigCgt: %llx", &mask) == 1)
            seen = true;
    fclose(f);
    return !seen || (mask & (1ull << (SIGTERM - 1))) != 0;
}

/* SIGTERM at any moment of start-up once hello watches for it — while its workers are
 * being set up, after one failed, or once all serve — ends it at once: status 0 when the
 * start-up was sound. When a worker could not listen, status 1, or death by that SIGTERM
 * if it came once hello had stopped watching, on its way out; never a hang. */
Test(hello, sigterm_during_start_up_ends_it_at_once, .timeout = 120)
{
    int busy_port;
    int busy = listen_on("127.0.0.1", 0, &busy_port);
    cr_assert_geq(busy, 0);
    char busy_p[16];
    snprintf(busy_p, sizeof(busy_p), "%d", busy_port);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(devnull, 0);
    static const unsigned delays_us[] = {0, 200, 1000, 3000, 10000};
    for (int busy_run = 0; busy_run < 2; busy_run++) {
        for (size_t i = 0; i < sizeof(delays_us) / sizeof(delays_us[0]); i++) {
            char port[16];
            snprintf(port, sizeof(port), "%d", busy_run ? busy_port : th_free_port());
            const char *args[] = {"--port", port, "--workers", "8", NULL};
            pid_t pid = th_hello_spawn(args, devnull, devnull);
            uint64_t end = th_now_ms() + 5000;
            while (!catches_sigterm(pid) && th_now_ms() < end)
                usleep(100);
            usleep(delays_us[i]);
            kill(pid, SIGTERM);
            int st = th_hello_wait(pid, 5000);
            cr_assert_neq(st, -1, "still running 5 s after SIGTERM (%s port, +%u us)",
                          busy_run ? "busy" : "free", delays_us[i]);
            if (busy_run && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM)
                continue;
            cr_assert(WIFEXITED(st), "died of signal %d (%s port, +%u us)", WTERMSIG(st),
                      busy_run ? "busy" : "free", delays_us[i]);
            cr_assert_eq(WEXITSTATUS(st), busy_run ? 1 : 0, "(%s port, +%u us)",
                         busy_run ? "busy" : "free", delays_us[i]);
        }
    }
    close(devnull);
    close(busy);
}

/* ---- hello's flags ---- */

Test(hello, help_prints_the_usage_on_stdout_and_exits_0, .timeout = 10)
{
    th_hello_run_t r;
    th_hello_run(&r, 5000, "--help", NULL);
    cr_assert_eq(r.code, 0, "status %d; stderr: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.out, "usage: hello"), "stdout: %s", r.out);
    cr_assert_not_null(strstr(r.out, "--workers"), "stdout: %s", r.out);
    cr_assert_str_eq(r.err, "");
}

/* A wrong value or a stray argument: what is wrong on the first line, then the usage, all
 * on stderr, status 2, before listening (port 0 would start a server that the run's
 * deadline would catch). */
Test(hello, a_bad_flag_or_argument_says_what_is_wrong_then_the_usage, .timeout = 60)
{
    static const struct {
        const char *args[6];
        const char *reason;
    } cases[] = {
        {{"--workers", "0"}, "hello: --workers must be 1..64"},
        {{"--workers=65"}, "hello: --workers must be 1..64"},
        {{"--threadpool", "99999"}, "hello: --threadpool must be 1..1024"},
        {{"--threadpool=0"}, "hello: --threadpool must be 1..1024"},
        {{"stray"}, "hello: unexpected argument 'stray'"},
        {{"--port", "0", "8000"}, "hello: unexpected argument '8000'"},
        {{"--port=abc"}, "hello: --port: not a valid number: 'abc'"},
        {{"--nope"}, "hello: unknown option '--nope'"},
        {{"--port"}, "hello: --port needs a value"},
        /* each worker would listen on a port of its own: all but one unreachable */
        {{"--workers", "2"}, "hello: --port 0 needs --workers 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[8] = {"--port", "0"};
        int n = 2;
        for (int j = 0; cases[i].args[j] != NULL; j++)
            args[n++] = cases[i].args[j];
        args[n] = NULL;
        th_hello_run_t r;
        th_hello_runv(&r, 5000, args);
        cr_assert_eq(r.code, 2, "%s: status %d (signal %d)", cases[i].reason, r.code, r.signal);
        cr_assert_eq(strncmp(r.err, cases[i].reason, strlen(cases[i].reason)), 0,
                     "want '%s' first, got: %s", cases[i].reason, r.err);
        const char *nl = strchr(r.err, '\n');
        cr_assert_not_null(nl);
        cr_assert_eq(strncmp(nl + 1, "usage: hello", 12), 0, "then the usage: %s", r.err);
        cr_assert_str_eq(r.out, "", "%s: stdout: %s", cases[i].reason, r.out);
    }
}

/* ---- the server's watchdog measures from the first listen ---- */

typedef struct wd_probe {
    lib_fixture_t *f;
    sq_watchdog_stats_t st;
} wd_probe_t;

static void take_stats_and_destroy(uv_timer_t *t)
{
    wd_probe_t *p = t->data;
    sq_watchdog_stats(sq_server_watchdog(p->f->srv), &p->st);
    cr_assert_eq(sq_server_destroy(p->f->srv, 0, on_closed, p->f), 0);
    uv_close((uv_handle_t *)t, NULL);
}

/* A slow set-up before the first listen, and before the loop runs, is not a stall: the
 * loop was not serving anyone yet. Before the fix, the watchdog measured from
 * sq_server_create and logged "loop stalled for ... ms" at start-up. */
Test(startup, the_server_watchdog_measures_from_the_first_listen, .timeout = 20)
{
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.slow_callback_ms = 200;
    lib_fixture_t f;
    fixture_open(&f, &o);
    cr_assert_not_null(sq_server_watchdog(f.srv));
    usleep(400 * 1000);                                         /* a slow set-up */
    int busy_port;
    int busy = listen_on("127.0.0.1", 0, &busy_port);
    cr_assert_geq(busy, 0);
    cr_assert_eq(sq_server_listen(f.srv, "127.0.0.1", busy_port), UV_EADDRINUSE);
    close(busy);
    usleep(200 * 1000);                                         /* a failed listen starts nothing */
    cr_assert_eq(sq_server_listen(f.srv, "127.0.0.1", 0), 0);
    usleep(400 * 1000);                                         /* more, before uv_run */
    wd_probe_t p = {.f = &f};
    uv_timer_t t;
    uv_update_time(&f.loop);
    uv_timer_init(&f.loop, &t);
    t.data = &p;
    uv_timer_start(&t, take_stats_and_destroy, 150, 0);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    cr_assert_gt(p.st.samples, 0, "the watchdog never measured");
    cr_assert_eq(p.st.stalls, 0, "start-up counted as a stall of %llu us",
                 (unsigned long long)p.st.lag_max_us);
    cr_assert_eq(f.closed, 1);
    cr_assert_eq(uv_loop_close(&f.loop), 0);
    sq_app_destroy(f.app);
}

typedef struct blocker {
    uv_timer_t t;
    unsigned ms;
} blocker_t;

static void block_loop(uv_timer_t *t)
{
    usleep(((blocker_t *)t)->ms * 1000u);
    uv_close((uv_handle_t *)t, NULL);
}

/* sq_watchdog_stop/start: what happens while stopped is not measured; once started again,
 * a real block is. */
Test(startup, a_stopped_watchdog_measures_again_from_its_start, .timeout = 20)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_watchdog_opts_t o;
    sq_watchdog_opts_init(&o);
    o.slow_ms = 100;
    o.log = 0;
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, &o), 0);
    cr_assert_eq(sq_watchdog_stop(wd), 0);
    blocker_t b1 = {.ms = 300};
    uv_timer_init(&loop, &b1.t);
    uv_timer_start(&b1.t, block_loop, 10, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* the probe is unreferenced: this returns */
    sq_watchdog_stats_t st;
    sq_watchdog_stats(wd, &st);
    cr_assert_eq(st.samples, 0);
    cr_assert_eq(st.stalls, 0);

    usleep(300 * 1000); /* between start and the loop's next turn: not counted either */
    cr_assert_eq(sq_watchdog_start(wd), 0);
    usleep(300 * 1000);
    uv_update_time(&loop);
    blocker_t b2 = {.ms = 300};
    uv_timer_init(&loop, &b2.t);
    uv_timer_start(&b2.t, block_loop, 60, 0);
    blocker_t idle = {.ms = 0};
    uv_timer_init(&loop, &idle.t);
    uv_timer_start(&idle.t, block_loop, 500, 0); /* keeps the loop turning after b2 */
    uv_run(&loop, UV_RUN_DEFAULT);
    sq_watchdog_stats(wd, &st);
    cr_assert_gt(st.samples, 0);
    cr_assert_eq(st.stalls, 1, "stalls: %llu", (unsigned long long)st.stalls);
    cr_assert_geq(st.lag_max_us, 150000);

    cr_assert_eq(sq_watchdog_destroy(wd, NULL, NULL), 0);
    cr_assert_eq(sq_watchdog_start(wd), SQ_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- errors ---- */

Test(errors, zero_has_a_name_and_a_message)
{
    cr_assert_str_eq(sq_err_name(0), "OK");
    cr_assert_str_eq(sq_strerror(0), "success");
    cr_assert_str_eq(sq_err_name(UV_EADDRINUSE), "EADDRINUSE");
    cr_assert_str_eq(sq_err_name(SQ_ECLOSED), "SQ_ECLOSED");
}

/* ---- hello --processes: copies of the server on one port (SO_REUSEPORT) ---- */

/* The children of pid, from /proc (0 when it has none or is gone). */
static int count_children(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int n = 0, c;
    while (fscanf(f, "%d", &c) == 1)
        n++;
    fclose(f);
    return n;
}

Test(hello, processes_serve_one_port_and_stop_together_on_sigterm, .timeout = 30)
{
    th_hello_t h = th_hello_start("--processes", "3", NULL);
    cr_assert_not_null(strstr(h.line, "in each of 3 processes"), "%s", h.line);
    cr_assert_eq(count_children(h.pid), 3, "hello should supervise 3 copies");
    for (int i = 0; i < 12; i++)
        get_root("127.0.0.1", h.port);
    th_hello_stop(&h); /* SIGTERM to the supervisor reaches every copy: exit 0 */
}

Test(hello, processes_on_a_busy_port_fail_with_one_line, .timeout = 30)
{
    int port;
    int fd = listen_on("127.0.0.1", 0, &port);
    cr_assert_geq(fd, 0);
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    th_hello_run_t r;
    th_hello_run(&r, 5000, "--port", p, "--processes", "4", NULL);
    expect_failed_start(&r, "busy port, 4 processes", "address already in use");
    close(fd);
}

Test(hello, processes_refuse_port_0_and_bad_counts, .timeout = 30)
{
    th_hello_run_t r;
    th_hello_run(&r, 5000, "--port", "0", "--processes", "2", NULL);
    cr_assert_eq(r.code, 2, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "--port 0 needs"), "%s", r.err);
    th_hello_run(&r, 5000, "--processes", "0", NULL);
    cr_assert_eq(r.code, 2, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "--processes must be 1..64"), "%s", r.err);
}

Test(hello, a_copy_that_dies_stops_the_others_and_the_status_says_so, .timeout = 30)
{
    th_hello_t h = th_hello_start("--processes", "2", NULL);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)h.pid, (int)h.pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int child = 0;
    cr_assert_eq(fscanf(f, "%d", &child), 1);
    fclose(f);
    kill(child, SIGKILL); /* a crash, as far as the supervisor can tell */
    int st = th_hello_wait(h.pid, 10000);
    cr_assert_neq(st, -1, "the supervisor did not exit");
    cr_assert(WIFEXITED(st), "the supervisor died of signal %d", WTERMSIG(st));
    cr_assert_eq(WEXITSTATUS(st), 128 + SIGKILL, "the supervisor's status: %d", WEXITSTATUS(st));
    if (h.errpath[0] != '\0')
        unlink(h.errpath);
}
