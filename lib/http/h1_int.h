/* squall — HTTP/1 on a connection, and the exchange: private prototypes shared by
 * lib/http/ (h1_conn.c, h1_parse.c, exchange.c) and the transport that feeds them. */
#ifndef SQUALL_H1_INT_H
#define SQUALL_H1_INT_H

#include "server/server_int.h"

/* lib/http/h1_parse.c: llhttp's callbacks for requests. */
SQ__HIDDEN extern const llhttp_settings_t sq__h1_settings;
/* Adds the line endings of p..end to x->gap (the strict line-ending checks). */
SQ__HIDDEN void sq__h1_gap_scan(sq__exch_t *x, const char *p, const char *end,
                                bool to_blank_line);

/* lib/http/h1_conn.c */
/* What the transport read (nread < 0: EOF or an error) while HTTP/1 owns the connection. */
SQ__HIDDEN void sq__h1_on_read(sq__conn_t *c, const char *data, ssize_t nread);
SQ__HIDDEN void sq__h1_on_eof(sq__conn_t *c, ssize_t err);
/* Parses `len` bytes through the connection's current exchange. */
SQ__HIDDEN void sq__h1_process(sq__conn_t *c, const char *data, size_t len);
/* Answers a request that could not be parsed (or timed out) and closes afterwards. */
SQ__HIDDEN void sq__h1_respond_error(sq__conn_t *c, int status, const char *detail);
/* The current response is finished and queued: true when parsing goes on. */
SQ__HIDDEN bool sq__h1_response_done(sq__conn_t *c);
/* Pauses parsing while queued answers exceed max_pipeline_bytes; true when it paused. */
SQ__HIDDEN bool sq__h1_drain_pause(sq__conn_t *c);
/* Between requests with nothing buffered, gives the exchange and write state back. */
SQ__HIDDEN void sq__h1_idle_release(sq__conn_t *c);
/* The connection's deferred work, run from the server's tick. */
SQ__HIDDEN void sq__h1_tick(sq__conn_t *c);
/* Runs the matched handler (or answers 404/405/422/OPTIONS *). */
SQ__HIDDEN void sq__h1_dispatch(sq__conn_t *c, sq__exch_t *x);

/* lib/http/exchange.c */
/* A fresh exchange for the connection, from the pool or new; NULL when out of memory. */
SQ__HIDDEN sq__exch_t *sq__exch_get(sq__conn_t *c);
/* Tells each handler whose client went since the last tick, unless it finished first. */
SQ__HIDDEN void sq__exch_deliver_aborts(sq_server_t *srv);
/* Frees the exchanges pooled for reuse (the server is going). */
SQ__HIDDEN void sq__exch_pool_free(sq_server_t *srv);

#endif
