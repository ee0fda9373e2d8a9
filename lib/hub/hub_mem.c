/* The hub in memory: ids and the history of each room, under the hub's lock. Publishing
 * numbers, encodes, stores and queues the message to the loops that watch its room in one
 * locked step, so every loop sees a room's messages in id order. */
#include <stdlib.h>
#include <string.h>

#include "hub/hub_int.h"

/* Keeps m (takes the caller's reference) as the room's newest, letting the oldest go
 * past history_count or history_bytes; the newest is kept whatever its size. */
static void hist_push(sq_hub_t *hub, sq__hub_room_t *r, sq_hub_msg_t *m)
{
    size_t count = hub->opts.history_count, bytes = hub->opts.history_bytes;
    if (count == 0) {
        sq__hub_msg_unref(m);
        return;
    }
    while (r->hist_n > 0 &&
           (r->hist_n >= count || (bytes > 0 && r->hist_bytes + m->bytes > bytes))) {
        sq_hub_msg_t *old = r->hist[r->hist_head];
        r->hist_head = (r->hist_head + 1) % r->hist_cap;
        r->hist_n--;
        r->hist_bytes -= old->bytes;
        sq__hub_msg_unref(old);
    }
    if (r->hist_n == r->hist_cap) {
        size_t cap = r->hist_cap ? r->hist_cap * 2 : 16;
        if (cap > count)
            cap = count;
        sq_hub_msg_t **h = malloc(cap * sizeof(*h));
        if (h == NULL) { /* kept no more: the oldest goes */
            sq_hub_msg_t *old = r->hist[r->hist_head];
            r->hist_head = (r->hist_head + 1) % r->hist_cap;
            r->hist_n--;
            r->hist_bytes -= old->bytes;
            sq__hub_msg_unref(old);
        } else {
            for (size_t i = 0; i < r->hist_n; i++)
                h[i] = r->hist[(r->hist_head + i) % r->hist_cap];
            free(r->hist);
            r->hist = h;
            r->hist_cap = cap;
            r->hist_head = 0;
        }
    }
    r->hist[(r->hist_head + r->hist_n) % r->hist_cap] = m;
    r->hist_n++;
    r->hist_bytes += m->bytes;
}

static int mem_publish(sq_hub_t *hub, sq__hub_op_t *op)
{
    int err = 0;
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, op->room, op->room_len, 1, &err);
    sq_hub_msg_t *m = r == NULL ? NULL
                                : sq__hub_msg_new(op->room, op->room_len, r->last_id + 1, op->text,
                                                  op->text_len, &err);
    if (m == NULL) {
        uv_mutex_unlock(&hub->mu);
        return err;
    }
    r->last_id = op->id = m->id;
    r->last_active = uv_hrtime();
    sq__hub_fanout_locked(hub, r, m);
    hist_push(hub, r, m); /* takes our reference: m may be gone once the lock is let go */
    uv_mutex_unlock(&hub->mu);
    atomic_fetch_add(&hub->published, 1);
    op->status = 0;
    sq__hub_complete(op);
    return 0;
}

static void mem_history(sq_hub_t *hub, sq__hub_op_t *op)
{
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, op->room, op->room_len, 0, NULL);
    uint64_t last = r != NULL ? r->last_id : 0, since = op->since;
    op->last_id = last;
    op->status = 0;
    if (since != SQ_HUB_SINCE_NOW && r != NULL) {
        if (since > last) {
            op->reset = since > 0;
            since = 0;
        }
        uint64_t first = r->hist_n > 0 ? r->hist[r->hist_head]->id : last + 1;
        if (since > 0 && first > since + 1)
            op->missed = first - since - 1;
        size_t skip = since >= first ? (size_t)(since - first + 1) : 0;
        size_t n = r->hist_n > skip ? r->hist_n - skip : 0;
        if (n > 0) {
            op->msgs = malloc(n * sizeof(*op->msgs));
            if (op->msgs == NULL) {
                op->status = UV_ENOMEM;
                n = 0;
            }
        }
        for (size_t i = 0; i < n; i++) {
            sq_hub_msg_t *m = r->hist[(r->hist_head + skip + i) % r->hist_cap];
            sq__hub_msg_ref(m);
            op->msgs[i] = m;
        }
        op->n = n;
    }
    uv_mutex_unlock(&hub->mu);
    sq__hub_complete(op);
}

const sq__hub_backend_t sq__hub_mem_backend = {
    .publish = mem_publish,
    .history = mem_history,
};
