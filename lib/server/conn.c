/* Connections: reading, llhttp glue, dispatch, the write queue, timeouts and closing.
 *
 * Ownership in one paragraph. A connection is freed only from its libuv close callback,
 * which never runs inside another callback's frame, so a connection pointer stays valid
 * for the rest of any callback that saw it; code re-checks SQ__CF_CLOSED after calling
 * out. An exchange (request + response) is shared by the connection and the handler and
 * is reference-counted: the connection holds it while it is its current exchange, the
 * handler from dispatch until it finishes the response, and every queued streaming write
 * whose callback has not run yet. When the client goes, the connection lets go and tells
 * the handler (.aborted); the handler's finishing call then returns UV_ECANCELED and the
 * last release returns the exchange to the server's pool.
 */
#include <stdlib.h>
#include <strings.h>

#include <jansson.h>

#include "server/server_int.h"
#include "squall/watchdog.h"
#include "squall/work.h"

#define SQ__LINGER_MS 2000 /* drain reads this long after an error response */

static const llhttp_settings_t parser_settings;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_flush(sq__conn_t *c);
static void conn_teardown(sq__conn_t *c);
/* ---- timeouts: one FIFO queue per kind, one timer per server ---- */

static void on_timer(uv_timer_t *t);

void sq__timer_arm(sq_server_t *srv, uint64_t due)
{
    if (srv->timer_due != 0 && srv->timer_due <= due)
        return;
    uint64_t now = uv_now(srv->loop);
    srv->timer_due = due;
    uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
}

static void tq_drop(sq__conn_t *c)
{
    sq__list_remove(&c->tnode);
    c->tq = SQ__TQ_NONE;
}

/* Puts the connection at the tail of queue `which` with a fresh deadline. Since every
 * connection in a queue got the same timeout, the tail always has the latest deadline. */
static void tq_put(sq__conn_t *c, int which)
{
    sq_server_t *srv = c->srv;
    uint64_t to = srv->tq_timeout[which];
    sq__list_remove(&c->tnode);
    c->tq = SQ__TQ_NONE;
    if (to == 0)
        return;
    c->tq = (uint8_t)which;
    uint64_t now = uv_now(srv->loop);
    c->deadline = to > UINT64_MAX - now ? UINT64_MAX : now + to;
    sq__list_insert_tail(&srv->tq[which], &c->tnode);
    sq__timer_arm(srv, c->deadline);
}

static void respond_error(sq__conn_t *c, int status, const char *detail);
static void dispatch(sq__conn_t *c, sq__exch_t *x);
static void tick_add(sq__conn_t *c);

static void on_timer(uv_timer_t *t)
{
    sq_server_t *srv = sq__container_of(t, sq_server_t, timer);
    uint64_t now = uv_now(srv->loop);
    srv->timer_due = 0;
    for (int q = SQ__TQ_HEAD; q < SQ__TQ_COUNT; q++) {
        while (!sq__list_empty(&srv->tq[q])) {
            sq__conn_t *c = sq__container_of(srv->tq[q].next, sq__conn_t, tnode);
            if (c->deadline > now)
                break;
            tq_drop(c);
            if (q == SQ__TQ_HEAD || q == SQ__TQ_BODY) {
                /* RFC 9110 §15.5.9: 408, then close (slowloris, stalled bodies). */
                srv->stats.timeouts++;
                respond_error(c, 408, "Request Timeout");
                conn_flush(c);
            } else if (q == SQ__TQ_IDLE && c->wq != NULL && c->wq->inflight &&
                       c->h.stream.write_queue_size < c->wq->mark) {
                /* No request, but an answer is still being written: the client took some
                 * of it since the last look, so it is not idle. One that takes nothing
                 * for a whole idle period is closed (tests: backpressure/slow_reader_*,
                 * backpressure/reader_that_stalls_*). */
                c->wq->mark = c->h.stream.write_queue_size;
                tq_put(c, SQ__TQ_IDLE);
            } else if (q == SQ__TQ_IDLE && c->pending.len > 0 &&
                       !(c->flags & SQ__CF_CLOSE_AFTER)) {
                /* Pipelined requests wait for the answers before them to drain: not idle.
                 * The drain that wakes them may have finished just now, its tick not run
                 * yet (test: regress_http/a_body_of_4_gib_and_more_is_sent_whole). */
                tick_add(c);
                tq_put(c, SQ__TQ_IDLE);
            } else {
                conn_teardown(c);
            }
        }
    }
    if (srv->closing && srv->grace_due != 0 && srv->grace_due <= now) {
        srv->grace_due = 0;
        sq__list_t *n = srv->conns.next;
        while (n != &srv->conns) {
            sq__conn_t *c = sq__container_of(n, sq__conn_t, node);
            n = n->next;
            conn_teardown(c);
        }
    }
    uint64_t due = 0;
    for (int q = SQ__TQ_HEAD; q < SQ__TQ_COUNT; q++) {
        if (sq__list_empty(&srv->tq[q]))
            continue;
        sq__conn_t *c = sq__container_of(srv->tq[q].next, sq__conn_t, tnode);
        if (due == 0 || c->deadline < due)
            due = c->deadline;
    }
    if (srv->closing && srv->grace_due != 0 && (due == 0 || srv->grace_due < due))
        due = srv->grace_due;
    if (due != 0)
        sq__timer_arm(srv, due);
}

/* ---- the tick: work deferred out of user calls, run before the loop polls again ---- */

static void conn_tick(sq__conn_t *c);
static void deliver_aborts(sq_server_t *srv);
static void eof_check(sq__conn_t *c);

static void on_tick(uv_idle_t *idle)
{
    sq_server_t *srv = sq__container_of(idle, sq_server_t, tick);
    if (!sq__list_empty(&srv->aborts))
        deliver_aborts(srv);
    /* This round's connections only: one that queues itself again (a write callback that
     * writes the next chunk) waits for the next round, so the loop still polls between. */
    sq__list_t round;
    sq__list_take(&srv->ticks, &round);
    while (!sq__list_empty(&round)) {
        sq__conn_t *c = sq__container_of(round.next, sq__conn_t, knode);
        sq__list_remove(&c->knode);
        conn_tick(c);
    }
    if (sq__list_empty(&srv->ticks) && sq__list_empty(&srv->aborts))
        uv_idle_stop(idle);
}

static void tick_add(sq__conn_t *c)
{
    if (sq__list_linked(&c->knode) || (c->flags & SQ__CF_CLOSED))
        return;
    if (sq__list_empty(&c->srv->ticks) && sq__list_empty(&c->srv->aborts))
        uv_idle_start(&c->srv->tick, on_tick);
    sq__list_insert_tail(&c->srv->ticks, &c->knode);
}

void sq__conn_want_flush(sq__conn_t *c)
{
    if (!(c->flags & SQ__CF_IN_READ))
        tick_add(c);
}

/* ---- exchanges: pooled per server ---- */

static sq__exch_t *exch_get(sq__conn_t *c)
{
    sq_server_t *srv = c->srv;
    sq__exch_t *x = srv->exch_free;
    if (x != NULL) {
        srv->exch_free = x->next_free;
        srv->exch_free_n--;
    } else {
        x = calloc(1, sizeof(*x));
        if (x == NULL)
            return NULL;
        x->srv = srv;
        x->res.req = x;
        sq__arena_init(&x->arena, x->arena_inline, sizeof(x->arena_inline));
    }
    srv->live_exch++;
    x->conn = c;
    x->flags = SQ__XF_HOLD_CONN;
    x->refs = 1;
    llhttp_init(&x->parser, HTTP_REQUEST, &parser_settings);
    x->parser.data = c;
    return x;
}

/* Frees an exchange for good (it was reset: its arena holds nothing). */
static void exch_free(sq__exch_t *x)
{
    sq__buf_free(&x->hb);
    sq__buf_free(&x->hidx);
    sq__buf_free(&x->body);
    sq__buf_free(&x->rh);
    free(x);
}

static void exch_put(sq__exch_t *x)
{
    sq_server_t *srv = x->srv;
    srv->live_exch--;
    sq__exch_reset(x);
    if (srv->exch_free_n < SQ__POOL_MAX && !srv->closing) {
        x->next_free = srv->exch_free;
        srv->exch_free = x;
        srv->exch_free_n++;
    } else {
        exch_free(x);
    }
    if (srv->closing)
        sq__server_maybe_done(srv);
}

void sq__exch_hold(sq__exch_t *x)
{
    x->refs++;
}

void sq__exch_unhold(sq__exch_t *x)
{
    if (--x->refs == 0)
        exch_put(x);
}

/* Drops one holder's reference; `which` is one SQ__XF_HOLD_* flag. */
void sq__exch_release(sq__exch_t *x, uint32_t which)
{
    if (!(x->flags & which))
        return;
    x->flags &= ~which;
    sq__exch_unhold(x);
}

/* The handler finished the response (its bytes are queued). */
void sq__exch_finished(sq__exch_t *x)
{
    sq__conn_t *c = x->conn;
    x->flags |= SQ__XF_FINISHED;
    if (c != NULL && !(x->flags & SQ__XF_IN_HANDLER))
        tick_add(c); /* answered later: the tick moves the connection on */
    sq__exch_release(x, SQ__XF_HOLD_HANDLER);
}

/* The connection lets go of its exchange; a handler still owning it is told, on the next
 * tick. Never from here: this runs inside API calls (a finishing call whose write fails
 * closes the connection), and a handler told inside its own sq_res_send could finish the
 * response there and free the exchange under the call (test:
 * regress_http/aborted_never_runs_inside_a_finishing_call). */
void sq__conn_abort_exch(sq__conn_t *c)
{
    sq__exch_t *x = c->exch;
    if (x == NULL)
        return;
    sq_server_t *srv = c->srv;
    c->exch = NULL;
    x->conn = NULL;
    bool owned = (x->flags & SQ__XF_HOLD_HANDLER) && !(x->flags & SQ__XF_FINISHED);
    if (owned) {
        x->flags |= SQ__XF_ABORTED;
        srv->stats.aborted++;
        sq__exch_hold(x); /* the notice's reference, dropped once it is delivered */
        if (sq__list_empty(&srv->ticks) && sq__list_empty(&srv->aborts))
            uv_idle_start(&srv->tick, on_tick);
        sq__list_insert_tail(&srv->aborts, &x->anode);
        if (x->work != NULL)
            sq_work_cancel(x->work); /* its done callback finishes the response */
    }
    sq__exch_release(x, SQ__XF_HOLD_CONN);
}

/* Tells each handler whose client went since the last tick, unless it finished first. */
static void deliver_aborts(sq_server_t *srv)
{
    sq__list_t round;
    sq__list_take(&srv->aborts, &round);
    while (!sq__list_empty(&round)) {
        sq__exch_t *x = sq__container_of(round.next, sq__exch_t, anode);
        sq__list_remove(&x->anode);
        const sq_handler_t *h = x->match.handler;
        if (h != NULL && h->aborted != NULL && !(x->flags & SQ__XF_FINISHED))
            h->aborted(x, &x->res, x->match.data);
        sq__exch_unhold(x);
    }
}

/* ---- the write queue ---- */

static sq__wq_t *wq_get(sq__conn_t *c)
{
    if (c->wq != NULL)
        return c->wq;
    sq_server_t *srv = c->srv;
    sq__wq_t *q = srv->wq_free;
    if (q != NULL) {
        srv->wq_free = q->next_free;
        srv->wq_free_n--;
    } else {
        q = calloc(1, sizeof(*q));
        if (q == NULL)
            return NULL;
    }
    c->wq = q;
    return q;
}

static void wbatch_free(sq__wbatch_t *b)
{
    sq__buf_free(&b->buf);
    free(b->segs);
    b->segs = NULL;
    b->nsegs = b->cap = 0;
}

static void wq_free(sq__wq_t *q)
{
    wbatch_free(&q->b[0]);
    wbatch_free(&q->b[1]);
    free(q->iov);
    free(q);
}

static void wq_put(sq_server_t *srv, sq__wq_t *q)
{
    if (srv->wq_free_n < SQ__POOL_MAX && !srv->closing && q->b[0].buf.cap <= 16384 &&
        q->b[1].buf.cap <= 16384) {
        q->next_free = srv->wq_free;
        srv->wq_free = q;
        srv->wq_free_n++;
        return;
    }
    wq_free(q);
}

void sq__server_pools_free(sq_server_t *srv)
{
    while (srv->exch_free != NULL) {
        sq__exch_t *x = srv->exch_free;
        srv->exch_free = x->next_free;
        exch_free(x);
    }
    while (srv->wq_free != NULL) {
        sq__wq_t *q = srv->wq_free;
        srv->wq_free = q->next_free;
        wq_free(q);
    }
    srv->exch_free_n = srv->wq_free_n = 0;
}

sq__wbatch_t *sq__conn_batch(sq__conn_t *c)
{
    sq__wq_t *q = wq_get(c);
    return q ? &q->b[q->fill] : NULL;
}

static sq__wseg_t *batch_new_seg(sq__wbatch_t *b)
{
    if (b->nsegs == b->cap) {
        unsigned cap = b->cap ? b->cap * 2 : 8;
        sq__wseg_t *segs = realloc(b->segs, cap * sizeof(*segs));
        if (segs == NULL)
            return NULL;
        b->segs = segs;
        b->cap = cap;
    }
    sq__wseg_t *s = &b->segs[b->nsegs++];
    memset(s, 0, sizeof(*s));
    return s;
}

sq__wseg_t *sq__batch_last(sq__wbatch_t *b)
{
    if (b->nsegs == 0 && batch_new_seg(b) == NULL)
        return NULL;
    return &b->segs[b->nsegs - 1];
}

static bool seg_has_cb(const sq__wseg_t *s)
{
    return s->cb != NULL || s->rcb != NULL || s->free_cb != NULL;
}

int sq__batch_add_copy(sq__wbatch_t *b, const void *data, size_t len)
{
    if (sq__buf_append(&b->buf, data, len) != 0)
        return UV_ENOMEM;
    return sq__batch_commit(b, len);
}

int sq__batch_commit(sq__wbatch_t *b, size_t len)
{
    b->bytes += len;
    sq__wseg_t *s = b->nsegs ? &b->segs[b->nsegs - 1] : NULL;
    if (s != NULL && s->base == NULL && !seg_has_cb(s) && s->off + s->len == b->buf.len - len) {
        s->len += len;
        return 0;
    }
    s = batch_new_seg(b);
    if (s == NULL)
        return UV_ENOMEM;
    s->off = b->buf.len - len;
    s->len = len;
    return 0;
}

int sq__batch_add_ref(sq__wbatch_t *b, const void *base, size_t len, sq_free_cb free_cb,
                      void *free_ud)
{
    sq__wseg_t *s = batch_new_seg(b);
    if (s == NULL)
        return UV_ENOMEM;
    s->base = base;
    s->len = len;
    s->free_cb = free_cb;
    s->free_ud = free_ud;
    b->bytes += len;
    return 0;
}

/* Runs the completion and free callbacks of a written (or failed) batch and empties it. */
static void batch_complete(sq__conn_t *c, sq__wbatch_t *b, int status)
{
    /* The callbacks may queue more bytes into this very batch (a drain callback that
     * sends, a streaming write callback that writes the next chunk): walk a detached
     * segment array, so new segments go to a fresh one. */
    sq__wseg_t *segs = b->segs;
    unsigned n = b->nsegs, cap = b->cap;
    b->segs = NULL;
    b->nsegs = b->cap = 0;
    b->buf.len = 0;
    b->bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        sq__wseg_t s = segs[i];
        if (s.free_cb != NULL)
            s.free_cb((void *)s.base, s.free_ud);
        if (s.cb != NULL)
            s.cb(c, status, s.cb_ud);
        if (s.rcb != NULL)
            s.rcb(&s.rx->res, status, s.rcb_ud);
        if (s.rx != NULL) {
            s.rx->wholds--;
            sq__exch_unhold(s.rx);
        }
    }
    if (b->segs == NULL) { /* nothing was queued meanwhile: keep the array */
        b->segs = segs;
        b->cap = cap;
    } else {
        free(segs);
    }
}

static void conn_idle_release(sq__conn_t *c);

static void after_write(sq__conn_t *c, int status)
{
    if (status < 0) {
        if (!(c->flags & SQ__CF_CLOSED))
            conn_teardown(c);
        return;
    }
    conn_flush(c);
}

static void on_write(uv_write_t *req, int status)
{
    sq__wq_t *q = sq__container_of(req, sq__wq_t, req);
    sq__conn_t *c = req->handle->data;
    q->inflight = false;
    batch_complete(c, &q->b[q->fill ^ 1], status);
    after_write(c, status);
}

/* The parser waits for queued answers to drain (conn_drain_pause): once they have, the
 * tick parses what waits. */
static void drain_wake(sq__conn_t *c)
{
    if ((c->flags & (SQ__CF_DRAIN | SQ__CF_CLOSE_AFTER)) == SQ__CF_DRAIN &&
        sq__conn_queued_bytes(c) <= c->srv->opts.max_pipeline_bytes)
        tick_add(c);
}

/* Sends the filling batch: one writev when the socket takes it all (the usual case),
 * else uv_write for the rest. Pipelined responses of one read leave in one syscall. */
static void conn_flush(sq__conn_t *c)
{
    unsigned rounds = 0;
again:;
    sq__wq_t *q = c->wq;
    if (c->flags & SQ__CF_CLOSED)
        return;
    if (q == NULL || q->inflight)
        goto done;
    sq__wbatch_t *b = &q->b[q->fill];
    if (b->nsegs == 0)
        goto done;
    if (q->iov_cap < b->nsegs) {
        uv_buf_t *iov = realloc(q->iov, b->nsegs * sizeof(*iov));
        if (iov == NULL) {
            batch_complete(c, b, UV_ENOMEM);
            conn_teardown(c);
            return;
        }
        q->iov = iov;
        q->iov_cap = b->nsegs;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < b->nsegs; i++) {
        sq__wseg_t *s = &b->segs[i];
        if (s->len == 0)
            continue;
        /* not uv_buf_init, whose length is an unsigned int: a body of 4 GiB or more
         * would go out cut to its low 32 bits while its Content-Length says the whole */
        q->iov[n].base = (char *)(s->base ? s->base : b->buf.base + s->off);
        q->iov[n++].len = s->len;
    }
    unsigned first = 0;
    if (n > 0 && c->h.stream.write_queue_size == 0) {
        int w = uv_try_write(&c->h.stream, q->iov, n);
        if (w < 0 && w != UV_EAGAIN) {
            batch_complete(c, b, w);
            conn_teardown(c);
            return;
        }
        size_t left = w > 0 ? (size_t)w : 0;
        while (first < n && left >= q->iov[first].len)
            left -= q->iov[first++].len;
        if (first < n) {
            q->iov[first].base += left;
            q->iov[first].len -= left;
        }
    }
    if (first == n) {
        batch_complete(c, b, 0);
        if (c->flags & SQ__CF_CLOSED)
            return;
        if (q->b[q->fill].nsegs != 0) { /* a completion callback queued more */
            if (++rounds < 16)
                goto again;
            tick_add(c); /* the rest on the next tick: no recursion, no starving the loop */
            return;
        }
        goto done;
    }
    q->fill ^= 1;
    q->inflight = true;
    q->mark = SIZE_MAX;
    c->h.handle.data = c;
    int rc = uv_write(&q->req, &c->h.stream, q->iov + first, n - first, on_write);
    if (rc != 0) {
        q->inflight = false;
        q->fill ^= 1;
        batch_complete(c, b, rc);
        conn_teardown(c);
        return;
    }
    drain_wake(c);
    return;
done:
    if ((c->flags & SQ__CF_CLOSE_AFTER) && (q == NULL || !q->inflight)) {
        sq__conn_close(c, false);
        return;
    }
    drain_wake(c);
    conn_idle_release(c);
}

int sq__conn_write(sq__conn_t *c, const uv_buf_t *bufs, unsigned nbufs, sq__write_cb cb,
                   void *ud)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER))
        return UV_ECANCELED;
    sq__wbatch_t *b = sq__conn_batch(c);
    if (b == NULL)
        return UV_ENOMEM;
    for (unsigned i = 0; i < nbufs; i++)
        if (sq__batch_add_copy(b, bufs[i].base, bufs[i].len) != 0)
            return UV_ENOMEM;
    if (cb != NULL) {
        sq__wseg_t *s = batch_new_seg(b);
        if (s == NULL)
            return UV_ENOMEM;
        s->cb = cb;
        s->cb_ud = ud;
    }
    sq__conn_want_flush(c);
    return 0;
}

int sq__conn_write_ref(sq__conn_t *c, const void *base, size_t len, sq_free_cb free_cb,
                       void *free_ud, sq__write_cb cb, void *ud)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER)) {
        if (free_cb)
            free_cb((void *)base, free_ud);
        return UV_ECANCELED;
    }
    sq__wbatch_t *b = sq__conn_batch(c);
    if (b == NULL || sq__batch_add_ref(b, base, len, free_cb, free_ud) != 0) {
        if (free_cb)
            free_cb((void *)base, free_ud);
        return UV_ENOMEM;
    }
    b->segs[b->nsegs - 1].cb = cb;
    b->segs[b->nsegs - 1].cb_ud = ud;
    sq__conn_want_flush(c);
    return 0;
}

size_t sq__conn_queued_bytes(const sq__conn_t *c)
{
    size_t n = c->h.stream.write_queue_size;
    if (c->wq != NULL)
        n += c->wq->b[c->wq->fill].bytes;
    return n;
}

void sq__conn_read(sq__conn_t *c, bool on)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_EOF))
        return;
    if (on && (c->flags & SQ__CF_READ_STOPPED)) {
        c->flags &= ~SQ__CF_READ_STOPPED;
        uv_read_start(&c->h.stream, on_alloc, on_read);
    } else if (!on && !(c->flags & SQ__CF_READ_STOPPED)) {
        c->flags |= SQ__CF_READ_STOPPED;
        uv_read_stop(&c->h.stream);
    }
}

uv_loop_t *sq__conn_loop(const sq__conn_t *c)
{
    return c->srv->loop;
}

/* ---- closing ---- */

static void on_conn_close(uv_handle_t *h)
{
    sq__conn_t *c = h->data;
    sq_server_t *srv = c->srv;
    if (c->wq != NULL) {
        batch_complete(c, &c->wq->b[0], UV_ECANCELED);
        batch_complete(c, &c->wq->b[1], UV_ECANCELED);
        wq_put(srv, c->wq);
    }
    sq__buf_free(&c->pending);
    sq__list_remove(&c->node);
    srv->nconns--;
    srv->stats.connections_open--;
    free(c);
    sq__server_maybe_done(srv);
}

/* Closes now: queued bytes are dropped, a handler still answering is told (.aborted). */
static void conn_teardown(sq__conn_t *c)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    c->flags |= SQ__CF_CLOSED;
    c->state = SQ__ST_CLOSING;
    tq_drop(c);
    sq__list_remove(&c->knode);
    if (c->wq != NULL && c->wq->b[c->wq->fill].nsegs)
        batch_complete(c, &c->wq->b[c->wq->fill], UV_ECANCELED);
    sq__conn_abort_exch(c);
    if (c->proto != NULL) {
        const sq__proto_t *p = c->proto;
        c->proto = NULL;
        p->on_close(c, c->proto_ud);
    }
    c->pending.len = 0; /* freed in on_conn_close: it may be the buffer being parsed */
    c->h.handle.data = c;
    uv_close(&c->h.handle, on_conn_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    sq__conn_t *c = req->handle->data;
    free(req);
    if (status < 0)
        conn_teardown(c);
}

void sq__conn_close(sq__conn_t *c, bool force)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    if (!force) {
        c->flags |= SQ__CF_CLOSE_AFTER;
        if (c->wq != NULL && (c->wq->inflight || c->wq->b[c->wq->fill].nsegs)) {
            sq__conn_want_flush(c);
            return; /* conn_flush comes back here once everything is written */
        }
        if ((c->flags & (SQ__CF_LINGER | SQ__CF_EOF)) == SQ__CF_LINGER &&
            c->state != SQ__ST_CLOSING) {
            /* After an error response the client may still be sending: closing now could
             * reset the connection and destroy the response in flight. Shut down our side
             * and drain reads for a while (lingering close). */
            uv_shutdown_t *req = malloc(sizeof(*req));
            c->h.handle.data = c;
            if (req != NULL && uv_shutdown(req, &c->h.stream, on_shutdown) == 0) {
                c->state = SQ__ST_CLOSING;
                sq__conn_abort_exch(c);
                if (c->flags & SQ__CF_READ_STOPPED) {
                    c->flags &= ~SQ__CF_READ_STOPPED;
                    uv_read_start(&c->h.stream, on_alloc, on_read); /* to drain */
                }
                tq_put(c, SQ__TQ_LINGER);
                return;
            }
            free(req);
        }
    }
    conn_teardown(c);
}

/* ---- reading and parsing ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sq__conn_t *c = h->data;
    /* One buffer per server: every byte read is parsed (or copied) before on_read returns,
     * so an idle connection holds no read memory at all. */
    buf->base = c->srv->rbuf;
    buf->len = c->srv->rbuf_cap;
}

static int status_for_error(sq__conn_t *c, const llhttp_t *parser, llhttp_errno_t err,
                            const char **detail)
{
    sq__exch_t *x = c->exch;
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
         * a good version followed by a bad line ending here ("HTTP/1.1\rX"): that is 400 */
        return parser->http_major == 1 && parser->http_minor <= 1 ? 400 : 505;
    case HPE_INVALID_TRANSFER_ENCODING:
        /* RFC 9112 §6.1: a coding we do not understand is 501; chunked not last is 400 */
        return x != NULL && (x->flags & SQ__XF_TE_UNKNOWN) ? 501 : 400;
    default:
        return 400;
    }
}

static void conn_process(sq__conn_t *c, const char *data, size_t len);

static void save_pending(sq__conn_t *c, const char *pos, size_t rest)
{
    if (rest == 0)
        return;
    if (c->pending.base != NULL && pos >= c->pending.base &&
        pos < c->pending.base + c->pending.cap) {
        memmove(c->pending.base, pos, rest);
        c->pending.len = rest;
    } else if (sq__buf_append(&c->pending, pos, rest) != 0) {
        conn_teardown(c);
    }
}

static void gap_scan(sq__exch_t *x, const char *p, const char *end, bool to_blank_line);

static void conn_process(sq__conn_t *c, const char *data, size_t len)
{
    sq_server_t *srv = c->srv;
    const char *end = data + len;
    llhttp_errno_t err;
    sq__exch_t *px = c->exch; /* its parser; held, since a take-over may release it */
    if (px == NULL && (px = c->exch = exch_get(c)) == NULL) {
        conn_teardown(c);
        return;
    }
    sq__exch_hold(px);
    for (;;) {
        srv->rd_base = data;
        srv->rd_end = end;
        err = llhttp_execute(&px->parser, data, (size_t)(end - data));
        if (err == HPE_PAUSED_UPGRADE && c->state == SQ__ST_IDLE && c->exch == px &&
            !(c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER | SQ__CF_PAUSED))) {
            /* RFC 9110 §7.8: the route answered without taking the connection over, so
             * the Upgrade is ignored and HTTP/1.1 goes on (curl's h2c offer, say) */
            data = llhttp_get_error_pos(&px->parser);
            llhttp_resume_after_upgrade(&px->parser);
            continue;
        }
        sq__exch_t *x = c->exch;
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
        sq__exch_t *x = c->exch;
        if (x != NULL && (x->flags & SQ__XF_GAP)) {
            /* the head goes on in the next read: keep its pending line endings */
            gap_scan(x, x->gap_from ? x->gap_from : data, end, false);
            x->gap_from = NULL;
        }
        goto out;
    }
    const char *pos = llhttp_get_error_pos(&px->parser);
    size_t rest = pos ? (size_t)(end - pos) : 0;
    if (c->flags & SQ__CF_CLOSED)
        goto out;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        if (c->state == SQ__ST_PROTO) {
            if (rest > 0)
                c->proto->on_read(c, c->proto_ud, pos, (ssize_t)rest);
        } else if (!(c->flags & SQ__CF_CLOSE_AFTER)) {
            save_pending(c, pos, rest);
        }
        goto out;
    }
    const char *detail;
    int status = status_for_error(c, &px->parser, err, &detail);
    if (status == 413 || status == 414 || status == 431)
        c->srv->stats.limit_errors++;
    else
        c->srv->stats.parse_errors++;
    respond_error(c, status, detail);
out:
    sq__exch_unhold(px);
}

/* Answers a request that could not be parsed (or timed out) and closes afterwards. */
static void respond_error(sq__conn_t *c, int status, const char *detail)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    sq__exch_t *x = c->exch;
    c->flags |= SQ__CF_CLOSE_AFTER | SQ__CF_LINGER;
    /* an earlier answer may still be in flight to a client that does not read: the
     * idle check closes it if it takes nothing for a whole idle period */
    tq_put(c, SQ__TQ_IDLE);
    if (x == NULL) {
        x = c->exch = exch_get(c);
        if (x == NULL) {
            conn_teardown(c);
            return;
        }
    }
    if (x->flags & (SQ__XF_HOLD_HANDLER | SQ__XF_HEADERS_SENT)) {
        conn_teardown(c); /* a handler owns the response already: nothing sane to send */
        return;
    }
    c->state = SQ__ST_HANDLER;
    x->flags &= ~SQ__XF_KEEPALIVE;
    x->flags |= SQ__XF_HOLD_HANDLER | SQ__XF_IN_HANDLER;
    x->rh.len = 0;
    if (x->http_minor == 0 && x->method == 0)
        x->http_minor = 1;
    sq_res_send_error(&x->res, status, detail); /* {"detail": ...}, as 404 and 405 */
    x->flags &= ~SQ__XF_IN_HANDLER;
}

/* The current response is finished and queued: reset for the next request, or close.
 * Returns true when the connection goes on parsing. */
static bool conn_response_done(sq__conn_t *c)
{
    sq__exch_t *x = c->exch;
    if (!(x->flags & SQ__XF_KEEPALIVE) || c->srv->closing) {
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
        c->state = SQ__ST_IDLE;
        c->flags |= SQ__CF_PAUSED;
        tq_put(c, SQ__TQ_IDLE);
        tick_add(c);
        return false;
    }
    sq__exch_reset(x);
    c->state = SQ__ST_IDLE;
    tq_put(c, SQ__TQ_IDLE);
    return true;
}

/* Back-pressure on pipelining: a client that sends requests without reading the answers
 * would have squall buffer answers without bound. Past max_pipeline_bytes of queued
 * answers, parsing pauses (the bytes read meanwhile wait in c->pending, and reading stops
 * when that is full) until conn_flush sees the queue drain (test:
 * backpressure/pipelined_answers_wait_*). Returns true when it paused. */
static bool conn_drain_pause(sq__conn_t *c)
{
    if (sq__conn_queued_bytes(c) <= c->srv->opts.max_pipeline_bytes)
        return false;
    c->flags |= SQ__CF_PAUSED | SQ__CF_DRAIN;
    return true;
}

/* Parses what was read while the parser was paused, and reads again. */
static void conn_resume(sq__conn_t *c)
{
    c->flags &= ~(SQ__CF_PAUSED | SQ__CF_DRAIN);
    if (c->exch != NULL)
        llhttp_resume(&c->exch->parser);
    c->flags |= SQ__CF_IN_READ;
    if (c->pending.len > 0) {
        size_t n = c->pending.len;
        c->pending.len = 0;
        conn_process(c, c->pending.base, n);
    }
    c->flags &= ~SQ__CF_IN_READ;
    if ((c->flags & (SQ__CF_READ_STOPPED | SQ__CF_CLOSED | SQ__CF_PAUSED | SQ__CF_EOF)) ==
        SQ__CF_READ_STOPPED) {
        c->flags &= ~SQ__CF_READ_STOPPED;
        uv_read_start(&c->h.stream, on_alloc, on_read);
    }
}

/* Between requests with nothing buffered, give the exchange and write state back. */
static void conn_idle_release(sq__conn_t *c)
{
    if (c->state != SQ__ST_IDLE || (c->flags & SQ__CF_CLOSED))
        return;
    if (c->exch != NULL && c->pending.len == 0 && c->exch->hb.len == 0 &&
        !(c->flags & SQ__CF_PAUSED)) { /* a paused parser keeps its exchange */
        sq__exch_t *x = c->exch;
        c->exch = NULL;
        x->conn = NULL;
        sq__exch_release(x, SQ__XF_HOLD_CONN);
    }
    sq__wq_t *q = c->wq;
    if (q != NULL && !q->inflight && q->b[0].nsegs == 0 && q->b[1].nsegs == 0) {
        c->wq = NULL;
        wq_put(c->srv, q);
    }
    if (c->pending.len == 0 && c->pending.cap != 0)
        sq__buf_free(&c->pending);
}

static void conn_tick(sq__conn_t *c)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    if (c->state == SQ__ST_HANDLER && c->exch != NULL && (c->exch->flags & SQ__XF_FINISHED) &&
        !(c->flags & SQ__CF_CLOSE_AFTER)) {
        /* answered later: go on with the pipelined requests, unless the answers queued
         * so far must drain first */
        c->flags &= ~SQ__CF_PAUSED;
        if (conn_response_done(c) && !conn_drain_pause(c))
            conn_resume(c);
    } else if (c->state == SQ__ST_IDLE && c->exch == NULL && (c->flags & SQ__CF_PAUSED) &&
               !(c->flags & SQ__CF_CLOSE_AFTER)) {
        conn_resume(c); /* after an exchange kept by write callbacks: a fresh one */
    } else if ((c->flags & SQ__CF_DRAIN) && !(c->flags & SQ__CF_CLOSE_AFTER)) {
        if (sq__conn_queued_bytes(c) <= c->srv->opts.max_pipeline_bytes)
            conn_resume(c);
    } else if (c->state == SQ__ST_PROTO && c->pending.len > 0) {
        size_t n = c->pending.len;
        c->pending.len = 0;
        c->flags |= SQ__CF_IN_READ;
        c->proto->on_read(c, c->proto_ud, c->pending.base, (ssize_t)n);
        c->flags &= ~SQ__CF_IN_READ;
        if (!(c->flags & SQ__CF_CLOSED) && c->pending.len == 0)
            sq__buf_free(&c->pending);
    }
    eof_check(c);
    conn_flush(c);
}

/* After a half-close: once nothing more can be answered — no handler owns a response,
 * nothing pipelined waits, or a request was cut short — close after the queued writes. */
static void eof_check(sq__conn_t *c)
{
    if ((c->flags & (SQ__CF_EOF | SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER | SQ__CF_PAUSED)) !=
            SQ__CF_EOF ||
        c->state == SQ__ST_HANDLER || c->state == SQ__ST_PROTO)
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
    if (err != UV_EOF || c->state == SQ__ST_CLOSING) {
        conn_teardown(c);
        return;
    }
    uv_read_stop(&c->h.stream);
    c->flags |= SQ__CF_EOF | SQ__CF_READ_STOPPED;
    c->flags &= ~SQ__CF_LINGER; /* nothing more will come to drain */
    eof_check(c);
    tick_add(c); /* flushes, and closes if CLOSE_AFTER is set */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sq__conn_t *c = s->data;
    if (nread == 0)
        return;
    if (c->state == SQ__ST_PROTO) {
        c->flags |= SQ__CF_IN_READ;
        c->proto->on_read(c, c->proto_ud, buf->base, nread);
        c->flags &= ~SQ__CF_IN_READ;
        conn_flush(c);
        return;
    }
    if (nread < 0) {
        on_eof(c, nread);
        return;
    }
    if (c->state == SQ__ST_CLOSING || (c->flags & SQ__CF_CLOSE_AFTER))
        return; /* lingering, or closing after an answer: nothing more is parsed */
    if (c->flags & SQ__CF_PAUSED) {
        /* A response is outstanding: keep what is pipelined behind it, up to a limit. */
        if (sq__buf_append(&c->pending, buf->base, (size_t)nread) != 0) {
            conn_teardown(c);
            return;
        }
        if (c->pending.len >= c->srv->opts.max_pipeline_bytes) {
            uv_read_stop(s);
            c->flags |= SQ__CF_READ_STOPPED;
        }
        return;
    }
    c->flags |= SQ__CF_IN_READ;
    conn_process(c, buf->base, (size_t)nread);
    c->flags &= ~SQ__CF_IN_READ;
    conn_flush(c);
}

/* ---- llhttp callbacks ---- */

#define CONN(p) ((sq__conn_t *)(p)->data)

static int fail(sq__exch_t *x, int status)
{
    x->err_status = status;
    return -1;
}

/* ---- line endings between the spans llhttp reports ----
 *
 * RFC 9112 §2.2 ends every line of a head with CRLF and only allows a recipient to take a
 * bare LF; §5.2 lets it take obs-fold continuation lines only to reject or unfold them.
 * llhttp 8.1, even in strict mode, takes a bare LF after the request line and as the blank
 * line that ends the head or the trailer section, and hands obs-fold on as more of the
 * value. A front end that reads those bytes differently splits the stream into different
 * requests (smuggling), so squall answers 400 instead: from the version on, it keeps the
 * line-ending bytes llhttp skips between the spans it reports, and checks them where a
 * field name or value starts and where the head or trailers end. Costs a few compares per
 * field; the state lives in the exchange across reads (tests: smuggling/bare_lf_*,
 * smuggling/obs_fold_*). */

#define GAP_BAD 0xff

/* Adds the line endings of p..end to x->gap; text after a line ending (a continuation
 * line) or more than 4 of them makes it bad. With to_blank_line, stops at 4. */
static void gap_scan(sq__exch_t *x, const char *p, const char *end, bool to_blank_line)
{
    for (; p < end; p++) {
        if (x->gap_n == GAP_BAD || (to_blank_line && x->gap_n == 4))
            return;
        if (*p == '\r' || *p == '\n') {
            if (x->gap_n < sizeof(x->gap))
                x->gap[x->gap_n++] = *p;
            else
                x->gap_n = GAP_BAD;
        } else if (x->gap_n != 0) {
            x->gap_n = GAP_BAD;
        }
    }
}

/* A span starts at `at`: true when the line endings since the previous one are exactly
 * want[0, wlen) ("" within a line, CRLF before a field name). Starts the next gap after
 * the span. The slow path, for gaps that cross reads. */
static bool gap_check_slow(sq__exch_t *x, const char *at, size_t len, const char *want,
                           size_t wlen)
{
    if (!(x->flags & SQ__XF_GAP))
        return true;
    gap_scan(x, x->gap_from ? x->gap_from : x->srv->rd_base, at, false);
    bool ok = x->gap_n == wlen && memcmp(x->gap, want, wlen) == 0;
    x->gap_from = at + len;
    x->gap_n = 0;
    return ok;
}

/* Before a field name: exactly CRLF since the previous span. The usual case, a gap wholly
 * in this read, costs a few compares. */
static inline bool gap_crlf(sq__exch_t *x, const char *at, size_t len)
{
    const char *g = x->gap_from;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0 && at - g == 2 && g[0] == '\r' && g[1] == '\n')) {
        x->gap_from = at + len;
        return true;
    }
    return gap_check_slow(x, at, len, "\r\n", 2);
}

/* Before a value, or more of a name or value: no line ending since the previous span
 * (a line ending there is obs-fold). */
static inline bool gap_inline(sq__exch_t *x, const char *at, size_t len)
{
    const char *g = x->gap_from;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0)) {
        for (; g < at; g++)
            if (*g == '\r' || *g == '\n')
                return gap_check_slow(x, at, len, "", 0);
        x->gap_from = at + len;
        return true;
    }
    return gap_check_slow(x, at, len, "", 0);
}

/* The head or the trailer section has ended: true when it ended with CRLF CRLF. llhttp
 * has consumed those bytes, so they are all in the read at hand or in x->gap. */
static bool gap_end(sq__exch_t *x)
{
    if (!(x->flags & SQ__XF_GAP))
        return true;
    x->flags &= ~SQ__XF_GAP;
    const char *g = x->gap_from;
    x->gap_from = NULL;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0 && x->srv->rd_end - g >= 4 &&
                   memcmp(g, "\r\n\r\n", 4) == 0))
        return true;
    gap_scan(x, g ? g : x->srv->rd_base, x->srv->rd_end, true);
    return x->gap_n == 4 && memcmp(x->gap, "\r\n\r\n", 4) == 0;
}

static int on_version(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = CONN(p)->exch;
    x->flags |= SQ__XF_GAP;
    x->gap_from = at + len;
    x->gap_n = 0;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    if (c->exch == NULL && (c->exch = exch_get(c)) == NULL)
        return -1;
    c->state = SQ__ST_HEAD;
    tq_put(c, SQ__TQ_HEAD);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = CONN(p)->exch;
    sq_server_t *srv = x->srv;
    x->target_len += (uint32_t)len;
    if (x->target_len > srv->opts.max_uri_bytes)
        return fail(x, 414);
    x->header_bytes += len;
    if (x->header_bytes > srv->opts.max_header_bytes)
        return fail(x, 431);
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

static int on_url_complete(llhttp_t *p)
{
    sq__exch_t *x = CONN(p)->exch;
    return sq__buf_append(&x->hb, "", 1) ? fail(x, 500) : 0;
}

/* Header fields, and trailer fields after a chunked body. Trailers are checked and
 * counted against max_header_bytes, then dropped: RFC 9110 §6.5.1 forbids merging them
 * into the header section the handler reads, and squall has no use for them. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = CONN(p)->exch;
    sq_server_t *srv = x->srv;
    if (!(x->flags & SQ__XF_IN_FIELD)) {
        if (!gap_crlf(x, at, len))
            return fail(x, 400); /* a bare LF before the field */
        x->flags |= SQ__XF_IN_FIELD;
        if (!(x->flags & SQ__XF_TRAILERS) &&
            x->hidx.len / sizeof(sq__hdr_t) >= srv->opts.max_headers)
            return fail(x, 431);
        x->cur_off = (uint32_t)x->hb.len;
        x->header_bytes += 4; /* ": " and CRLF */
    } else if (!gap_inline(x, at, len)) {
        return fail(x, 400);
    }
    x->header_bytes += len;
    if (x->header_bytes > srv->opts.max_header_bytes)
        return fail(x, 431);
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    sq__exch_t *x = CONN(p)->exch;
    sq__hdr_t h = {.name_off = x->cur_off, .name_len = (uint32_t)x->hb.len - x->cur_off};
    x->flags &= ~SQ__XF_IN_FIELD;
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    if (sq__buf_append(&x->hb, "", 1) || sq__buf_append(&x->hidx, &h, sizeof(h)))
        return fail(x, 500);
    x->cur_off = (uint32_t)x->hb.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = CONN(p)->exch;
    /* An empty value (RFC 9110 §5.5 allows it) comes as an empty span placed after its
     * line's CRLF: no bytes to check, and that CRLF is checked before the next field or
     * at the end of the head (test: regress_http/empty_header_values_are_accepted). */
    if (len == 0)
        return 0;
    if (!gap_inline(x, at, len))
        return fail(x, 400); /* RFC 9112 §5.2: obs-fold, rejected */
    x->header_bytes += len;
    if (x->header_bytes > x->srv->opts.max_header_bytes)
        return fail(x, 431);
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

static bool name_is(const char *name, size_t len, const char *lower, size_t llen)
{
    if (len != llen)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((name[i] | 0x20) != lower[i])
            return false;
    return true;
}

/* Transfer-Encoding (RFC 9112 §6.1): squall implements chunked only, as the final and only
 * coding; anything else it cannot decode (501). */
static void check_transfer_encoding(sq__exch_t *x, const char *v, size_t n)
{
    x->flags |= SQ__XF_TE;
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t' && *p != ';')
            p++;
        if (p > tok && !name_is(tok, (size_t)(p - tok), "chunked", 7))
            x->flags |= SQ__XF_TE_UNKNOWN;
        while (p < end && *p != ',')
            p++;
    }
}

static int on_header_value_complete(llhttp_t *p)
{
    sq__exch_t *x = CONN(p)->exch;
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    sq__hdr_t *h = (sq__hdr_t *)(x->hidx.base + x->hidx.len) - 1;
    uint32_t vlen = (uint32_t)x->hb.len - x->cur_off;
    while (vlen > 0 && (x->hb.base[x->cur_off + vlen - 1] == ' ' ||
                        x->hb.base[x->cur_off + vlen - 1] == '\t'))
        vlen--; /* RFC 9110 §5.5: trailing whitespace is not part of the value */
    x->hb.len = x->cur_off + vlen;
    h->val_off = x->cur_off;
    h->val_len = vlen;
    if (sq__buf_append(&x->hb, "", 1))
        return fail(x, 500);
    const char *name = x->hb.base + h->name_off, *val = x->hb.base + h->val_off;
    if (memchr(val, '\0', vlen) != NULL)
        return fail(x, 400); /* RFC 9110 §5.5: NUL in a field value */
    switch (h->name_len) {
    case 4:
        if (name_is(name, 4, "host", 4) && x->host_count < 2)
            x->host_count++; /* saturates: 257 Host lines must not wrap to one */
        break;
    case 6:
        if (name_is(name, 6, "expect", 6)) {
            if (vlen == 12 && name_is(val, 12, "100-continue", 12))
                x->flags |= SQ__XF_EXPECT;
        }
        break;
    case 17:
        if (name_is(name, 17, "transfer-encoding", 17))
            check_transfer_encoding(x, val, vlen);
        break;
    }
    return 0;
}

static sq_method_t method_id(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return SQ_METHOD_GET;
    case HTTP_HEAD:
        return SQ_METHOD_HEAD;
    case HTTP_POST:
        return SQ_METHOD_POST;
    case HTTP_PUT:
        return SQ_METHOD_PUT;
    case HTTP_DELETE:
        return SQ_METHOD_DELETE;
    case HTTP_PATCH:
        return SQ_METHOD_PATCH;
    case HTTP_OPTIONS:
        return SQ_METHOD_OPTIONS;
    default:
        return SQ_METHOD_OTHER;
    }
}

static int on_headers_complete(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = c->exch;
    sq_server_t *srv = c->srv;
    x->llmethod = p->method;
    x->method = method_id(p->method);
    x->http_minor = p->http_minor;
    if (!gap_end(x))
        return fail(x, 400); /* a bare LF ends the request line or the head */
    if (p->http_major != 1 || p->http_minor > 1)
        return fail(x, 505);
    /* RFC 9112 §3.2: exactly one Host in HTTP/1.1; never more than one. */
    if ((p->http_minor == 1 && x->host_count != 1) || x->host_count > 1)
        return fail(x, 400);
    /* RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty. */
    if ((x->flags & SQ__XF_TE) && p->http_minor == 0)
        return fail(x, 400);
    if (x->flags & SQ__XF_TE_UNKNOWN)
        return fail(x, 501);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > srv->opts.max_body_bytes)
        return fail(x, 413);

    /* The target: origin-form "/path?query", absolute-form "http://host/path" (RFC 9112
     * §3.2.2) or asterisk-form "*". */
    const char *t = x->hb.base;
    size_t tlen = x->target_len;
    if (t[0] != '/' && tlen >= 7 &&
        (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        const char *slash = memchr(t + 8, '/', tlen - 8 > tlen ? 0 : tlen - 8);
        size_t skip = slash ? (size_t)(slash - t) : tlen;
        t += skip;
        tlen -= skip;
    }
    const char *q = memchr(t, '?', tlen);
    size_t plen = q ? (size_t)(q - t) : tlen;
    x->query = q ? q + 1 : "";
    char *path = sq__arena_alloc(&x->arena, plen + 1);
    if (path == NULL)
        return fail(x, 500);
    memcpy(path, t, plen);
    path[plen] = '\0';
    x->path = path; /* raw until sq_req_path decodes it */
    if (plen == 0 || path[0] != '/')
        x->verdict = (plen == 1 && path[0] == '*') ? SQ__MATCH_ASTERISK : SQ__MATCH_NONE;
    else
        x->verdict = sq__app_match(srv->app, x->method, path, plen, &x->arena, &x->match);

    /* RFC 9110 §10.1.1: tell a client that waits for it to send the body — unless the
     * answer is already known to be final (404, 405, 422, a bad `*`): then that answer
     * goes now instead, and the connection closes, since the body was never read (test:
     * regress_http/expect_100_*). */
    if ((x->flags & SQ__XF_EXPECT) && p->http_minor == 1 &&
        ((p->flags & F_CONTENT_LENGTH && p->content_length > 0) || (p->flags & F_CHUNKED))) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (x->verdict != SQ__MATCH_OK) {
            tq_drop(c);
            c->state = SQ__ST_HANDLER;
            c->flags |= SQ__CF_CLOSE_AFTER | SQ__CF_LINGER;
            srv->stats.requests++;
            if (x->method == SQ_METHOD_HEAD)
                x->flags |= SQ__XF_HEAD;
            dispatch(c, x);
            return HPE_PAUSED;
        }
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        if (sq__conn_write(c, &b, 1, NULL, NULL) != 0)
            return fail(x, 500);
    }
    c->state = SQ__ST_BODY;
    tq_put(c, SQ__TQ_BODY);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = c->exch;
    if (x->body.len + len > c->srv->opts.max_body_bytes)
        return fail(x, 413);
    if (sq__buf_append(&x->body, at, len) != 0)
        return fail(x, 500);
    /* No fresh deadline per piece: body_timeout_ms bounds the whole body, so a client
     * that trickles a byte just inside it cannot hold the buffer forever (test:
     * regress_http/body_trickle_*). */
    return 0;
}

/* Chunk extensions (RFC 9112 §7.1.1): squall knows none, so they are skipped, but not
 * without bound: their bytes count against max_header_bytes with the head and the
 * trailers, past which the request is answered 413 (test: regress_http/chunk_ext_*). */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = CONN(p)->exch;
    x->header_bytes += len;
    return x->header_bytes > x->srv->opts.max_header_bytes ? fail(x, 413) : 0;
}

/* The last chunk's line is read: pause, so conn_process learns where the trailer section
 * starts and can check how it ends (see gap_check). Chunked requests only. */
static int on_chunk_header(llhttp_t *p)
{
    sq__exch_t *x = CONN(p)->exch;
    if (p->content_length != 0 || (x->flags & SQ__XF_TRAILERS))
        return 0;
    x->flags |= SQ__XF_TRAILERS | SQ__XF_TRAILER_PAUSE;
    return HPE_PAUSED;
}

static void dispatch(sq__conn_t *c, sq__exch_t *x)
{
    x->flags |= SQ__XF_HOLD_HANDLER | SQ__XF_IN_HANDLER;
    x->refs++;        /* the handler's reference, dropped when it finishes the response */
    sq__exch_hold(x); /* this frame's: the handler may finish, take over or lose the client */
    switch (x->verdict) {
    case SQ__MATCH_OK:
        if (x->match.bcb != NULL) {
            sq__blocking_dispatch(x);
        } else {
            sq_watchdog_span_t span; /* asyncio's debug mode: who held the loop */
            sq_watchdog_span_begin(c->srv->wd, &span, sq__route_pattern(x->match.route));
            x->match.cb(x, &x->res, x->match.data);
            sq_watchdog_span_end(c->srv->wd, &span);
        }
        break;
    case SQ__MATCH_NONE:
        sq_res_send_error(&x->res, 404, "Not Found");
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
        sq_res_send_error(&x->res, 405, "Method Not Allowed");
        break;
    case SQ__MATCH_BAD_PARAM: {
        /* FastAPI's shape for a path parameter that does not convert; an input that is not
         * UTF-8 (it is percent-decoded bytes) is reported as null */
        static const char msg[] =
            "Input should be a valid integer, unable to parse string as an integer";
        json_t *in = json_string(x->match.bad_value);
        json_t *j = json_pack("{s:[{s:s,s:[s,s],s:s,s:o}]}", "detail", "type", "int_parsing",
                              "loc", "path", x->match.bad_param, "msg", msg, "input",
                              in ? in : json_null());
        if (j != NULL)
            sq_res_send_json_new(&x->res, 422, j);
        else
            sq_res_send_error(&x->res, 422, msg);
        break;
    }
    }
    x->flags &= ~SQ__XF_IN_HANDLER;
    sq__exch_unhold(x);
}

static int on_message_complete(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = c->exch;
    if (!gap_end(x))
        return fail(x, 400); /* a bare LF ends the trailer section */
    tq_drop(c);
    c->state = SQ__ST_HANDLER;
    c->srv->stats.requests++;
    if (llhttp_should_keep_alive(p) && !c->srv->closing)
        x->flags |= SQ__XF_KEEPALIVE;
    if (p->upgrade)
        x->flags |= SQ__XF_UPGRADE;
    if (x->method == SQ_METHOD_HEAD)
        x->flags |= SQ__XF_HEAD;
    if (sq__buf_reserve(&x->body, 1) == 0)
        x->body.base[x->body.len] = '\0';
    dispatch(c, x);
    if (c->flags & SQ__CF_CLOSED || c->state == SQ__ST_PROTO)
        return HPE_PAUSED;
    if (!(x->flags & SQ__XF_FINISHED)) {
        c->flags |= SQ__CF_PAUSED; /* answered later; pipelined bytes wait in order */
        return HPE_PAUSED;
    }
    if (!conn_response_done(c))
        return HPE_PAUSED;
    return conn_drain_pause(c) ? HPE_PAUSED : 0;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};

/* ---- taking a connection over ---- */

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
    c->proto = proto;
    c->proto_ud = ud;
    c->state = SQ__ST_PROTO;
    c->flags &= ~SQ__CF_PAUSED;
    tq_drop(c);
    x->flags |= SQ__XF_FINISHED;
    c->exch = NULL;
    x->conn = NULL;
    sq__exch_release(x, SQ__XF_HOLD_CONN);
    sq__exch_release(x, SQ__XF_HOLD_HANDLER);
    if (c->pending.len > 0)
        tick_add(c);
    if (c->flags & SQ__CF_READ_STOPPED) {
        /* after a half-close too: reading again delivers the EOF to the protocol */
        c->flags &= ~(SQ__CF_READ_STOPPED | SQ__CF_EOF);
        uv_read_start(&c->h.stream, on_alloc, on_read);
    }
    return 0;
}

/* ---- accepting ---- */

void sq__conn_accept(sq_server_t *srv, uv_stream_t *listener, bool is_pipe)
{
    sq__conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    int rc = is_pipe ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
    if (rc != 0) {
        free(c);
        return;
    }
    c->srv = srv;
    c->h.handle.data = c;
    if (is_pipe)
        c->flags |= SQ__CF_PIPE;
    sq__list_insert_tail(&srv->conns, &c->node);
    srv->nconns++;
    srv->stats.connections_open++;
    srv->stats.connections_total++;
    if (uv_accept(listener, &c->h.stream) != 0) {
        conn_teardown(c);
        return;
    }
    if (srv->closing || srv->nconns > srv->opts.max_connections) {
        srv->stats.connections_rejected++;
        conn_teardown(c);
        return;
    }
    if (!is_pipe)
        uv_tcp_nodelay(&c->h.tcp, 1);
    c->state = SQ__ST_IDLE;
    tq_put(c, SQ__TQ_IDLE);
    if (uv_read_start(&c->h.stream, on_alloc, on_read) != 0)
        conn_teardown(c);
}

/* Server shutdown: idle connections close now, busy ones after their response, taken-over
 * ones are asked to say goodbye. */
void sq__conn_shutdown(sq__conn_t *c)
{
    switch (c->state) {
    case SQ__ST_IDLE:
        if (c->pending.len == 0 && (c->wq == NULL || !c->wq->inflight)) {
            conn_teardown(c);
            return;
        }
        c->flags |= SQ__CF_CLOSE_AFTER;
        break;
    case SQ__ST_PROTO:
        c->proto->on_shutdown(c, c->proto_ud);
        break;
    case SQ__ST_HANDLER:
        if (c->exch != NULL)
            c->exch->flags &= ~SQ__XF_KEEPALIVE;
        if (c->exch != NULL && (c->exch->flags & SQ__XF_FINISHED))
            sq__conn_close(c, false);
        break;
    default:
        break; /* a request being read: it is answered, then the connection closes */
    }
}
