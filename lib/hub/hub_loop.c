/* The hub on one loop: its inbox (answers and live messages from any thread, delivered
 * by a uv_async_t), publishes waiting to be told, attaching and detaching. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "hub/hub_loop.h"

static void on_async(uv_async_t *h);

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
            sq__hub_history_arrived(op);
            break;
        case SQ__HOP_MESSAGE:
            sq__hub_message_arrived(hl, op->msg);
            break;
        case SQ__HOP_RESET:
            sq__hub_reset_arrived(hl, op->room, op->room_len, op->sub);
            break;
        }
        sq__hub_op_free(op);
        op = next;
    }
    hl->in_async = nested;
    if (!nested && hl->detach_due)
        detach_now(hl);
}

/* Queued after the messages read before it, ahead of those read after: each loop ends
 * the room's subscribers between the two. */
void sq__hub_room_reset(sq_hub_t *hub, const char *room, size_t len, const sq_hub_sub_t *spare)
{
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, room, len, 0, NULL);
    for (uint64_t bits = r != NULL ? r->loops : 0; bits != 0; bits &= bits - 1) {
        unsigned i = (unsigned)__builtin_ctzll(bits);
        sq__hub_loop_t *hl = atomic_load_explicit(&hub->loops[i], memory_order_acquire);
        if (hl == NULL)
            continue;
        sq__hub_op_t *op = sq__hub_op_new(SQ__HOP_RESET, hl);
        if (op != NULL && (op->room = malloc(len + 1)) != NULL) {
            memcpy(op->room, room, len);
            op->room[len] = '\0';
            op->room_len = len;
            op->sub = (sq_hub_sub_t *)spare; /* only compared */
            sq__hub_complete(op);
            continue;
        }
        sq__hub_op_free(op);
        sq_log(SQ_LOG_ERROR,
               "hub: out of memory: the subscribers of room %.*s on loop %u are "
               "not told it started again",
               (int)len, room, i);
    }
    uv_mutex_unlock(&hub->mu);
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
void sq__hub_sub_close(sq_hub_sub_t *sub)
{
    if (sub->state == SQ__SUB_DONE)
        return;
    switch ((sq__sub_kind_t)sub->kind) {
    case SQ__SUB_WS:
        sq__hub_sub_end(sub);
        sq_ws_close(sub->u.ws, SQ_WS_GOING_AWAY, "going away");
        break;
    case SQ__SUB_POLL:
        sq__hub_poll_answer(sub, NULL, 0); /* [] whether its history came or not */
        break;
    default: /* a callback is told SQ_ECLOSED, an event stream ends */
        sq__hub_sub_fail(sub, SQ_ECLOSED);
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
        for (sq_hub_sub_t *sub = lr->head; sub != NULL; sub = sub->next)
            sq__hub_sub_close(sub); /* one whose op is out goes to hl->limbo */
        lr->walking--;
        sq__hub_lroom_sweep(lr); /* drops lr */
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
