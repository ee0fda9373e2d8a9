/* squall — a folder of files served under a path prefix.
 *
 *     sq_static_opts_t o;
 *     sq_static_opts_init(&o);
 *     sq_static_route(app, "/static", "/srv/www", &o);   GET /static/css/a.css
 *
 * What a request gets (docs/static.md):
 * - GET and HEAD only; another method is answered 405 with `Allow: GET, HEAD`.
 * - The file's bytes, with Content-Type from its extension (a built-in table of common
 *   types, text types with `; charset=utf-8`, application/octet-stream otherwise; opts
 *   adds or overrides), Content-Length, ETag (strong, from size and modification time),
 *   Last-Modified and Accept-Ranges: bytes.
 * - 304 for If-None-Match / If-Modified-Since and 412 for If-Match /
 *   If-Unmodified-Since, in RFC 9110 §13.2.2's order.
 * - One range (RFC 9110 §14: `bytes=a-b`, `a-`, `-n`): 206 with Content-Range; none
 *   satisfiable: 416 with a Content-Range giving the size only (§14.4); several ranges:
 *   the whole file, 200 (a server may ignore Range, §14.2); If-Range that does not match: the whole file.
 * - A folder asked for without its trailing slash: 301 to the same path with it. A
 *   folder with it: its index file (opts.index), else 404 (or, with opts.listing, a list
 *   of its names).
 * - 404 for anything that does not name a regular file or folder under the root: a `..`
 *   or `.` segment, an empty segment (`//`, an absolute path), `%2f`, `%5c` or `%00` in
 *   the target (a slash, backslash or NUL that is not a separator), a backslash, a
 *   segment starting with '.' (unless opts.dotfiles), a symbolic link that leads out of
 *   the root, a FIFO or device. Symbolic links that stay under the root are followed.
 *   403 for a file the server may not read.
 *
 * The loop never waits on the disk: the path is resolved and the file opened and
 * stat'ed on libuv's thread pool; the body goes to a plain TCP or Unix socket with
 * sendfile(2) (uv_fs_sendfile), and to any other connection (memory, TLS) through
 * reads on the thread pool (uv_fs_read) into one buffer of opts.chunk_bytes, written
 * through the response like any streamed body. Either way the next bytes are read only
 * when the previous ones were taken by the kernel, so a client that reads slowly costs
 * at most one buffer, not the file; one that takes nothing for opts.send_timeout_ms is
 * disconnected. A file that shrinks while it is sent ends the
 * connection (the client sees a body shorter than its Content-Length).
 */
#ifndef SQUALL_STATIC_H
#define SQUALL_STATIC_H

#include "common.h"
#include "router.h"

/* Fill with sq_static_opts_init (squall's rule, common.h). */
typedef struct sq_static_opts {
    size_t size;
    const char *index;          /* served for a folder's URL ending in '/'; "index.html"
                                   (default); NULL: none (every folder is 404) */
    int dotfiles;               /* serve names starting with '.' (not "." or ".."); 0
                                   (default): 404 for any path with such a segment */
    const char *const *types;   /* extra or overriding types: {"md", "text/markdown;
                                   charset=utf-8", "log", "text/plain", NULL} — extension
                                   without the dot (compared without case), type; copied.
                                   NULL (default): the built-in table only */
    const char *cache_control;  /* a Cache-Control value for every file answer ("public,
                                   max-age=3600"); copied; NULL (default): none */
    size_t chunk_bytes;         /* the read buffer of a connection that cannot take
                                   sendfile (and while a socket is full); 64 KiB
                                   (default); at least 4 KiB, at most 16 MiB */
    int no_sendfile;            /* 1: always read and write (tests, filesystems whose
                                   sendfile misbehaves); 0 (default): sendfile to sockets */
    size_t listing;             /* a folder with no index file: 0 (default): 404; N > 0:
                                   an HTML list of its names, at most N (those the
                                   folder gives first), sorted, hidden names left out
                                   unless dotfiles */
    uint64_t send_timeout_ms;   /* the longest a piece of the body may wait for the client
                                   to take it before the connection is closed (a reader
                                   that stopped); 60000 (default, nginx's send_timeout);
                                   0: none */
} sq_static_opts_t;

SQ_EXTERN void sq_static_opts_init_sized(sq_static_opts_t *opts, size_t size);
static inline void sq_static_opts_init(sq_static_opts_t *opts)
{
    sq_static_opts_init_sized(opts, sizeof(*opts));
}

/* Serves the folder `root` under `prefix` ("/static": a literal path, no trailing '/';
 * "" serves it at the top): routes `prefix` (redirected to `prefix/`) and
 * `prefix/{path:path}`, in registration order among app's routes. `root` is resolved
 * (realpath) and opened here, at start-up, with a blocking call; it must be a folder. What
 * the route keeps (the folder's descriptor, the options) is freed with the app
 * (sq_app_destroy). opts NULL: defaults. Returns
 *   0            the routes are added;
 *   UV_EINVAL    app, prefix or root NULL, a prefix that is not "" nor a literal path
 *                without a trailing '/', opts->size 0, chunk_bytes out of range, a type
 *                list with an odd count or a type with control characters;
 *   UV_ENOTSUP   opts comes from a newer header and sets a field this library lacks;
 *   UV_ENOTDIR   root is not a folder; another errno code of realpath(3)/open(2)
 *                (UV_ENOENT, UV_EACCES, ...);
 *   SQ_EPATTERN  the routes could not be made from prefix;
 *   UV_ENOMEM.
 * On an error nothing is added. */
SQ_EXTERN int sq_static_route(sq_app_t *app, const char *prefix, const char *root,
                              const sq_static_opts_t *opts);

/* The Content-Type the built-in table gives a file name ("a.css": "text/css;
 * charset=utf-8"); application/octet-stream for an unknown or missing extension. Static
 * storage. */
SQ_EXTERN const char *sq_static_type(const char *name);

#endif
