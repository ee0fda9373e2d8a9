/* hub-load — the load client of scripts/bench-hub.sh: what a chat server (build/bin/chat,
 * or bench/node-chat.js with the same HTTP surface) pays per held long poll and per idle
 * WebSocket subscriber, and how long a published message takes to reach its WebSocket
 * subscribers. Every connection lives in one libuv loop: squall's WebSocket client
 * (sq_ws_connect) for the subscribers, plain TCP handles with hand-written HTTP/1.1 for
 * the long polls and the publishing POSTs.
 *
 *   bench-hub-load polls   [-n 10000] [-P PID] [opts] http://127.0.0.1:PORT
 *   bench-hub-load ws      [-n 10000] [-P PID] [opts] http://127.0.0.1:PORT
 *   bench-hub-load latency [-n 1000] [-m 200] [opts] http://127.0.0.1:PORT
 *
 * polls: W warm-up long polls are held in a room of their own and answered by a publish;
 *   then the server's VmRSS (/proc/PID/status) is read, N long polls
 *   (GET /rooms/R/messages?since=0&wait=60) are held in a new room, and after the settle
 *   time VmRSS is read again; a publish then answers them all, and each must get a 200
 *   with the message. None may be answered before it.
 * ws: the same with WebSocket subscribers (WS /ws?room=R): W warm-up ones get a message
 *   and close; then N are opened, VmRSS is read before and after, and a publish must
 *   reach every one of them.
 * latency: N subscribers; then W warm-up messages and M measured ones, published one at
 *   a time (POST /rooms/R/messages on a keep-alive connection; the next once every
 *   subscriber has the last one and the POST was answered). Each delivery's latency runs
 *   from just before the POST is written to the subscriber's read of the message (the
 *   text carries the message's number); reported: p50 and p99 over all deliveries, the
 *   p50 over the messages of the time until the first subscriber had it, and p50 and p99
 *   of the time until the last one had it.
 *
 * Options: -w W warm-up connections or messages (100 / 100 / 20); -c C connections
 * being set up at once (200); -s S settle seconds before the second VmRSS (2); -g MS pause
 * between published messages (1); -r ROOM room prefix ("bench"); -T S give up after S
 * seconds (120).
 *
 * Prints one line of key=value fields on stdout and exits 0; on a failure one line on
 * stderr and exit 1. The soft open-file limit is raised to the hard one first. A benchmark
 * tool: it leaves its connections to the kernel when it exits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <squall.h>

enum { MODE_POLLS, MODE_WS, MODE_LATENCY };

typedef struct bench bench_t;

/* A held long poll: one request, one response, then closed. */
typedef struct pconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    bench_t *b;
    char *rbuf;
    size_t rlen, rcap;
    bool answered;
} pconn_t;

/* The keep-alive connection the publishing POSTs go on; a new one when the server closed
 * it while idle. */
typedef struct poster {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    bench_t *b;
    bool connected, busy, closing;
    char *req;       /* the request waiting for the connection, or being written */
    size_t req_len;
    uint64_t seq;    /* the message's number, to stamp its start when it is written */
    char *rbuf;
    size_t rlen, rcap;
} poster_t;

/* A WebSocket subscriber. */
typedef struct sub {
    sq_ws_t *ws;
    bench_t *b;
    bool open, closed;
} sub_t;

struct bench {
    uv_loop_t *loop;
    int mode;
    struct sockaddr_in addr;
    char hostport[32];
    unsigned n, warm, concurrency, messages;
    pid_t server;
    double settle_s, timeout_s;
    uint64_t gap_ms;
    char prefix[32];
    char room_warm[96], room_main[96];
    uv_timer_t tick, deadline;
    int phase;
    uint64_t mark_ms;

    /* long polls */
    const char *poll_req;
    size_t poll_req_len;
    char poll_req_buf[512];
    unsigned poll_target, poll_started, poll_written, poll_answered, poll_with_msg;

    /* WebSocket subscribers */
    sub_t *subs;
    unsigned sub_target, sub_started, sub_open, sub_closed;
    uint64_t sub_msgs;
    const char *sub_room;
    bool closing_warm;
    sq_ws_opts_t ws_opts;

    /* publishing */
    poster_t *poster;
    unsigned posts_sent, posts_done;

    /* memory */
    long rss_before, rss_after;

    /* latency: per message number */
    uint64_t nseq, seq;
    uint64_t *t0_ns;      /* when its POST was written; 0 before */
    unsigned *got;        /* subscribers that have it */
    uint64_t *first_ns;   /* the earliest delivery's latency */
    uint64_t *last_ns;    /* the latest delivery's latency */
    uint32_t *samples_us; /* every measured delivery */
    size_t nsamples, cap_samples;
};

static char readbuf[65536];

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hub-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        fail("out of memory");
    return p;
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fail("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
}

/* VmRSS of pid in KiB. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail("%s: %s (is the server running?)", path, strerror(errno));
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    if (kib < 0)
        fail("%s: no VmRSS line", path);
    return kib;
}

static void append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1)
            c *= 2;
        char *p = realloc(*buf, c);
        if (p == NULL)
            fail("out of memory");
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* One HTTP/1.1 response at the start of buf (NUL-terminated at len). Returns the bytes it
 * takes, 0 while incomplete, -1 when it cannot be read. The body is framed by
 * Content-Length or chunked (then *body points at the raw chunks, which is enough to look
 * for a message in). */
static ssize_t parse_response(const char *buf, size_t len, int *status, const char **body,
                              size_t *body_len)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (end == NULL)
        return len > 16384 ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0)
        return -1;
    *status = atoi(buf + 9);
    long clen = -1;
    bool chunked = false;
    for (const char *p = strstr(buf, "\r\n"); p != NULL && p < end; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, "content-length:", 15) == 0)
            clen = strtol(h + 15, NULL, 10);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strstr(h, "chunked") != NULL &&
                 strstr(h, "chunked") < strstr(h, "\r\n"))
            chunked = true;
    }
    *body = buf + head;
    if (chunked) {
        const char *fin = strstr(buf + head - 2, "\r\n0\r\n\r\n");
        if (fin == NULL)
            return 0;
        *body_len = (size_t)(fin - (buf + head));
        return (ssize_t)(fin + 7 - buf);
    }
    if (clen < 0)
        return -1;
    if (len < head + (size_t)clen)
        return 0;
    *body_len = (size_t)clen;
    return (ssize_t)(head + (size_t)clen);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(readbuf, sizeof(readbuf));
}

static void free_closed(uv_handle_t *h)
{
    free(h->data);
}

/* ---- held long polls ---- */

static void polls_pump(bench_t *b);

static void poll_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pconn_t *c = s->data;
    bench_t *b = c->b;
    if (nread < 0)
        fail("a long poll's connection %s before its answer (%u of %u answered)",
             nread == UV_EOF ? "closed" : uv_strerror((int)nread), b->poll_answered,
             b->poll_target);
    if (nread == 0)
        return;
    append(&c->rbuf, &c->rlen, &c->rcap, buf->base, (size_t)nread);
    int status = 0;
    const char *body = NULL;
    size_t blen = 0;
    ssize_t took = parse_response(c->rbuf, c->rlen, &status, &body, &blen);
    if (took < 0)
        fail("a long poll got an unreadable answer: %.80s", c->rbuf);
    if (took == 0)
        return;
    if (status != 200)
        fail("a long poll was answered %d: %.200s", status, body);
    c->answered = true;
    b->poll_answered++;
    if (memmem(body, blen, "\"text\"", 6) != NULL)
        b->poll_with_msg++;
    free(c->rbuf);
    c->rbuf = NULL;
    uv_close((uv_handle_t *)&c->tcp, free_closed);
}

static void poll_written(uv_write_t *w, int status)
{
    pconn_t *c = w->data;
    bench_t *b = c->b;
    if (status < 0)
        fail("writing a long poll: %s", uv_strerror(status));
    b->poll_written++;
    polls_pump(b);
}

static void poll_connected(uv_connect_t *req, int status)
{
    pconn_t *c = req->data;
    bench_t *b = c->b;
    if (status < 0)
        fail("connecting a long poll (%u held): %s", b->poll_written, uv_strerror(status));
    uv_buf_t buf = uv_buf_init((char *)b->poll_req, (unsigned)b->poll_req_len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, poll_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, poll_read);
    if (rc < 0)
        fail("a long poll: %s", uv_strerror(rc));
}

/* Starts connections while fewer than `concurrency` are being set up. */
static void polls_pump(bench_t *b)
{
    while (b->poll_started < b->poll_target &&
           b->poll_started - b->poll_written < b->concurrency) {
        pconn_t *c = xcalloc(1, sizeof(*c));
        c->b = b;
        c->tcp.data = c;
        c->creq.data = c;
        int rc = uv_tcp_init(b->loop, &c->tcp);
        if (rc == 0)
            rc = uv_tcp_nodelay(&c->tcp, 1);
        if (rc == 0)
            rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&b->addr,
                                poll_connected);
        if (rc < 0)
            fail("a long poll (%u started): %s", b->poll_started, uv_strerror(rc));
        b->poll_started++;
    }
}

static void polls_open(bench_t *b, const char *room, unsigned count)
{
    int n = snprintf(b->poll_req_buf, sizeof(b->poll_req_buf),
                     "GET /rooms/%s/messages?since=0&wait=60 HTTP/1.1\r\nHost: %s\r\n\r\n", room,
                     b->hostport);
    b->poll_req = b->poll_req_buf;
    b->poll_req_len = (size_t)n;
    b->poll_target += count;
    polls_pump(b);
}

/* ---- WebSocket subscribers ---- */

static void subs_pump(bench_t *b);

/* The message's number: the digits that start its text. */
static bool message_seq(const char *msg, size_t len, uint64_t *seq)
{
    const char *t = memmem(msg, len, "\"text\"", 6);
    if (t == NULL)
        return false;
    const char *end = msg + len;
    t += 6;
    while (t < end && (*t == ' ' || *t == ':'))
        t++;
    if (t >= end || *t != '"')
        return false;
    t++;
    if (t >= end || *t < '0' || *t > '9')
        return false;
    uint64_t v = 0;
    while (t < end && *t >= '0' && *t <= '9')
        v = v * 10 + (uint64_t)(*t++ - '0');
    *seq = v;
    return true;
}

static void sub_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    sub_t *s = data;
    s->open = true;
    s->b->sub_open++;
    subs_pump(s->b);
}

static void sub_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sub_t *s = data;
    bench_t *b = s->b;
    uint64_t t = uv_hrtime();
    b->sub_msgs++;
    if (b->mode != MODE_LATENCY)
        return;
    uint64_t seq;
    if (!message_seq(msg, len, &seq) || seq >= b->nseq || b->t0_ns[seq] == 0)
        fail("a subscriber got a message that was not published: %.*s", (int)(len > 200 ? 200 : len),
             msg);
    uint64_t lat = t - b->t0_ns[seq];
    b->got[seq]++;
    if (lat > b->last_ns[seq])
        b->last_ns[seq] = lat;
    if (b->first_ns[seq] == 0 || lat < b->first_ns[seq])
        b->first_ns[seq] = lat;
    if (seq >= b->warm) {
        if (b->nsamples == b->cap_samples)
            fail("more deliveries than subscribers x messages");
        uint64_t us = lat / 1000;
        b->samples_us[b->nsamples++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
}

static void sub_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    sub_t *s = data;
    bench_t *b = s->b;
    s->ws = NULL;
    s->closed = true;
    b->sub_closed++;
    if (!s->open)
        fail("a subscriber could not connect (%u open): %d %s", b->sub_open, code, reason);
    if (!b->closing_warm) /* only the warm-up subscribers are closed on purpose */
        fail("a subscriber was closed by the server (%u open): %d %s", b->sub_open, code, reason);
}

static const sq_ws_handler_t sub_handler = {
    .open = sub_open, .message = sub_message, .close = sub_close};

static void subs_pump(bench_t *b)
{
    while (b->sub_started < b->sub_target &&
           b->sub_started - b->sub_open < b->concurrency) {
        sub_t *s = &b->subs[b->sub_started];
        s->b = b;
        char url[256];
        snprintf(url, sizeof(url), "ws://%s/ws?room=%s", b->hostport, b->sub_room);
        int rc = sq_ws_connect(b->loop, url, &sub_handler, s, &b->ws_opts, &s->ws);
        if (rc < 0)
            fail("sq_ws_connect %s: %s", url, sq_strerror(rc));
        b->sub_started++;
    }
}

static void subs_open(bench_t *b, const char *room, unsigned count)
{
    b->sub_room = room;
    b->sub_target += count;
    subs_pump(b);
}

/* ---- publishing ---- */

static void post_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void post_written(uv_write_t *w, int status)
{
    poster_t *p = w->data;
    if (status < 0)
        fail("writing a POST: %s", uv_strerror(status));
    free(p->req);
    p->req = NULL;
}

static void post_write(poster_t *p)
{
    bench_t *b = p->b;
    uv_buf_t buf = uv_buf_init(p->req, (unsigned)p->req_len);
    p->wreq.data = p;
    if (b->t0_ns != NULL)
        b->t0_ns[p->seq] = uv_hrtime();
    int rc = uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &buf, 1, post_written);
    if (rc < 0)
        fail("writing a POST: %s", uv_strerror(rc));
}

static void post_connected(uv_connect_t *req, int status)
{
    poster_t *p = req->data;
    if (status < 0)
        fail("connecting to publish: %s", uv_strerror(status));
    p->connected = true;
    int rc = uv_read_start((uv_stream_t *)&p->tcp, on_alloc, post_read);
    if (rc < 0)
        fail("reading: %s", uv_strerror(rc));
    post_write(p);
}

static void poster_close(poster_t *p)
{
    if (p->b->poster == p)
        p->b->poster = NULL;
    p->closing = true;
    free(p->rbuf);
    p->rbuf = NULL;
    uv_close((uv_handle_t *)&p->tcp, free_closed);
}

static void post_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    poster_t *p = s->data;
    bench_t *b = p->b;
    if (nread < 0) {
        if (p->busy)
            fail("the server closed the connection before answering a POST: %s",
                 uv_strerror((int)nread));
        poster_close(p); /* closed while idle (keep-alive timeout): the next POST reconnects */
        return;
    }
    append(&p->rbuf, &p->rlen, &p->rcap, buf->base, (size_t)nread);
    int status = 0;
    const char *body = NULL;
    size_t blen = 0;
    ssize_t took = parse_response(p->rbuf, p->rlen, &status, &body, &blen);
    if (took < 0)
        fail("an unreadable answer to a POST: %.80s", p->rbuf);
    if (took == 0)
        return;
    if (!p->busy)
        fail("an answer no POST asked for: %.80s", p->rbuf);
    if (status != 201)
        fail("a POST was answered %d: %.200s", status, body);
    memmove(p->rbuf, p->rbuf + took, p->rlen - (size_t)took + 1);
    p->rlen -= (size_t)took;
    p->busy = false;
    b->posts_done++;
}

/* POSTs {"text": "<seq> ..."} to room. One at a time. */
static void publish(bench_t *b, const char *room, uint64_t seq)
{
    poster_t *p = b->poster;
    if (p != NULL && p->busy)
        fail("publishing while a POST is outstanding");
    char body[128], head[512];
    int blen = snprintf(body, sizeof(body), "{\"text\": \"%" PRIu64 " hub-load message\"}", seq);
    int hlen = snprintf(head, sizeof(head),
                        "POST /rooms/%s/messages HTTP/1.1\r\nHost: %s\r\n"
                        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                        room, b->hostport, blen);
    if (p == NULL) {
        p = xcalloc(1, sizeof(*p));
        p->b = b;
        p->tcp.data = p;
        p->creq.data = p;
        int rc = uv_tcp_init(b->loop, &p->tcp);
        if (rc == 0)
            rc = uv_tcp_nodelay(&p->tcp, 1);
        if (rc < 0)
            fail("publish: %s", uv_strerror(rc));
        b->poster = p;
    }
    p->req = malloc((size_t)hlen + (size_t)blen);
    if (p->req == NULL)
        fail("out of memory");
    memcpy(p->req, head, (size_t)hlen);
    memcpy(p->req + hlen, body, (size_t)blen);
    p->req_len = (size_t)hlen + (size_t)blen;
    p->seq = seq;
    p->busy = true;
    b->posts_sent++;
    if (p->connected) {
        post_write(p);
        return;
    }
    int rc = uv_tcp_connect(&p->creq, &p->tcp, (const struct sockaddr *)&b->addr, post_connected);
    if (rc < 0)
        fail("publish: %s", uv_strerror(rc));
}

/* ---- the phases, driven by a timer that checks each one's condition ---- */

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, c = *(const uint32_t *)y;
    return a < c ? -1 : a > c;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return a < c ? -1 : a > c;
}

/* The nearest-rank percentile q (0..1) of n sorted values. */
#define PCT(arr, n, q) ((arr)[(size_t)((double)(n) * (q)) < (n) ? (size_t)((double)(n) * (q)) : (n) - 1])

static void finish(bench_t *b)
{
    long n = (long)b->n;
    switch (b->mode) {
    case MODE_POLLS:
        printf("polls n=%u rss_before_kib=%ld rss_after_kib=%ld bytes_per=%ld answered=%u\n",
               b->n, b->rss_before, b->rss_after, (b->rss_after - b->rss_before) * 1024 / n,
               b->poll_answered - b->warm);
        break;
    case MODE_WS:
        printf("ws n=%u rss_before_kib=%ld rss_after_kib=%ld bytes_per=%ld delivered=%" PRIu64
               "\n",
               b->n, b->rss_before, b->rss_after, (b->rss_after - b->rss_before) * 1024 / n,
               b->sub_msgs - b->warm);
        break;
    default: {
        qsort(b->samples_us, b->nsamples, sizeof(*b->samples_us), cmp_u32);
        uint64_t *last = b->last_ns + b->warm, *first = b->first_ns + b->warm;
        size_t m = b->messages;
        qsort(last, m, sizeof(*last), cmp_u64);
        qsort(first, m, sizeof(*first), cmp_u64);
        printf("latency subs=%u messages=%u deliveries=%zu p50_us=%u p99_us=%u max_us=%u "
               "first_p50_us=%" PRIu64 " last_p50_us=%" PRIu64 " last_p99_us=%" PRIu64 "\n",
               b->n, b->messages, b->nsamples, PCT(b->samples_us, b->nsamples, 0.50),
               PCT(b->samples_us, b->nsamples, 0.99), b->samples_us[b->nsamples - 1],
               PCT(first, m, 0.50) / 1000, PCT(last, m, 0.50) / 1000, PCT(last, m, 0.99) / 1000);
    }
    }
    fflush(stdout);
    exit(0);
}

static void next_phase(bench_t *b)
{
    b->phase++;
    b->mark_ms = now_ms();
}

static bool waited(bench_t *b, double s)
{
    return now_ms() - b->mark_ms >= (uint64_t)(s * 1000);
}

static void tick_polls(bench_t *b)
{
    switch (b->phase) {
    case 0:
        polls_open(b, b->room_warm, b->warm);
        next_phase(b);
        break;
    case 1:
        if (b->poll_written == b->warm)
            next_phase(b);
        break;
    case 2:
        if (waited(b, 0.3)) {
            publish(b, b->room_warm, 0);
            next_phase(b);
        }
        break;
    case 3:
        if (b->poll_answered == b->warm && b->posts_done == 1)
            next_phase(b);
        break;
    case 4:
        if (waited(b, 1.0)) {
            b->rss_before = rss_kib(b->server);
            polls_open(b, b->room_main, b->n);
            next_phase(b);
        }
        break;
    case 5:
        if (b->poll_written == b->warm + b->n)
            next_phase(b);
        break;
    case 6:
        if (waited(b, b->settle_s)) {
            if (b->poll_answered != b->warm)
                fail("%u long polls were answered before anything was published",
                     b->poll_answered - b->warm);
            b->rss_after = rss_kib(b->server);
            publish(b, b->room_main, 1);
            next_phase(b);
        }
        break;
    case 7:
        if (b->poll_answered == b->warm + b->n && b->posts_done == 2) {
            if (b->poll_with_msg != b->warm + b->n)
                fail("%u long polls were answered without the message",
                     b->warm + b->n - b->poll_with_msg);
            finish(b);
        }
        break;
    }
}

static void tick_ws(bench_t *b)
{
    switch (b->phase) {
    case 0:
        subs_open(b, b->room_warm, b->warm);
        next_phase(b);
        break;
    case 1:
        if (b->sub_open == b->warm) {
            publish(b, b->room_warm, 0);
            next_phase(b);
        }
        break;
    case 2:
        if (b->sub_msgs == b->warm && b->posts_done == 1) {
            next_phase(b);
            b->closing_warm = true;
            for (unsigned i = 0; i < b->warm; i++)
                sq_ws_close(b->subs[i].ws, SQ_WS_NORMAL, "warm-up done");
        }
        break;
    case 3:
        if (b->sub_closed == b->warm) {
            b->closing_warm = false;
            next_phase(b);
        }
        break;
    case 4:
        if (waited(b, 1.0)) {
            b->rss_before = rss_kib(b->server);
            subs_open(b, b->room_main, b->n);
            next_phase(b);
        }
        break;
    case 5:
        if (b->sub_open == b->warm + b->n)
            next_phase(b);
        break;
    case 6:
        if (waited(b, b->settle_s)) {
            if (b->sub_msgs != b->warm)
                fail("subscribers got %" PRIu64 " messages before anything was published",
                     b->sub_msgs - b->warm);
            b->rss_after = rss_kib(b->server);
            publish(b, b->room_main, 1);
            next_phase(b);
        }
        break;
    case 7:
        if (b->sub_msgs == b->warm + b->n && b->posts_done == 2)
            finish(b);
        break;
    }
}

static void tick_latency(bench_t *b)
{
    switch (b->phase) {
    case 0:
        subs_open(b, b->room_main, b->n);
        next_phase(b);
        break;
    case 1:
        if (b->sub_open == b->n)
            next_phase(b);
        break;
    case 2:
        if (waited(b, 0.5)) {
            b->seq = 0;
            publish(b, b->room_main, b->seq);
            next_phase(b);
        }
        break;
    case 3:
        if (b->got[b->seq] == b->n && b->posts_done == b->seq + 1) {
            if (b->seq + 1 == b->nseq)
                finish(b);
            next_phase(b);
        }
        break;
    case 4:
        if (now_ms() - b->mark_ms >= b->gap_ms) {
            publish(b, b->room_main, ++b->seq);
            b->phase = 3;
        }
        break;
    }
}

static void on_tick(uv_timer_t *t)
{
    bench_t *b = t->data;
    if (b->mode == MODE_POLLS)
        tick_polls(b);
    else if (b->mode == MODE_WS)
        tick_ws(b);
    else
        tick_latency(b);
}

static void on_deadline(uv_timer_t *t)
{
    bench_t *b = t->data;
    fail("gave up after %.0f s in phase %d: polls held %u answered %u, subscribers open %u "
         "closed %u, messages %" PRIu64 ", posts %u/%u",
         b->timeout_s, b->phase, b->poll_written, b->poll_answered, b->sub_open, b->sub_closed,
         b->sub_msgs, b->posts_done, b->posts_sent);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-hub-load polls|ws|latency [-n N] [-w W] [-m M] [-P PID] "
                    "[-c C] [-s S] [-g MS] [-r ROOM] [-T S] http://127.0.0.1:PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static bench_t bench;
    bench_t *b = &bench;
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "polls") == 0)
        b->mode = MODE_POLLS;
    else if (strcmp(argv[1], "ws") == 0)
        b->mode = MODE_WS;
    else if (strcmp(argv[1], "latency") == 0)
        b->mode = MODE_LATENCY;
    else
        usage();
    b->n = b->mode == MODE_LATENCY ? 1000 : 10000;
    b->warm = b->mode == MODE_LATENCY ? 20 : 100;
    b->messages = 200;
    b->concurrency = 200;
    b->settle_s = 2;
    b->timeout_s = 120;
    b->gap_ms = 1;
    snprintf(b->prefix, sizeof(b->prefix), "bench");
    int ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "n:w:m:P:c:s:g:r:T:")) != -1) {
        switch (ch) {
        case 'n': b->n = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'w': b->warm = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': b->messages = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': b->server = (pid_t)strtol(optarg, NULL, 10); break;
        case 'c': b->concurrency = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': b->settle_s = strtod(optarg, NULL); break;
        case 'g': b->gap_ms = strtoull(optarg, NULL, 10); break;
        case 'r': snprintf(b->prefix, sizeof(b->prefix), "%s", optarg); break;
        case 'T': b->timeout_s = strtod(optarg, NULL); break;
        default: usage();
        }
    }
    if (optind != argc - 1)
        usage();
    if (b->n == 0 || b->concurrency == 0 || b->timeout_s <= 0 ||
        (b->mode == MODE_LATENCY && b->messages == 0))
        fail("-n, -c, -m and -T must be positive");
    if (b->mode != MODE_LATENCY && b->server <= 0)
        fail("%s needs the server's pid (-P) to read its memory", argv[1]);
    if (b->mode != MODE_LATENCY && b->warm == 0)
        b->warm = 1;

    const char *url = argv[optind];
    char host[16];
    int port = 0;
    if (sscanf(url, "http://%15[0-9.]:%d", host, &port) != 2 || port <= 0 || port > 65535)
        fail("%s: expected http://IPv4:PORT", url);
    if (uv_ip4_addr(host, port, &b->addr) != 0)
        fail("%s: not an IPv4 address", host);
    snprintf(b->hostport, sizeof(b->hostport), "%s:%d", host, port);
    snprintf(b->room_warm, sizeof(b->room_warm), "%.31s-%d-warm", b->prefix, (int)getpid());
    snprintf(b->room_main, sizeof(b->room_main), "%.31s-%d-%.8s", b->prefix, (int)getpid(), argv[1]);

    raise_nofile();
    uv_loop_t loop;
    uv_loop_init(&loop);
    b->loop = &loop;
    sq_ws_opts_init(&b->ws_opts);
    b->ws_opts.ping_interval_ms = 0; /* idle subscribers: the client sends nothing */
    b->ws_opts.idle_timeout_ms = 0;
    b->ws_opts.handshake_timeout_ms = 30000;
    if (b->mode != MODE_POLLS)
        b->subs = xcalloc((size_t)b->n + b->warm, sizeof(*b->subs));
    if (b->mode == MODE_LATENCY) {
        b->nseq = (uint64_t)b->warm + b->messages;
        b->t0_ns = xcalloc(b->nseq, sizeof(*b->t0_ns));
        b->got = xcalloc(b->nseq, sizeof(*b->got));
        b->last_ns = xcalloc(b->nseq, sizeof(*b->last_ns));
        b->first_ns = xcalloc(b->nseq, sizeof(*b->first_ns));
        b->cap_samples = (size_t)b->n * b->messages;
        b->samples_us = xcalloc(b->cap_samples, sizeof(*b->samples_us));
    }

    uv_timer_init(&loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, 0, 1);
    uv_timer_init(&loop, &b->deadline);
    b->deadline.data = b;
    uv_timer_start(&b->deadline, on_deadline, (uint64_t)(b->timeout_s * 1000), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    fail("the loop ended early");
    return 1;
}
