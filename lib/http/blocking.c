/* Blocking handlers: the matched callback runs on the server's work pool with a read-only
 * view of the exchange and a builder of its own; the loop thread sends what it built.
 *
 * Why a view and not a copy: while the job runs, the connection is paused on this request
 * (nothing parses into the exchange) and the handler's hold keeps the exchange alive even
 * if the client goes; every lazily computed field (decoded path, parsed query) is computed
 * on the loop thread before the job is submitted. So the pool thread only reads memory
 * that nobody writes until the done callback, which runs on the loop thread.
 *
 * The job holds a reference of its own on the exchange, apart from the handler's: an
 * `.aborted` callback may finish res (as router.h asks of non-blocking handlers), which
 * drops the handler's reference while the job still reads the request; without the job's,
 * the exchange would be recycled under it and its done callback would answer whichever
 * request got the exchange next (tests/test_blocking.c:
 * aborted_that_finishes_res_does_not_free_the_exchange_under_the_job). For the same
 * reason the view never reads x->flags, which the loop thread writes meanwhile. */
#include <stdatomic.h>
#include <stdlib.h>

#include <jansson.h>

#include "http/h1_int.h"
#include "server/server_int.h"
#include "squall/blocking.h"
#include "squall/work.h"

struct sq_breq_s {
    sq__exch_t *x;
    sq_work_t *work; /* set by the pool thread before the callback runs */
};

typedef struct bheader {
    struct bheader *next;
    char *name, *value;
} bheader_t;

struct sq_bres_s {
    int status;          /* 0: nothing was sent */
    char *ctype;
    sq__buf_t body;
    bheader_t *headers;  /* in reverse order of addition */
};

typedef struct bjob {
    struct sq_breq_s req;
    struct sq_bres_s res;
    sq_blocking_cb cb;
    void *data;
} bjob_t;

/* ---- the request view (pool thread) ---- */

const char *sq_breq_method(const sq_breq_t *req)
{
    return sq_req_method(req->x);
}

sq_method_t sq_breq_method_id(const sq_breq_t *req)
{
    return sq_req_method_id(req->x);
}

const char *sq_breq_path(const sq_breq_t *req)
{
    return req->x->path; /* decoded before submission */
}

const char *sq_breq_query_string(const sq_breq_t *req)
{
    return sq_req_query_string(req->x);
}

const char *sq_breq_query(const sq_breq_t *req, const char *name)
{
    /* parsed before submission; sq_req_query would read x->flags to know that */
    const sq__exch_t *x = req->x;
    for (unsigned i = 0; i < x->nqparams; i++)
        if (strcmp(x->qparams[i].name, name) == 0)
            return x->qparams[i].value;
    return NULL;
}

const char *sq_breq_param(const sq_breq_t *req, const char *name)
{
    return sq_req_param(req->x, name);
}

int sq_breq_param_int(const sq_breq_t *req, const char *name, int64_t *out)
{
    return sq_req_param_int(req->x, name, out);
}

const char *sq_breq_header(const sq_breq_t *req, const char *name)
{
    return sq_req_header(req->x, name);
}

const char *sq_breq_body(const sq_breq_t *req, size_t *len)
{
    return sq_req_body(req->x, len);
}

json_t *sq_breq_json(const sq_breq_t *req, void *json_error)
{
    return sq_req_json(req->x, json_error);
}

const void *sq_breq_input(const sq_breq_t *req)
{
    return sq_req_input(req->x);
}

const json_t *sq_breq_input_json(const sq_breq_t *req, const char *part)
{
    return sq_req_input_json(req->x, part);
}

int sq_breq_is_cancelled(const sq_breq_t *req)
{
    return req->work != NULL && sq_work_is_cancelled(req->work);
}

/* ---- the response builder (pool thread) ---- */

int sq_bres_header(sq_bres_t *res, const char *name, const char *value)
{
    if (!sq__field_ok(name, true) || !sq__field_ok(value, false) || sq__header_is_framing(name, value))
        return UV_EINVAL;
    bheader_t *h = malloc(sizeof(*h));
    if (h == NULL)
        return UV_ENOMEM;
    h->name = strdup(name);
    h->value = strdup(value);
    if (h->name == NULL || h->value == NULL) {
        free(h->name);
        free(h->value);
        free(h);
        return UV_ENOMEM;
    }
    h->next = res->headers;
    res->headers = h;
    return 0;
}

int sq_bres_send(sq_bres_t *res, int status, const char *content_type, const void *body,
                 size_t len)
{
    if (!sq__status_is_final(status) || !sq__field_value_ok(content_type))
        return UV_EINVAL; /* checked here: on the loop, sq_res_send would refuse it too late */
    char *ct = content_type ? strdup(content_type) : NULL;
    if (content_type != NULL && ct == NULL)
        return UV_ENOMEM;
    res->body.len = 0;
    if (sq__buf_append(&res->body, body, len) != 0) {
        free(ct);
        return UV_ENOMEM;
    }
    free(res->ctype);
    res->ctype = ct;
    res->status = status;
    return 0;
}

int sq_bres_send_json_new(sq_bres_t *res, int status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(json);
    if (text == NULL)
        return UV_ENOMEM;
    int rc = sq_bres_send(res, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

int sq_bres_send_error(sq_bres_t *res, int status, const char *detail)
{
    return sq_bres_send_json_new(res, status,
                                 json_pack("{s:s}", "detail", detail ? detail : "error"));
}

/* ---- the bridge (loop thread, except run_job) ---- */

static int run_job(sq_work_t *work, void *data)
{
    bjob_t *job = data;
    job->req.work = work;
    job->cb(&job->req, &job->res, job->data);
    return 0;
}

static void job_free(bjob_t *job)
{
    while (job->res.headers != NULL) {
        bheader_t *h = job->res.headers;
        job->res.headers = h->next;
        free(h->name);
        free(h->value);
        free(h);
    }
    free(job->res.ctype);
    sq__buf_free(&job->res.body);
    free(job);
}

/* Adds the built headers in the order they were added (the list is reversed). */
static void add_headers(sq_res_t *res, bheader_t *h)
{
    if (h == NULL)
        return;
    add_headers(res, h->next);
    sq_res_header(res, h->name, h->value);
}

static void job_done(sq_work_t *work, int status, void *data)
{
    bjob_t *job = data;
    sq__exch_t *x = job->req.x;
    x->work = NULL;
    sq_res_t *res = &x->res;
    if (status == UV_ECANCELED)
        sq_res_send_error(res, 503, "Service Unavailable"); /* a no-op if the client left */
    else if (job->res.status == 0)
        sq_res_send_error(res, 500, "blocking handler sent no response");
    else {
        add_headers(res, job->res.headers);
        sq_res_send(res, job->res.status, job->res.ctype, job->res.body.base, job->res.body.len);
    }
    job_free(job);
    sq__exch_unhold(x); /* the job's reference: may free x and end a closing server */
}

static int ensure_pool(sq_server_t *srv)
{
    if (sq__hs(srv)->pool != NULL)
        return 0;
    /* Even while closing: a request read during the grace period is answered, and the
     * server destroys its own pool only after its last exchange. */
    sq_work_pool_opts_t o;
    sq_work_pool_opts_init(&o);
    if (srv->opts.blocking_max_in_flight > 0)
        o.max_in_flight = srv->opts.blocking_max_in_flight;
    int rc = sq_work_pool_create(&sq__hs(srv)->pool, srv->loop, &o);
    if (rc == 0)
        sq__hs(srv)->own_pool = true;
    return rc;
}

void sq__blocking_dispatch(sq__exch_t *x)
{
    bjob_t *job = calloc(1, sizeof(*job));
    sq_server_t *srv = x->srv;
    int rc = job ? ensure_pool(srv) : UV_ENOMEM;
    if (rc == 0) {
        /* everything lazy is computed here, so the pool thread only reads */
        sq_req_path(x);
        sq_req_query(x, "");
        job->req.x = x;
        job->cb = x->match.bcb;
        job->data = x->match.data;
        rc = sq_work_pool_submit(&x->work, sq__hs(srv)->pool, run_job, job_done, job);
    }
    if (rc == 0) {
        sq__exch_hold(x); /* the job's own, dropped by job_done */
        return;
    }
    free(job);
    if (rc == UV_EAGAIN)
        sq_res_send_error(&x->res, 503, "Service Unavailable: too many blocking jobs");
    else if (rc == SQ_ECLOSED)
        sq_res_send_error(&x->res, 503, "Service Unavailable");
    else
        sq_res_send_error(&x->res, 500, "Internal Server Error");
}
