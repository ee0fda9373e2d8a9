/* Exchanges (a request and its response, one allocation): pooled per server, reference
 * counted by their holders (the connection, the handler, queued write callbacks, an
 * .aborted notice), finished once, and aborted when the client goes — the handler is told
 * on the next tick, never from inside an API call. */
#include <stdlib.h>

#include "http/h1_int.h"
#include "server/server_int.h"
#include "squall/work.h"

sq__exch_t *sq__exch_get(sq_server_t *srv, const sq__exch_ops_t *ops, sq__conn_t *c)
{
    sq__exch_t *x = sq__hs(srv)->exch_free;
    if (x != NULL) {
        sq__hs(srv)->exch_free = x->next_free;
        sq__hs(srv)->exch_free_n--;
    } else {
        x = calloc(1, sizeof(*x));
        if (x == NULL)
            return NULL;
        x->srv = srv;
        x->res.req = x;
        sq__arena_init(&x->arena, x->arena_inline, sizeof(x->arena_inline));
    }
    srv->holds++;
    x->ops = ops;
    x->conn = c;
    x->flags = SQ__XF_HOLD_CONN;
    x->refs = 1;
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
    srv->holds--;
    if (!x->reset_done)
        sq__exch_reset(x);
    x->reset_done = 0;
    if (sq__hs(srv)->exch_free_n < SQ__POOL_MAX && !srv->closing) {
        x->next_free = sq__hs(srv)->exch_free;
        sq__hs(srv)->exch_free = x;
        sq__hs(srv)->exch_free_n++;
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
    x->flags |= SQ__XF_FINISHED;
    if (x->conn != NULL)
        x->ops->finished(x);
    sq__exch_release(x, SQ__XF_HOLD_HANDLER);
}

/* The owner lets go of x; a handler still owning it is told, on the next tick. Never
 * from here: this runs inside API calls (a finishing call whose write fails closes the
 * connection), and a handler told inside its own sq_res_send could finish the response
 * there and free the exchange under the call (test:
 * regress_http/aborted_never_runs_inside_a_finishing_call). */
void sq__exch_abort(sq__exch_t *x)
{
    sq_server_t *srv = x->srv;
    x->conn = NULL;
    bool owned = (x->flags & SQ__XF_HOLD_HANDLER) && !(x->flags & SQ__XF_FINISHED);
    if (owned) {
        x->flags |= SQ__XF_ABORTED;
        srv->stats.aborted++;
        sq__exch_hold(x); /* the notice's reference, dropped once it is delivered */
        sq__tick_wake(srv);
        sq__list_insert_tail(&sq__hs(srv)->aborts, &x->anode);
        if (x->work != NULL)
            sq_work_cancel(x->work); /* its done callback finishes the response */
    }
    sq__exch_release(x, SQ__XF_HOLD_CONN);
}

/* Tells each handler whose client went since the last tick, unless it finished first.
 * The server's tick hook: true when more were queued meanwhile. */
bool sq__exch_deliver_aborts(sq_server_t *srv)
{
    sq__list_t round;
    sq__list_take(&sq__hs(srv)->aborts, &round);
    while (!sq__list_empty(&round)) {
        sq__exch_t *x = sq__container_of(round.next, sq__exch_t, anode);
        sq__list_remove(&x->anode);
        const sq_handler_t *h = x->match.handler;
        sq__h1_body_aborted(x); /* a body's reader first: its stream ended */
        if ((x->flags & SQ__XF_HOOK_NEXT) && !(x->flags & SQ__XF_FINISHED)) {
            /* sq_req_next was called, and the client went before the tick took it on:
             * the handler never ran, so nobody else will release the response */
            x->flags &= ~SQ__XF_HOOK_NEXT;
            sq_res_send(&x->res, 500, NULL, NULL, 0);
        } else if (h != NULL && h->aborted != NULL &&
                   !(x->flags & (SQ__XF_FINISHED | SQ__XF_HOOK_WAIT))) {
            /* a hook that waits learns it from sq_req_next: the handler never ran */
            h->aborted(x, &x->res, x->match.data);
        }
        sq__exch_unhold(x);
    }
    return !sq__list_empty(&sq__hs(srv)->aborts); /* told while telling: the next round */
}

/* Frees the exchanges pooled for reuse (the server is going). */
void sq__exch_pool_free(sq_server_t *srv)
{
    while (sq__hs(srv)->exch_free != NULL) {
        sq__exch_t *x = sq__hs(srv)->exch_free;
        sq__hs(srv)->exch_free = x->next_free;
        exch_free(x);
    }
    sq__hs(srv)->exch_free_n = 0;
}
