/* HTTP/1 on a connection: parsing what is read (h1_parse.c holds the llhttp callbacks),
 * pipelining in order by pausing the parser, error answers, back-pressure, half-close,
 * dispatch to the router's handler, and the take-over that ends HTTP/1 on a connection.
 *
 * An exchange (request + response, exchange.c) is shared by the connection and the
 * handler and is reference-counted: the connection holds it while it is its current
 * exchange, the handler from dispatch until it finishes the response, and every queued
 * streaming write whose callback has not run yet. When the client goes, the connection
 * lets go and the handler is told (.aborted, on the next tick); the handler's finishing
 * call then returns UV_ECANCELED and the last release returns the exchange to the pool.
 */
#include <stdlib.h>

#include <jansson.h>

#include <stdatomic.h>

#include "http/h1_int.h"
#include "server/server_int.h"
#include "squall/watchdog.h"
#include "squall/work.h"

static void eof_check(sq__conn_t *c);
static void respond_error(sq__conn_t *c, int status, const char *detail);
static void hooks_go_on(sq__conn_t *c, sq__exch_t *x);

static int status_for_error(sq__conn_t *c, const llhttp_t *parser, llhttp_errno_t err,
                            const char **detail)
{
    sq__exch_t *x = sq__h1_x(c);
    if (x != NULL && x->err_status != 0) {
        *detail = sq__status_reason(x->err_status);
        return x->err_status;
    }
    *detail = llhttp_get_error_reason(parser);
    if (*detail == NULL)
        *detail = "Bad Request";
    switch (err) {
    case HPE_INVALID_VERSION:
        /* RFC 9110 §15.6.6: 505 for a version squall does not speak; llhttp also reports
         * a good version followed by a bad line ending here ("HTTP/1.1\rX"), and a version
         * that is no digits ("HTTP/st"): those are 400 */
        if (parser->http_major == SQ__H1_NO_VERSION || parser->http_minor == SQ__H1_NO_VERSION)
            return 400;
        return parser->http_major == 1 && parser->http_minor <= 1 ? 400 : 505;
    case HPE_INVALID_TRANSFER_ENCODING:
        /* RFC 9112 §6.1: a coding we do not understand is 501; chunked not last is 400 */
        return x != NULL && (x->flags & SQ__XF_TE_UNKNOWN) ? 501 : 400;
    default:
        return 400;
    }
}

static void save_pending(sq__conn_t *c, const char *pos, size_t rest)
{
    if (rest == 0)
        return;
    if (c->pending != NULL && pos >= c->pending->base &&
        pos < c->pending->base + c->pending->cap) {
        memmove(c->pending->base, pos, rest);
        c->pending->len = rest;
    } else if (sq__pend_append(c, pos, rest) != 0) {
        sq__conn_teardown(c);
    }
}

void sq__h1_process(sq__conn_t *c, const char *data, size_t len)
{
    sq_server_t *srv = sq__conn_srv(c);
    const char *end = data + len;
    llhttp_errno_t err;
    const char *pos;
    const char *detail;
    int status;
    sq__exch_t *px = sq__h1_x(c); /* its parser; held, since a take-over may release it */
    if (px == NULL && (px = c->exch = sq__h1_new_exch(c)) == NULL) {
        sq__conn_teardown(c);
        return;
    }
    sq__exch_hold(px);
    /* Between requests, the common shape is read without llhttp (h1_fast.c); llhttp takes
     * over at the first request that is not (and then parses from where it starts). A
     * whole head ends with LF: the last one is looked for once, not once per request. */
    const char *lf_end = NULL;
    if (c->pstate == SQ__H1_IDLE && data < end && !sq__hs(srv)->fast_off) {
        const char *lf = end[-1] == '\n' ? end - 1 : memrchr(data, '\n', (size_t)(end - data));
        lf_end = lf ? lf + 1 : NULL;
    }
    while (lf_end != NULL && c->pstate == SQ__H1_IDLE && data < lf_end && sq__h1_x(c) == px &&
           (!px->ll_live || llhttp_get_errno(&px->parser) == HPE_OK)) {
        int r = sq__h1_fast(c, px, &data, lf_end, end);
        if (r == -1)
            break;
        if (r == -2) {
            status = px->err_status;
            detail = sq__status_reason(status);
            goto error;
        }
        if (r != 0) {
            pos = data;
            goto paused;
        }
    }
    if (data == end && c->pstate == SQ__H1_IDLE)
        goto out;
    if (!px->ll_live) {
        llhttp_init(&px->parser, HTTP_REQUEST, &sq__h1_settings);
        px->parser.data = c;
        px->ll_live = 1;
    }
    for (;;) {
        sq__hs(srv)->rd_base = data;
        sq__hs(srv)->rd_end = end;
        err = llhttp_execute(&px->parser, data, (size_t)(end - data));
        if (err == HPE_PAUSED_UPGRADE && c->pstate == SQ__H1_IDLE && sq__h1_x(c) == px &&
            !(c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER)) &&
            !(c->pflags & SQ__HF_PAUSED)) {
            /* RFC 9110 §7.8: the route answered without taking the connection over, so
             * the Upgrade is ignored and HTTP/1.1 goes on (curl's h2c offer, say) */
            data = llhttp_get_error_pos(&px->parser);
            llhttp_resume_after_upgrade(&px->parser);
            continue;
        }
        sq__exch_t *x = sq__h1_x(c);
        if (err != HPE_PAUSED || x == NULL || !(x->flags & SQ__XF_TRAILER_PAUSE) ||
            (c->flags & SQ__CF_CLOSED))
            break;
        /* Paused after the last chunk's line: the trailer section starts here, and that
         * line's CRLF (checked by llhttp) counts towards the blank line that ends it. */
        data = llhttp_get_error_pos(&px->parser);
        x->flags = (x->flags & ~SQ__XF_TRAILER_PAUSE) | SQ__XF_GAP;
        x->gap_from = data;
        memcpy(x->gap, "\r\n", 2);
        x->gap_n = 2;
        llhttp_resume(&px->parser);
    }
    if (SQ__LIKELY(err == HPE_OK)) {
        sq__exch_t *x = sq__h1_x(c);
        if (x != NULL && (x->flags & SQ__XF_GAP)) {
            /* the head goes on in the next read: keep its pending line endings */
            sq__h1_gap_scan(x, x->gap_from ? x->gap_from : data, end, false);
            x->gap_from = NULL;
        }
        goto out;
    }
    pos = llhttp_get_error_pos(&px->parser);
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        goto paused;
    if (c->flags & SQ__CF_CLOSED)
        goto out;
    status = status_for_error(c, &px->parser, err, &detail);
error:
    if (c->flags & SQ__CF_CLOSED)
        goto out;
    if (status == 413 || status == 414 || status == 431)
        sq__conn_srv(c)->stats.limit_errors++;
    else
        sq__conn_srv(c)->stats.parse_errors++;
    respond_error(c, status, detail);
    goto out;
paused:
    if (c->flags & SQ__CF_CLOSED)
        goto out;
    size_t rest = pos ? (size_t)(end - pos) : 0;
    if (c->pstate == SQ__H1_TAKEN) {
        if (rest > 0)
            c->proto->on_read(c, c->proto_ud, pos, (ssize_t)rest);
    } else if (!(c->flags & SQ__CF_CLOSE_AFTER)) {
        save_pending(c, pos, rest);
    }
out:
    sq__hs(srv)->parse_pass++;
    sq__exch_unhold(px);
}

/* Answers a request that could not be parsed (or timed out) and closes afterwards. */
static void respond_error(sq__conn_t *c, int status, const char *detail)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    sq__exch_t *x = sq__h1_x(c);
    c->flags |= SQ__CF_CLOSE_AFTER | SQ__CF_LINGER;
    /* an earlier answer may still be in flight to a client that does not read: the
     * idle check closes it if it takes nothing for a whole idle period */
    sq__tq_put(c, SQ__TQ_IDLE);
    if (x == NULL) {
        x = c->exch = sq__h1_new_exch(c);
        if (x == NULL) {
            sq__conn_teardown(c);
            return;
        }
    }
    if (x->flags & (SQ__XF_HOLD_HANDLER | SQ__XF_HEADERS_SENT)) {
        sq__conn_teardown(c); /* a handler owns the response already: nothing sane to send */
        return;
    }
    c->pstate = SQ__H1_HANDLER;
    if (x->id == 0)
        sq__h1_stamp(x); /* an answer before any byte of a request (a timeout) */
    if (!(x->flags & SQ__XF_HEAD_DONE)) {
        /* the head never ended: what was read of it is no request (after hooks, the log
         * see an empty method, target and path, and no headers) */
        x->hb.len = 0;
        x->hidx.len = 0;
        if (sq__buf_append(&x->hb, "", 1) != 0) {
            sq__conn_teardown(c);
            return;
        }
        x->path = "";
        x->query = "";
        x->flags |= SQ__XF_PATH_DECODED;
    }
    x->flags &= ~SQ__XF_KEEPALIVE;
    x->flags |= SQ__XF_HOLD_HANDLER | SQ__XF_IN_HANDLER;
    x->refs++; /* the handler's reference, as sq__h1_dispatch takes: finishing drops it */
    x->rh.len = 0;
    if (x->http_minor == 0 && x->method == 0)
        x->http_minor = 1;
    sq_res_send_error(&x->res, status, detail); /* {"detail": ...}, as 404 and 405 */
    x->flags &= ~SQ__XF_IN_HANDLER;
}

/* The current response is finished and queued: reset for the next request, or close.
 * Returns true when the connection goes on parsing. */
bool sq__h1_response_done(sq__conn_t *c)
{
    sq__exch_t *x = sq__h1_x(c);
    if (!(x->flags & SQ__XF_KEEPALIVE) || sq__conn_srv(c)->closing) {
        c->flags |= SQ__CF_CLOSE_AFTER;
        return false;
    }
    if (x->wholds > 0) {
        /* Streaming write callbacks still to run get this exchange's res: the next request
         * must not reuse it. Let it go, and parse what follows with a fresh exchange (and a
         * fresh parser) on the next tick. */
        c->exch = NULL;
        x->conn = NULL;
        sq__exch_release(x, SQ__XF_HOLD_CONN);
        c->pstate = SQ__H1_IDLE;
        c->pflags |= SQ__HF_PAUSED;
        sq__tq_put(c, SQ__TQ_IDLE);
        sq__tick_add(c);
        return false;
    }
    sq__exch_reset(x);
    c->pstate = SQ__H1_IDLE;
    sq__tq_put(c, SQ__TQ_IDLE);
    return true;
}

/* Back-pressure on pipelining: a client that sends requests without reading the answers
 * would have squall buffer answers without bound. Past max_pipeline_bytes of queued
 * answers, parsing pauses (the bytes read meanwhile wait in c->pending, and reading stops
 * when that is full) until sq__conn_flush sees the queue drain (test:
 * backpressure/pipelined_answers_wait_*). Returns true when it paused. */
bool sq__h1_drain_pause(sq__conn_t *c)
{
    if (sq__conn_queued_bytes(c) <= sq__conn_srv(c)->opts.max_pipeline_bytes)
        return false;
    c->pflags |= SQ__HF_PAUSED | SQ__HF_DRAIN;
    return true;
}

/* Parses what was read while the parser was paused, and reads again. */
void sq__h1_resume(sq__conn_t *c)
{
    c->pflags &= ~(SQ__HF_PAUSED | SQ__HF_DRAIN);
    if (sq__h1_x(c) != NULL && sq__h1_x(c)->ll_live)
        llhttp_resume(&sq__h1_x(c)->parser);
    c->flags |= SQ__CF_IN_READ;
    sq__exch_t *x = sq__h1_x(c);
    if (sq__pend_len(c) > 0) {
        size_t n = c->pending->len;
        c->pending->len = 0;
        sq__h1_process(c, c->pending->base, n);
    } else if (x != NULL && (x->flags & SQ__XF_STREAM) && c->pstate == SQ__H1_BODY) {
        /* a streamed body paused on its last byte: llhttp ends the message (and calls
         * on_message_complete) when it runs again, even with nothing new to read */
        sq__h1_process(c, "", 0);
    }
    c->flags &= ~SQ__CF_IN_READ;
    if ((c->flags & (SQ__CF_READ_STOPPED | SQ__CF_CLOSED | SQ__CF_EOF)) == SQ__CF_READ_STOPPED &&
        !(c->pflags & SQ__HF_PAUSED)) {
        c->flags &= ~SQ__CF_READ_STOPPED;
        sq__conn_read_start(c);
    }
}

/* Between requests with nothing buffered, give the exchange and the read-ahead back. */
static void idle_release(sq__conn_t *c)
{
    if (c->pstate != SQ__H1_IDLE || (c->flags & SQ__CF_CLOSED))
        return;
    if (sq__h1_x(c) != NULL && sq__pend_len(c) == 0 && sq__h1_x(c)->hb.len == 0 &&
        !(c->pflags & SQ__HF_PAUSED)) { /* a paused parser keeps its exchange */
        sq__exch_t *x = sq__h1_x(c);
        c->exch = NULL;
        x->conn = NULL;
        /* sq__h1_response_done reset it, and no request has begun since (that would
         * have stamped an id): the pool need not reset it again */
        x->reset_done = x->id == 0 && x->status == 0 && x->err_status == 0;
        sq__exch_release(x, SQ__XF_HOLD_CONN);
    }
    if (c->pending != NULL && c->pending->len == 0)
        sq__pend_free(c);
}

/* Work deferred to the tick: going on after an answer given later, after a drain, or
 * with a fresh exchange; and closing once a half-closed client has its answers. */
static void h1_on_tick(sq__conn_t *c, void *ud)
{
    sq__conn_t *h = c;
    /* each step may end HTTP/1 on c: the handler a hook let go on, or one reading a
     * body, may take the connection over, and c->exch is then the new protocol's pointer
     * (test: ws_edge/an_upgrade_after_a_hook_that_went_on_later_is_taken_over_cleanly) */
    if (sq__h1_x(c) != NULL && (h->exch->flags & SQ__XF_HOOK_NEXT)) {
        hooks_go_on(c, h->exch);
        if ((c->flags & SQ__CF_CLOSED) || c->pstate == SQ__H1_TAKEN)
            return;
    }
    if (sq__h1_x(c) != NULL && (h->exch->body_cb != NULL || (h->exch->flags & SQ__XF_STREAM))) {
        sq__h1_body_tick(c, h->exch); /* a body read piece by piece */
        if ((c->flags & SQ__CF_CLOSED) || c->pstate == SQ__H1_TAKEN)
            return;
    }
    if (h->pstate == SQ__H1_HANDLER && h->exch != NULL && (h->exch->flags & SQ__XF_FINISHED) &&
        !(c->flags & SQ__CF_CLOSE_AFTER)) {
        /* answered later: go on with the pipelined requests, unless the answers queued
         * so far must drain first */
        h->pflags &= ~SQ__HF_PAUSED;
        if (sq__h1_response_done(c) && !sq__h1_drain_pause(c))
            sq__h1_resume(c);
    } else if (h->pstate == SQ__H1_IDLE && h->exch == NULL && (h->pflags & SQ__HF_PAUSED) &&
               !(c->flags & SQ__CF_CLOSE_AFTER)) {
        sq__h1_resume(c); /* after an exchange kept by write callbacks: a fresh one */
    } else if ((h->pflags & SQ__HF_DRAIN) && !(c->flags & SQ__CF_CLOSE_AFTER)) {
        if (sq__conn_queued_bytes(c) <= sq__conn_srv(c)->opts.max_pipeline_bytes)
            sq__h1_resume(c);
    }
    if (!(c->flags & SQ__CF_CLOSED))
        eof_check(c);
}

/* After a half-close: once nothing more can be answered — no handler owns a response,
 * nothing pipelined waits, or a request was cut short — close after the queued writes. */
static void eof_check(sq__conn_t *c)
{
    if ((c->flags & (SQ__CF_EOF | SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER)) != SQ__CF_EOF ||
        c->pstate == SQ__H1_HANDLER || (c->pflags & SQ__HF_PAUSED))
        return;
    sq__conn_close(c, false);
}

/* The client closed its side, or the connection failed. A FIN is a half-close
 * (shutdown(SHUT_WR), `nc -N`): the client may still be reading (RFC 9112 §9.6 only
 * says it sends nothing more), so what it sent is answered — the request a handler is
 * working on and the pipelined ones behind it — and the connection closes once those
 * answers are written, as Node's allowHalfOpen servers do (tests:
 * regress_http/half_close_*). A reset or another error closes at once, and a handler
 * still answering is told (.aborted). */
static void on_eof(sq__conn_t *c, ssize_t err)
{
    if (err != UV_EOF) {
        sq__conn_teardown(c);
        return;
    }
    c->flags &= ~SQ__CF_LINGER; /* nothing more will come to drain */
    eof_check(c);
    sq__tick_add(c); /* flushes, and closes if CLOSE_AFTER is set */
}

/* The request goes to its handler (or squall's answer: 404, 405, 422), its before hooks
 * and its declared operation's checks passed. */
static void answer(sq__conn_t *c, sq__exch_t *x)
{
    sq__match_t verdict = x->verdict;
    if ((verdict == SQ__MATCH_OK || verdict == SQ__MATCH_BAD_PARAM) && x->match.op != NULL)
        verdict = sq__h1_validate(x) ? SQ__MATCH_OK : SQ__MATCH_DONE;
    switch (verdict) {
    case SQ__MATCH_DONE:
        break;
    case SQ__MATCH_OK:
        if (x->match.bcb != NULL) {
            sq__blocking_dispatch(x);
        } else {
            sq__httpsrv_t *hs = sq__hs(sq__conn_srv(c));
            if (hs->wd == NULL) {
                x->match.cb(x, &x->res, x->match.data);
                break;
            }
            /* asyncio's debug mode: who held the loop. The span starts at the request's
             * stamp when its head was parsed in this same call (microseconds ago), and
             * reads the clock itself otherwise (a hook that waited, a body read later). */
            sq_watchdog_span_t span = {.size = sizeof(span),
                                       .start_ns = x->stamp_pass == hs->parse_pass
                                                       ? x->start_ns
                                                       : sq__now_ns(),
                                       .name = sq__route_pattern(x->match.route)};
            x->match.cb(x, &x->res, x->match.data);
            sq_watchdog_span_end(hs->wd, &span);
        }
        break;
    case SQ__MATCH_NONE:
        sq__h1_error(x, 404, json_string("Not Found"));
        break;
    case SQ__MATCH_ASTERISK:
        /* RFC 9110 §9.3.7: OPTIONS * asks about the server as a whole; "*" means nothing
         * to any other method */
        sq_res_header(&x->res, "Allow", "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
        if (x->method == SQ_METHOD_OPTIONS)
            sq_res_send(&x->res, 204, NULL, NULL, 0);
        else
            sq_res_send_error(&x->res, 400, "the target * is for OPTIONS only");
        break;
    case SQ__MATCH_NO_METHOD:
        if (x->match.allow != NULL)
            sq_res_header(&x->res, "Allow", x->match.allow);
        sq__h1_error(x, 405, json_string("Method Not Allowed"));
        break;
    case SQ__MATCH_BAD_PARAM: {
        /* FastAPI's shape for a path parameter that does not convert; an input that is not
         * UTF-8 (it is percent-decoded bytes) is reported as null */
        json_t *in = json_string(x->match.bad_value);
        sq__h1_error(x, 422,
                     json_pack("[{s:s,s:[s,s],s:s,s:o}]", "type", "int_parsing", "loc", "path",
                               x->match.bad_param, "msg",
                               "Input should be a valid integer, unable to parse string as an "
                               "integer",
                               "input", in ? in : json_null()));
        break;
    }
    }
}

static atomic_uint_fast64_t request_ids; /* sq_req_id: one sequence for the process */

void sq__h1_stamp(sq__exch_t *x)
{
    x->id = atomic_fetch_add_explicit(&request_ids, 1, memory_order_relaxed) + 1;
    x->start_ns = sq__now_ns(); /* uv_hrtime's clock */
    x->stamp_pass = sq__hs(x->srv)->parse_pass;
}

void sq__h1_dispatch(sq__conn_t *c, sq__exch_t *x)
{
    x->flags |= SQ__XF_HOLD_HANDLER | SQ__XF_IN_HANDLER;
    x->refs++;        /* the handler's reference, dropped when it finishes the response */
    sq__exch_hold(x); /* this frame's: the handler may finish, take over or lose the client */
    if (sq__h1_run_before(x))
        answer(c, x);
    x->flags &= ~SQ__XF_IN_HANDLER;
    sq__exch_unhold(x);
}

/* A before hook called sq_req_next: the next hooks, then the handler. */
static void hooks_go_on(sq__conn_t *c, sq__exch_t *x)
{
    x->flags &= ~SQ__XF_HOOK_NEXT;
    sq__exch_hold(x);
    x->flags |= SQ__XF_IN_HANDLER;
    if (sq__h1_run_before(x))
        answer(c, x);
    x->flags &= ~SQ__XF_IN_HANDLER;
    sq__exch_unhold(x);
}

int sq__res_takeover(sq_res_t *res, const sq__proto_t *proto, void *ud)
{
    sq__exch_t *x = res->req;
    sq__conn_t *c = x->conn;
    if (x->flags & SQ__XF_FINISHED)
        return SQ_EALREADY_SENT;
    if (c == NULL) {
        x->flags |= SQ__XF_FINISHED;
        sq__exch_release(x, SQ__XF_HOLD_HANDLER);
        return UV_ECANCELED;
    }
    c->exch = NULL; /* before proto_ud, the same pointer */
    c->proto = proto;
    c->proto_ud = ud;
    c->pstate = SQ__H1_TAKEN;
    c->pflags &= ~SQ__HF_PAUSED;
    sq__tq_drop(c);
    x->flags |= SQ__XF_FINISHED;
    x->conn = NULL;
    sq__exch_release(x, SQ__XF_HOLD_CONN);
    sq__exch_release(x, SQ__XF_HOLD_HANDLER);
    if (sq__pend_len(c) > 0) { /* read behind the upgrade: the new protocol's */
        c->flags |= SQ__CF_REDELIVER;
        sq__tick_add(c);
    }
    if (c->flags & SQ__CF_READ_STOPPED) {
        /* after a half-close too: reading again delivers the EOF to the protocol */
        c->flags &= ~(SQ__CF_READ_STOPPED | SQ__CF_EOF);
        sq__conn_read_start(c);
    }
    return 0;
}

/* ---- the exchange's output stream: the connection ---- */

static sq__wbatch_t *x_batch(sq__exch_t *x)
{
    return sq__conn_batch(x->conn);
}

static void x_flush(sq__exch_t *x)
{
    sq__conn_want_flush(x->conn);
}

static bool x_open(const sq__exch_t *x)
{
    return x->conn != NULL && !(x->conn->flags & SQ__CF_CLOSED);
}

/* A response finished before its streamed body was read whole ends the connection. */
static bool x_last(const sq__exch_t *x)
{
    return (x->conn->flags & SQ__CF_CLOSE_AFTER) != 0 ||
           (x->flags & (SQ__XF_STREAM | SQ__XF_BODY_DONE)) == SQ__XF_STREAM;
}

static void x_close_after(sq__exch_t *x)
{
    x->conn->flags |= SQ__CF_CLOSE_AFTER;
}

static void x_fail(sq__exch_t *x)
{
    sq__conn_close(x->conn, true);
}

static size_t x_queued(const sq__exch_t *x)
{
    return sq__conn_queued_bytes(x->conn);
}

/* Answered later (not inside the handler's own call): the tick moves the connection on. */
static void x_finished(sq__exch_t *x)
{
    if (!(x->flags & SQ__XF_IN_HANDLER))
        sq__tick_add(x->conn);
}

static const sq__exch_ops_t h1_exch_ops = {
    .batch = x_batch,
    .flush = x_flush,
    .open = x_open,
    .last = x_last,
    .close_after = x_close_after,
    .fail = x_fail,
    .queued = x_queued,
    .finished = x_finished,
};

sq__exch_t *sq__h1_new_exch(sq__conn_t *c)
{
    sq__exch_t *x = sq__exch_get(sq__conn_srv(c), &h1_exch_ops, c);
    if (x != NULL)
        x->ll_live = 0; /* llhttp is set up when a request needs it (sq__h1_process) */
    return x;
}

/* ---- HTTP/1 as the connection's protocol ---- */

static void h1_on_read(sq__conn_t *c, void *ud, const char *data, ssize_t nread)
{
    if (nread < 0) {
        on_eof(c, nread);
        return;
    }
    if (c->flags & SQ__CF_CLOSE_AFTER)
        return; /* closing after an answer: nothing more is parsed */
    if (c->pflags & SQ__HF_PAUSED) {
        /* A response is outstanding: keep what is pipelined behind it, up to a limit. */
        if (sq__pend_append(c, data, (size_t)nread) != 0) {
            sq__conn_teardown(c);
            return;
        }
        if (c->pending->len >= sq__conn_srv(c)->opts.max_pipeline_bytes)
            sq__conn_read(c, false);
        return;
    }
    sq__h1_process(c, data, (size_t)nread);
}

/* Server shutdown: idle connections close now, busy ones after their response. */
static void h1_on_shutdown(sq__conn_t *c, void *ud)
{
    sq__conn_t *h = c;
    switch (h->pstate) {
    case SQ__H1_IDLE:
        if (sq__pend_len(c) == 0 && (c->wq == NULL || !c->wq->inflight)) {
            sq__conn_teardown(c);
            return;
        }
        c->flags |= SQ__CF_CLOSE_AFTER;
        break;
    case SQ__H1_HANDLER:
        if (h->exch != NULL)
            h->exch->flags &= ~SQ__XF_KEEPALIVE;
        if (h->exch != NULL && (h->exch->flags & SQ__XF_FINISHED))
            sq__conn_close(c, false);
        break;
    default:
        break; /* a request being read: it is answered, then the connection closes */
    }
}

/* The connection closes (or lingers): a handler still answering is told. */
static void h1_on_close(sq__conn_t *c, void *ud)
{
    sq__exch_t *x = sq__h1_x(c);
    if (x != NULL) {
        c->exch = NULL;
        sq__exch_abort(x);
    }
}

static void h1_on_timeout(sq__conn_t *c, void *ud, int which)
{
    sq__exch_t *x = sq__h1_x(c);
    if (which == SQ__TQ_BODY && x != NULL && (x->flags & SQ__XF_STREAM) && x->body_cb != NULL &&
        !(x->flags & (SQ__XF_HEADERS_SENT | SQ__XF_FINISHED | SQ__XF_BODY_END))) {
        /* a streamed body went silent: its reader is told (UV_ETIMEDOUT) and its handler
         * answers (408); nothing more is parsed or read (h1_body.c closes after it) */
        sq__conn_srv(c)->stats.timeouts++;
        x->body_err = UV_ETIMEDOUT;
        c->pflags |= SQ__HF_PAUSED;
        sq__tq_put(c, SQ__TQ_IDLE); /* and if it never answers, it is dropped */
        sq__tick_add(c);
        return;
    }
    if (which == SQ__TQ_HEAD || which == SQ__TQ_BODY) {
        /* RFC 9110 §15.5.9: 408, then close (slowloris, stalled bodies). */
        sq__conn_srv(c)->stats.timeouts++;
        respond_error(c, 408, "Request Timeout");
        sq__conn_flush(c);
    } else if (which == SQ__TQ_IDLE && sq__pend_len(c) > 0 &&
               !(c->flags & SQ__CF_CLOSE_AFTER) && (c->wq == NULL || !c->wq->inflight)) {
        /* Pipelined requests wait for answers that have drained just now, their tick
         * not run yet: not idle (test: regress_http/a_body_of_4_gib_and_more_is_sent_whole).
         * Answers still in flight that the client took nothing of for a whole idle period
         * (the transport checked) close the connection like any other slow reader (test:
         * regress_http/a_reader_that_stalls_with_requests_pipelined_is_closed). */
        sq__tick_add(c);
        sq__tq_put(c, SQ__TQ_IDLE);
    } else {
        sq__conn_teardown(c);
    }
}

/* The parser waits for queued answers to drain (sq__h1_drain_pause): once they have, the
 * tick parses what waits. Between requests, the exchange goes back to the pool. */
static void h1_on_flushed(sq__conn_t *c, void *ud, bool idle)
{
    if ((c->pflags & SQ__HF_DRAIN) && !(c->flags & SQ__CF_CLOSE_AFTER) &&
        sq__conn_queued_bytes(c) <= sq__conn_srv(c)->opts.max_pipeline_bytes)
        sq__tick_add(c);
    if (idle)
        idle_release(c);
}

const sq__proto_t sq__h1_proto = {
    .on_read = h1_on_read,
    .on_shutdown = h1_on_shutdown,
    .on_close = h1_on_close,
    .on_tick = h1_on_tick,
    .on_timeout = h1_on_timeout,
    .on_flushed = h1_on_flushed,
};
