/* application/x-www-form-urlencoded: pieces of any size, and the JSON of a whole body. */
#include <stdint.h>

#include <jansson.h>
#include <squall.h>

static int on_field(sq_urlenc_t *p, const char *name, size_t name_len, const char *value,
                    size_t value_len, void *data)
{
    volatile char c = (char)(name_len ? name[name_len - 1] : 0) ^ (value_len ? value[0] : 0);
    (void)c;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 64 + 1;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    sq_urlenc_t *p;
    if (sq_urlenc_create(&p, NULL, on_field, NULL) == 0) {
        for (size_t off = 0; off < len; off += step)
            if (sq_urlenc_feed(p, body + off, len - off < step ? len - off : step) < 0)
                break;
        sq_urlenc_finish(p);
        sq_urlenc_destroy(p);
    }
    json_t *j = NULL;
    if (sq_urlenc_parse_json(body, len, NULL, &j) == 0)
        json_decref(j);
    return 0;
}
