/* The hub on Redis: its two connections (hiredis' libuv adapter on the backend's loop).
 *
 * Each is tried again every redis_reconnect_ms while Redis is away; connecting (and, for
 * the blocking one, asking its CLIENT ID) and each command are bounded by
 * redis_timeout_ms — "no reply for that long while something is pending", so a long
 * pipeline that keeps answering is not cut — and the blocking XREAD by its block time
 * plus that. A connection dropped for it fails its pending replies with UV_ETIMEDOUT;
 * one Redis closes or resets, with UV_ECONNRESET. One timer serves every deadline: it is
 * armed for the earliest after each turn of the loop (a check handle).
 *
 * hiredis 0.14's libuv adapter ignores a poll error (a refused connect, a reset): libuv
 * stops the poll and hiredis is never told, so the connection would hang. The same check
 * handle sees a poll that stopped while hiredis still wants events and lets hiredis read
 * or write, which finds the socket's error and drops the connection as it should.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/adapters/libuv.h>

#include "hub/hub_redis.h"

/* ---- the URL (sq_hub_create checks it; the backend connects to it) ---- */

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

    /* the scheme's case does not matter (RFC 3986 §3.1) */
    if (url == NULL || strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
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

/* ---- a connection's life ---- */

static void rconn_connect(sq__redis_t *rb, sq__redis_conn_t *c);

static void rb_update_connected(sq__redis_t *rb)
{
    int up = rb->cmd.state == SQ__RC_UP && rb->blk.state == SQ__RC_UP;
    atomic_store(&rb->hub->redis_connected, (uint_fast64_t)up);
}

/* The connection is gone (or never came): try again after redis_reconnect_ms. */
static void rconn_down(sq__redis_conn_t *c, const char *why)
{
    sq__redis_t *rb = c->rb;
    if (c->state == SQ__RC_DOWN)
        return;
    if (rb->stopped) {
        c->state = SQ__RC_DOWN;
        c->ac = NULL;
        return;
    }
    if (!c->logged_down) {
        sq_log(SQ_LOG_WARN, "hub: redis %s:%d: %s connection %s (%s); trying again every %llu ms",
               rb->host, rb->port, c->what, c->state == SQ__RC_CONNECTING ? "failed" : "lost",
               why != NULL ? why : "closed", (unsigned long long)rb->reconnect_ms);
        c->logged_down = 1;
    }
    sq__redis_error(rb);
    c->state = SQ__RC_DOWN;
    c->ac = NULL;
    c->pending = 0;
    c->extra_ms = 0;
    c->retry_at = sq__redis_now(rb) + rb->reconnect_ms;
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
static void rconn_drop(sq__redis_conn_t *c, int status, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    c->fail = status;
    rconn_down(c, why); /* first: the callbacks run by the free see it down */
    redisAsyncFree(ac);
}

static void rconn_up(sq__redis_conn_t *c)
{
    sq__redis_t *rb = c->rb;
    c->state = SQ__RC_UP;
    c->fail = UV_ECONNRESET;
    if (c->logged_down) {
        sq_log(SQ_LOG_WARN, "hub: redis %s:%d: %s connection up", rb->host, rb->port, c->what);
        c->logged_down = 0;
    }
    rb_update_connected(rb);
}

int sq__redis_send(sq__redis_conn_t *c, int hello, redisCallbackFn *fn, void *priv, int argc,
                   const char **argv, const size_t *lens)
{
    if (c->ac == NULL || (c->state != SQ__RC_UP && !(hello && c->state == SQ__RC_HELLO)))
        return UV_ECONNREFUSED;
    if (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))
        return UV_ECONNRESET;
    if (redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) != REDIS_OK)
        return UV_ENOMEM;
    if (c->pending++ == 0)
        c->since = sq__redis_now(c->rb);
    return 0;
}

/* A reply (or its NULL on a drop) came: progress. */
void sq__redis_answered(sq__redis_conn_t *c)
{
    if (c->pending > 0)
        c->pending--;
    c->since = sq__redis_now(c->rb);
}

static void on_client_id(redisAsyncContext *ac, void *r, void *priv)
{
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    redisReply *reply = r;

    sq__redis_answered(c);
    if (reply == NULL || rb->stopped)
        return;
    if (reply->type != REDIS_REPLY_INTEGER) {
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "CLIENT ID: unexpected reply (%s)",
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        return; /* still saying hello at its deadline: dropped, then tried again */
    }
    rb->blk_id = reply->integer;
    rconn_up(c);
    sq__redis_xread_kick(rb);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    sq__redis_conn_t *c = sq__redis_conn_of(cac);
    sq__redis_t *rb = c->rb;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        rconn_down(c, cac->errstr);
        return;
    }
    if (c == &rb->cmd) {
        rconn_up(c);
        sq__redis_fetch_all(rb);
        sq__redis_check_all(rb);  /* Redis may have come back without its data */
        sq__redis_xread_kick(rb); /* a CLIENT UNBLOCK the set changes may need */
        return;
    }
    /* The blocking connection learns its id first: CLIENT UNBLOCK names it. Not
     * disconnected from here on a failure (hiredis still uses the context after this
     * returns): the hello's deadline drops it. */
    static const char *argv[] = {"CLIENT", "ID"};
    static const size_t lens[] = {6, 2};
    c->state = SQ__RC_HELLO;
    c->since = sq__redis_now(rb);
    sq__redis_send(c, 1, on_client_id, NULL, 2, argv, lens);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    sq__redis_conn_t *c = sq__redis_conn_of(cac);
    rconn_down(c, status == REDIS_OK ? NULL : cac->errstr);
}

static void rconn_connect(sq__redis_t *rb, sq__redis_conn_t *c)
{
    redisAsyncContext *ac = redisAsyncConnect(rb->host, rb->port);

    c->state = SQ__RC_CONNECTING;
    c->since = sq__redis_now(rb);
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

/* ---- the adapter's stopped polls ---- */

/* A poll the adapter stopped on an error hiredis was not told of: let hiredis find it. */
static void rconn_check_poll(sq__redis_conn_t *c)
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

/* ---- deadlines ---- */

/* When a connection is tried again (down), or dropped for taking too long: connecting,
 * saying hello, or with something pending and no reply. redis_timeout_ms 0: never. */
static uint64_t rconn_deadline(sq__redis_t *rb, const sq__redis_conn_t *c)
{
    if (c->state == SQ__RC_DOWN)
        return c->retry_at;
    if (rb->timeout_ms == 0)
        return UINT64_MAX;
    if (c->state != SQ__RC_UP)
        return c->since + rb->timeout_ms;
    return c->pending > 0 ? c->since + rb->timeout_ms + c->extra_ms : UINT64_MAX;
}

static void rconn_tick(sq__redis_t *rb, sq__redis_conn_t *c, uint64_t now)
{
    if (now < rconn_deadline(rb, c))
        return;
    if (c->state == SQ__RC_DOWN)
        rconn_connect(rb, c);
    else
        rconn_drop(c, UV_ETIMEDOUT,
                   c->state == SQ__RC_UP ? "no reply in time" : "connect timed out");
}

static void rb_arm(sq__redis_t *rb);

static void on_timer(uv_timer_t *t)
{
    sq__redis_t *rb = t->data;
    uint64_t now = sq__redis_now(rb);
    if (rb->stopped)
        return;
    rconn_tick(rb, &rb->cmd, now);
    rconn_tick(rb, &rb->blk, now);
    if (rb->unblock_at != 0 && now >= rb->unblock_at) {
        rb->unblock_at = 0;
        sq__redis_xread_kick(rb);
    }
    if (rb->fetch_at != 0 && now >= rb->fetch_at) {
        rb->fetch_at = 0;
        sq__redis_fetch_all(rb);
    }
    if (rb->xread_at != 0 && now >= rb->xread_at) {
        rb->xread_at = 0;
        sq__redis_xread_kick(rb);
    }
    rb_arm(rb); /* timers run before the poll: the check handle comes only after it */
}

/* Arms the timer for the earliest deadline: after each turn's I/O (the check handle)
 * and after the timer's own work. */
static void rb_arm(sq__redis_t *rb)
{
    uint64_t at = rconn_deadline(rb, &rb->cmd), now = sq__redis_now(rb);
    uint64_t b = rconn_deadline(rb, &rb->blk);
    if (b < at)
        at = b;
    if (rb->unblock_at != 0 && rb->unblock_at < at)
        at = rb->unblock_at;
    if (rb->xread_at != 0 && rb->xread_at < at)
        at = rb->xread_at;
    if (rb->fetch_at != 0 && rb->fetch_at < at)
        at = rb->fetch_at;
    if (at == UINT64_MAX) {
        uv_timer_stop(&rb->timer);
        return;
    }
    uv_timer_start(&rb->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_check(uv_check_t *h)
{
    sq__redis_t *rb = h->data;
    if (rb->stopped)
        return;
    rconn_check_poll(&rb->cmd);
    rconn_check_poll(&rb->blk);
    rb_arm(rb);
}

/* ---- the two connections ---- */

void sq__redis_conns_init(sq__redis_t *rb)
{
    rb->cmd.rb = rb->blk.rb = rb;
    rb->cmd.what = "command";
    rb->blk.what = "blocking";
    uv_timer_init(&rb->loop, &rb->timer);
    rb->timer.data = rb;
    uv_check_init(&rb->loop, &rb->check);
    rb->check.data = rb;
    uv_check_start(&rb->check, on_check);
    uv_unref((uv_handle_t *)&rb->check); /* runs while the loop does; keeps nothing alive */
}

void sq__redis_conns_start(sq__redis_t *rb)
{
    rconn_connect(rb, &rb->cmd);
    rconn_connect(rb, &rb->blk);
    rb_arm(rb);
}

void sq__redis_conns_close(sq__redis_t *rb)
{
    rconn_drop(&rb->cmd, SQ_ECLOSED, "the hub is going away");
    rconn_drop(&rb->blk, SQ_ECLOSED, "the hub is going away");
    uv_close((uv_handle_t *)&rb->timer, NULL);
    uv_close((uv_handle_t *)&rb->check, NULL);
}
