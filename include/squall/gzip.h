/* squall — gzip responses (RFC 9110 §8.4.1.3 content coding, §12.5.3 Accept-Encoding).
 *
 *     sq_gzip_opts_t gz;
 *     sq_gzip_opts_init(&gz);
 *     sq_app_gzip(app, &gz);
 *
 * An app with gzip compresses a response on the loop thread, with zlib, when all of these
 * hold: its content type is one of opts.types; its status has a body (not 1xx, 204, 304)
 * and is not 206; the handler set no Content-Encoding and no Content-Range; the request's
 * Accept-Encoding accepts gzip (or x-gzip, or `*`) with a q-value above 0 and at least
 * that of `identity`; and a whole body has min_bytes or more (a body that does not get
 * smaller is sent as it was). Such a response gets `Content-Encoding: gzip` and the
 * Content-Length of the compressed bytes. Every response of those types and statuses
 * gets `Vary: Accept-Encoding`, compressed or not, so caches keep the two apart. A
 * request without Accept-Encoding, or with an empty one, gets the body as it is.
 * `identity;q=0` (or `*;q=0` without an identity entry) with gzip accepted compresses
 * below min_bytes too.
 *
 * HEAD gets the headers GET would (Content-Encoding, the compressed Content-Length: the
 * body is compressed to count it, then dropped). A streamed response (sq_res_start) of
 * those types is compressed as one gzip member when opts.streams is set: each
 * sq_res_write is compressed and flushed (Z_SYNC_FLUSH), so what a handler writes
 * reaches the client at once, as without gzip; sq_res_end writes the gzip trailer.
 * A streamed response keeps a deflate state of about 64 KiB until sq_res_end; a whole
 * body's state lives for the call only. Compression runs on the loop thread: tens of
 * milliseconds a megabyte at level 6. A whole body over 2 GiB is sent as it is.
 *
 * When no app on the way to a route has gzip, responses take the plain path: one branch
 * on a NULL pointer.
 */
#ifndef SQUALL_GZIP_H
#define SQUALL_GZIP_H

#include "common.h"
#include "router.h"

/* Fill with sq_gzip_opts_init (squall's rule, common.h). */
typedef struct sq_gzip_opts {
    size_t size;
    size_t min_bytes;         /* whole bodies smaller than this are sent as they are;
                                 1024 (default). Below about a packet, gzip saves no
                                 round trip and costs CPU on both ends */
    int level;                /* zlib level 1-9; 6 (default, zlib's own): 2-7% larger
                                 than level 9 on text and JSON for a third of its CPU;
                                 level 1 is 1.5-3x faster and 3-12% larger */
    int streams;              /* 1 (default): compress streamed responses too; 0: never */
    const char *const *types; /* media types to compress, NULL-terminated, copied:
                                 "text/html" (exact, parameters ignored), "text/ *"
                                 (any subtype), "application/ *+json" (a structured
                                 suffix). NULL (default): text/ *, application/json,
                                 application/ *+json, application/javascript,
                                 application/xml, application/ *+xml, image/svg+xml
                                 (written here with a blank after the '/') */
} sq_gzip_opts_t;
SQ_EXTERN void sq_gzip_opts_init_sized(sq_gzip_opts_t *opts, size_t size);
static inline void sq_gzip_opts_init(sq_gzip_opts_t *opts)
{
    sq_gzip_opts_init_sized(opts, sizeof(*opts));
}

/* Compresses the responses of app's routes (and of its sub-apps' routes, unless one has
 * its own settings: the nearest app with gzip on the way to the route decides), and of
 * its 404s and 405s, as said at the top. Installed as a before hook, so a response that
 * squall sends before hooks run (400, 408, 413, 431) is never compressed. opts NULL:
 * defaults. Call it once per app. Returns 0; UV_EINVAL (app NULL, a level outside 1-9,
 * an empty or malformed type); UV_ENOTSUP (opts from a newer header with a field set
 * this library lacks); UV_ENOMEM. */
SQ_EXTERN int sq_app_gzip(sq_app_t *app, const sq_gzip_opts_t *opts);

#endif
