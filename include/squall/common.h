/* squall — shared definitions for every public header. */
#ifndef SQUALL_COMMON_H
#define SQUALL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#if defined(__GNUC__)
#define SQ_EXTERN __attribute__((visibility("default")))
#else
#define SQ_EXTERN
#endif

#define SQ_VERSION_MAJOR 0
#define SQ_VERSION_MINOR 1
#define SQ_VERSION_PATCH 0
#define SQ_VERSION_STRING "0.1.0"

/* Called with a pointer the library is done with (zero-copy sends). Runs on the loop thread. */
typedef void (*sq_free_cb)(void *ptr, void *data);

#endif
