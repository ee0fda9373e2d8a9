/* The incremental UTF-8 validator (lib/ws/utf8.c, RFC 3629 §4 as RFC 6455 §8.1 needs it):
 * every case is fed whole, byte by byte, and split in two at every point (picohttpparser's
 * way), and the verdict must be the same each time. An invalid byte is reported by the
 * feed that carries it, never later. */
#include <criterion/criterion.h>
#include <string.h>

#include "ws/ws_int.h"

enum { VALID, TRUNCATED, INVALID };

typedef struct utf8_case {
    const char *name;
    const char *bytes;
    size_t len;
    int verdict;
    size_t bad_at; /* INVALID: the index of the first byte that cannot be UTF-8 */
} utf8_case_t;

#define CASE(name, lit, verdict, bad_at)                                                           \
    {                                                                                              \
        name, lit, sizeof(lit) - 1, verdict, bad_at                                                \
    }

static const utf8_case_t cases[] = {
    CASE("empty", "", VALID, 0),
    CASE("ascii", "hello, world", VALID, 0),
    CASE("ascii run past the 8-byte fast path", "abcdefghijklmnopqrstuvwxyz0123456789", VALID, 0),
    CASE("two-byte U+00E9", "\xC3\xA9", VALID, 0),
    CASE("lowest two-byte U+0080", "\xC2\x80", VALID, 0),
    CASE("highest two-byte U+07FF", "\xDF\xBF", VALID, 0),
    CASE("three-byte U+20AC", "\xE2\x82\xAC", VALID, 0),
    CASE("lowest three-byte U+0800", "\xE0\xA0\x80", VALID, 0),
    CASE("last before the surrogates U+D7FF", "\xED\x9F\xBF", VALID, 0),
    CASE("first after the surrogates U+E000", "\xEE\x80\x80", VALID, 0),
    CASE("U+FFFF", "\xEF\xBF\xBF", VALID, 0),
    CASE("four-byte U+1F600", "\xF0\x9F\x98\x80", VALID, 0),
    CASE("lowest four-byte U+10000", "\xF0\x90\x80\x80", VALID, 0),
    CASE("highest code point U+10FFFF", "\xF4\x8F\xBF\xBF", VALID, 0),
    CASE("mixed text", "caf\xC3\xA9 \xE2\x82\xAC 12345678 \xF0\x9F\x98\x80 ok", VALID, 0),
    CASE("multi-byte right after an 8-byte ascii run", "abcdefgh\xC3\xA9ijklmnop", VALID, 0),

    CASE("overlong C0 80 (NUL)", "\xC0\x80", INVALID, 0),
    CASE("overlong C1 BF", "\xC1\xBF", INVALID, 0),
    CASE("overlong E0 80 80", "\xE0\x80\x80", INVALID, 1),
    CASE("overlong E0 9F BF", "\xE0\x9F\xBF", INVALID, 1),
    CASE("overlong F0 80 80 80", "\xF0\x80\x80\x80", INVALID, 1),
    CASE("overlong F0 8F BF BF", "\xF0\x8F\xBF\xBF", INVALID, 1),
    CASE("surrogate ED A0 80 (U+D800)", "\xED\xA0\x80", INVALID, 1),
    CASE("surrogate ED BF BF (U+DFFF)", "\xED\xBF\xBF", INVALID, 1),
    CASE("past U+10FFFF: F4 90 80 80", "\xF4\x90\x80\x80", INVALID, 1),
    CASE("past U+10FFFF: F5 80 80 80", "\xF5\x80\x80\x80", INVALID, 0),
    CASE("FE", "\xFE", INVALID, 0),
    CASE("FF", "\xFF", INVALID, 0),
    CASE("stray continuation byte", "\x80", INVALID, 0),
    CASE("stray continuation after ascii", "abc\xBF", INVALID, 3),
    CASE("stray continuation after a 2-byte char", "\xC3\xA9\xA9", INVALID, 2),
    CASE("stray continuation after a 16-byte ascii run", "0123456789abcdef\x80", INVALID, 16),
    CASE("lead byte where a continuation is due", "\xE2\x82\xE2\x82\xAC", INVALID, 2),
    CASE("ascii where a continuation is due",
         "\xC3"
         "A",
         INVALID, 1),
    CASE("invalid in the middle of valid text", "valid \xE2\x82\xAC then \xC0\xAF", INVALID, 15),

    CASE("truncated two-byte", "\xC3", TRUNCATED, 0),
    CASE("truncated three-byte after one", "\xE2", TRUNCATED, 0),
    CASE("truncated three-byte after two", "\xE2\x82", TRUNCATED, 0),
    CASE("truncated four-byte after three", "\xF0\x9F\x98", TRUNCATED, 0),
    CASE("valid text, then a truncated char", "hello \xF0\x9F", TRUNCATED, 0),
};

/* Feeds c in pieces of the given sizes; a 0 in the list ends it and stands for the rest.
 * Returns the verdict; for INVALID, [*bad_start, *bad_end) is the piece that reported it. */
static int feed_pieces(const utf8_case_t *c, const size_t *pieces, size_t *bad_start,
                       size_t *bad_end)
{
    sq__utf8_t u;
    sq__utf8_init(&u);
    size_t off = 0;
    for (size_t i = 0;; i++) {
        size_t n = pieces[i] == 0 || pieces[i] > c->len - off ? c->len - off : pieces[i];
        if (!sq__utf8_feed(&u, (const uint8_t *)c->bytes + off, n)) {
            *bad_start = off;
            *bad_end = off + n;
            return INVALID;
        }
        off += n;
        if (pieces[i] == 0)
            break;
    }
    return sq__utf8_complete(&u) ? VALID : TRUNCATED;
}

static void check_case(const utf8_case_t *c, const size_t *pieces, const char *how)
{
    size_t bs = 0, be = 0;
    int v = feed_pieces(c, pieces, &bs, &be);
    cr_assert_eq(v, c->verdict, "%s, fed %s: verdict %d, expected %d", c->name, how, v, c->verdict);
    if (v == INVALID)
        cr_assert(c->bad_at >= bs && c->bad_at < be,
                  "%s, fed %s: reported by the piece [%zu, %zu), the bad byte is at %zu", c->name,
                  how, bs, be, c->bad_at);
}

Test(utf8, every_case_fed_whole)
{
    static const size_t whole[] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], whole, "whole");
}

Test(utf8, every_case_fed_byte_by_byte_reports_the_offending_byte)
{
    size_t ones[64];
    for (size_t i = 0; i < 63; i++)
        ones[i] = 1;
    ones[63] = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_lt(cases[i].len, 63);
        check_case(&cases[i], ones, "byte by byte");
    }
}

Test(utf8, every_case_split_at_every_point)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t split = 1; split < cases[i].len; split++) {
            size_t two[] = {split, 0};
            char how[32];
            snprintf(how, sizeof(how), "split at %zu", split);
            check_case(&cases[i], two, how);
        }
    }
}

Test(utf8, zero_length_feeds_change_nothing)
{
    sq__utf8_t u;
    sq__utf8_init(&u);
    cr_assert(sq__utf8_feed(&u, (const uint8_t *)"", 0));
    cr_assert(sq__utf8_complete(&u));
    cr_assert(sq__utf8_feed(&u, (const uint8_t *)"\xE2", 1));
    cr_assert(sq__utf8_feed(&u, (const uint8_t *)"", 0));
    cr_assert_not(sq__utf8_complete(&u));
    cr_assert(sq__utf8_feed(&u, (const uint8_t *)"\x82\xAC", 2));
    cr_assert(sq__utf8_complete(&u));
}

Test(utf8, every_case_split_in_three_at_every_pair_of_points)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const utf8_case_t *c = &cases[i];
        for (size_t a = 1; a < c->len; a++) {
            for (size_t b = 1; a + b < c->len; b++) {
                size_t three[] = {a, b, 0};
                char how[48];
                snprintf(how, sizeof(how), "in pieces %zu+%zu+rest", a, b);
                check_case(c, three, how);
            }
        }
    }
}

Test(utf8, every_code_point_encoded_is_accepted_and_surrogates_are_not)
{
    /* Encode each scalar value per RFC 3629 §3 and feed it; surrogates must fail. */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        uint8_t b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xC0 | cp >> 6);
            b[1] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xE0 | cp >> 12);
            b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[2] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xF0 | cp >> 18);
            b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[3] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 4;
        }
        sq__utf8_t u;
        sq__utf8_init(&u);
        bool ok = sq__utf8_feed(&u, b, n) && sq__utf8_complete(&u);
        bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        if (ok == surrogate)
            cr_assert_fail("U+%04X: accepted %d", (unsigned)cp, ok);
    }
}

Test(utf8, state_carries_across_feeds_of_a_long_message)
{
    /* 1000 copies of a 4-byte character fed in 7-byte pieces: every piece but the ends
     * starts and stops inside a character. */
    enum { N = 1000 };
    static uint8_t msg[4 * N];
    for (size_t i = 0; i < N; i++)
        memcpy(msg + 4 * i, "\xF0\x9F\x98\x80", 4);
    sq__utf8_t u;
    sq__utf8_init(&u);
    for (size_t off = 0; off < sizeof(msg); off += 7) {
        size_t n = sizeof(msg) - off < 7 ? sizeof(msg) - off : 7;
        cr_assert(sq__utf8_feed(&u, msg + off, n), "piece at %zu", off);
    }
    cr_assert(sq__utf8_complete(&u));
}
