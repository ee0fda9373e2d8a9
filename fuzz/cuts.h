/* Where an input is cut into the pieces a harness feeds to a connection, so that the
 * fuzzer explores where reads end as well as what they hold. A mode byte chooses:
 * - 0..239: pieces of mode + 1 bytes (1..240), the last one shorter;
 * - 240..255: the next mode - 239 bytes (1..16) are piece lengths minus one (1..256),
 *   used in turn and over again, so that a cut can fall on any byte the fuzzer picks
 *   (mode 241 and bytes 16, 0 cut at byte 17, then 18, then every 17 and 1 bytes).
 * A floor (0 for none) makes every piece at least that long, to bound the number of
 * pieces of a long input. */
#ifndef SQ_FUZZ_CUTS_H
#define SQ_FUZZ_CUTS_H

#include <stddef.h>
#include <stdint.h>

#define CUTS_LIST_MODE 240

typedef struct cuts {
    size_t step;        /* fixed mode: the piece size; 0 in list mode */
    const uint8_t *len; /* list mode: the lengths minus one */
    size_t n, i;
    size_t floor;
} cuts_t;

/* Reads the mode byte (and the lengths) at data; returns how many bytes they take, or 0
 * when the input is too short to hold them. */
static inline size_t cuts_init(cuts_t *c, const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    c->floor = 0;
    c->i = 0;
    if (data[0] < CUTS_LIST_MODE) {
        c->step = (size_t)data[0] + 1;
        c->len = NULL;
        c->n = 0;
        return 1;
    }
    c->step = 0;
    c->n = (size_t)data[0] - CUTS_LIST_MODE + 1;
    if (size < 1 + c->n)
        return 0;
    c->len = data + 1;
    return 1 + c->n;
}

/* The length of the next piece, given left bytes still to feed (left > 0). */
static inline size_t cuts_next(cuts_t *c, size_t left)
{
    size_t n = c->step;
    if (n == 0) {
        n = (size_t)c->len[c->i] + 1;
        c->i = (c->i + 1) % c->n;
    }
    if (n < c->floor)
        n = c->floor;
    return n < left ? n : left;
}

#endif
