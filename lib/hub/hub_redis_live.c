/* The hub on Redis: the rooms this process watches and the live read.
 *
 * The blocking connection carries one `XREAD COUNT n BLOCK ms STREAMS k1 .. kn c1 .. cn`
 * at a time over every watched room, from each room's cursor (the last id it delivered);
 * each entry read is made a message and handed to the hub (sq__hub_fanout), and the read
 * is issued again. When the set of rooms changes while it blocks, `CLIENT UNBLOCK <its
 * id>` on the command connection makes it return at once (nil), and it is issued again
 * with the new set. An UNBLOCK can miss: it may reach Redis before the XREAD did (0: sent
 * again shortly), or after that XREAD returned and the next one was issued (it is sent
 * again for the one out now) — test_hub_redis.c:
 * a_room_watched_while_the_read_blocks_is_live_at_once.
 *
 * No gap between a subscriber's history and the live messages: the hub calls watch(on)
 * before it asks for the subscriber's history, and the thread applies the watches it
 * drains before the requests, so the room's last id is read on the command connection
 * ahead of the history, and becomes its cursor: the live read starts at or below where
 * the history ends (the hub drops the duplicates by id). After a reconnection the read
 * resumes from every cursor, so nothing Redis acknowledged is lost.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_redis.h"

/* How long one XREAD blocks. A connection that died without a FIN or a reset is found
 * within this plus redis_timeout_ms; a change of the watched set never waits for it. */
#define RB_BLOCK_MS 10000
/* Entries one XREAD returns per stream at most (it is issued again at once). */
#define RB_READ_COUNT "100"
/* A CLIENT UNBLOCK that found the XREAD not blocked yet is sent again this much later. */
#define RB_UNBLOCK_RETRY_MS 2

/* ---- the rooms this process watches ---- */

static sq__redis_room_t *room_find(sq__redis_t *rb, const char *key, size_t klen)
{
    if (rb->tab_cap == 0)
        return NULL;
    uint64_t h = sq__hub_hash(key, klen);
    for (sq__redis_room_t *r = rb->tab[h & (rb->tab_cap - 1)]; r != NULL; r = r->next)
        if (r->hash == h && r->klen == klen && memcmp(r->key, key, klen) == 0)
            return r;
    return NULL;
}

static int room_table_grow(sq__redis_t *rb)
{
    size_t cap = rb->tab_cap ? rb->tab_cap * 2 : 16;
    sq__redis_room_t **tab = calloc(cap, sizeof(*tab));
    if (tab == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < rb->tab_cap; i++) {
        sq__redis_room_t *r = rb->tab[i], *next;
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

static sq__redis_room_t *room_add(sq__redis_t *rb, const char *key, size_t klen)
{
    if (rb->nrooms + 1 > rb->tab_cap && room_table_grow(rb) != 0)
        return NULL;
    sq__redis_room_t *r = calloc(1, sizeof(*r) + klen + 1);
    if (r == NULL)
        return NULL;
    memcpy(r->key, key, klen);
    r->klen = klen;
    r->hash = sq__hub_hash(key, klen);
    r->state = SQ__RR_FETCH;
    r->linked = 1;
    r->next = rb->tab[r->hash & (rb->tab_cap - 1)];
    rb->tab[r->hash & (rb->tab_cap - 1)] = r;
    rb->nrooms++;
    return r;
}

static void room_unlink(sq__redis_t *rb, sq__redis_room_t *r)
{
    sq__redis_room_t **pp = &rb->tab[r->hash & (rb->tab_cap - 1)];
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    r->next = NULL;
    r->linked = 0;
    rb->nrooms--;
    if (r->state == SQ__RR_LIVE) {
        rb->nlive--;
        rb->xread_dirty = 1;
    }
    r->state = SQ__RR_FETCH;
}

/* Frees a room once it is unwatched and no read of its last id holds it. */
static void room_maybe_free(sq__redis_room_t *r)
{
    if (!r->linked && r->inflight == 0)
        free(r);
}

/* ---- the live read ---- */

/* The messages of one stream of an XREAD reply: [key, [[id, [field, value, ...]], ...]]. */
static void rb_deliver(sq__redis_t *rb, const redisReply *stream)
{
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        !sq__redis_is_str(stream->element[0]) || stream->element[1]->type != REDIS_REPLY_ARRAY) {
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "XREAD: a reply of an unexpected shape");
        return;
    }
    const redisReply *k = stream->element[0], *entries = stream->element[1];
    sq__redis_room_t *r = room_find(rb, k->str, k->len);
    if (r == NULL || r->state != SQ__RR_LIVE)
        return; /* unwatched meanwhile */
    if (r->skip_gen == rb->xread_gen)
        return; /* read from the cursor before it started again: read again from the new */
    const char *name = r->key + rb->prefix_len;
    size_t name_len = r->klen - rb->prefix_len;

    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *text;
        uint64_t ms, seq;
        int rc = sq__redis_entry(entries->element[i], &ms, &seq, &text);
        if (rc < 0) {
            sq__redis_error(rb);
            sq__redis_log_failure(rb, "XREAD: an entry of an unexpected shape in %s", r->key);
            continue;
        }
        if (ms < r->cur_ms || (ms == r->cur_ms && seq <= r->cur_seq))
            continue;
        r->cur_ms = ms;
        r->cur_seq = seq;
        if (rc > 0) {
            sq__redis_error(rb);
            sq__redis_log_failure(rb, "XREAD: entry %llu-%llu of %s is not a message",
                                  (unsigned long long)ms, (unsigned long long)seq, r->key);
            continue;
        }
        int err = 0;
        sq_hub_msg_t *m = sq__hub_msg_new(name, name_len, seq, text->str, text->len, &err);
        if (m == NULL) {
            sq__redis_error(rb);
            sq__redis_log_failure(rb, "XREAD: message %llu of %s dropped (%s)",
                                  (unsigned long long)seq, r->key, uv_strerror(err));
            continue;
        }
        sq__hub_fanout(rb->hub, m);
        sq__hub_msg_unref(m);
    }
}

static void on_xread(redisAsyncContext *ac, void *r, void *priv)
{
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    redisReply *reply = r;

    sq__redis_answered(c);
    c->extra_ms = 0;
    rb->xread_pending = 0;
    if (reply == NULL || rb->stopped)
        return; /* dropped: issued again once it is back */
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            rb_deliver(rb, reply->element[i]);
    } else if (reply->type == REDIS_REPLY_NIL && !rb->xread_dirty) {
        /* The whole block time with nothing (not unblocked for a change of the set): a
         * stream deleted while Redis ran, then written by another server below the
         * cursor, is seen by nothing else. */
        sq__redis_check_all(rb);
    } else if (reply->type != REDIS_REPLY_NIL) {
        /* Timed out or unblocked: NIL. Anything else is an error, most likely one key that
         * is no stream any more (WRONGTYPE), which fails the read of every room: each is
         * checked again (its cursor kept), a room that fails is left out, and the read is
         * issued again no sooner than redis_reconnect_ms. (After a restart Redis answers
         * LOADING to every read for a while: the same path.) */
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "XREAD: %s",
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        rb->xread_at = sq__redis_now(rb) + rb->reconnect_ms;
        for (size_t b = 0; b < rb->tab_cap; b++)
            for (sq__redis_room_t *room = rb->tab[b]; room != NULL; room = room->next)
                if (room->state == SQ__RR_LIVE) {
                    room->state = SQ__RR_FETCH;
                    room->recheck = 1;
                    rb->nlive--;
                }
        sq__redis_fetch_all(rb);
        return;
    }
    sq__redis_xread_kick(rb);
}

static void on_unblock(redisAsyncContext *ac, void *r, void *priv)
{
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    redisReply *reply = r;

    sq__redis_answered(c);
    rb->unblock_pending = 0;
    if (reply == NULL || rb->stopped)
        return;
    if (reply->type != REDIS_REPLY_INTEGER) {
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "CLIENT UNBLOCK: %s",
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return; /* the XREAD's block time still bounds the wait */
    }
    if (!rb->xread_pending || !rb->xread_dirty)
        return;
    if (rb->unblock_gen != rb->xread_gen)
        sq__redis_xread_kick(rb); /* it was for an XREAD since answered: the one out now */
    else if (reply->integer == 0)
        rb->unblock_at = sq__redis_now(rb) + RB_UNBLOCK_RETRY_MS; /* not blocked yet: again */
    /* 1: it returns, and is issued again with the new set */
}

/* Brings the XREAD in line with the live rooms: issues it when none is out, or has the
 * one out return (CLIENT UNBLOCK) when the set changed. */
void sq__redis_xread_kick(sq__redis_t *rb)
{
    if (rb->stopped || rb->blk.state != SQ__RC_UP)
        return;
    if (rb->xread_pending) {
        if (rb->xread_dirty && !rb->unblock_pending && rb->unblock_at == 0 &&
            rb->cmd.state == SQ__RC_UP) {
            char id[24];
            int n = snprintf(id, sizeof(id), "%lld", rb->blk_id);
            const char *argv[] = {"CLIENT", "UNBLOCK", id};
            size_t lens[] = {6, 7, (size_t)n};
            if (sq__redis_send(&rb->cmd, 0, on_unblock, NULL, 3, argv, lens) == 0) {
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
        sq__redis_error(rb);
        rb->xread_at = sq__redis_now(rb) + rb->reconnect_ms;
        goto out;
    }
    char block[24];
    snprintf(block, sizeof(block), "%d", RB_BLOCK_MS);
    argv[0] = "XREAD", lens[0] = 5;
    argv[1] = "COUNT", lens[1] = 5;
    argv[2] = RB_READ_COUNT, lens[2] = strlen(RB_READ_COUNT);
    argv[3] = "BLOCK", lens[3] = 5;
    argv[4] = block, lens[4] = strlen(block);
    argv[5] = "STREAMS", lens[5] = 7;
    size_t j = 0;
    for (size_t b = 0; b < rb->tab_cap; b++)
        for (sq__redis_room_t *r = rb->tab[b]; r != NULL; r = r->next) {
            if (r->state != SQ__RR_LIVE)
                continue;
            char *id = ids + j * 44;
            int n = snprintf(id, 44, "%llu-%llu", (unsigned long long)r->cur_ms,
                             (unsigned long long)r->cur_seq);
            argv[k] = r->key, lens[k] = r->klen;
            argv[k + rb->nlive] = id, lens[k + rb->nlive] = (size_t)n;
            k++, j++;
        }
    int rc = sq__redis_send(&rb->blk, 0, on_xread, NULL, (int)argc, argv, lens);
    if (rc == 0) {
        rb->xread_pending = 1;
        rb->xread_gen++;
        rb->blk.extra_ms = RB_BLOCK_MS;
    } else {
        sq__redis_error(rb);
        rb->xread_at = sq__redis_now(rb) + rb->reconnect_ms;
    }
out:
    free(argv);
    free(lens);
    free(ids);
}

/* ---- a room's cursor ---- */

/* The room's stream holds ids only up to `last`, below the cursor: it started again
 * (Redis restarted without its data, the key was deleted). The cursor goes to `last`
 * (0-0: no stream), an XREAD out from the old cursor is read again, and the hub ends the
 * room's subscribers but `spare`: their clients start again from the new history. */
static void room_restarted(sq__redis_t *rb, sq__redis_room_t *r, uint64_t last,
                           const sq_hub_sub_t *spare)
{
    sq_log(SQ_LOG_WARN,
           "hub: redis %s:%d: %s started again (last id 0-%llu, below %llu-%llu): its "
           "subscribers are ended",
           rb->host, rb->port, r->key, (unsigned long long)last, (unsigned long long)r->cur_ms,
           (unsigned long long)r->cur_seq);
    r->cur_ms = 0;
    r->cur_seq = last;
    r->epoch++;
    if (r->state == SQ__RR_LIVE) {
        if (rb->xread_pending)
            r->skip_gen = rb->xread_gen;
        rb->xread_dirty = 1;
    }
    sq__hub_room_reset(rb->hub, r->key + rb->prefix_len, r->klen - rb->prefix_len, spare);
    sq__redis_xread_kick(rb);
}

void sq__redis_mark(sq__redis_t *rb, sq__hub_op_t *op)
{
    sq__redis_room_t *r = room_find(rb, rb->key.base, rb->key.len);
    op->mark_set = r != NULL;
    if (r != NULL) {
        op->mark_ms = r->cur_ms;
        op->mark_seq = r->cur_seq;
        op->mark_epoch = r->epoch;
    }
}

/* Whether a stream whose last id is 0-last went back below a cursor ms-seq it had: ids
 * only grow in a stream (its last generated id stays when entries are trimmed or
 * deleted), so the cursor — ids read before the question was sent — can be above only
 * if the stream was made again. */
static int went_back(uint64_t last, uint64_t ms, uint64_t seq)
{
    return ms > 0 || last < seq;
}

void sq__redis_seen(sq__redis_t *rb, const sq__hub_op_t *op, uint64_t last,
                    const sq_hub_sub_t *spare)
{
    if (!op->mark_set || !went_back(last, op->mark_ms, op->mark_seq) ||
        sq__redis_make_key(rb, op->room, op->room_len) != 0)
        return;
    sq__redis_room_t *r = room_find(rb, rb->key.base, rb->key.len);
    if (r != NULL && r->epoch == op->mark_epoch)
        room_restarted(rb, r, last, spare);
}

static void on_check(redisAsyncContext *ac, void *r, void *priv)
{
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    sq__redis_room_t *room = priv;
    redisReply *reply = r;
    uint64_t last;

    sq__redis_answered(c);
    room->inflight--;
    room->checking = 0;
    if (!room->linked || rb->stopped) {
        room_maybe_free(room);
        return;
    }
    if (reply == NULL)
        return; /* checked again once the connection is back */
    if (reply->type == REDIS_REPLY_ERROR || sq__redis_history_reply(reply, &last) != 0) {
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "reading the last id of %s: %s", room->key,
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    if (room->epoch == room->mark_epoch && went_back(last, room->mark_ms, room->mark_seq))
        room_restarted(rb, room, last, NULL);
}

void sq__redis_check_all(sq__redis_t *rb)
{
    if (rb->stopped || rb->cmd.state != SQ__RC_UP)
        return;
    for (size_t b = 0; b < rb->tab_cap; b++)
        for (sq__redis_room_t *r = rb->tab[b]; r != NULL; r = r->next) {
            if (r->state != SQ__RR_LIVE || r->checking ||
                sq__redis_eval_history(rb, r->key, r->klen, "now", on_check, r) != 0)
                continue;
            r->inflight++;
            r->checking = 1;
            r->mark_ms = r->cur_ms;
            r->mark_seq = r->cur_seq;
            r->mark_epoch = r->epoch;
        }
}

static void on_cursor(redisAsyncContext *ac, void *r, void *priv)
{
    sq__redis_conn_t *c = sq__redis_conn_of(ac);
    sq__redis_t *rb = c->rb;
    sq__redis_room_t *room = priv;
    redisReply *reply = r;
    uint64_t last;

    sq__redis_answered(c);
    room->inflight--;
    if (!room->linked || rb->stopped || room->state != SQ__RR_FETCHING) {
        room_maybe_free(room);
        return;
    }
    room->state = SQ__RR_FETCH; /* until it has its cursor */
    if (reply == NULL)
        return; /* read again once the connection is back */
    if (reply->type == REDIS_REPLY_ERROR || sq__redis_history_reply(reply, &last) != 0) {
        /* A Redis still loading its data after a restart (LOADING), or a key that is no
         * stream: read again after redis_reconnect_ms, and again, until it works. */
        sq__redis_error(rb);
        sq__redis_log_failure(rb, "reading the last id of %s: %s", room->key,
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        if (rb->fetch_at == 0)
            rb->fetch_at = sq__redis_now(rb) + rb->reconnect_ms;
        return;
    }
    /* Out of the live read, a room's cursor moves only when it starts again, and every
     * other read of its last id is answered on this connection, in order. */
    if (room->recheck && went_back(last, room->cur_ms, room->cur_seq)) {
        room_restarted(rb, room, last, NULL);
    } else if (!room->recheck) {
        room->cur_ms = 0;
        room->cur_seq = last;
    }
    room->recheck = 0;
    room->state = SQ__RR_LIVE;
    rb->nlive++;
    rb->xread_dirty = 1;
    sq__redis_xread_kick(rb);
}

static void rb_fetch(sq__redis_t *rb, sq__redis_room_t *r)
{
    if (r->state != SQ__RR_FETCH || rb->cmd.state != SQ__RC_UP)
        return;
    if (sq__redis_eval_history(rb, r->key, r->klen, "now", on_cursor, r) != 0)
        return; /* read once the connection is back */
    r->inflight++;
    r->state = SQ__RR_FETCHING;
}

void sq__redis_fetch_all(sq__redis_t *rb)
{
    for (size_t b = 0; b < rb->tab_cap; b++)
        for (sq__redis_room_t *r = rb->tab[b]; r != NULL; r = r->next)
            rb_fetch(rb, r);
}

void sq__redis_watch_apply(sq__redis_t *rb, const sq__redis_watch_t *w)
{
    if (sq__redis_make_key(rb, w->name, w->len) != 0) {
        sq__redis_error(rb);
        return;
    }
    sq__redis_room_t *r = room_find(rb, rb->key.base, rb->key.len);
    if (w->on) {
        if (r == NULL && (r = room_add(rb, rb->key.base, rb->key.len)) == NULL) {
            sq__redis_error(rb);
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

void sq__redis_rooms_free(sq__redis_t *rb)
{
    for (size_t b = 0; b < rb->tab_cap; b++) {
        for (sq__redis_room_t *r = rb->tab[b], *next; r != NULL; r = next) {
            next = r->next;
            free(r);
        }
    }
    free(rb->tab);
    rb->tab = NULL;
    rb->tab_cap = rb->nrooms = rb->nlive = 0;
}
