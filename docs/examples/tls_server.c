/* HTTPS and WSS on one port: GET / and a WebSocket echo on /ws, over TLS.
 *
 *     cc tls_server.c $(pkg-config --cflags --libs squall) -o tls_server
 *     ./tls_server cert.pem key.pem
 */
#include <signal.h>
#include <stdio.h>

#include <squall.h>

static void hello(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hello over TLS\n", 15);
}

static void echo(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_handler_t root = {.get = hello};
static const sq_ws_handler_t ws_echo = {.message = echo};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tls_server CERT KEY\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sq_tls_ctx_t *tls;
    int rc = sq_tls_ctx_server(&tls, argv[1], argv[2]); /* chain first, then the key */
    if (rc != 0) {
        fprintf(stderr, "tls_server: %s, %s: %s\n", argv[1], argv[2], sq_strerror(rc));
        return 1;
    }
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_route(app, "/", &root, NULL);
    sq_app_websocket(app, "/ws", &ws_echo, NULL, NULL);
    sq_server_opts_t opts;
    sq_server_opts_init(&opts);
    opts.tls = tls;
    uv_loop_t *loop = uv_default_loop();
    sq_server_t *srv;
    rc = sq_server_create(&srv, loop, app, &opts);
    sq_tls_ctx_free(tls); /* the server holds a reference of its own */
    if (rc == 0 && (rc = sq_server_listen(srv, "127.0.0.1", 8443)) != 0)
        sq_server_destroy(srv, 0, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "tls_server: %s\n", sq_strerror(rc));
        return 1;
    }
    printf("serving https://127.0.0.1:8443/ and wss://127.0.0.1:8443/ws\n");
    uv_run(loop, UV_RUN_DEFAULT);
    sq_app_destroy(app);
    return 0;
}
