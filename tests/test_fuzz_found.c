/* Inputs the libFuzzer harnesses of fuzz/ found that squall got wrong, each replayed as a
 * real client would send it (docs/reliability.md, "Fuzzing"). */
#include <criterion/criterion.h>
#include <string.h>

#include <squall.h>

#include "support/harness.h"

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="

static void echo_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_ws_handler_t echo = {.message = echo_message};

/* fuzz/fuzz_handshake.c: an upgrade request with a second Sec-WebSocket-Version line
 * after a good one was upgraded, the second line unread. RFC 6455 §11.3.5: the header
 * must not appear more than once in a request; §4.2.1 asks for one version, 13, and a
 * request that is not a valid handshake is refused (as a repeated Sec-WebSocket-Key is,
 * with 400). Whatever the order, no 101. */
Test(fuzz_found, repeated_websocket_version_is_not_upgraded, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/ws", &echo, NULL, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static const char *const versions[][2] = {{"13", "8"}, {"8", "13"}, {"13", "13"}};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        char req[512];
        snprintf(req, sizeof(req),
                 "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: %s\r\n"
                 "Sec-WebSocket-Version: %s\r\n\r\n",
                 versions[i][0], versions[i][1]);
        th_res_t res;
        cr_assert_eq(th_request(port, req, &res), 0);
        cr_expect(res.status >= 400 && res.status <= 499, "versions %s, %s: status %d",
                  versions[i][0], versions[i][1], res.status);
        cr_expect_null(th_res_header(&res, "Sec-WebSocket-Accept"), "versions %s, %s",
                       versions[i][0], versions[i][1]);
        th_res_free(&res);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
