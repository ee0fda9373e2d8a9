/* WebSocket deadlines (lib/ws/ws.c): a connection taken over from HTTP leaves the server's
 * timeout lists, so each WebSocket keeps its own — the idle timeout (nothing received),
 * the send stall (queued bytes that do not drain), the message-assembly deadline (a
 * fragmented message or a large frame that does not finish), keepalive pings and the
 * close timeout. Each test runs the server on its own thread (tests/support/harness.h)
 * against a raw peer (tests/support/ws_raw.h) that stalls in one way, with short
 * deadlines, and checks that the server closes it with the right code, that its
 * connection count and heap come back, and that a peer that keeps talking is left alone.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <squall.h>

#include "support/harness.h"
#include "support/ws_raw.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws_timeouts, .init = ignore_sigpipe);

/* What the route's handler saw (server thread; atomics for the test thread). */
typedef struct seen {
    atomic_int opens, messages, closes, close_code;
    char reason[128]; /* written in .close, read after it was counted */
} seen_t;

static void seen_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    seen_t *s = data;
    atomic_fetch_add(&s->opens, 1);
}

static void seen_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    seen_t *s = data;
    atomic_fetch_add(&s->messages, 1);
    sq_ws_send(ws, binary, msg, len);
}

static void seen_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    seen_t *s = data;
    snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "");
    atomic_store(&s->close_code, code);
    atomic_fetch_add(&s->closes, 1);
}

static const sq_ws_handler_t seen_echo = {
    .open = seen_open,
    .message = seen_message,
    .close = seen_close,
};

typedef struct tenv {
    sq_app_t *app;
    th_server_t *ts;
    int port;
    seen_t seen;
    size_t heap0;
} tenv_t;

/* Bytes malloc has handed out and not taken back (0 where malloc keeps no count of its
 * own, as under AddressSanitizer). */
static size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* A server with /echo on its own thread, with the route options `o`. */
static void tenv_start(tenv_t *t, const sq_ws_opts_t *o)
{
    memset(t, 0, sizeof(*t));
    cr_assert_eq(sq_app_create(&t->app), 0);
    cr_assert_eq(sq_app_websocket(t->app, "/echo", &seen_echo, o, &t->seen), 0);
    t->ts = th_server_start(t->app, NULL);
    t->port = th_server_port(t->ts);
    t->heap0 = heap_in_use();
}

static void tenv_stop(tenv_t *t)
{
    th_server_stop(t->ts, 1000);
    sq_app_destroy(t->app);
}

static uint64_t open_connections(tenv_t *t)
{
    sq_server_stats_t st;
    th_server_stats(t->ts, &st);
    return st.connections_open;
}

/* Waits until the server holds no connection. Returns the milliseconds it took, or
 * fails the test at the deadline. */
static uint64_t wait_no_connections(tenv_t *t, int timeout_ms)
{
    uint64_t t0 = th_now_ms();
    cr_assert_eq(th_server_wait_open(t->ts, 0, timeout_ms), 0,
                 "the server still holds the connection after %d ms", timeout_ms);
    return th_now_ms() - t0;
}

/* The heap is back to what it was before the connection (give or take what the server
 * keeps pooled for reuse). */
static void expect_heap_back(tenv_t *t, size_t held)
{
    size_t now = heap_in_use();
    if (t->heap0 == 0 || now == 0)
        return; /* no count of its own (sanitizer's allocator) */
    cr_assert_lt(now, t->heap0 + held / 2,
                 "the heap holds %zu bytes more than before the connection (%zu were held)",
                 now > t->heap0 ? now - t->heap0 : 0, held);
}

/* Default options with every deadline off, so each test turns on the one it checks. */
static void opts_quiet(sq_ws_opts_t *o)
{
    sq_ws_opts_init(o);
    o->idle_timeout_ms = 0;
    o->message_timeout_ms = 0;
    o->ping_interval_ms = 0;
    o->close_timeout_ms = 300;
}

enum { HELD = 4 * 1024 * 1024 };

/* ---- the defaults ---- */

Test(ws_timeouts, defaults_turn_the_idle_and_message_deadlines_and_keepalive_on)
{
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    cr_assert_eq(o.idle_timeout_ms, 60000);
    cr_assert_eq(o.message_timeout_ms, 60000);
    cr_assert_eq(o.ping_interval_ms, 20000);
    cr_assert_eq(o.pong_timeout_ms, 20000);
    cr_assert_eq(o.close_timeout_ms, 5000);
    /* a peer that answers pings is never idle: pings come well within the idle timeout */
    cr_assert_lt(o.ping_interval_ms + o.pong_timeout_ms, o.idle_timeout_ms);
}

/* ---- a message that does not finish ---- */

/* Half a fragmented message of HELD bytes, then nothing: 1008 at the assembly deadline,
 * TCP closed, the bytes freed. */
Test(ws_timeouts, half_a_fragmented_message_then_silence_is_closed_with_1008, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.message_timeout_ms = 300;
    tenv_t t;
    tenv_start(&t, &o);
    uint8_t *half = malloc(HELD);
    memset(half, 'h', HELD);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    uint64_t t0 = th_now_ms();
    frame_send(&c, OP_BIN, true, half, HELD); /* no FIN: more fragments were promised */
    free(half);
    raw_case = "half a fragmented message";
    expect_close(&c, SQ_WS_POLICY);
    uint64_t took = th_now_ms() - t0;
    cr_assert_geq(took, 250, "closed after %llu ms; the deadline is 300", (unsigned long long)took);
    th_conn_close(&c);
    wait_no_connections(&t, 5000);
    expect_heap_back(&t, HELD);
    cr_assert_eq(th_wait_atomic(&t.seen.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&t.seen.close_code), SQ_WS_POLICY);
    cr_assert_eq(atomic_load(&t.seen.messages), 0);
    tenv_stop(&t);
}

/* One frame announced at HELD bytes, half of it sent: the same deadline holds. */
Test(ws_timeouts, a_large_frame_that_stops_arriving_is_closed_with_1008, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.message_timeout_ms = 300;
    tenv_t t;
    tenv_start(&t, &o);
    uint8_t *frame = malloc(HELD + 14);
    memset(frame + 14, 'f', HELD);
    size_t n = frame_build(frame, FIN | OP_BIN, true, frame + 14, HELD);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    cr_assert_eq(th_conn_send(&c, frame, n / 2), 0);
    free(frame);
    raw_case = "half of one large frame";
    expect_close(&c, SQ_WS_POLICY);
    th_conn_close(&c);
    wait_no_connections(&t, 5000);
    expect_heap_back(&t, HELD / 2);
    tenv_stop(&t);
    cr_assert_eq(atomic_load(&t.seen.close_code), SQ_WS_POLICY);
}

/* Fragments that keep coming, each well within the idle timeout, but a message that
 * takes longer than the assembly deadline: the trickle does not hold memory forever. */
Test(ws_timeouts, a_message_trickled_past_the_assembly_deadline_is_closed, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.message_timeout_ms = 400;
    o.idle_timeout_ms = 200;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    frame_send(&c, OP_TEXT, true, "a", 1);
    rframe_t f;
    int rc = UV_ETIMEDOUT;
    uint64_t end = th_now_ms() + 5000;
    while (th_now_ms() < end && (rc = frame_read(&c, &f, 50)) == UV_ETIMEDOUT)
        frame_send(&c, OP_CONT, true, "b", 1);
    cr_assert_eq(rc, 0, "the server answered: %s", uv_err_name(rc));
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_eq(f.payload[0] << 8 | f.payload[1], SQ_WS_POLICY);
    frame_free(&f);
    th_conn_close(&c);
    wait_no_connections(&t, 5000);
    tenv_stop(&t);
}

/* ---- a peer that says nothing ---- */

/* Silence: 1001 at the idle timeout; no answer, so TCP is dropped after the close
 * timeout. */
Test(ws_timeouts, a_silent_peer_is_closed_with_1001_then_dropped, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 300;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    uint64_t t0 = th_now_ms(); /* before the upgrade: the idle clock starts with it */
    raw_upgrade(&c, t.port);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert_geq(f.len, 2);
    cr_assert_eq(f.payload[0] << 8 | f.payload[1], SQ_WS_GOING_AWAY);
    frame_free(&f);
    cr_assert_geq(took, 250, "closed after %llu ms; the idle timeout is 300",
                  (unsigned long long)took);
    /* the peer never answers: the server drops TCP at the close timeout */
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    wait_no_connections(&t, 5000);
    cr_assert_eq(th_wait_atomic(&t.seen.closes, 1, 5000), 1);
    cr_assert_eq(atomic_load(&t.seen.close_code), SQ_WS_GOING_AWAY);
    cr_assert_str_eq(t.seen.reason, "idle timeout");
    tenv_stop(&t);
}

/* A peer that answers the idle close gets its own code reported, like any close. */
Test(ws_timeouts, a_silent_peer_that_answers_the_idle_close_ends_cleanly, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 200;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_CLOSE);
    frame_free(&f);
    uint8_t p[8];
    frame_send(&c, FIN | OP_CLOSE, true, p, close_payload(p, SQ_WS_GOING_AWAY, NULL));
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    wait_no_connections(&t, 5000);
    tenv_stop(&t);
    cr_assert_eq(atomic_load(&t.seen.closes), 1);
    cr_assert_eq(atomic_load(&t.seen.close_code), SQ_WS_GOING_AWAY);
}

/* ---- a peer that floods and never reads ---- */

/* Sends without blocking until the socket has taken nothing for `quiet_ms` (the server
 * stopped reading) or `max` bytes went. Returns the bytes sent. */
static size_t flood(th_conn_t *c, const uint8_t *frame, size_t n, size_t max, int quiet_ms)
{
    size_t sent = 0, off = 0;
    uint64_t last = th_now_ms();
    while (sent < max && th_now_ms() - last < (uint64_t)quiet_ms) {
        ssize_t w = send(c->fd, frame + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            off = (off + (size_t)w) % n;
            last = th_now_ms();
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            /* until the socket takes more, or the quiet time is up */
            uint64_t quiet_end = last + (uint64_t)quiet_ms, now = th_now_ms();
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            if (now < quiet_end)
                poll(&pfd, 1, (int)(quiet_end - now));
        } else {
            break; /* the server closed it */
        }
    }
    return sent;
}

/* Pings, as fast as the server reads them, from a peer that reads nothing: the pongs pile
 * up, the server stops reading, and then nothing moves either way. The connection is
 * cleaned up within the idle timeout and the close timeout. */
Test(ws_timeouts, a_ping_flood_that_never_reads_is_closed_in_bounded_time, .timeout = 30)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 300;
    o.max_queued_bytes = 64 * 1024;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    int small = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    uint8_t ping[125], frame[140];
    memset(ping, 'p', sizeof(ping));
    size_t n = frame_build(frame, FIN | OP_PING, true, ping, sizeof(ping));
    size_t sent = flood(&c, frame, n, 256u << 20, 200);
    cr_assert_gt(sent, 64 * 1024, "the flood got %zu bytes out", sent);
    uint64_t took = wait_no_connections(&t, 8000);
    cr_assert_lt(took, 8000, "cleaned up after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    expect_heap_back(&t, 1u << 20);
    cr_assert_eq(th_wait_atomic(&t.seen.closes, 1, 5000), 1);
    tenv_stop(&t);
}

/* A peer that keeps sending messages (so it is never idle) but reads nothing, on a
 * route that drops what does not fit (SQ_WS_OVERFLOW_DROP, so the send limit never
 * closes it): its queue stops draining, and that counts as a stall. */
Test(ws_timeouts, a_talking_peer_whose_queue_never_drains_is_dropped, .timeout = 30)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 300;
    o.max_queued_bytes = 64 * 1024;
    o.overflow = SQ_WS_OVERFLOW_DROP;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    int small = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    enum { MSG = 16 * 1024 };
    uint8_t *msg = malloc(MSG), *frame = malloc(MSG + 14);
    memset(msg, 'm', MSG);
    size_t n = frame_build(frame, FIN | OP_BIN, true, msg, MSG);
    uint64_t end = th_now_ms() + 8000;
    bool closed = false;
    while (!closed && th_now_ms() < end) {
        /* one message every 20 ms: never idle */
        if (flood(&c, frame, n, n, 50) < n || open_connections(&t) == 0)
            closed = true;
        th_sleep_ms(20);
    }
    cr_assert(closed, "the server still holds a peer whose queue has not moved for 8 s");
    wait_no_connections(&t, 5000);
    th_conn_close(&c);
    free(msg);
    free(frame);
    cr_assert_eq(th_wait_atomic(&t.seen.closes, 1, 5000), 1);
    cr_assert_str_eq(t.seen.reason, "send stalled");
    tenv_stop(&t);
    cr_assert_gt(atomic_load(&t.seen.messages), 0);
}

/* ---- peers that are alive ---- */

/* A message every 100 ms, with every deadline at 300 ms: nothing is closed, every message
 * is echoed. */
Test(ws_timeouts, a_peer_that_keeps_talking_is_not_closed, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 300;
    o.message_timeout_ms = 300;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    for (int i = 0; i < 12; i++) {
        char m[16];
        int ml = snprintf(m, sizeof(m), "tick %d", i);
        /* a fragmented message too, each part in time */
        frame_send(&c, OP_TEXT, true, m, 4);
        th_sleep_ms(50);
        frame_send(&c, FIN | OP_CONT, true, m + 4, (size_t)ml - 4);
        expect_frame(&c, OP_TEXT, m, (size_t)ml);
        th_sleep_ms(50);
    }
    cr_assert_eq(open_connections(&t), 1);
    uint8_t p[8];
    frame_send(&c, FIN | OP_CLOSE, true, p, close_payload(p, SQ_WS_NORMAL, NULL));
    raw_case = "the peer's own close";
    expect_close(&c, SQ_WS_NORMAL);
    th_conn_close(&c);
    tenv_stop(&t);
    cr_assert_eq(atomic_load(&t.seen.messages), 12);
    cr_assert_eq(atomic_load(&t.seen.close_code), SQ_WS_NORMAL);
}

/* A peer that never sends a message but answers the keepalive pings is not idle. */
Test(ws_timeouts, keepalive_pongs_keep_a_quiet_peer_open, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    o.idle_timeout_ms = 300;
    o.ping_interval_ms = 100;
    o.pong_timeout_ms = 200;
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t c;
    raw_upgrade(&c, t.port);
    /* answered pings for 1.2 s (4 idle timeouts) and at least 5 of them: on a loaded
     * machine the pings may come slower, and then it takes longer (up to 10 s) */
    int pings = 0;
    uint64_t t0 = th_now_ms(), end = t0 + 10000;
    while ((th_now_ms() - t0 < 1200 || pings < 5) && th_now_ms() < end) {
        rframe_t f;
        int rc = frame_read(&c, &f, 50);
        if (rc == UV_ETIMEDOUT)
            continue;
        cr_assert_eq(rc, 0, "%s", uv_err_name(rc));
        cr_assert_eq(f.opcode, OP_PING, "only pings, got opcode %d", f.opcode);
        frame_send(&c, FIN | OP_PONG, true, f.payload, f.len);
        frame_free(&f);
        pings++;
    }
    cr_assert_geq(pings, 5, "%d pings in %llu ms at a 100 ms interval", pings,
                  (unsigned long long)(th_now_ms() - t0));
    cr_assert_eq(open_connections(&t), 1);
    cr_assert_eq(atomic_load(&t.seen.closes), 0);
    th_conn_close(&c);
    tenv_stop(&t);
}

/* 0 disables each deadline: a silent peer and half a message stay as long as the peer
 * wants (here: well past where the deadlines would have been). */
Test(ws_timeouts, zero_disables_the_idle_and_message_deadlines, .timeout = 20)
{
    sq_ws_opts_t o;
    opts_quiet(&o);
    tenv_t t;
    tenv_start(&t, &o);
    th_conn_t silent, half;
    raw_upgrade(&silent, t.port);
    raw_upgrade(&half, t.port);
    frame_send(&half, OP_TEXT, true, "half", 4);
    rframe_t f;
    cr_assert_eq(frame_read(&silent, &f, 700), UV_ETIMEDOUT);
    cr_assert_eq(frame_read(&half, &f, 10), UV_ETIMEDOUT);
    cr_assert_eq(open_connections(&t), 2);
    frame_send(&half, FIN | OP_CONT, true, "!", 1);
    expect_frame(&half, OP_TEXT, "half!", 5);
    th_conn_close(&silent);
    th_conn_close(&half);
    tenv_stop(&t);
}
