/* squall — the version of this header and of the library a program runs with.
 *
 * This file is the one place the version is written: the Makefile reads the numbers
 * below for the shared library's name and for squall.pc, so a header, a library and a
 * pkg-config file that were installed together always agree.
 *
 *     if (sq_version() < SQ_VERSION_HEX)       // running with an older library than
 *         ...                                  // the header this was compiled against
 *
 * The macros are the header's version (compile time); sq_version() and
 * sq_version_string() are the library's (run time). They differ when a program built
 * against one release runs with the shared library of another.
 */
#ifndef SQUALL_VERSION_H
#define SQUALL_VERSION_H

#include "common.h"

#define SQ_VERSION_MAJOR 0
#define SQ_VERSION_MINOR 2
#define SQ_VERSION_PATCH 0

/* The shared library's ABI number: it is called libsquall.so.<SQ_VERSION_ABI>. Raised
 * whenever a binary built against an older header could no longer run with this library
 * (a struct or a function changed shape); adding a function or a field at the end of a
 * struct that grows (see "Structs that grow" in common.h) does not raise it. */
#define SQ_VERSION_ABI 1

/* major << 16 | minor << 8 | patch, as libuv's UV_VERSION_HEX: versions compare as
 * numbers. */
#define SQ_VERSION_HEX ((SQ_VERSION_MAJOR << 16) | (SQ_VERSION_MINOR << 8) | SQ_VERSION_PATCH)

#define SQ__VERSION_STR_(x) #x
#define SQ__VERSION_STR(x) SQ__VERSION_STR_(x)
/* "major.minor.patch". */
#define SQ_VERSION_STRING                                                                  \
    SQ__VERSION_STR(SQ_VERSION_MAJOR)                                                      \
    "." SQ__VERSION_STR(SQ_VERSION_MINOR) "." SQ__VERSION_STR(SQ_VERSION_PATCH)

/* The library's version, as SQ_VERSION_HEX. Any thread. */
SQ_EXTERN unsigned int sq_version(void);
/* The library's version as "major.minor.patch": static storage, never NULL. Any thread. */
SQ_EXTERN const char *sq_version_string(void);

#endif
