/* squall — TLS with OpenSSL over memory BIOs, sans I/O: what the network gave is fed
 * in, plaintext comes out, and what must be sent is taken out as ciphertext. The
 * server's transport (lib/server/tls.c), the HTTP client (lib/client/conn.c) and the
 * WebSocket client (lib/ws/ws_client.c) move those bytes over their own libuv streams. */
#ifndef SQUALL_TLS_INT_H
#define SQUALL_TLS_INT_H

#include <openssl/ssl.h>

#include "internal.h"
#include "squall/tls.h"

/* One TLS session. */
typedef struct sq__tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext read from the network, for OpenSSL (owned by ssl) */
    BIO *wbio; /* ciphertext OpenSSL wrote, for the network (owned by ssl) */
    bool done; /* the handshake completed */
} sq__tls_t;

static inline SSL_CTX *sq__tls_ctx(sq_tls_ctx_t *ctx)
{
    return (SSL_CTX *)ctx;
}

/* A server session on ctx; `app` is what SSL_get_app_data gives back (the SNI and ALPN
 * callbacks find their connection with it). 0 or UV_ENOMEM (nothing to free then). */
SQ__HIDDEN int sq__tls_server(sq__tls_t *t, SSL_CTX *ctx, void *app);
/* A client session on ctx for `host` (a DNS name or an IP literal): SNI is sent for a
 * name (RFC 6066 §3: never for an address), and, with `verify`, the certificate must
 * name the host (RFC 6125; an IP literal must be in its subjectAltName). */
SQ__HIDDEN int sq__tls_client(sq__tls_t *t, SSL_CTX *ctx, const char *host, bool verify);
SQ__HIDDEN void sq__tls_free(sq__tls_t *t);

/* Ciphertext from the network. 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__tls_feed(sq__tls_t *t, const void *data, size_t len);
/* Drives the handshake with what was fed: 1 done, 0 more bytes are needed (take_out
 * what is to be sent, either way), or SQ_ETLS, SQ_ECERT, SQ_ECERTNAME (a client's
 * check of the server's certificate). */
SQ__HIDDEN int sq__tls_handshake(sq__tls_t *t);
/* Plaintext into buf: > 0 bytes; 0 when more ciphertext is needed; UV_EOF when the peer
 * closed TLS (close_notify); SQ_ETLS for a broken record. */
SQ__HIDDEN ssize_t sq__tls_read(sq__tls_t *t, char *buf, size_t cap);
/* Encrypts len bytes, all of them (take_out the result). 0, SQ_ETLS or UV_ENOMEM. */
SQ__HIDDEN int sq__tls_write(sq__tls_t *t, const void *data, size_t len);
/* A close_notify alert (RFC 8446 §6.1), once the handshake is done. */
SQ__HIDDEN void sq__tls_close_notify(sq__tls_t *t);
/* Ciphertext waiting to be sent. */
static inline size_t sq__tls_out_len(const sq__tls_t *t)
{
    return BIO_ctrl_pending(t->wbio);
}
/* Moves up to n bytes of the ciphertext waiting to be sent into dst; how many. */
SQ__HIDDEN size_t sq__tls_out_read(sq__tls_t *t, void *dst, size_t n);
/* Moves the ciphertext waiting to be sent to the end of out. 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__tls_take_out(sq__tls_t *t, sq__buf_t *out);
/* OpenSSL's reason for the last failure on this thread (its error queue, then cleared),
 * for a log line. */
SQ__HIDDEN const char *sq__tls_reason(sq__tls_t *t, char *buf, size_t len);

/* A client context: TLS 1.2 at least, ALPN http/1.1; with `verify`, the system's CA
 * store (SSL_CTX_set_default_verify_paths) and `ca_file` (PEM, may be NULL) are trusted
 * and the peer must present a valid chain. NULL and *err set (SQ_ETLSCONF for a CA file
 * that cannot be loaded, UV_ENOMEM). */
SQ__HIDDEN SSL_CTX *sq__tls_client_ctx(const char *ca_file, bool verify, int *err);

#endif
