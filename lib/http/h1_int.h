/* squall — HTTP/1 on a connection, and the exchange: private prototypes shared by
 * lib/http/ (h1_conn.c, h1_parse.c, exchange.c) and the transport that feeds them. */
#ifndef SQUALL_H1_INT_H
#define SQUALL_H1_INT_H

#include "server/server_int.h"

/* What an exchange needs of the protocol that owns it: where the serializer
 * (response.c) writes, and whom exchange.c tells when the response is finished. The
 * serializer and the exchange call nothing else of the connection. */
typedef struct sq__exch_ops {
    /* The batch to append the response's bytes to; NULL when out of memory. */
    sq__wbatch_t *(*batch)(sq__exch_t *x);
    /* Appended bytes should leave (at the end of the read, or on the tick). */
    void (*flush)(sq__exch_t *x);
    /* true while the client can still be answered. */
    bool (*open)(const sq__exch_t *x);
    /* true when the connection ends after this response (Connection: close). */
    bool (*last)(const sq__exch_t *x);
    /* The response goes out whole, then the connection closes. */
    void (*close_after)(sq__exch_t *x);
    /* The bytes could not be queued: the connection closes now. */
    void (*fail)(sq__exch_t *x);
    /* Bytes queued and not yet handed to the kernel. */
    size_t (*queued)(const sq__exch_t *x);
    /* The handler finished the response (called once, by sq__exch_finished). */
    void (*finished)(sq__exch_t *x);
} sq__exch_ops_t;

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
/* A fresh exchange owned through `ops` by connection c, from the pool or new; NULL when
 * out of memory. The connection holds the first reference (SQ__XF_HOLD_CONN). */
SQ__HIDDEN sq__exch_t *sq__exch_get(sq_server_t *srv, const sq__exch_ops_t *ops,
                                    sq__conn_t *c);
/* The owner lets go: a handler still owning the response is told .aborted on the next
 * tick, and a blocking job is cancelled. */
SQ__HIDDEN void sq__exch_abort(sq__exch_t *x);
/* Tells each handler whose client went since the last tick, unless it finished first. */
SQ__HIDDEN bool sq__exch_deliver_aborts(sq_server_t *srv);
/* lib/http/h1_conn.c: a fresh exchange for the connection's next request. */
SQ__HIDDEN sq__exch_t *sq__h1_new_exch(sq__conn_t *c);
/* Frees the exchanges pooled for reuse (the server is going). */
SQ__HIDDEN void sq__exch_pool_free(sq_server_t *srv);

#endif
