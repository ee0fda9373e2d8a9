/* WebSocket against third-party peers, run as child processes with a timeout:
 *  - Node's `ws` client (tests/peers/ws_client.js) and Python's `websockets`
 *    (tests/peers/ws_client.py, run with Debian's /usr/bin/python3) against an in-process
 *    squall server on port 0, and against build/bin/hello;
 *  - squall's client (sq_ws_connect in-process, and build/bin/ws-client) against a Node
 *    `ws` echo server (tests/peers/ws_server.js);
 *  - build/bin/ws-client against a scripted Node server (tests/peers/ws_script_server.js)
 *    that echoes, floods, refuses, answers wrongly, resets, breaks the protocol or stays
 *    silent: its stdout, stderr and exit status, and what the server got back.
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

#include <jansson.h>
#include <squall.h>

#include "support/harness.h"
#include "support/hello.h"

extern char **environ;

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws_peers, .init = ignore_sigpipe, .timeout = 60);

/* ---- child processes ---- */

/* What a child printed: grows as it comes (messages of 100 KB and more go through). */
typedef struct out_buf {
    int fd;     /* the read end of the pipe; -1 once it is closed */
    char *buf;  /* NUL-terminated, never NULL once the child started */
    size_t len, cap;
} out_buf_t;

typedef struct child {
    pid_t pid;
    out_buf_t out;  /* its stdout, with its stderr unless split */
    out_buf_t err;  /* its stderr when split (fd -1 otherwise) */
    char *buf;      /* = out.buf, for the messages of the assertions */
    size_t line_at; /* where the next unread line of out starts */
    char *line;     /* the last line child_line returned */
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

static void out_init(out_buf_t *o, int fd)
{
    o->fd = fd;
    o->cap = 16384;
    o->len = 0;
    o->buf = malloc(o->cap);
    cr_assert_not_null(o->buf);
    o->buf[0] = '\0';
}

/* Starts argv; `split`: its stderr goes to ch->err instead of joining its stdout. */
static void child_start_split(child_t *ch, char *const argv[], bool split)
{
    memset(ch, 0, sizeof(*ch));
    int p[2], e[2] = {-1, -1};
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    if (split)
        cr_assert_eq(pipe2(e, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, split ? e[1] : p[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawnp(&ch->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (split)
        close(e[1]);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], strerror(rc));
    out_init(&ch->out, p[0]);
    out_init(&ch->err, e[0]);
    ch->buf = ch->out.buf;
}

static void child_start(child_t *ch, char *const argv[])
{
    child_start_split(ch, argv, false);
}

/* Reads one chunk into o. Returns false at EOF (the pipe is then closed). */
static bool out_read(out_buf_t *o)
{
    if (o->cap - o->len < 4096) {
        char *b = realloc(o->buf, o->cap * 2);
        cr_assert_not_null(b);
        o->buf = b;
        o->cap *= 2;
    }
    ssize_t n = read(o->fd, o->buf + o->len, o->cap - 1 - o->len);
    if (n <= 0) {
        close(o->fd);
        o->fd = -1;
        return false;
    }
    o->len += (size_t)n;
    o->buf[o->len] = '\0';
    return true;
}

/* Reads what the child printed, for up to timeout_ms. Returns false once its stdout is at
 * EOF. */
static bool child_pump(child_t *ch, int timeout_ms)
{
    struct pollfd pfd[2] = {{.fd = ch->out.fd, .events = POLLIN},
                            {.fd = ch->err.fd, .events = POLLIN}};
    if (ch->out.fd < 0 && ch->err.fd < 0)
        return false;
    if (poll(pfd, 2, timeout_ms) <= 0)
        return ch->out.fd >= 0;
    if (pfd[1].revents != 0)
        out_read(&ch->err);
    if (pfd[0].revents != 0)
        out_read(&ch->out);
    ch->buf = ch->out.buf;
    return ch->out.fd >= 0;
}

/* The next whole line the child prints on stdout, within timeout_ms; NULL on timeout or
 * EOF. Valid until the next call. */
static const char *child_line(child_t *ch, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *at = ch->out.buf + ch->line_at;
        char *nl = memchr(at, '\n', ch->out.len - ch->line_at);
        if (nl != NULL) {
            size_t n = (size_t)(nl - at);
            free(ch->line);
            ch->line = strndup(at, n);
            cr_assert_not_null(ch->line);
            ch->line_at += n + 1;
            return ch->line;
        }
        uint64_t now = th_now_ms();
        if (now >= end || !child_pump(ch, (int)(end - now)))
            return NULL;
    }
}

/* Waits for the child to exit (killing it after timeout_ms) and reads the rest of what it
 * printed; meanwhile reads what `other` prints (when not NULL), so that a peer writing
 * much to its pipe is never blocked by it. Returns the exit status, or -1 when the child
 * had to be killed. */
static int child_wait_pumping(child_t *ch, int timeout_ms, child_t *other)
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
        if (!child_pump(ch, 10) && ch->err.fd < 0)
            th_sleep_ms(5);
        if (other != NULL)
            child_pump(other, 0);
    }
    /* the pipes may outlive the child in a grandchild it left behind: read what is there */
    while ((ch->out.fd >= 0 || ch->err.fd >= 0) && th_now_ms() < end + 2000) {
        struct pollfd pfd[2] = {{.fd = ch->out.fd, .events = POLLIN},
                                {.fd = ch->err.fd, .events = POLLIN}};
        if (poll(pfd, 2, 100) <= 0)
            break;
        if (pfd[0].revents != 0)
            out_read(&ch->out);
        if (pfd[1].revents != 0)
            out_read(&ch->err);
    }
    for (int i = 0; i < 2; i++) {
        out_buf_t *o = i ? &ch->err : &ch->out;
        if (o->fd >= 0)
            close(o->fd);
        o->fd = -1;
    }
    ch->buf = ch->out.buf;
    if (status == -1)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int child_wait(child_t *ch, int timeout_ms)
{
    return child_wait_pumping(ch, timeout_ms, NULL);
}

/* Frees what child_start allocated (after child_wait). */
static void child_free(child_t *ch)
{
    free(ch->out.buf);
    free(ch->err.buf);
    free(ch->line);
    memset(ch, 0, sizeof(*ch));
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
    child_free(&ch);
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
    th_hello_t h = th_hello_start(NULL); /* a free port; its "serving on" line seen */
    char port[16], path[PATH_MAX];
    snprintf(port, sizeof(port), "%d", h.port);
    peer_path(path, sizeof(path), script);
    char *argv[] = {(char *)prog, path, port, (char *)mode, NULL};
    child_t ch;
    child_start(&ch, argv);
    int status = child_wait(&ch, 40000);
    cr_assert_eq(status, 0, "%s exited with %d; it printed:\n%s", script, status, ch.buf);
    cr_assert(strstr(ch.buf, "ok\n") != NULL, "%s printed:\n%s", script, ch.buf);
    child_free(&ch);
    th_hello_stop(&h); /* SIGTERM: exits 0 */
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
} peer_client_t;

static void fill_message(size_t i, uint8_t *buf, size_t len)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = i < NSIZES ? (uint8_t)('a' + (k + i) % 26) : (uint8_t)(k * 7 + i);
}

static void c_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    peer_client_t *c = data;
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
    peer_client_t *c = data;
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
    peer_client_t *c = data;
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
    const char *l = child_line(ns, 15000);
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
    peer_client_t echo = {0}, closer = {.ask_close = true};
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
    child_free(&ns);
}

/* ---- build/bin/ws-client (the lecture's aiohttp client) against real servers ---- */

/* One run of build/bin/ws-client: stdout and stderr apart, the exit status, how long. */
typedef struct app_run {
    child_t wc;
    int status;
    uint64_t ms;
} app_run_t;

/* Runs ws-client with `args` (NULL-terminated, at most 6); killed after 15 s. `server`
 * (may be NULL): the peer's output is read meanwhile. */
static void app_run(app_run_t *r, const char *const *args, child_t *server)
{
    char prog[PATH_MAX];
    int n = snprintf(prog, sizeof(prog), "%s/ws-client", bin_dir());
    cr_assert(n > 0 && (size_t)n < sizeof(prog));
    char *argv[8] = {prog};
    for (int i = 0; args[i] != NULL; i++) {
        cr_assert_lt(i, 6);
        argv[i + 1] = (char *)args[i];
    }
    uint64_t t0 = th_now_ms();
    child_start_split(&r->wc, argv, true);
    r->status = child_wait_pumping(&r->wc, 15000, server);
    r->ms = th_now_ms() - t0;
    cr_assert_neq(r->status, -1, "ws-client did not exit within 15 s; it printed:\n%s\n%s",
                  r->wc.out.buf, r->wc.err.buf);
}

/* Starts tests/peers/ws_script_server.js MODE ARG; returns its port. */
static int script_start(child_t *ns, const char *mode, const char *arg)
{
    char path[PATH_MAX];
    peer_path(path, sizeof(path), "ws_script_server.js");
    char *argv[] = {(char *)"node", path, (char *)mode, (char *)arg, NULL};
    child_start(ns, argv);
    const char *l = child_line(ns, 15000);
    int port = 0;
    cr_assert(l != NULL && sscanf(l, "listening %d", &port) == 1 && port > 0,
              "ws_script_server.js printed:\n%s", ns->buf);
    return port;
}

/* What the script server saw: the texts it sent and received, and how it ended. */
typedef struct script_log {
    json_t *sent, *recv; /* arrays of strings */
    char closed[256];    /* its "closed ..." line, without "closed " */
    bool done;
} script_log_t;

/* Waits for the script server to end and reads its lines. */
static void script_finish(child_t *ns, script_log_t *log)
{
    int status = child_wait(ns, 20000);
    cr_assert_eq(status, 0, "ws_script_server.js exited with %d:\n%.2000s", status, ns->buf);
    log->sent = json_array();
    log->recv = json_array();
    log->closed[0] = '\0';
    log->done = false;
    const char *l;
    while ((l = child_line(ns, 0)) != NULL) {
        bool is_sent = strncmp(l, "sent ", 5) == 0;
        if (is_sent || strncmp(l, "recv ", 5) == 0) {
            json_error_t e;
            json_t *v = json_loads(l + 5, JSON_DECODE_ANY, &e);
            cr_assert(json_is_string(v), "not a JSON string: %.200s", l);
            json_array_append_new(is_sent ? log->sent : log->recv, v);
        } else if (strncmp(l, "closed ", 7) == 0) {
            snprintf(log->closed, sizeof(log->closed), "%s", l + 7);
        } else if (strcmp(l, "done") == 0) {
            log->done = true;
        } else {
            cr_assert_fail("ws_script_server.js said: %.500s", l);
        }
    }
    cr_assert(log->done, "ws_script_server.js printed:\n%.2000s", ns->buf);
}

static void script_log_free(script_log_t *log)
{
    json_decref(log->sent);
    json_decref(log->recv);
}

/* The lines `from` to `to` (excluded) of a JSON array of strings, each followed by "\n":
 * what the client must have printed. */
static char *joined_lines(json_t *texts, size_t from, size_t to)
{
    size_t len = 0;
    for (size_t i = from; i < to; i++)
        len += json_string_length(json_array_get(texts, i)) + 1;
    char *out = malloc(len + 1), *p = out;
    cr_assert_not_null(out);
    for (size_t i = from; i < to; i++) {
        json_t *t = json_array_get(texts, i);
        memcpy(p, json_string_value(t), json_string_length(t));
        p += json_string_length(t);
        *p++ = '\n';
    }
    *p = '\0';
    return out;
}

/* recv must be "hi", then exactly sent[0, n): what the client answered, unchanged. */
static void assert_echoed(const script_log_t *log, size_t n)
{
    cr_assert_eq(json_array_size(log->recv), n + 1, "the server received %zu texts, not %zu",
                 json_array_size(log->recv), n + 1);
    cr_assert_str_eq(json_string_value(json_array_get(log->recv, 0)), "hi");
    for (size_t i = 0; i < n; i++)
        cr_assert(json_equal(json_array_get(log->recv, i + 1), json_array_get(log->sent, i)),
                  "echo %zu differs from what was sent", i);
}

static void app_run_free(app_run_t *r)
{
    child_free(&r->wc);
}

/* A plain echo server (Node `ws`): "hi" comes back each time; after --count 4 the client
 * closes with 1000 and no reason, as aiohttp's ws.close() does. */
Test(ws_peers, ws_client_app_against_node_ws_server)
{
    child_t ns;
    int port = start_node_server(&ns, 1);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    app_run_t r;
    app_run(&r, (const char *const[]){"--count", "4", url, NULL}, &ns);
    cr_assert_eq(r.status, 0, "ws-client exited with %d:\n%s", r.status, r.wc.err.buf);
    cr_assert_str_eq(r.wc.out.buf, "hi\nhi\nhi\nhi\n");
    cr_assert_str_eq(r.wc.err.buf, "");
    int status = child_wait(&ns, 10000);
    cr_assert_eq(status, 0, "ws_server.js exited with %d:\n%s", status, ns.buf);
    cr_assert(strstr(ns.buf, "closed 1000 \n") != NULL, "%s", ns.buf);
    app_run_free(&r);
    child_free(&ns);
}

/* The lecture's loop: every text printed on its own line exactly (empty, blanks, tabs,
 * non-ASCII, 110 KB, "close cmd " and "Close cmd", which are not the command) and sent
 * back unchanged; "close cmd" ends it with 1000, unprinted. An http:// URL works as it
 * does for aiohttp. */
Test(ws_peers, ws_client_app_echoes_each_text_unchanged_until_close_cmd)
{
    static const char *const schemes[] = {"ws", "http"};
    for (size_t k = 0; k < 2; k++) {
        child_t ns;
        int port = script_start(&ns, "echo", "10");
        char url[64];
        snprintf(url, sizeof(url), "%s://127.0.0.1:%d/ws", schemes[k], port);
        app_run_t r;
        app_run(&r, (const char *const[]){"--count", "0", url, NULL}, &ns);
        script_log_t log;
        script_finish(&ns, &log);
        cr_assert_eq(r.status, 0, "%s: exit %d: %s", url, r.status, r.wc.err.buf);
        cr_assert_str_eq(r.wc.err.buf, "");
        cr_assert_eq(json_array_size(log.sent), 11);
        cr_assert_str_eq(json_string_value(json_array_get(log.sent, 10)), "close cmd");
        char *expect = joined_lines(log.sent, 0, 10);
        cr_assert(strcmp(r.wc.out.buf, expect) == 0,
                  "%s: stdout (%zu bytes) is not the 10 messages (%zu bytes)", url,
                  r.wc.out.len, strlen(expect));
        free(expect);
        assert_echoed(&log, 10);
        cr_assert_str_eq(log.closed, "1000 \"\"");
        script_log_free(&log);
        app_run_free(&r);
        child_free(&ns);
    }
}

/* --count 3 against 8 messages sent at once: 3 printed and answered, then close 1000;
 * the 5 that arrive while closing are neither printed nor answered. */
Test(ws_peers, ws_client_app_stops_at_count_and_ignores_what_comes_while_closing)
{
    child_t ns;
    int port = script_start(&ns, "send", "8");
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    app_run_t r;
    app_run(&r, (const char *const[]){"--count", "3", url, NULL}, &ns);
    script_log_t log;
    script_finish(&ns, &log);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.wc.err.buf);
    cr_assert_str_eq(r.wc.err.buf, "");
    cr_assert_eq(json_array_size(log.sent), 8);
    char *expect = joined_lines(log.sent, 0, 3);
    cr_assert_str_eq(r.wc.out.buf, expect);
    free(expect);
    assert_echoed(&log, 3);
    cr_assert_str_eq(log.closed, "1000 \"\"");
    script_log_free(&log);
    app_run_free(&r);
    child_free(&ns);
}

/* The server closing with 1000 ends the client with 0, as `async for` ends. */
Test(ws_peers, ws_client_app_exits_0_when_the_server_closes_normally)
{
    child_t ns;
    int port = script_start(&ns, "server-close", "1000");
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    app_run_t r;
    app_run(&r, (const char *const[]){url, NULL}, &ns);
    script_log_t log;
    script_finish(&ns, &log);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.wc.err.buf);
    cr_assert_str_eq(r.wc.out.buf, "bye soon\n");
    cr_assert_str_eq(r.wc.err.buf, "");
    assert_echoed(&log, 1);
    cr_assert_str_eq(log.closed, "1000 \"server closes\"", "the client echoed the close");
    script_log_free(&log);
    app_run_free(&r);
    child_free(&ns);
}

/* Every failure: exit 1, one line on stderr saying why, what came before it on stdout,
 * and an end within bounds (a silent server within --timeout). */
Test(ws_peers, ws_client_app_failures_are_one_line_on_stderr_and_exit_1)
{
    static const struct {
        const char *mode, *arg;
        const char *out;     /* stdout */
        const char *why;     /* stderr after "ws-client: <url>: " */
        const char *closed;  /* how the server's "closed" line begins; NULL: unchecked */
    } cases[] = {
        {"refuse", "", "", "upgrade refused with status 404\n", NULL},
        {"ok200", "", "", "upgrade refused with status 200\n", NULL},
        {"bad-accept", "", "", "invalid handshake response\n", NULL},
        {"reset", "", "before reset\n",
         "connection closed with 1006 (connection lost without a close frame)\n", "none"},
        {"eof", "", "before eof\n",
         "connection closed with 1006 (connection lost without a close frame)\n", "none"},
        {"protocol-error", "", "before error\n",
         "connection closed with 1002 (protocol error)\n", "1002 "},
        {"server-close", "4001", "bye soon\n", "connection closed with 4001: server closes\n",
         "4001 \"server closes\""},
        {"silent", "", "", "handshake timed out\n", "none"},
        {NULL, "", "", "connect: connection refused\n", NULL}, /* nobody listening */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        child_t ns;
        int port = cases[i].mode ? script_start(&ns, cases[i].mode, cases[i].arg)
                                 : th_free_port();
        char url[64];
        snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
        app_run_t r;
        app_run(&r, (const char *const[]){"--timeout", "500", url, NULL},
                cases[i].mode ? &ns : NULL);
        const char *what = cases[i].mode ? cases[i].mode : "no server";
        cr_assert_eq(r.status, 1, "%s: exit %d", what, r.status);
        cr_assert_str_eq(r.wc.out.buf, cases[i].out, "%s", what);
        char err[256];
        snprintf(err, sizeof(err), "ws-client: %s: %s", url, cases[i].why);
        cr_assert_str_eq(r.wc.err.buf, err, "%s", what);
        /* bounded: the handshake deadline is 500 ms, the rest is immediate */
        cr_assert_lt(r.ms, 5000, "%s: took %llu ms", what, (unsigned long long)r.ms);
        if (cases[i].mode != NULL && strcmp(cases[i].mode, "silent") == 0)
            cr_assert_geq(r.ms, 450, "gave up after %llu ms", (unsigned long long)r.ms);
        if (cases[i].mode != NULL) {
            script_log_t log;
            script_finish(&ns, &log);
            if (cases[i].closed != NULL)
                cr_assert(strncmp(log.closed, cases[i].closed, strlen(cases[i].closed)) == 0,
                          "%s: the server saw \"closed %s\"", what, log.closed);
            if (*cases[i].out != '\0')
                assert_echoed(&log, 1); /* what came before the failure went back */
            script_log_free(&log);
            child_free(&ns);
        }
        app_run_free(&r);
    }
}

/* A URL that cannot be used and bad flags are usage errors: exit 2, one line (wss://
 * itself connects: tests/test_tls.c). */
Test(ws_peers, ws_client_app_explains_usage_errors)
{
    static const struct {
        const char *args[4];
        const char *err;
    } cases[] = {
        {{"ws://127.0.0.1/a b", NULL},
         "ws-client: ws://127.0.0.1/a b: not a ws:// URL this client can use "
         "(ws://host[:port][/path][?query])\n"},
        {{"--count", "many", "ws://127.0.0.1:9/ws", NULL},
         "ws-client: --count must be a whole number 0..1000000000, not 'many'\n"
         "usage: ws-client [--count N] [--timeout MS] [ws://host:port/path]\n"},
        {{"--timeout", "0", "ws://127.0.0.1:9/ws", NULL},
         "ws-client: --timeout must be 1..3600000 milliseconds, not '0'\n"
         "usage: ws-client [--count N] [--timeout MS] [ws://host:port/path]\n"},
        {{"--nope", "ws://127.0.0.1:9/ws", NULL},
         "ws-client: unknown option '--nope'\n"
         "usage: ws-client [--count N] [--timeout MS] [ws://host:port/path]\n"},
        {{"ws://127.0.0.1:9/ws", "extra", NULL},
         "ws-client: unexpected argument 'extra'\n"
         "usage: ws-client [--count N] [--timeout MS] [ws://host:port/path]\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        app_run_t r;
        app_run(&r, cases[i].args, NULL);
        cr_assert_eq(r.status, 2, "case %zu: exit %d: %s", i, r.status, r.wc.err.buf);
        cr_assert_str_eq(r.wc.out.buf, "", "case %zu", i);
        cr_assert_str_eq(r.wc.err.buf, cases[i].err, "case %zu", i);
        app_run_free(&r);
    }
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
    child_free(&ns);
}
