/* Edge cases of the transport's connection memory (lib/server/slab.c), of the supervisor
 * of sq_processes_run (lib/server/processes.c) and of the WebSocket frame reader
 * (lib/ws/frame.c) against a hostile peer on raw sockets (RFC 6455 §5.2-5.5, §7.4, §8.1). */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/server_int.h"
#include "squall.h"
#include "squall/workers.h"
#include "support/harness.h"
#include "support/ws_raw.h"

/* ---- a WebSocket server: /echo (1 MiB messages), /free (no message limit), /q (256 KiB
 * of queued bytes at most) ---- */

enum { Q_MAX = 256 * 1024 };

typedef struct wsrv {
    atomic_int opens, messages, closes;
    atomic_int close_code;
    atomic_int last_len;
    sq_ws_t *last; /* the last WebSocket opened: used on the loop thread only */
    char last_msg[256];
} wsrv_t;

static void w_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    wsrv_t *s = data;
    s->last = ws;
    atomic_fetch_add(&s->opens, 1);
}

static void w_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    wsrv_t *s = data;
    memcpy(s->last_msg, msg, len < sizeof(s->last_msg) ? len : sizeof(s->last_msg));
    atomic_store(&s->last_len, (int)len);
    atomic_fetch_add(&s->messages, 1);
    sq_ws_send(ws, binary, msg, len);
}

static void w_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    wsrv_t *s = data;
    if (s->last == ws)
        s->last = NULL;
    atomic_store(&s->close_code, code);
    atomic_fetch_add(&s->closes, 1);
}

static const sq_ws_handler_t w_echo = {.open = w_open, .message = w_message, .close = w_close};

typedef struct wenv {
    sq_app_t *app;
    th_server_t *ts;
    int port;
    wsrv_t st;
} wenv_t;

static void wenv_start(wenv_t *e)
{
    memset(e, 0, sizeof(*e));
    cr_assert_eq(sq_app_create(&e->app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = 1024 * 1024;
    o.close_timeout_ms = 1000;
    cr_assert_eq(sq_app_websocket(e->app, "/echo", &w_echo, &o, &e->st), 0);
    o.max_message_bytes = 0;
    cr_assert_eq(sq_app_websocket(e->app, "/free", &w_echo, &o, &e->st), 0);
    o.max_message_bytes = 1024 * 1024;
    o.max_queued_bytes = Q_MAX;
    cr_assert_eq(sq_app_websocket(e->app, "/q", &w_echo, &o, &e->st), 0);
    e->ts = th_server_start(e->app, NULL);
    e->port = th_server_port(e->ts);
}

static void wenv_stop(wenv_t *e)
{
    th_server_stop(e->ts, 1000);
    sq_app_destroy(e->app);
}

static void upgrade_to(th_conn_t *c, int port, const char *path, const void *extra, size_t n)
{
    char req[256];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path);
    raw_upgrade_req(c, port, req, extra, n);
}

/* A masked frame header announcing a 64-bit length, with no payload. */
static size_t header64(uint8_t *out, uint8_t b0, uint64_t len)
{
    size_t n = 0;
    out[n++] = b0;
    out[n++] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
        out[n++] = (uint8_t)(len >> (56 - 8 * i));
    memset(out + n, 0, 4); /* a zero key: the payload goes as it is */
    return n + 4;
}

Test(ws_edge, a_close_frame_inside_a_fragmented_message_is_echoed_and_the_message_dropped,
     .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "close inside fragments";
    upgrade_to(&c, e.port, "/echo", NULL, 0);
    frame_send(&c, OP_TEXT, true, "hel", 3);
    uint8_t body[32];
    size_t bl = close_payload(body, 1000, "bye");
    frame_send(&c, FIN | OP_CLOSE, true, body, bl);
    frame_send(&c, FIN | OP_CONT, true, "lo", 2); /* after the close: never read */
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_geq(f.len, 2);
    cr_assert_eq(f.payload[0] << 8 | f.payload[1], 1000);
    frame_free(&f);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    cr_assert_eq(th_wait_atomic(&e.st.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&e.st.messages), 0);
    wenv_stop(&e);
}

Test(ws_edge, text_split_inside_a_utf8_sequence_across_fragments_and_reads_is_delivered,
     .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "utf8 across fragments";
    upgrade_to(&c, e.port, "/echo", NULL, 0);
    /* "é€😀" split inside each sequence, every frame also split byte by byte */
    static const char text[] = "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    static const size_t cuts[] = {0, 1, 3, 4, 7, 9};
    for (int i = 0; i + 1 < 6; i++) {
        uint8_t fr[32];
        size_t n = frame_build(fr, (uint8_t)((i == 0 ? OP_TEXT : OP_CONT) | (i == 4 ? FIN : 0)),
                               true, text + cuts[i], cuts[i + 1] - cuts[i]);
        cr_assert_eq(th_conn_send_split(&c, fr, n, 1, 0), 0);
    }
    expect_frame(&c, OP_TEXT, text, 9);
    th_conn_close(&c);
    wenv_stop(&e);
}

Test(ws_edge, a_64_bit_length_over_4_gib_fails_at_its_header_under_a_limit, .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "5 GiB under a limit";
    upgrade_to(&c, e.port, "/echo", NULL, 0);
    uint8_t h[16];
    size_t n = header64(h, FIN | OP_BIN, (uint64_t)5 << 30);
    cr_assert_eq(th_conn_send(&c, h, n), 0);
    expect_close(&c, 1009);
    th_conn_close(&c);
    cr_assert_eq(th_wait_atomic(&e.st.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&e.st.close_code), 1009);
    wenv_stop(&e);
}

Test(ws_edge, a_64_bit_length_over_4_gib_without_a_limit_is_read_until_the_peer_goes, .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "5 GiB without a limit";
    upgrade_to(&c, e.port, "/free", NULL, 0);
    uint8_t *buf = calloc(1, 64 * 1024 + 16);
    cr_assert_not_null(buf);
    size_t n = header64(buf, OP_BIN, (uint64_t)5 << 30); /* a first fragment too */
    cr_assert_eq(th_conn_send(&c, buf, n + 64 * 1024), 0);
    free(buf);
    th_conn_abort(&c);
    cr_assert_eq(th_wait_atomic(&e.st.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&e.st.messages), 0);
    /* the server is well */
    th_conn_t d;
    upgrade_to(&d, e.port, "/free", NULL, 0);
    frame_send(&d, FIN | OP_TEXT, true, "ok", 2);
    expect_frame(&d, OP_TEXT, "ok", 2);
    th_conn_close(&d);
    wenv_stop(&e);
}

Test(ws_edge, a_close_reason_of_123_bytes_is_echoed_whole, .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "123-byte reason";
    upgrade_to(&c, e.port, "/echo", NULL, 0);
    char reason[124];
    memset(reason, 'r', 123);
    reason[123] = '\0';
    uint8_t body[128];
    size_t bl = close_payload(body, 4001, reason);
    cr_assert_eq(bl, 125);
    /* split inside its header and its payload: the control frame is collected */
    uint8_t fr[160];
    size_t n = frame_build(fr, FIN | OP_CLOSE, true, body, bl);
    cr_assert_eq(th_conn_send_split(&c, fr, n, 7, 0), 0);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_eq(f.len, 125);
    cr_assert_eq(memcmp(f.payload, body, 125), 0);
    frame_free(&f);
    th_conn_close(&c);
    cr_assert_eq(th_wait_atomic(&e.st.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&e.st.close_code), 4001);
    wenv_stop(&e);
}

Test(ws_edge, frames_in_the_packet_of_the_upgrade_request_are_read, .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    uint8_t extra[64];
    size_t n = frame_build(extra, FIN | OP_TEXT, true, "first", 5);
    n += frame_build(extra + n, OP_TEXT, true, "sec", 3);
    n += frame_build(extra + n, FIN | OP_CONT, true, "ond", 3);
    th_conn_t c;
    raw_case = "frames behind the request";
    upgrade_to(&c, e.port, "/echo", extra, n);
    expect_frame(&c, OP_TEXT, "first", 5);
    expect_frame(&c, OP_TEXT, "second", 6);
    th_conn_close(&c);
    wenv_stop(&e);
}

Test(ws_edge, fragmented_control_frames_and_interleaved_messages_get_1002, .timeout = 30)
{
    wenv_t e;
    wenv_start(&e);
    static const struct {
        uint8_t b0[2];
        int nframes;
        const char *what;
    } cases[] = {
        {{OP_PING, 0}, 1, "a ping without FIN"},
        {{OP_CLOSE, 0}, 1, "a close without FIN"},
        {{OP_TEXT, OP_TEXT | FIN}, 2, "a text message inside a fragmented one"},
        {{OP_BIN, OP_TEXT}, 2, "a binary fragment then a text one"},
        {{FIN | OP_CONT, 0}, 1, "a continuation with no message"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_conn_t c;
        raw_case = cases[i].what;
        upgrade_to(&c, e.port, "/echo", NULL, 0);
        for (int k = 0; k < cases[i].nframes; k++)
            frame_send(&c, cases[i].b0[k], true, "ab", 2);
        expect_close(&c, 1002);
        th_conn_close(&c);
    }
    cr_assert_eq(atomic_load(&e.st.messages), 0);
    wenv_stop(&e);
}

/* The server's queued bytes for the last WebSocket opened, read on its loop. */
typedef struct qprobe {
    wsrv_t *st;
    size_t queued;
    bool open;
} qprobe_t;

static void read_queued(sq_server_t *srv, void *data)
{
    qprobe_t *q = data;
    q->open = q->st->last != NULL;
    q->queued = q->open ? sq_ws_queued_bytes(q->st->last) : 0;
}

/* RFC 6455 §5.5.3 lets a pong answer only the latest of pings not yet answered: a client
 * that pings and never reads must not make the server queue pongs past max_queued_bytes. */
Test(ws_edge, pings_from_a_client_that_never_reads_queue_no_more_than_max_queued_bytes,
     .timeout = 60)
{
    wenv_t e;
    wenv_start(&e);
    th_conn_t c;
    raw_case = "ping flood";
    upgrade_to(&c, e.port, "/q", NULL, 0);
    int small = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct timeval tv = {.tv_sec = 2};
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    uint8_t payload[125];
    memset(payload, 'p', sizeof(payload));
    enum { BATCH = 64 };
    uint8_t w[BATCH * 140];
    size_t wl = 0;
    for (int i = 0; i < BATCH; i++)
        wl += frame_build(w + wl, FIN | OP_PING, true, payload, sizeof(payload));
    /* 16 MiB of pings, or until the server stops reading */
    size_t sent = 0;
    while (sent < (size_t)16 << 20) {
        ssize_t k = send(c.fd, w, wl, MSG_NOSIGNAL);
        if (k <= 0)
            break;
        sent += (size_t)k;
        if ((size_t)k < wl)
            break;
    }
    qprobe_t q = {.st = &e.st};
    size_t peak = 0;
    uint64_t until = th_now_ms() + 1500;
    while (th_now_ms() < until) {
        th_server_call(e.ts, read_queued, &q);
        if (q.queued > peak)
            peak = q.queued;
        th_sleep_ms(50);
    }
    th_conn_abort(&c);
    wenv_stop(&e);
    cr_assert_gt(sent, (size_t)2 * Q_MAX, "only %zu bytes of pings went", sent);
    cr_assert_leq(peak, (size_t)2 * Q_MAX,
                  "%zu bytes of pongs queued after %zu bytes of pings (max_queued_bytes %d)", peak,
                  sent, Q_MAX);
}

/* ---- connections in slabs ---- */

static void hello_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hi", 2);
}

static const sq_handler_t hello_route = {.get = hello_get};

Test(conn_edge, connections_over_several_slabs_closed_in_any_order_then_the_server_stopped,
     .timeout = 60)
{
    enum { N = 480 }; /* three 64 KiB blocks and more */
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2 * N + 64) {
        rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0); /* this test's process only */
    }
    cr_assert_geq(rl.rlim_cur, 2 * N + 64);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &hello_route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static th_conn_t c[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(th_conn_open(&c[i], port), 0);
    cr_assert_geq(th_server_wait_opened(ts, N, 10000), (uint64_t)N); /* all accepted */
    /* every other one goes, then the first half: whole blocks become empty and are
     * given back while the others are in use */
    for (int i = 1; i < N; i += 2)
        th_conn_abort(&c[i]);
    for (int i = 0; i < N / 2; i += 2)
        th_conn_close(&c[i]);
    cr_assert_leq(th_server_wait_open(ts, N / 4 + 1, 10000), (uint64_t)N / 4 + 1);
    for (int i = N / 2; i < N; i += 2) {
        cr_assert_eq(th_conn_sends(&c[i], "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        th_expect_res(&c[i], 200, "hi");
    }
    /* new connections fill the blocks again, some with a request half sent */
    for (int i = 0; i < N / 2; i++) {
        cr_assert_eq(th_conn_open(&c[i], port), 0);
        if (i % 3 == 0)
            cr_assert_eq(th_conn_sends(&c[i], "GET / HTTP/1.1\r\nHo"), 0);
    }
    th_expect_healthy(port, "/", "hi");
    th_server_stop(ts, 500); /* with connections open, idle and mid-request */
    for (int i = 0; i < N; i++)
        th_conn_close(&c[i]);
    sq_app_destroy(app);
}

/* A block given back to the system must not stay poisoned for AddressSanitizer: the next
 * mapping at its address is someone else's memory. */
Test(conn_edge, a_slab_block_given_back_leaves_its_addresses_usable)
{
    sq_server_t *srv = calloc(1, sizeof(*srv));
    cr_assert_not_null(srv);
    srv->conn_size = 360;
    enum { MAXC = 1024 };
    static sq__conn_t *conns[MAXC];
    uintptr_t mask = ~(uintptr_t)(64 * 1024 - 1);
    int n = 0;
    conns[n++] = sq__conn_alloc(srv);
    cr_assert_not_null(conns[0]);
    uintptr_t first = (uintptr_t)conns[0] & mask;
    while (n < MAXC) {
        conns[n] = sq__conn_alloc(srv);
        cr_assert_not_null(conns[n]);
        if (((uintptr_t)conns[n++] & mask) != first)
            break;
    }
    uintptr_t second = (uintptr_t)conns[n - 1] & mask;
    cr_assert_neq(second, first);
    sq__conn_dealloc(srv, conns[--n]); /* the second block's only one: the block goes */
    void *p = mmap((void *)second, 64 * 1024, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || p != (void *)second) {
        for (int i = 0; i < n; i++)
            sq__conn_dealloc(srv, conns[i]);
        sq__slab_free(srv);
        free(srv);
        cr_skip_test("the address was taken again");
    }
    volatile char *v = p;
    for (size_t i = 0; i < 64 * 1024; i += 64)
        v[i] = 1; /* under ASan: a report if the shadow still says freed */
    munmap(p, 64 * 1024);
    for (int i = 0; i < n; i++)
        sq__conn_dealloc(srv, conns[i]);
    sq__slab_free(srv);
    free(srv);
}

/* ---- sq_processes_run's supervisor ---- */

/* The supervisor's children must be waited for even when the caller inherited SIGCHLD
 * ignored (a launcher's disposition survives exec): children are then reaped by the
 * kernel, and a supervisor counting them through waitpid waits forever. */
Test(conn_edge, processes_run_returns_when_sigchld_was_ignored, .timeout = 15)
{
    pid_t sup = fork();
    cr_assert_geq(sup, 0);
    if (sup == 0) {
        signal(SIGCHLD, SIG_IGN);
        unsigned index;
        int code = -1;
        int rc = sq_processes_run(2, &index, &code);
        if (rc == 0)
            _exit(0); /* a child: done at once */
        _exit(rc == 1 && code == 0 ? 0 : 3);
    }
    int st = 0;
    pid_t got = 0;
    uint64_t until = th_now_ms() + 5000;
    while ((got = waitpid(sup, &st, WNOHANG)) == 0 && th_now_ms() < until)
        th_sleep_ms(20);
    if (got == 0) {
        kill(sup, SIGKILL);
        waitpid(sup, &st, 0);
    }
    cr_assert_eq(got, sup, "the supervisor still waits 5 s after its children exited");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}

/* A supervisor killed outright (SIGKILL, the OOM killer) must not leave its children
 * serving the port with nobody to stop them. */
Test(conn_edge, processes_run_children_end_when_the_supervisor_is_killed, .timeout = 15)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t sup = fork();
    cr_assert_geq(sup, 0);
    if (sup == 0) {
        close(fds[0]);
        unsigned index;
        int code;
        int rc = sq_processes_run(1, &index, &code);
        if (rc == 0) {
            pid_t me = getpid();
            if (write(fds[1], &me, sizeof(me)) != sizeof(me))
                _exit(2);
            for (int i = 0; i < 100; i++) /* a server: 10 s, unless stopped */
                usleep(100 * 1000);
            _exit(0);
        }
        _exit(rc == 1 ? code : 3);
    }
    close(fds[1]);
    pid_t child = 0;
    struct pollfd pf = {.fd = fds[0], .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 5000), 1);
    cr_assert_eq(read(fds[0], &child, sizeof(child)), (ssize_t)sizeof(child));
    kill(sup, SIGKILL);
    waitpid(sup, NULL, 0);
    /* the pipe's last writer is the child: EOF once it is gone */
    char b;
    int r = poll(&pf, 1, 3000);
    bool gone = r == 1 && read(fds[0], &b, 1) == 0;
    if (!gone)
        kill(child, SIGKILL);
    close(fds[0]);
    cr_assert(gone, "the child %d still runs 3 s after its supervisor was killed", (int)child);
}

/* ---- the accept path without memory ---- */

static void swap_conn_size(sq_server_t *srv, void *data)
{
    size_t *sz = data, old = srv->conn_size;
    srv->conn_size = *sz;
    *sz = old;
}

/* A connection that cannot be allocated (the slab's mmap failed) must not stop the
 * listener for good: libuv accepts nothing more until uv_accept takes the pending one. */
Test(conn_edge, a_connection_refused_for_want_of_memory_does_not_stop_the_listener, .timeout = 30)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &hello_route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    th_expect_healthy(port, "/", "hi");
    size_t sz = (size_t)1 << 20; /* more than a slab's slot may be: sq__conn_alloc fails */
    th_server_call(ts, swap_conn_size, &sz);
    th_conn_t a;
    cr_assert_eq(th_conn_open(&a, port), 0);
    cr_assert_eq(th_conn_sends(&a, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_conn_read_some(&a, 300);              /* the server had its go at accepting it */
    th_server_call(ts, swap_conn_size, &sz); /* memory is back */
    th_conn_t b;
    cr_assert_eq(th_conn_open(&b, port), 0);
    cr_assert_eq(th_conn_sends(&b, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    int rc = th_conn_read_res(&b, &r, 3000, false);
    if (rc == 0)
        th_res_free(&r);
    th_conn_close(&a);
    th_conn_close(&b);
    th_server_stop(ts, 500);
    sq_app_destroy(app);
    cr_assert_eq(rc, 0, "a connection after the failed one got no answer: %s", uv_err_name(rc));
}

/* ---- the take-over: HTTP/1's exchange shares its pointer with the WebSocket ---- */

static int pass_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    return SQ_NEXT;
}

/* A before hook that decides later: sq_req_next from a timer, so the handler (the
 * WebSocket's take-over) runs from HTTP/1's tick. */
static void next_later(uv_timer_t *t)
{
    sq_req_next(t->data);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static int later_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    uv_timer_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return -1;
    uv_timer_init(sq_req_loop(req), t);
    t->data = req;
    uv_timer_start(t, next_later, 1, 0);
    return SQ_PAUSE;
}

Test(ws_edge, an_upgrade_after_a_hook_that_went_on_later_is_taken_over_cleanly, .timeout = 30)
{
    wenv_t e;
    memset(&e, 0, sizeof(e));
    cr_assert_eq(sq_app_create(&e.app), 0);
    cr_assert_eq(sq_app_before(e.app, later_hook, NULL), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &w_echo, &o, &e.st), 0);
    e.ts = th_server_start(e.app, NULL);
    e.port = th_server_port(e.ts);
    uint8_t fr[32];
    size_t fl = frame_build(fr, FIN | OP_TEXT, true, "behind", 6);
    for (int i = 0; i < 20; i++) {
        th_conn_t c;
        raw_case = "upgrade after a paused hook";
        upgrade_to(&c, e.port, "/echo", i % 2 ? fr : NULL, i % 2 ? fl : 0);
        if (i % 2)
            expect_frame(&c, OP_TEXT, "behind", 6);
        frame_send(&c, FIN | OP_TEXT, true, "ok", 2);
        expect_frame(&c, OP_TEXT, "ok", 2);
        th_conn_close(&c);
    }
    wenv_stop(&e);
    cr_assert_eq(atomic_load(&e.st.opens), 20);
}

Test(ws_edge, clients_that_reset_right_after_the_upgrade_request_leave_the_server_well,
     .timeout = 60)
{
    wenv_t e;
    memset(&e, 0, sizeof(e));
    cr_assert_eq(sq_app_create(&e.app), 0);
    cr_assert_eq(sq_app_before(e.app, pass_hook, NULL), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    cr_assert_eq(sq_app_websocket(e.app, "/echo", &w_echo, &o, &e.st), 0);
    e.ts = th_server_start(e.app, NULL);
    e.port = th_server_port(e.ts);
    uint8_t fr[32];
    size_t fl = frame_build(fr, FIN | OP_TEXT, true, "x", 1);
    for (int i = 0; i < 200; i++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, e.port), 0);
        char req[512];
        int n = snprintf(req, sizeof(req), "%s", upgrade_request);
        if (i % 4 == 1) /* a pipelined request behind the upgrade: WebSocket bytes now */
            n += snprintf(req + n, sizeof(req) - (size_t)n, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        if (i % 4 == 2) {
            memcpy(req + n, fr, fl);
            n += (int)fl;
        }
        cr_assert_eq(th_conn_send(&c, req, (size_t)n), 0);
        if (i % 4 == 3)
            th_conn_read_some(&c, 1000); /* the 101 came */
        th_conn_abort(&c);
    }
    cr_assert_eq(th_server_wait_open(e.ts, 0, 10000), 0);
    th_conn_t d;
    raw_case = "after the resets";
    upgrade_to(&d, e.port, "/echo", NULL, 0);
    frame_send(&d, FIN | OP_TEXT, true, "ok", 2);
    expect_frame(&d, OP_TEXT, "ok", 2);
    th_conn_close(&d);
    wenv_stop(&e);
}

Test(ws_edge, a_server_stopped_with_websockets_over_several_slabs_says_goodbye_to_each,
     .timeout = 60)
{
    enum { N = 300 };
    wenv_t e;
    wenv_start(&e);
    static th_conn_t c[N];
    raw_case = "many open";
    for (int i = 0; i < N; i++)
        upgrade_to(&c[i], e.port, "/echo", NULL, 0);
    for (int i = 0; i < N; i += 3) /* some gone already, freeing slots here and there */
        th_conn_abort(&c[i]);
    th_server_stop(e.ts, 2000);
    int closes = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0)
            continue;
        rframe_t f;
        if (frame_read(&c[i], &f, 3000) == 0) {
            closes += f.opcode == OP_CLOSE;
            frame_free(&f);
        }
        th_conn_close(&c[i]);
    }
    sq_app_destroy(e.app);
    cr_assert_eq(atomic_load(&e.st.closes), N);
    cr_assert_eq(closes, N - (N + 2) / 3);
}

/* ---- the client role: a scripted server on a raw socket ---- */

#include <netinet/in.h>

typedef struct script {
    int lfd, port;
    uv_thread_t thread;
    const char *after; /* bytes sent in the 101's packet, after its head */
    size_t after_len;
} script_t;

static void script_main(void *arg)
{
    script_t *s = arg;
    struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) != 1)
        return;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return;
    char acc[64];
    raw_read_handshake(fd, acc);
    char res[512];
    int rl = snprintf(res, sizeof(res),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      acc);
    memcpy(res + rl, s->after, s->after_len);
    send(fd, res, (size_t)rl + s->after_len, MSG_NOSIGNAL);
    char sink[512]; /* until the client closes */
    while (recv(fd, sink, sizeof(sink), 0) > 0)
        ;
    close(fd);
}

typedef struct wcli {
    uv_loop_t loop;
    int messages, closes, close_code;
    char msg[64];
} wcli_t;

static void wc_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    wcli_t *c = data;
    snprintf(c->msg, sizeof(c->msg), "%.*s", (int)len, msg);
    if (++c->messages == 2)
        sq_ws_close(ws, SQ_WS_NORMAL, NULL);
}

static void wc_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    wcli_t *c = data;
    c->closes++;
    c->close_code = code;
}

static const sq_ws_handler_t wc_handler = {.message = wc_message, .close = wc_close};

static void script_run(wcli_t *c, const char *after, size_t after_len)
{
    script_t s = {.after = after, .after_len = after_len};
    s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(s.lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s.lfd, 8), 0);
    socklen_t sl = sizeof(a);
    cr_assert_eq(getsockname(s.lfd, (struct sockaddr *)&a, &sl), 0);
    s.port = ntohs(a.sin_port);
    cr_assert_eq(uv_thread_create(&s.thread, script_main, &s), 0);
    memset(c, 0, sizeof(*c));
    cr_assert_eq(uv_loop_init(&c->loop), 0);
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", s.port);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.handshake_timeout_ms = 5000;
    o.close_timeout_ms = 1000;
    o.idle_timeout_ms = 3000;
    cr_assert_eq(sq_ws_connect(&c->loop, url, &wc_handler, c, &o, NULL), 0);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&c->loop), 0);
    uv_thread_join(&s.thread);
    close(s.lfd);
}

Test(ws_edge, a_client_fails_a_masked_frame_from_the_server_with_1002, .timeout = 20)
{
    signal(SIGPIPE, SIG_IGN);
    /* "hi" masked with 01 02 03 04 */
    static const char masked[] = "\x81\x82\x01\x02\x03\x04"
                                 "ik";
    wcli_t c;
    script_run(&c, masked, 8);
    cr_assert_eq(c.closes, 1);
    cr_assert_eq(c.messages, 0);
    cr_assert_eq(c.close_code, 1002);
}

Test(ws_edge, a_client_reads_frames_in_the_packet_of_the_101, .timeout = 20)
{
    signal(SIGPIPE, SIG_IGN);
    static const char frames[] = "\x81\x03one"
                                 "\x01\x01t\x80\x02wo";
    wcli_t c;
    script_run(&c, frames, 12);
    cr_assert_eq(c.messages, 2);
    cr_assert_str_eq(c.msg, "two");
    cr_assert_eq(c.closes, 1);
}

/* ---- two servers on one loop ---- */

static void count_closed(sq_server_t *srv, void *data)
{
    (*(int *)data)++;
}

/* Runs the loop until `done` or 5 s. */
static void spin(uv_loop_t *loop, const int *done, int want)
{
    uint64_t until = th_now_ms() + 5000;
    while ((done == NULL || *done < want) && th_now_ms() < until) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (done == NULL)
            break;
        th_sleep_ms(1);
    }
}

Test(conn_edge, two_servers_on_one_loop_one_destroyed_with_connections_mid_close, .timeout = 30)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &hello_route, NULL), 0);
    sq_server_t *s[2];
    int port[2];
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(sq_server_create(&s[k], &loop, app, NULL), 0);
        cr_assert_eq(sq_server_listen(s[k], "127.0.0.1", 0), 0);
        port[k] = sq_server_port(s[k]);
    }
    enum { N = 200 };
    static th_conn_t c[2][N];
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) {
            cr_assert_eq(th_conn_open(&c[k][i], port[k]), 0);
            cr_assert_eq(th_conn_sends(&c[k][i], i % 2 ? "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                                                       : "GET / HTTP/1.1\r\nHo"),
                         0);
        }
    for (int r = 0; r < 200; r++)
        spin(&loop, NULL, 0);
    /* half of the first server's clients go, then it is destroyed while they close */
    for (int i = 0; i < N; i += 2)
        th_conn_abort(&c[0][i]);
    spin(&loop, NULL, 0);
    int closed = 0;
    cr_assert_eq(sq_server_destroy(s[0], 0, count_closed, &closed), 0);
    spin(&loop, &closed, 1);
    cr_assert_eq(closed, 1);
    /* the second still answers, its connections untouched */
    for (int i = 1; i < N; i += 2) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c[1][i], &r, 2000, false), 0);
        cr_assert_eq(r.status, 200);
        th_res_free(&r);
    }
    th_conn_t d;
    cr_assert_eq(th_conn_open(&d, port[1]), 0);
    cr_assert_eq(th_conn_sends(&d, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    for (int r = 0; r < 100; r++)
        spin(&loop, NULL, 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&d, &r, 2000, false), 0);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    th_conn_close(&d);
    cr_assert_eq(sq_server_destroy(s[1], 0, count_closed, &closed), 0);
    spin(&loop, &closed, 2);
    cr_assert_eq(closed, 2);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++)
            th_conn_close(&c[k][i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_app_destroy(app);
}

/* The slab alone: a slot just given back is taken last, and a block emptied while another
 * has room is kept aside once, then reused, so that a count moving across a block's edge
 * does not map and unmap a block each time. */
Test(conn_edge, slab_takes_a_freed_slot_last_and_keeps_one_empty_block_aside)
{
    sq_server_t *srv = calloc(1, sizeof(*srv));
    cr_assert_not_null(srv);
    srv->conn_size = sizeof(sq__conn_t);
    sq__conn_t *a = sq__conn_alloc(srv);
    cr_assert_not_null(a);
    sq__conn_dealloc(srv, a);
    sq__conn_t *b = sq__conn_alloc(srv);
    cr_assert_not_null(b);
    cr_assert_neq(a, b, "the slot just freed was taken again at once");
    /* fill the first block and start a second */
    enum { MAX = 512 };
    sq__conn_t *c[MAX];
    uintptr_t mask = ~(uintptr_t)(64 * 1024 - 1);
    int n = 0;
    c[n++] = b;
    while (n < MAX) {
        c[n] = sq__conn_alloc(srv);
        cr_assert_not_null(c[n]);
        if (((uintptr_t)c[n] & mask) != ((uintptr_t)b & mask))
            break;
        n++;
    }
    cr_assert_lt(n, MAX, "no second block after %d connections", n);
    sq__conn_t *second = c[n];
    uintptr_t second_blk = (uintptr_t)second & mask;
    sq__conn_dealloc(srv, second); /* the second block is empty: kept aside */
    cr_assert_eq((uintptr_t)srv->slab_spare, second_blk);
    sq__conn_dealloc(srv, c[0]); /* room in the first again */
    sq__conn_t *again = sq__conn_alloc(srv);
    cr_assert_eq((uintptr_t)again & mask, (uintptr_t)b & mask, "the block with room first");
    sq__conn_t *next = sq__conn_alloc(srv); /* the first is full: the spare comes back */
    cr_assert_eq((uintptr_t)next & mask, second_blk);
    cr_assert_null(srv->slab_spare);
    sq__conn_dealloc(srv, next);
    sq__conn_dealloc(srv, again);
    for (int i = 1; i < n; i++)
        sq__conn_dealloc(srv, c[i]);
    sq__slab_free(srv);
    free(srv);
}
