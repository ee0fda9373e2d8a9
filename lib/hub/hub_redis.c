/* The hub on Redis: one stream per room (key: redis_prefix + the room's name), so that
 * servers on several machines share rooms, ids and history (docs/hub.md, "On Redis").
 *
 * Numbering. A message is `XADD key MAXLEN <kept> 0-* text <text>`: the milliseconds
 * part is always 0 and Redis gives the sequence part, one above the stream's last (0-1,
 * 0-2, ...), atomically whoever publishes. The message's id is that sequence number. (An
 * explicit milliseconds part with an automatic sequence needs Redis 7.0.)
 *
 * Kept: history_count, but no fewer than RB_MIN_KEPT. The live read (hub_redis_live.c)
 * reads the stream itself, so an entry trimmed before it was read would never reach this
 * process's subscribers: with history_count 0 none would. The floor lets the read lag a
 * burst of that many messages behind; the history handed out is still history_count.
 *
 * History. One script (EVAL) reads, atomically, the stream's last generated id (which a
 * trimmed, empty stream still has), whether `since` is above it (the room started again:
 * read from the start) and the newest history_count entries above since.
 *
 * Threads. Everything that talks to Redis runs on one thread of the backend's own, with
 * its own loop and hiredis' libuv adapter. The hub's calls (publish, history, watch,
 * room_free) only queue under rb->mu and wake that thread (uv_async_t); answers go back
 * with sq__hub_complete, live messages with sq__hub_fanout (which takes hub->mu: this
 * thread never holds rb->mu then, and watch() — called with hub->mu held — takes rb->mu
 * only to queue, so the two locks are always taken in the order hub->mu, rb->mu).
 *
 * This file: the thread, the queue, publish and history. hub_redis_live.c: the watched
 * rooms and the live read. hub_redis_conn.c: the two connections and their deadlines.
 * While the command connection is down, publish and history fail at once
 * (UV_ECONNREFUSED); in flight when it goes, with UV_ECONNRESET or UV_ETIMEDOUT; a Redis
 * error reply, or a reply of a shape the hub did not write, is UV_EIO. Each is counted
 * (hub->redis_errors) and never taken further.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_redis.h"

/* Failures logged at most this often (every one is counted). */
#define RB_LOG_EVERY_MS 1000
/* Entries a stream keeps at least, whatever history_count (see above). */
#define RB_MIN_KEPT 100

/* The history read, atomic on the server: the stream's last generated id (which an empty
 * stream still has), whether `since` is above it (the room started again: read from the
 * start), and the newest `count` entries above since, oldest first, cut to the newest
 * whose texts fit in `bytes` (the newest is given whatever its size; 0: no cut) so a
 * reply is bounded as the in-memory history is. ARGV: since (decimal, or "now" for
 * none), count, bytes. Returns {last id, entries, reset}. Ids are compared as
 * canonical decimal strings, which is exact where Lua's numbers are not. */
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
    "local newest = redis.call('XREVRANGE', key, '+', from, 'COUNT', count)\n"
    "local n, bytes, sum = #newest, tonumber(ARGV[3]), 0\n"
    "if bytes > 0 then\n"
    "  for i = 1, #newest do\n"
    "    local f = newest[i][2]\n"
    "    for j = 2, #f, 2 do sum = sum + #f[j] end\n"
    "    if sum > bytes and i > 1 then n = i - 1 break end\n"
    "  end\n"
    "end\n"
    "local entries = {}\n"
    "for i = n, 1, -1 do entries[#entries + 1] = newest[i] end\n"
    "return {last, entries, reset}\n";

/* ---- helpers of the three files ---- */

void sq__redis_error(sq__redis_t *rb)
{
    atomic_fetch_add(&rb->hub->redis_errors, 1);
}

void sq__redis_log_failure(sq__redis_t *rb, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    uint64_t now = sq__redis_now(rb);

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

int sq__redis_parse_id(const char *s, size_t n, uint64_t *ms, uint64_t *seq)
{
    const char *dash = memchr(s, '-', n);
    if (dash == NULL)
        return -1;
    if (parse_u64(s, (size_t)(dash - s), ms) != 0 ||
        parse_u64(dash + 1, n - (size_t)(dash - s) - 1, seq) != 0)
        return -1;
    return 0;
}

int sq__redis_make_key(sq__redis_t *rb, const char *name, size_t len)
{
    rb->key.len = 0;
    if (sq__buf_append(&rb->key, rb->prefix, rb->prefix_len) != 0 ||
        sq__buf_append(&rb->key, name, len) != 0 || sq__buf_append(&rb->key, "", 1) != 0)
        return UV_ENOMEM;
    rb->key.len--;
    return 0;
}

int sq__redis_entry(const redisReply *e, uint64_t *ms, uint64_t *seq, const redisReply **text)
{
    const redisReply *fields;
    *text = NULL;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !sq__redis_is_str(e->element[0]) ||
        sq__redis_parse_id(e->element[0]->str, e->element[0]->len, ms, seq) != 0)
        return -1;
    fields = e->element[1];
    if (*ms != 0 || fields->type != REDIS_REPLY_ARRAY)
        return 1;
    for (size_t f = 0; f + 1 < fields->elements; f += 2)
        if (sq__redis_is_str(fields->element[f]) && fields->element[f]->len == 4 &&
            memcmp(fields->element[f]->str, "text", 4) == 0 &&
            sq__redis_is_str(fields->element[f + 1]))
            *text = fields->element[f + 1];
    return *text != NULL ? 0 : 1;
}

/* ---- the history script ---- */

int sq__redis_eval_history(sq__redis_t *rb, const char *key, size_t klen, const char *since,
                           redisCallbackFn *fn, void *priv)
{
    const char *argv[] = {"EVAL", rb_history_lua, "1", key, since, rb->count_str, rb->bytes_str};
    size_t lens[] = {4,
                     sizeof(rb_history_lua) - 1,
                     1,
                     klen,
                     strlen(since),
                     strlen(rb->count_str),
                     strlen(rb->bytes_str)};
    return sq__redis_send(&rb->cmd, 0, fn, priv, 7, argv, lens);
}

int sq__redis_history_reply(const redisReply *reply, uint64_t *last)
{
    uint64_t ms;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        !sq__redis_is_str(reply->element[0]) || reply->element[1]->type != REDIS_REPLY_ARRAY ||
        reply->element[2]->type != REDIS_REPLY_INTEGER)
        return -1;
    if (sq__redis_parse_id(reply->element[0]->str, reply->element[0]->len, &ms, last) != 0 ||
        ms != 0)
        return -1;
    return 0;
}

/* ---- publish and history ---- */

static void rb_complete(sq__redis_t *rb, sq__hub_op_t *op, int status)
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
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    sq__hub_op_t *op = priv;
    redisReply *reply = r;
    uint64_t ms, seq;

    sq__redis_answered(c);
    if (reply == NULL) {
        sq__redis_error(rb);
        rb_complete(rb, op, c->fail);
        return;
    }
    if (sq__redis_is_str(reply) && sq__redis_parse_id(reply->str, reply->len, &ms, &seq) == 0 &&
        ms == 0) {
        atomic_fetch_add(&rb->hub->published, 1);
        op->id = seq;
        sq__redis_seen(rb, op, seq - 1, NULL); /* the stream's last before this one */
        rb_complete(rb, op, 0);
        return;
    }
    sq__redis_error(rb);
    sq__redis_log_failure(rb, "XADD %s: %s", op->room,
                          reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    rb_complete(rb, op, UV_EIO);
}

static void rb_publish_start(sq__redis_t *rb, sq__hub_op_t *op)
{
    int rc = sq__redis_make_key(rb, op->room, op->room_len);
    if (rc == 0) {
        const char *text = op->text != NULL ? op->text : "";
        const char *argv[] = {"XADD", rb->key.base, "MAXLEN", rb->kept_str, "0-*", "text", text};
        size_t lens[] = {4, rb->key.len, 6, strlen(rb->kept_str), 3, 4, op->text_len};
        sq__redis_mark(rb, op);
        rc = sq__redis_send(&rb->cmd, 0, on_published, op, 7, argv, lens);
    }
    if (rc != 0)
        rb_complete(rb, op, rc);
}

/* Fills a history op from the script's answer. Returns 0 or a negative status. */
static int history_fill(sq__redis_t *rb, sq__hub_op_t *op, const redisReply *reply)
{
    uint64_t last;
    if (sq__redis_history_reply(reply, &last) != 0)
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
        const redisReply *text;
        uint64_t ms, seq;
        int rc = sq__redis_entry(entries->element[i], &ms, &seq, &text);
        if (rc < 0) {
            sq__redis_error(rb);
            sq__redis_log_failure(rb, "history of %s: an entry of an unexpected shape", op->room);
            continue;
        }
        int err = 0;
        sq_hub_msg_t *m =
            text == NULL ? NULL
                         : sq__hub_msg_new(op->room, op->room_len, seq, text->str, text->len, &err);
        if (m == NULL) {
            if (err == UV_ENOMEM)
                return UV_ENOMEM;
            sq__redis_error(rb);
            sq__redis_log_failure(rb, "history of %s: entry %llu is not a message", op->room,
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
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    sq__hub_op_t *op = priv;
    redisReply *reply = r;
    int rc;

    sq__redis_answered(c);
    if (reply == NULL) {
        sq__redis_error(rb);
        rb_complete(rb, op, c->fail);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "history of %s: %s", op->room, reply->str);
        rb_complete(rb, op, UV_EIO);
        return;
    }
    rc = history_fill(rb, op, reply);
    if (rc == 0) /* the subscriber reading it is spared: its history is the new start's */
        sq__redis_seen(rb, op, op->last_id, op->sub);
    if (rc != 0) {
        sq__redis_error(rb);
        if (rc == UV_EIO)
            sq__redis_log_failure(rb, "history of %s: unexpected reply", op->room);
        for (size_t i = 0; i < op->n; i++)
            sq__hub_msg_unref(op->msgs[i]);
        free(op->msgs);
        op->msgs = NULL;
        op->n = 0;
    }
    rb_complete(rb, op, rc);
}

static void rb_history_start(sq__redis_t *rb, sq__hub_op_t *op)
{
    char since[24];
    if (atomic_load_explicit(&op->cancelled, memory_order_relaxed)) {
        rb_complete(rb, op, SQ_ECLOSED); /* its subscriber has gone: no read for nobody */
        return;
    }
    int rc = sq__redis_make_key(rb, op->room, op->room_len);
    if (op->since == SQ_HUB_SINCE_NOW)
        snprintf(since, sizeof(since), "now");
    else
        snprintf(since, sizeof(since), "%llu", (unsigned long long)op->since);
    if (rc == 0) {
        sq__redis_mark(rb, op);
        rc = sq__redis_eval_history(rb, rb->key.base, rb->key.len, since, on_history, op);
    }
    if (rc != 0)
        rb_complete(rb, op, rc);
}

/* ---- the backend thread ---- */

static void free_watches(sq__redis_watch_t *w)
{
    while (w != NULL) {
        sq__redis_watch_t *next = w->next;
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

static void rb_shutdown(sq__redis_t *rb)
{
    rb->stopped = 1;
    atomic_store(&rb->hub->redis_connected, 0);
    sq__redis_conns_close(rb); /* the replies still out run now, with SQ_ECLOSED */
    sq__redis_rooms_free(rb);  /* so no read of a cursor holds a room any more */
    uv_close((uv_handle_t *)&rb->wake, NULL);
}

static void on_wake(uv_async_t *h)
{
    sq__redis_t *rb = h->data;
    sq__hub_op_t *ops;
    sq__redis_watch_t *watches;
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
    for (sq__redis_watch_t *w = watches, *next; w != NULL; w = next) {
        next = w->next;
        sq__redis_watch_apply(rb, w);
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
    sq__redis_xread_kick(rb);
}

static void rb_thread(void *arg)
{
    sq__redis_t *rb = arg;
    sq__redis_conns_start(rb);
    uv_run(&rb->loop, UV_RUN_DEFAULT);
}

/* ---- the backend table ---- */

static void rb_free(sq__redis_t *rb)
{
    free(rb->host);
    sq__buf_free(&rb->key);
    free(rb);
}

static int rb_start(sq_hub_t *hub)
{
    sq__redis_t *rb = calloc(1, sizeof(*rb));
    int rc;

    if (rb == NULL)
        return UV_ENOMEM;
    rb->hub = hub;
    rc = sq__hub_redis_parse(hub->redis_url, &rb->host, &rb->port);
    if (rc != 0)
        goto err_free;
    rb->prefix = hub->redis_prefix != NULL ? hub->redis_prefix : "";
    rb->prefix_len = strlen(rb->prefix);
    rb->timeout_ms = hub->opts.redis_timeout_ms; /* 0: none */
    /* 0: again at once, which is the next millisecond (not a loop that never waits) */
    rb->reconnect_ms = hub->opts.redis_reconnect_ms > 0 ? hub->opts.redis_reconnect_ms : 1;
    size_t count = hub->opts.history_count, kept = count > RB_MIN_KEPT ? count : RB_MIN_KEPT;
    snprintf(rb->count_str, sizeof(rb->count_str), "%zu", count);
    snprintf(rb->bytes_str, sizeof(rb->bytes_str), "%zu", hub->opts.history_bytes);
    snprintf(rb->kept_str, sizeof(rb->kept_str), "%zu", kept);
    rb->ops_tail = &rb->ops;
    rb->watches_tail = &rb->watches;

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
    sq__redis_conns_init(rb);

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
    sq__redis_t *rb = hub->be_state;
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
    sq__redis_t *rb = hub->be_state;
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

static void rb_queue_watch(sq__redis_t *rb, sq__redis_watch_t *w)
{
    w->next = NULL;
    uv_mutex_lock(&rb->mu);
    *rb->watches_tail = w;
    rb->watches_tail = &w->next;
    uv_mutex_unlock(&rb->mu);
    uv_async_send(&rb->wake);
}

static sq__redis_watch_t *watch_new(const sq__hub_room_t *room, int on)
{
    sq__redis_watch_t *w = malloc(sizeof(*w) + room->name_len + 1);
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
    sq__redis_t *rb = hub->be_state;
    if (rb == NULL)
        return;
    if (on) {
        if (room->backend != NULL)
            return; /* already watched */
        sq__redis_watch_t *won = watch_new(room, 1), *woff = watch_new(room, 0);
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
        sq__redis_watch_t *woff = room->backend;
        room->backend = NULL;
        rb_queue_watch(rb, woff);
    }
}

static void rb_room_free(sq_hub_t *hub, sq__hub_room_t *room)
{
    sq__redis_t *rb = hub->be_state;
    sq__redis_watch_t *woff = room->backend;
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
