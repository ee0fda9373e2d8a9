/* WebSocket against third-party peers, run as child processes with a timeout:
 *  - Node's `ws` client (tests/peers/ws_client.js) and Python's `websockets`
 *    (tests/peers/ws_client.py, run with Debian's /usr/bin/python3) against an in-process
 *    squall server on port 0, and against build/bin/hello;
 *  - squall's client (sq_ws_connect in-process, and build/bin/ws-client) against a Node
 *    `ws` echo server (tests/peers/ws_server.js).
 * Each peer checks what it received itself and says "ok"; the test checks the exit
 * status, the server side's callbacks and the close codes both sides saw.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"

extern char **environ;

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws_peers, .init = ignore_sigpipe, .timeout = 60);

/* ---- child processes ---- */

typedef struct child {
    pid_t pid;
    int out;         /* the read end of its stdout and stderr */
    char buf[16384]; /* everything it printed so far */
    size_t len;
    size_t line_at; /* where the next unread line starts */
} child_t;

/* The repository's root: SQUALL_BIN is <root>/<build>/bin; else the current directory. */
static const char *repo_root(void)
{
    static char root[PATH_MAX];
    const char *bin = getenv("SQUALL_BIN");
    if (bin != NULL) {
        int n = snprintf(root, sizeof(root), "%s/../..", bin);
        cr_assert(n > 0 && (size_t)n < sizeof(root));
        return root;
    }
    return ".";
}

/* tests/peers/<script> under the root. */
static void peer_path(char *out, size_t cap, const char *script)
{
    int n = snprintf(out, cap, "%s/tests/peers/%s", repo_root(), script);
    cr_assert(n > 0 && (size_t)n < cap);
}

static const char *bin_dir(void)
{
    const char *bin = getenv("SQUALL_BIN");
    return bin ? bin : "build/bin";
}

static void child_start(child_t *ch, char *const argv[])
{
    memset(ch, 0, sizeof(*ch));
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawnp(&ch->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], strerror(rc));
    ch->out = p[0];
}

/* Reads what the child printed, for up to timeout_ms. Returns false at EOF. */
static bool child_pump(child_t *ch, int timeout_ms)
{
    struct pollfd pfd = {.fd = ch->out, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return true;
    if (ch->len + 1 >= sizeof(ch->buf)) {
        char sink[4096];
        return read(ch->out, sink, sizeof(sink)) > 0;
    }
    ssize_t n = read(ch->out, ch->buf + ch->len, sizeof(ch->buf) - 1 - ch->len);
    if (n <= 0)
        return false;
    ch->len += (size_t)n;
    ch->buf[ch->len] = '\0';
    return true;
}

/* The next whole line the child prints, within timeout_ms; NULL on timeout or EOF. */
static const char *child_line(child_t *ch, int timeout_ms, char *line, size_t cap)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *nl = memchr(ch->buf + ch->line_at, '\n', ch->len - ch->line_at);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (ch->buf + ch->line_at));
            snprintf(line, cap, "%.*s", (int)n, ch->buf + ch->line_at);
            ch->line_at += n + 1;
            return line;
        }
        uint64_t now = th_now_ms();
        if (now >= end || !child_pump(ch, (int)(end - now)))
            return NULL;
    }
}

/* Waits for the child to exit (killing it after timeout_ms). Returns its exit status, or
 * -1 when it had to be killed. */
static int child_wait(child_t *ch, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int status;
    for (;;) {
        pid_t w = waitpid(ch->pid, &status, WNOHANG);
        if (w == ch->pid)
            break;
        if (th_now_ms() >= end) {
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, &status, 0);
            status = -1;
            break;
        }
        child_pump(ch, 20);
    }
    while (child_pump(ch, 0) && ch->len + 1 < sizeof(ch->buf))
        ;
    close(ch->out);
    if (status == -1)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs a peer script to the end; asserts it exited 0 after printing "ok". */
static void run_peer(char *const argv[])
{
    child_t ch;
    child_start(&ch, argv);
    int status = child_wait(&ch, 40000);
    cr_assert_eq(status, 0, "%s %s exited with %d; it printed:\n%s", argv[0], argv[1], status,
                 ch.buf);
    cr_assert(strstr(ch.buf, "ok\n") != NULL, "%s printed:\n%s", argv[1], ch.buf);
}

/* ---- an in-process squall server: /echo and /closer ---- */

typedef struct peer_srv {
    atomic_int opens, messages, closes;
    atomic_int closes_1000, closes_4001, closes_other;
    atomic_int last_other;
} peer_srv_t;

static void ps_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    peer_srv_t *s = data;
    atomic_fetch_add(&s->opens, 1);
}

static void ps_echo(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    peer_srv_t *s = data;
    atomic_fetch_add(&s->messages, 1);
    int rc = sq_ws_send(ws, binary, msg, len);
    if (rc != 0)
        fprintf(stderr, "echo of %zu bytes: %s\n", len, sq_strerror(rc));
}

static void ps_closer(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    peer_srv_t *s = data;
    atomic_fetch_add(&s->messages, 1);
    if (!binary && len == 13 && memcmp(msg, "close, please", 13) == 0)
        sq_ws_close(ws, 4001, "server bye");
}

static void ps_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    peer_srv_t *s = data;
    atomic_fetch_add(&s->closes, 1);
    if (code == 1000) {
        atomic_fetch_add(&s->closes_1000, 1);
    } else if (code == 4001) {
        atomic_fetch_add(&s->closes_4001, 1);
    } else {
        atomic_fetch_add(&s->closes_other, 1);
        atomic_store(&s->last_other, code);
    }
}

static const sq_ws_handler_t ps_echo_handler = {
    .open = ps_open,
    .message = ps_echo,
    .close = ps_close,
};
static const sq_ws_handler_t ps_closer_handler = {
    .open = ps_open,
    .message = ps_closer,
    .close = ps_close,
};

/* Runs a client peer (argv with "PORT" replaced) against /echo and /closer. */
static void serve_peer(const char *prog, const char *script)
{
    peer_srv_t st;
    memset(&st, 0, sizeof(st));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/echo", &ps_echo_handler, NULL, &st), 0);
    cr_assert_eq(sq_app_websocket(app, "/closer", &ps_closer_handler, NULL, &st), 0);
    th_server_t *ts = th_server_start(app, NULL);
    char path[PATH_MAX], port[16];
    peer_path(path, sizeof(path), script);
    snprintf(port, sizeof(port), "%d", th_server_port(ts));
    char *argv[] = {(char *)prog, path, port, (char *)"echo", NULL};
    run_peer(argv);
    /* the peer has exited: every connection is over or about to be */
    cr_assert_eq(th_wait_atomic(&st.closes, 2, 5000), 2);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&st.opens), 2);
    cr_assert_eq(atomic_load(&st.closes_1000), 1, "the peer closed /echo with 1000");
    cr_assert_eq(atomic_load(&st.closes_4001), 1, "the peer echoed /closer's 4001");
    cr_assert_eq(atomic_load(&st.closes_other), 0, "a close with %d", atomic_load(&st.last_other));
    /* 12 whole, 8 fragmented, 1 split inside characters (Node) or 1 multi-byte (Python),
     * and "close, please" */
    cr_assert_eq(atomic_load(&st.messages), 22);
}

Test(ws_peers, node_ws_client_echoes_every_size_and_closes_both_ways)
{
    serve_peer("node", "ws_client.js");
}

Test(ws_peers, python_websockets_client_echoes_every_size_and_closes_both_ways)
{
    serve_peer("/usr/bin/python3", "ws_client.py");
}

/* ---- build/bin/hello on a free port ---- */

static void hello_with_peer(const char *prog, const char *script, const char *mode)
{
    char hello[PATH_MAX], port[16], path[PATH_MAX];
    int n = snprintf(hello, sizeof(hello), "%s/hello", bin_dir());
    cr_assert(n > 0 && (size_t)n < sizeof(hello));
    snprintf(port, sizeof(port), "%d", th_free_port());
    char *hargv[] = {hello, (char *)"--port", port, NULL};
    child_t h;
    child_start(&h, hargv);
    char line[256];
    const char *l = child_line(&h, 10000, line, sizeof(line));
    cr_assert(l != NULL && strstr(l, "serving on") != NULL, "hello printed:\n%s", h.buf);
    peer_path(path, sizeof(path), script);
    char *argv[] = {(char *)prog, path, port, (char *)mode, NULL};
    child_t ch;
    child_start(&ch, argv);
    int status = child_wait(&ch, 40000);
    kill(h.pid, SIGTERM);
    int hs = child_wait(&h, 10000);
    cr_assert_eq(status, 0, "%s exited with %d; it printed:\n%s", script, status, ch.buf);
    cr_assert(strstr(ch.buf, "ok\n") != NULL, "%s printed:\n%s", script, ch.buf);
    cr_assert_neq(hs, -1, "hello did not stop on SIGTERM:\n%s", h.buf);
}

Test(ws_peers, node_ws_client_against_hello_ws_echo_and_ws)
{
    hello_with_peer("node", "ws_client.js", "hello-echo");
    hello_with_peer("node", "ws_client.js", "hello-said");
}

Test(ws_peers, python_websockets_client_against_hello_ws_echo)
{
    hello_with_peer("/usr/bin/python3", "ws_client.py", "hello-echo");
}

/* ---- squall's client against a Node `ws` server ---- */

static const size_t sizes[] = {0, 125, 126, 65535, 65536, 1024 * 1024};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

typedef struct sq_client {
    int opens, messages, closes, close_code, bad;
    char close_reason[128];
    size_t next;
    uint8_t *expect;
    bool ask_close; /* send "close, please" instead of the echoes */
} sq_client_t;

static void fill_message(size_t i, uint8_t *buf, size_t len)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = i < NSIZES ? (uint8_t)('a' + (k + i) % 26) : (uint8_t)(k * 7 + i);
}

static void c_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    sq_client_t *c = data;
    c->opens++;
    if (c->ask_close) {
        sq_ws_send_text(ws, "close, please", 13);
        return;
    }
    for (size_t i = 0; i < 2 * NSIZES; i++) {
        size_t len = sizes[i % NSIZES];
        fill_message(i, c->expect, len);
        cr_assert_eq(sq_ws_send(ws, i >= NSIZES, c->expect, len), 0);
    }
}

static void c_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_client_t *c = data;
    size_t i = c->next++;
    c->messages++;
    if (i >= 2 * NSIZES || binary != (i >= NSIZES) || len != sizes[i % NSIZES]) {
        c->bad++;
    } else {
        fill_message(i, c->expect, len);
        if (len > 0 && memcmp(msg, c->expect, len) != 0)
            c->bad++;
    }
    if (c->next == 2 * NSIZES)
        sq_ws_close(ws, SQ_WS_NORMAL, "squall done");
}

static void c_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    sq_client_t *c = data;
    c->closes++;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
}

static const sq_ws_handler_t c_handler = {.open = c_open, .message = c_message, .close = c_close};

static int start_node_server(child_t *ns, int connections)
{
    char path[PATH_MAX], n[8];
    peer_path(path, sizeof(path), "ws_server.js");
    snprintf(n, sizeof(n), "%d", connections);
    char *argv[] = {(char *)"node", path, (char *)"0", n, NULL};
    child_start(ns, argv);
    char line[128];
    const char *l = child_line(ns, 15000, line, sizeof(line));
    int port = 0;
    cr_assert(l != NULL && sscanf(l, "listening %d", &port) == 1 && port > 0,
              "ws_server.js printed:\n%s", ns->buf);
    return port;
}

Test(ws_peers, squall_client_against_node_ws_server_echoes_every_size_and_closes_both_ways)
{
    child_t ns;
    int port = start_node_server(&ns, 2);
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
    sq_client_t echo = {0}, closer = {.ask_close = true};
    echo.expect = malloc(1024 * 1024);
    closer.expect = malloc(16);
    cr_assert_eq(sq_ws_connect(&loop, url, &c_handler, &echo, NULL, NULL), 0);
    cr_assert_eq(sq_ws_connect(&loop, url, &c_handler, &closer, NULL, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    free(echo.expect);
    free(closer.expect);
    int status = child_wait(&ns, 10000);
    cr_assert_eq(status, 0, "ws_server.js exited with %d:\n%s", status, ns.buf);

    cr_assert_eq(echo.opens, 1);
    cr_assert_eq(echo.messages, 2 * NSIZES);
    cr_assert_eq(echo.bad, 0);
    cr_assert_eq(echo.closes, 1);
    cr_assert_eq(echo.close_code, SQ_WS_NORMAL, "%d %s", echo.close_code, echo.close_reason);
    cr_assert_str_eq(echo.close_reason, "squall done");
    cr_assert_eq(closer.opens, 1);
    cr_assert_eq(closer.messages, 0);
    cr_assert_eq(closer.closes, 1);
    cr_assert_eq(closer.close_code, 4001);
    cr_assert_str_eq(closer.close_reason, "node bye");
    /* what the Node side saw */
    cr_assert(strstr(ns.buf, "closed 1000 squall done\n") != NULL, "%s", ns.buf);
    cr_assert(strstr(ns.buf, "closed 4001 node bye\n") != NULL, "%s", ns.buf);
    cr_assert(strstr(ns.buf, "error") == NULL, "%s", ns.buf);
}

Test(ws_peers, ws_client_app_against_node_ws_server)
{
    child_t ns;
    int port = start_node_server(&ns, 1);
    char prog[PATH_MAX], url[64];
    int n = snprintf(prog, sizeof(prog), "%s/ws-client", bin_dir());
    cr_assert(n > 0 && (size_t)n < sizeof(prog));
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    char *argv[] = {prog, (char *)"--count", (char *)"4", url, NULL};
    child_t wc;
    child_start(&wc, argv);
    int status = child_wait(&wc, 20000);
    cr_assert_eq(status, 0, "ws-client exited with %d:\n%s", status, wc.buf);
    /* "hi", then each echo answered with "/answer" appended, until 4 came back */
    cr_assert_str_eq(wc.buf, "connected\nhi\nhi/answer\nhi/answer/answer\n"
                             "hi/answer/answer/answer\nclosed: 1000 bye\n");
    status = child_wait(&ns, 10000);
    cr_assert_eq(status, 0, "ws_server.js exited with %d:\n%s", status, ns.buf);
    cr_assert(strstr(ns.buf, "closed 1000 bye\n") != NULL, "%s", ns.buf);
}

/* ---- squall's client sends fragmented messages to a Node `ws` server ---- */

typedef struct frag_client {
    int opens, messages, closes, close_code, bad;
} frag_client_t;

static const char frag_text[] = "h\xc3\xa9llo, fragm\xc3\xa9nts"; /* é split below */

static void f_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    frag_client_t *c = data;
    c->opens++;
    /* text: "h\xc3" | "\xa9llo, " | "fragm\xc3\xa9nts", a ping between fragments */
    cr_assert_eq(sq_ws_send_fragment(ws, 0, frag_text, 2, 0), 0);
    cr_assert_eq(sq_ws_send_text(ws, "x", 1), SQ_EBUSY, "no other message in between");
    cr_assert_eq(sq_ws_ping(ws, "p", 1), 0);
    cr_assert_eq(sq_ws_send_fragment(ws, 0, frag_text + 2, 6, 0), 0);
    cr_assert_eq(sq_ws_send_fragment(ws, 0, frag_text + 8, sizeof(frag_text) - 9, 1), 0);
    /* binary: 0 + 70000 + 5 bytes */
    static uint8_t big[70005];
    for (size_t k = 0; k < sizeof(big); k++)
        big[k] = (uint8_t)(k * 13);
    cr_assert_eq(sq_ws_send_fragment(ws, 1, big, 0, 0), 0);
    cr_assert_eq(sq_ws_send_fragment(ws, 0, big, 70000, 0), UV_EINVAL, "type is fixed");
    cr_assert_eq(sq_ws_send_fragment(ws, 1, big, 70000, 0), 0);
    cr_assert_eq(sq_ws_send_fragment(ws, 1, big + 70000, 5, 1), 0);
    /* a text message may not end inside a character */
    cr_assert_eq(sq_ws_send_fragment(ws, 0, "\xc3", 1, 1), UV_EINVAL);
}

static void f_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    frag_client_t *c = data;
    c->messages++;
    if (c->messages == 1) {
        if (binary || len != sizeof(frag_text) - 1 || memcmp(msg, frag_text, len) != 0)
            c->bad++;
    } else {
        if (!binary || len != 70005)
            c->bad++;
        for (size_t k = 0; k < len && !c->bad; k++)
            if ((uint8_t)msg[k] != (uint8_t)(k * 13))
                c->bad++;
        sq_ws_close(ws, SQ_WS_NORMAL, "fragments done");
    }
}

static void f_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    frag_client_t *c = data;
    c->closes++;
    c->close_code = code;
}

static const sq_ws_handler_t f_handler = {.open = f_open, .message = f_message, .close = f_close};

Test(ws_peers, squall_client_sends_fragmented_messages_to_node_ws_server)
{
    child_t ns;
    int port = start_node_server(&ns, 1);
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
    frag_client_t c = {0};
    cr_assert_eq(sq_ws_connect(&loop, url, &f_handler, &c, NULL, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    int status = child_wait(&ns, 10000);
    cr_assert_eq(status, 0, "ws_server.js exited with %d:\n%s", status, ns.buf);
    cr_assert_eq(c.opens, 1);
    cr_assert_eq(c.messages, 2);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.closes, 1);
    cr_assert_eq(c.close_code, SQ_WS_NORMAL);
    cr_assert(strstr(ns.buf, "closed 1000 fragments done\n") != NULL, "%s", ns.buf);
    cr_assert(strstr(ns.buf, "error") == NULL, "%s", ns.buf);
}
