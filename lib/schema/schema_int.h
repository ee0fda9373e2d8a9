/* lib/schema: what its files share. */
#ifndef SQUALL_SCHEMA_INT_H
#define SQUALL_SCHEMA_INT_H

#include <regex.h>

#include "internal.h"
#include "squall/schema.h"

/* The default of a field, parsed once (a borrowed reference, kept for the process's
 * life); NULL when the field has none. A default that is not JSON is null. */
SQ__HIDDEN const json_t *sq__schema_default(const sq_field_t *f);

/* A pattern in Python's / ECMA-262's common syntax rewritten for POSIX ERE (malloc'd), or
 * NULL when ERE cannot say it the same way (cache.c). */
SQ__HIDDEN char *sq__pattern_to_ere(const char *pattern);

/* The compiled pattern of a field, compiled once; NULL when it does not compile. */
SQ__HIDDEN const regex_t *sq__schema_regex(const char *pattern);

#endif
