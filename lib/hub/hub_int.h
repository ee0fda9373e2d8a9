/* The hub's own structs: messages, rooms, the per-loop part, operations between threads,
 * and the backend table (in memory: hub_mem.c; Redis: hub_redis.c). */
#ifndef SQUALL_HUB_INT_H
#define SQUALL_HUB_INT_H

#include <stdatomic.h>
#include <stdbool.h>

#include "internal.h"
#include "squall/hub.h"

#define SQ__HUB_MAX_LOOPS 64

/* A message: one allocation, counted by every holder (the history, each loop's queue,
 * each write still in flight). Immutable once made, so any thread may read it. */
struct sq_hub_msg_s {
    atomic_uint refs;
    uint64_t id;
    size_t bytes;     /* what the history counts: the whole allocation */
    const char *room; /* NUL-terminated */
    size_t room_len;
    const char *text; /* as published; NUL-terminated (may hold NULs before) */
    size_t text_len;
    const char *arr; /* "[" json "]": a poll answer of this message alone */
    size_t arr_len;  /* the JSON object is arr + 1, arr_len - 2 bytes */
    const char *sse; /* "id: N\ndata: " json "\n\n" */
    size_t sse_len;
    char data[];
};

/* Makes a message (refs 1). Returns NULL for text or a room that is not UTF-8 (*err
 * UV_EINVAL) or out of memory (UV_ENOMEM). Any thread. */
SQ__HIDDEN sq_hub_msg_t *sq__hub_msg_new(const char *room, size_t room_len, uint64_t id,
                                         const char *text, size_t text_len, int *err);
SQ__HIDDEN void sq__hub_msg_ref(sq_hub_msg_t *m);
SQ__HIDDEN void sq__hub_msg_unref(sq_hub_msg_t *m);

typedef struct sq__hub_loop sq__hub_loop_t;

/* What crosses between threads: a request to the backend and, filled in, its answer,
 * queued to the loop that asked (sq__hub_complete); or a live message for a loop. */
typedef enum {
    SQ__HOP_PUBLISH = 1, /* room, text -> status, id */
    SQ__HOP_HISTORY,     /* room, since -> status, msgs[n], missed, last_id, reset */
    SQ__HOP_MESSAGE,     /* msg: a live message of msg->room for this loop */
    SQ__HOP_RESET,       /* room, sub: the room started again (sq__hub_room_reset) */
} sq__hub_op_kind_t;

typedef struct sq__hub_op {
    struct sq__hub_op *next;
    sq__hub_op_kind_t kind;
    sq__hub_loop_t *hl; /* where the answer goes */
    /* the request */
    char *room; /* NUL-terminated copy (PUBLISH, HISTORY, RESET) */
    size_t room_len;
    char *text; /* copy (PUBLISH) */
    size_t text_len;
    uint64_t since;       /* HISTORY: 0 whole, SQ_HUB_SINCE_NOW none */
    sq_hub_sub_t *sub;    /* HISTORY: touched only on hl's thread; RESET: the one spared */
    void *ticket;         /* PUBLISH: what hl tells when it is answered (hl's thread) */
    atomic_int cancelled; /* HISTORY: its subscriber ended; a backend may skip the read */
    /* PUBLISH, HISTORY: the backend's own, when it sent the request (Redis: the room's
     * cursor and its epoch, mark_set 0 when the process did not watch the room) */
    uint64_t mark_ms, mark_seq;
    unsigned mark_epoch;
    int mark_set;
    /* the answer */
    int status;
    uint64_t id;         /* PUBLISH */
    sq_hub_msg_t **msgs; /* HISTORY: references, in id order (malloc'd array) */
    size_t n;
    uint64_t missed;   /* HISTORY: messages above since no longer kept */
    uint64_t last_id;  /* HISTORY: the room's last id when read (0: empty room) */
    int reset;         /* HISTORY: since was above last_id: read as 0 */
    sq_hub_msg_t *msg; /* MESSAGE */
} sq__hub_op_t;

SQ__HIDDEN sq__hub_op_t *sq__hub_op_new(sq__hub_op_kind_t kind, sq__hub_loop_t *hl);
SQ__HIDDEN void sq__hub_op_free(sq__hub_op_t *op); /* and the references it holds */

/* Hands an answered op back to its loop (any thread; wakes the loop). */
SQ__HIDDEN void sq__hub_complete(sq__hub_op_t *op);

/* A room as the process knows it, in the hub's table under hub->mu. */
typedef struct sq__hub_room {
    struct sq__hub_room *next; /* hash chain */
    uint64_t hash;
    uint64_t loops;       /* bit i: loop i has subscribers here */
    uint64_t last_id;     /* in memory: the last id given */
    uint64_t last_active; /* uv_hrtime() of the last message or unsubscribe */
    /* in memory: the history, oldest first, a ring of hist_cap */
    sq_hub_msg_t **hist;
    size_t hist_cap, hist_head, hist_n, hist_bytes;
    void *backend; /* the backend's per-room state (Redis: its cursor) */
    size_t name_len;
    char name[];
} sq__hub_room_t;

/* The backend: where messages are numbered and kept. Each call is made with hub->mu
 * NOT held unless said; answers go back through sq__hub_complete, live messages through
 * sq__hub_fanout. */
typedef struct sq__hub_backend {
    /* Starts (the Redis thread). 0 or a negative code. */
    int (*start)(sq_hub_t *hub);
    /* Numbers and stores op->text in op->room, then completes op (status, id): returns
     * 0 and owns op; or an error (UV_ENOSPC, UV_ENOMEM, ...) and op stays the caller's
     * (nothing was published). */
    int (*publish)(sq_hub_t *hub, sq__hub_op_t *op);
    /* Reads the history above op->since, then completes op. Called after the loop's
     * interest in the room was registered (watch), so no message falls between the
     * history and the live ones (duplicates are dropped by id). */
    void (*history)(sq_hub_t *hub, sq__hub_op_t *op);
    /* The process gained its first (on 1) or lost its last (on 0) subscriber of `room`:
     * with hub->mu HELD (queue work, do not call back into the hub). May be NULL. */
    void (*watch)(sq_hub_t *hub, sq__hub_room_t *room, int on);
    /* A room is freed (hub->mu held): drop room->backend. May be NULL. */
    void (*room_free)(sq_hub_t *hub, sq__hub_room_t *room);
    /* Stops and frees the backend's state (the hub is being destroyed). May be NULL. */
    void (*stop)(sq_hub_t *hub);
} sq__hub_backend_t;

SQ__HIDDEN extern const sq__hub_backend_t sq__hub_mem_backend;
SQ__HIDDEN extern const sq__hub_backend_t sq__hub_redis_backend;

struct sq_hub_s {
    sq_hub_opts_t opts;
    char *redis_url; /* copies of the strings in opts */
    char *redis_prefix;
    const sq__hub_backend_t *be;
    void *be_state; /* the backend's */
    uv_mutex_t mu;  /* rooms, the loops' interest */
    sq__hub_room_t **rooms;
    size_t rooms_cap, nrooms;
    uint64_t last_sweep;
    _Atomic(sq__hub_loop_t *) loops[SQ__HUB_MAX_LOOPS];
    sq__hub_loop_t *detached; /* loops let go, freed with the hub (under mu) */
    /* counters (sq_hub_stats) */
    atomic_uint_fast64_t published, delivered, subscribers, held_polls, dropped_slow, missed,
        redis_errors, redis_connected;
    atomic_uint_fast64_t reads_out; /* history reads not answered yet (max_history_reads) */
};

/* The room named so, made when `create` and absent; hub->mu held. NULL: absent, or
 * (create) *err UV_ENOSPC / UV_ENOMEM. */
SQ__HIDDEN sq__hub_room_t *sq__hub_room_get(sq_hub_t *hub, const char *name, size_t len, int create,
                                            int *err);
/* Unlinks and frees a room (hub->mu held): nobody watches it and it holds nothing. */
SQ__HIDDEN void sq__hub_room_drop(sq_hub_t *hub, sq__hub_room_t *room);
/* Queues a live message to every loop with subscribers in its room (room->loops) and
 * wakes them; hub->mu held. Takes no reference from the caller. */
SQ__HIDDEN void sq__hub_fanout_locked(sq_hub_t *hub, sq__hub_room_t *room, sq_hub_msg_t *m);
/* The same from a backend's thread: takes hub->mu, finds the room (absent: nothing). */
SQ__HIDDEN void sq__hub_fanout(sq_hub_t *hub, sq_hub_msg_t *m);

/* The room started again (its backend's ids went back: Redis restarted without its data,
 * or the room's stream was deleted): every subscriber of the room ends, on every loop
 * that has some (SQ__HOP_RESET), but `spare` (may be NULL), a subscriber whose history
 * was read from the new start. Any thread; takes hub->mu (absent room: nothing). */
SQ__HIDDEN void sq__hub_room_reset(sq_hub_t *hub, const char *room, size_t len,
                                   const sq_hub_sub_t *spare);

/* The hash of a room's name (FNV-1a), for the hub's table and each loop's. */
SQ__HIDDEN uint64_t sq__hub_hash(const char *s, size_t n);

/* UTF-8 as RFC 3629 has it (no overlong forms, surrogates, or past U+10FFFF). */
SQ__HIDDEN bool sq__hub_utf8_ok(const char *s, size_t n);

/* hub_redis.c: checks a "redis://HOST[:PORT]" URL (port 6379 when absent); with host
 * and port not NULL, gives a malloc'd host and the port. Returns 0 or UV_EINVAL. */
SQ__HIDDEN int sq__hub_redis_parse(const char *url, char **host, int *port);

#endif
