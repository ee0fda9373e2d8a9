/* Sleeps and timeouts on libuv timers (tests/test_timer.c). */
#include <stdlib.h>

#include "async/async_int.h"

typedef enum {
    SQ__SLEEP_WAITING,
    SQ__SLEEP_CANCELLED, /* stopped and closing; the callback runs from the close callback */
    SQ__SLEEP_FIRED      /* the callback is running or ran; closing */
} sq__sleep_state_t;

struct sq_sleep_s {
    uv_timer_t timer;
    sq_sleep_cb cb;
    void *data;
    sq__sleep_state_t state;
};

static void sleep_free_cb(uv_handle_t *h)
{
    free(sq__container_of((uv_timer_t *)h, sq_sleep_t, timer));
}

static void sleep_fired(uv_timer_t *timer)
{
    sq_sleep_t *s = sq__container_of(timer, sq_sleep_t, timer);
    s->state = SQ__SLEEP_FIRED;
    s->cb(s, 0, s->data);
    uv_close((uv_handle_t *)&s->timer, sleep_free_cb);
}

/* The cancelled callback runs from the close callback: later than cancel, and after
 * libuv is done with the handle. */
static void sleep_cancelled_cb(uv_handle_t *h)
{
    sq_sleep_t *s = sq__container_of((uv_timer_t *)h, sq_sleep_t, timer);
    s->cb(s, UV_ECANCELED, s->data);
    free(s);
}

int sq_sleep(sq_sleep_t **out, uv_loop_t *loop, uint64_t ms, sq_sleep_cb cb, void *data)
{
    if (loop == NULL || cb == NULL)
        return UV_EINVAL;
    sq_sleep_t *s = malloc(sizeof(*s));
    if (s == NULL)
        return UV_ENOMEM;
    s->cb = cb;
    s->data = data;
    s->state = SQ__SLEEP_WAITING;
    uv_timer_init(loop, &s->timer);
    uv_timer_start(&s->timer, sleep_fired, ms, 0);
    if (out)
        *out = s;
    return 0;
}

int sq_sleep_cancel(sq_sleep_t *s)
{
    if (s->state != SQ__SLEEP_WAITING)
        return UV_EALREADY;
    s->state = SQ__SLEEP_CANCELLED;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, sleep_cancelled_cb);
    return 0;
}

/* ---- timeouts ---- */

struct sq_timeout_s {
    uv_timer_t timer;
    sq_timeout_cb cb;
    void *data;
    bool expired;
};

static void timeout_fired(uv_timer_t *timer)
{
    sq_timeout_t *t = sq__container_of(timer, sq_timeout_t, timer);
    t->expired = true;
    t->cb(t, t->data);
}

static void timeout_free_cb(uv_handle_t *h)
{
    free(sq__container_of((uv_timer_t *)h, sq_timeout_t, timer));
}

int sq_timeout_start(sq_timeout_t **out, uv_loop_t *loop, uint64_t ms, sq_timeout_cb cb,
                     void *data)
{
    if (out == NULL || loop == NULL || cb == NULL)
        return UV_EINVAL;
    sq_timeout_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return UV_ENOMEM;
    t->cb = cb;
    t->data = data;
    t->expired = false;
    uv_timer_init(loop, &t->timer);
    uv_timer_start(&t->timer, timeout_fired, ms, 0);
    *out = t;
    return 0;
}

int sq_timeout_finish(sq_timeout_t *t, int status)
{
    bool expired = t->expired;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, timeout_free_cb);
    if (expired && status == UV_ECANCELED)
        return UV_ETIMEDOUT;
    return status;
}

int sq_timeout_is_expired(const sq_timeout_t *t)
{
    return t->expired ? 1 : 0;
}
