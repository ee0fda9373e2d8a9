/* One timer per loop for the deadlines of all its WebSockets: a min-heap of WebSockets
 * ordered by the loop time each is due at, and one uv_timer_t armed for the earliest.
 * A WebSocket pays a pointer and a heap slot (8 + 4 + 8 bytes) instead of a uv_timer_t
 * of its own (152 bytes).
 *
 * The clocks of all loops are in one list, looked up under a lock when a WebSocket is
 * created (server workers create theirs on loops of their own threads); a clock is used
 * only on its loop's thread. It lives while WebSockets of its loop do: the last one to go
 * closes its timer, so that the loop can be closed (uv_loop_close). */
#include <pthread.h>
#include <stdlib.h>

#include "ws/ws_int.h"

struct sq__ws_clock {
    uv_timer_t timer;
    uv_loop_t *loop;
    sq_ws_t **heap;          /* heap[0] is due first */
    uint32_t n, cap;
    size_t users;            /* WebSockets of this loop not yet freed */
    uint64_t armed;          /* the loop time the timer fires at; 0: stopped */
    struct sq__ws_clock *next;
};

static pthread_mutex_t clocks_lock = PTHREAD_MUTEX_INITIALIZER;
static sq__ws_clock_t *clocks; /* the clocks whose timer is not closing */

/* ---- the heap (by ws->due; ws->slot is each one's index) ---- */

static void heap_set(sq__ws_clock_t *k, uint32_t i, sq_ws_t *ws)
{
    k->heap[i] = ws;
    ws->slot = i;
}

static void heap_up(sq__ws_clock_t *k, uint32_t i)
{
    sq_ws_t *ws = k->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (k->heap[parent]->due <= ws->due)
            break;
        heap_set(k, i, k->heap[parent]);
        i = parent;
    }
    heap_set(k, i, ws);
}

static void heap_down(sq__ws_clock_t *k, uint32_t i)
{
    sq_ws_t *ws = k->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= k->n)
            break;
        if (c + 1 < k->n && k->heap[c + 1]->due < k->heap[c]->due)
            c++;
        if (ws->due <= k->heap[c]->due)
            break;
        heap_set(k, i, k->heap[c]);
        i = c;
    }
    heap_set(k, i, ws);
}

static void heap_remove(sq__ws_clock_t *k, sq_ws_t *ws)
{
    uint32_t i = ws->slot;
    sq_ws_t *last = k->heap[--k->n];
    ws->slot = UINT32_MAX;
    if (i == k->n)
        return;
    heap_set(k, i, last);
    heap_up(k, i);
    heap_down(k, last->slot);
}

/* ---- the timer ---- */

static void on_clock(uv_timer_t *t);
static void clock_close(sq__ws_clock_t *k);

/* Arms the timer for the earliest deadline, or stops it. */
static void clock_rearm(sq__ws_clock_t *k)
{
    if (k->n == 0) {
        if (k->armed != 0)
            uv_timer_stop(&k->timer);
        k->armed = 0;
        return;
    }
    uint64_t due = k->heap[0]->due;
    if (k->armed == due)
        return;
    uint64_t now = uv_now(k->loop);
    k->armed = due;
    uv_timer_start(&k->timer, on_clock, due > now ? due - now : 0, 0);
}

static void on_clock(uv_timer_t *t)
{
    sq__ws_clock_t *k = t->data;
    uint64_t now = uv_now(k->loop);
    k->armed = 0;
    k->users++; /* the last WebSocket to go does not close the clock under this loop */
    while (k->n > 0 && k->heap[0]->due <= now) {
        sq_ws_t *ws = k->heap[0];
        heap_remove(k, ws);
        ws->due = 0;
        sq__ws_on_deadline(ws); /* may arm ws again (later than now), or free it */
    }
    if (--k->users == 0)
        clock_close(k);
    else
        clock_rearm(k);
}

/* ---- WebSockets ---- */

void sq__ws_clock_arm(sq_ws_t *ws, uint64_t due)
{
    sq__ws_clock_t *k = ws->clock;
    uint64_t now = uv_now(k->loop);
    /* a deadline that passed fires at the next turn of the loop, never inside the run
     * of deadlines that armed it */
    if (due <= now)
        due = now + 1;
    if (ws->slot != UINT32_MAX) {
        ws->due = due;
        heap_up(k, ws->slot);
        heap_down(k, ws->slot);
    } else {
        if (k->n == k->cap) {
            uint32_t cap = k->cap ? k->cap * 2 : 16;
            sq_ws_t **h = realloc(k->heap, cap * sizeof(*h));
            if (h == NULL) {
                /* without a slot the deadline is checked at the next one due, or at the
                 * next event of ws; nothing is lost but promptness */
                sq_log(SQ_LOG_WARN, "websocket: out of memory for a deadline");
                return;
            }
            k->heap = h;
            k->cap = cap;
        }
        ws->due = due;
        heap_set(k, k->n++, ws);
        heap_up(k, ws->slot);
    }
    clock_rearm(k);
}

void sq__ws_clock_disarm(sq_ws_t *ws)
{
    sq__ws_clock_t *k = ws->clock;
    if (ws->slot != UINT32_MAX) {
        heap_remove(k, ws);
        clock_rearm(k);
    }
    ws->due = 0;
}

int sq__ws_clock_get(sq_ws_t *ws, uv_loop_t *loop)
{
    ws->slot = UINT32_MAX;
    pthread_mutex_lock(&clocks_lock);
    sq__ws_clock_t *k = clocks;
    while (k != NULL && k->loop != loop)
        k = k->next;
    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL) {
            pthread_mutex_unlock(&clocks_lock);
            return UV_ENOMEM;
        }
        k->loop = loop;
        uv_timer_init(loop, &k->timer);
        k->timer.data = k;
        k->next = clocks;
        clocks = k;
    }
    /* users is the loop thread's alone; the list, the lock's */
    k->users++;
    pthread_mutex_unlock(&clocks_lock);
    ws->clock = k;
    return 0;
}

static void on_clock_closed(uv_handle_t *h)
{
    sq__ws_clock_t *k = h->data;
    free(k->heap);
    free(k);
}

/* The last WebSocket of the loop went: the clock leaves the list and closes. */
static void clock_close(sq__ws_clock_t *k)
{
    pthread_mutex_lock(&clocks_lock);
    for (sq__ws_clock_t **p = &clocks; *p != NULL; p = &(*p)->next) {
        if (*p == k) {
            *p = k->next;
            break;
        }
    }
    pthread_mutex_unlock(&clocks_lock);
    uv_close((uv_handle_t *)&k->timer, on_clock_closed);
}

void sq__ws_clock_release(sq_ws_t *ws)
{
    sq__ws_clock_t *k = ws->clock;
    sq__ws_clock_disarm(ws);
    ws->clock = NULL;
    if (--k->users == 0)
        clock_close(k);
}
