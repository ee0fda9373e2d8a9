/* squall — serving a folder (lib/static): what its files share. */
#ifndef SQUALL_STATIC_INT_H
#define SQUALL_STATIC_INT_H

#include "http/h1_int.h"
#include "squall/static.h"

/* One sq_static_route: kept with the app (sq__app_keep), read by every loop serving it,
 * never written after the call. */
typedef struct sq__static {
    int rootfd;            /* the root folder, O_PATH: what paths are resolved beneath */
    char *root;            /* its realpath, for the check of a link followed by path */
    size_t root_len;
    char *prefix;          /* the route's ("/static"), for a folder's list */
    size_t listing;        /* opts.listing: 0, or the most names a folder's list shows */
    char *index;           /* NULL: none */
    char *cache_control;   /* NULL: none */
    char **types;          /* ext, type, ..., NULL; or NULL */
    size_t chunk_bytes;
    uint64_t send_timeout_ms; /* 0: none */
    bool dotfiles;
    bool no_sendfile;
} sq__static_t;

/* root.c: the raw target has no %2f, %5c, %00 or backslash in its path; the decoded
 * path under the prefix has no empty, "." or ".." segment, no backslash, and no hidden
 * segment unless dotfiles are served. */
SQ__HIDDEN bool sq__static_target_ok(const char *target);
SQ__HIDDEN bool sq__static_path_ok(const sq__static_t *st, const char *rel);
/* Opens rel beneath the root (non-blocking, close-on-exec) and stats it: the descriptor,
 * or a negative errno (EXDEV for a link out of the root). Thread pool only. */
struct stat;
SQ__HIDDEN int sq__static_open(const sq__static_t *st, const char *rel, struct stat *sb);
/* opts.listing: an HTML list of at most st->listing names of the folder rel (those
 * readdir gives first), sorted, folders with a trailing '/', hidden names left out as
 * they are served; *out is malloc'd. Takes dirfd. Thread pool only. Returns 0 or a
 * negative errno. */
SQ__HIDDEN int sq__static_list(const sq__static_t *st, const char *rel, int dirfd, char **out,
                               size_t *out_len);

/* mime.c: the caller's types first, then the built-in table. */
SQ__HIDDEN const char *sq__static_type(const sq__static_t *st, const char *name);

/* cond.c: RFC 9110 §13 preconditions and §14 ranges, sans I/O. */
typedef struct sq__validators {
    uint64_t size;
    int64_t mtime;         /* seconds (Last-Modified's resolution) */
    char etag[48];         /* "..." with its quotes */
    char last_modified[30];
} sq__validators_t;
SQ__HIDDEN void sq__static_validators(sq__validators_t *v, uint64_t size, int64_t sec,
                                      long nsec);
/* Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and
 * asctime forms). true with *out set, or false. */
SQ__HIDDEN bool sq__http_date_parse(const char *s, int64_t *out);
/* §13.2.2: 0 to go on, 304 or 412. `get` is GET or HEAD (304 is for those only). */
SQ__HIDDEN int sq__static_preconditions(sq_req_t *req, const sq__validators_t *v, bool get);
/* §14.2: the Range header of a GET, with If-Range (§13.1.5) checked. Returns 0 (serve
 * the whole file: no Range, one not understood, several ranges, or an If-Range that does
 * not match), 206 with [*first, *first + *len) set, or 416. */
SQ__HIDDEN int sq__static_range(sq_req_t *req, const sq__validators_t *v, uint64_t *first,
                                uint64_t *len);

#endif
