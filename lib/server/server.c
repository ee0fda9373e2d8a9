/* The server: listeners on the caller's loop, the registry of connections, shutdown. */
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/server_int.h"

void sq_server_opts_init(sq_server_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->max_header_bytes = 16 * 1024;
    o->max_headers = 100;
    o->max_uri_bytes = 8 * 1024;
    o->max_body_bytes = 1024 * 1024;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 30000;
    o->idle_timeout_ms = 5000;
    o->max_connections = 16384;
    o->max_pipeline_bytes = 64 * 1024;
    o->backlog = 511;
    o->reuseport = 0;
    o->server_name = "squall";
}

int sq_server_create(sq_server_t **out, uv_loop_t *loop, sq_app_t *app,
                     const sq_server_opts_t *opts)
{
    if (out == NULL || loop == NULL || app == NULL)
        return UV_EINVAL;
    sq_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return UV_ENOMEM;
    srv->loop = loop;
    srv->app = app;
    if (opts != NULL)
        srv->opts = *opts;
    else
        sq_server_opts_init(&srv->opts);
    if (srv->opts.max_pipeline_bytes == 0)
        srv->opts.max_pipeline_bytes = 64 * 1024;
    if (srv->opts.server_name != NULL) {
        int n = snprintf(srv->server_line, sizeof(srv->server_line), "Server: %s\r\n",
                         srv->opts.server_name);
        if (n < 0 || (size_t)n >= sizeof(srv->server_line) ||
            strpbrk(srv->opts.server_name, "\r\n") != NULL) {
            free(srv);
            return UV_EINVAL;
        }
        srv->server_line_len = (size_t)n;
    }
    srv->opts.server_name = NULL; /* not kept: the caller's string may go */
    sq__list_init(&srv->listeners);
    sq__list_init(&srv->conns);
    sq__list_init(&srv->ticks);
    for (int i = 0; i < SQ__TQ_COUNT; i++)
        sq__list_init(&srv->tq[i]);
    srv->tq_timeout[SQ__TQ_HEAD] = srv->opts.header_timeout_ms;
    srv->tq_timeout[SQ__TQ_BODY] = srv->opts.body_timeout_ms;
    srv->tq_timeout[SQ__TQ_IDLE] = srv->opts.idle_timeout_ms;
    srv->tq_timeout[SQ__TQ_LINGER] = 2000;
    srv->rbuf_cap = 64 * 1024;
    srv->rbuf = malloc(srv->rbuf_cap);
    if (srv->rbuf == NULL) {
        free(srv);
        return UV_ENOMEM;
    }
    if (srv->opts.slow_callback_ms > 0) {
        sq_watchdog_opts_t wo;
        sq_watchdog_opts_init(&wo);
        wo.slow_ms = srv->opts.slow_callback_ms;
        int rc = sq_watchdog_create(&srv->wd, loop, &wo);
        if (rc != 0) {
            free(srv->rbuf);
            free(srv);
            return rc;
        }
    }
    srv->pool = srv->opts.blocking_pool;
    uv_timer_init(loop, &srv->timer);
    uv_idle_init(loop, &srv->tick);
    srv->nhandles = 2;
    srv->port = UV_EINVAL;
    *out = srv;
    return 0;
}

/* A listener is freed here, whether the server is closing or its listen failed: the
 * handle is inside the allocation, so uv_close's callback cannot be plain free(). Counted
 * in nlisteners_open until then, so a server destroyed meanwhile waits for it. */
static void on_listener_close(uv_handle_t *h)
{
    sq__listener_t *l = h->data;
    sq_server_t *srv = l->srv;
    free(l);
    srv->nlisteners_open--;
    sq__server_maybe_done(srv);
}

static void on_connection(uv_stream_t *s, int status)
{
    sq__listener_t *l = s->data;
    if (status < 0) {
        sq_log(SQ_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    sq__conn_accept(l->srv, s, l->h.handle.type == UV_NAMED_PIPE);
}

int sq_server_listen(sq_server_t *srv, const char *host, int port)
{
    struct sockaddr_storage ss;
    if (srv->closing)
        return SQ_ECLOSED;
    if (port < 0 || port > 65535) /* uv_ip4_addr would keep the low 16 bits */
        return UV_EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return UV_EINVAL;
    sq__listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return UV_ENOMEM;
    l->srv = srv;
    int rc = uv_tcp_init_ex(srv->loop, &l->h.tcp, ss.ss_family);
    if (rc != 0) {
        free(l);
        return rc;
    }
    l->h.handle.data = l;
    sq__list_insert_tail(&srv->listeners, &l->node);
    srv->nlisteners_open++;
    if (srv->opts.reuseport) {
        /* One listener per worker loop; the kernel spreads connections among them. */
        uv_os_fd_t fd;
        int one = 1;
        rc = uv_fileno(&l->h.handle, &fd);
        if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            rc = uv_translate_sys_error(errno);
        if (rc != 0)
            goto fail;
    }
    rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, srv->opts.backlog, on_connection);
    if (rc != 0)
        goto fail;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    srv->port = l->port;
    return 0;
fail:
    sq__list_remove(&l->node);
    uv_close(&l->h.handle, on_listener_close);
    return rc;
}

int sq_server_listen_unix(sq_server_t *srv, const char *path)
{
    if (srv->closing)
        return SQ_ECLOSED;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
        return UV_ENAMETOOLONG; /* uv_pipe_bind would bind a truncated path */
    sq__listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return UV_ENOMEM;
    l->srv = srv;
    int rc = uv_pipe_init(srv->loop, &l->h.pipe, 0);
    if (rc != 0) {
        free(l);
        return rc;
    }
    l->h.handle.data = l;
    sq__list_insert_tail(&srv->listeners, &l->node);
    srv->nlisteners_open++;
    rc = uv_pipe_bind(&l->h.pipe, path);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, srv->opts.backlog, on_connection);
    if (rc != 0) {
        sq__list_remove(&l->node);
        uv_close(&l->h.handle, on_listener_close);
    }
    return rc;
}

int sq_server_port(const sq_server_t *srv)
{
    return srv->port;
}

uv_loop_t *sq_server_loop(const sq_server_t *srv)
{
    return srv->loop;
}

void sq_server_stats(const sq_server_t *srv, sq_server_stats_t *out)
{
    *out = srv->stats;
}

static void free_server(sq_server_t *srv)
{
    sq__server_pools_free(srv);
    sq__buf_free(&srv->scratch);
    free(srv->rbuf);
    free(srv);
}

static void server_part_closed(sq_server_t *srv)
{
    if (--srv->nhandles > 0)
        return;
    sq_server_close_cb cb = srv->close_cb;
    void *data = srv->close_data;
    if (cb != NULL)
        cb(srv, data);
    free_server(srv);
}

static void on_handle_close(uv_handle_t *h)
{
    server_part_closed(h->data);
}

static void on_watchdog_closed(sq_watchdog_t *wd, void *data)
{
    server_part_closed(data);
}

static void on_pool_closed(sq_work_pool_t *pool, void *data)
{
    server_part_closed(data);
}

/* Called whenever a connection, listener or exchange goes: the last one ends the server. */
void sq__server_maybe_done(sq_server_t *srv)
{
    if (!srv->closing || srv->nconns > 0 || srv->nlisteners_open > 0 || srv->live_exch > 0 ||
        uv_is_closing((uv_handle_t *)&srv->timer))
        return;
    srv->timer.data = srv;
    srv->tick.data = srv;
    if (srv->wd != NULL) {
        srv->nhandles++;
        sq_watchdog_destroy(srv->wd, on_watchdog_closed, srv);
        srv->wd = NULL;
    }
    if (srv->own_pool) {
        srv->nhandles++;
        sq_work_pool_destroy(srv->pool, on_pool_closed, srv);
        srv->pool = NULL;
    }
    uv_close((uv_handle_t *)&srv->timer, on_handle_close);
    uv_close((uv_handle_t *)&srv->tick, on_handle_close);
}

sq_watchdog_t *sq_server_watchdog(const sq_server_t *srv)
{
    return srv->wd;
}

int sq_server_destroy(sq_server_t *srv, uint64_t grace_ms, sq_server_close_cb cb, void *data)
{
    if (srv->closing)
        return SQ_ECLOSED;
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_data = data;
    sq__list_t *n = srv->listeners.next;
    while (n != &srv->listeners) {
        sq__listener_t *l = sq__container_of(n, sq__listener_t, node);
        n = n->next;
        sq__list_remove(&l->node);
        uv_close(&l->h.handle, on_listener_close);
    }
    n = srv->conns.next;
    while (n != &srv->conns) {
        sq__conn_t *c = sq__container_of(n, sq__conn_t, node);
        n = n->next;
        sq__conn_shutdown(c);
    }
    /* The grace deadline rides on the timeout timer; 0 means abort at once. */
    uint64_t now = uv_now(srv->loop);
    if (grace_ms == 0)
        grace_ms = 1;
    srv->grace_due = grace_ms > UINT64_MAX - now ? UINT64_MAX : now + grace_ms;
    sq__timer_arm(srv, srv->grace_due);
    sq__server_maybe_done(srv);
    return 0;
}
