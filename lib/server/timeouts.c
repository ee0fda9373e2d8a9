/* Time on a server: the timeout lists (one FIFO per kind — head, body, idle, lingering
 * close — under one uv_timer_t, since every connection in a list got the same timeout),
 * the grace deadline of a shutdown, and the tick that runs work deferred out of user
 * calls before the loop polls again. */
#include "server/server_int.h"

static void on_timer(uv_timer_t *t);
static void on_tick_idle(uv_idle_t *h);

void sq__timer_arm(sq_server_t *srv, uint64_t due)
{
    if (srv->timer_due != 0 && srv->timer_due <= due)
        return;
    uint64_t now = uv_now(srv->loop);
    srv->timer_due = due;
    uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
}

void sq__tq_drop(sq__conn_t *c)
{
    sq__list_remove(&c->tnode);
    c->tq = SQ__TQ_NONE;
}

/* Puts the connection at the tail of queue `which` with a fresh deadline. Since every
 * connection in a queue got the same timeout, the tail always has the latest deadline. */
void sq__tq_put(sq__conn_t *c, int which)
{
    sq_server_t *srv = sq__conn_srv(c);
    uint64_t to = srv->tq_timeout[which];
    if (to == 0) {
        sq__tq_drop(c);
        return;
    }
    uint64_t now = sq__loop_now(srv->loop);
    c->deadline = to > UINT64_MAX - now ? UINT64_MAX : now + to;
    if (c->tq != which || c->tnode.next != &srv->tq[which]) {
        /* not already its tail (where a fresh deadline stays in order): to the tail */
        sq__list_remove(&c->tnode);
        sq__list_insert_tail(&srv->tq[which], &c->tnode);
        c->tq = (uint8_t)which;
    }
    if (srv->timer_due == 0 || c->deadline < srv->timer_due)
        sq__timer_arm(srv, c->deadline);
}

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
            sq__tq_drop(c);
            if (q == SQ__TQ_IDLE && c->wq != NULL && c->wq->inflight &&
                sq__conn_io(c)->queued(c) < c->wq->mark) {
                /* No request, but an answer is still being written: the client took some
                 * of it since the last look, so it is not idle. One that takes nothing
                 * for a whole idle period is closed (tests: backpressure/slow_reader_*,
                 * backpressure/reader_that_stalls_*). */
                c->wq->mark = sq__conn_io(c)->queued(c);
                sq__tq_put(c, SQ__TQ_IDLE);
            } else if (q == SQ__TQ_TLS) { /* a handshake past its deadline */
                srv->stats.tls_timeouts++;
                sq_log(SQ_LOG_DEBUG, "tls: handshake timed out");
                sq__conn_teardown(c);
            } else if (q != SQ__TQ_LINGER && c->proto != NULL && c->proto->on_timeout) {
                c->proto->on_timeout(c, c->proto_ud, q); /* HTTP/1: 408 for a slow head */
            } else {
                sq__conn_teardown(c);
            }
        }
    }
    if (srv->closing && srv->grace_due != 0 && srv->grace_due <= now) {
        srv->grace_due = 0;
        sq__conns_each(srv, sq__conn_teardown);
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

/* A connection's turn at the tick: bytes read before a take-over go to the protocol that
 * took it, then the protocol's own deferred work, then what they wrote leaves. */
static void conn_tick(sq__conn_t *c)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    if ((c->flags & SQ__CF_REDELIVER) && sq__pend_len(c) > 0) {
        size_t n = c->pending->len;
        c->flags &= ~SQ__CF_REDELIVER;
        c->pending->len = 0;
        c->flags |= SQ__CF_IN_READ;
        c->proto->on_read(c, c->proto_ud, c->pending->base, (ssize_t)n);
        c->flags &= ~SQ__CF_IN_READ;
        if (!(c->flags & SQ__CF_CLOSED) && sq__pend_len(c) == 0)
            sq__pend_free(c);
    }
    if (!(c->flags & SQ__CF_CLOSED) && c->proto != NULL && c->proto->on_tick != NULL)
        c->proto->on_tick(c, c->proto_ud);
    sq__conn_flush(c);
}

/* One round of deferred work. Connections queued during the round wait for the next, so
 * one that queues itself again (a write callback that writes the next chunk) lets the
 * loop poll in between. */
static void tick_run(sq_server_t *srv)
{
    srv->tick_round = srv->ticks;
    srv->ticks = NULL;
    srv->ticks_tail = &srv->ticks;
    sq__conn_t *c;
    while ((c = srv->tick_round) != NULL) {
        srv->tick_round = c->knext;
        c->knext = NULL;
        c->flags &= ~SQ__CF_TICK;
        conn_tick(c); /* a connection closed meanwhile stays queued, and is skipped */
    }
    /* the server's own work last, so what the connections queued (.aborted notices of
     * the ones that closed) goes in this round */
    bool more = srv->on_tick != NULL && srv->on_tick(srv);
    if (srv->shutdown_due) { /* sq_server_destroy began: the owner's hook, from the loop */
        srv->shutdown_due = false;
        srv->opts.on_shutdown(srv, srv->opts.on_shutdown_data);
        srv->holds--;
        sq__server_maybe_done(srv);
        if (uv_is_closing((uv_handle_t *)&srv->tick_prepare))
            return; /* the server is closing its handles: nothing is left to tick */
        more = true; /* what the hook finished is told in the next round */
    }
    if (srv->ticks != NULL || more) {
        uv_idle_start(&srv->tick_idle, on_tick_idle); /* the poll must not block on it */
        return;
    }
    uv_prepare_stop(&srv->tick_prepare);
    uv_check_stop(&srv->tick_check);
    uv_idle_stop(&srv->tick_idle);
}

/* Work queued by timers and the like runs before the poll; work queued by I/O callbacks
 * runs right after it, in the same turn. Neither makes the poll return at once, as an
 * idle handle would: that is only for work left over from a round. */
static void on_tick_prepare(uv_prepare_t *h)
{
    tick_run(sq__container_of(h, sq_server_t, tick_prepare));
}

static void on_tick_check(uv_check_t *h)
{
    tick_run(sq__container_of(h, sq_server_t, tick_check));
}

static void on_tick_idle(uv_idle_t *h)
{
    /* nothing: being active makes the poll return at once; prepare and check do the work */
}

void sq__tick_init(sq_server_t *srv)
{
    uv_prepare_init(srv->loop, &srv->tick_prepare);
    uv_check_init(srv->loop, &srv->tick_check);
    uv_idle_init(srv->loop, &srv->tick_idle);
    srv->tick_prepare.data = srv->tick_check.data = srv->tick_idle.data = srv;
}

void sq__tick_close(sq_server_t *srv, uv_close_cb close_cb)
{
    uv_close((uv_handle_t *)&srv->tick_prepare, close_cb);
    uv_close((uv_handle_t *)&srv->tick_check, close_cb);
    uv_close((uv_handle_t *)&srv->tick_idle, close_cb);
}

/* Starts the tick (it stops itself when a round leaves nothing queued). */
void sq__tick_wake(sq_server_t *srv)
{
    uv_prepare_start(&srv->tick_prepare, on_tick_prepare);
    uv_check_start(&srv->tick_check, on_tick_check);
    /* Work queued after this turn's prepare phase began (another prepare callback, one
     * that ran before ours) would otherwise wait for a poll that blocks: the idle handle
     * makes that poll return at once. It costs nothing otherwise: the prepare or check
     * round that does the work stops it before any poll sees it (test:
     * memconn/an_answer_from_a_prepare_callback_is_sent_at_once). */
    uv_idle_start(&srv->tick_idle, on_tick_idle);
}

void sq__tick_add(sq__conn_t *c)
{
    if (c->flags & (SQ__CF_TICK | SQ__CF_CLOSED))
        return;
    sq_server_t *srv = sq__conn_srv(c);
    sq__tick_wake(srv);
    c->knext = NULL;
    *srv->ticks_tail = c;
    srv->ticks_tail = &c->knext;
    c->flags |= SQ__CF_TICK;
}

/* c is being freed: out of the queue or the round it is still in (a connection closed
 * while queued; rare, so a walk costs little). */
void sq__tick_forget(sq__conn_t *c)
{
    if (!(c->flags & SQ__CF_TICK))
        return;
    sq_server_t *srv = sq__conn_srv(c);
    for (sq__conn_t **pp = &srv->tick_round; *pp != NULL; pp = &(*pp)->knext)
        if (*pp == c) {
            *pp = c->knext;
            return;
        }
    for (sq__conn_t **pp = &srv->ticks; *pp != NULL; pp = &(*pp)->knext)
        if (*pp == c) {
            *pp = c->knext;
            if (srv->ticks_tail == &c->knext)
                srv->ticks_tail = pp;
            return;
        }
}

void sq__conn_want_flush(sq__conn_t *c)
{
    if (!(c->flags & SQ__CF_IN_READ))
        sq__tick_add(c);
}
