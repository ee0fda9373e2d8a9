/* The HTTP client: options, pools per host:port with their queues, the one deadline
 * timer, delivery of callbacks from the loop, close and counters. */
#include <stdio.h>
#include <stdlib.h>

#include "client/client_int.h"

static const sq_client_opts_t default_opts = {
    .size = sizeof(sq_client_opts_t),
    .max_conns_per_host = 6,
    .max_queued = 10000,
    .connect_timeout_ms = 10 * 1000,
    .timeout_ms = 5 * 60 * 1000,
    .idle_timeout_ms = 30 * 1000,
    .max_header_bytes = 64 * 1024,
    .max_headers = 200,
    .max_body_bytes = 64 * 1024 * 1024,
    .max_redirects = 0,
    .user_agent = "squall/" SQ_VERSION_STRING,
    .tls_ca_file = NULL,
    .tls_insecure = 0,
};

void sq_client_opts_init_sized(sq_client_opts_t *opts, size_t size)
{
    if (opts != NULL)
        sq__abi_opts_init(opts, size, &default_opts, sizeof(default_opts));
}

static void on_timer(uv_timer_t *t);
static void on_defer(uv_timer_t *t);

int sq_client_new(sq_client_t **out, uv_loop_t *loop, const sq_client_opts_t *opts)
{
    if (out == NULL || loop == NULL)
        return UV_EINVAL;
    sq_client_opts_t o = default_opts;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (o.user_agent != NULL && strpbrk(o.user_agent, "\r\n") != NULL)
        return UV_EINVAL; /* it would end the header line */
    sq_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UV_ENOMEM;
    c->loop = loop;
    c->opts = o;
    if (o.user_agent != NULL) {
        c->user_agent = strdup(o.user_agent);
        if (c->user_agent == NULL) {
            free(c);
            return UV_ENOMEM;
        }
    }
    c->opts.user_agent = c->user_agent;
    if (o.tls_ca_file != NULL) { /* loaded now: a bad file is sq_client_new's error */
        int err = UV_ENOMEM;
        c->tls_ca_file = strdup(o.tls_ca_file);
        c->opts.tls_ca_file = c->tls_ca_file;
        if (c->tls_ca_file == NULL || sq__cl_tls_ctx(c, &err) == NULL) {
            SSL_CTX_free(c->tls_ctx);
            free(c->tls_buf);
            free(c->tls_ca_file);
            free(c->user_agent);
            free(c);
            return err;
        }
    }
    sq__list_init(&c->pools);
    sq__list_init(&c->fetches);
    sq__list_init(&c->conns);
    sq__list_init(&c->done);
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->defer);
    c->timer.data = c->defer.data = c;
    uv_unref((uv_handle_t *)&c->timer); /* what waits holds the loop, not the deadline */
    c->handles = 2;
    *out = c;
    return 0;
}

/* ---- pools and queues ---- */

SSL_CTX *sq__cl_tls_ctx(sq_client_t *c, int *err)
{
    if (c->tls_ctx != NULL)
        return c->tls_ctx;
    c->tls_buf = c->tls_buf != NULL ? c->tls_buf : malloc(CL_TLS_BUF);
    if (c->tls_buf == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    c->tls_ctx = sq__tls_client_ctx(c->opts.tls_ca_file, !c->opts.tls_insecure, err);
    return c->tls_ctx;
}

cl_pool_t *sq__cl_pool_get(sq_client_t *c, const char *host, const char *port, bool tls)
{
    char key[600];
    int n = snprintf(key, sizeof(key), "%s%s %s", tls ? "https " : "", host, port);
    if (n < 0 || (size_t)n >= sizeof(key))
        return NULL;
    for (sq__list_t *l = c->pools.next; l != &c->pools; l = l->next) {
        cl_pool_t *p = sq__container_of(l, cl_pool_t, link);
        if (strcmp(p->key, key) == 0)
            return p;
    }
    cl_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->key = strdup(key)) == NULL) {
        free(p);
        return NULL;
    }
    p->tls = tls;
    sq__list_init(&p->idle);
    sq__list_init(&p->queue);
    sq__list_insert_tail(&c->pools, &p->link);
    return p;
}

/* Puts a fetch in its pool's queue (at the front for a retry, which already waited). */
void sq__cl_enqueue(sq_fetch_t *f, bool front)
{
    f->state = CL_F_QUEUED;
    if (front) {
        sq__list_t *h = &f->pool->queue;
        f->link.next = h->next;
        f->link.prev = h;
        h->next->prev = &f->link;
        h->next = &f->link;
    } else {
        sq__list_insert_tail(&f->pool->queue, &f->link);
    }
    f->client->stats.queued++;
}

/* Gives the pool's waiting fetches the connections they may have, in order: an idle one,
 * or a new one while the pool is under max_conns_per_host. */
void sq__cl_dispatch(cl_pool_t *pool, sq_client_t *c)
{
    unsigned max = c->opts.max_conns_per_host;
    while (!c->closing && !sq__list_empty(&pool->queue)) {
        sq_fetch_t *f = sq__container_of(pool->queue.next, sq_fetch_t, link);
        cl_conn_t *idle =
            sq__list_empty(&pool->idle) ? NULL : sq__container_of(pool->idle.prev, cl_conn_t, link);
        if (idle != NULL && !f->fresh) {
            sq__list_remove(&f->link);
            c->stats.queued--;
            sq__clconn_start(idle, f);
            continue;
        }
        if (max != 0 && pool->nconns >= max) {
            if (idle == NULL)
                return; /* wait for a connection to come back or close */
            /* a retry wants a new one: make room; the close dispatches the queue again,
             * so look at its head anew */
            sq__clconn_close(idle);
            continue;
        }
        sq__list_remove(&f->link);
        c->stats.queued--;
        f->state = CL_F_ACTIVE;
        int rc = sq__clconn_open(c, pool, f);
        if (rc != 0)
            sq__fetch_finish(f, rc);
    }
}

/* ---- the deadline timer ---- */

void sq__cl_arm(sq_client_t *c, uint64_t deadline)
{
    if (deadline == 0 || c->closing || (c->armed != 0 && c->armed <= deadline))
        return;
    uint64_t now = uv_now(c->loop);
    c->armed = deadline;
    uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    sq_client_t *c = t->data;
    uint64_t now = uv_now(c->loop), next = 0;
    c->armed = 0;
    for (sq__list_t *l = c->fetches.next, *n; l != &c->fetches; l = n) {
        n = l->next;
        sq_fetch_t *f = sq__container_of(l, sq_fetch_t, all);
        if (f->deadline != 0 && f->deadline <= now)
            sq__fetch_finish(f, UV_ETIMEDOUT);
    }
    for (sq__list_t *l = c->conns.next; l != &c->conns; l = l->next) {
        cl_conn_t *conn = sq__container_of(l, cl_conn_t, all);
        sq__clconn_expire(conn, now);
    }
    /* what is left: the earliest deadline still ahead */
    for (sq__list_t *l = c->fetches.next; l != &c->fetches; l = l->next) {
        sq_fetch_t *f = sq__container_of(l, sq_fetch_t, all);
        if (f->deadline != 0 && (next == 0 || f->deadline < next))
            next = f->deadline;
    }
    for (sq__list_t *l = c->conns.next; l != &c->conns; l = l->next) {
        cl_conn_t *conn = sq__container_of(l, cl_conn_t, all);
        if (conn->state != CL_CLOSED && conn->deadline != 0 && (next == 0 || conn->deadline < next))
            next = conn->deadline;
    }
    sq__cl_arm(c, next);
}

/* ---- delivery ---- */

static void deliver(sq_client_t *c)
{
    sq__list_t batch;
    sq__list_take(&c->done, &batch);
    c->delivering = true;
    while (!sq__list_empty(&batch)) {
        sq_fetch_t *f = sq__container_of(batch.next, sq_fetch_t, link);
        sq__list_remove(&f->link);
        if (f->status == 0)
            c->stats.responses++;
        else
            c->stats.errors++;
        f->cb(f, f->status, f->status == 0 ? f->res : NULL, f->data);
        sq__fetch_free(f);
    }
    c->delivering = false;
}

static void on_defer(uv_timer_t *t)
{
    sq_client_t *c = t->data;
    deliver(c);
    if (!sq__list_empty(&c->done))
        uv_timer_start(&c->defer, on_defer, 0, 0);
    sq__cl_maybe_free(c);
}

/* Called by sq__fetch_finish: the callback is due, from the loop. */
void sq__cl_due(sq_client_t *c)
{
    if (!uv_is_active((uv_handle_t *)&c->defer))
        uv_timer_start(&c->defer, on_defer, 0, 0);
}

/* ---- close ---- */

static void on_client_handle_closed(uv_handle_t *h)
{
    sq_client_t *c = h->data;
    if (--c->handles > 0)
        return;
    while (!sq__list_empty(&c->pools)) {
        cl_pool_t *p = sq__container_of(c->pools.next, cl_pool_t, link);
        sq__list_remove(&p->link);
        free(p->key);
        free(p);
    }
    if (c->close_cb != NULL)
        c->close_cb(c, c->close_data);
    free(c->user_agent);
    SSL_CTX_free(c->tls_ctx);
    free(c->tls_buf);
    free(c->tls_ca_file);
    free(c);
}

/* Frees a closing client once every fetch was told and every connection freed. */
void sq__cl_maybe_free(sq_client_t *c)
{
    if (!c->closing || c->delivering || !sq__list_empty(&c->done) || !sq__list_empty(&c->fetches) ||
        !sq__list_empty(&c->conns))
        return;
    if (uv_is_closing((uv_handle_t *)&c->timer))
        return;
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->defer, on_client_handle_closed);
}

int sq_client_close(sq_client_t *client, sq_client_close_cb cb, void *data)
{
    if (client == NULL)
        return UV_EINVAL;
    if (client->closing)
        return SQ_ECLOSED;
    client->closing = true;
    client->close_cb = cb;
    client->close_data = data;
    uv_timer_stop(&client->timer);
    client->armed = 0;
    while (!sq__list_empty(&client->fetches)) {
        sq_fetch_t *f = sq__container_of(client->fetches.next, sq_fetch_t, all);
        sq__fetch_finish(f, UV_ECANCELED);
    }
    for (sq__list_t *l = client->conns.next; l != &client->conns; l = l->next)
        sq__clconn_close(sq__container_of(l, cl_conn_t, all));
    /* the close callback, too, comes from the loop */
    sq__cl_due(client);
    return 0;
}

void sq_client_stats_sized(const sq_client_t *client, sq_client_stats_t *out, size_t size)
{
    if (client == NULL || out == NULL)
        return;
    sq_client_stats_t s = client->stats;
    s.size = sizeof(s);
    SQ__STATS_OUT(out, size, &s);
}
