/* floor — the least a server can do per answer on this kernel, measured beside squall.
 *
 *   build/bin/bench-floor [--host 127.0.0.1] --port P http   # GET → "Hello, world"
 *   build/bin/bench-floor [--host 127.0.0.1] --port P ws     # WebSocket echo
 *
 * (--host: an IPv4 address or a name, its first IPv4 address taken.)
 *
 * One thread, level-triggered epoll, and per ready socket one recv() and at most one
 * sendmsg(): no parser beyond finding the end of a request head (every request gets the
 * same 200; the request line is not read), no router, no timers, no limits. It is what any
 * server built on readiness and the socket calls pays at least: the kernel's TCP work for
 * one read and one write, and the calls' entry and exit. scripts/bench-peers.sh runs it as
 * the peer "floor", so a ratio target below the floor's own ratio shows as such in the table
 * (docs/performance.md, "The floor"). A benchmark tool, not a server: it trusts its client.
 *
 * http: the answers to every request head ended in one read go out in one sendmsg (so a
 * pipelined batch is one write, as in squall), with a Date renewed once a second (RFC 9110
 * §6.6.1). ws: the opening handshake (RFC 6455 §4.2.2), then each whole frame read is
 * unmasked in place (§5.3) and sent back unmasked with the same opcode, all frames of one
 * read in one sendmsg; a ping is answered with a pong (§5.5.3) and a close with a close
 * (§5.5.1), after which the connection is closed.
 *
 * Prints "bench-floor: serving on http://HOST:PORT/ (MODE)" once it listens; SIGTERM or
 * SIGINT ends it with status 0.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FDS = 65536, IOV_MAX_FLOOR = 128, BUF_START = 64 * 1024 };

typedef struct conn {
    unsigned char *buf;
    size_t len, cap;
    unsigned matched; /* http: bytes of "\r\n\r\n" matched at the end of the last read */
    int ws;           /* ws: the handshake is done */
} conn_t;

static conn_t conns[MAX_FDS];
static int ws_mode;
static char answer[256];
static size_t answer_len;
static time_t answer_second;
static volatile sig_atomic_t stopping;

static void on_stop_signal(int sig)
{
    stopping = sig;
}

static void die(const char *what)
{
    fprintf(stderr, "bench-floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void drop(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd].buf);
    memset(&conns[fd], 0, sizeof(conns[fd]));
}

/* send_all: one sendmsg, which on loopback takes it all; when it does not (a big echo to a
 * client that reads slowly), the rest is written with this client waited for, up to 5 s,
 * then it is dropped. The floor's clients read what they asked for. */
static int send_all(int ep, int fd, struct iovec *iov, int n, size_t total)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
    for (;;) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)total)
            return 0;
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            break;
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
    fprintf(stderr, "bench-floor: fd %d: could not write its answer (%s), dropped\n", fd,
            strerror(errno));
    drop(ep, fd);
    return -1;
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

/* on_http: counts the request heads ended in these bytes and answers each. */
static void on_http(int ep, int fd, conn_t *c, const unsigned char *p, size_t n)
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
        if (send_all(ep, fd, iov, k, (size_t)k * answer_len) != 0)
            return;
        heads -= (size_t)k;
    }
}

/* ws_accept: the handshake answer for the head in c->buf (RFC 6455 §4.2.2); 0 when the head
 * is not whole yet, -1 when it has no key. */
static int ws_accept(int ep, int fd, conn_t *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    char *key = memmem(c->buf, (size_t)(end - (char *)c->buf), "\r\nSec-WebSocket-Key:", 20);
    if (key == NULL)
        return -1;
    key += 20;
    while (*key == ' ')
        key++;
    char *eol = memmem(key, (size_t)(end + 2 - key), "\r\n", 2);
    size_t klen = (size_t)(eol - key);
    unsigned char in[128], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (klen > sizeof(in) - sizeof(guid))
        return -1;
    memcpy(in, key, klen);
    memcpy(in + klen, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, klen + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1)
        return -1;
    char b64[64], out[256];
    EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
    int olen = snprintf(out, sizeof(out),
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                        b64);
    struct iovec iov = { out, (size_t)olen };
    if (send_all(ep, fd, &iov, 1, (size_t)olen) != 0)
        return -2;
    size_t used = (size_t)(end + 4 - (char *)c->buf);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    c->ws = 1;
    return 1;
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

/* on_ws: echoes every whole frame in c->buf (RFC 6455 §5.2), all in one sendmsg. */
static void on_ws(int ep, int fd, conn_t *c)
{
    struct iovec iov[IOV_MAX_FLOOR];
    unsigned char heads[IOV_MAX_FLOOR / 2][10];
    int n = 0, closing = 0;
    size_t at = 0, total = 0;
    while (n < IOV_MAX_FLOOR && !closing) {
        unsigned char *f = c->buf + at;
        size_t left = c->len - at, hl = 2;
        if (left < 2)
            break;
        uint64_t len = f[1] & 127;
        if (len == 126) {
            if (left < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (left < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (!(f[1] & 0x80)) { /* a client's frames are masked (§5.1) */
            drop(ep, fd);
            return;
        }
        if (left < hl + 4 || left - hl - 4 < len)
            break;
        unsigned char *payload = f + hl + 4, *h = heads[n / 2];
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
        iov[n++] = (struct iovec){ h, ohl };
        iov[n++] = (struct iovec){ payload, (size_t)len };
        total += ohl + (size_t)len;
        at += hl + 4 + (size_t)len;
    }
    if (n > 0 && send_all(ep, fd, iov, n, total) != 0)
        return;
    if (closing) {
        drop(ep, fd);
        return;
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
}

static void on_readable(int ep, int fd)
{
    conn_t *c = &conns[fd];
    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : BUF_START;
        unsigned char *b = realloc(c->buf, cap);
        if (b == NULL) {
            drop(ep, fd);
            return;
        }
        c->buf = b, c->cap = cap;
    }
    ssize_t r = recv(fd, c->buf + c->len, c->cap - c->len, 0);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            drop(ep, fd);
        return;
    }
    if (!ws_mode) {
        on_http(ep, fd, c, c->buf, (size_t)r); /* the bytes are not kept */
        return;
    }
    c->len += (size_t)r;
    if (!c->ws) {
        int a = ws_accept(ep, fd, c);
        if (a == -1)
            drop(ep, fd);
        if (a != 1)
            return;
    }
    on_ws(ep, fd, c);
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
    const char *host = "127.0.0.1";
    int port = 0, opt, one = 1;
    static const struct option longs[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (opt == 'h')
            host = optarg;
        else if (opt == 'p')
            port = port_of(optarg);
        else
            return 2;
    }
    if (optind != argc - 1 || port <= 0 ||
        (strcmp(argv[optind], "http") != 0 && strcmp(argv[optind], "ws") != 0)) {
        fprintf(stderr, "usage: bench-floor [--host ADDR] --port PORT http|ws\n");
        return 2;
    }
    ws_mode = strcmp(argv[optind], "ws") == 0;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa_stop = { .sa_handler = on_stop_signal }; /* no SA_RESTART */
    sigemptyset(&sa_stop.sa_mask);
    sigaction(SIGTERM, &sa_stop, NULL);
    sigaction(SIGINT, &sa_stop, NULL);

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
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls < 0)
        die("socket");
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("bind");
    if (listen(ls, 4096) != 0)
        die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0)
        die("epoll_ctl");

    printf("bench-floor: serving on http://%s:%d/ (%s)\n", host, port, argv[optind]);
    fflush(stdout);

    struct epoll_event events[1024];
    while (!stopping) {
        int n = epoll_wait(ep, events, 1024, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != ls) {
                on_readable(ep, fd);
                continue;
            }
            int c;
            while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
                if (c >= MAX_FDS || epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) {
                    close(c);
                    continue;
                }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            }
        }
    }
    for (int fd = 0; fd < MAX_FDS; fd++)
        free(conns[fd].buf);
    return 0;
}
