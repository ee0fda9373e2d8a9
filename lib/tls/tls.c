/* TLS with OpenSSL over memory BIOs (tls_int.h): contexts for the server and the
 * clients, and the sans-I/O session the three transports drive. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>

#include "tls/tls_int.h"

/* ---- contexts ---- */

static const unsigned char alpn_http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

/* RFC 7301 §3.2: http/1.1 when the client offers it. A client offering only others
 * (h2 alone) gets no ALPN answer rather than a fatal alert: HTTP/1.1 is all there is,
 * and the client may still speak it. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Whether path can be opened for reading: 0 or the open error, so a missing file is
 * UV_ENOENT rather than OpenSSL's "system lib". */
static int file_readable(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return uv_translate_sys_error(errno);
    fclose(f);
    return 0;
}

static int conf_error(SSL_CTX *ctx, const char *what, const char *path)
{
    char reason[256] = "unknown";
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    sq_log(SQ_LOG_INFO, "tls: %s %s: %s", what, path, reason);
    SSL_CTX_free(ctx);
    return SQ_ETLSCONF;
}

int sq_tls_ctx_server(sq_tls_ctx_t **out, const char *cert_file, const char *key_file)
{
    if (out == NULL || cert_file == NULL || key_file == NULL)
        return UV_EINVAL;
    int rc = file_readable(cert_file);
    if (rc == 0)
        rc = file_readable(key_file);
    if (rc != 0)
        return rc;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return UV_ENOMEM;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation asked by a client costs the server a handshake at the client's
     * will (CVE-2011-1473): refused */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* an idle connection keeps none */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        return conf_error(ctx, "certificate", cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return conf_error(ctx, "key", key_file);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return conf_error(ctx, "key does not match the certificate:", key_file);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    *out = (sq_tls_ctx_t *)ctx;
    return 0;
}

void sq_tls_ctx_free(sq_tls_ctx_t *ctx)
{
    SSL_CTX_free(sq__tls_ctx(ctx)); /* NULL: nothing */
}

void *sq_tls_ctx_ssl_ctx(sq_tls_ctx_t *ctx)
{
    return sq__tls_ctx(ctx);
}

SSL_CTX *sq__tls_client_ctx(const char *ca_file, bool verify, int *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof(alpn_http11));
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_set_default_verify_paths(ctx) != 1)
            ERR_clear_error(); /* no system store: only ca_file is trusted then */
        if (ca_file != NULL && (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)) {
            *err = conf_error(ctx, "CA file", ca_file);
            return NULL;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

/* ---- a session ---- */

static int session_init(sq__tls_t *t, SSL_CTX *ctx)
{
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        memset(t, 0, sizeof(*t));
        ERR_clear_error();
        return UV_ENOMEM;
    }
    BIO_set_mem_eof_return(t->rbio, -1); /* empty: "retry", not the end */
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* ssl owns both from here */
    return 0;
}

int sq__tls_server(sq__tls_t *t, SSL_CTX *ctx, void *app)
{
    int rc = session_init(t, ctx);
    if (rc != 0)
        return rc;
    SSL_set_app_data(t->ssl, app);
    SSL_set_accept_state(t->ssl);
    return 0;
}

int sq__tls_client(sq__tls_t *t, SSL_CTX *ctx, const char *host, bool verify)
{
    int rc = session_init(t, ctx);
    if (rc != 0)
        return rc;
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    int ok = 1;
    if (!is_ip)
        ok = SSL_set_tlsext_host_name(t->ssl, host);
    if (ok == 1 && verify) {
        if (is_ip)
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
        else
            ok = SSL_set1_host(t->ssl, host);
    }
    if (ok != 1) {
        sq__tls_free(t);
        ERR_clear_error();
        return UV_ENOMEM;
    }
    SSL_set_connect_state(t->ssl);
    return 0;
}

void sq__tls_free(sq__tls_t *t)
{
    if (t->ssl != NULL)
        SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
}

int sq__tls_feed(sq__tls_t *t, const void *data, size_t len)
{
    while (len > 0) {
        int n = len > INT32_MAX ? INT32_MAX : (int)len;
        int w = BIO_write(t->rbio, data, n);
        if (w <= 0)
            return UV_ENOMEM;
        data = (const char *)data + w;
        len -= (size_t)w;
    }
    return 0;
}

/* What a failed handshake was: the client's verdict on the server's certificate, or a
 * protocol failure. */
static int handshake_error(sq__tls_t *t)
{
    long v = SSL_get_verify_result(t->ssl);
    if (v == X509_V_OK)
        return SQ_ETLS;
    sq_log(SQ_LOG_DEBUG, "tls: certificate: %s", X509_verify_cert_error_string(v));
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        return SQ_ECERTNAME;
    return SQ_ECERT;
}

int sq__tls_handshake(sq__tls_t *t)
{
    if (t->done)
        return 1;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = true;
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    return handshake_error(t);
}

ssize_t sq__tls_read(sq__tls_t *t, char *buf, size_t cap)
{
    int n = cap > INT32_MAX ? INT32_MAX : (int)cap;
    int r = SSL_read(t->ssl, buf, n);
    if (r > 0)
        return r;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return UV_EOF;
    default:
        return SQ_ETLS;
    }
}

int sq__tls_write(sq__tls_t *t, const void *data, size_t len)
{
    while (len > 0) {
        int n = len > INT32_MAX ? INT32_MAX : (int)len;
        int w = SSL_write(t->ssl, data, n);
        if (w <= 0) {
            int e = SSL_get_error(t->ssl, w);
            ERR_clear_error();
            return e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL ? SQ_ETLS : UV_ENOMEM;
        }
        data = (const char *)data + w;
        len -= (size_t)w;
    }
    return 0;
}

void sq__tls_close_notify(sq__tls_t *t)
{
    if (t->done && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t sq__tls_out_read(sq__tls_t *t, void *dst, size_t n)
{
    int r = BIO_read(t->wbio, dst, n > INT32_MAX ? INT32_MAX : (int)n);
    return r > 0 ? (size_t)r : 0;
}

int sq__tls_take_out(sq__tls_t *t, sq__buf_t *out)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0)
        return 0;
    if (sq__buf_reserve(out, n) != 0)
        return UV_ENOMEM;
    int r = BIO_read(t->wbio, out->base + out->len, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        out->len += (size_t)r;
    return 0;
}

const char *sq__tls_reason(sq__tls_t *t, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "%s", t != NULL && t->ssl != NULL && !t->done
                                     ? "handshake incomplete" : "protocol error");
    ERR_clear_error();
    return buf;
}
