/* bench-soak — the clients of scripts/soak.sh: connections that churn, stall, never read,
 * fill the server's descriptor table, half-close, reset or vanish. Plain sockets and
 * poll(2), no library: each client misbehaves exactly as written here.
 *
 *   bench-soak MODE -p PORT [options]
 *
 *   churn  -n N [-t THREADS] [-S SOURCES]
 *          N connections, in a cycle of 16, half of them ended by a reset (SO_LINGER 0):
 *          2 closed and 2 reset with no request, 4 closed and 4 reset after one answered
 *          GET, 1 closed and 1 reset with the headers half sent, 1 reset right after a
 *          WebSocket upgrade request (before the 101), 1 closed after the 101. Source
 *          addresses 127.0.0.2 ...
 *          127.0.0.(1+SOURCES) in turn, so TIME_WAIT does not use up one address's ports.
 *   slow   -n N --body [-i MS] [-m SECONDS]
 *          N connections that send a byte every MS ms (1000): of a request head that never
 *          ends, or (--body) of a 1,000,000-byte body after a whole head. Each ends when
 *          the server closes it; after SECONDS (60) the rest count as still open.
 *   stuck  -n N [--path P] [-P PIPELINE] [--ws] [-H SECONDS]
 *          N connections that send PIPELINE GETs of P (/) and never read; or, with --ws,
 *          a WebSocket echo (/ws/echo) that sends 16 KiB messages as fast as the server
 *          takes them and never reads. Held SECONDS (10), then reset.
 *   fdfill [-n MAX]
 *          opens keep-alive connections (one GET /plaintext answered on each) until one is
 *          not served within 1 s, at most MAX (1000), prints "full SERVED", then takes commands on stdin,
 *          one a line, each answered by one line: "press S" (S seconds of new connection
 *          attempts, 20 a second), "check" (a GET on every held connection), "close K"
 *          (reset K of them), "new K" (K new connections served, 5 s each), "quit".
 *   fault  --kind halfclose|pipereset|vanish|bigreset -n N [--path P]
 *          halfclose: a request (or three pipelined) then shutdown(SHUT_WR): the answers
 *          must arrive. pipereset: 64 pipelined GETs of P (a large answer) and half of
 *          another on a 4 KiB receive buffer, the first answer's head read, then a reset
 *          while the server is still writing the batch. vanish: N requests for GET /sleep?ms=300 at once, all reset
 *          50 ms later. bigreset: GET P (a large answer) with a 4 KiB receive buffer,
 *          4 KiB of it read, then a reset while the server is still writing. Both wait
 *          --pause-ms MS (20) between the read and the reset.
 *   longpoll -n N [--room R] [--rate R] [-d SECONDS]
 *          the chat's long poll (docs/chat.md): N clients, each on its keep-alive
 *          connection, join room R (soak) with a plain poll, then loop on
 *          GET /rooms/R/messages?since=CURSOR&wait=2; once all have joined a publisher
 *          POSTs a message RATE times a second (50) for SECONDS (10). Each client must get
 *          every message posted after it joined, once, in id order. Prints what was lost,
 *          doubled or out of order, client errors, and the delivery latency (from the
 *          POST's send to the answer that carried it) p50/p99/max.
 *
 * Each mode prints one line of key=value figures on stdout (fdfill: one per command) and
 * exits 0; 1 when the server cannot be reached; 2 on a bad flag. Whether a figure is
 * good is the script's call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

typedef struct opts {
    int port;
    unsigned n;
    unsigned threads;
    unsigned sources; /* 0: no bind before connect */
    unsigned interval_ms;
    unsigned max_s;
    unsigned pipeline;
    unsigned hold_s;
    unsigned pause_ms;
    unsigned rate;
    unsigned duration_s;
    bool body, ws;
    const char *path;
    const char *kind;
    const char *room;
} opts_t;

static opts_t g = {.n = 1000, .threads = 2, .sources = 16, .interval_ms = 1000, .max_s = 60,
                   .pipeline = 8, .hold_s = 10, .pause_ms = 20, .rate = 50,
                   .duration_s = 10, .path = "/", .room = "soak"};

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
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* A connected socket to 127.0.0.1:port, blocking, from 127.0.0.(2 + k % sources) when
 * sources > 0 (the port is picked at connect, IP_BIND_ADDRESS_NO_PORT, so the kernel may
 * reuse a TIME_WAIT one). Returns the fd, or -errno. */
static int conn_open(unsigned k, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect too */
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (g.sources > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + k % g.sources);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            int err = -errno;
            close(fd);
            return err;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Closes with a reset: SO_LINGER 0 (RFC 9293 §3.10.4's ABORT). */
static void close_rst(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Waits up to ms for fd to be readable; 1 readable, 0 timeout. */
static int wait_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    while ((rc = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return rc > 0;
}

/* Reads one HTTP/1.1 response (Content-Length framed; a 101 is its head) within ms.
 * Returns its status, -1 when the connection ended first, -2 on timeout, -3 when it is
 * not HTTP or larger than the buffer. `extra` gets bytes read past it (may be NULL). */
static int read_response(int fd, int ms, char *buf, size_t cap, size_t *extra)
{
    size_t got = 0, need = 0;
    double deadline = now_s() + ms / 1000.0;
    for (;;) {
        if (need != 0 && got >= need)
            break;
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0 || !wait_readable(fd, left))
            return -2;
        if (got == cap)
            return -3;
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
        if (need != 0)
            continue;
        const char *end = memmem(buf, got, "\r\n\r\n", 4);
        if (end == NULL)
            continue;
        if (got < 12 || memcmp(buf, "HTTP/1.1 ", 9) != 0)
            return -3;
        need = (size_t)(end - buf) + 4;
        for (const char *p = buf; p < end; p++)
            if (*p == '\n' && (size_t)(end - p) > 16 &&
                strncasecmp(p + 1, "content-length:", 15) == 0)
                need += strtoul(p + 16, NULL, 10);
    }
    if (extra != NULL)
        *extra = got - need;
    return atoi(buf + 9);
}

static const char get_plain[] = "GET /plaintext HTTP/1.1\r\nHost: soak\r\n\r\n";
static const char get_half[] = "GET /plaintext HTTP/1.1\r\nHost: soak\r\nUser-Agent: bench-so";
static const char upgrade_req[] = "GET /ws/echo HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/* ---- churn ----------------------------------------------------------------------- */

enum {
    K_NONE,
    K_NONE_RST,
    K_ONE,
    K_ONE_RST,
    K_HALF,
    K_HALF_RST,
    K_UP_BEFORE,
    K_UP_AFTER,
    K_COUNT
};
static const char *const kind_names[K_COUNT] = {"none", "none_rst", "one",       "one_rst",
                                                "half", "half_rst", "up_before", "up_after"};

typedef struct churn {
    unsigned next; /* the next connection's number (atomic) */
    unsigned done[K_COUNT];
    unsigned err_connect, err_answer;
    int last_errno;
} churn_t;

static churn_t churn_st;

static int churn_kind(unsigned k)
{
    /* 8 of 16 end by a reset: none_rst 2, one_rst 4, half_rst 1, up_before 1 */
    static const int cycle[16] = {K_NONE,     K_NONE_RST, K_ONE,     K_ONE_RST,
                                  K_ONE,      K_ONE_RST,  K_HALF,    K_HALF_RST,
                                  K_NONE,     K_NONE_RST, K_ONE,     K_ONE_RST,
                                  K_ONE,      K_ONE_RST,  K_UP_BEFORE, K_UP_AFTER};
    return cycle[k % 16];
}

/* One connection of the cycle; returns 0, or -1 when it failed (counted). */
static int churn_one(unsigned k)
{
    char buf[4096];
    int kind = churn_kind(k);
    int fd = conn_open(k, 0);
    if (fd < 0) {
        __atomic_fetch_add(&churn_st.err_connect, 1, __ATOMIC_RELAXED);
        churn_st.last_errno = -fd;
        return -1;
    }
    int rc = 0, st;
    switch (kind) {
    case K_NONE:
        close(fd);
        break;
    case K_NONE_RST:
        close_rst(fd);
        break;
    case K_ONE:
    case K_ONE_RST:
        st = send_all(fd, get_plain, sizeof(get_plain) - 1) == 0
                 ? read_response(fd, 5000, buf, sizeof(buf), NULL)
                 : -1;
        if (st != 200)
            rc = -1;
        if (kind == K_ONE)
            close(fd);
        else
            close_rst(fd);
        break;
    case K_HALF:
    case K_HALF_RST:
        if (send_all(fd, get_half, sizeof(get_half) - 1) != 0)
            rc = -1;
        if (kind == K_HALF)
            close(fd);
        else
            close_rst(fd);
        break;
    case K_UP_BEFORE:
        if (send_all(fd, upgrade_req, sizeof(upgrade_req) - 1) != 0)
            rc = -1;
        close_rst(fd);
        break;
    case K_UP_AFTER:
        st = send_all(fd, upgrade_req, sizeof(upgrade_req) - 1) == 0
                 ? read_response(fd, 5000, buf, sizeof(buf), NULL)
                 : -1;
        if (st != 101)
            rc = -1;
        close(fd); /* no close frame: gone */
        break;
    }
    if (rc != 0)
        __atomic_fetch_add(&churn_st.err_answer, 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&churn_st.done[kind], 1, __ATOMIC_RELAXED);
    return rc;
}

static void *churn_thread(void *arg)
{
    (void)arg;
    for (;;) {
        unsigned k = __atomic_fetch_add(&churn_st.next, 1, __ATOMIC_RELAXED);
        if (k >= g.n)
            break;
        churn_one(k);
    }
    return NULL;
}

static int run_churn(void)
{
    pthread_t th[64];
    unsigned nt = g.threads > 64 ? 64 : g.threads;
    double t0 = now_s();
    for (unsigned i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, churn_thread, NULL);
    for (unsigned i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    printf("connections=%u seconds=%.1f", g.n, dt);
    for (int k = 0; k < K_COUNT; k++)
        printf(" %s=%u", kind_names[k], churn_st.done[k]);
    printf(" err_connect=%u err_answer=%u", churn_st.err_connect, churn_st.err_answer);
    if (churn_st.err_connect > 0)
        printf(" connect_error=%s", strerror(churn_st.last_errno));
    printf("\n");
    return churn_st.err_connect == g.n ? 1 : 0;
}

/* ---- slow ------------------------------------------------------------------------ */

typedef struct slow_conn {
    int fd;
    double start, closed; /* closed: 0 while open */
    int status;           /* the status of an answer, 0 before one */
} slow_conn_t;

static int run_slow(void)
{
    static const char head_body[] = "POST /echo HTTP/1.1\r\nHost: soak\r\n"
                                    "Content-Type: application/octet-stream\r\n"
                                    "Content-Length: 1000000\r\n\r\n";
    static const char head_prefix[] = "GET /plaintext HTTP/1.1\r\nHost: soak\r\nX-Slow: ";
    slow_conn_t *c = calloc(g.n, sizeof(*c));
    struct pollfd *pf = calloc(g.n, sizeof(*pf));
    unsigned *idx = calloc(g.n, sizeof(*idx)); /* pf[j] is c[idx[j]] */
    if (c == NULL || pf == NULL || idx == NULL)
        return 1;
    unsigned opened = 0;
    for (unsigned i = 0; i < g.n; i++) {
        c[i].fd = conn_open(i, 0);
        if (c[i].fd < 0) {
            fprintf(stderr, "bench-soak: connect: %s\n", strerror(-c[i].fd));
            break;
        }
        opened++;
        c[i].start = now_s();
        /* head: the first bytes now, then one a tick; body: the whole head now */
        if (g.body)
            send_all(c[i].fd, head_body, sizeof(head_body) - 1);
        else
            send_all(c[i].fd, head_prefix, sizeof(head_prefix) - 1);
        c[i].start = now_s();
    }
    if (opened == 0)
        return 1;
    double t0 = now_s(), next_tick = t0 + g.interval_ms / 1000.0;
    unsigned open_now = opened;
    uint64_t bytes = 0;
    while (open_now > 0 && now_s() - t0 < g.max_s) {
        double t = now_s();
        if (t >= next_tick) {
            next_tick += g.interval_ms / 1000.0;
            for (unsigned i = 0; i < opened; i++) {
                if (c[i].closed != 0)
                    continue;
                char b = g.body ? 'b' : 'a';
                ssize_t n = send(c[i].fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n == 1)
                    bytes++;
                else if (n < 0 && errno != EAGAIN) {
                    c[i].closed = now_s();
                    open_now--;
                }
            }
        }
        unsigned np = 0;
        for (unsigned i = 0; i < opened; i++) {
            if (c[i].closed != 0)
                continue;
            pf[np] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
            idx[np++] = i;
        }
        int ms = (int)((next_tick - now_s()) * 1000) + 1;
        if (poll(pf, np, ms < 1 ? 1 : ms) > 0) {
            for (unsigned j = 0; j < np; j++) {
                if (pf[j].revents == 0)
                    continue;
                slow_conn_t *s = &c[idx[j]];
                char buf[512];
                ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n > 0) {
                    if (s->status == 0 && n >= 12 && memcmp(buf, "HTTP/1.1 ", 9) == 0)
                        s->status = atoi(buf + 9);
                    continue;
                }
                if (n < 0 && errno == EAGAIN)
                    continue;
                s->closed = now_s();
                open_now--;
            }
        }
    }
    unsigned closed = 0, s408 = 0, other = 0;
    double tmin = 1e9, tmax = 0;
    for (unsigned i = 0; i < opened; i++) {
        if (c[i].status == 408)
            s408++;
        else if (c[i].status != 0)
            other++;
        if (c[i].closed == 0)
            continue;
        closed++;
        double d = c[i].closed - c[i].start;
        tmin = d < tmin ? d : tmin;
        tmax = d > tmax ? d : tmax;
    }
    printf("opened=%u closed=%u status_408=%u status_other=%u close_min_s=%.2f "
           "close_max_s=%.2f bytes_sent=%llu\n",
           opened, closed, s408, other, closed ? tmin : 0.0, tmax, (unsigned long long)bytes);
    for (unsigned i = 0; i < opened; i++)
        close_rst(c[i].fd);
    free(c);
    free(pf);
    free(idx);
    return 0;
}

/* ---- stuck ----------------------------------------------------------------------- */

/* A masked client frame (RFC 6455 §5.2, §5.3: a client masks every frame) of len bytes;
 * the key is 0, so the payload goes as is. Returns the frame's length. */
static size_t ws_frame(char *out, const char *payload, size_t len)
{
    size_t h = 0;
    out[h++] = (char)0x82; /* FIN, binary */
    if (len < 126) {
        out[h++] = (char)(0x80 | len);
    } else {
        out[h++] = (char)(0x80 | 126);
        out[h++] = (char)(len >> 8);
        out[h++] = (char)(len & 0xff);
    }
    memset(out + h, 0, 4);
    h += 4;
    memcpy(out + h, payload, len);
    return h + len;
}

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    return ti.tcpi_state;
}

static int run_stuck(void)
{
    int *fds = calloc(g.n, sizeof(*fds));
    double *dropped = calloc(g.n, sizeof(*dropped));
    uint64_t *sent = calloc(g.n, sizeof(*sent));
    if (fds == NULL || dropped == NULL || sent == NULL)
        return 1;
    char req[1024];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: soak\r\n\r\n", g.path);
    unsigned opened = 0, upgraded = 0;
    for (unsigned i = 0; i < g.n; i++) {
        /* a small receive window: the server's answer stops moving sooner */
        fds[i] = conn_open(i, 4096);
        if (fds[i] < 0) {
            fprintf(stderr, "bench-soak: connect: %s\n", strerror(-fds[i]));
            break;
        }
        opened++;
        if (g.ws) {
            char buf[1024];
            if (send_all(fds[i], upgrade_req, sizeof(upgrade_req) - 1) == 0 &&
                read_response(fds[i], 5000, buf, sizeof(buf), NULL) == 101)
                upgraded++;
            continue;
        }
        for (unsigned p = 0; p < g.pipeline; p++)
            send_all(fds[i], req, (size_t)rl);
    }
    if (opened == 0)
        return 1;
    double t0 = now_s();
    if (g.ws) {
        static char payload[16384], frame[16384 + 16];
        memset(payload, 'w', sizeof(payload));
        size_t flen = ws_frame(frame, payload, sizeof(payload));
        size_t *off = calloc(opened, sizeof(*off)); /* into the frame being sent */
        struct pollfd *pf = calloc(opened, sizeof(*pf));
        while (now_s() - t0 < g.hold_s) {
            unsigned np = 0;
            for (unsigned i = 0; i < opened; i++) {
                if (dropped[i] != 0)
                    continue;
                for (;;) {
                    ssize_t n = send(fds[i], frame + off[i], flen - off[i],
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
                    if (n < 0) {
                        if (errno != EAGAIN)
                            dropped[i] = now_s();
                        break;
                    }
                    sent[i] += (uint64_t)n;
                    off[i] = (off[i] + (size_t)n) % flen;
                }
                if (dropped[i] == 0)
                    pf[np++] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
            }
            if (np == 0)
                break;
            poll(pf, np, 100);
        }
        free(off);
        free(pf);
    } else {
        while (now_s() - t0 < g.hold_s)
            usleep(100000);
    }
    unsigned ndropped = 0, closed_state = 0;
    uint64_t total = 0, most = 0;
    double tmax = 0;
    for (unsigned i = 0; i < opened; i++) {
        total += sent[i];
        most = sent[i] > most ? sent[i] : most;
        if (dropped[i] != 0) {
            ndropped++;
            tmax = dropped[i] - t0 > tmax ? dropped[i] - t0 : tmax;
        }
        int st = tcp_state(fds[i]);
        if (st != TCP_ESTABLISHED)
            closed_state++;
        close_rst(fds[i]);
    }
    if (g.ws)
        printf("opened=%u upgraded=%u dropped=%u drop_max_s=%.2f bytes_sent=%llu "
               "most_on_one=%llu\n",
               opened, upgraded, ndropped, tmax, (unsigned long long)total,
               (unsigned long long)most);
    else
        printf("opened=%u requests=%u not_established=%u\n", opened, opened * g.pipeline,
               closed_state);
    free(fds);
    free(dropped);
    free(sent);
    return 0;
}

/* ---- fdfill ---------------------------------------------------------------------- */

/* A new connection served one GET within ms: its fd (kept open), or -1 (closed). */
static int open_served(unsigned k, int ms)
{
    char buf[4096];
    int fd = conn_open(k, 0);
    if (fd < 0)
        return -1;
    if (send_all(fd, get_plain, sizeof(get_plain) - 1) != 0 ||
        read_response(fd, ms, buf, sizeof(buf), NULL) != 200) {
        close_rst(fd);
        return -1;
    }
    return fd;
}

static int run_fdfill(void)
{
    unsigned max = g.n, held = 0, k = 0;
    int *fds = calloc(max, sizeof(*fds));
    if (fds == NULL)
        return 1;
    while (held < max) {
        int fd = open_served(k++, 1000);
        if (fd < 0)
            break;
        fds[held++] = fd;
    }
    printf("full served=%u capped=%d\n", held, held == max);
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof(line), stdin) != NULL) {
        unsigned arg = 0;
        if (sscanf(line, "press %u", &arg) == 1) {
            /* new attempts 20 a second: each gets its answer or its close within 200 ms;
             * the unanswered ones stay open (waiting in the accept queue) until the end */
            unsigned served = 0, refused = 0, waiting = 0;
            int pend[128];
            unsigned npend = 0;
            double t0 = now_s();
            while (now_s() - t0 < arg) {
                char buf[4096];
                int fd = conn_open(k++, 0);
                if (fd < 0) {
                    refused++;
                } else if (send_all(fd, get_plain, sizeof(get_plain) - 1) != 0) {
                    refused++;
                    close_rst(fd);
                } else {
                    int st = read_response(fd, 200, buf, sizeof(buf), NULL);
                    if (st == 200)
                        served++;
                    else if (st == -2 && npend < 128)
                        pend[npend++] = fd, waiting++;
                    else
                        refused++;
                    if (st != -2 || npend == 128)
                        close_rst(fd);
                }
                usleep(50000);
            }
            for (unsigned i = 0; i < npend; i++)
                close_rst(pend[i]);
            printf("press served=%u closed=%u waiting=%u\n", served, refused, waiting);
        } else if (strncmp(line, "check", 5) == 0) {
            unsigned ok = 0;
            char buf[4096];
            for (unsigned i = 0; i < held; i++)
                send_all(fds[i], get_plain, sizeof(get_plain) - 1);
            for (unsigned i = 0; i < held; i++)
                if (read_response(fds[i], 3000, buf, sizeof(buf), NULL) == 200)
                    ok++;
            printf("check answered=%u of=%u\n", ok, held);
        } else if (sscanf(line, "close %u", &arg) == 1) {
            unsigned n = arg < held ? arg : held;
            for (unsigned i = 0; i < n; i++)
                close_rst(fds[--held]);
            printf("close closed=%u held=%u\n", n, held);
        } else if (sscanf(line, "new %u", &arg) == 1) {
            unsigned ok = 0;
            for (unsigned i = 0; i < arg; i++) {
                double t0 = now_s();
                int fd = -1;
                while (fd < 0 && now_s() - t0 < 5) {
                    fd = open_served(k++, 1000);
                    if (fd < 0)
                        usleep(50000);
                }
                if (fd < 0)
                    continue;
                ok++;
                if (held < max)
                    fds[held++] = fd;
                else
                    close_rst(fd);
            }
            printf("new served=%u of=%u\n", ok, arg);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            printf("unknown command\n");
        }
        fflush(stdout);
    }
    for (unsigned i = 0; i < held; i++)
        close_rst(fds[i]);
    free(fds);
    return 0;
}

/* ---- fault ----------------------------------------------------------------------- */

static int fault_halfclose(void)
{
    unsigned ok = 0, answers = 0, want = 0;
    char buf[8192];
    for (unsigned i = 0; i < g.n; i++) {
        unsigned nreq = i % 2 ? 3 : 1;
        want += nreq;
        int fd = conn_open(i, 0);
        if (fd < 0)
            continue;
        for (unsigned r = 0; r < nreq; r++)
            send_all(fd, get_plain, sizeof(get_plain) - 1);
        shutdown(fd, SHUT_WR); /* RFC 9112 §9.6: the answers still come */
        unsigned got = 0;
        /* one read_response per answer: pipelined ones may share a recv, so parse from a
         * stream of what arrived */
        size_t have = 0;
        double deadline = now_s() + 5;
        while (now_s() < deadline && have < sizeof(buf)) {
            if (!wait_readable(fd, 500))
                continue;
            ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
            if (n <= 0)
                break;
            have += (size_t)n;
        }
        for (const char *p = buf; (p = memmem(p, have - (size_t)(p - buf), "HTTP/1.1 200", 12));
             p += 12)
            got++;
        answers += got;
        if (got == nreq)
            ok++;
        close(fd);
    }
    printf("connections=%u ok=%u answers=%u of=%u\n", g.n, ok, answers, want);
    return 0;
}

/* 64 pipelined GETs of P (a large answer: 1.7 MB for the bundle) and half of a 65th, on a
 * 4 KiB receive buffer: the first 4 KiB read (the head of the first answer), then,
 * pause_ms later, a reset. The batch is about 110 MB and the window takes a few KiB, so
 * the reset lands while the server is still writing it: `ss -tn` in a 2 s pause showed
 * the server's Send-Q at 2,797,568 bytes (the first answer and part of the second in the
 * kernel's buffer), the client's Recv-Q at 6,144, and the other answers not yet written. */
static int fault_pipereset(void)
{
    char req[1024];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: soak\r\n\r\n", g.path);
    if (rl <= 0 || (size_t)rl >= sizeof(req))
        return 2;
    size_t cap = 64 * (size_t)rl + sizeof(get_half), len = 0;
    char *batch = malloc(cap);
    if (batch == NULL)
        return 1;
    for (int r = 0; r < 64; r++) {
        memcpy(batch + len, req, (size_t)rl);
        len += (size_t)rl;
    }
    memcpy(batch + len, get_half, sizeof(get_half) - 1);
    len += sizeof(get_half) - 1;
    unsigned started = 0, opened = 0;
    for (unsigned i = 0; i < g.n; i++) {
        char buf[4096];
        int fd = conn_open(i, 4096);
        if (fd < 0)
            continue;
        opened++;
        send_all(fd, batch, len);
        if (wait_readable(fd, 3000) && recv(fd, buf, sizeof(buf), 0) >= 12 &&
            memcmp(buf, "HTTP/1.1 200", 12) == 0)
            started++;
        usleep(g.pause_ms * 1000); /* the server fills the window and waits to write more */
        close_rst(fd);             /* in the middle of the batch */
    }
    free(batch);
    printf("connections=%u opened=%u answers_started=%u\n", g.n, opened, started);
    return opened == 0 ? 1 : 0;
}

static int fault_vanish(void)
{
    int *fds = calloc(g.n, sizeof(*fds));
    if (fds == NULL)
        return 1;
    static const char req[] = "GET /sleep?ms=300 HTTP/1.1\r\nHost: soak\r\n\r\n";
    unsigned sent = 0;
    for (unsigned i = 0; i < g.n; i++) {
        fds[i] = conn_open(i, 0);
        if (fds[i] >= 0 && send_all(fds[i], req, sizeof(req) - 1) == 0)
            sent++;
    }
    usleep(50000);
    for (unsigned i = 0; i < g.n; i++) {
        if (fds[i] < 0)
            continue;
        if (i % 2)
            close_rst(fds[i]);
        else
            close(fds[i]);
    }
    free(fds);
    printf("connections=%u requests=%u\n", g.n, sent);
    return 0;
}

static int fault_bigreset(void)
{
    char req[1024];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: soak\r\n\r\n", g.path);
    unsigned started = 0;
    for (unsigned i = 0; i < g.n; i++) {
        char buf[4096];
        int fd = conn_open(i, 4096);
        if (fd < 0)
            continue;
        send_all(fd, req, (size_t)rl);
        if (wait_readable(fd, 3000) && recv(fd, buf, sizeof(buf), 0) > 0 &&
            memcmp(buf, "HTTP/1.1 200", 12) == 0)
            started++;
        usleep(g.pause_ms * 1000); /* the server fills the window and waits to write more */
        close_rst(fd);
    }
    printf("connections=%u answers_started=%u\n", g.n, started);
    return 0;
}

/* ---- longpoll -------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct lp_client {
    pthread_t th;
    unsigned k;
    bool joined;
    uint64_t cursor0; /* the last id when it joined */
    uint64_t last;    /* the last id received */
    unsigned got, lost, dup, errors;
    double *lat_ms; /* one per message received */
    size_t nlat, caplat;
    char err[96];
} lp_client_t;

static struct {
    unsigned joined; /* atomic */
    bool pub_done;   /* atomic */
    uint64_t pub_last;
    double deadline; /* for clients once the publisher is done */
} lp;

/* One GET on fd: its status, the body in *body (inside buf) and *blen; the head is checked
 * for X-Hub-Missed and X-Hub-Reset (a message lost). -1..-3 as read_response. */
static int lp_get(int fd, const char *path, char *buf, size_t cap, const char **body,
                  size_t *blen, bool *missed, int ms)
{
    char req[512];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: soak\r\n\r\n", path);
    if (send_all(fd, req, (size_t)rl) != 0)
        return -1;
    size_t extra = 0;
    int st = read_response(fd, ms, buf, cap - 1, &extra);
    if (st < 0)
        return st;
    const char *end = memmem(buf, cap, "\r\n\r\n", 4);
    if (end == NULL)
        return -3;
    size_t head = (size_t)(end - buf) + 4;
    *missed = memmem(buf, head, "X-Hub-Missed", 12) != NULL ||
              memmem(buf, head, "X-Hub-Reset", 11) != NULL;
    *body = buf + head;
    /* the whole answer was read: its body runs to the bytes read less any extra */
    const char *cl = memmem(buf, head, "Content-Length:", 15);
    *blen = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
    return st;
}

static void lp_fail(lp_client_t *c, const char *what)
{
    c->errors++;
    if (c->err[0] == '\0')
        snprintf(c->err, sizeof(c->err), "%s", what);
}

/* Walks a JSON array of the hub's messages ({"id":N,"room":...,"text":"t=NS"}): ids must
 * follow c->last one by one. */
static void lp_take(lp_client_t *c, const char *body, size_t len, uint64_t t_recv)
{
    const char *p = body, *end = body + len;
    while ((p = memmem(p, (size_t)(end - p), "{\"id\":", 6)) != NULL) {
        uint64_t id = strtoull(p + 6, NULL, 10);
        p += 6;
        const char *t = memmem(p, (size_t)(end - p), "\"text\":\"t=", 10);
        uint64_t sent = t != NULL ? strtoull(t + 10, NULL, 10) : 0;
        if (id <= c->last) {
            c->dup++;
            continue;
        }
        if (c->joined && id != c->last + 1)
            c->lost += (unsigned)(id - c->last - 1);
        c->last = id;
        if (!c->joined)
            continue;
        c->got++;
        if (c->nlat == c->caplat) {
            size_t nc = c->caplat ? 2 * c->caplat : 1024;
            double *n = realloc(c->lat_ms, nc * sizeof(*n));
            if (n == NULL)
                continue;
            c->lat_ms = n;
            c->caplat = nc;
        }
        if (sent != 0 && t_recv >= sent)
            c->lat_ms[c->nlat++] = (double)(t_recv - sent) / 1e6;
    }
}

static void *lp_client_thread(void *arg)
{
    lp_client_t *c = arg;
    size_t cap = 1 << 20;
    char *buf = malloc(cap), path[256];
    const char *body;
    size_t blen;
    bool missed = false;
    int fd = conn_open(c->k, 0);
    if (buf == NULL || fd < 0) {
        lp_fail(c, "connect");
        __atomic_fetch_add(&lp.joined, 1, __ATOMIC_RELEASE);
        goto out;
    }
    /* join: a plain poll of the whole history; its last id is the cursor */
    snprintf(path, sizeof(path), "/rooms/%s/messages?since=0", g.room);
    int st = lp_get(fd, path, buf, cap, &body, &blen, &missed, 5000);
    if (st != 200) {
        lp_fail(c, "join");
        __atomic_fetch_add(&lp.joined, 1, __ATOMIC_RELEASE);
        goto out;
    }
    lp_take(c, body, blen, 0);
    c->cursor0 = c->last;
    c->joined = true;
    __atomic_fetch_add(&lp.joined, 1, __ATOMIC_RELEASE);
    for (;;) {
        if (__atomic_load_n(&lp.pub_done, __ATOMIC_ACQUIRE)) {
            if (c->last >= lp.pub_last)
                break;
            if (now_s() > lp.deadline) {
                lp_fail(c, "not all messages came within 5 s of the last post");
                break;
            }
        }
        snprintf(path, sizeof(path), "/rooms/%s/messages?since=%llu&wait=2", g.room,
                 (unsigned long long)c->last);
        st = lp_get(fd, path, buf, cap, &body, &blen, &missed, 10000);
        uint64_t t = now_ns();
        if (st != 200) {
            lp_fail(c, st == -2 ? "long poll not answered within 10 s"
                                : st == -1 ? "connection closed" : "bad answer");
            break;
        }
        if (missed)
            lp_fail(c, "X-Hub-Missed or X-Hub-Reset");
        lp_take(c, body, blen, t);
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_longpoll(void)
{
    unsigned nc = g.n > 256 ? 256 : g.n;
    lp_client_t *c = calloc(nc, sizeof(*c));
    if (c == NULL)
        return 1;
    for (unsigned i = 0; i < nc; i++) {
        c[i].k = i;
        pthread_create(&c[i].th, NULL, lp_client_thread, &c[i]);
    }
    double t_join = now_s();
    while (__atomic_load_n(&lp.joined, __ATOMIC_ACQUIRE) < nc && now_s() - t_join < 10)
        usleep(10000);
    /* the publisher: one keep-alive connection, a POST every 1/rate s */
    unsigned posted = 0, post_err = 0, id_err = 0;
    uint64_t first_id = 0;
    char buf[4096], req[512], path[256];
    snprintf(path, sizeof(path), "/rooms/%s/messages", g.room);
    int fd = conn_open(nc, 0);
    double t0 = now_s();
    unsigned total = g.rate * g.duration_s;
    for (unsigned k = 0; fd >= 0 && k < total; k++) {
        double due = t0 + (double)k / g.rate, wait = due - now_s();
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
        char text[64];
        int tl = snprintf(text, sizeof(text), "{\"text\":\"t=%llu\"}",
                          (unsigned long long)now_ns());
        int rl = snprintf(req, sizeof(req),
                          "POST %s HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          path, tl, text);
        size_t extra = 0;
        int st = send_all(fd, req, (size_t)rl) == 0
                     ? read_response(fd, 5000, buf, sizeof(buf) - 1, &extra)
                     : -1;
        if (st != 201) {
            post_err++;
            if (st < 0)
                break;
            continue;
        }
        const char *idp = memmem(buf, sizeof(buf) - 1, "{\"id\":", 6);
        uint64_t id = idp != NULL ? strtoull(idp + 6, NULL, 10) : 0;
        if (first_id == 0)
            first_id = id;
        else if (id != lp.pub_last + 1)
            id_err++;
        lp.pub_last = id;
        posted++;
    }
    double pub_s = now_s() - t0;
    if (fd >= 0)
        close(fd);
    lp.deadline = now_s() + 5;
    __atomic_store_n(&lp.pub_done, true, __ATOMIC_RELEASE);
    unsigned joined = 0, errors = 0, lost = 0, dup = 0, short_of = 0;
    uint64_t got = 0, expected = 0;
    size_t nlat = 0;
    const char *err = NULL;
    for (unsigned i = 0; i < nc; i++) {
        pthread_join(c[i].th, NULL);
        joined += c[i].joined;
        errors += c[i].errors;
        lost += c[i].lost;
        dup += c[i].dup;
        got += c[i].got;
        if (c[i].joined) {
            expected += lp.pub_last > c[i].cursor0 ? lp.pub_last - c[i].cursor0 : 0;
            if (c[i].last < lp.pub_last)
                short_of++;
        }
        if (err == NULL && c[i].err[0] != '\0')
            err = c[i].err;
        nlat += c[i].nlat;
    }
    double *all = malloc((nlat ? nlat : 1) * sizeof(*all));
    size_t n = 0;
    for (unsigned i = 0; i < nc; i++) {
        if (all != NULL && c[i].nlat > 0)
            memcpy(all + n, c[i].lat_ms, c[i].nlat * sizeof(*all));
        n += c[i].nlat;
        free(c[i].lat_ms);
    }
    double p50 = 0, p99 = 0, pmax = 0;
    if (all != NULL && n > 0) {
        qsort(all, n, sizeof(*all), cmp_double);
        p50 = all[n / 2];
        p99 = all[(size_t)((double)(n - 1) * 0.99)];
        pmax = all[n - 1];
    }
    printf("clients=%u joined=%u posted=%u post_errors=%u id_errors=%u first_id=%llu "
           "last_id=%llu seconds=%.1f expected=%llu delivered=%llu lost=%u dup=%u "
           "short=%u client_errors=%u lat_p50_ms=%.2f lat_p99_ms=%.2f lat_max_ms=%.2f",
           nc, joined, posted, post_err, id_err, (unsigned long long)first_id,
           (unsigned long long)lp.pub_last, pub_s, (unsigned long long)expected,
           (unsigned long long)got, lost, dup, short_of, errors, p50, p99, pmax);
    if (err != NULL) {
        printf(" first_error=");
        for (const char *q = err; *q; q++)
            putchar(*q == ' ' ? '_' : *q);
    }
    printf("\n");
    free(all);
    free(c);
    return joined == 0 || fd < 0 ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-soak churn|slow|stuck|fdfill|fault|longpoll -p PORT [-n N]\n"
               "         [-t THREADS] [-S SOURCES] [--body] [-i MS] [-m SECONDS] [--path P]\n"
               "         [-P PIPELINE] [--ws] [-H SECONDS] [--pause-ms MS]\n"
               "         [--kind halfclose|pipereset|vanish|bigreset]\n"
               "         [--room R] [--rate R] [-d SECONDS]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},   {"n", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'}, {"sources", required_argument, NULL, 'S'},
        {"body", no_argument, NULL, 'b'},          {"interval", required_argument, NULL, 'i'},
        {"max", required_argument, NULL, 'm'},     {"path", required_argument, NULL, 'x'},
        {"pipeline", required_argument, NULL, 'P'}, {"ws", no_argument, NULL, 'w'},
        {"hold", required_argument, NULL, 'H'},    {"kind", required_argument, NULL, 'k'},
        {"pause-ms", required_argument, NULL, 'z'}, {"room", required_argument, NULL, 'r'},
        {"rate", required_argument, NULL, 'R'},    {"duration", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    if (argc < 2 || argv[1][0] == '-') {
        bool help = argc >= 2 && strcmp(argv[1], "--help") == 0;
        usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    const char *mode = argv[1];
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "p:n:t:S:i:m:P:H:d:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': g.port = atoi(optarg); break;
        case 'n': g.n = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': g.threads = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'S': g.sources = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': g.body = true; break;
        case 'i': g.interval_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': g.max_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'x': g.path = optarg; break;
        case 'P': g.pipeline = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'w': g.ws = true; break;
        case 'H': g.hold_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': g.kind = optarg; break;
        case 'z': g.pause_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': g.room = optarg; break;
        case 'R': g.rate = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd': g.duration_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (g.port <= 0 || g.port > 65535 || g.n == 0 || g.threads == 0 || g.interval_ms == 0 ||
        g.rate == 0 || g.duration_s == 0) {
        fprintf(stderr, "bench-soak: -p PORT (1..65535), -n, -t, -i, --rate and -d must be "
                        "positive\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (strcmp(mode, "churn") == 0)
        return run_churn();
    if (strcmp(mode, "slow") == 0)
        return run_slow();
    if (strcmp(mode, "stuck") == 0)
        return run_stuck();
    if (strcmp(mode, "fdfill") == 0)
        return run_fdfill();
    if (strcmp(mode, "longpoll") == 0)
        return run_longpoll();
    if (strcmp(mode, "fault") == 0 && g.kind != NULL) {
        if (strcmp(g.kind, "halfclose") == 0)
            return fault_halfclose();
        if (strcmp(g.kind, "pipereset") == 0)
            return fault_pipereset();
        if (strcmp(g.kind, "vanish") == 0)
            return fault_vanish();
        if (strcmp(g.kind, "bigreset") == 0)
            return fault_bigreset();
    }
    fprintf(stderr, "bench-soak: unknown mode or --kind: %s\n", mode);
    usage(stderr);
    return 2;
}
