/* Structs that grow (include/squall/common.h): reading a caller's struct whose size its
 * own header decided, and filling one. */
#ifndef SQUALL_CORE_ABI_H
#define SQUALL_CORE_ABI_H

#include "internal.h"

/* Lays a caller's struct of `size` bytes over `dst`, the library's own struct of `known`
 * bytes already holding the defaults: the bytes that fit are copied, the rest of dst is
 * left as it was. A caller's struct larger than `known` must have zeros past it.
 * Returns 0, or UV_ENOTSUP (a byte past `known` is set); dst is unchanged on error. */
SQ__HIDDEN int sq__abi_table_in(void *dst, size_t known, const void *src, size_t size);

/* As sq__abi_table_in for a struct whose first member is `size_t size` (options): the
 * size is read from src and dst->size is left as it was. Returns 0, UV_EINVAL (a size
 * below sizeof(size_t): never initialised) or UV_ENOTSUP. */
SQ__HIDDEN int sq__abi_opts_in(void *dst, size_t known, const void *src);

/* Fills a caller's option struct of `size` bytes from `defaults`, the library's own of
 * `known` bytes: the bytes that fit are copied, bytes past `known` are zeroed (fields of
 * a newer header this library cannot serve: left at zero, they ask for nothing), and the
 * caller's size member is set to `size`, which the call reading the options checks. A
 * size below sizeof(size_t) is left untouched (the reading call refuses it). */
SQ__HIDDEN void sq__abi_opts_init(void *dst, size_t size, const void *defaults, size_t known);

/* Fills a caller's struct of `size` bytes, whose first member is `size_t size`, from
 * `src`, the library's own of `known` bytes: the bytes that fit are copied, bytes past
 * `known` are zeroed, and the caller's size member is set to how many bytes were filled
 * (the smaller of the two). A size below sizeof(size_t) is left untouched. */
SQ__HIDDEN void sq__abi_out(void *dst, size_t size, const void *src, size_t known);

/* The same with the library's struct's size from its type. */
#define SQ__OPTS_INIT(dst, size, defaults)                                                 \
    sq__abi_opts_init((dst), (size), (defaults), sizeof(*(defaults)))
#define SQ__OPTS_IN(dst, src) sq__abi_opts_in((dst), sizeof(*(dst)), (src))
#define SQ__STATS_OUT(dst, size, src) sq__abi_out((dst), (size), (src), sizeof(*(src)))

#endif
