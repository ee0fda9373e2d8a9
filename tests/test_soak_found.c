/* What scripts/soak.sh found, each stated as the contract it broke, with the server on its
 * own loop thread (tests/support/harness.h) and blocking sockets as the clients.
 *
 * - Many request heads that time out at once: each gets its 408 and is closed, and the
 *   server lives on. respond_error (lib/http/h1_conn.c) cleared a flag on the exchange
 *   after sq_res_send_error had given it back; with more exchanges released at once than
 *   the server's pool keeps (SQ__POOL_MAX, 64), the exchange was freed, so the write was a
 *   use after free (ASan: heap-use-after-free in respond_error; without it, hello died of
 *   a SIGSEGV in malloc under 300 slowloris connections). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "support/harness.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(soak_found, .init = ignore_sigpipe);

static void plaintext_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t plaintext = {.get = plaintext_get};

/* More than the exchange pool holds (SQ__POOL_MAX, 64), so that exchanges are freed when
 * the 408s release them, not pooled. */
#define SLOW_CONNS 300

/* A head that never ends (slowloris), on many connections at once: every one gets 408
 * and is closed at header_timeout_ms, and a new client is served afterwards. */
Test(soak_found, many_heads_timing_out_at_once_each_get_408_and_the_server_lives,
     .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = 300;
    th_server_t *ts = th_server_start(app, &o);
    int port = th_server_port(ts);

    th_conn_t *c = calloc(SLOW_CONNS, sizeof(*c));
    cr_assert_not_null(c);
    for (int i = 0; i < SLOW_CONNS; i++) {
        cr_assert_eq(th_conn_open(&c[i], port), 0, "connection %d", i);
        cr_assert_eq(th_conn_sends(&c[i], "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Slow: a"), 0);
    }
    int got408 = 0, closed = 0;
    for (int i = 0; i < SLOW_CONNS; i++) {
        th_res_t r;
        if (th_conn_read_res(&c[i], &r, 10000, false) == 0) {
            got408 += r.status == 408;
            th_res_free(&r);
        }
        closed += th_conn_wait_closed(&c[i], 5000) == 0;
        th_conn_close(&c[i]);
    }
    free(c);
    cr_assert_eq(got408, SLOW_CONNS, "408 on %d of %d connections", got408, SLOW_CONNS);
    cr_assert_eq(closed, SLOW_CONNS, "closed after the 408: %d of %d", closed, SLOW_CONNS);
    th_expect_healthy(port, "/plaintext", "ok");
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* The same through a 400: heads begun on many connections (each holds an exchange), then
 * each ended by a line that is not a header. Every one gets 400 and is closed. */
Test(soak_found, many_bad_heads_at_once_each_get_400_and_the_server_lives, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);

    th_conn_t *c = calloc(SLOW_CONNS, sizeof(*c));
    cr_assert_not_null(c);
    for (int i = 0; i < SLOW_CONNS; i++) {
        cr_assert_eq(th_conn_open(&c[i], port), 0, "connection %d", i);
        cr_assert_eq(th_conn_sends(&c[i], "GET /plaintext HTTP/1.1\r\nHost: t\r\n"), 0);
    }
    th_sleep_ms(200); /* every head begun: an exchange each */
    for (int i = 0; i < SLOW_CONNS; i++)
        cr_assert_eq(th_conn_sends(&c[i], "no colon here\r\n\r\n"), 0);
    int got400 = 0, closed = 0;
    for (int i = 0; i < SLOW_CONNS; i++) {
        th_res_t r;
        if (th_conn_read_res(&c[i], &r, 10000, false) == 0) {
            got400 += r.status == 400;
            th_res_free(&r);
        }
        closed += th_conn_wait_closed(&c[i], 5000) == 0;
        th_conn_close(&c[i]);
    }
    free(c);
    cr_assert_eq(got400, SLOW_CONNS, "400 on %d of %d connections", got400, SLOW_CONNS);
    cr_assert_eq(closed, SLOW_CONNS, "closed after the 400: %d of %d", closed, SLOW_CONNS);
    th_expect_healthy(port, "/plaintext", "ok");
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
