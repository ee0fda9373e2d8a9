/* Validators, conditional requests (RFC 9110 §13) and ranges (§14) of a file: what the
 * request's headers ask, decided from the file's size and modification time alone. */
#include <inttypes.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "static/static_int.h"

void sq__static_validators(sq__validators_t *v, uint64_t size, int64_t sec, long nsec)
{
    v->size = size;
    v->mtime = sec;
    /* §8.8.3: strong, since a file of the same size and nanosecond mtime is taken as the
     * same bytes (as nginx and Apache take it, at a second's resolution) */
    snprintf(v->etag, sizeof(v->etag), "\"%" PRIx64 "-%" PRIx64 "\"",
             (uint64_t)sec * 1000000000u + (uint64_t)nsec, size);
    sq__date_format(sec, v->last_modified);
}

static int month_of(const char *m)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(m, names + 3 * i, 3) == 0)
            return i;
    return -1;
}

static bool day_name(const char *s, size_t n)
{
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const longs[] = {"Monday", "Tuesday", "Wednesday", "Thursday",
                                        "Friday", "Saturday", "Sunday"};
    for (int i = 0; i < 7; i++)
        if ((n == 3 && strncmp(s, days[i], 3) == 0) ||
            (n == strlen(longs[i]) && strncmp(s, longs[i], n) == 0))
            return true;
    return false;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "08:49:37" */
static bool clock_of(const char *s, struct tm *tm)
{
    return digits(s, 2, &tm->tm_hour) && s[2] == ':' && digits(s + 3, 2, &tm->tm_min) &&
           s[5] == ':' && digits(s + 6, 2, &tm->tm_sec) && tm->tm_hour < 24 &&
           tm->tm_min < 60 && tm->tm_sec < 61;
}

bool sq__http_date_parse(const char *s, int64_t *out)
{
    struct tm tm = {0};
    const char *comma = strchr(s, ',');
    size_t n = strlen(s);
    if (comma != NULL) {
        if (!day_name(s, (size_t)(comma - s)) || comma[1] != ' ')
            return false;
        const char *p = comma + 2;
        size_t rest = n - (size_t)(p - s);
        if (rest == 24 && p[2] == ' ' && p[6] == ' ' && p[11] == ' ' && p[20] == ' ' &&
            strcmp(p + 21, "GMT") == 0) { /* IMF-fixdate: "06 Nov 1994 08:49:37 GMT" */
            int year;
            if (!digits(p, 2, &tm.tm_mday) || (tm.tm_mon = month_of(p + 3)) < 0 ||
                !digits(p + 7, 4, &year) || !clock_of(p + 12, &tm))
                return false;
            tm.tm_year = year - 1900;
        } else if (rest == 22 && p[2] == '-' && p[6] == '-' && p[9] == ' ' && p[18] == ' ' &&
                   strcmp(p + 19, "GMT") == 0) { /* RFC 850: "06-Nov-94 08:49:37 GMT" */
            int yy;
            if (!digits(p, 2, &tm.tm_mday) || (tm.tm_mon = month_of(p + 3)) < 0 ||
                !digits(p + 7, 2, &yy) || !clock_of(p + 10, &tm))
                return false;
            /* §5.6.7: a two-digit year more than 50 years ahead is in the past century */
            time_t now = time(NULL);
            struct tm nt;
            gmtime_r(&now, &nt);
            int year = (nt.tm_year + 1900) / 100 * 100 + yy;
            if (year > nt.tm_year + 1900 + 50)
                year -= 100;
            tm.tm_year = year - 1900;
        } else {
            return false;
        }
    } else if (n == 24 && day_name(s, 3) && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' &&
               s[19] == ' ') { /* asctime: "Sun Nov  6 08:49:37 1994" */
        int year;
        char dd[2] = {s[8] == ' ' ? '0' : s[8], s[9]};
        if ((tm.tm_mon = month_of(s + 4)) < 0 || !digits(dd, 2, &tm.tm_mday) ||
            !clock_of(s + 11, &tm) || !digits(s + 20, 4, &year))
            return false;
        tm.tm_year = year - 1900;
    } else {
        return false;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* Walks a comma-separated list of entity-tags (§8.8.3), calling match on each tag's
 * opaque part and weakness; true when one matched. `*` is the caller's. */
static bool etag_list_has(const char *list, const char *etag, bool strong)
{
    const char *p = list;
    size_t elen = strlen(etag);
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return false;
        bool weak = false;
        if (p[0] == 'W' && p[1] == '/') {
            weak = true;
            p += 2;
        }
        if (*p != '"')
            return false; /* not a list of entity-tags: nothing matches */
        const char *end = strchr(p + 1, '"');
        if (end == NULL)
            return false;
        size_t n = (size_t)(end - p) + 1;
        /* §8.8.3.2: a weak comparison ignores W/; a strong one fails on it */
        if (n == elen && memcmp(p, etag, n) == 0 && !(strong && weak))
            return true;
        p = end + 1;
    }
}

int sq__static_preconditions(sq_req_t *req, const sq__validators_t *v, bool get)
{
    const char *im = sq_req_header(req, "If-Match");
    const char *ius = sq_req_header(req, "If-Unmodified-Since");
    const char *inm = sq_req_header(req, "If-None-Match");
    const char *ims = sq_req_header(req, "If-Modified-Since");
    int64_t t;
    /* §13.2.2 step 1, else 2 */
    if (im != NULL) {
        if (strcmp(im, "*") != 0 && !etag_list_has(im, v->etag, true))
            return 412;
    } else if (ius != NULL && sq__http_date_parse(ius, &t) && v->mtime > t) {
        return 412;
    }
    /* step 3, else 4 (GET and HEAD only: §13.1.3) */
    if (inm != NULL) {
        if (strcmp(inm, "*") == 0 || etag_list_has(inm, v->etag, false))
            return get ? 304 : 412;
    } else if (get && ims != NULL && sq__http_date_parse(ims, &t) && v->mtime <= t) {
        return 304;
    }
    return 0;
}

/* One decimal number of at most 19 digits at *p (past it on success). */
static bool number(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    int n = 0;
    while (*s >= '0' && *s <= '9') {
        if (++n > 19)
            return false;
        v = v * 10 + (uint64_t)(*s++ - '0');
    }
    if (n == 0)
        return false;
    *p = s;
    *out = v;
    return true;
}

int sq__static_range(sq_req_t *req, const sq__validators_t *v, uint64_t *first, uint64_t *len)
{
    const char *r = sq_req_header(req, "Range");
    if (r == NULL || strncasecmp(r, "bytes=", 6) != 0)
        return 0; /* §14.2: another unit, or none: ignored */
    const char *ifr = sq_req_header(req, "If-Range");
    if (ifr != NULL) {
        /* §13.1.5: an entity-tag compared strongly, or a date that must be the exact
         * Last-Modified; else the whole file */
        int64_t t;
        if (ifr[0] == '"' || (ifr[0] == 'W' && ifr[1] == '/')) {
            if (strcmp(ifr, v->etag) != 0)
                return 0;
        } else if (!sq__http_date_parse(ifr, &t) || t != v->mtime) {
            return 0;
        }
    }
    const char *p = r + 6;
    unsigned count = 0, satisfiable = 0;
    uint64_t a = 0, n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        uint64_t x, y;
        bool ok;
        if (*p == '-') { /* suffix-range: the last y bytes */
            p++;
            if (!number(&p, &y))
                return 0;
            ok = y > 0 && v->size > 0;
            if (ok) {
                x = y >= v->size ? 0 : v->size - y;
                y = v->size - 1;
            }
        } else {
            if (!number(&p, &x) || *p++ != '-')
                return 0;
            if (*p >= '0' && *p <= '9') {
                if (!number(&p, &y) || y < x)
                    return 0; /* §14.1.1: last-pos < first-pos makes the header invalid */
                if (y >= v->size)
                    y = v->size - 1;
            } else {
                y = v->size - 1;
            }
            ok = x < v->size;
        }
        count++;
        if (ok) {
            satisfiable++;
            a = x;
            n = y - x + 1;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        if (*p++ != ',')
            return 0;
        if (count >= 100)
            return 0; /* §14.2: a server may ignore an absurd list */
    }
    if (satisfiable == 0)
        return 416;
    if (count > 1)
        return 0; /* several ranges: the whole file (docs/static.md) */
    *first = a;
    *len = n;
    return 206;
}
