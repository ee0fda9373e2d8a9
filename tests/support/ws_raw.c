/* Hand-built WebSocket frames over the harness's blocking socket (see ws_raw.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "support/ws_raw.h"

/* Builds one frame: b0 is FIN | RSV bits | opcode; the payload is masked (RFC 6455 §5.3)
 * when `mask`. `out` has room for len + 14 bytes. Returns the frame's length. */
size_t frame_build(uint8_t *out, uint8_t b0, bool mask, const void *payload, size_t len)
{
    static const uint8_t key[4] = {0x37, 0xFA, 0x21, 0x3D};
    const uint8_t *p = payload;
    size_t n = 0;
    out[n++] = b0;
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[n++] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(out + n, key, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[n + i] = mask ? p[i] ^ key[i & 3] : p[i];
    return n + len;
}

void frame_send(th_conn_t *c, uint8_t b0, bool mask, const void *payload, size_t len)
{
    uint8_t *f = malloc(len + 14);
    cr_assert_not_null(f);
    size_t n = frame_build(f, b0, mask, payload, len);
    cr_assert_eq(th_conn_send(c, f, n), 0);
    free(f);
}

/* A close frame's payload: the code, big-endian, and the reason. */
size_t close_payload(uint8_t *out, int code, const char *reason)
{
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 0)
        memcpy(out + 2, reason, rl);
    return 2 + rl;
}

/* Reads one whole frame the server sent. Returns 0, UV_EOF or UV_ETIMEDOUT. */
int frame_read(th_conn_t *c, rframe_t *f, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    memset(f, 0, sizeof(*f));
    for (;;) {
        if (c->len >= 2) {
            const uint8_t *b = (const uint8_t *)c->buf;
            uint64_t len = b[1] & 0x7F;
            size_t hl = len == 126 ? 4 : len == 127 ? 10 : 2;
            bool masked = (b[1] & 0x80) != 0;
            if (masked)
                hl += 4;
            if (c->len >= hl) {
                if (len == 126) {
                    len = (uint64_t)b[2] << 8 | b[3];
                } else if (len == 127) {
                    len = 0;
                    for (int i = 0; i < 8; i++)
                        len = len << 8 | b[2 + i];
                }
                if (c->len >= hl + len) {
                    f->b0 = b[0];
                    f->opcode = b[0] & 0x0F;
                    f->fin = (b[0] & 0x80) != 0;
                    f->masked = masked;
                    f->len = (size_t)len;
                    f->payload = malloc(f->len + 1);
                    cr_assert_not_null(f->payload);
                    memcpy(f->payload, b + hl, f->len);
                    f->payload[f->len] = '\0';
                    size_t used = hl + f->len;
                    memmove(c->buf, c->buf + used, c->len - used);
                    c->len -= used;
                    return 0;
                }
            }
        }
        if (c->eof)
            return UV_EOF;
        uint64_t now = th_now_ms();
        if (now >= end)
            return UV_ETIMEDOUT;
        th_conn_read_some(c, (int)(end - now));
    }
}

void frame_free(rframe_t *f)
{
    free(f->payload);
    f->payload = NULL;
}

/* Reads a frame and checks it is a FIN data frame with this opcode and payload. */
void expect_frame(th_conn_t *c, int opcode, const void *payload, size_t len)
{
    rframe_t f;
    int rc = frame_read(c, &f, 5000);
    cr_assert_eq(rc, 0, "waiting for opcode %d: %s", opcode, uv_err_name(rc));
    cr_assert_not(f.masked, "a server never masks (RFC 6455 §5.1)");
    cr_assert_eq(f.b0 & 0x70, 0, "no reserved bits from the server");
    cr_assert(f.fin);
    cr_assert_eq(f.opcode, opcode, "opcode %d, expected %d", f.opcode, opcode);
    cr_assert_eq(f.len, len, "%zu bytes, expected %zu", f.len, len);
    cr_assert(len == 0 || memcmp(f.payload, payload, len) == 0);
    frame_free(&f);
}

/* Names the case being checked in expect_close's messages. */
const char *raw_case = "";

/* The server fails the connection: a close frame with `code`, then the TCP close. */
void expect_close(th_conn_t *c, int code)
{
    rframe_t f;
    int rc = frame_read(c, &f, 5000);
    cr_assert_eq(rc, 0, "%s: waiting for close %d: %s", raw_case, code, uv_err_name(rc));
    cr_assert_eq(f.opcode, OP_CLOSE, "%s: opcode %d, expected a close frame", raw_case, f.opcode);
    cr_assert_geq(f.len, 2, "%s: a close frame without a status code; expected %d", raw_case, code);
    int got = f.payload[0] << 8 | f.payload[1];
    cr_assert_eq(got, code, "%s: close code %d, expected %d (reason \"%s\")", raw_case, got, code,
                 (char *)f.payload + 2);
    frame_free(&f);
    cr_assert_eq(th_conn_wait_closed(c, 5000), 0, "%s: the server closes TCP after failing",
                 raw_case);
}

const char upgrade_request[] = "GET /echo HTTP/1.1\r\n"
                               "Host: test\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Key: " WS_KEY "\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "\r\n";

/* Opens a connection, sends the upgrade request followed by `extra` bytes in the same
 * write, and checks the 101. */
void raw_upgrade_req(th_conn_t *c, int port, const char *request, const void *extra,
                     size_t extra_len)
{
    int rc = th_conn_open(c, port);
    cr_assert_eq(rc, 0, "%s: connect: %s", raw_case, uv_err_name(rc));
    size_t rl = strlen(request);
    uint8_t *req = malloc(rl + extra_len);
    cr_assert_not_null(req);
    memcpy(req, request, rl);
    if (extra_len)
        memcpy(req + rl, extra, extra_len);
    rc = th_conn_send(c, req, rl + extra_len);
    free(req);
    cr_assert_eq(rc, 0, "%s: sending the upgrade: %s", raw_case, uv_err_name(rc));
    th_res_t r;
    rc = th_conn_read_res(c, &r, 5000, false);
    cr_assert_eq(rc, 0, "%s: reading the 101: %s", raw_case, uv_err_name(rc));
    cr_assert_eq(r.status, 101, "%s: status %d", raw_case, r.status);
    const char *accept = th_res_header(&r, "Sec-WebSocket-Accept");
    cr_assert(accept != NULL && strcmp(accept, WS_ACCEPT) == 0, "%s: Sec-WebSocket-Accept: %s",
              raw_case, accept ? accept : "(none)");
    const char *upgrade = th_res_header(&r, "Upgrade");
    cr_assert(upgrade != NULL && strcasecmp(upgrade, "websocket") == 0, "%s: Upgrade: %s", raw_case,
              upgrade ? upgrade : "(none)");
    th_res_free(&r);
}

void raw_upgrade_with(th_conn_t *c, int port, const void *extra, size_t extra_len)
{
    raw_upgrade_req(c, port, upgrade_request, extra, extra_len);
}

void raw_upgrade(th_conn_t *c, int port)
{
    raw_upgrade_with(c, port, NULL, 0);
}

void raw_read_handshake(int fd, char accept_value[64])
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char req[4096];
    size_t len = 0;
    while (len < sizeof(req) - 1 && memmem(req, len, "\r\n\r\n", 4) == NULL) {
        ssize_t n = recv(fd, req + len, sizeof(req) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    req[len] = '\0';
    char key[64] = "";
    const char *k = strcasestr(req, "\r\nSec-WebSocket-Key: ");
    if (k != NULL)
        sscanf(k + 21, "%60[^\r]", key);
    char cat[128];
    int cl = snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(cat, (size_t)cl, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)accept_value, md, (int)mdlen);
}
