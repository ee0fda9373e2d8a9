/* Growable byte buffers and a bump arena whose pointers never move. */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

int sq__buf_grow(sq__buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t need = b->len + extra;
    if (need < b->len)
        return UV_ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2; /* doubling must not wrap to 0 */
    char *p = realloc(b->base, cap);
    if (p == NULL)
        return UV_ENOMEM;
    b->base = p;
    b->cap = cap;
    return 0;
}

void sq__buf_free(sq__buf_t *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}

void sq__arena_init(sq__arena_t *a, char *inline_base, size_t inline_cap)
{
    a->inline_base = inline_base;
    a->inline_cap = inline_cap;
    a->cur = inline_base;
    a->end = inline_base + inline_cap;
    a->more = NULL;
}

void *sq__arena_alloc(sq__arena_t *a, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    uintptr_t cur = ((uintptr_t)a->cur + 7) & ~(uintptr_t)7;
    if (cur + size <= (uintptr_t)a->end) {
        a->cur = (char *)(cur + size);
        return (void *)cur;
    }
    size_t cap = size > 4096 ? size : 4096;
    sq__arena_block_t *blk = malloc(sizeof(*blk) + cap);
    if (blk == NULL)
        return NULL;
    blk->cap = cap;
    blk->next = a->more;
    a->more = blk;
    a->cur = blk->data + size;
    a->end = blk->data + cap;
    return blk->data;
}

void sq__arena_reset(sq__arena_t *a)
{
    while (a->more != NULL) {
        sq__arena_block_t *next = a->more->next;
        free(a->more);
        a->more = next;
    }
    a->cur = a->inline_base;
    a->end = a->inline_base + a->inline_cap;
}
