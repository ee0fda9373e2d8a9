/* The scripted raw HTTP server of raw_http.h. */
#include "support/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RH_MAX_CONNS 256

struct rh_server {
    int lfd, port;
    rh_script_fn fn;
    void *data;
    pthread_t acceptor;
    pthread_t threads[RH_MAX_CONNS];
    rh_conn_t *conns[RH_MAX_CONNS];
    int nthreads;
    atomic_bool stop;
    atomic_int accepted, open, max_open, requests;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be readable: 1, 0 on timeout, -1 on stop. */
static int wait_readable(rh_conn_t *c, long long deadline)
{
    for (;;) {
        if (atomic_load(&c->srv->stop))
            return -1;
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, left > 50 ? 50 : (int)left);
        if (r > 0)
            return 1;
    }
}

static int fill(rh_conn_t *c, long long deadline)
{
    if (c->len == sizeof(c->buf) || wait_readable(c, deadline) != 1)
        return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

ssize_t rh_read_head(rh_conn_t *c, int timeout_ms, char *head, size_t cap)
{
    long long deadline = now_ms() + timeout_ms;
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (fill(c, deadline) != 0)
            return -1;
    size_t n = (size_t)(end - c->buf) + 4;
    if (head != NULL && cap > 0) {
        size_t k = n < cap - 1 ? n : cap - 1;
        memcpy(head, c->buf, k);
        head[k] = '\0';
    }
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    atomic_fetch_add(&c->srv->requests, 1);
    return (ssize_t)n;
}

int rh_read_body(rh_conn_t *c, size_t n, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (n > 0) {
        if (c->len == 0 && fill(c, deadline) != 0)
            return -1;
        size_t k = c->len < n ? c->len : n;
        memmove(c->buf, c->buf + k, c->len - k);
        c->len -= k;
        n -= k;
    }
    return 0;
}

int rh_send_bytes(rh_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int rh_send(rh_conn_t *c, const char *s)
{
    return rh_send_bytes(c, s, strlen(s));
}

int rh_wait_close(rh_conn_t *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        if (wait_readable(c, deadline) != 1)
            return -1;
        char tmp[4096];
        ssize_t n = recv(c->fd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            return 0;
    }
}

void rh_sleep(rh_conn_t *c, int ms)
{
    long long deadline = now_ms() + ms;
    while (!atomic_load(&c->srv->stop) && now_ms() < deadline)
        usleep(10 * 1000);
}

static void *conn_main(void *arg)
{
    rh_conn_t *c = arg;
    rh_server_t *s = c->srv;
    int open = atomic_fetch_add(&s->open, 1) + 1;
    int max = atomic_load(&s->max_open);
    while (open > max && !atomic_compare_exchange_weak(&s->max_open, &max, open))
        ;
    s->fn(c, s->data);
    atomic_fetch_sub(&s->open, 1);
    close(c->fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    rh_server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) != 1)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        if (s->nthreads == RH_MAX_CONNS) {
            close(fd);
            continue;
        }
        rh_conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->srv = s;
        c->index = atomic_fetch_add(&s->accepted, 1);
        s->conns[s->nthreads] = c;
        if (pthread_create(&s->threads[s->nthreads], NULL, conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        s->nthreads++;
    }
    return NULL;
}

rh_server_t *rh_start(const char *host, rh_script_fn fn, void *data)
{
    rh_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->fn = fn;
    s->data = data;
    bool v6 = strchr(host, ':') != NULL;
    s->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, host, &a->sin6_addr);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, host, &a->sin_addr);
        sl = sizeof(*a);
    }
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&ss, sl) != 0 || listen(s->lfd, 512) != 0)
        goto fail;
    if (getsockname(s->lfd, (struct sockaddr *)&ss, &sl) != 0)
        goto fail;
    s->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (pthread_create(&s->acceptor, NULL, accept_main, s) != 0)
        goto fail;
    return s;

fail:
    if (s->lfd >= 0)
        close(s->lfd);
    free(s);
    return NULL;
}

int rh_port(const rh_server_t *s)
{
    return s->port;
}

int rh_accepted(const rh_server_t *s)
{
    return atomic_load(&s->accepted);
}

int rh_max_open(const rh_server_t *s)
{
    return atomic_load(&s->max_open);
}

int rh_requests(const rh_server_t *s)
{
    return atomic_load(&s->requests);
}

void rh_stop(rh_server_t *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->acceptor, NULL);
    for (int i = 0; i < s->nthreads; i++) {
        pthread_join(s->threads[i], NULL);
        free(s->conns[i]);
    }
    close(s->lfd);
    free(s);
}
