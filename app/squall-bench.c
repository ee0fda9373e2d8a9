/* squall-bench — squall's own load generator for HTTP/1.1 and WebSocket servers.
 *
 *   squall-bench http://127.0.0.1:8000/plaintext -c 256 -d 10s [--pipeline 16] [--threads N]
 *   squall-bench ws://127.0.0.1:8000/ws/echo -c 500 -d 10s --size 32 [--rate R]
 *   squall-bench http://127.0.0.1:8000/ --hold 10000 -d 10s --pid PID
 *
 * Lean code on libuv and llhttp, not the library's client (docs/performance.md says why:
 * a request here costs one uv_try_write of a prebuilt buffer and one llhttp pass, with no
 * allocation). Each thread runs one loop with its share of the connections; the main
 * thread keeps time, prints the progress line and merges the results.
 *
 * Latency goes into a log-linear histogram (HDR-style): values below 256 ns have a bucket
 * each, every power of two above is cut into 128 equal buckets, so a bucket is at most
 * 1/128 of its lower bound wide and a percentile reported as the bucket's midpoint is
 * within 0.4% of the measured value. With --rate, each message has an intended send time
 * on a fixed schedule and its latency is counted from that time, so a server that falls
 * behind shows it in the percentiles (no coordinated omission).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "llhttp.h"

#define PROG "squall-bench"
#define MAX_PIPELINE 1024
#define MAX_SOURCES 250      /* 127.0.0.1 .. 127.0.0.250 */
#define CONNECTS_IN_FLIGHT 256 /* per thread, while opening */
#define TICK_MS 50           /* timeouts and reconnects are checked this often */
#define RETRY_NS (10 * 1000 * 1000ull) /* a failed connection is retried after this */
#define WS_KEY "c3F1YWxsLWJlbmNoLWtleQ==" /* "squall-bench-key" */

/* ---- the histogram ---- */

#define H_SUB_BITS 7
#define H_HALF (1u << H_SUB_BITS)                  /* 128 buckets per power of two */
#define H_LEN ((64 - H_SUB_BITS) * H_HALF + H_HALF) /* up to 2^64 - 1 */

typedef struct hist {
    uint64_t n, sum, max;
    uint64_t count[H_LEN];
} hist_t;

static unsigned h_index(uint64_t v)
{
    if (v < 2 * H_HALF)
        return (unsigned)v;
    unsigned b = (unsigned)(63 - __builtin_clzll(v)) - H_SUB_BITS;
    return b * H_HALF + (unsigned)(v >> b);
}

/* The midpoint of bucket i: its lower bound plus half its width. */
static uint64_t h_value(unsigned i)
{
    if (i < 2 * H_HALF)
        return i;
    unsigned b = i / H_HALF - 1;
    uint64_t sub = i - b * H_HALF;
    return (sub << b) + ((1ull << b) >> 1);
}

static inline void h_add(hist_t *h, uint64_t v)
{
    h->count[h_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static void h_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < H_LEN; i++)
        into->count[i] += from->count[i];
    into->n += from->n;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

/* The value at quantile q (0..1): the smallest bucket whose cumulative count reaches
 * ceil(q * n), reported as its midpoint and never above the largest value seen. */
static uint64_t h_quantile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->n);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_LEN; i++) {
        seen += h->count[i];
        if (seen >= want) {
            uint64_t v = h_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- options ---- */

enum { E_CONNECT, E_READ, E_WRITE, E_STATUS, E_TIMEOUT, E_CLOSED, E_KINDS };
static const char *const err_name[E_KINDS] = {"connect", "read", "write",
                                              "status", "timeout", "closed"};

typedef struct opts {
    const char *url;
    bool ws;
    char host[300];
    char hostport[300];
    int port;
    char path[2048];
    struct sockaddr_storage dst;
    socklen_t dst_len;
    bool loopback4;           /* 127.0.0.0/8: other source addresses may be bound */
    unsigned conns, threads, pipeline, hold;
    uint64_t dur_ns, timeout_ns;
    size_t size;
    double rate;
    long pid;
    bool json, text;
} opts_t;

static opts_t g_o = {.conns = 64, .threads = 1, .pipeline = 1, .dur_ns = 10000000000ull,
                     .timeout_ns = 5000000000ull, .size = 32, .pid = -1};

/* What every connection sends, built once: `pipeline` requests (or frames) back to back,
 * so k of them are the first k * g_msg_len bytes. */
static char *g_msgs;
static size_t g_msg_len;
static char *g_hs;             /* the WebSocket upgrade request */
static size_t g_hs_len;
static char g_accept[64];      /* the Sec-WebSocket-Accept value the key asks for */

/* A fatal error seen by a loop thread (the descriptor limit); main prints it. */
static atomic_int g_fatal;

static const char usage_line[] =
    "usage: " PROG " URL [-c N] [-d DURATION] [--threads N] [--pipeline N] [--size BYTES] "
    "[--rate R] [--hold N [--pid PID]] [--timeout DURATION] [--text] [--json] (--help)";

static void usage(FILE *f)
{
    fprintf(f,
            "%s\n\n"
            "URL is http://HOST[:PORT]/PATH (GET requests on keep-alive connections) or\n"
            "ws://HOST[:PORT]/PATH (a WebSocket echo: each message sent is answered by one).\n\n"
            "  -c, --connections N   connections (64); split between the threads\n"
            "  -d, --duration D      how long to run (10s); D is 500ms, 10s, 2m or seconds\n"
            "  -t, --threads N       N loops in N threads (1); pin with taskset if you want\n"
            "  -p, --pipeline N      requests (messages) sent at once on a connection, the\n"
            "                        next batch when all are answered (1, at most %d); with\n"
            "                        --rate: at most N in flight on a connection\n"
            "  -s, --size BYTES      WebSocket message size (32); binary unless --text\n"
            "      --text            send text messages ('x' repeated) instead of binary\n"
            "  -r, --rate R          R requests (messages) per second in all, on a fixed\n"
            "                        schedule; latency counts from each intended send time\n"
            "      --hold N          open N idle connections (HTTP keep-alive after one\n"
            "                        request, or WebSocket after the upgrade), keep them -d,\n"
            "                        report the time to open them all (and, without --json,\n"
            "                        say so on stderr as soon as they are); -c is ignored\n"
            "      --pid PID         with --hold: the server's VmRSS (/proc/PID/status) before\n"
            "                        and after opening them, and the bytes per connection\n"
            "      --timeout D       a connect, upgrade or response slower than D is an\n"
            "                        error of kind timeout and the connection is reopened (5s)\n"
            "      --json            one JSON object on stdout instead of the text report\n"
            "  -h, --help            this text\n\n"
            "Errors are counted by kind: connect, read (reset, bad HTTP or frames), write,\n"
            "status (an answer that is not 2xx, or a refused upgrade), timeout, closed (the\n"
            "server closed a connection with requests in flight, a held one, or sent a close\n"
            "frame). A progress line is printed each second when stdout is a terminal.\n\n"
            "Limits: a process may open only RLIMIT_NOFILE files (20000 on some machines):\n"
            "above that, run several " PROG " processes with part of the connections each;\n"
            PROG " stops with one line on stderr when it would need more. On 127.0.0.0/8,\n"
            "when the ephemeral ports of one source address run out (EADDRNOTAVAIL, about\n"
            "28000 connections to one server), it binds 127.0.0.2, 127.0.0.3, ... in turn.\n"
            "Exit status: 0 after a run, 1 when the server cannot be reached or no request\n"
            "was answered (--hold: not every connection opened), 2 on a bad flag.\n",
            usage_line, MAX_PIPELINE);
}

static void bad_flag(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_flag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; %s\n", usage_line);
    exit(2);
}

/* "10s", "500ms", "2m", "1.5" (seconds), "250us". Returns false when it is not one. */
static bool parse_duration(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || v > 1e7)
        return false;
    double mul = 1e9;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1e9;
    else if (strcmp(end, "ms") == 0)
        mul = 1e6;
    else if (strcmp(end, "us") == 0)
        mul = 1e3;
    else if (strcmp(end, "m") == 0)
        mul = 60e9;
    else if (strcmp(end, "h") == 0)
        mul = 3600e9;
    else
        return false;
    *ns = (uint64_t)(v * mul);
    return true;
}

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || errno || v > max)
        return false;
    *out = v;
    return true;
}

static void parse_url(const char *url)
{
    const char *p;
    int defport = 80;
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        g_o.ws = true;
    } else {
        bad_flag("URL must start with http:// or ws:// (https and wss are not supported): %s",
                 url);
    }
    const char *slash = strchr(p, '/');
    size_t hostlen = slash ? (size_t)(slash - p) : strlen(p);
    char hp[300];
    if (hostlen == 0 || hostlen >= sizeof hp)
        bad_flag("bad host in URL %s", url);
    memcpy(hp, p, hostlen);
    hp[hostlen] = '\0';
    snprintf(g_o.hostport, sizeof g_o.hostport, "%s", hp);
    snprintf(g_o.path, sizeof g_o.path, "%s", slash ? slash : "/");
    char *port = NULL;
    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (!close)
            bad_flag("bad host in URL %s", url);
        *close = '\0';
        snprintf(g_o.host, sizeof g_o.host, "%s", hp + 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1])
            bad_flag("bad host in URL %s", url);
    } else {
        port = strchr(hp, ':');
        if (port)
            *port++ = '\0';
        snprintf(g_o.host, sizeof g_o.host, "%s", hp);
    }
    unsigned long pv = (unsigned long)defport;
    if (port && (!parse_uint(port, 65535, &pv) || pv == 0))
        bad_flag("bad port in URL %s", url);
    g_o.port = (int)pv;
    for (const char *c = g_o.path; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            bad_flag("the path of URL %s holds a space or a control character", url);
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            if (g_o.url)
                bad_flag("one URL only (%s is a second one)", a);
            g_o.url = a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--json") == 0) {
            g_o.json = true;
            continue;
        }
        if (strcmp(a, "--text") == 0) {
            g_o.text = true;
            continue;
        }
        /* The flags with a value: "--flag V" or "--flag=V". */
        char name[32];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && a[1] == '-') {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof name)
                bad_flag("unknown option %s", a);
            memcpy(name, a, n);
            name[n] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        static const char *const with_value[] = {
            "-c", "--connections", "-d", "--duration", "-t", "--threads", "-p", "--pipeline",
            "-s", "--size", "-r", "--rate", "--hold", "--pid", "--timeout", NULL};
        bool known = false;
        for (int k = 0; with_value[k]; k++)
            if (strcmp(name, with_value[k]) == 0)
                known = true;
        if (!known)
            bad_flag("unknown option %s", a);
        if (!val) {
            if (i + 1 >= argc)
                bad_flag("%s needs a value", name);
            val = argv[++i];
        }
        unsigned long v;
        if (strcmp(name, "-c") == 0 || strcmp(name, "--connections") == 0) {
            if (!parse_uint(val, 10000000, &v) || v == 0)
                bad_flag("-c wants a number of connections above 0, not %s", val);
            g_o.conns = (unsigned)v;
        } else if (strcmp(name, "-d") == 0 || strcmp(name, "--duration") == 0) {
            if (!parse_duration(val, &g_o.dur_ns) || g_o.dur_ns == 0)
                bad_flag("-d wants a duration such as 10s or 500ms, not %s", val);
        } else if (strcmp(name, "-t") == 0 || strcmp(name, "--threads") == 0) {
            if (!parse_uint(val, 256, &v) || v == 0)
                bad_flag("--threads wants 1 to 256, not %s", val);
            g_o.threads = (unsigned)v;
        } else if (strcmp(name, "-p") == 0 || strcmp(name, "--pipeline") == 0) {
            if (!parse_uint(val, MAX_PIPELINE, &v) || v == 0)
                bad_flag("--pipeline wants 1 to 1024, not %s", val);
            g_o.pipeline = (unsigned)v;
        } else if (strcmp(name, "-s") == 0 || strcmp(name, "--size") == 0) {
            if (!parse_uint(val, 64ul << 20, &v))
                bad_flag("--size wants 0 to 67108864 bytes, not %s", val);
            g_o.size = v;
        } else if (strcmp(name, "-r") == 0 || strcmp(name, "--rate") == 0) {
            char *end;
            errno = 0;
            double r = strtod(val, &end);
            if (end == val || *end || errno || !(r > 0) || r > 1e9)
                bad_flag("--rate wants messages per second above 0, not %s", val);
            g_o.rate = r;
        } else if (strcmp(name, "--hold") == 0) {
            if (!parse_uint(val, 10000000, &v) || v == 0)
                bad_flag("--hold wants a number of connections above 0, not %s", val);
            g_o.hold = (unsigned)v;
        } else if (strcmp(name, "--pid") == 0) {
            if (!parse_uint(val, INT_MAX, &v) || v == 0)
                bad_flag("--pid wants a process id, not %s", val);
            g_o.pid = (long)v;
        } else if (strcmp(name, "--timeout") == 0) {
            if (!parse_duration(val, &g_o.timeout_ns) || g_o.timeout_ns < 1000000)
                bad_flag("--timeout wants a duration of 1ms or more, not %s", val);
        }
    }
    if (!g_o.url)
        bad_flag("%s", "no URL");
    parse_url(g_o.url);
    if (g_o.pid > 0 && !g_o.hold)
        bad_flag("%s", "--pid goes with --hold");
    if (g_o.hold && g_o.rate > 0)
        bad_flag("%s", "--rate does not go with --hold");
    if (g_o.hold)
        g_o.conns = g_o.hold;
    if (g_o.threads > g_o.conns)
        g_o.threads = g_o.conns;
}

/* ---- start-up checks ---- */

static void resolve(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", g_o.port);
    int rc = getaddrinfo(g_o.host, port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, PROG ": %s: %s\n", g_o.host, gai_strerror(rc));
        exit(1);
    }
    memcpy(&g_o.dst, res->ai_addr, res->ai_addrlen);
    g_o.dst_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (g_o.dst.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&g_o.dst;
        g_o.loopback4 = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
}

/* One blocking connect before the run: a server that is not there is one line and exit
 * 1, not a run full of connect errors. */
static void preflight(void)
{
    int fd = socket(g_o.dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, PROG ": socket: %s\n", strerror(errno));
        exit(1);
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)&g_o.dst, g_o.dst_len) != 0) {
        int e = errno;
        close(fd);
        fprintf(stderr, PROG ": connect to %s: %s\n", g_o.hostport,
                e == EINPROGRESS     ? "timed out"
                : e == ECONNREFUSED ? "connection refused (is the server running?)"
                                    : strerror(e));
        exit(1);
    }
    close(fd);
}

/* Raises the soft descriptor limit to the hard one; fails with one line when the
 * connections cannot fit. */
static void check_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t need = (uint64_t)g_o.conns + 8ull * g_o.threads + 16;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        fprintf(stderr,
                PROG ": %u connections need about %" PRIu64 " file descriptors and this "
                "process may open %" PRIu64 ": run several " PROG " processes with part "
                "of the connections each\n",
                g_o.conns, need, (uint64_t)rl.rlim_cur);
        exit(1);
    }
}

static long read_rss_kb(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static void build_messages(void)
{
    char one[4096];
    size_t len;
    if (!g_o.ws) {
        int n = snprintf(one, sizeof one, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", g_o.path,
                         g_o.hostport);
        if (n < 0 || (size_t)n >= sizeof one) {
            fprintf(stderr, PROG ": the URL is too long\n");
            exit(2);
        }
        len = (size_t)n;
        g_msg_len = len;
        g_msgs = malloc(len * g_o.pipeline);
        if (!g_msgs)
            abort();
        for (unsigned i = 0; i < g_o.pipeline; i++)
            memcpy(g_msgs + i * len, one, len);
        return;
    }
    /* The upgrade (RFC 6455 section 4.1) with a fixed key, and the accept value the
     * server must answer with: base64(SHA-1(key + GUID)), section 4.2.2. */
    int n = snprintf(one, sizeof one,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     g_o.path, g_o.hostport);
    if (n < 0 || (size_t)n >= sizeof one) {
        fprintf(stderr, PROG ": the URL is too long\n");
        exit(2);
    }
    g_hs_len = (size_t)n;
    g_hs = malloc(g_hs_len);
    if (!g_hs)
        abort();
    memcpy(g_hs, one, g_hs_len);
    static const char guid[] = WS_KEY "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(guid, sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL))
        abort();
    EVP_EncodeBlock((unsigned char *)g_accept, md, (int)mdlen);

    /* One client frame (section 5.2): FIN, binary or text, masked with a fixed key. */
    size_t hdr = 2 + (g_o.size > 125 ? (g_o.size > 65535 ? 8 : 2) : 0) + 4;
    g_msg_len = hdr + g_o.size;
    g_msgs = malloc(g_msg_len * g_o.pipeline);
    if (!g_msgs)
        abort();
    unsigned char *f = (unsigned char *)g_msgs;
    size_t i = 0;
    f[i++] = 0x80 | (g_o.text ? 0x1 : 0x2);
    if (g_o.size <= 125) {
        f[i++] = 0x80 | (unsigned char)g_o.size;
    } else if (g_o.size <= 65535) {
        f[i++] = 0x80 | 126;
        f[i++] = (unsigned char)(g_o.size >> 8);
        f[i++] = (unsigned char)g_o.size;
    } else {
        f[i++] = 0x80 | 127;
        for (int s = 56; s >= 0; s -= 8)
            f[i++] = (unsigned char)((uint64_t)g_o.size >> s);
    }
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(f + i, mask, 4);
    i += 4;
    for (size_t k = 0; k < g_o.size; k++) {
        unsigned char b = g_o.text ? 'x' : (unsigned char)(k * 31 + 7);
        f[i + k] = b ^ mask[k & 3];
    }
    for (unsigned p = 1; p < g_o.pipeline; p++)
        memcpy(g_msgs + p * g_msg_len, g_msgs, g_msg_len);
}

/* ---- connections and loops ---- */

enum { C_NEW, C_DOWN, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING };

typedef struct worker worker_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    worker_t *w;
    llhttp_t parser;
    uint64_t *times;       /* send (or intended send) times of the messages in flight */
    uint64_t since;        /* when the connect or upgrade started */
    uint64_t retry_at;     /* C_DOWN: reconnect at this time */
    unsigned head, inflight, owed, done_in_read;
    unsigned slots;        /* --rate: this connection's share of the worker's free_slots */
    uint8_t src;           /* the source address it was opened from (worker_t.src) */
    uint8_t state;
    bool writing, close_after, established, ready, opening;
    /* WebSocket frames being read (RFC 6455 section 5.2) */
    uint8_t hdr[14], hdr_len, opcode, ctl_len;
    bool fin;
    uint64_t remaining;
    uint8_t ctl[125];
    uint8_t pong[2 + 4 + 125];
    uint16_t hs_len;
    char hs[510];
} conn_t;

struct worker {
    unsigned id;
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_timer_t tick;
    uv_poll_t rate_poll;
    int tfd;
    pthread_t th;
    conn_t *conns;
    unsigned nconns;
    uint64_t *times;
    unsigned next_connect, connecting;
    unsigned src;            /* 0: no bind; k: 127.0.0.(k+1) */
    bool stopping;
    uint64_t now;
    /* --rate */
    uint64_t t0;
    double interval_ns;
    uint64_t issued, armed;
    unsigned free_slots, cursor;
    hist_t hist;
    uint64_t bytes;
    /* read by the main thread while running (one writer: relaxed load + store) */
    _Atomic uint64_t done, errors, opened, failed;
    _Atomic uint64_t err[E_KINDS];
    char rbuf[65536];
};

static uint64_t g_start_ns;
static llhttp_settings_t g_settings;

static inline void bump(_Atomic uint64_t *x, uint64_t k)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + k,
                          memory_order_relaxed);
}

static void conn_start(conn_t *c);

/* --rate: room for k more messages on c (k < 0: fewer). */
static inline void slots_add(conn_t *c, int k)
{
    c->slots = (unsigned)((int)c->slots + k);
    c->w->free_slots = (unsigned)((int)c->w->free_slots + k);
}
static void conn_close(conn_t *c, bool retry_now);
static void dispatch(worker_t *w);

static void count_err(conn_t *c, int kind)
{
    worker_t *w = c->w;
    if (w->stopping)
        return;
    bump(&w->err[kind], 1);
    bump(&w->errors, 1);
}

/* A held connection that could not be opened. */
static void hold_failed(conn_t *c)
{
    if (g_o.hold && !c->established && !c->w->stopping) {
        c->established = true; /* counted once */
        bump(&c->w->failed, 1);
    }
}

/* The connection is open (upgraded, or its first answer came) or gone: it no longer
 * counts against CONNECTS_IN_FLIGHT. Counting the whole opening, not only the TCP
 * connect, keeps the server's accept queue from overflowing (a dropped SYN costs a
 * second) while --hold opens thousands. */
static void open_done(conn_t *c)
{
    if (c->opening) {
        c->opening = false;
        c->w->connecting--;
    }
}

static void start_more(worker_t *w);

static void established(conn_t *c)
{
    if (c->opening) {
        open_done(c);
        start_more(c->w);
    }
    if (c->established)
        return;
    c->established = true;
    if (g_o.hold)
        bump(&c->w->opened, 1);
}

static void on_write(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    c->writing = false;
    if (status < 0) {
        if (status != UV_ECANCELED) {
            count_err(c, E_WRITE);
            conn_close(c, false);
        }
        return;
    }
    if (c->owed && c->state == C_OPEN) {
        unsigned k = c->owed;
        c->owed = 0;
        uv_buf_t b = uv_buf_init(g_msgs, (unsigned)(k * g_msg_len));
        c->writing = true;
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
            c->writing = false;
            count_err(c, E_WRITE);
            conn_close(c, false);
        }
    }
}

/* Writes len bytes that stay valid (the prebuilt messages, or the connection's own pong):
 * a uv_try_write, and uv_write for what the socket did not take. */
static void conn_write(conn_t *c, const void *buf, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)buf, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len)
        return;
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        count_err(c, E_WRITE);
        conn_close(c, false);
        return;
    }
    b.base += n;
    b.len -= (size_t)n;
    c->writing = true;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writing = false;
        count_err(c, E_WRITE);
        conn_close(c, false);
    }
}

/* Sends k messages, each stamped with t (closed loop: now) or, with --rate, the
 * intended times t, t + step, ... */
static void conn_send(conn_t *c, unsigned k, uint64_t t, double step)
{
    unsigned p = g_o.pipeline;
    for (unsigned i = 0; i < k; i++) {
        c->times[(c->head + c->inflight) % p] = t + (uint64_t)(step * i);
        c->inflight++;
    }
    if (c->writing) {
        c->owed += k;
        return;
    }
    conn_write(c, g_msgs, k * g_msg_len);
}

/* One answer: a response, or a whole echoed message. */
static void conn_answered(conn_t *c)
{
    worker_t *w = c->w;
    if (c->inflight == 0)
        return; /* nothing was asked: not ours to count */
    uint64_t t = c->times[c->head];
    c->head = (c->head + 1) % g_o.pipeline;
    c->inflight--;
    if (!w->stopping) {
        h_add(&w->hist, w->now > t ? w->now - t : 0);
        c->done_in_read++;
    }
    established(c);
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    unsigned st = p->status_code;
    if (st < 200 || st > 299)
        count_err(c, E_STATUS);
    if (!llhttp_should_keep_alive(p))
        c->close_after = true;
    conn_answered(c);
    return 0;
}

static void ws_send_pong(conn_t *c)
{
    if (c->writing)
        return; /* a pong behind a big write is skipped: rare, and only a courtesy */
    size_t n = c->ctl_len;
    c->pong[0] = 0x8a;
    c->pong[1] = (uint8_t)(0x80 | n);
    memset(c->pong + 2, 0, 4); /* mask 0: the payload goes as it is */
    memcpy(c->pong + 6, c->ctl, n);
    conn_write(c, c->pong, 6 + n);
}

/* A frame ended (RFC 6455 section 5.2 to 5.5). */
static void ws_frame_done(conn_t *c)
{
    switch (c->opcode) {
    case 0x0:
    case 0x1:
    case 0x2:
        if (c->fin)
            conn_answered(c);
        break;
    case 0x8:
        count_err(c, E_CLOSED);
        c->close_after = true;
        c->inflight = 0;
        break;
    case 0x9:
        if (c->state == C_OPEN)
            ws_send_pong(c);
        break;
    default:
        break;
    }
}

/* Reads server frames: the header byte by byte (2 to 14 bytes), the payload skipped,
 * control payloads kept for a pong. Returns false on a frame that breaks the protocol. */
static bool ws_feed(conn_t *c, const uint8_t *p, size_t n)
{
    while (n > 0 && !c->close_after) {
        if (c->remaining > 0) {
            size_t take = n < c->remaining ? n : (size_t)c->remaining;
            if (c->opcode >= 0x8) {
                memcpy(c->ctl + c->ctl_len, p, take);
                c->ctl_len = (uint8_t)(c->ctl_len + take);
            }
            c->remaining -= take;
            p += take;
            n -= take;
            if (c->remaining == 0)
                ws_frame_done(c);
            continue;
        }
        c->hdr[c->hdr_len++] = *p++;
        n--;
        if (c->hdr_len < 2)
            continue;
        unsigned len7 = c->hdr[1] & 0x7f;
        unsigned need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
        if (c->hdr_len < need)
            continue;
        uint64_t len = len7;
        if (len7 == 126)
            len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
        else if (len7 == 127) {
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | c->hdr[i];
        }
        c->opcode = c->hdr[0] & 0x0f;
        c->fin = (c->hdr[0] & 0x80) != 0;
        c->hdr_len = 0;
        c->ctl_len = 0;
        if (c->opcode >= 0x8 && len > 125)
            return false;
        c->remaining = len;
        if (len == 0)
            ws_frame_done(c);
    }
    return true;
}

/* The upgrade's answer: "HTTP/1.1 101" with the right Sec-WebSocket-Accept (RFC 6455
 * section 4.2.2). Returns the bytes of the buffer that belong to the answer, 0 when
 * it is not whole yet, -1 when it refuses. */
static ssize_t ws_handshake(conn_t *c, const char *p, size_t n)
{
    size_t room = sizeof c->hs - 1 - c->hs_len;
    size_t take = n < room ? n : room;
    memcpy(c->hs + c->hs_len, p, take);
    size_t old = c->hs_len;
    c->hs_len = (uint16_t)(c->hs_len + take);
    c->hs[c->hs_len] = '\0';
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end)
        return c->hs_len == sizeof c->hs - 1 ? -1 : 0;
    end[2] = '\0';
    if (strncmp(c->hs, "HTTP/1.1 101 ", 13) != 0)
        return -1;
    const char *a = strcasestr(c->hs, "\r\nSec-WebSocket-Accept:");
    if (!a)
        return -1;
    a += 23;
    while (*a == ' ' || *a == '\t')
        a++;
    size_t al = strlen(g_accept);
    if (strncmp(a, g_accept, al) != 0 || (a[al] != '\r' && a[al] != ' '))
        return -1;
    return (ssize_t)((size_t)(end + 4 - c->hs) - old);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    conn_t *c = h->data;
    buf->base = c->w->rbuf;
    buf->len = sizeof c->w->rbuf;
}

static void after_answers(conn_t *c)
{
    worker_t *w = c->w;
    unsigned k = c->done_in_read;
    c->done_in_read = 0;
    if (k)
        bump(&w->done, k);
    if (g_o.rate > 0 && c->ready)
        slots_add(c, (int)k);
    if (c->close_after) {
        conn_close(c, true);
        return;
    }
    if (!k || w->stopping || g_o.hold)
        return;
    if (g_o.rate > 0)
        dispatch(w);
    else if (c->inflight == 0)
        conn_send(c, g_o.pipeline, w->now, 0); /* the next batch once all are answered */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    worker_t *w = c->w;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            if (c->inflight > 0 || g_o.hold || c->state == C_HANDSHAKE)
                count_err(c, E_CLOSED);
        } else {
            count_err(c, E_READ);
        }
        hold_failed(c);
        conn_close(c, nread == UV_EOF && c->inflight == 0 && !g_o.hold);
        return;
    }
    w->bytes += (uint64_t)nread;
    w->now = uv_hrtime();
    const char *p = buf->base;
    size_t n = (size_t)nread;
    if (!g_o.ws) {
        llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
        if (e != HPE_OK) {
            count_err(c, E_READ);
            hold_failed(c);
            c->done_in_read = 0;
            conn_close(c, false);
            return;
        }
        after_answers(c);
        return;
    }
    if (c->state == C_HANDSHAKE) {
        ssize_t used = ws_handshake(c, p, n);
        if (used < 0) {
            count_err(c, E_STATUS);
            hold_failed(c);
            conn_close(c, false);
            return;
        }
        if (used == 0)
            return;
        p += used;
        n -= (size_t)used;
        c->state = C_OPEN;
        established(c);
        if (!g_o.hold) {
            c->ready = true;
            if (g_o.rate > 0) {
                slots_add(c, (int)g_o.pipeline);
                dispatch(w);
            } else {
                conn_send(c, g_o.pipeline, w->now, 0);
            }
        }
        if (c->state != C_OPEN)
            return;
    }
    if (!ws_feed(c, (const uint8_t *)p, n)) {
        count_err(c, E_READ);
        c->done_in_read = 0;
        conn_close(c, false);
        return;
    }
    after_answers(c);
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    worker_t *w = c->w;
    c->state = C_DOWN;
    if (w->stopping)
        return;
    start_more(w);
    if (g_o.hold && c->established && c->retry_at == 0)
        return; /* a held connection is not reopened */
    if (c->retry_at <= w->now)
        conn_start(c);
}

/* Closes the connection; it is reopened at once (retry_now: the server ended a
 * keep-alive connection) or after RETRY_NS (an error), unless we are stopping. */
static void conn_close(conn_t *c, bool retry_now)
{
    worker_t *w = c->w;
    if (c->state == C_CLOSING || c->state == C_DOWN || c->state == C_NEW)
        return;
    slots_add(c, -(int)c->slots);
    open_done(c);
    w->now = uv_hrtime();
    c->retry_at = retry_now ? w->now : w->now + RETRY_NS;
    if (g_o.hold)
        c->retry_at = 0;
    c->state = C_CLOSING;
    c->ready = false;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void start_more(worker_t *w)
{
    if (w->stopping)
        return;
    while (w->next_connect < w->nconns && w->connecting < CONNECTS_IN_FLIGHT && !w->stopping)
        conn_start(&w->conns[w->next_connect++]);
}

static void fatal_fds(worker_t *w)
{
    int zero = 0;
    if (atomic_compare_exchange_strong(&g_fatal, &zero, 1))
        fprintf(stderr,
                PROG ": out of file descriptors (RLIMIT_NOFILE) after %u connections: run "
                "several " PROG " processes with part of the connections each\n",
                w->next_connect);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    worker_t *w = c->w;
    if (status == UV_ECANCELED || w->stopping)
        return;
    if (status == UV_EADDRNOTAVAIL && g_o.loopback4 && w->src + 1 < MAX_SOURCES) {
        /* This source address has no ephemeral port left for the server: next one. */
        if (w->src == c->src)
            w->src++;
        conn_close(c, true);
        c->retry_at = c->w->now; /* reopened at once, held or not */
        return;
    }
    if (status < 0) {
        if (status == UV_EMFILE || status == UV_ENFILE)
            fatal_fds(w);
        count_err(c, E_CONNECT);
        hold_failed(c);
        conn_close(c, false);
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        count_err(c, E_READ);
        hold_failed(c);
        conn_close(c, false);
        return;
    }
    w->now = uv_hrtime();
    c->since = w->now;
    if (g_o.ws) {
        c->state = C_HANDSHAKE;
        c->hs_len = 0;
        conn_write(c, g_hs, g_hs_len);
        return;
    }
    c->state = C_OPEN;
    llhttp_init(&c->parser, HTTP_RESPONSE, &g_settings);
    c->parser.data = c;
    if (g_o.hold) {
        conn_send(c, 1, w->now, 0);
    } else {
        c->ready = true;
        if (g_o.rate > 0) {
            slots_add(c, (int)g_o.pipeline);
            dispatch(w);
        } else {
            conn_send(c, g_o.pipeline, w->now, 0);
        }
    }
}

static void conn_start(conn_t *c)
{
    worker_t *w = c->w;
    c->head = c->inflight = c->owed = c->done_in_read = 0;
    c->writing = c->close_after = c->ready = c->opening = false;
    c->hdr_len = 0;
    c->remaining = 0;
    c->hs_len = 0;
    c->slots = 0;
    int rc = uv_tcp_init_ex(&w->loop, &c->tcp, g_o.dst.ss_family);
    if (rc < 0) {
        if (rc == UV_EMFILE || rc == UV_ENFILE)
            fatal_fds(w);
        count_err(c, E_CONNECT);
        hold_failed(c);
        c->state = C_DOWN;
        c->retry_at = w->now + RETRY_NS;
        return;
    }
    c->tcp.data = c;
    c->creq.data = c;
    c->state = C_CONNECTING;
    w->now = uv_hrtime();
    c->since = w->now;
    uv_tcp_nodelay(&c->tcp, 1);
    unsigned src = w->src;
    c->src = (uint8_t)src;
    if (src > 0) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl((127u << 24) | (src + 1));
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&sa, 0);
        if (rc < 0) {
            count_err(c, E_CONNECT);
            hold_failed(c);
            conn_close(c, false);
            return;
        }
    }
    rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&g_o.dst, on_connect);
    if (rc < 0) {
        if (rc == UV_EADDRNOTAVAIL && g_o.loopback4 && w->src + 1 < MAX_SOURCES) {
            if (w->src == src)
                w->src++;
            conn_close(c, true);
            c->retry_at = w->now;
            return;
        }
        count_err(c, E_CONNECT);
        hold_failed(c);
        conn_close(c, false);
        return;
    }
    w->connecting++;
    c->opening = true;
}

/* --rate: hands the messages that are due to connections with room, oldest first. */
static void dispatch(worker_t *w)
{
    uint64_t now = uv_hrtime();
    uint64_t due = now <= w->t0 ? 0 : (uint64_t)((double)(now - w->t0) / w->interval_ns) + 1;
    unsigned p = g_o.pipeline;
    for (unsigned scanned = 0; w->issued < due && w->free_slots > 0 && scanned < w->nconns;
         scanned++) {
        conn_t *c = &w->conns[w->cursor];
        w->cursor = (w->cursor + 1) % w->nconns;
        if (!c->ready || c->inflight >= p)
            continue;
        uint64_t k = p - c->inflight;
        if (k > due - w->issued)
            k = due - w->issued;
        uint64_t t = w->t0 + (uint64_t)((double)w->issued * w->interval_ns);
        w->issued += k;
        slots_add(c, -(int)k);
        conn_send(c, (unsigned)k, t, w->interval_ns);
        scanned = 0;
    }
    /* Wake at the next intended send time. */
    uint64_t next = w->t0 + (uint64_t)((double)w->issued * w->interval_ns);
    if (w->issued < due)
        next = now + 1000000; /* all busy: an answer frees a slot; look again in 1 ms */
    if (next == w->armed)
        return;
    w->armed = next;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(next / 1000000000ull);
    its.it_value.tv_nsec = (long)(next % 1000000000ull);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_rate(uv_poll_t *h, int status, int events)
{
    worker_t *w = h->data;
    uint64_t ticks;
    if (read(w->tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
        return;
    if (!w->stopping)
        dispatch(w);
}

/* Every TICK_MS: timeouts, and connections waiting to be reopened. */
static void on_tick(uv_timer_t *t)
{
    worker_t *w = t->data;
    uint64_t now = uv_hrtime();
    w->now = now;
    for (unsigned i = 0; i < w->next_connect; i++) {
        conn_t *c = &w->conns[i];
        switch (c->state) {
        case C_CONNECTING:
        case C_HANDSHAKE:
            if (now - c->since > g_o.timeout_ns) {
                count_err(c, E_TIMEOUT);
                hold_failed(c);
                conn_close(c, false);
            }
            break;
        case C_OPEN:
            if (c->inflight > 0 && now > c->times[c->head] &&
                now - c->times[c->head] > g_o.timeout_ns) {
                count_err(c, E_TIMEOUT);
                hold_failed(c);
                conn_close(c, false);
            }
            break;
        case C_DOWN:
            if (!(g_o.hold && c->established) && c->retry_at <= now && c->retry_at != 0)
                conn_start(c);
            break;
        default:
            break;
        }
    }
    start_more(w);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop(uv_async_t *a)
{
    worker_t *w = a->data;
    w->stopping = true;
    for (unsigned i = 0; i < w->nconns; i++)
        if (w->conns[i].state != C_NEW && w->conns[i].state != C_DOWN &&
            w->conns[i].state != C_CLOSING)
            w->conns[i].state = C_CLOSING;
    uv_walk(&w->loop, close_walk, NULL);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    w->now = uv_hrtime();
    if (g_o.rate > 0) {
        w->t0 = g_start_ns;
        dispatch(w);
    }
    start_more(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int worker_init(worker_t *w, unsigned id, unsigned nconns)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->nconns = nconns;
    w->tfd = -1;
    if (uv_loop_init(&w->loop) != 0)
        return -1;
    w->conns = calloc(nconns, sizeof *w->conns);
    w->times = calloc((size_t)nconns * g_o.pipeline, sizeof *w->times);
    if (!w->conns || !w->times)
        return -1;
    for (unsigned i = 0; i < nconns; i++) {
        w->conns[i].w = w;
        w->conns[i].times = w->times + (size_t)i * g_o.pipeline;
        w->conns[i].state = C_NEW;
    }
    uv_async_init(&w->loop, &w->stop_async, on_stop);
    w->stop_async.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, TICK_MS, TICK_MS);
    if (g_o.rate > 0) {
        w->interval_ns = 1e9 * g_o.threads / g_o.rate;
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->tfd < 0)
            return -1;
        uv_poll_init(&w->loop, &w->rate_poll, w->tfd);
        w->rate_poll.data = w;
        uv_poll_start(&w->rate_poll, UV_READABLE, on_rate);
    }
    return 0;
}

/* ---- the run and its report ---- */

typedef struct totals {
    uint64_t done, bytes, opened, failed, errors, err[E_KINDS];
} totals_t;

static void sum_live(worker_t *ws, totals_t *t)
{
    memset(t, 0, sizeof *t);
    for (unsigned i = 0; i < g_o.threads; i++) {
        t->done += atomic_load_explicit(&ws[i].done, memory_order_relaxed);
        t->opened += atomic_load_explicit(&ws[i].opened, memory_order_relaxed);
        t->failed += atomic_load_explicit(&ws[i].failed, memory_order_relaxed);
        t->errors += atomic_load_explicit(&ws[i].errors, memory_order_relaxed);
        for (int k = 0; k < E_KINDS; k++)
            t->err[k] += atomic_load_explicit(&ws[i].err[k], memory_order_relaxed);
    }
}

static void sleep_until(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void progress(bool tty, uint64_t now, uint64_t *last_done, uint64_t *last_ns,
                     const totals_t *t, const char *what)
{
    if (!tty)
        return;
    double secs = (double)(now - g_start_ns) / 1e9;
    double rate = now > *last_ns ? (double)(t->done - *last_done) * 1e9 / (double)(now - *last_ns)
                                 : 0;
    if (g_o.hold)
        printf("\r\033[K%6.1fs  %" PRIu64 " of %u open, %" PRIu64 " failed, %" PRIu64 " errors",
               secs, t->opened, g_o.hold, t->failed, t->errors);
    else
        printf("\r\033[K%6.1fs  %.0f %s/s  %" PRIu64 " errors", secs, rate, what, t->errors);
    fflush(stdout);
    *last_done = t->done;
    *last_ns = now;
}

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(argc, argv);
    resolve();
    check_fd_limit();
    build_messages();
    preflight();
    signal(SIGPIPE, SIG_IGN);

    llhttp_settings_init(&g_settings);
    g_settings.on_message_complete = on_message_complete;

    long rss_before = g_o.pid > 0 ? read_rss_kb(g_o.pid) : -1;
    if (g_o.pid > 0 && rss_before < 0) {
        fprintf(stderr, PROG ": cannot read /proc/%ld/status\n", g_o.pid);
        return 1;
    }

    worker_t *ws = calloc(g_o.threads, sizeof *ws);
    if (!ws)
        abort();
    for (unsigned i = 0; i < g_o.threads; i++) {
        unsigned n = g_o.conns / g_o.threads + (i < g_o.conns % g_o.threads);
        if (worker_init(&ws[i], i, n) != 0) {
            fprintf(stderr, PROG ": cannot set up thread %u: out of memory or descriptors\n",
                    i);
            return 1;
        }
    }
    bool tty = isatty(STDOUT_FILENO) && !g_o.json;
    const char *what = g_o.ws ? "messages" : "requests";
    g_start_ns = uv_hrtime();
    for (unsigned i = 0; i < g_o.threads; i++)
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, PROG ": pthread_create failed\n");
            return 1;
        }

    totals_t t;
    uint64_t last_done = 0, last_ns = g_start_ns;
    uint64_t open_ns = 0, hold_from = 0;
    long rss_after = -1;
    uint64_t next_print = g_start_ns + 1000000000ull;
    if (g_o.hold) {
        /* Opening: until every connection is open or has failed. */
        for (;;) {
            sum_live(ws, &t);
            uint64_t now = uv_hrtime();
            if (t.opened + t.failed >= g_o.hold || atomic_load(&g_fatal))
                break;
            if (now >= next_print) {
                progress(tty, now, &last_done, &last_ns, &t, what);
                next_print += 1000000000ull;
            }
            sleep_until(now + 2000000);
        }
        open_ns = uv_hrtime() - g_start_ns;
        /* at once, for a script that waits for several generators to be open (with
         * --json, the one object on stdout is all there is) */
        if (!g_o.json)
            fprintf(stderr, "%s: %llu of %u open in %.3f s (%llu failed), holding\n", PROG,
                (unsigned long long)t.opened, g_o.hold, (double)open_ns / 1e9,
                (unsigned long long)t.failed);
        if (g_o.pid > 0) {
            sleep_until(uv_hrtime() + 100000000ull); /* let the server settle */
            rss_after = read_rss_kb(g_o.pid);
        }
        hold_from = uv_hrtime();
    }
    uint64_t end = (g_o.hold ? hold_from : g_start_ns) + g_o.dur_ns;
    while (!atomic_load(&g_fatal)) {
        uint64_t now = uv_hrtime();
        if (now >= end)
            break;
        if (now >= next_print) {
            sum_live(ws, &t);
            progress(tty, now, &last_done, &last_ns, &t, what);
            next_print += 1000000000ull;
        }
        uint64_t wake = next_print < end ? next_print : end;
        sleep_until(wake < now + 100000000ull ? wake : now + 100000000ull);
    }
    uint64_t stop_ns = uv_hrtime();
    for (unsigned i = 0; i < g_o.threads; i++)
        uv_async_send(&ws[i].stop_async);
    for (unsigned i = 0; i < g_o.threads; i++)
        pthread_join(ws[i].th, NULL);
    if (tty)
        printf("\r\033[K");

    hist_t *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    sum_live(ws, &t);
    for (unsigned i = 0; i < g_o.threads; i++) {
        h_merge(h, &ws[i].hist);
        t.bytes += ws[i].bytes;
        uv_loop_close(&ws[i].loop);
        if (ws[i].tfd >= 0)
            close(ws[i].tfd);
        free(ws[i].conns);
        free(ws[i].times);
    }
    free(ws);
    int fatal = atomic_load(&g_fatal);
    double elapsed = (double)(stop_ns - g_start_ns) / 1e9;
    double held = g_o.hold ? (double)(stop_ns - hold_from) / 1e9 : 0;
    double rps = elapsed > 0 ? (double)t.done / elapsed : 0;
    long per_conn = -1;
    if (rss_after >= 0 && t.opened > 0)
        per_conn = (long)(((double)rss_after - (double)rss_before) * 1024.0 / (double)t.opened);
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    static const char *const qn[] = {"p50", "p90", "p99", "p99_9"};

    if (g_o.json) {
        json_t *o = json_object();
        json_object_set_new(o, "url", json_string(g_o.url));
        json_object_set_new(o, "mode", json_string(g_o.hold ? "hold" : g_o.ws ? "ws" : "http"));
        json_object_set_new(o, "connections", json_integer(g_o.conns));
        json_object_set_new(o, "threads", json_integer(g_o.threads));
        json_object_set_new(o, "pipeline", json_integer(g_o.pipeline));
        if (g_o.ws)
            json_object_set_new(o, "size", json_integer((json_int_t)g_o.size));
        if (g_o.rate > 0)
            json_object_set_new(o, "rate", json_real(g_o.rate));
        json_object_set_new(o, "duration_s", json_real(elapsed));
        json_object_set_new(o, "requests", json_integer((json_int_t)t.done));
        json_object_set_new(o, "requests_per_s", json_real(rps));
        json_object_set_new(o, "bytes_read", json_integer((json_int_t)t.bytes));
        json_t *lat = json_object();
        for (int i = 0; i < 4; i++)
            json_object_set_new(lat, qn[i], json_real(us(h_quantile(h, qs[i]))));
        json_object_set_new(lat, "max", json_real(us(h->max)));
        json_object_set_new(lat, "mean", json_real(h->n ? us(h->sum / h->n) : 0));
        json_object_set_new(o, "latency_us", lat);
        json_t *e = json_object();
        for (int k = 0; k < E_KINDS; k++)
            json_object_set_new(e, err_name[k], json_integer((json_int_t)t.err[k]));
        json_object_set_new(o, "errors", e);
        if (g_o.hold) {
            json_t *hd = json_object();
            json_object_set_new(hd, "wanted", json_integer(g_o.hold));
            json_object_set_new(hd, "opened", json_integer((json_int_t)t.opened));
            json_object_set_new(hd, "failed", json_integer((json_int_t)t.failed));
            json_object_set_new(hd, "open_s", json_real((double)open_ns / 1e9));
            json_object_set_new(hd, "held_s", json_real(held));
            if (g_o.pid > 0) {
                json_object_set_new(hd, "pid", json_integer(g_o.pid));
                json_object_set_new(hd, "rss_before_kb", json_integer(rss_before));
                json_object_set_new(hd, "rss_after_kb", json_integer(rss_after));
                json_object_set_new(hd, "bytes_per_conn", json_integer(per_conn));
            }
            json_object_set_new(o, "hold", hd);
        }
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
    } else if (g_o.hold) {
        printf("%s hold %s: %" PRIu64 " of %u connections open in %.3f s (%" PRIu64
               " failed), held %.2f s\n",
               PROG, g_o.url, t.opened, g_o.hold, (double)open_ns / 1e9, t.failed, held);
        if (g_o.pid > 0)
            printf("  server pid %ld VmRSS %ld kB -> %ld kB: %ld bytes per connection\n",
                   g_o.pid, rss_before, rss_after, per_conn);
    } else {
        printf("%s %s: %u connections, %u thread%s, pipeline %u%s, %.2f s\n", PROG, g_o.url,
               g_o.conns, g_o.threads, g_o.threads == 1 ? "" : "s", g_o.pipeline,
               g_o.rate > 0 ? ", fixed rate" : "", elapsed);
        if (g_o.rate > 0)
            printf("  rate      %.0f %s/s asked\n", g_o.rate, what);
        printf("  %-9s %" PRIu64 " (%.1f/s), %.2f MiB/s read\n", what, t.done, rps,
               elapsed > 0 ? (double)t.bytes / elapsed / 1048576.0 : 0);
        printf("  latency   p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us"
               "  mean %.1f us\n",
               us(h_quantile(h, 0.5)), us(h_quantile(h, 0.9)), us(h_quantile(h, 0.99)),
               us(h_quantile(h, 0.999)), us(h->max), h->n ? us(h->sum / h->n) : 0);
    }
    if (!g_o.json) {
        printf("  errors    ");
        for (int k = 0; k < E_KINDS; k++)
            printf("%s %" PRIu64 "%s", err_name[k], t.err[k], k + 1 < E_KINDS ? "  " : "\n");
    }
    free(h);
    free(g_msgs);
    free(g_hs);
    if (fatal)
        return 1;
    if (g_o.hold)
        return t.opened == g_o.hold ? 0 : 1;
    if (t.done == 0) {
        fprintf(stderr, PROG ": no %s was answered\n", g_o.ws ? "message" : "request");
        return 1;
    }
    return 0;
}
