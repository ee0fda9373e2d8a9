/* The hub's subscribers on one loop: the loop's rooms, a subscriber's life (its history,
 * then live), delivery of every kind, and the callback and WebSocket subscribers. The
 * HTTP ones (polls, event streams) are in hub_serve.c, the loop itself in hub_loop.c.
 *
 * A subscriber lives on its loop's thread. It asks for its history once (an op to the
 * backend, answered through the inbox) and is registered in its room first, so a live
 * message can come before the history: it is kept (`pend`) and delivered after it;
 * anything at or below the last id delivered is dropped, so each message goes once and
 * in id order. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "hub/hub_loop.h"

static uint64_t loop_bit(const sq__hub_loop_t *hl)
{
    return 1ull << hl->index;
}

void sq__hub_msg_free_cb(void *ptr, void *data)
{
    sq__hub_msg_unref(data);
}

/* ---- the loop's rooms ---- */

static sq__hub_lroom_t *lroom_find(sq__hub_loop_t *hl, const char *name, size_t len)
{
    if (hl->lrooms_cap == 0)
        return NULL;
    uint64_t h = sq__hub_hash(name, len);
    for (sq__hub_lroom_t *lr = hl->lrooms[h & (hl->lrooms_cap - 1)]; lr != NULL; lr = lr->next)
        if (lr->hash == h && lr->name_len == len && memcmp(lr->name, name, len) == 0)
            return lr;
    return NULL;
}

static int lrooms_grow(sq__hub_loop_t *hl)
{
    size_t cap = hl->lrooms_cap ? hl->lrooms_cap * 2 : 16;
    sq__hub_lroom_t **t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return UV_ENOMEM;
    for (size_t b = 0; b < hl->lrooms_cap; b++) {
        for (sq__hub_lroom_t *lr = hl->lrooms[b], *next; lr != NULL; lr = next) {
            next = lr->next;
            lr->next = t[lr->hash & (cap - 1)];
            t[lr->hash & (cap - 1)] = lr;
        }
    }
    free(hl->lrooms);
    hl->lrooms = t;
    hl->lrooms_cap = cap;
    return 0;
}

/* The loop's part of a room, made (and the loop's interest registered with the hub, so
 * the room's messages are queued here from now on) when absent. */
static sq__hub_lroom_t *lroom_get(sq__hub_loop_t *hl, const char *name, size_t len, int *err)
{
    sq__hub_lroom_t *lr = lroom_find(hl, name, len);
    if (lr != NULL)
        return lr;
    if (hl->nlrooms >= hl->lrooms_cap && (*err = lrooms_grow(hl)) != 0)
        return NULL;
    lr = calloc(1, sizeof(*lr) + len + 1);
    if (lr == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    sq_hub_t *hub = hl->hub;
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, name, len, 1, err);
    if (r != NULL) {
        bool first = r->loops == 0;
        r->loops |= loop_bit(hl);
        if (first && hub->be->watch != NULL)
            hub->be->watch(hub, r, 1);
    }
    uv_mutex_unlock(&hub->mu);
    if (r == NULL) {
        free(lr);
        return NULL;
    }
    lr->hash = sq__hub_hash(name, len);
    lr->name_len = len;
    memcpy(lr->name, name, len);
    lr->next = hl->lrooms[lr->hash & (hl->lrooms_cap - 1)];
    hl->lrooms[lr->hash & (hl->lrooms_cap - 1)] = lr;
    hl->nlrooms++;
    return lr;
}

/* The room has no subscriber left on this loop: the loop stops receiving its messages. */
static void lroom_drop(sq__hub_loop_t *hl, sq__hub_lroom_t *lr)
{
    sq__hub_lroom_t **pp = &hl->lrooms[lr->hash & (hl->lrooms_cap - 1)];
    while (*pp != lr)
        pp = &(*pp)->next;
    *pp = lr->next;
    hl->nlrooms--;
    sq_hub_t *hub = hl->hub;
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, lr->name, lr->name_len, 0, NULL);
    if (r != NULL) {
        r->loops &= ~loop_bit(hl);
        r->last_active = uv_hrtime();
        if (r->loops == 0 && hub->be->watch != NULL)
            hub->be->watch(hub, r, 0);
        /* a room that holds nothing (only read, never written; with Redis, every room:
         * its messages are in Redis) goes now, not after room_idle_ms: readers of rooms
         * that do not exist must not fill max_rooms */
        if (r->loops == 0 && r->last_id == 0 && r->hist_n == 0)
            sq__hub_room_drop(hub, r);
    }
    uv_mutex_unlock(&hub->mu);
    free(lr);
}

/* ---- a subscriber's life ---- */

void sq__hub_sub_maybe_free(sq_hub_sub_t *sub)
{
    if (sub->state != SQ__SUB_DONE || sub->lr != NULL ||
        (sub->flags & (SQ__SUBF_USER | SQ__SUBF_BUSY)))
        return;
    if (!(sub->flags & SQ__SUBF_OP)) {
        free(sub);
        return;
    }
    /* its op may never come back (the loop detached first, or the hub stopped): kept
     * where sq_hub_destroy finds it */
    if (!(sub->flags & SQ__SUBF_LIMBO)) {
        sq__hub_loop_t *hl = sub->hl;
        sub->tprev = NULL;
        sub->tnext = hl->limbo;
        if (hl->limbo != NULL)
            hl->limbo->tprev = sub;
        hl->limbo = sub;
        sub->flags |= SQ__SUBF_LIMBO;
    }
}

static void limbo_remove(sq_hub_sub_t *sub)
{
    sq__hub_loop_t *hl = sub->hl;
    if (sub->tprev != NULL)
        sub->tprev->tnext = sub->tnext;
    else
        hl->limbo = sub->tnext;
    if (sub->tnext != NULL)
        sub->tnext->tprev = sub->tprev;
    sub->tprev = sub->tnext = NULL;
    sub->flags &= (uint8_t)~SQ__SUBF_LIMBO;
}

static void sub_unlink(sq_hub_sub_t *sub)
{
    sq__hub_lroom_t *lr = sub->lr;
    if (sub->prev != NULL)
        sub->prev->next = sub->next;
    else
        lr->head = sub->next;
    if (sub->next != NULL)
        sub->next->prev = sub->prev;
    else
        lr->tail = sub->prev;
    sub->lr = NULL;
    if (--lr->nsubs == 0)
        lroom_drop(sub->hl, lr);
}

static void held_remove(sq_hub_sub_t *sub)
{
    sq__hub_loop_t *hl = sub->hl;
    if (sub->flags & SQ__SUBF_HELD) {
        if (sub->tprev != NULL)
            sub->tprev->tnext = sub->tnext;
        else
            hl->held_head = sub->tnext;
        if (sub->tnext != NULL)
            sub->tnext->tprev = sub->tprev;
        else
            hl->held_tail = sub->tprev;
        atomic_fetch_sub(&hl->hub->held_polls, 1);
    } else if (sub->flags & SQ__SUBF_SSE) {
        if (sub->tprev != NULL)
            sub->tprev->tnext = sub->tnext;
        else
            hl->sse_head = sub->tnext;
        if (sub->tnext != NULL)
            sub->tnext->tprev = sub->tprev;
    }
    sub->flags &= (uint8_t) ~(SQ__SUBF_HELD | SQ__SUBF_SSE);
    sub->tprev = sub->tnext = NULL;
}

/* Ends a subscriber: it gets nothing more. Freed now or when the last holder lets go. */
void sq__hub_sub_end(sq_hub_sub_t *sub)
{
    if (sub->state == SQ__SUB_DONE)
        return;
    sub->state = SQ__SUB_DONE;
    atomic_fetch_sub(&sub->hl->hub->subscribers, 1);
    if (sub->flags & SQ__SUBF_OP) /* the op is alive until it comes back: a read is skipped */
        atomic_store_explicit(&sub->op->cancelled, 1, memory_order_relaxed);
    held_remove(sub);
    for (uint32_t i = 0; i < sub->npend; i++)
        sq__hub_msg_unref(sub->pend[i]);
    free(sub->pend);
    sub->pend = NULL;
    sub->npend = sub->pend_cap = 0;
    if (sub->lr != NULL) {
        if (sub->lr->walking > 0)
            sub->lr->ndead++; /* unlinked when the walk ends */
        else
            sub_unlink(sub);
    }
    sq__hub_sub_maybe_free(sub);
}

/* Unlinks the subscribers that ended while a delivery walked the room (may drop it). */
void sq__hub_lroom_sweep(sq__hub_lroom_t *lr)
{
    for (sq_hub_sub_t *sub = lr->head, *next; lr->ndead > 0 && sub != NULL; sub = next) {
        next = sub->next;
        if (sub->state != SQ__SUB_DONE)
            continue;
        lr->ndead--;
        bool last = lr->nsubs == 1;
        sub_unlink(sub); /* frees lr with the last one */
        sq__hub_sub_maybe_free(sub);
        if (last)
            return;
    }
}

sq_hub_sub_t *sq__hub_sub_new(sq__hub_loop_t *hl, sq__sub_kind_t kind)
{
    sq_hub_sub_t *sub = calloc(1, sizeof(*sub));
    if (sub != NULL) {
        sub->hl = hl;
        sub->kind = (uint8_t)kind;
        sub->state = SQ__SUB_HISTORY;
    }
    return sub;
}

/* Registers sub in `room` (interest first, then the history op). Returns 0, or an error
 * with sub untouched (the caller frees it). */
int sq__hub_sub_start(sq_hub_sub_t *sub, const char *room, size_t len, uint64_t since)
{
    sq__hub_loop_t *hl = sub->hl;
    sq_hub_t *hub = hl->hub;
    if (hub->opts.max_history_reads > 0 &&
        atomic_load_explicit(&hub->reads_out, memory_order_relaxed) >= hub->opts.max_history_reads)
        return UV_EAGAIN;
    sq__hub_op_t *op = sq__hub_op_new(SQ__HOP_HISTORY, hl);
    if (op == NULL || (op->room = malloc(len + 1)) == NULL) {
        sq__hub_op_free(op);
        return UV_ENOMEM;
    }
    memcpy(op->room, room, len);
    op->room[len] = '\0';
    op->room_len = len;
    op->since = since;
    op->sub = sub;
    int err = 0;
    sq__hub_lroom_t *lr = lroom_get(hl, room, len, &err);
    if (lr == NULL) {
        sq__hub_op_free(op);
        return err;
    }
    sub->lr = lr;
    sub->prev = lr->tail;
    if (lr->tail != NULL)
        lr->tail->next = sub;
    else
        lr->head = sub;
    lr->tail = sub;
    lr->nsubs++;
    sub->since = since;
    sub->last_id = since == SQ_HUB_SINCE_NOW ? 0 : since;
    sub->flags |= SQ__SUBF_OP;
    sub->op = op;
    atomic_fetch_add(&hub->subscribers, 1);
    hub->be->history(hub, op);
    return 0;
}

static void pend_push(sq_hub_sub_t *sub, sq_hub_msg_t *m)
{
    if (sub->npend == sub->pend_cap) {
        uint32_t cap = sub->pend_cap ? sub->pend_cap * 2 : 8;
        sq_hub_msg_t **p = realloc(sub->pend, cap * sizeof(*p));
        if (p == NULL) {
            sq_log(SQ_LOG_ERROR, "hub: out of memory: a subscriber misses message %" PRIu64, m->id);
            return;
        }
        sub->pend = p;
        sub->pend_cap = cap;
    }
    sq__hub_msg_ref(m);
    sub->pend[sub->npend++] = m;
}

/* ---- delivery ---- */

static void ws_send(sq_hub_sub_t *sub, sq_hub_msg_t *m, sq_ws_frame_t **frame)
{
    sub->last_id = m->id;
    int rc;
    if (frame != NULL) {
        if (*frame == NULL && sq_ws_frame_create(frame, 0, m->arr + 1, m->arr_len - 2) != 0) {
            *frame = NULL;
            sq_log(SQ_LOG_ERROR, "hub: out of memory framing message %" PRIu64, m->id);
            return;
        }
        rc = sq_ws_send_frame(sub->u.ws, *frame);
    } else {
        rc = sq_ws_send(sub->u.ws, 0, m->arr + 1, m->arr_len - 2);
    }
    if (rc == 0)
        atomic_fetch_add(&sub->hl->hub->delivered, 1);
    else if (rc == UV_ENOBUFS) /* the WebSocket's overflow policy was applied */
        atomic_fetch_add(&sub->hl->hub->dropped_slow, 1);
}

/* One message to one live subscriber (or kept, while its history is out). `frame`: the
 * WebSocket frame of m shared on this loop (made by the first WebSocket that needs it);
 * NULL to send a copy. */
void sq__hub_deliver(sq_hub_sub_t *sub, sq_hub_msg_t *m, sq_ws_frame_t **frame)
{
    if (sub->state == SQ__SUB_HISTORY) {
        pend_push(sub, m);
        return;
    }
    if (sub->state != SQ__SUB_LIVE || m->id <= sub->last_id)
        return;
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_CB: {
        uint64_t missed = sub->missed;
        sub->missed = 0;
        sub->last_id = m->id;
        atomic_fetch_add(&sub->hl->hub->delivered, 1);
        sub->u.cb.cb(sub, 0, m, missed, sub->u.cb.data);
        break;
    }
    case SQ__SUB_WS:
        ws_send(sub, m, frame);
        break;
    case SQ__SUB_SSE:
        sq__hub_sse_send(sub, m);
        break;
    case SQ__SUB_POLL:
        sq__hub_poll_answer(sub, &m, 1);
        break;
    }
}

/* The history could not be read (Redis away): the subscriber ends, told as its kind is. */
void sq__hub_sub_fail(sq_hub_sub_t *sub, int status)
{
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_CB: {
        sq_hub_message_cb cb = sub->u.cb.cb;
        void *data = sub->u.cb.data;
        sub->flags |= SQ__SUBF_BUSY;
        sq__hub_sub_end(sub);
        cb(sub, status, NULL, 0, data);
        sub->flags &= (uint8_t)~SQ__SUBF_BUSY;
        sq__hub_sub_maybe_free(sub);
        break;
    }
    case SQ__SUB_WS:
        sq__hub_sub_end(sub);
        sq_ws_close(sub->u.ws, SQ_WS_TRY_AGAIN, "history unavailable");
        break;
    case SQ__SUB_SSE: {
        sq_res_t *res = sub->u.res;
        sq_req_set_data(sq_res_req(res), NULL);
        sq__hub_sub_end(sub);
        sq_res_end(res);
        break;
    }
    case SQ__SUB_POLL: {
        sq_res_t *res = sub->u.res;
        sq_req_set_data(sq_res_req(res), NULL);
        sq__hub_sub_end(sub);
        sq_res_send_error(res, 503, sq_strerror(status));
        break;
    }
    }
}

void sq__hub_history_arrived(sq__hub_op_t *op)
{
    sq_hub_sub_t *sub = op->sub;
    sub->flags &= (uint8_t)~SQ__SUBF_OP;
    sub->op = NULL;
    if (sub->flags & SQ__SUBF_LIMBO)
        limbo_remove(sub);
    if (sub->state == SQ__SUB_DONE) {
        sq__hub_sub_maybe_free(sub);
        return;
    }
    if (sub->hl->closing)
        return; /* the detach under way ends it, as a subscriber still waiting */
    if (op->status < 0) {
        sq__hub_sub_fail(sub, op->status);
        return;
    }
    sq_hub_t *hub = sub->hl->hub;
    if (op->reset) {
        sub->reset = 1;
        sub->last_id = 0;
    } else if (sub->since == SQ_HUB_SINCE_NOW) {
        sub->last_id = op->last_id;
    }
    sub->missed = op->missed;
    if (op->missed > 0)
        atomic_fetch_add(&hub->missed, 1);
    if (sub->kind == SQ__SUB_POLL) {
        size_t n = op->n + sub->npend;
        sq_hub_msg_t **all = op->msgs;
        if (sub->npend > 0) {
            all = realloc(op->msgs, n * sizeof(*all));
            if (all == NULL) {
                sq__hub_sub_fail(sub, UV_ENOMEM);
                return;
            }
            memcpy(all + op->n, sub->pend, sub->npend * sizeof(*all));
            free(sub->pend); /* the references now belong to the op */
            sub->pend = NULL;
            sub->npend = sub->pend_cap = 0;
            op->msgs = all;
            op->n = n;
        }
        bool any = false;
        for (size_t i = 0; i < n && !any; i++)
            any = all[i]->id > sub->last_id;
        uint64_t now = uv_now(sub->hl->loop);
        sub->state = SQ__SUB_LIVE;
        if (any || sub->deadline <= now)
            sq__hub_poll_answer(sub, all, n);
        else
            sq__hub_held_insert(sub);
        return;
    }
    /* the history, then what came meanwhile, then live */
    sub->state = SQ__SUB_LIVE;
    sub->flags |= SQ__SUBF_BUSY;
    for (size_t i = 0; i < op->n && sub->state == SQ__SUB_LIVE; i++)
        sq__hub_deliver(sub, op->msgs[i], NULL);
    for (uint32_t i = 0; i < sub->npend && sub->state == SQ__SUB_LIVE; i++)
        sq__hub_deliver(sub, sub->pend[i], NULL);
    for (uint32_t i = 0; i < sub->npend; i++)
        sq__hub_msg_unref(sub->pend[i]);
    free(sub->pend);
    sub->pend = NULL;
    sub->npend = sub->pend_cap = 0;
    if (sub->kind == SQ__SUB_CB && sub->state == SQ__SUB_LIVE) {
        uint64_t missed = sub->missed;
        sub->missed = 0;
        sub->u.cb.cb(sub, 0, NULL, missed, sub->u.cb.data);
    }
    sub->flags &= (uint8_t)~SQ__SUBF_BUSY;
    sq__hub_sub_maybe_free(sub);
}

void sq__hub_message_arrived(sq__hub_loop_t *hl, sq_hub_msg_t *m)
{
    sq__hub_lroom_t *lr = lroom_find(hl, m->room, m->room_len);
    if (lr == NULL || hl->closing) /* nothing more after sq_hub_detach */
        return;
    sq_ws_frame_t *frame = NULL;
    lr->walking++;
    for (sq_hub_sub_t *sub = lr->head; sub != NULL; sub = sub->next)
        sq__hub_deliver(sub, m, &frame);
    lr->walking--;
    sq_ws_frame_release(frame);
    if (lr->walking == 0 && lr->ndead > 0)
        sq__hub_lroom_sweep(lr);
}

/* The room started again: a subscriber ends so that its client starts again from the
 * room's first id. Its last id (and Last-Event-ID, `since`) means nothing any more. */
static void sub_reset(sq_hub_sub_t *sub)
{
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_CB:
        sq__hub_sub_fail(sub, SQ_ERESET);
        break;
    case SQ__SUB_WS:
        sq__hub_sub_end(sub);
        /* RFC 6455 §7.4.1 registry: 1012, service restart */
        sq_ws_close(sub->u.ws, SQ_WS_SERVICE_RESTART, "room restarted");
        break;
    case SQ__SUB_SSE: {
        /* An `id` field with no value empties the stream's last event ID (WHATWG HTML
         * §9.2.6), with no event: the EventSource reconnects without Last-Event-ID and
         * reads the new history from the start. */
        static const char forget[] = "id\n\n";
        sq_res_t *res = sub->u.res;
        sq_res_write_ref(res, forget, sizeof(forget) - 1, NULL, NULL, NULL, NULL);
        sq_req_set_data(sq_res_req(res), NULL);
        sq__hub_sub_end(sub);
        sq_res_end(res);
        break;
    }
    case SQ__SUB_POLL: /* held or still reading: [] with X-Hub-Reset: 1 */
        sub->reset = 1;
        sub->missed = 0;
        sq__hub_poll_answer(sub, NULL, 0);
        break;
    }
}

void sq__hub_reset_arrived(sq__hub_loop_t *hl, const char *room, size_t len,
                           const sq_hub_sub_t *spare)
{
    sq__hub_lroom_t *lr = lroom_find(hl, room, len);
    if (lr == NULL || hl->closing)
        return;
    /* the subscribers there now: one a callback adds (the client starting again) stays */
    sq_hub_sub_t *last = lr->tail;
    lr->walking++;
    for (sq_hub_sub_t *sub = lr->head; sub != NULL; sub = sub->next) {
        if (sub == spare && sub->state == SQ__SUB_HISTORY) {
            /* its history is the new start's; what came live before it is the old one's
             * (or is read again: the live read starts again at that history's end) */
            for (uint32_t i = 0; i < sub->npend; i++)
                sq__hub_msg_unref(sub->pend[i]);
            sub->npend = 0;
        } else if (sub->state != SQ__SUB_DONE) {
            sub_reset(sub);
        }
        if (sub == last)
            break;
    }
    lr->walking--;
    if (lr->walking == 0 && lr->ndead > 0)
        sq__hub_lroom_sweep(lr);
}

/* ---- the public subscriber calls ---- */

int sq_hub_subscribe(sq_hub_t *hub, uv_loop_t *loop, const char *room, uint64_t since,
                     sq_hub_message_cb cb, void *data, sq_hub_sub_t **out)
{
    size_t len;
    if (hub == NULL || loop == NULL || cb == NULL)
        return UV_EINVAL;
    int rc = sq__hub_room_check(hub, room, &len);
    if (rc != 0)
        return rc;
    sq__hub_loop_t *hl = sq__hub_loop_find(hub, loop);
    if (hl == NULL)
        return SQ_ECLOSED;
    sq_hub_sub_t *sub = sq__hub_sub_new(hl, SQ__SUB_CB);
    if (sub == NULL)
        return UV_ENOMEM;
    sub->u.cb.cb = cb;
    sub->u.cb.data = data;
    if ((rc = sq__hub_sub_start(sub, room, len, since)) != 0) {
        free(sub);
        return rc;
    }
    if (out != NULL)
        *out = sub;
    return 0;
}

int sq_hub_subscribe_ws(sq_hub_t *hub, sq_ws_t *ws, const char *room, uint64_t since,
                        sq_hub_sub_t **out)
{
    size_t len;
    if (hub == NULL || ws == NULL || out == NULL)
        return UV_EINVAL;
    int rc = sq__hub_room_check(hub, room, &len);
    if (rc != 0)
        return rc;
    sq__hub_loop_t *hl = sq__hub_loop_find(hub, sq_ws_loop(ws));
    if (hl == NULL)
        return SQ_ECLOSED;
    sq_hub_sub_t *sub = sq__hub_sub_new(hl, SQ__SUB_WS);
    if (sub == NULL)
        return UV_ENOMEM;
    sub->u.ws = ws;
    sub->flags |= SQ__SUBF_USER;
    if ((rc = sq__hub_sub_start(sub, room, len, since)) != 0) {
        free(sub);
        return rc;
    }
    *out = sub;
    return 0;
}

void sq_hub_unsubscribe(sq_hub_sub_t *sub)
{
    if (sub == NULL)
        return;
    sub->flags &= (uint8_t)~SQ__SUBF_USER;
    if (sub->state != SQ__SUB_DONE)
        sq__hub_sub_end(sub);
    else
        sq__hub_sub_maybe_free(sub);
}
