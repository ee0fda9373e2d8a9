/* The server object itself, on the test's own loop: what sq_server_listen and
 * sq_server_listen_unix refuse (server.h), and that a refused call leaves the server
 * whole. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/harness.h"

static void on_closed(sq_server_t *srv, void *data)
{
    (*(int *)data)++;
}

Test(server, listen_refuses_bad_addresses_and_a_closing_server, .timeout = 10)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_server_t *srv;
    cr_assert_eq(sq_server_create(&srv, &loop, app, NULL), 0);

    cr_assert_eq(sq_server_listen(srv, "127.0.0.1", 65536), UV_EINVAL);
    cr_assert_eq(sq_server_listen(srv, "127.0.0.1", 65536 + 8000), UV_EINVAL);
    cr_assert_eq(sq_server_listen(srv, "127.0.0.1", -1), UV_EINVAL);
    cr_assert_eq(sq_server_listen(srv, "::1", 70000), UV_EINVAL);
    cr_assert_eq(sq_server_listen(srv, "", 0), UV_EINVAL); /* a name resolves: test_startup.c */
    char path[200];
    memset(path, 'p', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    cr_assert_eq(sq_server_listen_unix(srv, path), UV_ENAMETOOLONG);
    cr_assert_eq(sq_server_listen(srv, "127.0.0.1", 0), 0);
    cr_assert_gt(sq_server_port(srv), 0);

    char sock[64];
    snprintf(sock, sizeof(sock), "/tmp/squall-test-%d.sock", (int)getpid());
    int closed = 0;
    cr_assert_eq(sq_server_destroy(srv, 0, on_closed, &closed), 0);
    cr_assert_eq(sq_server_listen(srv, "127.0.0.1", 0), SQ_ECLOSED);
    cr_assert_eq(sq_server_listen_unix(srv, sock), SQ_ECLOSED);
    cr_assert_eq(access(sock, F_OK), -1, "no socket file made");
    cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), SQ_ECLOSED);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(closed, 1);
    sq_app_destroy(app);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
