/* Structs that grow: the caller's header decides a struct's size, and the library reads
 * and writes only the bytes that fit (include/squall/common.h states the rule; the
 * tests in tests/test_abi.c hand structs that end at a malloc block's end, so a byte
 * read or written past them is caught under AddressSanitizer). */
#include "core/abi.h"

int sq__abi_table_in(void *dst, size_t known, const void *src, size_t size)
{
    const unsigned char *s = src;
    for (size_t i = known; i < size; i++)
        if (s[i] != 0)
            return UV_ENOTSUP; /* set by a newer header: a wish this library cannot meet */
    memcpy(dst, src, size < known ? size : known);
    return 0;
}

int sq__abi_opts_in(void *dst, size_t known, const void *src)
{
    size_t size, keep;
    memcpy(&size, src, sizeof(size));
    if (size < sizeof(size))
        return UV_EINVAL;
    memcpy(&keep, dst, sizeof(keep));
    int rc = sq__abi_table_in(dst, known, src, size);
    memcpy(dst, &keep, sizeof(keep));
    return rc;
}

void sq__abi_opts_init(void *dst, size_t size, const void *defaults, size_t known)
{
    if (size < sizeof(size_t))
        return;
    memcpy(dst, defaults, size < known ? size : known);
    if (size > known)
        memset((unsigned char *)dst + known, 0, size - known);
    memcpy(dst, &size, sizeof(size));
}

void sq__abi_out(void *dst, size_t size, const void *src, size_t known)
{
    size_t n = size < known ? size : known;
    if (n < sizeof(size_t))
        return;
    memcpy(dst, src, n);
    memcpy(dst, &n, sizeof(n));
    if (size > known)
        memset((unsigned char *)dst + known, 0, size - known);
}
