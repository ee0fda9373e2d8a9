/* bench-idleconns — opens N keep-alive connections to an HTTP server, sends one request on
 * each, reads its response, then holds every connection open and idle so that a script can
 * measure what the server pays per idle connection (scripts/mem-idle.sh).
 *
 *   bench-idleconns [-h HOST] [-p PORT] [-n N] [-t PATH] [-c CONCURRENT] [-T TIMEOUT_S]
 *                   [-H HOLD_S]
 *
 * Prints "ready OPEN" on stdout once N responses have been read, then waits, idle, until
 * SIGTERM/SIGINT or HOLD_S seconds (300 by default), and prints "closed K" with the number
 * of connections the server closed meanwhile. Exits 1 when fewer than N connections could
 * be set up within TIMEOUT_S seconds (60 by default). Plain epoll, no library: the client
 * must cost the server nothing it would not pay for a real idle browser.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_SENDING, ST_READING, ST_IDLE, ST_CLOSED };

typedef struct conn {
    int fd;
    int state;
    size_t sent;     /* request bytes written */
    size_t got;      /* response bytes read into buf */
    size_t need;     /* total response bytes, once the headers are in; 0 before */
    char buf[1024];  /* one small response; bigger ones are an error for this tool */
} conn_t;

static volatile sig_atomic_t stop_requested;

static void on_stop(int signum)
{
    (void)signum;
    stop_requested = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("setrlimit");
    }
}

/* Once the headers are complete, the full response length (headers + Content-Length);
 * 0 while they are incomplete, (size_t)-1 when the response is unusable. */
static size_t response_length(const conn_t *c)
{
    const char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (end == NULL)
        return c->got >= sizeof(c->buf) ? (size_t)-1 : 0;
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->got < 12 || memcmp(c->buf, "HTTP/1.1 200", 12) != 0)
        return (size_t)-1;
    for (const char *p = c->buf; p < end; p++) {
        if (*p == '\n' && (size_t)(end - p) > 16 && strncasecmp(p + 1, "content-length:", 15) == 0)
            return head + strtoul(p + 16, NULL, 10);
    }
    return (size_t)-1; /* chunked or close-delimited: not what an idle keep-alive test wants */
}

static int open_conn(int ep, conn_t *c, const struct sockaddr_in *addr)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(c->fd);
        c->fd = -1;
        return err;
    }
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        return -errno;
    return 0;
}

/* Advances one connection; returns 1 when it became idle, 0 to keep going, -1 on failure. */
static int step(int ep, conn_t *c, const char *req, size_t req_len)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fprintf(stderr, "idleconns: connect: %s\n", strerror(err));
            return -1;
        }
        c->state = ST_SENDING;
    }
    if (c->state == ST_SENDING) {
        ssize_t n = send(c->fd, req + c->sent, req_len - c->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)n;
        if (c->sent < req_len)
            return 0;
        c->state = ST_READING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 0;
    }
    if (c->state == ST_READING) {
        for (;;) {
            ssize_t n = recv(c->fd, c->buf + c->got, sizeof(c->buf) - c->got, 0);
            if (n < 0)
                return errno == EAGAIN ? 0 : -1;
            if (n == 0) {
                fprintf(stderr, "idleconns: server closed before its response was complete\n");
                return -1;
            }
            c->got += (size_t)n;
            if (c->need == 0)
                c->need = response_length(c);
            if (c->need == (size_t)-1 || c->need > sizeof(c->buf)) {
                fprintf(stderr, "idleconns: unexpected response: %.*s\n", (int)c->got, c->buf);
                return -1;
            }
            if (c->need != 0 && c->got >= c->need)
                break;
            if (c->got == sizeof(c->buf))
                return -1;
        }
        /* Idle from now on: watch only for the server hanging up. */
        c->state = ST_IDLE;
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-idleconns [-h HOST] [-p PORT] [-n N] [-t PATH] "
                    "[-c CONCURRENT] [-T TIMEOUT_S] [-H HOLD_S]\n");
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/plaintext";
    int port = 8000, concurrent = 256;
    long n = 10000;
    double timeout_s = 60, hold_s = 300;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:t:c:T:H:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 't': path = optarg; break;
        case 'c': concurrent = atoi(optarg); break;
        case 'T': timeout_s = atof(optarg); break;
        case 'H': hold_s = atof(optarg); break;
        default: usage(); return 2;
        }
    }
    if (n <= 0 || concurrent <= 0 || port <= 0 || port > 65535) {
        usage();
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "idleconns: %s: not an IPv4 address\n", host);
        return 2;
    }
    raise_nofile();
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char req[512];
    int req_len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path,
                           host, port);
    if (req_len <= 0 || (size_t)req_len >= sizeof(req)) {
        fprintf(stderr, "idleconns: path too long\n");
        return 2;
    }

    conn_t *conns = calloc((size_t)n, sizeof(*conns));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || ep < 0) {
        perror("idleconns");
        return 1;
    }
    struct epoll_event events[256];
    long opened = 0, idle = 0, in_flight = 0;
    double deadline = now_s() + timeout_s;

    /* Phase 1: at most `concurrent` connections between connect() and their response, so
     * the server's listen backlog never overflows. */
    while (idle < n && !stop_requested) {
        while (opened < n && in_flight < concurrent) {
            int rc = open_conn(ep, &conns[opened], &addr);
            if (rc != 0) {
                fprintf(stderr, "idleconns: connection %ld: %s\n", opened, strerror(-rc));
                goto fail;
            }
            opened++;
            in_flight++;
        }
        if (now_s() > deadline) {
            fprintf(stderr, "idleconns: timed out with %ld of %ld connections idle\n", idle, n);
            goto fail;
        }
        int k = epoll_wait(ep, events, 256, 100);
        if (k < 0 && errno != EINTR) {
            perror("epoll_wait");
            goto fail;
        }
        for (int i = 0; i < k; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->state == ST_IDLE) {
                fprintf(stderr, "idleconns: server closed an idle connection during set-up\n");
                goto fail;
            }
            int rc = step(ep, c, req, (size_t)req_len);
            if (rc < 0)
                goto fail;
            if (rc == 1) {
                idle++;
                in_flight--;
            }
        }
    }
    if (stop_requested)
        goto fail;
    printf("ready %ld\n", idle);
    fflush(stdout);

    /* Phase 2: hold, idle. Count connections the server hangs up on meanwhile. */
    long closed = 0;
    double hold_until = now_s() + hold_s;
    while (!stop_requested && now_s() < hold_until) {
        int k = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < k; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->state != ST_CLOSED) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                c->state = ST_CLOSED;
                closed++;
            }
        }
    }
    printf("closed %ld\n", closed);
    fflush(stdout);
    for (long i = 0; i < opened; i++)
        close(conns[i].fd);
    close(ep);
    free(conns);
    return 0;

fail:
    for (long i = 0; i < opened; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    close(ep);
    free(conns);
    return 1;
}
