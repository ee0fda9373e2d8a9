/* The hub's core: messages, the room table, the loops a hub serves and what crosses
 * between them. Subscribers are in hub_sub.c, the backends in hub_mem.c and hub_redis.c.
 *
 * Threads: the room table and each room's interest bits are under hub->mu; each loop's
 * inbox under its own mutex; everything else of a loop (its rooms' subscriber lists, its
 * timers) belongs to that loop's thread. Nothing holds a lock while calling a user or
 * writing to a socket: a message is queued to a loop under the locks, and delivered by
 * that loop's async callback with none held. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/abi.h"
#include "hub/hub_int.h"
#include "hub/hub_loop.h"

/* ---- messages ---- */

/* Bytes JSON needs for s (RFC 8259 §7): '"' and '\\' escaped, control characters as
 * \n-style or \u00XX escapes; UTF-8 is kept as it is. */
static size_t json_str_len(const char *s, size_t n)
{
    size_t out = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out +=
            c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f'
                ? 2
            : c < 0x20 ? 6
                       : 1;
    }
    return out;
}

static char *json_str_put(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = c == '"'    ? '"'
                 : c == '\\' ? '\\'
                 : c == '\n' ? 'n'
                 : c == '\r' ? 'r'
                 : c == '\t' ? 't'
                 : c == '\b' ? 'b'
                 : c == '\f' ? 'f'
                             : 0;
        if (e != 0) {
            *p++ = '\\';
            *p++ = e;
        } else if (c < 0x20) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 15];
            p += 6;
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

sq_hub_msg_t *sq__hub_msg_new(const char *room, size_t room_len, uint64_t id, const char *text,
                              size_t text_len, int *err)
{
    if (!sq__hub_utf8_ok(room, room_len) || !sq__hub_utf8_ok(text, text_len)) {
        *err = UV_EINVAL;
        return NULL;
    }
    char idbuf[24];
    int idn = snprintf(idbuf, sizeof(idbuf), "%" PRIu64, id);
    /* {"id":N,"room":R,"text":T} */
    size_t json = sizeof("{\"id\":,\"room\":,\"text\":}") - 1 + (size_t)idn +
                  json_str_len(room, room_len) + json_str_len(text, text_len);
    size_t sse_pre = sizeof("id: \ndata: ") - 1 + (size_t)idn;
    size_t total =
        sizeof(sq_hub_msg_t) + room_len + 1 + text_len + 1 + (json + 2) + (sse_pre + json + 2);
    sq_hub_msg_t *m = malloc(total);
    if (m == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->id = id;
    m->bytes = total;
    char *p = m->data;
    m->room = p;
    m->room_len = room_len;
    memcpy(p, room, room_len);
    p[room_len] = '\0';
    p += room_len + 1;
    m->text = p;
    m->text_len = text_len;
    memcpy(p, text, text_len);
    p[text_len] = '\0';
    p += text_len + 1;
    /* the poll form, with the object inside */
    char *arr = p;
    *p++ = '[';
    char *obj = p;
    p = stpcpy(p, "{\"id\":");
    p = stpcpy(p, idbuf);
    p = stpcpy(p, ",\"room\":");
    p = json_str_put(p, room, room_len);
    p = stpcpy(p, ",\"text\":");
    p = json_str_put(p, text, text_len);
    *p++ = '}';
    *p++ = ']';
    m->arr = arr;
    m->arr_len = (size_t)(p - arr);
    /* the event-stream form (WHATWG HTML §9.2.6): the object holds no raw newline */
    char *sse = p;
    p = stpcpy(p, "id: ");
    p = stpcpy(p, idbuf);
    p = stpcpy(p, "\ndata: ");
    memcpy(p, obj, json);
    p += json;
    *p++ = '\n';
    *p++ = '\n';
    m->sse = sse;
    m->sse_len = (size_t)(p - sse);
    return m;
}

void sq__hub_msg_ref(sq_hub_msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void sq__hub_msg_unref(sq_hub_msg_t *m)
{
    if (m != NULL && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

uint64_t sq_hub_msg_id(const sq_hub_msg_t *msg)
{
    return msg->id;
}

const char *sq_hub_msg_json(const sq_hub_msg_t *msg, size_t *len)
{
    if (len != NULL)
        *len = msg->arr_len - 2;
    return msg->arr + 1;
}

const char *sq_hub_msg_text(const sq_hub_msg_t *msg, size_t *len)
{
    if (len != NULL)
        *len = msg->text_len;
    return msg->text;
}

/* UTF-8 as RFC 3629 §4 has it: no overlong forms, no surrogates, nothing past U+10FFFF. */
bool sq__hub_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t k = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (k == 0 || (size_t)(end - p) < k)
            return false;
        uint32_t cp = k == 2 ? c & 0x1fu : k == 3 ? c & 0x0fu : c & 0x07u;
        for (size_t i = 1; i < k; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3fu);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += k;
    }
    return true;
}

/* ---- operations ---- */

sq__hub_op_t *sq__hub_op_new(sq__hub_op_kind_t kind, sq__hub_loop_t *hl)
{
    sq__hub_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->kind = kind;
    op->hl = hl;
    if (kind == SQ__HOP_HISTORY && hl != NULL)
        atomic_fetch_add_explicit(&hl->hub->reads_out, 1, memory_order_relaxed);
    return op;
}

void sq__hub_op_free(sq__hub_op_t *op)
{
    if (op == NULL)
        return;
    for (size_t i = 0; i < op->n; i++)
        sq__hub_msg_unref(op->msgs[i]);
    free(op->msgs);
    sq__hub_msg_unref(op->msg);
    free(op->room);
    free(op->text);
    if (op->kind == SQ__HOP_HISTORY && op->hl != NULL)
        atomic_fetch_sub_explicit(&op->hl->hub->reads_out, 1, memory_order_relaxed);
    free(op);
}

void sq__hub_complete(sq__hub_op_t *op)
{
    sq__hub_loop_t *hl = op->hl;
    uv_mutex_lock(&hl->mu);
    if (hl->detached) {
        uv_mutex_unlock(&hl->mu);
        sq__hub_op_free(op);
        return;
    }
    op->next = NULL;
    if (hl->in_tail != NULL)
        hl->in_tail->next = op;
    else
        hl->in_head = op;
    hl->in_tail = op;
    uv_async_send(&hl->async);
    uv_mutex_unlock(&hl->mu);
}

/* ---- rooms ---- */

uint64_t sq__hub_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static void room_free(sq_hub_t *hub, sq__hub_room_t *r)
{
    if (hub->be->room_free != NULL)
        hub->be->room_free(hub, r);
    for (size_t i = 0; i < r->hist_n; i++)
        sq__hub_msg_unref(r->hist[(r->hist_head + i) % r->hist_cap]);
    free(r->hist);
    free(r);
}

void sq__hub_room_drop(sq_hub_t *hub, sq__hub_room_t *r)
{
    sq__hub_room_t **pp = &hub->rooms[r->hash & (hub->rooms_cap - 1)];
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    hub->nrooms--;
    room_free(hub, r);
}

/* Frees the rooms nobody watched and nobody wrote to for room_idle_ms (hub->mu held). */
static void rooms_sweep(sq_hub_t *hub, uint64_t now)
{
    uint64_t idle = hub->opts.room_idle_ms * 1000000ull;
    if (idle == 0 || now - hub->last_sweep < idle / 4)
        return;
    hub->last_sweep = now;
    for (size_t b = 0; b < hub->rooms_cap; b++) {
        sq__hub_room_t **pp = &hub->rooms[b];
        while (*pp != NULL) {
            sq__hub_room_t *r = *pp;
            if (r->loops == 0 && now - r->last_active >= idle) {
                *pp = r->next;
                hub->nrooms--;
                room_free(hub, r);
            } else {
                pp = &r->next;
            }
        }
    }
}

static int rooms_grow(sq_hub_t *hub)
{
    size_t cap = hub->rooms_cap ? hub->rooms_cap * 2 : 64;
    sq__hub_room_t **t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return UV_ENOMEM;
    for (size_t b = 0; b < hub->rooms_cap; b++) {
        for (sq__hub_room_t *r = hub->rooms[b], *next; r != NULL; r = next) {
            next = r->next;
            r->next = t[r->hash & (cap - 1)];
            t[r->hash & (cap - 1)] = r;
        }
    }
    free(hub->rooms);
    hub->rooms = t;
    hub->rooms_cap = cap;
    return 0;
}

sq__hub_room_t *sq__hub_room_get(sq_hub_t *hub, const char *name, size_t len, int create, int *err)
{
    uint64_t h = sq__hub_hash(name, len);
    if (hub->rooms_cap > 0) {
        for (sq__hub_room_t *r = hub->rooms[h & (hub->rooms_cap - 1)]; r != NULL; r = r->next)
            if (r->hash == h && r->name_len == len && memcmp(r->name, name, len) == 0)
                return r;
    }
    if (!create)
        return NULL;
    uint64_t now = uv_hrtime();
    rooms_sweep(hub, now);
    if (hub->opts.max_rooms > 0 && hub->nrooms >= hub->opts.max_rooms) {
        *err = UV_ENOSPC;
        return NULL;
    }
    if (hub->nrooms >= hub->rooms_cap && rooms_grow(hub) != 0) {
        *err = UV_ENOMEM;
        return NULL;
    }
    sq__hub_room_t *r = calloc(1, sizeof(*r) + len + 1);
    if (r == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    r->hash = h;
    r->last_active = now;
    r->name_len = len;
    memcpy(r->name, name, len);
    r->next = hub->rooms[h & (hub->rooms_cap - 1)];
    hub->rooms[h & (hub->rooms_cap - 1)] = r;
    hub->nrooms++;
    return r;
}

void sq__hub_fanout_locked(sq_hub_t *hub, sq__hub_room_t *room, sq_hub_msg_t *m)
{
    for (uint64_t bits = room->loops; bits != 0; bits &= bits - 1) {
        unsigned i = (unsigned)__builtin_ctzll(bits);
        sq__hub_loop_t *hl = atomic_load_explicit(&hub->loops[i], memory_order_acquire);
        if (hl == NULL)
            continue;
        sq__hub_op_t *op = sq__hub_op_new(SQ__HOP_MESSAGE, hl);
        if (op == NULL) {
            /* that loop's subscribers miss it; they see the gap in the ids */
            sq_log(SQ_LOG_ERROR,
                   "hub: out of memory: message %" PRIu64 " of a room not "
                   "queued to loop %u",
                   m->id, i);
            continue;
        }
        sq__hub_msg_ref(m);
        op->msg = m;
        sq__hub_complete(op);
    }
}

void sq__hub_fanout(sq_hub_t *hub, sq_hub_msg_t *m)
{
    uv_mutex_lock(&hub->mu);
    sq__hub_room_t *r = sq__hub_room_get(hub, m->room, m->room_len, 0, NULL);
    if (r != NULL)
        sq__hub_fanout_locked(hub, r, m);
    uv_mutex_unlock(&hub->mu);
}

/* ---- the hub ---- */

static const sq_hub_opts_t defaults = {
    .size = sizeof(sq_hub_opts_t),
    .history_count = 1000,
    .history_bytes = 1u << 20,
    .max_text_bytes = 64u << 10,
    .max_room_bytes = 128,
    .max_rooms = 10000,
    .room_idle_ms = 10 * 60 * 1000,
    .sse_heartbeat_ms = 15000,
    .sse_max_queued_bytes = 1u << 20,
    .max_wait_ms = 60000,
    .redis_url = NULL,
    .redis_prefix = "squall:room:",
    .redis_reconnect_ms = 500,
    .redis_timeout_ms = 2000,
    .max_history_reads = 1024,
};

void sq_hub_opts_init_sized(sq_hub_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &defaults);
}

int sq_hub_create(sq_hub_t **out, const sq_hub_opts_t *opts)
{
    if (out == NULL)
        return UV_EINVAL;
    sq_hub_opts_t o = defaults;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (o.redis_url != NULL) {
        int rc = sq__hub_redis_parse(o.redis_url, NULL, NULL);
        if (rc != 0)
            return rc;
    }
    sq_hub_t *hub = calloc(1, sizeof(*hub));
    if (hub == NULL)
        return UV_ENOMEM;
    hub->opts = o;
    hub->redis_url = o.redis_url ? strdup(o.redis_url) : NULL;
    hub->redis_prefix = strdup(o.redis_prefix ? o.redis_prefix : "");
    hub->opts.redis_url = hub->redis_url;
    hub->opts.redis_prefix = hub->redis_prefix;
    hub->be = hub->redis_url != NULL ? &sq__hub_redis_backend : &sq__hub_mem_backend;
    int rc = (o.redis_url && hub->redis_url == NULL) || hub->redis_prefix == NULL ? UV_ENOMEM : 0;
    if (rc == 0)
        rc = uv_mutex_init(&hub->mu);
    if (rc != 0) {
        free(hub->redis_url);
        free(hub->redis_prefix);
        free(hub);
        return rc;
    }
    if (hub->be->start != NULL && (rc = hub->be->start(hub)) != 0) {
        uv_mutex_destroy(&hub->mu);
        free(hub->redis_url);
        free(hub->redis_prefix);
        free(hub);
        return rc;
    }
    *out = hub;
    return 0;
}

void sq_hub_destroy(sq_hub_t *hub)
{
    if (hub == NULL)
        return;
    if (hub->be->stop != NULL)
        hub->be->stop(hub);
    sq__hub_loops_free(hub);
    for (size_t b = 0; b < hub->rooms_cap; b++) {
        for (sq__hub_room_t *r = hub->rooms[b], *next; r != NULL; r = next) {
            next = r->next;
            room_free(hub, r);
        }
    }
    free(hub->rooms);
    uv_mutex_destroy(&hub->mu);
    free(hub->redis_url);
    free(hub->redis_prefix);
    free(hub);
}

void sq_hub_stats_sized(sq_hub_t *hub, sq_hub_stats_t *out, size_t size)
{
    sq_hub_stats_t s = {.size = sizeof(s)};
    uv_mutex_lock(&hub->mu);
    s.rooms = hub->nrooms;
    uv_mutex_unlock(&hub->mu);
    s.published = atomic_load(&hub->published);
    s.delivered = atomic_load(&hub->delivered);
    s.subscribers = atomic_load(&hub->subscribers);
    s.held_polls = atomic_load(&hub->held_polls);
    s.dropped_slow = atomic_load(&hub->dropped_slow);
    s.missed = atomic_load(&hub->missed);
    s.redis_errors = atomic_load(&hub->redis_errors);
    s.redis_connected = atomic_load(&hub->redis_connected);
    SQ__STATS_OUT(out, size, &s);
}

int sq_hub_since(const char *s, uint64_t *since)
{
    if (s == NULL || *s == '\0') {
        *since = 0;
        return 0;
    }
    uint64_t v = 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 19)
            return UV_EINVAL;
        v = v * 10 + (uint64_t)(s[n] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return UV_EINVAL;
    *since = v;
    return 0;
}

/* ---- publishing ---- */

int sq__hub_room_check(const sq_hub_t *hub, const char *room, size_t *len)
{
    if (room == NULL)
        return UV_EINVAL;
    size_t n = strlen(room);
    if (n == 0 || (hub->opts.max_room_bytes > 0 && n > hub->opts.max_room_bytes) ||
        !sq__hub_utf8_ok(room, n))
        return UV_EINVAL;
    *len = n;
    return 0;
}

int sq_hub_publish(sq_hub_t *hub, uv_loop_t *loop, const char *room, const char *text, size_t len,
                   sq_hub_publish_cb cb, void *data)
{
    if (hub == NULL || loop == NULL || (text == NULL && len > 0))
        return UV_EINVAL;
    size_t room_len;
    int rc = sq__hub_room_check(hub, room, &room_len);
    if (rc != 0)
        return rc;
    if (hub->opts.max_text_bytes > 0 && len > hub->opts.max_text_bytes)
        return UV_EMSGSIZE;
    if (!sq__hub_utf8_ok(text, len))
        return UV_EINVAL;
    sq__hub_loop_t *hl = sq__hub_loop_find(hub, loop);
    if (hl == NULL)
        return SQ_ECLOSED;
    sq__hub_op_t *op = sq__hub_op_new(SQ__HOP_PUBLISH, hl);
    if (op == NULL)
        return UV_ENOMEM;
    op->room = malloc(room_len + 1);
    op->text = malloc(len + 1);
    if (op->room == NULL || op->text == NULL) {
        sq__hub_op_free(op);
        return UV_ENOMEM;
    }
    memcpy(op->room, room, room_len + 1);
    op->room_len = room_len;
    if (len > 0)
        memcpy(op->text, text, len);
    op->text[len] = '\0';
    op->text_len = len;
    if (cb != NULL && (op->ticket = sq__hub_ticket_new(hl, cb, data)) == NULL) {
        sq__hub_op_free(op);
        return UV_ENOMEM;
    }
    rc = hub->be->publish(hub, op);
    if (rc != 0) {
        if (op->ticket != NULL)
            sq__hub_ticket_drop(hl, op->ticket);
        sq__hub_op_free(op);
    }
    return rc;
}
