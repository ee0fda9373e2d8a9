/* squall — a test client for applications: requests and WebSockets with no socket, as
 * FastAPI's TestClient does for an ASGI app.
 *
 *     sq_test_t *t;
 *     sq_test_create(&t, app, NULL);
 *     sq_test_res_t *res;
 *     sq_test_request(t, "PUT", "/items/5", (const char *[]){"X-Token: a", NULL},
 *                     "{\"name\":\"x\"}", &res);
 *     cr_assert_eq(res->status, 200);
 *     cr_assert_str_eq(sq_test_res_header(res, "content-type"), "application/json");
 *     cr_assert_eq(json_integer_value(json_object_get(sq_test_res_json(res), "id")), 5);
 *     sq_test_res_free(res);
 *     sq_test_destroy(t);
 *
 * A sq_test_t owns a libuv loop and a server on it with no listener. Each request is
 * written as HTTP/1.1 bytes into one of the server's memory connections (the transport's
 * io with no socket, lib/server/io.c) and the response is read back from the bytes the
 * server wrote, so a request goes through the same parser, limits, router, validation
 * and handlers, and its response through the same serializer, as one over TCP. Each call
 * runs the private loop until its answer is complete, so handlers that answer later —
 * from a timer, a fetch, the thread pool (.blocking) — work unchanged; a call that gets
 * no complete answer within its timeout returns UV_ETIMEDOUT.
 *
 * Everything here is for the one thread that created the sq_test_t: the loop runs only
 * inside these calls, on that thread (blocking handlers still run on libuv's pool). Two
 * threads may each have their own sq_test_t, sharing one app.
 *
 * Errors are negative libuv codes (UV_ETIMEDOUT, UV_EINVAL, UV_ENOMEM, ...) or squall's
 * (errno.h); sq_strerror names them. The objects returned (sq_test_res_t, the WebSocket
 * message) are allocated by squall, so their structs may gain fields at the end in a
 * later release without breaking a test compiled against this header.
 */
#ifndef SQUALL_TESTING_H
#define SQUALL_TESTING_H

#include <jansson.h>

#include "common.h"
#include "router.h"
#include "server.h"

typedef struct sq_test_s sq_test_t;
typedef struct sq_test_ws_s sq_test_ws_t;

/* Creates a test client for `app` (borrowed: it must outlive the client): a loop of its
 * own (sq_test_loop) and a server on it made with `opts` (NULL: the defaults; copied, as
 * sq_server_create does). Returns 0, UV_EINVAL (t or app NULL, or opts refused as by
 * sq_server_create), UV_ENOTSUP, or UV_ENOMEM. */
SQ_EXTERN int sq_test_create(sq_test_t **t, sq_app_t *app, const sq_server_opts_t *opts);

/* Destroys the server (grace 0: a handler still answering is told .aborted and must
 * finish its response, which then returns UV_ECANCELED), runs the loop until it has
 * closed, closes the client's own handles and the loop, and frees everything, WebSockets
 * still open included. Returns 0; UV_EBUSY when handles of the caller's were still open
 * on the loop (they are closed here with no close callback, so what they point to is
 * the caller's to free); UV_ETIMEDOUT when the server did not close within 10 s (a
 * handler holds its response past .aborted): the loop and server are then left as they
 * are. NULL is a no-op. */
SQ_EXTERN int sq_test_destroy(sq_test_t *t);

/* The private loop: for an app whose handlers need objects on the server's loop (a
 * timer, a hub's attachment, a client), created after sq_test_create and before the
 * first request. It runs only inside the sq_test_* calls; never run it yourself while a
 * request is on its way. Handles made on it should be closed before sq_test_destroy. */
SQ_EXTERN uv_loop_t *sq_test_loop(const sq_test_t *t);
/* The server under test: counters (sq_server_stats), its watchdog. */
SQ_EXTERN sq_server_t *sq_test_server(const sq_test_t *t);

/* Runs the private loop for `ms` milliseconds (0: one turn for what is ready, without
 * waiting): to let work the test started itself go on (a publish, a timer) between
 * requests. Returns 0; UV_EINVAL for a NULL t; SQ_EBUSY from inside a call that is
 * running the loop (a handler) or while the client is being destroyed. */
SQ_EXTERN int sq_test_run(sq_test_t *t, uint64_t ms);

/* The default timeout of every call that waits: 10 s. */
#define SQ_TEST_DEFAULT_TIMEOUT_MS 10000

/* Per-request options of sq_test_request_ex, filled with the defaults by
 * sq_test_req_opts_init (the struct grows by squall's rule, common.h). */
typedef struct sq_test_req_opts {
    size_t size;         /* set by sq_test_req_opts_init */
    uint64_t timeout_ms; /* whole response within this, else UV_ETIMEDOUT; 10 s;
                            0: no limit */
    int http_minor;      /* 1 (HTTP/1.1, default) or 0 (HTTP/1.0: no keep-alive unless
                            the headers ask for it) */
    int close;           /* 1: send `Connection: close`; the connection is not reused */
} sq_test_req_opts_t;

SQ_EXTERN void sq_test_req_opts_init_sized(sq_test_req_opts_t *opts, size_t size);
static inline void sq_test_req_opts_init(sq_test_req_opts_t *opts)
{
    sq_test_req_opts_init_sized(opts, sizeof(*opts));
}

/* A header of a response, as received (the value without surrounding whitespace). */
typedef struct sq_test_header {
    const char *name;
    const char *value;
} sq_test_header_t;

/* A response, allocated by squall and freed with sq_test_res_free. Every pointer in it
 * is owned by it. Fields are only ever added at the end. */
typedef struct sq_test_res {
    int status;         /* e.g. 200 */
    int http_minor;     /* HTTP/1.<http_minor> */
    const char *reason; /* the reason phrase ("OK"), NUL-terminated */
    const char *body;   /* de-chunked body, NUL-terminated (may hold NULs) */
    size_t body_len;
    const sq_test_header_t *headers; /* in the order received */
    size_t nheaders;
    int chunked;     /* 1: the body came chunked (a streaming response) */
    int keep_alive;  /* 1: the connection stays open for the next request */
    const char *raw; /* the response's exact bytes, as the server wrote them */
    size_t raw_len;
} sq_test_res_t;

/* Sends one request and waits for its whole response.
 *
 * `method` ("GET", "PUT", ...) and `target` ("/items/5?q=x", written as given: encode it
 * yourself) must not be NULL. `headers` is a NULL-terminated array of "Name: value"
 * lines, or NULL. `body` is a NUL-terminated string sent as the body, or NULL for none.
 * As FastAPI's TestClient does, `Host: testserver` is added unless `headers` has a Host,
 * and `Content-Length` whenever there is a body unless `headers` has a Content-Length or
 * Transfer-Encoding (then the body is sent as given).
 *
 * The request goes on the connection the previous one left open (keep-alive), or on a
 * new one. Returns 0 and *res (the caller's, sq_test_res_free) for any response the
 * server gave, error statuses included; or
 *   UV_EINVAL     t, method, target or res NULL; a header without ':'; a CR or LF in
 *                 method, target or a header;
 *   UV_ETIMEDOUT  no whole response within the timeout: the connection is dropped as a
 *                 client that gives up would (the handler is told .aborted);
 *   UV_EOF        the server closed the connection before a whole response;
 *   UV_EPROTO     the server's bytes are not an HTTP/1.1 response;
 *   SQ_ECLOSED    the client is being destroyed;
 *   SQ_EBUSY      called while another call of this client runs the loop (from a
 *                 handler): calls do not nest;
 *   UV_ENOMEM.
 * On an error *res is NULL. */
SQ_EXTERN int sq_test_request(sq_test_t *t, const char *method, const char *target,
                              const char *const *headers, const char *body, sq_test_res_t **res);
/* The same with a body of `body_len` bytes (binary, NULs allowed; body NULL: none) and
 * options (NULL: the defaults). */
SQ_EXTERN int sq_test_request_ex(sq_test_t *t, const char *method, const char *target,
                                 const char *const *headers, const void *body, size_t body_len,
                                 const sq_test_req_opts_t *opts, sq_test_res_t **res);
/* The same with `json` (borrowed) serialized compactly as the body and
 * `Content-Type: application/json` added unless `headers` has a Content-Type. */
SQ_EXTERN int sq_test_request_json(sq_test_t *t, const char *method, const char *target,
                                   const char *const *headers, const json_t *json,
                                   sq_test_res_t **res);
/* Writes `raw` (len bytes: one request, exactly as given, malformed or not) on a new
 * connection, reads the first response and drops the connection. For what a
 * well-behaved client never sends. Returns as sq_test_request; timeout_ms 0 means the
 * default. */
SQ_EXTERN int sq_test_request_raw(sq_test_t *t, const void *raw, size_t len, uint64_t timeout_ms,
                                  sq_test_res_t **res);

/* The first header `name` (case-insensitive) of res, or NULL. Borrowed from res. */
SQ_EXTERN const char *sq_test_res_header(const sq_test_res_t *res, const char *name);
/* The body parsed as JSON (parsed once, on the first call), or NULL when it is not JSON.
 * Borrowed: res keeps the reference (json_incref to keep it longer). */
SQ_EXTERN json_t *sq_test_res_json(sq_test_res_t *res);
/* Frees res. NULL is a no-op. */
SQ_EXTERN void sq_test_res_free(sq_test_res_t *res);

/* ---- WebSocket (RFC 6455) ---- */

/* Opcodes (RFC 6455 §5.2) of the messages sq_test_ws_recv returns, and of frames sent
 * with sq_test_ws_send_frame. */
enum {
    SQ_TEST_WS_CONT = 0x0,
    SQ_TEST_WS_TEXT = 0x1,
    SQ_TEST_WS_BINARY = 0x2,
    SQ_TEST_WS_CLOSE = 0x8,
    SQ_TEST_WS_PING = 0x9,
    SQ_TEST_WS_PONG = 0xA,
};

/* A message received, owned by its WebSocket: valid until the next sq_test_ws_recv or
 * sq_test_ws_close. */
typedef struct sq_test_ws_msg {
    int opcode;       /* SQ_TEST_WS_TEXT, SQ_TEST_WS_BINARY or SQ_TEST_WS_CLOSE */
    const char *data; /* the payload, NUL-terminated (a close: its reason) */
    size_t len;
    unsigned frames; /* frames it came in (1 unless the server fragmented it) */
    int close_code;  /* a close: the server's code (SQ_WS_NO_STATUS when its close
                        frame had none, SQ_WS_ABNORMAL when the connection ended
                        without one); otherwise 0 */
} sq_test_ws_msg_t;

/* Opens a WebSocket on `target` ("/ws/echo?room=a") with the RFC 6455 §4.1 handshake
 * (plus `headers`, a NULL-terminated array of "Name: value" lines, or NULL: e.g. an
 * Origin or a Sec-WebSocket-Protocol; a Host or a Sec-WebSocket-Version given there
 * replaces the client's), and checks the server's 101, its Upgrade and Connection, and
 * its Sec-WebSocket-Accept. The connection is a new one. Returns
 *   0          *ws is open (the caller's: sq_test_ws_close frees it);
 *   100-599    the status of the server's answer when it refused the upgrade (a 403 from
 *              an accept hook, a 404, a 426); with `refusal` non-NULL, *refusal is that
 *              response (the caller's: sq_test_res_free);
 *   UV_EPROTO  a 101 without the right Sec-WebSocket-Accept, or not a response;
 *   or an error as sq_test_request's.
 * `refusal` may be NULL; when given, it is NULL unless the upgrade was refused. */
SQ_EXTERN int sq_test_ws_connect(sq_test_t *t, const char *target, const char *const *headers,
                                 sq_test_ws_t **ws, sq_test_res_t **refusal);

/* Sends a text or binary message in one frame, masked as a client must (RFC 6455 §5.3).
 * The bytes are delivered to the server before this returns; its handlers run on the
 * next call that runs the loop (a recv, sq_test_run). Returns 0, SQ_ECLOSED once a close
 * was sent or received, or UV_ENOMEM. */
SQ_EXTERN int sq_test_ws_send_text(sq_test_ws_t *ws, const char *data, size_t len);
SQ_EXTERN int sq_test_ws_send_binary(sq_test_ws_t *ws, const void *data, size_t len);
/* Sends one frame as given: any opcode (fragments: SQ_TEST_WS_TEXT then
 * SQ_TEST_WS_CONT with fin 0 until the last; pings), masked. Nothing is checked: this is
 * for testing the server's handling of what clients send. Returns as send_text. */
SQ_EXTERN int sq_test_ws_send_frame(sq_test_ws_t *ws, int opcode, int fin, const void *data,
                                    size_t len);

/* Runs the loop until a whole message has arrived (fragments reassembled) or timeout_ms
 * passes (0: the default, 10 s). Pings are answered with pongs as a browser does, and
 * pongs are dropped. When the server closes, *msg is a SQ_TEST_WS_CLOSE message with its
 * code and reason, and the client has answered its close frame (RFC 6455 §5.5.1).
 * Returns 0 and *msg; UV_ETIMEDOUT; SQ_ECLOSED after a close was returned or sent;
 * UV_EPROTO for frames a server must not send (masked, reserved bits or opcodes, a
 * control frame over 125 bytes or fragmented), which also ends the connection; or
 * UV_ENOMEM. */
SQ_EXTERN int sq_test_ws_recv(sq_test_ws_t *ws, uint64_t timeout_ms, const sq_test_ws_msg_t **msg);

/* The closing handshake (RFC 6455 §7.1.2): sends a close frame with `code` (0: none) and
 * `reason` (may be NULL), waits up to 10 s for the server's close frame (data messages
 * that arrive first are dropped) and the end of the connection, and frees ws. With
 * `server_code` non-NULL, *server_code is the server's close code (as close_code above).
 * After the server closed first (recv returned its close), it only frees ws. Returns 0,
 * UV_ETIMEDOUT (no close from the server; ws is freed all the same), or UV_EINVAL for a
 * reason over 123 bytes (nothing is sent; ws is freed). NULL is a no-op. */
SQ_EXTERN int sq_test_ws_close(sq_test_ws_t *ws, int code, const char *reason, int *server_code);

/* ---- responses read as they come (FastAPI TestClient's stream()) ----
 *
 * For an event stream, a long poll, a chunked download: what a handler writes is read as
 * it arrives, without waiting for the end. A stream has a connection of its own. */
typedef struct sq_test_stream_s sq_test_stream_t;

/* Sends a request (as sq_test_request; body a NUL-terminated string or NULL) and runs the
 * loop until the response's head has arrived, within timeout_ms (0: the default, 10 s).
 * On success *s is the stream and *head (may be NULL) its status and headers, owned by
 * the stream (its body grows as sq_test_stream_read reads). Returns 0, UV_ETIMEDOUT
 * (no head in time: the connection is dropped), UV_EINVAL, SQ_EBUSY, SQ_ECLOSED,
 * UV_ENOMEM. */
SQ_EXTERN int sq_test_stream_open(sq_test_t *t, const char *method, const char *target,
                                  const char *const *headers, const char *body,
                                  uint64_t timeout_ms, sq_test_stream_t **s,
                                  const sq_test_res_t **head);
/* Runs the loop until more of the body has come, within timeout_ms (0: 10 s). Returns 0
 * with the new bytes in *data and *len (borrowed until the next call on the stream; the
 * chunked framing removed); UV_EOF once the body has ended and everything was read;
 * UV_ETIMEDOUT when nothing came in time (the stream stays open: read again). */
SQ_EXTERN int sq_test_stream_read(sq_test_stream_t *s, uint64_t timeout_ms, const char **data,
                                  size_t *len);
/* Closes the stream. One still open is dropped as a client that leaves (a reset: the
 * handler is told, .aborted). sq_test_destroy closes the streams left open. */
SQ_EXTERN void sq_test_stream_close(sq_test_stream_t *s);

#endif
