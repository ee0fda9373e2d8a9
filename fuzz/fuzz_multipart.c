/* multipart/form-data (RFC 7578) and its boundary: a Content-Type line, then the body, fed
 * in pieces whose size the input's first byte chooses; callbacks that pause now and then. */
#include <stdint.h>
#include <string.h>

#include <squall.h>

static unsigned events;

static int on_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    return ++events % 7 == 0 ? SQ_FORM_PAUSE : 0;
}

static int on_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    volatile char sink = len ? at[0] ^ at[len - 1] : 0; /* every byte handed on is readable */
    (void)sink;
    return ++events % 5 == 0 ? SQ_FORM_PAUSE : 0;
}

static int on_end(sq_multipart_t *mp, void *data)
{
    return 0;
}

static const sq_multipart_cbs_t cbs = {.part_begin = on_begin, .part_data = on_data,
                                       .part_end = on_end};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = (size_t)data[0] + 1;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
        return 0;
    char ct[512];
    size_t cl = (size_t)(nl - p) < sizeof(ct) - 1 ? (size_t)(nl - p) : sizeof(ct) - 1;
    memcpy(ct, p, cl);
    ct[cl] = '\0';
    char boundary[SQ_FORM_BOUNDARY_MAX + 1];
    if (sq_form_boundary(ct, boundary, sizeof(boundary)) < 0)
        return 0;
    sq_multipart_opts_t o;
    sq_multipart_opts_init(&o);
    o.max_parts = 64;
    o.max_field_bytes = 4096;
    sq_multipart_t *mp;
    if (sq_multipart_create(&mp, boundary, &o, &cbs, NULL) != 0)
        return 0;
    const char *body = nl + 1;
    size_t len = (size_t)(end - body);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < step ? len - off : step;
        ssize_t used = sq_multipart_feed(mp, body + off, n);
        if (used < 0)
            break;
        off += (size_t)used; /* paused: the rest is fed again */
    }
    sq_multipart_finish(mp);
    sq_multipart_destroy(mp);
    return 0;
}
