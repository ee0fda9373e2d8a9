/* The hub on Redis: one stream per room (key: redis_prefix + the room's name), so that
 * servers on several machines share rooms, ids and history.
 *
 * Numbering. A message is `XADD key MAXLEN <history_count> 0-* text <text>`: the
 * milliseconds part is always 0 and Redis gives the sequence part, one above the
 * stream's last (0-1, 0-2, ...), atomically whoever publishes. The message's id is that
 * sequence number. (An explicit milliseconds part with an automatic sequence needs
 * Redis 7.0.)
 *
 * Threads. Everything that talks to Redis runs on one thread of the backend's own, with
 * its own loop and hiredis' libuv adapter. The hub's calls (publish, history, watch,
 * room_free) only queue under rb->mu and wake that thread (uv_async_t); answers go back
 * with sq__hub_complete, live messages with sq__hub_fanout (which takes hub->mu: this
 * thread never holds rb->mu then, and watch() — called with hub->mu held — takes rb->mu
 * only to queue, so the two locks are always taken in the order hub->mu, rb->mu).
 *
 * Two connections. The command connection carries publishes, history reads and the
 * reads of a room's last id. The blocking connection carries one
 * `XREAD BLOCK ... STREAMS k1 k2 ... c1 c2 ...` at a time over every room the process
 * watches, from each room's cursor (the last id it delivered); when the set of rooms
 * changes while it blocks, `CLIENT UNBLOCK <its id>` on the command connection makes it
 * return, and it is issued again with the new set.
 *
 * No gap between a subscriber's history and the live messages: watch(on) reaches this
 * thread before the subscriber's history request (the hub calls it first; the queue is
 * drained watches first), so the room's last id is read on the command connection before
 * the history is, and becomes the room's cursor: what the history returns starts at or
 * below what the live read will. The core drops the duplicates by id.
 *
 * Redis going away. Each connection is tried again every redis_reconnect_ms; connecting
 * and each command are bounded by redis_timeout_ms (the blocking read by its block time
 * plus that). While the command connection is down, publish and history fail at once
 * (UV_ECONNREFUSED); in flight when it goes, with UV_ECONNRESET (or UV_ETIMEDOUT). After
 * reconnecting, the live read resumes from every room's cursor, so nothing Redis
 * acknowledged is lost.
 *
 * hiredis 0.14's libuv adapter ignores a poll error (a refused connect, a reset): the
 * poll just stops and hiredis is never told. A check handle (after each poll phase) sees
 * a poll that stopped while hiredis still wants events and lets hiredis read or write,
 * which finds the socket's error and drops the connection as it should.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

#include "hub_int.h"

/* How long one XREAD blocks. A connection that died without a FIN or a reset is found
 * within this plus redis_timeout_ms; a change of the watched set never waits for it. */
#define RB_BLOCK_MS 10000
/* Entries one XREAD returns per stream at most (it is issued again at once). */
#define RB_READ_COUNT "100"
/* A CLIENT UNBLOCK that found the XREAD not blocked yet is sent again this much later. */
#define RB_UNBLOCK_RETRY_MS 2
/* Error replies logged at most this often (every one is counted). */
#define RB_LOG_EVERY_MS 1000

/* The history read, atomic on the server: the stream's last generated id (which an empty
 * stream still has), whether `since` is above it (the room started again: read from the
 * start), and the entries above since. ARGV: since (decimal, or "now" for none), count.
 * Returns {last id, entries, reset}. Ids are compared as canonical decimal strings, which
 * is exact where Lua's numbers are not. */
static const char rb_history_lua[] =
    "local key, since, count = KEYS[1], ARGV[1], tonumber(ARGV[2])\n"
    "local last = '0-0'\n"
    "if redis.call('EXISTS', key) == 1 then\n"
    "  local info = redis.call('XINFO', 'STREAM', key)\n"
    "  for i = 1, #info - 1, 2 do\n"
    "    if info[i] == 'last-generated-id' then last = info[i + 1] end\n"
    "  end\n"
    "end\n"
    "local reset, from = 0, '-'\n"
    "if since == 'now' then return {last, {}, 0} end\n"
    "if since ~= '0' then\n"
    "  local seq = string.match(last, '^0%-(%d+)$')\n"
    "  if seq and (#since > #seq or (#since == #seq and since > seq)) then\n"
    "    reset = 1\n"
    "  else\n"
    "    from = '(0-' .. since\n"
    "  end\n"
    "end\n"
    "if count == 0 then return {last, {}, reset} end\n"
    "return {last, redis.call('XRANGE', key, from, '+', 'COUNT', count), reset}\n";

enum { RC_DOWN, RC_CONNECTING, RC_HELLO, RC_UP };

typedef struct rb rb_t;

/* One connection to Redis and its state. */
typedef struct rconn {
    rb_t *rb;
    redisAsyncContext *ac;
    const char *what;  /* for the log */
    int state;         /* RC_*: RC_HELLO while the blocking one asks its CLIENT ID */
    int fail;          /* the status replies get while the context is being dropped */
    int logged_down;   /* the loss was logged: log the next success */
    unsigned pending;  /* commands sent, not answered */
    uint64_t since;    /* uv_now of the connect, or of the last progress while pending */
    uint64_t extra_ms; /* allowance on top of the timeout for what is pending (XREAD) */
    uint64_t retry_at; /* RC_DOWN: the next attempt */
} rconn_t;

enum { RR_FETCH, RR_FETCHING, RR_LIVE };

/* A room this process watches, on the backend's thread only. */
typedef struct rroom {
    struct rroom *next; /* hash chain */
    uint64_t hash;
    unsigned refs;      /* watch on minus watch off */
    unsigned inflight;  /* reads of its last id in flight (each holds the struct) */
    int state;          /* RR_FETCH: needs its cursor; RR_LIVE: in the XREAD */
    int linked;         /* in the table (not once unwatched) */
    uint64_t cur_ms, cur_seq; /* the cursor: the last id delivered */
    size_t klen;
    char key[];         /* prefix + name, NUL-terminated */
} rroom_t;

/* A watch or unwatch, queued by the hub's threads. */
typedef struct rwatch {
    struct rwatch *next;
    int on;
    size_t len;
    char name[];
} rwatch_t;

struct rb {
    sq_hub_t *hub;
    char *host;
    int port;
    const char *prefix; /* hub->redis_prefix */
    size_t prefix_len;
    uint64_t timeout_ms, reconnect_ms;
    size_t history_count;
    char count_str[24];

    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer; /* the earliest deadline: a connect or command timeout, a retry */
    uv_check_t check; /* after each poll: stopped polls, then the timer */

    uv_mutex_t mu; /* guards the two queues and stopping */
    sq__hub_op_t *ops, **ops_tail;
    rwatch_t *watches, **watches_tail;
    int stopping;

    /* the backend thread's own */
    int stopped;
    rconn_t cmd, blk;
    long long blk_id; /* CLIENT ID of the blocking connection */
    rroom_t **tab;
    size_t tab_cap, nrooms, nlive;
    int xread_pending; /* an XREAD is out on the blocking connection */
    int xread_dirty;   /* the set of live rooms changed since it was sent */
    int unblock_pending;
    uint64_t xread_gen;   /* XREADs issued */
    uint64_t unblock_gen; /* the one the CLIENT UNBLOCK out was sent for */
    uint64_t unblock_at; /* nonzero: send CLIENT UNBLOCK again then */
    uint64_t xread_at;   /* nonzero: issue the XREAD no earlier (after an error reply) */
    uint64_t log_at;
    sq__buf_t key; /* scratch: a stream's key */
};

/* ---- the URL ---- */

static int host_char_ok(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

static int ip6_char_ok(int ch)
{
    return (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') || (ch >= '0' && ch <= '9') ||
           ch == ':' || ch == '.';
}

/* Reads "redis://HOST[:PORT]" (HOST a name, an IPv4 address or a bracketed IPv6 one;
 * PORT 1..65535, 6379 when absent) and nothing more: no user, path or query. Returns 0
 * with *host malloc'd (when host is not NULL) and *port (when port is not NULL);
 * UV_EINVAL; UV_ENOMEM. */
int sq__hub_redis_parse(const char *url, char **host, int *port)
{
    static const char scheme[] = "redis://";
    const char *h, *hend, *p;
    long portnum = 6379;

    if (url == NULL || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return UV_EINVAL;
    h = url + sizeof(scheme) - 1;
    if (*h == '[') {
        h++;
        for (hend = h; *hend != ']'; hend++)
            if (!ip6_char_ok((unsigned char)*hend))
                return UV_EINVAL;
        p = hend + 1;
    } else {
        for (hend = h; *hend != '\0' && *hend != ':'; hend++)
            if (!host_char_ok((unsigned char)*hend))
                return UV_EINVAL;
        p = hend;
    }
    if (hend == h || hend - h > 255)
        return UV_EINVAL;
    if (*p == ':') {
        p++;
        portnum = 0;
        const char *d = p;
        for (; *p >= '0' && *p <= '9'; p++) {
            portnum = portnum * 10 + (*p - '0');
            if (portnum > 65535)
                return UV_EINVAL;
        }
        if (p == d || portnum == 0)
            return UV_EINVAL;
    }
    if (*p != '\0')
        return UV_EINVAL;
    if (host != NULL) {
        *host = strndup(h, (size_t)(hend - h));
        if (*host == NULL)
            return UV_ENOMEM;
    }
    if (port != NULL)
        *port = (int)portnum;
    return 0;
}

/* ---- small helpers ---- */

static uint64_t rb_now(rb_t *rb)
{
    return uv_now(&rb->loop);
}

static void rb_error(rb_t *rb)
{
    atomic_fetch_add(&rb->hub->redis_errors, 1);
}

/* Logs a failed command, at most once a second (each is counted). */
static void rb_log_failure(rb_t *rb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rb_log_failure(rb_t *rb, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    uint64_t now = rb_now(rb);

    if (rb->log_at != 0 && now < rb->log_at)
        return;
    rb->log_at = now + RB_LOG_EVERY_MS;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    sq_log(SQ_LOG_WARN, "hub: redis %s:%d: %s", rb->host, rb->port, line);
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A stream id "MS-SEQ". */
static int parse_id(const char *s, size_t n, uint64_t *ms, uint64_t *seq)
{
    const char *dash = memchr(s, '-', n);
    if (dash == NULL)
        return -1;
    if (parse_u64(s, (size_t)(dash - s), ms) != 0 ||
        parse_u64(dash + 1, n - (size_t)(dash - s) - 1, seq) != 0)
        return -1;
    return 0;
}

static int reply_is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* The stream key of a room, in rb->key (valid until the next call). */
static int rb_make_key(rb_t *rb, const char *name, size_t len)
{
    rb->key.len = 0;
    if (sq__buf_append(&rb->key, rb->prefix, rb->prefix_len) != 0 ||
        sq__buf_append(&rb->key, name, len) != 0 || sq__buf_append(&rb->key, "", 1) != 0)
        return UV_ENOMEM;
    rb->key.len--;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- the rooms this process watches (the backend thread's table) ---- */

static rroom_t *room_find(rb_t *rb, const char *key, size_t klen)
{
    if (rb->tab_cap == 0)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    for (rroom_t *r = rb->tab[h & (rb->tab_cap - 1)]; r != NULL; r = r->next)
        if (r->hash == h && r->klen == klen && memcmp(r->key, key, klen) == 0)
            return r;
    return NULL;
}

static int room_table_grow(rb_t *rb)
{
    size_t cap = rb->tab_cap ? rb->tab_cap * 2 : 16;
    rroom_t **tab = calloc(cap, sizeof(*tab));
    if (tab == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < rb->tab_cap; i++) {
        rroom_t *r = rb->tab[i], *next;
        for (; r != NULL; r = next) {
            next = r->next;
            r->next = tab[r->hash & (cap - 1)];
            tab[r->hash & (cap - 1)] = r;
        }
    }
    free(rb->tab);
    rb->tab = tab;
    rb->tab_cap = cap;
    return 0;
}

static rroom_t *room_add(rb_t *rb, const char *key, size_t klen)
{
    if (rb->nrooms + 1 > rb->tab_cap && room_table_grow(rb) != 0)
        return NULL;
    rroom_t *r = calloc(1, sizeof(*r) + klen + 1);
    if (r == NULL)
        return NULL;
    memcpy(r->key, key, klen);
    r->klen = klen;
    r->hash = hash_bytes(key, klen);
    r->state = RR_FETCH;
    r->linked = 1;
    r->next = rb->tab[r->hash & (rb->tab_cap - 1)];
    rb->tab[r->hash & (rb->tab_cap - 1)] = r;
    rb->nrooms++;
    return r;
}

static void room_unlink(rb_t *rb, rroom_t *r)
{
    rroom_t **pp = &rb->tab[r->hash & (rb->tab_cap - 1)];
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    r->next = NULL;
    r->linked = 0;
    rb->nrooms--;
    if (r->state == RR_LIVE) {
        rb->nlive--;
        rb->xread_dirty = 1;
    }
    r->state = RR_FETCH;
}

/* Frees a room once it is unwatched and no read of its last id holds it. */
static void room_maybe_free(rroom_t *r)
{
    if (!r->linked && r->inflight == 0)
        free(r);
}

/* ---- connections ---- */

static void rb_arm(rb_t *rb);
static void rb_xread_kick(rb_t *rb);
static void rb_fetch_all(rb_t *rb);
static void rconn_connect(rb_t *rb, rconn_t *c);

static void rb_update_connected(rb_t *rb)
{
    int up = rb->cmd.state == RC_UP && rb->blk.state == RC_UP;
    atomic_store(&rb->hub->redis_connected, (uint_fast64_t)up);
}

/* The connection is gone (or never came): try again after redis_reconnect_ms. */
static void rconn_down(rconn_t *c, const char *why)
{
    rb_t *rb = c->rb;
    if (c->state == RC_DOWN)
        return;
    if (rb->stopped) {
        c->state = RC_DOWN;
        c->ac = NULL;
        return;
    }
    if (c->state != RC_CONNECTING || !c->logged_down) {
        sq_log(SQ_LOG_WARN, "hub: redis %s:%d: %s connection %s (%s); trying again every %llu ms",
               rb->host, rb->port, c->what, c->state == RC_CONNECTING ? "failed" : "lost",
               why != NULL ? why : "closed", (unsigned long long)rb->reconnect_ms);
        c->logged_down = 1;
    }
    rb_error(rb);
    c->state = RC_DOWN;
    c->ac = NULL;
    c->pending = 0;
    c->extra_ms = 0;
    c->retry_at = rb_now(rb) + rb->reconnect_ms;
    if (c == &rb->blk) {
        rb->xread_pending = 0;
        rb->unblock_at = 0;
    } else {
        rb->unblock_pending = 0;
    }
    rb_update_connected(rb);
}

/* Drops a context hiredis still holds: every pending reply callback runs with NULL and
 * sees c->fail. Not from inside one of its own callbacks. */
static void rconn_drop(rconn_t *c, int status, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    c->fail = status;
    rconn_down(c, why); /* first: the callbacks run by the free see it down */
    redisAsyncFree(ac);
}

static void rconn_up(rconn_t *c)
{
    rb_t *rb = c->rb;
    c->state = RC_UP;
    c->fail = UV_ECONNRESET;
    if (c->logged_down) {
        sq_log(SQ_LOG_WARN, "hub: redis %s:%d: %s connection up", rb->host, rb->port, c->what);
        c->logged_down = 0;
    }
    rb_update_connected(rb);
}

/* Sends a command on a connection that is up (or, for the blocking one's CLIENT ID,
 * saying hello). Returns 0, UV_ECONNREFUSED (down), UV_ECONNRESET (being dropped) or
 * UV_ENOMEM. */
static int rconn_send(rconn_t *c, int hello, redisCallbackFn *fn, void *priv, int argc,
                      const char **argv, const size_t *lens)
{
    if (c->ac == NULL || (c->state != RC_UP && !(hello && c->state == RC_HELLO)))
        return UV_ECONNREFUSED;
    if (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))
        return UV_ECONNRESET;
    if (redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) != REDIS_OK)
        return UV_ENOMEM;
    if (c->pending++ == 0)
        c->since = rb_now(c->rb);
    return 0;
}

/* A reply (or its NULL on a drop) came: progress. */
static void rconn_answered(rconn_t *c)
{
    if (c->pending > 0)
        c->pending--;
    c->since = rb_now(c->rb);
}

static rconn_t *conn_of(const redisAsyncContext *ac)
{
    return (rconn_t *)ac->data;
}

static void on_client_id(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    redisReply *reply = r;

    rconn_answered(c);
    if (reply == NULL || rb->stopped)
        return;
    if (reply->type != REDIS_REPLY_INTEGER) {
        rb_error(rb);
        rb_log_failure(rb, "CLIENT ID: unexpected reply (%s)",
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        return; /* still saying hello at its deadline: dropped, then tried again */
    }
    rb->blk_id = reply->integer;
    rconn_up(c);
    rb_xread_kick(rb);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    rconn_t *c = conn_of(cac);
    rb_t *rb = c->rb;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        rconn_down(c, cac->errstr);
        return;
    }
    if (c == &rb->cmd) {
        rconn_up(c);
        rb_fetch_all(rb);
        rb_xread_kick(rb); /* a CLIENT UNBLOCK the set changes may need */
        return;
    }
    /* The blocking connection learns its id first: CLIENT UNBLOCK names it. Not
     * disconnected from here on a failure (hiredis still uses the context after this
     * returns): the hello's deadline drops it. */
    static const char *argv[] = {"CLIENT", "ID"};
    static const size_t lens[] = {6, 2};
    c->state = RC_HELLO;
    c->since = rb_now(rb);
    rconn_send(c, 1, on_client_id, NULL, 2, argv, lens);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    rconn_t *c = conn_of(cac);
    rconn_down(c, status == REDIS_OK ? NULL : cac->errstr);
}

static void rconn_connect(rb_t *rb, rconn_t *c)
{
    redisAsyncContext *ac = redisAsyncConnect(rb->host, rb->port);

    c->state = RC_CONNECTING;
    c->since = rb_now(rb);
    c->pending = 0;
    c->extra_ms = 0;
    c->fail = UV_ECONNREFUSED;
    if (ac == NULL) {
        rconn_down(c, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        rconn_down(c, why);
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, &rb->loop) != REDIS_OK) {
        /* The adapter leaves its hooks set without its data: freeing would call them. */
        if (ac->ev.data == NULL)
            memset(&ac->ev, 0, sizeof(ac->ev));
        redisAsyncFree(ac);
        rconn_down(c, "the libuv adapter failed");
        return;
    }
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

/* A poll the adapter stopped on an error hiredis was not told of: let hiredis find it. */
static void rconn_check_poll(rconn_t *c)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL || ac->ev.data == NULL)
        return;
    redisLibuvEvents *p = ac->ev.data;
    if (p->events == 0 || uv_is_active((uv_handle_t *)&p->handle))
        return;
    if (p->events & UV_WRITABLE)
        redisAsyncHandleWrite(ac);
    else
        redisAsyncHandleRead(ac);
}

/* Deadlines of one connection: a connect or a command that took too long, a retry. */
static void rconn_tick(rb_t *rb, rconn_t *c, uint64_t now)
{
    switch (c->state) {
    case RC_DOWN:
        if (now >= c->retry_at)
            rconn_connect(rb, c);
        break;
    case RC_CONNECTING:
    case RC_HELLO:
        if (now - c->since >= rb->timeout_ms)
            rconn_drop(c, UV_ETIMEDOUT, "connect timed out");
        break;
    default:
        if (c->pending > 0 && now - c->since >= rb->timeout_ms + c->extra_ms) {
            rb_error(rb);
            rconn_drop(c, UV_ETIMEDOUT, "no reply in time");
        }
        break;
    }
}

static uint64_t rconn_deadline(rb_t *rb, const rconn_t *c)
{
    switch (c->state) {
    case RC_DOWN:
        return c->retry_at;
    case RC_CONNECTING:
    case RC_HELLO:
        return c->since + rb->timeout_ms;
    default:
        return c->pending > 0 ? c->since + rb->timeout_ms + c->extra_ms : UINT64_MAX;
    }
}

static void on_timer(uv_timer_t *t)
{
    rb_t *rb = t->data;
    uint64_t now = rb_now(rb);
    if (rb->stopped)
        return;
    rconn_tick(rb, &rb->cmd, now);
    rconn_tick(rb, &rb->blk, now);
    if (rb->unblock_at != 0 && now >= rb->unblock_at) {
        rb->unblock_at = 0;
        rb_xread_kick(rb);
    }
    if (rb->xread_at != 0 && now >= rb->xread_at) {
        rb->xread_at = 0;
        rb_xread_kick(rb);
    }
}

/* Arms the timer for the earliest deadline. */
static void rb_arm(rb_t *rb)
{
    uint64_t at = rconn_deadline(rb, &rb->cmd), now = rb_now(rb);
    uint64_t b = rconn_deadline(rb, &rb->blk);
    if (b < at)
        at = b;
    if (rb->unblock_at != 0 && rb->unblock_at < at)
        at = rb->unblock_at;
    if (rb->xread_at != 0 && rb->xread_at < at)
        at = rb->xread_at;
    if (at == UINT64_MAX) {
        uv_timer_stop(&rb->timer);
        return;
    }
    uv_timer_start(&rb->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_check(uv_check_t *h)
{
    rb_t *rb = h->data;
    if (rb->stopped)
        return;
    rconn_check_poll(&rb->cmd);
    rconn_check_poll(&rb->blk);
    rb_arm(rb);
}

/* ---- the live read ---- */

/* The messages of one stream of an XREAD reply: [key, [[id, [field, value, ...]], ...]]. */
static void rb_deliver(rb_t *rb, const redisReply *stream)
{
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        !reply_is_str(stream->element[0]) || stream->element[1]->type != REDIS_REPLY_ARRAY) {
        rb_error(rb);
        rb_log_failure(rb, "XREAD: a reply of an unexpected shape");
        return;
    }
    const redisReply *k = stream->element[0], *entries = stream->element[1];
    rroom_t *r = room_find(rb, k->str, k->len);
    if (r == NULL || r->state != RR_LIVE)
        return; /* unwatched meanwhile */
    const char *name = r->key + rb->prefix_len;
    size_t name_len = r->klen - rb->prefix_len;

    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i], *fields;
        uint64_t ms, seq;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !reply_is_str(e->element[0]) ||
            parse_id(e->element[0]->str, e->element[0]->len, &ms, &seq) != 0) {
            rb_error(rb);
            rb_log_failure(rb, "XREAD: an entry of an unexpected shape in %s", r->key);
            continue;
        }
        if (ms < r->cur_ms || (ms == r->cur_ms && seq <= r->cur_seq))
            continue;
        r->cur_ms = ms;
        r->cur_seq = seq;
        fields = e->element[1];
        const redisReply *text = NULL;
        if (ms == 0 && fields->type == REDIS_REPLY_ARRAY)
            for (size_t f = 0; f + 1 < fields->elements; f += 2)
                if (reply_is_str(fields->element[f]) && fields->element[f]->len == 4 &&
                    memcmp(fields->element[f]->str, "text", 4) == 0 &&
                    reply_is_str(fields->element[f + 1]))
                    text = fields->element[f + 1];
        if (text == NULL) {
            rb_error(rb);
            rb_log_failure(rb, "XREAD: entry %llu-%llu of %s is not a message",
                           (unsigned long long)ms, (unsigned long long)seq, r->key);
            continue;
        }
        int err = 0;
        sq_hub_msg_t *m = sq__hub_msg_new(name, name_len, seq, text->str, text->len, &err);
        if (m == NULL) {
            rb_error(rb);
            rb_log_failure(rb, "XREAD: message %llu of %s dropped (%s)",
                           (unsigned long long)seq, r->key, uv_strerror(err));
            continue;
        }
        sq__hub_fanout(rb->hub, m);
        sq__hub_msg_unref(m);
    }
}

static void on_xread(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    redisReply *reply = r;

    rconn_answered(c);
    c->extra_ms = 0;
    rb->xread_pending = 0;
    if (reply == NULL || rb->stopped)
        return; /* dropped: issued again once it is back */
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            rb_deliver(rb, reply->element[i]);
    } else if (reply->type != REDIS_REPLY_NIL) {
        /* Timed out or unblocked: NIL. Anything else is an error: wait before again. */
        rb_error(rb);
        rb_log_failure(rb, "XREAD: %s",
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        rb->xread_at = rb_now(rb) + rb->reconnect_ms;
        return;
    }
    rb_xread_kick(rb);
}

static void on_unblock(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    redisReply *reply = r;

    rconn_answered(c);
    rb->unblock_pending = 0;
    if (reply == NULL || rb->stopped)
        return;
    if (reply->type != REDIS_REPLY_INTEGER) {
        rb_error(rb);
        rb_log_failure(rb, "CLIENT UNBLOCK: %s",
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return; /* the XREAD's block time still bounds the wait */
    }
    if (!rb->xread_pending || !rb->xread_dirty)
        return;
    if (rb->unblock_gen != rb->xread_gen)
        rb_xread_kick(rb); /* it was for an XREAD since answered: the one out now */
    else if (reply->integer == 0)
        rb->unblock_at = rb_now(rb) + RB_UNBLOCK_RETRY_MS; /* not blocked yet: again */
    /* 1: it returns, and is issued again with the new set */
}

/* Brings the XREAD in line with the live rooms: issues it when none is out, or has the
 * one out return (CLIENT UNBLOCK) when the set changed. */
static void rb_xread_kick(rb_t *rb)
{
    if (rb->stopped || rb->blk.state != RC_UP)
        return;
    if (rb->xread_pending) {
        if (rb->xread_dirty && !rb->unblock_pending && rb->unblock_at == 0 &&
            rb->cmd.state == RC_UP) {
            char id[24];
            int n = snprintf(id, sizeof(id), "%lld", rb->blk_id);
            const char *argv[] = {"CLIENT", "UNBLOCK", id};
            size_t lens[] = {6, 7, (size_t)n};
            if (rconn_send(&rb->cmd, 0, on_unblock, NULL, 3, argv, lens) == 0) {
                rb->unblock_pending = 1;
                rb->unblock_gen = rb->xread_gen;
            }
        }
        return;
    }
    if (rb->xread_at != 0)
        return;
    rb->xread_dirty = 0;
    if (rb->nlive == 0)
        return;

    /* XREAD COUNT n BLOCK ms STREAMS k1 .. kn c1 .. cn */
    size_t argc = 6 + 2 * rb->nlive, k = 6;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    char *ids = malloc(rb->nlive * 44);
    if (argv == NULL || lens == NULL || ids == NULL) {
        rb_error(rb);
        rb->xread_at = rb_now(rb) + rb->reconnect_ms;
        goto out;
    }
    static const char block[] = "10000";
    _Static_assert(RB_BLOCK_MS == 10000, "block[] spells RB_BLOCK_MS");
    argv[0] = "XREAD", lens[0] = 5;
    argv[1] = "COUNT", lens[1] = 5;
    argv[2] = RB_READ_COUNT, lens[2] = strlen(RB_READ_COUNT);
    argv[3] = "BLOCK", lens[3] = 5;
    argv[4] = block, lens[4] = sizeof(block) - 1;
    argv[5] = "STREAMS", lens[5] = 7;
    size_t j = 0;
    for (size_t b = 0; b < rb->tab_cap; b++)
        for (rroom_t *r = rb->tab[b]; r != NULL; r = r->next) {
            if (r->state != RR_LIVE)
                continue;
            char *id = ids + j * 44;
            int n = snprintf(id, 44, "%llu-%llu", (unsigned long long)r->cur_ms,
                             (unsigned long long)r->cur_seq);
            argv[k] = r->key, lens[k] = r->klen;
            argv[k + rb->nlive] = id, lens[k + rb->nlive] = (size_t)n;
            k++, j++;
        }
    int rc = rconn_send(&rb->blk, 0, on_xread, NULL, (int)argc, argv, lens);
    if (rc == 0) {
        rb->xread_pending = 1;
        rb->xread_gen++;
        rb->blk.extra_ms = RB_BLOCK_MS;
    } else {
        rb_error(rb);
        rb->xread_at = rb_now(rb) + rb->reconnect_ms;
    }
out:
    free(argv);
    free(lens);
    free(ids);
}

/* ---- a room's cursor ---- */

static int rb_eval_history(rb_t *rb, const char *key, size_t klen, const char *since,
                           redisCallbackFn *fn, void *priv)
{
    const char *argv[] = {"EVAL", rb_history_lua, "1", key, since, rb->count_str};
    size_t lens[] = {4, sizeof(rb_history_lua) - 1, 1, klen, strlen(since),
                     strlen(rb->count_str)};
    return rconn_send(&rb->cmd, 0, fn, priv, 6, argv, lens);
}

/* The script's answer: {last id, entries, reset}. Returns 0 and *last, or -1 (a stream
 * whose ids have a milliseconds part was not written by a hub: not read). */
static int history_reply(const redisReply *reply, uint64_t *last)
{
    uint64_t ms;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        !reply_is_str(reply->element[0]) || reply->element[1]->type != REDIS_REPLY_ARRAY ||
        reply->element[2]->type != REDIS_REPLY_INTEGER)
        return -1;
    if (parse_id(reply->element[0]->str, reply->element[0]->len, &ms, last) != 0 || ms != 0)
        return -1;
    return 0;
}

static void on_cursor(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    rroom_t *room = priv;
    redisReply *reply = r;
    uint64_t last;

    rconn_answered(c);
    room->inflight--;
    if (!room->linked || rb->stopped || room->state != RR_FETCHING) {
        room_maybe_free(room);
        return;
    }
    room->state = RR_FETCH; /* until it has its cursor */
    if (reply == NULL)
        return; /* read again once the connection is back */
    if (reply->type == REDIS_REPLY_ERROR || history_reply(reply, &last) != 0) {
        rb_error(rb);
        rb_log_failure(rb, "reading the last id of %s: %s", room->key,
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return; /* no live messages for it until it is watched again */
    }
    room->cur_ms = 0;
    room->cur_seq = last;
    room->state = RR_LIVE;
    rb->nlive++;
    rb->xread_dirty = 1;
    rb_xread_kick(rb);
}

static void rb_fetch(rb_t *rb, rroom_t *r)
{
    if (r->state != RR_FETCH || rb->cmd.state != RC_UP)
        return;
    if (rb_eval_history(rb, r->key, r->klen, "now", on_cursor, r) != 0)
        return; /* read once the connection is back */
    r->inflight++;
    r->state = RR_FETCHING;
}

static void rb_fetch_all(rb_t *rb)
{
    for (size_t b = 0; b < rb->tab_cap; b++)
        for (rroom_t *r = rb->tab[b]; r != NULL; r = r->next)
            rb_fetch(rb, r);
}

static void rb_apply_watch(rb_t *rb, rwatch_t *w)
{
    if (rb_make_key(rb, w->name, w->len) != 0) {
        rb_error(rb);
        return;
    }
    rroom_t *r = room_find(rb, rb->key.base, rb->key.len);
    if (w->on) {
        if (r == NULL && (r = room_add(rb, rb->key.base, rb->key.len)) == NULL) {
            rb_error(rb);
            sq_log(SQ_LOG_ERROR, "hub: redis: out of memory watching room %.*s", (int)w->len,
                   w->name);
            return;
        }
        r->refs++;
        rb_fetch(rb, r);
    } else if (r != NULL && --r->refs == 0) {
        room_unlink(rb, r);
        room_maybe_free(r);
    }
}

/* ---- publish and history ---- */

static void rb_complete(rb_t *rb, sq__hub_op_t *op, int status)
{
    if (status < 0)
        op->id = 0;
    op->status = status;
    if (rb->stopped)
        sq__hub_op_free(op); /* the loops are gone */
    else
        sq__hub_complete(op);
}

static void on_published(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    sq__hub_op_t *op = priv;
    redisReply *reply = r;
    uint64_t ms, seq;

    rconn_answered(c);
    if (reply == NULL) {
        rb_error(rb);
        rb_complete(rb, op, c->fail);
        return;
    }
    if (reply_is_str(reply) && parse_id(reply->str, reply->len, &ms, &seq) == 0 && ms == 0) {
        atomic_fetch_add(&rb->hub->published, 1);
        op->id = seq;
        rb_complete(rb, op, 0);
        return;
    }
    rb_error(rb);
    rb_log_failure(rb, "XADD %s: %s", op->room,
                   reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    rb_complete(rb, op, UV_EIO);
}

static void rb_publish_start(rb_t *rb, sq__hub_op_t *op)
{
    int rc = rb_make_key(rb, op->room, op->room_len);
    if (rc == 0) {
        const char *argv[] = {"XADD", rb->key.base, "MAXLEN", rb->count_str, "0-*", "text",
                              op->text != NULL ? op->text : ""};
        size_t lens[] = {4, rb->key.len, 6, strlen(rb->count_str), 3, 4, op->text_len};
        rc = rconn_send(&rb->cmd, 0, on_published, op, 7, argv, lens);
    }
    if (rc != 0)
        rb_complete(rb, op, rc);
}

/* Fills a history op from the script's answer. Returns 0 or a negative status. */
static int history_fill(rb_t *rb, sq__hub_op_t *op, const redisReply *reply)
{
    uint64_t last;
    if (history_reply(reply, &last) != 0)
        return UV_EIO;
    const redisReply *entries = reply->element[1];
    op->reset = reply->element[2]->integer != 0;
    op->last_id = last;
    op->n = 0;
    op->missed = 0;
    if (entries->elements > 0) {
        op->msgs = malloc(entries->elements * sizeof(*op->msgs));
        if (op->msgs == NULL)
            return UV_ENOMEM;
    }
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i], *fields, *text = NULL;
        uint64_t ms, seq;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !reply_is_str(e->element[0]) ||
            parse_id(e->element[0]->str, e->element[0]->len, &ms, &seq) != 0 || ms != 0) {
            rb_error(rb);
            rb_log_failure(rb, "history of %s: an entry of an unexpected shape", op->room);
            continue;
        }
        fields = e->element[1];
        if (fields->type == REDIS_REPLY_ARRAY)
            for (size_t f = 0; f + 1 < fields->elements; f += 2)
                if (reply_is_str(fields->element[f]) && fields->element[f]->len == 4 &&
                    memcmp(fields->element[f]->str, "text", 4) == 0 &&
                    reply_is_str(fields->element[f + 1]))
                    text = fields->element[f + 1];
        int err = 0;
        sq_hub_msg_t *m = text == NULL ? NULL
                                       : sq__hub_msg_new(op->room, op->room_len, seq, text->str,
                                                         text->len, &err);
        if (m == NULL) {
            if (err == UV_ENOMEM)
                return UV_ENOMEM;
            rb_error(rb);
            rb_log_failure(rb, "history of %s: entry %llu is not a message", op->room,
                           (unsigned long long)seq);
            continue;
        }
        if (op->n > 0 && seq <= op->msgs[op->n - 1]->id) {
            sq__hub_msg_unref(m);
            continue;
        }
        op->msgs[op->n++] = m;
    }
    /* Messages above since that the stream no longer keeps (trimmed by MAXLEN). */
    uint64_t since = op->since;
    if (!op->reset && since != 0 && since != SQ_HUB_SINCE_NOW) {
        uint64_t first = op->n > 0 ? op->msgs[0]->id : last + 1;
        if (first > since + 1)
            op->missed = first - since - 1;
    }
    return 0;
}

static void on_history(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = conn_of(ac);
    rb_t *rb = c->rb;
    sq__hub_op_t *op = priv;
    redisReply *reply = r;
    int rc;

    rconn_answered(c);
    if (reply == NULL) {
        rb_error(rb);
        rb_complete(rb, op, c->fail);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        rb_error(rb);
        rb_log_failure(rb, "history of %s: %s", op->room, reply->str);
        rb_complete(rb, op, UV_EIO);
        return;
    }
    rc = history_fill(rb, op, reply);
    if (rc != 0) {
        rb_error(rb);
        if (rc == UV_EIO)
            rb_log_failure(rb, "history of %s: unexpected reply", op->room);
        for (size_t i = 0; i < op->n; i++)
            sq__hub_msg_unref(op->msgs[i]);
        free(op->msgs);
        op->msgs = NULL;
        op->n = 0;
    }
    rb_complete(rb, op, rc);
}

static void rb_history_start(rb_t *rb, sq__hub_op_t *op)
{
    char since[24];
    int rc = rb_make_key(rb, op->room, op->room_len);
    if (op->since == SQ_HUB_SINCE_NOW)
        snprintf(since, sizeof(since), "now");
    else
        snprintf(since, sizeof(since), "%llu", (unsigned long long)op->since);
    if (rc == 0)
        rc = rb_eval_history(rb, rb->key.base, rb->key.len, since, on_history, op);
    if (rc != 0)
        rb_complete(rb, op, rc);
}

/* ---- the backend thread ---- */

static void free_watches(rwatch_t *w)
{
    while (w != NULL) {
        rwatch_t *next = w->next;
        free(w);
        w = next;
    }
}

static void free_ops(sq__hub_op_t *op)
{
    while (op != NULL) {
        sq__hub_op_t *next = op->next;
        op->next = NULL;
        sq__hub_op_free(op);
        op = next;
    }
}

static void rb_shutdown(rb_t *rb)
{
    rb->stopped = 1;
    atomic_store(&rb->hub->redis_connected, 0);
    if (rb->cmd.ac != NULL)
        rconn_drop(&rb->cmd, SQ_ECLOSED, "the hub is going away");
    if (rb->blk.ac != NULL)
        rconn_drop(&rb->blk, SQ_ECLOSED, "the hub is going away");
    for (size_t b = 0; b < rb->tab_cap; b++) {
        rroom_t *r = rb->tab[b], *next;
        for (; r != NULL; r = next) {
            next = r->next;
            free(r); /* no read holds it any more: the contexts are freed */
        }
    }
    free(rb->tab);
    rb->tab = NULL;
    rb->tab_cap = rb->nrooms = rb->nlive = 0;
    uv_close((uv_handle_t *)&rb->wake, NULL);
    uv_close((uv_handle_t *)&rb->timer, NULL);
    uv_close((uv_handle_t *)&rb->check, NULL);
}

static void on_wake(uv_async_t *h)
{
    rb_t *rb = h->data;
    sq__hub_op_t *ops;
    rwatch_t *watches;
    int stopping;

    if (rb->stopped)
        return;
    uv_mutex_lock(&rb->mu);
    ops = rb->ops;
    watches = rb->watches;
    rb->ops = NULL;
    rb->ops_tail = &rb->ops;
    rb->watches = NULL;
    rb->watches_tail = &rb->watches;
    stopping = rb->stopping;
    uv_mutex_unlock(&rb->mu);

    if (stopping) {
        free_watches(watches);
        free_ops(ops);
        rb_shutdown(rb);
        return;
    }
    /* Watches first: a subscriber's watch was queued before its history request. */
    for (rwatch_t *w = watches, *next; w != NULL; w = next) {
        next = w->next;
        rb_apply_watch(rb, w);
        free(w);
    }
    for (sq__hub_op_t *op = ops, *next; op != NULL; op = next) {
        next = op->next;
        op->next = NULL;
        if (op->kind == SQ__HOP_PUBLISH)
            rb_publish_start(rb, op);
        else if (op->kind == SQ__HOP_HISTORY)
            rb_history_start(rb, op);
        else
            rb_complete(rb, op, UV_EINVAL);
    }
    rb_xread_kick(rb);
}

static void rb_thread(void *arg)
{
    rb_t *rb = arg;
    rconn_connect(rb, &rb->cmd);
    rconn_connect(rb, &rb->blk);
    rb_arm(rb);
    uv_run(&rb->loop, UV_RUN_DEFAULT);
}

/* ---- the backend table ---- */

static void rb_free(rb_t *rb)
{
    free(rb->host);
    sq__buf_free(&rb->key);
    free(rb);
}

static int rb_start(sq_hub_t *hub)
{
    rb_t *rb = calloc(1, sizeof(*rb));
    int rc;

    if (rb == NULL)
        return UV_ENOMEM;
    rb->hub = hub;
    rc = sq__hub_redis_parse(hub->redis_url, &rb->host, &rb->port);
    if (rc != 0)
        goto err_free;
    rb->prefix = hub->redis_prefix != NULL ? hub->redis_prefix : "";
    rb->prefix_len = strlen(rb->prefix);
    rb->timeout_ms = hub->opts.redis_timeout_ms > 0 ? hub->opts.redis_timeout_ms : 1;
    rb->reconnect_ms = hub->opts.redis_reconnect_ms > 0 ? hub->opts.redis_reconnect_ms : 1;
    rb->history_count = hub->opts.history_count;
    snprintf(rb->count_str, sizeof(rb->count_str), "%zu", rb->history_count);
    rb->ops_tail = &rb->ops;
    rb->watches_tail = &rb->watches;
    rb->cmd.rb = rb->blk.rb = rb;
    rb->cmd.what = "command";
    rb->blk.what = "blocking";

    rc = uv_mutex_init(&rb->mu);
    if (rc != 0)
        goto err_free;
    rc = uv_loop_init(&rb->loop);
    if (rc != 0)
        goto err_mutex;
    rc = uv_async_init(&rb->loop, &rb->wake, on_wake);
    if (rc != 0)
        goto err_loop;
    rb->wake.data = rb;
    uv_timer_init(&rb->loop, &rb->timer);
    rb->timer.data = rb;
    uv_check_init(&rb->loop, &rb->check);
    rb->check.data = rb;
    uv_check_start(&rb->check, on_check);
    uv_unref((uv_handle_t *)&rb->check);

    hub->be_state = rb;
    rc = uv_thread_create(&rb->thread, rb_thread, rb);
    if (rc != 0)
        goto err_handles;
    return 0;

err_handles:
    hub->be_state = NULL;
    uv_close((uv_handle_t *)&rb->wake, NULL);
    uv_close((uv_handle_t *)&rb->timer, NULL);
    uv_close((uv_handle_t *)&rb->check, NULL);
    uv_run(&rb->loop, UV_RUN_DEFAULT);
err_loop:
    uv_loop_close(&rb->loop);
err_mutex:
    uv_mutex_destroy(&rb->mu);
err_free:
    rb_free(rb);
    return rc;
}

static void rb_stop(sq_hub_t *hub)
{
    rb_t *rb = hub->be_state;
    if (rb == NULL)
        return;
    uv_mutex_lock(&rb->mu);
    rb->stopping = 1;
    uv_mutex_unlock(&rb->mu);
    uv_async_send(&rb->wake);
    uv_thread_join(&rb->thread);
    hub->be_state = NULL;
    /* What was queued after the thread's last look. */
    free_ops(rb->ops);
    free_watches(rb->watches);
    if (uv_loop_close(&rb->loop) != 0)
        sq_log(SQ_LOG_ERROR, "hub: redis: the backend loop still had handles at stop");
    uv_mutex_destroy(&rb->mu);
    rb_free(rb);
}

static void rb_queue_history(sq_hub_t *hub, sq__hub_op_t *op)
{
    rb_t *rb = hub->be_state;
    op->next = NULL;
    uv_mutex_lock(&rb->mu);
    *rb->ops_tail = op;
    rb->ops_tail = &op->next;
    uv_mutex_unlock(&rb->mu);
    uv_async_send(&rb->wake);
}

static int rb_queue_publish(sq_hub_t *hub, sq__hub_op_t *op)
{
    rb_queue_history(hub, op);
    return 0;
}

static void rb_queue_watch(rb_t *rb, rwatch_t *w)
{
    w->next = NULL;
    uv_mutex_lock(&rb->mu);
    *rb->watches_tail = w;
    rb->watches_tail = &w->next;
    uv_mutex_unlock(&rb->mu);
    uv_async_send(&rb->wake);
}

static rwatch_t *watch_new(const sq__hub_room_t *room, int on)
{
    rwatch_t *w = malloc(sizeof(*w) + room->name_len + 1);
    if (w == NULL)
        return NULL;
    w->next = NULL;
    w->on = on;
    w->len = room->name_len;
    memcpy(w->name, room->name, room->name_len);
    w->name[room->name_len] = '\0';
    return w;
}

/* hub->mu held: queue only. The unwatch is made with the watch and kept in room->backend,
 * so a room that was watched is always unwatched (by watch off, or by room_free). */
static void rb_watch(sq_hub_t *hub, sq__hub_room_t *room, int on)
{
    rb_t *rb = hub->be_state;
    if (rb == NULL)
        return;
    if (on) {
        if (room->backend != NULL)
            return; /* already watched */
        rwatch_t *won = watch_new(room, 1), *woff = watch_new(room, 0);
        if (won == NULL || woff == NULL) {
            free(won);
            free(woff);
            atomic_fetch_add(&hub->redis_errors, 1);
            sq_log(SQ_LOG_ERROR, "hub: redis: out of memory watching room %s", room->name);
            return;
        }
        room->backend = woff;
        rb_queue_watch(rb, won);
    } else if (room->backend != NULL) {
        rwatch_t *woff = room->backend;
        room->backend = NULL;
        rb_queue_watch(rb, woff);
    }
}

static void rb_room_free(sq_hub_t *hub, sq__hub_room_t *room)
{
    rb_t *rb = hub->be_state;
    rwatch_t *woff = room->backend;
    if (woff == NULL)
        return;
    room->backend = NULL;
    if (rb != NULL)
        rb_queue_watch(rb, woff);
    else
        free(woff);
}

const sq__hub_backend_t sq__hub_redis_backend = {
    .start = rb_start,
    .publish = rb_queue_publish,
    .history = rb_queue_history,
    .watch = rb_watch,
    .room_free = rb_room_free,
    .stop = rb_stop,
};
