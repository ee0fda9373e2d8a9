/* The server's transport: listeners on the caller's loop, the registry of connections,
 * shutdown. sq_server_create and the options are HTTP's (lib/http/server.c). */
#include <netdb.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/abi.h"
#include "server/server_int.h"

/* The transport's part of a new server: registries, timeout lists, the read buffer, the
 * timer and the tick. Called by sq_server_create (lib/http/server.c) once srv->loop and
 * srv->opts are set. Returns 0 or UV_ENOMEM (nothing to undo then). */
int sq__server_init(sq_server_t *srv)
{
    sq__list_init(&srv->listeners);
    srv->ticks_tail = &srv->ticks;
    for (int i = 0; i < SQ__TQ_COUNT; i++)
        sq__list_init(&srv->tq[i]);
    srv->tq_timeout[SQ__TQ_HEAD] = srv->opts.header_timeout_ms;
    srv->tq_timeout[SQ__TQ_BODY] = srv->opts.body_timeout_ms;
    srv->tq_timeout[SQ__TQ_IDLE] = srv->opts.idle_timeout_ms;
    srv->tq_timeout[SQ__TQ_LINGER] = 2000;
    srv->rbuf_cap = 64 * 1024;
    srv->rbuf = malloc(srv->rbuf_cap);
    if (srv->rbuf == NULL)
        return UV_ENOMEM;
    if (sq__server_tls_init(srv) != 0) {
        free(srv->rbuf);
        return UV_ENOMEM;
    }
    uv_timer_init(srv->loop, &srv->timer);
    sq__tick_init(srv);
    srv->nhandles = 4; /* the timer and the tick's three */
    srv->port = UV_EINVAL;
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

/* Binds and listens on one TCP address; on success *out is in srv->listeners. */
static int listen_tcp(sq_server_t *srv, const struct sockaddr *sa, unsigned flags,
                      sq__listener_t **out)
{
    sq__listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return UV_ENOMEM;
    l->srv = srv;
    int rc = uv_tcp_init_ex(srv->loop, &l->h.tcp, sa->sa_family);
    if (rc != 0) { /* UV_EAFNOSUPPORT: a kernel without that family */
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
    rc = uv_tcp_bind(&l->h.tcp, sa, flags);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, srv->opts.backlog, on_connection);
    if (rc != 0)
        goto fail;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *out = l;
    return 0;
fail:
    sq__list_remove(&l->node);
    uv_close(&l->h.handle, on_listener_close);
    return rc;
}

/* The first listener: the server starts serving, and its watchdog starts measuring (what
 * held the loop before, a slow set-up or a host name lookup, is no stall). */
static void listening(sq_server_t *srv, bool first)
{
    if (first && srv->on_listen != NULL)
        srv->on_listen(srv);
}

static bool same_addr(const struct addrinfo *a, const struct addrinfo *b)
{
    return a->ai_addrlen == b->ai_addrlen && memcmp(a->ai_addr, b->ai_addr, a->ai_addrlen) == 0;
}

/* Every IPv4 and IPv6 address of `list` on `port`, as asyncio's create_server binds the
 * addresses a host name resolves to: port 0 is chosen by the first bind and reused for
 * the others; with several addresses, an IPv6 socket is IPv6-only (IPV6_V6ONLY), so it
 * leaves the IPv4 ones to their own sockets. An address the machine lacks (its family is
 * not supported, or no interface has it: ::1 on a host without IPv6) is skipped when
 * another binds; any other error fails the call, closing what it had bound.
 * tests/test_startup.c (suite listen) calls it with lists of its own. */
int sq__server_listen_ai(sq_server_t *srv, const struct addrinfo *list, int port)
{
    if (srv->closing)
        return SQ_ECLOSED;
    bool first = sq__list_empty(&srv->listeners);
    sq__list_t *mark = srv->listeners.prev; /* listeners after it are this call's */
    unsigned naddrs = 0;
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next)
        naddrs += ai->ai_family == AF_INET || ai->ai_family == AF_INET6;
    int rc = UV_EAI_ADDRFAMILY, skipped = 0, bound = 0;
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        const struct addrinfo *prev = list;
        while (prev != ai && !same_addr(prev, ai)) /* /etc/hosts may name one twice */
            prev = prev->ai_next;
        if (prev != ai)
            continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen < sizeof(ss) ? ai->ai_addrlen : sizeof(ss));
        if (ai->ai_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        sq__listener_t *l;
        unsigned flags = naddrs > 1 && ai->ai_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
        int err = listen_tcp(srv, (struct sockaddr *)&ss, flags, &l);
        if (err == 0) {
            bound++;
            port = l->port;
            continue;
        }
        if (err != UV_EAFNOSUPPORT && err != UV_EADDRNOTAVAIL) {
            rc = err;
            goto fail;
        }
        char name[64] = "?";
        uv_ip_name((struct sockaddr *)&ss, name, sizeof(name));
        sq_log(SQ_LOG_INFO, "listen: %s skipped: %s", name, uv_strerror(err));
        if (skipped++ == 0)
            rc = err;
    }
    if (bound == 0)
        goto fail;
    srv->port = port;
    listening(srv, first);
    return 0;
fail:
    while (mark->next != &srv->listeners) {
        sq__listener_t *l = sq__container_of(mark->next, sq__listener_t, node);
        sq__list_remove(&l->node);
        uv_close(&l->h.handle, on_listener_close);
    }
    return rc;
}

int sq_server_listen(sq_server_t *srv, const char *host, int port)
{
    if (srv->closing)
        return SQ_ECLOSED;
    if (host == NULL || *host == '\0' || port < 0 || port > 65535)
        return UV_EINVAL; /* uv_ip4_addr would keep the low 16 bits of a port */
    /* A numeric address needs no lookup, and binds as written ("::" takes IPv4 too). */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct addrinfo one = {.ai_socktype = SOCK_STREAM, .ai_addr = (struct sockaddr *)&ss};
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0) {
        one.ai_family = AF_INET;
        one.ai_addrlen = sizeof(struct sockaddr_in);
        return sq__server_listen_ai(srv, &one, port);
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        one.ai_family = AF_INET6;
        one.ai_addrlen = sizeof(struct sockaddr_in6);
        return sq__server_listen_ai(srv, &one, port);
    }
    /* A name: getaddrinfo(3) at start-up, blocking this thread, as every server does. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    uv_getaddrinfo_t req;
    int rc = uv_getaddrinfo(srv->loop, &req, NULL, host, NULL, &hints);
    if (rc != 0)
        return rc;
    rc = sq__server_listen_ai(srv, req.addrinfo, port);
    uv_freeaddrinfo(req.addrinfo);
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
    bool first = sq__list_empty(&srv->listeners);
    sq__list_insert_tail(&srv->listeners, &l->node);
    srv->nlisteners_open++;
    rc = uv_pipe_bind(&l->h.pipe, path);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, srv->opts.backlog, on_connection);
    if (rc != 0) {
        sq__list_remove(&l->node);
        uv_close(&l->h.handle, on_listener_close);
        return rc;
    }
    listening(srv, first);
    return 0;
}

int sq_server_port(const sq_server_t *srv)
{
    return srv->port;
}

uv_loop_t *sq_server_loop(const sq_server_t *srv)
{
    return srv->loop;
}

void sq_server_stats_sized(const sq_server_t *srv, sq_server_stats_t *out, size_t size)
{
    sq_server_stats_t st = srv->stats;
    st.size = sizeof(st);
    SQ__STATS_OUT(out, size, &st); /* only what the caller's header has room for */
}

static void free_server(sq_server_t *srv)
{
    if (srv->on_free != NULL)
        srv->on_free(srv); /* what the protocols pooled */
    sq__wq_pool_free(srv);
    sq__slab_free(srv);
    sq__server_tls_free(srv);
    free(srv->rbuf);
    free(srv);
}

void sq__server_part_closed(sq_server_t *srv)
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
    sq__server_part_closed(h->data);
}

/* Called whenever a connection, listener or exchange goes: the last one ends the server. */
void sq__server_maybe_done(sq_server_t *srv)
{
    if (!srv->closing || srv->nconns > 0 || srv->nlisteners_open > 0 || srv->holds > 0 ||
        uv_is_closing((uv_handle_t *)&srv->timer))
        return;
    srv->timer.data = srv;
    if (srv->on_closing != NULL)
        srv->nhandles += srv->on_closing(srv);
    uv_close((uv_handle_t *)&srv->timer, on_handle_close);
    sq__tick_close(srv, on_handle_close);
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
    sq__conns_each(srv, sq__conn_shutdown);
    /* The grace deadline rides on the timeout timer; 0 means abort at once. */
    uint64_t now = uv_now(srv->loop);
    if (grace_ms == 0)
        grace_ms = 1;
    srv->grace_due = grace_ms > UINT64_MAX - now ? UINT64_MAX : now + grace_ms;
    sq__timer_arm(srv, srv->grace_due);
    if (srv->opts.on_shutdown != NULL) {
        srv->shutdown_due = true;
        srv->holds++; /* the server stays until on_shutdown has run (tick_run) */
        sq__tick_wake(srv);
    }
    sq__server_maybe_done(srv);
    return 0;
}
