#include "squall/errno.h"

/* 0 is named here: libuv's uv_strerror(0) says "Unknown system error 0". */
const char *sq_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define SQ__ERR_MSG(name, val, msg)                                                        \
    case val:                                                                              \
        return msg;
        SQ_ERRNO_MAP(SQ__ERR_MSG)
#undef SQ__ERR_MSG
    default:
        return uv_strerror(err);
    }
}

const char *sq_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define SQ__ERR_NAME(name, val, msg)                                                       \
    case val:                                                                              \
        return "SQ_" #name;
        SQ_ERRNO_MAP(SQ__ERR_NAME)
#undef SQ__ERR_NAME
    default:
        return uv_err_name(err);
    }
}
