/* bench-form — how fast the form parsers read a body.
 *
 *   build/bin/bench-form [--mib N] [--feed BYTES] [--runs R]
 *
 * A multipart/form-data body of N MiB (100 by default): two small fields and one file
 * part, fed BYTES at a time (64 KiB by default), as a streamed request body would come.
 * The file is, in turn, random bytes; text with a CRLF every 78 bytes; and the worst
 * case for a search that stops at each CR: "\r\n-" repeated (a delimiter's first bytes
 * over and over); and near misses, the delimiter with a middle byte changed, back to back
 * (the most work per byte for the search). Prints MB/s (10^6 bytes per second), the best of R runs.
 * Then a 2 MiB urlencoded body of 1000 fields, whole.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squall.h>
#include <squall/form.h>

static const char BOUNDARY[] = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct counts {
    size_t parts;
    unsigned long long bytes;
} counts_t;

static int on_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    ((counts_t *)data)->parts++;
    return 0;
}

static int on_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    ((counts_t *)data)->bytes += len;
    return 0;
}

static const sq_multipart_cbs_t cbs = {.part_begin = on_begin, .part_data = on_data};

/* The body: two fields, then the file of `size` bytes made by `fill`. */
static char *make_body(size_t size, int kind, size_t *len)
{
    char head[512], tail[128];
    int hl = snprintf(head, sizeof(head),
                      "--%s\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbench\r\n"
                      "--%s\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n42\r\n"
                      "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
                      "filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                      BOUNDARY, BOUNDARY, BOUNDARY);
    int tl = snprintf(tail, sizeof(tail), "\r\n--%s--\r\n", BOUNDARY);
    char *b = malloc((size_t)hl + size + (size_t)tl);
    if (b == NULL) {
        fprintf(stderr, "bench-form: out of memory\n");
        exit(1);
    }
    memcpy(b, head, (size_t)hl);
    char *f = b + hl;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < size; i++) {
        switch (kind) {
        case 0: /* random */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f[i] = (char)(x >> 32);
            break;
        case 1: /* text lines */
            f[i] = i % 80 == 78 ? '\r' : i % 80 == 79 ? '\n' : (char)('a' + i % 26);
            break;
        case 2: /* "\r\n-" over and over */
            f[i] = "\r\n-"[i % 3];
            break;
        default: { /* near misses: the delimiter with a middle byte wrong, back to back */
            static char miss[sizeof(BOUNDARY) + 4];
            size_t ml = sizeof(BOUNDARY) + 3; /* "\r\n--" + boundary */
            if (miss[0] == 0) {
                snprintf(miss, sizeof(miss), "\r\n--%s", BOUNDARY);
                miss[ml / 2] = 'X';
            }
            f[i] = miss[i % ml];
            break;
        }
        }
    }
    memcpy(f + size, tail, (size_t)tl);
    *len = (size_t)hl + size + (size_t)tl;
    return b;
}

static double run_multipart(const char *body, size_t len, size_t feed, size_t want)
{
    sq_multipart_opts_t o;
    sq_multipart_opts_init(&o);
    o.max_total_bytes = UINT64_MAX;
    counts_t c = {0};
    sq_multipart_t *mp;
    if (sq_multipart_create(&mp, BOUNDARY, &o, &cbs, &c) != 0) {
        fprintf(stderr, "bench-form: cannot create the parser\n");
        exit(1);
    }
    double t0 = now();
    for (size_t off = 0; off < len;) {
        size_t n = feed < len - off ? feed : len - off;
        ssize_t k = sq_multipart_feed(mp, body + off, n);
        if (k < 0) {
            fprintf(stderr, "bench-form: %s\n", sq_multipart_error(mp));
            exit(1);
        }
        off += (size_t)k;
    }
    int rc = sq_multipart_finish(mp);
    double t = now() - t0;
    if (rc != 0 || c.parts != 3 || c.bytes != want + 5 + 2) {
        fprintf(stderr, "bench-form: wrong parse (%s, %zu parts, %llu bytes)\n",
                sq_multipart_error(mp), c.parts, c.bytes);
        exit(1);
    }
    sq_multipart_destroy(mp);
    return (double)len / t / 1e6;
}

static int on_field(sq_urlenc_t *p, const char *name, size_t name_len, const char *value,
                    size_t value_len, void *data)
{
    ++*(size_t *)data;
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = 100, feed = 64 * 1024;
    int runs = 3;
    static const struct option longopts[] = {{"mib", required_argument, NULL, 'm'},
                                             {"feed", required_argument, NULL, 'f'},
                                             {"runs", required_argument, NULL, 'r'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            mib = strtoul(optarg, NULL, 10);
            break;
        case 'f':
            feed = strtoul(optarg, NULL, 10);
            break;
        case 'r':
            runs = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench-form [--mib N] [--feed BYTES] [--runs R]\n");
            return 2;
        }
    }
    if (mib == 0 || feed == 0 || runs < 1) {
        fprintf(stderr, "bench-form: --mib, --feed and --runs must be positive\n");
        return 2;
    }
    static const char *const kinds[] = {"random bytes", "text, CRLF every 80 bytes",
                                        "\"\\r\\n-\" repeated", "near-miss delimiters"};
    printf("multipart/form-data, %zu MiB body, fed %zu bytes at a time, best of %d:\n", mib, feed,
           runs);
    for (int k = 0; k < 4; k++) {
        size_t len, size = mib << 20;
        char *body = make_body(size, k, &len);
        double best = 0;
        for (int r = 0; r < runs; r++) {
            double v = run_multipart(body, len, feed, size);
            if (v > best)
                best = v;
        }
        printf("  %-28s %8.0f MB/s\n", kinds[k], best);
        free(body);
    }

    /* urlencoded: 1000 fields, ~2 MiB, with escapes and '+' */
    size_t cap = 3 << 20, len = 0;
    char *u = malloc(cap);
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(u + len, cap - len, "%sfield%d=", i ? "&" : "", i);
    for (size_t i = 0; len < (2u << 20) - 2048; i++)
        len += (size_t)snprintf(u + len, cap - len, "%s", i % 4 ? "abcdefgh+ij" : "%C3%A9");
    double best = 0;
    for (int r = 0; r < runs; r++) {
        size_t fields = 0;
        sq_urlenc_t *p;
        sq_urlenc_opts_t o;
        sq_urlenc_opts_init(&o);
        o.max_value_bytes = o.max_total_bytes = 4u << 20;
        sq_urlenc_create(&p, &o, on_field, &fields);
        double t0 = now();
        ssize_t k = sq_urlenc_feed(p, u, len);
        int rc = k < 0 ? (int)k : sq_urlenc_finish(p);
        double t = now() - t0;
        if (rc != 0 || fields != 1000) {
            fprintf(stderr, "bench-form: urlencoded: %s\n", sq_urlenc_error(p));
            return 1;
        }
        sq_urlenc_destroy(p);
        if ((double)len / t / 1e6 > best)
            best = (double)len / t / 1e6;
    }
    printf("application/x-www-form-urlencoded, %zu bytes whole: %.0f MB/s\n", len, best);
    free(u);
    return 0;
}
