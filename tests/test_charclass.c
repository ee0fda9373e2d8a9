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
