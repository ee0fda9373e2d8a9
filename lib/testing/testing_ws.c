/* The test client's WebSocket (include/squall/testing.h): the opening handshake of RFC
 * 6455 §4.1 over a memory connection, and a small frame encoder and decoder of its own
 * (§5.2) — the client side of what lib/ws speaks, written apart from it so a test sees
 * the server's bytes as a browser would. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "testing/testing_int.h"

#define CLOSE_WAIT_MS 10000

struct sq_test_ws_s {
    sq_test_t *t;
    sq__tconn_t *c;
    sq_test_ws_t *next; /* t->wss */
    sq__buf_t msg;      /* the data message being reassembled (RFC 6455 §5.4) */
    int msg_op;         /* its opcode; 0: none started */
    unsigned msg_frames;
    sq_test_ws_msg_t out; /* what the last recv returned */
    char *out_data;
    bool close_sent;     /* our close frame went */
    bool close_seen;     /* the server's close frame (or the end) was read */
    bool close_returned; /* ...and returned by a recv */
    int close_code;
    char *close_reason;
};

/* ---- frames ---- */

/* Sends one client frame: FIN and opcode, the payload length in 7, 7+16 or 7+64 bits,
 * then the masking key and the payload XORed with it (RFC 6455 §5.2, §5.3: every frame a
 * client sends is masked, with a fresh key). */
static int frame_send(sq_test_ws_t *ws, int opcode, bool fin, const void *data, size_t len)
{
    sq__tconn_t *c = ws->c;
    if (c->sink.closed || c->sink.write_shut)
        return SQ_ECLOSED;
    uint8_t *f = malloc(len + 14);
    if (f == NULL)
        return UV_ENOMEM;
    size_t n = 0;
    f[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        f[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        f[n++] = 0x80 | 126;
        f[n++] = (uint8_t)(len >> 8);
        f[n++] = (uint8_t)len;
    } else {
        f[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t key[4];
    if (uv_random(NULL, NULL, key, sizeof(key), 0, NULL) != 0)
        memcpy(key, &(uint32_t){(uint32_t)uv_hrtime()}, 4);
    memcpy(f + n, key, 4);
    n += 4;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        f[n + i] = p[i] ^ key[i & 3];
    sq__test_feed(ws->t, c, f, n + len);
    free(f);
    return 0;
}

static int send_close(sq_test_ws_t *ws, int code, const char *reason)
{
    uint8_t p[125];
    size_t n = 0;
    if (code != 0) {
        size_t rl = reason != NULL ? strlen(reason) : 0;
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        if (rl > 0)
            memcpy(p + 2, reason, rl);
        n = 2 + rl;
    }
    ws->close_sent = true;
    return frame_send(ws, SQ_TEST_WS_CLOSE, true, p, n);
}

static void set_close(sq_test_ws_t *ws, int code, const char *reason, size_t len)
{
    ws->close_seen = true;
    ws->close_code = code;
    free(ws->close_reason);
    ws->close_reason = strndup(reason, len);
}

/* Reads the frames the server wrote. Returns 1 when a message (data or close) is ready,
 * 0 for more, or UV_EPROTO / UV_ENOMEM. */
static int pump(sq_test_ws_t *ws)
{
    sq__buf_t *in = &ws->c->sink.out;
    int rc = 0;
    while (rc == 0 && !ws->close_seen) {
        const uint8_t *p = (const uint8_t *)in->base + ws->c->rd;
        size_t avail = in->len - ws->c->rd;
        if (avail < 2)
            break;
        bool fin = p[0] & 0x80;
        int op = p[0] & 0x0f;
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        /* §5.1: a server never masks; §5.2: no extension was agreed, so no RSV bit */
        if ((p[1] & 0x80) || (p[0] & 0x70))
            return UV_EPROTO;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            hl = 10;
            if (len >> 63)
                return UV_EPROTO; /* §5.2: the most significant bit must be 0 */
        }
        if (avail - hl < len)
            break; /* the rest of the frame is still to come */
        const char *pl = (const char *)p + hl;
        ws->c->rd += hl + (size_t)len;
        if (op & 0x8) { /* control frames: §5.5 */
            if (!fin || len > 125)
                return UV_EPROTO;
            if (op == SQ_TEST_WS_CLOSE) {
                if (len == 1)
                    return UV_EPROTO;
                int code = len >= 2 ? ((uint8_t)pl[0] << 8 | (uint8_t)pl[1]) : SQ_WS_NO_STATUS;
                set_close(ws, code, len >= 2 ? pl + 2 : "", len >= 2 ? (size_t)len - 2 : 0);
                /* §5.5.1: answer with a close frame, echoing the code */
                if (!ws->close_sent)
                    send_close(ws, code == SQ_WS_NO_STATUS ? 0 : code, NULL);
                rc = 1;
            } else if (op == SQ_TEST_WS_PING) {
                frame_send(ws, SQ_TEST_WS_PONG, true, pl, (size_t)len); /* §5.5.3 */
            } else if (op != SQ_TEST_WS_PONG) {
                return UV_EPROTO;
            }
            continue;
        }
        if (op == SQ_TEST_WS_CONT
                ? ws->msg_op == 0
                : (ws->msg_op != 0 || (op != SQ_TEST_WS_TEXT && op != SQ_TEST_WS_BINARY)))
            return UV_EPROTO; /* §5.4: a continuation only inside a message, no nesting */
        if (op != SQ_TEST_WS_CONT) {
            ws->msg_op = op;
            ws->msg.len = 0;
            ws->msg_frames = 0;
        }
        ws->msg_frames++;
        if (sq__buf_append(&ws->msg, pl, (size_t)len) != 0)
            return UV_ENOMEM;
        if (fin)
            rc = 1;
    }
    if (ws->c->rd == in->len) {
        in->len = 0;
        ws->c->rd = 0;
    }
    return rc;
}

static void out_reset(sq_test_ws_t *ws)
{
    free(ws->out_data);
    ws->out_data = NULL;
    memset(&ws->out, 0, sizeof(ws->out));
}

/* Hands the message read to ws->out. */
static int take_message(sq_test_ws_t *ws)
{
    out_reset(ws);
    if (ws->close_seen) {
        ws->out.opcode = SQ_TEST_WS_CLOSE;
        ws->out.close_code = ws->close_code;
        ws->out_data = strdup(ws->close_reason != NULL ? ws->close_reason : "");
        ws->out.len = ws->out_data != NULL ? strlen(ws->out_data) : 0;
        ws->close_returned = true;
    } else {
        ws->out.opcode = ws->msg_op;
        ws->out.frames = ws->msg_frames;
        ws->out_data = malloc(ws->msg.len + 1);
        if (ws->out_data != NULL) {
            if (ws->msg.len > 0)
                memcpy(ws->out_data, ws->msg.base, ws->msg.len);
            ws->out_data[ws->msg.len] = '\0';
        }
        ws->out.len = ws->msg.len;
        ws->msg_op = 0;
        ws->msg.len = 0;
    }
    ws->out.data = ws->out_data;
    return ws->out_data != NULL ? 0 : UV_ENOMEM;
}

/* Runs the loop until pump() has a message, the connection ended or the deadline. */
static int wait_message(sq_test_ws_t *ws, uint64_t timeout_ms)
{
    sq_test_t *t = ws->t;
    int rc;
    t->waiting = true;
    sq__test_deadline(t, timeout_ms);
    for (;;) {
        rc = pump(ws);
        if (rc != 0)
            break;
        if (ws->c->sink.closed || ws->c->sink.write_shut) {
            set_close(ws, SQ_WS_ABNORMAL, "", 0); /* ended without a close frame */
            rc = 1;
            break;
        }
        if (t->timed_out || !sq__test_turn(t)) {
            rc = UV_ETIMEDOUT;
            break;
        }
    }
    sq__test_deadline(t, 0);
    t->waiting = false;
    if (rc == UV_EPROTO) { /* §7.1.7: fail the connection */
        if (!ws->close_sent)
            send_close(ws, SQ_WS_PROTOCOL_ERROR, NULL);
        set_close(ws, SQ_WS_ABNORMAL, "", 0);
        ws->close_returned = true;
    }
    return rc;
}

/* ---- the handshake ---- */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"; /* RFC 6455 §1.3 */

/* base64(SHA-1(key + GUID)), RFC 6455 §4.2.2: 28 characters and a NUL. */
static int accept_value(const char *key, char out[29])
{
    char buf[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    size_t kl = strlen(key);
    memcpy(buf, key, kl);
    memcpy(buf + kl, ws_guid, sizeof(ws_guid) - 1);
    if (EVP_Digest(buf, kl + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return UV_EIO;
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    return 0;
}

/* Whether a comma-separated header value holds `token` (case-insensitive). */
static bool has_token(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (v != NULL && *v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e != '\0' && *e != ',')
            e++;
        const char *te = e;
        while (te > v && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - v) == n && strncasecmp(v, token, n) == 0)
            return true;
        v = e;
    }
    return false;
}

int sq_test_ws_connect(sq_test_t *t, const char *target, const char *const *headers,
                       sq_test_ws_t **wsp, sq_test_res_t **refusal)
{
    if (refusal != NULL)
        *refusal = NULL;
    if (wsp != NULL)
        *wsp = NULL;
    if (t == NULL || target == NULL || wsp == NULL || *target == '\0' ||
        strpbrk(target, "\r\n ") != NULL)
        return UV_EINVAL;
    if (t->destroying)
        return SQ_ECLOSED;
    if (t->waiting)
        return SQ_EBUSY;
    /* §4.1: a nonce of 16 random bytes, base64-encoded */
    unsigned char nonce[16];
    char key[25], want[29];
    if (uv_random(NULL, NULL, nonce, sizeof(nonce), 0, NULL) != 0)
        return UV_EIO;
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
    int rc = accept_value(key, want);
    if (rc != 0)
        return rc;
    sq__buf_t req = {0};
    unsigned seen;
    sq__tres_t *res = NULL;
    sq_test_ws_t *ws = NULL;
    if (sq__buf_append(&req, "GET ", 4) != 0 || sq__buf_append(&req, target, strlen(target)) != 0 ||
        sq__buf_append(&req, " HTTP/1.1\r\n", 11) != 0)
        goto nomem;
    sq__buf_t hb = {0};
    rc = sq__test_add_headers(&hb, headers, &seen);
    if (rc != 0) {
        sq__buf_free(&hb);
        goto free_req;
    }
    char line[256];
    int ll = snprintf(line, sizeof(line),
                      "%sUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s",
                      seen & SQ__TH_HOST ? "" : "Host: testserver\r\n", key,
                      seen & SQ__TH_WSVER ? "" : "Sec-WebSocket-Version: 13\r\n");
    rc = ll > 0 && (size_t)ll < sizeof(line) ? sq__buf_append(&req, line, (size_t)ll) : UV_EINVAL;
    if (rc == 0 && hb.len > 0)
        rc = sq__buf_append(&req, hb.base, hb.len);
    sq__buf_free(&hb);
    if (rc != 0 || sq__buf_append(&req, "\r\n", 2) != 0)
        goto nomem;
    sq__tconn_t *c = sq__test_conn_open(t);
    if (c == NULL)
        goto nomem;
    sq__test_feed(t, c, req.base, req.len);
    rc = sq__test_read_response(t, c, false, SQ_TEST_DEFAULT_TIMEOUT_MS, &res);
    if (rc != 0) {
        sq__test_conn_release(t, c, true);
        goto free_req;
    }
    if (res->pub.status != 101) { /* refused: the answer is the caller's to see */
        sq__test_conn_release(t, c, true);
        rc = res->pub.status;
        if (refusal != NULL) {
            *refusal = &res->pub;
            res = NULL;
        }
        goto free_res;
    }
    /* §4.1: the client checks the server's answer before it speaks WebSocket */
    const char *acc = sq_test_res_header(&res->pub, "sec-websocket-accept");
    if (acc == NULL || strcmp(acc, want) != 0 ||
        !has_token(sq_test_res_header(&res->pub, "upgrade"), "websocket") ||
        !has_token(sq_test_res_header(&res->pub, "connection"), "upgrade")) {
        sq__test_conn_release(t, c, true);
        rc = UV_EPROTO;
        goto free_res;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        sq__test_conn_release(t, c, true);
        goto nomem;
    }
    ws->t = t;
    ws->c = c; /* bytes behind the 101 stay in the sink: the first frames */
    ws->next = t->wss;
    t->wss = ws;
    *wsp = ws;
    rc = 0;
    goto free_res;

nomem:
    rc = UV_ENOMEM;
free_res:
    sq_test_res_free(res != NULL ? &res->pub : NULL);
free_req:
    sq__buf_free(&req);
    return rc;
}

/* ---- sending, receiving, closing ---- */

int sq_test_ws_send_frame(sq_test_ws_t *ws, int opcode, int fin, const void *data, size_t len)
{
    if (ws == NULL || (data == NULL && len > 0))
        return UV_EINVAL;
    if (ws->close_sent || ws->close_seen)
        return SQ_ECLOSED;
    return frame_send(ws, opcode, fin != 0, data, len);
}

int sq_test_ws_send_text(sq_test_ws_t *ws, const char *data, size_t len)
{
    return sq_test_ws_send_frame(ws, SQ_TEST_WS_TEXT, 1, data, len);
}

int sq_test_ws_send_binary(sq_test_ws_t *ws, const void *data, size_t len)
{
    return sq_test_ws_send_frame(ws, SQ_TEST_WS_BINARY, 1, data, len);
}

int sq_test_ws_recv(sq_test_ws_t *ws, uint64_t timeout_ms, const sq_test_ws_msg_t **msg)
{
    if (msg != NULL)
        *msg = NULL;
    if (ws == NULL || msg == NULL)
        return UV_EINVAL;
    if (ws->close_returned || ws->close_sent)
        return SQ_ECLOSED;
    if (ws->t->waiting)
        return SQ_EBUSY;
    int rc = wait_message(ws, timeout_ms ? timeout_ms : SQ_TEST_DEFAULT_TIMEOUT_MS);
    if (rc != 1)
        return rc;
    rc = take_message(ws);
    if (rc == 0)
        *msg = &ws->out;
    return rc;
}

static void ws_free(sq_test_ws_t *ws)
{
    sq_test_t *t = ws->t;
    for (sq_test_ws_t **pp = &t->wss; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ws) {
            *pp = ws->next;
            break;
        }
    }
    /* the server closes the connection after the closing handshake, or at its
     * destruction: the sink stays in the client's list until then */
    sq__test_conn_release(t, ws->c, false);
    out_reset(ws);
    sq__buf_free(&ws->msg);
    free(ws->close_reason);
    free(ws);
}

int sq_test_ws_close(sq_test_ws_t *ws, int code, const char *reason, int *server_code)
{
    if (ws == NULL)
        return 0;
    int rc = 0;
    if (reason != NULL && strlen(reason) > 123) {
        rc = UV_EINVAL; /* §5.5: a control frame's payload is at most 125 bytes */
        goto out;
    }
    if (!ws->close_seen && !ws->close_sent)
        send_close(ws, code, reason);
    if (ws->t->waiting) {
        rc = SQ_EBUSY;
        goto out;
    }
    /* §7.1.2: wait for the server's close frame, dropping data, then for its end */
    while (!ws->close_seen) {
        rc = wait_message(ws, CLOSE_WAIT_MS);
        if (rc != 1)
            goto out;
        rc = 0;
        ws->msg_op = 0;
        ws->msg.len = 0;
    }
    sq_test_t *t = ws->t;
    t->waiting = true;
    sq__test_deadline(t, CLOSE_WAIT_MS);
    while (!ws->c->sink.closed && !ws->c->sink.write_shut && !t->timed_out && sq__test_turn(t))
        ;
    sq__test_deadline(t, 0);
    t->waiting = false;
    if (!ws->c->sink.closed && !ws->c->sink.write_shut)
        rc = UV_ETIMEDOUT;
out:
    if (server_code != NULL)
        *server_code = ws->close_seen ? ws->close_code : 0;
    ws_free(ws);
    return rc;
}

void sq__test_ws_free_all(sq_test_t *t)
{
    while (t->wss != NULL)
        ws_free(t->wss);
}
