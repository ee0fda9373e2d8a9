/* A WebSocket route and a client, both with permessage-deflate: the client sends a
 * compressible message of 64 KiB, the route echoes it, and both sides compress. */
#include <stdio.h>
#include <string.h>

#include <squall.h>

static char big[64 * 1024];
static int echoed;

static void echo_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len); /* compressed: 128 bytes or more */
}

static void client_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    sq_ws_send_text(ws, big, sizeof(big));
}

static void client_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    echoed = len == sizeof(big) && memcmp(msg, big, len) == 0;
    sq_ws_close(ws, SQ_WS_NORMAL, "done");
}

static void client_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    sq_server_destroy(data, 1000, NULL, NULL); /* the loop ends once it is closed */
}

int main(void)
{
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = "squall compresses this "[i % 23];
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_app_t *app;
    sq_app_create(&app);

    sq_ws_opts_t wo;
    sq_ws_opts_init(&wo);
    wo.deflate = 1;                      /* off by default */
    wo.deflate_no_context_takeover = 1;  /* no zlib state kept between messages */
    static const sq_ws_handler_t echo = {.message = echo_message};
    sq_app_websocket(app, "/ws/echo", &echo, &wo, NULL);

    sq_server_t *srv;
    sq_server_opts_t so;
    sq_server_opts_init(&so);
    if (sq_server_create(&srv, &loop, app, &so) != 0 ||
        sq_server_listen(srv, "127.0.0.1", 0) != 0)
        return 1;
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws/echo", sq_server_port(srv));

    sq_ws_opts_t co;
    sq_ws_opts_init(&co);
    co.deflate = 1;                      /* offer permessage-deflate */
    static const sq_ws_handler_t client = {
        .open = client_open, .message = client_message, .close = client_close};
    if (sq_ws_connect(&loop, url, &client, srv, &co, NULL) != 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    sq_app_destroy(app);
    printf("echoed %s\n", echoed ? "whole" : "wrong");
    return echoed ? 0 : 1;
}
