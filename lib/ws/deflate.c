/* permessage-deflate (RFC 7692): the negotiation of its parameters in the handshake, and
 * the compression of messages with zlib.
 *
 * Memory: a connection that agreed on the extension holds a small struct (sq__ws_pmd_t).
 * Its compressor comes with the first message it compresses and its inflater with the
 * first compressed message it receives; a side that resets its context after each
 * message (no_context_takeover) frees them after each, so an idle connection holds no
 * zlib state. With context takeover they stay, sized by the window bits and memLevel
 * options (docs/deflate.md has the figures).
 *
 * Receiving: compressed bytes are inflated as they arrive, in steps of at most 64 KiB of
 * output into the message buffer, and the connection fails with 1009 as soon as the
 * output passes max_message_bytes: a small message that inflates to gigabytes costs no
 * more than the limit (test: ws_deflate/a_bomb_is_stopped_at_the_message_limit). */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <zlib.h>

#include "ws/ws_int.h"

struct sq__ws_pmd {
    z_stream *tx;            /* the compressor, while it exists */
    z_stream *rx;            /* the inflater, while it exists */
    sq__ws_pmd_conf_t conf;
    size_t held;             /* bytes zlib holds for this connection, now */
    bool rx_ended;           /* the peer ended its deflate stream (BFINAL) in this message */
};

/* zlib's memory, counted per connection (sq__ws_pmd_held): each block carries its size
 * in front. */
typedef union zblock {
    size_t size;
    max_align_t align;
} zblock_t;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    sq__ws_pmd_t *d = opaque;
    size_t n = (size_t)items * size;
    zblock_t *b = malloc(sizeof(*b) + n);
    if (b == NULL)
        return NULL;
    b->size = n;
    d->held += n;
    return b + 1;
}

static void z_free(voidpf opaque, voidpf address)
{
    sq__ws_pmd_t *d = opaque;
    zblock_t *b = (zblock_t *)address - 1;
    d->held -= b->size;
    free(b);
}

size_t sq__ws_pmd_held(const sq_ws_t *ws)
{
    return ws->pmd != NULL ? ws->pmd->held : 0;
}

static z_stream *z_new(sq__ws_pmd_t *d)
{
    z_stream *z = calloc(1, sizeof(*z));
    if (z != NULL) {
        z->zalloc = z_alloc;
        z->zfree = z_free;
        z->opaque = d;
    }
    return z;
}

/* ---- the extension header (RFC 6455 §9.1, RFC 7692 §7) ---- */

#define PMD_NAME "permessage-deflate"
#define MAX_PARAMS 8

typedef struct ext_param {
    const char *name;
    size_t name_len;
    char value[8];   /* unquoted, NUL-terminated; "" when absent */
    bool has_value;
    bool value_bad;  /* longer than 7 bytes, or a quoted-string that is no token */
} ext_param_t;

typedef struct ext_elem {
    const char *name;
    size_t name_len;
    unsigned nparams;
    bool too_many;
    ext_param_t params[MAX_PARAMS];
} ext_elem_t;

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static const char *token_end(const char *p)
{
    while (*p && sq__is_tchar((unsigned char)*p))
        p++;
    return p;
}

/* A parameter's value after '=': a token or a quoted-string (RFC 7692 §7: once unquoted
 * it must be a token too). Returns where it ends, or NULL when malformed. */
static const char *read_value(const char *p, ext_param_t *prm)
{
    size_t n = 0;
    prm->has_value = true;
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            if (*p == '\0')
                return NULL;
            if (*p == '\\' && *++p == '\0')
                return NULL;
            if (!sq__is_tchar((unsigned char)*p))
                prm->value_bad = true;
            if (n + 1 < sizeof(prm->value))
                prm->value[n] = *p;
            else
                prm->value_bad = true;
            n++;
        }
        p++;
    } else {
        const char *e = token_end(p);
        if (e == p)
            return NULL;
        n = (size_t)(e - p);
        if (n + 1 > sizeof(prm->value))
            prm->value_bad = true;
        else
            memcpy(prm->value, p, n);
        p = e;
    }
    if (n == 0)
        prm->value_bad = true;
    prm->value[n < sizeof(prm->value) ? n : sizeof(prm->value) - 1] = '\0';
    return p;
}

/* Reads the next element of an extension list at *cur (empty elements are skipped, RFC
 * 9110 §5.6.1). Returns 1 with *e filled, 0 at the end, -1 when the list is malformed. */
static int next_elem(const char **cur, ext_elem_t *e)
{
    const char *p = *cur;
    for (;;) {
        p = skip_ows(p);
        if (*p != ',')
            break;
        p++;
    }
    if (*p == '\0')
        return 0;
    memset(e, 0, sizeof(*e));
    e->name = p;
    p = token_end(p);
    e->name_len = (size_t)(p - e->name);
    if (e->name_len == 0)
        return -1;
    for (;;) {
        p = skip_ows(p);
        if (*p == '\0' || *p == ',')
            break;
        if (*p != ';')
            return -1;
        p = skip_ows(p + 1);
        ext_param_t tmp, *prm = e->nparams < MAX_PARAMS ? &e->params[e->nparams] : &tmp;
        memset(prm, 0, sizeof(*prm));
        prm->name = p;
        p = token_end(p);
        prm->name_len = (size_t)(p - prm->name);
        if (prm->name_len == 0)
            return -1;
        p = skip_ows(p);
        if (*p == '=') {
            p = read_value(skip_ows(p + 1), prm);
            if (p == NULL)
                return -1;
        }
        if (e->nparams < MAX_PARAMS)
            e->nparams++;
        else
            e->too_many = true;
    }
    *cur = p;
    return 1;
}

static bool name_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

/* RFC 7692 §7.1.2: a window size is 8 to 15, in decimal, without leading zeros. */
static int window_bits(const char *v)
{
    if (v[0] >= '8' && v[0] <= '9' && v[1] == '\0')
        return v[0] - '0';
    if (v[0] == '1' && v[1] >= '0' && v[1] <= '5' && v[2] == '\0')
        return 10 + v[1] - '0';
    return 0;
}

/* The parameters of one permessage-deflate element. */
typedef struct pmd_params {
    bool server_no_ctx, client_no_ctx;
    int server_bits; /* 0: absent */
    int client_bits; /* 0: absent; -1: present without a value (an offer only) */
} pmd_params_t;

/* Reads a permessage-deflate element's parameters. False for an unknown parameter, one
 * given twice, a value where none belongs or a bad window size (RFC 7692 §7.1: such an
 * offer is declined, such an answer fails the connection). `offer`: a client's offer,
 * where client_max_window_bits may come without a value. */
static bool pmd_params(const ext_elem_t *e, bool offer, pmd_params_t *out)
{
    memset(out, 0, sizeof(*out));
    if (e->too_many)
        return false;
    bool seen[4] = {false, false, false, false};
    for (unsigned i = 0; i < e->nparams; i++) {
        const ext_param_t *p = &e->params[i];
        int k;
        if (name_is(p->name, p->name_len, "server_no_context_takeover"))
            k = 0;
        else if (name_is(p->name, p->name_len, "client_no_context_takeover"))
            k = 1;
        else if (name_is(p->name, p->name_len, "server_max_window_bits"))
            k = 2;
        else if (name_is(p->name, p->name_len, "client_max_window_bits"))
            k = 3;
        else
            return false; /* §7.1: an unknown parameter */
        if (seen[k])
            return false; /* §7.1: the same parameter twice */
        seen[k] = true;
        if (p->value_bad)
            return false;
        switch (k) {
        case 0:
        case 1:
            if (p->has_value)
                return false; /* §7.1.1: these have no value */
            if (k == 0)
                out->server_no_ctx = true;
            else
                out->client_no_ctx = true;
            break;
        case 2:
            /* §7.1.2.1: the value is required */
            if (!p->has_value || (out->server_bits = window_bits(p->value)) == 0)
                return false;
            break;
        default:
            /* §7.1.2.2: optional in an offer, required in an answer */
            if (!p->has_value) {
                if (!offer)
                    return false;
                out->client_bits = -1;
            } else if ((out->client_bits = window_bits(p->value)) == 0) {
                return false;
            }
            break;
        }
    }
    return true;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

bool sq__ws_pmd_server_answer(const sq_ws_opts_t *o, const char *offers,
                              sq__ws_pmd_conf_t *conf, char answer[SQ__WS_PMD_HDR])
{
    const char *cur = offers;
    ext_elem_t e;
    int r;
    /* RFC 7692 §5: the offers are in the client's order of preference; the first one
     * we can honour is accepted, the others declined */
    while ((r = next_elem(&cur, &e)) > 0) {
        pmd_params_t p;
        if (!name_is(e.name, e.name_len, PMD_NAME) || !pmd_params(&e, true, &p))
            continue;
        if (p.server_bits == 8)
            continue; /* zlib's raw deflate cannot keep to a 256-byte window */
        memset(conf, 0, sizeof(*conf));
        conf->tx_no_ctx = p.server_no_ctx || o->deflate_no_context_takeover;
        conf->rx_no_ctx = p.client_no_ctx || o->deflate_peer_no_context_takeover;
        conf->tx_bits = (uint8_t)(p.server_bits ? min_int(o->deflate_window_bits, p.server_bits)
                                                : o->deflate_window_bits);
        int rx = 15;
        bool say_rx = false;
        if (p.client_bits != 0) {
            /* §7.1.2.2: the client said it can limit its window: ask for ours, never more
             * than its own value */
            rx = min_int(o->deflate_peer_window_bits, p.client_bits > 0 ? p.client_bits : 15);
            say_rx = p.client_bits > 0 || rx < 15;
        }
        conf->rx_bits = (uint8_t)rx;
        int n = snprintf(answer, SQ__WS_PMD_HDR, "%s%s%s", PMD_NAME,
                         conf->tx_no_ctx ? "; server_no_context_takeover" : "",
                         conf->rx_no_ctx ? "; client_no_context_takeover" : "");
        /* §7.1.2.1: a server_max_window_bits offer is answered with the same or smaller
         * value; without one, the client inflates with 15 bits, which takes any window */
        if (p.server_bits)
            n += snprintf(answer + n, SQ__WS_PMD_HDR - (size_t)n, "; server_max_window_bits=%d",
                          conf->tx_bits);
        if (say_rx)
            snprintf(answer + n, SQ__WS_PMD_HDR - (size_t)n, "; client_max_window_bits=%d", rx);
        return true;
    }
    return false; /* none, or a malformed header: no extension (RFC 6455 §9.1) */
}

void sq__ws_pmd_client_offer(const sq_ws_opts_t *o, char offer[SQ__WS_PMD_HDR])
{
    int n = snprintf(offer, SQ__WS_PMD_HDR, "%s%s%s", PMD_NAME,
                     o->deflate_no_context_takeover ? "; client_no_context_takeover" : "",
                     o->deflate_peer_no_context_takeover ? "; server_no_context_takeover" : "");
    if (o->deflate_peer_window_bits < 15)
        n += snprintf(offer + n, SQ__WS_PMD_HDR - (size_t)n, "; server_max_window_bits=%d",
                      o->deflate_peer_window_bits);
    /* §7.1.2.2: the server may ask us for a smaller window; with a value, ours is said */
    if (o->deflate_window_bits < 15)
        snprintf(offer + n, SQ__WS_PMD_HDR - (size_t)n, "; client_max_window_bits=%d",
                 o->deflate_window_bits);
    else
        snprintf(offer + n, SQ__WS_PMD_HDR - (size_t)n, "; client_max_window_bits");
}

bool sq__ws_pmd_client_check(const sq_ws_opts_t *o, const char *answer, sq__ws_pmd_conf_t *conf)
{
    const char *cur = answer;
    ext_elem_t e;
    pmd_params_t p;
    /* RFC 7692 §7.1: exactly the one extension offered, with parameters it may carry */
    if (next_elem(&cur, &e) != 1 || !name_is(e.name, e.name_len, PMD_NAME) ||
        !pmd_params(&e, false, &p))
        return false;
    ext_elem_t more;
    if (next_elem(&cur, &more) != 0)
        return false; /* a second element, or a malformed rest */
    if (o->deflate_peer_window_bits < 15 && p.server_bits > o->deflate_peer_window_bits)
        return false; /* §7.1.2.1: no more than the offer said */
    /* §7.1.2.2: the server limits our window; 8 is one zlib cannot keep to */
    if (p.client_bits == 8)
        return false;
    memset(conf, 0, sizeof(*conf));
    conf->tx_no_ctx = p.client_no_ctx || o->deflate_no_context_takeover;
    conf->rx_no_ctx = p.server_no_ctx;
    conf->tx_bits = (uint8_t)(p.client_bits ? min_int(o->deflate_window_bits, p.client_bits)
                                            : o->deflate_window_bits);
    conf->rx_bits = (uint8_t)(p.server_bits ? p.server_bits : 15);
    return true;
}

/* ---- the connection's state ---- */

int sq__ws_pmd_start(sq_ws_t *ws, const sq__ws_pmd_conf_t *conf)
{
    sq__ws_pmd_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return UV_ENOMEM;
    d->conf = *conf;
    ws->pmd = d;
    return 0;
}

static void tx_release(sq__ws_pmd_t *d)
{
    if (d->tx != NULL) {
        deflateEnd(d->tx);
        free(d->tx);
        d->tx = NULL;
    }
}

static void rx_release(sq__ws_pmd_t *d)
{
    if (d->rx != NULL) {
        inflateEnd(d->rx);
        free(d->rx);
        d->rx = NULL;
    }
    d->rx_ended = false;
}

void sq__ws_pmd_free(sq_ws_t *ws)
{
    if (ws->pmd == NULL)
        return;
    tx_release(ws->pmd);
    rx_release(ws->pmd);
    free(ws->pmd);
    ws->pmd = NULL;
}

/* ---- sending (RFC 7692 §7.2.1) ---- */

/* Writes a data frame whose payload is squall's own buffer: masked in place on the
 * client side. */
static int write_owned(sq_ws_t *ws, int opcode, uint8_t *payload, size_t len, bool notify)
{
    uint8_t hdr[14], mask[4];
    bool client = ws->flags & SQ__WS_CLIENT;
    if (client && RAND_bytes(mask, 4) != 1) /* RFC 6455 §5.3: a fresh key per frame */
        return UV_EIO;
    size_t hl = sq__ws_frame_header(hdr, opcode, len, client ? mask : NULL);
    if (client)
        sq__ws_mask(payload, len, mask, 0);
    uv_buf_t b[2] = {uv_buf_init((char *)hdr, (unsigned)hl),
                     uv_buf_init((char *)payload, (unsigned)len)};
    return sq__ws_io_write(ws, b, len ? 2 : 1, notify);
}

/* Compresses `len` bytes into out with a sync flush: the output ends on a byte boundary
 * with the 0x00 0x00 0xff 0xff of an empty stored block. */
static int deflate_msg(sq_ws_t *ws, const void *msg, size_t len, sq__buf_t *out)
{
    sq__ws_pmd_t *d = ws->pmd;
    const sq_ws_opts_t *o = ws->opts;
    if (d->tx == NULL) {
        z_stream *z = z_new(d);
        if (z == NULL)
            return UV_ENOMEM;
        if (deflateInit2(z, o->deflate_level, Z_DEFLATED, -(int)d->conf.tx_bits,
                         o->deflate_mem_level, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return UV_ENOMEM;
        }
        d->tx = z;
    }
    z_stream *z = d->tx;
    z->next_in = (Bytef *)msg;
    z->avail_in = (uInt)len; /* callers keep len under SQ_WS_MAX_SEND_BYTES */
    size_t step = len / 4 + 64;
    do {
        if (sq__buf_reserve(out, step) != 0)
            return UV_ENOMEM;
        size_t room = out->cap - out->len;
        if (room > UINT32_MAX)
            room = UINT32_MAX;
        z->next_out = (Bytef *)out->base + out->len;
        z->avail_out = (uInt)room;
        int rc = deflate(z, Z_SYNC_FLUSH);
        out->len += room - z->avail_out;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return UV_ENOMEM; /* deflate fails only on a broken state */
        step = out->cap;
    } while (z->avail_out == 0);
    return 0;
}

int sq__ws_pmd_send(sq_ws_t *ws, int opcode, const void *msg, size_t len, bool notify)
{
    sq__ws_pmd_t *d = ws->pmd;
    int op = opcode & 0x0F;
    bool fin = !(opcode & SQ__WS_NOFIN);
    bool first = op != SQ__WS_OP_CONT;
    bool compressed = first ? !fin || len >= ws->opts->deflate_threshold
                            : (ws->flags & SQ__WS_SEND_DEFLATE) != 0;
    if (first) {
        if (compressed && !fin)
            ws->flags |= SQ__WS_SEND_DEFLATE;
        else
            ws->flags &= ~SQ__WS_SEND_DEFLATE;
    }
    if (!compressed)
        return sq__ws_write_frame(ws, opcode, msg, len, notify);
    sq__buf_t out = {0};
    int rc = deflate_msg(ws, msg, len, &out);
    if (rc == 0 && fin) {
        if (out.len == 0) {
            /* nothing to flush: zlib writes nothing when the last call flushed already and
             * no byte came since (an empty message, or an empty last fragment); §7.2.3.6:
             * a single 0x00 byte, an empty stored block once the tail is back */
            rc = sq__buf_append(&out, "", 1);
        } else if (out.len < 4 || memcmp(out.base + out.len - 4, "\0\0\xff\xff", 4) != 0) {
            rc = UV_ENOMEM; /* cannot happen with a sync flush */
        } else {
            /* §7.2.1: the message's last 4 bytes, 0x00 0x00 0xff 0xff, are not sent */
            out.len -= 4;
        }
    }
    if (rc == 0)
        rc = write_owned(ws, first ? opcode | SQ__WS_RSV1 : opcode, (uint8_t *)out.base,
                         out.len, notify);
    sq__buf_free(&out);
    if (fin) {
        ws->flags &= ~SQ__WS_SEND_DEFLATE;
        if (d->conf.tx_no_ctx)
            tx_release(d); /* §7.1.1: the next message starts afresh; memory goes now */
    }
    return rc;
}

/* ---- receiving (RFC 7692 §7.2.2) ---- */

/* At most this much output per call into zlib: the message limit is checked at each. */
#define INFLATE_STEP (64 * 1024)

static bool inflate_some(sq_ws_t *ws, const uint8_t *p, size_t n)
{
    sq__ws_pmd_t *d = ws->pmd;
    z_stream *z = d->rx;
    size_t max = ws->opts->max_message_bytes;
    for (;;) {
        if (d->rx_ended)
            return true; /* the stream ended (BFINAL): what follows in the message is
                            ignored, and the inflater starts afresh at the next */
        size_t room = INFLATE_STEP;
        if (max > 0 && room > max - ws->msg.len + 1)
            room = max - ws->msg.len + 1; /* one byte past the limit tells it is passed */
        if (sq__buf_reserve(&ws->msg, room) != 0) {
            sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
            return false;
        }
        uInt in = n > UINT32_MAX ? UINT32_MAX : (uInt)n;
        z->next_in = (Bytef *)p;
        z->avail_in = in;
        z->next_out = (Bytef *)ws->msg.base + ws->msg.len;
        z->avail_out = (uInt)room;
        int rc = inflate(z, Z_SYNC_FLUSH);
        size_t made = room - z->avail_out;
        p += in - z->avail_in;
        n -= in - z->avail_in;
        if (made > 0) {
            const uint8_t *out = (const uint8_t *)ws->msg.base + ws->msg.len;
            ws->msg.len += made;
            if (max > 0 && ws->msg.len > max) {
                /* RFC 6455 §10.4: stopped here, whatever the rest would inflate to */
                sq__ws_fail(ws, SQ_WS_TOO_BIG, "message too big");
                sq__ws_drop_partial(ws);
                return false;
            }
            if ((ws->flags & SQ__WS_IN_TEXT) && !sq__utf8_feed(&ws->utf8, out, made)) {
                sq__ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in a text message");
                sq__ws_drop_partial(ws);
                return false;
            }
        }
        if (rc == Z_STREAM_END) {
            d->rx_ended = true;
            return true;
        }
        if (rc == Z_MEM_ERROR) {
            sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
            sq__ws_drop_partial(ws);
            return false;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            /* a broken deflate stream: the payload is not what the type says it is */
            sq__ws_fail(ws, SQ_WS_INVALID_DATA, "invalid compressed data");
            sq__ws_drop_partial(ws);
            return false;
        }
        if (n == 0 && z->avail_out > 0)
            return true; /* all input taken, and zlib had no more to give */
    }
}

bool sq__ws_pmd_inflate(sq_ws_t *ws, const uint8_t *p, size_t n, bool last)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    sq__ws_pmd_t *d = ws->pmd;
    if (d->rx == NULL) {
        z_stream *z = z_new(d);
        /* a window of 8 bits is inflated with 9: zlib's compressors cannot write 8 */
        int bits = d->conf.rx_bits < 9 ? 9 : d->conf.rx_bits;
        if (z == NULL || inflateInit2(z, -bits) != Z_OK) {
            free(z);
            sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
            sq__ws_drop_partial(ws);
            return false;
        }
        d->rx = z;
    }
    if (n > 0 && !inflate_some(ws, p, n))
        return false;
    /* §7.2.2: the tail the sender removed is put back at the message's end */
    return !last || inflate_some(ws, tail, sizeof(tail));
}

void sq__ws_pmd_rx_done(sq_ws_t *ws)
{
    sq__ws_pmd_t *d = ws->pmd;
    if (d->conf.rx_no_ctx) {
        rx_release(d); /* §7.1.1: the peer starts afresh; memory goes now */
    } else if (d->rx_ended && d->rx != NULL) {
        inflateReset(d->rx); /* a new deflate stream follows one that ended */
        d->rx_ended = false;
    }
}
