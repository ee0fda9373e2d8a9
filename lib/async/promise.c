/* Promises on the loop: reference counts, reactions, cancellation (tests/test_promise.c).
 *
 * The reference graph has no cycle. A reaction (a node waiting on a source) lives in the
 * promise it settles — its target — and holds a reference to that target; the target only
 * points back at its source, weakly. So whatever settles the head of a chain keeps the
 * whole chain alive and every link is freed after it has run. A promise that adopts an
 * outcome (follow, pass-through, race) holds its source strongly, but only once the source
 * has settled and no longer points forward.
 *
 * Reactions never run inside the call that settles or registers: a settled promise starts
 * its own uv_idle handle (initialised lazily, so a promise nobody waits on costs no handle)
 * and runs its scheduled reactions on the next turn, holding a reference meanwhile.
 */
#include <assert.h>
#include <stdlib.h>

#include "async/async_int.h"

typedef enum {
    R_THEN,    /* cb on fulfilment, pass rejections on */
    R_CATCH,   /* cb on rejection, pass fulfilments on */
    R_FOLLOW,  /* adopt the source's outcome */
    R_AWAIT,   /* cb on either; no target; allocated on its own */
    R_ALL,
    R_RACE,
    R_ANY,
    R_TIMEOUT  /* the timer arm of with_timeout: its fulfilment rejects with ETIMEDOUT */
} reaction_kind_t;

typedef enum {
    RS_IDLE,      /* not attached (a fresh or reusable slot) */
    RS_LINKED,    /* in source->waiting; source pending */
    RS_SCHEDULED, /* in source->scheduled; runs on the source's next idle turn */
    RS_DONE
} reaction_state_t;

typedef struct reaction {
    sq__list_t node;
    sq_promise_t *source; /* weak while LINKED/SCHEDULED; strong when holds_source */
    sq_promise_t *target; /* strong while LINKED/SCHEDULED; NULL for R_AWAIT */
    sq_promise_cb cb;
    void *data;
    reaction_kind_t kind;
    reaction_state_t state;
    bool holds_source;    /* R_ALL: a fulfilled input kept alive for its value */
} reaction_t;

struct sq_promise_s {
    uv_loop_t *loop;
    size_t refs;
    sq_promise_state_t state;
    int err;
    void *value;
    sq_value_free_cb dtor;
    sq_promise_t *adopted;    /* strong: value (and detail) borrowed from it */
    sq__list_t waiting;       /* reactions waiting for this promise to settle */
    sq__list_t scheduled;     /* reactions to run on the next turn */
    uv_idle_t idle;
    bool idle_init;
    bool idle_active;         /* holds a reference while started */
    reaction_t own;           /* the dependency of then/catch/follow */
    reaction_t *deps;         /* what this promise waits on: &own, or an array */
    size_t ndeps;
    size_t remaining;         /* all: inputs not yet fulfilled; any: not yet rejected */
    sq_promise_cancel_cb on_cancel;
    void *on_cancel_data;
};

static void settle_common(sq_promise_t *p);
static void promise_free(sq_promise_t *p);

static sq_promise_t *promise_new(uv_loop_t *loop)
{
    sq_promise_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->refs = 1;
    p->state = SQ_PROMISE_PENDING;
    sq__list_init(&p->waiting);
    sq__list_init(&p->scheduled);
    return p;
}

int sq_promise_create(sq_promise_t **out, uv_loop_t *loop)
{
    sq_promise_t *p = promise_new(loop);
    if (p == NULL)
        return UV_ENOMEM;
    *out = p;
    return 0;
}

sq_promise_t *sq_promise_ref(sq_promise_t *p)
{
    assert(p->refs > 0);
    p->refs++;
    return p;
}

void sq_promise_release(sq_promise_t *p)
{
    if (p == NULL)
        return;
    assert(p->refs > 0);
    if (--p->refs > 0)
        return;
    if (p->state == SQ_PROMISE_PENDING &&
        (!sq__list_empty(&p->waiting) || p->on_cancel != NULL)) {
        /* Nobody can settle it any more, yet something waits: a broken promise. Cancel it
         * while holding a reference; the idle turn that tells the waiters holds another. */
        p->refs = 1;
        sq_promise_cancel(p);
        if (--p->refs > 0)
            return;
    }
    promise_free(p);
}

static void idle_closed_cb(uv_handle_t *h)
{
    free(sq__container_of((uv_idle_t *)h, sq_promise_t, idle));
}

static void promise_free(sq_promise_t *p)
{
    /* Linked or scheduled reactions would hold a reference to p; waiting ones would have
     * made release cancel it; an active idle holds a reference. */
    assert(!p->idle_active && sq__list_empty(&p->scheduled));
    assert(p->state != SQ_PROMISE_PENDING || sq__list_empty(&p->waiting));
    for (size_t i = 0; i < p->ndeps; i++) {
        assert(p->deps[i].state != RS_LINKED && p->deps[i].state != RS_SCHEDULED);
        if (p->deps[i].holds_source)
            sq_promise_release(p->deps[i].source);
    }
    if (p->deps != &p->own)
        free(p->deps);
    sq_promise_release(p->adopted);
    if (p->dtor)
        p->dtor(p->value);
    if (p->idle_init)
        uv_close((uv_handle_t *)&p->idle, idle_closed_cb);
    else
        free(p);
}

/* ---- scheduling ---- */

static void run_reaction(sq_promise_t *s, reaction_t *r);

static void idle_cb(uv_idle_t *idle)
{
    sq_promise_t *s = sq__container_of(idle, sq_promise_t, idle);
    /* Only what is scheduled now: reactions added while these run wait for the next turn,
     * so a reaction that keeps registering cannot hold the loop. */
    sq__list_t batch;
    sq__list_take(&s->scheduled, &batch);
    while (!sq__list_empty(&batch)) {
        reaction_t *r = sq__container_of(batch.next, reaction_t, node);
        sq__list_remove(&r->node);
        run_reaction(s, r);
    }
    if (sq__list_empty(&s->scheduled)) {
        uv_idle_stop(&s->idle);
        s->idle_active = false;
        sq_promise_release(s);
    }
}

static void schedule(sq_promise_t *s, reaction_t *r)
{
    r->state = RS_SCHEDULED;
    sq__list_insert_tail(&s->scheduled, &r->node);
    if (!s->idle_active) {
        if (!s->idle_init) {
            uv_idle_init(s->loop, &s->idle);
            s->idle_init = true;
        }
        uv_idle_start(&s->idle, idle_cb);
        s->idle_active = true;
        s->refs++;
    }
}

/* Makes r wait on s: linked while s is pending, scheduled for the next turn if settled. */
static void attach(reaction_t *r, sq_promise_t *s)
{
    r->source = s;
    if (s->state == SQ_PROMISE_PENDING) {
        r->state = RS_LINKED;
        sq__list_insert_tail(&s->waiting, &r->node);
    } else {
        schedule(s, r);
    }
}

/* p stops waiting on its inputs. An input left with nothing waiting on it is cancelled:
 * nobody wants its outcome any more (a race's loser, a timed-out operation, the head of a
 * cancelled chain). p's caller holds a reference, so dropping the reactions' ones is safe. */
static void detach_deps(sq_promise_t *p)
{
    for (size_t i = 0; i < p->ndeps; i++) {
        reaction_t *r = &p->deps[i];
        if (r->state != RS_LINKED)
            continue; /* scheduled ones see p settled when they run */
        sq_promise_t *s = r->source;
        sq__list_remove(&r->node);
        r->state = RS_DONE;
        r->source = NULL;
        assert(p->refs > 1);
        p->refs--;
        if (s->state == SQ_PROMISE_PENDING && sq__list_empty(&s->waiting))
            sq_promise_cancel(s);
    }
}

/* After p's state, value and error are set: stop waiting on inputs, forget the operation's
 * cancel hook, and schedule everything that waits on p. */
static void settle_common(sq_promise_t *p)
{
    p->refs++;
    p->on_cancel = NULL;
    detach_deps(p);
    while (!sq__list_empty(&p->waiting)) {
        reaction_t *r = sq__container_of(p->waiting.next, reaction_t, node);
        sq__list_remove(&r->node);
        schedule(p, r);
    }
    sq_promise_release(p);
}

/* t takes s's outcome; the value stays s's, kept alive by t. */
static void adopt(sq_promise_t *t, sq_promise_t *s)
{
    sq_promise_t *owner = s->adopted ? s->adopted : s; /* keep pass-through chains flat */
    t->state = s->state;
    t->err = s->err;
    t->value = s->value;
    t->dtor = NULL;
    t->adopted = sq_promise_ref(owner);
    settle_common(t);
}

static void reject_plain(sq_promise_t *t, int err)
{
    t->state = SQ_PROMISE_REJECTED;
    t->err = err;
    t->value = NULL;
    t->dtor = NULL;
    settle_common(t);
}

static void fulfil_all(sq_promise_t *t)
{
    void **values = malloc(t->ndeps * sizeof(*values));
    if (values == NULL) {
        reject_plain(t, UV_ENOMEM);
        return;
    }
    for (size_t i = 0; i < t->ndeps; i++)
        values[i] = t->deps[i].source->value;
    t->state = SQ_PROMISE_FULFILLED;
    t->value = values;
    t->dtor = free;
    settle_common(t);
}

/* Runs one reaction of settled s (kept alive by its idle reference). The reaction's
 * reference to its target is dropped at the end; r itself is not touched after a user
 * callback, which may reuse it (follow from inside then). */
static void run_reaction(sq_promise_t *s, reaction_t *r)
{
    sq_promise_t *t = r->target;
    int status = s->state == SQ_PROMISE_FULFILLED ? 0 : s->err;
    sq_promise_cb cb = r->cb;
    void *data = r->data;

    r->state = RS_DONE;
    switch (r->kind) {
    case R_AWAIT:
        free(r);
        cb(s, status, s->value, NULL, data);
        return;
    case R_THEN:
    case R_CATCH:
        r->source = NULL;
        if (t->state != SQ_PROMISE_PENDING)
            break;
        if ((r->kind == R_THEN) == (status == 0))
            cb(s, status, s->value, t, data);
        else
            adopt(t, s);
        break;
    case R_FOLLOW:
    case R_RACE:
        r->source = NULL;
        if (t->state == SQ_PROMISE_PENDING)
            adopt(t, s);
        break;
    case R_TIMEOUT:
        r->source = NULL;
        if (t->state == SQ_PROMISE_PENDING)
            reject_plain(t, status == 0 ? UV_ETIMEDOUT : status);
        break;
    case R_ALL:
        if (t->state != SQ_PROMISE_PENDING) {
            r->source = NULL;
        } else if (status < 0) {
            r->source = NULL;
            adopt(t, s);
        } else {
            r->holds_source = true;
            sq_promise_ref(s);
            if (--t->remaining == 0)
                fulfil_all(t);
        }
        break;
    case R_ANY:
        r->source = NULL;
        if (t->state == SQ_PROMISE_PENDING && (status == 0 || --t->remaining == 0))
            adopt(t, s);
        break;
    }
    sq_promise_release(t);
}

/* ---- settling ---- */

int sq_promise_resolve(sq_promise_t *p, void *value, sq_value_free_cb dtor)
{
    if (p->state != SQ_PROMISE_PENDING) {
        if (dtor)
            dtor(value);
        return UV_EALREADY;
    }
    p->state = SQ_PROMISE_FULFILLED;
    p->value = value;
    p->dtor = dtor;
    settle_common(p);
    return 0;
}

int sq_promise_reject(sq_promise_t *p, int err, void *detail, sq_value_free_cb dtor)
{
    if (err >= 0 || p->state != SQ_PROMISE_PENDING) {
        if (dtor)
            dtor(detail);
        return err >= 0 ? UV_EINVAL : UV_EALREADY;
    }
    p->state = SQ_PROMISE_REJECTED;
    p->err = err;
    p->value = detail;
    p->dtor = dtor;
    settle_common(p);
    return 0;
}

int sq_promise_cancel(sq_promise_t *p)
{
    if (p->state != SQ_PROMISE_PENDING)
        return UV_EALREADY;
    sq_promise_cancel_cb hook = p->on_cancel;
    void *hook_data = p->on_cancel_data;
    p->refs++;
    reject_plain(p, UV_ECANCELED); /* clears the hook: it runs once, here */
    if (hook)
        hook(p, hook_data);
    sq_promise_release(p);
    return 0;
}

int sq_promise_on_cancel(sq_promise_t *p, sq_promise_cancel_cb cb, void *data)
{
    if (p->state != SQ_PROMISE_PENDING)
        return UV_EALREADY;
    if (p->on_cancel)
        return SQ_EBUSY;
    p->on_cancel = cb;
    p->on_cancel_data = data;
    return 0;
}

int sq_promise_follow(sq_promise_t *p, sq_promise_t *src)
{
    if (p->state != SQ_PROMISE_PENDING)
        return UV_EALREADY;
    if (src == p)
        return UV_EINVAL;
    if (p->deps != NULL && p->deps != &p->own)
        return SQ_EBUSY; /* a combinator */
    if (p->own.state == RS_LINKED || p->own.state == RS_SCHEDULED)
        return SQ_EBUSY;
    reaction_t *r = &p->own;
    memset(r, 0, sizeof(*r));
    r->kind = R_FOLLOW;
    r->target = sq_promise_ref(p);
    p->deps = r;
    p->ndeps = 1;
    attach(r, src);
    return 0;
}

/* ---- looking ---- */

sq_promise_state_t sq_promise_state(const sq_promise_t *p)
{
    return p->state;
}

int sq_promise_result(const sq_promise_t *p, void **value)
{
    if (p->state == SQ_PROMISE_PENDING)
        return UV_EAGAIN;
    if (value)
        *value = p->value;
    return p->state == SQ_PROMISE_FULFILLED ? 0 : p->err;
}

uv_loop_t *sq_promise_loop(const sq_promise_t *p)
{
    return p->loop;
}

/* ---- chaining ---- */

static int chain(sq_promise_t **out, sq_promise_t *s, reaction_kind_t kind, sq_promise_cb cb,
                 void *data)
{
    sq_promise_t *t = promise_new(s->loop);
    if (t == NULL)
        return UV_ENOMEM;
    reaction_t *r = &t->own;
    r->kind = kind;
    r->cb = cb;
    r->data = data;
    r->target = sq_promise_ref(t);
    t->deps = r;
    t->ndeps = 1;
    attach(r, s);
    if (out)
        *out = t;
    else
        sq_promise_release(t);
    return 0;
}

int sq_promise_then(sq_promise_t **next_out, sq_promise_t *p, sq_promise_cb cb, void *data)
{
    assert(cb != NULL);
    return chain(next_out, p, R_THEN, cb, data);
}

int sq_promise_catch(sq_promise_t **next_out, sq_promise_t *p, sq_promise_cb cb, void *data)
{
    assert(cb != NULL);
    return chain(next_out, p, R_CATCH, cb, data);
}

int sq_promise_await(sq_promise_t *p, sq_promise_cb cb, void *data)
{
    assert(cb != NULL);
    reaction_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return UV_ENOMEM;
    r->kind = R_AWAIT;
    r->cb = cb;
    r->data = data;
    attach(r, p);
    return 0;
}

/* ---- combinators ---- */

static int combine(sq_promise_t **out, sq_promise_t *const *ps, size_t n,
                   reaction_kind_t kind)
{
    if (n == 0)
        return UV_EINVAL;
    sq_promise_t *t = promise_new(ps[0]->loop);
    if (t == NULL)
        return UV_ENOMEM;
    t->deps = calloc(n, sizeof(*t->deps));
    if (t->deps == NULL) {
        free(t);
        return UV_ENOMEM;
    }
    t->ndeps = n;
    t->remaining = n;
    for (size_t i = 0; i < n; i++) {
        assert(ps[i]->loop == t->loop);
        reaction_t *r = &t->deps[i];
        r->kind = kind;
        r->target = sq_promise_ref(t);
        attach(r, ps[i]);
    }
    *out = t;
    return 0;
}

int sq_promise_all(sq_promise_t **out, sq_promise_t *const *ps, size_t n)
{
    return combine(out, ps, n, R_ALL);
}

int sq_promise_race(sq_promise_t **out, sq_promise_t *const *ps, size_t n)
{
    return combine(out, ps, n, R_RACE);
}

int sq_promise_any(sq_promise_t **out, sq_promise_t *const *ps, size_t n)
{
    return combine(out, ps, n, R_ANY);
}

int sq_promise_with_timeout(sq_promise_t **out, sq_promise_t *p, uint64_t ms)
{
    sq_promise_t *timer;
    int err = sq_promise_sleep(&timer, p->loop, ms);
    if (err < 0)
        return err;
    sq_promise_t *ps[2] = {p, timer};
    sq_promise_t *t;
    err = combine(&t, ps, 2, R_RACE);
    if (err < 0) {
        sq_promise_cancel(timer);
        sq_promise_release(timer);
        return err;
    }
    t->deps[1].kind = R_TIMEOUT;
    /* The sleep's operation holds the timer promise until it fires or is cancelled (when
     * t stops waiting on it). */
    sq_promise_release(timer);
    *out = t;
    return 0;
}

/* ---- operations ---- */

typedef struct sleep_op {
    sq_promise_t *p; /* the operation's reference */
    sq_sleep_t *sleep;
} sleep_op_t;

static void sleep_op_done(sq_sleep_t *s, int status, void *data)
{
    sleep_op_t *op = data;
    if (status == 0)
        sq_promise_resolve(op->p, NULL, NULL);
    else
        sq_promise_reject(op->p, status, NULL, NULL); /* UV_EALREADY when cancelled */
    sq_promise_release(op->p);
    free(op);
}

static void sleep_op_cancel(sq_promise_t *p, void *data)
{
    sleep_op_t *op = data;
    sq_sleep_cancel(op->sleep);
}

int sq_promise_sleep(sq_promise_t **out, uv_loop_t *loop, uint64_t ms)
{
    sleep_op_t *op = malloc(sizeof(*op));
    if (op == NULL)
        return UV_ENOMEM;
    op->p = promise_new(loop);
    if (op->p == NULL) {
        free(op);
        return UV_ENOMEM;
    }
    int err = sq_sleep(&op->sleep, loop, ms, sleep_op_done, op);
    if (err < 0) {
        sq_promise_release(op->p);
        free(op);
        return err;
    }
    sq_promise_on_cancel(op->p, sleep_op_cancel, op);
    *out = sq_promise_ref(op->p);
    return 0;
}

typedef struct work_op {
    sq_promise_t *p; /* the operation's reference */
    sq_work_t *work;
    sq_work_fn fn;
    void *data;
    sq_value_free_cb dtor;
} work_op_t;

static int work_op_run(sq_work_t *w, void *data)
{
    work_op_t *op = data;
    return op->fn(w, op->data);
}

static void work_op_done(sq_work_t *w, int status, void *data)
{
    work_op_t *op = data;
    if (status == UV_ECANCELED) {
        /* The promise was cancelled (or the pool destroyed): the data never left the job. */
        sq_promise_reject(op->p, UV_ECANCELED, NULL, NULL);
        if (op->dtor)
            op->dtor(op->data);
    } else if (status < 0) {
        sq_promise_reject(op->p, status, op->data, op->dtor);
    } else {
        sq_promise_resolve(op->p, op->data, op->dtor);
    }
    sq_promise_release(op->p);
    free(op);
}

static void work_op_cancel(sq_promise_t *p, void *data)
{
    work_op_t *op = data;
    sq_work_cancel(op->work);
}

int sq_promise_work(sq_promise_t **out, uv_loop_t *loop, sq_work_pool_t *pool,
                    sq_work_fn work, void *data, sq_value_free_cb dtor)
{
    int err = UV_ENOMEM;
    work_op_t *op;
    if (work == NULL || loop == NULL || (pool != NULL && pool->loop != loop)) {
        err = UV_EINVAL;
        goto free_data;
    }
    op = malloc(sizeof(*op));
    if (op == NULL)
        goto free_data;
    op->fn = work;
    op->data = data;
    op->dtor = dtor;
    op->p = promise_new(loop);
    if (op->p == NULL)
        goto free_op;
    if (pool)
        err = sq_work_pool_submit(&op->work, pool, work_op_run, work_op_done, op);
    else
        err = sq_work_submit(&op->work, loop, work_op_run, work_op_done, op);
    if (err < 0)
        goto release_promise;
    sq_promise_on_cancel(op->p, work_op_cancel, op);
    *out = sq_promise_ref(op->p);
    return 0;

release_promise:
    sq_promise_release(op->p);
free_op:
    free(op);
free_data:
    if (dtor)
        dtor(data);
    return err;
}
