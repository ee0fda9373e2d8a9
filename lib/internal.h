/* squall — private structures shared by the layers of lib/. Never installed. */
#ifndef SQUALL_INTERNAL_H
#define SQUALL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>
#include <uv.h>

#include "squall.h"

#define SQ__HIDDEN __attribute__((visibility("hidden")))

#define sq__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define SQ__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SQ__LIKELY(x) __builtin_expect(!!(x), 1)
#define SQ__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- core: intrusive doubly linked list (circular, with a head node) ---- */

typedef struct sq__list {
    struct sq__list *prev, *next;
} sq__list_t;

/* uv_hrtime's clock (CLOCK_MONOTONIC in ns, what libuv reads on Linux) without its two
 * layers of calls: the same values, so times taken either way compare. */
static inline uint64_t sq__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void sq__list_init(sq__list_t *h)
{
    h->prev = h->next = h;
}
static inline bool sq__list_empty(const sq__list_t *h)
{
    return h->next == h;
}
static inline bool sq__list_linked(const sq__list_t *n)
{
    return n->next != NULL;
}
static inline void sq__list_insert_tail(sq__list_t *h, sq__list_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
static inline void sq__list_remove(sq__list_t *n)
{
    if (n->next == NULL)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Moves every node of `from` to the empty head `to` and leaves `from` empty: callbacks run
 * over `to` then see only what was queued before the turn began. */
static inline void sq__list_take(sq__list_t *from, sq__list_t *to)
{
    sq__list_init(to);
    if (sq__list_empty(from))
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    sq__list_init(from);
}

/* ---- core: growable byte buffer ---- */

typedef struct sq__buf {
    char *base;
    size_t len;
    size_t cap;
} sq__buf_t;

SQ__HIDDEN int sq__buf_grow(sq__buf_t *b, size_t extra);
/* Makes room for `extra` more bytes. Returns 0 or UV_ENOMEM. */
static inline int sq__buf_reserve(sq__buf_t *b, size_t extra)
{
    return SQ__LIKELY(b->cap - b->len >= extra) ? 0 : sq__buf_grow(b, extra);
}
/* Appends a copy of data[0..len). Returns 0 or UV_ENOMEM. */
static inline int sq__buf_append(sq__buf_t *b, const void *data, size_t len)
{
    if (SQ__UNLIKELY(b->cap - b->len < len) && sq__buf_grow(b, len) != 0)
        return UV_ENOMEM;
    if (len > 0) {
        memcpy(b->base + b->len, data, len);
        b->len += len;
    }
    return 0;
}
SQ__HIDDEN void sq__buf_free(sq__buf_t *b);
static inline void sq__buf_append_unsafe(sq__buf_t *b, const void *data, size_t len)
{
    if (len == 0)
        return; /* data may be NULL (an empty header value): memcpy must not see it */
    memcpy(b->base + b->len, data, len);
    b->len += len;
}

/* ---- core: bump arena with stable pointers (first block inline in its owner) ---- */

typedef struct sq__arena_block {
    struct sq__arena_block *next;
    size_t cap;
    char data[];
} sq__arena_block_t;

typedef struct sq__arena {
    char *cur;               /* next free byte of the current block */
    char *end;               /* end of the current block */
    sq__arena_block_t *more; /* blocks past the inline one, freed by reset */
    char *inline_base;
    size_t inline_cap;
} sq__arena_t;

SQ__HIDDEN void sq__arena_init(sq__arena_t *a, char *inline_base, size_t inline_cap);
SQ__HIDDEN void *sq__arena_alloc(sq__arena_t *a, size_t size);
SQ__HIDDEN void sq__arena_reset(sq__arena_t *a);

/* ---- core: the Date header, formatted at most once a second per cache ---- */

typedef struct sq__date_cache {
    uint64_t sec;   /* wall-clock second of `text` */
    uint64_t until; /* loop time (ms) before which `sec` is still the second; 0: unknown */
    char text[32];  /* "Sun, 06 Nov 1994 08:49:37 GMT" */
} sq__date_cache_t;

/* The Date for a response made at loop time `now` (uv_now, ms). The wall clock is read
 * once a second: until the loop's time reaches the end of the second last read, the text
 * is reused. So the text may lag a second's turn by as long as the current loop iteration
 * has run (uv_now is when it began), besides CLOCK_REALTIME_COARSE's tick; a wall clock
 * that is set shows within a second. */
SQ__HIDDEN const char *sq__date_get(sq__date_cache_t *dc, uint64_t now);
/* `sec` (Unix time) as an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes + NUL);
 * a time past year 9999 is given as the epoch. */
SQ__HIDDEN void sq__date_format(int64_t sec, char out[30]);
/* Keeps p until the app is destroyed, then calls free_fn(p) (router.c): state a helper
 * installs with hooks (CORS). On UV_ENOMEM free_fn(p) has run. */
SQ__HIDDEN int sq__app_keep(sq_app_t *app, void *p, void (*free_fn)(void *p));

/* ---- what a request squall sends may hold (the clients) ---- */

/* lib/core/uri.c: RFC 3986 §2.3 unreserved and §2.2 sub-delims (a registered name);
 * §3.3-3.4 a path or query character (pchar, "/" and "?"; "%" is checked apart); a span
 * made of `ok` characters and well-formed "%HH" escapes; RFC 9110 §5.6.2 tchar. */
SQ__HIDDEN bool sq__uri_host_char(unsigned char ch);
SQ__HIDDEN bool sq__uri_path_char(unsigned char ch);
SQ__HIDDEN bool sq__uri_span_ok(const char *s, size_t len, bool (*ok)(unsigned char));
/* Byte classes for header fields: a token's characters (tchar, RFC 9110 §5.6.2) and what
 * a field value may hold (§5.5: visible, SP, HTAB, obs-text). */
enum { SQ__CH_TCHAR = 1, SQ__CH_VALUE = 2 };
SQ__HIDDEN extern const uint8_t sq__char_class[256];
static inline bool sq__is_tchar(unsigned char ch)
{
    return sq__char_class[ch] & SQ__CH_TCHAR;
}
/* The length of NUL-terminated s when every byte is of class cls (SQ__CH_*), else
 * SIZE_MAX. */
SQ__HIDDEN size_t sq__field_len(const char *s, unsigned cls);

/* A URL a client connects to, split: host (an IPv6 literal without its brackets), port in
 * decimal, "host[:port]" as written (the Host header), and the request target. */
typedef struct sq__url {
    char *host, *hostport, *target;
    char port[8];
    bool tls; /* the TLS scheme (https://, wss://) */
} sq__url_t;
/* Splits "SCHEME://host[:port][/path][?query]" (`scheme` "http://" or "ws://", their
 * TLS twin `tls_scheme`; case-insensitive, RFC 3986 §3.1), checking every byte that goes
 * into the request line and the Host header: no user info, no fragment, RFC 3986
 * characters and well-formed escapes only; u->tls tells the TLS scheme. Returns 0;
 * UV_EINVAL; UV_ENOMEM. On an error u holds nothing. */
SQ__HIDDEN int sq__url_parse(const char *url, const char *scheme, const char *tls_scheme,
                             sq__url_t *u);
SQ__HIDDEN void sq__url_free(sq__url_t *u);

/* ---- http: percent-decoding ---- */

enum {
    SQ__PCT_PLUS = 1 << 0,    /* '+' is a space (application/x-www-form-urlencoded) */
    SQ__PCT_LENIENT = 1 << 1, /* a bad escape or %00 stays as it was instead of failing */
};
/* Decodes %XX of src[0..n) into dst (at least n+1 bytes); NUL-terminates. Returns the
 * decoded length, or -1 for a bad escape or an encoded NUL (never with SQ__PCT_LENIENT). */
SQ__HIDDEN ssize_t sq__pct_decode(char *dst, const char *src, size_t n, unsigned flags);
/* The length of the well-formed UTF-8 sequence (RFC 3629) at the NUL-terminated p, or 0
 * (lib/core/utf8.c); whether all of s is well-formed. */
SQ__HIDDEN size_t sq__utf8_seq(const unsigned char *p);
SQ__HIDDEN bool sq__utf8_valid(const char *s);
/* The value of a hexadecimal digit, or -1. */
SQ__HIDDEN int sq__hexval(unsigned char c);

/* ---- router ---- */

#define SQ__MAX_PARAMS 16

typedef struct sq__param {
    const char *name;   /* the pattern's, borrowed from the route */
    const char *value;  /* decoded, in the request's arena */
    int64_t ival;
    bool is_int;
} sq__param_t;

typedef struct sq__route sq__route_t;

typedef enum {
    SQ__MATCH_NONE,     /* no route's shape matches: 404 */
    SQ__MATCH_OK,
    SQ__MATCH_NO_METHOD,/* 405; *allow is the Allow header value */
    SQ__MATCH_BAD_PARAM, /* 422; *bad_param names the parameter */
    SQ__MATCH_ASTERISK, /* the asterisk-form target "*" (RFC 9112 §3.2.4) */
    SQ__MATCH_DONE      /* answered before the handler (a declared operation's 422) */
} sq__match_t;

typedef struct sq__match_result {
    const sq__route_t *route;
    sq_handler_cb cb;       /* the handler's callback for the method, or NULL... */
    sq_blocking_cb bcb;     /* ...when a blocking one serves it */
    const sq_handler_t *handler;
    const sq_op_t *op;      /* the method's declared operation, or NULL */
    const sq_app_t *app;    /* no route (404): the deepest mount whose prefix matched */
    void *data;
    const char *allow;      /* for 405 */
    const char *bad_param;  /* for 422 */
    const char *bad_value;
    unsigned nparams;
    sq__param_t params[SQ__MAX_PARAMS];
} sq__match_result_t;

/* sq_app_route for a route that owns `data`: free_data(data) runs when the app is
 * destroyed — and at once, before returning an error, when the route cannot be added. */
SQ__HIDDEN int sq__app_route_owned(sq_app_t *app, const char *pattern,
                                   const sq_handler_t *handler, void *data,
                                   void (*free_data)(void *data));
/* The same for a WebSocket route (sq_app_websocket): the OpenAPI document leaves it out. */
SQ__HIDDEN int sq__app_route_ws(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                                void *data, void (*free_data)(void *data));

/* The app's routes in registration order, for the OpenAPI document: i < sq__app_nroutes. */
SQ__HIDDEN unsigned sq__app_nroutes(const sq_app_t *app);
SQ__HIDDEN const sq__route_t *sq__app_route_at(const sq_app_t *app, unsigned i);
/* The route's handler table (squall's copy: every member is there), and whether it is a
 * WebSocket route. */
SQ__HIDDEN const sq_handler_t *sq__route_handler(const sq__route_t *r);
SQ__HIDDEN bool sq__route_is_ws(const sq__route_t *r);
/* Hooks and error handlers of an app (router.c), for the HTTP layer's dispatch. */
typedef struct sq__hook {
    union {
        sq_before_cb before;
        sq_after_cb after;
        sq_error_cb error;
    } cb;
    void *data;
} sq__hook_t;
#define SQ__MAX_MOUNT_DEPTH 8 /* apps from the served one to a route (deeper: refused) */
SQ__HIDDEN const sq_app_t *sq__route_app(const sq__route_t *r);
SQ__HIDDEN const sq_app_t *sq__app_parent(const sq_app_t *app);
SQ__HIDDEN const sq__hook_t *sq__app_befores(const sq_app_t *app, unsigned *n);
SQ__HIDDEN const sq__hook_t *sq__app_afters(const sq_app_t *app, unsigned *n);
/* How many before and after hooks an app and the apps mounted below it have: every
 * sq_app_t starts with it (router.c), so that a request in an app with none (most) is
 * spared the walk along its chain for the price of a load. */
typedef struct sq__app_hooks {
    unsigned tree_before, tree_after;
} sq__app_hooks_t;
/* true when app or an app mounted below it has a before (after: an after) hook */
static inline bool sq__app_tree_hooks(const sq_app_t *app, bool after)
{
    const sq__app_hooks_t *h = (const sq__app_hooks_t *)(const void *)app;
    return (after ? h->tree_after : h->tree_before) != 0;
}
/* The app's own error handler for status, or NULL. */
SQ__HIDDEN const sq__hook_t *sq__app_error(const sq_app_t *app, int status);
/* A mount's sub-app and prefix; NULL for a route. */
SQ__HIDDEN const sq_app_t *sq__route_sub(const sq__route_t *r, const char **prefix);

/* An operation checked when its route is added (lib/schema/check.c): 0, or UV_EINVAL for
 * a path field the pattern's parameters (path_names) lack, a list or object parameter, a
 * body on a streamed method, text that is not UTF-8, a pattern ERE cannot read as Python
 * does, a default that is not JSON. */
SQ__HIDDEN int sq__op_check(const sq_op_t *op, const char *const *path_names, unsigned nnames,
                            bool streamed);

/* The operation declared for `method` (HEAD: .get's), or NULL. */
SQ__HIDDEN const sq_op_t *sq__handler_op(const sq_handler_t *h, sq_method_t method);

/* The route's pattern as registered ("/items/{id:int}"); lives as long as the app. */
SQ__HIDDEN const char *sq__route_pattern(const sq__route_t *r);

/* Matches a decoded-per-segment raw path against the app's routes. Param values are
 * allocated in `arena`. */
SQ__HIDDEN sq__match_t sq__app_match(const sq_app_t *app, sq_method_t method,
                                     const char *path, size_t path_len, sq__arena_t *arena,
                                     sq__match_result_t *out);
/* The same, told whether the path holds a '%' (a reader that scanned it knows). */
SQ__HIDDEN sq__match_t sq__app_match_pct(const sq_app_t *app, sq_method_t method,
                                         const char *path, size_t path_len, bool has_pct,
                                         sq__arena_t *arena, sq__match_result_t *out);

/* ---- server: connections and exchanges ---- */

typedef struct sq__conn sq__conn_t;
typedef struct sq_req_s sq__exch_t;

/* The protocol a connection speaks: the transport (lib/server) calls up only through
 * this table. HTTP/1 (lib/http/h1_conn.c) is every connection's first; a take-over
 * (WebSocket) installs another. The three optional entries may be NULL. */
typedef struct sq__proto {
    /* Bytes read (nread > 0), or the end of the stream (nread < 0, a libuv code; after
     * UV_EOF the transport reads no more unless told to). The bytes are the transport's
     * own writable buffer, not read again once this returns: the protocol may change
     * them in place (WebSocket unmasks there, lib/ws/frame.c). */
    void (*on_read)(sq__conn_t *conn, void *ud, const char *data, ssize_t nread);
    /* The server is shutting down: say goodbye (WebSocket 1001) and close soon. */
    void (*on_shutdown)(sq__conn_t *conn, void *ud);
    /* The connection is closing (or lingering before it): the protocol lets go of it;
     * the transport calls nothing of it again. */
    void (*on_close)(sq__conn_t *conn, void *ud);
    /* Work the protocol queued with sq__tick_add, run before the loop polls again. */
    void (*on_tick)(sq__conn_t *conn, void *ud);
    /* The deadline of timeout list `which` (SQ__TQ_*) passed; the connection is out of
     * the list. NULL: the transport closes the connection. */
    void (*on_timeout)(sq__conn_t *conn, void *ud, int which);
    /* A flush handed what it could to the kernel; `idle`: nothing is in flight. */
    void (*on_flushed)(sq__conn_t *conn, void *ud, bool idle);
} sq__proto_t;

/* Write-completion for raw connection writes (status 0, or negative when not sent). */
typedef void (*sq__write_cb)(sq__conn_t *conn, int status, void *ud);

SQ__HIDDEN int sq__conn_write(sq__conn_t *conn, const uv_buf_t *bufs, unsigned nbufs,
                              sq__write_cb cb, void *ud);
SQ__HIDDEN int sq__conn_write_ref(sq__conn_t *conn, const void *base, size_t len,
                                  sq_free_cb free_cb, void *free_ud, sq__write_cb cb, void *ud);
SQ__HIDDEN size_t sq__conn_queued_bytes(const sq__conn_t *conn);
/* Stops (on = false) or restarts reading a taken-over connection (back-pressure). */
SQ__HIDDEN void sq__conn_read(sq__conn_t *conn, bool on);
/* Closes after queued bytes are written (graceful) or at once (force). */
SQ__HIDDEN void sq__conn_close(sq__conn_t *conn, bool force);
SQ__HIDDEN uv_loop_t *sq__conn_loop(const sq__conn_t *conn);
/* Hands the connection to `proto` after the current request's response (which the caller
 * writes raw, e.g. 101). Bytes already read past the request are delivered to
 * proto->on_read before any new read. Finishes res. */
SQ__HIDDEN int sq__res_takeover(sq_res_t *res, const sq__proto_t *proto, void *ud);
/* 1 for a status that may end a response: 200-999 (1xx are interim; 101 is
 * sq__res_switch's). */
SQ__HIDDEN bool sq__status_is_final(int status);
/* 1 for a header squall writes itself and a handler may not add: Content-Length,
 * Transfer-Encoding, Connection (but for `Connection: upgrade`); names case-insensitive. */
SQ__HIDDEN bool sq__header_is_framing(const char *name, const char *value);
/* 1 when `s` may stand as a field name (a token: RFC 9110 §5.1) or value (no CR, LF or
 * other control but tab: §5.5). */
SQ__HIDDEN bool sq__field_ok(const char *s, bool is_name);
/* sq__field_ok(value, false), NULL counting as absent: content types are checked with it. */
SQ__HIDDEN bool sq__field_value_ok(const char *value);
/* Sends `101 Switching Protocols` with the headers added by sq_res_header, then takes the
 * connection over as sq__res_takeover does. Returns 0, UV_ECANCELED (client gone; res is
 * released and proto is never called) or UV_ENOMEM. */
SQ__HIDDEN int sq__res_switch(sq_res_t *res, const sq__proto_t *proto, void *ud);

#endif
