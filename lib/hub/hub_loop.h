/* The hub on one loop: its inbox, its rooms' subscribers, its timer (hub_sub.c). */
#ifndef SQUALL_HUB_LOOP_H
#define SQUALL_HUB_LOOP_H

#include "hub/hub_int.h"

typedef struct sq__hub_lroom sq__hub_lroom_t;

/* A publish whose caller is still to be told (its op may be on another thread). */
typedef struct sq__hub_ticket {
    struct sq__hub_ticket *prev, *next;
    sq_hub_publish_cb cb;
    void *data;
} sq__hub_ticket_t;

/* What a subscriber is, and where it is in its life. */
typedef enum { SQ__SUB_CB, SQ__SUB_WS, SQ__SUB_SSE, SQ__SUB_POLL } sq__sub_kind_t;
typedef enum {
    SQ__SUB_HISTORY, /* waiting for its history: live messages are kept in `pend` */
    SQ__SUB_LIVE,
    SQ__SUB_DONE, /* ended; freed when nobody holds it (flags below) */
} sq__sub_state_t;

enum {
    SQ__SUBF_OP = 1,    /* its history op is out: the op points at it */
    SQ__SUBF_USER = 2,  /* the caller holds it (a WebSocket's, until sq_hub_unsubscribe) */
    SQ__SUBF_HELD = 4,  /* in the loop's held list (a long poll) */
    SQ__SUBF_SSE = 8,   /* in the loop's event-stream list */
    SQ__SUBF_BUSY = 16, /* a delivery to it is running: not freed under it */
    SQ__SUBF_LIMBO = 32, /* ended, its history op still out: in the loop's limbo list */
};

struct sq_hub_sub_s {
    sq__hub_loop_t *hl;
    sq__hub_lroom_t *lr;
    sq_hub_sub_t *prev, *next;   /* the room's subscribers on this loop */
    sq_hub_sub_t *tprev, *tnext; /* the held list (by deadline) or the stream list */
    uint8_t kind, state, flags;
    uint8_t reset;       /* the history said since was past the room's end */
    uint64_t since;      /* as asked (SQ_HUB_SINCE_NOW: none) */
    uint64_t last_id;    /* delivered up to */
    uint64_t missed;     /* from the history, told with the first message */
    uint64_t deadline;   /* a long poll's, uv_now() ms */
    sq__hub_op_t *op;    /* its history op, while SQ__SUBF_OP */
    sq_hub_msg_t **pend; /* live messages that came before the history */
    uint32_t npend, pend_cap;
    union {
        struct {
            sq_hub_message_cb cb;
            void *data;
        } cb;
        sq_ws_t *ws;
        sq_res_t *res;
    } u;
};

/* A room's subscribers on one loop. */
struct sq__hub_lroom {
    sq__hub_lroom_t *next; /* hash chain */
    uint64_t hash;
    sq_hub_sub_t *head, *tail;
    size_t nsubs;
    unsigned walking; /* > 0 while a delivery walks the list: ended subs stay linked */
    unsigned ndead;   /* ended subs still linked */
    size_t name_len;
    char name[];
};

struct sq__hub_loop {
    sq_hub_t *hub;
    uv_loop_t *loop;
    unsigned index;
    uv_mutex_t mu; /* the inbox, `detached` */
    sq__hub_op_t *in_head, *in_tail;
    bool detached; /* ops answered from now on are dropped */
    uv_async_t async;
    uv_timer_t timer; /* held polls' deadlines, event streams' heartbeats */
    unsigned open_handles;
    /* the loop thread's */
    bool closing;              /* sq_hub_detach began: the loop takes no new call */
    bool in_async;             /* on_async is delivering: a detach waits for its end */
    bool detach_due;           /* sq_hub_detach was called from a delivery */
    sq__hub_ticket_t *tickets; /* publishes not told yet */
    sq__hub_lroom_t **lrooms;
    size_t lrooms_cap, nlrooms;
    sq_hub_sub_t *held_head, *held_tail; /* long polls by deadline */
    sq_hub_sub_t *sse_head;              /* event streams */
    uint64_t next_beat;                  /* uv_now() of the next heartbeat */
    sq_hub_sub_t *limbo; /* ended subscribers whose history op is still out (the op points
                            at them): freed when it comes back, or with the hub */
    sq__hub_loop_t *next_detached;
};

/* hub_sub.c: a subscriber's life and delivery */
SQ__HIDDEN sq_hub_sub_t *sq__hub_sub_new(sq__hub_loop_t *hl, sq__sub_kind_t kind);
/* Registers sub in `room` (interest first, then the history op). Returns 0, or an error
 * with sub untouched (the caller frees it). */
SQ__HIDDEN int sq__hub_sub_start(sq_hub_sub_t *sub, const char *room, size_t len, uint64_t since);
/* Ends a subscriber: it gets nothing more. Freed now or when the last holder lets go. */
SQ__HIDDEN void sq__hub_sub_end(sq_hub_sub_t *sub);
SQ__HIDDEN void sq__hub_sub_maybe_free(sq_hub_sub_t *sub);
/* The history could not be read: the subscriber ends, told as its kind is. */
SQ__HIDDEN void sq__hub_sub_fail(sq_hub_sub_t *sub, int status);
/* Unlinks the subscribers that ended while a delivery walked the room (may drop it). */
SQ__HIDDEN void sq__hub_lroom_sweep(sq__hub_lroom_t *lr);
/* One message to one subscriber; `frame`: the WebSocket frame shared on this loop. */
SQ__HIDDEN void sq__hub_deliver(sq_hub_sub_t *sub, sq_hub_msg_t *m, sq_ws_frame_t **frame);
SQ__HIDDEN void sq__hub_history_arrived(sq__hub_op_t *op);
SQ__HIDDEN void sq__hub_message_arrived(sq__hub_loop_t *hl, sq_hub_msg_t *m);
/* The room started again: its subscribers on this loop end (but `spare`), each told as
 * its kind is (sq_hub_message_cb's SQ_ERESET, WebSocket 1012, ...). */
SQ__HIDDEN void sq__hub_reset_arrived(sq__hub_loop_t *hl, const char *room, size_t len,
                                      const sq_hub_sub_t *spare);
/* A free callback that drops a message's reference (data). */
SQ__HIDDEN void sq__hub_msg_free_cb(void *ptr, void *data);

/* hub_serve.c: polls and event streams */
SQ__HIDDEN void sq__hub_poll_answer(sq_hub_sub_t *sub, sq_hub_msg_t *const *msgs, size_t n);
SQ__HIDDEN void sq__hub_held_insert(sq_hub_sub_t *sub);
SQ__HIDDEN void sq__hub_sse_send(sq_hub_sub_t *sub, sq_hub_msg_t *m);
SQ__HIDDEN void sq__hub_sse_cut(sq_hub_sub_t *sub);
SQ__HIDDEN void sq__hub_timer_arm(sq__hub_loop_t *hl);
SQ__HIDDEN void sq__hub_on_timer(uv_timer_t *t);

/* hub_loop.c */
/* Ends a subscriber because its loop is let go. */
SQ__HIDDEN void sq__hub_sub_close(sq_hub_sub_t *sub);

/* A publish's ticket on hl (cb not NULL), or NULL out of memory. */
SQ__HIDDEN sq__hub_ticket_t *sq__hub_ticket_new(sq__hub_loop_t *hl, sq_hub_publish_cb cb,
                                                void *data);
SQ__HIDDEN void sq__hub_ticket_drop(sq__hub_loop_t *hl, sq__hub_ticket_t *t);

/* The hub's part on `loop`, or NULL (not attached, or being detached). Any thread. */
SQ__HIDDEN sq__hub_loop_t *sq__hub_loop_find(sq_hub_t *hub, const uv_loop_t *loop);
/* Frees the detached loops' parts (sq_hub_destroy). */
SQ__HIDDEN void sq__hub_loops_free(sq_hub_t *hub);
/* Checks a room's name (non-empty, within max_room_bytes, UTF-8); its length in *len. */
SQ__HIDDEN int sq__hub_room_check(const sq_hub_t *hub, const char *room, size_t *len);

#endif
