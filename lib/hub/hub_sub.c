/* The hub on one loop: attaching, the inbox, and the subscribers — callbacks, WebSockets,
 * event streams (SSE) and polls — with their delivery, deadlines and heartbeats.
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

static void on_async(uv_async_t *h);
static void on_timer(uv_timer_t *t);
static void deliver(sq_hub_sub_t *sub, sq_hub_msg_t *m, sq_ws_frame_t **frame);

enum { SQ__SUBF_BUSY = 16 }; /* a delivery to it is running: not freed under it */

static uint64_t loop_bit(const sq__hub_loop_t *hl)
{
    return 1ull << hl->index;
}

static void msg_free_cb(void *ptr, void *data)
{
    sq__hub_msg_unref(data);
}

static void free_body(void *ptr, void *data)
{
    free(ptr);
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

static void sub_maybe_free(sq_hub_sub_t *sub)
{
    if (sub->state == SQ__SUB_DONE && sub->lr == NULL &&
        !(sub->flags & (SQ__SUBF_OP | SQ__SUBF_USER | SQ__SUBF_BUSY)))
        free(sub);
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
    sub->flags &= (uint8_t)~(SQ__SUBF_HELD | SQ__SUBF_SSE);
    sub->tprev = sub->tnext = NULL;
}

/* Ends a subscriber: it gets nothing more. Freed now or when the last holder lets go. */
static void sub_end(sq_hub_sub_t *sub)
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
    sub_maybe_free(sub);
}

/* Unlinks the subscribers that ended while a delivery walked the room (may drop it). */
static void lroom_sweep(sq__hub_lroom_t *lr)
{
    for (sq_hub_sub_t *sub = lr->head, *next; lr->ndead > 0 && sub != NULL; sub = next) {
        next = sub->next;
        if (sub->state != SQ__SUB_DONE)
            continue;
        lr->ndead--;
        bool last = lr->nsubs == 1;
        sub_unlink(sub); /* frees lr with the last one */
        sub_maybe_free(sub);
        if (last)
            return;
    }
}

static sq_hub_sub_t *sub_new(sq__hub_loop_t *hl, sq__sub_kind_t kind)
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
static int sub_start(sq_hub_sub_t *sub, const char *room, size_t len, uint64_t since)
{
    sq__hub_loop_t *hl = sub->hl;
    sq_hub_t *hub = hl->hub;
    if (hub->opts.max_history_reads > 0 &&
        atomic_load_explicit(&hub->reads_out, memory_order_relaxed) >=
            hub->opts.max_history_reads)
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
            sq_log(SQ_LOG_ERROR, "hub: out of memory: a subscriber misses message %" PRIu64,
                   m->id);
            return;
        }
        sub->pend = p;
        sub->pend_cap = cap;
    }
    sq__hub_msg_ref(m);
    sub->pend[sub->npend++] = m;
}

/* ---- polls ---- */

/* Answers a poll with msgs — the history's, then those kept meanwhile, each run in id
 * order: a message at or below the last one taken is skipped — and ends it. */
static void poll_answer(sq_hub_sub_t *sub, sq_hub_msg_t *const *msgs, size_t n)
{
    sq_res_t *res = sub->u.res;
    sq_hub_t *hub = sub->hl->hub;
    uint64_t from = sub->last_id, cur = from;
    size_t k = 0, bytes = 2, one = 0;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->id > cur) {
            bytes += msgs[i]->arr_len - 1; /* the object and a comma */
            cur = msgs[i]->id;
            one = i;
            k++;
        }
    }
    char num[24];
    if (sub->missed > 0) {
        snprintf(num, sizeof(num), "%" PRIu64, sub->missed);
        sq_res_header(res, "X-Hub-Missed", num);
    }
    if (sub->reset)
        sq_res_header(res, "X-Hub-Reset", "1");
    sq_req_set_data(sq_res_req(res), NULL);
    sub_end(sub); /* sub may be freed from here on */
    atomic_fetch_add(&hub->delivered, k);
    if (k == 1) {
        sq__hub_msg_ref(msgs[one]);
        sq_res_send_ref(res, 200, "application/json", msgs[one]->arr, msgs[one]->arr_len,
                        msg_free_cb, msgs[one]);
        return;
    }
    if (k == 0) {
        sq_res_send(res, 200, "application/json", "[]", 2);
        return;
    }
    char *body = malloc(bytes);
    if (body == NULL) {
        sq_res_send_error(res, 500, NULL);
        return;
    }
    char *p = body;
    *p++ = '[';
    cur = from;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->id <= cur)
            continue;
        if (p > body + 1)
            *p++ = ',';
        memcpy(p, msgs[i]->arr + 1, msgs[i]->arr_len - 2);
        p += msgs[i]->arr_len - 2;
        cur = msgs[i]->id;
    }
    *p++ = ']';
    sq_res_send_ref(res, 200, "application/json", body, (size_t)(p - body), free_body, NULL);
}

/* ---- timers: held polls' deadlines, event streams' heartbeats ---- */

static void timer_arm(sq__hub_loop_t *hl)
{
    if (hl->detached)
        return;
    uint64_t next = UINT64_MAX;
    if (hl->held_head != NULL)
        next = hl->held_head->deadline;
    if (hl->sse_head != NULL && hl->hub->opts.sse_heartbeat_ms > 0 && hl->next_beat < next)
        next = hl->next_beat;
    if (next == UINT64_MAX) {
        uv_timer_stop(&hl->timer);
        return;
    }
    uint64_t now = uv_now(hl->loop);
    uv_timer_start(&hl->timer, on_timer, next > now ? next - now : 0, 0);
}

static void held_insert(sq_hub_sub_t *sub)
{
    sq__hub_loop_t *hl = sub->hl;
    sq_hub_sub_t *after = hl->held_tail;
    while (after != NULL && after->deadline > sub->deadline)
        after = after->tprev;
    sub->tprev = after;
    sub->tnext = after != NULL ? after->tnext : hl->held_head;
    if (sub->tnext != NULL)
        sub->tnext->tprev = sub;
    else
        hl->held_tail = sub;
    if (after != NULL)
        after->tnext = sub;
    else
        hl->held_head = sub;
    sub->flags |= SQ__SUBF_HELD;
    atomic_fetch_add(&hl->hub->held_polls, 1);
    if (hl->held_head == sub)
        timer_arm(hl);
}

static void sse_cut(sq_hub_sub_t *sub)
{
    sq_res_t *res = sub->u.res;
    atomic_fetch_add(&sub->hl->hub->dropped_slow, 1);
    sq_req_set_data(sq_res_req(res), NULL);
    sub_end(sub);
    sq_res_end(res);
}

static void on_timer(uv_timer_t *t)
{
    sq__hub_loop_t *hl = t->data;
    uint64_t now = uv_now(hl->loop);
    while (hl->held_head != NULL && hl->held_head->deadline <= now)
        poll_answer(hl->held_head, NULL, 0);
    uint64_t beat = hl->hub->opts.sse_heartbeat_ms;
    if (hl->sse_head != NULL && beat > 0 && hl->next_beat <= now) {
        static const char ping[] = ": keep-alive\n\n";
        size_t max = hl->hub->opts.sse_max_queued_bytes;
        for (sq_hub_sub_t *sub = hl->sse_head, *next; sub != NULL; sub = next) {
            next = sub->tnext;
            if (max > 0 && sq_res_queued_bytes(sub->u.res) > max)
                sse_cut(sub);
            else
                sq_res_write_ref(sub->u.res, ping, sizeof(ping) - 1, NULL, NULL, NULL, NULL);
        }
        hl->next_beat = now + beat;
    }
    timer_arm(hl);
}

/* ---- delivery ---- */

static void sse_send(sq_hub_sub_t *sub, sq_hub_msg_t *m)
{
    size_t max = sub->hl->hub->opts.sse_max_queued_bytes;
    if (max > 0 && sq_res_queued_bytes(sub->u.res) > max) {
        sse_cut(sub);
        return;
    }
    sub->last_id = m->id;
    sq__hub_msg_ref(m);
    if (sq_res_write_ref(sub->u.res, m->sse, m->sse_len, msg_free_cb, m, NULL, NULL) == 0)
        atomic_fetch_add(&sub->hl->hub->delivered, 1);
    /* else the client has gone: .aborted (sq_hub_aborted) ends it */
}

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
static void deliver(sq_hub_sub_t *sub, sq_hub_msg_t *m, sq_ws_frame_t **frame)
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
        sse_send(sub, m);
        break;
    case SQ__SUB_POLL:
        poll_answer(sub, &m, 1);
        break;
    }
}

/* The history could not be read (Redis away): the subscriber ends, told as its kind is. */
static void sub_fail(sq_hub_sub_t *sub, int status)
{
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_CB: {
        sq_hub_message_cb cb = sub->u.cb.cb;
        void *data = sub->u.cb.data;
        sub->flags |= SQ__SUBF_BUSY;
        sub_end(sub);
        cb(sub, status, NULL, 0, data);
        sub->flags &= (uint8_t)~SQ__SUBF_BUSY;
        sub_maybe_free(sub);
        break;
    }
    case SQ__SUB_WS:
        sub_end(sub);
        sq_ws_close(sub->u.ws, SQ_WS_TRY_AGAIN, "history unavailable");
        break;
    case SQ__SUB_SSE: {
        sq_res_t *res = sub->u.res;
        sq_req_set_data(sq_res_req(res), NULL);
        sub_end(sub);
        sq_res_end(res);
        break;
    }
    case SQ__SUB_POLL: {
        sq_res_t *res = sub->u.res;
        sq_req_set_data(sq_res_req(res), NULL);
        sub_end(sub);
        sq_res_send_error(res, 503, sq_strerror(status));
        break;
    }
    }
}

static void history_arrived(sq__hub_op_t *op)
{
    sq_hub_sub_t *sub = op->sub;
    sub->flags &= (uint8_t)~SQ__SUBF_OP;
    sub->op = NULL;
    if (sub->state == SQ__SUB_DONE) {
        sub_maybe_free(sub);
        return;
    }
    if (sub->hl->closing)
        return; /* the detach under way ends it, as a subscriber still waiting */
    if (op->status < 0) {
        sub_fail(sub, op->status);
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
                sub_fail(sub, UV_ENOMEM);
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
            poll_answer(sub, all, n);
        else
            held_insert(sub);
        return;
    }
    /* the history, then what came meanwhile, then live */
    sub->state = SQ__SUB_LIVE;
    sub->flags |= SQ__SUBF_BUSY;
    for (size_t i = 0; i < op->n && sub->state == SQ__SUB_LIVE; i++)
        deliver(sub, op->msgs[i], NULL);
    for (uint32_t i = 0; i < sub->npend && sub->state == SQ__SUB_LIVE; i++)
        deliver(sub, sub->pend[i], NULL);
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
    sub_maybe_free(sub);
}

static void message_arrived(sq__hub_loop_t *hl, sq_hub_msg_t *m)
{
    sq__hub_lroom_t *lr = lroom_find(hl, m->room, m->room_len);
    if (lr == NULL || hl->closing) /* nothing more after sq_hub_detach */
        return;
    sq_ws_frame_t *frame = NULL;
    lr->walking++;
    for (sq_hub_sub_t *sub = lr->head; sub != NULL; sub = sub->next)
        deliver(sub, m, &frame);
    lr->walking--;
    sq_ws_frame_release(frame);
    if (lr->walking == 0 && lr->ndead > 0)
        lroom_sweep(lr);
}

sq__hub_ticket_t *sq__hub_ticket_new(sq__hub_loop_t *hl, sq_hub_publish_cb cb, void *data)
{
    sq__hub_ticket_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cb = cb;
    t->data = data;
    t->prev = NULL;
    t->next = hl->tickets;
    if (hl->tickets != NULL)
        hl->tickets->prev = t;
    hl->tickets = t;
    return t;
}

void sq__hub_ticket_drop(sq__hub_loop_t *hl, sq__hub_ticket_t *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        hl->tickets = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    free(t);
}

/* Tells a publish's caller (its ticket goes). */
static void tell_published(sq__hub_loop_t *hl, sq__hub_ticket_t *t, int status, uint64_t id)
{
    sq_hub_publish_cb cb = t->cb;
    void *data = t->data;
    sq__hub_ticket_drop(hl, t);
    cb(hl->hub, status, status == 0 ? id : 0, data);
}

static void detach_now(sq__hub_loop_t *hl);

/* The answers queued to this loop, in order. A detach asked for by a callback here
 * waits for the end of the round: the round's list and the room being walked are
 * still in use. */
static void on_async(uv_async_t *h)
{
    sq__hub_loop_t *hl = h->data;
    uv_mutex_lock(&hl->mu);
    sq__hub_op_t *op = hl->in_head;
    hl->in_head = hl->in_tail = NULL;
    uv_mutex_unlock(&hl->mu);
    bool nested = hl->in_async;
    hl->in_async = true;
    while (op != NULL) {
        sq__hub_op_t *next = op->next;
        switch (op->kind) {
        case SQ__HOP_PUBLISH:
            if (op->ticket != NULL)
                tell_published(hl, op->ticket, op->status, op->id);
            break;
        case SQ__HOP_HISTORY:
            history_arrived(op);
            break;
        case SQ__HOP_MESSAGE:
            message_arrived(hl, op->msg);
            break;
        }
        sq__hub_op_free(op);
        op = next;
    }
    hl->in_async = nested;
    if (!nested && hl->detach_due)
        detach_now(hl);
}

/* ---- attaching ---- */

sq__hub_loop_t *sq__hub_loop_find(sq_hub_t *hub, const uv_loop_t *loop)
{
    for (unsigned i = 0; i < SQ__HUB_MAX_LOOPS; i++) {
        sq__hub_loop_t *hl = atomic_load_explicit(&hub->loops[i], memory_order_acquire);
        if (hl != NULL && hl->loop == loop)
            return hl->closing ? NULL : hl; /* closing is written on loop's thread only */
    }
    return NULL;
}

int sq_hub_attach(sq_hub_t *hub, uv_loop_t *loop)
{
    if (hub == NULL || loop == NULL)
        return UV_EINVAL;
    uv_mutex_lock(&hub->mu);
    int rc = UV_ENOSPC;
    for (unsigned i = 0; i < SQ__HUB_MAX_LOOPS; i++) {
        sq__hub_loop_t *o = atomic_load(&hub->loops[i]);
        if (o != NULL && o->loop == loop)
            rc = UV_EEXIST;
    }
    unsigned slot = 0;
    for (; rc == UV_ENOSPC && slot < SQ__HUB_MAX_LOOPS; slot++)
        if (atomic_load(&hub->loops[slot]) == NULL)
            break;
    if (rc == UV_ENOSPC && slot < SQ__HUB_MAX_LOOPS)
        rc = 0;
    sq__hub_loop_t *hl = rc == 0 ? calloc(1, sizeof(*hl)) : NULL;
    if (rc == 0 && hl == NULL)
        rc = UV_ENOMEM;
    if (rc == 0 && (rc = uv_mutex_init(&hl->mu)) == 0) {
        if ((rc = uv_async_init(loop, &hl->async, on_async)) != 0)
            uv_mutex_destroy(&hl->mu);
    }
    if (rc != 0) {
        uv_mutex_unlock(&hub->mu);
        free(hl);
        return rc;
    }
    uv_timer_init(loop, &hl->timer);
    hl->async.data = hl->timer.data = hl;
    /* the hub never keeps a loop alive by itself: its subscribers' connections do */
    uv_unref((uv_handle_t *)&hl->async);
    uv_unref((uv_handle_t *)&hl->timer);
    hl->open_handles = 2;
    hl->hub = hub;
    hl->loop = loop;
    hl->index = slot;
    atomic_store_explicit(&hub->loops[slot], hl, memory_order_release);
    uv_mutex_unlock(&hub->mu);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    sq__hub_loop_t *hl = h->data;
    hl->open_handles--;
}

/* Ends a subscriber because its loop is let go. */
static void sub_close(sq_hub_sub_t *sub)
{
    if (sub->state == SQ__SUB_DONE)
        return;
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_CB:
        sub_fail(sub, SQ_ECLOSED);
        break;
    case SQ__SUB_WS:
        sub_end(sub);
        sq_ws_close(sub->u.ws, SQ_WS_GOING_AWAY, "going away");
        break;
    case SQ__SUB_SSE: {
        sq_res_t *res = sub->u.res;
        sq_req_set_data(sq_res_req(res), NULL);
        sub_end(sub);
        sq_res_end(res);
        break;
    }
    case SQ__SUB_POLL:
        if (sub->state == SQ__SUB_LIVE) {
            poll_answer(sub, NULL, 0);
        } else {
            sq_res_t *res = sub->u.res;
            sq_req_set_data(sq_res_req(res), NULL);
            sub_end(sub);
            sq_res_send(res, 200, "application/json", "[]", 2);
        }
        break;
    }
}

void sq_hub_detach(sq_hub_t *hub, uv_loop_t *loop)
{
    sq__hub_loop_t *hl = hub != NULL && loop != NULL ? sq__hub_loop_find(hub, loop) : NULL;
    if (hl == NULL)
        return;
    hl->closing = true; /* calls made from here on (callbacks told below) get SQ_ECLOSED */
    if (hl->in_async) {
        hl->detach_due = true; /* at the end of the delivery round (on_async) */
        return;
    }
    detach_now(hl);
}

static void detach_now(sq__hub_loop_t *hl)
{
    sq_hub_t *hub = hl->hub;
    hl->detach_due = false;
    /* what is queued is taken first: publishes are told, messages and histories dropped */
    on_async(&hl->async);
    hl->in_async = true; /* what the subscribers are told below may not detach again */
    /* every subscriber ends; one whose history op is still out stays, freed with the hub */
    while (hl->nlrooms > 0) {
        sq__hub_lroom_t *lr = NULL;
        for (size_t b = 0; lr == NULL && b < hl->lrooms_cap; b++)
            lr = hl->lrooms[b];
        lr->walking++;
        for (sq_hub_sub_t *sub = lr->head; sub != NULL; sub = sub->next) {
            bool op_out = sub->flags & SQ__SUBF_OP;
            sub_close(sub);
            if (op_out) {
                sub->tnext = hl->limbo;
                hl->limbo = sub;
            }
        }
        lr->walking--;
        lroom_sweep(lr); /* drops lr */
    }
    uv_mutex_lock(&hl->mu);
    hl->detached = true;
    sq__hub_op_t *op = hl->in_head;
    hl->in_head = hl->in_tail = NULL;
    uv_mutex_unlock(&hl->mu);
    while (op != NULL) { /* answered while the subscribers ended: their tickets are below */
        sq__hub_op_t *next = op->next;
        sq__hub_op_free(op);
        op = next;
    }
    /* publishes still out (on Redis): told now; their answers will be dropped */
    while (hl->tickets != NULL)
        tell_published(hl, hl->tickets, SQ_ECLOSED, 0);
    hl->in_async = false;
    uv_close((uv_handle_t *)&hl->async, on_handle_closed);
    uv_close((uv_handle_t *)&hl->timer, on_handle_closed);
    uv_mutex_lock(&hub->mu);
    atomic_store_explicit(&hub->loops[hl->index], NULL, memory_order_release);
    hl->next_detached = hub->detached;
    hub->detached = hl;
    uv_mutex_unlock(&hub->mu);
}

void sq__hub_loops_free(sq_hub_t *hub)
{
    for (unsigned i = 0; i < SQ__HUB_MAX_LOOPS; i++) {
        if (atomic_load(&hub->loops[i]) != NULL)
            sq_log(SQ_LOG_ERROR, "hub: destroyed while loop %u is still attached", i);
    }
    for (sq__hub_loop_t *hl = hub->detached, *next; hl != NULL; hl = next) {
        next = hl->next_detached;
        for (sq_hub_sub_t *sub = hl->limbo, *n; sub != NULL; sub = n) {
            n = sub->tnext;
            free(sub);
        }
        free(hl->lrooms);
        uv_mutex_destroy(&hl->mu);
        free(hl);
    }
    hub->detached = NULL;
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
    sq_hub_sub_t *sub = sub_new(hl, SQ__SUB_CB);
    if (sub == NULL)
        return UV_ENOMEM;
    sub->u.cb.cb = cb;
    sub->u.cb.data = data;
    if ((rc = sub_start(sub, room, len, since)) != 0) {
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
    sq_hub_sub_t *sub = sub_new(hl, SQ__SUB_WS);
    if (sub == NULL)
        return UV_ENOMEM;
    sub->u.ws = ws;
    sub->flags |= SQ__SUBF_USER;
    if ((rc = sub_start(sub, room, len, since)) != 0) {
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
        sub_end(sub);
    else
        sub_maybe_free(sub);
}

/* The answer to a request the hub could not take: 422 for a bad room, else 503/500. */
static int refuse(sq_res_t *res, int rc)
{
    if (rc == UV_EINVAL)
        sq_res_send_error(res, 422, "invalid room name");
    else if (rc == UV_ENOSPC)
        sq_res_send_error(res, 503, "too many rooms");
    else if (rc == UV_EAGAIN)
        sq_res_send_error(res, 503, "too many history reads out: try again");
    else
        sq_res_send_error(res, rc == UV_ENOMEM ? 500 : 503, sq_strerror(rc));
    return rc;
}

/* The common start of a poll and an event stream. */
static int serve_start(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                       uint64_t since, sq__sub_kind_t kind, sq_hub_sub_t **out)
{
    size_t len;
    int rc = hub == NULL ? UV_EINVAL : sq__hub_room_check(hub, room, &len);
    sq__hub_loop_t *hl = rc == 0 ? sq__hub_loop_find(hub, sq_req_loop(req)) : NULL;
    if (rc == 0 && hl == NULL)
        rc = SQ_ECLOSED;
    sq_hub_sub_t *sub = rc == 0 ? sub_new(hl, kind) : NULL;
    if (rc == 0 && sub == NULL)
        rc = UV_ENOMEM;
    if (rc == 0) {
        sub->u.res = res;
        if ((rc = sub_start(sub, room, len, since)) != 0)
            free(sub);
    }
    if (rc != 0)
        return refuse(res, rc);
    sq_req_set_data(req, sub);
    *out = sub;
    return 0;
}

int sq_hub_serve_poll(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                      uint64_t since, uint64_t wait_ms)
{
    if (hub != NULL && hub->opts.max_wait_ms > 0 && wait_ms > hub->opts.max_wait_ms)
        wait_ms = hub->opts.max_wait_ms;
    sq_hub_sub_t *sub;
    int rc = serve_start(hub, req, res, room, since == SQ_HUB_SINCE_NOW ? 0 : since,
                         SQ__SUB_POLL, &sub);
    if (rc == 0)
        sub->deadline = uv_now(sq_req_loop(req)) + wait_ms;
    return rc;
}

int sq_hub_serve_events(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                        uint64_t since)
{
    sq_hub_sub_t *sub;
    int rc = serve_start(hub, req, res, room, since, SQ__SUB_SSE, &sub);
    if (rc != 0)
        return rc;
    sq_res_header(res, "Cache-Control", "no-cache");
    sq_res_header(res, "X-Accel-Buffering", "no"); /* a proxy must not hold events back */
    rc = sq_res_start(res, 200, "text/event-stream");
    if (rc != 0) {
        sq_req_set_data(req, NULL);
        sub_end(sub);
        sq_res_end(res);
        return rc;
    }
    sq__hub_loop_t *hl = sub->hl;
    sub->tnext = hl->sse_head;
    if (hl->sse_head != NULL)
        hl->sse_head->tprev = sub;
    hl->sse_head = sub;
    sub->flags |= SQ__SUBF_SSE;
    if (sub->tnext == NULL && hub->opts.sse_heartbeat_ms > 0) {
        hl->next_beat = uv_now(hl->loop) + hub->opts.sse_heartbeat_ms;
        timer_arm(hl);
    }
    return 0;
}

void sq_hub_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_hub_sub_t *sub = sq_req_data(req);
    if (sub == NULL)
        return;
    sq_req_set_data(req, NULL);
    sub_end(sub);
    sq_res_end(res); /* the client has gone: UV_ECANCELED, and res is released */
}
