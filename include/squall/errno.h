/* squall — error codes.
 *
 * Every action returns 0 or a negative code. Where libuv has a code that fits
 * (UV_ECANCELED, UV_ETIMEDOUT, UV_EOF, UV_EMSGSIZE, UV_ENOMEM, UV_EINVAL, ...) squall
 * returns it; squall's own codes live in a range of their own, below -30000, so they
 * never collide with libuv's. sq_strerror()/sq_err_name() name both kinds. A number,
 * once given out, is never reused: the gaps are codes that were removed.
 */
#ifndef SQUALL_ERRNO_H
#define SQUALL_ERRNO_H

#include "common.h"

#define SQ_ERRNO_MAP(XX)                                                                   \
    XX(EALREADY_SENT, -30001, "response already finished")                                 \
    XX(EPATTERN, -30002, "invalid route pattern")                                          \
    XX(ENOTSTREAMING, -30004, "response is not streaming")                                 \
    XX(ECLOSED, -30006, "object is closing or closed")                                     \
    XX(EBUSY, -30008, "operation already in progress")                                     \
    XX(ERESET, -30010, "the room started again")                                           \
    XX(ETLS, -30012, "TLS handshake or record failed")                                      \
    XX(ECERT, -30014, "peer certificate verification failed")                               \
    XX(ECERTNAME, -30016, "peer certificate does not match the host name")                  \
    XX(ETLSCONF, -30018, "TLS certificate or key unusable")

typedef enum {
#define SQ__ERR_ENUM(name, val, msg) SQ_##name = (val),
    SQ_ERRNO_MAP(SQ__ERR_ENUM)
#undef SQ__ERR_ENUM
    SQ_ERRNO_MAX = -30000
} sq_errno_t;

/* A human-readable message for err (squall's or libuv's; "success" for 0). Never NULL;
 * static storage. */
SQ_EXTERN const char *sq_strerror(int err);
/* The symbolic name ("SQ_EPATTERN", "ECANCELED", ...; "OK" for 0). Never NULL; static
 * storage. */
SQ_EXTERN const char *sq_err_name(int err);

#endif
