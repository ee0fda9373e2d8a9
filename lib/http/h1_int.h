/* squall — HTTP/1 on a connection, and the exchange: private prototypes shared by
 * lib/http/ (h1_conn.c, h1_parse.c, exchange.c) and the transport that feeds them. */
#ifndef SQUALL_H1_INT_H
#define SQUALL_H1_INT_H

#include "server/server_int.h"

/* HTTP/1's state of a connection (the transport keeps its own). */
enum {
    SQ__H1_IDLE,    /* between requests (idle queue) */
    SQ__H1_HEAD,    /* reading a request's headers (header queue) */
    SQ__H1_BODY,    /* reading a request body (body queue) */
    SQ__H1_HANDLER, /* the request is complete; a handler owns the response */
    SQ__H1_TAKEN,   /* taken over by another protocol (WebSocket) */
};

enum {
    SQ__HF_PAUSED = 1 << 0, /* parser paused while a response is outstanding */
    SQ__HF_DRAIN = 1 << 1,  /* parser paused until queued answers drain (back-pressure) */
};

/* A connection while it speaks HTTP/1: the transport's part first, then HTTP/1's. The
 * server allocates this much for every connection (srv->conn_size). */
typedef struct sq__h1conn {
    sq__conn_t conn;
    struct sq_req_s *exch; /* the request being read or answered */
    uint8_t state;         /* SQ__H1_* */
    uint8_t flags;         /* SQ__HF_* */
} sq__h1conn_t;

static inline sq__h1conn_t *sq__h1(sq__conn_t *c)
{
    return (sq__h1conn_t *)c;
}

/* HTTP/1 as a connection's protocol (h1_conn.c). */
SQ__HIDDEN extern const sq__proto_t sq__h1_proto;

/* lib/http/h1_parse.c: llhttp's callbacks for requests. */
SQ__HIDDEN extern const llhttp_settings_t sq__h1_settings;
/* Adds the line endings of p..end to x->gap (the strict line-ending checks). */
SQ__HIDDEN void sq__h1_gap_scan(sq__exch_t *x, const char *p, const char *end,
                                bool to_blank_line);

/* lib/http/h1_conn.c */
/* Parses `len` bytes through the connection's current exchange. */
SQ__HIDDEN void sq__h1_process(sq__conn_t *c, const char *data, size_t len);
/* The current response is finished and queued: true when parsing goes on. */
SQ__HIDDEN bool sq__h1_response_done(sq__conn_t *c);
/* Pauses parsing while queued answers exceed max_pipeline_bytes; true when it paused. */
SQ__HIDDEN bool sq__h1_drain_pause(sq__conn_t *c);
/* Runs the matched handler (or answers 404/405/422/OPTIONS *). */
SQ__HIDDEN void sq__h1_dispatch(sq__conn_t *c, sq__exch_t *x);

/* lib/http/exchange.c */
/* A fresh exchange for the connection, from the pool or new; NULL when out of memory. */
SQ__HIDDEN sq__exch_t *sq__exch_get(sq__conn_t *c);
/* Tells each handler whose client went since the last tick, unless it finished first. */
SQ__HIDDEN bool sq__exch_deliver_aborts(sq_server_t *srv);
/* The connection lets go of its exchange; a handler still owning it is told. */
SQ__HIDDEN void sq__conn_abort_exch(sq__conn_t *conn);
/* Frees the exchanges pooled for reuse (the server is going). */
SQ__HIDDEN void sq__exch_pool_free(sq_server_t *srv);

#endif
