/* Request bodies read as a stream (sq_handler_t.stream_body, sq_req_body_read): the
 * handler runs once the head is read; llhttp's body pieces are staged in the exchange's
 * body buffer (at most SQ__STREAM_STAGE bytes, then the parser pauses and the transport
 * keeps what follows in the connection's pending buffer, reading no more past
 * max_pipeline_bytes) and handed to the reader from the tick, never from inside llhttp
 * or a squall call. A buffered body is handed over the same way, whole. */
#include "http/h1_int.h"
#include "server/server_int.h"

/* The handler answered before the whole body came: the rest is not read, so the
 * connection cannot carry another request. It closes after the answer, lingering so the
 * client reads it rather than a reset (RFC 9112 §9.6). */
static void answered_early(sq__conn_t *c)
{
    c->pstate = SQ__H1_HANDLER;
    sq__tq_drop(c);
    c->flags |= SQ__CF_CLOSE_AFTER | SQ__CF_LINGER;
    sq__conn_close(c, false);
}

static bool can_deliver(const sq__exch_t *x)
{
    return x->conn != NULL && !(x->conn->flags & SQ__CF_CLOSED) &&
           !(x->flags & (SQ__XF_FINISHED | SQ__XF_BODY_PAUSED | SQ__XF_BODY_END));
}

static void end(sq__exch_t *x, int status)
{
    x->flags |= SQ__XF_BODY_END;
    x->body_cb(x, status, NULL, 0, x->body_ud);
}

static void deliver(sq__exch_t *x)
{
    if (!(x->flags & SQ__XF_STREAM)) {
        if (!(x->flags & SQ__XF_BODY_SENT)) {
            x->flags |= SQ__XF_BODY_SENT;
            if (x->body.len > 0)
                x->body_cb(x, 0, x->body.base, x->body.len, x->body_ud);
        }
        if (can_deliver(x))
            end(x, UV_EOF);
        return;
    }
    if (x->body.len > 0) {
        size_t n = x->body.len;
        x->body_cb(x, 0, x->body.base, n, x->body_ud);
        x->body.len = 0; /* nothing is staged while the reader runs: the parser is idle */
    }
    if (!can_deliver(x))
        return;
    if (x->body_err != 0)
        end(x, x->body_err);
    else if (x->flags & SQ__XF_BODY_DONE)
        end(x, UV_EOF);
}

void sq__h1_body_tick(sq__conn_t *c, sq__exch_t *x)
{
    sq__exch_hold(x);
    if (x->body_cb != NULL && can_deliver(x)) {
        x->flags |= SQ__XF_IN_HANDLER;
        deliver(x);
        x->flags &= ~SQ__XF_IN_HANDLER;
    }
    if (c->flags & SQ__CF_CLOSED)
        goto out;
    if ((x->flags & SQ__XF_STREAM) && !(x->flags & SQ__XF_BODY_DONE)) {
        if (x->flags & SQ__XF_FINISHED)
            answered_early(c);
        else if (x->body_err == 0 && !(x->flags & SQ__XF_BODY_PAUSED) &&
                 (c->pflags & SQ__HF_PAUSED) && x->body.len == 0 &&
                 !(c->flags & SQ__CF_CLOSE_AFTER))
            sq__h1_resume(c); /* the staged bytes were taken: parse what waits */
    }
out:
    sq__exch_unhold(x);
}

void sq__h1_body_aborted(sq__exch_t *x)
{
    if (x->body_cb != NULL && !(x->flags & (SQ__XF_BODY_END | SQ__XF_FINISHED)))
        end(x, UV_ECONNRESET);
}

int sq_req_body_read(sq_req_t *req, sq_body_cb cb, void *ud)
{
    if (cb == NULL)
        return UV_EINVAL;
    if (req->flags & SQ__XF_FINISHED)
        return SQ_EALREADY_SENT;
    if (req->body_cb != NULL)
        return UV_EALREADY;
    if (req->conn == NULL)
        return UV_ECANCELED;
    req->body_cb = cb;
    req->body_ud = ud;
    if ((req->flags & SQ__XF_CONTINUE_OWED) && req->conn->pstate == SQ__H1_BODY) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        req->flags &= ~SQ__XF_CONTINUE_OWED;
        if (sq__conn_write(req->conn, &b, 1, NULL, NULL) != 0)
            return UV_ENOMEM;
    }
    sq__tick_add(req->conn); /* flushes the 100, hands over what is staged */
    return 0;
}

void sq_req_body_pause(sq_req_t *req)
{
    req->flags |= SQ__XF_BODY_PAUSED;
    if (req->conn != NULL && req->conn->pstate == SQ__H1_BODY)
        sq__tq_drop(req->conn); /* the application holds it: no timeout runs */
}

void sq_req_body_resume(sq_req_t *req)
{
    if (!(req->flags & SQ__XF_BODY_PAUSED))
        return;
    req->flags &= ~SQ__XF_BODY_PAUSED;
    if (req->conn == NULL)
        return;
    if (req->conn->pstate == SQ__H1_BODY && (req->flags & SQ__XF_STREAM) &&
        !(req->conn->flags & SQ__CF_CLOSE_AFTER))
        sq__tq_put(req->conn, SQ__TQ_BODY);
    sq__tick_add(req->conn);
}
