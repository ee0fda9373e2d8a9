/* squall — TLS contexts (OpenSSL) for the server (https://, wss://).
 *
 *     sq_tls_ctx_t *tls;
 *     int rc = sq_tls_ctx_server(&tls, "cert.pem", "key.pem");
 *     if (rc != 0) { fprintf(stderr, "tls: %s\n", sq_strerror(rc)); exit(1); }
 *     sq_server_opts_t opts;
 *     sq_server_opts_init(&opts);
 *     opts.tls = tls;                      // the server takes its own reference
 *     sq_server_create(&srv, loop, app, &opts);
 *     sq_tls_ctx_free(tls);                // ours; the server keeps its own
 *
 * A server with opts.tls speaks TLS on every listener: TLS 1.2 and 1.3, ALPN
 * `http/1.1` (RFC 7301; a client offering only other protocols gets none, and goes on
 * with HTTP/1.1 if it will), SNI (RFC 6066 §3) through opts.tls_sni. Everything above
 * the connection — HTTP/1, WebSocket, streaming, hooks — is the same as in plaintext.
 * The clients (client.h: https://, ws.h: wss://) make their own contexts from their
 * options: the system's CA store, the peer's certificate and host name checked.
 *
 * A context is OpenSSL's SSL_CTX, reference-counted by OpenSSL: a context may be shared
 * by servers on several loops (worker threads), each holding a reference.
 */
#ifndef SQUALL_TLS_H
#define SQUALL_TLS_H

#include "common.h"

typedef struct sq_tls_ctx_s sq_tls_ctx_t;

/* A server context from PEM files: `cert_file` holds the certificate followed by its
 * chain (intermediates, leaf first), `key_file` its private key (unencrypted). Sessions
 * resume with tickets; the minimum protocol is TLS 1.2 with OpenSSL's default ciphers.
 * Returns 0 and *out (release it with sq_tls_ctx_free); UV_EINVAL for a NULL argument;
 * UV_ENOENT / UV_EACCES (the file's open error) when a file cannot be read;
 * SQ_ETLSCONF when a file holds no usable certificate or key, or the key is not the
 * certificate's (the reason is logged at SQ_LOG_INFO); UV_ENOMEM. */
SQ_EXTERN int sq_tls_ctx_server(sq_tls_ctx_t **out, const char *cert_file,
                                const char *key_file);

/* Drops the caller's reference (servers using the context hold their own). NULL: no-op. */
SQ_EXTERN void sq_tls_ctx_free(sq_tls_ctx_t *ctx);

/* OpenSSL's SSL_CTX * of the context (borrowed), to tune it before a server uses it:
 * ciphers, curves, protocol versions, client certificates. */
SQ_EXTERN void *sq_tls_ctx_ssl_ctx(sq_tls_ctx_t *ctx);

#endif
