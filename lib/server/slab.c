/* Connections are allocated from blocks of 64 KiB, each cut into slots of the server's
 * connection size: no allocator header or rounding per connection, and the registry of
 * connections is the blocks themselves (sq__conns_each walks them), so a connection needs
 * no list links to be found at shutdown. A block is found from a slot by masking its
 * address (blocks are aligned to their size); a block whose last connection goes is given
 * back, unless it is the only one. */
#include <assert.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "server/server_int.h"

/* Under AddressSanitizer a free slot is poisoned, so that a connection used after it was
 * freed is still caught, as it would be from malloc; a block is unpoisoned before it is
 * unmapped, since the shadow outlives the mapping and the next one at its address is
 * someone else's (test: conn_edge/a_slab_block_given_back_leaves_its_addresses_usable). */
#if defined(__SANITIZE_ADDRESS__)
#define SQ__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SQ__ASAN 1
#endif
#endif
#ifdef SQ__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define BLK_SIZE ((size_t)64 * 1024)
#define MAX_SLOTS 256

struct sq__slab_blk {
    sq__slab_blk_t *prev, *next;        /* the server's blocks: those with a free slot first */
    uint64_t used_bits[MAX_SLOTS / 64]; /* which slots hold a connection */
    unsigned used;                      /* how many */
    unsigned cursor;                    /* where the search for a free slot starts */
    unsigned nslots;
    unsigned slot_size;
};

/* The slots start after the header, 16-byte aligned. */
#define BLK_HDR ((sizeof(sq__slab_blk_t) + 15) & ~(size_t)15)

static sq__conn_t *slot_at(sq__slab_blk_t *b, unsigned i)
{
    return (sq__conn_t *)((char *)b + BLK_HDR + (size_t)i * b->slot_size);
}

static sq__slab_blk_t *blk_of(const sq__conn_t *c)
{
    return (sq__slab_blk_t *)((uintptr_t)c & ~(uintptr_t)(BLK_SIZE - 1));
}

static bool blk_full(const sq__slab_blk_t *b)
{
    return b->used == b->nslots;
}

static void unlink_blk(sq_server_t *srv, sq__slab_blk_t *b)
{
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        srv->slab = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    else
        srv->slab_tail = b->prev;
    b->prev = b->next = NULL;
}

static void push_front(sq_server_t *srv, sq__slab_blk_t *b)
{
    b->prev = NULL;
    b->next = srv->slab;
    if (srv->slab != NULL)
        srv->slab->prev = b;
    else
        srv->slab_tail = b;
    srv->slab = b;
}

static void push_back(sq_server_t *srv, sq__slab_blk_t *b)
{
    b->next = NULL;
    b->prev = srv->slab_tail;
    if (srv->slab_tail != NULL)
        srv->slab_tail->next = b;
    else
        srv->slab = b;
    srv->slab_tail = b;
}

/* A zeroed block aligned to its size: twice the size mapped, the unaligned ends unmapped. */
static sq__slab_blk_t *blk_new(size_t slot_size)
{
    char *p = mmap(NULL, 2 * BLK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)p + BLK_SIZE - 1) & ~(uintptr_t)(BLK_SIZE - 1);
    size_t head = a - (uintptr_t)p;
    if (head > 0)
        munmap(p, head);
    munmap((char *)a + BLK_SIZE, BLK_SIZE - head);
    sq__slab_blk_t *b = (sq__slab_blk_t *)a;
    b->slot_size = (unsigned)slot_size;
    b->nslots = (unsigned)((BLK_SIZE - BLK_HDR) / slot_size);
    if (b->nslots > MAX_SLOTS)
        b->nslots = MAX_SLOTS;
    POISON((char *)b + BLK_HDR, BLK_SIZE - BLK_HDR);
    return b;
}

static void blk_unmap(sq__slab_blk_t *b)
{
    UNPOISON(b, BLK_SIZE);
    munmap(b, BLK_SIZE);
}

/* The first free slot from the cursor on, round the block (nslots: none). A slot just
 * given back is taken again last, so that a stale pointer to it meets a poisoned slot
 * (ASan) or its old contents for as long as possible, as with malloc's quarantine. */
static unsigned find_free(const sq__slab_blk_t *b)
{
    for (int pass = 0; pass < 2; pass++) {
        unsigned to = pass == 0 ? b->nslots : b->cursor;
        for (unsigned i = pass == 0 ? b->cursor : 0; i < to; i = (i & ~63u) + 64) {
            uint64_t free_bits = ~b->used_bits[i / 64] & (~(uint64_t)0 << (i % 64));
            if (free_bits != 0) {
                unsigned j = (i & ~63u) + (unsigned)__builtin_ctzll(free_bits);
                if (j < to)
                    return j;
                break;
            }
        }
    }
    return b->nslots;
}

sq__conn_t *sq__conn_alloc(sq_server_t *srv)
{
    size_t size = (srv->conn_size + 7) & ~(size_t)7; /* pointers are the widest member */
    if (size > (BLK_SIZE - BLK_HDR) / 16)
        return NULL; /* never: a connection is a few hundred bytes */
    sq__slab_blk_t *b = srv->slab;
    if (b == NULL || blk_full(b)) {
        b = srv->slab_spare != NULL ? srv->slab_spare : blk_new(size);
        if (b == NULL)
            return NULL;
        srv->slab_spare = NULL;
        push_front(srv, b);
    }
    unsigned i = find_free(b);
    assert(i < b->nslots);
    b->cursor = i + 1 < b->nslots ? i + 1 : 0;
    b->used_bits[i / 64] |= (uint64_t)1 << (i % 64);
    b->used++;
    sq__conn_t *c = slot_at(b, i);
    UNPOISON(c, b->slot_size);
    memset(c, 0, b->slot_size);
    if (blk_full(b)) { /* the blocks with room stay in front */
        unlink_blk(srv, b);
        push_back(srv, b);
    }
    return c;
}

void sq__conn_dealloc(sq_server_t *srv, sq__conn_t *c)
{
    sq__slab_blk_t *b = blk_of(c);
    unsigned i = (unsigned)(((char *)c - (char *)b - BLK_HDR) / b->slot_size);
    bool was_full = blk_full(b);
    b->used_bits[i / 64] &= ~((uint64_t)1 << (i % 64));
    b->used--;
    POISON(c, b->slot_size);
    if (b->used == 0 && (srv->slab != b || b->next != NULL)) {
        /* another block is left for the next connection; this one is kept aside, unless
         * one already is, so that a count going up and down across a block's edge does
         * not map and unmap a block each time */
        unlink_blk(srv, b);
        if (srv->slab_spare == NULL)
            srv->slab_spare = b;
        else
            blk_unmap(b);
        return;
    }
    if (was_full) {
        unlink_blk(srv, b);
        push_front(srv, b);
    }
}

void sq__conns_each(sq_server_t *srv, void (*fn)(sq__conn_t *c))
{
    /* fn may close connections (freed later, by uv_close's callback) but opens none, so
     * the blocks stay as they are during the walk */
    for (sq__slab_blk_t *b = srv->slab; b != NULL; b = b->next)
        for (unsigned w = 0; w < MAX_SLOTS / 64; w++) {
            uint64_t bits = b->used_bits[w];
            while (bits != 0) {
                unsigned i = w * 64 + (unsigned)__builtin_ctzll(bits);
                bits &= bits - 1;
                fn(slot_at(b, i));
            }
        }
}

void sq__slab_free(sq_server_t *srv)
{
    if (srv->slab_spare != NULL)
        blk_unmap(srv->slab_spare);
    srv->slab_spare = NULL;
    while (srv->slab != NULL) {
        sq__slab_blk_t *b = srv->slab;
        assert(b->used == 0); /* the server is freed after its last connection */
        unlink_blk(srv, b);
        blk_unmap(b);
    }
}
