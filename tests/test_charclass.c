/* The byte classes of header fields (lib/core/uri.c's table) against RFC 9110's sets. */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "internal.h"

/* RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static bool rfc_tchar(unsigned c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
}

/* §5.5: field-vchar = VCHAR / obs-text, plus SP and HTAB between them */
static bool rfc_value(unsigned c)
{
    return (c >= 0x21 && c <= 0x7e) || c >= 0x80 || c == ' ' || c == '\t';
}

Test(charclass, char_classes_match_rfc_9110)
{
    for (unsigned c = 0; c < 256; c++) {
        cr_expect_eq(sq__is_tchar((unsigned char)c), rfc_tchar(c), "tchar 0x%02x", c);
        cr_expect_eq((sq__char_class[c] & SQ__CH_VALUE) != 0, rfc_value(c), "value 0x%02x", c);
    }
}

Test(charclass, field_len_stops_at_the_first_byte_out_of_class)
{
    cr_expect_eq(sq__field_len("X-Request-Id", SQ__CH_TCHAR), 12);
    cr_expect_eq(sq__field_len("", SQ__CH_TCHAR), 0);
    cr_expect_eq(sq__field_len("a b", SQ__CH_TCHAR), SIZE_MAX);
    cr_expect_eq(sq__field_len("a b\tc\xff", SQ__CH_VALUE), 6);
    cr_expect_eq(sq__field_len("a\r\nb", SQ__CH_VALUE), SIZE_MAX);
    cr_expect_eq(sq__field_len("a\x7f", SQ__CH_VALUE), SIZE_MAX);
}

/* sq__field_len for values looks at 8 bytes at a time: every byte value at every place
 * of strings of 1 to 24 bytes (inside a word, at its edges, in the tail) is judged as the
 * table judges it. */
Test(charclass, value_len_judges_every_byte_at_every_place)
{
    char s[32];
    for (size_t len = 1; len <= 24; len++) {
        for (size_t at = 0; at < len; at++) {
            for (unsigned c = 1; c < 256; c++) {
                memset(s, 'a', len);
                s[len] = '\0';
                s[at] = (char)c;
                size_t want = (sq__char_class[c] & SQ__CH_VALUE) ? len : SIZE_MAX;
                cr_assert_eq(sq__field_len(s, SQ__CH_VALUE), want, "len %zu, 0x%02x at %zu", len,
                             c, at);
            }
            s[at] = '\0'; /* a NUL ends it: the bytes before are the value */
            cr_assert_eq(sq__field_len(s, SQ__CH_VALUE), at);
        }
    }
}
