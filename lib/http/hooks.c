/* Hooks around handlers (router.h: before and after hooks, error handlers): the chain of
 * apps from the served one down to the route's (sub-apps mounted on the way), walked in
 * that order for before hooks, after hooks and the nearest error handler. */
#include <jansson.h>

#include "http/h1_int.h"
#include "server/server_int.h"
#include "squall/log.h"

/* The apps whose hooks apply to x, served app first. A request no route took (404, a
 * bad target) has the served app's only. Returns how many. */
static unsigned chain(const sq__exch_t *x, const sq_app_t **apps)
{
    const sq_app_t *root = sq__hs(x->srv)->app;
    const sq_app_t *a = x->match.route != NULL ? sq__route_app(x->match.route)
                        : x->match.app != NULL ? x->match.app /* a 404 under a mount */
                                               : root;
    if (sq__app_parent(a) == NULL) { /* no mount on the way: the common case */
        apps[0] = a;
        return 1;
    }
    const sq_app_t *rev[SQ__MAX_MOUNT_DEPTH];
    unsigned n = 0;
    for (; a != NULL && n < SQ__MAX_MOUNT_DEPTH; a = sq__app_parent(a))
        rev[n++] = a;
    for (unsigned i = 0; i < n; i++)
        apps[i] = rev[n - 1 - i];
    return n;
}

/* The i-th before hook on a chain of n apps, or NULL past the last. */
static const sq__hook_t *before_at(const sq_app_t *const *apps, unsigned n, unsigned i)
{
    for (unsigned k = 0; k < n; k++) {
        unsigned cnt;
        const sq__hook_t *h = sq__app_befores(apps[k], &cnt);
        if (i < cnt)
            return &h[i];
        i -= cnt;
    }
    return NULL;
}

bool sq__h1_hooks_before(sq__exch_t *x)
{
    const sq_app_t *apps[SQ__MAX_MOUNT_DEPTH];
    unsigned n = chain(x, apps); /* the match, so the chain, stays while hooks run */
    for (;;) {
        const sq__hook_t *h = before_at(apps, n, x->hook_i);
        if (h == NULL)
            return true;
        x->hook_i++;
        x->flags |= SQ__XF_HOOK_WAIT; /* so that sq_req_next works inside the hook too */
        int rc = h->cb.before(x, &x->res, h->data);
        if (x->flags & SQ__XF_FINISHED) {
            x->flags &= ~(SQ__XF_HOOK_WAIT | SQ__XF_HOOK_NEXT);
            return false;
        }
        if (rc == SQ_PAUSE)
            return false; /* waits (HOOK_WAIT), or goes on from the tick (HOOK_NEXT) */
        x->flags &= ~(SQ__XF_HOOK_WAIT | SQ__XF_HOOK_NEXT); /* goes on now, once */
        if (rc < 0) {
            sq_log(SQ_LOG_ERROR, "%s %s: before hook %u failed: %s", sq_req_method(x),
                   x->path ? x->path : "", x->hook_i, sq_strerror(rc));
            sq__h1_error(x, 500, json_string("Internal Server Error"));
            return false;
        }
    }
}

void sq__h1_hooks_after(sq__exch_t *x, int status)
{
    x->flags |= SQ__XF_IN_AFTER;
    const sq_app_t *apps[SQ__MAX_MOUNT_DEPTH];
    unsigned n = chain(x, apps);
    for (unsigned k = 0; k < n; k++) {
        unsigned cnt;
        const sq__hook_t *h = sq__app_afters(apps[k], &cnt);
        for (unsigned i = 0; i < cnt; i++)
            h[i].cb.after(x, &x->res, status, h[i].data);
    }
    x->flags &= ~SQ__XF_IN_AFTER;
}

void sq__h1_error(sq__exch_t *x, int status, json_t *detail)
{
    const sq_app_t *apps[SQ__MAX_MOUNT_DEPTH];
    unsigned n = chain(x, apps);
    for (unsigned k = n; k-- > 0;) {
        const sq__hook_t *e = sq__app_error(apps[k], status);
        if (e == NULL)
            continue;
        e->cb.error(x, &x->res, status, detail ? detail : json_null(), e->data);
        json_decref(detail);
        return;
    }
    if (detail == NULL) {
        sq_res_send_error(&x->res, status, NULL);
        return;
    }
    sq_res_send_json_new(&x->res, status, json_pack("{s:o}", "detail", detail));
}

int sq_req_next(sq_req_t *req)
{
    if (!(req->flags & SQ__XF_HOOK_WAIT))
        return UV_EINVAL;
    if (req->flags & SQ__XF_FINISHED)
        return SQ_EALREADY_SENT;
    req->flags &= ~SQ__XF_HOOK_WAIT;
    if (req->conn == NULL) {
        /* the client went while the hook waited: nothing more runs; the response is
         * released here, as the handler that would have had it never will */
        sq_res_send(&req->res, 500, NULL, NULL, 0);
        return UV_ECANCELED;
    }
    req->flags |= SQ__XF_HOOK_NEXT;
    sq__tick_add(req->conn);
    return 0;
}

uint64_t sq_req_id(const sq_req_t *req)
{
    return req->id;
}

uint64_t sq_req_start_ns(const sq_req_t *req)
{
    return req->start_ns;
}
