/* A misbehaving HTTP server for client tests: a listening socket on its own thread that
 * runs a scripted behaviour on every connection (each on a thread of its own, so that
 * connections open at once can be counted).
 *
 *     static void script(rh_conn_t *c, void *data) {
 *         rh_read_head(c, 2000);                      the request's head
 *         rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal");
 *     }                                               returning closes the connection
 *     rh_server_t *s = rh_start("127.0.0.1", script, NULL);
 *     ... fetch http://127.0.0.1:<rh_port(s)>/ ...
 *     rh_stop(s);                                     joins every thread
 *
 * Scripts run on server threads: they record (atomics, fields of rh_conn_t) and never
 * assert. Every wait is bounded, and rh_stop cuts them short.
 */
#ifndef SQUALL_TESTS_RAW_HTTP_H
#define SQUALL_TESTS_RAW_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct rh_server rh_server_t;

typedef struct rh_conn {
    int fd;
    int index; /* 0 for the first connection accepted, 1 for the next, ... */
    rh_server_t *srv;
    char buf[65536]; /* bytes read and not consumed */
    size_t len;
} rh_conn_t;

typedef void (*rh_script_fn)(rh_conn_t *c, void *data);

/* Listens on host ("127.0.0.1" or "::1") port 0. NULL on failure. */
rh_server_t *rh_start(const char *host, rh_script_fn fn, void *data);
int rh_port(const rh_server_t *s);
/* Stops accepting, cuts the scripts' waits short, joins every thread and frees s. */
void rh_stop(rh_server_t *s);

/* Connections accepted in all, and the most open at once. */
int rh_accepted(const rh_server_t *s);
int rh_max_open(const rh_server_t *s);
/* Request heads read by rh_read_head, in all connections. */
int rh_requests(const rh_server_t *s);

/* Reads until a whole request head is in c->buf and removes it (kept in `head`, up to
 * cap bytes, NUL-terminated, when not NULL). Returns its length, or -1 (closed, timeout,
 * stop). */
ssize_t rh_read_head(rh_conn_t *c, int timeout_ms, char *head, size_t cap);
/* Reads `n` more bytes (a body), dropping them. Returns 0 or -1. */
int rh_read_body(rh_conn_t *c, size_t n, int timeout_ms);
/* Sends a string / bytes. Returns 0 or -1. */
int rh_send(rh_conn_t *c, const char *s);
int rh_send_bytes(rh_conn_t *c, const void *data, size_t len);
/* Waits until the peer closes (or timeout, or stop). Returns 0 when it closed. */
int rh_wait_close(rh_conn_t *c, int timeout_ms);
/* Sleeps up to ms, less when the server stops. */
void rh_sleep(rh_conn_t *c, int ms);

#endif
