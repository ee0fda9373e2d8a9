/* squall — the test client's private structures (include/squall/testing.h): the client,
 * its memory connections, the response reader shared by requests and the WebSocket
 * handshake. */
#ifndef SQUALL_TESTING_INT_H
#define SQUALL_TESTING_INT_H

#include <stdbool.h>

#include "llhttp.h"
#include "server/server_int.h"
#include "squall/testing.h"

/* One memory connection of the client. The sink is written by the server until the
 * connection is freed (sink.closed), so a connection stays in the client's list, owned by
 * it, until then — also after the client has let it go. */
typedef struct sq__tconn {
    sq__memsink_t sink;
    size_t rd;   /* bytes of sink.out already read */
    bool in_use; /* the keep-alive connection, or a WebSocket's */
    struct sq__tconn *next;
} sq__tconn_t;

struct sq_test_s {
    uv_loop_t loop;
    sq_server_t *srv;
    uv_timer_t timer; /* the deadline of the call that is waiting */
    bool timed_out;
    bool srv_closed;
    bool destroying;
    bool waiting;       /* a call is running the loop (calls do not nest) */
    sq__tconn_t *conns; /* every connection not freed yet */
    sq__tconn_t *cur;   /* kept alive for the next request, or NULL */
    sq_test_ws_t *wss;  /* open WebSockets */
    sq_test_stream_t *streams; /* open streams */
};

/* A response being read (llhttp in response mode, RFC 9112 §6). */
typedef struct sq__tparse {
    llhttp_t p;
    struct sq__tres *res;
    sq__buf_t field, value;
    bool head; /* the request was HEAD: no body (RFC 9112 §6.3) */
    bool headers_done; /* the final response's head is read */
    bool done;
    int err;
} sq__tparse_t;

/* A response: the public part first. */
typedef struct sq__tres {
    sq_test_res_t pub;
    sq_test_header_t *hdrs;
    size_t cap;
    char *reason;
    sq__buf_t body;
    sq__buf_t raw;
    json_t *json;
    bool json_tried;
} sq__tres_t;

/* testing.c */
SQ__HIDDEN sq__tconn_t *sq__test_conn_open(sq_test_t *t);
/* Delivers bytes (len > 0) or the client's half-close (len 0) to the server. The loop's
 * clock is brought up to date first: it stood still since the last call ran the loop,
 * and the server dates its timeouts from it. */
SQ__HIDDEN void sq__test_feed(sq_test_t *t, sq__tconn_t *c, const void *data, size_t len);
/* Lets a connection go: the server closes it (the client's half-close ends any wait). */
SQ__HIDDEN void sq__test_conn_release(sq_test_t *t, sq__tconn_t *c, bool half_close);
/* Arms the deadline (0: none) / disarms it. */
SQ__HIDDEN void sq__test_deadline(sq_test_t *t, uint64_t ms);
/* Runs the loop one turn. Returns false when nothing is left that could ever wake it. */
SQ__HIDDEN bool sq__test_turn(sq_test_t *t);
/* Appends "Name: value\r\n" lines, checking each; `seen` gets a bit per header named
 * (SQ__TH_*). Returns 0 or UV_EINVAL / UV_ENOMEM. */
enum { SQ__TH_HOST = 1, SQ__TH_LENGTH = 2, SQ__TH_TE = 4, SQ__TH_TYPE = 8, SQ__TH_WSVER = 16 };
SQ__HIDDEN int sq__test_add_headers(sq__buf_t *b, const char *const *headers, unsigned *seen);
SQ__HIDDEN int sq__test_parse_init(sq__tparse_t *rp, bool head);
SQ__HIDDEN void sq__test_parse_free(sq__tparse_t *rp);
/* Reads what the connection has: 1 once the response is whole, 0 for more, or an error.
 * `eof`: the server ended its side, so a close-delimited body ends here. */
SQ__HIDDEN int sq__test_parse_pump(sq__tparse_t *rp, sq__tconn_t *c, bool eof);
/* Waits for a whole response on c. Returns 0 or an error; on success *res is the
 * response (moved out of rp). */
SQ__HIDDEN int sq__test_read_response(sq_test_t *t, sq__tconn_t *c, bool head, uint64_t timeout_ms,
                                      sq__tres_t **res);

/* Drops a connection as a client that gives up: a reset (.aborted for a handler). */
SQ__HIDDEN void sq__test_conn_reset(sq_test_t *t, sq__tconn_t *c);
/* The request's bytes, as sq_test_request sends them (testing.c). */
SQ__HIDDEN int sq__test_build_request(sq__buf_t *b, const char *method, const char *target,
                                      const char *const *headers, const void *body,
                                      size_t body_len);
/* Seals a response read whole or in part: NUL after the body, the public pointers. */
SQ__HIDDEN void sq__test_res_seal(sq__tres_t *r);

/* testing_stream.c */
SQ__HIDDEN void sq__test_streams_free_all(sq_test_t *t);

/* testing_ws.c */
SQ__HIDDEN void sq__test_ws_free_all(sq_test_t *t);

#endif
