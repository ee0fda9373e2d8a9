/* squall — the hub: chat rooms with a bounded history, served to subscribers of every
 * kind (WebSocket, Server-Sent Events, long polling, polling) from one place.
 *
 *     sq_hub_t *hub;
 *     sq_hub_create(&hub, NULL);                 // in memory; opts.redis_url: on Redis
 *     // on each loop that serves hub routes, on that loop's thread, before it serves:
 *     sq_hub_attach(hub, loop);
 *     // in a handler: publish, or hand the response to the hub
 *     sq_hub_publish(hub, sq_req_loop(req), "lobby", text, len, published, res);
 *     sq_hub_serve_poll(hub, req, res, "lobby", since, wait_ms);
 *
 * A room is created on first use; one that never got a message goes with its last
 * subscriber, one with messages when it has had no subscriber and no message for
 * opts.room_idle_ms. Each message gets an id one above the room's last; the room keeps
 * the last history_count messages (and no more than history_bytes of them), so a client
 * that comes back asks for what it missed ("since": the last id it saw). A message is the
 * JSON object {"id":N,"room":"R","text":"..."}, encoded once when it is published and
 * shared by every subscriber of the process (a WebSocket frame is made once per loop).
 *
 * One hub serves every loop of a process (sq_workers_run's workers): publishing from any
 * loop takes the hub's lock only to number and store the message and to queue it for the
 * loops that have subscribers in the room; each loop is woken (uv_async_t) and writes to
 * its own sockets with no lock held. Every subscriber gets each message of its room once,
 * in id order, whatever loop published it.
 *
 * With opts.redis_url the rooms live in Redis streams (one key per room): servers on
 * several machines share rooms, ids and history. The hub then runs one thread of its own
 * with its own loop for the Redis connections (hiredis' libuv adapter). While Redis is
 * away publishing fails (UV_ECONNREFUSED, ...: answer 503), subscribers stay connected,
 * and the hub reconnects; live delivery resumes after the last id each room had seen, so
 * nothing Redis acknowledged is lost. A room whose ids start again (Redis restarted
 * without its data, its stream deleted) has "started again": every subscriber of it ends
 * (SQ_ERESET; WebSocket 1012; a held poll [] with X-Hub-Reset: 1; an event stream ends)
 * so that its client starts again from the room's first id.
 *
 * Unless said otherwise a function is for the thread of the loop it is given (or of the
 * request's or the WebSocket's loop), and a callback runs on that thread, from the loop,
 * never inside the call that registered it.
 */
#ifndef SQUALL_HUB_H
#define SQUALL_HUB_H

#include "common.h"
#include "req.h"
#include "res.h"
#include "ws.h"

typedef struct sq_hub_s sq_hub_t;
typedef struct sq_hub_sub_s sq_hub_sub_t;
typedef struct sq_hub_msg_s sq_hub_msg_t;

/* `since` for "none of the history: only messages published from now on". */
#define SQ_HUB_SINCE_NOW UINT64_MAX

/* Options, filled with the defaults by sq_hub_opts_init (common.h, "Structs that grow").
 * A size or count of 0 means no limit unless said otherwise. */
typedef struct sq_hub_opts {
    size_t size;           /* sizeof the caller's struct: set by sq_hub_opts_init */
    size_t history_count;  /* messages a room gives back; 1000. 0: none. In memory, what
                              it keeps; in Redis, the stream keeps at least 100 entries
                              (XADD MAXLEN, the larger of this and 100) so the live read
                              never loses a burst, and histories give this many */
    size_t history_bytes;  /* bytes of encoded messages kept per room; 1 MiB (the
                              newest message is kept whatever its size). In Redis, the
                              bytes of texts a history read gives. 0: no limit */
    size_t max_text_bytes; /* text of one message; 64 KiB -> UV_EMSGSIZE */
    size_t max_room_bytes; /* a room's name; 128 -> UV_EINVAL */
    size_t max_rooms;      /* rooms at once (in memory; with Redis, rooms this process
                              watches); 10,000 -> UV_ENOSPC */
    uint64_t room_idle_ms; /* a room with no subscriber and no new message for this long
                              is freed, history and all (in memory; ids start again at 1,
                              see sq_hub_subscribe); 10 min. 0: never */
    /* Server-Sent Events (sq_hub_serve_events): */
    uint64_t sse_heartbeat_ms;   /* a comment line this often keeps proxies from closing
                                    an idle stream; 15 s. 0: none */
    size_t sse_max_queued_bytes; /* a stream whose reader lets more than this pile up
                                    is cut off (the server's idle timeout then drops the
                                    connection); 1 MiB */
    /* Long polling (sq_hub_serve_poll): */
    uint64_t max_wait_ms;        /* longest hold a request may ask for; 60 s (longer waits
                                    are cut to it) */
    const char *redis_url;       /* "redis://HOST:PORT" (copied); NULL: in memory */
    const char *redis_prefix;    /* key prefix of the rooms' streams, "squall:room:" (copied) */
    uint64_t redis_reconnect_ms; /* wait between attempts while Redis is away; 500 (0:
                                    1 ms) */
    uint64_t redis_timeout_ms;   /* connect and command timeout; 2 s. 0: none */
    size_t max_history_reads;    /* history reads out at once (each new subscriber makes one;
                                    with Redis they wait for Redis): past it a subscribe
                                    fails with UV_EAGAIN (answer 503); 1024. 0: no limit */
} sq_hub_opts_t;

/* What sq_hub_opts_init calls. Call sq_hub_opts_init. */
SQ_EXTERN void sq_hub_opts_init_sized(sq_hub_opts_t *opts, size_t size);
static inline void sq_hub_opts_init(sq_hub_opts_t *opts)
{
    sq_hub_opts_init_sized(opts, sizeof(*opts));
}

/* Creates a hub; `opts` is copied (NULL: defaults). Any thread. With opts->redis_url the
 * hub's thread starts and connects in the background: a Redis that is not there yet is
 * not an error (publishing fails until it is). Returns 0; UV_EINVAL for a NULL hub,
 * opts->size 0 or a redis_url that is not redis://HOST[:PORT]; UV_ENOTSUP for options
 * from a newer header; UV_ENOMEM; or libuv's error starting the thread. */
SQ_EXTERN int sq_hub_create(sq_hub_t **hub, const sq_hub_opts_t *opts);

/* Makes the hub serve `loop`: on that loop's thread, before the loop serves a hub call.
 * At most 64 loops per hub. Returns 0; UV_EEXIST (already attached); UV_ENOSPC (64
 * loops); UV_ENOMEM; or libuv's error from uv_async_init. */
SQ_EXTERN int sq_hub_attach(sq_hub_t *hub, uv_loop_t *loop);
/* Stops serving `loop`, on its thread: every subscriber there ends as when the hub is
 * going away (held polls answer [], event streams end, WebSockets get 1001, callback
 * subscribers get SQ_ECLOSED), messages not delivered yet are dropped, and publishes
 * still out are told SQ_ECLOSED — these run inside this call, the exception to the rule
 * at the top: the loop will not run them later. From then on every hub call on the loop
 * gets SQ_ECLOSED. Called from a hub callback, it takes effect when that delivery round
 * ends (still before the loop goes on). The loop's handles are closed: the loop must run
 * once more to finish closing them (as sq_workers_run does after the teardown callback).
 * A loop not attached (or detached already): nothing. */
SQ_EXTERN void sq_hub_detach(sq_hub_t *hub, uv_loop_t *loop);
/* Frees the hub once every loop was detached and has run: any thread. Stops the Redis
 * thread; publishes still in flight are dropped. */
SQ_EXTERN void sq_hub_destroy(sq_hub_t *hub);

/* A message, shared and counted; valid during the callback that hands it out. */
SQ_EXTERN uint64_t sq_hub_msg_id(const sq_hub_msg_t *msg);
/* The encoded JSON object and its length (not NUL-terminated). */
SQ_EXTERN const char *sq_hub_msg_json(const sq_hub_msg_t *msg, size_t *len);
/* The text as published (UTF-8; may hold NUL bytes) and its length. */
SQ_EXTERN const char *sq_hub_msg_text(const sq_hub_msg_t *msg, size_t *len);

/* ---- Publishing ---- */

/* The outcome of sq_hub_publish: status 0 and the message's id, or a negative status and
 * id 0: UV_ECONNREFUSED / UV_ECONNRESET / UV_ETIMEDOUT while Redis is away (answer 503),
 * SQ_ECLOSED when the loop was detached first. On `loop`'s thread, from the loop. */
typedef void (*sq_hub_publish_cb)(sq_hub_t *hub, int status, uint64_t id, void *data);

/* Publishes `text` (len bytes, UTF-8, copied) in `room` (NUL-terminated, copied): it gets
 * the room's next id and goes to every subscriber of the room. `cb` (may be NULL) is told
 * the id. Returns 0 (cb will run); UV_EINVAL for a room that is empty, too long or not
 * UTF-8, or text that is not UTF-8; UV_EMSGSIZE for a text past max_text_bytes;
 * UV_ENOSPC past max_rooms; SQ_ECLOSED for a loop not attached; UV_ENOMEM. On an error
 * nothing was published and cb does not run. */
SQ_EXTERN int sq_hub_publish(sq_hub_t *hub, uv_loop_t *loop, const char *room, const char *text,
                             size_t len, sq_hub_publish_cb cb, void *data);

/* ---- Subscribers the hub serves itself ---- */

/* Polling and long polling: answers `res` with a JSON array of the room's messages with
 * an id above `since` (0: the whole history), as application/json. With messages to give,
 * or wait_ms 0, it answers at once; otherwise it holds the request until a message
 * arrives (answered with it) or wait_ms passes (answered []). A client that fell behind
 * the history (messages above `since` are gone) gets what remains and the header
 * `X-Hub-Missed: N` (how many it lost). `since` above the room's last id (the room was
 * freed, or Redis restarted) is taken as 0 and answered with the header
 * `X-Hub-Reset: 1`; so is a poll held or being read when the room starts again on Redis
 * (answered [] at once: the client asks again with since 0). The hub takes res over whatever it returns: the route's .aborted
 * must be sq_hub_aborted (a client that leaves while held is forgotten at once).
 * Returns 0; or, having answered with the error itself: UV_EINVAL (a bad room: 422),
 * UV_ENOSPC (too many rooms: 503), UV_EAGAIN (max_history_reads reads out: 503),
 * SQ_ECLOSED (the loop is not attached: 503) or UV_ENOMEM (500). Redis's error while it
 * is away comes later, as a 503. */
SQ_EXTERN int sq_hub_serve_poll(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                                uint64_t since, uint64_t wait_ms);

/* Server-Sent Events: answers `res` with a text/event-stream whose head goes out at once;
 * then each message of the room above `since` (0: the whole history; SQ_HUB_SINCE_NOW:
 * only new ones) as `id: N` and `data: <the JSON object>` (WHATWG HTML §9.2), a comment
 * line every sse_heartbeat_ms, until the client leaves. A reader that lets more than
 * sse_max_queued_bytes pile up is cut off. The caller reads `since` from the request's
 * Last-Event-ID (sq_hub_since parses it). The hub takes res over; the route's .aborted
 * must be sq_hub_aborted. Returns as sq_hub_serve_poll; when the history cannot be read
 * (Redis away) the stream, whose head is out, ends at once (a browser's EventSource
 * tries again). When the room starts again on Redis the stream sends an empty `id`
 * field, which empties the EventSource's last event ID, and ends: the browser reconnects
 * with no Last-Event-ID and reads the new history from the start. */
SQ_EXTERN int sq_hub_serve_events(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                                  uint64_t since);

/* The .aborted callback of a route that hands its responses to the hub. The hub keeps
 * its subscriber in the request's data pointer (sq_req_set_data) of a response it was
 * given: on such a route, a handler that answers some requests itself must leave that
 * pointer NULL (then this does nothing), or call this only for the hub's responses. */
SQ_EXTERN void sq_hub_aborted(sq_req_t *req, sq_res_t *res, void *data);

/* WebSocket: sends each message of the room above `since` to `ws` as one text frame (the
 * JSON object) — one frame per message per loop, shared by every WebSocket of the room
 * there. A WebSocket past its max_queued_bytes gets its overflow policy (ws.h). Call
 * sq_hub_unsubscribe(*sub) from the WebSocket's .close. Returns 0 and *sub; UV_EINVAL,
 * UV_ENOSPC, SQ_ECLOSED, UV_ENOMEM as sq_hub_publish, or UV_EAGAIN (max_history_reads)
 * (nothing subscribed). If the history
 * cannot be read (Redis away) the WebSocket is closed with 1013 (try again later); when
 * the room starts again on Redis, with 1012 (service restart, reason "room restarted"):
 * the client subscribes again with since 0. */
SQ_EXTERN int sq_hub_subscribe_ws(sq_hub_t *hub, sq_ws_t *ws, const char *room, uint64_t since,
                                  sq_hub_sub_t **sub);

/* ---- Subscribers of one's own ---- */

/* A subscriber's news, on its loop's thread, from the loop:
 *   status 0, msg: the next message (msg valid during the call; `missed` is how many
 *     messages above `since` were gone from the history before it — nonzero at most once,
 *     with the first message);
 *   status 0, msg NULL: the history was read and the subscriber is live (once, after the
 *     history's messages; `missed` as above);
 *   status < 0: the subscriber ends and is freed after the call: SQ_ECLOSED (the loop was
 *     detached), Redis's error reading the history (UV_ECONNREFUSED, ...), or SQ_ERESET:
 *     the room started again on Redis (restarted without its data, its stream deleted:
 *     ids begin again at 1) — subscribe again with since 0. */
typedef void (*sq_hub_message_cb)(sq_hub_sub_t *sub, int status, const sq_hub_msg_t *msg,
                                  uint64_t missed, void *data);

/* Subscribes to `room` on `loop`: cb gets every message above `since` (0: the whole
 * history; SQ_HUB_SINCE_NOW: only messages published after this call), each once and in
 * id order, then "live", then each new message. `since` above the room's last id is taken
 * as 0 (the room started again). Returns 0 and *sub (may be NULL: the subscriber then
 * ends only with the loop); errors as sq_hub_publish, or UV_EAGAIN
 * (max_history_reads). */
SQ_EXTERN int sq_hub_subscribe(sq_hub_t *hub, uv_loop_t *loop, const char *room, uint64_t since,
                               sq_hub_message_cb cb, void *data, sq_hub_sub_t **sub);
/* Ends a subscriber: no callback runs for it after this. NULL: nothing. */
SQ_EXTERN void sq_hub_unsubscribe(sq_hub_sub_t *sub);

/* Reads a `since` value: decimal digits, at most 19, that fit in 63 bits. NULL or "": 0.
 * Returns 0 and *since, or UV_EINVAL (nothing set). */
SQ_EXTERN int sq_hub_since(const char *s, uint64_t *since);

/* Counters of the whole hub (every loop), a snapshot. Grows by squall's rule. */
typedef struct sq_hub_stats {
    size_t size;              /* bytes filled: set by sq_hub_stats */
    uint64_t rooms;           /* rooms now */
    uint64_t published;       /* messages published through this hub */
    uint64_t delivered;       /* messages handed to subscribers (one per subscriber) */
    uint64_t subscribers;     /* subscribers now, of every kind */
    uint64_t held_polls;      /* long polls held now */
    uint64_t dropped_slow;    /* subscribers cut off for not reading (SSE, WebSocket) */
    uint64_t missed;          /* polls and subscribers told they missed messages */
    uint64_t redis_errors;    /* failed Redis commands and lost connections */
    uint64_t redis_connected; /* 1 while connected to Redis */
} sq_hub_stats_t;

SQ_EXTERN void sq_hub_stats_sized(sq_hub_t *hub, sq_hub_stats_t *out, size_t size);
static inline void sq_hub_stats(sq_hub_t *hub, sq_hub_stats_t *out)
{
    sq_hub_stats_sized(hub, out, sizeof(*out));
}

#endif
