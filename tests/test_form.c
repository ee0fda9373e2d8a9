/* The form layer (lib/form): application/x-www-form-urlencoded and multipart/form-data.
 * Every body is parsed whole, byte by byte and split at every offset (picohttpparser's
 * way); multipart bodies come from real senders too: Python's urllib3 and requests, and
 * curl -F caught on a loopback socket. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>
#include <squall/form.h>

extern char **environ;

/* ---- a growable string ---- */

typedef struct str {
    char *p;
    size_t len, cap;
} str_t;

static void str_add(str_t *s, const void *data, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        cr_assert_not_null(s->p);
    }
    if (n > 0)
        memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void str_addf(str_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_addf(str_t *s, const char *fmt, ...)
{
    char *tmp;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&tmp, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0);
    str_add(s, tmp, (size_t)n);
    free(tmp);
}

/* bytes as text: printable ASCII as is, the rest as \xNN */
static void str_add_esc(str_t *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            str_add(s, &c, 1);
        else
            str_addf(s, "\\x%02x", c);
    }
}

static void str_free(str_t *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

static const char *str_c(const str_t *s)
{
    return s->p != NULL ? s->p : "";
}

/* ==================== application/x-www-form-urlencoded ==================== */

typedef struct ue_rec {
    str_t out;    /* "name=value;" per field, escaped */
    int pause;    /* pause after every field */
    int abort_at; /* abort with UV_ECANCELED at this field (1-based; 0: never) */
    int nfields;
} ue_rec_t;

static int ue_field(sq_urlenc_t *p, const char *name, size_t name_len, const char *value,
                    size_t value_len, void *data)
{
    ue_rec_t *r = data;
    cr_assert_eq(name[name_len], '\0');
    cr_assert_eq(value[value_len], '\0');
    r->nfields++;
    if (r->abort_at == r->nfields)
        return UV_ECANCELED;
    str_add(&r->out, "[", 1);
    str_add_esc(&r->out, name, name_len);
    str_add(&r->out, "=", 1);
    str_add_esc(&r->out, value, value_len);
    str_add(&r->out, "]", 1);
    return r->pause ? SQ_FORM_PAUSE : 0;
}

/* Parses body in chunks: the first `first` bytes, then `chunk` at a time, resuming after
 * each pause from where the parser stopped. Returns 0 or the parser's error; *reason its
 * reason. */
static int ue_run(const char *body, size_t len, const sq_urlenc_opts_t *o, size_t first,
                  size_t chunk, ue_rec_t *r, char *reason, size_t rsize)
{
    sq_urlenc_t *p;
    cr_assert_eq(sq_urlenc_create(&p, o, ue_field, r), 0);
    int rc = 0;
    size_t off = 0, guard = 0;
    while (off < len && rc == 0) {
        size_t n = off == 0 ? first : chunk;
        if (n > len - off)
            n = len - off;
        size_t end = off + n;
        while (off < end) {
            ssize_t k = sq_urlenc_feed(p, body + off, end - off);
            if (k < 0) {
                rc = (int)k;
                break;
            }
            cr_assert(k > 0 || r->pause, "no progress without a pause");
            off += (size_t)k;
            cr_assert(++guard < 10 * len + 100);
        }
    }
    if (rc == 0)
        rc = sq_urlenc_finish(p);
    if (reason != NULL)
        snprintf(reason, rsize, "%s", sq_urlenc_error(p));
    sq_urlenc_destroy(p);
    return rc;
}

/* What the parser gives for body, checked whole, byte by byte, at every split point and
 * pausing after every field: all the same. */
static void ue_expect(const char *body, const char *want)
{
    size_t len = strlen(body);
    for (size_t s = 0; s <= len + 1; s++) {
        for (int pause = 0; pause < 2; pause++) {
            ue_rec_t r = {.pause = pause};
            /* s == len + 1: one byte at a time */
            size_t first = s <= len ? s : 1, chunk = s <= len ? len : 1;
            if (first == 0)
                first = len; /* whole */
            int rc = ue_run(body, len, NULL, first, chunk, &r, NULL, 0);
            cr_assert_eq(rc, 0, "%s split at %zu: %s", body, s, sq_strerror(rc));
            cr_assert_str_eq(str_c(&r.out), want, "%s split at %zu (pause %d)", body, s, pause);
            str_free(&r.out);
        }
    }
}

Test(form, urlenc_fields_at_every_split_point)
{
    ue_expect("name=Ann+Lee&age=42&city=S%C3%A3o%20Paulo",
              "[name=Ann Lee][age=42][city=S\\xc3\\xa3o Paulo]");
}

Test(form, urlenc_escapes_plus_and_empty_pieces)
{
    ue_expect("a%3Db=%26%2B%25", "[a=b=&+%]");
    ue_expect("x=%4a%4A", "[x=JJ]"); /* either case */
    ue_expect("q=a+b+%2B", "[q=a b +]");
    ue_expect("a=&b=", "[a=][b=]"); /* empty values */
    ue_expect("a&&b", "[a=][b=]");  /* an empty piece is skipped */
    ue_expect("&&a=1&&", "[a=1]");
    ue_expect("=x", "[=x]");           /* an empty name is a field (WHATWG) */
    ue_expect("a=1=2", "[a=1=2]");     /* split at the first '=' */
    ue_expect("n=%00z", "[n=\\x00z]"); /* %00 is a byte like any other */
    ue_expect("", "");
    ue_expect("=", "[=]");
}

Test(form, urlenc_malformed_escape_kept_as_written)
{
    /* WHATWG and Python's urllib.parse.parse_qsl leave these as they are */
    ue_expect("a=%zz&b=%4&c=%", "[a=%zz][b=%4][c=%]");
    ue_expect("a=%4g%%41", "[a=%4g%A]");
    ue_expect("%=1&a%&b=%2", "[%=1][a%=][b=%2]");
}

Test(form, urlenc_malformed_escape_strict_fails)
{
    static const char *bad[] = {"a=%zz", "a=%4", "a=%", "a%g=1", "a=%4&b=1"};
    sq_urlenc_opts_t o;
    sq_urlenc_opts_init(&o);
    o.strict = true;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ue_rec_t r = {0};
        char why[128];
        int rc = ue_run(bad[i], strlen(bad[i]), &o, 1, 1, &r, why, sizeof(why));
        cr_assert_eq(rc, UV_EINVAL, "%s: %s", bad[i], sq_strerror(rc));
        cr_assert(strstr(why, "hexadecimal") != NULL, "%s", why);
        str_free(&r.out);
    }
    ue_rec_t r = {0};
    cr_assert_eq(ue_run("a=%41", 5, &o, 5, 5, &r, NULL, 0), 0);
    cr_assert_str_eq(str_c(&r.out), "[a=A]");
    str_free(&r.out);
}

Test(form, urlenc_limits)
{
    struct {
        const char *body;
        size_t fields, name, value;
        uint64_t total;
        int rc;
        const char *why;
    } cases[] = {
        {"a=1&b=2&c=3", 2, 100, 100, 1000, UV_E2BIG, "max_fields"},
        {"a=1&b=2", 2, 100, 100, 1000, 0, NULL},
        {"abcd=1", 10, 3, 100, 1000, UV_E2BIG, "max_name_bytes"},
        {"abc=1", 10, 3, 100, 1000, 0, NULL},
        {"%41%42%43=1", 10, 3, 100, 1000, 0, NULL}, /* decoded bytes count */
        {"a=12345", 10, 3, 4, 1000, UV_E2BIG, "max_value_bytes"},
        {"a=%31%32%33%34", 10, 3, 4, 1000, 0, NULL},
        {"a=1&b=2", 10, 3, 4, 6, UV_E2BIG, "max_total_bytes"},
        {"a=1&b=2", 10, 3, 4, 7, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sq_urlenc_opts_t o;
        sq_urlenc_opts_init(&o);
        o.max_fields = cases[i].fields;
        o.max_name_bytes = cases[i].name;
        o.max_value_bytes = cases[i].value;
        o.max_total_bytes = cases[i].total;
        size_t len = strlen(cases[i].body);
        for (size_t chunk = 1; chunk <= len; chunk++) {
            ue_rec_t r = {0};
            char why[128];
            int rc = ue_run(cases[i].body, len, &o, chunk, chunk, &r, why, sizeof(why));
            cr_assert_eq(rc, cases[i].rc, "case %zu chunk %zu: %s", i, chunk, sq_strerror(rc));
            if (cases[i].why != NULL)
                cr_assert(strstr(why, cases[i].why) != NULL, "case %zu: %s", i, why);
            str_free(&r.out);
        }
    }
}

Test(form, urlenc_ten_thousand_fields_against_the_default_limit)
{
    str_t body = {0};
    for (int i = 0; i < 10000; i++)
        str_addf(&body, "%sf%d=%d", i ? "&" : "", i, i);
    ue_rec_t r = {0};
    char why[128];
    int rc = ue_run(body.p, body.len, NULL, 4096, 4096, &r, why, sizeof(why));
    cr_assert_eq(rc, UV_E2BIG);
    cr_assert_eq(r.nfields, 1000); /* the default max_fields */
    cr_assert(strstr(why, "max_fields") != NULL);
    str_free(&r.out);
    str_free(&body);
}

Test(form, urlenc_callback_aborts)
{
    ue_rec_t r = {.abort_at = 2};
    char why[128];
    int rc = ue_run("a=1&b=2&c=3", 11, NULL, 11, 11, &r, why, sizeof(why));
    cr_assert_eq(rc, UV_ECANCELED);
    cr_assert_str_eq(str_c(&r.out), "[a=1]");
    cr_assert_eq(r.nfields, 2);
    str_free(&r.out);
}

Test(form, urlenc_pause_consumes_through_the_field)
{
    sq_urlenc_t *p;
    ue_rec_t r = {.pause = 1};
    cr_assert_eq(sq_urlenc_create(&p, NULL, ue_field, &r), 0);
    const char *body = "a=1&bb=22&c";
    cr_assert_eq(sq_urlenc_feed(p, body, 11), 4);    /* "a=1&" */
    cr_assert_eq(sq_urlenc_feed(p, body + 4, 7), 6); /* "bb=22&" */
    cr_assert_eq(sq_urlenc_feed(p, body + 10, 1), 1);
    cr_assert_eq(sq_urlenc_finish(p), 0);
    cr_assert_str_eq(str_c(&r.out), "[a=1][bb=22][c=]");
    sq_urlenc_destroy(p);
    str_free(&r.out);
}

Test(form, urlenc_json_last_value_wins_and_utf8_is_repaired)
{
    json_t *obj;
    const char body[] = "a=1&b=x+y&a=2&%FF%C3=%E2%82&e=&z=%F0%9F%98%80";
    cr_assert_eq(sq_urlenc_parse_json(body, sizeof(body) - 1, NULL, &obj), 0);
    char *txt = json_dumps(obj, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENSURE_ASCII);
    cr_assert_str_eq(txt, "{\"a\":\"2\",\"b\":\"x y\",\"e\":\"\",\"z\":\"\\uD83D\\uDE00\","
                          "\"\\uFFFD\\uFFFD\":\"\\uFFFD\"}");
    free(txt);
    json_decref(obj);

    sq_urlenc_opts_t o;
    sq_urlenc_opts_init(&o);
    o.max_fields = 1;
    obj = (json_t *)1;
    cr_assert_eq(sq_urlenc_parse_json("a=1&b=2", 7, &o, &obj), UV_E2BIG);
    cr_assert_null(obj);
}

Test(form, urlenc_opts_never_initialised_refused)
{
    sq_urlenc_opts_t o = {0};
    sq_urlenc_t *p = (sq_urlenc_t *)1;
    cr_assert_eq(sq_urlenc_create(&p, &o, ue_field, NULL), UV_EINVAL);
    cr_assert_null(p);
    cr_assert_eq(sq_urlenc_create(&p, NULL, NULL, NULL), UV_EINVAL);
}

/* ==================== multipart/form-data ==================== */

typedef struct mp_part {
    char *name, *filename, *ctype;
    str_t data;
    size_t nheaders;
    bool ended;
} mp_part_t;

typedef struct mp_rec {
    mp_part_t parts[64];
    size_t n; /* parts begun (recorded up to 64) */
    size_t begun, ended;
    int errors, err;
    char reason[160];
    int pause;           /* pause at every event */
    long abort_at;       /* abort at the begin of this part (0-based); -1 never */
    bool count_only;     /* record nothing but counts */
    const char *lo, *hi; /* the buffer being fed: where zero-copy data points */
    size_t zero_copy, copied;
    uint64_t bytes;
} mp_rec_t;

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static int mp_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    mp_rec_t *r = data;
    cr_assert_eq(part->index, r->begun);
    cr_assert_eq(r->begun, r->ended, "a part begins before the last one ended");
    if ((long)r->begun == r->abort_at)
        return UV_ECANCELED;
    r->begun++;
    if (!r->count_only && r->n < 64) {
        mp_part_t *p = &r->parts[r->n++];
        p->name = strdup(part->name);
        cr_assert_eq(strlen(part->name), part->name_len);
        p->filename = dup_or_null(part->filename);
        if (part->filename != NULL)
            cr_assert_eq(strlen(part->filename), part->filename_len);
        p->ctype = dup_or_null(part->content_type);
        p->nheaders = part->nheaders;
    }
    return r->pause ? SQ_FORM_PAUSE : 0;
}

static int mp_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    mp_rec_t *r = data;
    cr_assert(len > 0);
    cr_assert(r->begun == r->ended + 1, "data outside a part");
    if (at >= r->lo && at + len <= r->hi)
        r->zero_copy += len;
    else
        r->copied += len;
    r->bytes += len;
    if (!r->count_only && r->n > 0 && r->n <= 64)
        str_add(&r->parts[r->n - 1].data, at, len);
    return r->pause ? SQ_FORM_PAUSE : 0;
}

static int mp_end(sq_multipart_t *mp, void *data)
{
    mp_rec_t *r = data;
    cr_assert(r->begun == r->ended + 1, "an end without a begin");
    r->ended++;
    if (!r->count_only && r->n > 0 && r->n <= 64)
        r->parts[r->n - 1].ended = true;
    return r->pause ? SQ_FORM_PAUSE : 0;
}

static void mp_error(sq_multipart_t *mp, int status, const char *reason, void *data)
{
    mp_rec_t *r = data;
    r->errors++;
    r->err = status;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

static const sq_multipart_cbs_t rec_cbs = {
    .part_begin = mp_begin, .part_data = mp_data, .part_end = mp_end, .error = mp_error};

static void mp_rec_free(mp_rec_t *r)
{
    for (size_t i = 0; i < r->n && i < 64; i++) {
        free(r->parts[i].name);
        free(r->parts[i].filename);
        free(r->parts[i].ctype);
        str_free(&r->parts[i].data);
    }
    memset(r, 0, sizeof(*r));
}

/* One line per part: name, filename, content type, header count, data (escaped, or its
 * length and SHA-256 when long), whether it ended. */
static void mp_summary(const mp_rec_t *r, str_t *out)
{
    for (size_t i = 0; i < r->n; i++) {
        const mp_part_t *p = &r->parts[i];
        str_addf(out, "%s|%s|%s|%zu|", p->name, p->filename ? p->filename : "-",
                 p->ctype ? p->ctype : "-", p->nheaders);
        if (p->data.len <= 80) {
            str_add_esc(out, str_c(&p->data), p->data.len);
        } else {
            unsigned char md[32];
            unsigned mdlen;
            EVP_Digest(p->data.p, p->data.len, md, &mdlen, EVP_sha256(), NULL);
            str_addf(out, "%zu bytes sha256 ", p->data.len);
            for (unsigned k = 0; k < 8; k++)
                str_addf(out, "%02x", md[k]);
        }
        str_addf(out, "%s\n", p->ended ? "" : " (open)");
    }
}

/* Parses body: `first` bytes, then `chunk` at a time, each chunk fed until consumed
 * (resuming after pauses). Returns what finish (or a failing feed) returns. */
static int mp_run(const char *boundary, const sq_multipart_opts_t *o, const char *body, size_t len,
                  size_t first, size_t chunk, mp_rec_t *r)
{
    sq_multipart_t *mp;
    cr_assert_eq(sq_multipart_create(&mp, boundary, o, &rec_cbs, r), 0);
    int rc = 0;
    size_t off = 0, guard = 0;
    r->lo = body;
    r->hi = body + len;
    while (off < len && rc == 0) {
        size_t n = off == 0 ? first : chunk;
        if (n == 0 || n > len - off)
            n = len - off;
        size_t end = off + n;
        while (off < end) {
            ssize_t k = sq_multipart_feed(mp, body + off, end - off);
            if (k < 0) {
                rc = (int)k;
                break;
            }
            if ((size_t)k < end - off)
                cr_assert(sq_multipart_is_paused(mp), "fewer bytes consumed, not paused");
            cr_assert(k > 0 || sq_multipart_is_paused(mp));
            off += (size_t)k;
            cr_assert(++guard < 20 * len + 100, "no progress");
        }
    }
    if (rc == 0)
        rc = sq_multipart_finish(mp);
    if (rc != 0) {
        cr_assert_eq(r->errors, 1, "the error callback runs once");
        cr_assert_eq(r->err, rc);
        cr_assert_str_eq(r->reason, sq_multipart_error(mp));
        cr_assert_eq(sq_multipart_feed(mp, "x", 1), rc, "a failed parser stays failed");
        cr_assert_eq(sq_multipart_finish(mp), rc);
        cr_assert_eq(r->errors, 1);
    } else {
        cr_assert_eq(r->errors, 0);
    }
    sq_multipart_destroy(mp);
    return rc;
}

/* Parses body whole, then byte by byte, then split in two at every offset, then pausing
 * at every event: every way gives `want` (the summary) and `want_rc`. */
static void mp_expect_n(const char *boundary, const sq_multipart_opts_t *o, const char *body,
                        size_t len, int want_rc, const char *want)
{
    for (size_t s = 0; s <= len + 2; s++) {
        mp_rec_t r = {.abort_at = -1};
        size_t first = s, chunk = len;
        if (s == len + 1)
            first = chunk = 1; /* byte by byte */
        if (s == len + 2) {
            first = chunk = 1;
            r.pause = 1; /* byte by byte, pausing at every event */
        }
        int rc = mp_run(boundary, o, body, len, first, chunk, &r);
        cr_assert_eq(rc, want_rc, "split %zu: %s (%s)", s, sq_err_name(rc), r.reason);
        str_t got = {0};
        mp_summary(&r, &got);
        cr_assert_str_eq(str_c(&got), want, "split %zu of %zu", s, len);
        if (s == 0 && want_rc == 0)
            cr_assert_eq(r.copied, 0, "fed whole, every byte of data is zero-copy");
        str_free(&got);
        mp_rec_free(&r);
    }
    /* pausing at every event, whole */
    mp_rec_t r = {.abort_at = -1, .pause = 1};
    int rc = mp_run(boundary, o, body, len, len, len, &r);
    cr_assert_eq(rc, want_rc);
    str_t got = {0};
    mp_summary(&r, &got);
    cr_assert_str_eq(str_c(&got), want);
    str_free(&got);
    mp_rec_free(&r);
}

static void mp_expect(const char *boundary, const char *body, int want_rc, const char *want)
{
    mp_expect_n(boundary, NULL, body, strlen(body), want_rc, want);
}

#define CRLF "\r\n"

Test(form, multipart_basic_at_every_split_point)
{
    mp_expect("XyZ",
              "--XyZ" CRLF "Content-Disposition: form-data; name=\"title\"" CRLF CRLF "Hello" CRLF
              "--XyZ" CRLF "Content-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"" CRLF
              "Content-Type: text/plain" CRLF CRLF "line1" CRLF "line2" CRLF CRLF "--XyZ" CRLF
              "content-disposition: FORM-DATA; name=empty" CRLF CRLF CRLF "--XyZ--" CRLF,
              0,
              "title|-|-|1|Hello\n"
              "doc|a.txt|text/plain|2|line1\\x0d\\x0aline2\\x0d\\x0a\n"
              "empty|-|-|1|\n");
}

Test(form, multipart_preamble_padding_and_epilogue_ignored)
{
    mp_expect("b",
              "This is the preamble." CRLF "--b-not-yet" CRLF "--bx" CRLF "--b \t " CRLF
              "Content-Disposition: form-data; name=\"x\"" CRLF CRLF "1" CRLF "--b\t" CRLF
              "Content-Disposition: form-data; name=\"y\"" CRLF CRLF "2" CRLF "--b--  " CRLF
              "This is the epilogue." CRLF "--b" CRLF "garbage",
              0, "x|-|-|1|1\ny|-|-|1|2\n");
    /* no CRLF after the close delimiter, no epilogue */
    mp_expect("b", "--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF "--b--",
              0, "x|-|-|1|v\n");
    /* a body with no part (a form with no field) */
    mp_expect("b", "--b--" CRLF, 0, "");
}

Test(form, multipart_fake_and_near_miss_boundaries_are_data)
{
    /* "--B0undary" not after CRLF, after a bare LF or CR, and cut short: all data */
    const char *data = "a--B0undary" CRLF "\n--B0undary" CRLF "\r--B0undary" CRLF "--B0undar" CRLF
                       "--B0undarX" CRLF "-B0undary" CRLF "\r\r\n-" CRLF "\r\n--B0undar";
    str_t body = {0}, want = {0};
    str_addf(&body,
             "--B0undary" CRLF "Content-Disposition: form-data; name=\"f\"; "
             "filename=\"f.bin\"" CRLF CRLF "%s" CRLF "--B0undary--" CRLF,
             data);
    /* the data is over 80 bytes: the summary compares its digest */
    mp_rec_t tmp = {.abort_at = -1};
    tmp.n = 1;
    tmp.parts[0].name = strdup("f");
    tmp.parts[0].filename = strdup("f.bin");
    tmp.parts[0].nheaders = 1;
    tmp.parts[0].ended = true;
    str_add(&tmp.parts[0].data, data, strlen(data));
    mp_summary(&tmp, &want);
    mp_rec_free(&tmp);
    mp_expect("B0undary", body.p, 0, want.p);
    str_free(&body);
    str_free(&want);
}

Test(form, multipart_boundary_inside_content_without_crlf_is_refused)
{
    /* RFC 2046 §5.1.1: the boundary never appears in content; "\r\n--b" then 'x' breaks it */
    mp_rec_t r = {.abort_at = -1};
    const char *body = "--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF
                       "--bx" CRLF "--b--" CRLF;
    cr_assert_eq(mp_run("b", NULL, body, strlen(body), 0, 0, &r), UV_EPROTO);
    cr_assert(strstr(r.reason, "delimiter") != NULL, "%s", r.reason);
    mp_rec_free(&r);
}

Test(form, multipart_headers_quoting_and_folding)
{
    mp_expect(
        "q",
        "--q" CRLF "Content-Disposition: form-data; name=\"a\\\"b\"; "
        "filename=\"C:\\dir\\x \\\\ y.txt\"; filename*=UTF-8''ignored" CRLF "X-Long: one" CRLF
        " two" CRLF "\tthree" CRLF "Content-Type:   application/octet-stream   " CRLF CRLF "z" CRLF
        "--q" CRLF "Content-Disposition: form-data ; NAME = tok-en ; x=\"y;z\"" CRLF CRLF CRLF
        "--q" CRLF
        "Content-Disposition: form-data; name=\"\xc3\xa9\"; filename=\"\xe2\x82\xac.txt\"" CRLF CRLF
            CRLF "--q" CRLF
        "Content-Disposition: form-data; name=\"n\"; filename=\"\"" CRLF CRLF CRLF "--q--",
        0,
        "a\"b|C:\\dir\\x \\ y.txt|application/octet-stream|3|z\n"
        "tok-en|-|-|1|\n"
        "\xc3\xa9|\xe2\x82\xac.txt|-|1|\n"
        "n||-|1|\n");
}

Test(form, multipart_header_line_joined_is_delivered)
{
    /* the folded header's value, joined with spaces, as the callback sees it */
    mp_rec_t r = {.abort_at = -1};
    static const char body[] = "--q" CRLF "Content-Disposition: form-data;" CRLF
                               " name=\"folded\"" CRLF CRLF "v" CRLF "--q--";
    cr_assert_eq(mp_run("q", NULL, body, sizeof(body) - 1, 0, 0, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.parts[0].name, "folded");
    mp_rec_free(&r);
}

/* Malformed bodies: each fails with its code and a reason that names the problem. */
Test(form, multipart_hostile_bodies)
{
    struct {
        const char *body;
        int rc;
        const char *why;
    } cases[] = {
        {"", UV_EOF, "first delimiter"},
        {"no delimiter at all" CRLF, UV_EOF, "first delimiter"},
        {"--b" CRLF, UV_EOF, "close delimiter"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF, UV_EOF, "close delimiter"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "mid-pa", UV_EOF,
         "close delimiter"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF "--b", UV_EOF,
         "close delimiter"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF "--b-", UV_EOF,
         "close delimiter"},
        {"--b" CRLF ": no-name" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF, UV_EPROTO,
         "no name"},
        {"--b" CRLF "No colon here" CRLF CRLF, UV_EPROTO, "colon"},
        {"--b" CRLF "Bad Name: v" CRLF CRLF, UV_EPROTO, "token"},
        {"--b" CRLF "Content-Disposition: form-data; name=x\rq" CRLF CRLF, UV_EPROTO, "control"},
        {"--b" CRLF "Content-Disposition: form-data; name=x\n" CRLF, UV_EPROTO, "CRLF"},
        {"--b" CRLF " folded: first" CRLF CRLF, UV_EPROTO, "folded"},
        {"--b" CRLF CRLF "no headers" CRLF "--b--", UV_ENOENT, "without Content-Disposition"},
        {"--b" CRLF "Content-Type: text/plain" CRLF CRLF "x" CRLF "--b--", UV_ENOENT,
         "without Content-Disposition"},
        {"--b" CRLF "Content-Disposition: attachment; name=x" CRLF CRLF, UV_ENOENT,
         "not form-data"},
        {"--b" CRLF "Content-Disposition: form-data; filename=x" CRLF CRLF, UV_ENOENT, "no name"},
        {"--b" CRLF "Content-Disposition: form-data; name=\"x" CRLF CRLF, UV_EPROTO, "malformed"},
        {"--b" CRLF "Content-Disposition: form-data; name=x; name=y" CRLF CRLF, UV_EPROTO, "twice"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF
         "Content-Disposition: form-data; name=y" CRLF CRLF,
         UV_EPROTO, "two Content-Disposition"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF "--b junk" CRLF,
         UV_EPROTO, "delimiter"},
        {"--b" CRLF "Content-Disposition: form-data; name=x" CRLF CRLF "v" CRLF "--b\rx", UV_EPROTO,
         "delimiter"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].body);
        for (size_t chunk = 1; chunk <= len + 1; chunk++) {
            mp_rec_t r = {.abort_at = -1};
            int rc = mp_run("b", NULL, cases[i].body, len, chunk, chunk, &r);
            cr_assert_eq(rc, cases[i].rc, "case %zu chunk %zu: %s (%s)", i, chunk, sq_err_name(rc),
                         r.reason);
            cr_assert(strstr(r.reason, cases[i].why) != NULL, "case %zu: \"%s\"", i, r.reason);
            mp_rec_free(&r);
        }
    }
}

/* Each limit: just under it passes, just over it fails with UV_E2BIG and its name. */
Test(form, multipart_limits)
{
    const char *two = "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF "12345" CRLF
                      "--b" CRLF "Content-Disposition: form-data; name=f; filename=f" CRLF
                      "X-1: 1" CRLF CRLF "1234567890" CRLF "--b--" CRLF;
    size_t len = strlen(two);
    struct {
        size_t parts, hbytes, headers, field;
        uint64_t total;
        int rc;
        const char *why;
    } cases[] = {
        {2, 100, 2, 5, 1000, 0, NULL},
        {1, 100, 2, 5, 1000, UV_E2BIG, "max_parts"},
        {2, 100, 2, 4, 1000, UV_E2BIG, "max_field_bytes"}, /* the file part's 10 bytes pass */
        {2, 100, 1, 5, 1000, UV_E2BIG, "max_headers"},
        {2, 61, 2, 5, 1000, UV_E2BIG, "max_header_bytes"}, /* the second block is 62 */
        {2, 62, 2, 5, 1000, 0, NULL},
        {2, 100, 2, 5, len - 1, UV_E2BIG, "max_total_bytes"},
        {2, 100, 2, 5, len, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sq_multipart_opts_t o;
        sq_multipart_opts_init(&o);
        o.max_parts = cases[i].parts;
        o.max_header_bytes = cases[i].hbytes;
        o.max_headers = cases[i].headers;
        o.max_field_bytes = cases[i].field;
        o.max_total_bytes = cases[i].total;
        for (size_t chunk = 1; chunk <= len; chunk++) {
            mp_rec_t r = {.abort_at = -1};
            int rc = mp_run("b", &o, two, len, chunk, chunk, &r);
            cr_assert_eq(rc, cases[i].rc, "case %zu chunk %zu: %s (%s)", i, chunk, sq_err_name(rc),
                         r.reason);
            if (cases[i].why != NULL)
                cr_assert(strstr(r.reason, cases[i].why) != NULL, "case %zu: %s", i, r.reason);
            mp_rec_free(&r);
        }
    }
}

Test(form, multipart_ten_thousand_tiny_parts_against_max_parts)
{
    str_t body = {0};
    for (int i = 0; i < 10000; i++)
        str_addf(&body, "--t" CRLF "Content-Disposition: form-data; name=p%d" CRLF CRLF "%d" CRLF,
                 i, i);
    str_add(&body, "--t--" CRLF, 7);
    mp_rec_t r = {.abort_at = -1, .count_only = true};
    cr_assert_eq(mp_run("t", NULL, body.p, body.len, 65536, 65536, &r), UV_E2BIG);
    cr_assert_eq(r.begun, 1000); /* the default max_parts */
    cr_assert(strstr(r.reason, "max_parts") != NULL);
    mp_rec_free(&r);

    sq_multipart_opts_t o;
    sq_multipart_opts_init(&o);
    o.max_parts = 10000;
    r = (mp_rec_t){.abort_at = -1, .count_only = true};
    cr_assert_eq(mp_run("t", &o, body.p, body.len, 65536, 65536, &r), 0);
    cr_assert_eq(r.begun, 10000);
    cr_assert_eq(r.ended, 10000);
    mp_rec_free(&r);
    str_free(&body);
}

Test(form, multipart_header_line_of_one_mib_refused_early)
{
    size_t n = 1 << 20;
    char *body = malloc(n + 64);
    int k = sprintf(body, "--b" CRLF "X-Huge: ");
    memset(body + k, 'h', n);
    memcpy(body + k + n, CRLF CRLF, 5);
    size_t len = (size_t)k + n + 4;
    mp_rec_t r = {.abort_at = -1};
    sq_multipart_t *mp;
    cr_assert_eq(sq_multipart_create(&mp, "b", NULL, &rec_cbs, &r), 0);
    /* fed 4 KiB at a time, it fails once the default 8 KiB are passed, not at the end */
    size_t off = 0;
    ssize_t rc = 0;
    while (off < len &&
           (rc = sq_multipart_feed(mp, body + off, 4096 < len - off ? 4096 : len - off)) > 0)
        off += (size_t)rc;
    cr_assert_eq(rc, UV_E2BIG);
    cr_assert_leq(off, 8192 + 4096);
    cr_assert(strstr(r.reason, "max_header_bytes") != NULL);
    sq_multipart_destroy(mp);
    mp_rec_free(&r);
    free(body);
}

Test(form, multipart_callbacks_pause_and_abort)
{
    const char *body =
        "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF "1" CRLF "--b" CRLF
        "Content-Disposition: form-data; name=c" CRLF CRLF "2" CRLF "--b--";
    size_t len = strlen(body);
    /* paused at the first part's begin: consumed through its header block */
    mp_rec_t r = {.abort_at = -1, .pause = 1};
    sq_multipart_t *mp;
    cr_assert_eq(sq_multipart_create(&mp, "b", NULL, &rec_cbs, &r), 0);
    ssize_t k = sq_multipart_feed(mp, body, len);
    cr_assert_eq(k, (ssize_t)(strchr(body, '1') - body));
    cr_assert_eq(sq_multipart_is_paused(mp), 1);
    cr_assert_eq(r.begun, 1);
    cr_assert_eq(r.bytes, 0);
    k = sq_multipart_feed(mp, body + k, len - (size_t)k);
    cr_assert_eq(k, 1, "the data \"1\", then paused");
    cr_assert_eq(r.bytes, 1);
    sq_multipart_destroy(mp);
    mp_rec_free(&r);

    /* a negative code aborts: feed returns it, the error callback has it */
    r = (mp_rec_t){.abort_at = 1};
    cr_assert_eq(mp_run("b", NULL, body, len, len, len, &r), UV_ECANCELED);
    cr_assert_eq(r.begun, 1);
    cr_assert_eq(r.ended, 1);
    cr_assert(strstr(r.reason, "callback") != NULL);
    mp_rec_free(&r);
}

Test(form, multipart_create_checks_the_boundary)
{
    sq_multipart_t *mp = (sq_multipart_t *)1;
    char b71[72];
    memset(b71, 'a', 71);
    b71[71] = '\0';
    cr_assert_eq(sq_multipart_create(&mp, b71, NULL, NULL, NULL), UV_EINVAL);
    cr_assert_null(mp);
    cr_assert_eq(sq_multipart_create(&mp, "", NULL, NULL, NULL), UV_EINVAL);
    cr_assert_eq(sq_multipart_create(&mp, "ends in space ", NULL, NULL, NULL), UV_EINVAL);
    cr_assert_eq(sq_multipart_create(&mp, "a\"b", NULL, NULL, NULL), UV_EINVAL);
    cr_assert_eq(sq_multipart_create(&mp, "a\rb", NULL, NULL, NULL), UV_EINVAL);
    b71[70] = '\0';
    cr_assert_eq(sq_multipart_create(&mp, b71, NULL, NULL, NULL), 0);
    sq_multipart_destroy(mp);
    sq_multipart_opts_t o = {0};
    cr_assert_eq(sq_multipart_create(&mp, "b", &o, NULL, NULL), UV_EINVAL);
}

Test(form, boundary_from_content_type)
{
    struct {
        const char *ct;
        ssize_t rc;
        const char *want;
    } cases[] = {
        {"multipart/form-data; boundary=abc", 3, "abc"},
        {"multipart/form-data;boundary=abc", 3, "abc"},
        {"Multipart/Form-Data; BOUNDARY=\"a b'()+_,-./:=?\"", 15, "a b'()+_,-./:=?"},
        {"multipart/form-data; charset=utf-8; boundary=\"----WebKitFormBoundaryx7\"; x=y", 24,
         "----WebKitFormBoundaryx7"},
        {"multipart/form-data ; boundary = abc ;", 3, "abc"},
        {"multipart/form-data; boundary=\"\\a\"", UV_EINVAL, NULL}, /* '\' is kept: no bchar */
        {"multipart/form-data", UV_EINVAL, NULL},
        {"multipart/form-data;", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=\"\"", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=\"abc \"", UV_EINVAL, NULL}, /* ends in a space */
        {"multipart/form-data; boundary=\"a\"b\"", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=\"abc", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=a; boundary=b", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=a@b", UV_EINVAL, NULL}, /* '@' no token */
        {"multipart/form-data; boundary=a{b", UV_EINVAL, NULL}, /* '{' not a token */
        {"multipart/form-data; boundary=a*b", UV_EINVAL, NULL}, /* token, no bchar */
        {"multipart/form-data boundary=abc", UV_EINVAL, NULL},
        {"multipart/form-data; =abc", UV_EINVAL, NULL},
        {"multipart/form-data; boundary=\"a\x01\"", UV_EINVAL, NULL},
        {"text/plain; boundary=abc", UV_EFTYPE, NULL},
        {"multipart/mixed; boundary=abc", UV_EFTYPE, NULL},
        {"application/x-www-form-urlencoded", UV_EFTYPE, NULL},
        {"", UV_EINVAL, NULL},
        {"multipart", UV_EINVAL, NULL},
        {NULL, UV_EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[SQ_FORM_BOUNDARY_MAX + 1];
        ssize_t rc = sq_form_boundary(cases[i].ct, buf, sizeof(buf));
        cr_assert_eq(rc, cases[i].rc, "%s: %zd", cases[i].ct, rc);
        if (cases[i].want != NULL)
            cr_assert_str_eq(buf, cases[i].want);
    }
    char b70[200], b71[200], buf[SQ_FORM_BOUNDARY_MAX + 1];
    snprintf(b70, sizeof(b70), "multipart/form-data; boundary=%070d", 7);
    snprintf(b71, sizeof(b71), "multipart/form-data; boundary=%071d", 7);
    cr_assert_eq(sq_form_boundary(b70, buf, sizeof(buf)), 70);
    cr_assert_eq(sq_form_boundary(b71, buf, sizeof(buf)), UV_EINVAL);
    cr_assert_eq(sq_form_boundary("multipart/form-data; boundary=abc", buf, 3), UV_ENOBUFS);
    cr_assert_eq(sq_form_boundary("multipart/form-data; boundary=abc", buf, 4), 3);
}

/* ---- bodies from real senders ---- */

/* Runs /usr/bin/python3 with `script`; its output's first line is the Content-Type, the
 * rest the body. */
static void python_body(const char *script, char *ctype, size_t csize, str_t *body)
{
    char path[] = "/tmp/squall-form-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, script, strlen(script)), (ssize_t)strlen(script));
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "timeout 30 /usr/bin/python3 %s", path);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        str_add(body, buf, n);
    cr_assert_eq(pclose(f), 0, "python failed");
    unlink(path);
    char *nl = memchr(body->p, '\n', body->len);
    cr_assert_not_null(nl);
    size_t cl = (size_t)(nl - body->p);
    cr_assert_lt(cl, csize);
    memcpy(ctype, body->p, cl);
    ctype[cl] = '\0';
    memmove(body->p, nl + 1, body->len - cl - 1);
    body->len -= cl + 1;
}

static const char *const PY_FIELDS =
    "import sys\n"
    "blob = bytes(range(256)) * 2 + b'\\r\\n--\\r\\n\\r\\n--x\\r\\n'\n"
    "fields = [('title', 'Caf\\u00e9 & more'), ('empty', ''),\n"
    "          ('upload', ('r\\u00e9sum\\u00e9 \"v2\".bin', blob, 'application/octet-stream')),\n"
    "          ('note', 'line1\\r\\nline2')]\n";

Test(form, multipart_from_urllib3_at_every_split_point, .timeout = 120)
{
    str_t script = {0}, body = {0};
    str_addf(&script, "%s", PY_FIELDS);
    str_addf(&script, "import urllib3\n"
                      "b, ct = urllib3.encode_multipart_formdata(fields)\n"
                      "sys.stdout.buffer.write(ct.encode() + b'\\n' + b)\n");
    char ctype[256], boundary[SQ_FORM_BOUNDARY_MAX + 1];
    python_body(script.p, ctype, sizeof(ctype), &body);
    cr_assert_gt(sq_form_boundary(ctype, boundary, sizeof(boundary)), 0, "%s", ctype);

    /* what the fields are, parsed once whole */
    mp_rec_t r = {.abort_at = -1};
    cr_assert_eq(mp_run(boundary, NULL, body.p, body.len, 0, 0, &r), 0);
    cr_assert_eq(r.n, 4);
    cr_assert_str_eq(r.parts[0].name, "title");
    cr_assert_str_eq(str_c(&r.parts[0].data), "Caf\xc3\xa9 & more");
    cr_assert_str_eq(r.parts[1].name, "empty");
    cr_assert_eq(r.parts[1].data.len, 0);
    cr_assert_str_eq(r.parts[2].name, "upload");
    cr_assert_not_null(r.parts[2].filename);
    cr_assert_str_eq(r.parts[2].ctype, "application/octet-stream");
    cr_assert_eq(r.parts[2].data.len, 512 + 13);
    for (int i = 0; i < 512; i++)
        cr_assert_eq((unsigned char)r.parts[2].data.p[i], i % 256);
    cr_assert_str_eq(str_c(&r.parts[3].data), "line1\r\nline2");
    str_t want = {0};
    mp_summary(&r, &want);
    mp_rec_free(&r);
    /* the same at every split, byte by byte and pausing everywhere */
    mp_expect_n(boundary, NULL, body.p, body.len, 0, want.p);
    str_free(&want);
    str_free(&script);
    str_free(&body);
}

Test(form, multipart_from_requests_at_every_split_point, .timeout = 120)
{
    str_t script = {0}, body = {0};
    str_addf(&script,
             "%s"
             "import requests\n"
             "from requests.models import RequestEncodingMixin as M\n"
             "files = [(k, v) for k, v in fields if isinstance(v, tuple)]\n"
             "data = [(k, v) for k, v in fields if not isinstance(v, tuple)]\n"
             "b, ct = M._encode_files(files, data)\n"
             "sys.stdout.buffer.write(ct.encode() + b'\\n' + b)\n",
             PY_FIELDS);
    char ctype[256], boundary[SQ_FORM_BOUNDARY_MAX + 1];
    python_body(script.p, ctype, sizeof(ctype), &body);
    cr_assert_gt(sq_form_boundary(ctype, boundary, sizeof(boundary)), 0, "%s", ctype);
    mp_rec_t r = {.abort_at = -1};
    cr_assert_eq(mp_run(boundary, NULL, body.p, body.len, 0, 0, &r), 0);
    cr_assert_eq(r.n, 4);
    /* requests puts the fields first, then the files */
    cr_assert_str_eq(r.parts[0].name, "title");
    cr_assert_str_eq(r.parts[1].name, "empty");
    cr_assert_str_eq(r.parts[2].name, "note");
    cr_assert_str_eq(str_c(&r.parts[2].data), "line1\r\nline2");
    cr_assert_str_eq(r.parts[3].name, "upload");
    cr_assert_eq(r.parts[3].data.len, 512 + 13);
    str_t want = {0};
    mp_summary(&r, &want);
    mp_rec_free(&r);
    mp_expect_n(boundary, NULL, body.p, body.len, 0, want.p);
    str_free(&want);
    str_free(&script);
    str_free(&body);
}

/* ---- curl -F, caught on a loopback socket ---- */

static void sha256(const void *p, size_t n, unsigned char md[32])
{
    unsigned len;
    cr_assert_eq(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
}

/* Runs curl with args (NULL-terminated, the URL appended) against a listener on
 * 127.0.0.1, records the request it sends, answers 200, and returns the request's
 * Content-Type (in ctype) and body. Bounded: 20 s. */
static void curl_capture(const char *const *args, char *ctype, size_t csize, str_t *body)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(ls >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(ls, 1), 0);
    socklen_t sl = sizeof(sa);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/upload", ntohs(sa.sin_port));

    const char *argv[32];
    size_t n = 0;
    argv[n++] = "curl";
    argv[n++] = "-sS";
    argv[n++] = "-o";
    argv[n++] = "/dev/null";
    argv[n++] = "--max-time";
    argv[n++] = "20";
    argv[n++] = "-H";
    argv[n++] = "Expect:";
    for (size_t i = 0; args[i] != NULL; i++)
        argv[n++] = args[i];
    argv[n++] = url;
    argv[n] = NULL;
    pid_t pid;
    cr_assert_eq(posix_spawnp(&pid, "curl", NULL, NULL, (char *const *)argv, environ), 0);

    struct pollfd pfd = {.fd = ls, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 20000), 1, "curl did not connect");
    int c = accept(ls, NULL, NULL);
    cr_assert(c >= 0);
    str_t req = {0};
    size_t head = 0, clen = 0;
    for (;;) {
        if (head == 0) {
            char *e = req.p ? strstr(req.p, "\r\n\r\n") : NULL;
            if (e != NULL) {
                head = (size_t)(e - req.p) + 4;
                char *cl = strcasestr(req.p, "\r\nContent-Length:");
                cr_assert_not_null(cl, "curl sent no Content-Length");
                clen = strtoul(cl + 17, NULL, 10);
                char *ct = strcasestr(req.p, "\r\nContent-Type:");
                cr_assert_not_null(ct);
                ct += 15;
                while (*ct == ' ')
                    ct++;
                size_t ctl = strcspn(ct, "\r");
                cr_assert_lt(ctl, csize);
                memcpy(ctype, ct, ctl);
                ctype[ctl] = '\0';
            }
        }
        if (head > 0 && req.len >= head + clen)
            break;
        pfd = (struct pollfd){.fd = c, .events = POLLIN};
        cr_assert_eq(poll(&pfd, 1, 20000), 1, "curl stopped sending");
        char buf[65536];
        ssize_t k = read(c, buf, sizeof(buf));
        cr_assert_gt(k, 0, "curl closed early");
        str_add(&req, buf, (size_t)k);
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    cr_assert_eq(write(c, ok, sizeof(ok) - 1), (ssize_t)sizeof(ok) - 1);
    close(c);
    close(ls);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "curl failed");
    str_add(body, req.p + head, clen);
    str_free(&req);
}

Test(form, multipart_from_curl_binary_file_comes_back_byte_exact, .timeout = 120)
{
    /* every byte value, CRLFs, "--" runs and curl's own boundary prefix (24 dashes) inside */
    str_t file = {0};
    for (int round = 0; round < 600; round++) {
        for (int b = 0; b < 256; b++) {
            unsigned char c = (unsigned char)((b * 7 + round) & 0xff);
            str_add(&file, &c, 1);
        }
        str_add(&file, "\r\n--", 4);
        str_add(&file, "\r\n--------------------------", 28);
        str_add(&file, "\r\n------------------------0", 27);
        str_add(&file, "\r\r\n--\r\n\r\n", 9);
    }
    char path[] = "/tmp/squall-form-bin-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, file.p, file.len), (ssize_t)file.len);
    close(fd);
    char farg[128];
    snprintf(farg, sizeof(farg), "blob=@%s;type=application/octet-stream;filename=data.bin", path);
    const char *const args[] = {"-F", "title=Hello curl", "-F", farg, "-F", "n=42", NULL};
    char ctype[256], boundary[SQ_FORM_BOUNDARY_MAX + 1];
    str_t body = {0};
    curl_capture(args, ctype, sizeof(ctype), &body);
    unlink(path);
    cr_assert_gt(sq_form_boundary(ctype, boundary, sizeof(boundary)), 0, "%s", ctype);

    unsigned char want[32], got[32];
    sha256(file.p, file.len, want);
    size_t chunks[] = {0, 65536, 4093, 1000, 77, 1};
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        mp_rec_t r = {.abort_at = -1};
        size_t ch = chunks[i] ? chunks[i] : body.len;
        cr_assert_eq(mp_run(boundary, NULL, body.p, body.len, ch, ch, &r), 0, "%s", r.reason);
        cr_assert_eq(r.n, 3);
        cr_assert_str_eq(r.parts[0].name, "title");
        cr_assert_str_eq(str_c(&r.parts[0].data), "Hello curl");
        cr_assert_str_eq(r.parts[1].name, "blob");
        cr_assert_str_eq(r.parts[1].filename, "data.bin");
        cr_assert_str_eq(r.parts[1].ctype, "application/octet-stream");
        cr_assert_eq(r.parts[1].data.len, file.len, "chunk %zu", ch);
        sha256(r.parts[1].data.p, r.parts[1].data.len, got);
        cr_assert_arr_eq(got, want, 32, "chunk %zu: the file differs", ch);
        cr_assert_str_eq(str_c(&r.parts[2].data), "42");
        if (chunks[i] == 0)
            cr_assert_eq(r.copied, 0);
        mp_rec_free(&r);
    }

    /* split in two at every offset around each boundary line (and the header blocks) */
    str_t whole = {0};
    {
        mp_rec_t r = {.abort_at = -1};
        cr_assert_eq(mp_run(boundary, NULL, body.p, body.len, 0, 0, &r), 0);
        mp_summary(&r, &whole);
        mp_rec_free(&r);
    }
    char delim[SQ_FORM_BOUNDARY_MAX + 8];
    snprintf(delim, sizeof(delim), "--%s", boundary);
    size_t dl = strlen(delim);
    for (const char *at = body.p; (at = memmem(at, body.len - (size_t)(at - body.p), delim, dl));
         at += dl) {
        size_t from = (size_t)(at - body.p);
        from = from > 4 ? from - 4 : 0;
        for (size_t s = from; s < from + dl + 200 && s <= body.len; s++) {
            mp_rec_t r = {.abort_at = -1};
            cr_assert_eq(mp_run(boundary, NULL, body.p, body.len, s, body.len, &r), 0);
            str_t got_s = {0};
            mp_summary(&r, &got_s);
            cr_assert_str_eq(got_s.p, whole.p, "split at %zu", s);
            str_free(&got_s);
            mp_rec_free(&r);
        }
    }
    str_free(&whole);
    str_free(&body);
    str_free(&file);
}

/* Structs that grow (common.h): options and a callback table from an older header (a
 * prefix) take the defaults past their size; from a newer one, an unknown field set is
 * refused. */
Test(form, opts_and_table_from_older_and_newer_headers)
{
    sq_multipart_t *mp;
    /* an older header that knew only max_parts */
    size_t old = offsetof(sq_multipart_opts_t, max_header_bytes);
    unsigned char *o = malloc(old); /* ends where the old struct ended (ASan sees past it) */
    size_t one = 1;
    memcpy(o, &old, sizeof(old));
    memcpy(o + offsetof(sq_multipart_opts_t, max_parts), &one, sizeof(one));
    static const char two[] =
        "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF "1" CRLF "--b" CRLF
        "Content-Disposition: form-data; name=c" CRLF CRLF "2" CRLF "--b--";
    mp_rec_t r = {.abort_at = -1};
    cr_assert_eq(
        mp_run("b", (const sq_multipart_opts_t *)(void *)o, two, sizeof(two) - 1, 0, 0, &r),
        UV_E2BIG);
    cr_assert(strstr(r.reason, "max_parts") != NULL);
    mp_rec_free(&r);
    free(o);

    /* a newer header with a field this library lacks, set */
    unsigned char big[sizeof(sq_multipart_opts_t) + 8] = {0};
    sq_multipart_opts_init_sized((sq_multipart_opts_t *)big, sizeof(big));
    cr_assert_eq(((sq_multipart_opts_t *)big)->size, sizeof(big));
    cr_assert_eq(((sq_multipart_opts_t *)big)->max_parts, 1000);
    cr_assert_eq(sq_multipart_create(&mp, "b", (sq_multipart_opts_t *)big, NULL, NULL), 0);
    sq_multipart_destroy(mp);
    big[sizeof(sq_multipart_opts_t) + 3] = 1;
    cr_assert_eq(sq_multipart_create(&mp, "b", (sq_multipart_opts_t *)big, NULL, NULL), UV_ENOTSUP);

    /* a table from an older header with only part_begin: the rest are not called */
    sq_multipart_cbs_t cbs = rec_cbs; /* the members past the old size are not read */
    r = (mp_rec_t){.abort_at = -1};
    cr_assert_eq(
        sq_multipart_create_sized(&mp, "b", NULL, &cbs, offsetof(sq_multipart_cbs_t, part_end), &r),
        0);
    static const char one_part[] =
        "--b" CRLF "Content-Disposition: form-data; name=a" CRLF CRLF "1" CRLF "--b--";
    cr_assert_eq(sq_multipart_feed(mp, one_part, sizeof(one_part) - 1),
                 (ssize_t)sizeof(one_part) - 1);
    cr_assert_eq(sq_multipart_finish(mp), 0);
    cr_assert_eq(r.begun, 1);
    cr_assert_eq(r.bytes, 1);
    cr_assert_eq(r.ended, 0, "part_end lies past the old table");
    sq_multipart_destroy(mp);
    mp_rec_free(&r);

    sq_urlenc_opts_t uo;
    sq_urlenc_opts_init(&uo);
    cr_assert_eq(uo.size, sizeof(uo));
    cr_assert_eq(uo.max_fields, 1000);
    cr_assert_eq(uo.max_name_bytes, 4096);
    cr_assert_eq(uo.max_value_bytes, 1024 * 1024);
    cr_assert_eq(uo.max_total_bytes, 2 * 1024 * 1024);
    cr_assert(!uo.strict);
    sq_multipart_opts_t mo;
    sq_multipart_opts_init(&mo);
    cr_assert_eq(mo.max_header_bytes, 8192);
    cr_assert_eq(mo.max_headers, 16);
    cr_assert_eq(mo.max_field_bytes, 1024 * 1024);
    cr_assert_eq(mo.max_total_bytes, (uint64_t)1 << 30);
}

/* ---- against Python's urllib.parse.parse_qsl (keep_blank_values, latin-1: one char per
 * byte), which reads a body as WHATWG does: 400 random bodies of tricky pieces ---- */

static void hex_add(str_t *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        str_addf(s, "%02x", (unsigned char)p[i]);
}

static int hex_field(sq_urlenc_t *p, const char *name, size_t name_len, const char *value,
                     size_t value_len, void *data)
{
    str_t *s = data;
    if (s->len > 0 && s->p[s->len - 1] != ' ')
        str_add(s, ",", 1);
    hex_add(s, name, name_len);
    str_add(s, ":", 1);
    hex_add(s, value, value_len);
    return 0;
}

Test(form, urlenc_agrees_with_python_parse_qsl, .timeout = 60)
{
    static const char script[] =
        "import random, sys\n"
        "from urllib.parse import parse_qsl\n"
        "random.seed(7)\n"
        "toks = ['a', 'bc', '=', '&', '%', '+', '%2B', '%41', '%4', '%zz', '%c3%A9', '%00',\n"
        "        '%%', '&&', '%2', '%G1', '~', '%26', '%3D', '==']\n"
        "out = []\n"
        "for _ in range(400):\n"
        "    body = ''.join(random.choice(toks) for _ in range(random.randint(0, 12)))\n"
        "    pairs = parse_qsl(body, keep_blank_values=True, encoding='latin-1')\n"
        "    f = ','.join(k.encode('latin-1').hex() + ':' + v.encode('latin-1').hex()\n"
        "                 for k, v in pairs)\n"
        "    out.append(body.encode().hex() + ' ' + f)\n"
        "sys.stdout.write('\\n'.join(out) + '\\n')\n";
    char path[] = "/tmp/squall-form-qsl-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, script, sizeof(script) - 1), (ssize_t)sizeof(script) - 1);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "timeout 30 /usr/bin/python3 %s", path);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *sp = strchr(line, ' ');
        cr_assert_not_null(sp);
        *sp = '\0';
        char body[2048];
        size_t blen = 0;
        for (const char *h = line; h[0] && h[1]; h += 2) {
            unsigned v;
            cr_assert_eq(sscanf(h, "%2x", &v), 1);
            body[blen++] = (char)v;
        }
        str_t got = {0};
        str_add(&got, "", 0);
        sq_urlenc_t *p;
        cr_assert_eq(sq_urlenc_create(&p, NULL, hex_field, &got), 0);
        size_t chunk = 1 + (size_t)n % 5, off = 0;
        while (off < blen) {
            size_t k = chunk < blen - off ? chunk : blen - off;
            cr_assert_eq(sq_urlenc_feed(p, body + off, k), (ssize_t)k);
            off += k;
        }
        cr_assert_eq(sq_urlenc_finish(p), 0);
        sq_urlenc_destroy(p);
        cr_assert_str_eq(got.p, sp + 1, "body %.*s", (int)blen, body);
        str_free(&got);
        n++;
    }
    cr_assert_eq(pclose(f), 0, "python failed");
    unlink(path);
    cr_assert_eq(n, 400);
}

/* ---- random bodies never break the parser ----
 * Bodies made of boundary fragments, CRLFs, header pieces and random bytes, fed in random
 * chunks with random pauses: the parser ends with 0 or one of its documented codes, every
 * part that began ends (or the error comes), and ASan sees no bad access. */
Test(form, multipart_random_bodies_end_with_a_documented_code, .timeout = 120)
{
    static const char *const frags[] = {
        "--rb",
        "\r\n",
        "\r\n--rb",
        "\r\n--rb\r\n",
        "--rb--",
        "\r\n--rb--\r\n",
        "Content-Disposition: form-data; name=\"f\"\r\n",
        "Content-Disposition: form-data; name=g; filename=\"x.bin\"\r\n",
        "Content-Type: text/plain\r\n",
        "X: y\r\n",
        " folded\r\n",
        ": v\r\n",
        "\r",
        "\n",
        "-",
        "--",
        "r",
        "b",
        "\t ",
        "\"",
        ";",
        "=",
        "\\",
        "\x00",
        "\xff",
    };
    static const int ok[] = {0, UV_E2BIG, UV_EPROTO, UV_ENOENT, UV_EOF};
    unsigned seed = 12345;
    int outcomes[5] = {0};
    for (int iter = 0; iter < 3000; iter++) {
        str_t body = {0};
        str_add(&body, "", 0);
        int nf = 1 + (int)(rand_r(&seed) % 40);
        if (rand_r(&seed) % 2)
            str_add(&body, "--rb\r\nContent-Disposition: form-data; name=a\r\n\r\n", 48);
        for (int k = 0; k < nf; k++) {
            const char *fr = frags[rand_r(&seed) % (sizeof(frags) / sizeof(frags[0]))];
            str_add(&body, fr, fr[0] ? strlen(fr) : 1);
        }
        if (rand_r(&seed) % 2)
            str_add(&body, "\r\n--rb--\r\n", 10);
        sq_multipart_opts_t o;
        sq_multipart_opts_init(&o);
        o.max_parts = 1 + rand_r(&seed) % 8;
        o.max_header_bytes = 16 + rand_r(&seed) % 200;
        o.max_headers = 1 + rand_r(&seed) % 4;
        o.max_field_bytes = rand_r(&seed) % 64;
        mp_rec_t r = {.abort_at = -1, .pause = (int)(rand_r(&seed) % 2)};
        size_t chunk = 1 + rand_r(&seed) % 17;
        int rc = mp_run("rb", &o, body.p, body.len, chunk, chunk, &r);
        int found = -1;
        for (int k = 0; k < 5; k++)
            if (rc == ok[k])
                found = k;
        cr_assert(found >= 0, "iteration %d: %s (%s)", iter, sq_err_name(rc), r.reason);
        outcomes[found]++;
        if (rc == 0)
            cr_assert_eq(r.begun, r.ended);
        mp_rec_free(&r);
        str_free(&body);
    }
    for (int k = 0; k < 5; k++)
        cr_assert_gt(outcomes[k], 0, "no body ended with %s", sq_err_name(ok[k]));
}
