/* The HTTP server: its options, and sq_server_create, which sets a transport up
 * (lib/server/server.c) with HTTP/1 as every connection's first protocol. */
#include <stdlib.h>

#include "core/abi.h"
#include "http/h1_int.h"
#include "server/server_int.h"

/* What HTTP keeps per server, freed with it (the transport's on_free hook). */
static void server_free(sq_server_t *srv)
{
    sq__exch_pool_free(srv);
    sq__buf_free(&sq__hs(srv)->scratch);
}

/* The first listener is up: the watchdog starts measuring (what held the loop before, a
 * slow set-up or a host name lookup, is no stall). */
static void server_listening(sq_server_t *srv)
{
    if (sq__hs(srv)->wd != NULL)
        sq_watchdog_start(sq__hs(srv)->wd);
}

static void on_watchdog_closed(sq_watchdog_t *wd, void *data)
{
    sq__server_part_closed(data);
}

static void on_pool_closed(sq_work_pool_t *pool, void *data)
{
    sq__server_part_closed(data);
}

/* The server is closing (its last connection, listener and exchange are gone): the
 * watchdog and its own work pool close too; the transport waits for both. */
static unsigned server_closing(sq_server_t *srv)
{
    sq__httpsrv_t *hs = sq__hs(srv);
    unsigned n = 0;
    if (hs->wd != NULL) {
        n++;
        sq_watchdog_destroy(hs->wd, on_watchdog_closed, srv);
        hs->wd = NULL;
    }
    if (hs->own_pool) {
        n++;
        sq_work_pool_destroy(hs->pool, on_pool_closed, srv);
        hs->pool = NULL;
    }
    return n;
}

sq_watchdog_t *sq_server_watchdog(const sq_server_t *srv)
{
    return sq__hs(srv)->wd;
}

static void server_opts_defaults(sq_server_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->max_header_bytes = 16 * 1024;
    o->max_headers = 100;
    o->max_uri_bytes = 8 * 1024;
    o->max_body_bytes = 1024 * 1024;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 30000;
    o->idle_timeout_ms = 5000;
    o->max_connections = 16384;
    o->max_pipeline_bytes = 64 * 1024;
    o->backlog = 511;
    o->reuseport = 0;
    o->server_name = "squall";
    o->tls_handshake_timeout_ms = 10000;
}

void sq_server_opts_init_sized(sq_server_opts_t *opts, size_t size)
{
    sq_server_opts_t d;
    server_opts_defaults(&d);
    SQ__OPTS_INIT(opts, size, &d);
}

int sq_server_create(sq_server_t **out, uv_loop_t *loop, sq_app_t *app,
                     const sq_server_opts_t *opts)
{
    if (out == NULL || loop == NULL || app == NULL)
        return UV_EINVAL;
    sq_server_opts_t o;
    server_opts_defaults(&o);
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts); /* only what the caller's header has */
        if (rc != 0)
            return rc;
    }
    sq__httpsrv_t *hs = calloc(1, sizeof(*hs));
    if (hs == NULL)
        return UV_ENOMEM;
    sq_server_t *srv = &hs->base;
    srv->loop = loop;
    hs->app = app;
    srv->opts = o;
    if (srv->opts.max_pipeline_bytes == 0)
        srv->opts.max_pipeline_bytes = 64 * 1024;
    if (srv->opts.server_name != NULL) {
        int n = snprintf(hs->server_line, sizeof(hs->server_line), "Server: %s\r\n",
                         srv->opts.server_name);
        if (n < 0 || (size_t)n >= sizeof(hs->server_line) ||
            strpbrk(srv->opts.server_name, "\r\n") != NULL) {
            free(hs);
            return UV_EINVAL;
        }
        hs->server_line_len = (size_t)n;
    }
    srv->opts.server_name = NULL; /* not kept: the caller's string may go */
    if (srv->opts.request_id_header != NULL) {
        const char *name = srv->opts.request_id_header;
        size_t n = strlen(name);
        if (n == 0 || n > 48 || sq__field_len(name, SQ__CH_TCHAR) != n) {
            free(hs);
            return UV_EINVAL;
        }
        memcpy(hs->rid_name, name, n);
        memcpy(hs->rid_name + n, ": ", 2);
        hs->rid_name_len = n + 2;
    }
    srv->opts.request_id_header = NULL; /* not kept either */
    sq__list_init(&hs->aborts);
    if (srv->opts.slow_callback_ms > 0) {
        sq_watchdog_opts_t wo;
        sq_watchdog_opts_init(&wo);
        wo.slow_ms = srv->opts.slow_callback_ms;
        int rc = sq_watchdog_create(&hs->wd, loop, &wo);
        if (rc != 0) {
            free(hs);
            return rc;
        }
        sq_watchdog_stop(hs->wd); /* until the first listen: see listening() */
    }
    if (sq__server_init(srv) != 0) { /* before it fails, it has set up no handle */
        if (hs->wd != NULL)
            sq_watchdog_destroy(hs->wd, NULL, NULL); /* frees itself; srv is not its */
        free(hs);
        return UV_ENOMEM;
    }
    hs->pool = srv->opts.blocking_pool;
    /* HTTP/1 keeps its state in it; a TLS server's follows (lib/server/tls.c) */
    srv->conn_size = sizeof(sq__conn_t) + (srv->tls_ctx != NULL ? sq__tlsconn_size : 0);
    srv->proto0 = &sq__h1_proto;
    srv->on_tick = sq__exch_deliver_aborts;
    srv->on_free = server_free;
    srv->on_listen = server_listening;
    srv->on_closing = server_closing;
    *out = srv;
    return 0;
}

