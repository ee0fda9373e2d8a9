/* The opening handshake's pieces (RFC 6455 §4.2.2): the accept key and header checks. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <strings.h>

#include "ws/ws_int.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int sq__ws_crypto_init(void)
{
    /* OpenSSL sets itself up on first use, allocating: done here, when a route or a
     * client is made, not in the middle of a handshake where it could fail unchecked */
    if (OPENSSL_init_crypto(0, NULL) != 1 || EVP_sha1() == NULL)
        return UV_ENOMEM;
    return 0;
}

int sq__ws_accept_key(const char *key, size_t key_len, char out[29])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char buf[64 + sizeof(ws_guid)];
    if (key_len > 64)
        key_len = 64; /* callers pass validated 24-byte keys */
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, ws_guid, sizeof(ws_guid) - 1);
    if (EVP_Digest(buf, key_len + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return UV_ENOMEM; /* (OpenSSL fails only when it cannot allocate) */
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen); /* 28 characters + NUL */
    return 0;
}

bool sq__ws_key_valid(const char *key)
{
    /* 16 bytes in base64: 22 significant characters and "==" */
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (int i = 0; i < 22; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    /* the last significant character carries 2 bits; the other 4 must be zero */
    return strchr("AQgw", key[21]) != NULL;
}

bool sq__header_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p != NULL && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = *end ? end + 1 : NULL;
    }
    return false;
}

size_t sq__ws_frame_header(uint8_t *h, int opcode, uint64_t len, const uint8_t *mask)
{
    size_t n;
    /* SQ__WS_RSV1 (0x200) shifted down is RSV1 (0x40) */
    h[0] = (uint8_t)((opcode & SQ__WS_NOFIN ? 0 : 0x80) | ((opcode >> 3) & 0x40) |
                     (opcode & 0x0F));
    if (len < 126) {
        h[1] = (uint8_t)len;
        n = 2;
    } else if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask != NULL) {
        h[1] |= 0x80;
        memcpy(h + n, mask, 4);
        n += 4;
    }
    return n;
}
