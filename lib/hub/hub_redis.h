/* The hub on Redis, the backend's own parts: hub_redis.c (the thread, the queue from the
 * hub, publish and history), hub_redis_live.c (the rooms this process watches and the
 * live read), hub_redis_conn.c (the two connections, their deadlines, the URL). Unless
 * said otherwise everything here is for the backend's thread. */
#ifndef SQUALL_HUB_REDIS_H
#define SQUALL_HUB_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "hub/hub_int.h"

typedef struct sq__redis sq__redis_t;

enum {
    SQ__RC_DOWN, /* waiting for retry_at */
    SQ__RC_CONNECTING,
    SQ__RC_HELLO, /* the blocking one, asking its CLIENT ID */
    SQ__RC_UP,
};

/* One connection to Redis. */
typedef struct sq__redis_conn {
    sq__redis_t *rb;
    redisAsyncContext *ac;
    const char *what;  /* for the log: "command", "blocking" */
    int state;         /* SQ__RC_* */
    int fail;          /* the status replies get while the context is being dropped */
    int logged_down;   /* its failure was logged: log the next success */
    unsigned pending;  /* commands sent, not answered */
    uint64_t since;    /* uv_now of the connect, or of the last progress while pending */
    uint64_t extra_ms; /* allowance past the timeout for what is pending (a blocking XREAD) */
    uint64_t retry_at; /* SQ__RC_DOWN: the next attempt */
} sq__redis_conn_t;

enum {
    SQ__RR_FETCH,    /* needs its cursor (read once the command connection is up) */
    SQ__RR_FETCHING, /* its last id is being read */
    SQ__RR_LIVE,     /* in the XREAD */
};

/* A room this process watches. */
typedef struct sq__redis_room {
    struct sq__redis_room *next; /* hash chain */
    uint64_t hash;
    unsigned refs;              /* watch on minus watch off */
    unsigned inflight;          /* reads of its last id in flight (each holds the struct) */
    int state;                  /* SQ__RR_* */
    int linked;                 /* in the table (no more once unwatched) */
    int recheck;                /* after a failed XREAD: read again, its cursor kept */
    int checking;               /* a check of its last id is out (live: sq__redis_check_all) */
    uint64_t cur_ms, cur_seq;   /* the cursor: the last id delivered, or read at watch */
    unsigned epoch;             /* times the room started again (a mark of another is stale) */
    uint64_t mark_ms, mark_seq; /* the check out: the cursor when it was sent */
    unsigned mark_epoch;
    uint64_t skip_gen; /* the XREAD out when it started again: its entries are skipped */
    size_t klen;
    char key[]; /* prefix + name, NUL-terminated */
} sq__redis_room_t;

/* A watch (on) or unwatch, queued by the hub's threads. */
typedef struct sq__redis_watch {
    struct sq__redis_watch *next;
    int on;
    size_t len;
    char name[];
} sq__redis_watch_t;

struct sq__redis {
    sq_hub_t *hub;
    char *host;
    int port;
    const char *prefix; /* hub->redis_prefix */
    size_t prefix_len;
    uint64_t timeout_ms, reconnect_ms;
    char count_str[24]; /* history_count, in decimal: what a history read returns */
    char bytes_str[24]; /* history_bytes, in decimal: the texts a history read returns */
    char kept_str[24];  /* what a stream keeps (XADD MAXLEN; hub_redis.c) */

    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer; /* the earliest deadline: a connect or command timeout, a retry */
    uv_check_t check; /* after each poll: polls the adapter stopped, then the timer */

    uv_mutex_t mu; /* the two queues and `stopping`: any thread */
    sq__hub_op_t *ops, **ops_tail;
    sq__redis_watch_t *watches, **watches_tail;
    int stopping;

    /* the backend thread's own */
    int stopped;
    sq__redis_conn_t cmd, blk; /* commands; the blocking XREAD */
    long long blk_id;          /* CLIENT ID of the blocking connection */
    sq__redis_room_t **tab;
    size_t tab_cap, nrooms, nlive;
    int xread_pending;    /* an XREAD is out on the blocking connection */
    int xread_dirty;      /* the live rooms changed since it was sent */
    int unblock_pending;  /* a CLIENT UNBLOCK is out on the command connection */
    uint64_t xread_gen;   /* XREADs issued */
    uint64_t unblock_gen; /* the XREAD the CLIENT UNBLOCK out was sent for */
    uint64_t unblock_at;  /* nonzero: send CLIENT UNBLOCK again then */
    uint64_t xread_at;    /* nonzero: issue the XREAD no earlier (after an error reply) */
    uint64_t fetch_at;    /* nonzero: read the cursors that failed again then */
    uint64_t log_at;      /* failures are logged no earlier */
    sq__buf_t key;        /* scratch: a stream's key */
};

static inline uint64_t sq__redis_now(sq__redis_t *rb)
{
    return uv_now(&rb->loop);
}

static inline sq__redis_conn_t *sq__redis_conn_of(const redisAsyncContext *ac)
{
    return (sq__redis_conn_t *)ac->data;
}

static inline int sq__redis_is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* ---- hub_redis.c ---- */

/* Counts a failed command or a lost connection (hub->redis_errors). */
SQ__HIDDEN void sq__redis_error(sq__redis_t *rb);
/* Logs a failure at WARN, at most once a second (each one is counted anyway). */
SQ__HIDDEN void sq__redis_log_failure(sq__redis_t *rb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A stream id "MS-SEQ" of n bytes. Returns 0, or -1 for anything else. */
SQ__HIDDEN int sq__redis_parse_id(const char *s, size_t n, uint64_t *ms, uint64_t *seq);
/* The id and the text of one stream entry [id, [field, value, ...]]. Returns 0 (*text
 * the value of its "text" field), 1 (an entry of ours' shape but no text: *ms, *seq set),
 * or -1 (not an entry). */
SQ__HIDDEN int sq__redis_entry(const redisReply *e, uint64_t *ms, uint64_t *seq,
                               const redisReply **text);
/* A room's stream key in rb->key (valid until the next call). 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__redis_make_key(sq__redis_t *rb, const char *name, size_t len);
/* Sends the history script for a key on the command connection: since is a decimal or
 * "now" (the last id alone). Returns as sq__redis_send. */
SQ__HIDDEN int sq__redis_eval_history(sq__redis_t *rb, const char *key, size_t klen,
                                      const char *since, redisCallbackFn *fn, void *priv);
/* The script's answer {last id, entries, reset}. Returns 0 and *last, or -1 (the wrong
 * shape, or ids with a milliseconds part: not a stream a hub wrote). */
SQ__HIDDEN int sq__redis_history_reply(const redisReply *reply, uint64_t *last);

/* ---- hub_redis_conn.c ---- */

/* The timer and the check handle, on rb->loop (before the thread runs). */
SQ__HIDDEN void sq__redis_conns_init(sq__redis_t *rb);
/* First connections, on the thread. */
SQ__HIDDEN void sq__redis_conns_start(sq__redis_t *rb);
/* Drops both connections (their replies see SQ_ECLOSED) and closes the two handles. */
SQ__HIDDEN void sq__redis_conns_close(sq__redis_t *rb);
/* Sends a command on a connection that is up (hello: or saying hello). Returns 0,
 * UV_ECONNREFUSED (down), UV_ECONNRESET (being dropped) or UV_ENOMEM. */
SQ__HIDDEN int sq__redis_send(sq__redis_conn_t *c, int hello, redisCallbackFn *fn, void *priv,
                              int argc, const char **argv, const size_t *lens);
/* Each reply callback calls this first (also for the NULL of a dropped context). */
SQ__HIDDEN void sq__redis_answered(sq__redis_conn_t *c);

/* ---- hub_redis_live.c ---- */

SQ__HIDDEN void sq__redis_watch_apply(sq__redis_t *rb, const sq__redis_watch_t *w);
/* Reads the cursor of every room that needs one (the command connection is up). */
SQ__HIDDEN void sq__redis_fetch_all(sq__redis_t *rb);
/* Brings the XREAD in line with the live rooms. */
SQ__HIDDEN void sq__redis_xread_kick(sq__redis_t *rb);
/* Reads the last id of every live room again (the command connection is back, or the read
 * waited its whole block time with nothing): a room whose stream went back below its
 * cursor has started again (sq__redis_seen). */
SQ__HIDDEN void sq__redis_check_all(sq__redis_t *rb);
/* Marks op (PUBLISH, HISTORY), as it is sent, with the cursor of its room (rb->key). */
SQ__HIDDEN void sq__redis_mark(sq__redis_t *rb, sq__hub_op_t *op);
/* The answer to op says its room's stream has `last` as its last id (a publish's: the
 * id before its own): below op's mark, the room started again — the cursor goes to
 * `last` and the hub ends the room's subscribers (sq__hub_room_reset) but `spare`. */
SQ__HIDDEN void sq__redis_seen(sq__redis_t *rb, const sq__hub_op_t *op, uint64_t last,
                               const sq_hub_sub_t *spare);
/* Frees every room (at stop, once no reply can come). */
SQ__HIDDEN void sq__redis_rooms_free(sq__redis_t *rb);

#endif
