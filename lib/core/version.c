/* The library's version, compiled in from include/squall/version.h, so a program can tell
 * which shared library it runs with (the header's macros tell which it was built for). */
#include "squall/version.h"

unsigned int sq_version(void)
{
    return SQ_VERSION_HEX;
}

const char *sq_version_string(void)
{
    return SQ_VERSION_STRING;
}
