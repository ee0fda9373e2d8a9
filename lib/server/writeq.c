/* The write queue: what a connection sends is gathered into a batch (bytes copied into
 * one buffer, or segments that borrow memory) and leaves in one writev; while it is in
 * flight the next batch fills. Completions and free callbacks run when the bytes have
 * left or failed. Lent to a connection from the server's pool while it has bytes to send. */
#include <stdlib.h>

#include "server/server_int.h"

static sq__wq_t *wq_get(sq__conn_t *c)
{
    if (c->wq != NULL)
        return c->wq;
    sq_server_t *srv = sq__conn_srv(c);
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
    if (++srv->wq_lent > srv->wq_peak)
        srv->wq_peak = srv->wq_lent;
    return q;
}

static void wbatch_free(sq__wbatch_t *b)
{
    sq__buf_free(&b->buf);
    free(b->segs);
    b->segs = NULL;
    b->nsegs = b->cap = b->ncb = 0;
}

static void wq_free(sq__wq_t *q)
{
    wbatch_free(&q->b[0]);
    wbatch_free(&q->b[1]);
    free(q->iov);
    free(q);
}

void sq__wq_put(sq_server_t *srv, sq__wq_t *q)
{
    srv->wq_lent--;
    uint64_t now = sq__loop_now(srv->loop);
    if (now - srv->wq_window_at >= SQ__WQ_WINDOW_MS) {
        srv->wq_window_at = now;
        srv->wq_peak_prev = srv->wq_peak;
        srv->wq_peak = srv->wq_lent;
    }
    unsigned keep = srv->wq_peak > srv->wq_peak_prev ? srv->wq_peak : srv->wq_peak_prev;
    if (keep < SQ__POOL_MAX)
        keep = SQ__POOL_MAX;
    /* one that grew for a backlog (a big buffer, many segments) is not kept */
    if (srv->wq_free_n < keep && !srv->closing && q->b[0].buf.cap <= 16384 &&
        q->b[1].buf.cap <= 16384 && q->b[0].cap <= 64 && q->b[1].cap <= 64 &&
        q->iov_cap <= 128) {
        q->next_free = srv->wq_free;
        srv->wq_free = q;
        srv->wq_free_n++;
        q = NULL;
    }
    /* past a burst, the pool shrinks back by one more with each return */
    if (srv->wq_free_n > keep && srv->wq_free != NULL) {
        sq__wq_t *extra = srv->wq_free;
        srv->wq_free = extra->next_free;
        srv->wq_free_n--;
        wq_free(extra);
    }
    if (q != NULL)
        wq_free(q);
}

void sq__wq_pool_free(sq_server_t *srv)
{
    while (srv->wq_free != NULL) {
        sq__wq_t *q = srv->wq_free;
        srv->wq_free = q->next_free;
        wq_free(q);
    }
    srv->wq_free_n = 0;
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

static bool seg_has_cb(const sq__wseg_t *s)
{
    return s->done != NULL || s->free_cb != NULL;
}

int sq__batch_on_done(sq__wbatch_t *b, sq__wdone_cb done, void (*fn)(void), void *ud,
                      void *ud2)
{
    sq__wseg_t *s = b->nsegs ? &b->segs[b->nsegs - 1] : NULL;
    if (s == NULL || seg_has_cb(s)) {
        s = batch_new_seg(b); /* a fresh empty segment carries the completion */
        if (s == NULL)
            return UV_ENOMEM;
        s->off = b->buf.len;
    }
    b->ncb++;
    s->done = done;
    s->fn = fn;
    s->ud = ud;
    s->ud2 = ud2;
    return 0;
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
    sq__wseg_t *s;
    if (b->nsegs != 0) {
        s = &b->segs[b->nsegs - 1];
        if (s->base == NULL && !seg_has_cb(s) && s->off + s->len == b->buf.len - len) {
            s->len += len; /* the bytes follow the last copied segment's */
            return 0;
        }
    } else if (b->cap != 0) { /* the first segment (a response's head): no realloc check */
        b->nsegs = 1;
        b->segs[0] = (sq__wseg_t){.off = b->buf.len - len, .len = len};
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
    b->ncb += free_cb != NULL;
    b->bytes += len;
    return 0;
}

/* Runs the completion and free callbacks of a written (or failed) batch and empties it. */
void sq__batch_complete(sq__conn_t *c, sq__wbatch_t *b, int status)
{
    b->buf.len = 0;
    b->bytes = 0;
    if (b->ncb == 0) { /* bytes only (a response sent whole): nothing to call */
        b->nsegs = 0;
        return;
    }
    /* The callbacks may queue more bytes into this very batch (a drain callback that
     * sends, a streaming write callback that writes the next chunk): walk a detached
     * segment array, so new segments go to a fresh one. */
    sq__wseg_t *segs = b->segs;
    unsigned n = b->nsegs, cap = b->cap;
    b->segs = NULL;
    b->nsegs = b->cap = b->ncb = 0;
    for (unsigned i = 0; i < n; i++) {
        sq__wseg_t s = segs[i];
        if (s.free_cb != NULL)
            s.free_cb((void *)s.base, s.free_ud);
        if (s.done != NULL)
            s.done(c, status, s.fn, s.ud, s.ud2);
    }
    if (b->segs == NULL) { /* nothing was queued meanwhile: keep the array */
        b->segs = segs;
        b->cap = cap;
    } else {
        free(segs);
    }
}

static void after_write(sq__conn_t *c, int status)
{
    if (status < 0) {
        if (!(c->flags & SQ__CF_CLOSED))
            sq__conn_teardown(c);
        return;
    }
    sq__conn_flush(c);
}

static void on_write(uv_write_t *req, int status)
{
    sq__wq_t *q = sq__container_of(req, sq__wq_t, req);
    sq__conn_t *c = (sq__conn_t *)req->handle;
    q->inflight = false;
    sq__batch_complete(c, &q->b[q->fill ^ 1], status);
    after_write(c, status);
}

/* Tells the protocol what a flush left: it may wait for queued bytes to drain
 * (HTTP/1's back-pressure on pipelining). */
static void flushed(sq__conn_t *c, bool idle)
{
    if (c->proto != NULL && c->proto->on_flushed != NULL && !(c->flags & SQ__CF_CLOSED))
        c->proto->on_flushed(c, c->proto_ud, idle);
}

/* Nothing queued and nothing in flight: the write state goes back to the server's pool,
 * so an idle connection holds none. */
static void wq_release(sq__conn_t *c)
{
    sq__wq_t *q = c->wq;
    if (q != NULL && !q->inflight && q->b[0].nsegs == 0 && q->b[1].nsegs == 0 &&
        !(c->flags & SQ__CF_CLOSED)) {
        c->wq = NULL;
        sq__wq_put(sq__conn_srv(c), q);
    }
}

/* Sends the filling batch: one writev when the socket takes it all (the usual case),
 * else uv_write for the rest. Pipelined responses of one read leave in one syscall. */
void sq__conn_flush(sq__conn_t *c)
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
            sq__batch_complete(c, b, UV_ENOMEM);
            sq__conn_teardown(c);
            return;
        }
        q->iov = iov;
        q->iov_cap = b->nsegs;
    }
    unsigned n = 0;
    uint64_t total = 0;
    for (unsigned i = 0; i < b->nsegs; i++) {
        sq__wseg_t *s = &b->segs[i];
        if (s->len == 0)
            continue;
        total += s->len;
        /* not uv_buf_init, whose length is an unsigned int: a body of 4 GiB or more
         * would go out cut to its low 32 bits while its Content-Length says the whole */
        q->iov[n].base = (char *)(s->base ? s->base : b->buf.base + s->off);
        q->iov[n++].len = s->len;
    }
    sq__conn_srv(c)->stats.bytes_written += total;
    unsigned first = 0;
    if (n > 0 && sq__conn_io(c)->queued(c) == 0) {
        int w = sq__conn_io(c)->try_write(c, q->iov, n);
        if (w < 0 && w != UV_EAGAIN) {
            sq__batch_complete(c, b, w);
            sq__conn_teardown(c);
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
        sq__batch_complete(c, b, 0);
        if (c->flags & SQ__CF_CLOSED)
            return;
        if (q->b[q->fill].nsegs != 0) { /* a completion callback queued more */
            if (++rounds < 16)
                goto again;
            sq__tick_add(c); /* the rest on the next tick: no recursion, no starving the loop */
            return;
        }
        goto done;
    }
    q->fill ^= 1;
    q->inflight = true;
    q->mark = SIZE_MAX;
    int rc = sq__conn_io(c)->write(c, &q->req, q->iov + first, n - first, on_write);
    if (rc != 0) {
        q->inflight = false;
        q->fill ^= 1;
        sq__batch_complete(c, b, rc);
        sq__conn_teardown(c);
        return;
    }
    flushed(c, false);
    return;
done:
    if ((c->flags & SQ__CF_CLOSE_AFTER) && (q == NULL || !q->inflight)) {
        sq__conn_close(c, false);
        return;
    }
    flushed(c, true);
    wq_release(c);
}

/* The completion of raw connection writes (sq__conn_write*). */
static void raw_done(sq__conn_t *c, int status, void (*fn)(void), void *ud, void *ud2)
{
    ((sq__write_cb)fn)(c, status, ud);
}

/* Bytes of one sq__conn_write from which, when nothing else waits to go out, they are
 * written at once rather than copied into the batch: a syscall costs about what copying
 * a few KiB does, and the batch would have held these bytes alone anyway. */
#define SQ__WRITE_THROUGH_MIN 4096

/* Writes what it can of bufs now when the connection has nothing queued or in flight (a
 * plain socket, no callback wanted); returns how many bytes went out (0: none, queue
 * them all). An error is left to the flush, which meets it again. */
static size_t write_through(sq__conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    sq__wq_t *q = c->wq;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total < SQ__WRITE_THROUGH_MIN || (c->flags & SQ__CF_TLS) ||
        (q != NULL && (q->inflight || q->b[q->fill].nsegs != 0)) ||
        sq__conn_io(c)->queued(c) != 0)
        return 0;
    int w = sq__conn_io(c)->try_write(c, bufs, nbufs);
    if (w <= 0)
        return 0;
    sq__conn_srv(c)->stats.bytes_written += (uint64_t)w;
    return (size_t)w;
}

int sq__conn_write(sq__conn_t *c, const uv_buf_t *bufs, unsigned nbufs, sq__write_cb cb,
                   void *ud)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER))
        return UV_ECANCELED;
    size_t done = cb == NULL ? write_through(c, bufs, nbufs) : 0;
    unsigned i = 0;
    while (i < nbufs && done >= bufs[i].len)
        done -= bufs[i++].len;
    if (i == nbufs && cb == NULL)
        return 0; /* all written; a write of nothing with a callback is a request to be
                     told when what is queued is out (lib/ws/ws.c): it goes on */
    sq__wbatch_t *b = sq__conn_batch(c);
    if (b == NULL)
        return UV_ENOMEM;
    for (; i < nbufs; i++, done = 0)
        if (sq__batch_add_copy(b, bufs[i].base + done, bufs[i].len - done) != 0)
            return UV_ENOMEM;
    if (cb != NULL && sq__batch_on_done(b, raw_done, (void (*)(void))cb, ud, NULL) != 0)
        return UV_ENOMEM;
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
    if (cb != NULL)
        sq__batch_on_done(b, raw_done, (void (*)(void))cb, ud, NULL); /* on the ref's seg */
    sq__conn_want_flush(c);
    return 0;
}

size_t sq__conn_queued_bytes(const sq__conn_t *c)
{
    size_t n = sq__conn_io(c)->queued(c);
    if (c->wq != NULL)
        n += c->wq->b[c->wq->fill].bytes;
    return n;
}

/* A write that bypasses the queue (sendfile) may go to the socket only when the bytes
 * go there unchanged (a libuv stream: not memory, not TLS) and nothing queued or in
 * flight would be overtaken. */
int sq__conn_direct_fd(const sq__conn_t *c, uv_os_fd_t *fd)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_CLOSE_AFTER))
        return UV_ECANCELED;
    if (sq__conn_io(c) != &sq__io_stream)
        return UV_ENOTSUP;
    if (sq__conn_queued_bytes(c) != 0 || (c->wq != NULL && c->wq->inflight))
        return UV_EBUSY;
    return uv_fileno(&c->h.handle, fd);
}
