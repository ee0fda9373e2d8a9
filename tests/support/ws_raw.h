/* squall test helpers — a WebSocket peer written by hand over th_conn_t (harness.h): the
 * handshake and frames built byte by byte, to send what a well-behaved client never
 * sends (RFC 6455 §5, §7.4.1, §8.1) and to parse what the server answers with the tests'
 * own code. Shared by tests/test_ws.c and tests/test_ws_timeouts.c.
 */
#ifndef SQUALL_TESTS_WS_RAW_H
#define SQUALL_TESTS_WS_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/harness.h"

/* RFC 6455 §1.3's example: this key must be answered with this accept value. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BIN = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };
#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

/* "GET /echo" with a valid handshake. */
extern const char upgrade_request[];

/* Names the case being checked in expect_close's and raw_upgrade's messages. */
extern const char *raw_case;

/* Builds one frame: b0 is FIN | RSV bits | opcode; the payload is masked (RFC 6455 §5.3)
 * when `mask`. `out` has room for len + 14 bytes. Returns the frame's length. */
size_t frame_build(uint8_t *out, uint8_t b0, bool mask, const void *payload, size_t len);
void frame_send(th_conn_t *c, uint8_t b0, bool mask, const void *payload, size_t len);
/* A close frame's payload: the code, big-endian, and the reason. */
size_t close_payload(uint8_t *out, int code, const char *reason);

typedef struct rframe {
    uint8_t b0;
    int opcode;
    bool fin, masked;
    uint8_t *payload; /* NUL-terminated copy */
    size_t len;
} rframe_t;

/* Reads one whole frame the server sent. Returns 0, UV_EOF or UV_ETIMEDOUT. */
int frame_read(th_conn_t *c, rframe_t *f, int timeout_ms);
void frame_free(rframe_t *f);
/* Reads a frame and checks it is a FIN data frame with this opcode and payload. */
void expect_frame(th_conn_t *c, int opcode, const void *payload, size_t len);
/* The server fails the connection: a close frame with `code`, then the TCP close. */
void expect_close(th_conn_t *c, int code);

/* Opens a connection, sends `request` (an upgrade request) followed by `extra` bytes in
 * the same write, and checks the 101. */
void raw_upgrade_req(th_conn_t *c, int port, const char *request, const void *extra,
                     size_t extra_len);
/* ...with upgrade_request. */
void raw_upgrade_with(th_conn_t *c, int port, const void *extra, size_t extra_len);
void raw_upgrade(th_conn_t *c, int port);

/* A scripted server's side: reads a handshake request from fd (up to its blank line, 5 s
 * at most) and writes into accept_value (64 bytes) the Sec-WebSocket-Accept for its key,
 * base64(SHA-1(key + GUID)) computed with OpenSSL, not with squall's code. */
void raw_read_handshake(int fd, char accept_value[64]);

#endif
