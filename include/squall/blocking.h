/* squall — blocking handlers: a request view and a response builder for the thread pool.
 *
 *     static void sleep_get(const sq_breq_t *req, sq_bres_t *res, void *data)
 *     {
 *         usleep(300 * 1000);                      // blocks a pool thread, not the loop
 *         sq_bres_send(res, 200, "text/plain", "done", 4);
 *     }
 *     static const sq_handler_t sleeper = {.blocking.get = sleep_get};
 *
 * Every function here may be called from the blocking callback's pool thread (and only
 * there), during the callback. The request view is read-only and borrowed until the
 * callback returns; so is every string it returns (copy what you keep). The builder is
 * lent to the callback too; everything given to it is copied, and what it holds is sent
 * from the loop thread after the callback returns: a status and body (sq_bres_send*),
 * headers (sq_bres_header). A callback that sends nothing gets a 500. Jobs past the
 * pool's queue get 503.
 */
#ifndef SQUALL_BLOCKING_H
#define SQUALL_BLOCKING_H

#include "common.h"
#include "req.h"
#include "router.h"

SQ_EXTERN const char *sq_breq_method(const sq_breq_t *req);
SQ_EXTERN sq_method_t sq_breq_method_id(const sq_breq_t *req);
/* The decoded path, the raw query string. */
SQ_EXTERN const char *sq_breq_path(const sq_breq_t *req);
SQ_EXTERN const char *sq_breq_query_string(const sq_breq_t *req);
/* As sq_req_query, sq_req_param, sq_req_param_int (0 or UV_ENOENT), sq_req_header,
 * sq_req_body; borrowed until the callback returns. */
SQ_EXTERN const char *sq_breq_query(const sq_breq_t *req, const char *name);
SQ_EXTERN const char *sq_breq_param(const sq_breq_t *req, const char *name);
SQ_EXTERN int sq_breq_param_int(const sq_breq_t *req, const char *name, int64_t *out);
SQ_EXTERN const char *sq_breq_header(const sq_breq_t *req, const char *name);
SQ_EXTERN const char *sq_breq_body(const sq_breq_t *req, size_t *len);
/* The body parsed as JSON: a new reference, or NULL with `error` (json_error_t*) filled. */
SQ_EXTERN json_t *sq_breq_json(const sq_breq_t *req, void *json_error);
/* As sq_req_input and sq_req_input_json (req.h): the declared operation's checked
 * inputs, validated on the loop thread before the job was queued; borrowed until the
 * callback returns, read-only (the loop does not touch them meanwhile). */
SQ_EXTERN const void *sq_breq_input(const sq_breq_t *req);
SQ_EXTERN const json_t *sq_breq_input_json(const sq_breq_t *req, const char *part);
/* 1 once the job was cancelled: the client left, the server's grace period ran out, or
 * the work pool is being destroyed. The answer will not be read, so a long job may stop
 * early (what it sends then is discarded). */
SQ_EXTERN int sq_breq_is_cancelled(const sq_breq_t *req);

/* Adds a response header (copied). Returns 0, UV_EINVAL (an empty name; CR, LF or another
 * control character; a name with ':' or blanks; or a header squall writes itself, as
 * sq_res_header) or UV_ENOMEM. */
SQ_EXTERN int sq_bres_header(sq_bres_t *res, const char *name, const char *value);
/* Sets the response (body copied); a later call replaces an earlier one.
 * Returns 0, UV_EINVAL for a status outside 200-999 or a content type holding CR, LF or
 * another control character (nothing is set), or UV_ENOMEM. */
SQ_EXTERN int sq_bres_send(sq_bres_t *res, int status, const char *content_type,
                           const void *body, size_t len);
/* Sets a JSON body (application/json): _new steals the reference, even on failure.
 * Returns 0; UV_EINVAL for a status outside 200-999 (nothing is set); or UV_ENOMEM, also
 * for a NULL json (what a failed json_pack() gives) or one that cannot be encoded. */
SQ_EXTERN int sq_bres_send_json_new(sq_bres_t *res, int status, json_t *json);
/* Sets {"detail": detail} (detail copied; NULL gives "error"). Returns as
 * sq_bres_send_json_new. */
SQ_EXTERN int sq_bres_send_error(sq_bres_t *res, int status, const char *detail);

#endif
