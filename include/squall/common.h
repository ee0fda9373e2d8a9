/* squall — shared definitions for every public header. */
#ifndef SQUALL_COMMON_H
#define SQUALL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#if defined(__GNUC__)
#define SQ_EXTERN __attribute__((visibility("default")))
#else
#define SQ_EXTERN
#endif

/* ---- Structs that grow: squall's one rule for its ABI ----
 *
 * A struct that the caller allocates and squall reads or fills — the options
 * (sq_server_opts_t, sq_ws_opts_t, sq_work_pool_opts_t, sq_watchdog_opts_t), the counters
 * (sq_server_stats_t, sq_work_pool_stats_t, sq_watchdog_stats_t), a watchdog span, and the
 * handler tables (sq_handler_t, sq_ws_handler_t) — may gain fields in a later release
 * without breaking a program compiled against an older header. squall is always told how
 * big the caller's struct is, as the caller's header declared it:
 *
 * - Options, counters and spans start with `size_t size`. The call that fills one
 *   (sq_*_opts_init, sq_*_stats, sq_watchdog_span_begin) is a static inline function of
 *   the header that passes sizeof the caller's struct to the exported `*_sized` function;
 *   that function sets `size`. Options then carry their size to the call that reads them
 *   (sq_server_create, sq_app_websocket, ...). A struct filled by hand must set
 *   `.size = sizeof(the type)` itself (fields it leaves out are then 0, not the defaults);
 *   a size of 0 — a struct never initialised — is refused with UV_EINVAL.
 * - Handler tables have no size member (they are written as `static const` tables):
 *   the calls that take one (sq_app_route, sq_app_websocket, sq_ws_connect) are static
 *   inline functions passing sizeof the table, and squall copies it.
 *
 * squall reads and writes only the bytes that fit in the caller's size. A field that lies
 * past them — the struct came from an older header — takes its default (what *_init
 * sets; NULL for a handler callback); a counter past them is not written. A struct bigger
 * than the library knows (a newer header, run with an older library) is accepted when
 * every byte the library does not know is zero (the fields left at the defaults that
 * library's *_init gave them), and refused with UV_ENOTSUP otherwise: it asks for
 * something this library cannot do. Counters bigger than the library knows get the
 * unknown bytes zeroed, and `size` says how much was filled.
 *
 * Fields are only ever added at the end of a struct, past the previous release's
 * sizeof, so every older layout is a prefix of the newer one. Nothing else about these
 * structs changes without a new SQ_VERSION_ABI (version.h).
 */

/* ---- Callbacks ----
 *
 * Every callback type says on which thread it runs: the loop thread of the object it
 * belongs to (the server's, the WebSocket's, the queue's, ...), or, for a blocking
 * handler and a work function, a thread of libuv's pool. squall's rule is that a callback
 * runs later, from the loop, never from inside the squall call that registered or caused
 * it, so a caller never finds its own state changed under it; where a callback is an
 * exception, its type says so: a free callback; a promise's cancel hook; a watchdog
 * report from sq_watchdog_span_end; .close of a WebSocket client cancelled while
 * connecting; and a write's completion (sq_res_write_cb), run with UV_ECANCELED inside a
 * squall call that closes the connection (sq_server_destroy, a write out of memory).
 */

/* Called with a pointer squall is done with: a zero-copy body (sq_res_send_ref), a queue's
 * items (sq_queue_create). Runs once, on the loop thread of the object it was given to;
 * each call that takes one says when. Freeing is not an event, so it may run inside a
 * squall call: the one given the pointer when that call does not keep it, or one that
 * closes the connection or destroys the queue holding it. */
typedef void (*sq_free_cb)(void *ptr, void *data);

#endif
