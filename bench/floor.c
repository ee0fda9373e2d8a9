/* floor — about the least a server on epoll and the socket calls can do per answer, measured
 * beside squall.
 *
 *   build/bin/bench-floor [--host 127.0.0.1] --port P http   # GET → "Hello, world"
 *   build/bin/bench-floor [--host 127.0.0.1] --port P ws     # WebSocket echo
 *
 * (--host: an IPv4 address or a name, its first IPv4 address taken.)
 *
 * One thread, level-triggered epoll, and per ready socket one recv() into a buffer shared
 * by all connections and one sendmsg(): no parser beyond finding the end of a request head
 * (every request gets the same 200; the request line is not read), no router, no timers,
 * no limits. It pays little more than the kernel's TCP work for one read and one write and
 * the calls' entry and exit, which every server built on readiness and those calls pays.
 * scripts/bench-peers.sh runs it as the peer "floor" (docs/performance.md, "The floor").
 * A benchmark tool, not a server: it trusts its clients (a client's buffered bytes grow
 * without bound, and a write the socket does not take whole is finished by waiting for
 * that client, up to 5 s, while the others wait).
 *
 * http: the answers to every request head ended in one read go out in one sendmsg (so a
 * pipelined batch is one write, as in squall), with a Date renewed once a second (RFC 9110
 * §6.6.1) and a Content-Length (§8.6). ws: the opening handshake (RFC 6455 §4.2.2), then
 * each whole frame read (§5.2) is unmasked in place (§5.3) and sent back unmasked with the
 * same opcode, all frames of one read in one sendmsg; a ping is answered with a pong
 * (§5.5.3) and a close with a close (§5.5.1), after which the connection is closed. Bytes
 * left over (a head or frame not whole yet) are kept by the connection until the rest
 * comes.
 *
 * Prints "bench-floor: serving on http://HOST:PORT/ (http)" (ws://... for ws) once it
 * listens; SIGTERM or SIGINT ends it with status 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FDS = 65536, IOV_MAX_FLOOR = 128, READ_BUF = 256 * 1024 };

typedef struct conn {
    unsigned char *buf; /* bytes kept between reads: a ws handshake or frame not whole yet */
    size_t len, cap;
    unsigned matched; /* http: bytes of "\r\n\r\n" matched at the end of the last read */
    int ws;           /* ws: the handshake is done */
} conn_t;

static conn_t conns[MAX_FDS];
static unsigned char read_buf[READ_BUF];
static int ep, listener, ws_mode, accept_paused;
static char answer[256];
static size_t answer_len;
static time_t answer_second;
static volatile sig_atomic_t stopping;

static void on_stop_signal(int sig)
{
    stopping = sig;
}

static void floor_fail(const char *what)
{
    fprintf(stderr, "bench-floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void listener_watch(int on)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener };
    if (epoll_ctl(ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listener, &ev) != 0)
        floor_fail("epoll_ctl");
    accept_paused = !on;
}

static void conn_close(int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd].buf);
    memset(&conns[fd], 0, sizeof(conns[fd]));
    if (accept_paused) /* a descriptor is free again */
        listener_watch(1);
}

/* send_all: one sendmsg, which on loopback takes it all; when it does not (a big echo to a
 * client that reads slowly), the rest is written waiting for this client, up to 5 s, then
 * it is closed. The floor's clients read what they asked for. */
static int send_all(int fd, struct iovec *iov, int n, size_t total)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
    const char *why = "timed out";
    for (;;) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)total)
            return 0;
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            why = strerror(errno);
            break;
        }
        if (w > 0) {
            total -= (size_t)w;
            while ((size_t)w >= mh.msg_iov->iov_len) {
                w -= (ssize_t)mh.msg_iov->iov_len;
                mh.msg_iov++, mh.msg_iovlen--;
            }
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + w;
            mh.msg_iov->iov_len -= (size_t)w;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, 5000) != 1)
            break;
    }
    fprintf(stderr, "bench-floor: fd %d: could not write its answer (%s), closed\n", fd, why);
    conn_close(fd);
    return -1;
}

/* keep: the connection keeps p[0..n) for the next read. */
static int keep(int fd, conn_t *c, const unsigned char *p, size_t n)
{
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 16 * 1024;
        while (cap < c->len + n)
            cap *= 2;
        unsigned char *b = realloc(c->buf, cap);
        if (b == NULL) {
            conn_close(fd);
            return -1;
        }
        c->buf = b, c->cap = cap;
    }
    memmove(c->buf + c->len, p, n);
    c->len += n;
    return 0;
}

static void renew_answer(void)
{
    time_t now = time(NULL);
    if (now == answer_second)
        return;
    struct tm tm;
    char date[64];
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    answer_len = (size_t)snprintf(answer, sizeof(answer),
                                  "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: %s\r\n"
                                  "Content-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
                                  "Hello, world",
                                  date);
    answer_second = now;
}

/* on_http: counts the request heads ended in these bytes (RFC 9112 §2.1: a head ends with
 * an empty line) and answers each. Nothing is kept but the match state. */
static void on_http(int fd, conn_t *c, const unsigned char *p, size_t n)
{
    static const char end[] = "\r\n\r\n";
    size_t heads = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == (unsigned char)end[c->matched])
            c->matched++;
        else
            c->matched = p[i] == '\r' ? 1 : 0;
        if (c->matched == 4) {
            heads++;
            c->matched = 0;
        }
    }
    if (heads == 0)
        return;
    renew_answer();
    struct iovec iov[IOV_MAX_FLOOR];
    while (heads > 0) {
        int k = heads < IOV_MAX_FLOOR ? (int)heads : IOV_MAX_FLOOR;
        for (int i = 0; i < k; i++)
            iov[i] = (struct iovec){ answer, answer_len };
        if (send_all(fd, iov, k, (size_t)k * answer_len) != 0)
            return;
        heads -= (size_t)k;
    }
}

/* header_value: the value of header `name` (matched without case, RFC 9110 §5.1) in the
 * head [p, end), its length in *len; NULL when it is not there. */
static const char *header_value(const char *p, const char *end, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *line = p; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

/* ws_accept: answers the handshake whose head starts p (RFC 6455 §4.2.2). Returns the bytes
 * of the head, 0 when it is not whole yet, -1 when the connection was closed (no key). */
static ssize_t ws_accept(int fd, const unsigned char *p, size_t n)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    const char *head = (const char *)p;
    const char *end = memmem(head, n, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t klen;
    const char *key = header_value(head, end + 2, "Sec-WebSocket-Key", &klen);
    unsigned char in[128], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (key == NULL || klen == 0 || klen > sizeof(in) - sizeof(guid)) {
        conn_close(fd);
        return -1;
    }
    memcpy(in, key, klen);
    memcpy(in + klen, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, klen + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1) {
        conn_close(fd);
        return -1;
    }
    char b64[64], out[256];
    EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
    int olen = snprintf(out, sizeof(out),
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                        b64);
    struct iovec iov = { out, (size_t)olen };
    if (send_all(fd, &iov, 1, (size_t)olen) != 0)
        return -1;
    return end + 4 - head;
}

static void unmask(unsigned char *p, uint64_t n, const unsigned char key[4])
{
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = k32 | (uint64_t)k32 << 32, v;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, p + i, 8);
        v ^= k64;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
}

/* on_ws: echoes every whole frame in p[0..n) (RFC 6455 §5.2), as many as fit in one
 * sendmsg at a time. Returns the bytes used (a frame not whole yet stays), or -1 when the
 * connection was closed. */
static ssize_t on_ws(int fd, unsigned char *p, size_t n)
{
    struct iovec iov[IOV_MAX_FLOOR];
    unsigned char heads[IOV_MAX_FLOOR / 2][10];
    int k = 0, closing = 0;
    size_t at = 0, total = 0;
    for (;;) {
        unsigned char *f = p + at;
        size_t left = n - at, hl = 2;
        uint64_t len = left >= 2 ? f[1] & 127 : 0;
        int whole = left >= 2 && !closing;
        if (whole && len == 126) {
            whole = left >= 4;
            len = whole ? (uint64_t)f[2] << 8 | f[3] : 0;
            hl = 4;
        } else if (whole && len == 127) {
            whole = left >= 10;
            len = 0;
            for (int i = 0; whole && i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (whole && !(f[1] & 0x80)) { /* a client's frames are masked (§5.1) */
            if (k == 0 || send_all(fd, iov, k, total) == 0) /* the echoes before it first */
                conn_close(fd);
            return -1;
        }
        whole = whole && left >= hl + 4 && left - hl - 4 >= len;
        if (k > 0 && (!whole || k == IOV_MAX_FLOOR)) { /* send what is ready */
            if (send_all(fd, iov, k, total) != 0)
                return -1;
            k = 0, total = 0;
        }
        if (closing) {
            conn_close(fd);
            return -1;
        }
        if (!whole)
            return (ssize_t)at;
        unsigned char *payload = f + hl + 4, *h = heads[k / 2];
        unmask(payload, len, f + hl);
        unsigned op = f[0] & 15;
        h[0] = (unsigned char)((f[0] & 0xf0) | (op == 9 ? 10 : op));
        closing = op == 8;
        size_t ohl = 2;
        if (len < 126) {
            h[1] = (unsigned char)len;
        } else if (len < 65536) {
            h[1] = 126, h[2] = (unsigned char)(len >> 8), h[3] = (unsigned char)len, ohl = 4;
        } else {
            h[1] = 127, ohl = 10;
            for (int i = 0; i < 8; i++)
                h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        }
        iov[k++] = (struct iovec){ h, ohl };
        iov[k++] = (struct iovec){ payload, (size_t)len };
        total += ohl + (size_t)len;
        at += hl + 4 + (size_t)len;
    }
}

/* ws_consume: the handshake, then the frames, in p[0..n); returns the bytes used or -1. */
static ssize_t ws_consume(int fd, conn_t *c, unsigned char *p, size_t n)
{
    size_t used = 0;
    if (!c->ws) {
        ssize_t h = ws_accept(fd, p, n);
        if (h <= 0)
            return h;
        c->ws = 1;
        used = (size_t)h;
    }
    ssize_t f = on_ws(fd, p + used, n - used);
    return f < 0 ? -1 : (ssize_t)used + f;
}

static void on_readable(int fd)
{
    conn_t *c = &conns[fd];
    ssize_t r = recv(fd, read_buf, sizeof(read_buf), 0);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            conn_close(fd);
        return;
    }
    if (!ws_mode) {
        on_http(fd, c, read_buf, (size_t)r);
        return;
    }
    if (c->len == 0) { /* the usual case: everything in the shared buffer */
        ssize_t used = ws_consume(fd, c, read_buf, (size_t)r);
        if (used >= 0 && (size_t)used < (size_t)r)
            keep(fd, c, read_buf + used, (size_t)r - (size_t)used);
        return;
    }
    if (keep(fd, c, read_buf, (size_t)r) != 0)
        return;
    ssize_t used = ws_consume(fd, c, c->buf, c->len);
    if (used > 0) {
        memmove(c->buf, c->buf + used, c->len - (size_t)used);
        c->len -= (size_t)used;
    }
}

static void on_acceptable(void)
{
    int one = 1;
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) { /* until a connection closes */
                fprintf(stderr, "bench-floor: accept: %s; not accepting until one closes\n",
                        strerror(errno));
                listener_watch(0);
            }
            return;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (fd >= MAX_FDS || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

/* port_of: 1-65535 written in decimal, else -1. */
static int port_of(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return end == s || *end != '\0' || v < 1 || v > 65535 ? -1 : (int)v;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *usage = "usage: bench-floor [--host ADDR] --port PORT http|ws";
    int port = 0, opt, one = 1;
    static const struct option longs[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (opt == 'h') {
            host = optarg;
        } else if (opt == 'p') {
            port = port_of(optarg);
            if (port < 0) {
                fprintf(stderr, "bench-floor: --port %s: not a port (1-65535); %s\n", optarg,
                        usage);
                return 2;
            }
        } else {
            return 2;
        }
    }
    if (optind != argc - 1 || port == 0 ||
        (strcmp(argv[optind], "http") != 0 && strcmp(argv[optind], "ws") != 0)) {
        fprintf(stderr, "%s\n", usage);
        return 2;
    }
    ws_mode = strcmp(argv[optind], "ws") == 0;

    /* SIGTERM and SIGINT are let in only while waiting in epoll_pwait: none is missed. */
    sigset_t stop_set, wait_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_set, &wait_set);
    sigdelset(&wait_set, SIGTERM);
    sigdelset(&wait_set, SIGINT);
    struct sigaction sa_stop = { .sa_handler = on_stop_signal };
    sigemptyset(&sa_stop.sa_mask);
    sigaction(SIGTERM, &sa_stop, NULL);
    sigaction(SIGINT, &sa_stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The host's first IPv4 address: "localhost" is 127.0.0.1, as the load expects. */
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "bench-floor: --host %s: %s\n", host, gai_strerror(gai));
        return 1;
    }
    struct sockaddr_in sa = *(struct sockaddr_in *)ai->ai_addr;
    freeaddrinfo(ai);
    sa.sin_port = htons((uint16_t)port);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0)
        floor_fail("socket");
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(listener, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        floor_fail("bind");
    if (listen(listener, 4096) != 0)
        floor_fail("listen");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        floor_fail("epoll_create1");
    listener_watch(1);
    printf("bench-floor: serving on %s://%s:%d/ (%s)\n", ws_mode ? "ws" : "http", host, port,
           argv[optind]);
    fflush(stdout);

    struct epoll_event events[1024];
    while (!stopping) {
        int n = epoll_pwait(ep, events, 1024, -1, &wait_set);
        if (n < 0 && errno != EINTR)
            floor_fail("epoll_pwait");
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == listener)
                on_acceptable();
            else
                on_readable(events[i].data.fd);
        }
    }
    for (int fd = 0; fd < MAX_FDS; fd++)
        free(conns[fd].buf);
    return 0;
}
